//! One validation report for every verb: legacy packages in each verb,
//! published-style experts (their own manifest, grammar, licence, README)
//! packaging and migrating with warnings, `--strict` refusing them, and the
//! JSON report's shape.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use expertui::format::{ExpertReader, SectionType};
use serde_json::Value;

const DEMO: &str = "assets/demo.expert";
const LEGACY: &str = "minilm-sql-dora.v0.3.0.expert";
const DORA: &str = "tests/fixtures/minilm-dora-r8";
const LORA: &str = "tests/fixtures/minilm-lora-r8";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::cargo_bin("expertui")
        .unwrap()
        .current_dir(root())
        .env("NO_COLOR", "1")
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
    serde_json::from_slice(stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON value ({e}): {}",
            String::from_utf8_lossy(stdout)
        )
    })
}

fn codes(report: &Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["severity"].as_str().unwrap().to_string(),
                f["code"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn has(report: &Value, severity: &str, code: &str) -> bool {
    codes(report)
        .iter()
        .any(|(s, c)| s == severity && c == code)
}

/// The legacy fixture, with its sidecar unless `sidecar` is false.
fn legacy_copy(dir: &Path, sidecar: bool) -> PathBuf {
    let fixtures = root().join("tests/fixtures");
    let path = dir.join(LEGACY);
    std::fs::copy(fixtures.join(LEGACY), &path).unwrap();
    if sidecar {
        std::fs::copy(
            fixtures.join(format!("{LEGACY}.sha256")),
            dir.join(format!("{LEGACY}.sha256")),
        )
        .unwrap();
    }
    path
}

// ---------------------------------------------------------------------------
// Legacy packages in every verb

#[test]
fn legacy_package_validates_with_one_deprecation_warning() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = legacy_copy(dir.path(), true);
    let (code, stdout, stderr) = run(&["--headless", "validate", s(&legacy), "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    assert_eq!(v["format"], "legacy-tar.gz");
    assert_eq!(v["valid"], true);
    assert_eq!(v["exit_code"], 0);
    let deprecations = codes(&v)
        .iter()
        .filter(|(_, c)| c == "legacy.deprecated")
        .count();
    assert_eq!(deprecations, 1, "{v}");
    assert!(!has(&v, "warning", "legacy.sidecar-missing"), "{v}");
    for check in ["sidecar", "archive", "manifest", "grammar", "consistency"] {
        assert!(
            v["scope"].as_array().unwrap().iter().any(|c| c == check),
            "{check}: {v}"
        );
    }

    // Text: valid, the warning on stderr once.
    let (code, stdout, stderr) = run(&["--headless", "validate", s(&legacy)]);
    assert_eq!(code, 0, "{stderr}");
    let text = String::from_utf8(stdout).unwrap();
    assert!(
        text.contains("legacy tar.gz package") && text.contains("valid:"),
        "{text}"
    );
    assert_eq!(stderr.matches("legacy.deprecated").count(), 1, "{stderr}");
}

#[test]
fn legacy_sidecar_mismatch_is_an_error_and_absence_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = legacy_copy(dir.path(), true);
    let sidecar = dir.path().join(format!("{LEGACY}.sha256"));
    std::fs::write(&sidecar, format!("{}  {LEGACY}\n", "0".repeat(64))).unwrap();
    let (code, stdout, stderr) = run(&["--headless", "validate", s(&legacy), "--json"]);
    assert_eq!(code, 3, "{stderr}");
    let v = json(&stdout);
    assert!(has(&v, "error", "legacy.sidecar-mismatch"), "{v}");
    let finding = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "legacy.sidecar-mismatch")
        .unwrap();
    assert!(finding["location"]["file"]
        .as_str()
        .unwrap()
        .ends_with(".sha256"));

    // The `sha256sum -b` form (` *name`) is a sidecar too.
    let digest = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(std::fs::read(&legacy).unwrap()))
    };
    std::fs::write(&sidecar, format!("{digest} *{LEGACY}\n")).unwrap();
    let (code, _, stderr) = run(&["--headless", "validate", s(&legacy)]);
    assert_eq!(code, 0, "{stderr}");

    std::fs::remove_file(&sidecar).unwrap();
    let (code, stdout, _) = run(&["--headless", "validate", s(&legacy), "--json"]);
    assert_eq!(code, 0);
    let v = json(&stdout);
    assert!(has(&v, "warning", "legacy.sidecar-missing"), "{v}");
    // --strict: warnings are errors.
    let (code, stdout, _) = run(&["--headless", "validate", s(&legacy), "--json", "--strict"]);
    assert_eq!(code, 3);
    let v = json(&stdout);
    assert_eq!(v["strict"], true);
    assert!(has(&v, "error", "legacy.sidecar-missing"), "{v}");
}

#[test]
fn legacy_package_lists_members_and_dumps_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = legacy_copy(dir.path(), true);
    let (code, stdout, stderr) = run(&[
        "--headless",
        "validate",
        s(&legacy),
        "--list-sections",
        "--dump-metadata",
        "--verify-integrity",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    let names: Vec<&str> = v["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
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
    assert_eq!(v["sections"][4]["type"], "grammar");
    assert_eq!(v["sections"][0]["codec"], "tar.gz");
    assert_eq!(v["manifest"]["name"], "expert-sql-minilm");
    assert_eq!(v["header"]["members"], 6);
    // The manifest's size_bytes / sha256 match the member.
    assert!(
        !has(&v, "warning", "manifest.adapter-sha256-mismatch"),
        "{v}"
    );
}

#[test]
fn legacy_and_binary_reports_have_the_same_shape() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = legacy_copy(dir.path(), true);
    let keys = |path: &str| -> Vec<String> {
        let (_, stdout, _) = run(&[
            "--headless",
            "validate",
            path,
            "--json",
            "--list-sections",
            "--dump-metadata",
            "--time",
        ]);
        let mut k: Vec<String> = json(&stdout).as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(s(&legacy)), keys(DEMO));
}

#[test]
fn legacy_package_in_info_overview_and_extract() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = legacy_copy(dir.path(), true);
    for args in [
        vec!["--headless", "info", s(&legacy)],
        vec![s(&legacy)], // off a terminal: the overview
    ] {
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        let text = String::from_utf8(stdout).unwrap();
        assert!(text.contains("legacy tar.gz"), "{text}");
        assert!(text.contains("grammar.gbnf"), "{text}");
        assert!(text.contains("expert-sql-minilm"), "{text}");
    }
    let (code, stdout, _) = run(&["--headless", "info", s(&legacy), "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&stdout)["format"], "legacy-tar.gz");

    let out = dir.path().join("g.gbnf");
    let (code, stdout, stderr) = run(&[
        "--headless",
        "extract",
        s(&legacy),
        "grammar.gbnf",
        "-o",
        s(&out),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json(&stdout)["format"], "legacy-tar.gz");
    let member = |name: &str| {
        let bytes = std::fs::read(&legacy).unwrap();
        expertui::format::legacy::read_legacy(&bytes, &Default::default())
            .unwrap()
            .get(name)
            .unwrap()
            .data
            .clone()
    };
    assert_eq!(std::fs::read(&out).unwrap(), member("grammar.gbnf"));
    let (code, _, _) = run(&["--headless", "extract", s(&legacy), "#0", "-o", s(&out)]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read(&out).unwrap(), member("manifest.json"));
    let (code, _, _) = run(&["--headless", "extract", s(&legacy), "nosuch", "-o", s(&out)]);
    assert_eq!(code, 1);
}

// ---------------------------------------------------------------------------
// Published-style experts

struct Published {
    name: &'static str,
    adapter: &'static str,
    warnings: &'static [&'static str],
}

const PUBLISHED: &[Published] = &[
    Published {
        name: "sql",
        adapter: DORA,
        warnings: &[
            "grammar.left-recursion",
            "manifest.adapter-rank-mismatch",
            "manifest.adapter-alpha-mismatch",
        ],
    },
    Published {
        name: "cypher",
        adapter: LORA,
        warnings: &["grammar.invalid-rule-name"],
    },
    Published {
        name: "kql",
        adapter: LORA,
        warnings: &["grammar.left-recursion", "grammar.undefined-rule"],
    },
];

fn package_args<'a>(p: &'a Published, out: &'a str, extra: &[&'a str]) -> Vec<String> {
    let folder = format!("tests/fixtures/published/{}", p.name);
    let mut args: Vec<String> = [
        "--headless",
        "package",
        p.adapter,
        "-o",
        out,
        "--json",
        "--manifest",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.push(format!("{folder}/manifest.json"));
    args.push("--grammar".into());
    args.push(format!("{folder}/grammar.gbnf"));
    for (flag, file) in [("--license", "LICENSE"), ("--readme", "README.md")] {
        if root().join(&folder).join(file).exists() {
            args.push(flag.into());
            args.push(format!("{folder}/{file}"));
        }
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn run_owned(args: &[String]) -> (i32, Vec<u8>, String) {
    run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn published_experts_package_with_warnings_and_strict_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    for p in PUBLISHED {
        let out = dir.path().join(format!("{}.expert", p.name));
        let (code, stdout, stderr) = run_owned(&package_args(p, s(&out), &[]));
        assert_eq!(code, 0, "{}: {stderr}", p.name);
        let v = json(&stdout);
        for w in p.warnings {
            assert!(
                v["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["code"] == *w && f["severity"] == "warning"),
                "{}: {w}: {v}",
                p.name
            );
            assert!(stderr.contains(&format!("warning[{w}]")), "{stderr}");
        }
        // The grammar is stored verbatim.
        let reader = ExpertReader::open(&out).unwrap();
        let g = reader.first(SectionType::Grammar).unwrap();
        let original =
            std::fs::read(root().join(format!("tests/fixtures/published/{}/grammar.gbnf", p.name)))
                .unwrap();
        assert_eq!(&*reader.section(g.index).unwrap(), original.as_slice());

        // validate: exit 0 with the same warnings; --strict exit 3.
        let (code, stdout, _) = run(&["--headless", "validate", s(&out), "--json"]);
        assert_eq!(code, 0, "{}", p.name);
        let v = json(&stdout);
        for w in p.warnings {
            assert!(has(&v, "warning", w), "{}: {w}: {v}", p.name);
        }
        let (code, _, _) = run(&["--headless", "validate", s(&out), "--strict"]);
        assert_eq!(code, 3, "{}", p.name);

        // package --strict writes nothing.
        let strict = dir.path().join(format!("{}-strict.expert", p.name));
        let (code, _, stderr) = run_owned(&package_args(p, s(&strict), &["--strict"]));
        assert_eq!(code, 3, "{}: {stderr}", p.name);
        assert!(!strict.exists());
        assert!(!dir
            .path()
            .join(format!("{}-strict.expert.sha256", p.name))
            .exists());
    }
}

#[test]
fn published_experts_migrate_from_tar_gz() {
    let dir = tempfile::tempdir().unwrap();
    for p in PUBLISHED {
        let legacy = dir.path().join(format!("{}.v1.expert", p.name));
        let (code, _, stderr) = run_owned(&package_args(p, s(&legacy), &["--format", "tar.gz"]));
        assert_eq!(code, 0, "{}: {stderr}", p.name);
        // The legacy package validates (warnings) in every verb.
        let (code, stdout, stderr) = run(&["--headless", "validate", s(&legacy), "--json"]);
        assert_eq!(code, 0, "{}: {stderr}", p.name);
        let v = json(&stdout);
        for w in p.warnings {
            assert!(has(&v, "warning", w), "{}: {w}: {v}", p.name);
        }
        let out = dir.path().join(format!("{}.v2.expert", p.name));
        let (code, stdout, stderr) =
            run(&["--headless", "convert", s(&legacy), "-o", s(&out), "--json"]);
        assert_eq!(code, 0, "{}: {stderr}", p.name);
        let v = json(&stdout);
        assert_eq!(v["results"][0]["ok"], true);
        let (code, _, stderr) = run(&["--headless", "validate", s(&out), "--verify-integrity"]);
        assert_eq!(code, 0, "{}: {stderr}", p.name);
        // --strict refuses the migration and writes nothing.
        let strict = dir.path().join(format!("{}.strict.expert", p.name));
        let (code, _, _) = run(&[
            "--headless",
            "convert",
            s(&legacy),
            "-o",
            s(&strict),
            "--strict",
        ]);
        assert_eq!(code, 3, "{}", p.name);
        assert!(!strict.exists());
    }
}

#[test]
fn package_fills_empty_adapter_digests_and_keeps_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sql.expert");
    let (code, _, stderr) = run_owned(&package_args(&PUBLISHED[0], s(&out), &[]));
    assert_eq!(code, 0, "{stderr}");
    let reader = ExpertReader::open(&out).unwrap();
    let m = reader.first(SectionType::Manifest).unwrap();
    let manifest: Value = serde_json::from_slice(&reader.section(m.index).unwrap()).unwrap();
    let adapter = &manifest["base_models"][0]["adapters"][0];
    let weights = std::fs::read(root().join(DORA).join("adapter_model.safetensors")).unwrap();
    assert_eq!(adapter["size_bytes"], weights.len());
    let digest = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&weights))
    };
    assert_eq!(adapter["sha256"], digest);
    // What was written is kept: the wrong r, the comments, the Windows path.
    assert_eq!(adapter["r"], 14);
    assert!(manifest["_comment"]
        .as_str()
        .unwrap()
        .starts_with("Published expert"));
    assert_eq!(
        manifest["routing"]["_comment"],
        "keywords tuned on the router eval set, 2025-10"
    );
    assert_eq!(
        manifest["base_models"][0]["name"],
        "C:\\Users\\trainer\\models\\all-MiniLM-L6-v2"
    );
    assert_eq!(
        manifest["limitations"][1]["workaround"],
        "write the CTE by hand"
    );
    // The deep check agrees with what was filled.
    let (code, stdout, _) = run(&[
        "--headless",
        "validate",
        s(&out),
        "--verify-integrity",
        "--json",
    ]);
    assert_eq!(code, 0);
    let v = json(&stdout);
    assert!(
        !has(&v, "warning", "manifest.adapter-sha256-mismatch"),
        "{v}"
    );
    assert!(!has(&v, "note", "manifest.adapter-digest-missing"), "{v}");
}

#[test]
fn wrong_adapter_digests_in_the_manifest_are_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest: Value = serde_json::from_slice(
        &std::fs::read(root().join("tests/fixtures/published/cypher/manifest.json")).unwrap(),
    )
    .unwrap();
    let adapter = &mut manifest["base_models"][0]["adapters"][0];
    adapter["size_bytes"] = 12.into();
    adapter["sha256"] = "ab".repeat(32).into();
    adapter["target_modules"] = serde_json::json!(["query", "value", "gate_proj"]);
    adapter["type"] = "ia3".into();
    let path = dir.path().join("manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    let out = dir.path().join("c.expert");
    let (code, stdout, stderr) = run(&[
        "--headless",
        "package",
        LORA,
        "-o",
        s(&out),
        "--manifest",
        s(&path),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    for code in [
        "manifest.adapter-size-mismatch",
        "manifest.adapter-sha256-mismatch",
        "manifest.adapter-target-modules-mismatch",
        "manifest.adapter-target-module-unused",
        "manifest.adapter-type-mismatch",
    ] {
        assert!(has(&v, "warning", code), "{code}: {v}");
    }
    let pointer = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "manifest.adapter-size-mismatch")
        .unwrap()["location"]["pointer"]
        .clone();
    assert_eq!(pointer, "/base_models/0/adapters/0/size_bytes");
}

#[test]
fn a_broken_manifest_is_still_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.json");
    std::fs::write(&path, br#"{"name": "x", "version": "1.0.0", "schema_version": "2.0", "base_models": [{"name": "m", "adapters": [{"type": "lora", "r": "eight"}]}]}"#).unwrap();
    let out = dir.path().join("x.expert");
    let (code, _, stderr) = run(&[
        "--headless",
        "package",
        LORA,
        "-o",
        s(&out),
        "--manifest",
        s(&path),
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("error[manifest.schema] manifest.json /base_models/0/adapters/0/r"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// The JSON report's shape is an interface: keep it stable.
#[test]
fn validation_report_json_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sql.expert");
    let (code, _, stderr) = run_owned(&package_args(&PUBLISHED[0], s(&out), &["--no-sidecar"]));
    assert_eq!(code, 0, "{stderr}");
    let (_, stdout, _) = run(&[
        "--headless",
        "validate",
        s(&out),
        "--json",
        "--list-sections",
    ]);
    let mut v = json(&stdout);
    v["file"] = "SQL.expert".into();
    // Digests of sections depend on zstd's version: keep the shape only.
    for section in v["sections"].as_array_mut().unwrap() {
        section["sha256"] = "…".into();
        section["stored_len"] = 0.into();
        section["offset"] = 0.into();
    }
    insta::assert_snapshot!(serde_json::to_string_pretty(&v).unwrap());
}

// ---------------------------------------------------------------------------
// Router embeddings

fn npy_f32(rows: usize, cols: usize) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for i in 0..rows * cols {
        out.extend_from_slice(&((i % 7) as f32 * 0.25).to_le_bytes());
    }
    out
}

/// A copy of the LoRA fixture with a manifest whose routing names `embeddings`.
fn adapter_with_embeddings(dir: &Path, embeddings: &str) -> PathBuf {
    let folder = dir.join("adapter");
    std::fs::create_dir_all(&folder).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(root().join(LORA).join(f), folder.join(f)).unwrap();
    }
    std::fs::write(folder.join("centroids.npy"), npy_f32(4, 384)).unwrap();
    let mut manifest: Value = serde_json::from_slice(
        &std::fs::read(root().join("tests/fixtures/published/cypher/manifest.json")).unwrap(),
    )
    .unwrap();
    manifest["routing"]["embeddings"] = embeddings.into();
    std::fs::write(
        folder.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    folder
}

#[test]
fn router_embeddings_are_packaged_decoded_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let folder = adapter_with_embeddings(dir.path(), "centroids.npy");
    let out = dir.path().join("r.expert");
    let (code, _, stderr) = run(&["--headless", "package", s(&folder), "-o", s(&out)]);
    assert_eq!(code, 0, "{stderr}");
    let reader = ExpertReader::open(&out).unwrap();
    let info = reader.first(SectionType::RouterEmbeddings).unwrap().clone();
    assert_eq!(info.name, "router_embeddings.safetensors");
    let bytes = reader.section(info.index).unwrap().to_vec();
    match expertui::format::inspect::decode_bytes(info.kind, &info.name, &bytes).unwrap() {
        expertui::format::inspect::Decoded::Tensors { tensors, .. } => {
            assert_eq!(tensors.len(), 1);
            assert_eq!(tensors[0].shape, vec![4, 384]);
            assert_eq!(tensors[0].dtype, "F32");
            let norms = tensors[0].row_norms.unwrap();
            assert!(norms[0] > 0.0 && norms[0] <= norms[1] && norms[1] <= norms[2]);
        }
        other => panic!("{other:?}"),
    }
    // binary -> tar.gz -> binary keeps the section byte for byte.
    let legacy = dir.path().join("r.tar.gz");
    let back = dir.path().join("back.expert");
    for (from, to, target) in [(&out, &legacy, "tar.gz"), (&legacy, &back, "binary")] {
        let (code, _, stderr) = run(&[
            "--headless",
            "convert",
            s(from),
            "-o",
            s(to),
            "--to",
            target,
        ]);
        assert_eq!(code, 0, "{stderr}");
    }
    let again = ExpertReader::open(&back).unwrap();
    let info = again.first(SectionType::RouterEmbeddings).unwrap();
    assert_eq!(&*again.section(info.index).unwrap(), bytes.as_slice());
    let (code, _, stderr) = run(&["--headless", "validate", s(&back), "--verify-integrity"]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn router_embeddings_may_not_leave_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    for named in ["../outside.npy", "/etc/passwd", "sub/../../x.npy"] {
        let folder = adapter_with_embeddings(dir.path(), named);
        let out = dir.path().join("r.expert");
        let (code, _, stderr) = run(&["--headless", "package", s(&folder), "-o", s(&out)]);
        assert_eq!(code, 3, "{named}: {stderr}");
        assert!(stderr.contains("relative path inside"), "{stderr}");
        assert!(!out.exists());
    }
}

#[test]
fn windows_editor_files_get_a_named_finding() {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = b"\xef\xbb\xbf".to_vec();
    manifest.extend(
        std::fs::read(root().join("tests/fixtures/published/cypher/manifest.json")).unwrap(),
    );
    let m = dir.path().join("manifest.json");
    std::fs::write(&m, manifest).unwrap();
    let out = dir.path().join("x.expert");
    let (code, _, stderr) = run(&[
        "--headless",
        "package",
        LORA,
        "-o",
        s(&out),
        "--manifest",
        s(&m),
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("error[manifest.byte-order-mark] manifest.json:1:1"),
        "{stderr}"
    );

    let g = dir.path().join("g.gbnf");
    std::fs::write(&g, "\u{feff}root ::= \"a\" | b\r\nb ::= \"c\"\r\n").unwrap();
    let (code, stdout, stderr) = run(&[
        "--headless",
        "package",
        LORA,
        "-o",
        s(&out),
        "--grammar",
        s(&g),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    let grammar: Vec<String> = codes(&v)
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| c.starts_with("grammar."))
        .collect();
    assert_eq!(grammar, ["grammar.byte-order-mark"]);
}

// ---------------------------------------------------------------------------
// Damage in the TOC is blamed on the TOC

fn demo_toc() -> (Vec<u8>, usize) {
    let bytes = std::fs::read(root().join(DEMO)).unwrap();
    let toc = ExpertReader::open(root().join(DEMO))
        .unwrap()
        .header()
        .toc_offset
        .get() as usize;
    (bytes, toc)
}

#[test]
fn a_flipped_digest_in_the_toc_blames_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, toc) = demo_toc();
    let entry = toc + 8 * 128; // layer.1 in the demo
    bytes[entry + 40] ^= 0x01; // its stored SHA-256
    let path = dir.path().join("toc.expert");
    std::fs::write(&path, &bytes).unwrap();
    let (code, stdout, _) = run(&[
        "--headless",
        "validate",
        s(&path),
        "--verify-integrity",
        "--json",
    ]);
    assert_eq!(code, 3);
    let v = json(&stdout);
    assert!(has(&v, "error", "container.root-digest"), "{v}");
    assert!(has(&v, "error", "container.toc-entry-digest"), "{v}");
    assert!(
        !has(&v, "error", "container.section-digest"),
        "the bytes are intact: {v}"
    );
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "container.toc-entry-digest")
        .unwrap();
    assert_eq!(f["location"]["offset"], entry + 40);
}

#[test]
fn a_flipped_offset_in_the_toc_points_at_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, toc) = demo_toc();
    let entry = toc + 9 * 128;
    bytes[entry + 16 + 2] ^= 0x10; // its offset field
    let path = dir.path().join("offset.expert");
    std::fs::write(&path, &bytes).unwrap();
    let (code, stdout, _) = run(&["--headless", "validate", s(&path), "--json"]);
    assert_eq!(code, 3);
    let v = json(&stdout);
    let f = &v["findings"][0];
    assert_eq!(f["location"]["offset"], entry + 16, "{v}");
    assert!(
        f["message"].as_str().unwrap().contains("TOC entry 9"),
        "{v}"
    );
}
