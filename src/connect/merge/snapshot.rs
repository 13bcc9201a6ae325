//! Snapshots of token-merge sessions (docs/PROTOCOL.md section 8): what a server or client
//! needs to take a session over in another process. See [`crate::snapshot`].

use super::node::Status;
use crate::snapshot::{
    bad_field, kind, put_opt_duration, put_opt_token, put_queue, read_opt_duration, read_opt_token,
    read_queue, Snapshot, SnapshotError,
};
use crate::time::Duration;
use crate::token::Token;
use crate::wire::{put_token, Message, Reader};
use alloc::vec::Vec;
use bytes::{BufMut, BytesMut};

/// One server session of the token-merge registry, as
/// [`MergeServer::export_session`](super::MergeServer::export_session) gives it.
///
/// Holds secrets (the tokens): store and move it securely. `Debug` prints no token bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeSessionSnapshot {
    /// The status at export: [`Status::Connected`] or [`Status::Reconnecting`]. An import
    /// always makes the session RECONNECTING (its transport stayed behind).
    pub status: Status,
    /// The server node's own token.
    pub local: Token,
    /// The client's token, as received in the handshake.
    pub remote: Option<Token>,
    /// The merged session token: what the client resumes with.
    pub merged: Token,
    /// Messages held for the client, oldest first: sent and not acknowledged, or queued
    /// while it was away. In tether's encoding they are numbered from `acked + 1` and
    /// replayed after the resumption.
    pub queue: Vec<Message>,
    /// Numbered messages the client acknowledged (tether's encoding; 0 in dop's).
    pub acked: u64,
    /// Numbered messages received from the client (tether's encoding; 0 in dop's).
    pub received: u64,
    /// For a RECONNECTING session, how long it had left before it would be forgotten,
    /// from the export's `now`. `None` for a CONNECTED one (the importer's full
    /// `resume_grace` applies).
    pub expires_in: Option<Duration>,
}

/// A token-merge client's session, as [`MergeClient::snapshot`](super::MergeClient::snapshot) gives
/// it.
///
/// Holds secrets (the tokens): store and move it securely. `Debug` prints no token bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeClientSnapshot {
    /// The status at export: [`Status::Connected`] or [`Status::Reconnecting`] (a client
    /// in the middle of a resumption is RECONNECTING). A restored client is RECONNECTING.
    pub status: Status,
    /// The client's own token.
    pub local: Token,
    /// The server's token from the last handshake.
    pub remote: Option<Token>,
    /// The merged session token.
    pub merged: Token,
    /// Messages held for the server, oldest first: sent and not acknowledged, or queued
    /// while not connected (numbered from `acked + 1` in tether's encoding).
    pub queue: Vec<Message>,
    /// Numbered messages the server acknowledged (tether's encoding; 0 in dop's).
    pub acked: u64,
    /// Numbered messages received from the server (tether's encoding; 0 in dop's).
    pub received: u64,
    /// For a RECONNECTING client, how long it had left before giving up, from the
    /// export's `now`. `None` for a CONNECTED one (the full `give_up_after` applies).
    pub give_up_in: Option<Duration>,
}

fn put_status(out: &mut BytesMut, s: Status) {
    out.put_u8(s as u8);
}

fn read_status(r: &mut Reader) -> Result<Status, SnapshotError> {
    match r.u8("status")? {
        2 => Ok(Status::Connected),
        3 => Ok(Status::Reconnecting),
        _ => Err(bad_field(
            "status",
            "a snapshot is CONNECTED (2) or RECONNECTING (3)",
        )),
    }
}

/// Body: `[STATUS u8][LOCAL token][REMOTE opt token][MERGED token][TIME opt u64 µs][QUEUE]
/// [ACKED u64][RECEIVED u64]`.
// One writer for both snapshot kinds: the fields are the body's, in order.
#[allow(clippy::too_many_arguments)]
fn put_common(
    out: &mut BytesMut,
    status: Status,
    local: &Token,
    remote: Option<&Token>,
    merged: &Token,
    time: Option<Duration>,
    queue: &[Message],
    counters: (u64, u64),
) {
    put_status(out, status);
    put_token(out, local);
    put_opt_token(out, remote);
    put_token(out, merged);
    put_opt_duration(out, time);
    put_queue(out, queue.iter());
    out.put_u64(counters.0);
    out.put_u64(counters.1);
}

type Common = (
    Status,
    Token,
    Option<Token>,
    Token,
    Option<Duration>,
    Vec<Message>,
    (u64, u64),
);

fn read_common(r: &mut Reader) -> Result<Common, SnapshotError> {
    let status = read_status(r)?;
    let local = r.token("local token")?;
    let remote = read_opt_token(r, "remote token")?;
    let merged = r.token("merged token")?;
    let time = read_opt_duration(r, "time left")?;
    let queue = read_queue(r)?;
    let counters = (r.u64("acked")?, r.u64("received")?);
    Ok((status, local, remote, merged, time, queue, counters))
}

impl Snapshot for MergeSessionSnapshot {
    const KIND: u8 = kind::MERGE_SESSION;

    fn put_body(&self, out: &mut BytesMut) {
        put_common(
            out,
            self.status,
            &self.local,
            self.remote.as_ref(),
            &self.merged,
            self.expires_in,
            &self.queue,
            (self.acked, self.received),
        );
    }

    fn read_body(r: &mut Reader) -> Result<Self, SnapshotError> {
        let (status, local, remote, merged, expires_in, queue, (acked, received)) = read_common(r)?;
        Ok(MergeSessionSnapshot {
            status,
            local,
            remote,
            merged,
            queue,
            acked,
            received,
            expires_in,
        })
    }
}

impl Snapshot for MergeClientSnapshot {
    const KIND: u8 = kind::MERGE_CLIENT;

    fn put_body(&self, out: &mut BytesMut) {
        put_common(
            out,
            self.status,
            &self.local,
            self.remote.as_ref(),
            &self.merged,
            self.give_up_in,
            &self.queue,
            (self.acked, self.received),
        );
    }

    fn read_body(r: &mut Reader) -> Result<Self, SnapshotError> {
        let (status, local, remote, merged, give_up_in, queue, (acked, received)) = read_common(r)?;
        Ok(MergeClientSnapshot {
            status,
            local,
            remote,
            merged,
            queue,
            acked,
            received,
            give_up_in,
        })
    }
}

crate::snapshot::inherent_codec!(MergeSessionSnapshot);
crate::snapshot::inherent_codec!(MergeClientSnapshot);
