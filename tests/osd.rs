//! OSD on the real fixtures: pinned quality at fixed points (a change that
//! degrades compression fails here), the estimate against the exact result,
//! written experts, and the verbs.

use assert_cmd::Command;
use expertui::format::package::ExpertContents;
use expertui::format::{ExpertReader, SectionType};
use expertui::osd::analysis::{Method, OsdParams};
use expertui::osd::delta::BaseWeights;
use expertui::osd::expert::AdapterAnalysis;
use expertui::osd::section::decode_layer;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn lora() -> (ExpertContents, AdapterAnalysis) {
    let contents = ExpertContents::from_adapter_dir(&fixture("minilm-lora-r8")).unwrap();
    let analysis =
        AdapterAnalysis::from_adapter(contents.adapter.as_ref().unwrap(), None, 64).unwrap();
    (contents, analysis)
}

fn exact(analysis: &AdapterAnalysis, p: &OsdParams) -> f64 {
    let (mut err2, mut total) = (0.0, 0.0);
    for m in &analysis.modules {
        let (_, est) = m.compress(p, None).unwrap();
        err2 += est.rel_error.powi(2) * m.total;
        total += m.total;
    }
    (err2 / total).sqrt()
}

fn point(method: Method, rank: usize, sparsity: f64) -> OsdParams {
    OsdParams {
        method,
        rank,
        sparsity,
        alpha: 1.0,
        budget_bits: None,
    }
}

/// Relative reconstruction errors measured when this test was written.
#[test]
fn quality_is_pinned_at_fixed_points() {
    let (_, analysis) = lora();
    assert_eq!(analysis.modules.len(), 12);
    let pins = [
        (point(Method::Osd, 4, 0.5), 0.5875),
        (point(Method::Osd, 6, 0.5), 0.3222),
        (point(Method::Osd, 2, 0.0), 0.9117),
    ];
    for (p, pinned) in pins {
        let got = exact(&analysis, &p);
        assert!(
            got <= pinned + 2e-3,
            "{p:?}: error {got:.4} worse than pinned {pinned}"
        );
        assert!(
            got >= pinned - 5e-2,
            "{p:?}: error {got:.4} suspiciously better than {pinned}: re-pin"
        );
    }
}

#[test]
fn osd_beats_truncated_svd_at_equal_bits_on_the_lora_fixture() {
    let (_, analysis) = lora();
    for rank in [4, 6] {
        let osd = exact(&analysis, &point(Method::Osd, rank, 0.5));
        // Dense TruncSVD at rank r keeps the top r of 8 equal-ish components.
        let curve = analysis.overall_energy();
        let trunc = (1.0 - curve[rank - 1]).max(0.0).sqrt();
        assert!(
            osd < trunc,
            "rank {rank}: osd {osd:.4} vs truncsvd {trunc:.4}"
        );
    }
}

#[test]
fn estimate_tracks_the_exact_error() {
    let (_, analysis) = lora();
    for (rank, s) in [(2, 0.25), (4, 0.5), (6, 0.5)] {
        let p = point(Method::Osd, rank, s);
        let est = analysis.estimate(&p).rel_error;
        let got = exact(&analysis, &p);
        assert!(
            (est - got).abs() < 0.05,
            "rank {rank} s {s}: estimate {est:.4}, exact {got:.4}"
        );
    }
}

#[test]
fn blend_with_full_rank_is_exact_and_alpha_zero_is_low_rank() {
    let (_, analysis) = lora();
    let full = exact(
        &analysis,
        &OsdParams {
            method: Method::Blend,
            rank: 8,
            sparsity: 0.0,
            alpha: 1.0,
            budget_bits: None,
        },
    );
    assert!(full < 1e-3, "rank-8 blend of a rank-8 delta: {full}");
    let low = exact(
        &analysis,
        &OsdParams {
            method: Method::Blend,
            rank: 4,
            sparsity: 0.05,
            alpha: 0.0,
            budget_bits: None,
        },
    );
    let curve = analysis.overall_energy();
    assert!((low - (1.0 - curve[3]).sqrt()).abs() < 1e-3);
}

#[test]
fn dora_needs_the_base_and_uses_it() {
    let contents = ExpertContents::from_adapter_dir(&fixture("minilm-dora-r8")).unwrap();
    let adapter = contents.adapter.as_ref().unwrap();
    let without = AdapterAnalysis::from_adapter(adapter, None, 16).unwrap();
    assert!(without.modules.is_empty());
    assert!(!without.skipped.is_empty());
    let base = BaseWeights::load(&fixture("merge/base-layer0-subset.safetensors")).unwrap();
    let with = AdapterAnalysis::from_adapter(adapter, Some(&base), 16).unwrap();
    assert!(with
        .modules
        .iter()
        .any(|m| m.delta.module.ends_with("layer.0.attention.self.query")));
    // DoRA deltas are full rank: more than r = 8 components carry energy.
    let q = with
        .modules
        .iter()
        .find(|m| m.delta.module.ends_with("layer.0.attention.self.query"))
        .unwrap();
    assert!(q.energy[7] < 0.9999, "energy at rank 8: {}", q.energy[7]);
}

#[test]
fn compress_verb_writes_a_valid_expert_with_osd_sections() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("osd.expert");
    let output = Command::cargo_bin("expertui")
        .unwrap()
        .args(["--headless", "osd", "compress"])
        .arg(fixture("minilm-lora-r8"))
        .args(["-o"])
        .arg(&out)
        .args(["--rank", "4", "--sparsity", "0.5", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["modules"], 12);
    assert!(
        report["compressed_bytes"].as_u64().unwrap() * 2
            <= report["original_bytes"].as_u64().unwrap() + 16
    );
    let reader = ExpertReader::open(&out).unwrap();
    reader.verify_all().unwrap();
    let osd: Vec<_> = reader.find_all(SectionType::Osd).collect();
    assert_eq!(osd.len(), 6);
    let entries = decode_layer(&reader.section(osd[0].index).unwrap()).unwrap();
    assert_eq!(entries.len(), 2);
    assert!(
        reader.find_all(SectionType::Tensors).next().is_none(),
        "LoRA tensors replaced"
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &reader
            .section_named(SectionType::Manifest, "manifest.json")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["osd"]["rank"], 4);
}

#[test]
fn analyze_and_tune_verbs_report_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("energy.svg");
    let output = Command::cargo_bin("expertui")
        .unwrap()
        .args(["--headless", "osd", "analyze"])
        .arg(fixture("minilm-lora-r8"))
        .arg("--plot")
        .arg(&plot)
        .arg("--json")
        .output()
        .unwrap();
    assert!(output.status.success());
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let overall = v["overall_energy"].as_array().unwrap();
    assert!((overall.last().unwrap().as_f64().unwrap() - 1.0).abs() < 1e-6);
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<svg"));
    let output = Command::cargo_bin("expertui")
        .unwrap()
        .args(["--headless", "osd", "tune"])
        .arg(fixture("minilm-lora-r8"))
        .args(["--ranks", "2,4", "--sparsities", "0.25,0.5", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    assert!(points.iter().any(|p| p["pareto"] == true));
}

#[test]
fn convert_keeps_osd_sections_and_refuses_forms_that_cannot_hold_them() {
    let dir = tempfile::tempdir().unwrap();
    let (contents, analysis) = lora();
    let p = point(Method::Osd, 4, 0.5);
    let osd = dir.path().join("osd.expert");
    expertui::osd::expert::write_compressed(&contents, &analysis, &p, &osd, &Default::default())
        .unwrap();
    let copy = dir.path().join("copy.expert");
    let status = Command::cargo_bin("expertui")
        .unwrap()
        .args(["--headless", "convert"])
        .arg(&osd)
        .arg("-o")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let original = ExpertReader::open(&osd).unwrap();
    let converted = ExpertReader::open(&copy).unwrap();
    let payloads = |r: &ExpertReader| -> Vec<Vec<u8>> {
        r.find_all(SectionType::Osd)
            .map(|s| r.section(s.index).unwrap().to_vec())
            .collect()
    };
    assert_eq!(payloads(&original), payloads(&converted));
    assert_eq!(payloads(&converted).len(), 6);
    let out = Command::cargo_bin("expertui")
        .unwrap()
        .args(["--headless", "convert"])
        .arg(&osd)
        .arg("-o")
        .arg(dir.path().join("x.tar.gz"))
        .args(["--to", "tar.gz"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OSD"));
}

/// Activation-aware importance: with calibration inputs that use only some
/// input features, the compressed module keeps what those inputs see, so
/// its output error on them is lower than without calibration.
#[test]
fn calibration_lowers_the_output_error_on_its_inputs() {
    use expertui::format::tensors::{encode_tensor_blob, OwnedTensor};
    use expertui::osd::analysis::output_error;
    use expertui::osd::expert::load_calibration;
    let dir = tempfile::tempdir().unwrap();
    let module = "encoder.layer.0.attention.self.query";
    // 64 samples over 384 features, only the first 48 active.
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut data = Vec::new();
    for _ in 0..64 {
        for j in 0..384 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = if j < 48 {
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            } else {
                0.0
            };
            data.extend_from_slice(&v.to_le_bytes());
        }
    }
    let x = OwnedTensor {
        name: module.into(),
        dtype: safetensors::Dtype::F32,
        shape: vec![64, 384],
        data,
    };
    let path = dir.path().join("calibration.safetensors");
    std::fs::write(&path, encode_tensor_blob(&[x], Default::default()).unwrap()).unwrap();
    let calibration = load_calibration(&path).unwrap();
    let contents = ExpertContents::from_adapter_dir(&fixture("minilm-lora-r8")).unwrap();
    let adapter = contents.adapter.as_ref().unwrap();
    let (deltas, skipped) = expertui::osd::delta::adapter_deltas(adapter, None).unwrap();
    let plain = AdapterAnalysis::from_deltas(deltas.clone(), skipped.clone(), 16).unwrap();
    let aware =
        AdapterAnalysis::from_deltas_calibrated(deltas, skipped, 16, Some(&calibration)).unwrap();
    let p = point(Method::Osd, 2, 0.5);
    let pick = |a: &AdapterAnalysis| {
        let m = a.modules.iter().find(|m| m.delta.module == module).unwrap();
        let (osd, _) = m.compress(&p, None).unwrap();
        let delta = m.delta.dense().unwrap();
        output_error(&calibration[module], &delta, &osd.reconstruct()).unwrap()
    };
    let (without, with) = (pick(&plain), pick(&aware));
    assert!(
        with < without,
        "output error with calibration {with:.4} vs without {without:.4}"
    );
    assert!(aware
        .modules
        .iter()
        .find(|m| m.delta.module == module)
        .unwrap()
        .calibration
        .is_some());
}
