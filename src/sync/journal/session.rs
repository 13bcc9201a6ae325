//! [`JournalSync`]: sync contexts carrying journal sync, at the message level.
//!
//! Input: decoded [`Message`]s received, the transport going up and down, timeouts and the
//! application's [`SyncCommand`]s, each with `now`. Output: [`SyncOutput`]s (messages to
//! send, events) and a deadline. It does no I/O, so the composed peer can put it over
//! either connection profile, and [`JournalMachine`](super::JournalMachine) puts it alone
//! over one `main` transport.

use super::given::Given;
use super::store::{JournalStore, StoreError};
use crate::driver::{earliest, HasOrigin, Origin};
use crate::sync::context::{ContextInput, ContextState, Contexts, InputKind, Transition};
use crate::time::{Duration, Instant};
use crate::wire::{
    DecodeError, Element, Entry, HeldLines, JournalList, JournalMessage, JournalRequest, LineId,
    Message, RefuseReason, Status, StatusResponse, MAX_ID_LEN, MAX_LIST_ENTRIES,
};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use bytes::Bytes;
use core::num::NonZeroU32;

/// Which end of the connection this is. Sync contexts give the server the right to refuse any
/// request and to refuse sync messages outside a context; a client ignores them (counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The connecting side.
    Client,
    /// The accepting side.
    Server,
}

/// Whether incoming sync requests are accepted (the application's policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Policy {
    /// Accept every request that arrives while no context is pending.
    Accept,
    /// Refuse every request (`REFUSED`, reason policy); the requester asks again later.
    Refuse,
}

/// Limits and timers. Every buffer is bounded by one of these. `Default` gives the values
/// documented on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// Most entries in one journal list message (at most [`MAX_LIST_ENTRIES`]). Default:
    /// 1024 ([`MAX_LIST_ENTRIES`]), so that `max_list_bytes` is what bounds a list. The
    /// receiver applies each list as one batch (one transaction and one fsync in a durable
    /// store): fuller lists mean fewer fsyncs (64 entries a list cost a SQLite store on
    /// FULL about three times the time per entry that full 64 KiB lists do).
    pub max_entries_per_message: usize,
    /// Most bytes of entries in one journal list message (a list holds at least one entry).
    /// Default: 64 KiB (65 536).
    pub max_list_bytes: usize,
    /// Most entries one context (or broadcast) carries, whatever the request's limit.
    /// Default: 1024.
    pub max_entries_per_context: u32,
    /// Most bytes of entries one context (or broadcast) carries: a context ends once its
    /// lists reach it (at least one entry always goes), and the requester asks again for
    /// the rest. With `max_entries_per_context` it bounds what one request costs.
    /// Default: 1 MiB (1 048 576).
    pub max_bytes_per_context: usize,
    /// Most resource requests of the peer queued for an answer (answered one at a time,
    /// as the output drains); past it a request is answered at once with status 429.
    /// Default: 32.
    pub max_queued_answers: usize,
    /// Most resource requests awaiting an answer. Default: 32.
    pub max_pending_requests: usize,
    /// Largest payload [`SyncCommand::Append`] accepts. Default: 32 KiB (32 768).
    pub max_payload: usize,
    /// First delay before asking again after a refusal; doubles per refusal. Default: 100 ms.
    pub retry_base: Duration,
    /// Longest delay before asking again. Default: 5 s.
    pub retry_max: Duration,
    /// Up to this share (0 to 100 %) of each retry delay is cut off at random, so that
    /// the clients of a restarted server do not ask again in lockstep. Default: 20 %.
    pub jitter_percent: u8,
    /// Seed of the jitter (give each client its own). Default: 0.
    pub jitter_seed: u64,
    /// Send status 408 when nothing was received for this long (`None`: never), then drop
    /// the connection: [`JournalMachine`](super::JournalMachine) closes its transport, a
    /// [`Peer`](crate::peer::Peer) drops the session's transport so that it resumes.
    /// Under a `Peer` whatever the connection received counts, its heartbeats included:
    /// with a keepalive (10 s by default) a live peer is never idle, and a silent one is
    /// taken for dead at 1.5 x keepalive, before this fires; it matters when the keepalive
    /// is off. Keep it longer than the peer's keepalive. Default: 30 s.
    pub idle_timeout: Option<Duration>,
    /// Ask for the peer's journal whenever the transport comes up. Default: `true`.
    pub sync_on_connect: bool,
    /// Broadcast the most recent list when the application appends while connected.
    /// Default: `true`.
    pub broadcast_on_append: bool,
    /// The `limit` put in journal requests this side sends. Default: `None` (no limit).
    pub request_limit: Option<NonZeroU32>,
    /// How long a server waits, once a connection is up, for the client's opening request
    /// before it sends its own (it sends its own as soon as it has answered the client's):
    /// the two sides' opening requests then never cross, so neither is refused. Default:
    /// 1 s.
    pub answer_first: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            max_entries_per_message: MAX_LIST_ENTRIES,
            max_list_bytes: 64 * 1024,
            max_entries_per_context: 1024,
            max_bytes_per_context: 1024 * 1024,
            max_queued_answers: 32,
            max_pending_requests: 32,
            max_payload: 32 * 1024,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            jitter_percent: 20,
            jitter_seed: 0,
            idle_timeout: Some(Duration::from_secs(30)),
            sync_on_connect: true,
            broadcast_on_append: true,
            request_limit: None,
            answer_first: Duration::from_secs(1),
        }
    }
}

/// What the application asks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum SyncCommand {
    /// Ask the peer for its journal after our mark (now, or as soon as no context is
    /// pending and no backoff runs).
    RequestJournal {
        /// At most this many entries (another context follows if more remain).
        limit: Option<NonZeroU32>,
    },
    /// Open an application sync context: the peer's application answers it with sync
    /// messages. The body must not start with `0x30` (that is a journal request).
    Request {
        /// What is requested, opaque to tether.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::wire::arbitrary_bytes))]
        body: Bytes,
    },
    /// Send a sync message (inside the application context we reply to, or at any time).
    SendSync(Element),
    /// End the application context we reply to (`SYNC_END`).
    EndSync,
    /// Append an entry to our journal (and broadcast it if configured and connected). An
    /// entry whose author and resource id the journal has is refused with
    /// [`StoreError::Duplicate`] (as [`SyncError::Store`]).
    Append(Entry),
    /// Send the most recent list from the peer's confirmed line, unasked.
    Broadcast,
    /// Ask the peer for one resource.
    RequestResource {
        /// The resource's author.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::wire::arbitrary_bytes))]
        author: Bytes,
        /// The resource id.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::wire::arbitrary_bytes))]
        resource: Bytes,
    },
    /// Change the policy for incoming requests.
    SetPolicy(Policy),
    /// Send any other message (application traffic between the markers).
    Send(Message),
}

/// What the application is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// A message the sync layer does not consume (application traffic, text, ...).
    Message(Message),
    /// The peer opened an application context: answer with [`SyncCommand::SendSync`] then
    /// [`SyncCommand::EndSync`].
    SyncRequested {
        /// The context.
        ctx: u32,
        /// What the peer asked.
        body: Bytes,
    },
    /// A sync message inside the context we receive.
    SyncMessage {
        /// The context.
        ctx: u32,
        /// The element.
        element: Element,
    },
    /// The context we requested ended; we sent `SYNC_OK`. `mark` is our new mark of the
    /// peer's journal (`None` for an application context or a context that went wrong).
    Completed {
        /// The context.
        ctx: u32,
        /// The last line of the peer's journal now confirmed.
        mark: Option<LineId>,
    },
    /// The peer confirmed (`SYNC_OK`) the context we replied to.
    Confirmed {
        /// The context.
        ctx: u32,
        /// The last line of our journal the peer now confirmed (journal contexts).
        line: Option<LineId>,
    },
    /// The peer refused our request (or a sync message, `ctx` 0).
    Refused {
        /// The context.
        ctx: u32,
        /// Why.
        reason: RefuseReason,
        /// When we will ask again.
        retry_at: Option<Instant>,
    },
    /// The session's first journal answer began: where our mark of the peer's journal
    /// stands (resumed, caught up from the mark, or history diverged), with the peer's
    /// journal identity and head. Once per session coming up, before its entries.
    Continuity {
        /// The context.
        ctx: u32,
        /// The peer's journal epoch.
        epoch: u64,
        /// The peer's last line when it answered.
        head: u64,
        /// What the answer means for our mark.
        continuity: Continuity,
    },
    /// The peer did not know our `since`: it sends its whole journal (dedup makes that safe).
    FullResync {
        /// The context.
        ctx: u32,
        /// Where the peer's answer starts.
        since: LineId,
    },
    /// An entry learned from the peer was appended to our journal at `line`.
    Applied {
        /// Its line in our journal.
        line: LineId,
        /// Its author.
        author: Bytes,
        /// Its resource id.
        resource: Bytes,
    },
    /// The resource asked for, unchanged.
    Resource {
        /// The request.
        req: u32,
        /// Its author.
        author: Bytes,
        /// Its resource id.
        resource: Bytes,
        /// The bytes.
        bytes: Bytes,
    },
    /// A status answering one of our resource requests (404, 400, 408).
    ResourceStatus {
        /// The request.
        req: u32,
        /// Its author.
        author: Bytes,
        /// Its resource id.
        resource: Bytes,
        /// The status.
        status: Status,
    },
    /// A resource request lost with the transport (ask again once connected).
    ResourceCancelled {
        /// The request.
        req: u32,
        /// Its author.
        author: Bytes,
        /// Its resource id.
        resource: Bytes,
    },
    /// Any other status the peer sent (a 400 about something we sent, a 408).
    PeerStatus(StatusResponse),
    /// The store refused a list received from the peer (its batch failed: a full journal,
    /// the store's I/O). The entries it kept are reported [`SyncEvent::Applied`] as usual;
    /// the context is not confirmed as a mark, and the journal is asked for again from our
    /// mark after a backoff.
    StoreFailed {
        /// The context (0 for a broadcast).
        ctx: u32,
        /// What the store said.
        error: StoreError,
    },
    /// An entry received from the peer was refused: its payload is over `max_payload`,
    /// the limit a local append has. It is not stored; the lists around it are.
    EntryRefused {
        /// Its author.
        author: Bytes,
        /// Its resource id.
        resource: Bytes,
        /// Its payload's length.
        len: usize,
    },
    /// Nothing was received for the idle timeout: we sent 408. The connection may be
    /// dropped now ([`JournalMachine`](super::JournalMachine) closes it, a
    /// [`Peer`](crate::peer::Peer) drops the session's transport, which then resumes).
    IdleTimeout,
}

/// One output of [`JournalSync::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutput {
    /// Send this message on `main`.
    Send(Message),
    /// Tell the application.
    Event(SyncEvent),
}

/// Why a command or input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The command needs a connection.
    #[error("not connected")]
    NotConnected,
    /// Too many resource requests await an answer.
    #[error("too many pending resource requests (max {0})")]
    TooManyRequests(usize),
    /// `EndSync` without an application context to end.
    #[error("no application sync context to end")]
    NotReplying,
    /// An application request body that starts with the journal tag `0x30`.
    #[error("request body must not start with the journal tag 0x30")]
    ReservedBody,
    /// An entry over the configured or wire limits.
    #[error("entry too large or ids over {MAX_ID_LEN} bytes")]
    EntryTooLarge,
    /// The store refused: a duplicate, a full journal, or the store's own failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The peer sent a message that did not decode (it was told with status 400).
    #[error("malformed message from peer: {0}")]
    Malformed(DecodeError),
    /// The stream on `main` cannot be read any more (fatal, sticky).
    #[error("fatal framing error: {0}")]
    Frame(DecodeError),
}

impl SyncError {
    /// Whether the machine is failed for good after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self, SyncError::Frame(_))
    }

    /// Who misbehaved: the peer for bytes that do not decode, the local caller (or its
    /// store) for the rest.
    pub fn origin(&self) -> Origin {
        match self {
            SyncError::Malformed(_) | SyncError::Frame(_) => Origin::Remote,
            SyncError::NotConnected
            | SyncError::TooManyRequests(_)
            | SyncError::NotReplying
            | SyncError::ReservedBody
            | SyncError::EntryTooLarge
            | SyncError::Store(_) => Origin::Local,
        }
    }
}

impl HasOrigin for SyncError {
    fn origin(&self) -> Origin {
        SyncError::origin(self)
    }
}

/// Counters of what was ignored or refused (never an error: the peer may be right).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// Sync messages received outside a context and ignored (client).
    pub ignored_sync_messages: u64,
    /// Sync messages received outside a context and refused (server).
    pub refused_sync_messages: u64,
    /// Markers or replies naming no pending context or request.
    pub stale: u64,
    /// Entries received that the journal already had.
    pub duplicates: u64,
    /// Entries applied.
    pub applied: u64,
    /// Entries received over `max_payload`, refused ([`SyncEvent::EntryRefused`]).
    pub oversized: u64,
    /// Messages that did not decode (answered 400).
    pub malformed: u64,
    /// Contexts whose lists did not add up (not confirmed as a mark).
    pub broken_contexts: u64,
    /// Requests refused by us.
    pub refusals_sent: u64,
}

/// Marks: how far each side's journal is confirmed. Persist them with the journal to keep
/// incremental sync across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Marks {
    /// The last line of the peer's journal we confirmed (`SYNC_OK` sent): our next `since`.
    pub ours: Option<LineId>,
    /// The last line of our journal the peer confirmed (`SYNC_OK` received): where our
    /// broadcasts start.
    pub theirs: Option<LineId>,
    /// Our own journal's last line when `ours` last moved: everything `ours` covers is in
    /// our journal up to this line. When the session comes up again and our journal no
    /// longer holds this very line (it was wiped, or restored from an older copy), `ours`
    /// is dropped and the peer's whole journal is asked for
    /// ([`Continuity::Rebuilt`]).
    pub held: Option<LineId>,
}

/// What the first answer of a session says about the peer's journal and our mark of it:
/// reported once per session coming up ([`SyncEvent::Continuity`]), before any entry of
/// the answer is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// We held no mark of the peer's journal (first contact, or a fresh session): all of
    /// it follows.
    Start,
    /// Resumed where we left off: our mark is the peer's head, nothing is missing.
    UpToDate {
        /// Our mark, the peer's head.
        mark: LineId,
    },
    /// The peer's journal is the one we confirmed: the lines after our mark follow.
    CatchUp {
        /// Our mark: the answer starts after it.
        mark: LineId,
    },
    /// The peer's journal is not the one our mark names (another epoch, fewer lines, or
    /// another line there: it was wiped or restored): all of it follows, and entries we
    /// hold already are skipped.
    Diverged {
        /// The mark the peer did not recognise.
        mark: LineId,
    },
    /// Our own journal no longer holds what our mark covered (it was wiped or restored
    /// from an older copy, and the session's marks outlived it): the mark was dropped and
    /// all of the peer's journal follows.
    Rebuilt {
        /// The mark dropped.
        mark: LineId,
    },
}

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
            self.send(status(req, Status::BadRequest, b"not interpretable"));
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
                self.send(Message::Refused {
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
                        self.send(status(
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
                self.send(Message::Refused { ctx, reason });
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

    /// Sends the entries after `req.since` (or the whole journal if `since` is unknown),
    /// never more than the limit, then `SYNC_END`.
    fn answer_journal<S: JournalStore + ?Sized>(
        &mut self,
        store: &S,
        ctx: u32,
        req: JournalRequest,
    ) {
        if req.everything {
            self.given.clear(); // the peer lost lines it gave us: send them back
        }
        let epoch = store.epoch();
        let head = store.head();
        // Known only if it names this very line, check included: a journal wiped and
        // regrown under the same epoch has other lines at the same numbers.
        let known = req.since.epoch == epoch && store.line(req.since.seq) == Some(req.since);
        // An unknown `since` (another epoch, past our head, another history) never means
        // silent loss: the whole journal follows, and the requester's dedup keeps it
        // idempotent.
        let since = if known {
            req.since
        } else {
            LineId::start(epoch)
        };
        let cap = u64::from(
            req.limit
                .map_or(self.config.max_entries_per_context, NonZeroU32::get)
                .min(self.config.max_entries_per_context),
        );
        let last = head.min(since.seq.saturating_add(cap));
        self.serving = Some(Serving {
            ctx,
            next: since,
            last,
            bytes: 0,
            first: true,
        });
    }

    /// The next list of the answer in progress, and its end once done.
    fn serve<S: JournalStore + ?Sized>(&mut self, store: &S, mut serving: Serving) {
        let done = match self.build_list(store, serving.ctx, serving.next, serving.last) {
            Some((list, end, bytes)) if serving.first || end.seq > serving.next.seq => {
                serving.first = false;
                serving.next = end;
                serving.bytes = serving.bytes.saturating_add(bytes);
                self.send(Message::Journal(JournalMessage::List(list)));
                end.seq >= serving.last || serving.bytes >= self.config.max_bytes_per_context
            }
            _ => true, // the store ended early: end here, never loop
        };
        if !done {
            self.serving = Some(serving);
            return;
        }
        self.replying_to = Some(serving.next);
        // The accepted request put us in Replying, whose row SendEnd is.
        if let Ok(Transition::Moved { .. }) = self.contexts.step(ContextInput::SendEnd) {
            self.send(Message::SyncEnd { ctx: serving.ctx });
        }
    }

    /// Answers one queued resource request: the bytes, or 404.
    fn answer_resource<S: JournalStore + ?Sized>(
        &mut self,
        store: &S,
        req: u32,
        author: &[u8],
        resource: &[u8],
    ) {
        match store.resource(author, resource) {
            Some(bytes) => self.send(Message::Journal(JournalMessage::Resource { req, bytes })),
            None => self.send(status(
                Some(req),
                Status::NotFound,
                b"unavailable or deleted",
            )),
        }
    }

    /// Sends lines `since.seq+1 ..= last` unasked (a broadcast), as lists of bounded size,
    /// at most `max_bytes_per_context` of entries in all; returns the line reached.
    fn send_lists<S: JournalStore + ?Sized>(
        &mut self,
        store: &S,
        ctx: u32,
        since: LineId,
        last: u64,
    ) -> LineId {
        let mut at = since;
        let mut sent = 0usize;
        while at.seq < last && sent < self.config.max_bytes_per_context {
            let Some((list, end, bytes)) = self.build_list(store, ctx, at, last) else {
                break;
            };
            if end.seq <= at.seq {
                break; // the store ended early: never loop
            }
            self.send(Message::Journal(JournalMessage::List(list)));
            sent = sent.saturating_add(bytes);
            at = end;
        }
        at
    }

    /// One list of lines `since.seq+1 ..= last` (possibly empty), bounded by
    /// `max_entries_per_message` items and `max_list_bytes`, with the line it ends at and
    /// its bytes of entries. Lines the peer gave us go as held runs (13 bytes a run),
    /// never as entries. `None` if the store has no line `since.seq`.
    fn build_list<S: JournalStore + ?Sized>(
        &self,
        store: &S,
        ctx: u32,
        since: LineId,
        last: u64,
    ) -> Option<(JournalList, LineId, usize)> {
        let from = store.line(since.seq)?;
        let per_msg = self
            .config
            .max_entries_per_message
            .clamp(1, MAX_LIST_ENTRIES);
        let mut entries = Vec::new();
        let mut held: Vec<HeldLines> = Vec::new();
        let mut bytes = 0usize;
        let mut seq = since.seq;
        let mut end = from;
        while seq < last && entries.len() + held.len() < per_msg {
            if let Some(run_end) = self.given.run_at(store, seq + 1) {
                let stop = run_end
                    .min(last)
                    .min(seq.saturating_add(u64::from(u32::MAX)));
                let Some(line) = store.line(stop) else {
                    break;
                };
                held.push(HeldLines {
                    // At most `per_msg` (<= MAX_LIST_ENTRIES) items: fits.
                    at: entries.len() as u16,
                    lines: (stop - seq) as u32,
                    check: line.check,
                });
                bytes += 13;
                seq = stop;
                end = line;
                continue;
            }
            let Some(e) = store.entry(seq + 1) else {
                break;
            };
            let first = entries.is_empty() && held.is_empty();
            if !first && bytes + e.wire_len() > self.config.max_list_bytes {
                break;
            }
            bytes += e.wire_len();
            end = end.next(&e);
            entries.push(e);
            seq += 1;
        }
        let list = JournalList {
            ctx,
            since: from,
            head: store.head(),
            entries,
            held,
        };
        Some((list, end, bytes))
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
                    self.send(status(Some(req), Status::TooManyRequests, b"busy"));
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

    fn on_context_list<S: JournalStore + ?Sized>(&mut self, store: &mut S, list: JournalList) {
        let ctx = list.ctx;
        let Some(mut inc) = self.incoming.take() else {
            self.stats.stale += 1;
            return;
        };
        if !inc.broken {
            let n = list.lines();
            let expected_ok = match (inc.pos, inc.journal) {
                (Some(pos), _) => list.since == pos,
                (None, Some(req)) => {
                    self.report_continuity(ctx, &req, &list);
                    if list.since != req.since {
                        if list.since.seq == 0 && list.since.check == 0 {
                            if req.since.seq != 0 {
                                self.event(SyncEvent::FullResync {
                                    ctx,
                                    since: list.since,
                                });
                            }
                            true
                        } else {
                            false
                        }
                    } else {
                        true
                    }
                }
                (None, None) => false, // a list in an application context
            };
            let limit = inc
                .journal
                .and_then(|r| r.limit)
                .map_or(u64::MAX, |l| u64::from(l.get()));
            if !expected_ok || inc.received + n > limit {
                inc.broken = true;
            } else {
                inc.received += n;
                // The peer's chain over what it sent: the check our mark will carry.
                inc.pos = Some(list.end());
                inc.head = list.head;
                self.incoming = Some(inc);
                self.apply(store, ctx, &list.entries);
                return;
            }
        }
        self.incoming = Some(inc);
    }

    /// Appends each entry we do not have, as one batch (one transaction and one fsync for
    /// a durable store); dedup by `(author, resource)` makes resends, broadcasts and full
    /// resyncs idempotent. Returns once the store has committed the batch: what follows
    /// (a `SYNC_OK` at the context's end) may rely on it.
    fn apply<S: JournalStore + ?Sized>(
        &mut self,
        store: &mut S,
        ctx: u32,
        entries: &[Entry],
    ) -> bool {
        if entries.is_empty() {
            return true;
        }
        // The limits of a local append hold for received entries too: a peer cannot store
        // what the application could not.
        let kept: Vec<Entry>;
        let entries = if entries
            .iter()
            .any(|e| e.payload.len() > self.config.max_payload)
        {
            kept = entries
                .iter()
                .filter(|e| {
                    let over = e.payload.len() > self.config.max_payload;
                    if over {
                        self.stats.oversized += 1;
                        self.out
                            .push_back(SyncOutput::Event(SyncEvent::EntryRefused {
                                author: e.author.clone(),
                                resource: e.resource.clone(),
                                len: e.payload.len(),
                            }));
                    }
                    !over
                })
                .cloned()
                .collect();
            &kept[..]
        } else {
            entries
        };
        let mut outcomes = core::mem::take(&mut self.outcomes);
        outcomes.clear();
        let result = store.append_batch(entries, &mut outcomes);
        for (e, outcome) in entries.iter().zip(&outcomes) {
            match outcome {
                Some(line) => {
                    self.given.insert(line.seq, line.check);
                    self.stats.applied += 1;
                    self.event(SyncEvent::Applied {
                        line: *line,
                        author: e.author.clone(),
                        resource: e.resource.clone(),
                    });
                }
                None => self.stats.duplicates += 1,
            }
        }
        outcomes.clear();
        self.outcomes = outcomes;
        if let Err(error) = result {
            // Not (all) applied: the context must not confirm past it.
            if let Some(inc) = self.incoming.as_mut() {
                inc.broken = true;
            }
            self.event(SyncEvent::StoreFailed { ctx, error });
            return false;
        }
        true
    }

    /// The first list answering the first journal request of a connection: tells the
    /// application where its mark stands, before the list's entries are applied.
    fn report_continuity(&mut self, ctx: u32, req: &JournalRequest, list: &JournalList) {
        if !core::mem::take(&mut self.report) {
            return;
        }
        let mark = req.since;
        let continuity = if mark.seq == 0 {
            // No mark: whatever epoch we named, the whole journal was asked for.
            match self.rebuilt.take() {
                Some(mark) => Continuity::Rebuilt { mark },
                None => Continuity::Start,
            }
        } else if list.since != mark {
            Continuity::Diverged { mark }
        } else if list.head == mark.seq {
            Continuity::UpToDate { mark }
        } else {
            Continuity::CatchUp { mark }
        };
        self.event(SyncEvent::Continuity {
            ctx,
            epoch: list.since.epoch,
            head: list.head,
            continuity,
        });
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

    /// The most recent list: our lines after the peer's confirmed mark, or after what this
    /// connection already carried if that is further, unasked (ctx 0). Without the second
    /// bound every broadcast would resend everything since the last confirmation: a server
    /// relaying each entry to every session would send quadratically many.
    fn broadcast<S: JournalStore + ?Sized>(&mut self, store: &S) {
        let epoch = store.epoch();
        let head = store.head();
        let known =
            |l: Option<LineId>| l.filter(|l| l.epoch == epoch && store.line(l.seq) == Some(*l));
        let since = match (known(self.marks.theirs), known(self.broadcast_to)) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b).unwrap_or(LineId::start(epoch)),
        };
        let last = head.min(
            since
                .seq
                .saturating_add(u64::from(self.config.max_entries_per_context)),
        );
        let reached = self.send_lists(store, 0, since, last);
        self.broadcast_to = Some(reached);
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
mod tests {
    use super::*;
    use crate::sync::journal::MemJournal;
    use alloc::vec;

    /// What the recording store saw, in order.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Seen {
        /// A batch of this many entries, committed.
        Batch(usize),
        /// A batch refused.
        Failed,
    }

    /// A store over `MemJournal` that logs each batch and fails the batches named.
    #[derive(Debug)]
    struct Recording {
        inner: MemJournal,
        log: Vec<Seen>,
        fail: Vec<usize>,
        calls: usize,
    }

    impl JournalStore for Recording {
        fn epoch(&self) -> u64 {
            self.inner.epoch()
        }
        fn head(&self) -> u64 {
            self.inner.head()
        }
        fn entry(&self, seq: u64) -> Option<Entry> {
            self.inner.entry(seq)
        }
        fn line(&self, seq: u64) -> Option<LineId> {
            self.inner.line(seq)
        }
        fn contains(&self, author: &[u8], resource: &[u8]) -> bool {
            self.inner.contains(author, resource)
        }
        fn append(&mut self, entry: Entry) -> Result<LineId, StoreError> {
            self.inner.append(entry)
        }
        fn append_batch(
            &mut self,
            entries: &[Entry],
            outcomes: &mut Vec<Option<LineId>>,
        ) -> Result<(), StoreError> {
            self.calls += 1;
            if self.fail.contains(&self.calls) {
                self.log.push(Seen::Failed);
                return Err(StoreError::message("disk on fire"));
            }
            self.inner.append_batch(entries, outcomes)?;
            self.log.push(Seen::Batch(entries.len()));
            Ok(())
        }
        fn resource(&self, author: &[u8], resource: &[u8]) -> Option<Bytes> {
            self.inner.resource(author, resource)
        }
    }

    /// One end: its sync and the journal it is given.
    struct Side<S> {
        sync: JournalSync,
        store: S,
    }

    impl<S: JournalStore> Side<S> {
        fn up(&mut self, now: Instant) {
            self.sync.connection_up(now, &self.store);
        }
    }

    fn server(n: u32) -> Side<MemJournal> {
        let mut j = MemJournal::new(9, 10_000);
        for i in 0..n {
            j.append(Entry::new(b"srv", &i.to_be_bytes(), &[0; 64]))
                .unwrap();
        }
        let config = SyncConfig {
            sync_on_connect: false,
            max_entries_per_message: 64,
            ..SyncConfig::default()
        };
        Side {
            sync: JournalSync::new(Role::Server, config),
            store: j,
        }
    }

    /// Shuttles messages both ways at `now` until both are quiet; returns the client's
    /// events, and the store log as it stood when each client `SYNC_OK` was polled.
    fn shuttle(
        now: Instant,
        client: &mut Side<Recording>,
        server: &mut Side<MemJournal>,
    ) -> (Vec<SyncEvent>, Vec<Vec<Seen>>) {
        let (mut events, mut at_ok) = (Vec::new(), Vec::new());
        while client.sync.has_output() || server.sync.has_output() {
            while let Some(out) = client.sync.poll(&client.store) {
                match out {
                    SyncOutput::Send(m) => {
                        if matches!(m, Message::SyncOk { .. }) {
                            at_ok.push(client.store.log.clone());
                        }
                        server.sync.handle_message(now, &mut server.store, m);
                    }
                    SyncOutput::Event(e) => events.push(e),
                }
            }
            while let Some(out) = server.sync.poll(&server.store) {
                if let SyncOutput::Send(m) = out {
                    client.sync.handle_message(now, &mut client.store, m);
                }
            }
        }
        (events, at_ok)
    }

    fn recording_client(fail: Vec<usize>) -> Side<Recording> {
        let store = Recording {
            inner: MemJournal::new(1, 10_000),
            log: Vec::new(),
            fail,
            calls: 0,
        };
        Side {
            sync: JournalSync::new(Role::Client, SyncConfig::default()),
            store,
        }
    }

    #[test]
    fn each_received_list_is_one_batch_committed_before_sync_ok() {
        let (now, mut server, mut client) = (Instant::ZERO, server(200), recording_client(vec![]));
        server.up(now);
        client.up(now);
        let (events, at_ok) = shuttle(now, &mut client, &mut server);
        // 200 entries in lists of 64 (the server's `max_entries_per_message`): four batches,
        // and the one SYNC_OK left after all four were committed.
        let batches = vec![
            Seen::Batch(64),
            Seen::Batch(64),
            Seen::Batch(64),
            Seen::Batch(8),
        ];
        assert_eq!(client.store.log, batches);
        assert_eq!(at_ok, [batches]);
        let applied = events
            .iter()
            .filter(|e| matches!(e, SyncEvent::Applied { .. }))
            .count();
        assert_eq!((applied, client.sync.stats().applied), (200, 200));
        assert_eq!(client.sync.marks().ours, server.store.line(200));
        assert_eq!(server.sync.marks().theirs, server.store.line(200));
    }

    #[test]
    fn a_failed_batch_is_reported_moves_no_mark_and_is_fetched_again() {
        let (now, mut server, mut client) = (Instant::ZERO, server(100), recording_client(vec![2]));
        server.up(now);
        client.up(now);
        let (events, _) = shuttle(now, &mut client, &mut server);
        let failed: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                SyncEvent::StoreFailed { ctx, error } => Some((*ctx, alloc::format!("{error}"))),
                _ => None,
            })
            .collect();
        assert_eq!(
            failed,
            [(
                1,
                alloc::string::String::from("journal store failed: disk on fire")
            )]
        );
        // The first list (64) is in; the second was refused whole; no mark moved.
        assert_eq!(client.store.head(), 64);
        assert_eq!(client.sync.marks().ours, None);
        assert!(events.contains(&SyncEvent::Completed { ctx: 1, mark: None }));
        // After the backoff the client asks again from its mark and gets the rest.
        let later = client.sync.deadline().expect("a retry is scheduled");
        client.sync.handle_timeout(later);
        let (events, _) = shuttle(later, &mut client, &mut server);
        assert_eq!(client.store.head(), 100);
        assert_eq!(client.sync.stats().applied, 100);
        assert_eq!(client.sync.stats().duplicates, 64);
        assert_eq!(client.sync.marks().ours, server.store.line(100));
        assert!(!events
            .iter()
            .any(|e| matches!(e, SyncEvent::StoreFailed { .. })));
    }

    #[test]
    fn appending_a_duplicate_is_a_typed_error() {
        let mut sync = JournalSync::new(Role::Client, SyncConfig::default());
        let mut store = MemJournal::new(1, 10);
        let e = Entry::new(b"me", b"r1", b"x");
        sync.command(Instant::ZERO, &mut store, SyncCommand::Append(e.clone()))
            .unwrap();
        assert_eq!(
            sync.command(Instant::ZERO, &mut store, SyncCommand::Append(e)),
            Err(SyncError::Store(StoreError::Duplicate))
        );
        assert_eq!(store.head(), 1);
    }
}
