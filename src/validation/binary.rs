//! Checks of a `.expert` v2 file.

use std::path::Path;

use serde_json::{json, Value};

use super::consistency::{check_consistency, AdapterFacts, WeightsDigest};
use super::manifest::{check_grammar, check_manifest};
use super::{DamagedSection, SectionSummary, ValidateOptions, ValidationReport, FORMAT_BINARY};
use crate::diagnostics::{Finding, Location};
use crate::format::error::FormatError;
use crate::format::layout::{SectionType, NO_SIGNATURE};
use crate::format::package::ExpertContents;
use crate::format::peft::PeftType;
use crate::format::reader::{ExpertReader, ReaderOptions};
use crate::format::signing::{Policy, SigningError};
use crate::format::tensor_index::TensorIndex;
use crate::format::tensors::{ModuleInfo, TensorBlob};

/// Adapters above this many tensor bytes are not reassembled to compare
/// their digest with the manifest (it would hold them in memory twice).
const DIGEST_LIMIT: u64 = 512 << 20;

/// A structure error as a finding, at the byte it concerns.
pub(super) fn structure_finding(e: &FormatError) -> Finding {
    let mut location = Location::default().at(e.offset());
    if let FormatError::DigestMismatch {
        name, offset, end, ..
    } = e
    {
        location = Location::section(name.clone()).bytes(*offset, *end);
    }
    Finding::error(e.code(), e.to_string()).at(location)
}

pub(super) fn validate_file(
    path: &Path,
    label: String,
    options: &ValidateOptions<'_>,
) -> Result<ValidationReport, FormatError> {
    let mut report = ValidationReport::new(label, FORMAT_BINARY);
    let reader_options = ReaderOptions {
        check_root: false,
        ..Default::default()
    };
    let opened = report.time("open+structure", |_| {
        ExpertReader::open_with(path, reader_options)
    });
    check_opened(opened, report, options)
}

/// The report of a file as far as it opened: a structure that does not
/// parse is a finding, an I/O failure the error.
fn check_opened(
    opened: Result<ExpertReader, FormatError>,
    mut report: ValidationReport,
    options: &ValidateOptions<'_>,
) -> Result<ValidationReport, FormatError> {
    report.scope.push("structure");
    match opened {
        Ok(reader) => check_reader(&reader, &mut report, options)?,
        Err(e) if e.is_corruption() => {
            report.findings.push(structure_finding(&e));
            report.error = Some(e.to_string());
        }
        Err(e) => return Err(e),
    }
    Ok(report)
}

/// Validates a remote expert: the header, the TOC and the text sections
/// (at most two range requests when they lie in the first 64 KiB), or every
/// byte when the file is signed or `--verify-integrity` is asked for.
pub(super) fn validate_remote(
    url: &url::Url,
    options: &ValidateOptions<'_>,
) -> Result<ValidationReport, FormatError> {
    use crate::format::remote::{fetch, store::display, Plan};
    let mut report = ValidationReport::new(display(url), FORMAT_BINARY);
    let plan = Plan::Validate {
        deep: options.verify_integrity,
    };
    let fetched = report.time("fetch", |_| fetch(url, &plan, &mut |_, _| {}))?;
    if crate::format::loader::detect(fetched.bytes.get(..8).unwrap_or(&[]))
        == Some(crate::format::loader::SourceFormat::LegacyTarGz)
    {
        return Err(FormatError::Remote {
            url: display(url),
            reason: "a legacy tar.gz package: remote reads need .expert v2 (download it, or `convert` it once)".into(),
        });
    }
    report.remote = Some(fetched.cost.clone());
    let reader_options = ReaderOptions {
        check_root: false,
        ..Default::default()
    };
    let opened = report.time("open+structure", |_| {
        ExpertReader::from_shared(fetched.bytes, reader_options)
    });
    check_opened(opened, report, options)
}

pub fn section_summaries(reader: &ExpertReader) -> Vec<SectionSummary> {
    reader
        .sections()
        .iter()
        .map(|s| SectionSummary {
            index: s.index,
            id: Some(s.id),
            kind: s.kind.label().to_string(),
            name: s.name.clone(),
            codec: s.codec.map_or("unknown", |c| c.label()).to_string(),
            layer: s.layer,
            offset: Some(s.offset),
            stored_len: s.stored_len,
            raw_len: s.raw_len,
            sha256: hex::encode(s.sha256),
        })
        .collect()
}

pub fn header_json(reader: &ExpertReader) -> Value {
    let h = reader.header();
    json!({
        "version": format!("{}.{}", h.version_major.get(), h.version_minor.get()),
        "header_size": h.header_size.get(),
        "flags": h.flags.get(),
        "file_size": h.file_size.get(),
        "toc_offset": h.toc_offset.get(),
        "toc_count": h.toc_count.get(),
        "toc_entry_size": h.toc_entry_size.get(),
        "section_alignment": h.section_alignment.get(),
        "root_digest": hex::encode(h.root_digest),
        "signed": h.signature_index.get() != NO_SIGNATURE,
    })
}

/// Decoded bytes of a section, or a finding saying why they could not be read.
fn read_section(
    reader: &ExpertReader,
    index: usize,
    report: &mut ValidationReport,
) -> Option<Vec<u8>> {
    match reader.section(index) {
        Ok(bytes) => Some(bytes.to_vec()),
        Err(e) => {
            let name = reader
                .sections()
                .get(index)
                .map(|s| s.name.clone())
                .unwrap_or_default();
            report.findings.push(
                Finding::error(e.code(), e.to_string()).at(Location::section(name).at(e.offset())),
            );
            None
        }
    }
}

pub(super) fn check_reader(
    reader: &ExpertReader,
    report: &mut ValidationReport,
    options: &ValidateOptions<'_>,
) -> Result<(), FormatError> {
    if !report.scope.contains(&"structure") {
        report.scope.push("structure");
    }
    check_root_and_names(reader, report, options);
    let manifest = check_manifest_section(reader, report, options);
    check_text_sections(reader, report);
    let signed = reader.first(SectionType::Signature).is_some();
    let deep = options.verify_integrity || signed;
    if let Some(base) = options.base_model {
        check_base_model(reader, report, base);
    }
    // A signature vouches for section contents only through their digests:
    // checking one means hashing every section.
    let integrity_error = if deep {
        check_every_section(reader, report)?
    } else {
        None
    };
    if deep && integrity_error.is_none() {
        report.time("tensor index", |report| check_tensor_index(reader, report));
    }
    // After the integrity check: the adapter's digest is compared with the
    // manifest only over sections known to be intact (damage is already an
    // error; a digest warning on top would only repeat it).
    if let Some((manifest, _)) = &manifest {
        report.scope.push("consistency");
        let digests = deep && integrity_error.is_none();
        report.time("consistency", |report| {
            let found = consistency(reader, manifest, deep, digests, report);
            report.findings.extend(found);
        });
    }
    check_signature(reader, report, options, signed, integrity_error);
    Ok(())
}

/// Root digest, the section list, names that steer a terminal, the header.
fn check_root_and_names(
    reader: &ExpertReader,
    report: &mut ValidationReport,
    options: &ValidateOptions<'_>,
) {
    let root = report.time("root digest", |_| reader.check_root());
    report.scope.push("root digest");
    report.root_ok = Some(root.is_ok());
    if let Err(e) = &root {
        report.findings.push(
            Finding::error(e.code(), e.to_string())
                .at(Location::default().bytes(0, reader.header_bytes().len() as u64))
                .hint("the header or the table of contents was changed after the file was written"),
        );
    }
    if options.list_sections {
        report.sections = Some(section_summaries(reader));
    }
    for info in reader.sections() {
        if info.name.chars().any(crate::diagnostics::is_unprintable) {
            report.findings.push(unprintable_name(
                "container.section-name-control",
                &info.name,
                Location::section(info.name.clone()).at(Some(info.offset)),
            ));
        }
    }
    if options.dump_metadata {
        report.header = Some(header_json(reader));
    }
}

/// The manifest: present, JSON, schema, rules.
fn check_manifest_section(
    reader: &ExpertReader,
    report: &mut ValidationReport,
    options: &ValidateOptions<'_>,
) -> Option<(crate::format::manifest::Manifest, Value)> {
    report.scope.push("manifest");
    let manifest = report.time("manifest", |report| {
        let Some(info) = reader.first(SectionType::Manifest) else {
            report.findings.push(
                Finding::error("manifest.missing", "the file has no manifest section")
                    .hint("package it again with a manifest.json"),
            );
            return None;
        };
        let name = info.name.clone();
        let bytes = read_section(reader, info.index, report)?;
        check_manifest(&bytes, &name, &mut report.findings)
    });
    if options.dump_metadata {
        report.manifest = manifest.as_ref().map(|(_, v)| v.clone());
    }
    manifest
}

/// Grammars (as llama.cpp loads them) and router embeddings.
fn check_text_sections(reader: &ExpertReader, report: &mut ValidationReport) {
    report.time("grammar", |report| {
        let texts: Vec<(usize, String, SectionType)> = reader
            .sections()
            .iter()
            .filter(|s| matches!(s.kind, SectionType::Grammar | SectionType::RouterEmbeddings))
            .map(|s| (s.index, s.name.clone(), s.kind))
            .collect();
        if texts.iter().any(|t| t.2 == SectionType::Grammar) {
            report.scope.push("grammar");
        }
        for (index, name, kind) in texts {
            if let Some(bytes) = read_section(reader, index, report) {
                report.findings.extend(match kind {
                    SectionType::Grammar => check_grammar(&bytes, &name),
                    _ => super::manifest::check_router_embeddings(&bytes, &name),
                });
            }
        }
    });
}

/// `--base-model`: shapes and the manifest's hashes against the base.
fn check_base_model(reader: &ExpertReader, report: &mut ValidationReport, base: &Path) {
    report.scope.push("base model");
    report.time("base model", |report| {
        let checked = ExpertContents::read_binary(reader)
            .and_then(|c| crate::format::basecheck::check_against_base(&c, base));
        report
            .findings
            .extend(super::base_model_findings(checked, base));
    });
}

/// Every section hashed (and every compressed one decoded); returns the
/// first damage, which invalidates a signature.
fn check_every_section(
    reader: &ExpertReader,
    report: &mut ValidationReport,
) -> Result<Option<FormatError>, FormatError> {
    let mut integrity_error = None;
    {
        report.scope.push("every section");
        report.integrity_checked = true;
        // A file truncated or rewritten in place since it was opened is an
        // I/O problem, not damage: stop with FileChanged before hashing it
        // (and after, so a rewrite during hashing is not reported as damage).
        reader.check_unchanged()?;
        let checks = report.time("verify sections", |_| reader.verify());
        reader.check_unchanged()?;
        let root_ok = report.root_ok.unwrap_or(true);
        for check in checks.into_iter().filter(|c| !c.ok()) {
            if let Some(e) = check.error() {
                report
                    .findings
                    .push(damage_finding(reader, &check, &e, root_ok));
                integrity_error.get_or_insert(e);
            }
            report.damaged.push(DamagedSection {
                index: check.index,
                name: check.name.clone(),
                offset: check.offset,
                end: check.end,
                expected: hex::encode(check.expected),
                actual: hex::encode(check.actual),
                digest_ok: check.expected == check.actual,
                padding_ok: check.clean_padding,
            });
        }
        // Every compressed section must decode too (a frame cut short keeps
        // its digest consistent), within the reader's decoding limits.
        if integrity_error.is_none() {
            report.time("decode sections", |report| {
                for info in reader.sections() {
                    if info.codec == Some(crate::format::layout::Codec::None) {
                        continue;
                    }
                    if let Err(e) = reader.section(info.index) {
                        report.findings.push(
                            Finding::error(e.code(), e.to_string()).at(Location::section(
                                info.name.clone(),
                            )
                            .bytes(info.offset, info.offset.saturating_add(info.stored_len))),
                        );
                    }
                }
            });
        }
        if !reader.tail_padding_clean() {
            let reason = "padding before the TOC holds non-zero bytes";
            report.findings.push(
                Finding::error("container.padding", reason)
                    .at(Location::default().at(Some(reader.header().toc_offset.get()))),
            );
            integrity_error.get_or_insert(FormatError::BadHeader {
                field: "toc_offset",
                reason: reason.into(),
            });
        }
    }
    Ok(integrity_error)
}

/// The tensor index (2.1) against the headers it summarises: loaders read
/// only the index, so a disagreement would load other tensors than the ones
/// `extract` and `convert` see.
fn check_tensor_index(reader: &ExpertReader, report: &mut ValidationReport) {
    let Some(info) = reader.first(SectionType::TensorIndex) else {
        return;
    };
    let at = || Location::section(info.name.clone());
    let bytes = match reader.section(info.index) {
        Ok(b) => b,
        Err(e) => {
            report
                .findings
                .push(Finding::error("tensor-index.invalid", e.to_string()).at(at()));
            return;
        }
    };
    let index = match TensorIndex::parse(&bytes) {
        Ok(Some(index)) => index,
        Ok(None) => {
            report.findings.push(
                Finding::note(
                    "tensor-index.newer",
                    "the tensor index is a newer version than this build reads: tensors are read through their section headers",
                )
                .at(at()),
            );
            return;
        }
        Err(e) => {
            report
                .findings
                .push(Finding::error("tensor-index.invalid", e.to_string()).at(at()));
            return;
        }
    };
    let mut listed = std::collections::HashSet::new();
    for section in index.sections() {
        let name = crate::diagnostics::printable(section.name);
        let Some(target) = reader.find(section.kind, section.name) else {
            report.findings.push(
                Finding::error(
                    "tensor-index.invalid",
                    format!("the index lists section {name:?}, which the file does not have"),
                )
                .at(at()),
            );
            continue;
        };
        listed.insert(target.index);
        // A section that does not decode or parse is reported on its own.
        let Ok(data) = reader.section(target.index) else {
            continue;
        };
        let Ok(blob) = TensorBlob::parse(&data, &target.name) else {
            continue;
        };
        let Ok(table) = blob.table(&target.name) else {
            continue;
        };
        if let Some(why) = index.disagreement(&section, &data, &blob, &table) {
            report.findings.push(
                Finding::error(
                    "tensor-index.disagrees",
                    format!("section {name:?}: {why}; loaders would read other tensors than its header lists"),
                )
                .at(at()),
            );
        }
    }
    for missing in reader.sections().iter().filter(|s| {
        matches!(s.kind, SectionType::Tensors | SectionType::SoftPrompt)
            && !listed.contains(&s.index)
    }) {
        report.findings.push(
            Finding::warning(
                "tensor-index.incomplete",
                format!(
                    "section {:?} is not in the tensor index (it is read through its header)",
                    crate::diagnostics::printable(&missing.name)
                ),
            )
            .at(at()),
        );
    }
}

/// The signature against the policy (a signed file always; an unsigned one
/// when the policy requires a signature).
fn check_signature(
    reader: &ExpertReader,
    report: &mut ValidationReport,
    options: &ValidateOptions<'_>,
    signed: bool,
    integrity_error: Option<FormatError>,
) {
    let default_policy = Policy::new();
    let policy = options.policy.unwrap_or(&default_policy);
    let policy_given = policy.requires_signature();
    if signed || policy_given {
        report.scope.push("signature");
        report.time("signature", |report| {
            let mut sig = crate::format::signing::check(reader, policy);
            if let Some(e) = integrity_error {
                sig.fail(SigningError::Format(e));
            }
            let fails = policy.fails(&sig);
            let mut value = sig.to_json();
            value["policy_ok"] = json!(!fails);
            value["summary"] = json!(sig.summary());
            report.signature = value;
            if fails {
                let state = sig.state.to_string();
                report.findings.push(
                    Finding::error(
                        format!("signature.{state}"),
                        format!("signature: {}", sig.summary()),
                    )
                    .at(sig
                        .section
                        .and_then(|i| reader.sections().get(i))
                        .map_or_else(Location::default, |s| {
                            Location::section(s.name.clone())
                                .bytes(s.offset, s.offset + s.stored_len)
                        })),
                );
            }
        });
    } else {
        report.signature = json!({ "state": "unsigned", "policy_ok": true });
    }
}

/// Manifest ↔ adapter: against `adapter_config.json` always; against the
/// module table of the tensor sections and the adapter's digest on a deep
/// check (`--verify-integrity`, or a signed file).
fn consistency(
    reader: &ExpertReader,
    manifest: &crate::format::manifest::Manifest,
    deep: bool,
    digests: bool,
    report: &mut ValidationReport,
) -> Vec<Finding> {
    let files: Vec<String> = reader.sections().iter().map(|s| s.name.clone()).collect();
    let Some(config_info) = reader.first(SectionType::AdapterConfig) else {
        return check_consistency(
            manifest,
            &AdapterFacts {
                files,
                ..Default::default()
            },
        );
    };
    let Some(config_bytes) = read_section(reader, config_info.index, report) else {
        return Vec::new();
    };
    let config: Value = match serde_json::from_slice(&config_bytes) {
        Ok(v) => v,
        Err(e) => {
            return vec![
                Finding::error("adapter.config-json", format!("adapter_config.json: {e}"))
                    .at(Location::section(config_info.name.clone()).line_col(e.line(), e.column())),
            ]
        }
    };
    let peft_type = match config.get("peft_type").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("IA3") => Some(PeftType::Ia3),
        Some(t) if t.eq_ignore_ascii_case("PROMPT_TUNING") => Some(PeftType::PromptTuning),
        Some(t) if t.eq_ignore_ascii_case("LORA") => Some(PeftType::Lora),
        _ => None,
    };
    // The tensor shapes (each layer section's index) are read on a deep
    // check only: a plain `validate` stays within O(TOC) plus the small
    // text sections, and compares the manifest with adapter_config.json.
    let mut modules: Vec<ModuleInfo> = Vec::new();
    let mut complete = deep;
    for info in reader
        .sections()
        .iter()
        .filter(|s| deep && s.kind == SectionType::Tensors)
    {
        let Ok(bytes) = reader.section(info.index) else {
            complete = false;
            continue;
        };
        let Ok(blob) = TensorBlob::parse(&bytes, &info.name) else {
            complete = false;
            continue;
        };
        for (name, view) in &blob.tensors {
            if !crate::format::peft::is_float(view.dtype()) {
                report.findings.push(
                    Finding::error(
                        "adapter.tensor-dtype",
                        format!(
                            "tensor {} is {:?}: adapter weights are floating point",
                            crate::diagnostics::printable(name),
                            view.dtype()
                        ),
                    )
                    .at(Location::section(info.name.clone())),
                );
            }
        }
        match blob.modules(&info.name) {
            Ok(m) => modules.extend(m),
            Err(_) => complete = false,
        }
    }
    // OSD-compressed modules replace the adapter's tensors: the manifest's
    // digests describe the adapter before compression, not these sections.
    let compressed = reader.first(SectionType::Osd).is_some();
    let weights = if digests && !compressed {
        ExpertContents::read_binary(reader)
            .ok()
            .and_then(|c| c.adapter)
            .filter(|a| a.tensor_bytes() <= DIGEST_LIMIT)
            .and_then(|a| {
                let contents = ExpertContents {
                    manifest: Vec::new(),
                    adapter: Some(a),
                    files: Vec::new(),
                    carried: Vec::new(),
                };
                contents.adapter_weights().ok().flatten()
            })
            .map(|w| WeightsDigest::of(&w))
    } else {
        None
    };
    let facts = AdapterFacts {
        config: Some(&config),
        peft_type,
        modules: (complete && !modules.is_empty()).then_some(modules.as_slice()),
        weights,
        files,
    };
    check_consistency(manifest, &facts)
}

/// A name with characters that steer a terminal: shown escaped everywhere,
/// and worth a warning (no tool writes such names).
pub(super) fn unprintable_name(code: &str, name: &str, location: Location) -> Finding {
    Finding::warning(
        code,
        format!(
            "the name {} holds control or bidirectional characters (shown escaped)",
            crate::diagnostics::printable(name)
        ),
    )
    .at(location)
    .hint("a crafted name can clear a terminal or fake output: treat the file with suspicion")
}

/// A section whose bytes do not hash to its TOC digest: blamed on the
/// section when the TOC is authentic, on the TOC entry when the root digest
/// fails too (a flipped digest byte in the TOC leaves the section intact).
fn damage_finding(
    reader: &ExpertReader,
    check: &crate::format::digests::SectionCheck,
    error: &FormatError,
    root_ok: bool,
) -> Finding {
    use crate::format::digests::{blame, Blame};
    use crate::format::layout::{TOC_DIGEST_FIELD, TOC_ENTRY_SIZE};
    if blame(check, root_ok) != Blame::TocEntry {
        return Finding::error(error.code(), error.to_string())
            .at(Location::section(check.name.clone()).bytes(check.offset, check.end));
    }
    let entry = reader
        .header()
        .toc_offset
        .get()
        .saturating_add((check.index as u64).saturating_mul(TOC_ENTRY_SIZE as u64));
    let field = entry.saturating_add(TOC_DIGEST_FIELD);
    Finding::error(
        "container.toc-entry-digest",
        format!(
            "TOC entry {} ({}) holds a digest its section's bytes do not have, and the root digest over the header and TOC fails: the TOC was changed (the section's bytes may be intact)",
            check.index,
            crate::diagnostics::printable(&check.name)
        ),
    )
    .at(Location::section(check.name.clone()).bytes(field, field.saturating_add(32)))
    .hint("get the file again; the hex view shows the entry at this offset")
}
