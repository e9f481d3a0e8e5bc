//! expertui: the `.expert` v2 binary container for LLM adapter experts, and
//! the tools around it.
//!
//! An *expert* is a small fine-tuned adapter (LoRA, DoRA, IA³, prompt tuning)
//! shipped with its manifest, routing keywords, GBNF grammar, licence and
//! docs. An `.expert` v2 file holds all of it as typed sections behind a
//! fixed 128-byte header and a table of contents: sections aligned to 64 or
//! 256 bytes, optionally zstd-compressed, each with a SHA-256 digest and a
//! root digest over header and TOC, read through a memory map without
//! copying. Files can carry Ed25519 signatures with publisher certificates,
//! and OSD-compressed adapter deltas. `docs/BINARY_FORMAT_SPEC.md` describes
//! the format byte by byte.
//!
//! # Module map
//!
//! - [`mod@format`]: the container ([`format::ExpertReader`],
//!   [`format::ExpertWriter`], layouts, integrity), the manifest, PEFT
//!   ingestion ([`format::package::ExpertContents`]), the legacy tar.gz
//!   package and [`format::loader::ExpertLoader`], which opens either;
//!   [`format::signing`] holds keys, signatures, certificates, revocation
//!   and the trust policy.
//! - [`osd`]: Optimal Singular Damage compression of weight deltas (SVD,
//!   importance, budgets, CSR storage, whole-expert analysis and writing).
//! - [`gpu`]: the runtime on candle: sections to tensors, fusing adapters
//!   into base weights, layer streaming, hot-swap of experts
//!   ([`gpu::ExpertManager`]) and the benchmark engine.
//! - [`cli`]: the headless verbs (`expertui --headless VERB`) and their exit
//!   codes.
//! - [`app`]: the terminal UI.
//! - [`plot`]: PNG/SVG charts for `osd analyze`, `osd tune` and `bench --plot`.
//! - [`sigbus`]: a clean exit (and a restored terminal) when a mapped file is truncated under a read.
//!
//! `format`, `osd` and `gpu` never depend on the terminal UI. The programs
//! in `examples/` show the library in use: converting a legacy expert, OSD
//! compression, a custom section, signing, and hot-swapping.
//!
//! # Example
//!
//! Open the demo expert embedded in the crate, check every section's digest
//! and read its manifest:
//!
//! ```
//! use expertui::format::{ExpertReader, SectionType};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // `ExpertReader::open(path)` maps a file the same way.
//! let reader = ExpertReader::from_static(expertui::DEMO_EXPERT)?;
//! reader.verify_all()?; // structure and root digest were checked by the open
//! for section in reader.sections() {
//!     println!("{:<16} {:<20} {} bytes", section.kind.label(), section.name, section.raw_len);
//! }
//! let manifest = reader.section_named(SectionType::Manifest, "manifest.json")?;
//! let manifest: serde_json::Value = serde_json::from_slice(&manifest)?;
//! assert_eq!(manifest["name"], "expert-sql-demo");
//! # Ok(())
//! # }
//! ```

pub mod app;
pub mod cli;
pub mod diagnostics;
pub mod format;
pub mod gpu;
pub mod osd;
pub mod plot;
pub mod sigbus;
pub mod validation;

#[doc(hidden)]
pub mod fuzzing;

/// The demo expert embedded in the binary (built from the MiniLM LoRA fixture).
pub static DEMO_EXPERT: &[u8] = include_bytes!("../assets/demo.expert");
