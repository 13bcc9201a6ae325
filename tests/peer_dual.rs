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
