//! Errors of the runtime.

use crate::format::package::PackageError;
use crate::format::tensors::TensorError;
use crate::format::FormatError;

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("tensor backend: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("device: {0}")]
    Device(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("base model: {0}")]
    Base(String),
    #[error("module {module}: {reason}")]
    Module { module: String, reason: String },
    #[error("expert {0:?} is not registered")]
    UnknownExpert(String),
    #[error("{0}")]
    Invalid(String),
}

impl RuntimeError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

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
            Self::Package(_) | Self::Tensor(_) | Self::Module { .. } | Self::Base(_) => true,
            _ => false,
        }
    }
}
