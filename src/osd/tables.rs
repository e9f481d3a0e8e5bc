//! Per-column tables that make a (rank, budget) point cost microseconds.
//!
//! For each singular component j the squared entries of the unit vectors
//! u_j and v_j are sorted once (descending), with prefix sums. Every
//! selection the budget solvers make keeps, in each column, a prefix of that
//! order above a threshold: OSD's interleaved damage of `Û[i,j]` is
//! `σ_j²·W_j·U[i,j]²` (W_j = Σ_l w_l·V[l,j]², 1 without calibration) and of
//! `V̂ᵀ[j,l]` is `σ_j²·w_l·V[l,j]²`; MagTruncSVD's `|Û[i,j]| = √σ_j·|U[i,j]|`.
//! A global threshold is found by bisection, and the damage of keeping
//! shares a_j of u_j's and b_j of v_j's mass is `σ_j²·(1 − a_j·b_j)` (exact
//! for one column; the cross-column interaction of the masks is neglected).

use super::svd::Svd;

/// One factor column: keys sorted descending and the prefix sums of the
/// squared entries (the mass kept by the first `i` keys).
struct Column {
    keys: Vec<f32>,
    mass: Vec<f32>,
}

impl Column {
    fn new(mut pairs: Vec<(f32, f32)>) -> Self {
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut mass = Vec::with_capacity(pairs.len() + 1);
        let mut acc = 0.0f64;
        mass.push(0.0);
        for (_, m) in &pairs {
            acc += f64::from(*m);
            mass.push(acc as f32);
        }
        Self {
            keys: pairs.into_iter().map(|(k, _)| k).collect(),
            mass,
        }
    }

    /// Entries whose key is at least `tau`, and their mass.
    fn above(&self, tau: f64) -> (usize, f64) {
        let count = self.keys.partition_point(|&k| f64::from(k) >= tau);
        (count, f64::from(self.mass[count]))
    }
}

/// How the entries are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranking {
    /// OSD's interleaved damage.
    Damage,
    /// MagTruncSVD's absolute value.
    Magnitude,
}

/// Sorted columns of one module's SVD.
pub struct ColumnTables {
    sigma2: Vec<f64>,
    /// Per column: u keys = U[i,j]² (mass = key).
    u: Vec<Column>,
    /// Per column: v keys = w_l·V[l,j]², mass = V[l,j]².
    v: Vec<Column>,
    /// W_j = Σ_l w_l·V[l,j]² (1 without calibration).
    w: Vec<f64>,
}

/// Outcome of one selection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kept {
    /// Entries kept.
    pub entries: u64,
    /// Σ_j σ_j²·a_j·b_j: the part of the rank-k energy reproduced.
    pub energy: f64,
}

impl ColumnTables {
    /// Tables of `svd` with optional per-input-column weights.
    pub fn new(svd: &Svd, input_weight: Option<&[f32]>) -> Self {
        let k = svd.rank();
        let weight = |l: usize| input_weight.and_then(|w| w.get(l)).map_or(1.0, |x| *x);
        let mut u = Vec::with_capacity(k);
        let mut v = Vec::with_capacity(k);
        let mut w = Vec::with_capacity(k);
        for j in 0..k {
            u.push(Column::new(
                (0..svd.u.rows)
                    .map(|i| {
                        let x = svd.u.get(i, j).powi(2);
                        (x, x)
                    })
                    .collect(),
            ));
            let pairs: Vec<(f32, f32)> = (0..svd.vt.cols)
                .map(|l| {
                    let x = svd.vt.get(j, l).powi(2);
                    (weight(l) * x, x)
                })
                .collect();
            w.push(pairs.iter().map(|p| f64::from(p.0)).sum());
            v.push(Column::new(pairs));
        }
        Self {
            sigma2: svd.s.iter().map(|s| f64::from(*s).powi(2)).collect(),
            u,
            v,
            w,
        }
    }

    /// Thresholds on the u and v keys of column j for a global score `t`.
    fn taus(&self, j: usize, t: f64, ranking: Ranking) -> (f64, f64) {
        let s2 = self.sigma2[j].max(f64::MIN_POSITIVE);
        match ranking {
            Ranking::Damage => (t / (s2 * self.w[j].max(f64::MIN_POSITIVE)), t / s2),
            // |Û| ≥ m ⇔ U² ≥ m²/σ (t stands for m²).
            Ranking::Magnitude => {
                let s = s2.sqrt();
                (t / s, t / s)
            }
        }
    }

    fn at(&self, k: usize, t: f64, ranking: Ranking) -> Kept {
        let (mut entries, mut energy) = (0u64, 0.0f64);
        for j in 0..k.min(self.u.len()) {
            let (tu, tv) = self.taus(j, t, ranking);
            let (cu, a) = self.u[j].above(tu);
            let (cv, b) = self.v[j].above(tv);
            entries += (cu + cv) as u64;
            energy += self.sigma2[j] * a.min(1.0) * b.min(1.0);
        }
        Kept { entries, energy }
    }

    /// The best selection of at most `budget` entries among the first `k`
    /// columns, ranked by `ranking`: a bisection on the threshold.
    pub fn keep(&self, k: usize, budget: u64, ranking: Ranking) -> Kept {
        let all = self.at(k, 0.0, ranking);
        if all.entries <= budget {
            return all;
        }
        // Bisection in log space between a threshold nothing passes and 0.
        let (mut lo, mut hi) = (-200.0f64, 200.0f64); // log2 of t
        let mut best = Kept {
            entries: 0,
            energy: 0.0,
        };
        for _ in 0..48 {
            let mid = 0.5 * (lo + hi);
            let kept = self.at(k, mid.exp2(), ranking);
            if kept.entries <= budget {
                best = kept;
                hi = mid;
            } else {
                lo = mid;
            }
            if hi - lo < 1e-3 {
                break;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osd::precision::ValueDtype;
    use crate::osd::svd::tests::decaying;
    use crate::osd::{dense_svd, OsdModule, Selector};

    /// The table's kept energy predicts the exact error of the module built
    /// with the same budget.
    #[test]
    fn tables_predict_the_exact_selection() {
        let m = decaying(60, 50, 0.8, 1, 4);
        let svd = dense_svd(&m, 10).unwrap();
        let tables = ColumnTables::new(&svd, None);
        let total: f64 = m.data.iter().map(|x| f64::from(*x).powi(2)).sum();
        for (k, budget) in [(4usize, 200u64), (8, 300), (10, 1100)] {
            let kept = tables.keep(k, budget, Ranking::Damage);
            assert!(kept.entries <= budget);
            let bytes = crate::osd::sparse_module_bytes(60, 50, k, kept.entries, ValueDtype::F32);
            let module =
                OsdModule::sparsified(&svd, 1, k, bytes, ValueDtype::F32, None, Selector::Damage)
                    .unwrap();
            let exact = module.relative_error(&m).unwrap().powi(2) * total;
            let tail: f64 = total
                - svd
                    .s
                    .iter()
                    .take(k)
                    .map(|s| f64::from(*s).powi(2))
                    .sum::<f64>();
            let predicted = tail
                + svd
                    .s
                    .iter()
                    .take(k)
                    .map(|s| f64::from(*s).powi(2))
                    .sum::<f64>()
                - kept.energy;
            assert!(
                (predicted - exact).abs() < 0.25 * exact + 1e-9,
                "k {k}: {predicted} vs {exact}"
            );
        }
    }
}
