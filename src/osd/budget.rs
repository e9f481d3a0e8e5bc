//! OSD's storage accounting and the one-pass budget solver.
//!
//! A kept entry of Û (n×k) costs a 32-bit value plus a flat index of
//! `⌈log₂(n·k)⌉` bits; one of V̂ᵀ (k×d) costs `32 + ⌈log₂(d·k)⌉`. Per layer:
//! `bits = 32(s_u + s_v) + ⌈log₂(n·k)⌉·s_u + ⌈log₂(d·k)⌉·s_v`, compared with
//! a dense truncated SVD at rank r: `32·r·(n + d)` (the paper's accounting;
//! the CSR bytes actually written are usually smaller).

use super::importance::Importance;

/// `⌈log₂ x⌉` (0 for x ≤ 1).
pub fn ceil_log2(x: u64) -> u32 {
    if x <= 1 {
        0
    } else {
        64 - (x - 1).leading_zeros()
    }
}

/// Bits of one kept entry of a factor with `len` entries.
pub fn entry_bits(len: u64) -> u64 {
    32 + u64::from(ceil_log2(len))
}

/// Storage of an OSD layer keeping `s_u` entries of Û and `s_v` of V̂ᵀ at rank k.
pub fn osd_bits(n: usize, d: usize, k: usize, s_u: usize, s_v: usize) -> u64 {
    let (n, d, k) = (n as u64, d as u64, k as u64);
    entry_bits(n.saturating_mul(k)).saturating_mul(s_u as u64)
        + entry_bits(d.saturating_mul(k)).saturating_mul(s_v as u64)
}

/// Storage of a dense rank-r truncated SVD (f32 factors).
pub fn trunc_svd_bits(n: usize, d: usize, r: usize) -> u64 {
    32u64
        .saturating_mul(r as u64)
        .saturating_mul((n as u64).saturating_add(d as u64))
}

/// Entries kept by the budget solver; masks are laid out like the factors.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// n×k, row-major.
    pub keep_u: Vec<bool>,
    /// k×d, row-major.
    pub keep_vt: Vec<bool>,
    pub s_u: usize,
    pub s_v: usize,
    /// `osd_bits` of the selection; never above the budget.
    pub bits: u64,
}

/// Chooses `s_u`, `s_v` in one pass: both importance lists sorted by
/// descending damage (ties by position, for determinism) are merged, each
/// entry taking its cost until the budget is spent. When the next entry of
/// one list no longer fits, that list is closed and the other (whose entries
/// may be cheaper) continues. Entries with zero damage are never kept.
pub fn select_entries(imp: &Importance, budget_bits: u64) -> Selection {
    let sorted = |scores: &[f64]| {
        let mut idx: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] > 0.0).collect();
        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        idx
    };
    let (list_u, list_v) = (sorted(&imp.u), sorted(&imp.vt));
    let cost_u = entry_bits((imp.n as u64).saturating_mul(imp.k as u64));
    let cost_v = entry_bits((imp.d as u64).saturating_mul(imp.k as u64));
    let mut keep_u = vec![false; imp.u.len()];
    let mut keep_vt = vec![false; imp.vt.len()];
    let (mut iu, mut iv, mut left) = (0, 0, budget_bits);
    let (mut open_u, mut open_v) = (true, true);
    loop {
        let head_u = list_u.get(iu).filter(|_| open_u).map(|&i| imp.u[i]);
        let head_v = list_v.get(iv).filter(|_| open_v).map(|&i| imp.vt[i]);
        let take_u = match (head_u, head_v) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => a >= b,
        };
        if take_u {
            if cost_u > left {
                open_u = false;
                continue;
            }
            keep_u[list_u[iu]] = true;
            iu += 1;
            left -= cost_u;
        } else {
            if cost_v > left {
                open_v = false;
                continue;
            }
            keep_vt[list_v[iv]] = true;
            iv += 1;
            left -= cost_v;
        }
    }
    Selection {
        keep_u,
        keep_vt,
        s_u: iu,
        s_v: iv,
        bits: budget_bits - left,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osd::svd::tests::gaussian;
    use crate::osd::{dense_svd, fold_sqrt_sigma, interleaved_importance};

    #[test]
    fn accounting() {
        assert_eq!(ceil_log2(1), 0);
        assert_eq!(ceil_log2(2), 1);
        assert_eq!(ceil_log2(1024), 10);
        assert_eq!(ceil_log2(1025), 11);
        assert_eq!(osd_bits(100, 50, 8, 10, 20), 10 * (32 + 10) + 20 * (32 + 9));
        assert_eq!(trunc_svd_bits(100, 50, 8), 32 * 8 * 150);
    }

    #[test]
    fn budget_is_never_exceeded_and_keeps_the_most_important() {
        let svd = dense_svd(&gaussian(40, 30, 3), 12).unwrap();
        let imp = interleaved_importance(&fold_sqrt_sigma(&svd), None).unwrap();
        for budget in [0u64, 41, 42, 1000, 7777, 20_000, u64::MAX] {
            let sel = select_entries(&imp, budget);
            assert!(sel.bits <= budget);
            assert_eq!(sel.bits, osd_bits(40, 30, 12, sel.s_u, sel.s_v));
            assert_eq!(sel.keep_u.iter().filter(|&&b| b).count(), sel.s_u);
            assert_eq!(sel.keep_vt.iter().filter(|&&b| b).count(), sel.s_v);
            // Every dropped entry is no more important than every kept one
            // of the same factor.
            let min_kept = (0..imp.u.len())
                .filter(|&i| sel.keep_u[i])
                .map(|i| imp.u[i])
                .fold(f64::INFINITY, f64::min);
            assert!((0..imp.u.len())
                .filter(|&i| !sel.keep_u[i])
                .all(|i| imp.u[i] <= min_kept));
        }
        let all = select_entries(&imp, u64::MAX);
        assert_eq!((all.s_u, all.s_v), (40 * 12, 30 * 12));
    }
}
