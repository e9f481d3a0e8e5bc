//! Optimal Singular Damage (Alipour & Amiri, arXiv 2511.02681): compression of
//! weight deltas `ΔW = W_f − W_p` as sparsified truncated SVD factors.
//!
//! Pipeline: an SVD of the delta ([`dense_svd`], [`randomized_svd`], or
//! [`lora_svd`] straight from LoRA factors) at a relaxed rank k = r + c;
//! Σ folded into both factors ([`fold_sqrt_sigma`]); per-entry damage scores
//! ([`interleaved_importance`]); entries kept within a bit budget
//! ([`select_entries`]); the result stored as an [`OsdModule`] (CSR factors,
//! checked bytes) that reconstructs Δ̂ or fuses it into a base weight. A
//! low-rank + sparse blend ([`OsdModule::blend`]) is the alternative method;
//! [`energy_curve`] and friends guide rank choice. No UI dependencies.

pub mod analysis;
mod blend;
mod budget;
mod csr;
pub mod delta;
mod energy;
mod error;
pub mod exact;
pub mod expert;
pub mod export;
pub mod frontier;
mod importance;
mod matrix;
mod module;
pub mod precision;
pub(crate) mod rng;
pub mod section;
mod svd;
mod tables;

pub use blend::sparse_residual;
pub use budget::{ceil_log2, entry_bits, osd_bits, select_entries, trunc_svd_bits, Selection};
pub use csr::Csr;
pub use energy::{aggregate_curve, energy_curve, rank_for_retention, total_energy};
pub use error::OsdError;
pub use importance::{
    fold_sqrt_sigma, input_second_moment, interleaved_importance, Factors, Importance,
};
pub use matrix::{relative_frobenius_error, Matrix};
pub use module::{dense_module_bytes, sparse_module_bytes, OsdMethod, OsdModule, Selector};
pub use precision::ValueDtype;
pub use svd::{dense_svd, lora_svd, randomized_svd, Svd};
