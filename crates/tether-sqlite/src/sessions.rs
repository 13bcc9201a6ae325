//! A [`Peer`]'s sessions kept in its [`SqliteJournal`], so that a restarted process
//! resumes them: [`DurableSessions`].
//!
//! A session snapshot ([`PeerSnapshot`]: the connection's tokens, unsent queue and
//! delivery counters, and the journal-sync [`Marks`](tether::sync::journal::Marks)) is
//! what lets a restarted node resume a session instead of starting a fresh one. This
//! module writes each session's snapshot to the journal's state table, removes the
//! snapshots of sessions that ended, and imports them into a fresh peer at start.
//!
//! # The rule: save every round, before writing
//!
//! The delivery counters in a snapshot (messages the peer acknowledged, messages received
//! from it) move with **every message**, not only when a session comes up or goes down.
//! A node restarted from a snapshot older than what its peer has seen holds counters
//! behind the peer's: the first acknowledgements of the resumption show the two records
//! apart, and the session ends on both sides as
//! [`EndReason::Diverged`](tether::session::EndReason::Diverged); the client then starts a
//! fresh session. Nothing is lost or applied twice (journal sync resyncs the fresh
//! session), but the session is gone, and with it its unsent queue and its marks.
//!
//! So a driver calls [`DurableSessions::save`] **after every round of inputs** and
//! **before writing the bytes that round produced** to its sockets:
//!
//! 1. feed the round's inputs to the peer (`handle_input`);
//! 2. drain `poll_output` until `Wait`, handling events and *holding* the transmits;
//! 3. `sessions.save(&mut peer, now)?` (one transaction, written only if a snapshot
//!    changed);
//! 4. write the held bytes; then close the links the peer closed.
//!
//! Whatever the peer has seen, the file then covers. Saving only on events (`Up`,
//! `Down`) leaves the counters behind as soon as one message flows. If `save` fails, do
//! not write the round's bytes: retry, or stop the node (a restart then resumes from the
//! last snapshot the peer can have seen).
//!
//! Received journal lists need no care of their own: the journal commits each list
//! (`append_batch`, one transaction) before the peer queues the `SYNC_OK` that confirms
//! it, so a snapshot never names a line that is not on disk.

use crate::{Error, SqliteJournal};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use tether::connect::{dual, merge};
use tether::peer::{Handover, Peer, PeerEvent, PeerSnapshot, Profile};
use tether::snapshot::{ImportError, SnapshotError};
use tether::sync::journal::Role;
use tether::{Instant, Machine, Output};

/// A connection profile whose sessions [`DurableSessions`] can keep: where each session's
/// snapshot lives in the journal's state table, and which of its fields move with the
/// clock alone.
///
/// Implemented for the four connection machines of tether (token-merge and dual-channel,
/// client and server); implement it for a profile of your own that implements
/// [`Handover`].
pub trait DurableProfile: Handover {
    /// The prefix of every state key this profile's snapshots are stored under. It keeps
    /// them apart from the application's own state keys, and from another profile's
    /// (restoring reads only this prefix).
    const KEY_PREFIX: &'static [u8];

    /// What follows [`KEY_PREFIX`](Self::KEY_PREFIX) in a session's key: something of
    /// the session that is the same in every process (a server's session ids are the
    /// process's own, and change when a restarted server imports its sessions). Empty for
    /// a client, which has one session.
    fn key_suffix(snapshot: &Self::Snapshot) -> Vec<u8>;

    /// The snapshot with the fields that change with time alone cleared (the time left
    /// before a session expires or a client gives up): two snapshots equal once cleared
    /// need no new write. The stored time left is then the one of the last write, which
    /// may give a restored session a little more grace than it had left.
    fn without_clock(snapshot: &Self::Snapshot) -> Self::Snapshot;

    /// The state key of what the profile keeps beside its sessions (a token-merge
    /// server's ended-session tombstones, so that a restarted server still tells a late
    /// `RESUME` of a formally ended session that it ended), outside
    /// [`KEY_PREFIX`](Self::KEY_PREFIX). `None` (the default): nothing beside.
    const BESIDE_KEY: Option<&'static [u8]> = None;

    /// A value that moves whenever what [`export_beside`](Self::export_beside) gives
    /// changes, other than with time alone: written again only then. `None`: nothing.
    fn beside_version(&self) -> Option<(u64, usize)> {
        None
    }

    /// What to keep under [`BESIDE_KEY`](Self::BESIDE_KEY) now.
    fn export_beside(&self, now: Instant) -> Vec<u8> {
        let _ = now;
        Vec::new()
    }

    /// Takes back what [`export_beside`](Self::export_beside) wrote, at restore.
    fn import_beside(&mut self, now: Instant, bytes: Bytes) -> Result<(), SnapshotError> {
        let _ = (now, bytes);
        Ok(())
    }
}

impl DurableProfile for merge::MergeClient {
    const KEY_PREFIX: &'static [u8] = b"tether/session/merge-client";

    fn key_suffix(_: &merge::MergeClientSnapshot) -> Vec<u8> {
        Vec::new()
    }

    fn without_clock(snapshot: &merge::MergeClientSnapshot) -> merge::MergeClientSnapshot {
        merge::MergeClientSnapshot {
            give_up_in: None,
            ..snapshot.clone()
        }
    }
}

impl<T: merge::TokenSource> DurableProfile for merge::MergeServer<T> {
    const KEY_PREFIX: &'static [u8] = b"tether/session/merge-server/";

    /// The merged token: it names the session in every process (its client resumes with
    /// it).
    fn key_suffix(snapshot: &merge::MergeSessionSnapshot) -> Vec<u8> {
        snapshot.merged.as_bytes().to_vec()
    }

    fn without_clock(snapshot: &merge::MergeSessionSnapshot) -> merge::MergeSessionSnapshot {
        merge::MergeSessionSnapshot {
            expires_in: None,
            ..snapshot.clone()
        }
    }

    /// The tombstones of formally ended sessions ([`merge::MergeEndedSnapshot`]).
    const BESIDE_KEY: Option<&'static [u8]> = Some(b"tether/ended/merge-server");

    fn beside_version(&self) -> Option<(u64, usize)> {
        Some(self.ended_version())
    }

    fn export_beside(&self, now: Instant) -> Vec<u8> {
        let mut bytes = BytesMut::new();
        self.export_ended(now).encode(&mut bytes);
        bytes.to_vec()
    }

    fn import_beside(&mut self, now: Instant, bytes: Bytes) -> Result<(), SnapshotError> {
        let ended = merge::MergeEndedSnapshot::decode(bytes)?;
        self.import_ended(now, &ended);
        Ok(())
    }
}

impl DurableProfile for dual::DualClient {
    const KEY_PREFIX: &'static [u8] = b"tether/session/dual-client";

    fn key_suffix(_: &dual::DualClientSnapshot) -> Vec<u8> {
        Vec::new()
    }

    /// A dual-channel client's snapshot holds no time.
    fn without_clock(snapshot: &dual::DualClientSnapshot) -> dual::DualClientSnapshot {
        snapshot.clone()
    }
}

impl<T: dual::TokenSource> DurableProfile for dual::DualServer<T> {
    const KEY_PREFIX: &'static [u8] = b"tether/session/dual-server/";

    /// Token A: given once when the player connects, it names the player in every
    /// process.
    fn key_suffix(snapshot: &dual::PlayerSnapshot) -> Vec<u8> {
        snapshot.token_a.as_bytes().to_vec()
    }

    fn without_clock(snapshot: &dual::PlayerSnapshot) -> dual::PlayerSnapshot {
        dual::PlayerSnapshot {
            expires_in: None,
            ..snapshot.clone()
        }
    }
}

/// Why a stored snapshot was not restored. Its row is removed: the session starts afresh
/// (its peer is told so when it tries to resume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRestored {
    /// The stored bytes are not a snapshot of this profile (corrupt, or another version).
    Decode(SnapshotError),
    /// The connection refused to import it (full, a duplicate token, ...).
    Import(ImportError),
}

impl fmt::Display for NotRestored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotRestored::Decode(e) => write!(f, "snapshot unreadable: {e}"),
            NotRestored::Import(e) => write!(f, "snapshot refused: {e}"),
        }
    }
}

/// What [`DurableSessions::restore`] did.
pub struct Restored<P: Profile> {
    /// The sessions imported, each RECONNECTING: its client resumes it (a restored client
    /// asks for a transport and resumes by itself).
    pub sessions: Vec<P::Session>,
    /// The stored snapshots that could not be imported (their rows are removed), with
    /// their state keys.
    pub dropped: Vec<(Vec<u8>, NotRestored)>,
    /// Output a fresh client had queued when its stored session was imported, other than
    /// its request for a transport (the restored client makes its own): handle it as if
    /// polled, before polling the peer. Empty unless a client's snapshot was found;
    /// if none could be imported, the request is here too, and must be handled.
    pub pending: Vec<Output<PeerEvent<P::Event, P::Session>>>,
}

impl<P: Profile> fmt::Debug for Restored<P>
where
    P::Event: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Restored")
            .field("sessions", &self.sessions)
            .field("dropped", &self.dropped)
            .field("pending", &self.pending)
            .finish()
    }
}

/// One session's row as last written: its key, and the snapshot without its clock.
struct Saved<C> {
    key: Vec<u8>,
    steady: PeerSnapshot<C>,
}

/// A [`Peer`]'s session snapshots, kept in the state table of its [`SqliteJournal`]: a
/// client's one session, or every session of a server (each under a key that does not
/// change across restarts). [`restore`](Self::restore) imports them into a fresh peer at
/// start; [`save`](Self::save) (or [`stage`](Self::stage)) writes those that changed and
/// removes those of sessions that ended.
///
/// **Call `save` after every round of inputs, before writing the bytes the round
/// produced** (the [module docs](self) say why: a snapshot's delivery counters move with
/// every message).
///
/// A client whose process is killed and started again on the same file resumes its
/// session:
///
/// ```
/// use tether::connect::merge::{MergeClient, MergeClientConfig, MergeServer, MergeServerConfig};
/// use tether::peer::{Peer, PeerEvent};
/// use tether::session::{Event, Outcome};
/// use tether::sync::journal::{MemJournal, SyncConfig};
/// use tether::{Instant, Token};
/// use tether_sqlite::sessions::DurableSessions;
/// use tether_sqlite::SqliteJournal;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("tether-sessions-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let path = dir.join("client.db");
/// let mut now = Instant::ZERO;
/// let mut server = Peer::new(
///     MergeServer::new(MergeServerConfig::default(), || Token::new(&[b'S'; 16]).unwrap()),
///     SyncConfig::default(),
///     MemJournal::new(1, 10_000),
/// );
///
/// // At start: open the file, build the peer, and restore what the file holds.
/// let start = |now: Instant| -> Result<_, Box<dyn std::error::Error>> {
///     let journal = SqliteJournal::open(&path, || 0x5eed_0001)?;
///     let conn = MergeClient::new(now, MergeClientConfig::default(), Token::new(&[b'C'; 16])?)?;
///     let mut client = Peer::new(conn, SyncConfig::default(), journal);
///     let mut sessions = DurableSessions::new();
///     let restored = sessions.restore(&mut client, now)?;
///     Ok((client, sessions, restored.sessions))
/// };
///
/// let (mut client, mut sessions, restored) = start(now)?;
/// assert!(restored.is_empty()); // a new file: a fresh session
/// // The driver's loop: inputs, then drain (holding the bytes), then save, then write.
/// let ups = rounds(&mut now, &mut client, &mut sessions, &mut server);
/// assert_eq!(ups, [Outcome::Fresh]);
///
/// // kill -9: the process and its transport are gone; the file stays.
/// drop((client, sessions));
/// # server_lost_the_link(&mut now, &mut server);
/// let (mut client, mut sessions, restored) = start(now)?;
/// assert_eq!(restored, [()]);
/// let ups = rounds(&mut now, &mut client, &mut sessions, &mut server);
/// assert_eq!(ups, [Outcome::Resumed]);
/// # drop((client, sessions));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// #
/// # use tether::{Duration, Input, Link, Machine, Output};
/// # type Client = Peer<MergeClient, SqliteJournal>;
/// # fn server_lost_the_link<S: Machine>(now: &mut Instant, server: &mut S) {
/// #     server.handle_input(*now, Input::Closed(Link::main(LINK.with(|l| l.get())))).ok();
/// # }
/// # thread_local!(static LINK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
/// # /// Rounds until quiet for a second: the client's output is drained, its sessions
/// # /// saved, and only then its bytes delivered. Returns the client's `Up` outcomes.
/// # fn rounds<S: Machine>(now: &mut Instant, client: &mut Client, sessions: &mut DurableSessions<MergeClient>, server: &mut S) -> Vec<Outcome> {
/// #     let mut ups = Vec::new();
/// #     for _ in 0..1_000 {
/// #         let mut held = Vec::new();
/// #         loop {
/// #             match client.poll_output() {
/// #                 Output::Transmit(t) => held.push(t),
/// #                 Output::Open(_) => {
/// #                     let link = Link::main(LINK.with(|l| { l.set(l.get() + 1); l.get() }));
/// #                     client.handle_input(*now, Input::Opened(link)).unwrap();
/// #                     server.handle_input(*now, Input::Opened(link)).unwrap();
/// #                 }
/// #                 Output::Event(PeerEvent::Connection(Event::Up { outcome, .. })) => ups.push(outcome),
/// #                 Output::Wait(_) => break,
/// #                 _ => {}
/// #             }
/// #         }
/// #         sessions.save(client, *now).unwrap(); // before any byte leaves
/// #         let moved = !held.is_empty();
/// #         for t in held {
/// #             server.handle_input(*now, Input::Received(t.link, t.payload)).unwrap();
/// #         }
/// #         let mut answered = false;
/// #         loop {
/// #             match server.poll_output() {
/// #                 Output::Transmit(t) => { answered = true; client.handle_input(*now, Input::Received(t.link, t.payload)).unwrap() }
/// #                 Output::Wait(_) => break,
/// #                 _ => {}
/// #             }
/// #         }
/// #         if moved || answered { continue; }
/// #         match [client.poll_timeout(), server.poll_timeout()].into_iter().flatten().min() {
/// #             Some(t) if t <= *now + Duration::from_secs(1) => {
/// #                 *now = (*now).max(t);
/// #                 client.handle_input(*now, Input::Timeout).unwrap();
/// #                 server.handle_input(*now, Input::Timeout).unwrap();
/// #             }
/// #             _ => break,
/// #         }
/// #     }
/// #     ups
/// # }
/// ```
pub struct DurableSessions<P: DurableProfile> {
    saved: BTreeMap<P::Session, Saved<P::Snapshot>>,
    /// The version of what was last staged under the profile's `BESIDE_KEY`.
    beside: Option<(u64, usize)>,
}

impl<P: DurableProfile> Default for DurableSessions<P> {
    fn default() -> Self {
        DurableSessions {
            saved: BTreeMap::new(),
            beside: None,
        }
    }
}

impl<P: DurableProfile> fmt::Debug for DurableSessions<P> {
    /// The sessions and their keys' lengths: keys carry tokens, which are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableSessions")
            .field("saved", &self.saved.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<P> DurableSessions<P>
where
    P: DurableProfile,
{
    /// Nothing saved yet: [`restore`](Self::restore) what the file holds, or start afresh.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sessions whose snapshots are written (or staged).
    pub fn sessions(&self) -> impl Iterator<Item = P::Session> + '_ {
        self.saved.keys().copied()
    }

    /// Imports into `peer` every session snapshot its journal holds for this profile.
    /// Call it on a fresh peer, before its first input: a client imports only while it
    /// holds no session and no transport ([`Error::PeerNotFresh`] otherwise, and the
    /// peer is to be dropped: its queued output may have been taken).
    ///
    /// A fresh client asks for its first transport as it is built; when the file holds
    /// its session, that request is dropped here (the restored client asks for its own,
    /// to resume), and anything else queued with it is returned in
    /// [`Restored::pending`]. A snapshot that does not decode or is refused is removed
    /// from the file and reported in [`Restored::dropped`]: that session starts afresh.
    pub fn restore(
        &mut self,
        peer: &mut Peer<P, SqliteJournal>,
        now: Instant,
    ) -> Result<Restored<P>, Error>
    where
        P::Error: 'static,
    {
        if let Some(key) = P::BESIDE_KEY {
            if let Some(bytes) = peer.store().get_state(key)? {
                // Unreadable: dropped, and written again at the next save.
                if peer
                    .connection_mut()
                    .import_beside(now, Bytes::from(bytes))
                    .is_err()
                {
                    peer.store_mut().stage_remove_state(key.to_vec());
                }
            }
        }
        let rows = peer.store().states_with_prefix(P::KEY_PREFIX)?;
        let mut restored = Restored {
            sessions: Vec::new(),
            dropped: Vec::new(),
            pending: Vec::new(),
        };
        if rows.is_empty() {
            return Ok(restored);
        }
        let mut snapshots = Vec::new();
        for (key, value) in rows {
            match PeerSnapshot::<P::Snapshot>::decode(Bytes::from(value)) {
                Ok(s) => snapshots.push((key, s)),
                Err(e) => restored.dropped.push((key, NotRestored::Decode(e))),
            }
        }
        // The fresh client's request for a transport is for a session that the import
        // replaces: held back, and dropped once the restored client has asked for its own.
        let mut held = Vec::new();
        if P::ROLE == Role::Client && !snapshots.is_empty() {
            loop {
                match peer.poll_output() {
                    Output::Wait(_) => break,
                    out => held.push(out),
                }
            }
        }
        for (key, snapshot) in snapshots {
            let steady = steady::<P>(&snapshot);
            match peer.import_session(now, snapshot) {
                Ok(session) => {
                    self.saved.insert(session, Saved { key, steady });
                    restored.sessions.push(session);
                }
                // The caller's mistake: what it has done with the peer is not ours to undo.
                Err(ImportError::Busy) => return Err(Error::PeerNotFresh),
                Err(e) => restored.dropped.push((key, NotRestored::Import(e))),
            }
        }
        if restored.sessions.is_empty() {
            restored.pending = held;
        } else {
            restored
                .pending
                .extend(held.into_iter().filter(|o| !matches!(o, Output::Open(_))));
        }
        if !restored.dropped.is_empty() {
            let journal = peer.store_mut();
            for (key, _) in &restored.dropped {
                journal.stage_remove_state(key.clone());
            }
            journal.commit_state()?;
        }
        Ok(restored)
    }

    /// Stages, into the journal's next transaction, the snapshot of every session whose
    /// snapshot changed since it was last staged (the time left before expiry aside), and
    /// the removal of those of sessions the peer no longer has (ended, expired, taken
    /// away). Returns the number of rows staged. Nothing is written until the journal's
    /// next transaction (a batch, an append, [`SqliteJournal::commit_state`]): use
    /// [`save`](Self::save) to write them now.
    pub fn stage(&mut self, peer: &mut Peer<P, SqliteJournal>, now: Instant) -> usize {
        let mut changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut live = BTreeSet::new();
        let sessions: Vec<P::Session> = peer.sessions().map(|(s, _)| s).collect();
        for session in sessions {
            // None: not exportable (no session yet, or ending): treated as gone.
            let Some(snapshot) = peer.export_session(now, session) else {
                continue;
            };
            live.insert(session);
            let steady = steady::<P>(&snapshot);
            if self.saved.get(&session).is_some_and(|s| s.steady == steady) {
                continue;
            }
            let mut key = P::KEY_PREFIX.to_vec();
            key.extend_from_slice(&P::key_suffix(&snapshot.connection));
            if let Some(old) = self.saved.get(&session) {
                if old.key != key {
                    changes.push((old.key.clone(), None));
                }
            }
            let mut bytes = BytesMut::new();
            snapshot.encode(&mut bytes);
            changes.push((key.clone(), Some(bytes.to_vec())));
            self.saved.insert(session, Saved { key, steady });
        }
        let gone: Vec<P::Session> = self
            .saved
            .keys()
            .filter(|s| !live.contains(*s))
            .copied()
            .collect();
        for session in gone {
            if let Some(Saved { key, .. }) = self.saved.remove(&session) {
                // A live session may have the key now (a client's fresh session takes over
                // its one key): its new snapshot is staged above and must stay.
                if !self.saved.values().any(|s| s.key == key) {
                    changes.push((key, None));
                }
            }
        }
        if let Some(key) = P::BESIDE_KEY {
            let version = peer.connection().beside_version();
            if version.is_some() && version != self.beside {
                changes.push((key.to_vec(), Some(peer.connection().export_beside(now))));
                self.beside = version;
            }
        }
        let staged = changes.len();
        let journal = peer.store_mut();
        for (key, value) in changes {
            match value {
                Some(v) => journal.stage_state(key, v),
                None => journal.stage_remove_state(key),
            }
        }
        staged
    }

    /// [`stage`](Self::stage), then writes everything staged in the journal (this
    /// module's rows and any state the application staged) in one transaction; nothing is
    /// written when nothing changed. Returns the number of rows this call staged.
    ///
    /// Call it after every round of inputs and before writing the round's bytes; if it
    /// fails, write nothing (the staged rows stay staged for the next try).
    pub fn save(
        &mut self,
        peer: &mut Peer<P, SqliteJournal>,
        now: Instant,
    ) -> Result<usize, Error> {
        let staged = self.stage(peer, now);
        peer.store_mut().commit_state()?;
        Ok(staged)
    }
}

fn steady<P: DurableProfile>(snapshot: &PeerSnapshot<P::Snapshot>) -> PeerSnapshot<P::Snapshot> {
    PeerSnapshot {
        connection: P::without_clock(&snapshot.connection),
        marks: snapshot.marks,
    }
}
