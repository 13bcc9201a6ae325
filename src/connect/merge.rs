//! The token-merge connection of seed 004 (dop): handshake, resumption, registry.
//!
//! Work in progress (issue 3).
