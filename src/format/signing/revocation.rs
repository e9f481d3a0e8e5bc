//! Revocation lists: a root key withdraws keys and certificates it vouched for.
//!
//! Binary layout (little-endian), 96 + 8K + 8S bytes:
//! ```text
//!  0   4  magic "EREV"
//!  4   2  version = 1
//!  6   2  reserved = 0
//!  8   8  issuer key id
//! 16   8  issued_at (Unix seconds)
//! 24   4  K = number of revoked key ids
//! 28   4  S = number of revoked certificate serials
//! 32  8K  revoked key ids
//!  …  8S  revoked serials (u64), of certificates issued by the issuer
//!  …  64  Ed25519 signature by the issuer of "expertui-revocations-v1\0" ‖ all bytes before it
//! ```
//! The file form is one `untrusted comment:` line and one base64 line.

use std::collections::BTreeSet;
use std::path::Path;

use super::encoding::{armor, read_limited, unarmor, Cursor};
use super::keys::{PublicKey, SecretKey};
use super::signed::Signed;
use super::{KeyId, Result, SigningError};

const MAGIC: [u8; 4] = *b"EREV";
const VERSION: u16 = 1;
const DOMAIN: &[u8] = b"expertui-revocations-v1\0";
/// Most entries (keys plus serials) in one list.
pub const MAX_ENTRIES: usize = 100_000;
const FILE_LIMIT: u64 = 2 * (96 + 8 * MAX_ENTRIES as u64);

/// A parsed revocation list. Its signature is checked by
/// [`RevocationList::verify_signature`], not by parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    /// The key that signed the list.
    pub issuer: KeyId,
    /// When it was issued, Unix seconds.
    pub issued_at: u64,
    /// Revoked key ids.
    pub keys: BTreeSet<KeyId>,
    /// Revoked certificate serials (of certificates this issuer issued).
    pub serials: BTreeSet<u64>,
    /// The encoding before the signature, and the issuer's signature of it.
    signed: Signed,
}

fn malformed(reason: impl Into<String>) -> SigningError {
    SigningError::MalformedRevocationList(reason.into())
}

impl RevocationList {
    /// A list signed by `issuer`.
    pub fn create(
        issuer: &SecretKey,
        keys: impl IntoIterator<Item = KeyId>,
        serials: impl IntoIterator<Item = u64>,
        issued_at: u64,
    ) -> Result<Self> {
        let keys: BTreeSet<KeyId> = keys.into_iter().collect();
        let serials: BTreeSet<u64> = serials.into_iter().collect();
        if keys.len() + serials.len() > MAX_ENTRIES {
            return Err(SigningError::Invalid(format!(
                "more than {MAX_ENTRIES} revocations in one list"
            )));
        }
        let mut body = Vec::with_capacity(32 + 8 * (keys.len() + serials.len()));
        body.extend_from_slice(&MAGIC);
        body.extend_from_slice(&VERSION.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&issuer.key_id().0);
        body.extend_from_slice(&issued_at.to_le_bytes());
        body.extend_from_slice(&(keys.len() as u32).to_le_bytes());
        body.extend_from_slice(&(serials.len() as u32).to_le_bytes());
        for key in &keys {
            body.extend_from_slice(&key.0);
        }
        for serial in &serials {
            body.extend_from_slice(&serial.to_le_bytes());
        }
        let signed = Signed::sign(DOMAIN, body, issuer);
        Ok(Self {
            issuer: issuer.key_id(),
            issued_at,
            keys,
            serials,
            signed,
        })
    }

    /// Parses the binary encoding (signature not checked here).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
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
        if c.u16().map_err(short)? != 0 {
            return Err(malformed("reserved field is not zero"));
        }
        let issuer = KeyId(c.array().map_err(short)?);
        let issued_at = c.u64().map_err(short)?;
        let key_count = c.u32().map_err(short)? as usize;
        let serial_count = c.u32().map_err(short)? as usize;
        if key_count.saturating_add(serial_count) > MAX_ENTRIES {
            return Err(malformed(format!("more than {MAX_ENTRIES} entries")));
        }
        // Both counts are bounded, so this cannot overflow; check the length
        // before allocating anything.
        let expected = c.position() + 8 * (key_count + serial_count) + 64;
        if bytes.len() != expected {
            return Err(malformed(format!(
                "{} bytes, the counts need {expected}",
                bytes.len()
            )));
        }
        let mut keys = BTreeSet::new();
        for _ in 0..key_count {
            keys.insert(KeyId(c.array().map_err(short)?));
        }
        let mut serials = BTreeSet::new();
        for _ in 0..serial_count {
            serials.insert(c.u64().map_err(short)?);
        }
        let signed = Signed::read(&mut c).map_err(short)?;
        Ok(Self {
            issuer,
            issued_at,
            keys,
            serials,
            signed,
        })
    }

    /// The binary encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.signed.to_bytes()
    }

    /// Whether `issuer` (whose id must be [`RevocationList::issuer`]) signed this.
    pub fn verify_signature(&self, issuer: &PublicKey) -> bool {
        self.signed.verify(DOMAIN, self.issuer, issuer)
    }

    /// The armored text form written to files.
    pub fn to_text(&self) -> String {
        armor(
            &format!(
                "expertui revocation list by {} at {}: {} keys, {} certificates",
                self.issuer,
                self.issued_at,
                self.keys.len(),
                self.serials.len()
            ),
            &self.to_bytes(),
        )
    }

    /// Parses the armored text form.
    pub fn from_text(text: &str) -> Result<Self> {
        let lines = unarmor(text).map_err(malformed)?;
        if lines.len() != 1 {
            return Err(malformed("expected one base64 line"));
        }
        Self::parse(&lines[0])
    }

    /// Reads a revocation list file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_limited(path, FILE_LIMIT).map_err(|e| SigningError::io(path, e))?;
        Self::from_text(&text)
    }

    /// Writes the list to `path` in the text form.
    pub fn save(&self, path: &Path) -> Result<()> {
        super::super::atomic::write_atomic(path, self.to_text().as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let root = SecretKey::from_seed(&[3; 32]).unwrap();
        let other = SecretKey::from_seed(&[4; 32]).unwrap();
        let list = RevocationList::create(&root, [other.key_id()], [5, 9], 1000).unwrap();
        let back = RevocationList::from_text(&list.to_text()).unwrap();
        assert_eq!(back, list);
        assert!(back.verify_signature(root.public()));
        assert!(!back.verify_signature(other.public()));
        let bytes = list.to_bytes();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x80;
            let ok = RevocationList::parse(&bad).is_ok_and(|l| l.verify_signature(root.public()));
            assert!(!ok, "byte {i}");
        }
        for n in 0..bytes.len() {
            assert!(RevocationList::parse(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut bytes = b"EREV\x01\x00\x00\x00".to_vec();
        bytes.extend_from_slice(&[0; 16]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            RevocationList::parse(&bytes),
            Err(SigningError::MalformedRevocationList(_))
        ));
    }
}
