//! Keeping two peers' data in step.
//!
//! - [`context`]: sync contexts (SYNC_REQ, SYNC_START, SYNC_END, SYNC_OK, REFUSED).
//! - [`journal`]: journal sync (SDMP's), what a sync context carries.
//! - [`anchored`]: anchored two-way sync (SyncML's).

pub mod anchored;
pub mod context;
pub mod journal;
