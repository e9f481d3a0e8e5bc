//! `info` (and `expertui FILE` when stdout is not a terminal): the overview
//! of an expert, binary or legacy, from the same [`ValidationReport`] as
//! `validate` (structure, root digest, manifest, grammar, consistency).

use std::path::PathBuf;

use super::report::{print_sections, print_warnings, verdict};
use super::{print_json, Failure};
use crate::diagnostics::{printable, Severity};
use crate::format::ExpertReader;
use crate::validation::{validate_path, validate_reader, ValidateOptions, ValidationReport};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Expert file, binary or legacy tar.gz (the embedded demo expert when absent).
    pub file: Option<PathBuf>,
    /// The signature checked against this policy (none: reported, not checked).
    #[command(flatten)]
    pub signature: super::policy::PolicyArgs,
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    let policy = args.signature.load()?;
    let options = ValidateOptions {
        list_sections: true,
        dump_metadata: true,
        policy: Some(&policy),
        ..Default::default()
    };
    let report = match &args.file {
        Some(path) => validate_path(path, &options)?,
        None => validate_reader(
            &ExpertReader::from_static(crate::DEMO_EXPERT)?,
            "demo expert (embedded)".into(),
            &options,
        )?,
    };
    if json_out {
        print_json(&serde_json::to_value(&report).unwrap_or_default());
    } else {
        print_overview(&report);
    }
    verdict(&report, json_out)
}

fn print_overview(report: &ValidationReport) {
    println!("{}", printable(&report.file));
    let members = report.sections.as_ref().map_or(0, Vec::len);
    match &report.header {
        _ if report.is_legacy() => println!(
            "  format legacy tar.gz (deprecated)  {} bytes  {members} members",
            report
                .header
                .as_ref()
                .map_or(serde_json::Value::Null, |h| h["file_size"].clone())
        ),
        Some(h) => println!(
            "  format .expert v{}  {} bytes  {members} sections  root {}",
            h["version"].as_str().unwrap_or("?"),
            h["file_size"],
            h["root_digest"]
                .as_str()
                .and_then(|d| d.get(..16))
                .unwrap_or("?")
        ),
        None => {}
    }
    if let Some(m) = &report.manifest {
        let get =
            |k: &str| printable(m.get(k).and_then(|v| v.as_str()).unwrap_or("?")).into_owned();
        println!("  expert {} {}", get("name"), get("version"));
    }
    for f in report.at_least(Severity::Error) {
        println!("  {f}");
    }
    print_warnings(&report.findings);
    if let Some(sections) = &report.sections {
        print_sections(sections);
    }
}
