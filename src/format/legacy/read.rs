//! Reading a package in memory: the gzip stream bounded, the tar walked
//! entry by entry with every hostile shape refused, hidden data detected.

use std::cell::Cell;
use std::collections::HashSet;
use std::io::{self, Read};
use std::rc::Rc;

use flate2::bufread::GzDecoder;
use tar::{Archive, EntryType};

use super::{
    is_gzip, LegacyError, LegacyFile, LegacyLimits, LegacyPackage, MAX_PREALLOC,
    PER_ENTRY_OVERHEAD, STREAM_SLACK, TAR_BLOCK,
};

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
    padding: Rc<PaddingWatch>,
}

/// The padding after each member's data up to the next 512-byte block:
/// the tar crate skips it unseen, so the bytes are checked here as they
/// stream past. Writers fill it with zeros; anything else is a payload no
/// reader of the package sees.
#[derive(Default)]
struct PaddingWatch {
    /// `[start, end)` stream offsets still to pass, in stream order.
    ranges: std::cell::RefCell<std::collections::VecDeque<(u64, u64)>>,
    non_zero: Cell<u64>,
}

impl PaddingWatch {
    fn expect_zeros(&self, start: u64, end: u64) {
        if start < end {
            self.ranges.borrow_mut().push_back((start, end));
        }
    }

    /// `bytes` were read at stream offset `at`.
    fn observe(&self, at: u64, bytes: &[u8]) {
        let end = at.saturating_add(bytes.len() as u64);
        let mut ranges = self.ranges.borrow_mut();
        while let Some(&(lo, hi)) = ranges.front() {
            if lo >= end {
                break;
            }
            let from = lo.max(at).saturating_sub(at) as usize;
            let to = hi.min(end).saturating_sub(at) as usize;
            let seen = bytes.get(from..to).unwrap_or(&[]);
            let count = seen.iter().filter(|&&b| b != 0).count() as u64;
            self.non_zero.set(self.non_zero.get().saturating_add(count));
            if hi <= end {
                ranges.pop_front();
            } else {
                break;
            }
        }
    }
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
        let at = self.read.get();
        self.padding.observe(at, buf.get(..n).unwrap_or(&[]));
        let total = at.saturating_add(n as u64);
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
    padding: Rc<PaddingWatch>,
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
        padding: Rc::new(PaddingWatch::default()),
    };
    let guarded = Guarded {
        // The bufread decoder over the slice: what follows the gzip member
        // is left in the slice, to be checked below.
        inner: GzDecoder::new(bytes),
        read: Rc::clone(&state.read),
        cap,
        fault: Rc::clone(&state.fault),
        gzip_message: Rc::clone(&state.gzip_message),
        padding: Rc::clone(&state.padding),
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

            if let Some(file) = read_entry(
                &mut entry,
                &state,
                limits,
                &mut seen,
                &mut total,
                &mut last_end,
            )? {
                files.push(file);
            }
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
    let padding = state.padding.non_zero.get();
    if padding > 0 {
        return Err(LegacyError::HiddenData {
            what: "non-zero bytes in the padding after a member's data",
            bytes: padding,
        });
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

/// One tar entry: refused when hostile or over the limits, skipped when a
/// folder (its name still checked), read whole when a regular file.
fn read_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    state: &StreamState,
    limits: &LegacyLimits,
    seen: &mut HashSet<String>,
    total: &mut u64,
    last_end: &mut u64,
) -> Result<Option<LegacyFile>, LegacyError> {
    let raw_name = entry.path_bytes().into_owned();
    let name = match String::from_utf8(raw_name) {
        Ok(s) => s,
        Err(e) => {
            return Err(LegacyError::NonUtf8Name {
                entry: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            })
        }
    };
    check_pax_records(entry, &name)?;
    let entry_type = entry.header().entry_type();
    let size = entry.size();
    let data_end = entry
        .raw_file_position()
        .checked_add(size)
        .and_then(|e| e.checked_add(TAR_BLOCK - 1))
        .map(|e| e & !(TAR_BLOCK - 1))
        .ok_or_else(|| LegacyError::Tar(format!("entry {name:?}: size overflow")))?;
    *last_end = data_end;
    let data_start = entry.raw_file_position();
    state
        .padding
        .expect_zeros(data_start.saturating_add(size), data_end);

    match entry_type {
        EntryType::Directory | EntryType::XGlobalHeader => {
            // Validate the name anyway: a hostile directory name is
            // still a hostile archive.
            if entry_type == EntryType::Directory {
                check_dir_name(&name)?;
            }
            return Ok(None);
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
    let mode = entry
        .header()
        .mode()
        .map_err(|e| LegacyError::Tar(format!("entry {path:?}: bad mode field: {e}")))?
        & 0o7777;

    let mut data = Vec::with_capacity(size.min(MAX_PREALLOC) as usize);
    entry
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
    *total = new_total;
    Ok(Some(LegacyFile { path, data, mode }))
}

/// PAX records a tar reader acts on (names, sizes, times, owners) and the
/// extended attributes tar tools record; anything else (a `comment`, a
/// vendor key) is carried past every reader of the package unseen.
const PAX_KNOWN: [&str; 11] = [
    "path",
    "linkpath",
    "size",
    "mtime",
    "atime",
    "ctime",
    "uid",
    "gid",
    "uname",
    "gname",
    "hdrcharset",
];
const PAX_KNOWN_PREFIXES: [&str; 3] = ["SCHILY.", "LIBARCHIVE.", "GNU.sparse."];
/// More PAX bytes than any attribute set a tool writes for one member.
const PAX_MAX_BYTES: u64 = 64 << 10;

/// Refuses PAX records that smuggle data: unknown keys, or more bytes of
/// known ones than an attribute set needs.
fn check_pax_records<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
) -> Result<(), LegacyError> {
    let records = entry
        .pax_extensions()
        .map_err(|e| LegacyError::Tar(format!("entry {name:?}: PAX header: {e}")))?;
    let Some(records) = records else {
        return Ok(());
    };
    let mut bytes = 0u64;
    for record in records {
        let record =
            record.map_err(|e| LegacyError::Tar(format!("entry {name:?}: PAX record: {e}")))?;
        let value = record.value_bytes().len() as u64;
        bytes = bytes.saturating_add(value);
        let key = record.key().unwrap_or("");
        let known =
            PAX_KNOWN.contains(&key) || PAX_KNOWN_PREFIXES.iter().any(|p| key.starts_with(p));
        if !known {
            return Err(LegacyError::HiddenData {
                what: "a PAX record of a key tar readers ignore (a comment, a vendor field)",
                bytes: value,
            });
        }
    }
    if bytes > PAX_MAX_BYTES {
        return Err(LegacyError::HiddenData {
            what: "more PAX attribute bytes on one member than any tar tool writes",
            bytes,
        });
    }
    Ok(())
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
pub(super) fn normalize_path(name: &str) -> Result<String, LegacyError> {
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
