//! Compression of weight deltas `ΔW` (LoRA, DoRA, fine-tunes) in the fewest
//! bytes written: the adapter cast, TruncSVD, Optimal Singular Damage
//! (Alipour & Amiri, arXiv 2511.02681: sparsified factors at a relaxed rank
//! k = r + c), MagTruncSVD and two low-rank + sparse variants, each in f32,
//! bf16 or f16.
//!
//! Pipeline: an SVD of the delta ([`dense_svd`], [`randomized_svd`], or
//! [`lora_svd`] straight from LoRA factors); Σ folded into both factors
//! ([`fold_sqrt_sigma`]); per-entry scores ([`interleaved_importance`], or
//! magnitude, or Taylor with gradients); the entries a byte budget pays
//! for, stored as an [`OsdModule`] (CSR factors in one dtype, exact
//! `encoded_len`) that reconstructs Δ̂ or fuses it into a base weight.
//! `analysis` predicts any point from cached tables, `exact` measures it,
//! `frontier` tunes and picks under a byte limit, `export` turns low-rank
//! modules back into LoRA factors. No UI dependencies.

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
pub use budget::{ceil_log2, entry_bits, osd_bits, trunc_svd_bits};
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
