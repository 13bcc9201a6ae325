//! The vocabulary of journal sync: roles and policies, configuration, commands, events,
//! errors, counters, marks and continuity.

use super::store::StoreError;
use crate::driver::{HasOrigin, Origin};
use crate::time::{Duration, Instant};
use crate::wire::{
    DecodeError, Element, Entry, LineId, Message, RefuseReason, Status, StatusResponse, MAX_ID_LEN,
    MAX_LIST_ENTRIES,
};
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
    /// Most payload bytes one session may add to the journal over its life (entries
    /// received from the peer and applied, duplicates not counted); past it received
    /// entries are refused ([`Refusal::SessionQuota`]). A fresh session starts from 0; a
    /// resumed one goes on counting. Default: `None` (no bound but the store's own and
    /// [`JournalStore::admit`](super::JournalStore::admit)).
    pub max_session_bytes: Option<u64>,
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
            max_session_bytes: None,
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
    /// Catch-up progress: a list of the peer's journal answering our request was applied
    /// (one event per list, after its entries' [`SyncEvent::Applied`]). `at` and `head`
    /// are line numbers of the peer's journal, so an application shows "synced `at` of
    /// `head`" (or, from the [`SyncEvent::Continuity`] mark it started at, the fraction
    /// done). An answer cut at the per-context caps is followed by another request, and
    /// `at` goes on from where it stopped.
    Progress {
        /// The context.
        ctx: u32,
        /// The peer's last line we now hold: our mark once the context is confirmed.
        at: u64,
        /// The peer's last line when it answered.
        head: u64,
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
    /// An entry received from the peer was refused ([`Refusal`] says why). It is not
    /// stored; the lists around it are, and the mark moves past it: the peer is not asked
    /// for it again.
    EntryRefused {
        /// Its author.
        author: Bytes,
        /// Its resource id.
        resource: Bytes,
        /// Its payload's length.
        len: usize,
        /// Why.
        reason: Refusal,
    },
    /// Nothing was received for the idle timeout: we sent 408. The connection may be
    /// dropped now ([`JournalMachine`](super::JournalMachine) closes it, a
    /// [`Peer`](crate::peer::Peer) drops the session's transport, which then resumes).
    IdleTimeout,
}

/// One output of [`JournalSync::poll`](super::JournalSync::poll).
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
    /// Entries received and refused by the session quota or the store's policy.
    pub over_quota: u64,
    /// Payload bytes this session added to the journal (what
    /// [`SyncConfig::max_session_bytes`] bounds).
    pub added_bytes: u64,
    /// Messages that did not decode (answered 400).
    pub malformed: u64,
    /// Contexts whose lists did not add up (not confirmed as a mark).
    pub broken_contexts: u64,
    /// Requests refused by us.
    pub refusals_sent: u64,
    /// Refusals and error statuses not sent: the peer flooded requests while it was not
    /// reading what it was sent, and the output was full (a bound on what a flood holds).
    pub refusals_dropped: u64,
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

/// Why a received entry was refused ([`SyncEvent::EntryRefused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its payload is over [`SyncConfig::max_payload`], the limit a local append has.
    TooLarge,
    /// The session has added [`SyncConfig::max_session_bytes`] already.
    SessionQuota,
    /// The store's [`JournalStore::admit`](super::JournalStore::admit) said no (the application's policy).
    Policy,
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
