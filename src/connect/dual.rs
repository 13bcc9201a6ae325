//! The dual-channel connection of seed 003 (R-Type): `main` (stream) + `feed` (datagrams).
//!
//! Work in progress (issue 4).
