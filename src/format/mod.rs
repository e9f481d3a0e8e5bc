//! Everything that reads or writes expert bytes, split by concern:
//!
//! - [`container`]: the `.expert` v2 container (layouts, structure, reader,
//!   writer, digests, crash-safe writes, codecs);
//! - [`content`]: what an expert holds (manifest, grammar, PEFT adapter,
//!   tensors, base-model checks, `ExpertContents` and packaging);
//! - [`legacy`]: the deprecated tar.gz packages;
//! - [`signing`]: keys, signatures, certificates, revocation, trust;
//! - [`loader`] opens either format, [`inspect`] prepares a file for a
//!   viewer, [`error`] is the container's error type.
//!
//! No UI code here. The container and content modules are re-exported at
//! this level (`format::reader`, `format::manifest`, ...), the paths the rest
//! of the crate uses.

pub mod container;
pub mod content;
pub mod error;
pub mod inspect;
pub mod legacy;
pub mod loader;
pub mod remote;
pub mod signing;

pub use container::{atomic, digests, layout, reader, shuffle, structure, writer};
pub use content::{basecheck, grammar, manifest, npy, package, peft, tensor_index, tensors};

pub use error::{FormatError, Result};
pub use layout::{Codec, Header, SectionType, TocEntry};
pub use reader::{ExpertReader, FileBytes, ReaderLimits, ReaderOptions, SectionBytes, SectionInfo};
pub use writer::{ExpertWriter, SectionSpec, WriteSummary, WriterOptions};
