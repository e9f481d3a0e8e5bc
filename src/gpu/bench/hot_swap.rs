//! The hot-swap demo the benchmark panel runs: one file registered as more
//! experts than the manager holds, loaded, reused, evicted and unloaded, with
//! the memory per expert after every step.

use std::path::Path;

use crate::gpu::adapter::LoadOptions;
use crate::gpu::device::parse_device;
use crate::gpu::error::Result;
use crate::gpu::manager::{ExpertManager, ExpertMemory, ManagerConfig};

/// One step of the hot-swap demo and the memory held after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapStep {
    pub action: String,
    /// Memory per loaded expert after the step, least recently used first.
    pub memory: Vec<ExpertMemory>,
}

impl SwapStep {
    /// Bytes held for all loaded experts.
    pub fn total(&self) -> usize {
        self.memory.iter().map(ExpertMemory::total).sum()
    }
}

/// The hot-swap demo (worker thread): registers `path` as `capacity + 1`
/// experts in an [`ExpertManager`] on `device` (no base: the memory is the
/// loaded adapters'), loads `capacity` of them, uses the first again, loads
/// one more (the least recently used is evicted), then unloads them all.
/// `on_step` gets each step with the memory per expert after it.
pub fn hot_swap(path: &Path, device: &str, on_step: &mut dyn FnMut(SwapStep)) -> Result<()> {
    let device = parse_device(device)?;
    let mut manager = ExpertManager::new(ManagerConfig {
        load: LoadOptions::on(device),
        ..ManagerConfig::default()
    });
    let capacity = manager.capacity();
    let ids: Vec<String> = (1..=capacity + 1)
        .map(|i| format!("expert-{i:02}"))
        .collect();
    for id in &ids {
        manager.register(id, path)?;
    }
    let mut step = |manager: &ExpertManager, action: String| {
        on_step(SwapStep {
            action,
            memory: manager.memory(),
        })
    };
    step(
        &manager,
        format!("register {} copies (capacity {capacity})", ids.len()),
    );
    for id in &ids[..capacity] {
        manager.load(id)?;
        step(&manager, format!("load {id}"));
    }
    manager.get(&ids[0]);
    step(&manager, format!("use {} (most recently used)", ids[0]));
    let last = &ids[capacity];
    let outcome = manager.load(last)?;
    let evicted = if outcome.evicted.is_empty() {
        "nothing evicted".to_string()
    } else {
        format!("evicts {} (LRU)", outcome.evicted.join(", "))
    };
    step(&manager, format!("load {last}: {evicted}"));
    for id in manager.loaded() {
        manager.unload(&id)?;
        step(&manager, format!("unload {id}"));
    }
    Ok(())
}
