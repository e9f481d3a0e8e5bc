//! `validate`: prints the [`ValidationReport`] the library builds, as text
//! or `--json`. It decides nothing itself: errors exit 3, warnings exit 0
//! unless `--strict`.

use std::path::PathBuf;

use super::report::{print_sections, print_warnings, verdict};
use super::{print_json, Failure};
use crate::diagnostics::{printable, Severity};
use crate::validation::{validate_path, ValidateOptions, ValidationReport};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// An .expert v2 file or a legacy tar.gz package (a folder with --recursive).
    pub file: PathBuf,
    /// Validate every `*.expert` below the folder FILE: one line per file
    /// (a JSON object per line with --json), a summary, and the worst exit
    /// code (3 if any is invalid, else 1 if any could not be read).
    #[arg(long, short = 'r')]
    pub recursive: bool,
    /// With --recursive: how many experts to validate at once [default: the cores; 16 for a bucket prefix].
    #[arg(long, requires = "recursive")]
    pub jobs: Option<usize>,
    /// Hash every section (in parallel) and compare with the TOC; compare the
    /// adapter's size and SHA-256 with the manifest.
    #[arg(long)]
    pub verify_integrity: bool,
    /// List the sections (a legacy package's members).
    #[arg(long)]
    pub list_sections: bool,
    /// Print the header fields and the manifest.
    #[arg(long)]
    pub dump_metadata: bool,
    /// Print the time each step took (stderr, or in the JSON).
    #[arg(long)]
    pub time: bool,
    /// Treat warnings (grammar, manifest ↔ adapter, legacy sidecar) as errors.
    #[arg(long)]
    pub strict: bool,
    /// Base model (folder, safetensors file or config.json) to check shapes
    /// and the manifest's weights_hash / vocab_hash against.
    #[arg(long)]
    pub base_model: Option<PathBuf>,
    #[command(flatten)]
    pub signature: super::policy::PolicyArgs,
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    let policy = args.signature.load()?;
    let options = ValidateOptions {
        verify_integrity: args.verify_integrity,
        base_model: args.base_model.as_deref(),
        policy: Some(&policy),
        strict: args.strict,
        list_sections: args.list_sections,
        dump_metadata: args.dump_metadata,
        time: args.time,
    };
    if args.recursive {
        // Remote validations wait on the network, not the CPU: more at once.
        let remote = crate::format::remote::is_url(&args.file);
        let jobs = args.jobs.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            if remote {
                16
            } else {
                cores
            }
        });
        return super::validate_tree::run(&args.file, &options, jobs, json_out);
    }
    let report = validate_path(&args.file, &options)?;
    if json_out {
        print_json(&serde_json::to_value(&report).unwrap_or_default());
    } else {
        print_text(&report);
    }
    if args.time {
        for (name, ms) in &report.steps {
            eprintln!("{name:>16}: {ms:.3} ms");
        }
    }
    verdict(&report, json_out)
}

fn print_text(report: &ValidationReport) {
    match &report.header {
        _ if report.is_legacy() => println!(
            "{}: legacy tar.gz package{}",
            printable(&report.file),
            report
                .sections
                .as_ref()
                .map(|s| format!(", {} members", s.len()))
                .unwrap_or_default()
        ),
        Some(h) => println!(
            "{}: .expert v{}, {} bytes, {} sections",
            printable(&report.file),
            h["version"].as_str().unwrap_or("?"),
            h["file_size"],
            h["toc_count"]
        ),
        None => println!("{}", printable(&report.file)),
    }
    if let Some(header) = &report.header {
        println!("{}", crate::diagnostics::json_pretty(header));
    }
    if let Some(manifest) = &report.manifest {
        println!("{}", crate::diagnostics::json_pretty(manifest));
    }
    if let Some(sections) = &report.sections {
        print_sections(sections);
    }
    if let Some(remote) = &report.remote {
        println!(
            "fetched {} of {} bytes in {} requests ({} sections from the cache)",
            remote.bytes_received, remote.size, remote.requests, remote.sections_from_cache
        );
    }
    for f in report.at_least(Severity::Error) {
        println!("  {f}");
    }
    print_warnings(&report.findings);
    if report.signature["state"] != "unsigned" || report.scope.contains(&"signature") {
        println!(
            "signature: {}",
            printable(
                report.signature["summary"]
                    .as_str()
                    .or_else(|| report.signature["state"].as_str())
                    .unwrap_or("?")
            )
        );
    }
    let c = report.counts;
    let tail = match (c.warnings, c.notes) {
        (0, 0) => String::new(),
        (w, 0) => format!(" ({w} warning{})", plural(w)),
        (0, n) => format!(" ({n} note{})", plural(n)),
        (w, n) => format!(" ({w} warning{}, {n} note{})", plural(w), plural(n)),
    };
    println!(
        "{}: {}{tail}",
        if report.valid { "valid" } else { "INVALID" },
        report.scope.join(", ")
    );
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
