//! The `feed` hot path: accepting one datagram (header check, tag check, replay window,
//! delivery as an event), timed with criterion and with heap allocations counted, side by
//! side with what a user would write instead (an owned, `Vec`-based decode and a `HashMap`
//! of sequence numbers, with no tag: the difference is the price of authentication).
//!
//! Run: `cargo bench --features testkit --bench feed`. The allocation counts are printed
//! before criterion's timings; docs/PERFORMANCE.md records both.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::collections::{HashMap, VecDeque};
use tether::connect::dual::feed::{FeedReceiver, FeedSender};
use tether::connect::dual::{
    DualClient, DualClientCommand, DualClientConfig, DualClientEvent, DualClientNotice,
    DualClientState, DualServer, DualServerConfig,
};
use tether::testkit::{CountingTokens, Pair, Side};
use tether::wire::{Element, FeedKey, Message, FEED_HEADER_LEN, FEED_MAGIC, SERVER_SENDER};
use tether::{Input, Instant, Link, Machine, Output};

mod support;
use support::alloc::{allocs, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

const FEED: Link = Link::feed(2);
/// A typical real-time update: 32 bytes of element data (a position, a velocity...).
const DATA: [u8; 32] = [7; 32];

/// A client connected to a server by running the real handshake in memory (the
/// testkit's `Pair`: `main` is link 1, `feed` link 2), and its session's feed key.
fn connected_client() -> (DualClient, FeedKey) {
    let client = DualClient::new(DualClientConfig::default());
    let server = DualServer::new(DualServerConfig::default(), CountingTokens::new());
    let mut pair = Pair::new(client, server)
        .granting_opens()
        .without_events()
        .strict(Side::Client)
        .strict(Side::Server);
    pair.client_in(Input::Command(DualClientCommand::Connect));
    pair.drive();
    assert_eq!(pair.client.state(), DualClientState::Connected);
    assert_eq!(pair.client.links(), (Some(Link::main(1)), Some(FEED)));
    let player = pair.client.player().unwrap();
    let key = FeedKey::derive(&pair.server.player_secret(player).unwrap(), player);
    let (c, _) = pair.into_machines();
    (c, key)
}

/// A key for the receiver benches (any session's would do).
fn some_key() -> FeedKey {
    FeedKey::derive(&tether::Token::new(&[0x42; 16]).unwrap(), 0)
}

/// `n` update datagrams from the server, tagged with `key`, sequence numbers from `first`,
/// each a `Bytes` slice of one receive buffer (as a UDP loop that reads into a `BytesMut`
/// produces).
fn datagrams(key: &FeedKey, first: u64, n: usize) -> Vec<Bytes> {
    let msg = Message::Update(Element {
        kind: 1,
        sid: 42,
        data: Bytes::from_static(&DATA),
    });
    let mut buf = BytesMut::with_capacity(n * 80);
    let mut lens = Vec::with_capacity(n);
    let mut tx = FeedSender::resume_at(SERVER_SENDER, first, key.clone());
    for _ in 0..n {
        let start = buf.len();
        tx.encode(&msg, &mut buf, 500).unwrap();
        lens.push(buf.len() - start);
    }
    let mut all = buf.freeze();
    lens.into_iter().map(|l| all.split_to(l)).collect()
}

/// tether, whole machine: `handle_input(Received)` then `poll_output` until `Wait`.
fn tether_accept(c: &mut DualClient, d: Bytes) -> usize {
    c.handle_input(Instant::ZERO, Input::Received(FEED, d))
        .unwrap();
    let mut n = 0;
    loop {
        match c.poll_output() {
            Output::Event(DualClientEvent::Notice(DualClientNotice::Update(e))) => {
                n += e.data.len()
            }
            Output::Wait(_) => return n,
            _ => {}
        }
    }
}

/// What a user would write instead: an owned struct, `to_vec` for the data, a `HashMap`
/// of newest sequence numbers per sender, a queue of events.
#[derive(Debug)]
#[allow(dead_code)]
struct OwnedUpdate {
    sender: u16,
    seq: u64,
    kind: u8,
    sid: u16,
    data: Vec<u8>,
}

struct Naive {
    newest: HashMap<u16, u64>,
    events: VecDeque<OwnedUpdate>,
}

impl Naive {
    fn accept(&mut self, d: &[u8]) -> usize {
        const H: usize = FEED_HEADER_LEN;
        if d.len() < H + 4 || d.len() > H + 500 {
            return 0;
        }
        let magic = u64::from_be_bytes(d[0..8].try_into().unwrap());
        if magic != FEED_MAGIC || d[H] != 1 {
            return 0;
        }
        let seq = u64::from_be_bytes(d[8..16].try_into().unwrap());
        let sender = u16::from_be_bytes([d[16], d[17]]);
        let newest = self.newest.entry(sender).or_insert(0);
        if seq <= *newest {
            return 0;
        }
        *newest = seq;
        self.events.push_back(OwnedUpdate {
            sender,
            seq,
            kind: d[H + 1],
            sid: u16::from_be_bytes([d[H + 2], d[H + 3]]),
            data: d[H + 4..].to_vec(),
        });
        self.events.pop_front().map(|u| u.data.len()).unwrap_or(0)
    }
}

fn count_allocations() {
    const N: usize = 100_000;
    let (mut c, key) = connected_client();
    let warm = datagrams(&key, 1_000, 1_000);
    for d in warm {
        tether_accept(&mut c, d);
    }
    let batch = datagrams(&key, 2_000, N);
    let before = allocs();
    for d in batch {
        black_box(tether_accept(&mut c, d));
    }
    let tether_machine = allocs() - before;

    let key = some_key();
    let mut rx = FeedReceiver::new(500, key.clone());
    let batch = datagrams(&key, 1, N);
    let before = allocs();
    for d in batch {
        black_box(rx.accept(d, Some(SERVER_SENDER)));
    }
    let tether_receiver = allocs() - before;

    let mut naive = Naive {
        newest: HashMap::new(),
        events: VecDeque::new(),
    };
    naive.accept(&datagrams(&key, 0, 1)[0]);
    let batch = datagrams(&key, 1, N);
    let before = allocs();
    for d in batch {
        black_box(naive.accept(&d));
    }
    let owned = allocs() - before;

    println!(
        "allocations per datagram over {N}: tether DualClient {:.3}, tether FeedReceiver {:.3}, owned Vec decode {:.3}",
        tether_machine as f64 / N as f64,
        tether_receiver as f64 / N as f64,
        owned as f64 / N as f64,
    );
}

/// Times `accept` on every datagram of fresh batches (sequence numbers going on from one
/// batch to the next), the batches made outside the timed section.
fn timed_batches(
    b: &mut criterion::Bencher,
    key: &FeedKey,
    mut next: u64,
    mut accept: impl FnMut(Bytes),
) {
    const CHUNK: usize = 10_000;
    b.iter_custom(|iters| {
        let mut total = std::time::Duration::ZERO;
        let mut left = iters as usize;
        while left > 0 {
            let n = left.min(CHUNK);
            let batch = datagrams(key, next, n);
            next += n as u64;
            let start = std::time::Instant::now();
            // Each datagram is dropped in the loop, as tether's are.
            for d in batch {
                accept(d);
            }
            total += start.elapsed();
            left -= n;
        }
        total
    })
}

fn bench(cr: &mut Criterion) {
    count_allocations();
    let mut g = cr.benchmark_group("feed_accept");
    g.throughput(Throughput::Elements(1));

    g.bench_function("tether_dual_client", |b| {
        let (mut c, key) = connected_client();
        // After the handshake's own datagrams.
        timed_batches(b, &key, 1_000, |d| {
            black_box(tether_accept(&mut c, d));
        })
    });

    g.bench_function("tether_feed_receiver", |b| {
        let key = some_key();
        let mut rx = FeedReceiver::new(500, key.clone());
        timed_batches(b, &key, 1, |d| {
            black_box(rx.accept(d, Some(SERVER_SENDER)));
        })
    });

    g.bench_function("owned_vec_decode", |b| {
        let mut naive = Naive {
            newest: HashMap::new(),
            events: VecDeque::new(),
        };
        timed_batches(b, &some_key(), 1, |d| {
            black_box(naive.accept(&d));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
