//! The sha256sum-style `.sha256` sidecar beside a package: written with
//! every package, checked when present.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::LegacyError;

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
/// `file_name` by basename are used (all must match); a sidecar of a single
/// line is used whatever it names. A sidecar of several lines that all name
/// other files is a [`LegacyError::SidecarFormat`].
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
    // Every line naming the file must hold (as `sha256sum -c` checks each
    // line): a wrong line after a right one is no less wrong. A sidecar of
    // one line is checked whatever name it gives (a renamed download).
    let mut chosen: Vec<&String> = lines
        .iter()
        .filter(|(_, name)| name.as_deref().map(basename_any) == Some(want))
        .map(|(digest, _)| digest)
        .collect();
    if chosen.is_empty() && lines.len() == 1 {
        chosen.extend(lines.iter().map(|(digest, _)| digest));
    }
    if chosen.is_empty() {
        let names: Vec<&str> = lines.iter().filter_map(|(_, n)| n.as_deref()).collect();
        return Err(LegacyError::SidecarFormat(format!(
            "no line for {want:?} (sidecar names {names:?})"
        )));
    }
    let actual = hex::encode(Sha256::digest(package_bytes));
    if let Some(expected) = chosen.into_iter().find(|d| **d != actual) {
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
