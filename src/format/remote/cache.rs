//! The section cache: sections of remote experts kept on disk, named by
//! their SHA-256 (content-addressed: two experts that share a section share
//! the entry, and a cached file is checked against its name before use), so
//! reopening a remote expert costs its header and TOC only. Bounded in
//! bytes; the least recently used entries go first.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Default bound of the cache folder.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// A cache folder and its bound.
#[derive(Debug, Clone)]
pub struct SectionCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl SectionCache {
    /// `EXPERTUI_CACHE_DIR`, else `$XDG_CACHE_HOME/expertui/sections`, else
    /// `~/.cache/expertui/sections`; bounded by `EXPERTUI_CACHE_MAX_BYTES`
    /// (default 1 GiB). `None` when no folder can be named.
    pub fn from_env() -> Option<Self> {
        let dir = std::env::var_os("EXPERTUI_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(|d| PathBuf::from(d).join("expertui/sections"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/expertui/sections"))
            })?;
        let max_bytes = std::env::var("EXPERTUI_CACHE_MAX_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_BYTES);
        Some(Self { dir, max_bytes })
    }

    /// A cache in `dir` bounded by `max_bytes`.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_bytes,
        }
    }

    fn entry(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(hex::encode(sha256))
    }

    /// The section whose digest is `sha256` and length `len`, if cached
    /// intact (a damaged entry is removed and counts as a miss).
    pub fn get(&self, sha256: &[u8; 32], len: u64) -> Option<Vec<u8>> {
        let path = self.entry(sha256);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.len() != len {
            return None;
        }
        let bytes = std::fs::read(&path).ok()?;
        if <[u8; 32]>::from(Sha256::digest(&bytes)) != *sha256 {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // Touch: the modification time orders eviction.
        if let Ok(file) = std::fs::File::options().append(true).open(&path) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
        Some(bytes)
    }

    /// Keeps `bytes` if they hash to `sha256` (written to a temporary file
    /// and renamed, so a crash never leaves a partial entry), then trims the
    /// folder to its bound. Failures only cost the cache, never the command.
    pub fn put(&self, sha256: &[u8; 32], bytes: &[u8]) {
        if bytes.len() as u64 > self.max_bytes || <[u8; 32]>::from(Sha256::digest(bytes)) != *sha256
        {
            return;
        }
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let Ok(mut tmp) = tempfile::NamedTempFile::new_in(&self.dir) else {
            return;
        };
        use std::io::Write;
        if tmp.write_all(bytes).is_ok() {
            let _ = tmp.persist(self.entry(sha256));
        }
        self.trim();
    }

    /// Removes the least recently used entries until the folder fits.
    fn trim(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                let named = is_entry_name(&e.path());
                (meta.is_file() && named).then(|| {
                    (
                        meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                        meta.len(),
                        e.path(),
                    )
                })
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
            }
        }
    }
}

/// Only files named as entries (64 hex digits) are ever evicted.
fn is_entry_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
}
