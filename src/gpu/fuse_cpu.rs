//! Host fast path of the fuse: the same formulas as the candle path in
//! `fuse.rs`, done row by row in one pass over the base weight (rows in
//! parallel for large weights). candle's element-wise CPU ops each allocate
//! and walk the whole tensor (and wake a thread pool) per operation; here a
//! row of Δ lives in a small buffer and W is read once and W' written once,
//! the same traffic as a memcpy.

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use super::error::{Result, RuntimeError};

/// Weights smaller than this many elements are done on one thread.
const PARALLEL_ELEMS: usize = 1 << 20;

/// A tensor's values as f32, on the host, row-major.
pub fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    let t = t.to_device(&Device::Cpu)?.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return Err(RuntimeError::Invalid("tensor is not on the host".into()));
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| RuntimeError::Invalid("tensor is not contiguous".into()))?;
    Ok(match t.dtype() {
        DType::F32 => cpu.as_slice::<f32>()?[start..end].to_vec(),
        DType::F16 => cpu.as_slice::<f16>()?[start..end]
            .iter()
            .map(|v| v.to_f32())
            .collect(),
        DType::BF16 => cpu.as_slice::<bf16>()?[start..end]
            .iter()
            .map(|v| v.to_f32())
            .collect(),
        DType::F64 => cpu.as_slice::<f64>()?[start..end]
            .iter()
            .map(|v| *v as f32)
            .collect(),
        other => {
            return Err(RuntimeError::Invalid(format!(
                "cannot fuse into a {other:?} weight"
            )))
        }
    })
}

/// A per-row kernel: `(row index, W row, W' row)`.
pub type RowFn<'a> = dyn Fn(usize, &[f32], &mut [f32]) + Sync + 'a;

/// Runs `f(row_index, w_row, out_row)` over every row, borrowing W from the
/// tensor's host storage when it is f32 (no copy), and returns W' as a
/// tensor of W's dtype.
pub fn map_rows(weight: &Tensor, f: &RowFn<'_>) -> Result<Tensor> {
    let (rows, cols) = weight.dims2()?;
    let dtype = weight.dtype();
    let mut out = vec![0f32; rows * cols];
    let run = |w: &[f32], out: &mut [f32]| {
        if cols == 0 {
            return;
        }
        if rows * cols >= PARALLEL_ELEMS {
            let per = (PARALLEL_ELEMS / 16 / cols).max(1);
            out.par_chunks_mut(per * cols)
                .enumerate()
                .for_each(|(c, chunk)| {
                    for (k, o) in chunk.chunks_mut(cols).enumerate() {
                        let r = c * per + k;
                        f(r, &w[r * cols..(r + 1) * cols], o);
                    }
                });
        } else {
            for (r, o) in out.chunks_mut(cols).enumerate() {
                f(r, &w[r * cols..(r + 1) * cols], o);
            }
        }
    };
    let t = if dtype == DType::F32 && weight.device().is_cpu() && weight.is_contiguous() {
        let (storage, layout) = weight.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            return Err(RuntimeError::Invalid("tensor is not on the host".into()));
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| RuntimeError::Invalid("tensor is not contiguous".into()))?;
        run(&cpu.as_slice::<f32>()?[start..end], &mut out);
        drop(storage);
        out
    } else {
        let w = host_f32(weight)?;
        run(&w, &mut out);
        out
    };
    let shape = (rows, cols);
    let device = weight.device();
    Ok(match dtype {
        DType::F32 => Tensor::from_vec(t, shape, device)?,
        DType::F16 => {
            Tensor::from_vec(t.iter().map(|v| f16::from_f32(*v)).collect(), shape, device)?
        }
        DType::BF16 => Tensor::from_vec(
            t.iter().map(|v| bf16::from_f32(*v)).collect(),
            shape,
            device,
        )?,
        other => Tensor::from_vec(t, shape, device)?.to_dtype(other)?,
    })
}

/// Δ row `r` = Σ_k p[r, k] · q[k, :] into `d` (p [rows, rank], q [rank, cols]).
/// Uses AVX2 + FMA when the CPU has them (checked once at run time).
#[inline]
pub fn delta_row(p: &[f32], q: &[f32], rank: usize, r: usize, d: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        static FMA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let fma = *FMA.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        });
        if fma {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            unsafe { delta_row_fma(p, q, rank, r, d) };
            return;
        }
    }
    delta_row_plain(p, q, rank, r, d);
}

#[inline(always)]
fn delta_row_plain(p: &[f32], q: &[f32], rank: usize, r: usize, d: &mut [f32]) {
    let cols = d.len();
    d.fill(0.0);
    for k in 0..rank {
        let c = p[r * rank + k];
        let qk = &q[k * cols..(k + 1) * cols];
        for (x, y) in d.iter_mut().zip(qk) {
            *x += c * y;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn delta_row_fma(p: &[f32], q: &[f32], rank: usize, r: usize, d: &mut [f32]) {
    let cols = d.len();
    d.fill(0.0);
    for k in 0..rank {
        let c = p[r * rank + k];
        let qk = &q[k * cols..(k + 1) * cols];
        for (x, y) in d.iter_mut().zip(qk) {
            *x = c.mul_add(*y, *x);
        }
    }
}

/// Σ v² in f64, with eight independent accumulators (vectorizes; a single
/// running sum is bound by the latency of each add).
pub fn sum_squares(v: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let rest: f64 = chunks
        .remainder()
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += f64::from(*x) * f64::from(*x);
        }
    }
    acc.iter().sum::<f64>() + rest
}

/// Transposes a row-major [rows, cols] matrix.
pub fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}
