//! Tensor sections: a safetensors blob per section (the safetensors crate
//! parses and validates its index), with expertui's module table in the
//! blob's `__metadata__`. Also dtype conversion.

use std::collections::HashMap;

use half::{bf16, f16};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

/// The one `__metadata__` key of a tensor section; its value is the JSON of
/// [`SectionTable`]. One key keeps the header byte-for-byte deterministic
/// (safetensors writes a metadata map in hash order).
pub const SECTION_TABLE_KEY: &str = "expertui";

/// What expertui stores beside the tensors of a section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SectionTable {
    /// The modules whose tensors are in this section.
    #[serde(default)]
    pub modules: Vec<ModuleInfo>,
    /// The file the tensors were cut from (`adapter_model.safetensors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// That file's own `__metadata__`, so converting back reproduces it.
    #[serde(default)]
    pub source_metadata: std::collections::BTreeMap<String, String>,
}

impl SectionTable {
    /// The section's `__metadata__` map.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([(
            SECTION_TABLE_KEY.to_string(),
            serde_json::to_string(self).unwrap_or_default(),
        )])
    }
}

/// Errors of tensor handling.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// Bytes that are not valid safetensors.
    #[error("invalid safetensors data in {context}: {reason}")]
    Safetensors { context: String, reason: String },
    /// A dtype conversion that is not possible.
    #[error("tensor {name}: cannot convert {from} to {to}")]
    Conversion {
        name: String,
        from: String,
        to: String,
    },
    /// A module table that does not parse or does not match the tensors.
    #[error("invalid module table in {context}: {reason}")]
    Modules { context: String, reason: String },
    /// A tensor index section that is not well formed.
    #[error("invalid tensor index: {0}")]
    Index(String),
}

/// Adapter method of one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleKind {
    /// LoRA: W + scale·B·A.
    Lora,
    /// DoRA: LoRA with a magnitude vector (needs the base weight).
    Dora,
    /// IA³: scales the weight's input or output features.
    Ia3,
    /// LoRA on an embedding table.
    LoraEmbedding,
    /// An OSD-compressed delta (kept as its stored bytes; its factors are
    /// added into the base weight when fused).
    Osd,
}

/// How to apply one adapted module; the effective scale is stored explicitly
/// so the runtime never re-derives it from patterns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// Base-model module path, e.g. `encoder.layer.0.attention.self.query`.
    pub module: String,
    /// Base tensor the delta applies to (`<module>.weight`).
    pub base_tensor: String,
    pub kind: ModuleKind,
    /// Layer index, when the module sits in a numbered layer.
    pub layer: Option<u32>,
    /// Rank (LoRA/DoRA), from the tensor shapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Effective multiplier of B·A: alpha/r, or alpha/sqrt(r) with rsLoRA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    #[serde(default)]
    pub use_rslora: bool,
    /// Base weight stored [in, out] (GPT-2 Conv1D): transpose the delta.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// IA³: feed-forward module (scales input columns, not output rows).
    #[serde(default)]
    pub feedforward: bool,
    /// Adapter tensor names (as in the PEFT file) by role: `A`, `B`, `magnitude`, `ia3`.
    pub tensors: std::collections::BTreeMap<String, String>,
}

/// Name, dtype and shape of a tensor, without its data.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorMeta {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorMeta {
    /// Bytes of data (shape and dtype were validated by safetensors).
    pub fn byte_len(&self) -> u64 {
        let numel: usize = self.shape.iter().product();
        (numel * self.dtype.bitsize()).div_ceil(8) as u64
    }
}

/// A tensor held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl OwnedTensor {
    /// A tensor from its metadata and raw little-endian bytes.
    pub fn new(meta: TensorMeta, data: Vec<u8>) -> Self {
        Self {
            name: meta.name,
            dtype: meta.dtype,
            shape: meta.shape,
            data,
        }
    }

    /// Name, dtype and shape.
    pub fn meta(&self) -> TensorMeta {
        TensorMeta {
            name: self.name.clone(),
            dtype: self.dtype,
            shape: self.shape.clone(),
        }
    }

    /// A safetensors view of the bytes (checks length against dtype and shape).
    pub fn view(&self) -> Result<TensorView<'_>, TensorError> {
        TensorView::new(self.dtype, self.shape.clone(), &self.data).map_err(|e| {
            TensorError::Safetensors {
                context: self.name.clone(),
                reason: e.to_string(),
            }
        })
    }

    /// Copies a safetensors view.
    pub fn from_view(name: &str, view: &TensorView<'_>) -> Self {
        Self {
            name: name.to_string(),
            dtype: view.dtype(),
            shape: view.shape().to_vec(),
            data: view.data().to_vec(),
        }
    }

    /// Number of elements (checked at construction by safetensors).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Values as f32 (widening is exact); `None` for non-float dtypes.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let chunks = |n: usize| self.data.chunks_exact(n);
        Some(match self.dtype {
            Dtype::F32 => chunks(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => chunks(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => chunks(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => return None,
        })
    }

    /// Converts a float tensor to `to`: exact when widening, round to
    /// nearest even when narrowing (the `half` crate's conversions).
    pub fn convert(&self, to: Dtype) -> Result<Self, TensorError> {
        if self.dtype == to {
            return Ok(self.clone());
        }
        let err = || TensorError::Conversion {
            name: self.name.clone(),
            from: format!("{:?}", self.dtype),
            to: format!("{to:?}"),
        };
        let values = self.to_f32().ok_or_else(err)?;
        let data: Vec<u8> = match to {
            Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => values
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
            Dtype::BF16 => values
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect(),
            _ => return Err(err()),
        };
        Ok(Self {
            name: self.name.clone(),
            dtype: to,
            shape: self.shape.clone(),
            data,
        })
    }
}

/// Parses a dtype name as used on the command line.
pub fn parse_dtype(name: &str) -> Option<Dtype> {
    match name.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Some(Dtype::F32),
        "f16" | "float16" => Some(Dtype::F16),
        "bf16" | "bfloat16" => Some(Dtype::BF16),
        _ => None,
    }
}

/// Serializes tensors plus metadata as one safetensors blob.
pub fn encode_tensor_blob(
    tensors: &[OwnedTensor],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, TensorError> {
    let views = tensors
        .iter()
        .map(|t| Ok((t.name.clone(), t.view()?)))
        .collect::<Result<Vec<_>, TensorError>>()?;
    let metadata = (!metadata.is_empty()).then_some(metadata);
    safetensors::serialize(views, metadata).map_err(|e| TensorError::Safetensors {
        context: "tensor section".into(),
        reason: e.to_string(),
    })
}

/// A decoded tensor section: validated index, zero-copy views, module table.
pub struct TensorBlob<'a> {
    /// Tensors in data order, as zero-copy views of the section bytes.
    pub tensors: Vec<(String, TensorView<'a>)>,
    pub metadata: HashMap<String, String>,
}

impl<'a> TensorBlob<'a> {
    /// Parses a tensor section's safetensors blob (zero-copy); `context` names it in errors.
    pub fn parse(bytes: &'a [u8], context: &str) -> Result<Self, TensorError> {
        let bad = |e: safetensors::SafeTensorError| TensorError::Safetensors {
            context: context.to_string(),
            reason: e.to_string(),
        };
        // One parse: read_metadata validates that the offsets tile the data
        // exactly and fit the buffer; TensorView::new checks shape × dtype.
        let (header_len, meta) = SafeTensors::read_metadata(bytes).map_err(bad)?;
        let data = bytes.get(8 + header_len..).unwrap_or(&[]);
        let mut tensors = Vec::with_capacity(meta.tensors().len());
        for (name, info) in meta.tensors() {
            let (start, end) = info.data_offsets;
            let slice = data
                .get(start..end)
                .ok_or_else(|| TensorError::Safetensors {
                    context: context.to_string(),
                    reason: format!("tensor {name} outside the data"),
                })?;
            let view = TensorView::new(info.dtype, info.shape.clone(), slice).map_err(bad)?;
            tensors.push((name, view));
        }
        tensors.sort_by_key(|(_, v)| v.data().as_ptr() as usize);
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(Self { tensors, metadata })
    }

    /// expertui's table for this section (empty when absent).
    pub fn table(&self, context: &str) -> Result<SectionTable, TensorError> {
        match self.metadata.get(SECTION_TABLE_KEY) {
            None => Ok(SectionTable::default()),
            Some(json) => serde_json::from_str(json).map_err(|e| TensorError::Modules {
                context: context.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// The module table stored with the tensors (empty when absent).
    pub fn modules(&self, context: &str) -> Result<Vec<ModuleInfo>, TensorError> {
        Ok(self.table(context)?.modules)
    }
}
