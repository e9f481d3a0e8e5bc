//! Fuse benchmarks: W' = W + Δ per module on CPU beside a copy of the same
//! weight (the memory-bound anchor), measured in the same run.
//! `cargo bench --bench fuse [-- LAYERS]` prints a Markdown table;
//! `cargo bench --bench fuse -- --make-7b DIR [LAYERS]` only writes the
//! synthetic 7B-shaped LoRA as a PEFT folder (for a GPU run).
//!
//! Two adapters: the real MiniLM DoRA r8 fixture on its real layer-0 base
//! weights (384-wide: every weight fits in cache), and a synthetic
//! 7B-shaped adapter (hidden 4096, rank 16 on q, k, v, o; LAYERS layers,
//! default 1) on random base weights of 64 MB each: memory-bound.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;

mod common;

use candle_core::{Device, Tensor};
use common::{machine, measure, write_adapter_dir, Rng};
use expertui::format::package::{ExpertContents, PackageOptions};
use expertui::format::tensors::OwnedTensor;
use expertui::gpu::{fuse_module, AdapterWeights, BaseCheckpoint, LoadOptions};
use safetensors::Dtype;

fn median_ms(repeat: usize, f: impl FnMut()) -> f64 {
    measure(repeat, f).median
}

fn package(dir: &Path, out: &Path) -> AdapterWeights {
    let contents = ExpertContents::from_adapter_dir(dir).unwrap();
    contents
        .write_binary(out, &PackageOptions::default(), &mut |_, _| {})
        .unwrap();
    AdapterWeights::open(out, &LoadOptions::default()).unwrap()
}

/// A module's LoRA factors (A [r, inn], B [out, r]) and, for DoRA, its
/// magnitude vector, named under `base`.
fn lora_tensors(
    rng: &mut Rng,
    base: &str,
    (out, inn): (usize, usize),
    dora: bool,
) -> Vec<OwnedTensor> {
    let r = 16;
    let mut shapes = vec![
        (format!("{base}.lora_A.weight"), vec![r, inn]),
        (format!("{base}.lora_B.weight"), vec![out, r]),
    ];
    if dora {
        shapes.push((format!("{base}.lora_magnitude_vector"), vec![out]));
    }
    shapes
        .into_iter()
        .map(|(name, shape)| OwnedTensor {
            name,
            dtype: Dtype::F32,
            data: rng.weights(shape.iter().product()),
            shape,
        })
        .collect()
}

/// `adapter_config.json` of a rank-16 LoRA (or DoRA) on `targets`.
fn lora_config(targets: &str, dora: bool) -> String {
    format!(
        r#"{{"peft_type":"LORA","r":16,"lora_alpha":32,"use_dora":{dora},"use_rslora":false,
"target_modules":[{targets}],"fan_in_fan_out":false,
"base_model_name_or_path":"synthetic","rank_pattern":{{}},"alpha_pattern":{{}}}}"#
    )
}

/// A LoRA (or DoRA) adapter shaped like a 7B model's attention: rank 16 on
/// q, k, v, o of `layers` layers, hidden 4096.
fn synthetic_7b(dir: &Path, layers: usize, dora: bool) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut tensors = Vec::new();
    for layer in 0..layers {
        for m in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            let base = format!("base_model.model.model.layers.{layer}.self_attn.{m}");
            tensors.extend(lora_tensors(&mut rng, &base, (4096, 4096), dora));
        }
    }
    let config = lora_config(r#""q_proj","k_proj","v_proj","o_proj""#, dora);
    write_adapter_dir(dir, &tensors, &config);
}

/// One module of `out × inn`, rank 16, as a PEFT folder packaged and loaded.
fn one_module(dir: &Path, out: usize, inn: usize, dora: bool) -> AdapterWeights {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let base = "base_model.model.model.layers.0.mlp.proj";
    let tensors = lora_tensors(&mut rng, base, (out, inn), dora);
    let folder = dir.join(format!("m-{out}-{inn}-{dora}"));
    write_adapter_dir(&folder, &tensors, &lora_config(r#""proj""#, dora));
    package(&folder, &folder.with_extension("expert"))
}

/// The fuse per module shape against its roofline: the time the bytes take
/// at this machine's warm memcpy bandwidth, and the time the FLOPs take at
/// its measured GEMM rate (faer, all cores, 1024³); the bound is the larger.
fn roofline(dir: &Path) {
    use faer::{Accum, Mat, Par};
    let n = 1024;
    let a = Mat::<f32>::from_fn(n, n, |i, j| ((i * 7 + j) % 13) as f32 * 0.01);
    let mut c = Mat::<f32>::zeros(n, n);
    let gemm_ms = median_ms(5, || {
        faer::linalg::matmul::matmul(
            c.as_mut(),
            Accum::Replace,
            a.as_ref(),
            a.as_ref(),
            1.0f32,
            Par::rayon(0),
        );
        black_box(&c);
    });
    let peak = 2.0 * (n as f64).powi(3) / (gemm_ms / 1e3);
    println!(
        "\nRoofline inputs, same run: GEMM {:.1} GFLOP/s (faer, 1024³, all cores); warm memcpy measured per shape.\n",
        peak / 1e9
    );
    println!("| shape (rank 16) | kind | fuse | warm memcpy of W | fuse / memcpy bandwidth | FLOPs per byte moved | roofline bound | fuse / bound |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (out, inn) in [(1024, 1024), (1024, 3072), (4096, 4096), (4096, 11008)] {
        for dora in [false, true] {
            let adapter = one_module(dir, out, inn, dora);
            let m = &adapter.modules[0];
            let w = Tensor::randn(0f32, 0.02, (out, inn), &Device::Cpu).unwrap();
            let repeat = if out * inn > 1 << 24 { 5 } else { 15 };
            let fuse = median_ms(repeat, || {
                black_box(fuse_module(&adapter, m, &w, None).unwrap());
            });
            let src = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut dst = vec![0f32; src.len()];
            let memcpy = median_ms(repeat, || {
                dst.copy_from_slice(black_box(&src));
                black_box(&dst);
            });
            let bytes = 2.0 * 4.0 * (out * inn) as f64;
            // P·Q: 2·r FLOPs per element; DoRA adds the row norm and scale.
            let flops = (2.0 * 16.0 + if dora { 3.0 } else { 0.0 }) * (out * inn) as f64;
            let bound = (memcpy / 1e3).max(flops / peak) * 1e3;
            println!(
                "| {out}×{inn} | {} | {fuse:.3} ms | {memcpy:.3} ms | {:.0} % | {:.1} | {bound:.3} ms ({}-bound) | {:.0} % |",
                if dora { "DoRA" } else { "LoRA" },
                memcpy / fuse * 100.0,
                flops / bytes,
                if memcpy / 1e3 >= flops / peak { "memory" } else { "compute" },
                bound / fuse * 100.0
            );
        }
    }
}

/// One table row: median over modules of the per-module medians.
fn row(label: &str, adapter: &AdapterWeights, base: &HashMap<String, Tensor>, repeat: usize) {
    let (mut fuse, mut copy, mut warm, mut bytes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for m in &adapter.modules {
        let Some(w) = base.get(&m.base_tensor) else {
            continue;
        };
        fuse.push(median_ms(repeat, || {
            black_box(fuse_module(adapter, m, w, None).unwrap());
        }));
        copy.push(median_ms(repeat, || {
            black_box(w.copy().unwrap());
        }));
        // memcpy into a buffer already mapped: memory bandwidth alone, no
        // page faults (a fuse must make a new tensor, so it cannot do this).
        let src = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut dst = vec![0f32; src.len()];
        warm.push(median_ms(repeat, || {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        }));
        bytes.push(w.elem_count() * 4);
    }
    if fuse.is_empty() {
        return;
    }
    // Bandwidths over all modules: a copy reads W and writes W' (2 × bytes).
    let total = bytes.iter().sum::<usize>() as f64;
    let gbs = |ms: &[f64]| 2.0 * total / 1e9 / (ms.iter().sum::<f64>() / 1e3);
    let (fuse_gbs, copy_gbs, warm_gbs) = (gbs(&fuse), gbs(&copy), gbs(&warm));
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let n = fuse.len();
    let (f, c, w) = (med(&mut fuse), med(&mut copy), med(&mut warm));
    println!(
        "| {label} ({n} modules, {:.1} MB of W) | {f:.3} ms; {fuse_gbs:.1} GB/s | {c:.3} ms; {copy_gbs:.1} GB/s | {:.0} % | {w:.3} ms; {warm_gbs:.1} GB/s | {:.0} % |",
        total / 1e6,
        fuse_gbs / copy_gbs * 100.0,
        fuse_gbs / warm_gbs * 100.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--make-7b") {
        // `-- --make-7b DIR [LAYERS]`: the 7B-shaped LoRA as a PEFT folder
        // (32 layers by default), for `expertui --headless package` and
        // `bench` on a GPU machine (docs/GPU.md).
        let dir = Path::new(args.get(i + 1).expect("--make-7b DIR [LAYERS]"));
        let layers = args.get(i + 2).and_then(|a| a.parse().ok()).unwrap_or(32);
        synthetic_7b(dir, layers, false);
        eprintln!(
            "wrote a {layers}-layer 7B-shaped LoRA r16 to {}",
            dir.display()
        );
        return;
    }
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes
    }
    let layers: usize = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1);
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    println!("{}\n", machine());
    println!(
        "| weights | fuse one module: median; bandwidth over all | copy of W to a new tensor (anchor) | fuse / copy | memcpy into a warm buffer | fuse / memcpy |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");

    let dora = package(
        &fixtures.join("minilm-dora-r8"),
        &tmp.path().join("dora.expert"),
    );
    let ckpt =
        BaseCheckpoint::open(&[fixtures.join("merge/base-layer0-subset.safetensors")]).unwrap();
    let base: HashMap<String, Tensor> = dora
        .modules
        .iter()
        .filter_map(|m| {
            let t = ckpt.tensor(&m.base_tensor, &Device::Cpu, None).ok()?;
            Some((m.base_tensor.clone(), t))
        })
        .collect();
    row("MiniLM DoRA r8, real base, 384 wide", &dora, &base, 50);

    for dora in [false, true] {
        let dir = tmp.path().join(format!("7b-{dora}"));
        synthetic_7b(&dir, layers, dora);
        let adapter = package(&dir, &tmp.path().join(format!("7b-{dora}.expert")));
        let base: HashMap<String, Tensor> = adapter
            .modules
            .iter()
            .map(|m| {
                let w = Tensor::randn(0f32, 0.02, (4096, 4096), &Device::Cpu).unwrap();
                (m.base_tensor.clone(), w)
            })
            .collect();
        let kind = if dora { "DoRA" } else { "LoRA" };
        row(
            &format!("7B-shaped {kind} r16, 4096×4096"),
            &adapter,
            &base,
            7,
        );
    }
    roofline(tmp.path());
}
