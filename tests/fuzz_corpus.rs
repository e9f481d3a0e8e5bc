//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) and the minimised
//! reproducers of past findings (`tests/fixtures/fuzz-regressions/<target>/`)
//! through the same harness functions the fuzzer runs
//! (`expertui::fuzzing`), on stable Rust. A panic or a failed round-trip
//! assert in any of them fails the test.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus` rewrites
//! the seed inputs (cut from the real fixtures) into `fuzz/seeds/`; see
//! docs/RELIABILITY.md for how they were minimised into `fuzz/corpus/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use expertui::format::legacy::legacy_bytes;
use expertui::format::legacy::LegacyFile;
use expertui::format::package::{ExpertContents, PackageOptions};
use expertui::format::signing::cert::{chain_to_text, encode_chain};
use expertui::format::signing::{
    sign_file, Certificate, KdfParams, KeyUsage, RevocationList, SecretKey, SignOptions,
};
use expertui::format::tensors::{encode_tensor_blob, OwnedTensor, TensorBlob};
use expertui::format::{
    Codec, ExpertReader, ExpertWriter, SectionSpec, SectionType, WriterOptions,
};
use expertui::fuzzing;
use expertui::osd::section::{encode_layer, OsdEntry};
use expertui::osd::{dense_svd, Csr, Matrix, OsdModule, Selector, ValueDtype};

type Harness = fn(&[u8]);

/// Every fuzz target and its harness.
const TARGETS: &[(&str, Harness)] = &[
    ("container", fuzzing::container),
    ("inspect_file", fuzzing::inspect_file),
    ("tensor_section", fuzzing::tensor_section),
    ("tensor_index", fuzzing::tensor_index),
    ("osd_section", fuzzing::osd_section),
    ("osd_module", fuzzing::osd_module),
    ("csr", fuzzing::csr),
    ("manifest", fuzzing::manifest),
    ("grammar", fuzzing::grammar),
    ("certificates", fuzzing::certificates),
    ("signature", fuzzing::signature),
    ("revocation", fuzzing::revocation),
    ("armored_text", fuzzing::armored_text),
    ("legacy", fuzzing::legacy),
    ("peft", fuzzing::peft),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn replay(target: &str, harness: Harness, files: &[PathBuf]) {
    for path in files {
        let data = std::fs::read(path).unwrap();
        let result = std::panic::catch_unwind(|| harness(&data));
        assert!(
            result.is_ok(),
            "{target}: {} panics (replay with `cargo +nightly fuzz run {target} {}` from fuzz/)",
            path.display(),
            path.display()
        );
    }
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    for (target, _) in TARGETS {
        let file = root()
            .join("fuzz/fuzz_targets")
            .join(format!("{target}.rs"));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains(&format!("expertui::fuzzing::{target}(")),
            "{} does not call its harness",
            file.display()
        );
    }
}

#[test]
fn corpus_replays_without_panic() {
    for (target, harness) in TARGETS {
        let files = files_in(&root().join("fuzz/corpus").join(target));
        assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
        replay(target, *harness, &files);
    }
}

#[test]
fn regressions_replay_without_panic() {
    let dir = root().join("tests/fixtures/fuzz-regressions");
    let mut replayed = 0;
    for (target, harness) in TARGETS {
        let files = files_in(&dir.join(target));
        replayed += files.len();
        replay(target, *harness, &files);
    }
    // Every folder there must belong to a known target (no silent skips).
    for sub in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if !sub.path().is_dir() {
            continue;
        }
        let name = sub.file_name().to_string_lossy().into_owned();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "tests/fixtures/fuzz-regressions/{name} is not a fuzz target"
        );
    }
    let _ = replayed;
}

// ---------------------------------------------------------------------------
// Seed corpus: cut from the real fixtures (run on demand, see module doc).

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed(&[n; 32]).unwrap()
}

fn small_expert(path: &Path, osd: &[u8]) {
    let mut w = ExpertWriter::create(path, WriterOptions::default()).unwrap();
    let manifest = std::fs::read(root().join("assets/demo-src/manifest.json")).unwrap();
    w.add_section(
        SectionSpec::new(SectionType::Manifest, "manifest.json").codec(Codec::Zstd),
        &manifest,
    )
    .unwrap();
    let grammar = std::fs::read(root().join("assets/demo-src/grammar.gbnf")).unwrap();
    w.add_section(
        SectionSpec::new(SectionType::Grammar, "grammar.gbnf"),
        &grammar,
    )
    .unwrap();
    let tensors = vec![OwnedTensor {
        name: "t".into(),
        dtype: safetensors::Dtype::F32,
        shape: vec![2, 3],
        data: (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect(),
    }];
    let blob = encode_tensor_blob(&tensors, HashMap::new()).unwrap();
    w.add_section(
        SectionSpec::new(SectionType::Tensors, "layer.0")
            .layer(0)
            .align_256(true)
            .codec(Codec::ShuffleZstd { element_size: 4 }),
        &blob.repeat(1),
    )
    .unwrap();
    w.add_section(
        SectionSpec::new(SectionType::Osd, "osd.layer.0").layer(0),
        osd,
    )
    .unwrap();
    w.add_section(
        SectionSpec::new(SectionType::Custom(0x8001), "extra").critical(true),
        b"custom bytes",
    )
    .unwrap();
    w.finish().unwrap();
}

fn osd_entry() -> OsdEntry {
    let m = Matrix::from_fn(6, 5, |i, j| ((i * 5 + j) as f32 * 0.37).sin());
    let svd = dense_svd(&m, 4).unwrap();
    let osd =
        OsdModule::sparsified(&svd, 2, 3, 200, ValueDtype::F32, None, Selector::Damage).unwrap();
    OsdEntry {
        module: "encoder.layer.0.attention.self.query".into(),
        base_tensor: "encoder.layer.0.attention.self.query.weight".into(),
        fan_in_fan_out: false,
        osd,
    }
}

fn sections(path: &Path) -> Vec<(SectionType, String, Vec<u8>)> {
    let reader = ExpertReader::open(path).unwrap();
    reader
        .sections()
        .iter()
        .map(|s| {
            (
                s.kind,
                s.name.clone(),
                reader.section(s.index).unwrap().to_vec(),
            )
        })
        .collect()
}

#[test]
#[ignore = "writes fuzz/seeds/; run on demand"]
fn write_seed_corpus() {
    let out = root().join("fuzz/seeds");
    let tmp = tempfile::tempdir().unwrap();
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let fixture = |p: &str| std::fs::read(root().join(p)).unwrap();

    // OSD pieces.
    let entry = osd_entry();
    let module = entry.osd.to_bytes().unwrap();
    let layer = encode_layer(&[entry.clone(), entry.clone()]).unwrap();
    seeds.push(("osd_module", "published".into(), module.clone()));
    seeds.push(("osd_section", "layer".into(), layer.clone()));
    let csr = Csr::from_dense(&Matrix::from_fn(4, 7, |i, j| {
        if (i + j) % 3 == 0 {
            1.5
        } else {
            0.0
        }
    }))
    .unwrap();
    seeds.push(("csr", "plain".into(), csr.to_bytes(false).unwrap()));
    seeds.push(("csr", "zstd".into(), csr.to_bytes(true).unwrap()));
    seeds.push(("csr", "u".into(), entry.osd.u().to_bytes(false).unwrap()));

    // Keys, certificates, revocation lists.
    let (root_key, publisher) = (key(1), key(2));
    let cert = Certificate::issue(
        &root_key,
        publisher.public(),
        "ACME models",
        KeyUsage::SIGN_EXPERTS,
        7,
        1_600_000_000,
        1_900_000_000,
    )
    .unwrap();
    let chain = vec![cert.clone()];
    seeds.push(("certificates", "one".into(), cert.to_bytes()));
    seeds.push((
        "certificates",
        "chain".into(),
        encode_chain(&chain).unwrap(),
    ));
    let list =
        RevocationList::create(&root_key, [publisher.key_id()], [7, 99], 1_700_000_000).unwrap();
    seeds.push(("revocation", "list".into(), list.to_bytes()));
    seeds.push((
        "armored_text",
        "pub".into(),
        publisher.public().to_text().into_bytes(),
    ));
    seeds.push((
        "armored_text",
        "secret".into(),
        publisher
            .to_text(None, KdfParams::default())
            .unwrap()
            .into_bytes(),
    ));
    seeds.push((
        "armored_text",
        "cert".into(),
        chain_to_text(&chain).into_bytes(),
    ));
    seeds.push((
        "armored_text",
        "revocation".into(),
        list.to_text().into_bytes(),
    ));

    // A small synthetic expert, then signed with the chain.
    let small = tmp.path().join("small.expert");
    small_expert(&small, &layer);
    seeds.push(("container", "small".into(), std::fs::read(&small).unwrap()));
    let signed = tmp.path().join("signed.expert");
    let options = SignOptions {
        chain: chain.clone(),
        comment: "release 1".into(),
        ..Default::default()
    };
    sign_file(&small, &signed, &publisher, &options).unwrap();
    let signed_bytes = std::fs::read(&signed).unwrap();
    seeds.push(("container", "signed".into(), signed_bytes.clone()));
    seeds.push(("inspect_file", "signed".into(), signed_bytes));
    for (kind, name, bytes) in sections(&signed) {
        let target = match kind {
            SectionType::Manifest => "manifest",
            SectionType::Grammar => "grammar",
            SectionType::Signature => "signature",
            SectionType::Certificate => "certificates",
            SectionType::Tensors => "tensor_section",
            _ => continue,
        };
        seeds.push((target, format!("small-{name}"), bytes));
    }

    // The IA³ fixture packaged (small enough to fuzz whole), as v2 and as a
    // legacy package.
    let ia3 = ExpertContents::from_adapter_dir(&root().join("tests/fixtures/minilm-ia3")).unwrap();
    let ia3_path = tmp.path().join("ia3.expert");
    ia3.write_binary(&ia3_path, &PackageOptions::default(), &mut |_, _| {})
        .unwrap();
    seeds.push(("container", "ia3".into(), std::fs::read(&ia3_path).unwrap()));
    for (kind, name, bytes) in sections(&ia3_path) {
        let target = match kind {
            SectionType::Manifest => "manifest",
            SectionType::Tensors if bytes.len() < 16 << 10 => "tensor_section",
            _ => continue,
        };
        seeds.push((target, format!("ia3-{name}"), bytes));
    }
    let files: Vec<LegacyFile> = ia3
        .to_files()
        .unwrap()
        .into_iter()
        .map(|(p, d)| LegacyFile::new(p, d))
        .collect();
    let tarball = legacy_bytes(&files).unwrap();
    seeds.push(("legacy", "ia3".into(), tarball.clone()));
    seeds.push(("inspect_file", "legacy-ia3".into(), tarball));
    let tiny: Vec<LegacyFile> = vec![
        LegacyFile::new("manifest.json", fixture("assets/demo-src/manifest.json")),
        LegacyFile::new("grammar.gbnf", fixture("assets/demo-src/grammar.gbnf")),
        LegacyFile::new("README.md", fixture("assets/demo-src/README.md")),
    ];
    seeds.push(("legacy", "tiny".into(), legacy_bytes(&tiny).unwrap()));

    // Manifests, grammars and configs from the fixtures.
    seeds.push((
        "manifest",
        "demo".into(),
        fixture("assets/demo-src/manifest.json"),
    ));
    seeds.push((
        "grammar",
        "demo".into(),
        fixture("assets/demo-src/grammar.gbnf"),
    ));

    // PEFT: u32 LE config length, config, safetensors.
    let peft_seed = |config: &[u8], model: &[u8]| {
        let mut out = (config.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(config);
        out.extend_from_slice(model);
        out
    };
    for dir in ["minilm-ia3", "minilm-prompt-tuning"] {
        let d = root().join("tests/fixtures").join(dir);
        let config = std::fs::read(d.join("adapter_config.json")).unwrap();
        let model = std::fs::read(d.join("adapter_model.safetensors")).unwrap();
        seeds.push(("peft", dir.into(), peft_seed(&config, &model)));
    }
    // LoRA, DoRA, rsLoRA: the config with one module's tensors cut out.
    for dir in [
        "minilm-lora-r8",
        "minilm-dora-r8",
        "minilm-lora-rslora-pattern",
    ] {
        let d = root().join("tests/fixtures").join(dir);
        let config = std::fs::read(d.join("adapter_config.json")).unwrap();
        let model = std::fs::read(d.join("adapter_model.safetensors")).unwrap();
        let blob = TensorBlob::parse(&model, dir).unwrap();
        let picked: Vec<OwnedTensor> = blob
            .tensors
            .iter()
            .filter(|(n, _)| n.contains("layer.0.attention.self.query"))
            .map(|(n, v)| OwnedTensor::from_view(n, v))
            .collect();
        assert!(!picked.is_empty(), "{dir}");
        let cut = encode_tensor_blob(&picked, blob.metadata.clone()).unwrap();
        seeds.push(("peft", dir.into(), peft_seed(&config, &cut)));
        seeds.push(("tensor_section", dir.into(), cut));
    }

    let _ = std::fs::remove_dir_all(&out);
    for (target, name, bytes) in seeds {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
