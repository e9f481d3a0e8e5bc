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
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// The JSON Schema (draft 2020-12) for `manifest.json`, embedded so validation needs no files.
pub const MANIFEST_SCHEMA: &str = include_str!("../../assets/manifest.schema.json");

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
        parse_value_strict(bytes)?;
        serde_json::from_slice(bytes).map_err(ManifestError::from_json)
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

// ---------------------------------------------------------------------------------------------
// Errors

/// One schema failure at an instance location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaIssue {
    /// JSON pointer into the manifest (`""` is the root).
    pub path: String,
    pub message: String,
}

/// One broken packaging rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleViolation {
    /// JSON pointer into the manifest, e.g. `/base_models/0/adapters/1/r`.
    pub path: String,
    pub message: String,
}

impl RuleViolation {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

fn show_path(path: &str) -> &str {
    if path.is_empty() {
        "(root)"
    } else {
        path
    }
}

impl fmt::Display for SchemaIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", show_path(&self.path), self.message)
    }
}

impl fmt::Display for RuleViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", show_path(&self.path), self.message)
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, a duplicate key, or a value the typed model cannot hold.
    #[error("manifest.json: line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    /// The manifest does not follow the JSON Schema (`assets/manifest.schema.json`).
    #[error("manifest.json: {} schema issue(s): {}", .0.len(), join(.0))]
    Schema(Vec<SchemaIssue>),
    /// The manifest breaks the packaging rules (semver, base model, adapters, ...).
    #[error("manifest.json: {} rule violation(s): {}", .0.len(), join(.0))]
    Rules(Vec<RuleViolation>),
}

impl ManifestError {
    fn from_json(e: serde_json::Error) -> Self {
        let (line, column) = (e.line(), e.column());
        let full = e.to_string();
        let suffix = format!(" at line {line} column {column}");
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
        Self::Json {
            line,
            column,
            message,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing, schema, rules

/// A JSON value parsed with duplicate keys refused: two readers must never see two manifests.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parses to a [`Value`], refusing syntax errors and duplicate keys with their line/column.
pub fn parse_value_strict(bytes: &[u8]) -> Result<Value, ManifestError> {
    serde_json::from_slice::<StrictValue>(bytes)
        .map(|StrictValue(v)| v)
        .map_err(ManifestError::from_json)
}

/// The `jsonschema` crate's validator of the embedded schema: the reference
/// the run-time interpreter ([`schema`]) is tested against.
#[cfg(test)]
fn compiled_schema() -> Result<&'static jsonschema::Validator, &'static str> {
    use std::sync::OnceLock;
    static VALIDATOR: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            let schema: Value = serde_json::from_str(MANIFEST_SCHEMA)
                .map_err(|e| format!("embedded manifest schema is not JSON: {e}"))?;
            jsonschema::draft202012::new(&schema)
                .map_err(|e| format!("embedded manifest schema does not compile: {e}"))
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Schema messages quote the offending value; keep a huge one from flooding a report.
fn clip(mut message: String) -> String {
    const MAX: usize = 300;
    if message.len() > MAX {
        let mut end = MAX;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// Checks `value` against [`MANIFEST_SCHEMA`]; every issue names its instance path.
pub fn validate_schema(value: &Value) -> Result<(), Vec<SchemaIssue>> {
    let root = schema::schema().map_err(|message| {
        vec![SchemaIssue {
            path: String::new(),
            message: message.to_owned(),
        }]
    })?;
    let issues = schema::validate(root, value);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues)
    }
}

/// `MAJOR.MINOR.PATCH[-pre][+build]` per semver 2.0 (no leading zeros in numeric parts).
fn is_semver(v: &str) -> bool {
    fn numeric(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
    }
    fn idents(s: &str, pre: bool) -> bool {
        s.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && (!pre || !id.bytes().all(|b| b.is_ascii_digit()) || numeric(id))
        })
    }
    let (rest, build) = match v.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| numeric(p))
        && pre.is_none_or(|p| idents(p, true))
        && build.is_none_or(|b| idents(b, false))
}

fn check_adapters(adapters: Option<&[Adapter]>, path: &str, out: &mut Vec<RuleViolation>) {
    let adapters = match adapters {
        None => {
            out.push(RuleViolation::new(path, "adapters are missing"));
            return;
        }
        Some([]) => {
            out.push(RuleViolation::new(path, "adapters are empty"));
            return;
        }
        Some(a) => a,
    };
    for (i, a) in adapters.iter().enumerate() {
        let p = format!("{path}/{i}");
        let kind = a.kind();
        if a.adapter_type.trim().is_empty() {
            out.push(RuleViolation::new(
                format!("{p}/type"),
                "adapter type is empty",
            ));
        }
        // Prompt learning trains embeddings only; PEFT gives it no target modules.
        if !kind.is_prompt_learning() {
            match a.target_modules.as_deref() {
                None | Some([]) => out.push(RuleViolation::new(
                    format!("{p}/target_modules"),
                    "target_modules is missing or empty",
                )),
                Some(mods) => {
                    for (j, m) in mods.iter().enumerate() {
                        if m.trim().is_empty() {
                            out.push(RuleViolation::new(
                                format!("{p}/target_modules/{j}"),
                                "empty module name",
                            ));
                        }
                    }
                }
            }
        }
        match a.r {
            None if kind.requires_rank() => out.push(RuleViolation::new(
                format!("{p}/r"),
                format!("rank r is required for adapter type `{}`", a.adapter_type),
            )),
            Some(0) => out.push(RuleViolation::new(format!("{p}/r"), "rank r must be >= 1")),
            _ => {}
        }
    }
}

/// The packaging rules of the legacy packager, each naming the JSON path it concerns.
pub fn check_rules(m: &Manifest) -> Vec<RuleViolation> {
    let mut out = Vec::new();
    if m.name.trim().is_empty() {
        out.push(RuleViolation::new("/name", "name is empty"));
    }
    if m.version.trim().is_empty() {
        out.push(RuleViolation::new("/version", "version is empty"));
    } else if !is_semver(&m.version) {
        out.push(RuleViolation::new(
            "/version",
            format!("version `{}` is not semver (MAJOR.MINOR.PATCH)", m.version),
        ));
    }

    match m.schema() {
        None => out.push(RuleViolation::new(
            "/schema_version",
            format!(
                "unknown schema_version `{}` (expected \"1.0\" or \"2.0\")",
                m.schema_version.as_deref().unwrap_or_default()
            ),
        )),
        Some(SchemaVersion::V1) => {
            if m.base_models.is_some() {
                out.push(RuleViolation::new(
                    "/base_models",
                    "base_models belongs to schema_version \"2.0\"; 1.0 uses base_model",
                ));
            }
            match &m.base_model {
                None => out.push(RuleViolation::new(
                    "/base_model",
                    "schema_version 1.0 needs base_model",
                )),
                Some(b) if b.name().trim().is_empty() => {
                    let p = match b {
                        BaseModelRef::Name(_) => "/base_model",
                        BaseModelRef::Model(_) => "/base_model/name",
                    };
                    out.push(RuleViolation::new(p, "base model name is empty"));
                }
                Some(_) => {}
            }
            check_adapters(m.adapters.as_deref(), "/adapters", &mut out);
        }
        Some(SchemaVersion::V2) => {
            if m.base_model.is_some() {
                out.push(RuleViolation::new(
                    "/base_model",
                    "base_model belongs to schema_version \"1.0\"; 2.0 uses base_models",
                ));
            }
            if m.adapters.is_some() {
                out.push(RuleViolation::new(
                    "/adapters",
                    "schema_version 2.0 keeps adapters under base_models[]",
                ));
            }
            match m.base_models.as_deref() {
                None => out.push(RuleViolation::new(
                    "/base_models",
                    "schema_version 2.0 needs base_models",
                )),
                Some([]) => out.push(RuleViolation::new("/base_models", "base_models is empty")),
                Some(models) => {
                    for (i, b) in models.iter().enumerate() {
                        if b.name.trim().is_empty() {
                            out.push(RuleViolation::new(
                                format!("/base_models/{i}/name"),
                                "base model name is empty",
                            ));
                        }
                        let p = format!("/base_models/{i}/adapters");
                        check_adapters(b.adapters.as_deref(), &p, &mut out);
                    }
                }
            }
        }
    }

    if let Some(priority) = m.routing.as_ref().and_then(|r| r.priority.as_ref()) {
        let ok = priority.as_f64().is_some_and(|p| (0.0..=1.0).contains(&p));
        if !ok {
            out.push(RuleViolation::new(
                "/routing/priority",
                format!("priority {priority} is outside [0, 1]"),
            ));
        }
    }
    out
}

/// Parse + schema + rules: the gate a manifest passes before it is packed or trusted.
pub fn validate_manifest_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let value = parse_value_strict(bytes)?;
    validate_schema(&value).map_err(ManifestError::Schema)?;
    // Re-read from the bytes (not the Value) so a typed failure still has a line and column.
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(ManifestError::from_json)?;
    let violations = check_rules(&manifest);
    if violations.is_empty() {
        Ok(manifest)
    } else {
        Err(ManifestError::Rules(violations))
    }
}

pub mod schema;

#[cfg(test)]
mod tests;
