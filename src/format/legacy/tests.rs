use super::*;
use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::{Read, Write};
use tar::{EntryType, Header};
use write::{plan, write_to};

fn fixture_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/minilm-sql-dora.v0.3.0.expert"
    ))
}

fn fixture() -> Vec<u8> {
    std::fs::read(fixture_path()).unwrap()
}

fn limits() -> LegacyLimits {
    LegacyLimits::default()
}

/// Gzips a raw tar stream.
fn gz(tar: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(tar).unwrap();
    enc.finish().unwrap()
}

/// A raw GNU header whose name bytes are written directly (bypassing
/// `set_path` checks).
fn raw_header(name: &[u8], kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    h
}

/// A tar stream: a manifest, then one raw entry with `data`, then the
/// end-of-archive blocks.
fn hostile(header: Header, data: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    let m = b"{}";
    let mh = raw_header(b"manifest.json", EntryType::Regular, m.len() as u64);
    tar.extend_from_slice(mh.as_bytes());
    tar.extend_from_slice(m);
    pad(&mut tar);
    tar.extend_from_slice(header.as_bytes());
    tar.extend_from_slice(data);
    pad(&mut tar);
    tar.extend_from_slice(&[0u8; 1024]);
    gz(&tar)
}

fn pad(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(512) {
        v.push(0);
    }
}

#[test]
fn reads_real_fixture() {
    let bytes = fixture();
    let pkg = read_legacy(&bytes, &limits()).unwrap();
    let names: Vec<&str> = pkg.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "manifest.json",
            "adapter_model.safetensors",
            "adapter_config.json",
            "README.md",
            "grammar.gbnf",
            "LICENSE"
        ]
    );
    assert_eq!(pkg.files[1].data.len(), 1_450_992);
    assert!(pkg.files.iter().all(|f| f.mode == 0o644));
    assert!(pkg.manifest_bytes().unwrap().starts_with(b"{"));
    assert_eq!(pkg.root_prefix(), None);
    assert_eq!(pkg.get("grammar.gbnf").unwrap().data.len(), 229);
    assert!(pkg.get("missing").is_none());
}

#[test]
fn fixture_sidecar_verifies() {
    let bytes = fixture();
    let mut side = fixture_path().into_os_string();
    side.push(".sha256");
    let text = std::fs::read_to_string(side).unwrap();
    verify_sidecar(&bytes, &text, "minilm-sql-dora.v0.3.0.expert").unwrap();
    // Our own line for the same bytes is identical.
    assert_eq!(sidecar_line(&bytes, "minilm-sql-dora.v0.3.0.expert"), text);
    assert_eq!(
        sidecar_path(&fixture_path()).file_name().unwrap(),
        "minilm-sql-dora.v0.3.0.expert.sha256"
    );
}

#[test]
fn sidecar_variants_and_errors() {
    let data = b"hello";
    let line = sidecar_line(data, "a.expert");
    let digest = &line[..64];
    verify_sidecar(data, &format!("{digest} *a.expert\n"), "a.expert").unwrap();
    verify_sidecar(data, &format!("{digest}  dir/a.expert\r\n"), "/x/a.expert").unwrap();
    verify_sidecar(data, &digest.to_uppercase(), "a.expert").unwrap();
    match verify_sidecar(b"other", &line, "a.expert") {
        Err(LegacyError::SidecarMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, digest);
            assert_ne!(actual, digest);
        }
        r => panic!("{r:?}"),
    }
    assert!(matches!(
        verify_sidecar(data, "nothex  a.expert", "a.expert"),
        Err(LegacyError::SidecarFormat(_))
    ));
    assert!(matches!(
        verify_sidecar(data, "", "a.expert"),
        Err(LegacyError::SidecarFormat(_))
    ));
    // One line naming another file (a renamed download): its hash decides.
    verify_sidecar(data, &line, "b.expert").unwrap();
    assert!(matches!(
        verify_sidecar(b"other", &line, "b.expert"),
        Err(LegacyError::SidecarMismatch { .. })
    ));
    // Several lines, none for this file: nothing to check it against.
    let two = format!("{line}{digest}  c.expert\n");
    assert!(matches!(
        verify_sidecar(data, &two, "b.expert"),
        Err(LegacyError::SidecarFormat(_))
    ));
    // Every line for the file must hold, whatever their order.
    let zeros = "0".repeat(64);
    for text in [
        format!("{line}{zeros}  a.expert\n"),
        format!("{zeros}  a.expert\n{line}"),
    ] {
        assert!(
            matches!(
                verify_sidecar(data, &text, "a.expert"),
                Err(LegacyError::SidecarMismatch { .. })
            ),
            "{text}"
        );
    }
}

#[test]
fn write_then_read_roundtrip() {
    let files = vec![
        LegacyFile::new("adapter_model.safetensors", vec![7u8; 3000]),
        LegacyFile::new("manifest.json", b"{\"name\":\"x\"}".to_vec()),
        LegacyFile::new("README.md", b"# hi\n".to_vec()),
        LegacyFile::new("empty", Vec::new()),
        LegacyFile::new(format!("{}/long.txt", "d".repeat(150)), b"long".to_vec()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.expert");
    write_legacy(&files, &out).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes, legacy_bytes(&files).unwrap(), "deterministic");
    let pkg = read_legacy(&bytes, &limits()).unwrap();
    assert_eq!(pkg.files[0].path, "manifest.json");
    let mut expected = files.clone();
    let m = expected.remove(1);
    expected.insert(0, m);
    assert_eq!(pkg.files, expected);
    // Only the package itself is in the folder (no temp leftovers).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn fixture_rewrite_roundtrip() {
    let pkg = read_legacy(&fixture(), &limits()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("re.expert");
    write_legacy(&pkg.files, &out).unwrap();
    let again = read_legacy(&std::fs::read(&out).unwrap(), &limits()).unwrap();
    assert_eq!(again.files, pkg.files);
    for (a, b) in again.files.iter().zip(&pkg.files) {
        assert_eq!(a.data, b.data);
    }
}

#[test]
fn write_requires_manifest_and_clean_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bad.expert");
    let no_manifest = [LegacyFile::new("a", b"x".to_vec())];
    assert!(matches!(
        write_legacy(&no_manifest, &out),
        Err(LegacyError::MissingManifest)
    ));
    let evil = [
        LegacyFile::new("manifest.json", b"{}".to_vec()),
        LegacyFile::new("../evil", b"x".to_vec()),
    ];
    assert!(matches!(
        write_legacy(&evil, &out),
        Err(LegacyError::PathTraversal { .. })
    ));
    let dup = [
        LegacyFile::new("manifest.json", b"{}".to_vec()),
        LegacyFile::new("./manifest.json", b"{}".to_vec()),
    ];
    assert!(matches!(
        write_legacy(&dup, &out),
        Err(LegacyError::DuplicateEntry { .. })
    ));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn nested_checkpoint_layout() {
    let files = vec![
        LegacyFile::new("model/checkpoint-100/manifest.json", b"{\"a\":1}".to_vec()),
        LegacyFile::new("model/checkpoint-100/adapter_config.json", b"{}".to_vec()),
        LegacyFile::new(
            "model/checkpoint-100/adapter_model.safetensors",
            vec![1u8; 10],
        ),
    ];
    let bytes = legacy_bytes(&files).unwrap();
    let pkg = read_legacy(&bytes, &limits()).unwrap();
    assert_eq!(pkg.root_prefix().as_deref(), Some("model/checkpoint-100"));
    assert_eq!(pkg.manifest_bytes().unwrap(), b"{\"a\":1}");
    assert_eq!(pkg.get("adapter_model.safetensors").unwrap().data.len(), 10);

    // Manifest at the root, weights in two checkpoints: the highest wins.
    let mixed = LegacyPackage {
        files: vec![
            LegacyFile::new("manifest.json", b"{}".to_vec()),
            LegacyFile::new("m/checkpoint-9/adapter_config.json", b"9".to_vec()),
            LegacyFile::new("m/checkpoint-100/adapter_config.json", b"100".to_vec()),
            LegacyFile::new("m/other/adapter_model.safetensors", b"no".to_vec()),
        ],
    };
    assert_eq!(mixed.root_prefix(), None);
    assert_eq!(mixed.get("adapter_config.json").unwrap().data, b"100");
    // The only copy of a name is taken wherever it sits.
    assert_eq!(mixed.get("adapter_model.safetensors").unwrap().data, b"no");

    // Flattening keeps every name, says which copy it ignored, and never
    // drops the adapter.
    let flat = crate::format::loader::flatten(mixed).unwrap();
    let names: Vec<&str> = flat.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "manifest.json",
            "adapter_config.json",
            "adapter_model.safetensors"
        ]
    );
    assert_eq!(
        flat.shadowed,
        ["m/checkpoint-9/adapter_config.json is ignored: m/checkpoint-100/adapter_config.json is used"]
    );
}

#[test]
fn two_copies_no_rule_settles_is_an_error() {
    let two = LegacyPackage {
        files: vec![
            LegacyFile::new("manifest.json", b"{}".to_vec()),
            LegacyFile::new("a/adapter_model.safetensors", b"1".to_vec()),
            LegacyFile::new("b/adapter_model.safetensors", b"2".to_vec()),
        ],
    };
    assert!(two.get("adapter_model.safetensors").is_none());
    match crate::format::loader::flatten(two) {
        Err(LegacyError::AmbiguousFile { name, paths }) => {
            assert_eq!(name, "adapter_model.safetensors");
            assert_eq!(
                paths,
                ["a/adapter_model.safetensors", "b/adapter_model.safetensors"]
            );
        }
        other => panic!("{:?}", other.map(|f| f.shadowed)),
    }
    // Other files no rule settles are all kept, under their full paths.
    let readmes = LegacyPackage {
        files: vec![
            LegacyFile::new("manifest.json", b"{}".to_vec()),
            LegacyFile::new("docs/README.md", b"1".to_vec()),
            LegacyFile::new("examples/README.md", b"2".to_vec()),
        ],
    };
    let flat = crate::format::loader::flatten(readmes).unwrap();
    let names: Vec<&str> = flat.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["manifest.json", "docs/README.md", "examples/README.md"]
    );
    assert!(flat.shadowed.is_empty());
    // Two manifests in unnumbered folders: ambiguous, not "missing".
    let manifests = LegacyPackage {
        files: vec![
            LegacyFile::new("ck-500/manifest.json", b"{}".to_vec()),
            LegacyFile::new("ck-1000/manifest.json", b"{}".to_vec()),
        ],
    };
    assert!(matches!(
        manifests.manifest_bytes(),
        Err(LegacyError::AmbiguousFile { .. })
    ));
}

#[test]
fn refuses_path_traversal() {
    let bytes = hostile(raw_header(b"../evil", EntryType::Regular, 4), b"evil");
    match read_legacy(&bytes, &limits()) {
        Err(LegacyError::PathTraversal { entry }) => assert_eq!(entry, "../evil"),
        r => panic!("{r:?}"),
    }
    let bytes = hostile(raw_header(b"a/../../evil", EntryType::Regular, 4), b"evil");
    assert!(matches!(
        read_legacy(&bytes, &limits()),
        Err(LegacyError::PathTraversal { .. })
    ));
    // Hostile directory names too.
    let bytes = hostile(raw_header(b"../d/", EntryType::Directory, 0), b"");
    assert!(matches!(
        read_legacy(&bytes, &limits()),
        Err(LegacyError::PathTraversal { .. })
    ));
}

#[test]
fn refuses_absolute_path() {
    let bytes = hostile(raw_header(b"/etc/passwd", EntryType::Regular, 4), b"root");
    match read_legacy(&bytes, &limits()) {
        Err(LegacyError::AbsolutePath { entry }) => assert_eq!(entry, "/etc/passwd"),
        r => panic!("{r:?}"),
    }
    let bytes = hostile(raw_header(b"C:/x", EntryType::Regular, 1), b"x");
    assert!(matches!(
        read_legacy(&bytes, &limits()),
        Err(LegacyError::AbsolutePath { .. })
    ));
}

#[test]
fn refuses_links() {
    let mut h = raw_header(b"link", EntryType::Symlink, 0);
    h.set_link_name("/etc/passwd").unwrap();
    h.set_cksum();
    match read_legacy(&hostile(h, b""), &limits()) {
        Err(LegacyError::Link {
            entry,
            kind,
            target,
        }) => {
            assert_eq!(entry, "link");
            assert_eq!(kind, "symbolic link");
            assert_eq!(target, "/etc/passwd");
        }
        r => panic!("{r:?}"),
    }
    let mut h = raw_header(b"hard", EntryType::Link, 0);
    h.set_link_name("manifest.json").unwrap();
    h.set_cksum();
    assert!(matches!(
        read_legacy(&hostile(h, b""), &limits()),
        Err(LegacyError::Link {
            kind: "hard link",
            ..
        })
    ));
}

#[test]
fn refuses_special_files() {
    for kind in [EntryType::Char, EntryType::Block, EntryType::Fifo] {
        let bytes = hostile(raw_header(b"dev", kind, 0), b"");
        assert!(
            matches!(
                read_legacy(&bytes, &limits()),
                Err(LegacyError::SpecialFile { ref entry, .. }) if entry == "dev"
            ),
            "{kind:?}"
        );
    }
}

#[test]
fn refuses_duplicates_and_non_utf8() {
    let bytes = hostile(raw_header(b"./manifest.json", EntryType::Regular, 1), b"x");
    match read_legacy(&bytes, &limits()) {
        Err(LegacyError::DuplicateEntry { entry }) => assert_eq!(entry, "manifest.json"),
        r => panic!("{r:?}"),
    }
    let bytes = hostile(raw_header(b"bad\xff", EntryType::Regular, 1), b"x");
    assert!(matches!(
        read_legacy(&bytes, &limits()),
        Err(LegacyError::NonUtf8Name { .. })
    ));
}

#[test]
fn huge_declared_size_is_refused_before_allocating() {
    let bytes = hostile(raw_header(b"bomb", EntryType::Regular, 1 << 60), b"tiny");
    match read_legacy(&bytes, &limits()) {
        Err(LegacyError::TooLarge {
            entry,
            declared,
            limit,
        }) => {
            assert_eq!(entry, "bomb");
            assert_eq!(declared, 1 << 60);
            assert_eq!(limit, limits().max_file_bytes);
        }
        r => panic!("{r:?}"),
    }
    // Within the per-file limit but over the total limit.
    let small = LegacyLimits {
        max_total_bytes: 100,
        max_file_bytes: 1 << 40,
        max_entries: 10,
    };
    let bytes = hostile(raw_header(b"big", EntryType::Regular, 1 << 30), b"tiny");
    assert!(matches!(
        read_legacy(&bytes, &small),
        Err(LegacyError::TotalTooLarge { .. })
    ));
}

#[test]
fn declared_size_larger_than_data_is_truncation() {
    let bytes = hostile(raw_header(b"short", EntryType::Regular, 100_000), b"tiny");
    let err = read_legacy(&bytes, &limits()).unwrap_err();
    assert!(
        matches!(
            err,
            LegacyError::TruncatedEntry { .. } | LegacyError::Tar(_)
        ),
        "{err:?}"
    );
}

#[test]
fn too_many_entries() {
    let files: Vec<LegacyFile> = std::iter::once(LegacyFile::new("manifest.json", b"{}".to_vec()))
        .chain((0..5).map(|i| LegacyFile::new(format!("f{i}"), vec![])))
        .collect();
    let bytes = legacy_bytes(&files).unwrap();
    let l = LegacyLimits {
        max_entries: 3,
        ..limits()
    };
    assert!(matches!(
        read_legacy(&bytes, &l),
        Err(LegacyError::TooManyEntries { limit: 3 })
    ));
}

#[test]
fn decompression_bomb_is_capped() {
    // A 4 MiB long-name header (read whole by the tar crate, before we
    // see the entry) against small limits.
    let mut tar = Vec::new();
    let name = vec![b'a'; 4 << 20];
    let mut h = raw_header(b"././@LongLink", EntryType::GNULongName, name.len() as u64);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    tar.extend_from_slice(&name);
    pad(&mut tar);
    let f = raw_header(b"x", EntryType::Regular, 0);
    tar.extend_from_slice(f.as_bytes());
    tar.extend_from_slice(&[0u8; 1024]);
    let l = LegacyLimits {
        max_total_bytes: 0,
        max_file_bytes: 0,
        max_entries: 5,
    };
    let err = read_legacy(&gz(&tar), &l).unwrap_err();
    assert!(
        matches!(err, LegacyError::ArchiveTooLarge { .. }),
        "{err:?}"
    );
}

#[test]
fn truncated_gzip_and_tar() {
    let bytes = fixture();
    let half = &bytes[..bytes.len() / 2];
    let err = read_legacy(half, &limits()).unwrap_err();
    assert!(matches!(err, LegacyError::Gzip(_)), "{err:?}");

    // Cut just the gzip trailer.
    let cut = &bytes[..bytes.len() - 4];
    let err = read_legacy(cut, &limits()).unwrap_err();
    assert!(matches!(err, LegacyError::Gzip(_)), "{err:?}");

    // A well-formed gzip of a tar cut mid-header.
    let files = [LegacyFile::new("manifest.json", b"{}".to_vec())];
    let mut raw = Vec::new();
    write_to(&files, &plan(&files).unwrap(), &mut raw).unwrap();
    let mut d = GzDecoder::new(raw.as_slice());
    let mut tar = Vec::new();
    d.read_to_end(&mut tar).unwrap();
    let err = read_legacy(&gz(&tar[..700]), &limits()).unwrap_err();
    assert!(matches!(err, LegacyError::Tar(_)), "{err:?}");
    // Cut at a block boundary right after the data: no end marker.
    let err = read_legacy(&gz(&tar[..1024]), &limits()).unwrap_err();
    assert!(matches!(err, LegacyError::Tar(_)), "{err:?}");

    assert!(matches!(
        read_legacy(b"PK\x03\x04", &limits()),
        Err(LegacyError::Gzip(_))
    ));
    assert!(matches!(
        read_legacy(b"", &limits()),
        Err(LegacyError::Gzip(_))
    ));
    assert!(!is_gzip(b"\x1f"));
    assert!(is_gzip(&bytes));
}

#[test]
fn no_panic_on_prefixes_and_bitflips() {
    let bytes = fixture();
    // The small prefixes plus 40 spread over the file: none may panic.
    let step = (bytes.len() / 40).max(1);
    for n in (0..64).chain((64..bytes.len()).step_by(step)) {
        let _ = read_legacy(&bytes[..n], &limits());
    }
    let small = legacy_bytes(&[LegacyFile::new("manifest.json", b"{}".to_vec())]).unwrap();
    for i in 0..small.len() {
        let mut b = small.clone();
        b[i] ^= 0x5a;
        let _ = read_legacy(&b, &limits());
    }
}

#[test]
fn gzip_header_extras_are_named() {
    use std::io::Write;
    let make = |builder: flate2::GzBuilder| {
        let mut enc = builder.write(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"payload").unwrap();
        enc.finish().unwrap()
    };
    assert_eq!(
        super::gzip_header_extras(&make(flate2::GzBuilder::new())),
        None
    );
    assert_eq!(
        super::gzip_header_extras(&make(flate2::GzBuilder::new().filename("a.tar"))),
        None,
        "a file name is what gzip writes"
    );
    let both = make(
        flate2::GzBuilder::new()
            .extra(vec![7u8; 100])
            .filename("a.tar")
            .comment("hidden words"),
    );
    assert_eq!(
        super::gzip_header_extras(&both).as_deref(),
        Some("the gzip header carries a 100-byte extra field and a 12-byte comment, which no reader of the package sees")
    );
    // Cut headers never panic.
    for n in 0..both.len().min(140) {
        let _ = super::gzip_header_extras(&both[..n]);
    }
}

/// A PAX record line: `"<len> key=value\n"`, the length counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// A package whose one member carries the given PAX records.
fn with_pax(records: &[(&str, &str)]) -> Vec<u8> {
    let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
    let mut tar = Vec::new();
    let xh = raw_header(
        b"PaxHeader/manifest.json",
        EntryType::XHeader,
        data.len() as u64,
    );
    tar.extend_from_slice(xh.as_bytes());
    tar.extend_from_slice(&data);
    pad(&mut tar);
    let m = b"{}";
    let mh = raw_header(b"manifest.json", EntryType::Regular, m.len() as u64);
    tar.extend_from_slice(mh.as_bytes());
    tar.extend_from_slice(m);
    pad(&mut tar);
    tar.extend_from_slice(&[0u8; 1024]);
    gz(&tar)
}

#[test]
fn pax_records_tools_write_pass_and_payloads_are_hidden_data() {
    // What GNU tar, bsdtar on macOS and Python's tarfile write.
    let usual = with_pax(&[
        ("mtime", "1700000000.5"),
        ("LIBARCHIVE.xattr.com.apple.provenance", "AQAAAAAAAAA"),
        ("SCHILY.xattr.user.note", "x"),
        ("uname", "ana"),
    ]);
    let pkg = read_legacy(&usual, &limits()).unwrap();
    assert_eq!(pkg.manifest_bytes().unwrap(), b"{}");
    let comment = with_pax(&[("comment", &"z".repeat(5000))]);
    match read_legacy(&comment, &limits()) {
        Err(LegacyError::HiddenData { bytes, .. }) => assert_eq!(bytes, 5000),
        other => panic!("{other:?}"),
    }
    let bulky = with_pax(&[("SCHILY.xattr.user.blob", &"z".repeat(70_000))]);
    assert!(matches!(
        read_legacy(&bulky, &limits()),
        Err(LegacyError::HiddenData { .. })
    ));
}
