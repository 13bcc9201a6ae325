//! A durable journal store for [`tether`] on SQLite.
//!
//! # The shortest program: a durable peer
//!
//! A [`Peer`](tether::peer::Peer) on a `SqliteJournal`, whose sessions
//! [`sessions::DurableSessions`] keeps in the same file: restored at start, saved every
//! round before the round's bytes are written (docs/RESTARTS.md in the repository says
//! what to persist when, and what each kind of restart looks like from both sides):
//!
//! ```
//! # use tether::connect::merge::{MergeClient, MergeClientConfig};
//! # use tether::peer::Peer;
//! # use tether::sync::journal::SyncConfig;
//! # use tether::{Input, Instant, Machine, Output, Token};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("tether-sqlite-readme-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # std::env::set_current_dir(&dir)?;
//! # let (now, config, token) = (Instant::ZERO, MergeClientConfig::default(), Token::new(&[7; 16])?);
//! # let random_u64 = || 0x5eed_0001;
//! # let input = Input::Timeout;
//! # fn drain<M: Machine>(m: &mut M) -> Vec<Output<M::Event>> {
//! #     std::iter::from_fn(|| Some(m.poll_output())).take_while(|o| !matches!(o, Output::Wait(_))).collect()
//! # }
//! # fn handle<T>(_: Vec<T>) -> std::io::Result<()> { Ok(()) }
//! use tether_sqlite::{sessions::DurableSessions, SqliteJournal};
//!
//! // At start: the journal (its epoch drawn once, when the file is created), the peer,
//! // and the sessions the file holds, restored RECONNECTING (they resume by themselves).
//! let journal = SqliteJournal::open("client.db", random_u64)?;
//! let conn = MergeClient::new(now, config, token)?;
//! let mut peer = Peer::new(conn, SyncConfig::default(), journal);
//! let mut sessions = DurableSessions::new();
//! let restored = sessions.restore(&mut peer, now)?;
//! handle(restored.pending)?; // what the fresh peer had queued, as if polled
//!
//! // Every round: the inputs, then the output drained with the bytes held, then the
//! // sessions saved (one transaction, if anything changed), and only then the bytes.
//! peer.handle_input(now, input)?;
//! let held = drain(&mut peer);
//! sessions.save(&mut peer, now)?;
//! handle(held)?; // events handled, bytes written to the sockets
//! # std::env::set_current_dir(std::env::temp_dir())?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! [`SqliteJournal`] implements [`JournalStore`]: the journal's entries (and so the
//! resources it serves), its epoch, and a small key-value table of application state
//! (session snapshots, marks) live in one SQLite database file, in WAL mode. Each journal
//! list received from a peer is written by [`JournalStore::append_batch`] as **one
//! transaction**: with the default [`Synchronous::Full`] that is one fsync per list, and
//! it returns only once the list is on disk, so the `SYNC_OK` tether sends after it never
//! lets a peer believe we hold a line a crash could take from us.
//!
//! State the application wants kept *with* the entries it describes (a `PeerSnapshot`,
//! marks) is staged with [`SqliteJournal::stage_state`] and written in the same
//! transaction as the next batch or append, or at once with [`SqliteJournal::put_state`]:
//! a crash can then never leave the state ahead of the entries it covers.
//!
//! The journal's epoch is drawn from the caller's randomness when the database is created
//! and stored in it; reopening the file keeps it, and a lost or wiped file gets a new one,
//! so a peer's marks from the old file are recognised as unknown (a full resync follows).
//!
//! # Synchronous: `Full` or `Normal`
//!
//! [`Synchronous::Full`] (the default) fsyncs the write-ahead log at every commit: once
//! `append_batch` returns, the list survives a process kill *and* a power cut. Its cost is
//! one fsync per received list (a fraction of a millisecond on an SSD, several on a
//! spinning disk or some cloud volumes).
//!
//! [`Synchronous::Normal`] fsyncs only at checkpoints: a commit survives the process being
//! killed (the OS holds it), but a power cut or an OS crash may roll back the last
//! transactions. The database stays consistent (state staged with a batch rolls back with
//! it), but lines this journal numbered and already sent may be lost and their numbers
//! given to other entries after the restart, which a peer holding a mark past them cannot
//! tell apart. Use `Normal` where power loss is not a concern or the journal is only a
//! cache of another; keep `Full` where "nothing lost" must hold across power cuts.
//!
//! # Example
//!
//! See [`SqliteJournal`]. For a whole durable node (a token-merge server or client that
//! survives `kill -9` and resumes its sessions from its file), see the crate's
//! `tether-node` binary (`src/bin/tether-node.rs`) and `tests/kill9.rs`, which kills it;
//! for a server and two clients restarted from their files in one process,
//! `examples/restarts.rs` (`cargo run -p tether-sqlite --example restarts`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod sessions;

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;
use std::path::Path;
use tether::sync::journal::{JournalStore, StoreError};
use tether::wire::{Entry, LineId};

/// The database layout this crate writes (`PRAGMA user_version`).
const FORMAT: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE tether_meta (
    key TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE tether_entries (
    seq INTEGER PRIMARY KEY,
    author BLOB NOT NULL,
    resource BLOB NOT NULL,
    payload BLOB NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    chk INTEGER NOT NULL DEFAULT 0,
    UNIQUE (author, resource)
);
CREATE TABLE tether_state (
    key BLOB PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;
";

const INSERT: &str = "INSERT INTO tether_entries (seq, author, resource, payload, chk) \
    VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (author, resource) DO NOTHING";

/// Why the store could not open, or an operation of its own failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite refused (I/O, a locked or corrupt file, ...).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// SQLite would not put the database in WAL mode (it answered this journal mode).
    #[error("sqlite refused WAL mode (journal mode {0})")]
    JournalMode(String),
    /// The file is a SQLite database, but not one of this crate's formats.
    #[error("not a tether journal of a known format (user_version {0})")]
    Format(i64),
    /// Sessions were restored into a peer that is not fresh: its client holds a session or
    /// a transport of its own (restore before the peer's first input).
    #[error("the peer already holds a session or transport: restore into a fresh peer")]
    PeerNotFresh,
}

/// When SQLite forces its writes to disk (`PRAGMA synchronous`; the crate docs weigh the
/// two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// Fsync at every commit: a returned batch survives a power cut. The default.
    #[default]
    Full,
    /// Fsync at checkpoints only: a returned batch survives the process being killed, not
    /// necessarily a power cut.
    Normal,
}

/// How to open a [`SqliteJournal`]. `Default` gives the values documented on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// When writes reach the disk. Default: [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// Most entries the journal holds; an append past it is refused with
    /// [`StoreError::Full`] (a batch that would pass it appends nothing). Default: `None`
    /// (bounded by the disk only).
    pub max_entries: Option<u64>,
    /// How long a write waits for another connection to the same file (another process)
    /// to release its lock before failing. Default: 5 s.
    pub busy_timeout: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            synchronous: Synchronous::Full,
            max_entries: None,
            busy_timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// A tether journal in a SQLite database: entries, resources, epoch and application state.
///
/// Open it with [`open`](Self::open), giving the randomness the epoch is drawn from if the
/// file is new; give it to the machines as any [`JournalStore`]. Reads answer from the
/// database (indexed); the epoch and head are kept in memory.
///
/// A read that SQLite fails (I/O) answers "absent" (`None`, `false`): the trait's reads are
/// infallible, and the machines treat absence safely (a shorter list, a 404); the next
/// write reports the failure as [`StoreError::Failed`] carrying the [`Error`].
///
/// ```
/// use tether::sync::journal::{JournalStore, StoreError};
/// use tether::wire::Entry;
/// use tether_sqlite::SqliteJournal;
///
/// # let dir = std::env::temp_dir().join(format!("tether-sqlite-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("journal.db");
/// // The epoch comes from the caller's randomness, only when the file is created.
/// let mut journal = SqliteJournal::open(&path, || 0x5eed_cafe_f00d_0001)?;
/// assert!(journal.is_new());
/// journal.append(Entry::new(b"alice", b"r1", b"hello"))?;
/// assert_eq!(journal.append(Entry::new(b"alice", b"r1", b"again")), Err(StoreError::Duplicate));
///
/// // A received list, with the state it brings, in one transaction (one fsync).
/// journal.stage_state(b"marks".to_vec(), b"E:1".to_vec());
/// let list = [Entry::new(b"bob", b"r1", b"hi"), Entry::new(b"alice", b"r1", b"hello")];
/// let mut outcomes = Vec::new();
/// journal.append_batch(&list, &mut outcomes)?;
/// assert_eq!(outcomes.iter().map(|o| o.map(|l| l.seq)).collect::<Vec<_>>(), [Some(2), None]);
/// drop(journal);
///
/// // Reopened: same epoch (the closure is not called), same lines, same state.
/// let journal = SqliteJournal::open(&path, || unreachable!())?;
/// assert!(!journal.is_new());
/// assert_eq!((journal.epoch(), journal.head()), (0x5eed_cafe_f00d_0001, 2));
/// assert_eq!(journal.resource(b"bob", b"r1").as_deref(), Some(&b"hi"[..]));
/// assert_eq!(journal.get_state(b"marks")?.as_deref(), Some(&b"E:1"[..]));
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SqliteJournal {
    conn: Connection,
    epoch: u64,
    /// The last line, its check included (kept in memory: every append chains from it).
    head: LineId,
    is_new: bool,
    max_entries: Option<u64>,
    /// State to write with the next transaction: `None` removes the key.
    staged: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl SqliteJournal {
    /// Opens the journal at `path` with the default [`Options`], creating it if the file
    /// does not exist; `new_epoch` is called only then, and its value (the caller's
    /// randomness: 64 random bits) is stored as the journal's epoch.
    pub fn open(path: impl AsRef<Path>, new_epoch: impl FnOnce() -> u64) -> Result<Self, Error> {
        Self::open_with(path, Options::default(), new_epoch)
    }

    /// Opens the journal at `path` with `options` (see [`open`](Self::open)).
    pub fn open_with(
        path: impl AsRef<Path>,
        options: Options,
        new_epoch: impl FnOnce() -> u64,
    ) -> Result<Self, Error> {
        let conn = Connection::open(path)?;
        // WAL: readers never block the writer, and a commit appends to the log (one fsync
        // under FULL) instead of rewriting pages in place.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            return Err(Error::JournalMode(mode));
        }
        Self::setup(conn, options, new_epoch)
    }

    /// A journal in memory (nothing persisted), with `epoch`: for tests of code written
    /// against this type.
    pub fn open_in_memory(epoch: u64) -> Result<Self, Error> {
        Self::setup(Connection::open_in_memory()?, Options::default(), || epoch)
    }

    fn setup(
        mut conn: Connection,
        options: Options,
        new_epoch: impl FnOnce() -> u64,
    ) -> Result<Self, Error> {
        let sync = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        // A second handle on the same file (another process) waits rather than failing.
        conn.busy_timeout(options.busy_timeout)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let is_new = match version {
            0 => {
                tx.execute_batch(SCHEMA)?;
                // Stored as SQLite's signed 64-bit integer, bit for bit.
                let epoch = new_epoch() as i64;
                tx.execute(
                    "INSERT INTO tether_meta (key, value) VALUES ('epoch', ?1)",
                    [epoch],
                )?;
                tx.pragma_update(None, "user_version", FORMAT)?;
                true
            }
            1 => {
                // Format 1 had no hash chain: add each line's check, folded in order.
                tx.execute_batch(
                    "ALTER TABLE tether_entries ADD COLUMN chk INTEGER NOT NULL DEFAULT 0",
                )?;
                let epoch: i64 = tx.query_row(
                    "SELECT value FROM tether_meta WHERE key = 'epoch'",
                    [],
                    |r| r.get(0),
                )?;
                let mut line = LineId::start(epoch as u64);
                let mut checks = Vec::new();
                {
                    let mut rows = tx.prepare(
                        "SELECT seq, author, resource, payload FROM tether_entries ORDER BY seq",
                    )?;
                    let mut rows = rows.query([])?;
                    while let Some(r) = rows.next()? {
                        let entry = Entry {
                            author: Bytes::from(r.get::<_, Vec<u8>>(1)?),
                            resource: Bytes::from(r.get::<_, Vec<u8>>(2)?),
                            payload: Bytes::from(r.get::<_, Vec<u8>>(3)?),
                        };
                        line = line.next(&entry);
                        checks.push((r.get::<_, i64>(0)?, line.check as i64));
                    }
                }
                let mut update = tx.prepare("UPDATE tether_entries SET chk = ?2 WHERE seq = ?1")?;
                for (seq, chk) in checks {
                    update.execute([seq, chk])?;
                }
                drop(update);
                tx.pragma_update(None, "user_version", FORMAT)?;
                false
            }
            FORMAT => false,
            other => return Err(Error::Format(other)),
        };
        let epoch: i64 = tx.query_row(
            "SELECT value FROM tether_meta WHERE key = 'epoch'",
            [],
            |r| r.get(0),
        )?;
        let (head, check): (i64, i64) = tx
            .query_row(
                "SELECT seq, chk FROM tether_entries ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, 0));
        tx.commit()?;
        Ok(SqliteJournal {
            conn,
            epoch: epoch as u64,
            head: LineId {
                epoch: epoch as u64,
                seq: head as u64,
                check: check as u64,
            },
            is_new,
            max_entries: options.max_entries,
            staged: BTreeMap::new(),
        })
    }

    /// Whether this open created the journal (a new epoch): the file did not exist, or
    /// was empty. A restart that finds `true` where a journal was expected lost its data.
    pub fn is_new(&self) -> bool {
        self.is_new
    }

    /// Stages `value` under `key`, to be written in the same transaction as the next
    /// batch or append (or [`put_state`](Self::put_state), or
    /// [`commit_state`](Self::commit_state)). A later stage of the same key replaces it.
    pub fn stage_state(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.staged.insert(key, Some(value));
    }

    /// Stages the removal of `key` (written as [`stage_state`](Self::stage_state) is).
    pub fn stage_remove_state(&mut self, key: Vec<u8>) {
        self.staged.insert(key, None);
    }

    /// Whether state is staged and not yet written.
    pub fn has_staged_state(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Writes `value` under `key` now, in one transaction with anything staged.
    pub fn put_state(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.staged.insert(key.to_vec(), Some(value.to_vec()));
        self.commit_state()
    }

    /// Removes `key` now, in one transaction with anything staged.
    pub fn remove_state(&mut self, key: &[u8]) -> Result<(), Error> {
        self.staged.insert(key.to_vec(), None);
        self.commit_state()
    }

    /// Writes the staged state now, in one transaction (nothing to do if none is staged).
    pub fn commit_state(&mut self) -> Result<(), Error> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        write_state(&tx, &self.staged)?;
        tx.commit()?;
        self.staged.clear();
        Ok(())
    }

    /// The state under `key`: the staged value if one is, else the stored one.
    pub fn get_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if let Some(staged) = self.staged.get(key) {
            return Ok(staged.clone());
        }
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM tether_state WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    /// Every state whose key starts with `prefix`, by key, staged values overlaid
    /// (a staged removal hides the stored value). A server that keeps one snapshot per
    /// session under `session/...` reads them all back at start with this.
    pub fn states_with_prefix(&self, prefix: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Error> {
        let mut found: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        {
            // Keys compare as bytes (memcmp), so the keys with the prefix are the range
            // [prefix, successor): the primary key's index answers it.
            let rows = match prefix_successor(prefix) {
                Some(end) => {
                    let mut stmt = self.conn.prepare_cached(
                        "SELECT key, value FROM tether_state WHERE key >= ?1 AND key < ?2",
                    )?;
                    let rows = stmt
                        .query_map(params![prefix, end], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<Vec<(Vec<u8>, Vec<u8>)>, _>>()?;
                    rows
                }
                None => {
                    let mut stmt = self
                        .conn
                        .prepare_cached("SELECT key, value FROM tether_state WHERE key >= ?1")?;
                    let rows = stmt
                        .query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<Vec<(Vec<u8>, Vec<u8>)>, _>>()?;
                    rows
                }
            };
            found.extend(rows);
        }
        for (key, value) in self.staged.range(prefix.to_vec()..) {
            if !key.starts_with(prefix) {
                break;
            }
            match value {
                Some(v) => found.insert(key.clone(), v.clone()),
                None => found.remove(key),
            };
        }
        Ok(found)
    }

    /// Marks a resource deleted: its line stays (a journal is append-only) but requests
    /// for it are answered 404. Returns whether the journal has it.
    pub fn delete(&mut self, author: &[u8], resource: &[u8]) -> Result<bool, Error> {
        let n = self.conn.execute(
            "UPDATE tether_entries SET deleted = 1 WHERE author = ?1 AND resource = ?2",
            params![author, resource],
        )?;
        Ok(n > 0)
    }

    /// [`JournalStore::append_batch`], with `state` written in the same transaction as the
    /// entries (after anything staged, so `state` wins for a key in both).
    pub fn append_batch_with_state(
        &mut self,
        entries: &[Entry],
        outcomes: &mut Vec<Option<LineId>>,
        state: &[(&[u8], &[u8])],
    ) -> Result<(), StoreError> {
        for (key, value) in state {
            self.staged.insert(key.to_vec(), Some(value.to_vec()));
        }
        self.batch(entries, outcomes)
    }

    /// One transaction: the entries not present, then the staged state, then commit (the
    /// fsync, under `Full`). On any error it rolls back whole: no entry, no state, and the
    /// staged state stays staged for the next try.
    fn batch(
        &mut self,
        entries: &[Entry],
        outcomes: &mut Vec<Option<LineId>>,
    ) -> Result<(), StoreError> {
        let start = outcomes.len();
        match self.try_batch(entries, outcomes) {
            Ok(head) => {
                self.head = head;
                self.staged.clear();
                Ok(())
            }
            Err(e) => {
                outcomes.truncate(start);
                Err(e)
            }
        }
    }

    fn try_batch(
        &mut self,
        entries: &[Entry],
        outcomes: &mut Vec<Option<LineId>>,
    ) -> Result<LineId, StoreError> {
        if entries.is_empty() && self.staged.is_empty() {
            return Ok(self.head); // nothing to write: no transaction, no fsync
        }
        let sqlite = |e: rusqlite::Error| StoreError::failed(Error::Sqlite(e));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        let mut head = self.head;
        {
            let mut insert = tx.prepare_cached(INSERT).map_err(sqlite)?;
            for e in entries {
                let line = head.next(e);
                let seq = line.seq;
                let changed = insert
                    .execute(params![
                        seq as i64,
                        &e.author[..],
                        &e.resource[..],
                        &e.payload[..],
                        line.check as i64
                    ])
                    .map_err(sqlite)?;
                if changed == 0 {
                    outcomes.push(None);
                    continue;
                }
                if self.max_entries.is_some_and(|max| seq > max) {
                    // Dropping the transaction rolls everything back.
                    return Err(StoreError::Full(
                        usize::try_from(self.max_entries.unwrap_or(0)).unwrap_or(usize::MAX),
                    ));
                }
                head = line;
                outcomes.push(Some(line));
            }
        }
        write_state(&tx, &self.staged).map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
        Ok(head)
    }
}

/// The smallest byte string greater than every string starting with `prefix` (`None`
/// when there is none: the prefix is empty or all `0xff`).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn write_state(
    tx: &rusqlite::Transaction<'_>,
    staged: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> Result<(), rusqlite::Error> {
    for (key, value) in staged {
        match value {
            Some(v) => tx
                .prepare_cached(
                    "INSERT INTO tether_state (key, value) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![key, v])?,
            None => tx
                .prepare_cached("DELETE FROM tether_state WHERE key = ?1")?
                .execute([key])?,
        };
    }
    Ok(())
}

impl JournalStore for SqliteJournal {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn head(&self) -> u64 {
        self.head.seq
    }

    fn head_line(&self) -> LineId {
        self.head
    }

    fn line(&self, seq: u64) -> Option<LineId> {
        if seq == 0 {
            return Some(LineId::start(self.epoch));
        }
        if seq == self.head.seq {
            return Some(self.head);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT chk FROM tether_entries WHERE seq = ?1")
            .ok()?;
        let check: i64 = stmt
            .query_row([i64::try_from(seq).ok()?], |r| r.get(0))
            .ok()?;
        Some(LineId {
            epoch: self.epoch,
            seq,
            check: check as u64,
        })
    }

    fn entry(&self, seq: u64) -> Option<Entry> {
        let seq = i64::try_from(seq).ok()?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT author, resource, payload FROM tether_entries WHERE seq = ?1")
            .ok()?;
        stmt.query_row([seq], |r| {
            Ok(Entry {
                author: Bytes::from(r.get::<_, Vec<u8>>(0)?),
                resource: Bytes::from(r.get::<_, Vec<u8>>(1)?),
                payload: Bytes::from(r.get::<_, Vec<u8>>(2)?),
            })
        })
        .ok()
    }

    fn contains(&self, author: &[u8], resource: &[u8]) -> bool {
        let Ok(mut stmt) = self
            .conn
            .prepare_cached("SELECT 1 FROM tether_entries WHERE author = ?1 AND resource = ?2")
        else {
            return false;
        };
        stmt.exists(params![author, resource]).unwrap_or(false)
    }

    /// One transaction (with any staged state); [`StoreError::Duplicate`] if the journal
    /// has the entry, and then nothing is written.
    fn append(&mut self, entry: Entry) -> Result<LineId, StoreError> {
        let mut outcome = Vec::with_capacity(1);
        // A duplicate commits an empty transaction: the staged state is written anyway,
        // as it would be by any batch.
        self.batch(core::slice::from_ref(&entry), &mut outcome)?;
        match outcome.first() {
            Some(Some(line)) => Ok(*line),
            _ => Err(StoreError::Duplicate),
        }
    }

    /// One transaction for the whole list (one fsync under [`Synchronous::Full`]),
    /// together with any staged state; all or nothing.
    fn append_batch(
        &mut self,
        entries: &[Entry],
        outcomes: &mut Vec<Option<LineId>>,
    ) -> Result<(), StoreError> {
        self.batch(entries, outcomes)
    }

    fn resource(&self, author: &[u8], resource: &[u8]) -> Option<Bytes> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT payload FROM tether_entries \
                 WHERE author = ?1 AND resource = ?2 AND deleted = 0",
            )
            .ok()?;
        stmt.query_row(params![author, resource], |r| r.get::<_, Vec<u8>>(0))
            .ok()
            .map(Bytes::from)
    }
}
