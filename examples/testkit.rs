//! Simulating your own application over tether with the testkit.
//!
//! Run it with `cargo run --example testkit --features testkit`.
//!
//! A note-taking application keeps its notes in a tether journal, on a server and on a
//! client, each a composed [`Peer`] (token-merge connection + journal sync). Instead of
//! sockets and a clock, the testkit's [`Sim`] plays the network and time: deterministic,
//! seeded, and able to misbehave. The example
//!
//! 1. connects the client and lets both sides write notes;
//! 2. cuts the connection in the middle and keeps writing on both sides;
//! 3. makes the network rough (latency, tiny chunks, random cuts), then calms it;
//! 4. checks what the application cares about: both journals hold every note, the client
//!    resumed its session instead of starting over, and each note was reported new
//!    ([`SyncEvent::Applied`]) exactly once.
//!
//! The same pattern tests any application: put your machines in a `Sim` (two types side
//! by side with [`Either`]), drive them with commands and time, inject faults, and assert
//! on their state and events. For random scenarios with these checks built in, see
//! `tether::testkit::scenario`.

use std::collections::BTreeMap;
use tether::connect::merge::{self, MergeClient, MergeClientEvent, MergeServer, Outcome};
use tether::peer::{Peer, PeerCommand, PeerEvent};
use tether::sync::journal::{MemJournal, SyncEvent};
use tether::testkit::scenario::{client_config, server_config, sync_config};
use tether::testkit::{Either, Faults, NodeId, SeqTokens, Sim};
use tether::wire::Entry;
use tether::{Channel, Duration, Token};

type Journal = MemJournal;
type Node = Either<Peer<MergeClient, Journal>, Peer<MergeServer<SeqTokens>, Journal>>;

/// The application's own action: write a note (an entry authored by `who`).
fn write_note(sim: &mut Sim<Node>, id: NodeId, who: &str, n: u32) {
    let entry = Entry::new(who.as_bytes(), format!("note-{n}").as_bytes(), b"text");
    let command = match sim.node(id) {
        Either::Left(_) => Either::Left(PeerCommand::Append(entry)),
        Either::Right(_) => Either::Right(PeerCommand::Append(entry)),
    };
    sim.command(id, command);
}

fn notes(sim: &Sim<Node>, id: NodeId) -> usize {
    match sim.node(id) {
        Either::Left(p) => p.store().keys().len(),
        Either::Right(p) => p.store().keys().len(),
    }
}

fn main() {
    // The world: one server, one client routed to it. Everything random comes from the seed.
    let seed = 2024;
    let mut sim: Sim<Node> = Sim::new(seed, Faults::none());
    let server = sim.add_node(Either::Right(Peer::new(
        MergeServer::new(server_config(), SeqTokens::new(seed)),
        sync_config(),
        MemJournal::new(1, 10_000),
    )));
    let token = Token::new(b"client-token-0001").expect("16+ bytes make a token");
    let client = MergeClient::new(sim.now(), client_config(seed, 0), token).expect("a valid token");
    let client = sim.add_node(Either::Left(Peer::new(
        client,
        sync_config(),
        MemJournal::new(2, 10_000),
    )));
    sim.route(client, Channel::Main, server);

    // 1. Connect and write.
    sim.run_for(Duration::from_secs(2));
    for n in 0..10 {
        write_note(&mut sim, client, "client", n);
        write_note(&mut sim, server, "server", n);
    }
    sim.run_for(Duration::from_millis(2));

    // 2. Cut mid-sync, keep writing on both sides.
    sim.cut(client, Channel::Main);
    for n in 10..20 {
        write_note(&mut sim, client, "client", n);
        write_note(&mut sim, server, "server", n);
    }

    // 3. A rough network for a while, then a calm one.
    sim.set_faults(Faults::rough());
    sim.run_for(Duration::from_secs(10));
    sim.set_faults(Faults::none());
    sim.run_for(Duration::from_secs(60));

    // 4. What the application cares about.
    let events = sim.take_events(client);
    let resumed = events.iter().any(|e| {
        matches!(
            e,
            Either::Left(PeerEvent::Connection(MergeClientEvent::Up {
                session: (),
                outcome: Outcome::Resumed
            }))
        )
    });
    let mut applied: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for e in &events {
        if let Either::Left(PeerEvent::Sync(_, SyncEvent::Applied { resource, .. })) = e {
            *applied.entry(resource.to_vec()).or_default() += 1;
        }
    }
    let status = sim
        .node(client)
        .left()
        .map(|p| p.connection().view().status);
    println!(
        "client: {:?}, {} notes; server: {} notes; resumed: {resumed}; network: {:?}",
        status,
        notes(&sim, client),
        notes(&sim, server),
        sim.stats()
    );
    assert_eq!(status, Some(merge::Status::Connected));
    assert_eq!(notes(&sim, client), 40, "every note reached the client");
    assert_eq!(notes(&sim, server), 40, "every note reached the server");
    assert!(resumed, "the client resumed its session after the cut");
    assert_eq!(
        applied.len(),
        20,
        "each server note reported new on the client"
    );
    assert!(applied.values().all(|&n| n == 1), "and only once");
    println!("converged: nothing lost, nothing applied twice");
}
