//! The client side of an anchored sync session.

use super::standalone::SessionCore;
use super::{AbortReason, AnchoredError, ClientStore, Step};
use crate::tables::fire_to;
use crate::time::{Duration, Instant};
use crate::wire::anchored::{status, MAX_ITEMS};
use crate::wire::{AnchoredMessage, Change, DecodeError, MapEntry, Message, SyncType};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use bytes::Bytes;

/// The client's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The client's id (its device id), at most 255 bytes: the server keeps its anchor and
    /// id map under it.
    pub client_id: Bytes,
    /// The credentials sent when the server asks (opaque to tether; no default: the
    /// caller gives them to [`ClientConfig::new`]).
    pub credentials: Bytes,
    /// The id of the first session; each new session takes the next (the caller can seed it
    /// so that sessions of a restarted client do not reuse recent ids).
    /// [`ClientConfig::new`]: 1.
    pub first_session: u32,
    /// The most changes or map entries per message (1 to 1024). [`ClientConfig::new`]: 64.
    pub max_changes_per_message: usize,
    /// The most records one session may send (a slow sync sends them all).
    /// [`ClientConfig::new`]: 1,000,000.
    pub max_session_items: usize,
    /// A session in which the server says nothing for this long is abandoned.
    /// [`ClientConfig::new`]: 60 s.
    pub session_timeout: Duration,
}

impl ClientConfig {
    /// A configuration with defaults: 64 changes per message, 1 000 000 items per session,
    /// a 60 s session timeout, sessions numbered from 1.
    pub fn new(client_id: Bytes, credentials: Bytes) -> Self {
        ClientConfig {
            client_id,
            credentials,
            first_session: 1,
            max_changes_per_message: 64,
            max_session_items: 1_000_000,
            session_timeout: Duration::from_secs(60),
        }
    }
}

/// The client's states, in the order of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientState {
    /// No session.
    Idle,
    /// `HELLO` sent; waiting for `AUTH_REQ`.
    AwaitAuthRequest,
    /// Credentials sent; waiting for `ANCHOR_REQ`, `ALERT` or a 401 / 407 `STATUS`.
    AwaitAuthResult,
    /// Anchor sent; waiting for `ALERT`.
    AwaitAlert,
    /// Sending the id map left over from an interrupted session, one chunk per `MAP_ACK`.
    SendingEarlyMap,
    /// Sending changes, one chunk per `STATUSES`.
    SendingChanges,
    /// Receiving the server's changes, answering each chunk with `STATUSES`.
    ReceivingChanges,
    /// Sending the closing id map, one chunk per `MAP_ACK`, until the final `MAP_ACK`.
    SendingMap,
}

/// What moves the client from one state to the next (the columns of
/// [`CLIENT_TRANSITIONS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientTrigger {
    /// [`ClientCommand::Start`].
    Start,
    /// `AUTH_REQ`.
    AuthRequest,
    /// `ANCHOR_REQ`.
    AnchorRequest,
    /// `ALERT`.
    Alert,
    /// `MAP_ACK` of a chunk that is not the last.
    MapAck,
    /// `MAP_ACK` of the closing map's last chunk.
    FinalMapAck,
    /// `STATUSES` for a chunk that was not the last.
    Statuses,
    /// `STATUSES` for the last chunk.
    FinalStatuses,
    /// `CHANGES` that are not the server's last.
    Changes,
    /// The server's last `CHANGES`.
    FinalChanges,
    /// A `STATUS` from the server (401 / 407, or an error).
    Status,
    /// The session timed out.
    Timeout,
    /// The transport closed.
    Cut,
    /// Bad input (malformed, out of order): status 400 sent.
    BadInput,
}

// The table's rows, then for each state of a session the rows that end it from anywhere.
macro_rules! client_aborts {
    ([$($row:expr,)*] $($s:ident),*) => { &[
        $($row,)*
        $( (ClientState::$s, ClientTrigger::Status, ClientState::Idle),
        (ClientState::$s, ClientTrigger::Timeout, ClientState::Idle),
        (ClientState::$s, ClientTrigger::Cut, ClientState::Idle),
        (ClientState::$s, ClientTrigger::BadInput, ClientState::Idle), )*
    ] };
}

/// Every transition of the client: (state, trigger, next state). Any message not listed for
/// a state is bad input. The `match` in the client follows this table row by row.
pub const CLIENT_TRANSITIONS: &[(ClientState, ClientTrigger, ClientState)] = {
    use ClientState::*;
    use ClientTrigger as T;
    client_aborts!(
        [
            (Idle, T::Start, AwaitAuthRequest),
            (AwaitAuthRequest, T::AuthRequest, AwaitAuthResult),
            // Known client: asked for its anchor.
            (AwaitAuthResult, T::AnchorRequest, AwaitAlert),
            // Unknown client: straight to a slow sync.
            (AwaitAuthResult, T::Alert, SendingEarlyMap),
            (AwaitAuthResult, T::Alert, SendingChanges),
            (AwaitAlert, T::Alert, SendingEarlyMap),
            (AwaitAlert, T::Alert, SendingChanges),
            (SendingEarlyMap, T::MapAck, SendingEarlyMap),
            (SendingEarlyMap, T::MapAck, SendingChanges),
            (SendingChanges, T::Statuses, SendingChanges),
            (SendingChanges, T::FinalStatuses, ReceivingChanges),
            (ReceivingChanges, T::Changes, ReceivingChanges),
            (ReceivingChanges, T::FinalChanges, SendingMap),
            (SendingMap, T::MapAck, SendingMap),
            (SendingMap, T::FinalMapAck, Idle),
        ]
        AwaitAuthRequest,
        AwaitAuthResult,
        AwaitAlert,
        SendingEarlyMap,
        SendingChanges,
        ReceivingChanges,
        SendingMap
    )
};

/// What the application can ask of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ClientCommand {
    /// Start a session (say hello).
    Start,
}

/// What the client tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The session completed; both sides stored the Next anchor as Last.
    Completed {
        /// The session id.
        session: u32,
        /// The sync type the server chose.
        sync: SyncType,
        /// Changes sent.
        sent: u32,
        /// Changes received.
        received: u32,
    },
    /// The server refused the credentials: 401 (invalid) or 407 (missing).
    AuthFailed {
        /// The session id.
        session: u32,
        /// 401 or 407.
        code: u16,
    },
    /// The session ended early; anchors are untouched.
    Aborted {
        /// The session id.
        session: u32,
        /// Why.
        reason: AbortReason,
    },
}

#[derive(Debug)]
struct Active {
    id: u32,
    state: ClientState,
    sync: SyncType,
    next: u64,
    deadline: Instant,
    outgoing: VecDeque<(u64, Option<u64>)>,
    /// The chunk awaiting statuses: (luid, dirty version, is a delete).
    chunk: Vec<(u64, Option<u64>, bool)>,
    chunk_first: u32,
    chunk_last: bool,
    sent: u32,
    recv_next: u32,
    map: VecDeque<MapEntry>,
    map_last_sent: bool,
}

/// The client's message-level machine: messages and `now` in, [`Step`]s and a deadline out.
#[derive(Debug)]
pub struct ClientSession<S> {
    config: ClientConfig,
    store: S,
    next_session: u32,
    session: Option<Active>,
    out: VecDeque<Step<ClientEvent>>,
    last_transition: Option<(ClientState, ClientTrigger, ClientState)>,
    ignored: u64,
}

impl<S: ClientStore> ClientSession<S> {
    /// A client over `store`.
    pub fn new(config: ClientConfig, store: S) -> Self {
        ClientSession {
            next_session: config.first_session,
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

    /// The current state.
    pub fn state(&self) -> ClientState {
        self.session.as_ref().map_or(ClientState::Idle, |s| s.state)
    }

    /// The current session's id.
    pub fn session_id(&self) -> Option<u32> {
        self.session.as_ref().map(|s| s.id)
    }

    /// The last transition taken, a row of [`CLIENT_TRANSITIONS`].
    pub fn last_transition(&self) -> Option<(ClientState, ClientTrigger, ClientState)> {
        self.last_transition
    }

    /// Messages ignored because they belong to no current session (stale or stray).
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Starts a session: says hello.
    pub fn start(&mut self, now: Instant) -> Result<(), AnchoredError> {
        if self.session.is_some() {
            return Err(AnchoredError::BadCommand(state_name(self.state())));
        }
        let id = self.next_session;
        self.next_session = self.next_session.wrapping_add(1);
        self.session = Some(Active {
            id,
            state: ClientState::Idle,
            sync: SyncType::Slow,
            next: 0,
            deadline: now + self.config.session_timeout,
            outgoing: VecDeque::new(),
            chunk: Vec::new(),
            chunk_first: 0,
            chunk_last: false,
            sent: 0,
            recv_next: 0,
            map: VecDeque::new(),
            map_last_sent: false,
        });
        self.send(AnchoredMessage::Hello {
            session: id,
            client: self.config.client_id.clone(),
        });
        self.go(ClientTrigger::Start, ClientState::AwaitAuthRequest)
    }

    /// One message from the server.
    pub fn handle_message(&mut self, now: Instant, msg: Message) -> Result<(), AnchoredError> {
        let Message::Anchored(m) = msg else {
            return Err(AnchoredError::NotAnchored(msg.code()));
        };
        let Some(active) = self.session.as_mut() else {
            self.ignored += 1;
            return Ok(());
        };
        if m.session() != active.id {
            // A message of an abandoned session: never taken for the current one.
            self.ignored += 1;
            return Ok(());
        }
        active.deadline = now + self.config.session_timeout;
        let state = active.state;
        let code = m.code();
        use AnchoredMessage as M;
        use ClientState as S;
        match (state, m) {
            (_, M::Status { code, .. }) => {
                let session = active.id;
                let event = if state == S::AwaitAuthResult
                    && (code == status::INVALID_CREDENTIALS || code == status::AUTH_REQUIRED)
                {
                    ClientEvent::AuthFailed { session, code }
                } else {
                    ClientEvent::Aborted {
                        session,
                        reason: AbortReason::PeerStatus(code),
                    }
                };
                self.out.push_back(Step::Event(event));
                self.step(ClientTrigger::Status, S::Idle)?;
                Ok(())
            }
            (S::AwaitAuthRequest, M::AuthRequest { session }) => {
                self.send(AnchoredMessage::Credentials {
                    session,
                    credentials: self.config.credentials.clone(),
                });
                self.step(ClientTrigger::AuthRequest, S::AwaitAuthResult)?;
                Ok(())
            }
            (S::AwaitAuthResult, M::AnchorRequest { session }) => {
                self.send(AnchoredMessage::Anchors {
                    session,
                    last: self.store.last_anchor(),
                });
                self.step(ClientTrigger::AnchorRequest, S::AwaitAlert)?;
                Ok(())
            }
            (S::AwaitAuthResult | S::AwaitAlert, M::Alert { sync, next, .. }) => {
                self.begin_sync(now, sync, next)
            }
            (
                S::SendingEarlyMap,
                M::MapAck {
                    last_chunk: false, ..
                },
            ) => {
                if active.map.is_empty() {
                    self.send_changes_chunk();
                    self.step(ClientTrigger::MapAck, S::SendingChanges)?;
                } else {
                    self.send_map_chunk(false);
                    self.step(ClientTrigger::MapAck, S::SendingEarlyMap)?;
                }
                Ok(())
            }
            (S::SendingChanges, M::Statuses { first, codes, .. }) => {
                if first != active.chunk_first || codes.len() != active.chunk.len() {
                    return Err(self.bad_input(AnchoredError::UnknownStatus {
                        first,
                        count: codes.len(),
                    }));
                }
                self.ack_chunk(&codes);
                let Some(active) = self.session.as_ref() else {
                    return Ok(());
                };
                if active.chunk_last {
                    self.step(ClientTrigger::FinalStatuses, S::ReceivingChanges)?;
                } else {
                    self.send_changes_chunk();
                    self.step(ClientTrigger::Statuses, S::SendingChanges)?;
                }
                Ok(())
            }
            (
                S::ReceivingChanges,
                M::Changes {
                    session,
                    first,
                    last_chunk,
                    changes,
                },
            ) => {
                if first != active.recv_next {
                    let expected = active.recv_next;
                    return Err(self.bad_input(AnchoredError::OutOfSequence {
                        expected,
                        got: first,
                    }));
                }
                active.recv_next = active.recv_next.saturating_add(changes.len() as u32);
                let codes: Vec<u16> = changes.into_iter().map(|c| self.apply(c)).collect();
                self.send(AnchoredMessage::Statuses {
                    session,
                    first,
                    codes,
                });
                if last_chunk {
                    let map: VecDeque<MapEntry> = self.store.pending_map().into();
                    if let Some(a) = self.session.as_mut() {
                        a.map = map;
                    }
                    let last = self.map_chunk_is_last();
                    self.send_map_chunk(last);
                    self.step(ClientTrigger::FinalChanges, S::SendingMap)?;
                } else {
                    self.step(ClientTrigger::Changes, S::ReceivingChanges)?;
                }
                Ok(())
            }
            (S::SendingMap, M::MapAck { last_chunk, .. }) if last_chunk == active.map_last_sent => {
                if last_chunk {
                    let (session, sync, next, sent, received) = (
                        active.id,
                        active.sync,
                        active.next,
                        active.sent,
                        active.recv_next,
                    );
                    // The server stored the anchor before acknowledging: store ours.
                    self.store.set_last_anchor(next);
                    self.store.clear_pending();
                    self.out.push_back(Step::Event(ClientEvent::Completed {
                        session,
                        sync,
                        sent,
                        received,
                    }));
                    self.step(ClientTrigger::FinalMapAck, S::Idle)?;
                } else {
                    let last = self.map_chunk_is_last();
                    self.send_map_chunk(last);
                    self.step(ClientTrigger::MapAck, S::SendingMap)?;
                }
                Ok(())
            }
            (state, _) => Err(self.bad_input(AnchoredError::Unexpected {
                code,
                state: state_name(state),
            })),
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
                self.abort(AbortReason::Timeout, ClientTrigger::Timeout)?;
            }
        }
        Ok(())
    }

    /// The transport is gone: the session is cut, anchors untouched. (An error only if the
    /// table could not end the session, which it can from every state of a session.)
    pub fn cut(&mut self, _now: Instant) -> Result<(), AnchoredError> {
        if self.session.is_some() {
            self.abort(AbortReason::Cut, ClientTrigger::Cut)?;
        }
        Ok(())
    }

    /// The next output.
    pub fn poll(&mut self) -> Option<Step<ClientEvent>> {
        self.out.pop_front()
    }

    /// When [`ClientSession::handle_timeout`] is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.session.as_ref().map(|s| s.deadline)
    }

    fn send(&mut self, m: AnchoredMessage) {
        self.out.push_back(Step::Send(m));
    }

    /// Moves the session to `next` if [`CLIENT_TRANSITIONS`] has the row (the client picks
    /// `next` where the table allows two); else it stays and the missing row is the error.
    fn go(&mut self, trigger: ClientTrigger, next: ClientState) -> Result<(), AnchoredError> {
        let from = self.state();
        let next = fire_to(CLIENT_TRANSITIONS, from, trigger, next)
            .map_err(AnchoredError::ClientTransition)?;
        self.last_transition = Some((from, trigger, next));
        if next == ClientState::Idle {
            self.session = None;
        } else if let Some(a) = self.session.as_mut() {
            a.state = next;
        }
        Ok(())
    }

    /// [`go`](Self::go) for a move the server's message asked for: a missing row is the
    /// server's bad input, told with status 400.
    fn step(&mut self, trigger: ClientTrigger, next: ClientState) -> Result<(), AnchoredError> {
        self.go(trigger, next).map_err(|e| self.bad_input(e))
    }

    fn abort(&mut self, reason: AbortReason, trigger: ClientTrigger) -> Result<(), AnchoredError> {
        if let Some(a) = self.session.as_ref() {
            let session = a.id;
            self.go(trigger, ClientState::Idle)?;
            self.out
                .push_back(Step::Event(ClientEvent::Aborted { session, reason }));
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
            if let Err(e) = self.abort(AbortReason::BadInput, ClientTrigger::BadInput) {
                return e;
            }
        }
        err
    }

    fn per_message(&self) -> usize {
        self.config.max_changes_per_message.clamp(1, MAX_ITEMS)
    }

    fn begin_sync(
        &mut self,
        _now: Instant,
        sync: SyncType,
        next: u64,
    ) -> Result<(), AnchoredError> {
        let dirty: BTreeMap<u64, u64> = self.store.dirty().into_iter().collect();
        let mut outgoing = VecDeque::new();
        match sync {
            SyncType::TwoWay => outgoing.extend(dirty.iter().map(|(l, v)| (*l, Some(*v)))),
            SyncType::Slow => {
                // A slow sync cannot say "deleted": a deleted record the server has comes
                // back (SyncML's slow sync is a union). Forget those deletions.
                for (luid, v) in &dirty {
                    if self.store.get(*luid).is_none() {
                        self.store.clean(*luid, *v);
                        self.store.set_known(*luid, false);
                    }
                }
                outgoing.extend(
                    self.store
                        .ids()
                        .into_iter()
                        .map(|l| (l, dirty.get(&l).copied())),
                );
            }
        }
        let map: VecDeque<MapEntry> = self.store.pending_map().into();
        if outgoing.len().saturating_add(map.len()) > self.config.max_session_items {
            if let Some(a) = self.session.as_ref() {
                let session = a.id;
                self.send(AnchoredMessage::Status {
                    session,
                    code: status::REFRESH_REQUIRED,
                });
            }
            self.abort(AbortReason::TooManyItems, ClientTrigger::BadInput)?;
            return Err(AnchoredError::TooManyItems(self.config.max_session_items));
        }
        let early = !map.is_empty();
        if let Some(a) = self.session.as_mut() {
            a.sync = sync;
            a.next = next;
            a.outgoing = outgoing;
            a.map = map;
        }
        if early {
            // Map entries of an interrupted session go first, so the server knows every
            // record the client got from it before it reads the client's changes.
            self.send_map_chunk(false);
            self.step(ClientTrigger::Alert, ClientState::SendingEarlyMap)?;
        } else {
            self.send_changes_chunk();
            self.step(ClientTrigger::Alert, ClientState::SendingChanges)?;
        }
        Ok(())
    }

    fn send_changes_chunk(&mut self) {
        let per = self.per_message();
        let Some(a) = self.session.as_mut() else {
            return;
        };
        a.chunk.clear();
        let mut changes = Vec::new();
        while changes.len() < per {
            let Some((luid, v)) = a.outgoing.pop_front() else {
                break;
            };
            let data = self.store.get(luid);
            let known = self.store.is_known(luid);
            let change = match (a.sync, data, known) {
                (SyncType::Slow, Some(data), _) => Change::Add { id: luid, data },
                (SyncType::TwoWay, Some(data), false) => Change::Add { id: luid, data },
                (SyncType::TwoWay, Some(data), true) => Change::Replace { id: luid, data },
                (SyncType::TwoWay, None, true) => Change::Delete { id: luid },
                (_, None, _) => {
                    // Added and deleted since the last sync: the server never knew it.
                    if let Some(v) = v {
                        self.store.clean(luid, v);
                    }
                    continue;
                }
            };
            let is_delete = matches!(change, Change::Delete { .. });
            if !is_delete {
                // The server may have the record from now on, even if its status is lost:
                // a later local delete must go out as a delete (answered 211 if it never
                // arrived), never be dropped as "added and deleted before any sync".
                self.store.set_known(luid, true);
            }
            a.chunk.push((luid, v, is_delete));
            changes.push(change);
        }
        a.chunk_first = a.sent;
        a.sent = a.sent.saturating_add(changes.len() as u32);
        a.chunk_last = a.outgoing.is_empty();
        let m = AnchoredMessage::Changes {
            session: a.id,
            first: a.chunk_first,
            last_chunk: a.chunk_last,
            changes,
        };
        self.send(m);
    }

    fn ack_chunk(&mut self, codes: &[u16]) {
        let Some(a) = self.session.as_mut() else {
            return;
        };
        for ((luid, v, is_delete), code) in a.chunk.drain(..).zip(codes) {
            match *code {
                status::OK
                | status::ITEM_ADDED
                | status::CONFLICT_CLIENT_WON
                | status::NOT_DELETED
                | status::CONFLICT_SERVER_WON => {
                    if let Some(v) = v {
                        self.store.clean(luid, v);
                    }
                    self.store
                        .set_known(luid, !is_delete && *code != status::NOT_DELETED);
                }
                // Any other status: the change stays dirty and goes again next session.
                _ => {}
            }
        }
    }

    fn apply(&mut self, change: Change) -> u16 {
        match change {
            Change::Add { id: guid, data } => {
                if let Some(luid) = self.store.pending_luid(guid) {
                    // Sent again after an interrupted session: the same record, not a copy.
                    self.store.apply_remote(luid, Some(data));
                    self.store.set_known(luid, true);
                    status::OK
                } else {
                    let luid = self.store.fresh_luid();
                    self.store.apply_remote(luid, Some(data));
                    self.store.set_known(luid, true);
                    self.store.add_pending(MapEntry { luid, guid });
                    status::ITEM_ADDED
                }
            }
            Change::Replace { id: luid, data } => {
                let existed = self.store.get(luid).is_some();
                self.store.apply_remote(luid, Some(data));
                self.store.set_known(luid, true);
                if existed {
                    status::OK
                } else {
                    status::ITEM_ADDED
                }
            }
            Change::Delete { id: luid } => {
                self.store.set_known(luid, false);
                if self.store.get(luid).is_some() {
                    self.store.apply_remote(luid, None);
                    status::OK
                } else {
                    status::NOT_DELETED
                }
            }
        }
    }

    fn map_chunk_is_last(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|a| a.map.len() <= self.per_message())
    }

    fn send_map_chunk(&mut self, last_chunk: bool) {
        let per = self.per_message();
        let Some(a) = self.session.as_mut() else {
            return;
        };
        let n = a.map.len().min(per);
        let entries: Vec<MapEntry> = a.map.drain(..n).collect();
        a.map_last_sent = last_chunk;
        let m = AnchoredMessage::Map {
            session: a.id,
            last_chunk,
            entries,
        };
        self.send(m);
    }
}

fn state_name(s: ClientState) -> &'static str {
    match s {
        ClientState::Idle => "Idle",
        ClientState::AwaitAuthRequest => "AwaitAuthRequest",
        ClientState::AwaitAuthResult => "AwaitAuthResult",
        ClientState::AwaitAlert => "AwaitAlert",
        ClientState::SendingEarlyMap => "SendingEarlyMap",
        ClientState::SendingChanges => "SendingChanges",
        ClientState::ReceivingChanges => "ReceivingChanges",
        ClientState::SendingMap => "SendingMap",
    }
}

impl<S: ClientStore> SessionCore for ClientSession<S> {
    type Command = ClientCommand;
    type Event = ClientEvent;

    fn handle_message(&mut self, now: Instant, msg: Message) -> Result<(), AnchoredError> {
        ClientSession::handle_message(self, now, msg)
    }
    fn malformed(&mut self, now: Instant, err: DecodeError) -> AnchoredError {
        ClientSession::malformed(self, now, err)
    }
    fn command(&mut self, now: Instant, cmd: ClientCommand) -> Result<(), AnchoredError> {
        match cmd {
            ClientCommand::Start => self.start(now),
        }
    }
    fn timeout(&mut self, now: Instant) -> Result<(), AnchoredError> {
        self.handle_timeout(now)
    }
    fn cut(&mut self, now: Instant) -> Result<(), AnchoredError> {
        ClientSession::cut(self, now)
    }
    fn poll(&mut self) -> Option<Step<ClientEvent>> {
        ClientSession::poll(self)
    }
    fn deadline(&self) -> Option<Instant> {
        ClientSession::deadline(self)
    }
}
