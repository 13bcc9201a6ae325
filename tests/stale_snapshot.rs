//! A session resumed from an older copy of it (a server restarted from an older copy of
//! its database, a client restored from an old snapshot): the first ACKs of the resumption
//! show the two sides' records apart, the session ends on both sides (`Ended(Diverged)`)
//! and the client starts a fresh one, within one reconnection and never in a loop. Both
//! profiles, the machines alone and a token-merge `Peer` with journal sync; and a client
//! whose resumptions are refused at once backs off instead of retrying every second.
#![cfg(feature = "testkit")]

mod peer_common;

use bytes::{Bytes, BytesMut};
use peer_common::{append, journal, keys, Journal};
use tether::connect::dual::{self, DualClient, DualServer};
use tether::connect::merge::{self, MergeClient, MergeServer, Status};
use tether::peer::{Peer, PeerEvent};
use tether::session::{EndReason, Event, Outcome};
use tether::sync::journal::{MemJournal, SyncConfig};
use tether::testkit::{Either, Faults, NodeId, SeqTokens, Sim};
use tether::wire::{FailReason, Message, PROTOCOL_VERSION};
use tether::{Channel, Duration, Input, Instant, Link, Machine, Output, Token};

fn app(n: u32) -> Message {
    Message::App(Bytes::copy_from_slice(&n.to_be_bytes()))
}

/// Events of one kind, in order, as short names (for readable failures).
fn names<N: std::fmt::Debug>(events: &[Event<impl std::fmt::Debug, N>]) -> Vec<String> {
    events
        .iter()
        .filter(|e| !matches!(e, Event::Message { .. }))
        .map(|e| match e {
            Event::Up { outcome, .. } => format!("Up {outcome:?}"),
            Event::Down { .. } => "Down".into(),
            Event::Ended { reason, .. } => format!("Ended {reason:?}"),
            Event::Notice(n) => format!("{n:?}"),
            Event::Message { .. } => unreachable!(),
        })
        .collect()
}

fn ups<S, N>(events: &[Event<S, N>]) -> Vec<Outcome> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Up { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Token merge, the machines alone

type MergeNode = Either<MergeClient, MergeServer<SeqTokens>>;

fn merge_server(seed: u64) -> MergeServer<SeqTokens> {
    MergeServer::new(
        merge::MergeServerConfig {
            resume_grace: Duration::from_secs(3600),
            ..Default::default()
        },
        SeqTokens::new(seed),
    )
}

fn merge_client_config() -> merge::MergeClientConfig {
    merge::MergeClientConfig {
        give_up_after: Duration::from_secs(3600),
        ..Default::default()
    }
}

fn merge_client() -> MergeClient {
    MergeClient::new(
        Instant::ZERO,
        merge_client_config(),
        Token::new(&[0xc1; 16]).unwrap(),
    )
    .unwrap()
}

fn client_events(sim: &mut Sim<MergeNode>, id: NodeId) -> Vec<merge::MergeClientEvent> {
    sim.take_events(id)
        .into_iter()
        .filter_map(|e| match e {
            Either::Left(e) => Some(e),
            Either::Right(_) => None,
        })
        .collect()
}

fn server_events(sim: &mut Sim<MergeNode>, id: NodeId) -> Vec<merge::MergeServerEvent> {
    sim.take_events(id)
        .into_iter()
        .filter_map(|e| match e {
            Either::Right(e) => Some(e),
            Either::Left(_) => None,
        })
        .collect()
}

/// 40 messages each way, then a heartbeat's worth of time, so that everything is
/// acknowledged both ways (the ACK counters move on both sides).
fn merge_traffic(sim: &mut Sim<MergeNode>, client: NodeId, server: NodeId, from: u32) {
    for n in from..from + 40 {
        sim.command(
            client,
            Either::Left(merge::MergeClientCommand::Send(app(n))),
        );
    }
    let id = only_session(sim, server);
    for n in from..from + 40 {
        sim.command(
            server,
            Either::Right(merge::MergeServerCommand::Send {
                session: id,
                message: app(n),
            }),
        );
    }
    sim.run_for(Duration::from_secs(12));
}

fn only_session(sim: &Sim<MergeNode>, server: NodeId) -> merge::SessionId {
    let s = sim.node(server).right().unwrap();
    (1..=64)
        .map(merge::SessionId)
        .find(|&id| s.session(id).is_some())
        .expect("the server holds a session")
}

/// How a merge world restarts: the server from its older snapshot, or the client from its.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Older {
    Server,
    Client,
}

/// A client and a server exchange messages; a snapshot of one side is taken; they exchange
/// more (acknowledged both ways); then that side restarts from its snapshot (the other is
/// untouched) and the client reconnects.
fn merge_restart_from_older_copy(older: Older) {
    let mut sim: Sim<MergeNode> = Sim::new(5, Faults::none());
    let server = sim.add_node(Either::Right(merge_server(1)));
    let client = sim.add_node(Either::Left(merge_client()));
    sim.route(client, Channel::Main, server);
    sim.run_for(Duration::from_secs(1));
    merge_traffic(&mut sim, client, server, 0);
    let old_id = only_session(&sim, server);
    let (server_snap, client_snap) = {
        let now = sim.now();
        let s = sim.node(server).right().unwrap();
        let c = sim.node(client).left().unwrap();
        (
            s.export_session(now, old_id).unwrap(),
            c.snapshot(now).unwrap(),
        )
    };
    merge_traffic(&mut sim, client, server, 40);
    client_events(&mut sim, client);
    server_events(&mut sim, server);

    // The restart: the restarted side's transports die with its process.
    let now = sim.now();
    match older {
        Older::Server => {
            let mut restarted = merge_server(2);
            let id = restarted.import_session(now, server_snap).unwrap();
            assert_eq!(restarted.session(id).unwrap().status, Status::Reconnecting);
            *sim.node_mut(server) = Either::Right(restarted);
        }
        Older::Client => {
            let restored = MergeClient::restore(now, merge_client_config(), client_snap).unwrap();
            *sim.node_mut(client) = Either::Left(restored);
        }
    }
    sim.cut(client, Channel::Main);
    sim.drain_node(server);
    sim.drain_node(client);
    sim.run_for(Duration::from_secs(10));

    let c = client_events(&mut sim, client);
    let s = server_events(&mut sim, server);
    // The server ends the session it cannot continue, with the reason.
    let ended: Vec<_> = s
        .iter()
        .filter_map(|e| match e {
            Event::Ended { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(ended, [EndReason::Diverged], "server: {:?}", names(&s));
    // The client: the resumption fails once, then a fresh session replaces the old one.
    assert_eq!(
        c.iter()
            .filter(|e| matches!(e, Event::Ended { .. }))
            .map(|e| match e {
                Event::Ended { reason, .. } => *reason,
                _ => unreachable!(),
            })
            .collect::<Vec<_>>(),
        [EndReason::Diverged],
        "client: {:?}",
        names(&c)
    );
    assert_eq!(
        ups(&c).last(),
        Some(&Outcome::Fresh),
        "client: {:?}",
        names(&c)
    );
    assert!(
        ups(&c).len() <= 2,
        "one reconnection at most: {:?}",
        names(&c)
    );
    assert_eq!(
        ups(&s).last(),
        Some(&Outcome::Fresh),
        "server: {:?}",
        names(&s)
    );
    // No loop: a minute later nothing more happened, and the new session carries messages.
    sim.run_for(Duration::from_secs(60));
    assert_eq!(
        names(&client_events(&mut sim, client)),
        Vec::<String>::new()
    );
    assert!(names(&server_events(&mut sim, server)).is_empty());
    assert_eq!(
        sim.node(client).left().unwrap().view().status,
        Status::Connected
    );
    sim.command(
        client,
        Either::Left(merge::MergeClientCommand::Send(app(999))),
    );
    sim.run_for(Duration::from_secs(1));
    let got: Vec<Message> = server_events(&mut sim, server)
        .into_iter()
        .filter_map(|e| match e {
            Event::Message { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(got, [app(999)]);
}

/// The bug: a server restarted from an older copy of its sessions resumed the session,
/// refused the client's ACK (it names messages the copy never sent) with UNEXPECTED_MESSAGE,
/// and the client resumed again about once a second, for ever.
#[test]
fn merge_server_restored_from_an_older_copy_ends_the_session_and_the_client_starts_fresh() {
    merge_restart_from_older_copy(Older::Server);
}

/// The mirror: the client's copy of the session is the older one.
#[test]
fn merge_client_restored_from_an_older_copy_ends_the_session_and_starts_fresh() {
    merge_restart_from_older_copy(Older::Client);
}

// ---------------------------------------------------------------------------------------
// Token merge, with journal sync on top (the restart of the bug report)

type ClientPeer = Peer<MergeClient, Journal>;
type ServerPeer = Peer<MergeServer<SeqTokens>, Journal>;
type PeerNode = Either<ClientPeer, ServerPeer>;

fn sync_config() -> SyncConfig {
    SyncConfig {
        idle_timeout: None,
        ..SyncConfig::default()
    }
}

fn server_peer(seed: u64, journal: Journal) -> ServerPeer {
    Peer::new(merge_server(seed), sync_config(), journal)
}

/// 1 server + 1 client `Peer`: append 20 on each, cut and resync; save the server's
/// journal and session snapshots; append 20 more on the server and let it sync; restart
/// the server from the saved copy. The client starts a fresh session within one
/// reconnection, journal sync starts from scratch, and both end with the union.
#[test]
fn peer_server_restarted_from_an_older_copy_resyncs_fresh_without_a_loop() {
    let mut sim: Sim<PeerNode> = Sim::new(7, Faults::none());
    let server = sim.add_node(Either::Right(server_peer(1, MemJournal::new(1, 100_000))));
    let client = sim.add_node(Either::Left(Peer::new(
        merge_client(),
        sync_config(),
        MemJournal::new(100, 100_000),
    )));
    sim.route(client, Channel::Main, server);
    sim.run_for(Duration::from_secs(2));
    for i in 0..20 {
        append(&mut sim, client, "client", i);
        append(&mut sim, server, "server", i);
    }
    sim.run_for(Duration::from_secs(3));
    sim.cut(client, Channel::Main);
    sim.run_for(Duration::from_secs(5));
    let (saved_journal, saved_sessions) = {
        let now = sim.local_now(server);
        let peer = sim.node(server).right().unwrap();
        let sessions: Vec<_> = peer
            .sessions()
            .filter_map(|(s, _)| peer.export_session(now, s))
            .collect();
        (journal(&sim, server), sessions)
    };
    assert_eq!(saved_sessions.len(), 1);
    for i in 20..40 {
        append(&mut sim, server, "server", i);
    }
    sim.run_for(Duration::from_secs(12));
    assert_eq!(keys(&sim, client).len(), 60, "synced before the restart");
    sim.take_events(client);
    sim.take_events(server);

    let now = sim.local_now(server);
    let mut restarted = server_peer(2, saved_journal);
    for s in saved_sessions {
        restarted.import_session(now, s).unwrap();
    }
    *sim.node_mut(server) = Either::Right(restarted);
    sim.cut(client, Channel::Main);
    sim.drain_node(server);
    sim.run_for(Duration::from_secs(60));

    let c: Vec<merge::MergeClientEvent> = sim
        .take_events(client)
        .into_iter()
        .filter_map(|e| match e {
            Either::Left(PeerEvent::Connection(e)) => Some(e),
            _ => None,
        })
        .collect();
    let s: Vec<merge::MergeServerEvent> = sim
        .take_events(server)
        .into_iter()
        .filter_map(|e| match e {
            Either::Right(PeerEvent::Connection(e)) => Some(e),
            _ => None,
        })
        .collect();
    assert!(
        s.iter().any(|e| matches!(
            e,
            Event::Ended {
                reason: EndReason::Diverged,
                ..
            }
        )),
        "server: {:?}",
        names(&s)
    );
    assert_eq!(
        ups(&c).last(),
        Some(&Outcome::Fresh),
        "client: {:?}",
        names(&c)
    );
    assert!(ups(&c).len() <= 2, "no loop: {:?}", names(&c));
    assert!(
        sim.node(client)
            .left()
            .unwrap()
            .sessions()
            .any(|(_, up)| up),
        "the client is up"
    );
    // The lines only the lost database had are gone for good; everything else is on both.
    let (kc, ks) = (keys(&sim, client), keys(&sim, server));
    assert_eq!(kc, ks);
    assert_eq!(kc.len(), 60);
}

// ---------------------------------------------------------------------------------------
// A resumption refused at once does not reset the backoff

/// Frames a message.
fn framed(m: &Message) -> Bytes {
    let mut b = BytesMut::new();
    m.encode_framed(&mut b);
    b.freeze()
}

/// A client holding a session with a hand-driven "server" that echoes every RESUME and
/// refuses at once: the waits between its attempts grow (1 s, 2 s, 4 s ...) instead of
/// starting from 1 s again after every echo (today: about once a second, for ever).
#[test]
fn merge_client_whose_resumptions_are_refused_at_once_backs_off() {
    let now = Instant::ZERO;
    let merged = Token::new(&[0x5a; 32]).unwrap();
    let snap = merge::MergeClientSnapshot {
        status: Status::Reconnecting,
        local: Token::new(&[0xc1; 16]).unwrap(),
        remote: Some(Token::new(&[0x5a; 16]).unwrap()),
        merged,
        secret: merged,
        queue: Vec::new(),
        acked: 0,
        received: 0,
        give_up_in: Some(Duration::from_secs(3600)),
    };
    let cfg = merge::MergeClientConfig {
        jitter_percent: 0,
        ..merge_client_config()
    };
    let mut client = MergeClient::restore(now, cfg, snap).unwrap();
    let mut t = now;
    let mut waits = Vec::new();
    let mut lost_at = None;
    for attempt in 1..=5u64 {
        // Wait until the client asks for a transport.
        loop {
            match client.poll_output() {
                Output::Open(Channel::Main) => break,
                Output::Wait(Some(at)) => {
                    t = at;
                    client.handle_input(t, Input::Timeout).unwrap();
                }
                Output::Wait(None) => panic!("the client stopped"),
                _ => {}
            }
        }
        if let Some(at) = lost_at {
            waits.push(t.saturating_duration_since(at));
        }
        let link = Link::main(attempt);
        client.handle_input(t, Input::Opened(link)).unwrap();
        let server_token = Token::new(&[0x60 + attempt as u8; 16]).unwrap();
        for m in [
            Message::Token {
                version: PROTOCOL_VERSION,
                token: server_token,
            },
            Message::Resume {
                version: PROTOCOL_VERSION,
                token: merged,
            },
            Message::ConnFailed {
                reason: FailReason::UnexpectedMessage,
            },
        ] {
            client
                .handle_input(t, Input::Received(link, framed(&m)))
                .unwrap();
        }
        lost_at = Some(t);
    }
    let secs: Vec<u64> = waits.iter().map(|d| d.as_millis() / 1000).collect();
    assert_eq!(secs, [1, 2, 4, 8], "waits between attempts: {waits:?}");
}

// ---------------------------------------------------------------------------------------
// Dual channel, the machines alone

type DualNode = Either<DualClient, DualServer<SeqTokens>>;

fn dual_server(seed: u64) -> DualServer<SeqTokens> {
    DualServer::new(
        dual::DualServerConfig {
            session_timeout: Duration::from_secs(3600),
            ..Default::default()
        },
        SeqTokens::new(seed),
    )
}

fn dual_events(sim: &mut Sim<DualNode>, id: NodeId) -> Vec<dual::DualClientEvent> {
    sim.take_events(id)
        .into_iter()
        .filter_map(|e| match e {
            Either::Left(e) => Some(e),
            Either::Right(_) => None,
        })
        .collect()
}

fn dual_server_events(sim: &mut Sim<DualNode>, id: NodeId) -> Vec<dual::DualServerEvent> {
    sim.take_events(id)
        .into_iter()
        .filter_map(|e| match e {
            Either::Right(e) => Some(e),
            Either::Left(_) => None,
        })
        .collect()
}

fn dual_traffic(sim: &mut Sim<DualNode>, client: NodeId, server: NodeId, player: u16, from: u32) {
    for n in from..from + 40 {
        sim.command(client, Either::Left(dual::DualClientCommand::Send(app(n))));
        sim.command(
            server,
            Either::Right(dual::DualServerCommand::Send {
                player,
                message: app(n),
            }),
        );
    }
    sim.run_for(Duration::from_secs(12));
}

/// The dual-channel profile had the same hole (the restored player refused the client's
/// ACK, the client started over while the stale player lingered until its timeout): a
/// server restarted from an older copy of its players ends the player (`Diverged`), and the
/// client ends its session with the same reason and connects fresh, once.
#[test]
fn dual_server_restored_from_an_older_copy_ends_the_player_and_the_client_starts_fresh() {
    let mut sim: Sim<DualNode> = Sim::new(9, Faults::none());
    let server = sim.add_node(Either::Right(dual_server(1)));
    let client = sim.add_node(Either::Left(DualClient::new(dual::DualClientConfig {
        on_feed_lost: dual::FeedLossPolicy::Reinit,
        ..Default::default()
    })));
    sim.route(client, Channel::Main, server);
    sim.route(client, Channel::Feed, server);
    sim.command(client, Either::Left(dual::DualClientCommand::Connect));
    sim.run_for(Duration::from_secs(2));
    let player = sim.node(client).left().unwrap().player().expect("a player");
    dual_traffic(&mut sim, client, server, player, 0);
    let snap = {
        let now = sim.now();
        sim.node(server)
            .right()
            .unwrap()
            .export_player(now, player)
            .unwrap()
    };
    dual_traffic(&mut sim, client, server, player, 40);
    dual_events(&mut sim, client);
    dual_server_events(&mut sim, server);

    let now = sim.now();
    let mut restarted = dual_server(2);
    assert_eq!(restarted.import_player(now, snap), Ok(player));
    *sim.node_mut(server) = Either::Right(restarted);
    sim.cut(client, Channel::Main);
    sim.drain_node(server);
    sim.run_for(Duration::from_secs(20));

    let c = dual_events(&mut sim, client);
    let s = dual_server_events(&mut sim, server);
    let ended = |events: &[String]| {
        events
            .iter()
            .filter(|e| e.starts_with("Ended"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ended(&names(&s)),
        ["Ended Diverged"],
        "server: {:?}",
        names(&s)
    );
    assert_eq!(
        ended(&names(&c)),
        ["Ended Diverged"],
        "client: {:?}",
        names(&c)
    );
    assert_eq!(
        ups(&c).last(),
        Some(&dual::Outcome::Fresh),
        "client: {:?}",
        names(&c)
    );
    assert!(
        ups(&c).len() <= 2,
        "one reconnection at most: {:?}",
        names(&c)
    );
    assert_eq!(
        sim.node(client).left().unwrap().state(),
        dual::DualClientState::Connected
    );
    // Nothing more a minute later.
    sim.run_for(Duration::from_secs(60));
    assert!(ended(&names(&dual_events(&mut sim, client))).is_empty());
    assert!(ups(&dual_events(&mut sim, client)).is_empty());
}
