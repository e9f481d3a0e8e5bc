//! Checks an expert against a base model: tensor shapes from the base's
//! safetensors (headers only) and/or its `config.json`, and the manifest's
//! `weights_hash` / `vocab_hash` against the base's files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::package::{ExpertContents, PackageError};
use super::tensors::{ModuleInfo, ModuleKind};

/// What a base model offers for checks.
#[derive(Debug, Default)]
pub struct BaseModel {
    /// Tensor name -> shape, from safetensors headers.
    pub shapes: HashMap<String, Vec<usize>>,
    pub config: Option<Value>,
    pub weight_files: Vec<PathBuf>,
    pub tokenizer: Option<PathBuf>,
}

impl BaseModel {
    /// `path` is a safetensors file or a folder (config.json, *.safetensors,
    /// tokenizer.json), as a model download ships.
    pub fn open(path: &Path) -> Result<Self, PackageError> {
        let mut base = Self::default();
        let io = |p: &Path, e| PackageError::io(p, e);
        if path.is_dir() {
            let mut names: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            names.sort();
            for p in names {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if name.ends_with(".safetensors") {
                    base.weight_files.push(p);
                } else if name == "config.json" {
                    let bytes = std::fs::read(&p).map_err(|e| io(&p, e))?;
                    base.config = serde_json::from_slice(&bytes).ok();
                } else if name == "tokenizer.json" {
                    base.tokenizer = Some(p);
                }
            }
        } else if path.extension().is_some_and(|e| e == "json") {
            let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
            base.config = serde_json::from_slice(&bytes).ok();
        } else {
            base.weight_files.push(path.to_path_buf());
        }
        for file in &base.weight_files {
            let handle = std::fs::File::open(file).map_err(|e| io(file, e))?;
            // SAFETY: read-only map; only the header is parsed.
            let map = unsafe { memmap2::Mmap::map(&handle) }.map_err(|e| io(file, e))?;
            let (_, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| PackageError::Invalid(format!("{}: {e}", file.display())))?;
            for (name, info) in meta.tensors() {
                base.shapes.insert(name, info.shape.clone());
            }
        }
        Ok(base)
    }

    /// The base shape of `tensor`, matching exact names first, then names
    /// with an extra prefix (`bert.encoder...` for `encoder...`).
    fn shape_of(&self, tensor: &str) -> Option<&Vec<usize>> {
        self.shapes.get(tensor).or_else(|| {
            let suffix = format!(".{tensor}");
            self.shapes
                .iter()
                .find(|(k, _)| k.ends_with(&suffix))
                .map(|(_, v)| v)
        })
    }

    /// Dimensions a config.json allows for a module's rows and columns.
    fn config_dims(&self) -> Vec<usize> {
        let Some(c) = &self.config else {
            return Vec::new();
        };
        let get = |k: &str| c.get(k).and_then(Value::as_u64).map(|v| v as usize);
        let mut dims: Vec<usize> = [
            "hidden_size",
            "intermediate_size",
            "vocab_size",
            "max_position_embeddings",
            "type_vocab_size",
        ]
        .iter()
        .filter_map(|k| get(k))
        .collect();
        if let (Some(heads), Some(hidden)) = (get("num_key_value_heads"), get("hidden_size")) {
            let head_dim =
                get("head_dim").unwrap_or(hidden / get("num_attention_heads").unwrap_or(1).max(1));
            dims.push(heads.saturating_mul(head_dim));
            if let Some(q_heads) = get("num_attention_heads") {
                dims.push(q_heads.saturating_mul(head_dim));
            }
        }
        dims
    }

    fn layer_count(&self) -> Option<u32> {
        self.config
            .as_ref()?
            .get("num_hidden_layers")?
            .as_u64()
            .map(|v| v as u32)
    }

    /// SHA-256 of the weights: of the one file, or over `"<name>  <digest>\n"`
    /// lines of every shard in name order.
    pub fn weights_hash(&self) -> Result<Option<String>, PackageError> {
        let digests = self
            .weight_files
            .iter()
            .map(|f| {
                file_sha256(f).map(|d| {
                    (
                        f.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        d,
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match digests.as_slice() {
            [] => None,
            [(_, one)] => Some(one.clone()),
            many => {
                let mut h = Sha256::new();
                for (name, digest) in many {
                    h.update(format!("{name}  {digest}\n"));
                }
                Some(hex::encode(h.finalize()))
            }
        })
    }
}

fn file_sha256(path: &Path) -> Result<String, PackageError> {
    let mut file = std::fs::File::open(path).map_err(|e| PackageError::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h).map_err(|e| PackageError::io(path, e))?;
    Ok(hex::encode(h.finalize()))
}

/// The base weight shape a module implies, as [rows, cols] of the stored weight.
fn implied_shape(module: &ModuleInfo, shapes: &HashMap<&str, &Vec<usize>>) -> Option<Vec<usize>> {
    let shape = |role: &str| {
        module
            .tensors
            .get(role)
            .and_then(|n| shapes.get(n.as_str()))
    };
    let (out, input) = match module.kind {
        ModuleKind::Lora | ModuleKind::Dora => (*shape("B")?.first()?, *shape("A")?.get(1)?),
        ModuleKind::Osd => return None, // shapes live in the OSD payload
        ModuleKind::LoraEmbedding => {
            return Some(vec![
                *shape("embedding_A")?.get(1)?,
                *shape("embedding_B")?.first()?,
            ])
        }
        ModuleKind::Ia3 => return None, // one dimension only: checked separately
    };
    Some(if module.fan_in_fan_out {
        vec![input, out]
    } else {
        vec![out, input]
    })
}

/// Every mismatch, module by module (empty when all is well).
pub fn check_against_base(
    contents: &ExpertContents,
    base_path: &Path,
) -> Result<Vec<String>, PackageError> {
    let base = BaseModel::open(base_path)?;
    let mut problems = Vec::new();
    if let Some(adapter) = &contents.adapter {
        let shapes: HashMap<&str, &Vec<usize>> = adapter
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), &t.shape))
            .collect();
        let dims = base.config_dims();
        for module in &adapter.modules {
            if let (Some(layer), Some(count)) = (module.layer, base.layer_count()) {
                if layer >= count {
                    problems.push(format!(
                        "{}: layer {layer} but the base has {count} layers",
                        module.module
                    ));
                }
            }
            let implied = implied_shape(module, &shapes);
            if !base.weight_files.is_empty() {
                match (base.shape_of(&module.base_tensor), &implied) {
                    (None, _) => problems.push(format!(
                        "{}: base tensor {} not found",
                        module.module, module.base_tensor
                    )),
                    (Some(real), Some(want)) if real != want => problems.push(format!(
                        "{}: adapter implies base shape {want:?}, base {} is {real:?}",
                        module.module, module.base_tensor
                    )),
                    (Some(real), None) => {
                        let ia3 = module
                            .tensors
                            .get("ia3")
                            .and_then(|n| shapes.get(n.as_str()));
                        let (dim, want) = match ia3.map(|s| s.as_slice()) {
                            Some([1, cols]) => (real.get(1), cols),
                            Some([rows, 1]) => (real.first(), rows),
                            _ => (None, &0),
                        };
                        if dim != Some(want) {
                            problems.push(format!(
                                "{}: ia3_l {:?} does not fit base {real:?}",
                                module.module, ia3
                            ));
                        }
                    }
                    _ => {}
                }
            } else if let Some(want) = implied.filter(|_| !dims.is_empty()) {
                let mut unknown: Vec<&usize> = want.iter().filter(|d| !dims.contains(d)).collect();
                unknown.dedup();
                for d in unknown {
                    problems.push(format!(
                        "{}: dimension {d} matches nothing in the base config.json ({dims:?})",
                        module.module
                    ));
                }
            }
        }
    }
    let manifest = contents.manifest_json().unwrap_or(Value::Null);
    let compat = manifest.get("compatibility");
    if let Some(want) = compat
        .and_then(|c| c.get("weights_hash"))
        .and_then(Value::as_str)
    {
        match base.weights_hash()? {
            Some(have) if !have.eq_ignore_ascii_case(want) => {
                problems.push(format!("weights_hash: manifest {want}, base {have}"))
            }
            None => {
                problems.push("weights_hash given but the base has no safetensors files".into())
            }
            _ => {}
        }
    }
    if let Some(want) = compat
        .and_then(|c| c.get("vocab_hash"))
        .and_then(Value::as_str)
    {
        match &base.tokenizer {
            Some(t) => {
                let have = file_sha256(t)?;
                if !have.eq_ignore_ascii_case(want) {
                    problems.push(format!(
                        "vocab_hash: manifest {want}, base tokenizer.json {have}"
                    ));
                }
            }
            None => problems.push("vocab_hash given but the base has no tokenizer.json".into()),
        }
    }
    Ok(problems)
}
