//! Journal sync (SDMP), carried by sync contexts.
//!
//! Each node has a journal: an append-only list of entries (author, resource id, payload),
//! in the order the node learned of them, numbered by [`LineId`](crate::wire::LineId)
//! (epoch + counter). A requester asks for the entries after `since` (its mark of the
//! peer's journal); the replier answers inside a sync context with journal lists, and the
//! requester's `SYNC_OK` advances both sides' marks. A receiver appends the entries it does
//! not have (dedup by author and resource id), so after syncing both ways both journals hold
//! the same set of entries, each node in its own order.
//!
//! - [`JournalStore`] / [`MemJournal`]: the application's storage, in memory by default.
//! - [`JournalSync`]: the message-level machine (for the composed peer, over either
//!   connection profile); its vocabulary (config, commands, events, marks) in `types.rs`,
//!   the replier's side in `session/reply.rs`.
//! - [`JournalMachine`]: the same over one `main` transport, a [`Machine`](crate::Machine).
//! - [`ResourceIds`]: resource ids for a node's own entries that no restart can repeat.
//!
//! docs/PROTOCOL.md section 6 gives the wire and the sequences.

mod given;
mod ids;
mod machine;
mod session;
mod store;
mod types;

pub use ids::ResourceIds;
pub use machine::JournalMachine;
pub use session::JournalSync;
pub use store::{JournalStore, MemJournal, StoreError};
pub use types::{
    Continuity, Marks, Policy, Refusal, Role, SyncCommand, SyncConfig, SyncError, SyncEvent,
    SyncOutput, SyncStats,
};
