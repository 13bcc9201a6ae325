//! The server side of an anchored sync session: it authenticates (through the application),
//! chooses the sync type from the anchors, resolves conflicts, and commits the anchor.

use super::conflict::{ConflictPolicy, Winner};
use super::standalone::SessionCore;
use super::{AbortReason, AnchoredError, ServerStore, Step};
use crate::tables::{fire, fire_to};
use crate::time::{Duration, Instant};
use crate::wire::anchored::{status, MAX_ITEMS};
use crate::wire::{AnchoredMessage, Change, DecodeError, Message, SyncType};
use alloc::collections::{BTreeSet, VecDeque};
use alloc::vec::Vec;
use bytes::Bytes;

/// The server's configuration. `Default` gives the values documented on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// How conflicts are resolved. Default: [`ConflictPolicy::ServerWins`].
    pub policy: ConflictPolicy,
    /// The most changes per message, sent or accepted (1 to 1024). Default: 64.
    pub max_changes_per_message: usize,
    /// The most records one session may send. Default: 1 000 000.
    pub max_session_items: usize,
    /// A session in which the client (or the application, when asked) says nothing for this
    /// long is abandoned. Default: 60 s.
    pub session_timeout: Duration,
}

impl Default for ServerConfig {
    /// Server wins, 64 changes per message, 1 000 000 items per session, 60 s timeout.
    fn default() -> Self {
        ServerConfig {
            policy: ConflictPolicy::ServerWins,
            max_changes_per_message: 64,
            max_session_items: 1_000_000,
            session_timeout: Duration::from_secs(60),
        }
    }
}

/// The server's states, in the order of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerState {
    /// No session: waiting for `HELLO`.
    Idle,
    /// `AUTH_REQ` sent; waiting for `CREDENTIALS`.
    AwaitCredentials,
    /// [`ServerEvent::Credentials`] emitted; waiting for [`ServerCommand::Authenticate`].
    AwaitAuthDecision,
    /// `ANCHOR_REQ` sent to a known client; waiting for `ANCHORS`.
    AwaitAnchors,
    /// `ALERT` sent; receiving the client's map left over (if any) and its changes.
    ReceivingChanges,
    /// [`ServerEvent::Conflict`] emitted; waiting for [`ServerCommand::Resolve`].
    AwaitConflictDecision,
    /// Sending the server's changes, one chunk per `STATUSES`.
    SendingChanges,
    /// Waiting for the client's id map.
    AwaitMap,
}

/// What moves the server from one state to the next (the columns of
/// [`SERVER_TRANSITIONS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerTrigger {
    /// `HELLO` (in any state: a new session replaces the old one).
    Hello,
    /// `CREDENTIALS`.
    Credentials,
    /// [`AuthDecision::Accept`].
    Accept,
    /// [`AuthDecision::Invalid`] or [`AuthDecision::Missing`]: 401 / 407 sent.
    Reject,
    /// `ANCHORS`.
    Anchors,
    /// A `MAP` chunk that is not the closing map's last.
    Map,
    /// `CHANGES` that are not the client's last.
    Changes,
    /// The client's last `CHANGES`.
    FinalChanges,
    /// [`ServerCommand::Resolve`].
    Resolve,
    /// `STATUSES` for a chunk that was not the last.
    Statuses,
    /// `STATUSES` for the last chunk.
    FinalStatuses,
    /// The closing map's last `MAP` chunk: the anchor is stored, `MAP_ACK` final sent.
    FinalMap,
    /// A `STATUS` from the client.
    Status,
    /// The session timed out (408 sent).
    Timeout,
    /// The transport closed.
    Cut,
    /// Bad input: status 400 (or 508 for too many items) sent.
    BadInput,
}

// The table's rows, then for each state of a session the rows that end it from anywhere.
macro_rules! server_aborts {
    ([$($row:expr,)*] $($s:ident),*) => { &[
        $($row,)*
        $( (ServerState::$s, ServerTrigger::Hello, ServerState::AwaitCredentials),
        (ServerState::$s, ServerTrigger::Status, ServerState::Idle),
        (ServerState::$s, ServerTrigger::Timeout, ServerState::Idle),
        (ServerState::$s, ServerTrigger::Cut, ServerState::Idle),
        (ServerState::$s, ServerTrigger::BadInput, ServerState::Idle), )*
    ] };
}

/// Every transition of the server: (state, trigger, next state). Any message not listed
/// for a state is bad input (except a message of another session, which is ignored).
pub const SERVER_TRANSITIONS: &[(ServerState, ServerTrigger, ServerState)] = {
    use ServerState::*;
    use ServerTrigger as T;
    server_aborts!(
        [
            (Idle, T::Hello, AwaitCredentials),
            (AwaitCredentials, T::Credentials, AwaitAuthDecision),
            (AwaitAuthDecision, T::Reject, Idle),
            // A known client is asked for its anchor...
            (AwaitAuthDecision, T::Accept, AwaitAnchors),
            // ...an unknown one goes straight to a slow sync.
            (AwaitAuthDecision, T::Accept, ReceivingChanges),
            (AwaitAnchors, T::Anchors, ReceivingChanges),
            (ReceivingChanges, T::Map, ReceivingChanges),
            (ReceivingChanges, T::Changes, ReceivingChanges),
            (ReceivingChanges, T::Changes, AwaitConflictDecision),
            (ReceivingChanges, T::FinalChanges, SendingChanges),
            (ReceivingChanges, T::FinalChanges, AwaitConflictDecision),
            (AwaitConflictDecision, T::Resolve, AwaitConflictDecision),
            (AwaitConflictDecision, T::Resolve, ReceivingChanges),
            (AwaitConflictDecision, T::Resolve, SendingChanges),
            (SendingChanges, T::Statuses, SendingChanges),
            (SendingChanges, T::FinalStatuses, AwaitMap),
            (AwaitMap, T::Map, AwaitMap),
            (AwaitMap, T::FinalMap, Idle),
        ]
        AwaitCredentials,
        AwaitAuthDecision,
        AwaitAnchors,
        ReceivingChanges,
        AwaitConflictDecision,
        SendingChanges,
        AwaitMap
    )
};

/// The application's verdict on a client's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum AuthDecision {
    /// Accepted (212): the session goes on.
    Accept,
    /// Invalid credentials: 401.
    Invalid,
    /// Credentials missing: 407.
    Missing,
}

/// What the application can ask of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ServerCommand {
    /// The answer to [`ServerEvent::Credentials`].
    Authenticate(AuthDecision),
    /// The answer to [`ServerEvent::Conflict`].
    Resolve(Winner),
}

/// What the server tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// Check these credentials and answer with [`ServerCommand::Authenticate`].
    Credentials {
        /// The session id.
        session: u32,
        /// The client's id.
        client: Bytes,
        /// Its credentials.
        credentials: Bytes,
    },
    /// A conflict to decide ([`ConflictPolicy::Ask`]): answer with
    /// [`ServerCommand::Resolve`].
    Conflict {
        /// The session id.
        session: u32,
        /// The client's id.
        client: Bytes,
        /// The record's server id.
        guid: u64,
        /// The client's version (`None`: the client deleted it).
        client_data: Option<Bytes>,
        /// The server's version (`None`: the server deleted it).
        server_data: Option<Bytes>,
    },
    /// A conflict was resolved.
    ConflictResolved {
        /// The session id.
        session: u32,
        /// The client's id.
        client: Bytes,
        /// The record's server id.
        guid: u64,
        /// Who won.
        winner: Winner,
        /// The client's version (`None`: deleted).
        client_data: Option<Bytes>,
        /// The server's version before resolution (`None`: deleted).
        server_data: Option<Bytes>,
    },
    /// The session completed; the anchor is stored.
    Completed {
        /// The session id.
        session: u32,
        /// The client's id.
        client: Bytes,
        /// The sync type.
        sync: SyncType,
        /// Changes received.
        received: u32,
        /// Changes sent.
        sent: u32,
    },
    /// The credentials were refused (401 / 407 sent).
    AuthFailed {
        /// The session id.
        session: u32,
        /// The client's id.
        client: Bytes,
        /// 401 or 407.
        code: u16,
    },
    /// The session ended early; the anchor is untouched.
    Aborted {
        /// The session id.
        session: u32,
        /// The client's id.
        client: Bytes,
        /// Why.
        reason: AbortReason,
    },
}

#[derive(Debug)]
struct Pending {
    change: Change,
    guid: u64,
    server_data: Option<Bytes>,
}

#[derive(Debug)]
struct Active {
    id: u32,
    client: Bytes,
    state: ServerState,
    sync: SyncType,
    next: u64,
    deadline: Instant,
    recv_next: u32,
    items: VecDeque<Change>,
    in_first: u32,
    in_last: bool,
    codes: Vec<u16>,
    seen: BTreeSet<u64>,
    force: BTreeSet<u64>,
    conflict: Option<Pending>,
    outgoing: VecDeque<u64>,
    /// The chunk awaiting statuses: (guid, dirty version, is a delete).
    chunk: Vec<(u64, Option<u64>, bool)>,
    out_first: u32,
    out_last: bool,
    sent: u32,
}

enum Outcome {
    Status(u16),
    Conflict(Pending),
}

/// The server's message-level machine for one client connection: messages and `now` in,
/// [`Step`]s and a deadline out.
#[derive(Debug)]
pub struct ServerSession<S> {
    config: ServerConfig,
    store: S,
    session: Option<Active>,
    out: VecDeque<Step<ServerEvent>>,
    last_transition: Option<(ServerState, ServerTrigger, ServerState)>,
    ignored: u64,
}

impl<S: ServerStore> ServerSession<S> {
    /// A server over `store`.
    pub fn new(config: ServerConfig, store: S) -> Self {
        ServerSession {
            config,
            store,
            session: None,
            out: VecDeque::new(),
            last_transition: None,
            ignored: 0,
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably: the application edits records through it.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The configuration (the policy may be changed between sessions).
    pub fn config_mut(&mut self) -> &mut ServerConfig {
        &mut self.config
    }

    /// The current state.
    pub fn state(&self) -> ServerState {
        self.session.as_ref().map_or(ServerState::Idle, |s| s.state)
    }

    /// The last transition taken, a row of [`SERVER_TRANSITIONS`].
    pub fn last_transition(&self) -> Option<(ServerState, ServerTrigger, ServerState)> {
        self.last_transition
    }

    /// Messages ignored because they belong to no current session (stale or stray).
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// One message from the client.
    pub fn handle_message(&mut self, now: Instant, msg: Message) -> Result<(), AnchoredError> {
        let Message::Anchored(m) = msg else {
            return Err(AnchoredError::NotAnchored(msg.code()));
        };
        if let AnchoredMessage::Hello { session, client } = m {
            // HELLO is a row from every state (a new session replaces the old one).
            let from = self.state();
            let next = fire(SERVER_TRANSITIONS, from, ServerTrigger::Hello)
                .map_err(AnchoredError::ServerTransition)?;
            if self.session.is_some() {
                // A new session replaces one the client abandoned (its transport was cut).
                self.abort(AbortReason::Cut, None)?;
            }
            self.session = Some(Active {
                id: session,
                client,
                state: next,
                sync: SyncType::Slow,
                next: 0,
                deadline: now + self.config.session_timeout,
                recv_next: 0,
                items: VecDeque::new(),
                in_first: 0,
                in_last: false,
                codes: Vec::new(),
                seen: BTreeSet::new(),
                force: BTreeSet::new(),
                conflict: None,
                outgoing: VecDeque::new(),
                chunk: Vec::new(),
                out_first: 0,
                out_last: false,
                sent: 0,
            });
            self.last_transition = Some((from, ServerTrigger::Hello, next));
            self.send(AnchoredMessage::AuthRequest { session });
            return Ok(());
        }
        let Some(active) = self.session.as_mut() else {
            self.ignored += 1;
            return Ok(());
        };
        if m.session() != active.id {
            self.ignored += 1;
            return Ok(());
        }
        active.deadline = now + self.config.session_timeout;
        let state = active.state;
        let code = m.code();
        use AnchoredMessage as M;
        use ServerState as S;
        match (state, m) {
            (_, M::Status { code, .. }) => {
                self.abort(AbortReason::PeerStatus(code), Some(ServerTrigger::Status))
            }
            (
                S::AwaitCredentials,
                M::Credentials {
                    session,
                    credentials,
                },
            ) => {
                let client = active.client.clone();
                self.out.push_back(Step::Event(ServerEvent::Credentials {
                    session,
                    client,
                    credentials,
                }));
                self.step(ServerTrigger::Credentials, S::AwaitAuthDecision)
            }
            (S::AwaitAnchors, M::Anchors { session, last }) => {
                let stored = self.store.anchor(&active.client);
                let sync = if last != 0 && stored == Some(last) {
                    SyncType::TwoWay
                } else {
                    SyncType::Slow
                };
                self.alert(session, sync);
                self.step(ServerTrigger::Anchors, S::ReceivingChanges)
            }
            (
                S::ReceivingChanges,
                M::Map {
                    session,
                    last_chunk: false,
                    entries,
                },
            )
            | (
                S::AwaitMap,
                M::Map {
                    session,
                    last_chunk: false,
                    entries,
                },
            ) => {
                for e in entries {
                    self.store.map(&active.client, e.luid, e.guid);
                }
                self.send(AnchoredMessage::MapAck {
                    session,
                    last_chunk: false,
                });
                self.step(ServerTrigger::Map, state)
            }
            (
                S::AwaitMap,
                M::Map {
                    session,
                    last_chunk: true,
                    entries,
                },
            ) => {
                let client = active.client.clone();
                for e in entries {
                    self.store.map(&client, e.luid, e.guid);
                }
                let (sync, next, received, sent) =
                    (active.sync, active.next, active.recv_next, active.sent);
                // Store the anchor before acknowledging: if the acknowledgement is lost, the
                // anchors differ and the next session is slow, never silently wrong.
                self.store.set_anchor(&client, next);
                self.send(AnchoredMessage::MapAck {
                    session,
                    last_chunk: true,
                });
                self.out.push_back(Step::Event(ServerEvent::Completed {
                    session,
                    client,
                    sync,
                    received,
                    sent,
                }));
                self.step(ServerTrigger::FinalMap, S::Idle)
            }
            (
                S::ReceivingChanges,
                M::Changes {
                    first,
                    last_chunk,
                    changes,
                    ..
                },
            ) => {
                let max = self.config.max_changes_per_message.clamp(1, MAX_ITEMS);
                if changes.len() > max {
                    return Err(self.bad_input(AnchoredError::ChunkTooLarge {
                        count: changes.len(),
                        max,
                    }));
                }
                if first != active.recv_next {
                    let expected = active.recv_next;
                    return Err(self.bad_input(AnchoredError::OutOfSequence {
                        expected,
                        got: first,
                    }));
                }
                active.recv_next = active.recv_next.saturating_add(changes.len() as u32);
                active.in_first = first;
                active.in_last = last_chunk;
                active.items = changes.into();
                active.codes.clear();
                let trigger = if last_chunk {
                    ServerTrigger::FinalChanges
                } else {
                    ServerTrigger::Changes
                };
                self.process(trigger)
            }
            (S::SendingChanges, M::Statuses { first, codes, .. }) => {
                if first != active.out_first || codes.len() != active.chunk.len() {
                    return Err(self.bad_input(AnchoredError::UnknownStatus {
                        first,
                        count: codes.len(),
                    }));
                }
                let client = active.client.clone();
                let last = active.out_last;
                let chunk: Vec<_> = active.chunk.drain(..).collect();
                for ((guid, v, is_delete), code) in chunk.into_iter().zip(codes) {
                    if matches!(code, status::OK | status::ITEM_ADDED | status::NOT_DELETED) {
                        if let Some(v) = v {
                            self.store.clean(&client, guid, v);
                        }
                        if is_delete {
                            self.store.unmap(&client, guid);
                        }
                    }
                }
                if last {
                    self.step(ServerTrigger::FinalStatuses, S::AwaitMap)?;
                } else {
                    self.send_chunk();
                    self.step(ServerTrigger::Statuses, S::SendingChanges)?;
                }
                Ok(())
            }
            (state, _) => Err(self.bad_input(AnchoredError::Unexpected {
                code,
                state: state_name(state),
            })),
        }
    }

    /// An application command.
    pub fn command(&mut self, now: Instant, cmd: ServerCommand) -> Result<(), AnchoredError> {
        let state = self.state();
        match (state, cmd) {
            (ServerState::AwaitAuthDecision, ServerCommand::Authenticate(d)) => {
                let Some(a) = self.session.as_mut() else {
                    return Ok(());
                };
                a.deadline = now + self.config.session_timeout;
                let (session, client) = (a.id, a.client.clone());
                match d {
                    AuthDecision::Accept => {
                        self.store.register(&client);
                        if self.store.anchor(&client).is_some() {
                            self.send(AnchoredMessage::AnchorRequest { session });
                            self.go(ServerTrigger::Accept, ServerState::AwaitAnchors)?;
                        } else {
                            self.alert(session, SyncType::Slow);
                            self.go(ServerTrigger::Accept, ServerState::ReceivingChanges)?;
                        }
                    }
                    AuthDecision::Invalid | AuthDecision::Missing => {
                        let code = if d == AuthDecision::Invalid {
                            status::INVALID_CREDENTIALS
                        } else {
                            status::AUTH_REQUIRED
                        };
                        self.send(AnchoredMessage::Status { session, code });
                        self.out.push_back(Step::Event(ServerEvent::AuthFailed {
                            session,
                            client,
                            code,
                        }));
                        self.go(ServerTrigger::Reject, ServerState::Idle)?;
                    }
                }
                Ok(())
            }
            (ServerState::AwaitConflictDecision, ServerCommand::Resolve(winner)) => {
                let Some(a) = self.session.as_mut() else {
                    return Ok(());
                };
                a.deadline = now + self.config.session_timeout;
                let Some(p) = a.conflict.take() else {
                    return Ok(());
                };
                let code = self.resolve(p, winner);
                if let Some(a) = self.session.as_mut() {
                    a.codes.push(code);
                }
                self.process(ServerTrigger::Resolve)
            }
            (state, _) => Err(AnchoredError::BadCommand(state_name(state))),
        }
    }

    /// Bytes that did not decode: the session ends with status 400.
    pub fn malformed(&mut self, _now: Instant, err: DecodeError) -> AnchoredError {
        self.bad_input(AnchoredError::Malformed(err))
    }

    /// The deadline passed: a stalled session ends with status 408. (An error only if the
    /// table could not end the session, which it can from every state of a session.)
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), AnchoredError> {
        if let Some(a) = self.session.as_ref() {
            if now >= a.deadline {
                let session = a.id;
                self.send(AnchoredMessage::Status {
                    session,
                    code: status::TIMEOUT,
                });
                self.abort(AbortReason::Timeout, Some(ServerTrigger::Timeout))?;
            }
        }
        Ok(())
    }

    /// The transport is gone: the session is cut, the anchor untouched. (An error only if
    /// the table could not end the session, which it can from every state of a session.)
    pub fn cut(&mut self, _now: Instant) -> Result<(), AnchoredError> {
        self.abort(AbortReason::Cut, Some(ServerTrigger::Cut))
    }

    /// The next output.
    pub fn poll(&mut self) -> Option<Step<ServerEvent>> {
        self.out.pop_front()
    }

    /// When [`ServerSession::handle_timeout`] is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.session.as_ref().map(|s| s.deadline)
    }

    fn send(&mut self, m: AnchoredMessage) {
        self.out.push_back(Step::Send(m));
    }

    /// Moves the session to `next` if [`SERVER_TRANSITIONS`] has the row (the server picks
    /// `next` where the table allows several); else it stays and the missing row is the
    /// error.
    fn go(&mut self, trigger: ServerTrigger, next: ServerState) -> Result<(), AnchoredError> {
        let from = self.state();
        let next = fire_to(SERVER_TRANSITIONS, from, trigger, next)
            .map_err(AnchoredError::ServerTransition)?;
        self.last_transition = Some((from, trigger, next));
        if next == ServerState::Idle {
            self.session = None;
        } else if let Some(a) = self.session.as_mut() {
            a.state = next;
        }
        Ok(())
    }

    /// [`go`](Self::go) for a move the client's message asked for: a missing row is the
    /// client's bad input, told with status 400. (A move the application's command asked
    /// for is only refused: the session goes on.)
    fn step(&mut self, trigger: ServerTrigger, next: ServerState) -> Result<(), AnchoredError> {
        match self.go(trigger, next) {
            Err(e) if !is_command(trigger) => Err(self.bad_input(e)),
            r => r,
        }
    }

    /// Ends the session for `reason` by the `trigger` row, or, with `None`, because a HELLO
    /// replaces it (that HELLO is the row).
    fn abort(
        &mut self,
        reason: AbortReason,
        trigger: Option<ServerTrigger>,
    ) -> Result<(), AnchoredError> {
        if let Some(a) = self.session.as_ref() {
            let (session, client) = (a.id, a.client.clone());
            match trigger {
                Some(t) => self.go(t, ServerState::Idle)?,
                None => self.session = None,
            }
            self.out.push_back(Step::Event(ServerEvent::Aborted {
                session,
                client,
                reason,
            }));
        }
        Ok(())
    }

    fn bad_input(&mut self, err: AnchoredError) -> AnchoredError {
        if let Some(a) = self.session.as_ref() {
            let session = a.id;
            self.send(AnchoredMessage::Status {
                session,
                code: status::BAD_REQUEST,
            });
            if let Err(e) = self.abort(AbortReason::BadInput, Some(ServerTrigger::BadInput)) {
                return e;
            }
        }
        err
    }

    fn per_message(&self) -> usize {
        self.config.max_changes_per_message.clamp(1, MAX_ITEMS)
    }

    fn alert(&mut self, session: u32, sync: SyncType) {
        let next = self.store.fresh_anchor();
        if let Some(a) = self.session.as_mut() {
            a.sync = sync;
            a.next = next;
        }
        self.send(AnchoredMessage::Alert {
            session,
            sync,
            next,
        });
    }

    /// Works through the current chunk's changes until it is done or a conflict needs the
    /// application.
    fn process(&mut self, trigger: ServerTrigger) -> Result<(), AnchoredError> {
        loop {
            let Some(a) = self.session.as_mut() else {
                return Ok(());
            };
            let Some(change) = a.items.pop_front() else {
                break;
            };
            let code = match self.check(change) {
                Outcome::Status(code) => code,
                Outcome::Conflict(p) => match self.config.policy.winner() {
                    Some(w) => self.resolve(p, w),
                    None => {
                        let Some(a) = self.session.as_mut() else {
                            return Ok(());
                        };
                        let client_data = change_data(&p.change);
                        self.out.push_back(Step::Event(ServerEvent::Conflict {
                            session: a.id,
                            client: a.client.clone(),
                            guid: p.guid,
                            client_data,
                            server_data: p.server_data.clone(),
                        }));
                        a.conflict = Some(p);
                        return self.step(trigger, ServerState::AwaitConflictDecision);
                    }
                },
            };
            if let Some(a) = self.session.as_mut() {
                a.codes.push(code);
            }
        }
        let Some(a) = self.session.as_mut() else {
            return Ok(());
        };
        let codes = core::mem::take(&mut a.codes);
        let (session, first, last) = (a.id, a.in_first, a.in_last);
        self.send(AnchoredMessage::Statuses {
            session,
            first,
            codes,
        });
        if last {
            self.build_outgoing()?;
            self.send_chunk();
            self.step(trigger, ServerState::SendingChanges)
        } else {
            self.step(trigger, ServerState::ReceivingChanges)
        }
    }

    /// Checks one client change against the server's changes since the last sync.
    fn check(&mut self, change: Change) -> Outcome {
        let Some(a) = self.session.as_mut() else {
            return Outcome::Status(status::BAD_REQUEST);
        };
        let client = &a.client;
        let guid = self.store.guid_for(client, change.id());
        match (change, guid) {
            (Change::Add { id, data } | Change::Replace { id, data }, None) => {
                let g = self.store.fresh_guid();
                self.store.apply_from(client, g, Some(data));
                self.store.map(client, id, g);
                a.seen.insert(g);
                Outcome::Status(status::ITEM_ADDED)
            }
            (change @ (Change::Add { .. } | Change::Replace { .. }), Some(g)) => {
                a.seen.insert(g);
                let server = self.store.get(g);
                let dirty = self.store.dirty_version(client, g);
                let data = change_data(&change);
                if server.is_some() && server == data {
                    if let Some(v) = dirty {
                        self.store.clean(client, g, v);
                    }
                    Outcome::Status(status::OK)
                } else if server.is_none() || a.sync == SyncType::Slow || dirty.is_some() {
                    Outcome::Conflict(Pending {
                        change,
                        guid: g,
                        server_data: server,
                    })
                } else {
                    self.store.apply_from(client, g, data);
                    Outcome::Status(status::OK)
                }
            }
            (Change::Delete { .. }, None) => Outcome::Status(status::NOT_DELETED),
            (change @ Change::Delete { .. }, Some(g)) => {
                let server = self.store.get(g);
                let dirty = self.store.dirty_version(client, g);
                if server.is_none() {
                    self.store.unmap(client, g);
                    if let Some(v) = dirty {
                        self.store.clean(client, g, v);
                    }
                    Outcome::Status(status::OK)
                } else if dirty.is_some() {
                    Outcome::Conflict(Pending {
                        change,
                        guid: g,
                        server_data: server,
                    })
                } else {
                    self.store.apply_from(client, g, None);
                    self.store.unmap(client, g);
                    Outcome::Status(status::OK)
                }
            }
        }
    }

    /// Applies the winner's version of a conflicting record; returns the change's status.
    fn resolve(&mut self, p: Pending, winner: Winner) -> u16 {
        let Some(a) = self.session.as_mut() else {
            return status::BAD_REQUEST;
        };
        let client = a.client.clone();
        let g = p.guid;
        let client_data = change_data(&p.change);
        let code = match winner {
            Winner::Server => {
                if matches!(p.change, Change::Delete { .. }) {
                    // The client no longer has it: it goes back as an add.
                    self.store.unmap(&client, g);
                }
                a.force.insert(g);
                status::CONFLICT_SERVER_WON
            }
            Winner::Client => {
                self.store.apply_from(&client, g, client_data.clone());
                if client_data.is_none() {
                    self.store.unmap(&client, g);
                }
                if let Some(v) = self.store.dirty_version(&client, g) {
                    self.store.clean(&client, g, v);
                }
                a.force.remove(&g);
                status::CONFLICT_CLIENT_WON
            }
        };
        self.out
            .push_back(Step::Event(ServerEvent::ConflictResolved {
                session: a.id,
                client,
                guid: g,
                winner,
                client_data,
                server_data: p.server_data,
            }));
        code
    }

    fn build_outgoing(&mut self) -> Result<(), AnchoredError> {
        let Some(a) = self.session.as_mut() else {
            return Ok(());
        };
        let mut set: BTreeSet<u64> = self
            .store
            .dirty(&a.client)
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        set.extend(a.force.iter().copied());
        if a.sync == SyncType::Slow {
            // Whatever the client did not send, it does not have.
            for g in self.store.guids() {
                if !a.seen.contains(&g) {
                    self.store.unmap(&a.client, g);
                    set.insert(g);
                }
            }
        }
        if set.len() > self.config.max_session_items {
            let session = a.id;
            self.send(AnchoredMessage::Status {
                session,
                code: status::REFRESH_REQUIRED,
            });
            self.abort(AbortReason::TooManyItems, Some(ServerTrigger::BadInput))?;
            return Err(AnchoredError::TooManyItems(self.config.max_session_items));
        }
        a.outgoing = set.into_iter().collect();
        Ok(())
    }

    fn send_chunk(&mut self) {
        let per = self.per_message();
        let Some(a) = self.session.as_mut() else {
            return;
        };
        let client = &a.client;
        a.chunk.clear();
        let mut changes = Vec::new();
        while changes.len() < per {
            let Some(g) = a.outgoing.pop_front() else {
                break;
            };
            let v = self.store.dirty_version(client, g);
            let change = match (self.store.get(g), self.store.luid_for(client, g)) {
                (Some(data), Some(luid)) => Change::Replace { id: luid, data },
                (Some(data), None) => Change::Add { id: g, data },
                (None, Some(luid)) => Change::Delete { id: luid },
                (None, None) => {
                    // Added and deleted since the client last synced: nothing to say.
                    if let Some(v) = v {
                        self.store.clean(client, g, v);
                    }
                    continue;
                }
            };
            a.chunk
                .push((g, v, matches!(change, Change::Delete { .. })));
            changes.push(change);
        }
        a.out_first = a.sent;
        a.sent = a.sent.saturating_add(changes.len() as u32);
        a.out_last = a.outgoing.is_empty();
        let m = AnchoredMessage::Changes {
            session: a.id,
            first: a.out_first,
            last_chunk: a.out_last,
            changes,
        };
        self.send(m);
    }
}

fn change_data(c: &Change) -> Option<Bytes> {
    match c {
        Change::Add { data, .. } | Change::Replace { data, .. } => Some(data.clone()),
        Change::Delete { .. } => None,
    }
}

/// Whether `trigger` is the application's command rather than the client's message.
fn is_command(trigger: ServerTrigger) -> bool {
    matches!(
        trigger,
        ServerTrigger::Accept | ServerTrigger::Reject | ServerTrigger::Resolve
    )
}

fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Idle => "Idle",
        ServerState::AwaitCredentials => "AwaitCredentials",
        ServerState::AwaitAuthDecision => "AwaitAuthDecision",
        ServerState::AwaitAnchors => "AwaitAnchors",
        ServerState::ReceivingChanges => "ReceivingChanges",
        ServerState::AwaitConflictDecision => "AwaitConflictDecision",
        ServerState::SendingChanges => "SendingChanges",
        ServerState::AwaitMap => "AwaitMap",
    }
}

impl<S: ServerStore> SessionCore for ServerSession<S> {
    type Command = ServerCommand;
    type Event = ServerEvent;

    fn handle_message(&mut self, now: Instant, msg: Message) -> Result<(), AnchoredError> {
        ServerSession::handle_message(self, now, msg)
    }
    fn malformed(&mut self, now: Instant, err: DecodeError) -> AnchoredError {
        ServerSession::malformed(self, now, err)
    }
    fn command(&mut self, now: Instant, cmd: ServerCommand) -> Result<(), AnchoredError> {
        ServerSession::command(self, now, cmd)
    }
    fn timeout(&mut self, now: Instant) -> Result<(), AnchoredError> {
        self.handle_timeout(now)
    }
    fn cut(&mut self, now: Instant) -> Result<(), AnchoredError> {
        ServerSession::cut(self, now)
    }
    fn poll(&mut self) -> Option<Step<ServerEvent>> {
        ServerSession::poll(self)
    }
    fn deadline(&self) -> Option<Instant> {
        ServerSession::deadline(self)
    }
}
