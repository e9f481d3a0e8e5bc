//! Fuse an adapter into base weights, W' = W + Δ, following PEFT's
//! `merge_and_unload()` (peft 0.21), computed in f32 on the weights' device
//! and cast back to the base dtype:
//!
//! - LoRA: Δ = s·B·A (s from the module table: alpha/r, alpha/√r with
//!   rsLoRA, rank/alpha patterns already folded in); transposed when the
//!   base is stored [in, out] (`fan_in_fan_out`).
//! - DoRA: V = W + s·B·A; n = ‖V‖₂ per output row (over the input
//!   dimension); W' = (m / n)[:, None] · V.
//! - IA³: W' = W ⊙ l, l [1, in] for feed-forward modules (input columns),
//!   [out, 1] otherwise (output rows, and the bias too: b' = b ⊙ l).
//! - Embedding LoRA: Δ = s·(B·A)ᵀ, B [dim, r], A [r, num_embeddings] (PEFT's
//!   `Embedding.get_delta_weight`), so Δ is [num_embeddings, dim].
//!
//! Soft prompts are not fused: [`AdapterWeights::soft_prompt`] exposes them.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::adapter::AdapterWeights;
use super::base::{BaseCheckpoint, NameIndex, Resolved};
use super::device_tensors::{tensor_nbytes, tensor_to_bytes};
use super::error::{Result, RuntimeError};
use crate::format::tensors::{ModuleInfo, ModuleKind};

/// The merged tensors of one module.
#[derive(Debug, Clone)]
pub struct Fused {
    pub weight: Tensor,
    /// IA³ on a non-feed-forward module scales the bias too.
    pub bias: Option<Tensor>,
}

fn f32_on(t: &Tensor, device: &Device) -> Result<Tensor> {
    Ok(t.to_device(device)?.to_dtype(DType::F32)?)
}

fn check_dims(module: &ModuleInfo, what: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(RuntimeError::module(
            &module.module,
            format!("{what} has shape {got:?}, the base weight {want:?}"),
        ));
    }
    Ok(())
}

fn scale_of(module: &ModuleInfo) -> Result<f64> {
    module
        .scale
        .or_else(|| match (module.alpha, module.rank) {
            (Some(a), Some(r)) if r > 0 => Some(if module.use_rslora {
                a / (r as f64).sqrt()
            } else {
                a / r as f64
            }),
            _ => None,
        })
        .ok_or_else(|| RuntimeError::module(&module.module, "no scale in the module table"))
}

/// ΔW of a LoRA/DoRA/embedding module, in the base weight's orientation, f32.
pub fn delta_weight(
    adapter: &AdapterWeights,
    module: &ModuleInfo,
    device: &Device,
) -> Result<Tensor> {
    let s = scale_of(module)?;
    let (a, b, embedding) = match module.kind {
        ModuleKind::Lora | ModuleKind::Dora => (
            adapter.role(module, "A")?,
            adapter.role(module, "B")?,
            false,
        ),
        ModuleKind::LoraEmbedding => (
            adapter.role(module, "embedding_A")?,
            adapter.role(module, "embedding_B")?,
            true,
        ),
        ModuleKind::Ia3 => {
            return Err(RuntimeError::module(
                &module.module,
                "IA³ has no additive delta",
            ));
        }
        ModuleKind::Osd => {
            return super::osd_runtime::osd_delta(adapter.osd_module(module)?, module, device);
        }
    };
    let (a, b) = (f32_on(a, device)?, f32_on(b, device)?);
    // s folded into the small factor B ([out, r]): one pass over r·out values
    // instead of one over the whole out·in delta (exact when s is a power of 2).
    let b = if s == 1.0 { b } else { b.affine(s, 0.0)? };
    let delta = b
        .matmul(&a)
        .map_err(|e| RuntimeError::module(&module.module, e))?;
    // Embedding: (B·A)ᵀ; fan_in_fan_out: the base is [in, out].
    Ok(if embedding != module.fan_in_fan_out {
        delta.t()?.contiguous()?
    } else {
        delta
    })
}

/// Merges one module into its base weight (and bias, for IA³): on the host
/// with the one-pass kernels of `fuse_cpu`, on a device with candle ops.
pub fn fuse_module(
    adapter: &AdapterWeights,
    module: &ModuleInfo,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Fused> {
    if weight.device().is_cpu() && weight.rank() == 2 {
        fuse_module_host(adapter, module, weight, bias)
    } else {
        fuse_module_candle(adapter, module, weight, bias)
    }
}

/// The host path: W read once, W' written once, a block of rows at a time.
pub fn fuse_module_host(
    adapter: &AdapterWeights,
    module: &ModuleInfo,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Fused> {
    use super::fuse_cpu::{add_product, host_f32, map_row_blocks, transpose};
    let (rows, cols) = weight.dims2()?;
    match module.kind {
        ModuleKind::Lora | ModuleKind::Dora | ModuleKind::LoraEmbedding => {
            let s = scale_of(module)? as f32;
            let (ra, rb) = match module.kind {
                ModuleKind::LoraEmbedding => ("embedding_A", "embedding_B"),
                _ => ("A", "B"),
            };
            let (a_t, b_t) = (adapter.role(module, ra)?, adapter.role(module, rb)?);
            let ((rank, a_cols), (b_rows, rank_b)) = (a_t.dims2()?, b_t.dims2()?);
            if rank != rank_b {
                return Err(RuntimeError::module(
                    &module.module,
                    format!(
                        "A {:?} and B {:?} do not share a rank",
                        a_t.dims(),
                        b_t.dims()
                    ),
                ));
            }
            let a = host_f32(a_t)?;
            // s folded into B, as in the candle path.
            let sb: Vec<f32> = host_f32(b_t)?.iter().map(|v| v * s).collect();
            let embedding = module.kind == ModuleKind::LoraEmbedding;
            // Δ = P·Q with P [rows, r], Q [r, cols] in the base orientation.
            let (p, q, shape) = if embedding != module.fan_in_fan_out {
                (
                    transpose(&a, rank, a_cols),
                    transpose(&sb, b_rows, rank),
                    (a_cols, b_rows),
                )
            } else {
                (sb, a, (b_rows, a_cols))
            };
            check_dims(module, "ΔW", &[shape.0, shape.1], &[rows, cols])?;
            // W' rows r0.. += P rows r0.. · Q, in place in the block.
            let add_delta = |r0: usize, out: &mut [f32]| {
                let n = out.len() / cols.max(1);
                add_product(out, &p[r0 * rank..(r0 + n) * rank], &q, rank);
            };
            if module.kind != ModuleKind::Dora {
                let merged = map_row_blocks(weight, &add_delta)?;
                return Ok(Fused {
                    weight: merged,
                    bias: None,
                });
            }
            let m = host_f32(adapter.role(module, "magnitude")?)?;
            let out_rows = if module.fan_in_fan_out { cols } else { rows };
            if m.len() != out_rows {
                return Err(RuntimeError::module(
                    &module.module,
                    format!(
                        "magnitude has {} values for {out_rows} output rows",
                        m.len()
                    ),
                ));
            }
            if !module.fan_in_fan_out {
                // V = W + Δ, each row's norm and the scaled row, block by block.
                let merged = map_row_blocks(weight, &|r0, out| {
                    add_delta(r0, out);
                    super::fuse_cpu::scale_rows_to_magnitude(out, cols, &m[r0..]);
                })?;
                return Ok(Fused {
                    weight: merged,
                    bias: None,
                });
            }
            // [in, out] storage: output rows are columns; two passes.
            let v = map_row_blocks(&weight.to_dtype(DType::F32)?, &add_delta)?;
            let vv = host_f32(&v)?;
            let mut norms = vec![0f64; cols];
            for row in vv.chunks(cols) {
                for (n, x) in norms.iter_mut().zip(row) {
                    *n += f64::from(*x) * f64::from(*x);
                }
            }
            let factor: Vec<f32> = norms
                .iter()
                .zip(&m)
                .map(|(n, m)| m / (n.sqrt() as f32))
                .collect();
            let merged = map_row_blocks(&v, &|_, out| {
                for row in out.chunks_mut(cols) {
                    for (o, f) in row.iter_mut().zip(&factor) {
                        *o *= f;
                    }
                }
            })?
            .to_dtype(weight.dtype())?;
            Ok(Fused {
                weight: merged,
                bias: None,
            })
        }
        ModuleKind::Osd => Ok(Fused {
            weight: super::osd_runtime::fuse_osd_host(adapter.osd_module(module)?, module, weight)?
                .to_dtype(weight.dtype())?,
            bias: None,
        }),
        ModuleKind::Ia3 => fuse_ia3_host(adapter, module, weight, bias, (rows, cols)),
    }
}

/// IA³ on the host: W' = W ⊙ l (columns for feed-forward modules, rows
/// otherwise), the bias scaled with the rows.
fn fuse_ia3_host(
    adapter: &AdapterWeights,
    module: &ModuleInfo,
    weight: &Tensor,
    bias: Option<&Tensor>,
    (rows, cols): (usize, usize),
) -> Result<Fused> {
    use super::fuse_cpu::{host_f32, map_row_blocks};
    let l_t = adapter.role(module, "ia3")?;
    let l = host_f32(l_t)?;
    let columns = module.feedforward != module.fan_in_fan_out;
    let want = if columns { cols } else { rows };
    if l.len() != want || l_t.rank() != 2 {
        return Err(RuntimeError::module(
            &module.module,
            format!(
                "ia3_l has shape {:?}, the base weight {:?}",
                l_t.dims(),
                weight.dims()
            ),
        ));
    }
    let merged = map_row_blocks(weight, &|r0, out| {
        for (i, row) in out.chunks_mut(cols).enumerate() {
            if columns {
                for (o, l) in row.iter_mut().zip(&l) {
                    *o *= l;
                }
            } else {
                let f = l[r0 + i];
                for o in row.iter_mut() {
                    *o *= f;
                }
            }
        }
    })?;
    let bias = match (module.feedforward, bias) {
        (false, Some(b)) if b.elem_count() == l.len() => {
            let scaled: Vec<f32> = host_f32(b)?.iter().zip(&l).map(|(b, l)| b * l).collect();
            Some(Tensor::from_vec(scaled, b.shape(), b.device())?.to_dtype(b.dtype())?)
        }
        (false, Some(b)) => {
            return Err(RuntimeError::module(
                &module.module,
                format!("bias {:?} does not match ia3_l {:?}", b.dims(), l_t.dims()),
            ));
        }
        _ => None,
    };
    Ok(Fused {
        weight: merged,
        bias,
    })
}

/// The device path: candle ops, f32 on the weight's device.
pub fn fuse_module_candle(
    adapter: &AdapterWeights,
    module: &ModuleInfo,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Fused> {
    let device = weight.device().clone();
    let out_dtype = weight.dtype();
    let w = weight.to_dtype(DType::F32)?;
    let (merged, new_bias) = match module.kind {
        ModuleKind::Lora | ModuleKind::LoraEmbedding => {
            let delta = delta_weight(adapter, module, &device)?;
            check_dims(module, "ΔW", delta.dims(), w.dims())?;
            ((w + delta)?, None)
        }
        ModuleKind::Dora => {
            let delta = delta_weight(adapter, module, &device)?;
            check_dims(module, "ΔW", delta.dims(), w.dims())?;
            let v = (w + delta)?;
            // Norms per output row: rows of V as [out, in].
            let v_oi = if module.fan_in_fan_out {
                v.t()?
            } else {
                v.clone()
            };
            let out = v_oi.dim(0)?;
            let norm = v_oi.sqr()?.sum_keepdim(1)?.sqrt()?;
            let m = f32_on(adapter.role(module, "magnitude")?, &device)?;
            if m.elem_count() != out {
                return Err(RuntimeError::module(
                    &module.module,
                    format!(
                        "magnitude has {} values for {out} output rows",
                        m.elem_count()
                    ),
                ));
            }
            let factor = m.reshape((out, 1))?.div(&norm)?;
            let factor = if module.fan_in_fan_out {
                factor.t()?
            } else {
                factor
            };
            (v.broadcast_mul(&factor)?, None)
        }
        ModuleKind::Osd => {
            let (rows, cols) = w.dims2()?;
            adapter.osd_module(module)?.check_fits(module, rows, cols)?;
            let delta = delta_weight(adapter, module, &device)?;
            check_dims(module, "ΔW", delta.dims(), w.dims())?;
            ((&w + delta)?, None)
        }
        ModuleKind::Ia3 => {
            let l = f32_on(adapter.role(module, "ia3")?, &device)?;
            let l = if module.fan_in_fan_out { l.t()? } else { l };
            let (rows, cols) = w.dims2()?;
            let expected = if module.feedforward != module.fan_in_fan_out {
                // feed-forward [1, in] on [out, in]; or non-ff [1, out] on [in, out]
                (1, cols)
            } else {
                (rows, 1)
            };
            check_dims(module, "ia3_l", l.dims(), &[expected.0, expected.1])?;
            let merged = w.broadcast_mul(&l)?;
            let bias = match (module.feedforward, bias) {
                (false, Some(b)) => {
                    let bf = b.to_dtype(DType::F32)?;
                    let lb = l.reshape(bf.shape())?;
                    Some((bf * lb)?.to_dtype(b.dtype())?)
                }
                _ => None,
            };
            (merged, bias)
        }
    };
    Ok(Fused {
        weight: merged.to_dtype(out_dtype)?,
        bias: new_bias,
    })
}

/// A module merged into the base.
#[derive(Debug, Clone, Serialize)]
pub struct FusedModule {
    pub module: String,
    pub kind: ModuleKind,
    /// The base tensor's name where it was found.
    pub weight: String,
    /// The bias, when the merge scaled it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bias: Option<String>,
    /// Found by suffix (the base names carry a prefix).
    pub by_suffix: bool,
    /// Bytes of the base tensors rewritten.
    pub bytes: u64,
    pub seconds: f64,
}

/// A module whose base tensor is absent: reported and skipped.
#[derive(Debug, Clone, Serialize)]
pub struct MissingModule {
    pub module: String,
    pub base_tensor: String,
    pub reason: String,
}

/// What a fuse did: the modules fused, the ones without a base tensor, the time taken.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FuseReport {
    pub fused: Vec<FusedModule>,
    pub missing: Vec<MissingModule>,
    pub seconds: f64,
}

/// Where each module's weight (and bias) lies among the base names.
#[derive(Debug, Clone)]
pub struct Planned {
    pub module: usize,
    pub weight: String,
    pub bias: Option<String>,
    pub by_suffix: bool,
}

/// Resolves every module's base tensor; the unresolved are reported.
pub fn plan(
    adapter: &AdapterWeights,
    resolve: &dyn Fn(&str) -> Resolved,
) -> (Vec<Planned>, Vec<MissingModule>) {
    let mut planned: Vec<Planned> = Vec::new();
    let mut missing = Vec::new();
    for (i, module) in adapter.modules.iter().enumerate() {
        let miss = |reason: String| MissingModule {
            module: module.module.clone(),
            base_tensor: module.base_tensor.clone(),
            reason,
        };
        let (weight, by_suffix) = match resolve(&module.base_tensor) {
            Resolved::Exact(n) => (n, false),
            Resolved::Suffix(n) => (n, true),
            Resolved::Missing => {
                missing.push(miss("not in the base".into()));
                continue;
            }
            Resolved::Ambiguous(names) => {
                missing.push(miss(format!("ambiguous: {}", names.join(", "))));
                continue;
            }
        };
        if planned.iter().any(|p| p.weight == weight) {
            missing.push(miss(format!(
                "{weight} is already adapted by another module"
            )));
            continue;
        }
        let bias = if module.kind == ModuleKind::Ia3 && !module.feedforward {
            let wanted = match weight.strip_suffix(".weight") {
                Some(stem) => format!("{stem}.bias"),
                None => format!("{}.bias", module.module),
            };
            resolve(&wanted).name().map(str::to_string)
        } else {
            None
        };
        planned.push(Planned {
            module: i,
            weight,
            bias,
            by_suffix,
        });
    }
    (planned, missing)
}

/// Fuses into weights held as tensors; returns only the tensors it changed
/// (the input map is left as it is).
pub fn fuse_into_map(
    adapter: &AdapterWeights,
    weights: &HashMap<String, Tensor>,
) -> Result<(HashMap<String, Tensor>, FuseReport)> {
    let started = Instant::now();
    let index = NameIndex::new(weights.keys().map(String::as_str));
    let (planned, missing) = plan(adapter, &|n| index.resolve(n));
    let mut changed = HashMap::new();
    let mut report = FuseReport {
        missing,
        ..FuseReport::default()
    };
    for p in planned {
        let module = &adapter.modules[p.module];
        let t0 = Instant::now();
        let weight = &weights[&p.weight];
        let bias = p.bias.as_ref().and_then(|b| weights.get(b));
        let fused = fuse_module(adapter, module, weight, bias)?;
        let mut bytes = tensor_nbytes(&fused.weight) as u64;
        changed.insert(p.weight.clone(), fused.weight);
        let bias_name = match (fused.bias, &p.bias) {
            (Some(b), Some(name)) => {
                bytes += tensor_nbytes(&b) as u64;
                changed.insert(name.clone(), b);
                Some(name.clone())
            }
            _ => None,
        };
        report.fused.push(FusedModule {
            module: module.module.clone(),
            kind: module.kind,
            weight: p.weight,
            bias: bias_name,
            by_suffix: p.by_suffix,
            bytes,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok((changed, report))
}

/// Fuses into a checkpoint on disk and writes every base tensor (merged
/// where adapted) to `out`, one module in memory at a time.
/// `progress(done, total)` counts modules.
pub fn fuse_checkpoint(
    adapter: &AdapterWeights,
    base: &BaseCheckpoint,
    out: &std::path::Path,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<FuseReport> {
    let started = Instant::now();
    let (planned, missing) = plan(adapter, &|n| base.resolve(n));
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (i, p) in planned.iter().enumerate() {
        by_name.insert(p.weight.clone(), i);
        if let Some(b) = &p.bias {
            by_name.insert(b.clone(), i);
        }
    }
    let total = planned.len();
    let mut done = 0usize;
    let mut pending: HashMap<String, Vec<u8>> = HashMap::new();
    let mut fused_modules = Vec::new();
    let mut fused_once = std::collections::HashSet::new();
    base.write_with(out, &mut |name| {
        if let Some(bytes) = pending.remove(name) {
            return Ok(Some(bytes));
        }
        let Some(&i) = by_name.get(name) else {
            return Ok(None);
        };
        if !fused_once.insert(i) {
            return Ok(None); // merged already; this tensor was left as it is
        }
        let p = &planned[i];
        let module = &adapter.modules[p.module];
        let t0 = Instant::now();
        let weight = base.tensor(&p.weight, device, None)?;
        let bias = match &p.bias {
            Some(b) => Some(base.tensor(b, device, None)?),
            None => None,
        };
        let fused = fuse_module(adapter, module, &weight, bias.as_ref())?;
        let (_, wbytes) = tensor_to_bytes(&fused.weight)?;
        let mut bytes = wbytes.len() as u64;
        let mut bias_name = None;
        if let (Some(b), Some(bname)) = (&fused.bias, &p.bias) {
            let (_, bb) = tensor_to_bytes(b)?;
            bytes += bb.len() as u64;
            pending.insert(bname.clone(), bb);
            bias_name = Some(bname.clone());
        }
        pending.insert(p.weight.clone(), wbytes);
        fused_modules.push(FusedModule {
            module: module.module.clone(),
            kind: module.kind,
            weight: p.weight.clone(),
            bias: bias_name,
            by_suffix: p.by_suffix,
            bytes,
            seconds: t0.elapsed().as_secs_f64(),
        });
        done += 1;
        progress(done, total);
        Ok(pending.remove(name))
    })?;
    Ok(FuseReport {
        fused: fused_modules,
        missing,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests;
