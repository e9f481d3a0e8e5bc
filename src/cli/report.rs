//! Printing what the library's reports say: the verdict's exit status,
//! warnings on stderr, the section table. Shared by the verbs that read the
//! validation report (`validate`, `info`, `package`, `convert`, `sign`).

use super::Failure;
use crate::diagnostics::{printable, Finding, Severity};
use crate::validation::{SectionSummary, ValidationReport};

/// The exit status a report calls for.
pub(super) fn verdict(report: &ValidationReport, json_out: bool) -> Result<(), Failure> {
    if report.valid {
        return Ok(());
    }
    let failure = Failure::invalid(format!("{} is invalid", report.file));
    Err(if json_out {
        failure.reported()
    } else {
        failure
    })
}

/// Warnings and notes on stderr (errors are the verdict: on stdout).
pub(super) fn print_warnings(findings: &[Finding]) {
    for f in findings.iter().filter(|f| f.severity < Severity::Error) {
        eprintln!("{f}");
    }
}

/// The section table as text.
pub(super) fn print_sections(sections: &[SectionSummary]) {
    println!(
        "{:>3}  {:<17} {:<30} {:<12} {:>10} {:>10} {:>10}",
        "#", "type", "name", "codec", "offset", "stored", "raw"
    );
    for s in sections {
        println!(
            "{:>3}  {:<17} {:<30} {:<12} {:>10} {:>10} {:>10}",
            s.index,
            printable(&s.kind),
            printable(&s.name),
            printable(&s.codec),
            s.offset.map_or("-".to_string(), |o| o.to_string()),
            s.stored_len,
            s.raw_len
        );
    }
}
