//! `convert IN... -o OUT [--to binary|tar.gz|peft]`.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::progress::count_bar;
use super::{print_json, Failure};
use crate::format::legacy::{write_legacy, LegacyFile};
use crate::format::loader::ExpertLoader;
use crate::format::package::{PackageOptions, TensorCodec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Binary,
    #[value(name = "tar.gz")]
    TarGz,
    Peft,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// One or more experts (binary or legacy tar.gz).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output file, or folder when converting several inputs (or to peft).
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value = "binary")]
    pub to: Target,
    #[arg(long, value_enum, default_value = "none")]
    pub codec: TensorCodec,
}

fn output_for(input: &Path, out_dir: &Path, to: Target) -> PathBuf {
    let stem = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "expert".into());
    let stem = stem.strip_suffix(".expert").unwrap_or(&stem).to_string();
    match to {
        Target::Binary => out_dir.join(format!("{stem}.expert")),
        Target::TarGz => out_dir.join(format!("{stem}.tar.gz.expert")),
        Target::Peft => out_dir.join(stem),
    }
}

/// Converts one input; returns the notices to show.
pub fn convert_one(input: &Path, output: &Path, args: &Args) -> Result<Vec<String>, Failure> {
    let loaded = ExpertLoader::open(input)?;
    match args.to {
        Target::Binary => {
            let options = PackageOptions {
                tensor_codec: args.codec,
                ..Default::default()
            };
            loaded
                .contents
                .write_binary(output, &options, &mut |_, _| {})?;
        }
        Target::TarGz => {
            let files: Vec<LegacyFile> = loaded
                .contents
                .to_files()?
                .into_iter()
                .map(|(path, data)| LegacyFile {
                    path,
                    data,
                    mode: 0o644,
                })
                .collect();
            write_legacy(&files, output).map_err(Failure::error)?;
        }
        Target::Peft => loaded.contents.write_peft_dir(output)?,
    }
    Ok(loaded.warnings)
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    let batch = args.inputs.len() > 1;
    if batch {
        std::fs::create_dir_all(&args.output)
            .map_err(|e| Failure::error(format!("{}: {e}", args.output.display())))?;
    }
    let bar = count_bar("converting", args.inputs.len() as u64, json_out || !batch);
    let mut results = Vec::new();
    let mut failed = None;
    for input in &args.inputs {
        let output = if batch {
            output_for(input, &args.output, args.to)
        } else {
            args.output.clone()
        };
        match convert_one(input, &output, &args) {
            Ok(warnings) => {
                for w in &warnings {
                    bar.suspend(|| eprintln!("warning: {w}"));
                }
                results.push(json!({"input": input.display().to_string(), "output": output.display().to_string(), "ok": true, "warnings": warnings}));
            }
            Err(f) => {
                bar.suspend(|| eprintln!("error: {}: {}", input.display(), f.message));
                results.push(
                    json!({"input": input.display().to_string(), "ok": false, "error": f.message}),
                );
                failed.get_or_insert(f);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if json_out {
        print_json(&json!({ "to": format!("{:?}", args.to).to_lowercase(), "results": results }));
    } else {
        for r in &results {
            if r["ok"] == true {
                println!(
                    "{} -> {}",
                    r["input"].as_str().unwrap_or(""),
                    r["output"].as_str().unwrap_or("")
                );
            }
        }
    }
    match failed {
        Some(f) if json_out => Err(f.reported()),
        Some(f) => Err(f),
        None => Ok(()),
    }
}
