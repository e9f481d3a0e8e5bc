//! The bytes of an input file, and the check that it is a regular file
//! before it is opened.

use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::format::error::{FormatError, Result};

/// The bytes of a file: memory-mapped, embedded in the binary, or owned.
/// Shared (`Arc`) so a viewer can keep showing the bytes of a file that
/// failed to parse.
pub enum FileBytes {
    /// A read-only map; the open file is kept to notice truncation.
    Map {
        map: Mmap,
        file: File,
        path: PathBuf,
    },
    /// Bytes embedded in the binary.
    Static(&'static [u8]),
    /// Bytes owned in memory.
    Owned(Vec<u8>),
    /// A remote object mirrored in an anonymous map of its full size, of
    /// which only `present` (sorted, disjoint byte ranges) was fetched;
    /// the rest reads as zeros, so readers check [`FileBytes::has`] before
    /// handing out a section (`crate::format::remote`).
    Remote {
        map: Mmap,
        present: Vec<(u64, u64)>,
        url: String,
    },
}

/// Refuses inputs that are not regular files before they are opened: a
/// folder gets a clear message instead of "No such device", and a FIFO,
/// socket or device is never opened (opening a FIFO for reading blocks
/// until a writer appears: `validate FIFO` would hang).
pub fn check_input_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| FormatError::io(path, e))?;
    let what = if meta.is_dir() {
        "is a folder, not an expert file"
    } else if !meta.is_file() {
        "is not a regular file (a FIFO, socket or device): refusing to read it"
    } else {
        return Ok(());
    };
    Err(FormatError::io(
        path,
        std::io::Error::new(std::io::ErrorKind::InvalidInput, what),
    ))
}

impl FileBytes {
    /// Memory-maps `path` read-only.
    pub fn map(path: &Path) -> Result<Self> {
        check_input_file(path)?;
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        // SAFETY: the map is read-only. If another process truncates the file
        // while it is mapped, reads past the new end fault (SIGBUS); expertui
        // writes by rename, never in place, so its own writes cannot cause it.
        // Long operations call `check_unchanged` first, and the binary turns
        // a SIGBUS that still happens into a clean exit (`crate::sigbus::install_handler`).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
        Ok(Self::Map {
            map,
            file,
            path: path.to_path_buf(),
        })
    }

    /// For a mapped file: fails with [`FormatError::FileChanged`] when the
    /// file's length is no longer the mapped length (someone truncated or
    /// extended it in place), before any section byte is touched. One
    /// `fstat`; a file replaced by rename keeps its old, still valid bytes.
    pub fn check_unchanged(&self) -> Result<()> {
        let Self::Map { map, file, path } = self else {
            return Ok(());
        };
        let now = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        let mapped = map.len() as u64;
        if now != mapped {
            return Err(FormatError::FileChanged {
                path: path.clone(),
                mapped,
                now,
            });
        }
        Ok(())
    }
}

impl FileBytes {
    /// True when `start..end` holds the file's real bytes (always, except
    /// for the parts of a remote object that were not fetched).
    pub fn has(&self, start: u64, end: u64) -> bool {
        match self {
            Self::Remote { present, .. } => {
                start >= end || present.iter().any(|&(s, e)| s <= start && end <= e)
            }
            _ => true,
        }
    }

    /// True when every byte is the file's (false while parts of a remote
    /// object are not fetched).
    pub fn complete(&self) -> bool {
        self.has(0, self.len() as u64)
    }

    /// Tells the kernel `start..end` of a mapped file will be read soon, so
    /// it reads ahead the whole range at once instead of a window per page
    /// fault. A hint: other byte sources, and failures, are ignored.
    pub fn will_need(&self, start: u64, end: u64) {
        #[cfg(unix)]
        if let Self::Map { map, .. } = self {
            let page = page_size() as u64;
            let from = start - start % page;
            let to = end.min(map.len() as u64);
            if let (Ok(offset), Ok(len)) = (
                usize::try_from(from),
                usize::try_from(to.saturating_sub(from)),
            ) {
                // Already in the page cache (a hot load): the hint would
                // only walk it. Three sampled pages decide.
                let resident = [0, len / 2, len.saturating_sub(1)]
                    .iter()
                    .all(|&at| page_resident(map, offset.saturating_add(at)));
                if len > 0 && !resident {
                    let _ = map.advise_range(memmap2::Advice::WillNeed, offset, len);
                }
            }
        }
        #[cfg(not(unix))]
        let _ = (start, end);
    }

    /// The URL of a remote object.
    pub fn url(&self) -> Option<&str> {
        match self {
            Self::Remote { url, .. } => Some(url),
            _ => None,
        }
    }
}

/// The system's page size (4 KiB when it cannot be read).
#[cfg(unix)]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

/// Whether the page of `map` holding byte `at` is in memory (`mincore`).
#[cfg(unix)]
fn page_resident(map: &Mmap, at: usize) -> bool {
    let page = page_size();
    if at >= map.len() {
        return true;
    }
    let start = at - at % page;
    let mut vec = [0u8; 1];
    // SAFETY: `start` is page-aligned inside the mapping (the map itself
    // starts on a page), one page is asked about, and `vec` has room for
    // its one status byte.
    let rc = unsafe {
        libc::mincore(
            map.as_ptr().add(start) as *mut libc::c_void,
            1,
            vec.as_mut_ptr().cast(),
        )
    };
    rc != 0 || vec[0] & 1 == 1
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Map { map, .. } => map,
            Self::Static(s) => s,
            Self::Owned(v) => v,
            Self::Remote { map, .. } => map,
        }
    }
}
