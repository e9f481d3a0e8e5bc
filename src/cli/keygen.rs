//! `keygen -o NAME`: a new Ed25519 key pair. The secret key goes to NAME
//! (mode 0600, optionally encrypted with a passphrase through scrypt), the
//! public key to NAME.pub; both are minisign-like text files.

use std::path::PathBuf;

use serde_json::json;

use super::keys::passphrase;
use super::{print_json, Failure};
use crate::format::signing::{KdfParams, SecretKey};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Secret key file to write; the public key goes to the same name plus `.pub`.
    #[arg(short, long, value_name = "NAME")]
    pub output: PathBuf,
    /// Encrypt the secret key with the passphrase held in this environment
    /// variable (scrypt, N = 2^15, r = 8, p = 1).
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
}

/// `NAME.pub` beside `NAME`.
pub fn public_path(secret: &std::path::Path) -> PathBuf {
    let mut name = secret.as_os_str().to_os_string();
    name.push(".pub");
    PathBuf::from(name)
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    let pass = passphrase(args.passphrase_env.as_deref())?;
    let public = public_path(&args.output);
    if !args.force {
        for path in [&args.output, &public] {
            if path.exists() {
                return Err(Failure::error(format!(
                    "{} exists; use --force to replace it",
                    path.display()
                )));
            }
        }
    }
    let key = SecretKey::generate()?;
    key.save(
        &args.output,
        pass.as_deref(),
        KdfParams::default(),
        args.force,
    )?;
    key.public().save(&public)?;
    if json_out {
        print_json(&json!({
            "secret_key": args.output.display().to_string(),
            "public_key": public.display().to_string(),
            "key_id": key.key_id().to_string(),
            "encrypted": pass.is_some(),
        }));
    } else {
        println!(
            "secret key: {} (mode 0600, {})",
            args.output.display(),
            if pass.is_some() {
                "encrypted"
            } else {
                "not encrypted"
            }
        );
        println!("public key: {}", public.display());
        println!("key id:     {}", key.key_id());
    }
    Ok(())
}
