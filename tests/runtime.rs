//! Runtime: fuse against PEFT's reference merges, streaming and the layer
//! cache, the expert manager (LRU, hot-swap without drift), and the `fuse`
//! and `bench` verbs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use candle_core::{Device, Tensor};
use expertui::format::package::{ExpertContents, PackageOptions};
use expertui::format::ExpertReader;
use expertui::gpu::base::BaseCheckpoint;
use expertui::gpu::device_tensors::tensor_to_bytes;
use expertui::gpu::fuse::{fuse_checkpoint, fuse_into_map, fuse_module_candle};
use expertui::gpu::stream::{stream_order, LayerCache, LayerStream};
use expertui::gpu::{AdapterWeights, ExpertManager, LoadOptions, ManagerConfig};
use safetensors::SafeTensors;

const TOLERANCE: f32 = 1e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn base_path() -> PathBuf {
    fixtures().join("merge/base-layer0-subset.safetensors")
}

/// Packages a PEFT fixture folder as a binary expert in `dir`.
fn package(variant: &str, dir: &Path) -> PathBuf {
    let contents = ExpertContents::from_adapter_dir(&fixtures().join(format!("minilm-{variant}")))
        .expect("fixture reads");
    let out = dir.join(format!("{variant}.expert"));
    contents
        .write_binary(&out, &PackageOptions::default(), &mut |_, _| {})
        .expect("packages");
    out
}

fn base_map() -> HashMap<String, Tensor> {
    let base = BaseCheckpoint::open(&[base_path()]).unwrap();
    base.names()
        .iter()
        .map(|n| (n.clone(), base.tensor(n, &Device::Cpu, None).unwrap()))
        .collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// PEFT's merged tensors for a variant: base name → (row stride, shape, values).
fn reference(variant: &str) -> HashMap<String, (usize, Vec<usize>, Vec<f32>)> {
    let bytes =
        std::fs::read(fixtures().join(format!("merge/{variant}-reference.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let (base, stride) = match name.split_once(".rows_every_") {
                Some((base, n)) => (base.to_string(), n.parse().unwrap()),
                None => (name.clone(), 1),
            };
            (base, (stride, view.shape().to_vec(), f32s(view.data())))
        })
        .collect()
}

/// Max |fused − reference| over the rows the reference keeps.
fn max_error(fused: &[f32], shape: &[usize], stride: usize, reference: &[f32]) -> f32 {
    let cols = if shape.len() == 2 { shape[1] } else { 1 };
    let mut max = 0f32;
    for (k, row) in reference.chunks(cols).enumerate() {
        let r = k * stride;
        for (c, want) in row.iter().enumerate() {
            max = max.max((fused[r * cols + c] - want).abs());
        }
    }
    max
}

/// Fuses `variant` in memory and through the checkpoint writer, compares
/// with PEFT; returns the max abs errors (map path, file path).
fn check_variant(variant: &str) -> (f32, f32) {
    let dir = tempfile::tempdir().unwrap();
    let file = package(variant, dir.path());
    let adapter = AdapterWeights::open(&file, &LoadOptions::default()).unwrap();
    let reference = reference(variant);
    let base = base_map();

    // In memory.
    let (changed, report) = fuse_into_map(&adapter, &base).unwrap();
    let mut changed_names: Vec<_> = changed.keys().cloned().collect();
    changed_names.sort();
    let mut ref_names: Vec<_> = reference.keys().cloned().collect();
    ref_names.sort();
    assert_eq!(
        changed_names, ref_names,
        "{variant}: the tensors PEFT changed"
    );
    // Layers 1–5 are not in the layer-0 base: reported, not fused.
    assert!(report
        .missing
        .iter()
        .all(|m| !m.module.contains("layer.0.")));
    assert_eq!(
        report.fused.len() + report.missing.len(),
        adapter.modules.len()
    );
    let mut worst_map = 0f32;
    for (name, (stride, _, want)) in &reference {
        let t = &changed[name];
        let (_, bytes) = tensor_to_bytes(t).unwrap();
        let err = max_error(&f32s(&bytes), t.dims(), *stride, want);
        assert!(err <= TOLERANCE, "{variant} {name}: max abs error {err:e}");
        worst_map = worst_map.max(err);
    }

    // Through the checkpoint writer: every base tensor present, merged where
    // adapted, the others bit-identical.
    let checkpoint = BaseCheckpoint::open(&[base_path()]).unwrap();
    let out = dir.path().join("merged.safetensors");
    let report =
        fuse_checkpoint(&adapter, &checkpoint, &out, &Device::Cpu, &mut |_, _| {}).unwrap();
    let layer0 = adapter
        .modules
        .iter()
        .filter(|m| m.layer == Some(0))
        .count();
    assert_eq!(
        report.fused.len(),
        layer0,
        "{variant}: every layer-0 module fused"
    );
    assert_eq!(report.missing.len(), adapter.modules.len() - layer0);
    let merged_bytes = std::fs::read(&out).unwrap();
    let merged = SafeTensors::deserialize(&merged_bytes).unwrap();
    let base_bytes = std::fs::read(base_path()).unwrap();
    let base_st = SafeTensors::deserialize(&base_bytes).unwrap();
    assert_eq!(merged.len(), base_st.len());
    let mut worst_file = 0f32;
    for (name, base_view) in base_st.tensors() {
        let view = merged.tensor(&name).unwrap();
        assert_eq!(view.shape(), base_view.shape());
        match reference.get(&name) {
            Some((stride, _, want)) => {
                let err = max_error(&f32s(view.data()), view.shape(), *stride, want);
                assert!(err <= TOLERANCE, "{variant} {name} (file): {err:e}");
                worst_file = worst_file.max(err);
            }
            None => assert_eq!(
                view.data(),
                base_view.data(),
                "{variant}: {name} is untouched by PEFT and must stay bit-identical"
            ),
        }
    }
    // The candle path (what CUDA runs) on the same inputs.
    let mut worst_candle = 0f32;
    for module in &adapter.modules {
        let Some(weight) = base.get(&module.base_tensor) else {
            continue;
        };
        let bias = base.get(&module.base_tensor.replace(".weight", ".bias"));
        let fused = fuse_module_candle(&adapter, module, weight, bias).unwrap();
        let (stride, _, want) = &reference[&module.base_tensor];
        let (_, bytes) = tensor_to_bytes(&fused.weight).unwrap();
        let err = max_error(&f32s(&bytes), weight.dims(), *stride, want);
        assert!(
            err <= TOLERANCE,
            "{variant} {} (candle): {err:e}",
            module.module
        );
        worst_candle = worst_candle.max(err);
    }
    println!(
        "{variant}: max abs error vs PEFT {worst_map:e} (host, in memory), {worst_file:e} (host, written), {worst_candle:e} (candle ops)"
    );
    (worst_map, worst_file)
}

#[test]
fn lora_matches_peft() {
    check_variant("lora-r8");
}

#[test]
fn dora_matches_peft() {
    check_variant("dora-r8");
}

#[test]
fn ia3_matches_peft() {
    check_variant("ia3");
}

#[test]
fn rslora_with_patterns_matches_peft() {
    check_variant("lora-rslora-pattern");
}

#[test]
fn legacy_package_fuses_like_the_binary() {
    // The legacy tar.gz of the DoRA fixture goes through ExpertLoader.
    let legacy = fixtures().join("minilm-sql-dora.v0.3.0.expert");
    let adapter = AdapterWeights::open(&legacy, &LoadOptions::default()).unwrap();
    assert_eq!(adapter.format.label(), "tar.gz");
    assert!(!adapter.warnings.is_empty(), "deprecation notice");
    let (changed, _) = fuse_into_map(&adapter, &base_map()).unwrap();
    for (name, (stride, _, want)) in reference("dora-r8") {
        let t = &changed[&name];
        let (_, bytes) = tensor_to_bytes(t).unwrap();
        let err = max_error(&f32s(&bytes), t.dims(), stride, &want);
        assert!(err <= TOLERANCE, "legacy {name}: {err:e}");
    }
}

#[test]
fn soft_prompt_is_exposed_as_a_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let file = package("prompt-tuning", dir.path());
    let adapter = AdapterWeights::open(&file, &LoadOptions::default()).unwrap();
    let prompt = adapter.soft_prompt().expect("soft prompt");
    assert_eq!(prompt.dims(), &[8, 384]);
    assert!(adapter.modules.is_empty());
    // Same values as PEFT's file.
    let peft =
        std::fs::read(fixtures().join("minilm-prompt-tuning/adapter_model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&peft).unwrap();
    let (_, view) = st.tensors().into_iter().next().unwrap();
    assert_eq!(tensor_to_bytes(prompt).unwrap().1, view.data());
}

#[test]
fn streaming_yields_layer_zero_first_one_section_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let file = package("dora-r8", dir.path());
    let reader = ExpertReader::open(&file).unwrap();
    let mut stream = LayerStream::new(&reader, LoadOptions::default());
    // Layers 0–5, then the non-layer section (DoRA on `dense` adapts the pooler too).
    assert_eq!(stream.total(), 7);
    assert_eq!(stream.decoded(), 0);
    let first = stream.next().unwrap().unwrap();
    assert_eq!(first.layer, Some(0));
    assert_eq!(
        stream.decoded(),
        1,
        "layer 1 is not read before it is asked for"
    );
    assert!(first.modules().iter().all(|m| m.layer == Some(0)));
    assert!(first
        .get("base_model.model.encoder.layer.0.attention.self.query.lora_A.weight")
        .is_some());
    let rest: Vec<_> = stream.map(|s| s.unwrap().layer).collect();
    assert_eq!(
        rest,
        vec![Some(1), Some(2), Some(3), Some(4), Some(5), None]
    );
}

#[test]
fn layer_cache_respects_its_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let file = package("lora-r8", dir.path());
    let reader = ExpertReader::open(&file).unwrap();
    let options = LoadOptions::default();
    let order = stream_order(&reader);
    let one = LayerStream::new(&reader, options.clone())
        .next()
        .unwrap()
        .unwrap()
        .bytes;
    // Room for two and a half layers.
    let mut cache = LayerCache::new(one * 5 / 2);
    for &index in &order {
        cache.section(1, &reader, index, &options).unwrap();
        assert!(cache.used_bytes() <= cache.budget());
    }
    assert_eq!(cache.len(), 2);
    let last_two: Vec<_> = order[order.len() - 2..].iter().map(|&i| (1, i)).collect();
    assert_eq!(cache.keys(), last_two, "least recently used evicted first");
    assert_eq!(cache.stats().evictions as usize, order.len() - 2);
    // A hit moves the layer to the back; the next insert evicts the other.
    cache
        .section(1, &reader, order[order.len() - 2], &options)
        .unwrap();
    assert_eq!(cache.stats().hits, 1);
    cache.section(1, &reader, order[0], &options).unwrap();
    assert_eq!(
        cache.keys(),
        vec![(1, order[order.len() - 2]), (1, order[0])]
    );
    // A layer larger than the budget is handed out but not kept.
    let mut tiny = LayerCache::new(one / 2);
    tiny.section(1, &reader, order[0], &options).unwrap();
    assert!(tiny.is_empty());
    assert_eq!(tiny.stats().uncached, 1);
}

#[test]
fn manager_evicts_least_recently_used_beyond_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let file = package("lora-r8", dir.path());
    let mut manager = ExpertManager::new(ManagerConfig {
        capacity: 3,
        ..ManagerConfig::default()
    });
    assert_eq!(ExpertManager::default().capacity(), 10);
    for id in ["a", "b", "c", "d"] {
        manager.register(id, &file).unwrap();
    }
    for id in ["a", "b", "c"] {
        assert!(manager.load(id).unwrap().evicted.is_empty());
    }
    manager.get("a"); // a is now the most recently used
    let outcome = manager.load("d").unwrap();
    assert_eq!(outcome.evicted, vec!["b".to_string()]);
    assert_eq!(manager.loaded(), vec!["c", "a", "d"]);
    // Memory per expert, per device.
    let memory = manager.memory();
    assert_eq!(memory.len(), 3);
    assert!(memory
        .iter()
        .all(|m| m.device == "cpu" && m.adapter_bytes == outcome.bytes));
    assert_eq!(manager.expert_bytes(), 3 * outcome.bytes);
    // Applied experts are never evicted.
    manager.set_base(base_map()).unwrap();
    manager.apply("c").unwrap();
    manager.load("b").unwrap(); // evicts a (LRU, not applied), not c
    assert!(manager.is_loaded("c") && !manager.is_loaded("a"));
    assert!(manager
        .memory()
        .iter()
        .any(|m| m.id == "c" && m.applied && m.fused_bytes > 0));
    // Unload cleans up: removed from the fused weights, tensors dropped.
    assert!(manager.unload("c").unwrap());
    assert!(manager.applied().is_empty());
    assert!(!manager.unload("c").unwrap());
    assert!(manager.load("nope").is_err());
}

fn assert_bit_identical(
    weights: &HashMap<String, Tensor>,
    base: &HashMap<String, Vec<u8>>,
    when: &str,
) {
    assert_eq!(weights.len(), base.len());
    for (name, bytes) in base {
        let (_, now) = tensor_to_bytes(&weights[name]).unwrap();
        assert!(now == *bytes, "{name} drifted {when}");
    }
}

#[test]
fn thousand_load_unload_cycles_leave_the_base_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let lora = package("lora-r8", dir.path());
    let ia3 = package("ia3", dir.path());
    // The attention tensors both adapters touch (LoRA: query, value; IA³:
    // key, value and their biases).
    let base: HashMap<String, Tensor> = base_map()
        .into_iter()
        .filter(|(n, _)| n.contains(".attention.self."))
        .collect();
    let base_bytes: HashMap<String, Vec<u8>> = base
        .iter()
        .map(|(n, t)| (n.clone(), tensor_to_bytes(t).unwrap().1))
        .collect();
    // Section digests are checked elsewhere; here the loads are about
    // drift (and hashing in a debug build would dominate the run time).
    let mut manager = ExpertManager::new(ManagerConfig {
        load: LoadOptions {
            verify: false,
            ..LoadOptions::default()
        },
        ..ManagerConfig::default()
    });
    manager.register("lora", &lora).unwrap();
    manager.register("ia3", &ia3).unwrap();
    manager.set_base(base).unwrap();
    manager.apply("lora").unwrap();
    let lora_fused: HashMap<String, Vec<u8>> = manager
        .weights()
        .iter()
        .map(|(n, t)| (n.clone(), tensor_to_bytes(t).unwrap().1))
        .collect();
    assert_ne!(lora_fused, base_bytes);
    manager.unload("lora").unwrap();
    for cycle in 0..1000 {
        manager.load("lora").unwrap();
        manager.apply("lora").unwrap();
        if cycle % 100 == 0 {
            assert_bit_identical(manager.weights(), &lora_fused, "with lora applied");
            // Stacked: ia3 on top of lora, then ia3 removed.
            manager.apply("ia3").unwrap();
            manager.remove("ia3").unwrap();
            assert_bit_identical(
                manager.weights(),
                &lora_fused,
                "after removing ia3 from the stack",
            );
        }
        manager.swap("lora", "ia3").unwrap(); // hot-swap A for B
        manager.unload("lora").unwrap();
        manager.unload("ia3").unwrap();
        assert!(manager.loaded().is_empty() && manager.applied().is_empty());
    }
    assert_bit_identical(manager.weights(), &base_bytes, "after 1000 cycles");
}

fn expertui() -> Command {
    Command::cargo_bin("expertui").unwrap()
}

/// A base checkpoint whose names carry a `bert.` prefix, in two shards
/// with an index, as real checkpoints ship.
fn sharded_prefixed_base(dir: &Path) -> PathBuf {
    let bytes = std::fs::read(base_path()).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<_> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let folder = dir.join("sharded");
    std::fs::create_dir_all(&folder).unwrap();
    let mut weight_map = serde_json::Map::new();
    for (k, chunk) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", k + 1);
        let views: Vec<_> = chunk
            .iter()
            .map(|n| (format!("bert.{n}"), st.tensor(n).unwrap()))
            .collect();
        for (n, _) in &views {
            weight_map.insert(n.clone(), file.clone().into());
        }
        safetensors::serialize_to_file(views, None, &folder.join(&file)).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        folder.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    folder
}

#[test]
fn fuse_cli_writes_readable_merged_weights_and_reports_missing_modules() {
    let dir = tempfile::tempdir().unwrap();
    let file = package("lora-r8", dir.path());
    let out = dir.path().join("merged.safetensors");
    let run = expertui()
        .args(["--headless", "fuse"])
        .arg(&file)
        .arg("--base")
        .arg(base_path())
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&run.get_output().stderr).to_string();
    assert!(
        stderr.contains("skipped encoder.layer.1.attention.self.query"),
        "{stderr}"
    );
    let merged = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&merged).unwrap();
    assert_eq!(st.len(), 8, "every base tensor is written");
    let reference = reference("lora-r8");
    let q = "encoder.layer.0.attention.self.query.weight";
    let view = st.tensor(q).unwrap();
    let (stride, _, want) = &reference[q];
    assert!(max_error(&f32s(view.data()), view.shape(), *stride, want) <= TOLERANCE);

    // JSON: fused and missing modules listed.
    let run = expertui()
        .args(["--headless", "--json", "fuse"])
        .arg(&file)
        .arg("--base")
        .arg(base_path())
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&run.get_output().stdout).unwrap();
    assert_eq!(json["fused"].as_array().unwrap().len(), 2);
    assert_eq!(json["missing"].as_array().unwrap().len(), 10);
    assert_eq!(json["tensors"], 8);

    // --strict: exit 3, nothing written.
    let strict_out = dir.path().join("strict.safetensors");
    expertui()
        .args(["--headless", "fuse", "--strict"])
        .arg(&file)
        .arg("--base")
        .arg(base_path())
        .arg("-o")
        .arg(&strict_out)
        .assert()
        .code(3);
    assert!(!strict_out.exists());
}

#[test]
fn fuse_cli_reads_sharded_prefixed_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let file = package("ia3", dir.path());
    let folder = sharded_prefixed_base(dir.path());
    let out = dir.path().join("merged.safetensors");
    let run = expertui()
        .args(["--headless", "--json", "fuse"])
        .arg(&file)
        .arg("--base")
        .arg(&folder)
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&run.get_output().stdout).unwrap();
    assert_eq!(json["base_files"].as_array().unwrap().len(), 2);
    let fused = json["fused"].as_array().unwrap();
    assert_eq!(fused.len(), 4);
    assert!(fused.iter().all(|f| f["by_suffix"] == true));
    let merged = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&merged).unwrap();
    assert_eq!(st.len(), 8);
    for (name, (stride, _, want)) in reference("ia3") {
        let view = st.tensor(&format!("bert.{name}")).unwrap();
        let err = max_error(&f32s(view.data()), view.shape(), stride, &want);
        assert!(err <= TOLERANCE, "{name}: {err:e}");
    }
    // Several files given one by one work the same.
    let mut shards: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    shards.sort();
    expertui()
        .args(["--headless", "fuse"])
        .arg(&file)
        .arg("--base")
        .args(&shards)
        .arg("-o")
        .arg(dir.path().join("merged2.safetensors"))
        .assert()
        .success();
    assert_eq!(
        std::fs::read(dir.path().join("merged2.safetensors")).unwrap(),
        merged
    );
}

#[test]
fn fuse_cli_refuses_cuda_without_the_feature_and_soft_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let file = package("lora-r8", dir.path());
    if !cfg!(feature = "cuda") {
        let run = expertui()
            .args(["--headless", "fuse"])
            .arg(&file)
            .arg("--base")
            .arg(base_path())
            .args(["-o", "/dev/null", "--device", "cuda:0"])
            .assert()
            .code(1);
        let stderr = String::from_utf8_lossy(&run.get_output().stderr).to_string();
        assert!(stderr.contains("--features cuda"), "{stderr}");
    }
    let prompt = package("prompt-tuning", dir.path());
    expertui()
        .args(["--headless", "fuse"])
        .arg(&prompt)
        .arg("--base")
        .arg(base_path())
        .arg("-o")
        .arg(dir.path().join("x.safetensors"))
        .assert()
        .code(3);
}

#[test]
fn bench_cli_reports_every_figure_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = package("lora-r8", dir.path());
    let run = expertui()
        .args(["--headless", "--json", "bench"])
        .arg(&file)
        .arg("--base")
        .arg(base_path())
        .args(["--repeat", "2"])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&run.get_output().stdout).unwrap();
    for key in [
        "machine",
        "device",
        "file_bytes",
        "tensor_bytes",
        "modules",
        "repeat",
        "figures",
    ] {
        assert!(!json[key].is_null(), "{key} missing");
    }
    assert_eq!(json["fuse_base"], "base");
    let figures = json["figures"].as_array().unwrap();
    let keys: Vec<&str> = figures.iter().map(|f| f["key"].as_str().unwrap()).collect();
    for key in [
        "cold_load",
        "hot_load",
        "hot_load_verified",
        "validation",
        "verify_throughput",
        "first_layer",
        "host_to_device",
        "fuse_module",
        "fuse_adapter",
        "fuse_bandwidth",
        "memory_per_expert",
        "rss_per_expert",
    ] {
        assert!(keys.contains(&key), "figure {key} missing from {keys:?}");
    }
    for f in figures {
        for field in ["median", "min", "max", "samples"] {
            assert!(f["value"][field].is_number(), "{}: {field}", f["key"]);
        }
        let anchors = f["anchors"].as_array().unwrap();
        assert!(!anchors.is_empty(), "{} has no anchor", f["key"]);
        assert!(anchors
            .iter()
            .all(|a| a["value"]["median"].is_number() && !a["ratio"].is_null()));
    }
    let cold = figures.iter().find(|f| f["key"] == "cold_load").unwrap();
    let labels: Vec<&str> = cold["anchors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels.len(),
        3,
        "the cold file read, safetensors and legacy: {labels:?}"
    );
    assert!(labels[0].contains("plain read"), "{labels:?}");
    // The text table names each figure beside its anchor; --plot writes
    // one bar per (figure, anchor).
    let plot = dir.path().join("bench.svg");
    let run = expertui()
        .args(["--headless", "bench"])
        .arg(&file)
        .args(["--repeat", "1", "--plot"])
        .arg(&plot)
        .assert()
        .success();
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.contains("cold load to ready tensors vs safetensors crate"),
        "the plot names each comparison"
    );
    assert!(svg.contains("relative to the anchor"));
    let text = String::from_utf8_lossy(&run.get_output().stdout).to_string();
    assert!(
        text.contains("cold load") && text.contains("safetensors crate"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&run.get_output().stderr).contains("cold load"));
}

/// An OSD expert is fused at load: W' = W + U·Vt from its section. A rank-8
/// TruncSVD of the rank-8 LoRA fixture is exact, so the
/// fused weights must match PEFT's own merge; a rank-4 OSD expert must fuse
/// to exactly W + its reconstruction.
#[test]
fn osd_experts_fuse_at_load() {
    use expertui::osd::analysis::{Method, OsdParams};
    use expertui::osd::expert::{write_compressed, AdapterAnalysis};
    let dir = tempfile::tempdir().unwrap();
    let contents = ExpertContents::from_adapter_dir(&fixtures().join("minilm-lora-r8")).unwrap();
    let analysis =
        AdapterAnalysis::from_adapter(contents.adapter.as_ref().unwrap(), None, 16).unwrap();
    let exact = OsdParams {
        method: Method::Truncsvd,
        rank: 8,
        ..OsdParams::default()
    };
    let file = dir.path().join("osd-exact.expert");
    write_compressed(
        &contents,
        &analysis,
        &exact,
        &file,
        &PackageOptions::default(),
    )
    .unwrap();
    let adapter = AdapterWeights::open(&file, &LoadOptions::default()).unwrap();
    assert!(adapter
        .modules
        .iter()
        .all(|m| m.kind == expertui::format::tensors::ModuleKind::Osd));
    let (changed, report) = fuse_into_map(&adapter, &base_map()).unwrap();
    assert_eq!(report.fused.len(), 2, "layer 0 query and value");
    for (name, (stride, _, want)) in reference("lora-r8") {
        let t = &changed[&name];
        let (_, bytes) = tensor_to_bytes(t).unwrap();
        let err = max_error(&f32s(&bytes), t.dims(), stride, &want);
        assert!(err <= 1e-4, "{name}: max abs error {err:e} against PEFT");
    }
    let lossy = OsdParams {
        method: Method::Osd,
        rank: 4,
        ..OsdParams::default()
    };
    let file = dir.path().join("osd-lossy.expert");
    write_compressed(
        &contents,
        &analysis,
        &lossy,
        &file,
        &PackageOptions::default(),
    )
    .unwrap();
    let adapter = AdapterWeights::open(&file, &LoadOptions::default()).unwrap();
    let base = base_map();
    let (changed, _) = fuse_into_map(&adapter, &base).unwrap();
    let q = "encoder.layer.0.attention.self.query.weight";
    let module = analysis
        .modules
        .iter()
        .find(|m| m.delta.base_tensor == q)
        .unwrap();
    let (osd, _) = module.compress(&lossy, None).unwrap();
    let mut expected = expertui::osd::Matrix::from_tensor(&{
        let (_, b) = tensor_to_bytes(&base[q]).unwrap();
        expertui::format::tensors::OwnedTensor {
            name: q.into(),
            dtype: safetensors::Dtype::F32,
            shape: vec![384, 384],
            data: b,
        }
    })
    .unwrap();
    osd.fuse_into(&mut expected).unwrap();
    let (_, got) = tensor_to_bytes(&changed[q]).unwrap();
    let worst = f32s(&got)
        .iter()
        .zip(&expected.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-6,
        "fused at load vs OsdModule::fuse_into: {worst:e}"
    );
}

/// A checked load hashes OSD sections too: one flipped byte in the OSD
/// payload is a corruption error naming the section, not wrong weights.
#[test]
fn a_damaged_osd_section_is_refused_at_a_checked_load() {
    use expertui::format::SectionType;
    use expertui::osd::analysis::{Method, OsdParams};
    use expertui::osd::expert::{write_compressed, AdapterAnalysis};
    let dir = tempfile::tempdir().unwrap();
    let contents = ExpertContents::from_adapter_dir(&fixtures().join("minilm-lora-r8")).unwrap();
    let analysis =
        AdapterAnalysis::from_adapter(contents.adapter.as_ref().unwrap(), None, 16).unwrap();
    let params = OsdParams {
        method: Method::Osd,
        rank: 4,
        ..OsdParams::default()
    };
    let file = dir.path().join("osd.expert");
    write_compressed(
        &contents,
        &analysis,
        &params,
        &file,
        &PackageOptions::default(),
    )
    .unwrap();
    let (offset, name) = {
        let reader = expertui::format::ExpertReader::open(&file).unwrap();
        let info = reader
            .sections()
            .iter()
            .find(|s| s.kind == SectionType::Osd)
            .expect("an OSD section");
        (info.offset + info.stored_len / 2, info.name.clone())
    };
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[offset as usize] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let Err(err) = AdapterWeights::open(&file, &LoadOptions::default()) else {
        panic!("a damaged OSD section was loaded");
    };
    let err = err.to_string();
    assert!(err.contains(&name) && err.contains("is damaged"), "{err}");
}

/// Writes the LoRA fixture compressed at `params`; returns the file and
/// the compressor's report.
fn osd_expert(
    dir: &Path,
    params: &expertui::osd::analysis::OsdParams,
) -> (PathBuf, expertui::osd::expert::CompressReport) {
    use expertui::osd::expert::{write_compressed, AdapterAnalysis};
    let contents = ExpertContents::from_adapter_dir(&fixtures().join("minilm-lora-r8")).unwrap();
    let analysis =
        AdapterAnalysis::from_adapter(contents.adapter.as_ref().unwrap(), None, 16).unwrap();
    let file = dir.join(format!("{:?}-{}.expert", params.method, params.dtype));
    let (_, report) = write_compressed(
        &contents,
        &analysis,
        params,
        &file,
        &PackageOptions::default(),
    )
    .unwrap();
    (file, report)
}

/// W + Δ̂ for the layer-0 query weight, from the module as stored.
fn expected_fuse(file: &Path, base: &HashMap<String, Tensor>) -> Vec<f32> {
    let q = "encoder.layer.0.attention.self.query.weight";
    let reader = ExpertReader::open(file).unwrap();
    let section = reader
        .find_all(expertui::format::SectionType::Osd)
        .find(|s| s.layer == Some(0))
        .unwrap();
    let entries =
        expertui::osd::section::decode_layer(&reader.section(section.index).unwrap()).unwrap();
    let entry = entries.iter().find(|e| e.base_tensor == q).unwrap();
    let (_, b) = tensor_to_bytes(&base[q]).unwrap();
    let mut w = expertui::osd::Matrix::new(384, 384, f32s(&b)).unwrap();
    entry.osd.fuse_into(&mut w).unwrap();
    w.data
}

/// OSD experts stay factored: what a loaded expert holds is its stored
/// bytes (≤ 1.1× the compressed tensors, here 1.0×), no dense delta; the
/// host kernel and the candle path both give W + Δ̂, for the low-rank
/// methods and for a blend's sparse part.
#[test]
fn osd_experts_load_factored_and_fuse_without_a_dense_delta() {
    use expertui::osd::analysis::{Method, OsdParams};
    use expertui::osd::ValueDtype;
    let dir = tempfile::tempdir().unwrap();
    let base = base_map();
    let q = "encoder.layer.0.attention.self.query.weight";
    for params in [
        OsdParams {
            method: Method::Osd,
            dtype: ValueDtype::Bf16,
            rank: 3,
            ..OsdParams::default()
        },
        OsdParams {
            method: Method::LowrankSparse,
            dtype: ValueDtype::F16,
            rank: 2,
            sparsity: 0.01,
            alpha: 0.5,
            ..OsdParams::default()
        },
    ] {
        let (file, report) = osd_expert(dir.path(), &params);
        let adapter = AdapterWeights::open(&file, &LoadOptions::default()).unwrap();
        assert!(
            adapter.tensors.is_empty(),
            "no dense tensors for OSD modules"
        );
        assert_eq!(adapter.osd.len(), 12);
        let held = adapter.bytes() as u64;
        assert!(
            held * 10 <= report.tensor_bytes * 11,
            "{:?}: {held} bytes held for {} stored",
            params.method,
            report.tensor_bytes
        );
        let want = expected_fuse(&file, &base);
        let (host, _) = fuse_into_map(&adapter, &base).unwrap();
        let (_, got) = tensor_to_bytes(&host[q]).unwrap();
        let worst = f32s(&got)
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-6, "{:?} host: {worst:e}", params.method);
        let module = adapter.modules.iter().find(|m| m.base_tensor == q).unwrap();
        let fused = fuse_module_candle(&adapter, module, &base[q], None).unwrap();
        let (_, got) = tensor_to_bytes(&fused.weight).unwrap();
        let worst = f32s(&got)
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-5, "{:?} candle: {worst:e}", params.method);
    }
}

/// Streaming hands out OSD sections too, as ready factor tensors whose
/// product is the module's delta.
#[test]
fn streaming_yields_osd_layers_as_factors() {
    use expertui::osd::analysis::{Method, OsdParams};
    let dir = tempfile::tempdir().unwrap();
    let params = OsdParams {
        method: Method::Truncsvd,
        rank: 8,
        ..OsdParams::default()
    };
    let (file, _) = osd_expert(dir.path(), &params);
    let reader = ExpertReader::open(&file).unwrap();
    let mut stream = LayerStream::new(&reader, LoadOptions::default());
    assert_eq!(stream.total(), 6);
    let first = stream.next().unwrap().unwrap();
    assert_eq!(first.layer, Some(0));
    let module = "encoder.layer.0.attention.self.query";
    let info = first.modules().iter().find(|m| m.module == module).unwrap();
    assert_eq!(info.kind, expertui::format::tensors::ModuleKind::Lora);
    let b = first.get(&format!("{module}.osd.B")).unwrap();
    let a = first.get(&format!("{module}.osd.A")).unwrap();
    assert_eq!(
        (b.dims(), a.dims()),
        (&[384usize, 8][..], &[8usize, 384][..])
    );
    // A rank-8 TruncSVD of a rank-8 LoRA: B·A is PEFT's scaled delta.
    let contents = ExpertContents::from_adapter_dir(&fixtures().join("minilm-lora-r8")).unwrap();
    let lora = contents.adapter.as_ref().unwrap();
    let (deltas, _) = expertui::osd::delta::adapter_deltas(lora, None).unwrap();
    let delta = deltas
        .iter()
        .find(|d| d.module == module)
        .unwrap()
        .dense()
        .unwrap();
    let got: Vec<f32> = b
        .matmul(a)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let worst = got
        .iter()
        .zip(&delta.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "{worst:e}");
}

/// `convert --to peft` writes an OSD expert's low-rank modules as LoRA
/// factors that fuse to the same weights; a blend is refused with the way out.
#[test]
fn osd_experts_export_to_peft_and_blends_are_refused() {
    use expertui::osd::analysis::{Method, OsdParams};
    use expertui::osd::ValueDtype;
    let dir = tempfile::tempdir().unwrap();
    let base = base_map();
    let q = "encoder.layer.0.attention.self.query.weight";
    let params = OsdParams {
        method: Method::Osd,
        dtype: ValueDtype::Bf16,
        rank: 3,
        ..OsdParams::default()
    };
    let (file, _) = osd_expert(dir.path(), &params);
    let out = dir.path().join("peft");
    let status = expertui()
        .args(["convert"])
        .arg(&file)
        .args(["--to", "peft", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["use_dora"], false);
    let exported = ExpertContents::from_adapter_dir(&out).unwrap();
    let lora = exported.adapter.as_ref().unwrap();
    assert_eq!(lora.modules.len(), 12);
    assert!(lora.modules.iter().all(|m| m.scale == Some(1.0)));
    assert!(lora
        .tensors
        .iter()
        .all(|t| t.dtype == safetensors::Dtype::BF16));
    let packaged = dir.path().join("peft.expert");
    exported
        .write_binary(&packaged, &PackageOptions::default(), &mut |_, _| {})
        .unwrap();
    let adapter = AdapterWeights::open(&packaged, &LoadOptions::default()).unwrap();
    let (fused, _) = fuse_into_map(&adapter, &base).unwrap();
    let (_, got) = tensor_to_bytes(&fused[q]).unwrap();
    let want = expected_fuse(&file, &base);
    let worst = f32s(&got)
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-6, "exported LoRA vs OSD fuse: {worst:e}");

    let blend = OsdParams {
        method: Method::LowrankSparse,
        rank: 2,
        ..OsdParams::default()
    };
    let (file, _) = osd_expert(dir.path(), &blend);
    let status = expertui()
        .args(["convert"])
        .arg(&file)
        .args(["--to", "peft", "-o"])
        .arg(dir.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("fuse"), "{stderr}");
    assert!(!dir
        .path()
        .join("nope")
        .join("adapter_model.safetensors")
        .exists());
}
