//! OSD modules at runtime. A module stays as its stored bytes (resident
//! memory = its bytes in the file, whatever its precision or sparsity) and
//! is decoded only while it is fused: its low-rank part U·Vt is added into
//! W block by block through the LoRA kernel (no dense Δ is formed on the
//! host), and the sparse part of the blends entry by entry.

use candle_core::{Device, Tensor};

use super::error::{Result, RuntimeError};
use super::fuse_cpu::{add_product, map_row_blocks};
use crate::format::tensors::{ModuleInfo, ModuleKind};
use crate::osd::section::split_layer;
use crate::osd::OsdModule;

/// Largest n·d an OSD module may claim (2²⁸, 1 GiB of f32): the largest
/// real linear layers are below it, and every dense buffer built from a
/// module (factors for a fuse or a stream, a blend's sparse part) is at
/// most this many values, whatever few bytes describe it.
const MAX_OSD_ELEMENTS: usize = 1 << 28;

/// One OSD module as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct OsdResident {
    /// The `OsdModule` bytes (validated at load).
    pub payload: Vec<u8>,
    /// Δ is n×d (out × in).
    pub n: usize,
    pub d: usize,
    /// Relaxed rank of the factors.
    pub k: usize,
}

impl OsdResident {
    /// The base weight's shape this module applies to: [n, d], or [d, n]
    /// when the base stores it transposed (`fan_in_fan_out`).
    pub fn base_shape(&self, fan_in_fan_out: bool) -> (usize, usize) {
        if fan_in_fan_out {
            (self.d, self.n)
        } else {
            (self.n, self.d)
        }
    }

    /// Fails unless the module fits a base weight of `rows`×`cols`: checked
    /// before anything is decoded or allocated for the fuse.
    pub fn check_fits(&self, module: &ModuleInfo, rows: usize, cols: usize) -> Result<()> {
        let (r, c) = self.base_shape(module.fan_in_fan_out);
        if (r, c) != (rows, cols) {
            return Err(RuntimeError::module(
                &module.module,
                format!("OSD delta {r}×{c} does not fit the base weight {rows}×{cols}"),
            ));
        }
        Ok(())
    }

    /// The module, decoded (checked again: the bytes were validated at load,
    /// so this only fails on a bug).
    pub fn decode(&self, module: &str) -> Result<OsdModule> {
        OsdModule::from_bytes(&self.payload)
            .map_err(|e| RuntimeError::module(module, format!("OSD payload: {e}")))
    }
}

/// The modules of one OSD section, each validated and kept as its bytes.
pub fn osd_modules(bytes: &[u8], layer: Option<u32>) -> Result<Vec<(ModuleInfo, OsdResident)>> {
    let entries =
        split_layer(bytes).map_err(|e| RuntimeError::Corrupt(format!("OSD section: {e}")))?;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        if entry.n.saturating_mul(entry.d) > MAX_OSD_ELEMENTS {
            return Err(RuntimeError::Corrupt(format!(
                "OSD module {}: {}×{} exceeds the {MAX_OSD_ELEMENTS}-element limit of a base weight",
                entry.module, entry.n, entry.d
            )));
        }
        let info = ModuleInfo {
            module: entry.module.clone(),
            base_tensor: entry.base_tensor,
            kind: ModuleKind::Osd,
            layer,
            rank: Some(entry.k),
            alpha: None,
            scale: Some(1.0),
            use_rslora: false,
            fan_in_fan_out: entry.fan_in_fan_out,
            feedforward: false,
            tensors: Default::default(),
        };
        let resident = OsdResident {
            payload: entry.payload,
            n: entry.n,
            d: entry.d,
            k: entry.k,
        };
        out.push((info, resident));
    }
    Ok(out)
}

/// Δ̂ in the base weight's orientation as `P·Q + sparse`: P [rows, k] with
/// λ folded in, Q [k, cols], and the sparse part as (row, col, α·value)
/// sorted by row. Transient: built for one fuse, dropped after.
struct Factors {
    p: Vec<f32>,
    q: Vec<f32>,
    k: usize,
    rows: usize,
    cols: usize,
    sparse: Vec<(usize, usize, f32)>,
}

fn factors(osd: &OsdModule, fan_in_fan_out: bool) -> Factors {
    let (n, d, k) = (osd.n(), osd.d(), osd.relaxed_rank());
    let (u, vt) = osd.dense_factors();
    let alpha = osd.sparse_weight();
    let mut sparse = Vec::new();
    if let Some(s) = osd.residual().filter(|_| alpha != 0.0) {
        for i in 0..s.rows() {
            let (idx, val) = s.row(i);
            for (&l, &v) in idx.iter().zip(val) {
                sparse.push((i, l as usize, alpha * v));
            }
        }
    }
    if !fan_in_fan_out {
        return Factors {
            p: u,
            q: vt,
            k,
            rows: n,
            cols: d,
            sparse,
        };
    }
    // The base is [in, out]: Δᵀ = Vtᵀ·Uᵀ.
    let transpose = |m: &[f32], r: usize, c: usize| {
        let mut t = vec![0f32; m.len()];
        for i in 0..r {
            for j in 0..c {
                t[j * r + i] = m[i * c + j];
            }
        }
        t
    };
    let mut sparse: Vec<(usize, usize, f32)> =
        sparse.into_iter().map(|(i, l, v)| (l, i, v)).collect();
    sparse.sort_by_key(|e| (e.0, e.1));
    Factors {
        p: transpose(&vt, k, d),
        q: transpose(&u, n, k),
        k,
        rows: d,
        cols: n,
        sparse,
    }
}

/// W' = W + Δ̂ on the host: one pass over W, a block of rows at a time, the
/// low-rank part through the LoRA kernel.
pub fn fuse_osd_host(
    resident: &OsdResident,
    module: &ModuleInfo,
    weight: &Tensor,
) -> Result<Tensor> {
    let (rows, cols) = weight.dims2()?;
    resident.check_fits(module, rows, cols)?;
    let f = factors(&resident.decode(&module.module)?, module.fan_in_fan_out);
    let add = |r0: usize, out: &mut [f32]| {
        let n = out.len() / cols.max(1);
        add_product(out, &f.p[r0 * f.k..(r0 + n) * f.k], &f.q, f.k);
        let first = f.sparse.partition_point(|e| e.0 < r0);
        for &(i, l, v) in f.sparse[first..].iter().take_while(|e| e.0 < r0 + n) {
            out[(i - r0) * cols + l] += v;
        }
    };
    map_row_blocks(weight, &add)
}

/// Δ̂ on `device` in the base orientation, f32: P·Q multiplied there (the
/// factors are what crosses to the device), plus the sparse part.
pub fn osd_delta(resident: &OsdResident, module: &ModuleInfo, device: &Device) -> Result<Tensor> {
    let f = factors(&resident.decode(&module.module)?, module.fan_in_fan_out);
    let p = Tensor::from_vec(f.p.clone(), (f.rows, f.k), device)?;
    let q = Tensor::from_vec(f.q.clone(), (f.k, f.cols), device)?;
    let delta = p
        .matmul(&q)
        .map_err(|e| RuntimeError::module(&module.module, e))?;
    if f.sparse.is_empty() {
        return Ok(delta);
    }
    let mut dense = vec![0f32; f.rows * f.cols];
    for &(i, l, v) in &f.sparse {
        dense[i * f.cols + l] += v;
    }
    Ok((delta + Tensor::from_vec(dense, (f.rows, f.cols), device)?)?)
}

/// An OSD section as ready tensors, for streaming: per module its factors
/// `{module}.osd.B` = λ·Û [n, k] and `{module}.osd.A` = V̂ᵀ [k, d] (a LoRA
/// module of scale 1 in the table), and for the blends their sparse part as
/// a dense `{module}.osd.S` [n, d] (kind OSD in the table).
pub fn osd_section_tensors(
    bytes: &[u8],
    layer: Option<u32>,
    device: &Device,
    want: Option<candle_core::DType>,
) -> Result<(Vec<(String, Tensor)>, crate::format::tensors::SectionTable)> {
    let mut tensors = Vec::new();
    let mut table = crate::format::tensors::SectionTable::default();
    for (mut info, resident) in osd_modules(bytes, layer)? {
        let osd = resident.decode(&info.module)?;
        let f = factors(&osd, false);
        let to = |v: Vec<f32>, shape: (usize, usize)| -> Result<Tensor> {
            let t = Tensor::from_vec(v, shape, device)?;
            Ok(match want {
                Some(dtype) => t.to_dtype(dtype)?,
                None => t,
            })
        };
        let (a, b) = (
            format!("{}.osd.A", info.module),
            format!("{}.osd.B", info.module),
        );
        tensors.push((b.clone(), to(f.p, (f.rows, f.k))?));
        tensors.push((a.clone(), to(f.q, (f.k, f.cols))?));
        info.tensors.insert("A".into(), a);
        info.tensors.insert("B".into(), b);
        if f.sparse.is_empty() {
            info.kind = ModuleKind::Lora;
        } else {
            let mut dense = vec![0f32; f.rows * f.cols];
            for &(i, l, v) in &f.sparse {
                dense[i * f.cols + l] += v;
            }
            let s = format!("{}.osd.S", info.module);
            tensors.push((s.clone(), to(dense, (f.rows, f.cols))?));
            info.tensors.insert("S".into(), s);
        }
        table.modules.push(info);
    }
    Ok((tensors, table))
}
