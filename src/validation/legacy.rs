//! Checks of a legacy tar.gz package: the archive walk (traversal, links,
//! bombs), the `.sha256` sidecar, and then the same manifest, grammar,
//! consistency and base-model checks as a binary file.

use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::consistency::{check_consistency, AdapterFacts, WeightsDigest};
use super::manifest::{check_grammar, check_manifest};
use super::{SectionSummary, ValidateOptions, ValidationReport, FORMAT_LEGACY};
use crate::diagnostics::{printable, Finding, Location};
use crate::format::error::FormatError;
use crate::format::layout::SectionType;
use crate::format::legacy::{read_legacy, sidecar_path, verify_sidecar, LegacyError, LegacyLimits};
use crate::format::package::{classify_file, ExpertContents, ADAPTER_WEIGHTS, MANIFEST};
use crate::format::signing::Policy;

/// The section type a member stands for.
pub fn member_kind(name: &str) -> SectionType {
    if name.ends_with(".safetensors") && classify_file(name) == SectionType::Blob {
        SectionType::Tensors
    } else {
        classify_file(name)
    }
}

pub(super) fn validate(
    path: &Path,
    label: String,
    options: &ValidateOptions<'_>,
) -> Result<ValidationReport, FormatError> {
    let mut report = ValidationReport::new(label, FORMAT_LEGACY);
    // Mapped, not read: the compressed package never sits on the heap.
    let bytes = report.time("read", |_| crate::format::FileBytes::map(path))?;
    if let Some(what) = crate::format::legacy::gzip_header_extras(&bytes) {
        report.findings.push(
            Finding::warning("legacy.gzip-header-data", what)
                .hint("the legacy packager writes neither: ask where the package came from"),
        );
    }
    report.findings.push(
        Finding::warning(
            "legacy.deprecated",
            "legacy tar.gz expert (deprecated): nothing in it is verified beyond its sidecar, and it cannot be signed",
        )
        .hint(format!(
            "convert it: expertui --headless convert {} -o OUT.expert",
            path.display()
        )),
    );

    report.scope.push("sidecar");
    report.time("sidecar", |report| check_sidecar(path, &bytes, report));

    report.scope.push("archive");
    let limits = LegacyLimits::for_package(bytes.len() as u64);
    let package = report.time("archive", |_| read_legacy(&bytes, &limits));
    let file_size = bytes.len();
    drop(bytes);
    let package = match package {
        Ok(p) => p,
        Err(e) => {
            let location = match &e {
                LegacyError::PathTraversal { entry }
                | LegacyError::AbsolutePath { entry }
                | LegacyError::DuplicateEntry { entry } => Location::section(entry.clone()),
                _ => Location::file(path.display().to_string()),
            };
            report.error = Some(e.to_string());
            report
                .findings
                .push(Finding::error(e.code(), e.to_string()).at(location));
            return Ok(report);
        }
    };
    describe_members(&package, file_size, &mut report, options);

    report.scope.push("manifest");
    let manifest = report.time("manifest", |report| match package.manifest_bytes() {
        Ok(m) => check_manifest(m, MANIFEST, &mut report.findings),
        Err(e) => {
            report
                .findings
                .push(Finding::error(e.code(), e.to_string()));
            None
        }
    });
    if options.dump_metadata {
        report.manifest = manifest.as_ref().map(|(_, v)| v.clone());
    }
    let Some(files) = flatten_members(package, &mut report) else {
        return Ok(report);
    };
    check_text_caps(&files, &mut report.findings);
    report.time("grammar", |report| {
        for (name, data) in files
            .iter()
            .filter(|(n, _)| classify_file(n) == SectionType::Grammar)
        {
            report.scope.push("grammar");
            report.findings.extend(check_grammar(data, name));
        }
    });
    let weights = files
        .iter()
        .find(|(n, _)| n == ADAPTER_WEIGHTS)
        .map(|(_, d)| WeightsDigest::of(d));
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let contents = report.time("adapter", |report| {
        match ExpertContents::from_files(files) {
            Ok(c) => Some(c),
            Err(e) => {
                report
                    .findings
                    .push(Finding::error("legacy.adapter", e.to_string()));
                None
            }
        }
    });
    if let (Some((manifest, _)), Some(contents)) = (&manifest, &contents) {
        report.scope.push("consistency");
        report.time("consistency", |report| {
            let adapter = contents.adapter.as_ref();
            let facts = AdapterFacts {
                config: adapter.map(|a| &a.config),
                peft_type: adapter.map(|a| a.peft_type),
                modules: adapter.map(|a| a.modules.as_slice()),
                weights,
                files: names,
            };
            report.findings.extend(check_consistency(manifest, &facts));
        });
    }
    if let (Some(base), Some(contents)) = (options.base_model, &contents) {
        report.scope.push("base model");
        report.time("base model", |report| {
            let checked = crate::format::basecheck::check_against_base(contents, base);
            report
                .findings
                .extend(super::base_model_findings(checked, base));
        });
    }
    check_signature_policy(options, &mut report);
    Ok(report)
}

/// The package's files by base name ([`flatten`](crate::format::loader::flatten)),
/// skipped older copies as warnings; `None` (an error finding) when copies
/// of a defining file cannot be told apart.
fn flatten_members(
    package: crate::format::legacy::LegacyPackage,
    report: &mut ValidationReport,
) -> Option<Vec<(String, Vec<u8>)>> {
    match crate::format::loader::flatten(package) {
        Ok(flat) => {
            for note in flat.shadowed {
                report
                    .findings
                    .push(Finding::warning("legacy.shadowed-file", note));
            }
            Some(flat.files)
        }
        Err(e) => {
            report
                .findings
                .push(Finding::error(e.code(), e.to_string()));
            None
        }
    }
}

/// The caps a v2 reader applies to text: a file over them would convert
/// into a file nothing can open (the writers refuse it).
fn check_text_caps(files: &[(String, Vec<u8>)], findings: &mut Vec<Finding>) {
    let limits = crate::format::ReaderLimits::default();
    for (name, data) in files {
        let cap = limits.text_cap(classify_file(name));
        if let Some(cap) = cap.filter(|&cap| data.len() as u64 > cap) {
            findings.push(Finding::error(
                "legacy.text-too-large",
                format!(
                    "{}: {} bytes, over the {cap}-byte limit for text (readers parse it whole)",
                    printable(name),
                    data.len()
                ),
            ));
        }
    }
}

/// A legacy package is never signed: an error only when the policy asks
/// for a signature.
fn check_signature_policy(options: &ValidateOptions<'_>, report: &mut ValidationReport) {
    let require = options.policy.is_some_and(Policy::requires_signature);
    report.signature = json!({ "state": "unsigned", "policy_ok": !require });
    if require {
        report.scope.push("signature");
        report.findings.push(
            Finding::error(
                "signature.unsigned",
                "a legacy tar.gz package carries no signature",
            )
            .hint("convert it to .expert v2 and sign it"),
        );
    }
}

/// The members as sections (`--list-sections`), the archive as the header
/// (`--dump-metadata`), and names that steer a terminal.
fn describe_members(
    package: &crate::format::legacy::LegacyPackage,
    file_size: usize,
    report: &mut ValidationReport,
    options: &ValidateOptions<'_>,
) {
    for f in &package.files {
        if f.path.chars().any(crate::diagnostics::is_unprintable) {
            report.findings.push(super::binary::unprintable_name(
                "legacy.member-name-control",
                &f.path,
                Location::section(f.path.clone()),
            ));
        }
    }
    if options.list_sections {
        report.sections = Some(
            package
                .files
                .iter()
                .enumerate()
                .map(|(index, f)| SectionSummary {
                    index,
                    id: None,
                    kind: member_kind(&f.path).label().to_string(),
                    name: f.path.clone(),
                    codec: "tar.gz".into(),
                    layer: None,
                    offset: None,
                    stored_len: f.data.len() as u64,
                    raw_len: f.data.len() as u64,
                    sha256: hex::encode(Sha256::digest(&f.data)),
                })
                .collect(),
        );
    }
    if options.dump_metadata {
        report.header = Some(json!({
            "format": FORMAT_LEGACY,
            "file_size": file_size,
            "members": package.files.len(),
            "root_prefix": package.root_prefix(),
        }));
    }
}

/// Bytes of a sidecar read at most (one line per file is a few dozen bytes).
const SIDECAR_LIMIT: u64 = 64 << 10;

/// The `.sha256` sidecar: a mismatch or an unreadable sidecar is an error,
/// no sidecar a warning.
fn check_sidecar(path: &Path, bytes: &[u8], report: &mut ValidationReport) {
    let sidecar = sidecar_path(path);
    let at = Location::file(sidecar.display().to_string());
    // Sidecars are tiny: read at most 64 KiB, whatever lies there.
    let read_head = |path: &Path| -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut head = Vec::new();
        std::fs::File::open(path)?
            .take(SIDECAR_LIMIT)
            .read_to_end(&mut head)?;
        Ok(head)
    };
    let text = match read_head(&sidecar) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.findings.push(
                Finding::warning(
                    "legacy.sidecar-missing",
                    "no .sha256 sidecar beside the package: its bytes are not verified",
                )
                .at(at)
                .hint("sha256sum FILE > FILE.sha256 where the package came from, or convert it"),
            );
            return;
        }
        Err(e) => {
            report
                .findings
                .push(Finding::error("legacy.sidecar-unreadable", e.to_string()).at(at));
            return;
        }
    };
    let text = match std::str::from_utf8(&text) {
        Ok(t) => t.to_string(),
        Err(_) => {
            report
                .findings
                .push(Finding::error("legacy.sidecar-format", "the sidecar is not text").at(at));
            return;
        }
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Err(e) = verify_sidecar(bytes, &text, &name) {
        let hint = match e {
            LegacyError::SidecarMismatch { .. } => {
                "the package changed after its sidecar was written: get it again from its source"
            }
            _ => "a sidecar holds `HEX  FILENAME` lines, as sha256sum writes them",
        };
        report
            .findings
            .push(Finding::error(e.code(), e.to_string()).at(at).hint(hint));
    }
}
