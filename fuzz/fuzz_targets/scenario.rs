//! Runs arbitrary scenarios (appends, `feed` updates, time, cuts, partitions, fault
//! changes, clock jumps, resyncs, formal disconnections, kicks, reconnections) for a server
//! and up to four client peers over either connection profile (token-merge or
//! dual-channel, chosen by the input) through the simulator, with the model checks of
//! `tether::testkit::scenario::run`: no panic, connected peers agree on their session,
//! bounded memory, `feed` updates at most once and in order, and convergence with nothing
//! lost and nothing applied twice once the network calms down. Sizes are clamped by `run`
//! (at most 64 steps, 16 entries per append, 8 updates per step, 10 s per advance) so that
//! one input runs in milliseconds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::testkit::scenario::{self, Scenario};

fuzz_target!(|s: Scenario| {
    if let Err(v) = scenario::run(&s) {
        panic!("{v}\n{v:?}\n{s:?}");
    }
});
