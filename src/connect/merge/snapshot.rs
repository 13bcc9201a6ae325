//! Snapshots of token-merge sessions (docs/PROTOCOL.md section 8): what a server or client
//! needs to take a session over in another process. See [`crate::snapshot`].

use super::ended::EndedBy;
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
    /// The merged session token: the session's name in every process (it never changes).
    pub merged: Token,
    /// What the session's resumption secrets derive from (tether's encoding; `None` in
    /// dop's, where the merged token is the only secret).
    pub secrets: Option<MergeSecrets>,
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

/// What a token-merge server session's resumption secrets derive from (tether's encoding).
///
/// Generation `g`'s secret is derived from `key`; the server offers a fresh generation with
/// every confirmation, and a RESUME presenting one older than `oldest` is refused. Because
/// newer generations are derived, not stored, a server restored from an older copy of the
/// session still accepts the newer secret its client holds.
///
/// `key` is a secret: with it anyone can make the session's resumption secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeSecrets {
    /// The session's key (16 bytes, derived by the server that made the session).
    pub key: Token,
    /// The oldest generation that still resumes.
    pub oldest: u32,
    /// The next generation to offer.
    pub next: u32,
    /// Whether the merged token still resumes (no secret proven yet).
    pub merged_resumes: bool,
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
    /// The resumption secret the client presents in its next RESUME: the last one the
    /// server offered (tether's encoding), or the merged token.
    pub secret: Token,
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

/// The body's head: `[STATUS u8][LOCAL token][REMOTE opt token][MERGED token]`; then the
/// server's `[SECRETS opt ([KEY token][OLDEST u32][NEXT u32][MERGED_RESUMES u8])]`, the
/// client's `[SECRET token]`.
fn put_head(out: &mut BytesMut, status: Status, tokens: [&Token; 2], remote: Option<&Token>) {
    let [local, merged] = tokens;
    put_status(out, status);
    put_token(out, local);
    put_opt_token(out, remote);
    put_token(out, merged);
}

/// The body's tail: `[TIME opt u64 µs][QUEUE][ACKED u64][RECEIVED u64]`.
fn put_tail(out: &mut BytesMut, time: Option<Duration>, queue: &[Message], counters: (u64, u64)) {
    put_opt_duration(out, time);
    put_queue(out, queue.iter());
    out.put_u64(counters.0);
    out.put_u64(counters.1);
}

type Head = (Status, Token, Option<Token>, Token);
type Tail = (Option<Duration>, Vec<Message>, (u64, u64));

fn read_head(r: &mut Reader) -> Result<Head, SnapshotError> {
    let status = read_status(r)?;
    let local = r.token("local token")?;
    let remote = read_opt_token(r, "remote token")?;
    let merged = r.token("merged token")?;
    Ok((status, local, remote, merged))
}

fn read_tail(r: &mut Reader) -> Result<Tail, SnapshotError> {
    let time = read_opt_duration(r, "time left")?;
    let queue = read_queue(r)?;
    let counters = (r.u64("acked")?, r.u64("received")?);
    Ok((time, queue, counters))
}

impl Snapshot for MergeSessionSnapshot {
    const KIND: u8 = kind::MERGE_SESSION;

    fn put_body(&self, out: &mut BytesMut) {
        let tokens = [&self.local, &self.merged];
        put_head(out, self.status, tokens, self.remote.as_ref());
        match &self.secrets {
            Some(k) => {
                out.put_u8(1);
                put_token(out, &k.key);
                out.put_u32(k.oldest);
                out.put_u32(k.next);
                out.put_u8(u8::from(k.merged_resumes));
            }
            None => out.put_u8(0),
        }
        put_tail(
            out,
            self.expires_in,
            &self.queue,
            (self.acked, self.received),
        );
    }

    fn read_body(r: &mut Reader) -> Result<Self, SnapshotError> {
        let (status, local, remote, merged) = read_head(r)?;
        let secrets = if r.bool("secrets")? {
            Some(MergeSecrets {
                key: r.token("secrets key")?,
                oldest: r.u32("oldest generation")?,
                next: r.u32("next generation")?,
                merged_resumes: r.bool("merged resumes")?,
            })
        } else {
            None
        };
        let (expires_in, queue, (acked, received)) = read_tail(r)?;
        Ok(MergeSessionSnapshot {
            status,
            local,
            remote,
            merged,
            secrets,
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
        let tokens = [&self.local, &self.merged];
        put_head(out, self.status, tokens, self.remote.as_ref());
        put_token(out, &self.secret);
        put_tail(
            out,
            self.give_up_in,
            &self.queue,
            (self.acked, self.received),
        );
    }

    fn read_body(r: &mut Reader) -> Result<Self, SnapshotError> {
        let (status, local, remote, merged) = read_head(r)?;
        let secret = r.token("secret")?;
        let (give_up_in, queue, (acked, received)) = read_tail(r)?;
        Ok(MergeClientSnapshot {
            status,
            local,
            remote,
            merged,
            secret,
            queue,
            acked,
            received,
            give_up_in,
        })
    }
}

/// A token-merge server's tombstones of formally ended sessions, as
/// [`MergeServer::export_ended`](super::MergeServer::export_ended) gives them: persist it
/// beside the sessions' snapshots (after every round in which a session ended formally),
/// and import it into a restarted server before the sessions
/// ([`MergeServer::import_ended`](super::MergeServer::import_ended)), so that a session
/// that ended cannot come back from an older snapshot of it.
///
/// Holds the secrets of ended sessions (they resume nothing, but a tombstone forgotten
/// too early lets their holder start a fresh session from one): store it as the sessions'
/// snapshots are stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MergeEndedSnapshot {
    /// One per ended session.
    pub tombstones: Vec<Tombstone>,
}

/// One formally ended session: what would have resumed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// Its merged token and, in tether's encoding, the locator every one of its secrets
    /// carries (8 bytes), so that no secret of it resumes anything.
    pub tokens: Vec<Token>,
    /// How long it had left before it would be forgotten, from the export's `now`.
    pub forget_in: Duration,
    /// Who ended the session.
    pub ended_by: EndedBy,
}

/// Most tokens a tombstone holds (merged token and locator).
const TOMBSTONE_TOKENS: u8 = 2;

impl Snapshot for MergeEndedSnapshot {
    const KIND: u8 = kind::MERGE_ENDED;

    /// `[COUNT u32]`, then each tombstone `[BY u8: 0 application, 1 peer][LEFT u64 µs]
    /// [N u8: 1..=2] N x token`.
    fn put_body(&self, out: &mut BytesMut) {
        out.put_u32(u32::try_from(self.tombstones.len()).unwrap_or(u32::MAX));
        for t in &self.tombstones {
            out.put_u8(match t.ended_by {
                EndedBy::Application => 0,
                EndedBy::Peer => 1,
            });
            out.put_u64(t.forget_in.as_micros());
            let n = t.tokens.len().min(usize::from(TOMBSTONE_TOKENS));
            // At most 2, so the cast cannot truncate.
            out.put_u8(n as u8);
            for s in t.tokens.iter().take(n) {
                put_token(out, s);
            }
        }
    }

    /// Memory stays bounded by the input: every tombstone takes at least 11 bytes of it,
    /// and nothing is reserved from the announced count.
    fn read_body(r: &mut Reader) -> Result<Self, SnapshotError> {
        let count = r.u32("tombstone count")?;
        let mut tombstones = Vec::new();
        for _ in 0..count {
            let ended_by = match r.u8("ended by")? {
                0 => EndedBy::Application,
                1 => EndedBy::Peer,
                _ => return Err(bad_field("ended by", "0 (application) or 1 (peer)")),
            };
            let forget_in = Duration::from_micros(r.u64("forget in")?);
            let n = r.u8("token count")?;
            if n == 0 || n > TOMBSTONE_TOKENS {
                return Err(bad_field("token count", "a tombstone holds 1 or 2 tokens"));
            }
            let mut tokens = Vec::new();
            for _ in 0..n {
                tokens.push(r.token("ended token")?);
            }
            tombstones.push(Tombstone {
                tokens,
                forget_in,
                ended_by,
            });
        }
        Ok(MergeEndedSnapshot { tombstones })
    }
}

crate::snapshot::inherent_codec!(MergeSessionSnapshot);
crate::snapshot::inherent_codec!(MergeClientSnapshot);
crate::snapshot::inherent_codec!(MergeEndedSnapshot);
