//! Session snapshots of the dual-channel client (src/snapshot.rs, docs/PROTOCOL.md
//! section 8).

use super::*;
use crate::connect::dual::{DualClientSnapshot, FEED_SEQ_GAP};
use crate::snapshot::ImportError;

impl DualClient {
    /// The client's session, to restore it in another process: player id, tokens A
    /// and B, session secret, whether `main` is up, queue and `feed` numbering. `None` unless the
    /// client finished a handshake and has not closed.
    ///
    /// The snapshot holds the session's secret tokens: store and move it securely.
    pub fn snapshot(&self, _now: Instant) -> Option<DualClientSnapshot> {
        let state = match self.state {
            S::Connected | S::ReopeningFeed | S::AwaitFeedReinitRep => S::Connected,
            S::ReopeningMain | S::AwaitReconnectOk | S::ReconnectBackoff => S::ReopeningMain,
            _ => return None,
        };
        let (Some(player), Some(token_a), Some(token_b), Some(secret)) =
            (self.player, self.token_a, self.token_b, self.secret)
        else {
            return None;
        };
        let (acked, received, queue) = self.core.snapshot();
        Some(DualClientSnapshot {
            player,
            state,
            token_a,
            token_b,
            secret,
            queue,
            acked,
            received,
            feed_attempt: self.feed_attempt,
            feed_next_seq: self.feed_tx.next_seq(),
            feed_newest: self.feed_rx.newest(),
        })
    }

    /// A client holding the snapshot's session, reconnecting `main`
    /// ([`DualClientState::ReopeningMain`]; a connected snapshot's transports did not
    /// move): its first output asks for `main`, on which it proves its player with
    /// the reconnection proof. It has no `feed`: once `main` is back, its silent `feed` is lost after
    /// `feed_timeout` and re-initialised under [`FeedLossPolicy::Reinit`] (under
    /// `CloseBoth` the client closes), and `main` must come back within
    /// `feed_timeout`.
    ///
    /// Refused when a token is too short for `cfg` or the queue is over
    /// `cfg.max_queued`.
    pub fn restore(
        now: Instant,
        cfg: DualClientConfig,
        snap: DualClientSnapshot,
    ) -> Result<DualClient, ImportError> {
        let mut c = DualClient::new(cfg);
        if !c.token_ok(&snap.token_a)
            || !c.token_ok(&snap.token_b)
            || snap.secret.len() < MIN_SECRET_LEN
        {
            return Err(ImportError::BadToken);
        }
        if snap.queue.len() > cfg.max_queued {
            return Err(ImportError::QueueTooLong {
                len: snap.queue.len(),
                max: cfg.max_queued,
            });
        }
        c.now = now;
        c.state = S::ReopeningMain;
        c.player = Some(snap.player);
        c.token_a = Some(snap.token_a);
        c.token_b = Some(snap.token_b);
        c.secret = Some(snap.secret);
        let key = FeedKey::derive(&snap.secret, snap.player);
        c.feed_attempt = snap.feed_attempt;
        c.connect_tries = 1;
        c.reconnect_tries = 1;
        c.feed_tx = FeedSender::resume_at(
            snap.player,
            snap.feed_next_seq.saturating_add(FEED_SEQ_GAP),
            key.clone(),
        );
        c.feed_rx = FeedReceiver::resume_after(cfg.max_feed_content, key, snap.feed_newest);
        c.last_feed_rx = now;
        c.last_feed_tx = now;
        c.core = new_core(&cfg, now);
        c.core.restored(snap.acked, snap.received, snap.queue);
        c.in_session = true;
        c.out.open(Channel::Main);
        c.step_deadline = Some(now + cfg.reply_timeout);
        Ok(c)
    }

    /// The tokens A and B, once received. Secrets: do not log them.
    pub fn tokens(&self) -> (Option<Token>, Option<Token>) {
        (self.token_a, self.token_b)
    }

    /// The messages held for `main` (unacknowledged or waiting), oldest first.
    pub fn queue(&self) -> alloc::vec::Vec<Message> {
        self.core.snapshot().2
    }

    /// The configuration.
    pub fn config(&self) -> DualClientConfig {
        self.cfg
    }
}
