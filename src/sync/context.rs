//! Sync contexts of seed 000.
//!
//! Work in progress (issue 5).
