//! Errors of the runtime.

use crate::format::package::PackageError;
use crate::format::tensors::TensorError;
use crate::format::FormatError;

/// Result alias for the runtime.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Errors of the runtime (loading, fusing, streaming, the expert manager).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An error inside candle (device memory, dtype support, ...).
    #[error("tensor backend: {0}")]
    Candle(#[from] candle_core::Error),
    /// The expert's container.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The expert's contents.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// Tensor data or a module table.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// A device that cannot be used (no CUDA in this build, no such GPU).
    #[error("device: {0}")]
    Device(String),
    /// An operating-system error on `path`.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The base checkpoint (missing tensor, bad shard index, unreadable file).
    #[error("base model: {0}")]
    Base(String),
    /// A module that does not fit its base tensor.
    #[error("module {module}: {reason}")]
    Module { module: String, reason: String },
    /// An expert id the manager does not know.
    #[error("expert {0:?} is not registered")]
    UnknownExpert(String),
    /// A request the runtime refuses (all loaded experts applied, base changed while applied, ...).
    #[error("{0}")]
    Invalid(String),
    /// The expert's content is malformed (an OSD section that does not
    /// decode, a tensor of a type no adapter has): invalid input, exit 3.
    #[error("{0}")]
    Corrupt(String),
    /// The expert fails the trust policy (unsigned, untrusted, revoked,
    /// invalid signature): it never reaches the runtime. Exit 3.
    #[error("refused by the trust policy: {0}")]
    Untrusted(String),
}

impl RuntimeError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// An error about one module.
    pub fn module(module: &str, reason: impl ToString) -> Self {
        Self::Module {
            module: module.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Whether the error means the input is invalid or corrupt (exit 3)
    /// rather than an environment problem (exit 1).
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Self::Format(e) => e.is_corruption(),
            Self::Package(PackageError::Io { .. } | PackageError::Format(_)) => false,
            Self::Package(_)
            | Self::Tensor(_)
            | Self::Module { .. }
            | Self::Base(_)
            | Self::Corrupt(_)
            | Self::Untrusted(_) => true,
            _ => false,
        }
    }
}
