//! Seed 003 (R-Type connection), replayed step by step on the dual-channel machines: both
//! diagrams, every paragraph of the reconnection sections, then every handshake message
//! lost, duplicated and delayed in turn.
//!
//! The harness is the testkit's `Pair`, held: a tiny deterministic network where the test
//! decides when each packet is delivered, dropped, duplicated or held back, and time moves
//! only when the test says so.
#![cfg(feature = "testkit")]

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use tether::connect::dual::{
    feed::FeedSender, AttemptFailure, DualClient, DualClientCommand, DualClientConfig,
    DualClientEvent, DualClientNotice, DualClientState, DualError, DualServer, DualServerCommand,
    DualServerConfig, DualServerEvent, DualServerNotice, EndReason, FeedLossPolicy, Outcome,
    PlayerState, Retry, TokenSource, CLIENT_TRANSITIONS,
};
use tether::testkit::{Closes, CountingTokens, Packet, Pair, Side};
use tether::wire::{
    Element, FailReason, FeedKey, FrameDecoder, Message, FEED_HEADER_LEN, PROTOCOL_VERSION,
    SERVER_SENDER,
};
use tether::{Channel, Duration, Input, Instant, Link, Machine, Token};

/// The client and the server on the testkit's [`Pair`]: transmits wait on the wire until
/// the test delivers them, the client's opens are granted (link ids 1, 2, 3...), a close
/// reaches the peer after what was sent before it, the client's errors fail the test. The
/// server's tokens are 1, 2, 3..., each 16 bytes of the same value: predictable on purpose.
type Net = Pair<DualClient, DualServer<CountingTokens>>;

fn new_net(ccfg: DualClientConfig, scfg: DualServerConfig) -> Net {
    Pair::new(
        DualClient::new(ccfg),
        DualServer::new(scfg, CountingTokens::new()),
    )
    .held()
    .granting_opens()
    .with_closes(Closes::Forward)
    .strict(Side::Client)
}

fn default_net() -> Net {
    new_net(DualClientConfig::default(), DualServerConfig::default())
}

/// The message inside a packet (a `main` frame or a `feed` datagram's content).
trait Carrying {
    fn message(&self) -> Option<Message>;
}

impl Carrying for Packet {
    fn message(&self) -> Option<Message> {
        let Packet::Data { link, bytes, .. } = self else {
            return None;
        };
        match link.channel {
            Channel::Main => {
                let mut d = FrameDecoder::new(1 << 20);
                d.push(bytes);
                Message::decode(d.next_frame().ok()??).ok()
            }
            Channel::Feed => Message::decode(bytes.get(FEED_HEADER_LEN..)?.to_vec().into()).ok(),
        }
    }
}

/// What these tests do on top of the pair: take packets off the wire checking what they
/// carry, the handshake, the events seen.
trait Steps {
    fn take(&mut self, to: Side, expect: fn(&Message) -> bool) -> Packet;
    fn step(&mut self, to: Side, expect: fn(&Message) -> bool) -> Message;
    fn connect(&mut self);
    fn handshake(&mut self) -> u16;
    fn client_has(&self, f: impl Fn(&DualClientEvent) -> bool) -> bool;
    fn server_has(&self, f: impl Fn(&DualServerEvent) -> bool) -> bool;
    fn forge_to_client(&mut self, link: Link, seq: u64, sender: u16, msg: &Message);
    fn feed_key(&self) -> FeedKey;
}

impl Steps for Net {
    /// Takes the next packet off the wire, checking what it carries.
    fn take(&mut self, to: Side, expect: fn(&Message) -> bool) -> Packet {
        let p = self.wire.pop_front().expect("a packet on the wire");
        let msg = p.message();
        assert!(
            matches!(&p, Packet::Data { to: t, .. } if *t == to)
                && msg.as_ref().is_some_and(expect),
            "unexpected packet {p:?} carrying {msg:?}"
        );
        p
    }

    /// Delivers the next packet, checking what it carries.
    fn step(&mut self, to: Side, expect: fn(&Message) -> bool) -> Message {
        let p = self.take(to, expect);
        let m = p.message().unwrap();
        self.deliver(p);
        m
    }

    fn connect(&mut self) {
        self.client_in(Input::Command(DualClientCommand::Connect));
    }

    /// The first diagram, straight through.
    fn handshake(&mut self) -> u16 {
        self.connect();
        self.run_for(Duration::from_millis(1));
        assert_eq!(self.client.state(), DualClientState::Connected);
        self.client.player().unwrap()
    }

    fn client_has(&self, f: impl Fn(&DualClientEvent) -> bool) -> bool {
        self.client_events.iter().any(f)
    }
    fn server_has(&self, f: impl Fn(&DualServerEvent) -> bool) -> bool {
        self.server_events.iter().any(f)
    }

    /// Sends a datagram as the server would (tagged with the session's feed key), on a
    /// feed link, straight to the client.
    fn forge_to_client(&mut self, link: Link, seq: u64, sender: u16, msg: &Message) {
        let mut tx = FeedSender::resume_at(sender, seq, self.feed_key());
        let mut buf = BytesMut::new();
        tx.encode(msg, &mut buf, 500).unwrap();
        self.client_in(Input::Received(link, buf.freeze()));
    }

    /// The feed key of the client's session (the test reads the server's secret: a
    /// stand-in for either end of `main`, never for an attacker).
    fn feed_key(&self) -> FeedKey {
        let player = self.client.player().unwrap();
        FeedKey::derive(&self.server.player_secret(player).unwrap(), player)
    }
}

fn fresh(e: &DualClientEvent) -> bool {
    matches!(
        e,
        DualClientEvent::Up {
            outcome: Outcome::Fresh,
            ..
        }
    )
}

fn is_conn_init(m: &Message) -> bool {
    matches!(m, Message::ConnInit { version } if *version == PROTOCOL_VERSION)
}
fn is_conn_init_rep(m: &Message) -> bool {
    matches!(m, Message::ConnInitRep { .. })
}
fn is_feed_init(m: &Message) -> bool {
    matches!(m, Message::FeedInit { .. })
}
fn is_feed_init_rep(m: &Message) -> bool {
    matches!(m, Message::FeedInitRep { .. })
}
fn is_final_auth(m: &Message) -> bool {
    matches!(m, Message::FinalAuth { .. })
}
fn is_conn_ok(m: &Message) -> bool {
    matches!(m, Message::ConnOk)
}
fn is_conn_failed(m: &Message) -> bool {
    matches!(m, Message::ConnFailed { .. })
}
fn is_connection(m: &Message) -> bool {
    matches!(m, Message::Connection { .. })
}

// ---------------------------------------------------------------------------------------
// Initial connection: the first diagram, step by step.

#[test]
fn diagram_1_initial_connection_step_by_step() {
    let mut net = default_net();
    net.connect();
    // "First the client sends a CONN_INIT signal marker through the main channel."
    assert_eq!(net.client.state(), DualClientState::AwaitConnInitRep);
    net.step(Side::Server, is_conn_init);
    assert_eq!(net.server.player_state(0), Some(PlayerState::AwaitFeedInit));
    // "The server replies a conn init reply": a player id and token A.
    let rep = net.step(Side::Client, is_conn_init_rep);
    let Message::ConnInitRep {
        player, token_a, ..
    } = rep
    else {
        unreachable!()
    };
    assert_eq!(player, 0);
    assert!(token_a.is_secure());
    // "the client then sends a feed init request through the feed channel" with the id.
    assert_eq!(net.client.state(), DualClientState::AwaitFeedInitRep);
    let fi = net.step(Side::Server, is_feed_init);
    assert_eq!(
        fi,
        Message::FeedInit {
            player: 0,
            attempt: 1,
            token_a
        }
    );
    assert_eq!(
        net.server.player_state(0),
        Some(PlayerState::AwaitFinalAuth)
    );
    assert!(
        net.server.player_links(0).unwrap().1.is_some(),
        "feed bound"
    );
    // "The server replies a feed init reply": token B.
    let Message::FeedInitRep { attempt, token_b } = net.step(Side::Client, is_feed_init_rep) else {
        unreachable!()
    };
    assert_eq!(attempt, 1);
    assert_ne!(token_b, token_a);
    // "The client should then send a final auth request through the main channel, with
    // the token provided by the feed init reply."
    assert_eq!(net.client.state(), DualClientState::AwaitConnOk);
    assert_eq!(
        net.step(Side::Server, is_final_auth),
        Message::FinalAuth { player: 0, token_b }
    );
    // "The server replies either CONN_OK or CONN_FAILED."
    net.step(Side::Client, is_conn_ok);
    assert_eq!(net.client.state(), DualClientState::Connected);
    assert_eq!(net.server.player_state(0), Some(PlayerState::Connected));
    assert_eq!(
        net.client_events,
        vec![DualClientEvent::Up {
            session: (),
            outcome: Outcome::Fresh
        }]
    );
    assert_eq!(
        net.server_events,
        vec![DualServerEvent::Up {
            session: 0,
            outcome: Outcome::Fresh
        }]
    );
    assert!(net.wire.is_empty());
}

#[test]
fn conn_failed_on_conn_init_closes_and_the_client_retries_then_gives_up() {
    // A server with no room at all refuses every CONN_INIT.
    let scfg = DualServerConfig {
        max_players: 0,
        ..DualServerConfig::default()
    };
    let mut net = new_net(DualClientConfig::default(), scfg);
    net.connect();
    net.step(Side::Server, is_conn_init);
    net.step(Side::Client, |m| {
        *m == Message::ConnFailed {
            reason: FailReason::ServerFull,
        }
    });
    assert_eq!(net.client.state(), DualClientState::Backoff);
    assert!(net.client_has(|e| matches!(
        e,
        DualClientEvent::Notice(DualClientNotice::AttemptFailed {
            reason: AttemptFailure::Refused(FailReason::ServerFull),
            ..
        })
    )));
    // Retries as configured (3 tries in all), then gives up.
    net.run_for(Duration::from_secs(60));
    assert_eq!(net.client.state(), DualClientState::Closed);
    let failures = net
        .client_events
        .iter()
        .filter(|e| {
            matches!(
                e,
                DualClientEvent::Notice(DualClientNotice::AttemptFailed { .. })
            )
        })
        .count();
    assert_eq!(failures, 2);
    assert!(matches!(
        net.client_events.last(),
        Some(DualClientEvent::Ended {
            reason: EndReason::Refused(FailReason::ServerFull),
            ..
        })
    ));
    assert_eq!(net.client.links(), (None, None));
}

#[test]
fn a_client_configured_not_to_retry_aborts_at_once() {
    let ccfg = DualClientConfig {
        connect: Retry {
            attempts: 1,
            ..DualClientConfig::default().connect
        },
        ..DualClientConfig::default()
    };
    let scfg = DualServerConfig {
        max_players: 0,
        ..DualServerConfig::default()
    };
    let mut net = new_net(ccfg, scfg);
    net.connect();
    net.run_for(Duration::from_millis(1));
    assert_eq!(net.client.state(), DualClientState::Closed);
    assert!(!net.client_has(|e| matches!(
        e,
        DualClientEvent::Notice(DualClientNotice::AttemptFailed { .. })
    )));
}

#[test]
fn conn_failed_on_feed_init_closes_the_connection() {
    let mut net = default_net();
    net.connect();
    net.step(Side::Server, is_conn_init);
    net.step(Side::Client, is_conn_init_rep);
    // A forger sends a feed init for player 0 with a wrong token A (and no key for the
    // tag). The server answers an unauthenticated CONN_FAILED on that feed link and keeps
    // the player's handshake: a forger must not be able to end someone else's.
    let real = net.take(Side::Server, is_feed_init);
    let mut tx = FeedSender::pending(0);
    let mut buf = BytesMut::new();
    let forged = Message::FeedInit {
        player: 0,
        attempt: 1,
        token_a: Token::new(&[0xaa; 16]).unwrap(),
    };
    tx.encode_unauthenticated(&forged, &mut buf, 500).unwrap();
    net.server_in(Input::Received(real.link(), buf.split().freeze()));
    assert_eq!(net.server.player_state(0), Some(PlayerState::AwaitFeedInit));
    // That refusal proves nothing (its tag is zeros): the client does not act on it.
    net.step(Side::Client, |m| {
        *m == Message::ConnFailed {
            reason: FailReason::WrongToken,
        }
    });
    assert_eq!(net.client.state(), DualClientState::AwaitFeedInitRep);
    assert_eq!(net.client.feed_stats().forged, 1);
    // "If the server replies CONN_FAILED": a refusal of the client's own feed init, as the
    // server sends it on `feed` (tagged, naming the attempt).
    let key = net.feed_key();
    let mut srv = FeedSender::resume_at(SERVER_SENDER, 1_000, key);
    srv.encode(
        &Message::FeedFailed {
            reason: FailReason::WrongToken,
            attempt: 1,
        },
        &mut buf,
        500,
    )
    .unwrap();
    net.client_in(Input::Received(real.link(), buf.freeze()));
    // The client closes the connection and retries.
    assert_eq!(net.client.state(), DualClientState::Backoff);
    net.run_for(Duration::from_secs(10));
    assert_eq!(net.client.state(), DualClientState::Connected);
    assert_eq!(
        net.server.player_count(),
        1,
        "the first handshake was forgotten"
    );
    // The id was reused: player 0 left when its main closed.
    assert_eq!(net.client.player(), Some(0));
}

#[test]
fn conn_failed_on_final_auth() {
    let mut net = default_net();
    net.connect();
    net.step(Side::Server, is_conn_init);
    net.step(Side::Client, is_conn_init_rep);
    net.step(Side::Server, is_feed_init);
    net.step(Side::Client, is_feed_init_rep);
    let real = net.take(Side::Server, is_final_auth);
    let mut buf = BytesMut::new();
    Message::FinalAuth {
        player: 0,
        token_b: Token::new(&[0xbb; 16]).unwrap(),
    }
    .encode_framed(&mut buf);
    net.server_in(Input::Received(real.link(), buf.freeze()));
    assert_eq!(
        net.server.player_count(),
        0,
        "a wrong token B ends the handshake"
    );
    net.step(Side::Client, |m| {
        *m == Message::ConnFailed {
            reason: FailReason::WrongToken,
        }
    });
    assert_eq!(net.client.state(), DualClientState::Backoff);
}

// ---------------------------------------------------------------------------------------
// The second diagram: the feed init gets no reply and is sent again.

#[test]
fn diagram_2_feed_init_timeout_and_retry() {
    // The diagram's waits are the schedule's base values: no jitter here (the jitter is
    // checked in tests/session_core.rs).
    let mut net = new_net(
        DualClientConfig {
            jitter_percent: 0,
            ..DualClientConfig::default()
        },
        DualServerConfig::default(),
    );
    net.connect();
    net.step(Side::Server, is_conn_init);
    net.step(Side::Client, is_conn_init_rep);
    // "the server does not reply": the feed init is lost.
    let lost = net.take(Side::Server, is_feed_init);
    assert!(net.wire.is_empty());
    let first_wait = net.client.poll_timeout().unwrap();
    assert_eq!(first_wait, net.now + Duration::from_millis(250));
    net.advance(Duration::from_millis(250));
    // "the client should retry": attempt 2.
    let retry = net.take(Side::Server, is_feed_init);
    assert!(matches!(
        retry.message(),
        Some(Message::FeedInit { attempt: 2, .. })
    ));
    // Backoff: the next wait is twice as long.
    assert_eq!(
        net.client.poll_timeout().unwrap(),
        net.now + Duration::from_millis(500)
    );
    net.deliver(retry);
    net.step(Side::Client, |m| {
        matches!(m, Message::FeedInitRep { attempt: 2, .. })
    });
    net.step(Side::Server, is_final_auth);
    net.step(Side::Client, is_conn_ok);
    assert_eq!(net.client.state(), DualClientState::Connected);
    // The lost datagram turns up late: stale, dropped, nothing changes.
    net.deliver(lost);
    assert!(net.wire.is_empty());
    assert_eq!(net.server.feed_stats(0).unwrap().stale, 1);
}

#[test]
fn feed_init_retries_stop_at_the_limit() {
    let mut net = default_net();
    net.connect();
    net.step(Side::Server, is_conn_init);
    net.step(Side::Client, is_conn_init_rep);
    let mut sent = 0;
    for _ in 0..20 {
        while let Some(p) = net.wire.pop_front() {
            if p.message().as_ref().is_some_and(is_feed_init) {
                sent += 1; // lost
            }
        }
        if net.client.state() != DualClientState::AwaitFeedInitRep {
            break;
        }
        let t = net.client.poll_timeout().unwrap();
        net.advance(t.saturating_duration_since(net.now));
    }
    assert_eq!(sent, 6, "DualClientConfig::default().feed_init.attempts");
    assert_eq!(net.client.state(), DualClientState::Backoff);
    assert!(net.client_has(|e| matches!(
        e,
        DualClientEvent::Notice(DualClientNotice::AttemptFailed {
            reason: AttemptFailure::Timeout,
            ..
        })
    )));
}

#[test]
fn a_late_reply_is_never_taken_for_a_newer_attempt() {
    let mut net = default_net();
    net.connect();
    net.step(Side::Server, is_conn_init);
    net.step(Side::Client, is_conn_init_rep);
    net.step(Side::Server, is_feed_init);
    // Reply 1 is held back; the client retries (attempt 2).
    let late = net.take(Side::Client, is_feed_init_rep);
    net.advance(Duration::from_millis(250));
    net.step(Side::Server, |m| {
        matches!(m, Message::FeedInit { attempt: 2, .. })
    });
    let reply2 = net.take(Side::Client, |m| {
        matches!(m, Message::FeedInitRep { attempt: 2, .. })
    });
    // The late reply arrives first: it is newer on the wire but answers attempt 1.
    net.deliver(late);
    assert_eq!(net.client.state(), DualClientState::AwaitFeedInitRep);
    assert!(
        net.wire.is_empty(),
        "no final auth on a reply to an old attempt"
    );
    net.deliver(reply2);
    assert_eq!(net.client.state(), DualClientState::AwaitConnOk);
}

// ---------------------------------------------------------------------------------------
// The server side: ids, tokens, bindings, refusals.

#[test]
fn player_ids_are_bounded_and_reused() {
    let scfg = DualServerConfig {
        max_players: 2,
        ..DualServerConfig::default()
    };
    let mut a = new_net(DualClientConfig::default(), scfg);
    // Drive three handshakes on one server by hand.
    let mut ids = Vec::new();
    for link in 1..=3u64 {
        a.server_in(Input::Opened(Link::main(link)));
        let mut buf = BytesMut::new();
        Message::ConnInit {
            version: PROTOCOL_VERSION,
        }
        .encode_framed(&mut buf);
        a.server_in(Input::Received(Link::main(link), buf.freeze()));
        let p = a.wire.pop_back().unwrap();
        ids.push(p.message());
    }
    assert!(matches!(
        ids[0],
        Some(Message::ConnInitRep { player: 0, .. })
    ));
    assert!(matches!(
        ids[1],
        Some(Message::ConnInitRep { player: 1, .. })
    ));
    assert_eq!(a.wire.back().map(|p| p.link()), Some(Link::main(3)));
    assert!(matches!(
        ids[2],
        None | Some(Message::ConnFailed {
            reason: FailReason::ServerFull
        })
    ));
    assert_eq!(a.server.player_count(), 2);
    // Player 0's main closes during its handshake: its id is free again.
    a.server_in(Input::Closed(Link::main(1)));
    assert_eq!(a.server.player_count(), 1);
    a.server_in(Input::Opened(Link::main(4)));
    let mut buf = BytesMut::new();
    Message::ConnInit {
        version: PROTOCOL_VERSION,
    }
    .encode_framed(&mut buf);
    a.server_in(Input::Received(Link::main(4), buf.freeze()));
    assert!(matches!(
        a.wire.pop_back().unwrap().message(),
        Some(Message::ConnInitRep { player: 0, .. })
    ));
}

fn server_reply(net: &mut Net, link: Link, msg: Message) -> Option<Message> {
    let mut buf = BytesMut::new();
    msg.encode_framed(&mut buf);
    net.wire.clear();
    net.server_in(Input::Received(link, buf.freeze()));
    net.wire.iter().find_map(|p| p.message())
}

#[test]
fn the_server_refuses_what_makes_no_sense() {
    let mut net = default_net();
    let player = net.handshake();
    let m = |x| Link::main(x);
    let token = Token::new(&[9; 16]).unwrap();
    // Unknown player.
    net.server_in(Input::Opened(m(50)));
    assert_eq!(
        server_reply(
            &mut net,
            m(50),
            Message::Connection {
                version: PROTOCOL_VERSION,
                player: 42,
                token
            }
        ),
        Some(Message::ConnFailed {
            reason: FailReason::UnknownPlayer
        })
    );
    // Wrong token: refused, and the real session is untouched.
    net.server_in(Input::Opened(m(51)));
    assert_eq!(
        server_reply(
            &mut net,
            m(51),
            Message::Connection {
                version: PROTOCOL_VERSION,
                player,
                token
            }
        ),
        Some(Message::ConnFailed {
            reason: FailReason::WrongToken
        })
    );
    assert_eq!(
        net.server.player_state(player),
        Some(PlayerState::Connected)
    );
    // Wrong version.
    net.server_in(Input::Opened(m(52)));
    assert_eq!(
        server_reply(&mut net, m(52), Message::ConnInit { version: 99 }),
        Some(Message::ConnFailed {
            reason: FailReason::UnsupportedVersion
        })
    );
    // A final auth on a fresh link, a sync message before any handshake.
    net.server_in(Input::Opened(m(53)));
    assert_eq!(
        server_reply(
            &mut net,
            m(53),
            Message::FinalAuth {
                player,
                token_b: token
            }
        ),
        Some(Message::ConnFailed {
            reason: FailReason::UnexpectedMessage
        })
    );
    net.server_in(Input::Opened(m(54)));
    assert_eq!(
        server_reply(&mut net, m(54), Message::SyncOk { ctx: 1 }),
        Some(Message::ConnFailed {
            reason: FailReason::UnexpectedMessage
        })
    );
    // Garbage on a fresh link.
    net.server_in(Input::Opened(m(55)));
    net.wire.clear();
    net.server_in(Input::Received(
        m(55),
        Bytes::from_static(&[0, 0, 0, 1, 0xee]),
    ));
    assert_eq!(
        net.wire.front().and_then(|p| p.message()),
        Some(Message::ConnFailed {
            reason: FailReason::Malformed
        })
    );
    assert_eq!(net.server.link_count(), 1, "every refused link was closed");
    assert_eq!(
        net.server.player_state(player),
        Some(PlayerState::Connected)
    );
}

#[test]
fn feed_is_bound_only_with_token_a_and_garbage_binds_nothing() {
    let mut net = default_net();
    let player = net.handshake();
    let bound = net.server.player_links(player).unwrap().1.unwrap();
    let stranger = Link::feed(900);
    // Garbage and non-init datagrams on an unbound link: ignored, counted, no reply.
    net.wire.clear();
    net.server_in(Input::Received(
        stranger,
        Bytes::from_static(b"\xff\x1c garbage"),
    ));
    // (An authentic datagram of the player's, from an address it never bound: ignored.)
    let mut tx = FeedSender::resume_at(player, 10_000, net.feed_key());
    let mut buf = BytesMut::new();
    tx.encode(&Message::Dummy, &mut buf, 500).unwrap();
    net.server_in(Input::Received(stranger, buf.split().freeze()));
    assert!(net.wire.is_empty());
    assert_eq!(net.server.stray_stats().malformed, 1);
    assert_eq!(net.server.stray_stats().foreign, 1);
    // A feed init with the right token A (seen on `feed`) but no valid tag: an
    // unauthenticated CONN_FAILED to that link, the binding unchanged.
    let (token_a, _) = net.server.player_tokens(player).unwrap();
    let mut forger = FeedSender::pending(player);
    let seen = Message::FeedInit {
        player,
        attempt: 99,
        token_a,
    };
    forger.encode_unauthenticated(&seen, &mut buf, 500).unwrap();
    net.server_in(Input::Received(stranger, buf.split().freeze()));
    assert_eq!(
        net.wire.pop_front().and_then(|p| p.message()),
        Some(Message::ConnFailed {
            reason: FailReason::WrongToken
        })
    );
    assert_eq!(net.server.player_links(player).unwrap().1, Some(bound));
    // A feed init with a wrong token A: CONN_FAILED to that link, the binding unchanged.
    let bad = Message::FeedInit {
        player,
        attempt: 7,
        token_a: Token::new(&[0xcc; 16]).unwrap(),
    };
    tx.encode(&bad, &mut buf, 500).unwrap();
    net.server_in(Input::Received(stranger, buf.split().freeze()));
    assert_eq!(
        net.wire.pop_front().and_then(|p| p.message()),
        Some(Message::ConnFailed {
            reason: FailReason::WrongToken
        })
    );
    assert_eq!(net.server.player_links(player).unwrap().1, Some(bound));
    // A feed init for a player that does not exist.
    let ghost = Message::FeedInit {
        player: 33,
        attempt: 1,
        token_a: Token::new(&[1; 16]).unwrap(),
    };
    let mut gtx = FeedSender::pending(33);
    gtx.encode_unauthenticated(&ghost, &mut buf, 500).unwrap();
    net.server_in(Input::Received(stranger, buf.split().freeze()));
    assert_eq!(
        net.wire.pop_front().and_then(|p| p.message()),
        Some(Message::ConnFailed {
            reason: FailReason::UnknownPlayer
        })
    );
}

#[test]
fn an_insecure_token_source_is_refused_unless_short_tokens_are_allowed() {
    struct Short;
    impl TokenSource for Short {
        fn next_token(&mut self) -> Token {
            Token::new(&[1, 2, 3, 4]).unwrap()
        }
    }
    for allow in [false, true] {
        let cfg = DualServerConfig {
            allow_short_tokens: allow,
            ..DualServerConfig::default()
        };
        let mut server = DualServer::new(cfg, Short);
        server
            .handle_input(Instant::ZERO, Input::Opened(Link::main(1)))
            .unwrap();
        let mut buf = BytesMut::new();
        Message::ConnInit {
            version: PROTOCOL_VERSION,
        }
        .encode_framed(&mut buf);
        let r = server.handle_input(Instant::ZERO, Input::Received(Link::main(1), buf.freeze()));
        if allow {
            assert_eq!(r, Ok(()));
            assert_eq!(server.player_count(), 1);
        } else {
            assert_eq!(r, Err(DualError::InsecureTokenSource));
            assert_eq!(server.player_count(), 0);
        }
    }
}

#[test]
fn the_client_refuses_a_32_bit_token_unless_r_type_tokens_are_allowed() {
    for allow in [false, true] {
        let ccfg = DualClientConfig {
            allow_short_tokens: allow,
            ..DualClientConfig::default()
        };
        let mut c = DualClient::new(ccfg);
        let t = Instant::ZERO;
        c.handle_input(t, Input::Command(DualClientCommand::Connect))
            .unwrap();
        c.handle_input(t, Input::Opened(Link::main(1))).unwrap();
        let mut buf = BytesMut::new();
        Message::ConnInitRep {
            version: PROTOCOL_VERSION,
            player: 3,
            token_a: Token::new(&[1, 2, 3, 4]).unwrap(),
            secret: Token::new(&[5; 16]).unwrap(),
        }
        .encode_framed(&mut buf);
        c.handle_input(t, Input::Received(Link::main(1), buf.freeze()))
            .unwrap();
        let want = if allow {
            DualClientState::OpeningFeed
        } else {
            DualClientState::Backoff
        };
        assert_eq!(c.state(), want);
    }
}

// ---------------------------------------------------------------------------------------
// Reconnection (main channel), paragraph by paragraph.

#[test]
fn main_reconnection_ok_continues_the_session_and_its_feed() {
    let mut net = default_net();
    let player = net.handshake();
    let (old_main, feed) = net.client.links();
    // "If the connection is lost, the client should try to reconnect."
    net.client_in(Input::Closed(old_main.unwrap()));
    net.server_in(Input::Closed(old_main.unwrap()));
    assert!(net.client_has(|e| *e == DualClientEvent::Down { session: () }));
    assert_eq!(net.server.player_state(player), Some(PlayerState::MainLost));
    // "The client sends a connection request through the main channel."
    assert_eq!(net.client.state(), DualClientState::AwaitReconnectOk);
    let req = net.step(Side::Server, is_connection);
    let Message::Connection { player: p, .. } = req else {
        unreachable!()
    };
    assert_eq!(p, player);
    // "The server replies CONN_OK": the session and its feed binding continue.
    net.step(Side::Client, is_conn_ok);
    assert_eq!(net.client.state(), DualClientState::Connected);
    assert_eq!(net.client.links().1, feed);
    assert_eq!(net.server.player_links(player).unwrap().1, feed);
    assert!(net.client_has(|e| *e
        == DualClientEvent::Up {
            session: (),
            outcome: Outcome::Resumed
        }));
    assert!(net.server_has(|e| *e
        == DualServerEvent::Up {
            session: player,
            outcome: Outcome::Resumed
        }));
    // Updates still flow on feed.
    net.server_in(Input::Command(DualServerCommand::SendFeed {
        player,
        message: Message::Update(Element {
            kind: 1,
            sid: 9,
            data: Bytes::from_static(b"pos"),
        }),
    }));
    net.run_for(Duration::from_millis(1));
    assert!(net.client_has(
        |e| matches!(e, DualClientEvent::Notice(DualClientNotice::Update(el)) if el.sid == 9)
    ));
}

#[test]
fn main_reconnection_refused_closes_feed_as_well() {
    let mut net = default_net();
    let player = net.handshake();
    let (old_main, _) = net.client.links();
    net.client_in(Input::Closed(old_main.unwrap()));
    net.server_in(Input::Closed(old_main.unwrap()));
    // The server forgot the player meanwhile (kicked): the request is refused.
    net.server_in(Input::Command(DualServerCommand::Kick {
        player,
        reason: FailReason::SessionEnded,
    }));
    net.step(Side::Server, is_connection);
    // "If the server replies CONN_FAILED, the connection is closed and the connection of
    // the feed channel is closed as well."
    net.step(Side::Client, is_conn_failed);
    assert_eq!(net.client.state(), DualClientState::Closed);
    assert_eq!(net.client.links(), (None, None));
    assert!(net.client_has(|e| matches!(
        e,
        DualClientEvent::Ended {
            reason: EndReason::Refused(FailReason::UnknownPlayer),
            ..
        }
    )));
}

#[test]
fn main_reconnection_unanswered_retries_then_closes_feed() {
    let mut net = default_net();
    net.handshake();
    let (old_main, _) = net.client.links();
    net.client_in(Input::Closed(old_main.unwrap()));
    // "If the server does not reply, the client should retry": every request is lost.
    let mut requests = 0;
    for _ in 0..50 {
        let mut keep = VecDeque::new();
        while let Some(p) = net.wire.pop_front() {
            if p.message().as_ref().is_some_and(is_connection) {
                requests += 1;
            } else if p.link().channel == Channel::Feed {
                keep.push_back(p); // feed keeps flowing
            }
        }
        for p in keep {
            net.deliver(p);
        }
        if net.client.state() == DualClientState::Closed {
            break;
        }
        let t = net.client.poll_timeout().unwrap();
        net.advance(t.saturating_duration_since(net.now));
    }
    // "...and in case of failure, the connection of the feed channel is closed as well."
    assert_eq!(
        requests, 5,
        "DualClientConfig::default().reconnect.attempts"
    );
    assert_eq!(net.client.state(), DualClientState::Closed);
    assert_eq!(net.client.links(), (None, None));
    assert!(net.client_has(|e| matches!(
        e,
        DualClientEvent::Ended {
            reason: EndReason::GaveUp,
            ..
        }
    )));
}

#[test]
fn a_reconnection_replaces_a_main_the_server_still_holds() {
    let mut net = default_net();
    let player = net.handshake();
    let (old_main, _) = net.client.links();
    // Only the client saw the old stream die (half-open TCP).
    net.client_in(Input::Closed(old_main.unwrap()));
    net.run_for(Duration::from_millis(1));
    assert_eq!(net.client.state(), DualClientState::Connected);
    let new_main = net.client.links().0;
    assert_ne!(new_main, old_main);
    assert_eq!(net.server.player_links(player).unwrap().0, new_main);
    assert_eq!(net.server.link_count(), 1);
    // The old transport was taken over (closed and counted), and the session resumed: the
    // server saw it lost, then resumed, for the same player.
    assert_eq!(net.server.takeovers(), 1);
    assert!(net.server_has(|e| *e == DualServerEvent::Down { session: player }));
    assert!(net.server_has(|e| *e
        == DualServerEvent::Up {
            session: player,
            outcome: Outcome::Resumed
        }));
}

#[test]
fn a_player_whose_main_stays_lost_expires() {
    let mut net = default_net();
    let player = net.handshake();
    let (old_main, _) = net.client.links();
    net.server_in(Input::Closed(old_main.unwrap()));
    net.client_in(Input::Command(DualClientCommand::Disconnect));
    net.wire.clear();
    net.run_for(Duration::from_secs(31));
    assert_eq!(net.server.player_state(player), None);
    assert!(net.server_has(|e| matches!(
        e,
        DualServerEvent::Ended {
            reason: EndReason::Expired,
            ..
        } | DualServerEvent::Notice(DualServerNotice::FeedLost { .. })
    )));
}

// ---------------------------------------------------------------------------------------
// Reconnection (feed channel): both policies.

fn silence_feed(net: &mut Net, secs: u64) {
    // Every feed datagram is lost for `secs` seconds; main keeps working.
    let until = net.now + Duration::from_secs(secs);
    while net.now < until {
        let mut keep = VecDeque::new();
        while let Some(p) = net.wire.pop_front() {
            if p.link().channel == Channel::Main {
                keep.push_back(p);
            }
        }
        for p in keep {
            net.deliver(p);
        }
        net.advance(Duration::from_millis(100));
    }
}

#[test]
fn feed_lost_policy_close_both() {
    let mut net = default_net();
    net.handshake();
    silence_feed(&mut net, 6);
    // "the client can disconnect both the main and the feed channels."
    assert_eq!(net.client.state(), DualClientState::Closed);
    assert_eq!(net.client.links(), (None, None));
    assert!(net.client_has(|e| matches!(
        e,
        DualClientEvent::Ended {
            reason: EndReason::FeedLost,
            ..
        }
    )));
}

#[test]
fn feed_lost_policy_reinit_binds_a_new_feed_and_keeps_main() {
    let ccfg = DualClientConfig {
        on_feed_lost: FeedLossPolicy::Reinit,
        ..DualClientConfig::default()
    };
    let mut net = new_net(ccfg, DualServerConfig::default());
    let player = net.handshake();
    let (main, old_feed) = net.client.links();
    silence_feed(&mut net, 5);
    assert!(net.client_has(|e| *e == DualClientEvent::Notice(DualClientNotice::FeedLost)));
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.client.state(), DualClientState::Connected);
    let (main2, new_feed) = net.client.links();
    assert_eq!(main2, main, "main was never touched");
    assert_ne!(new_feed, old_feed);
    assert_eq!(net.server.player_links(player).unwrap().1, new_feed);
    assert!(net.client_has(|e| *e == DualClientEvent::Notice(DualClientNotice::FeedRestored)));
    assert_eq!(
        net.client_events
            .iter()
            .filter(|e| matches!(e, DualClientEvent::Up { .. }))
            .count(),
        1,
        "the session never ended"
    );
    // The datagrams of the old feed link are dropped if they arrive now.
    net.forge_to_client(old_feed.unwrap(), 10_000, SERVER_SENDER, &Message::Dummy);
    assert_eq!(net.client.state(), DualClientState::Connected);
}

#[test]
fn feed_reinit_that_fails_closes_both() {
    let ccfg = DualClientConfig {
        on_feed_lost: FeedLossPolicy::Reinit,
        ..DualClientConfig::default()
    };
    let mut net = new_net(ccfg, DualServerConfig::default());
    net.handshake();
    silence_feed(&mut net, 30);
    assert_eq!(net.client.state(), DualClientState::Closed);
    assert!(net.client_has(|e| matches!(
        e,
        DualClientEvent::Ended {
            reason: EndReason::GaveUp,
            ..
        }
    )));
}

// ---------------------------------------------------------------------------------------
// The feed channel itself.

#[test]
fn feed_datagrams_stale_duplicate_foreign_and_garbage() {
    let mut net = default_net();
    let player = net.handshake();
    let feed = net.client.links().1.unwrap();
    let up = |sid| {
        Message::Update(Element {
            kind: 2,
            sid,
            data: Bytes::from_static(b"x"),
        })
    };
    net.client_events.clear();
    net.forge_to_client(feed, 1_000, SERVER_SENDER, &up(1));
    net.forge_to_client(feed, 1_000, SERVER_SENDER, &up(2)); // duplicate sequence number
    net.forge_to_client(feed, 1_000 - 256, SERVER_SENDER, &up(3)); // older than the window
                                                                   // Late (reordered), within the replay window: "an older datagram is never applied
                                                                   // after a newer one".
    net.forge_to_client(feed, 999, SERVER_SENDER, &up(6));
    net.forge_to_client(feed, 999, SERVER_SENDER, &up(7));
    net.forge_to_client(feed, 1_001, player, &up(4)); // not the server
    net.client_in(Input::Received(
        feed,
        Bytes::from_static(b"\x00\x01garbage"),
    ));
    net.client_in(Input::Received(feed, Bytes::new()));
    net.forge_to_client(feed, 1_002, SERVER_SENDER, &up(5));
    let sids: Vec<u16> = net
        .client_events
        .iter()
        .filter_map(|e| match e {
            DualClientEvent::Notice(DualClientNotice::Update(el)) => Some(el.sid),
            _ => None,
        })
        .collect();
    assert_eq!(sids, vec![1, 5]);
    let s = net.client.feed_stats();
    assert_eq!((s.stale, s.malformed, s.foreign), (4, 2, 1));
    assert_eq!(
        net.client.state(),
        DualClientState::Connected,
        "nothing closed"
    );
}

#[test]
fn feed_content_limit_is_configurable_and_enforced_both_ways() {
    let ccfg = DualClientConfig {
        max_feed_content: 32,
        ..DualClientConfig::default()
    };
    let scfg = DualServerConfig {
        max_feed_content: 64,
        ..DualServerConfig::default()
    };
    let mut net = new_net(ccfg, scfg);
    let player = net.handshake();
    let big = Message::Update(Element {
        kind: 0,
        sid: 0,
        data: Bytes::from(vec![7u8; 40]),
    });
    assert_eq!(
        net.client.handle_input(
            net.now,
            Input::Command(DualClientCommand::SendFeed(big.clone()))
        ),
        Err(DualError::ContentTooLarge { len: 44, max: 32 })
    );
    // The server may send it (its limit is 64) but the client ignores and counts it.
    net.server_in(Input::Command(DualServerCommand::SendFeed {
        player,
        message: big,
    }));
    net.run_for(Duration::from_millis(1));
    assert!(!net.client_has(|e| matches!(e, DualClientEvent::Notice(DualClientNotice::Update(_)))));
    assert_eq!(net.client.feed_stats().malformed, 1);
    // Updates from the client reach the server's application as events.
    let small = Message::Update(Element {
        kind: 0,
        sid: 3,
        data: Bytes::from_static(b"hi"),
    });
    net.client_in(Input::Command(DualClientCommand::SendFeed(small)));
    net.run_for(Duration::from_millis(1));
    assert!(net.server_has(|e| matches!(e, DualServerEvent::Notice(DualServerNotice::Update { player: p, element }) if *p == player && element.sid == 3)));
}

#[test]
fn main_messages_are_queued_while_not_connected_and_bounded() {
    let ccfg = DualClientConfig {
        max_queued: 2,
        ..DualClientConfig::default()
    };
    let mut net = new_net(ccfg, DualServerConfig::default());
    let app = |b: &'static [u8]| DualClientCommand::Send(Message::App(Bytes::from_static(b)));
    net.connect();
    net.client
        .handle_input(net.now, Input::Command(app(b"1")))
        .unwrap();
    net.client
        .handle_input(net.now, Input::Command(app(b"2")))
        .unwrap();
    assert_eq!(
        net.client.handle_input(net.now, Input::Command(app(b"3"))),
        Err(DualError::QueueFull { max: 2 })
    );
    net.run_for(Duration::from_millis(1));
    let got: Vec<_> = net
        .server_events
        .iter()
        .filter_map(|e| match e {
            DualServerEvent::Message { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![
            Message::App(Bytes::from_static(b"1")),
            Message::App(Bytes::from_static(b"2"))
        ]
    );
}

#[test]
fn disconnection_is_told_and_ends_the_player() {
    let mut net = default_net();
    let player = net.handshake();
    net.client_in(Input::Command(DualClientCommand::Disconnect));
    assert_eq!(net.client.state(), DualClientState::Closed);
    net.run_for(Duration::from_millis(1));
    assert_eq!(net.server.player_state(player), None);
    assert!(net.server_has(|e| matches!(e, DualServerEvent::Ended {
            session,
            reason: EndReason::PeerDisconnect,
            ..
        } if *session == player)));
    assert_eq!(
        net.client.handle_input(
            net.now,
            Input::Command(DualClientCommand::Send(Message::Dummy))
        ),
        Err(DualError::Closed)
    );
}

#[test]
fn the_transition_table_names_every_state_the_tests_reach() {
    // Every state the scenarios above end in appears in the table.
    for s in [
        DualClientState::Idle,
        DualClientState::Connected,
        DualClientState::Backoff,
        DualClientState::Closed,
        DualClientState::AwaitReconnectOk,
        DualClientState::AwaitFeedReinitRep,
    ] {
        assert!(CLIENT_TRANSITIONS
            .iter()
            .any(|(a, _, b)| *a == s || *b == s));
    }
}

// ---------------------------------------------------------------------------------------
// Each handshake message lost, duplicated and delayed in turn.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// feed: the datagram is dropped. main: the stream breaks there (a reliable stream
    /// cannot lose one message and keep the next).
    Lose,
    /// Delivered twice.
    Duplicate,
    /// feed: held back past the next retry, then delivered. main: held back past the
    /// reply timeout, then delivered.
    Delay,
}

/// The happy path's messages, in order.
const STEPS: [fn(&Message) -> bool; 6] = [
    is_conn_init,
    is_conn_init_rep,
    is_feed_init,
    is_feed_init_rep,
    is_final_auth,
    is_conn_ok,
];

fn run_with_fault(step: usize, fault: Fault) -> (Net, bool) {
    let mut net = default_net();
    net.connect();
    let mut seen = 0;
    let mut held: Option<Packet> = None;
    let mut held_until = Instant::MAX;
    let mut hit = false;
    for _ in 0..10_000 {
        if let Some(p) = net.wire.pop_front() {
            let is_target = seen == step && p.message().as_ref().is_some_and(STEPS[step]);
            if p.message().as_ref().is_some_and(STEPS[seen.min(5)]) && seen <= step {
                seen += 1;
            }
            if !is_target || hit {
                net.deliver(p);
                continue;
            }
            hit = true;
            match (fault, p.link().channel) {
                (Fault::Lose, Channel::Feed) => {}
                (Fault::Lose, Channel::Main) => {
                    net.wire.retain(|q| q.link() != p.link());
                    net.client_in(Input::Closed(p.link()));
                    net.server_in(Input::Closed(p.link()));
                }
                (Fault::Duplicate, _) => {
                    net.deliver(p.clone());
                    net.deliver(p);
                }
                (Fault::Delay, ch) => {
                    held_until = net.now
                        + if ch == Channel::Feed {
                            Duration::from_millis(300)
                        } else {
                            Duration::from_secs(6)
                        };
                    held = Some(p);
                }
            }
            continue;
        }
        if let Some(p) = held.take_if(|_| net.now >= held_until) {
            net.deliver(p);
            continue;
        }
        if net.now >= Instant::from_millis(120_000) {
            break;
        }
        let next = [
            net.client.poll_timeout(),
            net.server.poll_timeout(),
            held.as_ref().map(|_| held_until),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Instant::MAX)
        .min(Instant::from_millis(120_000));
        net.now = net.now.max(next);
        net.client_in(Input::Timeout);
        net.server_in(Input::Timeout);
    }
    (net, hit)
}

#[test]
fn every_handshake_message_lost_duplicated_and_delayed() {
    for (step, _) in STEPS.iter().enumerate() {
        for fault in [Fault::Lose, Fault::Duplicate, Fault::Delay] {
            let (net, hit) = run_with_fault(step, fault);
            let ctx = format!("step {step} ({fault:?})");
            assert!(hit, "{ctx}: the fault was applied");
            // Wherever the fault hit, both sides end connected to each other, with exactly
            // one live player on the server, and every other handshake forgotten.
            assert_eq!(net.client.state(), DualClientState::Connected, "{ctx}");
            let player = net.client.player().unwrap();
            assert_eq!(
                net.server.player_state(player),
                Some(PlayerState::Connected),
                "{ctx}"
            );
            assert_eq!(net.server.player_count(), 1, "{ctx}");
            assert_eq!(net.server.link_count(), 1, "{ctx}");
            assert_eq!(
                net.client.links().1,
                net.server.player_links(player).unwrap().1,
                "{ctx}: the feed link is the client's"
            );
            let fresh_count = net.client_events.iter().filter(|e| fresh(e)).count();
            // Whether the client had to start again depends on the fault: a lost or
            // delayed datagram is repaired by the feed init retry alone.
            let retried = net.client_events.iter().any(|e| {
                matches!(
                    e,
                    DualClientEvent::Notice(DualClientNotice::AttemptFailed { .. })
                )
            });
            let feed_step = step == 2 || step == 3;
            let expect_retry = match fault {
                Fault::Lose | Fault::Delay => !feed_step,
                Fault::Duplicate => !feed_step,
            };
            assert_eq!(retried, expect_retry, "{ctx}: {:?}", net.client_events);
            if fault == Fault::Lose && step == 5 {
                // CONN_OK lost: the server had connected player 0, which then expired.
                assert!(net.server_events.iter().any(|e| matches!(
                    e,
                    DualServerEvent::Ended {
                        reason: EndReason::Expired,
                        ..
                    }
                )));
            }
            // A duplicated final auth or CONN_OK breaks the protocol after the client was
            // connected: the session is refused and a fresh one made.
            let expect_fresh = if fault == Fault::Duplicate && step >= 4 {
                2
            } else {
                1
            };
            assert_eq!(fresh_count, expect_fresh, "{ctx}");
        }
    }
}

#[test]
fn reconnection_messages_lost_duplicated_and_delayed() {
    // (whether the fault hits the reply rather than the request, the fault)
    for (on_reply, fault) in [
        (false, Fault::Lose),
        (false, Fault::Delay),
        (true, Fault::Lose),
        (true, Fault::Delay),
    ] {
        let mut net = default_net();
        let player = net.handshake();
        let old = net.client.links().0.unwrap();
        net.client_in(Input::Closed(old));
        net.server_in(Input::Closed(old));
        let p = net.take(Side::Server, is_connection);
        if on_reply {
            net.deliver(p);
            let reply = net.take(Side::Client, is_conn_ok);
            apply(&mut net, reply, fault);
        } else {
            apply(&mut net, p, fault);
        }
        net.run_for(Duration::from_secs(60));
        let ctx = format!("reply {on_reply}, {fault:?}");
        assert_eq!(net.client.state(), DualClientState::Connected, "{ctx}");
        assert_eq!(net.client.player(), Some(player), "{ctx}: same player");
        assert_eq!(
            net.server.player_state(player),
            Some(PlayerState::Connected)
        );
        assert!(net.client_has(|e| *e
            == DualClientEvent::Up {
                session: (),
                outcome: Outcome::Resumed
            }));
    }
}

fn apply(net: &mut Net, p: Packet, fault: Fault) {
    match fault {
        Fault::Lose => {
            net.client_in(Input::Closed(p.link()));
            net.server_in(Input::Closed(p.link()));
        }
        Fault::Delay => {
            // Past the reply timeout, while everything else flows. On `main` what follows
            // on the same stream is held back too: a stream cannot reorder.
            let link = p.link();
            let mut behind = Vec::new();
            if link.channel == Channel::Main {
                let (same, rest): (Vec<Packet>, Vec<Packet>) = net
                    .wire
                    .drain(..)
                    .partition(|q| matches!(q, Packet::Data { .. }) && q.link() == link);
                net.wire.extend(rest);
                behind = same;
            }
            net.run_for(Duration::from_secs(6));
            net.deliver(p);
            for q in behind {
                net.deliver(q);
            }
        }
        Fault::Duplicate => {
            net.deliver(p.clone());
            net.deliver(p);
        }
    }
}

/// docs/PROTOCOL.md section 4.9 is the table, row for row.
#[test]
fn protocol_md_draws_the_client_table() {
    let doc = include_str!("../docs/PROTOCOL.md");
    let rows: Vec<String> = CLIENT_TRANSITIONS
        .iter()
        .map(|(s, i, n)| format!("| {s:?} | {i:?} | {n:?} |"))
        .collect();
    if std::env::var_os("PRINT_TABLE").is_some() {
        println!("{}", rows.join("\n"));
    }
    for row in &rows {
        assert!(doc.contains(row.as_str()), "docs/PROTOCOL.md lacks {row}");
    }
    let start = doc.find("### 4.9").expect("section 4.9");
    let documented = doc[start..]
        .lines()
        // Up to the generated rendering of the same table (tests/tables.rs).
        .take_while(|l| !l.starts_with("## 5") && !l.starts_with("Transition table of"))
        .filter(|l| l.starts_with("| ") && !l.starts_with("| state") && !l.starts_with("|---"))
        .count();
    assert_eq!(documented, rows.len(), "no extra rows in the doc");
}

// ---------------------------------------------------------------------------------------
// Properties: random loss, duplication and reordering on feed.

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Whatever happens to `feed` datagrams, an update is never delivered twice nor
        /// after a newer one, and when the client says it is connected, so does the server,
        /// with no other player left behind.
        #[test]
        fn feed_faults_never_duplicate_or_reorder_delivery(
            faults in prop::collection::vec(0u8..6, 0..300),
            updates in 1u16..40,
            reinit in any::<bool>(),
        ) {
            let ccfg = DualClientConfig {
                on_feed_lost: if reinit { FeedLossPolicy::Reinit } else { FeedLossPolicy::CloseBoth },
                ..DualClientConfig::default()
            };
            let mut net = new_net(ccfg, DualServerConfig::default());
            net.connect();
            let mut faults = faults.into_iter();
            let mut sent = 0u16;
            let end = Instant::from_millis(60_000);
            for _ in 0..20_000 {
                if net.client.state() == DualClientState::Connected && sent < updates {
                    if let Some(player) = net.client.player() {
                        net.server_in(Input::Command(DualServerCommand::SendFeed {
                            player,
                            message: Message::Update(Element { kind: 0, sid: sent, data: Bytes::new() }),
                        }));
                        sent += 1;
                    }
                }
                if let Some(p) = net.wire.pop_front() {
                    if p.link().channel == Channel::Main {
                        net.deliver(p);
                        continue;
                    }
                    match faults.next().unwrap_or(0) {
                        0 | 1 => net.deliver(p),
                        2 => {}                      // lost
                        3 => { net.deliver(p.clone()); net.deliver(p) } // duplicated
                        _ => net.wire.push_back(p),  // reordered behind the rest
                    }
                    continue;
                }
                if net.now >= end {
                    break;
                }
                let next = [net.client.poll_timeout(), net.server.poll_timeout()]
                    .into_iter().flatten().min().unwrap_or(end).min(end);
                net.now = net.now.max(next);
                net.client_in(Input::Timeout);
                net.server_in(Input::Timeout);
            }
            // Let what is in flight land, without faults.
            net.run_for(Duration::from_millis(1));
            let sids: Vec<u16> = net.client_events.iter().filter_map(|e| match e {
                DualClientEvent::Notice(DualClientNotice::Update(el)) => Some(el.sid),
                _ => None,
            }).collect();
            prop_assert!(sids.windows(2).all(|w| w[0] < w[1]), "{:?}", sids);
            if net.client.state() == DualClientState::Connected {
                let player = net.client.player().unwrap();
                prop_assert_eq!(net.server.player_state(player), Some(PlayerState::Connected));
                prop_assert_eq!(net.server.player_count(), 1);
            }
        }
    }
}

#[test]
fn main_links_are_bounded_and_a_repeated_open_is_harmless() {
    let scfg = DualServerConfig {
        max_links: 2,
        ..DualServerConfig::default()
    };
    let mut net = new_net(DualClientConfig::default(), scfg);
    let player = net.handshake();
    let main = net.client.links().0.unwrap();
    net.server_in(Input::Opened(main));
    assert_eq!(net.server.link_count(), 1);
    assert!(net.wire.is_empty(), "the known transport is not refused");
    net.server_in(Input::Opened(Link::main(70)));
    net.server_in(Input::Opened(Link::main(71)));
    assert_eq!(net.server.link_count(), 2);
    assert_eq!(
        net.wire.pop_front().and_then(|p| p.message()),
        Some(Message::ConnFailed {
            reason: FailReason::ServerFull
        })
    );
    assert_eq!(
        net.server.player_state(player),
        Some(PlayerState::Connected)
    );
}
