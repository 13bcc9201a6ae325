//! What a user of the dual-channel client meets: its configuration, its commands and
//! events, and its state table (states, inputs and every transition).

use super::super::{AttemptFailure, Retry};
use crate::session::{Event, SessionConfig};
use crate::time::{Duration, Instant};
use crate::wire::{Element, Message, DEFAULT_FEED_CONTENT, DEFAULT_MAX_FRAME};

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
    /// The largest frame accepted on `main` ([`DEFAULT_MAX_FRAME`], 1 MiB).
    pub max_frame: usize,
    /// The largest content of a `feed` datagram, both ways ([`DEFAULT_FEED_CONTENT`], 500).
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
    /// Sent the connection request (player id, reconnection proof) on the new `main`.
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
/// for it, and is [`DualError::ClientTransition`](super::super::DualError::ClientTransition) otherwise.
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
/// a client has one ([`DualClient::player`](super::DualClient::player) gives its player id).
pub type DualClientEvent = Event<(), DualClientNotice>;

/// What only a dual-channel [`DualClient`](super::DualClient) reports.
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
