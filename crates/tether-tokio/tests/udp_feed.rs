//! The dual-channel profile (R-Type's: TCP `main` + UDP `feed`) through the adapter: a
//! `Peer` over `DualClient` and one over `DualServer`. Feed datagrams go both ways, `main`
//! is cut and the session resumes, the feed carries on, and journal entries appended
//! before, during and after the cut arrive exactly once.

mod common;

use common::{applied, entry, keys, wait_until, Recorder, Tokens};
use std::time::Duration as StdDuration;
use tether::connect::dual::{
    self, DualClient, DualClientCommand, DualClientEvent, DualClientNotice, DualServer,
    DualServerCommand, DualServerEvent, DualServerNotice, Outcome,
};
use tether::peer::{Peer, PeerCommand, PeerEvent};
use tether::sync::journal::{JournalStore, MemJournal};
use tether::wire::{Element, Message};
use tether::Duration;
use tether_tokio::{Client, Server};
use tokio::net::{TcpListener, UdpSocket};

type ClientPeer = Peer<DualClient, MemJournal>;
type ServerPeer = Peer<DualServer<Tokens>, MemJournal>;

fn update(sid: u16) -> Message {
    Message::Update(Element {
        kind: 1,
        sid,
        data: bytes::Bytes::from_static(b"position"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_feed_delivers_and_main_resumes_after_a_cut() {
    common::trace();
    tokio::time::timeout(StdDuration::from_secs(30), run())
        .await
        .expect("within its bound");
}

async fn run() {
    let limit = StdDuration::from_secs(10);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (main_addr, feed_addr) = (listener.local_addr().unwrap(), udp.local_addr().unwrap());
    let server_peer: ServerPeer = Peer::new(
        DualServer::new(dual::DualServerConfig::default(), Tokens(71)),
        common::sync_config(),
        MemJournal::new(1, 10_000),
    );
    let (server, sev) = tether_tokio::spawn(server_peer, Server::tcp(listener).feed(udp));
    let mut config = dual::DualClientConfig::default();
    config.reconnect.initial = Duration::from_millis(50);
    let client_peer: ClientPeer = Peer::new(
        DualClient::new(config),
        common::sync_config(),
        MemJournal::new(2, 10_000),
    );
    let (client, cev) = tether_tokio::spawn(client_peer, Client::tcp(main_addr).feed(feed_addr));
    let (sev, cev) = (Recorder::start(sev), Recorder::start(cev));
    client.connection(DualClientCommand::Connect).await.unwrap();
    let up = |r: &Recorder<PeerEvent<DualClientEvent, ()>>, outcome: Outcome| {
        r.count(|e| matches!(e, PeerEvent::Connection(DualClientEvent::Up { outcome: o, .. }) if *o == outcome))
    };
    assert!(
        wait_until(limit, || async { up(&cev, Outcome::Fresh) == 1 }).await,
        "the client connected (main and feed)"
    );
    let player = server
        .with_machine(|m| m.sessions().next().map(|(p, _)| p))
        .await
        .unwrap()
        .expect("one player");

    // Feed datagrams both ways (loopback loses none).
    let server_updates = |r: &Recorder<PeerEvent<DualServerEvent, u16>>| {
        r.count(|e| {
            matches!(
                e,
                PeerEvent::Connection(DualServerEvent::Notice(DualServerNotice::Update { .. }))
            )
        })
    };
    let client_updates = |r: &Recorder<PeerEvent<DualClientEvent, ()>>| {
        r.count(|e| {
            matches!(
                e,
                PeerEvent::Connection(DualClientEvent::Notice(DualClientNotice::Update(_)))
            )
        })
    };
    for sid in 0..10 {
        client
            .apply(PeerCommand::Connection(DualClientCommand::SendFeed(
                update(sid),
            )))
            .await
            .unwrap()
            .expect("feed is bound");
        server
            .apply(PeerCommand::Connection(DualServerCommand::SendFeed {
                player,
                message: update(sid),
            }))
            .await
            .unwrap()
            .expect("feed is bound");
    }
    assert!(
        wait_until(limit, || async {
            server_updates(&sev) == 10 && client_updates(&cev) == 10
        })
        .await,
        "feed datagrams delivered both ways: {} {}",
        server_updates(&sev),
        client_updates(&cev)
    );

    // Entries before the cut, during it, after it.
    for k in 0..5 {
        client
            .append(entry("client", &format!("before{k}")))
            .await
            .unwrap();
        server
            .append(entry("server", &format!("before{k}")))
            .await
            .unwrap();
    }
    assert!(
        wait_until(limit, || async {
            keys(&client, |m: &ClientPeer| m.store()).await.len() == 10
                && keys(&server, |m: &ServerPeer| m.store()).await.len() == 10
        })
        .await
    );
    assert_eq!(
        client.cut_transports().await.unwrap(),
        1,
        "main cut, feed kept"
    );
    for k in 0..5 {
        client
            .append(entry("client", &format!("during{k}")))
            .await
            .unwrap();
        server
            .append(entry("server", &format!("during{k}")))
            .await
            .unwrap();
    }
    assert!(
        wait_until(limit, || async { up(&cev, Outcome::Resumed) == 1 }).await,
        "main reconnected and the session resumed"
    );
    for k in 0..5 {
        client
            .append(entry("client", &format!("after{k}")))
            .await
            .unwrap();
        server
            .append(entry("server", &format!("after{k}")))
            .await
            .unwrap();
    }
    // The feed carries on after the resumption (re-initialised if the profile chose to).
    let end = tokio::time::Instant::now() + limit;
    while client
        .apply(PeerCommand::Connection(DualClientCommand::SendFeed(
            update(100),
        )))
        .await
        .unwrap()
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < end,
            "feed bound again in time"
        );
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    assert!(
        wait_until(limit, || async { server_updates(&sev) == 11 }).await,
        "a feed datagram after the resumption"
    );
    assert!(
        wait_until(limit, || async {
            keys(&client, |m: &ClientPeer| m.store()).await.len() == 30
                && keys(&server, |m: &ServerPeer| m.store()).await.len() == 30
        })
        .await,
        "every entry on both sides"
    );
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    let on_client = applied(&cev.0.lock().unwrap());
    let on_server = applied(&sev.0.lock().unwrap());
    assert_eq!(on_client.len(), 15);
    assert!(
        on_client.values().all(|&n| n == 1),
        "applied once: {on_client:?}"
    );
    assert_eq!(on_server.len(), 15);
    assert!(
        on_server.values().all(|&n| n == 1),
        "applied once: {on_server:?}"
    );
    assert_eq!(up(&cev, Outcome::Fresh), 1);
    let (cs, ss) = (client.stats().await.unwrap(), server.stats().await.unwrap());
    assert_eq!(cs.refused_inputs + ss.refused_inputs, 0, "{cs:?} {ss:?}");
    assert_eq!(client.shutdown().await.unwrap().store().head(), 30);
    assert_eq!(server.shutdown().await.unwrap().store().head(), 30);
}

/// The server's `feed` address map is bounded: past `max_feed_peers`, a datagram from a
/// new address is dropped while every mapped address is live, and takes the place of the
/// one heard from least recently once that one has been silent for `feed_idle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_feed_map_is_bounded() {
    common::trace();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let feed_addr = udp.local_addr().unwrap();
    let server_peer: ServerPeer = Peer::new(
        DualServer::new(dual::DualServerConfig::default(), Tokens(81)),
        common::sync_config(),
        MemJournal::new(1, 10_000),
    );
    let endpoint = Server::tcp(listener)
        .feed(udp)
        .max_feed_peers(2)
        .feed_idle(StdDuration::from_millis(300));
    let (server, _events) = tether_tokio::spawn(server_peer, endpoint);
    let mut socks = Vec::new();
    for _ in 0..4 {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.connect(feed_addr).await.unwrap();
        socks.push(s);
    }
    // Two addresses mapped (their datagrams are garbage to the machine, which ignores and
    // counts them), the third dropped by the adapter.
    for s in &socks[..3] {
        s.send(b"not a feed datagram").await.unwrap();
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    let dropped = || async { server.stats().await.unwrap().feed_dropped };
    assert!(wait_until(StdDuration::from_secs(5), || async { dropped().await == 1 }).await);
    // Once the first two have been silent long enough, a new address takes a place.
    tokio::time::sleep(StdDuration::from_millis(400)).await;
    socks[3].send(b"not a feed datagram").await.unwrap();
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    assert_eq!(dropped().await, 1, "the fourth address evicted an idle one");
    let stray = server
        .with_machine(|m| m.connection().stray_stats())
        .await
        .unwrap();
    assert_eq!(
        stray.malformed, 3,
        "three datagrams reached the machine: {stray:?}"
    );
}
