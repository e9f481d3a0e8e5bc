//! Library round trips on the real PEFT fixtures: PEFT folder -> `.expert` v2
//! -> PEFT folder byte for byte, every tensor codec and alignment, legacy
//! tar.gz -> v2 -> legacy, dtype conversion, the loader's fallbacks, the
//! per-layer section layout and the base-model check.

use std::path::{Path, PathBuf};

use expertui::format::basecheck::check_against_base;
use expertui::format::layout::{BASE_ALIGNMENT, GPU_ALIGNMENT, TOC_ENTRY_SIZE};
use expertui::format::legacy::{read_legacy, LegacyLimits};
use expertui::format::loader::{ExpertLoader, SourceFormat};
use expertui::format::package::{ExpertContents, PackageOptions, TensorCodec};
use expertui::format::peft::PeftAdapter;
use expertui::format::tensors::{ModuleInfo, OwnedTensor, TensorBlob};
use expertui::format::{Codec, ExpertReader, SectionType, TocEntry};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use zerocopy::FromBytes;

const PEFT_FIXTURES: [&str; 5] = [
    "minilm-lora-r8",
    "minilm-dora-r8",
    "minilm-ia3",
    "minilm-lora-rslora-pattern",
    "minilm-prompt-tuning",
];
const LEGACY_FIXTURE: &str = "minilm-sql-dora.v0.3.0.expert";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn no_progress() -> impl FnMut(u64, u64) {
    |_, _| {}
}

/// Tensors of a safetensors file, sorted by name.
fn tensors_of(bytes: &[u8]) -> Vec<OwnedTensor> {
    let st = SafeTensors::deserialize(bytes).expect("valid safetensors");
    let mut out: Vec<OwnedTensor> = st
        .tensors()
        .iter()
        .map(|(name, view)| OwnedTensor::from_view(name, view))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Every tensor of an adapter with its data, sorted by name.
fn adapter_tensors(adapter: &PeftAdapter) -> Vec<OwnedTensor> {
    let mut out: Vec<OwnedTensor> = (0..adapter.tensors.len())
        .map(|i| adapter.tensor(i).expect("tensor data"))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn sorted_modules(modules: &[ModuleInfo]) -> Vec<ModuleInfo> {
    let mut out = modules.to_vec();
    out.sort_by(|a, b| a.module.cmp(&b.module));
    out
}

/// PEFT folder -> binary (verified) -> contents -> PEFT folder; checks the
/// written folder reproduces the fixture and returns the binary's path.
fn peft_round_trip(name: &str, options: &PackageOptions, work: &Path) -> PathBuf {
    let src = fixture(name);
    let label = format!(
        "{name} {:?} align {}",
        options.tensor_codec, options.alignment
    );
    let contents = ExpertContents::from_adapter_dir(&src).expect(&label);
    let binary = work.join(format!("{name}.expert"));
    contents
        .write_binary(&binary, options, &mut no_progress())
        .expect(&label);

    let reader = ExpertReader::open(&binary).expect(&label);
    reader.verify_all().expect(&label);
    assert_eq!(
        u64::from(reader.header().section_alignment.get()),
        options.alignment,
        "{label}"
    );
    for s in reader.sections() {
        assert_eq!(
            s.offset % options.alignment,
            0,
            "{label}: {} misaligned",
            s.name
        );
    }

    let back = ExpertContents::read_binary(&reader).expect(&label);
    assert_eq!(back.manifest, contents.manifest, "{label}: manifest");
    let out_dir = work.join(format!("{name}-peft"));
    back.write_peft_dir(&out_dir).expect(&label);

    let original_weights = std::fs::read(src.join("adapter_model.safetensors")).unwrap();
    let written_weights = std::fs::read(out_dir.join("adapter_model.safetensors")).unwrap();
    assert_eq!(
        tensors_of(&written_weights),
        tensors_of(&original_weights),
        "{label}: tensors differ"
    );
    assert!(
        written_weights == original_weights,
        "{label}: adapter_model.safetensors is not byte-identical ({} vs {} bytes)",
        written_weights.len(),
        original_weights.len()
    );

    let config = |dir: &Path| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap()).unwrap()
    };
    assert_eq!(
        config(&out_dir),
        config(&src),
        "{label}: adapter_config.json"
    );

    let original = contents.adapter.as_ref().unwrap();
    let restored = back.adapter.as_ref().expect("adapter survives");
    assert_eq!(restored.peft_type, original.peft_type, "{label}");
    assert_eq!(
        restored.source_metadata, original.source_metadata,
        "{label}"
    );
    let a = adapter_tensors(restored);
    let b = adapter_tensors(original);
    assert_eq!(a, tensors_of(&original_weights), "{label}: fixture read");
    assert_eq!(a, b, "{label}: tensors after read_binary");
    assert_eq!(
        sorted_modules(&restored.modules),
        sorted_modules(&original.modules),
        "{label}: module table"
    );
    binary
}

#[test]
fn every_peft_fixture_round_trips_byte_for_byte() {
    let work = tempfile::tempdir().unwrap();
    for name in PEFT_FIXTURES {
        peft_round_trip(name, &PackageOptions::default(), work.path());
    }
}

#[test]
fn every_codec_and_alignment_round_trips() {
    for codec in [
        TensorCodec::None,
        TensorCodec::Zstd,
        TensorCodec::ShuffleZstd,
    ] {
        for alignment in [BASE_ALIGNMENT, GPU_ALIGNMENT] {
            let work = tempfile::tempdir().unwrap();
            let options = PackageOptions {
                tensor_codec: codec,
                alignment,
                ..Default::default()
            };
            for name in PEFT_FIXTURES {
                let binary = peft_round_trip(name, &options, work.path());
                let reader = ExpertReader::open(&binary).unwrap();
                let expected = match codec {
                    TensorCodec::None => Codec::None,
                    TensorCodec::Zstd => Codec::Zstd,
                    TensorCodec::ShuffleZstd => Codec::ShuffleZstd { element_size: 4 },
                };
                let tensor_sections: Vec<_> = reader
                    .sections()
                    .iter()
                    .filter(|s| matches!(s.kind, SectionType::Tensors | SectionType::SoftPrompt))
                    .collect();
                assert!(!tensor_sections.is_empty(), "{name}");
                for s in tensor_sections {
                    assert_eq!(s.codec, Some(expected), "{name} {}", s.name);
                }
            }
        }
    }
}

#[test]
fn legacy_to_binary_to_legacy_keeps_every_file() {
    let work = tempfile::tempdir().unwrap();
    let legacy = work.path().join(LEGACY_FIXTURE);
    std::fs::copy(fixture(LEGACY_FIXTURE), &legacy).unwrap();
    std::fs::copy(
        fixture(&format!("{LEGACY_FIXTURE}.sha256")),
        work.path().join(format!("{LEGACY_FIXTURE}.sha256")),
    )
    .unwrap();

    let loaded = ExpertLoader::open(&legacy).unwrap();
    assert_eq!(loaded.format, SourceFormat::LegacyTarGz);
    assert!(loaded.reader.is_none());
    assert!(
        !loaded.warnings.iter().any(|w| w.contains("sidecar")),
        "the sidecar was present and verified: {:?}",
        loaded.warnings
    );

    let binary = work.path().join("converted.expert");
    loaded
        .contents
        .write_binary(&binary, &PackageOptions::default(), &mut no_progress())
        .unwrap();
    let reopened = ExpertLoader::open(&binary).unwrap();
    assert_eq!(reopened.format, SourceFormat::Binary);
    assert!(reopened.warnings.is_empty(), "{:?}", reopened.warnings);
    reopened.reader.as_ref().unwrap().verify_all().unwrap();
    let files = reopened.contents.to_files().unwrap();

    let original = read_legacy(
        &std::fs::read(fixture(LEGACY_FIXTURE)).unwrap(),
        &LegacyLimits::default(),
    )
    .unwrap();
    assert_eq!(original.files.len(), 6);
    assert_eq!(original.files[0].path, "manifest.json");

    let mut names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let mut want: Vec<&str> = original.files.iter().map(|f| f.path.as_str()).collect();
    names.sort_unstable();
    want.sort_unstable();
    assert_eq!(names, want);
    assert_eq!(files[0].0, "manifest.json", "manifest first");
    for f in &original.files {
        let (_, data) = files.iter().find(|(n, _)| *n == f.path).unwrap();
        assert!(
            *data == f.data,
            "{}: {} bytes after the round trip, {} in the original",
            f.path,
            data.len(),
            f.data.len()
        );
    }
}

fn check_dtype(to: Dtype, round: fn(f32) -> f32) {
    let work = tempfile::tempdir().unwrap();
    let contents = ExpertContents::from_adapter_dir(&fixture("minilm-lora-r8")).unwrap();
    let out = work.path().join("narrow.expert");
    let options = PackageOptions {
        dtype: Some(to),
        ..Default::default()
    };
    contents
        .write_binary(&out, &options, &mut no_progress())
        .unwrap();
    let reader = ExpertReader::open(&out).unwrap();
    reader.verify_all().unwrap();
    let back = ExpertContents::read_binary(&reader).unwrap();
    let original = adapter_tensors(contents.adapter.as_ref().unwrap());
    let restored = adapter_tensors(back.adapter.as_ref().unwrap());
    assert_eq!(restored.len(), original.len());
    for tensor in &original {
        assert_eq!(tensor.dtype, Dtype::F32, "fixture is f32");
        let got = restored.iter().find(|t| t.name == tensor.name).unwrap();
        assert_eq!(got.dtype, to, "{}", tensor.name);
        assert_eq!(got.shape, tensor.shape, "{}", tensor.name);
        let widened = got.to_f32().unwrap();
        let expected: Vec<f32> = tensor.to_f32().unwrap().into_iter().map(round).collect();
        assert_eq!(widened.len(), expected.len());
        for (i, (g, e)) in widened.iter().zip(&expected).enumerate() {
            assert_eq!(g.to_bits(), e.to_bits(), "{}[{i}]", tensor.name);
        }
    }
}

#[test]
fn bf16_packaging_rounds_to_nearest_even() {
    check_dtype(Dtype::BF16, |x| half::bf16::from_f32(x).to_f32());
}

#[test]
fn f16_packaging_rounds_to_nearest_even() {
    check_dtype(Dtype::F16, |x| half::f16::from_f32(x).to_f32());
}

#[test]
fn f32_packaging_is_exact() {
    check_dtype(Dtype::F32, |x| x);
}

#[test]
fn narrowed_file_is_smaller() {
    let work = tempfile::tempdir().unwrap();
    let contents = ExpertContents::from_adapter_dir(&fixture("minilm-lora-r8")).unwrap();
    let size = |dtype| {
        let out = work.path().join(format!("{dtype:?}.expert"));
        let options = PackageOptions {
            dtype,
            ..Default::default()
        };
        contents
            .write_binary(&out, &options, &mut no_progress())
            .unwrap()
            .file_size
    };
    let full = size(None);
    let bf16 = size(Some(Dtype::BF16));
    assert!(bf16 < full * 6 / 10, "bf16 {bf16} bytes vs f32 {full}");
}

#[test]
fn loader_falls_back_to_legacy_beside_a_corrupt_binary() {
    let work = tempfile::tempdir().unwrap();
    let demo =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo.expert")).unwrap();
    let corrupt = work.path().join("x.expert");
    std::fs::write(&corrupt, &demo[..demo.len() - 200]).unwrap();
    assert!(ExpertLoader::open_exact(&corrupt).is_err());
    // Without a package beside it, the error is the binary's own.
    assert!(ExpertLoader::open(&corrupt).is_err());

    std::fs::copy(fixture(LEGACY_FIXTURE), work.path().join("x.expert.tar.gz")).unwrap();
    let loaded = ExpertLoader::open(&corrupt).unwrap();
    assert_eq!(loaded.format, SourceFormat::LegacyTarGz);
    assert!(
        loaded.warnings[0].contains("fell back") && loaded.warnings[0].contains("x.expert.tar.gz"),
        "{:?}",
        loaded.warnings
    );
    let manifest: Value = serde_json::from_slice(&loaded.contents.manifest).unwrap();
    let legacy = read_legacy(
        &std::fs::read(fixture(LEGACY_FIXTURE)).unwrap(),
        &LegacyLimits::default(),
    )
    .unwrap();
    let want: Value = serde_json::from_slice(legacy.manifest_bytes().unwrap()).unwrap();
    assert_eq!(manifest, want);
}

#[test]
fn legacy_opened_directly_is_deprecated() {
    let work = tempfile::tempdir().unwrap();
    let legacy = work.path().join(LEGACY_FIXTURE);
    std::fs::copy(fixture(LEGACY_FIXTURE), &legacy).unwrap();
    let loaded = ExpertLoader::open(&legacy).unwrap();
    assert_eq!(loaded.format, SourceFormat::LegacyTarGz);
    assert!(
        loaded.warnings.iter().any(|w| w.contains("deprecated")),
        "{:?}",
        loaded.warnings
    );
    // No sidecar was copied: the loader says the package is unverified.
    assert!(
        loaded.warnings.iter().any(|w| w.contains("sidecar")),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn legacy_with_wrong_sidecar_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let legacy = work.path().join(LEGACY_FIXTURE);
    std::fs::copy(fixture(LEGACY_FIXTURE), &legacy).unwrap();
    std::fs::write(
        work.path().join(format!("{LEGACY_FIXTURE}.sha256")),
        format!("{}  {LEGACY_FIXTURE}\n", "0".repeat(64)),
    )
    .unwrap();
    assert!(ExpertLoader::open(&legacy).is_err());
}

#[test]
fn neither_binary_nor_legacy_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("notes.expert");
    std::fs::write(&path, b"just some text, not an expert\n").unwrap();
    let err = match ExpertLoader::open(&path) {
        Ok(_) => panic!("a text file opened as an expert"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("neither"), "{err}");
    let missing = work.path().join("missing.expert");
    assert!(ExpertLoader::open(&missing).is_err());
}

#[test]
fn lora_has_one_tensor_section_per_layer() {
    let work = tempfile::tempdir().unwrap();
    let contents = ExpertContents::from_adapter_dir(&fixture("minilm-lora-r8")).unwrap();
    let out = work.path().join("lora.expert");
    contents
        .write_binary(&out, &PackageOptions::default(), &mut no_progress())
        .unwrap();
    let reader = ExpertReader::open(&out).unwrap();
    let tensors: Vec<_> = reader.find_all(SectionType::Tensors).collect();
    assert_eq!(tensors.len(), 6);

    let entry_size = reader.header().toc_entry_size.get() as usize;
    assert!(entry_size >= TOC_ENTRY_SIZE);
    let toc = reader.toc_bytes();
    let mut modules_seen = 0;
    for (layer, info) in tensors.iter().enumerate() {
        assert_eq!(info.name, format!("layer.{layer}"));
        assert_eq!(info.layer, Some(layer as u32));
        let raw = &toc[info.index * entry_size..info.index * entry_size + TOC_ENTRY_SIZE];
        let entry = TocEntry::read_from_bytes(raw).unwrap();
        assert_eq!(entry.layer.get(), layer as u32, "TOC layer field");
        assert_eq!(entry.name_str(), Some(info.name.as_str()));

        let bytes = reader.section(info.index).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert!(st.len() >= 4, "A and B of query and value");
        for name in st.names() {
            assert!(
                name.contains(&format!(".layer.{layer}.")),
                "{name} in section layer.{layer}"
            );
        }
        let blob = TensorBlob::parse(&bytes, &info.name).unwrap();
        let modules = blob.modules(&info.name).unwrap();
        assert_eq!(modules.len(), 2, "query and value of layer {layer}");
        for m in &modules {
            assert_eq!(m.layer, Some(layer as u32));
            assert_eq!(m.scale, Some(2.0), "{}", m.module);
            assert_eq!(m.rank, Some(8));
            for tensor in m.tensors.values() {
                assert!(st.tensor(tensor).is_ok(), "{tensor} listed but absent");
            }
        }
        modules_seen += modules.len();
    }
    assert_eq!(modules_seen, 12);
    // Non-tensor sections carry no layer.
    for s in reader.sections() {
        if s.kind != SectionType::Tensors {
            assert_eq!(s.layer, None, "{}", s.name);
        }
    }
}

#[test]
fn the_adapter_fits_the_minilm_base_config() {
    let contents = ExpertContents::from_adapter_dir(&fixture("minilm-lora-r8")).unwrap();
    let problems = check_against_base(&contents, &fixture("minilm-base-config.json")).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn a_wrong_hidden_size_is_reported_per_module() {
    let work = tempfile::tempdir().unwrap();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(fixture("minilm-base-config.json")).unwrap())
            .unwrap();
    config["hidden_size"] = 512.into();
    let fake = work.path().join("config.json");
    std::fs::write(&fake, serde_json::to_vec(&config).unwrap()).unwrap();

    let contents = ExpertContents::from_adapter_dir(&fixture("minilm-lora-r8")).unwrap();
    let problems = check_against_base(&contents, &fake).unwrap();
    assert!(!problems.is_empty());
    let adapter = contents.adapter.as_ref().unwrap();
    for m in &adapter.modules {
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("{}:", m.module))),
            "{} not named in {problems:?}",
            m.module
        );
    }
    assert!(problems.iter().all(|p| p.contains("384")), "{problems:?}");
}

#[test]
fn fixtures_parse_as_peft() {
    // Sanity: the fixtures the other tests rely on are what they claim.
    for name in PEFT_FIXTURES {
        let adapter = PeftAdapter::read_dir(&fixture(name)).expect(name);
        assert!(!adapter.tensors.is_empty(), "{name}");
    }
}

/// Packaging the same inputs twice must give the same bytes (reproducible
/// builds, stable root digests).
#[test]
fn packaging_is_deterministic() {
    let work = tempfile::tempdir().unwrap();
    let contents = ExpertContents::from_adapter_dir(&fixture("minilm-lora-r8")).unwrap();
    let a = work.path().join("a.expert");
    let b = work.path().join("b.expert");
    for out in [&a, &b] {
        contents
            .write_binary(out, &PackageOptions::default(), &mut no_progress())
            .unwrap();
    }
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
}

/// A binary whose tensor section is damaged (root digest intact) must not
/// load as if it were sound: the section digests say it is not.
#[test]
fn loader_refuses_a_damaged_section() {
    let work = tempfile::tempdir().unwrap();
    let mut demo =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo.expert")).unwrap();
    let reader = ExpertReader::from_vec(demo.clone(), Default::default()).unwrap();
    let layer0 = reader
        .find(SectionType::Tensors, "layer.0")
        .unwrap()
        .clone();
    demo[(layer0.end() - 16) as usize] ^= 0xff;
    let path = work.path().join("damaged.expert");
    std::fs::write(&path, &demo).unwrap();
    assert!(ExpertLoader::open(&path).is_err());
}

/// Older packages nest files under `<model>/checkpoint-N/`, sometimes with
/// the manifest at the root: every file is found by its base name.
#[test]
fn nested_legacy_package_loads_its_adapter() {
    use expertui::format::legacy::{write_legacy, LegacyFile};
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(fixture("minilm-sql-dora.v0.3.0.expert")).unwrap();
    let flat = read_legacy(&original, &LegacyLimits::default()).unwrap();
    let nested: Vec<LegacyFile> = flat
        .files
        .iter()
        .map(|f| {
            let path = if f.path == "manifest.json" {
                f.path.clone()
            } else {
                format!("minilm/checkpoint-100/{}", f.path)
            };
            LegacyFile::new(path, f.data.clone())
        })
        .collect();
    let path = dir.path().join("nested.expert");
    write_legacy(&nested, &path).unwrap();
    let loaded = ExpertLoader::open(&path).unwrap();
    let weights = loaded.contents.adapter_weights().unwrap().unwrap();
    assert_eq!(weights, flat.get("adapter_model.safetensors").unwrap().data);
    let names: Vec<String> = loaded
        .contents
        .to_files()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut expected: Vec<String> = flat.files.iter().map(|f| f.path.clone()).collect();
    let mut got = names.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
}
