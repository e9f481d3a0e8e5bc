//! Sparse correction of the low-rank + sparse blend variant.
//!
//! With `Δ_r = U_r·Σ_r·V_rᵀ` and residual `R = ΔW − Δ_r`, the correction `S`
//! keeps the `nnz` entries of R with the largest score `R[i,l]²·w_l`
//! (`w_l` = optional per-input-column weight, e.g. `diag(XᵀX)`; 1 when
//! absent) — exactly the entries whose removal from R lowers the (weighted)
//! error most. The blend is
//! `Δ_final = (1 − α)·Δ_r + α·(Δ_r + S) = Δ_r + α·S`, α = `sparse_weight`
//! ∈ [0, 1]: α = 0 is the pure low-rank delta, α = 1 the full correction.

use super::{Csr, Matrix, OsdError};

/// `S`: the top-`nnz` entries of `residual` by `R[i,l]²·w_l` (ties broken by
/// position, so the choice is deterministic). Entries scoring 0 are skipped.
pub fn sparse_residual(
    residual: &Matrix,
    nnz: usize,
    input_weight: Option<&[f32]>,
) -> Result<Csr, OsdError> {
    if let Some(w) = input_weight {
        if w.len() != residual.cols {
            return Err(OsdError::shape(
                "sparse_residual",
                format!("{} input weights for {} columns", w.len(), residual.cols),
            ));
        }
        if w.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err(OsdError::param(
                "input_weight",
                "must be finite and non-negative",
            ));
        }
    }
    let cols = residual.cols.max(1);
    let score = |idx: usize| {
        let r = f64::from(residual.data[idx]);
        r * r * input_weight.map_or(1.0, |w| f64::from(w[idx % cols]))
    };
    let mut order: Vec<(f64, usize)> = (0..residual.data.len())
        .map(|i| (score(i), i))
        .filter(|(s, _)| *s > 0.0)
        .collect();
    let by_rank = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if nnz < order.len() {
        order.select_nth_unstable_by(nnz, by_rank);
        order.truncate(nnz);
    }
    let mut keep = vec![false; residual.data.len()];
    order.iter().for_each(|&(_, i)| keep[i] = true);
    Csr::from_dense_masked(residual, &keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_largest_weighted_entries() {
        let r = Matrix::new(2, 3, vec![0.5, -3.0, 0.0, 2.0, 1.0, -0.1]).unwrap();
        let s = sparse_residual(&r, 2, None).unwrap();
        assert_eq!(s.to_dense().data, vec![0.0, -3.0, 0.0, 2.0, 0.0, 0.0]);
        let s = sparse_residual(&r, 2, Some(&[100.0, 0.0, 1.0])).unwrap();
        assert_eq!(s.to_dense().data, vec![0.5, 0.0, 0.0, 2.0, 0.0, 0.0]);
        assert_eq!(sparse_residual(&r, 100, None).unwrap().nnz(), 5);
        assert_eq!(sparse_residual(&r, 0, None).unwrap().nnz(), 0);
        assert!(sparse_residual(&r, 1, Some(&[1.0])).is_err());
    }
}
