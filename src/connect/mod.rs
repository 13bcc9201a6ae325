//! Connection profiles: how two programs find each other, prove who they are, and resume.
//!
//! - [`merge`]: dop's token-merge connectivity (dop's proposal): client, server and the
//!   server's session registry.
//! - [`dual`]: R-Type's dual-channel connection (R-Type's RFC): `main` + `feed`.

pub mod dual;
pub mod merge;
