//! Host fast path of the fuse: the same formulas as the candle path in
//! `fuse.rs`, done one block of rows at a time in one pass over the base
//! weight (blocks in parallel for large weights). candle's element-wise CPU
//! ops each allocate and walk the whole tensor (and wake a thread pool) per
//! operation; here each block of W is copied once into W' and finished there
//! (GEMM for the low-rank product, per-row DoRA norms) while it is in cache:
//! W is read once and W' written once, the same traffic as a memcpy.

use std::mem::MaybeUninit;

use candle_core::{DType, Tensor};
use faer::{Accum, MatMut, MatRef, Par};
use half::{bf16, f16};
use rayon::prelude::*;

use super::device_tensors::with_host_storage;
use super::error::{Result, RuntimeError};

/// Weights smaller than this many elements are done on one thread.
const PARALLEL_ELEMS: usize = 1 << 20;

/// Bytes of W' one block of rows holds. The GEMM re-packs Q (rank × cols)
/// for every block, so blocks must be large next to Q, yet stay in L2 while
/// the GEMM and any per-row pass (DoRA) work on them: 1 MiB measured best
/// on 4096-wide weights (benches/fuse.rs: 128 KiB 21.5 ms, 512 KiB 31.6 ms,
/// 1 MiB 16.6 ms per 4096×4096 rank-16 module on a 2-core EPYC).
const BLOCK_BYTES: usize = 1 << 20;

/// A tensor's values as f32, on the host, row-major.
pub fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    fn widen<T: candle_core::WithDType>(
        cpu: &candle_core::CpuStorage,
        r: std::ops::Range<usize>,
        f: impl Fn(T) -> f32,
    ) -> Result<Vec<f32>> {
        Ok(cpu
            .as_slice::<T>()?
            .get(r)
            .unwrap_or(&[])
            .iter()
            .map(|v| f(*v))
            .collect())
    }
    with_host_storage(t, |cpu, r| match t.dtype() {
        DType::F32 => widen::<f32>(cpu, r, |v| v),
        DType::F16 => widen::<f16>(cpu, r, |v| v.to_f32()),
        DType::BF16 => widen::<bf16>(cpu, r, |v| v.to_f32()),
        DType::F64 => widen::<f64>(cpu, r, |v| v as f32),
        other => Err(RuntimeError::Invalid(format!(
            "cannot fuse into a {other:?} weight"
        ))),
    })
}

/// A block kernel: `(first row, W' rows)`, the rows already holding W.
pub type BlockFn<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// W' = f(W) for a 2-D weight, one block of rows at a time: each block of W
/// is copied once into the (uninitialised) output and `f` finishes it there
/// while it is in cache, so W is read once and W' written once: the traffic
/// of a memcpy. Blocks run in parallel for large weights. W is borrowed from
/// the tensor's host storage when it is contiguous f32 (no extra copy).
pub fn map_row_blocks(weight: &Tensor, f: &BlockFn<'_>) -> Result<Tensor> {
    let (rows, cols) = weight.dims2()?;
    let dtype = weight.dtype();
    let t = if dtype == DType::F32 {
        // Borrowed from the tensor's host storage: no copy before the fuse.
        with_host_storage(weight, |cpu, r| {
            let w = cpu.as_slice::<f32>()?.get(r).unwrap_or(&[]);
            copy_and_finish(w, rows, cols, f)
        })?
    } else {
        copy_and_finish(&host_f32(weight)?, rows, cols, f)?
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

/// The output of [`map_row_blocks`] for a row-major `[rows, cols]` W.
fn copy_and_finish(w: &[f32], rows: usize, cols: usize, f: &BlockFn<'_>) -> Result<Vec<f32>> {
    let n = rows
        .checked_mul(cols)
        .filter(|n| *n == w.len())
        .ok_or_else(|| {
            RuntimeError::Invalid(format!("weight of {rows}×{cols} has {} values", w.len()))
        })?;
    let mut out: Vec<f32> = Vec::with_capacity(n);
    if cols == 0 {
        return Ok(out);
    }
    let block_rows = (BLOCK_BYTES / 4 / cols).max(1);
    let block = block_rows * cols;
    let run = |b: usize, dst: &mut [MaybeUninit<f32>]| {
        let start = b * block;
        let filled = dst.write_copy_of_slice(&w[start..start + dst.len()]);
        f(b * block_rows, filled);
    };
    advise_huge_pages(&mut out);
    let spare = &mut out.spare_capacity_mut()[..n];
    if n >= PARALLEL_ELEMS {
        spare
            .par_chunks_mut(block)
            .enumerate()
            .for_each(|(b, dst)| run(b, dst));
    } else {
        for (b, dst) in spare.chunks_mut(block).enumerate() {
            run(b, dst);
        }
    }
    // SAFETY: the chunks above tile `spare[..n]` and `write_copy_of_slice`
    // initialised every element of each chunk.
    unsafe { out.set_len(n) };
    Ok(out)
}

/// Asks Linux to back a large, untouched output with transparent huge
/// pages: a 64 MB weight then takes 32 page faults instead of 16 384, which
/// is most of the cost of making a new tensor (THP in `madvise` mode is the
/// common default). A hint only: failure changes nothing.
fn advise_huge_pages(out: &mut Vec<f32>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let spare = out.spare_capacity_mut();
        if std::mem::size_of_val(spare) < 2 * HUGE {
            return;
        }
        let start = spare.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(spare);
        let (from, to) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if to > from {
            // SAFETY: [from, to) lies inside this Vec's own allocation, which
            // nothing else references; MADV_HUGEPAGE does not change its
            // contents or validity.
            unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = out;
}

/// `out += p · q` for a block of rows (`p` [rows, rank] and `out`
/// [rows, cols] row-major, `q` [rank, cols]), with faer's GEMM kernels: the
/// products stay in registers, W' is read and written once.
pub fn add_product(out: &mut [f32], p: &[f32], q: &[f32], rank: usize) {
    if rank == 0 || out.is_empty() {
        return;
    }
    let cols = q.len() / rank;
    let rows = out.len() / cols.max(1);
    faer::linalg::matmul::matmul(
        MatMut::from_row_major_slice_mut(out, rows, cols),
        Accum::Add,
        MatRef::from_row_major_slice(p, rows, rank),
        MatRef::from_row_major_slice(q, rank, cols),
        1.0f32,
        Par::Seq,
    );
}

/// DoRA's last step for rows stored as output rows: each row times
/// `m[row] / ‖row‖`. Compiled twice, for AVX2 and for the baseline, and
/// picked once at run time (the crate is built for baseline x86-64).
pub fn scale_rows_to_magnitude(out: &mut [f32], cols: usize, m: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *AVX2.get_or_init(|| std::arch::is_x86_feature_detected!("avx2")) {
            // SAFETY: the CPU supports AVX2 (checked above).
            unsafe { scale_rows_avx2(out, cols, m) };
            return;
        }
    }
    scale_rows(out, cols, m);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scale_rows_avx2(out: &mut [f32], cols: usize, m: &[f32]) {
    scale_rows(out, cols, m);
}

#[inline(always)]
fn scale_rows(out: &mut [f32], cols: usize, m: &[f32]) {
    for (row, m) in out.chunks_mut(cols.max(1)).zip(m) {
        let factor = m / (sum_squares(row).sqrt() as f32);
        for o in row.iter_mut() {
            *o *= factor;
        }
    }
}

/// Σ v², accurate to f64 summation for any length but at f32 SIMD speed:
/// 16 independent f32 lanes (vectorise; one running sum is bound by add
/// latency) over blocks of 1024 values, each block's sum carried in f64.
#[inline(always)]
pub fn sum_squares(v: &[f32]) -> f64 {
    const LANES: usize = 16;
    let mut total = 0f64;
    for block in v.chunks(1024) {
        let mut acc = [0f32; LANES];
        let chunks = block.chunks_exact(LANES);
        let rest: f32 = chunks.remainder().iter().map(|x| x * x).sum();
        for c in chunks {
            for (a, x) in acc.iter_mut().zip(c) {
                *a += x * x;
            }
        }
        total += acc.iter().map(|a| f64::from(*a)).sum::<f64>() + f64::from(rest);
    }
    total
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                    / (1u32 << 24) as f32
                    - 0.5
            })
            .collect()
    }

    /// Many blocks, the parallel path and the huge-page hint: every row of
    /// W + P·Q equals the naive sum (the blocks tile the output exactly).
    #[test]
    fn row_blocks_tile_a_large_weight() {
        let (rows, cols, rank) = (1031, 1024, 3);
        assert!(rows * cols >= PARALLEL_ELEMS);
        let w = values(rows * cols, 1);
        let (p, q) = (values(rows * rank, 2), values(rank * cols, 3));
        let weight = Tensor::from_vec(w.clone(), (rows, cols), &Device::Cpu).unwrap();
        let fused = map_row_blocks(&weight, &|r0, out| {
            let n = out.len() / cols;
            add_product(out, &p[r0 * rank..(r0 + n) * rank], &q, rank);
        })
        .unwrap();
        let got = fused.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for r in [0, 1, 31, 32, 33, 511, 1030] {
            for c in [0, 1, 511, 1023] {
                let want = w[r * cols + c]
                    + (0..rank)
                        .map(|k| p[r * rank + k] * q[k * cols + c])
                        .sum::<f32>();
                let g = got[r * cols + c];
                assert!((g - want).abs() <= 1e-6, "({r}, {c}): {g} vs {want}");
            }
        }
    }

    #[test]
    fn sum_squares_matches_f64_and_scaling_reaches_the_magnitude() {
        let v = values(10_007, 9);
        let exact: f64 = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum();
        assert!((sum_squares(&v) - exact).abs() <= exact * 1e-6);
        let cols = 10_007 / 7;
        let mut rows = v[..cols * 7].to_vec();
        let m: Vec<f32> = (1..=7).map(|k| k as f32).collect();
        scale_rows_to_magnitude(&mut rows, cols, &m);
        for (row, m) in rows.chunks(cols).zip(&m) {
            assert!((sum_squares(row).sqrt() as f32 - m).abs() <= 1e-4 * m);
        }
    }
}
