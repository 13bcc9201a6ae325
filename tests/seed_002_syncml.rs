//! Seed 002 (SyncML session), step by step, over the standalone machines and the driver
//! contract: hello, credentials, the application's check, anchors, normal and slow syncs,
//! changes both ways with a status per change, the id map, conflicts, cut sessions, bad input.

use bytes::Bytes;
use proptest::prelude::*;
use tether::sync::anchored::*;
use tether::wire::anchored::status;
use tether::wire::{AnchoredMessage, Change, Message, SyncType};
use tether::{Duration, Input, Instant, Link, Machine, Output};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

struct Pair {
    client: AnchoredClient<MemClientStore>,
    server: AnchoredServer<MemServerStore>,
    now: Instant,
    link: u64,
    auth: AuthDecision,
    ask: Winner,
    wire: Vec<(Side, AnchoredMessage)>,
    client_events: Vec<ClientEvent>,
    server_events: Vec<ServerEvent>,
    conflicts: Vec<(Winner, u64, Option<Bytes>, Option<Bytes>)>,
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

impl Pair {
    fn new(policy: ConflictPolicy) -> Pair {
        let mut cc = ClientConfig::new(b("palm"), b("secret"));
        cc.max_changes_per_message = 3;
        let sc = ServerConfig {
            policy,
            max_changes_per_message: 3,
            ..ServerConfig::default()
        };
        Pair {
            client: Standalone::new(ClientSession::new(cc, MemClientStore::new())),
            server: Standalone::new(ServerSession::new(sc, MemServerStore::new())),
            now: Instant::from_millis(1),
            link: 0,
            auth: AuthDecision::Accept,
            ask: Winner::Client,
            wire: Vec::new(),
            client_events: Vec::new(),
            server_events: Vec::new(),
            conflicts: Vec::new(),
        }
    }

    fn cs(&mut self) -> &mut MemClientStore {
        self.client.core_mut().store_mut()
    }
    fn ss(&mut self) -> &mut MemServerStore {
        self.server.core_mut().store_mut()
    }

    fn check_tables(&self) {
        if let Some(t) = self.client.core().last_transition() {
            assert!(
                CLIENT_TRANSITIONS.contains(&t),
                "client transition {t:?} not in table"
            );
        }
        if let Some(t) = self.server.core().last_transition() {
            assert!(
                SERVER_TRANSITIONS.contains(&t),
                "server transition {t:?} not in table"
            );
        }
    }

    /// Opens a fresh transport on both sides and starts a session; runs it to the end, or
    /// cuts both transports after `cut_after` messages. Returns the messages delivered.
    fn session(&mut self, cut_after: Option<usize>) -> usize {
        self.link += 1;
        let link = Link::main(self.link);
        self.client
            .handle_input(self.now, Input::Opened(link))
            .unwrap();
        self.server
            .handle_input(self.now, Input::Opened(link))
            .unwrap();
        self.client
            .handle_input(self.now, Input::Command(ClientCommand::Start))
            .unwrap();
        self.check_tables();
        let mut delivered = 0;
        loop {
            let mut progress = false;
            while let Some(out) = next_output(&mut self.client) {
                progress = true;
                match out {
                    Output::Transmit(t) => {
                        if cut_after.is_some_and(|n| delivered >= n) {
                            continue;
                        }
                        delivered += 1;
                        self.wire.push((Side::Client, decode(&t.payload)));
                        self.server
                            .handle_input(self.now, Input::Received(link, t.payload))
                            .unwrap();
                        self.check_tables();
                    }
                    Output::Event(e) => self.client_events.push(e),
                    _ => {}
                }
            }
            while let Some(out) = next_output(&mut self.server) {
                progress = true;
                match out {
                    Output::Transmit(t) => {
                        if cut_after.is_some_and(|n| delivered >= n) {
                            continue;
                        }
                        delivered += 1;
                        self.wire.push((Side::Server, decode(&t.payload)));
                        self.client
                            .handle_input(self.now, Input::Received(link, t.payload))
                            .unwrap();
                        self.check_tables();
                    }
                    Output::Event(e) => {
                        let cmd = match &e {
                            ServerEvent::Credentials { .. } => {
                                Some(ServerCommand::Authenticate(self.auth))
                            }
                            ServerEvent::Conflict { .. } => Some(ServerCommand::Resolve(self.ask)),
                            ServerEvent::ConflictResolved {
                                guid,
                                winner,
                                client_data,
                                server_data,
                                ..
                            } => {
                                // The outcome is the winner's version, on the server at once.
                                let kept = match winner {
                                    Winner::Client => client_data.clone(),
                                    Winner::Server => server_data.clone(),
                                };
                                assert_eq!(
                                    self.server.core().store().records().get(guid),
                                    kept.as_ref()
                                );
                                self.conflicts.push((
                                    *winner,
                                    *guid,
                                    client_data.clone(),
                                    server_data.clone(),
                                ));
                                None
                            }
                            _ => None,
                        };
                        self.server_events.push(e);
                        if let Some(cmd) = cmd {
                            if cut_after.map_or(true, |n| delivered < n) {
                                self.server
                                    .handle_input(self.now, Input::Command(cmd))
                                    .unwrap();
                                self.check_tables();
                            }
                        }
                    }
                    _ => {}
                }
            }
            if !progress {
                break;
            }
        }
        if cut_after.is_some() {
            self.client
                .handle_input(self.now, Input::Closed(link))
                .unwrap();
            self.server
                .handle_input(self.now, Input::Closed(link))
                .unwrap();
            self.check_tables();
            while let Some(o) = next_output(&mut self.client) {
                if let Output::Event(e) = o {
                    self.client_events.push(e);
                }
            }
            while let Some(o) = next_output(&mut self.server) {
                if let Output::Event(e) = o {
                    self.server_events.push(e);
                }
            }
        }
        assert_eq!(self.client.core().state(), ClientState::Idle);
        assert_eq!(self.server.core().state(), ServerState::Idle);
        delivered
    }

    fn codes(&self) -> Vec<(Side, u8)> {
        self.wire.iter().map(|(s, m)| (*s, m.code())).collect()
    }

    /// The client's records, mapped to the server's ids through the server's id map.
    fn assert_converged(&self) {
        let cs = self.client.core().store();
        let ss = self.server.core().store();
        assert_eq!(
            cs.records().len(),
            ss.records().len(),
            "record counts differ"
        );
        for (luid, data) in cs.records() {
            let guid = ss
                .guid_for(b"palm", *luid)
                .unwrap_or_else(|| panic!("client record {luid} unmapped"));
            assert_eq!(
                ss.records().get(&guid),
                Some(data),
                "record {luid} -> {guid}"
            );
        }
        assert!(
            cs.dirty().is_empty(),
            "client changes left: {:?}",
            cs.dirty()
        );
        assert!(ss.dirty(b"palm").is_empty(), "server changes left");
    }

    fn last_client_event(&self) -> &ClientEvent {
        self.client_events.last().unwrap()
    }
}

fn next_output<M: Machine>(m: &mut M) -> Option<Output<M::Event>> {
    match m.poll_output() {
        Output::Wait(_) => None,
        o => Some(o),
    }
}

fn decode(frame: &Bytes) -> AnchoredMessage {
    match Message::decode(frame.slice(4..)).unwrap() {
        Message::Anchored(m) => m,
        other => panic!("not anchored: {other:?}"),
    }
}

use tether::wire::anchored::{
    ALERT, ANCHORS, ANCHOR_REQ, AUTH_REQ, CHANGES, CREDENTIALS, HELLO, MAP, MAP_ACK, STATUS,
    STATUSES,
};
use Side::{Client as C, Server as S};

#[test]
fn step_1_to_8_unknown_client_goes_straight_to_slow_sync() {
    let mut p = Pair::new(ConflictPolicy::ServerWins);
    p.cs().insert(b("alice"));
    p.ss().insert(b("bob"));
    p.session(None);
    // hello, ask credentials, credentials, (app check), slow-sync alert without anchors...
    assert_eq!(
        &p.codes()[..4],
        &[(C, HELLO), (S, AUTH_REQ), (C, CREDENTIALS), (S, ALERT)]
    );
    assert!(matches!(
        p.wire[3].1,
        AnchoredMessage::Alert {
            sync: SyncType::Slow,
            ..
        }
    ));
    // ...the client sends all its data, the server acknowledges and sends its own, the
    // client acknowledges and sends its map, the server acknowledges the map.
    assert_eq!(
        &p.codes()[4..],
        &[
            (C, CHANGES),
            (S, STATUSES),
            (S, CHANGES),
            (C, STATUSES),
            (C, MAP),
            (S, MAP_ACK)
        ]
    );
    assert!(matches!(
        p.server_events[0],
        ServerEvent::Credentials { ref credentials, .. } if credentials == "secret"
    ));
    assert!(matches!(
        p.last_client_event(),
        ClientEvent::Completed {
            sync: SyncType::Slow,
            sent: 1,
            received: 1,
            ..
        }
    ));
    p.assert_converged();
    // Both stored the same Next as Last.
    let last = p.client.core().store().last_anchor();
    assert_ne!(last, 0);
    assert_eq!(p.server.core().store().anchor(b"palm"), Some(last));
}

#[test]
fn wrong_password_gets_no_auth_401_and_missing_gets_407() {
    for (decision, code) in [(AuthDecision::Invalid, 401), (AuthDecision::Missing, 407)] {
        let mut p = Pair::new(ConflictPolicy::ServerWins);
        p.cs().insert(b("alice"));
        p.auth = decision;
        p.session(None);
        assert_eq!(
            p.codes(),
            vec![(C, HELLO), (S, AUTH_REQ), (C, CREDENTIALS), (S, STATUS)]
        );
        assert!(matches!(p.wire[3].1, AnchoredMessage::Status { code: c, .. } if c == code));
        assert!(
            matches!(p.last_client_event(), ClientEvent::AuthFailed { code: c, .. } if *c == code)
        );
        assert!(
            matches!(p.server_events.last(), Some(ServerEvent::AuthFailed { code: c, .. }) if *c == code)
        );
        // Nothing moved.
        assert!(p.server.core().store().records().is_empty());
        assert_eq!(p.client.core().store().last_anchor(), 0);
        assert_eq!(p.client.core().store().dirty().len(), 1);
    }
}

#[test]
fn known_client_with_matching_anchors_gets_a_normal_sync_of_changes_only() {
    let mut p = Pair::new(ConflictPolicy::ServerWins);
    let a = p.cs().insert(b("a"));
    let bb = p.cs().insert(b("b"));
    let c = p.cs().insert(b("c"));
    p.session(None);
    p.wire.clear();
    // Since the last sync: one added, one replaced, one deleted on the client.
    let d = p.cs().insert(b("d"));
    p.cs().replace(a, b("a2"));
    p.cs().delete(bb);
    p.session(None);
    assert_eq!(
        &p.codes()[..6],
        &[
            (C, HELLO),
            (S, AUTH_REQ),
            (C, CREDENTIALS),
            (S, ANCHOR_REQ),
            (C, ANCHORS),
            (S, ALERT)
        ]
    );
    assert!(matches!(
        p.wire[5].1,
        AnchoredMessage::Alert {
            sync: SyncType::TwoWay,
            ..
        }
    ));
    let AnchoredMessage::Changes { changes, .. } = &p.wire[6].1 else {
        panic!("expected changes, got {:?}", p.wire[6]);
    };
    // Each marked as such; the unchanged record is not sent.
    assert_eq!(
        changes,
        &vec![
            Change::Replace {
                id: a,
                data: b("a2")
            },
            Change::Delete { id: bb },
            Change::Add {
                id: d,
                data: b("d")
            },
        ]
    );
    assert!(!changes.iter().any(|ch| ch.id() == c));
    // A status per change: replaced, deleted, added.
    assert!(matches!(
        &p.wire[7].1,
        AnchoredMessage::Statuses { codes, .. } if codes == &vec![200, 200, 201]
    ));
    p.assert_converged();
}

#[test]
fn mismatched_anchors_give_a_slow_sync() {
    let mut p = Pair::new(ConflictPolicy::ServerWins);
    p.cs().insert(b("a"));
    p.session(None);
    p.cs().forget_anchor();
    p.wire.clear();
    p.session(None);
    assert!(matches!(
        p.wire[4].1,
        AnchoredMessage::Anchors { last: 0, .. }
    ));
    assert!(matches!(
        p.wire[5].1,
        AnchoredMessage::Alert {
            sync: SyncType::Slow,
            ..
        }
    ));
    p.assert_converged();
    assert_eq!(
        p.server.core().store().records().len(),
        1,
        "a slow sync duplicates nothing"
    );
}

#[test]
fn server_changes_go_to_the_client_which_maps_its_ids() {
    let mut p = Pair::new(ConflictPolicy::ServerWins);
    p.session(None);
    for i in 0..7 {
        p.ss().insert(b(&format!("s{i}")));
    }
    p.wire.clear();
    p.session(None);
    // Seven adds in chunks of three, each chunk acknowledged, then a map of seven entries.
    let server_chunks: Vec<_> = p
        .wire
        .iter()
        .filter(|(s, m)| *s == S && m.code() == CHANGES)
        .collect();
    assert_eq!(server_chunks.len(), 3);
    let maps: usize = p
        .wire
        .iter()
        .filter_map(|(_, m)| match m {
            AnchoredMessage::Map { entries, .. } => Some(entries.len()),
            _ => None,
        })
        .sum();
    assert_eq!(maps, 7);
    p.assert_converged();
    // The server's replace then reaches the client under the client's id.
    let guid = *p.server.core().store().records().keys().next().unwrap();
    p.ss().replace(guid, b("new"));
    p.session(None);
    p.assert_converged();
}

fn conflict_pair(policy: ConflictPolicy) -> (Pair, u64, u64) {
    let mut p = Pair::new(policy);
    let luid = p.cs().insert(b("v1"));
    p.session(None);
    let guid = p.server.core().store().guid_for(b"palm", luid).unwrap();
    (p, luid, guid)
}

#[test]
fn conflict_server_wins_by_default() {
    let (mut p, luid, guid) = conflict_pair(ConflictPolicy::default());
    p.cs().replace(luid, b("client"));
    p.ss().replace(guid, b("server"));
    p.session(None);
    assert_eq!(
        p.conflicts,
        vec![(Winner::Server, guid, Some(b("client")), Some(b("server")))]
    );
    assert_eq!(p.client.core().store().get(luid), Some(b("server")));
    assert!(p.wire.iter().any(|(_, m)| matches!(m, AnchoredMessage::Statuses { codes, .. } if codes.contains(&status::CONFLICT_SERVER_WON))));
    p.assert_converged();
}

#[test]
fn conflict_client_wins_when_configured() {
    let (mut p, luid, guid) = conflict_pair(ConflictPolicy::ClientWins);
    p.cs().replace(luid, b("client"));
    p.ss().replace(guid, b("server"));
    p.session(None);
    assert_eq!(p.conflicts[0].0, Winner::Client);
    assert_eq!(p.server.core().store().get(guid), Some(b("client")));
    p.assert_converged();
}

#[test]
fn conflict_decided_by_the_application_through_an_event_and_a_command() {
    for ask in [Winner::Client, Winner::Server] {
        let (mut p, luid, guid) = conflict_pair(ConflictPolicy::Ask);
        p.ask = ask;
        p.cs().replace(luid, b("client"));
        p.ss().replace(guid, b("server"));
        p.session(None);
        assert!(p
            .server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Conflict { guid: g, .. } if *g == guid)));
        assert_eq!(p.conflicts[0].0, ask);
        let want = if ask == Winner::Client {
            "client"
        } else {
            "server"
        };
        assert_eq!(p.client.core().store().get(luid), Some(b(want)));
        p.assert_converged();
    }
}

#[test]
fn deletion_against_edit_both_ways_and_both_policies() {
    for policy in [ConflictPolicy::ServerWins, ConflictPolicy::ClientWins] {
        // Client deletes, server edits.
        let (mut p, luid, guid) = conflict_pair(policy);
        p.cs().delete(luid);
        p.ss().replace(guid, b("server"));
        p.session(None);
        assert_eq!(p.conflicts.len(), 1);
        let records: Vec<_> = p
            .client
            .core()
            .store()
            .records()
            .values()
            .cloned()
            .collect();
        match policy {
            ConflictPolicy::ServerWins => assert_eq!(records, vec![b("server")]),
            _ => assert!(records.is_empty()),
        }
        p.assert_converged();

        // Client edits, server deletes.
        let (mut p, luid, guid) = conflict_pair(policy);
        p.cs().replace(luid, b("client"));
        p.ss().delete(guid);
        p.session(None);
        assert_eq!(p.conflicts.len(), 1);
        let records: Vec<_> = p
            .client
            .core()
            .store()
            .records()
            .values()
            .cloned()
            .collect();
        match policy {
            ConflictPolicy::ServerWins => assert!(records.is_empty()),
            _ => assert_eq!(records, vec![b("client")]),
        }
        p.assert_converged();
    }
}

#[test]
fn both_deleted_is_no_conflict() {
    let (mut p, luid, guid) = conflict_pair(ConflictPolicy::ServerWins);
    p.cs().delete(luid);
    p.ss().delete(guid);
    p.session(None);
    assert!(p.conflicts.is_empty());
    p.assert_converged();
}

#[test]
fn a_session_cut_anywhere_leaves_anchors_and_the_next_one_converges() {
    // Measure a full session's length, then cut at every point.
    let setup = |p: &mut Pair| {
        let a = p.cs().insert(b("a"));
        p.ss().insert(b("s"));
        p.session(None);
        p.cs().replace(a, b("a2"));
        p.cs().insert(b("c1"));
        for i in 0..4 {
            p.ss().insert(b(&format!("s{i}")));
        }
    };
    let mut p = Pair::new(ConflictPolicy::ServerWins);
    setup(&mut p);
    let full = p.session(None);
    assert!(full > 10);
    for cut in 0..full {
        let mut p = Pair::new(ConflictPolicy::ServerWins);
        setup(&mut p);
        let before = (
            p.client.core().store().last_anchor(),
            p.server.core().store().anchor(b"palm"),
        );
        p.session(Some(cut));
        let after = (
            p.client.core().store().last_anchor(),
            p.server.core().store().anchor(b"palm"),
        );
        if cut < full - 1 {
            // Not completed: nobody moved an anchor.
            assert_eq!(before, after, "cut after {cut}");
            assert!(
                matches!(
                    p.last_client_event(),
                    ClientEvent::Aborted {
                        reason: AbortReason::Cut,
                        ..
                    }
                ),
                "cut after {cut}: {:?}",
                p.client_events
            );
        } else {
            // Only the final MAP_ACK was lost: the server moved, the client did not, so
            // the next session is slow, never silently wrong.
            assert_ne!(after.0, after.1.unwrap());
        }
        p.wire.clear();
        p.session(None);
        if cut == full - 1 {
            assert!(matches!(
                p.wire[5].1,
                AnchoredMessage::Alert {
                    sync: SyncType::Slow,
                    ..
                }
            ));
        }
        p.assert_converged();
        assert_eq!(
            p.server.core().store().records().len(),
            7,
            "cut after {cut}"
        );
    }
}

fn raw_frame(payload: &[u8]) -> Bytes {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// Drives a server to the point where it waits for the client's changes; returns the
/// session id.
fn server_awaiting_changes(server: &mut AnchoredServer<MemServerStore>, link: Link) -> u32 {
    let now = Instant::from_millis(1);
    server.handle_input(now, Input::Opened(link)).unwrap();
    let hello = Message::Anchored(AnchoredMessage::Hello {
        session: 9,
        client: b("x"),
    });
    server
        .handle_input(now, Input::Received(link, raw_frame(&hello.to_bytes())))
        .unwrap();
    let creds = Message::Anchored(AnchoredMessage::Credentials {
        session: 9,
        credentials: b("pw"),
    });
    server
        .handle_input(now, Input::Received(link, raw_frame(&creds.to_bytes())))
        .unwrap();
    server
        .handle_input(
            now,
            Input::Command(ServerCommand::Authenticate(AuthDecision::Accept)),
        )
        .unwrap();
    assert_eq!(server.core().state(), ServerState::ReceivingChanges);
    while next_output(server).is_some() {}
    9
}

fn sent_statuses(server: &mut AnchoredServer<MemServerStore>) -> Vec<u16> {
    let mut v = Vec::new();
    while let Some(o) = next_output(server) {
        if let Output::Transmit(t) = o {
            if let AnchoredMessage::Status { code, .. } = decode(&t.payload) {
                v.push(code);
            }
        }
    }
    v
}

#[test]
fn bad_input_out_of_order_unknown_kind_and_unsent_status_get_400() {
    let link = Link::main(1);
    let now = Instant::from_millis(2);
    let new_server = || {
        Standalone::new(ServerSession::new(
            ServerConfig::default(),
            MemServerStore::new(),
        ))
    };

    // A message out of order: a map ack where changes are expected.
    let mut server = new_server();
    let s = server_awaiting_changes(&mut server, link);
    let m = Message::Anchored(AnchoredMessage::MapAck {
        session: s,
        last_chunk: true,
    });
    let err = server
        .handle_input(now, Input::Received(link, raw_frame(&m.to_bytes())))
        .unwrap_err();
    assert!(matches!(
        err,
        AnchoredError::Unexpected { code: MAP_ACK, .. }
    ));
    assert_eq!(sent_statuses(&mut server), vec![400]);
    assert_eq!(server.core().state(), ServerState::Idle);

    // An unknown change kind (9).
    let mut server = new_server();
    let s = server_awaiting_changes(&mut server, link);
    let mut body = vec![CHANGES];
    body.extend_from_slice(&s.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0, 1]);
    let err = server
        .handle_input(now, Input::Received(link, raw_frame(&body)))
        .unwrap_err();
    assert!(matches!(err, AnchoredError::Malformed(_)));
    assert_eq!(sent_statuses(&mut server), vec![400]);

    // A status for a change never sent (the client acknowledges server changes first).
    let mut server = new_server();
    let s = server_awaiting_changes(&mut server, link);
    let m = Message::Anchored(AnchoredMessage::Statuses {
        session: s,
        first: 5,
        codes: vec![200],
    });
    let err = server
        .handle_input(now, Input::Received(link, raw_frame(&m.to_bytes())))
        .unwrap_err();
    assert!(matches!(
        err,
        AnchoredError::Unexpected { code: STATUSES, .. }
    ));
    assert_eq!(sent_statuses(&mut server), vec![400]);

    // The client: statuses for changes it never sent.
    let mut client = Standalone::new(ClientSession::new(
        ClientConfig::new(b("c"), b("pw")),
        MemClientStore::new(),
    ));
    client.handle_input(now, Input::Opened(link)).unwrap();
    client
        .handle_input(now, Input::Command(ClientCommand::Start))
        .unwrap();
    let s = client.core().session_id().unwrap();
    for m in [
        AnchoredMessage::AuthRequest { session: s },
        AnchoredMessage::Alert {
            session: s,
            sync: SyncType::Slow,
            next: 1,
        },
    ] {
        client
            .handle_input(
                now,
                Input::Received(link, raw_frame(&Message::Anchored(m).to_bytes())),
            )
            .unwrap();
    }
    assert_eq!(client.core().state(), ClientState::SendingChanges);
    while next_output(&mut client).is_some() {}
    let m = Message::Anchored(AnchoredMessage::Statuses {
        session: s,
        first: 0,
        codes: vec![200, 200],
    });
    let err = client
        .handle_input(now, Input::Received(link, raw_frame(&m.to_bytes())))
        .unwrap_err();
    assert!(matches!(
        err,
        AnchoredError::UnknownStatus { first: 0, count: 2 }
    ));
    let mut codes = Vec::new();
    while let Some(o) = next_output(&mut client) {
        match o {
            Output::Transmit(t) => codes.push(decode(&t.payload)),
            Output::Event(e) => assert!(matches!(
                e,
                ClientEvent::Aborted {
                    reason: AbortReason::BadInput,
                    ..
                }
            )),
            _ => {}
        }
    }
    assert_eq!(
        codes,
        vec![AnchoredMessage::Status {
            session: s,
            code: 400
        }]
    );
}

#[test]
fn a_message_of_an_abandoned_session_is_ignored() {
    let link = Link::main(1);
    let mut server = Standalone::new(ServerSession::new(
        ServerConfig::default(),
        MemServerStore::new(),
    ));
    let s = server_awaiting_changes(&mut server, link);
    let stale = Message::Anchored(AnchoredMessage::Changes {
        session: s + 1,
        first: 0,
        last_chunk: true,
        changes: vec![Change::Add {
            id: 1,
            data: b("x"),
        }],
    });
    server
        .handle_input(
            Instant::from_millis(3),
            Input::Received(link, raw_frame(&stale.to_bytes())),
        )
        .unwrap();
    assert_eq!(server.core().ignored(), 1);
    assert_eq!(server.core().state(), ServerState::ReceivingChanges);
    assert!(server.core().store().records().is_empty());
}

#[test]
fn a_stalled_session_times_out_with_408() {
    let link = Link::main(1);
    let mut server = Standalone::new(ServerSession::new(
        ServerConfig::default(),
        MemServerStore::new(),
    ));
    server_awaiting_changes(&mut server, link);
    let deadline = server.poll_timeout().unwrap();
    assert_eq!(deadline, Instant::from_millis(1) + Duration::from_secs(60));
    // Early timeouts are harmless.
    server
        .handle_input(Instant::from_millis(5), Input::Timeout)
        .unwrap();
    assert_eq!(server.core().state(), ServerState::ReceivingChanges);
    server.handle_input(deadline, Input::Timeout).unwrap();
    assert_eq!(sent_statuses(&mut server), vec![408]);
    assert_eq!(server.core().state(), ServerState::Idle);
    assert_eq!(server.poll_timeout(), None);
}

#[test]
fn oversized_frame_closes_the_link_with_a_typed_error() {
    let link = Link::main(1);
    let mut server = Standalone::with_max_frame(
        ServerSession::new(ServerConfig::default(), MemServerStore::new()),
        64,
    );
    server_awaiting_changes(&mut server, link);
    let err = server
        .handle_input(
            Instant::from_millis(4),
            Input::Received(link, Bytes::from_static(&[0xff; 8])),
        )
        .unwrap_err();
    // The stream cannot be read past a bad length: fatal (the framing error of the
    // standalone machine, as the journal machine's), and sticky.
    assert!(matches!(err, AnchoredError::Frame(_)));
    assert!(err.is_fatal());
    let outs: Vec<_> = std::iter::from_fn(|| next_output(&mut server)).collect();
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Close(l) if *l == link)));
    assert_eq!(server.link(), None);
    assert!(server.is_closed());
    let again = server.handle_input(Instant::from_millis(5), Input::Opened(Link::main(2)));
    assert_eq!(again, Err(err));
}

#[derive(Debug, Clone)]
enum Op {
    ClientAdd(u8),
    ClientReplace(u8, u8),
    ClientDelete(u8),
    ServerAdd(u8),
    ServerReplace(u8, u8),
    ServerDelete(u8),
    Session(Option<u8>),
    ForgetClientAnchor,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u8>().prop_map(Op::ClientAdd),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::ClientReplace(a, b)),
        2 => any::<u8>().prop_map(Op::ClientDelete),
        3 => any::<u8>().prop_map(Op::ServerAdd),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::ServerReplace(a, b)),
        2 => any::<u8>().prop_map(Op::ServerDelete),
        4 => proptest::option::of(any::<u8>()).prop_map(Op::Session),
        1 => Just(Op::ForgetClientAnchor),
    ]
}

fn pick(keys: Vec<u64>, i: u8) -> Option<u64> {
    if keys.is_empty() {
        None
    } else {
        Some(keys[usize::from(i) % keys.len()])
    }
}

fn run_ops(policy: ConflictPolicy, ask: Winner, ops: Vec<Op>) -> Pair {
    let mut p = Pair::new(policy);
    p.ask = ask;
    for (n, op) in ops.into_iter().enumerate() {
        let v = |x: u8| b(&format!("v{n}-{x}"));
        match op {
            Op::ClientAdd(x) => {
                p.cs().insert(v(x));
            }
            Op::ClientReplace(i, x) => {
                if let Some(k) = pick(
                    p.client.core().store().records().keys().copied().collect(),
                    i,
                ) {
                    p.cs().replace(k, v(x));
                }
            }
            Op::ClientDelete(i) => {
                if let Some(k) = pick(
                    p.client.core().store().records().keys().copied().collect(),
                    i,
                ) {
                    p.cs().delete(k);
                }
            }
            Op::ServerAdd(x) => {
                p.ss().insert(v(x));
            }
            Op::ServerReplace(i, x) => {
                if let Some(k) = pick(
                    p.server.core().store().records().keys().copied().collect(),
                    i,
                ) {
                    p.ss().replace(k, v(x));
                }
            }
            Op::ServerDelete(i) => {
                if let Some(k) = pick(
                    p.server.core().store().records().keys().copied().collect(),
                    i,
                ) {
                    p.ss().delete(k);
                }
            }
            Op::Session(cut) => {
                p.session(cut.map(|c| usize::from(c) % 24));
            }
            Op::ForgetClientAnchor => p.cs().forget_anchor(),
        }
    }
    p
}

#[test]
fn regression_cut_after_local_delete_and_replace() {
    use Op::*;
    let ops = vec![
        ServerReplace(0, 0),
        ClientAdd(0),
        ServerAdd(0),
        Session(None),
        ServerAdd(0),
        ServerAdd(0),
        Session(None),
        ClientAdd(0),
        ClientDelete(0),
        ClientReplace(0, 0),
        ClientAdd(0),
        Session(Some(9)),
        ClientDelete(89),
    ];
    let mut p = run_ops(ConflictPolicy::ServerWins, Winner::Server, ops);
    p.wire.clear();
    p.session(None);
    p.assert_converged();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Random edits on both sides, sessions cut at random message counts, then a final
    /// uninterrupted session: both sides hold the same records, and every conflict was
    /// resolved by the configured policy.
    #[test]
    fn repeated_sessions_after_interruptions_converge(
        ops in proptest::collection::vec(op(), 0..40),
        policy in prop_oneof![Just(ConflictPolicy::ServerWins), Just(ConflictPolicy::ClientWins), Just(ConflictPolicy::Ask)],
        ask_client in any::<bool>(),
    ) {
        let mut p = run_ops(policy, if ask_client { Winner::Client } else { Winner::Server }, ops);
        p.session(None);
        let done = matches!(p.last_client_event(), ClientEvent::Completed { .. });
        prop_assert!(done, "final session did not complete");
        p.assert_converged();
        let expected = match policy {
            ConflictPolicy::ServerWins => Winner::Server,
            ConflictPolicy::ClientWins => Winner::Client,
            ConflictPolicy::Ask => p.ask,
        };
        for (winner, ..) in &p.conflicts {
            prop_assert_eq!(*winner, expected);
        }
        // A second session right after has nothing to do.
        p.wire.clear();
        p.session(None);
        let idle = matches!(p.last_client_event(), ClientEvent::Completed { sync: SyncType::TwoWay, sent: 0, received: 0, .. });
        prop_assert!(idle, "a second session still had work: {:?}", p.last_client_event());
    }
}
