//! Certificates: an issuer key vouches for a subject key, for a time and a use.
//!
//! Binary layout (little-endian), 146 + N bytes:
//! ```text
//!  0   4  magic "ECRT"
//!  4   2  version = 1
//!  6   2  usage bits: 1 = sign-experts, 2 = certify (others must be 0)
//!  8   8  serial (unique per issuer)
//! 16   8  not_before (Unix seconds)
//! 24   8  not_after  (Unix seconds, >= not_before)
//! 32   8  subject key id
//! 40  32  subject Ed25519 public key
//! 72   8  issuer key id
//! 80   2  N = name length (1..=256, UTF-8, no control characters)
//! 82   N  subject name (publisher)
//! 82+N 64 Ed25519 signature by the issuer of "expertui-certificate-v1\0" ‖ bytes 0..82+N
//! ```
//! A chain (the `certificates` section, and certificate files) lists the
//! signer's certificate first, then the certificate of its issuer, and so on,
//! at most [`MAX_CHAIN_DEPTH`] certificates; the issuer of the last one must
//! be a trusted root key.
//!
//! Chain section payload: `"ECHN" ‖ version u16 = 1 ‖ count u16 ‖ count ×
//! (length u16 ‖ certificate)`, nothing after.

use std::path::Path;

use super::encoding::{armor, check_text, put_bytes16, read_limited, unarmor, Cursor};
use super::keys::{key_id_of, PublicKey, SecretKey};
use super::signed::Signed;
use super::{KeyId, Result, SigningError};

const MAGIC: [u8; 4] = *b"ECRT";
const CHAIN_MAGIC: [u8; 4] = *b"ECHN";
const VERSION: u16 = 1;
const DOMAIN: &[u8] = b"expertui-certificate-v1\0";
/// Longest subject name in bytes.
pub const MAX_NAME: usize = 256;
/// Most certificates in a chain (signer's certificate included).
pub const MAX_CHAIN_DEPTH: usize = 4;
const FIXED_LEN: usize = 82;
const MAX_CERT_LEN: usize = FIXED_LEN + MAX_NAME + 64;
/// Largest certificate or chain file read.
const FILE_LIMIT: u64 = 64 * 1024;

/// What a certified key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyUsage(pub u16);

impl KeyUsage {
    /// Sign `.expert` files.
    pub const SIGN_EXPERTS: Self = Self(1);
    /// Issue certificates (an intermediate authority).
    pub const CERTIFY: Self = Self(2);
    const KNOWN: u16 = 3;

    /// True when every usage in `what` is allowed.
    pub fn allows(self, what: Self) -> bool {
        self.0 & what.0 == what.0
    }

    /// `sign-experts`, `certify`, or both joined by `,`.
    pub fn labels(self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.allows(Self::SIGN_EXPERTS) {
            out.push("sign-experts");
        }
        if self.allows(Self::CERTIFY) {
            out.push("certify");
        }
        out
    }

    /// Parses `sign-experts`, `certify` or a comma-separated list of them.
    pub fn parse(text: &str) -> Option<Self> {
        let mut bits = 0;
        for part in text.split(',') {
            bits |= match part.trim() {
                "sign-experts" => Self::SIGN_EXPERTS.0,
                "certify" => Self::CERTIFY.0,
                _ => return None,
            };
        }
        Some(Self(bits))
    }
}

/// A parsed certificate. Its issuer signature is checked by
/// [`Certificate::verify_signature`], not by parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Serial number, unique per issuer (revocation lists name it).
    pub serial: u64,
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds.
    pub not_after: u64,
    /// What the subject key may do.
    pub usage: KeyUsage,
    /// The key vouched for.
    pub subject: PublicKey,
    /// The key that signed the certificate.
    pub issuer: KeyId,
    /// The subject's name.
    pub name: String,
    /// Bytes 0..82+N, the signed part, and the issuer's signature of it.
    signed: Signed,
}

fn malformed(reason: impl Into<String>) -> SigningError {
    SigningError::MalformedCertificate(reason.into())
}

impl Certificate {
    /// `issuer` certifies `subject` as `name` for `not_before..=not_after`.
    pub fn issue(
        issuer: &SecretKey,
        subject: &PublicKey,
        name: &str,
        usage: KeyUsage,
        serial: u64,
        not_before: u64,
        not_after: u64,
    ) -> Result<Self> {
        let name = check_text("name", name.as_bytes(), MAX_NAME).map_err(SigningError::Invalid)?;
        if name.is_empty() {
            return Err(SigningError::Invalid("empty certificate name".into()));
        }
        if usage.0 == 0 || usage.0 & !KeyUsage::KNOWN != 0 {
            return Err(SigningError::Invalid("no or unknown key usage".into()));
        }
        if not_after < not_before {
            return Err(SigningError::Invalid(
                "not_after is before not_before".into(),
            ));
        }
        let mut body = Vec::with_capacity(FIXED_LEN + name.len());
        body.extend_from_slice(&MAGIC);
        body.extend_from_slice(&VERSION.to_le_bytes());
        body.extend_from_slice(&usage.0.to_le_bytes());
        body.extend_from_slice(&serial.to_le_bytes());
        body.extend_from_slice(&not_before.to_le_bytes());
        body.extend_from_slice(&not_after.to_le_bytes());
        body.extend_from_slice(&subject.key_id().0);
        body.extend_from_slice(subject.as_bytes());
        body.extend_from_slice(&issuer.key_id().0);
        put_bytes16(&mut body, name.as_bytes());
        let signed = Signed::sign(DOMAIN, body, issuer);
        Ok(Self {
            serial,
            not_before,
            not_after,
            usage,
            subject: *subject,
            issuer: issuer.key_id(),
            name,
            signed,
        })
    }

    /// Parses one certificate; the bytes must be exactly one certificate.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_CERT_LEN {
            return Err(malformed(format!(
                "{} bytes, at most {MAX_CERT_LEN}",
                bytes.len()
            )));
        }
        let short = |s: super::encoding::Short| {
            malformed(format!(
                "truncated: need {} bytes, have {}",
                s.needed, s.have
            ))
        };
        let mut c = Cursor::new(bytes);
        if c.array::<4>().map_err(short)? != MAGIC {
            return Err(malformed("bad magic"));
        }
        let version = c.u16().map_err(short)?;
        if version != VERSION {
            return Err(malformed(format!("unsupported version {version}")));
        }
        let usage = KeyUsage(c.u16().map_err(short)?);
        if usage.0 == 0 || usage.0 & !KeyUsage::KNOWN != 0 {
            return Err(malformed(format!("unknown key usage bits {:#x}", usage.0)));
        }
        let serial = c.u64().map_err(short)?;
        let not_before = c.u64().map_err(short)?;
        let not_after = c.u64().map_err(short)?;
        if not_after < not_before {
            return Err(malformed("not_after is before not_before"));
        }
        let subject_id = KeyId(c.array().map_err(short)?);
        let subject = PublicKey::from_bytes(c.array().map_err(short)?).map_err(malformed)?;
        if key_id_of(subject.as_bytes()) != subject_id {
            return Err(malformed("subject key id does not match the subject key"));
        }
        let issuer = KeyId(c.array().map_err(short)?);
        let name = check_text("name", c.bytes16().map_err(short)?, MAX_NAME).map_err(malformed)?;
        if name.is_empty() {
            return Err(malformed("empty name"));
        }
        let signed = Signed::read(&mut c).map_err(short)?;
        if c.remaining() != 0 {
            return Err(malformed("trailing bytes"));
        }
        Ok(Self {
            serial,
            not_before,
            not_after,
            usage,
            subject,
            issuer,
            name,
            signed,
        })
    }

    /// The certificate's binary encoding (what [`parse`](Self::parse) reads).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.signed.to_bytes()
    }

    /// Whether `issuer` (whose id must be [`Certificate::issuer`]) signed this.
    pub fn verify_signature(&self, issuer: &PublicKey) -> bool {
        self.signed.verify(DOMAIN, self.issuer, issuer)
    }

    /// `Ok` when `now` lies in `not_before..=not_after`.
    pub fn check_validity(&self, now: u64) -> Result<()> {
        if now < self.not_before {
            return Err(SigningError::CertificateNotYetValid {
                serial: self.serial,
                name: self.name.clone(),
                not_before: self.not_before,
                now,
            });
        }
        if now > self.not_after {
            return Err(SigningError::CertificateExpired {
                serial: self.serial,
                name: self.name.clone(),
                not_after: self.not_after,
                now,
            });
        }
        Ok(())
    }

    fn comment(&self) -> String {
        format!(
            "expertui certificate {} for \"{}\" key {} issued by {} ({}) valid {}..{}",
            self.serial,
            self.name,
            self.subject.key_id(),
            self.issuer,
            self.usage.labels().join(","),
            self.not_before,
            self.not_after
        )
    }
}

/// The `certificates` section payload for a chain (signer's certificate first).
pub fn encode_chain(chain: &[Certificate]) -> Result<Vec<u8>> {
    check_depth(chain.len())?;
    let mut out = Vec::new();
    out.extend_from_slice(&CHAIN_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(chain.len() as u16).to_le_bytes());
    for cert in chain {
        put_bytes16(&mut out, &cert.to_bytes());
    }
    Ok(out)
}

fn check_depth(depth: usize) -> Result<()> {
    if depth == 0 {
        return Err(malformed("empty certificate chain"));
    }
    if depth > MAX_CHAIN_DEPTH {
        return Err(SigningError::ChainTooLong {
            depth,
            max: MAX_CHAIN_DEPTH,
        });
    }
    Ok(())
}

/// Parses a `certificates` section payload.
pub fn parse_chain(bytes: &[u8]) -> Result<Vec<Certificate>> {
    let short = |s: super::encoding::Short| {
        malformed(format!(
            "chain truncated: need {} bytes, have {}",
            s.needed, s.have
        ))
    };
    let mut c = Cursor::new(bytes);
    if c.array::<4>().map_err(short)? != CHAIN_MAGIC {
        return Err(malformed("bad chain magic"));
    }
    let version = c.u16().map_err(short)?;
    if version != VERSION {
        return Err(malformed(format!("unsupported chain version {version}")));
    }
    let count = usize::from(c.u16().map_err(short)?);
    check_depth(count)?;
    let mut chain = Vec::with_capacity(count);
    for _ in 0..count {
        chain.push(Certificate::parse(c.bytes16().map_err(short)?)?);
    }
    if c.remaining() != 0 {
        return Err(malformed("trailing bytes after the chain"));
    }
    Ok(chain)
}

/// Text of a certificate file: one comment line and one base64 line per
/// certificate, signer's certificate first.
pub fn chain_to_text(chain: &[Certificate]) -> String {
    chain
        .iter()
        .map(|c| armor(&c.comment(), &c.to_bytes()))
        .collect()
}

/// Parses a certificate file (one or more certificates).
pub fn chain_from_text(text: &str) -> Result<Vec<Certificate>> {
    let chain = unarmor(text)
        .map_err(malformed)?
        .iter()
        .map(|raw| Certificate::parse(raw))
        .collect::<Result<Vec<_>>>()?;
    check_depth(chain.len())?;
    Ok(chain)
}

/// Reads a certificate file.
pub fn load_chain(path: &Path) -> Result<Vec<Certificate>> {
    let text = read_limited(path, FILE_LIMIT).map_err(|e| SigningError::io(path, e))?;
    chain_from_text(&text)
}

/// Writes a certificate file (atomically).
pub fn save_chain(path: &Path, chain: &[Certificate]) -> Result<()> {
    super::super::atomic::write_atomic(path, chain_to_text(chain).as_bytes())?;
    Ok(())
}

/// Checks a chain's internal links: the first certificate is for `signer`
/// and may sign experts, each next one is for the issuer of the previous,
/// may certify, and signed it; the depth is bounded. The issuer signature of
/// the last certificate needs the root key and is checked by the policy.
pub fn check_links(chain: &[Certificate], signer: &PublicKey) -> Result<()> {
    check_chain(chain, signer, KeyUsage::SIGN_EXPERTS)
}

/// [`check_links`] with the usage the first certificate must allow (for
/// `certify --chain`, where the new certificate may be an intermediate's).
pub fn check_chain(chain: &[Certificate], signer: &PublicKey, leaf_usage: KeyUsage) -> Result<()> {
    check_depth(chain.len())?;
    let leaf = &chain[0];
    if leaf.subject != *signer {
        return Err(SigningError::CertificateMismatch {
            signer: signer.key_id(),
            subject: leaf.subject.key_id(),
        });
    }
    for (i, cert) in chain.iter().enumerate() {
        let (needed, label) = if i == 0 {
            (leaf_usage, "signing experts")
        } else {
            (KeyUsage::CERTIFY, "issuing certificates")
        };
        if !cert.usage.allows(needed) {
            return Err(SigningError::KeyUsageNotAllowed {
                serial: cert.serial,
                name: cert.name.clone(),
                needed: label,
            });
        }
        if let Some(parent) = chain.get(i + 1) {
            if cert.issuer != parent.subject.key_id() {
                return Err(malformed(format!(
                    "chain broken: certificate {} is issued by {}, the next certificate is for {}",
                    cert.serial,
                    cert.issuer,
                    parent.subject.key_id()
                )));
            }
            if !cert.verify_signature(&parent.subject) {
                return Err(SigningError::BadCertificateSignature {
                    serial: cert.serial,
                    issuer: cert.issuer,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&[n; 32]).unwrap()
    }

    #[test]
    fn certificate_round_trip_and_signature() {
        let (root, publisher) = (key(1), key(2));
        let cert = Certificate::issue(
            &root,
            publisher.public(),
            "ACME models",
            KeyUsage::SIGN_EXPERTS,
            42,
            10,
            20,
        )
        .unwrap();
        let bytes = cert.to_bytes();
        assert_eq!(bytes.len(), FIXED_LEN + "ACME models".len() + 64);
        let back = Certificate::parse(&bytes).unwrap();
        assert_eq!(back, cert);
        assert!(back.verify_signature(root.public()));
        assert!(!back.verify_signature(publisher.public()));
        let text = chain_to_text(std::slice::from_ref(&cert));
        assert_eq!(chain_from_text(&text).unwrap(), vec![cert.clone()]);
        // Any changed byte breaks the signature or the parse.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let ok = Certificate::parse(&bad).is_ok_and(|c| c.verify_signature(root.public()));
            assert!(!ok, "byte {i}");
        }
        // Truncated anywhere: an error, never a panic.
        for n in 0..bytes.len() {
            assert!(Certificate::parse(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn validity_window() {
        let cert = Certificate::issue(
            &key(1),
            key(2).public(),
            "p",
            KeyUsage::SIGN_EXPERTS,
            1,
            10,
            20,
        )
        .unwrap();
        assert!(cert.check_validity(15).is_ok());
        assert!(matches!(
            cert.check_validity(21),
            Err(SigningError::CertificateExpired { .. })
        ));
        assert!(matches!(
            cert.check_validity(9),
            Err(SigningError::CertificateNotYetValid { .. })
        ));
    }

    #[test]
    fn chain_links_and_depth() {
        let keys: Vec<SecretKey> = (1..=6).map(key).collect();
        // keys[0] root → keys[1] → ... → keys[5] signer.
        let mut chain = Vec::new();
        for i in (1..6).rev() {
            let usage = if i == 5 {
                KeyUsage::SIGN_EXPERTS
            } else {
                KeyUsage::CERTIFY
            };
            chain.push(
                Certificate::issue(&keys[i - 1], keys[i].public(), "k", usage, i as u64, 0, 9)
                    .unwrap(),
            );
        }
        assert_eq!(chain.len(), 5);
        assert!(matches!(
            check_links(&chain, keys[5].public()),
            Err(SigningError::ChainTooLong { depth: 5, .. })
        ));
        assert!(matches!(
            encode_chain(&chain),
            Err(SigningError::ChainTooLong { .. })
        ));
        let short = &chain[..4];
        check_links(short, keys[5].public()).unwrap();
        let payload = encode_chain(short).unwrap();
        assert_eq!(parse_chain(&payload).unwrap(), short.to_vec());
        assert!(matches!(
            check_links(short, keys[4].public()),
            Err(SigningError::CertificateMismatch { .. })
        ));
        // An intermediate without `certify`.
        let mut weak = short.to_vec();
        weak[1] = Certificate::issue(
            &keys[3],
            keys[4].public(),
            "k",
            KeyUsage::SIGN_EXPERTS,
            9,
            0,
            9,
        )
        .unwrap();
        assert!(matches!(
            check_links(&weak, keys[5].public()),
            Err(SigningError::KeyUsageNotAllowed { .. })
        ));
    }

    #[test]
    fn usage_labels_parse() {
        assert_eq!(
            KeyUsage::parse("sign-experts"),
            Some(KeyUsage::SIGN_EXPERTS)
        );
        assert_eq!(KeyUsage::parse("certify,sign-experts"), Some(KeyUsage(3)));
        assert_eq!(KeyUsage::parse("root"), None);
        assert_eq!(KeyUsage(3).labels(), vec!["sign-experts", "certify"]);
    }
}
