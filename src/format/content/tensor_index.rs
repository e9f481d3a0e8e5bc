//! The tensor index (section type 16, format 2.1): every tensor of every
//! tensor section (name, dtype, shape, byte range) and every module table,
//! as fixed-layout records in one binary section. A reader builds all tensor
//! views with one bounds-checked walk instead of parsing a JSON header and a
//! JSON module table per section, which is what made loading slower than
//! the safetensors crate (one JSON header for the whole file).
//!
//! The per-section safetensors headers stay: `extract` hands them out, and
//! files without an index (2.0) are read through them. The index is derived
//! data: conversions rebuild it, `validate --deep` checks that it agrees
//! with the headers it summarises.
//!
//! Layout (little-endian, no padding, records read in place with zerocopy):
//! [`IndexHeader`], then `section_count` [`SectionRecord`]s, `tensor_count`
//! [`TensorRecord`]s, `module_count` [`ModuleRecord`]s, `role_count`
//! [`RoleRecord`]s, `dim_count` u64 dimensions and `string_bytes` of UTF-8.
//! The arrays tile the section exactly.

use std::collections::BTreeMap;

use safetensors::{tensor::TensorView, Dtype};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::tensors::{ModuleInfo, ModuleKind, SectionTable, TensorBlob, TensorError};
use crate::format::layout::SectionType;

/// First bytes of an index section.
pub const INDEX_MAGIC: [u8; 4] = *b"EXTI";
/// The index version this build writes and reads. A newer one is ignored
/// (readers fall back to the per-section headers), never misread.
pub const INDEX_VERSION: u16 = 1;
/// Name of the index section.
pub const INDEX_SECTION_NAME: &str = "tensor_index";

/// A string of the string table: byte offset and length.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct StrRef {
    pub offset: U32,
    pub len: U32,
}

/// The index's first 32 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IndexHeader {
    pub magic: [u8; 4],
    pub version: U16,
    /// No flag is defined in version 1 (written 0, ignored).
    pub flags: U16,
    pub section_count: U32,
    pub tensor_count: U32,
    pub module_count: U32,
    pub role_count: U32,
    pub dim_count: U32,
    pub string_bytes: U32,
}

/// One tensor section: found in the TOC by type and name (never by
/// position, so re-signing or reordering sections cannot misdirect it).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SectionRecord {
    /// The section's TOC type code (2 tensors, 4 router embeddings, 6 soft prompt).
    pub kind: U16,
    /// Bit 0: `source` is set.
    pub flags: U16,
    pub name: StrRef,
    /// The file the tensors were cut from (`adapter_model.safetensors`).
    pub source: StrRef,
    pub first_tensor: U32,
    pub tensor_count: U32,
    pub first_module: U32,
    pub module_count: U32,
}

/// One tensor: its bytes are `start..end` of the section's decoded bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct TensorRecord {
    pub name: StrRef,
    /// See [`dtype_code`].
    pub dtype: u8,
    pub ndim: u8,
    pub reserved: U16,
    pub first_dim: U32,
    pub start: U64,
    pub end: U64,
}

/// One row of a module table (see [`ModuleInfo`]).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ModuleRecord {
    pub module: StrRef,
    pub base_tensor: StrRef,
    /// 0 LoRA, 1 DoRA, 2 IA³, 3 LoRA embedding, 4 OSD.
    pub kind: u8,
    /// The `MODULE_*` bits.
    pub flags: u8,
    pub reserved: U16,
    pub layer: U32,
    pub rank: U64,
    /// `f64` bits.
    pub alpha: U64,
    /// `f64` bits.
    pub scale: U64,
    pub first_role: U32,
    pub role_count: U32,
}

/// One entry of a module's role → tensor map (`A`, `B`, `magnitude`, …).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RoleRecord {
    pub role: StrRef,
    pub tensor: StrRef,
}

const SECTION_HAS_SOURCE: u16 = 1;
const MODULE_HAS_LAYER: u8 = 1;
const MODULE_HAS_RANK: u8 = 1 << 1;
const MODULE_HAS_ALPHA: u8 = 1 << 2;
const MODULE_HAS_SCALE: u8 = 1 << 3;
const MODULE_RSLORA: u8 = 1 << 4;
const MODULE_FAN_IN_FAN_OUT: u8 = 1 << 5;
const MODULE_FEEDFORWARD: u8 = 1 << 6;

/// Stable dtype codes (a table, so a dtype safetensors adds later simply
/// has no code: such a file is written without an index).
const DTYPES: [(u8, Dtype); 15] = [
    (1, Dtype::BOOL),
    (2, Dtype::U8),
    (3, Dtype::I8),
    (4, Dtype::I16),
    (5, Dtype::U16),
    (6, Dtype::F16),
    (7, Dtype::BF16),
    (8, Dtype::I32),
    (9, Dtype::U32),
    (10, Dtype::F32),
    (11, Dtype::F64),
    (12, Dtype::I64),
    (13, Dtype::U64),
    (14, Dtype::F8_E5M2),
    (15, Dtype::F8_E4M3),
];

const KINDS: [(u8, ModuleKind); 5] = [
    (0, ModuleKind::Lora),
    (1, ModuleKind::Dora),
    (2, ModuleKind::Ia3),
    (3, ModuleKind::LoraEmbedding),
    (4, ModuleKind::Osd),
];

/// The index code of a dtype.
pub fn dtype_code(dtype: Dtype) -> Option<u8> {
    DTYPES.iter().find(|(_, d)| *d == dtype).map(|(c, _)| *c)
}

fn dtype_of(code: u8) -> Option<Dtype> {
    DTYPES.iter().find(|(c, _)| *c == code).map(|(_, d)| *d)
}

fn bad(reason: impl Into<String>) -> TensorError {
    TensorError::Index(reason.into())
}

/// Reads `count` records of `T` at `*at`, advancing it; every size checked.
fn records<'a, T: FromBytes + KnownLayout + Immutable + Unaligned>(
    bytes: &'a [u8],
    at: &mut usize,
    count: u32,
    what: &str,
) -> Result<&'a [T], TensorError> {
    let len = (count as usize)
        .checked_mul(std::mem::size_of::<T>())
        .and_then(|n| at.checked_add(n))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| {
            bad(format!(
                "{count} {what} do not fit in {} bytes",
                bytes.len()
            ))
        })?;
    let slice = bytes.get(*at..len).unwrap_or_default();
    *at = len;
    <[T]>::ref_from_bytes(slice).map_err(|_| bad(format!("{what}: misshapen records")))
}

/// A parsed, fully bounds-checked index borrowing the section's bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorIndex<'a> {
    sections: &'a [SectionRecord],
    tensors: &'a [TensorRecord],
    modules: &'a [ModuleRecord],
    roles: &'a [RoleRecord],
    dims: &'a [U64],
    strings: &'a str,
}

/// One tensor section as the index describes it.
#[derive(Debug, Clone)]
pub struct IndexedSection<'a> {
    pub kind: SectionType,
    pub name: &'a str,
    pub source: Option<&'a str>,
    record: &'a SectionRecord,
}

/// Checks that `first..first + count` lies inside an array of `len`.
fn span(
    first: U32,
    count: U32,
    len: usize,
    what: &str,
) -> Result<std::ops::Range<usize>, TensorError> {
    let (first, count) = (first.get() as usize, count.get() as usize);
    first
        .checked_add(count)
        .filter(|&end| end <= len)
        .map(|end| first..end)
        .ok_or_else(|| bad(format!("{what} {first}+{count} outside the {len} records")))
}

impl<'a> TensorIndex<'a> {
    /// Parses and checks an index: every count, range, string, dtype and
    /// kind is checked here, so the accessors below cannot fail on bounds.
    /// `Ok(None)`: an index version this build does not know (read the
    /// per-section headers instead).
    pub fn parse(bytes: &'a [u8]) -> Result<Option<Self>, TensorError> {
        let mut at = 0;
        let header = records::<IndexHeader>(bytes, &mut at, 1, "index header")?
            .first()
            .ok_or_else(|| bad("no index header"))?;
        if header.magic != INDEX_MAGIC {
            return Err(bad("not a tensor index (bad magic)"));
        }
        if header.version.get() != INDEX_VERSION {
            return Ok(None);
        }
        let sections = records(bytes, &mut at, header.section_count.get(), "sections")?;
        let tensors = records(bytes, &mut at, header.tensor_count.get(), "tensors")?;
        let modules = records(bytes, &mut at, header.module_count.get(), "modules")?;
        let roles = records(bytes, &mut at, header.role_count.get(), "roles")?;
        let dims = records(bytes, &mut at, header.dim_count.get(), "dimensions")?;
        let table = records::<u8>(bytes, &mut at, header.string_bytes.get(), "string bytes")?;
        if at != bytes.len() {
            return Err(bad(format!(
                "{} bytes after the string table",
                bytes.len() - at
            )));
        }
        let strings = std::str::from_utf8(table).map_err(|e| bad(format!("string table: {e}")))?;
        let index = Self {
            sections,
            tensors,
            modules,
            roles,
            dims,
            strings,
        };
        index.check()?;
        Ok(Some(index))
    }

    /// Every record's references, once.
    fn check(&self) -> Result<(), TensorError> {
        for s in self.sections {
            self.string(s.name)?;
            self.string(s.source)?;
            span(
                s.first_tensor,
                s.tensor_count,
                self.tensors.len(),
                "tensor range",
            )?;
            span(
                s.first_module,
                s.module_count,
                self.modules.len(),
                "module range",
            )?;
            if !matches!(
                SectionType::from_code(s.kind.get()),
                SectionType::Tensors | SectionType::SoftPrompt | SectionType::RouterEmbeddings
            ) {
                return Err(bad(format!("section type {} holds no tensors", s.kind)));
            }
        }
        for t in self.tensors {
            self.string(t.name)?;
            span(
                t.first_dim,
                U32::new(u32::from(t.ndim)),
                self.dims.len(),
                "shape",
            )?;
            dtype_of(t.dtype).ok_or_else(|| bad(format!("unknown dtype code {}", t.dtype)))?;
            if t.start.get() > t.end.get() {
                return Err(bad("a tensor ends before it starts"));
            }
        }
        for m in self.modules {
            self.string(m.module)?;
            self.string(m.base_tensor)?;
            span(m.first_role, m.role_count, self.roles.len(), "role range")?;
            if !KINDS.iter().any(|(c, _)| *c == m.kind) {
                return Err(bad(format!("unknown module kind {}", m.kind)));
            }
        }
        for r in self.roles {
            self.string(r.role)?;
            self.string(r.tensor)?;
        }
        Ok(())
    }

    fn string(&self, s: StrRef) -> Result<&'a str, TensorError> {
        let start = s.offset.get() as usize;
        start
            .checked_add(s.len.get() as usize)
            .and_then(|end| self.strings.get(start..end))
            .ok_or_else(|| bad("a string outside the string table or not on a character boundary"))
    }

    /// A string already checked by [`check`](Self::check).
    fn text(&self, s: StrRef) -> &'a str {
        self.string(s).unwrap_or_default()
    }

    /// The sections the index describes, in the order written.
    pub fn sections(&self) -> Vec<IndexedSection<'a>> {
        self.sections
            .iter()
            .map(|record| IndexedSection {
                kind: SectionType::from_code(record.kind.get()),
                name: self.text(record.name),
                source: (record.flags.get() & SECTION_HAS_SOURCE != 0)
                    .then(|| self.text(record.source)),
                record,
            })
            .collect()
    }

    /// Number of tensors over all sections.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    fn tensor_records(&self, section: &IndexedSection<'_>) -> &'a [TensorRecord] {
        let r = section.record;
        span(r.first_tensor, r.tensor_count, self.tensors.len(), "")
            .ok()
            .and_then(|range| self.tensors.get(range))
            .unwrap_or_default()
    }

    /// Zero-copy views of a section's tensors over its decoded `bytes`: each
    /// range is checked against `bytes` and each length against dtype × shape.
    pub fn views<'b>(
        &self,
        section: &IndexedSection<'_>,
        bytes: &'b [u8],
    ) -> Result<Vec<(&'a str, TensorView<'b>)>, TensorError> {
        let context = |name: &str, reason: String| TensorError::Safetensors {
            context: format!("{} (tensor index), tensor {name}", section.name),
            reason,
        };
        self.tensor_records(section)
            .iter()
            .map(|t| {
                let name = self.text(t.name);
                let data = usize::try_from(t.start.get())
                    .ok()
                    .zip(usize::try_from(t.end.get()).ok())
                    .and_then(|(s, e)| bytes.get(s..e))
                    .ok_or_else(|| {
                        context(
                            name,
                            format!(
                                "bytes {}..{} outside the section's {} bytes",
                                t.start,
                                t.end,
                                bytes.len()
                            ),
                        )
                    })?;
                let (dtype, shape) = (self.dtype(t), self.shape(t)?);
                // Checked here: `TensorView::new` multiplies the shape
                // without overflow checks.
                let bits = shape
                    .iter()
                    .try_fold(dtype.bitsize(), |n, &d| n.checked_mul(d))
                    .ok_or_else(|| context(name, format!("shape {shape:?} overflows")))?;
                if bits.div_ceil(8) != data.len() {
                    return Err(context(
                        name,
                        format!(
                            "shape {shape:?} of {dtype:?} needs {} bytes, the index gives {}",
                            bits.div_ceil(8),
                            data.len()
                        ),
                    ));
                }
                let view = TensorView::new(dtype, shape, data)
                    .map_err(|e| context(name, e.to_string()))?;
                Ok((name, view))
            })
            .collect()
    }

    fn dtype(&self, t: &TensorRecord) -> Dtype {
        dtype_of(t.dtype).unwrap_or(Dtype::U8)
    }

    fn shape(&self, t: &TensorRecord) -> Result<Vec<usize>, TensorError> {
        let range = span(
            t.first_dim,
            U32::new(u32::from(t.ndim)),
            self.dims.len(),
            "shape",
        )?;
        self.dims
            .get(range)
            .unwrap_or_default()
            .iter()
            .map(|d| {
                usize::try_from(d.get()).map_err(|_| bad("a dimension too large for this machine"))
            })
            .collect()
    }

    /// The section's module table.
    pub fn modules(&self, section: &IndexedSection<'_>) -> Vec<ModuleInfo> {
        let r = section.record;
        let records = span(r.first_module, r.module_count, self.modules.len(), "")
            .ok()
            .and_then(|range| self.modules.get(range))
            .unwrap_or_default();
        records.iter().map(|m| self.module(m)).collect()
    }

    fn module(&self, m: &ModuleRecord) -> ModuleInfo {
        let has = |bit: u8| m.flags & bit != 0;
        let roles = span(m.first_role, m.role_count, self.roles.len(), "")
            .ok()
            .and_then(|range| self.roles.get(range))
            .unwrap_or_default();
        ModuleInfo {
            module: self.text(m.module).to_string(),
            base_tensor: self.text(m.base_tensor).to_string(),
            kind: KINDS
                .iter()
                .find(|(c, _)| *c == m.kind)
                .map_or(ModuleKind::Lora, |(_, k)| *k),
            layer: has(MODULE_HAS_LAYER).then(|| m.layer.get()),
            rank: has(MODULE_HAS_RANK)
                .then(|| usize::try_from(m.rank.get()).ok())
                .flatten(),
            alpha: has(MODULE_HAS_ALPHA).then(|| f64::from_bits(m.alpha.get())),
            scale: has(MODULE_HAS_SCALE).then(|| f64::from_bits(m.scale.get())),
            use_rslora: has(MODULE_RSLORA),
            fan_in_fan_out: has(MODULE_FAN_IN_FAN_OUT),
            feedforward: has(MODULE_FEEDFORWARD),
            tensors: roles
                .iter()
                .map(|r| {
                    (
                        self.text(r.role).to_string(),
                        self.text(r.tensor).to_string(),
                    )
                })
                .collect(),
        }
    }

    /// Where the index disagrees with a section's own safetensors header and
    /// module table (`None`: it agrees). `validate --deep` reports it.
    pub fn disagreement(
        &self,
        section: &IndexedSection<'_>,
        bytes: &[u8],
        blob: &TensorBlob<'_>,
        table: &SectionTable,
    ) -> Option<String> {
        let views = match self.views(section, bytes) {
            Ok(v) => v,
            Err(e) => return Some(e.to_string()),
        };
        if views.len() != blob.tensors.len() {
            return Some(format!(
                "{} tensors in the index, {} in the section",
                views.len(),
                blob.tensors.len()
            ));
        }
        for ((name, view), (st_name, st_view)) in views.iter().zip(&blob.tensors) {
            let same = *name == st_name
                && view.dtype() == st_view.dtype()
                && view.shape() == st_view.shape()
                && view.data().as_ptr() == st_view.data().as_ptr()
                && view.data().len() == st_view.data().len();
            if !same {
                return Some(format!(
                    "tensor {}: the index says {:?} {:?}, the section {} {:?} {:?}",
                    crate::diagnostics::printable(name),
                    view.dtype(),
                    view.shape(),
                    crate::diagnostics::printable(st_name),
                    st_view.dtype(),
                    st_view.shape()
                ));
            }
        }
        if section.source != table.source.as_deref() {
            return Some("the source file differs".into());
        }
        if self.modules(section) != table.modules {
            return Some("the module table differs".into());
        }
        None
    }
}

/// Collects the records of an index while sections are written.
#[derive(Default)]
pub struct IndexBuilder {
    sections: Vec<SectionRecord>,
    tensors: Vec<TensorRecord>,
    modules: Vec<ModuleRecord>,
    roles: Vec<RoleRecord>,
    dims: Vec<U64>,
    strings: String,
    interned: BTreeMap<String, StrRef>,
    /// Something could not be represented: no index is written.
    unrepresentable: bool,
}

impl IndexBuilder {
    fn intern(&mut self, s: &str) -> Option<StrRef> {
        if let Some(r) = self.interned.get(s) {
            return Some(*r);
        }
        let r = StrRef {
            offset: U32::new(u32::try_from(self.strings.len()).ok()?),
            len: U32::new(u32::try_from(s.len()).ok()?),
        };
        self.strings.push_str(s);
        self.interned.insert(s.to_string(), r);
        Some(r)
    }

    fn count(n: usize) -> Option<U32> {
        u32::try_from(n).ok().map(U32::new)
    }

    /// Adds a tensor section from the bytes about to be written. A section
    /// the index cannot describe (an unknown dtype, a size past u32) turns
    /// the whole index off; the file is then read through its headers.
    pub fn add(&mut self, kind: SectionType, name: &str, bytes: &[u8]) {
        if self.unrepresentable || self.try_add(kind, name, bytes).is_none() {
            self.unrepresentable = true;
        }
    }

    fn try_add(&mut self, kind: SectionType, name: &str, bytes: &[u8]) -> Option<()> {
        let blob = TensorBlob::parse(bytes, name).ok()?;
        let table = blob.table(name).ok()?;
        let base = bytes.as_ptr() as usize;
        let first_tensor = Self::count(self.tensors.len())?;
        for (tensor, view) in &blob.tensors {
            let start = (view.data().as_ptr() as usize).checked_sub(base)? as u64;
            let record = TensorRecord {
                name: self.intern(tensor)?,
                dtype: dtype_code(view.dtype())?,
                ndim: u8::try_from(view.shape().len()).ok()?,
                reserved: U16::new(0),
                first_dim: Self::count(self.dims.len())?,
                start: U64::new(start),
                end: U64::new(start.checked_add(view.data().len() as u64)?),
            };
            self.dims
                .extend(view.shape().iter().map(|&d| U64::new(d as u64)));
            self.tensors.push(record);
        }
        let first_module = Self::count(self.modules.len())?;
        for m in &table.modules {
            let record = self.module_record(m)?;
            self.modules.push(record);
        }
        let source = match &table.source {
            Some(s) => self.intern(s)?,
            None => StrRef::default(),
        };
        let record = SectionRecord {
            kind: U16::new(kind.code()),
            flags: U16::new(if table.source.is_some() {
                SECTION_HAS_SOURCE
            } else {
                0
            }),
            name: self.intern(name)?,
            source,
            first_tensor,
            tensor_count: Self::count(blob.tensors.len())?,
            first_module,
            module_count: Self::count(table.modules.len())?,
        };
        self.sections.push(record);
        Some(())
    }

    fn module_record(&mut self, m: &ModuleInfo) -> Option<ModuleRecord> {
        let first_role = Self::count(self.roles.len())?;
        for (role, tensor) in &m.tensors {
            let record = RoleRecord {
                role: self.intern(role)?,
                tensor: self.intern(tensor)?,
            };
            self.roles.push(record);
        }
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        Some(ModuleRecord {
            module: self.intern(&m.module)?,
            base_tensor: self.intern(&m.base_tensor)?,
            kind: KINDS.iter().find(|(_, k)| *k == m.kind)?.0,
            flags: bit(m.layer.is_some(), MODULE_HAS_LAYER)
                | bit(m.rank.is_some(), MODULE_HAS_RANK)
                | bit(m.alpha.is_some(), MODULE_HAS_ALPHA)
                | bit(m.scale.is_some(), MODULE_HAS_SCALE)
                | bit(m.use_rslora, MODULE_RSLORA)
                | bit(m.fan_in_fan_out, MODULE_FAN_IN_FAN_OUT)
                | bit(m.feedforward, MODULE_FEEDFORWARD),
            reserved: U16::new(0),
            layer: U32::new(m.layer.unwrap_or(0)),
            rank: U64::new(m.rank.unwrap_or(0) as u64),
            alpha: U64::new(m.alpha.unwrap_or(0.0).to_bits()),
            scale: U64::new(m.scale.unwrap_or(0.0).to_bits()),
            first_role,
            role_count: Self::count(m.tensors.len())?,
        })
    }

    /// The index bytes; `None` when there is nothing to index or something
    /// could not be represented.
    pub fn finish(self) -> Option<Vec<u8>> {
        if self.unrepresentable || self.sections.is_empty() {
            return None;
        }
        let header = IndexHeader {
            magic: INDEX_MAGIC,
            version: U16::new(INDEX_VERSION),
            flags: U16::new(0),
            section_count: Self::count(self.sections.len())?,
            tensor_count: Self::count(self.tensors.len())?,
            module_count: Self::count(self.modules.len())?,
            role_count: Self::count(self.roles.len())?,
            dim_count: Self::count(self.dims.len())?,
            string_bytes: Self::count(self.strings.len())?,
        };
        let mut out = Vec::new();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(self.sections.as_bytes());
        out.extend_from_slice(self.tensors.as_bytes());
        out.extend_from_slice(self.modules.as_bytes());
        out.extend_from_slice(self.roles.as_bytes());
        out.extend_from_slice(self.dims.as_bytes());
        out.extend_from_slice(self.strings.as_bytes());
        Some(out)
    }
}
