//! Session snapshots (src/snapshot.rs, docs/PROTOCOL.md section 8): hand one player over
//! to another server, in another process.

use super::*;
use crate::connect::dual::{PlayerSnapshot, FEED_SEQ_GAP};
use crate::snapshot::ImportError;

impl<T: TokenSource> DualServer<T> {
    /// One player's durable state, to hand it over to another server: id, tokens A and
    /// B, session secret, state, queue, time left (relative to `now`) and `feed` sequence numbers.
    /// `None` unless the player finished its handshake (connected, or `main` lost).
    /// The player stays here; see [`DualServer::take_player`] to move it.
    ///
    /// The snapshot holds the player's secret tokens: store and move it securely.
    pub fn export_player(&self, now: Instant, id: u16) -> Option<PlayerSnapshot> {
        let slot = self.slot(id)?;
        let pl = &slot.state;
        let token_b = pl.token_b?;
        let state = match (pl.state, slot.link) {
            (PlayerState::Connected, Some(_)) => PlayerState::Connected,
            (PlayerState::Connected | PlayerState::MainLost, _) => PlayerState::MainLost,
            _ => return None,
        };
        let expires_in = match state {
            PlayerState::Connected => None,
            _ => Some(
                self.endpoint
                    .timer(id, SessionTimer::Expire)
                    .map_or(self.cfg.session_timeout, |d| {
                        d.saturating_duration_since(now)
                    }),
            ),
        };
        let (acked, received, queue) = slot.core.snapshot();
        Some(PlayerSnapshot {
            player: id,
            state,
            token_a: pl.token_a,
            token_b,
            secret: pl.secret,
            queue,
            acked,
            received,
            expires_in,
            feed_next_seq: pl.feed_tx.next_seq(),
            feed_newest: pl.feed_rx.newest(),
        })
    }

    /// Exports a player and forgets it here without telling its client: its `main` and
    /// `feed` links are closed ([`Output::Close`]), no event is given, its id is free.
    /// The client sees `main` lost and reconnects, wherever the caller now routes it
    /// (the importing server); it binds `feed` there after its `feed` goes silent
    /// ([`FeedLossPolicy::Reinit`](super::super::FeedLossPolicy::Reinit)).
    pub fn take_player(&mut self, now: Instant, id: u16) -> Option<PlayerSnapshot> {
        let snap = self.export_player(now, id)?;
        self.now = self.now.max(now);
        let pl = self.endpoint.remove(id)?;
        if let Some(l) = pl.link {
            self.out.close(l);
        }
        if let Some(l) = pl.state.feed {
            self.feeds.remove(&l.id);
            self.out.close(l);
        }
        Some(snap)
    }

    /// Takes over a player exported by another server, under the same id: it is
    /// `MainLost` here (its transports did not move), with its queue, forgotten when
    /// its time left runs out. Its client reconnects `main` with its reconnection proof (resumed) and
    /// binds a new `feed` with token A, as after any loss.
    ///
    /// Refused, leaving the server as it was, when a player holds the same token A or
    /// B (imported twice: [`ImportError::DuplicateToken`]), when the id is taken or out
    /// of range, when the queue is over `max_queued`, or when a token is too short.
    ///
    /// The next deadline may be earlier: poll the output after an import.
    pub fn import_player(
        &mut self,
        now: Instant,
        snap: PlayerSnapshot,
    ) -> Result<u16, ImportError> {
        let duplicate = self.endpoint.sessions().map(|(_, s)| &s.state).any(|p| {
            p.token_a == snap.token_a
                || p.token_b == Some(snap.token_b)
                || p.token_a == snap.token_b
                || p.token_b == Some(snap.token_a)
                || p.secret == snap.secret
        });
        if duplicate {
            return Err(ImportError::DuplicateToken);
        }
        if snap.player >= self.cfg.max_players || self.endpoint.contains(snap.player) {
            return Err(ImportError::PlayerTaken(snap.player));
        }
        if snap.queue.len() > self.cfg.max_queued {
            return Err(ImportError::QueueTooLong {
                len: snap.queue.len(),
                max: self.cfg.max_queued,
            });
        }
        if !self.token_ok(&snap.token_a)
            || !self.token_ok(&snap.token_b)
            || snap.secret.len() < MIN_SECRET_LEN
        {
            return Err(ImportError::BadToken);
        }
        self.now = self.now.max(now);
        let left = snap.expires_in.unwrap_or(self.cfg.session_timeout);
        let key = FeedKey::derive(&snap.secret, snap.player);
        let player = Player {
            state: PlayerState::MainLost,
            announced: true,
            feed: None,
            token_a: snap.token_a,
            token_b: Some(snap.token_b),
            secret: snap.secret,
            // The client's next feed init carries a newer attempt than any it sent here;
            // its replay window (below) drops the older ones anyway.
            feed_attempt: 0,
            feed_tx: FeedSender::resume_at(
                SERVER_SENDER,
                snap.feed_next_seq.saturating_add(FEED_SEQ_GAP),
                key.clone(),
            ),
            feed_rx: FeedReceiver::resume_after(self.cfg.max_feed_content, key, snap.feed_newest),
            last_feed_rx: now,
            last_feed_tx: now,
        };
        let mut core = self.new_core();
        core.restored(snap.acked, snap.received, snap.queue);
        self.endpoint.insert(snap.player, core, player);
        self.endpoint
            .set_timer(snap.player, SessionTimer::Expire, Some(now + left));
        Ok(snap.player)
    }

    /// The messages held for player `id` (unacknowledged, or queued while its `main`
    /// is not connected), oldest first.
    pub fn player_queue(&self, id: u16) -> Option<alloc::vec::Vec<Message>> {
        self.slot(id).map(|p| p.core.snapshot().2)
    }
}
