//! Runs every program of `examples/` against the fixtures and checks what it
//! wrote with the library. Cargo builds the examples before it runs the
//! integration tests of a plain `cargo test`; with a target filter
//! (`cargo test --test examples`) build them first with `cargo build --examples`.

use std::path::{Path, PathBuf};
use std::process::Command;

use expertui::format::manifest::validate_manifest_bytes;
use expertui::format::signing::{verify, Policy, PublicKey};
use expertui::format::{ExpertReader, SectionType};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `target/<profile>/examples/<name>`, found from this test binary
/// (`target/<profile>/deps/examples-<hash>`).
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lies in target/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "example binary {} is missing: run `cargo build --examples` (or a plain `cargo test`, which builds them) first",
        path.display()
    );
    path
}

/// Runs an example; asserts it succeeded and returns its stdout.
fn run(name: &str, args: &[&Path]) -> String {
    let output = Command::new(example_binary(name))
        .args(args)
        .output()
        .expect("example starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "example {name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    stdout
}

/// Opens a file, checks every section digest and the manifest rules.
fn validate(path: &Path) -> (ExpertReader, serde_json::Value) {
    let reader = ExpertReader::open(path)
        .unwrap_or_else(|e| panic!("{} does not open: {e}", path.display()));
    reader
        .verify_all()
        .unwrap_or_else(|e| panic!("{} is damaged: {e}", path.display()));
    let info = reader
        .first(SectionType::Manifest)
        .expect("manifest section");
    let bytes = reader.section(info.index).unwrap().to_vec();
    validate_manifest_bytes(&bytes).expect("manifest follows the rules");
    let manifest = serde_json::from_slice(&bytes).unwrap();
    (reader, manifest)
}

#[test]
fn convert_legacy_writes_a_valid_binary_expert() {
    let out = tempfile::tempdir().unwrap();
    let legacy = fixtures().join("minilm-sql-dora.v0.3.0.expert");
    let stdout = run("convert_legacy", &[&legacy, out.path()]);
    assert!(
        stdout.contains("legacy tar.gz expert (deprecated)"),
        "{stdout}"
    );
    assert!(stdout.contains("validated:"), "{stdout}");
    let converted = out.path().join("minilm-sql-dora.v0.3.0.v2.expert");
    let (reader, manifest) = validate(&converted);
    assert_eq!(manifest["name"], "expert-sql-minilm");
    assert_eq!(manifest["version"], "0.3.0");
    // The adapter, grammar, licence and README all came across.
    assert!(reader.find_all(SectionType::Tensors).count() >= 2);
    for kind in [
        SectionType::AdapterConfig,
        SectionType::Grammar,
        SectionType::License,
        SectionType::Docs,
    ] {
        assert!(reader.first(kind).is_some(), "{kind:?} missing");
    }
}

#[test]
fn osd_compress_writes_a_smaller_valid_expert() {
    let out = tempfile::tempdir().unwrap();
    let adapter = fixtures().join("minilm-lora-r8");
    let stdout = run(
        "osd_compress",
        &[
            &adapter,
            out.path(),
            Path::new("--rank"),
            Path::new("4"),
            Path::new("--dtype"),
            Path::new("bf16"),
        ],
    );
    assert!(stdout.contains("compressed 12 modules"), "{stdout}");
    let compressed = out.path().join("osd-r4-bf16.expert");
    let (reader, manifest) = validate(&compressed);
    assert!(reader.find_all(SectionType::Osd).count() > 0);
    // Every LoRA module went into OSD sections: no tensor section is left.
    assert_eq!(reader.find_all(SectionType::Tensors).count(), 0);
    assert_eq!(manifest["osd"]["rank"], 4);
    assert_eq!(manifest["osd"]["modules"], 12);
    let error = manifest["osd"]["rel_error"].as_f64().unwrap();
    assert!(error > 0.0 && error < 1.0, "relative error {error}");
    let plain = std::fs::metadata(out.path().join("plain.expert"))
        .unwrap()
        .len();
    let small = std::fs::metadata(&compressed).unwrap().len();
    assert!(small < plain, "{small} bytes is not below {plain}");
}

#[test]
fn custom_section_survives_reading_and_conversion() {
    let out = tempfile::tempdir().unwrap();
    let adapter = fixtures().join("minilm-lora-r8");
    let stdout = run("custom_section", &[&adapter, out.path()]);
    assert!(stdout.contains("byte-identical: true"), "{stdout}");
    let custom = SectionType::Custom(0x8042);
    let payload = |name: &str| {
        let (reader, _) = validate(&out.path().join(name));
        let info = reader
            .find(custom, "org.example.eval")
            .unwrap_or_else(|| panic!("{name} lacks the custom section"));
        reader.section(info.index).unwrap().to_vec()
    };
    let first = payload("with-custom.expert");
    assert_eq!(first, payload("converted.expert"));
    let json: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(json["exact_match"], 0.71);
}

#[test]
fn signed_marketplace_verifies_and_refuses_a_flipped_byte() {
    let out = tempfile::tempdir().unwrap();
    let adapter = fixtures().join("minilm-lora-r8");
    let stdout = run("signed_marketplace", &[&adapter, out.path()]);
    assert!(stdout.contains("verified: valid"), "{stdout}");
    assert!(stdout.contains("refused:"), "{stdout}");
    let mut policy = Policy::new();
    policy.trust(PublicKey::load(&out.path().join("publisher.key.pub")).unwrap());
    let signed = ExpertReader::open(out.path().join("expert.expert")).unwrap();
    verify(&signed, &policy).expect("the signed expert verifies against the publisher key");
    let tampered = out.path().join("expert.tampered.expert");
    let refused = match ExpertReader::open(&tampered) {
        Err(_) => true,
        Ok(reader) => verify(&reader, &policy).is_err(),
    };
    assert!(refused, "the tampered copy verified");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.path().join("publisher.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "secret key readable by others: {mode:o}");
    }
}

#[test]
fn hot_swap_restores_the_base_bit_exactly() {
    let out = tempfile::tempdir().unwrap();
    let base = fixtures().join("merge/base-layer0-subset.safetensors");
    let stdout = run("hot_swap", &[&base, &fixtures(), out.path()]);
    assert!(stdout.contains("evicted [\"ia3\"]"), "{stdout}");
    assert!(
        stdout.contains("applied now [\"dora-r8\", \"ia3\"]"),
        "{stdout}"
    );
    assert!(stdout.contains("base restored bit-exactly"), "{stdout}");
    for name in ["lora-r8", "ia3", "dora-r8"] {
        validate(&out.path().join(format!("{name}.expert")));
    }
}

#[test]
fn serve_http_serves_experts_that_validate_remotely() {
    use std::io::BufRead;
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let mut server = Command::new(example_binary("serve_http"))
        .arg(&assets)
        .arg("0")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start serve_http");
    let mut first = String::new();
    let stderr = server.stderr.take().expect("stderr");
    std::io::BufReader::new(stderr)
        .read_line(&mut first)
        .expect("the address line");
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("an address")
        .to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_expertui"))
        .args(["--headless", "--no-cache", "validate", "--json"])
        .arg(format!("{base}demo.expert"))
        .output()
        .expect("run expertui");
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["remote"]["requests"], 2);
}
