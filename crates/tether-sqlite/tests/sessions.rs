//! `tether_sqlite::sessions`: a client and a server `Peer`, each on its own SQLite file,
//! killed and started again from it, in memory (no sockets). The driver saves the sessions
//! every round before delivering the round's bytes (`support::World::round`).

mod support;

use support::{Saving, Start, World};
use tether::connect::merge::{MergeClient, MergeClientCommand, MergeServer};
use tether::peer::PeerCommand;
use tether::session::{EndReason, Outcome};
use tether::sync::journal::{Continuity, JournalStore, Marks};
use tether::Duration;
use tether::Input;
use tether_sqlite::sessions::{DurableProfile, NotRestored};

/// A server and `clients` clients that synced 10 entries each, then were cut once, so that
/// the resync moved the marks, then appended 5 more each.
fn synced(name: &str, clients: usize) -> World {
    let mut w = World::new(name, clients);
    w.run(Duration::from_secs(2));
    for node in 0..=clients {
        w.append(node, 10);
    }
    w.run(Duration::from_secs(3));
    // Broadcasts do not move the confirmed marks; the resync after a restart of the link
    // does. A cut of every link: the server's process restarts with its file.
    w.restart_server(Start::WithFile);
    w.run(Duration::from_secs(10));
    assert!(w.converged(), "synced before the test");
    for node in 0..=clients {
        w.append(node, 5);
    }
    w.run(Duration::from_secs(3));
    assert!(w.converged(), "synced before the test");
    w.clear_events();
    w
}

/// No node applied an entry twice since its last start, and every journal is the same.
fn assert_settled(w: &World) {
    assert!(w.converged(), "journals differ");
    for (name, applied) in std::iter::once((&w.server.name, w.server.applied()))
        .chain(w.clients.iter().map(|c| (&c.name, c.applied())))
    {
        assert!(
            applied.values().all(|&n| n == 1),
            "{name} applied twice: {applied:?}"
        );
    }
}

#[test]
fn a_client_restarted_from_its_file_resumes_its_session_with_its_marks() {
    let mut w = synced("client-restart", 1);
    let marks = w.clients[0].peer.marks(()).expect("the client's session");
    assert!(marks.ours.is_some() && marks.theirs.is_some(), "{marks:?}");
    assert_eq!(w.clients[0].rows(), 1);

    let restored = w.restart_client(0, Start::WithFile);
    assert_eq!(restored.sessions, [()]);
    assert!(restored.dropped.is_empty());
    // The restored session holds the marks it had when the process died.
    assert_eq!(w.clients[0].peer.marks(()), Some(marks));

    w.append(0, 7); // the server goes on while the client is away
    w.run(Duration::from_secs(10));
    assert_eq!(w.clients[0].ups(), [Outcome::Resumed]);
    assert!(w.clients[0].ended().is_empty());
    assert!(w.server.ended().is_empty());
    // Each side catches up from its mark: the client on the server's 7 entries, the server
    // on the client's journal, which grew by those same entries (they come back as held
    // runs, not as entries).
    assert_eq!(
        w.clients[0].continuity(),
        [Continuity::CatchUp {
            mark: marks.ours.unwrap()
        }]
    );
    let epoch = w.clients[0].peer.store().epoch();
    let told = w.server.continuity();
    assert!(
        matches!(told[..], [Continuity::CatchUp { mark }] if mark.epoch == epoch),
        "{told:?}"
    );
    assert_eq!(w.clients[0].applied().len(), 7);
    assert_settled(&w);
}

#[test]
fn a_server_restarted_from_its_file_resumes_every_session_with_its_marks() {
    let mut w = synced("server-restart", 2);
    let before: Vec<Marks> = w
        .server
        .peer
        .sessions()
        .filter_map(|(s, _)| w.server.peer.marks(s))
        .collect();
    assert_eq!(before.len(), 2);
    assert_eq!(w.server.rows(), 2);

    let restored = w.restart_server(Start::WithFile);
    assert_eq!(restored.sessions.len(), 2);
    assert!(restored.dropped.is_empty());
    let mut after: Vec<Marks> = restored
        .sessions
        .iter()
        .filter_map(|&s| w.server.peer.marks(s))
        .collect();
    let mut before = before;
    before.sort_by_key(|m| format!("{m:?}"));
    after.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(after, before, "the marks came back with the sessions");

    w.append(1, 3);
    w.run(Duration::from_secs(10));
    for c in &w.clients {
        assert_eq!(c.ups(), [Outcome::Resumed], "{}", c.name);
        assert!(matches!(c.continuity()[..], [Continuity::UpToDate { .. }]));
    }
    // Client 0 appended while the server was away: the server catches up from its mark.
    let told = w.server.continuity();
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told.iter().any(|c| matches!(c, Continuity::CatchUp { .. })));
    assert!(w.server.ended().is_empty());
    assert_settled(&w);
    assert_eq!(w.server.rows(), 2);
}

/// The rule, shown by breaking it: a client that writes its snapshot only when a session
/// comes up or goes down restarts with delivery counters behind what the server saw. The
/// session ends as `Diverged` on both sides and the client starts a fresh one: nothing is
/// lost or applied twice, but the session is not resumed.
#[test]
fn saving_only_on_events_costs_the_session_on_restart() {
    let mut w = synced("on-events", 1);
    w.clients[0].saving = Saving::OnEvents;
    w.append(0, 5);
    w.append(1, 5);
    w.run(Duration::from_secs(5));
    let restored = w.restart_client(0, Start::WithFile);
    assert_eq!(restored.sessions, [()]);
    w.run(Duration::from_secs(20));
    assert_eq!(w.clients[0].ended(), [EndReason::Diverged]);
    assert_eq!(w.server.ended(), [EndReason::Diverged]);
    assert_eq!(w.clients[0].ups().last(), Some(&Outcome::Fresh));
    assert!(w.clients[0].ups().len() <= 2, "{:?}", w.clients[0].ups());
    assert!(w.converged());
}

/// A server that lost its file: the client's resumption is refused, its session ends
/// (`Expired`: the server no longer knows it) and a fresh one replaces it, whose snapshot
/// takes the old one's row; the server's file holds the new session's.
#[test]
fn a_server_wiped_gives_its_clients_fresh_sessions_and_the_rows_follow() {
    let mut w = synced("server-wiped", 1);
    let restored = w.restart_server(Start::Wiped);
    assert!(restored.sessions.is_empty());
    assert_eq!(w.server.rows(), 0);
    w.run(Duration::from_secs(10));
    assert_eq!(w.clients[0].ended(), [EndReason::Expired]);
    assert_eq!(w.clients[0].ups(), [Outcome::Fresh]);
    assert_eq!(w.clients[0].continuity(), [Continuity::Start]);
    assert_eq!(w.server.continuity(), [Continuity::Start]);
    assert_settled(&w);
    assert_eq!((w.server.rows(), w.clients[0].rows()), (1, 1));
}

/// A server restarted from an older copy of its file: the sessions resume, then end as
/// `Diverged` (the copy's counters are behind), and the clients start fresh sessions.
#[test]
fn a_server_restarted_from_an_older_copy_ends_its_sessions_and_they_start_fresh() {
    let mut w = synced("older-copy", 1);
    w.copy_file(0);
    w.append(0, 5);
    w.append(1, 5);
    w.run(Duration::from_secs(5));
    let restored = w.restart_server(Start::OlderCopy);
    assert_eq!(restored.sessions.len(), 1);
    w.run(Duration::from_secs(20));
    assert_eq!(w.clients[0].ended(), [EndReason::Diverged]);
    assert_eq!(w.clients[0].ups(), [Outcome::Resumed, Outcome::Fresh]);
    assert_eq!(w.server.ended(), [EndReason::Diverged]);
    assert_settled(&w);
    // The old session's row is gone; the fresh one's is there.
    assert_eq!(w.server.rows(), 1);
}

/// A client that ends its session formally: both files drop its row.
#[test]
fn an_ended_session_leaves_the_files() {
    let mut w = synced("ended", 1);
    assert_eq!((w.server.rows(), w.clients[0].rows()), (1, 1));
    let now = w.now;
    w.clients[0].input(
        now,
        Input::Command(PeerCommand::Connection(MergeClientCommand::Disconnect)),
    );
    w.run(Duration::from_secs(5));
    assert_eq!(w.clients[0].ended(), [EndReason::LocalDisconnect]);
    assert_eq!((w.server.rows(), w.clients[0].rows()), (0, 0));
}

/// A session ended formally leaves a tombstone that the server's file keeps beside the
/// sessions: a server restarted from its file still knows the session ended (a late
/// `RESUME` of it is told so, and an older copy of it is not imported).
#[test]
fn a_restarted_server_still_knows_which_sessions_ended() {
    let mut w = synced("tombstones", 1);
    let now = w.now;
    w.clients[0].input(
        now,
        Input::Command(PeerCommand::Connection(MergeClientCommand::Disconnect)),
    );
    w.run(Duration::from_secs(5));
    assert_eq!(w.server.ended(), [EndReason::PeerDisconnect]);
    let key = <MergeServer<support::Tokens>>::BESIDE_KEY.unwrap();
    assert!(w.server.peer.store().get_state(key).unwrap().is_some());
    w.restart_server(Start::WithFile);
    let now = w.now;
    let ended = w.server.peer.connection().export_ended(now);
    assert_eq!(ended.tombstones.len(), 1, "the tombstone came back");
    // Before, the restarted server had forgotten it.
    w.server.peer.store_mut().remove_state(key).unwrap();
    w.restart_server(Start::WithFile);
    let now = w.now;
    assert!(w
        .server
        .peer
        .connection()
        .export_ended(now)
        .tombstones
        .is_empty());
}

/// A row that is not a snapshot is dropped and reported; the client starts a fresh
/// session (its request for a transport is handed back in `pending`).
#[test]
fn an_unreadable_snapshot_is_dropped_and_the_client_starts_fresh() {
    let mut w = synced("unreadable", 1);
    w.clients[0]
        .peer
        .store_mut()
        .put_state(MergeClient::KEY_PREFIX, b"not a snapshot")
        .unwrap();
    let restored = w.restart_client(0, Start::WithFile);
    assert!(restored.sessions.is_empty());
    assert!(matches!(
        restored.dropped[..],
        [(ref key, NotRestored::Decode(_))] if key == MergeClient::KEY_PREFIX
    ));
    assert_eq!(w.clients[0].rows(), 0, "the row is removed");
    w.run(Duration::from_secs(10));
    assert_eq!(w.clients[0].ups(), [Outcome::Fresh]);
    assert!(w.converged());
    assert_eq!(w.clients[0].rows(), 1);
}

/// The server's keys are stable across restarts: the same rows before and after.
#[test]
fn a_server_keys_its_rows_by_something_every_process_agrees_on() {
    let mut w = synced("keys", 2);
    let keys = |w: &World| {
        w.server
            .peer
            .store()
            .states_with_prefix(<MergeServer<support::Tokens>>::KEY_PREFIX)
            .unwrap()
            .into_keys()
            .collect::<Vec<_>>()
    };
    let before = keys(&w);
    assert_eq!(before.len(), 2);
    w.restart_server(Start::WithFile);
    w.run(Duration::from_secs(10));
    assert_eq!(keys(&w), before);
}

/// README's "Durable peers" code is the crate docs' doctest (its visible lines), so that
/// the README shows code that compiles and runs.
#[test]
fn the_readme_shows_the_doctest() {
    let lib = include_str!("../src/lib.rs");
    let readme = include_str!("../../../README.md");
    let doc: Vec<&str> = lib
        .lines()
        .skip_while(|l| *l != "//! # The shortest program: a durable peer")
        .skip_while(|l| *l != "//! ```")
        .skip(1)
        .take_while(|l| *l != "//! ```")
        .map(|l| {
            l.strip_prefix("//! ")
                .unwrap_or(l.trim_start_matches("//!"))
        })
        .filter(|l| !(l.starts_with("# ") || *l == "#"))
        .collect();
    let shown: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != "## Durable peers")
        .skip_while(|l| *l != "```rust")
        .skip(1)
        .take_while(|l| *l != "```")
        .collect();
    assert!(!doc.is_empty());
    assert_eq!(
        shown, doc,
        "README's Durable peers code differs from the doctest in src/lib.rs"
    );
}
