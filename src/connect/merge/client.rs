//! The client node: one session with one server, resumed across transports.

use super::codec::{self, dop_token, is_token, Incoming, LinkReader};
use super::node::{Node, NodeView, Status, Step};
use super::{Encoding, EndReason, MergeClientConfig, MergeError, Outcome};
use crate::driver::{earliest, Channel, Input, Link, Machine, Outbox, Output};
use crate::session::{
    timer_names, AckFault, Backoff, Event, SessionCore, TimerName, TimerTable, Verdict,
};
use crate::time::Instant;
use crate::token::Token;
use crate::wire::{FailReason, Message};
use bytes::Bytes;

/// What the application asks of a [`MergeClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeClientCommand {
    /// Send a message: at once if CONNECTED, else queued (bounded) and flushed in order on
    /// (re)connection. In dop's encoding only `Message::App` (one text message).
    Send(Message),
    /// Formal disconnection: the session ends for good on both sides.
    Disconnect,
}

/// What a [`MergeClient`] tells the application: the shared session events
/// ([`Event`]: up, down, message, ended) and the notices of this profile. The session is
/// `()`: a client has one.
pub type MergeClientEvent = Event<(), MergeClientNotice>;

/// What only a token-merge [`MergeClient`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeClientNotice {
    /// The server refused this attempt; the client will retry.
    Refused(FailReason),
}

timer_names! {
    /// The client's own deadlines.
    enum ClientTimer {
        /// The current transport's handshake (or its opening) takes too long.
        Handshake,
        /// The wait before opening a new transport.
        Reconnect,
        /// The client stops trying.
        GiveUp,
    }
}

impl ClientTimer {
    /// A new client's timers: its first handshake and its give-up.
    fn start(
        handshake: Instant,
        give_up: Instant,
    ) -> TimerTable<ClientTimer, { ClientTimer::COUNT }> {
        let mut t = TimerTable::new();
        t.set(ClientTimer::Handshake, handshake);
        t.set(ClientTimer::GiveUp, give_up);
        t
    }
}

/// The client side of the token-merge connection.
///
/// Feed it [`Input::Opened`] after each [`Output::Open`], the bytes of the current
/// transport, its close, timeouts and commands. Inputs naming any other link (an old
/// transport) are dropped and counted ([`MergeClient::stale_inputs`]).
///
/// `Clone` snapshots the whole machine (the exhaustive checker explores from copies).
///
/// A message sent before the session is up waits in the queue and goes out once connected:
///
/// ```
/// use tether::connect::merge::{MergeClient, MergeClientCommand, MergeClientEvent, MergeClientConfig, Outcome};
/// use tether::connect::merge::{MergeServer, MergeServerConfig, MergeServerEvent};
/// use tether::wire::Message;
/// use tether::{Channel, Input, Instant, Link, Machine, Output, Token};
///
/// let now = Instant::ZERO;
/// let mut client = MergeClient::new(now, MergeClientConfig::default(), Token::new(&[b'C'; 16]).unwrap()).unwrap();
/// let hello = Message::App(bytes::Bytes::from_static(b"hello"));
/// client.handle_input(now, Input::Command(MergeClientCommand::Send(hello.clone()))).unwrap();
/// assert_eq!(client.queued(), 1);
///
/// // The client asks for a transport; the caller connects one to a server (link 1).
/// assert_eq!(client.poll_output(), Output::Open(Channel::Main));
/// let mut server = MergeServer::new(MergeServerConfig::default(), || Token::new(&[b'S'; 16]).unwrap());
/// client.handle_input(now, Input::Opened(Link::main(1))).unwrap();
/// server.handle_input(now, Input::Opened(Link::main(1))).unwrap();
///
/// // Carry the bytes both ways until both are quiet.
/// let (mut client_events, mut server_events) = (Vec::new(), Vec::new());
/// loop {
///     let mut moved = false;
///     loop {
///         match client.poll_output() {
///             Output::Transmit(t) => {
///                 server.handle_input(now, Input::Received(t.link, t.payload)).unwrap();
///                 moved = true;
///             }
///             Output::Event(e) => client_events.push(e),
///             Output::Wait(_) => break,
///             _ => {}
///         }
///     }
///     loop {
///         match server.poll_output() {
///             Output::Transmit(t) => {
///                 client.handle_input(now, Input::Received(t.link, t.payload)).unwrap();
///                 moved = true;
///             }
///             Output::Event(e) => server_events.push(e),
///             Output::Wait(_) => break,
///             _ => {}
///         }
///     }
///     if !moved {
///         break;
///     }
/// }
/// assert_eq!(client_events, [MergeClientEvent::Up { session: (), outcome: Outcome::Fresh }]);
/// // Sent, and held until the server acknowledges it (every 32 messages, or with the
/// // heartbeat): a cut now would replay it after the resumption.
/// assert_eq!(client.queued(), 1);
/// assert!(matches!(&server_events[..], [
///     MergeServerEvent::Up { outcome: Outcome::Fresh, .. },
///     MergeServerEvent::Message { message, .. },
/// ] if *message == hello));
/// ```
#[derive(Debug, Clone)]
pub struct MergeClient {
    cfg: MergeClientConfig,
    node: Node,
    link: Option<Link>,
    reader: Option<LinkReader>,
    /// A resumption was sent on the current transport (RESUME, or dop's merged token).
    resuming: bool,
    /// The resumption secret the server offered last (tether's encoding): what the next
    /// RESUME presents. `None`: the merged token (none offered yet, or dop's encoding).
    secret: Option<Token>,
    /// The session diverged (told by the server, or found here on resuming): it cannot
    /// continue, and the fresh session that replaces it reports it `Ended(Diverged)`.
    diverged: bool,
    /// Delivery, liveness and the bounded queue of the session.
    core: SessionCore,
    backoff: Backoff,
    /// Handshake, reconnection and give-up deadlines (the session core keeps its own).
    timers: TimerTable<ClientTimer, { ClientTimer::COUNT }>,
    ended: Option<EndReason>,
    /// A move the table refused while handling the current input, returned by it.
    error: Option<MergeError>,
    stale: u64,
    outbox: Outbox<MergeClientEvent>,
    now: Instant,
}

impl MergeClient {
    /// A client in OPEN with the caller's `local` token; its first output asks for a
    /// transport. The token must suit the encoding (tether: at least 16 bytes; dop:
    /// `[A-Za-z0-9]`).
    pub fn new(
        now: Instant,
        cfg: MergeClientConfig,
        local: Token,
    ) -> Result<MergeClient, MergeError> {
        codec::check_local(cfg.encoding, &local)?;
        let mut outbox = Outbox::new();
        outbox.open(Channel::Main);
        Ok(MergeClient {
            node: Node::new(local),
            link: None,
            reader: None,
            resuming: false,
            secret: None,
            diverged: false,
            core: new_core(&cfg, now),
            backoff: Backoff::new(
                cfg.reconnect_initial,
                cfg.reconnect_max,
                cfg.jitter_percent,
                cfg.jitter_seed,
            ),
            timers: ClientTimer::start(now + cfg.handshake_timeout, now + cfg.give_up_after),
            ended: None,
            error: None,
            stale: 0,
            outbox,
            now,
            cfg,
        })
    }

    /// The node as the token-merge state tables show it.
    pub fn view(&self) -> NodeView {
        self.node.view(self.link)
    }

    /// Messages held for the server: sent and not yet acknowledged, or waiting for a
    /// connection (in dop's encoding: waiting only).
    pub fn queued(&self) -> usize {
        self.core.held()
    }

    /// Inputs dropped because they named a transport that is not the current one.
    pub fn stale_inputs(&self) -> u64 {
        self.stale
    }

    /// What a RESUME presents: the last secret the server offered, or the merged token.
    fn presented(&self) -> Option<Token> {
        self.secret.or(self.node.merged)
    }

    fn deadline(&self) -> Option<Instant> {
        if self.ended.is_some() {
            return None;
        }
        earliest([self.timers.next(), self.core.deadline()])
    }

    fn on_opened(&mut self, link: Link) {
        if self.link.is_some() || link.channel != Channel::Main {
            // One transport at a time: an extra one is closed, the current one untouched.
            self.outbox.close(link);
            return;
        }
        if let Err(e) = self.node.apply(Step::Opened) {
            self.outbox.close(link);
            self.error = Some(e.into());
            return;
        }
        self.link = Some(link);
        self.reader = Some(LinkReader::new(self.cfg.encoding, self.cfg.max_message));
        self.timers.stop(ClientTimer::Reconnect);
        self.timers.set(
            ClientTimer::Handshake,
            self.now + self.cfg.handshake_timeout,
        );
        match self.presented() {
            // RECONNECTION step 12: resume at once with the merged token (tether's encoding:
            // the secret the server offered last).
            Some(secret) if self.node.status == Status::Reconnecting => {
                self.resuming = true;
                codec::send_resume(&mut self.outbox, self.cfg.encoding, link, &secret);
            }
            // CONNECTION step 3: send the local token.
            _ => codec::send_token(&mut self.outbox, self.cfg.encoding, link, &self.node.local),
        }
    }

    fn on_received(&mut self, link: Link, bytes: bytes::Bytes) {
        if self.link != Some(link) {
            self.stale += 1;
            return;
        }
        let pushed = match self.reader.as_mut() {
            Some(r) => r.push(bytes),
            None => return,
        };
        if let Err(reason) = pushed {
            return self.fault(reason);
        }
        self.core.on_bytes(self.now);
        while self.link == Some(link) {
            let Some(reader) = self.reader.as_mut() else {
                return;
            };
            match reader.next() {
                Ok(Some((item, len))) => self.on_item(item, len),
                Ok(None) => return,
                Err(reason) => return self.fault(reason),
            }
        }
    }

    /// dop's text means what the state expects (dop itself compared strings the same way).
    fn classify_dop(&self, text: &[u8]) -> Incoming {
        let n = &self.node;
        match n.status {
            Status::Connected => match n.merged {
                Some(m) if is_token(text, &m) => Incoming::Disconnect(m),
                _ => Incoming::Other(Message::App(bytes::Bytes::copy_from_slice(text))),
            },
            Status::Preconnected if self.resuming => match (n.merged, n.remote) {
                (Some(m), _) if is_token(text, &m) => Incoming::Resume(m),
                (_, Some(r)) if is_token(text, &r) => Incoming::Token(r),
                _ => Incoming::Invalid,
            },
            _ => dop_token(text).map_or(Incoming::Invalid, Incoming::Token),
        }
    }

    fn on_item(&mut self, item: Incoming, len: usize) {
        let item = match item {
            Incoming::Text(text) => self.classify_dop(&text),
            other => other,
        };
        let n = self.node;
        match (n.status, item) {
            // CONNECTION step 4: the server's token; step 5: send ours again.
            (Status::Open, Incoming::Token(t)) => {
                self.node.remote = Some(t);
                if self.node.apply(Step::RemoteToken).is_err() {
                    return self.fault(FailReason::UnexpectedMessage);
                }
                if let Some(link) = self.link {
                    codec::send_token(&mut self.outbox, self.cfg.encoding, link, &n.local);
                }
            }
            // Steps 6-8: the server's confirmation; merge.
            (Status::Preconnected, Incoming::Token(t)) if !self.resuming && n.remote == Some(t) => {
                self.node.merged = Some(n.local.merge(&t));
                self.secret = None;
                if self.node.apply(Step::Confirmed).is_err() {
                    return self.fault(FailReason::UnexpectedMessage);
                }
                self.connected(Outcome::Fresh, false);
            }
            // RECONNECTION steps 11-12: the fresh server node's token.
            (Status::Reconnecting, Incoming::Token(t)) if self.resuming => {
                self.node.remote = Some(t);
                if self.node.apply(Step::RemoteToken).is_err() {
                    self.fault(FailReason::UnexpectedMessage);
                }
            }
            // Step 15: the server echoes the merged token (the secret we presented): resumed.
            (Status::Preconnected, Incoming::Resume(m))
                if self.resuming && self.presented() == Some(m) =>
            {
                if self.node.apply(Step::Resumed).is_err() {
                    return self.fault(FailReason::UnexpectedMessage);
                }
                self.connected(Outcome::Resumed, true);
            }
            // The server forgot the session and confirmed its token instead: a fresh session
            // from the old merged token (dop's behaviour), and we confirm ours, which dop
            // forgot to do.
            (Status::Preconnected, Incoming::Token(t)) if self.resuming && n.remote == Some(t) => {
                // The server took what RESUME presented as our local token.
                if let Some(old) = self.presented() {
                    self.secret = None;
                    self.node.local = old;
                    self.node.merged = Some(old.merge(&t));
                    if let Some(link) = self.link {
                        codec::send_token(&mut self.outbox, self.cfg.encoding, link, &old);
                    }
                }
                self.resuming = false;
                if self.node.apply(Step::Confirmed).is_err() {
                    return self.fault(FailReason::UnexpectedMessage);
                }
                self.connected(Outcome::Fresh, true);
            }
            // DISCONNECTION: the server ended the session for good.
            (Status::Connected, Incoming::Disconnect(m)) if n.merged == Some(m) => {
                self.end(EndReason::PeerDisconnect);
            }
            (Status::Connected, Incoming::Other(msg)) => {
                if let Some(link) = self.link {
                    self.core.on_message(&mut self.outbox, link, len, self.now);
                }
                self.outbox.event(Event::Message {
                    session: (),
                    message: msg,
                });
            }
            (Status::Connected, Incoming::Ack(n)) if self.core.is_reliable() => {
                if let Some(link) = self.link {
                    let resuming = self.core.awaits_resume_ack();
                    match self.core.on_ack(&mut self.outbox, link, n, self.now) {
                        // The server's first ACK fits: the resumption is proven, and only
                        // now does the retry schedule start again from its first wait.
                        Ok(()) if resuming => {
                            self.diverged = false;
                            self.backoff.reset();
                        }
                        Ok(()) => {}
                        Err(AckFault::Diverged(_)) => {
                            // The server's copy of the session, or ours, is older: tell it
                            // (it ends the session), and resume no more: the next RESUME is
                            // answered with a fresh session.
                            self.diverged = true;
                            self.fault(FailReason::Diverged);
                        }
                        Err(AckFault::Invalid(_)) => self.fault(FailReason::UnexpectedMessage),
                    }
                }
            }
            // The server offers the secret to resume with next time (tether's encoding): keep
            // it, and confirm it by sending it back; until the server has the confirmation,
            // it accepts the previous secret too.
            (Status::Connected, Incoming::Secret(t)) => {
                self.secret = Some(t);
                if let Some(link) = self.link {
                    codec::send_secret(&mut self.outbox, self.cfg.encoding, link, &t);
                }
            }
            (_, Incoming::Failed(reason)) => self.refused(reason),
            (Status::Preconnected, Incoming::Token(_) | Incoming::Resume(_)) => {
                self.fault(FailReason::WrongToken)
            }
            _ => self.fault(FailReason::UnexpectedMessage),
        }
    }

    fn connected(&mut self, outcome: Outcome, had_session: bool) {
        self.resuming = false;
        self.timers.stop(ClientTimer::Handshake);
        self.timers.stop(ClientTimer::GiveUp);
        self.timers.stop(ClientTimer::Reconnect);
        let resumed = outcome == Outcome::Resumed;
        if !resumed || !self.core.is_reliable() {
            // A resumption in tether's encoding is proven by the server's first ACK (see
            // `on_item`): a server that echoes RESUME and refuses at once must not reset
            // the backoff, or the client retries once a second forever.
            self.backoff.reset();
        }
        let lost = match self.link {
            Some(link) => {
                self.core
                    .link_up(&mut self.outbox, link, resumed, !had_session, self.now)
            }
            None => alloc::vec::Vec::new(),
        };
        if had_session && !resumed {
            // The server forgot the session (or ended it, diverged): it ended there, and a
            // fresh one replaces it.
            let reason = if core::mem::take(&mut self.diverged) {
                EndReason::Diverged
            } else {
                EndReason::Expired
            };
            self.outbox.event(Event::Ended {
                session: (),
                reason,
                undelivered: lost,
            });
        }
        self.outbox.event(Event::Up {
            session: (),
            outcome,
        });
    }

    /// The current transport misbehaved: tell the server, close it, and reconnect.
    fn fault(&mut self, reason: FailReason) {
        if let Some(link) = self.link {
            codec::send_failed(&mut self.outbox, self.cfg.encoding, link, reason);
            self.outbox.close(link);
        }
        self.lose_transport();
    }

    /// The server refused (CONN_FAILED) and closes: retry, unless retrying cannot help.
    fn refused(&mut self, reason: FailReason) {
        if let Some(link) = self.link {
            self.outbox.close(link);
        }
        match reason {
            FailReason::SessionEnded
            | FailReason::UnsupportedVersion
            | FailReason::InsecureToken => self.end(EndReason::Refused(reason)),
            _ => {
                // DIVERGED: the server ended the session; the next RESUME gets a fresh one.
                self.diverged |= reason == FailReason::Diverged;
                self.outbox
                    .event(Event::Notice(MergeClientNotice::Refused(reason)));
                self.lose_transport();
            }
        }
    }

    /// No transport any more: RECONNECTING (or OPEN if no session yet), and a wait.
    fn lose_transport(&mut self) {
        self.link = None;
        self.core.link_down();
        self.reader = None;
        self.timers.stop(ClientTimer::Handshake);
        let had_session = self.node.merged.is_some();
        let fired = match self.node.status {
            Status::Connected => self.node.apply(Step::TransportLost).map(|()| {
                self.outbox.event(Event::Down { session: () });
                self.timers
                    .set(ClientTimer::GiveUp, self.now + self.cfg.give_up_after);
            }),
            Status::Preconnected | Status::Reconnecting if had_session => {
                self.node.apply(Step::TransportLost)
            }
            Status::Open | Status::Preconnected => {
                self.node.remote = None;
                self.node.apply(Step::HandshakeFailed)
            }
            // RECONNECTING without a session cannot be; DISCONNECTED never gets here.
            Status::Reconnecting | Status::Disconnected => Ok(()),
        };
        if let Err(e) = fired {
            self.error = Some(e.into());
        }
        self.resuming = false;
        if self.timers.get(ClientTimer::GiveUp).is_none() {
            self.timers
                .set(ClientTimer::GiveUp, self.now + self.cfg.give_up_after);
        }
        self.timers
            .set(ClientTimer::Reconnect, self.now + self.backoff.next_delay());
    }

    fn end(&mut self, reason: EndReason) {
        if let Some(link) = self.link.take() {
            self.outbox.close(link);
        }
        let step = match reason {
            EndReason::LocalDisconnect | EndReason::PeerDisconnect => Step::FormalDisconnect,
            EndReason::GaveUp
            | EndReason::Expired
            | EndReason::Refused(_)
            | EndReason::Violation(_)
            | EndReason::FeedLost
            | EndReason::Diverged => Step::Expired,
        };
        if let Err(e) = self.node.apply(step) {
            self.error = Some(e.into());
        }
        self.reader = None;
        self.resuming = false;
        self.core.link_down();
        let undelivered = self.core.end();
        self.timers.stop(ClientTimer::Reconnect);
        self.timers.stop(ClientTimer::Handshake);
        self.timers.stop(ClientTimer::GiveUp);
        self.ended = Some(reason);
        self.outbox.event(Event::Ended {
            session: (),
            reason,
            undelivered,
        });
    }

    fn on_timeout(&mut self) {
        let now = self.now;
        if self.timers.is_due(now, ClientTimer::GiveUp) {
            return self.end(EndReason::GaveUp);
        }
        if self.timers.is_due(now, ClientTimer::Handshake) {
            // A transport that never opened, or a handshake that never completed.
            self.timers.stop(ClientTimer::Handshake);
            return self.fault(FailReason::Timeout);
        }
        if self.timers.is_due(now, ClientTimer::Reconnect) {
            self.timers.stop(ClientTimer::Reconnect);
            self.timers
                .set(ClientTimer::Handshake, now + self.cfg.handshake_timeout);
            self.outbox.open(Channel::Main);
        }
        if self.node.status == Status::Connected
            && self.core.on_timeout(&mut self.outbox, self.link, now) == Verdict::Dead
        {
            // A frozen server or a half-open link: nothing arrived for 1.5 x keepalive.
            self.fault(FailReason::Timeout);
        }
    }

    /// `Send` without giving the message up: a [`Peer`](crate::peer::Peer) keeps a sync
    /// message the replay buffer had no room for, and offers it again later.
    pub(crate) fn send_ref(&mut self, now: Instant, msg: &Message) -> Result<(), MergeError> {
        self.now = self.now.max(now);
        if let Some(reason) = self.ended {
            return Err(MergeError::Ended(reason));
        }
        self.send_app(msg)
    }

    fn send_app(&mut self, msg: &Message) -> Result<(), MergeError> {
        codec::check_app(self.cfg.encoding, msg, self.node.merged.as_ref())?;
        let payload = encode(&mut self.outbox, self.cfg.encoding, msg);
        let link = self.link.filter(|_| self.node.status == Status::Connected);
        self.core
            .send(&mut self.outbox, link, payload, self.now)
            .map_err(|_| MergeError::QueueFull {
                max: self.cfg.max_queue,
            })
    }

    fn on_command(&mut self, cmd: MergeClientCommand) -> Result<(), MergeError> {
        match cmd {
            MergeClientCommand::Send(msg) => self.send_app(&msg)?,
            MergeClientCommand::Disconnect => {
                if let (Status::Connected, Some(link), Some(m)) =
                    (self.node.status, self.link, self.node.merged)
                {
                    codec::send_disconnect(&mut self.outbox, self.cfg.encoding, link, &m);
                }
                // Not connected: the server cannot be told; it forgets the session after
                // its grace period.
                self.end(EndReason::LocalDisconnect);
            }
        }
        Ok(())
    }
}

impl Machine for MergeClient {
    type Command = MergeClientCommand;
    type Event = MergeClientEvent;
    type Error = MergeError;

    fn handle_input(
        &mut self,
        now: Instant,
        input: Input<MergeClientCommand>,
    ) -> Result<(), MergeError> {
        self.now = self.now.max(now);
        if let Some(reason) = self.ended {
            return match input {
                // The echo of our own close is expected; anything else is refused.
                Input::Closed(_) | Input::Timeout => Ok(()),
                Input::Opened(link) => {
                    self.outbox.close(link);
                    Err(MergeError::Ended(reason))
                }
                _ => Err(MergeError::Ended(reason)),
            };
        }
        let mut result = Ok(());
        match input {
            Input::Opened(link) => self.on_opened(link),
            Input::Received(link, bytes) => self.on_received(link, bytes),
            Input::Closed(link) if self.link == Some(link) => self.lose_transport(),
            Input::Closed(_) => self.stale += 1,
            Input::Timeout => self.on_timeout(),
            Input::Command(cmd) => result = self.on_command(cmd),
        }
        // A move the table refused on the way is this input's error.
        self.error.take().map_or(result, Err)
    }

    fn poll_output(&mut self) -> Output<MergeClientEvent> {
        match self.outbox.pop() {
            Some(out) => out,
            None => Output::Wait(self.deadline()),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.outbox.timeout(self.now, self.deadline())
    }

    /// Ended for good (DISCONNECTED: formal disconnection, given up, or refused for good).
    fn is_closed(&self) -> bool {
        self.ended.is_some()
    }
}

/// A fresh session core for `cfg`'s encoding.
fn new_core(cfg: &MergeClientConfig, now: Instant) -> SessionCore {
    match cfg.encoding {
        Encoding::Tether => SessionCore::reliable(
            cfg.session.delivery,
            cfg.max_queue,
            cfg.session.keepalive,
            now,
        ),
        Encoding::Dop => SessionCore::at_most_once(cfg.max_queue, now),
    }
}

/// An application message as its encoding's payload: a frame, or dop's bare text. The
/// frame is split off the outbox's buffer, so a steady state allocates nothing per
/// message.
pub(crate) fn encode<E>(out: &mut Outbox<E>, encoding: Encoding, msg: &Message) -> Bytes {
    match (encoding, msg) {
        (Encoding::Dop, Message::App(text)) => text.clone(),
        _ => {
            msg.encode_framed(out.buf());
            out.take_buf()
        }
    }
}

impl MergeClient {
    /// The sync layer above this session started over while the transport was down: the
    /// sync messages it had queued or left unacknowledged are obsolete, and are dropped
    /// before the replay instead of being delivered (the application's own messages are
    /// still delivered exactly once). [`Peer`](crate::peer::Peer) calls it.
    pub fn supersede_sync(&mut self) {
        self.core.supersede_sync();
    }

    /// When bytes last arrived on the session's transport while it is connected
    /// (messages, acknowledgements, heartbeats); `None` otherwise.
    pub fn last_received(&self) -> Option<Instant> {
        self.core.last_received()
    }

    /// Closes the current transport as if the network had dropped it, and takes the path
    /// of any lost transport: RECONNECTING, then a resumption after the backoff (the layer
    /// above asks this when its peer went silent, e.g. after journal sync's 408). Nothing
    /// is sent first (the layer above said why already); only while connected.
    pub fn drop_transport(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.ended.is_some() || self.node.status != Status::Connected {
            return;
        }
        if let Some(link) = self.link {
            self.outbox.close(link);
            self.lose_transport();
        }
    }

    /// The encoding in use.
    pub fn encoding(&self) -> Encoding {
        self.cfg.encoding
    }
}

// Session snapshots (src/snapshot.rs, docs/PROTOCOL.md section 8).
mod handover {
    use super::*;
    use crate::connect::merge::MergeClientSnapshot;
    use crate::snapshot::ImportError;

    impl MergeClient {
        /// The client's session, to restore it in another process: tokens, status, queue, and
        /// the time left before giving up (relative to `now`). `None` if the client holds no
        /// session yet (no merged token) or has ended.
        ///
        /// The snapshot holds the session's secret tokens: store and move it securely.
        pub fn snapshot(&self, now: Instant) -> Option<MergeClientSnapshot> {
            if self.ended.is_some() {
                return None;
            }
            let merged = self.node.merged?;
            let status = match self.node.status {
                Status::Connected if self.link.is_some() => Status::Connected,
                _ => Status::Reconnecting,
            };
            let give_up_in = match status {
                Status::Connected => None,
                _ => Some(
                    self.timers
                        .get(ClientTimer::GiveUp)
                        .map_or(self.cfg.give_up_after, |at| {
                            at.saturating_duration_since(now)
                        }),
                ),
            };
            let (acked, received, queue) = self.core.snapshot();
            Some(MergeClientSnapshot {
                status,
                local: self.node.local,
                remote: self.node.remote,
                merged,
                secret: self.secret.unwrap_or(merged),
                queue,
                acked,
                received,
                give_up_in,
            })
        }

        /// A client holding the snapshot's session, RECONNECTING (a CONNECTED snapshot's
        /// transport did not move): its first output asks for a transport, on which it resumes
        /// the session with the merged token. The queue is flushed once resumed.
        ///
        /// Refused when a token does not suit `cfg`'s encoding or the queue is over
        /// `cfg.max_queue`.
        pub fn restore(
            now: Instant,
            cfg: MergeClientConfig,
            snap: MergeClientSnapshot,
        ) -> Result<MergeClient, ImportError> {
            if codec::check_local(cfg.encoding, &snap.local).is_err()
                || codec::check_local(cfg.encoding, &snap.merged).is_err()
                || codec::check_local(cfg.encoding, &snap.secret).is_err()
            {
                return Err(ImportError::BadToken);
            }
            if snap.queue.len() > cfg.max_queue {
                return Err(ImportError::QueueTooLong {
                    len: snap.queue.len(),
                    max: cfg.max_queue,
                });
            }
            let mut outbox = Outbox::new();
            outbox.open(Channel::Main);
            let give_up = snap.give_up_in.unwrap_or(cfg.give_up_after);
            let mut core = new_core(&cfg, now);
            core.restored(snap.acked, snap.received, snap.queue);
            Ok(MergeClient {
                node: Node {
                    status: Status::Reconnecting,
                    local: snap.local,
                    remote: snap.remote,
                    merged: Some(snap.merged),
                },
                link: None,
                reader: None,
                resuming: false,
                secret: Some(snap.secret),
                diverged: false,
                core,
                backoff: Backoff::new(
                    cfg.reconnect_initial,
                    cfg.reconnect_max,
                    cfg.jitter_percent,
                    cfg.jitter_seed,
                ),
                timers: ClientTimer::start(now + cfg.handshake_timeout, now + give_up),
                ended: None,
                error: None,
                stale: 0,
                outbox,
                now,
                cfg,
            })
        }

        /// Whether this client may be replaced by a restored one without losing anything: it
        /// holds no session and no transport, or it has ended.
        pub fn is_idle(&self) -> bool {
            self.ended.is_some() || (self.node.merged.is_none() && self.link.is_none())
        }

        /// The configuration.
        pub fn config(&self) -> MergeClientConfig {
            self.cfg
        }
    }
}
