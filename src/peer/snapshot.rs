//! Handing a [`Peer`]'s session over to another process: the connection's snapshot plus
//! the session's journal-sync [`Marks`] (docs/PROTOCOL.md section 8).
//!
//! The journal itself is not in the snapshot: it is the application's store. A server
//! fleet shares (or replicates) its journal, so the marks, which name lines of it, mean the
//! same on the importing server.

use super::{Peer, Profile};
use crate::connect::{dual, merge};
use crate::snapshot::{kind, put_marks, read_marks, ImportError, Snapshot, SnapshotError};
use crate::sync::journal::{JournalStore, JournalSync, Marks};
use crate::time::Instant;
use crate::wire::Reader;
use bytes::{Bytes, BytesMut};
use core::fmt::Debug;

/// A connection profile whose sessions can be exported and imported.
pub trait Handover: Profile {
    /// The connection's snapshot of one session.
    type Snapshot: Snapshot + Clone + PartialEq + Debug;

    /// One session's snapshot (`None` if unknown, or not connected or reconnecting).
    fn export_session(&self, now: Instant, session: Self::Session) -> Option<Self::Snapshot>;

    /// Forgets a session without telling its peer (its transports are closed); `false` if
    /// unknown or if the machine cannot (a client keeps its one session).
    fn forget_session(&mut self, now: Instant, session: Self::Session) -> bool;

    /// Takes a session over; it is RECONNECTING (its transport did not move). A client
    /// imports only while idle and becomes the restored client.
    fn import_session(
        &mut self,
        now: Instant,
        snapshot: Self::Snapshot,
    ) -> Result<Self::Session, ImportError>;
}

impl<S: merge::TokenSource> Handover for merge::MergeServer<S> {
    type Snapshot = merge::MergeSessionSnapshot;

    fn export_session(&self, now: Instant, session: merge::SessionId) -> Option<Self::Snapshot> {
        merge::MergeServer::export_session(self, now, session)
    }

    fn forget_session(&mut self, now: Instant, session: merge::SessionId) -> bool {
        self.take_session(now, session).is_some()
    }

    fn import_session(
        &mut self,
        now: Instant,
        snapshot: Self::Snapshot,
    ) -> Result<merge::SessionId, ImportError> {
        merge::MergeServer::import_session(self, now, snapshot)
    }
}

impl Handover for merge::MergeClient {
    type Snapshot = merge::MergeClientSnapshot;

    fn export_session(&self, now: Instant, _: ()) -> Option<Self::Snapshot> {
        self.snapshot(now)
    }

    fn forget_session(&mut self, _: Instant, _: ()) -> bool {
        false
    }

    fn import_session(
        &mut self,
        now: Instant,
        snapshot: Self::Snapshot,
    ) -> Result<(), ImportError> {
        if !self.is_idle() {
            return Err(ImportError::Busy);
        }
        *self = merge::MergeClient::restore(now, self.config(), snapshot)?;
        Ok(())
    }
}

impl<T: dual::TokenSource> Handover for dual::DualServer<T> {
    type Snapshot = dual::PlayerSnapshot;

    fn export_session(&self, now: Instant, player: u16) -> Option<Self::Snapshot> {
        self.export_player(now, player)
    }

    fn forget_session(&mut self, now: Instant, player: u16) -> bool {
        self.take_player(now, player).is_some()
    }

    fn import_session(
        &mut self,
        now: Instant,
        snapshot: Self::Snapshot,
    ) -> Result<u16, ImportError> {
        self.import_player(now, snapshot)
    }
}

impl Handover for dual::DualClient {
    type Snapshot = dual::DualClientSnapshot;

    fn export_session(&self, now: Instant, _: ()) -> Option<Self::Snapshot> {
        self.snapshot(now)
    }

    fn forget_session(&mut self, _: Instant, _: ()) -> bool {
        false
    }

    fn import_session(
        &mut self,
        now: Instant,
        snapshot: Self::Snapshot,
    ) -> Result<(), ImportError> {
        if !matches!(
            self.state(),
            dual::DualClientState::Idle | dual::DualClientState::Closed
        ) {
            return Err(ImportError::Busy);
        }
        *self = dual::DualClient::restore(now, self.config(), snapshot)?;
        Ok(())
    }
}

/// A [`Peer`]'s session: the connection's snapshot `C` and the session's journal-sync
/// marks. Encoded as the connection's snapshot with the kind byte's high bit set and the
/// marks after its body.
///
/// Holds the session's secret tokens: store and move it securely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSnapshot<C> {
    /// The connection's snapshot.
    pub connection: C,
    /// How far each side's journal is confirmed for this session.
    pub marks: Marks,
}

impl<C: Snapshot> Snapshot for PeerSnapshot<C> {
    const KIND: u8 = C::KIND | kind::PEER_FLAG;

    fn put_body(&self, out: &mut BytesMut) {
        self.connection.put_body(out);
        put_marks(out, &self.marks);
    }

    fn read_body(r: &mut Reader) -> Result<Self, SnapshotError> {
        let connection = C::read_body(r)?;
        let marks = read_marks(r)?;
        Ok(PeerSnapshot { connection, marks })
    }
}

impl<C: Snapshot> PeerSnapshot<C> {
    /// Appends the snapshot's bytes (docs/PROTOCOL.md section 8) to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        Snapshot::encode(self, out)
    }

    /// Reads a snapshot; any bytes give one or a typed error, never a panic.
    pub fn decode(bytes: Bytes) -> Result<Self, SnapshotError> {
        <Self as Snapshot>::decode(bytes)
    }
}

impl<P, S> Peer<P, S>
where
    P: Handover,
    S: JournalStore,
{
    /// One session's snapshot with its journal-sync marks, to hand it over to another
    /// process (see [`crate::snapshot`]). The session stays here.
    pub fn export_session(
        &self,
        now: Instant,
        session: P::Session,
    ) -> Option<PeerSnapshot<P::Snapshot>> {
        let connection = self.conn.export_session(now, session)?;
        let marks = self.marks(session).unwrap_or_default();
        Some(PeerSnapshot { connection, marks })
    }

    /// Exports a session and forgets it here (connection and sync) without telling its
    /// peer: its transports are closed, and it resumes wherever the caller now routes it.
    /// `None` if unknown, or on a client (which keeps its session).
    pub fn take_session(
        &mut self,
        now: Instant,
        session: P::Session,
    ) -> Option<PeerSnapshot<P::Snapshot>> {
        let snap = self.export_session(now, session)?;
        self.now = self.now.max(now);
        if !self.conn.forget_session(self.now, session) {
            return None;
        }
        self.syncs.remove(&session);
        self.up.remove(&session);
        self.pump();
        Some(snap)
    }

    /// Takes a session over: the connection imports it (RECONNECTING), and its sync starts
    /// from the snapshot's marks, so that the resync after its client resumes sends only
    /// what is not confirmed. The machine's output and deadline may have changed: poll it.
    pub fn import_session(
        &mut self,
        now: Instant,
        snapshot: PeerSnapshot<P::Snapshot>,
    ) -> Result<P::Session, ImportError> {
        self.now = self.now.max(now);
        let session = self.conn.import_session(self.now, snapshot.connection)?;
        let mut sync = JournalSync::new(self.role, self.config.clone());
        sync.set_marks(snapshot.marks);
        self.syncs.insert(session, sync);
        self.up.insert(session, false);
        self.pump();
        Ok(session)
    }
}
