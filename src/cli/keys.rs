//! Key, certificate and sidecar helpers shared by the verbs that sign or
//! write signed files (`package --sign`, `sign`, `certify`, `revoke`,
//! `keygen`).

use std::path::{Path, PathBuf};

use super::Failure;
use crate::format::signing::cert::load_chain;
use crate::format::signing::keys::permission_warning;
use crate::format::signing::{
    sign_file, Certificate, SecretKey, SignOptions, SignSummary, SigningError,
};

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

/// Rewrites the `.sha256` sidecar of `path` when there is one.
pub(super) fn refresh_sidecar(path: &Path) -> Result<(), Failure> {
    if crate::format::legacy::sidecar_path(path).exists() {
        write_sidecar(path)?;
    }
    Ok(())
}

/// Writes `OUT.sha256` in sha256sum format, as the old packager did.
pub fn write_sidecar(output: &Path) -> Result<(), Failure> {
    crate::format::legacy::write_sidecar(output).map_err(Failure::error)
}
