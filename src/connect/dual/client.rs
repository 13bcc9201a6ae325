//! The client of the dual-channel connection.
//!
//! Its states and what moves it between them are [`CLIENT_TRANSITIONS`]: the machine looks
//! every transition up there, so the table is the machine (h11 style), and docs/PROTOCOL.md
//! section 4 draws it.

use super::feed::{is_control, FeedReceiver, FeedSender, FeedStats};
use super::{AttemptFailure, DualError, EndReason, Outcome};
use crate::driver::{earliest, Channel, Input, Link, Machine, Outbox, Output};
use crate::session::{AckFault, Backoff, Event, SessionCore, Verdict};
use crate::tables::{fire, NoTransition};
use crate::time::Instant;
use crate::token::Token;
use crate::wire::{
    reconnection_proof, FailReason, FeedKey, FrameDecoder, Message, MIN_SECRET_LEN,
    PROTOCOL_VERSION, SERVER_SENDER,
};
use bytes::Bytes;

#[path = "client_types.rs"]
mod types;
pub use types::*;
use DualClientInput as I;
use DualClientState as S;

/// The client of R-Type's dual-channel connection. See the [module docs](super).
///
/// A whole handshake against a [`DualServer`](super::DualServer) in memory: the client
/// asks for `main`, then `feed`; the caller opens them (here: the same link ids on both
/// sides, as a TCP accept and a UDP socket would give) and moves the bytes.
///
/// ```
/// use tether::connect::dual::{DualClient, DualClientCommand, DualServer, Event, Outcome};
/// use tether::{Channel, Input, Instant, Link, Machine, Output, Token};
///
/// let now = Instant::ZERO;
/// let mut n = 0u8;
/// let tokens = move || { n += 1; Token::new(&[n; 16]).unwrap() }; // a CSPRNG in a real server
/// let mut server = DualServer::new(Default::default(), tokens);
/// let mut client = DualClient::new(Default::default());
/// client.handle_input(now, Input::Command(DualClientCommand::Connect)).unwrap();
/// let (mut client_up, mut server_up) = (false, false);
/// for _ in 0..20 {
///     loop {
///         match client.poll_output() {
///             Output::Open(Channel::Main) => {
///                 server.handle_input(now, Input::Opened(Link::main(1))).unwrap(); // accepted
///                 client.handle_input(now, Input::Opened(Link::main(1))).unwrap();
///             }
///             Output::Open(Channel::Feed) => {
///                 client.handle_input(now, Input::Opened(Link::feed(2))).unwrap(); // a UDP socket
///             }
///             Output::Transmit(t) => server.handle_input(now, Input::Received(t.link, t.payload)).unwrap(),
///             Output::Event(Event::Up { outcome, .. }) => client_up = outcome == Outcome::Fresh,
///             Output::Wait(_) => break,
///             _ => {}
///         }
///     }
///     loop {
///         match server.poll_output() {
///             Output::Transmit(t) => client.handle_input(now, Input::Received(t.link, t.payload)).unwrap(),
///             Output::Event(Event::Up { .. }) => server_up = true,
///             Output::Wait(_) => break,
///             _ => {}
///         }
///     }
/// }
/// assert!(client_up && server_up);
/// ```
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
    /// The session secret, from `CONN_INIT_REP` on `main`: the feed key and the
    /// reconnection proof derive from it.
    secret: Option<Token>,
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
            secret: None,
            feed_attempt: 0,
            feed_tries: 0,
            connect_tries: 0,
            reconnect_tries: 0,
            step_deadline: None,
            feed_tx: FeedSender::pending(0),
            feed_rx: FeedReceiver::pending(cfg.max_feed_content),
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

    /// When bytes last arrived on `main` while it is up (messages, acknowledgements,
    /// heartbeats); `None` while it is down. `feed` datagrams do not count: this is about
    /// the stream the session's messages travel on.
    pub fn last_received(&self) -> Option<Instant> {
        self.core.last_received()
    }

    /// Closes `main` as if the network had dropped it, and takes the path of any lost
    /// `main`: reconnect and resume (the layer above asks this when its peer went silent,
    /// e.g. after journal sync's 408). Only while connected: while `feed` is being
    /// re-initialised a lost `main` would end the session, so nothing is done then.
    pub fn drop_transport(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.state == S::Connected && self.main.is_some() {
            self.main_lost();
        }
    }

    /// The session, if one was established, is over: report why and what it never
    /// delivered.
    fn end_session(&mut self, reason: EndReason) {
        if self.in_session {
            self.report_end(reason);
        } else {
            self.core.link_down();
        }
    }

    /// The session (or the one being set up, with what waits for it) ends: `Ended`, with
    /// the messages never acknowledged.
    fn report_end(&mut self, reason: EndReason) {
        self.core.link_down();
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
        self.secret = None;
        self.feed_attempt = 0;
        self.feed_tries = 0;
        self.reconnect_tries = 0;
        self.feed_tx = FeedSender::pending(0);
        self.feed_rx = FeedReceiver::pending(self.cfg.max_feed_content);
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
        self.report_end(reason);
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
                let msg = match (self.state, self.player, self.secret) {
                    // The proof derives from the secret only `main` carried: nothing an
                    // observer of `feed` saw makes it.
                    (S::ReopeningMain, Some(player), Some(secret)) => Message::Connection {
                        version: PROTOCOL_VERSION,
                        player,
                        token: reconnection_proof(&secret, player),
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
                    secret,
                },
            ) => {
                if version != PROTOCOL_VERSION {
                    self.protocol_fail(FailReason::UnsupportedVersion);
                } else if !self.token_ok(&token_a) || secret.len() < MIN_SECRET_LEN {
                    // The secret keys `feed` and proves a reconnection: 128 bits at least,
                    // even in the R-Type token mode.
                    self.protocol_fail(FailReason::InsecureToken);
                } else {
                    self.player = Some(player);
                    self.token_a = Some(token_a);
                    self.secret = Some(secret);
                    let key = FeedKey::derive(&secret, player);
                    self.feed_tx = FeedSender::new(player, key.clone());
                    self.feed_rx = FeedReceiver::new(self.cfg.max_feed_content, key);
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
                | Message::Disconnection
                // A refusal with an attempt number belongs to `feed`.
                | Message::FeedFailed { .. },
            ) => self.protocol_fail(FailReason::UnexpectedMessage),
            (S::Connected | S::ReopeningFeed | S::AwaitFeedReinitRep, Message::Dummy) => {}
            (
                S::Connected | S::ReopeningFeed | S::AwaitFeedReinitRep,
                Message::Ack { received },
            ) => {
                let Some(main) = self.main else {
                    return;
                };
                match self.core.on_ack(&mut self.out, main, received, self.now) {
                    Ok(()) => {}
                    Err(AckFault::Diverged(_)) => {
                        // The server's copy of the session, or ours, is older: it cannot
                        // continue. Tell the server (it ends the player); this session ends
                        // and a fresh one is started, as after any refusal once connected.
                        let reason = FailReason::Diverged;
                        self.send_main(&Message::ConnFailed { reason });
                        self.fail(AttemptFailure::Refused(reason));
                    }
                    Err(AckFault::Invalid(_)) => self.protocol_fail(FailReason::UnexpectedMessage),
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
        // Format, sender, tag (keyed by what `main` carried), replay window: a datagram
        // that fails any is counted and dropped before its message is even decoded.
        let opened = match self.feed_rx.open(datagram, Some(SERVER_SENDER)) {
            Ok(o) => o,
            Err(_) => return,
        };
        if opened.late && !is_control(&opened.message) {
            // R-Type: an older update is never applied after a newer one.
            return self.feed_rx.drop_late(opened.seq);
        }
        self.feed_rx.commit(opened.seq);
        self.last_feed_rx = self.now;
        match (self.state, opened.message) {
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
                    // Bound anew: nothing the server sent before this reply is taken now.
                    self.feed_rx.restart_at(opened.seq);
                    self.step_deadline = None;
                    self.out
                        .event(Event::Notice(DualClientNotice::FeedRestored));
                } else {
                    self.protocol_fail(FailReason::WrongToken);
                }
            }
            // A refusal counts only for the latest attempt, and only tagged (it got here):
            // neither a forger nor a replay of an older refusal can end the session.
            (
                S::AwaitFeedInitRep | S::AwaitFeedReinitRep,
                Message::FeedFailed { reason, attempt },
            ) if attempt == self.feed_attempt => self.fail(AttemptFailure::Refused(reason)),
            // Late or duplicated replies, refusals of other attempts, refusals without an
            // attempt (never sent tagged), keep-alives: nothing to do.
            (
                _,
                Message::FeedInitRep { .. }
                | Message::FeedFailed { .. }
                | Message::ConnFailed { .. }
                | Message::Dummy,
            ) => {}
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

    /// `Send` without giving the message up: a [`Peer`](crate::peer::Peer) keeps a sync
    /// message the replay buffer had no room for, and offers it again later.
    pub(crate) fn send_ref(&mut self, now: Instant, msg: &Message) -> Result<(), DualError> {
        self.now = self.now.max(now);
        self.send_app(msg)
    }

    fn send_app(&mut self, msg: &Message) -> Result<(), DualError> {
        if self.state == S::Closed {
            return Err(DualError::Closed);
        }
        if !crate::session::is_delivered(msg) {
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
            DualClientCommand::Send(msg) => self.send_app(&msg),
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
                self.report_end(EndReason::LocalDisconnect);
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

#[path = "client_handover.rs"]
mod handover;
