//! `sign FILE --key SECRET [--cert CERT]...` and `certify --issuer SECRET
//! --subject PUB --name NAME --days N -o CERT`, and the mapping of signing
//! errors to exit codes. Key loading lives in `keys.rs`, the trust-policy
//! flags in `policy.rs`.

use std::path::PathBuf;

use serde_json::json;

use super::keys::{load_certificates, load_secret, refresh_sidecar};
use super::{print_json, Failure};
use crate::format::signing::cert::save_chain;
use crate::format::signing::{
    random_serial, sign_file, unix_now, Certificate, KeyUsage, PublicKey, SignOptions, SignSummary,
    SigningError,
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
    super::report::print_warnings(&checked.findings);
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
