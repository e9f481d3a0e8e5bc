//! Hostile inputs and environments, one test per class: writes through
//! links and privileged modes, the temp-file sweep, stripped signatures,
//! output names that climb out of their folder, control characters, special
//! files, hidden data in legacy packages, size bombs, trust at load.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use expertui::format::package::{ExpertContents, PackageOptions};
use expertui::format::ExpertReader;
use serde_json::Value;

const DEMO: &str = "assets/demo.expert";
const LORA: &str = "tests/fixtures/minilm-lora-r8";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::cargo_bin("expertui")
        .unwrap()
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env_remove("EXPERTUI_POLICY")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().expect("exited normally"),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(stdout: &[u8]) -> Value {
    serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(stdout)))
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
fn set_mode(p: &Path, m: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("k");
    let (code, _, err) = run(&["--headless", "keygen", "-o", s(&key)]);
    assert_eq!(code, 0, "{err}");
    (key.clone(), dir.join("k.pub"))
}

// ---------------------------------------------------------------------------
// 1. Links and modes: every writer refuses a link as its output and never
//    gives its output setuid, setgid or sticky.

#[cfg(unix)]
#[test]
fn writers_refuse_links_and_never_copy_privileged_modes() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let victim = d("victim");
    std::fs::write(&victim, b"precious").unwrap();
    set_mode(&victim, 0o4755);
    let (key, _) = keygen(dir.path());
    let signed = d("signed.expert");
    std::fs::copy(root().join(DEMO), &signed).unwrap();
    let (code, _, err) = run(&["--headless", "sign", s(&signed), "--key", s(&key)]);
    assert_eq!(code, 0, "{err}");
    let link = d("out");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let writers: Vec<Vec<&str>> = vec![
        vec!["--headless", "extract", DEMO, "LICENSE", "-o", s(&link)],
        vec!["--headless", "sign", DEMO, "--key", s(&key), "-o", s(&link)],
        vec![
            "--headless",
            "package",
            LORA,
            "-o",
            s(&link),
            "--no-sidecar",
        ],
        vec!["--headless", "convert", DEMO, "-o", s(&link)],
        vec![
            "--headless",
            "convert",
            DEMO,
            "-o",
            s(&link),
            "--to",
            "tar.gz",
        ],
        vec!["--headless", "keygen", "-o", s(&link), "--force"],
    ];
    for args in &writers {
        let (code, _, err) = run(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("symbolic link"), "{args:?}: {err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{args:?}");
        assert_eq!(mode(&victim), 0o4755, "{args:?}");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }
    // `sign LINK` in place: refused, the real file keeps its signature state.
    let in_place = d("inplace");
    std::os::unix::fs::symlink(&signed, &in_place).unwrap();
    let before = std::fs::read(&signed).unwrap();
    let (code, _, err) = run(&["--headless", "sign", s(&in_place), "--key", s(&key)]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(std::fs::read(&signed).unwrap(), before);
    // A link to a folder (world-writable, sticky) is refused as well.
    let sticky = d("sticky");
    std::fs::create_dir(&sticky).unwrap();
    set_mode(&sticky, 0o1777);
    let to_dir = d("to-dir");
    std::os::unix::fs::symlink(&sticky, &to_dir).unwrap();
    let (code, _, _) = run(&[
        "--headless",
        "sign",
        DEMO,
        "--key",
        s(&key),
        "-o",
        s(&to_dir),
    ]);
    assert_eq!(code, 1);
    // Replacing a real setuid / sticky file keeps rwx bits only.
    for privileged in [0o4755, 0o2775, 0o1777, 0o6750] {
        let out = d(&format!("priv-{privileged:o}"));
        std::fs::write(&out, b"old").unwrap();
        set_mode(&out, privileged);
        let (code, _, err) = run(&["--headless", "extract", DEMO, "LICENSE", "-o", s(&out)]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(mode(&out), privileged & 0o777, "{privileged:o}");
    }
}

// ---------------------------------------------------------------------------
// 6. The temp-file sweep removes only this tool's own leftovers.

#[cfg(unix)]
#[test]
fn temp_sweep_leaves_users_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let users = [
        ".notes.txt.draft.tmp",
        ".notes.txt.abcdef.tmp",
        ".notes.txt.expertui-toolong1.tmp",
        ".notes.txt.expertui-ab.tmp",
    ];
    for name in users {
        std::fs::write(d(name), b"mine").unwrap();
    }
    // A leftover of a killed expertui writer (nobody holds its lock).
    let own = d(".notes.txt.expertui-Ab12Cd.tmp");
    std::fs::write(&own, b"stale").unwrap();
    let (code, _, err) = run(&[
        "--headless",
        "extract",
        DEMO,
        "LICENSE",
        "-o",
        s(&d("notes.txt")),
    ]);
    assert_eq!(code, 0, "{err}");
    for name in users {
        assert_eq!(std::fs::read(d(name)).unwrap(), b"mine", "{name}");
    }
    assert!(!own.exists(), "own stale temp swept");
}

// ---------------------------------------------------------------------------
// 3. A stripped signature never passes a trust flag.

#[test]
fn stripped_signature_fails_every_trust_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let signed = dir.path().join("signed.expert");
    let (code, _, err) = run(&[
        "--headless",
        "package",
        LORA,
        "-o",
        s(&signed),
        "--sign",
        s(&key),
        "--no-sidecar",
    ]);
    assert_eq!(code, 0, "{err}");
    // Strip: the same sections without signature and certificates, root recomputed.
    let reader = ExpertReader::open(&signed).unwrap();
    let contents = ExpertContents::read_binary(&reader).unwrap();
    let stripped = dir.path().join("stripped.expert");
    contents
        .write_binary(&stripped, &PackageOptions::default(), &mut |_, _| {})
        .unwrap();
    let (code, _, _) = run(&["--headless", "validate", s(&stripped)]);
    assert_eq!(code, 0, "an unsigned file is valid without a policy");
    for flags in [
        vec!["--pubkey", s(&public)],
        vec!["--trust", s(&public)],
        vec!["--require-signature"],
    ] {
        let mut args = vec!["--headless", "validate", s(&stripped), "--json"];
        args.extend(flags.iter().copied());
        let (code, out, err) = run(&args);
        assert_eq!(code, 3, "{flags:?}: {err}");
        assert_eq!(json(&out)["signature"]["state"], "unsigned");
    }
    // The same through a policy file, and through EXPERTUI_POLICY.
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"trust": ["k.pub"]}"#).unwrap();
    let (code, _, err) = run(&[
        "--headless",
        "validate",
        s(&stripped),
        "--policy",
        s(&policy),
    ]);
    assert_eq!(code, 3, "{err}");
    let out = Command::cargo_bin("expertui")
        .unwrap()
        .env("EXPERTUI_POLICY", &policy)
        .args(["--headless", "validate", s(&stripped)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let out = Command::cargo_bin("expertui")
        .unwrap()
        .env("EXPERTUI_POLICY", &policy)
        .args(["--headless", "validate", s(&signed)])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A typo in a policy file does not silently weaken it.
    std::fs::write(&policy, r#"{"requre_signature": true}"#).unwrap();
    let (code, _, err) = run(&["--headless", "validate", s(&signed), "--policy", s(&policy)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unknown field"), "{err}");
}

// ---------------------------------------------------------------------------
// 4. Batch outputs stay inside OUT; two inputs for one output write nothing.

#[test]
fn batch_convert_names_stay_inside_the_output_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let inputs = d("in");
    std::fs::create_dir_all(inputs.join("a")).unwrap();
    std::fs::create_dir_all(inputs.join("b")).unwrap();
    for name in ["...expert", "..", ".hidden.expert", "weird\u{1b}[2J.expert"] {
        let path = inputs.join("a").join(name);
        if name == ".." {
            continue;
        }
        std::fs::copy(root().join(DEMO), &path).unwrap();
    }
    let out = d("out");
    let sources: Vec<PathBuf> = ["...expert", ".hidden.expert", "weird\u{1b}[2J.expert"]
        .iter()
        .map(|n| inputs.join("a").join(n))
        .collect();
    let mut args = vec!["--headless", "convert"];
    args.extend(sources.iter().map(|p| s(p)));
    args.extend(["-o", s(&out), "--to", "peft"]);
    let (code, stdout, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    // Everything written is a plain entry of OUT; nothing beside it.
    let written: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written.len(), 3, "{written:?}");
    for name in &written {
        assert!(
            !name.starts_with('.') && !name.contains('\u{1b}'),
            "{written:?}"
        );
    }
    assert!(!dir.path().join("adapter_config.json").exists());
    assert!(
        !String::from_utf8_lossy(&stdout).contains('\u{1b}'),
        "escaped on stdout"
    );

    // Two inputs with one base name: refused before anything is written.
    std::fs::copy(root().join(DEMO), inputs.join("a/same.expert")).unwrap();
    std::fs::copy(root().join(DEMO), inputs.join("b/same.expert")).unwrap();
    let clash = d("clash");
    let (code, _, err) = run(&[
        "--headless",
        "convert",
        s(&inputs.join("a/same.expert")),
        s(&inputs.join("b/same.expert")),
        "-o",
        s(&clash),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("would both be written"), "{err}");
    assert!(!clash.exists(), "nothing written, not even the folder");
}

// ---------------------------------------------------------------------------
// 5. Control characters from a file never reach the terminal raw.

/// The demo with its LICENSE section renamed to `name` in the TOC (the
/// writer refuses such names; a crafted file has them), root recomputed.
fn demo_with_section_name(dir: &Path, name: &str) -> PathBuf {
    let reader = ExpertReader::open(root().join(DEMO)).unwrap();
    let mut contents = ExpertContents::read_binary(&reader).unwrap();
    let placeholder = "Q".repeat(name.len());
    let file = contents
        .files
        .iter_mut()
        .find(|f| f.name == "LICENSE")
        .unwrap();
    file.name = placeholder.clone();
    let out = dir.join("named.expert");
    contents
        .write_binary(&out, &PackageOptions::default(), &mut |_, _| {})
        .unwrap();
    let mut bytes = std::fs::read(&out).unwrap();
    let (toc, count) = {
        let r = ExpertReader::open(&out).unwrap();
        (r.header().toc_offset.get() as usize, r.sections().len())
    };
    let toc_end = toc + count * 128;
    let at = toc
        + bytes[toc..toc_end]
            .windows(placeholder.len())
            .position(|w| w == placeholder.as_bytes())
            .unwrap();
    bytes[at..at + name.len()].copy_from_slice(name.as_bytes());
    let root = expertui::format::digests::root_digest(&bytes[..128], &bytes[toc..toc_end]);
    bytes[48..80].copy_from_slice(&root);
    std::fs::write(&out, &bytes).unwrap();
    out
}

#[test]
fn control_characters_in_names_are_escaped_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = "LIC\u{1b}[2J\u{1b}[Hvalid\u{202e}";
    let file = demo_with_section_name(dir.path(), hostile);
    for args in [
        vec!["--headless", "info", s(&file)],
        vec!["--headless", "validate", s(&file), "--list-sections"],
        vec![s(&file)],
        vec![
            "--headless",
            "extract",
            s(&file),
            hostile,
            "-o",
            s(&dir.path().join("x")),
        ],
    ] {
        let (code, stdout, err) = run(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        for (what, text) in [
            ("stdout", String::from_utf8_lossy(&stdout).into_owned()),
            ("stderr", err.clone()),
        ] {
            assert!(
                !text.contains('\u{1b}') && !text.contains('\u{202e}'),
                "{args:?} {what}: {text:?}"
            );
        }
        let all = format!("{}{err}", String::from_utf8_lossy(&stdout));
        assert!(all.contains("\\u{1b}[2J"), "{args:?}: shown escaped: {all}");
    }
    let (_, stdout, _) = run(&["--headless", "validate", s(&file), "--json"]);
    let v = json(&stdout);
    assert!(v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["code"] == "container.section-name-control" && f["severity"] == "warning"));
}

// ---------------------------------------------------------------------------
// 9. Special files, folders, exit codes of corrupt content.

#[cfg(unix)]
#[test]
fn special_files_and_folders_are_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let folder = dir.path().to_path_buf();
    for (path, says) in [(&fifo, "not a regular file"), (&folder, "is a folder")] {
        for args in [
            vec!["--headless", "validate", s(path)],
            vec!["--headless", "info", s(path)],
            vec![s(path)],
            vec!["--headless", "extract", s(path), "x", "-o", "/dev/null"],
            vec![
                "--headless",
                "convert",
                s(path),
                "-o",
                s(&dir.path().join("o.expert")),
            ],
            vec![
                "--headless",
                "fuse",
                s(path),
                "--base",
                "x",
                "-o",
                s(&dir.path().join("o.st")),
            ],
        ] {
            let out = Command::cargo_bin("expertui")
                .unwrap()
                .args(&args)
                .timeout(std::time::Duration::from_secs(20))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }
}

#[test]
fn integer_adapter_tensors_are_refused_at_package() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    std::fs::copy(
        root().join(LORA).join("adapter_config.json"),
        adapter.join("adapter_config.json"),
    )
    .unwrap();
    // The LoRA fixture's tensors, with every lora_A made I32 (same bytes).
    let bytes = std::fs::read(root().join(LORA).join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            let dtype = if name.contains("lora_A") {
                safetensors::Dtype::I32
            } else {
                v.dtype()
            };
            (
                name,
                safetensors::tensor::TensorView::new(dtype, v.shape().to_vec(), v.data()).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &adapter.join("adapter_model.safetensors"))
        .unwrap();
    let out = dir.path().join("int.expert");
    let (code, _, err) = run(&["--headless", "package", s(&adapter), "-o", s(&out)]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("floating point"), "{err}");
    assert!(!out.exists());
}

// ---------------------------------------------------------------------------
// 8. Legacy packages with hidden data are refused, in every verb.

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// `tar` with a few bytes written into the zero padding after the first
/// member whose size is not a multiple of 512.
fn tar_with_bytes_in_padding(tar: &[u8]) -> Vec<u8> {
    let mut out = tar.to_vec();
    let mut header = 0usize;
    loop {
        let field = std::str::from_utf8(&tar[header + 124..header + 136]).unwrap();
        let size =
            usize::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap();
        let data = header + 512;
        if size % 512 != 0 {
            out[data + size..data + size + 6].copy_from_slice(b"secret");
            return out;
        }
        header = data + size;
    }
}

#[test]
fn legacy_hidden_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let legacy =
        std::fs::read(root().join("tests/fixtures/minilm-sql-dora.v0.3.0.expert")).unwrap();
    let tar = gunzip(&legacy);
    let mut after_end = tar.clone();
    after_end.extend_from_slice(b"secret payload after the end-of-archive blocks");
    let mut zero_padded = tar.clone();
    zero_padded.extend(std::iter::repeat_n(0u8, 10240));
    let mut trailing = legacy.clone();
    trailing.extend_from_slice(b"appended bytes");
    let mut two_members = legacy.clone();
    two_members.extend(gzip(b"a whole second archive"));
    let in_padding = tar_with_bytes_in_padding(&tar);
    for (name, bytes, hidden) in [
        ("in-padding", gzip(&in_padding), true),
        ("zero-padded", gzip(&zero_padded), false),
        ("after-end", gzip(&after_end), true),
        ("trailing", trailing, true),
        ("two-members", two_members, true),
    ] {
        let path = dir.path().join(format!("{name}.expert"));
        std::fs::write(&path, &bytes).unwrap();
        let (code, stdout, err) = run(&["--headless", "validate", s(&path), "--json"]);
        let v = json(&stdout);
        let out = dir.path().join(format!("{name}.v2.expert"));
        let (convert, _, _) = run(&["--headless", "convert", s(&path), "-o", s(&out)]);
        if hidden {
            assert_eq!(code, 3, "{name}: {err}");
            assert!(
                v["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["code"] == "legacy.hidden-data"),
                "{name}: {v}"
            );
            assert_eq!(convert, 3, "{name}");
            assert!(!out.exists(), "{name}");
        } else {
            assert_eq!(code, 0, "{name}: {err}");
            assert_eq!(convert, 0, "{name}");
        }
    }
}

// ---------------------------------------------------------------------------
// 7. `sign` signs only what `validate` accepts, and writes nothing otherwise.

/// The demo with its manifest replaced by a zstd frame cut short (the TOC
/// digest matches the cut bytes; only decoding can tell).
fn demo_with_truncated_manifest(dir: &Path) -> PathBuf {
    use expertui::format::layout::{Header, TocEntry, TOC_ENTRY_SIZE};
    use expertui::format::{ExpertWriter, SectionSpec, SectionType, WriterOptions};
    use zerocopy::{FromBytes, IntoBytes};
    let reader = ExpertReader::open(root().join(DEMO)).unwrap();
    let manifest = reader
        .section_named(SectionType::Manifest, "manifest.json")
        .unwrap()
        .to_vec();
    let frame = zstd::encode_all(&manifest[..], 3).unwrap();
    let cut = &frame[..frame.len() / 2];
    let path = dir.join("cut.expert");
    let mut w = ExpertWriter::create(&path, WriterOptions::default()).unwrap();
    w.add_section(SectionSpec::new(SectionType::Blob, "manifest.json"), cut)
        .unwrap();
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let mut header = Header::read_from_prefix(&bytes[..]).unwrap().0;
    let toc_start = header.toc_offset.get() as usize;
    let mut entry =
        TocEntry::read_from_bytes(&bytes[toc_start..toc_start + TOC_ENTRY_SIZE]).unwrap();
    entry.section_type.set(SectionType::Manifest.code());
    entry.codec = expertui::format::Codec::Zstd.code();
    entry.raw_len.set(manifest.len() as u64);
    let toc = entry.as_bytes().to_vec();
    header.root_digest = expertui::format::digests::root_digest(header.as_bytes(), &toc);
    let mut out = bytes[..toc_start].to_vec();
    out[..128].copy_from_slice(header.as_bytes());
    out.extend_from_slice(&toc);
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn sign_refuses_what_validate_rejects_and_leaves_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keygen(dir.path());
    let cut = demo_with_truncated_manifest(dir.path());
    let (code, _, err) = run(&["--headless", "validate", s(&cut), "--verify-integrity"]);
    assert_eq!(code, 3, "{err}");
    let out = dir.path().join("existing.expert");
    std::fs::write(&out, b"keep me").unwrap();
    let (code, _, err) = run(&[
        "--headless",
        "sign",
        s(&cut),
        "--key",
        s(&key),
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not signed"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let before = std::fs::read(&cut).unwrap();
    let (code, _, _) = run(&["--headless", "sign", s(&cut), "--key", s(&key)]);
    assert_eq!(code, 3);
    assert_eq!(std::fs::read(&cut).unwrap(), before, "in place: untouched");
}

// ---------------------------------------------------------------------------
// 10. Trust where tensors are used: fuse, bench, the loader, the manager.

const BASE: &str = "tests/fixtures/merge/base-layer0-subset.safetensors";

#[test]
fn fuse_enforces_the_trust_policy_and_writes_nothing_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let other = dir.path().join("other");
    let (code, _, _) = run(&["--headless", "keygen", "-o", s(&other)]);
    assert_eq!(code, 0);
    let signed = dir.path().join("signed.expert");
    let (code, _, err) = run(&[
        "--headless",
        "package",
        LORA,
        "-o",
        s(&signed),
        "--sign",
        s(&key),
        "--no-sidecar",
    ]);
    assert_eq!(code, 0, "{err}");
    let unsigned = dir.path().join("unsigned.expert");
    let (code, _, _) = run(&[
        "--headless",
        "package",
        LORA,
        "-o",
        s(&unsigned),
        "--no-sidecar",
    ]);
    assert_eq!(code, 0);
    let legacy = root().join("tests/fixtures/minilm-sql-dora.v0.3.0.expert");
    let out = dir.path().join("merged.safetensors");
    let fuse = |file: &Path, flags: &[&str]| {
        let mut args = vec!["--headless", "fuse", s(file), "--base", BASE, "-o", s(&out)];
        args.extend_from_slice(flags);
        run(&args)
    };
    let other_pub = dir.path().join("other.pub");
    for (file, flags, admitted) in [
        (&unsigned, vec![], true),
        (&unsigned, vec!["--require-signature"], false),
        (&unsigned, vec!["--pubkey", s(&public)], false),
        (&signed, vec!["--pubkey", s(&public)], true),
        (
            &signed,
            vec!["--trust", s(&public), "--require-signature"],
            true,
        ),
        (&signed, vec!["--pubkey", s(&other_pub)], false),
        (&signed, vec!["--require-signature"], false), // signed, but by nobody trusted
        (&legacy, vec!["--require-signature"], false),
    ] {
        let _ = std::fs::remove_file(&out);
        let (code, _, err) = fuse(file, &flags);
        if admitted {
            assert_eq!(code, 0, "{file:?} {flags:?}: {err}");
            assert!(out.exists());
        } else {
            assert_eq!(code, 3, "{file:?} {flags:?}: {err}");
            assert!(err.contains("trust policy"), "{err}");
            assert!(!out.exists(), "{file:?} {flags:?}: nothing written");
        }
    }
    // bench refuses the same way, before measuring anything.
    let (code, _, err) = run(&["--headless", "bench", s(&unsigned), "--require-signature"]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn the_loading_api_admits_by_policy() {
    use expertui::format::loader::ExpertLoader;
    use expertui::format::signing::Policy;
    use expertui::gpu::{AdapterWeights, ExpertManager, LoadOptions, ManagerConfig, RuntimeError};
    let dir = tempfile::tempdir().unwrap();
    let unsigned = dir.path().join("u.expert");
    let (code, _, _) = run(&[
        "--headless",
        "package",
        LORA,
        "-o",
        s(&unsigned),
        "--no-sidecar",
    ]);
    assert_eq!(code, 0);
    let mut policy = Policy::new();
    policy.require_signature = true;
    let legacy = root().join("tests/fixtures/minilm-sql-dora.v0.3.0.expert");
    for path in [&unsigned, &legacy] {
        assert!(matches!(
            ExpertLoader::open_admitted(path, &policy),
            Err(expertui::format::package::PackageError::Untrusted(_))
        ));
        assert!(ExpertLoader::open_admitted(path, &Policy::new()).is_ok());
    }
    let options = LoadOptions {
        trust: Some(std::sync::Arc::new(policy)),
        ..LoadOptions::default()
    };
    assert!(matches!(
        AdapterWeights::open(&unsigned, &options),
        Err(RuntimeError::Untrusted(_))
    ));
    let mut manager = ExpertManager::new(ManagerConfig {
        load: options,
        ..ManagerConfig::default()
    });
    manager.register("u", &unsigned).unwrap();
    assert!(matches!(manager.load("u"), Err(RuntimeError::Untrusted(_))));
    assert!(!manager.is_loaded("u"));
}

/// Rebuilds the fixture legacy package with every file but the manifest
/// moved by `relocate`; written without a sidecar.
fn legacy_relaid(dir: &Path, name: &str, relocate: impl Fn(&str) -> String) -> PathBuf {
    use expertui::format::legacy::{legacy_bytes, read_legacy, LegacyFile, LegacyLimits};
    let bytes = std::fs::read(root().join("tests/fixtures/minilm-sql-dora.v0.3.0.expert")).unwrap();
    let package = read_legacy(&bytes, &LegacyLimits::for_package(bytes.len() as u64)).unwrap();
    let files: Vec<LegacyFile> = package
        .files
        .into_iter()
        .map(|f| {
            let base = f.basename().to_string();
            let path = if base == "manifest.json" {
                base
            } else {
                relocate(&base)
            };
            LegacyFile::new(path, f.data)
        })
        .collect();
    let out = dir.join(name);
    std::fs::write(&out, legacy_bytes(&files).unwrap()).unwrap();
    out
}

#[test]
fn legacy_files_in_a_subfolder_are_carried_or_refused_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    // The manifest at the root, everything else under `weights/`: the only
    // copy of each name is taken, so the adapter reaches the v2 file.
    let moved = legacy_relaid(dir.path(), "moved.expert", |b| format!("weights/{b}"));
    let out = dir.path().join("moved.v2.expert");
    let (code, _, err) = run(&["--headless", "convert", s(&moved), "-o", s(&out)]);
    assert_eq!(code, 0, "{err}");
    let reader = ExpertReader::open(&out).unwrap();
    let types: Vec<String> = reader
        .sections()
        .iter()
        .map(|s| format!("{:?}", s.kind))
        .collect();
    for wanted in ["AdapterConfig", "Tensors", "Grammar"] {
        assert!(types.iter().any(|t| t == wanted), "{wanted} in {types:?}");
    }

    // Two copies of every file in unnumbered folders: nothing says which
    // one is meant, so the package is refused instead of losing one.
    let twice = legacy_relaid(dir.path(), "twice.expert", |b| format!("a/{b}"));
    let package = std::fs::read(&twice).unwrap();
    let mut files = expertui::format::legacy::read_legacy(
        &package,
        &expertui::format::legacy::LegacyLimits::for_package(package.len() as u64),
    )
    .unwrap()
    .files;
    let copies: Vec<_> = files
        .iter()
        .filter(|f| f.path.starts_with("a/"))
        .map(|f| {
            expertui::format::legacy::LegacyFile::new(
                f.path.replacen("a/", "b/", 1),
                f.data.clone(),
            )
        })
        .collect();
    files.extend(copies);
    std::fs::write(
        &twice,
        expertui::format::legacy::legacy_bytes(&files).unwrap(),
    )
    .unwrap();
    let out = dir.path().join("twice.v2.expert");
    let (code, _, err) = run(&["--headless", "convert", s(&twice), "-o", s(&out)]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("nothing says which one"), "{err}");
    assert!(!out.exists());
    let (code, stdout, _) = run(&["--headless", "validate", s(&twice), "--json"]);
    assert_eq!(code, 3);
    assert!(
        String::from_utf8_lossy(&stdout).contains("legacy.ambiguous-file"),
        "{}",
        String::from_utf8_lossy(&stdout)
    );
}

#[test]
fn writers_refuse_text_that_readers_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let readme = dir.path().join("big.md");
    std::fs::write(&readme, vec![b'a'; (16 << 20) + 1]).unwrap();
    let out = dir.path().join("big.expert");
    let (code, _, err) = run(&[
        "--headless",
        "package",
        LORA,
        "-o",
        s(&out),
        "--readme",
        s(&readme),
        "--no-sidecar",
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("exceeds the reader limit"), "{err}");
    assert!(!out.exists(), "no file the reader refuses");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp left"
    );
}
