//! Manifest ↔ adapter: does what the manifest says about its adapters
//! (type, r, alpha, target_modules, scaling, path, size_bytes, sha256)
//! agree with `adapter_config.json` and the tensors? Every disagreement is a
//! warning: the tensors are what a runtime uses, the manifest is what a
//! router or a registry believes.

use std::collections::BTreeSet;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::diagnostics::{Finding, Location};
use crate::format::manifest::{Adapter, AdapterKind, Manifest, SchemaVersion};
use crate::format::package::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST};
use crate::format::peft::PeftType;
use crate::format::tensors::{ModuleInfo, ModuleKind};

/// Size and SHA-256 of `adapter_model.safetensors` as the package holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightsDigest {
    pub size: u64,
    pub sha256: [u8; 32],
}

impl WeightsDigest {
    /// Of bytes in memory.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            size: bytes.len() as u64,
            sha256: Sha256::digest(bytes).into(),
        }
    }

    /// Of a file, hashed as a stream (bounded memory).
    pub fn of_file(path: &std::path::Path) -> std::io::Result<Self> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let size = std::io::copy(&mut file, &mut hasher)?;
        Ok(Self {
            size,
            sha256: hasher.finalize().into(),
        })
    }

    /// Lower-case hex of the digest.
    pub fn hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// What is known of the adapter the package really holds.
#[derive(Debug, Default)]
pub struct AdapterFacts<'a> {
    /// `adapter_config.json`, parsed.
    pub config: Option<&'a Value>,
    pub peft_type: Option<PeftType>,
    /// Module table (ranks from the tensor shapes); `None` when not read.
    pub modules: Option<&'a [ModuleInfo]>,
    /// `adapter_model.safetensors` as packaged; `None` when not computed.
    pub weights: Option<WeightsDigest>,
    /// File (section or member) names the package holds.
    pub files: Vec<String>,
}

/// One adapter entry of the manifest with the JSON pointer it sits at.
pub struct Entry<'m> {
    pub pointer: String,
    pub adapter: &'m Adapter,
}

/// Every adapter entry, in order (schema 2.0: under each base model).
pub fn adapter_entries(manifest: &Manifest) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    match manifest.schema() {
        Some(SchemaVersion::V2) => {
            for (i, base) in manifest.base_models.iter().flatten().enumerate() {
                for (j, adapter) in base.adapters.iter().flatten().enumerate() {
                    out.push(Entry {
                        pointer: format!("/base_models/{i}/adapters/{j}"),
                        adapter,
                    });
                }
            }
        }
        _ => {
            for (j, adapter) in manifest.adapters.iter().flatten().enumerate() {
                out.push(Entry {
                    pointer: format!("/adapters/{j}"),
                    adapter,
                });
            }
        }
    }
    out
}

fn basename(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// The entries that describe the package's own adapter weights: those whose
/// `path` is `adapter_model.safetensors` (or absent); the only entry when
/// there is just one.
pub fn entries_for_weights<'m>(entries: &'m [Entry<'m>]) -> Vec<&'m Entry<'m>> {
    let matched: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            e.adapter
                .path
                .as_deref()
                .is_none_or(|p| basename(p) == ADAPTER_WEIGHTS)
        })
        .collect();
    if matched.is_empty() && entries.len() == 1 {
        entries.iter().collect()
    } else {
        matched
    }
}

/// The adapter kind the config and tensors say: magnitude vectors in the
/// tensors make it DoRA whatever `use_dora` says (see [`config_findings`]).
fn actual_kind(config: &Value, peft_type: PeftType, modules: Option<&[ModuleInfo]>) -> AdapterKind {
    let dora_tensors = has_dora_tensors(modules);
    match peft_type {
        PeftType::Ia3 => AdapterKind::Ia3,
        PeftType::PromptTuning => AdapterKind::PromptTuning,
        PeftType::Lora if dora_tensors || config.get("use_dora") == Some(&Value::Bool(true)) => {
            AdapterKind::Dora
        }
        PeftType::Lora => AdapterKind::Lora,
    }
}

/// A string `target_modules` is a regex PEFT full-matches against module
/// names when it re-creates the adapter: an adapted module it misses is
/// not re-created, and its weights are dropped at load.
fn check_target_regex(pattern: &str, modules: &[ModuleInfo]) -> Option<Finding> {
    let at = Location::section(ADAPTER_CONFIG).pointer("/target_modules");
    let shown = crate::diagnostics::printable(pattern);
    let regex = match regex_lite::Regex::new(&format!("^(?:{pattern})$")) {
        Ok(r) => r,
        Err(e) => {
            return Some(
                Finding::warning(
                    "adapter.config-target-modules",
                    format!("target_modules {shown:?} is not a valid regex: {e}"),
                )
                .at(at),
            )
        }
    };
    let missed: Vec<&str> = modules
        .iter()
        .map(|m| m.module.as_str())
        .filter(|name| !regex.is_match(name))
        .collect();
    let first = missed.first()?;
    Some(
        Finding::warning(
            "adapter.config-target-modules",
            format!(
                "target_modules regex {shown:?} does not match {} of the {} adapted modules (e.g. {})",
                missed.len(),
                modules.len(),
                crate::diagnostics::printable(first)
            ),
        )
        .at(at)
        .hint("PEFT full-matches the regex against module names: those modules would not be re-created and their weights would be dropped at load"),
    )
}

fn has_dora_tensors(modules: Option<&[ModuleInfo]>) -> bool {
    modules.is_some_and(|m| m.iter().any(|m| m.kind == ModuleKind::Dora))
}

/// The JSON type of a value, for messages.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `adapter_config.json` keys PEFT reads with a fixed type: a value of
/// another type (`"lora_alpha": "16"`) is ignored or misread by loaders.
/// And DoRA tensors under a config that does not say `use_dora: true`:
/// PEFT would load them as plain LoRA, dropping the magnitudes.
fn config_findings(config: &Value, modules: Option<&[ModuleInfo]>) -> Vec<Finding> {
    let mut out = Vec::new();
    for (key, want_number) in [
        ("r", true),
        ("lora_alpha", true),
        ("use_dora", false),
        ("use_rslora", false),
    ] {
        let Some(v) = config.get(key) else { continue };
        let fits = if want_number {
            v.is_number()
        } else {
            v.is_boolean()
        };
        if !fits {
            let want = if want_number {
                "a number"
            } else {
                "true or false"
            };
            out.push(
                Finding::warning(
                    "adapter.config-type",
                    format!(
                        "adapter_config.json's {key} is {} ({}), not {want}",
                        crate::diagnostics::printable(&v.to_string()),
                        json_type(v)
                    ),
                )
                .at(Location::section(ADAPTER_CONFIG).pointer(format!("/{key}")))
                .hint("PEFT reads it as a JSON number or boolean: drop the quotes"),
            );
        }
    }
    if let (Some(pattern), Some(modules)) = (
        config.get("target_modules").and_then(Value::as_str),
        modules.filter(|m| !m.is_empty()),
    ) {
        out.extend(check_target_regex(pattern, modules));
    }
    let dora_tensors = has_dora_tensors(modules);
    if dora_tensors && config.get("use_dora") != Some(&Value::Bool(true)) {
        out.push(
            Finding::warning(
                "adapter.config-dora-mismatch",
                "the tensors hold lora_magnitude_vector (DoRA) but adapter_config.json does not say \"use_dora\": true",
            )
            .at(Location::section(ADAPTER_CONFIG).pointer("/use_dora"))
            .hint("PEFT would load it as plain LoRA and ignore the magnitudes: set \"use_dora\": true"),
        );
    }
    out
}

fn at(pointer: &str, field: &str) -> Location {
    Location::section(MANIFEST).pointer(format!("{pointer}/{field}"))
}

fn show_set(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

fn nonzero_rank_pattern(config: &Value) -> bool {
    config
        .get("rank_pattern")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
}

/// Compares the manifest's adapter entries with the adapter the package holds.
pub fn check_consistency(manifest: &Manifest, facts: &AdapterFacts<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let entries = adapter_entries(manifest);
    // Entries naming other files: the file must be in the package.
    for entry in &entries {
        if let Some(path) = entry.adapter.path.as_deref() {
            let name = basename(path);
            if name != ADAPTER_WEIGHTS && !facts.files.iter().any(|f| basename(f) == name) {
                out.push(
                    Finding::warning(
                        "manifest.adapter-path-missing",
                        format!(
                            "the adapter's path {path:?} names a file the package does not hold"
                        ),
                    )
                    .at(at(&entry.pointer, "path"))
                    .hint(format!(
                        "the adapter weights are packaged as {ADAPTER_WEIGHTS}"
                    )),
                );
            }
        }
    }
    let (Some(config), Some(peft_type)) = (facts.config, facts.peft_type) else {
        return out;
    };
    let tensor_ranks: Option<BTreeSet<usize>> = facts
        .modules
        .map(|m| m.iter().filter_map(|m| m.rank).collect());
    let config_r = config.get("r").and_then(Value::as_u64);
    // With a rank_pattern, modules legitimately differ from `r`.
    let uniform = !nonzero_rank_pattern(config);
    if let (Some(r), Some(ranks), true) = (config_r, &tensor_ranks, uniform) {
        if !ranks.is_empty() && ranks.iter().any(|&t| t as u64 != r) {
            out.push(
                Finding::warning(
                    "adapter.config-rank-mismatch",
                    format!(
                        "adapter_config.json says r={r} but the tensors have rank {}",
                        ranks
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .at(Location::section(ADAPTER_CONFIG).pointer("/r"))
                .hint("the tensors decide: PEFT will load them with the rank of their shapes"),
            );
        }
    }
    out.extend(config_findings(config, facts.modules));
    let kind = actual_kind(config, peft_type, facts.modules);
    let selected = entries_for_weights(&entries);
    for entry in selected {
        check_entry(
            entry,
            config,
            kind,
            config_r,
            tensor_ranks.as_ref(),
            uniform,
            facts,
            &mut out,
        );
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn check_entry(
    entry: &Entry<'_>,
    config: &Value,
    kind: AdapterKind,
    config_r: Option<u64>,
    tensor_ranks: Option<&BTreeSet<usize>>,
    uniform: bool,
    facts: &AdapterFacts<'_>,
    out: &mut Vec<Finding>,
) {
    let a = entry.adapter;
    let p = entry.pointer.as_str();
    let declared = a.kind();
    if declared != AdapterKind::Other && declared != kind {
        out.push(
            Finding::warning(
                "manifest.adapter-type-mismatch",
                format!(
                    "the manifest says type {:?} but the adapter is {}",
                    a.adapter_type,
                    kind_label(kind)
                ),
            )
            .at(at(p, "type")),
        );
    }
    if let Some(r) = a.r {
        let tensors = tensor_ranks.filter(|t| uniform && !t.is_empty()).map(|t| {
            t.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        });
        let config_differs = config_r.is_some_and(|c| c != u64::from(r));
        let tensors_differ = uniform
            && tensor_ranks
                .is_some_and(|t| !t.is_empty() && t.iter().any(|&x| x as u64 != u64::from(r)));
        if config_differs || tensors_differ {
            let mut says = Vec::new();
            if let Some(c) = config_r {
                says.push(format!("adapter_config.json says r={c}"));
            }
            if let Some(t) = tensors {
                says.push(format!("the tensors have rank {t}"));
            }
            out.push(
                Finding::warning(
                    "manifest.adapter-rank-mismatch",
                    format!("the manifest says r={r} but {}", says.join(" and ")),
                )
                .at(at(p, "r"))
                .hint("fix r in manifest.json: routers and registries read it, the runtime reads the tensors"),
            );
        }
    }
    if let (Some(alpha), Some(config_alpha)) = (
        a.alpha_f64(),
        config.get("lora_alpha").and_then(Value::as_f64),
    ) {
        if (alpha - config_alpha).abs() > 1e-9 * config_alpha.abs().max(1.0) {
            out.push(
                Finding::warning(
                    "manifest.adapter-alpha-mismatch",
                    format!(
                        "the manifest says alpha={alpha} but adapter_config.json says lora_alpha={config_alpha}"
                    ),
                )
                .at(at(p, "alpha")),
            );
        }
    }
    if let Some(scaling) = a.scaling.as_deref() {
        let s = scaling.trim().to_ascii_lowercase();
        let rslora = config.get("use_rslora") == Some(&Value::Bool(true));
        let dora = kind == AdapterKind::Dora;
        let consistent = match s.as_str() {
            "rslora" => rslora,
            "dora" => dora,
            "standard" | "lora" | "default" => !rslora,
            _ => true,
        };
        if !consistent {
            out.push(
                Finding::warning(
                    "manifest.adapter-scaling-mismatch",
                    format!(
                        "the manifest says scaling {scaling:?} but adapter_config.json has use_rslora={rslora}, use_dora={dora}"
                    ),
                )
                .at(at(p, "scaling")),
            );
        }
    }
    if !kind.is_prompt_learning() {
        check_targets(a, p, config, facts.modules, out);
    }
    if let Some(weights) = facts.weights {
        check_digests(a, p, &weights, out);
    }
}

fn kind_label(kind: AdapterKind) -> &'static str {
    match kind {
        AdapterKind::Lora => "lora",
        AdapterKind::Dora => "dora",
        AdapterKind::Ia3 => "ia3",
        AdapterKind::PromptTuning => "prompt_tuning",
        _ => "other",
    }
}

fn check_targets(
    a: &Adapter,
    p: &str,
    config: &Value,
    modules: Option<&[ModuleInfo]>,
    out: &mut Vec<Finding>,
) {
    let declared: BTreeSet<String> = a.target_modules().iter().cloned().collect();
    if declared.is_empty() {
        return;
    }
    if let Some(list) = config.get("target_modules").and_then(Value::as_array) {
        let configured: BTreeSet<String> = list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        if configured != declared {
            let only_manifest: BTreeSet<String> =
                declared.difference(&configured).cloned().collect();
            let only_config: BTreeSet<String> = configured.difference(&declared).cloned().collect();
            let mut parts = Vec::new();
            if !only_manifest.is_empty() {
                parts.push(format!(
                    "only in the manifest: {}",
                    show_set(&only_manifest)
                ));
            }
            if !only_config.is_empty() {
                parts.push(format!(
                    "only in adapter_config.json: {}",
                    show_set(&only_config)
                ));
            }
            out.push(
                Finding::warning(
                    "manifest.adapter-target-modules-mismatch",
                    format!(
                        "target_modules differ from adapter_config.json ({})",
                        parts.join("; ")
                    ),
                )
                .at(at(p, "target_modules")),
            );
        }
    }
    if let Some(modules) = modules.filter(|m| !m.is_empty()) {
        let unused: BTreeSet<String> = declared
            .iter()
            .filter(|t| {
                !modules
                    .iter()
                    .any(|m| m.module == **t || m.module.ends_with(&format!(".{t}")))
            })
            .cloned()
            .collect();
        if !unused.is_empty() {
            out.push(
                Finding::warning(
                    "manifest.adapter-target-module-unused",
                    format!(
                        "no adapted module matches target_modules {}",
                        show_set(&unused)
                    ),
                )
                .at(at(p, "target_modules"))
                .hint("list the modules the adapter really adapts"),
            );
        }
    }
}

fn check_digests(a: &Adapter, p: &str, weights: &WeightsDigest, out: &mut Vec<Finding>) {
    let size_missing = matches!(a.size_bytes, None | Some(0));
    let sha_missing = a.sha256.as_deref().is_none_or(|s| s.trim().is_empty());
    if let Some(size) = a.size_bytes.filter(|&s| s != 0 && s != weights.size) {
        out.push(
            Finding::warning(
                "manifest.adapter-size-mismatch",
                format!(
                    "the manifest says size_bytes={size} but {ADAPTER_WEIGHTS} is {} bytes",
                    weights.size
                ),
            )
            .at(at(p, "size_bytes")),
        );
    }
    if let Some(sha) = a.sha256.as_deref().filter(|s| !s.trim().is_empty()) {
        if !sha.trim().eq_ignore_ascii_case(&weights.hex()) {
            out.push(
                Finding::warning(
                    "manifest.adapter-sha256-mismatch",
                    format!(
                        "the manifest's sha256 {sha} is not the digest of {ADAPTER_WEIGHTS} ({})",
                        weights.hex()
                    ),
                )
                .at(at(p, "sha256")),
            );
        }
    }
    if size_missing || sha_missing {
        out.push(
            Finding::note(
                "manifest.adapter-digest-missing",
                "the adapter's size_bytes / sha256 are empty",
            )
            .at(at(p, if sha_missing { "sha256" } else { "size_bytes" }))
            .hint("`expertui --headless package` fills them"),
        );
    }
}

/// Fills `size_bytes` and `sha256` of the entries describing the package's
/// weights where they are empty or zero. Returns the new manifest bytes, or
/// `None` when nothing was empty (the manifest stays byte for byte as
/// written). Unknown keys, `_comment`s and key order are kept.
pub fn fill_adapter_digests(
    manifest_bytes: &[u8],
    manifest: &Manifest,
    weights: &WeightsDigest,
) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(manifest_bytes).ok()?;
    let entries = adapter_entries(manifest);
    let mut changed = false;
    for entry in entries_for_weights(&entries) {
        let Some(object) = value
            .pointer_mut(&entry.pointer)
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if matches!(entry.adapter.size_bytes, None | Some(0)) {
            object.insert("size_bytes".into(), Value::from(weights.size));
            changed = true;
        }
        if entry
            .adapter
            .sha256
            .as_deref()
            .is_none_or(|s| s.trim().is_empty())
        {
            object.insert("sha256".into(), Value::from(weights.hex()));
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    let mut bytes = serde_json::to_vec_pretty(&value).ok()?;
    bytes.push(b'\n');
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistyped_config_keys_and_unflagged_dora_are_warned() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm-dora-r8");
        let adapter = crate::format::peft::PeftAdapter::read_dir(&dir).unwrap();
        assert!(config_findings(&adapter.config, Some(&adapter.modules)).is_empty());

        let mut config = adapter.config.clone();
        config["lora_alpha"] = Value::from("16");
        config["use_dora"] = Value::from("true");
        let codes: Vec<String> = config_findings(&config, Some(&adapter.modules))
            .into_iter()
            .map(|f| format!("{} {}", f.code, f.message))
            .collect();
        assert_eq!(codes.len(), 3, "{codes:?}");
        assert!(
            codes[0].starts_with("adapter.config-type") && codes[0].contains("lora_alpha"),
            "{codes:?}"
        );
        assert!(
            codes[1].starts_with("adapter.config-type") && codes[1].contains("use_dora"),
            "{codes:?}"
        );
        assert!(
            codes[2].starts_with("adapter.config-dora-mismatch"),
            "{codes:?}"
        );
        // The tensors decide the kind the manifest is compared with.
        assert_eq!(
            actual_kind(&config, PeftType::Lora, Some(&adapter.modules)),
            AdapterKind::Dora
        );
    }

    #[test]
    fn a_target_modules_regex_must_match_every_adapted_module() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm-lora-r8");
        let adapter = crate::format::peft::PeftAdapter::read_dir(&dir).unwrap();
        let modules = &adapter.modules;
        assert!(check_target_regex(r".*\.(query|key|value|dense)", modules).is_none());
        let none = check_target_regex(r".*q_proj$", modules).unwrap();
        assert!(
            none.message
                .contains(&format!("{} of the {}", modules.len(), modules.len())),
            "{}",
            none.message
        );
        // Not a full match: `query` alone misses `encoder.layer.0.attention.self.query`.
        assert!(check_target_regex("query", modules).is_some());
        let bad = check_target_regex("(", modules).unwrap();
        assert!(bad.message.contains("not a valid regex"), "{}", bad.message);
    }
}
