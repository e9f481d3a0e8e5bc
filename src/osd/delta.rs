//! Where weight deltas come from: a LoRA/rsLoRA module (kept factored: ΔW =
//! s·B·A is never formed to take its SVD), a DoRA module (full rank: needs the
//! base weight), or a full fine-tune (ΔW = W_f − W_p per matrix).

use std::collections::HashMap;
use std::path::Path;

use safetensors::SafeTensors;

use super::error::OsdError;
use super::matrix::Matrix;
use super::precision::ValueDtype;
use super::svd::{dense_svd, lora_svd, randomized_svd, Svd};
use crate::format::peft::PeftAdapter;
use crate::format::tensors::{ModuleInfo, ModuleKind, OwnedTensor};

/// Dense deltas larger than this (in min(n, d)) use the randomized SVD.
pub(crate) const RANDOMIZED_ABOVE: usize = 512;

/// The delta of one module, in the cheapest exact form available.
#[derive(Debug, Clone)]
pub enum DeltaForm {
    /// ΔW = scale · B · A with A [r, d], B [n, r].
    LowRank { a: Matrix, b: Matrix, scale: f32 },
    /// A dense ΔW (DoRA, full fine-tunes).
    Dense(Matrix),
}

/// One module's delta ΔW, shaped [n = out, d = in] like a PyTorch Linear.
#[derive(Debug, Clone)]
pub struct ModuleDelta {
    /// Module name, as in the adapter's module table.
    pub module: String,
    /// Name of the base weight the delta is added to.
    pub base_tensor: String,
    /// Model layer, if any.
    pub layer: Option<u32>,
    /// The base stores the weight [in, out] (GPT-2 Conv1D): transpose on fuse.
    pub fan_in_fan_out: bool,
    /// The delta itself.
    pub form: DeltaForm,
    /// The module as the adapter stores it.
    pub stored: Stored,
}

/// A module as its adapter stores it, to weigh "keep the adapter, cast it"
/// against compression.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    /// Values of its tensors (LoRA A and B, DoRA's magnitude too; n·d for a
    /// dense delta).
    pub values: u64,
    /// Its rank (n.min(d) for a dense delta).
    pub rank: usize,
    /// Bytes its tensors take as stored (in their own dtype).
    pub bytes: u64,
    /// ‖ΔW − ΔW_cast‖² with its tensors rounded to f32, bf16, f16
    /// (indexed by `analysis::dtype_index`); `None` for LoRA factors, whose
    /// cast errors the analysis computes from the factors when asked.
    pub cast_error2: Option<[f64; 3]>,
}

impl Stored {
    /// A dense delta stored whole.
    pub fn dense(m: &Matrix) -> Self {
        let cast_error2 = crate::osd::precision::ValueDtype::ALL.map(|dt| {
            m.data
                .iter()
                .map(|v| (f64::from(*v) - f64::from(dt.round(*v))).powi(2))
                .sum()
        });
        Self {
            values: m.data.len() as u64,
            rank: m.rows.min(m.cols),
            bytes: 4 * m.data.len() as u64,
            cast_error2: Some(cast_error2),
        }
    }
}

impl ModuleDelta {
    /// (rows, columns) of ΔW.
    pub fn shape(&self) -> (usize, usize) {
        match &self.form {
            DeltaForm::LowRank { a, b, .. } => (b.rows, a.cols),
            DeltaForm::Dense(m) => (m.rows, m.cols),
        }
    }

    /// ΔW as a dense matrix (for errors and the blend residual).
    pub fn dense(&self) -> Result<Matrix, OsdError> {
        match &self.form {
            DeltaForm::LowRank { a, b, scale } => {
                let mut m = b.matmul(a)?;
                m.data.iter_mut().for_each(|v| *v *= scale);
                Ok(m)
            }
            DeltaForm::Dense(m) => Ok(m.clone()),
        }
    }

    /// A truncated SVD with up to `k` components: exact and O((n+d)r²) for
    /// LoRA factors, dense or randomized otherwise.
    pub fn svd(&self, k: usize) -> Result<Svd, OsdError> {
        match &self.form {
            DeltaForm::LowRank { a, b, scale } => Ok(lora_svd(a, b, *scale)?.truncated(k)),
            DeltaForm::Dense(m) if m.rows.min(m.cols) > RANDOMIZED_ABOVE => {
                randomized_svd(m, k.min(m.rows.min(m.cols)), 10, 2, 0x05D)
            }
            DeltaForm::Dense(m) => dense_svd(m, k.min(m.rows.min(m.cols))),
        }
    }

    /// Bytes the module takes as its adapter stores it (its tensors in
    /// their own dtype; a dense delta as f32).
    pub fn original_bytes(&self) -> u64 {
        self.stored.bytes
    }
}

/// Base weights by tensor name (DoRA needs them; so do fine-tune deltas).
#[derive(Default)]
pub struct BaseWeights {
    tensors: HashMap<String, OwnedTensor>,
}

impl BaseWeights {
    /// Loads every tensor of a safetensors file, or of every safetensors
    /// file in a folder.
    pub fn load(path: &Path) -> Result<Self, OsdError> {
        let files: Vec<std::path::PathBuf> = if path.is_dir() {
            let mut v: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| OsdError::param("base", format!("{}: {e}", path.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_path_buf()]
        };
        let mut tensors = HashMap::new();
        for file in files {
            let bytes = std::fs::read(&file)
                .map_err(|e| OsdError::param("base", format!("{}: {e}", file.display())))?;
            let st = SafeTensors::deserialize(&bytes)
                .map_err(|e| OsdError::param("base", format!("{}: {e}", file.display())))?;
            for (name, view) in st.iter() {
                tensors.insert(name.to_string(), OwnedTensor::from_view(name, &view));
            }
        }
        Ok(Self { tensors })
    }

    /// A base tensor by exact name, or by a name with an extra prefix.
    pub fn get(&self, name: &str) -> Option<&OwnedTensor> {
        self.tensors.get(name).or_else(|| {
            let suffix = format!(".{name}");
            self.tensors
                .iter()
                .find(|(k, _)| k.ends_with(&suffix))
                .map(|(_, v)| v)
        })
    }

    /// Every tensor name.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }
}

fn matrix_of(adapter: &PeftAdapter, name: &str) -> Result<Matrix, OsdError> {
    let index = adapter
        .tensors
        .iter()
        .position(|t| t.name == name)
        .ok_or_else(|| OsdError::param("adapter", format!("tensor {name} missing")))?;
    let tensor = adapter
        .tensor(index)
        .map_err(|e| OsdError::param("adapter", e.to_string()))?;
    Matrix::from_tensor(&tensor)
}

/// Bytes of a module's tensors as stored.
fn tensor_bytes(adapter: &PeftAdapter, m: &ModuleInfo) -> u64 {
    m.tensors
        .values()
        .filter_map(|name| adapter.tensors.iter().find(|t| &t.name == name))
        .map(|t| t.byte_len())
        .sum()
}

/// DoRA's merged delta: V = W + s·B·A, W' = (m / ‖V‖_row) · V, Δ = W' − W.
fn dora_delta(w: &Matrix, lora: &Matrix, magnitude: &[f32]) -> Result<Matrix, OsdError> {
    if magnitude.len() != w.rows || lora.rows != w.rows || lora.cols != w.cols {
        return Err(OsdError::shape(
            "dora",
            format!("base {}×{}", w.rows, w.cols),
        ));
    }
    let cols = w.cols;
    let mut out = Matrix::zeros(w.rows, cols);
    let rows = out
        .data
        .chunks_mut(cols.max(1))
        .zip(w.data.chunks(cols.max(1)));
    for ((out_row, w_row), (lora_row, m)) in rows.zip(lora.data.chunks(cols.max(1)).zip(magnitude))
    {
        let v: Vec<f32> = w_row.iter().zip(lora_row).map(|(a, b)| a + b).collect();
        let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt() as f32;
        let factor = if norm > 0.0 { m / norm } else { 0.0 };
        for ((o, vi), wi) in out_row.iter_mut().zip(&v).zip(w_row) {
            *o = factor * vi - wi;
        }
    }
    Ok(out)
}

/// The deltas of an adapter's LoRA and DoRA modules. IA³ and embedding
/// modules are listed in the second result (not low-rank deltas), and so
/// are DoRA modules when no base is given.
pub fn adapter_deltas(
    adapter: &PeftAdapter,
    base: Option<&BaseWeights>,
) -> Result<(Vec<ModuleDelta>, Vec<String>), OsdError> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for m in &adapter.modules {
        let (delta, stored) = match module_delta(adapter, m, base)? {
            Some(found) => found,
            None => {
                skipped.push(m.module.clone());
                continue;
            }
        };
        out.push(ModuleDelta {
            module: m.module.clone(),
            base_tensor: m.base_tensor.clone(),
            layer: m.layer,
            fan_in_fan_out: m.fan_in_fan_out,
            form: delta,
            stored,
        });
    }
    Ok((out, skipped))
}

fn module_delta(
    adapter: &PeftAdapter,
    m: &ModuleInfo,
    base: Option<&BaseWeights>,
) -> Result<Option<(DeltaForm, Stored)>, OsdError> {
    let (Some(a_name), Some(b_name)) = (m.tensors.get("A"), m.tensors.get("B")) else {
        return Ok(None);
    };
    let scale = m.scale.unwrap_or(1.0) as f32;
    let a = matrix_of(adapter, a_name)?;
    let b = matrix_of(adapter, b_name)?;
    match m.kind {
        ModuleKind::Lora => {
            let stored = Stored {
                values: ((a.rows * a.cols) + (b.rows * b.cols)) as u64,
                rank: a.rows,
                bytes: tensor_bytes(adapter, m),
                cast_error2: None,
            };
            Ok(Some((DeltaForm::LowRank { a, b, scale }, stored)))
        }
        ModuleKind::Dora => {
            let (Some(base), Some(mag_name)) = (base, m.tensors.get("magnitude")) else {
                return Ok(None);
            };
            let Some(w) = base.get(&m.base_tensor) else {
                return Ok(None);
            };
            let w = Matrix::from_tensor(w)?;
            let w = if m.fan_in_fan_out { w.transpose() } else { w };
            if (w.rows, w.cols) != (b.rows, a.cols) {
                return Ok(None); // a base of another shape: reported as skipped
            }
            let index = adapter
                .tensors
                .iter()
                .position(|t| &t.name == mag_name)
                .ok_or_else(|| OsdError::param("adapter", format!("{mag_name} missing")))?;
            let magnitude = adapter
                .tensor(index)
                .map_err(|e| OsdError::param("adapter", e.to_string()))?
                .to_f32()
                .unwrap_or_default();
            let dora = |dtype: ValueDtype| -> Result<Matrix, OsdError> {
                let cast = |m: &Matrix| {
                    let mut m = m.clone();
                    dtype.round_slice(&mut m.data);
                    m
                };
                let mut lora = cast(&b).matmul(&cast(&a))?;
                lora.data.iter_mut().for_each(|v| *v *= scale);
                let mut mag = magnitude.clone();
                dtype.round_slice(&mut mag);
                dora_delta(&w, &lora, &mag)
            };
            let delta = dora(ValueDtype::F32)?;
            let mut cast_error2 = [0.0; 3];
            for (slot, dt) in cast_error2.iter_mut().zip(ValueDtype::ALL).skip(1) {
                let cast = dora(dt)?;
                *slot = delta
                    .data
                    .iter()
                    .zip(&cast.data)
                    .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                    .sum();
            }
            let stored = Stored {
                values: ((a.rows * a.cols) + (b.rows * b.cols) + magnitude.len()) as u64,
                rank: a.rows,
                bytes: tensor_bytes(adapter, m),
                cast_error2: Some(cast_error2),
            };
            Ok(Some((DeltaForm::Dense(delta), stored)))
        }
        ModuleKind::Ia3 | ModuleKind::LoraEmbedding | ModuleKind::Osd => Ok(None),
    }
}

/// ΔW = W_f − W_p for every 2-D float tensor present in both with the same
/// shape and some difference (the paper's full fine-tune case).
pub fn finetune_deltas(
    base: &BaseWeights,
    finetuned: &BaseWeights,
) -> Result<Vec<ModuleDelta>, OsdError> {
    let mut names: Vec<&String> = finetuned.names().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let (Some(f), Some(p)) = (finetuned.get(name), base.get(name)) else {
            continue;
        };
        if f.shape.len() != 2 || f.shape != p.shape {
            continue;
        }
        let (Ok(fm), Ok(pm)) = (Matrix::from_tensor(f), Matrix::from_tensor(p)) else {
            continue;
        };
        let delta = fm.sub(&pm)?;
        if delta.data.iter().all(|v| *v == 0.0) {
            continue;
        }
        let module = name.strip_suffix(".weight").unwrap_or(name).to_string();
        out.push(ModuleDelta {
            layer: crate::format::peft::layer_of(&module),
            module,
            base_tensor: name.clone(),
            fan_in_fan_out: false,
            stored: Stored::dense(&delta),
            form: DeltaForm::Dense(delta),
        });
    }
    Ok(out)
}
