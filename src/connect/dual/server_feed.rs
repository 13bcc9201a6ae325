//! The `feed` channel on the server: binding a `feed` link to a player by an authentic
//! feed init (tag, token A, attempt), datagrams in and out, keep-alives and silence.

use super::*;
use crate::connect::dual::feed::Dropped;
use crate::wire::FEED_HEADER_LEN;

impl<T: TokenSource> DualServer<T> {
    pub(super) fn send_feed_to(&mut self, id: u16, msg: &Message) -> Result<(), DualError> {
        let max = self.cfg.max_feed_content;
        let now = self.now;
        let Some(pl) = self.endpoint.get_mut(id) else {
            return Err(DualError::UnknownPlayer(id));
        };
        let link = pl.state.feed.ok_or(DualError::FeedUnavailable)?;
        pl.state.feed_tx.encode(msg, self.out.buf(), max)?;
        pl.state.last_feed_tx = now;
        let payload = self.out.take_buf();
        self.out.send_raw(link, payload);
        Ok(())
    }

    pub(super) fn on_feed_closed(&mut self, link: Link) {
        if let Some(id) = self.feeds.remove(&link.id) {
            if let Some(pl) = self.slot_mut(id) {
                pl.state.feed = None;
                if pl.state.announced {
                    self.out
                        .event(Event::Notice(DualServerNotice::FeedLost { player: id }));
                }
            }
        }
    }

    /// Refuses a feed init that could not be authenticated (unknown player, bad tag, wrong
    /// token A): one `CONN_FAILED` datagram with an all-zero tag (smaller than the request,
    /// so it cannot amplify; no client acts on it, since it proves nothing), and the link
    /// is forgotten. It is never tagged with the player's key: that would give a forger a
    /// valid refusal to replay at the player.
    fn refuse_feed(&mut self, link: Link, reason: FailReason) {
        let msg = Message::ConnFailed { reason };
        let max = self.cfg.max_feed_content;
        if self
            .stray_tx
            .encode_unauthenticated(&msg, self.out.buf(), max)
            .is_ok()
        {
            let payload = self.out.take_buf();
            self.out.send_raw(link, payload);
        }
        self.out.close(link);
    }

    /// Refuses an authentic feed init (its tag, token A and attempt verified): a tagged
    /// refusal naming the attempt, on the link it came from, which the client takes for
    /// that attempt only.
    fn refuse_feed_init(&mut self, link: Link, id: u16, attempt: u32, reason: FailReason) {
        let max = self.cfg.max_feed_content;
        let Some(pl) = self.endpoint.get_mut(id) else {
            return;
        };
        let msg = Message::FeedFailed { reason, attempt };
        if pl.state.feed_tx.encode(&msg, self.out.buf(), max).is_ok() {
            let payload = self.out.take_buf();
            self.out.send_raw(link, payload);
        }
        self.out.close(link);
    }

    pub(super) fn on_feed_datagram(&mut self, link: Link, datagram: Bytes) {
        let sender = match header(&datagram, self.cfg.max_feed_content) {
            Ok((_, sender)) => sender,
            Err(_) => {
                match self.feeds.get(&link.id).copied() {
                    Some(id) => {
                        if let Some(pl) = self.slot_mut(id) {
                            pl.state.feed_rx.count_malformed();
                        }
                    }
                    None => self.stray_stats.malformed += 1,
                }
                return;
            }
        };
        match self.feeds.get(&link.id).copied() {
            Some(id) => self.on_bound_datagram(id, datagram),
            None => self.on_unbound_datagram(link, sender, datagram),
        }
    }

    fn on_bound_datagram(&mut self, id: u16, datagram: Bytes) {
        let now = self.now;
        let Some(pl) = self.slot_mut(id).map(|s| &mut s.state) else {
            return;
        };
        // Sender, tag, replay window, message: anything that fails is counted and dropped.
        let Ok(opened) = pl.feed_rx.open(datagram, Some(id)) else {
            return;
        };
        if opened.late && !crate::connect::dual::feed::is_control(&opened.message) {
            // R-Type: an older update is never applied after a newer one.
            return pl.feed_rx.drop_late(opened.seq);
        }
        pl.feed_rx.commit(opened.seq);
        pl.last_feed_rx = now;
        let live = pl.watched();
        match opened.message {
            // The reply was lost and the client asks again (a new attempt): answer again,
            // same token B.
            Message::FeedInit {
                player,
                attempt,
                token_a,
            } if player == id && token_a == pl.token_a && attempt > pl.feed_attempt => {
                pl.feed_attempt = attempt;
                if let Some(token_b) = pl.token_b {
                    let _ = self.send_feed_to(id, &Message::FeedInitRep { attempt, token_b });
                }
            }
            Message::Dummy | Message::FeedInit { .. } => {}
            Message::Update(element) if live => {
                self.out.event(Event::Notice(DualServerNotice::Update {
                    player: id,
                    element,
                }))
            }
            message if live => self
                .out
                .event(Event::Notice(DualServerNotice::FeedReceived {
                    player: id,
                    message,
                })),
            _ => {}
        }
    }

    /// A datagram on a link bound to no player: only an authentic feed init (the tag of
    /// the player's feed key, its token A, an attempt newer than any accepted, a sequence
    /// number the player's replay window takes) binds it.
    fn on_unbound_datagram(&mut self, link: Link, sender: u16, datagram: Bytes) {
        // Whether the datagram claims to be a feed init (read without trusting it): only
        // those get a refusal, which is then smaller than the request.
        let claims_init = matches!(
            Message::decode(datagram.slice(FEED_HEADER_LEN..)),
            Ok(Message::FeedInit { .. })
        );
        let Some(pl) = self.endpoint.get_mut(sender).map(|s| &mut s.state) else {
            // No such player: no key to check the request with. A feed init gets an
            // unauthenticated refusal (the server may have forgotten the player); anything
            // else no reply at all.
            self.stray_stats.foreign += 1;
            if claims_init {
                self.refuse_feed(link, FailReason::UnknownPlayer);
            }
            return;
        };
        let opened = match pl.feed_rx.open(datagram, Some(sender)) {
            Ok(o) => o,
            Err(Dropped::Forged) if claims_init => {
                return self.refuse_feed(link, FailReason::WrongToken)
            }
            // Forged garbage, replayed, or authentic but undecodable: no reply.
            Err(_) => return,
        };
        let (attempt, token_a) = match opened.message {
            Message::FeedInit {
                player,
                attempt,
                token_a,
            } if player == sender => (attempt, token_a),
            // Only a feed init may bind a link; anything else (say, the player's own
            // datagrams from a new address) is ignored without a reply.
            _ => {
                self.stray_stats.foreign += 1;
                return;
            }
        };
        if pl.token_a != token_a {
            return self.refuse_feed(link, FailReason::WrongToken);
        }
        if attempt <= pl.feed_attempt {
            // An older attempt than one accepted already: a replay, dropped.
            pl.feed_rx.commit(opened.seq);
            return;
        }
        // A player whose `main` is lost must resume `main` first: the table has no
        // FEED_INIT row there (the move itself is made below, once the link is bound).
        let Ok(next) = fire(SERVER_TRANSITIONS, pl.state, PlayerInput::FeedInit) else {
            pl.feed_rx.commit(opened.seq);
            pl.feed_attempt = attempt;
            return self.refuse_feed_init(link, sender, attempt, FailReason::NotResumable);
        };
        let token_b = match pl.token_b {
            Some(t) => t,
            None => match self.fresh_token() {
                Some(t) => t,
                None => return self.fail_player(sender, FailReason::InsecureToken),
            },
        };
        let now = self.now;
        let Some(pl) = self.slot_mut(sender).map(|s| &mut s.state) else {
            return;
        };
        // Bound anew: nothing sent before this feed init is taken after it (datagrams in
        // flight on the old link, replays).
        pl.feed_rx.commit(opened.seq);
        pl.feed_rx.restart_at(opened.seq);
        pl.feed_attempt = attempt;
        let old = pl.feed.replace(link);
        pl.token_b = Some(token_b);
        pl.last_feed_rx = now;
        let rebound = pl.state == PlayerState::Connected;
        pl.state = next;
        let player = sender;
        if let Some(old) = old {
            self.feeds.remove(&old.id);
            self.out.close(old);
        }
        self.feeds.insert(link.id, player);
        let _ = self.send_feed_to(player, &Message::FeedInitRep { attempt, token_b });
        if rebound {
            self.out
                .event(Event::Notice(DualServerNotice::FeedBound { player }));
        }
    }

    /// A player's `feed` went silent (unbound), or needs a keep-alive.
    pub(super) fn on_feed_timer(&mut self, id: u16) {
        let now = self.now;
        let Some(pl) = self.slot(id).map(|s| &s.state) else {
            return;
        };
        let Some(feed) = pl.feed else { return };
        if pl.watched() && pl.last_feed_rx + self.cfg.feed_timeout <= now {
            self.out.close(feed);
            self.on_feed_closed(feed);
        } else if pl.last_feed_tx + self.cfg.feed_keepalive <= now {
            let _ = self.send_feed_to(id, &Message::Dummy);
        }
    }
}
