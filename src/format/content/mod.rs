//! What an expert holds, whatever its container: the manifest and its
//! schema, GBNF grammars, PEFT adapters and their tensors, NumPy arrays,
//! checks against a base model, and `ExpertContents`, which maps an expert
//! to and from `.expert` v2, legacy tar.gz and PEFT folders.

pub mod basecheck;
pub mod grammar;
pub mod manifest;
pub mod npy;
pub mod package;
pub mod peft;
pub mod tensor_index;
pub mod tensors;
