//! The server of the dual-channel connection: player ids, tokens, `feed` bindings.
//!
//! One server machine serves every client. The caller gives each accepted `main` stream a
//! link id ([`Input::Opened`]) and maps each `feed` peer (a UDP address) to a link id of its
//! own; a `feed` link is bound to a player only by a feed init carrying that player's
//! token A, and datagrams on an unbound link are never delivered.

use super::feed::{parse, FeedReceiver, FeedSender, FeedStats};
use super::{DualError, EndReason, Outcome};
use crate::driver::{earliest, Channel, Input, Link, Machine, Outbox, Output};
use crate::session::{Event, SessionConfig, SessionCore, Verdict};
use crate::tables::{fire, NoTransition};
use crate::time::{Duration, Instant};
use crate::token::{Token, TokenSource};
use crate::wire::{
    Element, FailReason, FrameDecoder, Message, DEFAULT_FEED_CONTENT, DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION, SERVER_SENDER,
};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
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

#[derive(Debug, Clone)]
struct Player {
    state: PlayerState,
    announced: bool,
    main: Option<Link>,
    feed: Option<Link>,
    token_a: Token,
    token_b: Option<Token>,
    feed_tx: FeedSender,
    feed_rx: FeedReceiver,
    /// Handshake expiry, or the end of the wait for a reconnection.
    deadline: Option<Instant>,
    last_feed_rx: Instant,
    last_feed_tx: Instant,
    /// Delivery, liveness and the bounded queue of `main`.
    core: SessionCore,
}

#[derive(Debug, Clone)]
struct MainConn {
    decoder: FrameDecoder,
    player: Option<u16>,
}

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
    players: Vec<Option<Player>>,
    mains: BTreeMap<u64, MainConn>,
    feeds: BTreeMap<u64, u16>,
    /// Sequence numbers of datagrams not sent to a known player (refusals).
    stray_tx: FeedSender,
    stray_stats: FeedStats,
    error: Option<DualError>,
    takeovers: u64,
}

impl Player {
    /// Fires `input` through [`SERVER_TRANSITIONS`]; on a missing row the player stays.
    fn step(&mut self, input: PlayerInput) -> Result<(), NoTransition<PlayerState, PlayerInput>> {
        self.state = fire(SERVER_TRANSITIONS, self.state, input)?;
        Ok(())
    }
}

impl<T: TokenSource> DualServer<T> {
    /// A server with no players.
    pub fn new(cfg: DualServerConfig, tokens: T) -> Self {
        let mut players = Vec::new();
        players.resize_with(usize::from(cfg.max_players), || None);
        DualServer {
            cfg,
            tokens,
            out: Outbox::new(),
            now: Instant::ZERO,
            players,
            mains: BTreeMap::new(),
            feeds: BTreeMap::new(),
            stray_tx: FeedSender::new(SERVER_SENDER),
            stray_stats: FeedStats::default(),
            error: None,
            takeovers: 0,
        }
    }

    /// The state of player `id`, if it exists.
    pub fn player_state(&self, id: u16) -> Option<PlayerState> {
        self.player(id).map(|p| p.state)
    }

    /// The `main` and `feed` links of player `id`.
    pub fn player_links(&self, id: u16) -> Option<(Option<Link>, Option<Link>)> {
        self.player(id).map(|p| (p.main, p.feed))
    }

    /// Players that exist now (in any state).
    pub fn player_count(&self) -> usize {
        self.players.iter().filter(|p| p.is_some()).count()
    }

    /// `main` links open now.
    pub fn link_count(&self) -> usize {
        self.mains.len()
    }

    /// Datagrams on unbound `feed` links that were ignored (malformed, foreign, stale).
    pub fn stray_stats(&self) -> FeedStats {
        self.stray_stats
    }

    /// What the `feed` receiver of player `id` did so far.
    pub fn feed_stats(&self, id: u16) -> Option<FeedStats> {
        self.player(id).map(|p| p.feed_rx.stats())
    }

    fn player(&self, id: u16) -> Option<&Player> {
        self.players.get(usize::from(id)).and_then(|p| p.as_ref())
    }

    fn player_mut(&mut self, id: u16) -> Option<&mut Player> {
        self.players
            .get_mut(usize::from(id))
            .and_then(|p| p.as_mut())
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

    /// Refuses on a `main` link: `CONN_FAILED`, close, forget (with its player if the
    /// player was still in its handshake).
    fn refuse_main(&mut self, link: Link, reason: FailReason) {
        self.out.send_framed(link, &Message::ConnFailed { reason });
        self.out.close(link);
        if let Some(conn) = self.mains.remove(&link.id) {
            if let Some(p) = conn.player {
                if self.player(p).is_some_and(|pl| pl.main == Some(link)) {
                    self.remove_player(p, EndReason::Violation(reason));
                }
            }
        }
    }

    /// Forgets a player: closes its links, frees its id.
    fn remove_player(&mut self, id: u16, reason: EndReason) {
        let Some(slot) = self.players.get_mut(usize::from(id)) else {
            return;
        };
        let Some(pl) = slot.take() else { return };
        if let Some(l) = pl.main {
            self.mains.remove(&l.id);
            self.out.close(l);
        }
        if let Some(l) = pl.feed {
            self.feeds.remove(&l.id);
            self.out.close(l);
        }
        if pl.announced {
            let mut core = pl.core;
            let undelivered = core.end();
            self.out.event(Event::Ended {
                session: id,
                reason,
                undelivered,
            });
        }
    }

    fn fail_player(&mut self, id: u16, reason: FailReason) {
        if let Some(l) = self.player(id).and_then(|p| p.main) {
            self.out.send_framed(l, &Message::ConnFailed { reason });
        }
        self.remove_player(id, EndReason::Violation(reason));
    }

    fn send_feed_to(&mut self, id: u16, msg: &Message) -> Result<(), DualError> {
        let max = self.cfg.max_feed_content;
        let now = self.now;
        let Some(Some(pl)) = self.players.get_mut(usize::from(id)) else {
            return Err(DualError::UnknownPlayer(id));
        };
        let link = pl.feed.ok_or(DualError::FeedUnavailable)?;
        pl.feed_tx.encode(msg, self.out.buf(), max)?;
        pl.last_feed_tx = now;
        let payload = self.out.take_buf();
        self.out.send_raw(link, payload);
        Ok(())
    }

    /// The player's `main` is up (fresh, or reconnected: then our ACK goes first and the
    /// replay waits for the client's).
    fn main_up(&mut self, id: u16, resumed: bool) {
        let now = self.now;
        let Some(Some(pl)) = self.players.get_mut(usize::from(id)) else {
            return;
        };
        let Some(link) = pl.main else { return };
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

    /// A player's sync layer started over while its `main` was down: its held sync
    /// messages are obsolete (see
    /// [`Delivery::supersede_sync`](crate::session::Delivery::supersede_sync)).
    pub fn supersede_sync(&mut self, id: u16) {
        if let Some(pl) = self.player_mut(id) {
            pl.core.supersede_sync();
        }
    }

    /// `main` transports replaced by a valid reconnection while still open here.
    pub fn takeovers(&self) -> u64 {
        self.takeovers
    }

    fn on_opened(&mut self, link: Link) {
        if link.channel == Channel::Feed {
            // Feed links exist implicitly: they are bound by a feed init.
            return;
        }
        if self.mains.contains_key(&link.id) {
            // Reported twice (a caller's bug): the transport is already known.
            return;
        }
        if self.mains.len() >= self.cfg.max_links {
            self.out.send_framed(
                link,
                &Message::ConnFailed {
                    reason: FailReason::ServerFull,
                },
            );
            self.out.close(link);
            return;
        }
        self.mains.insert(
            link.id,
            MainConn {
                decoder: FrameDecoder::new(self.cfg.max_frame),
                player: None,
            },
        );
    }

    fn on_main_bytes(&mut self, link: Link, bytes: Bytes) {
        let Some(conn) = self.mains.get_mut(&link.id) else {
            return;
        };
        conn.decoder.push_bytes(bytes);
        if let Some(id) = conn.player {
            let now = self.now;
            if let Some(pl) = self.player_mut(id).filter(|p| p.main == Some(link)) {
                pl.core.on_bytes(now);
            }
        }
        loop {
            let Some(conn) = self.mains.get_mut(&link.id) else {
                return;
            };
            let player = conn.player;
            match conn.decoder.next_frame() {
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
        match player.and_then(|p| self.player(p)).map(|p| p.state) {
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

    fn on_main_message(&mut self, link: Link, player: Option<u16>, msg: Message, len: usize) {
        let Some(id) = player else {
            return self.on_fresh_link(link, msg);
        };
        let Some(state) = self.player_state(id) else {
            return self.refuse_main(link, FailReason::UnknownPlayer);
        };
        match (state, msg) {
            (PlayerState::AwaitFinalAuth, Message::FinalAuth { player, token_b }) => {
                let pl = self.player(id);
                if player != id {
                    self.fail_player(id, FailReason::UnknownPlayer);
                } else if pl.and_then(|p| p.token_b) != Some(token_b) {
                    self.fail_player(id, FailReason::WrongToken);
                } else {
                    let fired = self
                        .player_mut(id)
                        .map(|pl| pl.step(PlayerInput::FinalAuth));
                    if !matches!(fired, Some(Ok(()))) {
                        return self.fail_player(id, FailReason::UnexpectedMessage);
                    }
                    if let Some(pl) = self.player_mut(id) {
                        pl.announced = true;
                        pl.deadline = None;
                    }
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
                    .players
                    .get_mut(usize::from(id))
                    .and_then(|p| p.as_mut())
                    .is_some_and(|pl| pl.core.on_ack(out, link, received, now).is_ok());
                if !ok {
                    // An impossible acknowledgement: this transport is refused; the
                    // session waits for a better one.
                    self.out.send_framed(
                        link,
                        &Message::ConnFailed {
                            reason: FailReason::UnexpectedMessage,
                        },
                    );
                    self.out.close(link);
                    self.on_main_closed(link);
                }
            }
            // The messages the session core numbers: the application's and the sync layer's.
            (PlayerState::Connected, m) if crate::session::is_delivered(&m) => {
                let now = self.now;
                if let Some(Some(pl)) = self.players.get_mut(usize::from(id)) {
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
                let Some(id) = self.players.iter().position(|p| p.is_none()) else {
                    return self.refuse_main(link, FailReason::ServerFull);
                };
                let Some(token_a) = self.fresh_token() else {
                    return self.refuse_main(link, FailReason::InsecureToken);
                };
                // Cannot truncate: there are at most 0xffff slots.
                let id16 = id as u16;
                let core = self.new_core();
                if let Some(slot) = self.players.get_mut(id) {
                    *slot = Some(Player {
                        state: PlayerState::AwaitFeedInit,
                        announced: false,
                        main: Some(link),
                        feed: None,
                        token_a,
                        token_b: None,
                        feed_tx: FeedSender::new(SERVER_SENDER),
                        feed_rx: FeedReceiver::new(self.cfg.max_feed_content),
                        deadline: Some(self.now + self.cfg.handshake_timeout),
                        last_feed_rx: self.now,
                        last_feed_tx: self.now,
                        core,
                    });
                }
                if let Some(conn) = self.mains.get_mut(&link.id) {
                    conn.player = Some(id16);
                }
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
                let Some(pl) = self.player(player) else {
                    return self.refuse_main(link, FailReason::UnknownPlayer);
                };
                if pl.token_b != Some(token) {
                    return self.refuse_main(link, FailReason::WrongToken);
                }
                // Only a session that finished its handshake can be resumed: the table says
                // which (the move itself is made below, once the old link is dealt with).
                let Ok(next) = fire(SERVER_TRANSITIONS, pl.state, PlayerInput::Connection) else {
                    return self.refuse_main(link, FailReason::NotResumable);
                };
                // The new transport replaces the old one, if the old one is still open.
                let old = pl.main;
                if let Some(old) = old.filter(|o| *o != link) {
                    // Takeover of a half-open `main`: the old one is closed and counted,
                    // and the application sees it lost before the session resumes.
                    self.mains.remove(&old.id);
                    self.out.close(old);
                    self.takeovers += 1;
                    self.out.event(Event::Down { session: player });
                }
                if let Some(pl) = self.player_mut(player) {
                    pl.state = next;
                    pl.main = Some(link);
                    pl.deadline = None;
                }
                if let Some(conn) = self.mains.get_mut(&link.id) {
                    conn.player = Some(player);
                }
                self.out.send_framed(link, &Message::ConnOk);
                self.out.event(Event::Up {
                    session: player,
                    outcome: Outcome::Resumed,
                });
                if let Some(pl) = self.player_mut(player) {
                    pl.core.link_down();
                }
                self.main_up(player, true);
            }
            _ => self.refuse_main(link, FailReason::UnexpectedMessage),
        }
    }

    fn on_main_closed(&mut self, link: Link) {
        let Some(conn) = self.mains.remove(&link.id) else {
            return;
        };
        let Some(id) = conn.player else { return };
        let until = self.now + self.cfg.session_timeout;
        let Some(pl) = self.player_mut(id) else {
            return;
        };
        if pl.main != Some(link) {
            return;
        }
        pl.main = None;
        pl.core.link_down();
        match pl.state {
            // A MainLost player has no `main`, so only Connected gets here.
            PlayerState::Connected | PlayerState::MainLost => {
                match pl.step(PlayerInput::MainClosed) {
                    Ok(()) => {
                        pl.deadline = Some(until);
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
            if let Some(pl) = self.player_mut(id) {
                pl.feed = None;
                if pl.announced {
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
        let tx = match player.and_then(|p| self.players.get_mut(usize::from(p))) {
            Some(Some(pl)) => &mut pl.feed_tx,
            _ => &mut self.stray_tx,
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
                        if let Some(pl) = self.player_mut(id) {
                            pl.feed_rx.count_malformed();
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
        let Some(pl) = self.player_mut(id) else {
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
        let live = matches!(pl.state, PlayerState::Connected | PlayerState::MainLost);
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
        let Some(pl) = self.player(player) else {
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
        let Some(pl) = self.player_mut(player) else {
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
        for idx in 0..self.players.len() {
            // Cannot truncate: there are at most 0xffff slots.
            let id = idx as u16;
            let Some(pl) = self.player(id) else { continue };
            if pl.deadline.is_some_and(|d| d <= now) {
                match pl.state {
                    PlayerState::MainLost => self.remove_player(id, EndReason::Expired),
                    _ => self.fail_player(id, FailReason::Timeout),
                }
                continue;
            }
            let watched = matches!(pl.state, PlayerState::Connected | PlayerState::MainLost);
            if watched && pl.feed.is_some() && pl.last_feed_rx + self.cfg.feed_timeout <= now {
                if let Some(l) = pl.feed {
                    self.out.close(l);
                    self.on_feed_closed(l);
                }
                continue;
            }
            if pl.feed.is_some() && pl.last_feed_tx + self.cfg.feed_keepalive <= now {
                let _ = self.send_feed_to(id, &Message::Dummy);
            }
            if let Some(Some(pl)) = self.players.get_mut(idx) {
                if pl.state == PlayerState::Connected
                    && pl.core.on_timeout(&mut self.out, pl.main, now) == Verdict::Dead
                {
                    // A frozen client or a half-open `main`: the player waits for its
                    // client to reconnect, as after any loss of `main`.
                    if let Some(l) = pl.main {
                        self.out.close(l);
                        self.on_main_closed(l);
                    }
                }
            }
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
                let Some(Some(pl)) = self.players.get_mut(usize::from(player)) else {
                    return Err(DualError::UnknownPlayer(player));
                };
                let main = pl.main.filter(|_| pl.state == PlayerState::Connected);
                pl.core
                    .send(&mut self.out, main, frame, now)
                    .map_err(|_| DualError::QueueFull { max })
            }
            DualServerCommand::SendFeed { player, message } => self.send_feed_to(player, &message),
            DualServerCommand::Kick { player, reason } => {
                if self.player(player).is_none() {
                    return Err(DualError::UnknownPlayer(player));
                }
                if let Some(l) = self.player(player).and_then(|p| p.main) {
                    self.out.send_framed(l, &Message::ConnFailed { reason });
                }
                self.remove_player(player, EndReason::LocalDisconnect);
                Ok(())
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let mut d = None;
        for pl in self.players.iter().flatten() {
            let watched = matches!(pl.state, PlayerState::Connected | PlayerState::MainLost);
            let bound = pl.feed.is_some();
            d = earliest([
                d,
                pl.deadline,
                (bound && watched).then(|| pl.last_feed_rx + self.cfg.feed_timeout),
                bound.then(|| pl.last_feed_tx + self.cfg.feed_keepalive),
                (pl.state == PlayerState::Connected)
                    .then(|| pl.core.deadline())
                    .flatten(),
            ]);
        }
        d
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
        match input {
            Input::Opened(link) => self.on_opened(link),
            Input::Received(link, bytes) => match link.channel {
                Channel::Main => self.on_main_bytes(link, bytes),
                Channel::Feed => self.on_feed_datagram(link, bytes),
            },
            Input::Closed(link) => match link.channel {
                Channel::Main => self.on_main_closed(link),
                Channel::Feed => self.on_feed_closed(link),
            },
            Input::Timeout => self.on_timeout(),
            Input::Command(cmd) => return self.on_command(cmd),
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn poll_output(&mut self) -> Output<DualServerEvent> {
        let deadline = self.deadline();
        self.out.pop_or_wait(deadline)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.out.timeout(self.now, self.deadline())
    }

    /// Never: the server serves until it is dropped (players leave, the server does not).
    fn is_closed(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    const STATES: [PlayerState; 4] = [
        PlayerState::AwaitFeedInit,
        PlayerState::AwaitFinalAuth,
        PlayerState::Connected,
        PlayerState::MainLost,
    ];
    const INPUTS: [PlayerInput; 4] = [
        PlayerInput::FeedInit,
        PlayerInput::FinalAuth,
        PlayerInput::Connection,
        PlayerInput::MainClosed,
    ];

    #[test]
    fn main_lost_refuses_feed_init_and_resumes_by_connection() {
        let f = |s, i| fire(SERVER_TRANSITIONS, s, i).ok();
        assert_eq!(f(PlayerState::MainLost, PlayerInput::FeedInit), None);
        assert_eq!(f(PlayerState::AwaitFeedInit, PlayerInput::Connection), None);
        assert_eq!(
            f(PlayerState::MainLost, PlayerInput::Connection),
            Some(PlayerState::Connected)
        );
    }

    /// A pair without a row is the typed error and leaves the player as it was; a pair
    /// with a row moves it to its target.
    fn check(from: PlayerState, input: PlayerInput) -> Result<(), TestCaseError> {
        let row = SERVER_TRANSITIONS
            .iter()
            .find(|(s, i, _)| *s == from && *i == input);
        let mut pl = Player {
            state: from,
            announced: false,
            main: None,
            feed: None,
            token_a: Token::new(&[1; 16]).unwrap(),
            token_b: None,
            feed_tx: FeedSender::new(SERVER_SENDER),
            feed_rx: FeedReceiver::new(64),
            deadline: None,
            last_feed_rx: Instant::ZERO,
            last_feed_tx: Instant::ZERO,
            core: SessionCore::at_most_once(1, Instant::ZERO),
        };
        let got = pl.step(input);
        match row {
            Some(&(_, _, to)) => {
                prop_assert_eq!(got, Ok(()));
                prop_assert_eq!(pl.state, to);
            }
            None => {
                prop_assert_eq!(got, Err(NoTransition { state: from, input }));
                prop_assert_eq!(pl.state, from);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn step_follows_the_table(s in 0..STATES.len(), i in 0..INPUTS.len()) {
            check(STATES[s], INPUTS[i])?;
        }
    }

    #[test]
    fn step_follows_the_table_on_every_pair() {
        for s in STATES {
            for i in INPUTS {
                check(s, i).unwrap();
            }
        }
    }
}

// Session snapshots (src/snapshot.rs, docs/PROTOCOL.md section 8): hand one player over to
// another server, in another process.
mod handover {
    use super::*;
    use crate::connect::dual::{PlayerSnapshot, FEED_SEQ_GAP};
    use crate::snapshot::ImportError;

    impl<T: TokenSource> DualServer<T> {
        /// One player's durable state, to hand it over to another server: id, tokens A and
        /// B, state, queue, time left (relative to `now`) and `feed` sequence numbers.
        /// `None` unless the player finished its handshake (connected, or `main` lost).
        /// The player stays here; see [`DualServer::take_player`] to move it.
        ///
        /// The snapshot holds the player's secret tokens: store and move it securely.
        pub fn export_player(&self, now: Instant, id: u16) -> Option<PlayerSnapshot> {
            let pl = self.player(id)?;
            let token_b = pl.token_b?;
            let state = match (pl.state, pl.main) {
                (PlayerState::Connected, Some(_)) => PlayerState::Connected,
                (PlayerState::Connected | PlayerState::MainLost, _) => PlayerState::MainLost,
                _ => return None,
            };
            let expires_in = match state {
                PlayerState::Connected => None,
                _ => Some(pl.deadline.map_or(self.cfg.session_timeout, |d| {
                    d.saturating_duration_since(now)
                })),
            };
            let (acked, received, queue) = pl.core.snapshot();
            Some(PlayerSnapshot {
                player: id,
                state,
                token_a: pl.token_a,
                token_b,
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
            let pl = self
                .players
                .get_mut(usize::from(id))
                .and_then(Option::take)?;
            if let Some(l) = pl.main {
                self.mains.remove(&l.id);
                self.out.close(l);
            }
            if let Some(l) = pl.feed {
                self.feeds.remove(&l.id);
                self.out.close(l);
            }
            Some(snap)
        }

        /// Takes over a player exported by another server, under the same id: it is
        /// `MainLost` here (its transports did not move), with its queue, forgotten when
        /// its time left runs out. Its client reconnects `main` with token B (resumed) and
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
            let duplicate = self.players.iter().flatten().any(|p| {
                p.token_a == snap.token_a
                    || p.token_b == Some(snap.token_b)
                    || p.token_a == snap.token_b
                    || p.token_b == Some(snap.token_a)
            });
            if duplicate {
                return Err(ImportError::DuplicateToken);
            }
            if !matches!(self.players.get(usize::from(snap.player)), Some(None)) {
                return Err(ImportError::PlayerTaken(snap.player));
            }
            if snap.queue.len() > self.cfg.max_queued {
                return Err(ImportError::QueueTooLong {
                    len: snap.queue.len(),
                    max: self.cfg.max_queued,
                });
            }
            if !self.token_ok(&snap.token_a) || !self.token_ok(&snap.token_b) {
                return Err(ImportError::BadToken);
            }
            self.now = self.now.max(now);
            let left = snap.expires_in.unwrap_or(self.cfg.session_timeout);
            let player = Player {
                state: PlayerState::MainLost,
                announced: true,
                main: None,
                feed: None,
                token_a: snap.token_a,
                token_b: Some(snap.token_b),
                feed_tx: FeedSender::resume_at(
                    SERVER_SENDER,
                    snap.feed_next_seq.saturating_add(FEED_SEQ_GAP),
                ),
                feed_rx: FeedReceiver::resume_after(self.cfg.max_feed_content, snap.feed_newest),
                deadline: Some(now + left),
                last_feed_rx: now,
                last_feed_tx: now,
                core: {
                    let mut core = self.new_core();
                    core.restored(snap.acked, snap.received, snap.queue);
                    core
                },
            };
            if let Some(slot) = self.players.get_mut(usize::from(snap.player)) {
                *slot = Some(player);
            }
            Ok(snap.player)
        }

        /// The messages held for player `id` (unacknowledged, or queued while its `main`
        /// is not connected), oldest first.
        pub fn player_queue(&self, id: u16) -> Option<alloc::vec::Vec<Message>> {
            self.player(id).map(|p| p.core.snapshot().2)
        }
    }
}

// Read-only accessors for tests and the model-checked scenarios (testkit::scenario).
impl<T> DualServer<T> {
    /// Player `id`'s tokens A and B (B once a `feed` init was answered). Secrets: do not
    /// log them.
    pub fn player_tokens(&self, id: u16) -> Option<(Token, Option<Token>)> {
        self.players
            .get(usize::from(id))
            .and_then(|p| p.as_ref())
            .map(|p| (p.token_a, p.token_b))
    }
}
