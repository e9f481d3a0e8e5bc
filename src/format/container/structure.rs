//! Structure checks of a v2 file: header, TOC and section ranges, all against
//! the real byte length with checked arithmetic. Reads no section data.

use std::collections::HashSet;

use zerocopy::FromBytes;

use super::layout::*;
use crate::format::error::{FormatError, Result};

/// Largest TOC entry a future minor may declare; bounds per-entry reads.
const MAX_TOC_ENTRY_SIZE: u32 = 4096;

/// A parsed, bounds-checked file layout.
#[derive(Debug, Clone)]
pub struct Structure {
    pub header: Header,
    pub toc: Vec<TocEntry>,
    /// Where the zero padding before each section starts (the previous end).
    pub padding_start: Vec<u64>,
    /// End of the last section (or of the header): zero padding follows up to the TOC.
    pub data_end: u64,
}

/// Hints for magic bytes that are almost ours, or someone else's.
fn magic_hint(found: &[u8]) -> Option<&'static str> {
    if found.starts_with(b"\x89EXP\n\x1a\n") {
        return Some("CR LF became LF: the file went through a text-mode transfer");
    }
    if found.starts_with(b"\x89EXP\r\r\n") || found.starts_with(b"\x89EXP\r\n\x1a\r\n") {
        return Some("LF became CR LF: the file went through a text-mode transfer");
    }
    if found.starts_with(b"\x09EXP") {
        return Some("the high bit was stripped: the file went through a 7-bit transfer");
    }
    if found.starts_with(&[0x1f, 0x8b]) {
        return Some("gzip data: a legacy tar.gz expert; open it with ExpertLoader or convert it");
    }
    if found.get(8) == Some(&b'{') {
        return Some("looks like a bare safetensors file");
    }
    None
}

fn bad_header(field: &'static str, reason: impl Into<String>) -> FormatError {
    FormatError::BadHeader {
        field,
        reason: reason.into(),
    }
}

/// One entry's own fields: a UTF-8 name, unique id and (type, name), a
/// known type when marked critical, a codec this build reads. Returns the
/// name.
fn check_entry(
    index: usize,
    entry: &TocEntry,
    ids: &mut HashSet<u32>,
    names: &mut HashSet<(u16, String)>,
    newer_minor: bool,
) -> Result<String> {
    let bad = |reason: String| FormatError::BadEntry { index, reason };
    let name = entry
        .name_str()
        .ok_or_else(|| bad("name is not NUL-padded UTF-8".into()))?
        .to_string();
    if !ids.insert(entry.section_id.get()) {
        return Err(bad(format!(
            "duplicate section id {}",
            entry.section_id.get()
        )));
    }
    if !names.insert((entry.section_type.get(), name.clone())) {
        return Err(bad(format!(
            "duplicate section {} {name:?}",
            entry.kind().label()
        )));
    }
    if !entry.kind().is_known() && entry.flags & ENTRY_FLAG_CRITICAL != 0 {
        return Err(FormatError::UnknownCriticalSection {
            index,
            name,
            code: entry.section_type.get(),
        });
    }
    match Codec::from_parts(entry.codec, entry.reserved.get()) {
        Some(Codec::None) if entry.raw_len.get() != entry.stored_len.get() => {
            return Err(bad(format!(
                "uncompressed but raw length {} differs from stored length {}",
                entry.raw_len.get(),
                entry.stored_len.get()
            )));
        }
        None if !newer_minor => {
            return Err(bad(format!("unknown codec {}", entry.codec)));
        }
        _ => {}
    }
    Ok(name)
}

/// Checks the header alone (magic, version, sizes) against `file_len`.
pub fn parse_header(data: &[u8]) -> Result<Header> {
    let have = data.len() as u64;
    let magic = data.get(..MAGIC.len()).unwrap_or(data);
    if magic != MAGIC {
        return Err(FormatError::BadMagic {
            found: magic.to_vec(),
            hint: magic_hint(data),
        });
    }
    let Ok((header, _)) = Header::read_from_prefix(data) else {
        return Err(FormatError::Truncated {
            what: "header",
            needed: HEADER_SIZE as u64,
            have,
        });
    };
    let (major, minor) = (header.version_major.get(), header.version_minor.get());
    if major != VERSION_MAJOR {
        return Err(FormatError::UnsupportedVersion {
            major,
            minor,
            supported: VERSION_MAJOR,
        });
    }
    let flags = header.flags.get();
    if flags & REQUIRED_FLAGS_MASK != 0 {
        return Err(FormatError::UnsupportedFeatures { flags });
    }
    let declared = header.file_size.get();
    if declared != have {
        return Err(FormatError::FileSizeMismatch {
            declared,
            actual: have,
        });
    }
    let header_size = u64::from(header.header_size.get());
    if header_size < HEADER_SIZE as u64 || header_size > have {
        return Err(bad_header(
            "header_size",
            format!("{header_size} is outside {HEADER_SIZE}..={have}"),
        ));
    }
    let alignment = header.section_alignment.get();
    if alignment != BASE_ALIGNMENT as u32 && alignment != GPU_ALIGNMENT as u32 {
        return Err(bad_header(
            "section_alignment",
            format!("{alignment} is neither 64 nor 256"),
        ));
    }
    let entry_size = header.toc_entry_size.get();
    if !(TOC_ENTRY_SIZE as u32..=MAX_TOC_ENTRY_SIZE).contains(&entry_size) {
        return Err(bad_header(
            "toc_entry_size",
            format!("{entry_size} is outside {TOC_ENTRY_SIZE}..={MAX_TOC_ENTRY_SIZE}"),
        ));
    }
    Ok(header)
}

/// Full structure check: header, then every TOC entry in order.
pub fn parse_structure(data: &[u8]) -> Result<Structure> {
    let header = parse_header(data)?;
    let file_size = data.len() as u64;
    let header_size = u64::from(header.header_size.get());
    let toc_offset = header.toc_offset.get();
    let count = u64::from(header.toc_count.get());
    let entry_size = u64::from(header.toc_entry_size.get());
    let toc_oob = || FormatError::TocOutOfBounds {
        offset: toc_offset,
        count,
        entry_size,
        file_size,
    };
    let toc_end = count
        .checked_mul(entry_size)
        .and_then(|len| len.checked_add(toc_offset))
        .ok_or_else(toc_oob)?;
    if toc_offset < header_size || toc_end > file_size {
        return Err(toc_oob());
    }
    if toc_end != file_size {
        return Err(bad_header(
            "toc_offset",
            format!("the TOC must end the file: it ends at {toc_end}, the file at {file_size}"),
        ));
    }
    if toc_offset % BASE_ALIGNMENT != 0 {
        return Err(bad_header(
            "toc_offset",
            format!("{toc_offset} is not 64-byte aligned"),
        ));
    }
    let newer_minor = header.version_minor.get() > VERSION_MINOR;
    let file_alignment = u64::from(header.section_alignment.get());

    // `count` is bounded by the file size here, so these allocations are too.
    let mut toc = Vec::with_capacity(count as usize);
    let mut padding_start = Vec::with_capacity(count as usize);
    let mut ids = HashSet::with_capacity(count as usize);
    let mut names = HashSet::with_capacity(count as usize);
    let mut previous_end = header_size;
    for index in 0..count as usize {
        let at = toc_offset + index as u64 * entry_size;
        let bytes = data.get(at as usize..).unwrap_or(&[]);
        let entry = TocEntry::read_from_prefix(bytes).map_err(|_| toc_oob())?.0;
        let name = check_entry(index, &entry, &mut ids, &mut names, newer_minor)?;
        let offset = entry.offset.get();
        let alignment = if entry.flags & ENTRY_FLAG_ALIGN_256 != 0 {
            GPU_ALIGNMENT
        } else {
            file_alignment
        };
        if offset % alignment != 0 {
            return Err(FormatError::Misaligned {
                index,
                entry: at,
                name,
                offset,
                alignment,
            });
        }
        if offset < previous_end {
            return Err(FormatError::SectionOverlap {
                index,
                entry: at,
                name,
                offset,
                previous_end,
            });
        }
        let end = offset.checked_add(entry.stored_len.get());
        match end {
            Some(end) if end <= toc_offset => {}
            _ => {
                return Err(FormatError::SectionOutOfBounds {
                    index,
                    entry: at,
                    name,
                    offset,
                    end: u128::from(offset) + u128::from(entry.stored_len.get()),
                    limit: toc_offset,
                })
            }
        }
        // Sections tile the file: no holes where other data could hide.
        let expected = align_up(previous_end, alignment).ok_or_else(toc_oob)?;
        if offset != expected {
            return Err(FormatError::SectionGap {
                index,
                entry: at,
                name,
                offset,
                expected,
            });
        }
        padding_start.push(previous_end);
        previous_end = end.unwrap_or(toc_offset);
        toc.push(entry);
    }
    let expected_toc = align_up(previous_end, BASE_ALIGNMENT).ok_or_else(toc_oob)?;
    if toc_offset != expected_toc {
        return Err(bad_header(
            "toc_offset",
            format!("{toc_offset} leaves a gap after the last section (expected {expected_toc})"),
        ));
    }
    let signature_index = header.signature_index.get();
    if signature_index != NO_SIGNATURE {
        let points_at_signature = toc
            .get(signature_index as usize)
            .is_some_and(|e| e.kind() == SectionType::Signature);
        if !points_at_signature {
            return Err(bad_header(
                "signature_index",
                format!("{signature_index} is not a signature section"),
            ));
        }
    }
    Ok(Structure {
        header,
        toc,
        padding_start,
        data_end: previous_end,
    })
}
