//! The one retry schedule of tether: exponential backoff with seeded jitter, a cap, and a
//! give-up rule. Every retry in the crate draws its waits from a [`Backoff`]: connection
//! attempts, feed init resends, reconnections of `main`, sync re-requests.
//!
//! tether draws no randomness of its own; the jitter comes from splitmix64 seeded by the
//! caller, so the same seed gives the same waits (deterministic tests and simulations), and
//! clients given different seeds do not retry in lockstep after a server restart.

use crate::rng::SplitMix64;
use crate::time::Duration;

/// The waits between tries: try `n` (1-based) waits `initial * 2^(n-1)`, capped at `max`,
/// less a random share of up to `jitter_percent` of it.
///
/// Jitter only shortens a wait, so the first wait is never longer than `initial`, and the
/// spread of N clients' waits after the same event covers up to `jitter_percent` of it.
///
/// ```
/// use tether::session::Backoff;
/// use tether::Duration;
/// let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(4), 0, 7);
/// let waits: Vec<u64> = (0..4).map(|_| b.next_delay().as_millis()).collect();
/// assert_eq!(waits, [1_000, 2_000, 4_000, 4_000]);
/// assert_eq!(b.tries(), 4);
/// b.reset();
/// assert_eq!(b.next_delay(), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter_percent: u8,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// A schedule starting at `initial`, doubling up to `max`, with up to `jitter_percent`
    /// (0 to 100) of each wait cut off at random, drawn from `seed`.
    pub fn new(initial: Duration, max: Duration, jitter_percent: u8, seed: u64) -> Self {
        Backoff {
            initial,
            max,
            jitter_percent: jitter_percent.min(100),
            attempt: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// The wait before the next try, counting it.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        self.wait(self.attempt)
    }

    /// The wait after try `n` (1-based), for machines that count their tries themselves:
    /// `initial * 2^(n-1)` capped at `max`, less the jitter (a fresh draw each call).
    pub fn wait(&mut self, n: u32) -> Duration {
        let factor = 1u64 << n.saturating_sub(1).min(32);
        let base = self.initial.saturating_mul(factor).min(self.max);
        let spread = u128::from(base.as_micros()) * u128::from(self.jitter_percent) / 100;
        // (spread * r) >> 64 is in [0, spread): a fraction of the spread, no division.
        let cut = (spread * u128::from(self.rng.next_u64())) >> 64;
        base.saturating_sub(Duration::from_micros(u64::try_from(cut).unwrap_or(0)))
    }

    /// Waits handed out since the last [`Backoff::reset`].
    pub fn tries(&self) -> u32 {
        self.attempt
    }

    /// Whether another try is allowed when at most `attempts` tries are (the first one
    /// included; 0 and 1 both mean "never try again").
    pub fn allows(&self, attempts: u32) -> bool {
        self.attempt.saturating_add(1) < attempts
    }

    /// Back to the first wait (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_without_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5), 0, 7);
        let got: [u64; 5] = core::array::from_fn(|_| b.next_delay().as_millis());
        assert_eq!(got, [1_000, 2_000, 4_000, 5_000, 5_000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_its_share_and_follows_the_seed() {
        let mut a = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 50, 42);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 50, 42);
        let mut c = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 50, 43);
        let mut differs = false;
        for i in 0..20u32 {
            let (x, y, z) = (a.next_delay(), b.next_delay(), c.next_delay());
            assert_eq!(x, y, "same seed, same delays");
            differs |= x != z;
            let base = Duration::from_secs(1)
                .saturating_mul(1 << i.min(32))
                .min(Duration::from_secs(60));
            assert!(
                x <= base && x >= Duration::from_micros(base.as_micros() / 2),
                "{x:?} vs {base:?}"
            );
        }
        assert!(differs, "another seed gives other delays");
    }

    #[test]
    fn allows_counts_the_first_try() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5), 0, 7);
        assert!(b.allows(2));
        b.next_delay();
        assert!(!b.allows(2));
        assert!(b.allows(3));
    }

    #[test]
    fn huge_attempt_counts_saturate() {
        let mut b = Backoff::new(Duration::MAX, Duration::MAX, 100, 1);
        for _ in 0..100 {
            let _ = b.next_delay();
        }
    }
}
