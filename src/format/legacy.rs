//! Legacy tar.gz `.expert` packages (read in memory; write for debugging).
//!
//! The old format is a gzip-compressed tar of flat files with `manifest.json`
//! first; older packages nest the files under `<model>/checkpoint-N/`. Next to
//! a package sits a sha256sum-style sidecar `<file>.sha256`.
//!
//! Reading never touches the disk: the archive is decompressed and walked in
//! memory, and anything that could escape an extraction folder or exhaust
//! memory (path traversal, absolute paths, links, device files, duplicate
//! names, huge declared sizes, decompression bombs) is refused with a typed
//! error that names the entry.

use std::cell::Cell;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};
use tar::{Archive, Builder, EntryType, Header};

use super::atomic::AtomicFile;
use super::error::FormatError;

/// The name of the manifest inside a legacy package.
pub const MANIFEST_NAME: &str = "manifest.json";

/// The modification time written into every header by [`write_legacy`]
/// (fixed so that the same files always give the same bytes).
pub const LEGACY_MTIME: u64 = 0;

/// The mode written into every header by [`write_legacy`].
pub const LEGACY_MODE: u32 = 0o644;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const TAR_BLOCK: u64 = 512;
/// Header blocks, long names and padding allowed per entry on top of the
/// file data when bounding the decompressed stream.
const PER_ENTRY_OVERHEAD: u64 = 8 * 1024;
/// Slack for end-of-archive blocks and record padding.
const STREAM_SLACK: u64 = 1024 * 1024;
/// Never reserve more than this up front for one member; the buffer grows
/// with what is really read.
const MAX_PREALLOC: u64 = 1024 * 1024;

/// Everything that can go wrong reading, writing or verifying a legacy package.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    /// The bytes are not a valid gzip stream.
    #[error("not a valid gzip stream: {0}")]
    Gzip(String),

    /// The decompressed bytes are not a valid tar archive.
    #[error("not a valid tar archive: {0}")]
    Tar(String),

    /// An entry path with `..` (refused).
    #[error("archive entry {entry:?} climbs out of the package with '..': refusing it")]
    PathTraversal { entry: String },

    /// An entry with an absolute path (refused).
    #[error("archive entry {entry:?} has an absolute path: refusing it")]
    AbsolutePath { entry: String },

    /// A symbolic or hard link (refused).
    #[error("archive entry {entry:?} is a {kind} to {target:?}: packages hold regular files only")]
    Link {
        entry: String,
        kind: &'static str,
        target: String,
    },

    /// A device, FIFO or other non-regular entry (refused).
    #[error("archive entry {entry:?} is a {kind}: packages hold regular files only")]
    SpecialFile { entry: String, kind: String },

    /// The same path twice.
    #[error("archive holds {entry:?} more than once")]
    DuplicateEntry { entry: String },

    /// An entry name that is not UTF-8.
    #[error("archive entry name is not UTF-8: {entry:?}")]
    NonUtf8Name { entry: String },

    /// An entry with an empty name.
    #[error("archive entry has an empty name")]
    EmptyName,

    /// One entry above the per-file limit.
    #[error("archive entry {entry:?} declares {declared} bytes, over the limit of {limit} bytes per file")]
    TooLarge {
        entry: String,
        declared: u64,
        limit: u64,
    },

    /// The entries together above the package limit.
    #[error("archive entry {entry:?} brings the package to {total} bytes, over the limit of {limit} bytes")]
    TotalTooLarge {
        entry: String,
        total: u64,
        limit: u64,
    },

    /// The decompressed archive above the limit (a decompression bomb).
    #[error("archive expands past {limit} bytes once decompressed: refusing it")]
    ArchiveTooLarge { limit: u64 },

    /// More entries than the limit.
    #[error("archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },

    /// An entry shorter than its header declares.
    #[error("archive entry {entry:?} is truncated: header declares {declared} bytes, archive holds {actual}")]
    TruncatedEntry {
        entry: String,
        declared: u64,
        actual: u64,
    },

    /// No `manifest.json` in the package.
    #[error("package has no {MANIFEST_NAME}")]
    MissingManifest,

    /// Bytes no reader of the package sees: after the gzip stream (a second
    /// member included) or after the tar's end-of-archive blocks. The
    /// legacy packager never writes them; they can smuggle data past a
    /// review of the members, so the package is refused.
    #[error("hidden data: {what} ({bytes} bytes) that no reader of the package sees")]
    HiddenData { what: &'static str, bytes: u64 },

    /// The package does not hash to its `.sha256` sidecar.
    #[error("checksum mismatch for {file}: sidecar expects {expected}, file hashes to {actual}")]
    SidecarMismatch {
        file: String,
        expected: String,
        actual: String,
    },

    /// The `.sha256` sidecar is not `HEX  NAME`.
    #[error("checksum sidecar is malformed: {0}")]
    SidecarFormat(String),

    /// An operating-system error on `path`.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// No room to write (ENOSPC, EDQUOT, EFBIG); the target was left as it was.
    #[error("disk full or file size limit reached while writing {path}: {source}")]
    DiskFull {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LegacyError {
    /// Stable finding code (`legacy.path-traversal`, `legacy.sidecar-mismatch`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Gzip(_) => "legacy.gzip",
            Self::Tar(_) => "legacy.tar",
            Self::PathTraversal { .. } => "legacy.path-traversal",
            Self::AbsolutePath { .. } => "legacy.absolute-path",
            Self::Link { .. } => "legacy.link",
            Self::SpecialFile { .. } => "legacy.special-file",
            Self::DuplicateEntry { .. } => "legacy.duplicate-entry",
            Self::EmptyName => "legacy.empty-name",
            Self::TooLarge { .. } => "legacy.member-too-large",
            Self::TotalTooLarge { .. } => "legacy.too-large",
            Self::ArchiveTooLarge { .. } => "legacy.decompression-bomb",
            Self::TooManyEntries { .. } => "legacy.too-many-entries",
            Self::TruncatedEntry { .. } => "legacy.truncated-entry",
            Self::MissingManifest => "manifest.missing",
            Self::HiddenData { .. } => "legacy.hidden-data",
            Self::SidecarMismatch { .. } => "legacy.sidecar-mismatch",
            Self::SidecarFormat(_) => "legacy.sidecar-format",
            Self::Io { .. } => "io.error",
            Self::DiskFull { .. } => "io.disk-full",
            Self::NonUtf8Name { .. } => "legacy.non-utf8-name",
        }
    }

    fn io(path: &Path, source: io::Error) -> Self {
        if crate::format::error::is_disk_full(&source) {
            return LegacyError::DiskFull {
                path: path.to_path_buf(),
                source,
            };
        }
        LegacyError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn from_format(path: &Path, err: FormatError) -> Self {
        match err {
            FormatError::Io { path, source } => LegacyError::Io { path, source },
            FormatError::DiskFull { path, source } => LegacyError::DiskFull { path, source },
            other => LegacyError::Io {
                path: path.to_path_buf(),
                source: io::Error::other(other.to_string()),
            },
        }
    }
}

/// Resource limits applied while reading a legacy package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyLimits {
    /// Sum of all member sizes.
    pub max_total_bytes: u64,
    /// Size of any one member.
    pub max_file_bytes: u64,
    /// Number of archive entries (directories included).
    pub max_entries: u64,
}

impl LegacyLimits {
    /// Limits for a package of `compressed` bytes: the members together may
    /// hold [`crate::format::reader::decoded_budget`] of it (the same
    /// budget as a container's compressed sections: a 5 MB gzip cannot make
    /// a reader allocate gigabytes), and the default entry count.
    pub fn for_package(compressed: u64) -> Self {
        let budget = super::reader::decoded_budget(compressed);
        let default = Self::default();
        Self {
            max_total_bytes: budget.min(default.max_total_bytes),
            max_file_bytes: budget.min(default.max_file_bytes),
            max_entries: default.max_entries,
        }
    }
}

impl Default for LegacyLimits {
    fn default() -> Self {
        Self {
            max_total_bytes: 8 << 30,
            max_file_bytes: 4 << 30,
            max_entries: 10_000,
        }
    }
}

/// One regular file of a legacy package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyFile {
    /// Normalized relative path inside the archive (`/`-separated, no `.`,
    /// no empty components).
    pub path: String,
    pub data: Vec<u8>,
    /// Permission bits as recorded in the archive (`& 0o7777`). Informational:
    /// [`write_legacy`] always writes [`LEGACY_MODE`].
    pub mode: u32,
}

impl LegacyFile {
    /// A file with the default mode 0644.
    pub fn new(path: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            data: data.into(),
            mode: LEGACY_MODE,
        }
    }

    /// The last path component.
    pub fn basename(&self) -> &str {
        basename(&self.path)
    }
}

/// The regular files of a legacy package, in archive order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacyPackage {
    pub files: Vec<LegacyFile>,
}

impl LegacyPackage {
    /// Finds a file by name: an exact path first, then `name` under the
    /// common nesting prefix, then `name` inside a `<model>/checkpoint-N/`
    /// folder (the highest N when several checkpoints hold it).
    pub fn get(&self, name: &str) -> Option<&LegacyFile> {
        find_file(&self.files, name).and_then(|i| self.files.get(i))
    }

    /// The bytes of `manifest.json`, wherever the package nests it.
    pub fn manifest_bytes(&self) -> Result<&[u8], LegacyError> {
        self.get(MANIFEST_NAME)
            .map(|f| f.data.as_slice())
            .ok_or(LegacyError::MissingManifest)
    }

    /// The folder every file sits in (e.g. `model/checkpoint-100`), if the
    /// files share one; `None` for flat packages.
    pub fn root_prefix(&self) -> Option<String> {
        common_prefix(&self.files)
    }

    /// Sum of the file sizes.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.data.len() as u64).sum()
    }
}

/// True when `bytes` starts with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Gzip,
    Cap,
}

/// Wraps the gzip decoder: counts decompressed bytes against a cap and
/// remembers whether a failure came from the gzip layer (so it is not
/// reported as a tar problem).
struct Guarded<R> {
    inner: R,
    read: Rc<Cell<u64>>,
    cap: u64,
    fault: Rc<Cell<Fault>>,
    gzip_message: Rc<Cell<Option<String>>>,
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                self.fault.set(Fault::Gzip);
                self.gzip_message.set(Some(e.to_string()));
                return Err(e);
            }
        };
        let total = self.read.get().saturating_add(n as u64);
        self.read.set(total);
        if total > self.cap {
            self.fault.set(Fault::Cap);
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        Ok(n)
    }
}

struct StreamState {
    read: Rc<Cell<u64>>,
    cap: u64,
    fault: Rc<Cell<Fault>>,
    gzip_message: Rc<Cell<Option<String>>>,
}

impl StreamState {
    /// Turns an I/O error from the tar layer into the most precise error.
    fn classify(&self, err: io::Error) -> LegacyError {
        match self.fault.get() {
            Fault::Cap => LegacyError::ArchiveTooLarge { limit: self.cap },
            Fault::Gzip => {
                let msg = self.gzip_message.take().unwrap_or_else(|| err.to_string());
                LegacyError::Gzip(describe_gzip(&msg))
            }
            Fault::None => LegacyError::Tar(err.to_string()),
        }
    }
}

fn describe_gzip(msg: &str) -> String {
    if msg.contains("unexpected end") || msg.contains("end of file") {
        format!("truncated ({msg})")
    } else {
        msg.to_string()
    }
}

/// Reads a legacy package from memory. Nothing is written to disk.
pub fn read_legacy(bytes: &[u8], limits: &LegacyLimits) -> Result<LegacyPackage, LegacyError> {
    if !is_gzip(bytes) {
        return Err(LegacyError::Gzip(
            "missing gzip magic 1f 8b (not a legacy .expert package)".into(),
        ));
    }
    let cap = limits
        .max_total_bytes
        .saturating_add(
            limits
                .max_entries
                .saturating_add(2)
                .saturating_mul(PER_ENTRY_OVERHEAD),
        )
        .saturating_add(STREAM_SLACK);
    let state = StreamState {
        read: Rc::new(Cell::new(0)),
        cap,
        fault: Rc::new(Cell::new(Fault::None)),
        gzip_message: Rc::new(Cell::new(None)),
    };
    let guarded = Guarded {
        // The bufread decoder over the slice: what follows the gzip member
        // is left in the slice, to be checked below.
        inner: GzDecoder::new(bytes),
        read: Rc::clone(&state.read),
        cap,
        fault: Rc::clone(&state.fault),
        gzip_message: Rc::clone(&state.gzip_message),
    };
    let mut archive = Archive::new(guarded);
    let mut files = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut total: u64 = 0;
    let mut entries_count: u64 = 0;
    // Where the data of the last entry ends, rounded to a block; the stream
    // must go on with an end-of-archive block after it.
    let mut last_end: u64 = 0;

    {
        let entries = archive.entries().map_err(|e| state.classify(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| state.classify(e))?;
            entries_count += 1;
            if entries_count > limits.max_entries {
                return Err(LegacyError::TooManyEntries {
                    limit: limits.max_entries,
                });
            }

            let raw_name = entry.path_bytes().into_owned();
            let name = match String::from_utf8(raw_name) {
                Ok(s) => s,
                Err(e) => {
                    return Err(LegacyError::NonUtf8Name {
                        entry: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    })
                }
            };
            let entry_type = entry.header().entry_type();
            let size = entry.size();
            let data_end = entry
                .raw_file_position()
                .checked_add(size)
                .and_then(|e| e.checked_add(TAR_BLOCK - 1))
                .map(|e| e & !(TAR_BLOCK - 1))
                .ok_or_else(|| LegacyError::Tar(format!("entry {name:?}: size overflow")))?;
            last_end = data_end;

            match entry_type {
                EntryType::Directory | EntryType::XGlobalHeader => {
                    // Validate the name anyway: a hostile directory name is
                    // still a hostile archive.
                    if entry_type == EntryType::Directory {
                        check_dir_name(&name)?;
                    }
                    continue;
                }
                EntryType::Symlink | EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    let kind = if entry_type == EntryType::Symlink {
                        "symbolic link"
                    } else {
                        "hard link"
                    };
                    return Err(LegacyError::Link {
                        entry: name,
                        kind,
                        target,
                    });
                }
                EntryType::Regular | EntryType::Continuous => {}
                other => {
                    return Err(LegacyError::SpecialFile {
                        entry: name,
                        kind: entry_kind(other),
                    })
                }
            }

            let path = normalize_path(&name)?;
            if size > limits.max_file_bytes {
                return Err(LegacyError::TooLarge {
                    entry: path,
                    declared: size,
                    limit: limits.max_file_bytes,
                });
            }
            let new_total = total.saturating_add(size);
            if new_total > limits.max_total_bytes {
                return Err(LegacyError::TotalTooLarge {
                    entry: path,
                    total: new_total,
                    limit: limits.max_total_bytes,
                });
            }
            if !seen.insert(path.clone()) {
                return Err(LegacyError::DuplicateEntry { entry: path });
            }
            let mode =
                entry.header().mode().map_err(|e| {
                    LegacyError::Tar(format!("entry {path:?}: bad mode field: {e}"))
                })? & 0o7777;

            let mut data = Vec::with_capacity(size.min(MAX_PREALLOC) as usize);
            (&mut entry)
                .take(size)
                .read_to_end(&mut data)
                .map_err(|e| state.classify(e))?;
            let actual = data.len() as u64;
            if actual != size {
                return Err(match state.fault.get() {
                    Fault::None => LegacyError::TruncatedEntry {
                        entry: path,
                        declared: size,
                        actual,
                    },
                    _ => state.classify(io::Error::other("truncated")),
                });
            }
            total = new_total;
            files.push(LegacyFile { path, data, mode });
        }
    }

    // The tar crate stops at the first zero block (or at EOF); a stream that
    // just ends after an entry was cut short.
    let consumed = state.read.get();
    if consumed < last_end.saturating_add(TAR_BLOCK) {
        return Err(LegacyError::Tar(format!(
            "truncated archive: no end-of-archive block after {consumed} bytes"
        )));
    }
    // Drain the rest (record padding, gzip trailer) so the gzip CRC and
    // length are checked and a truncated stream is caught; what follows the
    // end-of-archive blocks must be zeros.
    let mut rest = archive.into_inner();
    let mut after_end = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        let n = rest.read(&mut buf).map_err(|e| state.classify(e))?;
        if n == 0 {
            break;
        }
        after_end += buf
            .get(..n)
            .map_or(0, |b| b.iter().filter(|&&x| x != 0).count() as u64);
    }
    if after_end > 0 {
        return Err(LegacyError::HiddenData {
            what: "non-zero bytes after the tar end-of-archive blocks",
            bytes: after_end,
        });
    }
    let trailing = rest.inner.into_inner();
    if !trailing.is_empty() {
        return Err(LegacyError::HiddenData {
            what: if is_gzip(trailing) {
                "a second gzip member after the package"
            } else {
                "bytes after the gzip stream"
            },
            bytes: trailing.len() as u64,
        });
    }

    Ok(LegacyPackage { files })
}

fn entry_kind(t: EntryType) -> String {
    match t {
        EntryType::Char => "character device".into(),
        EntryType::Block => "block device".into(),
        EntryType::Fifo => "FIFO".into(),
        EntryType::GNUSparse => "GNU sparse file".into(),
        EntryType::GNULongName | EntryType::GNULongLink | EntryType::XHeader => {
            "dangling extension header".into()
        }
        other => format!("entry of type {:?}", other.as_byte() as char),
    }
}

fn check_dir_name(name: &str) -> Result<(), LegacyError> {
    match normalize_path(name) {
        Ok(_) | Err(LegacyError::EmptyName) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Normalizes an archive member name: `/`-separated, without `.` or empty
/// components. Refuses `..`, absolute paths (also `\`-rooted and `C:`-style)
/// and empty names.
fn normalize_path(name: &str) -> Result<String, LegacyError> {
    if name.starts_with('/') || name.starts_with('\\') {
        return Err(LegacyError::AbsolutePath { entry: name.into() });
    }
    let mut parts: Vec<&str> = Vec::new();
    for (i, comp) in name.split(['/', '\\']).enumerate() {
        match comp {
            "" | "." => {}
            ".." => return Err(LegacyError::PathTraversal { entry: name.into() }),
            c => {
                if i == 0 && is_drive_prefix(c) {
                    return Err(LegacyError::AbsolutePath { entry: name.into() });
                }
                parts.push(c);
            }
        }
    }
    if parts.is_empty() {
        return Err(LegacyError::EmptyName);
    }
    Ok(parts.join("/"))
}

fn is_drive_prefix(comp: &str) -> bool {
    let b = comp.as_bytes();
    b.len() == 2 && b.first().is_some_and(u8::is_ascii_alphabetic) && b.get(1) == Some(&b':')
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn parent(path: &str) -> Option<&str> {
    path.rfind('/').and_then(|i| path.get(..i))
}

/// `N` when `dir` ends in a `checkpoint-N` component below a model folder.
fn checkpoint_number(dir: &str) -> Option<u64> {
    let last = basename(dir);
    if last.len() == dir.len() {
        return None; // `checkpoint-N` at the root: no model folder
    }
    last.strip_prefix("checkpoint-")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
}

fn common_prefix(files: &[LegacyFile]) -> Option<String> {
    let mut iter = files.iter();
    let first = iter.next()?;
    let mut prefix: Vec<&str> = match parent(&first.path) {
        Some(p) => p.split('/').collect(),
        None => return None,
    };
    for f in iter {
        let dir: Vec<&str> = match parent(&f.path) {
            Some(p) => p.split('/').collect(),
            None => return None,
        };
        let common = prefix
            .iter()
            .zip(dir.iter())
            .take_while(|(a, b)| a == b)
            .count();
        prefix.truncate(common);
        if prefix.is_empty() {
            return None;
        }
    }
    Some(prefix.join("/"))
}

fn find_file(files: &[LegacyFile], name: &str) -> Option<usize> {
    if let Some(i) = files.iter().position(|f| f.path == name) {
        return Some(i);
    }
    if name.contains('/') {
        return None;
    }
    if let Some(prefix) = common_prefix(files) {
        let want = format!("{prefix}/{name}");
        if let Some(i) = files.iter().position(|f| f.path == want) {
            return Some(i);
        }
    }
    files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.basename() == name)
        .filter_map(|(i, f)| parent(&f.path).and_then(checkpoint_number).map(|n| (n, i)))
        .max_by_key(|&(n, i)| (n, std::cmp::Reverse(i)))
        .map(|(_, i)| i)
}

// ---------------------------------------------------------------------------
// Sidecar
// ---------------------------------------------------------------------------

/// `<file>.sha256` next to `p`.
pub fn sidecar_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(".sha256");
    PathBuf::from(s)
}

/// The sidecar content for `bytes`: `"{hex}  {file_name}\n"`.
pub fn sidecar_line(bytes: &[u8], file_name: &str) -> String {
    sidecar_line_for_digest(&Sha256::digest(bytes).into(), file_name)
}

/// The sidecar line for an already computed digest.
pub fn sidecar_line_for_digest(digest: &[u8; 32], file_name: &str) -> String {
    format!("{}  {}\n", hex::encode(digest), file_name)
}

/// Writes `<path>.sha256` for the file at `path`, hashing it as a stream
/// (a multi-gigabyte expert is never read into memory).
pub fn write_sidecar(path: &Path) -> Result<(), LegacyError> {
    let mut file = std::fs::File::open(path).map_err(|e| LegacyError::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| LegacyError::io(path, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let line = sidecar_line_for_digest(&hasher.finalize().into(), &name);
    let sidecar = sidecar_path(path);
    crate::format::atomic::write_atomic(&sidecar, line.as_bytes())
        .map_err(|e| LegacyError::from_format(&sidecar, e))
}

/// Checks `package_bytes` against a sha256sum-style sidecar
/// (`"{hex}  {name}"` or `"{hex} *{name}"`). The line whose name matches
/// `file_name` by basename is used; a single bare `"{hex}"` line is accepted
/// too. A sidecar that names only other files is a [`LegacyError::SidecarFormat`].
pub fn verify_sidecar(
    package_bytes: &[u8],
    sidecar_text: &str,
    file_name: &str,
) -> Result<(), LegacyError> {
    let want = basename_any(file_name);
    let mut lines = Vec::new();
    for (no, raw) in sidecar_text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        lines.push(parse_sidecar_line(line, no + 1)?);
    }
    if lines.is_empty() {
        return Err(LegacyError::SidecarFormat("no checksum line".into()));
    }
    let chosen = lines
        .iter()
        .find(|(_, name)| name.as_deref().map(basename_any) == Some(want))
        .or_else(|| {
            if lines.len() == 1 {
                lines.iter().find(|(_, name)| name.is_none())
            } else {
                None
            }
        });
    let (expected, _) = match chosen {
        Some(c) => c,
        None => {
            let names: Vec<&str> = lines.iter().filter_map(|(_, n)| n.as_deref()).collect();
            return Err(LegacyError::SidecarFormat(format!(
                "no line for {want:?} (sidecar names {names:?})"
            )));
        }
    };
    let actual = hex::encode(Sha256::digest(package_bytes));
    if *expected != actual {
        return Err(LegacyError::SidecarMismatch {
            file: want.to_string(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

fn basename_any(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

/// Parses `"{hex}  {name}"`, `"{hex} *{name}"` or a bare `"{hex}"`.
fn parse_sidecar_line(line: &str, no: usize) -> Result<(String, Option<String>), LegacyError> {
    let line = line.trim_start();
    let hex_len = line
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digest, rest) = line.split_at(hex_len);
    if digest.len() != 64 {
        return Err(LegacyError::SidecarFormat(format!(
            "line {no}: expected 64 hex digits of SHA-256, found {:?}",
            truncate_for_display(line)
        )));
    }
    let digest = digest.to_ascii_lowercase();
    if rest.trim().is_empty() {
        return Ok((digest, None));
    }
    let name = if let Some(n) = rest.strip_prefix("  ").or_else(|| rest.strip_prefix(" *")) {
        n
    } else if let Some(n) = rest.strip_prefix(' ') {
        // Lenient: a single space (some tools), or `\t`.
        n
    } else if let Some(n) = rest.strip_prefix('\t') {
        n
    } else {
        return Err(LegacyError::SidecarFormat(format!(
            "line {no}: expected two spaces or \" *\" after the digest, found {:?}",
            truncate_for_display(rest)
        )));
    };
    let name = name.trim_end();
    if name.is_empty() {
        return Ok((digest, None));
    }
    Ok((digest, Some(name.to_string())))
}

fn truncate_for_display(s: &str) -> String {
    s.chars().take(80).collect()
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Writes a legacy package to `out` atomically: gzip tar, GNU headers, mode
/// 0644, uid/gid 0, fixed mtime, `manifest.json` first and the other files in
/// the given order. The same files always give the same bytes.
pub fn write_legacy(files: &[LegacyFile], out: &Path) -> Result<(), LegacyError> {
    let order = plan(files)?;
    let mut file = AtomicFile::create(out).map_err(|e| LegacyError::from_format(out, e))?;
    write_to(files, &order, &mut file).map_err(|e| LegacyError::io(out, e))?;
    file.flush().map_err(|e| LegacyError::io(out, e))?;
    file.commit().map_err(|e| LegacyError::from_format(out, e))
}

/// Builds the same bytes as [`write_legacy`] in memory.
pub fn legacy_bytes(files: &[LegacyFile]) -> Result<Vec<u8>, LegacyError> {
    let order = plan(files)?;
    let mut out = Vec::new();
    write_to(files, &order, &mut out).map_err(|e| LegacyError::io(Path::new("<memory>"), e))?;
    Ok(out)
}

/// Validates the names and returns the write order (manifest first).
fn plan(files: &[LegacyFile]) -> Result<Vec<(usize, String)>, LegacyError> {
    let mut seen = HashSet::new();
    let mut normalized = Vec::with_capacity(files.len());
    for f in files {
        let p = normalize_path(&f.path)?;
        if !seen.insert(p.clone()) {
            return Err(LegacyError::DuplicateEntry { entry: p });
        }
        normalized.push(p);
    }
    let manifest = find_file(files, MANIFEST_NAME).ok_or(LegacyError::MissingManifest)?;
    let mut order = Vec::with_capacity(files.len());
    for (i, p) in normalized.into_iter().enumerate() {
        if i == manifest {
            order.insert(0, (i, p));
        } else {
            order.push((i, p));
        }
    }
    Ok(order)
}

fn write_to<W: Write>(files: &[LegacyFile], order: &[(usize, String)], w: W) -> io::Result<()> {
    let gz = GzEncoder::new(w, Compression::default());
    let mut builder = Builder::new(gz);
    for (i, path) in order {
        let Some(file) = files.get(*i) else {
            continue;
        };
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_size(file.data.len() as u64);
        header.set_mode(LEGACY_MODE);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(LEGACY_MTIME);
        builder.append_data(&mut header, path, file.data.as_slice())?;
    }
    let gz = builder.into_inner()?;
    let mut w = gz.finish()?;
    w.flush()
}

#[cfg(test)]
mod tests;
