//! The `.expert` v2 container: fixed layouts, streaming writer, mmap reader
//! and integrity checks. No UI code here.

pub mod atomic;
pub mod basecheck;
pub mod error;
pub mod grammar;
pub mod inspect;
pub mod integrity;
pub mod layout;
pub mod legacy;
pub mod loader;
pub mod manifest;
pub mod npy;
pub mod package;
pub mod peft;
pub mod reader;
pub mod shuffle;
pub mod signing;
pub mod structure;
pub mod tensors;
pub mod writer;

pub use error::{FormatError, Result};
pub use layout::{Codec, Header, SectionType, TocEntry};
pub use reader::{ExpertReader, FileBytes, ReaderLimits, ReaderOptions, SectionBytes, SectionInfo};
pub use writer::{ExpertWriter, SectionSpec, WriteSummary, WriterOptions};
