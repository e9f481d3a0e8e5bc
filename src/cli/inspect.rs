//! `info` (and `expertui FILE` when stdout is not a terminal): the overview.

use std::path::PathBuf;

use serde_json::json;

use super::validate::{check_manifest, header_json, print_sections, section_json};
use super::{print_json, Failure};
use crate::format::ExpertReader;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Expert file (the embedded demo expert when absent).
    pub file: Option<PathBuf>,
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    let (reader, label) = match &args.file {
        Some(path) => (ExpertReader::open(path)?, path.display().to_string()),
        None => (
            ExpertReader::from_static(crate::DEMO_EXPERT)?,
            "demo expert (embedded)".into(),
        ),
    };
    let manifest = check_manifest(&reader);
    if json_out {
        print_json(&json!({
            "file": label,
            "header": header_json(&reader),
            "manifest": manifest.as_ref().ok(),
            "manifest_problem": manifest.as_ref().err(),
            "sections": section_json(&reader),
        }));
        return Ok(());
    }
    let h = reader.header();
    println!("{label}");
    println!(
        "  format .expert v{}.{}  {} bytes  {} sections  root {}",
        h.version_major.get(),
        h.version_minor.get(),
        reader.file_size(),
        reader.sections().len(),
        hex::encode(&h.root_digest[..8])
    );
    match &manifest {
        Ok(m) => {
            let get = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            println!("  expert {} {}", get("name"), get("version"));
        }
        Err(e) => println!("  manifest problem: {e}"),
    }
    print_sections(&reader);
    Ok(())
}
