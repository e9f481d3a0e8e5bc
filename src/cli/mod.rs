//! Headless subcommands (clap). Data goes to stdout, progress and logs to
//! stderr; every verb takes `--json`. Exit codes: 0 success, 1 error,
//! 2 usage, 3 invalid or corrupt input.

pub(crate) mod bench;
mod checks;
mod convert;
mod extract;
mod fuse;
mod info;
mod keygen;
mod keys;
mod osd;
mod package;
mod policy;
mod progress;
mod report;
mod revoke;
mod sign;
mod validate;
mod validate_tree;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code: the input is invalid or corrupt.
pub const EXIT_INVALID: u8 = 3;
/// Exit code: any other error (I/O, bad arguments that parsed).
pub const EXIT_ERROR: u8 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "expertui",
    version,
    about = "Inspect, package, validate and convert .expert LLM adapter experts"
)]
pub struct Cli {
    /// Never start the terminal UI (for scripts).
    #[arg(long, global = true)]
    pub headless: bool,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Most bytes an input's compressed sections (or a legacy package's
    /// members) may decode to together; default max(64 MiB, 16 × the file
    /// size). Accepts K, M, G suffixes (powers of 1024).
    #[arg(long, global = true, value_name = "BYTES", value_parser = parse_bytes)]
    pub max_decoded: Option<u64>,
    /// Remote experts: allow plain http:// to hosts other than loopback.
    #[arg(long, global = true)]
    pub allow_http: bool,
    /// Remote experts: follow redirects to another host.
    #[arg(long, global = true)]
    pub allow_redirects: bool,
    /// Remote experts: do not read or fill the section cache.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Expert file to open (the embedded demo expert when absent).
    pub file: Option<PathBuf>,
    /// Trust policy for the file opened without a verb (TUI or overview):
    /// the overview says whether the signature passes it.
    #[command(flatten)]
    pub signature: policy::PolicyArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check structure, root digest, manifest and (optionally) every section digest.
    Validate(validate::Args),
    /// Turn a PEFT adapter folder into an expert.
    Package(package::Args),
    /// Convert between .expert v2, legacy tar.gz and PEFT folders.
    Convert(convert::Args),
    /// Write one section's decoded bytes to a file.
    Extract(extract::Args),
    /// Print the overview of an expert (the default without a verb).
    Info(info::Args),
    /// Merge an expert's adapter into base weights (safetensors out).
    Fuse(fuse::Args),
    /// Measure load, validation, streaming, transfer, fuse and memory figures.
    Bench(bench::Args),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
    /// OSD compression: analyze, compress, tune.
    #[command(subcommand)]
    Osd(osd::OsdCommand),
    /// Create an Ed25519 key pair for signing (NAME and NAME.pub).
    Keygen(keygen::Args),
    /// Sign an expert, replacing any earlier signature.
    Sign(sign::Args),
    /// Issue a certificate: an issuer key vouches for a publisher key.
    Certify(sign::CertifyArgs),
    /// Write a signed list of revoked keys and certificates.
    Revoke(revoke::Args),
}

/// `123`, `64K`, `256M`, `2G` (powers of 1024) as bytes.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 10),
        Some((i, 'm' | 'M')) => (&t[..i], 20),
        Some((i, 'g' | 'G')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count (e.g. 512M)"))?;
    if n == 0 {
        return Err("the budget must be above 0".into());
    }
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A failed verb: message plus exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
    /// The verb already printed its JSON report; print no second document.
    pub reported: bool,
}

impl Failure {
    pub fn invalid(message: impl ToString) -> Self {
        Self {
            code: EXIT_INVALID,
            message: message.to_string(),
            reported: false,
        }
    }
    pub fn error(message: impl ToString) -> Self {
        Self {
            code: EXIT_ERROR,
            message: message.to_string(),
            reported: false,
        }
    }
    /// Marks the failure as already reported in the verb's JSON output.
    pub fn reported(mut self) -> Self {
        self.reported = true;
        self
    }
}

impl From<crate::format::FormatError> for Failure {
    fn from(e: crate::format::FormatError) -> Self {
        if e.is_corruption() {
            Self::invalid(e)
        } else {
            Self::error(e)
        }
    }
}

impl From<crate::format::package::PackageError> for Failure {
    fn from(e: crate::format::package::PackageError) -> Self {
        use crate::format::package::PackageError;
        match e {
            PackageError::Format(e) => e.into(),
            e @ PackageError::Io { .. } => Self::error(e),
            e => Self::invalid(e),
        }
    }
}

/// Prints a JSON value on stdout.
pub(crate) fn print_json(value: &serde_json::Value) {
    println!("{}", crate::diagnostics::json_pretty(value));
}

/// Opens the terminal UI on a file (as far as it parses) or the demo expert.
fn open_tui(file: Option<PathBuf>, signature: &policy::PolicyArgs) -> Result<(), Failure> {
    let policy = signature.load()?;
    let remote = file.as_deref().and_then(crate::format::remote::url_of);
    let doc = match (&file, &remote) {
        (_, Some(url)) => open_remote_for_viewer(url)?,
        (Some(path), None) => crate::format::inspect::Inspected::open(path)?,
        (None, None) => crate::format::inspect::Inspected::demo(),
    };
    let policy = policy.requires_signature().then_some(policy);
    crate::app::run(doc, policy, remote).map_err(|e| Failure::error(format!("terminal: {e}")))
}

/// A remote expert for the viewer, opened on its header, TOC and text
/// sections (two requests): the overview and the section list show at
/// once, and the viewer fetches the rest in the background.
fn open_remote_for_viewer(url: &url::Url) -> Result<crate::format::inspect::Inspected, Failure> {
    let fetched =
        crate::format::remote::fetch(url, &crate::format::remote::Plan::Text, &mut |_, _| {})?;
    Ok(crate::format::inspect::Inspected::from_bytes(
        fetched.cost.url,
        fetched.bytes,
    ))
}

/// Entry point of the binary.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let json = cli.json;
    crate::format::reader::set_max_decoded(cli.max_decoded);
    crate::format::remote::configure(|s| {
        s.allow_http |= cli.allow_http;
        s.allow_redirects |= cli.allow_redirects;
        s.no_cache |= cli.no_cache;
    });
    let result = match cli.command {
        Some(Command::Validate(args)) => validate::run(args, json),
        Some(Command::Package(args)) => package::run(args, json),
        Some(Command::Convert(args)) => convert::run(args, json),
        Some(Command::Extract(args)) => extract::run(args, json),
        Some(Command::Info(args)) => info::run(args, json),
        Some(Command::Fuse(args)) => fuse::run(args, json),
        Some(Command::Bench(args)) => bench::run(args, json),
        Some(Command::Osd(command)) => osd::run(command, json),
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "expertui",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Some(Command::Man) => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(|e| Failure::error(format!("man page: {e}")))
        }
        Some(Command::Keygen(args)) => keygen::run(args, json),
        Some(Command::Sign(args)) => sign::run(args, json),
        Some(Command::Certify(args)) => sign::certify(args, json),
        Some(Command::Revoke(args)) => revoke::run(args, json),
        None if !cli.headless && !json && std::io::stdout().is_terminal() => {
            open_tui(cli.file, &cli.signature)
        }
        None => info::run(
            info::Args {
                file: cli.file,
                signature: cli.signature,
            },
            json,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if json && !failure.reported {
                print_json(
                    &serde_json::json!({ "error": failure.message, "exit_code": failure.code }),
                );
            }
            eprintln!("error: {}", crate::diagnostics::printable(&failure.message));
            ExitCode::from(failure.code)
        }
    }
}
