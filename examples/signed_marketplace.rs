//! A publisher's flow for a marketplace: generate an Ed25519 key, package
//! and sign an expert, verify the signature against the publisher's public
//! key as a consumer would, and show that a file with one flipped byte is
//! refused.
//!
//! ```sh
//! cargo run --example signed_marketplace -- [ADAPTER_DIR] [OUT_DIR]
//! ```
//!
//! Defaults: the MiniLM LoRA r = 8 fixture and a temporary folder. The key
//! pair is written to OUT_DIR as `publisher.key` (mode 0600) and
//! `publisher.key.pub`.

use std::path::{Path, PathBuf};

use expertui::format::package::{ExpertContents, PackageOptions};
use expertui::format::signing::{
    sign_file, verify, KdfParams, Policy, PublicKey, SecretKey, SignOptions,
};
use expertui::format::ExpertReader;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let adapter_dir = args.next().map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm-lora-r8")
    });
    let temp;
    let out_dir = match args.next() {
        Some(dir) => PathBuf::from(dir),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&out_dir)?;

    // 1. The publisher's key pair (`expertui --headless keygen -o publisher.key`).
    let key = SecretKey::generate()?;
    let key_path = out_dir.join("publisher.key");
    let pub_path = out_dir.join("publisher.key.pub");
    key.save(&key_path, None, KdfParams::default(), true)?;
    key.public().save(&pub_path)?;
    println!(
        "key pair: {} and {} (key id {})",
        key_path.display(),
        pub_path.display(),
        key.key_id()
    );

    // 2. Package, then sign (`package` + `sign`). Signing re-verifies every
    //    section, then adds a `signature` section over a digest of the TOC.
    let contents = ExpertContents::from_adapter_dir(&adapter_dir)?;
    let unsigned = out_dir.join("expert.unsigned.expert");
    contents.write_binary(&unsigned, &PackageOptions::default(), &mut |_, _| {})?;
    let signed = out_dir.join("expert.expert");
    let options = SignOptions {
        signer: Some("Example Publisher".into()),
        comment: "published by examples/signed_marketplace.rs".into(),
        ..SignOptions::default()
    };
    let summary = sign_file(
        &unsigned,
        &signed,
        &SecretKey::load(&key_path, None)?,
        &options,
    )?;
    println!(
        "signed {}: {} bytes, key {}, digest {}…",
        signed.display(),
        summary.file_size,
        summary.key_id,
        &hex::encode(summary.digest)[..16]
    );

    // 3. The consumer trusts the publisher's public key only
    //    (`validate --trust publisher.key.pub --require-signature`).
    let mut policy = Policy::new();
    policy.trust(PublicKey::load(&pub_path)?);
    let reader = ExpertReader::open(&signed)?;
    let report = verify(&reader, &policy)?;
    println!("verified: {}", report.summary());
    drop(reader);

    // 4. One flipped byte in the last tensor section: the section digest no
    //    longer matches, so verification refuses the file before even
    //    looking at the signature.
    let mut bytes = std::fs::read(&signed)?;
    let target = {
        let reader = ExpertReader::open(&signed)?;
        let section = reader
            .sections()
            .iter()
            .rfind(|s| s.kind == expertui::format::SectionType::Tensors)
            .ok_or("no tensor section")?
            .clone();
        section.offset + section.stored_len / 2
    };
    bytes[target as usize] ^= 0x01;
    let tampered = out_dir.join("expert.tampered.expert");
    std::fs::write(&tampered, &bytes)?;
    println!(
        "flipped one bit at offset {target} into {}",
        tampered.display()
    );
    let refused = match ExpertReader::open(&tampered) {
        Err(e) => Some(e.to_string()),
        Ok(reader) => verify(&reader, &policy).err().map(|e| e.to_string()),
    };
    match refused {
        Some(reason) => println!("refused: {reason}"),
        None => return Err("the tampered file verified".into()),
    }
    Ok(())
}
