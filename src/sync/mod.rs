//! Keeping two peers' data in step.
//!
//! - [`context`]: sync contexts of seed 000 (SYNC_REQ, SYNC_START, SYNC_END, SYNC_OK, REFUSED).
//! - [`journal`]: journal sync of seed 001 (SDMP), what a sync context carries.
//! - [`anchored`]: anchored two-way sync of seed 002 (SyncML).

pub mod anchored;
pub mod context;
pub mod journal;
