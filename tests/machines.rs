//! What every machine promises a driver, checked on each (issue "session core", items 4-5):
//!
//! 1. the transition tables are the machines: over every (state, input) pair, a pair with no
//!    row is the typed `NoTransition`, a pair with a row gives its target (the machines that
//!    keep their states private fire exactly `tables::fire` / `tables::fire_to` over these
//!    tables; dop's token-merge node, R-Type's dual-channel server and the sync contexts
//!    also check their own step functions in their unit tests);
//! 2. a fatal error is sticky: every later call returns the same error;
//! 3. `now` going backwards does not move a machine's clock back;
//! 4. `is_closed` is true exactly once the machine has ended;
//! 5. errors say who misbehaved (`origin`).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tether::connect::{dual, merge};
use tether::sync::anchored::{
    self, AnchoredError, ClientSession, MemClientStore, MemServerStore, ServerSession, Standalone,
};
use tether::sync::journal::{JournalMachine, MemJournal, Role, SyncConfig, SyncError};
use tether::tables::{fire, fire_to, NoTransition};
use tether::wire::{AnchoredMessage, Message};
use tether::{Channel, Input, Instant, Link, Machine, Origin, Output, Token};

// ---- 1. Tables: every pair. ----

/// For every pair of `states` x `inputs`: no row gives the typed error; rows give their
/// targets (through `fire` when the pair has one row, `fire_to` for each of several).
fn check_pair<S, I>(table: &[(S, I, S)], states: &[S], s: S, i: I) -> Result<(), TestCaseError>
where
    S: Copy + Eq + core::fmt::Debug,
    I: Copy + Eq + core::fmt::Debug,
{
    let targets: Vec<S> = table
        .iter()
        .filter(|(f, x, _)| *f == s && *x == i)
        .map(|(_, _, t)| *t)
        .collect();
    let none = NoTransition { state: s, input: i };
    match targets.as_slice() {
        [] => prop_assert_eq!(fire(table, s, i), Err(none)),
        [only] => prop_assert_eq!(fire(table, s, i), Ok(*only)),
        _ => {}
    }
    for &to in states {
        let want = if targets.contains(&to) {
            Ok(to)
        } else {
            Err(none)
        };
        prop_assert_eq!(fire_to(table, s, i, to), want);
    }
    Ok(())
}

fn check_all<S, I>(table: &[(S, I, S)], states: &[S], inputs: &[I])
where
    S: Copy + Eq + core::fmt::Debug,
    I: Copy + Eq + core::fmt::Debug,
{
    for &s in states {
        for &i in inputs {
            check_pair(table, states, s, i).unwrap();
        }
    }
}

const DUAL_CLIENT_STATES: [dual::DualClientState; 14] = {
    use dual::DualClientState::*;
    [
        Idle,
        OpeningMain,
        AwaitConnInitRep,
        OpeningFeed,
        AwaitFeedInitRep,
        AwaitConnOk,
        Connected,
        ReopeningMain,
        AwaitReconnectOk,
        ReconnectBackoff,
        ReopeningFeed,
        AwaitFeedReinitRep,
        Backoff,
        Closed,
    ]
};
const DUAL_CLIENT_INPUTS: [dual::DualClientInput; 13] = {
    use dual::DualClientInput::*;
    [
        Connect,
        MainOpened,
        FeedOpened,
        ConnInitRep,
        FeedInitRep,
        ConnOk,
        FeedInitTimeout,
        Failed,
        GaveUp,
        MainLost,
        FeedLost,
        RetryTimer,
        Disconnect,
    ]
};

const ANCHORED_CLIENT_STATES: [anchored::ClientState; 8] = {
    use anchored::ClientState::*;
    [
        Idle,
        AwaitAuthRequest,
        AwaitAuthResult,
        AwaitAlert,
        SendingEarlyMap,
        SendingChanges,
        ReceivingChanges,
        SendingMap,
    ]
};
const ANCHORED_CLIENT_TRIGGERS: [anchored::ClientTrigger; 14] = {
    use anchored::ClientTrigger::*;
    [
        Start,
        AuthRequest,
        AnchorRequest,
        Alert,
        MapAck,
        FinalMapAck,
        Statuses,
        FinalStatuses,
        Changes,
        FinalChanges,
        Status,
        Timeout,
        Cut,
        BadInput,
    ]
};

const ANCHORED_SERVER_STATES: [anchored::ServerState; 8] = {
    use anchored::ServerState::*;
    [
        Idle,
        AwaitCredentials,
        AwaitAuthDecision,
        AwaitAnchors,
        ReceivingChanges,
        AwaitConflictDecision,
        SendingChanges,
        AwaitMap,
    ]
};
const ANCHORED_SERVER_TRIGGERS: [anchored::ServerTrigger; 16] = {
    use anchored::ServerTrigger::*;
    [
        Hello,
        Credentials,
        Accept,
        Reject,
        Anchors,
        Map,
        Changes,
        FinalChanges,
        Resolve,
        Statuses,
        FinalStatuses,
        FinalMap,
        Status,
        Timeout,
        Cut,
        BadInput,
    ]
};

/// The state lists above name every state a table mentions (so "every pair" is every one).
#[test]
fn the_state_lists_cover_the_tables() {
    for t in tether::tables::all() {
        let names: Vec<String> = match t.machine {
            "dual::client" => DUAL_CLIENT_STATES
                .iter()
                .map(|s| format!("{s:?}"))
                .collect(),
            "sync::anchored client" => ANCHORED_CLIENT_STATES
                .iter()
                .map(|s| format!("{s:?}"))
                .collect(),
            "sync::anchored server" => ANCHORED_SERVER_STATES
                .iter()
                .map(|s| format!("{s:?}"))
                .collect(),
            _ => continue,
        };
        for s in t.states() {
            assert!(
                names.iter().any(|n| n == s),
                "{}: {s} not listed",
                t.machine
            );
        }
    }
}

proptest! {
    #[test]
    fn dual_client_table(s in 0..DUAL_CLIENT_STATES.len(), i in 0..DUAL_CLIENT_INPUTS.len()) {
        check_pair(dual::CLIENT_TRANSITIONS, &DUAL_CLIENT_STATES, DUAL_CLIENT_STATES[s], DUAL_CLIENT_INPUTS[i])?;
    }

    #[test]
    fn anchored_client_table(s in 0..ANCHORED_CLIENT_STATES.len(), i in 0..ANCHORED_CLIENT_TRIGGERS.len()) {
        check_pair(anchored::CLIENT_TRANSITIONS, &ANCHORED_CLIENT_STATES, ANCHORED_CLIENT_STATES[s], ANCHORED_CLIENT_TRIGGERS[i])?;
    }

    #[test]
    fn anchored_server_table(s in 0..ANCHORED_SERVER_STATES.len(), i in 0..ANCHORED_SERVER_TRIGGERS.len()) {
        check_pair(anchored::SERVER_TRANSITIONS, &ANCHORED_SERVER_STATES, ANCHORED_SERVER_STATES[s], ANCHORED_SERVER_TRIGGERS[i])?;
    }
}

#[test]
fn every_pair_of_every_table() {
    check_all(
        dual::CLIENT_TRANSITIONS,
        &DUAL_CLIENT_STATES,
        &DUAL_CLIENT_INPUTS,
    );
    check_all(
        anchored::CLIENT_TRANSITIONS,
        &ANCHORED_CLIENT_STATES,
        &ANCHORED_CLIENT_TRIGGERS,
    );
    check_all(
        anchored::SERVER_TRANSITIONS,
        &ANCHORED_SERVER_STATES,
        &ANCHORED_SERVER_TRIGGERS,
    );
}

// ---- Helpers. ----

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn token(c: u8) -> Token {
    Token::new(&[c; 16]).unwrap()
}

fn frame(msg: &Message) -> Bytes {
    let mut b = BytesMut::new();
    msg.encode_framed(&mut b);
    b.freeze()
}

/// A length prefix far over any maximum: the stream cannot be read past it.
fn oversized() -> Bytes {
    Bytes::from_static(&[0xff; 8])
}

fn drain<M: Machine>(m: &mut M) {
    while !matches!(m.poll_output(), Output::Wait(_)) {}
}

fn anchored_client() -> anchored::AnchoredClient<MemClientStore> {
    Standalone::new(ClientSession::new(
        anchored::ClientConfig::new(Bytes::from_static(b"palm"), Bytes::from_static(b"pw")),
        MemClientStore::new(),
    ))
}

fn anchored_server() -> anchored::AnchoredServer<MemServerStore> {
    Standalone::new(ServerSession::new(
        anchored::ServerConfig::default(),
        MemServerStore::new(),
    ))
}

/// Every kind of input a driver can feed, on `link`.
fn every_input<C: Clone>(link: Link, cmd: C) -> Vec<Input<C>> {
    vec![
        Input::Opened(link),
        Input::Received(link, Bytes::from_static(b"\0\0\0\x01\x50")),
        Input::Timeout,
        Input::Command(cmd),
        Input::Closed(link),
    ]
}

// ---- 2. Fatal errors are sticky. ----

#[test]
fn journal_machine_framing_error_is_sticky() {
    let mut m = JournalMachine::new(Role::Client, SyncConfig::default(), MemJournal::new(1, 100));
    let link = Link::main(1);
    m.handle_input(t(0), Input::Opened(link)).unwrap();
    let err = m
        .handle_input(t(1), Input::Received(link, oversized()))
        .unwrap_err();
    assert!(matches!(err, SyncError::Frame(_)) && err.is_fatal());
    assert_eq!(err.origin(), Origin::Remote);
    for input in every_input(Link::main(2), tether::sync::journal::SyncCommand::Broadcast) {
        assert_eq!(m.handle_input(t(2), input), Err(err.clone()));
    }
}

#[test]
fn anchored_standalone_framing_error_is_sticky_on_both_sides() {
    let link = Link::main(1);
    let mut c = anchored_client();
    c.handle_input(t(0), Input::Opened(link)).unwrap();
    let err = c
        .handle_input(t(1), Input::Received(link, oversized()))
        .unwrap_err();
    assert!(matches!(err, AnchoredError::Frame(_)) && err.is_fatal());
    assert_eq!(err.origin(), Origin::Remote);
    for input in every_input(Link::main(2), anchored::ClientCommand::Start) {
        assert_eq!(c.handle_input(t(2), input), Err(err.clone()));
    }

    let mut s = anchored_server();
    s.handle_input(t(0), Input::Opened(link)).unwrap();
    let err = s
        .handle_input(t(1), Input::Received(link, oversized()))
        .unwrap_err();
    assert!(err.is_fatal());
    let cmd = anchored::ServerCommand::Authenticate(anchored::AuthDecision::Accept);
    for input in every_input(Link::main(2), cmd) {
        assert_eq!(s.handle_input(t(2), input), Err(err.clone()));
    }
}

#[test]
fn merge_client_end_is_sticky() {
    let mut c =
        merge::MergeClient::new(t(0), merge::MergeClientConfig::default(), token(b'B')).unwrap();
    c.handle_input(t(0), Input::Command(merge::MergeClientCommand::Disconnect))
        .unwrap();
    let err = merge::MergeError::Ended(merge::EndReason::LocalDisconnect);
    assert!(err.is_fatal());
    assert_eq!(err.origin(), Origin::Local);
    let send = merge::MergeClientCommand::Send(Message::App(Bytes::from_static(b"x")));
    for _ in 0..2 {
        for input in every_input(Link::main(2), send.clone()) {
            let r = c.handle_input(t(1), input.clone());
            match input {
                // The echo of the client's own close, and timers, are expected after the
                // end: not errors (the client is ended all the same).
                Input::Closed(_) | Input::Timeout => assert_eq!(r, Ok(())),
                _ => assert_eq!(r, Err(err)),
            }
        }
    }
}

/// R-Type's dual-channel machines and dop's token-merge server have no fatal error: every
/// error they return is the local caller's, and the machine goes on.
#[test]
fn dual_and_merge_server_errors_are_not_fatal() {
    let mut c = dual::DualClient::new(dual::DualClientConfig::default());
    let msg = Message::App(Bytes::from_static(b"x"));
    let err = c
        .handle_input(
            t(0),
            Input::Command(dual::DualClientCommand::SendFeed(msg.clone())),
        )
        .unwrap_err();
    assert_eq!(err.origin(), Origin::Local);
    c.handle_input(t(1), Input::Command(dual::DualClientCommand::Connect))
        .unwrap();
    assert_eq!(c.poll_output(), Output::Open(Channel::Main));

    let mut n = 0u8;
    let mut s = dual::DualServer::new(dual::DualServerConfig::default(), move || {
        n += 1;
        token(n)
    });
    let err = s
        .handle_input(
            t(0),
            Input::Command(dual::DualServerCommand::Send {
                player: 9,
                message: msg,
            }),
        )
        .unwrap_err();
    assert_eq!(err, dual::DualError::UnknownPlayer(9));
    assert_eq!(err.origin(), Origin::Local);
    s.handle_input(t(1), Input::Opened(Link::main(1))).unwrap();

    let mut ms = merge::MergeServer::new(merge::MergeServerConfig::default(), || token(b'A'));
    ms.handle_input(t(0), Input::Opened(Link::main(1))).unwrap();
    let err = ms
        .handle_input(t(0), Input::Opened(Link::main(1)))
        .unwrap_err();
    assert_eq!(err, merge::MergeError::DuplicateLink(1));
    assert_eq!(err.origin(), Origin::Local);
    ms.handle_input(t(1), Input::Opened(Link::main(2))).unwrap();
}

// ---- 3. `now` never goes backwards. ----

/// Feeds `first` at 10 s, then `second` at 1 s; with output queued, `poll_timeout` says the
/// machine's clock, which must still be 10 s.
fn clock_stays<M: Machine>(m: &mut M, first: Input<M::Command>, second: Input<M::Command>)
where
    M::Error: core::fmt::Debug,
{
    let _ = m.handle_input(t(10_000), first);
    assert_eq!(m.poll_timeout(), Some(t(10_000)), "output is queued");
    let _ = m.handle_input(t(1_000), second);
    assert_eq!(m.poll_timeout(), Some(t(10_000)), "the clock went back");
}

#[test]
fn now_going_backwards_does_not_move_any_clock_back() {
    let link = Link::main(1);
    let hello = frame(&Message::Anchored(AnchoredMessage::Hello {
        session: 1,
        client: Bytes::from_static(b"palm"),
    }));

    let mut c =
        merge::MergeClient::new(t(0), merge::MergeClientConfig::default(), token(b'B')).unwrap();
    clock_stays(&mut c, Input::Timeout, Input::Timeout);

    let mut s = merge::MergeServer::new(merge::MergeServerConfig::default(), || token(b'A'));
    clock_stays(&mut s, Input::Opened(link), Input::Opened(Link::main(2)));

    let mut dc = dual::DualClient::new(dual::DualClientConfig::default());
    clock_stays(
        &mut dc,
        Input::Command(dual::DualClientCommand::Connect),
        Input::Timeout,
    );

    let mut n = 0u8;
    let mut ds = dual::DualServer::new(dual::DualServerConfig::default(), move || {
        n += 1;
        token(n)
    });
    ds.handle_input(t(0), Input::Opened(link)).unwrap();
    clock_stays(&mut ds, Input::Received(link, oversized()), Input::Timeout);

    let mut j = JournalMachine::new(Role::Client, SyncConfig::default(), MemJournal::new(1, 100));
    clock_stays(&mut j, Input::Opened(link), Input::Timeout);

    let mut ac = anchored_client();
    ac.handle_input(t(0), Input::Opened(link)).unwrap();
    clock_stays(
        &mut ac,
        Input::Command(anchored::ClientCommand::Start),
        Input::Timeout,
    );

    let mut server = anchored_server();
    server.handle_input(t(0), Input::Opened(link)).unwrap();
    clock_stays(&mut server, Input::Received(link, hello), Input::Timeout);
}

// ---- 4. `is_closed`: exactly once ended. ----

#[test]
fn is_closed_is_true_exactly_after_the_end() {
    // dop's token-merge client: ended by a formal disconnection.
    let mut c =
        merge::MergeClient::new(t(0), merge::MergeClientConfig::default(), token(b'B')).unwrap();
    assert!(!c.is_closed());
    c.handle_input(t(0), Input::Opened(Link::main(1))).unwrap();
    drain(&mut c);
    assert!(!c.is_closed());
    c.handle_input(t(1), Input::Command(merge::MergeClientCommand::Disconnect))
        .unwrap();
    assert!(c.is_closed());

    // R-Type's dual-channel client: closed after a disconnection, open again on Connect.
    let mut dc = dual::DualClient::new(dual::DualClientConfig::default());
    assert!(!dc.is_closed());
    dc.handle_input(t(0), Input::Command(dual::DualClientCommand::Connect))
        .unwrap();
    assert!(!dc.is_closed());
    dc.handle_input(t(1), Input::Command(dual::DualClientCommand::Disconnect))
        .unwrap();
    assert!(dc.is_closed());
    dc.handle_input(t(2), Input::Command(dual::DualClientCommand::Connect))
        .unwrap();
    assert!(!dc.is_closed());

    // Servers serve until dropped.
    let mut s = merge::MergeServer::new(merge::MergeServerConfig::default(), || token(b'A'));
    let mut n = 0u8;
    let mut ds = dual::DualServer::new(dual::DualServerConfig::default(), move || {
        n += 1;
        token(n)
    });
    for input in every_input(Link::main(1), ()) {
        if let Input::Command(()) = input {
            continue;
        }
        let _ = s.handle_input(t(1), map_input(input.clone()));
        let _ = ds.handle_input(t(1), map_input(input));
        assert!(!s.is_closed() && !ds.is_closed());
    }

    // Journal sync and anchored two-way sync over one transport: closed by their fatal
    // framing error only (a closed transport can be replaced).
    let link = Link::main(1);
    let mut j = JournalMachine::new(Role::Server, SyncConfig::default(), MemJournal::new(1, 100));
    j.handle_input(t(0), Input::Opened(link)).unwrap();
    j.handle_input(t(1), Input::Closed(link)).unwrap();
    assert!(!j.is_closed());
    j.handle_input(t(2), Input::Opened(Link::main(2))).unwrap();
    let _ = j.handle_input(t(3), Input::Received(Link::main(2), oversized()));
    assert!(j.is_closed());

    let mut ac = anchored_client();
    ac.handle_input(t(0), Input::Opened(link)).unwrap();
    ac.handle_input(t(1), Input::Closed(link)).unwrap();
    assert!(!ac.is_closed());
    ac.handle_input(t(2), Input::Opened(Link::main(2))).unwrap();
    let _ = ac.handle_input(t(3), Input::Received(Link::main(2), oversized()));
    assert!(ac.is_closed());
}

/// A command-less input, retyped for any machine.
fn map_input<C>(input: Input<()>) -> Input<C> {
    match input {
        Input::Opened(l) => Input::Opened(l),
        Input::Received(l, b) => Input::Received(l, b),
        Input::Closed(l) => Input::Closed(l),
        Input::Timeout | Input::Command(()) => Input::Timeout,
    }
}

// ---- 5. A peer's missing row is told to the peer, and named as the peer's. ----

#[test]
fn an_anchored_message_the_table_has_no_row_for_is_the_peers_fault() {
    let link = Link::main(1);
    let mut s = anchored_server();
    s.handle_input(t(0), Input::Opened(link)).unwrap();
    // ANCHORS before any HELLO: no session, ignored; after HELLO, out of order.
    let hello = frame(&Message::Anchored(AnchoredMessage::Hello {
        session: 1,
        client: Bytes::from_static(b"palm"),
    }));
    s.handle_input(t(1), Input::Received(link, hello)).unwrap();
    let anchors = frame(&Message::Anchored(AnchoredMessage::Anchors {
        session: 1,
        last: 3,
    }));
    let err = s
        .handle_input(t(2), Input::Received(link, anchors))
        .unwrap_err();
    assert_eq!(err.origin(), Origin::Remote);
    assert_eq!(s.core().state(), anchored::ServerState::Idle);
    // A command the state has no row for is the caller's, and the session goes on.
    let hello = frame(&Message::Anchored(AnchoredMessage::Hello {
        session: 2,
        client: Bytes::from_static(b"palm"),
    }));
    s.handle_input(t(3), Input::Received(link, hello)).unwrap();
    let err = s
        .handle_input(
            t(4),
            Input::Command(anchored::ServerCommand::Resolve(anchored::Winner::Client)),
        )
        .unwrap_err();
    assert_eq!(err.origin(), Origin::Local);
    assert_eq!(s.core().state(), anchored::ServerState::AwaitCredentials);
}
