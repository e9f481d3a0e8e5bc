//! Compresses a LoRA adapter with OSD (Optimal Singular Damage) at a chosen
//! rank and sparsity, and reports sizes and the reconstruction error: the
//! library side of `expertui --headless osd compress`.
//!
//! ```sh
//! cargo run --release --example osd_compress -- [ADAPTER_DIR|FILE.expert] [OUT_DIR] [--rank R] [--sparsity S]
//! ```
//!
//! Defaults: the MiniLM LoRA r = 8 fixture (`tests/fixtures/minilm-lora-r8`),
//! a temporary folder, rank 4, sparsity 0.75.

use std::path::{Path, PathBuf};

use expertui::format::loader::ExpertLoader;
use expertui::format::package::{ExpertContents, PackageOptions};
use expertui::format::{ExpertReader, SectionType};
use expertui::osd::analysis::{Method, OsdParams};
use expertui::osd::delta::adapter_deltas;
use expertui::osd::expert::{write_compressed, AdapterAnalysis};
use expertui::osd::ValueDtype;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut positional = Vec::new();
    let mut params = OsdParams {
        method: Method::Osd,
        rank: 4,
        dtype: ValueDtype::Bf16,
        ..OsdParams::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rank" => params.rank = args.next().ok_or("--rank needs a value")?.parse()?,
            "--dtype" => {
                let name = args.next().ok_or("--dtype needs a value")?;
                params.dtype = ValueDtype::ALL
                    .into_iter()
                    .find(|d| d.name() == name)
                    .ok_or("--dtype is f32, bf16 or f16")?;
            }
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let input = positional.first().cloned().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm-lora-r8")
    });
    let temp;
    let out_dir = match positional.get(1) {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&out_dir)?;

    // 1. The expert's contents: a PEFT folder, or any expert file.
    let contents = if input.is_dir() {
        ExpertContents::from_adapter_dir(&input)?
    } else {
        ExpertLoader::open(&input)?.contents
    };
    let adapter = contents
        .adapter
        .as_ref()
        .ok_or("the input holds no adapter")?;
    println!(
        "input {}: {} modules, {} tensors",
        input.display(),
        adapter.modules.len(),
        adapter.tensors.len()
    );

    // The uncompressed expert, for the size comparison.
    let plain = out_dir.join("plain.expert");
    let plain_summary =
        contents.write_binary(&plain, &PackageOptions::default(), &mut |_, _| {})?;

    // 2. Analyse every module once: the SVD of ΔW = s·B·A (factored, ΔW is
    //    never formed), energy curve and sorted importance scores. IA³,
    //    embedding and DoRA modules without base weights are skipped.
    let (deltas, skipped) = adapter_deltas(adapter, None)?;
    let analysis = AdapterAnalysis::from_deltas(deltas, skipped, 64)?;
    println!(
        "analysed {} modules ({} skipped)",
        analysis.modules.len(),
        analysis.skipped.len()
    );

    // 3. What the TUI shows while the sliders move: an estimate from the caches.
    let estimate = analysis.estimate(&params);
    println!(
        "estimate at rank {} in {}: {} bytes written, relative error {:.4}",
        params.rank, params.dtype, estimate.bytes, estimate.rel_error
    );

    // 4. Compress exactly and write the expert: each layer's modules become
    //    one OSD section, their LoRA tensors are dropped, and the manifest
    //    gains an `osd` object.
    let output = out_dir.join(format!("osd-r{}-{}.expert", params.rank, params.dtype));
    let (_, report) = write_compressed(
        &contents,
        &analysis,
        &params,
        &output,
        &PackageOptions::default(),
    )?;
    println!(
        "compressed {} modules: {} -> {} bytes of tensors ({:.2}x smaller), relative Frobenius error {:.4} (measured)",
        report.modules, report.original_bytes, report.tensor_bytes, report.ratio, report.rel_error
    );
    println!(
        "file sizes: plain {} bytes, OSD {} bytes ({:.1} % of plain)",
        plain_summary.file_size,
        report.file_bytes,
        100.0 * report.file_bytes as f64 / plain_summary.file_size as f64
    );

    // 5. The compressed file is an ordinary expert: it validates, and its
    //    manifest records the parameters.
    let reader = ExpertReader::open(&output)?;
    reader.verify_all()?;
    let osd_sections = reader.find_all(SectionType::Osd).count();
    let manifest = reader.section_named(SectionType::Manifest, "manifest.json")?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)?;
    println!(
        "validated {}: {} OSD sections, manifest osd = {}",
        output.display(),
        osd_sections,
        manifest["osd"]
    );
    Ok(())
}
