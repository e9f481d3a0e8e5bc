//! The binary tensor index (format 2.1): written for every packaged
//! adapter, in agreement with the per-section headers it summarises; loads
//! through it equal loads through the headers (2.0 files); a hostile index
//! is a typed error or a validation finding, never a panic or a read out of
//! bounds.

use std::path::{Path, PathBuf};

use expertui::format::package::{ExpertContents, PackageOptions, TensorCodec};
use expertui::format::tensor_index::{
    IndexBuilder, IndexHeader, SectionRecord, TensorIndex, TensorRecord, INDEX_SECTION_NAME,
};
use expertui::format::tensors::TensorBlob;
use expertui::format::{ExpertReader, ExpertWriter, SectionSpec, SectionType, WriterOptions};
use expertui::gpu::adapter::{AdapterWeights, LoadOptions};
use expertui::gpu::device_tensors::tensor_to_bytes;
use expertui::validation::{validate_path, ValidateOptions};

const FIXTURES: [&str; 5] = [
    "minilm-lora-r8",
    "minilm-dora-r8",
    "minilm-ia3",
    "minilm-lora-rslora-pattern",
    "minilm-prompt-tuning",
];

fn package(name: &str, dir: &Path) -> PathBuf {
    package_with(name, dir, &PackageOptions::default())
}

fn package_with(name: &str, dir: &Path, options: &PackageOptions) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let out = dir.join(format!("{name}-{:?}.expert", options.tensor_codec));
    ExpertContents::from_adapter_dir(&src)
        .unwrap()
        .write_binary(&out, options, &mut |_, _| {})
        .unwrap();
    out
}

fn index_bytes(reader: &ExpertReader) -> Vec<u8> {
    let info = reader
        .first(SectionType::TensorIndex)
        .expect("a tensor index");
    reader.section(info.index).unwrap().to_vec()
}

/// `path` rewritten without its index, plus `index` when given (the
/// other sections copied byte for byte).
fn rewrite(path: &Path, out: &Path, index: Option<&[u8]>) {
    let reader = ExpertReader::open(path).unwrap();
    let mut writer = ExpertWriter::create(out, WriterOptions::default()).unwrap();
    for s in reader.sections() {
        if s.kind != SectionType::TensorIndex {
            writer.copy_section(&reader, s.index).unwrap();
        }
    }
    if let Some(bytes) = index {
        let spec = SectionSpec::new(SectionType::TensorIndex, INDEX_SECTION_NAME);
        writer.add_section(spec, bytes).unwrap();
    }
    writer.finish().unwrap();
}

fn finding_codes(path: &Path) -> Vec<String> {
    let options = ValidateOptions {
        verify_integrity: true,
        ..ValidateOptions::default()
    };
    let report = validate_path(path, &options).unwrap();
    report.findings.iter().map(|f| f.code.clone()).collect()
}

fn load(path: &Path) -> Result<AdapterWeights, String> {
    AdapterWeights::open(path, &LoadOptions::default()).map_err(|e| e.to_string())
}

#[test]
fn every_fixture_gets_an_index_that_agrees_with_its_sections() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let path = package(name, dir.path());
        let reader = ExpertReader::open(&path).unwrap();
        assert_eq!(reader.header().version_minor.get(), 1, "{name}");
        let bytes = index_bytes(&reader);
        let index = TensorIndex::parse(&bytes).unwrap().expect("version 1");
        let sections = index.sections();
        let tensor_sections = reader
            .sections()
            .iter()
            .filter(|s| matches!(s.kind, SectionType::Tensors | SectionType::SoftPrompt))
            .count();
        assert_eq!(
            sections.len(),
            tensor_sections,
            "{name}: every section indexed"
        );
        let mut tensors = 0;
        for section in &sections {
            let info = reader.find(section.kind, section.name).unwrap();
            let data = reader.section(info.index).unwrap();
            let blob = TensorBlob::parse(&data, &info.name).unwrap();
            let table = blob.table(&info.name).unwrap();
            assert_eq!(
                index.disagreement(section, &data, &blob, &table),
                None,
                "{name} {}",
                info.name
            );
            assert!(!table.modules.is_empty() || section.kind == SectionType::SoftPrompt);
            tensors += blob.tensors.len();
        }
        assert_eq!(index.tensor_count(), tensors, "{name}");
        let codes = finding_codes(&path);
        assert!(
            !codes.iter().any(|c| c.starts_with("tensor-index")),
            "{name}: {codes:?}"
        );
    }
}

#[test]
fn loads_through_the_index_equal_loads_through_the_headers() {
    let dir = tempfile::tempdir().unwrap();
    // Compressed tensor sections too: index ranges are in decoded bytes.
    let codecs = [
        TensorCodec::None,
        TensorCodec::Zstd,
        TensorCodec::ShuffleZstd,
    ];
    for (name, codec) in FIXTURES
        .iter()
        .flat_map(|n| codecs.iter().map(move |c| (*n, *c)))
    {
        let options = PackageOptions {
            tensor_codec: codec,
            ..PackageOptions::default()
        };
        let indexed = package_with(name, dir.path(), &options);
        let plain = dir.path().join(format!("{name}-{codec:?}.2.0.expert"));
        rewrite(&indexed, &plain, None);
        assert!(ExpertReader::open(&plain)
            .unwrap()
            .first(SectionType::TensorIndex)
            .is_none());
        let (a, b) = (load(&indexed).unwrap(), load(&plain).unwrap());
        assert_eq!(a.modules, b.modules, "{name}: modules, in file order");
        assert_eq!(a.tensors.len(), b.tensors.len(), "{name}");
        for (key, tensor) in &a.tensors {
            let other = b.tensors.get(key).expect(key);
            assert_eq!(tensor.dims(), other.dims(), "{name} {key}");
            assert_eq!(
                tensor_to_bytes(tensor).unwrap(),
                tensor_to_bytes(other).unwrap(),
                "{name} {key}"
            );
        }
        assert_eq!(
            a.soft_prompt.is_some(),
            b.soft_prompt.is_some(),
            "{name}: soft prompt"
        );
    }
}

/// Byte offset of the first tensor record's `end` field in an index.
fn first_tensor_end(bytes: &[u8]) -> usize {
    use zerocopy::FromBytes;
    let (header, _) = IndexHeader::ref_from_prefix(bytes).unwrap();
    let sections = header.section_count.get() as usize;
    std::mem::size_of::<IndexHeader>()
        + sections * std::mem::size_of::<SectionRecord>()
        + std::mem::size_of::<TensorRecord>()
        - 8
}

#[test]
fn a_tensor_range_past_its_section_is_an_error_and_a_finding() {
    let dir = tempfile::tempdir().unwrap();
    let path = package("minilm-lora-r8", dir.path());
    let mut bytes = index_bytes(&ExpertReader::open(&path).unwrap());
    let at = first_tensor_end(&bytes);
    bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let bad = dir.path().join("bad.expert");
    rewrite(&path, &bad, Some(&bytes));
    let err = load(&bad).unwrap_err();
    assert!(err.contains("tensor index"), "{err}");
    assert!(err.contains("outside the section"), "{err}");
    let codes = finding_codes(&bad);
    assert!(
        codes.contains(&"tensor-index.disagrees".to_string()),
        "{codes:?}"
    );
}

#[test]
fn a_tensor_moved_inside_its_section_is_a_finding() {
    // In bounds, so a loader cannot tell: validate compares with the header.
    let dir = tempfile::tempdir().unwrap();
    let path = package("minilm-lora-r8", dir.path());
    let mut bytes = index_bytes(&ExpertReader::open(&path).unwrap());
    let at = first_tensor_end(&bytes) - 8; // `start`
    let start = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let end = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
    bytes[at..at + 8].copy_from_slice(&(start - 4).to_le_bytes());
    bytes[at + 8..at + 16].copy_from_slice(&(end - 4).to_le_bytes());
    let bad = dir.path().join("moved.expert");
    rewrite(&path, &bad, Some(&bytes));
    let codes = finding_codes(&bad);
    assert!(
        codes.contains(&"tensor-index.disagrees".to_string()),
        "{codes:?}"
    );
}

#[test]
fn an_index_naming_a_missing_section_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = package("minilm-lora-r8", dir.path());
    let reader = ExpertReader::open(&path).unwrap();
    let layer = reader.find(SectionType::Tensors, "layer.0").unwrap();
    let data = reader.section(layer.index).unwrap();
    let mut builder = IndexBuilder::default();
    builder.add(SectionType::Tensors, "layer.99", &data);
    let index = builder.finish().unwrap();
    let bad = dir.path().join("missing.expert");
    rewrite(&path, &bad, Some(&index));
    let err = load(&bad).unwrap_err();
    assert!(err.contains("layer.99"), "{err}");
    let codes = finding_codes(&bad);
    assert!(
        codes.contains(&"tensor-index.invalid".to_string()),
        "{codes:?}"
    );
    assert!(
        codes.contains(&"tensor-index.incomplete".to_string()),
        "{codes:?}"
    );
}

#[test]
fn random_edits_of_a_real_index_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = package("minilm-dora-r8", dir.path());
    let reader = ExpertReader::open(&path).unwrap();
    let bytes = index_bytes(&reader);
    let layer = reader.find(SectionType::Tensors, "layer.0").unwrap();
    let data = reader.section(layer.index).unwrap();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut parsed, mut refused) = (0, 0);
    for _ in 0..3000 {
        let mut edited = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % edited.len();
            edited[at] = next() as u8;
        }
        if next() % 8 == 0 {
            edited.truncate((next() as usize) % edited.len());
        }
        expertui::fuzzing::tensor_index(&edited);
        match TensorIndex::parse(&edited) {
            Ok(Some(index)) => {
                parsed += 1;
                for section in index.sections() {
                    let _ = index.modules(&section);
                    let _ = index.views(&section, &data);
                }
            }
            _ => refused += 1,
        }
    }
    assert!(
        parsed > 0 && refused > 0,
        "{parsed} parsed, {refused} refused"
    );
}

#[test]
fn a_verified_load_checks_the_index_digest() {
    let dir = tempfile::tempdir().unwrap();
    let path = package("minilm-lora-r8", dir.path());
    let reader = ExpertReader::open(&path).unwrap();
    let info = reader.first(SectionType::TensorIndex).unwrap().clone();
    drop(reader);
    let mut bytes = std::fs::read(&path).unwrap();
    // A byte of the string table (the index's last bytes): still parses.
    let at = (info.offset + info.stored_len - 3) as usize;
    bytes[at] ^= 0x01;
    let bad = dir.path().join("index-flipped.expert");
    std::fs::write(&bad, &bytes).unwrap();
    let err = load(&bad).unwrap_err();
    assert!(err.contains("tensor_index"), "{err}");
}
