//! Seed 004 (dop's connectivity proposal), replayed step by step, in both encodings; the
//! real dop wire trace, byte for byte; and the races the document does not draw.
#![cfg(feature = "testkit")]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tether::connect::merge::*;
use tether::testkit::{self, Drained, Pair};
use tether::wire::{FailReason, Message, PROTOCOL_VERSION};
use tether::{Channel, Duration, Input, Instant, Link, Machine, Token, Transmit};

type Tokens = Box<dyn FnMut() -> Token>;

// ---------------------------------------------------------------- harness

/// One machine's outputs, sorted (token-merge never opens `feed`).
fn drain<M: Machine>(m: &mut M) -> Drained<M::Event> {
    let out = testkit::drain(m);
    assert!(
        out.opens.iter().all(|c| *c == Channel::Main),
        "token-merge never opens feed"
    );
    out
}

fn tok(bytes: &[u8]) -> Token {
    Token::new(bytes).unwrap()
}

/// The document's `AAAA`, as a token of the encoding: dop keeps the 4 letters; tether needs
/// 16 bytes, so each letter is repeated 16 times.
fn doc_tok(enc: Encoding, c: u8) -> Token {
    match enc {
        Encoding::Dop => tok(&[c; 4]),
        Encoding::Tether => tok(&[c; 16]),
    }
}

fn merged_of(enc: Encoding, a: u8, b: u8) -> Token {
    let n = if enc == Encoding::Dop { 4 } else { 16 };
    let mut v = vec![a; n];
    v.extend(std::iter::repeat(b).take(n));
    tok(&v)
}

fn framed(msg: &Message) -> Bytes {
    let mut b = BytesMut::new();
    msg.encode_framed(&mut b);
    b.freeze()
}

fn token_bytes(enc: Encoding, t: &Token) -> Bytes {
    match enc {
        Encoding::Tether => framed(&Message::Token {
            version: PROTOCOL_VERSION,
            token: *t,
        }),
        Encoding::Dop => Bytes::copy_from_slice(t.as_bytes()),
    }
}

fn resume_bytes(enc: Encoding, t: &Token) -> Bytes {
    match enc {
        Encoding::Tether => framed(&Message::Resume {
            version: PROTOCOL_VERSION,
            token: *t,
        }),
        Encoding::Dop => Bytes::copy_from_slice(t.as_bytes()),
    }
}

fn disconnect_bytes(enc: Encoding, t: &Token) -> Bytes {
    match enc {
        Encoding::Tether => framed(&Message::Disconnect { token: *t }),
        Encoding::Dop => Bytes::copy_from_slice(t.as_bytes()),
    }
}

fn app_bytes(enc: Encoding, text: &'static [u8]) -> Bytes {
    match enc {
        Encoding::Tether => framed(&Message::App(Bytes::from_static(text))),
        Encoding::Dop => Bytes::from_static(text),
    }
}

fn client_cfg(enc: Encoding) -> MergeClientConfig {
    MergeClientConfig {
        encoding: enc,
        jitter_percent: 0,
        ..MergeClientConfig::default()
    }
}

fn server_cfg(enc: Encoding) -> MergeServerConfig {
    MergeServerConfig {
        encoding: enc,
        ..MergeServerConfig::default()
    }
}

/// The server's tokens: a key first (drawn at creation, never sent), then `list`, one per
/// transport.
fn tokens(list: Vec<Token>) -> Tokens {
    let mut it = std::iter::once(tok(b"serverkeyserverk")).chain(list);
    Box::new(move || it.next().expect("the test gave enough server tokens"))
}

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

/// The session layer's ACK (tether's encoding): sent first on a resumed transport.
fn ack(received: u64) -> Bytes {
    framed(&Message::Ack { received })
}

/// What a side sends when it confirms a resumption: the merged token, then (tether's
/// encoding) its ACK, which says where the peer must replay from.
fn resumed_bytes(enc: Encoding, link: u64, t: &Token, received: u64) -> Vec<Transmit> {
    let mut v = vec![tx(link, resume_bytes(enc, t))];
    if enc == Encoding::Tether {
        v.push(tx(link, ack(received)));
    }
    v
}

/// Transmits without the server's SECRET offers (tether's encoding: a fresh resumption
/// secret with every confirmation, derived from the server's key, so not written down
/// here; tests/hostile_merge.rs checks them).
fn no_secrets(transmits: Vec<Transmit>) -> Vec<Transmit> {
    transmits
        .into_iter()
        .filter(|t| t.payload.get(4) != Some(&tether::wire::codes::SECRET))
        .collect()
}

fn tx(link: u64, payload: Bytes) -> Transmit {
    Transmit {
        link: Link::main(link),
        payload,
    }
}

/// Asserts a node's row of a state table.
#[track_caller]
fn row(
    v: NodeView,
    status: Status,
    local: Token,
    remote: Option<Token>,
    merged: Option<Token>,
    link: Option<u64>,
) {
    assert_eq!(v.status, status, "status");
    assert_eq!(v.local, local, "token_local");
    assert_eq!(v.remote, remote, "token_remote");
    assert_eq!(v.merged, merged, "token");
    assert_eq!(v.link, link.map(Link::main), "socket");
}

/// Delivers every transmit to the other side (by link id) until both are quiet, and
/// returns the events of each side.
fn shuttle<S: TokenSource>(
    now: Instant,
    c: &mut MergeClient,
    s: &mut MergeServer<S>,
) -> (Vec<MergeClientEvent>, Vec<MergeServerEvent>) {
    let mut pair = Pair::new(c, s).at(now);
    pair.drive();
    (pair.client_events, pair.server_events)
}

/// A client and a server connected on link 1; returns the session id.
fn connected(
    enc: Encoding,
    server_tokens: Vec<Token>,
) -> (MergeClient, MergeServer<Tokens>, SessionId) {
    let mut c = MergeClient::new(ms(0), client_cfg(enc), doc_tok(enc, b'B')).unwrap();
    let mut s = MergeServer::new(server_cfg(enc), tokens(server_tokens));
    assert_eq!(drain(&mut c).opens.len(), 1);
    c.handle_input(ms(0), Input::Opened(Link::main(1))).unwrap();
    s.handle_input(ms(0), Input::Opened(Link::main(1))).unwrap();
    let (ce, se) = shuttle(ms(0), &mut c, &mut s);
    assert_eq!(
        ce,
        vec![MergeClientEvent::Up {
            session: (),
            outcome: Outcome::Fresh
        }]
    );
    let Some(MergeServerEvent::Up {
        session,
        outcome: Outcome::Fresh,
    }) = se.first().cloned()
    else {
        panic!("server events {se:?}")
    };
    (c, s, session)
}

// ------------------------------------------------------- the document, step by step

fn replay_document(enc: Encoding) {
    let (a, b, cc) = (doc_tok(enc, b'A'), doc_tok(enc, b'B'), doc_tok(enc, b'C'));
    let ab = merged_of(enc, b'A', b'B');
    let mut client = MergeClient::new(ms(0), client_cfg(enc), b).unwrap();
    let mut server = MergeServer::new(server_cfg(enc), tokens(vec![a, cc]));

    // 1. Connection opened via WebSockets.
    assert_eq!(
        drain(&mut client).opens.len(),
        1,
        "the client asks for a transport"
    );
    client
        .handle_input(ms(0), Input::Opened(Link::main(1)))
        .unwrap();
    server
        .handle_input(ms(0), Input::Opened(Link::main(1)))
        .unwrap();
    row(
        server.pending(1).unwrap(),
        Status::Open,
        a,
        None,
        None,
        Some(1),
    );
    row(client.view(), Status::Open, b, None, None, Some(1));

    // 2-4. Both send the instruction: client sends BBBB, server sends AAAA.
    let c_out = drain(&mut client);
    let s_out = drain(&mut server);
    assert_eq!(c_out.transmits, vec![tx(1, token_bytes(enc, &b))]);
    assert_eq!(s_out.transmits, vec![tx(1, token_bytes(enc, &a))]);
    server
        .handle_input(
            ms(1),
            Input::Received(Link::main(1), c_out.transmits[0].payload.clone()),
        )
        .unwrap();
    client
        .handle_input(
            ms(1),
            Input::Received(Link::main(1), s_out.transmits[0].payload.clone()),
        )
        .unwrap();
    row(
        server.pending(1).unwrap(),
        Status::Preconnected,
        a,
        Some(b),
        None,
        Some(1),
    );
    row(
        client.view(),
        Status::Preconnected,
        b,
        Some(a),
        None,
        Some(1),
    );

    // 5-7. Both send the local token again to confirm.
    let s_out = drain(&mut server);
    let c_out = drain(&mut client);
    assert_eq!(
        s_out.transmits,
        vec![tx(1, token_bytes(enc, &a))],
        "6. server sends AAAA"
    );
    assert_eq!(
        c_out.transmits,
        vec![tx(1, token_bytes(enc, &b))],
        "7. client sends BBBB"
    );
    server
        .handle_input(
            ms(2),
            Input::Received(Link::main(1), c_out.transmits[0].payload.clone()),
        )
        .unwrap();
    client
        .handle_input(
            ms(2),
            Input::Received(Link::main(1), s_out.transmits[0].payload.clone()),
        )
        .unwrap();

    // 8. Both merge, in byte order: AAAABBBB.
    let session = server.session_of(1).expect("a session holds socket 1");
    row(
        server.session(session).unwrap(),
        Status::Connected,
        a,
        Some(b),
        Some(ab),
        Some(1),
    );
    row(
        client.view(),
        Status::Connected,
        b,
        Some(a),
        Some(ab),
        Some(1),
    );
    assert_eq!(
        drain(&mut client).events,
        vec![MergeClientEvent::Up {
            session: (),
            outcome: Outcome::Fresh
        }]
    );
    assert_eq!(
        drain(&mut server).events,
        vec![MergeServerEvent::Up {
            session,
            outcome: Outcome::Fresh
        }]
    );

    // 9. The socket is closed; the client will reconnect on a new socket.
    client
        .handle_input(ms(10), Input::Closed(Link::main(1)))
        .unwrap();
    server
        .handle_input(ms(10), Input::Closed(Link::main(1)))
        .unwrap();
    assert_eq!(
        client.poll_timeout(),
        Some(ms(10)),
        "output queued: deadline is now"
    );
    assert_eq!(
        drain(&mut client).events,
        vec![MergeClientEvent::Down { session: () }]
    );
    assert_eq!(client.poll_timeout(), Some(ms(1010)), "dop waits 1 s");
    client.handle_input(ms(1010), Input::Timeout).unwrap();
    assert_eq!(drain(&mut client).opens.len(), 1);
    client
        .handle_input(ms(1011), Input::Opened(Link::main(2)))
        .unwrap();

    // 10. The server creates another node for socket 2.
    server
        .handle_input(ms(1011), Input::Opened(Link::main(2)))
        .unwrap();
    row(
        server.session(session).unwrap(),
        Status::Reconnecting,
        a,
        Some(b),
        Some(ab),
        None,
    );
    row(
        server.pending(2).unwrap(),
        Status::Open,
        cc,
        None,
        None,
        Some(2),
    );
    row(
        client.view(),
        Status::Reconnecting,
        b,
        Some(a),
        Some(ab),
        Some(2),
    );

    // 11. SERVER2 sends CCCC. 12. The client is PRECONNECTED.
    let s_out = drain(&mut server);
    assert_eq!(s_out.events, vec![MergeServerEvent::Down { session }]);
    assert_eq!(s_out.transmits, vec![tx(2, token_bytes(enc, &cc))]);
    let c_out = drain(&mut client); // the client's resumption, sent at once on open
    assert_eq!(c_out.transmits, vec![tx(2, resume_bytes(enc, &ab))]);
    client
        .handle_input(
            ms(1012),
            Input::Received(Link::main(2), s_out.transmits[0].payload.clone()),
        )
        .unwrap();
    row(
        server.session(session).unwrap(),
        Status::Reconnecting,
        a,
        Some(b),
        Some(ab),
        None,
    );
    row(
        server.pending(2).unwrap(),
        Status::Open,
        cc,
        None,
        None,
        Some(2),
    );
    row(
        client.view(),
        Status::Preconnected,
        b,
        Some(cc),
        Some(ab),
        Some(2),
    );
    assert!(
        drain(&mut client).transmits.is_empty(),
        "a resuming client does not answer CCCC"
    );

    // 12. CLIENT sends AAAABBBB. 13-15. SERVER1 CONNECTED with socket 2; SERVER2 deleted.
    server
        .handle_input(
            ms(1013),
            Input::Received(Link::main(2), c_out.transmits[0].payload.clone()),
        )
        .unwrap();
    row(
        server.session(session).unwrap(),
        Status::Connected,
        a,
        Some(b),
        Some(ab),
        Some(2),
    );
    assert_eq!(server.pending(2), None, "SERVER2 deleted");
    assert_eq!(server.session_of(2), Some(session));
    assert_eq!(server.session_count(), 1);
    row(
        client.view(),
        Status::Preconnected,
        b,
        Some(cc),
        Some(ab),
        Some(2),
    );

    // 15. SERVER1 sends AAAABBBB to confirm (and, in tether's encoding, the session
    // layer's ACK: it received nothing of this session yet).
    let s_out = drain(&mut server);
    assert_eq!(
        no_secrets(s_out.transmits.clone()),
        resumed_bytes(enc, 2, &ab, 0)
    );
    assert_eq!(
        s_out.events,
        vec![MergeServerEvent::Up {
            session,
            outcome: Outcome::Resumed
        }]
    );
    client
        .handle_input(
            ms(1014),
            Input::Received(Link::main(2), s_out.transmits[0].payload.clone()),
        )
        .unwrap();
    row(
        server.session(session).unwrap(),
        Status::Connected,
        a,
        Some(b),
        Some(ab),
        Some(2),
    );
    row(
        client.view(),
        Status::Connected,
        b,
        Some(cc),
        Some(ab),
        Some(2),
    );
    assert_eq!(
        drain(&mut client).events,
        vec![MergeClientEvent::Up {
            session: (),
            outcome: Outcome::Resumed
        }]
    );

    // DISCONNECTION 9-10 (the document's commented-out section): the client sends the
    // merged token; both sides end for good and close socket.
    client
        .handle_input(ms(2000), Input::Command(MergeClientCommand::Disconnect))
        .unwrap();
    let c_out = drain(&mut client);
    assert_eq!(c_out.transmits, vec![tx(2, disconnect_bytes(enc, &ab))]);
    assert_eq!(c_out.closes, vec![Link::main(2)]);
    assert_eq!(
        c_out.events,
        vec![MergeClientEvent::Ended {
            session: (),
            reason: EndReason::LocalDisconnect,
            undelivered: vec![]
        }]
    );
    server
        .handle_input(
            ms(2001),
            Input::Received(Link::main(2), c_out.transmits[0].payload.clone()),
        )
        .unwrap();
    let s_out = drain(&mut server);
    assert_eq!(s_out.closes, vec![Link::main(2)]);
    assert_eq!(
        s_out.events,
        vec![MergeServerEvent::Ended {
            session,
            reason: EndReason::PeerDisconnect,
            undelivered: vec![],
        }]
    );
    row(
        client.view(),
        Status::Disconnected,
        b,
        Some(cc),
        Some(ab),
        None,
    );
    assert_eq!(
        server.session(session),
        None,
        "the server forgets an ended session"
    );
    assert_eq!(server.ended_count(), 1, "but remembers its token as ended");
}

#[test]
fn document_steps_tether_encoding() {
    replay_document(Encoding::Tether);
}

#[test]
fn document_steps_dop_encoding() {
    replay_document(Encoding::Dop);
}

// ------------------------------------------------------------- the real dop wire trace

/// `/work/shared/seeds/dop-wire-trace.txt`: a real run of dop's code (ms, connection,
/// direction, text message).
const DOP_TRACE: &str = r#"522	#1	OPEN	"ws://127.0.0.1:17200/dop"
533	#1	C->S	"2HuI7oOHwVpjd8qB"
539	#1	S->C	"o6ZjuqLMF30mbzpb"
540	#1	S->C	"o6ZjuqLMF30mbzpb"
542	#1	C->S	"2HuI7oOHwVpjd8qB"
546	#1	C->S	"hello-before-drop"
549	#1	CLOSE-C	code=1006 initiator=peer
554	#1	CLOSE-S	code=1006 initiator=proxy
1556	#2	OPEN	"ws://127.0.0.1:17200/dop"
1559	#2	C->S	"2HuI7oOHwVpjd8qBo6ZjuqLMF30mbzpb"
1563	#2	S->C	"aBQwUQw5G4jx1Y5F"
1565	#2	S->C	"2HuI7oOHwVpjd8qBo6ZjuqLMF30mbzpb"
1567	#2	C->S	"hello-after-reconnect"
1570	#2	C->S	"2HuI7oOHwVpjd8qBo6ZjuqLMF30mbzpb"
1575	#2	CLOSE-C	code=1005 initiator=peer
1575	#2	CLOSE-S	code=1005 initiator=proxy
4225	#3	OPEN	"ws://127.0.0.1:17200/dop"
4230	#3	S->C	"5g2d7jCSz5W8VuJU"
4233	#3	C->S	"cBeHKy6TQBa98b1K"
4234	#3	S->C	"5g2d7jCSz5W8VuJU"
4236	#3	C->S	"cBeHKy6TQBa98b1K"
4247	#3	CLOSE-C	code=1005 initiator=peer
4250	#3	CLOSE-S	code=1005 initiator=proxy"#;

struct Line {
    at: Instant,
    link: Link,
    kind: &'static str,
    text: &'static str,
}

fn trace() -> Vec<Line> {
    DOP_TRACE
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Line {
                at: ms(f[0].parse().unwrap()),
                link: Link::main(f[1][1..].parse().unwrap()),
                kind: f[2],
                text: f[3].trim_matches('"'),
            }
        })
        .collect()
}

const MERGED_1: &str = "2HuI7oOHwVpjd8qBo6ZjuqLMF30mbzpb";

#[test]
fn dop_trace_server_side_byte_for_byte() {
    let mut server = MergeServer::new(
        server_cfg(Encoding::Dop),
        tokens(vec![
            tok(b"o6ZjuqLMF30mbzpb"),
            tok(b"aBQwUQw5G4jx1Y5F"),
            tok(b"5g2d7jCSz5W8VuJU"),
        ]),
    );
    let mut sent: std::collections::VecDeque<Transmit> = Default::default();
    let mut events = vec![];
    let mut closes = vec![];
    for line in trace() {
        let input = match line.kind {
            "OPEN" => Some(Input::Opened(line.link)),
            "C->S" => Some(Input::Received(
                line.link,
                Bytes::from_static(line.text.as_bytes()),
            )),
            "CLOSE-S" => Some(Input::Closed(line.link)),
            "S->C" => {
                let t = sent.pop_front().expect("the server sent this line");
                assert_eq!(t.link, line.link);
                assert_eq!(t.payload, line.text.as_bytes(), "at {:?}", line.at);
                None
            }
            _ => None,
        };
        if let Some(input) = input {
            server.handle_input(line.at, input).unwrap();
        }
        let out = drain(&mut server);
        sent.extend(out.transmits);
        events.extend(out.events);
        closes.extend(out.closes);
    }
    assert!(sent.is_empty(), "nothing sent beyond the trace: {sent:?}");
    let (s1, s3) = (SessionId(1), SessionId(2));
    assert_eq!(
        events,
        vec![
            MergeServerEvent::Up {
                session: s1,
                outcome: Outcome::Fresh
            },
            MergeServerEvent::Message {
                session: s1,
                message: Message::App(Bytes::from_static(b"hello-before-drop"))
            },
            MergeServerEvent::Down { session: s1 },
            MergeServerEvent::Up {
                session: s1,
                outcome: Outcome::Resumed
            },
            MergeServerEvent::Message {
                session: s1,
                message: Message::App(Bytes::from_static(b"hello-after-reconnect"))
            },
            MergeServerEvent::Ended {
                session: s1,
                reason: EndReason::PeerDisconnect,
                undelivered: vec![],
            },
            MergeServerEvent::Up {
                session: s3,
                outcome: Outcome::Fresh
            },
            // #3 closes without a formal disconnection: resumable.
            MergeServerEvent::Down { session: s3 },
        ]
    );
    assert_eq!(
        closes,
        vec![Link::main(2)],
        "the formal disconnection closes socket 2"
    );
    assert_eq!(
        server.session(s3).unwrap().merged,
        Some(tok(b"5g2d7jCSz5W8VuJUcBeHKy6TQBa98b1K"))
    );
}

#[test]
fn dop_trace_client_side_byte_for_byte() {
    let cfg = client_cfg(Encoding::Dop);
    let mut clients = [
        MergeClient::new(ms(0), cfg, tok(b"2HuI7oOHwVpjd8qB")).unwrap(),
        MergeClient::new(ms(4000), cfg, tok(b"cBeHKy6TQBa98b1K")).unwrap(),
    ];
    let mut sent: std::collections::VecDeque<Transmit> = Default::default();
    let mut events = vec![];
    let mut closes = vec![];
    let mut opens = 0;
    for line in trace() {
        let c = if line.link.id == 3 { 1 } else { 0 };
        let client = &mut clients[c];
        match line.kind {
            "OPEN" => {
                if line.link.id == 2 {
                    // Nothing asked for a transport before the wait of dop's 1 s was over.
                    assert_eq!(client.poll_timeout(), Some(ms(549 + 1000)));
                    client.handle_input(line.at, Input::Timeout).unwrap();
                }
                client
                    .handle_input(line.at, Input::Opened(line.link))
                    .unwrap();
            }
            "S->C" => client
                .handle_input(
                    line.at,
                    Input::Received(line.link, Bytes::from_static(line.text.as_bytes())),
                )
                .unwrap(),
            "CLOSE-C" => client
                .handle_input(line.at, Input::Closed(line.link))
                .unwrap(),
            "C->S" if line.text.starts_with("hello") => client
                .handle_input(
                    line.at,
                    Input::Command(MergeClientCommand::Send(Message::App(Bytes::from_static(
                        line.text.as_bytes(),
                    )))),
                )
                .unwrap(),
            "C->S" if line.text == MERGED_1 && client.view().status == Status::Connected => client
                .handle_input(line.at, Input::Command(MergeClientCommand::Disconnect))
                .unwrap(),
            _ => {}
        }
        let out = drain(client);
        opens += out.opens.len();
        sent.extend(out.transmits);
        events.extend(out.events);
        closes.extend(out.closes);
        if line.kind == "C->S" {
            let t = sent.pop_front().expect("the client sent this line");
            assert_eq!(t.link, line.link);
            assert_eq!(t.payload, line.text.as_bytes(), "at {:?}", line.at);
        }
    }
    assert!(sent.is_empty(), "nothing sent beyond the trace: {sent:?}");
    assert_eq!(opens, 3, "two first transports and one reconnection");
    assert_eq!(
        events,
        vec![
            MergeClientEvent::Up {
                session: (),
                outcome: Outcome::Fresh
            },
            MergeClientEvent::Down { session: () },
            MergeClientEvent::Up {
                session: (),
                outcome: Outcome::Resumed
            },
            MergeClientEvent::Ended {
                session: (),
                reason: EndReason::LocalDisconnect,
                undelivered: vec![]
            },
            MergeClientEvent::Up {
                session: (),
                outcome: Outcome::Fresh
            },
            MergeClientEvent::Down { session: () },
        ]
    );
    assert_eq!(closes, vec![Link::main(2)]);
    assert_eq!(clients[0].view().merged, Some(tok(MERGED_1.as_bytes())));
}

// ------------------------------------------------------------------------- races

const ENCODINGS: [Encoding; 2] = [Encoding::Tether, Encoding::Dop];

fn failed(reason: FailReason) -> Bytes {
    framed(&Message::ConnFailed { reason })
}

/// Runs the client's wait after a lost transport (its `Lost` event is checked and taken);
/// returns the time at which the new transport `link` is open.
fn client_reopens(c: &mut MergeClient, at: Instant, link: u64) -> Instant {
    let before = drain(c);
    assert!(
        before
            .events
            .iter()
            .all(|e| *e == MergeClientEvent::Down { session: () }),
        "{:?}",
        before.events
    );
    let deadline = c.poll_timeout().unwrap();
    assert!(deadline >= at);
    c.handle_input(deadline, Input::Timeout).unwrap();
    let out = drain(c);
    assert_eq!(
        out.opens.len(),
        1,
        "the client asks for a new transport after its wait"
    );
    c.handle_input(deadline, Input::Opened(Link::main(link)))
        .unwrap();
    deadline
}

#[test]
fn server_notices_the_old_transport_closing_after_the_client_reconnected() {
    for enc in ENCODINGS {
        let (mut c, mut s, session) = connected(
            enc,
            vec![doc_tok(enc, b'A'), doc_tok(enc, b'C'), doc_tok(enc, b'D')],
        );
        // Only the client sees the drop.
        c.handle_input(ms(5), Input::Closed(Link::main(1))).unwrap();
        c.handle_input(
            ms(6),
            Input::Command(MergeClientCommand::Send(Message::App(Bytes::from_static(
                b"queued-1",
            )))),
        )
        .unwrap();
        c.handle_input(
            ms(6),
            Input::Command(MergeClientCommand::Send(Message::App(Bytes::from_static(
                b"queued-2",
            )))),
        )
        .unwrap();
        let t = client_reopens(&mut c, ms(5), 2);
        s.handle_input(t, Input::Opened(Link::main(2))).unwrap();
        let (ce, se) = shuttle(t, &mut c, &mut s);
        // The session is still CONNECTED on socket 1 (half-open): the valid resumption
        // takes over, socket 1 is closed and counted, and the session resumes on 2.
        assert_eq!(s.session(session).unwrap().link, Some(Link::main(2)));
        assert_eq!(s.takeovers(), 1);
        assert_eq!(
            ce,
            vec![MergeClientEvent::Up {
                session: (),
                outcome: Outcome::Resumed
            }],
            "{enc:?}"
        );
        assert_eq!(
            se[..2],
            [
                MergeServerEvent::Down { session },
                MergeServerEvent::Up {
                    session,
                    outcome: Outcome::Resumed
                }
            ]
        );
        // The queue was flushed, in order, to the resumed session.
        let msgs: Vec<_> = se
            .iter()
            .filter_map(|e| match e {
                MergeServerEvent::Message {
                    message: Message::App(b),
                    ..
                } => Some(b.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            msgs,
            vec![
                Bytes::from_static(b"queued-1"),
                Bytes::from_static(b"queued-2")
            ]
        );
        // The old socket's close, when the server finally notices it, changes nothing.
        s.handle_input(t, Input::Closed(Link::main(1))).unwrap();
        assert_eq!(s.session(session).unwrap().status, Status::Connected);
        assert_eq!(c.view().merged, s.session(session).unwrap().merged);
        assert_eq!(s.session_count(), 1);
    }
}

#[test]
fn two_reconnections_at_once_the_last_takes_over() {
    let enc = Encoding::Tether;
    let (c, mut s, session) = connected(
        enc,
        vec![doc_tok(enc, b'A'), doc_tok(enc, b'C'), doc_tok(enc, b'D')],
    );
    // What the client's RESUME presents: the secret the server offered at connect.
    let ab = c.snapshot(ms(5)).unwrap().secret;
    s.handle_input(ms(5), Input::Closed(Link::main(1))).unwrap();
    s.handle_input(ms(6), Input::Opened(Link::main(2))).unwrap();
    s.handle_input(ms(6), Input::Opened(Link::main(3))).unwrap();
    drain(&mut s);
    s.handle_input(
        ms(7),
        Input::Received(Link::main(3), resume_bytes(enc, &ab)),
    )
    .unwrap();
    s.handle_input(
        ms(7),
        Input::Received(Link::main(2), resume_bytes(enc, &ab)),
    )
    .unwrap();
    let out = drain(&mut s);
    // Both prove the session; the later one takes over from the earlier (the client
    // holds one transport at a time, so the later is the one it uses).
    let mut want = resumed_bytes(enc, 3, &ab, 0);
    want.extend(resumed_bytes(enc, 2, &ab, 0));
    assert_eq!(no_secrets(out.transmits), want);
    assert_eq!(out.closes, vec![Link::main(3)]);
    assert_eq!(
        out.events,
        vec![
            MergeServerEvent::Up {
                session,
                outcome: Outcome::Resumed
            },
            MergeServerEvent::Down { session },
            MergeServerEvent::Up {
                session,
                outcome: Outcome::Resumed
            },
        ]
    );
    assert_eq!(s.session(session).unwrap().link, Some(Link::main(2)));
    assert_eq!(
        (s.pending_count(), s.session_count(), s.takeovers()),
        (0, 1, 1)
    );
}

#[test]
fn bytes_on_the_old_transport_after_adoption_are_dropped() {
    let enc = Encoding::Tether;
    let (mut c, mut s, session) = connected(enc, vec![doc_tok(enc, b'A'), doc_tok(enc, b'C')]);
    c.handle_input(ms(5), Input::Closed(Link::main(1))).unwrap();
    s.handle_input(ms(5), Input::Closed(Link::main(1))).unwrap();
    let t = client_reopens(&mut c, ms(5), 2);
    s.handle_input(t, Input::Opened(Link::main(2))).unwrap();
    shuttle(t, &mut c, &mut s);
    assert_eq!(s.session(session).unwrap().link, Some(Link::main(2)));
    // Late bytes on socket 1, both ways: valid frames, garbage, a disconnection even.
    let ab = merged_of(enc, b'A', b'B');
    for bytes in [
        app_bytes(enc, b"late"),
        Bytes::from_static(b"\xff\xff"),
        disconnect_bytes(enc, &ab),
    ] {
        s.handle_input(t, Input::Received(Link::main(1), bytes.clone()))
            .unwrap();
        c.handle_input(t, Input::Received(Link::main(1), bytes))
            .unwrap();
    }
    s.handle_input(t, Input::Closed(Link::main(1))).unwrap();
    c.handle_input(t, Input::Closed(Link::main(1))).unwrap();
    let (so, co) = (drain(&mut s), drain(&mut c));
    assert!(
        so.events.is_empty() && so.transmits.is_empty() && so.closes.is_empty(),
        "{so:?}"
    );
    assert!(
        co.events.is_empty() && co.transmits.is_empty() && co.closes.is_empty(),
        "{co:?}"
    );
    assert_eq!(s.stale_inputs(), 4);
    assert_eq!(c.stale_inputs(), 4);
    assert_eq!(s.session(session).unwrap().status, Status::Connected);
    assert_eq!(c.view().status, Status::Connected);
}

#[test]
fn a_wrong_token_or_garbage_closes_that_transport_only() {
    for enc in ENCODINGS {
        let (mut c, mut s, session) = connected(
            enc,
            vec![
                doc_tok(enc, b'A'),
                doc_tok(enc, b'C'),
                doc_tok(enc, b'D'),
                doc_tok(enc, b'E'),
            ],
        );
        let before = s.session(session).unwrap();
        // Link 2: a token, then a different one as its "confirmation".
        s.handle_input(ms(5), Input::Opened(Link::main(2))).unwrap();
        s.handle_input(
            ms(5),
            Input::Received(Link::main(2), token_bytes(enc, &doc_tok(enc, b'X'))),
        )
        .unwrap();
        s.handle_input(
            ms(5),
            Input::Received(Link::main(2), token_bytes(enc, &doc_tok(enc, b'Y'))),
        )
        .unwrap();
        // Link 3: garbage.
        s.handle_input(ms(5), Input::Opened(Link::main(3))).unwrap();
        s.handle_input(
            ms(5),
            Input::Received(Link::main(3), Bytes::from_static(b"\0\0\0\x02\xee\xee")),
        )
        .unwrap();
        // Link 4: a resumption with a token nobody knows (dop) / a bad frame (tether).
        s.handle_input(ms(5), Input::Opened(Link::main(4))).unwrap();
        s.handle_input(
            ms(5),
            Input::Received(Link::main(4), Bytes::from_static(b"not a token!")),
        )
        .unwrap();
        let out = drain(&mut s);
        let refused: Vec<_> = out
            .events
            .iter()
            .filter_map(|e| match e {
                MergeServerEvent::Notice(MergeServerNotice::Refused { link, reason }) => {
                    Some((link.id, *reason))
                }
                _ => None,
            })
            .collect();
        assert_eq!(refused.len(), 3, "{enc:?}: {:?}", out.events);
        assert_eq!(refused[0], (2, FailReason::WrongToken));
        assert_eq!(
            out.closes,
            vec![Link::main(2), Link::main(3), Link::main(4)]
        );
        if enc == Encoding::Tether {
            assert!(out
                .transmits
                .contains(&tx(2, failed(FailReason::WrongToken))));
            assert!(out
                .transmits
                .contains(&tx(3, failed(FailReason::Malformed))));
        }
        assert_eq!(
            s.session(session).unwrap(),
            before,
            "the other session is untouched"
        );
        assert_eq!(s.pending_count(), 0);
        // And it still works.
        c.handle_input(
            ms(6),
            Input::Command(MergeClientCommand::Send(Message::App(Bytes::from_static(
                b"still here",
            )))),
        )
        .unwrap();
        let (_, se) = shuttle(ms(6), &mut c, &mut s);
        assert_eq!(
            se,
            vec![MergeServerEvent::Message {
                session,
                message: Message::App(Bytes::from_static(b"still here"))
            }]
        );
    }
}

#[test]
fn a_token_replayed_after_formal_disconnection_resumes_nothing() {
    let enc = Encoding::Tether;
    let ab = merged_of(enc, b'A', b'B');
    let (mut c, mut s, session) = connected(
        enc,
        vec![
            doc_tok(enc, b'A'),
            doc_tok(enc, b'C'),
            doc_tok(enc, b'D'),
            doc_tok(enc, b'E'),
        ],
    );
    s.handle_input(
        ms(5),
        Input::Command(MergeServerCommand::Disconnect { session }),
    )
    .unwrap();
    let (ce, se) = shuttle(ms(5), &mut c, &mut s);
    assert_eq!(
        ce,
        vec![MergeClientEvent::Ended {
            session: (),
            reason: EndReason::PeerDisconnect,
            undelivered: vec![]
        }]
    );
    assert_eq!(
        se,
        vec![MergeServerEvent::Ended {
            session,
            reason: EndReason::LocalDisconnect,
            undelivered: vec![],
        }]
    );
    assert_eq!(c.view().status, Status::Disconnected);
    // Sticky: the client refuses everything after.
    assert_eq!(
        c.handle_input(
            ms(6),
            Input::Command(MergeClientCommand::Send(Message::App(Bytes::new())))
        ),
        Err(MergeError::Ended(EndReason::PeerDisconnect))
    );
    // A replay of the merged token (by anyone) is refused...
    s.handle_input(ms(7), Input::Opened(Link::main(2))).unwrap();
    s.handle_input(
        ms(7),
        Input::Received(Link::main(2), resume_bytes(enc, &ab)),
    )
    .unwrap();
    let out = drain(&mut s);
    assert_eq!(
        out.transmits,
        vec![
            tx(2, token_bytes(enc, &doc_tok(enc, b'C'))),
            tx(2, failed(FailReason::SessionEnded))
        ]
    );
    assert_eq!(out.closes, vec![Link::main(2)]);
    // ...and a client that hears SESSION_ENDED stops for good.
    let mut c2 = MergeClient::new(ms(7), client_cfg(enc), doc_tok(enc, b'Q')).unwrap();
    drain(&mut c2);
    c2.handle_input(ms(7), Input::Opened(Link::main(9)))
        .unwrap();
    c2.handle_input(
        ms(7),
        Input::Received(Link::main(9), failed(FailReason::SessionEnded)),
    )
    .unwrap();
    assert_eq!(c2.view().status, Status::Disconnected);
    // Even once the server no longer remembers the token, it can only start a fresh session.
    let later = ms(7) + MergeServerConfig::default().ended_memory;
    s.handle_input(later, Input::Timeout).unwrap();
    assert_eq!(s.ended_count(), 0);
    s.handle_input(later, Input::Opened(Link::main(3))).unwrap();
    s.handle_input(
        later,
        Input::Received(Link::main(3), resume_bytes(enc, &ab)),
    )
    .unwrap();
    s.handle_input(later, Input::Received(Link::main(3), token_bytes(enc, &ab)))
        .unwrap();
    let ev = drain(&mut s).events;
    assert!(
        matches!(ev[..], [MergeServerEvent::Up { outcome: Outcome::Fresh, session: new }] if new != session),
        "{ev:?}"
    );
}

#[test]
fn a_reconnecting_session_expires_and_the_client_starts_fresh() {
    for enc in ENCODINGS {
        let (mut c, mut s, session) = connected(enc, vec![doc_tok(enc, b'A'), doc_tok(enc, b'C')]);
        let grace = MergeServerConfig::default().resume_grace;
        s.handle_input(ms(5), Input::Closed(Link::main(1))).unwrap();
        assert_eq!(
            drain(&mut s).events,
            vec![MergeServerEvent::Down { session }]
        );
        assert_eq!(s.poll_timeout(), Some(ms(5) + grace));
        s.handle_input(ms(5) + grace, Input::Timeout).unwrap();
        assert_eq!(
            drain(&mut s).events,
            vec![MergeServerEvent::Ended {
                session,
                reason: EndReason::Expired,
                undelivered: vec![],
            }]
        );
        assert_eq!(s.session_count(), 0);
        // The client, back only now, gets a fresh session made from its old merged token.
        let t = ms(5) + grace;
        c.handle_input(t, Input::Closed(Link::main(1))).unwrap();
        let t = client_reopens(&mut c, t, 2);
        s.handle_input(t, Input::Opened(Link::main(2))).unwrap();
        let (ce, se) = shuttle(t, &mut c, &mut s);
        // The old session ended where the server forgot it; a fresh one replaces it.
        assert_eq!(
            ce,
            vec![
                MergeClientEvent::Ended {
                    session: (),
                    reason: EndReason::Expired,
                    undelivered: vec![],
                },
                MergeClientEvent::Up {
                    session: (),
                    outcome: Outcome::Fresh
                }
            ],
            "{enc:?}"
        );
        let Some(MergeServerEvent::Up {
            session: new,
            outcome: Outcome::Fresh,
        }) = se.first().cloned()
        else {
            panic!("{se:?}")
        };
        assert_ne!(new, session, "never the expired session");
        assert_eq!(s.session(new).unwrap().merged, c.view().merged);
        assert_ne!(c.view().merged, Some(merged_of(enc, b'A', b'B')));
    }
}

#[test]
fn a_forgotten_session_becomes_a_fresh_one() {
    for enc in ENCODINGS {
        let (mut c, _s, _) = connected(enc, vec![doc_tok(enc, b'A')]);
        // What its RESUME presents (tether: the secret offered at connect; dop: the merged
        // token).
        let old = c.snapshot(ms(5)).unwrap().secret;
        // A new server (restarted): it never knew the session.
        let mut s = MergeServer::new(server_cfg(enc), tokens(vec![doc_tok(enc, b'C')]));
        c.handle_input(ms(5), Input::Closed(Link::main(1))).unwrap();
        let t = client_reopens(&mut c, ms(5), 2);
        s.handle_input(t, Input::Opened(Link::main(2))).unwrap();
        let (ce, se) = shuttle(t, &mut c, &mut s);
        // The old session ended where the server forgot it; a fresh one replaces it.
        assert_eq!(
            ce,
            vec![
                MergeClientEvent::Ended {
                    session: (),
                    reason: EndReason::Expired,
                    undelivered: vec![],
                },
                MergeClientEvent::Up {
                    session: (),
                    outcome: Outcome::Fresh
                }
            ],
            "{enc:?}"
        );
        let Some(MergeServerEvent::Up {
            session,
            outcome: Outcome::Fresh,
        }) = se.first().cloned()
        else {
            panic!("{se:?}")
        };
        let v = s.session(session).unwrap();
        assert_eq!(v.merged, Some(old.merge(&doc_tok(enc, b'C'))));
        assert_eq!(c.view().merged, v.merged);
        assert_eq!(
            c.view().local,
            old,
            "what RESUME presented acts as the client's local token"
        );
    }
}

#[test]
fn the_client_backs_off_then_gives_up() {
    let cfg = MergeClientConfig {
        give_up_after: Duration::from_secs(10),
        ..client_cfg(Encoding::Tether)
    };
    let mut c = MergeClient::new(ms(0), cfg, doc_tok(Encoding::Tether, b'B')).unwrap();
    drain(&mut c);
    let mut t = ms(0);
    let mut link = 1;
    let mut waits = vec![];
    loop {
        c.handle_input(t, Input::Opened(Link::main(link))).unwrap();
        c.handle_input(t, Input::Closed(Link::main(link))).unwrap();
        drain(&mut c);
        let Some(next) = c.poll_timeout() else { break };
        waits.push((next - t).as_millis());
        t = next;
        c.handle_input(t, Input::Timeout).unwrap();
        let out = drain(&mut c);
        if out.events.contains(&MergeClientEvent::Ended {
            session: (),
            reason: EndReason::GaveUp,
            undelivered: vec![],
        }) {
            break;
        }
        link += 1;
    }
    assert_eq!(
        waits,
        vec![1_000, 2_000, 4_000, 3_000],
        "1 s, doubling, until the 10 s limit"
    );
    assert_eq!(c.view().status, Status::Disconnected);
    assert_eq!(
        c.handle_input(t, Input::Opened(Link::main(99))),
        Err(MergeError::Ended(EndReason::GaveUp))
    );
}

#[test]
fn handshakes_that_never_complete_time_out() {
    let enc = Encoding::Tether;
    let mut s = MergeServer::new(server_cfg(enc), tokens(vec![doc_tok(enc, b'A')]));
    s.handle_input(ms(0), Input::Opened(Link::main(1))).unwrap();
    assert_eq!(
        s.poll_timeout(),
        Some(ms(0)),
        "output queued: the deadline is now"
    );
    drain(&mut s);
    let hs = MergeServerConfig::default().handshake_timeout;
    assert_eq!(s.poll_timeout(), Some(ms(0) + hs));
    s.handle_input(ms(0) + hs, Input::Timeout).unwrap();
    let out = drain(&mut s);
    assert_eq!(out.transmits, vec![tx(1, failed(FailReason::Timeout))]);
    assert_eq!(out.closes, vec![Link::main(1)]);
    assert_eq!(s.pending_count(), 0);
    // The client: a transport that opens but never answers is dropped and retried.
    let mut c = MergeClient::new(ms(0), client_cfg(enc), doc_tok(enc, b'B')).unwrap();
    drain(&mut c);
    c.handle_input(ms(0), Input::Opened(Link::main(1))).unwrap();
    drain(&mut c);
    let hs = MergeClientConfig::default().handshake_timeout;
    assert_eq!(c.poll_timeout(), Some(ms(0) + hs));
    c.handle_input(ms(0) + hs, Input::Timeout).unwrap();
    let out = drain(&mut c);
    assert_eq!(out.transmits, vec![tx(1, failed(FailReason::Timeout))]);
    assert_eq!(out.closes, vec![Link::main(1)]);
    assert_eq!(c.view().status, Status::Open);
    assert_eq!(c.poll_timeout(), Some(ms(0) + hs + Duration::from_secs(1)));
}

#[test]
fn queue_is_bounded_and_flushed_in_order() {
    let enc = Encoding::Tether;
    let cfg = MergeClientConfig {
        max_queue: 2,
        ..client_cfg(enc)
    };
    let mut c = MergeClient::new(ms(0), cfg, doc_tok(enc, b'B')).unwrap();
    let mut s = MergeServer::new(server_cfg(enc), tokens(vec![doc_tok(enc, b'A')]));
    drain(&mut c);
    let send = |b: &'static [u8]| {
        Input::Command(MergeClientCommand::Send(Message::App(Bytes::from_static(
            b,
        ))))
    };
    c.handle_input(ms(0), send(b"one")).unwrap();
    c.handle_input(ms(0), send(b"two")).unwrap();
    assert_eq!(
        c.handle_input(ms(0), send(b"three")),
        Err(MergeError::QueueFull { max: 2 })
    );
    assert_eq!(c.queued(), 2);
    c.handle_input(ms(0), Input::Opened(Link::main(1))).unwrap();
    s.handle_input(ms(0), Input::Opened(Link::main(1))).unwrap();
    let (_, se) = shuttle(ms(0), &mut c, &mut s);
    let session = SessionId(1);
    assert_eq!(
        se,
        vec![
            MergeServerEvent::Up {
                session,
                outcome: Outcome::Fresh
            },
            MergeServerEvent::Message {
                session,
                message: Message::App(Bytes::from_static(b"one"))
            },
            MergeServerEvent::Message {
                session,
                message: Message::App(Bytes::from_static(b"two"))
            },
        ]
    );
    // The server's queue for a reconnecting session is bounded too.
    let mut s2 = MergeServer::new(
        MergeServerConfig {
            max_queue: 1,
            ..server_cfg(enc)
        },
        tokens(vec![]),
    );
    assert_eq!(
        s2.handle_input(
            ms(0),
            Input::Command(MergeServerCommand::Send {
                session,
                message: Message::Dummy
            })
        ),
        Err(MergeError::UnknownSession(session))
    );
    s.handle_input(ms(1), Input::Closed(Link::main(1))).unwrap();
    let cmd = || {
        Input::Command(MergeServerCommand::Send {
            session,
            message: Message::Dummy,
        })
    };
    let mut accepted = 0;
    while s.handle_input(ms(1), cmd()).is_ok() {
        accepted += 1;
    }
    assert_eq!(accepted, MergeServerConfig::default().max_queue);
    assert_eq!(
        s.handle_input(ms(1), cmd()),
        Err(MergeError::QueueFull { max: 1024 })
    );
}

#[test]
fn registry_and_pending_handshakes_are_bounded() {
    let enc = Encoding::Tether;
    let cfg = MergeServerConfig {
        max_pending: 1,
        max_sessions: 1,
        ..server_cfg(enc)
    };
    let mut s = MergeServer::new(cfg, tokens(vec![doc_tok(enc, b'A'), doc_tok(enc, b'C')]));
    s.handle_input(ms(0), Input::Opened(Link::main(1))).unwrap();
    s.handle_input(ms(0), Input::Opened(Link::main(2))).unwrap();
    let out = drain(&mut s);
    assert_eq!(out.transmits[1..], [tx(2, failed(FailReason::ServerFull))]);
    assert_eq!(
        out.events,
        vec![MergeServerEvent::Notice(MergeServerNotice::Refused {
            link: Link::main(2),
            reason: FailReason::ServerFull
        })]
    );
    assert_eq!(
        s.handle_input(ms(0), Input::Opened(Link::main(1))),
        Err(MergeError::DuplicateLink(1))
    );
    let b = doc_tok(enc, b'B');
    s.handle_input(ms(0), Input::Received(Link::main(1), token_bytes(enc, &b)))
        .unwrap();
    s.handle_input(ms(0), Input::Received(Link::main(1), token_bytes(enc, &b)))
        .unwrap();
    assert_eq!(s.session_count(), 1);
    // Second client: the handshake is refused at its confirmation (no room for a session).
    s.handle_input(ms(0), Input::Opened(Link::main(3))).unwrap();
    let d = doc_tok(enc, b'D');
    s.handle_input(ms(0), Input::Received(Link::main(3), token_bytes(enc, &d)))
        .unwrap();
    s.handle_input(ms(0), Input::Received(Link::main(3), token_bytes(enc, &d)))
        .unwrap();
    let ev = drain(&mut s).events;
    assert!(
        ev.contains(&MergeServerEvent::Notice(MergeServerNotice::Refused {
            link: Link::main(3),
            reason: FailReason::ServerFull
        })),
        "{ev:?}"
    );
    assert_eq!(s.session_count(), 1);
}

#[test]
fn versions_and_short_tokens_are_refused_in_tether_encoding() {
    let enc = Encoding::Tether;
    assert!(matches!(
        MergeClient::new(ms(0), client_cfg(enc), tok(b"short")),
        Err(MergeError::BadLocalToken(_))
    ));
    let mut s = MergeServer::new(
        server_cfg(enc),
        tokens(vec![doc_tok(enc, b'A'), doc_tok(enc, b'C')]),
    );
    s.handle_input(ms(0), Input::Opened(Link::main(1))).unwrap();
    let v2 = framed(&Message::Token {
        version: PROTOCOL_VERSION + 1,
        token: doc_tok(enc, b'B'),
    });
    s.handle_input(ms(0), Input::Received(Link::main(1), v2))
        .unwrap();
    s.handle_input(ms(0), Input::Opened(Link::main(2))).unwrap();
    let short = framed(&Message::Token {
        version: PROTOCOL_VERSION,
        token: tok(b"BBBB"),
    });
    s.handle_input(ms(0), Input::Received(Link::main(2), short))
        .unwrap();
    let ev = drain(&mut s).events;
    assert_eq!(
        ev,
        vec![
            MergeServerEvent::Notice(MergeServerNotice::Refused {
                link: Link::main(1),
                reason: FailReason::UnsupportedVersion
            }),
            MergeServerEvent::Notice(MergeServerNotice::Refused {
                link: Link::main(2),
                reason: FailReason::InsecureToken
            }),
        ]
    );
    // Application messages can never be mistaken for control messages in tether's encoding.
    let mut c = MergeClient::new(ms(0), client_cfg(enc), doc_tok(enc, b'B')).unwrap();
    let reserved = Message::Disconnect {
        token: doc_tok(enc, b'B'),
    };
    assert_eq!(
        c.handle_input(ms(0), Input::Command(MergeClientCommand::Send(reserved))),
        Err(MergeError::Reserved)
    );
}

#[test]
fn dop_refuses_app_messages_it_would_misread() {
    let enc = Encoding::Dop;
    let (mut c, _s, _) = connected(enc, vec![doc_tok(enc, b'A')]);
    let merged = Bytes::copy_from_slice(merged_of(enc, b'A', b'B').as_bytes());
    assert_eq!(
        c.handle_input(
            ms(1),
            Input::Command(MergeClientCommand::Send(Message::App(merged)))
        ),
        Err(MergeError::AmbiguousDopMessage)
    );
    assert_eq!(
        c.handle_input(
            ms(1),
            Input::Command(MergeClientCommand::Send(Message::Dummy))
        ),
        Err(MergeError::NotDopText)
    );
}

// ------------------------------------------------------------------- properties

proptest! {
    /// However the stream is cut into chunks, and wherever the transport drops, the two
    /// sides end connected on the same merged token, with every message sent after the
    /// last connection delivered once, in order.
    #[test]
    fn chunking_and_drops_never_split_the_session(
        cuts in proptest::collection::vec(1usize..7, 1..40),
        drops in proptest::collection::vec(0u8..4, 0..4),
    ) {
        let enc = Encoding::Tether;
        let server_tokens: Vec<Token> = (0..8u8).map(|i| doc_tok(enc, b'a' + i)).collect();
        let mut c = MergeClient::new(ms(0), client_cfg(enc), doc_tok(enc, b'B')).unwrap();
        let mut s = MergeServer::new(server_cfg(enc), tokens(server_tokens));
        let mut t = ms(0);
        let mut link = 1u64;
        let mut cut = cuts.iter().cycle();
        drain(&mut c);
        c.handle_input(t, Input::Opened(Link::main(link))).unwrap();
        s.handle_input(t, Input::Opened(Link::main(link))).unwrap();
        let mut drops = drops.into_iter();
        let mut rounds = 0;
        loop {
            rounds += 1;
            prop_assert!(rounds < 200);
            let co = drain(&mut c);
            let so = drain(&mut s);
            let quiet = co.transmits.is_empty() && so.transmits.is_empty();
            for tr in co.transmits {
                let mut p = tr.payload.clone();
                while !p.is_empty() {
                    let n = (*cut.next().unwrap()).min(p.len());
                    let _ = s.handle_input(t, Input::Received(tr.link, p.split_to(n)));
                }
            }
            for tr in so.transmits {
                let _ = c.handle_input(t, Input::Received(tr.link, tr.payload));
            }
            if let Some(when) = drops.next() {
                if when == 0 && c.view().link.is_some() {
                    // Drop the transport on both sides, then let the client reconnect.
                    let l = Link::main(link);
                    let _ = c.handle_input(t, Input::Closed(l));
                    let _ = s.handle_input(t, Input::Closed(l));
                    drain(&mut c);
                    t = c.poll_timeout().unwrap();
                    c.handle_input(t, Input::Timeout).unwrap();
                    prop_assert_eq!(drain(&mut c).opens.len(), 1);
                    link += 1;
                    c.handle_input(t, Input::Opened(Link::main(link))).unwrap();
                    s.handle_input(t, Input::Opened(Link::main(link))).unwrap();
                }
                continue;
            }
            if quiet {
                break;
            }
        }
        prop_assert_eq!(c.view().status, Status::Connected);
        let id = s.session_of(link).unwrap();
        prop_assert_eq!(s.session(id).unwrap().merged, c.view().merged);
        prop_assert_eq!(s.session_count(), 1);
        for i in 0..5u8 {
            c.handle_input(t, Input::Command(MergeClientCommand::Send(Message::App(Bytes::from(vec![i]))))).unwrap();
        }
        let (_, se) = shuttle(t, &mut c, &mut s);
        let got: Vec<u8> = se.iter().filter_map(|e| match e {
            MergeServerEvent::Message { message: Message::App(b), .. } => b.first().copied(),
            _ => None,
        }).collect();
        prop_assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    /// Garbage of any kind on any transport never panics and never grows the registry.
    #[test]
    fn garbage_never_panics_the_server(
        chunks in proptest::collection::vec((0u64..4, proptest::collection::vec(any::<u8>(), 0..40)), 0..30),
        dop in any::<bool>(),
    ) {
        let enc = if dop { Encoding::Dop } else { Encoding::Tether };
        let cfg = MergeServerConfig { max_pending: 2, max_sessions: 2, ..server_cfg(enc) };
        let mut n = 0u8;
        let mut s = MergeServer::new(cfg, move || { n = n.wrapping_add(1); doc_tok(enc, b'a' + n % 26) });
        for (l, bytes) in chunks {
            let _ = s.handle_input(ms(0), Input::Opened(Link::main(l)));
            let _ = s.handle_input(ms(0), Input::Received(Link::main(l), Bytes::from(bytes)));
            drain(&mut s);
            prop_assert!(s.pending_count() <= 2 && s.session_count() <= 2);
        }
    }
}
