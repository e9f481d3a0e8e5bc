//! Hot-swapping experts on one base with `ExpertManager`: several experts are
//! loaded, applied (fused into the base weights), swapped and unloaded; the
//! memory held per expert is shown, and at the end the weights are checked
//! to be bit-identical to the base.
//!
//! ```sh
//! cargo run --release --example hot_swap -- [BASE.safetensors] [FIXTURES_DIR] [OUT_DIR]
//! ```
//!
//! Defaults: `tests/fixtures/merge/base-layer0-subset.safetensors` (the real
//! MiniLM weights of layer 0), the LoRA r8, IA³ and DoRA r8 fixtures under
//! `tests/fixtures`, and a temporary folder for the packaged experts. Only
//! the modules whose base tensor is in the base file are fused; the others
//! are reported as missing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use expertui::format::package::{ExpertContents, PackageOptions};
use expertui::gpu::device_tensors::tensor_to_bytes;
use expertui::gpu::{BaseCheckpoint, ExpertManager, ManagerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args_os().skip(1);
    let base_path = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("tests/fixtures/merge/base-layer0-subset.safetensors"));
    let fixtures = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("tests/fixtures"));
    let temp;
    let out_dir = match args.next() {
        Some(dir) => PathBuf::from(dir),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&out_dir)?;

    // 1. Package three experts from PEFT folders.
    let mut experts = Vec::new();
    for variant in ["lora-r8", "ia3", "dora-r8"] {
        let contents =
            ExpertContents::from_adapter_dir(&fixtures.join(format!("minilm-{variant}")))?;
        let path = out_dir.join(format!("{variant}.expert"));
        contents.write_binary(&path, &PackageOptions::default(), &mut |_, _| {})?;
        experts.push((variant, path));
    }

    // 2. A manager on the CPU holding at most two experts at once (the default
    //    is 10), and the base weights it fuses into.
    let mut manager = ExpertManager::new(ManagerConfig {
        capacity: 2,
        ..ManagerConfig::default()
    });
    let base = BaseCheckpoint::open(std::slice::from_ref(&base_path))?;
    manager.set_base_from(&base, None)?;
    let snapshot = bytes_of(manager.weights())?;
    println!(
        "base {}: {} tensors, {} bytes on {}",
        base_path.display(),
        snapshot.len(),
        manager.base_bytes(),
        expertui::gpu::device_label(manager.device())
    );
    for (id, path) in &experts {
        manager.register(id, path)?;
    }

    // 3. Load two experts (their tensors go to the device, section digests
    //    checked) and apply one.
    for id in ["lora-r8", "ia3"] {
        let outcome = manager.load(id)?;
        println!("load {id}: {} bytes of adapter tensors", outcome.bytes);
    }
    let report = manager.apply("lora-r8")?;
    println!(
        "apply lora-r8: {} modules fused, {} without a base tensor",
        report.fused.len(),
        report.missing.len()
    );
    show_memory(&manager);

    // 4. Loading a third expert beyond the capacity evicts the least recently
    //    used expert that is not applied (ia3), never an applied one.
    let outcome = manager.load("dora-r8")?;
    println!(
        "load dora-r8: {} bytes, evicted {:?}",
        outcome.bytes, outcome.evicted
    );

    // 5. Hot-swap: lora-r8 out, dora-r8 in. The manager puts the pristine
    //    base tensors back and fuses the new expert; nothing is subtracted.
    let report = manager.swap("lora-r8", "dora-r8")?;
    println!(
        "swap lora-r8 -> dora-r8: {} modules fused, applied now {:?}",
        report.fused.len(),
        manager.applied()
    );
    // Stack a second expert on top. It was evicted, so `apply` loads it again,
    // evicting lora-r8 (loaded but no longer applied) to stay within two.
    let report = manager.apply("ia3")?;
    println!(
        "apply ia3 on top: {} modules fused, applied now {:?}, loaded {:?}",
        report.fused.len(),
        manager.applied(),
        manager.loaded()
    );
    show_memory(&manager);

    // 6. Unload everything and compare with the base, bit for bit.
    for id in manager.loaded() {
        manager.unload(&id)?;
        println!("unload {id}");
    }
    let now = bytes_of(manager.weights())?;
    let compared: usize = snapshot.values().map(Vec::len).sum();
    if now != snapshot {
        return Err("the weights differ from the base after unloading".into());
    }
    println!(
        "base restored bit-exactly: {} tensors, {} bytes compared; {} experts loaded, {} bytes held",
        now.len(),
        compared,
        manager.loaded().len(),
        manager.expert_bytes()
    );
    Ok(())
}

/// Every tensor's raw bytes, by name.
fn bytes_of(
    weights: &HashMap<String, candle_core::Tensor>,
) -> Result<HashMap<String, Vec<u8>>, Box<dyn std::error::Error>> {
    weights
        .iter()
        .map(|(name, t)| Ok((name.clone(), tensor_to_bytes(t)?.1)))
        .collect()
}

fn show_memory(manager: &ExpertManager) {
    println!(
        "  {:<10} {:>8} {:>14} {:>14}",
        "expert", "applied", "adapter bytes", "fused bytes"
    );
    for m in manager.memory() {
        println!(
            "  {:<10} {:>8} {:>14} {:>14}",
            m.id, m.applied, m.adapter_bytes, m.fused_bytes
        );
    }
    println!(
        "  total held for experts: {} bytes (base: {} bytes)",
        manager.expert_bytes(),
        manager.base_bytes()
    );
}
