//! The signing digest: what a signature commits to.
//!
//! ```text
//! D = SHA-256( "expertui-signature-v1\0"
//!              ‖ version_major u16 ‖ version_minor u16 ‖ header flags u64
//!              ‖ header_size u32 ‖ toc_entry_size u32 ‖ header reserved[40]
//!              ‖ header bytes 128..header_size
//!              ‖ n u32                         (entries covered)
//!              ‖ for each TOC entry whose type is not `signature`, in TOC order:
//!                  section_type u16 ‖ codec u8 ‖ flags u8 ‖ layer u32 ‖ reserved u32
//!                  ‖ stored_len u64 ‖ raw_len u64 ‖ sha256[32] ‖ name[56]
//!                  ‖ entry bytes 128..toc_entry_size )
//! ```
//!
//! All integers little-endian. Offsets, section ids (labels that readers
//! only require to be unique) and the alignment are left out, so the digest
//! does not depend on where sections are placed:
//! re-signing (which drops and re-adds the signature section) keeps it. Each
//! entry's `sha256` commits to the section's stored bytes, so with the
//! integrity check (every section hashed) the signature covers every byte of
//! every section except the signature section itself. Padding must be zero
//! and the root digest and tiling rules fix every offset, so no byte of a
//! valid file is left uncovered. Computing `D` reads only header and TOC.

use zerocopy::FromBytes;

use super::super::layout::{SectionType, TocEntry, HEADER_SIZE, TOC_ENTRY_SIZE};
use super::super::reader::ExpertReader;
use super::super::Header;
use sha2::{Digest, Sha256};

/// Domain tag that starts the digest.
pub const DIGEST_DOMAIN: &[u8] = b"expertui-signature-v1\0";

/// The file-level fields the digest covers.
pub(super) struct Prelude<'a> {
    pub major: u16,
    pub minor: u16,
    pub flags: u64,
    pub header_size: u32,
    pub toc_entry_size: u32,
    pub reserved: [u8; 40],
    pub header_extension: &'a [u8],
}

impl Prelude<'static> {
    /// What [`ExpertWriter`](crate::format::ExpertWriter) writes.
    pub fn of_writer() -> Self {
        Self {
            major: super::super::layout::VERSION_MAJOR,
            minor: super::super::layout::VERSION_MINOR,
            flags: 0,
            header_size: HEADER_SIZE as u32,
            toc_entry_size: TOC_ENTRY_SIZE as u32,
            reserved: [0; 40],
            header_extension: &[],
        }
    }
}

/// Digest of a prelude and entries (each with its extension bytes); entries
/// of type `signature` are skipped.
pub(super) fn digest_of<'e>(
    prelude: &Prelude<'_>,
    entries: impl Iterator<Item = (&'e TocEntry, &'e [u8])> + Clone,
) -> [u8; 32] {
    let covered = entries
        .clone()
        .filter(|(e, _)| e.kind() != SectionType::Signature);
    let count = covered.clone().count() as u32;
    let mut h = Sha256::new();
    h.update(DIGEST_DOMAIN);
    h.update(prelude.major.to_le_bytes());
    h.update(prelude.minor.to_le_bytes());
    h.update(prelude.flags.to_le_bytes());
    h.update(prelude.header_size.to_le_bytes());
    h.update(prelude.toc_entry_size.to_le_bytes());
    h.update(prelude.reserved);
    h.update(prelude.header_extension);
    h.update(count.to_le_bytes());
    for (e, extension) in covered {
        h.update(e.section_type.get().to_le_bytes());
        h.update([e.codec, e.flags]);
        h.update(e.layer.get().to_le_bytes());
        h.update(e.reserved.get().to_le_bytes());
        h.update(e.stored_len.get().to_le_bytes());
        h.update(e.raw_len.get().to_le_bytes());
        h.update(e.sha256);
        h.update(e.name);
        h.update(extension);
    }
    h.finalize().into()
}

/// The raw TOC entries of an open file with their extension bytes.
pub(super) fn raw_entries(reader: &ExpertReader) -> Vec<(TocEntry, &[u8])> {
    let size = reader.header().toc_entry_size.get() as usize;
    let size = size.max(TOC_ENTRY_SIZE);
    reader
        .toc_bytes()
        .chunks_exact(size)
        .filter_map(|chunk| {
            let (entry, rest) = TocEntry::read_from_prefix(chunk).ok()?;
            Some((entry, rest))
        })
        .collect()
}

/// The signing digest of an open file (O(header + TOC)).
pub fn signing_digest(reader: &ExpertReader) -> [u8; 32] {
    let header: &Header = reader.header();
    let header_size = header.header_size.get();
    let bytes = reader.bytes();
    let extension = bytes.get(HEADER_SIZE..header_size as usize).unwrap_or(&[]);
    let prelude = Prelude {
        major: header.version_major.get(),
        minor: header.version_minor.get(),
        flags: header.flags.get(),
        header_size,
        toc_entry_size: header.toc_entry_size.get(),
        reserved: header.reserved,
        header_extension: extension,
    };
    let entries = raw_entries(reader);
    digest_of(&prelude, entries.iter().map(|(e, ext)| (e, *ext)))
}
