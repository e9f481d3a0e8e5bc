//! `extract FILE SECTION -o PATH`: one section's decoded bytes.

use std::path::PathBuf;

use serde_json::json;

use super::{print_json, Failure};
use crate::diagnostics::printable;
use crate::format::atomic::write_atomic;
use crate::format::{ExpertReader, FormatError};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// An .expert v2 file or a legacy tar.gz package.
    pub file: PathBuf,
    /// Section name, `type:name`, or `#index`.
    pub section: String,
    #[arg(short, long)]
    pub output: PathBuf,
}

/// A legacy package's member, verified against its sidecar when there is one.
fn extract_legacy(args: &Args, json_out: bool) -> Result<(), Failure> {
    let loaded = crate::format::loader::ExpertLoader::open_exact(&args.file)?;
    for f in super::checks::loader_findings(&args.file, &loaded.warnings, false) {
        eprintln!("{f}");
    }
    let files = loaded.contents.to_files()?;
    let wanted = args.section.as_str();
    let found = files.iter().enumerate().find(|(i, (name, _))| {
        let kind = crate::validation::member_kind(name);
        wanted == name
            || wanted == format!("{}:{}", kind.label(), name)
            || wanted == format!("#{i}")
    });
    let (_, (name, bytes)) =
        found.ok_or_else(|| Failure::error(FormatError::SectionNotFound(args.section.clone())))?;
    write_atomic(&args.output, bytes)?;
    let kind = crate::validation::member_kind(name);
    if json_out {
        print_json(
            &json!({"section": name, "type": kind.label(), "bytes": bytes.len(), "output": args.output.display().to_string(), "format": crate::validation::FORMAT_LEGACY}),
        );
    } else {
        println!(
            "{} bytes of {} {} written to {}",
            bytes.len(),
            kind.label(),
            printable(name),
            printable(&args.output.display().to_string())
        );
    }
    Ok(())
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    if crate::format::loader::is_legacy_file(&args.file) {
        return extract_legacy(&args, json_out);
    }
    let reader = ExpertReader::open(&args.file)?;
    let found = reader.sections().iter().find(|s| {
        args.section == s.name
            || args.section == format!("{}:{}", s.kind.label(), s.name)
            || args.section == format!("#{}", s.index)
    });
    let info =
        found.ok_or_else(|| Failure::error(FormatError::SectionNotFound(args.section.clone())))?;
    // Never hand out damaged bytes: check this section's digest first.
    reader.check_section(info.index)?;
    let bytes = reader.section(info.index)?;
    write_atomic(&args.output, &bytes)?;
    if json_out {
        print_json(
            &json!({"section": info.name, "type": info.kind.label(), "bytes": bytes.len(), "output": args.output.display().to_string()}),
        );
    } else {
        println!(
            "{} bytes of {} {} written to {}",
            bytes.len(),
            info.kind.label(),
            printable(&info.name),
            printable(&args.output.display().to_string())
        );
    }
    Ok(())
}
