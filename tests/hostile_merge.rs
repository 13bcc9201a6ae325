//! What an attacker can do to a token-merge server with what it captured or can cheaply
//! send: replay a RESUME, fill the ended set, bring an ended session back from an older
//! snapshot. Each test failed before the fix it names.

use bytes::Bytes;
use tether::connect::merge::{
    Event, MergeClient, MergeClientCommand, MergeClientConfig, MergeServer, MergeServerCommand,
    MergeServerConfig, Outcome, SessionId, Status,
};
use tether::snapshot::ImportError;
use tether::wire::{codes, FailReason, Message};
use tether::{Duration, Input, Instant, Link, Machine, Output, Token, Transmit};

type Server = MergeServer<Box<dyn FnMut() -> Token>>;

/// Distinct 16-byte server tokens (a counter: predictable, as a test wants).
fn server(cfg: MergeServerConfig) -> Server {
    let mut n = 0u64;
    MergeServer::new(
        cfg,
        Box::new(move || {
            n += 1;
            let mut b = [b'S'; 16];
            b[8..].copy_from_slice(&n.to_be_bytes());
            Token::new(&b).unwrap()
        }),
    )
}

fn client(n: u64) -> MergeClient {
    let mut b = [b'C'; 16];
    b[8..].copy_from_slice(&n.to_be_bytes());
    let cfg = MergeClientConfig {
        jitter_percent: 0,
        ..MergeClientConfig::default()
    };
    MergeClient::new(Instant::ZERO, cfg, Token::new(&b).unwrap()).unwrap()
}

/// What one side put out, by kind.
#[derive(Default)]
struct Out<E> {
    transmits: Vec<Transmit>,
    events: Vec<E>,
    closes: Vec<Link>,
}

fn drain<M: Machine>(m: &mut M) -> Out<M::Event> {
    let mut out = Out {
        transmits: Vec::new(),
        events: Vec::new(),
        closes: Vec::new(),
    };
    loop {
        match m.poll_output() {
            Output::Transmit(t) => out.transmits.push(t),
            Output::Event(e) => out.events.push(e),
            Output::Close(l) => out.closes.push(l),
            Output::Open(_) => {}
            Output::Wait(_) => return out,
        }
    }
}

/// Moves bytes both ways until quiet; returns what the client sent and the server's events.
fn shuttle(
    now: Instant,
    c: &mut MergeClient,
    s: &mut Server,
) -> (
    Vec<Transmit>,
    Vec<Event<SessionId, tether::connect::merge::MergeServerNotice>>,
) {
    let (mut sent, mut events) = (Vec::new(), Vec::new());
    loop {
        let co = drain(c);
        let so = drain(s);
        events.extend(so.events);
        let moved = !co.transmits.is_empty() || !so.transmits.is_empty();
        for t in co.transmits {
            sent.push(t.clone());
            s.handle_input(now, Input::Received(t.link, t.payload))
                .unwrap();
        }
        for t in so.transmits {
            c.handle_input(now, Input::Received(t.link, t.payload))
                .unwrap();
        }
        if !moved {
            return (sent, events);
        }
    }
}

/// Opens `link` on both sides and runs the handshake; returns the server's session.
fn connect(now: Instant, c: &mut MergeClient, s: &mut Server, link: Link) -> SessionId {
    drain(c);
    c.handle_input(now, Input::Opened(link)).unwrap();
    s.handle_input(now, Input::Opened(link)).unwrap();
    shuttle(now, c, s);
    assert_eq!(c.view().status, Status::Connected);
    s.session_of(link.id).unwrap()
}

/// Cuts `old` on both sides, lets the client reconnect on `new`; returns what the client
/// sent on it and the time it ran to.
fn resume(
    mut now: Instant,
    c: &mut MergeClient,
    s: &mut Server,
    old: Link,
    new: Link,
) -> (Vec<Transmit>, Instant) {
    c.handle_input(now, Input::Closed(old)).unwrap();
    s.handle_input(now, Input::Closed(old)).unwrap();
    drain(s);
    now = c.poll_timeout().unwrap();
    c.handle_input(now, Input::Timeout).unwrap();
    drain(c);
    c.handle_input(now, Input::Opened(new)).unwrap();
    s.handle_input(now, Input::Opened(new)).unwrap();
    let (sent, _) = shuttle(now, c, s);
    assert_eq!(c.view().status, Status::Connected);
    (sent, now)
}

fn app(text: &'static [u8]) -> Message {
    Message::App(Bytes::from_static(text))
}

fn failed(reason: FailReason) -> Bytes {
    let mut b = bytes::BytesMut::new();
    Message::ConnFailed { reason }.encode_framed(&mut b);
    b.freeze()
}

/// A RESUME captured at one resumption used to be replayed at the next cut: the server
/// adopted the attacker's transport and sent it the session's queued messages. The server
/// now offers a fresh secret with every confirmation; once the client confirmed the new one,
/// the captured RESUME is refused as ended, the session is untouched, and the real client
/// resumes it and gets the queued message.
#[test]
fn a_captured_resume_cannot_be_replayed_at_the_next_cut() {
    let mut s = server(MergeServerConfig::default());
    let mut c = client(1);
    let id = connect(Instant::ZERO, &mut c, &mut s, Link::main(1));
    // First cut: the attacker captures the client's RESUME on the new transport.
    let (sent, mut now) = resume(Instant::ZERO, &mut c, &mut s, Link::main(1), Link::main(2));
    let captured = sent
        .iter()
        .find(|t| t.payload.get(4) == Some(&codes::RESUME))
        .expect("the client resumed with RESUME")
        .payload
        .clone();
    // The client confirmed the secret offered at this resumption.
    assert!(sent
        .iter()
        .any(|t| t.payload.get(4) == Some(&codes::SECRET)));
    // Second cut; the server holds a message for the client meanwhile.
    now += Duration::from_secs(1);
    c.handle_input(now, Input::Closed(Link::main(2))).unwrap();
    s.handle_input(now, Input::Closed(Link::main(2))).unwrap();
    s.handle_input(
        now,
        Input::Command(MergeServerCommand::Send {
            session: id,
            message: app(b"for the client only"),
        }),
    )
    .unwrap();
    drain(&mut s);
    // The attacker replays the captured RESUME on a transport of its own.
    let evil = Link::main(66);
    s.handle_input(now, Input::Opened(evil)).unwrap();
    s.handle_input(now, Input::Received(evil, captured))
        .unwrap();
    let out = drain(&mut s);
    assert_ne!(
        s.session_of(evil.id),
        Some(id),
        "the replay took the session"
    );
    assert!(
        out.transmits
            .iter()
            .all(|t| !t.payload.ends_with(b"for the client only")),
        "the attacker got the session's queued message"
    );
    assert_eq!(
        out.transmits.last().map(|t| t.payload.clone()),
        Some(failed(FailReason::SessionEnded))
    );
    assert_eq!(out.closes, vec![evil]);
    assert_eq!(s.session(id).unwrap().status, Status::Reconnecting);
    assert_eq!(s.queued(id), Some(1));
    // The real client resumes, and gets it.
    let deadline = c.poll_timeout().unwrap();
    c.handle_input(deadline, Input::Timeout).unwrap();
    drain(&mut c);
    c.handle_input(deadline, Input::Opened(Link::main(3)))
        .unwrap();
    s.handle_input(deadline, Input::Opened(Link::main(3)))
        .unwrap();
    let mut got = Vec::new();
    loop {
        let co = drain(&mut c);
        got.extend(co.events);
        let so = drain(&mut s);
        if co.transmits.is_empty() && so.transmits.is_empty() {
            break;
        }
        for t in co.transmits {
            s.handle_input(deadline, Input::Received(t.link, t.payload))
                .unwrap();
        }
        for t in so.transmits {
            c.handle_input(deadline, Input::Received(t.link, t.payload))
                .unwrap();
        }
    }
    assert_eq!(s.session_of(3), Some(id));
    assert!(got.contains(&Event::Up {
        session: (),
        outcome: Outcome::Resumed
    }));
    assert!(got.contains(&Event::Message {
        session: (),
        message: app(b"for the client only")
    }));
}

/// A secret is replaced at every resumption: a client that resumes many times never
/// presents the same one twice, and each older one is refused.
#[test]
fn every_resumption_rotates_the_secret_and_refuses_the_older_ones() {
    let mut s = server(MergeServerConfig::default());
    let mut c = client(1);
    connect(Instant::ZERO, &mut c, &mut s, Link::main(1));
    let mut now = Instant::ZERO;
    let mut seen = Vec::new();
    for i in 1..=5u64 {
        let (sent, t) = resume(now, &mut c, &mut s, Link::main(i), Link::main(i + 1));
        now = t;
        let r = sent
            .iter()
            .find(|t| t.payload.get(4) == Some(&codes::RESUME))
            .unwrap()
            .payload
            .clone();
        assert!(!seen.contains(&r), "resumption {i} presented an old secret");
        seen.push(r);
    }
    for (i, old) in seen.iter().enumerate() {
        let l = Link::main(100 + i as u64);
        s.handle_input(now, Input::Opened(l)).unwrap();
        s.handle_input(now, Input::Received(l, old.clone()))
            .unwrap();
        let out = drain(&mut s);
        assert_eq!(
            out.transmits.last().map(|t| t.payload.clone()),
            Some(failed(FailReason::SessionEnded)),
            "old secret {i}"
        );
    }
    assert_eq!(s.session_count(), 1);
}

/// Filling the ended set used to evict, oldest first, the tombstone of a session the
/// application had ended, long before its `ended_memory`: 100 cheap handshakes and
/// DISCONNECTs (with `max_sessions` 100) and the kicked client, which never saw its
/// DISCONNECT, came back as a fresh session. The application's tombstones are now a part
/// of the set no peer can push out.
#[test]
fn filling_the_ended_set_does_not_evict_what_the_application_ended() {
    let cfg = MergeServerConfig {
        max_sessions: 100,
        ..MergeServerConfig::default()
    };
    let mut s = server(cfg);
    let now = Instant::ZERO;
    let mut kicked = client(0);
    let id = connect(now, &mut kicked, &mut s, Link::main(1));
    // The application ends the session; the DISCONNECT never reaches the client.
    s.handle_input(
        now,
        Input::Command(MergeServerCommand::Disconnect { session: id }),
    )
    .unwrap();
    drain(&mut s);
    kicked
        .handle_input(now, Input::Closed(Link::main(1)))
        .unwrap();
    // An attacker: 250 sessions, each made and formally ended.
    for i in 0..250u64 {
        let mut a = client(1_000 + i);
        let link = Link::main(10 + i);
        connect(now, &mut a, &mut s, link);
        a.handle_input(now, Input::Command(MergeClientCommand::Disconnect))
            .unwrap();
        shuttle(now, &mut a, &mut s);
    }
    assert!(s.ended_count() <= 2 * 100);
    // The kicked client comes back within `ended_memory`: refused for good.
    let at = kicked.poll_timeout().unwrap();
    kicked.handle_input(at, Input::Timeout).unwrap();
    drain(&mut kicked);
    kicked
        .handle_input(at, Input::Opened(Link::main(999)))
        .unwrap();
    s.handle_input(at, Input::Opened(Link::main(999))).unwrap();
    let mut events = Vec::new();
    loop {
        let co = drain(&mut kicked);
        events.extend(co.events);
        let so = drain(&mut s);
        if co.transmits.is_empty() && so.transmits.is_empty() {
            break;
        }
        for t in co.transmits {
            s.handle_input(at, Input::Received(t.link, t.payload))
                .unwrap();
        }
        for t in so.transmits {
            kicked
                .handle_input(at, Input::Received(t.link, t.payload))
                .unwrap();
        }
    }
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Ended {
                reason: tether::session::EndReason::Refused(FailReason::SessionEnded),
                ..
            }
        )),
        "the kicked client got back in: {events:?}"
    );
    assert_eq!(s.session_of(999), None);
}

/// A session that ended formally used to come back on a restarted server that imported an
/// older snapshot of it (taken before the end), and any holder of its secret could resume
/// it. The server's tombstones are now exported with the sessions and imported first, and
/// the import refuses the ended session.
#[test]
fn an_ended_session_does_not_come_back_from_an_older_snapshot() {
    let mut a = server(MergeServerConfig::default());
    let mut c = client(1);
    let now = Instant::ZERO;
    let id = connect(now, &mut c, &mut a, Link::main(1));
    // Saved while it was live (a durable store's last copy of it).
    let older = a.export_session(now, id).unwrap();
    // The client ends it for good.
    c.handle_input(now, Input::Command(MergeClientCommand::Disconnect))
        .unwrap();
    shuttle(now, &mut c, &mut a);
    assert_eq!(a.session_count(), 0);
    let tombstones = a.export_ended(now);
    let mut bytes = bytes::BytesMut::new();
    tombstones.encode(&mut bytes);
    let tombstones = tether::connect::merge::MergeEndedSnapshot::decode(bytes.freeze()).unwrap();
    assert_eq!(tombstones.tombstones.len(), 1);
    // Restarted: the tombstones first, then the sessions.
    let later = now + Duration::from_secs(5);
    let mut b = server(MergeServerConfig::default());
    assert_eq!(b.import_ended(later, &tombstones), 1);
    assert_eq!(
        b.import_session(later, older.clone()),
        Err(ImportError::Ended)
    );
    assert_eq!(b.session_count(), 0);
    // Without the tombstones the import would have brought it back.
    let mut forgetful = server(MergeServerConfig::default());
    assert!(forgetful.import_session(later, older).is_ok());
    // The tombstone is forgotten when the original would have been.
    b.handle_input(later + Duration::from_secs(600), Input::Timeout)
        .unwrap();
    assert_eq!(b.ended_count(), 0);
}

/// A server restored from a copy of a session older than its last rotation still resumes
/// it: the newer secret the client holds is derived from the session's key, which the
/// copy holds.
#[test]
fn an_older_copy_of_a_session_still_resumes_with_a_newer_secret() {
    let mut a = server(MergeServerConfig::default());
    let mut c = client(1);
    let id = connect(Instant::ZERO, &mut c, &mut a, Link::main(1));
    let older = a.export_session(Instant::ZERO, id).unwrap();
    let (_, now) = resume(Instant::ZERO, &mut c, &mut a, Link::main(1), Link::main(2));
    let (_, now) = resume(now, &mut c, &mut a, Link::main(2), Link::main(3));
    let mut b = server(MergeServerConfig::default());
    let restored = b.import_session(now, older).unwrap();
    c.handle_input(now, Input::Closed(Link::main(3))).unwrap();
    let at = c.poll_timeout().unwrap();
    c.handle_input(at, Input::Timeout).unwrap();
    drain(&mut c);
    c.handle_input(at, Input::Opened(Link::main(4))).unwrap();
    b.handle_input(at, Input::Opened(Link::main(4))).unwrap();
    let (_, events) = shuttle(at, &mut c, &mut b);
    assert!(events.contains(&Event::Up {
        session: restored,
        outcome: Outcome::Resumed
    }));
}
