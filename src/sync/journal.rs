//! Journal sync of seed 001 (SDMP).
//!
//! Work in progress (issue 5).
