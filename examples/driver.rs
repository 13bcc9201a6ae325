//! README's driver, whole and checked: a token-merge client `Peer` driven over tokio TCP by
//! one hand-written loop, against a server in the same process (run by the ready adapter,
//! `tether-tokio`).
//!
//! The loop is what every driver does: hand the peer's outputs to the socket until it
//! says `Wait(deadline)`, then wait for bytes or the deadline, and give that back as one
//! input. Each new TCP connection gets a fresh link id, so bytes of an old one are never
//! taken for the new one; a lost or refused connection is an input (`Closed`), never the
//! end of the loop: the peer reconnects by itself with its backoff.
//!
//! The run: the client connects and syncs (it learns the server's entry), the test cuts
//! its TCP connection once, the client reconnects and resumes its session, and the entry
//! it appended while cut reaches the server. Exits 0 when all of that happened, 1 after
//! 20 seconds otherwise.
//!
//! Run it: `cargo run --example driver`.

use bytes::Bytes;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use tether::connect::merge::{MergeClient, MergeClientEvent, MergeServer, Outcome};
use tether::peer::{Peer, PeerCommand, PeerEvent};
use tether::sync::journal::{JournalStore, MemJournal, SyncConfig, SyncEvent};
use tether::wire::Entry;
use tether::{Input, Instant, Link, Machine, Output, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// 128-bit tokens from std's randomly keyed hasher (use a CSPRNG such as `getrandom` in a
/// real application: tether draws no randomness of its own).
fn random_token() -> Token {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    Token::new(&bytes).expect("16 bytes make a token")
}

/// Reads from the stream, or waits for ever when there is none (the other branch of the
/// `select!` is then the only one that can fire). `None`: the stream ended or failed.
async fn read(stream: &mut Option<TcpStream>, buf: &mut [u8]) -> Option<usize> {
    match stream {
        Some(s) => match s.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

/// What the client saw, for the final check.
#[derive(Default)]
struct Seen {
    resumed: Cell<bool>,
    learned: Cell<bool>,
    /// The server holds the entry the client appended while cut.
    server_has: Cell<bool>,
}

// --- README's driver, from here to the end of `client` ----------------------------------
async fn client(addr: SocketAddr, cut: Rc<Cell<bool>>, seen: Rc<Seen>) {
    let start = tokio::time::Instant::now();
    let now = move || Instant::from_micros(start.elapsed().as_micros() as u64);
    let conn = MergeClient::new(now(), Default::default(), random_token()).expect("a token");
    let mut peer = Peer::new(conn, SyncConfig::default(), MemJournal::new(2, 10_000));
    let (mut stream, mut link, mut next_id) = (None::<TcpStream>, Link::main(0), 0);
    let mut buf = vec![0u8; 16 * 1024];
    while !peer.is_closed() {
        // 1. Everything the peer has to say, until it waits.
        let deadline = loop {
            let input = match peer.poll_output() {
                Output::Transmit(t) => match stream.as_mut() {
                    Some(s) => match s.write_all(&t.payload).await {
                        Ok(()) => continue,
                        Err(_) => Input::Closed(link), // the write failed: the link is lost
                    },
                    None => continue, // a link already closed
                },
                Output::Event(e) => {
                    on_event(&mut peer, now(), e, &seen);
                    continue;
                }
                Output::Open(_) => {
                    next_id += 1; // a fresh id per transport
                    link = Link::main(next_id);
                    stream = TcpStream::connect(addr).await.ok();
                    if let Some(s) = &stream {
                        let _ = s.set_nodelay(true);
                    }
                    let _ = peer.handle_input(now(), Input::Opened(link));
                    match stream {
                        Some(_) => continue,
                        None => Input::Closed(link), // refused: the peer retries later
                    }
                }
                Output::Close(_) => Input::Closed(link),
                Output::Wait(deadline) => break deadline,
            };
            if let Input::Closed(_) = input {
                stream = None;
            }
            let _ = peer.handle_input(now(), input);
        };
        // 2. Wait for bytes or for the deadline, whichever comes first.
        let sleep = deadline.map(|d| start + std::time::Duration::from_micros(d.as_micros()));
        let input = tokio::select! {
            n = read(&mut stream, &mut buf) => match n {
                Some(n) => Input::Received(link, Bytes::copy_from_slice(&buf[..n])),
                None => { stream = None; Input::Closed(link) }
            },
            _ = async { match sleep {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            } } => Input::Timeout,
        };
        // Errors are typed and the peer stays usable: a driver logs them and goes on.
        if let Err(e) = peer.handle_input(now(), input) {
            eprintln!("client: {e}");
        }
        // (Not part of a driver: the demonstration cuts the connection once.)
        if cut.replace(false) {
            stream = None;
            let _ = peer.handle_input(now(), Input::Closed(link));
            let _ = peer.handle_input(
                now(),
                Input::Command(PeerCommand::Append(Entry::new(
                    b"client",
                    b"r1",
                    b"while cut",
                ))),
            );
        }
        if seen.resumed.get() && seen.server_has.get() {
            return;
        }
    }
}
// --- end of README's driver --------------------------------------------------------------

/// The application's side of the client: prints what happens.
fn on_event(
    peer: &mut Peer<MergeClient, MemJournal>,
    _now: Instant,
    event: PeerEvent<MergeClientEvent, ()>,
    seen: &Seen,
) {
    println!("client: {event:?}");
    if let PeerEvent::Connection(MergeClientEvent::Up {
        outcome: Outcome::Resumed,
        ..
    }) = event
    {
        seen.resumed.set(true);
    }
    seen.learned.set(peer.store().contains(b"server", b"r1"));
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let local = tokio::task::LocalSet::new();
    let ok = local
        .run_until(async {
            tokio::time::timeout(std::time::Duration::from_secs(20), run())
                .await
                .unwrap_or(false)
        })
        .await;
    if ok {
        println!("driver: connect, sync, cut, resume, sync: ok");
    } else {
        eprintln!("driver: a step did not happen in time");
        std::process::exit(1);
    }
}

async fn run() -> bool {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut server = Peer::new(
        MergeServer::new(Default::default(), random_token),
        SyncConfig::default(),
        MemJournal::new(1, 10_000),
    );
    server
        .handle_input(
            Instant::ZERO,
            Input::Command(PeerCommand::Append(Entry::new(b"server", b"r1", b"hello"))),
        )
        .expect("append");
    let (_server, mut events) = tether_tokio::spawn(server, tether_tokio::Server::tcp(listener));
    let (cut, seen) = (Rc::new(Cell::new(false)), Rc::new(Seen::default()));
    let flag = seen.clone();
    tokio::task::spawn_local(async move {
        while let Some(event) = events.recv().await {
            if let PeerEvent::Sync(_, SyncEvent::Applied { resource, .. }) = event {
                flag.server_has
                    .set(flag.server_has.get() || &resource[..] == b"r1");
            }
        }
    });

    // Cut the client's connection once it has learned the server's entry.
    let (c, s) = (cut.clone(), seen.clone());
    tokio::task::spawn_local(async move {
        while !s.learned.get() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        c.set(true);
    });
    // The client's loop ends when it sees both flags after one of its inputs; the server's
    // flag may be set after the client's last input, so watch the flags as well.
    let done = || seen.resumed.get() && seen.learned.get() && seen.server_has.get();
    tokio::select! {
        _ = client(addr, cut, seen.clone()) => {}
        _ = async { while !done() { tokio::time::sleep(std::time::Duration::from_millis(10)).await } } => {}
    }
    done()
}
