//! `fuse FILE --base BASE -o MERGED.safetensors [--device cpu|cuda:0] [--strict]`:
//! merges an expert's adapter into base weights and writes every base
//! tensor (merged where adapted) as one safetensors file, atomically.

use std::path::PathBuf;

use serde_json::json;

use super::{print_json, Failure};
use crate::gpu::base::BaseCheckpoint;
use crate::gpu::fuse::{fuse_checkpoint, plan};
use crate::gpu::{device_label, parse_device, AdapterWeights, LoadOptions, RuntimeError};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Expert file (.expert v2 or legacy tar.gz).
    pub file: PathBuf,
    /// Base weights: a safetensors file, several (repeat the flag or list
    /// them), or a folder with a sharded checkpoint.
    #[arg(long, required = true, num_args = 1..)]
    pub base: Vec<PathBuf>,
    /// Output safetensors file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Device to compute on: cpu, cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Fail (exit 3, nothing written) when a module's base tensor is absent.
    #[arg(long)]
    pub strict: bool,
    /// Trust at load: an expert the policy refuses is never fused (exit 3,
    /// nothing written).
    #[command(flatten)]
    pub signature: super::policy::PolicyArgs,
}

/// Maps a runtime error to an exit code: invalid input 3, else 1.
pub(super) fn failure(e: RuntimeError) -> Failure {
    if e.is_invalid_input() {
        Failure::invalid(e)
    } else {
        Failure::error(e)
    }
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    let device = parse_device(&args.device).map_err(Failure::error)?;
    let policy = args.signature.load()?;
    let options = LoadOptions {
        trust: policy
            .requires_signature()
            .then(|| std::sync::Arc::new(policy)),
        ..LoadOptions::on(device.clone())
    };
    let adapter = AdapterWeights::open(&args.file, &options).map_err(failure)?;
    for warning in &adapter.warnings {
        eprintln!("warning: {warning}");
    }
    if adapter.modules.is_empty() {
        let what = match adapter.soft_prompt() {
            Some(t) => format!(
                "a soft prompt {:?}, used as input embeddings, not fused",
                t.dims()
            ),
            None => "no adapted modules".into(),
        };
        return Err(Failure::invalid(format!(
            "{}: nothing to fuse ({what})",
            args.file.display()
        )));
    }
    let base = BaseCheckpoint::open(&args.base).map_err(failure)?;
    let (_, missing) = plan(&adapter, &|n| base.resolve(n));
    for m in &missing {
        eprintln!(
            "skipped {}: base tensor {} {}",
            m.module, m.base_tensor, m.reason
        );
    }
    let missing_json = serde_json::to_value(&missing).unwrap_or_default();
    if args.strict && !missing.is_empty() {
        let message = format!(
            "{} of {} modules have no base tensor (--strict): nothing written",
            missing.len(),
            adapter.modules.len()
        );
        if json_out {
            print_json(&json!({
                "error": message,
                "exit_code": super::EXIT_INVALID,
                "missing": missing_json,
            }));
            return Err(Failure::invalid(message).reported());
        }
        return Err(Failure::invalid(message));
    }
    let bar = super::progress::count_bar(
        "fusing",
        (adapter.modules.len() - missing.len()) as u64,
        json_out,
    );
    let report = fuse_checkpoint(&adapter, &base, &args.output, &device, &mut |done, _| {
        bar.set_position(done as u64)
    })
    .map_err(failure)?;
    bar.finish_and_clear();
    let tensors = base.names().len();
    if json_out {
        print_json(&json!({
            "output": args.output.display().to_string(),
            "device": device_label(&device),
            "base_files": base.files().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "tensors": tensors,
            "fused": report.fused,
            "missing": missing_json,
            "seconds": report.seconds,
        }));
    } else {
        let suffix = report.fused.iter().filter(|f| f.by_suffix).count();
        println!(
            "{} of {} modules fused on {} into {} ({} tensors) in {:.1} ms",
            report.fused.len(),
            adapter.modules.len(),
            device_label(&device),
            args.output.display(),
            tensors,
            report.seconds * 1e3
        );
        if suffix > 0 {
            println!("{suffix} base tensors matched by suffix (prefixed names in the base)");
        }
        if !missing.is_empty() {
            println!(
                "{} modules skipped: their base tensors are absent (see stderr)",
                missing.len()
            );
        }
    }
    Ok(())
}
