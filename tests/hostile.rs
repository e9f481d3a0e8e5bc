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
