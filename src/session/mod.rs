//! The session core: what every tether session has, whatever handshake admitted it.
//!
//! A connection profile (the dual-channel one after R-Type's connection RFC, or dop's
//! token merge) decides only who may have a session and how it resumes. Everything a
//! session does after that is written once, here, and shared by the four connection
//! machines:
//!
//! - [`Delivery`]: every application-level message on `main` is numbered; the receiver
//!   acknowledges cumulatively; the sender keeps what is unacknowledged in a bounded
//!   replay buffer and replays it after a resumption, so the application receives each
//!   message exactly once and in order across cuts, and is told what was never delivered
//!   when a session ends;
//! - [`Liveness`]: a heartbeat when `main` is idle and a dead-peer timeout of 1.5 x the
//!   keepalive, so a frozen peer or a half-open link is noticed;
//! - [`Backoff`]: the one retry schedule (jitter from a caller's seed, a cap, a give-up);
//! - [`TimerTable`] and [`TimerQueue`]: named deadlines, the next one derived in one
//!   place;
//! - [`Outcome`] and [`EndReason`]: how a handshake ended, and why a session ended.
//!
//! [`SessionConfig`] gathers the settings a session shares across profiles.

mod backoff;
mod delivery;
pub(crate) mod endpoint;
mod event;
mod liveness;
mod runtime;
mod timers;

pub use backoff::Backoff;
pub use delivery::{AckError, Delivery, DeliveryConfig, Full};
pub use event::Event;
pub use liveness::Liveness;
pub(crate) use runtime::{AckFault, SessionCore, Verdict};
pub(crate) use timers::timer_names;
pub use timers::{TimerName, TimerQueue, TimerTable};

use crate::time::Duration;
use crate::wire::{FailReason, Message};
use alloc::vec::Vec;

/// How a handshake ended: the typed result the application uses to decide whether to
/// resynchronise (MQTT's "session present").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Outcome {
    /// A new session: nothing carried over; resynchronise.
    Fresh,
    /// The previous session resumed on a new transport. In tether's encoding its
    /// messages continue exactly once and in order: what was in flight at the cut is
    /// replayed, nothing is lost or repeated.
    Resumed,
}

/// Why a session ended for good: one list for every profile, client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum EndReason {
    /// This side's application ended it (a disconnection, or a server's kick).
    LocalDisconnect,
    /// The peer disconnected formally.
    PeerDisconnect,
    /// The client stopped trying to connect or reconnect (its tries or its time ran out).
    GaveUp,
    /// The server forgot the session: its client did not come back in time (on a client:
    /// the server no longer knew the session, and a fresh one replaced it).
    Expired,
    /// The peer refused for a reason retrying cannot fix.
    Refused(FailReason),
    /// The peer broke the protocol; it was told `CONN_FAILED` with this reason.
    Violation(FailReason),
    /// The dual-channel `feed` was lost and the policy ends the session with it.
    FeedLost,
    /// The two sides' records of the session disagree, found on resuming it: one side
    /// resumed from an older copy of the session (a snapshot restored after a restart, e.g.
    /// a server restarted from an older copy of its database), so messages one side counts
    /// as delivered are gone on the other and it cannot continue exactly once. It ends on
    /// both sides (told with `CONN_FAILED` 12); the client starts a fresh session.
    Diverged,
}

/// Settings every session has, whatever its profile. `Default` gives the values
/// documented on each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Delivery's bounds and acknowledgement rate ([`DeliveryConfig::default`]).
    pub delivery: DeliveryConfig,
    /// Send a heartbeat on `main` when nothing else was sent for this long, and take the
    /// peer for dead when nothing arrived for 1.5 x this long (10 s, so 15 s). `None`:
    /// no heartbeat and no dead-peer timeout (the only choice in dop's encoding).
    pub keepalive: Option<Duration>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            delivery: DeliveryConfig::default(),
            keepalive: Some(Duration::from_secs(10)),
        }
    }
}

/// Messages a session sent or was asked to send, and that its peer never acknowledged:
/// reported when the session ends (or restarts fresh), so nothing is dropped silently.
pub type Undelivered = Vec<Message>;

/// Whether a message is the session's to number and deliver (everything the layers above
/// send on `main`), as opposed to the connection's own control messages (handshakes,
/// resumption, acknowledgements, refusals, disconnection), which are never numbered.
pub fn is_delivered(msg: &Message) -> bool {
    is_delivered_code(msg.code())
}

/// [`is_delivered`] by a message's code: the sync layer's codes (sync contexts, journal and
/// anchored sync) and the application's (`UPDATE_MSG`, `SYNC_MSG`, `TEXT_REQ`, `TEXT_REP`,
/// `APP`).
pub fn is_delivered_code(code: u8) -> bool {
    use crate::wire::codes;
    delivery::is_sync_code(code)
        || matches!(
            code,
            codes::UPDATE_MSG | codes::SYNC_MSG | codes::TEXT_REQ | codes::TEXT_REP | codes::APP
        )
}
