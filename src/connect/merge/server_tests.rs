//! Unit tests of the token-merge registry's internals (indexes and timers).

use super::*;
use crate::wire::PROTOCOL_VERSION;
use bytes::{Bytes, BytesMut};

fn frame(msg: &Message) -> Bytes {
    let mut b = BytesMut::new();
    msg.encode_framed(&mut b);
    b.freeze()
}

fn token(c: u8) -> Token {
    Token::new(&[c; 16]).unwrap()
}

/// The timer index holds exactly one entry per pending handshake, per RECONNECTING
/// session (its expiry) and per CONNECTED one (its liveness), through handshakes, losses,
/// adoptions, refusals and expiries; the token index holds exactly the merged tokens.
fn assert_index<S>(s: &MergeServer<S>) {
    let with_token: BTreeSet<(u64, SessionId, Role)> = s
        .endpoint
        .sessions()
        .flat_map(|(id, x)| {
            x.state
                .entries(&s.key)
                .map(move |(value, role)| (value, id, role))
        })
        .collect();
    let filed: BTreeSet<(u64, SessionId, Role)> = s
        .by_token
        .iter()
        .zip([Role::Merged, Role::Locator])
        .flat_map(|(set, role)| set.iter().map(move |&(value, id)| (value, id, role)))
        .collect();
    assert_eq!(with_token, filed);
    // A temporary node for exactly the transports in their handshake.
    assert_eq!(s.handshakes.len(), s.endpoint.pending_count());
    for id in s.handshakes.keys() {
        assert!(s.endpoint.peek(*id).is_some_and(|r| r.session.is_none()));
    }
    let live = s
        .endpoint
        .sessions()
        .filter(|(_, x)| x.link.is_some() && x.core.deadline().is_some())
        .count();
    let down = s
        .endpoint
        .sessions()
        .filter(|(_, x)| x.link.is_none())
        .count();
    assert_eq!(
        s.endpoint.timer_count(),
        s.endpoint.pending_count() + live + down
    );
    for (t, _) in s.endpoint.timers() {
        match t {
            Timer::Handshake(l) => {
                assert!(s.endpoint.peek(l).is_some_and(|r| r.session.is_none()))
            }
            Timer::Session(id, SessionTimer::Expire) => {
                assert!(s.endpoint.get(id).is_some_and(|x| x.link.is_none()))
            }
            Timer::Session(id, SessionTimer::Live) => {
                assert!(s.endpoint.get(id).is_some_and(|x| x.link.is_some()))
            }
            Timer::Session(_, SessionTimer::Profile) => panic!("no profile timer here"),
        }
    }
}

#[test]
fn timer_index_follows_the_registry() {
    let mut n = 0u8;
    let mut s = MergeServer::new(MergeServerConfig::default(), move || {
        n += 1;
        token(b'a' + n)
    });
    let now = Instant::ZERO;
    let tok = |t| {
        frame(&Message::Token {
            version: PROTOCOL_VERSION,
            token: t,
        })
    };
    for id in 1..=3 {
        s.handle_input(now, Input::Opened(Link::main(id))).unwrap();
    }
    assert_index(&s);
    s.handle_input(now, Input::Received(Link::main(1), tok(token(b'X'))))
        .unwrap();
    s.handle_input(now, Input::Received(Link::main(1), tok(token(b'X'))))
        .unwrap();
    assert_index(&s);
    s.handle_input(
        now,
        Input::Received(Link::main(2), Bytes::from_static(b"\0\0\0\x01\xff")),
    )
    .unwrap();
    s.handle_input(now, Input::Closed(Link::main(3))).unwrap();
    s.handle_input(now, Input::Closed(Link::main(1))).unwrap();
    assert_index(&s);
    assert_eq!(s.endpoint.timer_count(), 1, "only the RECONNECTING session");
    let merged = s
        .endpoint
        .sessions()
        .next()
        .and_then(|(_, x)| x.state.merged())
        .unwrap();
    s.handle_input(now, Input::Opened(Link::main(4))).unwrap();
    let resume = frame(&Message::Resume {
        version: PROTOCOL_VERSION,
        token: merged,
    });
    s.handle_input(now, Input::Received(Link::main(4), resume))
        .unwrap();
    assert_index(&s);
    assert_eq!(
        s.endpoint
            .timers()
            .map(|t| t.0)
            .collect::<alloc::vec::Vec<_>>(),
        [Timer::Session(s.session_of(4).unwrap(), SessionTimer::Live)],
        "adopted: no expiry, no pending, only the heartbeat"
    );
    s.handle_input(now, Input::Closed(Link::main(4))).unwrap();
    s.handle_input(Instant::MAX, Input::Timeout).unwrap();
    assert_index(&s);
    assert_eq!((s.session_count(), s.endpoint.timer_count()), (0, 0));
}

/// Runs a handshake on `link` with a client token made of `c`; returns the session.
fn handshake<S: TokenSource>(s: &mut MergeServer<S>, link: u64, c: Token) -> SessionId {
    let now = Instant::ZERO;
    let tok = frame(&Message::Token {
        version: PROTOCOL_VERSION,
        token: c,
    });
    s.handle_input(now, Input::Opened(Link::main(link)))
        .unwrap();
    s.handle_input(now, Input::Received(Link::main(link), tok.clone()))
        .unwrap();
    s.handle_input(now, Input::Received(Link::main(link), tok))
        .unwrap();
    while !matches!(s.poll_output(), Output::Wait(_)) {}
    s.session_of(link).unwrap()
}

#[test]
fn handover_keeps_the_token_index_of_both_servers() {
    let source = || {
        let mut n = 0u8;
        move || {
            n += 1;
            token(b'a' + n)
        }
    };
    let mut a = MergeServer::new(MergeServerConfig::default(), source());
    let mut b = MergeServer::new(MergeServerConfig::default(), source());
    let id = handshake(&mut a, 1, token(b'X'));
    let snap = a.take_session(Instant::ZERO, id).unwrap();
    assert_index(&a);
    assert_eq!(a.session_count(), 0);
    let merged = snap.merged;
    let imported = b.import_session(Instant::ZERO, snap.clone()).unwrap();
    assert_index(&b);
    assert_eq!(b.find(&merged), Some(imported));
    assert_eq!(
        b.import_session(Instant::ZERO, snap),
        Err(crate::snapshot::ImportError::DuplicateToken)
    );
    assert_index(&b);
}

#[test]
fn resumption_finds_its_session_among_many_even_when_fingerprints_collide() {
    let mut n = 0u64;
    // No heartbeat: the session resumed at the end stays up until the end of time.
    let cfg = MergeServerConfig {
        session: crate::session::SessionConfig {
            keepalive: None,
            ..Default::default()
        },
        ..MergeServerConfig::default()
    };
    let mut s = MergeServer::new(cfg, move || {
        n += 1;
        let mut b = [b'S'; 16];
        b[8..].copy_from_slice(&n.to_be_bytes());
        Token::new(&b).unwrap()
    });
    let now = Instant::ZERO;
    let ids: alloc::vec::Vec<SessionId> = (1..=50u8)
        .map(|i| handshake(&mut s, u64::from(i), token(i)))
        .collect();
    assert_index(&s);
    let merged = |s: &MergeServer<_>, id: SessionId| s.session(id).unwrap().merged.unwrap();
    let target = ids[17];
    let m = merged(&s, target);
    // Forge collisions: other sessions filed under the target's fingerprint.
    for &other in &ids[..5] {
        s.by_token[Role::Merged as usize].insert((s.key.fingerprint(&m), other));
    }
    assert_eq!(s.find(&m), Some(target));
    for &other in &ids[..5] {
        s.by_token[Role::Merged as usize].remove(&(s.key.fingerprint(&m), other));
    }
    for i in 1..=50 {
        s.handle_input(now, Input::Closed(Link::main(i))).unwrap();
    }
    s.handle_input(now, Input::Opened(Link::main(100))).unwrap();
    let resume = frame(&Message::Resume {
        version: PROTOCOL_VERSION,
        token: m,
    });
    s.handle_input(now, Input::Received(Link::main(100), resume))
        .unwrap();
    assert_eq!(s.session_of(100), Some(target));
    assert_eq!(s.session(target).unwrap().status, Status::Connected);
    assert_index(&s);
    // Ended sessions leave the index.
    s.handle_input(Instant::MAX, Input::Timeout).unwrap();
    assert_eq!(s.session_count(), 1);
    assert_index(&s);
}

/// What an idle session's records are, in bytes (docs/PERFORMANCE.md; the heap they take in
/// a registry is counted in tests/merge_memory.rs): the session's slot (boxed in the
/// endpoint's map) with its tokens packed at their used length, and its transport's route,
/// which holds no temporary node once the handshake is done.
#[test]
fn an_idle_session_costs_a_few_hundred_bytes() {
    use core::mem::size_of;
    let slot = size_of::<crate::session::endpoint::Slot<Session>>();
    let route = size_of::<crate::session::endpoint::Route<SessionId, LinkState>>();
    // Was 440 (four 65-byte inline tokens) and 344 (an empty node in every route).
    assert!(slot <= 272, "a session's slot is {slot} bytes");
    assert!(route <= 120, "a route is {route} bytes");
    assert!(size_of::<TokenPack>() <= TokenPack::INLINE + 8);

    // The usual session's tokens stay inline: nothing on the heap for them.
    let mut n = 0u8;
    let mut s = MergeServer::new(MergeServerConfig::default(), move || {
        n += 1;
        token(b'a' + n)
    });
    let id = handshake(&mut s, 1, token(b'X'));
    let x = s.endpoint.get(id).unwrap();
    assert_eq!(x.state.tokens.heap_bytes(), 0);
    assert!(x.state.root().is_some_and(|k| k.len() == 16));
    assert_eq!(x.state.merged().map(|m| m.len()), Some(32));
    assert_eq!(s.handshakes.len(), 0, "no temporary node left");
}

/// The token index used to be ordered by an unkeyed FNV-1a of the merged token, so a peer
/// could compute fingerprints offline and forge tokens that all land on one entry. The
/// fingerprint is now keyed by the first token the server draws: two servers file the same
/// token under unrelated fingerprints, and neither is the unkeyed hash.
#[test]
fn fingerprints_are_keyed_by_the_servers_own_token() {
    let fnv = |t: &Token| {
        t.as_bytes().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let keyed = |first: u8| {
        let mut n = 0u8;
        MergeServer::new(MergeServerConfig::default(), move || {
            n += 1;
            token(if n == 1 { first } else { b'a' + n })
        })
    };
    let (mut a, mut b) = (keyed(1), keyed(2));
    let ia = handshake(&mut a, 1, token(b'X'));
    let ib = handshake(&mut b, 1, token(b'X'));
    let m = a.session(ia).unwrap().merged.unwrap();
    assert_eq!(Some(m), b.session(ib).unwrap().merged);
    let (fa, fb) = (a.key.fingerprint(&m), b.key.fingerprint(&m));
    assert_ne!(fa, fb);
    assert_ne!(fa, fnv(&m));
    assert!(a.by_token[Role::Merged as usize].contains(&(fa, ia)));
    assert!(b.by_token[Role::Merged as usize].contains(&(fb, ib)));
    assert_index(&a);
}
