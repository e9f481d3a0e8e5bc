//! Interleaved importance of factor entries (OSD's pruning criterion).
//!
//! Σ is folded evenly into both factors, `Û = U·√Σ` (n×k) and
//! `V̂ᵀ = √Σ·Vᵀ` (k×d), so `Û·V̂ᵀ` is the rank-k approximation and entries of
//! both factors live on the same scale (they compete in one budget).
//!
//! **Damage of zeroing one entry.** With residual `E = ΔW − Û·V̂ᵀ`, zeroing
//! `Û[i,j]` adds `Û[i,j]·e_i·v̂_jᵀ` to the error (v̂_j = row j of V̂ᵀ):
//! `‖E + Û[i,j]·e_i·v̂_jᵀ‖² = ‖E‖² + 2·Û[i,j]·e_iᵀ·E·v̂_j + Û[i,j]²·‖v̂_j‖²`.
//! For an exact truncated SVD, `E·v̂_j = 0` (E lives in the discarded singular
//! directions), so the first-order (cross) term vanishes and the damage is
//! exactly `Û[i,j]²·‖v̂_j‖² = U[i,j]²·σ_j²`. Symmetrically zeroing `V̂ᵀ[j,l]`
//! costs `V̂ᵀ[j,l]²·‖û_j‖²`. This is the "interleaved" importance: an entry of
//! one factor is scored through the paired column of the other.
//!
//! **Several entries.** Because the columns of Û (and the rows of V̂ᵀ) are
//! orthogonal, damages of entries pruned within one factor add up exactly.
//! Pruning P from Û and Q from V̂ᵀ together changes the product by
//! `−P·V̂ᵀ − Û·Q + P·Q`; the interaction `⟨P·V̂ᵀ, Û·Q⟩` (terms
//! `Û[i,j]·V̂ᵀ[j',l]·Û[i,j']·V̂ᵀ[j,l]`) and `P·Q` are second order in the
//! pruned mass and are ignored, as in the paper's one-pass ranking.
//!
//! **Activation-aware weighting (optional).** With calibration inputs X
//! (m×d), the output error is `‖E·Xᵀ‖²`; keeping only the diagonal
//! `w = diag(XᵀX)` weights input column l by `w_l`: the damage of `Û[i,j]`
//! becomes `Û[i,j]²·Σ_l w_l·V̂ᵀ[j,l]²` and that of `V̂ᵀ[j,l]` becomes
//! `V̂ᵀ[j,l]²·w_l·‖û_j‖²`. A common scale of `w` does not change the ranking.

use super::{Matrix, OsdError, Svd};

/// The rank-k factors with Σ folded in: `Δ_k = u · vt`.
#[derive(Debug, Clone, PartialEq)]
pub struct Factors {
    /// `U·√Σ`, n×k.
    pub u: Matrix,
    /// `√Σ·Vᵀ`, k×d.
    pub vt: Matrix,
}

/// Splits Σ evenly between the factors (`U√Σ`, `√Σ Vᵀ`).
pub fn fold_sqrt_sigma(svd: &Svd) -> Factors {
    let root: Vec<f32> = svd.s.iter().map(|s| s.max(0.0).sqrt()).collect();
    Factors {
        u: Matrix::from_fn(svd.u.rows, root.len(), |i, j| svd.u.get(i, j) * root[j]),
        vt: Matrix::from_fn(root.len(), svd.vt.cols, |j, l| svd.vt.get(j, l) * root[j]),
    }
}

/// Damage scores laid out like the factors: `u` is n×k, `vt` is k×d (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Importance {
    pub n: usize,
    pub d: usize,
    pub k: usize,
    pub u: Vec<f64>,
    pub vt: Vec<f64>,
}

/// `diag(XᵀX)` of calibration inputs X (m×d): the per-input-column second
/// moment used as `input_weight`.
pub fn input_second_moment(x: &Matrix) -> Vec<f32> {
    let mut w = vec![0.0f64; x.cols];
    for i in 0..x.rows {
        for (acc, &v) in w.iter_mut().zip(x.row(i)) {
            *acc += f64::from(v) * f64::from(v);
        }
    }
    w.into_iter().map(|v| v as f32).collect()
}

/// Interleaved importance of every entry of `f.u` and `f.vt` (see the module
/// doc for the formula). `input_weight`, when given, has one non-negative
/// finite value per input column (d).
pub fn interleaved_importance(
    f: &Factors,
    input_weight: Option<&[f32]>,
) -> Result<Importance, OsdError> {
    let (n, k, d) = (f.u.rows, f.u.cols, f.vt.cols);
    if f.vt.rows != k {
        return Err(OsdError::shape(
            "interleaved_importance",
            format!("u is {n}x{k} but vt is {}x{d}", f.vt.rows),
        ));
    }
    if let Some(w) = input_weight {
        if w.len() != d {
            return Err(OsdError::shape(
                "interleaved_importance",
                format!("{} input weights for {d} input columns", w.len()),
            ));
        }
        if w.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err(OsdError::param(
                "input_weight",
                "must be finite and non-negative",
            ));
        }
    }
    let weight = |l: usize| input_weight.map_or(1.0, |w| f64::from(w[l]));
    let sq = |x: f32| f64::from(x) * f64::from(x);
    // Weighted squared norms of the paired vectors.
    let v_norm: Vec<f64> = (0..k)
        .map(|j| (0..d).map(|l| weight(l) * sq(f.vt.get(j, l))).sum())
        .collect();
    let u_norm: Vec<f64> = (0..k)
        .map(|j| (0..n).map(|i| sq(f.u.get(i, j))).sum())
        .collect();
    let u =
        f.u.data
            .iter()
            .enumerate()
            .map(|(idx, &x)| sq(x) * v_norm[idx % k])
            .collect();
    let vt =
        f.vt.data
            .iter()
            .enumerate()
            .map(|(idx, &x)| sq(x) * weight(idx % d) * u_norm[idx / d])
            .collect();
    Ok(Importance { n, d, k, u, vt })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osd::svd::tests::gaussian;
    use crate::osd::{dense_svd, relative_frobenius_error};

    /// The score is the exact damage when one entry is zeroed.
    #[test]
    fn score_equals_exact_single_entry_damage() {
        let m = gaussian(12, 9, 5);
        let svd = dense_svd(&m, 4).unwrap();
        let f = fold_sqrt_sigma(&svd);
        let imp = interleaved_importance(&f, None).unwrap();
        let base = f.u.matmul(&f.vt).unwrap();
        let err2 = |approx: &Matrix| m.sub(approx).unwrap().frobenius_norm().powi(2);
        let e0 = err2(&base);
        let mut u = f.u.clone();
        u.data[2 * 4 + 1] = 0.0;
        let damage = err2(&u.matmul(&f.vt).unwrap()) - e0;
        assert!(
            (damage - imp.u[2 * 4 + 1]).abs() < 1e-4 * e0.max(1.0),
            "{damage}"
        );
        let mut vt = f.vt.clone();
        vt.data[3 * 9 + 7] = 0.0;
        let damage = err2(&f.u.matmul(&vt).unwrap()) - e0;
        assert!(
            (damage - imp.vt[3 * 9 + 7]).abs() < 1e-4 * e0.max(1.0),
            "{damage}"
        );
        assert!(relative_frobenius_error(&svd.reconstruct(), &base).unwrap() < 1e-5);
    }

    #[test]
    fn input_weights_scale_v_damage() {
        let svd = dense_svd(&gaussian(6, 5, 9), 3).unwrap();
        let f = fold_sqrt_sigma(&svd);
        let plain = interleaved_importance(&f, None).unwrap();
        let w = [1.0, 0.0, 2.0, 1.0, 1.0];
        let weighted = interleaved_importance(&f, Some(&w)).unwrap();
        for j in 0..3 {
            assert_eq!(weighted.vt[j * 5 + 1], 0.0);
            assert!((weighted.vt[j * 5 + 2] - 2.0 * plain.vt[j * 5 + 2]).abs() < 1e-9);
        }
        let x = Matrix::new(2, 5, vec![1., 0., 1., 1., 1., 0., 0., 1., 0., 0.]).unwrap();
        assert_eq!(input_second_moment(&x), w.to_vec());
        assert!(interleaved_importance(&f, Some(&w[..4])).is_err());
        assert!(interleaved_importance(&f, Some(&[1.0, -1.0, 1.0, 1.0, 1.0])).is_err());
    }
}
