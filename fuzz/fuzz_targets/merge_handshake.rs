//! Drives a token-merge client and a server registry with arbitrary interleavings of valid
//! frames, garbage, closes, reopens, commands and timeouts, in either encoding. Asserts: no
//! panic, bounded state (registry, pending handshakes, queues), and that two CONNECTED ends
//! of the same transport agree on the merged token (unless bytes were injected on it).
//!
//! Half the runs keep messages small (256 bytes, so that random length prefixes are
//! refused at once), half use the default `max_message` (1 MiB), where a random prefix
//! announces a frame that swallows the bytes behind it.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tether::connect::merge::*;
use tether::testkit::{Packet, Pair, Side};
use tether::wire::Message;
use tether::{Duration, Input, Instant, Link, Machine, Token};

#[derive(Debug, Arbitrary)]
enum Op {
    /// Deliver what the client sent, cut at `cut`.
    ClientToServer {
        cut: u8,
    },
    /// Deliver what the server sent.
    ServerToClient,
    /// Open the transport the client asked for (on both sides), or a stray one.
    Open {
        stray: bool,
        id: u8,
    },
    /// Close a transport on one or both sides.
    Close {
        id: u8,
        client: bool,
        server: bool,
    },
    /// Raw bytes on any link, to either side.
    Garbage {
        id: u8,
        to_server: bool,
        bytes: Vec<u8>,
    },
    /// A valid message (maybe a control message) on any link, to either side.
    Frame {
        id: u8,
        to_server: bool,
        msg: Message,
    },
    /// Time passes; timeouts fire.
    Advance {
        millis: u16,
    },
    /// Application commands.
    ClientSend(Vec<u8>),
    ClientDisconnect,
    ServerSend {
        session: u8,
    },
    ServerDisconnect {
        session: u8,
    },
}

#[derive(Debug, Arbitrary)]
struct Plan {
    dop: bool,
    /// The default `max_message` instead of 256 bytes.
    default_max: bool,
    seed: u64,
    ops: Vec<Op>,
}

const MAX_SESSIONS: usize = 3;
const MAX_PENDING: usize = 3;
const MAX_QUEUE: usize = 4;

fn token(enc: Encoding, n: u64) -> Token {
    // Distinct, valid in both encodings: 16 alphanumeric characters.
    let mut b = [b'a'; 16];
    let mut x = n;
    for c in b.iter_mut() {
        *c = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[(x % 62) as usize];
        x /= 62;
    }
    let _ = enc;
    Token::new(&b).unwrap()
}

fuzz_target!(|plan: Plan| {
    let enc = if plan.dop {
        Encoding::Dop
    } else {
        Encoding::Tether
    };
    let now = Instant::ZERO;
    let max_message = if plan.default_max {
        MergeClientConfig::default().max_message
    } else {
        256
    };
    let ccfg = MergeClientConfig {
        encoding: enc,
        jitter_seed: plan.seed,
        max_queue: MAX_QUEUE,
        max_message,
        ..MergeClientConfig::default()
    };
    let scfg = MergeServerConfig {
        encoding: enc,
        max_sessions: MAX_SESSIONS,
        max_pending: MAX_PENDING,
        max_queue: MAX_QUEUE,
        max_message,
        resume_grace: Duration::from_secs(5),
        ended_memory: Duration::from_secs(20),
        ..MergeServerConfig::default()
    };
    let Ok(client) = MergeClient::new(now, ccfg, token(enc, 1)) else {
        return;
    };
    let mut n = 100u64;
    let server = MergeServer::new(scfg, move || {
        n += 1;
        token(enc, n)
    });
    // The testkit's pair, held: outputs wait on the wire until an op moves them. The
    // client's requests to open are recorded there; errors are kept (and cleared).
    let mut net = Pair::new(client, server).at(now).held().without_events();
    let mut granted = 0usize;
    let mut next_link = 1u64;
    // Transports bytes were injected on (a forged frame, or garbage, which may hold frames
    // or complete a frame the real traffic began): an on-path attacker (no TLS) can make
    // the two ends of such a transport disagree, so the agreement check below skips them.
    let mut forged = std::collections::BTreeSet::new();

    for op in plan.ops.into_iter().take(256) {
        // Collect outputs first, as a driver would.
        net.pump();
        match op {
            Op::ClientToServer { cut } => {
                while let Some(Packet::Data {
                    link, mut bytes, ..
                }) = net.pop_to(Side::Server)
                {
                    let at = usize::from(cut).min(bytes.len());
                    let head = bytes.split_to(at);
                    let _ = net
                        .server
                        .handle_input(net.now, Input::Received(link, head));
                    let _ = net
                        .server
                        .handle_input(net.now, Input::Received(link, bytes));
                }
            }
            Op::ServerToClient => {
                while let Some(Packet::Data { link, bytes, .. }) = net.pop_to(Side::Client) {
                    let _ = net
                        .client
                        .handle_input(net.now, Input::Received(link, bytes));
                }
            }
            Op::Open { stray, id } => {
                if stray {
                    let _ = net
                        .server
                        .handle_input(net.now, Input::Opened(Link::main(u64::from(id))));
                } else if net.opens.len() > granted {
                    granted += 1;
                    next_link += 1000;
                    let l = Link::main(next_link);
                    let _ = net.client.handle_input(net.now, Input::Opened(l));
                    let _ = net.server.handle_input(net.now, Input::Opened(l));
                }
            }
            Op::Close {
                id,
                client: c,
                server: s,
            } => {
                let l = match net.client.view().link {
                    Some(l) if id % 2 == 0 => l,
                    _ => Link::main(u64::from(id)),
                };
                if c {
                    let _ = net.client.handle_input(net.now, Input::Closed(l));
                }
                if s {
                    let _ = net.server.handle_input(net.now, Input::Closed(l));
                }
            }
            Op::Garbage {
                id,
                to_server: ts,
                bytes,
            } => {
                let l = Link::main(if id % 2 == 0 {
                    next_link
                } else {
                    u64::from(id)
                });
                let b = Bytes::from(bytes);
                forged.insert(l.id);
                let _ = if ts {
                    net.server.handle_input(net.now, Input::Received(l, b))
                } else {
                    net.client.handle_input(net.now, Input::Received(l, b))
                };
            }
            Op::Frame {
                id,
                to_server: ts,
                msg,
            } => {
                let l = Link::main(if id % 2 == 0 {
                    next_link
                } else {
                    u64::from(id)
                });
                let mut b = bytes::BytesMut::new();
                if enc == Encoding::Tether {
                    msg.encode_framed(&mut b);
                } else {
                    msg.encode(&mut b);
                }
                let b = b.freeze();
                forged.insert(l.id);
                let _ = if ts {
                    net.server.handle_input(net.now, Input::Received(l, b))
                } else {
                    net.client.handle_input(net.now, Input::Received(l, b))
                };
            }
            Op::Advance { millis } => {
                net.now += Duration::from_millis(u64::from(millis) * 10);
                let _ = net.client.handle_input(net.now, Input::Timeout);
                let _ = net.server.handle_input(net.now, Input::Timeout);
            }
            Op::ClientSend(data) => {
                let msg = Message::App(Bytes::from(data));
                let _ = net
                    .client
                    .handle_input(net.now, Input::Command(MergeClientCommand::Send(msg)));
            }
            Op::ClientDisconnect => {
                let _ = net
                    .client
                    .handle_input(net.now, Input::Command(MergeClientCommand::Disconnect));
            }
            Op::ServerSend { session } => {
                let cmd = MergeServerCommand::Send {
                    session: SessionId(u64::from(session % 4)),
                    message: Message::App(Bytes::from_static(b"x")),
                };
                let _ = net.server.handle_input(net.now, Input::Command(cmd));
            }
            Op::ServerDisconnect { session } => {
                let cmd = MergeServerCommand::Disconnect {
                    session: SessionId(u64::from(session % 4)),
                };
                let _ = net.server.handle_input(net.now, Input::Command(cmd));
            }
        }
        assert!(net.server.session_count() <= MAX_SESSIONS);
        assert!(net.server.pending_count() <= MAX_PENDING);
        // Tombstones: at most `max_sessions` the application ended and as many their
        // clients ended (`MergeServerConfig::ended_memory`).
        assert!(net.server.ended_count() <= 2 * MAX_SESSIONS);
        assert!(net.client.queued() <= MAX_QUEUE);
        assert!(net.wire.len() < 10_000);
        net.client_errors.clear();
        net.server_errors.clear();
        net.closes.clear();
        // Two CONNECTED ends of one transport hold the same merged token.
        let v = net.client.view();
        if let (Status::Connected, Some(l)) = (v.status, v.link) {
            if forged.contains(&l.id) {
                continue;
            }
            if let Some(s) = net
                .server
                .session_of(l.id)
                .and_then(|id| net.server.session(id))
            {
                if s.status == Status::Connected && s.link == Some(l) {
                    assert_eq!(s.merged, v.merged);
                }
            }
        }
    }
});
