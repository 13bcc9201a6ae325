//! R-Type's dual-channel connection (its connection RFC): `main` (a reliable stream) and `feed`
//! (datagrams that may be lost, duplicated or reordered).
//!
//! - [`DualClient`]: asks the caller to open `main` then `feed`, runs the handshake
//!   (`CONN_INIT`, feed init with retries, final auth), reconnects `main` proving its player
//!   with a proof derived from the session secret that only `main` carried, and handles the loss of `feed` by the configured [`FeedLossPolicy`].
//! - [`DualServer`]: allocates player ids, takes tokens from a [`TokenSource`], binds a
//!   `feed` link to a player only when token A matches, and refuses with `CONN_FAILED`.
//! - [`feed`]: the `feed` channel itself: the tag of every datagram (HMAC-SHA-256 keyed by
//!   the session's feed key), sequence numbers and a 256-entry replay window, forged,
//!   replayed and malformed datagrams ignored and counted.
//!
//! The byte layouts and diagrams are in docs/PROTOCOL.md, section 4.
//!
//! ```
//! use tether::connect::dual::{DualClientConfig, DualClientCommand, DualClient};
//! use tether::{Channel, Input, Instant, Machine, Output};
//!
//! let mut client = DualClient::new(DualClientConfig::default());
//! client.handle_input(Instant::ZERO, Input::Command(DualClientCommand::Connect)).unwrap();
//! // The client asks the caller for a `main` transport first.
//! assert_eq!(client.poll_output(), Output::Open(Channel::Main));
//! ```

mod client;
pub mod feed;
mod server;
mod snapshot;

pub use crate::session::{EndReason, Event, Outcome};
pub use crate::token::TokenSource;
pub use client::{
    DualClient, DualClientCommand, DualClientConfig, DualClientEvent, DualClientInput,
    DualClientNotice, DualClientState, FeedLossPolicy, CLIENT_TRANSITIONS,
};
pub use server::{
    DualServer, DualServerCommand, DualServerConfig, DualServerEvent, DualServerNotice,
    PlayerInput, PlayerState, SERVER_TRANSITIONS,
};

pub use snapshot::{DualClientSnapshot, PlayerSnapshot, FEED_SEQ_GAP};

use crate::driver::{HasOrigin, Origin};
use crate::tables::NoTransition;
use crate::time::Duration;
use crate::wire::FailReason;

/// How often and how patiently to try again: attempt `n` (1-based) waits
/// `initial * 2^(n-1)`, capped at `max`, and there are at most `attempts` tries in all.
///
/// ```
/// use tether::connect::dual::Retry;
/// use tether::Duration;
/// let r = Retry { attempts: 4, initial: Duration::from_millis(100), max: Duration::from_millis(300) };
/// assert_eq!(r.delay(1), Duration::from_millis(100));
/// assert_eq!(r.delay(2), Duration::from_millis(200));
/// assert_eq!(r.delay(3), Duration::from_millis(300));
/// assert_eq!(r.delay(40), Duration::from_millis(300));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all (the first included); 0 and 1 both mean "never try again".
    pub attempts: u32,
    /// The wait after the first try.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Retry {
    /// The wait after try `n` (1-based), with exponential backoff.
    pub fn delay(&self, n: u32) -> Duration {
        let shift = n.saturating_sub(1).min(32);
        self.initial.saturating_mul(1u64 << shift).min(self.max)
    }

    /// This schedule with jitter: up to `jitter_percent` of each wait cut off at random,
    /// drawn from `seed` (the one [`Backoff`](crate::session::Backoff) of the crate).
    pub fn backoff(&self, jitter_percent: u8, seed: u64) -> crate::session::Backoff {
        crate::session::Backoff::new(self.initial, self.max, jitter_percent, seed)
    }

    /// Whether another try is allowed after `done` tries.
    pub fn allows(&self, done: u32) -> bool {
        done < self.attempts
    }
}

/// Why one connection attempt failed (the session, if there was one, ends with the
/// matching [`EndReason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptFailure {
    /// The peer answered `CONN_FAILED` with this reason (or, with
    /// [`FailReason::Diverged`], this side found the session diverged and told the peer so).
    Refused(FailReason),
    /// The peer broke the protocol; tether told it `CONN_FAILED` with this reason.
    Violation(FailReason),
    /// No answer in time (after the retries, where there are any).
    Timeout,
    /// A transport closed or could not be opened.
    LinkClosed,
}

impl AttemptFailure {
    /// How a session ends when this failure is final: a refusal or a violation says so
    /// (a diverged session is [`EndReason::Diverged`]), a timeout or a closed transport
    /// means the client gave up.
    pub fn end_reason(self) -> EndReason {
        match self {
            AttemptFailure::Refused(FailReason::Diverged)
            | AttemptFailure::Violation(FailReason::Diverged) => EndReason::Diverged,
            AttemptFailure::Refused(r) => EndReason::Refused(r),
            AttemptFailure::Violation(r) => EndReason::Violation(r),
            AttemptFailure::Timeout | AttemptFailure::LinkClosed => EndReason::GaveUp,
        }
    }
}

/// Errors the dual-channel machines return. None is fatal: the machines keep running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DualError {
    /// The queue of messages waiting for a connection is full.
    #[error("send queue is full ({max} messages)")]
    QueueFull {
        /// The configured bound.
        max: usize,
    },
    /// `feed` is not bound now; a datagram would be lost anyway, so it is refused.
    #[error("the feed channel is not ready")]
    FeedUnavailable,
    /// The message does not fit in one `feed` datagram.
    #[error("feed content of {len} bytes is over the limit of {max}")]
    ContentTooLarge {
        /// The encoded message's length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// No player has this id.
    #[error("no player {0}")]
    UnknownPlayer(u16),
    /// The caller's [`TokenSource`] gave a token shorter than 128 bits while short tokens
    /// are not allowed; the handshake was refused with `CONN_FAILED`.
    #[error("the token source gave a token shorter than 128 bits")]
    InsecureTokenSource,
    /// Connection control messages (handshake, ACK, disconnection) belong to the
    /// machine, not the application.
    #[error("this message is reserved to the connection machine")]
    Reserved,
    /// The client is closed; send `Connect` first.
    #[error("the connection is closed")]
    Closed,
    /// The client was asked for a move [`CLIENT_TRANSITIONS`] does not have; it did not
    /// move. (A peer's message that would need one is refused with `CONN_FAILED` instead.)
    #[error("client: {0}")]
    ClientTransition(NoTransition<DualClientState, DualClientInput>),
    /// A player was asked for a move [`SERVER_TRANSITIONS`] does not have; it did not move.
    /// (A peer's message that would need one is refused with `CONN_FAILED` instead.)
    #[error("server: {0}")]
    PlayerTransition(NoTransition<PlayerState, PlayerInput>),
}

impl DualError {
    /// Who misbehaved. Every error the dual-channel machines return is the local caller's:
    /// a peer that breaks the protocol is told with `CONN_FAILED` and dropped, and the
    /// application hears of it by an event, never an error.
    pub fn origin(&self) -> Origin {
        match self {
            DualError::QueueFull { .. }
            | DualError::FeedUnavailable
            | DualError::ContentTooLarge { .. }
            | DualError::UnknownPlayer(_)
            | DualError::InsecureTokenSource
            | DualError::Closed
            | DualError::Reserved
            | DualError::ClientTransition(_)
            | DualError::PlayerTransition(_) => Origin::Local,
        }
    }
}

impl HasOrigin for DualError {
    fn origin(&self) -> Origin {
        DualError::origin(self)
    }
}

impl From<NoTransition<DualClientState, DualClientInput>> for DualError {
    fn from(e: NoTransition<DualClientState, DualClientInput>) -> Self {
        DualError::ClientTransition(e)
    }
}

impl From<NoTransition<PlayerState, PlayerInput>> for DualError {
    fn from(e: NoTransition<PlayerState, PlayerInput>) -> Self {
        DualError::PlayerTransition(e)
    }
}
