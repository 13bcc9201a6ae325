//! The token-merge connection (seed 004) in memory: a full fresh handshake, a resumption,
//! and what an idle session costs the server's registry.
//!
//! A `merge::MergeClient` and a `merge::MergeServer` are wired by hand: every `Transmit` one side
//! emits becomes the other side's `Input::Received`, with no copy beyond what the machines
//! do themselves.
//!
//! Run: `cargo bench --bench merge`. The memory figures are printed before criterion's
//! timings; docs/PERFORMANCE.md records both.
//!
//! Instructions (repeatable whatever the machine's load):
//!
//! ```text
//! cargo bench --bench merge --no-run   # prints the binary's path
//! TETHER_CALLGRIND=1 valgrind --tool=callgrind --toggle-collect='*timed_handshake*' \
//!     target/release/deps/merge-<hash>
//! ```
//!
//! (and `--toggle-collect='*timed_resumption*'` for the resumption). With
//! `TETHER_CALLGRIND` set, the binary runs `CALLGRIND_ROUNDS` handshakes and resumptions
//! (each inside one `#[inline(never)]` function, so only their instructions are collected)
//! and exits without criterion; divide callgrind's total by the rounds.
//!
//! `TETHER_SCALE=n` (no criterion either): the heap per idle session with `n` registered,
//! then 1,000 handshakes and 1,000 resumptions (allocations and time) with `n` idle
//! sessions against an empty registry; with `TETHER_SCALE_ONLY=1` only the `n` case, for
//! `valgrind --tool=callgrind --toggle-collect='*measured_handshake*'
//! --toggle-collect='*measured_resumption*'` (then `callgrind_annotate --inclusive=yes`).

use criterion::{black_box, Criterion};
use std::time::Duration as StdDuration;
use tether::connect::merge::{MergeClient, MergeClientCommand, MergeServer, MergeServerConfig};
use tether::{Duration, Input, Instant, Link, Machine, Output};

mod support;
use support::alloc::{allocs, live, Counting};
use support::merge_pair::{
    client, connected, server, shuttle, timed_handshake, timed_resumption, Srv, Tokens,
};

/// Counts allocations and the bytes live on the heap.
#[global_allocator]
static GLOBAL: Counting<true> = Counting;

/// A registry holding `n` idle CONNECTED sessions (links `1..=n`), each made by a real
/// handshake with a client that is then dropped.
fn registry(n: u64) -> Srv {
    let mut s = server(n as usize + 1_000);
    for i in 1..=n {
        let mut c = client(i);
        timed_handshake(Instant::ZERO, &mut c, &mut s, Link::main(i));
        assert!(connected(&c, &s, Link::main(i)));
    }
    s
}

/// Heap held by the registry per idle session: the live bytes added by `N` handshakes (the
/// clients are dropped, so what stays is the server's), then after every transport is lost
/// (each loss's outputs drained as it happens, so the server's output queue does not hold
/// `N` of them at once).
fn idle_memory(n: u64) {
    const TOKEN_BYTES: f64 = 80.0;
    let before_server = live();
    let mut s = server(n as usize);
    let before = live();
    let allocs_before = allocs();
    for i in 1..=n {
        let mut c = client(i);
        timed_handshake(Instant::ZERO, &mut c, &mut s, Link::main(i));
        assert!(connected(&c, &s, Link::main(i)));
    }
    let connected_bytes = live() - before;
    let allocs_made = allocs() - allocs_before;
    for i in 1..=n {
        s.handle_input(Instant::ZERO, Input::Closed(Link::main(i)))
            .unwrap();
        while !matches!(s.poll_output(), Output::Wait(_)) {}
    }
    let reconnecting_bytes = live() - before;
    assert_eq!(s.session_count(), n as usize);
    println!(
        "registry of {n} idle sessions: {:.1} bytes of heap per CONNECTED session \
         ({:.2} allocations made per handshake, client's included), {:.1} bytes per \
         RECONNECTING session (empty server: {} bytes)",
        connected_bytes as f64 / n as f64,
        allocs_made as f64 / n as f64,
        reconnecting_bytes as f64 / n as f64,
        before - before_server,
    );
    println!(
        "  besides the {TOKEN_BYTES} token bytes used (16 + 16 + 32 + the secrets' 16-byte \
         key, packed at their used length): {:.1} CONNECTED, {:.1} RECONNECTING",
        connected_bytes as f64 / n as f64 - TOKEN_BYTES,
        reconnecting_bytes as f64 / n as f64 - TOKEN_BYTES,
    );
    drop(s);
}

/// Allocations made by one handshake and one resumption (both sides), in steady state.
fn count_allocations() {
    const N: u64 = 10_000;
    let mut s = server(N as usize + 10);
    let mut total = 0;
    for i in 1..=N {
        let mut c = client(i);
        let before = allocs();
        timed_handshake(Instant::ZERO, &mut c, &mut s, Link::main(i));
        total += allocs() - before;
    }
    let per_handshake = total as f64 / N as f64;

    let mut s = server(10);
    let mut c = client(1);
    timed_handshake(Instant::ZERO, &mut c, &mut s, Link::main(1));
    let mut now = Instant::ZERO;
    let before = allocs();
    for i in 2..=N + 1 {
        now = timed_resumption(now, &mut c, &mut s, Link::main(i - 1), Link::main(i));
    }
    assert!(connected(&c, &s, Link::main(N + 1)));
    let per_resumption = (allocs() - before) as f64 / N as f64;
    println!(
        "allocations (both sides): {per_handshake:.2} per handshake, {per_resumption:.2} per resumption"
    );
}

/// Fresh handshakes against a registry already holding `idle` sessions. Each batch is
/// cleaned up outside the timed section (transports closed, sessions expired), so the
/// registry does not grow with the iteration count.
fn bench_handshake(b: &mut criterion::Bencher, idle: u64) {
    const BATCH: u64 = 100;
    let mut s = registry(idle);
    let mut next = 1_000_000u64;
    let mut now = Instant::ZERO;
    b.iter_custom(|iters| {
        let mut total = StdDuration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(BATCH);
            let mut clients: Vec<MergeClient> = (0..n).map(|i| client(next + i)).collect();
            let start = std::time::Instant::now();
            for (i, c) in clients.iter_mut().enumerate() {
                timed_handshake(now, c, &mut s, Link::main(next + i as u64));
            }
            total += start.elapsed();
            for (i, c) in clients.iter().enumerate() {
                let link = Link::main(next + i as u64);
                assert!(connected(c, &s, link));
                s.handle_input(now, Input::Closed(link)).unwrap();
            }
            drop(clients);
            now += Duration::from_secs(3_600);
            s.handle_input(now, Input::Timeout).unwrap();
            while !matches!(s.poll_output(), Output::Wait(_)) {}
            assert_eq!(s.session_count() as u64, idle);
            next += n;
            left -= n;
        }
        total
    });
}

/// Resumptions of one session, one after another, with `idle` other sessions registered.
fn bench_resumption(b: &mut criterion::Bencher, idle: u64) {
    let mut s = registry(idle);
    let mut next = 1_000_000u64;
    let mut c = client(next);
    timed_handshake(Instant::ZERO, &mut c, &mut s, Link::main(next));
    let mut now = Instant::ZERO;
    b.iter_custom(|iters| {
        let start = std::time::Instant::now();
        for _ in 0..iters {
            now = timed_resumption(now, &mut c, &mut s, Link::main(next), Link::main(next + 1));
            next += 1;
        }
        let t = start.elapsed();
        assert!(connected(&c, &s, Link::main(next)));
        t
    });
}

/// (c) A handshake and a formal disconnection by the client (DISCONNECT): what an attacker
/// pays to add a tombstone to the ended set, measured with the set empty (`max_sessions`
/// 1 keeps at most one) and holding 10,000 tombstones (filled first; each round then
/// evicts the oldest). The set is indexed: both should cost about the same.
#[inline(never)]
fn timed_handshake_and_disconnect(now: Instant, c: &mut MergeClient, s: &mut Srv, link: Link) {
    timed_handshake(now, c, s, link);
    c.handle_input(now, Input::Command(MergeClientCommand::Disconnect))
        .unwrap();
    shuttle(now, c, s);
}

fn bench_disconnect(b: &mut criterion::Bencher, ended: u64) {
    let mut s = server(ended.max(1) as usize);
    let now = Instant::ZERO;
    for i in 0..ended {
        let mut c = client(10_000_000 + i);
        timed_handshake_and_disconnect(now, &mut c, &mut s, Link::main(10_000_000 + i));
    }
    assert_eq!(s.ended_count() as u64, ended);
    let mut next = 1_000_000u64;
    b.iter_custom(|iters| {
        let mut total = StdDuration::ZERO;
        for _ in 0..iters {
            let mut c = client(next);
            let start = std::time::Instant::now();
            timed_handshake_and_disconnect(now, &mut c, &mut s, Link::main(next));
            total += start.elapsed();
            next += 1;
        }
        assert_eq!(s.ended_count() as u64, ended.max(1));
        total
    });
}

/// The registry's size against the cost of a handshake and of a resumption: `ROUNDS` of
/// each (handshakes that stay: the registry grows by `ROUNDS`), with `idle` idle sessions
/// registered first. No heartbeat on the server, so that the virtual time the resumptions
/// take (about 1 s of reconnect wait each) fires nothing among the idle sessions: the
/// workload is the same whatever `idle` is. Returns (allocations per handshake, per
/// resumption, ns per handshake, per resumption).
fn scale(idle: u64) -> (f64, f64, f64, f64) {
    const ROUNDS: u64 = 1_000;
    let cfg = MergeServerConfig {
        max_sessions: idle as usize + ROUNDS as usize + 10,
        session: tether::session::SessionConfig {
            keepalive: None,
            ..Default::default()
        },
        ..MergeServerConfig::default()
    };
    let mut s = MergeServer::new(cfg, Tokens(0));
    for i in 1..=idle {
        let mut c = client(i);
        timed_handshake(Instant::ZERO, &mut c, &mut s, Link::main(i));
    }
    assert_eq!(s.session_count() as u64, idle);
    let base = 10_000_000u64;
    let mut clients: Vec<MergeClient> = (0..ROUNDS).map(|i| client(base + i)).collect();
    let a = allocs();
    let t = std::time::Instant::now();
    for (i, c) in clients.iter_mut().enumerate() {
        measured_handshake(Instant::ZERO, c, &mut s, Link::main(base + i as u64));
    }
    let hs_ns = t.elapsed().as_nanos() as f64 / ROUNDS as f64;
    let hs = (allocs() - a) as f64 / ROUNDS as f64;
    drop(clients);
    let first = 20_000_000u64;
    let mut c = client(first);
    timed_handshake(Instant::ZERO, &mut c, &mut s, Link::main(first));
    let mut now = Instant::ZERO;
    let a = allocs();
    let t = std::time::Instant::now();
    for i in 0..ROUNDS {
        now = measured_resumption(
            now,
            &mut c,
            &mut s,
            Link::main(first + i),
            Link::main(first + i + 1),
        );
    }
    let rs_ns = t.elapsed().as_nanos() as f64 / ROUNDS as f64;
    let rs = (allocs() - a) as f64 / ROUNDS as f64;
    assert!(connected(&c, &s, Link::main(first + ROUNDS)));
    (hs, rs, hs_ns, rs_ns)
}

/// [`timed_handshake`] under another name, so that callgrind can collect the measured
/// rounds of [`scale`] alone (`--toggle-collect='*measured_handshake*'`), not the
/// handshakes that fill the registry.
#[inline(never)]
fn measured_handshake(now: Instant, c: &mut MergeClient, s: &mut Srv, link: Link) {
    timed_handshake(now, c, s, link)
}

/// [`timed_resumption`] under another name (see [`measured_handshake`]).
#[inline(never)]
fn measured_resumption(
    now: Instant,
    c: &mut MergeClient,
    s: &mut Srv,
    old: Link,
    new: Link,
) -> Instant {
    timed_resumption(now, c, s, old, new)
}

/// `TETHER_SCALE=n`: the heap per idle session with `n` registered, then handshakes and
/// resumptions with `n` idle sessions (or, with `TETHER_SCALE_ONLY=n`, only that registry,
/// for callgrind) against an empty registry.
fn scale_report(n: u64) {
    if std::env::var_os("TETHER_SCALE_ONLY").is_none() {
        idle_memory(n);
        let (h0, r0, th0, tr0) = scale(0);
        println!("empty registry: {h0:.2} allocations per handshake, {r0:.2} per resumption; {th0:.0} ns, {tr0:.0} ns");
    }
    let (h, r, th, tr) = scale(n);
    println!("{n} idle sessions: {h:.2} allocations per handshake, {r:.2} per resumption; {th:.0} ns, {tr:.0} ns");
}

fn bench(cr: &mut Criterion) {
    idle_memory(10_000);
    count_allocations();
    let mut g = cr.benchmark_group("merge");
    g.bench_function("handshake", |b| bench_handshake(b, 0));
    g.bench_function("resumption", |b| bench_resumption(b, 0));
    g.bench_function("handshake_10k_idle", |b| bench_handshake(b, 10_000));
    g.bench_function("resumption_10k_idle", |b| bench_resumption(b, 10_000));
    g.bench_function("handshake_disconnect_0_ended", |b| bench_disconnect(b, 0));
    g.bench_function("handshake_disconnect_10k_ended", |b| {
        bench_disconnect(b, 10_000)
    });
    g.finish();
}

/// Rounds run under callgrind.
const CALLGRIND_ROUNDS: u64 = 10_000;

/// A fixed workload for `valgrind --tool=callgrind --toggle-collect=...`: the same
/// functions as the timed benches, on an empty registry (idle = 0), or with
/// `TETHER_CALLGRIND_IDLE` sessions registered.
fn callgrind() {
    let idle = std::env::var("TETHER_CALLGRIND_IDLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0u64);
    let mut s = registry(idle);
    let mut now = Instant::ZERO;
    for i in 0..CALLGRIND_ROUNDS {
        let link = Link::main(1_000_000 + i);
        let mut c = client(1_000_000 + i);
        timed_handshake(now, &mut c, &mut s, link);
        assert!(connected(&c, &s, link));
        // Expire it, so that the registry keeps `idle` sessions.
        s.handle_input(now, Input::Closed(link)).unwrap();
        now += Duration::from_secs(3_600);
        s.handle_input(now, Input::Timeout).unwrap();
        while !matches!(s.poll_output(), Output::Wait(_)) {}
    }
    let first = 2_000_000u64;
    let mut c = client(first);
    timed_handshake(now, &mut c, &mut s, Link::main(first));
    for i in 0..CALLGRIND_ROUNDS {
        now = timed_resumption(
            now,
            &mut c,
            &mut s,
            Link::main(first + i),
            Link::main(first + i + 1),
        );
    }
    assert!(connected(&c, &s, Link::main(first + CALLGRIND_ROUNDS)));
    c.handle_input(now, Input::Command(MergeClientCommand::Disconnect))
        .unwrap();
    black_box(&s);
    println!("callgrind: {CALLGRIND_ROUNDS} handshakes and {CALLGRIND_ROUNDS} resumptions, {idle} idle sessions");
}

fn main() {
    if let Some(n) = std::env::var("TETHER_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return scale_report(n);
    }
    if std::env::var_os("TETHER_CALLGRIND").is_some() {
        return callgrind();
    }
    let mut c = Criterion::default()
        .warm_up_time(StdDuration::from_secs(1))
        .measurement_time(StdDuration::from_secs(3))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
}
