//! A dual-channel client and server driven through arbitrary interleavings: `main` bytes
//! and `feed` datagrams delivered, dropped, duplicated or reordered, garbage and forged
//! messages on either channel, transports closed, commands, and time jumps.
//!
//! Checked: no panic; memory bounded by the configuration (players, links, queue); while
//! output is queued the deadline is "now"; every change of the client's state follows
//! `CLIENT_TRANSITIONS`.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tether::connect::dual::{
    feed::FeedSender, DualClientCommand, DualClientConfig, DualClientState, DualClient, DualServer,
    FeedLossPolicy, DualServerCommand, DualServerConfig, TokenSource, CLIENT_TRANSITIONS,
};
use tether::wire::Message;
use tether::{Channel, Duration, Input, Instant, Link, Machine, Output, Token};

struct Counter(u8);
impl TokenSource for Counter {
    fn next_token(&mut self) -> Token {
        self.0 = self.0.wrapping_add(1);
        Token::new(&[self.0; 16]).unwrap()
    }
}

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
        seq: u8,
        sender: u16,
        msg: Message,
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

struct Pkt {
    to_server: bool,
    link: Link,
    bytes: Bytes,
}

struct Net {
    now: Instant,
    client: DualClient,
    server: DualServer<Counter>,
    wire: Vec<Pkt>,
    next_link: u64,
}

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

impl Net {
    fn client_in(&mut self, input: Input<DualClientCommand>) {
        let before = self.client.state();
        let _ = self.client.handle_input(self.now, input);
        let after = self.client.state();
        assert!(reachable(before, after), "{before:?} -> {after:?}");
        self.drain();
    }

    fn server_in(&mut self, input: Input<DualServerCommand>) {
        let _ = self.server.handle_input(self.now, input);
        self.drain();
    }

    fn drain(&mut self) {
        for _ in 0..64 {
            let mut opens = Vec::new();
            let queued_deadline = self.client.poll_timeout();
            let mut first = true;
            loop {
                match self.client.poll_output() {
                    Output::Wait(_) => break,
                    Output::Transmit(t) => self.wire.push(Pkt {
                        to_server: true,
                        link: t.link,
                        bytes: t.payload,
                    }),
                    Output::Open(ch) => opens.push(ch),
                    Output::Event(_) | Output::Close(_) => {}
                }
                if first {
                    assert!(queued_deadline.is_some_and(|d| d <= self.now));
                    first = false;
                }
            }
            let queued_deadline = self.server.poll_timeout();
            let mut first = true;
            loop {
                match self.server.poll_output() {
                    Output::Wait(_) => break,
                    Output::Transmit(t) => self.wire.push(Pkt {
                        to_server: false,
                        link: t.link,
                        bytes: t.payload,
                    }),
                    Output::Open(_) => panic!("a server never opens"),
                    Output::Event(_) | Output::Close(_) => {}
                }
                if first {
                    assert!(queued_deadline.is_some_and(|d| d <= self.now));
                    first = false;
                }
            }
            if opens.is_empty() {
                break;
            }
            for ch in opens {
                let link = Link {
                    id: self.next_link,
                    channel: ch,
                };
                self.next_link += 1;
                if ch == Channel::Main {
                    let _ = self.server.handle_input(self.now, Input::Opened(link));
                }
                let _ = self.client.handle_input(self.now, Input::Opened(link));
            }
        }
        // Bound the wire so that a long input cannot grow it without end.
        if self.wire.len() > 256 {
            self.wire.drain(..128);
        }
    }

    fn deliver(&mut self, p: Pkt) {
        if p.to_server {
            self.server_in(Input::Received(p.link, p.bytes));
        } else {
            self.client_in(Input::Received(p.link, p.bytes));
        }
    }

    fn link_of(&self, feed: bool, to_server: bool) -> Link {
        let (m, f) = self.client.links();
        let l = if feed { f } else { m };
        let _ = to_server;
        l.unwrap_or(if feed { Link::feed(0) } else { Link::main(0) })
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
    let mut net = Net {
        now: Instant::ZERO,
        client: DualClient::new(ccfg),
        server: DualServer::new(scfg, Counter(0)),
        wire: Vec::new(),
        next_link: 1,
    };
    net.client_in(Input::Command(DualClientCommand::Connect));
    for op in case.ops {
        match op {
            Op::Deliver(i) | Op::Drop(i) | Op::Duplicate(i) | Op::Reorder(i)
                if net.wire.is_empty() =>
            {
                let _ = i;
            }
            Op::Deliver(i) => {
                let p = net.wire.remove(usize::from(i) % net.wire.len());
                net.deliver(p);
            }
            Op::Drop(i) => {
                net.wire.remove(usize::from(i) % net.wire.len());
            }
            Op::Duplicate(i) => {
                let p = &net.wire[usize::from(i) % net.wire.len()];
                let copy = Pkt {
                    to_server: p.to_server,
                    link: p.link,
                    bytes: p.bytes.clone(),
                };
                net.deliver(copy);
            }
            Op::Reorder(i) => {
                let p = net.wire.remove(usize::from(i) % net.wire.len());
                net.wire.push(p);
            }
            Op::Garbage {
                to_server,
                feed,
                bytes,
            } => net.deliver(Pkt {
                to_server,
                link: net.link_of(feed, to_server),
                bytes: Bytes::from(bytes),
            }),
            Op::ForgeFeed {
                to_server,
                seq,
                sender,
                msg,
            } => {
                let mut tx = FeedSender::new(sender);
                for _ in 0..seq {
                    let _ = tx.encode(&Message::Dummy, &mut BytesMut::new(), 500);
                }
                let mut buf = BytesMut::new();
                if tx.encode(&msg, &mut buf, 500).is_ok() {
                    net.deliver(Pkt {
                        to_server,
                        link: net.link_of(true, to_server),
                        bytes: buf.freeze(),
                    });
                }
            }
            Op::ForgeMain { to_server, msg } => {
                let mut buf = BytesMut::new();
                msg.encode_framed(&mut buf);
                net.deliver(Pkt {
                    to_server,
                    link: net.link_of(false, to_server),
                    bytes: buf.freeze(),
                });
            }
            Op::Advance(ms) => {
                net.now += Duration::from_millis(u64::from(ms));
                net.client_in(Input::Timeout);
                net.server_in(Input::Timeout);
            }
            Op::CloseMain => {
                if let Some(l) = net.client.links().0 {
                    net.client_in(Input::Closed(l));
                    net.server_in(Input::Closed(l));
                }
            }
            Op::CloseFeed => {
                if let Some(l) = net.client.links().1 {
                    net.client_in(Input::Closed(l));
                    net.server_in(Input::Closed(l));
                }
            }
            Op::Client(cmd) => net.client_in(Input::Command(cmd)),
            Op::Server(cmd) => net.server_in(Input::Command(cmd)),
        }
        assert!(net.server.player_count() <= 4);
        assert!(net.server.link_count() <= 6);
        assert!(net.client.queued() <= 8);
    }
});
