//! Runs arbitrary scenarios (appends, time, cuts, partitions, fault changes, clock jumps,
//! resyncs, formal disconnections) for a token-merge server and up to four client peers
//! through the simulator, with the model checks of `tether::testkit::scenario::run`: no
//! panic, connected peers agree on their session, bounded memory, and convergence with
//! nothing lost and nothing applied twice once the network calms down. Sizes are clamped
//! by `run` (at most 64 steps, 16 entries per append, 10 s per advance) so that one input
//! runs in milliseconds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::testkit::scenario::{self, Scenario};

fuzz_target!(|s: Scenario| {
    if let Err(v) = scenario::run(&s) {
        panic!("{v}\n{v:?}\n{s:?}");
    }
});
