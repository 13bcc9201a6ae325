//! Anchored two-way sync of seed 002 (SyncML).
//!
//! Work in progress (issue 6).
