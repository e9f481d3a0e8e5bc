//! Ed25519 key pairs and their text files, after minisign.
//!
//! Public key file (`NAME.pub`):
//! ```text
//! untrusted comment: expertui public key 1a2b3c4d5e6f7a8b
//! base64("Ed" ‖ key_id[8] ‖ public_key[32])
//! ```
//! Secret key file (`NAME`, mode 0600): one comment line, then base64 of
//! `"Ed" ‖ kdf_alg[2] ‖ "S2" ‖ salt[32] ‖ log_n u64 ‖ r u32 ‖ p u32 ‖
//! keynum_sk[104]`, where `keynum_sk = key_id[8] ‖ seed[32] ‖ public_key[32]
//! ‖ checksum[32]` is XORed with scrypt(passphrase, salt, N = 2^log_n, r, p)
//! when `kdf_alg` is `"Sc"` and stored as is when it is two zero bytes.

use std::io::Write;
use std::path::Path;

use super::crypto::{self, Keypair};
use super::encoding::{armor, read_limited, sha256, unarmor, Cursor};
use super::{KeyId, Result, SigningError};

/// Algorithm tag of keys and signatures: Ed25519 (RFC 8032, "pure").
pub const ALG_ED25519: [u8; 2] = *b"Ed";
const KDF_SCRYPT: [u8; 2] = *b"Sc";
const KDF_NONE: [u8; 2] = [0, 0];
const CHECKSUM_SHA256: [u8; 2] = *b"S2";
const CHECKSUM_DOMAIN: &[u8] = b"expertui-secret-key-v1\0";
const PUBLIC_LEN: usize = 2 + 8 + 32;
const KEYNUM_LEN: usize = 8 + 32 + 32 + 32;
const SECRET_LEN: usize = 2 + 2 + 2 + 32 + 16 + KEYNUM_LEN;
/// Key files are tiny; anything bigger is not one.
const KEY_FILE_LIMIT: u64 = 4096;

/// Key id of a public key: the first 8 bytes of its SHA-256.
pub fn key_id_of(public: &[u8; 32]) -> KeyId {
    let digest = sha256(&[public]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    KeyId(id)
}

/// An Ed25519 public key (a valid curve point, not of small order).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
    id: KeyId,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl PublicKey {
    /// Checks that the bytes are a usable Ed25519 public key.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, String> {
        if !crypto::is_valid_public_key(&bytes) {
            return Err("not a valid Ed25519 public key".into());
        }
        Ok(Self {
            bytes,
            id: key_id_of(&bytes),
        })
    }

    /// The 32 raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The key id (first 8 bytes of SHA-256 of the key).
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        crypto::verify(&self.bytes, message, signature)
    }

    /// The `.pub` file text.
    pub fn to_text(&self) -> String {
        let mut raw = Vec::with_capacity(PUBLIC_LEN);
        raw.extend_from_slice(&ALG_ED25519);
        raw.extend_from_slice(&self.id.0);
        raw.extend_from_slice(&self.bytes);
        armor(&format!("expertui public key {}", self.id), &raw)
    }

    /// Parses a `.pub` file (the first base64 line).
    pub fn from_text(text: &str) -> Result<Self, String> {
        let lines = unarmor(text)?;
        let raw = &lines[0];
        if raw.len() != PUBLIC_LEN {
            return Err(format!("{} bytes, expected {PUBLIC_LEN}", raw.len()));
        }
        let mut c = Cursor::new(raw);
        let short = |_| "truncated".to_string();
        if c.array::<2>().map_err(short)? != ALG_ED25519 {
            return Err("not an Ed25519 key".into());
        }
        let id = KeyId(c.array().map_err(short)?);
        let key = Self::from_bytes(c.array().map_err(short)?)?;
        if key.id != id {
            return Err(format!(
                "key id {id} does not match the key (its id is {})",
                key.id
            ));
        }
        Ok(key)
    }

    /// Reads a `.pub` file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_limited(path, KEY_FILE_LIMIT).map_err(|e| SigningError::io(path, e))?;
        Self::from_text(&text).map_err(|reason| SigningError::BadKeyFile {
            path: path.to_path_buf(),
            what: "public key file",
            reason,
        })
    }

    /// Writes the `.pub` file (atomically, mode 0644).
    pub fn save(&self, path: &Path) -> Result<()> {
        super::super::atomic::write_atomic(path, self.to_text().as_bytes())?;
        Ok(())
    }
}

/// scrypt cost of a passphrase-protected secret key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// log2 of N, the CPU/memory cost.
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
}

impl Default for KdfParams {
    /// N = 2^15, r = 8, p = 1: 32 MiB and about 0.1 s per derivation (the
    /// scrypt paper's interactive setting).
    fn default() -> Self {
        Self {
            log_n: 15,
            r: 8,
            p: 1,
        }
    }
}

impl KdfParams {
    /// Largest memory a key file may ask scrypt for (128 · r · N bytes).
    pub const MAX_MEMORY: u64 = 1 << 30;

    fn check(&self) -> Result<(), String> {
        let memory = 128u64
            .checked_mul(u64::from(self.r))
            .and_then(|m| m.checked_mul(1u64.checked_shl(u32::from(self.log_n))?));
        if self.log_n == 0 || self.log_n > 24 || self.r == 0 || self.p == 0 || self.p > 16 {
            return Err(format!("scrypt parameters out of range: {self:?}"));
        }
        match memory {
            Some(m) if m <= Self::MAX_MEMORY => Ok(()),
            _ => Err(format!("scrypt parameters need more than 1 GiB: {self:?}")),
        }
    }

    fn derive(&self, passphrase: &[u8], salt: &[u8; 32]) -> Result<[u8; KEYNUM_LEN], String> {
        self.check()?;
        let params =
            scrypt::Params::new(self.log_n, self.r, self.p).map_err(|e| format!("scrypt: {e}"))?;
        let mut out = [0u8; KEYNUM_LEN];
        scrypt::scrypt(passphrase, salt, &params, &mut out).map_err(|e| format!("scrypt: {e}"))?;
        Ok(out)
    }
}

/// An Ed25519 secret key with its public key.
pub struct SecretKey {
    pair: Keypair,
    public: PublicKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.public.id)
    }
}

impl SecretKey {
    /// A new random key from the system's random source.
    pub fn generate() -> Result<Self> {
        Self::from_pair(Keypair::generate()?)
    }

    /// A key from a 32-byte seed (tests, deterministic fixtures).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self> {
        Self::from_pair(Keypair::from_seed(seed))
    }

    fn from_pair(pair: Keypair) -> Result<Self> {
        let public = PublicKey::from_bytes(pair.public()).map_err(SigningError::Invalid)?;
        Ok(Self { pair, public })
    }

    /// The matching public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The key id of the public key.
    pub fn key_id(&self) -> KeyId {
        self.public.id
    }

    pub(super) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.pair.sign(message)
    }

    fn checksum(&self, seed: &[u8; 32]) -> [u8; 32] {
        sha256(&[
            CHECKSUM_DOMAIN,
            &ALG_ED25519,
            &self.public.id.0,
            seed,
            &self.public.bytes,
        ])
    }

    /// The secret key file text, encrypted when a passphrase is given.
    pub fn to_text(&self, passphrase: Option<&[u8]>, params: KdfParams) -> Result<String> {
        let mut seed = self.pair.seed();
        let mut keynum = [0u8; KEYNUM_LEN];
        keynum[..8].copy_from_slice(&self.public.id.0);
        keynum[8..40].copy_from_slice(&seed);
        keynum[40..72].copy_from_slice(&self.public.bytes);
        keynum[72..].copy_from_slice(&self.checksum(&seed));
        crypto::wipe(&mut seed);
        let mut raw = Vec::with_capacity(SECRET_LEN);
        raw.extend_from_slice(&ALG_ED25519);
        match passphrase {
            Some(pass) => {
                let salt = crypto::random::<32>()?;
                let mut stream = params.derive(pass, &salt).map_err(SigningError::Invalid)?;
                for (k, s) in keynum.iter_mut().zip(stream.iter()) {
                    *k ^= s;
                }
                crypto::wipe(&mut stream);
                raw.extend_from_slice(&KDF_SCRYPT);
                raw.extend_from_slice(&CHECKSUM_SHA256);
                raw.extend_from_slice(&salt);
                raw.extend_from_slice(&u64::from(params.log_n).to_le_bytes());
                raw.extend_from_slice(&params.r.to_le_bytes());
                raw.extend_from_slice(&params.p.to_le_bytes());
            }
            None => {
                raw.extend_from_slice(&KDF_NONE);
                raw.extend_from_slice(&CHECKSUM_SHA256);
                raw.extend_from_slice(&[0u8; 32 + 16]);
            }
        }
        raw.extend_from_slice(&keynum);
        crypto::wipe(&mut keynum);
        let state = if passphrase.is_some() {
            "encrypted with scrypt"
        } else {
            "not encrypted"
        };
        let text = armor(
            &format!("expertui secret key {} ({state})", self.public.id),
            &raw,
        );
        crypto::wipe(&mut raw);
        Ok(text)
    }

    /// Parses a secret key file. An encrypted key needs its passphrase; a
    /// wrong one fails the checksum ([`SigningError::WrongPassphrase`]).
    pub fn from_text(text: &str, passphrase: Option<&[u8]>) -> Result<Self> {
        let bad = |reason: String| SigningError::Invalid(format!("secret key: {reason}"));
        let mut lines = unarmor(text).map_err(bad)?;
        let raw = &mut lines[0];
        if raw.len() != SECRET_LEN {
            crypto::wipe(raw);
            return Err(bad(format!("{} bytes, expected {SECRET_LEN}", raw.len())));
        }
        let result = Self::from_raw(raw, passphrase);
        crypto::wipe(raw);
        result
    }

    fn from_raw(raw: &[u8], passphrase: Option<&[u8]>) -> Result<Self> {
        let bad = |reason: &str| SigningError::Invalid(format!("secret key: {reason}"));
        let short = |_| bad("truncated");
        let mut c = Cursor::new(raw);
        if c.array::<2>().map_err(short)? != ALG_ED25519 {
            return Err(bad("not an Ed25519 key"));
        }
        let kdf = c.array::<2>().map_err(short)?;
        if c.array::<2>().map_err(short)? != CHECKSUM_SHA256 {
            return Err(bad("unknown checksum algorithm"));
        }
        let salt: [u8; 32] = c.array().map_err(short)?;
        let log_n = c.u64().map_err(short)?;
        let r = c.u32().map_err(short)?;
        let p = c.u32().map_err(short)?;
        let mut keynum: [u8; KEYNUM_LEN] = c.array().map_err(short)?;
        let encrypted = match kdf {
            KDF_SCRYPT => true,
            KDF_NONE => false,
            _ => return Err(bad("unknown key derivation algorithm")),
        };
        if encrypted {
            let Some(pass) = passphrase else {
                crypto::wipe(&mut keynum);
                return Err(SigningError::PassphraseRequired);
            };
            let params = KdfParams {
                log_n: u8::try_from(log_n).unwrap_or(u8::MAX),
                r,
                p,
            };
            let mut stream = params.derive(pass, &salt).map_err(SigningError::Invalid)?;
            for (k, s) in keynum.iter_mut().zip(stream.iter()) {
                *k ^= s;
            }
            crypto::wipe(&mut stream);
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&keynum[8..40]);
        let key = Self::from_seed(&seed);
        let ok = key.as_ref().is_ok_and(|key| {
            keynum[..8] == key.public.id.0
                && keynum[40..72] == key.public.bytes
                && keynum[72..] == key.checksum(&seed)
        });
        crypto::wipe(&mut seed);
        crypto::wipe(&mut keynum);
        match (ok, encrypted) {
            (true, _) => key,
            (false, true) => Err(SigningError::WrongPassphrase),
            (false, false) => Err(bad("checksum mismatch: the file is damaged")),
        }
    }

    /// Loads a secret key file. Call [`permission_warning`] too: a key file
    /// others can read should be reported.
    pub fn load(path: &Path, passphrase: Option<&[u8]>) -> Result<Self> {
        let text = read_limited(path, KEY_FILE_LIMIT).map_err(|e| SigningError::io(path, e))?;
        Self::from_text(&text, passphrase).map_err(|e| match e {
            SigningError::Invalid(reason) => SigningError::BadKeyFile {
                path: path.to_path_buf(),
                what: "secret key file",
                reason,
            },
            e => e,
        })
    }

    /// Writes the secret key file with mode 0600 (temp file in the same
    /// folder, fsync, rename). Refuses to replace an existing file unless
    /// `overwrite`.
    pub fn save(
        &self,
        path: &Path,
        passphrase: Option<&[u8]>,
        params: KdfParams,
        overwrite: bool,
    ) -> Result<()> {
        let text = self.to_text(passphrase, params)?;
        write_private(path, text.as_bytes(), overwrite)
    }
}

/// Writes `bytes` to `path` readable by the owner only.
fn write_private(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    let io = |e| SigningError::io(path, e);
    crate::format::atomic::refuse_special_target(path)
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // tempfile creates the file with mode 0600 on Unix.
    let mut temp = tempfile::Builder::new()
        .prefix(".expertui-key.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| SigningError::io(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    temp.write_all(bytes).map_err(io)?;
    temp.as_file().sync_all().map_err(io)?;
    if overwrite {
        temp.persist(path).map_err(|e| io(e.error))?;
    } else {
        temp.persist_noclobber(path).map_err(|e| io(e.error))?;
    }
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SigningError::io(dir, e))?;
    Ok(())
}

/// A warning when a secret key file can be read or written by group or
/// others (Unix mode bits 0o077), else `None`.
pub fn permission_warning(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Some(format!(
                "secret key {} is accessible by group or others (mode {mode:04o}); run: chmod 600 {}",
                path.display(),
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        log_n: 4,
        r: 8,
        p: 1,
    };

    #[test]
    fn public_key_text_round_trip() {
        let key = SecretKey::from_seed(&[7; 32]).unwrap();
        let text = key.public().to_text();
        assert!(text.starts_with("untrusted comment: expertui public key "));
        let back = PublicKey::from_text(&text).unwrap();
        assert_eq!(&back, key.public());
        // minisign layout: "Ed" ‖ key id ‖ key = 42 bytes = 56 base64 chars.
        assert_eq!(text.lines().nth(1).unwrap().len(), 56);
    }

    #[test]
    fn public_key_with_wrong_id_is_refused() {
        let key = SecretKey::from_seed(&[7; 32]).unwrap();
        let mut raw = b"Ed".to_vec();
        raw.extend_from_slice(&[0; 8]);
        raw.extend_from_slice(key.public().as_bytes());
        let text = armor("x", &raw);
        assert!(PublicKey::from_text(&text).unwrap_err().contains("key id"));
    }

    #[test]
    fn secret_key_round_trips_plain_and_encrypted() {
        let key = SecretKey::generate().unwrap();
        let plain = key.to_text(None, FAST).unwrap();
        assert_eq!(
            SecretKey::from_text(&plain, None).unwrap().key_id(),
            key.key_id()
        );
        let locked = key.to_text(Some(b"hunter2"), FAST).unwrap();
        assert!(matches!(
            SecretKey::from_text(&locked, None),
            Err(SigningError::PassphraseRequired)
        ));
        assert!(matches!(
            SecretKey::from_text(&locked, Some(b"hunter3")),
            Err(SigningError::WrongPassphrase)
        ));
        let back = SecretKey::from_text(&locked, Some(b"hunter2")).unwrap();
        assert_eq!(back.public(), key.public());
        assert_eq!(back.sign(b"m"), key.sign(b"m"));
    }

    #[test]
    fn hostile_kdf_parameters_are_refused() {
        let huge = KdfParams {
            log_n: 40,
            r: 8,
            p: 1,
        };
        assert!(huge.check().is_err());
        let big = KdfParams {
            log_n: 24,
            r: 8,
            p: 1,
        };
        assert!(big.check().is_err());
        assert!(KdfParams::default().check().is_ok());
    }

    #[test]
    fn invalid_public_keys_are_refused() {
        // The identity point has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(PublicKey::from_bytes(identity).is_err());
    }
}
