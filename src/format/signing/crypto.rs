//! The only place that uses the Ed25519 implementation (ed25519-dalek) and
//! the system random source. Everything else sees byte arrays.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::{Result, SigningError};

/// An Ed25519 key pair built from a 32-byte seed. The seed is zeroized when
/// the pair is dropped (ed25519-dalek's `zeroize` feature).
pub(super) struct Keypair(SigningKey);

impl Keypair {
    pub fn generate() -> Result<Self> {
        let mut seed = random::<32>()?;
        let pair = Self::from_seed(&seed);
        wipe(&mut seed);
        Ok(pair)
    }

    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

/// Strict Ed25519 verification (RFC 8032 plus the checks against malleable
/// signatures and small-order keys of `verify_strict`).
pub(super) fn verify(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public) else {
        return false;
    };
    key.verify_strict(message, &Signature::from_bytes(signature))
        .is_ok()
}

/// Whether 32 bytes are a usable public key: a valid point, not of small order.
pub(super) fn is_valid_public_key(public: &[u8; 32]) -> bool {
    VerifyingKey::from_bytes(public).is_ok_and(|k| !k.is_weak())
}

/// `N` bytes from the operating system's random source.
pub(super) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| SigningError::Random(e.to_string()))?;
    Ok(out)
}

/// Overwrites secret bytes (best effort: volatile writes the optimiser keeps).
pub(super) fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to a u8.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}
