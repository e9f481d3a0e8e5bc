//! Signatures, certificates and revocation: the library API on experts built
//! with the packager and the writer, tampering of every kind, and the
//! `keygen` / `certify` / `sign` / `revoke` / `validate` verbs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use expertui::format::digests::root_digest;
use expertui::format::package::{ExpertContents, PackageOptions};
use expertui::format::signing::keys::permission_warning;
use expertui::format::signing::{
    self, sign_file, unix_now, Certificate, KeyUsage, Policy, RevocationList, SecretKey,
    SignOptions, SignatureReport, SignatureState, SigningError,
};
use expertui::format::{
    Codec, ExpertReader, ExpertWriter, ReaderOptions, SectionSpec, SectionType, WriterOptions,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

const LORA: &str = "tests/fixtures/minilm-lora-r8";
const SERIAL: u64 = 77;

fn root_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed(&[n; 32]).unwrap()
}

/// A root key, a publisher key and the root's certificate for it.
struct Pki {
    root: SecretKey,
    publisher: SecretKey,
    cert: Certificate,
}

fn pki() -> Pki {
    let (root, publisher) = (key(1), key(2));
    let now = unix_now();
    let cert = Certificate::issue(
        &root,
        publisher.public(),
        "ACME models",
        KeyUsage::SIGN_EXPERTS,
        SERIAL,
        now - 3600,
        now + 30 * 86_400,
    )
    .unwrap();
    Pki {
        root,
        publisher,
        cert,
    }
}

fn trusting(key: &SecretKey) -> Policy {
    let mut policy = Policy::new();
    policy.trust(*key.public());
    policy
}

/// The MiniLM LoRA fixture packaged with the library.
fn packaged(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    ExpertContents::from_adapter_dir(&root_dir().join(LORA))
        .unwrap()
        .write_binary(&out, &PackageOptions::default(), &mut |_, _| {})
        .unwrap();
    out
}

/// A small expert from the writer: compressed and plain sections, a
/// 256-aligned one (so there is padding), a critical custom section.
fn small(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let mut w = ExpertWriter::create(&out, WriterOptions::default()).unwrap();
    let manifest = br#"{"name":"tiny","version":"1.0.0","schema_version":"1.0"}"#;
    w.add_section(
        SectionSpec::new(SectionType::Manifest, "manifest.json").codec(Codec::Zstd),
        &manifest.repeat(4),
    )
    .unwrap();
    w.add_section(
        SectionSpec::new(SectionType::Grammar, "grammar.gbnf"),
        b"root ::= \"yes\" | \"no\"\n",
    )
    .unwrap();
    w.add_section(
        SectionSpec::new(SectionType::Tensors, "layer.0")
            .layer(0)
            .align_256(true),
        &(0..200u8).collect::<Vec<_>>(),
    )
    .unwrap();
    w.add_section(
        SectionSpec::new(SectionType::Custom(0x8001), "extra").critical(true),
        b"custom bytes",
    )
    .unwrap();
    w.finish().unwrap();
    out
}

fn sign(path: &Path, key: &SecretKey, chain: &[Certificate]) -> signing::SignSummary {
    let options = SignOptions {
        chain: chain.to_vec(),
        comment: "release 1".into(),
        ..Default::default()
    };
    sign_file(path, path, key, &options).unwrap()
}

fn open(bytes: Vec<u8>) -> Result<ExpertReader, String> {
    ExpertReader::from_vec(bytes, ReaderOptions::default()).map_err(|e| format!("open: {e}"))
}

/// Full verification of in-memory bytes: structure, root, every section and
/// padding, then the signature policy.
fn verify_bytes(bytes: Vec<u8>, policy: &Policy) -> Result<SignatureReport, SigningError> {
    let reader = ExpertReader::from_vec(bytes, ReaderOptions::default())?;
    signing::verify(&reader, policy)
}

fn verify_path(path: &Path, policy: &Policy) -> Result<SignatureReport, SigningError> {
    verify_bytes(std::fs::read(path).unwrap(), policy)
}

/// Layout facts of a file, from its own header and TOC.
struct Layout {
    toc_offset: usize,
    /// (type, name, offset, stored_len) per entry.
    entries: Vec<(SectionType, String, usize, usize)>,
}

fn layout(bytes: &[u8]) -> Layout {
    let reader = open(bytes.to_vec()).unwrap();
    Layout {
        toc_offset: reader.header().toc_offset.get() as usize,
        entries: reader
            .sections()
            .iter()
            .map(|s| {
                (
                    s.kind,
                    s.name.clone(),
                    s.offset as usize,
                    s.stored_len as usize,
                )
            })
            .collect(),
    }
}

/// What an attacker without the key can do: after changing bytes, recompute
/// the TOC digest of `section` (if given) and the root digest, so the file
/// passes every integrity check again.
fn reseal(bytes: &mut [u8], toc_offset: usize, section: Option<usize>) {
    if let Some(i) = section {
        let entry = toc_offset + i * 128;
        let field = |at: usize| {
            u64::from_le_bytes(bytes[entry + at..entry + at + 8].try_into().unwrap()) as usize
        };
        let (offset, len) = (field(16), field(24));
        let digest: [u8; 32] = Sha256::digest(&bytes[offset..offset + len]).into();
        bytes[entry + 40..entry + 72].copy_from_slice(&digest);
    }
    let root = root_digest(&bytes[..128], &bytes[toc_offset..]);
    bytes[48..80].copy_from_slice(&root);
}

fn stored_by_name(path: &Path) -> BTreeMap<(u16, String), (Vec<u8>, [u8; 32])> {
    let reader = ExpertReader::open(path).unwrap();
    reader
        .sections()
        .iter()
        .map(|s| {
            (
                (s.kind.code(), s.name.clone()),
                (reader.stored(s.index).unwrap().to_vec(), s.sha256),
            )
        })
        .collect()
}

#[test]
fn signed_with_chain_verifies_against_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let file = packaged(dir.path(), "a.expert");
    let summary = sign(&file, &p.publisher, std::slice::from_ref(&p.cert));
    assert_eq!(summary.key_id, p.publisher.key_id());
    assert_eq!(summary.chain_len, 1);
    assert!(!summary.replaced);
    let report = verify_path(&file, &trusting(&p.root)).unwrap();
    assert_eq!(report.state, SignatureState::Valid);
    assert_eq!(report.key_id, Some(p.publisher.key_id()));
    assert_eq!(report.trusted_by, Some(p.root.key_id()));
    assert_eq!(report.signer.as_deref(), Some("ACME models"));
    assert_eq!(report.comment.as_deref(), Some("release 1"));
    assert_eq!(report.file.as_deref(), Some("a.expert"));
    assert_eq!(report.chain, vec![p.cert.clone()]);
    // The publisher key trusted directly, or pinned, also works.
    assert!(verify_path(&file, &trusting(&p.publisher)).is_ok());
    let mut pinned = Policy::new();
    pinned.pin(*p.publisher.public());
    assert!(verify_path(&file, &pinned).is_ok());
    // The layout: signature last, chain before it, header points at it.
    let reader = ExpertReader::open(&file).unwrap();
    let n = reader.sections().len();
    assert_eq!(reader.sections()[n - 1].kind, SectionType::Signature);
    assert_eq!(reader.sections()[n - 2].kind, SectionType::Certificate);
    assert_eq!(reader.header().signature_index.get() as usize, n - 1);
}

#[test]
fn unsigned_and_untrusted_states() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let file = packaged(dir.path(), "a.expert");
    assert!(matches!(
        verify_path(&file, &trusting(&p.root)),
        Err(SigningError::Unsigned)
    ));
    let reader = ExpertReader::open(&file).unwrap();
    assert_eq!(signing::inspect(&reader).state, SignatureState::Unsigned);
    sign(&file, &p.publisher, std::slice::from_ref(&p.cert));
    // No trust configured: the signature checks out, but nobody vouches.
    let reader = ExpertReader::open(&file).unwrap();
    let report = signing::inspect(&reader);
    assert_eq!(report.state, SignatureState::Untrusted);
    assert!(report.signature_ok);
    assert!(!Policy::new().fails(&report));
    let mut strict = Policy::new();
    strict.require_signature = true;
    assert!(strict.fails(&report));
}

#[test]
fn wrong_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let file = packaged(dir.path(), "a.expert");
    sign(&file, &p.publisher, &[]);
    let mut pinned = Policy::new();
    pinned.pin(*key(3).public());
    let err = verify_path(&file, &pinned).unwrap_err();
    assert!(
        matches!(err, SigningError::WrongKey { expected, found }
            if expected == key(3).key_id() && found == p.publisher.key_id()),
        "{err}"
    );
    assert_eq!(err.state(), SignatureState::Untrusted);
}

#[test]
fn untrusted_root_and_untrusted_key_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let other_root = key(9);
    let with_chain = packaged(dir.path(), "a.expert");
    sign(&with_chain, &p.publisher, std::slice::from_ref(&p.cert));
    let err = verify_path(&with_chain, &trusting(&other_root)).unwrap_err();
    assert!(
        matches!(err, SigningError::UntrustedRoot { issuer } if issuer == p.root.key_id()),
        "{err}"
    );
    let bare = packaged(dir.path(), "b.expert");
    sign(&bare, &p.publisher, &[]);
    let err = verify_path(&bare, &trusting(&other_root)).unwrap_err();
    assert!(matches!(err, SigningError::UntrustedKey { .. }), "{err}");
    assert_eq!(err.state(), SignatureState::Untrusted);
    // A chain whose root certificate is forged (another key signed it, in
    // the root's name) fails even though the root is trusted.
    let forger = key(5);
    let mut forged = p.cert.clone();
    forged = Certificate::issue(
        &forger,
        p.publisher.public(),
        &forged.name,
        forged.usage,
        forged.serial,
        forged.not_before,
        forged.not_after,
    )
    .unwrap();
    let forged_file = packaged(dir.path(), "c.expert");
    sign(&forged_file, &p.publisher, &[forged]);
    let err = verify_path(&forged_file, &trusting(&p.root)).unwrap_err();
    assert!(matches!(err, SigningError::UntrustedRoot { .. }), "{err}");
}

#[test]
fn revoked_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let file = packaged(dir.path(), "a.expert");
    sign(&file, &p.publisher, std::slice::from_ref(&p.cert));
    let mut policy = trusting(&p.root);
    let list = RevocationList::create(&p.root, [p.publisher.key_id()], [], unix_now()).unwrap();
    policy.add_revocations(list).unwrap();
    let err = verify_path(&file, &policy).unwrap_err();
    assert!(
        matches!(err, SigningError::RevokedKey { key_id, issuer }
            if key_id == p.publisher.key_id() && issuer == p.root.key_id()),
        "{err}"
    );
    assert_eq!(err.state(), SignatureState::Revoked);
}

#[test]
fn revoked_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let file = packaged(dir.path(), "a.expert");
    sign(&file, &p.publisher, std::slice::from_ref(&p.cert));
    let mut policy = trusting(&p.root);
    let list = RevocationList::create(&p.root, [], [SERIAL, 1234], unix_now()).unwrap();
    policy.add_revocations(list).unwrap();
    let err = verify_path(&file, &policy).unwrap_err();
    assert!(
        matches!(err, SigningError::RevokedCertificate { serial: SERIAL, .. }),
        "{err}"
    );
    assert_eq!(err.state(), SignatureState::Revoked);
    // The same serial from another issuer is a different certificate.
    let other = key(8);
    let mut policy = trusting(&p.root);
    policy.trust(*other.public());
    let list = RevocationList::create(&other, [], [SERIAL], unix_now()).unwrap();
    policy.add_revocations(list).unwrap();
    assert!(verify_path(&file, &policy).is_ok());
}

#[test]
fn revocation_lists_must_come_from_a_trusted_key() {
    let p = pki();
    let list = RevocationList::create(&key(8), [p.publisher.key_id()], [], 1).unwrap();
    assert!(matches!(
        trusting(&p.root).add_revocations(list),
        Err(SigningError::UntrustedRevocationList { .. })
    ));
}

#[test]
fn expired_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let file = packaged(dir.path(), "a.expert");
    sign(&file, &p.publisher, std::slice::from_ref(&p.cert));
    let mut later = trusting(&p.root);
    later.now = p.cert.not_after + 1;
    let err = verify_path(&file, &later).unwrap_err();
    assert!(
        matches!(err, SigningError::CertificateExpired { serial: SERIAL, .. }),
        "{err}"
    );
    assert_eq!(err.state(), SignatureState::Expired);
    let mut earlier = trusting(&p.root);
    earlier.now = p.cert.not_before - 1;
    assert!(matches!(
        verify_path(&file, &earlier),
        Err(SigningError::CertificateNotYetValid { .. })
    ));
    // Signing with a certificate that already expired is refused.
    let old = Certificate::issue(
        &p.root,
        p.publisher.public(),
        "ACME",
        KeyUsage::SIGN_EXPERTS,
        1,
        10,
        20,
    )
    .unwrap();
    let options = SignOptions {
        chain: vec![old],
        ..Default::default()
    };
    assert!(matches!(
        sign_file(&file, &file, &p.publisher, &options),
        Err(SigningError::CertificateExpired { .. })
    ));
}

#[test]
fn truncated_signature_section_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let file = packaged(dir.path(), "a.expert");
    sign(&file, &p.publisher, &[]);
    let reader = ExpertReader::open(&file).unwrap();
    let sig = reader.first(SectionType::Signature).unwrap().index;
    let payload = reader.stored(sig).unwrap().to_vec();
    for cut in [0, 1, 100, 209, 210, payload.len() - 1] {
        let out = dir.path().join(format!("cut{cut}.expert"));
        let mut w = ExpertWriter::create(&out, WriterOptions::default()).unwrap();
        for s in reader.sections().iter().filter(|s| s.index != sig) {
            w.copy_section(&reader, s.index).unwrap();
        }
        if cut > 0 {
            w.add_section(
                SectionSpec::new(SectionType::Signature, "signature"),
                &payload[..cut],
            )
            .unwrap();
        } else {
            // An empty section: the writer refuses nothing here either.
            w.add_section(SectionSpec::new(SectionType::Signature, "signature"), &[])
                .unwrap();
        }
        w.finish().unwrap();
        let err = verify_path(&out, &trusting(&p.publisher)).unwrap_err();
        assert!(
            matches!(err, SigningError::TruncatedSignature { have, .. } if have == cut as u64),
            "cut {cut}: {err}"
        );
        assert_eq!(err.state(), SignatureState::Invalid);
    }
}

#[test]
fn signature_moved_to_another_expert_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let signed = packaged(dir.path(), "a.expert");
    sign(&signed, &p.publisher, std::slice::from_ref(&p.cert));
    let other = small(dir.path(), "b.expert");
    let signed_reader = ExpertReader::open(&signed).unwrap();
    let other_reader = ExpertReader::open(&other).unwrap();
    let out = dir.path().join("moved.expert");
    let mut w = ExpertWriter::create(&out, WriterOptions::default()).unwrap();
    for s in other_reader.sections() {
        w.copy_section(&other_reader, s.index).unwrap();
    }
    for kind in [SectionType::Certificate, SectionType::Signature] {
        let index = signed_reader.first(kind).unwrap().index;
        w.copy_section(&signed_reader, index).unwrap();
    }
    w.finish().unwrap();
    let err = verify_path(&out, &trusting(&p.root)).unwrap_err();
    assert!(matches!(err, SigningError::ContentMismatch { .. }), "{err}");
    assert_eq!(err.state(), SignatureState::Invalid);
    // Also when the moved signature is checked with no trust at all.
    let reader = ExpertReader::open(&out).unwrap();
    let report = signing::inspect(&reader);
    assert!(matches!(
        report.error,
        Some(SigningError::ContentMismatch { .. })
    ));
    assert!(!report.signature_ok);
}

#[test]
fn two_signature_sections_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let signed = packaged(dir.path(), "a.expert");
    sign(&signed, &p.publisher, &[]);
    let reader = ExpertReader::open(&signed).unwrap();
    let sig = reader.first(SectionType::Signature).unwrap().index;
    let out = dir.path().join("two.expert");
    let mut w = ExpertWriter::create(&out, WriterOptions::default()).unwrap();
    for s in reader.sections() {
        w.copy_section(&reader, s.index).unwrap();
    }
    w.add_section(
        SectionSpec::new(SectionType::Signature, "signature-2"),
        reader.stored(sig).unwrap(),
    )
    .unwrap();
    w.finish().unwrap();
    assert!(matches!(
        verify_path(&out, &trusting(&p.publisher)),
        Err(SigningError::MultipleSignatures(2))
    ));
}

/// Offsets to flip in a file: every byte when `every`, else all of the
/// header, TOC, padding, signature and certificate sections, and the first
/// and last 32 and every 997th byte of each other section.
fn offsets(bytes: &[u8], every: bool) -> Vec<usize> {
    if every {
        return (0..bytes.len()).collect();
    }
    let l = layout(bytes);
    let mut out: Vec<usize> = (0..128).collect();
    let mut prev_end = 128;
    for (kind, _, offset, len) in &l.entries {
        out.extend(prev_end..*offset); // padding
        let end = offset + len;
        if matches!(kind, SectionType::Signature | SectionType::Certificate) {
            out.extend(*offset..end);
        } else {
            out.extend(*offset..(*offset + 32).min(end));
            out.extend(end.saturating_sub(32).max(*offset)..end);
            out.extend((*offset..end).step_by(997));
        }
        prev_end = end;
    }
    out.extend(prev_end..bytes.len()); // tail padding and TOC
    out.sort_unstable();
    out.dedup();
    out
}

fn assert_every_flip_refused(bytes: &[u8], policy: &Policy, every: bool, bits: &[u8]) -> usize {
    assert!(verify_bytes(bytes.to_vec(), policy).is_ok());
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let positions = offsets(bytes, every);
    for &at in &positions {
        for &bit in bits {
            let mut bad = bytes.to_vec();
            bad[at] ^= bit;
            match verify_bytes(bad, policy) {
                Ok(_) => panic!("flipping bit {bit:#x} of byte {at} went unnoticed"),
                Err(e) => *kinds.entry(e.kind().to_string()).or_default() += 1,
            }
        }
    }
    eprintln!("{} offsets, refusals by kind: {kinds:?}", positions.len());
    positions.len()
}

#[test]
fn any_changed_byte_fails_verification_small_expert_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let file = small(dir.path(), "s.expert");
    sign(&file, &p.publisher, std::slice::from_ref(&p.cert));
    let bytes = std::fs::read(&file).unwrap();
    let n = assert_every_flip_refused(&bytes, &trusting(&p.root), true, &[0x01, 0x80]);
    assert_eq!(n, bytes.len());
}

#[test]
fn any_changed_byte_fails_verification_packaged_expert_sampled() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let file = packaged(dir.path(), "a.expert");
    sign(&file, &p.publisher, std::slice::from_ref(&p.cert));
    let bytes = std::fs::read(&file).unwrap();
    let n = assert_every_flip_refused(&bytes, &trusting(&p.root), false, &[0x01]);
    assert!(n > 2000, "{n} offsets");
}

/// An attacker who rewrites the file consistently (section digest and root
/// recomputed) still cannot produce a valid signature.
#[test]
fn consistent_rewrites_fail_the_signature() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let file = small(dir.path(), "s.expert");
    sign(&file, &p.publisher, std::slice::from_ref(&p.cert));
    let bytes = std::fs::read(&file).unwrap();
    let policy = trusting(&p.root);
    let l = layout(&bytes);
    // Section contents, resealed.
    for (i, (kind, name, offset, len)) in l.entries.iter().enumerate() {
        let positions: Vec<usize> = if *kind == SectionType::Signature {
            (*offset..offset + len).collect()
        } else {
            vec![*offset, offset + len / 2, offset + len - 1]
        };
        for at in positions {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            reseal(&mut bad, l.toc_offset, Some(i));
            let err = verify_bytes(bad, &policy)
                .err()
                .unwrap_or_else(|| panic!("{name} byte {at} changed and resealed went unnoticed"));
            if *kind != SectionType::Signature {
                assert!(
                    matches!(err, SigningError::ContentMismatch { .. }),
                    "{name}: {err}"
                );
            } else {
                assert!(
                    err.is_verdict() && !matches!(err, SigningError::Format(_)),
                    "{err}"
                );
            }
        }
    }
    // Header fields (root digest aside, which resealing recomputes).
    for at in (0..128).filter(|at| !(48..80).contains(at)) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        reseal(&mut bad, l.toc_offset, None);
        assert!(verify_bytes(bad, &policy).is_err(), "header byte {at}");
    }
    // TOC entry fields; section ids are labels, not covered.
    for i in 0..l.entries.len() {
        for field in 4..128 {
            let at = l.toc_offset + i * 128 + field;
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            reseal(&mut bad, l.toc_offset, None);
            assert!(
                verify_bytes(bad, &policy).is_err(),
                "entry {i} byte {field}"
            );
        }
    }
}

#[test]
fn resigning_replaces_the_signature_and_keeps_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let file = packaged(dir.path(), "a.expert");
    let original = stored_by_name(&file);
    let first = key(4);
    sign(&file, &first, &[]);
    let summary = sign(&file, &p.publisher, std::slice::from_ref(&p.cert));
    assert!(summary.replaced);
    let resigned = stored_by_name(&file);
    for (name, (bytes, digest)) in &original {
        let (after, after_digest) = resigned.get(name).expect("section kept");
        assert!(after == bytes, "{name:?} bytes changed");
        assert_eq!(after_digest, digest);
    }
    let reader = ExpertReader::open(&file).unwrap();
    assert_eq!(reader.find_all(SectionType::Signature).count(), 1);
    assert_eq!(reader.find_all(SectionType::Certificate).count(), 1);
    assert_eq!(resigned.len(), original.len() + 2);
    assert!(verify_path(&file, &trusting(&p.root)).is_ok());
    let mut old = Policy::new();
    old.pin(*first.public());
    assert!(matches!(
        verify_path(&file, &old),
        Err(SigningError::WrongKey { .. })
    ));
    // Re-signing without a certificate drops the old chain.
    sign(&file, &first, &[]);
    let reader = ExpertReader::open(&file).unwrap();
    assert_eq!(reader.find_all(SectionType::Certificate).count(), 0);
    assert!(verify_path(&file, &old).is_ok());
    // The signing digest does not depend on placement: the same sections
    // written 256-aligned have the same digest.
    let realigned = dir.path().join("realigned.expert");
    let mut w = ExpertWriter::create(
        &realigned,
        WriterOptions {
            alignment: 256,
            ..Default::default()
        },
    )
    .unwrap();
    for s in reader.sections() {
        w.copy_section(&reader, s.index).unwrap();
    }
    w.finish().unwrap();
    assert!(verify_path(&realigned, &old).is_ok());
}

#[test]
fn damaged_files_are_not_signed() {
    let dir = tempfile::tempdir().unwrap();
    let file = packaged(dir.path(), "a.expert");
    let mut bytes = std::fs::read(&file).unwrap();
    let l = layout(&bytes);
    let (_, _, offset, _) = l.entries[2];
    bytes[offset + 10] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let err = sign_file(&file, &file, &key(2), &SignOptions::default()).unwrap_err();
    assert!(matches!(err, SigningError::Format(_)), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "file untouched");
}

#[test]
fn overview_shows_the_signer() {
    use expertui::app::render::draw;
    use expertui::app::App;
    use expertui::format::inspect::Inspected;
    use expertui::format::FileBytes;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let file = packaged(dir.path(), "a.expert");
    sign(&file, &p.publisher, std::slice::from_ref(&p.cert));
    let doc = Inspected::from_bytes(
        "a.expert".into(),
        Arc::new(FileBytes::Owned(std::fs::read(&file).unwrap())),
    );
    let mut app = App::new(doc);
    app.wait_background();
    let mut terminal = Terminal::new(TestBackend::new(120, 36)).unwrap();
    terminal.draw(|f| draw(f, &mut app)).unwrap();
    let screen = terminal.backend().to_string();
    assert!(
        screen.contains(&format!("signed by {}", p.publisher.key_id())),
        "{screen}"
    );
    assert!(screen.contains("ACME models"), "{screen}");
    assert!(screen.contains(&p.root.key_id().to_string()), "{screen}");
}

// ---- the verbs -------------------------------------------------------------

fn expertui() -> Command {
    let mut cmd = Command::cargo_bin("expertui").unwrap();
    cmd.current_dir(root_dir()).env("NO_COLOR", "1");
    cmd
}

/// Runs and returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    run_env(args, &[])
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = expertui();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.arg("--headless").args(args).output().unwrap();
    (
        out.status.code().expect("exited normally"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn cli_keygen_certify_package_sign_validate_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    for name in ["root", "pub", "other"] {
        let (code, out, err) = run(&["keygen", "-o", s(&d(name)), "--json"]);
        assert_eq!(code, 0, "{err}");
        let v = json(&out);
        assert_eq!(v["encrypted"], false);
        assert_eq!(mode(&d(name)), 0o600, "secret key mode");
        assert!(d(&format!("{name}.pub")).exists());
    }
    // keygen refuses to overwrite.
    let (code, _, err) = run(&["keygen", "-o", s(&d("root"))]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = run(&[
        "certify",
        "--issuer",
        s(&d("root")),
        "--subject",
        s(&d("pub.pub")),
        "--name",
        "ACME models",
        "--days",
        "30",
        "--serial",
        "42",
        "-o",
        s(&d("pub.cert")),
    ]);
    assert_eq!(code, 0, "{err}");
    let expert = d("a.expert");
    let (code, out, err) = run(&[
        "package",
        LORA,
        "-o",
        s(&expert),
        "--sign",
        s(&d("pub")),
        "--cert",
        s(&d("pub.cert")),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let pub_id = json(&out)["signed_by"].as_str().unwrap().to_string();
    // The sidecar matches the signed file.
    let sidecar = std::fs::read_to_string(d("a.expert.sha256")).unwrap();
    let digest = hex::encode(Sha256::digest(std::fs::read(&expert).unwrap()));
    assert!(sidecar.starts_with(&digest));

    let validate = |extra: &[&str]| {
        let mut args = vec!["validate", s(&expert), "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = run(&args);
        (code, json(&out), err)
    };
    let (code, v, _) = validate(&["--trust", s(&d("root.pub")), "--require-signature"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["signature"]["state"], "valid");
    assert_eq!(v["signature"]["key_id"], pub_id.as_str());
    assert_eq!(v["signature"]["chain"][0]["serial"], 42);
    assert_eq!(v["signature"]["chain"][0]["name"], "ACME models");
    assert_eq!(v["integrity_checked"], true);
    // A folder of trusted keys works too.
    let trust_dir = d("trust");
    std::fs::create_dir(&trust_dir).unwrap();
    std::fs::copy(d("root.pub"), trust_dir.join("root.pub")).unwrap();
    let (code, _, _) = validate(&["--trust", s(&trust_dir), "--require-signature"]);
    assert_eq!(code, 0);
    // No trust: reported, not a failure, unless a signature is required.
    let (code, v, _) = validate(&[]);
    assert_eq!(
        (code, v["signature"]["state"].as_str()),
        (0, Some("untrusted"))
    );
    let (code, v, _) = validate(&["--require-signature"]);
    assert_eq!((code, v["valid"].as_bool()), (3, Some(false)));
    // Another root.
    let (code, v, _) = validate(&["--trust", s(&d("other.pub"))]);
    assert_eq!(code, 3);
    assert_eq!(v["signature"]["error_kind"], "untrusted_root");
    // A pinned key that is not the signer.
    let (code, v, _) = validate(&["--pubkey", s(&d("other.pub"))]);
    assert_eq!(code, 3);
    assert_eq!(v["signature"]["error_kind"], "wrong_key");
    let (code, _, _) = validate(&["--pubkey", s(&d("pub.pub")), "--require-signature"]);
    assert_eq!(code, 0);
    // Revocation of the key, then of the certificate.
    let (code, _, err) = run(&[
        "revoke",
        "--key",
        s(&d("root")),
        "--key-id",
        s(&d("pub.pub")),
        "-o",
        s(&d("keys.rev")),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, v, _) = validate(&[
        "--trust",
        s(&d("root.pub")),
        "--revocations",
        s(&d("keys.rev")),
    ]);
    assert_eq!(code, 3);
    assert_eq!(v["signature"]["state"], "revoked");
    assert_eq!(v["signature"]["error_kind"], "revoked_key");
    let (code, _, err) = run(&[
        "revoke",
        "--key",
        s(&d("root")),
        "--serial",
        "42",
        "-o",
        s(&d("certs.rev")),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, v, _) = validate(&[
        "--trust",
        s(&d("root.pub")),
        "--revocations",
        s(&d("certs.rev")),
    ]);
    assert_eq!(code, 3);
    assert_eq!(v["signature"]["error_kind"], "revoked_certificate");
    // A list from an untrusted key is a usage error.
    let (code, _, err) = run(&[
        "revoke",
        "--key",
        s(&d("other")),
        "--key-id",
        &pub_id,
        "-o",
        s(&d("other.rev")),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&[
        "validate",
        s(&expert),
        "--trust",
        s(&d("root.pub")),
        "--revocations",
        s(&d("other.rev")),
    ]);
    assert_eq!(code, 1, "{err}");
    // Text output names the signer.
    let (code, out, _) = run(&["validate", s(&expert), "--trust", s(&d("root.pub"))]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("signature: valid, signed by {pub_id}")),
        "{out}"
    );
    // Damage after signing: invalid, exit 3.
    let mut bytes = std::fs::read(&expert).unwrap();
    let l = layout(&bytes);
    let (_, _, offset, _) = l.entries[3];
    bytes[offset + 5] ^= 0x40;
    let damaged = d("damaged.expert");
    std::fs::write(&damaged, &bytes).unwrap();
    let (code, out, _) = run(&[
        "validate",
        s(&damaged),
        "--json",
        "--trust",
        s(&d("root.pub")),
    ]);
    assert_eq!(code, 3);
    assert_eq!(json(&out)["signature"]["state"], "invalid");
    // Unsigned: fine unless required.
    let unsigned = packaged(dir.path(), "u.expert");
    let (code, out, _) = run(&["validate", s(&unsigned), "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["signature"]["state"], "unsigned");
    let (code, out, _) = run(&["validate", s(&unsigned), "--json", "--require-signature"]);
    assert_eq!(code, 3);
    assert_eq!(json(&out)["signature"]["state"], "unsigned");
}

#[test]
fn cli_sign_replaces_and_warns_on_open_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let (code, _, err) = run(&["keygen", "-o", s(&d("k"))]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(mode(&d("k")), 0o600);
    assert_eq!(permission_warning(&d("k")), None);
    let expert = packaged(dir.path(), "a.expert");
    let out = d("signed.expert");
    let (code, stdout, err) = run(&[
        "sign",
        s(&expert),
        "--key",
        s(&d("k")),
        "-o",
        s(&out),
        "--comment",
        "hello",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(json(&stdout)["replaced_signature"], false);
    // A secret key others can read: works, with a warning.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d("k"), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(permission_warning(&d("k")).is_some());
    let (code, stdout, err) = run(&["sign", s(&out), "--key", s(&d("k")), "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains("chmod 600"),
        "{err}"
    );
    assert_eq!(json(&stdout)["replaced_signature"], true);
    let (code, _, _) = run(&[
        "validate",
        s(&out),
        "--pubkey",
        s(&d("k.pub")),
        "--require-signature",
    ]);
    assert_eq!(code, 0);
}

#[test]
fn cli_passphrase_protected_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let env = [("EXPERTUI_TEST_PASS", "correct horse")];
    let (code, out, err) = run_env(
        &[
            "keygen",
            "-o",
            s(&d("k")),
            "--passphrase-env",
            "EXPERTUI_TEST_PASS",
            "--json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["encrypted"], true);
    let text = std::fs::read_to_string(d("k")).unwrap();
    assert!(text.contains("encrypted with scrypt"));
    let expert = packaged(dir.path(), "a.expert");
    let (code, _, err) = run(&["sign", s(&expert), "--key", s(&d("k"))]);
    assert_eq!(code, 1);
    assert!(err.contains("passphrase"), "{err}");
    let (code, _, err) = run_env(
        &[
            "sign",
            s(&expert),
            "--key",
            s(&d("k")),
            "--passphrase-env",
            "EXPERTUI_TEST_PASS",
        ],
        &[("EXPERTUI_TEST_PASS", "wrong")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("wrong passphrase"), "{err}");
    let (code, _, err) = run_env(
        &[
            "sign",
            s(&expert),
            "--key",
            s(&d("k")),
            "--passphrase-env",
            "EXPERTUI_TEST_PASS",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = run(&["validate", s(&expert), "--trust", s(&d("k.pub"))]);
    assert_eq!(code, 0);
}

#[test]
fn cli_certify_intermediate_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    for name in ["root", "ca", "pub"] {
        assert_eq!(run(&["keygen", "-o", s(&d(name))]).0, 0);
    }
    let (code, _, err) = run(&[
        "certify",
        "--issuer",
        s(&d("root")),
        "--subject",
        s(&d("ca.pub")),
        "--name",
        "ACME CA",
        "--usage",
        "certify",
        "-o",
        s(&d("ca.cert")),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&[
        "certify",
        "--issuer",
        s(&d("ca")),
        "--subject",
        s(&d("pub.pub")),
        "--name",
        "ACME team",
        "--chain",
        s(&d("ca.cert")),
        "-o",
        s(&d("pub.cert")),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["chain_length"], 2);
    let expert = packaged(dir.path(), "a.expert");
    let (code, _, err) = run(&[
        "sign",
        s(&expert),
        "--key",
        s(&d("pub")),
        "--cert",
        s(&d("pub.cert")),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(&[
        "validate",
        s(&expert),
        "--trust",
        s(&d("root.pub")),
        "--require-signature",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let v = json(&out);
    assert_eq!(v["signature"]["chain"].as_array().unwrap().len(), 2);
    assert_eq!(v["signature"]["chain"][1]["name"], "ACME CA");
    // A key certified only for signing cannot act as an intermediate.
    let (code, _, err) = run(&[
        "sign",
        s(&expert),
        "--key",
        s(&d("pub")),
        "--cert",
        s(&d("ca.cert")),
    ]);
    assert_eq!(code, 1, "{err}");
}
