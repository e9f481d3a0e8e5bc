//! Fuzz harnesses: one function per parser that reads untrusted bytes.
//!
//! Each function feeds the bytes to the real public entry point and, when
//! parsing succeeds, exercises what came out (every section read, every
//! table decoded, values re-serialised where a writer exists). Round-trip
//! properties are checked with `assert!`: a failed assert is a finding, as
//! is a panic, a hang or an allocation out of proportion to the input.
//!
//! The `fuzz/` crate (cargo-fuzz, nightly) wraps each function in a
//! `fuzz_target!`; `tests/fuzz_corpus.rs` replays the committed corpora and
//! regression inputs through the same functions on stable Rust. Not part of
//! the supported API.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::format::grammar::parse_gbnf;
use crate::format::inspect::{region_at, Decoded, Inspected, TensorSummary};
use crate::format::legacy::{legacy_bytes, read_legacy, LegacyLimits};
use crate::format::loader::detect;
use crate::format::manifest::{
    check_rules, parse_value_strict, validate_manifest_bytes, validate_schema, Manifest,
};
use crate::format::package::ExpertContents;
use crate::format::peft::PeftAdapter;
use crate::format::signing::cert::{
    chain_from_text, check_chain, encode_chain, parse_chain, Certificate, KeyUsage,
};
use crate::format::signing::digest::signing_digest;
use crate::format::signing::keys::{PublicKey, SecretKey};
use crate::format::signing::policy::{check, inspect, Policy};
use crate::format::signing::revocation::RevocationList;
use crate::format::signing::signature::{read_chain, read_signature, SignatureBlock};
use crate::format::signing::KeyId;
use crate::format::structure::parse_structure;
use crate::format::tensor_index::TensorIndex;
use crate::format::tensors::{encode_tensor_blob, OwnedTensor, TensorBlob};
use crate::format::{ExpertReader, FileBytes, ReaderLimits, ReaderOptions, SectionType};
use crate::osd::section::{decode_layer, encode_layer};
use crate::osd::{Csr, OsdModule};

/// Largest decoded section the container harness asks for: a lying
/// `raw_len` or a zstd bomb must fail at this bound, not allocate more.
pub const MAX_SECTION_BYTES: u64 = 1 << 20;
/// Largest dense matrix (elements) the OSD harnesses reconstruct.
const MAX_DENSE: usize = 1 << 16;
/// Legacy package limits used while fuzzing (small, so bombs fail fast).
pub const LEGACY_LIMITS: LegacyLimits = LegacyLimits {
    max_total_bytes: 4 << 20,
    max_file_bytes: 2 << 20,
    max_entries: 512,
};

fn fuzz_options() -> ReaderOptions {
    ReaderOptions {
        check_root: false,
        limits: ReaderLimits {
            max_section_bytes: MAX_SECTION_BYTES,
            cache_bytes: 1 << 20,
            ..ReaderLimits::default()
        },
    }
}

/// The `.expert` v2 container: structure, root, integrity, every section
/// decoded (bounded), signature and chain, reassembly of the contents.
pub fn container(data: &[u8]) {
    let structure = parse_structure(data);
    let reader = match ExpertReader::from_vec(data.to_vec(), fuzz_options()) {
        Ok(reader) => reader,
        Err(_) => {
            assert!(
                structure.is_err(),
                "reader refused what parse_structure accepted"
            );
            return;
        }
    };
    assert!(structure.is_ok());
    let size = reader.file_size();
    let root_ok = reader.check_root().is_ok();
    let _ = reader.computed_root();
    let _ = reader.header_bytes();
    let _ = reader.toc_bytes();
    let checks = reader.verify();
    assert_eq!(checks.len(), reader.sections().len());
    let all_ok = reader.verify_all().is_ok();
    if all_ok {
        assert!(root_ok && checks.iter().all(|c| c.ok()));
    }
    for (i, s) in reader.sections().iter().enumerate() {
        assert_eq!(s.index, i);
        assert!(
            s.offset <= s.end() && s.end() <= size,
            "section outside the file"
        );
        let stored = reader.stored(i);
        assert!(stored.is_ok(), "stored bytes of a checked section");
        let digest_ok = reader.check_section(i).is_ok();
        if all_ok {
            assert!(digest_ok);
        }
        let found = reader
            .find(s.kind, &s.name)
            .map(|f| (f.kind, f.name.clone()));
        assert_eq!(found, Some((s.kind, s.name.clone())));
        if let Ok(bytes) = reader.section(i) {
            assert_eq!(bytes.len() as u64, s.raw_len, "decoded length");
            decode_section(s.kind, &s.name, &bytes);
            // A second read comes from the cache (or the map): same bytes.
            if let Ok(again) = reader.section(i) {
                assert_eq!(&*again, &*bytes);
            }
        }
    }
    assert!(reader.stored(reader.sections().len()).is_err());
    let _ = signing_digest(&reader);
    if let Ok(Some((_, block))) = read_signature(&reader) {
        let _ = read_chain(&reader, &block);
    }
    let report = inspect(&reader);
    let _ = report.summary();
    let _ = report.to_json();
    let _ = check(&reader, &Policy::new());
    let _ = ExpertContents::read_binary(&reader);
}

/// What the TUI's decoder and the readers of OSD sections do with one
/// section's decoded bytes.
fn decode_section(kind: SectionType, name: &str, bytes: &[u8]) {
    let _ = crate::format::inspect::decode_bytes(kind, name, bytes);
    match kind {
        SectionType::Osd => osd_section(bytes),
        SectionType::Signature => signature(bytes),
        SectionType::Certificate => certificates(bytes),
        SectionType::Manifest => manifest(bytes),
        _ => {}
    }
}

/// The viewer's path: a file opened as far as it parses, list rows, byte
/// regions for the overlay, every row decoded for display.
pub fn inspect_file(data: &[u8]) {
    let inspected = Inspected::from_bytes("fuzz".into(), Arc::new(FileBytes::Owned(data.to_vec())));
    let rows = inspected.rows();
    let regions = inspected.regions();
    for pair in regions.windows(2) {
        assert!(pair[0].start <= pair[1].start, "regions out of order");
    }
    for r in &regions {
        assert!(r.start <= r.end, "region ends before it starts");
        assert!(region_at(&regions, r.start).is_some() || r.start == r.end);
    }
    let _ = region_at(&regions, inspected.len());
    // The validation report over whatever parsed: never a panic.
    if let Some(reader) = inspected.reader() {
        let options = crate::validation::ValidateOptions {
            list_sections: true,
            dump_metadata: true,
            ..Default::default()
        };
        if let Ok(report) = crate::validation::validate_reader(reader, "fuzz".into(), &options) {
            assert_eq!(
                report.valid,
                report.counts.errors == 0,
                "validity is the error count"
            );
        }
    }
    for i in 0..rows.len() {
        if let Ok(Decoded::Tensors { tensors, .. }) = inspected.decode(i) {
            for t in tensors {
                let counted: usize = t.histogram.iter().map(|&c| c as usize).sum();
                assert!(
                    counted <= t.shape.iter().product::<usize>(),
                    "histogram counts"
                );
            }
        }
    }
    assert!(inspected.decode(rows.len()).is_err());
}

/// A tensor section (safetensors blob + module table): every tensor viewed,
/// converted and summarised, the blob re-encoded and parsed back.
pub fn tensor_section(data: &[u8]) {
    // The same bytes as a NumPy array (router embeddings): a tensor whose
    // data is exactly its shape, or an error.
    if let Ok(t) = crate::format::npy::read_npy(data, "fuzz") {
        let want = t.shape.iter().product::<usize>() * t.dtype.bitsize().div_ceil(8);
        assert_eq!(t.data.len(), want, "npy data length");
    }
    let _ = crate::validation::manifest::check_router_embeddings(data, "fuzz");
    let Ok(blob) = TensorBlob::parse(data, "fuzz") else {
        return;
    };
    if let Ok(table) = blob.table("fuzz") {
        let again = serde_json::to_string(&table).ok();
        if let Some(json) = again {
            let back: Result<crate::format::tensors::SectionTable, _> = serde_json::from_str(&json);
            assert!(back.is_ok(), "module table does not read back");
        }
    }
    let _ = blob.modules("fuzz");
    let owned: Vec<OwnedTensor> = blob
        .tensors
        .iter()
        .map(|(n, v)| OwnedTensor::from_view(n, v))
        .collect();
    for t in &owned {
        assert_eq!(t.meta().byte_len(), t.data.len() as u64);
        let _ = TensorSummary::of(t);
        for to in [
            safetensors::Dtype::F32,
            safetensors::Dtype::F16,
            safetensors::Dtype::BF16,
        ] {
            if let Ok(c) = t.convert(to) {
                assert_eq!(c.numel(), t.numel());
                assert!(c.view().is_ok());
            }
        }
    }
    let metadata = blob.metadata.clone().into_iter().collect();
    if let Ok(bytes) = encode_tensor_blob(&owned, metadata) {
        let back = TensorBlob::parse(&bytes, "fuzz re-encoded");
        let back = match back {
            Ok(back) => back,
            Err(e) => panic!("re-encoded blob does not parse: {e}"),
        };
        let key = |ts: &[(String, safetensors::tensor::TensorView<'_>)]| {
            ts.iter()
                .map(|(n, v)| {
                    (
                        n.clone(),
                        (v.dtype(), v.shape().to_vec(), v.data().to_vec()),
                    )
                })
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(key(&blob.tensors), key(&back.tensors));
        assert_eq!(blob.metadata, back.metadata);
    }
}

/// One tensor index section (format 2.1), with views over its own bytes:
/// every record is bounds-checked, so nothing here may panic.
pub fn tensor_index(data: &[u8]) {
    let Ok(Some(index)) = TensorIndex::parse(data) else {
        return;
    };
    for section in index.sections() {
        let modules = index.modules(&section);
        assert!(modules.len() <= index.tensor_count().max(data.len()));
        if let Ok(views) = index.views(&section, data) {
            for (name, view) in views {
                assert!(view.data().len() <= data.len());
                assert!(name.len() <= data.len());
            }
        }
    }
}

/// One OSD section payload (a layer of compressed modules).
pub fn osd_section(data: &[u8]) {
    let Ok(entries) = decode_layer(data) else {
        return;
    };
    for e in &entries {
        exercise_module(&e.osd);
    }
    if let Ok(bytes) = encode_layer(&entries) {
        match decode_layer(&bytes) {
            Ok(back) => assert_eq!(back, entries, "OSD layer round trip"),
            Err(e) => panic!("re-encoded OSD layer does not parse: {e}"),
        }
    }
}

/// One OSD module payload.
pub fn osd_module(data: &[u8]) {
    let Ok(module) = OsdModule::from_bytes(data) else {
        return;
    };
    exercise_module(&module);
    match module.to_bytes().map(|b| OsdModule::from_bytes(&b)) {
        Ok(Ok(back)) => assert_eq!(back, module, "OSD module round trip"),
        Ok(Err(e)) => panic!("re-encoded OSD module does not parse: {e}"),
        Err(_) => {}
    }
}

fn exercise_module(m: &OsdModule) {
    let _ = (m.method(), m.rank(), m.relaxed_rank(), m.budget_bytes());
    let _ = m.storage_bits();
    for csr in [Some(m.u()), Some(m.vt()), m.residual()]
        .into_iter()
        .flatten()
    {
        exercise_csr(csr);
    }
    if m.n().checked_mul(m.d()).is_some_and(|e| e <= MAX_DENSE) {
        let dense = m.reconstruct();
        assert_eq!((dense.rows, dense.cols), (m.n(), m.d()));
        let mut base = dense.clone();
        let _ = m.fuse_into(&mut base);
    }
}

fn exercise_csr(csr: &Csr) {
    assert!(csr.nnz() <= csr.rows().saturating_mul(csr.cols()));
    for i in 0..csr.rows().min(64) {
        let (idx, values) = csr.row(i);
        assert_eq!(idx.len(), values.len());
    }
    if csr
        .rows()
        .checked_mul(csr.cols())
        .is_some_and(|e| e <= MAX_DENSE)
    {
        let dense = csr.to_dense();
        assert_eq!(dense.data.len(), csr.rows() * csr.cols());
    }
}

/// One CSR matrix payload.
pub fn csr(data: &[u8]) {
    let Ok(m) = Csr::from_bytes(data) else {
        return;
    };
    exercise_csr(&m);
    for compress in [false, true] {
        match m.to_bytes(compress).map(|b| Csr::from_bytes(&b)) {
            Ok(Ok(back)) => assert_eq!(back, m, "CSR round trip"),
            Ok(Err(e)) => panic!("re-encoded CSR does not parse: {e}"),
            Err(_) => {}
        }
    }
}

/// `manifest.json`: strict parse, schema, rules, typed model, pretty print.
pub fn manifest(data: &[u8]) {
    if let Ok(value) = parse_value_strict(data) {
        let _ = validate_schema(&value);
    }
    let _ = validate_manifest_bytes(data);
    let Ok(m) = Manifest::from_json(data) else {
        return;
    };
    let _ = check_rules(&m);
    let _ = (
        m.schema(),
        m.base_model_names(),
        m.adapters(),
        m.routing_keywords(),
    );
    for a in m.adapters() {
        let _ = (a.kind(), a.target_modules(), a.alpha_f64(), a.dropout_f64());
    }
    let pretty = m.to_json_pretty();
    let back = match Manifest::from_json(&pretty) {
        Ok(back) => back,
        Err(e) => panic!("pretty-printed manifest does not parse: {e}"),
    };
    assert_eq!(
        back.to_json_pretty(),
        pretty,
        "manifest print is not stable"
    );
}

/// A GBNF grammar (as the decoder and `package` read it).
pub fn grammar(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(g) = parse_gbnf(&text) {
        for r in &g.rules {
            assert!(g.rule(&r.name).is_some());
            assert!(r.line >= 1);
        }
    }
    let _ = crate::validation::manifest::check_grammar(data, "grammar.gbnf");
}

/// A `certificates` section payload, one certificate, and the text form.
pub fn certificates(data: &[u8]) {
    if let Ok(chain) = parse_chain(data) {
        exercise_chain(&chain);
        match encode_chain(&chain).map(|b| parse_chain(&b)) {
            Ok(Ok(back)) => assert_eq!(back, chain, "certificate chain round trip"),
            Ok(Err(e)) => panic!("re-encoded chain does not parse: {e}"),
            Err(_) => {}
        }
    }
    if let Ok(cert) = Certificate::parse(data) {
        exercise_chain(std::slice::from_ref(&cert));
        match Certificate::parse(&cert.to_bytes()) {
            Ok(back) => assert_eq!(back, cert, "certificate round trip"),
            Err(e) => panic!("re-encoded certificate does not parse: {e}"),
        }
    }
}

fn exercise_chain(chain: &[Certificate]) {
    for cert in chain {
        let _ = cert.check_validity(1_700_000_000);
        let _ = cert.verify_signature(&cert.subject);
        let _ = check_chain(chain, &cert.subject, KeyUsage(0));
        let _ = cert.usage.labels();
    }
}

/// A signature section payload.
pub fn signature(data: &[u8]) {
    let Ok(block) = SignatureBlock::parse(data) else {
        return;
    };
    let _ = block.verify(&block.public_key);
    match SignatureBlock::parse(&block.to_bytes()) {
        Ok(back) => assert_eq!(back, block, "signature round trip"),
        Err(e) => panic!("re-encoded signature does not parse: {e}"),
    }
}

/// A revocation list, binary and text.
pub fn revocation(data: &[u8]) {
    if let Ok(list) = RevocationList::parse(data) {
        match RevocationList::parse(&list.to_bytes()) {
            Ok(back) => assert_eq!(back, list, "revocation list round trip"),
            Err(e) => panic!("re-encoded revocation list does not parse: {e}"),
        }
        let _ = RevocationList::from_text(&list.to_text());
        let mut policy = Policy::new();
        let _ = policy.add_revocations(list);
    }
}

/// The armored text files: public and secret keys (no passphrase, so no
/// scrypt), certificate files, revocation lists, key ids.
pub fn armored_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(key) = PublicKey::from_text(&text) {
        assert_eq!(
            PublicKey::from_text(&key.to_text())
                .ok()
                .map(|k| *k.as_bytes()),
            Some(*key.as_bytes())
        );
    }
    let _ = SecretKey::from_text(&text, None);
    if let Ok(chain) = chain_from_text(&text) {
        exercise_chain(&chain);
    }
    let _ = RevocationList::from_text(&text);
    let _ = KeyId::parse(text.trim());
}

/// A legacy tar.gz package, in memory, with small limits; written back and
/// read again.
pub fn legacy(data: &[u8]) {
    let _ = detect(data);
    let Ok(pkg) = read_legacy(data, &LEGACY_LIMITS) else {
        return;
    };
    let _ = (pkg.manifest_bytes(), pkg.root_prefix(), pkg.total_bytes());
    for f in &pkg.files {
        let _ = f.basename();
    }
    if let Ok(bytes) = legacy_bytes(&pkg.files) {
        match read_legacy(&bytes, &LEGACY_LIMITS) {
            Ok(back) => {
                // The writer puts the manifest first; compare as sets.
                let sorted = |files: &[crate::format::legacy::LegacyFile]| {
                    let mut v = files.to_vec();
                    v.sort_by(|a, b| a.path.cmp(&b.path));
                    v
                };
                assert_eq!(sorted(&back.files), sorted(&pkg.files), "legacy round trip");
            }
            Err(e) => panic!("re-written legacy package does not read: {e}"),
        }
    }
    let files = pkg.files.into_iter().map(|f| (f.path, f.data)).collect();
    let _ = ExpertContents::from_files(files);
}

/// PEFT ingestion from bytes: `u32 LE config length`, `adapter_config.json`,
/// then `adapter_model.safetensors`.
pub fn peft(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let len = u32::from_le_bytes(*len) as usize;
    let Some((config, model)) = (len <= rest.len()).then(|| rest.split_at(len)) else {
        return;
    };
    let Ok(mut adapter) = PeftAdapter::from_bytes(config.to_vec(), model) else {
        return;
    };
    let _ = adapter.tensor_bytes();
    for i in 0..adapter.tensors.len() {
        match adapter.tensor(i) {
            Ok(t) => assert_eq!(t.data.len() as u64, t.meta().byte_len()),
            Err(e) => panic!("indexed tensor {i} does not load: {e}"),
        }
    }
    assert!(adapter.tensor(adapter.tensors.len()).is_err());
    let _ = ExpertContents::synthesize_manifest("fuzz", &adapter);
    let _ = adapter.convert_dtype(safetensors::Dtype::F16);
}
