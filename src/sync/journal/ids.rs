//! [`ResourceIds`]: resource ids a journal's owner mints for its own entries, that cannot
//! collide with ids it minted in an earlier life of its journal.

use super::store::JournalStore;
use bytes::Bytes;

/// Mints resource ids for the entries a node publishes under its author name.
///
/// An entry is known by (author, resource id), and a journal refuses an (author, resource)
/// it holds ([`StoreError::Duplicate`](super::StoreError::Duplicate)); but a node that
/// lost its disk and restarts under the same author name has an empty journal, so nothing
/// stops it from publishing an id it used before, and its peers, which hold the old entry,
/// would drop the new one as a duplicate without a word. These ids cannot collide that way:
/// each is the journal's epoch followed by a counter ([`ResourceIds::LEN`] bytes, within
/// [`MAX_ID_LEN`](crate::wire::MAX_ID_LEN)), and a journal that is created anew, wiped, or
/// restored from an older copy draws a new epoch (the rule of
/// [`JournalStore::epoch`]), so no id of one life of the journal is an id of another.
/// Within one life the counter never goes back: it starts at the journal's head, moves on
/// at each mint, and [`mint_for`](ResourceIds::mint_for) skips any id the journal holds
/// already, so ids minted before a restart and appended are never minted again even if
/// the caller kept no counter.
///
/// Keep one minter per journal (as one journal per author): two minters built from the
/// same journal before either appended would mint the same ids.
///
/// An id counts as used once its entry is in the journal. If the application hands ids out
/// before appending them (to name a draft, say), it persists [`ResourceIds::next`] with
/// its own state and rebuilds with [`ResourceIds::new`] after a restart.
///
/// ```
/// use tether::sync::journal::{JournalStore, MemJournal, ResourceIds};
/// use tether::wire::Entry;
///
/// let mut journal = MemJournal::new(0x5eed, 100); // the epoch: the caller's randomness
/// let mut ids = ResourceIds::for_journal(&journal);
/// let first = ids.mint_for(&journal, b"alice").unwrap();
/// let second = ids.mint_for(&journal, b"alice").unwrap();
/// assert_ne!(first, second); // two mints before either append differ
/// journal.append(Entry::new(b"alice", &first, b"hello")).unwrap();
///
/// // The disk is lost: the new journal draws a new epoch, and no id repeats.
/// let wiped = MemJournal::new(0xd15c, 100);
/// let mut again = ResourceIds::for_journal(&wiped);
/// let minted = again.mint_for(&wiped, b"alice").unwrap();
/// assert!(minted != first && minted != second);
/// assert_eq!(ResourceIds::parse(&minted), Some((0xd15c, 0)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceIds {
    epoch: u64,
    next: Option<u64>,
}

impl ResourceIds {
    /// Bytes in a minted id: the epoch (`u64`, big-endian), then the counter (`u64`,
    /// big-endian).
    pub const LEN: usize = 16;

    /// Ids of the journal life `epoch`, the next one with counter `next` (0 for a new
    /// journal; what [`ResourceIds::next`] returned, for a caller that persists it).
    pub fn new(epoch: u64, next: u64) -> Self {
        ResourceIds {
            epoch,
            next: Some(next),
        }
    }

    /// Ids of `store`'s present life: its epoch, counting from its head (each line of the
    /// journal took at most one id, so every id minted and appended in this life before
    /// is behind, or is skipped by [`mint_for`](ResourceIds::mint_for)).
    pub fn for_journal<S: JournalStore + ?Sized>(store: &S) -> Self {
        ResourceIds::new(store.epoch(), store.head())
    }

    /// The epoch the ids carry.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The counter of the next id, to persist; `None` once every counter was used.
    pub fn next(&self) -> Option<u64> {
        self.next
    }

    /// A fresh id, never returned before by this minter. `None` once all 2^64 counters of
    /// the epoch were used (only reachable by starting the counter near `u64::MAX`).
    pub fn mint(&mut self) -> Option<Bytes> {
        let n = self.next?;
        self.next = n.checked_add(1);
        let mut id = [0u8; Self::LEN];
        id[..8].copy_from_slice(&self.epoch.to_be_bytes());
        id[8..].copy_from_slice(&n.to_be_bytes());
        Some(Bytes::copy_from_slice(&id))
    }

    /// A fresh id that `store` does not hold for `author` yet ([`mint`](Self::mint), past
    /// any id the journal has: a caller that rebuilt the minter from a journal whose ids
    /// were appended out of the order they were minted never gets one of them again).
    pub fn mint_for<S: JournalStore + ?Sized>(
        &mut self,
        store: &S,
        author: &[u8],
    ) -> Option<Bytes> {
        loop {
            let id = self.mint()?;
            if !store.contains(author, &id) {
                return Some(id);
            }
        }
    }

    /// The (epoch, counter) of an id minted here; `None` for any other bytes.
    pub fn parse(id: &[u8]) -> Option<(u64, u64)> {
        let id: &[u8; Self::LEN] = id.try_into().ok()?;
        let (epoch, n) = id.split_at(8);
        Some((
            u64::from_be_bytes(epoch.try_into().ok()?),
            u64::from_be_bytes(n.try_into().ok()?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::journal::MemJournal;
    use crate::wire::{Entry, MAX_ID_LEN};
    use alloc::collections::BTreeSet;

    #[test]
    fn ids_fit_the_wire_and_parse_back() {
        let mut ids = ResourceIds::new(7, 41);
        let id = ids.mint().unwrap();
        assert!(id.len() <= MAX_ID_LEN);
        assert_eq!(ResourceIds::parse(&id), Some((7, 41)));
        assert_eq!(ids.next(), Some(42));
        assert_eq!(ResourceIds::parse(b"r1"), None);
    }

    #[test]
    fn two_mints_before_either_append_differ() {
        let journal = MemJournal::new(1, 10);
        let mut ids = ResourceIds::for_journal(&journal);
        let a = ids.mint_for(&journal, b"me").unwrap();
        let b = ids.mint_for(&journal, b"me").unwrap();
        assert_ne!(a, b);
        // Two minters built from the same journal before either appended would agree, so
        // an application keeps one minter per journal (as it keeps one journal).
        assert_eq!(ResourceIds::for_journal(&journal).mint(), Some(a));
    }

    #[test]
    fn a_wiped_journal_with_a_new_epoch_never_mints_an_id_minted_before() {
        let mut first = MemJournal::new(0xaaaa, 1000);
        let mut ids = ResourceIds::for_journal(&first);
        let mut minted = BTreeSet::new();
        for i in 0..200u32 {
            let id = ids.mint_for(&first, b"me").unwrap();
            assert!(minted.insert(id.clone()));
            if i % 3 != 0 {
                // Not every id is appended: some were handed out and lost with the disk.
                first.append(Entry::new(b"me", &id, b"x")).unwrap();
            }
        }
        // The disk is lost; the node restarts under the same author, and its new journal
        // draws a new epoch. It even learns some of its old entries back from a peer.
        let mut wiped = MemJournal::new(0xbbbb, 1000);
        for seq in 1..=50 {
            wiped.append(first.entry(seq).unwrap()).unwrap();
        }
        let mut again = ResourceIds::for_journal(&wiped);
        for _ in 0..500 {
            let id = again.mint_for(&wiped, b"me").unwrap();
            assert!(
                !minted.contains(&id),
                "{id:02x?} was minted before the wipe"
            );
            wiped.append(Entry::new(b"me", &id, b"y")).unwrap();
        }
    }

    #[test]
    fn rebuilt_from_the_same_journal_it_skips_the_ids_the_journal_holds() {
        let mut journal = MemJournal::new(3, 100);
        let mut ids = ResourceIds::for_journal(&journal);
        let minted: alloc::vec::Vec<Bytes> = (0..3).map(|_| ids.mint().unwrap()).collect();
        // Appended out of the order they were minted: only the last, so the head (1) is
        // behind its counter (2).
        journal.append(Entry::new(b"me", &minted[2], b"x")).unwrap();
        let mut rebuilt = ResourceIds::for_journal(&journal);
        for _ in 0..5 {
            let id = rebuilt.mint_for(&journal, b"me").unwrap();
            assert_ne!(id, minted[2]);
            journal.append(Entry::new(b"me", &id, b"y")).unwrap();
        }
    }

    #[test]
    fn the_counter_ends_with_none_never_a_repeat() {
        let mut ids = ResourceIds::new(1, u64::MAX);
        let last = ids.mint().unwrap();
        assert_eq!(ResourceIds::parse(&last), Some((1, u64::MAX)));
        assert_eq!(ids.mint(), None);
        assert_eq!(ids.mint_for(&MemJournal::new(1, 1), b"me"), None);
    }
}
