//! The manifest and the grammar as findings.

use serde_json::Value;

use crate::diagnostics::{Finding, Location};
use crate::format::grammar::check_gbnf;
use crate::format::manifest::{validate_manifest_bytes, Manifest, ManifestError};

/// Parses and checks `manifest.json` (syntax, duplicate keys, JSON Schema,
/// packaging rules): every failure is an error finding located in
/// `section` by line:column or JSON pointer. Returns the typed manifest
/// and its JSON when it passed.
pub fn check_manifest(
    bytes: &[u8],
    section: &str,
    findings: &mut Vec<Finding>,
) -> Option<(Manifest, Value)> {
    if bytes.starts_with(b"\xef\xbb\xbf") {
        findings.push(
            Finding::error(
                "manifest.byte-order-mark",
                "manifest.json starts with a UTF-8 byte-order mark, which JSON readers (serde, Python's json) refuse",
            )
            .at(Location::section(section).line_col(1, 1))
            .hint("save the file as UTF-8 without a BOM"),
        );
        return None;
    }
    match validate_manifest_bytes(bytes) {
        Ok(manifest) => {
            let value = serde_json::from_slice(bytes).ok()?;
            Some((manifest, value))
        }
        Err(ManifestError::Json {
            line,
            column,
            message,
        }) => {
            let hint = "manifest.json must be one JSON object with no duplicate keys";
            findings.push(at_line(
                "manifest.json",
                message,
                section,
                (line, column),
                hint,
            ));
            None
        }
        Err(ManifestError::Type {
            line,
            column,
            message,
        }) => {
            let hint = "the value is valid JSON but does not fit the field: see assets/manifest.schema.json";
            findings.push(at_line(
                "manifest.type",
                message,
                section,
                (line, column),
                hint,
            ));
            None
        }
        Err(ManifestError::Schema(issues)) => {
            findings.extend(issues.into_iter().map(|issue| {
                Finding::error("manifest.schema", issue.message)
                    .at(Location::section(section).pointer(issue.path))
                    .hint("see assets/manifest.schema.json for the fields and their types")
            }));
            None
        }
        Err(ManifestError::Rules(violations)) => {
            findings.extend(violations.into_iter().map(|v| {
                Finding::error("manifest.rule", v.message)
                    .at(Location::section(section).pointer(v.path))
            }));
            None
        }
    }
}

/// An error finding at a line and column of the manifest.
fn at_line(
    code: &'static str,
    message: String,
    section: &str,
    (line, column): (usize, usize),
    hint: &str,
) -> Finding {
    Finding::error(code, message)
        .at(Location::section(section).line_col(line, column))
        .hint(hint)
}

/// Checks a GBNF grammar as llama.cpp would load it. Every problem is a
/// warning (or a note): the grammar is stored verbatim either way, so a
/// published expert with a grammar llama.cpp refuses still packages and
/// migrates.
pub fn check_grammar(bytes: &[u8], section: &str) -> Vec<Finding> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            return vec![Finding::warning(
                "grammar.encoding",
                format!("the grammar is not UTF-8 ({e}); llama.cpp reads it as UTF-8"),
            )
            .at(Location::section(section).at(Some(e.valid_up_to() as u64)))]
        }
    };
    check_gbnf(text)
        .issues
        .iter()
        .map(|issue| {
            let mut location = Location::section(section);
            if let Some((line, column)) = issue.position() {
                location = location.line_col(line, column);
            }
            let mut finding =
                Finding::new(issue.severity(), issue.code(), issue.message()).at(location);
            finding.hint = issue.hint();
            finding
        })
        .collect()
}

/// Router embeddings must be a safetensors blob of floating-point matrices.
pub fn check_router_embeddings(bytes: &[u8], section: &str) -> Vec<Finding> {
    use crate::format::tensors::TensorBlob;
    match TensorBlob::parse(bytes, section) {
        Err(e) => vec![Finding::error("router-embeddings.invalid", e.to_string())
            .at(Location::section(section))],
        Ok(blob) => blob
            .tensors
            .iter()
            .filter(|(_, view)| {
                view.shape().len() != 2 || !matches!(
                    view.dtype(),
                    safetensors::Dtype::F16 | safetensors::Dtype::BF16 | safetensors::Dtype::F32 | safetensors::Dtype::F64
                )
            })
            .map(|(name, view)| {
                Finding::warning(
                    "router-embeddings.shape",
                    format!(
                        "{name} is {:?} {:?}: routers expect a float matrix (one row per example or centroid)",
                        view.dtype(),
                        view.shape()
                    ),
                )
                .at(Location::section(section))
            })
            .collect(),
    }
}
