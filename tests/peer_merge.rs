//! The composed peer over the token-merge profile, in the simulator: entries appended on
//! both sides while the network misbehaves arrive everywhere exactly once.
#![cfg(feature = "testkit")]

mod peer_common;

use peer_common::{append, applied, keys};
use tether::connect::merge::{self, MergeClient, MergeServer};
use tether::peer::{Peer, PeerEvent};
use tether::sync::journal::MemJournal;
use tether::testkit::scenario::sync_config;
use tether::testkit::{Either, Faults, NodeId, SeqTokens, Sim};
use tether::{Channel, Duration, Token};

type Node = peer_common::Node<MergeClient, MergeServer<SeqTokens>>;

struct World {
    sim: Sim<Node>,
    server: NodeId,
    clients: Vec<NodeId>,
}

fn world(seed: u64, clients: usize, faults: Faults) -> World {
    let mut sim = Sim::new(seed, faults);
    let server_peer = Peer::new(
        MergeServer::new(
            merge::MergeServerConfig {
                resume_grace: Duration::from_secs(3600),
                ..Default::default()
            },
            SeqTokens::new(seed),
        ),
        sync_config(),
        MemJournal::new(1, 100_000),
    );
    let server = sim.add_node(Either::Right(server_peer));
    let mut ids = Vec::new();
    for i in 0..clients {
        let mut local = [0u8; 16];
        local[..8].copy_from_slice(&(seed ^ (i as u64 + 1)).to_be_bytes());
        local[8] = i as u8;
        let client = MergeClient::new(
            sim.now(),
            merge::MergeClientConfig {
                jitter_seed: seed + i as u64,
                give_up_after: Duration::from_secs(3600),
                ..Default::default()
            },
            Token::new(&local).unwrap(),
        )
        .unwrap();
        let peer = Peer::new(
            client,
            sync_config(),
            MemJournal::new(100 + i as u64, 100_000),
        );
        let id = sim.add_node(Either::Left(peer));
        sim.route(id, Channel::Main, server);
        ids.push(id);
    }
    World {
        sim,
        server,
        clients: ids,
    }
}

#[test]
fn one_client_connects_and_both_journals_meet() {
    let mut w = world(1, 1, Faults::none());
    let c = w.clients[0];
    w.sim.run_for(Duration::from_secs(2));
    append(&mut w.sim, c, "client", 1);
    append(&mut w.sim, w.server, "server", 1);
    w.sim.run_for(Duration::from_secs(5));
    assert_eq!(keys(&w.sim, c).len(), 2);
    assert_eq!(keys(&w.sim, c), keys(&w.sim, w.server));
    let connected = w
        .sim
        .take_events(c)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Either::Left(PeerEvent::Connection(merge::MergeClientEvent::Up {
                    session: (),
                    outcome: merge::Outcome::Fresh
                }))
            )
        })
        .count();
    assert_eq!(connected, 1);
}

#[test]
fn a_cut_in_the_middle_resumes_and_resyncs_with_nothing_lost_or_doubled() {
    let mut w = world(2, 1, Faults::none());
    let c = w.clients[0];
    w.sim.run_for(Duration::from_secs(2));
    for i in 0..300 {
        append(&mut w.sim, c, "client", i);
        append(&mut w.sim, w.server, "server", i);
    }
    // Let the sync start, then cut main in the middle of it.
    // Step until the client has applied some of the server's entries, not all.
    let mut before_cut = Vec::new();
    let limit = w.sim.now() + Duration::from_secs(5);
    while applied(&before_cut).is_empty() && w.sim.step_before(limit) {
        before_cut.extend(w.sim.take_events(c));
    }
    let applied_before = applied(&before_cut).len();
    assert!(
        0 < applied_before && applied_before < 300,
        "the cut falls in the middle of the sync ({applied_before} of 300 applied)"
    );
    w.sim.cut(c, Channel::Main);
    for i in 300..400 {
        append(&mut w.sim, c, "client", i);
        append(&mut w.sim, w.server, "server", i);
    }
    w.sim.run_for(Duration::from_secs(30));
    let mut client_events = before_cut;
    client_events.extend(w.sim.take_events(c));
    let resumed = client_events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Either::Left(PeerEvent::Connection(merge::MergeClientEvent::Up {
                    session: (),
                    outcome: merge::Outcome::Resumed
                }))
            )
        })
        .count();
    assert_eq!(resumed, 1, "the session resumed");
    assert_eq!(keys(&w.sim, c).len(), 800);
    assert_eq!(keys(&w.sim, c), keys(&w.sim, w.server));
    let counts = applied(&client_events);
    assert_eq!(
        counts.len(),
        400,
        "every server entry applied on the client"
    );
    assert!(counts.values().all(|&n| n == 1), "none applied twice");
    let server_counts = applied(&w.sim.take_events(w.server));
    assert_eq!(server_counts.len(), 400);
    assert!(server_counts.values().all(|&n| n == 1));
}

#[test]
fn many_clients_on_a_rough_network_converge_once_it_calms_down() {
    for seed in 0..6 {
        let mut w = world(100 + seed, 4, Faults::rough());
        for round in 0..20 {
            let n = round;
            for (k, &c) in w.clients.clone().iter().enumerate() {
                append(&mut w.sim, c, &format!("client{k}"), n);
            }
            append(&mut w.sim, w.server, "server", n);
            if round % 5 == 2 {
                let victim = w.clients[round % w.clients.len()];
                w.sim.partition(victim, w.server);
                w.sim.run_for(Duration::from_millis(500));
                w.sim.heal_all();
            }
            w.sim.run_for(Duration::from_millis(200));
        }
        w.sim.set_faults(Faults::none());
        w.sim.run_for(Duration::from_secs(120));
        let server_keys = keys(&w.sim, w.server);
        assert_eq!(
            server_keys.len(),
            20 * 5,
            "seed {seed}: server has everything"
        );
        for &c in &w.clients {
            assert_eq!(
                keys(&w.sim, c),
                server_keys,
                "seed {seed}: client {c:?} converged"
            );
            let counts = applied(&w.sim.take_events(c));
            assert!(
                counts.values().all(|&n| n == 1),
                "seed {seed}: none applied twice"
            );
        }
    }
}

/// Appending an (author, resource) the journal already holds used to return `Ok(())` and do
/// nothing: a client that lost its disk and restarted under the same name lost every new
/// line silently. It is now a typed error, and the journal is unchanged.
#[test]
fn appending_an_entry_the_journal_holds_is_a_typed_error() {
    use tether::peer::{PeerCommand, PeerError};
    use tether::sync::journal::{JournalStore, StoreError};
    use tether::wire::Entry;
    use tether::{Input, Instant, Machine};
    let conn = MergeClient::new(
        Instant::ZERO,
        Default::default(),
        Token::new(&[7; 16]).unwrap(),
    )
    .unwrap();
    let mut peer = Peer::new(conn, sync_config(), MemJournal::new(1, 100));
    let e = Entry::new(b"me", b"r1", b"first");
    let append = |e: &Entry| Input::Command(PeerCommand::Append(e.clone()));
    peer.handle_input(Instant::ZERO, append(&e)).unwrap();
    let again = Entry::new(b"me", b"r1", b"second");
    match peer.handle_input(Instant::ZERO, append(&again)) {
        Err(PeerError::Store(StoreError::Duplicate)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(peer.store().head(), 1);
    assert_eq!(
        peer.store().resource(b"me", b"r1").as_deref(),
        Some(&b"first"[..])
    );
}

/// A peer owns its journal (no shared handle inside), so it can move to another thread or
/// into `tokio::spawn` whenever its connection and store can.
#[test]
fn a_peer_is_send_when_its_parts_are() {
    fn send<T: Send>(_: &T) {}
    let client = Peer::new(
        MergeClient::new(
            tether::Instant::ZERO,
            merge::MergeClientConfig::default(),
            Token::new(&[7; 16]).unwrap(),
        )
        .unwrap(),
        tether::sync::journal::SyncConfig::default(),
        MemJournal::new(1, 10),
    );
    send(&client);
    let moved =
        std::thread::spawn(move || tether::sync::journal::JournalStore::head(client.store()))
            .join()
            .unwrap();
    assert_eq!(moved, 0);
    send(&Peer::new(
        tether::DualServer::new(tether::DualServerConfig::default(), SeqTokens::new(1)),
        tether::sync::journal::SyncConfig::default(),
        MemJournal::new(2, 10),
    ));
}

/// A client peer asks for its first transport before any input (the wrapped client queues
/// `Open(Main)` at construction). Before the fix in `Peer::new`, the first poll said
/// `Wait(None)` and a driver that drains before it waits slept for ever.
#[test]
fn a_new_client_peer_asks_for_its_transport_at_once() {
    use tether::{Channel, Machine, Output};
    let client = tether::connect::merge::MergeClient::new(
        tether::Instant::ZERO,
        tether::connect::merge::MergeClientConfig::default(),
        tether::Token::new(&[b'C'; 16]).unwrap(),
    )
    .expect("token");
    let mut peer = Peer::new(
        client,
        tether::sync::journal::SyncConfig::default(),
        MemJournal::new(1, 10),
    );
    assert_eq!(peer.poll_timeout(), Some(tether::Instant::ZERO));
    assert_eq!(peer.poll_output(), Output::Open(Channel::Main));
}

#[test]
fn an_entry_over_the_receive_limits_is_refused_on_append() {
    use tether::peer::PeerCommand;
    use tether::sync::journal::{JournalStore, SyncConfig, SyncError};
    use tether::wire::{Entry, MAX_ID_LEN};
    use tether::{Input, Machine, PeerError};
    let client = tether::connect::merge::MergeClient::new(
        tether::Instant::ZERO,
        Default::default(),
        tether::Token::new(&[b'C'; 16]).unwrap(),
    )
    .expect("token");
    let config = SyncConfig::default();
    let max_payload = config.max_payload;
    let mut peer = Peer::new(client, config, MemJournal::new(1, 10));
    let long = vec![b'a'; MAX_ID_LEN + 1];
    let big = vec![0; max_payload + 1];
    for e in [
        Entry::new(&long, b"r", b"x"),
        Entry::new(b"me", &long, b"x"),
        Entry::new(b"me", b"r", &big),
    ] {
        let r = peer.handle_input(
            tether::Instant::ZERO,
            Input::Command(PeerCommand::Append(e)),
        );
        assert!(
            matches!(r, Err(PeerError::Sync(SyncError::EntryTooLarge))),
            "{r:?}"
        );
    }
    assert_eq!(peer.store().head(), 0, "nothing was stored");
    let at_limits = Entry::new(&long[1..], &long[1..], &big[1..]);
    let r = peer.handle_input(
        tether::Instant::ZERO,
        Input::Command(PeerCommand::Append(at_limits)),
    );
    assert!(r.is_ok(), "{r:?}");
}

// ---------------------------------------------------------------------------------------
// Status 408 under `Peer`: a silent peer gets the 408, the link is dropped, the session
// resumes; a live peer with nothing to say is never dropped.
// ---------------------------------------------------------------------------------------

mod idle {
    use super::peer_common::{
        connection_events, entry, got_status, has_sync, idle_config, status_on_wire, PeerPair,
    };
    use tether::connect::merge::{self, MergeClient, MergeClientEvent, MergeServer};
    use tether::peer::{Peer, PeerCommand, PeerEvent};
    use tether::session::SessionConfig;
    use tether::sync::journal::{JournalStore, MemJournal, SyncEvent};
    use tether::testkit::{Closes, Pair, SeqTokens, Side};
    use tether::wire::Status;
    use tether::{Duration, Event, Instant, Link, Outcome, Token};

    type Merge = PeerPair<MergeClient, MergeServer<SeqTokens>>;

    /// A token-merge client and server peer, connected and synced, with `keepalive` on
    /// both sides and each side's own idle timeout.
    fn connected(
        keepalive: Option<Duration>,
        client_idle: Option<Duration>,
        server_idle: Option<Duration>,
    ) -> Merge {
        let session = SessionConfig {
            keepalive,
            ..SessionConfig::default()
        };
        let client = MergeClient::new(
            Instant::ZERO,
            merge::MergeClientConfig {
                session,
                give_up_after: Duration::from_secs(3600),
                ..Default::default()
            },
            Token::new(&[b'C'; 16]).unwrap(),
        )
        .unwrap();
        let server = MergeServer::new(
            merge::MergeServerConfig {
                session,
                resume_grace: Duration::from_secs(3600),
                ..Default::default()
            },
            SeqTokens::new(1),
        );
        let mut pair = Pair::new(
            Peer::new(client, idle_config(client_idle), MemJournal::new(1, 1000)),
            Peer::new(server, idle_config(server_idle), MemJournal::new(2, 1000)),
        )
        .granting_opens()
        .with_closes(Closes::Forward)
        .strict(Side::Client)
        .strict(Side::Server);
        pair.client_in(tether::Input::Command(PeerCommand::Append(entry(
            "client", 1,
        ))));
        pair.server_in(tether::Input::Command(PeerCommand::Append(entry(
            "server", 1,
        ))));
        pair.run_for(Duration::from_secs(2));
        assert_eq!(pair.client.store().keys(), pair.server.store().keys());
        assert_eq!(pair.client.store().keys().len(), 2);
        pair.take_client_events();
        pair.take_server_events();
        pair
    }

    fn resumed<S>(events: &[Event<S, impl Sized>]) -> usize {
        events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Up {
                        outcome: Outcome::Resumed,
                        ..
                    }
                )
            })
            .count()
    }

    fn ended<S>(events: &[Event<S, impl Sized>]) -> bool {
        events.iter().any(|e| matches!(e, Event::Ended { .. }))
    }

    #[test]
    fn a_silent_server_gets_408_the_client_drops_the_link_and_resumes_with_nothing_lost() {
        // No keepalive: the session core cannot tell a silent server, only the 408 can.
        let idle = Duration::from_secs(5);
        let mut pair = connected(None, Some(idle), None);
        let link = pair.client.connection().view().link.unwrap();
        pair.freeze(Side::Server);
        // Both sides go on appending while the server is frozen.
        pair.client_in(tether::Input::Command(PeerCommand::Append(entry(
            "client", 2,
        ))));
        pair.server_in(tether::Input::Command(PeerCommand::Append(entry(
            "server", 2,
        ))));
        pair.run_for(idle + Duration::from_millis(100));

        let events = pair.take_client_events();
        assert!(has_sync(&events, |e| *e == SyncEvent::IdleTimeout));
        assert!(
            status_on_wire(&pair, link, Status::RequestTimeout),
            "the 408 was sent on the link before it was closed"
        );
        assert!(
            pair.closes
                .iter()
                .any(|c| c.side == Side::Client && c.link == link),
            "the client closed the link"
        );
        let conn = connection_events(&events);
        assert!(conn.contains(&MergeClientEvent::Down { session: () }));
        assert!(!ended(&conn), "the session is kept");

        pair.thaw(Side::Server);
        // Until the session is back (the client's tries while the server was frozen timed
        // out; the next one resumes), and no longer: with no keepalive an idle link is
        // dropped again each idle timeout (SDMP's rule), and this test looks at one drop.
        let mut events = events;
        let limit = pair.now + Duration::from_secs(60);
        while resumed(&connection_events(&events)) == 0 && pair.now < limit {
            pair.run_for(Duration::from_millis(100));
            events.extend(pair.take_client_events());
        }
        let conn = connection_events(&events);
        assert_eq!(resumed(&conn), 1, "the session resumed: {conn:?}");
        assert!(!ended(&conn));
        let server_events = pair.take_server_events();
        assert!(got_status(&server_events, Status::RequestTimeout));
        let server_conn = connection_events(&server_events);
        assert_eq!(resumed(&server_conn), 1);
        assert!(!ended(&server_conn));
        // Nothing lost, nothing doubled.
        assert_eq!(pair.client.store().keys(), pair.server.store().keys());
        assert_eq!(pair.client.store().keys().len(), 4);
        let applied: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                PeerEvent::Sync(
                    _,
                    SyncEvent::Applied {
                        author, resource, ..
                    },
                ) => Some((author.to_vec(), resource.to_vec())),
                _ => None,
            })
            .collect();
        assert_eq!(
            applied,
            [(b"server".to_vec(), b"r2".to_vec())],
            "the server's new entry, once"
        );
        assert!(pair.client.store().contains(b"server", b"r2"));
        assert!(pair.server.store().contains(b"client", b"r2"));
    }

    #[test]
    fn a_silent_client_gets_408_the_server_drops_the_link_and_keeps_the_session() {
        let idle = Duration::from_secs(5);
        let mut pair = connected(None, None, Some(idle));
        let link = pair.client.connection().view().link.unwrap();
        pair.freeze(Side::Client);
        pair.server_in(tether::Input::Command(PeerCommand::Append(entry(
            "server", 2,
        ))));
        pair.run_for(idle + Duration::from_millis(100));

        let events = pair.take_server_events();
        assert!(has_sync(&events, |e| *e == SyncEvent::IdleTimeout));
        assert!(status_on_wire(&pair, link, Status::RequestTimeout));
        assert!(pair
            .closes
            .iter()
            .any(|c| c.side == Side::Server && c.link == link));
        let conn = connection_events(&events);
        assert!(conn.iter().any(|e| matches!(e, Event::Down { .. })));
        assert!(!ended(&conn), "the server keeps the session for its client");

        pair.thaw(Side::Client);
        pair.client_in(tether::Input::Command(PeerCommand::Append(entry(
            "client", 2,
        ))));
        pair.run_for(Duration::from_secs(3));
        let client_events = pair.take_client_events();
        assert!(got_status(&client_events, Status::RequestTimeout));
        let client_conn = connection_events(&client_events);
        assert!(client_conn.contains(&MergeClientEvent::Down { session: () }));
        assert_eq!(resumed(&client_conn), 1, "{client_conn:?}");
        assert!(!ended(&client_conn));
        let mut events = events;
        events.extend(pair.take_server_events());
        assert_eq!(resumed(&connection_events(&events)), 1);
        assert_eq!(pair.client.store().keys(), pair.server.store().keys());
        assert_eq!(pair.client.store().keys().len(), 4);
    }

    /// With the keepalive on (the default), a peer whose application says nothing still
    /// sends heartbeats, and those count: no 408 and no drop, however long it lasts.
    #[test]
    fn a_live_peer_with_nothing_to_say_is_never_dropped() {
        let mut pair = connected(
            SessionConfig::default().keepalive,
            Some(Duration::from_secs(30)),
            Some(Duration::from_secs(30)),
        );
        let closes = pair.closes.len();
        pair.run_for(Duration::from_secs(600));
        let client = pair.take_client_events();
        let server = pair.take_server_events();
        assert!(!has_sync(&client, |e| *e == SyncEvent::IdleTimeout));
        assert!(!has_sync(&server, |e| *e == SyncEvent::IdleTimeout));
        assert!(connection_events(&client).is_empty(), "{client:?}");
        assert!(connection_events(&server).is_empty(), "{server:?}");
        assert_eq!(pair.closes.len(), closes);
    }

    /// With the keepalive on, a frozen peer is the session core's to notice (1.5 x
    /// keepalive, before the 30 s idle timeout): the link is dropped without a 408.
    #[test]
    fn with_a_keepalive_a_frozen_peer_is_noticed_by_liveness_before_any_408() {
        let mut pair = connected(
            SessionConfig::default().keepalive,
            Some(Duration::from_secs(30)),
            None,
        );
        let link: Link = pair.client.connection().view().link.unwrap();
        pair.freeze(Side::Server);
        pair.run_for(Duration::from_secs(16));
        let events = pair.take_client_events();
        assert!(connection_events(&events).contains(&MergeClientEvent::Down { session: () }));
        assert!(!has_sync(&events, |e| *e == SyncEvent::IdleTimeout));
        assert!(!status_on_wire(&pair, link, Status::RequestTimeout));
        pair.thaw(Side::Server);
        pair.run_for(Duration::from_secs(30));
        assert_eq!(resumed(&connection_events(&pair.take_client_events())), 1);
    }

    /// A client that stops acknowledging (frozen, its reads stuck) while the server appends
    /// 3,000 entries of 1 KiB: the server's replay buffer for it (1 MiB) fills. Before, the
    /// broadcasts the buffer refused were lost and every later input to the server
    /// returned `QueueFull`; now every append succeeds, the server reports the stall once
    /// (`PeerEvent::Backlogged`) and holds the session's sync back with its next message
    /// kept, and once the client reads again it gets every entry exactly once.
    #[test]
    fn a_peer_that_stops_acknowledging_stalls_its_sync_and_loses_nothing() {
        let mut pair = connected(None, None, None);
        pair.freeze(Side::Client);
        let big = |n: usize| {
            tether::wire::Entry::new(b"server-big", format!("r{n}").as_bytes(), &[n as u8; 2048])
        };
        for n in 0..900 {
            let now = pair.now;
            tether::Machine::handle_input(
                &mut pair.server,
                now,
                tether::Input::Command(PeerCommand::Append(big(n))),
            )
            .expect("an append is never refused because a peer is slow");
            pair.pump();
        }
        let events = pair.take_server_events();
        let stalls = events
            .iter()
            .filter(|e| matches!(e, PeerEvent::Backlogged(_)))
            .count();
        assert_eq!(stalls, 1, "the stall is reported once");
        assert!(pair.server_errors.is_empty(), "{:?}", pair.server_errors);
        let session = pair.server.sessions().next().unwrap().0;
        assert!(pair.server.connection().queued(session).unwrap() <= 1_024);
        pair.thaw(Side::Client);
        pair.run_for(Duration::from_secs(60));
        let mut applied = std::collections::BTreeMap::new();
        for e in pair.take_client_events() {
            if let PeerEvent::Sync(
                _,
                SyncEvent::Applied {
                    author, resource, ..
                },
            ) = e
            {
                if &author[..] == b"server-big" {
                    *applied.entry(resource).or_insert(0) += 1;
                }
            }
        }
        assert_eq!(applied.len(), 900, "every entry reached the client");
        assert!(applied.values().all(|&n| n == 1), "each exactly once");
        assert_eq!(pair.client.store().keys(), pair.server.store().keys());
        assert!(pair.server_errors.is_empty(), "{:?}", pair.server_errors);
    }

    /// A client cut while the server appends 900 entries of 512 bytes catches up after it
    /// resumes, in several lists; each list applied is a `Progress` event: `at` rises to
    /// the server's head, which the application can show as "synced `at` of `head`".
    #[test]
    fn a_catch_up_reports_its_progress_list_by_list() {
        let mut pair = connected(None, None, None);
        let link: Link = pair.client.connection().view().link.unwrap();
        pair.cut(link);
        for n in 0..900 {
            let e = tether::wire::Entry::new(b"bulk", format!("r{n}").as_bytes(), &[1; 512]);
            pair.server_in(tether::Input::Command(PeerCommand::Append(e)));
        }
        let head = pair.server.store().head();
        pair.run_for(Duration::from_secs(30));
        let progress: Vec<(u64, u64)> = pair
            .take_client_events()
            .iter()
            .filter_map(|e| match e {
                PeerEvent::Sync(_, SyncEvent::Progress { at, head, .. }) => Some((*at, *head)),
                _ => None,
            })
            .collect();
        assert!(progress.len() >= 5, "one event per list: {progress:?}");
        assert!(progress.windows(2).all(|w| w[0].0 < w[1].0), "{progress:?}");
        assert!(progress.iter().all(|(at, h)| at <= h && *h == head));
        assert_eq!(
            progress.last().map(|p| p.0),
            Some(head),
            "it ends at the head"
        );
        assert_eq!(pair.client.store().keys(), pair.server.store().keys());
    }
}
