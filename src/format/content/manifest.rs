//! The expert manifest (`manifest.json`): serde model, schema and rules.
//!
//! The model mirrors what the legacy tar.gz packager wrote (schema_version `1.0` with
//! `base_model` + `adapters`, `2.0` with `base_models[]` each holding its `adapters`). Every
//! struct keeps the keys it does not know in a flattened `extra` map, so a manifest survives a
//! parse/serialise round trip with the same JSON value; numbers that may be written either as
//! integers or floats are kept as [`serde_json::Number`] for the same reason. One exception: an
//! explicit `null` on a known optional key reads as absent and is not written back (the base
//! model's `sha256` / `quantization`, which the legacy packager always wrote, keep their `null`).
//!
//! Validation is split: the JSON Schema (`assets/manifest.schema.json`) checks shapes and types,
//! [`check_rules`] checks the cross-field rules; both report JSON-pointer paths.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Number, Value};

/// The JSON Schema (draft 2020-12) for `manifest.json`, embedded so validation needs no files.
pub const MANIFEST_SCHEMA: &str = include_str!("../../../assets/manifest.schema.json");

/// Unknown keys of one JSON object, kept so round trips lose nothing.
pub type Extra = Map<String, Value>;

/// `manifest.json`, both schema versions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Package name; empty only when the source lacked it (reported by [`check_rules`]).
    #[serde(default)]
    pub name: String,
    /// Semantic version of the package.
    #[serde(default)]
    pub version: String,
    /// `"1.0"` or `"2.0"`; missing means 1.0, as the legacy packager read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// schema_version 1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<BaseModelRef>,
    /// schema_version 2.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_models: Option<Vec<BaseModel>>,
    /// schema_version 1.0 only (2.0 nests adapters in `base_models[]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapters: Option<Vec<Adapter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_prompts: Option<Vec<SoftPrompt>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Constraints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perf: Option<Perf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// New in the v2 container: what the base model must look like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatibility: Option<Compatibility>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<Training>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<Integrity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// `quality_metrics`, `limitations`, `_comment`, ... kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// schema_version 1.0 wrote `base_model` either as a bare name or as an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BaseModelRef {
    /// A bare model name.
    Name(String),
    /// A model object.
    Model(BaseModel),
}

impl BaseModelRef {
    /// The model name in either form.
    pub fn name(&self) -> &str {
        match self {
            Self::Name(name) => name,
            Self::Model(model) => &model.name,
        }
    }
}

/// One base model; in schema 2.0 it carries the adapters trained for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BaseModel {
    #[serde(default)]
    pub name: String,
    /// Outer `None`: key absent; `Some(None)`: written as `null` (the legacy packager did).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub sha256: Option<Option<String>>,
    /// Same absent / `null` / value distinction as `sha256`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub quantization: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<String>,
    /// schema_version 2.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapters: Option<Vec<Adapter>>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl BaseModel {
    /// Weights hash, whether the key was absent or `null`.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_ref().and_then(|v| v.as_deref())
    }

    /// Quantization, whether the key was absent or `null`.
    pub fn quantization(&self) -> Option<&str> {
        self.quantization.as_ref().and_then(|v| v.as_deref())
    }
}

/// One adapter entry. `type` stays a string so unknown PEFT types survive; see [`AdapterKind`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Adapter {
    #[serde(rename = "type", default)]
    pub adapter_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_modules: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<u32>,
    /// Integer or float in the wild; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<Number>,
    /// Scaling mode as written by the packager (`standard`, `dora`, `rslora`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<Number>,
    /// Weights file inside the package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Adapter {
    /// The adapter type, normalised.
    pub fn kind(&self) -> AdapterKind {
        AdapterKind::from_type(&self.adapter_type)
    }

    /// `target_modules`, empty when absent.
    pub fn target_modules(&self) -> &[String] {
        self.target_modules.as_deref().unwrap_or(&[])
    }

    /// `alpha` as a float, for scale computations.
    pub fn alpha_f64(&self) -> Option<f64> {
        self.alpha.as_ref().and_then(Number::as_f64)
    }

    /// `dropout` as a float.
    pub fn dropout_f64(&self) -> Option<f64> {
        self.dropout.as_ref().and_then(Number::as_f64)
    }
}

/// Adapter types the tools know; anything else is [`AdapterKind::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdapterKind {
    /// LoRA (`lora`).
    Lora,
    /// DoRA (`dora`).
    Dora,
    /// IA³ (`ia3`).
    Ia3,
    /// LoKr (`lokr`).
    Lokr,
    /// LoHa (`loha`).
    Loha,
    /// AdaLoRA (`adalora`).
    Adalora,
    /// Prompt tuning (`prompt_tuning`).
    PromptTuning,
    /// Prefix tuning (`prefix_tuning`).
    PrefixTuning,
    /// P-tuning (`p_tuning`).
    PTuning,
    /// Any other type string.
    Other,
}

impl AdapterKind {
    /// Case-insensitive; `-` and `_` are interchangeable (`prompt-tuning` == `prompt_tuning`).
    pub fn from_type(s: &str) -> Self {
        let t = s.trim().to_ascii_lowercase().replace('-', "_");
        match t.as_str() {
            "lora" => Self::Lora,
            "dora" => Self::Dora,
            "ia3" | "ia³" => Self::Ia3,
            "lokr" => Self::Lokr,
            "loha" => Self::Loha,
            "adalora" => Self::Adalora,
            "prompt_tuning" | "prompt" | "soft_prompt" => Self::PromptTuning,
            "prefix_tuning" | "prefix" => Self::PrefixTuning,
            "p_tuning" | "ptuning" => Self::PTuning,
            _ => Self::Other,
        }
    }

    /// Prompt-learning adapters train embeddings, not weight deltas: no rank, no target modules.
    pub fn is_prompt_learning(self) -> bool {
        matches!(
            self,
            Self::PromptTuning | Self::PrefixTuning | Self::PTuning
        )
    }

    /// Whether a rank `r` is meaningful (and so required): not for IA³ nor prompt learning.
    pub fn requires_rank(self) -> bool {
        !(self == Self::Ia3 || self.is_prompt_learning())
    }
}

/// A soft prompt shipped with the expert (`soft_prompts` entries).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SoftPrompt {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// How a router picks the expert (`routing`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keywords: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_keywords: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_hint: Option<String>,
    /// In [0, 1]; kept as written (`1` stays an integer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Number>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Routing {
    /// The priority as a number, if given.
    pub fn priority_f64(&self) -> Option<f64> {
        self.priority.as_ref().and_then(Number::as_f64)
    }
}

/// Loading constraints against other experts (`constraints`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Constraints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chain: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_order: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incompatible_with: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Declared runtime overheads (`perf`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Perf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms_overhead: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_mb_overhead: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_batch_sizes: Option<Vec<u32>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Runtime hints; `kv_cache`, `attn_impl` and `max_experts` are new in the v2 container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candle_compatible: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_kv_cache_persistence: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_kernel: Option<String>,
    /// KV-cache layout the expert expects (`paged`, `contiguous`, `persistent`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache: Option<String>,
    /// Attention implementation (`sdpa`, `flash-v2`, `eager`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_impl: Option<String>,
    /// Most experts that may be active together with this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_experts: Option<u32>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// What a loader checks before attaching the adapter, so a wrong base fails early.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Compatibility {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_hash: Option<String>,
    /// Module name -> base weight shape; sorted so the output is deterministic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_shapes: Option<BTreeMap<String, Vec<u64>>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Training record; `dataset` and `config` are trainer-specific and kept as raw JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Training {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding: Option<Decoding>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Decoding settings; the grammar file named here is packed alongside the weights.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Decoding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_grammar: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Evaluation results (`evaluation`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Object of named scores, or a list of metric names (both occur in legacy manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Legacy signing fields, kept for display only (legacy signatures never verified).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Integrity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_algorithm: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The two manifest layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaVersion {
    /// `base_model` + root `adapters`.
    V1,
    /// `base_models[]`, each with `adapters`.
    V2,
}

impl Manifest {
    /// Parses `manifest.json`. Rejects duplicate keys (a parser-differential hazard) but does
    /// not validate; use [`validate_manifest_bytes`] for schema and rules.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let value = parse_value_strict(bytes)?;
        serde_json::from_slice(bytes).or_else(|e| {
            // As in `validate_manifest_bytes`: `8.0` reads as 8.
            serde_json::from_value(integral_floats_as_integers(value))
                .map_err(|_| ManifestError::from_typed(e))
        })
    }

    /// Pretty JSON (2-space indent, known keys in legacy order, unknown keys after), newline
    /// terminated.
    pub fn to_json_pretty(&self) -> Vec<u8> {
        // Cannot fail: every map key is a string and no Serialize impl here returns an error.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// The declared layout; missing means 1.0 (legacy default), unknown strings give `None`.
    pub fn schema(&self) -> Option<SchemaVersion> {
        match self.schema_version.as_deref() {
            None | Some("1.0") => Some(SchemaVersion::V1),
            Some("2.0") => Some(SchemaVersion::V2),
            Some(_) => None,
        }
    }

    /// Names of every base model, from `base_model` and `base_models[]`.
    pub fn base_model_names(&self) -> Vec<String> {
        let single = self.base_model.iter().map(|b| b.name().to_owned());
        let many = self.base_models.iter().flatten().map(|b| b.name.clone());
        single.chain(many).collect()
    }

    /// Every adapter, from root `adapters` (1.0) and `base_models[].adapters` (2.0), in order.
    pub fn adapters(&self) -> Vec<&Adapter> {
        let root = self.adapters.iter().flatten();
        let v1_nested = match &self.base_model {
            Some(BaseModelRef::Model(b)) => b.adapters.as_deref().unwrap_or(&[]),
            _ => &[],
        };
        let nested = self
            .base_models
            .iter()
            .flatten()
            .flat_map(|b| b.adapters.iter().flatten());
        root.chain(v1_nested).chain(nested).collect()
    }

    /// `routing.keywords`, empty when absent.
    pub fn routing_keywords(&self) -> &[String] {
        self.routing
            .as_ref()
            .and_then(|r| r.keywords.as_deref())
            .unwrap_or(&[])
    }
}

/// Reads `Option<T>` as present (`Some(None)` for `null`) so the `null` is written back.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

mod errors;
mod rules;
pub mod schema;
mod strict;

pub use errors::{ManifestError, RuleViolation, SchemaIssue};
pub use rules::check_rules;
#[cfg(test)]
use rules::is_semver;
#[cfg(test)]
use strict::compiled_schema;
pub use strict::{parse_value_strict, validate_schema};

/// Parse + schema + rules: the gate a manifest passes before it is packed or trusted.
pub fn validate_manifest_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let value = parse_value_strict(bytes)?;
    validate_schema(&value).map_err(ManifestError::Schema)?;
    // Re-read from the bytes (not the Value) so a typed failure still has a line and column.
    let manifest: Manifest = match serde_json::from_slice(bytes) {
        Ok(manifest) => manifest,
        // `8.0` is an integer to JSON Schema (and to Python's PEFT): read
        // it as 8, as adapter_config.json is read, before calling it wrong.
        Err(e) => serde_json::from_value(integral_floats_as_integers(value))
            .map_err(|_| ManifestError::from_typed(e))?,
    };
    let violations = check_rules(&manifest);
    if violations.is_empty() {
        Ok(manifest)
    } else {
        Err(ManifestError::Rules(violations))
    }
}

/// `8.0` → `8` throughout a JSON value (whole floats within `i64`/`u64`).
fn integral_floats_as_integers(value: Value) -> Value {
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            let whole = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15);
            match whole {
                Some(f) if f >= 0.0 => Value::from(f as u64),
                Some(f) => Value::from(f as i64),
                None => Value::Number(n),
            }
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(integral_floats_as_integers).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, integral_floats_as_integers(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests;
