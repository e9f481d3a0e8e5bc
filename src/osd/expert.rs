//! OSD over a whole expert: analyse every module of an adapter (or every
//! matrix of a fine-tune), evaluate a point over all of them, and write the
//! compressed expert (OSD sections replace the modules' tensors).

use std::path::Path;

use serde_json::json;

use super::analysis::{aggregate, Estimate, ModuleAnalysis, OsdParams};
use super::delta::{adapter_deltas, BaseWeights, ModuleDelta};
use super::error::OsdError;
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

/// Reads calibration inputs: a safetensors file of 2-D float tensors named
/// after the modules (or their base tensors), each [samples, in_features].
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
        let modules = deltas
            .into_par_iter()
            .map(|d| {
                let x = calibration
                    .and_then(|c| c.get(&d.module).or_else(|| c.get(&d.base_tensor)))
                    .cloned();
                ModuleAnalysis::new(d, k_max, x)
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
        let per: Vec<(&ModuleAnalysis, Estimate)> =
            self.modules.iter().map(|m| (m, m.estimate(p))).collect();
        aggregate(&per)
    }

    /// Bits of the modules as they are stored now (LoRA factors or dense).
    pub fn original_bits(&self) -> u64 {
        self.modules.iter().map(|m| m.delta.original_bits()).sum()
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

/// What `write_compressed` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompressReport {
    /// Modules compressed.
    pub modules: usize,
    /// Modules left as they were (IA³, embeddings, DoRA without a base).
    pub skipped: Vec<String>,
    /// Bytes of the compressed modules before (LoRA factors or dense deltas).
    pub original_bytes: u64,
    /// Their bytes after, by the paper's bit accounting.
    pub compressed_bytes: u64,
    /// Relative Frobenius error ‖ΔW − Δ̂‖ / ‖ΔW‖, energy-weighted over modules.
    pub rel_error: f64,
    /// Share of ‖ΔW‖² kept.
    pub energy_kept: f64,
    /// Size of the written expert.
    pub file_bytes: u64,
}

/// Compresses every analysed module at `p` and writes the expert: the
/// modules' tensors are replaced by OSD sections (one per layer); other
/// modules, files and the manifest (with an `osd` entry added) stay.
pub fn write_compressed(
    contents: &ExpertContents,
    analysis: &AdapterAnalysis,
    p: &OsdParams,
    out: &Path,
    options: &PackageOptions,
) -> Result<(WriteSummary, CompressReport), PackageError> {
    let osd_err = |e: OsdError| PackageError::Invalid(format!("osd: {e}"));
    use rayon::prelude::*;
    let compressed = analysis
        .modules
        .par_iter()
        .map(|m| m.compress(p, None).map(|(osd, est)| (m, osd, est)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(osd_err)?;
    let mut layers: std::collections::BTreeMap<Option<u32>, Vec<OsdEntry>> = Default::default();
    for (m, osd, _) in &compressed {
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
    let estimates: Vec<(&ModuleAnalysis, Estimate)> =
        compressed.iter().map(|(m, _, e)| (*m, *e)).collect();
    let total = aggregate(&estimates);
    let done: std::collections::HashSet<&str> = compressed
        .iter()
        .map(|(m, _, _)| m.delta.module.as_str())
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
                "rank": p.rank,
                "sparsity": p.sparsity,
                "alpha": p.alpha,
                "modules": compressed.len(),
                "rel_error": total.rel_error,
            }),
        );
    }
    reduced.manifest = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    let summary = reduced.write_binary_with(out, options, &mut |_, _| {}, &extra)?;
    let report = CompressReport {
        modules: compressed.len(),
        skipped: analysis.skipped.clone(),
        original_bytes: analysis.original_bits().div_ceil(8),
        compressed_bytes: total.bits.div_ceil(8),
        rel_error: total.rel_error,
        energy_kept: total.energy_kept,
        file_bytes: summary.file_size,
    };
    Ok((summary, report))
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

/// One measured point of a tuning grid.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GridPoint {
    /// Rank r of the point.
    pub rank: usize,
    /// Sparsity of the point.
    pub sparsity: f64,
    /// Compressed bytes (paper accounting), all modules.
    pub bytes: u64,
    /// Original bytes over compressed bytes.
    pub compression: f64,
    /// Share of ‖ΔW‖² kept.
    pub energy_kept: f64,
    /// Relative Frobenius error.
    pub rel_error: f64,
    /// Relative error of the layer outputs on calibration inputs (synthetic
    /// Gaussian inputs when none are given).
    pub output_error: f64,
    /// No other point is both smaller and more accurate.
    pub pareto: bool,
}

impl AdapterAnalysis {
    /// Compresses every module exactly at each (rank, sparsity) point.
    pub fn grid(
        &self,
        ranks: &[usize],
        sparsities: &[f64],
        method: super::analysis::Method,
    ) -> Result<Vec<GridPoint>, OsdError> {
        use super::analysis::{output_error, synthetic_inputs};
        let original = self.original_bits().div_ceil(8);
        let mut points = Vec::new();
        for &rank in ranks {
            for &sparsity in sparsities {
                let p = OsdParams {
                    method,
                    rank,
                    sparsity,
                    alpha: 1.0,
                    budget_bits: None,
                };
                let (mut bits, mut err2, mut total, mut out_err2, mut out_total) =
                    (0u64, 0.0, 0.0, 0.0, 0.0);
                for m in &self.modules {
                    let (module, est) = m.compress(&p, None)?;
                    let delta = m.delta.dense()?;
                    let x = m
                        .calibration
                        .clone()
                        .unwrap_or_else(|| synthetic_inputs(64, delta.cols, 7));
                    let reference = x.matmul(&delta.transpose())?.frobenius_norm().powi(2);
                    let oe = output_error(&x, &delta, &module.reconstruct())?;
                    bits += est.bits;
                    err2 += est.rel_error.powi(2) * m.total;
                    total += m.total;
                    out_err2 += oe.powi(2) * reference;
                    out_total += reference;
                }
                let rel = (err2 / total.max(f64::MIN_POSITIVE)).sqrt();
                let bytes = bits.div_ceil(8);
                points.push(GridPoint {
                    rank,
                    sparsity,
                    bytes,
                    compression: original as f64 / bytes.max(1) as f64,
                    energy_kept: 1.0 - rel * rel,
                    rel_error: rel,
                    output_error: (out_err2 / out_total.max(f64::MIN_POSITIVE)).sqrt(),
                    pareto: false,
                });
            }
        }
        mark_pareto(&mut points);
        Ok(points)
    }
}

/// Marks the points no other point beats on both size and error.
pub fn mark_pareto(points: &mut [GridPoint]) {
    let keys: Vec<(u64, f64)> = points.iter().map(|p| (p.bytes, p.rel_error)).collect();
    for (i, point) in points.iter_mut().enumerate() {
        let (b, e) = keys[i];
        point.pareto = !keys
            .iter()
            .enumerate()
            .any(|(j, &(b2, e2))| j != i && b2 <= b && e2 <= e && (b2 < b || e2 < e));
    }
}
