//! One validation engine for every verb and the TUI.
//!
//! [`validate_path`] opens a file whatever its format (`.expert` v2 or a
//! legacy tar.gz package), runs every check that applies (container
//! structure, digests, manifest schema and rules, manifest ↔ adapter
//! consistency, grammar, base model, legacy sidecar, signature and trust)
//! and returns one [`ValidationReport`]: findings with a severity, a stable
//! code and a location. `validate`, `info`, `package`, `convert`, `sign`, the
//! TUI and the examples read the report; none of them decides validity on
//! its own. Errors make a file invalid (exit 3); warnings are printed and
//! exit 0 unless `--strict` turns them into errors.

mod binary;
pub mod consistency;
mod contents;
mod legacy;
pub mod manifest;

use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

pub use consistency::{check_consistency, fill_adapter_digests, AdapterFacts, WeightsDigest};
pub use contents::check_contents;
pub use legacy::member_kind;

use crate::diagnostics::{make_strict, Counts, Finding, Severity};
use crate::format::error::FormatError;
use crate::format::signing::Policy;

/// `format` of a `.expert` v2 file in reports.
pub const FORMAT_BINARY: &str = "binary";
/// `format` of a legacy tar.gz package in reports.
pub const FORMAT_LEGACY: &str = "legacy-tar.gz";

/// Exit code of an invalid or corrupt input.
pub const EXIT_INVALID: u8 = 3;

/// What to check and what to include.
#[derive(Default)]
pub struct ValidateOptions<'a> {
    /// Hash every section (binary) and compare the adapter's digest with
    /// the manifest. A signed file is always fully hashed.
    pub verify_integrity: bool,
    /// Base model to check shapes and hashes against.
    pub base_model: Option<&'a Path>,
    /// Signature policy; `None` is the default policy (nothing required).
    pub policy: Option<&'a Policy>,
    /// Warnings become errors.
    pub strict: bool,
    /// Include the section (or member) table.
    pub list_sections: bool,
    /// Include header fields and the manifest.
    pub dump_metadata: bool,
    /// Include the time of each step.
    pub time: bool,
}

/// One section of a binary file, or one member of a legacy package.
#[derive(Debug, Clone, Serialize)]
pub struct SectionSummary {
    pub index: usize,
    /// TOC id (binary files only).
    pub id: Option<u32>,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub codec: String,
    pub layer: Option<u32>,
    /// File offset (binary files only: a legacy member has none).
    pub offset: Option<u64>,
    pub stored_len: u64,
    pub raw_len: u64,
    pub sha256: String,
}

/// A section whose bytes do not hash to the TOC's digest (or whose padding is dirty).
#[derive(Debug, Clone, Serialize)]
pub struct DamagedSection {
    pub index: usize,
    pub name: String,
    pub offset: u64,
    pub end: u64,
    pub expected: String,
    pub actual: String,
    pub digest_ok: bool,
    pub padding_ok: bool,
}

/// Everything one validation found, for text, `--json` and the TUI alike.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    pub file: String,
    /// [`FORMAT_BINARY`] or [`FORMAT_LEGACY`].
    pub format: &'static str,
    pub valid: bool,
    pub exit_code: u8,
    pub strict: bool,
    pub counts: Counts,
    pub findings: Vec<Finding>,
    /// The messages of the error findings (kept for older scripts).
    pub problems: Vec<String>,
    /// The checks that ran.
    pub scope: Vec<&'static str>,
    /// Root digest state (binary files whose structure parsed).
    pub root_ok: Option<bool>,
    pub integrity_checked: bool,
    pub damaged: Vec<DamagedSection>,
    pub signature: Value,
    /// Why the file could not be opened at all (header, TOC, archive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sections: Option<Vec<SectionSummary>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings_ms: Option<serde_json::Map<String, Value>>,
    /// What reading a remote expert cost (requests, bytes, cache hits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::format::remote::RemoteCost>,
    /// Step timings in order, for text output.
    #[serde(skip)]
    pub steps: Vec<(&'static str, f64)>,
}

impl ValidationReport {
    fn new(file: String, format: &'static str) -> Self {
        Self {
            file,
            format,
            valid: true,
            exit_code: 0,
            strict: false,
            counts: Counts::default(),
            findings: Vec::new(),
            problems: Vec::new(),
            scope: Vec::new(),
            root_ok: None,
            integrity_checked: false,
            damaged: Vec::new(),
            signature: serde_json::json!({ "state": "unsigned", "policy_ok": true }),
            error: None,
            sections: None,
            header: None,
            manifest: None,
            timings_ms: None,
            remote: None,
            steps: Vec::new(),
        }
    }

    /// Runs `f` as the step `name`, timing it.
    fn time<T>(&mut self, name: &'static str, f: impl FnOnce(&mut Self) -> T) -> T {
        let start = Instant::now();
        let out = f(self);
        self.steps.push((name, start.elapsed().as_secs_f64() * 1e3));
        out
    }

    /// Applies `--strict` and settles validity and the exit code.
    fn finish(mut self, options: &ValidateOptions<'_>) -> Self {
        self.strict = options.strict;
        if options.strict {
            make_strict(&mut self.findings);
        }
        self.counts = Counts::of(&self.findings);
        self.valid = self.counts.errors == 0;
        self.exit_code = if self.valid { 0 } else { EXIT_INVALID };
        self.problems = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| match &f.location.section {
                Some(s) if !f.message.contains(s.as_str()) => format!("{s}: {}", f.message),
                _ => f.message.clone(),
            })
            .collect();
        if options.time {
            self.timings_ms = Some(
                self.steps
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::from(*v)))
                    .collect(),
            );
        }
        self
    }

    /// Findings of at least `severity`.
    pub fn at_least(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity >= severity)
    }

    /// True when the package is a legacy tar.gz.
    pub fn is_legacy(&self) -> bool {
        self.format == FORMAT_LEGACY
    }
}

/// Validates the file at `path`, detected by content. Only I/O problems
/// (missing file, unreadable, changed while read) are `Err`: everything
/// about the file's content is a finding.
pub fn validate_path(
    path: &Path,
    options: &ValidateOptions<'_>,
) -> Result<ValidationReport, FormatError> {
    if let Some(url) = crate::format::remote::url_of(path) {
        let report = binary::validate_remote(&url, options)?;
        return Ok(report.finish(options));
    }
    crate::format::reader::check_input_file(path)?;
    let label = path.display().to_string();
    let mut head = [0u8; 8];
    let read = {
        use std::io::Read;
        let io = |source| FormatError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        file.read(&mut head).map_err(io)?
    };
    let report = match crate::format::loader::detect(head.get(..read).unwrap_or(&[])) {
        Some(crate::format::loader::SourceFormat::LegacyTarGz) => {
            legacy::validate(path, label, options)?
        }
        _ => binary::validate_file(path, label, options)?,
    };
    Ok(report.finish(options))
}

/// Validates an already open `.expert` v2 reader (the embedded demo, a TUI document).
pub fn validate_reader(
    reader: &crate::format::ExpertReader,
    label: String,
    options: &ValidateOptions<'_>,
) -> Result<ValidationReport, FormatError> {
    let mut report = ValidationReport::new(label, FORMAT_BINARY);
    binary::check_reader(reader, &mut report, options)?;
    Ok(report.finish(options))
}

/// `--base-model`: each mismatch (or the base being unreadable) as an error.
fn base_model_findings(
    checked: Result<Vec<String>, crate::format::package::PackageError>,
    base: &Path,
) -> Vec<Finding> {
    let at = || crate::diagnostics::Location::file(base.display().to_string());
    match checked {
        Ok(mismatches) => mismatches
            .into_iter()
            .map(|m| Finding::error("base-model.mismatch", m).at(at()))
            .collect(),
        Err(e) => vec![Finding::error("base-model.unreadable", e.to_string()).at(at())],
    }
}
