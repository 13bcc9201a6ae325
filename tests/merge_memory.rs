//! What an idle token-merge session costs the server's registry, and what a handshake and
//! a resumption allocate (both sides together), counted with a counting allocator: the
//! figures docs/PERFORMANCE.md gives (section "Token-merge connection"), pinned so that
//! they do not creep back. Deterministic: this binary's only test, so nothing else
//! allocates while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use tether::connect::merge::{
    MergeClient, MergeClientConfig, MergeServer, MergeServerConfig, Status, TokenSource,
};
use tether::{Channel, Input, Instant, Link, Machine, Output, Token};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        LIVE.fetch_add(layout.size() as i64, Ordering::SeqCst);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::SeqCst);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::SeqCst);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.load(Ordering::SeqCst)
}

fn live() -> i64 {
    LIVE.load(Ordering::SeqCst)
}

/// 16-byte tokens, distinct, as a CSPRNG would give.
struct Tokens(u64);
impl TokenSource for Tokens {
    fn next_token(&mut self) -> Token {
        self.0 += 1;
        token(b'S', self.0)
    }
}

fn token(fill: u8, n: u64) -> Token {
    let mut b = [fill; 16];
    b[8..].copy_from_slice(&n.to_be_bytes());
    Token::new(&b).unwrap()
}

type Srv = MergeServer<Tokens>;

fn client(n: u64) -> MergeClient {
    let mut c =
        MergeClient::new(Instant::ZERO, MergeClientConfig::default(), token(b'C', n)).unwrap();
    assert_eq!(c.poll_output(), Output::Open(Channel::Main));
    c
}

/// Moves every `Transmit` of each side to the other until both are quiet.
fn shuttle(now: Instant, c: &mut MergeClient, s: &mut Srv) {
    loop {
        let mut moved = false;
        loop {
            match c.poll_output() {
                Output::Transmit(t) => {
                    s.handle_input(now, Input::Received(t.link, t.payload))
                        .unwrap();
                    moved = true;
                }
                Output::Wait(_) => break,
                _ => {}
            }
        }
        loop {
            match s.poll_output() {
                Output::Transmit(t) => {
                    c.handle_input(now, Input::Received(t.link, t.payload))
                        .unwrap();
                    moved = true;
                }
                Output::Wait(_) => break,
                _ => {}
            }
        }
        if !moved {
            return;
        }
    }
}

fn handshake(now: Instant, c: &mut MergeClient, s: &mut Srv, link: Link) {
    c.handle_input(now, Input::Opened(link)).unwrap();
    s.handle_input(now, Input::Opened(link)).unwrap();
    shuttle(now, c, s);
}

fn resumption(mut now: Instant, c: &mut MergeClient, s: &mut Srv, old: Link, new: Link) -> Instant {
    c.handle_input(now, Input::Closed(old)).unwrap();
    s.handle_input(now, Input::Closed(old)).unwrap();
    while !matches!(s.poll_output(), Output::Wait(_)) {}
    loop {
        if let Output::Wait(at) = c.poll_output() {
            now = at.unwrap();
            break;
        }
    }
    c.handle_input(now, Input::Timeout).unwrap();
    loop {
        match c.poll_output() {
            Output::Open(Channel::Main) => break,
            Output::Wait(_) => panic!("the client did not ask for a transport"),
            _ => {}
        }
    }
    c.handle_input(now, Input::Opened(new)).unwrap();
    s.handle_input(now, Input::Opened(new)).unwrap();
    shuttle(now, c, s);
    now
}

fn connected(c: &MergeClient, s: &Srv, link: Link) -> bool {
    c.view().status == Status::Connected
        && s.session_of(link.id)
            .and_then(|id| s.session(id))
            .is_some_and(|v| v.status == Status::Connected)
}

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
