//! `package ADAPTER_DIR -o OUT.expert`: PEFT output (plus manifest, grammar,
//! licence, README) into an expert, binary or legacy tar.gz.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::progress::bytes_bar;
use super::{print_json, Failure};
use crate::format::layout::{SectionType, GPU_ALIGNMENT};
use crate::format::legacy;
use crate::format::package::{ExpertContents, PackageError, PackageOptions, TensorCodec};
use crate::validation::WeightsDigest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Binary,
    #[value(name = "tar.gz")]
    TarGz,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
    Bf16,
}

impl DtypeArg {
    fn dtype(self) -> safetensors::Dtype {
        match self {
            Self::F32 => safetensors::Dtype::F32,
            Self::F16 => safetensors::Dtype::F16,
            Self::Bf16 => safetensors::Dtype::BF16,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder with adapter_config.json and adapter_model.safetensors.
    pub adapter_dir: PathBuf,
    /// manifest.json to package (instead of one in ADAPTER_DIR, or a minimal
    /// one made from adapter_config.json). Unknown keys are kept; empty
    /// size_bytes / sha256 of the adapter are filled in.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// GBNF grammar, stored verbatim (problems llama.cpp would refuse are warnings).
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<PathBuf>,
    /// Licence text, stored as the License section.
    #[arg(long, value_name = "FILE")]
    pub license: Option<PathBuf>,
    /// README (Markdown), stored as the Docs section.
    #[arg(long, value_name = "FILE")]
    pub readme: Option<PathBuf>,
    /// Base model folder or safetensors file to check shapes and hashes against.
    #[arg(long)]
    pub base_model: Option<PathBuf>,
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value = "binary")]
    pub format: OutputFormat,
    /// zstd level for compressed sections.
    #[arg(long, default_value_t = crate::format::writer::DEFAULT_ZSTD_LEVEL)]
    pub compression_level: i32,
    /// Codec of tensor sections.
    #[arg(long, value_enum, default_value = "none")]
    pub codec: TensorCodec,
    /// Convert float tensors (exact when widening, round-to-nearest-even when narrowing).
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Align sections to 256 bytes (GPU DMA) instead of 64.
    #[arg(long)]
    pub align_256: bool,
    /// Do not write OUT.sha256.
    #[arg(long)]
    pub no_sidecar: bool,
    /// Sign the expert with this secret key after packaging (like `sign`).
    #[arg(long, value_name = "SECRET_KEY")]
    pub sign: Option<PathBuf>,
    /// Certificate file for the signing key (with --sign); repeatable.
    #[arg(long, value_name = "CERT", requires = "sign")]
    pub cert: Vec<PathBuf>,
    /// Environment variable holding the signing key's passphrase (with --sign).
    #[arg(long, value_name = "VAR", requires = "sign")]
    pub passphrase_env: Option<String>,
    /// Refuse (exit 3, nothing written) when a check finds a warning
    /// (grammar, manifest ↔ adapter).
    #[arg(long)]
    pub strict: bool,
    /// Also pack the expert as the legacy tar.gz in memory and print its
    /// size beside the binary's (costs a gzip of everything: off by default).
    #[arg(long)]
    pub compare_legacy: bool,
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    crate::format::reader::check_input_file(path)?;
    std::fs::read(path).map_err(|e| Failure::error(format!("{}: {e}", path.display())))
}

/// Reads the adapter folder and the extra files named on the command line.
fn gather(args: &Args) -> Result<ExpertContents, Failure> {
    let mut contents = ExpertContents::from_adapter_dir(&args.adapter_dir)?;
    if let Some(path) = &args.manifest {
        contents.manifest = read(path)?;
        // Files the manifest names (router embeddings) sit beside it.
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        contents.add_router_embeddings(dir)?;
    }
    let extras = [
        (&args.grammar, SectionType::Grammar, "grammar.gbnf"),
        (&args.license, SectionType::License, "LICENSE"),
        (&args.readme, SectionType::Docs, "README.md"),
    ];
    for (path, kind, default_name) in extras {
        if let Some(path) = path {
            let name = path.file_name().map_or(default_name.to_string(), |n| {
                n.to_string_lossy().into_owned()
            });
            contents.set_file(kind, &name, read(path)?);
        }
    }
    Ok(contents)
}

/// Digest of the adapter weights as they will be packaged (what
/// `convert --to peft` gives back), when it can be had cheaply.
fn packaged_weights(
    contents: &ExpertContents,
    dtype: Option<safetensors::Dtype>,
    dir: &Path,
) -> Option<WeightsDigest> {
    let adapter = contents.adapter.as_ref()?;
    let dtype_changed = dtype.is_some();
    if adapter.tensor_bytes() <= COMPARE_LIMIT {
        let mut adapter = adapter.clone();
        if let Some(dtype) = dtype {
            adapter.convert_dtype(dtype).ok()?;
        }
        let only_weights = ExpertContents {
            manifest: Vec::new(),
            adapter: Some(adapter),
            files: Vec::new(),
            carried: Vec::new(),
        };
        return only_weights
            .adapter_weights()
            .ok()
            .flatten()
            .map(|w| WeightsDigest::of(&w));
    }
    // Too large to re-encode in memory: without a dtype change the packaged
    // weights are PEFT's file byte for byte; hash it as a stream.
    (!dtype_changed)
        .then(|| WeightsDigest::of_file(&dir.join(crate::format::package::ADAPTER_WEIGHTS)).ok())
        .flatten()
}

pub fn run(args: Args, json_out: bool) -> Result<(), Failure> {
    let dtype = args.dtype.map(DtypeArg::dtype);
    // Load the signing key first: a wrong passphrase should not cost a packaging run.
    let signing = match &args.sign {
        Some(_) if args.format == OutputFormat::TarGz => {
            return Err(Failure::error("--sign needs --format binary"))
        }
        Some(key) => Some((
            super::keys::load_secret(key, args.passphrase_env.as_deref())?,
            super::keys::load_certificates(&args.cert)?,
        )),
        None => None,
    };
    let mut contents = gather(&args)?;
    let weights = packaged_weights(&contents, dtype, &args.adapter_dir);
    let findings =
        super::checks::check_before_writing(&mut contents, weights, true, args.strict, false)?;
    if let Some(base) = &args.base_model {
        let report =
            crate::format::basecheck::check_against_base(&contents, base).map_err(Failure::from)?;
        if !report.is_empty() {
            return Err(Failure::invalid(format!(
                "base model mismatch:\n  {}",
                report.join("\n  ")
            )));
        }
    }
    let input_size = contents.input_bytes();
    let (output_size, legacy_size) = match args.format {
        OutputFormat::TarGz => {
            if let Some(dtype) = dtype {
                contents.convert_dtype(dtype)?;
            }
            let files = legacy_files(&contents)?;
            legacy::write_legacy(&files, &args.output).map_err(Failure::error)?;
            let size = file_size(&args.output)?;
            (size, None)
        }
        OutputFormat::Binary => {
            let options = PackageOptions {
                tensor_codec: args.codec,
                zstd_level: args.compression_level,
                dtype,
                alignment: if args.align_256 {
                    GPU_ALIGNMENT
                } else {
                    crate::format::layout::BASE_ALIGNMENT
                },
            };
            let bar = bytes_bar("packaging", json_out);
            bar.set_length(input_size);
            let summary = contents.write_binary(&args.output, &options, &mut |done, _| {
                bar.set_position(done)
            })?;
            bar.finish_and_clear();
            // The tar.gz comparison gzips everything in memory: only on
            // request, and only for experts that fit comfortably.
            let legacy_size =
                if args.compare_legacy && input_size <= COMPARE_LIMIT && dtype.is_none() {
                    let files = legacy_files(&contents)?;
                    Some(legacy::legacy_bytes(&files).map_err(Failure::error)?.len() as u64)
                } else {
                    None
                };
            (summary.file_size, legacy_size)
        }
    };
    let signed_by = match signing {
        Some((key, chain)) => {
            let summary = super::keys::sign_in_place(&args.output, &key, chain, String::new())?;
            Some(summary)
        }
        None => None,
    };
    let output_size = signed_by.as_ref().map_or(output_size, |s| s.file_size);
    if !args.no_sidecar {
        super::keys::write_sidecar(&args.output)?;
    }
    let ratio = input_size as f64 / output_size.max(1) as f64;
    if json_out {
        print_json(&json!({
            "output": args.output.display().to_string(),
            "format": match args.format { OutputFormat::Binary => "binary", OutputFormat::TarGz => "tar.gz" },
            "output_bytes": output_size,
            "input_bytes": input_size,
            "tar_gz_bytes": legacy_size,
            "compression_ratio": ratio,
            "sidecar": !args.no_sidecar,
            "signed_by": signed_by.as_ref().map(|s| s.key_id.to_string()),
            "findings": findings,
        }));
    } else {
        let versus = legacy_size.map_or(String::new(), |l| {
            format!(
                "; tar.gz packing {l} bytes, {:+.1}%",
                (output_size as f64 / l.max(1) as f64 - 1.0) * 100.0
            )
        });
        println!(
            "{}: {output_size} bytes (inputs {input_size} bytes, ratio {ratio:.3}{versus})",
            args.output.display()
        );
        if let Some(summary) = &signed_by {
            println!("{}: signed by {}", args.output.display(), summary.key_id);
        }
    }
    Ok(())
}

/// Inputs above this size skip the in-memory tar.gz size comparison.
const COMPARE_LIMIT: u64 = 256 << 20;

fn legacy_files(contents: &ExpertContents) -> Result<Vec<legacy::LegacyFile>, Failure> {
    Ok(contents
        .to_files()?
        .into_iter()
        .map(|(path, data)| legacy::LegacyFile::new(path, data))
        .collect())
}

fn file_size(path: &Path) -> Result<u64, Failure> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| Failure::error(format!("{}: {e}", path.display())))
}

impl From<legacy::LegacyError> for PackageError {
    fn from(e: legacy::LegacyError) -> Self {
        match e {
            // Environment problems, not bad input (exit code 1, not 3).
            legacy::LegacyError::DiskFull { path, source } => {
                PackageError::Format(crate::format::FormatError::DiskFull { path, source })
            }
            legacy::LegacyError::Io { path, source } => PackageError::Io {
                path: path.display().to_string(),
                source,
            },
            e => PackageError::Invalid(e.to_string()),
        }
    }
}
