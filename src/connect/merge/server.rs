//! The server: a registry of sessions (SERVER1 / SERVER2 in dop's connectivity proposal).
//!
//! Every transport starts as a temporary node in OPEN (a *pending handshake*). It becomes a
//! session when its handshake completes, or is dropped when its client resumes an existing
//! RECONNECTING session, which adopts the transport. Sessions are named by a
//! [`SessionId`] (a counter, never the secret token). Lookups by token go through an index
//! of keyed 64-bit fingerprints ([`TokenKey`]) of each session's merged token and
//! resumption secrets, then compare the candidates' whole tokens in constant time: a lookup
//! costs the same with 10 sessions or 10,000 (one comparison per session made every
//! handshake quadratic to fill), and no peer can forge collisions without the key.
//!
//! In tether's encoding a session's resumption secret rotates: the server offers a fresh
//! one (SECRET) with every confirmation, at the first connect and at every resumption, and
//! the client confirms it by sending it back. RESUME then takes the current secret (or the
//! offered one, if the client got it but its confirmation was cut off); the secret it
//! replaced is refused as ended, so a RESUME captured once cannot be replayed.

use super::codec::{self, dop_token, is_token, Incoming, LinkReader};
use super::ended::{EndedBy, EndedSet};
use super::index::{self, SecretKey, TokenKey};
use super::node::{Node, NodeView, Status, Step};
use super::{Encoding, EndReason, MergeError, MergeServerConfig, Outcome};
use crate::driver::{earliest, Channel, Input, Link, Machine, Outbox, Output};
use crate::session::endpoint::{Endpoint, SessionTimer, Table, Timer};
use crate::session::{AckFault, Event, SessionCore, Verdict};
use crate::time::Instant;
use crate::token::{Token, TokenPack, TokenSource};
use crate::wire::{FailReason, Message};
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
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

/// A transport as the registry reads it. The temporary node (SERVER2) of a transport in
/// its handshake is kept apart ([`MergeServer::handshakes`]), so that an admitted
/// transport's route holds no empty node.
#[derive(Debug, Clone)]
struct LinkState {
    reader: LinkReader,
}

/// What a session holds beyond the shared session core: its node (SERVER1) and, in
/// tether's encoding, what its resumption secrets derive from.
///
/// The node's tokens (local, remote, merged) and the secrets' key are packed at their used
/// length ([`TokenPack`]: inline for the usual 16 + 16 + 32 + 16 bytes) rather than kept as
/// four 65-byte [`Token`]s: an idle session is mostly this record.
#[derive(Debug, Clone)]
struct Session {
    status: Status,
    /// Local, remote, merged, and the secrets' key (tether's encoding).
    tokens: TokenPack,
    /// `None` in dop's encoding, which has no message to change the merged token: there it
    /// is the only secret.
    secrets: Option<Secrets>,
}

/// A session's resumption secrets (tether's encoding): generation `g`'s secret is derived
/// from one key drawn for the session ([`SecretKey`]). A fresh generation is offered with
/// every confirmation (the first connect, every resumption); a RESUME presenting one older
/// than `oldest` is a replay and is refused as ended.
///
/// The session's key itself (snapshots carry it: another process derives nothing from its
/// own master key for a session it did not make) is in the session's [`TokenPack`].
#[derive(Debug, Clone, Copy)]
struct Secrets {
    key: SecretKey,
    /// The oldest generation that still resumes: the newest the client proved it holds
    /// (by presenting it, or by confirming it).
    oldest: u32,
    /// The next generation to offer.
    next: u32,
    /// Whether the merged token still resumes: until the client presents or confirms a
    /// first secret (a cut may come before the first offer arrives).
    merged_resumes: bool,
}

impl Secrets {
    fn new(root: &Token) -> Secrets {
        Secrets {
            key: SecretKey::from_token(root),
            oldest: 0,
            next: 0,
            merged_resumes: true,
        }
    }

    /// The client proved it holds generation `g`: nothing older resumes any more.
    fn proven(&mut self, g: u32) {
        self.oldest = self.oldest.max(g);
        self.merged_resumes = false;
        // A server restored from an older copy may see a generation it never offered.
        self.next = self.next.max(g.saturating_add(1));
    }

    /// The next secret to offer.
    fn offer(&mut self) -> Token {
        let g = self.next;
        self.next = self.next.saturating_add(1);
        self.key.secret(g)
    }
}

/// What a value in the token index is to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    /// The keyed fingerprint of its merged token.
    Merged = 0,
    /// The locator of its secrets.
    Locator = 1,
}

impl Session {
    /// A session holding `node` (merged), with secrets derived from `root`.
    fn new(node: &Node, root: Option<&Token>) -> Session {
        Session {
            status: node.status,
            tokens: TokenPack::new([
                Some(&node.local),
                node.remote.as_ref(),
                node.merged.as_ref(),
                root,
            ]),
            secrets: root.map(Secrets::new),
        }
    }

    /// The node, its tokens unpacked.
    fn node(&self) -> Node {
        Node {
            status: self.status,
            // Always present: packed from a node's own token.
            local: self.tokens.get(0).unwrap_or(Token::from_array([0])),
            remote: self.tokens.get(1),
            merged: self.tokens.get(2),
        }
    }

    /// The merged token (every session has one).
    fn merged(&self) -> Option<Token> {
        self.tokens.get(2)
    }

    /// The secrets' key (tether's encoding).
    fn root(&self) -> Option<Token> {
        self.tokens.get(3)
    }

    /// Fires `step` through the transition table (see [`Node::apply`]).
    fn apply(&mut self, step: Step) -> Result<(), crate::tables::NoTransition<Status, Step>> {
        self.status = crate::tables::fire(super::TRANSITIONS, self.status, step)?;
        Ok(())
    }

    /// The session's index entries.
    fn entries(&self, key: &TokenKey) -> impl Iterator<Item = (u64, Role)> {
        [
            self.merged().map(|m| (key.fingerprint(&m), Role::Merged)),
            self.secrets.map(|k| (k.key.locator(), Role::Locator)),
        ]
        .into_iter()
        .flatten()
    }
}

/// What a RESUME presents, to the registry.
enum Presented {
    /// A session's secret (with its generation), or its merged token while that still
    /// resumes it (always in dop's encoding).
    Resumes(SessionId, Option<u32>),
    /// A secret (or merged token) the session's rotation left behind: a replay.
    Retired,
    /// Nothing this registry holds.
    Unknown,
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
    /// Transports, sessions, their cores and every handshake, expiry and liveness timer.
    endpoint: Endpoint<SessionId, LinkState, Session>,
    /// The temporary node of every transport in its handshake, by link id: exactly the
    /// endpoint's pending routes (a table that keeps its room, so a handshake allocates
    /// nothing here in the steady state).
    handshakes: Table<u64, Node>,
    /// Every session by the keyed fingerprint of its merged token, and by the locator of
    /// its secrets.
    /// One set per [`Role`] (indexed by it), of 16-byte entries: every session has one
    /// entry in each (tether's encoding).
    by_token: [BTreeSet<(u64, SessionId)>; 2],
    /// The key of every fingerprint, from the token drawn at creation.
    key: TokenKey,
    /// The key new sessions' secrets keys derive from, from the same token.
    master: TokenKey,
    /// Tombstones of formally ended sessions.
    ended: EndedSet,
    next_id: u64,
    outbox: Outbox<MergeServerEvent>,
    now: Instant,
}

impl<S: TokenSource> MergeServer<S> {
    /// An empty registry drawing tokens from `tokens`: the first one at once, the server's
    /// own key (never sent: it keys the token index, so that peers cannot forge collisions,
    /// and the resumption secrets of tether's encoding), then a local token for every
    /// transport.
    pub fn new(cfg: MergeServerConfig, mut tokens: S) -> Self {
        let drawn = tokens.next_token();
        let key = TokenKey::from_token(&drawn);
        let master = TokenKey::from_token(&key.derive(&drawn));
        MergeServer {
            master,
            endpoint: Endpoint::new(cfg.max_pending),
            handshakes: Table::default(),
            ended: EndedSet::new(cfg.max_sessions),
            cfg,
            tokens,
            by_token: [BTreeSet::new(), BTreeSet::new()],
            key,
            next_id: 1,
            outbox: Outbox::new(),
            now: Instant::ZERO,
        }
    }

    /// A session as the token-merge state tables show it.
    pub fn session(&self, id: SessionId) -> Option<NodeView> {
        self.endpoint.get(id).map(|s| s.state.node().view(s.link))
    }

    /// The temporary node of a transport still in handshake.
    pub fn pending(&self, link_id: u64) -> Option<NodeView> {
        let r = self.endpoint.peek(link_id)?;
        self.handshakes.get(&link_id).map(|n| n.view(Some(r.link)))
    }

    /// The session that holds a transport.
    pub fn session_of(&self, link_id: u64) -> Option<SessionId> {
        self.endpoint.peek(link_id).and_then(|r| r.session)
    }

    /// Sessions in the registry (CONNECTED or RECONNECTING).
    pub fn session_count(&self) -> usize {
        self.endpoint.session_count()
    }

    /// Messages held for a session: sent and not yet acknowledged, or queued while it is
    /// RECONNECTING (`None`: no such session).
    pub fn queued(&self, id: SessionId) -> Option<usize> {
        self.endpoint.get(id).map(|s| s.core.held())
    }

    /// A session's sync layer started over while its transport was down: see
    /// [`MergeClient::supersede_sync`](super::MergeClient::supersede_sync).
    pub fn supersede_sync(&mut self, id: SessionId) {
        if let Some(s) = self.endpoint.get_mut(id) {
            s.core.supersede_sync();
        }
    }

    /// When bytes last arrived on a session's transport while it is connected (messages,
    /// acknowledgements, heartbeats); `None` for an unknown session or one without a
    /// transport.
    pub fn last_received(&self, id: SessionId) -> Option<Instant> {
        self.endpoint.get(id).and_then(|s| s.core.last_received())
    }

    /// Closes a session's transport as if the network had dropped it: the session goes
    /// RECONNECTING and waits `resume_grace` for its client to resume, as after any lost
    /// transport (the layer above asks this when the client went silent, e.g. after
    /// journal sync's 408). Nothing is sent first (the layer above said why already).
    pub fn drop_transport(&mut self, now: Instant, id: SessionId) {
        self.now = self.now.max(now);
        let connected = self
            .endpoint
            .get(id)
            .is_some_and(|s| s.link.is_some() && s.state.status == Status::Connected);
        if !connected {
            return;
        }
        if let Some(link) = self.endpoint.get(id).and_then(|s| s.link) {
            self.outbox.close(link);
        }
        self.lose(id);
    }

    /// The encoding in use.
    pub fn encoding(&self) -> super::Encoding {
        self.cfg.encoding
    }

    /// Transports replaced by a valid resumption while the server still held them open
    /// (half-open links taken over).
    pub fn takeovers(&self) -> u64 {
        self.endpoint.takeovers()
    }

    /// Transports in handshake.
    pub fn pending_count(&self) -> usize {
        self.endpoint.pending_count()
    }

    /// Formally ended sessions still remembered (their tombstones): at most `max_sessions`
    /// that the application ended and as many that their clients ended.
    pub fn ended_count(&self) -> usize {
        self.ended.len()
    }

    /// Inputs dropped because they named no open transport (an old, adopted or closed one).
    pub fn stale_inputs(&self) -> u64 {
        self.endpoint.stale()
    }

    fn deadline(&self) -> Option<Instant> {
        earliest([self.endpoint.next_deadline(), self.ended.next_deadline()])
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

    /// The sessions filed under `value` as `role`.
    fn candidates(&self, value: u64, role: Role) -> impl Iterator<Item = SessionId> + '_ {
        self.by_token[role as usize]
            .range((value, SessionId(0))..=(value, SessionId(u64::MAX)))
            .map(|e| e.1)
    }

    /// The session whose merged token is `m`: every session sharing its fingerprint is
    /// compared in constant time (all of them, no early exit).
    fn find(&self, m: &Token) -> Option<SessionId> {
        let mut found = None;
        for id in self.candidates(self.key.fingerprint(m), Role::Merged) {
            let merged = self.endpoint.get(id).and_then(|s| s.state.merged());
            if merged.is_some_and(|t| t == *m) {
                found = Some(id);
            }
        }
        found
    }

    /// What a RESUME presenting `x` names: a secret whose tag checks under its session's
    /// key (the locator finds the session), or a merged token.
    fn presented(&self, x: &Token) -> Presented {
        if let Some((loc, _)) = index::parse(x) {
            for id in self.candidates(loc, Role::Locator) {
                let secrets = self.endpoint.get(id).and_then(|s| s.state.secrets);
                let Some(k) = secrets else { continue };
                match k.key.open(x) {
                    Some(g) if g >= k.oldest => return Presented::Resumes(id, Some(g)),
                    Some(_) => return Presented::Retired,
                    // A forged tag: as any unknown token.
                    None => {}
                }
            }
        }
        match self.find(x) {
            Some(id) => match self.endpoint.get(id).and_then(|s| s.state.secrets) {
                Some(k) if !k.merged_resumes => Presented::Retired,
                _ => Presented::Resumes(id, None),
            },
            None => Presented::Unknown,
        }
    }

    fn is_ended(&self, m: &Token) -> bool {
        self.ended.contains(&self.key, m)
    }

    /// Whether a RESUME presenting `x` names an ended session: its merged token, or a
    /// secret of its (the locator's tombstone).
    fn is_ended_secret(&self, x: &Token) -> bool {
        let by_locator = index::parse(x)
            .is_some_and(|(loc, _)| self.ended.contains(&self.key, &index::locator_token(loc)));
        self.is_ended(x) | by_locator
    }

    /// Files a session in the index (once made; its entries never change).
    fn index(&mut self, id: SessionId) {
        if let Some(s) = self.endpoint.get(id) {
            for (value, role) in s.state.entries(&self.key) {
                self.by_token[role as usize].insert((value, id));
            }
        }
    }

    /// Takes a session out of the index (before it goes).
    fn unindex(&mut self, id: SessionId) {
        if let Some(s) = self.endpoint.get(id) {
            for (value, role) in s.state.entries(&self.key) {
                self.by_token[role as usize].remove(&(value, id));
            }
        }
    }

    /// A new session's secrets, keyed from the master key and its merged token: tether's
    /// encoding only (`None` in dop's, which has no message to carry a secret). Derived, not
    /// drawn: the caller's source gives one token per transport, as it always did.
    fn fresh_secrets(&self, merged: &Token) -> Option<Token> {
        (self.cfg.encoding == Encoding::Tether).then(|| self.master.derive(merged))
    }

    fn on_opened(&mut self, link: Link) -> Result<(), MergeError> {
        if self.endpoint.peek(link.id).is_some() {
            return Err(MergeError::DuplicateLink(link.id));
        }
        let refusal = if link.channel != Channel::Main {
            Some(FailReason::Refused)
        } else if self.endpoint.pending_count() >= self.cfg.max_pending {
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
        let state = LinkState {
            // Until the link is admitted it carries handshake messages only: a length
            // prefix announcing more is refused at once, and nothing of it is kept.
            reader: LinkReader::new(
                self.cfg.encoding,
                self.cfg.max_message.min(crate::wire::HANDSHAKE_MAX_FRAME),
            ),
        };
        let deadline = self.now + self.cfg.handshake_timeout;
        // Cannot fail: the id is new and the bound was checked above.
        if self.endpoint.open(link, state, Some(deadline)).is_ok() {
            self.handshakes.insert(link.id, Node::new(local));
        }
        Ok(())
    }

    fn on_received(&mut self, link: Link, bytes: bytes::Bytes) {
        // An old transport (adopted, closed, refused) is never mixed into a session.
        let Some(r) = self.endpoint.route(link) else {
            return;
        };
        let pushed = r.state.reader.push(bytes);
        let session = r.session;
        if let Err(reason) = pushed {
            return self.fail_link(link, reason);
        }
        if let Some(s) = session.and_then(|id| self.endpoint.get_mut(id)) {
            s.core.on_bytes(self.now);
        }
        self.pump(link);
    }

    /// Handles every complete item buffered for `link`, wherever the link now lives (a
    /// pending node that is adopted mid-chunk hands its buffer to the session).
    fn pump(&mut self, link: Link) {
        loop {
            let Some(r) = self.endpoint.peek_mut(link.id).filter(|r| r.link == link) else {
                return;
            };
            let session = r.session;
            match (r.state.reader.next(), session) {
                (Ok(None), _) => return,
                (Ok(Some((item, _))), None) => self.on_pending_item(link, item),
                (Ok(Some((item, len))), Some(id)) => self.on_session_item(id, item, len),
                (Err(reason), None) => return self.refuse(link, reason),
                (Err(reason), Some(id)) => return self.session_fault(id, reason),
            }
        }
    }

    fn fail_link(&mut self, link: Link, reason: FailReason) {
        match self.endpoint.peek(link.id).map(|r| r.session) {
            Some(None) => self.refuse(link, reason),
            Some(Some(id)) => self.session_fault(id, reason),
            None => {}
        }
    }

    /// Refuses a transport in handshake: tell the peer, close, drop the temporary node.
    fn refuse(&mut self, link: Link, reason: FailReason) {
        if self
            .endpoint
            .peek(link.id)
            .is_some_and(|r| r.session.is_none())
        {
            self.close_route(link.id);
        }
        codec::send_failed(&mut self.outbox, self.cfg.encoding, link, reason);
        self.outbox.close(link);
        self.outbox
            .event(Event::Notice(MergeServerNotice::Refused { link, reason }));
    }

    /// The temporary node of a pending transport.
    fn handshake_mut(&mut self, link: Link) -> Option<&mut Node> {
        self.handshakes.get_mut(&link.id)
    }

    /// Forgets a transport (and its temporary node, if it was in its handshake).
    fn close_route(&mut self, link_id: u64) {
        self.endpoint.close(link_id);
        self.handshakes.take(&link_id);
    }

    fn on_pending_item(&mut self, link: Link, item: Incoming) {
        let Some(node) = self.handshake_mut(link).map(|n| *n) else {
            return;
        };
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
                let fired = self.handshake_mut(link).map(|n| {
                    n.remote = Some(t);
                    n.apply(Step::RemoteToken)
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
                self.close_route(link.id);
                self.outbox.close(link);
                self.outbox
                    .event(Event::Notice(MergeServerNotice::Refused { link, reason }));
            }
            _ => self.refuse(link, FailReason::UnexpectedMessage),
        }
    }

    fn resume(&mut self, link: Link, m: Token) {
        match self.presented(&m) {
            // A secret this session's rotation left behind: a replay of a captured RESUME
            // (or a copy of the client older than the rotation). The session is untouched;
            // for the holder of this secret it is over.
            Presented::Retired => self.refuse(link, FailReason::SessionEnded),
            Presented::Resumes(id, generation) => {
                if let Some(old) = self.endpoint.take_over(id) {
                    // Takeover: the client proved the session on a new transport while the
                    // old one still looks open here (a half-open link after NAT rebinding
                    // or a network switch). The old transport is closed and counted; the
                    // session resumes on the new one.
                    self.outbox.close(old);
                    self.lose(id);
                }
                self.adopt(id, link, m, generation);
            }
            Presented::Unknown if self.is_ended_secret(&m) => {
                self.refuse(link, FailReason::SessionEnded)
            }
            Presented::Unknown => {
                // Forgotten (expired, or never known): dop makes a new session from the old
                // merged token, taken as the client's local token. The result says Fresh.
                let Some(n) = self.handshake_mut(link) else {
                    return;
                };
                n.remote = Some(m);
                if n.apply(Step::RemoteToken).is_err() {
                    return self.refuse(link, FailReason::UnexpectedMessage);
                }
                let local = n.local;
                codec::send_token(&mut self.outbox, self.cfg.encoding, link, &local);
            }
        }
    }

    /// SERVER1 takes the transport of SERVER2, which is dropped; CONNECTED; echo the secret
    /// the client presented (dop: the merged token), offer the next one (tether's
    /// encoding); replay what the client missed.
    fn adopt(&mut self, id: SessionId, link: Link, presented: Token, generation: Option<u32>) {
        if self.handshake_mut(link).is_none() {
            return;
        }
        let Some(s) = self.endpoint.get_mut(id) else {
            return;
        };
        if s.state.apply(Step::Resumed).is_err() {
            return self.refuse(link, FailReason::NotResumable);
        }
        let offer = s.state.secrets.as_mut().map(|k| {
            if let Some(g) = generation {
                // Presenting a secret proves the client holds it: older ones are replays.
                k.proven(g);
            }
            k.offer()
        });
        self.endpoint.attach(id, link);
        self.handshakes.take(&link.id);
        if let Some(r) = self.endpoint.peek_mut(link.id) {
            // Admitted: the link may now carry messages of any size the configuration
            // allows (before, handshake-sized ones only).
            r.state.reader.set_max(self.cfg.max_message);
        }
        codec::send_resume(&mut self.outbox, self.cfg.encoding, link, &presented);
        if let Some(offer) = offer {
            codec::send_secret(&mut self.outbox, self.cfg.encoding, link, &offer);
        }
        self.outbox.event(Event::Up {
            session: id,
            outcome: Outcome::Resumed,
        });
        // Our ACK goes first; what the client missed is replayed on its ACK.
        if let Some(s) = self.endpoint.get_mut(id) {
            let _ = s
                .core
                .link_up(&mut self.outbox, link, true, false, self.now);
        }
        self.endpoint.schedule_live(id);
    }

    /// The handshake is confirmed: a new session holds the merged token.
    fn establish(&mut self, link: Link) {
        let Some(mut node) = self.handshake_mut(link).map(|n| *n) else {
            return;
        };
        let Some(remote) = node.remote else {
            return self.refuse(link, FailReason::UnexpectedMessage);
        };
        if self.endpoint.session_count() >= self.cfg.max_sessions {
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
        node.merged = Some(merged);
        if node.apply(Step::Confirmed).is_err() {
            return self.refuse(link, FailReason::UnexpectedMessage);
        }
        let root = self.fresh_secrets(&merged);
        let mut session = Session::new(&node, root.as_ref());
        let id = SessionId(self.next_id);
        self.next_id = self.next_id.saturating_add(1);
        if let Some(offer) = session.secrets.as_mut().map(Secrets::offer) {
            // The first secret: until the client confirms it, the merged token still
            // resumes (a cut may come before the offer arrives).
            codec::send_secret(&mut self.outbox, self.cfg.encoding, link, &offer);
        }
        let mut core = self.new_core();
        let _ = core.link_up(&mut self.outbox, link, false, true, self.now);
        self.endpoint.insert(id, core, session);
        self.index(id);
        self.endpoint.attach(id, link);
        self.handshakes.take(&link.id);
        if let Some(r) = self.endpoint.peek_mut(link.id) {
            // Admitted: the link may now carry messages of any size the configuration
            // allows (before, handshake-sized ones only).
            r.state.reader.set_max(self.cfg.max_message);
        }
        self.outbox.event(Event::Up {
            session: id,
            outcome: Outcome::Fresh,
        });
        self.endpoint.schedule_live(id);
    }

    fn on_session_item(&mut self, id: SessionId, item: Incoming, len: usize) {
        let Some(merged) = self.endpoint.get(id).and_then(|s| s.state.merged()) else {
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
                if let Some(s) = self.endpoint.get_mut(id) {
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
                let Some(s) = self.endpoint.get_mut(id) else {
                    return;
                };
                let acked = match s.link {
                    Some(link) if s.core.is_reliable() => {
                        s.core.on_ack(&mut self.outbox, link, n, now).map_err(Some)
                    }
                    // No numbering in dop's encoding: an ACK makes no sense there.
                    _ => Err(None),
                };
                match acked {
                    Ok(()) => {}
                    Err(Some(AckFault::Diverged(_))) => self.diverged(id),
                    Err(_) => self.session_fault(id, FailReason::UnexpectedMessage),
                }
            }
            Incoming::Disconnect(_) => self.session_fault(id, FailReason::WrongToken),
            // The client confirms the secret offered with the last confirmation: from now
            // on only that one resumes, and the one it replaces is refused.
            Incoming::Secret(t) => {
                let confirmed = self
                    .endpoint
                    .get_mut(id)
                    .and_then(|s| s.state.secrets.as_mut())
                    .and_then(|k| {
                        // Only the last one offered is confirmed.
                        let g = k
                            .key
                            .open(&t)
                            .filter(|g| g.checked_add(1) == Some(k.next))?;
                        k.proven(g);
                        Some(())
                    });
                if confirmed.is_none() {
                    self.session_fault(id, FailReason::WrongToken);
                }
            }
            // The client found the session diverged on resuming it (our copy of it is
            // older, or its own is): it cannot continue here either.
            Incoming::Failed(FailReason::Diverged) => self.end(id, EndReason::Diverged),
            Incoming::Failed(_) => {
                // The client gave up on this transport and closes it: no answer needed.
                if let Some(link) = self.endpoint.get(id).and_then(|s| s.link) {
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
        if let Some(link) = self.endpoint.get(id).and_then(|s| s.link) {
            codec::send_failed(&mut self.outbox, self.cfg.encoding, link, reason);
            self.outbox.close(link);
        }
        self.lose(id);
    }

    /// The first ACK on a resumed transport does not fit the session held here: one side
    /// resumed from an older copy of it (typically this server, restarted from an older
    /// copy of its database). Retrying cannot help, so the session ends (not remembered as
    /// formally ended): the client is told `CONN_FAILED` DIVERGED, and its next RESUME is
    /// answered as any forgotten session's, with a fresh session.
    fn diverged(&mut self, id: SessionId) {
        if let Some(link) = self.endpoint.get(id).and_then(|s| s.link) {
            codec::send_failed(
                &mut self.outbox,
                self.cfg.encoding,
                link,
                FailReason::Diverged,
            );
        }
        self.end(id, EndReason::Diverged);
    }

    /// CONNECTED -> RECONNECTING: the transport is forgotten and the grace period starts.
    fn lose(&mut self, id: SessionId) {
        if let Some(link) = self.endpoint.get(id).and_then(|s| s.link) {
            self.close_route(link.id);
        }
        let Some(s) = self.endpoint.get_mut(id) else {
            return;
        };
        if s.state.apply(Step::TransportLost).is_err() {
            // A session the table cannot move waits for nothing: it is forgotten.
            return self.end(id, EndReason::Expired);
        }
        let at = self.now + self.cfg.resume_grace;
        self.endpoint.set_timer(id, SessionTimer::Expire, Some(at));
        self.outbox.event(Event::Down { session: id });
    }

    /// Removes a session for good (leaving a tombstone of a formally disconnected one).
    fn end(&mut self, id: SessionId, reason: EndReason) {
        self.unindex(id);
        let Some(mut s) = self.endpoint.remove(id) else {
            return;
        };
        let undelivered = s.core.end();
        if let Some(link) = s.link {
            self.outbox.close(link);
        }
        // Only a formal disconnection is remembered: an expired session's client is
        // welcome back, as a fresh session (the result says so). The tombstone holds the
        // secrets that could still resume it.
        let by = match reason {
            EndReason::LocalDisconnect => Some(EndedBy::Application),
            EndReason::PeerDisconnect => Some(EndedBy::Peer),
            _ => None,
        };
        if let (Some(by), Some(merged)) = (by, s.state.merged()) {
            // The merged token, and the locator that every secret of the session carries.
            let locator = s
                .state
                .secrets
                .map(|k| index::locator_token(k.key.locator()));
            let tokens: Vec<Token> = [Some(merged), locator].into_iter().flatten().collect();
            let at = self.now + self.cfg.ended_memory;
            self.ended.insert(&self.key, tokens, at, by);
        }
        self.outbox.event(Event::Ended {
            session: id,
            reason,
            undelivered,
        });
    }

    fn on_timeout(&mut self) {
        let now = self.now;
        while let Some(timer) = self.endpoint.pop_expired(now) {
            match timer {
                Timer::Handshake(link_id) => {
                    if let Some(link) = self
                        .endpoint
                        .peek(link_id)
                        .filter(|r| r.session.is_none())
                        .map(|r| r.link)
                    {
                        self.refuse(link, FailReason::Timeout);
                    }
                }
                Timer::Session(id, SessionTimer::Expire) => self.end(id, EndReason::Expired),
                Timer::Session(id, SessionTimer::Live) => {
                    let Some(s) = self.endpoint.get_mut(id) else {
                        continue;
                    };
                    if s.core.on_timeout(&mut self.outbox, s.link, now) == Verdict::Dead {
                        // A frozen client or a half-open link: the session waits for its
                        // client to resume.
                        self.session_fault(id, FailReason::Timeout);
                    } else {
                        self.endpoint.schedule_live(id);
                    }
                }
                Timer::Session(_, SessionTimer::Profile) => {}
            }
        }
        self.ended.expire(&self.key, now);
    }

    /// `Send` without giving the message up: a [`Peer`](crate::peer::Peer) keeps a sync
    /// message the session's replay buffer had no room for, and offers it again later.
    pub(crate) fn send_ref(
        &mut self,
        now: Instant,
        session: SessionId,
        message: &Message,
    ) -> Result<(), MergeError> {
        self.now = self.now.max(now);
        self.send_app(session, message)
    }

    fn send_app(&mut self, session: SessionId, message: &Message) -> Result<(), MergeError> {
        let enc = self.cfg.encoding;
        let max = self.cfg.max_queue;
        let now = self.now;
        let s = self
            .endpoint
            .get_mut(session)
            .ok_or(MergeError::UnknownSession(session))?;
        codec::check_app(enc, message, s.state.merged().as_ref())?;
        let payload: Bytes = super::client::encode(&mut self.outbox, enc, message);
        let link = s.link.filter(|_| s.state.status == Status::Connected);
        s.core
            .send(&mut self.outbox, link, payload, now)
            .map_err(|_| MergeError::QueueFull { max })
    }

    fn on_command(&mut self, cmd: MergeServerCommand) -> Result<(), MergeError> {
        match cmd {
            MergeServerCommand::Send { session, message } => {
                self.send_app(session, &message)?;
            }
            MergeServerCommand::Disconnect { session } => {
                let s = self
                    .endpoint
                    .get(session)
                    .ok_or(MergeError::UnknownSession(session))?;
                if let (Status::Connected, Some(link), Some(m)) =
                    (s.state.status, s.link, s.state.merged())
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
            Input::Closed(link) => match self.endpoint.route(link).map(|r| r.session) {
                Some(None) => {
                    self.close_route(link.id);
                }
                Some(Some(id)) => self.lose(id),
                None => {} // counted stale by the endpoint
            },
            Input::Timeout => self.on_timeout(),
            Input::Command(cmd) => return self.on_command(cmd),
        }
        Ok(())
    }

    fn poll_output(&mut self) -> Output<MergeServerEvent> {
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

#[path = "server_handover.rs"]
mod handover;

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
