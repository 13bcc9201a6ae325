//! The client of the dual-channel connection.
//!
//! Its states and what moves it between them are [`CLIENT_TRANSITIONS`]: the machine looks
//! every transition up there, so the table is the machine (h11 style), and docs/PROTOCOL.md
//! section 4 draws it.

use super::feed::{parse, FeedReceiver, FeedSender, FeedStats};
use super::{AttemptFailure, DualError, EndReason, Outcome, Retry};
use crate::driver::{earliest, Channel, Input, Link, Machine, Outbox, Output};
use crate::session::{Backoff, Event, SessionConfig, SessionCore, Verdict};
use crate::tables::{fire, NoTransition};
use crate::time::{Duration, Instant};
use crate::token::Token;
use crate::wire::{
    Element, FailReason, FrameDecoder, Message, DEFAULT_FEED_CONTENT, DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION, SERVER_SENDER,
};
use bytes::Bytes;

/// What the client does when `feed` is lost (closed, or silent for
/// [`DualClientConfig::feed_timeout`]) while connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedLossPolicy {
    /// Close both channels and end the connection (R-Type's RFC: "the client can disconnect
    /// both the main and the feed channels").
    CloseBoth,
    /// Open a new `feed` transport and run the feed init again (with token A, retried as
    /// [`DualClientConfig::feed_init`] says); `main` and the session continue.
    Reinit,
}

/// The client's configuration. `Default` gives the values documented on each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DualClientConfig {
    /// How long to wait for a transport to open or for a reply on `main` (5 s).
    pub reply_timeout: Duration,
    /// Feed init resends: 6 tries, 250 ms doubling to 2 s.
    pub feed_init: Retry,
    /// Fresh connection attempts after a failure (`CONN_FAILED`, timeout): 3 tries,
    /// 1 s doubling to 8 s.
    pub connect: Retry,
    /// Reconnections of `main` after it is lost: 5 tries, 500 ms doubling to 8 s.
    pub reconnect: Retry,
    /// Send a `DUMMY` on `feed` when nothing else was sent for this long (1 s).
    pub feed_keepalive: Duration,
    /// `feed` is lost when nothing arrived on it for this long (5 s).
    pub feed_timeout: Duration,
    /// What to do when `feed` is lost while connected ([`FeedLossPolicy::CloseBoth`]).
    pub on_feed_lost: FeedLossPolicy,
    /// The largest frame accepted on `main` ([`DEFAULT_MAX_FRAME`]).
    pub max_frame: usize,
    /// The largest content of a `feed` datagram, both ways ([`DEFAULT_FEED_CONTENT`]).
    pub max_feed_content: usize,
    /// Messages held on `main`: sent and not yet acknowledged, or waiting for a
    /// connection (1,024).
    pub max_queued: usize,
    /// Up to this share (0 to 100 %) of every retry wait (connection attempts, feed init
    /// resends, reconnections of `main`) is cut off at random, so that clients cut at the
    /// same moment do not retry in lockstep. Default: 20 %.
    pub jitter_percent: u8,
    /// Seed of the jitter (give each client its own). Default: 0.
    pub jitter_seed: u64,
    /// Delivery and heartbeat on `main` ([`SessionConfig::default`]: 1 MiB replay
    /// buffer, ACK every 32 messages or 64 KiB, keepalive 10 s).
    pub session: SessionConfig,
    /// Opt-in R-Type compatibility of the tokens: accept tokens shorter than 128 bits
    /// (R-Type's were 32). Weaker: a 32-bit token can be guessed (docs/PROTOCOL.md 4.7).
    /// Default: `false`.
    pub allow_short_tokens: bool,
}

impl Default for DualClientConfig {
    fn default() -> Self {
        DualClientConfig {
            reply_timeout: Duration::from_secs(5),
            feed_init: Retry {
                attempts: 6,
                initial: Duration::from_millis(250),
                max: Duration::from_secs(2),
            },
            connect: Retry {
                attempts: 3,
                initial: Duration::from_secs(1),
                max: Duration::from_secs(8),
            },
            reconnect: Retry {
                attempts: 5,
                initial: Duration::from_millis(500),
                max: Duration::from_secs(8),
            },
            feed_keepalive: Duration::from_secs(1),
            feed_timeout: Duration::from_secs(5),
            on_feed_lost: FeedLossPolicy::CloseBoth,
            max_frame: DEFAULT_MAX_FRAME,
            max_feed_content: DEFAULT_FEED_CONTENT,
            max_queued: 1_024,
            jitter_percent: 20,
            jitter_seed: 0,
            session: SessionConfig::default(),
            allow_short_tokens: false,
        }
    }
}

/// The client's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DualClientState {
    /// Not started: send [`DualClientCommand::Connect`].
    Idle,
    /// Asked the caller for a `main` transport.
    OpeningMain,
    /// Sent `CONN_INIT`; waiting for the player id and token A.
    AwaitConnInitRep,
    /// Asked the caller for a `feed` transport.
    OpeningFeed,
    /// Sent a feed init; resending with backoff until the reply (token B).
    AwaitFeedInitRep,
    /// Sent the final auth; waiting for `CONN_OK`.
    AwaitConnOk,
    /// Connected on both channels.
    Connected,
    /// `main` was lost: asked the caller for a new `main` transport.
    ReopeningMain,
    /// Sent the connection request (player id, token B) on the new `main`.
    AwaitReconnectOk,
    /// A reconnection try failed; waiting before the next one.
    ReconnectBackoff,
    /// `feed` was lost (policy [`FeedLossPolicy::Reinit`]): asked for a new `feed`.
    ReopeningFeed,
    /// Sent a feed init on the new `feed`; resending until the reply.
    AwaitFeedReinitRep,
    /// A connection attempt failed; waiting before a fresh one.
    Backoff,
    /// Gave up, or disconnected: both channels closed. `Connect` starts again.
    Closed,
}

/// What moves the client, as [`CLIENT_TRANSITIONS`] names it. Where one input can lead to
/// two states, the machine decides first and names the outcome (`Failed`: try again;
/// `GaveUp`: end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DualClientInput {
    /// The application asked to connect.
    Connect,
    /// The `main` transport asked for is open.
    MainOpened,
    /// The `feed` transport asked for is open.
    FeedOpened,
    /// A valid conn init reply arrived.
    ConnInitRep,
    /// A feed init reply for the current attempt arrived.
    FeedInitRep,
    /// `CONN_OK` arrived.
    ConnOk,
    /// A feed init got no reply in time, and another try is allowed: resend.
    FeedInitTimeout,
    /// This try failed (refused, timed out, transport closed) and another is allowed.
    Failed,
    /// This try failed and no other is allowed, or the failure is final.
    GaveUp,
    /// `main` closed while connected.
    MainLost,
    /// `feed` closed or went silent while connected, under [`FeedLossPolicy::Reinit`];
    /// while `main` is itself reconnecting, both are lost (`GaveUp`).
    FeedLost,
    /// The backoff wait is over.
    RetryTimer,
    /// The application asked to disconnect.
    Disconnect,
}

use DualClientInput as I;
use DualClientState as S;

/// Every transition of the client: (state, input, next state), and the only way it moves
/// ([`tables::fire`](crate::tables::fire)). The client fires only the inputs its state
/// calls for; a missing row is refused with `CONN_FAILED` when the server's message asked
/// for it, and is [`DualError::ClientTransition`] otherwise.
pub const CLIENT_TRANSITIONS: &[(DualClientState, DualClientInput, DualClientState)] = &[
    // Initial connection (seed 003, first diagram).
    (S::Idle, I::Connect, S::OpeningMain),
    (S::Closed, I::Connect, S::OpeningMain),
    (S::OpeningMain, I::MainOpened, S::AwaitConnInitRep),
    (S::AwaitConnInitRep, I::ConnInitRep, S::OpeningFeed),
    (S::OpeningFeed, I::FeedOpened, S::AwaitFeedInitRep),
    // Feed init retry (second diagram).
    (S::AwaitFeedInitRep, I::FeedInitTimeout, S::AwaitFeedInitRep),
    (S::AwaitFeedInitRep, I::FeedInitRep, S::AwaitConnOk),
    (S::AwaitConnOk, I::ConnOk, S::Connected),
    // CONN_FAILED, timeouts, closed transports: retry or abort, as configured.
    (S::OpeningMain, I::Failed, S::Backoff),
    (S::AwaitConnInitRep, I::Failed, S::Backoff),
    (S::OpeningFeed, I::Failed, S::Backoff),
    (S::AwaitFeedInitRep, I::Failed, S::Backoff),
    (S::AwaitConnOk, I::Failed, S::Backoff),
    (S::OpeningMain, I::GaveUp, S::Closed),
    (S::AwaitConnInitRep, I::GaveUp, S::Closed),
    (S::OpeningFeed, I::GaveUp, S::Closed),
    (S::AwaitFeedInitRep, I::GaveUp, S::Closed),
    (S::AwaitConnOk, I::GaveUp, S::Closed),
    (S::Backoff, I::RetryTimer, S::OpeningMain),
    // Refused or broken while connected: a fresh connection, as configured.
    (S::Connected, I::Failed, S::Backoff),
    (S::ReopeningFeed, I::Failed, S::Backoff),
    (S::AwaitFeedReinitRep, I::Failed, S::Backoff),
    // Reconnection of main.
    (S::Connected, I::MainLost, S::ReopeningMain),
    (S::ReopeningMain, I::MainOpened, S::AwaitReconnectOk),
    (S::AwaitReconnectOk, I::ConnOk, S::Connected),
    (S::ReopeningMain, I::Failed, S::ReconnectBackoff),
    (S::AwaitReconnectOk, I::Failed, S::ReconnectBackoff),
    (S::ReconnectBackoff, I::RetryTimer, S::ReopeningMain),
    (S::ReopeningMain, I::GaveUp, S::Closed),
    (S::AwaitReconnectOk, I::GaveUp, S::Closed),
    (S::ReconnectBackoff, I::GaveUp, S::Closed),
    // Loss of feed: close both (GaveUp) or re-initialise feed alone.
    (S::Connected, I::GaveUp, S::Closed),
    (S::Connected, I::FeedLost, S::ReopeningFeed),
    (S::ReopeningFeed, I::FeedOpened, S::AwaitFeedReinitRep),
    (
        S::AwaitFeedReinitRep,
        I::FeedInitTimeout,
        S::AwaitFeedReinitRep,
    ),
    (S::AwaitFeedReinitRep, I::FeedInitRep, S::Connected),
    (S::ReopeningFeed, I::GaveUp, S::Closed),
    (S::AwaitFeedReinitRep, I::GaveUp, S::Closed),
    // The application leaves.
    (S::OpeningMain, I::Disconnect, S::Closed),
    (S::AwaitConnInitRep, I::Disconnect, S::Closed),
    (S::OpeningFeed, I::Disconnect, S::Closed),
    (S::AwaitFeedInitRep, I::Disconnect, S::Closed),
    (S::AwaitConnOk, I::Disconnect, S::Closed),
    (S::Connected, I::Disconnect, S::Closed),
    (S::ReopeningMain, I::Disconnect, S::Closed),
    (S::AwaitReconnectOk, I::Disconnect, S::Closed),
    (S::ReconnectBackoff, I::Disconnect, S::Closed),
    (S::ReopeningFeed, I::Disconnect, S::Closed),
    (S::AwaitFeedReinitRep, I::Disconnect, S::Closed),
    (S::Backoff, I::Disconnect, S::Closed),
];

/// What the application can ask of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DualClientCommand {
    /// Start a connection (from `Idle` or `Closed`).
    Connect,
    /// Send a message on `main`; queued (bounded) while not connected.
    Send(Message),
    /// Send a message on `feed` now (refused while `feed` is not bound: it is lossy anyway).
    SendFeed(Message),
    /// Leave for good: `DISCONNECTION` on `main`, then both channels closed.
    Disconnect,
}

/// What the client tells the application: the shared session events ([`Event`]: up,
/// down, message on `main`, ended) and the notices of this profile. The session is `()`:
/// a client has one ([`DualClient::player`] gives its player id).
pub type DualClientEvent = Event<(), DualClientNotice>;

/// What only a dual-channel [`DualClient`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DualClientNotice {
    /// A connection attempt failed; a fresh one starts at `retry_at`.
    AttemptFailed {
        /// Why.
        reason: AttemptFailure,
        /// When the next attempt starts.
        retry_at: Instant,
    },
    /// `feed` was lost; re-initialising it (policy [`FeedLossPolicy::Reinit`]).
    FeedLost,
    /// `feed` is bound again after a loss.
    FeedRestored,
    /// An `UPDATE_MSG` arrived on `feed`.
    Update(Element),
    /// Another message arrived on `feed` (not consumed by the connection).
    FeedReceived(Message),
}

/// The client of R-Type's dual-channel connection. See the [module docs](super).
///
/// `Clone` copies the whole client, e.g. to explore what follows from one state in several
/// ways (tests/exhaustive.rs).
#[derive(Debug, Clone)]
pub struct DualClient {
    cfg: DualClientConfig,
    state: DualClientState,
    out: Outbox<DualClientEvent>,
    now: Instant,
    main: Option<Link>,
    decoder: FrameDecoder,
    feed: Option<Link>,
    player: Option<u16>,
    token_a: Option<Token>,
    token_b: Option<Token>,
    /// The attempt number carried by the last feed init sent (never reused in a session).
    feed_attempt: u32,
    /// Feed init tries in the current round.
    feed_tries: u32,
    connect_tries: u32,
    reconnect_tries: u32,
    step_deadline: Option<Instant>,
    feed_tx: FeedSender,
    feed_rx: FeedReceiver,
    last_feed_rx: Instant,
    last_feed_tx: Instant,
    /// Delivery, liveness and the bounded queue of `main`.
    core: SessionCore,
    /// A session was established and has not ended.
    in_session: bool,
    /// The jittered waits of the three retry schedules.
    connect_backoff: Backoff,
    reconnect_backoff: Backoff,
    feed_backoff: Backoff,
    /// A move the table refused while handling the current input, returned by it.
    error: Option<DualError>,
}

impl DualClient {
    /// A client in [`DualClientState::Idle`].
    pub fn new(cfg: DualClientConfig) -> Self {
        DualClient {
            cfg,
            state: S::Idle,
            out: Outbox::new(),
            now: Instant::ZERO,
            main: None,
            decoder: FrameDecoder::new(cfg.max_frame),
            feed: None,
            player: None,
            token_a: None,
            token_b: None,
            feed_attempt: 0,
            feed_tries: 0,
            connect_tries: 0,
            reconnect_tries: 0,
            step_deadline: None,
            feed_tx: FeedSender::new(0),
            feed_rx: FeedReceiver::new(cfg.max_feed_content),
            last_feed_rx: Instant::ZERO,
            last_feed_tx: Instant::ZERO,
            core: new_core(&cfg, Instant::ZERO),
            in_session: false,
            error: None,
            connect_backoff: cfg.connect.backoff(cfg.jitter_percent, cfg.jitter_seed),
            reconnect_backoff: cfg
                .reconnect
                .backoff(cfg.jitter_percent, cfg.jitter_seed ^ 0x5245_434f_4e4e_4543),
            feed_backoff: cfg
                .feed_init
                .backoff(cfg.jitter_percent, cfg.jitter_seed ^ 0x4645_4544_494e_4954),
        }
    }

    /// The current state.
    pub fn state(&self) -> DualClientState {
        self.state
    }

    /// The player id, once the server gave one.
    pub fn player(&self) -> Option<u16> {
        self.player
    }

    /// The current `main` and `feed` transports.
    pub fn links(&self) -> (Option<Link>, Option<Link>) {
        (self.main, self.feed)
    }

    /// What the `feed` receiver did so far (stale, duplicate and malformed datagrams).
    pub fn feed_stats(&self) -> FeedStats {
        self.feed_rx.stats()
    }

    /// Messages held on `main`: sent and not yet acknowledged, or waiting for a
    /// connection.
    pub fn queued(&self) -> usize {
        self.core.held()
    }

    /// The sync layer above started over while `main` was down: its held messages are
    /// obsolete and dropped before the replay (see
    /// [`Delivery::supersede_sync`](crate::session::Delivery::supersede_sync)).
    pub fn supersede_sync(&mut self) {
        self.core.supersede_sync();
    }

    /// The session is over: report why, and what it never delivered.
    fn end_session(&mut self, reason: EndReason) {
        self.core.link_down();
        if !self.in_session {
            return;
        }
        self.in_session = false;
        let undelivered = self.core.end();
        self.out.event(Event::Ended {
            session: (),
            reason,
            undelivered,
        });
    }

    /// Fires `input` through [`CLIENT_TRANSITIONS`]; on a missing row the state stays.
    fn fire(
        &mut self,
        input: DualClientInput,
    ) -> Result<(), NoTransition<DualClientState, DualClientInput>> {
        self.state = fire(CLIENT_TRANSITIONS, self.state, input)?;
        Ok(())
    }

    /// Fires an input the client chose itself (a timer, a transport, a command): a missing
    /// row is this input's error.
    fn step(&mut self, input: DualClientInput) {
        if let Err(e) = self.fire(input) {
            self.error = Some(e.into());
        }
    }

    fn in_reconnect(&self) -> bool {
        matches!(
            self.state,
            S::ReopeningMain | S::AwaitReconnectOk | S::ReconnectBackoff
        )
    }

    fn main_up(&self) -> bool {
        matches!(
            self.state,
            S::Connected | S::ReopeningFeed | S::AwaitFeedReinitRep
        )
    }

    /// `feed` is bound: keep it alive.
    fn feed_bound(&self) -> bool {
        self.state == S::AwaitConnOk || self.state == S::Connected || self.in_reconnect()
    }

    /// `feed` is watched for silence.
    fn feed_watched(&self) -> bool {
        self.state == S::Connected || self.in_reconnect()
    }

    fn start_session(&mut self) {
        self.player = None;
        self.token_a = None;
        self.token_b = None;
        self.feed_attempt = 0;
        self.feed_tries = 0;
        self.reconnect_tries = 0;
        self.feed_rx = FeedReceiver::new(self.cfg.max_feed_content);
        self.out.open(Channel::Main);
        self.step_deadline = Some(self.now + self.cfg.reply_timeout);
    }

    fn close_links(&mut self) {
        if let Some(l) = self.main.take() {
            self.out.close(l);
        }
        if let Some(l) = self.feed.take() {
            self.out.close(l);
        }
    }

    fn send_main(&mut self, msg: &Message) {
        if let Some(l) = self.main {
            self.out.send_framed(l, msg);
        }
    }

    fn send_feed(&mut self, msg: &Message) -> Result<(), DualError> {
        let link = self.feed.ok_or(DualError::FeedUnavailable)?;
        self.feed_tx
            .encode(msg, self.out.buf(), self.cfg.max_feed_content)?;
        let payload = self.out.take_buf();
        self.out.send_raw(link, payload);
        self.last_feed_tx = self.now;
        Ok(())
    }

    fn send_feed_init(&mut self) {
        self.feed_attempt = self.feed_attempt.saturating_add(1);
        self.feed_tries = self.feed_tries.saturating_add(1);
        if let (Some(player), Some(token_a)) = (self.player, self.token_a) {
            let msg = Message::FeedInit {
                player,
                attempt: self.feed_attempt,
                token_a,
            };
            // A feed init is far below any sane content limit; a limit too small for it is
            // a configuration error that the timeout will report.
            let _ = self.send_feed(&msg);
        }
        self.step_deadline = Some(self.now + self.feed_backoff.wait(self.feed_tries));
    }

    /// A try of the initial connection failed: close everything, then back off or give up.
    fn attempt_failed(&mut self, reason: AttemptFailure) {
        self.close_links();
        self.end_session(reason.end_reason());
        if self.cfg.connect.allows(self.connect_tries) {
            let at = self.now + self.connect_backoff.wait(self.connect_tries);
            self.step_deadline = Some(at);
            self.step(I::Failed);
            self.out
                .event(Event::Notice(DualClientNotice::AttemptFailed {
                    reason,
                    retry_at: at,
                }));
        } else {
            self.give_up(reason.end_reason());
        }
    }

    /// A reconnection try of `main` failed: back off, or give up (closing `feed` too).
    fn reconnect_failed(&mut self, reason: AttemptFailure) {
        if let Some(l) = self.main.take() {
            self.out.close(l);
        }
        if self.cfg.reconnect.allows(self.reconnect_tries) {
            self.step_deadline = Some(self.now + self.reconnect_backoff.wait(self.reconnect_tries));
            self.step(I::Failed);
        } else {
            self.give_up(reason.end_reason());
        }
    }

    /// The client stops: the session (or the one being set up, with what waits for it)
    /// ends.
    fn give_up(&mut self, reason: EndReason) {
        self.close_links();
        self.step_deadline = None;
        self.step(I::GaveUp);
        self.in_session = true;
        self.end_session(reason);
    }

    /// The peer broke the protocol: tell it, then fail this session.
    fn protocol_fail(&mut self, reason: FailReason) {
        self.send_main(&Message::ConnFailed { reason });
        self.fail(AttemptFailure::Violation(reason));
    }

    /// This session failed (refused, or the peer broke the protocol). During a reconnection
    /// of `main` that is final (R-Type's RFC: `feed` is closed as well); anywhere else the
    /// client starts a fresh connection if [`DualClientConfig::connect`] allows.
    fn fail(&mut self, reason: AttemptFailure) {
        if self.in_reconnect() {
            self.give_up(reason.end_reason());
        } else {
            self.attempt_failed(reason);
        }
    }

    fn connected(&mut self, session: Outcome) {
        if self.fire(I::ConnOk).is_err() {
            return self.protocol_fail(FailReason::UnexpectedMessage);
        }
        self.step_deadline = None;
        // A later failure of this session gets the configured tries again.
        self.connect_tries = 1;
        self.reconnect_tries = 0;
        self.out.event(Event::Up {
            session: (),
            outcome: session,
        });
        self.in_session = true;
        if let Some(main) = self.main {
            // Resumed: our ACK first, then what the server missed once its ACK arrives.
            let resumed = session == Outcome::Resumed;
            let _ = self
                .core
                .link_up(&mut self.out, main, resumed, true, self.now);
        }
    }

    fn main_lost(&mut self) {
        if let Some(l) = self.main.take() {
            self.out.close(l);
        }
        self.core.link_down();
        match self.state {
            S::OpeningMain
            | S::AwaitConnInitRep
            | S::OpeningFeed
            | S::AwaitFeedInitRep
            | S::AwaitConnOk => self.attempt_failed(AttemptFailure::LinkClosed),
            S::Connected => {
                self.reconnect_tries = 1;
                self.step(I::MainLost);
                self.out.event(Event::Down { session: () });
                self.out.open(Channel::Main);
                self.step_deadline = Some(self.now + self.cfg.reply_timeout);
            }
            S::ReopeningMain | S::AwaitReconnectOk => {
                self.reconnect_failed(AttemptFailure::LinkClosed)
            }
            S::ReopeningFeed | S::AwaitFeedReinitRep => self.give_up(EndReason::GaveUp),
            S::Idle | S::Closed | S::Backoff | S::ReconnectBackoff => {}
        }
    }

    fn feed_lost(&mut self) {
        if let Some(l) = self.feed.take() {
            self.out.close(l);
        }
        match self.state {
            S::OpeningFeed | S::AwaitFeedInitRep | S::AwaitConnOk => {
                self.attempt_failed(AttemptFailure::LinkClosed)
            }
            S::Connected => match self.cfg.on_feed_lost {
                FeedLossPolicy::CloseBoth => self.give_up(EndReason::FeedLost),
                FeedLossPolicy::Reinit => {
                    self.feed_tries = 0;
                    self.step(I::FeedLost);
                    self.out.event(Event::Notice(DualClientNotice::FeedLost));
                    self.out.open(Channel::Feed);
                    self.step_deadline = Some(self.now + self.cfg.reply_timeout);
                }
            },
            S::ReopeningMain | S::AwaitReconnectOk | S::ReconnectBackoff => {
                self.give_up(EndReason::FeedLost)
            }
            S::ReopeningFeed | S::AwaitFeedReinitRep => self.give_up(EndReason::GaveUp),
            S::Idle | S::Closed | S::Backoff | S::OpeningMain | S::AwaitConnInitRep => {}
        }
    }

    fn on_opened(&mut self, link: Link) {
        match (self.state, link.channel) {
            (S::OpeningMain | S::ReopeningMain, Channel::Main) => {
                self.main = Some(link);
                self.decoder.reset();
                let msg = match (self.state, self.player, self.token_b) {
                    (S::ReopeningMain, Some(player), Some(token)) => Message::Connection {
                        version: PROTOCOL_VERSION,
                        player,
                        token,
                    },
                    _ => Message::ConnInit {
                        version: PROTOCOL_VERSION,
                    },
                };
                self.send_main(&msg);
                self.step(I::MainOpened);
                self.step_deadline = Some(self.now + self.cfg.reply_timeout);
            }
            (S::OpeningFeed | S::ReopeningFeed, Channel::Feed) => {
                self.feed = Some(link);
                self.last_feed_rx = self.now;
                self.feed_tries = 0;
                self.step(I::FeedOpened);
                self.send_feed_init();
            }
            // A transport this client did not ask for (or no longer wants).
            _ => self.out.close(link),
        }
    }

    fn on_main_bytes(&mut self, link: Link, bytes: Bytes) {
        self.decoder.push_bytes(bytes);
        self.core.on_bytes(self.now);
        while self.main == Some(link) {
            match self.decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => match Message::decode(frame.clone()) {
                    Ok(msg) => self.on_main_message(msg, frame.len()),
                    Err(_) => self.protocol_fail(FailReason::Malformed),
                },
                Err(_) => self.protocol_fail(FailReason::Malformed),
            }
        }
    }

    fn token_ok(&self, t: &Token) -> bool {
        self.cfg.allow_short_tokens || t.is_secure()
    }

    fn on_main_message(&mut self, msg: Message, len: usize) {
        match (self.state, msg) {
            (
                S::AwaitConnInitRep,
                Message::ConnInitRep {
                    version,
                    player,
                    token_a,
                },
            ) => {
                if version != PROTOCOL_VERSION {
                    self.protocol_fail(FailReason::UnsupportedVersion);
                } else if !self.token_ok(&token_a) {
                    self.protocol_fail(FailReason::InsecureToken);
                } else {
                    self.player = Some(player);
                    self.token_a = Some(token_a);
                    self.feed_tx = FeedSender::new(player);
                    if self.fire(I::ConnInitRep).is_err() {
                        return self.protocol_fail(FailReason::UnexpectedMessage);
                    }
                    self.out.open(Channel::Feed);
                    self.step_deadline = Some(self.now + self.cfg.reply_timeout);
                }
            }
            (S::AwaitConnOk, Message::ConnOk) => self.connected(Outcome::Fresh),
            (S::AwaitReconnectOk, Message::ConnOk) => self.connected(Outcome::Resumed),
            (_, Message::ConnFailed { reason }) => self.fail(AttemptFailure::Refused(reason)),
            (
                _,
                Message::ConnInit { .. }
                | Message::ConnInitRep { .. }
                | Message::FeedInit { .. }
                | Message::FeedInitRep { .. }
                | Message::FinalAuth { .. }
                | Message::Connection { .. }
                | Message::ConnOk
                | Message::Disconnection,
            ) => self.protocol_fail(FailReason::UnexpectedMessage),
            (S::Connected | S::ReopeningFeed | S::AwaitFeedReinitRep, Message::Dummy) => {}
            (
                S::Connected | S::ReopeningFeed | S::AwaitFeedReinitRep,
                Message::Ack { received },
            ) => {
                let ok = self.main.is_some_and(|main| {
                    self.core
                        .on_ack(&mut self.out, main, received, self.now)
                        .is_ok()
                });
                if !ok {
                    self.protocol_fail(FailReason::UnexpectedMessage);
                }
            }
            (S::Connected | S::ReopeningFeed | S::AwaitFeedReinitRep, other) => {
                if let Some(main) = self.main {
                    self.core.on_message(&mut self.out, main, len, self.now);
                }
                self.out.event(Event::Message {
                    session: (),
                    message: other,
                })
            }
            _ => self.protocol_fail(FailReason::UnexpectedMessage),
        }
    }

    fn on_feed_datagram(&mut self, datagram: Bytes) {
        let (seq, sender, msg) = match parse(datagram, self.cfg.max_feed_content) {
            Ok(v) => v,
            Err(_) => return self.feed_rx.count_malformed(),
        };
        if sender != SERVER_SENDER {
            return self.feed_rx.count_malformed();
        }
        if !self.feed_rx.accept_seq(seq) {
            return;
        }
        self.last_feed_rx = self.now;
        match (self.state, msg) {
            (S::AwaitFeedInitRep, Message::FeedInitRep { attempt, token_b })
                if attempt == self.feed_attempt =>
            {
                if !self.token_ok(&token_b) {
                    return self.protocol_fail(FailReason::InsecureToken);
                }
                if self.fire(I::FeedInitRep).is_err() {
                    return self.protocol_fail(FailReason::UnexpectedMessage);
                }
                self.token_b = Some(token_b);
                if let Some(player) = self.player {
                    self.send_main(&Message::FinalAuth { player, token_b });
                }
                self.step_deadline = Some(self.now + self.cfg.reply_timeout);
            }
            (S::AwaitFeedReinitRep, Message::FeedInitRep { attempt, token_b })
                if attempt == self.feed_attempt =>
            {
                if Some(token_b) == self.token_b {
                    if self.fire(I::FeedInitRep).is_err() {
                        return self.protocol_fail(FailReason::UnexpectedMessage);
                    }
                    self.step_deadline = None;
                    self.out
                        .event(Event::Notice(DualClientNotice::FeedRestored));
                } else {
                    self.protocol_fail(FailReason::WrongToken);
                }
            }
            (S::AwaitFeedInitRep | S::AwaitFeedReinitRep, Message::ConnFailed { reason }) => {
                self.fail(AttemptFailure::Refused(reason))
            }
            // Late or duplicated replies, stray refusals, keep-alives: nothing to do.
            (_, Message::FeedInitRep { .. } | Message::ConnFailed { .. } | Message::Dummy) => {}
            (s, Message::Update(e)) if is_live(s) => {
                self.out.event(Event::Notice(DualClientNotice::Update(e)))
            }
            (s, other) if is_live(s) => self
                .out
                .event(Event::Notice(DualClientNotice::FeedReceived(other))),
            _ => {}
        }
    }

    fn on_timeout(&mut self) {
        let now = self.now;
        if self.step_deadline.is_some_and(|d| d <= now) {
            self.step_deadline = None;
            match self.state {
                S::AwaitFeedInitRep | S::AwaitFeedReinitRep => {
                    if self.cfg.feed_init.allows(self.feed_tries) {
                        self.step(I::FeedInitTimeout);
                        self.send_feed_init();
                    } else if self.state == S::AwaitFeedInitRep {
                        self.attempt_failed(AttemptFailure::Timeout);
                    } else {
                        self.give_up(EndReason::GaveUp);
                    }
                }
                S::OpeningMain | S::AwaitConnInitRep | S::OpeningFeed | S::AwaitConnOk => {
                    self.attempt_failed(AttemptFailure::Timeout)
                }
                S::ReopeningMain | S::AwaitReconnectOk => {
                    self.reconnect_failed(AttemptFailure::Timeout)
                }
                S::ReopeningFeed => self.give_up(EndReason::GaveUp),
                S::Backoff => {
                    self.connect_tries = self.connect_tries.saturating_add(1);
                    self.step(I::RetryTimer);
                    self.start_session();
                }
                S::ReconnectBackoff => {
                    self.reconnect_tries = self.reconnect_tries.saturating_add(1);
                    self.step(I::RetryTimer);
                    self.out.open(Channel::Main);
                    self.step_deadline = Some(now + self.cfg.reply_timeout);
                }
                S::Idle | S::Connected | S::Closed => {}
            }
        }
        if self.main_up() && self.core.on_timeout(&mut self.out, self.main, now) == Verdict::Dead {
            // A frozen server or a half-open `main`: nothing arrived for 1.5 x keepalive.
            // Reconnect `main` as after any loss.
            self.main_lost();
        }
        if self.feed_watched() && self.last_feed_rx + self.cfg.feed_timeout <= now {
            self.feed_lost();
        }
        if self.feed_bound()
            && self.feed.is_some()
            && self.last_feed_tx + self.cfg.feed_keepalive <= now
        {
            let _ = self.send_feed(&Message::Dummy);
        }
    }

    fn on_command(&mut self, cmd: DualClientCommand) -> Result<(), DualError> {
        match cmd {
            DualClientCommand::Connect => {
                if matches!(self.state, S::Idle | S::Closed) {
                    self.connect_tries = 1;
                    self.step(I::Connect);
                    self.start_session();
                }
                Ok(())
            }
            DualClientCommand::Send(msg) => {
                if self.state == S::Closed {
                    return Err(DualError::Closed);
                }
                if !crate::session::is_delivered(&msg) {
                    return Err(DualError::Reserved);
                }
                msg.encode_framed(self.out.buf());
                let frame = self.out.take_buf();
                let main = self.main.filter(|_| self.main_up());
                self.core
                    .send(&mut self.out, main, frame, self.now)
                    .map_err(|_| DualError::QueueFull {
                        max: self.cfg.max_queued,
                    })
            }
            DualClientCommand::SendFeed(msg) => {
                if self.feed_bound() {
                    self.send_feed(&msg)
                } else {
                    Err(DualError::FeedUnavailable)
                }
            }
            DualClientCommand::Disconnect => {
                if matches!(self.state, S::Idle | S::Closed) {
                    return Ok(());
                }
                if self.main_up() {
                    self.send_main(&Message::Disconnection);
                }
                self.close_links();
                self.step_deadline = None;
                self.step(I::Disconnect);
                self.in_session = true;
                self.end_session(EndReason::LocalDisconnect);
                Ok(())
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let keepalive = (self.feed_bound() && self.feed.is_some())
            .then(|| self.last_feed_tx + self.cfg.feed_keepalive);
        let silence = self
            .feed_watched()
            .then(|| self.last_feed_rx + self.cfg.feed_timeout);
        let live = if self.main_up() {
            self.core.deadline()
        } else {
            None
        };
        earliest([self.step_deadline, keepalive, silence, live])
    }
}

/// The session core of `main` for `cfg`.
fn new_core(cfg: &DualClientConfig, now: Instant) -> SessionCore {
    SessionCore::reliable(
        cfg.session.delivery,
        cfg.max_queued,
        cfg.session.keepalive,
        now,
    )
}

/// States in which messages on `feed` are delivered to the application.
fn is_live(s: DualClientState) -> bool {
    matches!(
        s,
        S::Connected | S::ReopeningMain | S::AwaitReconnectOk | S::ReconnectBackoff
    )
}

impl Machine for DualClient {
    type Command = DualClientCommand;
    type Event = DualClientEvent;
    type Error = DualError;

    fn handle_input(
        &mut self,
        now: Instant,
        input: Input<DualClientCommand>,
    ) -> Result<(), DualError> {
        // Time never goes backwards inside the machine, whatever the caller passes.
        self.now = self.now.max(now);
        let mut result = Ok(());
        match input {
            Input::Opened(link) => self.on_opened(link),
            Input::Received(link, bytes) => match link.channel {
                Channel::Main if self.main == Some(link) => self.on_main_bytes(link, bytes),
                Channel::Feed if self.feed == Some(link) => self.on_feed_datagram(bytes),
                // Late bytes from a transport that was replaced: dropped.
                _ => {}
            },
            Input::Closed(link) => {
                if self.main == Some(link) {
                    self.main = None;
                    self.main_lost();
                } else if self.feed == Some(link) {
                    self.feed = None;
                    self.feed_lost();
                }
            }
            Input::Timeout => self.on_timeout(),
            Input::Command(cmd) => result = self.on_command(cmd),
        }
        // A move the table refused on the way is this input's error.
        self.error.take().map_or(result, Err)
    }

    fn poll_output(&mut self) -> Output<DualClientEvent> {
        let deadline = self.deadline();
        self.out.pop_or_wait(deadline)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.out.timeout(self.now, self.deadline())
    }

    /// In [`DualClientState::Closed`]: given up or disconnected, both channels closed. (A
    /// `Connect` command starts it again, as a fresh connection.)
    fn is_closed(&self) -> bool {
        self.state == S::Closed
    }
}

// Session snapshots (src/snapshot.rs, docs/PROTOCOL.md section 8).
mod handover {
    use super::*;
    use crate::connect::dual::{DualClientSnapshot, FEED_SEQ_GAP};
    use crate::snapshot::ImportError;

    impl DualClient {
        /// The client's session, to restore it in another process: player id, tokens A
        /// and B, whether `main` is up, queue and `feed` numbering. `None` unless the
        /// client finished a handshake and has not closed.
        ///
        /// The snapshot holds the session's secret tokens: store and move it securely.
        pub fn snapshot(&self, _now: Instant) -> Option<DualClientSnapshot> {
            let state = match self.state {
                S::Connected | S::ReopeningFeed | S::AwaitFeedReinitRep => S::Connected,
                S::ReopeningMain | S::AwaitReconnectOk | S::ReconnectBackoff => S::ReopeningMain,
                _ => return None,
            };
            let (Some(player), Some(token_a), Some(token_b)) =
                (self.player, self.token_a, self.token_b)
            else {
                return None;
            };
            let (acked, received, queue) = self.core.snapshot();
            Some(DualClientSnapshot {
                player,
                state,
                token_a,
                token_b,
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
        /// token B. It has no `feed`: once `main` is back, its silent `feed` is lost after
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
            if !c.token_ok(&snap.token_a) || !c.token_ok(&snap.token_b) {
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
            c.feed_attempt = snap.feed_attempt;
            c.connect_tries = 1;
            c.reconnect_tries = 1;
            c.feed_tx =
                FeedSender::resume_at(snap.player, snap.feed_next_seq.saturating_add(FEED_SEQ_GAP));
            c.feed_rx = FeedReceiver::resume_after(cfg.max_feed_content, snap.feed_newest);
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
}
