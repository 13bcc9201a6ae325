//! The server of the dual-channel connection: player ids, tokens, `feed` bindings.
//!
//! One server machine serves every client. The caller gives each accepted `main` stream a
//! link id ([`Input::Opened`]) and maps each `feed` peer (a UDP address) to a link id of its
//! own; a `feed` link is bound to a player only by a feed init carrying that player's
//! token A, and datagrams on an unbound link are never delivered.

use super::feed::{parse, FeedReceiver, FeedSender, FeedStats};
use super::{DualError, EndReason, Outcome};
use crate::driver::{earliest, Channel, Input, Link, Machine, Outbox, Output};
use crate::session::endpoint::{Endpoint, SessionTimer, Slot, Timer};
use crate::session::{Event, SessionConfig, SessionCore, Verdict};
use crate::tables::{fire, NoTransition};
use crate::time::{Duration, Instant};
use crate::token::{Token, TokenSource};
use crate::wire::{
    Element, FailReason, FrameDecoder, Message, DEFAULT_FEED_CONTENT, DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION, SERVER_SENDER,
};
use alloc::collections::BTreeMap;
use bytes::Bytes;

/// The server's configuration. `Default` gives the values documented on each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DualServerConfig {
    /// Player ids are `0..max_players` (64); ids are reused once a player is gone.
    /// At most `0xffff`, since `0xffff` is the server's own sender id.
    pub max_players: u16,
    /// `main` transports open at once, with or without a player (128).
    pub max_links: usize,
    /// A handshake not finished within this time is refused (10 s).
    pub handshake_timeout: Duration,
    /// A player whose `main` is lost is forgotten after this time (30 s).
    pub session_timeout: Duration,
    /// Send a `DUMMY` on a player's `feed` when nothing else was sent for this long (1 s).
    pub feed_keepalive: Duration,
    /// A player's `feed` is unbound when nothing arrived on it for this long (5 s).
    pub feed_timeout: Duration,
    /// The largest frame accepted on `main` ([`DEFAULT_MAX_FRAME`]).
    pub max_frame: usize,
    /// The largest content of a `feed` datagram, both ways (500).
    pub max_feed_content: usize,
    /// Messages queued per player while its `main` is not connected (64).
    pub max_queued: usize,
    /// Delivery and heartbeat on `main` ([`SessionConfig::default`]: 1 MiB replay
    /// buffer, ACK every 32 messages or 64 KiB, keepalive 10 s).
    pub session: SessionConfig,
    /// Opt-in: accept tokens shorter than 128 bits from the token source (R-Type's were 32
    /// bits). Weaker: see docs/PROTOCOL.md 4.7. Default: `false`.
    pub allow_short_tokens: bool,
}

impl Default for DualServerConfig {
    fn default() -> Self {
        DualServerConfig {
            max_players: 64,
            max_links: 128,
            handshake_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(30),
            feed_keepalive: Duration::from_secs(1),
            feed_timeout: Duration::from_secs(5),
            max_frame: DEFAULT_MAX_FRAME,
            max_feed_content: DEFAULT_FEED_CONTENT,
            max_queued: 1_024,
            session: SessionConfig::default(),
            allow_short_tokens: false,
        }
    }
}

/// Where a player is in the handshake or the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlayerState {
    /// `CONN_INIT_REP` sent; waiting for the feed init with token A.
    AwaitFeedInit,
    /// `feed` bound and token B sent; waiting for the final auth on `main`.
    AwaitFinalAuth,
    /// Connected.
    Connected,
    /// `main` lost; the session and its `feed` binding wait for a connection request.
    MainLost,
}

/// What moves a player between [`PlayerState`]s, as [`SERVER_TRANSITIONS`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlayerInput {
    /// A `FEED_INIT` with the player's token A on a `feed` link not bound to it: the link
    /// is bound (the old one, if any, unbound) and token B sent.
    FeedInit,
    /// A `FINAL_AUTH` with the player's id and token B on its `main`.
    FinalAuth,
    /// A `CONNECTION` with the player's id and token B on a new `main`: the new link
    /// replaces the old one, if the old one is still open.
    Connection,
    /// The player's `main` closed (or broke the framing) after its handshake.
    MainClosed,
}

/// Every change of a player's state on the server: (state, input, next state), and the only
/// way a player moves ([`tables::fire`](crate::tables::fire)). An input not listed for a
/// state is refused with `CONN_FAILED` (a `FEED_INIT` while `MainLost` and a `CONNECTION`
/// during the handshake: `NOT_RESUMABLE`; anything else: `UNEXPECTED_MESSAGE`).
///
/// A player is created in [`PlayerState::AwaitFeedInit`] by a `CONN_INIT` on a fresh
/// `main`, and removed (its id free again) by a refusal or a `main` closed during its
/// handshake, `handshake_timeout`, `DISCONNECTION`, `session_timeout` in `MainLost`, or
/// [`DualServerCommand::Kick`]; those have no state before or after, so they are not rows.
pub const SERVER_TRANSITIONS: &[(PlayerState, PlayerInput, PlayerState)] = &[
    (
        PlayerState::AwaitFeedInit,
        PlayerInput::FeedInit,
        PlayerState::AwaitFinalAuth,
    ),
    // A resend on a new link (the client's feed transport changed): rebound.
    (
        PlayerState::AwaitFinalAuth,
        PlayerInput::FeedInit,
        PlayerState::AwaitFinalAuth,
    ),
    (
        PlayerState::AwaitFinalAuth,
        PlayerInput::FinalAuth,
        PlayerState::Connected,
    ),
    // A re-initialisation of `feed` (FeedLossPolicy::Reinit).
    (
        PlayerState::Connected,
        PlayerInput::FeedInit,
        PlayerState::Connected,
    ),
    (
        PlayerState::Connected,
        PlayerInput::MainClosed,
        PlayerState::MainLost,
    ),
    (
        PlayerState::MainLost,
        PlayerInput::Connection,
        PlayerState::Connected,
    ),
    // The old `main` is half-open: the new one replaces it.
    (
        PlayerState::Connected,
        PlayerInput::Connection,
        PlayerState::Connected,
    ),
];

/// What the application can ask of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DualServerCommand {
    /// Send on a player's `main`; queued (bounded) while it is not connected.
    Send {
        /// To whom.
        player: u16,
        /// What.
        message: Message,
    },
    /// Send on a player's `feed` now (refused while no `feed` is bound).
    SendFeed {
        /// To whom.
        player: u16,
        /// What.
        message: Message,
    },
    /// End a player's session: `CONN_FAILED` with this reason, then both channels closed.
    Kick {
        /// Whom.
        player: u16,
        /// The reason sent.
        reason: FailReason,
    },
}

/// What the server tells the application: the shared session events ([`Event`]: up,
/// down, message on `main`, ended, each naming its player id) and the notices of this
/// profile. A player id is free again once its session has [ended](Event::Ended).
pub type DualServerEvent = Event<u16, DualServerNotice>;

/// What only a [`DualServer`] reports: its `feed` channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DualServerNotice {
    /// A connected player's `feed` is bound to a new link (after a feed re-init).
    FeedBound {
        /// The player.
        player: u16,
    },
    /// A player's `feed` closed or went silent and was unbound.
    FeedLost {
        /// The player.
        player: u16,
    },
    /// An `UPDATE_MSG` arrived on a player's `feed`.
    Update {
        /// From whom.
        player: u16,
        /// The element.
        element: Element,
    },
    /// Another message arrived on a player's `feed`.
    FeedReceived {
        /// From whom.
        player: u16,
        /// The message.
        message: Message,
    },
}

/// What a player holds beyond the shared session core (and its `main`, which the endpoint
/// keeps): its handshake state, tokens and `feed`.
#[derive(Debug, Clone)]
struct Player {
    state: PlayerState,
    announced: bool,
    feed: Option<Link>,
    token_a: Token,
    token_b: Option<Token>,
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

/// The server of R-Type's dual-channel connection. See the [module docs](super).
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
    /// Sequence numbers of datagrams not sent to a known player (refusals).
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
            stray_tx: FeedSender::new(SERVER_SENDER),
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

    fn send_feed_to(&mut self, id: u16, msg: &Message) -> Result<(), DualError> {
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

    /// The player's `main` is up (fresh, or reconnected: then our ACK goes first and the
    /// replay waits for the client's).
    fn main_up(&mut self, id: u16, resumed: bool) {
        let now = self.now;
        let Some(pl) = self.endpoint.get_mut(id) else {
            return;
        };
        let Some(link) = pl.link else { return };
        let _ = pl.core.link_up(&mut self.out, link, resumed, true, now);
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
        let state = MainLink {
            decoder: FrameDecoder::new(self.cfg.max_frame),
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
                let ok = self
                    .endpoint
                    .get_mut(id)
                    .is_some_and(|pl| pl.core.on_ack(out, link, received, now).is_ok());
                if !ok {
                    // An impossible acknowledgement: this transport is refused; the
                    // session waits for a better one.
                    self.refuse_transport(link, FailReason::UnexpectedMessage);
                }
            }
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
                let core = self.new_core();
                let player = Player {
                    state: PlayerState::AwaitFeedInit,
                    announced: false,
                    feed: None,
                    token_a,
                    token_b: None,
                    feed_tx: FeedSender::new(SERVER_SENDER),
                    feed_rx: FeedReceiver::new(self.cfg.max_feed_content),
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
                if pl.state.token_b != Some(token) {
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

    fn on_feed_closed(&mut self, link: Link) {
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

    fn on_feed_datagram(&mut self, link: Link, datagram: Bytes) {
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
                            self.out.close(l);
                            self.on_main_closed(l);
                        }
                    }
                    id
                }
            };
            self.reschedule(id);
        }
    }

    /// A player's `feed` went silent (unbound), or needs a keep-alive.
    fn on_feed_timer(&mut self, id: u16) {
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

    fn on_command(&mut self, cmd: DualServerCommand) -> Result<(), DualError> {
        match cmd {
            DualServerCommand::Send { player, message } => {
                if !crate::session::is_delivered(&message) {
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
        let after = link.and_then(|l| self.player_of(l));
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
}

#[path = "server_handover.rs"]
mod handover;

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
