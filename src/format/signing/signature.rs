//! The `signature` section and signing a file.
//!
//! Payload (little-endian), 210 + T bytes, stored uncompressed in a section of
//! type `signature` (11) named `signature`:
//! ```text
//!   0   4  magic "ESIG"
//!   4   2  version = 1
//!   6   2  algorithm "Ed" (Ed25519, RFC 8032 pure)
//!   8   8  key id of the signer
//!  16  32  signer's public key (its SHA-256 must start with the key id)
//!  48  32  signed digest D (see `digest`)
//!  80  64  signature    = Ed25519(sk, "expertui-file-signature-v1\0" ‖ key id ‖ D)
//! 144  64  global sig.  = Ed25519(sk, "expertui-global-signature-v1\0" ‖ signature ‖ trusted block)
//! 208   2  T = trusted block length (<= 2048)
//! 210   T  trusted block:
//!            timestamp u64 (Unix seconds, signer's clock)
//!            chain digest [32]: SHA-256 of the `certificates` section, or zeros
//!            signer   (u16 length ‖ UTF-8, <= 256)
//!            file     (u16 length ‖ UTF-8, <= 256): the file name when signed
//!            comment  (u16 length ‖ UTF-8, <= 1024)
//! ```
//! As in minisign, the global signature binds the trusted comment to the
//! signature, so neither can be swapped for another.

use std::path::{Path, PathBuf};

use zerocopy::little_endian::{U16, U32, U64};

use super::super::layout::{Carried, Codec, SectionType, TocEntry, NAME_CAPACITY, NO_LAYER};
use super::super::reader::ExpertReader;
use super::super::writer::{ExpertWriter, SectionSpec, WriterOptions};
use super::cert::{check_links, encode_chain, Certificate};
use super::digest::{digest_of, raw_entries, signing_digest, Prelude};
use super::encoding::{check_text, put_bytes16, sha256, Cursor};
use super::keys::{key_id_of, PublicKey, SecretKey, ALG_ED25519};
use super::{unix_now, KeyId, Result, SigningError, CERTIFICATE_SECTION, SIGNATURE_SECTION};

const MAGIC: [u8; 4] = *b"ESIG";
const VERSION: u16 = 1;
const FILE_DOMAIN: &[u8] = b"expertui-file-signature-v1\0";
const GLOBAL_DOMAIN: &[u8] = b"expertui-global-signature-v1\0";
/// Bytes before the trusted block.
pub const FIXED_LEN: usize = 210;
/// Longest trusted block.
pub const MAX_TRUSTED: usize = 2048;
/// Largest signature section a reader decodes.
pub const MAX_SIGNATURE_BYTES: u64 = (FIXED_LEN + MAX_TRUSTED) as u64;
/// Largest `certificates` section a reader decodes.
pub const MAX_CHAIN_BYTES: u64 = 8 * 1024;
const MAX_SIGNER: usize = 256;
const MAX_FILE: usize = 256;
const MAX_COMMENT: usize = 1024;

/// The signed metadata of a signature.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustedComment {
    pub timestamp: u64,
    /// SHA-256 of the `certificates` section, or zeros when there is none.
    pub chain_digest: [u8; 32],
    pub signer: String,
    pub file: String,
    pub comment: String,
}

impl TrustedComment {
    fn encode(&self) -> Result<Vec<u8>> {
        for (what, text, max) in [
            ("signer", &self.signer, MAX_SIGNER),
            ("file name", &self.file, MAX_FILE),
            ("comment", &self.comment, MAX_COMMENT),
        ] {
            check_text(what, text.as_bytes(), max).map_err(SigningError::Invalid)?;
        }
        let mut out = Vec::new();
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.extend_from_slice(&self.chain_digest);
        put_bytes16(&mut out, self.signer.as_bytes());
        put_bytes16(&mut out, self.file.as_bytes());
        put_bytes16(&mut out, self.comment.as_bytes());
        Ok(out)
    }

    fn parse(bytes: &[u8]) -> Result<Self> {
        let bad =
            |reason: String| SigningError::MalformedSignature(format!("trusted comment: {reason}"));
        let short = |_| bad("truncated".into());
        let mut c = Cursor::new(bytes);
        let timestamp = c.u64().map_err(short)?;
        let chain_digest = c.array().map_err(short)?;
        let signer = check_text("signer", c.bytes16().map_err(short)?, MAX_SIGNER).map_err(bad)?;
        let file = check_text("file name", c.bytes16().map_err(short)?, MAX_FILE).map_err(bad)?;
        let comment =
            check_text("comment", c.bytes16().map_err(short)?, MAX_COMMENT).map_err(bad)?;
        if c.remaining() != 0 {
            return Err(bad("trailing bytes".into()));
        }
        Ok(Self {
            timestamp,
            chain_digest,
            signer,
            file,
            comment,
        })
    }
}

/// A parsed signature section. Parsing checks the layout and that the key id
/// matches the embedded key; [`SignatureBlock::verify`] checks the signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureBlock {
    pub key_id: KeyId,
    pub public_key: PublicKey,
    /// The digest that was signed.
    pub digest: [u8; 32],
    pub trusted: TrustedComment,
    signature: [u8; 64],
    global_signature: [u8; 64],
    trusted_bytes: Vec<u8>,
}

fn file_message(key_id: &KeyId, digest: &[u8; 32]) -> Vec<u8> {
    [FILE_DOMAIN, &key_id.0, digest].concat()
}

fn global_message(signature: &[u8; 64], trusted: &[u8]) -> Vec<u8> {
    [GLOBAL_DOMAIN, signature, trusted].concat()
}

impl SignatureBlock {
    /// Signs `digest` and the trusted comment with `key`.
    pub fn create(key: &SecretKey, digest: [u8; 32], trusted: TrustedComment) -> Result<Self> {
        let trusted_bytes = trusted.encode()?;
        if trusted_bytes.len() > MAX_TRUSTED {
            return Err(SigningError::Invalid("trusted comment too long".into()));
        }
        let signature = key.sign(&file_message(&key.key_id(), &digest));
        let global_signature = key.sign(&global_message(&signature, &trusted_bytes));
        Ok(Self {
            key_id: key.key_id(),
            public_key: *key.public(),
            digest,
            trusted,
            signature,
            global_signature,
            trusted_bytes,
        })
    }

    /// The section payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + self.trusted_bytes.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&ALG_ED25519);
        out.extend_from_slice(&self.key_id.0);
        out.extend_from_slice(self.public_key.as_bytes());
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&self.global_signature);
        put_bytes16(&mut out, &self.trusted_bytes);
        out
    }

    /// Parses a section payload, with bounds checks on every field.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let have = bytes.len() as u64;
        let truncated = |s: super::encoding::Short| SigningError::TruncatedSignature {
            needed: s.needed,
            have: s.have,
        };
        if bytes.len() < FIXED_LEN {
            return Err(SigningError::TruncatedSignature {
                needed: FIXED_LEN as u64,
                have,
            });
        }
        let mut c = Cursor::new(bytes);
        if c.array::<4>().map_err(truncated)? != MAGIC {
            return Err(SigningError::MalformedSignature("bad magic".into()));
        }
        let version = c.u16().map_err(truncated)?;
        if version != VERSION {
            return Err(SigningError::MalformedSignature(format!(
                "unsupported version {version}"
            )));
        }
        let alg = c.array::<2>().map_err(truncated)?;
        if alg != ALG_ED25519 {
            return Err(SigningError::UnsupportedAlgorithm(u16::from_le_bytes(alg)));
        }
        let key_id = KeyId(c.array().map_err(truncated)?);
        let public_key = PublicKey::from_bytes(c.array().map_err(truncated)?)
            .map_err(SigningError::MalformedSignature)?;
        if key_id_of(public_key.as_bytes()) != key_id {
            return Err(SigningError::MalformedSignature(
                "key id does not match the embedded public key".into(),
            ));
        }
        let digest = c.array().map_err(truncated)?;
        let signature = c.array().map_err(truncated)?;
        let global_signature = c.array().map_err(truncated)?;
        let trusted_len = usize::from(c.u16().map_err(truncated)?);
        if trusted_len > MAX_TRUSTED {
            return Err(SigningError::MalformedSignature(format!(
                "trusted comment of {trusted_len} bytes, at most {MAX_TRUSTED}"
            )));
        }
        let trusted_bytes = c.take(trusted_len).map_err(truncated)?.to_vec();
        if c.remaining() != 0 {
            return Err(SigningError::MalformedSignature(format!(
                "{} trailing bytes",
                c.remaining()
            )));
        }
        let trusted = TrustedComment::parse(&trusted_bytes)?;
        Ok(Self {
            key_id,
            public_key,
            digest,
            trusted,
            signature,
            global_signature,
            trusted_bytes,
        })
    }

    /// Checks both signatures with `key` (the embedded key, or a pinned or
    /// trusted one with the same id).
    pub fn verify(&self, key: &PublicKey) -> Result<()> {
        if key.key_id() != self.key_id {
            return Err(SigningError::WrongKey {
                expected: key.key_id(),
                found: self.key_id,
            });
        }
        if !key.verify(&file_message(&self.key_id, &self.digest), &self.signature) {
            return Err(SigningError::BadSignature {
                what: "file signature",
            });
        }
        if !key.verify(
            &global_message(&self.signature, &self.trusted_bytes),
            &self.global_signature,
        ) {
            return Err(SigningError::BadSignature {
                what: "trusted comment signature",
            });
        }
        Ok(())
    }
}

/// The signature section of a file and its TOC index, or `None` when the
/// file is unsigned. Reads only that section (bounded in size).
pub fn read_signature(reader: &ExpertReader) -> Result<Option<(usize, SignatureBlock)>> {
    let sections: Vec<_> = reader.find_all(SectionType::Signature).collect();
    let info = match sections.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        many => return Err(SigningError::MultipleSignatures(many.len())),
    };
    if info.name != SIGNATURE_SECTION {
        return Err(SigningError::MalformedSignature(format!(
            "signature section is named {:?}, expected {SIGNATURE_SECTION:?}",
            info.name
        )));
    }
    // The signature's own entry is outside the digest: allow only the one
    // form the writer produces, so none of its bytes can vary.
    let canonical = info.codec == Some(Codec::None)
        && info.flags == 0
        && info.layer.is_none()
        && raw_entries(reader)
            .get(info.index)
            .is_some_and(|(e, ext)| e.reserved.get() == 0 && ext.iter().all(|&b| b == 0));
    if !canonical {
        return Err(SigningError::MalformedSignature(
            "the signature section must be stored uncompressed, with no flags, layer or codec parameter".into(),
        ));
    }
    if info.raw_len > MAX_SIGNATURE_BYTES {
        return Err(SigningError::MalformedSignature(format!(
            "{} bytes, at most {MAX_SIGNATURE_BYTES}",
            info.raw_len
        )));
    }
    let bytes = reader.section(info.index)?;
    Ok(Some((info.index, SignatureBlock::parse(&bytes)?)))
}

/// The certificate chain a signature refers to (empty when none).
pub fn read_chain(reader: &ExpertReader, block: &SignatureBlock) -> Result<Vec<Certificate>> {
    let referenced = block.trusted.chain_digest != [0; 32];
    let section = reader.find(SectionType::Certificate, CERTIFICATE_SECTION);
    let info = match (referenced, section) {
        (false, None) => return Ok(Vec::new()),
        (false, Some(_)) => {
            return Err(SigningError::MalformedSignature(
                "the file has a certificate chain the signature does not refer to".into(),
            ))
        }
        (true, None) => {
            return Err(SigningError::MalformedSignature(
                "the signature refers to a certificate chain the file does not have".into(),
            ))
        }
        (true, Some(info)) => info,
    };
    if info.sha256 != block.trusted.chain_digest {
        return Err(SigningError::MalformedSignature(
            "the certificate chain is not the one the signature refers to".into(),
        ));
    }
    if info.raw_len > MAX_CHAIN_BYTES {
        return Err(SigningError::MalformedCertificate(format!(
            "chain section of {} bytes, at most {MAX_CHAIN_BYTES}",
            info.raw_len
        )));
    }
    let bytes = reader.section(info.index)?;
    super::cert::parse_chain(&bytes)
}

/// How to sign.
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// Certificate chain of the signing key (its certificate first); stored
    /// in a `certificates` section. Empty: no chain.
    pub chain: Vec<Certificate>,
    /// Signer name for the trusted comment (default: the certificate's
    /// subject name, else `key <id>`).
    pub signer: Option<String>,
    /// Free text stored in the signed metadata.
    pub comment: String,
    /// Signing time (default: now).
    pub timestamp: Option<u64>,
}

/// What [`sign_file`] wrote.
#[derive(Debug, Clone)]
pub struct SignSummary {
    /// The signed file.
    pub path: PathBuf,
    /// The signing key's id.
    pub key_id: KeyId,
    /// The signing digest that was signed.
    pub digest: [u8; 32],
    /// Size of the signed file.
    pub file_size: u64,
    /// Whether an old signature was replaced.
    pub replaced: bool,
    /// Sections copied byte for byte.
    pub sections_copied: usize,
    /// Certificates stored with the signature.
    pub chain_len: usize,
}

fn section_name(name: &str) -> [u8; NAME_CAPACITY] {
    let mut out = [0u8; NAME_CAPACITY];
    out[..name.len()].copy_from_slice(name.as_bytes());
    out
}

/// Signs `input` into `output` (which may be the same path): every section
/// but old `signature` and `certificate` sections is copied byte for byte,
/// then the chain (if any) and the new signature section are appended. The
/// input must pass full verification first; the output replaces its path
/// atomically.
pub fn sign_file(
    input: &Path,
    output: &Path,
    key: &SecretKey,
    options: &SignOptions,
) -> Result<SignSummary> {
    let reader = ExpertReader::open(input)?;
    reader.verify_all()?;
    let timestamp = options.timestamp.unwrap_or_else(unix_now);
    let raw = raw_entries(&reader);
    let mut kept: Vec<(usize, TocEntry)> = Vec::new();
    let mut replaced = false;
    for (info, (entry, _)) in reader.sections().iter().zip(&raw) {
        match info.kind.carried() {
            // The old signature and its chain give way to the new ones.
            Carried::Replaced => replaced |= info.kind == SectionType::Signature,
            Carried::Manifest
            | Carried::AdapterConfig
            | Carried::AdapterTensors
            | Carried::File
            | Carried::Verbatim
            | Carried::Derived
            | Carried::Skipped => {
                let copyable = Codec::from_parts(entry.codec, entry.reserved.get())
                    .is_some_and(|c| c.reserved_bits() == entry.reserved.get());
                if !copyable {
                    return Err(SigningError::Invalid(format!(
                        "section {} ({}) has a codec or codec parameter this build cannot copy verbatim; re-package the file first",
                        info.index, info.name
                    )));
                }
                kept.push((info.index, *entry));
            }
        }
    }
    let chain_payload = if options.chain.is_empty() {
        None
    } else {
        check_links(&options.chain, key.public())?;
        for cert in &options.chain {
            cert.check_validity(timestamp)?;
        }
        Some(encode_chain(&options.chain)?)
    };
    let mut covered: Vec<TocEntry> = kept.iter().map(|(_, e)| *e).collect();
    let mut chain_digest = [0u8; 32];
    if let Some(payload) = &chain_payload {
        chain_digest = sha256(&[payload]);
        let len = payload.len() as u64;
        covered.push(TocEntry {
            section_id: U32::new(0),
            section_type: U16::new(SectionType::Certificate.code()),
            codec: Codec::None.code(),
            flags: 0,
            layer: U32::new(NO_LAYER),
            reserved: U32::new(0),
            offset: U64::new(0),
            stored_len: U64::new(len),
            raw_len: U64::new(len),
            sha256: chain_digest,
            name: section_name(CERTIFICATE_SECTION),
        });
    }
    let digest = digest_of(&Prelude::of_writer(), covered.iter().map(|e| (e, &[][..])));
    let signer = options.signer.clone().unwrap_or_else(|| {
        options
            .chain
            .first()
            .map_or_else(|| format!("key {}", key.key_id()), |c| c.name.clone())
    });
    let file = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let trusted = TrustedComment {
        timestamp,
        chain_digest,
        signer,
        file: file
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_FILE / 4)
            .collect(),
        comment: options.comment.clone(),
    };
    let block = SignatureBlock::create(key, digest, trusted)?;

    let alignment = u64::from(reader.header().section_alignment.get());
    let mut writer = ExpertWriter::create(
        output,
        WriterOptions {
            alignment,
            ..Default::default()
        },
    )?;
    for (index, _) in &kept {
        writer.copy_section(&reader, *index)?;
    }
    if let Some(payload) = &chain_payload {
        writer.add_section(
            SectionSpec::new(SectionType::Certificate, CERTIFICATE_SECTION),
            payload,
        )?;
    }
    writer.add_section(
        SectionSpec::new(SectionType::Signature, SIGNATURE_SECTION),
        &block.to_bytes(),
    )?;
    let summary = writer.finish()?;
    drop(reader);
    // The digest was computed from the entries we meant to write; check that
    // the file on disk has it (O(TOC)).
    let written = ExpertReader::open(output)?;
    if signing_digest(&written) != digest {
        return Err(SigningError::Invalid(format!(
            "internal error: {} does not have the digest that was signed",
            output.display()
        )));
    }
    Ok(SignSummary {
        path: output.to_path_buf(),
        key_id: key.key_id(),
        digest,
        file_size: summary.file_size,
        replaced,
        sections_copied: kept.len(),
        chain_len: options.chain.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> (SecretKey, SignatureBlock) {
        let key = SecretKey::from_seed(&[9; 32]).unwrap();
        let trusted = TrustedComment {
            timestamp: 1_700_000_000,
            chain_digest: [0; 32],
            signer: "ACME".into(),
            file: "a.expert".into(),
            comment: "release 1".into(),
        };
        let block = SignatureBlock::create(&key, [5; 32], trusted).unwrap();
        (key, block)
    }

    #[test]
    fn payload_round_trip() {
        let (key, block) = block();
        let bytes = block.to_bytes();
        assert_eq!(&bytes[..4], b"ESIG");
        let back = SignatureBlock::parse(&bytes).unwrap();
        assert_eq!(back, block);
        back.verify(key.public()).unwrap();
    }

    #[test]
    fn every_byte_is_checked() {
        let (key, block) = block();
        let bytes = block.to_bytes();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                let accepted = SignatureBlock::parse(&bad)
                    .is_ok_and(|b| b.verify(key.public()).is_ok() && b.digest == block.digest);
                assert!(!accepted, "byte {i} bit {bit:#x}");
            }
        }
    }

    #[test]
    fn truncation_is_typed() {
        let (_, block) = block();
        let bytes = block.to_bytes();
        for n in 0..bytes.len() {
            assert!(
                matches!(
                    SignatureBlock::parse(&bytes[..n]),
                    Err(SigningError::TruncatedSignature { .. })
                ),
                "length {n}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            SignatureBlock::parse(&long),
            Err(SigningError::MalformedSignature(_))
        ));
    }

    #[test]
    fn other_algorithm_is_typed() {
        let (_, block) = block();
        let mut bytes = block.to_bytes();
        bytes[6..8].copy_from_slice(b"ED");
        assert!(matches!(
            SignatureBlock::parse(&bytes),
            Err(SigningError::UnsupportedAlgorithm(_))
        ));
    }
}
