//! The session core's cost: delivery (numbering, cumulative ACK, replay buffer) on a
//! stream of application messages, beside the same stream without it, in the same run.
//!
//! - `delivery/plain`: 1M 64-byte App messages encoded as frames into one growing buffer
//!   (split off per message, as the machines do), cut into 64 KiB reads, decoded by
//!   `FrameDecoder` and `Message::decode`: the path a session had before delivery.
//! - `delivery/numbered`: the same, plus the sender's replay buffer (`push_write`, as the
//!   session core sends on a link that is up, `next_to_write` when frames wait) and the
//!   receiver's count and ACK every 32 messages; each ACK is encoded as a frame, decoded
//!   by the sender and applied.
//! - `machines/merge`: the whole token-merge client and server, the client sending 1M App
//!   messages that the server hands out as events (ACKs going back).
//!
//! Before criterion runs it prints allocations per message, the share of bytes the ACKs
//! add, an idle session's heartbeat bytes per minute, and the two `delivery` streams run
//! alternately (`TETHER_ROUNDS` rounds, 15 unless set) with the ratio of their minima
//! and the median of each round's ratio: on a loaded machine these are steadier than two
//! criterion runs taken one after the other.
//!
//! For a repeatable figure, count instructions with callgrind:
//!
//! ```text
//! cargo bench --features testkit --bench session --no-run   # prints the binary's path
//! TETHER_CALLGRIND=1 valgrind --tool=callgrind --toggle-collect='*timed_plain*' \
//!     target/release/deps/session-<hash>
//! TETHER_CALLGRIND=1 valgrind --tool=callgrind --toggle-collect='*timed_numbered*' \
//!     target/release/deps/session-<hash>
//! ```
//!
//! With `TETHER_CALLGRIND` set the binary runs each stream once (each inside one
//! `#[inline(never)]` function) and exits without criterion; divide by 1,000,000.
//! (`TETHER_CALLGRIND=plain` or `=numbered` runs only that stream, for a sampling
//! profiler; `TETHER_CALLGRIND=machines` with `--toggle-collect='*timed_machines*'`
//! counts 100,000 messages through the token-merge client and server.)

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::sync::atomic::Ordering;
use tether::connect::merge;
use tether::session::{Delivery, DeliveryConfig};
use tether::testkit::scenario::SeqTokens;
use tether::wire::{FrameDecoder, Message};
use tether::{Duration, Input, Instant, Link, Machine, Output, Token};

mod support;
use support::alloc::{Counting, ALLOCS};

#[global_allocator]
static GLOBAL: Counting = Counting;

const MESSAGES: usize = 1_000_000;
const CHUNK: usize = 64 * 1024;

fn payload() -> Message {
    Message::App(Bytes::from_static(&[0x5a; 64]))
}

/// Sends MESSAGES through encode, 64 KiB reads and decode; with `numbered`, through
/// delivery on both ends too. Returns (messages received, ACK bytes sent).
fn stream(numbered: bool) -> (usize, usize) {
    let msg = payload();
    let cfg = DeliveryConfig::default();
    let (mut tx, mut rx) = (Delivery::new(cfg), Delivery::new(cfg));
    let mut out = BytesMut::with_capacity(CHUNK * 2);
    let mut wire = BytesMut::with_capacity(CHUNK * 2);
    let mut back = BytesMut::with_capacity(1024);
    let mut dec = FrameDecoder::new(1 << 20);
    let (mut got, mut ack_bytes) = (0usize, 0usize);
    let mut sent = 0usize;
    while got < MESSAGES {
        // Write up to one read's worth.
        while wire.len() < CHUNK && sent < MESSAGES {
            msg.encode_framed(&mut out);
            let frame = out.split().freeze();
            if numbered {
                // As the session core sends on a link that is up.
                match tx.push_write(frame) {
                    Ok(Some(f)) => wire.extend_from_slice(&f),
                    Ok(None) => {
                        while let Some(f) = tx.next_to_write() {
                            wire.extend_from_slice(&f);
                        }
                    }
                    Err(_) => break,
                }
            } else {
                wire.extend_from_slice(&frame);
            }
            sent += 1;
        }
        dec.push_bytes(wire.split().freeze());
        while let Ok(Some(frame)) = dec.next_frame() {
            let len = frame.len();
            let m = Message::decode(frame).unwrap();
            black_box(&m);
            got += 1;
            if numbered && rx.on_received(len) {
                // The ACK as the machines send it: a frame back, decoded, applied.
                Message::Ack {
                    received: rx.take_ack(),
                }
                .encode_framed(&mut back);
                let ack = back.split().freeze();
                ack_bytes += ack.len();
                match Message::decode(ack.slice(4..)) {
                    Ok(Message::Ack { received }) => tx.on_ack(received).unwrap(),
                    other => panic!("not an ACK: {other:?}"),
                }
            }
        }
    }
    (got, ack_bytes)
}

#[inline(never)]
fn timed_plain() -> (usize, usize) {
    stream(false)
}

#[inline(never)]
fn timed_numbered() -> (usize, usize) {
    stream(true)
}

/// 100,000 messages through the token-merge client and server (a connected pair).
#[inline(never)]
fn timed_machines(p: &mut Pair) -> (usize, usize) {
    machines(p, 100_000)
}

/// Runs the two streams alternately `rounds` times each; prints the minimum and median
/// of each, the ratio of the minima and the median of the rounds' ratios (each round's two
/// runs one after the other, under the same load).
fn interleaved(rounds: usize) {
    let (mut plain, mut numbered, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        let t = std::time::Instant::now();
        black_box(timed_plain());
        let p = t.elapsed().as_secs_f64() * 1e3;
        let t = std::time::Instant::now();
        black_box(timed_numbered());
        let n = t.elapsed().as_secs_f64() * 1e3;
        plain.push(p);
        numbered.push(n);
        ratios.push(n / p);
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2])
    };
    let ((pmin, pmed), (nmin, nmed)) = (stats(&mut plain), stats(&mut numbered));
    let (_, ratio) = stats(&mut ratios);
    println!(
        "delivery, alternating, {} rounds: plain min {pmin:.1} ms median {pmed:.1} ms; numbered min {nmin:.1} ms median {nmed:.1} ms; numbered / plain: {:.3} (minima), {ratio:.3} (median of the rounds)",
        ratios.len(),
        nmin / pmin,
    );
}

type Pair = (merge::MergeClient, merge::MergeServer<SeqTokens>);

fn pair() -> Pair {
    let now = Instant::ZERO;
    let mut c = merge::MergeClient::new(
        now,
        merge::MergeClientConfig::default(),
        Token::new(&[7; 16]).unwrap(),
    )
    .unwrap();
    let mut s = merge::MergeServer::new(merge::MergeServerConfig::default(), SeqTokens::new(1));
    assert!(matches!(c.poll_output(), Output::Open(_)));
    c.handle_input(now, Input::Opened(Link::main(1))).unwrap();
    s.handle_input(now, Input::Opened(Link::main(1))).unwrap();
    shuttle(&mut c, &mut s, now);
    (c, s)
}

/// Moves every transmit across until both are quiet; returns (server messages, bytes
/// from the server to the client).
fn shuttle(
    c: &mut merge::MergeClient,
    s: &mut merge::MergeServer<SeqTokens>,
    now: Instant,
) -> (usize, usize) {
    let (mut msgs, mut back) = (0, 0);
    loop {
        let mut moved = false;
        while let Some(out) = next(c.poll_output()) {
            if let Output::Transmit(t) = out {
                s.handle_input(now, Input::Received(t.link, t.payload))
                    .unwrap();
                moved = true;
            }
        }
        while let Some(out) = next(s.poll_output()) {
            match out {
                Output::Transmit(t) => {
                    back += t.payload.len();
                    c.handle_input(now, Input::Received(t.link, t.payload))
                        .unwrap();
                    moved = true;
                }
                Output::Event(merge::MergeServerEvent::Message { message, .. }) => {
                    black_box(message);
                    msgs += 1;
                }
                _ => {}
            }
        }
        if !moved {
            return (msgs, back);
        }
    }
}

fn next<E>(o: Output<E>) -> Option<Output<E>> {
    match o {
        Output::Wait(_) => None,
        other => Some(other),
    }
}

fn machines(p: &mut Pair, n: usize) -> (usize, usize) {
    let now = Instant::ZERO;
    let (mut got, mut back) = (0, 0);
    let mut left = n;
    while left > 0 {
        // Batches as a driver sends between reads.
        for _ in 0..left.min(256) {
            p.0.handle_input(
                now,
                Input::Command(merge::MergeClientCommand::Send(payload())),
            )
            .unwrap();
            left -= 1;
        }
        let (m, b) = shuttle(&mut p.0, &mut p.1, now);
        got += m;
        back += b;
    }
    (got, back)
}

fn report() {
    for (name, numbered) in [("plain", false), ("numbered", true)] {
        let before = ALLOCS.load(Ordering::Relaxed);
        let (got, ack) = stream(numbered);
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        println!(
            "delivery/{name}: {got} messages, {:.4} allocations per message, ACK bytes {:.3} % of the stream",
            allocs as f64 / got as f64,
            100.0 * ack as f64 / (got * 69) as f64
        );
    }
    let mut p = pair();
    let before = ALLOCS.load(Ordering::Relaxed);
    let (got, back) = machines(&mut p, MESSAGES);
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    println!(
        "machines/merge: {got} messages, {:.4} allocations per message, bytes back (ACKs) {:.3} % of the {} bytes sent",
        allocs as f64 / got as f64,
        100.0 * back as f64 / (got * 69) as f64,
        got * 69
    );
    // An idle session for ten minutes of virtual time: the heartbeat's bytes.
    let (mut c, mut s) = pair();
    let mut t = Instant::ZERO;
    let end = Instant::ZERO + Duration::from_secs(600);
    let mut bytes = 0usize;
    while t < end {
        let next = [c.poll_timeout(), s.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(n) = next else { break };
        t = n.max(t);
        c.handle_input(t, Input::Timeout).unwrap();
        s.handle_input(t, Input::Timeout).unwrap();
        loop {
            let mut moved = false;
            while let Some(o) = next_t(c.poll_output()) {
                bytes += o.payload.len();
                s.handle_input(t, Input::Received(o.link, o.payload))
                    .unwrap();
                moved = true;
            }
            while let Some(o) = next_t(s.poll_output()) {
                bytes += o.payload.len();
                c.handle_input(t, Input::Received(o.link, o.payload))
                    .unwrap();
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }
    println!(
        "idle session: {:.0} heartbeat bytes per minute, both directions together (keepalive 10 s)",
        bytes as f64 / 10.0
    );
}

/// The transmit, if the output is one (events of an idle session are dropped).
fn next_t<E>(o: Output<E>) -> Option<tether::Transmit> {
    match o {
        Output::Transmit(t) => Some(t),
        _ => None,
    }
}

fn bench(c: &mut Criterion) {
    if let Some(which) = std::env::var_os("TETHER_CALLGRIND") {
        // `machines` runs the whole machines only; `plain` or `numbered` that stream only
        // (for a profiler); anything else both streams.
        if which == "machines" {
            let mut p = pair();
            black_box(timed_machines(&mut p));
            std::process::exit(0);
        }
        if which != "numbered" {
            black_box(timed_plain());
        }
        if which != "plain" {
            black_box(timed_numbered());
        }
        std::process::exit(0);
    }
    report();
    let rounds = std::env::var("TETHER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    interleaved(rounds);
    let mut g = c.benchmark_group("delivery");
    g.throughput(Throughput::Elements(MESSAGES as u64));
    g.sample_size(10);
    g.bench_function("plain", |b| b.iter(|| stream(false)));
    g.bench_function("numbered", |b| b.iter(|| stream(true)));
    g.finish();
    let mut g = c.benchmark_group("machines");
    g.throughput(Throughput::Elements(100_000));
    g.sample_size(10);
    let mut p = pair();
    g.bench_function("merge", |b| b.iter(|| machines(&mut p, 100_000)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
