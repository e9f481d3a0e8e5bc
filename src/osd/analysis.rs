//! Per-module analysis cached once (SVD at the largest rank of interest,
//! energy curve, and, on first use, the sorted column tables), so that a new
//! point (method, dtype, rank, relaxation) is predicted in microseconds: what
//! the TUI sliders and `osd tune` need. `compress` then builds the exact
//! module and measures its error exactly (Gram traces for LoRA deltas).
//!
//! Every size here is bytes as written (see `module`); the paper's bit
//! count is carried beside it as `paper_bits`.

use std::sync::OnceLock;

use super::budget::trunc_svd_bits;
use super::delta::{DeltaForm, ModuleDelta};
use super::energy::energy_curve;
use super::error::OsdError;
use super::exact::{error2, lora_norm2};
use super::matrix::Matrix;
use super::module::{dense_module_bytes, sparse_module_bytes, OsdModule, Selector};
use super::precision::ValueDtype;
use super::svd::Svd;
use super::tables::{ColumnTables, Ranking};
use super::Csr;

/// A way to store a module's delta.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The adapter's own factors (LoRA/DoRA tensors), cast to the dtype.
    Lora,
    /// Dense rank-r factors of the delta's SVD.
    Truncsvd,
    /// OSD as published: sparsified factors at rank k = r + c in the bytes
    /// of a rank-r TruncSVD, entries kept by interleaved damage.
    Osd,
    /// Like osd, entries kept by magnitude (the paper's MagTruncSVD).
    Magtrunc,
    /// Dense rank-r factors plus the largest entries of the residual, weighted
    /// by α (a residual correction; `blend` before 0.5).
    #[value(alias = "blend")]
    LowrankSparse,
    /// The seed's blend: (1 − α)·Δ_r + α·(Δ_r ⊙ M), M the largest entries.
    MaskedBlend,
}

impl Method {
    /// Every method, in the order reports list them.
    pub const ALL: [Method; 6] = [
        Method::Lora,
        Method::Truncsvd,
        Method::Osd,
        Method::Magtrunc,
        Method::LowrankSparse,
        Method::MaskedBlend,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Lora => "lora",
            Method::Truncsvd => "truncsvd",
            Method::Osd => "osd",
            Method::Magtrunc => "magtrunc",
            Method::LowrankSparse => "lowrank-sparse",
            Method::MaskedBlend => "masked-blend",
        }
    }

    /// Sparsified factors whose size is set by a budget.
    pub fn is_budgeted(self) -> bool {
        matches!(self, Method::Osd | Method::Magtrunc)
    }

    /// Has a sparse n×d part (sparsity and α apply).
    pub fn has_sparse_part(self) -> bool {
        matches!(self, Method::LowrankSparse | Method::MaskedBlend)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One point of the tuning space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OsdParams {
    /// How modules are stored.
    pub method: Method,
    /// Precision of the stored values.
    pub dtype: ValueDtype,
    /// Rank r: of the dense factors (truncsvd, blends), or of the TruncSVD
    /// whose bytes are the budget (osd, magtrunc).
    pub rank: usize,
    /// osd, magtrunc: relaxation c (k = r + c); `None` searches c ≥ 0 per
    /// module for the smallest predicted error.
    pub relax: Option<usize>,
    /// Blends: fraction of the n·d entries in the sparse part.
    pub sparsity: f64,
    /// Blends: weight α of the sparse part.
    pub alpha: f32,
    /// osd, magtrunc: budget per module as the bytes of a TruncSVD of this
    /// (real) rank; `None` means `rank`. How `--max-bytes` fills a budget.
    pub budget_rank: Option<f64>,
    /// osd, magtrunc: explicit budget per module in bytes (overrides the rest).
    pub budget_bytes: Option<u64>,
}

impl Default for OsdParams {
    fn default() -> Self {
        Self {
            method: Method::Osd,
            dtype: ValueDtype::F32,
            rank: 4,
            relax: None,
            sparsity: 0.01,
            alpha: 1.0,
            budget_rank: None,
            budget_bytes: None,
        }
    }
}

/// Predicted (or measured) outcome of a point.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Estimate {
    /// Bytes of the stored modules as written (what the file pays).
    pub bytes: u64,
    /// The paper's bit count (32-bit values, ⌈log₂⌉-bit indices): for
    /// comparison with the paper only.
    pub paper_bits: u64,
    /// Relative Frobenius error ‖ΔW − Δ̂‖ / ‖ΔW‖.
    pub rel_error: f64,
    /// Largest relaxed rank k used.
    pub relaxed_rank: usize,
}

/// Everything cached about one module.
pub struct ModuleAnalysis {
    /// The module's delta.
    pub delta: ModuleDelta,
    /// Its SVD, up to `k_max` components.
    pub svd: Svd,
    /// Cumulative σ² share of ‖ΔW‖² after 1, 2, … components.
    pub energy: Vec<f64>,
    /// ‖ΔW‖² (exact: Gram traces for LoRA, f64 sums otherwise).
    pub total: f64,
    /// Calibration inputs X (m×d) when given: they weight the importance
    /// (activation-aware) and measure the layer-output error.
    pub calibration: Option<Matrix>,
    input_weight: Option<Vec<f32>>,
    /// ∂L/∂W of a task loss (n×d) when given: OSD then keeps entries by the
    /// paper's Taylor importance |weight × gradient| instead of the
    /// data-free damage.
    pub gradient: Option<Matrix>,
    /// Σ_{j<k} σ_j² for k = 0..=rank.
    head: Vec<f64>,
    tables: OnceLock<ColumnTables>,
    cast_error2: OnceLock<[f64; 3]>,
    exact_norm2: OnceLock<f64>,
}

impl ModuleAnalysis {
    /// SVD up to `k_max` components and the energy curve; the column tables
    /// are built on first use.
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
        // A small dense delta gets an exact, complete SVD anyway: keep every
        // singular value for the energy curve (r@99 % can lie past k_max)
        // and the factors up to k_max.
        let full = match &delta.form {
            DeltaForm::Dense(m) if m.rows.min(m.cols) <= super::delta::RANDOMIZED_ABOVE => {
                Some(delta.svd(usize::MAX)?)
            }
            _ => None,
        };
        let svd = match &full {
            Some(f) => f.truncated(k_max),
            None => delta.svd(k_max)?,
        };
        let spectrum: &[f32] = full.as_ref().map_or(&svd.s, |f| &f.s);
        let head: Vec<f64> = std::iter::once(0.0)
            .chain(svd.s.iter().scan(0.0f64, |acc, s| {
                *acc += f64::from(*s).powi(2);
                Some(*acc)
            }))
            .collect();
        // ‖ΔW‖² only scales relative errors (the exact errors compute their
        // own norms): a complete LoRA spectrum gives it without a pass.
        let total = match &delta.form {
            DeltaForm::LowRank { a, .. } if k_max >= a.rows => head.last().copied().unwrap_or(0.0),
            DeltaForm::LowRank { a, b, scale } => lora_norm2(a, b, *scale),
            DeltaForm::Dense(m) => m.data.iter().map(|v| f64::from(*v).powi(2)).sum(),
        };
        // Shares of the whole ‖ΔW‖², not of the components computed.
        let computed: f64 = spectrum.iter().map(|s| f64::from(*s).powi(2)).sum();
        let scale = computed / total.max(computed).max(f64::MIN_POSITIVE);
        let energy: Vec<f64> = energy_curve(spectrum).iter().map(|e| e * scale).collect();
        Ok(Self {
            delta,
            svd,
            energy,
            total: total.max(f64::MIN_POSITIVE),
            calibration,
            input_weight,
            gradient: None,
            head,
            tables: OnceLock::new(),
            cast_error2: OnceLock::new(),
            exact_norm2: OnceLock::new(),
        })
    }

    /// Adds the task-loss gradient ∂L/∂W (n×d; [in, out] is accepted for a
    /// `fan_in_fan_out` module and transposed).
    pub fn with_gradient(mut self, g: Matrix) -> Result<Self, OsdError> {
        let (n, d) = self.shape();
        let g = match (g.rows, g.cols) {
            (r, c) if (r, c) == (n, d) => g,
            (r, c) if (r, c) == (d, n) && self.delta.fan_in_fan_out => g.transpose(),
            (r, c) => {
                return Err(OsdError::shape(
                    "gradient",
                    format!(
                        "{}: gradient is {r}×{c}, the module is {n}×{d}",
                        self.delta.module
                    ),
                ))
            }
        };
        if !g.is_finite() {
            return Err(OsdError::NonFinite("gradient"));
        }
        self.gradient = Some(g);
        Ok(self)
    }

    /// (rows, columns) of the module's ΔW.
    pub fn shape(&self) -> (usize, usize) {
        self.delta.shape()
    }

    /// Components available.
    pub fn rank(&self) -> usize {
        self.svd.rank()
    }

    fn tables(&self) -> &ColumnTables {
        self.tables
            .get_or_init(|| ColumnTables::new(&self.svd, self.input_weight.as_deref()))
    }

    /// ‖ΔW − ΔW_cast‖² of the module's own tensors cast to `dtype`.
    pub fn cast_error2(&self, dtype: ValueDtype) -> f64 {
        let all = self.cast_error2.get_or_init(|| {
            match (&self.delta.stored.cast_error2, &self.delta.form) {
                (Some(known), _) => *known,
                (None, DeltaForm::LowRank { a, b, scale }) => {
                    ValueDtype::ALL.map(|dt| super::exact::lora_cast_error2(a, b, *scale, dt))
                }
                (None, DeltaForm::Dense(m)) => super::delta::Stored::dense(m)
                    .cast_error2
                    .unwrap_or_default(),
            }
        });
        all[dtype_index(dtype)]
    }

    /// ‖ΔW‖² not captured by the first `k` components.
    fn tail(&self, k: usize) -> f64 {
        let k = k.min(self.rank());
        (self.total - self.head[k]).max(0.0)
    }

    /// The byte budget of a budgeted point.
    pub fn budget(&self, p: &OsdParams) -> u64 {
        let (n, d) = self.shape();
        p.budget_bytes.unwrap_or_else(|| {
            let rho = p.budget_rank.unwrap_or(p.rank as f64).max(0.0);
            let per_rank = ((n + d) * p.dtype.bytes()) as f64;
            dense_module_bytes(n, d, 0, p.dtype) + (rho * per_rank) as u64
        })
    }

    /// Relaxed ranks tried for a budgeted point: k = r + c, c ≥ 0.
    fn relaxed_ranks(&self, p: &OsdParams) -> Vec<usize> {
        let top = self.rank().max(1);
        let r = p.rank.clamp(1, top);
        match p.relax {
            Some(c) => vec![(r + c).min(top)],
            None => (r..=top).collect(),
        }
    }

    /// Predicted error² and entries of a budgeted point at relaxed rank k.
    fn budgeted_at(&self, p: &OsdParams, k: usize, budget: u64) -> (f64, u64) {
        let (n, d) = self.shape();
        let q = 2.0 * p.dtype.rounding_variance();
        if budget >= dense_module_bytes(n, d, k, p.dtype) {
            // Whole factors (see `OsdModule::sparsified_by`).
            let head = self.head[k.min(self.rank())];
            return (self.tail(k) + q * head, ((n + d) * k) as u64);
        }
        let per_entry = 1 + p.dtype.bytes() as u64;
        let fixed = sparse_module_bytes(n, d, k, 0, p.dtype);
        let entries = budget.saturating_sub(fixed) / per_entry;
        let ranking = match p.method {
            Method::Magtrunc => Ranking::Magnitude,
            _ => Ranking::Damage,
        };
        let kept = self.tables().keep(k, entries, ranking);
        let err2 =
            self.tail(k) + (self.head[k.min(self.rank())] - kept.energy).max(0.0) + q * kept.energy;
        // The module keeps exactly what the budget pays for (the tables'
        // threshold can stop a few entries short): predict those bytes.
        let all = ((n + d) * k.min(self.rank())) as u64;
        (err2, entries.min(all).max(kept.entries))
    }

    /// The relaxed rank with the smallest predicted error for a budgeted point.
    pub fn relaxed_rank(&self, p: &OsdParams) -> usize {
        let budget = self.budget(p);
        // The error falls while a larger k buys more energy than its index
        // and row costs, then rises: stop two steps past the best.
        let (mut best, mut best_err, mut worse) = (1, f64::INFINITY, 0);
        for k in self.relaxed_ranks(p) {
            let err = self.budgeted_at(p, k, budget).0;
            if err < best_err {
                (best, best_err, worse) = (k, err, 0);
            } else {
                worse += 1;
                if worse == 2 {
                    break;
                }
            }
        }
        best
    }

    /// Fast prediction from the cached spectrum and tables.
    pub fn estimate(&self, p: &OsdParams) -> Estimate {
        let (n, d) = self.shape();
        let r = p.rank.clamp(1, self.rank().max(1));
        let q = 2.0 * p.dtype.rounding_variance();
        let sparse_nnz = ((n * d) as f64 * p.sparsity.clamp(0.0, 1.0)) as usize;
        let (bytes, paper_bits, err2, k) = match p.method {
            Method::Lora => {
                let s = &self.delta.stored;
                (
                    s.values.saturating_mul(p.dtype.bytes() as u64),
                    s.values * 32,
                    self.cast_error2(p.dtype),
                    s.rank,
                )
            }
            Method::Truncsvd => (
                dense_module_bytes(n, d, r, p.dtype),
                trunc_svd_bits(n, d, r),
                self.tail(r) + q * self.head[r.min(self.rank())],
                r,
            ),
            Method::Osd | Method::Magtrunc => {
                let budget = self.budget(p);
                let k = self.relaxed_rank(p);
                let (err2, entries) = self.budgeted_at(p, k, budget);
                let bytes = if entries == ((n + d) * k) as u64 {
                    dense_module_bytes(n, d, k, p.dtype)
                } else {
                    sparse_module_bytes(n, d, k, entries, p.dtype)
                };
                let index_bits = u64::from(super::budget::ceil_log2(((n.max(d)) * k) as u64));
                (bytes, entries * (32 + index_bits), err2, k)
            }
            Method::LowrankSparse | Method::MaskedBlend => {
                let sparse = 8 + Csr::encoded_len(n, d, sparse_nnz, p.dtype);
                let a = f64::from(p.alpha);
                let s = p.sparsity.clamp(0.0, 1.0);
                let e_r = self.head[r.min(self.rank())];
                let err2 = if p.method == Method::LowrankSparse {
                    // Assumes the kept share of the residual's energy equals
                    // the kept share of its entries (pessimistic).
                    self.tail(r) * (1.0 - a * (2.0 - a) * s)
                } else {
                    // Δ_r scaled by (1 − α) outside the mask.
                    self.tail(r) + a * a * e_r * (1.0 - s).powi(2)
                };
                (
                    dense_module_bytes(n, d, r, p.dtype) + sparse,
                    trunc_svd_bits(n, d, r)
                        + sparse_nnz as u64
                            * (32 + u64::from(super::budget::ceil_log2((n * d) as u64))),
                    err2 + q * e_r,
                    r,
                )
            }
        };
        Estimate {
            bytes,
            paper_bits,
            rel_error: (err2 / self.total).sqrt(),
            relaxed_rank: k,
        }
    }

    /// The exact compressed module for a point, with its measured bytes and
    /// error. `input_weight` overrides the calibration's weighting when given.
    /// (`Method::Lora` keeps the adapter's tensors: there is no module.)
    pub fn compress(
        &self,
        p: &OsdParams,
        input_weight: Option<&[f32]>,
    ) -> Result<(OsdModule, Estimate), OsdError> {
        let input_weight = input_weight.or(self.input_weight.as_deref());
        let (n, d) = self.shape();
        let r = p.rank.clamp(1, self.rank().max(1));
        let nnz = ((n * d) as f64 * p.sparsity.clamp(0.0, 1.0)) as usize;
        let module = match p.method {
            Method::Lora => {
                return Err(OsdError::param(
                    "method",
                    "lora keeps the adapter's tensors; it has no OSD module",
                ))
            }
            Method::Truncsvd => OsdModule::trunc_svd(&self.svd, r, p.dtype)?,
            Method::Osd | Method::Magtrunc => {
                let k = self.relaxed_rank(p);
                let by = match p.method {
                    Method::Magtrunc => Selector::Magnitude,
                    _ => Selector::Damage,
                };
                match (&self.gradient, by) {
                    (Some(g), Selector::Damage) => OsdModule::sparsified_by(
                        &self.svd,
                        r.min(k),
                        k,
                        self.budget(p),
                        p.dtype,
                        super::OsdMethod::Published,
                        |f| taylor_scores(f, g),
                    )?,
                    _ => OsdModule::sparsified(
                        &self.svd,
                        r.min(k),
                        k,
                        self.budget(p),
                        p.dtype,
                        input_weight,
                        by,
                    )?,
                }
            }
            Method::LowrankSparse => OsdModule::low_rank_sparse(
                &self.delta.dense()?,
                &self.svd,
                r,
                nnz,
                p.alpha,
                p.dtype,
                input_weight,
            )?,
            Method::MaskedBlend => {
                OsdModule::masked_blend(&self.delta.dense()?, &self.svd, r, nnz, p.alpha, p.dtype)?
            }
        };
        let norm2 = *self.exact_norm2.get_or_init(|| match &self.delta.form {
            DeltaForm::LowRank { a, b, scale } => lora_norm2(a, b, *scale),
            DeltaForm::Dense(_) => self.total,
        });
        let err2 = error2(&self.delta, &module, norm2)?;
        let estimate = Estimate {
            bytes: module.encoded_len(),
            paper_bits: module.storage_bits(),
            rel_error: (err2 / self.total).sqrt(),
            relaxed_rank: module.relaxed_rank(),
        };
        Ok((module, estimate))
    }
}

/// The paper's Taylor importance of factor entries: the first-order change
/// of the task loss when an entry is zeroed, |Û[i,j]·(G·v̂_j)_i| and
/// |V̂ᵀ[j,l]·(Gᵀ·û_j)_l| with G = ∂L/∂W.
fn taylor_scores(
    f: &super::importance::Factors,
    g: &Matrix,
) -> Result<(Vec<f64>, Vec<f64>), OsdError> {
    let gv = g.matmul(&f.vt.transpose())?; // n×k
    let gtu = g.transpose().matmul(&f.u)?; // d×k
    let su =
        f.u.data
            .iter()
            .zip(&gv.data)
            .map(|(w, s)| (f64::from(*w) * f64::from(*s)).abs())
            .collect();
    let d = f.vt.cols;
    let sv =
        f.vt.data
            .iter()
            .enumerate()
            .map(|(idx, w)| (f64::from(*w) * f64::from(gtu.get(idx % d, idx / d))).abs())
            .collect();
    Ok((su, sv))
}

/// Index of a dtype in `Stored::cast_error2`.
pub fn dtype_index(dtype: ValueDtype) -> usize {
    match dtype {
        ValueDtype::F32 => 0,
        ValueDtype::Bf16 => 1,
        ValueDtype::F16 => 2,
    }
}

/// Relative error of the layer output on inputs `x` (m×d):
/// ‖X ΔWᵀ − X Δ̂ᵀ‖ / ‖X ΔWᵀ‖.
pub fn output_error(x: &Matrix, delta: &Matrix, approx: &Matrix) -> Result<f64, OsdError> {
    let reference = x.matmul(&delta.transpose())?;
    let got = x.matmul(&approx.transpose())?;
    super::matrix::relative_frobenius_error(&reference, &got)
}

/// Deterministic Gaussian calibration inputs (m×d) for when none are given.
pub fn synthetic_inputs(m: usize, d: usize, seed: u64) -> Matrix {
    let mut rng = super::rng::XorShift::new(seed);
    Matrix::from_fn(m, d, |_, _| rng.gaussian() as f32)
}

/// Aggregates module estimates: total bytes, energy-weighted error.
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
        bytes: modules.iter().map(|(_, e)| e.bytes).sum(),
        paper_bits: modules.iter().map(|(_, e)| e.paper_bits).sum(),
        rel_error: (err2 / total).sqrt(),
        relaxed_rank: modules
            .iter()
            .map(|(_, e)| e.relaxed_rank)
            .max()
            .unwrap_or(0),
    }
}
