//! Ed25519 signatures, publisher certificates and revocation lists for
//! `.expert` v2 files (docs/SECURITY.md is the normative description).
//!
//! - [`digest`]: the signing digest, computed from the TOC alone (O(TOC)).
//! - [`keys`]: key pairs and their minisign-like text files.
//! - [`signature`]: the `signature` section payload and [`sign_file`].
//! - [`cert`]: certificates (a root key certifies a publisher key) and chains.
//! - [`revocation`]: signed lists of revoked key ids and certificate serials.
//! - [`policy`]: trust anchors, the verification policy and its outcome.
//!
//! Only the private `crypto` module touches the Ed25519 implementation.

pub mod cert;
mod crypto;
pub mod digest;
mod encoding;
pub mod keys;
pub mod policy;
pub mod revocation;
pub mod signature;
mod signed;

use std::fmt;
use std::path::PathBuf;

use super::error::FormatError;

pub use cert::{Certificate, KeyUsage, MAX_CHAIN_DEPTH};
pub use digest::signing_digest;
pub use keys::{KdfParams, PublicKey, SecretKey};
pub use policy::{
    admit, check, inspect, verify, Policy, SignatureReport, SignatureState, TrustStore,
};
pub use revocation::RevocationList;
pub use signature::{sign_file, SignOptions, SignSummary, SignatureBlock};

/// Name of the section holding the signature (type `signature`, 11).
pub const SIGNATURE_SECTION: &str = "signature";
/// Name of the section holding the signer's certificate chain (type `certificate`, 12).
pub const CERTIFICATE_SECTION: &str = "certificates";

/// First 8 bytes of SHA-256 of an Ed25519 public key: names a key in
/// signatures, certificates and revocation lists.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// Parses 16 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(format_utc(4_102_444_799), "2099-12-31 23:59 UTC");
    }

    #[test]
    fn key_id_hex() {
        let id = KeyId([0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f, 0x7a, 0x8b]);
        assert_eq!(id.to_string(), "1a2b3c4d5e6f7a8b");
        assert_eq!(KeyId::parse("1a2b3c4d5e6f7a8b"), Some(id));
        assert_eq!(KeyId::parse("1a2b"), None);
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Everything that can go wrong creating or checking signatures. Each
/// verification failure has its own variant; [`SigningError::state`] maps it
/// to the state a user sees.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// An operating-system error on `path`.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file being signed or checked is damaged or unreadable.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A key, certificate or list file that does not parse.
    #[error("{path}: not a valid {what}: {reason}")]
    BadKeyFile {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    /// The secret key is encrypted and no passphrase was given.
    #[error("the secret key is encrypted: give its passphrase (--passphrase-env VAR)")]
    PassphraseRequired,
    /// The passphrase does not decrypt the secret key (or the file is damaged).
    #[error("wrong passphrase, or the secret key file is damaged")]
    WrongPassphrase,
    /// The system random source failed.
    #[error("no system randomness: {0}")]
    Random(String),
    /// Arguments that do not fit together, or a file `sign` cannot re-write.
    #[error("{0}")]
    Invalid(String),

    /// The file has no signature section.
    #[error("the file is not signed")]
    Unsigned,
    /// More than one signature section.
    #[error("the file has {0} signature sections; exactly one is allowed")]
    MultipleSignatures(usize),
    /// The signature section is shorter than its layout.
    #[error("signature section truncated: need {needed} bytes, it has {have}")]
    TruncatedSignature { needed: u64, have: u64 },
    /// The signature section does not parse.
    #[error("malformed signature section: {0}")]
    MalformedSignature(String),
    /// A signature algorithm this build does not know.
    #[error("unsupported signature algorithm {0:#06x}")]
    UnsupportedAlgorithm(u16),
    /// The signed digest is not this file's: sections changed after signing.
    #[error("the signature was made for other contents (signed digest {signed}, this file {actual}): sections were changed, or the signature was copied from another file")]
    ContentMismatch { signed: String, actual: String },
    /// The Ed25519 signature does not verify.
    #[error("bad {what}: the signature does not verify")]
    BadSignature { what: &'static str },
    /// Signed by another key than the pinned one.
    #[error("signed by key {found}, but key {expected} was required")]
    WrongKey { expected: KeyId, found: KeyId },
    /// Signed by a key that is not trusted and has no chain.
    #[error("signed by key {key_id}, which is not a trusted key and has no certificate chain")]
    UntrustedKey { key_id: KeyId },
    /// The certificate chain does not end at a trusted key.
    #[error("the certificate chain ends at issuer {issuer}, which is not a trusted root")]
    UntrustedRoot { issuer: KeyId },

    /// A certificate that does not parse.
    #[error("malformed certificate: {0}")]
    MalformedCertificate(String),
    /// The leaf certificate is for another key than the signer's.
    #[error("the certificate is for key {subject}, but the file is signed by key {signer}")]
    CertificateMismatch { signer: KeyId, subject: KeyId },
    /// A certificate not signed by its issuer.
    #[error("certificate {serial} is not signed by its issuer {issuer}")]
    BadCertificateSignature { serial: u64, issuer: KeyId },
    /// More certificates than [`MAX_CHAIN_DEPTH`].
    #[error("certificate chain of {depth} certificates is longer than {max} allowed")]
    ChainTooLong { depth: usize, max: usize },
    /// A certificate whose usage does not cover what it is used for.
    #[error("certificate {serial} ({name}) does not allow {needed}")]
    KeyUsageNotAllowed {
        serial: u64,
        name: String,
        needed: &'static str,
    },
    /// A certificate past its end of validity.
    #[error("certificate {serial} ({name}) expired at {not_after} (now {now})")]
    CertificateExpired {
        serial: u64,
        name: String,
        not_after: u64,
        now: u64,
    },
    /// A certificate before its start of validity.
    #[error("certificate {serial} ({name}) is not valid before {not_before} (now {now})")]
    CertificateNotYetValid {
        serial: u64,
        name: String,
        not_before: u64,
        now: u64,
    },
    /// The signing key is on a trusted revocation list.
    #[error("key {key_id} is revoked (revocation list of {issuer})")]
    RevokedKey { key_id: KeyId, issuer: KeyId },
    /// A certificate of the chain is on a trusted revocation list.
    #[error("certificate {serial} issued by {issuer} is revoked")]
    RevokedCertificate { serial: u64, issuer: KeyId },

    /// A revocation list that does not parse.
    #[error("malformed revocation list: {0}")]
    MalformedRevocationList(String),
    /// A revocation list signed by a key that is not trusted.
    #[error("revocation list issued by {issuer}, which is not a trusted key")]
    UntrustedRevocationList { issuer: KeyId },
    /// A revocation list whose signature does not verify.
    #[error("revocation list of {issuer}: the signature does not verify")]
    BadRevocationSignature { issuer: KeyId },
}

impl SigningError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// The verification state this error stands for. Errors that are not
    /// about the file (I/O, key files, configuration) map to `Invalid` too;
    /// callers tell them apart with [`SigningError::is_verdict`].
    pub fn state(&self) -> SignatureState {
        match self {
            Self::Unsigned => SignatureState::Unsigned,
            Self::UntrustedKey { .. } | Self::UntrustedRoot { .. } | Self::WrongKey { .. } => {
                SignatureState::Untrusted
            }
            Self::RevokedKey { .. } | Self::RevokedCertificate { .. } => SignatureState::Revoked,
            Self::CertificateExpired { .. } | Self::CertificateNotYetValid { .. } => {
                SignatureState::Expired
            }
            _ => SignatureState::Invalid,
        }
    }

    /// Stable name of the variant (JSON `error_kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Format(_) => "format",
            Self::BadKeyFile { .. } => "bad_key_file",
            Self::PassphraseRequired => "passphrase_required",
            Self::WrongPassphrase => "wrong_passphrase",
            Self::Random(_) => "random",
            Self::Invalid(_) => "invalid_argument",
            Self::Unsigned => "unsigned",
            Self::MultipleSignatures(_) => "multiple_signatures",
            Self::TruncatedSignature { .. } => "truncated_signature",
            Self::MalformedSignature(_) => "malformed_signature",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::ContentMismatch { .. } => "content_mismatch",
            Self::BadSignature { .. } => "bad_signature",
            Self::WrongKey { .. } => "wrong_key",
            Self::UntrustedKey { .. } => "untrusted_key",
            Self::UntrustedRoot { .. } => "untrusted_root",
            Self::MalformedCertificate(_) => "malformed_certificate",
            Self::CertificateMismatch { .. } => "certificate_mismatch",
            Self::BadCertificateSignature { .. } => "bad_certificate_signature",
            Self::ChainTooLong { .. } => "chain_too_long",
            Self::KeyUsageNotAllowed { .. } => "key_usage_not_allowed",
            Self::CertificateExpired { .. } => "certificate_expired",
            Self::CertificateNotYetValid { .. } => "certificate_not_yet_valid",
            Self::RevokedKey { .. } => "revoked_key",
            Self::RevokedCertificate { .. } => "revoked_certificate",
            Self::MalformedRevocationList(_) => "malformed_revocation_list",
            Self::UntrustedRevocationList { .. } => "untrusted_revocation_list",
            Self::BadRevocationSignature { .. } => "bad_revocation_signature",
        }
    }

    /// True when the error is a verdict about the file (its signature,
    /// chain or contents), false for I/O, key-file and configuration errors.
    pub fn is_verdict(&self) -> bool {
        !matches!(
            self,
            Self::Io { .. }
                | Self::BadKeyFile { .. }
                | Self::PassphraseRequired
                | Self::WrongPassphrase
                | Self::Random(_)
                | Self::Invalid(_)
                | Self::MalformedRevocationList(_)
                | Self::UntrustedRevocationList { .. }
                | Self::BadRevocationSignature { .. }
        ) && !matches!(self, Self::Format(e) if !e.is_corruption())
    }
}

/// Result alias for this module.
pub type Result<T, E = SigningError> = std::result::Result<T, E>;

/// A random certificate serial in `1..2^53` (exact in JSON numbers).
pub fn random_serial() -> Result<u64> {
    let bytes = crypto::random::<8>()?;
    Ok((u64::from_le_bytes(bytes) & ((1 << 53) - 1)).max(1))
}

/// `YYYY-MM-DD HH:MM UTC` for Unix seconds (proleptic Gregorian calendar).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
