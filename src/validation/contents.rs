//! Checks of an expert's contents before it is written (`package`,
//! `convert`): the manifest, every grammar, manifest ↔ adapter.

use super::consistency::{check_consistency, AdapterFacts, WeightsDigest};
use super::manifest::{check_grammar, check_manifest};
use crate::diagnostics::Finding;
use crate::format::layout::SectionType;
use crate::format::package::{ExpertContents, ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST};

/// Findings about `contents`; `weights` is the digest of the adapter weights
/// as they will be packaged, when known.
pub fn check_contents(contents: &ExpertContents, weights: Option<WeightsDigest>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let manifest = check_manifest(&contents.manifest, MANIFEST, &mut findings);
    for file in contents
        .files
        .iter()
        .filter(|f| f.kind == SectionType::Grammar)
    {
        findings.extend(check_grammar(&file.data, &file.name));
    }
    if let Some((manifest, _)) = &manifest {
        let adapter = contents.adapter.as_ref();
        let mut files: Vec<String> = contents.files.iter().map(|f| f.name.clone()).collect();
        if adapter.is_some() {
            files.push(ADAPTER_WEIGHTS.into());
            files.push(ADAPTER_CONFIG.into());
        }
        let facts = AdapterFacts {
            config: adapter.map(|a| &a.config),
            peft_type: adapter.map(|a| a.peft_type),
            modules: adapter.map(|a| a.modules.as_slice()),
            weights,
            files,
        };
        findings.extend(check_consistency(manifest, &facts));
    }
    findings
}
