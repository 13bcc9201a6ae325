//! A dual-channel client and server driven through arbitrary interleavings: `main` bytes
//! and `feed` datagrams delivered, dropped, duplicated or reordered, garbage and forged
//! messages on either channel, transports closed, commands, and time jumps.
//!
//! The attacker also works from the victim's own traffic: `feed` datagrams seen on the wire
//! are replayed (as they were, or with their `SEQ` rewritten to any 64-bit value) on the
//! victim's link or from another address, every token seen on `feed` is tried in a
//! `CONNECTION` on a `main` of the attacker's, and datagrams are forged with full-width
//! sequence numbers and any tag.
//!
//! Checked: no panic; memory bounded by the configuration (players, links, queue); while
//! output is queued the deadline is "now"; every change of the client's state follows
//! `CLIENT_TRANSITIONS`; a `main` of the attacker's never gets `CONN_OK`, and a `feed` of
//! the attacker's is never bound to a player.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tether::connect::dual::{
    DualClient, DualClientCommand, DualClientConfig, DualClientState, DualServer,
    DualServerCommand, DualServerConfig, FeedLossPolicy, CLIENT_TRANSITIONS,
};
use tether::testkit::{CountingTokens, Packet, Pair, Side};
use tether::wire::{FeedDatagram, FrameDecoder, Message, FEED_HEADER_LEN};
use tether::{Duration, Input, Instant, Link, Machine, Output};

#[derive(Debug, arbitrary::Arbitrary)]
enum Op {
    Deliver(u8),
    Drop(u8),
    Duplicate(u8),
    /// Moves a packet to the back of the wire (reordering).
    Reorder(u8),
    Garbage {
        to_server: bool,
        feed: bool,
        bytes: Vec<u8>,
    },
    ForgeFeed {
        to_server: bool,
        seq: u64,
        sender: u16,
        tag: [u8; 16],
        msg: Message,
    },
    /// A `feed` datagram seen on the wire, again: to its own receiver or from the
    /// attacker's address, its `SEQ` kept or rewritten.
    ReplayFeed {
        index: u8,
        seq: Option<u64>,
        from_attacker: bool,
    },
    /// A token seen on `feed` tried as the reconnection proof on an attacker's `main`.
    StolenToken {
        index: u8,
        player: Option<u16>,
    },
    ForgeMain {
        to_server: bool,
        msg: Message,
    },
    Advance(u16),
    CloseMain,
    CloseFeed,
    Client(DualClientCommand),
    Server(DualServerCommand),
}

#[derive(Debug, arbitrary::Arbitrary)]
struct Case {
    reinit: bool,
    ops: Vec<Op>,
}

/// The client, checking that every change of its state follows `CLIENT_TRANSITIONS`
/// (within a few rows: one input may take several).
struct Checked(DualClient);

impl Machine for Checked {
    type Command = DualClientCommand;
    type Event = <DualClient as Machine>::Event;
    type Error = <DualClient as Machine>::Error;

    fn handle_input(
        &mut self,
        now: Instant,
        input: Input<DualClientCommand>,
    ) -> Result<(), Self::Error> {
        let before = self.0.state();
        let r = self.0.handle_input(now, input);
        let after = self.0.state();
        assert!(reachable(before, after), "{before:?} -> {after:?}");
        r
    }
    fn poll_output(&mut self) -> Output<Self::Event> {
        self.0.poll_output()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// The testkit's pair, held: the fuzzer picks which packet moves. Opens are granted (link
/// ids 1, 2, ...), errors kept (and cleared), events dropped, and the driver contract's
/// "deadline is now while output is queued" checked on every output.
type Net = Pair<Checked, DualServer<CountingTokens>>;

fn reachable(from: DualClientState, to: DualClientState) -> bool {
    let mut frontier = vec![from];
    for _ in 0..4 {
        if frontier.contains(&to) {
            return true;
        }
        let mut next = frontier.clone();
        for s in &frontier {
            for (a, _, b) in CLIENT_TRANSITIONS {
                if a == s && !next.contains(b) {
                    next.push(*b);
                }
            }
        }
        frontier = next;
    }
    frontier.contains(&to)
}

fn link_of(net: &Net, feed: bool) -> Link {
    let (m, f) = net.client.0.links();
    let l = if feed { f } else { m };
    l.unwrap_or(if feed { Link::feed(0) } else { Link::main(0) })
}

/// Attacker links: ids no granted open reaches (the pair grants 1, 2, 3...).
const ATTACKER: u64 = 1 << 40;

/// Remembers a `feed` datagram seen on its way, and any token it carries.
fn record(seen: &mut Vec<Packet>, tokens: &mut Vec<tether::Token>, p: &Packet) {
    if p.link().channel != tether::Channel::Feed {
        return;
    }
    if let Some(b) = p.bytes() {
        if let Ok(m) = Message::decode(b.slice(FEED_HEADER_LEN.min(b.len())..)) {
            match m {
                Message::FeedInit { token_a: t, .. } | Message::FeedInitRep { token_b: t, .. } => {
                    if tokens.len() < 16 {
                        tokens.push(t)
                    }
                }
                _ => {}
            }
        }
    }
    if seen.len() >= 64 {
        seen.remove(0);
    }
    seen.push(p.clone());
}

/// Takes off the wire whatever the server sent on attacker links, checking that no
/// `main` of the attacker's was given `CONN_OK`.
fn check_attacker_links(net: &mut Net) {
    let mut frames = FrameDecoder::new(1 << 20);
    net.wire.retain(|p| {
        let l = p.link();
        if l.id < ATTACKER {
            return true;
        }
        if l.channel == tether::Channel::Main {
            if let Some(b) = p.bytes() {
                frames.reset();
                frames.push_bytes(b.clone());
                while let Ok(Some(f)) = frames.next_frame() {
                    assert_ne!(
                        Message::decode(f).ok(),
                        Some(Message::ConnOk),
                        "a token seen on feed reconnected main"
                    );
                }
            }
        }
        false
    });
    for id in 0..4 {
        if let Some((_, Some(feed))) = net.server.player_links(id) {
            assert!(feed.id < ATTACKER, "feed rebound to the attacker");
        }
    }
}

fn to(to_server: bool) -> Side {
    if to_server {
        Side::Server
    } else {
        Side::Client
    }
}

fuzz_target!(|case: Case| {
    let ccfg = DualClientConfig {
        on_feed_lost: if case.reinit {
            FeedLossPolicy::Reinit
        } else {
            FeedLossPolicy::CloseBoth
        },
        max_queued: 8,
        ..DualClientConfig::default()
    };
    let scfg = DualServerConfig {
        max_players: 4,
        max_links: 6,
        max_queued: 8,
        ..DualServerConfig::default()
    };
    let mut net: Net = Pair::new(
        Checked(DualClient::new(ccfg)),
        DualServer::new(scfg, CountingTokens::new()),
    )
    .held()
    .granting_opens()
    .without_events()
    .checking_deadlines();
    net.client_in(Input::Command(DualClientCommand::Connect));
    let mut seen: Vec<Packet> = Vec::new();
    let mut tokens: Vec<tether::Token> = Vec::new();
    let mut next_attacker = ATTACKER;
    for op in case.ops {
        match op {
            Op::Deliver(i) | Op::Drop(i) | Op::Duplicate(i) | Op::Reorder(i)
                if net.wire.is_empty() =>
            {
                let _ = i;
            }
            Op::Deliver(i) => {
                if let Some(p) = net.wire.remove(usize::from(i) % net.wire.len()) {
                    record(&mut seen, &mut tokens, &p);
                    net.deliver(p);
                }
            }
            Op::Drop(i) => {
                net.wire.remove(usize::from(i) % net.wire.len());
            }
            Op::Duplicate(i) => {
                let copy = net.wire[usize::from(i) % net.wire.len()].clone();
                net.deliver(copy);
            }
            Op::Reorder(i) => {
                if let Some(p) = net.wire.remove(usize::from(i) % net.wire.len()) {
                    net.wire.push_back(p);
                }
            }
            Op::Garbage {
                to_server,
                feed,
                bytes,
            } => net.deliver(Packet::Data {
                to: to(to_server),
                link: link_of(&net, feed),
                bytes: Bytes::from(bytes),
            }),
            Op::ForgeFeed {
                to_server,
                seq,
                sender,
                tag,
                msg,
            } => {
                let d = FeedDatagram {
                    seq,
                    sender,
                    tag,
                    content: msg.to_bytes(),
                };
                let mut buf = BytesMut::new();
                if d.encode(&mut buf, 500).is_ok() {
                    net.deliver(Packet::Data {
                        to: to(to_server),
                        link: link_of(&net, true),
                        bytes: buf.freeze(),
                    });
                }
            }
            Op::ReplayFeed {
                index,
                seq,
                from_attacker,
            } => {
                if !seen.is_empty() {
                    let p = seen[usize::from(index) % seen.len()].clone();
                    if let Packet::Data { to, link, bytes } = p {
                        let mut b = BytesMut::from(&bytes[..]);
                        if let (Some(s), true) = (seq, b.len() >= 16) {
                            b[8..16].copy_from_slice(&s.to_be_bytes());
                        }
                        // From the attacker's own address, only the server listens.
                        let (to, link) = if from_attacker {
                            next_attacker += 1;
                            (Side::Server, Link::feed(next_attacker))
                        } else {
                            (to, link)
                        };
                        net.deliver(Packet::Data {
                            to,
                            link,
                            bytes: b.freeze(),
                        });
                    }
                }
            }
            Op::StolenToken { index, player } => {
                if !tokens.is_empty() {
                    let token = tokens[usize::from(index) % tokens.len()];
                    let player = player.or(net.client.0.player()).unwrap_or(0);
                    next_attacker += 1;
                    let link = Link::main(next_attacker);
                    net.server_in(Input::Opened(link));
                    let mut buf = BytesMut::new();
                    Message::Connection {
                        version: tether::wire::PROTOCOL_VERSION,
                        player,
                        token,
                    }
                    .encode_framed(&mut buf);
                    net.server_in(Input::Received(link, buf.freeze()));
                    check_attacker_links(&mut net);
                    net.server_in(Input::Closed(link));
                }
            }
            Op::ForgeMain { to_server, msg } => {
                let mut buf = BytesMut::new();
                msg.encode_framed(&mut buf);
                net.deliver(Packet::Data {
                    to: to(to_server),
                    link: link_of(&net, false),
                    bytes: buf.freeze(),
                });
            }
            Op::Advance(ms) => {
                net.now += Duration::from_millis(u64::from(ms));
                net.fire(Side::Client);
                net.fire(Side::Server);
            }
            Op::CloseMain => {
                if let Some(l) = net.client.0.links().0 {
                    net.client_in(Input::Closed(l));
                    net.server_in(Input::Closed(l));
                }
            }
            Op::CloseFeed => {
                if let Some(l) = net.client.0.links().1 {
                    net.client_in(Input::Closed(l));
                    net.server_in(Input::Closed(l));
                }
            }
            Op::Client(cmd) => net.client_in(Input::Command(cmd)),
            Op::Server(cmd) => net.server_in(Input::Command(cmd)),
        }
        // Bound the wire and the error lists so that a long input cannot grow them without end.
        if net.wire.len() > 256 {
            net.wire.drain(..128);
        }
        check_attacker_links(&mut net);
        net.client_errors.clear();
        net.server_errors.clear();
        net.closes.clear();
        assert!(net.server.player_count() <= 4);
        assert!(net.server.link_count() <= 6);
        assert!(net.client.0.queued() <= 8);
    }
});
