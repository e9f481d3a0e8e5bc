//! Converts a legacy tar.gz expert to the `.expert` v2 binary format and
//! validates the result, with the library alone (what
//! `expertui --headless convert` and `validate --verify-integrity` do).
//!
//! ```sh
//! cargo run --example convert_legacy -- [LEGACY.expert] [OUT_DIR]
//! ```
//!
//! Defaults: the repository's legacy fixture
//! (`tests/fixtures/minilm-sql-dora.v0.3.0.expert`) and a temporary folder.

use std::path::{Path, PathBuf};

use expertui::format::loader::{ExpertLoader, SourceFormat};
use expertui::format::manifest::Manifest;
use expertui::format::package::PackageOptions;
use expertui::format::{ExpertReader, SectionType};
use expertui::validation::{validate_path, ValidateOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let input = args.next().map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm-sql-dora.v0.3.0.expert")
    });
    // A given output folder is kept; otherwise a temporary one is removed at exit.
    let temp;
    let out_dir = match args.next() {
        Some(dir) => PathBuf::from(dir),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&out_dir)?;

    // 1. Open the legacy package. The loader detects the format by content
    //    (gzip magic), checks the `.sha256` sidecar when there is one, and
    //    returns a deprecation warning.
    println!("opening {}", input.display());
    let loaded = ExpertLoader::open(&input)?;
    if loaded.format != SourceFormat::LegacyTarGz {
        return Err(format!("{} is not a legacy tar.gz expert", input.display()).into());
    }
    for warning in &loaded.warnings {
        println!("  warning: {warning}");
    }
    let adapter = loaded.contents.adapter.as_ref();
    println!(
        "  legacy tar.gz: manifest {} bytes, {} adapter tensors, {} other files",
        loaded.contents.manifest.len(),
        adapter.map_or(0, |a| a.tensors.len()),
        loaded.contents.files.len()
    );

    // 2. Write the binary file (default options: tensors uncompressed and
    //    zero-copy, text sections zstd). The writer is crash-safe: it writes
    //    a temporary file and renames it into place.
    let stem = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "expert".into());
    let stem = stem.strip_suffix(".expert").unwrap_or(&stem).to_string();
    let output = out_dir.join(format!("{stem}.v2.expert"));
    let summary =
        loaded
            .contents
            .write_binary(&output, &PackageOptions::default(), &mut |_, _| {})?;
    let legacy_size = std::fs::metadata(&input)?.len();
    println!(
        "wrote {}: {} bytes ({} sections; legacy file {} bytes), root digest {}",
        output.display(),
        summary.file_size,
        summary.sections.len(),
        legacy_size,
        hex::encode(summary.root_digest)
    );

    // 3. Validate it as `validate --verify-integrity` does: one report of
    //    findings (structure, root digest, every section's SHA-256, manifest
    //    schema and rules, grammar, manifest ↔ adapter). The report decides
    //    validity; warnings (a grammar llama.cpp would refuse, a manifest
    //    that disagrees with its tensors) do not make the file invalid.
    let report = validate_path(
        &output,
        &ValidateOptions {
            verify_integrity: true,
            ..Default::default()
        },
    )?;
    for finding in &report.findings {
        println!("  {finding}");
    }
    if !report.valid {
        return Err(format!("{} is invalid: {:?}", output.display(), report.problems).into());
    }
    let reader = ExpertReader::open(&output)?;
    let manifest_section = reader
        .first(SectionType::Manifest)
        .ok_or("the converted file has no manifest")?;
    let manifest = Manifest::from_json(&reader.section(manifest_section.index)?)?;
    println!(
        "validated: {} ({} warnings); {} sections; manifest {} {}",
        report.scope.join(", "),
        report.counts.warnings,
        reader.sections().len(),
        manifest.name,
        manifest.version
    );
    for info in reader.sections() {
        println!(
            "  #{:<2} {:<16} {:<40} {:>8} bytes stored, {:>8} raw",
            info.index,
            info.kind.label(),
            info.name,
            info.stored_len,
            info.raw_len
        );
    }
    println!("output: {}", output.display());
    Ok(())
}
