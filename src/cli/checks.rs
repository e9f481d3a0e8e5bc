//! The gate before a verb writes an expert (`package`, `convert`): the
//! validation checks over the contents, with `--strict`, and the loader's
//! notices as findings.

use std::path::Path;

use super::Failure;
use crate::diagnostics::{make_strict, Finding, Severity};
use crate::format::package::ExpertContents;
use crate::validation::{check_contents, fill_adapter_digests, WeightsDigest};

/// Fills the manifest's empty adapter digests, then checks everything
/// (manifest, grammars, manifest ↔ adapter). Errors and, with `--strict`,
/// warnings refuse the package before anything is written.
pub(super) fn check_before_writing(
    contents: &mut ExpertContents,
    weights: Option<WeightsDigest>,
    fill: bool,
    strict: bool,
    migrating: bool,
) -> Result<Vec<Finding>, Failure> {
    if let (true, Some(w)) = (fill, weights) {
        if let Ok(manifest) = crate::format::manifest::Manifest::from_json(&contents.manifest) {
            if let Some(filled) = fill_adapter_digests(&contents.manifest, &manifest, &w) {
                contents.manifest = filled;
            }
        }
    }
    let mut findings = check_contents(contents, weights);
    if migrating {
        // A migration carries the manifest verbatim: a manifest `validate`
        // refuses is reported, not a reason to leave the package behind.
        for f in findings
            .iter_mut()
            .filter(|f| f.severity == Severity::Error && f.code.starts_with("manifest."))
        {
            f.severity = Severity::Warning;
            f.hint =
                Some("`validate` refuses the converted file until manifest.json is fixed".into());
        }
    }
    if strict {
        make_strict(&mut findings);
    }
    let errors: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    if !errors.is_empty() {
        for f in &errors {
            eprintln!("{f}");
        }
        return Err(Failure::invalid(format!(
            "{} error(s){}, not written",
            errors.len(),
            if strict {
                " (--strict: warnings are errors)"
            } else {
                ""
            }
        )));
    }
    super::report::print_warnings(&findings);
    Ok(findings)
}

/// The loader's notices as findings (in `convert`, the deprecation notice
/// says what is being done about it, not to run `convert`).
pub(super) fn loader_findings(input: &Path, warnings: &[String], converting: bool) -> Vec<Finding> {
    warnings
        .iter()
        .map(|w| {
            if w.contains("(deprecated)") && converting {
                Finding::warning(
                    "legacy.deprecated",
                    format!(
                        "{} is a legacy tar.gz expert (deprecated): converting it",
                        input.display()
                    ),
                )
            } else if w.contains("(deprecated)") {
                Finding::warning("legacy.deprecated", w.clone())
            } else if w.contains("sidecar") {
                Finding::warning("legacy.sidecar-missing", w.clone())
            } else {
                Finding::warning("legacy.fallback", w.clone())
            }
        })
        .collect()
}
