//! `ExpertManager`: register, load and unload experts (LRU beyond a
//! capacity, 10 by default), account their memory per device, and apply /
//! remove them on fused base weights without drift.
//!
//! Fusing never edits the base: candle tensors are immutable, so the
//! manager keeps the pristine base tensors and a `current` view that shares
//! them except where an applied expert replaced a tensor. Removing an expert
//! puts the pristine tensors back (no subtraction of deltas) and re-applies
//! the experts still applied, in order, so the weights after any sequence of
//! apply/remove are bit-identical to fusing the remaining experts afresh:
//! with none left, to the base.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::adapter::{AdapterWeights, LoadOptions};
use super::base::BaseCheckpoint;
use super::device::device_label;
use super::device_tensors::tensor_nbytes;
use super::error::{Result, RuntimeError};
use super::fuse::{fuse_into_map, FuseReport};

/// Experts kept loaded at once by default.
pub const DEFAULT_CAPACITY: usize = 10;

/// Settings of an [`ExpertManager`].
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Most experts loaded at once; loading one more evicts the least
    /// recently used expert that is not applied.
    pub capacity: usize,
    /// How experts are loaded (device, dtype, digest checks).
    pub load: LoadOptions,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CAPACITY,
            load: LoadOptions::default(),
        }
    }
}

/// Memory held for one loaded expert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpertMemory {
    /// The expert's id.
    pub id: String,
    /// The device, as `cpu` or `cuda:N`.
    pub device: String,
    /// Adapter tensors on the device.
    pub adapter_bytes: usize,
    /// Merged copies of base tensors while the expert is applied.
    pub fused_bytes: usize,
    /// Whether it is fused into the current weights.
    pub applied: bool,
}

impl ExpertMemory {
    /// Adapter and fused bytes together.
    pub fn total(&self) -> usize {
        self.adapter_bytes + self.fused_bytes
    }
}

/// What a `load` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOutcome {
    /// It was loaded already (now most recently used).
    pub already_loaded: bool,
    /// Experts evicted to make room, least recently used first.
    pub evicted: Vec<String>,
    /// Bytes of the expert's tensors on the device.
    pub bytes: usize,
}

enum Source {
    File(PathBuf),
    Weights(Box<AdapterWeights>),
}

struct Slot {
    id: String,
    weights: AdapterWeights,
}

struct Applied {
    id: String,
    /// Base tensors this expert replaced in `current`.
    touched: Vec<String>,
    bytes: usize,
}

/// Registers, loads and applies experts on one base (see the module docs).
pub struct ExpertManager {
    config: ManagerConfig,
    registry: BTreeMap<String, Source>,
    /// Least recently used first.
    loaded: VecDeque<Slot>,
    pristine: HashMap<String, Tensor>,
    current: HashMap<String, Tensor>,
    applied: Vec<Applied>,
}

impl Default for ExpertManager {
    fn default() -> Self {
        Self::new(ManagerConfig::default())
    }
}

impl ExpertManager {
    /// An empty manager (a capacity of 0 counts as 1).
    pub fn new(config: ManagerConfig) -> Self {
        Self {
            config: ManagerConfig {
                capacity: config.capacity.max(1),
                ..config
            },
            registry: BTreeMap::new(),
            loaded: VecDeque::new(),
            pristine: HashMap::new(),
            current: HashMap::new(),
            applied: Vec::new(),
        }
    }

    /// Most experts loaded at once.
    pub fn capacity(&self) -> usize {
        self.config.capacity
    }

    /// The device experts and base live on.
    pub fn device(&self) -> &Device {
        &self.config.load.device
    }

    /// Registers an expert file under `id` (replacing a previous one, which
    /// is unloaded first).
    pub fn register(&mut self, id: &str, path: &Path) -> Result<()> {
        if !path.is_file() {
            return Err(RuntimeError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such expert file"),
            ));
        }
        self.unregister(id)?;
        self.registry
            .insert(id.to_string(), Source::File(path.to_path_buf()));
        Ok(())
    }

    /// Registers weights already loaded (moved to the manager's device on load).
    pub fn register_weights(&mut self, id: &str, weights: AdapterWeights) -> Result<()> {
        self.unregister(id)?;
        self.registry
            .insert(id.to_string(), Source::Weights(Box::new(weights)));
        Ok(())
    }

    /// Forgets an expert (removing and unloading it first).
    pub fn unregister(&mut self, id: &str) -> Result<()> {
        self.unload(id)?;
        self.registry.remove(id);
        Ok(())
    }

    /// Registered expert ids, sorted.
    pub fn registered(&self) -> Vec<String> {
        self.registry.keys().cloned().collect()
    }

    /// True when the expert's tensors are loaded.
    pub fn is_loaded(&self, id: &str) -> bool {
        self.loaded.iter().any(|s| s.id == id)
    }

    /// Loaded experts, least recently used first.
    pub fn loaded(&self) -> Vec<String> {
        self.loaded.iter().map(|s| s.id.clone()).collect()
    }

    fn touch(&mut self, id: &str) -> Option<&AdapterWeights> {
        let pos = self.loaded.iter().position(|s| s.id == id)?;
        let slot = self.loaded.remove(pos)?;
        self.loaded.push_back(slot);
        self.loaded.back().map(|s| &s.weights)
    }

    /// A loaded expert's weights (marks it most recently used).
    pub fn get(&mut self, id: &str) -> Option<&AdapterWeights> {
        self.touch(id)
    }

    /// Loads a registered expert onto the device, evicting the least
    /// recently used unapplied experts beyond the capacity.
    pub fn load(&mut self, id: &str) -> Result<LoadOutcome> {
        if let Some(w) = self.touch(id) {
            return Ok(LoadOutcome {
                already_loaded: true,
                evicted: Vec::new(),
                bytes: w.bytes(),
            });
        }
        let source = self
            .registry
            .get(id)
            .ok_or_else(|| RuntimeError::UnknownExpert(id.to_string()))?;
        let mut evicted = Vec::new();
        while self.loaded.len() >= self.config.capacity {
            let victim = self
                .loaded
                .iter()
                .position(|s| !self.is_applied(&s.id))
                .ok_or_else(|| {
                    RuntimeError::Invalid(format!(
                        "all {} loaded experts are applied: remove one before loading {id:?}",
                        self.loaded.len()
                    ))
                })?;
            if let Some(slot) = self.loaded.remove(victim) {
                evicted.push(slot.id);
            }
        }
        let weights = match source {
            Source::File(path) => AdapterWeights::open(path, &self.config.load)?,
            Source::Weights(w) => w.to_device(&self.config.load.device)?,
        };
        let bytes = weights.bytes();
        self.loaded.push_back(Slot {
            id: id.to_string(),
            weights,
        });
        Ok(LoadOutcome {
            already_loaded: false,
            evicted,
            bytes,
        })
    }

    /// Unloads an expert (removing it from the fused weights first) and frees
    /// its tensors. `false` when it was not loaded.
    pub fn unload(&mut self, id: &str) -> Result<bool> {
        if self.is_applied(id) {
            self.remove(id)?;
        }
        let Some(pos) = self.loaded.iter().position(|s| s.id == id) else {
            return Ok(false);
        };
        self.loaded.remove(pos);
        Ok(true)
    }

    /// Sets the base weights the experts are applied to (nothing applied).
    pub fn set_base(&mut self, weights: HashMap<String, Tensor>) -> Result<()> {
        if !self.applied.is_empty() {
            return Err(RuntimeError::Invalid(
                "remove the applied experts before changing the base".into(),
            ));
        }
        let device = self.config.load.device.clone();
        let weights = weights
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_device(&device)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        self.current = weights.clone();
        self.pristine = weights;
        Ok(())
    }

    /// Takes base tensors from a checkpoint: all of them, or the named ones.
    pub fn set_base_from(&mut self, base: &BaseCheckpoint, names: Option<&[String]>) -> Result<()> {
        let device = self.config.load.device.clone();
        let all = base.names();
        let names = names.unwrap_or(all);
        let weights = names
            .iter()
            .map(|n| Ok((n.clone(), base.tensor(n, &device, None)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        self.set_base(weights)
    }

    /// The pristine base.
    pub fn base(&self) -> &HashMap<String, Tensor> {
        &self.pristine
    }

    /// The weights with every applied expert fused in.
    pub fn weights(&self) -> &HashMap<String, Tensor> {
        &self.current
    }

    /// True when the expert is fused into the current weights.
    pub fn is_applied(&self, id: &str) -> bool {
        self.applied.iter().any(|a| a.id == id)
    }

    /// Applied experts in the order they were fused.
    pub fn applied(&self) -> Vec<String> {
        self.applied.iter().map(|a| a.id.clone()).collect()
    }

    /// Fuses an expert (loading it if needed) into the current weights.
    pub fn apply(&mut self, id: &str) -> Result<FuseReport> {
        if self.is_applied(id) {
            return Ok(FuseReport::default());
        }
        self.load(id)?;
        self.fuse_current(id)
    }

    fn fuse_current(&mut self, id: &str) -> Result<FuseReport> {
        let weights = self
            .loaded
            .iter()
            .find(|s| s.id == id)
            .map(|s| &s.weights)
            .ok_or_else(|| RuntimeError::UnknownExpert(id.to_string()))?;
        let (changed, report) = fuse_into_map(weights, &self.current)?;
        let bytes = changed.values().map(tensor_nbytes).sum();
        let touched = changed.keys().cloned().collect();
        self.current.extend(changed);
        self.applied.push(Applied {
            id: id.to_string(),
            touched,
            bytes,
        });
        Ok(report)
    }

    /// Removes an expert from the fused weights: the tensors any applied
    /// expert replaced get their pristine tensors back, and the experts still
    /// applied are fused again in order.
    pub fn remove(&mut self, id: &str) -> Result<()> {
        let Some(pos) = self.applied.iter().position(|a| a.id == id) else {
            return Ok(());
        };
        let stack = std::mem::take(&mut self.applied);
        for applied in &stack {
            for name in &applied.touched {
                if let Some(t) = self.pristine.get(name) {
                    self.current.insert(name.clone(), t.clone());
                }
            }
        }
        for (i, applied) in stack.into_iter().enumerate() {
            if i != pos {
                self.fuse_current(&applied.id)?;
            }
        }
        Ok(())
    }

    /// Removes `from` and applies `to`.
    pub fn swap(&mut self, from: &str, to: &str) -> Result<FuseReport> {
        self.remove(from)?;
        self.apply(to)
    }

    /// Memory per loaded expert on the manager's device.
    pub fn memory(&self) -> Vec<ExpertMemory> {
        let device = device_label(&self.config.load.device);
        self.loaded
            .iter()
            .map(|s| {
                let applied = self.applied.iter().find(|a| a.id == s.id);
                ExpertMemory {
                    id: s.id.clone(),
                    device: device.clone(),
                    adapter_bytes: s.weights.bytes(),
                    fused_bytes: applied.map_or(0, |a| a.bytes),
                    applied: applied.is_some(),
                }
            })
            .collect()
    }

    /// Bytes held for experts (adapters plus merged copies).
    pub fn expert_bytes(&self) -> usize {
        self.memory().iter().map(ExpertMemory::total).sum()
    }

    /// Bytes of the pristine base tensors.
    pub fn base_bytes(&self) -> usize {
        self.pristine.values().map(tensor_nbytes).sum()
    }
}
