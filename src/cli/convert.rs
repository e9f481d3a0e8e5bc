//! `convert IN... -o OUT [--to binary|tar.gz|peft]`.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::progress::count_bar;
use super::{print_json, Failure};
use crate::diagnostics::{make_strict, printable, Finding, Severity};
use crate::format::legacy::{write_legacy, LegacyFile};
use crate::format::loader::ExpertLoader;
use crate::format::package::{PackageOptions, TensorCodec};
use crate::validation::WeightsDigest;

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
    /// Refuse an input (exit 3, nothing written for it) when a check finds a
    /// warning (grammar, manifest ↔ adapter, missing sidecar).
    #[arg(long)]
    pub strict: bool,
}

/// A file name made from an input's name: only letters, digits, `-`, `_`
/// and inner dots, never empty, never `.`/`..` or hidden, so the output
/// stays a plain entry of the output folder whatever the input is called.
fn safe_stem(input: &Path) -> String {
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".expert").unwrap_or(&name);
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('.');
    if cleaned.is_empty() {
        "expert".into()
    } else {
        cleaned.to_string()
    }
}

fn output_for(input: &Path, out_dir: &Path, to: Target) -> PathBuf {
    let stem = safe_stem(input);
    match to {
        Target::Binary => out_dir.join(format!("{stem}.expert")),
        Target::TarGz => out_dir.join(format!("{stem}.tar.gz.expert")),
        Target::Peft => out_dir.join(stem),
    }
}

/// Every input's output in the folder `out_dir`, refused as a whole (nothing
/// written) when two inputs would write the same output.
fn batch_outputs(inputs: &[PathBuf], out_dir: &Path, to: Target) -> Result<Vec<PathBuf>, Failure> {
    let mut seen: std::collections::HashMap<PathBuf, &Path> = Default::default();
    let mut outputs = Vec::with_capacity(inputs.len());
    for input in inputs {
        let output = output_for(input, out_dir, to);
        // safe_stem makes a plain name; this is the invariant that matters.
        if output.parent() != Some(out_dir) {
            return Err(Failure::error(format!(
                "{}: its output {} would leave {}",
                input.display(),
                output.display(),
                out_dir.display()
            )));
        }
        if let Some(first) = seen.insert(output.clone(), input) {
            return Err(Failure::error(format!(
                "{} and {} would both be written to {}: convert them into different folders (nothing was written)",
                first.display(),
                input.display(),
                output.display()
            )));
        }
        outputs.push(output);
    }
    Ok(outputs)
}

/// Converts one input; returns the findings to show. Manifest and grammar
/// are carried verbatim: problems in them are warnings, never a refusal
/// (unless `--strict`).
pub fn convert_one(input: &Path, output: &Path, args: &Args) -> Result<Vec<Finding>, Failure> {
    let mut loaded = ExpertLoader::open(input)?;
    let weights = loaded
        .contents
        .adapter
        .as_ref()
        .filter(|a| a.tensor_bytes() <= 256 << 20)
        .and_then(|_| loaded.contents.adapter_weights().ok().flatten())
        .map(|w| WeightsDigest::of(&w));
    let mut findings = super::checks::loader_findings(input, &loaded.warnings, true);
    findings.extend(super::checks::check_before_writing(
        &mut loaded.contents,
        weights,
        false,
        args.strict,
        true,
    )?);
    if args.strict {
        // Converting is what the deprecation notice asks for: not a refusal.
        findings.retain(|f| f.code != "legacy.deprecated");
        make_strict(&mut findings);
        if let Some(f) = findings.iter().find(|f| f.severity == Severity::Error) {
            return Err(Failure::invalid(format!("--strict, not written: {f}")));
        }
    }
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
            // A legacy package without its sidecar is unverified: write it,
            // as the old packager (and `package --format tar.gz`) does.
            super::keys::write_sidecar(output)?;
        }
        // OSD modules go out as LoRA factors (the blends are refused).
        Target::Peft => crate::osd::export::as_lora(&loaded.contents)?.write_peft_dir(output)?,
    }
    Ok(findings)
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    let batch = args.inputs.len() > 1;
    let outputs = if batch {
        batch_outputs(&args.inputs, &args.output, args.to)?
    } else {
        vec![args.output.clone()]
    };
    if batch {
        std::fs::create_dir_all(&args.output)
            .map_err(|e| Failure::error(format!("{}: {e}", args.output.display())))?;
    }
    let bar = count_bar("converting", args.inputs.len() as u64, json_out || !batch);
    let mut results = Vec::new();
    let mut failed = None;
    for (input, output) in args.inputs.iter().zip(outputs) {
        match convert_one(input, &output, &args) {
            Ok(findings) => {
                // check_before_writing printed the content findings; the loader's here.
                for f in findings.iter().filter(|f| f.code.starts_with("legacy.")) {
                    bar.suspend(|| eprintln!("{f}"));
                }
                let warnings: Vec<String> = findings
                    .iter()
                    .filter(|f| f.severity == Severity::Warning)
                    .map(|f| f.message.clone())
                    .collect();
                results.push(json!({"input": input.display().to_string(), "output": output.display().to_string(), "ok": true, "warnings": warnings, "findings": findings}));
            }
            Err(mut f) => {
                let name = input.display().to_string();
                // Some errors already start with the path: say it once.
                if !f.message.starts_with(&name) {
                    f.message = format!("{name}: {}", f.message);
                }
                if batch {
                    bar.suspend(|| eprintln!("error: {}", printable(&f.message)));
                }
                results.push(json!({"input": name, "ok": false, "error": f.message}));
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
                    printable(r["input"].as_str().unwrap_or("")),
                    printable(r["output"].as_str().unwrap_or(""))
                );
            }
        }
    }
    let Some(mut failure) = failed else {
        return Ok(());
    };
    if batch {
        // Each failure was printed above, with its input: end on the tally.
        let written = results.iter().filter(|r| r["ok"] == true).count();
        failure.message = format!(
            "{} of {} inputs not converted ({written} written)",
            results.len() - written,
            results.len()
        );
    }
    Err(if json_out {
        failure.reported()
    } else {
        failure
    })
}
