//! Writes an expert with a custom section (type code in the user range
//! `0x8000..=0xFFFF`) carrying extended metadata, reads it back verified,
//! and shows that a tool that does not know the section (the converter,
//! which only models manifest, adapter and files) keeps it byte for byte.
//!
//! ```sh
//! cargo run --example custom_section -- [ADAPTER_DIR] [OUT_DIR]
//! ```
//!
//! Defaults: the MiniLM LoRA r = 8 fixture and a temporary folder.

use std::path::{Path, PathBuf};

use expertui::format::loader::ExpertLoader;
use expertui::format::package::{CarriedSection, ExpertContents, PackageOptions};
use expertui::format::{ExpertReader, SectionType};

/// The type code this example's organisation chose for its metadata.
const EVAL_METADATA: SectionType = SectionType::Custom(SectionType::CUSTOM_BASE + 0x0042);
const SECTION_NAME: &str = "org.example.eval";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let adapter_dir = args.next().map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm-lora-r8")
    });
    let temp;
    let out_dir = match args.next() {
        Some(dir) => PathBuf::from(dir),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&out_dir)?;

    // 1. Extended metadata the format does not define: any bytes will do; here JSON.
    let metadata = serde_json::json!({
        "evaluated_on": "spider-dev (example)",
        "exact_match": 0.71,
        "harness": "org.example/eval 2.3",
        "notes": "stored in a custom section; readers that do not know 0x8042 skip it",
    });
    let payload = serde_json::to_vec_pretty(&metadata)?;

    // 2. Package the adapter with the extra section. Sections in
    //    `carried` are written verbatim after the tensors.
    let mut contents = ExpertContents::from_adapter_dir(&adapter_dir)?;
    contents.carried.push(CarriedSection {
        kind: EVAL_METADATA,
        name: SECTION_NAME.into(),
        layer: None,
        data: payload.clone(),
    });
    let first = out_dir.join("with-custom.expert");
    contents.write_binary(&first, &PackageOptions::default(), &mut |_, _| {})?;
    println!(
        "wrote {} with custom section {:#06x} {SECTION_NAME:?} ({} bytes)",
        first.display(),
        EVAL_METADATA.code(),
        payload.len()
    );

    // 3. Read it back: `open` checks structure and root digest, and the
    //    section's own SHA-256 is checked before its bytes are trusted.
    let reader = ExpertReader::open(&first)?;
    let info = reader
        .find(EVAL_METADATA, SECTION_NAME)
        .ok_or("custom section missing")?
        .clone();
    reader.check_section(info.index)?;
    let read: serde_json::Value = serde_json::from_slice(&reader.section(info.index)?)?;
    println!(
        "read back section #{} (type {}, sha256 {}…): digest verified, exact_match = {}",
        info.index,
        info.kind.label(),
        &hex::encode(info.sha256)[..16],
        read["exact_match"]
    );
    assert_eq!(read, metadata);

    // 4. A tool that does not know the type: the converter opens the file
    //    through `ExpertLoader` and writes a new one (what
    //    `expertui --headless convert` does). Unknown custom sections are
    //    carried over unchanged.
    let loaded = ExpertLoader::open(&first)?;
    let second = out_dir.join("converted.expert");
    loaded
        .contents
        .write_binary(&second, &PackageOptions::default(), &mut |_, _| {})?;
    let again = ExpertReader::open(&second)?;
    again.verify_all()?;
    let kept = again
        .find(EVAL_METADATA, SECTION_NAME)
        .ok_or("the converter dropped the custom section")?;
    let same = *again.section(kept.index)? == payload[..];
    println!(
        "converted copy {}: custom section kept as #{}, byte-identical: {same}",
        second.display(),
        kept.index
    );
    if !same {
        return Err("the custom section changed".into());
    }
    Ok(())
}
