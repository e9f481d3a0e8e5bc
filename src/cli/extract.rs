//! `extract FILE SECTION -o PATH`: one section's decoded bytes.

use std::path::PathBuf;

use serde_json::json;

use super::{print_json, Failure};
use crate::diagnostics::printable;
use crate::format::atomic::write_atomic;
use crate::format::{ExpertReader, FormatError, SectionType};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// An .expert v2 file or a legacy tar.gz package.
    pub file: PathBuf,
    /// Section name, `type:name`, or `#index`.
    pub section: String,
    /// Where the bytes go; `-` writes them to stdout (the summary then
    /// goes to stderr, so the data stays clean).
    #[arg(short, long)]
    pub output: PathBuf,
}

fn to_stdout(args: &Args) -> bool {
    args.output.as_os_str() == "-"
}

/// Writes the bytes (atomically to a file, or to stdout for `-`), then the
/// summary: `--json` or one line, to stderr when stdout holds the bytes.
fn deliver(
    args: &Args,
    bytes: &[u8],
    summary: serde_json::Value,
    line: String,
    json_out: bool,
) -> Result<(), Failure> {
    if to_stdout(args) {
        use std::io::{IsTerminal, Write};
        let mut out = std::io::stdout().lock();
        // As curl does: bytes from a file can hold escape sequences that
        // drive the terminal, so only text goes to one.
        let unsafe_for_terminal = || {
            std::str::from_utf8(bytes).map_or(true, |t| {
                t.chars().any(crate::diagnostics::is_unprintable_inline)
            })
        };
        if out.is_terminal() && unsafe_for_terminal() {
            return Err(Failure::error(
                "the section holds binary or control bytes: redirect stdout to a file or a pipe (`-o - > FILE`)",
            ));
        }
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(|e| Failure::error(format!("stdout: {e}")))?;
        if json_out {
            eprintln!("{summary}");
        } else {
            eprintln!("{line}");
        }
        return Ok(());
    }
    write_atomic(&args.output, bytes)?;
    if json_out {
        print_json(&summary);
    } else {
        println!("{line}");
    }
    Ok(())
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
    let kind = crate::validation::member_kind(name);
    let summary = json!({"section": name, "type": kind.label(), "bytes": bytes.len(), "output": args.output.display().to_string(), "format": crate::validation::FORMAT_LEGACY});
    let line = format!(
        "{} bytes of {} {} written to {}",
        bytes.len(),
        kind.label(),
        printable(name),
        printable(&args.output.display().to_string())
    );
    deliver(args, bytes, summary, line, json_out)
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    if crate::format::loader::is_legacy_file(&args.file) {
        return extract_legacy(&args, json_out);
    }
    let selected = |index: usize, kind: SectionType, name: &str| {
        args.section == name
            || args.section == format!("{}:{}", kind.label(), name)
            || args.section == format!("#{index}")
    };
    let reader = match crate::format::remote::url_of(&args.file) {
        // Only the header, the TOC, the small text sections and the
        // section asked for are fetched.
        Some(url) => {
            let section = args.section.clone();
            let plan = crate::format::remote::Plan::Pick(Box::new(move |i, e| {
                let name = e.name_str().unwrap_or_default();
                section == name
                    || section == format!("{}:{}", e.kind().label(), name)
                    || section == format!("#{i}")
            }));
            crate::format::remote::open_reader(&url, &plan, Default::default(), &mut |_, _| {})?.0
        }
        None => ExpertReader::open(&args.file)?,
    };
    let found = reader
        .sections()
        .iter()
        .find(|s| selected(s.index, s.kind, &s.name));
    let info =
        found.ok_or_else(|| Failure::error(FormatError::SectionNotFound(args.section.clone())))?;
    // Never hand out damaged bytes: check this section's digest first.
    reader.check_section(info.index)?;
    let bytes = reader.section(info.index)?;
    let summary = json!({"section": info.name, "type": info.kind.label(), "bytes": bytes.len(), "output": args.output.display().to_string()});
    let line = format!(
        "{} bytes of {} {} written to {}",
        bytes.len(),
        info.kind.label(),
        printable(&info.name),
        printable(&args.output.display().to_string())
    );
    deliver(&args, &bytes, summary, line, json_out)
}
