//! Continuity across restarts, whole-system, in the simulator (virtual time, seeded
//! network, token-merge profile, `Peer<MergeServer, _>` and `Peer<MergeClient, _>` over
//! `MemJournal`):
//!
//! - the restart matrix: the server and a client restart with their database, without it
//!   (a new, empty journal, with a new epoch or the same one), the server with an older
//!   copy of it, both at once; in every case each side ends with the union of entries,
//!   none applied twice, and the session resumes or starts afresh as the row says;
//! - a property: random interleavings of appends, cuts, restarts with and without the
//!   database and time passing converge to the union, nothing applied twice;
//! - the traffic of a late joiner (bytes each way, duplicates each way).
//!
//! The rows that fail on today's code are in [`KNOWN_FAILING`] with what goes wrong: they
//! run, and must still fail (a row that starts passing fails the test until it is moved
//! out of the list).
#![cfg(feature = "testkit")]

mod restarts_support;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use restarts_support::{store, Epoch, Problem, Restart, World};
use tether::connect::merge::Outcome;
use tether::sync::journal::{Continuity, SyncEvent};
use tether::testkit::Faults;
use tether::Duration;

// ---------------------------------------------------------------------------------------
// The restart matrix

/// What one side is told about the history of its peer when the session comes up after
/// the restart(s) ([`SyncEvent::Continuity`], once per session up, for every session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Told {
    /// The history continues: no mark held (a fresh session), resumed where we left off,
    /// or caught up from the mark.
    Continued,
    /// The peer's journal is not the one our mark names (another epoch, or the same epoch
    /// with other lines there): everything follows.
    Diverged,
    /// Our own journal lost what our mark covered (the session outlived it): the mark was
    /// dropped and everything follows.
    Rebuilt,
}

/// The continuity a sync event reports, if it is the continuity event.
fn continuity_of(event: &SyncEvent) -> Option<Told> {
    match event {
        SyncEvent::Continuity { continuity, .. } => Some(match continuity {
            Continuity::Start | Continuity::UpToDate { .. } | Continuity::CatchUp { .. } => {
                Told::Continued
            }
            Continuity::Diverged { .. } => Told::Diverged,
            Continuity::Rebuilt { .. } => Told::Rebuilt,
        }),
        _ => None,
    }
}

struct Row {
    name: &'static str,
    server: Restart,
    client0: Restart,
    /// The first connection outcome each client sees after the restart(s).
    client0_up: Outcome,
    /// `None`: client 1 is not disturbed (no `Up` at all).
    client1_up: Option<Outcome>,
    /// What client 0 is told about the server, and the server about the clients whose
    /// sessions came up again.
    told: (Told, Told),
}

const fn row(
    name: &'static str,
    server: Restart,
    client0: Restart,
    ups: (Outcome, Option<Outcome>),
    told: (Told, Told),
) -> Row {
    Row {
        name,
        server,
        client0,
        client0_up: ups.0,
        client1_up: ups.1,
        told,
    }
}

use Epoch::{New, Same};
use Outcome::{Fresh, Resumed};
use Restart::{JournalLost, No, Older, Wiped, WithDb};
use Told::{Continued, Diverged, Rebuilt};

const MATRIX: &[Row] = &[
    row(
        "server with db",
        WithDb,
        No,
        (Resumed, Some(Resumed)),
        (Continued, Continued),
    ),
    row(
        "server wiped, new epoch",
        Wiped(New),
        No,
        (Fresh, Some(Fresh)),
        (Continued, Continued),
    ),
    row(
        "server wiped, same epoch",
        Wiped(Same),
        No,
        (Fresh, Some(Fresh)),
        (Continued, Continued),
    ),
    row(
        "server older copy",
        Older,
        No,
        (Resumed, Some(Resumed)),
        (Continued, Continued),
    ),
    row(
        "server journal lost, sessions kept, new epoch",
        JournalLost(New),
        No,
        (Resumed, Some(Resumed)),
        (Diverged, Rebuilt),
    ),
    row(
        "server journal lost, sessions kept, same epoch",
        JournalLost(Same),
        No,
        (Resumed, Some(Resumed)),
        (Diverged, Rebuilt),
    ),
    row(
        "client with db",
        No,
        WithDb,
        (Resumed, None),
        (Continued, Continued),
    ),
    row(
        "client wiped, new epoch",
        No,
        Wiped(New),
        (Fresh, None),
        (Continued, Continued),
    ),
    row(
        "client wiped, same epoch",
        No,
        Wiped(Same),
        (Fresh, None),
        (Continued, Continued),
    ),
    row(
        "both with db",
        WithDb,
        WithDb,
        (Resumed, Some(Resumed)),
        (Continued, Continued),
    ),
    row(
        "both wiped, new epochs",
        Wiped(New),
        Wiped(New),
        (Fresh, Some(Fresh)),
        (Continued, Continued),
    ),
    row(
        "both wiped, same epochs",
        Wiped(Same),
        Wiped(Same),
        (Fresh, Some(Fresh)),
        (Continued, Continued),
    ),
    row(
        "server wiped (new epoch), client with db",
        Wiped(New),
        WithDb,
        (Fresh, Some(Fresh)),
        (Continued, Continued),
    ),
    row(
        "server wiped (same epoch), client with db",
        Wiped(Same),
        WithDb,
        (Fresh, Some(Fresh)),
        (Continued, Continued),
    ),
    row(
        "server with db, client wiped",
        WithDb,
        Wiped(New),
        (Fresh, Some(Resumed)),
        (Continued, Continued),
    ),
    row(
        "server older copy, client with db",
        Older,
        WithDb,
        (Resumed, Some(Resumed)),
        (Continued, Continued),
    ),
    row(
        "client journal lost, session kept, new epoch",
        No,
        JournalLost(New),
        (Resumed, None),
        (Rebuilt, Diverged),
    ),
    row(
        "client journal lost, session kept, same epoch",
        No,
        JournalLost(Same),
        (Resumed, None),
        (Rebuilt, Diverged),
    ),
];

/// A row that fails on today's code: how, and the symptoms its failures must show (each a
/// substring of one failure), so that a row failing in another way is noticed too.
struct Known {
    row: &'static str,
    how: &'static str,
    symptoms: &'static [&'static str],
}

/// The rows that fail on today's code. Each must still fail, with its symptoms; move a row
/// out once its fix lands.
const KNOWN_FAILING: &[Known] = &[];

/// Seeds each row runs with.
const SEEDS: [u64; 2] = [11, 12];

/// One row: a server and two clients sync 3 x 20 entries, and the transports are cut so
/// that the resync moves the marks; the server's database is saved (for the older-copy
/// rows); 3 x 20 more are synced (and cut again); 3 x 5 more are appended and in
/// flight when the restart(s) happen; then, before anyone reconnects, the server appends
/// 200 (more than the lines an older copy lacks, so a `since` from before the restart
/// names a line of the new history), client 0 as many, client 1 10. Then a perfect
/// network until settled.
fn run_row(row: &Row, seed: u64) -> (World, Vec<String>) {
    let mut w = World::new(seed, 2, Faults::none());
    w.run(Duration::from_secs(2));
    for node in 0..3 {
        w.append(node, 20);
    }
    w.run(Duration::from_secs(3));
    // Broadcasts do not move the confirmed marks; the resync after a cut does.
    w.cut_all();
    w.run(Duration::from_secs(5));
    w.checkpoint_server();
    for node in 0..3 {
        w.append(node, 20);
    }
    w.run(Duration::from_secs(3));
    w.cut_all();
    w.run(Duration::from_secs(5));
    for node in 0..3 {
        w.append(node, 5);
    }
    w.run(Duration::from_millis(2));
    w.restart_server(row.server);
    w.restart_client(0, row.client0);
    w.append(0, 200);
    w.append(1, 200);
    w.append(2, 10);
    w.settle(Duration::from_secs(120));

    let mut failures: Vec<String> = w.problems().iter().map(Problem::to_string).collect();
    for (k, want) in [(0usize, Some(row.client0_up)), (1, row.client1_up)] {
        let ups = &w.tracks[k + 1].ups;
        if ups.first() != want.as_ref() {
            failures.push(format!(
                "client{k}: first outcome after the restart {ups:?}, expected {want:?} first"
            ));
        }
    }
    for (index, want) in [(1usize, row.told.0), (0, row.told.1)] {
        let told: std::collections::BTreeSet<Told> = w.tracks[index]
            .sync_events
            .iter()
            .filter_map(continuity_of)
            .collect();
        // Every session that came up again was told, and each what the row says.
        if told.len() != 1 || !told.contains(&want) {
            failures.push(format!(
                "{}: told {told:?}, expected {want:?}",
                w.tracks[index].name
            ));
        }
    }
    (w, failures)
}

#[test]
fn restart_matrix() {
    let mut unexpected = Vec::new();
    for row in MATRIX {
        let known = KNOWN_FAILING.iter().find(|k| k.row == row.name);
        for seed in SEEDS {
            let (w, failures) = run_row(row, seed);
            let (s_epoch, s_head) = store::epoch_head(w.store_of(0));
            println!(
                "{:<48} seed {seed}: {} (server epoch {s_epoch} head {s_head}, {} expected, client0 ups {:?}, full resyncs c0 {} srv {})",
                row.name,
                if failures.is_empty() { "ok".to_string() } else { failures.join("; ") },
                w.expected.len(),
                w.tracks[1].ups,
                w.tracks[1].full_resyncs,
                w.tracks[0].full_resyncs,
            );
            match (known, failures.is_empty()) {
                (None, false) => unexpected.push(format!(
                    "{} (seed {seed}): {}",
                    row.name,
                    failures.join("; ")
                )),
                (Some(_), true) => unexpected.push(format!(
                    "{} (seed {seed}) passes now: move it out of KNOWN_FAILING",
                    row.name
                )),
                (Some(k), false) => {
                    for symptom in k.symptoms {
                        if !failures.iter().any(|f| f.contains(symptom)) {
                            unexpected.push(format!(
                                "{} (seed {seed}) fails otherwise than KNOWN_FAILING says \
                                 (no {symptom}; known: {}): {}",
                                row.name,
                                k.how,
                                failures.join("; ")
                            ));
                        }
                    }
                }
                (None, true) => {}
            }
        }
    }
    // Every known failure names a row of the matrix.
    for k in KNOWN_FAILING {
        assert!(MATRIX.iter().any(|r| r.name == k.row), "no row {:?}", k.row);
    }
    assert!(unexpected.is_empty(), "\n{}", unexpected.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Random interleavings

#[derive(Debug, Clone)]
enum Op {
    /// Node `node` (0: the server) appends `count` entries.
    Append { node: usize, count: usize },
    /// Client `client`'s transport is cut.
    Cut { client: usize },
    /// Node `node` restarts with its database.
    RestartWithDb { node: usize },
    /// Node `node` restarts wiped, with a new epoch.
    RestartWiped { node: usize },
    /// Time passes.
    Advance { millis: u64 },
}

const NODES: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..NODES, 1..12usize).prop_map(|(node, count)| Op::Append { node, count }),
        2 => (0..NODES - 1).prop_map(|client| Op::Cut { client }),
        1 => (0..NODES).prop_map(|node| Op::RestartWithDb { node }),
        1 => (0..NODES).prop_map(|node| Op::RestartWiped { node }),
        3 => (0..3_000u64).prop_map(|millis| Op::Advance { millis }),
    ]
}

/// A network that delays and splits (so that restarts and cuts fall mid-message), and
/// loses nothing but what the cuts and restarts lose.
fn network() -> Faults {
    Faults {
        latency: Duration::from_millis(3),
        jitter: Duration::from_millis(10),
        max_chunk: 200,
        ..Faults::none()
    }
}

fn interleaving(seed: u64, ops: &[Op]) -> Result<(), String> {
    let mut w = World::new(seed, NODES - 1, network());
    w.run(Duration::from_millis(500));
    for op in ops {
        match *op {
            Op::Append { node, count } => w.append(node, count),
            Op::Cut { client } => w.cut(client),
            Op::RestartWithDb { node: 0 } => w.restart_server(WithDb),
            Op::RestartWithDb { node } => w.restart_client(node - 1, WithDb),
            Op::RestartWiped { node: 0 } => w.restart_server(Wiped(New)),
            Op::RestartWiped { node } => w.restart_client(node - 1, Wiped(New)),
            Op::Advance { millis } => w.run(Duration::from_millis(millis)),
        }
    }
    w.settle(Duration::from_secs(120));
    let problems = w.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems
            .iter()
            .map(Problem::to_string)
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// 128 cases (about a second); `RESTARTS_CASES` for more.
fn cases() -> u32 {
    std::env::var("RESTARTS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        rng_seed: RngSeed::Fixed(0x7e57_0001),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Appends anywhere, cuts, restarts with and without the database (a new epoch), and
    /// time passing, in any order: everyone ends with the union of what survives, each
    /// entry applied once per database lifetime.
    #[test]
    fn random_restarts_converge_to_the_union_and_apply_once(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..24),
    ) {
        if let Err(e) = interleaving(seed, &ops) {
            prop_assert!(false, "{}", e);
        }
    }
}

// ---------------------------------------------------------------------------------------
// A late joiner's traffic

/// What a late joiner's first sync cost.
#[derive(Debug)]
struct Traffic {
    server_sent: u64,
    client_sent: u64,
    duplicates_at_server: u64,
    duplicates_at_client: u64,
    applied_at_client: u64,
}

fn late_joiner() -> (World, Traffic) {
    let mut w = World::new(21, 0, Faults::none());
    w.payload = vec![0x5a; 64];
    w.append(0, 3_000);
    let k = w.add_client();
    w.settle(Duration::from_secs(60));
    assert!(w.problems().is_empty(), "{:?}", w.problems());
    let server = w.server_peer();
    let duplicates_at_server = server
        .sessions()
        .filter_map(|(s, _)| server.sync(s))
        .map(|s| s.stats().duplicates)
        .sum();
    let client = w
        .client_peer(k)
        .sync(())
        .expect("the client's session")
        .stats();
    let traffic = Traffic {
        server_sent: w.sim.node(w.server).sent,
        client_sent: w.sim.node(w.clients[k]).sent,
        duplicates_at_server,
        duplicates_at_client: client.duplicates,
        applied_at_client: client.applied,
    };
    println!("late joiner of 3000 x 64-byte entries: {traffic:?}");
    (w, traffic)
}

/// A client that joins a server holding 3,000 entries learns each of them once.
#[test]
fn a_late_joiner_learns_everything_once() {
    let (w, t) = late_joiner();
    assert_eq!(w.keys(1).len(), 3_000);
    assert_eq!((t.applied_at_client, t.duplicates_at_client), (3_000, 0));
    // At least the entries themselves crossed (3,000 x 64 bytes of payload).
    assert!(t.server_sent > 3_000 * 64, "{t:?}");
}

/// A client that joins a server holding 3,000 entries learns them all once and sends none
/// of them back: its answer to the server's journal request is one held run, not its
/// journal (before the no-echo change: 251,396 bytes from the server, 251,419 from the
/// client, 3,000 duplicates at the server; after: 251,441 and 523, no duplicate).
#[test]
fn a_late_joiner_sends_nothing_back() {
    let (w, t) = late_joiner();
    assert_eq!(w.keys(1).len(), 3_000);
    assert_eq!((t.applied_at_client, t.duplicates_at_client), (3_000, 0));
    assert_eq!(
        t.duplicates_at_server, 0,
        "the client echoed the server's entries: {t:?}"
    );
    // The client's own journal is all the server's: what it sends is requests,
    // confirmations and acknowledgements, a small fraction of what it receives.
    assert!(t.client_sent * 20 < t.server_sent, "{t:?}");
}
