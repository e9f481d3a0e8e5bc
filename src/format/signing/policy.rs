//! Verification policy: which keys are trusted, which are revoked, whether a
//! signature is required, and the outcome of checking a file against it.
//!
//! Order of the checks (the first failure decides the state):
//! 1. a signature section exists (else `unsigned`), exactly one, well formed;
//! 2. the digest it signed equals this file's signing digest (O(TOC));
//! 3. a pinned key (`--pubkey`) must be the signer (else `WrongKey`);
//! 4. both Ed25519 signatures verify with the signer's key;
//! 5. the certificate chain it refers to: links, usages, depth, and the last
//!    certificate's signature when its issuer is a trusted key;
//! 6. every certificate is within its validity window now (`expired`);
//! 7. no key of the path and no certificate serial is revoked (`revoked`);
//! 8. trust: the pinned key, or a trusted signer key, or a chain ending at a
//!    trusted root (else `untrusted`).
//!
//! [`check`] does not hash section contents: run the integrity check
//! (`ExpertReader::verify_all`) too, as [`verify`] does, or the signature
//! only vouches for the TOC.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::super::reader::ExpertReader;
use super::cert::{check_links, Certificate};
use super::digest::signing_digest;
use super::keys::PublicKey;
use super::revocation::RevocationList;
use super::signature::{read_chain, read_signature, SignatureBlock};
use super::{unix_now, KeyId, Result, SigningError};

/// What a check concluded about a file's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureState {
    /// No signature section.
    Unsigned,
    /// Signature verifies and leads to a trusted key.
    Valid,
    /// Damaged, malformed, or made for other contents.
    Invalid,
    /// Verifies, but not from a trusted key (or not from the required one).
    Untrusted,
    /// The key or a certificate of its chain is revoked.
    Revoked,
    /// A certificate of the chain is outside its validity period.
    Expired,
}

impl SignatureState {
    /// Name shown by the tools and in JSON.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::Untrusted => "untrusted",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

impl std::fmt::Display for SignatureState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Trusted public keys (roots, or publisher keys trusted directly), by id.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    keys: BTreeMap<KeyId, PublicKey>,
}

impl TrustStore {
    /// Trusts `key`.
    pub fn add(&mut self, key: PublicKey) {
        self.keys.insert(key.key_id(), key);
    }

    /// The trusted key with this id.
    pub fn get(&self, id: KeyId) -> Option<&PublicKey> {
        self.keys.get(&id)
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every trusted key.
    pub fn keys(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.values()
    }

    /// Adds a `.pub` file, or every `*.pub` file of a folder (not
    /// recursive). Returns how many keys were added.
    pub fn load(&mut self, path: &Path) -> Result<usize> {
        if !path.is_dir() {
            self.add(PublicKey::load(path)?);
            return Ok(1);
        }
        let entries = std::fs::read_dir(path).map_err(|e| SigningError::io(path, e))?;
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "pub"))
            .collect();
        files.sort();
        for file in &files {
            self.add(PublicKey::load(file)?);
        }
        Ok(files.len())
    }
}

/// What a file must satisfy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Fail files that are not `valid` (unsigned included).
    pub require_signature: bool,
    /// Time certificates are checked against (Unix seconds; default now).
    pub now: u64,
    trust: TrustStore,
    pinned: Option<PublicKey>,
    revocations: Vec<RevocationList>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            require_signature: false,
            now: unix_now(),
            trust: TrustStore::default(),
            pinned: None,
            revocations: Vec::new(),
        }
    }
}

impl Policy {
    /// A policy that trusts nothing (signatures are at best `untrusted`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `key` as a publisher key or root.
    pub fn trust(&mut self, key: PublicKey) {
        self.trust.add(key);
    }

    /// The trusted keys, to add more.
    pub fn trust_store(&mut self) -> &mut TrustStore {
        &mut self.trust
    }

    /// The trusted keys.
    pub fn trusted(&self) -> &TrustStore {
        &self.trust
    }

    /// Requires the signer to be exactly `key` (and trusts it).
    pub fn pin(&mut self, key: PublicKey) {
        self.pinned = Some(key);
    }

    /// The key a signature must be made with, if pinned.
    pub fn pinned(&self) -> Option<&PublicKey> {
        self.pinned.as_ref()
    }

    /// Adds a revocation list; it must be signed by a trusted (or the
    /// pinned) key, so add trust first.
    pub fn add_revocations(&mut self, list: RevocationList) -> Result<()> {
        let issuer = self
            .trust
            .get(list.issuer)
            .or(self.pinned.as_ref().filter(|k| k.key_id() == list.issuer))
            .ok_or(SigningError::UntrustedRevocationList {
                issuer: list.issuer,
            })?;
        if !list.verify_signature(issuer) {
            return Err(SigningError::BadRevocationSignature {
                issuer: list.issuer,
            });
        }
        self.revocations.push(list);
        Ok(())
    }

    /// Whether any trust was configured (trusted keys or a pinned key).
    pub fn has_trust(&self) -> bool {
        !self.trust.is_empty() || self.pinned.is_some()
    }

    /// Whether an unsigned file fails: `require_signature`, or any trust
    /// configured (a key to check against makes no sense for a file that
    /// could simply drop its signature: stripping it must not pass).
    pub fn requires_signature(&self) -> bool {
        self.require_signature || self.has_trust()
    }

    /// Reads a policy file (JSON), paths relative to its folder:
    /// `{"require_signature": true, "trust": ["root.pub", "keys/"],
    /// "pubkey": "acme.pub", "revocations": ["root.rev"]}`. Every key is
    /// optional; unknown keys are refused (a typo must not weaken a policy).
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            require_signature: bool,
            #[serde(default)]
            trust: Vec<std::path::PathBuf>,
            #[serde(default)]
            pubkey: Option<std::path::PathBuf>,
            #[serde(default)]
            revocations: Vec<std::path::PathBuf>,
        }
        const MAX_POLICY_FILE: u64 = 1 << 20;
        let io = |e| SigningError::io(path, e);
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() || meta.len() > MAX_POLICY_FILE {
            return Err(io(std::io::Error::other(
                "a policy file is a regular JSON file under 1 MiB",
            )));
        }
        let text = std::fs::read(path).map_err(io)?;
        let file: File = serde_json::from_slice(&text).map_err(|e| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("policy file: {e}"),
            ))
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let mut policy = Self::new();
        policy.require_signature = file.require_signature;
        for trusted in &file.trust {
            let at = base.join(trusted);
            if policy.trust_store().load(&at)? == 0 {
                return Err(SigningError::io(
                    &at,
                    std::io::Error::other("no .pub files there"),
                ));
            }
        }
        if let Some(key) = &file.pubkey {
            policy.pin(PublicKey::load(&base.join(key))?);
        }
        for list in &file.revocations {
            let at = base.join(list);
            policy.add_revocations(RevocationList::load(&at)?)?;
        }
        Ok(policy)
    }

    /// Whether a report fails this policy. A broken signature always fails;
    /// `unsigned` fails when a signature is required or any trust is
    /// configured ([`Policy::requires_signature`]); `untrusted`,
    /// `expired` and `revoked` fail when a signature is required or trust
    /// was configured (without either, they are reported only).
    pub fn fails(&self, report: &SignatureReport) -> bool {
        match report.state {
            SignatureState::Valid => false,
            SignatureState::Invalid => true,
            SignatureState::Unsigned => self.requires_signature(),
            SignatureState::Untrusted | SignatureState::Expired | SignatureState::Revoked => {
                self.require_signature || self.has_trust()
            }
        }
    }
}

/// The outcome of checking one file, with what was learnt on the way.
#[derive(Debug)]
pub struct SignatureReport {
    /// The verdict.
    pub state: SignatureState,
    /// TOC index of the signature section.
    pub section: Option<usize>,
    /// Key id the signature claims (known once the section parsed).
    pub key_id: Option<KeyId>,
    /// Signed metadata, set once the signatures verified.
    pub signer: Option<String>,
    /// Signing time, Unix seconds.
    pub timestamp: Option<u64>,
    /// File name recorded when signing.
    pub file: Option<String>,
    /// Comment recorded when signing.
    pub comment: Option<String>,
    /// The certificate chain (signer's certificate first), once parsed.
    pub chain: Vec<Certificate>,
    /// The trusted key that vouches for the signer (pinned key, trusted
    /// signer key, or root of the chain).
    pub trusted_by: Option<KeyId>,
    /// Whether both Ed25519 signatures verified.
    pub signature_ok: bool,
    /// Why the state is not `valid`, if it is not.
    pub error: Option<SigningError>,
}

impl SignatureReport {
    fn new() -> Self {
        Self {
            state: SignatureState::Valid,
            section: None,
            key_id: None,
            signer: None,
            timestamp: None,
            file: None,
            comment: None,
            chain: Vec::new(),
            trusted_by: None,
            signature_ok: false,
            error: None,
        }
    }

    /// Marks a verdict reached elsewhere (e.g. damaged section contents).
    pub fn fail(&mut self, error: SigningError) {
        if self.state != SignatureState::Unsigned {
            self.state = SignatureState::Invalid;
            self.error = Some(error);
        }
    }

    /// `Ok(self)` when valid, else the error that decided.
    pub fn into_result(mut self) -> Result<Self> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let key = self.key_id.map(|k| k.to_string()).unwrap_or_default();
        let signer = self
            .signer
            .as_ref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        match (&self.state, &self.error) {
            (SignatureState::Unsigned, _) => "unsigned".into(),
            (SignatureState::Valid, _) => format!(
                "valid, signed by {key}{signer}{}",
                self.trusted_by
                    .filter(|t| Some(*t) != self.key_id)
                    .map(|t| format!(", trusted via {t}"))
                    .unwrap_or_default()
            ),
            (state, Some(e)) if self.key_id.is_some() => {
                format!("{state}, signed by {key}{signer}: {e}")
            }
            (state, Some(e)) => format!("{state}: {e}"),
            (state, None) => state.to_string(),
        }
    }

    /// Machine-readable form (validate --json).
    pub fn to_json(&self) -> Value {
        json!({
            "state": self.state.label(),
            "key_id": self.key_id.map(|k| k.to_string()),
            "signature_ok": self.signature_ok,
            "signer": self.signer,
            "timestamp": self.timestamp,
            "file": self.file,
            "comment": self.comment,
            "trusted_by": self.trusted_by.map(|k| k.to_string()),
            "chain": self.chain.iter().map(cert_json).collect::<Vec<_>>(),
            "error": self.error.as_ref().map(|e| e.to_string()),
            "error_kind": self.error.as_ref().map(SigningError::kind),
        })
    }
}

fn cert_json(cert: &Certificate) -> Value {
    json!({
        "serial": cert.serial,
        "name": cert.name,
        "key_id": cert.subject.key_id().to_string(),
        "issuer": cert.issuer.to_string(),
        "usage": cert.usage.labels(),
        "not_before": cert.not_before,
        "not_after": cert.not_after,
    })
}

/// Checks the signature of an open file against `policy`: O(header + TOC)
/// plus the signature and certificate sections. Section contents are not
/// hashed (see the module docs).
pub fn check(reader: &ExpertReader, policy: &Policy) -> SignatureReport {
    let mut report = SignatureReport::new();
    if let Err(e) = run(reader, policy, &mut report) {
        report.state = e.state();
        report.error = Some(e);
    }
    report
}

/// Full verification: root, every section digest and padding, then
/// [`check`]. `Ok` only for a `valid` signature.
pub fn verify(reader: &ExpertReader, policy: &Policy) -> Result<SignatureReport> {
    reader.verify_all()?;
    check(reader, policy).into_result()
}

/// Trust at load: whether `policy` lets the runtime use this file, decided
/// before any tensor is handed out. With nothing required (no
/// `require_signature`, no trust configured) every file is admitted, as
/// before. Otherwise the root and every section digest are checked (a
/// signature vouches for the sections only through their digests), then the
/// signature against the policy; a refusal names why.
pub fn admit(reader: &ExpertReader, policy: &Policy) -> Result<Option<SignatureReport>> {
    if !policy.requires_signature() {
        return Ok(None);
    }
    reader.verify_all()?;
    let report = check(reader, policy);
    if policy.fails(&report) {
        return Err(report.error.unwrap_or(SigningError::Unsigned));
    }
    Ok(Some(report))
}

/// What can be said without any trust configuration (the TUI): the
/// signature is checked with its embedded key, certificates against the
/// clock; the state is at best `untrusted`.
pub fn inspect(reader: &ExpertReader) -> SignatureReport {
    check(reader, &Policy::default())
}

fn run(reader: &ExpertReader, policy: &Policy, report: &mut SignatureReport) -> Result<()> {
    let Some((index, block)) = read_signature(reader)? else {
        return Err(SigningError::Unsigned);
    };
    report.section = Some(index);
    report.key_id = Some(block.key_id);
    let actual = signing_digest(reader);
    if actual != block.digest {
        return Err(SigningError::ContentMismatch {
            signed: hex::encode(block.digest),
            actual: hex::encode(actual),
        });
    }
    let signer = signer_key(policy, &block)?;
    block.verify(&signer)?;
    report.signature_ok = true;
    report.signer = Some(block.trusted.signer.clone());
    report.timestamp = Some(block.trusted.timestamp);
    report.file = Some(block.trusted.file.clone());
    report.comment = Some(block.trusted.comment.clone());

    let chain = read_chain(reader, &block)?;
    report.chain = chain.clone();
    if let Some(top) = chain.last() {
        check_links(&chain, &signer)?;
        if let Some(root) = policy.trust.get(top.issuer) {
            if !top.verify_signature(root) {
                return Err(SigningError::BadCertificateSignature {
                    serial: top.serial,
                    issuer: top.issuer,
                });
            }
        }
        for cert in &chain {
            cert.check_validity(policy.now)?;
        }
    }

    let mut path_keys = vec![signer.key_id()];
    for cert in &chain {
        path_keys.push(cert.issuer);
    }
    for list in &policy.revocations {
        if let Some(key_id) = path_keys.iter().find(|k| list.keys.contains(k)) {
            return Err(SigningError::RevokedKey {
                key_id: *key_id,
                issuer: list.issuer,
            });
        }
        if let Some(cert) = chain
            .iter()
            .find(|c| c.issuer == list.issuer && list.serials.contains(&c.serial))
        {
            return Err(SigningError::RevokedCertificate {
                serial: cert.serial,
                issuer: cert.issuer,
            });
        }
    }

    if let Some(pinned) = &policy.pinned {
        report.trusted_by = Some(pinned.key_id());
        return Ok(());
    }
    if policy.trust.get(signer.key_id()) == Some(&signer) {
        report.trusted_by = Some(signer.key_id());
        return Ok(());
    }
    match chain.last() {
        Some(top) if policy.trust.get(top.issuer).is_some() => {
            report.trusted_by = Some(top.issuer);
            Ok(())
        }
        Some(top) => Err(SigningError::UntrustedRoot { issuer: top.issuer }),
        None => Err(SigningError::UntrustedKey {
            key_id: block.key_id,
        }),
    }
}

/// The key to verify with: the pinned key (which must be the signer), a
/// trusted key with the signer's id, or the embedded key.
fn signer_key(policy: &Policy, block: &SignatureBlock) -> Result<PublicKey> {
    if let Some(pinned) = &policy.pinned {
        if pinned.key_id() != block.key_id || *pinned != block.public_key {
            return Err(SigningError::WrongKey {
                expected: pinned.key_id(),
                found: block.key_id,
            });
        }
        return Ok(*pinned);
    }
    match policy.trust.get(block.key_id) {
        Some(trusted) if *trusted != block.public_key => Err(SigningError::WrongKey {
            expected: trusted.key_id(),
            found: block.key_id,
        }),
        _ => Ok(block.public_key),
    }
}
