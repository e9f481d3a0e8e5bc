//! `validate`: structure and root digest (O(TOC)), then optionally every
//! section digest in parallel, the manifest and its schema.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};

use super::{print_json, Failure};
use crate::format::integrity::SectionCheck;
use crate::format::reader::{ExpertReader, ReaderOptions};
use crate::format::{FormatError, SectionType};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub file: PathBuf,
    /// Hash every section (in parallel) and compare with the TOC.
    #[arg(long)]
    pub verify_integrity: bool,
    /// List the sections.
    #[arg(long)]
    pub list_sections: bool,
    /// Print the header fields and the manifest.
    #[arg(long)]
    pub dump_metadata: bool,
    /// Print the time each step took (stderr, or in the JSON).
    #[arg(long)]
    pub time: bool,
    /// Base model (folder, safetensors file or config.json) to check shapes
    /// and the manifest's weights_hash / vocab_hash against.
    #[arg(long)]
    pub base_model: Option<PathBuf>,
    #[command(flatten)]
    pub signature: super::sign::PolicyArgs,
}

/// Timings of the steps, in order.
#[derive(Default)]
struct Steps(Vec<(&'static str, f64)>);

impl Steps {
    fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.0.push((name, start.elapsed().as_secs_f64() * 1e3));
        out
    }
}

pub fn section_json(reader: &ExpertReader) -> Vec<Value> {
    reader
        .sections()
        .iter()
        .map(|s| {
            json!({
                "index": s.index,
                "id": s.id,
                "type": s.kind.label(),
                "name": s.name,
                "codec": s.codec.map_or("unknown", |c| c.label()),
                "layer": s.layer,
                "offset": s.offset,
                "stored_len": s.stored_len,
                "raw_len": s.raw_len,
                "sha256": hex::encode(s.sha256),
            })
        })
        .collect()
}

pub fn header_json(reader: &ExpertReader) -> Value {
    let h = reader.header();
    json!({
        "version": format!("{}.{}", h.version_major.get(), h.version_minor.get()),
        "header_size": h.header_size.get(),
        "flags": h.flags.get(),
        "file_size": h.file_size.get(),
        "toc_offset": h.toc_offset.get(),
        "toc_count": h.toc_count.get(),
        "toc_entry_size": h.toc_entry_size.get(),
        "section_alignment": h.section_alignment.get(),
        "root_digest": hex::encode(h.root_digest),
        "signed": h.signature_index.get() != crate::format::layout::NO_SIGNATURE,
    })
}

fn damaged_json(check: &SectionCheck) -> Value {
    json!({
        "index": check.index,
        "name": check.name,
        "offset": check.offset,
        "end": check.end,
        "expected": hex::encode(check.expected),
        "actual": hex::encode(check.actual),
        "digest_ok": check.expected == check.actual,
        "padding_ok": check.clean_padding,
    })
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    let mut steps = Steps::default();
    let policy = args.signature.load()?;
    let options = ReaderOptions {
        check_root: false,
        ..Default::default()
    };
    let reader = steps.time("open+structure", || {
        ExpertReader::open_with(&args.file, options)
    })?;
    let mut problems: Vec<String> = Vec::new();
    let root = steps.time("root digest", || reader.check_root());
    if let Err(e) = &root {
        problems.push(e.to_string());
    }
    let manifest = steps.time("manifest", || check_manifest(&reader));
    if let Err(e) = &manifest {
        problems.push(e.clone());
    }
    if let Some(base) = &args.base_model {
        let report = steps.time("base model", || {
            crate::format::package::ExpertContents::read_binary(&reader)
                .and_then(|c| crate::format::basecheck::check_against_base(&c, base))
        });
        match report {
            Ok(mismatches) => {
                problems.extend(mismatches.into_iter().map(|m| format!("base model: {m}")))
            }
            Err(e) => problems.push(format!("base model: {e}")),
        }
    }
    let mut damaged = Vec::new();
    // A signature vouches for section contents only through their digests:
    // checking one means hashing every section.
    let signed = reader.first(SectionType::Signature).is_some();
    let verify_integrity = args.verify_integrity || signed;
    let mut integrity_error = None;
    if verify_integrity {
        // A file truncated or rewritten in place since it was opened is an
        // I/O problem, not damage: stop with FileChanged before hashing it
        // (and after, so a rewrite during hashing is not reported as damage).
        reader.check_unchanged()?;
        let checks = steps.time("verify sections", || reader.verify());
        reader.check_unchanged()?;
        for check in checks.into_iter().filter(|c| !c.ok()) {
            if let Some(e) = check.error() {
                problems.push(e.to_string());
                integrity_error.get_or_insert(e);
            }
            damaged.push(check);
        }
        if !reader.tail_padding_clean() {
            problems.push("padding before the TOC holds non-zero bytes".into());
            integrity_error.get_or_insert(FormatError::BadHeader {
                field: "toc_offset",
                reason: "padding before the TOC holds non-zero bytes".into(),
            });
        }
    }
    let signature = (signed || args.signature.given()).then(|| {
        steps.time("signature", || {
            super::sign::signature_report(&reader, &policy, integrity_error)
        })
    });
    if let Some(report) = signature.as_ref().filter(|r| policy.fails(r)) {
        problems.push(format!("signature: {}", report.summary()));
    }
    let valid = problems.is_empty();
    if json_out {
        let mut out = json!({
            "file": args.file.display().to_string(),
            "format": "binary",
            "valid": valid,
            "exit_code": if valid { 0 } else { super::EXIT_INVALID },
            "root_ok": root.is_ok(),
            "integrity_checked": verify_integrity,
            "damaged": damaged.iter().map(damaged_json).collect::<Vec<_>>(),
            "problems": problems,
            "signature": super::sign::signature_json(signature.as_ref(), &policy),
        });
        if args.list_sections {
            out["sections"] = Value::Array(section_json(&reader));
        }
        if args.dump_metadata {
            out["header"] = header_json(&reader);
            out["manifest"] = manifest.clone().unwrap_or(Value::Null);
        }
        if args.time {
            out["timings_ms"] = steps
                .0
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
        }
        print_json(&out);
    } else {
        print_text(&args, &reader, manifest.as_ref().ok(), valid, &problems);
        if let Some(report) = &signature {
            println!("signature: {}", report.summary());
        }
    }
    if args.time {
        for (name, ms) in &steps.0 {
            eprintln!("{name:>16}: {ms:.3} ms");
        }
    }
    if valid {
        Ok(())
    } else {
        let failure = Failure::invalid(format!("{} is invalid", args.file.display()));
        Err(if json_out {
            failure.reported()
        } else {
            failure
        })
    }
}

fn print_text(
    args: &Args,
    reader: &ExpertReader,
    manifest: Option<&Value>,
    valid: bool,
    problems: &[String],
) {
    let h = reader.header();
    println!(
        "{}: .expert v{}.{}, {} bytes, {} sections",
        args.file.display(),
        h.version_major.get(),
        h.version_minor.get(),
        reader.file_size(),
        reader.sections().len()
    );
    if args.dump_metadata {
        println!(
            "{}",
            serde_json::to_string_pretty(&header_json(reader)).unwrap_or_default()
        );
        if let Some(m) = manifest {
            println!("{}", serde_json::to_string_pretty(m).unwrap_or_default());
        }
    }
    if args.list_sections {
        print_sections(reader);
    }
    for problem in problems {
        println!("  problem: {problem}");
    }
    let signed = reader.first(SectionType::Signature).is_some();
    let scope = if signed {
        "structure, root digest, manifest, every section and signature"
    } else if args.verify_integrity {
        "structure, root digest, manifest and every section"
    } else {
        "structure, root digest and manifest"
    };
    println!("{}: {scope}", if valid { "valid" } else { "INVALID" });
}

/// The section table as text.
pub fn print_sections(reader: &ExpertReader) {
    println!(
        "{:>3}  {:<17} {:<22} {:<12} {:>10} {:>10} {:>10}",
        "#", "type", "name", "codec", "offset", "stored", "raw"
    );
    for s in reader.sections() {
        println!(
            "{:>3}  {:<17} {:<22} {:<12} {:>10} {:>10} {:>10}",
            s.index,
            s.kind.label(),
            s.name,
            s.codec.map_or("unknown", |c| c.label()),
            s.offset,
            s.stored_len,
            s.raw_len
        );
    }
}

/// Parses the manifest section and checks it against the schema and rules.
pub fn check_manifest(reader: &ExpertReader) -> Result<Value, String> {
    let info = reader
        .first(SectionType::Manifest)
        .ok_or_else(|| "no manifest section".to_string())?;
    let bytes = reader
        .section(info.index)
        .map_err(|e: FormatError| e.to_string())?;
    crate::format::manifest::validate_manifest_bytes(&bytes)
        .map_err(|e| format!("manifest: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("manifest: {e}"))
}
