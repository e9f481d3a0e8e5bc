//! Ingestion of what PEFT's `save_pretrained` writes: `adapter_config.json`
//! plus `adapter_model.safetensors`, for LoRA (rsLoRA, rank/alpha patterns,
//! fan_in_fan_out, embedding LoRA), DoRA, IA³ and prompt tuning.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use safetensors::SafeTensors;
use serde_json::Value;

use super::tensors::{ModuleInfo, ModuleKind, OwnedTensor, TensorMeta};

/// PEFT's key prefix for adapter tensors.
pub const KEY_PREFIX: &str = "base_model.model.";

/// Errors reading a PEFT adapter folder.
#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    /// An operating-system error on `path`.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Only a pickle (`adapter_model.bin`) is present: refused, as loading it can run code.
    #[error("{0}: adapter_model.bin is a Python pickle, which can run code when loaded; re-save the adapter with safe_serialization=True (adapter_model.safetensors)")]
    PickleRefused(String),
    /// No `adapter_model.safetensors` in the folder.
    #[error("{0}: no adapter_model.safetensors found")]
    MissingWeights(String),
    /// `adapter_config.json` is invalid or describes no supported adapter.
    #[error("adapter_config.json: {0}")]
    Config(String),
    /// `adapter_model.safetensors` is invalid or does not match the config.
    #[error("adapter_model.safetensors: {0}")]
    Weights(String),
    /// One module's tensors are inconsistent.
    #[error("module {module}: {reason}")]
    Module { module: String, reason: String },
    /// A PEFT type this build does not read.
    #[error("unsupported PEFT type {0}")]
    Unsupported(String),
}

/// Which PEFT method produced the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeftType {
    /// LoRA and its variants (DoRA, rsLoRA, rank patterns).
    Lora,
    /// IA³.
    Ia3,
    /// Prompt tuning.
    PromptTuning,
}

/// Where tensor data lives: in memory, or read on demand from the file, so
/// that packaging a large adapter holds one section at a time, not the whole.
#[derive(Debug, Clone)]
enum TensorStore {
    Memory(Vec<Vec<u8>>),
    File {
        file: Arc<File>,
        /// Absolute (offset, length) of each tensor's bytes.
        ranges: Vec<(u64, u64)>,
        path: String,
    },
}

/// An adapter read from PEFT output, tensors in file order.
#[derive(Debug, Clone)]
pub struct PeftAdapter {
    pub config_bytes: Vec<u8>,
    pub config: Value,
    pub peft_type: PeftType,
    /// Tensor names, dtypes and shapes, in file order; data via [`PeftAdapter::tensor`].
    pub tensors: Vec<TensorMeta>,
    store: TensorStore,
    /// The safetensors file's own `__metadata__` (e.g. `{"format": "pt"}`).
    pub source_metadata: HashMap<String, String>,
    pub modules: Vec<ModuleInfo>,
}

impl PeftAdapter {
    /// Reads `adapter_config.json` and `adapter_model.safetensors` from a folder.
    pub fn read_dir(dir: &Path) -> Result<Self, PeftError> {
        let io = |path: &Path, source| PeftError::Io {
            path: path.display().to_string(),
            source,
        };
        let weights = dir.join("adapter_model.safetensors");
        if !weights.exists() {
            if dir.join("adapter_model.bin").exists() {
                return Err(PeftError::PickleRefused(dir.display().to_string()));
            }
            return Err(PeftError::MissingWeights(dir.display().to_string()));
        }
        let config_path = dir.join("adapter_config.json");
        for path in [&config_path, &weights] {
            crate::format::reader::check_input_file(path)
                .map_err(|e| io(path, std::io::Error::other(e.to_string())))?;
        }
        let config = std::fs::read(&config_path).map_err(|e| io(&config_path, e))?;
        let file = File::open(&weights).map_err(|e| io(&weights, e))?;
        // SAFETY: read-only map used only to parse and validate the header;
        // tensor bytes are read later with positioned reads.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io(&weights, e))?;
        let index = index_tensors(&map)?;
        let ranges = index.entries.iter().map(|(_, range)| *range).collect();
        let store = TensorStore::File {
            file: Arc::new(file),
            ranges,
            path: weights.display().to_string(),
        };
        Self::build(config, index, store)
    }

    /// Parses the two files' contents held in memory.
    pub fn from_bytes(config_bytes: Vec<u8>, model: &[u8]) -> Result<Self, PeftError> {
        let index = index_tensors(model)?;
        let data = index
            .entries
            .iter()
            .map(|(_, (start, len))| {
                let (start, len) = (*start as usize, *len as usize);
                model.get(start..start + len).map(<[u8]>::to_vec)
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| PeftError::Weights("tensor outside the file".into()))?;
        Self::build(config_bytes, index, TensorStore::Memory(data))
    }

    /// An adapter from tensors already decoded (e.g. read back from sections).
    pub fn from_parts(
        config_bytes: Vec<u8>,
        tensors: Vec<OwnedTensor>,
        source_metadata: HashMap<String, String>,
        modules: Vec<ModuleInfo>,
    ) -> Result<Self, PeftError> {
        let config = parse_config(&config_bytes)?;
        let peft_type = peft_type_of(&config)?;
        let (metas, data) = tensors.into_iter().map(|t| (t.meta(), t.data)).unzip();
        Ok(Self {
            config_bytes,
            config,
            peft_type,
            tensors: metas,
            store: TensorStore::Memory(data),
            source_metadata,
            modules,
        })
    }

    fn build(
        config_bytes: Vec<u8>,
        index: TensorIndex,
        store: TensorStore,
    ) -> Result<Self, PeftError> {
        let config = parse_config(&config_bytes)?;
        let peft_type = peft_type_of(&config)?;
        let tensors: Vec<TensorMeta> = index.entries.into_iter().map(|(meta, _)| meta).collect();
        // Adapter weights are floating point; an integer factor packages
        // fine and fails much later, in a fuse, with a puzzling message.
        if let Some(t) = tensors.iter().find(|t| !is_float(t.dtype)) {
            return Err(PeftError::Weights(format!(
                "tensor {} is {:?}: adapter weights must be floating point (F16, BF16, F32 or F64)",
                t.name, t.dtype
            )));
        }
        let modules = match peft_type {
            PeftType::PromptTuning => Vec::new(),
            _ => build_modules(&config, &peft_type, &tensors)?,
        };
        Ok(Self {
            config_bytes,
            config,
            peft_type,
            tensors,
            store,
            source_metadata: index.metadata,
            modules,
        })
    }

    /// Loads tensor `i` (a positioned read when the adapter is on disk).
    pub fn tensor(&self, i: usize) -> Result<OwnedTensor, PeftError> {
        let meta = self
            .tensors
            .get(i)
            .ok_or_else(|| PeftError::Weights(format!("no tensor #{i}")))?;
        let data = match &self.store {
            TensorStore::Memory(data) => data.get(i).cloned().unwrap_or_default(),
            TensorStore::File { file, ranges, path } => {
                let (offset, len) = ranges.get(i).copied().unwrap_or_default();
                let mut buf = vec![0u8; len as usize];
                read_exact_at(file, &mut buf, offset).map_err(|source| PeftError::Io {
                    path: path.clone(),
                    source,
                })?;
                buf
            }
        };
        Ok(OwnedTensor::new(meta.clone(), data))
    }

    /// Total bytes of tensor data.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.byte_len()).sum()
    }

    /// Converts every tensor to `dtype`, in memory.
    pub fn convert_dtype(&mut self, dtype: safetensors::Dtype) -> Result<(), PeftError> {
        let mut metas = Vec::with_capacity(self.tensors.len());
        let mut data = Vec::with_capacity(self.tensors.len());
        for i in 0..self.tensors.len() {
            let t = self
                .tensor(i)?
                .convert(dtype)
                .map_err(|e| PeftError::Weights(e.to_string()))?;
            metas.push(t.meta());
            data.push(t.data);
        }
        self.tensors = metas;
        self.store = TensorStore::Memory(data);
        Ok(())
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = file.try_clone()?;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

fn peft_type_of(config: &Value) -> Result<PeftType, PeftError> {
    match config.get("peft_type").and_then(Value::as_str) {
        Some("LORA") => Ok(PeftType::Lora),
        Some("IA3") => Ok(PeftType::Ia3),
        Some("PROMPT_TUNING") => Ok(PeftType::PromptTuning),
        Some(other) => Err(PeftError::Unsupported(other.to_string())),
        None => Err(PeftError::Config("missing peft_type".into())),
    }
}

/// A validated safetensors index: tensors in file order with absolute ranges.
struct TensorIndex {
    entries: Vec<(TensorMeta, (u64, u64))>,
    metadata: HashMap<String, String>,
}

/// Validates a safetensors file with the safetensors crate (offsets tile the
/// data exactly) and lists its tensors in file order.
fn index_tensors(bytes: &[u8]) -> Result<TensorIndex, PeftError> {
    let bad = |e: safetensors::SafeTensorError| PeftError::Weights(e.to_string());
    let (header_len, meta) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    SafeTensors::deserialize(bytes).map_err(bad)?;
    let data_start = 8 + header_len as u64;
    let mut entries: Vec<(TensorMeta, (u64, u64))> = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (start, end) = info.data_offsets;
            let meta = TensorMeta {
                name,
                dtype: info.dtype,
                shape: info.shape.clone(),
            };
            (meta, (data_start + start as u64, (end - start) as u64))
        })
        .collect();
    entries.sort_by_key(|(_, (start, _))| *start);
    Ok(TensorIndex {
        entries,
        metadata: meta.metadata().clone().unwrap_or_default(),
    })
}

/// Role of an adapter tensor, from its key suffix.
fn split_key(key: &str) -> Option<(&str, &'static str)> {
    const SUFFIXES: [(&str, &str); 7] = [
        (".lora_A.weight", "A"),
        (".lora_B.weight", "B"),
        (".lora_magnitude_vector.weight", "magnitude"),
        (".lora_magnitude_vector", "magnitude"),
        (".ia3_l", "ia3"),
        (".lora_embedding_A", "embedding_A"),
        (".lora_embedding_B", "embedding_B"),
    ];
    let key = key.strip_prefix(KEY_PREFIX).unwrap_or(key);
    SUFFIXES
        .iter()
        .find_map(|(suffix, role)| key.strip_suffix(suffix).map(|module| (module, *role)))
}

/// Index of the numbered layer a tensor or module name belongs to
/// (`layer.3`, `layers.3`, `h.3`, `blocks.3`, `block.3`).
pub fn layer_of(name: &str) -> Option<u32> {
    let parts: Vec<&str> = name.split('.').collect();
    parts.windows(2).find_map(|w| match w {
        [tag, index] if matches!(*tag, "layer" | "layers" | "h" | "blocks" | "block") => {
            index.parse().ok()
        }
        _ => None,
    })
}

/// PEFT's pattern rule: a pattern key names a module when the module path
/// equals it or ends with `.` + pattern.
fn pattern_value<'a>(patterns: Option<&'a Value>, module: &str) -> Option<&'a Value> {
    let map = patterns?.as_object()?;
    map.iter().find_map(|(pattern, value)| {
        let hit = module == pattern || module.ends_with(&format!(".{pattern}"));
        hit.then_some(value)
    })
}

fn config_f64(config: &Value, key: &str) -> Option<f64> {
    config.get(key).and_then(Value::as_f64)
}

/// `adapter_config.json` as JSON, refusing duplicate keys (Python's
/// `json` keeps the last, other readers the first: the two disagree).
fn parse_config(bytes: &[u8]) -> Result<Value, PeftError> {
    use super::manifest::{parse_value_strict, ManifestError};
    if bytes.starts_with(b"\xef\xbb\xbf") {
        return Err(PeftError::Config(
            "starts with a UTF-8 byte-order mark, which PEFT's json.load refuses: save it without one".into(),
        ));
    }
    parse_value_strict(bytes).map_err(|e| {
        PeftError::Config(match e {
            ManifestError::Json {
                line,
                column,
                message,
            } => format!("line {line}, column {column}: {message}"),
            other => other.to_string(),
        })
    })
}

/// Why a number the config must hold was not read: absent, or there with
/// another JSON type (`"16"`).
fn absent_or_mistyped(config: &Value, key: &str) -> String {
    match config.get(key) {
        None | Some(Value::Null) => format!("no {key} in adapter_config.json"),
        Some(v) => format!(
            "{key} in adapter_config.json is {}, not a number",
            crate::diagnostics::printable(&v.to_string())
        ),
    }
}

/// The dtypes adapter weights come in.
pub fn is_float(dtype: safetensors::Dtype) -> bool {
    use safetensors::Dtype;
    matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
}

fn build_modules(
    config: &Value,
    peft_type: &PeftType,
    tensors: &[TensorMeta],
) -> Result<Vec<ModuleInfo>, PeftError> {
    let mut roles: BTreeMap<&str, BTreeMap<String, &TensorMeta>> = BTreeMap::new();
    for tensor in tensors {
        if let Some((module, role)) = split_key(&tensor.name) {
            roles
                .entry(module)
                .or_default()
                .insert(role.to_string(), tensor);
        }
    }
    let flag = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);
    let feedforward_modules: Vec<&str> = config
        .get("feedforward_modules")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut modules = Vec::with_capacity(roles.len());
    for (module, parts) in roles {
        let bad = |reason: String| PeftError::Module {
            module: module.to_string(),
            reason,
        };
        let tensor_names = parts
            .iter()
            .map(|(role, t)| (role.clone(), t.name.clone()))
            .collect();
        let mut info = ModuleInfo {
            module: module.to_string(),
            base_tensor: format!("{module}.weight"),
            kind: ModuleKind::Lora,
            layer: layer_of(module),
            rank: None,
            alpha: None,
            scale: None,
            use_rslora: flag("use_rslora"),
            fan_in_fan_out: flag("fan_in_fan_out"),
            feedforward: false,
            tensors: tensor_names,
        };
        if *peft_type == PeftType::Ia3 {
            let ia3 = parts
                .get("ia3")
                .ok_or_else(|| bad("missing ia3_l".into()))?;
            info.kind = ModuleKind::Ia3;
            // PEFT's rule: a module is feed-forward when its name ends with an entry.
            info.feedforward = feedforward_modules.iter().any(|f| module.ends_with(f));
            let expected_ff = ia3.shape.first() == Some(&1);
            if ia3.shape.len() != 2 || info.feedforward != expected_ff {
                return Err(bad(format!(
                    "ia3_l shape {:?} does not match feed-forward = {}",
                    ia3.shape, info.feedforward
                )));
            }
            modules.push(info);
            continue;
        }
        let (a_role, b_role, embedding) = if parts.contains_key("embedding_A") {
            ("embedding_A", "embedding_B", true)
        } else {
            ("A", "B", false)
        };
        let a = parts
            .get(a_role)
            .ok_or_else(|| bad(format!("missing lora {a_role}")))?;
        let b = parts
            .get(b_role)
            .ok_or_else(|| bad(format!("missing lora {b_role}")))?;
        let rank = match (a.shape.as_slice(), b.shape.as_slice()) {
            ([ra, _], [_, rb]) if ra == rb => *ra,
            (sa, sb) => return Err(bad(format!("A {sa:?} and B {sb:?} do not share a rank"))),
        };
        let r = pattern_value(config.get("rank_pattern"), module)
            .and_then(Value::as_f64)
            .or_else(|| config_f64(config, "r"))
            .ok_or_else(|| bad(absent_or_mistyped(config, "r")))?;
        if r as usize != rank {
            return Err(bad(format!(
                "tensors have rank {rank}, adapter_config.json says {r}"
            )));
        }
        let alpha = pattern_value(config.get("alpha_pattern"), module)
            .and_then(Value::as_f64)
            .or_else(|| config_f64(config, "lora_alpha"))
            .ok_or_else(|| bad(absent_or_mistyped(config, "lora_alpha")))?;
        let rank_f = rank as f64;
        let scale = if info.use_rslora {
            alpha / rank_f.sqrt()
        } else {
            alpha / rank_f
        };
        info.kind = if embedding {
            ModuleKind::LoraEmbedding
        } else if parts.contains_key("magnitude") {
            ModuleKind::Dora
        } else {
            ModuleKind::Lora
        };
        if flag("use_dora") && info.kind != ModuleKind::Dora {
            return Err(bad(
                "use_dora is set but lora_magnitude_vector is missing".into()
            ));
        }
        info.rank = Some(rank);
        info.alpha = Some(alpha);
        info.scale = Some(scale);
        modules.push(info);
    }
    Ok(modules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PeftAdapter {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        PeftAdapter::read_dir(&dir).unwrap()
    }

    #[test]
    fn config_duplicates_bom_and_mistyped_numbers_are_named() {
        let dup = parse_config(b"{\"r\": 8,\n \"r\": 4}")
            .unwrap_err()
            .to_string();
        assert!(
            dup.contains("line 2") && dup.contains("duplicate key `r`"),
            "{dup}"
        );
        let bom = parse_config(b"\xef\xbb\xbf{}").unwrap_err().to_string();
        assert!(bom.contains("byte-order mark"), "{bom}");
        let config: Value = serde_json::json!({"lora_alpha": "16", "r": null});
        assert_eq!(
            absent_or_mistyped(&config, "lora_alpha"),
            "lora_alpha in adapter_config.json is \"16\", not a number"
        );
        assert_eq!(
            absent_or_mistyped(&config, "r"),
            "no r in adapter_config.json"
        );
    }

    #[test]
    fn layer_index_from_names() {
        assert_eq!(layer_of("encoder.layer.3.attention.self.query"), Some(3));
        assert_eq!(layer_of("model.layers.12.mlp.up_proj"), Some(12));
        assert_eq!(layer_of("transformer.h.0.attn.c_attn"), Some(0));
        assert_eq!(layer_of("embeddings.word_embeddings"), None);
    }

    #[test]
    fn lora_scale_is_alpha_over_r() {
        let a = fixture("minilm-lora-r8");
        assert_eq!(a.modules.len(), 12);
        assert!(a
            .modules
            .iter()
            .all(|m| m.scale == Some(2.0) && m.kind == ModuleKind::Lora));
    }

    #[test]
    fn rslora_patterns_give_per_module_rank_and_scale() {
        let a = fixture("minilm-lora-rslora-pattern");
        let find = |suffix: &str| {
            a.modules
                .iter()
                .find(|m| m.module.ends_with(suffix))
                .unwrap()
        };
        let key = find("layer.0.attention.self.key");
        assert_eq!(key.rank, Some(4));
        assert_eq!(key.scale, Some(8.0 / 2.0));
        let value = find("layer.0.attention.self.value");
        assert_eq!(value.scale, Some(32.0 / 8f64.sqrt()));
        let query = find("layer.0.attention.self.query");
        assert_eq!(query.scale, Some(8.0 / 8f64.sqrt()));
    }

    #[test]
    fn dora_and_ia3_kinds() {
        let d = fixture("minilm-dora-r8");
        assert!(d.modules.iter().all(|m| m.kind == ModuleKind::Dora));
        let i = fixture("minilm-ia3");
        let ff: Vec<_> = i.modules.iter().filter(|m| m.feedforward).collect();
        assert_eq!(
            ff.len(),
            12,
            "attention.output.dense and output.dense end with output.dense"
        );
    }

    #[test]
    fn prompt_tuning_has_embeddings_and_no_modules() {
        let p = fixture("minilm-prompt-tuning");
        assert_eq!(p.peft_type, PeftType::PromptTuning);
        assert_eq!(p.tensors[0].shape, vec![8, 384]);
    }

    #[test]
    fn pickle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("adapter_config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("adapter_model.bin"), b"\x80\x02").unwrap();
        let err = PeftAdapter::read_dir(dir.path()).unwrap_err();
        assert!(matches!(err, PeftError::PickleRefused(_)), "{err}");
    }
}
