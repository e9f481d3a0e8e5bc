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
use crate::osd::expert::{
    importance_source, load_calibration, write_compressed, write_within_limit, AdapterAnalysis,
    CompressReport,
};
use crate::osd::frontier::tune;
use crate::osd::precision::ValueDtype;
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

/// The parameters of a point besides method, dtype and rank.
#[derive(clap::Args, Debug)]
pub struct Shape {
    /// osd/magtrunc: relaxation c (k = r + c) [default: searched per module].
    #[arg(long)]
    pub relax: Option<usize>,
    /// Blends: fraction of the n·d entries in the sparse part.
    #[arg(long, default_value_t = 0.01)]
    pub sparsity: f64,
    /// Blends: weight α of the sparse part.
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f32,
}

#[derive(clap::Args, Debug)]
pub struct CompressArgs {
    #[command(flatten)]
    pub source: Source,
    #[arg(short, long)]
    pub output: PathBuf,
    /// Write the point with the smallest measured error whose file is at
    /// most this many bytes, among every method and dtype (or those forced
    /// by --method / --dtype).
    #[arg(long)]
    pub max_bytes: Option<u64>,
    /// How modules are stored [default: osd, or every method with --max-bytes].
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Precision of the stored values [default: f32, or every dtype with --max-bytes].
    #[arg(long, value_enum)]
    pub dtype: Option<ValueDtype>,
    /// Rank r: of the dense factors, or of the TruncSVD whose bytes are the
    /// osd/magtrunc budget.
    #[arg(long, default_value_t = 4)]
    pub rank: usize,
    #[command(flatten)]
    pub shape: Shape,
    /// osd/magtrunc: budget per module in bytes (default: TruncSVD at --rank).
    #[arg(long)]
    pub budget_bytes: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct TuneArgs {
    #[command(flatten)]
    pub source: Source,
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub ranks: Vec<usize>,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "lora,truncsvd,osd,magtrunc"
    )]
    pub methods: Vec<Method>,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "f32,bf16,f16"
    )]
    pub dtypes: Vec<ValueDtype>,
    #[command(flatten)]
    pub shape: Shape,
    /// Measure every point (default: predict all, measure the Pareto front).
    #[arg(long)]
    pub exact: bool,
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
        OsdCommand::Tune(args) => run_tune(args, json_out),
    }
}

/// `compress` and `tune` need at least one low-rank delta: say why there is
/// none instead of writing an expert that compressed nothing.
fn require_modules(analysis: &AdapterAnalysis, source: &Source) -> Result<(), Failure> {
    if !analysis.modules.is_empty() {
        return Ok(());
    }
    let hint = if source.base.is_none() {
        "DoRA modules need the base weights (--base W); "
    } else {
        ""
    };
    Err(Failure::invalid(format!(
        "nothing to compress: no module is a low-rank delta here ({} kept as they are). {hint}IA³, LoRA on embeddings and prompt tuning are not low-rank additive deltas",
        analysis.skipped.len()
    )))
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
                "components_computed": m.energy.len(),
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
        "{:<52} {:>11} {:>8} {:>8}  share of ‖ΔW‖² at rank 1..8",
        "module", "shape", "r@90%", "r@99%"
    );
    for m in &analysis.modules {
        let (n, d) = m.shape();
        let curve: Vec<String> = m.energy.iter().take(8).map(|e| format!("{e:.2}")).collect();
        println!(
            "{:<52} {:>11} {:>8} {:>8}  {}",
            short(&m.delta.module),
            format!("{n}x{d}"),
            rank_text(&m.energy, 0.9),
            rank_text(&m.energy, 0.99),
            curve.join(" ")
        );
    }
    let curve: Vec<String> = overall.iter().take(8).map(|e| format!("{e:.3}")).collect();
    println!("overall share of ‖ΔW‖² at rank 1..8: {}", curve.join(" "));
    if !analysis.skipped.is_empty() {
        println!("not low-rank deltas (skipped): {}", analysis.skipped.len());
    }
    Ok(())
}

/// The smallest rank keeping `target` of ‖ΔW‖²; `None` when the computed
/// components (at most `MAX_ANALYSED_RANK` for dense deltas) do not reach it.
fn rank_for(curve: &[f64], target: f64) -> Option<usize> {
    curve
        .iter()
        .position(|&e| e >= target - 1e-9)
        .map(|i| i + 1)
}

fn rank_text(curve: &[f64], target: f64) -> String {
    rank_for(curve, target).map_or_else(|| format!(">{}", curve.len()), |r| r.to_string())
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

fn compress(args: CompressArgs, json_out: bool) -> Result<(), Failure> {
    let (contents, analysis) = load(&args.source)?;
    require_modules(&analysis, &args.source)?;
    let contents = match contents {
        Some(c) => c,
        None => finetune_contents(&analysis, args.rank),
    };
    let template = OsdParams {
        method: args.method.unwrap_or(Method::Osd),
        dtype: args.dtype.unwrap_or_default(),
        rank: args.rank,
        relax: args.shape.relax,
        sparsity: args.shape.sparsity,
        alpha: args.shape.alpha,
        budget_rank: None,
        budget_bytes: args.budget_bytes,
    };
    let (report, finalists) = match args.max_bytes {
        None => {
            let (_, report) = write_compressed(
                &contents,
                &analysis,
                &template,
                &args.output,
                &PackageOptions::default(),
            )?;
            (report, Vec::new())
        }
        Some(max) => {
            let methods = args.method.map_or_else(
                || {
                    vec![
                        Method::Lora,
                        Method::Truncsvd,
                        Method::Osd,
                        Method::Magtrunc,
                    ]
                },
                |m| vec![m],
            );
            let dtypes = args
                .dtype
                .map_or_else(|| ValueDtype::ALL.to_vec(), |d| vec![d]);
            let (report, finalists) = write_within_limit(
                &contents,
                &analysis,
                &template,
                (&methods, &dtypes),
                max,
                &args.output,
                &PackageOptions::default(),
            )?;
            let lines = finalists
                .iter()
                .map(|(p, e)| {
                    format!(
                        "{} {} rank {}: {} bytes of modules, relative error {:.5}",
                        p.method, p.dtype, p.rank, e.bytes, e.rel_error
                    )
                })
                .collect();
            (report, lines)
        }
    };
    if json_out {
        let mut value = serde_json::to_value(&report).unwrap_or(Value::Null);
        if let (Some(obj), Some(max)) = (value.as_object_mut(), args.max_bytes) {
            obj.insert("max_bytes".into(), json!(max));
            obj.insert("finalists".into(), json!(finalists));
        }
        print_json(&value);
    } else {
        for line in &finalists {
            eprintln!("candidate {line}");
        }
        print_report(&args.output, &report);
    }
    Ok(())
}

fn print_report(output: &Path, report: &CompressReport) {
    println!(
        "{}: {} modules as {} {} (rank {}, k ≤ {}): tensors {} → {} bytes ({:.2}×), file {} bytes; relative error {:.4} (measured)",
        output.display(),
        report.modules,
        report.method,
        report.dtype,
        report.rank,
        report.relaxed_rank,
        report.original_bytes,
        report.tensor_bytes,
        report.ratio,
        report.file_bytes,
        report.rel_error,
    );
    println!(
        "  paper accounting (32-bit values, flat indices): {} bits = {} bytes; importance: {}",
        report.paper_bits,
        report.paper_bits.div_ceil(8),
        report.importance
    );
    if !report.skipped.is_empty() {
        println!("  kept as they were: {} modules", report.skipped.len());
    }
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

fn run_tune(args: TuneArgs, json_out: bool) -> Result<(), Failure> {
    let (_, analysis) = load(&args.source)?;
    require_modules(&analysis, &args.source)?;
    let original = analysis.original_bytes();
    let template = OsdParams {
        relax: args.shape.relax,
        sparsity: args.shape.sparsity,
        alpha: args.shape.alpha,
        ..OsdParams::default()
    };
    let points = tune(
        &analysis,
        &args.methods,
        &args.dtypes,
        &args.ranks,
        &template,
        args.exact,
    )
    .map_err(osd_failure)?;
    if let Some(path) = &args.plot {
        let mut series = Vec::new();
        for method in &args.methods {
            for dtype in &args.dtypes {
                let xy = sorted(
                    points
                        .iter()
                        .filter(|p| p.method == *method && p.dtype == *dtype)
                        .map(|p| (p.bytes as f64, p.rel_error))
                        .collect(),
                );
                if !xy.is_empty() {
                    series.push(Series {
                        name: format!("{method} {dtype}"),
                        points: xy,
                    });
                }
            }
        }
        let chart = Chart {
            title: "error vs bytes written".into(),
            x_label: "bytes of compressed modules".into(),
            y_label: "relative error".into(),
            series,
        };
        write_chart(&chart, path).map_err(Failure::error)?;
    }
    if json_out {
        print_json(&json!({
            "original_bytes": original,
            "importance": importance_source(&analysis),
            "points": points,
        }));
        return Ok(());
    }
    println!(
        "input: {original} bytes in {} modules; importance: {}",
        analysis.modules.len(),
        importance_source(&analysis)
    );
    println!(
        "{:<15} {:>5} {:>5} {:>4} {:>11} {:>8} {:>10}  {:<9} pareto",
        "method", "dtype", "rank", "k", "bytes", "ratio", "rel.err", "error is"
    );
    for p in &points {
        println!(
            "{:<15} {:>5} {:>5} {:>4} {:>11} {:>7.2}x {:>10.5}  {:<9} {}",
            p.method.name(),
            p.dtype.name(),
            p.rank,
            p.relaxed_rank,
            p.bytes,
            p.ratio,
            p.rel_error,
            if p.exact { "measured" } else { "predicted" },
            if p.pareto { "*" } else { "" }
        );
    }
    Ok(())
}

fn sorted(mut v: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}
