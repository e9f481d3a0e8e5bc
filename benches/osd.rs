//! OSD benchmarks (issue 4/7). `cargo bench --bench osd` prints Markdown:
//!
//! 1. Quality at equal storage on the real MiniLM fixtures: TruncSVD,
//!    MagTruncSVD, OSD as published, the low-rank + sparse blend and the
//!    original factors, at 25 / 50 / 75 / 100 % of the adapter's stored
//!    bytes; the same on two synthetic decaying spectra (marked as such);
//!    activation-aware importance with and without calibration inputs; the
//!    cached estimate against the exact compression.
//! 2. Speed, every figure beside an anchor measured in the same run: whole-
//!    adapter analysis of a synthetic Qwen3-0.6B-shaped LoRA r = 12 adapter,
//!    re-evaluation of a point from the caches, fusion per module and per
//!    adapter.
//!
//! `-- --quality` or `-- --speed` runs one part only.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};

mod common;

use common::{fmt, machine, measure, qwen_adapter, qwen_config, write_adapter_dir, Rng};

use expertui::format::package::ExpertContents;
use expertui::format::peft::PeftAdapter;
use expertui::osd::analysis::{output_error, synthetic_inputs, Method, ModuleAnalysis, OsdParams};
use expertui::osd::delta::{adapter_deltas, BaseWeights, DeltaForm, ModuleDelta};
use expertui::osd::expert::{AdapterAnalysis, Calibration};
use expertui::osd::{
    ceil_log2, entry_bits, fold_sqrt_sigma, interleaved_importance, relative_frobenius_error,
    trunc_svd_bits, Csr, Matrix, OsdModule,
};
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Sparsities tried for OSD and MagTruncSVD at each budget (the best is shown).
const SPARSITIES: [f64; 3] = [0.25, 0.5, 0.75];
/// Budgets as a share of the adapter's stored bytes.
const BUDGETS: [f64; 4] = [0.25, 0.5, 0.75, 1.0];
/// Rows of the synthetic Gaussian inputs X of the layer-output error, and its seed.
const X_ROWS: usize = 64;
const X_SEED: u64 = 7;

// ---------------------------------------------------------------- timing

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ------------------------------------------------------- quality: methods

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// One module of a fixture with what every method needs.
struct Case {
    analysis: ModuleAnalysis,
    dense: Matrix,
    x: Matrix,
    /// ‖X ΔWᵀ‖², the weight of this module's output error.
    out_total: f64,
    /// Bits of the module's tensors as the adapter stores them (A, B and,
    /// for DoRA, the magnitude vector; f32).
    stored_bits: u64,
}

/// Outcome of one method on one module.
#[derive(Clone, Copy, Default)]
struct Outcome {
    /// Paper accounting (dense: 32 bits per value; sparse: 32 + index bits).
    bits: u64,
    /// Bytes of the factors (and residual) as expertui serializes them (CSR,
    /// delta-encoded indices, zstd when smaller).
    written: u64,
    rel: f64,
    out: f64,
}

impl Case {
    fn outcome(&self, approx: &Matrix, bits: u64, written: u64) -> Outcome {
        Outcome {
            bits,
            written,
            rel: relative_frobenius_error(&self.dense, approx).unwrap(),
            out: output_error(&self.x, &self.dense, approx).unwrap(),
        }
    }
    fn zero(&self) -> Outcome {
        Outcome {
            rel: 1.0,
            out: 1.0,
            ..Default::default()
        }
    }
}

fn csr_bytes(csr: &Csr) -> u64 {
    csr.to_bytes(true).unwrap().len() as u64
}

fn module_written(m: &OsdModule) -> u64 {
    csr_bytes(m.u()) + csr_bytes(m.vt()) + m.residual().map_or(0, csr_bytes)
}

/// (a) Dense TruncSVD at the largest rank within the budget.
fn trunc_svd(c: &Case, budget: u64) -> (Outcome, usize) {
    let (n, d) = c.analysis.shape();
    let r = ((budget / (32 * (n + d) as u64)) as usize).min(c.analysis.svd.rank());
    if r == 0 {
        return (c.zero(), 0);
    }
    let svd = c.analysis.svd.truncated(r);
    let f = fold_sqrt_sigma(&svd);
    let written =
        csr_bytes(&Csr::from_dense(&f.u).unwrap()) + csr_bytes(&Csr::from_dense(&f.vt).unwrap());
    (
        c.outcome(&svd.reconstruct(), trunc_svd_bits(n, d, r), written),
        r,
    )
}

/// (b) MagTruncSVD: the Σ-folded factors at the relaxed rank k, entries kept
/// by magnitude (|Û|, |V̂ᵀ| in one ranking) under the budget, each costing
/// the same 32 + index bits as OSD's; the same list-closing rule as OSD's
/// solver (a list whose next entry no longer fits is closed).
fn mag_trunc_svd(c: &Case, k: usize, budget: u64) -> Outcome {
    let (n, d) = c.analysis.shape();
    let f = fold_sqrt_sigma(&c.analysis.svd.truncated(k));
    let k = f.u.cols;
    let sorted = |m: &Matrix| {
        let mut idx: Vec<usize> = (0..m.data.len()).filter(|&i| m.data[i] != 0.0).collect();
        idx.sort_by(|&a, &b| m.data[b].abs().total_cmp(&m.data[a].abs()).then(a.cmp(&b)));
        idx
    };
    let (lu, lv) = (sorted(&f.u), sorted(&f.vt));
    let (cu, cv) = (entry_bits((n * k) as u64), entry_bits((d * k) as u64));
    let mut keep_u = vec![false; f.u.data.len()];
    let mut keep_v = vec![false; f.vt.data.len()];
    let (mut iu, mut iv, mut left) = (0, 0, budget);
    let (mut open_u, mut open_v) = (true, true);
    loop {
        let hu = lu.get(iu).filter(|_| open_u).map(|&i| f.u.data[i].abs());
        let hv = lv.get(iv).filter(|_| open_v).map(|&i| f.vt.data[i].abs());
        let take_u = match (hu, hv) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => a >= b,
        };
        if take_u {
            if cu > left {
                open_u = false;
                continue;
            }
            keep_u[lu[iu]] = true;
            iu += 1;
            left -= cu;
        } else {
            if cv > left {
                open_v = false;
                continue;
            }
            keep_v[lv[iv]] = true;
            iv += 1;
            left -= cv;
        }
    }
    let mask = |m: &Matrix, keep: &[bool]| {
        let data = m
            .data
            .iter()
            .zip(keep)
            .map(|(&v, &k)| if k { v } else { 0.0 })
            .collect();
        Matrix::new(m.rows, m.cols, data).unwrap()
    };
    let (u, vt) = (mask(&f.u, &keep_u), mask(&f.vt, &keep_v));
    let approx = u.matmul(&vt).unwrap();
    let written = csr_bytes(&Csr::from_dense_masked(&f.u, &keep_u).unwrap())
        + csr_bytes(&Csr::from_dense_masked(&f.vt, &keep_v).unwrap());
    c.outcome(&approx, budget - left, written)
}

fn osd_params(rank: usize, sparsity: f64, budget: u64) -> OsdParams {
    OsdParams {
        method: Method::Osd,
        rank: rank.max(1),
        sparsity,
        alpha: 1.0,
        budget_bits: Some(budget),
    }
}

/// (c) OSD as published, through `ModuleAnalysis::compress`.
fn osd(c: &Case, rank: usize, sparsity: f64, budget: u64) -> (Outcome, usize) {
    let p = osd_params(rank, sparsity, budget);
    let (module, est) = c.analysis.compress(&p, None).unwrap();
    let o = c.outcome(&module.reconstruct(), est.bits, module_written(&module));
    debug_assert!((o.rel - est.rel_error).abs() < 1e-9);
    (o, module.relaxed_rank())
}

/// (d) Blend at rank r (α = 1) with the residual entries that fill the
/// budget; also returns the rank and the residual's nnz.
fn blend(c: &Case, rank: usize, budget: u64) -> (Outcome, usize, usize) {
    let (n, d) = c.analysis.shape();
    let fit = ((budget / (32 * (n + d) as u64)) as usize).min(c.analysis.svd.rank());
    let r = rank.min(fit);
    if r == 0 {
        return (c.zero(), 0, 0);
    }
    let per_entry = 32 + u64::from(ceil_log2((n * d) as u64));
    let nnz = ((budget - trunc_svd_bits(n, d, r)) / per_entry) as usize;
    let m = OsdModule::blend(&c.dense, &c.analysis.svd, r, nnz, 1.0, None).unwrap();
    assert!(m.storage_bits() <= budget);
    let nnz = m.residual().map_or(0, Csr::nnz);
    (
        c.outcome(&m.reconstruct(), m.storage_bits(), module_written(&m)),
        r,
        nnz,
    )
}

/// Energy-weighted aggregate of per-module outcomes.
fn aggregate(cases: &[Case], outs: &[Outcome]) -> Outcome {
    let (mut e2, mut t, mut o2, mut ot) = (0.0, 0.0, 0.0, 0.0);
    let (mut bits, mut written) = (0, 0);
    for (c, o) in cases.iter().zip(outs) {
        e2 += o.rel.powi(2) * c.analysis.total;
        t += c.analysis.total;
        o2 += o.out.powi(2) * c.out_total;
        ot += c.out_total;
        bits += o.bits;
        written += o.written;
    }
    Outcome {
        bits,
        written,
        rel: (e2 / t).sqrt(),
        out: (o2 / ot).sqrt(),
    }
}

fn load_cases(dir: &str, base: Option<&BaseWeights>) -> (Vec<Case>, usize, Vec<String>) {
    let contents = ExpertContents::from_adapter_dir(&fixture(dir)).unwrap();
    let adapter = contents.adapter.as_ref().unwrap();
    let analysis = AdapterAnalysis::from_adapter(adapter, base, 64).unwrap();
    let stored = |module: &str| -> u64 {
        let info = adapter.modules.iter().find(|m| m.module == module).unwrap();
        info.tensors
            .values()
            .map(|name| {
                let t = adapter.tensors.iter().find(|t| &t.name == name).unwrap();
                8 * t.byte_len()
            })
            .sum()
    };
    let total_modules = adapter.modules.len();
    let skipped = analysis.skipped.clone();
    let cases = analysis
        .modules
        .into_iter()
        .map(|m| {
            let dense = m.delta.dense().unwrap();
            let x = synthetic_inputs(X_ROWS, dense.cols, X_SEED);
            let out_total = x
                .matmul(&dense.transpose())
                .unwrap()
                .frobenius_norm()
                .powi(2);
            let stored_bits = stored(&m.delta.module);
            Case {
                analysis: m,
                dense,
                x,
                out_total,
                stored_bits,
            }
        })
        .collect();
    (cases, total_modules, skipped)
}

/// Four 384×384 LoRA modules of rank 16 whose singular values decay like
/// `decay^j` (B's columns scaled): a stand-in for a trained adapter's
/// decaying spectrum, to contrast with the fixtures' flat ones. With
/// `heavy`, the entries of A and B are cubed (heavy-tailed, sparse-ish
/// singular vectors: the paper's premise); otherwise Gaussian-like.
fn synthetic_cases(decay: f32, heavy: bool, seed: u64) -> Vec<Case> {
    let (n, d, r) = (384, 384, 16);
    (0..4u64)
        .map(|i| {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i + 1));
            let draw = |rng: &mut Rng| {
                let w = rng.weight();
                if heavy {
                    w * w * w * 2500.0
                } else {
                    w
                }
            };
            let a = Matrix::from_fn(r, d, |_, _| draw(&mut rng));
            let b = Matrix::from_fn(n, r, |_, j| draw(&mut rng) * decay.powi(j as i32));
            let delta = ModuleDelta {
                module: format!("synthetic.{i}"),
                base_tensor: format!("synthetic.{i}.weight"),
                layer: Some(i as u32),
                fan_in_fan_out: false,
                form: DeltaForm::LowRank { a, b, scale: 1.0 },
            };
            let stored_bits = delta.original_bits();
            let analysis = ModuleAnalysis::new(delta, 64, None).unwrap();
            let dense = analysis.delta.dense().unwrap();
            let x = synthetic_inputs(X_ROWS, d, X_SEED);
            let out_total = x
                .matmul(&dense.transpose())
                .unwrap()
                .frobenius_norm()
                .powi(2);
            Case {
                analysis,
                dense,
                x,
                out_total,
                stored_bits,
            }
        })
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

/// Every method at every budget on `cases`; appends a spectrum row and the
/// table rows.
fn evaluate(
    label: &str,
    cases: &[Case],
    all_modules: usize,
    skipped: &[String],
    spectra: &mut String,
    table: &mut String,
) {
    let stored: u64 = cases.iter().map(|c| c.stored_bits).sum();
    let mut shapes: Vec<String> = cases
        .iter()
        .map(|c| {
            let (n, d) = c.analysis.shape();
            format!("{n}×{d}")
        })
        .collect();
    shapes.dedup();
    // Energy share ‖ΔW‖² kept by the top-j components, over all modules.
    let total: f64 = cases.iter().map(|c| c.analysis.total).sum();
    let kept = |j: usize| -> f64 {
        cases
            .iter()
            .map(|c| {
                c.analysis
                    .svd
                    .s
                    .iter()
                    .take(j)
                    .map(|s| f64::from(*s).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / total
    };
    let sigma_ratio: Vec<String> = cases
        .iter()
        .take(1)
        .map(|c| {
            let s = &c.analysis.svd.s;
            let last = s.len().min(8) - 1;
            format!(
                "σ₁/σ_{} = {:.2}",
                last + 1,
                s[0] / s[last].max(f32::MIN_POSITIVE)
            )
        })
        .collect();
    let form = match cases.first().map(|c| &c.analysis.delta.form) {
        Some(DeltaForm::LowRank { .. }) => "factored (LoRA QR path)",
        _ => "dense (faer SVD)",
    };
    spectra.push_str(&format!(
        "| {label} | {} of {all_modules} ({}; skipped: {}) | {} | {form} | {} | {} | {} | {} | {} |\n",
        cases.len(),
        shapes.join(", "),
        skipped.len(),
        stored / 8,
        pct(kept(1)),
        pct(kept(2)),
        pct(kept(4)),
        pct(kept(8)),
        sigma_ratio.join("")
    ));
    for &frac in &BUDGETS {
        let budgets: Vec<u64> = cases
            .iter()
            .map(|c| (c.stored_bits as f64 * frac) as u64)
            .collect();
        let budget_bytes = budgets.iter().sum::<u64>() / 8;
        let head = format!("{label} | {:.0} % = {budget_bytes} B", frac * 100.0);
        let row = |table: &mut String, method: &str, setting: String, o: Outcome| {
            table.push_str(&format!(
                "| {head} | {method} | {setting} | {} | {} | {:.4} | {:.4} |\n",
                o.bits.div_ceil(8),
                o.written,
                o.rel,
                o.out
            ));
        };
        // (a) TruncSVD
        let ts: Vec<(Outcome, usize)> = cases
            .iter()
            .zip(&budgets)
            .map(|(c, &b)| trunc_svd(c, b))
            .collect();
        let ranks: Vec<usize> = ts.iter().map(|t| t.1).collect();
        let outs: Vec<Outcome> = ts.iter().map(|t| t.0).collect();
        row(
            table,
            "TruncSVD",
            format!("rank {}", range(&ranks)),
            aggregate(cases, &outs),
        );
        // (b) MagTruncSVD and (c) OSD, best sparsity of SPARSITIES.
        let mut best_mag: Option<(f64, Outcome, String)> = None;
        let mut best_osd: Option<(f64, Outcome, String)> = None;
        for &s in &SPARSITIES {
            let ks: Vec<usize> = cases
                .iter()
                .zip(&budgets)
                .map(|(c, &b)| c.analysis.relaxed_rank(&osd_params(1, s, b)))
                .collect();
            let mag: Vec<Outcome> = cases
                .iter()
                .zip(&budgets)
                .zip(&ks)
                .map(|((c, &b), &k)| mag_trunc_svd(c, k, b))
                .collect();
            let agg = aggregate(cases, &mag);
            let setting = format!("sparsity {s} → k {}", range(&ks));
            if best_mag.as_ref().is_none_or(|b| agg.rel < b.0) {
                best_mag = Some((agg.rel, agg, setting));
            }
            let os: Vec<(Outcome, usize)> = cases
                .iter()
                .zip(&budgets)
                .zip(&ranks)
                .map(|((c, &b), &r)| osd(c, r, s, b))
                .collect();
            let ks: Vec<usize> = os.iter().map(|o| o.1).collect();
            let outs: Vec<Outcome> = os.iter().map(|o| o.0).collect();
            let agg = aggregate(cases, &outs);
            let setting = format!("sparsity {s} → k {}", range(&ks));
            if best_osd.as_ref().is_none_or(|b| agg.rel < b.0) {
                best_osd = Some((agg.rel, agg, setting));
            }
        }
        let (_, o, s) = best_mag.unwrap();
        row(table, "MagTruncSVD", s, o);
        let (_, o, s) = best_osd.unwrap();
        row(table, "**OSD (published)**", s, o);
        // (d) Blend: one rank cap for all modules, the best of 1..=max fit.
        let max_fit = ranks.iter().copied().max().unwrap_or(0);
        let mut blends: Vec<(usize, Outcome, String)> = Vec::new();
        for cap in 1..=max_fit {
            let bl: Vec<(Outcome, usize, usize)> = cases
                .iter()
                .zip(&budgets)
                .map(|(c, &b)| blend(c, cap, b))
                .collect();
            let outs: Vec<Outcome> = bl.iter().map(|b| b.0).collect();
            let agg = aggregate(cases, &outs);
            let cells: usize = cases.iter().map(|c| c.dense.data.len()).sum();
            let nnz: usize = bl.iter().map(|b| b.2).sum();
            let used: Vec<usize> = bl.iter().map(|b| b.1).collect();
            let setting = format!(
                "rank {} + {nnz} residual entries ({:.2} % of n·d), α 1",
                range(&used),
                100.0 * nnz as f64 / cells as f64
            );
            blends.push((cap, agg, setting));
        }
        let best = blends
            .iter()
            .min_by(|x, y| x.1.rel.total_cmp(&y.1.rel))
            .cloned();
        if let Some((cap, o, setting)) = best {
            row(table, "blend", setting, o);
            // The same budget with one rank traded for residual entries.
            if let Some((_, o, setting)) = blends
                .iter()
                .find(|b| b.0 + 1 == cap)
                .or_else(|| blends.iter().find(|b| b.0 == cap + 1))
            {
                row(table, "blend (other split)", setting.clone(), *o);
            }
        }
    }
    // (e) the original factors.
    let original = match cases.first().map(|c| &c.analysis.delta.form) {
        Some(DeltaForm::LowRank { .. }) => "A, B (f32)",
        _ => "A, B, magnitude (f32) + the base weights",
    };
    table.push_str(&format!(
        "| {label} | 100 % = {} B | original factors | {original} | {} | {} | 0 (the reference) | 0 |\n",
        stored / 8,
        stored / 8,
        stored / 8
    ));
}

fn quality(report: &mut String) {
    let base = BaseWeights::load(&fixture("merge/base-layer0-subset.safetensors")).unwrap();
    let fixtures: [(&str, &str, Option<&BaseWeights>); 3] = [
        ("minilm-lora-r8", "LoRA r8", None),
        ("minilm-lora-rslora-pattern", "rsLoRA r8 (key r4)", None),
        (
            "minilm-dora-r8",
            "DoRA r8 + base-layer0-subset",
            Some(&base),
        ),
    ];
    let mut spectra = String::new();
    let mut table = String::from(
        "| fixture | budget | method | setting | bytes (paper accounting) | bytes written (CSR + zstd) | rel. Frobenius error | layer-output error |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (dir, label, base) in fixtures {
        let (cases, all_modules, skipped) = load_cases(dir, base);
        evaluate(
            label,
            &cases,
            all_modules,
            &skipped,
            &mut spectra,
            &mut table,
        );
    }
    for (decay, heavy, seed) in [(0.7f32, false, 11u64), (0.7, true, 11)] {
        let cases = synthetic_cases(decay, heavy, seed);
        let label = format!(
            "synthetic LoRA r16, σ ≈ {decay}^j, {} factors (not a fixture)",
            if heavy {
                "heavy-tailed (cubed)"
            } else {
                "Gaussian"
            }
        );
        evaluate(&label, &cases, cases.len(), &[], &mut spectra, &mut table);
    }
    report.push_str("Fixtures and their spectra (share of ‖ΔW‖² in the top j singular components, all modules together):\n\n");
    report.push_str("| fixture | modules analysed | stored bytes (those modules) | SVD | top 1 | top 2 | top 4 | top 8 | first module |\n|---|---|---|---|---|---|---|---|---|\n");
    report.push_str(&spectra);
    report.push_str(&format!(
        "\nQuality at equal storage. Budget per module = share × the module's stored bytes; errors are energy-weighted over the modules (relative Frobenius: weight ‖ΔW‖²; layer output ‖XΔWᵀ − XΔ̂ᵀ‖/‖XΔWᵀ‖ on synthetic Gaussian inputs X, {X_ROWS} rows, seed {X_SEED}, weight ‖XΔWᵀ‖²). OSD and MagTruncSVD: best of sparsity {SPARSITIES:?}; blend: best rank cap, α = 1.\n\n"
    ));
    report.push_str(&table);
    calibration(report);
    estimate_vs_exact(report);
}

/// Activation-aware importance: the LoRA r8 fixture compressed with and
/// without calibration inputs, both judged on those inputs.
fn calibration(report: &mut String) {
    let contents = ExpertContents::from_adapter_dir(&fixture("minilm-lora-r8")).unwrap();
    let adapter = contents.adapter.as_ref().unwrap();
    let (deltas, skipped) = adapter_deltas(adapter, None).unwrap();
    // Per module: Gaussian rows times per-feature scales exp(N(0, 1)), so a
    // few input features dominate, as in real activations.
    let draw = |seed: u64| -> Calibration {
        deltas
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let cols = d.shape().1;
                let scales = synthetic_inputs(1, cols, 1000 + i as u64);
                let mut x = synthetic_inputs(X_ROWS, cols, seed + i as u64);
                for (k, v) in x.data.iter_mut().enumerate() {
                    *v *= scales.data[k % cols].exp();
                }
                (d.module.clone(), x)
            })
            .collect()
    };
    let calib = draw(2000);
    // Held-out inputs: same feature scales, other Gaussian draws.
    let held_out = draw(3000);
    let plain = AdapterAnalysis::from_deltas(deltas.clone(), skipped.clone(), 64).unwrap();
    let aware = AdapterAnalysis::from_deltas_calibrated(deltas, skipped, 64, Some(&calib)).unwrap();
    report.push_str(&format!(
        "\nActivation-aware importance (`--calibration`), LoRA r8 fixture, 12 modules. Calibration inputs per module: {X_ROWS} rows of Gaussian values times per-feature scales exp(N(0, 1)) (seeded; synthetic, not recorded activations). Both variants are judged on those inputs X and on held-out inputs X′ (same feature scales, other draws).\n\n| rank | sparsity | bytes | rel. Frobenius error, plain | rel. Frobenius error, calibrated | output error on X, plain | output error on X, calibrated | output error on X′, plain | output error on X′, calibrated |\n|---|---|---|---|---|---|---|---|---|\n"
    ));
    for rank in [2, 4, 6] {
        for sparsity in [0.5, 0.75] {
            let p = OsdParams {
                method: Method::Osd,
                rank,
                sparsity,
                alpha: 1.0,
                budget_bits: None,
            };
            let run = |a: &AdapterAnalysis, inputs: &Calibration| {
                let (mut bits, mut e2, mut t, mut o2, mut ot) = (0u64, 0.0, 0.0, 0.0, 0.0);
                for m in &a.modules {
                    let (module, est) = m.compress(&p, None).unwrap();
                    let dense = m.delta.dense().unwrap();
                    let x = &inputs[&m.delta.module];
                    let reference = x
                        .matmul(&dense.transpose())
                        .unwrap()
                        .frobenius_norm()
                        .powi(2);
                    let oe = output_error(x, &dense, &module.reconstruct()).unwrap();
                    bits += est.bits;
                    e2 += est.rel_error.powi(2) * m.total;
                    t += m.total;
                    o2 += oe.powi(2) * reference;
                    ot += reference;
                }
                (bits.div_ceil(8), (e2 / t).sqrt(), (o2 / ot).sqrt())
            };
            let (b0, e0, o0) = run(&plain, &calib);
            let (_, e1, o1) = run(&aware, &calib);
            let (_, _, h0) = run(&plain, &held_out);
            let (_, _, h1) = run(&aware, &held_out);
            report.push_str(&format!(
                "| {rank} | {sparsity} | {b0} | {e0:.4} | {e1:.4} | {o0:.4} | {o1:.4} | {h0:.4} | {h1:.4} |\n"
            ));
        }
    }
}

/// What the TUI shows (the estimate from the caches) against the exact
/// compression, on the LoRA r8 fixture.
fn estimate_vs_exact(report: &mut String) {
    let contents = ExpertContents::from_adapter_dir(&fixture("minilm-lora-r8")).unwrap();
    let a = AdapterAnalysis::from_adapter(contents.adapter.as_ref().unwrap(), None, 64).unwrap();
    report.push_str("\nEstimate from the caches (`AdapterAnalysis::estimate`, what the TUI panel shows) against the exact compression, LoRA r8 fixture:\n\n| method | rank | sparsity | bytes, estimated | bytes, exact | rel. error, estimated | rel. error, exact |\n|---|---|---|---|---|---|---|\n");
    for (method, rank, sparsity) in [
        (Method::Osd, 2, 0.25),
        (Method::Osd, 4, 0.5),
        (Method::Osd, 4, 0.75),
        (Method::Osd, 6, 0.5),
        (Method::Blend, 2, 0.01),
        (Method::Blend, 4, 0.01),
        (Method::Blend, 4, 0.05),
    ] {
        let p = OsdParams {
            method,
            rank,
            sparsity,
            alpha: 1.0,
            budget_bits: None,
        };
        let est = a.estimate(&p);
        let (mut bits, mut e2, mut t) = (0u64, 0.0, 0.0);
        for m in &a.modules {
            let (_, e) = m.compress(&p, None).unwrap();
            bits += e.bits;
            e2 += e.rel_error.powi(2) * m.total;
            t += m.total;
        }
        report.push_str(&format!(
            "| {} | {rank} | {sparsity} | {} | {} | {:.4} | {:.4} |\n",
            match method {
                Method::Osd => "osd",
                Method::Blend => "blend",
            },
            est.bits.div_ceil(8),
            bits.div_ceil(8),
            est.rel_error,
            (e2 / t).sqrt()
        ));
    }
}

fn range(v: &[usize]) -> String {
    let (lo, hi) = (
        v.iter().copied().min().unwrap_or(0),
        v.iter().copied().max().unwrap_or(0),
    );
    if lo == hi {
        format!("{lo}")
    } else {
        format!("{lo}–{hi}")
    }
}

// ---------------------------------------------------------- speed: adapter

/// `out (= or +=) scale · b · a` with faer's GEMM, all row-major, no copies.
fn gemm(out: &mut [f32], b: &Matrix, a: &Matrix, scale: f32, accum: Accum, par: Par) {
    faer::linalg::matmul::matmul(
        MatMut::from_row_major_slice_mut(out, b.rows, a.cols),
        accum,
        MatRef::from_row_major_slice(&b.data, b.rows, b.cols),
        MatRef::from_row_major_slice(&a.data, a.rows, a.cols),
        scale,
        par,
    );
}

fn find<'a>(a: &'a AdapterAnalysis, suffix: &str) -> &'a ModuleAnalysis {
    a.modules
        .iter()
        .find(|m| m.delta.module.ends_with(suffix))
        .unwrap()
}

fn lora_factors(m: &ModuleAnalysis) -> (&Matrix, &Matrix) {
    match &m.delta.form {
        DeltaForm::LowRank { a, b, .. } => (a, b),
        DeltaForm::Dense(_) => panic!("not a LoRA module"),
    }
}

fn speed(report: &mut String) {
    let dir = tempfile::tempdir().unwrap();
    let adapter_dir = dir.path().join("qwen3-lora-r12");
    let tensors = qwen_adapter(28, false);
    let file_bytes = write_adapter_dir(&adapter_dir, &tensors, &qwen_config(false));
    let contents = ExpertContents::from_adapter_dir(&adapter_dir).unwrap();
    let adapter: &PeftAdapter = contents.adapter.as_ref().unwrap();
    report.push_str(&format!(
        "Synthetic Qwen3-0.6B-shaped LoRA adapter: r = 12 on q, k, v, o, up, down × 28 layers = {} modules, {} tensors, {:.1} MB safetensors (f32), read into memory once. Median of N (min–max), after one warm-up.\n\n",
        adapter.modules.len(),
        tensors.len(),
        file_bytes as f64 / 1e6
    ));
    report.push_str(
        "| measurement | expertui | anchor (same run) | ratio | goal |\n|---|---|---|---|---|\n",
    );

    // (a) Whole-adapter analysis vs forming every ΔW densely.
    let analysis_t = measure(5, || {
        black_box(AdapterAnalysis::from_adapter(adapter, None, 64).unwrap());
    });
    let (deltas, _) = adapter_deltas(adapter, None).unwrap();
    // Anchor: one faer GEMM per module into a fresh row-major buffer.
    let gemm_t = measure(5, || {
        let sum: usize = deltas
            .par_iter()
            .map(|d| {
                let (a, b, scale) = match &d.form {
                    DeltaForm::LowRank { a, b, scale } => (a, b, *scale),
                    DeltaForm::Dense(_) => unreachable!(),
                };
                let mut out = vec![0.0f32; b.rows * a.cols];
                gemm(&mut out, b, a, scale, Accum::Replace, Par::Seq);
                black_box(&out);
                out.len()
            })
            .sum();
        black_box(sum);
    });
    let dense_t = measure(5, || {
        let sum: usize = deltas
            .par_iter()
            .map(|d| d.dense().unwrap().data.len())
            .sum();
        black_box(sum);
    });
    report.push_str(&format!(
        "| whole-adapter analysis (`AdapterAnalysis::from_adapter`, k_max 64: factors read, SVD, ‖ΔW‖², importance, sorted lists), N = 5 | {} | forming every ΔW = s·B·A densely: one faer GEMM per module into a fresh row-major buffer, rayon over modules {} | {:.2}× | ≤ 200 ms |\n",
        fmt(&analysis_t),
        fmt(&gemm_t),
        analysis_t.median / gemm_t.median
    ));
    // Where the time goes (the steps of ModuleAnalysis::new, timed apart).
    let extract_t = measure(5, || {
        black_box(adapter_deltas(adapter, None).unwrap());
    });
    let svds: Vec<_> = deltas.par_iter().map(|d| d.svd(64).unwrap()).collect();
    let svd_t = measure(5, || {
        let n: usize = deltas.par_iter().map(|d| d.svd(64).unwrap().rank()).sum();
        black_box(n);
    });
    let imp_t = measure(5, || {
        let n: usize = svds
            .par_iter()
            .map(|s| {
                interleaved_importance(&fold_sqrt_sigma(s), None)
                    .unwrap()
                    .u
                    .len()
            })
            .sum();
        black_box(n);
    });
    let imps: Vec<_> = svds
        .par_iter()
        .map(|s| interleaved_importance(&fold_sqrt_sigma(s), None).unwrap())
        .collect();
    let sort_t = measure(5, || {
        let n: usize = imps
            .par_iter()
            .map(|imp| {
                let k = imp.k.max(1);
                let mut u: Vec<(f64, u32)> = imp
                    .u
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (*v, (i % k) as u32))
                    .collect();
                let mut vt: Vec<(f64, u32)> = imp
                    .vt
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (*v, (i / imp.d.max(1)) as u32))
                    .collect();
                u.sort_by(|a, b| b.0.total_cmp(&a.0));
                vt.sort_by(|a, b| b.0.total_cmp(&a.0));
                u.len() + vt.len()
            })
            .sum();
        black_box(n);
    });
    let entries: usize = imps.iter().map(|i| i.u.len() + i.vt.len()).sum();
    let steps = [
        ("reading the factors (`adapter_deltas`)".to_string(), &extract_t),
        (
            "factored SVD of every module (QR of B and Aᵀ, SVD of the 12×12 core: `ModuleDelta::svd`)".to_string(),
            &svd_t,
        ),
        (
            "‖ΔW‖² through `ModuleDelta::dense()` (ΔW formed densely; `ModuleAnalysis::new` now takes it from the exact LoRA spectrum instead)".to_string(),
            &dense_t,
        ),
        (
            "Σ folding + interleaved importance (`fold_sqrt_sigma`, `interleaved_importance`)".to_string(),
            &imp_t,
        ),
        (
            format!("sorting the {entries} importance entries (the two sorts of `ModuleAnalysis::new`, replicated)"),
            &sort_t,
        ),
    ];
    for (what, t) in steps {
        report.push_str(&format!(
            "| … step: {what}, N = 5 | {} | the GEMM anchor above | {:.2}× | {:.0} % of the analysis |\n",
            fmt(t),
            t.median / gemm_t.median,
            100.0 * t.median / analysis_t.median
        ));
    }

    // (b) Re-evaluating a point from the caches vs one exact compress.
    let analysis = AdapterAnalysis::from_adapter(adapter, None, 64).unwrap();
    let p_osd = OsdParams {
        method: Method::Osd,
        rank: 4,
        sparsity: 0.5,
        alpha: 1.0,
        budget_bits: None,
    };
    let p_blend = OsdParams {
        method: Method::Blend,
        rank: 4,
        sparsity: 0.05,
        alpha: 1.0,
        budget_bits: None,
    };
    let down = find(&analysis, "layers.0.mlp.down_proj");
    let compress_t = measure(10, || {
        black_box(down.compress(&p_osd, None).unwrap());
    });
    for (label, p) in [
        ("osd, rank 4, sparsity 0.5", &p_osd),
        ("blend, rank 4, 5 % residual", &p_blend),
    ] {
        let est_t = measure(20, || {
            black_box(analysis.estimate(p));
        });
        report.push_str(&format!(
            "| re-evaluate a point from the caches (`AdapterAnalysis::estimate`, all {} modules, {label}), N = 20 | {} | one exact `compress` of one module (layer 0 down_proj 1024×3072, osd rank 4 s 0.5), N = 10: {} | {:.3}× | ≤ 16 ms |\n",
            analysis.modules.len(),
            fmt(&est_t),
            fmt(&compress_t),
            est_t.median / compress_t.median
        ));
    }

    // (c) Fusion per module vs a dense matmul of the same shapes.
    let contents8 = ExpertContents::from_adapter_dir(&fixture("minilm-lora-r8")).unwrap();
    let small =
        AdapterAnalysis::from_adapter(contents8.adapter.as_ref().unwrap(), None, 64).unwrap();
    let small_est = measure(20, || {
        black_box(small.estimate(&p_osd));
    });
    let small_analysis = measure(10, || {
        black_box(
            AdapterAnalysis::from_adapter(contents8.adapter.as_ref().unwrap(), None, 64).unwrap(),
        );
    });
    report.push_str(&format!(
        "| MiniLM LoRA r8 fixture ({} modules 384×384): estimate (osd, rank 4, s 0.5), N = 20 | {} | its whole analysis, N = 10: {} | {:.3}× | ≤ 16 ms |\n",
        small.modules.len(),
        fmt(&small_est),
        fmt(&small_analysis),
        small_est.median / small_analysis.median
    ));
    let query = find(&small, "layer.0.attention.self.query");
    for (label, m, rank) in [
        ("synthetic down_proj, LoRA r 12", down, 6usize),
        ("MiniLM fixture layer 0 query, LoRA r 8", query, 4usize),
    ] {
        let (n, d) = m.shape();
        let (a, b) = lora_factors(m);
        let mut w = vec![0.0f32; n * d];
        let gemm_add_t = measure(20, || {
            gemm(&mut w, b, a, 1.0, Accum::Add, Par::rayon(0));
            black_box(&w);
        });
        let matmul_t = measure(20, || {
            black_box(b.matmul(a).unwrap());
        });
        let published = m
            .compress(
                &OsdParams {
                    rank,
                    sparsity: 0.5,
                    ..p_osd
                },
                None,
            )
            .unwrap()
            .0;
        let blended = m
            .compress(
                &OsdParams {
                    rank,
                    sparsity: 0.01,
                    ..p_blend
                },
                None,
            )
            .unwrap()
            .0;
        for (what, module) in [
            (
                format!(
                    "osd rank {rank} s 0.5 (k {}, {} + {} nnz)",
                    published.relaxed_rank(),
                    published.u().nnz(),
                    published.vt().nnz()
                ),
                &published,
            ),
            (
                format!(
                    "blend rank {rank} + {} residual entries",
                    blended.residual().map_or(0, Csr::nnz)
                ),
                &blended,
            ),
        ] {
            let mut base = Matrix::zeros(n, d);
            let fuse_t = measure(20, || {
                module.fuse_into(&mut base).unwrap();
                black_box(&base);
            });
            report.push_str(&format!(
                "| fuse one module {n}×{d} ({label}; {what}: `OsdModule::fuse_into`), N = 20 | {} | W += B·A in place, faer GEMM ({n}×{r} · {r}×{d}, row-major) {}; `Matrix::matmul` B·A (allocating) {} | {:.2}× the in-place GEMM, {:.2}× `Matrix::matmul` | |\n",
                fmt(&fuse_t),
                fmt(&gemm_add_t),
                fmt(&matmul_t),
                fuse_t.median / gemm_add_t.median,
                fuse_t.median / matmul_t.median,
                r = a.rows,
            ));
            // What the runtime does at load (src/gpu/adapter.rs): Δ̂ formed
            // once by `reconstruct`, then W' = W + Δ̂.
            let load_t = measure(20, || {
                let delta = module.reconstruct();
                base.data
                    .iter_mut()
                    .zip(&delta.data)
                    .for_each(|(w, x)| *w += x);
                black_box(&base);
            });
            report.push_str(&format!(
                "| … the same module as the runtime loads it: `reconstruct()` then W + Δ̂, N = 20 | {} | W += B·A in place, faer GEMM {} | {:.2}× the in-place GEMM | |\n",
                fmt(&load_t),
                fmt(&gemm_add_t),
                load_t.median / gemm_add_t.median,
            ));
        }
    }

    // Per adapter: every module fused at one point vs forming every B·A.
    let p6 = OsdParams {
        rank: 6,
        sparsity: 0.5,
        ..p_osd
    };
    let modules: Vec<OsdModule> = analysis
        .modules
        .par_iter()
        .map(|m| {
            OsdModule::published(&m.svd, p6.rank, m.relaxed_rank(&p6), m.budget(&p6), None).unwrap()
        })
        .collect();
    let mut bases: HashMap<(usize, usize), Matrix> = HashMap::new();
    for m in &modules {
        bases
            .entry((m.n(), m.d()))
            .or_insert_with(|| Matrix::zeros(m.n(), m.d()));
    }
    let fuse_all = measure(5, || {
        for m in &modules {
            let w = bases.get_mut(&(m.n(), m.d())).unwrap();
            m.fuse_into(w).unwrap();
        }
        black_box(&bases);
    });
    let form_seq = measure(5, || {
        for d in &deltas {
            if let DeltaForm::LowRank { a, b, scale } = &d.form {
                let w = bases.get_mut(&(b.rows, a.cols)).unwrap();
                gemm(&mut w.data, b, a, *scale, Accum::Add, Par::rayon(0));
            }
        }
        black_box(&bases);
    });
    report.push_str(&format!(
        "| fuse the whole adapter ({} modules, osd rank 6 s 0.5, one module after the other), N = 5 | {} | W += s·B·A in place for every module (faer GEMM), one after the other {} | {:.2}× | |\n",
        modules.len(),
        fmt(&fuse_all),
        fmt(&form_seq),
        fuse_all.median / form_seq.median
    ));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes
    }
    let only_quality = args.iter().any(|a| a == "--quality");
    let only_speed = args.iter().any(|a| a == "--speed");
    let mut report = String::new();
    report.push_str(&format!(
        "Machine: {} (load average at start: {}; rayon threads: {})\n\n",
        machine(),
        loadavg(),
        rayon::current_num_threads()
    ));
    if !only_speed {
        report.push_str("### Quality at equal storage\n\n");
        quality(&mut report);
        report.push('\n');
    }
    if !only_quality {
        report.push_str("### Speed\n\n");
        speed(&mut report);
    }
    report.push_str(&format!("\nLoad average at end: {}\n", loadavg()));
    println!("{report}");
}
