//! Memory-mapped reader for `.expert` v2 files.
//!
//! Opening checks the structure and the root digest (O(TOC), no section data
//! read). Uncompressed sections are zero-copy slices of the map; compressed
//! ones are decoded on first use, into at most their declared length, and kept
//! in a small byte-bounded cache.

use std::collections::HashMap;
use std::io::Read;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use zerocopy::IntoBytes;

pub use super::file_bytes::{check_input_file, FileBytes};
use super::layout::*;
use super::shuffle::unshuffle_section;
use super::structure::{parse_structure, Structure};
use crate::format::digests::{root_digest, verify_sections, SectionCheck};
use crate::format::error::{FormatError, Result};

/// Bounds a reader applies to what a file may ask of it.
#[derive(Debug, Clone, Copy)]
pub struct ReaderLimits {
    /// Largest decoded size of one compressed section.
    pub max_section_bytes: u64,
    /// Bytes of decoded sections kept for reuse.
    pub cache_bytes: usize,
    /// Most bytes all compressed sections together may decode to; `None`:
    /// [`decoded_budget`] of the file size (or the process-wide
    /// `--max-decoded`). A small file cannot make a reader allocate
    /// gigabytes: it is refused first, with a typed error.
    pub max_decoded_total: Option<u64>,
    /// Largest text section (manifest, configs, grammar, docs, licence,
    /// routing, metrics), compressed or not: they are parsed whole.
    pub max_text_bytes: u64,
    /// Largest tokenizer section (a tokenizer.json of a big vocabulary is
    /// tens of MB).
    pub max_tokenizer_bytes: u64,
}

impl Default for ReaderLimits {
    fn default() -> Self {
        Self {
            max_section_bytes: 4 << 30,
            cache_bytes: 64 << 20,
            max_decoded_total: max_decoded_override(),
            max_text_bytes: 16 << 20,
            max_tokenizer_bytes: 128 << 20,
        }
    }
}

/// Floor of the decoded-bytes budget: any file may decode to this much.
pub const DECODED_FLOOR: u64 = 64 << 20;
/// Beyond the floor, a file may decode to this many times its own size
/// (real experts: about 1.1× for tensors, 3–10× for text).
pub const DECODED_RATIO: u64 = 16;

/// The decoded-bytes budget of a `stored`-byte file (container or legacy
/// package): the process-wide `--max-decoded` when set, else
/// max([`DECODED_FLOOR`], [`DECODED_RATIO`] × `stored`).
pub fn decoded_budget(stored: u64) -> u64 {
    max_decoded_override()
        .unwrap_or_else(|| DECODED_FLOOR.max(stored.saturating_mul(DECODED_RATIO)))
}

static MAX_DECODED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets the decoded-bytes budget of every reader made from now on
/// (`--max-decoded BYTES`); `None` goes back to the size-derived default.
pub fn set_max_decoded(bytes: Option<u64>) {
    MAX_DECODED.store(bytes.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
}

fn max_decoded_override() -> Option<u64> {
    match MAX_DECODED.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// How to open a file.
#[derive(Debug, Clone, Copy)]
pub struct ReaderOptions {
    /// Check the root digest on open (on by default; the TUI turns it off to
    /// show damaged files).
    pub check_root: bool,
    pub limits: ReaderLimits,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            check_root: true,
            limits: ReaderLimits::default(),
        }
    }
}

impl ReaderLimits {
    /// The most decoded bytes a section of `kind` may hold, for the text
    /// sections (parsed whole into memory); `None` for binary payloads,
    /// which the decoded-bytes budget bounds instead. Writers apply the
    /// default caps too, so they never make a file readers refuse.
    pub fn text_cap(&self, kind: SectionType) -> Option<u64> {
        match kind {
            SectionType::Tokenizer => Some(self.max_tokenizer_bytes),
            k if k.is_text() => Some(self.max_text_bytes),
            _ => None,
        }
    }
}

/// A section's decoded bytes: borrowed from the map, or decoded and shared.
#[derive(Clone)]
pub enum SectionBytes<'a> {
    /// Uncompressed: borrowed from the map, zero-copy.
    Mapped(&'a [u8]),
    /// Decoded from a compressed section (cached and shared).
    Decoded(Arc<[u8]>),
}

impl std::fmt::Debug for SectionBytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SectionBytes({} bytes)", self.len())
    }
}

impl Deref for SectionBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(s) => s,
            Self::Decoded(d) => d,
        }
    }
}

/// A section's TOC entry in friendly form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionInfo {
    /// Position in the TOC.
    pub index: usize,
    /// The section id stored in the entry (unique in the file).
    pub id: u32,
    /// The section type.
    pub kind: SectionType,
    /// How the bytes are stored; `None` for a codec this build does not know.
    pub codec: Option<Codec>,
    /// The section name.
    pub name: String,
    /// The model layer the section belongs to, if any.
    pub layer: Option<u32>,
    /// Offset of the stored bytes in the file.
    pub offset: u64,
    /// Bytes stored in the file.
    pub stored_len: u64,
    /// Bytes once decoded.
    pub raw_len: u64,
    /// SHA-256 of the stored bytes, as recorded in the TOC.
    pub sha256: [u8; 32],
    /// Entry flags (256-byte alignment, critical).
    pub flags: u8,
}

impl SectionInfo {
    fn from_entry(index: usize, entry: &TocEntry) -> Self {
        Self {
            index,
            id: entry.section_id.get(),
            kind: entry.kind(),
            codec: Codec::from_parts(entry.codec, entry.reserved.get()),
            name: entry.name_str().unwrap_or_default().to_string(),
            layer: entry.layer_index(),
            offset: entry.offset.get(),
            stored_len: entry.stored_len.get(),
            raw_len: entry.raw_len.get(),
            sha256: entry.sha256,
            flags: entry.flags,
        }
    }

    /// End offset of the stored bytes (checked at open, cannot overflow).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.stored_len)
    }
}

/// Small LRU of decoded sections, bounded in bytes.
#[derive(Default)]
struct DecodeCache {
    entries: Vec<(usize, Arc<[u8]>)>,
    bytes: usize,
}

impl DecodeCache {
    fn get(&mut self, index: usize) -> Option<Arc<[u8]>> {
        let pos = self.entries.iter().position(|(i, _)| *i == index)?;
        let hit = self.entries.remove(pos);
        let data = hit.1.clone();
        self.entries.push(hit);
        Some(data)
    }

    fn put(&mut self, index: usize, data: Arc<[u8]>, budget: usize) {
        if data.len() > budget {
            return;
        }
        self.bytes += data.len();
        self.entries.push((index, data));
        while self.bytes > budget && !self.entries.is_empty() {
            let (_, old) = self.entries.remove(0);
            self.bytes -= old.len();
        }
    }
}

/// An open `.expert` v2 file.
pub struct ExpertReader {
    data: Arc<FileBytes>,
    structure: Structure,
    sections: Vec<SectionInfo>,
    by_name: HashMap<(u16, String), usize>,
    options: ReaderOptions,
    cache: Mutex<DecodeCache>,
    path: Option<PathBuf>,
    /// Sum of the declared decoded sizes of the compressed sections.
    decoded_total: u64,
}

impl ExpertReader {
    /// Opens and memory-maps `path`, checking structure and root digest.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, ReaderOptions::default())
    }

    /// Like [`open`](Self::open), with options (limits, whether to check the root digest).
    pub fn open_with(path: impl AsRef<Path>, options: ReaderOptions) -> Result<Self> {
        let path = path.as_ref();
        let bytes = FileBytes::map(path)?;
        let mut reader = Self::from_shared(Arc::new(bytes), options)?;
        reader.path = Some(path.to_path_buf());
        Ok(reader)
    }

    /// Reads a file embedded in the binary (the demo expert).
    pub fn from_static(bytes: &'static [u8]) -> Result<Self> {
        Self::from_shared(Arc::new(FileBytes::Static(bytes)), ReaderOptions::default())
    }

    /// Reads a file already in memory.
    pub fn from_vec(bytes: Vec<u8>, options: ReaderOptions) -> Result<Self> {
        Self::from_shared(Arc::new(FileBytes::Owned(bytes)), options)
    }

    /// Reads shared bytes (the caller may keep its own handle on them).
    pub fn from_shared(data: Arc<FileBytes>, options: ReaderOptions) -> Result<Self> {
        let structure = parse_structure(&data)?;
        let sections: Vec<SectionInfo> = structure
            .toc
            .iter()
            .enumerate()
            .map(|(i, e)| SectionInfo::from_entry(i, e))
            .collect();
        let by_name = sections
            .iter()
            .map(|s| ((s.kind.code(), s.name.clone()), s.index))
            .collect();
        let decoded_total = sections
            .iter()
            .filter(|s| s.codec != Some(Codec::None))
            .fold(0u64, |sum, s| sum.saturating_add(s.raw_len));
        let reader = Self {
            data,
            structure,
            sections,
            by_name,
            options,
            cache: Mutex::new(DecodeCache::default()),
            path: None,
            decoded_total,
        };
        if options.check_root {
            reader.check_root()?;
        }
        Ok(reader)
    }

    /// Records where the bytes came from (for display).
    pub fn set_path(&mut self, path: &Path) {
        self.path = Some(path.to_path_buf());
    }

    /// The file's path, when opened from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.structure.header
    }

    /// Every section, in TOC order.
    pub fn sections(&self) -> &[SectionInfo] {
        &self.sections
    }

    /// The whole file as bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The file length in bytes.
    pub fn file_size(&self) -> u64 {
        self.data.len() as u64
    }

    /// The TOC bytes exactly as stored.
    pub fn toc_bytes(&self) -> &[u8] {
        let start = self.structure.header.toc_offset.get() as usize;
        self.data.get(start..).unwrap_or(&[])
    }

    /// Recomputes the root digest from the header and TOC.
    pub fn computed_root(&self) -> [u8; 32] {
        let header_len = self.structure.header.header_size.get() as usize;
        let header = self.data.get(..header_len).unwrap_or(&[]);
        root_digest(header, self.toc_bytes())
    }

    /// Checks that header and TOC are exactly what the writer sealed.
    pub fn check_root(&self) -> Result<()> {
        let expected = self.structure.header.root_digest;
        let actual = self.computed_root();
        if expected != actual {
            return Err(FormatError::RootMismatch {
                expected: hex::encode(expected),
                actual: hex::encode(actual),
            });
        }
        Ok(())
    }

    /// O(1) lookup by type and name.
    pub fn find(&self, kind: SectionType, name: &str) -> Option<&SectionInfo> {
        let index = *self.by_name.get(&(kind.code(), name.to_string()))?;
        self.sections.get(index)
    }

    /// All sections of one type, in file order.
    pub fn find_all(&self, kind: SectionType) -> impl Iterator<Item = &SectionInfo> {
        self.sections.iter().filter(move |s| s.kind == kind)
    }

    /// First section of a type (manifest, grammar, ...).
    pub fn first(&self, kind: SectionType) -> Option<&SectionInfo> {
        self.find_all(kind).next()
    }

    /// Fails with [`FormatError::FileChanged`] when the mapped file was
    /// truncated or extended in place since it was opened.
    pub fn check_unchanged(&self) -> Result<()> {
        self.data.check_unchanged()
    }

    /// The stored (possibly compressed) bytes of section `index`. Checks
    /// first that a mapped file still has its mapped length.
    pub fn stored(&self, index: usize) -> Result<&[u8]> {
        self.check_unchanged()?;
        let info = self
            .sections
            .get(index)
            .ok_or_else(|| FormatError::SectionNotFound(format!("#{index}")))?;
        if !self.data.has(info.offset, info.end()) {
            return Err(FormatError::NotFetched {
                url: self.data.url().unwrap_or_default().to_string(),
                name: info.name.clone(),
            });
        }
        let (start, end) = (usize::try_from(info.offset), usize::try_from(info.end()));
        match (start, end) {
            (Ok(s), Ok(e)) => self.data.get(s..e),
            _ => None,
        }
        .ok_or_else(|| FormatError::SectionOutOfBounds {
            index,
            entry: self
                .header()
                .toc_offset
                .get()
                .saturating_add((index as u64).saturating_mul(TOC_ENTRY_SIZE as u64)),
            name: info.name.clone(),
            offset: info.offset,
            end: u128::from(info.end()),
            limit: self.file_size(),
        })
    }

    /// The decoded bytes of section `index`: zero-copy when uncompressed.
    pub fn section(&self, index: usize) -> Result<SectionBytes<'_>> {
        let stored = self.stored(index)?;
        let info = self
            .sections
            .get(index)
            .ok_or_else(|| FormatError::SectionNotFound(format!("#{index}")))?;
        let codec = info.codec.ok_or_else(|| FormatError::Decompression {
            name: info.name.clone(),
            reason: "codec from a newer format version".into(),
        })?;
        if let Some(cap) = self
            .options
            .limits
            .text_cap(info.kind)
            .filter(|&cap| info.raw_len > cap)
        {
            return Err(FormatError::SectionTooLarge {
                name: info.name.clone(),
                declared: info.raw_len,
                limit: cap,
            });
        }
        if codec == Codec::None {
            return Ok(SectionBytes::Mapped(stored));
        }
        if let Some(hit) = self.lock_cache().get(index) {
            return Ok(SectionBytes::Decoded(hit));
        }
        let budget = self.decoded_budget();
        if self.decoded_total > budget {
            return Err(FormatError::DecodedBudget {
                declared: self.decoded_total,
                limit: budget,
                file_size: self.file_size(),
            });
        }
        let decoded: Arc<[u8]> = decode(info, codec, stored, &self.options.limits)?.into();
        self.lock_cache()
            .put(index, decoded.clone(), self.options.limits.cache_bytes);
        Ok(SectionBytes::Decoded(decoded))
    }

    /// Hints that sections `indices` are about to be read (a load of every
    /// weight section): the kernel reads them ahead in one go.
    pub fn will_read(&self, indices: impl IntoIterator<Item = usize>) {
        let mut span: Option<(u64, u64)> = None;
        for info in indices.into_iter().filter_map(|i| self.sections.get(i)) {
            let (s, e) = span.unwrap_or((info.offset, info.end()));
            span = Some((s.min(info.offset), e.max(info.end())));
        }
        if let Some((start, end)) = span {
            self.data.will_need(start, end);
        }
    }

    /// Most bytes this file's compressed sections may decode to, together.
    pub fn decoded_budget(&self) -> u64 {
        self.options
            .limits
            .max_decoded_total
            .unwrap_or_else(|| decoded_budget(self.file_size()))
    }

    /// What the compressed sections declare they decode to, together.
    pub fn decoded_total(&self) -> u64 {
        self.decoded_total
    }

    /// Decoded bytes of the section with this type and name.
    pub fn section_named(&self, kind: SectionType, name: &str) -> Result<SectionBytes<'_>> {
        let index = self
            .find(kind, name)
            .ok_or_else(|| FormatError::SectionNotFound(format!("{} {name:?}", kind.label())))?
            .index;
        self.section(index)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, DecodeCache> {
        // A panic while holding the lock cannot leave the cache inconsistent
        // in a way that matters (worst case: a stale byte count), so recover.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hashes every section in parallel and checks all padding is zero.
    pub fn verify(&self) -> Vec<SectionCheck> {
        verify_sections(
            &self.data,
            &self.structure.toc,
            &self.structure.padding_start,
        )
    }

    /// Checks one section's stored bytes against its TOC digest (before
    /// handing out or loading a single section).
    pub fn check_section(&self, index: usize) -> Result<()> {
        use sha2::Digest;
        let stored = self.stored(index)?;
        let info = &self.sections[index];
        let actual: [u8; 32] = sha2::Sha256::digest(stored).into();
        if actual != info.sha256 {
            return Err(FormatError::DigestMismatch {
                index,
                name: info.name.clone(),
                offset: info.offset,
                end: info.end(),
                expected: hex::encode(info.sha256),
                actual: hex::encode(actual),
            });
        }
        Ok(())
    }

    /// Full verification: root digest, then every section; the first failure.
    pub fn verify_all(&self) -> Result<()> {
        self.check_unchanged()?;
        self.check_root()?;
        let failed = self.verify().iter().find_map(SectionCheck::error);
        // A file rewritten in place while it was hashed: say so, rather than
        // naming a damaged section.
        self.check_unchanged()?;
        if let Some(error) = failed {
            return Err(error);
        }
        if !self.tail_padding_clean() {
            return Err(FormatError::BadHeader {
                field: "toc_offset",
                reason: "padding before the TOC holds non-zero bytes".into(),
            });
        }
        Ok(())
    }

    /// Whether the padding between the last section and the TOC is all zero.
    pub fn tail_padding_clean(&self) -> bool {
        let from = self.structure.data_end as usize;
        let to = self.structure.header.toc_offset.get() as usize;
        self.data
            .get(from..to)
            .is_some_and(|p| p.iter().all(|&b| b == 0))
    }

    /// Header bytes as stored (for hex views and digests).
    pub fn header_bytes(&self) -> &[u8] {
        self.structure.header.as_bytes()
    }
}

/// Decodes a compressed section into exactly `raw_len` bytes, or fails.
/// The output grows with what the decoder really produces, so a lying
/// `raw_len` cannot make us allocate more than the limit allows.
fn decode(
    info: &SectionInfo,
    codec: Codec,
    stored: &[u8],
    limits: &ReaderLimits,
) -> Result<Vec<u8>> {
    if info.raw_len > limits.max_section_bytes {
        return Err(FormatError::SectionTooLarge {
            name: info.name.clone(),
            declared: info.raw_len,
            limit: limits.max_section_bytes,
        });
    }
    let failed = |reason: String| FormatError::Decompression {
        name: info.name.clone(),
        reason,
    };
    // A frame that states its size must state the declared one.
    if let Ok(Some(stated)) = zstd::zstd_safe::get_frame_content_size(stored) {
        if stated != info.raw_len {
            return Err(FormatError::RawLengthMismatch {
                name: info.name.clone(),
                declared: info.raw_len,
                actual: stated,
                truncated_output: stated > info.raw_len,
            });
        }
    }
    let decoder = zstd::stream::read::Decoder::new(stored).map_err(|e| failed(e.to_string()))?;
    // One byte more than declared is read, to tell a longer stream apart.
    let cap = usize::try_from(info.raw_len.saturating_add(1)).map_err(|_| {
        FormatError::SectionTooLarge {
            name: info.name.clone(),
            declared: info.raw_len,
            limit: limits.max_section_bytes,
        }
    })?;
    let initial = info
        .raw_len
        .min(info.stored_len.saturating_mul(8).saturating_add(1 << 16));
    let out_of_memory = |bytes: usize| FormatError::OutOfMemory {
        name: info.name.clone(),
        bytes: bytes as u64,
    };
    let mut out: Vec<u8> = Vec::new();
    let initial = usize::try_from(initial).unwrap_or(0);
    out.try_reserve_exact(initial)
        .map_err(|_| out_of_memory(initial))?;
    // The buffer doubles with what the decoder really produces and never
    // holds more than `cap` bytes, so a decode costs at most twice the
    // declared size (buffer plus the shared copy), whatever the stream says.
    let mut reader = decoder.take(cap as u64);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failed(e.to_string())),
        };
        let piece = chunk.get(..n).unwrap_or_default();
        let needed = out.len().saturating_add(piece.len());
        if needed > out.capacity() {
            let target = out
                .capacity()
                .saturating_mul(2)
                .max(needed)
                .min(cap.max(needed));
            out.try_reserve_exact(target.saturating_sub(out.len()))
                .map_err(|_| out_of_memory(target))?;
        }
        out.extend_from_slice(piece);
    }
    if out.len() as u64 != info.raw_len {
        return Err(FormatError::RawLengthMismatch {
            name: info.name.clone(),
            declared: info.raw_len,
            actual: out.len() as u64,
            truncated_output: out.len() as u64 > info.raw_len,
        });
    }
    if let Codec::ShuffleZstd { element_size } = codec {
        unshuffle_section(&mut out, usize::from(element_size));
    }
    Ok(out)
}
