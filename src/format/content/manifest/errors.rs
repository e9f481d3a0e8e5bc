//! Why a manifest was refused: JSON errors with their line and column,
//! schema issues and rule violations with their JSON pointers.

use std::fmt;

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
    pub(super) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
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
    /// Not JSON, or a duplicate key.
    #[error("manifest.json: line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    /// Well-formed JSON that passes the schema, with a value the typed model
    /// cannot hold (a rank above 2^32, a fraction where a count goes).
    #[error("manifest.json: line {line}, column {column}: {message}")]
    Type {
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
    /// A failure of the typed parse, after the value parsed (duplicate keys
    /// refused) and passed the schema: always a value that does not fit.
    pub(super) fn from_typed(e: serde_json::Error) -> Self {
        let (line, column, message) = located(&e);
        Self::Type {
            line,
            column,
            message,
        }
    }

    pub(super) fn from_json(e: serde_json::Error) -> Self {
        let (line, column, message) = located(&e);
        Self::Json {
            line,
            column,
            message,
        }
    }
}

/// serde_json's line, column and message (without its " at line …" tail,
/// which the error's own display adds back).
fn located(e: &serde_json::Error) -> (usize, usize, String) {
    let (line, column) = (e.line(), e.column());
    let full = e.to_string();
    let suffix = format!(" at line {line} column {column}");
    (
        line,
        column,
        full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
    )
}

/// Schema messages quote the offending value; keep a huge one from flooding a report.
pub(super) fn clip(mut message: String) -> String {
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
