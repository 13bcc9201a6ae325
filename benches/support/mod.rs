//! What the benches share (each includes it with `mod support;`).

pub mod alloc;
pub mod merge_pair;
