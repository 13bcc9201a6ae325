//! A token-merge client and server in memory, and the steps the memory and speed figures
//! measure: a fresh handshake and a resumption, both sides together. Shared by
//! `benches/merge.rs` and `tests/merge_memory.rs` (which includes this directory with
//! `#[path]`), so that the figures the test pins are the ones the bench prints.
#![allow(dead_code)]

use tether::connect::merge::{
    MergeClient, MergeClientConfig, MergeServer, MergeServerConfig, Status, TokenSource,
};
use tether::{Channel, Input, Instant, Link, Machine, Output, Token};

/// The server's local tokens: 16 bytes, distinct (a counter), as a CSPRNG would give.
pub struct Tokens(pub u64);
impl TokenSource for Tokens {
    fn next_token(&mut self) -> Token {
        self.0 += 1;
        token(b'S', self.0)
    }
}

pub fn token(fill: u8, n: u64) -> Token {
    let mut b = [fill; 16];
    b[8..].copy_from_slice(&n.to_be_bytes());
    Token::new(&b).unwrap()
}

pub type Srv = MergeServer<Tokens>;

pub fn server(max_sessions: usize) -> Srv {
    let cfg = MergeServerConfig {
        max_sessions,
        ..MergeServerConfig::default()
    };
    MergeServer::new(cfg, Tokens(0))
}

/// A client whose first output (`Open(Main)`) was taken: the caller opens a transport next.
pub fn client(n: u64) -> MergeClient {
    let mut c =
        MergeClient::new(Instant::ZERO, MergeClientConfig::default(), token(b'C', n)).unwrap();
    assert_eq!(c.poll_output(), Output::Open(Channel::Main));
    c
}

/// Moves every `Transmit` of each side to the other until both are quiet (events and
/// requests to open are dropped: the callers below handle the ones they expect).
///
/// Not the testkit's `Pair`: this loop runs inside the measured functions, and the pair's
/// generality (counts, checks, the wire) costs about 580 instructions per handshake and
/// 600 per resumption (6 % and 5 %) that these figures should not include.
#[inline(always)]
pub fn shuttle(now: Instant, c: &mut MergeClient, s: &mut Srv) {
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

/// (a) A full fresh handshake: the transport is reported open to both sides, then TOKEN,
/// TOKEN, TOKEN, TOKEN are moved until both are CONNECTED (with their `Connected` events
/// taken).
#[inline(never)]
pub fn timed_handshake(now: Instant, c: &mut MergeClient, s: &mut Srv, link: Link) {
    c.handle_input(now, Input::Opened(link)).unwrap();
    s.handle_input(now, Input::Opened(link)).unwrap();
    shuttle(now, c, s);
}

/// (b) A resumption: the client's transport is lost (both sides told), the client's
/// reconnect timer fires, it asks for a transport, the new one is reported open to both,
/// the server's fresh TOKEN and the client's RESUME cross, the server adopts the new
/// transport and echoes RESUME: both CONNECTED again. Returns the time it ran to.
#[inline(never)]
pub fn timed_resumption(
    mut now: Instant,
    c: &mut MergeClient,
    s: &mut Srv,
    old: Link,
    new: Link,
) -> Instant {
    c.handle_input(now, Input::Closed(old)).unwrap();
    s.handle_input(now, Input::Closed(old)).unwrap();
    while !matches!(s.poll_output(), Output::Wait(_)) {}
    // The client reports `Lost`, then waits for its reconnect timer.
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

pub fn connected(c: &MergeClient, s: &Srv, link: Link) -> bool {
    c.view().status == Status::Connected
        && s.session_of(link.id)
            .and_then(|id| s.session(id))
            .is_some_and(|v| v.status == Status::Connected)
}
