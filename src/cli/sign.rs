//! `sign FILE --key SECRET [--cert CERT]...` and `certify --issuer SECRET
//! --subject PUB --name NAME --days N -o CERT`, plus the helpers the other
//! verbs share: loading keys (with the permission warning), the
//! verification-policy flags of `validate`, and error mapping.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{print_json, Failure};
use crate::format::signing::cert::{load_chain, save_chain};
use crate::format::signing::keys::permission_warning;
use crate::format::signing::{
    random_serial, sign_file, unix_now, Certificate, KeyUsage, Policy, PublicKey, RevocationList,
    SecretKey, SignOptions, SignSummary, SigningError,
};

impl From<SigningError> for Failure {
    fn from(e: SigningError) -> Self {
        match e {
            SigningError::Format(e) => e.into(),
            e if e.is_verdict() => Self::invalid(e),
            e => Self::error(e),
        }
    }
}

/// Reads the passphrase from the environment variable named by `var`.
pub(super) fn passphrase(var: Option<&str>) -> Result<Option<Vec<u8>>, Failure> {
    let Some(var) = var else { return Ok(None) };
    match std::env::var_os(var) {
        Some(value) if !value.is_empty() => Ok(Some(value.into_encoded_bytes())),
        _ => Err(Failure::error(format!(
            "--passphrase-env {var}: the variable is not set or empty"
        ))),
    }
}

/// Loads a secret key, warning on stderr when others can read the file.
pub(super) fn load_secret(path: &Path, passphrase_env: Option<&str>) -> Result<SecretKey, Failure> {
    if let Some(warning) = permission_warning(path) {
        eprintln!("warning: {warning}");
    }
    let pass = passphrase(passphrase_env)?;
    SecretKey::load(path, pass.as_deref()).map_err(|e| match e {
        SigningError::PassphraseRequired => Failure::error(format!("{}: {e}", path.display())),
        e => Failure::error(e),
    })
}

/// Reads and concatenates certificate files, signer's certificate first.
pub(super) fn load_certificates(paths: &[PathBuf]) -> Result<Vec<Certificate>, Failure> {
    let mut chain = Vec::new();
    for path in paths {
        let certs =
            load_chain(path).map_err(|e| Failure::error(format!("{}: {e}", path.display())))?;
        chain.extend(certs);
    }
    Ok(chain)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Expert to sign (rewritten in place unless -o is given).
    pub file: PathBuf,
    /// Secret key file (from `keygen`).
    #[arg(long, value_name = "SECRET_KEY")]
    pub key: PathBuf,
    /// Certificate file for the key (from `certify`); repeat, or put several
    /// certificates in one file, for a chain (signer's certificate first).
    #[arg(long, value_name = "CERT")]
    pub cert: Vec<PathBuf>,
    /// Free text stored in the signed (trusted) comment.
    #[arg(long, default_value = "")]
    pub comment: String,
    /// Signer name in the trusted comment (default: the certificate's name).
    #[arg(long)]
    pub signer: Option<String>,
    /// Write the signed expert here instead of replacing FILE.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Environment variable holding the secret key's passphrase.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
    /// Refuse (exit 3, nothing written) when validation finds a warning.
    #[arg(long)]
    pub strict: bool,
}

fn summary_json(summary: &SignSummary) -> serde_json::Value {
    json!({
        "output": summary.path.display().to_string(),
        "key_id": summary.key_id.to_string(),
        "digest": hex::encode(summary.digest),
        "file_size": summary.file_size,
        "replaced_signature": summary.replaced,
        "sections_copied": summary.sections_copied,
        "certificates": summary.chain_len,
    })
}

/// Signs `path` in place (used by `package --sign`); refreshes its
/// `.sha256` sidecar when there is one.
pub(super) fn sign_in_place(
    path: &Path,
    key: &SecretKey,
    chain: Vec<Certificate>,
    comment: String,
) -> Result<SignSummary, Failure> {
    let options = SignOptions {
        chain,
        comment,
        ..Default::default()
    };
    let summary = sign_file(path, path, key, &options)?;
    refresh_sidecar(path)?;
    Ok(summary)
}

fn refresh_sidecar(path: &Path) -> Result<(), Failure> {
    if crate::format::legacy::sidecar_path(path).exists() {
        super::package::write_sidecar(path)?;
    }
    Ok(())
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    let key = load_secret(&args.key, args.passphrase_env.as_deref())?;
    let chain = load_certificates(&args.cert)?;
    // What is signed is vouched for: validate it fully first (every
    // section hashed and decoded), and leave -o untouched on failure. The
    // old signature's state does not matter: it is being replaced.
    let mut checked = crate::validation::validate_path(
        &args.file,
        &crate::validation::ValidateOptions {
            verify_integrity: true,
            strict: args.strict,
            ..Default::default()
        },
    )?;
    checked
        .findings
        .retain(|f| !f.code.starts_with("signature."));
    super::validate::print_warnings(&checked.findings);
    let errors: Vec<_> = checked
        .at_least(crate::diagnostics::Severity::Error)
        .collect();
    if !errors.is_empty() {
        for f in &errors {
            eprintln!("{f}");
        }
        return Err(Failure::invalid(format!(
            "{}: not signed: {} error(s){}; nothing was written",
            args.file.display(),
            errors.len(),
            if args.strict { " (--strict)" } else { "" }
        )));
    }
    let output = args.output.clone().unwrap_or_else(|| args.file.clone());
    let options = SignOptions {
        chain,
        signer: args.signer.clone(),
        comment: args.comment.clone(),
        timestamp: None,
    };
    let summary = sign_file(&args.file, &output, &key, &options).map_err(|e| match e {
        // A problem with the certificates given is a usage error, not a bad file.
        e @ (SigningError::CertificateMismatch { .. }
        | SigningError::CertificateExpired { .. }
        | SigningError::CertificateNotYetValid { .. }
        | SigningError::KeyUsageNotAllowed { .. }
        | SigningError::ChainTooLong { .. }
        | SigningError::MalformedCertificate(_)
        | SigningError::BadCertificateSignature { .. }) => Failure::error(e),
        e => e.into(),
    })?;
    refresh_sidecar(&output)?;
    if json_out {
        print_json(&summary_json(&summary));
    } else {
        println!(
            "{}: signed by {} ({} sections kept byte for byte{}{})",
            output.display(),
            summary.key_id,
            summary.sections_copied,
            if summary.chain_len > 0 {
                format!(", {} certificate(s)", summary.chain_len)
            } else {
                String::new()
            },
            if summary.replaced {
                ", old signature replaced"
            } else {
                ""
            }
        );
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct CertifyArgs {
    /// Secret key of the issuer (a root, or an intermediate allowed to certify).
    #[arg(long, value_name = "SECRET_KEY")]
    pub issuer: PathBuf,
    /// Public key file of the key being certified.
    #[arg(long, value_name = "PUB")]
    pub subject: PathBuf,
    /// Publisher name recorded in the certificate.
    #[arg(long)]
    pub name: String,
    /// Validity in days from now.
    #[arg(long, default_value_t = 365)]
    pub days: u64,
    /// What the key may do: sign-experts, certify, or both (comma-separated).
    #[arg(long, default_value = "sign-experts")]
    pub usage: String,
    /// Serial number (default: random).
    #[arg(long)]
    pub serial: Option<u64>,
    /// The issuer's own certificate chain, appended after the new
    /// certificate (when the issuer is an intermediate).
    #[arg(long, value_name = "CERT")]
    pub chain: Option<PathBuf>,
    #[arg(short, long)]
    pub output: PathBuf,
    /// Environment variable holding the issuer key's passphrase.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
}

pub fn certify(args: CertifyArgs, json_out: bool) -> Result<(), Failure> {
    let usage = KeyUsage::parse(&args.usage).ok_or_else(|| {
        Failure::error(format!(
            "--usage {}: expected sign-experts, certify, or both",
            args.usage
        ))
    })?;
    let issuer = load_secret(&args.issuer, args.passphrase_env.as_deref())?;
    let subject = PublicKey::load(&args.subject).map_err(Failure::error)?;
    let now = unix_now();
    let not_after = args
        .days
        .checked_mul(86_400)
        .and_then(|d| now.checked_add(d))
        .ok_or_else(|| Failure::error("--days is too large"))?;
    let serial = match args.serial {
        Some(s) => s,
        None => random_serial()?,
    };
    let cert = Certificate::issue(&issuer, &subject, &args.name, usage, serial, now, not_after)
        .map_err(Failure::error)?;
    let mut chain = vec![cert.clone()];
    if let Some(path) = &args.chain {
        chain.extend(load_certificates(std::slice::from_ref(path))?);
        let parent = &chain[1];
        if parent.subject != *issuer.public() {
            return Err(Failure::error(format!(
                "--chain: its first certificate is for key {}, not the issuer {}",
                parent.subject.key_id(),
                issuer.key_id()
            )));
        }
        crate::format::signing::cert::check_chain(&chain, &subject, usage)
            .map_err(Failure::error)?;
    }
    save_chain(&args.output, &chain).map_err(Failure::error)?;
    if json_out {
        print_json(&json!({
            "output": args.output.display().to_string(),
            "serial": cert.serial,
            "name": cert.name,
            "subject_key_id": subject.key_id().to_string(),
            "issuer_key_id": issuer.key_id().to_string(),
            "usage": usage.labels(),
            "not_before": cert.not_before,
            "not_after": cert.not_after,
            "chain_length": chain.len(),
        }));
    } else {
        println!(
            "{}: certificate {} for \"{}\" (key {}) issued by {}, {}, valid {} days",
            args.output.display(),
            cert.serial,
            cert.name,
            subject.key_id(),
            issuer.key_id(),
            usage.labels().join(","),
            args.days
        );
    }
    Ok(())
}

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
