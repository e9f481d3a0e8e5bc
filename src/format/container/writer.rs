//! Streaming writer for `.expert` v2 files.
//!
//! Sections are written one after another as they come; at most one shuffle
//! block is buffered. Digests are computed on the fly. The TOC and the root
//! digest are written at the end, and the file only appears at its path once
//! complete (see [`super::atomic`]).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::IntoBytes;

use super::atomic::AtomicFile;
use super::layout::*;
use super::shuffle::{shuffle_block, SHUFFLE_BLOCK};
use crate::format::digests::root_digest;
use crate::format::error::{is_disk_full, FormatError, Result};

/// Default zstd level, chosen by measurement (BENCHMARKS.md: levels above 1
/// buy < 0.5 % of ratio on weights and compress 2-200x slower).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// File-wide writer settings.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Alignment of every section: 64 (default) or 256.
    pub alignment: u64,
    /// zstd level for compressed sections.
    pub zstd_level: i32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            alignment: BASE_ALIGNMENT,
            zstd_level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

/// What to call a section and how to store it.
#[derive(Debug, Clone)]
pub struct SectionSpec {
    /// The section type.
    pub kind: SectionType,
    /// The section name (unique per type in a file).
    pub name: String,
    /// The codec asked for.
    pub codec: Codec,
    /// The model layer, if any.
    pub layer: Option<u32>,
    /// Place on a 256-byte boundary.
    pub align_256: bool,
    /// Readers that do not know the type must refuse the file.
    pub critical: bool,
}

impl SectionSpec {
    /// A section of type `kind` named `name`, uncompressed, not tied to a layer.
    pub fn new(kind: SectionType, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
            codec: Codec::None,
            layer: None,
            align_256: false,
            critical: false,
        }
    }
    /// Stores the section with `codec` (the writer falls back to none when it does not help).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }
    /// Ties the section to a model layer.
    pub fn layer(mut self, layer: u32) -> Self {
        self.layer = Some(layer);
        self
    }
    /// Places the section on a 256-byte boundary.
    pub fn align_256(mut self, yes: bool) -> Self {
        self.align_256 = yes;
        self
    }
    /// Marks the section critical: readers that do not know its type refuse the file.
    pub fn critical(mut self, yes: bool) -> Self {
        self.critical = yes;
        self
    }
}

/// What was written, for reports.
#[derive(Debug, Clone)]
pub struct WriteSummary {
    /// The file written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub file_size: u64,
    /// The root digest stored in the header.
    pub root_digest: [u8; 32],
    /// Every section, in TOC order.
    pub sections: Vec<SectionSummary>,
}

/// One written section.
#[derive(Debug, Clone)]
pub struct SectionSummary {
    /// The section name.
    pub name: String,
    /// The section type.
    pub kind: SectionType,
    /// The codec used (none when compression did not help).
    pub codec: Codec,
    /// Bytes before encoding.
    pub raw_len: u64,
    /// Bytes stored.
    pub stored_len: u64,
}

/// The temp file plus the current write position.
struct Output {
    file: BufWriter<File>,
    pos: u64,
    path: PathBuf,
}

impl Output {
    fn pad_to(&mut self, offset: u64) -> io::Result<()> {
        const ZEROS: [u8; 256] = [0; 256];
        while self.pos < offset {
            let n = usize::try_from(offset - self.pos).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
            self.write_all(&ZEROS[..n])?;
        }
        Ok(())
    }

    /// Drops everything from `offset` on (used to rewrite a section uncompressed).
    fn truncate_to(&mut self, offset: u64) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_mut().set_len(offset)?;
        self.file.seek(SeekFrom::Start(offset))?;
        self.pos = offset;
        Ok(())
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = &mut self.file;
        let n = super::atomic::throttled_write(buf, |b| file.write(b))?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Passes bytes through while hashing and counting them.
struct HashingSink<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a `.expert` v2 file section by section.
pub struct ExpertWriter {
    out: Output,
    target: AtomicFile,
    options: WriterOptions,
    toc: Vec<TocEntry>,
    names: HashSet<(u16, String)>,
}

impl ExpertWriter {
    /// Starts a new file that will replace `path` when [`finish`](Self::finish) succeeds.
    pub fn create(path: impl AsRef<Path>, options: WriterOptions) -> Result<Self> {
        let path = path.as_ref();
        if options.alignment != BASE_ALIGNMENT && options.alignment != GPU_ALIGNMENT {
            return Err(FormatError::Writer(format!(
                "alignment must be {BASE_ALIGNMENT} or {GPU_ALIGNMENT}, not {}",
                options.alignment
            )));
        }
        let mut target = AtomicFile::create(path)?;
        let clone = target
            .file()
            .try_clone()
            .map_err(|e| FormatError::io(path, e))?;
        let mut out = Output {
            file: BufWriter::with_capacity(1 << 20, clone),
            pos: 0,
            path: path.to_path_buf(),
        };
        // Placeholder; the real header is written by `finish`.
        out.write_all(&[0; HEADER_SIZE])
            .map_err(|e| FormatError::io(path, e))?;
        Ok(Self {
            out,
            target,
            options,
            toc: Vec::new(),
            names: HashSet::new(),
        })
    }

    /// Writes a section held in memory. A compressed section that does not
    /// shrink is stored uncompressed instead.
    pub fn add_section(&mut self, spec: SectionSpec, bytes: &[u8]) -> Result<()> {
        let fallback = spec.clone().codec(Codec::None);
        let start = {
            let mut section = self.begin_section_sized(spec, Some(bytes.len() as u64))?;
            let start = section.start;
            section.write_all(bytes).map_err(|e| section.io_error(e))?;
            section.finish()?;
            start
        };
        let Some(entry) = self.toc.last() else {
            return Err(FormatError::Writer("section vanished".into()));
        };
        if entry.codec != Codec::None.code() && entry.stored_len.get() >= entry.raw_len.get() {
            self.toc.pop();
            self.names
                .remove(&(fallback.kind.code(), fallback.name.clone()));
            self.out
                .truncate_to(start)
                .map_err(|e| FormatError::io(&self.out.path, e))?;
            let mut section = self.begin_section(fallback)?;
            section.write_all(bytes).map_err(|e| section.io_error(e))?;
            section.finish()?;
        }
        Ok(())
    }

    /// Starts a streamed section: write its raw bytes into the returned
    /// writer, then call [`SectionWriter::finish`].
    pub fn begin_section(&mut self, spec: SectionSpec) -> Result<SectionWriter<'_>> {
        self.begin_section_sized(spec, None)
    }

    /// Like [`begin_section`](Self::begin_section); a known raw size is
    /// recorded in the zstd frame header, so a reader can check it up front.
    fn begin_section_sized(
        &mut self,
        spec: SectionSpec,
        raw_size: Option<u64>,
    ) -> Result<SectionWriter<'_>> {
        let name = encode_name(&spec.name)?;
        if !self.names.insert((spec.kind.code(), spec.name.clone())) {
            return Err(FormatError::Writer(format!(
                "duplicate section {} {:?}",
                spec.kind.label(),
                spec.name
            )));
        }
        if self.toc.len() >= u32::MAX as usize - 1 {
            return Err(FormatError::Writer("too many sections".into()));
        }
        let align = if spec.align_256 {
            GPU_ALIGNMENT
        } else {
            self.options.alignment
        };
        let start = align_up(self.out.pos, align)
            .ok_or_else(|| FormatError::Writer("file too large".into()))?;
        self.out
            .pad_to(start)
            .map_err(|e| FormatError::io(&self.out.path, e))?;
        let path = self.out.path.clone();
        let sink = HashingSink {
            inner: &mut self.out,
            hasher: Sha256::new(),
            len: 0,
        };
        let body = match spec.codec {
            Codec::None => Body::Plain(sink),
            Codec::Zstd | Codec::ShuffleZstd { .. } => {
                let mut encoder = zstd::stream::write::Encoder::new(sink, self.options.zstd_level)
                    .map_err(|e| write_error(&path, "zstd", e))?;
                if raw_size.is_some() {
                    encoder
                        .set_pledged_src_size(raw_size)
                        .map_err(|e| FormatError::Writer(format!("zstd: {e}")))?;
                    encoder
                        .include_contentsize(true)
                        .map_err(|e| FormatError::Writer(format!("zstd: {e}")))?;
                }
                Body::Zstd(Box::new(encoder))
            }
        };
        Ok(SectionWriter {
            path,
            toc: &mut self.toc,
            body,
            spec,
            name,
            start,
            raw_len: 0,
            pending: Vec::new(),
            shuffled: Vec::new(),
        })
    }

    /// Copies section `index` of `reader` verbatim: the same stored bytes,
    /// codec, flags and digest (re-signing and section edits use this, so
    /// untouched sections keep every byte).
    pub fn copy_section(
        &mut self,
        reader: &super::reader::ExpertReader,
        index: usize,
    ) -> Result<()> {
        let info = reader
            .sections()
            .get(index)
            .ok_or_else(|| FormatError::SectionNotFound(format!("#{index}")))?
            .clone();
        let stored = reader.stored(index)?;
        let name = encode_name(&info.name)?;
        if !self.names.insert((info.kind.code(), info.name.clone())) {
            return Err(FormatError::Writer(format!(
                "duplicate section {:?}",
                info.name
            )));
        }
        let align = if info.flags & ENTRY_FLAG_ALIGN_256 != 0 {
            GPU_ALIGNMENT
        } else {
            self.options.alignment
        };
        let start = align_up(self.out.pos, align)
            .ok_or_else(|| FormatError::Writer("file too large".into()))?;
        let path = self.out.path.clone();
        self.out
            .pad_to(start)
            .map_err(|e| FormatError::io(&path, e))?;
        self.out
            .write_all(stored)
            .map_err(|e| FormatError::io(&path, e))?;
        let codec = info.codec.unwrap_or(Codec::None);
        self.toc.push(TocEntry {
            section_id: U32::new(self.toc.len() as u32),
            section_type: U16::new(info.kind.code()),
            codec: codec.code(),
            flags: info.flags,
            layer: U32::new(info.layer.unwrap_or(NO_LAYER)),
            reserved: U32::new(codec.reserved_bits()),
            offset: U64::new(start),
            stored_len: U64::new(info.stored_len),
            raw_len: U64::new(info.raw_len),
            sha256: info.sha256,
            name,
        });
        Ok(())
    }

    /// Writes the TOC and header, syncs and renames the file into place.
    pub fn finish(mut self) -> Result<WriteSummary> {
        let path = self.out.path.clone();
        let io = |e| FormatError::io(&path, e);
        let toc_offset = align_up(self.out.pos, BASE_ALIGNMENT)
            .ok_or_else(|| FormatError::Writer("file too large".into()))?;
        self.out.pad_to(toc_offset).map_err(io)?;
        let toc_bytes: Vec<u8> = self
            .toc
            .iter()
            .flat_map(|e| e.as_bytes())
            .copied()
            .collect();
        let file_size = toc_offset + toc_bytes.len() as u64;
        let signature_index = self
            .toc
            .iter()
            .position(|e| e.kind() == SectionType::Signature)
            .map_or(NO_SIGNATURE, |i| i as u32);
        let mut header = Header {
            magic: MAGIC,
            version_major: U16::new(VERSION_MAJOR),
            version_minor: U16::new(VERSION_MINOR),
            header_size: U32::new(HEADER_SIZE as u32),
            flags: U64::new(0),
            file_size: U64::new(file_size),
            toc_offset: U64::new(toc_offset),
            toc_count: U32::new(self.toc.len() as u32),
            toc_entry_size: U32::new(TOC_ENTRY_SIZE as u32),
            root_digest: [0; 32],
            signature_index: U32::new(signature_index),
            section_alignment: U32::new(self.options.alignment as u32),
            reserved: [0; 40],
        };
        header.root_digest = root_digest(header.as_bytes(), &toc_bytes);
        self.out.write_all(&toc_bytes).map_err(io)?;
        self.out.flush().map_err(io)?;
        let file = self.out.file.get_mut();
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(header.as_bytes()).map_err(io)?;
        self.target.commit()?;
        let sections = self
            .toc
            .iter()
            .map(|e| SectionSummary {
                name: e.name_str().unwrap_or_default().to_string(),
                kind: e.kind(),
                codec: Codec::from_parts(e.codec, e.reserved.get()).unwrap_or(Codec::None),
                raw_len: e.raw_len.get(),
                stored_len: e.stored_len.get(),
            })
            .collect();
        Ok(WriteSummary {
            path,
            file_size,
            root_digest: header.root_digest,
            sections,
        })
    }
}

/// A failed write while streaming a section: [`FormatError::DiskFull`] when
/// there was no room, else a writer error naming what was being written.
fn write_error(path: &Path, what: &str, e: io::Error) -> FormatError {
    if is_disk_full(&e) {
        FormatError::io(path, e)
    } else {
        FormatError::Writer(format!("{what}: {e}"))
    }
}

fn encode_name(name: &str) -> Result<[u8; NAME_CAPACITY]> {
    let invalid = |reason| FormatError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > NAME_CAPACITY {
        return Err(invalid("longer than 56 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("control characters"));
    }
    let mut out = [0u8; NAME_CAPACITY];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

enum Body<'w> {
    Plain(HashingSink<&'w mut Output>),
    Zstd(Box<zstd::stream::write::Encoder<'static, HashingSink<&'w mut Output>>>),
}

/// A section being streamed into the file. Implements [`Write`] for raw bytes.
pub struct SectionWriter<'w> {
    /// The target path, for errors.
    path: PathBuf,
    toc: &'w mut Vec<TocEntry>,
    body: Body<'w>,
    spec: SectionSpec,
    name: [u8; NAME_CAPACITY],
    start: u64,
    raw_len: u64,
    /// Raw bytes waiting to fill a shuffle block.
    pending: Vec<u8>,
    shuffled: Vec<u8>,
}

impl SectionWriter<'_> {
    fn io_error(&self, e: io::Error) -> FormatError {
        write_error(&self.path, &format!("section {:?}", self.spec.name), e)
    }

    fn write_body(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.body {
            Body::Plain(w) => w.write_all(bytes),
            Body::Zstd(w) => w.write_all(bytes),
        }
    }

    fn flush_shuffle_block(&mut self) -> io::Result<()> {
        if let Codec::ShuffleZstd { element_size } = self.spec.codec {
            let mut block = std::mem::take(&mut self.pending);
            let mut shuffled = std::mem::take(&mut self.shuffled);
            shuffle_block(&block, usize::from(element_size), &mut shuffled);
            let result = self.write_body(&shuffled);
            block.clear();
            self.pending = block;
            self.shuffled = shuffled;
            result?;
        }
        Ok(())
    }

    /// Completes the section and records its TOC entry.
    pub fn finish(mut self) -> Result<()> {
        let cap = crate::format::ReaderLimits::default().text_cap(self.spec.kind);
        if let Some(limit) = cap.filter(|&cap| self.raw_len > cap) {
            // Readers refuse it: better no file than one nobody can open.
            return Err(FormatError::SectionTooLarge {
                name: self.spec.name.clone(),
                declared: self.raw_len,
                limit,
            });
        }
        if !self.pending.is_empty() {
            self.flush_shuffle_block().map_err(|e| self.io_error(e))?;
        }
        let sink = match self.body {
            Body::Plain(sink) => sink,
            Body::Zstd(encoder) => encoder
                .finish()
                .map_err(|e| write_error(&self.path, "zstd", e))?,
        };
        let flags = if self.spec.align_256 {
            ENTRY_FLAG_ALIGN_256
        } else {
            0
        } | if self.spec.critical {
            ENTRY_FLAG_CRITICAL
        } else {
            0
        };
        let id = self.toc.len() as u32;
        self.toc.push(TocEntry {
            section_id: U32::new(id),
            section_type: U16::new(self.spec.kind.code()),
            codec: self.spec.codec.code(),
            flags,
            layer: U32::new(self.spec.layer.unwrap_or(NO_LAYER)),
            reserved: U32::new(self.spec.codec.reserved_bits()),
            offset: U64::new(self.start),
            stored_len: U64::new(sink.len),
            raw_len: U64::new(self.raw_len),
            sha256: sink.hasher.finalize().into(),
            name: self.name,
        });
        Ok(())
    }
}

impl Write for SectionWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.raw_len += buf.len() as u64;
        if !matches!(self.spec.codec, Codec::ShuffleZstd { .. }) {
            self.write_body(buf)?;
            return Ok(buf.len());
        }
        let mut rest = buf;
        while !rest.is_empty() {
            let room = SHUFFLE_BLOCK - self.pending.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.pending.extend_from_slice(now);
            if self.pending.len() == SHUFFLE_BLOCK {
                self.flush_shuffle_block()?;
            }
            rest = later;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
