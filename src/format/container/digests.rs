//! Digests: the root digest (header + TOC, checked in O(TOC) without touching
//! section data) and the parallel per-section verification.

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::layout::TocEntry;
use crate::format::error::FormatError;

/// Byte range of `Header::root_digest` inside the header.
pub const ROOT_FIELD: std::ops::Range<usize> = 48..80;

/// SHA-256 over the header with the root field zeroed, then the TOC bytes.
/// Because every TOC entry holds its section's SHA-256, this one digest
/// commits to every byte of the file.
pub fn root_digest(header: &[u8], toc: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    match (header.get(..ROOT_FIELD.start), header.get(ROOT_FIELD.end..)) {
        (Some(before), Some(after)) => {
            hasher.update(before);
            hasher.update([0u8; 32]);
            hasher.update(after);
        }
        _ => hasher.update(header),
    }
    hasher.update(toc);
    hasher.finalize().into()
}

/// Who is to blame when a section's bytes do not hash to the digest its TOC
/// entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// Digest and bytes agree.
    Intact,
    /// The TOC is authentic (the root digest verifies): the bytes changed.
    Section,
    /// The root digest fails too: the header/TOC was changed, and this
    /// entry's stored digest is the value that disagrees; the section's
    /// bytes may well be intact.
    TocEntry,
}

/// Blames a failed check on the section or on its TOC entry, from whether
/// the root digest (over header and TOC) verifies.
pub fn blame(check: &SectionCheck, root_ok: bool) -> Blame {
    match (check.expected == check.actual, root_ok) {
        (true, _) => Blame::Intact,
        (false, true) => Blame::Section,
        (false, false) => Blame::TocEntry,
    }
}

/// Outcome of hashing one section.
#[derive(Debug, Clone)]
pub struct SectionCheck {
    /// Position of the section in the TOC.
    pub index: usize,
    /// The section name.
    pub name: String,
    /// First byte of the section in the file.
    pub offset: u64,
    /// One past its last byte.
    pub end: u64,
    /// The digest recorded in the TOC.
    pub expected: [u8; 32],
    /// The digest of the bytes as they are.
    pub actual: [u8; 32],
    /// Whether the padding bytes before the section are all zero.
    pub clean_padding: bool,
}

impl SectionCheck {
    /// True when the digest matches and the padding before the section is zero.
    pub fn ok(&self) -> bool {
        self.expected == self.actual && self.clean_padding
    }

    /// The typed error for a failed check.
    pub fn error(&self) -> Option<FormatError> {
        if self.expected != self.actual {
            Some(FormatError::DigestMismatch {
                index: self.index,
                name: self.name.clone(),
                offset: self.offset,
                end: self.end,
                expected: hex::encode(self.expected),
                actual: hex::encode(self.actual),
            })
        } else if !self.clean_padding {
            Some(FormatError::DirtyPadding {
                index: self.index,
                name: self.name.clone(),
            })
        } else {
            None
        }
    }
}

/// Hashes every section in parallel. `data` is the whole file; every entry
/// must already have passed the structure checks (ranges inside `data`).
/// `padding_start[i]` is where the padding before section `i` begins.
pub fn verify_sections(data: &[u8], toc: &[TocEntry], padding_start: &[u64]) -> Vec<SectionCheck> {
    // One SHA-256 stream cannot be split, so the work is split by bytes:
    // sections, largest first, each to the thread with the fewest bytes so
    // far (longest-processing-time first), one batch per thread. Threads
    // then finish within one small section of each other, where splitting
    // by section count left a core idle behind one large section.
    let threads = rayon::current_num_threads().max(1);
    let mut order: Vec<usize> = (0..toc.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(toc[i].stored_len.get()));
    let mut batches: Vec<(u64, Vec<usize>)> = vec![(0, Vec::new()); threads];
    for index in order {
        if let Some(batch) = batches.iter_mut().min_by_key(|b| b.0) {
            batch.0 = batch.0.saturating_add(toc[index].stored_len.get());
            batch.1.push(index);
        }
    }
    let check = |index: usize| {
        let entry = &toc[index];
        let offset = entry.offset.get();
        let end = offset.saturating_add(entry.stored_len.get());
        let bytes = slice(data, offset, end);
        let pad_from = padding_start.get(index).copied().unwrap_or(offset);
        let clean_padding = slice(data, pad_from, offset).iter().all(|&b| b == 0);
        SectionCheck {
            index,
            name: entry.name_str().unwrap_or("?").to_string(),
            offset,
            end,
            expected: entry.sha256,
            actual: Sha256::digest(bytes).into(),
            clean_padding,
        }
    };
    let mut checks: Vec<SectionCheck> = batches
        .into_par_iter()
        .flat_map_iter(|(_, batch)| batch.into_iter().map(check))
        .collect();
    checks.sort_by_key(|c| c.index);
    checks
}

/// `data[start..end]`, or empty when out of range (never panics).
fn slice(data: &[u8], start: u64, end: u64) -> &[u8] {
    match (usize::try_from(start), usize::try_from(end)) {
        (Ok(s), Ok(e)) => data.get(s..e).unwrap_or(&[]),
        _ => &[],
    }
}
