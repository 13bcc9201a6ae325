//! Model tests (issue 7, part 4): proptest generates scenarios (appends, `feed` updates,
//! time, cuts, partitions, fault changes, clock jumps, resyncs, formal disconnections, kicks,
//! reconnections) for a server and up to four client peers over each connection profile
//! (token-merge and dual-channel, the same step vocabulary for both), and
//! `testkit::scenario::run` drives each through the simulator, checking after every step
//! that nothing panics, that connected peers agree on their session, that memory stays
//! bounded, that `feed` updates arrive at most once and in order, and, once the network
//! calms down, that every live peer converges with nothing lost and nothing applied twice.
//!
//! The normal run tries a few thousand scenarios, over a thousand per profile. For a long
//! run set `TETHER_MODEL_CASES` (split between the profiles and lengths, e.g.
//! `TETHER_MODEL_CASES=1000000 cargo test --release --all-features --test model`); every
//! run prints how many scenarios and steps it checked per profile.
#![cfg(feature = "testkit")]

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant as WallClock;
use tether::testkit::scenario::{run, Profile, Report, Scenario, Step, Violation, Who};
use tether::testkit::Faults;
use tether::Duration;

fn faults() -> impl Strategy<Value = Faults> {
    prop_oneof![
        Just(Faults::none()),
        Just(Faults::rough()),
        (0u64..50, 0u64..50, 0u32..100_000, 0u16..32).prop_map(|(lat, jit, cut, chunk)| Faults {
            latency: Duration::from_millis(lat),
            jitter: Duration::from_millis(jit),
            loss_per_million: 0,
            duplicate_per_million: 0,
            cut_per_million: cut,
            max_chunk: chunk,
        }),
    ]
}

/// One step. Appends and time dominate; the violent steps are rarer, so that scenarios
/// have something to sync while the network misbehaves.
fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (any::<u8>(), 1u8..8).prop_map(|(node, count)| Step::Append { node, count }),
        2 => (any::<u8>(), 0u8..4).prop_map(|(node, key)| Step::AppendShared { node, key }),
        6 => prop_oneof![0u16..300, 300u16..3_000, 3_000u16..10_000]
            .prop_map(|millis| Step::Advance { millis }),
        2 => any::<u8>().prop_map(|client| Step::Cut { client }),
        1 => any::<u8>().prop_map(|client| Step::Partition { client }),
        1 => any::<u8>().prop_map(|client| Step::Heal { client }),
        1 => Just(Step::HealAll),
        2 => faults().prop_map(Step::SetFaults),
        1 => Just(Step::Calm),
        1 => (any::<u8>(), -60_000i32..60_000).prop_map(|(node, millis)| Step::JumpClock { node, millis }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(node, session)| Step::Resync { node, session }),
        1 => prop_oneof![
            any::<u8>().prop_map(|client| Step::Disconnect { client }),
            any::<u8>().prop_map(|client| Step::Kick { client }),
        ],
        // Dual only (nothing under token-merge): feed updates, feed cuts, reconnections.
        3 => (any::<u8>(), any::<u8>(), 1u8..5)
            .prop_map(|(node, session, count)| Step::Update { node, session, count }),
        1 => any::<u8>().prop_map(|client| Step::CutFeed { client }),
        1 => any::<u8>().prop_map(|client| Step::Connect { client }),
    ]
}

/// The dual-channel profile, under both `feed` loss policies.
fn dual() -> impl Strategy<Value = Profile> {
    any::<bool>().prop_map(|reinit_feed| Profile::Dual { reinit_feed })
}

fn scenario(
    profile: impl Strategy<Value = Profile>,
    max_steps: usize,
) -> impl Strategy<Value = Scenario> {
    (
        any::<u64>(),
        1u8..=4,
        profile,
        prop::collection::vec(step(), 0..max_steps),
    )
        .prop_map(|(seed, clients, profile, steps)| Scenario {
            seed,
            clients,
            profile,
            steps,
        })
}

/// Cases for this run: `TETHER_MODEL_CASES` if set (split between the tests that read it),
/// else `default`.
fn cases(default: u32, share: u32) -> u32 {
    std::env::var("TETHER_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(default, |n| (n / share).max(1))
}

/// Runs `cases` scenarios from `strategy` and prints the figures.
fn check_many(name: &str, cases: u32, strategy: impl Strategy<Value = Scenario>) {
    let scenarios = AtomicU64::new(0);
    let steps = AtomicU64::new(0);
    let delivered = AtomicU64::new(0);
    let entries = AtomicU64::new(0);
    let updates = AtomicU64::new(0);
    let updates_in = AtomicU64::new(0);
    let closes = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let started = WallClock::now();
    let result = runner.run(&strategy, |s| {
        let report: Report = run(&s).map_err(|v| TestCaseError::fail(format!("{v}\n{v:?}")))?;
        scenarios.fetch_add(1, Ordering::Relaxed);
        steps.fetch_add(report.steps as u64, Ordering::Relaxed);
        delivered.fetch_add(report.delivered, Ordering::Relaxed);
        entries.fetch_add(report.entries as u64, Ordering::Relaxed);
        updates.fetch_add(report.updates_sent, Ordering::Relaxed);
        updates_in.fetch_add(report.updates_delivered, Ordering::Relaxed);
        closes.fetch_add(report.closes, Ordering::Relaxed);
        Ok(())
    });
    let secs = started.elapsed().as_secs_f64();
    let n = scenarios.load(Ordering::Relaxed);
    println!(
        "{name}: {n} scenarios, {} steps, {} entries, {} feed updates sent ({} delivered), {} closes reconnected, {} inputs delivered in {secs:.1} s ({:.0} scenarios/s)",
        steps.load(Ordering::Relaxed),
        entries.load(Ordering::Relaxed),
        updates.load(Ordering::Relaxed),
        updates_in.load(Ordering::Relaxed),
        closes.load(Ordering::Relaxed),
        delivered.load(Ordering::Relaxed),
        n as f64 / secs.max(1e-9),
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

#[test]
fn merge_short_scenarios_keep_every_promise() {
    check_many(
        "merge short",
        cases(1500, 4),
        scenario(Just(Profile::Merge), 12),
    );
}

#[test]
fn merge_long_scenarios_keep_every_promise() {
    check_many(
        "merge long",
        cases(400, 4),
        scenario(Just(Profile::Merge), 48),
    );
}

#[test]
fn dual_short_scenarios_keep_every_promise() {
    check_many("dual short", cases(1000, 4), scenario(dual(), 12));
}

#[test]
fn dual_long_scenarios_keep_every_promise() {
    check_many("dual long", cases(250, 4), scenario(dual(), 48));
}

const PROFILES: [Profile; 3] = [
    Profile::Merge,
    Profile::Dual { reinit_feed: false },
    Profile::Dual { reinit_feed: true },
];

/// A scenario with every kind of step, written out, under each profile: it must converge,
/// and its report must count what happened.
#[test]
fn every_kind_of_step_in_one_scenario() {
    for profile in PROFILES {
        let s = Scenario {
            seed: 11,
            clients: 3,
            profile,
            steps: vec![
                Step::Append { node: 0, count: 5 },
                Step::Append { node: 1, count: 5 },
                Step::AppendShared { node: 2, key: 1 },
                Step::AppendShared { node: 3, key: 1 },
                Step::Advance { millis: 50 },
                Step::Update {
                    node: 1,
                    session: 0,
                    count: 3,
                },
                Step::Update {
                    node: 0,
                    session: 2,
                    count: 3,
                },
                Step::SetFaults(Faults::rough()),
                Step::Append { node: 2, count: 7 },
                Step::Cut { client: 0 },
                Step::CutFeed { client: 1 },
                Step::Advance { millis: 2_000 },
                Step::Partition { client: 1 },
                Step::JumpClock {
                    node: 3,
                    millis: -5_000,
                },
                Step::Append { node: 2, count: 3 },
                Step::Advance { millis: 5_000 },
                Step::Resync {
                    node: 0,
                    session: 1,
                },
                Step::Resync {
                    node: 1,
                    session: 0,
                },
                Step::Heal { client: 1 },
                Step::Kick { client: 2 },
                Step::Connect { client: 1 },
                Step::Calm,
                Step::Advance { millis: 3_000 },
                Step::HealAll,
            ],
        };
        let report = run(&s).unwrap_or_else(|v| panic!("{profile:?}: {v}\n{v:?}"));
        assert_eq!(report.steps, 24);
        // 5 + 5 + 7 + 3 own entries, and one shared key appended twice.
        assert_eq!(report.entries, 21);
        assert!(report.cuts >= 1);
        assert!(report.converged_entries >= 20 - 7 - 3);
        match profile {
            Profile::Merge => {
                assert_eq!(report.live_clients, 2, "client 2 was kicked");
                assert_eq!(report.updates_sent, 0, "token-merge has no feed");
            }
            Profile::Dual { .. } => {
                // A kicked dual client starts a fresh session: it is still alive.
                assert_eq!(report.live_clients, 3, "{profile:?}");
                // On a perfect network, both bursts arrived whole; so did the calm phase's
                // updates, from each client and to each (the server may also have sent to
                // sessions left behind, which nobody receives).
                assert!(report.updates_delivered >= 6 + 2 * 3, "{report:?}");
                assert!(report.updates_sent >= report.updates_delivered);
            }
        }
    }
}

/// A partition longer than the server's session grace, under each profile: the session
/// expires, the client comes back as a fresh session (token-merge: from its old token;
/// dual: after closing, connected again by its application) and still converges with
/// nothing applied twice.
#[test]
fn a_session_that_expires_during_a_partition_converges_fresh() {
    for profile in PROFILES {
        let s = Scenario {
            seed: 3,
            clients: 2,
            profile,
            steps: vec![
                Step::Append { node: 1, count: 4 },
                Step::Append { node: 0, count: 4 },
                Step::Advance { millis: 1_000 },
                Step::Partition { client: 0 },
                Step::Append { node: 1, count: 4 },
                Step::Append { node: 2, count: 4 },
                Step::Advance { millis: 10_000 },
                Step::Advance { millis: 10_000 },
                Step::Advance { millis: 10_000 },
                Step::HealAll,
                Step::Advance { millis: 10_000 },
            ],
        };
        let report = run(&s).unwrap_or_else(|v| panic!("{profile:?}: {v}\n{v:?}"));
        assert_eq!(report.converged_entries, 16, "{profile:?}");
        assert_eq!(report.live_clients, 2, "{profile:?}");
        if profile != Profile::Merge {
            assert!(
                report.closes >= 1,
                "{profile:?}: the partitioned client gave up"
            );
        }
    }
}

/// Dual: updates in both directions on a perfect network all arrive, exactly once; on a
/// lossy, duplicating, reordering one, whatever arrives is checked by the model (at most
/// once, in order per sender and session).
#[test]
fn dual_feed_updates_arrive_once_and_in_order() {
    for reinit_feed in [false, true] {
        let clean = Scenario {
            seed: 5,
            clients: 2,
            profile: Profile::Dual { reinit_feed },
            steps: vec![
                Step::Advance { millis: 1_000 },
                Step::Update {
                    node: 1,
                    session: 0,
                    count: 8,
                },
                Step::Update {
                    node: 0,
                    session: 1,
                    count: 8,
                },
                Step::Update {
                    node: 2,
                    session: 0,
                    count: 8,
                },
                Step::Advance { millis: 1_000 },
            ],
        };
        let report = run(&clean).unwrap_or_else(|v| panic!("{v}\n{v:?}"));
        // 24 in the steps, then one each way per client in the calm phase's check.
        assert_eq!(report.updates_sent, 28);
        assert_eq!(report.updates_delivered, 28);
        assert_eq!(report.closes, 0, "nothing disturbed the clients");
        let mut steps = vec![Step::SetFaults(Faults {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(50),
            loss_per_million: 100_000,
            duplicate_per_million: 300_000,
            cut_per_million: 0,
            max_chunk: 0,
        })];
        for i in 0..20u8 {
            steps.push(Step::Update {
                node: i % 3,
                session: i,
                count: 8,
            });
            steps.push(Step::Advance { millis: 20 });
        }
        let rough = Scenario {
            seed: 6,
            clients: 2,
            profile: Profile::Dual { reinit_feed },
            steps,
        };
        let report = run(&rough).unwrap_or_else(|v| panic!("{v}\n{v:?}"));
        assert!(report.updates_delivered > 0);
        assert!(
            report.updates_delivered < report.updates_sent,
            "some were lost"
        );
    }
}

/// Violations read as bug reports: which invariant, which node, what was expected.
#[test]
fn violations_name_the_invariant_the_node_and_the_step() {
    let v = Violation::AppliedTwice {
        step: 4,
        node: Who::Client(1),
        key: ("server".into(), "r3".into()),
        count: 2,
    };
    assert_eq!(
        v.to_string(),
        "step 4: client1 applied (\"server\", \"r3\") 2 times"
    );
    let v = Violation::Unbounded {
        step: 9,
        node: Who::Server,
        what: "sessions",
        value: 5,
        bound: 4,
    };
    assert_eq!(v.to_string(), "step 9: server: sessions is 5, bound 4");
    let v = Violation::UpdateReordered {
        step: 3,
        node: Who::Server,
        from: Who::Client(0),
        counter: 4,
        newest: 6,
    };
    assert_eq!(
        v.to_string(),
        "step 3: server received update 4 from client0 after the newer 6"
    );
}

/// The fuzz target's path: scenarios built by `arbitrary` from random bytes (either
/// profile) run with the same checks.
#[cfg(feature = "arbitrary")]
#[test]
fn arbitrary_scenarios_keep_every_promise() {
    use arbitrary::{Arbitrary, Unstructured};
    let mut runner = TestRunner::new(Config {
        cases: cases(200, 10),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
            let Ok(s) = Scenario::arbitrary(&mut Unstructured::new(&bytes)) else {
                return Ok(());
            };
            run(&s).map_err(|v| TestCaseError::fail(format!("{v}\n{v:?}\n{s:?}")))?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Regression (found by this model): a client peer left alone after `Peer::new` must
/// connect. The connection's first output (`Open`) used to stay inside the peer until some
/// input arrived, and the peer asked for no timeout, so a driver never woke it: the
/// empty scenario never connected.
#[test]
fn regression_a_fresh_client_peer_connects_without_any_input() {
    for profile in PROFILES {
        for clients in 1..=4 {
            let s = Scenario {
                seed: 0,
                clients,
                profile,
                steps: vec![],
            };
            let report = run(&s).unwrap_or_else(|v| panic!("{profile:?}: {v}\n{v:?}"));
            assert_eq!(report.live_clients, usize::from(clients));
        }
    }
}

/// Regression (found by this model): a dual client refused while connected (here: kicked
/// by the server) goes back to `Backoff` and reports only `AttemptFailed`, which the
/// peer's dual-client profile passed through as an ordinary event: the peer kept saying
/// its session was up (and kept syncing into the void) while the connection had no
/// `main`. `AttemptFailed` now takes the session down.
#[test]
fn regression_a_kicked_dual_client_peer_takes_its_session_down() {
    for reinit_feed in [false, true] {
        let s = Scenario {
            seed: 0,
            clients: 1,
            profile: Profile::Dual { reinit_feed },
            steps: vec![
                Step::Advance { millis: 6 },
                Step::Kick { client: 0 },
                Step::Append { node: 0, count: 1 },
            ],
        };
        let report = run(&s).unwrap_or_else(|v| panic!("{v}\n{v:?}"));
        assert_eq!(report.live_clients, 1);
        assert_eq!(report.converged_entries, 1);
    }
}
