//! Fixed on-disk layouts of the `.expert` v2 container: the header, the table of
//! contents (TOC) and the small enums stored in them.
//!
//! Every multi-byte integer is little-endian and every struct is `#[repr(C)]`
//! with 1-byte alignment (zerocopy's byte-order types), so a struct can be read
//! straight from any offset of a memory map on any host, big-endian included.
//! docs/BINARY_FORMAT_SPEC.md is the normative description; keep them in step.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `\x89 E X P \r \n \x1a \n`. Like PNG's signature: the high-bit first byte
/// catches 7-bit transports, CR LF catches line-ending conversion in either
/// direction, and ^Z stops a DOS `type` from printing the binary.
pub const MAGIC: [u8; 8] = *b"\x89EXP\r\n\x1a\n";

/// The major version this build writes and reads. A file with another major is refused.
pub const VERSION_MAJOR: u16 = 2;
/// The minor version this build writes. Files with a newer minor are read:
/// a minor release only adds section types, codecs or optional flags.
pub const VERSION_MINOR: u16 = 1;

/// Size in bytes of [`Header`] as written by this version.
pub const HEADER_SIZE: usize = 128;
/// Size in bytes of one [`TocEntry`] as written by this version.
pub const TOC_ENTRY_SIZE: usize = 128;
/// Where the `offset` field sits inside a TOC entry.
pub const TOC_OFFSET_FIELD: u64 = 16;
/// Where the `sha256` field sits inside a TOC entry.
pub const TOC_DIGEST_FIELD: u64 = 40;

/// Bytes available for a section name in a TOC entry (UTF-8, NUL padded).
pub const NAME_CAPACITY: usize = 56;
/// Every section and the TOC start on a multiple of this.
pub const BASE_ALIGNMENT: u64 = 64;
/// The larger alignment a section may ask for (GPU DMA engines and `cudaMemcpy`
/// from pinned host memory are fastest from 256-byte aligned addresses).
pub const GPU_ALIGNMENT: u64 = 256;
/// `TocEntry::layer` value for sections that do not belong to one layer.
pub const NO_LAYER: u32 = u32::MAX;
/// `Header::signature_index` value for an unsigned file.
pub const NO_SIGNATURE: u32 = u32::MAX;
/// Header flag bits 32..64 name features a reader must understand; bits 0..32
/// are hints a reader may ignore. No flag is defined in 2.0.
pub const REQUIRED_FLAGS_MASK: u64 = 0xFFFF_FFFF_0000_0000;

/// TOC entry flag: the section was placed on a 256-byte boundary on request.
pub const ENTRY_FLAG_ALIGN_256: u8 = 0b0000_0001;
/// TOC entry flag: a reader that does not know this section's type must refuse
/// the file instead of skipping the section.
pub const ENTRY_FLAG_CRITICAL: u8 = 0b0000_0010;

/// The file header, always at offset 0.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    pub magic: [u8; 8],
    pub version_major: U16,
    pub version_minor: U16,
    /// Bytes from the start of the file to the end of the header (>= 128).
    pub header_size: U32,
    pub flags: U64,
    /// Total length of the file; a mismatch means truncation or appended bytes.
    pub file_size: U64,
    pub toc_offset: U64,
    pub toc_count: U32,
    /// Bytes per TOC entry (>= 128); lets a later minor grow the entry.
    pub toc_entry_size: U32,
    /// SHA-256 over this header (with this field zeroed) followed by the whole TOC.
    pub root_digest: [u8; 32],
    /// Index in the TOC of the signature section, or [`NO_SIGNATURE`].
    pub signature_index: U32,
    /// The alignment the writer used for sections (64 or 256).
    pub section_alignment: U32,
    pub reserved: [u8; 40],
}

/// One entry of the table of contents.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct TocEntry {
    /// Unique within the file; the writer numbers sections 0, 1, 2, ...
    pub section_id: U32,
    /// A [`SectionType`] code.
    pub section_type: U16,
    /// A [`Codec`] code.
    pub codec: u8,
    pub flags: u8,
    /// Model layer the section belongs to, or [`NO_LAYER`].
    pub layer: U32,
    pub reserved: U32,
    /// Absolute file offset of the stored bytes.
    pub offset: U64,
    /// Bytes stored in the file (after compression).
    pub stored_len: U64,
    /// Bytes after decoding (equal to `stored_len` for [`Codec::None`]).
    pub raw_len: U64,
    /// SHA-256 of the stored bytes.
    pub sha256: [u8; 32],
    /// UTF-8, NUL padded, no interior NUL.
    pub name: [u8; NAME_CAPACITY],
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_SIZE);
const _: () = assert!(std::mem::size_of::<TocEntry>() == TOC_ENTRY_SIZE);

/// Header field names and sizes in file order (mirrors [`Header`]).
pub const HEADER_FIELDS: [(&str, u64); 13] = [
    ("magic", 8),
    ("version_major", 2),
    ("version_minor", 2),
    ("header_size", 4),
    ("flags", 8),
    ("file_size", 8),
    ("toc_offset", 8),
    ("toc_count", 4),
    ("toc_entry_size", 4),
    ("root_digest", 32),
    ("signature_index", 4),
    ("section_alignment", 4),
    ("reserved", 40),
];

/// Offset of a header field by name.
pub fn header_field_offset(name: &str) -> Option<u64> {
    let mut at = 0;
    for (field, size) in HEADER_FIELDS {
        if field == name {
            return Some(at);
        }
        at += size;
    }
    None
}

/// What a section holds. Codes are stable forever; new ones are only added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SectionType {
    /// `manifest.json` (UTF-8 JSON).
    Manifest,
    /// Adapter tensors of one layer (or of non-layer modules), safetensors layout.
    Tensors,
    /// Routing keywords (JSON).
    RouterKeywords,
    /// Routing embeddings (tensors).
    RouterEmbeddings,
    /// GBNF grammar text.
    Grammar,
    /// Prompt-tuning virtual token embeddings, safetensors layout.
    SoftPrompt,
    /// Licence text.
    License,
    /// README / model card text.
    Docs,
    /// Evaluation and quality metrics (JSON).
    Metrics,
    /// OSD-compressed deltas.
    Osd,
    /// The Ed25519 signature (see [`crate::format::signing`]).
    Signature,
    /// The signer's certificate chain.
    Certificate,
    /// The adapter's own configuration (`adapter_config.json`).
    AdapterConfig,
    /// Tokenizer files, stored opaque.
    Tokenizer,
    /// Any other file carried along unchanged.
    Blob,
    /// The binary tensor index (2.1): every tensor's name, dtype, shape and
    /// range and every module table, read without JSON.
    TensorIndex,
    /// A code in the extension range `0x8000..=0xFFFF`, free for users.
    Custom(u16),
    /// A code this build does not know (from a newer minor version); skipped.
    Unknown(u16),
}

/// What a section's bytes are, for decoding and display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// UTF-8 JSON.
    Json,
    /// UTF-8 text (licence, README).
    Text,
    /// A GBNF grammar.
    Grammar,
    /// A safetensors blob.
    Tensors,
    /// OSD-compressed deltas.
    Osd,
    /// The signature block.
    Signature,
    /// A certificate chain.
    Certificate,
    /// Bytes with no structure the tools read (shown as text when UTF-8).
    Opaque,
}

/// How [`crate::format::package::ExpertContents`] carries a section across
/// conversions (binary ⇄ tar.gz ⇄ PEFT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// `manifest.json`.
    Manifest,
    /// `adapter_config.json`.
    AdapterConfig,
    /// The adapter's tensors, regrouped per layer when written.
    AdapterTensors,
    /// A file of the package (grammar, licence, README, tokenizer, router
    /// embeddings, blobs): a member of a tar.gz, a section of a binary.
    File,
    /// Kept byte for byte in binary form only (OSD, user extensions).
    Verbatim,
    /// Made again from the manifest when written (routing, metrics).
    Derived,
    /// Replaced when the file is signed again (signature, certificates).
    Replaced,
    /// Not understood by this build: skipped.
    Skipped,
}

/// One row per built-in section type: everything the tools derive from a
/// type. A new type is one row here plus the match arms the compiler then
/// asks for (there are no wildcard arms over [`SectionType`]).
pub struct TypeRow {
    pub kind: SectionType,
    pub code: u16,
    pub label: &'static str,
    pub payload: Payload,
    pub carried: Carried,
}

/// The built-in section types (codes 1–16; `0x8000..` is custom).
pub const SECTION_TYPES: [TypeRow; 16] = {
    use Carried as C;
    use Payload as P;
    use SectionType as T;
    const fn row(kind: T, code: u16, label: &'static str, payload: P, carried: C) -> TypeRow {
        TypeRow {
            kind,
            code,
            label,
            payload,
            carried,
        }
    }
    [
        row(T::Manifest, 1, "manifest", P::Json, C::Manifest),
        row(T::Tensors, 2, "tensors", P::Tensors, C::AdapterTensors),
        row(T::RouterKeywords, 3, "router_keywords", P::Json, C::Derived),
        row(
            T::RouterEmbeddings,
            4,
            "router_embeddings",
            P::Tensors,
            C::File,
        ),
        row(T::Grammar, 5, "grammar", P::Grammar, C::File),
        row(
            T::SoftPrompt,
            6,
            "soft_prompt",
            P::Tensors,
            C::AdapterTensors,
        ),
        row(T::License, 7, "license", P::Text, C::File),
        row(T::Docs, 8, "docs", P::Text, C::File),
        row(T::Metrics, 9, "metrics", P::Json, C::Derived),
        row(T::Osd, 10, "osd", P::Osd, C::Verbatim),
        row(T::Signature, 11, "signature", P::Signature, C::Replaced),
        row(
            T::Certificate,
            12,
            "certificate",
            P::Certificate,
            C::Replaced,
        ),
        row(
            T::AdapterConfig,
            13,
            "adapter_config",
            P::Json,
            C::AdapterConfig,
        ),
        row(T::Tokenizer, 14, "tokenizer", P::Opaque, C::File),
        row(T::Blob, 15, "blob", P::Opaque, C::File),
        row(T::TensorIndex, 16, "tensor_index", P::Opaque, C::Derived),
    ]
};

impl SectionType {
    /// First code of the range reserved for user extensions.
    pub const CUSTOM_BASE: u16 = 0x8000;

    /// The table row of a built-in type. The match is exhaustive on
    /// purpose: a new variant does not compile until it has its row.
    pub fn row(self) -> Option<&'static TypeRow> {
        let index = match self {
            Self::Manifest => 0,
            Self::Tensors => 1,
            Self::RouterKeywords => 2,
            Self::RouterEmbeddings => 3,
            Self::Grammar => 4,
            Self::SoftPrompt => 5,
            Self::License => 6,
            Self::Docs => 7,
            Self::Metrics => 8,
            Self::Osd => 9,
            Self::Signature => 10,
            Self::Certificate => 11,
            Self::AdapterConfig => 12,
            Self::Tokenizer => 13,
            Self::Blob => 14,
            Self::TensorIndex => 15,
            Self::Custom(_) | Self::Unknown(_) => return None,
        };
        SECTION_TYPES.get(index)
    }

    /// The type of a TOC code: known, custom (`>= 0x8000`) or unknown.
    pub fn from_code(code: u16) -> Self {
        match SECTION_TYPES.iter().find(|r| r.code == code) {
            Some(row) => row.kind,
            None if code >= Self::CUSTOM_BASE => Self::Custom(code),
            None => Self::Unknown(code),
        }
    }

    /// The code stored in the TOC.
    pub fn code(self) -> u16 {
        match (self, self.row()) {
            (Self::Custom(c) | Self::Unknown(c), _) => c,
            (_, Some(row)) => row.code,
            (_, None) => 0,
        }
    }

    /// Short lower-case name used in listings, JSON output and the CLI.
    pub fn label(self) -> String {
        match (self, self.row()) {
            (Self::Custom(c), _) => format!("custom:{c:#06x}"),
            (Self::Unknown(c), _) => format!("unknown:{c}"),
            (_, Some(row)) => row.label.into(),
            (_, None) => "unknown".into(),
        }
    }

    /// What the bytes are.
    pub fn payload(self) -> Payload {
        self.row().map_or(Payload::Opaque, |r| r.payload)
    }

    /// How conversions carry the section.
    pub fn carried(self) -> Carried {
        match (self, self.row()) {
            (Self::Custom(_), _) => Carried::Verbatim,
            (_, Some(row)) => row.carried,
            (_, None) => Carried::Skipped,
        }
    }

    /// Sections read whole and parsed as text (JSON, GBNF, Markdown): they
    /// get a small size cap ([`crate::format::ReaderLimits::max_text_bytes`]).
    pub fn is_text(self) -> bool {
        matches!(
            self.payload(),
            Payload::Json | Payload::Text | Payload::Grammar
        )
    }

    /// Sections that hold an adapter's weights: tensors, a soft prompt, OSD
    /// modules (what a load reads, hashes and streams).
    pub fn is_weights(self) -> bool {
        matches!(self, Self::Tensors | Self::SoftPrompt | Self::Osd)
    }

    /// Whether this build understands the type (unknown ones are skipped).
    pub fn is_known(self) -> bool {
        !matches!(self, Self::Unknown(_))
    }
}

#[cfg(test)]
mod type_table_tests {
    use super::*;

    #[test]
    fn every_row_round_trips_and_codes_are_unique() {
        for row in &SECTION_TYPES {
            assert_eq!(
                row.kind.row().map(|r| r.code),
                Some(row.code),
                "row() index"
            );
            assert_eq!(SectionType::from_code(row.code), row.kind);
            assert_eq!(row.kind.code(), row.code);
            assert_eq!(row.kind.label(), row.label);
            assert_eq!(
                SECTION_TYPES.iter().filter(|r| r.code == row.code).count(),
                1
            );
            assert_eq!(
                SECTION_TYPES
                    .iter()
                    .filter(|r| r.label == row.label)
                    .count(),
                1
            );
        }
        assert_eq!(SectionType::from_code(0x8042), SectionType::Custom(0x8042));
        assert_eq!(SectionType::from_code(99), SectionType::Unknown(99));
        assert_eq!(SectionType::Custom(0x8042).carried(), Carried::Verbatim);
        assert_eq!(SectionType::Unknown(99).carried(), Carried::Skipped);
    }
}

/// How a section's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Stored as is: readable zero-copy from the map.
    None,
    /// One zstd frame.
    Zstd,
    /// Bytes of each element split into planes, then one zstd frame.
    ShuffleZstd { element_size: u8 },
}

impl Codec {
    /// Codes: 0 none, 1 zstd, 2 byte-shuffled zstd. The element size of the
    /// shuffle lives in the entry's `reserved` field (low byte).
    pub fn from_parts(code: u8, reserved: u32) -> Option<Self> {
        match code {
            0 => Some(Self::None),
            1 => Some(Self::Zstd),
            2 => match reserved & 0xFF {
                n @ (2 | 4 | 8) => Some(Self::ShuffleZstd {
                    element_size: n as u8,
                }),
                _ => None,
            },
            _ => None,
        }
    }

    /// The codec byte stored in the TOC.
    pub fn code(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Zstd => 1,
            Self::ShuffleZstd { .. } => 2,
        }
    }

    /// Value for the entry's `reserved` field.
    pub fn reserved_bits(self) -> u32 {
        match self {
            Self::ShuffleZstd { element_size } => u32::from(element_size),
            _ => 0,
        }
    }

    /// Name shown by the tools (`none`, `zstd`, `shuffle-zstd`).
    pub fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Zstd => "zstd",
            Self::ShuffleZstd { .. } => "shuffle-zstd",
        }
    }
}

/// Rounds `value` up to a multiple of `align` (a power of two), or `None` on overflow.
pub fn align_up(value: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(value.checked_add(align - 1)? & !(align - 1))
}

impl TocEntry {
    /// The section name, or `None` if the bytes are not NUL-padded UTF-8.
    pub fn name_str(&self) -> Option<&str> {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(NAME_CAPACITY);
        let (text, padding) = self.name.split_at(end);
        if padding.iter().any(|&b| b != 0) {
            return None;
        }
        std::str::from_utf8(text).ok()
    }

    /// The section type of this entry.
    pub fn kind(&self) -> SectionType {
        SectionType::from_code(self.section_type.get())
    }

    /// The model layer the section belongs to, if any.
    pub fn layer_index(&self) -> Option<u32> {
        let layer = self.layer.get();
        (layer != NO_LAYER).then_some(layer)
    }
}
