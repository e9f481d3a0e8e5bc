//! `extract FILE SECTION -o PATH`: one section's decoded bytes.

use std::path::PathBuf;

use serde_json::json;

use super::{print_json, Failure};
use crate::format::atomic::write_atomic;
use crate::format::{ExpertReader, FormatError};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub file: PathBuf,
    /// Section name, `type:name`, or `#index`.
    pub section: String,
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
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
            info.name,
            args.output.display()
        );
    }
    Ok(())
}
