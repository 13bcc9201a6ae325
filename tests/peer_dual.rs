//! The composed peer over the dual-channel profile (seed 003), in the simulator: journal
//! entries survive cuts of `main`, and `feed` updates reach the other side.
#![cfg(feature = "testkit")]

mod peer_common;

use peer_common::{append, applied, keys};
use tether::connect::dual::{self, DualClient, DualServer};
use tether::peer::{Peer, PeerCommand, PeerEvent};
use tether::sync::journal::MemJournal;
use tether::testkit::scenario::sync_config;
use tether::testkit::{Either, Faults, NodeId, SeqTokens, Sim};
use tether::wire::{Element, Message};
use tether::{Channel, Duration};

type Node = peer_common::Node<DualClient, DualServer<SeqTokens>>;

fn world(seed: u64, clients: usize, faults: Faults) -> (Sim<Node>, NodeId, Vec<NodeId>) {
    let mut sim = Sim::new(seed, faults);
    let server = sim.add_node(Either::Right(Peer::new(
        DualServer::new(dual::DualServerConfig::default(), SeqTokens::new(seed)),
        sync_config(),
        MemJournal::new(1, 100_000),
    )));
    let mut ids = Vec::new();
    for i in 0..clients {
        let peer = Peer::new(
            DualClient::new(dual::DualClientConfig::default()),
            sync_config(),
            MemJournal::new(100 + i as u64, 100_000),
        );
        let id = sim.add_node(Either::Left(peer));
        sim.route(id, Channel::Main, server);
        sim.route(id, Channel::Feed, server);
        sim.command(
            id,
            Either::Left(PeerCommand::Connection(dual::DualClientCommand::Connect)),
        );
        ids.push(id);
    }
    (sim, server, ids)
}

#[test]
fn connects_syncs_and_carries_feed_updates() {
    let (mut sim, server, clients) = world(1, 1, Faults::none());
    let c = clients[0];
    sim.run_for(Duration::from_secs(2));
    let connected = sim.take_events(c).into_iter().any(|e| {
        matches!(
            e,
            Either::Left(PeerEvent::Connection(dual::DualClientEvent::Up {
                outcome: dual::Outcome::Fresh,
                ..
            }))
        )
    });
    assert!(connected);
    append(&mut sim, c, "client", 1);
    append(&mut sim, server, "server", 1);
    let update = Message::Update(Element {
        kind: 1,
        sid: 7,
        data: bytes::Bytes::from_static(b"pos"),
    });
    sim.command(
        c,
        Either::Left(PeerCommand::Connection(dual::DualClientCommand::SendFeed(
            update,
        ))),
    );
    sim.run_for(Duration::from_secs(2));
    assert_eq!(keys(&sim, c), keys(&sim, server));
    assert_eq!(keys(&sim, c).len(), 2);
    let updates = sim
        .take_events(server)
        .into_iter()
        .filter(|e| matches!(e, Either::Right(PeerEvent::Connection(dual::DualServerEvent::Notice(dual::DualServerNotice::Update { element, .. }))) if element.sid == 7))
        .count();
    assert_eq!(updates, 1);
}

#[test]
fn main_cut_mid_sync_reconnects_and_resyncs_exactly_once() {
    let (mut sim, server, clients) = world(2, 1, Faults::none());
    let c = clients[0];
    sim.run_for(Duration::from_secs(2));
    sim.take_events(c);
    for i in 0..300 {
        append(&mut sim, c, "client", i);
        append(&mut sim, server, "server", i);
    }
    let mut before = Vec::new();
    let limit = sim.now() + Duration::from_secs(5);
    while applied(&before).is_empty() && sim.step_before(limit) {
        before.extend(sim.take_events(c));
    }
    let n = applied(&before).len();
    assert!(0 < n && n < 300, "cut in the middle ({n} of 300 applied)");
    sim.cut(c, Channel::Main);
    sim.run_for(Duration::from_secs(30));
    let mut events = before;
    events.extend(sim.take_events(c));
    let resumed = events.iter().any(|e| {
        matches!(
            e,
            Either::Left(PeerEvent::Connection(dual::DualClientEvent::Up {
                outcome: dual::Outcome::Resumed,
                ..
            }))
        )
    });
    assert!(resumed, "main reconnected and the session continued");
    assert_eq!(keys(&sim, c).len(), 600);
    assert_eq!(keys(&sim, c), keys(&sim, server));
    let counts = applied(&events);
    assert_eq!(counts.len(), 300);
    assert!(counts.values().all(|&n| n == 1));
}

#[test]
fn several_clients_on_a_rough_network_converge() {
    for seed in 0..4 {
        let (mut sim, server, clients) = world(50 + seed, 3, Faults::rough());
        for round in 0..15 {
            for (k, &c) in clients.iter().enumerate() {
                append(&mut sim, c, &format!("client{k}"), round);
            }
            append(&mut sim, server, "server", round);
            sim.run_for(Duration::from_millis(300));
        }
        sim.set_faults(Faults::none());
        // A client whose reconnection failed for good is closed: connect it again, as an
        // application would.
        sim.run_for(Duration::from_secs(30));
        for &c in &clients {
            sim.command(
                c,
                Either::Left(PeerCommand::Connection(dual::DualClientCommand::Connect)),
            );
        }
        sim.run_for(Duration::from_secs(120));
        let all = keys(&sim, server);
        assert_eq!(all.len(), 15 * 4, "seed {seed}");
        for &c in &clients {
            assert_eq!(keys(&sim, c), all, "seed {seed}: {c:?}");
            assert!(applied(&sim.take_events(c)).values().all(|&n| n == 1));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Status 408 under `Peer` on the dual-channel profile: a silent peer gets the 408, `main`
// is dropped and reconnected, the session continues.
// ---------------------------------------------------------------------------------------

mod idle {
    use super::peer_common::{
        connection_events, entry, got_status, has_sync, idle_config, status_on_wire, PeerPair,
    };
    use tether::connect::dual::{self, DualClient, DualServer};
    use tether::peer::{Peer, PeerCommand};
    use tether::session::SessionConfig;
    use tether::sync::journal::{MemJournal, SyncEvent};
    use tether::testkit::{Closes, Pair, SeqTokens, Side};
    use tether::wire::Status;
    use tether::{Duration, Event, Input, Outcome};

    type Dual = PeerPair<DualClient, DualServer<SeqTokens>>;

    /// A dual client and server peer without keepalive on `main`, connected and synced.
    fn connected(client_idle: Option<Duration>, server_idle: Option<Duration>) -> Dual {
        let session = SessionConfig {
            keepalive: None,
            ..SessionConfig::default()
        };
        let client = DualClient::new(dual::DualClientConfig {
            session,
            ..Default::default()
        });
        let server = DualServer::new(
            dual::DualServerConfig {
                session,
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
        pair.client_in(Input::Command(PeerCommand::Connection(
            dual::DualClientCommand::Connect,
        )));
        pair.client_in(Input::Command(PeerCommand::Append(entry("client", 1))));
        pair.server_in(Input::Command(PeerCommand::Append(entry("server", 1))));
        pair.run_for(Duration::from_millis(1500));
        assert_eq!(
            pair.client.connection().state(),
            dual::DualClientState::Connected
        );
        assert_eq!(pair.client.store().keys(), pair.server.store().keys());
        assert_eq!(pair.client.store().keys().len(), 2);
        pair.take_client_events();
        pair.take_server_events();
        pair
    }

    fn resumed<S, N>(events: &[Event<S, N>]) -> usize {
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

    fn ended<S, N>(events: &[Event<S, N>]) -> bool {
        events.iter().any(|e| matches!(e, Event::Ended { .. }))
    }

    /// Runs until the side whose events `take` collects had its session resumed, for a
    /// minute at most (its tries while the other side was frozen may have to time out
    /// first), and no longer: with no keepalive an idle link is dropped again each idle
    /// timeout (SDMP's rule), and these tests look at one drop.
    fn until_resumed<S, N>(
        pair: &mut Dual,
        events: &mut Vec<tether::peer::PeerEvent<Event<S, N>, S>>,
        take: impl Fn(&mut Dual) -> Vec<tether::peer::PeerEvent<Event<S, N>, S>>,
    ) where
        S: Clone,
        N: Clone,
    {
        let limit = pair.now + Duration::from_secs(60);
        while resumed(&connection_events(events)) == 0 && pair.now < limit {
            pair.run_for(Duration::from_millis(100));
            events.extend(take(pair));
        }
    }

    #[test]
    fn a_silent_server_gets_408_and_the_client_reconnects_main() {
        // Shorter than the feed timeout (5 s), so that only `main` is at stake.
        let idle = Duration::from_secs(2);
        let mut pair = connected(Some(idle), None);
        let main = pair.client.connection().links().0.unwrap();
        pair.freeze(Side::Server);
        pair.client_in(Input::Command(PeerCommand::Append(entry("client", 2))));
        pair.run_for(idle + Duration::from_millis(100));
        let mut events = pair.take_client_events();
        assert!(has_sync(&events, |e| *e == SyncEvent::IdleTimeout));
        assert!(status_on_wire(&pair, main, Status::RequestTimeout));
        assert!(pair
            .closes
            .iter()
            .any(|c| c.side == Side::Client && c.link == main));
        assert!(connection_events(&events).contains(&dual::DualClientEvent::Down { session: () }));

        pair.thaw(Side::Server);
        pair.server_in(Input::Command(PeerCommand::Append(entry("server", 2))));
        until_resumed(&mut pair, &mut events, |p| p.take_client_events());
        let conn = connection_events(&events);
        assert_eq!(resumed(&conn), 1, "{conn:?}");
        assert!(!ended(&conn));
        pair.run_for(Duration::from_millis(500));
        assert!(got_status(
            &pair.take_server_events(),
            Status::RequestTimeout
        ));
        assert_eq!(pair.client.store().keys(), pair.server.store().keys());
        assert_eq!(pair.client.store().keys().len(), 4);
    }

    #[test]
    fn a_silent_client_gets_408_and_the_server_keeps_the_player() {
        let idle = Duration::from_secs(2);
        let mut pair = connected(None, Some(idle));
        let main = pair.client.connection().links().0.unwrap();
        pair.freeze(Side::Client);
        pair.server_in(Input::Command(PeerCommand::Append(entry("server", 2))));
        pair.run_for(idle + Duration::from_millis(100));
        let mut events = pair.take_server_events();
        assert!(has_sync(&events, |e| *e == SyncEvent::IdleTimeout));
        assert!(status_on_wire(&pair, main, Status::RequestTimeout));
        assert!(pair
            .closes
            .iter()
            .any(|c| c.side == Side::Server && c.link == main));
        let conn = connection_events(&events);
        let player = conn
            .iter()
            .find_map(|e| match e {
                Event::Down { session } => Some(*session),
                _ => None,
            })
            .expect("the player's main is down");
        assert!(!ended(&conn), "the player waits for its client");
        assert_eq!(
            pair.server.connection().player_state(player),
            Some(dual::PlayerState::MainLost)
        );

        pair.thaw(Side::Client);
        pair.client_in(Input::Command(PeerCommand::Append(entry("client", 2))));
        until_resumed(&mut pair, &mut events, |p| p.take_server_events());
        assert_eq!(resumed(&connection_events(&events)), 1);
        assert!(!ended(&connection_events(&events)));
        pair.run_for(Duration::from_millis(500));
        let client = pair.take_client_events();
        assert!(got_status(&client, Status::RequestTimeout));
        assert_eq!(resumed(&connection_events(&client)), 1);
        assert_eq!(pair.client.store().keys(), pair.server.store().keys());
        assert_eq!(pair.client.store().keys().len(), 4);
    }
}
