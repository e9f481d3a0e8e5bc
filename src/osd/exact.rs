//! Exact squared errors ‖ΔW − Δ̂‖² without forming ΔW when ΔW = s·B·A is a
//! LoRA product: every term is a trace of small Gram matrices,
//! `⟨B·A, P·Q⟩ = tr((BᵀP)(QAᵀ))` and `‖P·Q‖² = tr((PᵀP)(QQᵀ))`, costing
//! O((n + d)·r·k) instead of O(n·d·k). Dense deltas are compared densely.

use super::delta::{DeltaForm, ModuleDelta};
use super::precision::ValueDtype;
use super::{Csr, Matrix, OsdError, OsdModule};

/// k×k Gram matrix `FᵀF` of a sparse n×k factor (row outer products).
fn gram_rows(f: &Csr) -> Vec<f64> {
    let k = f.cols();
    let mut g = vec![0.0f64; k * k];
    for i in 0..f.rows() {
        let (idx, val) = f.row(i);
        for (&a, &x) in idx.iter().zip(val) {
            let row = &mut g[a as usize * k..][..k];
            for (&b, &y) in idx.iter().zip(val) {
                row[b as usize] += f64::from(x) * f64::from(y);
            }
        }
    }
    g
}

/// `‖s·B·A‖²` exactly: `s²·tr((BᵀB)(AAᵀ))` in f64.
pub fn lora_norm2(a: &Matrix, b: &Matrix, scale: f32) -> f64 {
    use super::svd::mul;
    let (b64, a64) = (b.to_faer64(), a.to_faer64());
    let gb = mul(b64.as_ref().transpose(), b64.as_ref());
    let ga = mul(a64.as_ref(), a64.as_ref().transpose());
    let s = f64::from(scale);
    let r = gb.nrows().min(ga.nrows());
    let trace: f64 = (0..r)
        .flat_map(|i| (0..r).map(move |j| (i, j)))
        .map(|(i, j)| gb[(i, j)] * ga[(j, i)])
        .sum();
    s * s * trace
}

/// `‖s·B·A − s·B'·A'‖²` for B', A' the factors rounded by `round`, without
/// cancellation: `BA − B'A' = [B − B', B']·[A; A − A']`.
pub fn lora_cast_error2(a: &Matrix, b: &Matrix, scale: f32, dtype: ValueDtype) -> f64 {
    let (n, r, d) = (b.rows, b.cols, a.cols);
    let (mut b_cast, mut a_cast) = (b.clone(), a.clone());
    dtype.round_slice(&mut b_cast.data);
    dtype.round_slice(&mut a_cast.data);
    let x = Matrix::from_fn(n, 2 * r, |i, j| {
        let (v, c) = (b.get(i, j % r), b_cast.get(i, j % r));
        if j < r {
            v - c
        } else {
            c
        }
    });
    let y = Matrix::from_fn(2 * r, d, |j, l| {
        let (v, c) = (a.get(j % r, l), a_cast.get(j % r, l));
        if j < r {
            v
        } else {
            v - c
        }
    });
    lora_norm2(&y, &x, scale)
}

/// `‖Δ − Δ̂‖²` of a compressed module against its delta; `norm2` is
/// ‖Δ‖² computed exactly (`lora_norm2` for LoRA deltas).
pub fn error2(delta: &ModuleDelta, module: &OsdModule, norm2: f64) -> Result<f64, OsdError> {
    match &delta.form {
        DeltaForm::LowRank { a, b, scale } if module.residual().is_none() => {
            Ok(low_rank_error2(a, b, *scale, module, norm2))
        }
        _ => {
            let dense = delta.dense()?;
            let approx = module.reconstruct();
            Ok(dense
                .data
                .iter()
                .zip(&approx.data)
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                .sum())
        }
    }
}

/// `‖s·B·A − λ·U·Vt‖²` by traces of small Gram matrices.
fn low_rank_error2(a: &Matrix, b: &Matrix, scale: f32, module: &OsdModule, norm2: f64) -> f64 {
    let (p, q) = (module.u(), module.vt());
    let (r, k) = (a.rows, p.cols());
    // BᵀP (r×k) and QAᵀ (k×r).
    let mut btp = vec![0.0f64; r * k];
    for i in 0..p.rows() {
        let (idx, val) = p.row(i);
        let brow = b.row(i);
        for (&j, &x) in idx.iter().zip(val) {
            for m in 0..r {
                btp[m * k + j as usize] += f64::from(brow[m]) * f64::from(x);
            }
        }
    }
    let at = a.transpose(); // d×r: rows are contiguous
    let mut qat = vec![0.0f64; k * r];
    for j in 0..q.rows() {
        let (idx, val) = q.row(j);
        for (&l, &x) in idx.iter().zip(val) {
            let arow = at.row(l as usize);
            for m in 0..r {
                qat[j * r + m] += f64::from(x) * f64::from(arow[m]);
            }
        }
    }
    let cross: f64 = (0..r)
        .flat_map(|m| (0..k).map(move |j| (m, j)))
        .map(|(m, j)| btp[m * k + j] * qat[j * r + m])
        .sum();
    let ptp = gram_rows(p);
    let qqt = gram_rows(&q.transpose());
    let pq2: f64 = ptp.iter().zip(&qqt).map(|(x, y)| x * y).sum();
    let (s, lambda) = (f64::from(scale), f64::from(module.low_rank_weight()));
    (norm2 - 2.0 * s * lambda * cross + lambda * lambda * pq2).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osd::svd::tests::gaussian;
    use crate::osd::{lora_svd, Selector};

    fn dense_err2(x: &Matrix, y: &Matrix) -> f64 {
        x.data
            .iter()
            .zip(&y.data)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum()
    }

    #[test]
    fn gram_errors_equal_dense_errors() {
        let (a, b, s) = (gaussian(6, 40, 1), gaussian(50, 6, 2), 0.7f32);
        let mut delta = b.matmul(&a).unwrap();
        delta.data.iter_mut().for_each(|v| *v *= s);
        let norm2: f64 = delta.data.iter().map(|v| f64::from(*v).powi(2)).sum();
        assert!((lora_norm2(&a, &b, s) - norm2).abs() < 1e-6 * norm2);
        let md = ModuleDelta {
            module: "m".into(),
            base_tensor: "m.weight".into(),
            layer: None,
            fan_in_fan_out: false,
            form: DeltaForm::LowRank {
                a: a.clone(),
                b: b.clone(),
                scale: s,
            },
            stored: Default::default(),
        };
        let svd = lora_svd(&a, &b, s).unwrap();
        for dtype in ValueDtype::ALL {
            let t = OsdModule::trunc_svd(&svd, 3, dtype).unwrap();
            let o = OsdModule::sparsified(&svd, 2, 5, 900, dtype, None, Selector::Damage).unwrap();
            for m in [t, o] {
                let want = dense_err2(&delta, &m.reconstruct());
                let got = error2(&md, &m, lora_norm2(&a, &b, s)).unwrap();
                assert!(
                    (got - want).abs() < 1e-4 * want.max(1e-9),
                    "{got} vs {want}"
                );
            }
        }
        let round = |v: f32| ValueDtype::Bf16.round(v);
        let cast = Matrix::from_fn(50, 40, |i, l| {
            (0..6)
                .map(|m| round(b.get(i, m)) * round(a.get(m, l)))
                .sum::<f32>()
                * s
        });
        let want = dense_err2(&delta, &cast);
        let got = lora_cast_error2(&a, &b, s, ValueDtype::Bf16);
        assert!((got - want).abs() < 1e-3 * want, "{got} vs {want}");
    }
}
