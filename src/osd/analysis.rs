//! Per-module analysis cached once (SVD at the largest rank of interest,
//! energy curve, importance lists sorted once), so that a new (rank,
//! sparsity) point is re-evaluated in microseconds: what the TUI slider and
//! `osd tune` need. `compress` then produces the exact module.

use super::budget::{ceil_log2, trunc_svd_bits};
use super::delta::{DeltaForm, ModuleDelta};
use super::energy::{energy_curve, total_energy};
use super::error::OsdError;
use super::importance::{fold_sqrt_sigma, interleaved_importance};
use super::matrix::{relative_frobenius_error, Matrix};
use super::module::OsdModule;
use super::svd::Svd;

/// Which OSD method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// As published: sparsified factors at a relaxed rank within a budget.
    Osd,
    /// Low-rank + sparse residual correction, blended by α.
    Blend,
}

/// One point of the tuning space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OsdParams {
    /// Published OSD or the blend.
    pub method: Method,
    /// Rank r: the dense TruncSVD whose storage is the budget (osd), or the
    /// low-rank part (blend).
    pub rank: usize,
    /// osd: fraction of the relaxed-rank factor entries pruned; blend:
    /// fraction of the n·d residual entries kept as the sparse correction.
    pub sparsity: f64,
    /// blend: weight α of the sparse correction.
    pub alpha: f32,
    /// osd: explicit budget in bits per module (default: TruncSVD at rank r).
    pub budget_bits: Option<u64>,
}

impl Default for OsdParams {
    fn default() -> Self {
        Self {
            method: Method::Osd,
            rank: 4,
            sparsity: 0.5,
            alpha: 1.0,
            budget_bits: None,
        }
    }
}

/// Predicted (or measured) outcome of a point.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Estimate {
    /// Storage in bits (paper accounting).
    pub bits: u64,
    /// Share of ‖ΔW‖² kept: 1 − err²/‖ΔW‖².
    pub energy_kept: f64,
    /// Relative Frobenius error ‖ΔW − Δ̂‖ / ‖ΔW‖.
    pub rel_error: f64,
    /// The relaxed rank k used.
    pub relaxed_rank: usize,
}

/// Everything cached about one module.
pub struct ModuleAnalysis {
    /// The module's delta.
    pub delta: ModuleDelta,
    /// Its SVD, up to `k_max` components.
    pub svd: Svd,
    /// Cumulative σ² share after 1, 2, … components.
    pub energy: Vec<f64>,
    /// ‖ΔW‖².
    pub total: f64,
    /// (importance, column) of Û and V̂ᵀ entries, sorted by importance, descending.
    u_sorted: Vec<(f64, u32)>,
    vt_sorted: Vec<(f64, u32)>,
    /// Calibration inputs X (m×d) when given: they weight the importance
    /// (activation-aware) and measure the layer-output error.
    pub calibration: Option<Matrix>,
    input_weight: Option<Vec<f32>>,
    /// Total importance of each component (both factors): the damage of
    /// dropping everything at rank < k is a prefix sum, not a scan.
    column_importance: Vec<f64>,
}

impl ModuleAnalysis {
    /// SVD up to `k_max` components and the sorted importance lists.
    pub fn new(
        delta: ModuleDelta,
        k_max: usize,
        calibration: Option<Matrix>,
    ) -> Result<Self, OsdError> {
        let input_weight = match &calibration {
            Some(x) if x.cols == delta.shape().1 => Some(super::importance::input_second_moment(x)),
            Some(x) => {
                return Err(OsdError::shape(
                    "calibration",
                    format!(
                        "{}: inputs have {} columns, the module takes {}",
                        delta.module,
                        x.cols,
                        delta.shape().1
                    ),
                ))
            }
            None => None,
        };
        let svd = delta.svd(k_max)?;
        // ‖ΔW‖²: a LoRA delta's SVD is exact and complete when k_max ≥ r, so
        // Σσ² is the norm without forming ΔW; otherwise measure it densely.
        let complete = match &delta.form {
            DeltaForm::LowRank { a, .. } => k_max >= a.rows,
            DeltaForm::Dense(_) => false,
        };
        let total = if complete {
            total_energy(&svd.s)
        } else {
            delta
                .dense()?
                .frobenius_norm()
                .powi(2)
                .max(total_energy(&svd.s))
        };
        // Shares of the whole ‖ΔW‖², not of the components computed.
        let scale = total_energy(&svd.s) / total.max(f64::MIN_POSITIVE);
        let energy: Vec<f64> = energy_curve(&svd.s).iter().map(|e| e * scale).collect();
        let imp = interleaved_importance(&fold_sqrt_sigma(&svd), input_weight.as_deref())?;
        let k = imp.k.max(1);
        let mut u_sorted: Vec<(f64, u32)> = imp
            .u
            .iter()
            .enumerate()
            .map(|(i, v)| (*v, (i % k) as u32))
            .collect();
        let mut vt_sorted: Vec<(f64, u32)> = imp
            .vt
            .iter()
            .enumerate()
            .map(|(i, v)| (*v, (i / imp.d.max(1)) as u32))
            .collect();
        u_sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
        vt_sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut column_importance = vec![0.0f64; svd.rank()];
        for &(imp, col) in u_sorted.iter().chain(&vt_sorted) {
            if let Some(slot) = column_importance.get_mut(col as usize) {
                *slot += imp;
            }
        }
        Ok(Self {
            column_importance,
            delta,
            svd,
            energy,
            total,
            u_sorted,
            vt_sorted,
            calibration,
            input_weight,
        })
    }

    /// (rows, columns) of the module's ΔW.
    pub fn shape(&self) -> (usize, usize) {
        self.delta.shape()
    }

    /// ‖ΔW‖² not captured by the first `k` components.
    fn tail(&self, k: usize) -> f64 {
        let kept: f64 = self
            .svd
            .s
            .iter()
            .take(k)
            .map(|s| f64::from(*s).powi(2))
            .sum();
        (self.total - kept).max(0.0)
    }

    /// The budget of an osd point.
    pub fn budget(&self, p: &OsdParams) -> u64 {
        let (n, d) = self.shape();
        p.budget_bits
            .unwrap_or_else(|| trunc_svd_bits(n, d, p.rank))
    }

    /// The relaxed rank k whose factors, with a share `sparsity` pruned,
    /// fill the budget.
    pub fn relaxed_rank(&self, p: &OsdParams) -> usize {
        let (n, d) = self.shape();
        let budget = self.budget(p) as f64;
        let keep = (1.0 - p.sparsity.clamp(0.0, 0.999)).max(1e-3);
        let mut best = 1;
        for k in 1..=self.svd.rank() {
            let cu = 32 + ceil_log2((n * k) as u64) as usize;
            let cv = 32 + ceil_log2((d * k) as u64) as usize;
            if keep * (k * (n * cu + d * cv)) as f64 <= budget {
                best = k;
            }
        }
        best
    }

    /// Fast prediction from the cached spectrum and importance (the
    /// interaction of pruning both factors is neglected: see importance.rs).
    pub fn estimate(&self, p: &OsdParams) -> Estimate {
        let (n, d) = self.shape();
        match p.method {
            Method::Osd => {
                let k = self.relaxed_rank(p);
                let budget = self.budget(p);
                let cu = 32 + u64::from(ceil_log2((n * k) as u64));
                let cv = 32 + u64::from(ceil_log2((d * k) as u64));
                let (mut bits, mut kept) = (0u64, 0.0f64);
                let mut u = self
                    .u_sorted
                    .iter()
                    .filter(|e| (e.1 as usize) < k)
                    .peekable();
                let mut v = self
                    .vt_sorted
                    .iter()
                    .filter(|e| (e.1 as usize) < k)
                    .peekable();
                let (mut u_open, mut v_open) = (true, true);
                while u_open || v_open {
                    let take_u = match (
                        u_open.then(|| u.peek()).flatten(),
                        v_open.then(|| v.peek()).flatten(),
                    ) {
                        (Some(a), Some(b)) => a.0 >= b.0,
                        (Some(_), None) => true,
                        (None, Some(_)) => false,
                        (None, None) => break,
                    };
                    let (cost, next) = if take_u {
                        (cu, u.peek())
                    } else {
                        (cv, v.peek())
                    };
                    let Some(&&(imp, _)) = next else { break };
                    if imp <= 0.0 || bits + cost > budget {
                        if take_u {
                            u_open = false
                        } else {
                            v_open = false
                        }
                        continue;
                    }
                    bits += cost;
                    kept += imp;
                    if take_u {
                        u.next();
                    } else {
                        v.next();
                    }
                }
                let all: f64 = self.column_importance.iter().take(k).sum();
                let err2 = self.tail(k) + (all - kept).max(0.0);
                self.finish(bits, err2, k)
            }
            Method::Blend => {
                let r = p.rank.min(self.svd.rank());
                let nnz = ((n * d) as f64 * p.sparsity.clamp(0.0, 1.0)) as u64;
                let bits =
                    trunc_svd_bits(n, d, r) + nnz * (32 + u64::from(ceil_log2((n * d) as u64)));
                // Without the residual's entries, assume the kept share of the
                // residual energy equals the kept share of its entries.
                let tail = self.tail(r);
                let a = f64::from(p.alpha);
                let err2 = tail * (1.0 - a * (2.0 - a) * p.sparsity.clamp(0.0, 1.0));
                self.finish(bits, err2, r)
            }
        }
    }

    fn finish(&self, bits: u64, err2: f64, k: usize) -> Estimate {
        let total = self.total.max(f64::MIN_POSITIVE);
        Estimate {
            bits,
            energy_kept: (1.0 - err2 / total).clamp(0.0, 1.0),
            rel_error: (err2 / total).sqrt(),
            relaxed_rank: k,
        }
    }

    /// The exact compressed module for a point, with its measured estimate.
    /// `input_weight` overrides the calibration's weighting when given.
    pub fn compress(
        &self,
        p: &OsdParams,
        input_weight: Option<&[f32]>,
    ) -> Result<(OsdModule, Estimate), OsdError> {
        let input_weight = input_weight.or(self.input_weight.as_deref());
        let dense = self.delta.dense()?;
        let (n, d) = self.shape();
        let module = match p.method {
            Method::Osd => {
                let k = self.relaxed_rank(p);
                OsdModule::published(&self.svd, p.rank.min(k), k, self.budget(p), input_weight)?
            }
            Method::Blend => {
                let r = p.rank.min(self.svd.rank());
                let nnz = ((n * d) as f64 * p.sparsity.clamp(0.0, 1.0)) as usize;
                OsdModule::blend(&dense, &self.svd, r, nnz, p.alpha, input_weight)?
            }
        };
        let rel = relative_frobenius_error(&dense, &module.reconstruct())?;
        let estimate = Estimate {
            bits: module.storage_bits(),
            energy_kept: (1.0 - rel * rel).clamp(0.0, 1.0),
            rel_error: rel,
            relaxed_rank: module.relaxed_rank(),
        };
        Ok((module, estimate))
    }
}

/// Relative error of the layer output on inputs `x` (m×d):
/// ‖X ΔWᵀ − X Δ̂ᵀ‖ / ‖X ΔWᵀ‖.
pub fn output_error(x: &Matrix, delta: &Matrix, approx: &Matrix) -> Result<f64, OsdError> {
    let reference = x.matmul(&delta.transpose())?;
    let got = x.matmul(&approx.transpose())?;
    relative_frobenius_error(&reference, &got)
}

/// Deterministic Gaussian calibration inputs (m×d) for when none are given.
pub fn synthetic_inputs(m: usize, d: usize, seed: u64) -> Matrix {
    let mut rng = super::rng::XorShift::new(seed);
    Matrix::from_fn(m, d, |_, _| rng.gaussian() as f32)
}

/// Aggregates module estimates: total bits, energy-weighted error.
pub fn aggregate(modules: &[(&ModuleAnalysis, Estimate)]) -> Estimate {
    let total: f64 = modules
        .iter()
        .map(|(m, _)| m.total)
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    let err2: f64 = modules
        .iter()
        .map(|(m, e)| e.rel_error.powi(2) * m.total)
        .sum();
    Estimate {
        bits: modules.iter().map(|(_, e)| e.bits).sum(),
        energy_kept: (1.0 - err2 / total).clamp(0.0, 1.0),
        rel_error: (err2 / total).sqrt(),
        relaxed_rank: modules
            .iter()
            .map(|(_, e)| e.relaxed_rank)
            .max()
            .unwrap_or(0),
    }
}
