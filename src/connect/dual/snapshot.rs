//! Snapshots of dual-channel sessions (docs/PROTOCOL.md section 8): what a server or client
//! needs to take a session over in another process. See [`crate::snapshot`].

use super::{DualClientState, PlayerState};
use crate::snapshot::{
    bad_field, kind, put_opt_duration, put_opt_u64, put_queue, read_opt_duration, read_opt_u64,
    read_queue, Snapshot, SnapshotError,
};
use crate::time::Duration;
use crate::token::Token;
use crate::wire::{put_token, Message, Reader};
use alloc::vec::Vec;
use bytes::{BufMut, BytesMut};

/// A new owner of a `feed` endpoint starts its sequence numbers this far past the exported
/// one: the old owner may have sent a few more datagrams after the export, and the peer
/// drops anything not newer than what it saw.
pub const FEED_SEQ_GAP: u64 = 1 << 20;

/// One player of a [`DualServer`](super::DualServer), as
/// [`export_player`](super::DualServer::export_player) gives it.
///
/// Holds secrets (tokens A and B, the session secret): store and move it securely.
/// `Debug` prints no token bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerSnapshot {
    /// The player id (kept: the client proves itself with it and its reconnection proof).
    pub player: u16,
    /// [`PlayerState::Connected`] or [`PlayerState::MainLost`] at export; an import always
    /// makes it `MainLost` (its transports stayed behind).
    pub state: PlayerState,
    /// Token A, which binds a `feed` link to the player.
    pub token_a: Token,
    /// Token B, the feed init's reply (proven once, by the final auth).
    pub token_b: Token,
    /// The session secret: the feed key and the reconnection proof derive from it.
    pub secret: Token,
    /// Messages held for `main`, oldest first: sent and not acknowledged, or queued while
    /// it was lost (numbered from `acked + 1`, replayed after the reconnection).
    pub queue: Vec<Message>,
    /// Numbered messages the client acknowledged.
    pub acked: u64,
    /// Numbered messages received from the client.
    pub received: u64,
    /// For a `MainLost` player, how long it had left before being forgotten, from the
    /// export's `now`. `None` for a connected one (the importer's `session_timeout`).
    pub expires_in: Option<Duration>,
    /// The sequence number the server's next `feed` datagram to this player would carry.
    pub feed_next_seq: u64,
    /// The newest sequence number accepted from the player on `feed`.
    pub feed_newest: Option<u64>,
}

/// A [`DualClient`](super::DualClient)'s session, as
/// [`snapshot`](super::DualClient::snapshot) gives it.
///
/// Holds secrets (tokens A and B, the session secret): store and move it securely.
/// `Debug` prints no token bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DualClientSnapshot {
    /// The player id the server gave.
    pub player: u16,
    /// [`DualClientState::Connected`] (main up) or [`DualClientState::ReopeningMain`] (main being
    /// reconnected) at export; a restored client is `ReopeningMain`.
    pub state: DualClientState,
    /// Token A.
    pub token_a: Token,
    /// Token B.
    pub token_b: Token,
    /// The session secret: the feed key and the reconnection proof derive from it.
    pub secret: Token,
    /// Messages held for `main`, oldest first: sent and not acknowledged, or queued
    /// (numbered from `acked + 1`).
    pub queue: Vec<Message>,
    /// Numbered messages the server acknowledged.
    pub acked: u64,
    /// Numbered messages received from the server.
    pub received: u64,
    /// The attempt number of the last feed init (attempt numbers are never reused in a
    /// session).
    pub feed_attempt: u32,
    /// The sequence number the client's next `feed` datagram would carry.
    pub feed_next_seq: u64,
    /// The newest sequence number accepted from the server on `feed`.
    pub feed_newest: Option<u64>,
}

impl Snapshot for PlayerSnapshot {
    const KIND: u8 = kind::DUAL_PLAYER;

    /// `[PLAYER u16][STATE u8: 2 connected, 3 main lost][TOKEN_A][TOKEN_B][SECRET]`
    /// `[EXPIRES opt u64 µs][FEED_NEXT u64][FEED_NEWEST opt u64][QUEUE][ACKED u64]`
    /// `[RECEIVED u64]`
    fn put_body(&self, out: &mut BytesMut) {
        out.put_u16(self.player);
        out.put_u8(match self.state {
            PlayerState::Connected => 2,
            _ => 3,
        });
        put_token(out, &self.token_a);
        put_token(out, &self.token_b);
        put_token(out, &self.secret);
        put_opt_duration(out, self.expires_in);
        out.put_u64(self.feed_next_seq);
        put_opt_u64(out, self.feed_newest);
        put_queue(out, self.queue.iter());
        out.put_u64(self.acked);
        out.put_u64(self.received);
    }

    fn read_body(r: &mut Reader) -> Result<Self, SnapshotError> {
        let player = r.u16("player")?;
        let state = match r.u8("state")? {
            2 => PlayerState::Connected,
            3 => PlayerState::MainLost,
            _ => return Err(bad_field("state", "2 (connected) or 3 (main lost)")),
        };
        Ok(PlayerSnapshot {
            player,
            state,
            token_a: r.token("token A")?,
            token_b: r.token("token B")?,
            secret: r.token("session secret")?,
            expires_in: read_opt_duration(r, "expires in")?,
            feed_next_seq: r.u64("feed next seq")?,
            feed_newest: read_opt_u64(r, "feed newest")?,
            queue: read_queue(r)?,
            acked: r.u64("acked")?,
            received: r.u64("received")?,
        })
    }
}

impl Snapshot for DualClientSnapshot {
    const KIND: u8 = kind::DUAL_CLIENT;

    /// `[PLAYER u16][STATE u8: 2 connected, 3 reconnecting][TOKEN_A][TOKEN_B][SECRET]`
    /// `[FEED_ATTEMPT u32][FEED_NEXT u64][FEED_NEWEST opt u64][QUEUE][ACKED u64]`
    /// `[RECEIVED u64]`
    fn put_body(&self, out: &mut BytesMut) {
        out.put_u16(self.player);
        out.put_u8(match self.state {
            DualClientState::Connected => 2,
            _ => 3,
        });
        put_token(out, &self.token_a);
        put_token(out, &self.token_b);
        put_token(out, &self.secret);
        out.put_u32(self.feed_attempt);
        out.put_u64(self.feed_next_seq);
        put_opt_u64(out, self.feed_newest);
        put_queue(out, self.queue.iter());
        out.put_u64(self.acked);
        out.put_u64(self.received);
    }

    fn read_body(r: &mut Reader) -> Result<Self, SnapshotError> {
        let player = r.u16("player")?;
        let state = match r.u8("state")? {
            2 => DualClientState::Connected,
            3 => DualClientState::ReopeningMain,
            _ => return Err(bad_field("state", "2 (connected) or 3 (reconnecting)")),
        };
        Ok(DualClientSnapshot {
            player,
            state,
            token_a: r.token("token A")?,
            token_b: r.token("token B")?,
            secret: r.token("session secret")?,
            feed_attempt: r.u32("feed attempt")?,
            feed_next_seq: r.u64("feed next seq")?,
            feed_newest: read_opt_u64(r, "feed newest")?,
            queue: read_queue(r)?,
            acked: r.u64("acked")?,
            received: r.u64("received")?,
        })
    }
}

crate::snapshot::inherent_codec!(PlayerSnapshot);
crate::snapshot::inherent_codec!(DualClientSnapshot);
