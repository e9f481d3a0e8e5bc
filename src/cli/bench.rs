//! `bench FILE [--base PATH] [--device cpu|cuda:0] [--repeat N] [--json]
//! [--plot FILE]`: runs the benchmark engine (`gpu::bench`) and prints each
//! figure beside its anchor. Progress on stderr, the table or JSON on
//! stdout, the plot (each figure's speed relative to its anchors) to FILE.

use std::io::IsTerminal;
use std::path::PathBuf;

use super::{print_json, Failure};
use crate::gpu::bench::{run_bench, BenchConfig};
use crate::plot::write_bars;

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
    /// Write each figure's speed relative to its anchors as PNG or SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Trust at load: an expert the policy refuses is not benchmarked (exit 3).
    #[command(flatten)]
    pub signature: super::policy::PolicyArgs,
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    let policy = args.signature.load()?;
    // The figures are about loading from disk: a remote expert is fetched
    // once into a temporary file and measured there.
    let local_copy = match crate::format::remote::url_of(&args.file) {
        Some(url) => {
            let fetched = crate::format::remote::fetch(
                &url,
                &crate::format::remote::Plan::All,
                &mut |_, _| {},
            )?;
            let dir = tempfile::tempdir()
                .map_err(|e| Failure::error(format!("temporary folder: {e}")))?;
            let path = dir.path().join("remote.expert");
            std::fs::write(&path, &**fetched.bytes)
                .map_err(|e| Failure::error(format!("{}: {e}", path.display())))?;
            eprintln!(
                "{}: {} bytes in {} requests, measured from a local copy",
                fetched.cost.url, fetched.cost.size, fetched.cost.requests
            );
            Some((dir, path))
        }
        None => None,
    };
    let file = local_copy
        .as_ref()
        .map_or_else(|| args.file.clone(), |(_, p)| p.clone());
    // The policy judges the bytes that are measured (one fetch, not two).
    if policy.requires_signature() {
        crate::format::loader::ExpertLoader::open_admitted(&file, &policy)?;
    }
    let config = BenchConfig {
        file,
        base: args.base.clone(),
        device: args.device.clone(),
        repeat: args.repeat.max(1),
        cancel: None,
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
    if let Some(path) = &args.plot {
        write_bars(&report.bars(), path).map_err(Failure::error)?;
        eprintln!("plot: {}", path.display());
    }
    if json_out {
        print_json(&serde_json::to_value(&report).unwrap_or_default());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
