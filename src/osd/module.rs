//! One compressed module: the stored form of an OSD-compressed delta, its
//! checked byte layout, exact reconstruction and fusion into a base weight.
//!
//! The delta is `Δ̂ = U·Vt + α·S` with U (n×k) and Vt (k×d) in CSR (the
//! published method keeps only the selected entries of `U√Σ`, `√Σ Vᵀ`; the
//! blend keeps the rank-r factors whole and adds the sparse residual S).
//! Δ is out×in (n×d) like the base weight; a Conv1D base (`fan_in_fan_out`)
//! is the caller's to transpose.
//!
//! Byte layout (little-endian): `"OSDM"`, version u16 (1), method u8
//! (0 published, 1 blend), reserved u8 (0), n, d, rank, relaxed_rank,
//! budget_bits (u64 each), sparse_weight (f32), then U and Vt as
//! (u64 length, CSR bytes), then a u8 residual flag and, when 1, the
//! residual S as (u64 length, CSR bytes). Nothing may follow.

use rayon::prelude::*;

use super::blend::sparse_residual;
use super::budget::{ceil_log2, osd_bits, select_entries, trunc_svd_bits};
use super::csr::Cursor;
use super::importance::{fold_sqrt_sigma, interleaved_importance};
use super::{relative_frobenius_error, Csr, Matrix, OsdError, Svd};

const MAGIC: &[u8; 4] = b"OSDM";
const VERSION: u16 = 1;
/// Largest n·d accepted (2³⁴ ≈ 17 G elements): keeps a hostile header from
/// requesting an absurd reconstruction.
const MAX_ELEMENTS: u64 = 1 << 34;
/// Rows per rayon task in reconstruction and fusion.
const ROW_BLOCK: usize = 16;

/// How the delta was compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsdMethod {
    /// Sparsified rank-(r + c) factors chosen by interleaved importance.
    Published,
    /// Dense rank-r factors plus a weighted sparse residual.
    Blend,
}

/// A compressed delta (see the module doc). Fields are private so every
/// value satisfies the invariants checked by `validate`.
#[derive(Debug, Clone, PartialEq)]
pub struct OsdModule {
    method: OsdMethod,
    n: usize,
    d: usize,
    rank: usize,
    relaxed_rank: usize,
    budget_bits: u64,
    sparse_weight: f32,
    u: Csr,
    vt: Csr,
    residual: Option<Csr>,
}

fn malformed(detail: impl Into<String>) -> OsdError {
    OsdError::malformed("OSD module", detail)
}

impl OsdModule {
    /// OSD as published: SVD at the relaxed rank k = `relaxed_rank`, Σ folded
    /// into both factors, entries kept by interleaved importance within
    /// `budget_bits` (see `budget`). `svd` must hold at least k components.
    pub fn published(
        svd: &Svd,
        rank: usize,
        relaxed_rank: usize,
        budget_bits: u64,
        input_weight: Option<&[f32]>,
    ) -> Result<Self, OsdError> {
        if svd.rank() < relaxed_rank {
            return Err(OsdError::param(
                "relaxed_rank",
                format!("{relaxed_rank} exceeds the SVD's {} components", svd.rank()),
            ));
        }
        let factors = fold_sqrt_sigma(&svd.truncated(relaxed_rank));
        let sel = select_entries(
            &interleaved_importance(&factors, input_weight)?,
            budget_bits,
        );
        Self::validated(Self {
            method: OsdMethod::Published,
            n: svd.u.rows,
            d: svd.vt.cols,
            rank,
            relaxed_rank,
            budget_bits,
            sparse_weight: 0.0,
            u: Csr::from_dense_masked(&factors.u, &sel.keep_u)?,
            vt: Csr::from_dense_masked(&factors.vt, &sel.keep_vt)?,
            residual: None,
        })
    }

    /// Low-rank + sparse blend: dense rank-`rank` factors of `svd` plus the
    /// top-`nnz` entries S of `delta − Δ_r`, applied as `Δ_r + α·S` with
    /// α = `sparse_weight` (see `blend`). The residual is taken against the
    /// stored (f32) factors, so S corrects exactly what is reconstructed.
    pub fn blend(
        delta: &Matrix,
        svd: &Svd,
        rank: usize,
        nnz: usize,
        sparse_weight: f32,
        input_weight: Option<&[f32]>,
    ) -> Result<Self, OsdError> {
        if svd.rank() < rank {
            return Err(OsdError::param(
                "rank",
                format!("{rank} exceeds the SVD's {} components", svd.rank()),
            ));
        }
        if (delta.rows, delta.cols) != (svd.u.rows, svd.vt.cols) {
            return Err(OsdError::shape(
                "OsdModule::blend",
                "delta and SVD shapes differ",
            ));
        }
        let factors = fold_sqrt_sigma(&svd.truncated(rank));
        let (n, d) = (delta.rows, delta.cols);
        let mut module = Self::validated(Self {
            method: OsdMethod::Blend,
            n,
            d,
            rank,
            relaxed_rank: rank,
            budget_bits: 0,
            sparse_weight,
            u: Csr::from_dense(&factors.u)?,
            vt: Csr::from_dense(&factors.vt)?,
            residual: Some(Csr::from_parts(
                n,
                d,
                vec![0; n + 1],
                Vec::new(),
                Vec::new(),
            )?),
        })?;
        let s = sparse_residual(&delta.sub(&module.reconstruct())?, nnz, input_weight)?;
        module.budget_bits = trunc_svd_bits(n, d, rank)
            + (s.nnz() as u64) * (32 + u64::from(ceil_log2((n as u64) * (d as u64))));
        module.residual = Some(s);
        Ok(module)
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
        if !(0.0..=1.0).contains(&self.sparse_weight) {
            return param(
                "sparse_weight",
                format!("{} not in [0, 1]", self.sparse_weight),
            );
        }
        match (self.method, &self.residual) {
            (OsdMethod::Published, None) if self.sparse_weight == 0.0 => {}
            (OsdMethod::Blend, Some(s)) if k == r && (s.rows(), s.cols()) == (n, d) => {}
            _ => return param("method", "residual and ranks do not fit the method".into()),
        }
        Ok(self)
    }

    /// Published OSD or the low-rank + sparse blend.
    pub fn method(&self) -> OsdMethod {
        self.method
    }
    /// Output dimension (rows of Δ).
    pub fn n(&self) -> usize {
        self.n
    }
    /// Input dimension (columns of Δ).
    pub fn d(&self) -> usize {
        self.d
    }
    /// The rank r the budget was set from (osd) or of the low-rank part (blend).
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// The relaxed rank k of the stored factors.
    pub fn relaxed_rank(&self) -> usize {
        self.relaxed_rank
    }
    /// The bit budget given (published) or spent (blend), paper accounting.
    pub fn budget_bits(&self) -> u64 {
        self.budget_bits
    }
    /// The blend weight α of the sparse residual (0 for published OSD, which has none).
    pub fn sparse_weight(&self) -> f32 {
        self.sparse_weight
    }
    /// The sparse left factor Û (n × k).
    pub fn u(&self) -> &Csr {
        &self.u
    }
    /// The sparse right factor V̂ᵀ (k × d).
    pub fn vt(&self) -> &Csr {
        &self.vt
    }
    /// The sparse residual correction (blend only).
    pub fn residual(&self) -> Option<&Csr> {
        self.residual.as_ref()
    }

    /// Storage by the paper's accounting (see `budget`); for the blend, dense
    /// factors plus `32 + ⌈log₂(n·d)⌉` bits per residual entry.
    pub fn storage_bits(&self) -> u64 {
        match self.method {
            OsdMethod::Published => osd_bits(
                self.n,
                self.d,
                self.relaxed_rank,
                self.u.nnz(),
                self.vt.nnz(),
            ),
            OsdMethod::Blend => self.budget_bits,
        }
    }

    /// Writes row i of Δ̂ into `out` (length d). The one kernel behind both
    /// `reconstruct` and `fuse_into`, so they agree bit for bit.
    fn delta_row(&self, vt: &Matrix, i: usize, out: &mut [f32]) {
        out.fill(0.0);
        let (idx, val) = self.u.row(i);
        for (&j, &uij) in idx.iter().zip(val) {
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

    /// Serializes (CSR payloads zstd'd where that is smaller); deterministic.
    pub fn to_bytes(&self) -> Result<Vec<u8>, OsdError> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(match self.method {
            OsdMethod::Published => 0,
            OsdMethod::Blend => 1,
        });
        out.push(0);
        for v in [self.n, self.d, self.rank, self.relaxed_rank] {
            out.extend_from_slice(&(v as u64).to_le_bytes());
        }
        out.extend_from_slice(&self.budget_bits.to_le_bytes());
        out.extend_from_slice(&self.sparse_weight.to_le_bytes());
        fn section(out: &mut Vec<u8>, csr: &Csr) -> Result<(), OsdError> {
            let bytes = csr.to_bytes(true)?;
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&bytes);
            Ok(())
        }
        section(&mut out, &self.u)?;
        section(&mut out, &self.vt)?;
        match &self.residual {
            Some(s) => {
                out.push(1);
                section(&mut out, s)?;
            }
            None => out.push(0),
        }
        Ok(out)
    }

    /// Parses and validates bytes written by `to_bytes`.
    pub fn from_bytes(buf: &[u8]) -> Result<Self, OsdError> {
        let mut c = Cursor::new(buf, "OSD module");
        if c.take(4)? != MAGIC {
            return Err(malformed("bad magic"));
        }
        let version = u16::from_le_bytes([c.u8()?, c.u8()?]);
        if version != VERSION {
            return Err(malformed(format!("unsupported version {version}")));
        }
        let method = match c.u8()? {
            0 => OsdMethod::Published,
            1 => OsdMethod::Blend,
            m => return Err(malformed(format!("unknown method {m}"))),
        };
        if c.u8()? != 0 {
            return Err(malformed("reserved byte is not 0"));
        }
        let dim = u64::from(u32::MAX);
        let (n, d) = (c.count("n", dim)?, c.count("d", dim)?);
        let (rank, relaxed_rank) = (c.count("rank", dim)?, c.count("relaxed_rank", dim)?);
        let budget_bits = c.u64()?;
        let sparse_weight = c.f32()?;
        let section = |c: &mut Cursor| -> Result<Csr, OsdError> {
            let len = c.count("section length", buf.len() as u64)?;
            Csr::from_bytes(c.take(len)?)
        };
        let u = section(&mut c)?;
        let vt = section(&mut c)?;
        let residual = match c.u8()? {
            0 => None,
            1 => Some(section(&mut c)?),
            f => return Err(malformed(format!("bad residual flag {f}"))),
        };
        if c.pos() != buf.len() {
            return Err(malformed(format!("{} trailing bytes", buf.len() - c.pos())));
        }
        Self::validated(Self {
            method,
            n,
            d,
            rank,
            relaxed_rank,
            budget_bits,
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

    #[test]
    fn published_round_trip_is_exact() {
        let m = decaying(40, 30, 0.8, 1, 11);
        let svd = dense_svd(&m, 12).unwrap();
        let module = OsdModule::published(&svd, 6, 12, trunc_svd_bits(40, 30, 6), None).unwrap();
        assert!(module.storage_bits() <= module.budget_bits());
        let bytes = module.to_bytes().unwrap();
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

    #[test]
    fn hostile_module_bytes_are_errors() {
        let m = decaying(20, 16, 0.8, 1, 3);
        let svd = dense_svd(&m, 6).unwrap();
        let module = OsdModule::blend(&m, &svd, 4, 20, 0.5, None).unwrap();
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
        assert!(patch(6, &[0]).is_err()); // blend bytes claiming published
        assert!(patch(8, &21u64.to_le_bytes()).is_err()); // n disagrees with U
        assert!(patch(24, &0u64.to_le_bytes()).is_err()); // rank 0
        assert!(patch(48, &2.0f32.to_le_bytes()).is_err()); // alpha > 1
        assert!(patch(52, &u64::MAX.to_le_bytes()).is_err()); // section length
    }

    #[test]
    fn blend_with_zero_alpha_is_pure_low_rank() {
        let m = decaying(30, 24, 0.85, 1, 5);
        let svd = dense_svd(&m, 8).unwrap();
        let low = OsdModule::blend(&m, &svd, 5, 60, 0.0, None).unwrap();
        assert_eq!(low.residual().map(Csr::nnz), Some(60));
        let lr = svd.truncated(5).reconstruct();
        assert!(relative_frobenius_error(&lr, &low.reconstruct()).unwrap() < 1e-5);
        let full = OsdModule::blend(&m, &svd, 5, 60, 1.0, None).unwrap();
        let half = OsdModule::blend(&m, &svd, 5, 60, 0.5, None).unwrap();
        let (e0, e5, e1) = (
            low.relative_error(&m).unwrap(),
            half.relative_error(&m).unwrap(),
            full.relative_error(&m).unwrap(),
        );
        assert!(e1 < e5 && e5 < e0, "{e1} {e5} {e0}");
        let back = OsdModule::from_bytes(&half.to_bytes().unwrap()).unwrap();
        assert_eq!(back.reconstruct(), half.reconstruct());
        assert!(OsdModule::blend(&m, &svd, 5, 60, 1.5, None).is_err());
    }

    /// The paper's claim: at the bits of a dense rank-r TruncSVD, sparsified
    /// factors of a higher rank k = r + c reconstruct better. The test delta
    /// has a decaying spectrum (0.85^i) and heavy-tailed singular vectors
    /// (orthonormalised cubed Gaussians), i.e. an update that is low-rank and
    /// sparse-ish, the paper's premise. (With dense Gaussian singular vectors
    /// and a fast decay the claim does not hold: index bits cost too much.)
    #[test]
    fn osd_beats_trunc_svd_at_equal_bits() {
        let (n, d, r) = (96, 80, 8);
        let m = decaying(n, d, 0.85, 3, 21);
        let svd = dense_svd(&m, 2 * r).unwrap();
        let budget = trunc_svd_bits(n, d, r);
        let trunc = relative_frobenius_error(&m, &svd.truncated(r).reconstruct()).unwrap();
        let osd = OsdModule::published(&svd, r, 2 * r, budget, None).unwrap();
        assert!(osd.storage_bits() <= budget);
        let err = osd.relative_error(&m).unwrap();
        assert!(err < trunc, "OSD {err} vs TruncSVD {trunc}");
    }

    #[test]
    fn lora_delta_compresses_through_lora_svd() {
        let (a, b) = (gaussian(4, 50, 1), gaussian(60, 4, 2));
        let svd = lora_svd(&a, &b, 0.5).unwrap();
        let module = OsdModule::published(&svd, 4, 4, u64::MAX, None).unwrap();
        let mut delta = b.matmul(&a).unwrap();
        delta.data.iter_mut().for_each(|x| *x *= 0.5);
        assert!(module.relative_error(&delta).unwrap() < 1e-5);
    }
}
