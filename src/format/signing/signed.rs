//! The signed tail that certificates and revocation lists share: the
//! encoded body, then an Ed25519 signature by the issuer over
//! `domain ‖ body` (the domain string keeps a signature of one kind of
//! record from being replayed as another).

use super::encoding::{Cursor, Short};
use super::keys::{PublicKey, SecretKey};
use super::KeyId;

/// A body and the issuer's signature of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The signed bytes: everything before the signature.
    pub body: Vec<u8>,
    pub signature: [u8; 64],
}

impl Signed {
    /// Signs `body` under `domain` with `issuer`.
    pub fn sign(domain: &[u8], body: Vec<u8>, issuer: &SecretKey) -> Self {
        let signature = issuer.sign(&[domain, &body].concat());
        Self { body, signature }
    }

    /// Reads the signature at the cursor; the body is every byte the cursor
    /// has consumed so far.
    pub fn read(c: &mut Cursor<'_>) -> Result<Self, Short> {
        let body = c.consumed().to_vec();
        let signature = c.array()?;
        Ok(Self { body, signature })
    }

    /// Body then signature: the record's binary encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        [self.body.as_slice(), &self.signature].concat()
    }

    /// Whether `issuer`, which must be the key `issuer_id` names, signed the
    /// body under `domain`.
    pub fn verify(&self, domain: &[u8], issuer_id: KeyId, issuer: &PublicKey) -> bool {
        issuer.key_id() == issuer_id
            && issuer.verify(&[domain, &self.body].concat(), &self.signature)
    }
}
