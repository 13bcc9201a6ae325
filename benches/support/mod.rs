//! What the benches share (each includes it with `mod support;`).

pub mod alloc;
