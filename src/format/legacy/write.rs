//! Writing a package: gzip tar, GNU headers, fixed modes and times, so the
//! same files always give the same bytes.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use tar::{Builder, EntryType, Header};

use super::super::atomic::AtomicFile;
use super::read::normalize_path;
use super::{find_file, LegacyError, LegacyFile, LEGACY_MODE, LEGACY_MTIME, MANIFEST_NAME};

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
pub(super) fn plan(files: &[LegacyFile]) -> Result<Vec<(usize, String)>, LegacyError> {
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

pub(super) fn write_to<W: Write>(
    files: &[LegacyFile],
    order: &[(usize, String)],
    w: W,
) -> io::Result<()> {
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
