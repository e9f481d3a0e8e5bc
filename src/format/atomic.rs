//! Crash-safe file replacement: write to a hidden temp file in the target's
//! own folder, fsync it, rename it over the target, fsync the folder. A crash
//! at any point leaves either the old file or the new one, never half of one.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::{FormatError, Result};

/// A file being written that becomes `target` only on [`AtomicFile::commit`].
/// Dropped without commit, the temp file is deleted and `target` is untouched.
pub struct AtomicFile {
    temp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    /// Creates the temp file beside `target` (same folder, so the rename is atomic).
    pub fn create(target: &Path) -> Result<Self> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let stem = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "expert".into());
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{stem}."))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| FormatError::io(&dir, e))?;
        Ok(Self {
            temp,
            target: target.to_path_buf(),
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

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
        self.temp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

/// Temp files are created owner-only; the result should look like any other
/// file: the replaced file's mode when there was one, else 0644.
fn set_final_permissions(file: &File, target: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(target).map_or(0o644, |m| m.permissions().mode() & 0o7777);
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
