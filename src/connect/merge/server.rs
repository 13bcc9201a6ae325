//! The server: a registry of sessions (SERVER1 / SERVER2 in dop's connectivity proposal).
//!
//! Every transport starts as a temporary node in OPEN (a *pending handshake*). It becomes a
//! session when its handshake completes, or is dropped when its client resumes an existing
//! RECONNECTING session, which adopts the transport. Sessions are named by a
//! [`SessionId`] (a counter, never the secret token). Lookups by merged token go through an
//! index of a 64-bit fingerprint of each session's merged token, then compare the
//! candidates' whole tokens in constant time: a lookup costs the same with 10 sessions or
//! 10,000 (one comparison per session made every handshake quadratic to fill).

use super::codec::{self, dop_token, is_token, Incoming, LinkReader};
use super::node::{Node, NodeView, Status, Step};
use super::{EndReason, MergeError, MergeServerConfig, Outcome};
use crate::driver::{earliest, Channel, Input, Link, Machine, Outbox, Output};
use crate::session::{Event, SessionCore, Verdict};
use crate::time::Instant;
use crate::token::{Token, TokenSource};
use crate::wire::{FailReason, Message};
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use bytes::Bytes;

/// The server's name for a session: a counter, never reused, never secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// What the application asks of a [`MergeServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeServerCommand {
    /// Send a message to a session: at once if CONNECTED, queued (bounded) while
    /// RECONNECTING and flushed in order when it resumes.
    Send {
        /// The session.
        session: SessionId,
        /// The message (dop: `Message::App`).
        message: Message,
    },
    /// Formal disconnection of a session: it ends for good on both sides.
    Disconnect {
        /// The session.
        session: SessionId,
    },
}

/// What a [`MergeServer`] tells the application: the shared session events ([`Event`]: up,
/// down, message, ended, each naming its [`SessionId`]) and the notices of this profile.
pub type MergeServerEvent = Event<SessionId, MergeServerNotice>;

/// What only a token-merge [`MergeServer`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeServerNotice {
    /// A transport in handshake was refused (the peer told with CONN_FAILED in tether's
    /// encoding) and closed. No session was touched.
    Refused {
        /// The transport.
        link: Link,
        /// Why.
        reason: FailReason,
    },
}

/// A deadline in the timer index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A pending handshake (by link id) times out.
    Handshake(u64),
    /// A RECONNECTING session is forgotten.
    Expire(SessionId),
    /// A CONNECTED session's heartbeat or dead-peer check. Scheduled lazily: traffic only
    /// moves the session's clocks, and the timer, when it fires early, is set again.
    Live(SessionId),
}

#[derive(Debug, Clone)]
struct Pending {
    link: Link,
    node: Node,
    reader: LinkReader,
    deadline: Instant,
}

#[derive(Debug, Clone)]
struct Session {
    node: Node,
    link: Option<Link>,
    reader: Option<LinkReader>,
    /// Delivery, liveness and the bounded queue.
    core: SessionCore,
    /// When a RECONNECTING session is forgotten.
    expires: Option<Instant>,
    /// When the liveness timer of a CONNECTED session fires.
    live_at: Option<Instant>,
}

/// The server side of the token-merge connection: many transports, many sessions.
///
/// Feed it [`Input::Opened`] for every accepted transport (link ids unique among open
/// transports), its bytes, its close, timeouts and commands.
///
/// `Clone` (when the token source is) snapshots the whole registry (the exhaustive checker
/// explores from copies).
///
/// A transport whose client never answers is refused once the handshake times out:
///
/// ```
/// use tether::connect::merge::{Event, MergeServer, MergeServerConfig, MergeServerNotice};
/// use tether::wire::FailReason;
/// use tether::{Duration, Input, Instant, Link, Machine, Output, Token};
///
/// // Tokens come from the caller's randomness (a counter here; use a cryptographic source).
/// let mut n = 0u8;
/// let tokens = move || { n += 1; Token::new(&[n; 16]).unwrap() };
/// let mut server = MergeServer::new(MergeServerConfig::default(), tokens);
///
/// // An accepted transport is a pending handshake; the server sends its token at once.
/// let now = Instant::ZERO;
/// server.handle_input(now, Input::Opened(Link::main(1))).unwrap();
/// assert_eq!(server.pending_count(), 1);
/// assert!(matches!(server.poll_output(), Output::Transmit(t) if t.link == Link::main(1)));
///
/// // Nothing comes back: at the handshake timeout (10 s by default) the server refuses it.
/// let Output::Wait(Some(deadline)) = server.poll_output() else { panic!("no deadline") };
/// assert_eq!(deadline, now + Duration::from_secs(10));
/// server.handle_input(deadline, Input::Timeout).unwrap();
/// let (mut refused, mut closed) = (false, false);
/// loop {
///     match server.poll_output() {
///         Output::Event(Event::Notice(MergeServerNotice::Refused { link, reason })) => {
///             refused = link == Link::main(1) && reason == FailReason::Timeout;
///         }
///         Output::Close(link) => closed = link == Link::main(1),
///         Output::Wait(_) => break,
///         _ => {} // CONN_FAILED (timeout) for the client
///     }
/// }
/// assert!(refused && closed);
/// assert_eq!((server.pending_count(), server.session_count()), (0, 0));
/// ```
#[derive(Debug, Clone)]
pub struct MergeServer<S> {
    cfg: MergeServerConfig,
    tokens: S,
    pending: BTreeMap<u64, Pending>,
    sessions: BTreeMap<SessionId, Session>,
    links: BTreeMap<u64, SessionId>,
    /// Every session with a merged token, by the token's [`fingerprint`].
    by_token: BTreeSet<(u64, SessionId)>,
    /// Merged tokens of ended sessions, oldest first, with when they are forgotten.
    ended: VecDeque<(Token, Instant)>,
    /// Every handshake and expiry deadline, ordered: the next deadline is the first entry,
    /// so an idle registry of any size costs nothing per poll.
    timers: BTreeSet<(Instant, Timer)>,
    next_id: u64,
    stale: u64,
    takeovers: u64,
    outbox: Outbox<MergeServerEvent>,
    now: Instant,
}

impl<S: TokenSource> MergeServer<S> {
    /// An empty registry drawing local tokens from `tokens`.
    pub fn new(cfg: MergeServerConfig, tokens: S) -> Self {
        MergeServer {
            cfg,
            tokens,
            pending: BTreeMap::new(),
            sessions: BTreeMap::new(),
            links: BTreeMap::new(),
            by_token: BTreeSet::new(),
            ended: VecDeque::new(),
            timers: BTreeSet::new(),
            next_id: 1,
            stale: 0,
            takeovers: 0,
            outbox: Outbox::new(),
            now: Instant::ZERO,
        }
    }

    /// A session as the token-merge state tables show it.
    pub fn session(&self, id: SessionId) -> Option<NodeView> {
        self.sessions.get(&id).map(|s| s.node.view(s.link))
    }

    /// The temporary node of a transport still in handshake.
    pub fn pending(&self, link_id: u64) -> Option<NodeView> {
        self.pending
            .get(&link_id)
            .map(|p| p.node.view(Some(p.link)))
    }

    /// The session that holds a transport.
    pub fn session_of(&self, link_id: u64) -> Option<SessionId> {
        self.links.get(&link_id).copied()
    }

    /// Sessions in the registry (CONNECTED or RECONNECTING).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Messages held for a session: sent and not yet acknowledged, or queued while it is
    /// RECONNECTING (`None`: no such session).
    pub fn queued(&self, id: SessionId) -> Option<usize> {
        self.sessions.get(&id).map(|s| s.core.held())
    }

    /// A session's sync layer started over while its transport was down: see
    /// [`MergeClient::supersede_sync`](super::MergeClient::supersede_sync).
    pub fn supersede_sync(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.core.supersede_sync();
        }
    }

    /// The encoding in use.
    pub fn encoding(&self) -> super::Encoding {
        self.cfg.encoding
    }

    /// Transports replaced by a valid resumption while the server still held them open
    /// (half-open links taken over).
    pub fn takeovers(&self) -> u64 {
        self.takeovers
    }

    /// Transports in handshake.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Ended sessions' tokens still remembered.
    pub fn ended_count(&self) -> usize {
        self.ended.len()
    }

    /// Inputs dropped because they named no open transport (an old, adopted or closed one).
    pub fn stale_inputs(&self) -> u64 {
        self.stale
    }

    fn deadline(&self) -> Option<Instant> {
        earliest([
            self.timers.first().map(|t| t.0),
            self.ended.front().map(|e| e.1),
        ])
    }

    /// Sets (or clears) a session's liveness timer, keeping the timer index true.
    fn set_live(&mut self, id: SessionId, at: Option<Instant>) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Some(old) = s.live_at.take() {
            self.timers.remove(&(old, Timer::Live(id)));
        }
        if let Some(t) = at {
            s.live_at = Some(t);
            self.timers.insert((t, Timer::Live(id)));
        }
    }

    /// Schedules a session's liveness timer from its clocks.
    fn schedule_live(&mut self, id: SessionId) {
        let at = self.sessions.get(&id).and_then(|s| s.core.deadline());
        self.set_live(id, at);
    }

    fn new_core(&self) -> SessionCore {
        match self.cfg.encoding {
            super::Encoding::Tether => SessionCore::reliable(
                self.cfg.session.delivery,
                self.cfg.max_queue,
                self.cfg.session.keepalive,
                self.now,
            ),
            super::Encoding::Dop => SessionCore::at_most_once(self.cfg.max_queue, self.now),
        }
    }

    /// Removes a pending handshake and its timer.
    fn remove_pending(&mut self, link_id: u64) -> Option<Pending> {
        let p = self.pending.remove(&link_id)?;
        self.timers.remove(&(p.deadline, Timer::Handshake(link_id)));
        Some(p)
    }

    /// Sets (or clears) when a session is forgotten, keeping the timer index true.
    fn set_expiry(&mut self, id: SessionId, at: Option<Instant>) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Some(old) = s.expires.take() {
            self.timers.remove(&(old, Timer::Expire(id)));
        }
        if let Some(t) = at {
            s.expires = Some(t);
            self.timers.insert((t, Timer::Expire(id)));
        }
    }

    /// The session whose merged token is `m`: the sessions whose tokens share its
    /// fingerprint, each compared in constant time (all of them, no early exit).
    fn find(&self, m: &Token) -> Option<SessionId> {
        let f = fingerprint(m);
        let mut found = None;
        for &(_, id) in self
            .by_token
            .range((f, SessionId(0))..=(f, SessionId(u64::MAX)))
        {
            if self
                .sessions
                .get(&id)
                .and_then(|s| s.node.merged)
                .is_some_and(|t| t == *m)
            {
                found = Some(id);
            }
        }
        found
    }

    fn is_ended(&self, m: &Token) -> bool {
        self.ended.iter().fold(false, |acc, (t, _)| acc | (t == m))
    }

    fn on_opened(&mut self, link: Link) -> Result<(), MergeError> {
        if self.pending.contains_key(&link.id) || self.links.contains_key(&link.id) {
            return Err(MergeError::DuplicateLink(link.id));
        }
        let refusal = if link.channel != Channel::Main {
            Some(FailReason::Refused)
        } else if self.pending.len() >= self.cfg.max_pending {
            Some(FailReason::ServerFull)
        } else {
            None
        };
        if let Some(reason) = refusal {
            codec::send_failed(&mut self.outbox, self.cfg.encoding, link, reason);
            self.outbox.close(link);
            self.outbox
                .event(Event::Notice(MergeServerNotice::Refused { link, reason }));
            return Ok(());
        }
        let local = self.tokens.next_token();
        if let Err(e) = codec::check_local(self.cfg.encoding, &local) {
            self.outbox.close(link);
            return Err(e);
        }
        // SERVER2 (or a first server node): OPEN, sends its token at once.
        codec::send_token(&mut self.outbox, self.cfg.encoding, link, &local);
        let deadline = self.now + self.cfg.handshake_timeout;
        self.timers.insert((deadline, Timer::Handshake(link.id)));
        self.pending.insert(
            link.id,
            Pending {
                link,
                node: Node::new(local),
                reader: LinkReader::new(self.cfg.encoding, self.cfg.max_message),
                deadline,
            },
        );
        Ok(())
    }

    fn on_received(&mut self, link: Link, bytes: bytes::Bytes) {
        let pushed = if let Some(p) = self.pending.get_mut(&link.id).filter(|p| p.link == link) {
            p.reader.push(bytes)
        } else if let Some(s) = self
            .links
            .get(&link.id)
            .and_then(|id| self.sessions.get_mut(id))
            .filter(|s| s.link == Some(link))
        {
            match s.reader.as_mut() {
                Some(r) => r.push(bytes),
                None => Ok(()),
            }
        } else {
            // An old transport (adopted, closed, refused): never mixed into a session.
            self.stale += 1;
            return;
        };
        if let Err(reason) = pushed {
            return self.fail_link(link, reason);
        }
        if let Some(s) = self
            .links
            .get(&link.id)
            .and_then(|id| self.sessions.get_mut(id))
        {
            s.core.on_bytes(self.now);
        }
        self.pump(link);
    }

    /// Handles every complete item buffered for `link`, wherever the link now lives (a
    /// pending node that is adopted mid-chunk hands its buffer to the session).
    fn pump(&mut self, link: Link) {
        loop {
            if let Some(p) = self.pending.get_mut(&link.id) {
                match p.reader.next() {
                    Ok(Some((item, _))) => self.on_pending_item(link, item),
                    Ok(None) => return,
                    Err(reason) => return self.refuse(link, reason),
                }
            } else if let Some(&id) = self.links.get(&link.id) {
                let Some(reader) = self.sessions.get_mut(&id).and_then(|s| s.reader.as_mut())
                else {
                    return;
                };
                match reader.next() {
                    Ok(Some((item, len))) => self.on_session_item(id, item, len),
                    Ok(None) => return,
                    Err(reason) => return self.session_fault(id, reason),
                }
            } else {
                return;
            }
        }
    }

    fn fail_link(&mut self, link: Link, reason: FailReason) {
        if self.pending.contains_key(&link.id) {
            self.refuse(link, reason);
        } else if let Some(&id) = self.links.get(&link.id) {
            self.session_fault(id, reason);
        }
    }

    /// Refuses a transport in handshake: tell the peer, close, drop the temporary node.
    fn refuse(&mut self, link: Link, reason: FailReason) {
        self.remove_pending(link.id);
        codec::send_failed(&mut self.outbox, self.cfg.encoding, link, reason);
        self.outbox.close(link);
        self.outbox
            .event(Event::Notice(MergeServerNotice::Refused { link, reason }));
    }

    fn on_pending_item(&mut self, link: Link, item: Incoming) {
        let Some(p) = self.pending.get(&link.id) else {
            return;
        };
        let node = p.node;
        let item = match item {
            // dop: in OPEN, a text naming a known (or ended) session is a resumption,
            // anything else token-shaped is the client's local token; in PRECONNECTED only
            // the same token again is acceptable.
            Incoming::Text(text) => match (node.status, dop_token(&text)) {
                (Status::Open, Some(t)) if self.find(&t).is_some() || self.is_ended(&t) => {
                    Incoming::Resume(t)
                }
                (_, Some(t)) => Incoming::Token(t),
                (_, None) => Incoming::Invalid,
            },
            other => other,
        };
        match (node.status, item) {
            // CONNECTION step 3-5: the client's token; send ours again to confirm.
            (Status::Open, Incoming::Token(t)) => {
                let fired = self.pending.get_mut(&link.id).map(|p| {
                    p.node.remote = Some(t);
                    p.node.apply(Step::RemoteToken)
                });
                if let Some(Err(_)) = fired {
                    return self.refuse(link, FailReason::UnexpectedMessage);
                }
                codec::send_token(&mut self.outbox, self.cfg.encoding, link, &node.local);
            }
            // RECONNECTION step 12-15.
            (Status::Open, Incoming::Resume(m)) => self.resume(link, m),
            // Steps 7-8: the client's confirmation.
            (Status::Preconnected, Incoming::Token(t)) if node.remote == Some(t) => {
                self.establish(link)
            }
            (Status::Preconnected, Incoming::Token(_)) => self.refuse(link, FailReason::WrongToken),
            (_, Incoming::Failed(reason)) => {
                // The client gave up on this transport; it closes it.
                self.remove_pending(link.id);
                self.outbox.close(link);
                self.outbox
                    .event(Event::Notice(MergeServerNotice::Refused { link, reason }));
            }
            _ => self.refuse(link, FailReason::UnexpectedMessage),
        }
    }

    fn resume(&mut self, link: Link, m: Token) {
        match self.find(&m) {
            Some(id) => {
                let reconnecting = self
                    .sessions
                    .get(&id)
                    .is_some_and(|s| s.node.status == Status::Reconnecting);
                if !reconnecting {
                    // Takeover: the client proved the session on a new transport while the
                    // old one still looks open here (a half-open link after NAT rebinding
                    // or a network switch). The old transport is closed and counted; the
                    // session resumes on the new one.
                    if let Some(old) = self.sessions.get(&id).and_then(|s| s.link) {
                        self.outbox.close(old);
                        self.takeovers += 1;
                    }
                    self.lose(id);
                }
                self.adopt(id, link);
            }
            None if self.is_ended(&m) => self.refuse(link, FailReason::SessionEnded),
            None => {
                // Forgotten (expired, or never known): dop makes a new session from the old
                // merged token, taken as the client's local token. The result says Fresh.
                let Some(p) = self.pending.get_mut(&link.id) else {
                    return;
                };
                p.node.remote = Some(m);
                if p.node.apply(Step::RemoteToken).is_err() {
                    return self.refuse(link, FailReason::UnexpectedMessage);
                }
                let local = p.node.local;
                codec::send_token(&mut self.outbox, self.cfg.encoding, link, &local);
            }
        }
    }

    /// SERVER1 takes the transport of SERVER2, which is dropped; CONNECTED; echo the merged
    /// token; flush the queue.
    fn adopt(&mut self, id: SessionId, link: Link) {
        let Some(p) = self.remove_pending(link.id) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.node.apply(Step::Resumed).is_err() {
            return self.refuse(link, FailReason::NotResumable);
        }
        s.link = Some(link);
        s.reader = Some(p.reader);
        let merged = s.node.merged;
        self.links.insert(link.id, id);
        self.set_expiry(id, None);
        if let Some(m) = merged {
            codec::send_resume(&mut self.outbox, self.cfg.encoding, link, &m);
        }
        self.outbox.event(Event::Up {
            session: id,
            outcome: Outcome::Resumed,
        });
        // Our ACK goes first; what the client missed is replayed on its ACK.
        if let Some(s) = self.sessions.get_mut(&id) {
            let _ = s
                .core
                .link_up(&mut self.outbox, link, true, false, self.now);
        }
        self.schedule_live(id);
    }

    /// The handshake is confirmed: a new session holds the merged token.
    fn establish(&mut self, link: Link) {
        let Some(node) = self.pending.get(&link.id).map(|p| p.node) else {
            return;
        };
        let Some(remote) = node.remote else {
            return self.refuse(link, FailReason::UnexpectedMessage);
        };
        if self.sessions.len() >= self.cfg.max_sessions {
            return self.refuse(link, FailReason::ServerFull);
        }
        let merged = node.local.merge(&remote);
        if self.is_ended(&merged) {
            return self.refuse(link, FailReason::SessionEnded);
        }
        if self.find(&merged).is_some() {
            // Two sessions must never share a token (the caller reused tokens).
            return self.refuse(link, FailReason::NotResumable);
        }
        let Some(p) = self.remove_pending(link.id) else {
            return;
        };
        let mut node = p.node;
        node.merged = Some(merged);
        if node.apply(Step::Confirmed).is_err() {
            return self.refuse(link, FailReason::UnexpectedMessage);
        }
        let id = SessionId(self.next_id);
        self.next_id = self.next_id.saturating_add(1);
        self.by_token.insert((fingerprint(&merged), id));
        let mut core = self.new_core();
        let _ = core.link_up(&mut self.outbox, link, false, true, self.now);
        self.sessions.insert(
            id,
            Session {
                node,
                link: Some(link),
                reader: Some(p.reader),
                core,
                expires: None,
                live_at: None,
            },
        );
        self.links.insert(link.id, id);
        self.outbox.event(Event::Up {
            session: id,
            outcome: Outcome::Fresh,
        });
        self.schedule_live(id);
    }

    fn on_session_item(&mut self, id: SessionId, item: Incoming, len: usize) {
        let Some(merged) = self.sessions.get(&id).and_then(|s| s.node.merged) else {
            return;
        };
        let item = match item {
            // dop's in-band disconnection, kept for compatibility in dop's encoding only.
            Incoming::Text(text) if is_token(&text, &merged) => Incoming::Disconnect(merged),
            Incoming::Text(text) => Incoming::Other(Message::App(text)),
            other => other,
        };
        match item {
            Incoming::Disconnect(m) if m == merged => self.end(id, EndReason::PeerDisconnect),
            Incoming::Other(message) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    if let Some(link) = s.link {
                        s.core.on_message(&mut self.outbox, link, len, self.now);
                    }
                }
                self.outbox.event(Event::Message {
                    session: id,
                    message,
                })
            }
            Incoming::Ack(n) => {
                let now = self.now;
                let bad = self.sessions.get_mut(&id).is_some_and(|s| match s.link {
                    Some(link) if s.core.is_reliable() => {
                        s.core.on_ack(&mut self.outbox, link, n, now).is_err()
                    }
                    _ => true,
                });
                if bad {
                    self.session_fault(id, FailReason::UnexpectedMessage);
                }
            }
            Incoming::Disconnect(_) => self.session_fault(id, FailReason::WrongToken),
            Incoming::Failed(_) => {
                // The client gave up on this transport and closes it: no answer needed.
                if let Some(link) = self.sessions.get(&id).and_then(|s| s.link) {
                    self.outbox.close(link);
                }
                self.lose(id);
            }
            _ => self.session_fault(id, FailReason::UnexpectedMessage),
        }
    }

    /// A session's own transport misbehaved: tell it, close it; the session waits to be
    /// resumed on a better one (no other session is touched).
    fn session_fault(&mut self, id: SessionId, reason: FailReason) {
        if let Some(link) = self.sessions.get(&id).and_then(|s| s.link) {
            codec::send_failed(&mut self.outbox, self.cfg.encoding, link, reason);
            self.outbox.close(link);
        }
        self.lose(id);
    }

    /// CONNECTED -> RECONNECTING: the grace period starts.
    fn lose(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Some(link) = s.link.take() {
            self.links.remove(&link.id);
        }
        s.reader = None;
        s.core.link_down();
        if s.node.apply(Step::TransportLost).is_err() {
            // A session the table cannot move waits for nothing: it is forgotten.
            return self.end(id, EndReason::Expired);
        }
        let at = self.now + self.cfg.resume_grace;
        self.set_live(id, None);
        self.set_expiry(id, Some(at));
        self.outbox.event(Event::Down { session: id });
    }

    /// Removes a session for good (remembering a formally disconnected one's token).
    fn end(&mut self, id: SessionId, reason: EndReason) {
        self.set_expiry(id, None);
        self.set_live(id, None);
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        let undelivered = s.core.end();
        if let Some(m) = s.node.merged {
            self.by_token.remove(&(fingerprint(&m), id));
        }
        if let Some(link) = s.link {
            self.links.remove(&link.id);
            self.outbox.close(link);
        }
        // Only a formal disconnection is remembered: an expired session's client is
        // welcome back, as a fresh session (the result says so).
        let formal = matches!(
            reason,
            EndReason::LocalDisconnect | EndReason::PeerDisconnect
        );
        if let Some(m) = s.node.merged.filter(|_| formal) {
            if self.ended.len() >= self.cfg.max_sessions.max(1) {
                self.ended.pop_front();
            }
            self.ended.push_back((m, self.now + self.cfg.ended_memory));
        }
        self.outbox.event(Event::Ended {
            session: id,
            reason,
            undelivered,
        });
    }

    fn on_timeout(&mut self) {
        let now = self.now;
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Handshake(link_id) => {
                    if let Some(link) = self.pending.get(&link_id).map(|p| p.link) {
                        self.refuse(link, FailReason::Timeout);
                    }
                }
                Timer::Expire(id) => {
                    if let Some(s) = self.sessions.get_mut(&id) {
                        s.expires = None;
                    }
                    self.end(id, EndReason::Expired);
                }
                Timer::Live(id) => {
                    let Some(s) = self.sessions.get_mut(&id) else {
                        continue;
                    };
                    s.live_at = None;
                    if s.core.on_timeout(&mut self.outbox, s.link, now) == Verdict::Dead {
                        // A frozen client or a half-open link: the session waits for its
                        // client to resume.
                        self.session_fault(id, FailReason::Timeout);
                    } else {
                        self.schedule_live(id);
                    }
                }
            }
        }
        while self.ended.front().is_some_and(|e| e.1 <= now) {
            self.ended.pop_front();
        }
    }

    fn on_command(&mut self, cmd: MergeServerCommand) -> Result<(), MergeError> {
        match cmd {
            MergeServerCommand::Send { session, message } => {
                let enc = self.cfg.encoding;
                let max = self.cfg.max_queue;
                let now = self.now;
                let s = self
                    .sessions
                    .get_mut(&session)
                    .ok_or(MergeError::UnknownSession(session))?;
                codec::check_app(enc, &message, s.node.merged.as_ref())?;
                let payload: Bytes = super::client::encode(&mut self.outbox, enc, &message);
                let link = s.link.filter(|_| s.node.status == Status::Connected);
                s.core
                    .send(&mut self.outbox, link, payload, now)
                    .map_err(|_| MergeError::QueueFull { max })?;
            }
            MergeServerCommand::Disconnect { session } => {
                let s = self
                    .sessions
                    .get(&session)
                    .ok_or(MergeError::UnknownSession(session))?;
                if let (Status::Connected, Some(link), Some(m)) =
                    (s.node.status, s.link, s.node.merged)
                {
                    codec::send_disconnect(&mut self.outbox, self.cfg.encoding, link, &m);
                }
                self.end(session, EndReason::LocalDisconnect);
            }
        }
        Ok(())
    }
}

impl<S: TokenSource> Machine for MergeServer<S> {
    type Command = MergeServerCommand;
    type Event = MergeServerEvent;
    type Error = MergeError;

    fn handle_input(
        &mut self,
        now: Instant,
        input: Input<MergeServerCommand>,
    ) -> Result<(), MergeError> {
        self.now = self.now.max(now);
        match input {
            Input::Opened(link) => return self.on_opened(link),
            Input::Received(link, bytes) => self.on_received(link, bytes),
            Input::Closed(link) => {
                if self.pending.get(&link.id).is_some_and(|p| p.link == link) {
                    self.remove_pending(link.id);
                } else if let Some(&id) = self.links.get(&link.id) {
                    self.lose(id);
                } else {
                    self.stale += 1;
                }
            }
            Input::Timeout => self.on_timeout(),
            Input::Command(cmd) => return self.on_command(cmd),
        }
        Ok(())
    }

    fn poll_output(&mut self) -> Output<MergeServerEvent> {
        // The deadline scans the registry: only compute it when nothing is queued.
        match self.outbox.pop() {
            Some(out) => out,
            None => Output::Wait(self.deadline()),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.outbox.timeout(self.now, self.deadline())
    }

    /// Never: the registry serves until it is dropped (sessions end, the server does not).
    fn is_closed(&self) -> bool {
        false
    }
}

/// A 64-bit fingerprint of a merged token (FNV-1a), to index sessions by token.
///
/// Not a secret and not keyed (tether draws no randomness): what an attacker could learn
/// from the timing of the index walk is at most the ordering of fingerprints, 64 bits
/// about tokens of at least 32 bytes (two tokens of at least 16 merged) that still have to
/// be matched whole, in constant time. Crafted collisions only bring a lookup back to one
/// constant-time comparison per colliding session, the cost every lookup had before.
fn fingerprint(t: &Token) -> u64 {
    t.as_bytes().iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PROTOCOL_VERSION;
    use bytes::{Bytes, BytesMut};

    fn frame(msg: &Message) -> Bytes {
        let mut b = BytesMut::new();
        msg.encode_framed(&mut b);
        b.freeze()
    }

    fn token(c: u8) -> Token {
        Token::new(&[c; 16]).unwrap()
    }

    /// The timer index holds exactly one entry per pending handshake and per RECONNECTING
    /// session, through handshakes, losses, adoptions, refusals and expiries.
    fn assert_index<S>(s: &MergeServer<S>) {
        // The token index holds exactly the sessions' merged tokens.
        let with_token: BTreeSet<(u64, SessionId)> = s
            .sessions
            .iter()
            .filter_map(|(id, x)| x.node.merged.map(|m| (fingerprint(&m), *id)))
            .collect();
        assert_eq!(with_token, s.by_token);
        let reconnecting = s.sessions.values().filter(|x| x.expires.is_some()).count();
        let live = s.sessions.values().filter(|x| x.live_at.is_some()).count();
        assert_eq!(s.timers.len(), s.pending.len() + reconnecting + live);
        for (at, t) in &s.timers {
            match t {
                Timer::Handshake(id) => assert_eq!(s.pending[id].deadline, *at),
                Timer::Expire(id) => assert_eq!(s.sessions[id].expires, Some(*at)),
                Timer::Live(id) => assert_eq!(s.sessions[id].live_at, Some(*at)),
            }
        }
    }

    #[test]
    fn timer_index_follows_the_registry() {
        let mut n = 0u8;
        let mut s = MergeServer::new(MergeServerConfig::default(), move || {
            n += 1;
            token(b'a' + n)
        });
        let now = Instant::ZERO;
        let tok = |t| {
            frame(&Message::Token {
                version: PROTOCOL_VERSION,
                token: t,
            })
        };
        for id in 1..=3 {
            s.handle_input(now, Input::Opened(Link::main(id))).unwrap();
        }
        assert_index(&s);
        s.handle_input(now, Input::Received(Link::main(1), tok(token(b'X'))))
            .unwrap();
        s.handle_input(now, Input::Received(Link::main(1), tok(token(b'X'))))
            .unwrap();
        assert_index(&s);
        s.handle_input(
            now,
            Input::Received(Link::main(2), Bytes::from_static(b"\0\0\0\x01\xff")),
        )
        .unwrap();
        s.handle_input(now, Input::Closed(Link::main(3))).unwrap();
        s.handle_input(now, Input::Closed(Link::main(1))).unwrap();
        assert_index(&s);
        assert_eq!(s.timers.len(), 1, "only the RECONNECTING session");
        let merged = s
            .sessions
            .values()
            .next()
            .and_then(|x| x.node.merged)
            .unwrap();
        s.handle_input(now, Input::Opened(Link::main(4))).unwrap();
        let resume = frame(&Message::Resume {
            version: PROTOCOL_VERSION,
            token: merged,
        });
        s.handle_input(now, Input::Received(Link::main(4), resume))
            .unwrap();
        assert_index(&s);
        assert_eq!(
            s.timers.iter().map(|t| t.1).collect::<alloc::vec::Vec<_>>(),
            [Timer::Live(s.session_of(4).unwrap())],
            "adopted: no expiry, no pending, only the heartbeat"
        );
        s.handle_input(now, Input::Closed(Link::main(4))).unwrap();
        s.handle_input(Instant::MAX, Input::Timeout).unwrap();
        assert_index(&s);
        assert_eq!((s.session_count(), s.timers.len()), (0, 0));
    }

    /// Runs a handshake on `link` with a client token made of `c`; returns the session.
    fn handshake<S: TokenSource>(s: &mut MergeServer<S>, link: u64, c: Token) -> SessionId {
        let now = Instant::ZERO;
        let tok = frame(&Message::Token {
            version: PROTOCOL_VERSION,
            token: c,
        });
        s.handle_input(now, Input::Opened(Link::main(link)))
            .unwrap();
        s.handle_input(now, Input::Received(Link::main(link), tok.clone()))
            .unwrap();
        s.handle_input(now, Input::Received(Link::main(link), tok))
            .unwrap();
        while !matches!(s.poll_output(), Output::Wait(_)) {}
        s.session_of(link).unwrap()
    }

    #[test]
    fn handover_keeps_the_token_index_of_both_servers() {
        let source = || {
            let mut n = 0u8;
            move || {
                n += 1;
                token(b'a' + n)
            }
        };
        let mut a = MergeServer::new(MergeServerConfig::default(), source());
        let mut b = MergeServer::new(MergeServerConfig::default(), source());
        let id = handshake(&mut a, 1, token(b'X'));
        let snap = a.take_session(Instant::ZERO, id).unwrap();
        assert_index(&a);
        assert_eq!(a.session_count(), 0);
        let merged = snap.merged;
        let imported = b.import_session(Instant::ZERO, snap.clone()).unwrap();
        assert_index(&b);
        assert_eq!(b.find(&merged), Some(imported));
        assert_eq!(
            b.import_session(Instant::ZERO, snap),
            Err(crate::snapshot::ImportError::DuplicateToken)
        );
        assert_index(&b);
    }

    #[test]
    fn resumption_finds_its_session_among_many_even_when_fingerprints_collide() {
        let mut n = 0u64;
        // No heartbeat: the session resumed at the end stays up until the end of time.
        let cfg = MergeServerConfig {
            session: crate::session::SessionConfig {
                keepalive: None,
                ..Default::default()
            },
            ..MergeServerConfig::default()
        };
        let mut s = MergeServer::new(cfg, move || {
            n += 1;
            let mut b = [b'S'; 16];
            b[8..].copy_from_slice(&n.to_be_bytes());
            Token::new(&b).unwrap()
        });
        let now = Instant::ZERO;
        let ids: alloc::vec::Vec<SessionId> = (1..=50u8)
            .map(|i| handshake(&mut s, u64::from(i), token(i)))
            .collect();
        assert_index(&s);
        let merged = |s: &MergeServer<_>, id: SessionId| s.session(id).unwrap().merged.unwrap();
        let target = ids[17];
        let m = merged(&s, target);
        // Forge collisions: other sessions filed under the target's fingerprint.
        for &other in &ids[..5] {
            s.by_token.insert((fingerprint(&m), other));
        }
        assert_eq!(s.find(&m), Some(target));
        for &other in &ids[..5] {
            s.by_token.remove(&(fingerprint(&m), other));
        }
        for i in 1..=50 {
            s.handle_input(now, Input::Closed(Link::main(i))).unwrap();
        }
        s.handle_input(now, Input::Opened(Link::main(100))).unwrap();
        let resume = frame(&Message::Resume {
            version: PROTOCOL_VERSION,
            token: m,
        });
        s.handle_input(now, Input::Received(Link::main(100), resume))
            .unwrap();
        assert_eq!(s.session_of(100), Some(target));
        assert_eq!(s.session(target).unwrap().status, Status::Connected);
        assert_index(&s);
        // Ended sessions leave the index.
        s.handle_input(Instant::MAX, Input::Timeout).unwrap();
        assert_eq!(s.session_count(), 1);
        assert_index(&s);
    }

    #[test]
    fn an_idle_session_costs_a_few_hundred_bytes() {
        // Inline tokens (3 x 65 bytes) dominate; buffers are empty until bytes arrive.
        let size = core::mem::size_of::<Session>();
        assert!(size <= 512, "Session is {size} bytes");
    }
}

// Session snapshots (src/snapshot.rs, docs/PROTOCOL.md section 8): hand one session over to
mod handover {
    use super::*;
    use crate::connect::merge::MergeSessionSnapshot;
    use crate::snapshot::ImportError;

    // another registry, in another process.
    impl<S: TokenSource> MergeServer<S> {
        /// One session's durable state, to hand it over to another server: tokens, status,
        /// queue, and the time left before it would expire (relative to `now`). `None` if no
        /// such session. The session stays here; see [`MergeServer::take_session`] to move it.
        ///
        /// The snapshot holds the session's secret tokens: store and move it securely.
        pub fn export_session(&self, now: Instant, id: SessionId) -> Option<MergeSessionSnapshot> {
            let s = self.sessions.get(&id)?;
            let merged = s.node.merged?;
            let status = match s.node.status {
                Status::Connected if s.link.is_some() => Status::Connected,
                _ => Status::Reconnecting,
            };
            let expires_in = match status {
                Status::Connected => None,
                _ => Some(s.expires.map_or(self.cfg.resume_grace, |at| {
                    at.saturating_duration_since(now)
                })),
            };
            let (acked, received, queue) = s.core.snapshot();
            Some(MergeSessionSnapshot {
                status,
                local: s.node.local,
                remote: s.node.remote,
                merged,
                queue,
                acked,
                received,
                expires_in,
            })
        }

        /// Exports a session and forgets it here, without telling its client: its transport is
        /// closed ([`Output::Close`]) and no event is given. The client sees its transport
        /// lost and resumes, wherever the caller now routes it (the importing server).
        pub fn take_session(
            &mut self,
            now: Instant,
            id: SessionId,
        ) -> Option<MergeSessionSnapshot> {
            let snap = self.export_session(now, id)?;
            self.now = self.now.max(now);
            self.set_expiry(id, None);
            self.set_live(id, None);
            if let Some(s) = self.sessions.remove(&id) {
                if let Some(m) = s.node.merged {
                    self.by_token.remove(&(fingerprint(&m), id));
                }
                if let Some(link) = s.link {
                    self.links.remove(&link.id);
                    self.outbox.close(link);
                }
            }
            Some(snap)
        }

        /// Takes over a session exported by another server: it becomes RECONNECTING here
        /// (whatever its status at export: its transport did not move), with its queue, and is
        /// forgotten when its time left runs out (`resume_grace` if it was exported
        /// CONNECTED). Its client resumes it with RESUME as after any lost transport.
        ///
        /// Refused, leaving the registry as it was, when the registry is full
        /// ([`ImportError::Full`]), when a session holds the same merged token (imported
        /// twice: [`ImportError::DuplicateToken`]), when that token ended formally here, when
        /// the queue is over `max_queue`, or when a token does not suit the encoding.
        ///
        /// The next deadline may be earlier: poll the output after an import.
        pub fn import_session(
            &mut self,
            now: Instant,
            snap: MergeSessionSnapshot,
        ) -> Result<SessionId, ImportError> {
            if self.sessions.len() >= self.cfg.max_sessions {
                return Err(ImportError::Full);
            }
            if self.find(&snap.merged).is_some() {
                return Err(ImportError::DuplicateToken);
            }
            if self.is_ended(&snap.merged) {
                return Err(ImportError::Ended);
            }
            if snap.queue.len() > self.cfg.max_queue {
                return Err(ImportError::QueueTooLong {
                    len: snap.queue.len(),
                    max: self.cfg.max_queue,
                });
            }
            if codec::check_local(self.cfg.encoding, &snap.local).is_err()
                || codec::check_local(self.cfg.encoding, &snap.merged).is_err()
            {
                return Err(ImportError::BadToken);
            }
            self.now = self.now.max(now);
            let id = SessionId(self.next_id);
            self.next_id = self.next_id.saturating_add(1);
            let mut core = self.new_core();
            core.restored(snap.acked, snap.received, snap.queue);
            self.sessions.insert(
                id,
                Session {
                    node: Node {
                        status: Status::Reconnecting,
                        local: snap.local,
                        remote: snap.remote,
                        merged: Some(snap.merged),
                    },
                    link: None,
                    reader: None,
                    core,
                    expires: None,
                    live_at: None,
                },
            );
            self.by_token.insert((fingerprint(&snap.merged), id));
            let left = snap.expires_in.unwrap_or(self.cfg.resume_grace);
            self.set_expiry(id, Some(now + left));
            Ok(id)
        }
    }
}
