//! OSD benchmarks (issue 5/7). `cargo bench --bench osd` prints Markdown:
//!
//! 1. Quality at equal bytes written: for each adapter and budget (½, ¼, ⅛
//!    of its tensor bytes), the best point of every method × dtype that
//!    fits (measured exactly), the automatic pick, and the spectra. Adapters:
//!    the trained routing LoRA/DoRA (`tests/fixtures/trained`, made by
//!    `benches/osd_quality`) and the random-valued PEFT fixtures.
//! 2. Speed on a Qwen3-0.6B-shaped LoRA r = 12 (Gaussian factors, 168
//!    modules, 24.8 MB), each figure beside the anchor of reading the file.
//!
//! `-- --quality` or `-- --speed` runs one part only.

use std::path::{Path, PathBuf};

mod common;

use common::{fmt, machine, measure, write_adapter_dir};

use expertui::format::package::{ExpertContents, PackageOptions};
use expertui::gpu::{AdapterWeights, LoadOptions};
use expertui::osd::analysis::{Method, OsdParams};
use expertui::osd::delta::{adapter_deltas, BaseWeights};
use expertui::osd::expert::{write_compressed, AdapterAnalysis, MAX_ANALYSED_RANK};
use expertui::osd::frontier::{pick, tune};
use expertui::osd::ValueDtype;

const BUDGETS: [f64; 3] = [0.5, 0.25, 0.125];
const METHODS: [Method; 4] = [
    Method::Lora,
    Method::Truncsvd,
    Method::Osd,
    Method::Magtrunc,
];

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn analyse(dir: &Path, base: Option<&BaseWeights>) -> AdapterAnalysis {
    let contents = ExpertContents::from_adapter_dir(dir).unwrap();
    let (deltas, skipped) = adapter_deltas(contents.adapter.as_ref().unwrap(), base).unwrap();
    AdapterAnalysis::from_deltas(deltas, skipped, MAX_ANALYSED_RANK).unwrap()
}

/// σ₁/σ_r (r = the adapter's rank) and the share of ‖ΔW‖² in the top 4
/// directions, medians over modules.
fn spectrum(a: &AdapterAnalysis) -> (f64, f64) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let ratio = a
        .modules
        .iter()
        .map(|m| {
            let r = m.delta.stored.rank.min(m.svd.s.len()).max(1);
            f64::from(m.svd.s[0]) / f64::from(m.svd.s[r - 1]).max(f64::MIN_POSITIVE)
        })
        .collect();
    let top4 = a
        .modules
        .iter()
        .map(|m| m.energy.get(3).or(m.energy.last()).copied().unwrap_or(0.0))
        .collect();
    (median(ratio), median(top4))
}

fn quality(report: &mut String) {
    let base = BaseWeights::load(&fixture("merge/base-layer0-subset.safetensors")).unwrap();
    let adapters: [(&str, &str, bool); 4] = [
        (
            "trained LoRA r8 (routing task)",
            "trained/minilm-route-lora-r8",
            false,
        ),
        (
            "trained DoRA r8, layer 0 (base subset)",
            "trained/minilm-route-dora-r8",
            true,
        ),
        (
            "random-valued LoRA r8 (PEFT fixture)",
            "minilm-lora-r8",
            false,
        ),
        ("random-valued DoRA r8, layer 0", "minilm-dora-r8", true),
    ];
    report.push_str("\n## Quality at equal bytes written\n\nBudget = share of the modules' tensor bytes as the adapter stores them (f32); each cell is the best point of that method × dtype whose written module bytes fit (measured: exact errors, Gram traces for LoRA deltas), relative Frobenius error ‖ΔW − Δ̂‖/‖ΔW‖ energy-weighted over modules. **Bold**: the automatic pick (`osd compress --max-bytes`), which chooses among all of them.\n\n");
    report.push_str("| adapter | σ₁/σ_r, top-4 share (medians) | budget | lora | truncsvd | osd | magtrunc | pick |\n|---|---|---|---|---|---|---|---|\n");
    for (label, dir, dora) in adapters {
        let a = analyse(&fixture(dir), dora.then_some(&base));
        let (ratio, top4) = spectrum(&a);
        let original = a.original_bytes();
        for share in BUDGETS {
            let limit = (original as f64 * share) as u64;
            let mut cells = Vec::new();
            for method in METHODS {
                let mut best: Option<(ValueDtype, u64, f64)> = None;
                for dtype in ValueDtype::ALL {
                    if let Some(p) =
                        pick(&a, limit, &[method], &[dtype], &OsdParams::default()).unwrap()
                    {
                        if best.is_none_or(|b| p.outcome.rel_error < b.2) {
                            best = Some((dtype, p.outcome.bytes, p.outcome.rel_error));
                        }
                    }
                }
                cells.push(best.map_or("does not fit".into(), |(d, b, e)| {
                    format!("{e:.4} ({d}, {b} B)")
                }));
            }
            let auto = pick(&a, limit, &METHODS, &ValueDtype::ALL, &OsdParams::default()).unwrap();
            let auto = auto.map_or("nothing fits".into(), |p| {
                let rank = match p.params.method {
                    Method::Lora => String::new(),
                    _ => format!(" r{}", p.params.rank),
                };
                format!(
                    "**{:.4}** ({} {}{rank})",
                    p.outcome.rel_error, p.params.method, p.params.dtype
                )
            });
            report.push_str(&format!(
                "| {label} | {ratio:.2}, {:.0} % | {:.0} % = {limit} B | {} | {auto} |\n",
                top4 * 100.0,
                share * 100.0,
                cells.join(" | ")
            ));
        }
    }
}

/// A Qwen3-0.6B-shaped LoRA r = 12 with Gaussian factors (full rank 12).
fn qwen_lora(dir: &Path) -> u64 {
    let tensors = common::qwen_lora_gaussian(28);
    write_adapter_dir(dir, &tensors, &common::qwen_config(false))
}

fn speed(report: &mut String) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("qwen3-lora-r12");
    let file_bytes = qwen_lora(&dir);
    let weights = dir.join("adapter_model.safetensors");
    let read = measure(10, || {
        std::hint::black_box(std::fs::read(&weights).unwrap());
    });
    let analyse_once = || analyse(&dir, None);
    let analysis_time = measure(5, || {
        std::hint::black_box(analyse_once());
    });
    let a = analyse_once();
    let p = OsdParams {
        method: Method::Osd,
        dtype: ValueDtype::Bf16,
        rank: 4,
        ..OsdParams::default()
    };
    a.estimate(&p); // tables built once, as after the panel's first move
    let estimate = measure(20, || {
        std::hint::black_box(a.estimate(&p));
    });
    let moved = OsdParams { rank: 5, ..p };
    let estimate_moved = measure(20, || {
        std::hint::black_box(a.estimate(&moved));
    });
    let grid = measure(3, || {
        let points = tune(
            &a,
            &METHODS,
            &ValueDtype::ALL,
            &[1, 2, 4, 8],
            &OsdParams::default(),
            false,
        )
        .unwrap();
        std::hint::black_box(points);
    });
    let contents = ExpertContents::from_adapter_dir(&dir).unwrap();
    let out = work.path().join("osd.expert");
    let mut written = None;
    let compress = measure(3, || {
        written = Some(
            write_compressed(&contents, &a, &p, &out, &PackageOptions::default())
                .unwrap()
                .1,
        );
    });
    let limit = a.original_bytes() / 4;
    let picked = measure(3, || {
        std::hint::black_box(
            pick(&a, limit, &METHODS, &ValueDtype::ALL, &OsdParams::default()).unwrap(),
        );
    });
    let loaded = AdapterWeights::open(&out, &LoadOptions::default()).unwrap();
    let stored = written.as_ref().map_or(0, |r| r.tensor_bytes);
    let load = measure(5, || {
        std::hint::black_box(AdapterWeights::open(&out, &LoadOptions::default()).unwrap());
    });

    report.push_str(&format!(
        "\n## Speed on a Qwen3-0.6B-shaped LoRA r = 12 ({} modules, {file_bytes} B, Gaussian factors)\n\nAnchor: reading the adapter file, {}. Goals from issue 5/7.\n\n| figure | time | × reading the file | goal |\n|---|---|---|---|\n",
        a.modules.len(),
        fmt(&read)
    ));
    let row = |report: &mut String, what: &str, s: &common::Stat, goal: &str| {
        report.push_str(&format!(
            "| {what} | {} | {:.1}× | {goal} |\n",
            fmt(s),
            s.median / read.median
        ));
    };
    row(
        report,
        "`osd analyze`: read, SVD of every module (factored), energy (N = 5)",
        &analysis_time,
        "≤ 100 ms",
    );
    row(
        report,
        "re-estimate a point from the caches (panel: osd bf16 r4), N = 20",
        &estimate,
        "≤ 16 ms",
    );
    row(
        report,
        "re-estimate after moving the rank (r5), N = 20",
        &estimate_moved,
        "≤ 16 ms",
    );
    row(
        report,
        "default tune grid: 4 methods × 3 dtypes × ranks 1,2,4,8 predicted, front measured (N = 3)",
        &grid,
        "≤ 5 s",
    );
    row(
        report,
        "one `compress` (osd bf16 r4: build, measure, write), N = 3",
        &compress,
        "≤ 2 s",
    );
    row(
        report,
        "`--max-bytes` pick at ¼ of the tensors (every method × dtype), N = 3",
        &picked,
        "",
    );
    row(
        report,
        "load the OSD expert (factored, every module validated), N = 5",
        &load,
        "",
    );
    report.push_str(&format!(
        "\nMemory of the loaded OSD expert: {} B held for {stored} B of compressed tensors ({:.2}×; goal ≤ 1.1×). The written expert: {} B, relative error {:.4}.\n",
        loaded.bytes(),
        loaded.bytes() as f64 / stored.max(1) as f64,
        written.as_ref().map_or(0, |r| r.file_bytes),
        written.as_ref().map_or(f64::NAN, |r| r.rel_error),
    ));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let only = |flag: &str| args.iter().any(|a| a == flag);
    let (q, s) = match (only("--quality"), only("--speed")) {
        (true, false) => (true, false),
        (false, true) => (false, true),
        _ => (true, true),
    };
    let mut report = format!(
        "# OSD benchmarks\n\nMachine: {}; load average at start {}.\n",
        machine(),
        loadavg()
    );
    if q {
        quality(&mut report);
    }
    if s {
        speed(&mut report);
    }
    report.push_str(&format!("\nLoad average at end {}.\n", loadavg()));
    println!("{report}");
}
