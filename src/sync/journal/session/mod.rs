//! [`JournalSync`]: sync contexts carrying journal sync, at the message level.
//!
//! Input: decoded [`Message`]s received, the transport going up and down, timeouts and the
//! application's [`SyncCommand`]s, each with `now`. Output: [`SyncOutput`]s (messages to
//! send, events) and a deadline. It does no I/O, so the composed peer can put it over
//! either connection profile, and [`JournalMachine`](super::JournalMachine) puts it alone
//! over one `main` transport.

mod receive;
mod reply;

use super::given::Given;
use super::store::{JournalStore, StoreError};
use super::types::{
    Marks, Policy, Role, SyncCommand, SyncConfig, SyncError, SyncEvent, SyncOutput, SyncStats,
};
use crate::driver::earliest;
use crate::sync::context::{ContextInput, ContextState, Contexts, InputKind, Transition};
use crate::time::{Duration, Instant};
use crate::wire::{
    DecodeError, JournalMessage, JournalRequest, LineId, Message, RefuseReason, Status,
    StatusResponse, MAX_ID_LEN,
};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use bytes::Bytes;

/// Refusals and error statuses the output may hold beyond a list's worth of events
/// ([`JournalSync::refuse`]).
const REFUSALS_QUEUED: usize = 64;
use core::num::NonZeroU32;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Journal(Option<NonZeroU32>),
    App(Bytes),
}

/// A journal answer in progress: lines `next.seq+1 ..= last` still to send.
#[derive(Debug, Clone, Copy)]
struct Serving {
    ctx: u32,
    next: LineId,
    last: u64,
    /// Bytes of entries sent so far in this context.
    bytes: usize,
    /// No list sent yet (the answer always has one, possibly empty).
    first: bool,
}

/// The context we receive (requester side).
#[derive(Debug, Clone)]
struct Incoming {
    journal: Option<JournalRequest>,
    pos: Option<LineId>,
    head: u64,
    received: u64,
    broken: bool,
    /// Our mark when the context started: if a broadcast moves it meanwhile, the
    /// context's end must not move it back.
    mark_at_start: Option<LineId>,
}

/// Sync contexts carrying journal sync, over one connection to one peer.
///
/// Message level: a driver (or [`Peer`](crate::peer::Peer)) encodes what it sends and
/// decodes what it receives. Here the client asks for the server's journal when the
/// connection comes up and learns its entry:
///
/// ```
/// use tether::sync::journal::{JournalStore, JournalSync, MemJournal, Role, SyncConfig};
/// use tether::sync::journal::{SyncEvent, SyncOutput};
/// use tether::wire::Entry;
/// use tether::Instant;
///
/// let now = Instant::ZERO;
/// let mut journal = MemJournal::new(2, 100);
/// journal.append(Entry::new(b"srv", b"r1", b"hello")).unwrap();
/// // The server only answers here, so that two requests do not cross (both would be
/// // refused, then asked again after `retry_base`).
/// let answer_only = SyncConfig { sync_on_connect: false, ..SyncConfig::default() };
/// let mut server = JournalSync::new(Role::Server, answer_only);
/// let mut client = JournalSync::new(Role::Client, SyncConfig::default());
/// let mut client_journal = MemJournal::new(1, 100);
/// server.connection_up(now, &journal);
/// client.connection_up(now, &client_journal);
///
/// let mut applied = Vec::new();
/// while client.has_output() || server.has_output() {
///     while let Some(out) = client.poll(&client_journal) {
///         match out {
///             SyncOutput::Send(message) => server.handle_message(now, &mut journal, message),
///             SyncOutput::Event(SyncEvent::Applied { resource, .. }) => applied.push(resource),
///             SyncOutput::Event(_) => {}
///         }
///     }
///     while let Some(out) = server.poll(&journal) {
///         if let SyncOutput::Send(message) = out {
///             client.handle_message(now, &mut client_journal, message);
///         }
///     }
/// }
/// assert_eq!(applied, [&b"r1"[..]]);
/// assert!(client_journal.contains(b"srv", b"r1"));
/// ```
#[derive(Debug)]
pub struct JournalSync {
    role: Role,
    config: SyncConfig,
    policy: Policy,
    contexts: Contexts,
    marks: Marks,
    want: Option<Want>,
    requested: Option<Want>,
    /// The `since` of the journal request in flight.
    requested_since: LineId,
    incoming: Option<Incoming>,
    /// The line our answer ended at, once a journal answer is sent and awaits SYNC_OK.
    replying_to: Option<LineId>,
    /// The journal answer being sent: one list is made each time the output drains, so
    /// that an answer is never all queued at once, and requests that arrive meanwhile are
    /// refused (the context is still `Replying`).
    serving: Option<Serving>,
    /// The peer's resource requests waiting for an answer (at most `max_queued_answers`).
    answers: VecDeque<(u32, Bytes, Bytes)>,
    /// The last line of our journal broadcast on this connection: the next broadcast
    /// continues from it, as the transport is ordered and reliable while it lasts (SDMP:
    /// each node keeps the last line sent to each other node). Cleared when the
    /// connection goes down, since what was in flight may be lost.
    broadcast_to: Option<LineId>,
    retry_at: Option<Instant>,
    /// A server holds its opening request back until the client's has been answered (or
    /// this deadline passes), so that the two never cross and get refused.
    answer_first: Option<Instant>,
    /// The continuity of this connection is still to be reported (first journal answer).
    report: bool,
    /// The mark dropped at connection up because our journal lost what it covered.
    rebuilt: Option<LineId>,
    /// Our journal lost lines: ask for everything, the lines we gave the peer included,
    /// until a journal context completes.
    everything: bool,
    /// Our lines that came from this peer: never sent back to it.
    given: Given,
    refusals: u32,
    /// The jittered retry waits (the server's twice the client's, so that two requests
    /// that crossed and were both refused do not cross again).
    retry: crate::session::Backoff,
    last_rx: Instant,
    idle_reported: bool,
    pending: BTreeMap<u32, (Bytes, Bytes)>,
    out: VecDeque<SyncOutput>,
    stats: SyncStats,
    /// The outcomes of the last batch, kept to reuse its allocation.
    outcomes: Vec<Option<LineId>>,
}

impl JournalSync {
    /// A machine for `role`, down until [`connection_up`](Self::connection_up). It holds no
    /// journal: each call that reads or writes one is given the store, so that the
    /// sessions of a server all work on the one journal their peer owns.
    pub fn new(role: Role, config: SyncConfig) -> Self {
        let retry = retry_schedule(role, &config);
        JournalSync {
            role,
            config,
            policy: Policy::Accept,
            contexts: Contexts::new(),
            marks: Marks::default(),
            want: None,
            requested: None,
            requested_since: LineId::start(0),
            incoming: None,
            replying_to: None,
            serving: None,
            answers: VecDeque::new(),
            broadcast_to: None,
            retry_at: None,
            answer_first: None,
            report: false,
            rebuilt: None,
            everything: false,
            given: Given::default(),
            refusals: 0,
            retry,
            last_rx: Instant::ZERO,
            idle_reported: false,
            pending: BTreeMap::new(),
            out: VecDeque::new(),
            stats: SyncStats::default(),
            outcomes: Vec::new(),
        }
    }

    /// The marks, to persist.
    pub fn marks(&self) -> Marks {
        self.marks
    }
    /// Restores persisted marks (before connecting).
    pub fn set_marks(&mut self, marks: Marks) {
        self.marks = marks;
    }
    /// The counters.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }
    /// Where the contexts stand.
    pub fn context_state(&self) -> ContextState {
        self.contexts.state()
    }
    /// Whether output is queued.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || self.serving.is_some() || !self.answers.is_empty()
    }
    /// The next output. Answers are made here, one list or resource at a time as the
    /// output drains (so `store` is read): what one input can make the machine hold is
    /// one list, whatever the peer asked.
    pub fn poll<S: JournalStore + ?Sized>(&mut self, store: &S) -> Option<SyncOutput> {
        if self.out.is_empty() {
            if let Some((req, author, resource)) = self.answers.pop_front() {
                self.answer_resource(store, req, &author, &resource);
            } else if let Some(serving) = self.serving.take() {
                self.serve(store, serving);
            }
        }
        self.out.pop_front()
    }

    /// Puts back an output taken with [`JournalSync::poll`] that could not go out yet (the
    /// connection's replay buffer was full): it is the next one polled.
    pub(crate) fn unpoll(&mut self, output: SyncOutput) {
        self.out.push_front(output);
    }

    /// The next deadline: a retry after a refusal, or the idle timeout.
    pub fn deadline(&self) -> Option<Instant> {
        if self.contexts.state() == ContextState::Down {
            return None;
        }
        let retry = match (&self.want, self.contexts.state()) {
            (Some(_), ContextState::Idle) => earliest([self.retry_at, self.answer_first]),
            _ => None,
        };
        let idle = match (self.config.idle_timeout, self.idle_reported) {
            (Some(d), false) => Some(self.last_rx + d),
            _ => None,
        };
        earliest([retry, idle])
    }

    fn send(&mut self, msg: Message) {
        self.out.push_back(SyncOutput::Send(msg));
    }

    /// Sends a refusal or an error status, the answer to a request this side does not
    /// serve: unless the output already holds more than a list's worth of events and a
    /// few messages, which happens only while the peer does not read what it is sent
    /// (the peer's sync is held back) and floods requests meanwhile. Such a refusal is
    /// dropped and counted ([`SyncStats::refusals_dropped`]): what a flood makes this side
    /// hold stays bounded whatever its length.
    fn refuse(&mut self, msg: Message) {
        if self.out.len() >= self.config.max_entries_per_message + REFUSALS_QUEUED {
            self.stats.refusals_dropped += 1;
        } else {
            self.send(msg);
        }
    }
    fn event(&mut self, e: SyncEvent) {
        self.out.push_back(SyncOutput::Event(e));
    }

    /// The transport is up (connected or resumed): resync from our mark. Our mark is kept
    /// only if `store` still holds the line it was confirmed at ([`Marks::held`]).
    pub fn connection_up<S: JournalStore + ?Sized>(&mut self, now: Instant, store: &S) {
        // Up is a row from Down only: up again while up (a profile that reports a
        // connection twice) is not fired, and the rest (a resync) runs as for any up.
        if self.contexts.state() == ContextState::Down
            && self.contexts.step(ContextInput::Up).is_err()
        {
            return;
        }
        self.broadcast_to = None;
        self.last_rx = now;
        self.idle_reported = false;
        self.retry_at = None;
        self.refusals = 0;
        self.report = true;
        self.rebuilt = None;
        if let Some(held) = self.marks.held {
            if store.line(held.seq) != Some(held) {
                // Our journal is not the one the mark's lines went into: what the mark says
                // we hold may be gone. Ask for everything (dedup keeps what survived).
                self.rebuilt = self.marks.ours.take();
                self.marks.held = None;
                self.everything = true;
                self.given.clear(); // it described lines of the journal we lost
            }
        }
        if let Some(theirs) = self.marks.theirs {
            if store.line(theirs.seq) != Some(theirs) {
                self.marks.theirs = None; // the peer confirmed lines we no longer have
            }
        }
        self.answer_first = match self.role {
            Role::Server => Some(now + self.config.answer_first),
            Role::Client => None,
        };
        if self.config.sync_on_connect && self.want.is_none() {
            self.want = Some(Want::Journal(self.config.request_limit));
        }
        self.try_start(now);
    }

    /// The transport is down: the context in flight is abandoned, marks unchanged; what we
    /// had requested is asked again once up.
    pub fn connection_down(&mut self, _now: Instant) {
        if self.contexts.state() == ContextState::Down {
            return;
        }
        if self.contexts.step(ContextInput::Down).is_err() {
            return;
        }
        self.broadcast_to = None;
        // What was queued to send is obsolete: it is made again from the marks once up
        // (holding it would let answers pile up in a reconnecting session's queue).
        self.out.retain(|o| matches!(o, SyncOutput::Event(_)));
        if let Some(w) = self.requested.take() {
            if self.want.is_none() {
                self.want = Some(w);
            }
        }
        self.incoming = None;
        self.replying_to = None;
        self.serving = None;
        self.answers.clear();
        self.retry_at = None;
        for (req, (author, resource)) in core::mem::take(&mut self.pending) {
            self.event(SyncEvent::ResourceCancelled {
                req,
                author,
                resource,
            });
        }
    }

    /// A timeout fired (early or late is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.contexts.state() == ContextState::Down {
            return;
        }
        if let (Some(d), false) = (self.config.idle_timeout, self.idle_reported) {
            if now >= self.last_rx + d {
                self.idle_reported = true;
                self.send(status(None, Status::RequestTimeout, b"nothing received"));
                self.event(SyncEvent::IdleTimeout);
            }
        }
        if self.answer_first.is_some_and(|t| now >= t) {
            self.answer_first = None; // the client did not ask: ask ourselves
        }
        self.try_start(now);
    }

    /// Bytes from the peer arrived at `at` below the sync layer (the connection's own
    /// acknowledgements and heartbeats): the peer is alive, so the idle timeout counts
    /// from there. [`Peer`](crate::peer::Peer) calls it before the idle timer fires.
    pub fn heard_from_peer(&mut self, at: Instant) {
        if at > self.last_rx {
            self.last_rx = at;
            self.idle_reported = false;
        }
    }

    /// A frame on `main` did not decode: answer 400 naming the request when its id can be
    /// read, and count it.
    pub fn handle_malformed(&mut self, now: Instant, frame: &[u8], err: DecodeError) -> SyncError {
        self.last_rx = now;
        self.idle_reported = false;
        self.stats.malformed += 1;
        if self.contexts.state() != ContextState::Down {
            // Named whenever the frame holds the id its sender gave its request.
            let req = crate::wire::answered_id(frame);
            self.refuse(status(req, Status::BadRequest, b"not interpretable"));
        }
        SyncError::Malformed(err)
    }

    /// A message was received on `main`.
    pub fn handle_message<S: JournalStore + ?Sized>(
        &mut self,
        now: Instant,
        store: &mut S,
        msg: Message,
    ) {
        if self.contexts.state() == ContextState::Down {
            // Nothing arrives on a transport that is down; a late message is stale.
            self.stats.stale += 1;
            return;
        }
        self.last_rx = now;
        self.idle_reported = false;
        match msg {
            Message::SyncReq { ctx, body } => self.on_sync_req(store, ctx, body),
            Message::SyncStart { ctx } => {
                // A marker of another context, or one the state has no row for, makes no
                // transition: ignored and counted, as the protocol says.
                if let Ok(Transition::Moved { .. }) =
                    self.contexts.step(ContextInput::PeerStart { ctx })
                {
                    self.refusals = 0;
                    let journal = match &self.requested {
                        // The `since` the request carried: a broadcast may have moved our
                        // mark since it left.
                        Some(Want::Journal(_)) => Some(JournalRequest {
                            since: self.requested_since,
                            limit: self.requested_limit(),
                            everything: self.everything,
                        }),
                        _ => None,
                    };
                    self.incoming = Some(Incoming {
                        journal,
                        pos: None,
                        head: 0,
                        received: 0,
                        broken: false,
                        mark_at_start: self.marks.ours,
                    });
                } else {
                    self.stats.stale += 1;
                }
            }
            Message::Sync(element) => match self.contexts.state() {
                ContextState::Receiving => {
                    let ctx = self.contexts.pending().unwrap_or(0);
                    self.event(SyncEvent::SyncMessage { ctx, element });
                }
                _ => self.out_of_context(),
            },
            Message::SyncEnd { ctx } => self.on_sync_end(now, &*store, ctx),
            Message::SyncOk { ctx } => {
                if let Ok(Transition::Moved { .. }) =
                    self.contexts.step(ContextInput::PeerOk { ctx })
                {
                    let line = self.replying_to.take();
                    if line.is_some() {
                        self.marks.theirs = line;
                        // The client's opening request is answered: our own may go now.
                        self.answer_first = None;
                    }
                    self.event(SyncEvent::Confirmed { ctx, line });
                } else {
                    self.stats.stale += 1;
                }
            }
            Message::Refused { ctx, reason } => self.on_refused(now, ctx, reason),
            Message::Journal(j) => self.on_journal(store, j),
            other => self.event(SyncEvent::Message(other)),
        }
        self.try_start(now);
    }

    fn out_of_context(&mut self) {
        match self.role {
            Role::Client => self.stats.ignored_sync_messages += 1,
            Role::Server => {
                self.stats.refused_sync_messages += 1;
                self.refuse(Message::Refused {
                    ctx: 0,
                    reason: RefuseReason::NotInContext,
                });
            }
        }
    }

    fn since(&self) -> LineId {
        self.marks.ours.unwrap_or(LineId::start(0))
    }

    fn requested_limit(&self) -> Option<NonZeroU32> {
        match &self.requested {
            Some(Want::Journal(l)) => *l,
            _ => None,
        }
    }

    fn on_sync_req<S: JournalStore + ?Sized>(&mut self, store: &S, ctx: u32, body: Bytes) {
        let accept = self.policy == Policy::Accept;
        let mut journal = None;
        if accept
            && self.contexts.state() == ContextState::Idle
            && JournalRequest::is_journal_body(&body)
        {
            {
                match JournalRequest::decode_body(body.clone()) {
                    Ok(r) => journal = Some(r),
                    Err(_) => {
                        self.stats.malformed += 1;
                        self.refuse(status(
                            Some(ctx),
                            Status::BadRequest,
                            b"bad sync request body",
                        ));
                        return;
                    }
                }
            }
        }
        match self
            .contexts
            .step(ContextInput::PeerRequest { ctx, accept })
        {
            Ok(Transition::Refuse { ctx, reason }) => {
                self.stats.refusals_sent += 1;
                self.refuse(Message::Refused { ctx, reason });
            }
            Ok(Transition::Moved {
                input: InputKind::PeerRequestAccepted,
                ..
            }) => {
                self.send(Message::SyncStart { ctx });
                match journal {
                    Some(req) => self.answer_journal(store, ctx, req),
                    None => self.event(SyncEvent::SyncRequested { ctx, body }),
                }
            }
            _ => self.stats.stale += 1,
        }
    }

    fn on_sync_end<S: JournalStore + ?Sized>(&mut self, now: Instant, store: &S, ctx: u32) {
        if let Ok(Transition::Moved { .. }) = self.contexts.step(ContextInput::PeerEnd { ctx }) {
            self.send(Message::SyncOk { ctx });
            let requested = self.requested.take();
            let inc = self.incoming.take();
            let mut mark = None;
            if let Some(inc) = inc {
                if inc.journal.is_some() {
                    match (inc.broken, inc.pos) {
                        (false, Some(pos)) => {
                            // A broadcast received meanwhile may have taken the mark
                            // further along the same journal: never move it back.
                            let further = self.marks.ours != inc.mark_at_start
                                && self
                                    .marks
                                    .ours
                                    .is_some_and(|o| o.epoch == pos.epoch && o.seq > pos.seq);
                            if !further {
                                self.marks.ours = Some(pos);
                                self.marks.held = Some(store.head_line());
                            }
                            self.everything = false;
                            mark = self.marks.ours;
                            if inc.head > pos.seq && self.want.is_none() {
                                // More remain past the limit: another context asks for them.
                                self.want = requested;
                            }
                        }
                        _ => {
                            self.stats.broken_contexts += 1;
                            if self.want.is_none() {
                                self.want = requested;
                            }
                            self.retry_at = Some(now + self.backoff());
                        }
                    }
                }
            }
            self.event(SyncEvent::Completed { ctx, mark });
        } else {
            self.stats.stale += 1;
        }
    }

    fn backoff(&mut self) -> Duration {
        self.refusals = self.refusals.saturating_add(1);
        self.retry.wait(self.refusals.min(17))
    }

    fn on_refused(&mut self, now: Instant, ctx: u32, reason: RefuseReason) {
        if ctx == 0 {
            self.event(SyncEvent::Refused {
                ctx,
                reason,
                retry_at: None,
            });
            return;
        }
        if let Ok(Transition::Moved { .. }) = self.contexts.step(ContextInput::PeerRefused { ctx })
        {
            if let Some(w) = self.requested.take() {
                if self.want.is_none() {
                    self.want = Some(w);
                }
            }
            let at = now + self.backoff();
            self.retry_at = Some(at);
            self.event(SyncEvent::Refused {
                ctx,
                reason,
                retry_at: Some(at),
            });
        } else {
            self.stats.stale += 1;
        }
    }

    fn on_journal<S: JournalStore + ?Sized>(&mut self, store: &mut S, msg: JournalMessage) {
        match msg {
            JournalMessage::List(list) if list.ctx == 0 => {
                // A broadcast that continues our mark exactly (same line, same check)
                // moves it: without that, marks would move only when a context ends, and
                // every reconnection would fetch again all that broadcasts carried.
                let from = self.marks.ours.unwrap_or(LineId::start(list.since.epoch));
                let continues = list.since == from && self.contexts.state() != ContextState::Down;
                if self.apply(store, 0, &list.entries) && continues {
                    self.marks.ours = Some(list.end());
                    self.marks.held = Some(store.head_line());
                }
            }
            JournalMessage::List(list) => {
                let current = self.contexts.state() == ContextState::Receiving
                    && self.contexts.pending() == Some(list.ctx);
                if current {
                    self.on_context_list(store, list);
                } else {
                    self.out_of_context();
                }
            }
            JournalMessage::ResourceReq {
                req,
                author,
                resource,
            } => {
                if self.answers.len() >= self.config.max_queued_answers {
                    self.refuse(status(Some(req), Status::TooManyRequests, b"busy"));
                } else {
                    self.answers.push_back((req, author, resource));
                }
            }
            JournalMessage::Resource { req, bytes } => match self.pending.remove(&req) {
                Some((author, resource)) => self.event(SyncEvent::Resource {
                    req,
                    author,
                    resource,
                    bytes,
                }),
                None => self.stats.stale += 1,
            },
            JournalMessage::Status(s) => {
                if let Some((author, resource)) = s.req.and_then(|r| self.pending.remove(&r)) {
                    self.event(SyncEvent::ResourceStatus {
                        req: s.req.unwrap_or(0),
                        author,
                        resource,
                        status: s.status,
                    });
                    return;
                }
                let ours = s.req.is_some() && s.req == self.contexts.pending();
                if ours
                    && s.status == Status::BadRequest
                    && self.contexts.state() == ContextState::Requesting
                {
                    // The peer could not read our request: asking again would not help.
                    if let Ok(Transition::Moved { .. }) =
                        self.contexts.step(ContextInput::PeerRefused {
                            ctx: s.req.unwrap_or(0),
                        })
                    {
                        self.requested = None;
                    }
                }
                self.event(SyncEvent::PeerStatus(s));
            }
        }
    }

    fn try_start(&mut self, now: Instant) {
        if self.contexts.state() != ContextState::Idle {
            return;
        }
        if self.retry_at.is_some_and(|t| now < t) {
            return;
        }
        if self.answer_first.is_some_and(|t| now < t) {
            return; // a server lets the client's opening request go first
        }
        let Some(want) = self.want.take() else {
            return;
        };
        let Ok(Transition::Moved { ctx, .. }) = self.contexts.step(ContextInput::SendRequest)
        else {
            // Not now: the request waits until the connection is idle.
            self.want = Some(want);
            return;
        };
        {
            let body = match &want {
                Want::Journal(limit) => {
                    self.requested_since = self.since();
                    JournalRequest {
                        since: self.requested_since,
                        limit: *limit,
                        everything: self.everything,
                    }
                    .to_body()
                }
                Want::App(b) => b.clone(),
            };
            self.requested = Some(want);
            self.retry_at = None;
            self.send(Message::SyncReq { ctx, body });
        }
    }

    /// An application command.
    pub fn command<S: JournalStore + ?Sized>(
        &mut self,
        now: Instant,
        store: &mut S,
        cmd: SyncCommand,
    ) -> Result<(), SyncError> {
        let up = self.contexts.state() != ContextState::Down;
        match cmd {
            // An explicit request goes as soon as the contexts allow: only the opening
            // request of a connection waits for the client's (`answer_first`).
            SyncCommand::RequestJournal { limit } => {
                self.want = Some(Want::Journal(limit));
                self.answer_first = None;
            }
            SyncCommand::Request { body } => {
                if JournalRequest::is_journal_body(&body) {
                    return Err(SyncError::ReservedBody);
                }
                self.want = Some(Want::App(body));
                self.answer_first = None;
            }
            SyncCommand::SendSync(e) => {
                if !up {
                    return Err(SyncError::NotConnected);
                }
                self.send(Message::Sync(e));
            }
            SyncCommand::EndSync => {
                if self.replying_to.is_some()
                    || self.serving.is_some()
                    || self.contexts.state() != ContextState::Replying
                {
                    return Err(SyncError::NotReplying);
                }
                match self.contexts.step(ContextInput::SendEnd) {
                    Ok(Transition::Moved { ctx, .. }) => self.send(Message::SyncEnd { ctx }),
                    _ => return Err(SyncError::NotReplying),
                }
            }
            SyncCommand::Append(e) => {
                if e.author.len() > MAX_ID_LEN
                    || e.resource.len() > MAX_ID_LEN
                    || e.payload.len() > self.config.max_payload
                {
                    return Err(SyncError::EntryTooLarge);
                }
                // Checked here too, not left to the store: appending an entry the
                // journal has would apply it twice, whatever the store does with it.
                if store.contains(&e.author, &e.resource) {
                    return Err(SyncError::Store(StoreError::Duplicate));
                }
                store.append(e)?;
                if up && self.config.broadcast_on_append {
                    self.broadcast(store);
                }
            }
            SyncCommand::Broadcast => {
                if !up {
                    return Err(SyncError::NotConnected);
                }
                self.broadcast(store);
            }
            SyncCommand::RequestResource { author, resource } => {
                if !up {
                    return Err(SyncError::NotConnected);
                }
                if author.len() > MAX_ID_LEN || resource.len() > MAX_ID_LEN {
                    return Err(SyncError::EntryTooLarge);
                }
                if self.pending.len() >= self.config.max_pending_requests {
                    return Err(SyncError::TooManyRequests(self.config.max_pending_requests));
                }
                let req = self.contexts.allocate_id();
                self.pending.insert(req, (author.clone(), resource.clone()));
                self.send(Message::Journal(JournalMessage::ResourceReq {
                    req,
                    author,
                    resource,
                }));
            }
            SyncCommand::SetPolicy(p) => self.policy = p,
            SyncCommand::Send(m) => {
                if !up {
                    return Err(SyncError::NotConnected);
                }
                self.send(m);
            }
        }
        self.try_start(now);
        Ok(())
    }
}

fn status(req: Option<u32>, status: Status, description: &'static [u8]) -> Message {
    Message::Journal(JournalMessage::Status(StatusResponse {
        req,
        status,
        description: Bytes::from_static(description),
    }))
}

fn retry_schedule(role: Role, config: &SyncConfig) -> crate::session::Backoff {
    let base = match role {
        Role::Client => config.retry_base,
        Role::Server => config.retry_base.saturating_mul(2),
    };
    crate::session::Backoff::new(
        base,
        config.retry_max,
        config.jitter_percent,
        config.jitter_seed,
    )
}

#[cfg(test)]
mod tests;
