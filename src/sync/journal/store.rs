//! The journal store: the application's, behind a small trait. The machines read and
//! append through it and never do I/O themselves.

use crate::wire::{Entry, LineId};
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use bytes::Bytes;
use hashbrown::{Equivalent, HashMap};

/// Why the store refused an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store holds as many entries as it may.
    #[error("journal store is full ({0} entries)")]
    Full(usize),
    /// The store failed for a reason of its own (the application's I/O).
    #[error("journal store failed: {0}")]
    Failed(&'static str),
}

/// A node's journal: an append-only list of entries, lines `1..=head()` of one epoch, plus
/// the resources it can serve.
///
/// Entries are deduplicated by `(author, resource)`: the machines call [`contains`] before
/// [`append`], so an entry learned twice (a resend after a cut, a broadcast, a full resync)
/// is applied once.
///
/// [`contains`]: JournalStore::contains
/// [`append`]: JournalStore::append
///
/// [`MemJournal`] through the trait, as the machines use any store:
///
/// ```
/// use tether::sync::journal::{JournalStore, MemJournal};
/// use tether::wire::Entry;
///
/// /// Appends `entry` unless the journal has it already, as the machines do.
/// fn learn(journal: &mut impl JournalStore, entry: Entry) -> bool {
///     !journal.contains(&entry.author, &entry.resource) && journal.append(entry).is_ok()
/// }
///
/// let mut journal = MemJournal::new(1, 100);
/// assert!(learn(&mut journal, Entry::new(b"alice", b"r1", b"hello")));
/// assert!(!learn(&mut journal, Entry::new(b"alice", b"r1", b"hello")));
/// assert_eq!((journal.epoch(), journal.head()), (1, 1));
/// assert_eq!(journal.entry(1).unwrap().resource, &b"r1"[..]);
/// assert_eq!(journal.resource(b"alice", b"r1").as_deref(), Some(&b"hello"[..]));
/// ```
pub trait JournalStore {
    /// The journal's epoch: changes whenever the journal is reset or lost, so that a peer's
    /// `since` from an older life is recognised as unknown (and a full resync follows).
    fn epoch(&self) -> u64;
    /// The last line's number, 0 when empty.
    fn head(&self) -> u64;
    /// Line `seq` (1-based), if it exists.
    fn entry(&self, seq: u64) -> Option<Entry>;
    /// Whether an entry with this author and resource id is in the journal.
    fn contains(&self, author: &[u8], resource: &[u8]) -> bool;
    /// Appends an entry (the caller checked it is new) and returns its line.
    fn append(&mut self, entry: Entry) -> Result<LineId, StoreError>;
    /// The resource's bytes, unchanged; `None` when unavailable or deleted (answered 404).
    fn resource(&self, author: &[u8], resource: &[u8]) -> Option<Bytes>;
}

/// The default store: everything in memory, bounded by `max_entries`.
///
/// ```
/// use tether::sync::journal::{JournalStore, MemJournal};
/// use tether::wire::Entry;
///
/// let mut j = MemJournal::new(7, 100);
/// let line = j.append(Entry::new(b"alice", b"r1", b"hello")).unwrap();
/// assert_eq!((line.epoch, line.seq), (7, 1));
/// assert!(j.contains(b"alice", b"r1"));
/// assert_eq!(j.resource(b"alice", b"r1").as_deref(), Some(&b"hello"[..]));
/// j.delete(b"alice", b"r1");
/// assert_eq!(j.resource(b"alice", b"r1"), None);
/// ```
#[derive(Debug, Clone)]
pub struct MemJournal {
    epoch: u64,
    max_entries: usize,
    lines: Vec<Entry>,
    /// `(author, resource)` to the line's index: a hash map, as a journal of a million
    /// entries is searched for every entry it receives.
    index: HashMap<(Bytes, Bytes), usize>,
    deleted: BTreeSet<(Bytes, Bytes)>,
}

impl MemJournal {
    /// An empty journal of `epoch` holding at most `max_entries`.
    pub fn new(epoch: u64, max_entries: usize) -> Self {
        MemJournal {
            epoch,
            max_entries,
            lines: Vec::new(),
            index: HashMap::new(),
            deleted: BTreeSet::new(),
        }
    }

    /// Marks a resource deleted: its line stays (a journal is append-only) but requests for
    /// it are answered 404.
    pub fn delete(&mut self, author: &[u8], resource: &[u8]) {
        self.deleted.insert((
            Bytes::copy_from_slice(author),
            Bytes::copy_from_slice(resource),
        ));
    }

    /// All entries, in journal order.
    pub fn entries(&self) -> &[Entry] {
        &self.lines
    }

    /// The set of `(author, resource)` keys: what two synced journals agree on.
    pub fn keys(&self) -> BTreeSet<(Bytes, Bytes)> {
        self.index.keys().cloned().collect()
    }
}

impl JournalStore for MemJournal {
    fn epoch(&self) -> u64 {
        self.epoch
    }
    fn head(&self) -> u64 {
        self.lines.len() as u64
    }
    fn entry(&self, seq: u64) -> Option<Entry> {
        let i = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.lines.get(i).cloned()
    }
    fn contains(&self, author: &[u8], resource: &[u8]) -> bool {
        self.index.contains_key(&Probe(author, resource))
    }
    fn append(&mut self, entry: Entry) -> Result<LineId, StoreError> {
        if self.lines.len() >= self.max_entries {
            return Err(StoreError::Full(self.max_entries));
        }
        self.index.insert(
            (entry.author.clone(), entry.resource.clone()),
            self.lines.len(),
        );
        self.lines.push(entry);
        Ok(LineId {
            epoch: self.epoch,
            seq: self.head(),
        })
    }
    fn resource(&self, author: &[u8], resource: &[u8]) -> Option<Bytes> {
        if !self.deleted.is_empty()
            && self.deleted.contains(&(
                Bytes::copy_from_slice(author),
                Bytes::copy_from_slice(resource),
            ))
        {
            return None;
        }
        let i = *self.index.get(&Probe(author, resource))?;
        self.lines.get(i).map(|e| e.payload.clone())
    }
}

/// A borrowed index key, to look the index up with the caller's slices (no copy). It
/// hashes exactly as the owned `(Bytes, Bytes)` key does (a tuple hashes its fields in
/// order, and `Bytes` hashes as its slice), as `Equivalent` requires.
#[derive(Hash)]
struct Probe<'a>(&'a [u8], &'a [u8]);

impl Equivalent<(Bytes, Bytes)> for Probe<'_> {
    fn equivalent(&self, key: &(Bytes, Bytes)) -> bool {
        self.0 == &key.0[..] && self.1 == &key.1[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids that share long prefixes, differ only past the inline head, or are prefixes of
    /// each other: the index answers exactly as a set of `(author, resource)` pairs.
    #[test]
    fn index_agrees_with_a_set_of_pairs() {
        let long = [b'x'; 40];
        let ids: [&[u8]; 7] = [b"", b"a", b"a\0", b"ab", &long[..30], &long[..31], &long];
        let mut j = MemJournal::new(1, 1_000);
        let mut set = BTreeSet::new();
        for (i, a) in ids.iter().enumerate() {
            for (k, r) in ids.iter().enumerate() {
                if (i + k) % 3 == 0 {
                    j.append(Entry::new(a, r, &[i as u8, k as u8])).unwrap();
                    set.insert((a.to_vec(), r.to_vec()));
                }
            }
        }
        for (i, a) in ids.iter().enumerate() {
            for (k, r) in ids.iter().enumerate() {
                let expected = set.contains(&(a.to_vec(), r.to_vec()));
                assert_eq!(j.contains(a, r), expected, "{a:?} {r:?}");
                let payload = j.resource(a, r);
                assert_eq!(payload.is_some(), expected);
                if let Some(p) = payload {
                    assert_eq!(&p[..], &[i as u8, k as u8]);
                }
            }
        }
        assert_eq!(j.keys().len(), set.len());
    }

    #[test]
    fn deleted_resources_answer_none() {
        // The fast path skips the deleted set only while it is empty.
        let mut j = MemJournal::new(1, 10);
        j.append(Entry::new(b"a", b"r", b"p")).unwrap();
        assert!(j.resource(b"a", b"r").is_some());
        j.delete(b"a", b"r");
        assert!(j.contains(b"a", b"r"));
        assert_eq!(j.resource(b"a", b"r"), None);
    }
}
