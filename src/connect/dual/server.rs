//! The server of the dual-channel connection: player ids, tokens, `feed` bindings.
//!
//! One server machine serves every client. The caller gives each accepted `main` stream a
//! link id ([`Input::Opened`]) and maps each `feed` peer (a UDP address) to a link id of its
//! own; a `feed` link is bound to a player only by a feed init carrying that player's
//! token A, a new attempt number and the tag of the player's feed key, and datagrams on an
//! unbound link are never delivered. The session secret the feed key and the reconnection
//! proof derive from travels on `main` only (docs/PROTOCOL.md 4.11).

use super::feed::{header, FeedReceiver, FeedSender, FeedStats};
use super::{DualError, EndReason, Outcome};
use crate::driver::{earliest, Channel, Input, Link, Machine, Outbox, Output};
use crate::session::endpoint::{Endpoint, SessionTimer, Slot, Timer};
use crate::session::{AckFault, Event, SessionCore, Verdict};
use crate::tables::{fire, NoTransition};
use crate::time::Instant;
use crate::token::{Token, TokenSource};
use crate::wire::{
    reconnection_proof, FailReason, FeedKey, FrameDecoder, Message, MIN_SECRET_LEN,
    PROTOCOL_VERSION, SERVER_SENDER,
};
use alloc::collections::BTreeMap;
use bytes::Bytes;

#[path = "server_types.rs"]
mod types;
pub use types::*;

/// What a player holds beyond the shared session core (and its `main`, which the endpoint
/// keeps): its handshake state, tokens and `feed`.
#[derive(Debug, Clone)]
struct Player {
    state: PlayerState,
    announced: bool,
    feed: Option<Link>,
    token_a: Token,
    token_b: Option<Token>,
    /// The session secret: sent on `main` in `CONN_INIT_REP`, never on `feed`; the feed
    /// key and the reconnection proof derive from it.
    secret: Token,
    /// The attempt number of the last feed init accepted: a feed init must carry a larger
    /// one (attempt numbers are never reused in a session).
    feed_attempt: u32,
    feed_tx: FeedSender,
    feed_rx: FeedReceiver,
    last_feed_rx: Instant,
    last_feed_tx: Instant,
}

/// A `main` transport as the server reads it.
#[derive(Debug, Clone)]
struct MainLink {
    decoder: FrameDecoder,
}

/// A player as the endpoint holds it: `main`, session core, and the rest.
type PlayerSlot = Slot<Player>;

/// The server of R-Type's dual-channel connection. See the [module docs](super); a whole
/// handshake against a [`DualClient`](super::DualClient), in memory, is the client's
/// example. Tokens come from the caller's [`TokenSource`](super::TokenSource) (a closure
/// returning a [`Token`](crate::Token) is one): draw them from a CSPRNG.
///
/// `Clone` (when the token source is) copies the whole server, e.g. to explore what
/// follows from one state in several ways (tests/exhaustive.rs).
#[derive(Debug, Clone)]
pub struct DualServer<T> {
    cfg: DualServerConfig,
    tokens: T,
    out: Outbox<DualServerEvent>,
    now: Instant,
    /// `main` transports, players (by id) with their cores, and every timer.
    endpoint: Endpoint<u16, MainLink, Player>,
    /// Bound `feed` links, to their player.
    feeds: BTreeMap<u64, u16>,
    /// Sequence numbers of unauthenticated refusals (requests that did not verify).
    stray_tx: FeedSender,
    stray_stats: FeedStats,
    error: Option<DualError>,
}

impl Player {
    /// Fires `input` through [`SERVER_TRANSITIONS`]; on a missing row the player stays.
    fn step(&mut self, input: PlayerInput) -> Result<(), NoTransition<PlayerState, PlayerInput>> {
        self.state = fire(SERVER_TRANSITIONS, self.state, input)?;
        Ok(())
    }

    /// Whether `feed` is watched for silence (the session exists for good).
    fn watched(&self) -> bool {
        matches!(self.state, PlayerState::Connected | PlayerState::MainLost)
    }
}

impl<T: TokenSource> DualServer<T> {
    /// A server with no players.
    pub fn new(cfg: DualServerConfig, tokens: T) -> Self {
        DualServer {
            endpoint: Endpoint::new(cfg.max_links),
            cfg,
            tokens,
            out: Outbox::new(),
            now: Instant::ZERO,
            feeds: BTreeMap::new(),
            stray_tx: FeedSender::pending(SERVER_SENDER),
            stray_stats: FeedStats::default(),
            error: None,
        }
    }

    /// The state of player `id`, if it exists.
    pub fn player_state(&self, id: u16) -> Option<PlayerState> {
        self.slot(id).map(|p| p.state.state)
    }

    /// The `main` and `feed` links of player `id`.
    pub fn player_links(&self, id: u16) -> Option<(Option<Link>, Option<Link>)> {
        self.slot(id).map(|p| (p.link, p.state.feed))
    }

    /// Players that exist now (in any state).
    pub fn player_count(&self) -> usize {
        self.endpoint.session_count()
    }

    /// `main` links open now.
    pub fn link_count(&self) -> usize {
        self.endpoint.route_count()
    }

    /// Datagrams on unbound `feed` links that were ignored (malformed, foreign, stale).
    pub fn stray_stats(&self) -> FeedStats {
        self.stray_stats
    }

    /// What the `feed` receiver of player `id` did so far.
    pub fn feed_stats(&self, id: u16) -> Option<FeedStats> {
        self.slot(id).map(|p| p.state.feed_rx.stats())
    }

    /// A player's sync layer started over while its `main` was down: its held sync
    /// messages are obsolete (see
    /// [`Delivery::supersede_sync`](crate::session::Delivery::supersede_sync)).
    pub fn supersede_sync(&mut self, id: u16) {
        if let Some(pl) = self.slot_mut(id) {
            pl.core.supersede_sync();
        }
    }

    /// When bytes last arrived on a player's `main` while it is connected (messages,
    /// acknowledgements, heartbeats; `feed` datagrams do not count); `None` for an
    /// unknown player or one without `main`.
    pub fn last_received(&self, id: u16) -> Option<Instant> {
        self.endpoint.get(id).and_then(|pl| pl.core.last_received())
    }

    /// Closes a connected player's `main` as if the network had dropped it: the player
    /// waits `session_timeout` for its client to reconnect `main`, as after any loss of it
    /// (the layer above asks this when the client went silent, e.g. after journal sync's
    /// 408; the dead-peer timeout takes the same path).
    pub fn drop_transport(&mut self, now: Instant, id: u16) {
        self.now = self.now.max(now);
        let Some(pl) = self.endpoint.get(id) else {
            return;
        };
        if pl.state.state != PlayerState::Connected {
            return;
        }
        if let Some(link) = pl.link {
            self.drop_main(link);
        }
    }

    /// A connected player's `main` is closed here and taken for lost (the dead-peer
    /// timeout, or [`DualServer::drop_transport`]).
    fn drop_main(&mut self, link: Link) {
        self.out.close(link);
        self.on_main_closed(link);
    }

    /// `main` transports replaced by a valid reconnection while still open here.
    pub fn takeovers(&self) -> u64 {
        self.endpoint.takeovers()
    }

    fn slot(&self, id: u16) -> Option<&PlayerSlot> {
        self.endpoint.get(id)
    }

    fn slot_mut(&mut self, id: u16) -> Option<&mut PlayerSlot> {
        self.endpoint.get_mut(id)
    }

    fn token_ok(&self, t: &Token) -> bool {
        self.cfg.allow_short_tokens || t.is_secure()
    }

    /// A session secret of at least [`MIN_SECRET_LEN`] bytes, whatever the token mode:
    /// tokens from the source, joined until long enough (one draw with 128-bit tokens,
    /// four with R-Type's 32-bit ones), at most [`Token::MAX_LEN`] bytes.
    fn fresh_secret(&mut self) -> Token {
        let mut buf = [0u8; Token::MAX_LEN];
        let mut len = 0;
        while len < MIN_SECRET_LEN {
            let t = self.tokens.next_token();
            let take = t.len().min(Token::MAX_LEN - len);
            buf[len..len + take].copy_from_slice(&t.as_bytes()[..take]);
            len += take;
        }
        // `len` is within MIN_SECRET_LEN..=MAX_LEN here, so `new` cannot refuse it.
        Token::new(&buf[..len]).unwrap_or_else(|_| self.tokens.next_token())
    }

    /// A token from the source, or `None` (and an error for the caller) if it is too short.
    fn fresh_token(&mut self) -> Option<Token> {
        let t = self.tokens.next_token();
        if self.token_ok(&t) {
            Some(t)
        } else {
            self.error = Some(DualError::InsecureTokenSource);
            None
        }
    }

    /// The lowest free player id.
    fn free_id(&self) -> Option<u16> {
        let mut next = 0u16;
        for (id, _) in self.endpoint.sessions() {
            if id != next {
                break;
            }
            next = next.checked_add(1)?;
        }
        (next < self.cfg.max_players).then_some(next)
    }

    /// The player's `feed` and liveness timers, from its clocks now.
    fn reschedule(&mut self, id: u16) {
        let (keepalive, timeout) = (self.cfg.feed_keepalive, self.cfg.feed_timeout);
        let Some(pl) = self.slot(id) else { return };
        let feed = pl.state.feed.and_then(|_| {
            earliest([
                pl.state.watched().then(|| pl.state.last_feed_rx + timeout),
                Some(pl.state.last_feed_tx + keepalive),
            ])
        });
        let live = (pl.state.state == PlayerState::Connected)
            .then(|| pl.core.deadline())
            .flatten();
        self.endpoint.set_timer(id, SessionTimer::Profile, feed);
        self.endpoint.set_timer(id, SessionTimer::Live, live);
    }

    /// Refuses on a `main` link: `CONN_FAILED`, close, forget (with its player if the
    /// player was still in its handshake).
    fn refuse_main(&mut self, link: Link, reason: FailReason) {
        self.out.send_framed(link, &Message::ConnFailed { reason });
        self.out.close(link);
        if let Some(p) = self.endpoint.close(link.id).and_then(|r| r.session) {
            self.remove_player(p, EndReason::Violation(reason));
        }
    }

    /// Forgets a player: closes its links, frees its id.
    fn remove_player(&mut self, id: u16, reason: EndReason) {
        let Some(mut pl) = self.endpoint.remove(id) else {
            return;
        };
        if let Some(l) = pl.link {
            self.out.close(l);
        }
        if let Some(l) = pl.state.feed {
            self.feeds.remove(&l.id);
            self.out.close(l);
        }
        if pl.state.announced {
            let undelivered = pl.core.end();
            self.out.event(Event::Ended {
                session: id,
                reason,
                undelivered,
            });
        }
    }

    fn fail_player(&mut self, id: u16, reason: FailReason) {
        if let Some(l) = self.slot(id).and_then(|p| p.link) {
            self.out.send_framed(l, &Message::ConnFailed { reason });
        }
        self.remove_player(id, EndReason::Violation(reason));
    }

    /// The player's `main` is up (fresh, or reconnected: then our ACK goes first and the
    /// replay waits for the client's).
    fn main_up(&mut self, id: u16, resumed: bool) {
        let now = self.now;
        let Some(pl) = self.endpoint.get_mut(id) else {
            return;
        };
        let Some(link) = pl.link else { return };
        let _ = pl.core.link_up(&mut self.out, link, resumed, true, now);
        // Admitted: the link may now carry frames of any size the configuration allows.
        let max = self.cfg.max_frame;
        if let Some(route) = self.endpoint.route(link) {
            route.state.decoder.set_max_frame(max);
        }
    }

    fn new_core(&self) -> SessionCore {
        SessionCore::reliable(
            self.cfg.session.delivery,
            self.cfg.max_queued,
            self.cfg.session.keepalive,
            self.now,
        )
    }

    fn on_opened(&mut self, link: Link) {
        if link.channel == Channel::Feed {
            // Feed links exist implicitly: they are bound by a feed init.
            return;
        }
        if self.endpoint.peek(link.id).is_some() {
            // Reported twice (a caller's bug): the transport is already known.
            return;
        }
        // Until the link is admitted it carries handshake messages only: a small frame
        // limit bounds what `max_links` unadmitted links can hold in all.
        let state = MainLink {
            decoder: FrameDecoder::new(self.cfg.max_frame.min(crate::wire::HANDSHAKE_MAX_FRAME)),
        };
        // A transport that never sends `CONN_INIT` is refused at the handshake timeout.
        let deadline = self.now + self.cfg.handshake_timeout;
        if self.endpoint.route_count() >= self.cfg.max_links
            || self.endpoint.open(link, state, Some(deadline)).is_err()
        {
            self.out.send_framed(
                link,
                &Message::ConnFailed {
                    reason: FailReason::ServerFull,
                },
            );
            self.out.close(link);
        }
    }

    fn on_main_bytes(&mut self, link: Link, bytes: Bytes) {
        let now = self.now;
        let Some(route) = self.endpoint.route(link) else {
            return;
        };
        route.state.decoder.push_bytes(bytes);
        if let Some(pl) = route.session.and_then(|id| self.endpoint.get_mut(id)) {
            if pl.link == Some(link) {
                pl.core.on_bytes(now);
            }
        }
        loop {
            let Some(route) = self.endpoint.peek_mut(link.id).filter(|r| r.link == link) else {
                return;
            };
            let player = route.session;
            match route.state.decoder.next_frame() {
                Ok(None) => return,
                Ok(Some(frame)) => match Message::decode(frame.clone()) {
                    Ok(msg) => self.on_main_message(link, player, msg, frame.len()),
                    Err(_) => self.main_malformed(link, player),
                },
                Err(_) => self.main_malformed(link, player),
            }
        }
    }

    fn main_malformed(&mut self, link: Link, player: Option<u16>) {
        match player.and_then(|p| self.player_state(p)) {
            // A connected player keeps its session: only this transport is refused.
            Some(PlayerState::Connected) => {
                self.out.send_framed(
                    link,
                    &Message::ConnFailed {
                        reason: FailReason::Malformed,
                    },
                );
                self.out.close(link);
                self.on_main_closed(link);
            }
            _ => self.refuse_main(link, FailReason::Malformed),
        }
    }

    /// Refuses one `main` transport of a connected player; the session waits for a better
    /// one.
    fn refuse_transport(&mut self, link: Link, reason: FailReason) {
        self.out.send_framed(link, &Message::ConnFailed { reason });
        self.out.close(link);
        self.on_main_closed(link);
    }
    fn on_main_message(&mut self, link: Link, player: Option<u16>, msg: Message, len: usize) {
        let Some(id) = player else {
            return self.on_fresh_link(link, msg);
        };
        let Some(state) = self.player_state(id) else {
            return self.refuse_main(link, FailReason::UnknownPlayer);
        };
        match (state, msg) {
            (PlayerState::AwaitFinalAuth, Message::FinalAuth { player, token_b }) => {
                let pl = self.slot(id);
                if player != id {
                    self.fail_player(id, FailReason::UnknownPlayer);
                } else if pl.and_then(|p| p.state.token_b) != Some(token_b) {
                    self.fail_player(id, FailReason::WrongToken);
                } else {
                    let fired = self
                        .slot_mut(id)
                        .map(|pl| pl.state.step(PlayerInput::FinalAuth));
                    if !matches!(fired, Some(Ok(()))) {
                        return self.fail_player(id, FailReason::UnexpectedMessage);
                    }
                    if let Some(pl) = self.slot_mut(id) {
                        pl.state.announced = true;
                    }
                    self.endpoint.set_timer(id, SessionTimer::Expire, None);
                    self.out.send_framed(link, &Message::ConnOk);
                    self.out.event(Event::Up {
                        session: id,
                        outcome: Outcome::Fresh,
                    });
                    self.main_up(id, false);
                }
            }
            (PlayerState::Connected, Message::Disconnection) => {
                self.remove_player(id, EndReason::PeerDisconnect)
            }
            (PlayerState::Connected, Message::Dummy) => {}
            (PlayerState::Connected, Message::Ack { received }) => {
                let now = self.now;
                let out = &mut self.out;
                let acked = self
                    .endpoint
                    .get_mut(id)
                    .map(|pl| pl.core.on_ack(out, link, received, now));
                match acked {
                    Some(Ok(())) | None => {}
                    // The first ACK after the reconnection does not fit the player's session
                    // here: one side resumed from an older copy of it (this server restarted
                    // from an older copy of its players). It cannot continue: it ends, and
                    // the client, told, starts a fresh session.
                    Some(Err(AckFault::Diverged(_))) => {
                        self.out.send_framed(
                            link,
                            &Message::ConnFailed {
                                reason: FailReason::Diverged,
                            },
                        );
                        self.remove_player(id, EndReason::Diverged);
                    }
                    // An impossible acknowledgement mid-session: this transport is refused;
                    // the session waits for a better one.
                    Some(Err(AckFault::Invalid(_))) => {
                        self.refuse_transport(link, FailReason::UnexpectedMessage)
                    }
                }
            }
            // The client found the session diverged on reconnecting: it ends here too.
            (
                PlayerState::Connected,
                Message::ConnFailed {
                    reason: FailReason::Diverged,
                },
            ) => self.remove_player(id, EndReason::Diverged),
            // The messages the session core numbers: the application's and the sync layer's.
            (PlayerState::Connected, m) if crate::session::is_delivered(&m) => {
                let now = self.now;
                if let Some(pl) = self.endpoint.get_mut(id) {
                    pl.core.on_message(&mut self.out, link, len, now);
                }
                self.out.event(Event::Message {
                    session: id,
                    message: m,
                })
            }
            // Anything else makes no sense in this state.
            _ => self.fail_player(id, FailReason::UnexpectedMessage),
        }
    }

    fn on_fresh_link(&mut self, link: Link, msg: Message) {
        match msg {
            Message::ConnInit { version } => {
                if version != PROTOCOL_VERSION {
                    return self.refuse_main(link, FailReason::UnsupportedVersion);
                }
                let Some(id16) = self.free_id() else {
                    return self.refuse_main(link, FailReason::ServerFull);
                };
                let Some(token_a) = self.fresh_token() else {
                    return self.refuse_main(link, FailReason::InsecureToken);
                };
                let secret = self.fresh_secret();
                let key = FeedKey::derive(&secret, id16);
                let core = self.new_core();
                let player = Player {
                    state: PlayerState::AwaitFeedInit,
                    announced: false,
                    feed: None,
                    token_a,
                    token_b: None,
                    secret,
                    feed_attempt: 0,
                    feed_tx: FeedSender::new(SERVER_SENDER, key.clone()),
                    feed_rx: FeedReceiver::new(self.cfg.max_feed_content, key),
                    last_feed_rx: self.now,
                    last_feed_tx: self.now,
                };
                self.endpoint.insert(id16, core, player);
                self.endpoint.attach(id16, link);
                let until = self.now + self.cfg.handshake_timeout;
                self.endpoint
                    .set_timer(id16, SessionTimer::Expire, Some(until));
                self.out.send_framed(
                    link,
                    &Message::ConnInitRep {
                        version: PROTOCOL_VERSION,
                        player: id16,
                        token_a,
                        secret,
                    },
                );
            }
            Message::Connection {
                version,
                player,
                token,
            } => {
                if version != PROTOCOL_VERSION {
                    return self.refuse_main(link, FailReason::UnsupportedVersion);
                }
                let Some(pl) = self.slot(player) else {
                    return self.refuse_main(link, FailReason::UnknownPlayer);
                };
                // The proof derives from the secret `main` carried; token B, which crossed
                // `feed` in clear, proves nothing here.
                if reconnection_proof(&pl.state.secret, player) != token {
                    return self.refuse_main(link, FailReason::WrongToken);
                }
                // Only a session that finished its handshake can be resumed: the table says
                // which (the move itself is made below, once the old link is dealt with).
                let Ok(next) = fire(SERVER_TRANSITIONS, pl.state.state, PlayerInput::Connection)
                else {
                    return self.refuse_main(link, FailReason::NotResumable);
                };
                // The new transport replaces the old one, if the old one is still open.
                if let Some(old) = self.endpoint.take_over(player) {
                    // Takeover of a half-open `main`: the old one is closed and counted,
                    // and the application sees it lost before the session resumes.
                    self.out.close(old);
                    self.out.event(Event::Down { session: player });
                }
                if let Some(pl) = self.slot_mut(player) {
                    pl.state.state = next;
                }
                self.endpoint.attach(player, link);
                self.out.send_framed(link, &Message::ConnOk);
                self.out.event(Event::Up {
                    session: player,
                    outcome: Outcome::Resumed,
                });
                if let Some(pl) = self.slot_mut(player) {
                    pl.core.link_down();
                }
                self.main_up(player, true);
            }
            _ => self.refuse_main(link, FailReason::UnexpectedMessage),
        }
    }

    fn on_main_closed(&mut self, link: Link) {
        let Some(route) = self.endpoint.peek(link.id).filter(|r| r.link == link) else {
            return;
        };
        let Some(id) = route.session else {
            self.endpoint.close(link.id);
            return;
        };
        self.endpoint.close(link.id);
        let until = self.now + self.cfg.session_timeout;
        let Some(pl) = self.slot_mut(id) else {
            return;
        };
        match pl.state.state {
            // A MainLost player has no `main`, so only Connected gets here.
            PlayerState::Connected | PlayerState::MainLost => {
                match pl.state.step(PlayerInput::MainClosed) {
                    Ok(()) => {
                        self.endpoint
                            .set_timer(id, SessionTimer::Expire, Some(until));
                        self.out.event(Event::Down { session: id });
                    }
                    Err(e) => self.error = Some(e.into()),
                }
            }
            // A handshake cut short is forgotten.
            PlayerState::AwaitFeedInit | PlayerState::AwaitFinalAuth => {
                self.remove_player(id, EndReason::Violation(FailReason::Timeout))
            }
        }
    }

    fn on_timeout(&mut self) {
        let now = self.now;
        while let Some(timer) = self.endpoint.pop_expired(now) {
            let id = match timer {
                Timer::Handshake(link_id) => {
                    // A transport that never sent `CONN_INIT`.
                    if let Some(link) = self.endpoint.peek(link_id).map(|r| r.link) {
                        self.refuse_main(link, FailReason::Timeout);
                    }
                    continue;
                }
                Timer::Session(id, SessionTimer::Expire) => {
                    match self.player_state(id) {
                        Some(PlayerState::MainLost) => self.remove_player(id, EndReason::Expired),
                        Some(_) => self.fail_player(id, FailReason::Timeout),
                        None => {}
                    }
                    continue;
                }
                Timer::Session(id, SessionTimer::Profile) => {
                    self.on_feed_timer(id);
                    id
                }
                Timer::Session(id, SessionTimer::Live) => {
                    let Some(pl) = self.endpoint.get_mut(id) else {
                        continue;
                    };
                    if pl.state.state == PlayerState::Connected
                        && pl.core.on_timeout(&mut self.out, pl.link, now) == Verdict::Dead
                    {
                        // A frozen client or a half-open `main`: the player waits for its
                        // client to reconnect, as after any loss of `main`.
                        if let Some(l) = pl.link {
                            self.drop_main(l);
                        }
                    }
                    id
                }
            };
            self.reschedule(id);
        }
    }

    /// Messages held for a player: sent and not yet acknowledged, or queued while its
    /// `main` is down (`None`: no such player).
    pub fn queued(&self, player: u16) -> Option<usize> {
        self.endpoint.get(player).map(|p| p.core.held())
    }

    /// `Send` without giving the message up: a [`Peer`](crate::peer::Peer) keeps a sync
    /// message the player's replay buffer had no room for, and offers it again later.
    pub(crate) fn send_ref(
        &mut self,
        now: Instant,
        player: u16,
        message: &Message,
    ) -> Result<(), DualError> {
        self.now = self.now.max(now);
        let result = self.send_app(player, message);
        self.reschedule(player);
        result
    }

    fn send_app(&mut self, player: u16, message: &Message) -> Result<(), DualError> {
        if !crate::session::is_delivered(message) {
            return Err(DualError::Reserved);
        }
        let max = self.cfg.max_queued;
        let now = self.now;
        message.encode_framed(self.out.buf());
        let frame = self.out.take_buf();
        let Some(pl) = self.endpoint.get_mut(player) else {
            return Err(DualError::UnknownPlayer(player));
        };
        let main = pl.link.filter(|_| pl.state.state == PlayerState::Connected);
        pl.core
            .send(&mut self.out, main, frame, now)
            .map_err(|_| DualError::QueueFull { max })
    }

    fn on_command(&mut self, cmd: DualServerCommand) -> Result<(), DualError> {
        match cmd {
            DualServerCommand::Send { player, message } => self.send_app(player, &message),
            DualServerCommand::SendFeed { player, message } => self.send_feed_to(player, &message),
            DualServerCommand::Kick { player, reason } => {
                if !self.endpoint.contains(player) {
                    return Err(DualError::UnknownPlayer(player));
                }
                if let Some(l) = self.slot(player).and_then(|p| p.link) {
                    self.out.send_framed(l, &Message::ConnFailed { reason });
                }
                self.remove_player(player, EndReason::LocalDisconnect);
                Ok(())
            }
        }
    }

    /// The player an input is about, once handled (its timers are set again after it).
    fn player_of(&self, link: Link) -> Option<u16> {
        match link.channel {
            Channel::Main => self.endpoint.peek(link.id).and_then(|r| r.session),
            Channel::Feed => self.feeds.get(&link.id).copied(),
        }
    }
}

impl<T: TokenSource> Machine for DualServer<T> {
    type Command = DualServerCommand;
    type Event = DualServerEvent;
    type Error = DualError;

    fn handle_input(
        &mut self,
        now: Instant,
        input: Input<DualServerCommand>,
    ) -> Result<(), DualError> {
        self.now = self.now.max(now);
        // The player touched, before and after: its deadlines may have moved.
        let before = match &input {
            Input::Received(l, _) | Input::Closed(l) | Input::Opened(l) => self.player_of(*l),
            Input::Command(
                DualServerCommand::Send { player, .. }
                | DualServerCommand::SendFeed { player, .. }
                | DualServerCommand::Kick { player, .. },
            ) => Some(*player),
            Input::Timeout => None,
        };
        let link = match &input {
            Input::Received(l, _) | Input::Closed(l) | Input::Opened(l) => Some(*l),
            _ => None,
        };
        let result = match input {
            Input::Opened(link) => {
                self.on_opened(link);
                Ok(())
            }
            Input::Received(link, bytes) => {
                match link.channel {
                    Channel::Main => self.on_main_bytes(link, bytes),
                    Channel::Feed => self.on_feed_datagram(link, bytes),
                }
                Ok(())
            }
            Input::Closed(link) => {
                match link.channel {
                    Channel::Main => self.on_main_closed(link),
                    Channel::Feed => self.on_feed_closed(link),
                }
                Ok(())
            }
            Input::Timeout => {
                self.on_timeout();
                Ok(())
            }
            Input::Command(cmd) => self.on_command(cmd),
        };
        let after = link
            .and_then(|l| self.player_of(l))
            .filter(|a| Some(*a) != before);
        for id in [before, after].into_iter().flatten() {
            self.reschedule(id);
        }
        result?;
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn poll_output(&mut self) -> Output<DualServerEvent> {
        let deadline = self.endpoint.next_deadline();
        self.out.pop_or_wait(deadline)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.out.timeout(self.now, self.endpoint.next_deadline())
    }

    /// Never: the server serves until it is dropped (players leave, the server does not).
    fn is_closed(&self) -> bool {
        false
    }
}

// Read-only accessors for tests and the model-checked scenarios (testkit::scenario).
impl<T> DualServer<T> {
    /// Player `id`'s tokens A and B (B once a `feed` init was answered). Secrets: do not
    /// log them.
    pub fn player_tokens(&self, id: u16) -> Option<(Token, Option<Token>)> {
        self.endpoint
            .get(id)
            .map(|p| (p.state.token_a, p.state.token_b))
    }

    /// Player `id`'s session secret (sent on its `main` in `CONN_INIT_REP`). A secret:
    /// do not log it.
    pub fn player_secret(&self, id: u16) -> Option<Token> {
        self.endpoint.get(id).map(|p| p.state.secret)
    }
}

#[path = "server_feed.rs"]
mod feed;

#[path = "server_handover.rs"]
mod handover;

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
