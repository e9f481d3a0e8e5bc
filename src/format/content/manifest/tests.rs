use super::*;
use serde_json::json;
use std::io::Read;

fn fixture_bytes() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/minilm-sql-dora.v0.3.0.expert"
    );
    let file = std::fs::File::open(path).expect("fixture");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        if entry.path().expect("path").to_str() == Some("manifest.json") {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).expect("read manifest");
            return buf;
        }
    }
    panic!("manifest.json not in fixture");
}

fn fixture_value() -> Value {
    serde_json::from_slice(&fixture_bytes()).expect("fixture json")
}

fn roundtrip(v: &Value) -> Value {
    let m = Manifest::from_json(&serde_json::to_vec(v).unwrap()).expect("parse");
    serde_json::from_slice(&m.to_json_pretty()).expect("reparse")
}

fn paths(v: &[RuleViolation]) -> Vec<&str> {
    v.iter().map(|v| v.path.as_str()).collect()
}

fn v1_manifest() -> Value {
    json!({
        "name": "expert-sql",
        "version": "1.0.0",
        "schema_version": "1.0",
        "description": "v1 layout",
        "base_model": {"name": "Qwen3-0.6B", "sha256": "abc", "quantization": "int4",
                       "rope_scaling": "yarn-128k"},
        "adapters": [{"type": "lora", "target_modules": ["q_proj", "v_proj"], "r": 16,
                      "alpha": 16, "scaling": "standard", "dropout": 0.05,
                      "path": "weights/adapter.safetensors", "size_bytes": 8388608}],
        "capabilities": ["test"],
        "constraints": {"load_order": 5, "incompatible_with": [], "requires": []}
    })
}

#[test]
fn fixture_round_trips_semantically() {
    let bytes = fixture_bytes();
    let original: Value = serde_json::from_slice(&bytes).unwrap();
    let m = Manifest::from_json(&bytes).expect("parse fixture");
    assert_eq!(m.name, "expert-sql-minilm");
    assert_eq!(m.schema(), Some(SchemaVersion::V2));
    assert_eq!(
        m.base_model_names(),
        vec!["sentence-transformers/all-MiniLM-L6-v2"]
    );
    let adapters = m.adapters();
    assert_eq!(adapters.len(), 1);
    assert_eq!(adapters[0].kind(), AdapterKind::Dora);
    assert_eq!(adapters[0].r, Some(8));
    assert_eq!(adapters[0].alpha_f64(), Some(16.0));
    assert_eq!(m.routing_keywords()[0], "sql");
    let base = &m.base_models.as_ref().unwrap()[0];
    assert_eq!(base.sha256, Some(None), "explicit null is kept");
    assert_eq!(base.sha256(), None);
    assert_eq!(
        m.training
            .as_ref()
            .unwrap()
            .decoding
            .as_ref()
            .unwrap()
            .grammar_file
            .as_deref(),
        Some("grammar.gbnf")
    );
    assert!(m.extra.contains_key("quality_metrics"));
    assert!(m.extra.contains_key("limitations"));

    let back: Value = serde_json::from_slice(&m.to_json_pretty()).unwrap();
    assert_eq!(back, original);
    // Known keys keep the legacy order; unknown keys follow.
    let keys: Vec<&String> = back.as_object().unwrap().keys().collect();
    let orig_keys: Vec<&String> = original.as_object().unwrap().keys().collect();
    assert_eq!(keys, orig_keys);
    // And the fixture passes the whole gate.
    validate_manifest_bytes(&bytes).expect("fixture is valid");
}

#[test]
fn unknown_keys_survive_at_every_level() {
    let mut v = fixture_value();
    let extra = json!({"nested": {"a": [1, 2.5, null, "x"]}, "n": 1});
    v["_comment"] = json!("top-level note");
    v["quality_metrics"] = json!({"benchmark_score": 9, "win_rate_vs_base": 0.7});
    v["limitations"] = json!(["x", {"pattern": "p", "description": "d", "example": "e",
                                    "workaround": "w"}]);
    v["base_models"][0]["rope_scaling"] = json!({"type": "yarn", "factor": 4.0});
    v["base_models"][0]["_comment"] = extra.clone();
    v["base_models"][0]["adapters"][0]["use_dora"] = json!(true);
    v["base_models"][0]["adapters"][0]["_comment"] = extra.clone();
    v["routing"]["_comment"] = extra.clone();
    v["constraints"]["_comment"] = extra.clone();
    v["perf"]["_comment"] = extra.clone();
    v["runtime"]["kv_cache"] = json!("paged");
    v["runtime"]["future_hint"] = extra.clone();
    v["training"]["decoding"]["_comment"] = extra.clone();
    v["training"]["metadata"] = extra.clone();
    v["evaluation"]["_comment"] = extra.clone();
    v["soft_prompts"] = json!([{"name": "sp", "path": "sp.safetensors", "tokens": 20,
                                "init_method": "text"}]);
    v["compatibility"] = json!({"weights_hash": "ab", "expected_shapes": {"q": [384, 384]},
                                "_comment": "c"});
    v["integrity"] = json!({"signature": "s", "files": {"a": "b"}});
    assert_eq!(roundtrip(&v), v);
    validate_schema(&v).expect("schema accepts unknown keys");
}

#[test]
fn integers_and_floats_keep_their_form() {
    let mut v = fixture_value();
    v["routing"]["priority"] = json!(1);
    v["perf"]["latency_ms_overhead"] = json!(3);
    v["base_models"][0]["adapters"][0]["alpha"] = json!(16.0);
    v["base_models"][0]["adapters"][0]["dropout"] = json!(0);
    assert_eq!(roundtrip(&v), v);
}

#[test]
fn v1_with_base_model_object_or_string() {
    let v = v1_manifest();
    let m = validate_manifest_bytes(&serde_json::to_vec(&v).unwrap()).expect("v1 valid");
    assert_eq!(m.schema(), Some(SchemaVersion::V1));
    assert_eq!(m.base_model_names(), vec!["Qwen3-0.6B"]);
    assert_eq!(m.adapters().len(), 1);
    assert_eq!(roundtrip(&v), v);

    let mut s = v1_manifest();
    s["base_model"] = json!("Qwen3-0.6B");
    let m = validate_manifest_bytes(&serde_json::to_vec(&s).unwrap()).expect("string form");
    assert!(matches!(m.base_model, Some(BaseModelRef::Name(_))));
    assert_eq!(roundtrip(&s), s);

    // Missing schema_version reads as 1.0, like the legacy packager.
    let mut n = v1_manifest();
    n.as_object_mut().unwrap().remove("schema_version");
    assert!(
        check_rules(&Manifest::from_json(&serde_json::to_vec(&n).unwrap()).unwrap()).is_empty()
    );
}

#[test]
fn missing_adapters_and_rank_are_named() {
    let mut v = fixture_value();
    let a0 = v["base_models"][0]["adapters"][0].clone();
    let mut no_r = a0.clone();
    no_r.as_object_mut().unwrap().remove("r");
    let mut ia3 = a0.clone();
    ia3["type"] = json!("ia3");
    ia3.as_object_mut().unwrap().remove("r");
    let mut no_modules = a0.clone();
    no_modules["target_modules"] = json!([]);
    let prompt = json!({"type": "prompt_tuning", "path": "p.safetensors"});
    v["base_models"][0]["adapters"] = json!([a0, no_r, ia3, no_modules, prompt]);
    v["base_models"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "other-model"}));
    let bytes = serde_json::to_vec(&v).unwrap();
    let violations = check_rules(&Manifest::from_json(&bytes).unwrap());
    assert_eq!(
        paths(&violations),
        vec![
            "/base_models/0/adapters/1/r",
            "/base_models/0/adapters/3/target_modules",
            "/base_models/1/adapters",
        ]
    );
    match validate_manifest_bytes(&bytes) {
        Err(e @ ManifestError::Rules(_)) => {
            let text = e.to_string();
            assert!(text.contains("/base_models/0/adapters/1/r"), "{text}");
            assert!(text.contains("/base_models/1/adapters"), "{text}");
        }
        other => panic!("expected rule violations, got {other:?}"),
    }

    let mut v1 = v1_manifest();
    v1.as_object_mut().unwrap().remove("adapters");
    let m = Manifest::from_json(&serde_json::to_vec(&v1).unwrap()).unwrap();
    assert_eq!(paths(&check_rules(&m)), vec!["/adapters"]);
}

#[test]
fn base_model_and_base_models_together_are_refused() {
    let mut v = fixture_value();
    v["base_model"] = json!("sentence-transformers/all-MiniLM-L6-v2");
    let m = Manifest::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(paths(&check_rules(&m)), vec!["/base_model"]);

    let mut v1 = v1_manifest();
    v1["base_models"] = fixture_value()["base_models"].clone();
    let m = Manifest::from_json(&serde_json::to_vec(&v1).unwrap()).unwrap();
    assert_eq!(paths(&check_rules(&m)), vec!["/base_models"]);

    // 2.0 without base_models, with v1-style root adapters.
    let mut v2 = v1_manifest();
    v2["schema_version"] = json!("2.0");
    v2.as_object_mut().unwrap().remove("base_model");
    let m = Manifest::from_json(&serde_json::to_vec(&v2).unwrap()).unwrap();
    assert_eq!(paths(&check_rules(&m)), vec!["/adapters", "/base_models"]);
}

#[test]
fn name_version_priority_rules() {
    let mut m = Manifest::from_json(&fixture_bytes()).unwrap();
    m.name = " ".into();
    m.version = "1.2".into();
    m.routing.as_mut().unwrap().priority = Number::from_f64(1.5);
    assert_eq!(
        paths(&check_rules(&m)),
        vec!["/name", "/version", "/routing/priority"]
    );
    m.version = String::new();
    assert!(check_rules(&m)
        .iter()
        .any(|v| v.message == "version is empty"));
    m.schema_version = Some("3.0".into());
    assert!(paths(&check_rules(&m)).contains(&"/schema_version"));
}

#[test]
fn semver_check() {
    for ok in ["0.3.0", "1.0.0-alpha.1", "1.0.0+build.5", "10.20.30-rc-1+x"] {
        assert!(is_semver(ok), "{ok}");
    }
    for bad in [
        "1.2", "01.2.3", "1.2.3-", "1.2.3-01", "v1.2.3", "1.2.3.4", "a.b.c", "",
    ] {
        assert!(!is_semver(bad), "{bad}");
    }
}

#[test]
fn schema_errors_name_the_path() {
    let mut v = fixture_value();
    v["routing"]["priority"] = json!("high");
    v["base_models"][0]["adapters"][0]["r"] = json!(-1);
    let issues = validate_schema(&v).unwrap_err();
    let got: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert!(got.contains(&"/routing/priority"), "{issues:?}");
    assert!(got.contains(&"/base_models/0/adapters/0/r"), "{issues:?}");
    match validate_manifest_bytes(&serde_json::to_vec(&v).unwrap()) {
        Err(e @ ManifestError::Schema(_)) => {
            assert!(e.to_string().contains("/routing/priority"), "{e}")
        }
        other => panic!("expected schema error, got {other:?}"),
    }
    let mut huge = fixture_value();
    huge["routing"] = json!(["x".repeat(5000)]);
    let issues = validate_schema(&huge).unwrap_err();
    assert!(issues[0].message.chars().count() <= 301, "{issues:?}");
    let missing = json!({"name": "x"});
    let issues = validate_schema(&missing).unwrap_err();
    assert_eq!(issues[0].path, "");
    assert!(issues[0].message.contains("version"), "{issues:?}");
}

#[test]
fn invalid_json_reports_line_and_column() {
    let bad = b"{\n  \"name\": \"x\",\n  \"version\": 0.1.0\n}";
    for r in [Manifest::from_json(bad), validate_manifest_bytes(bad)] {
        match r {
            Err(ManifestError::Json { line, column, .. }) => {
                assert_eq!(line, 3);
                assert!(column > 0);
            }
            other => panic!("expected JSON error, got {other:?}"),
        }
    }
    let e = Manifest::from_json(bad).unwrap_err().to_string();
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn duplicate_keys_are_refused() {
    let dup = b"{\"name\": \"a\", \"version\": \"1.0.0\", \"x\": {\"k\": 1, \"k\": 2}}";
    match Manifest::from_json(dup) {
        Err(ManifestError::Json { message, line, .. }) => {
            assert!(message.contains("duplicate key `k`"), "{message}");
            assert_eq!(line, 1);
        }
        other => panic!("expected duplicate-key error, got {other:?}"),
    }
}

#[test]
fn embedded_schema_compiles() {
    assert!(compiled_schema().is_ok(), "{:?}", compiled_schema().err());
}

#[test]
fn adapter_kinds() {
    assert_eq!(AdapterKind::from_type("IA3"), AdapterKind::Ia3);
    assert_eq!(
        AdapterKind::from_type("prompt-tuning"),
        AdapterKind::PromptTuning
    );
    assert_eq!(AdapterKind::from_type("vera"), AdapterKind::Other);
    assert!(!AdapterKind::Ia3.requires_rank());
    assert!(!AdapterKind::PrefixTuning.requires_rank());
    assert!(AdapterKind::Lokr.requires_rank());
    assert!(AdapterKind::Other.requires_rank());
}

/// Every keyword of the embedded schema is one the interpreter applies or an annotation.
#[test]
fn schema_uses_only_interpreted_keywords() {
    fn walk(v: &Value, under_map: bool, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    if !under_map {
                        out.push(k.clone());
                    }
                    let is_map = matches!(k.as_str(), "properties" | "$defs") && !under_map;
                    walk(child, is_map, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, false, out)),
            _ => {}
        }
    }
    let schema: Value = serde_json::from_str(MANIFEST_SCHEMA).unwrap();
    let mut keywords = Vec::new();
    walk(&schema, false, &mut keywords);
    for k in keywords {
        assert!(
            schema::SUPPORTED_KEYWORDS.contains(&k.as_str())
                || schema::ANNOTATIONS.contains(&k.as_str()),
            "schema keyword {k:?} is not interpreted by format::manifest::schema"
        );
    }
}

/// Values that break types, lengths, bounds, enums and the pattern.
fn mutations() -> Vec<Value> {
    vec![
        json!(null),
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(2.0),
        json!(""),
        json!("x"),
        json!("not-hex"),
        json!("ab".repeat(32)),
        json!([]),
        json!(["a", 1]),
        json!({}),
        json!({"name": ""}),
    ]
}

/// Replaces the value at every path of `v` with each mutation, and removes
/// every key, yielding the variants.
fn variants(v: &Value) -> Vec<Value> {
    fn paths(v: &Value, prefix: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    let p = format!("{prefix}/{}", k.replace('~', "~0").replace('/', "~1"));
                    out.push(p.clone());
                    paths(c, p, out);
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    let p = format!("{prefix}/{i}");
                    out.push(p.clone());
                    paths(c, p, out);
                }
            }
            _ => {}
        }
    }
    let mut all = Vec::new();
    paths(v, String::new(), &mut all);
    let mut out = vec![v.clone()];
    for p in &all {
        for m in mutations() {
            let mut w = v.clone();
            if let Some(slot) = w.pointer_mut(p) {
                *slot = m;
                out.push(w);
            }
        }
        // Remove the key (objects) to break `required`.
        if let Some((parent, key)) = p.rsplit_once('/') {
            let mut w = v.clone();
            if let Some(Value::Object(m)) = w.pointer_mut(parent) {
                m.remove(&key.replace("~1", "/").replace("~0", "~"));
                out.push(w);
            }
        }
    }
    out
}

/// The interpreter and the `jsonschema` crate give the same verdict and the
/// same instance paths on thousands of manifests.
#[test]
fn schema_interpreter_agrees_with_the_jsonschema_crate() {
    let reference = compiled_schema().unwrap();
    let published = |name: &str| -> Value {
        let path = format!(
            "{}/tests/fixtures/published/{name}/manifest.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let mut corpus = vec![
        published("sql"),
        published("cypher"),
        published("kql"),
        serde_json::from_slice(&fixture_bytes()).unwrap(),
    ];
    let v1 = json!({"name": "x", "version": "1.0.0", "schema_version": "1.0",
        "base_model": {"name": "m", "sha256": "ab".repeat(32)},
        "adapters": [{"type": "lora", "r": 8, "alpha": 16.0, "target_modules": ["q"]}],
        "integrity": {"sha256": ""}});
    corpus.push(v1);
    let mut checked = 0;
    for base in corpus {
        for v in variants(&base) {
            let ours: std::collections::BTreeSet<String> = match validate_schema(&v) {
                Ok(()) => Default::default(),
                Err(issues) => issues.into_iter().map(|i| i.path).collect(),
            };
            let theirs: std::collections::BTreeSet<String> = reference
                .iter_errors(&v)
                .map(|e| e.instance_path().as_str().to_owned())
                .collect();
            assert_eq!(ours, theirs, "{v}");
            checked += 1;
        }
    }
    assert!(checked > 2000, "{checked}");
}

#[test]
fn whole_floats_read_as_integers_and_misfits_are_type_errors() {
    let base = |r: &str| {
        format!(
            r#"{{"name": "x", "version": "1.0.0", "schema_version": "2.0",
  "base_models": [{{"name": "m", "adapters": [{{"type": "lora", "target_modules": ["q"], "r": {r}, "alpha": 16}}]}}]}}"#
        )
    };
    let eight = validate_manifest_bytes(base("8.0").as_bytes()).unwrap();
    assert_eq!(
        eight,
        validate_manifest_bytes(base("8").as_bytes()).unwrap()
    );
    assert_eq!(Manifest::from_json(base("8.0").as_bytes()).unwrap(), eight);
    match validate_manifest_bytes(base("99999999999").as_bytes()) {
        Err(ManifestError::Type { line, message, .. }) => {
            assert_eq!(line, 2);
            assert!(message.contains("u32"), "{message}");
        }
        other => panic!("expected a type error, got {other:?}"),
    }
}
