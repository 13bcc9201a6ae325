//! A hostile network against one token-merge `MergeServer` (default configuration): an
//! attacker opens many transports and writes anything on each, in chunks the fuzzer picks
//! (garbage, length prefixes announcing up to 4 GiB and a part of it, lying prefixes,
//! well-formed frames of any message, split anywhere), plays whole handshakes with tokens of
//! its own and with what the server told it (its tokens, the merged token, the secrets it
//! offered), lets time pass and closes transports. The server's closes are reported back as
//! a driver would.
//!
//! Checked after every input (the budgets of docs/PROTOCOL.md section 10, and
//! `budget_of_every_unauthenticated_input_path` in tests/hostile.rs):
//!
//! - **sent**: on every transport, while it is not admitted (it belongs to no session), the
//!   bytes the server asked to transmit on it are at most the bytes it received plus
//!   `PER_LINK_SENT` = 29: the server's own TOKEN, sent on open before anything arrives
//!   (a 19-byte frame: 23 bytes with its prefix), and one CONN_FAILED refusal (6 bytes); every
//!   other handshake reply answers a request at least as large. What the input that admits
//!   a transport makes the server send (its confirmation, the first SECRET, a resumed
//!   session's replay) and what it sends afterwards go to a peer that completed a
//!   handshake, and are not counted. The table of section 10 measures 0.45 reply bytes per
//!   request byte, i.e. 29 bytes per 64-byte transport: that constant.
//! - **held**: the live heap (a counting global allocator; from just before the server is
//!   made) is at most 4 x the bytes received + 6 KiB per open transport + 64 KiB. Per open
//!   transport the test bounds the frame decoder's reservation and the transport's entry by
//!   2 x `MIN_RESERVE` + 1 KiB per 64 attacker bytes; 6 KiB covers one reservation
//!   (4 KiB) and the entry; 4 bytes per byte received covers what arrived and is buffered
//!   (and the sessions that handshakes make); 64 KiB covers the registry's own tables.
//!   Plus `PER_SESSION_HELD` = 2 KiB per session and 1 KiB per tombstone the server holds:
//!   anyone can complete a token-merge handshake (46 bytes), and the session it makes is
//!   kept `resume_grace` (60 s) after its transport goes, a formally ended one as a
//!   tombstone for `ended_memory`; measured, about 1 KiB a session and 0.5 KiB a tombstone,
//!   bounded by `max_sessions`, not by the attacker's bytes (section 10 budgets transports
//!   that have not completed a handshake; this is what completing one costs).
//! - no panic, and nothing sent on a transport the server was never told of.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use arbitrary::Arbitrary;
use common::{framed, live, Chunk, Counting};
use libfuzzer_sys::fuzz_target;
use tether::connect::merge::{MergeServer, MergeServerConfig};
use tether::wire::{DecodeError, FrameDecoder, Message};
use tether::{Duration, Input, Instant, Link, Machine, Output, Token};

#[global_allocator]
static ALLOC: Counting = Counting;

/// Transports the attacker may hold open at once (slots; each opening gets a fresh id).
const SLOTS: usize = 64;
/// See the module's documentation.
const PER_LINK_SENT: usize = 23 + 6;
const PER_LINK_HELD: isize = 6 * 1024;
const HELD_BASE: isize = 64 * 1024;
const PER_SESSION_HELD: isize = 2 * 1024;
const PER_TOMBSTONE_HELD: isize = 1024;
const MAX_CHUNK: usize = 8 * 1024;

#[derive(Debug, Arbitrary)]
enum Op {
    Open(u8),
    /// Bytes on a transport, delivered in two reads cut at `cut`.
    Send {
        slot: u8,
        chunk: Chunk,
        cut: u16,
    },
    /// A handshake message built from a token: the attacker's own (`Mine`) or one the
    /// server sent (or merged from two seen).
    Play {
        slot: u8,
        kind: Kind,
        token: Pick,
    },
    Close(u8),
    /// Time passes by `millis` x 16 ms (up to about 17 minutes); timeouts fire.
    Advance(u16),
}

#[derive(Debug, Arbitrary)]
enum Kind {
    Token,
    Resume,
    Secret,
    Disconnect,
}

#[derive(Debug, Arbitrary)]
enum Pick {
    Mine(u8),
    Seen(u8),
    Merged(u8, u8),
}

#[derive(Default, Clone)]
struct Slot {
    link: Option<Link>,
    received: usize,
    /// Sent while not admitted.
    sent: usize,
    admitted: bool,
}

struct Attacker {
    slots: Vec<Slot>,
    next_id: u64,
    /// Tokens the server sent (TOKEN, SECRET, RESUME), the newest last.
    seen: Vec<Token>,
    received: usize,
    frames: FrameDecoder,
}

fn mine(n: u8) -> Token {
    let mut b = [0x6d; 16];
    b[15] = n;
    Token::new(&b).unwrap()
}

fn tokens() -> impl FnMut() -> Token {
    let mut n = 0u64;
    move || {
        n += 1;
        let mut b = [0x5a; 16];
        b[8..].copy_from_slice(&n.to_be_bytes());
        Token::new(&b).unwrap()
    }
}

impl Attacker {
    fn pick(&self, p: Pick) -> Token {
        let seen = |i: u8| {
            if self.seen.is_empty() {
                mine(i)
            } else {
                self.seen[usize::from(i) % self.seen.len()]
            }
        };
        match p {
            Pick::Mine(n) => mine(n),
            Pick::Seen(i) => seen(i),
            Pick::Merged(i, j) => seen(i).merge(&seen(j)),
        }
    }

    /// Remembers the tokens in what the server sent (complete frames only: the server
    /// writes whole frames).
    fn learn(&mut self, payload: &bytes::Bytes) {
        self.frames.reset();
        self.frames.push_bytes(payload.clone());
        loop {
            let f: Result<Option<bytes::Bytes>, DecodeError> = self.frames.next_frame();
            let Ok(Some(f)) = f else { return };
            let t = match Message::decode(f) {
                Ok(Message::Token { token, .. })
                | Ok(Message::Resume { token, .. })
                | Ok(Message::Secret { token }) => token,
                _ => continue,
            };
            if self.seen.len() >= 32 {
                self.seen.remove(0);
            }
            self.seen.push(t);
        }
    }
}

type Server = MergeServer<Box<dyn FnMut() -> Token>>;

/// Adds what the server sent on `slot` in one step to its account, and checks it.
fn account(s: &Server, slot: &mut Slot, sent: usize) {
    let Some(link) = slot.link else { return };
    if !slot.admitted && s.session_of(link.id).is_some() {
        slot.admitted = true;
    }
    if slot.admitted {
        return;
    }
    slot.sent += sent;
    assert!(
        slot.sent <= slot.received + PER_LINK_SENT,
        "{} bytes sent on an unadmitted transport that sent {}",
        slot.sent,
        slot.received
    );
}

/// Delivers `input`, drains the server (reporting its closes back), and checks the budget.
fn step(
    s: &mut Server,
    a: &mut Attacker,
    now: Instant,
    input: Input<tether::connect::merge::MergeServerCommand>,
    base: isize,
) {
    let _ = s.handle_input(now, input);
    let mut step_sent = [0usize; SLOTS];
    loop {
        let mut closes = Vec::new();
        loop {
            match s.poll_output() {
                Output::Transmit(t) => {
                    let i = (t.link.id % SLOTS as u64) as usize;
                    assert_eq!(
                        a.slots[i].link,
                        Some(t.link),
                        "sent on a transport that is not open"
                    );
                    step_sent[i] += t.payload.len();
                    a.learn(&t.payload);
                }
                Output::Close(l) => closes.push(l),
                Output::Wait(_) => break,
                _ => {}
            }
        }
        if closes.is_empty() {
            break;
        }
        for l in closes {
            let i = (l.id % SLOTS as u64) as usize;
            if a.slots[i].link == Some(l) {
                // What was sent before the close counts too.
                account(s, &mut a.slots[i], core::mem::take(&mut step_sent[i]));
                a.slots[i] = Slot::default();
                let _ = s.handle_input(now, Input::Closed(l));
            }
        }
    }
    for (i, sent) in step_sent.into_iter().enumerate() {
        account(s, &mut a.slots[i], sent);
    }
    let open = a.slots.iter().filter(|s| s.link.is_some()).count() as isize;
    let held = live() - base;
    let sessions = s.session_count() as isize;
    let ended = s.ended_count() as isize;
    let bound = 4 * a.received as isize
        + PER_LINK_HELD * open
        + PER_SESSION_HELD * sessions
        + PER_TOMBSTONE_HELD * ended
        + HELD_BASE;
    assert!(
        held <= bound,
        "{held} bytes held for {} received on {open} open transports, {sessions} sessions, {ended} tombstones",
        a.received
    );
}

fuzz_target!(|ops: Vec<Op>| {
    let mut a = Attacker {
        slots: vec![Slot::default(); SLOTS],
        next_id: 0,
        seen: Vec::with_capacity(32),
        received: 0,
        frames: FrameDecoder::new(1 << 20),
    };
    let base = live();
    let mut s: Server = MergeServer::new(MergeServerConfig::default(), Box::new(tokens()));
    let mut now = Instant::ZERO;
    for op in ops.into_iter().take(512) {
        match op {
            Op::Open(i) => {
                let i = usize::from(i) % SLOTS;
                if a.slots[i].link.is_none() {
                    a.next_id += 1;
                    let link = Link::main(a.next_id * SLOTS as u64 + i as u64);
                    a.slots[i] = Slot {
                        link: Some(link),
                        ..Slot::default()
                    };
                    step(&mut s, &mut a, now, Input::Opened(link), base);
                }
            }
            Op::Send { slot, chunk, cut } => {
                let i = usize::from(slot) % SLOTS;
                let Some(link) = a.slots[i].link else {
                    continue;
                };
                let mut b = chunk.bytes(MAX_CHUNK);
                let head = b.split_to(usize::from(cut).min(b.len()));
                for part in [head, b] {
                    if a.slots[i].link != Some(link) {
                        break;
                    }
                    a.slots[i].received += part.len();
                    a.received += part.len();
                    step(&mut s, &mut a, now, Input::Received(link, part), base);
                }
            }
            Op::Play { slot, kind, token } => {
                let i = usize::from(slot) % SLOTS;
                let Some(link) = a.slots[i].link else {
                    continue;
                };
                let token = a.pick(token);
                let m = match kind {
                    Kind::Token => Message::Token { version: 1, token },
                    Kind::Resume => Message::Resume { version: 1, token },
                    Kind::Secret => Message::Secret { token },
                    Kind::Disconnect => Message::Disconnect { token },
                };
                let b = framed(&m);
                a.slots[i].received += b.len();
                a.received += b.len();
                step(&mut s, &mut a, now, Input::Received(link, b), base);
            }
            Op::Close(i) => {
                let i = usize::from(i) % SLOTS;
                if let Some(link) = a.slots[i].link {
                    a.slots[i] = Slot::default();
                    step(&mut s, &mut a, now, Input::Closed(link), base);
                }
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 16);
                step(&mut s, &mut a, now, Input::Timeout, base);
            }
        }
    }
});
