//! Connection profiles: how two programs find each other, prove who they are, and resume.
//!
//! - [`merge`]: the token-merge handshake of seed 004 (dop), client, server and the
//!   server's session registry.
//! - [`dual`]: the dual-channel handshake of seed 003 (R-Type): `main` + `feed`.

pub mod dual;
pub mod merge;
