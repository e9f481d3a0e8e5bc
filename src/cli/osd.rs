//! `osd analyze | compress | tune`: spectra and energy curves, compression
//! of an adapter (or a full fine-tune) into OSD sections, and a grid search
//! with its Pareto front.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{print_json, Failure};
use crate::format::loader::ExpertLoader;
use crate::format::package::{ExpertContents, PackageOptions};
use crate::osd::analysis::{Method, OsdParams};
use crate::osd::delta::{adapter_deltas, finetune_deltas, BaseWeights};
use crate::osd::expert::{load_calibration, write_compressed, AdapterAnalysis, GridPoint};
use crate::plot::{write_chart, Chart, Series};

#[derive(clap::Subcommand, Debug)]
pub enum OsdCommand {
    /// Singular spectrum and energy-retention curve per module and overall.
    Analyze(AnalyzeArgs),
    /// Compress an adapter (or a full fine-tune) into an expert with OSD sections.
    Compress(CompressArgs),
    /// Grid search over ranks and sparsities: size, energy, errors, Pareto front.
    Tune(TuneArgs),
}

#[derive(clap::Args, Debug)]
pub struct Source {
    /// An expert file or a PEFT adapter folder (omit with --finetuned).
    pub input: Option<PathBuf>,
    /// Base weights (safetensors file or folder): needed for DoRA and fine-tunes.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Fine-tuned weights: compress ΔW = finetuned − base for every matrix.
    #[arg(long, requires = "base")]
    pub finetuned: Option<PathBuf>,
    /// Calibration inputs (safetensors: one [samples, in] tensor per module,
    /// named after the module or its base tensor): activation-aware
    /// importance, and layer-output errors on these inputs.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    pub source: Source,
    /// Write the energy curves as PNG or SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct CompressArgs {
    #[command(flatten)]
    pub source: Source,
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 4)]
    pub rank: usize,
    #[arg(long, default_value_t = 0.5)]
    pub sparsity: f64,
    #[arg(long, value_enum, default_value = "osd")]
    pub method: Method,
    /// Blend weight α of the sparse correction.
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f32,
    /// Budget per module in bytes (default: dense TruncSVD at --rank).
    #[arg(long)]
    pub budget_bytes: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct TuneArgs {
    #[command(flatten)]
    pub source: Source,
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,6")]
    pub ranks: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75")]
    pub sparsities: Vec<f64>,
    #[arg(long, value_enum, default_value = "osd")]
    pub method: Method,
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

fn osd_failure(e: impl std::fmt::Display) -> Failure {
    Failure::invalid(format!("osd: {e}"))
}

/// Reads the expert/adapter (or fine-tune pair) and analyses every module.
fn load(source: &Source) -> Result<(Option<ExpertContents>, AdapterAnalysis), Failure> {
    let base = match &source.base {
        Some(p) => Some(BaseWeights::load(p).map_err(osd_failure)?),
        None => None,
    };
    let calibration = match &source.calibration {
        Some(p) => Some(load_calibration(p).map_err(osd_failure)?),
        None => None,
    };
    if let Some(ft) = &source.finetuned {
        let ft = BaseWeights::load(ft).map_err(osd_failure)?;
        let base = base.ok_or_else(|| Failure::error("--finetuned needs --base"))?;
        let deltas = finetune_deltas(&base, &ft).map_err(osd_failure)?;
        let analysis = AdapterAnalysis::from_deltas_calibrated(
            deltas,
            Vec::new(),
            crate::osd::expert::MAX_ANALYSED_RANK,
            calibration.as_ref(),
        )
        .map_err(osd_failure)?;
        return Ok((None, analysis));
    }
    let input = source.input.as_ref().ok_or_else(|| {
        Failure::error("give an expert, an adapter folder, or --finetuned with --base")
    })?;
    let contents = open_contents(input)?;
    let adapter = contents
        .adapter
        .as_ref()
        .ok_or_else(|| Failure::invalid("the expert holds no adapter"))?;
    let (deltas, skipped) = adapter_deltas(adapter, base.as_ref()).map_err(osd_failure)?;
    let analysis = AdapterAnalysis::from_deltas_calibrated(
        deltas,
        skipped,
        crate::osd::expert::MAX_ANALYSED_RANK,
        calibration.as_ref(),
    )
    .map_err(osd_failure)?;
    Ok((Some(contents), analysis))
}

fn open_contents(input: &Path) -> Result<ExpertContents, Failure> {
    if input.is_dir() {
        Ok(ExpertContents::from_adapter_dir(input)?)
    } else {
        let loaded = ExpertLoader::open(input)?;
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        Ok(loaded.contents)
    }
}

pub fn run(command: OsdCommand, json_out: bool) -> Result<(), Failure> {
    match command {
        OsdCommand::Analyze(args) => analyze(args, json_out),
        OsdCommand::Compress(args) => compress(args, json_out),
        OsdCommand::Tune(args) => tune(args, json_out),
    }
}

fn analyze(args: AnalyzeArgs, json_out: bool) -> Result<(), Failure> {
    let (_, analysis) = load(&args.source)?;
    let overall = analysis.overall_energy();
    if let Some(path) = &args.plot {
        let mut series = vec![Series {
            name: "overall".into(),
            points: curve_points(&overall),
        }];
        series.extend(analysis.modules.iter().take(6).map(|m| Series {
            name: short(&m.delta.module),
            points: curve_points(&m.energy),
        }));
        let chart = Chart {
            title: "energy retained by rank".into(),
            x_label: "rank".into(),
            y_label: "share of ‖ΔW‖²".into(),
            series,
        };
        write_chart(&chart, path).map_err(Failure::error)?;
    }
    let modules: Vec<Value> = analysis
        .modules
        .iter()
        .map(|m| {
            let (n, d) = m.shape();
            json!({
                "module": m.delta.module,
                "shape": [n, d],
                "singular_values": m.svd.s,
                "energy": m.energy,
                "rank_90": rank_for(&m.energy, 0.90),
                "rank_99": rank_for(&m.energy, 0.99),
            })
        })
        .collect();
    if json_out {
        print_json(
            &json!({ "modules": modules, "overall_energy": overall, "skipped": analysis.skipped }),
        );
        return Ok(());
    }
    println!(
        "{:<52} {:>11} {:>8} {:>8}  energy at rank 1..8",
        "module", "shape", "r@90%", "r@99%"
    );
    for m in &analysis.modules {
        let (n, d) = m.shape();
        let curve: Vec<String> = m.energy.iter().take(8).map(|e| format!("{e:.2}")).collect();
        println!(
            "{:<52} {:>11} {:>8} {:>8}  {}",
            short(&m.delta.module),
            format!("{n}x{d}"),
            rank_for(&m.energy, 0.9),
            rank_for(&m.energy, 0.99),
            curve.join(" ")
        );
    }
    let curve: Vec<String> = overall.iter().take(8).map(|e| format!("{e:.3}")).collect();
    println!("overall energy at rank 1..8: {}", curve.join(" "));
    if !analysis.skipped.is_empty() {
        println!("not low-rank deltas (skipped): {}", analysis.skipped.len());
    }
    Ok(())
}

fn rank_for(curve: &[f64], target: f64) -> usize {
    curve
        .iter()
        .position(|&e| e >= target)
        .map_or(curve.len(), |i| i + 1)
}

fn curve_points(curve: &[f64]) -> Vec<(f64, f64)> {
    std::iter::once((0.0, 0.0))
        .chain(curve.iter().enumerate().map(|(i, e)| ((i + 1) as f64, *e)))
        .collect()
}

fn short(module: &str) -> String {
    module
        .strip_prefix("base_model.model.")
        .unwrap_or(module)
        .to_string()
}

fn params(
    rank: usize,
    sparsity: f64,
    method: Method,
    alpha: f32,
    budget_bytes: Option<u64>,
) -> OsdParams {
    OsdParams {
        method,
        rank,
        sparsity,
        alpha,
        budget_bits: budget_bytes.map(|b| b * 8),
    }
}

fn compress(args: CompressArgs, json_out: bool) -> Result<(), Failure> {
    let (contents, analysis) = load(&args.source)?;
    let contents = match contents {
        Some(c) => c,
        None => finetune_contents(&analysis, args.rank),
    };
    let p = params(
        args.rank,
        args.sparsity,
        args.method,
        args.alpha,
        args.budget_bytes,
    );
    let (_, report) = write_compressed(
        &contents,
        &analysis,
        &p,
        &args.output,
        &PackageOptions::default(),
    )?;
    if json_out {
        print_json(&serde_json::to_value(&report).unwrap_or(Value::Null));
    } else {
        println!(
            "{}: {} modules compressed ({:?}, rank {}, sparsity {}): {} → {} bytes ({:.1}×), relative error {:.4}, energy kept {:.4}; file {} bytes",
            args.output.display(), report.modules, args.method, args.rank, args.sparsity, report.original_bytes,
            report.compressed_bytes, report.original_bytes as f64 / report.compressed_bytes.max(1) as f64,
            report.rel_error, report.energy_kept, report.file_bytes
        );
    }
    Ok(())
}

/// A manifest for a full fine-tune compressed without an adapter.
fn finetune_contents(analysis: &AdapterAnalysis, rank: usize) -> ExpertContents {
    let modules: Vec<String> = analysis
        .modules
        .iter()
        .map(|m| m.delta.module.clone())
        .collect();
    let manifest = json!({
        "name": "osd-finetune-delta",
        "version": "0.1.0",
        "schema_version": "2.0",
        "base_models": [{ "name": "base", "adapters": [{ "type": "osd", "r": rank, "target_modules": modules }] }],
    });
    ExpertContents {
        manifest: serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
        adapter: None,
        files: Vec::new(),
        carried: Vec::new(),
    }
}

fn tune(args: TuneArgs, json_out: bool) -> Result<(), Failure> {
    let (_, analysis) = load(&args.source)?;
    let original = analysis.original_bits().div_ceil(8);
    let points = analysis
        .grid(&args.ranks, &args.sparsities, args.method)
        .map_err(osd_failure)?;
    if let Some(path) = &args.plot {
        let xy = |p: &GridPoint| (p.bytes as f64, p.rel_error);
        let front = sorted(points.iter().filter(|p| p.pareto).map(xy).collect());
        let all = sorted(points.iter().map(xy).collect());
        let chart = Chart {
            title: "OSD tuning: size vs error".into(),
            x_label: "bytes".into(),
            y_label: "relative error".into(),
            series: vec![
                Series {
                    name: "Pareto front".into(),
                    points: front,
                },
                Series {
                    name: "grid".into(),
                    points: all,
                },
            ],
        };
        write_chart(&chart, path).map_err(Failure::error)?;
    }
    if json_out {
        print_json(&json!({ "original_bytes": original, "points": points }));
        return Ok(());
    }
    println!("original {original} bytes; method {:?}", args.method);
    println!(
        "{:>5} {:>9} {:>10} {:>7} {:>9} {:>9} {:>9}  pareto",
        "rank", "sparsity", "bytes", "ratio", "energy", "rel.err", "out.err"
    );
    for p in &points {
        println!(
            "{:>5} {:>9} {:>10} {:>6.2}x {:>9.4} {:>9.4} {:>9.4}  {}",
            p.rank,
            p.sparsity,
            p.bytes,
            p.compression,
            p.energy_kept,
            p.rel_error,
            p.output_error,
            if p.pareto { "*" } else { "" }
        );
    }
    Ok(())
}

fn sorted(mut v: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}
