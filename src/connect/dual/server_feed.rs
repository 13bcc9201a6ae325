//! The `feed` channel on the server: binding a `feed` link to a player by its token A,
//! datagrams in and out, keep-alives and silence.

use super::*;

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

    /// Refuses a feed init on an unbound link: one `CONN_FAILED` datagram (smaller than
    /// the request, so it cannot amplify), and the link is forgotten.
    fn refuse_feed(&mut self, link: Link, player: Option<u16>, reason: FailReason) {
        let msg = Message::ConnFailed { reason };
        let max = self.cfg.max_feed_content;
        let tx = match player.and_then(|p| self.endpoint.get_mut(p)) {
            Some(pl) => &mut pl.state.feed_tx,
            None => &mut self.stray_tx,
        };
        if tx.encode(&msg, self.out.buf(), max).is_ok() {
            let payload = self.out.take_buf();
            self.out.send_raw(link, payload);
        }
        self.out.close(link);
    }

    pub(super) fn on_feed_datagram(&mut self, link: Link, datagram: Bytes) {
        let (seq, sender, msg) = match parse(datagram, self.cfg.max_feed_content) {
            Ok(v) => v,
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
            Some(id) => self.on_bound_datagram(link, id, seq, sender, msg),
            None => self.on_unbound_datagram(link, seq, sender, msg),
        }
    }

    fn on_bound_datagram(&mut self, link: Link, id: u16, seq: u64, sender: u16, msg: Message) {
        let now = self.now;
        let Some(pl) = self.slot_mut(id).map(|s| &mut s.state) else {
            return;
        };
        if sender != id {
            pl.feed_rx.count_malformed();
            return;
        }
        if !pl.feed_rx.accept_seq(seq) {
            return;
        }
        pl.last_feed_rx = now;
        let live = pl.watched();
        match msg {
            // The reply was lost and the client asks again: answer again, same token B.
            Message::FeedInit {
                player,
                attempt,
                token_a,
            } if player == id && token_a == pl.token_a => {
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
        let _ = link;
    }

    fn on_unbound_datagram(&mut self, link: Link, seq: u64, sender: u16, msg: Message) {
        let Message::FeedInit {
            player,
            attempt,
            token_a,
        } = msg
        else {
            // Only a feed init may bind a link; anything else is ignored without a reply.
            self.stray_stats.foreign += 1;
            return;
        };
        if sender != player {
            self.stray_stats.foreign += 1;
            return;
        }
        let Some(pl) = self.slot(player).map(|s| &s.state) else {
            return self.refuse_feed(link, None, FailReason::UnknownPlayer);
        };
        if pl.token_a != token_a {
            return self.refuse_feed(link, Some(player), FailReason::WrongToken);
        }
        // A player whose `main` is lost must resume `main` first: the table has no
        // FEED_INIT row there (the move itself is made below, once the link is bound).
        let Ok(next) = fire(SERVER_TRANSITIONS, pl.state, PlayerInput::FeedInit) else {
            return self.refuse_feed(link, Some(player), FailReason::NotResumable);
        };
        let had_token_b = pl.token_b;
        let token_b = match had_token_b {
            Some(t) => t,
            None => match self.fresh_token() {
                Some(t) => t,
                None => return self.fail_player(player, FailReason::InsecureToken),
            },
        };
        let now = self.now;
        let Some(pl) = self.slot_mut(player).map(|s| &mut s.state) else {
            return;
        };
        if !pl.feed_rx.accept_seq(seq) {
            return;
        }
        let old = pl.feed.replace(link);
        pl.token_b = Some(token_b);
        pl.last_feed_rx = now;
        let rebound = pl.state == PlayerState::Connected;
        pl.state = next;
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
