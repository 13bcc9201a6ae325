//! Liveness of `main`: a heartbeat when the link is otherwise idle, and a dead-peer
//! timeout of 1.5 x the keepalive (MQTT's rule).
//!
//! Each side sends something at least every keepalive interval: its own traffic, or else
//! a heartbeat (tether's `ACK` frame, which carries its received count and so is never
//! wasted). A peer from which nothing at all arrived for 1.5 x keepalive is frozen, or the
//! link is half-open: the link is closed and the session takes its normal path after a
//! lost transport (a client resumes, a server keeps the session for its client to
//! resume). In dop's encoding there is no heartbeat (dop would take one for an
//! application message) and no dead-peer timeout (dop sends none): only the handshake
//! timeouts apply there.

use crate::time::{Duration, Instant};

/// One link's liveness clock.
///
/// ```
/// use tether::session::Liveness;
/// use tether::{Duration, Instant};
///
/// let t0 = Instant::ZERO;
/// let mut l = Liveness::new(t0, Some(Duration::from_secs(10)));
/// assert!(!l.heartbeat_due(Instant::from_secs(9)));
/// assert!(l.heartbeat_due(Instant::from_secs(10)));
/// l.on_sent(Instant::from_secs(10));
/// assert!(!l.is_dead(Instant::from_secs(14)));
/// assert!(l.is_dead(Instant::from_secs(15))); // nothing received for 1.5 x 10 s
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    keepalive: Option<Duration>,
    last_rx: Instant,
    last_tx: Instant,
}

impl Liveness {
    /// A clock for a link that came up at `now`; `None` turns the heartbeat and the
    /// timeout off.
    pub fn new(now: Instant, keepalive: Option<Duration>) -> Self {
        Liveness {
            keepalive,
            last_rx: now,
            last_tx: now,
        }
    }

    /// The keepalive interval.
    pub fn keepalive(&self) -> Option<Duration> {
        self.keepalive
    }

    /// When bytes last arrived (the link's start if none did since).
    pub fn last_received(&self) -> Instant {
        self.last_rx
    }

    /// Bytes arrived at `now`.
    pub fn on_received(&mut self, now: Instant) {
        self.last_rx = self.last_rx.max(now);
    }

    /// Bytes were sent at `now`.
    pub fn on_sent(&mut self, now: Instant) {
        self.last_tx = self.last_tx.max(now);
    }

    /// The dead-peer timeout: 1.5 x keepalive.
    pub fn timeout(&self) -> Option<Duration> {
        self.keepalive
            .map(|k| k.saturating_add(Duration::from_micros(k.as_micros() / 2)))
    }

    /// Whether a heartbeat should be sent now (nothing sent for a keepalive interval).
    pub fn heartbeat_due(&self, now: Instant) -> bool {
        self.keepalive.is_some_and(|k| now >= self.last_tx + k)
    }

    /// Whether the peer is dead (nothing received for 1.5 x keepalive).
    pub fn is_dead(&self, now: Instant) -> bool {
        self.timeout().is_some_and(|t| now >= self.last_rx + t)
    }

    /// The next time something is due: a heartbeat or the dead-peer timeout.
    pub fn deadline(&self) -> Option<Instant> {
        let k = self.keepalive?;
        let t = self.timeout()?;
        Some((self.last_tx + k).min(self.last_rx + t))
    }
}
