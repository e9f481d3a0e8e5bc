//! Checked little-endian parsing and building of the signing structures, and
//! the minisign-like text files (an `untrusted comment:` line, then one
//! base64 line per object).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Prefix of the comment line above each base64 line in key, certificate
/// and revocation-list files. The comment is not signed.
pub const COMMENT_PREFIX: &str = "untrusted comment: ";

/// Reads fields in order from a byte slice; every read is bounds-checked.
pub struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

/// Ran past the end: how many bytes were needed in total.
#[derive(Debug, Clone, Copy)]
pub struct Short {
    pub needed: u64,
    pub have: u64,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes read so far.
    pub fn consumed(&self) -> &'a [u8] {
        self.data.get(..self.pos).unwrap_or(&[])
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(Short {
                needed: self.pos as u64 + n as u64,
                have: self.data.len() as u64,
            });
        };
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u16(&mut self) -> Result<u16, Short> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, Short> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, Short> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A u16 length, then that many bytes.
    pub fn bytes16(&mut self) -> Result<&'a [u8], Short> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

/// Appends a u16 length and the bytes (the caller bounds the length).
pub fn put_bytes16(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

/// Checks a short free-text field: UTF-8, at most `max` bytes, no control
/// characters (so it prints safely in a terminal).
pub fn check_text(what: &str, bytes: &[u8], max: usize) -> Result<String, String> {
    if bytes.len() > max {
        return Err(format!("{what} longer than {max} bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{what} is not UTF-8"))?;
    if text.chars().any(char::is_control) {
        return Err(format!("{what} has control characters"));
    }
    Ok(text.to_string())
}

/// One object of a text file: comment line and base64 line.
pub fn armor(comment: &str, bytes: &[u8]) -> String {
    let comment: String = comment.chars().filter(|c| !c.is_control()).collect();
    format!("{COMMENT_PREFIX}{comment}\n{}\n", STANDARD.encode(bytes))
}

/// The decoded base64 lines of a text file, in order. Comment lines and
/// blank lines are skipped; anything else must be base64.
pub fn unarmor(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("untrusted comment:") {
            continue;
        }
        let bytes = STANDARD
            .decode(line)
            .map_err(|e| format!("line {}: not base64: {e}", number + 1))?;
        out.push(bytes);
    }
    if out.is_empty() {
        return Err("no base64 line".into());
    }
    Ok(out)
}

/// Reads a small text file, refusing anything larger than `limit` bytes.
pub fn read_limited(path: &std::path::Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(text)
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}
