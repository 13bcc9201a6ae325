//! What an idle token-merge session costs the server's registry, and what a handshake and
//! a resumption allocate (both sides together), counted with a counting allocator: the
//! figures docs/PERFORMANCE.md gives (section "Token-merge connection"), pinned so that
//! they do not creep back. Deterministic: this binary's only test, so nothing else
//! allocates while it counts.

// The counting allocator and the in-memory pair are the merge bench's own, so that the
// figures pinned here are the ones it prints.
#[path = "../benches/support/mod.rs"]
mod support;
use support::alloc::{allocs, live, Counting};
use support::merge_pair::timed_resumption as resumption;
use support::merge_pair::{client, connected, timed_handshake as handshake, Tokens};
use tether::connect::merge::{MergeServer, MergeServerConfig};
use tether::{Input, Instant, Link, Machine, Output};

#[global_allocator]
static GLOBAL: Counting<true> = Counting;

/// The bytes of the tokens an idle session actually uses: local 16, remote 16, merged 32,
/// the secrets' key 16.
const TOKEN_BYTES: f64 = 80.0;

#[test]
fn idle_sessions_handshakes_and_resumptions_stay_small() {
    const N: u64 = 10_000;
    let cfg = MergeServerConfig {
        max_sessions: N as usize + 10,
        ..MergeServerConfig::default()
    };
    let mut s = MergeServer::new(cfg, Tokens(0));
    // Warm the server's own tables (the handshake table keeps its room).
    let mut c = client(0);
    handshake(Instant::ZERO, &mut c, &mut s, Link::main(0));
    drop(c);

    let before = live();
    let mut made = 0;
    for i in 1..=N {
        let mut c = client(i);
        let a = allocs();
        handshake(Instant::ZERO, &mut c, &mut s, Link::main(i));
        made += allocs() - a;
        assert!(connected(&c, &s, Link::main(i)));
    }
    let connected_bytes = (live() - before) as f64 / N as f64;
    let per_handshake = made as f64 / N as f64;
    for i in 1..=N {
        s.handle_input(Instant::ZERO, Input::Closed(Link::main(i)))
            .unwrap();
        while !matches!(s.poll_output(), Output::Wait(_)) {}
    }
    let reconnecting_bytes = (live() - before) as f64 / N as f64;

    // Resumptions of one session, with the N others registered.
    let first = 1_000_000;
    let mut c = client(first);
    handshake(Instant::ZERO, &mut c, &mut s, Link::main(first));
    let mut now = Instant::ZERO;
    now = resumption(
        now,
        &mut c,
        &mut s,
        Link::main(first),
        Link::main(first + 1),
    );
    let a = allocs();
    const R: u64 = 1_000;
    for i in 1..=R {
        now = resumption(
            now,
            &mut c,
            &mut s,
            Link::main(first + i),
            Link::main(first + i + 1),
        );
    }
    let per_resumption = (allocs() - a) as f64 / R as f64;
    assert!(connected(&c, &s, Link::main(first + R + 1)));

    println!(
        "per idle session: {connected_bytes:.1} bytes CONNECTED, {reconnecting_bytes:.1} \
         RECONNECTING ({TOKEN_BYTES} of them token bytes); allocations (both sides): \
         {per_handshake:.2} per handshake, {per_resumption:.2} per resumption"
    );
    // Pinned at what they are now, with a little room (docs/PERFORMANCE.md). Before: 1,653
    // and 1,240 bytes, of which 195 were three 65-byte inline tokens.
    assert!(
        connected_bytes <= 680.0,
        "{connected_bytes} bytes per CONNECTED session"
    );
    assert!(
        reconnecting_bytes <= 470.0,
        "{reconnecting_bytes} bytes per RECONNECTING session"
    );
    assert!(
        per_handshake <= 4.0,
        "{per_handshake} allocations per handshake"
    );
    assert!(
        per_resumption <= 4.0,
        "{per_resumption} allocations per resumption"
    );
}
