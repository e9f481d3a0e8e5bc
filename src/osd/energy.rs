//! Energy retention: the share of ‖ΔW‖²_F kept by the top-k singular
//! components, `Σ_{i<k} σ_i² / Σ_i σ_i²` (Eckart–Young: the best possible
//! rank-k retention). Used to pick ranks and to plot spectra.

/// Cumulative σ² share: `curve[k-1]` is the retention at rank k. Accumulated
/// in f64, non-decreasing, and ends at exactly 1.0. An all-zero spectrum
/// retains everything at every rank (there is nothing to lose).
pub fn energy_curve(s: &[f32]) -> Vec<f64> {
    let total = total_energy(s);
    let mut acc = 0.0;
    let mut curve: Vec<f64> = s
        .iter()
        .map(|&x| {
            acc += f64::from(x) * f64::from(x);
            if total > 0.0 {
                (acc / total).min(1.0)
            } else {
                1.0
            }
        })
        .collect();
    if let Some(last) = curve.last_mut() {
        *last = 1.0;
    }
    curve
}

/// `Σ σ_i²` = ‖ΔW‖²_F when `s` is the full spectrum.
pub fn total_energy(s: &[f32]) -> f64 {
    s.iter().map(|&x| f64::from(x) * f64::from(x)).sum()
}

/// Smallest rank whose retention reaches `target` (0 for target ≤ 0; the
/// full length when the target is above every point of the curve).
pub fn rank_for_retention(s: &[f32], target: f64) -> usize {
    if target <= 0.0 {
        return 0;
    }
    let curve = energy_curve(s);
    curve
        .iter()
        .position(|&e| e >= target)
        .map_or(curve.len(), |i| i + 1)
}

/// Retention over several modules at a common rank, each weighted by its
/// total energy: `agg[k-1] = Σ_m E_m(k) / Σ_m E_m`, where `E_m(k)` is the
/// energy module m keeps at rank k (all of it past its own length). This is
/// the share of the whole adapter's ‖ΔW‖² kept when every module is cut to k.
pub fn aggregate_curve(spectra: &[&[f32]]) -> Vec<f64> {
    let len = spectra.iter().map(|s| s.len()).max().unwrap_or(0);
    let total: f64 = spectra.iter().map(|s| total_energy(s)).sum();
    let mut kept = vec![0.0f64; len];
    for s in spectra {
        let mut acc = 0.0;
        for (k, slot) in kept.iter_mut().enumerate() {
            if let Some(&x) = s.get(k) {
                acc += f64::from(x) * f64::from(x);
            }
            *slot += acc;
        }
    }
    let mut curve: Vec<f64> = kept
        .iter()
        .map(|&e| {
            if total > 0.0 {
                (e / total).min(1.0)
            } else {
                1.0
            }
        })
        .collect();
    if let Some(last) = curve.last_mut() {
        *last = 1.0;
    }
    curve
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_is_monotone_and_ends_at_one() {
        let s = [4.0f32, 2.0, 1.0, 0.5, 0.1];
        let c = energy_curve(&s);
        assert!(c.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*c.last().unwrap(), 1.0);
        assert!((c[0] - 16.0 / 21.26).abs() < 1e-7);
        assert_eq!(rank_for_retention(&s, 0.0), 0);
        assert_eq!(rank_for_retention(&s, 0.75), 1);
        assert_eq!(rank_for_retention(&s, 0.9), 2);
        assert_eq!(rank_for_retention(&s, 0.95), 3);
        assert_eq!(rank_for_retention(&s, 1.0), 5);
        assert_eq!(energy_curve(&[0.0, 0.0]), vec![1.0, 1.0]);
        assert!(energy_curve(&[]).is_empty());
    }

    #[test]
    fn aggregate_weights_by_total_energy() {
        let a = [3.0f32, 1.0]; // energy 10
        let b = [1.0f32, 1.0, 1.0, 1.0]; // energy 4
        let c = aggregate_curve(&[&a, &b]);
        assert_eq!(c.len(), 4);
        assert!((c[0] - 10.0 / 14.0).abs() < 1e-12);
        assert!((c[1] - 12.0 / 14.0).abs() < 1e-12);
        assert!(c.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(c[3], 1.0);
        assert_eq!(aggregate_curve(&[&a]), energy_curve(&a));
    }
}
