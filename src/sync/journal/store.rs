//! The journal store: the application's, behind a small trait. The machines read and
//! append through it and never do I/O themselves.

use crate::wire::{Entry, LineId};
use alloc::collections::BTreeSet;
use alloc::sync::Arc;
use alloc::vec::Vec;
use bytes::{Bytes, BytesMut};
use core::fmt;
use hashbrown::{Equivalent, HashMap};

/// Why the store refused an append.
///
/// `Clone`, so that a sticky machine error can carry it; two [`StoreError::Failed`] are
/// equal only when they share one error (a clone of the same value), since the store's own
/// error need not be comparable.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store holds as many entries as it may.
    #[error("journal store is full ({0} entries)")]
    Full(usize),
    /// An entry with this author and resource id is in the journal already: nothing was
    /// appended. Appending it again would apply it twice; mint a new resource id instead.
    #[error("an entry with this author and resource id is in the journal already")]
    Duplicate,
    /// The store failed for a reason of its own (the application's I/O, a database error),
    /// which it gives here: match on it and `downcast_ref` to the store's error type.
    #[error("journal store failed: {0}")]
    Failed(Arc<dyn core::error::Error + Send + Sync>),
}

impl StoreError {
    /// The store's own error, as [`StoreError::Failed`].
    pub fn failed(error: impl core::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Failed(Arc::new(error))
    }

    /// A failure described by a fixed message, for a store without an error type of its
    /// own.
    pub fn message(message: &'static str) -> Self {
        StoreError::failed(Message(message))
    }
}

impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (StoreError::Full(a), StoreError::Full(b)) => a == b,
            (StoreError::Duplicate, StoreError::Duplicate) => true,
            (StoreError::Failed(a), StoreError::Failed(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for StoreError {}

/// The error of [`StoreError::message`].
#[derive(Debug)]
struct Message(&'static str);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl core::error::Error for Message {}

/// A node's journal: an append-only list of entries, lines `1..=head()` of one epoch, plus
/// the resources it can serve.
///
/// Entries are deduplicated by `(author, resource)`: an entry learned twice (a resend after
/// a cut, a broadcast, a full resync) is applied once, and [`append`] of an entry the
/// journal has returns [`StoreError::Duplicate`] rather than appending it again.
///
/// **Batches and durability.** The machines apply each journal list they receive through
/// [`append_batch`]: one call per list, so that a durable store writes the list in one
/// transaction with one fsync. The `SYNC_OK` that confirms a context (and lets the peer
/// move its mark of us) is queued only after the batches of all the context's lists have
/// returned, so a store whose `append_batch` returns once the batch is durable never lets
/// a peer believe we hold lines we could lose. The default `append_batch` calls
/// [`append`] per entry, which is right for a store in memory.
///
/// [`contains`]: JournalStore::contains
/// [`append`]: JournalStore::append
/// [`append_batch`]: JournalStore::append_batch
///
/// [`MemJournal`] through the trait, as the machines use any store:
///
/// ```
/// use tether::sync::journal::{JournalStore, MemJournal, StoreError};
/// use tether::wire::Entry;
///
/// let mut journal = MemJournal::new(1, 100);
/// journal.append(Entry::new(b"alice", b"r1", b"hello")).unwrap();
/// // The same (author, resource) again is a typed outcome, not a silent no-op.
/// let again = journal.append(Entry::new(b"alice", b"r1", b"hello"));
/// assert_eq!(again, Err(StoreError::Duplicate));
/// assert_eq!((journal.epoch(), journal.head()), (1, 1));
/// assert_eq!(journal.entry(1).unwrap().resource, &b"r1"[..]);
/// assert_eq!(journal.resource(b"alice", b"r1").as_deref(), Some(&b"hello"[..]));
///
/// // A received list, as one batch: the duplicate is skipped (`None`), the rest appended.
/// let list = [Entry::new(b"alice", b"r1", b"hello"), Entry::new(b"bob", b"r1", b"hi")];
/// let mut outcomes = Vec::new();
/// journal.append_batch(&list, &mut outcomes).unwrap();
/// assert_eq!(outcomes.iter().map(|o| o.map(|l| l.seq)).collect::<Vec<_>>(), [None, Some(2)]);
/// ```
pub trait JournalStore {
    /// The journal's epoch: changes whenever the journal is reset or lost, so that a peer's
    /// `since` from an older life is recognised as unknown (and a full resync follows).
    /// Draw it from the caller's randomness when the journal is created, and keep it with
    /// the journal.
    fn epoch(&self) -> u64;
    /// The last line's number, 0 when empty.
    fn head(&self) -> u64;
    /// Line `seq` (1-based), if it exists.
    fn entry(&self, seq: u64) -> Option<Entry>;
    /// The id of line `seq` with its check (the journal's hash chain there, see
    /// [`LineId::next`]): `line(0)` is [`LineId::start`] of the epoch, `None` past the head.
    /// A store computes each line's id as it appends (`head_line.next(&entry)`) and keeps
    /// it with the line: a peer's `since` is honoured only if it names this very line.
    fn line(&self, seq: u64) -> Option<LineId>;
    /// The id of the last line ([`LineId::start`] when empty).
    fn head_line(&self) -> LineId {
        self.line(self.head())
            .unwrap_or(LineId::start(self.epoch()))
    }
    /// Whether an entry with this author and resource id is in the journal.
    fn contains(&self, author: &[u8], resource: &[u8]) -> bool;
    /// The application's quota policy for entries received from peers: `false` refuses
    /// `entry` (it is not stored, the peer's list around it is; the sync reports
    /// [`SyncEvent::EntryRefused`](super::SyncEvent::EntryRefused) with
    /// [`Refusal::Policy`](super::Refusal::Policy)). Called once per received entry
    /// within the size limit, before its batch is appended, also for an entry the
    /// journal holds already (check [`contains`](JournalStore::contains) if you count);
    /// local appends do not ask. A per-author quota is the usual use: count what each
    /// author holds, refuse past its share, so that one peer cannot fill the journal that
    /// every other session shares. Default: every entry is admitted (and the check costs
    /// nothing).
    fn admit(&mut self, entry: &Entry) -> bool {
        let _ = entry;
        true
    }
    /// Appends an entry at line `head() + 1` and returns that line; an entry whose author
    /// and resource id the journal has already is refused with [`StoreError::Duplicate`]
    /// and nothing is appended.
    fn append(&mut self, entry: Entry) -> Result<LineId, StoreError>;
    /// Appends a received list as one batch: each entry whose `(author, resource)` is
    /// neither in the journal nor earlier in `entries`, in order, at the lines after
    /// `head()`.
    ///
    /// `outcomes` is empty on entry; push one outcome per entry, in order: `Some(line)`
    /// where it was appended, `None` where it was a duplicate. Return once the batch is
    /// as durable as the store makes anything (a durable store: one transaction, one
    /// fsync).
    ///
    /// On `Err`, `outcomes` must describe exactly what stays in the journal: an atomic
    /// store (all or nothing, as [`MemJournal`] and a database transaction are) leaves it
    /// empty; the default implementation, one [`append`](JournalStore::append) at a time,
    /// keeps the entries before the one that failed, and their outcomes.
    fn append_batch(
        &mut self,
        entries: &[Entry],
        outcomes: &mut Vec<Option<LineId>>,
    ) -> Result<(), StoreError> {
        for e in entries {
            if self.contains(&e.author, &e.resource) {
                outcomes.push(None);
                continue;
            }
            match self.append(e.clone()) {
                Ok(line) => outcomes.push(Some(line)),
                Err(StoreError::Duplicate) => outcomes.push(None),
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
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
    /// Each line's check (the hash chain), index `i` for line `i + 1`.
    checks: Vec<u64>,
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
            checks: Vec::new(),
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

    /// Appends `entry` unless its key is present (`Ok(None)`). A lookup with the borrowed
    /// ids, then an insert: measured faster than hashbrown's entry API here (whose vacant
    /// insert probes the table a second time, a cache miss in a large journal).
    fn push(&mut self, entry: &Entry) -> Result<Option<LineId>, StoreError> {
        if self
            .index
            .contains_key(&Probe(&entry.author, &entry.resource))
        {
            return Ok(None);
        }
        if self.lines.len() >= self.max_entries {
            return Err(StoreError::Full(self.max_entries));
        }
        self.index.insert(
            (entry.author.clone(), entry.resource.clone()),
            self.lines.len(),
        );
        let line = self.head_line().next(entry);
        self.lines.push(entry.clone());
        self.checks.push(line.check);
        Ok(Some(line))
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
    fn line(&self, seq: u64) -> Option<LineId> {
        let check = match seq {
            0 => 0,
            _ => *self.checks.get(usize::try_from(seq - 1).ok()?)?,
        };
        Some(LineId {
            epoch: self.epoch,
            seq,
            check,
        })
    }
    fn head_line(&self) -> LineId {
        LineId {
            epoch: self.epoch,
            seq: self.lines.len() as u64,
            check: self.checks.last().copied().unwrap_or(0),
        }
    }
    fn contains(&self, author: &[u8], resource: &[u8]) -> bool {
        self.index.contains_key(&Probe(author, resource))
    }
    fn append(&mut self, entry: Entry) -> Result<LineId, StoreError> {
        self.push(&entry)?.ok_or(StoreError::Duplicate)
    }
    /// All or nothing: a list that would overflow `max_entries` appends none of its
    /// entries.
    ///
    /// The entries it keeps are copied, together, into one buffer of just their bytes: a
    /// received entry is a slice of the frame it came in, and keeping the slice would keep
    /// the whole frame (a one-byte entry beside a large duplicate pinned a megabyte).
    fn append_batch(
        &mut self,
        entries: &[Entry],
        outcomes: &mut Vec<Option<LineId>>,
    ) -> Result<(), StoreError> {
        let (start, base) = (self.lines.len(), outcomes.len());
        // First pass: which entries are new (one lookup each), and the bytes they take.
        let mut fresh = 0usize;
        for e in entries {
            let new = !self.index.contains_key(&Probe(&e.author, &e.resource));
            if new {
                fresh += e.author.len() + e.resource.len() + e.payload.len();
            }
            outcomes.push(new.then_some(LineId::start(self.epoch)));
        }
        // Second pass: copy the new ones into one buffer and append them; the insert into
        // the index is their only other hash operation (it also catches a key repeated
        // within the list).
        let mut arena = BytesMut::with_capacity(fresh);
        let mut take = |b: &Bytes| {
            arena.extend_from_slice(b);
            arena.split().freeze()
        };
        for (e, outcome) in entries.iter().zip(outcomes[base..].iter_mut()) {
            if outcome.is_none() {
                continue;
            }
            if self.lines.len() >= self.max_entries {
                for e in self.lines.drain(start..) {
                    self.index.remove(&Probe(&e.author, &e.resource));
                }
                self.checks.truncate(start);
                outcomes.truncate(base);
                return Err(StoreError::Full(self.max_entries));
            }
            let entry = Entry {
                author: take(&e.author),
                resource: take(&e.resource),
                payload: take(&e.payload),
            };
            let key = (entry.author.clone(), entry.resource.clone());
            if let Some(earlier) = self.index.insert(key.clone(), self.lines.len()) {
                // The same key earlier in this list: that one stays.
                self.index.insert(key, earlier);
                *outcome = None;
                continue;
            }
            let line = self.head_line().next(&entry);
            self.lines.push(entry);
            self.checks.push(line.check);
            *outcome = Some(line);
        }
        Ok(())
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

    #[test]
    fn a_duplicate_append_is_typed_and_appends_nothing() {
        let mut j = MemJournal::new(1, 10);
        j.append(Entry::new(b"a", b"r", b"p")).unwrap();
        assert_eq!(
            j.append(Entry::new(b"a", b"r", b"q")),
            Err(StoreError::Duplicate)
        );
        assert_eq!(j.head(), 1);
        assert_eq!(j.resource(b"a", b"r").as_deref(), Some(&b"p"[..]));
    }

    #[test]
    fn a_batch_skips_duplicates_present_and_repeated_within_it() {
        let mut j = MemJournal::new(3, 10);
        j.append(Entry::new(b"a", b"1", b"")).unwrap();
        let list = [
            Entry::new(b"a", b"1", b""),
            Entry::new(b"a", b"2", b""),
            Entry::new(b"a", b"2", b""),
            Entry::new(b"b", b"1", b""),
        ];
        let mut out = Vec::new();
        j.append_batch(&list, &mut out).unwrap();
        let seqs: Vec<_> = out.iter().map(|o| o.map(|l| (l.epoch, l.seq))).collect();
        assert_eq!(seqs, [None, Some((3, 2)), None, Some((3, 3))]);
        // The ids are the journal's own lines, checks included.
        assert_eq!(out[1], j.line(2));
        assert_eq!(out[3], j.line(3));
        assert_eq!(j.head(), 3);
    }

    /// Each line's id is the chain folded over the entries before it, whatever path
    /// appended them; `line(0)` is the start and nothing past the head has an id.
    #[test]
    fn line_ids_follow_the_chain() {
        let mut j = MemJournal::new(5, 10);
        let entries = [
            Entry::new(b"a", b"1", b"x"),
            Entry::new(b"b", b"1", b"yy"),
            Entry::new(b"a", b"2", b""),
        ];
        j.append(entries[0].clone()).unwrap();
        let mut out = Vec::new();
        j.append_batch(&entries[1..], &mut out).unwrap();
        let mut expect = LineId::start(5);
        assert_eq!(j.line(0), Some(expect));
        for (i, e) in entries.iter().enumerate() {
            expect = expect.next(e);
            assert_eq!(j.line(i as u64 + 1), Some(expect));
        }
        assert_eq!(j.head_line(), expect);
        assert_eq!(j.line(4), None);
        // A failed batch leaves no check behind.
        let mut small = MemJournal::new(5, 1);
        assert!(small.append_batch(&entries, &mut out).is_err());
        assert_eq!(small.head_line(), LineId::start(5));
    }

    #[test]
    fn a_batch_that_overflows_appends_nothing() {
        let mut j = MemJournal::new(1, 3);
        j.append(Entry::new(b"a", b"0", b"")).unwrap();
        let list = [
            Entry::new(b"a", b"1", b""),
            Entry::new(b"a", b"0", b""),
            Entry::new(b"a", b"2", b""),
            Entry::new(b"a", b"3", b""),
        ];
        let mut out = Vec::new();
        assert_eq!(j.append_batch(&list, &mut out), Err(StoreError::Full(3)));
        assert!(out.is_empty());
        assert_eq!(j.head(), 1);
        assert!(!j.contains(b"a", b"1") && !j.contains(b"a", b"2"));
        // What did fit is accepted once there is room.
        j.append_batch(&list[..3], &mut out).unwrap();
        assert_eq!(j.head(), 3);
    }

    /// A store with only the required methods: the default batch keeps what it appended
    /// before a failure, and says so in the outcomes.
    #[test]
    fn the_default_batch_reports_what_stays_after_a_failure() {
        struct Minimal(MemJournal);
        impl JournalStore for Minimal {
            fn epoch(&self) -> u64 {
                self.0.epoch()
            }
            fn head(&self) -> u64 {
                self.0.head()
            }
            fn entry(&self, seq: u64) -> Option<Entry> {
                self.0.entry(seq)
            }
            fn line(&self, seq: u64) -> Option<LineId> {
                self.0.line(seq)
            }
            fn contains(&self, author: &[u8], resource: &[u8]) -> bool {
                self.0.contains(author, resource)
            }
            fn append(&mut self, entry: Entry) -> Result<LineId, StoreError> {
                self.0.append(entry)
            }
            fn resource(&self, author: &[u8], resource: &[u8]) -> Option<Bytes> {
                self.0.resource(author, resource)
            }
        }
        let mut j = Minimal(MemJournal::new(1, 2));
        let list = [
            Entry::new(b"a", b"1", b""),
            Entry::new(b"a", b"1", b""),
            Entry::new(b"a", b"2", b""),
            Entry::new(b"a", b"3", b""),
        ];
        let mut out = Vec::new();
        assert_eq!(j.append_batch(&list, &mut out), Err(StoreError::Full(2)));
        let seqs: Vec<_> = out.iter().map(|o| o.map(|l| l.seq)).collect();
        assert_eq!(seqs, [Some(1), None, Some(2)]);
        assert_eq!(j.head(), 2);
    }

    #[test]
    fn store_errors_carry_the_store_own_error() {
        #[derive(Debug)]
        struct Io;
        impl fmt::Display for Io {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("disk full")
            }
        }
        impl core::error::Error for Io {}
        let e = StoreError::failed(Io);
        assert_eq!(alloc::format!("{e}"), "journal store failed: disk full");
        let StoreError::Failed(inner) = &e else {
            panic!("{e:?}")
        };
        assert!(inner.downcast_ref::<Io>().is_some());
        // Equal to its clones (a sticky error), not to another failure.
        assert_eq!(e.clone(), e);
        assert_ne!(StoreError::failed(Io), e);
        assert_ne!(StoreError::message("x"), StoreError::Duplicate);
    }
}
