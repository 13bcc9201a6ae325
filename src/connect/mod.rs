//! Connection profiles: how two programs find each other, prove who they are, and resume.
//!
//! - [`merge`]: dop's token-merge handshake, client, server and the
//!   server's session registry.
//! - [`dual`]: R-Type's dual-channel handshake: `main` + `feed`.

pub mod dual;
pub mod merge;
