//! Runtime on candle: sections to tensors on a device, fuse into base
//! weights (LoRA, DoRA, IA³, embedding LoRA), layer streaming with an LRU
//! cache, hot-swap of experts (`ExpertManager`) and the benchmark engine.
//!
//! Nothing here prints or touches the terminal: progress goes through
//! callbacks, so the headless verbs and the TUI share one engine.

pub mod adapter;
pub mod base;
pub mod bench;
pub mod device;
pub mod device_tensors;
pub mod error;
pub mod fuse;
pub mod fuse_cpu;
pub mod manager;
pub mod osd_runtime;
pub mod stream;

pub use adapter::{AdapterWeights, LoadOptions};
pub use base::{BaseCheckpoint, NameIndex, Resolved};
pub use device::{available_devices, device_label, parse_device};
pub use device_tensors::SectionTensors;
pub use error::{Result, RuntimeError};
pub use fuse::{fuse_module, FuseReport, FusedModule, MissingModule};
pub use manager::{ExpertManager, ExpertMemory, ManagerConfig};
pub use stream::{LayerCache, LayerStream};
