//! OSD over a whole expert: analyse every module of an adapter (or every
//! matrix of a fine-tune), evaluate a point over all of them, and write the
//! compressed expert (OSD sections replace the modules' tensors).

use std::path::Path;

use serde_json::json;

use super::analysis::{aggregate, Estimate, Method, ModuleAnalysis, OsdParams};
use super::delta::{adapter_deltas, BaseWeights, ModuleDelta};
use super::error::OsdError;
use super::module::OsdModule;
use super::precision::ValueDtype;
use super::section::{encode_layer, OsdEntry};
use crate::format::package::{ExpertContents, PackageError, PackageOptions};
use crate::format::peft::PeftAdapter;
use crate::format::writer::{SectionSpec, WriteSummary};
use crate::format::SectionType;

/// Largest rank analysed (spectra, relaxed ranks), the same for the CLI's
/// `osd analyze/compress/tune` and the TUI's OSD panel, so the panel's "save"
/// is the CLI command it prints.
pub const MAX_ANALYSED_RANK: usize = 64;

/// Calibration inputs X (m×d) by module or base tensor name.
pub type Calibration = std::collections::HashMap<String, super::matrix::Matrix>;

/// Reads calibration data: a safetensors file of 2-D float tensors named
/// after the modules (or their base tensors): inputs X [samples,
/// in_features] under the name itself, and optionally the task-loss
/// gradient ∂L/∂W [out, in] under `NAME.grad` (OSD then uses the paper's
/// Taylor importance).
pub fn load_calibration(path: &Path) -> Result<Calibration, OsdError> {
    let bytes = std::fs::read(path)
        .map_err(|e| OsdError::param("calibration", format!("{}: {e}", path.display())))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| OsdError::param("calibration", format!("{}: {e}", path.display())))?;
    let mut out = Calibration::new();
    for (name, view) in st.iter() {
        let tensor = crate::format::tensors::OwnedTensor::from_view(name, &view);
        out.insert(
            name.to_string(),
            super::matrix::Matrix::from_tensor(&tensor)?,
        );
    }
    Ok(out)
}

/// Every analysable module of an expert, analysed once.
pub struct AdapterAnalysis {
    /// One analysis per compressible module.
    pub modules: Vec<ModuleAnalysis>,
    /// Modules OSD does not apply to (IA³, embeddings, DoRA without a base).
    pub skipped: Vec<String>,
}

impl AdapterAnalysis {
    /// Analyses every delta (SVD up to rank `k_max`, energy, importance); `skipped` lists modules left out.
    pub fn from_deltas(
        deltas: Vec<ModuleDelta>,
        skipped: Vec<String>,
        k_max: usize,
    ) -> Result<Self, OsdError> {
        Self::from_deltas_calibrated(deltas, skipped, k_max, None)
    }

    /// With calibration inputs per module (by module or base tensor name):
    /// activation-aware importance and layer-output errors on real inputs.
    pub fn from_deltas_calibrated(
        deltas: Vec<ModuleDelta>,
        skipped: Vec<String>,
        k_max: usize,
        calibration: Option<&Calibration>,
    ) -> Result<Self, OsdError> {
        use rayon::prelude::*;
        // Modules are analysed in parallel; faer's own threads inside each
        // small factorization would only contend with that split (2× slower
        // on 2 cores), so faer runs sequentially within a module.
        faer::set_global_parallelism(faer::Par::Seq);
        let modules = deltas
            .into_par_iter()
            .map(|d| {
                let find = |suffix: &str| {
                    calibration.and_then(|c| {
                        c.get(&format!("{}{suffix}", d.module))
                            .or_else(|| c.get(&format!("{}{suffix}", d.base_tensor)))
                            .cloned()
                    })
                };
                let (x, g) = (find(""), find(".grad"));
                let analysis = ModuleAnalysis::new(d, k_max, x)?;
                match g {
                    Some(g) => analysis.with_gradient(g),
                    None => Ok(analysis),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { modules, skipped })
    }

    /// Analyses every LoRA (and, given `base`, DoRA) module of an adapter.
    pub fn from_adapter(
        adapter: &PeftAdapter,
        base: Option<&BaseWeights>,
        k_max: usize,
    ) -> Result<Self, OsdError> {
        let (deltas, skipped) = adapter_deltas(adapter, base)?;
        Self::from_deltas(deltas, skipped, k_max)
    }

    /// Every module at point `p`, predicted from the caches.
    pub fn estimate(&self, p: &OsdParams) -> Estimate {
        use rayon::prelude::*;
        let estimates: Vec<Estimate> = self.modules.par_iter().map(|m| m.estimate(p)).collect();
        let per: Vec<(&ModuleAnalysis, Estimate)> = self.modules.iter().zip(estimates).collect();
        aggregate(&per)
    }

    /// Bytes of the modules' tensors as the input stores them.
    pub fn original_bytes(&self) -> u64 {
        self.modules.iter().map(|m| m.delta.original_bytes()).sum()
    }

    /// The whole-adapter energy-retention curve.
    /// Shares of the summed ‖ΔW‖² of all modules kept at each rank.
    pub fn overall_energy(&self) -> Vec<f64> {
        let total: f64 = self
            .modules
            .iter()
            .map(|m| m.total)
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        let len = self
            .modules
            .iter()
            .map(|m| m.energy.len())
            .max()
            .unwrap_or(0);
        (0..len)
            .map(|k| {
                let kept: f64 = self
                    .modules
                    .iter()
                    .map(|m| m.energy.get(k).or(m.energy.last()).copied().unwrap_or(0.0) * m.total)
                    .sum();
                kept / total
            })
            .collect()
    }
}

/// Which damage score chose the kept entries.
pub fn importance_source(analysis: &AdapterAnalysis) -> &'static str {
    if analysis.modules.iter().any(|m| m.gradient.is_some()) {
        "Taylor importance |weight × gradient| of the task loss (calibration gradients)"
    } else if analysis.modules.iter().any(|m| m.calibration.is_some()) {
        "activation-weighted damage (calibration inputs, diag(XᵀX))"
    } else {
        "data-free damage (exact single-entry Frobenius damage)"
    }
}

/// What `write_compressed` did. Every size is bytes as written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompressReport {
    /// How the modules are stored.
    pub method: Method,
    /// Precision of the stored values.
    pub dtype: ValueDtype,
    /// Rank r of the point (the TruncSVD rank whose bytes are the budget for osd/magtrunc).
    pub rank: usize,
    /// Largest relaxed rank k = r + c used.
    pub relaxed_rank: usize,
    /// Modules compressed.
    pub modules: usize,
    /// Modules left as they were (IA³, embeddings, DoRA without a base).
    pub skipped: Vec<String>,
    /// Bytes of those modules' tensors in the input, as stored.
    pub original_bytes: u64,
    /// Bytes of those modules as written (OSD payloads, or the cast tensors).
    pub tensor_bytes: u64,
    /// `original_bytes / tensor_bytes`.
    pub ratio: f64,
    /// The paper's bit count for the same modules (32-bit values), for
    /// comparison with the paper; not a file size.
    pub paper_bits: u64,
    /// Relative Frobenius error ‖ΔW − Δ̂‖ / ‖ΔW‖ over all compressed
    /// modules (energy-weighted), measured exactly.
    pub rel_error: f64,
    /// Which score chose the kept entries (osd).
    pub importance: &'static str,
    /// Size of the written expert.
    pub file_bytes: u64,
}

/// Every module compressed exactly at `p` (in parallel), with its estimate.
pub fn compress_modules(
    analysis: &AdapterAnalysis,
    p: &OsdParams,
) -> Result<Vec<(OsdModule, Estimate)>, OsdError> {
    use rayon::prelude::*;
    analysis
        .modules
        .par_iter()
        .map(|m| m.compress(p, None))
        .collect()
}

/// The exact outcome of a point over all modules: bytes as written and the
/// measured error (`lora`: the cast tensors and their exact cast error).
pub fn exact_outcome(analysis: &AdapterAnalysis, p: &OsdParams) -> Result<Estimate, OsdError> {
    if p.method == Method::Lora {
        return Ok(analysis.estimate(p));
    }
    let compressed = compress_modules(analysis, p)?;
    let per: Vec<(&ModuleAnalysis, Estimate)> = analysis
        .modules
        .iter()
        .zip(compressed.iter().map(|(_, e)| *e))
        .collect();
    Ok(aggregate(&per))
}

/// Writes the expert for point `p`: OSD sections replace the compressed
/// modules' tensors (one section per layer), or, for `lora`, the adapter is
/// kept with its tensors cast to the dtype. Other modules, files and the
/// manifest (with an `osd` entry added) stay.
pub fn write_compressed(
    contents: &ExpertContents,
    analysis: &AdapterAnalysis,
    p: &OsdParams,
    out: &Path,
    options: &PackageOptions,
) -> Result<(WriteSummary, CompressReport), PackageError> {
    let osd_err = |e: OsdError| PackageError::Invalid(format!("osd: {e}"));
    let original_bytes: u64 = analysis
        .modules
        .iter()
        .map(|m| m.delta.original_bytes())
        .sum();
    let report = |total: Estimate, file_bytes: u64| CompressReport {
        method: p.method,
        dtype: p.dtype,
        // `lora` keeps the adapter's own rank.
        rank: match p.method {
            Method::Lora => total.relaxed_rank,
            _ => p.rank,
        },
        relaxed_rank: total.relaxed_rank,
        modules: analysis.modules.len(),
        skipped: analysis.skipped.clone(),
        original_bytes,
        tensor_bytes: total.bytes,
        ratio: original_bytes as f64 / total.bytes.max(1) as f64,
        paper_bits: total.paper_bits,
        rel_error: total.rel_error,
        importance: importance_source(analysis),
        file_bytes,
    };
    if p.method == Method::Lora {
        let mut cast = contents.clone();
        let adapter = cast
            .adapter
            .as_mut()
            .ok_or_else(|| PackageError::Invalid("lora needs an adapter to cast".into()))?;
        adapter.convert_dtype(safetensors_dtype(p.dtype))?;
        let summary = cast.write_binary_with(out, options, &mut |_, _| {}, &[])?;
        let file_bytes = summary.file_size;
        return Ok((summary, report(analysis.estimate(p), file_bytes)));
    }
    let compressed = compress_modules(analysis, p).map_err(osd_err)?;
    let mut layers: std::collections::BTreeMap<Option<u32>, Vec<OsdEntry>> = Default::default();
    for (m, (osd, _)) in analysis.modules.iter().zip(&compressed) {
        layers.entry(m.delta.layer).or_default().push(OsdEntry {
            module: m.delta.module.clone(),
            base_tensor: m.delta.base_tensor.clone(),
            fan_in_fan_out: m.delta.fan_in_fan_out,
            osd: osd.clone(),
        });
    }
    let mut extra = Vec::new();
    for (layer, entries) in &layers {
        let spec = match layer {
            Some(l) => SectionSpec::new(SectionType::Osd, format!("osd.layer.{l}")).layer(*l),
            None => SectionSpec::new(SectionType::Osd, "osd.global"),
        };
        extra.push((spec, encode_layer(entries).map_err(osd_err)?));
    }
    let estimates: Vec<(&ModuleAnalysis, Estimate)> = analysis
        .modules
        .iter()
        .zip(compressed.iter().map(|(_, e)| *e))
        .collect();
    let total = aggregate(&estimates);
    let done: std::collections::HashSet<&str> = analysis
        .modules
        .iter()
        .map(|m| m.delta.module.as_str())
        .collect();
    let mut reduced = contents.clone();
    if let Some(adapter) = &contents.adapter {
        reduced.adapter = Some(without_modules(adapter, &done)?);
    }
    let mut manifest = reduced.manifest_json()?;
    if let Some(obj) = manifest.as_object_mut() {
        obj.insert(
            "osd".into(),
            json!({
                "method": p.method,
                "dtype": p.dtype,
                "rank": p.rank,
                "relaxed_rank": total.relaxed_rank,
                "sparsity": p.method.has_sparse_part().then_some(p.sparsity),
                "alpha": p.method.has_sparse_part().then_some(p.alpha),
                "modules": compressed.len(),
                "rel_error": total.rel_error,
                "tensor_bytes": total.bytes,
            }),
        );
    }
    reduced.manifest = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    let summary = reduced.write_binary_with(out, options, &mut |_, _| {}, &extra)?;
    let file_bytes = summary.file_size;
    Ok((summary, report(total, file_bytes)))
}

/// The safetensors dtype of a value dtype.
pub fn safetensors_dtype(dtype: ValueDtype) -> safetensors::Dtype {
    match dtype {
        ValueDtype::F32 => safetensors::Dtype::F32,
        ValueDtype::Bf16 => safetensors::Dtype::BF16,
        ValueDtype::F16 => safetensors::Dtype::F16,
    }
}

/// The adapter minus the tensors and module entries of `done`.
fn without_modules(
    adapter: &PeftAdapter,
    done: &std::collections::HashSet<&str>,
) -> Result<PeftAdapter, PackageError> {
    let drop: std::collections::HashSet<&String> = adapter
        .modules
        .iter()
        .filter(|m| done.contains(m.module.as_str()))
        .flat_map(|m| m.tensors.values())
        .collect();
    let mut tensors = Vec::new();
    for (i, meta) in adapter.tensors.iter().enumerate() {
        if !drop.contains(&meta.name) {
            tensors.push(adapter.tensor(i)?);
        }
    }
    let modules = adapter
        .modules
        .iter()
        .filter(|m| !done.contains(m.module.as_str()))
        .cloned()
        .collect();
    Ok(PeftAdapter::from_parts(
        adapter.config_bytes.clone(),
        tensors,
        adapter.source_metadata.clone(),
        modules,
    )?)
}

/// Picks and writes the point with the smallest measured error whose
/// written file is at most `max` bytes, among `methods` × `dtypes`
/// (`frontier::pick`). Candidates are sized by their module bytes against
/// the limit minus the rest of the file, which is measured by writing to a
/// temporary file beside `out` and corrected until the file fits; only a
/// fitting file is renamed to `out`. Returns the report and the measured
/// finalists of the last pick.
#[allow(clippy::type_complexity)]
pub fn write_within_limit(
    contents: &ExpertContents,
    analysis: &AdapterAnalysis,
    template: &OsdParams,
    (methods, dtypes): (&[Method], &[ValueDtype]),
    max: u64,
    out: &Path,
    options: &PackageOptions,
) -> Result<(CompressReport, Vec<(OsdParams, Estimate)>), PackageError> {
    let osd_err = |e: OsdError| PackageError::Invalid(format!("osd: {e}"));
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut limit = max;
    let mut rest_of_file = None;
    for _ in 0..12 {
        let Some(pick) =
            super::frontier::pick(analysis, limit, methods, dtypes, template).map_err(osd_err)?
        else {
            break;
        };
        let file = tempfile::Builder::new()
            .prefix(".expertui-fit-")
            .tempfile_in(&dir)
            .map_err(|e| PackageError::io(&dir, e))?;
        let (_, report) = write_compressed(contents, analysis, &pick.params, file.path(), options)?;
        if report.file_bytes <= max {
            file.persist(out)
                .map_err(|e| PackageError::io(out, e.error))?;
            return Ok((report, pick.finalists));
        }
        // The rest of the file (manifest, other sections, tables, padding)
        // is what the modules may not use: first the limit it leaves; only
        // when that makes no progress (ranks are discrete: the same point
        // again) shrink by the overshoot or 1 %.
        let rest = report.file_bytes.saturating_sub(report.tensor_bytes);
        rest_of_file = Some(rest);
        let overshoot = report.file_bytes - max;
        let next = max.saturating_sub(rest);
        limit = if next < limit {
            next
        } else {
            limit.saturating_sub(overshoot.max(limit / 100))
        };
    }
    let allowed: Vec<String> = methods
        .iter()
        .flat_map(|m| dtypes.iter().map(move |d| format!("{m} {d}")))
        .collect();
    let rest = rest_of_file.map_or_else(String::new, |o| {
        format!(" (the rest of the file takes {o} bytes)")
    });
    Err(PackageError::Invalid(format!(
        "nothing fits {max} bytes: no point of {} leaves its modules within the limit{rest}; try a larger --max-bytes or allow more methods and dtypes",
        allowed.join(", ")
    )))
}
