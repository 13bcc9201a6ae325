//! The one pseudo-random generator inside tether: splitmix64, always seeded by the caller.
//!
//! tether draws no randomness of its own. Where it needs numbers that merely look random
//! (reconnection jitter, the simulator's faults), they come from this generator and a seed
//! in the caller's configuration, so the same seed gives the same run. Never for secrets:
//! tokens come from the caller's cryptographic source.

/// splitmix64: tiny, fast, and good enough to spread timers and pick faults.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
