//! Truncated SVDs of weight deltas: exact dense (faer thin SVD), randomized
//! (Halko, Martinsson & Tropp 2011) for large dense deltas, and the exact SVD
//! of a LoRA product `scale·B·A` computed without forming the `out×in` matrix.
//! Factorizations run in f64 (faer) so that small singular values and
//! orthogonality survive; large products with the data stay f32.

use faer::{Mat, MatRef, Par};

use super::rng::XorShift;
use super::{Matrix, OsdError};

/// Truncated SVD `Δ ≈ U·diag(s)·Vt`, singular values non-increasing.
#[derive(Debug, Clone, PartialEq)]
pub struct Svd {
    /// n×k, orthonormal columns.
    pub u: Matrix,
    /// k singular values, non-negative, non-increasing.
    pub s: Vec<f32>,
    /// k×d, orthonormal rows.
    pub vt: Matrix,
}

impl Svd {
    /// Number of singular values kept.
    pub fn rank(&self) -> usize {
        self.s.len()
    }

    /// The first `k` components (all of them when `k ≥ rank`).
    pub fn truncated(&self, k: usize) -> Svd {
        let k = k.min(self.rank());
        Svd {
            u: Matrix::from_fn(self.u.rows, k, |i, j| self.u.get(i, j)),
            s: self.s[..k].to_vec(),
            vt: Matrix::from_fn(k, self.vt.cols, |j, l| self.vt.get(j, l)),
        }
    }

    /// `U·diag(s)·Vt` as a dense n×d matrix.
    pub fn reconstruct(&self) -> Matrix {
        let us = Matrix::from_fn(self.u.rows, self.rank(), |i, j| {
            self.u.get(i, j) * self.s[j]
        });
        let mut out = Mat::<f32>::zeros(us.rows, self.vt.cols);
        faer::linalg::matmul::matmul(
            out.as_mut(),
            faer::Accum::Replace,
            us.as_faer(),
            self.vt.as_faer(),
            1.0f32,
            Par::rayon(0),
        );
        Matrix::from_faer(out.as_ref())
    }
}

fn check_input(m: &Matrix, what: &'static str) -> Result<(), OsdError> {
    if m.rows == 0 || m.cols == 0 {
        return Err(OsdError::shape(
            what,
            format!("empty {}x{} matrix", m.rows, m.cols),
        ));
    }
    if !m.is_finite() {
        return Err(OsdError::NonFinite(what));
    }
    Ok(())
}

fn check_rank(k: usize) -> Result<(), OsdError> {
    if k == 0 {
        return Err(OsdError::param("k", "rank must be at least 1"));
    }
    Ok(())
}

fn to64(m: MatRef<'_, f32>) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| f64::from(m[(i, j)]))
}

fn to32(m: MatRef<'_, f64>) -> Mat<f32> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)] as f32)
}

pub(crate) fn mul<T: faer::traits::ComplexField>(a: MatRef<'_, T>, b: MatRef<'_, T>) -> Mat<T> {
    let mut out = Mat::<T>::zeros(a.nrows(), b.ncols());
    // Small products (LoRA factors) run on this thread: the callers are
    // already spread over modules, and a pool hop costs more than the work.
    let flops = a
        .nrows()
        .saturating_mul(a.ncols())
        .saturating_mul(b.ncols());
    let par = if flops < 1 << 24 {
        Par::Seq
    } else {
        Par::rayon(0)
    };
    faer::linalg::matmul::matmul(out.as_mut(), faer::Accum::Replace, a, b, T::one_impl(), par);
    out
}

/// Thin QR: `(Q, R)` with Q m×p orthonormal, R p×n, p = min(m, n).
fn thin_qr(m: MatRef<'_, f64>) -> (Mat<f64>, Mat<f64>) {
    let qr = m.qr();
    (qr.compute_thin_Q(), qr.thin_R().to_owned())
}

/// `(U, s, V)` of an f64 SVD.
type Svd64 = (Mat<f64>, Vec<f64>, Mat<f64>);

/// Thin SVD in f64: `(U, s, V)` with `m = U·diag(s)·Vᵀ`.
fn thin_svd64(m: MatRef<'_, f64>) -> Result<Svd64, OsdError> {
    let svd = m.thin_svd().map_err(|_| OsdError::SvdNoConvergence)?;
    let s = svd.S().column_vector();
    let s: Vec<f64> = (0..s.nrows()).map(|i| s[i]).collect();
    Ok((svd.U().to_owned(), s, svd.V().to_owned()))
}

/// Keeps the first `k` components of an f64 SVD, rounded to f32.
fn svd_from64(u: MatRef<'_, f64>, s: &[f64], v: MatRef<'_, f64>, k: usize) -> Svd {
    let k = k.min(s.len()).min(u.ncols()).min(v.ncols());
    Svd {
        u: Matrix::from_fn(u.nrows(), k, |i, j| u[(i, j)] as f32),
        s: s[..k].iter().map(|&x| x as f32).collect(),
        vt: Matrix::from_fn(k, v.nrows(), |j, l| v[(l, j)] as f32),
    }
}

/// Exact rank-`k` truncated SVD (k is clamped to min(n, d)). Cost O(n·d·min(n, d)).
pub fn dense_svd(m: &Matrix, k: usize) -> Result<Svd, OsdError> {
    check_input(m, "dense_svd")?;
    check_rank(k)?;
    let (u, s, v) = thin_svd64(m.to_faer64().as_ref())?;
    Ok(svd_from64(u.as_ref(), &s, v.as_ref(), k))
}

/// Randomized rank-`k` SVD: Gaussian sketch of width `k + oversample`,
/// `power_iters` subspace iterations (each re-orthonormalised by QR, which
/// keeps small singular directions from being swamped in floating point),
/// then an exact SVD of the small projected matrix. Deterministic for a seed.
/// Cost O(n·d·(k + oversample)·(1 + 2·power_iters)).
pub fn randomized_svd(
    m: &Matrix,
    k: usize,
    oversample: usize,
    power_iters: usize,
    seed: u64,
) -> Result<Svd, OsdError> {
    check_input(m, "randomized_svd")?;
    check_rank(k)?;
    let (n, d) = (m.rows, m.cols);
    let width = k.saturating_add(oversample).min(n.min(d));
    let a = m.as_faer();
    let mut rng = XorShift::new(seed);
    let omega = Mat::<f32>::from_fn(d, width, |_, _| rng.gaussian() as f32);
    let mut q = thin_qr(to64(mul(a, omega.as_ref()).as_ref()).as_ref()).0;
    for _ in 0..power_iters {
        let z = mul(a.transpose(), to32(q.as_ref()).as_ref());
        let qz = thin_qr(to64(z.as_ref()).as_ref()).0;
        let y = mul(a, to32(qz.as_ref()).as_ref());
        q = thin_qr(to64(y.as_ref()).as_ref()).0;
    }
    // B = Qᵀ·A (width×d) carries A's top singular structure.
    let b = to64(mul(to32(q.as_ref()).as_ref().transpose(), a).as_ref());
    let (ub, s, v) = thin_svd64(b.as_ref())?;
    let u = mul(q.as_ref(), ub.as_ref());
    Ok(svd_from64(u.as_ref(), &s, v.as_ref(), k))
}

/// Exact SVD of a LoRA delta `ΔW = scale·B·A` (A: r×in, B: out×r) in
/// O((out + in)·r²) without forming the out×in product: with `B = Q_B·R_B`
/// and `Aᵀ = Q_A·R_A`, `ΔW = Q_B·(scale·R_B·R_Aᵀ)·Q_Aᵀ`; the SVD
/// `U_c·Σ·V_cᵀ` of the small core gives `U = Q_B·U_c`, `V = Q_A·V_c`.
/// Returns min(r, out, in) components.
pub fn lora_svd(a: &Matrix, b: &Matrix, scale: f32) -> Result<Svd, OsdError> {
    check_input(a, "lora_svd (A)")?;
    check_input(b, "lora_svd (B)")?;
    if a.rows != b.cols {
        return Err(OsdError::shape(
            "lora_svd",
            format!("A is {}x{} but B is {}x{}", a.rows, a.cols, b.rows, b.cols),
        ));
    }
    if !scale.is_finite() {
        return Err(OsdError::NonFinite("lora_svd (scale)"));
    }
    let (b64, a64) = (b.to_faer64(), a.to_faer64());
    let (bm, am) = (b64.as_ref(), a64.as_ref().transpose());
    // R factors from the Gram matrices (two GEMMs and an r×r Cholesky each,
    // ~10× faster than Householder QR on tall LoRA factors); Householder QR
    // when a factor is too ill-conditioned for its Gram (κ > 10⁴).
    if let (Some(rb), Some(ra)) = (gram_r(bm), gram_r(am)) {
        let mut core = mul(rb.as_ref(), ra.as_ref().transpose());
        core *= faer::Scale(f64::from(scale));
        let (mut uc, s, mut vc) = thin_svd64(core.as_ref())?;
        // U = Q_B·U_c = B·R_B⁻¹·U_c, V = Q_A·V_c = Aᵀ·R_A⁻¹·V_c.
        use faer::linalg::triangular_solve::solve_upper_triangular_in_place;
        solve_upper_triangular_in_place(rb.as_ref(), uc.as_mut(), Par::Seq);
        solve_upper_triangular_in_place(ra.as_ref(), vc.as_mut(), Par::Seq);
        let u = mul(bm, uc.as_ref());
        let v = mul(am, vc.as_ref());
        return Ok(svd_from64(u.as_ref(), &s, v.as_ref(), s.len()));
    }
    let (qb, rb) = thin_qr(bm);
    let (qa, ra) = thin_qr(am);
    let mut core = mul(rb.as_ref(), ra.as_ref().transpose());
    core *= faer::Scale(f64::from(scale));
    let (uc, s, vc) = thin_svd64(core.as_ref())?;
    let u = mul(qb.as_ref(), uc.as_ref());
    let v = mul(qa.as_ref(), vc.as_ref());
    Ok(svd_from64(u.as_ref(), &s, v.as_ref(), s.len()))
}

/// R (upper, r×r) with `MᵀM = RᵀR` for a tall m×r matrix M, by Cholesky of
/// the Gram; `None` when M is rank-deficient or so ill-conditioned (diagonal
/// of R spread beyond 10⁴) that the Gram would lose accuracy.
fn gram_r(m: MatRef<'_, f64>) -> Option<Mat<f64>> {
    if m.nrows() < m.ncols() {
        return None;
    }
    let gram = mul(m.transpose(), m);
    let llt = gram.llt(faer::Side::Lower).ok()?;
    let l = llt.L();
    let diag: Vec<f64> = (0..l.nrows()).map(|i| l[(i, i)]).collect();
    let max = diag.iter().copied().fold(0.0f64, f64::max);
    let min = diag.iter().copied().fold(f64::INFINITY, f64::min);
    (min.is_finite() && max > 0.0 && min > 1e-4 * max).then(|| l.transpose().to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn gaussian(rows: usize, cols: usize, seed: u64) -> Matrix {
        let mut rng = XorShift::new(seed);
        Matrix::from_fn(rows, cols, |_, _| rng.gaussian() as f32)
    }

    /// n×d matrix with singular values `decay^i` and random singular vectors
    /// (orthonormalised Gaussians raised to `power`, heavy-tailed for power > 1).
    pub(crate) fn decaying(n: usize, d: usize, decay: f64, power: i32, seed: u64) -> Matrix {
        let k = n.min(d);
        let heavy = |mut m: Matrix| {
            m.data.iter_mut().for_each(|x| *x = x.powi(power));
            thin_qr(m.to_faer64().as_ref()).0
        };
        let u = heavy(gaussian(n, k, seed));
        let v = heavy(gaussian(d, k, seed ^ 0xABCD));
        let us = Mat::<f64>::from_fn(n, k, |i, j| u[(i, j)] * decay.powi(j as i32));
        Matrix::from_faer64(mul(us.as_ref(), v.as_ref().transpose()).as_ref())
    }

    fn max_abs_diff(a: &Matrix, b: &Matrix) -> f32 {
        a.data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn dense_svd_reconstructs_and_is_orthonormal() {
        let m = gaussian(30, 20, 1);
        let svd = dense_svd(&m, 100).unwrap();
        assert_eq!(svd.rank(), 20);
        assert!(svd.s.windows(2).all(|w| w[0] >= w[1]));
        assert!(max_abs_diff(&svd.reconstruct(), &m) < 1e-4);
        let utu = svd.u.transpose().matmul(&svd.u).unwrap();
        let eye = Matrix::from_fn(20, 20, |i, j| f32::from(u8::from(i == j)));
        assert!(max_abs_diff(&utu, &eye) < 1e-5);
        assert!(dense_svd(&m, 0).is_err());
        let mut bad = m.clone();
        bad.data[3] = f32::NAN;
        assert_eq!(dense_svd(&bad, 2), Err(OsdError::NonFinite("dense_svd")));
    }

    #[test]
    fn randomized_matches_dense_on_decaying_spectrum() {
        let m = decaying(120, 80, 0.7, 1, 2);
        let exact = dense_svd(&m, 10).unwrap();
        let approx = randomized_svd(&m, 10, 8, 2, 42).unwrap();
        for (a, b) in exact.s.iter().zip(&approx.s) {
            assert!((a - b).abs() <= 1e-4 * exact.s[0], "{a} vs {b}");
        }
        let e1 = relative_frobenius_error_of(&m, &exact);
        let e2 = relative_frobenius_error_of(&m, &approx);
        assert!(e2 <= e1 * 1.001 + 1e-6, "{e2} vs {e1}");
        assert_eq!(approx, randomized_svd(&m, 10, 8, 2, 42).unwrap());
    }

    fn relative_frobenius_error_of(m: &Matrix, svd: &Svd) -> f64 {
        crate::osd::relative_frobenius_error(m, &svd.reconstruct()).unwrap()
    }

    #[test]
    fn lora_svd_equals_dense_svd_of_formed_delta() {
        for &(out, inp, r, scale) in &[(48, 40, 6, 2.0f32), (16, 64, 8, 0.5), (5, 7, 8, 1.0)] {
            let a = gaussian(r, inp, 10 + r as u64);
            let b = gaussian(out, r, 20 + r as u64);
            let mut delta = b.matmul(&a).unwrap();
            delta.data.iter_mut().for_each(|x| *x *= scale);
            let lora = lora_svd(&a, &b, scale).unwrap();
            let dense = dense_svd(&delta, lora.rank()).unwrap();
            assert_eq!(lora.rank(), r.min(out).min(inp));
            for (x, y) in lora.s.iter().zip(&dense.s) {
                assert!((x - y).abs() <= 1e-4 * y.max(1e-3), "{x} vs {y}");
            }
            let scale_ref = delta.frobenius_norm() as f32;
            assert!(max_abs_diff(&lora.reconstruct(), &delta) <= 1e-5 * scale_ref);
        }
        assert!(lora_svd(&gaussian(4, 10, 1), &gaussian(10, 3, 2), 1.0).is_err());
    }

    /// Factors too ill-conditioned for the Gram path (two nearly equal
    /// columns of B, a zero row of A: an untrained LoRA half) take the
    /// Householder path and stay exact.
    #[test]
    fn ill_conditioned_lora_factors_fall_back_to_householder() {
        let mut a = gaussian(4, 30, 3);
        let mut b = gaussian(40, 4, 4);
        for i in 0..40 {
            let v = b.get(i, 0);
            b.data[i * 4 + 1] = v * (1.0 + 1e-7);
        }
        assert!(gram_r(b.to_faer64().as_ref()).is_none());
        let mut delta = b.matmul(&a).unwrap();
        let lora = lora_svd(&a, &b, 1.0).unwrap();
        let norm = delta.frobenius_norm() as f32;
        assert!(max_abs_diff(&lora.reconstruct(), &delta) <= 1e-5 * norm);
        a.data[..30].iter_mut().for_each(|x| *x = 0.0);
        delta = b.matmul(&a).unwrap();
        let lora = lora_svd(&a, &b, 1.0).unwrap();
        assert!(max_abs_diff(&lora.reconstruct(), &delta) <= 1e-5 * norm);
    }

    /// Timing of lora_svd against dense_svd of the formed delta (best of 3,
    /// after a warm-up): `cargo test --release --lib osd::svd -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing_lora_vs_dense() {
        let best = |f: &mut dyn FnMut()| {
            f();
            (0..3)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed()
                })
                .min()
                .unwrap()
        };
        for &(out, inp, r) in &[(384, 384, 8), (1024, 3072, 12)] {
            let a = gaussian(r, inp, 1);
            let b = gaussian(out, r, 2);
            let delta = b.matmul(&a).unwrap();
            let t_lora = best(&mut || drop(lora_svd(&a, &b, 1.0).unwrap()));
            let t_form = best(&mut || drop(b.matmul(&a).unwrap()));
            let t_dense = best(&mut || drop(dense_svd(&delta, r).unwrap()));
            let t_rand = best(&mut || drop(randomized_svd(&delta, r, 8, 2, 7).unwrap()));
            let s = (
                lora_svd(&a, &b, 1.0).unwrap().s,
                dense_svd(&delta, r).unwrap().s,
            );
            let gap =
                s.0.iter()
                    .zip(&s.1)
                    .map(|(x, y)| (x - y).abs() / y)
                    .fold(0.0, f32::max);
            println!(
                "{out}x{inp} r={r}: lora_svd {t_lora:?} | form B·A {t_form:?} + dense_svd {t_dense:?} \
                 | randomized_svd {t_rand:?} | max rel. σ gap {gap:.2e}"
            );
        }
    }
}
