//! The benchmark engine shared by `expertui --headless bench` and the TUI
//! panel: every figure measured beside its anchor in the same run, progress
//! through a callback (nothing printed here).
//!
//! Figures (each a median with min–max over `repeat` runs):
//! - cold / hot load to ready tensors vs the safetensors crate on the same
//!   tensors and vs the legacy tar.gz package (cold: the file is evicted from
//!   the page cache with `posix_fadvise(DONTNEED)` before each run, and the
//!   residency left afterwards is measured with `mincore`);
//! - validation (structure + root digest) vs safetensors' header parse, and
//!   verify throughput (every section hashed, in parallel) vs one SHA-256
//!   stream over the same bytes;
//! - first-layer latency when streaming vs the whole hot load;
//! - host → device bandwidth vs a copy on the device (memcpy on CPU);
//! - fuse latency per module and for the whole adapter vs a copy of the same
//!   bytes (% of copy bandwidth);
//! - memory per loaded expert (accounted device bytes and RSS) vs the
//!   adapter's tensor bytes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::adapter::AdapterWeights;
use super::device::device_label;
use super::device_tensors::{tensor_nbytes, view_to_tensor};
use super::error::{Result, RuntimeError};
use crate::format::tensors::{ModuleInfo, ModuleKind};

mod families;
mod hot_swap;
mod report;
pub use hot_swap::{hot_swap, SwapStep};
pub use report::{num, Anchor, BenchReport, Figure, Machine, Stats};

/// What to benchmark and how often.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub file: PathBuf,
    /// Base checkpoint for the fuse figures (synthetic weights of the
    /// adapter's shapes when empty).
    pub base: Vec<PathBuf>,
    pub device: String,
    pub repeat: usize,
    /// Set from another thread to stop the run between figure families
    /// (the TUI's Esc); the run then ends with an error saying so.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Progress of a run: a stage and how far through all stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchProgress {
    pub stage: String,
    pub step: usize,
    pub steps: usize,
}

/// Evicts a file from the page cache; returns the fraction still resident.
pub fn evict_from_page_cache(path: &Path) -> Result<f64> {
    let file = std::fs::File::open(path).map_err(|e| RuntimeError::io(path, e))?;
    // Dirty pages cannot be dropped: write them back first.
    let _ = file.sync_all();
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscall on a descriptor we own.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(RuntimeError::io(
                path,
                std::io::Error::from_raw_os_error(rc),
            ));
        }
    }
    Ok(resident_fraction(&file))
}

/// Fraction of a file's pages in the page cache (`mincore`); NaN if unknown.
fn resident_fraction(file: &std::fs::File) -> f64 {
    #[cfg(target_os = "linux")]
    {
        let Ok(len) = file.metadata().map(|m| m.len() as usize) else {
            return f64::NAN;
        };
        if len == 0 {
            return 0.0;
        }
        // SAFETY: read-only map, only its residency is queried.
        let Ok(map) = (unsafe { memmap2::Mmap::map(file) }) else {
            return f64::NAN;
        };
        let page = 4096usize;
        let pages = len.div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: `vec` has one byte per page of the mapping.
        let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, vec.as_mut_ptr()) };
        if rc != 0 {
            return f64::NAN;
        }
        vec.iter().filter(|b| **b & 1 == 1).count() as f64 / pages as f64
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        f64::NAN
    }
}

/// Resident set size of this process, bytes.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn sync(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Runs `f` `n` times, returning milliseconds per run.
fn time_ms(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f()?;
            Ok(ms(t))
        })
        .collect()
}

/// Loads every tensor of a safetensors file onto `device` (the anchor).
fn load_safetensors(path: &Path, device: &Device) -> Result<usize> {
    let file = std::fs::File::open(path).map_err(|e| RuntimeError::io(path, e))?;
    // SAFETY: read-only map of a file this run wrote and does not change.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| RuntimeError::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&map)
        .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    let mut bytes = 0;
    for (_, view) in st.tensors() {
        bytes += tensor_nbytes(&view_to_tensor(&view, device, None)?);
    }
    sync(device)?;
    Ok(bytes)
}

/// Deterministic values in [-0.05, 0.05) for synthetic base weights.
fn synthetic(shape: (usize, usize), seed: u64, device: &Device) -> Result<Tensor> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect();
    Ok(Tensor::from_vec(values, shape, device)?)
}

/// The base weight shape a module applies to, from its adapter tensors
/// (IA³ only knows one side: assumed square).
fn module_shape(adapter: &AdapterWeights, m: &ModuleInfo) -> Result<(usize, usize)> {
    let dims = |role: &str| -> Result<Vec<usize>> { Ok(adapter.role(m, role)?.dims().to_vec()) };
    let (out, inn) = match m.kind {
        ModuleKind::Lora | ModuleKind::Dora => (dims("B")?[0], dims("A")?[1]),
        ModuleKind::LoraEmbedding => (dims("embedding_A")?[1], dims("embedding_B")?[0]),
        ModuleKind::Osd => {
            let resident = adapter.osd_module(m)?;
            (resident.n, resident.d)
        }
        ModuleKind::Ia3 => {
            let l = dims("ia3")?;
            let n = l.iter().copied().max().unwrap_or(1);
            (n, n)
        }
    };
    Ok(if m.fan_in_fan_out && m.kind != ModuleKind::LoraEmbedding {
        (inn, out)
    } else {
        (out, inn)
    })
}

/// Runs the benchmark: inputs, then each family of figures in turn.
pub fn run_bench(
    config: &BenchConfig,
    progress: &mut dyn FnMut(&BenchProgress),
) -> Result<BenchReport> {
    // Preparing the inputs, each family, done.
    let steps = families::FAMILIES.len() + 2;
    let mut step = 0;
    let mut stage = |name: &str| {
        step += 1;
        progress(&BenchProgress {
            stage: name.to_string(),
            step,
            steps,
        });
    };
    stage("preparing inputs");
    let mut notes = Vec::new();
    let inputs = families::prepare(config, &mut notes)?;
    let mut run = families::Run {
        inputs: &inputs,
        figures: Vec::new(),
        notes,
        hot: Stats::of(&[]),
        fuse_base: String::new(),
    };
    for (name, family) in families::FAMILIES {
        let cancelled = config
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed));
        if cancelled {
            return Err(RuntimeError::Invalid("cancelled".into()));
        }
        stage(name);
        family(&mut run)?;
    }
    stage("done");
    Ok(BenchReport {
        machine: Machine::this(),
        device: device_label(&inputs.device),
        file: config.file.display().to_string(),
        format: inputs.source_format.label().into(),
        file_bytes: inputs.file_bytes,
        tensor_bytes: inputs.tensor_bytes,
        tensor_sections: inputs.tensor_sections.len(),
        modules: inputs.adapter.modules.len(),
        repeat: inputs.repeat,
        fuse_base: run.fuse_base,
        figures: run.figures,
        notes: run.notes,
    })
}
