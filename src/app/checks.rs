//! What the library concluded about the open file: the section hashes
//! (run once in the background), the validation findings and the trust
//! verdict. The UI only shows them.

use crate::diagnostics::Finding;
use crate::format::digests::SectionCheck;
use crate::format::inspect::{Inspected, Opened};
use crate::format::signing::Policy;

/// Full verification, run once in the background.
#[derive(Debug, Clone)]
pub enum Verification {
    NotApplicable,
    Running,
    Done {
        checks: Vec<SectionCheck>,
        tail_clean: bool,
    },
}

impl Verification {
    /// Whether section `index` is known to be damaged.
    pub fn damaged(&self, index: usize) -> bool {
        match self {
            Self::Done { checks, .. } => checks.get(index).is_some_and(|c| !c.ok()),
            _ => false,
        }
    }
}

/// The validation report's findings for an opened document.
pub fn findings_of(doc: &Inspected, policy: Option<&Policy>) -> Vec<Finding> {
    use crate::validation::{validate_path, validate_reader, ValidateOptions};
    let options = ValidateOptions {
        policy,
        ..ValidateOptions::default()
    };
    let report = match &doc.opened {
        Opened::Binary(reader) => validate_reader(reader, doc.label.clone(), &options).ok(),
        Opened::Legacy(_) => {
            let path = std::path::Path::new(&doc.label);
            path.is_file()
                .then(|| validate_path(path, &options).ok())
                .flatten()
        }
        Opened::Broken(_) => None,
    };
    report.map(|r| r.findings).unwrap_or_default()
}

/// The signature's verdict under the TUI's trust policy.
#[derive(Debug, Clone)]
pub struct TrustView {
    /// Whether the policy admits the file.
    pub passes: bool,
    /// One line: state, signer, why.
    pub summary: String,
}

impl TrustView {
    pub fn of(doc: &Inspected, policy: &Policy) -> Self {
        match &doc.opened {
            Opened::Binary(reader) => {
                let report = crate::format::signing::check(reader, policy);
                Self {
                    passes: !policy.fails(&report),
                    summary: report.summary(),
                }
            }
            _ => Self {
                passes: !policy.requires_signature(),
                summary: "unsigned (this file cannot carry a signature)".into(),
            },
        }
    }
}
