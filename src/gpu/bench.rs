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

use super::adapter::{AdapterWeights, LoadOptions};
use super::base::BaseCheckpoint;
use super::device::{device_label, parse_device};
use super::error::{Result, RuntimeError};
use super::fuse::{fuse_into_map, fuse_module};
use super::manager::{ExpertManager, ManagerConfig};
use super::stream::LayerStream;
use super::tensors::{raw_to_tensor, tensor_nbytes, view_to_tensor};
use crate::format::layout::SectionType;
use crate::format::legacy::{legacy_bytes, LegacyFile};
use crate::format::loader::{detect, ExpertLoader, SourceFormat};
use crate::format::package::{ExpertContents, PackageOptions};
use crate::format::tensors::{ModuleInfo, ModuleKind, TensorBlob};
use crate::format::ExpertReader;

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
        ModuleKind::Osd => (dims("delta")?[0], dims("delta")?[1]),
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

/// Runs the benchmark.
pub fn run_bench(
    config: &BenchConfig,
    progress: &mut dyn FnMut(&BenchProgress),
) -> Result<BenchReport> {
    let repeat = config.repeat.max(1);
    let device = parse_device(&config.device)?;
    let steps = 9;
    let mut step = 0;
    let mut stage = |name: &str| {
        step += 1;
        progress(&BenchProgress {
            stage: name.to_string(),
            step,
            steps,
        });
    };
    let mut notes = Vec::new();

    // Inputs: the binary file, the same tensors as plain safetensors, and
    // the same expert as a legacy tar.gz package.
    stage("preparing inputs");
    let work = tempfile::tempdir().map_err(|e| RuntimeError::io(Path::new("temp dir"), e))?;
    crate::format::reader::check_input_file(&config.file)?;
    let mut head = [0u8; 8];
    {
        use std::io::Read;
        let mut f =
            std::fs::File::open(&config.file).map_err(|e| RuntimeError::io(&config.file, e))?;
        let _ = f.read(&mut head);
    }
    let source_format = detect(&head).unwrap_or(SourceFormat::Binary);
    let (binary, contents) = if source_format == SourceFormat::Binary {
        let reader = ExpertReader::open(&config.file)?;
        (config.file.clone(), ExpertContents::read_binary(&reader)?)
    } else {
        let loaded = ExpertLoader::open(&config.file)?;
        let out = work.path().join("expert.expert");
        loaded
            .contents
            .write_binary(&out, &PackageOptions::default(), &mut |_, _| {})?;
        notes.push(format!(
            "{} is a legacy package: measured on a binary copy",
            config.file.display()
        ));
        (out, loaded.contents)
    };
    let st_path = work.path().join("adapter_model.safetensors");
    let weights = contents
        .adapter_weights()?
        .ok_or_else(|| RuntimeError::Invalid("the expert holds no adapter tensors".into()))?;
    std::fs::write(&st_path, &weights).map_err(|e| RuntimeError::io(&st_path, e))?;
    let legacy_path = work.path().join("expert.tar.gz");
    let files: Vec<LegacyFile> = contents
        .to_files()?
        .into_iter()
        .map(|(n, d)| LegacyFile::new(n, d))
        .collect();
    let legacy = legacy_bytes(&files).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    std::fs::write(&legacy_path, &legacy).map_err(|e| RuntimeError::io(&legacy_path, e))?;
    drop((weights, legacy, files));

    let reader = ExpertReader::open(&binary)?;
    let file_bytes = reader.file_size();
    let tensor_sections: Vec<usize> = reader
        .sections()
        .iter()
        .filter(|s| matches!(s.kind, SectionType::Tensors | SectionType::SoftPrompt))
        .map(|s| s.index)
        .collect();
    let fast = LoadOptions {
        device: device.clone(),
        dtype: None,
        verify: false,
        trust: None,
    };
    let verified = LoadOptions {
        verify: true,
        ..fast.clone()
    };
    let adapter = AdapterWeights::open(&binary, &fast)?;
    let tensor_bytes = adapter.bytes() as u64;
    let mut figures = Vec::new();

    // Cold load.
    stage("cold load");
    let mut resident = Vec::new();
    let mut cold = |path: &Path, load: &dyn Fn() -> Result<()>| -> Result<Vec<f64>> {
        let mut out = Vec::new();
        for _ in 0..repeat {
            resident.push(evict_from_page_cache(path)?);
            let t = Instant::now();
            load()?;
            out.push(ms(t));
        }
        Ok(out)
    };
    let load_binary = || -> Result<()> {
        AdapterWeights::open(&binary, &fast)?;
        sync(&device)
    };
    let load_st = || -> Result<()> { load_safetensors(&st_path, &device).map(|_| ()) };
    let load_legacy = || -> Result<()> {
        AdapterWeights::open(&legacy_path, &fast)?;
        sync(&device)
    };
    let cold_bin = cold(&binary, &load_binary)?;
    let cold_st = cold(&st_path, &load_st)?;
    let cold_legacy = cold(&legacy_path, &load_legacy)?;
    let resident = Stats::of(&resident);
    figures.push(
        Figure::new("cold_load", "cold load to ready tensors", "ms", "lower", Stats::of(&cold_bin))
            .anchor("safetensors crate, same tensors", Stats::of(&cold_st))
            .anchor("legacy tar.gz package", Stats::of(&cold_legacy))
            .target("seed < 200 ms; goal ≤ 1.2× safetensors, ≥ 20× faster than legacy")
            .note(format!(
                "page cache evicted with posix_fadvise(DONTNEED) before each run; {:.0} % of pages still resident after eviction (median)",
                resident.median * 100.0
            )),
    );

    // Hot load.
    stage("hot load");
    let hot_bin = time_ms(repeat, load_binary)?;
    let hot_st = time_ms(repeat, load_st)?;
    let hot_legacy = time_ms(repeat, load_legacy)?;
    let hot_verified = time_ms(repeat, || {
        AdapterWeights::open(&binary, &verified)?;
        sync(&device)
    })?;
    let hot = Stats::of(&hot_bin);
    figures.push(
        Figure::new("hot_load", "hot load to ready tensors", "ms", "lower", hot)
            .anchor("safetensors crate, same tensors", Stats::of(&hot_st))
            .anchor("legacy tar.gz package", Stats::of(&hot_legacy))
            .target("seed < 50 ms; goal ≤ 1.1× safetensors"),
    );
    figures.push(
        Figure::new(
            "hot_load_verified",
            "hot load with every section's SHA-256 checked",
            "ms",
            "lower",
            Stats::of(&hot_verified),
        )
        .anchor("safetensors crate (no integrity check)", Stats::of(&hot_st)),
    );

    // Validation and verification.
    stage("validation");
    let validate = time_ms(repeat.max(5), || {
        ExpertReader::open(&binary)?;
        Ok(())
    })?;
    let st_header = time_ms(repeat.max(5), || {
        let bytes = std::fs::read(&st_path).map_err(|e| RuntimeError::io(&st_path, e))?;
        safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        Ok(())
    })?;
    figures.push(
        Figure::new(
            "validation",
            "validation (structure + root digest)",
            "ms",
            "lower",
            Stats::of(&validate),
        )
        .anchor(
            "safetensors header parse + offset checks",
            Stats::of(&st_header),
        )
        .target("seed < 10 ms; goal < 1 ms"),
    );
    // What `validate FILE` does: the above plus the manifest (schema and
    // rules), grammars and manifest ↔ adapter consistency, as one report.
    let options = crate::validation::ValidateOptions::default();
    let report = time_ms(repeat.max(5), || {
        let r = crate::validation::validate_path(&binary, &options)?;
        std::hint::black_box(r.valid);
        Ok(())
    })?;
    figures.push(
        Figure::new(
            "validate_report",
            "validate: structure, root, manifest schema + rules, grammar, consistency",
            "ms",
            "lower",
            Stats::of(&report),
        )
        .anchor(
            "safetensors header parse + offset checks",
            Stats::of(&st_header),
        )
        .target("goal < 1 ms"),
    );
    let gbs = |bytes: u64| move |ms: f64| bytes as f64 / (ms / 1e3) / 1e9;
    let verify = time_ms(repeat, || {
        reader.verify_all()?;
        Ok(())
    })?;
    let whole = reader.bytes();
    let sha_one = time_ms(repeat, || {
        use sha2::Digest;
        std::hint::black_box(sha2::Sha256::digest(whole));
        Ok(())
    })?;
    figures.push(
        Figure::new(
            "verify_throughput",
            "verify every section (parallel SHA-256)",
            "GB/s",
            "higher",
            Stats::of(&verify).map(gbs(file_bytes)),
        )
        .anchor(
            "one SHA-256 stream over the same bytes",
            Stats::of(&sha_one).map(gbs(file_bytes)),
        ),
    );

    // First layer when streaming.
    stage("streaming");
    let first = time_ms(repeat.max(5), || {
        let reader = ExpertReader::open(&binary)?;
        let mut stream = LayerStream::new(&reader, fast.clone());
        if let Some(layer) = stream.next() {
            layer?;
        }
        sync(&device)
    })?;
    figures.push(
        Figure::new(
            "first_layer",
            "first layer ready when streaming",
            "ms",
            "lower",
            Stats::of(&first),
        )
        .anchor("whole expert, hot load", hot)
        .target("seed < 100 ms; goal < 5 ms"),
    );

    // Host → device.
    stage("host to device");
    let blobs: Vec<_> = tensor_sections
        .iter()
        .map(|&i| reader.section(i))
        .collect::<std::result::Result<_, _>>()?;
    let views: Vec<_> = blobs
        .iter()
        .zip(&tensor_sections)
        .map(|(b, i)| TensorBlob::parse(b, &format!("#{i}")))
        .collect::<std::result::Result<_, _>>()?;
    let h2d = time_ms(repeat.max(5), || {
        for blob in &views {
            for (_, v) in &blob.tensors {
                std::hint::black_box(raw_to_tensor(
                    v.data(),
                    v.dtype(),
                    v.shape(),
                    &device,
                    None,
                )?);
            }
        }
        sync(&device)
    })?;
    let on_device: Vec<Tensor> = adapter.tensors.values().cloned().collect();
    let d2d = if device.is_cpu() {
        time_ms(repeat.max(5), || {
            for blob in &views {
                for (_, v) in &blob.tensors {
                    std::hint::black_box(v.data().to_vec());
                }
            }
            Ok(())
        })?
    } else {
        time_ms(repeat.max(5), || {
            for t in &on_device {
                std::hint::black_box(t.copy()?);
            }
            sync(&device)
        })?
    };
    figures.push(
        Figure::new(
            "host_to_device",
            "host → device (tensor sections to device tensors)",
            "GB/s",
            "higher",
            Stats::of(&h2d).map(gbs(tensor_bytes)),
        )
        .anchor(
            if device.is_cpu() {
                "memcpy of the same bytes"
            } else {
                "device-to-device copy of the same bytes"
            },
            Stats::of(&d2d).map(gbs(tensor_bytes)),
        )
        .note(if device.is_cpu() {
            "on CPU the upload is the one copy candle needs to own its storage"
        } else {
            "pageable host memory (candle exposes no pinned allocation)"
        }),
    );
    drop(on_device);

    // Fuse.
    stage("fuse");
    let (base_weights, fuse_base) = if config.base.is_empty() {
        let mut map = std::collections::HashMap::new();
        for (i, m) in adapter.modules.iter().enumerate() {
            map.insert(
                m.base_tensor.clone(),
                synthetic(module_shape(&adapter, m)?, i as u64, &device)?,
            );
        }
        notes.push(
            "fuse figures on synthetic base weights of the adapter's shapes (no --base)".into(),
        );
        (map, "synthetic".to_string())
    } else {
        let base = BaseCheckpoint::open(&config.base)?;
        let mut map = std::collections::HashMap::new();
        for m in &adapter.modules {
            if let Some(name) = base.resolve(&m.base_tensor).name() {
                map.insert(name.to_string(), base.tensor(name, &device, None)?);
                let bias = name.strip_suffix(".weight").map(|s| format!("{s}.bias"));
                if let Some(b) = bias.filter(|b| base.view(b).is_some()) {
                    map.insert(b.clone(), base.tensor(&b, &device, None)?);
                }
            }
        }
        (map, "base".to_string())
    };
    let index = super::base::NameIndex::new(base_weights.keys().map(String::as_str));
    let mut per_module = Vec::new();
    let mut per_module_copy = Vec::new();
    let mut fused_bytes = 0u64;
    let mut fused_names = Vec::new();
    for m in &adapter.modules {
        let Some(name) = index.resolve(&m.base_tensor).name().map(str::to_string) else {
            continue;
        };
        let w = &base_weights[&name];
        let fuse = time_ms(repeat, || {
            std::hint::black_box(fuse_module(&adapter, m, w, None)?);
            sync(&device)
        })?;
        let copy = time_ms(repeat, || {
            std::hint::black_box(w.copy()?);
            sync(&device)
        })?;
        per_module.push(Stats::of(&fuse).median);
        per_module_copy.push(Stats::of(&copy).median);
        fused_bytes += tensor_nbytes(w) as u64;
        fused_names.push(name);
    }
    if per_module.is_empty() {
        notes.push("no module's base tensor was found: fuse figures are empty".into());
    }
    let whole_fuse = time_ms(repeat, || {
        std::hint::black_box(fuse_into_map(&adapter, &base_weights)?);
        sync(&device)
    })?;
    // The anchor makes what the fuse makes: one new tensor per fused weight,
    // all alive at once (so both pay for fresh pages the same way).
    let whole_copy = time_ms(repeat, || {
        let copies = fused_names
            .iter()
            .map(|n| base_weights[n].copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        std::hint::black_box(&copies);
        sync(&device)
    })?;
    let copy_label = if device.is_cpu() {
        "memcpy of the same base bytes"
    } else {
        "device-to-device copy of the same bytes"
    };
    let pct = |fuse: f64, copy: f64| {
        if fuse > 0.0 {
            copy / fuse * 100.0
        } else {
            f64::NAN
        }
    };
    let module_stats = Stats::of(&per_module);
    let module_copy = Stats::of(&per_module_copy);
    figures.push(
        Figure::new(
            "fuse_module",
            "fuse one module (median over modules)",
            "ms",
            "lower",
            module_stats,
        )
        .anchor(copy_label, module_copy)
        .note(format!(
            "{:.0} % of copy bandwidth; min–max across {} modules",
            pct(module_stats.median, module_copy.median),
            per_module.len()
        ))
        .target("goal ≥ 50 % of memcpy bandwidth on CPU, ≤ 2× the copy time on GPU"),
    );
    let whole_stats = Stats::of(&whole_fuse);
    let whole_copy_stats = Stats::of(&whole_copy);
    figures.push(
        Figure::new(
            "fuse_adapter",
            "fuse the whole adapter",
            "ms",
            "lower",
            whole_stats,
        )
        .anchor(copy_label, whole_copy_stats)
        .note(format!(
            "{:.0} % of copy bandwidth over {:.1} MB of base weights",
            pct(whole_stats.median, whole_copy_stats.median),
            fused_bytes as f64 / 1e6
        )),
    );
    figures.push(
        Figure::new(
            "fuse_bandwidth",
            "fuse bandwidth, whole adapter",
            "GB/s",
            "higher",
            whole_stats.map(gbs(fused_bytes)),
        )
        .anchor(copy_label, whole_copy_stats.map(gbs(fused_bytes))),
    );
    drop(base_weights);

    // Memory per loaded expert.
    stage("memory per expert");
    let copies = repeat.clamp(3, 10);
    let mut manager = ExpertManager::new(ManagerConfig {
        capacity: copies,
        load: fast.clone(),
    });
    let before = rss_bytes();
    for i in 0..copies {
        let id = format!("expert-{i}");
        manager.register(&id, &binary)?;
        manager.load(&id)?;
    }
    let after = rss_bytes();
    let memory = manager.memory();
    let accounted: Vec<f64> = memory.iter().map(|m| m.total() as f64 / 1e6).collect();
    let rss = match (before, after) {
        (Some(b), Some(a)) => a.saturating_sub(b) as f64 / copies as f64 / 1e6,
        _ => f64::NAN,
    };
    let raw = Stats::of(&[tensor_bytes as f64 / 1e6]);
    figures.push(
        Figure::new(
            "memory_per_expert",
            "memory per loaded expert (accounted, device)",
            "MB",
            "lower",
            Stats::of(&accounted),
        )
        .anchor("adapter tensor bytes in the file", raw)
        .target("seed < 50 MB per expert"),
    );
    figures.push(
        Figure::new(
            "rss_per_expert",
            "resident memory per loaded expert",
            "MB",
            "lower",
            Stats::of(&[rss]),
        )
        .anchor("adapter tensor bytes in the file", raw)
        .note(format!(
            "RSS growth over {copies} experts loaded at once, divided by {copies}"
        )),
    );
    drop(manager);
    stage("done");

    Ok(BenchReport {
        machine: Machine::this(),
        device: device_label(&device),
        file: config.file.display().to_string(),
        format: source_format.label().into(),
        file_bytes,
        tensor_bytes,
        tensor_sections: tensor_sections.len(),
        modules: adapter.modules.len(),
        repeat,
        fuse_base,
        figures,
        notes,
    })
}
