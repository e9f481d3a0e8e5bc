//! `ExpertLoader`: opens an expert whatever its format, detected by content
//! (never by extension), and falls back to a legacy package lying beside a
//! damaged binary one.

use std::path::{Path, PathBuf};

use super::layout::MAGIC;
use super::legacy::{is_gzip, read_legacy, LegacyLimits};
use super::package::{ExpertContents, PackageError, ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST};
use super::reader::ExpertReader;

/// Which reader an expert was opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// `.expert` v2.
    Binary,
    /// A legacy gzip tar package (deprecated).
    LegacyTarGz,
}

impl SourceFormat {
    /// Name shown by the tools (`binary`, `tar.gz`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Binary => "binary",
            Self::LegacyTarGz => "tar.gz",
        }
    }
}

/// Guesses the format from the first bytes.
pub fn detect(bytes: &[u8]) -> Option<SourceFormat> {
    if bytes.starts_with(&MAGIC) {
        Some(SourceFormat::Binary)
    } else if is_gzip(bytes) {
        Some(SourceFormat::LegacyTarGz)
    } else {
        None
    }
}

/// True when `path` starts like a legacy tar.gz package (gzip magic).
pub fn is_legacy_file(path: &Path) -> bool {
    if super::reader::check_input_file(path).is_err() {
        return false;
    }
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && is_gzip(&head)
}

/// An opened expert.
pub struct LoadedExpert {
    /// The file that was opened (a fallback package's path after a fallback).
    pub path: PathBuf,
    /// Which reader opened it.
    pub format: SourceFormat,
    /// The binary reader (zero-copy access), for binary files.
    pub reader: Option<ExpertReader>,
    /// Everything the expert holds.
    pub contents: ExpertContents,
    /// Deprecation and fallback notices for the user.
    pub warnings: Vec<String>,
}

/// Where a legacy package of the same expert may lie beside `path`.
pub fn legacy_candidates(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    if let Some(name) = name {
        out.push(path.with_file_name(format!("{name}.tar.gz")));
        out.push(path.with_file_name(format!("{name}.legacy")));
        if let Some(stem) = name.strip_suffix(".expert") {
            out.push(path.with_file_name(format!("{stem}.tar.gz")));
            out.push(path.with_file_name(format!("{stem}.legacy.expert")));
        }
    }
    out
}

/// A legacy package's files by base name, and what was left out.
pub(crate) struct Flattened {
    /// `(base name, bytes)`, in the order base names first appear.
    pub files: Vec<(String, Vec<u8>)>,
    /// Files not taken because another copy of the same name was chosen
    /// (an older checkpoint): one sentence each, for the user.
    pub shadowed: Vec<String>,
}

/// Older packages nest files under `<model>/checkpoint-N/` (sometimes with
/// the manifest at the root): every file is taken by its base name, the
/// package's own lookup picking the copy (root, shared folder, latest
/// checkpoint, or the only one). Copies no rule settles are kept under their
/// full paths, except for the files that define the expert (manifest,
/// adapter config and weights): those are an error rather than a guess, as
/// a convert must never lose or swap the adapter.
pub(crate) fn flatten(
    package: super::legacy::LegacyPackage,
) -> Result<Flattened, super::legacy::LegacyError> {
    // Copies of a file that defines the expert must resolve to one; other
    // files (two READMEs in two folders) are all kept, under their full
    // paths. One pass by base name: a 10,000-member archive stays linear.
    let defining = [MANIFEST, ADAPTER_CONFIG, ADAPTER_WEIGHTS];
    let prefix = package.root_prefix();
    // (name it is stored under, file index), in the order names first appear.
    let mut take: Vec<(String, usize)> = Vec::new();
    let mut shadowed = Vec::new();
    for (base, copies) in package.by_base_name() {
        match super::legacy::pick_copy(&package.files, base, &copies, prefix.as_deref()) {
            Some(used) => {
                take.push((base.to_string(), used));
                let used_path = package
                    .files
                    .get(used)
                    .map(|f| f.path.as_str())
                    .unwrap_or_default();
                for other in copies.iter().filter(|&&i| i != used) {
                    if let Some(f) = package.files.get(*other) {
                        shadowed.push(format!("{} is ignored: {used_path} is used", f.path));
                    }
                }
            }
            None if !defining.contains(&base) => {
                for &i in &copies {
                    if let Some(f) = package.files.get(i) {
                        take.push((f.path.clone(), i));
                    }
                }
            }
            None => {
                return Err(super::legacy::LegacyError::AmbiguousFile {
                    name: base.to_string(),
                    paths: package.paths_named(base),
                })
            }
        }
    }
    // The bytes are moved out (no copy: a package's bytes are held once).
    let mut data: Vec<Option<Vec<u8>>> = package.files.into_iter().map(|f| Some(f.data)).collect();
    let files = take
        .into_iter()
        .filter_map(|(name, i)| data.get_mut(i).and_then(Option::take).map(|d| (name, d)))
        .collect();
    Ok(Flattened { files, shadowed })
}

/// Opens experts in either format; see [`ExpertLoader::open`].
pub struct ExpertLoader;

impl ExpertLoader {
    /// Opens `path` with the reader its content calls for.
    pub fn open(path: &Path) -> Result<LoadedExpert, PackageError> {
        if super::remote::is_url(path) {
            return Self::open_exact(path);
        }
        match Self::open_exact(path) {
            Ok(loaded) => Ok(loaded),
            Err(error) => {
                let fallback = legacy_candidates(path).into_iter().find(|p| p.is_file());
                let Some(candidate) = fallback else {
                    return Err(error);
                };
                let mut loaded = Self::open_exact(&candidate).map_err(|_| error.to_string());
                match &mut loaded {
                    Ok(l) if l.format == SourceFormat::LegacyTarGz => {
                        l.warnings.insert(
                            0,
                            format!(
                                "{} failed to open ({error}); fell back to the legacy package {}",
                                path.display(),
                                candidate.display()
                            ),
                        );
                        loaded.map_err(PackageError::Invalid)
                    }
                    _ => Err(error),
                }
            }
        }
    }

    /// Opens `path` (as [`open`](Self::open)) and admits it under `policy`
    /// before its contents are handed out: a binary file's signature is
    /// checked against the policy (every section digest first); a legacy
    /// package, which cannot be signed, is refused whenever the policy
    /// requires a signature.
    pub fn open_admitted(
        path: &Path,
        policy: &super::signing::Policy,
    ) -> Result<LoadedExpert, PackageError> {
        let loaded = Self::open(path)?;
        match &loaded.reader {
            Some(reader) => {
                super::signing::admit(reader, policy).map_err(|e| {
                    PackageError::Untrusted(format!("{}: {e}", loaded.path.display()))
                })?;
            }
            None if policy.requires_signature() => {
                return Err(PackageError::Untrusted(format!(
                    "{}: a legacy tar.gz package carries no signature",
                    loaded.path.display()
                )))
            }
            None => {}
        }
        Ok(loaded)
    }

    /// Opens `path` without any fallback.
    pub fn open_exact(path: &Path) -> Result<LoadedExpert, PackageError> {
        if let Some(url) = super::remote::url_of(path) {
            // Every section is read to build the contents: fetch it all.
            let plan = super::remote::Plan::All;
            let (reader, _) =
                super::remote::open_reader(&url, &plan, Default::default(), &mut |_, _| {})?;
            reader.verify_all()?;
            let contents = ExpertContents::read_binary(&reader)?;
            return Ok(LoadedExpert {
                path: path.to_path_buf(),
                format: SourceFormat::Binary,
                reader: Some(reader),
                contents,
                warnings: Vec::new(),
            });
        }
        super::reader::check_input_file(path)?;
        let mut head = [0u8; 8];
        let read = {
            use std::io::Read;
            let mut file = std::fs::File::open(path).map_err(|e| PackageError::io(path, e))?;
            file.read(&mut head)
                .map_err(|e| PackageError::io(path, e))?
        };
        match detect(head.get(..read).unwrap_or(&[])) {
            Some(SourceFormat::Binary) => {
                let reader = ExpertReader::open(path)?;
                // Every section is read to build the contents anyway: check
                // them all, so damage is never copied into a fresh file.
                reader.verify_all()?;
                let contents = ExpertContents::read_binary(&reader)?;
                Ok(LoadedExpert {
                    path: path.to_path_buf(),
                    format: SourceFormat::Binary,
                    reader: Some(reader),
                    contents,
                    warnings: Vec::new(),
                })
            }
            Some(SourceFormat::LegacyTarGz) => {
                // Mapped, not read: the compressed package never sits on the heap.
                let bytes = super::FileBytes::map(path)?;
                let mut warnings = vec![format!(
                    "{} is a legacy tar.gz expert (deprecated): convert it with `expertui --headless convert {} -o OUT.expert`",
                    path.display(),
                    path.display()
                )];
                warnings.extend(super::legacy::gzip_header_extras(&bytes));
                let sidecar = super::legacy::sidecar_path(path);
                if let Ok(text) = std::fs::read_to_string(&sidecar) {
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    super::legacy::verify_sidecar(&bytes, &text, &name)
                        .map_err(|e| PackageError::Invalid(e.to_string()))?;
                } else {
                    warnings.push("no .sha256 sidecar: the package is not verified".into());
                }
                let package = read_legacy(&bytes, &LegacyLimits::for_package(bytes.len() as u64))
                    .map_err(|e| PackageError::Invalid(e.to_string()))?;
                drop(bytes);
                let flat = flatten(package).map_err(|e| PackageError::Invalid(e.to_string()))?;
                warnings.extend(flat.shadowed);
                let files = flat.files;
                Ok(LoadedExpert {
                    path: path.to_path_buf(),
                    format: SourceFormat::LegacyTarGz,
                    reader: None,
                    contents: ExpertContents::from_files(files)?,
                    warnings,
                })
            }
            None => Err(PackageError::Invalid(format!(
                "{}: neither an .expert v2 file nor a legacy tar.gz package (first bytes {:02x?})",
                path.display(),
                head.get(..read).unwrap_or(&[])
            ))),
        }
    }
}
