//! `bench FILE [--base PATH] [--device cpu|cuda:0] [--repeat N] [--json]`:
//! runs the benchmark engine (`gpu::bench`) and prints each figure beside
//! its anchor. Progress on stderr, the table or JSON on stdout.

use std::io::IsTerminal;
use std::path::PathBuf;

use super::{print_json, Failure};
use crate::gpu::bench::{run_bench, BenchConfig, BenchReport, Stats};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Expert file (.expert v2 or legacy tar.gz).
    pub file: PathBuf,
    /// Base weights for the fuse figures (file(s) or a sharded folder);
    /// synthetic weights of the adapter's shapes without it.
    #[arg(long, num_args = 1..)]
    pub base: Vec<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Runs per figure (medians with min–max).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    let config = BenchConfig {
        file: args.file,
        base: args.base,
        device: args.device,
        repeat: args.repeat.max(1),
    };
    let live = std::io::stderr().is_terminal();
    let report = run_bench(&config, &mut |p| {
        if live {
            eprint!("\r\x1b[2K[{}/{}] {}", p.step, p.steps, p.stage);
        } else {
            eprintln!("[{}/{}] {}", p.step, p.steps, p.stage);
        }
    })
    .map_err(super::fuse::failure)?;
    if live {
        eprintln!();
    }
    if json_out {
        print_json(&serde_json::to_value(&report).unwrap_or_default());
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

fn num(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn stat(s: &Stats, unit: &str) -> String {
    format!("{} {unit} ({}–{})", num(s.median), num(s.min), num(s.max))
}

/// The report as a text table: one line per figure, its anchors below.
pub fn table(report: &BenchReport) -> String {
    let mut out = format!(
        "expertui bench: {} ({}, {} bytes, {} tensor sections, {} modules) on {}, {} runs\nmachine: {}, {} cores\n\n",
        report.file,
        report.format,
        report.file_bytes,
        report.tensor_sections,
        report.modules,
        report.device,
        report.repeat,
        report.machine.cpu,
        report.machine.cores,
    );
    out.push_str(&format!(
        "{:<52} {:>30}   {}\n",
        "figure", "median (min–max)", "anchor: median (min–max), ratio"
    ));
    for f in &report.figures {
        let mut anchors = f.anchors.iter();
        let first = anchors.next().map(|a| {
            format!(
                "{}: {}, ×{}",
                a.label,
                stat(&a.value, &f.unit),
                num(a.ratio)
            )
        });
        out.push_str(&format!(
            "{:<52} {:>30}   {}\n",
            f.label,
            stat(&f.value, &f.unit),
            first.unwrap_or_default()
        ));
        for a in anchors {
            out.push_str(&format!(
                "{:<52} {:>30}   {}: {}, ×{}\n",
                "",
                "",
                a.label,
                stat(&a.value, &f.unit),
                num(a.ratio)
            ));
        }
        if let Some(n) = &f.note {
            out.push_str(&format!("{:<52} {:>30}   ({n})\n", "", ""));
        }
    }
    for n in &report.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}
