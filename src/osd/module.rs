//! One compressed module: the stored form of a compressed delta, its checked
//! byte layout, exact reconstruction and fusion into a base weight.
//!
//! The delta is `Δ̂ = λ·U·Vt + α·S` with U (n×k) and Vt (k×d) in CSR and
//! values in one precision ([`ValueDtype`]). λ is 1 except for the masked
//! blend (1 − α). Methods:
//! - **OSD** (published): sparsified `U√Σ`, `√Σ Vᵀ` at a relaxed rank
//!   k = r + c, entries kept by interleaved damage within a byte budget;
//! - **MagTruncSVD**: the same factors pruned by magnitude (the paper's baseline);
//! - **TruncSVD**: dense rank-r factors;
//! - **low rank + sparse**: dense rank-r factors plus the top entries S of the
//!   residual ΔW − Δ_r, weighted by α (a residual correction);
//! - **masked blend** (the seed's variant): Δ = UΣVᵀ at rank r,
//!   Δ' = Δ ⊙ M, Δ_final = (1 − α)·Δ + α·Δ' with M the largest |Δ| entries;
//!   S stores Δ'.
//!
//! Δ is out×in (n×d) like the base weight; a Conv1D base (`fan_in_fan_out`)
//! is the caller's to transpose.
//!
//! Byte layout (little-endian), version 2: `"OSDM"`, version u16, method u8
//! (0 OSD, 1 low rank + sparse, 2 TruncSVD, 3 MagTruncSVD, 4 masked blend),
//! dtype u8 (0 f32, 1 bf16, 2 f16), n, d, rank, relaxed_rank, budget (u64
//! each: bytes), α (f32), then U (n×k) and V = Vtᵀ (d×k) as (u64 length,
//! CSR bytes), then a u8 flag and, when 1, S as (u64 length, CSR bytes).
//! Nothing may follow. Storing V rather than Vt keeps every column index
//! below k, so each kept entry costs one index byte. Version 1 (method 0 or
//! 1 only, reserved byte 0, budget in bits, Vt stored as is, f32) is read.

use rayon::prelude::*;

use super::blend::sparse_residual;
use super::budget::{ceil_log2, osd_bits, trunc_svd_bits};
use super::csr::Cursor;
use super::importance::{fold_sqrt_sigma, interleaved_importance, Factors};
use super::precision::ValueDtype;
use super::{relative_frobenius_error, Csr, Matrix, OsdError, Svd};

const MAGIC: &[u8; 4] = b"OSDM";
const VERSION: u16 = 2;
/// Largest n·d accepted (2³⁴ ≈ 17 G elements): keeps a hostile header from
/// requesting an absurd reconstruction.
const MAX_ELEMENTS: u64 = 1 << 34;
/// Rows per rayon task in reconstruction and fusion.
const ROW_BLOCK: usize = 16;
/// Bytes of a version-2 module besides its CSRs: the 52-byte header, two
/// CSR lengths and the residual flag.
pub const MODULE_FIXED_BYTES: u64 = 52 + 8 + 8 + 1;

/// How the delta was compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsdMethod {
    /// Sparsified rank-(r + c) factors chosen by interleaved damage.
    Published,
    /// Dense rank-r factors plus a weighted sparse residual.
    LowRankSparse,
    /// Dense rank-r factors.
    TruncSvd,
    /// Rank-(r + c) factors pruned by magnitude.
    MagTrunc,
    /// (1 − α)·Δ_r + α·(Δ_r ⊙ M).
    MaskedBlend,
}

impl OsdMethod {
    fn code(self) -> u8 {
        match self {
            OsdMethod::Published => 0,
            OsdMethod::LowRankSparse => 1,
            OsdMethod::TruncSvd => 2,
            OsdMethod::MagTrunc => 3,
            OsdMethod::MaskedBlend => 4,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => OsdMethod::Published,
            1 => OsdMethod::LowRankSparse,
            2 => OsdMethod::TruncSvd,
            3 => OsdMethod::MagTrunc,
            4 => OsdMethod::MaskedBlend,
            _ => return None,
        })
    }

    /// The delta is exactly U·Vt: exportable as LoRA factors.
    pub fn is_low_rank(self) -> bool {
        matches!(
            self,
            OsdMethod::Published | OsdMethod::TruncSvd | OsdMethod::MagTrunc
        )
    }
}

/// How the entries of sparsified factors are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// Interleaved damage (OSD).
    Damage,
    /// Absolute value (MagTruncSVD).
    Magnitude,
}

/// A compressed delta (see the module doc). Fields are private so every
/// value satisfies the invariants checked by `validated`.
#[derive(Debug, Clone, PartialEq)]
pub struct OsdModule {
    method: OsdMethod,
    dtype: ValueDtype,
    n: usize,
    d: usize,
    rank: usize,
    relaxed_rank: usize,
    budget_bytes: u64,
    sparse_weight: f32,
    u: Csr,
    vt: Csr,
    residual: Option<Csr>,
}

fn malformed(detail: impl Into<String>) -> OsdError {
    OsdError::malformed("OSD module", detail)
}

/// Bytes of one index in a factor of rank k (columns of U and V).
fn index_bytes(k: usize) -> u64 {
    if k <= 256 {
        1
    } else if k <= 65_536 {
        2
    } else {
        4
    }
}

/// Bytes a sparsified module with `kept` factor entries takes (exact when
/// neither factor is kept whole, which is smaller still).
pub fn sparse_module_bytes(n: usize, d: usize, k: usize, kept: u64, dtype: ValueDtype) -> u64 {
    let (n, d) = (n as u64, d as u64);
    let row_len = if k < 256 { 1 } else { 2 };
    MODULE_FIXED_BYTES
        + 80
        + (n + d) * row_len
        + kept.saturating_mul(index_bytes(k) + dtype.bytes() as u64)
}

/// Bytes of a dense rank-r module (TruncSVD).
pub fn dense_module_bytes(n: usize, d: usize, r: usize, dtype: ValueDtype) -> u64 {
    MODULE_FIXED_BYTES + 80 + ((n + d) * r * dtype.bytes()) as u64
}

/// Entries of `scores_u` and `scores_vt` kept: the `count` largest of both
/// together (ties by position, so the choice is deterministic); entries
/// scoring 0 are never kept.
fn top_entries(scores_u: &[f64], scores_vt: &[f64], count: usize) -> (Vec<bool>, Vec<bool>) {
    let nu = scores_u.len();
    let mut all: Vec<(f64, usize)> = scores_u
        .iter()
        .chain(scores_vt)
        .copied()
        .enumerate()
        .map(|(i, s)| (s, i))
        .filter(|(s, _)| *s > 0.0)
        .collect();
    let by_rank = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if count < all.len() {
        all.select_nth_unstable_by(count, by_rank);
        all.truncate(count);
    }
    let mut keep_u = vec![false; nu];
    let mut keep_vt = vec![false; scores_vt.len()];
    for (_, i) in all {
        match i.checked_sub(nu) {
            None => keep_u[i] = true,
            Some(j) => keep_vt[j] = true,
        }
    }
    (keep_u, keep_vt)
}

impl OsdModule {
    /// Dense rank-`rank` factors (TruncSVD) with values in `dtype`.
    pub fn trunc_svd(svd: &Svd, rank: usize, dtype: ValueDtype) -> Result<Self, OsdError> {
        let f = Self::factors(svd, rank)?;
        Self::validated(Self {
            method: OsdMethod::TruncSvd,
            dtype,
            n: svd.u.rows,
            d: svd.vt.cols,
            rank,
            relaxed_rank: rank,
            budget_bytes: dense_module_bytes(svd.u.rows, svd.vt.cols, rank, dtype),
            sparse_weight: 0.0,
            u: Csr::from_dense(&f.u)?.rounded(dtype)?,
            vt: Csr::from_dense(&f.vt)?.rounded(dtype)?,
            residual: None,
        })
    }

    /// OSD (by damage) or MagTruncSVD (by magnitude): the rank-`relaxed_rank`
    /// factors with Σ folded in, keeping as many entries as `budget_bytes`
    /// pays for (every kept entry costs the same: one index byte and one
    /// value, so damage per byte orders like damage). `svd` must hold at
    /// least `relaxed_rank` components.
    #[allow(clippy::too_many_arguments)]
    pub fn sparsified(
        svd: &Svd,
        rank: usize,
        relaxed_rank: usize,
        budget_bytes: u64,
        dtype: ValueDtype,
        input_weight: Option<&[f32]>,
        by: Selector,
    ) -> Result<Self, OsdError> {
        let method = match by {
            Selector::Damage => OsdMethod::Published,
            Selector::Magnitude => OsdMethod::MagTrunc,
        };
        Self::sparsified_by(svd, rank, relaxed_rank, budget_bytes, dtype, method, |f| {
            Ok(match by {
                Selector::Damage => {
                    let imp = interleaved_importance(f, input_weight)?;
                    (imp.u, imp.vt)
                }
                Selector::Magnitude => {
                    let abs = |m: &Matrix| m.data.iter().map(|v| f64::from(v.abs())).collect();
                    (abs(&f.u), abs(&f.vt))
                }
            })
        })
    }

    /// Sparsified factors kept by any per-entry score (`scores` gets the
    /// Σ-folded factors and returns scores laid out like them): OSD's
    /// damage, magnitude, or the paper's Taylor importance with gradients.
    #[allow(clippy::too_many_arguments)]
    pub fn sparsified_by(
        svd: &Svd,
        rank: usize,
        relaxed_rank: usize,
        budget_bytes: u64,
        dtype: ValueDtype,
        method: OsdMethod,
        scores: impl FnOnce(&Factors) -> Result<(Vec<f64>, Vec<f64>), OsdError>,
    ) -> Result<Self, OsdError> {
        let f = Self::factors(svd, relaxed_rank)?;
        let (n, d, k) = (svd.u.rows, svd.vt.cols, relaxed_rank);
        let fixed = sparse_module_bytes(n, d, k, 0, dtype);
        let per_entry = index_bytes(k) + dtype.bytes() as u64;
        let count =
            usize::try_from(budget_bytes.saturating_sub(fixed) / per_entry).unwrap_or(usize::MAX);
        let (su, sv) = scores(&f)?;
        if su.len() != f.u.data.len() || sv.len() != f.vt.data.len() {
            return Err(OsdError::shape(
                "sparsified_by",
                "scores do not match the factors",
            ));
        }
        // A budget that pays for the dense factors keeps them whole (stored
        // without indices): at c = 0 this is TruncSVD, never worse.
        let (keep_u, keep_vt) = if budget_bytes >= dense_module_bytes(n, d, k, dtype) {
            (vec![true; su.len()], vec![true; sv.len()])
        } else {
            top_entries(&su, &sv, count)
        };
        Self::validated(Self {
            method,
            dtype,
            n,
            d,
            rank,
            relaxed_rank: k,
            budget_bytes,
            sparse_weight: 0.0,
            u: Csr::from_dense_masked(&f.u, &keep_u)?.rounded(dtype)?,
            vt: Csr::from_dense_masked(&f.vt, &keep_vt)?.rounded(dtype)?,
            residual: None,
        })
    }

    /// Low rank + sparse: dense rank-`rank` factors of `svd` plus the
    /// top-`nnz` entries S of `delta − Δ_r`, applied as `Δ_r + α·S` with
    /// α = `sparse_weight` (see `blend`). The residual is taken against the
    /// stored (rounded) factors, so S corrects exactly what is reconstructed.
    #[allow(clippy::too_many_arguments)]
    pub fn low_rank_sparse(
        delta: &Matrix,
        svd: &Svd,
        rank: usize,
        nnz: usize,
        sparse_weight: f32,
        dtype: ValueDtype,
        input_weight: Option<&[f32]>,
    ) -> Result<Self, OsdError> {
        let mut module = Self::with_dense_factors(delta, svd, rank, sparse_weight, dtype)?;
        module.method = OsdMethod::LowRankSparse;
        let s = sparse_residual(&delta.sub(&module.reconstruct())?, nnz, input_weight)?
            .rounded(dtype)?;
        module.residual = Some(s);
        module.budget_bytes = module.encoded_len();
        Self::validated(module)
    }

    /// The seed's blend: Δ_r = rank-`rank` factors, Δ' = Δ_r ⊙ M where M
    /// keeps the `keep` entries of largest |Δ_r|, Δ_final = (1 − α)·Δ_r + α·Δ'.
    pub fn masked_blend(
        delta: &Matrix,
        svd: &Svd,
        rank: usize,
        keep: usize,
        sparse_weight: f32,
        dtype: ValueDtype,
    ) -> Result<Self, OsdError> {
        let mut module = Self::with_dense_factors(delta, svd, rank, sparse_weight, dtype)?;
        module.sparse_weight = 0.0; // reconstruct Δ_r alone
        let low = module.reconstruct();
        let masked = sparse_residual(&low, keep, None)?.rounded(dtype)?;
        module.method = OsdMethod::MaskedBlend;
        module.sparse_weight = sparse_weight;
        module.residual = Some(masked);
        module.budget_bytes = module.encoded_len();
        Self::validated(module)
    }

    fn with_dense_factors(
        delta: &Matrix,
        svd: &Svd,
        rank: usize,
        sparse_weight: f32,
        dtype: ValueDtype,
    ) -> Result<Self, OsdError> {
        if (delta.rows, delta.cols) != (svd.u.rows, svd.vt.cols) {
            return Err(OsdError::shape("OsdModule", "delta and SVD shapes differ"));
        }
        if !(0.0..=1.0).contains(&sparse_weight) {
            return Err(OsdError::param(
                "sparse_weight",
                format!("{sparse_weight} not in [0, 1]"),
            ));
        }
        let mut module = Self::trunc_svd(svd, rank, dtype)?;
        module.sparse_weight = sparse_weight;
        Ok(module)
    }

    /// `U√Σ`, `√Σ Vᵀ` at rank k, checked against the SVD.
    fn factors(svd: &Svd, k: usize) -> Result<Factors, OsdError> {
        if svd.rank() < k || k == 0 {
            return Err(OsdError::param(
                "rank",
                format!("{k} is 0 or exceeds the SVD's {} components", svd.rank()),
            ));
        }
        Ok(fold_sqrt_sigma(&svd.truncated(k)))
    }

    fn validated(self) -> Result<Self, OsdError> {
        let (n, d, r, k) = (self.n, self.d, self.rank, self.relaxed_rank);
        let param = |name, detail: String| Err(OsdError::param(name, detail));
        if n == 0 || d == 0 || (n as u64).saturating_mul(d as u64) > MAX_ELEMENTS {
            return param("n, d", format!("{n}x{d} is empty or too large"));
        }
        if r == 0 || r > k || k > n.min(d) {
            return param(
                "rank",
                format!("need 1 ≤ rank {r} ≤ relaxed rank {k} ≤ {}", n.min(d)),
            );
        }
        if (self.u.rows(), self.u.cols(), self.vt.rows(), self.vt.cols()) != (n, k, k, d) {
            return Err(OsdError::shape(
                "OsdModule",
                "factor shapes disagree with n, d, k",
            ));
        }
        let dtypes_agree = [Some(&self.u), Some(&self.vt), self.residual.as_ref()]
            .into_iter()
            .flatten()
            .all(|c| c.dtype() == self.dtype);
        if !dtypes_agree {
            return param("dtype", "factors stored in another precision".into());
        }
        if !(0.0..=1.0).contains(&self.sparse_weight) {
            return param(
                "sparse_weight",
                format!("{} not in [0, 1]", self.sparse_weight),
            );
        }
        let fits = match (self.method, &self.residual) {
            (OsdMethod::Published | OsdMethod::MagTrunc, None) => self.sparse_weight == 0.0,
            (OsdMethod::TruncSvd, None) => self.sparse_weight == 0.0 && k == r,
            (OsdMethod::LowRankSparse | OsdMethod::MaskedBlend, Some(s)) => {
                k == r && (s.rows(), s.cols()) == (n, d)
            }
            _ => false,
        };
        if !fits {
            return param("method", "residual and ranks do not fit the method".into());
        }
        Ok(self)
    }

    /// How the module was compressed.
    pub fn method(&self) -> OsdMethod {
        self.method
    }
    /// Precision of the stored values.
    pub fn dtype(&self) -> ValueDtype {
        self.dtype
    }
    /// Output dimension (rows of Δ).
    pub fn n(&self) -> usize {
        self.n
    }
    /// Input dimension (columns of Δ).
    pub fn d(&self) -> usize {
        self.d
    }
    /// The rank r the budget was set from (sparsified) or of the dense factors.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// The relaxed rank k of the stored factors.
    pub fn relaxed_rank(&self) -> usize {
        self.relaxed_rank
    }
    /// The byte budget given (sparsified) or spent (the others).
    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }
    /// The weight α of the sparse part (0 when there is none).
    pub fn sparse_weight(&self) -> f32 {
        self.sparse_weight
    }
    /// The left factor Û (n × k).
    pub fn u(&self) -> &Csr {
        &self.u
    }
    /// The right factor V̂ᵀ (k × d).
    pub fn vt(&self) -> &Csr {
        &self.vt
    }
    /// The sparse part (low rank + sparse, masked blend).
    pub fn residual(&self) -> Option<&Csr> {
        self.residual.as_ref()
    }
    /// Weight λ of U·Vt in the reconstruction.
    pub fn low_rank_weight(&self) -> f32 {
        match self.method {
            OsdMethod::MaskedBlend => 1.0 - self.sparse_weight,
            _ => 1.0,
        }
    }

    /// The low-rank part as dense row-major factors `(λ·U [n, k], Vt [k, d])`
    /// (transient: for a fuse or an export).
    pub fn dense_factors(&self) -> (Vec<f32>, Vec<f32>) {
        let (n, k) = (self.n, self.relaxed_rank);
        let lambda = self.low_rank_weight();
        let mut u = vec![0f32; n * k];
        for i in 0..n {
            let (idx, val) = self.u.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                u[i * k + j as usize] = lambda * v;
            }
        }
        (u, self.vt.to_dense().data)
    }

    /// Storage by the paper's accounting (32-bit values plus ⌈log₂⌉-bit flat
    /// indices, see `budget`): shown beside the real bytes, never instead.
    pub fn storage_bits(&self) -> u64 {
        let dense = trunc_svd_bits(self.n, self.d, self.rank);
        let sparse = |s: &Csr| {
            (s.nnz() as u64) * (32 + u64::from(ceil_log2((self.n as u64) * (self.d as u64))))
        };
        match self.method {
            OsdMethod::Published | OsdMethod::MagTrunc => osd_bits(
                self.n,
                self.d,
                self.relaxed_rank,
                self.u.nnz(),
                self.vt.nnz(),
            ),
            OsdMethod::TruncSvd => dense,
            OsdMethod::LowRankSparse | OsdMethod::MaskedBlend => {
                dense + self.residual.as_ref().map_or(0, sparse)
            }
        }
    }

    /// Bytes `to_bytes` writes (exact).
    pub fn encoded_len(&self) -> u64 {
        let csr = |c: &Csr| Csr::encoded_len(c.rows(), c.cols(), c.nnz(), c.dtype());
        let residual = self.residual.as_ref().map_or(0, |s| {
            // The residual's widths depend on its gaps: measure it.
            8 + s.to_bytes(false).map_or(csr(s), |b| b.len() as u64)
        });
        MODULE_FIXED_BYTES
            + csr(&self.u)
            + Csr::encoded_len(self.d, self.relaxed_rank, self.vt.nnz(), self.dtype)
            + residual
    }

    /// Writes row i of Δ̂ into `out` (length d). The one kernel behind both
    /// `reconstruct` and `fuse_into`, so they agree bit for bit.
    fn delta_row(&self, vt: &Matrix, i: usize, out: &mut [f32]) {
        out.fill(0.0);
        let lambda = self.low_rank_weight();
        let (idx, val) = self.u.row(i);
        for (&j, &uij) in idx.iter().zip(val) {
            let uij = lambda * uij;
            for (o, &v) in out.iter_mut().zip(vt.row(j as usize)) {
                *o += uij * v;
            }
        }
        if let Some(s) = self.residual.as_ref().filter(|_| self.sparse_weight != 0.0) {
            let (idx, val) = s.row(i);
            for (&l, &v) in idx.iter().zip(val) {
                out[l as usize] += self.sparse_weight * v;
            }
        }
    }

    /// Δ̂ as a dense n×d matrix, computed from the stored values only.
    pub fn reconstruct(&self) -> Matrix {
        let vt = self.vt.to_dense();
        let mut out = Matrix::zeros(self.n, self.d);
        out.data
            .par_chunks_mut(self.d * ROW_BLOCK)
            .enumerate()
            .for_each(|(b, block)| {
                for (r, row) in block.chunks_mut(self.d).enumerate() {
                    self.delta_row(&vt, b * ROW_BLOCK + r, row);
                }
            });
        out
    }

    /// ‖ΔW − Δ̂‖_F / ‖ΔW‖_F.
    pub fn relative_error(&self, delta: &Matrix) -> Result<f64, OsdError> {
        relative_frobenius_error(delta, &self.reconstruct())
    }

    /// `W ← W + Δ̂` in row blocks on rayon, without forming Δ̂ whole; the
    /// result equals `W + reconstruct()` element for element.
    pub fn fuse_into(&self, base: &mut Matrix) -> Result<(), OsdError> {
        if (base.rows, base.cols) != (self.n, self.d) {
            return Err(OsdError::shape(
                "fuse_into",
                format!(
                    "base {}x{} vs delta {}x{}",
                    base.rows, base.cols, self.n, self.d
                ),
            ));
        }
        let vt = self.vt.to_dense();
        let d = self.d;
        base.data
            .par_chunks_mut(d * ROW_BLOCK)
            .enumerate()
            .for_each(|(b, block)| {
                let mut buf = vec![0.0f32; d];
                for (r, row) in block.chunks_mut(d).enumerate() {
                    self.delta_row(&vt, b * ROW_BLOCK + r, &mut buf);
                    row.iter_mut().zip(&buf).for_each(|(w, x)| *w += x);
                }
            });
        Ok(())
    }

    /// Serializes (version 2, no payload compression: sizes are what the
    /// budget paid for); deterministic.
    pub fn to_bytes(&self) -> Result<Vec<u8>, OsdError> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(self.method.code());
        out.push(self.dtype.code());
        for v in [self.n, self.d, self.rank, self.relaxed_rank] {
            out.extend_from_slice(&(v as u64).to_le_bytes());
        }
        out.extend_from_slice(&self.budget_bytes.to_le_bytes());
        out.extend_from_slice(&self.sparse_weight.to_le_bytes());
        fn section(out: &mut Vec<u8>, csr: &Csr) -> Result<(), OsdError> {
            let bytes = csr.to_bytes(false)?;
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&bytes);
            Ok(())
        }
        section(&mut out, &self.u)?;
        section(&mut out, &self.vt.transpose())?;
        match &self.residual {
            Some(s) => {
                out.push(1);
                section(&mut out, s)?;
            }
            None => out.push(0),
        }
        Ok(out)
    }

    /// Parses and validates bytes written by `to_bytes` (version 2) or by
    /// earlier releases (version 1).
    pub fn from_bytes(buf: &[u8]) -> Result<Self, OsdError> {
        let mut c = Cursor::new(buf, "OSD module");
        if c.take(4)? != MAGIC {
            return Err(malformed("bad magic"));
        }
        let version = u16::from_le_bytes([c.u8()?, c.u8()?]);
        if version != 1 && version != VERSION {
            return Err(malformed(format!("unsupported version {version}")));
        }
        let method = OsdMethod::from_code(c.u8()?)
            .filter(|m| {
                version == 2 || matches!(m, OsdMethod::Published | OsdMethod::LowRankSparse)
            })
            .ok_or_else(|| malformed("unknown method"))?;
        let dtype = match (version, c.u8()?) {
            (1, 0) => ValueDtype::F32,
            (1, _) => return Err(malformed("reserved byte is not 0")),
            (_, code) => ValueDtype::from_code(code)
                .ok_or_else(|| malformed(format!("unknown dtype {code}")))?,
        };
        let dim = u64::from(u32::MAX);
        let (n, d) = (c.count("n", dim)?, c.count("d", dim)?);
        let (rank, relaxed_rank) = (c.count("rank", dim)?, c.count("relaxed_rank", dim)?);
        let budget = c.u64()?;
        let sparse_weight = c.f32()?;
        let section = |c: &mut Cursor| -> Result<Csr, OsdError> {
            let len = c.count("section length", buf.len() as u64)?;
            Csr::from_bytes(c.take(len)?)
        };
        let u = section(&mut c)?;
        let second = section(&mut c)?;
        let residual = match c.u8()? {
            0 => None,
            1 => Some(section(&mut c)?),
            f => return Err(malformed(format!("bad residual flag {f}"))),
        };
        if c.pos() != buf.len() {
            return Err(malformed(format!("{} trailing bytes", buf.len() - c.pos())));
        }
        let (vt, budget_bytes) = if version == 1 {
            (second, budget.div_ceil(8))
        } else {
            // V is d×k, and k ≤ min(n, d): checked before the transpose
            // allocates k + 1 pointers (a hostile k could ask for 2³²).
            if (second.rows(), second.cols()) != (d, relaxed_rank) || relaxed_rank > n.min(d) {
                return Err(malformed("V's shape disagrees with d, k"));
            }
            (second.transpose(), budget)
        };
        Self::validated(Self {
            method,
            dtype,
            n,
            d,
            rank,
            relaxed_rank,
            budget_bytes,
            sparse_weight,
            u,
            vt,
            residual,
        })
        .map_err(|e| malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osd::svd::tests::{decaying, gaussian};
    use crate::osd::{dense_svd, lora_svd};

    fn osd(svd: &Svd, r: usize, k: usize, budget: u64, dtype: ValueDtype) -> OsdModule {
        OsdModule::sparsified(svd, r, k, budget, dtype, None, Selector::Damage).unwrap()
    }

    #[test]
    fn every_method_round_trips_exactly_and_sizes_are_exact() {
        let m = decaying(40, 30, 0.8, 1, 11);
        let svd = dense_svd(&m, 12).unwrap();
        for dtype in ValueDtype::ALL {
            let budget = dense_module_bytes(40, 30, 6, dtype);
            let modules = [
                osd(&svd, 6, 12, budget, dtype),
                OsdModule::sparsified(&svd, 6, 12, budget, dtype, None, Selector::Magnitude)
                    .unwrap(),
                OsdModule::trunc_svd(&svd, 6, dtype).unwrap(),
                OsdModule::low_rank_sparse(&m, &svd, 4, 50, 0.5, dtype, None).unwrap(),
                OsdModule::masked_blend(&m, &svd, 4, 50, 0.5, dtype).unwrap(),
            ];
            for module in modules {
                let bytes = module.to_bytes().unwrap();
                assert_eq!(
                    bytes.len() as u64,
                    module.encoded_len(),
                    "{:?}",
                    module.method()
                );
                if module.method() != OsdMethod::LowRankSparse
                    && module.method() != OsdMethod::MaskedBlend
                {
                    assert!(
                        module.encoded_len() <= budget,
                        "{:?} {dtype}",
                        module.method()
                    );
                }
                let back = OsdModule::from_bytes(&bytes).unwrap();
                assert_eq!(back, module);
                assert_eq!(back.to_bytes().unwrap(), bytes);
                let (a, b) = (module.reconstruct(), back.reconstruct());
                assert!(a
                    .data
                    .iter()
                    .zip(&b.data)
                    .all(|(x, y)| x.to_bits() == y.to_bits()));
                let mut w = gaussian(40, 30, 12);
                let expected: Vec<f32> = w.data.iter().zip(&a.data).map(|(x, y)| x + y).collect();
                back.fuse_into(&mut w).unwrap();
                assert_eq!(w.data, expected);
                assert!(back.fuse_into(&mut Matrix::zeros(30, 40)).is_err());
            }
        }
    }

    #[test]
    fn a_dense_sparsified_module_fills_its_budget_with_one_index_byte_per_entry() {
        let m = decaying(64, 48, 0.9, 1, 2);
        let svd = dense_svd(&m, 16).unwrap();
        let budget = dense_module_bytes(64, 48, 4, ValueDtype::Bf16);
        let module = osd(&svd, 4, 8, budget, ValueDtype::Bf16);
        let kept = (module.u().nnz() + module.vt().nnz()) as u64;
        assert_eq!(
            module.encoded_len(),
            sparse_module_bytes(64, 48, 8, kept, ValueDtype::Bf16)
        );
        assert!(
            budget - module.encoded_len() < 3,
            "{} of {budget}",
            module.encoded_len()
        );
    }

    #[test]
    fn hostile_module_bytes_are_errors() {
        let m = decaying(20, 16, 0.8, 1, 3);
        let svd = dense_svd(&m, 6).unwrap();
        let module =
            OsdModule::low_rank_sparse(&m, &svd, 4, 20, 0.5, ValueDtype::Bf16, None).unwrap();
        let bytes = module.to_bytes().unwrap();
        assert_eq!(OsdModule::from_bytes(&bytes).unwrap(), module);
        for cut in 0..bytes.len() {
            assert!(OsdModule::from_bytes(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let patch = |off: usize, v: &[u8]| {
            let mut b = bytes.clone();
            b[off..off + v.len()].copy_from_slice(v);
            OsdModule::from_bytes(&b)
        };
        assert!(patch(6, &[0]).is_err()); // claims published OSD
        assert!(patch(6, &[9]).is_err()); // unknown method
        assert!(patch(7, &[0]).is_err()); // dtype disagrees with the CSRs
        assert!(patch(7, &[7]).is_err()); // unknown dtype
        assert!(patch(8, &21u64.to_le_bytes()).is_err()); // n disagrees with U
        assert!(patch(24, &0u64.to_le_bytes()).is_err()); // rank 0
        assert!(patch(48, &2.0f32.to_le_bytes()).is_err()); // alpha > 1
        assert!(patch(52, &u64::MAX.to_le_bytes()).is_err()); // section length
    }

    /// A module claiming a relaxed rank of 2³¹ with empty factors of that
    /// width is refused before anything k-sized is allocated.
    #[test]
    fn a_huge_claimed_rank_is_refused_before_allocation() {
        let k = 1usize << 31;
        let empty =
            |rows: usize| Csr::from_parts(rows, k, vec![0; rows + 1], vec![], vec![]).unwrap();
        let mut b = Vec::new();
        b.extend_from_slice(b"OSDM");
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        for v in [8u64, 6, 1, k as u64, 100] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&0f32.to_le_bytes());
        for csr in [empty(8), empty(6)] {
            let bytes = csr.to_bytes(false).unwrap();
            b.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            b.extend_from_slice(&bytes);
        }
        b.push(0);
        let err = OsdModule::from_bytes(&b).unwrap_err().to_string();
        assert!(err.contains("V's shape"), "{err}");
    }

    /// A version-1 module (0.4: f32, Vt stored as is, budget in bits, zstd
    /// CSRs) still reads.
    #[test]
    fn version_1_modules_still_read() {
        let m = decaying(12, 10, 0.8, 1, 5);
        let svd = dense_svd(&m, 4).unwrap();
        let new = osd(&svd, 2, 4, 300, ValueDtype::F32);
        let mut v1 = Vec::new();
        v1.extend_from_slice(b"OSDM");
        v1.extend_from_slice(&1u16.to_le_bytes());
        v1.extend_from_slice(&[0, 0]);
        for v in [12u64, 10, 2, 4, 2_400] {
            v1.extend_from_slice(&v.to_le_bytes());
        }
        v1.extend_from_slice(&0f32.to_le_bytes());
        for csr in [new.u(), new.vt()] {
            let mut b = csr.to_bytes(true).unwrap();
            b[4] = 1; // CSR version 1: f32, sparse (the flags carry only zstd)
            assert_eq!(b[5] & !1, 0);
            v1.extend_from_slice(&(b.len() as u64).to_le_bytes());
            v1.extend_from_slice(&b);
        }
        v1.push(0);
        let back = OsdModule::from_bytes(&v1).unwrap();
        assert_eq!(back.reconstruct(), new.reconstruct());
        assert_eq!(back.budget_bytes(), 300);
    }

    #[test]
    fn blends_weigh_their_sparse_part() {
        let m = decaying(30, 24, 0.85, 1, 5);
        let svd = dense_svd(&m, 8).unwrap();
        let f32_ = ValueDtype::F32;
        let low = OsdModule::low_rank_sparse(&m, &svd, 5, 60, 0.0, f32_, None).unwrap();
        assert_eq!(low.residual().map(Csr::nnz), Some(60));
        let lr = svd.truncated(5).reconstruct();
        assert!(relative_frobenius_error(&lr, &low.reconstruct()).unwrap() < 1e-5);
        let full = OsdModule::low_rank_sparse(&m, &svd, 5, 60, 1.0, f32_, None).unwrap();
        let half = OsdModule::low_rank_sparse(&m, &svd, 5, 60, 0.5, f32_, None).unwrap();
        let (e0, e5, e1) = (
            low.relative_error(&m).unwrap(),
            half.relative_error(&m).unwrap(),
            full.relative_error(&m).unwrap(),
        );
        assert!(e1 < e5 && e5 < e0, "{e1} {e5} {e0}");
        assert!(OsdModule::low_rank_sparse(&m, &svd, 5, 60, 1.5, f32_, None).is_err());
        // The seed's blend: α = 0 is Δ_r, α = 1 is Δ_r ⊙ M (the kept entries only).
        let keep_all = OsdModule::masked_blend(&m, &svd, 5, 30 * 24, 1.0, f32_).unwrap();
        assert!(relative_frobenius_error(&lr, &keep_all.reconstruct()).unwrap() < 1e-5);
        let none = OsdModule::masked_blend(&m, &svd, 5, 60, 0.0, f32_).unwrap();
        assert!(relative_frobenius_error(&lr, &none.reconstruct()).unwrap() < 1e-5);
        let masked = OsdModule::masked_blend(&m, &svd, 5, 60, 1.0, f32_).unwrap();
        let dense = masked.reconstruct();
        assert_eq!(dense.data.iter().filter(|v| **v != 0.0).count(), 60);
    }

    /// The paper's claim: at the bytes of a dense rank-r TruncSVD, sparsified
    /// factors of a higher rank k = r + c reconstruct better. The test delta
    /// has a decaying spectrum (0.85^i) and heavy-tailed singular vectors
    /// (orthonormalised cubed Gaussians), i.e. an update that is low-rank and
    /// sparse-ish, the paper's premise.
    #[test]
    fn osd_beats_trunc_svd_at_equal_bytes_on_sparse_singular_vectors() {
        let (n, d, r) = (96, 80, 8);
        let m = decaying(n, d, 0.85, 3, 21);
        let svd = dense_svd(&m, 2 * r).unwrap();
        for dtype in [ValueDtype::F32, ValueDtype::Bf16] {
            let trunc = OsdModule::trunc_svd(&svd, r, dtype).unwrap();
            let budget = trunc.encoded_len();
            let sparse = osd(&svd, r, 2 * r, budget, dtype);
            assert!(sparse.encoded_len() <= budget);
            let (e_osd, e_trunc) = (
                sparse.relative_error(&m).unwrap(),
                trunc.relative_error(&m).unwrap(),
            );
            assert!(
                e_osd < e_trunc,
                "{dtype}: OSD {e_osd} vs TruncSVD {e_trunc}"
            );
        }
    }

    #[test]
    fn lora_delta_compresses_through_lora_svd() {
        let (a, b) = (gaussian(4, 50, 1), gaussian(60, 4, 2));
        let svd = lora_svd(&a, &b, 0.5).unwrap();
        let module = OsdModule::trunc_svd(&svd, 4, ValueDtype::F32).unwrap();
        let mut delta = b.matmul(&a).unwrap();
        delta.data.iter_mut().for_each(|x| *x *= 0.5);
        assert!(module.relative_error(&delta).unwrap() < 1e-5);
        let half = OsdModule::trunc_svd(&svd, 4, ValueDtype::Bf16).unwrap();
        let e = half.relative_error(&delta).unwrap();
        assert!(e > 1e-4 && e < 1e-2, "bf16 rounding error {e}");
    }
}
