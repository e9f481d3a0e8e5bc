//! Runtime: sections to tensors, fuse, streaming and hot-swap. Lands with issue 5/7.
