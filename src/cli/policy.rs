//! The trust-policy flags every verb that reads an expert shares
//! (`validate`, `info`, `fuse`, `bench`, the TUI): they build a
//! [`Policy`] from a policy file and the flags.

use std::path::PathBuf;

use super::Failure;
use crate::format::signing::{Policy, PublicKey, RevocationList};

/// The verification-policy flags of `validate`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct PolicyArgs {
    /// Fail (exit 3) unless the file carries a valid signature from a trusted key.
    #[arg(long)]
    pub require_signature: bool,
    /// Trusted public key (.pub): a root, or a publisher key trusted
    /// directly; or a folder of .pub files. Repeatable.
    #[arg(long, value_name = "FILE|DIR")]
    pub trust: Vec<PathBuf>,
    /// The file must be signed by exactly this public key.
    #[arg(long, value_name = "FILE")]
    pub pubkey: Option<PathBuf>,
    /// Revocation list (from `revoke`), signed by a trusted key. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub revocations: Vec<PathBuf>,
    /// Policy file (JSON: require_signature, trust, pubkey, revocations);
    /// the default is the file named by EXPERTUI_POLICY, if set. The flags
    /// add to it. Any trust configured requires a signature.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

/// Environment variable naming a system-wide default policy file.
pub const POLICY_ENV: &str = "EXPERTUI_POLICY";

impl PolicyArgs {
    /// Whether any signature flag was given.
    pub fn given(&self) -> bool {
        self.require_signature
            || !self.trust.is_empty()
            || self.pubkey.is_some()
            || !self.revocations.is_empty()
            || self.policy.is_some()
    }

    /// The policy file in force: `--policy`, else `EXPERTUI_POLICY`.
    fn policy_file(&self) -> Option<PathBuf> {
        self.policy.clone().or_else(|| {
            std::env::var_os(POLICY_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }

    /// Loads the policy file and the keys and lists named (a bad file is
    /// exit 1). `--trust`, `--pubkey` and `--revocations` imply
    /// `--require-signature`: a stripped signature never passes them.
    pub fn load(&self) -> Result<Policy, Failure> {
        let mut policy = match self.policy_file() {
            Some(path) => Policy::from_file(&path)
                .map_err(|e| Failure::error(format!("policy {}: {e}", path.display())))?,
            None => Policy::new(),
        };
        policy.require_signature |= self.require_signature
            || !self.trust.is_empty()
            || self.pubkey.is_some()
            || !self.revocations.is_empty();
        for path in &self.trust {
            let added = policy.trust_store().load(path).map_err(Failure::error)?;
            if added == 0 {
                return Err(Failure::error(format!(
                    "--trust {}: no .pub files there",
                    path.display()
                )));
            }
        }
        if let Some(path) = &self.pubkey {
            policy.pin(PublicKey::load(path).map_err(Failure::error)?);
        }
        for path in &self.revocations {
            let list = RevocationList::load(path)
                .map_err(|e| Failure::error(format!("{}: {e}", path.display())))?;
            policy
                .add_revocations(list)
                .map_err(|e| Failure::error(format!("{}: {e}", path.display())))?;
        }
        Ok(policy)
    }
}
