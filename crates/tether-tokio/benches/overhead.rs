//! What the adapter costs per message: the round trip of a small message between two
//! adapter-driven token-merge `Peer`s over loopback TCP (the client appends a journal
//! entry with a 64-byte payload; once the server's peer has applied it, the server's
//! application appends an echo entry, and the round trip ends when the client's peer has
//! applied that), against a bare tokio TCP echo of 64 bytes over the same loopback, in the
//! same run.
//!
//! Both run on one multi-thread runtime (2 workers). The adapter's round trip includes
//! everything a real one has: the handle's channel, the machines (framing, sequence
//! numbers, acknowledgements, journal sync: list, apply, confirm), the socket tasks, the
//! event channels and the echoing task. It is a journal sync round trip, not a raw
//! message's: the figure is an upper bound on what the adapter itself adds.
//!
//! `cargo bench -p tether-tokio --bench overhead`; the ratio is printed at the end.

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::{Duration as StdDuration, Instant as StdInstant};
use tether::connect::merge::{MergeClient, MergeClientEvent, MergeServer, Outcome};
use tether::peer::{Peer, PeerCommand, PeerEvent};
use tether::sync::journal::{MemJournal, SyncConfig, SyncEvent};
use tether::wire::Entry;
use tether::{Instant, Token};
use tether_tokio::{Client, Events, Handle, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type ClientPeer = Peer<MergeClient, MemJournal>;
type ClientEvents = Events<PeerEvent<MergeClientEvent, ()>>;

const PAYLOAD: [u8; 64] = [0x5a; 64];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// An adapter-driven client and server `Peer`, connected; the server's application
/// echoes every message it receives.
async fn adapter_pair() -> (Handle<ClientPeer>, ClientEvents) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut n = 0u8;
    let tokens = move || {
        n = n.wrapping_add(1);
        Token::new(&[n; 16]).unwrap()
    };
    let server = Peer::new(
        MergeServer::new(Default::default(), tokens),
        SyncConfig::default(),
        MemJournal::new(1, 10_000_000),
    );
    let (server, mut server_events) = tether_tokio::spawn(server, Server::tcp(listener));
    tokio::spawn(async move {
        while let Some(e) = server_events.recv().await {
            if let PeerEvent::Sync(_, SyncEvent::Applied { resource, .. }) = e {
                let _ = server
                    .command(PeerCommand::Append(Entry::new(
                        b"server", &resource, &PAYLOAD,
                    )))
                    .await;
            }
        }
    });
    let conn = MergeClient::new(
        Instant::ZERO,
        Default::default(),
        Token::new(&[0xc1; 16]).unwrap(),
    )
    .unwrap();
    let client = Peer::new(conn, SyncConfig::default(), MemJournal::new(2, 10_000_000));
    let (client, mut events) = tether_tokio::spawn(client, Client::tcp(addr));
    while let Some(e) = events.recv().await {
        if let PeerEvent::Connection(MergeClientEvent::Up {
            outcome: Outcome::Fresh,
            ..
        }) = e
        {
            break;
        }
    }
    (client, events)
}

async fn adapter_round_trip(client: &Handle<ClientPeer>, events: &mut ClientEvents, n: &mut u64) {
    *n += 1;
    let resource = n.to_be_bytes();
    client
        .command(PeerCommand::Append(Entry::new(
            b"client", &resource, &PAYLOAD,
        )))
        .await
        .unwrap();
    loop {
        match events.recv().await {
            Some(PeerEvent::Sync(_, SyncEvent::Applied { resource: r, .. }))
                if r[..] == resource =>
            {
                return
            }
            Some(_) => continue,
            None => panic!("the driver stopped"),
        }
    }
}

/// A bare tokio TCP echo of 64 bytes, and its client stream.
async fn bare_pair() -> TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

async fn bare_round_trip(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    s.write_all(&PAYLOAD).await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
}

fn overhead(c: &mut Criterion) {
    let rt = runtime();
    let (client, mut events) = rt.block_on(adapter_pair());
    let mut bare = rt.block_on(bare_pair());
    let mut n = 0u64;
    let mut group = c.benchmark_group("round_trip_64B");
    group.bench_function("adapter_peers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = StdInstant::now();
                for _ in 0..iters {
                    adapter_round_trip(&client, &mut events, &mut n).await;
                }
                t.elapsed()
            })
        })
    });
    group.bench_function("bare_tokio_tcp", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = StdInstant::now();
                for _ in 0..iters {
                    bare_round_trip(&mut bare).await;
                }
                t.elapsed()
            })
        })
    });
    group.finish();

    // The same-run ratio, from one more timed batch of each, interleaved.
    let batches = 2_000u32;
    let (mut adapter, mut plain) = (StdDuration::ZERO, StdDuration::ZERO);
    rt.block_on(async {
        for _ in 0..4 {
            let t = StdInstant::now();
            for _ in 0..batches / 4 {
                adapter_round_trip(&client, &mut events, &mut n).await;
            }
            adapter += t.elapsed();
            let t = StdInstant::now();
            for _ in 0..batches / 4 {
                bare_round_trip(&mut bare).await;
            }
            plain += t.elapsed();
        }
    });
    let (a, p) = (adapter / batches, plain / batches);
    println!(
        "overhead: round trip of 64 bytes: adapter-driven peers {a:?}, bare tokio TCP {p:?}, ratio {:.2}",
        a.as_secs_f64() / p.as_secs_f64()
    );
}

criterion_group!(benches, overhead);
criterion_main!(benches);
