//! What a viewer needs to show a file, computed without any UI code: the
//! file opened as far as it parses, byte regions (header fields, TOC entries,
//! sections, padding) for a structure overlay, and decoded section contents
//! with tensor statistics.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::error::FormatError;
use super::layout::{Payload, SectionType, HEADER_FIELDS, HEADER_SIZE, TOC_ENTRY_SIZE};
use super::legacy::{read_legacy, LegacyLimits};
use super::loader::{detect, SourceFormat};
use super::package::classify_file;
use super::reader::{ExpertReader, FileBytes, ReaderOptions};
use super::tensors::{OwnedTensor, TensorBlob};

/// How far a file could be opened.
pub enum Opened {
    /// A v2 file whose structure parsed (root and sections may still be damaged).
    Binary(Arc<ExpertReader>),
    /// A legacy tar.gz package: its member files stand in for sections.
    Legacy(Vec<MemberFile>),
    /// Too broken to parse: raw bytes only, with the error (and its offset).
    Broken(FormatError),
}

/// A member of a legacy package.
#[derive(Debug, Clone)]
pub struct MemberFile {
    pub name: String,
    pub data: Vec<u8>,
}

/// A file opened for inspection.
pub struct Inspected {
    pub label: String,
    pub bytes: Arc<FileBytes>,
    pub opened: Opened,
    /// Root digest state for binary files (`None` when not applicable).
    pub root_error: Option<String>,
}

impl Inspected {
    /// Opens `path` as far as it goes; only I/O errors fail.
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        if let Some(url) = super::remote::url_of(path) {
            // A viewer shows every byte: the whole object is fetched once
            // (sections already in the cache are not fetched again).
            let plan = super::remote::Plan::All;
            let fetched = super::remote::fetch(&url, &plan, &mut |_, _| {})?;
            return Ok(Self::from_bytes(fetched.cost.url, fetched.bytes));
        }
        let bytes = Arc::new(FileBytes::map(path)?);
        let mut inspected = Self::from_bytes(path.display().to_string(), bytes);
        if let Opened::Binary(reader) = &mut inspected.opened {
            if let Some(r) = Arc::get_mut(reader) {
                r.set_path(path);
            }
        }
        Ok(inspected)
    }

    /// True when every section's bytes are here (false while a remote
    /// expert opened on its header, TOC and text sections is fetched).
    pub fn sections_present(&self) -> bool {
        match &self.opened {
            Opened::Binary(reader) => reader
                .sections()
                .iter()
                .all(|s| self.bytes.has(s.offset, s.end())),
            _ => self.bytes.complete(),
        }
    }

    /// The embedded demo expert.
    pub fn demo() -> Self {
        Self::from_bytes(
            "demo expert (embedded)".into(),
            Arc::new(FileBytes::Static(crate::DEMO_EXPERT)),
        )
    }

    /// Opens `bytes` as far as they parse; `label` names them in the UI.
    pub fn from_bytes(label: String, bytes: Arc<FileBytes>) -> Self {
        let lenient = ReaderOptions {
            check_root: false,
            ..Default::default()
        };
        let (opened, root_error) = match detect(&bytes) {
            Some(SourceFormat::LegacyTarGz) => {
                match read_legacy(&bytes, &LegacyLimits::for_package(bytes.len() as u64)) {
                    Ok(pkg) => (
                        Opened::Legacy(
                            pkg.files
                                .into_iter()
                                .map(|f| MemberFile {
                                    name: f.path,
                                    data: f.data,
                                })
                                .collect(),
                        ),
                        None,
                    ),
                    Err(e) => (
                        Opened::Broken(FormatError::Decompression {
                            name: "legacy package".into(),
                            reason: e.to_string(),
                        }),
                        None,
                    ),
                }
            }
            _ => match ExpertReader::from_shared(bytes.clone(), lenient) {
                Ok(reader) => {
                    let root = reader.check_root().err().map(|e| e.to_string());
                    (Opened::Binary(Arc::new(reader)), root)
                }
                Err(e) => (Opened::Broken(e), None),
            },
        };
        Self {
            label,
            bytes,
            opened,
            root_error,
        }
    }

    /// Length of the file in bytes.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The reader, when header and TOC parsed.
    pub fn reader(&self) -> Option<&Arc<ExpertReader>> {
        match &self.opened {
            Opened::Binary(r) => Some(r),
            _ => None,
        }
    }

    /// One row per section (or member file), for lists.
    pub fn rows(&self) -> Vec<SectionRow> {
        match &self.opened {
            Opened::Binary(r) => r
                .sections()
                .iter()
                .map(|s| SectionRow {
                    // Shown on screen: control and bidi characters escaped.
                    name: crate::diagnostics::printable(&s.name).into_owned(),
                    kind: s.kind,
                    codec: s.codec.map_or("?", |c| c.label()).to_string(),
                    offset: Some(s.offset),
                    stored_len: s.stored_len,
                    raw_len: s.raw_len,
                })
                .collect(),
            Opened::Legacy(files) => files
                .iter()
                .map(|f| SectionRow {
                    name: crate::diagnostics::printable(&f.name).into_owned(),
                    kind: classify_member(&f.name),
                    codec: "tar.gz".into(),
                    offset: None,
                    stored_len: f.data.len() as u64,
                    raw_len: f.data.len() as u64,
                })
                .collect(),
            Opened::Broken(_) => Vec::new(),
        }
    }

    /// Decodes row `index` for display.
    pub fn decode(&self, index: usize) -> Result<Decoded, String> {
        match &self.opened {
            Opened::Binary(r) => {
                let info = r.sections().get(index).ok_or("no such section")?;
                let bytes = r.section(index).map_err(|e| e.to_string())?;
                decode_bytes(info.kind, &info.name, &bytes)
            }
            Opened::Legacy(files) => {
                let f = files.get(index).ok_or("no such member")?;
                decode_bytes(classify_member(&f.name), &f.name, &f.data)
            }
            Opened::Broken(e) => Err(e.to_string()),
        }
    }

    /// Byte regions of the structure, sorted by start offset.
    pub fn regions(&self) -> Vec<Region> {
        match &self.opened {
            Opened::Binary(r) => binary_regions(r),
            // A broken v2 file still has its header fields where they belong.
            Opened::Broken(_) if self.len() >= HEADER_SIZE as u64 => header_regions(),
            _ => Vec::new(),
        }
    }
}

fn classify_member(name: &str) -> SectionType {
    if name.ends_with(".safetensors") {
        SectionType::Tensors
    } else {
        classify_file(name)
    }
}

/// One section (or member file) as a list row.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionRow {
    pub name: String,
    pub kind: SectionType,
    pub codec: String,
    pub offset: Option<u64>,
    pub stored_len: u64,
    pub raw_len: u64,
}

/// What a byte region is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// A field of the 128-byte header.
    HeaderField,
    /// The TOC entry of the section with this index.
    TocEntry(usize),
    /// The data of the section with this index.
    Section(usize),
    /// Alignment padding between regions.
    Padding,
}

/// A named byte range `[start, end)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub label: String,
    pub kind: RegionKind,
}

fn header_regions() -> Vec<Region> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for (name, size) in HEADER_FIELDS {
        out.push(Region {
            start: at,
            end: at + size,
            label: format!("header.{name}"),
            kind: RegionKind::HeaderField,
        });
        at += size;
    }
    out
}

fn binary_regions(r: &ExpertReader) -> Vec<Region> {
    let mut out = header_regions();
    let header_end = u64::from(r.header().header_size.get());
    let mut previous_end = header_end;
    for s in r.sections() {
        if s.offset > previous_end {
            out.push(Region {
                start: previous_end,
                end: s.offset,
                label: "padding".into(),
                kind: RegionKind::Padding,
            });
        }
        out.push(Region {
            start: s.offset,
            end: s.end(),
            label: format!("{} {}", s.kind.label(), s.name),
            kind: RegionKind::Section(s.index),
        });
        previous_end = s.end();
    }
    let toc = r.header().toc_offset.get();
    if toc > previous_end {
        out.push(Region {
            start: previous_end,
            end: toc,
            label: "padding".into(),
            kind: RegionKind::Padding,
        });
    }
    let entry = u64::from(r.header().toc_entry_size.get()).max(TOC_ENTRY_SIZE as u64);
    for (i, s) in r.sections().iter().enumerate() {
        let start = toc + i as u64 * entry;
        out.push(Region {
            start,
            end: start + entry,
            label: format!("toc[{i}] {}", s.name),
            kind: RegionKind::TocEntry(i),
        });
    }
    out
}

/// The region holding `offset` (regions sorted by start).
pub fn region_at(regions: &[Region], offset: u64) -> Option<&Region> {
    let i = regions.partition_point(|r| r.start <= offset);
    regions.get(i.checked_sub(1)?).filter(|r| offset < r.end)
}

/// Statistics of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSummary {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: usize,
    pub min: f32,
    pub max: f32,
    pub mean: f64,
    pub std: f64,
    /// Counts in 16 equal bins between min and max.
    pub histogram: [u32; 16],
    /// L2 norms of the rows of a 2-D tensor (min, mean, max): for router
    /// embeddings, whether they were normalised.
    pub row_norms: Option<[f64; 3]>,
}

impl TensorSummary {
    /// Statistics of one tensor (values converted to f32; non-finite values skipped).
    pub fn of(tensor: &OwnedTensor) -> Self {
        let values = tensor.to_f32().unwrap_or_default();
        let finite = values.iter().copied().filter(|v| v.is_finite());
        let (min, max) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let n = values.len().max(1) as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let mut histogram = [0u32; 16];
        let width = (max - min).max(f32::MIN_POSITIVE);
        for v in values.iter().filter(|v| v.is_finite()) {
            let bin = (((v - min) / width) * 16.0) as usize;
            if let Some(slot) = histogram.get_mut(bin.min(15)) {
                *slot += 1;
            }
        }
        Self {
            name: tensor.name.clone(),
            dtype: format!("{:?}", tensor.dtype),
            shape: tensor.shape.clone(),
            bytes: tensor.data.len(),
            min: if values.is_empty() { 0.0 } else { min },
            max: if values.is_empty() { 0.0 } else { max },
            mean,
            std: var.sqrt(),
            histogram,
            row_norms: row_norms(&tensor.shape, &values),
        }
    }
}

fn row_norms(shape: &[usize], values: &[f32]) -> Option<[f64; 3]> {
    let (&[rows, cols], false) = (shape, values.is_empty()) else {
        return None;
    };
    if rows == 0 || cols == 0 || rows.checked_mul(cols) != Some(values.len()) {
        return None;
    }
    let norms: Vec<f64> = values
        .chunks_exact(cols)
        .map(|row| {
            row.iter()
                .map(|&v| f64::from(v).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let min = norms.iter().copied().fold(f64::INFINITY, f64::min);
    let max = norms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = norms.iter().sum::<f64>() / norms.len() as f64;
    Some([min, mean, max])
}

/// An adapted module as listed by the decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleRow {
    pub module: String,
    pub kind: String,
    pub rank: Option<usize>,
    pub scale: Option<f64>,
}

/// A section decoded for display.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// JSON, pretty-printed.
    Json(String),
    /// UTF-8 text (licence, README, keywords).
    Text(String),
    /// A GBNF grammar, its number of rules and what llama.cpp would say
    /// of it (line, column, severity label, message), line by line.
    Grammar {
        text: String,
        rules: usize,
        issues: Vec<GrammarIssue>,
    },
    /// A tensor section: per-tensor statistics and the module table.
    Tensors {
        tensors: Vec<TensorSummary>,
        modules: Vec<ModuleRow>,
    },
    /// Bytes shown only as hex.
    Binary { len: usize },
}

/// One grammar problem, placed on its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrammarIssue {
    /// 1-based line (`None`: the whole grammar, e.g. no `root`).
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub severity: crate::diagnostics::Severity,
    pub code: &'static str,
    pub message: String,
}

/// Decodes bytes according to their section type.
pub fn decode_bytes(kind: SectionType, name: &str, bytes: &[u8]) -> Result<Decoded, String> {
    match kind.payload() {
        Payload::Json => {
            let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("JSON: {e}"))?;
            Ok(Decoded::Json(
                serde_json::to_string_pretty(&value).unwrap_or_default(),
            ))
        }
        Payload::Grammar => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let check = super::grammar::check_gbnf(&text);
            let issues = check
                .issues
                .iter()
                .map(|e| GrammarIssue {
                    line: e.position().map(|p| p.0),
                    column: e.position().map(|p| p.1),
                    severity: e.severity(),
                    code: e.code(),
                    message: e.message(),
                })
                .collect();
            Ok(Decoded::Grammar {
                text,
                rules: check.rules.len(),
                issues,
            })
        }
        Payload::Tensors => {
            let blob = TensorBlob::parse(bytes, name).map_err(|e| e.to_string())?;
            let modules = blob
                .modules(name)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|m| ModuleRow {
                    module: m.module,
                    kind: format!("{:?}", m.kind).to_lowercase(),
                    rank: m.rank,
                    scale: m.scale,
                })
                .collect();
            let tensors = blob
                .tensors
                .iter()
                .map(|(n, v)| TensorSummary::of(&OwnedTensor::from_view(n, v)))
                .collect();
            Ok(Decoded::Tensors { tensors, modules })
        }
        // Shown as text when they are UTF-8, as hex otherwise.
        Payload::Text
        | Payload::Osd
        | Payload::Signature
        | Payload::Certificate
        | Payload::Opaque => match std::str::from_utf8(bytes) {
            Ok(text) => Ok(Decoded::Text(text.to_string())),
            Err(_) => Ok(Decoded::Binary { len: bytes.len() }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_regions_cover_the_file_in_order() {
        let demo = Inspected::demo();
        let regions = demo.regions();
        assert_eq!(regions.first().map(|r| r.start), Some(0));
        assert_eq!(regions.last().map(|r| r.end), Some(demo.len()));
        for pair in regions.windows(2) {
            assert_eq!(
                pair[0].end, pair[1].start,
                "{:?} then {:?}",
                pair[0], pair[1]
            );
        }
        assert_eq!(
            region_at(&regions, 0).map(|r| r.label.as_str()),
            Some("header.magic")
        );
        assert_eq!(
            region_at(&regions, 48).map(|r| r.label.as_str()),
            Some("header.root_digest")
        );
        assert!(region_at(&regions, demo.len()).is_none());
    }

    #[test]
    fn demo_tensor_section_decodes_with_stats_and_modules() {
        let demo = Inspected::demo();
        let index = demo
            .rows()
            .iter()
            .position(|r| r.name == "layer.0")
            .unwrap();
        match demo.decode(index).unwrap() {
            Decoded::Tensors { tensors, modules } => {
                assert_eq!(tensors.len(), 4);
                assert_eq!(modules.len(), 2);
                assert_eq!(modules[0].scale, Some(2.0));
                let t = &tensors[0];
                assert!(t.min <= t.mean as f32 && t.mean as f32 <= t.max);
                let total: u32 = t.histogram.iter().sum();
                assert_eq!(total as usize, t.shape.iter().product::<usize>());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn broken_bytes_still_open_raw() {
        let bytes = Arc::new(FileBytes::Owned(b"\x89EXP\r\n\x1a\nshort".to_vec()));
        let inspected = Inspected::from_bytes("broken".into(), bytes);
        match &inspected.opened {
            Opened::Broken(e) => assert!(matches!(e, FormatError::Truncated { .. })),
            _ => panic!("should be broken"),
        }
        assert!(inspected.rows().is_empty());
    }
}
