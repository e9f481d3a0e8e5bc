//! Errors of the OSD numerical core. Every failure on caller data (shapes,
//! non-finite values, hostile serialized bytes) is one of these variants:
//! nothing here panics on input.

/// Errors of OSD compression, storage and fusion.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OsdError {
    /// Operand shapes do not fit the operation.
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    /// A NaN or infinity in an input: SVD and importance are meaningless then.
    #[error("non-finite value in {0}")]
    NonFinite(&'static str),
    /// A parameter outside its valid range (rank 0, alpha outside [0, 1], ...).
    #[error("invalid parameter {name}: {detail}")]
    Param { name: &'static str, detail: String },
    /// faer's SVD did not converge.
    #[error("SVD did not converge")]
    SvdNoConvergence,
    /// Serialized bytes that cannot be parsed (truncated, inconsistent, hostile).
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// zstd failed to compress or decompress.
    #[error("zstd: {0}")]
    Zstd(String),
}

impl OsdError {
    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Self::Shape {
            op,
            detail: detail.into(),
        }
    }

    pub(crate) fn param(name: &'static str, detail: impl Into<String>) -> Self {
        Self::Param {
            name,
            detail: detail.into(),
        }
    }

    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            detail: detail.into(),
        }
    }
}
