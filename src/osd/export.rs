//! OSD modules back to LoRA factors: a low-rank OSD module is exactly
//! `Δ̂ = λ·Û·V̂ᵀ`, i.e. a LoRA module with `B = λ·Û` (n×k), `A = V̂ᵀ` (k×d)
//! and scale 1. So an OSD expert exports to a PEFT folder that PEFT loads
//! (ranks per module in `rank_pattern`, `alpha_pattern` equal to them so
//! every scale is 1). Modules with a sparse n×d part (the blends) cannot be
//! LoRA factors: they are refused, with `fuse` as the way out.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::section::decode_layer;
use super::OsdModule;
use crate::format::package::{ExpertContents, PackageError};
use crate::format::peft::PeftAdapter;
use crate::format::tensors::{encode_tensor_blob, ModuleKind, OwnedTensor};
use crate::format::SectionType;

const PREFIX: &str = "base_model.model.";

fn invalid(detail: String) -> PackageError {
    PackageError::Invalid(detail)
}

/// Row-major f32 values as a tensor of `dtype` (exact: the values were
/// rounded to that dtype when compressed).
fn tensor(
    name: String,
    rows: usize,
    cols: usize,
    values: Vec<f32>,
    dtype: safetensors::Dtype,
) -> Result<OwnedTensor, PackageError> {
    let t = OwnedTensor {
        name,
        dtype: safetensors::Dtype::F32,
        shape: vec![rows, cols],
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    Ok(t.convert(dtype)?)
}

/// `(A, B)` of one low-rank module.
fn factors(module: &str, osd: &OsdModule) -> Result<(OwnedTensor, OwnedTensor), PackageError> {
    if !osd.method().is_low_rank() {
        return Err(invalid(format!(
            "{module} was compressed with a sparse n×d part ({:?}), which LoRA factors cannot hold: fuse the expert into its base instead (expertui --headless fuse FILE --base WEIGHTS -o OUT)",
            osd.method()
        )));
    }
    let (n, d, k) = (osd.n(), osd.d(), osd.relaxed_rank());
    let (b, a) = osd.dense_factors();
    let dtype = super::expert::safetensors_dtype(osd.dtype());
    Ok((
        tensor(format!("{PREFIX}{module}.lora_A.weight"), k, d, a, dtype)?,
        tensor(format!("{PREFIX}{module}.lora_B.weight"), n, k, b, dtype)?,
    ))
}

/// The contents with every OSD module as LoRA factors and no OSD section
/// left; contents without OSD sections come back unchanged.
pub fn as_lora(contents: &ExpertContents) -> Result<ExpertContents, PackageError> {
    let osd_sections: Vec<_> = contents
        .carried
        .iter()
        .filter(|c| c.kind == SectionType::Osd)
        .collect();
    if osd_sections.is_empty() {
        return Ok(contents.clone());
    }
    let adapter = contents
        .adapter
        .as_ref()
        .ok_or_else(|| invalid("the expert holds OSD modules but no adapter config".into()))?;
    // Ranks and scales of every module in the exported config.
    let mut ranks: Vec<(String, usize, f64)> = Vec::new();
    let mut tensors = Vec::new();
    for m in &adapter.modules {
        if m.kind != ModuleKind::Lora {
            return Err(invalid(format!(
                "{} is a {:?} module: one LoRA config cannot also hold it (fuse the expert instead)",
                m.module, m.kind
            )));
        }
        let (Some(r), Some(scale)) = (m.rank, m.scale) else {
            return Err(invalid(format!("{}: rank or scale unknown", m.module)));
        };
        ranks.push((m.module.clone(), r, scale * r as f64));
    }
    for i in 0..adapter.tensors.len() {
        tensors.push(adapter.tensor(i)?);
    }
    for section in &osd_sections {
        let entries = decode_layer(&section.data)
            .map_err(|e| invalid(format!("OSD section {}: {e}", section.name)))?;
        for entry in entries {
            // Δ is stored out×in whatever the base's layout, as B·A is in
            // PEFT (which transposes it for fan_in_fan_out itself).
            let (a, b) = factors(&entry.module, &entry.osd)?;
            let k = entry.osd.relaxed_rank();
            ranks.push((entry.module.clone(), k, k as f64));
            tensors.push(a);
            tensors.push(b);
        }
    }
    let config = lora_config(&adapter.config, &ranks);
    let config_bytes = serde_json::to_vec_pretty(&config).map_err(|e| invalid(e.to_string()))?;
    let blob = encode_tensor_blob(&tensors, adapter.source_metadata.clone())?;
    let lora = PeftAdapter::from_bytes(config_bytes, &blob)?;
    let mut out = contents.clone();
    out.adapter = Some(lora);
    out.carried.retain(|c| c.kind != SectionType::Osd);
    Ok(out)
}

/// The adapter's config as a plain LoRA config with a rank and an alpha per
/// module (`r`/`lora_alpha` the most common pair, patterns for the rest).
fn lora_config(original: &Value, ranks: &[(String, usize, f64)]) -> Value {
    let mut config = original.as_object().cloned().unwrap_or_default();
    let mut counts: HashMap<(usize, u64), usize> = HashMap::new();
    for (_, r, alpha) in ranks {
        *counts.entry((*r, alpha.to_bits())).or_default() += 1;
    }
    let (r, alpha) = counts
        .iter()
        .max_by_key(|((r, _), count)| (**count, *r))
        .map(|((r, a), _)| (*r, f64::from_bits(*a)))
        .unwrap_or((1, 1.0));
    let (mut rank_pattern, mut alpha_pattern) = (Map::new(), Map::new());
    for (module, mr, malpha) in ranks {
        if *mr != r {
            rank_pattern.insert(module.clone(), json!(mr));
        }
        if *malpha != alpha || *mr != r {
            alpha_pattern.insert(module.clone(), json!(malpha));
        }
    }
    config.insert("peft_type".into(), json!("LORA"));
    config.insert("r".into(), json!(r));
    config.insert("lora_alpha".into(), json!(alpha));
    config.insert("use_dora".into(), json!(false));
    config.insert("use_rslora".into(), json!(false));
    config.insert("rank_pattern".into(), Value::Object(rank_pattern));
    config.insert("alpha_pattern".into(), Value::Object(alpha_pattern));
    Value::Object(config)
}
