//! Two tether peers syncing journals over TCP with smol: token-merge connection in tether's
//! encoding (length-prefixed frames), journal sync on top (`tether::peer::Peer`).
//!
//! What it shows: the adapter between tether and smol is one small driver loop
//! (`examples/support/smol_driver.rs`); the `Peer` does the rest: the handshake, resuming
//! the session after the network drops the connection, and resynchronising both journals
//! from their confirmed marks so that every entry arrives exactly once.
//!
//! The run, server and client in this one process over loopback:
//!
//! 1. the client connects (fresh session); the server already holds 3 entries, the client
//!    appends 3; both journals reach the same 6 entries;
//! 2. the network drops the TCP connection;
//! 3. while it is down, each side appends 2 more entries;
//! 4. the client reconnects after its backoff and resumes the session; the journals sync
//!    the 4 new entries and end equal (10 entries, each applied once on the other side);
//! 5. the client disconnects formally.
//!
//! Run it: `cargo run --example smol_peer`. It exits 0 when every step happened, 1 otherwise,
//! and gives up after 30 seconds.

#[path = "support/smol_driver.rs"]
mod smol_driver;

use smol::LocalExecutor;
use smol_driver::{Driver, Role};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use tether::connect::merge::{
    self, MergeClient, MergeClientCommand, MergeClientEvent, MergeServer, Outcome,
};
use tether::connect::merge::{MergeServerEvent, TokenSource};
use tether::peer::{Peer, PeerCommand, PeerEvent};
use tether::sync::journal::{MemJournal, SyncConfig, SyncEvent};
use tether::wire::Entry;
use tether::{Duration, Token};

type Journal = MemJournal;
type ClientPeer = Peer<MergeClient, Journal>;
type ServerPeer = Peer<MergeServer<RandomTokens>, Journal>;

/// 128-bit tokens from std's randomly keyed hasher. tether draws no randomness of its own;
/// use a CSPRNG (such as `getrandom`) in a real server.
struct RandomTokens;

impl TokenSource for RandomTokens {
    fn next_token(&mut self) -> Token {
        random_token()
    }
}

fn random_token() -> Token {
    let state = std::collections::hash_map::RandomState::new();
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    Token::new(&bytes).expect("16 bytes make a token")
}

fn entry(author: &str, n: usize) -> Entry {
    Entry::new(
        author.as_bytes(),
        format!("r{n}").as_bytes(),
        format!("{author}'s note {n}").as_bytes(),
    )
}

fn show_sync(who: &str, event: &SyncEvent, applied: &mut BTreeMap<String, usize>) {
    if let SyncEvent::Applied {
        author, resource, ..
    } = event
    {
        let key = format!(
            "{}/{}",
            String::from_utf8_lossy(author),
            String::from_utf8_lossy(resource)
        );
        println!("[{who}] applied {key}");
        *applied.entry(key).or_insert(0) += 1;
    }
}

/// What the server saw, for the final check.
#[derive(Default)]
struct ServerLog {
    fresh: Cell<bool>,
    resumed: Cell<bool>,
    applied_once: Cell<usize>,
    /// The server's journal as of its last turn (the journal lives in the server's peer,
    /// in the server's task).
    keys: RefCell<Vec<String>>,
}

/// The server's loop: prints what happens; appends 2 entries when its session is lost;
/// returns when the session ends formally.
async fn serve(mut server: Driver<ServerPeer>, log: Rc<ServerLog>) {
    let mut applied = BTreeMap::new();
    *log.keys.borrow_mut() = keys(server.machine().store());
    loop {
        let events = server.turn().await;
        *log.keys.borrow_mut() = keys(server.machine().store());
        for event in events {
            match event {
                PeerEvent::Sync(_, e) => show_sync("server", &e, &mut applied),
                PeerEvent::Backlogged(s) => println!("[server] {s:?} is not acknowledging"),
                PeerEvent::Connection(e) => {
                    println!("[server] {e:?}");
                    match e {
                        MergeServerEvent::Up { outcome, .. } => {
                            log.fresh.set(log.fresh.get() || outcome == Outcome::Fresh);
                            log.resumed
                                .set(log.resumed.get() || outcome == Outcome::Resumed);
                        }
                        MergeServerEvent::Down { .. } => {
                            for n in 3..5 {
                                println!("[server] appends server/r{n} while the client is away");
                                server.command(PeerCommand::Append(entry("server", n)));
                            }
                        }
                        MergeServerEvent::Ended { .. } => {
                            let once = applied.values().filter(|&&n| n == 1).count();
                            log.applied_once
                                .set(if once == applied.len() { once } else { 0 });
                            return;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Turns the client, printing its events, until `done` holds. `done` is checked at least
/// every 50 ms too: the server's journal changes in the server's task, not on a client turn.
async fn until(
    client: &mut Driver<ClientPeer>,
    applied: &mut BTreeMap<String, usize>,
    mut done: impl FnMut(&ClientPeer, &[PeerEvent<MergeClientEvent, ()>]) -> bool,
) {
    loop {
        // Cancelling `turn` while it waits loses nothing: it has not taken a happening yet.
        let events = smol::future::or(client.turn(), async {
            smol::Timer::after(std::time::Duration::from_millis(50)).await;
            Vec::new()
        })
        .await;
        for event in &events {
            match event {
                PeerEvent::Sync(_, e) => show_sync("client", e, applied),
                PeerEvent::Connection(e) => println!("[client] {e:?}"),
                PeerEvent::Backlogged(_) => println!("[client] the server is not acknowledging"),
            }
        }
        if done(client.machine(), &events) {
            return;
        }
    }
}

fn keys(j: &Journal) -> Vec<String> {
    j.keys()
        .iter()
        .map(|(a, r)| {
            format!(
                "{}/{}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(r)
            )
        })
        .collect()
}

async fn scenario(ex: &LocalExecutor<'_>) -> bool {
    let epoch = std::time::Instant::now();
    let listener = smol::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    println!("smol_peer: tether server (tether's encoding) on {addr}");
    let sync = SyncConfig::default();

    let server = Peer::new(
        MergeServer::new(merge::MergeServerConfig::default(), RandomTokens),
        sync.clone(),
        MemJournal::new(1, 10_000),
    );
    let mut server = Driver::new(server, Role::Server { listener }, epoch, "server");
    for n in 0..3 {
        server.command(PeerCommand::Append(entry("server", n)));
    }
    println!("[server] journal: {:?}", keys(server.machine().store()));
    let log = Rc::new(ServerLog::default());
    let server_task = ex.spawn(serve(server, log.clone()));

    let client = MergeClient::new(
        tether::Instant::ZERO,
        merge::MergeClientConfig {
            reconnect_initial: Duration::from_millis(300),
            ..Default::default()
        },
        random_token(),
    )
    .expect("a 128-bit token");
    let client = Peer::new(client, sync, MemJournal::new(2, 10_000));
    let mut client = Driver::new(client, Role::Client { addr }, epoch, "client");
    let mut applied = BTreeMap::new();
    let both_have = |n: usize| {
        let log = log.clone();
        move |client: &ClientPeer, _: &[PeerEvent<MergeClientEvent, ()>]| {
            let c = keys(client.store());
            c.len() == n && *log.keys.borrow() == c
        }
    };

    println!("\n-- 1. connect and sync");
    for n in 0..3 {
        client.command(PeerCommand::Append(entry("client", n)));
    }
    until(&mut client, &mut applied, both_have(6)).await;
    println!(
        "both journals: {} entries, equal",
        keys(client.machine().store()).len()
    );

    println!("\n-- 2. the network drops the connection");
    client.drop_transports();
    until(&mut client, &mut applied, |_, events| {
        events.iter().any(|e| {
            matches!(
                e,
                PeerEvent::Connection(MergeClientEvent::Down { session: () })
            )
        })
    })
    .await;

    println!("\n-- 3. both sides write while apart");
    for n in 3..5 {
        println!("[client] appends client/r{n} while disconnected");
        client.command(PeerCommand::Append(entry("client", n)));
    }

    println!("\n-- 4. resume and resync");
    let mut resumed = false;
    let synced = both_have(10);
    until(&mut client, &mut applied, |peer, events| {
        resumed |= events.iter().any(|e| {
            matches!(
                e,
                PeerEvent::Connection(MergeClientEvent::Up {
                    session: (),
                    outcome: Outcome::Resumed
                })
            )
        });
        resumed && synced(peer, events)
    })
    .await;
    let (c, s) = (keys(client.machine().store()), log.keys.borrow().clone());
    println!("both journals: {} entries, equal: {}", c.len(), c == s);

    println!("\n-- 5. formal disconnection");
    for event in client.command(PeerCommand::Connection(MergeClientCommand::Disconnect)) {
        println!("[client] {event:?}");
    }
    server_task.await;

    let client_once = applied.values().all(|&n| n == 1);
    let ok = log.fresh.get()
        && log.resumed.get()
        && c == s
        && c.len() == 10
        && client_once
        && applied.len() == 5
        && log.applied_once.get() == 5;
    println!(
        "applied exactly once: client {} of 5, server {} of 5",
        if client_once { applied.len() } else { 0 },
        log.applied_once.get()
    );
    ok
}

fn main() {
    let ex = LocalExecutor::new();
    let outcome = smol::block_on(ex.run(smol::future::or(
        async { Some(scenario(&ex).await) },
        async {
            smol::Timer::after(std::time::Duration::from_secs(30)).await;
            None
        },
    )));
    match outcome {
        Some(true) => println!("\nsmol_peer: connect, drop, resume and journal sync: ok"),
        Some(false) => {
            eprintln!("smol_peer: a step did not happen as it must");
            std::process::exit(1);
        }
        None => {
            eprintln!("smol_peer: timed out");
            std::process::exit(1);
        }
    }
}
