//! `revoke --key ROOT_SECRET [--key-id ID]... [--serial N]... -o LIST`: a
//! revocation list signed by a root key.

use std::path::PathBuf;

use serde_json::json;

use super::keys::load_secret;
use super::{print_json, Failure};
use crate::format::signing::{unix_now, KeyId, PublicKey, RevocationList};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Secret key of the issuer (the root whose trust is withdrawn).
    #[arg(long, value_name = "SECRET_KEY")]
    pub key: PathBuf,
    /// Key to revoke: 16 hex digits, or a .pub file. Repeatable.
    #[arg(long = "key-id", value_name = "ID|PUB")]
    pub key_ids: Vec<String>,
    /// Serial of a certificate issued by this key to revoke. Repeatable.
    #[arg(long = "serial", value_name = "N")]
    pub serials: Vec<u64>,
    /// Keep the entries of an earlier list of the same issuer.
    #[arg(long, value_name = "LIST")]
    pub from: Option<PathBuf>,
    #[arg(short, long)]
    pub output: PathBuf,
    /// Environment variable holding the key's passphrase.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
}

fn parse_key_id(text: &str) -> Result<KeyId, Failure> {
    if let Some(id) = KeyId::parse(text) {
        return Ok(id);
    }
    let path = std::path::Path::new(text);
    if path.is_file() {
        return Ok(PublicKey::load(path).map_err(Failure::error)?.key_id());
    }
    Err(Failure::error(format!(
        "--key-id {text}: neither 16 hex digits nor a public key file"
    )))
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    let key = load_secret(&args.key, args.passphrase_env.as_deref())?;
    let mut keys = args
        .key_ids
        .iter()
        .map(|t| parse_key_id(t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut serials = args.serials.clone();
    if let Some(path) = &args.from {
        let old = RevocationList::load(path)
            .map_err(|e| Failure::error(format!("{}: {e}", path.display())))?;
        if old.issuer != key.key_id() || !old.verify_signature(key.public()) {
            return Err(Failure::error(format!(
                "--from {}: not a list signed by {}",
                path.display(),
                key.key_id()
            )));
        }
        keys.extend(old.keys);
        serials.extend(old.serials);
    }
    if keys.is_empty() && serials.is_empty() {
        eprintln!("note: the list revokes nothing");
    }
    let list = RevocationList::create(&key, keys, serials, unix_now()).map_err(Failure::error)?;
    list.save(&args.output).map_err(Failure::error)?;
    if json_out {
        print_json(&json!({
            "output": args.output.display().to_string(),
            "issuer_key_id": list.issuer.to_string(),
            "issued_at": list.issued_at,
            "revoked_keys": list.keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            "revoked_serials": list.serials,
        }));
    } else {
        println!(
            "{}: revocation list by {}: {} key(s), {} certificate(s)",
            args.output.display(),
            list.issuer,
            list.keys.len(),
            list.serials.len()
        );
    }
    Ok(())
}
