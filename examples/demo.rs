//! # tether demo: a real client and server over loopback
//!
//! Run it with `cargo run --example demo`.
//!
//! A server and a client, each a [`tether::peer::Peer`] (journal sync) over the
//! dual-channel connection profile (TCP for `main`, UDP for `feed`), each run by the
//! ready tokio adapter, `tether-tokio`: the application below only sends commands through
//! a [`tether_tokio::Handle`] and reads events. The demo:
//!
//! 1. connects (the opening over `main`, the feed binding over UDP, the final check);
//! 2. exchanges journal entries both ways, and feed updates over UDP;
//! 3. has the server publish a large batch, and cuts the connection (as a network loss
//!    would) while the sync that carries it is running;
//! 4. lets the client reconnect `main` by itself, after its backoff (the session goes on:
//!    "resumed"), and resync from its confirmed mark, with what it wrote while offline;
//! 5. checks that both journals hold exactly the same entries, each applied once, and exits
//!    with status 0 (1 if anything is wrong, or if it takes more than 30 s).

use std::collections::BTreeMap;
use std::time::Duration;
use tether::connect::dual::{DualClient, DualClientCommand, DualClientEvent, DualServer, Outcome};
use tether::peer::{Peer, PeerCommand, PeerEvent};
use tether::sync::journal::{MemJournal, SyncConfig, SyncEvent};
use tether::wire::{Element, Entry, Message};
use tether_tokio::{random, Client, Events, Server};
use tokio::net::{TcpListener, UdpSocket};

type Error = Box<dyn std::error::Error>;
type Applied = BTreeMap<Vec<u8>, usize>;
type Event = PeerEvent<DualClientEvent, ()>;
const BATCH: usize = 10_000;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tokio::time::timeout(Duration::from_secs(30), demo()).await??;
    println!("\ndemo: OK");
    Ok(())
}

fn entry(author: &str, n: usize) -> Entry {
    let resource = format!("{author}-{n}");
    Entry::new(author.as_bytes(), resource.as_bytes(), b"hello")
}

/// The client's next event: connection events are printed, applied entries counted.
async fn next(events: &mut Events<Event>, applied: &mut Applied) -> Result<Event, Error> {
    let event = events.recv().await.ok_or("the client stopped")?;
    match &event {
        PeerEvent::Connection(event) => println!("client: {event:?}"),
        PeerEvent::Sync((), SyncEvent::Applied { resource, .. }) => {
            *applied.entry(resource.to_vec()).or_default() += 1
        }
        _ => {}
    }
    Ok(event)
}

async fn demo() -> Result<(), Error> {
    // The server: a TCP listener for `main`, a UDP socket for `feed`.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let feed = UdpSocket::bind("127.0.0.1:0").await?;
    let (main_addr, feed_addr) = (listener.local_addr()?, feed.local_addr()?);
    println!("server: listening on tcp {main_addr} (main) and udp {feed_addr} (feed)");
    let server = DualServer::new(Default::default(), random::Tokens);
    let server = Peer::new(server, SyncConfig::default(), MemJournal::new(1, 100_000));
    let (server, mut server_events) = tether_tokio::spawn(server, Server::tcp(listener).feed(feed));
    tokio::spawn(async move {
        while let Some(event) = server_events.recv().await {
            if let PeerEvent::Connection(event) = event {
                println!("server: {event:?}");
            }
        }
    });
    // The client: it dials both by itself, when its machine asks.
    let client = DualClient::new(Default::default());
    let client = Peer::new(client, SyncConfig::default(), MemJournal::new(2, 100_000));
    let (client, mut events) = tether_tokio::spawn(client, Client::tcp(main_addr).feed(feed_addr));
    let mut applied = Applied::new();
    let up = |event: &Event| match event {
        PeerEvent::Connection(DualClientEvent::Up { outcome, .. }) => Some(*outcome),
        _ => None,
    };
    let down = |event: &Event| matches!(event, PeerEvent::Connection(DualClientEvent::Down { .. }));

    println!("\n== 1. connect");
    client.connection(DualClientCommand::Connect).await?;
    while up(&next(&mut events, &mut applied).await?).is_none() {}

    println!("\n== 2. exchange journal entries, and feed updates over UDP");
    for n in 0..5 {
        server.append(entry("server", n)).await?;
        client.append(entry("client", n)).await?;
    }
    for sid in 1..=3 {
        let data = format!("x{sid}").into();
        let update = Message::Update(Element { kind: 1, sid, data });
        let send_feed = PeerCommand::Connection(DualClientCommand::SendFeed(update));
        client.apply(send_feed).await??;
    }
    while applied.len() < 5 {
        next(&mut events, &mut applied).await?;
    }

    println!("\n== 3. the server publishes {BATCH} entries; the connection drops mid-sync");
    for n in 0..BATCH {
        server.append(entry("batch", n)).await?;
    }
    while applied.len() == 5 {
        next(&mut events, &mut applied).await?;
    }
    // The server cuts, as a network loss would. The client's driver may be ahead of what
    // this loop has read: its `Down` event marks how far it had got.
    let cut = server.cut_transports().await?;
    println!("server: cut {cut} connection(s)");
    while !down(&next(&mut events, &mut applied).await?) {}
    let got = applied.len() - 5;
    println!("client: {got} of {BATCH} batch entries applied before the cut; appends 3 offline");
    for n in 5..8 {
        client.append(entry("client", n)).await?;
    }

    println!("\n== 4. reconnect by itself, resume, resync");
    let mut outcome = None;
    while outcome.is_none() || applied.len() < 5 + BATCH {
        outcome = outcome.or(up(&next(&mut events, &mut applied).await?));
    }
    let (client_keys, server_keys) = loop {
        let client_keys = client.with_machine(|peer| peer.store().keys()).await?;
        let server_keys = server.with_machine(|peer| peer.store().keys()).await?;
        if client_keys.len().min(server_keys.len()) >= 5 + BATCH + 8 {
            break (client_keys, server_keys);
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // the last acknowledgements
    };

    println!("\n== 5. check");
    let twice = applied.values().filter(|&&n| n > 1).count();
    let (c, s) = (client_keys.len(), server_keys.len());
    println!(
        "journals: client {c}, server {s}; applied {} (twice: {twice})",
        applied.len()
    );
    let ok = got < BATCH && outcome == Some(Outcome::Resumed) && client_keys == server_keys;
    if !ok || twice != 0 || applied.len() != 5 + BATCH {
        return Err("a cut after the sync, no resumption, or journals that differ".into());
    }
    Ok(())
}
