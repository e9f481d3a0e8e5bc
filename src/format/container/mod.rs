//! The `.expert` v2 container itself: the fixed on-disk layouts, the checks
//! of header and TOC, the memory-mapped reader and the streaming writer,
//! section and root digests, crash-safe writes and the byte-shuffle codec.
//! Nothing here knows what a section holds.

pub mod atomic;
pub mod digests;
pub mod file_bytes;
pub mod layout;
pub mod reader;
pub mod shuffle;
pub mod structure;
pub mod writer;
