//! The composed peer over the dual-channel profile (seed 003), in the simulator: journal
//! entries survive cuts of `main`, and `feed` updates reach the other side.
#![cfg(feature = "testkit")]

use std::collections::{BTreeMap, BTreeSet};
use tether::connect::dual::{self, DualClient, DualServer};
use tether::peer::{Peer, PeerCommand, PeerEvent, SharedJournal};
use tether::sync::journal::{MemJournal, Role, SyncConfig, SyncEvent};
use tether::testkit::{Either, Faults, NodeId, Sim};
use tether::wire::{Element, Entry, Message};
use tether::{Channel, Duration, Token};

type Journal = SharedJournal<MemJournal>;
type ClientPeer = Peer<DualClient, Journal>;
type ServerPeer = Peer<DualServer<Tokens>, Journal>;
type Node = Either<ClientPeer, ServerPeer>;
type Event = <Node as tether::Machine>::Event;

struct Tokens(u64);

impl dual::TokenSource for Tokens {
    fn next_token(&mut self) -> Token {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.0.to_be_bytes());
        b[8..].copy_from_slice(&self.0.rotate_left(17).to_be_bytes());
        Token::new(&b).unwrap()
    }
}

fn sync_config() -> SyncConfig {
    SyncConfig {
        idle_timeout: None,
        ..SyncConfig::default()
    }
}

fn world(seed: u64, clients: usize, faults: Faults) -> (Sim<Node>, NodeId, Vec<NodeId>) {
    let mut sim = Sim::new(seed, faults);
    let server = sim.add_node(Either::Right(Peer::new(
        DualServer::new(dual::ServerConfig::default(), Tokens(seed)),
        Role::Server,
        sync_config(),
        SharedJournal::new(MemJournal::new(1, 100_000)),
    )));
    let mut ids = Vec::new();
    for i in 0..clients {
        let peer = Peer::new(
            DualClient::new(dual::ClientConfig::default()),
            Role::Client,
            sync_config(),
            SharedJournal::new(MemJournal::new(100 + i as u64, 100_000)),
        );
        let id = sim.add_node(Either::Left(peer));
        sim.route(id, Channel::Main, server);
        sim.route(id, Channel::Feed, server);
        sim.command(
            id,
            Either::Left(PeerCommand::Connection(dual::ClientCommand::Connect)),
        );
        ids.push(id);
    }
    (sim, server, ids)
}

fn keys(sim: &Sim<Node>, id: NodeId) -> BTreeSet<(bytes::Bytes, bytes::Bytes)> {
    match sim.node(id) {
        Either::Left(p) => p.store().with(|j| j.keys()),
        Either::Right(p) => p.store().with(|j| j.keys()),
    }
}

fn append(sim: &mut Sim<Node>, id: NodeId, author: &str, n: usize) {
    let entry = Entry::new(author.as_bytes(), format!("r{n}").as_bytes(), b"payload");
    let cmd = match sim.node(id) {
        Either::Left(_) => Either::Left(PeerCommand::Append(entry)),
        Either::Right(_) => Either::Right(PeerCommand::Append(entry)),
    };
    sim.command(id, cmd);
}

fn applied(events: &[Event]) -> BTreeMap<(Vec<u8>, Vec<u8>), usize> {
    let mut counts = BTreeMap::new();
    for e in events {
        let s = match e {
            Either::Left(PeerEvent::Sync(_, s)) => s,
            Either::Right(PeerEvent::Sync(_, s)) => s,
            _ => continue,
        };
        if let SyncEvent::Applied {
            author, resource, ..
        } = s
        {
            *counts
                .entry((author.to_vec(), resource.to_vec()))
                .or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn connects_syncs_and_carries_feed_updates() {
    let (mut sim, server, clients) = world(1, 1, Faults::none());
    let c = clients[0];
    sim.run_for(Duration::from_secs(2));
    let connected = sim.take_events(c).into_iter().any(|e| {
        matches!(
            e,
            Either::Left(PeerEvent::Connection(dual::ClientEvent::Connected {
                session: dual::SessionKind::Fresh,
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
        Either::Left(PeerCommand::Connection(dual::ClientCommand::SendFeed(
            update,
        ))),
    );
    sim.run_for(Duration::from_secs(2));
    assert_eq!(keys(&sim, c), keys(&sim, server));
    assert_eq!(keys(&sim, c).len(), 2);
    let updates = sim
        .take_events(server)
        .into_iter()
        .filter(|e| matches!(e, Either::Right(PeerEvent::Connection(dual::ServerEvent::Update { element, .. })) if element.sid == 7))
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
            Either::Left(PeerEvent::Connection(dual::ClientEvent::Connected {
                session: dual::SessionKind::Resumed,
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
                Either::Left(PeerCommand::Connection(dual::ClientCommand::Connect)),
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
