//! The benchmark's figure families: each measures one thing beside its
//! anchors (cold and hot load, validation, streaming, host → device, fuse,
//! memory per expert) and adds its figures to the run. [`FAMILIES`] lists
//! them in order; `run_bench` counts progress from that list.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::super::adapter::{AdapterWeights, LoadOptions};
use super::super::base::BaseCheckpoint;
use super::super::device::parse_device;
use super::super::device_tensors::{raw_to_tensor, tensor_nbytes};
use super::super::error::{Result, RuntimeError};
use super::super::fuse::{fuse_into_map, fuse_module};
use super::super::manager::{ExpertManager, ManagerConfig};
use super::super::stream::LayerStream;
use super::{
    evict_from_page_cache, load_safetensors, module_shape, ms, rss_bytes, sync, synthetic, time_ms,
    BenchConfig, Figure, Stats,
};
use crate::format::layout::SectionType;
use crate::format::legacy::{legacy_bytes, LegacyFile};
use crate::format::loader::{detect, ExpertLoader, SourceFormat};
use crate::format::package::{ExpertContents, PackageOptions};
use crate::format::tensors::TensorBlob;
use crate::format::ExpertReader;

/// A family of figures (and its progress label).
pub(super) type Family = (&'static str, fn(&mut Run<'_>) -> Result<()>);

/// The families, in the order they run.
pub(super) const FAMILIES: [Family; 7] = [
    ("cold load", cold_load),
    ("hot load", hot_load),
    ("validation", validation),
    ("streaming", streaming),
    ("host to device", host_to_device),
    ("fuse", fuse_figures),
    ("memory per expert", memory_per_expert),
];

/// What every family measures on: the expert in its three forms and the
/// adapter loaded once.
pub(super) struct Inputs {
    pub(super) repeat: usize,
    pub(super) device: Device,
    pub(super) base: Vec<PathBuf>,
    /// Keeps the derived files alive for the run.
    pub(super) _work: tempfile::TempDir,
    pub(super) binary: PathBuf,
    pub(super) st_path: PathBuf,
    pub(super) legacy_path: PathBuf,
    pub(super) source_format: SourceFormat,
    pub(super) fast: LoadOptions,
    pub(super) verified: LoadOptions,
    pub(super) reader: ExpertReader,
    pub(super) file_bytes: u64,
    pub(super) tensor_sections: Vec<usize>,
    pub(super) adapter: AdapterWeights,
    pub(super) tensor_bytes: u64,
}

/// A run in progress: the inputs and what the families found so far.
pub(super) struct Run<'a> {
    pub(super) inputs: &'a Inputs,
    pub(super) figures: Vec<Figure>,
    pub(super) notes: Vec<String>,
    /// The hot-load figure, the anchor of the streaming one.
    pub(super) hot: Stats,
    /// What the fuse figures fused into (`synthetic` or `base`).
    pub(super) fuse_base: String,
}

/// GB/s of `bytes` moved in `ms` milliseconds.
fn gbs(bytes: u64) -> impl Fn(f64) -> f64 {
    move |ms: f64| bytes as f64 / (ms / 1e3) / 1e9
}

/// The binary file, the same tensors as plain safetensors, and the same
/// expert as a legacy tar.gz package.
pub(super) fn prepare(config: &BenchConfig, notes: &mut Vec<String>) -> Result<Inputs> {
    let repeat = config.repeat.max(1);
    let device = parse_device(&config.device)?;
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
    // An OSD expert's anchors hold its modules as the LoRA factors they
    // are (the same values, dense): what it would be without OSD.
    let contents = crate::osd::export::as_lora(&contents).map_err(|e| {
        RuntimeError::Invalid(format!("bench needs low-rank modules for its anchors: {e}"))
    })?;
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

    Ok(Inputs {
        repeat,
        device,
        base: config.base.clone(),
        _work: work,
        binary,
        st_path,
        legacy_path,
        source_format,
        fast,
        verified,
        reader,
        file_bytes,
        tensor_sections,
        adapter,
        tensor_bytes,
    })
}

/// Opens an expert and waits until its tensors are on the device.
fn load_ready(path: &Path, options: &LoadOptions, device: &Device) -> Result<()> {
    AdapterWeights::open(path, options)?;
    sync(device)
}

fn cold_load(run: &mut Run<'_>) -> Result<()> {
    let Inputs {
        repeat,
        ref device,
        ref binary,
        ref st_path,
        ref legacy_path,
        ref fast,
        ..
    } = *run.inputs;
    let load_binary = || load_ready(binary, fast, device);
    let load_st = || -> Result<()> { load_safetensors(st_path, device).map(|_| ()) };
    let load_legacy = || load_ready(legacy_path, fast, device);
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
    // The disk's own floor: the same file read whole into memory, cold.
    let read_plain = || -> Result<()> {
        std::fs::read(binary)
            .map(|_| ())
            .map_err(|e| crate::gpu::RuntimeError::io(binary, e))
    };
    let cold_bin = cold(binary, &load_binary)?;
    let cold_read = cold(binary, &read_plain)?;
    let cold_st = cold(st_path, &load_st)?;
    let cold_legacy = cold(legacy_path, &load_legacy)?;
    let resident = Stats::of(&resident);
    run.figures.push(
        Figure::new("cold_load", "cold load to ready tensors", "ms", "lower", Stats::of(&cold_bin))
            .anchor("plain read of the same file, cold", Stats::of(&cold_read))
            .anchor("safetensors crate, same tensors", Stats::of(&cold_st))
            .anchor("legacy tar.gz package", Stats::of(&cold_legacy))
            .target("seed < 200 ms; goal ≤ 1.2× reading the file cold, ≤ 1.2× safetensors, ≥ 20× faster than legacy")
            .note(format!(
                "page cache evicted with posix_fadvise(DONTNEED) before each run; {:.0} % of pages still resident after eviction (median)",
                resident.median * 100.0
            )),
    );

    Ok(())
}

fn hot_load(run: &mut Run<'_>) -> Result<()> {
    let Inputs {
        repeat,
        ref device,
        ref binary,
        ref st_path,
        ref legacy_path,
        ref fast,
        ref verified,
        ..
    } = *run.inputs;
    let load_binary = || load_ready(binary, fast, device);
    let load_st = || -> Result<()> { load_safetensors(st_path, device).map(|_| ()) };
    let load_legacy = || load_ready(legacy_path, fast, device);
    let hot_bin = time_ms(repeat, load_binary)?;
    let hot_st = time_ms(repeat, load_st)?;
    let hot_legacy = time_ms(repeat, load_legacy)?;
    let hot_verified = time_ms(repeat, || load_ready(binary, verified, device))?;
    let hot = Stats::of(&hot_bin);
    run.figures.push(
        Figure::new("hot_load", "hot load to ready tensors", "ms", "lower", hot)
            .anchor("safetensors crate, same tensors", Stats::of(&hot_st))
            .anchor("legacy tar.gz package", Stats::of(&hot_legacy))
            .target("seed < 50 ms; goal ≤ 1.1× safetensors"),
    );
    run.figures.push(
        Figure::new(
            "hot_load_verified",
            "hot load with every section's SHA-256 checked",
            "ms",
            "lower",
            Stats::of(&hot_verified),
        )
        .anchor("safetensors crate (no integrity check)", Stats::of(&hot_st)),
    );

    run.hot = hot;
    Ok(())
}

fn validation(run: &mut Run<'_>) -> Result<()> {
    let Inputs {
        repeat,
        ref binary,
        ref st_path,
        ref reader,
        file_bytes,
        ..
    } = *run.inputs;
    let validate = time_ms(repeat.max(5), || {
        ExpertReader::open(binary)?;
        Ok(())
    })?;
    let st_header = time_ms(repeat.max(5), || {
        let bytes = std::fs::read(st_path).map_err(|e| RuntimeError::io(st_path, e))?;
        safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        Ok(())
    })?;
    run.figures.push(
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
        let r = crate::validation::validate_path(binary, &options)?;
        std::hint::black_box(r.valid);
        Ok(())
    })?;
    run.figures.push(
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
    run.figures.push(
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

    Ok(())
}

fn streaming(run: &mut Run<'_>) -> Result<()> {
    let Inputs {
        repeat,
        ref device,
        ref binary,
        ref fast,
        ..
    } = *run.inputs;
    let hot = run.hot;
    let first = time_ms(repeat.max(5), || {
        let reader = ExpertReader::open(binary)?;
        let mut stream = LayerStream::new(&reader, fast.clone());
        if let Some(layer) = stream.next() {
            layer?;
        }
        sync(device)
    })?;
    run.figures.push(
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

    Ok(())
}

fn host_to_device(run: &mut Run<'_>) -> Result<()> {
    let Inputs {
        repeat,
        ref device,
        ref reader,
        ref tensor_sections,
        ref adapter,
        tensor_bytes,
        ..
    } = *run.inputs;
    let blobs: Vec<_> = tensor_sections
        .iter()
        .map(|&i| reader.section(i))
        .collect::<std::result::Result<_, _>>()?;
    let views: Vec<_> = blobs
        .iter()
        .zip(tensor_sections)
        .map(|(b, i)| TensorBlob::parse(b, &format!("#{i}")))
        .collect::<std::result::Result<_, _>>()?;
    let h2d = time_ms(repeat.max(5), || {
        for blob in &views {
            for (_, v) in &blob.tensors {
                std::hint::black_box(raw_to_tensor(v.data(), v.dtype(), v.shape(), device, None)?);
            }
        }
        sync(device)
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
            sync(device)
        })?
    };
    run.figures.push(
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

    Ok(())
}

fn fuse_figures(run: &mut Run<'_>) -> Result<()> {
    let Inputs {
        repeat,
        ref device,
        ref adapter,
        ..
    } = *run.inputs;
    let (base_weights, fuse_base) = fuse_base_weights(run, adapter, device)?;
    let index = super::super::base::NameIndex::new(base_weights.keys().map(String::as_str));
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
            std::hint::black_box(fuse_module(adapter, m, w, None)?);
            sync(device)
        })?;
        let copy = time_ms(repeat, || {
            std::hint::black_box(w.copy()?);
            sync(device)
        })?;
        per_module.push(Stats::of(&fuse).median);
        per_module_copy.push(Stats::of(&copy).median);
        fused_bytes += tensor_nbytes(w) as u64;
        fused_names.push(name);
    }
    if per_module.is_empty() {
        run.notes
            .push("no module's base tensor was found: fuse figures are empty".into());
    }
    let whole_fuse = time_ms(repeat, || {
        std::hint::black_box(fuse_into_map(adapter, &base_weights)?);
        sync(device)
    })?;
    // The anchor makes what the fuse makes: one new tensor per fused weight,
    // all alive at once (so both pay for fresh pages the same way).
    let whole_copy = time_ms(repeat, || {
        let copies = fused_names
            .iter()
            .map(|n| base_weights[n].copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        std::hint::black_box(&copies);
        sync(device)
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
    run.figures.push(
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
    run.figures.push(
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
    run.figures.push(
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

    run.fuse_base = fuse_base;
    Ok(())
}

/// The weights the fuse figures fuse into: the base given with `--base`, or
/// synthetic weights of the adapter's shapes.
fn fuse_base_weights(
    run: &mut Run<'_>,
    adapter: &AdapterWeights,
    device: &Device,
) -> Result<(std::collections::HashMap<String, Tensor>, String)> {
    Ok(if run.inputs.base.is_empty() {
        let mut map = std::collections::HashMap::new();
        for (i, m) in adapter.modules.iter().enumerate() {
            map.insert(
                m.base_tensor.clone(),
                synthetic(module_shape(adapter, m)?, i as u64, device)?,
            );
        }
        run.notes.push(
            "fuse figures on synthetic base weights of the adapter's shapes (no --base)".into(),
        );
        (map, "synthetic".to_string())
    } else {
        let base = BaseCheckpoint::open(&run.inputs.base)?;
        let mut map = std::collections::HashMap::new();
        for m in &adapter.modules {
            if let Some(name) = base.resolve(&m.base_tensor).name() {
                map.insert(name.to_string(), base.tensor(name, device, None)?);
                let bias = name.strip_suffix(".weight").map(|s| format!("{s}.bias"));
                if let Some(b) = bias.filter(|b| base.view(b).is_some()) {
                    map.insert(b.clone(), base.tensor(&b, device, None)?);
                }
            }
        }
        (map, "base".to_string())
    })
}

fn memory_per_expert(run: &mut Run<'_>) -> Result<()> {
    let Inputs {
        repeat,
        ref binary,
        ref fast,
        tensor_bytes,
        ..
    } = *run.inputs;
    let copies = repeat.clamp(3, 10);
    let mut manager = ExpertManager::new(ManagerConfig {
        capacity: copies,
        load: fast.clone(),
    });
    let before = rss_bytes();
    for i in 0..copies {
        let id = format!("expert-{i}");
        manager.register(&id, binary)?;
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
    run.figures.push(
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
    run.figures.push(
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
    Ok(())
}
