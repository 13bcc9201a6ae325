//! A hostile network against one dual-channel `DualServer` (default configuration): an
//! attacker opens many `main` transports (TCP) and writes anything on each, in chunks the
//! fuzzer picks (garbage, length prefixes announcing up to 4 GiB and a part of it, lying
//! prefixes, well-formed frames of any message, split anywhere), plays handshakes with what
//! the server told it (player ids, token A, the session secret from `CONN_INIT_REP`, token B
//! from `FEED_INIT_REP`), and sends `feed` datagrams (UDP) from many addresses: authentic
//! ones (tagged with the feed key of a secret it learned on its own `main`) and spoofed ones
//! (garbage, or a well-formed header with a tag of the fuzzer's, any sequence number, any
//! sender, any message). Time passes; transports close. The server's closes are reported
//! back as a driver would.
//!
//! Checked after every input (the budgets of docs/PROTOCOL.md section 10, and
//! `budget_of_every_unauthenticated_input_path` in tests/hostile.rs):
//!
//! - **sent on `main`**: on every `main` transport, while it is not admitted (no player is
//!   Connected on it), the bytes the server asked to transmit on it are at most the bytes
//!   it received plus `PER_LINK_SENT` = 42: one `CONN_INIT_REP` (a 38-byte message with
//!   16-byte tokens: 42 bytes framed) answers a 6-byte `CONN_INIT`, and one `CONN_FAILED`
//!   refusal (6 bytes) may follow; 42 + 6 - 6 = 42. (A reply larger than the request on
//!   TCP reflects nothing at a forged address: the handshake proved the address.) What the
//!   input that admits a transport makes the server send (`CONN_OK`, a resumed session's
//!   ACK and replay) and what it sends afterwards go to a peer that completed a handshake,
//!   and are not counted.
//! - **sent on `feed`**: a spoofed datagram (a tag the fuzzer chose, or no valid header)
//!   makes the server send nothing at all, on any link, unless it claims to be a feed init:
//!   then at most one datagram no larger than the request, to its own address. On an address
//!   never bound by an authentic feed init, the bytes sent are at most those of the
//!   feed-init claims it sent (section 4.1: a reply on `feed` is never larger than the
//!   request). An authentic datagram, too, gets at most one datagram back, no larger.
//! - **held**: the live heap (a counting global allocator; from just before the server is
//!   made) is at most 4 x the bytes received + 6 KiB per open `main` transport + 64 KiB,
//!   as in merge_flood, plus `PER_PLAYER_HELD` = 2 KiB per player the server holds (a
//!   player made by a `CONN_INIT` lives while its `main` is open, or `session_timeout`
//!   after a completed handshake lost it; bounded by `max_players`, not by the attacker's
//!   bytes); a spoofed datagram that claims no feed init leaves the heap as it was.
//! - no panic, and nothing sent on a `main` transport the server was never told of.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use common::{framed, live, Chunk, Counting};
use libfuzzer_sys::fuzz_target;
use tether::connect::dual::{DualServer, DualServerCommand, DualServerConfig, PlayerState};
use tether::testkit::CountingTokens;
use tether::wire::{
    encode_header_and, FeedDatagram, FeedKey, FrameDecoder, Message, FEED_FIELDS_LEN,
    FEED_HEADER_LEN, FEED_MAGIC, PROTOCOL_VERSION,
};
use tether::{Channel, Duration, Input, Instant, Link, Machine, Output, Token};

#[global_allocator]
static ALLOC: Counting = Counting;

/// `main` transports the attacker may hold open at once, and `feed` addresses it uses.
const SLOTS: usize = 64;
const FEEDS: usize = 32;
/// See the module's documentation.
const PER_LINK_SENT: usize = 42 + 6 - 6;
const PER_LINK_HELD: isize = 6 * 1024;
const HELD_BASE: isize = 64 * 1024;
const PER_PLAYER_HELD: isize = 2 * 1024;
const MAX_CHUNK: usize = 8 * 1024;
/// Feed link ids start here (main ones are below).
const FEED_BASE: u64 = 1 << 32;

#[derive(Debug, Arbitrary)]
enum Op {
    Open(u8),
    /// Bytes on a `main` transport, delivered in two reads cut at `cut`.
    Send {
        slot: u8,
        chunk: Chunk,
        cut: u16,
    },
    /// A handshake message on `main` built from what the attacker learned.
    Play {
        slot: u8,
        kind: Kind,
        who: u8,
    },
    Close(u8),
    /// An authentic datagram of a player whose secret the attacker learned (a feed init
    /// with its token A, or any message), from address `feed`.
    Authentic {
        feed: u8,
        who: u8,
        seq: u64,
        attempt: u32,
        init: bool,
        msg: Message,
    },
    /// A spoofed datagram from address `feed`.
    Spoof {
        feed: u8,
        datagram: Spoofed,
    },
    CloseFeed(u8),
    /// Time passes by `millis` x 4 ms (up to about 4 minutes); timeouts fire.
    Advance(u16),
}

#[derive(Debug, Arbitrary)]
enum Kind {
    ConnInit,
    FinalAuth,
    Connection,
    Disconnection,
}

#[derive(Debug, Arbitrary)]
enum Spoofed {
    Raw(Vec<u8>),
    /// A valid header with a made-up tag; the sender may be a player the attacker knows
    /// (`known`), and the content a feed init naming what it knows.
    Forged {
        seq: u64,
        sender: Option<u16>,
        known: u8,
        tag: [u8; 16],
        content: Content,
    },
}

#[derive(Debug, Arbitrary)]
enum Content {
    Any(Message),
    Bytes(Vec<u8>),
    /// A feed init with the known player's token A, any attempt.
    Init(u32),
}

/// What the attacker learned about a player it made.
#[derive(Debug, Clone, Copy)]
struct Known {
    player: u16,
    token_a: Token,
    secret: Token,
    token_b: Option<Token>,
}

#[derive(Default, Clone)]
struct Slot {
    link: Option<Link>,
    received: usize,
    /// Sent while not admitted.
    sent: usize,
    admitted: bool,
}

#[derive(Default, Clone, Copy)]
struct Feed {
    /// An authentic feed init was sent from here.
    authentic: bool,
    /// Bytes of feed-init claims received from here.
    claims: usize,
    sent: usize,
}

struct Attacker {
    slots: Vec<Slot>,
    feeds: [Feed; FEEDS],
    next_id: u64,
    known: Vec<Known>,
    received: usize,
    frames: FrameDecoder,
}

type Server = DualServer<CountingTokens>;

fn feed_link(i: usize) -> Link {
    Link::feed(FEED_BASE + i as u64)
}

impl Attacker {
    fn known(&self, who: u8) -> Option<Known> {
        (!self.known.is_empty()).then(|| self.known[usize::from(who) % self.known.len()])
    }

    fn learn_player(&mut self, k: Known) {
        if let Some(old) = self.known.iter_mut().find(|o| o.player == k.player) {
            *old = k;
        } else {
            if self.known.len() >= 16 {
                self.known.remove(0);
            }
            self.known.push(k);
        }
    }

    /// Learns from what the server sent (whole frames on `main`, one datagram on `feed`).
    fn learn(&mut self, s: &Server, link: Link, payload: &Bytes) {
        if link.channel == Channel::Feed {
            let Ok(d) = FeedDatagram::decode(payload.clone(), 1 << 16) else {
                return;
            };
            if let Ok(Message::FeedInitRep { token_b, .. }) = Message::decode(d.content) {
                // Whose: the player bound at this address (the attacker knows which player
                // it sent the feed init for).
                for k in self.known.iter_mut() {
                    if s.player_links(k.player).and_then(|l| l.1) == Some(link) {
                        k.token_b = Some(token_b);
                    }
                }
            }
            return;
        }
        self.frames.reset();
        self.frames.push_bytes(payload.clone());
        while let Ok(Some(f)) = self.frames.next_frame() {
            if let Ok(Message::ConnInitRep {
                player,
                token_a,
                secret,
                ..
            }) = Message::decode(f)
            {
                self.learn_player(Known {
                    player,
                    token_a,
                    secret,
                    token_b: None,
                });
            }
        }
    }
}

fn admitted(s: &Server, link: Link) -> bool {
    (0..64u16).any(|p| {
        s.player_state(p) == Some(PlayerState::Connected)
            && s.player_links(p).and_then(|l| l.0) == Some(link)
    })
}

/// Adds what the server sent on `slot` in one step to its account, and checks it.
fn account(s: &Server, slot: &mut Slot, sent: usize) {
    let Some(link) = slot.link else { return };
    if !slot.admitted && admitted(s, link) {
        slot.admitted = true;
    }
    if slot.admitted {
        return;
    }
    slot.sent += sent;
    assert!(
        slot.sent <= slot.received + PER_LINK_SENT,
        "{} bytes sent on an unadmitted main that sent {}",
        slot.sent,
        slot.received
    );
}

/// What one step made the server send.
struct Sent {
    main: [usize; SLOTS],
    feed: [usize; FEEDS],
    /// Datagrams sent to each feed address.
    datagrams: [usize; FEEDS],
}

impl Sent {
    fn new() -> Sent {
        Sent {
            main: [0; SLOTS],
            feed: [0; FEEDS],
            datagrams: [0; FEEDS],
        }
    }

    fn total(&self) -> usize {
        self.main.iter().sum::<usize>() + self.feed.iter().sum::<usize>()
    }
}

/// Delivers `input`, drains the server (reporting its closes back), and checks the budget.
fn step(
    s: &mut Server,
    a: &mut Attacker,
    now: Instant,
    input: Input<DualServerCommand>,
    base: isize,
) -> Sent {
    let _ = s.handle_input(now, input);
    let mut sent = Sent::new();
    loop {
        let mut closes = Vec::new();
        loop {
            match s.poll_output() {
                Output::Transmit(t) => {
                    a.learn(s, t.link, &t.payload);
                    if t.link.channel == Channel::Feed {
                        let i = t.link.id.wrapping_sub(FEED_BASE) as usize;
                        assert!(i < FEEDS, "sent to a feed address nobody used");
                        sent.feed[i] += t.payload.len();
                        sent.datagrams[i] += 1;
                    } else {
                        let i = (t.link.id % SLOTS as u64) as usize;
                        assert_eq!(
                            a.slots[i].link,
                            Some(t.link),
                            "sent on a main that is not open"
                        );
                        sent.main[i] += t.payload.len();
                    }
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
            if l.channel == Channel::Feed {
                let _ = s.handle_input(now, Input::Closed(l));
                continue;
            }
            let i = (l.id % SLOTS as u64) as usize;
            if a.slots[i].link == Some(l) {
                // What was sent before the close counts too.
                account(s, &mut a.slots[i], core::mem::take(&mut sent.main[i]));
                a.slots[i] = Slot::default();
                let _ = s.handle_input(now, Input::Closed(l));
            }
        }
    }
    for (i, n) in sent.main.iter().enumerate() {
        account(s, &mut a.slots[i], *n);
    }
    for (i, n) in sent.feed.iter().enumerate() {
        let f = &mut a.feeds[i];
        if f.authentic {
            continue;
        }
        f.sent += n;
        assert!(
            f.sent <= f.claims,
            "{} bytes sent to a feed address that sent {} bytes of feed-init claims",
            f.sent,
            f.claims
        );
    }
    let open = a.slots.iter().filter(|s| s.link.is_some()).count() as isize;
    let held = live() - base;
    let players = s.player_count() as isize;
    let bound =
        4 * a.received as isize + PER_LINK_HELD * open + PER_PLAYER_HELD * players + HELD_BASE;
    assert!(
        held <= bound,
        "{held} bytes held for {} received on {open} open main transports, {players} players",
        a.received
    );
    sent
}

/// A datagram: header fields, `tag`, content.
fn datagram(seq: u64, sender: u16, tag: &[u8; 16], content: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    let _ = encode_header_and(seq, sender, tag, content, &mut b, usize::MAX);
    b.freeze()
}

fn authentic(k: &Known, seq: u64, content: &[u8]) -> Bytes {
    let mut header = [0u8; FEED_FIELDS_LEN];
    header[..8].copy_from_slice(&FEED_MAGIC.to_be_bytes());
    header[8..16].copy_from_slice(&seq.to_be_bytes());
    header[16..].copy_from_slice(&k.player.to_be_bytes());
    let tag = FeedKey::derive(&k.secret, k.player).tag(&header, content);
    datagram(seq, k.player, &tag, content)
}

fuzz_target!(|ops: Vec<Op>| {
    let mut a = Attacker {
        slots: vec![Slot::default(); SLOTS],
        feeds: [Feed::default(); FEEDS],
        next_id: 0,
        known: Vec::with_capacity(16),
        received: 0,
        frames: FrameDecoder::new(1 << 20),
    };
    let base = live();
    let mut s: Server = DualServer::new(DualServerConfig::default(), CountingTokens::new());
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
            Op::Play { slot, kind, who } => {
                let i = usize::from(slot) % SLOTS;
                let Some(link) = a.slots[i].link else {
                    continue;
                };
                let k = a.known(who);
                let m = match (kind, k) {
                    (Kind::ConnInit, _) => Message::ConnInit {
                        version: PROTOCOL_VERSION,
                    },
                    (Kind::Disconnection, _) => Message::Disconnection,
                    (Kind::FinalAuth, Some(k)) => Message::FinalAuth {
                        player: k.player,
                        token_b: k.token_b.unwrap_or(k.token_a),
                    },
                    (Kind::Connection, Some(k)) => Message::Connection {
                        version: PROTOCOL_VERSION,
                        player: k.player,
                        token: tether::wire::reconnection_proof(&k.secret, k.player),
                    },
                    _ => continue,
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
            Op::Authentic {
                feed,
                who,
                seq,
                attempt,
                init,
                msg,
            } => {
                let Some(k) = a.known(who) else { continue };
                let f = usize::from(feed) % FEEDS;
                let content = if init {
                    Message::FeedInit {
                        player: k.player,
                        attempt,
                        token_a: k.token_a,
                    }
                    .to_bytes()
                } else {
                    msg.to_bytes()
                };
                if content.len() > 2048 {
                    continue;
                }
                let d = authentic(&k, seq, &content);
                let len = d.len();
                a.feeds[f].authentic = true;
                a.received += len;
                let sent = step(&mut s, &mut a, now, Input::Received(feed_link(f), d), base);
                // Even an authentic datagram gets at most one reply, no larger than it.
                assert!(sent.feed.iter().sum::<usize>() <= len);
                assert!(sent.datagrams.iter().sum::<usize>() <= 1);
            }
            Op::Spoof { feed, datagram: sp } => {
                let f = usize::from(feed) % FEEDS;
                let d = match sp {
                    Spoofed::Raw(v) => Bytes::from(v),
                    Spoofed::Forged {
                        seq,
                        sender,
                        known,
                        tag,
                        content,
                    } => {
                        let k = a.known(known);
                        let sender = sender.or(k.map(|k| k.player)).unwrap_or(0);
                        let content = match content {
                            Content::Any(m) => m.to_bytes(),
                            Content::Bytes(v) => Bytes::from(v),
                            Content::Init(attempt) => Message::FeedInit {
                                player: sender,
                                attempt,
                                token_a: k
                                    .map(|k| k.token_a)
                                    .unwrap_or(Token::new(&[7; 16]).unwrap()),
                            }
                            .to_bytes(),
                        };
                        datagram(seq, sender, &tag, &content)
                    }
                };
                if d.len() > MAX_CHUNK {
                    continue;
                }
                let claims_init = d.len() >= FEED_HEADER_LEN
                    && matches!(
                        Message::decode(d.slice(FEED_HEADER_LEN..)),
                        Ok(Message::FeedInit { .. })
                    );
                let len = d.len();
                if claims_init {
                    a.feeds[f].claims += len;
                }
                a.received += len;
                let before = live();
                let sent = step(&mut s, &mut a, now, Input::Received(feed_link(f), d), base);
                if claims_init {
                    assert!(
                        sent.total() <= len,
                        "{} bytes sent for a spoofed feed init of {len}",
                        sent.total()
                    );
                    assert_eq!(
                        sent.total(),
                        sent.feed[f],
                        "a spoofed feed init answered elsewhere"
                    );
                    assert!(sent.datagrams[f] <= 1);
                } else {
                    assert_eq!(sent.total(), 0, "a spoofed datagram was answered");
                    assert!(
                        live() <= before,
                        "a spoofed datagram is held: {} bytes",
                        live() - before
                    );
                }
            }
            Op::CloseFeed(f) => {
                let f = usize::from(f) % FEEDS;
                step(&mut s, &mut a, now, Input::Closed(feed_link(f)), base);
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 4);
                step(&mut s, &mut a, now, Input::Timeout, base);
            }
        }
    }
});
