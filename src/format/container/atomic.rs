//! Crash-safe file replacement: write to a hidden temp file in the target's
//! own folder, fsync it, rename it over the target, fsync the folder. A crash
//! at any point leaves either the old file or the new one, never half of one.
//!
//! Temp files are named `.<target name>.expertui-<6 random>.tmp` and, on
//! Unix, hold an exclusive `flock` for as long as their writer lives. A
//! writer killed before its rename (SIGKILL, power loss) leaves its temp file
//! behind; the next write to the same target removes every such file whose
//! lock is free (its writer is gone). Only names of exactly that shape are
//! swept: a user's `.notes.txt.draft.tmp` is never touched.
//!
//! Symbolic links and special files are never written through: a target
//! that is a link (to a file, a folder or anything else), a folder, a FIFO or
//! a device is refused before anything is created, so a planted link cannot
//! make a write land elsewhere, and `sign LINK` cannot replace the link and
//! leave the real file unsigned. The written file gets the replaced file's
//! permission bits (rwx for user, group, others) but never setuid, setgid or
//! sticky.
//!
//! Test hook: when the environment variable `EXPERTUI_TEST_WRITE_DELAY_US`
//! holds a number, every write to an output file is cut into 16 KiB pieces
//! and each piece waits that many microseconds first. Fault-injection tests
//! (`tests/faults.rs`) use it to widen the window in which a writer can be
//! killed mid-write. Unset (always, outside tests) it costs one cached check.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::format::error::{FormatError, Result};

/// Name of the test-only environment variable that slows output writes.
pub const WRITE_DELAY_ENV: &str = "EXPERTUI_TEST_WRITE_DELAY_US";

/// Piece size of throttled writes.
const THROTTLE_CHUNK: usize = 16 << 10;

/// The delay per write piece set by [`WRITE_DELAY_ENV`], read once.
fn write_delay() -> Option<Duration> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var(WRITE_DELAY_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&us| us > 0)
            .map(Duration::from_micros)
    })
}

/// Writes through `write`, throttled when the test hook is set: returns how
/// many bytes of `buf` were taken (at most one piece under the hook).
pub(crate) fn throttled_write(
    buf: &[u8],
    write: impl FnOnce(&[u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    match write_delay() {
        None => write(buf),
        Some(delay) => {
            std::thread::sleep(delay);
            write(buf.get(..THROTTLE_CHUNK.min(buf.len())).unwrap_or(buf))
        }
    }
}

/// How many times creating a locked temp file is retried when a concurrent
/// cleaner removed it between creation and locking.
const CREATE_ATTEMPTS: usize = 8;

/// A file being written that becomes `target` only on [`AtomicFile::commit`].
/// Dropped without commit, the temp file is deleted and `target` is untouched.
pub struct AtomicFile {
    temp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    /// Creates the temp file beside `target` (same folder, so the rename is
    /// atomic), after removing temp files that killed writers left for it.
    pub fn create(target: &Path) -> Result<Self> {
        refuse_special_target(target)?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let stem = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "expert".into());
        let prefix = format!(".{stem}.{TEMP_MARK}");
        remove_stale_temps(&dir, &prefix);
        let mut attempt = 0;
        let temp = loop {
            attempt += 1;
            let temp = tempfile::Builder::new()
                .prefix(&prefix)
                .suffix(TEMP_SUFFIX)
                .tempfile_in(&dir)
                .map_err(|e| FormatError::io(&dir, e))?;
            match lock_temp(&temp) {
                Ok(true) => break temp,
                // A cleaner took it between creation and locking: try again.
                Ok(false) if attempt < CREATE_ATTEMPTS => continue,
                Ok(false) => {
                    return Err(FormatError::io(
                        &dir,
                        io::Error::other("temp files keep vanishing before they can be locked"),
                    ))
                }
                Err(e) => return Err(FormatError::io(temp.path(), e)),
            }
        };
        Ok(Self {
            temp,
            target: target.to_path_buf(),
        })
    }

    /// The temporary file to write into.
    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// The path the file will have after [`commit`](Self::commit).
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes to stable storage and renames into place.
    pub fn commit(self) -> Result<()> {
        let target = self.target;
        set_final_permissions(self.temp.as_file(), &target)
            .map_err(|e| FormatError::io(&target, e))?;
        self.temp
            .as_file()
            .sync_all()
            .map_err(|e| FormatError::io(&target, e))?;
        self.temp
            .persist(&target)
            .map_err(|e| FormatError::io(&target, e.error))?;
        sync_parent(&target).map_err(|e| FormatError::io(&target, e))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let temp = &mut self.temp;
        throttled_write(buf, |b| temp.write(b))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

/// Suffix of every temp file (the prefix is `.<target name>.expertui-`).
pub const TEMP_SUFFIX: &str = ".tmp";
/// Marks a temp file as this tool's, between the target name and the random part.
pub const TEMP_MARK: &str = "expertui-";
/// Length of the random part `tempfile` puts between prefix and suffix.
const TEMP_RANDOM_LEN: usize = 6;

/// True when `name` is exactly `<prefix><6 alphanumerics>.tmp`: a temp file
/// this tool made for that target, and nothing else.
fn is_own_temp(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX))
        .is_some_and(|random| {
            random.len() == TEMP_RANDOM_LEN && random.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// Refuses to write where a rename would replace a link, a folder or a
/// special file (or, for the mode, read through a link).
pub fn refuse_special_target(target: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FormatError::io(target, e)),
    };
    let kind = meta.file_type();
    let what = if kind.is_symlink() {
        "a symbolic link: expertui does not write through links (write to the real path)"
    } else if kind.is_dir() {
        "a folder"
    } else if !kind.is_file() {
        "not a regular file (a FIFO, socket or device)"
    } else {
        return Ok(());
    };
    Err(FormatError::io(
        target,
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the output is {what}; nothing was written"),
        ),
    ))
}

/// Takes the writer's lock on a fresh temp file. `Ok(false)`: the file was
/// removed by a cleaner before the lock was taken (the path no longer names
/// the file we hold).
fn lock_temp(temp: &tempfile::NamedTempFile) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(temp.as_file().as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            // Held by a cleaner that is about to delete it.
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(false)
            } else {
                Err(e)
            };
        }
        let held = temp.as_file().metadata()?;
        match std::fs::symlink_metadata(temp.path()) {
            Ok(at_path) => Ok(at_path.ino() == held.ino() && at_path.dev() == held.dev()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = temp;
        Ok(true)
    }
}

/// Removes `dir/<prefix>*.tmp` files whose writer is gone (their lock is
/// free). Best effort: anything unexpected leaves the file where it is.
fn remove_stale_temps(dir: &Path, prefix: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !is_own_temp(&name, prefix) {
                continue;
            }
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let path = entry.path();
            let Ok(file) = File::open(&path) else {
                continue;
            };
            // SAFETY: flock on a descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                // Nobody holds it: its writer died. Unlink while we hold the
                // lock, so a writer that created it a moment ago and has not
                // locked it yet sees it gone and makes another.
                let _ = std::fs::remove_file(&path);
            }
            drop(file);
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, prefix);
}

/// Temp files are created owner-only; the result should look like any other
/// file: the replaced file's permission bits when there was one, else 0644.
/// Never setuid, setgid or sticky, and never read through a link.
fn set_final_permissions(file: &File, target: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::symlink_metadata(target)
            .ok()
            .filter(|m| m.file_type().is_file())
            .map_or(0o644, |m| m.permissions().mode() & 0o777);
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (file, target);
    Ok(())
}

/// Makes the rename itself durable (POSIX needs an fsync of the directory).
fn sync_parent(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Writes `bytes` to `target` atomically.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(target)?;
    file.write_all(bytes)
        .map_err(|e| FormatError::io(target, e))?;
    file.commit()
}
