//! The one error type of the container layer. Each variant says what is wrong
//! and where, so a user can act on it.

use std::path::PathBuf;

/// Result alias for container operations.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// Everything that can go wrong reading or writing an `.expert` v2 file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// An operating-system error on `path` (open, read, write, rename).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A write failed for lack of space (ENOSPC), quota (EDQUOT) or the
    /// process's file size limit (EFBIG); the target was left as it was.
    #[error("disk full or file size limit reached while writing {path}: {source}")]
    DiskFull {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file shrank (or grew) while it was open: another program
    /// truncated or rewrote it in place. Reading on could fault.
    #[error("{path} changed while it was being read: it was {mapped} bytes when opened and is {now} bytes now (another program truncated or rewrote it in place)")]
    FileChanged {
        path: PathBuf,
        mapped: u64,
        now: u64,
    },

    /// The first 8 bytes are not the `.expert` v2 magic; `hint` names what they look like (gzip: a legacy package).
    #[error("not an .expert v2 file: bad magic {found:02x?}{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    BadMagic {
        found: Vec<u8>,
        hint: Option<&'static str>,
    },

    /// Written by a newer major version of the format.
    #[error("unsupported format version {major}.{minor}: this build reads major version {supported}; upgrade expertui to open it")]
    UnsupportedVersion {
        major: u16,
        minor: u16,
        supported: u16,
    },

    /// A required-feature bit (upper half of the header flags) this build does not implement.
    #[error("file uses required features this build does not know (header flags {flags:#018x})")]
    UnsupportedFeatures { flags: u64 },

    /// The compressed sections together claim more decoded bytes than a
    /// file of this size plausibly holds (a decompression bomb).
    #[error("the compressed sections claim {declared} bytes once decoded, over the budget of {limit} bytes for a {file_size}-byte file (raise it with --max-decoded BYTES if the file is trusted)")]
    DecodedBudget {
        declared: u64,
        limit: u64,
        file_size: u64,
    },

    /// Memory for decoding a section could not be allocated.
    #[error("section {name}: could not allocate {bytes} bytes to decode it")]
    OutOfMemory { name: String, bytes: u64 },

    /// The file ends before a fixed structure (`what`) is complete.
    #[error("truncated {what}: need {needed} bytes, file has {have}")]
    Truncated {
        what: &'static str,
        needed: u64,
        have: u64,
    },

    /// A header field holds an impossible value.
    #[error("header field {field} is invalid: {reason}")]
    BadHeader { field: &'static str, reason: String },

    /// The file is shorter or longer than the header's `file_size`.
    #[error("file size mismatch: header declares {declared} bytes, file has {actual} (truncated or appended to)")]
    FileSizeMismatch { declared: u64, actual: u64 },

    /// The header places the table of contents outside the file.
    #[error("table of contents out of bounds: {count} entries of {entry_size} bytes at offset {offset} do not fit in {file_size} bytes")]
    TocOutOfBounds {
        offset: u64,
        count: u64,
        entry_size: u64,
        file_size: u64,
    },

    #[error(
        "section {index} ({name}) out of bounds: bytes {offset}..{end} pass the data limit {limit} (the values come from TOC entry {index} at {entry:#x})"
    )]
    /// A section's bytes run past the end of the data area.
    SectionOutOfBounds {
        index: usize,
        /// File offset of the TOC entry that holds the bad value.
        entry: u64,
        name: String,
        offset: u64,
        end: u128,
        limit: u64,
    },

    /// A section starts inside the previous section (or the header).
    #[error("section {index} ({name}) at offset {offset} overlaps the previous region ending at {previous_end} (TOC entry {index} at {entry:#x})")]
    SectionOverlap {
        index: usize,
        /// File offset of the TOC entry that holds the bad value.
        entry: u64,
        name: String,
        offset: u64,
        previous_end: u64,
    },

    /// A section does not start at the next aligned offset: sections must tile the file.
    #[error("section {index} ({name}) at offset {offset} leaves a gap: expected it at {expected} (TOC entry {index} at {entry:#x})")]
    SectionGap {
        index: usize,
        /// File offset of the TOC entry that holds the bad value.
        entry: u64,
        name: String,
        offset: u64,
        expected: u64,
    },

    /// A section offset is not a multiple of its alignment (64 or 256).
    #[error("section {index} ({name}) at offset {offset} is not aligned to {alignment} bytes (TOC entry {index} at {entry:#x})")]
    Misaligned {
        index: usize,
        /// File offset of the TOC entry that holds the bad value.
        entry: u64,
        name: String,
        offset: u64,
        alignment: u64,
    },

    /// A malformed TOC entry (name, duplicate id or name, codec, lengths).
    #[error("section {index}: {reason}")]
    BadEntry { index: usize, reason: String },

    /// A section of a type this build does not know, flagged critical.
    #[error("section {index} ({name}) has a type this build does not know ({code}) and is marked critical")]
    UnknownCriticalSection {
        index: usize,
        name: String,
        code: u16,
    },

    /// The root digest over header and TOC does not match: either was modified.
    #[error("root digest mismatch: header or table of contents was modified (expected {expected}, computed {actual})")]
    RootMismatch { expected: String, actual: String },

    /// A section's bytes do not hash to the digest in its TOC entry.
    #[error("section {index} ({name}) is damaged: bytes {offset}..{end} hash to {actual}, expected {expected}")]
    DigestMismatch {
        index: usize,
        name: String,
        offset: u64,
        end: u64,
        expected: String,
        actual: String,
    },

    /// Alignment padding before a section holds non-zero bytes.
    #[error("padding before section {index} ({name}) holds non-zero bytes")]
    DirtyPadding { index: usize, name: String },

    /// A compressed section does not decode.
    #[error("section {name}: decompression failed: {reason}")]
    Decompression { name: String, reason: String },

    /// A compressed section decodes to another length than its declared raw length.
    #[error("section {name}: decodes to more or fewer bytes than the {declared} declared ({actual}{})", if *truncated_output { "+" } else { "" })]
    RawLengthMismatch {
        name: String,
        declared: u64,
        actual: u64,
        truncated_output: bool,
    },

    /// A section's declared raw size is above the reader's limit ([`ReaderLimits`](super::ReaderLimits)).
    #[error("section {name}: declared size {declared} exceeds the reader limit {limit}")]
    SectionTooLarge {
        name: String,
        declared: u64,
        limit: u64,
    },

    /// No section of that name (or type and name) in the file.
    #[error("no section {0}")]
    SectionNotFound(String),

    /// A section name that cannot be stored (empty, too long, NUL bytes).
    #[error("invalid section name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// The writer refused a request (alignment, duplicate section, size limits, zstd).
    #[error("writer: {0}")]
    Writer(String),

    /// A remote expert could not be read (not found, refused, timed out, a
    /// server that ignores range requests, a redirect to another host...).
    #[error("{url}: {reason}")]
    Remote { url: String, reason: String },

    /// A remote object changed between two requests (its ETag or
    /// modification time moved): nothing mixed from two versions is used.
    #[error("{url}: the object changed while it was read (was {before}, now {now}); retry")]
    RemoteChanged {
        url: String,
        before: String,
        now: String,
    },

    /// A section of a remote expert that this command did not fetch.
    #[error("{url}: section {name:?} was not fetched")]
    NotFetched { url: String, name: String },
}

impl FormatError {
    /// Wraps an I/O error with the path it concerns ([`FormatError::DiskFull`]
    /// when the error says the disk, quota or file size limit is exhausted).
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if is_disk_full(&source) {
            Self::DiskFull {
                path: path.into(),
                source,
            }
        } else {
            Self::Io {
                path: path.into(),
                source,
            }
        }
    }

    /// True when the file itself is invalid or damaged (exit code 3), false
    /// for environment problems such as I/O errors (exit code 1).
    pub fn is_corruption(&self) -> bool {
        !matches!(
            self,
            Self::Io { .. }
                | Self::DiskFull { .. }
                | Self::FileChanged { .. }
                | Self::Writer(_)
                | Self::InvalidName { .. }
                | Self::SectionNotFound(_)
                | Self::Remote { .. }
                | Self::RemoteChanged { .. }
                | Self::NotFetched { .. }
        )
    }

    /// Stable finding code (`container.bad-magic`, `container.section-digest`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io.error",
            Self::DiskFull { .. } => "io.disk-full",
            Self::FileChanged { .. } => "io.file-changed",
            Self::BadMagic { .. } => "container.bad-magic",
            Self::UnsupportedVersion { .. } => "container.unsupported-version",
            Self::UnsupportedFeatures { .. } => "container.unsupported-features",
            Self::Truncated { .. } => "container.truncated",
            Self::DecodedBudget { .. } => "container.decoded-budget",
            Self::OutOfMemory { .. } => "container.out-of-memory",
            Self::BadHeader { .. } => "container.bad-header",
            Self::FileSizeMismatch { .. } => "container.file-size",
            Self::TocOutOfBounds { .. } => "container.toc-bounds",
            Self::SectionOutOfBounds { .. } => "container.section-bounds",
            Self::SectionOverlap { .. } => "container.section-overlap",
            Self::SectionGap { .. } => "container.section-gap",
            Self::Misaligned { .. } => "container.misaligned",
            Self::BadEntry { .. } => "container.bad-entry",
            Self::UnknownCriticalSection { .. } => "container.unknown-critical-section",
            Self::RootMismatch { .. } => "container.root-digest",
            Self::DigestMismatch { .. } => "container.section-digest",
            Self::DirtyPadding { .. } => "container.padding",
            Self::Decompression { .. } => "container.decompression",
            Self::RawLengthMismatch { .. } => "container.raw-length",
            Self::SectionTooLarge { .. } => "container.section-too-large",
            Self::SectionNotFound(_) => "container.section-not-found",
            Self::InvalidName { .. } => "container.invalid-name",
            Self::Writer(_) => "io.writer",
            Self::Remote { .. } => "remote.error",
            Self::RemoteChanged { .. } => "remote.changed",
            Self::NotFetched { .. } => "remote.not-fetched",
        }
    }

    /// Byte offset in the file where the problem lies, when one is known
    /// (the TUI opens its raw hex view there).
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::BadMagic { .. } => Some(0),
            Self::UnsupportedVersion { .. } => super::layout::header_field_offset("version_major"),
            Self::UnsupportedFeatures { .. } => super::layout::header_field_offset("flags"),
            Self::BadHeader { field, .. } => super::layout::header_field_offset(field),
            Self::FileSizeMismatch { .. } => super::layout::header_field_offset("file_size"),
            // The TOC lies outside the file: point at the field that says where it is.
            Self::TocOutOfBounds { .. } => super::layout::header_field_offset("toc_offset"),
            Self::Truncated { have, .. } => Some(have.saturating_sub(1)),
            // The bad value lives in the TOC: point at the entry's offset
            // field, not at wherever the bogus offset leads.
            Self::SectionOutOfBounds { entry, .. }
            | Self::SectionOverlap { entry, .. }
            | Self::SectionGap { entry, .. }
            | Self::Misaligned { entry, .. } => {
                Some(entry.saturating_add(super::layout::TOC_OFFSET_FIELD))
            }
            Self::DigestMismatch { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

/// True for write errors that mean "no room": ENOSPC, EDQUOT, EFBIG (the
/// file size limit, `ulimit -f`), however deep in a wrapper they sit.
pub fn is_disk_full(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::StorageFull | ErrorKind::FileTooLarge | ErrorKind::QuotaExceeded
    ) {
        return true;
    }
    #[cfg(unix)]
    if matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC | libc::EFBIG | libc::EDQUOT)
    ) {
        return true;
    }
    // io::Error::other(...) wrapping an io::Error (encoders do this).
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        .is_some_and(is_disk_full)
}
