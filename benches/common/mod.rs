//! What the benches share: the synthetic adapters they measure, written as
//! PEFT folders, and the machine line of their reports.

#![allow(dead_code)] // each bench uses its own subset

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use expertui::format::tensors::{encode_tensor_blob, OwnedTensor};
use safetensors::Dtype;

/// Median and spread of repeated timings, in milliseconds.
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Runs `f` once to warm up, then `repeat` times.
pub fn measure(repeat: usize, mut f: impl FnMut()) -> Stat {
    f();
    let mut times: Vec<f64> = (0..repeat.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    Stat {
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
    }
}

/// `median ms (min–max)`.
pub fn fmt(s: &Stat) -> String {
    format!("{:.3} ms ({:.3}–{:.3})", s.median, s.min, s.max)
}

/// Deterministic pseudo-random values (xorshift64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Roughly normal (sum of uniforms), scaled like LoRA weights.
    pub fn weight(&mut self) -> f32 {
        let s: f32 = (0..4)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum();
        (s - 2.0) * 0.02
    }

    /// A Gaussian value (Box–Muller), scaled like LoRA weights.
    pub fn gaussian_weight(&mut self) -> f32 {
        let u1 = ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let g = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (g * 0.02) as f32
    }

    /// `n` weights as little-endian f32 bytes.
    pub fn weights(&mut self, n: usize) -> Vec<u8> {
        (0..n).flat_map(|_| self.weight().to_le_bytes()).collect()
    }
}

/// A Qwen3-0.6B-shaped adapter (r = 12 on q,k,v,o,up,down; 28 layers make
/// about 25.8 MB in 504 tensors with DoRA, like the real expert-sql
/// package); DoRA adds the magnitude vectors.
pub fn qwen_adapter(layers: usize, dora: bool) -> Vec<OwnedTensor> {
    qwen_tensors(layers, dora, Rng(0x9E37_79B9_7F4A_7C15), Rng::weight)
}

/// The LoRA of [`qwen_adapter`] with independent Gaussian factors, so every
/// module's B·A has full rank 12 (OSD's speed depends on the rank).
pub fn qwen_lora_gaussian(layers: usize) -> Vec<OwnedTensor> {
    qwen_tensors(layers, false, Rng(0x05D_5EED), Rng::gaussian_weight)
}

fn qwen_tensors(
    layers: usize,
    dora: bool,
    mut rng: Rng,
    value: fn(&mut Rng) -> f32,
) -> Vec<OwnedTensor> {
    let r = 12;
    let modules = [
        ("self_attn.q_proj", 2048, 1024),
        ("self_attn.k_proj", 1024, 1024),
        ("self_attn.v_proj", 1024, 1024),
        ("self_attn.o_proj", 1024, 2048),
        ("mlp.up_proj", 3072, 1024),
        ("mlp.down_proj", 1024, 3072),
    ];
    let mut out = Vec::new();
    let mut tensor = |name: String, shape: Vec<usize>, rng: &mut Rng| {
        let data = (0..shape.iter().product::<usize>())
            .flat_map(|_| value(rng).to_le_bytes())
            .collect();
        out.push(OwnedTensor {
            name,
            dtype: Dtype::F32,
            shape,
            data,
        });
    };
    for layer in 0..layers {
        for (module, out_dim, in_dim) in modules {
            let base = format!("base_model.model.model.layers.{layer}.{module}");
            tensor(format!("{base}.lora_A.weight"), vec![r, in_dim], &mut rng);
            tensor(format!("{base}.lora_B.weight"), vec![out_dim, r], &mut rng);
            if dora {
                let name = format!("{base}.lora_magnitude_vector");
                tensor(name, vec![out_dim], &mut rng);
            }
        }
    }
    out
}

/// The PEFT config of [`qwen_adapter`].
pub fn qwen_config(dora: bool) -> String {
    format!(
        r#"{{"peft_type":"LORA","r":12,"lora_alpha":24,"use_dora":{dora},"use_rslora":false,
"target_modules":["q_proj","k_proj","v_proj","o_proj","up_proj","down_proj"],"fan_in_fan_out":false,
"base_model_name_or_path":"Qwen/Qwen3-0.6B","rank_pattern":{{}},"alpha_pattern":{{}}}}"#
    )
}

/// Writes a PEFT folder (`adapter_model.safetensors` + `adapter_config.json`);
/// returns the safetensors file's size.
pub fn write_adapter_dir(dir: &Path, tensors: &[OwnedTensor], config: &str) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let blob = encode_tensor_blob(tensors, meta).unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), &blob).unwrap();
    std::fs::write(dir.join("adapter_config.json"), config).unwrap();
    blob.len() as u64
}

/// CPU model, cores, OS and architecture, for the report's heading.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{cpu}, {cores} cores, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
