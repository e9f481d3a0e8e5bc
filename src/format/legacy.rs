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

use std::io;
use std::path::{Path, PathBuf};

use super::error::FormatError;

mod read;
mod sidecar;
mod write;

pub use read::read_legacy;
pub use sidecar::{
    sidecar_line, sidecar_line_for_digest, sidecar_path, verify_sidecar, write_sidecar,
};
pub use write::{legacy_bytes, write_legacy};

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

    /// Several files share a base name and no rule says which one the
    /// package means (none at the root, under the shared folder, or in a
    /// numbered `checkpoint-N` folder): taking one would silently drop the
    /// others.
    #[error("{name} appears {} times ({}) and nothing says which one the package means: keep one, at the root or under one checkpoint-N folder", paths.len(), paths.join(", "))]
    AmbiguousFile { name: String, paths: Vec<String> },

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
            Self::AmbiguousFile { .. } => "legacy.ambiguous-file",
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
    /// folder (the highest N when several checkpoints hold it), then the one
    /// file anywhere with that base name.
    pub fn get(&self, name: &str) -> Option<&LegacyFile> {
        find_file(&self.files, name).and_then(|i| self.files.get(i))
    }

    /// The bytes of `manifest.json`, wherever the package nests it.
    pub fn manifest_bytes(&self) -> Result<&[u8], LegacyError> {
        if let Some(file) = self.get(MANIFEST_NAME) {
            return Ok(file.data.as_slice());
        }
        let paths = self.paths_named(MANIFEST_NAME);
        Err(if paths.is_empty() {
            LegacyError::MissingManifest
        } else {
            LegacyError::AmbiguousFile {
                name: MANIFEST_NAME.into(),
                paths,
            }
        })
    }

    /// Every path whose base name is `name`, in archive order.
    pub fn paths_named(&self, name: &str) -> Vec<String> {
        self.files
            .iter()
            .filter(|f| f.basename() == name)
            .map(|f| f.path.clone())
            .collect()
    }

    /// The file indices by base name, in the order names first appear: one
    /// pass, for callers that resolve every name (see [`pick_copy`]).
    pub fn by_base_name(&self) -> Vec<(&str, Vec<usize>)> {
        let mut slot: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut out: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            let base = f.basename();
            let at = *slot.entry(base).or_insert_with(|| {
                out.push((base, Vec::new()));
                out.len() - 1
            });
            if let Some((_, list)) = out.get_mut(at) {
                list.push(i);
            }
        }
        out
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

/// What the gzip header carries beside the stream: an extra field and a
/// comment, which no reader of the package sees (the packager writes
/// neither). `None` when there is neither; never fails (the decoder judges
/// the header itself).
pub fn gzip_header_extras(bytes: &[u8]) -> Option<String> {
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;
    let flags = *bytes.get(3)?;
    let mut at = 10usize;
    let mut extra = 0usize;
    if flags & FEXTRA != 0 {
        let len = bytes.get(10..12)?;
        extra = u16::from_le_bytes([*len.first()?, *len.get(1)?]) as usize;
        at = at.checked_add(2)?.checked_add(extra)?;
    }
    let nul_terminated = |from: usize| {
        bytes
            .get(from..)
            .and_then(|rest| rest.iter().position(|&b| b == 0))
    };
    if flags & FNAME != 0 {
        at = at.checked_add(nul_terminated(at)?)?.checked_add(1)?;
    }
    let comment = if flags & FCOMMENT != 0 {
        nul_terminated(at)?
    } else {
        0
    };
    let mut parts = Vec::new();
    if extra > 0 {
        parts.push(format!("a {extra}-byte extra field"));
    }
    if comment > 0 {
        parts.push(format!("a {comment}-byte comment"));
    }
    (!parts.is_empty()).then(|| {
        format!(
            "the gzip header carries {}, which no reader of the package sees",
            parts.join(" and ")
        )
    })
}

/// True when `bytes` starts with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
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
    let same: Vec<usize> = (0..files.len())
        .filter(|&i| files.get(i).is_some_and(|f| f.basename() == name))
        .collect();
    pick_copy(files, name, &same, common_prefix(files).as_deref())
}

/// Which of `copies` (indices of the files whose base name is `name`) the
/// package means: the one at the root, the one under the shared `prefix`,
/// the one in the highest `checkpoint-N` folder, or the only one.
pub(crate) fn pick_copy(
    files: &[LegacyFile],
    name: &str,
    copies: &[usize],
    prefix: Option<&str>,
) -> Option<usize> {
    let path_of = |i: usize| files.get(i).map(|f| f.path.as_str()).unwrap_or_default();
    if let Some(&i) = copies.iter().find(|&&i| path_of(i) == name) {
        return Some(i);
    }
    if let Some(prefix) = prefix {
        let want = format!("{prefix}/{name}");
        if let Some(&i) = copies.iter().find(|&&i| path_of(i) == want) {
            return Some(i);
        }
    }
    let latest = copies
        .iter()
        .filter_map(|&i| {
            parent(path_of(i))
                .and_then(checkpoint_number)
                .map(|n| (n, i))
        })
        .max_by_key(|&(n, i)| (n, std::cmp::Reverse(i)))
        .map(|(_, i)| i);
    match (latest, copies) {
        (Some(i), _) => Some(i),
        // The only file of that name, wherever it sits (`weights/…` beside
        // a root manifest): unambiguous, so taken.
        (None, [only]) => Some(*only),
        (None, _) => None,
    }
}

#[cfg(test)]
mod tests;
