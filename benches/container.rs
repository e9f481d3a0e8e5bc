//! Container benchmarks: every figure beside its anchor, measured in the same
//! run. `cargo bench --bench container` prints a Markdown report (paste into
//! BENCHMARKS.md). `-- --make-adapter DIR MB` writes a synthetic PEFT adapter
//! of about MB megabytes (used by benches/package_rss.sh).

use std::hint::black_box;
use std::path::{Path, PathBuf};

mod common;

use common::{fmt, machine, measure, qwen_adapter, qwen_config, write_adapter_dir, Stat};
use expertui::format::legacy::{legacy_bytes, read_legacy, LegacyFile, LegacyLimits};
use expertui::format::package::{ExpertContents, PackageOptions, TensorCodec};
use expertui::format::shuffle::shuffle_block;
use expertui::format::tensor_index::TensorIndex;
use expertui::format::tensors::TensorBlob;
use expertui::format::{ExpertReader, ExpertWriter, SectionType, WriterOptions};
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

fn mb_per_s(bytes: usize, s: &Stat) -> f64 {
    bytes as f64 / 1e6 / (s.median / 1e3)
}

/// Every tensor view of a 2.1 expert ready: one walk of the binary tensor
/// index, no JSON (what `AdapterWeights` does before copying).
fn binary_views(path: &Path) -> usize {
    let r = ExpertReader::open(path).unwrap();
    let info = r.first(SectionType::TensorIndex).unwrap();
    let bytes = r.section(info.index).unwrap();
    let index = TensorIndex::parse(&bytes).unwrap().unwrap();
    let mut n = 0;
    for section in index.sections() {
        let target = r.find(section.kind, section.name).unwrap();
        let data = r.section(target.index).unwrap();
        n += index
            .views(&section, &data)
            .unwrap()
            .iter()
            .map(|(_, v)| black_box(v.data().len()).min(1))
            .sum::<usize>();
        black_box(index.modules(&section));
    }
    n
}

/// The same from a 2.0 file (no index): one safetensors header and one
/// module table per section, parsed in parallel.
fn binary_views_2_0(path: &Path) -> usize {
    use rayon::prelude::*;
    let r = ExpertReader::open(path).unwrap();
    let sections: Vec<_> = r.find_all(SectionType::Tensors).collect();
    // Sections are independent: their indexes parse in parallel.
    sections
        .par_iter()
        .map(|info| {
            let bytes = r.section(info.index).unwrap();
            let blob = TensorBlob::parse(&bytes, &info.name).unwrap();
            black_box(blob.modules(&info.name).unwrap());
            blob.tensors
                .iter()
                .map(|(_, v)| black_box(v.data().len()).min(1))
                .sum::<usize>()
        })
        .sum()
}

/// `path` rewritten without its tensor index (a 2.0-style file).
fn without_index(path: &Path, out: &Path) {
    let r = ExpertReader::open(path).unwrap();
    let mut w = ExpertWriter::create(out, WriterOptions::default()).unwrap();
    for s in r.sections() {
        if s.kind != SectionType::TensorIndex {
            w.copy_section(&r, s.index).unwrap();
        }
    }
    w.finish().unwrap();
}

fn safetensors_views(path: &Path) -> usize {
    let file = std::fs::File::open(path).unwrap();
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let st = SafeTensors::deserialize(&map).unwrap();
    st.iter()
        .map(|(_, v)| black_box(v.data().len()).min(1))
        .sum()
}

fn legacy_views(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let pkg = read_legacy(&bytes, &LegacyLimits::default()).unwrap();
    let weights = pkg.get("adapter_model.safetensors").unwrap();
    let st = SafeTensors::deserialize(&weights.data).unwrap();
    st.iter()
        .map(|(_, v)| black_box(v.data().len()).min(1))
        .sum()
}

fn codec_rows(label: &str, data: &[u8], element: usize, out: &mut String) {
    let mut shuffled = Vec::new();
    shuffle_block(data, element, &mut shuffled);
    for level in [1, 3, 6, 9, 12, 19] {
        for (codec, input) in [("zstd", data), ("shuffle-zstd", shuffled.as_slice())] {
            let mut packed = Vec::new();
            let c = measure(3, || packed = zstd::bulk::compress(input, level).unwrap());
            let d = measure(5, || {
                black_box(zstd::bulk::decompress(&packed, input.len()).unwrap());
            });
            out.push_str(&format!(
                "| {label} | {codec} | {level} | {:.3} | {:.0} | {:.0} |\n",
                data.len() as f64 / packed.len() as f64,
                mb_per_s(data.len(), &c),
                mb_per_s(data.len(), &d)
            ));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--make-adapter") {
        let dir = PathBuf::from(&args[i + 1]);
        let mb: usize = args[i + 2].parse().unwrap();
        // 28 layers ≈ 25.8 MB; scale the layer count.
        let layers = (mb * 28).div_ceil(26).max(1);
        let tensors = qwen_adapter(layers, true);
        write_adapter_dir(&dir, &tensors, &qwen_config(true));
        eprintln!("wrote {} tensors to {}", tensors.len(), dir.display());
        return;
    }
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes
    }
    let dir = tempfile::tempdir().unwrap();
    let adapter_dir = dir.path().join("expert-sql-qwen3");
    let tensors = qwen_adapter(28, true);
    write_adapter_dir(&adapter_dir, &tensors, &qwen_config(true));
    let weights = adapter_dir.join("adapter_model.safetensors");
    let contents = ExpertContents::from_adapter_dir(&adapter_dir).unwrap();
    let binary = dir.path().join("expert.expert");
    let zstd_file = dir.path().join("expert-zstd.expert");
    let shuffle_file = dir.path().join("expert-shuffle.expert");
    let pack = |path: &Path, codec| {
        let options = PackageOptions {
            tensor_codec: codec,
            ..Default::default()
        };
        contents
            .write_binary(path, &options, &mut |_, _| {})
            .unwrap()
    };
    pack(&binary, TensorCodec::None);
    pack(&zstd_file, TensorCodec::Zstd);
    pack(&shuffle_file, TensorCodec::ShuffleZstd);
    let files: Vec<LegacyFile> = contents
        .to_files()
        .unwrap()
        .into_iter()
        .map(|(p, d)| LegacyFile::new(p, d))
        .collect();
    let legacy = dir.path().join("expert.tar.gz");
    std::fs::write(&legacy, legacy_bytes(&files).unwrap()).unwrap();
    let size = std::fs::metadata(&binary).unwrap().len() as usize;
    let file_bytes = std::fs::read(&binary).unwrap();

    let mut report = String::new();
    report.push_str(&format!("Machine: {}\n\n", machine()));
    report.push_str(&format!(
        "Synthetic Qwen3-0.6B-shaped DoRA expert: {} tensors, {:.1} MB binary ({} sections), {:.1} MB tar.gz. Hot page cache; median of 20 (min–max).\n\n",
        tensors.len(),
        size as f64 / 1e6,
        ExpertReader::open(&binary).unwrap().sections().len(),
        std::fs::metadata(&legacy).unwrap().len() as f64 / 1e6
    ));

    // 1. validate (structure + root digest) vs the safetensors header parse.
    let validate = measure(20, || {
        black_box(ExpertReader::open(&binary).unwrap());
    });
    let st_header = measure(20, || {
        let file = std::fs::File::open(&weights).unwrap();
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        black_box(SafeTensors::read_metadata(&map).unwrap());
    });
    report.push_str("| measurement | expertui | anchor | ratio |\n|---|---|---|---|\n");
    report.push_str(&format!(
        "| validate (open, structure, root digest) | {} | safetensors header parse {} | {:.2}× |\n",
        fmt(&validate),
        fmt(&st_header),
        validate.median / st_header.median
    ));

    // 1b. The whole `validate` report: the above plus the manifest (schema
    //     and rules), the grammar and manifest ↔ adapter consistency, on the
    //     same expert carrying a published-style manifest (long, `_comment`
    //     keys, a rank that disagrees with the tensors) and SQL grammar.
    let published = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/published/sql");
    let mut with_docs = contents.clone();
    with_docs.manifest = std::fs::read(published.join("manifest.json")).unwrap();
    with_docs.set_file(
        SectionType::Grammar,
        "grammar.gbnf",
        std::fs::read(published.join("grammar.gbnf")).unwrap(),
    );
    let documented = dir.path().join("expert-published.expert");
    with_docs
        .write_binary(&documented, &PackageOptions::default(), &mut |_, _| {})
        .unwrap();
    let options = expertui::validation::ValidateOptions::default();
    let report_warm = measure(20, || {
        let r = expertui::validation::validate_path(&documented, &options).unwrap();
        assert!(r.valid);
        black_box(r);
    });
    report.push_str(&format!(
        "| validate report (structure, root, manifest schema + rules, grammar, consistency; {} findings) | {} | safetensors header parse {} | {:.2}× |\n",
        expertui::validation::validate_path(&documented, &options).unwrap().findings.len(),
        fmt(&report_warm),
        fmt(&st_header),
        report_warm.median / st_header.median
    ));
    // The same in a fresh process each time (`expertui --headless validate
    // --time --json`): the sum of the steps, so first-use costs (the schema
    // parse, the pattern compile) count and process start does not.
    let steps = |_: ()| -> f64 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_expertui"))
            .args(["--headless", "validate", "--time", "--json"])
            .arg(&documented)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["timings_ms"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(serde_json::Value::as_f64)
            .sum()
    };
    let mut cold: Vec<f64> = (0..20).map(|_| steps(())).collect();
    cold.sort_by(f64::total_cmp);
    let cold = Stat {
        median: cold[cold.len() / 2],
        min: cold[0],
        max: cold[cold.len() - 1],
    };
    report.push_str(&format!(
        "| `validate` verb, fresh process (sum of `--time` steps) | {} | safetensors header parse {} | {:.2}× |\n",
        fmt(&cold),
        fmt(&st_header),
        cold.median / st_header.median
    ));

    // 2. --verify-integrity vs one-thread SHA-256 of the whole file.
    let reader = ExpertReader::open(&binary).unwrap();
    let verify = measure(20, || reader.verify_all().unwrap());
    let one_thread = measure(20, || {
        black_box(Sha256::digest(&file_bytes));
    });
    report.push_str(&format!(
        "| verify integrity (rayon, all sections) | {} = {:.0} MB/s | sha2 one thread, whole file {} = {:.0} MB/s | {:.2}× faster |\n",
        fmt(&verify),
        mb_per_s(size, &verify),
        fmt(&one_thread),
        mb_per_s(size, &one_thread),
        one_thread.median / verify.median
    ));
    if let Ok(out) = std::process::Command::new("openssl")
        .arg("version")
        .output()
    {
        let openssl = measure(10, || {
            let ok = std::process::Command::new("openssl")
                .args(["dgst", "-sha256"])
                .arg(&binary)
                .output()
                .unwrap();
            black_box(ok);
        });
        let empty = measure(10, || {
            black_box(
                std::process::Command::new("openssl")
                    .args(["version"])
                    .output()
                    .unwrap(),
            );
        });
        let net = Stat {
            median: (openssl.median - empty.median).max(1e-3),
            min: openssl.min - empty.median,
            max: openssl.max - empty.median,
        };
        report.push_str(&format!(
            "| verify integrity | {} | `openssl dgst -sha256` ({}, process start subtracted) {} = {:.0} MB/s | {:.2}× faster |\n",
            fmt(&verify),
            String::from_utf8_lossy(&out.stdout).trim(),
            fmt(&net),
            mb_per_s(size, &net),
            net.median / verify.median
        ));
    }

    // 3. Open → every tensor view ready.
    let bin = measure(20, || {
        black_box(binary_views(&binary));
    });
    let binary_2_0 = dir.path().join("expert-2.0.expert");
    without_index(&binary, &binary_2_0);
    let bin_2_0 = measure(20, || {
        black_box(binary_views_2_0(&binary_2_0));
    });
    let st = measure(20, || {
        black_box(safetensors_views(&weights));
    });
    let leg = measure(5, || {
        black_box(legacy_views(&legacy));
    });
    report.push_str(&format!(
        "| open → all {} tensor views ready | {} | safetensors crate (mmap + deserialize) {} | {:.2}× |\n",
        tensors.len(),
        fmt(&bin),
        fmt(&st),
        bin.median / st.median
    ));
    report.push_str(&format!(
        "| open → all tensor views ready, 2.0 file (JSON header + module table per section, parallel) | {} | safetensors crate (mmap + deserialize) {} | {:.2}× |\n",
        fmt(&bin_2_0),
        fmt(&st),
        bin_2_0.median / st.median
    ));
    report.push_str(&format!(
        "| open → all tensor views ready | {} | legacy tar.gz (gunzip + untar in memory + deserialize) {} | {:.1}× faster |\n",
        fmt(&bin),
        fmt(&leg),
        leg.median / bin.median
    ));

    // 4. Section read throughput.
    let memcpy = measure(20, || {
        black_box(file_bytes.clone());
    });
    for (label, path) in [
        ("none (zero-copy + checksum pass)", &binary),
        ("zstd", &zstd_file),
        ("shuffle-zstd", &shuffle_file),
    ] {
        let r = ExpertReader::open(path).unwrap();
        let raw: usize = r
            .find_all(SectionType::Tensors)
            .map(|s| s.raw_len as usize)
            .sum();
        let read = measure(10, || {
            let r = ExpertReader::open(path).unwrap(); // fresh reader: empty cache
            let mut sum = 0u64;
            for info in r.find_all(SectionType::Tensors) {
                let bytes = r.section(info.index).unwrap();
                sum = sum.wrapping_add(bytes.iter().step_by(64).map(|&b| b as u64).sum::<u64>());
            }
            black_box(sum);
        });
        let stored = std::fs::metadata(path).unwrap().len();
        report.push_str(&format!(
            "| read all tensor sections, codec {label} ({:.1} MB on disk) | {} = {:.0} MB/s | memcpy of the file {} = {:.0} MB/s | {:.2}× |\n",
            stored as f64 / 1e6,
            fmt(&read),
            mb_per_s(raw, &read),
            fmt(&memcpy),
            mb_per_s(size, &memcpy),
            read.median / memcpy.median
        ));
    }

    // 5. Codec table on the real fixtures (fp32 and bf16) and the synthetic expert.
    report.push_str("\n| data | codec | level | ratio | compress MB/s | decompress MB/s |\n|---|---|---|---|---|---|\n");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm-dora-r8");
    let real = ExpertContents::from_adapter_dir(&fixture).unwrap();
    let adapter = real.adapter.as_ref().unwrap();
    let mut fp32 = Vec::new();
    let mut bf16 = Vec::new();
    for i in 0..adapter.tensors.len() {
        let t = adapter.tensor(i).unwrap();
        fp32.extend_from_slice(&t.data);
        bf16.extend_from_slice(&t.convert(Dtype::BF16).unwrap().data);
    }
    codec_rows("MiniLM DoRA fixture fp32", &fp32, 4, &mut report);
    codec_rows("MiniLM DoRA fixture bf16", &bf16, 2, &mut report);
    let synth: Vec<u8> = tensors
        .iter()
        .take(60)
        .flat_map(|t| t.data.iter().copied())
        .collect();
    codec_rows("synthetic DoRA fp32", &synth, 4, &mut report);
    println!("{report}");
}
