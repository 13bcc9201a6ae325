//! # tether demo: a real client and server over loopback
//!
//! Run it with `cargo run --example demo`.
//!
//! A server and a client, each a [`tether::peer::Peer`] over the dual-channel profile
//! (seed 003: TCP for `main`, UDP for `feed`), driven by the small tokio adapter in
//! `examples/support/tokio_driver.rs`. The demo:
//!
//! 1. connects (CONN_INIT, feed init over UDP, final auth, CONN_OK);
//! 2. exchanges journal entries both ways, and feed updates over UDP;
//! 3. has the server publish a large batch, and cuts the client's TCP connection in the
//!    middle of the sync that carries it;
//! 4. lets the client reconnect `main` by itself (the session continues: "resumed") and
//!    resync from its confirmed mark;
//! 5. checks that both journals hold exactly the same entries, each applied once, and exits
//!    with status 0 (1 if anything is wrong, or if it takes more than 30 s).

#[path = "support/tokio_driver.rs"]
mod driver;

use driver::{Driver, Role};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration as StdDuration;
use tether::connect::dual::{
    self, DualClient, DualClientCommand, DualClientEvent, DualServer, DualServerEvent,
    DualServerNotice, Outcome,
};
use tether::peer::{Peer, PeerCommand, PeerEvent};
use tether::sync::journal::{MemJournal, SyncConfig, SyncEvent};
use tether::wire::{Element, Entry, Message};
use tether::Token;
use tokio::net::{TcpListener, UdpSocket};

type Journal = MemJournal;
type ServerPeer = Peer<DualServer<Tokens>, Journal>;
type ClientPeer = Peer<DualClient, Journal>;

/// The server's tokens: 128 bits each. A real server draws them from the OS's randomness
/// (e.g. `getrandom`); the demo derives them from the clock so that it needs no extra crate.
struct Tokens(u64);

impl dual::TokenSource for Tokens {
    fn next_token(&mut self) -> Token {
        let mut bytes = [0u8; 16];
        for chunk in bytes.chunks_mut(8) {
            // splitmix64
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_be_bytes());
        }
        Token::new(&bytes).expect("16 bytes make a token")
    }
}

const BATCH: usize = 3_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let outcome = local.block_on(&runtime, async {
        tokio::time::timeout(StdDuration::from_secs(30), demo()).await
    });
    match outcome {
        Ok(Ok(())) => println!("\ndemo: OK"),
        Ok(Err(why)) => {
            eprintln!("\ndemo: FAILED: {why}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("\ndemo: FAILED: timed out after 30 s");
            std::process::exit(1);
        }
    }
}

fn sync_config() -> SyncConfig {
    SyncConfig {
        idle_timeout: None,
        ..SyncConfig::default()
    }
}

fn entry(author: &str, n: usize, text: &str) -> Entry {
    Entry::new(
        author.as_bytes(),
        format!("{author}-{n}").as_bytes(),
        text.as_bytes(),
    )
}

async fn demo() -> Result<(), String> {
    let epoch = tokio::time::Instant::now();

    // --- the server: a TCP listener for `main`, a UDP socket for `feed` -----------------
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let feed = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let (main_addr, feed_addr) = (
        listener.local_addr().map_err(|e| e.to_string())?,
        feed.local_addr().map_err(|e| e.to_string())?,
    );
    println!("server: listening on tcp {main_addr} (main) and udp {feed_addr} (feed)");
    let server_peer: ServerPeer = Peer::new(
        DualServer::new(
            dual::DualServerConfig::default(),
            Tokens(epoch.elapsed().as_nanos() as u64 | 1),
        ),
        sync_config(),
        MemJournal::new(1, 100_000),
    );
    let mut server = Driver::new(
        server_peer,
        Role::Server {
            main: listener,
            feed: Arc::new(feed),
        },
        epoch,
    );
    let to_server = server.command_sender();
    // The server's journal lives in its peer, in the server's task: the task publishes
    // what it holds after each turn, for the checks below.
    let server_keys = Rc::new(RefCell::new(BTreeSet::new()));
    let published = server_keys.clone();
    tokio::task::spawn_local(async move {
        loop {
            let events = server.turn().await;
            *published.borrow_mut() = server.machine().store().keys();
            for event in events {
                match event {
                    PeerEvent::Connection(DualServerEvent::Up {
                        session: player,
                        outcome,
                    }) => {
                        println!("server: player {player} connected ({outcome:?})")
                    }
                    PeerEvent::Connection(DualServerEvent::Down { session: player }) => {
                        println!("server: player {player} lost main; keeping the session")
                    }
                    PeerEvent::Connection(DualServerEvent::Notice(DualServerNotice::Update {
                        player,
                        element,
                    })) => println!(
                        "server: feed update from player {player}: sid {} = {:?}",
                        element.sid,
                        String::from_utf8_lossy(&element.data)
                    ),
                    _ => {}
                }
            }
        }
    });

    // --- the client ----------------------------------------------------------------------
    let client_peer: ClientPeer = Peer::new(
        DualClient::new(dual::DualClientConfig::default()),
        sync_config(),
        MemJournal::new(2, 100_000),
    );
    let mut client = Driver::new(
        client_peer,
        Role::Client {
            main: main_addr,
            feed: feed_addr,
        },
        epoch,
    );
    let mut applied: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let log = |events: Vec<PeerEvent<DualClientEvent, ()>>,
               applied: &mut BTreeMap<Vec<u8>, usize>|
     -> Option<Outcome> {
        let mut connected = None;
        for event in events {
            match event {
                PeerEvent::Connection(DualClientEvent::Up { outcome, .. }) => {
                    println!("client: connected ({outcome:?})");
                    connected = Some(outcome);
                }
                PeerEvent::Connection(DualClientEvent::Down { session: () }) => {
                    println!("client: main lost; reconnecting")
                }
                PeerEvent::Sync((), SyncEvent::Applied { resource, .. }) => {
                    *applied.entry(resource.to_vec()).or_insert(0) += 1;
                }
                _ => {}
            }
        }
        connected
    };

    println!("\n== 1. connect");
    let events = client
        .command(PeerCommand::Connection(DualClientCommand::Connect))
        .await;
    let mut connected = log(events, &mut applied);
    while connected.is_none() {
        connected = log(client.turn().await, &mut applied);
    }

    println!("\n== 2. exchange journal entries and feed updates");
    for n in 0..5 {
        to_server
            .send(PeerCommand::Append(entry(
                "server",
                n,
                "hello from the server",
            )))
            .map_err(|_| "server gone")?;
        let events = client
            .command(PeerCommand::Append(entry(
                "client",
                n,
                "hello from the client",
            )))
            .await;
        log(events, &mut applied);
    }
    for (sid, text) in [(1u16, "x=10"), (2, "y=20"), (3, "z=30")] {
        let update = Message::Update(Element {
            kind: 1,
            sid,
            data: bytes::Bytes::from(text),
        });
        let events = client
            .command(PeerCommand::Connection(DualClientCommand::SendFeed(update)))
            .await;
        log(events, &mut applied);
    }
    while client.machine().store().keys().len() < 10 || server_keys.borrow().clone().len() < 10 {
        log(client.turn().await, &mut applied);
    }
    println!(
        "client: journal has {} entries, server: {}",
        client.machine().store().keys().len(),
        server_keys.borrow().clone().len()
    );

    println!("\n== 3. the server publishes {BATCH} entries; the TCP connection drops mid-sync");
    for n in 0..BATCH {
        to_server
            .send(PeerCommand::Append(entry("batch", n, "a larger batch")))
            .map_err(|_| "server gone")?;
    }
    let before = applied.len();
    while applied.len() == before {
        log(client.turn().await, &mut applied);
    }
    let got = applied.len() - 5;
    println!("client: {got} of {BATCH} batch entries applied; cutting TCP now");
    client.drop_tcp();
    if got >= BATCH {
        return Err("the cut came after the sync ended".into());
    }
    // The client appends while it is disconnected: this must arrive too.
    for n in 5..8 {
        let events = client
            .command(PeerCommand::Append(entry(
                "client",
                n,
                "written while offline",
            )))
            .await;
        log(events, &mut applied);
    }

    println!("\n== 4. reconnect, resume, resync");
    let mut resumed = false;
    let total = 5 + BATCH + 8;
    while !resumed
        || client.machine().store().keys().len() < total
        || server_keys.borrow().clone().len() < total
    {
        if log(client.turn().await, &mut applied) == Some(Outcome::Resumed) {
            resumed = true;
        }
    }

    println!("\n== 5. check");
    let client_keys = client.machine().store().keys();
    let server_keys = server_keys.borrow().clone();
    println!("client journal: {} entries", client_keys.len());
    println!("server journal: {} entries", server_keys.len());
    let twice = applied.values().filter(|&&n| n > 1).count();
    println!(
        "entries applied on the client: {} (applied twice: {twice})",
        applied.len()
    );
    println!("journals equal: {}", client_keys == server_keys);
    if client_keys != server_keys {
        return Err("journals differ".into());
    }
    if twice != 0 || applied.len() != 5 + BATCH {
        return Err(format!("applied {} entries, {twice} twice", applied.len()));
    }
    Ok(())
}
