//! Every place the tests touch a peer's store, in one file. A `Peer` owns its store, so a
//! node's store is its `MemJournal`.

use bytes::Bytes;
use std::collections::BTreeSet;
use tether::sync::journal::MemJournal;

/// A node's store.
pub type Store = MemJournal;

/// Most entries a test journal holds.
pub const CAPACITY: usize = 1_000_000;

/// An empty journal of `epoch`.
pub fn empty(epoch: u64) -> MemJournal {
    MemJournal::new(epoch, CAPACITY)
}

/// The store a peer is built with, holding `journal`.
pub fn store_from(journal: MemJournal) -> Store {
    journal
}

/// A copy of the journal's contents as they are now: what a durable store holds on disk
/// when its process dies (or what a backup taken now holds).
pub fn copy(store: &Store) -> MemJournal {
    store.clone()
}

/// The `(author, resource)` keys of the journal.
pub fn keys(store: &Store) -> BTreeSet<(Bytes, Bytes)> {
    store.keys()
}

/// The journal's epoch and head.
pub fn epoch_head(store: &Store) -> (u64, u64) {
    use tether::sync::journal::JournalStore;
    (store.epoch(), store.head())
}
