//! expertui: the `.expert` v2 binary container for LLM adapter experts.
//!
//! - [`format`]: the container (layouts, writer, reader, integrity), the
//!   manifest, PEFT ingestion and the legacy tar.gz package.
//! - [`osd`]: Optimal Singular Damage compression of weight deltas.
//! - [`gpu`]: the runtime (tensors, fuse, streaming, hot-swap, benchmarks).
//! - [`cli`]: the headless subcommands.
//!
//! `format`, `osd` and `gpu` never depend on the terminal UI.

pub mod app;
pub mod cli;
pub mod format;
pub mod gpu;
pub mod osd;
pub mod plot;

/// The demo expert embedded in the binary (built from the MiniLM LoRA fixture).
pub static DEMO_EXPERT: &[u8] = include_bytes!("../assets/demo.expert");
