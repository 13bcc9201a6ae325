//! Session snapshots: the codec (round trip, any bytes, tampering), handover of a session
//! to another server in the simulator (token-merge and dual-channel, exported CONNECTED or
//! RECONNECTING), restored state equal to the original, and refused imports.
#![cfg(feature = "testkit")]

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use tether::connect::dual::{self, DualClient, DualServer, PlayerState};
use tether::connect::merge::{self, MergeClient, MergeServer, Status};
use tether::peer::{Peer, PeerCommand, PeerEvent, PeerSnapshot};
use tether::snapshot::{crc32, ImportError, SnapshotError, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use tether::sync::journal::{Marks, MemJournal, SyncConfig, SyncEvent};
use tether::testkit::{Either, Faults, NodeId, Pair, SeqTokens, Side, Sim};
use tether::wire::{LineId, Message};
use tether::{Channel, Duration, Input, Instant, Link, Machine, Token};

// ---------------------------------------------------------------------------------------
// Generators

fn token_strategy() -> impl Strategy<Value = Token> {
    prop::collection::vec(any::<u8>(), 1..=64).prop_map(|b| Token::new(&b).unwrap())
}

fn secure_token() -> impl Strategy<Value = Token> {
    prop::collection::vec(any::<u8>(), 16..=32).prop_map(|b| Token::new(&b).unwrap())
}

/// Messages from proptest's bytes through `Arbitrary` (as the wire tests and fuzzers).
fn queue_strategy(max: usize) -> impl Strategy<Value = Vec<Message>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 0..max).prop_map(|seeds| {
        seeds
            .iter()
            .filter_map(|s| Message::arbitrary(&mut Unstructured::new(s)).ok())
            .collect()
    })
}

fn opt_duration() -> impl Strategy<Value = Option<Duration>> {
    prop::option::of(any::<u64>().prop_map(Duration::from_micros))
}

fn marks_strategy() -> impl Strategy<Value = Marks> {
    let line = prop::option::of(
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(epoch, seq, check)| LineId {
            epoch,
            seq,
            check,
        }),
    );
    (line.clone(), line.clone(), line).prop_map(|(ours, theirs, held)| Marks { ours, theirs, held })
}

fn merge_session_strategy() -> impl Strategy<Value = merge::MergeSessionSnapshot> {
    (
        prop::bool::ANY,
        token_strategy(),
        prop::option::of(token_strategy()),
        token_strategy(),
        prop::option::of((token_strategy(), any::<(u32, u32, bool)>()).prop_map(
            |(key, (oldest, next, merged_resumes))| merge::MergeSecrets {
                key,
                oldest,
                next,
                merged_resumes,
            },
        )),
        queue_strategy(6),
        opt_duration(),
        any::<(u64, u64)>(),
    )
        .prop_map(
            |(c, local, remote, merged, secrets, queue, expires_in, (acked, received))| {
                merge::MergeSessionSnapshot {
                    status: if c {
                        Status::Connected
                    } else {
                        Status::Reconnecting
                    },
                    local,
                    remote,
                    merged,
                    secrets,
                    queue,
                    acked,
                    received,
                    expires_in,
                }
            },
        )
}

fn merge_client_strategy() -> impl Strategy<Value = merge::MergeClientSnapshot> {
    merge_session_strategy().prop_map(|s| merge::MergeClientSnapshot {
        status: s.status,
        local: s.local,
        remote: s.remote,
        merged: s.merged,
        secret: s.secrets.map_or(s.merged, |k| k.key),
        queue: s.queue,
        acked: s.acked,
        received: s.received,
        give_up_in: s.expires_in,
    })
}

fn player_strategy() -> impl Strategy<Value = dual::PlayerSnapshot> {
    (
        any::<u16>(),
        prop::bool::ANY,
        token_strategy(),
        token_strategy(),
        token_strategy(),
        queue_strategy(6),
        opt_duration(),
        any::<u64>(),
        prop::option::of(any::<u64>()),
        any::<(u64, u64)>(),
    )
        .prop_map(
            |(
                player,
                c,
                token_a,
                token_b,
                secret,
                queue,
                expires_in,
                next,
                newest,
                (acked, received),
            )| {
                dual::PlayerSnapshot {
                    player,
                    state: if c {
                        PlayerState::Connected
                    } else {
                        PlayerState::MainLost
                    },
                    token_a,
                    token_b,
                    secret,
                    queue,
                    acked,
                    received,
                    expires_in,
                    feed_next_seq: next,
                    feed_newest: newest,
                }
            },
        )
}

fn dual_client_strategy() -> impl Strategy<Value = dual::DualClientSnapshot> {
    (player_strategy(), any::<u32>()).prop_map(|(p, attempt)| dual::DualClientSnapshot {
        player: p.player,
        state: if p.state == PlayerState::Connected {
            dual::DualClientState::Connected
        } else {
            dual::DualClientState::ReopeningMain
        },
        token_a: p.token_a,
        token_b: p.token_b,
        secret: p.secret,
        queue: p.queue,
        acked: p.acked,
        received: p.received,
        feed_attempt: attempt,
        feed_next_seq: p.feed_next_seq,
        feed_newest: p.feed_newest,
    })
}

/// Encode, decode (identity), then every truncation and every one-byte change is refused.
fn codec_laws<T: std::fmt::Debug + PartialEq>(
    snap: &T,
    encode: impl Fn(&T, &mut BytesMut),
    decode: impl Fn(Bytes) -> Result<T, SnapshotError>,
    flip_at: usize,
    flip: u8,
) {
    let mut buf = BytesMut::new();
    encode(snap, &mut buf);
    let bytes = buf.freeze();
    assert_eq!(&bytes[..4], &SNAPSHOT_MAGIC);
    assert_eq!(bytes[4], SNAPSHOT_VERSION);
    assert_eq!(decode(bytes.clone()).as_ref(), Ok(snap));
    let cut = flip_at % bytes.len();
    assert!(decode(bytes.slice(..cut)).is_err(), "truncated at {cut}");
    let mut tampered = bytes.to_vec();
    tampered[cut] ^= flip.max(1);
    assert!(decode(Bytes::from(tampered)).is_err(), "byte {cut} changed");
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(decode(Bytes::from(longer)).is_err(), "a byte appended");
}

/// A well-formed header and checksum around an arbitrary body: the body parser must give a
/// typed error or a snapshot, never panic.
fn framed(kind: u8, body: &[u8]) -> Bytes {
    let mut v = Vec::new();
    v.extend_from_slice(&SNAPSHOT_MAGIC);
    v.push(SNAPSHOT_VERSION);
    v.push(kind);
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    let crc = crc32(&v);
    v.extend_from_slice(&crc.to_be_bytes());
    Bytes::from(v)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_session_snapshots_round_trip(s in merge_session_strategy(), at in any::<usize>(), f in any::<u8>()) {
        codec_laws(&s, |s, b| s.encode(b), merge::MergeSessionSnapshot::decode, at, f);
    }

    #[test]
    fn merge_client_snapshots_round_trip(s in merge_client_strategy(), at in any::<usize>(), f in any::<u8>()) {
        codec_laws(&s, |s, b| s.encode(b), merge::MergeClientSnapshot::decode, at, f);
    }

    #[test]
    fn dual_player_snapshots_round_trip(s in player_strategy(), at in any::<usize>(), f in any::<u8>()) {
        codec_laws(&s, |s, b| s.encode(b), dual::PlayerSnapshot::decode, at, f);
    }

    #[test]
    fn dual_client_snapshots_round_trip(s in dual_client_strategy(), at in any::<usize>(), f in any::<u8>()) {
        codec_laws(&s, |s, b| s.encode(b), dual::DualClientSnapshot::decode, at, f);
    }

    #[test]
    fn peer_snapshots_round_trip(c in merge_session_strategy(), p in player_strategy(), marks in marks_strategy(), at in any::<usize>(), f in any::<u8>()) {
        let s = PeerSnapshot { connection: c, marks };
        codec_laws(&s, |s, b| s.encode(b), PeerSnapshot::<merge::MergeSessionSnapshot>::decode, at, f);
        let s = PeerSnapshot { connection: p, marks };
        codec_laws(&s, |s, b| s.encode(b), PeerSnapshot::<dual::PlayerSnapshot>::decode, at, f);
    }

    #[test]
    fn any_bytes_decode_to_a_snapshot_or_a_typed_error(bytes in prop::collection::vec(any::<u8>(), 0..256), kind in prop::sample::select(vec![1u8, 2, 3, 4, 0x81, 0x82, 0x83, 0x84, 7])) {
        for input in [Bytes::from(bytes.clone()), framed(kind, &bytes)] {
            let _ = merge::MergeSessionSnapshot::decode(input.clone());
            let _ = merge::MergeClientSnapshot::decode(input.clone());
            let _ = dual::PlayerSnapshot::decode(input.clone());
            let _ = dual::DualClientSnapshot::decode(input.clone());
            let _ = PeerSnapshot::<merge::MergeSessionSnapshot>::decode(input.clone());
            let _ = PeerSnapshot::<dual::DualClientSnapshot>::decode(input);
        }
    }
}

proptest! {
    /// The ended set's snapshot round-trips, and its decoder refuses what it must.
    #[test]
    fn merge_ended_snapshots_round_trip(
        entries in prop::collection::vec(
            (prop::collection::vec(token_strategy(), 1..=2), any::<u64>(), any::<bool>()),
            0..5,
        )
    ) {
        let snap = merge::MergeEndedSnapshot {
            tombstones: entries
                .into_iter()
                .map(|(tokens, left, peer)| merge::Tombstone {
                    tokens,
                    forget_in: Duration::from_micros(left),
                    ended_by: if peer { merge::EndedBy::Peer } else { merge::EndedBy::Application },
                })
                .collect(),
        };
        let mut buf = BytesMut::new();
        snap.encode(&mut buf);
        prop_assert_eq!(merge::MergeEndedSnapshot::decode(buf.freeze()), Ok(snap));
    }
}

#[test]
fn a_snapshot_of_another_kind_or_version_is_refused_by_name() {
    let s = merge::MergeSessionSnapshot {
        status: Status::Connected,
        local: Token::new(&[b'Q'; 16]).unwrap(),
        remote: None,
        merged: Token::new(&[b'Q'; 32]).unwrap(),
        secrets: Some(merge::MergeSecrets {
            key: Token::new(&[b'Q'; 16]).unwrap(),
            oldest: 3,
            next: 4,
            merged_resumes: false,
        }),
        queue: vec![Message::App(Bytes::from_static(b"hello"))],
        acked: 0,
        received: 0,
        expires_in: None,
    };
    let mut buf = BytesMut::new();
    s.encode(&mut buf);
    let bytes = buf.freeze();
    assert_eq!(
        merge::MergeClientSnapshot::decode(bytes.clone()),
        Err(SnapshotError::WrongKind {
            expected: 2,
            found: 1
        })
    );
    // Version 1 (before delivery counters), 2 (marks without the hash chain), 3 (sessions
    // without their secrets) and a future version 5 are refused.
    for version in [1u8, 2, 3, 5] {
        let mut other = bytes.to_vec();
        other[4] = version;
        assert_eq!(
            merge::MergeSessionSnapshot::decode(Bytes::from(other)),
            Err(SnapshotError::UnsupportedVersion(version))
        );
    }
    let mut bad = bytes.to_vec();
    bad[0] = b'X';
    assert_eq!(
        merge::MergeSessionSnapshot::decode(Bytes::from(bad)),
        Err(SnapshotError::BadMagic)
    );
    let n = bytes.len();
    let mut changed = bytes.to_vec();
    changed[n - 6] ^= 1; // inside the queued message
    assert_eq!(
        merge::MergeSessionSnapshot::decode(Bytes::from(changed)),
        Err(SnapshotError::BadChecksum)
    );
    // Debug never prints the secrets.
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("QQQQ") && !dbg.contains("81, 81"), "{dbg}");
}

// ---------------------------------------------------------------------------------------
// Handover in the simulator: token-merge

mod peer_common;

use peer_common::{append, journal, Journal};

fn sync_config() -> SyncConfig {
    SyncConfig {
        idle_timeout: None,
        ..SyncConfig::default()
    }
}

fn keys_of(j: &Journal) -> BTreeSet<(Bytes, Bytes)> {
    j.keys()
}

/// Counts `Applied` per (author, resource) in a list of sync events.
fn count_applied<'a>(
    events: impl Iterator<Item = &'a SyncEvent>,
) -> BTreeMap<(Vec<u8>, Vec<u8>), usize> {
    let mut counts = BTreeMap::new();
    for e in events {
        if let SyncEvent::Applied {
            author, resource, ..
        } = e
        {
            *counts
                .entry((author.to_vec(), resource.to_vec()))
                .or_insert(0) += 1;
        }
    }
    counts
}

mod merge_world {
    use super::*;

    pub type ClientPeer = Peer<MergeClient, Journal>;
    pub type ServerPeer = Peer<MergeServer<SeqTokens>, Journal>;
    pub type Node = Either<ClientPeer, ServerPeer>;
    pub type Event = <Node as Machine>::Event;

    pub fn server(seed: u64, journal: Journal) -> ServerPeer {
        Peer::new(
            MergeServer::new(
                merge::MergeServerConfig {
                    resume_grace: Duration::from_secs(3600),
                    ..Default::default()
                },
                SeqTokens::new(seed),
            ),
            sync_config(),
            journal,
        )
    }

    pub fn sync_events(events: &[Event]) -> impl Iterator<Item = &SyncEvent> {
        events.iter().filter_map(|e| match e {
            Either::Left(PeerEvent::Sync(_, s)) | Either::Right(PeerEvent::Sync(_, s)) => Some(s),
            _ => None,
        })
    }

    pub fn outcomes(events: &[Event]) -> Vec<merge::Outcome> {
        events
            .iter()
            .filter_map(|e| match e {
                Either::Left(PeerEvent::Connection(merge::MergeClientEvent::Up {
                    session: (),
                    outcome: o,
                })) => Some(*o),
                _ => None,
            })
            .collect()
    }
}

/// A client syncing with server A; 300 entries each way, and the session handed over to
/// server B in the middle of the sync (CONNECTED, or RECONNECTING after a cut). The client
/// resumes on B, and both journals end with everything, nothing applied twice.
fn merge_handover(cut_first: bool) {
    use merge_world::*;
    let mut sim: Sim<Node> = Sim::new(7, Faults::none());
    let a = sim.add_node(Either::Right(server(1, MemJournal::new(1, 100_000))));
    let client = MergeClient::new(
        sim.now(),
        merge::MergeClientConfig {
            jitter_seed: 3,
            give_up_after: Duration::from_secs(3600),
            ..Default::default()
        },
        Token::new(&[0x5a; 16]).unwrap(),
    )
    .unwrap();
    let c = sim.add_node(Either::Left(Peer::new(
        client,
        sync_config(),
        MemJournal::new(100, 100_000),
    )));
    sim.route(c, Channel::Main, a);
    sim.run_for(Duration::from_secs(2));
    for i in 0..300 {
        append(&mut sim, c, "client", i);
        append(&mut sim, a, "server", i);
    }
    let mut client_events = Vec::new();
    let limit = sim.now() + Duration::from_secs(5);
    while count_applied(sync_events(&client_events)).is_empty() && sim.step_before(limit) {
        client_events.extend(sim.take_events(c));
    }
    let before = count_applied(sync_events(&client_events)).len();
    assert!(0 < before && before < 300, "mid-sync ({before} of 300)");
    if cut_first {
        sim.cut(c, Channel::Main);
        let reconnecting = |sim: &Sim<Node>| {
            let p = sim.node(a).right().unwrap();
            p.sessions().all(|(_, up)| !up)
        };
        while !reconnecting(&sim) && sim.step_before(sim.now() + Duration::from_millis(10)) {}
        assert!(reconnecting(&sim), "A saw the cut");
        client_events.extend(sim.take_events(c));
    }

    // The handover: A exports and forgets the session; the bytes travel; B imports them.
    let now = sim.now();
    let server_a = sim.node_mut(a).right_mut().unwrap();
    let (session, _) = server_a.sessions().next().expect("A holds the session");
    let exported_status = server_a.connection().session(session).unwrap().status;
    let snap = server_a.take_session(now, session).expect("exported");
    assert_eq!(server_a.connection().session_count(), 0);
    assert_eq!(
        snap.connection.status,
        if cut_first {
            Status::Reconnecting
        } else {
            Status::Connected
        }
    );
    assert_eq!(exported_status, snap.connection.status);
    let mut bytes = BytesMut::new();
    snap.encode(&mut bytes);
    let bytes = bytes.freeze();
    // "Another process": a fresh server, with a copy of the fleet's journal.
    let journal_b = journal(&sim, a).clone();
    let mut server_b = server(2, journal_b);
    let decoded = PeerSnapshot::<merge::MergeSessionSnapshot>::decode(bytes).unwrap();
    assert_eq!(decoded, snap);
    let id_b = server_b.import_session(now, decoded.clone()).unwrap();
    let view = server_b.connection().session(id_b).unwrap();
    assert_eq!(view.status, Status::Reconnecting);
    assert_eq!(view.merged, Some(snap.connection.merged));
    assert_eq!(server_b.marks(id_b), Some(snap.marks));
    // Imported twice: refused.
    assert_eq!(
        server_b.import_session(now, decoded),
        Err(ImportError::DuplicateToken)
    );
    let b = sim.add_node(Either::Right(server_b));
    sim.route(c, Channel::Main, b);
    sim.drain_node(a); // A closes the session's transport
    for i in 300..400 {
        append(&mut sim, c, "client", i);
        append(&mut sim, b, "server", i);
    }
    sim.run_for(Duration::from_secs(30));
    client_events.extend(sim.take_events(c));
    assert_eq!(
        outcomes(&client_events),
        vec![merge::Outcome::Fresh, merge::Outcome::Resumed],
        "connected to A, then resumed on B"
    );
    let (kc, kb) = (keys_of(&journal(&sim, c)), keys_of(&journal(&sim, b)));
    assert_eq!(kc.len(), 800);
    assert_eq!(kc, kb);
    let counts = count_applied(sync_events(&client_events));
    assert_eq!(
        counts.len(),
        400,
        "every server entry applied on the client"
    );
    assert!(counts.values().all(|&n| n == 1), "none applied twice");
    let b_events = sim.take_events(b);
    assert!(count_applied(sync_events(&b_events))
        .values()
        .all(|&n| n == 1));
}

#[test]
fn merge_session_exported_while_connected_resumes_on_another_server() {
    merge_handover(false);
}

#[test]
fn merge_session_exported_while_reconnecting_resumes_on_another_server() {
    merge_handover(true);
}

// ---------------------------------------------------------------------------------------
// Handover in the simulator: dual-channel

mod dual_world {
    use super::*;

    pub type ClientPeer = Peer<DualClient, Journal>;
    pub type ServerPeer = Peer<DualServer<SeqTokens>, Journal>;
    pub type Node = Either<ClientPeer, ServerPeer>;
    pub type Event = <Node as Machine>::Event;

    pub fn server(seed: u64, journal: Journal) -> ServerPeer {
        Peer::new(
            DualServer::new(dual::DualServerConfig::default(), SeqTokens::new(seed)),
            sync_config(),
            journal,
        )
    }

    pub fn client_config() -> dual::DualClientConfig {
        dual::DualClientConfig {
            on_feed_lost: dual::FeedLossPolicy::Reinit,
            ..Default::default()
        }
    }

    pub fn sync_events(events: &[Event]) -> impl Iterator<Item = &SyncEvent> {
        events.iter().filter_map(|e| match e {
            Either::Left(PeerEvent::Sync(_, s)) | Either::Right(PeerEvent::Sync(_, s)) => Some(s),
            _ => None,
        })
    }

    pub fn sessions(events: &[Event]) -> Vec<dual::Outcome> {
        events
            .iter()
            .filter_map(|e| match e {
                Either::Left(PeerEvent::Connection(dual::DualClientEvent::Up {
                    outcome, ..
                })) => Some(*outcome),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn dual_player_handed_over_mid_sync_resumes_on_another_server_with_feed() {
    use dual_world::*;
    let mut sim: Sim<Node> = Sim::new(11, Faults::none());
    let a = sim.add_node(Either::Right(server(1, MemJournal::new(1, 100_000))));
    let c = sim.add_node(Either::Left(Peer::new(
        DualClient::new(client_config()),
        sync_config(),
        MemJournal::new(100, 100_000),
    )));
    sim.route(c, Channel::Main, a);
    sim.route(c, Channel::Feed, a);
    sim.command(
        c,
        Either::Left(PeerCommand::Connection(dual::DualClientCommand::Connect)),
    );
    sim.run_for(Duration::from_secs(2));
    for i in 0..300 {
        append(&mut sim, c, "client", i);
        append(&mut sim, a, "server", i);
    }
    let mut client_events = Vec::new();
    let limit = sim.now() + Duration::from_secs(5);
    while count_applied(sync_events(&client_events)).is_empty() && sim.step_before(limit) {
        client_events.extend(sim.take_events(c));
    }
    let before = count_applied(sync_events(&client_events)).len();
    assert!(0 < before && before < 300, "mid-sync ({before} of 300)");

    let now = sim.now();
    let server_a = sim.node_mut(a).right_mut().unwrap();
    let (player, up) = server_a.sessions().next().expect("A holds the player");
    assert!(up);
    let snap = server_a.take_session(now, player).expect("exported");
    let mut bytes = BytesMut::new();
    snap.encode(&mut bytes);
    let decoded = PeerSnapshot::<dual::PlayerSnapshot>::decode(bytes.freeze()).unwrap();
    assert_eq!(decoded, snap);
    assert_eq!(decoded.connection.state, PlayerState::Connected);
    let mut server_b = server(2, journal(&sim, a).clone());
    assert_eq!(server_b.import_session(now, decoded.clone()), Ok(player));
    assert_eq!(
        server_b.connection().player_state(player),
        Some(PlayerState::MainLost)
    );
    assert_eq!(
        server_b.import_session(now, decoded),
        Err(ImportError::DuplicateToken)
    );
    let b = sim.add_node(Either::Right(server_b));
    sim.route(c, Channel::Main, b);
    sim.route(c, Channel::Feed, b);
    sim.drain_node(a);
    for i in 300..400 {
        append(&mut sim, c, "client", i);
        append(&mut sim, b, "server", i);
    }
    sim.run_for(Duration::from_secs(30));
    client_events.extend(sim.take_events(c));
    assert_eq!(
        sessions(&client_events),
        vec![dual::Outcome::Fresh, dual::Outcome::Resumed],
        "connected to A, then resumed on B"
    );
    assert!(
        client_events.iter().any(|e| matches!(
            e,
            Either::Left(PeerEvent::Connection(dual::DualClientEvent::Notice(
                dual::DualClientNotice::FeedRestored
            )))
        )),
        "feed bound again, on B"
    );
    let (kc, kb) = (keys_of(&journal(&sim, c)), keys_of(&journal(&sim, b)));
    assert_eq!(kc.len(), 800);
    assert_eq!(kc, kb);
    let counts = count_applied(sync_events(&client_events));
    assert_eq!(counts.len(), 400);
    assert!(counts.values().all(|&n| n == 1), "none applied twice");
    let b_events = sim.take_events(b);
    assert!(count_applied(sync_events(&b_events))
        .values()
        .all(|&n| n == 1));
    // feed works on B: an update from the client arrives once.
    let update = Message::Update(tether::wire::Element {
        kind: 1,
        sid: 42,
        data: Bytes::from_static(b"pos"),
    });
    sim.command(
        c,
        Either::Left(PeerCommand::Connection(dual::DualClientCommand::SendFeed(
            update,
        ))),
    );
    sim.run_for(Duration::from_secs(1));
    let updates = sim
        .take_events(b)
        .into_iter()
        .filter(|e| {
            matches!(e, Either::Right(PeerEvent::Connection(dual::DualServerEvent::Notice(dual::DualServerNotice::Update { element, .. }))) if element.sid == 42)
        })
        .count();
    assert_eq!(updates, 1);
}

// ---------------------------------------------------------------------------------------
// Restored state equals the original's, over random sessions

/// Moves bytes between a token-merge client and server until quiet (a transport the
/// client asks for is link 1 at both ends); returns their events.
fn shuttle(
    client: &mut MergeClient,
    server: &mut MergeServer<SeqTokens>,
    now: Instant,
) -> (Vec<merge::MergeClientEvent>, Vec<merge::MergeServerEvent>) {
    let mut pair = Pair::new(client, server)
        .at(now)
        .granting_opens()
        .strict(Side::Client)
        .strict(Side::Server);
    pair.drive();
    (pair.client_events, pair.server_events)
}

fn app(b: &[u8]) -> Message {
    Message::App(Bytes::copy_from_slice(b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A random token-merge session (tokens, CONNECTED or RECONNECTING, queues on both
    /// sides, time elapsed): client and server restored elsewhere hold the same tokens and
    /// queue, are RECONNECTING, and resume with each other, delivering the queues in order.
    #[test]
    fn merge_restored_state_equals_the_original(
        client_token in secure_token(),
        seed in any::<u64>(),
        cut in any::<bool>(),
        to_server in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..20), 0..5),
        to_client in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..20), 0..5),
        elapsed_ms in 0u64..50_000,
    ) {
        let t0 = Instant::ZERO;
        let cfg = merge::MergeClientConfig::default();
        let scfg = merge::MergeServerConfig::default();
        let mut client = MergeClient::new(t0, cfg, client_token).unwrap();
        let mut server = MergeServer::new(scfg, SeqTokens::new(seed));
        let (ce, _) = shuttle(&mut client, &mut server, t0);
        prop_assert_eq!(ce, vec![merge::MergeClientEvent::Up { session: (), outcome: merge::Outcome::Fresh }]);
        let id = merge::SessionId(1);
        if cut {
            client.handle_input(t0, Input::Closed(Link::main(1))).unwrap();
            server.handle_input(t0, Input::Closed(Link::main(1))).unwrap();
            for m in &to_server {
                client.handle_input(t0, Input::Command(merge::MergeClientCommand::Send(app(m)))).unwrap();
            }
            for m in &to_client {
                server.handle_input(t0, Input::Command(merge::MergeServerCommand::Send { session: id, message: app(m) })).unwrap();
            }
        }
        let now = t0 + Duration::from_millis(elapsed_ms);
        let cs = client.snapshot(now).unwrap();
        let ss = server.export_session(now, id).unwrap();
        let expected = if cut { Status::Reconnecting } else { Status::Connected };
        prop_assert_eq!(cs.status, expected);
        prop_assert_eq!(ss.status, expected);

        // Through bytes, into new machines.
        let mut b = BytesMut::new();
        cs.encode(&mut b);
        let mut restored = MergeClient::restore(now, cfg, merge::MergeClientSnapshot::decode(b.split().freeze()).unwrap()).unwrap();
        ss.encode(&mut b);
        let mut server2 = MergeServer::new(scfg, SeqTokens::new(!seed));
        let id2 = server2.import_session(now, merge::MergeSessionSnapshot::decode(b.freeze()).unwrap()).unwrap();

        let (v0, v1) = (client.view(), restored.view());
        prop_assert_eq!(v1.status, Status::Reconnecting);
        prop_assert_eq!((v1.local, v1.remote, v1.merged), (v0.local, v0.remote, v0.merged));
        let (w0, w1) = (server.session(id).unwrap(), server2.session(id2).unwrap());
        prop_assert_eq!(w1.status, Status::Reconnecting);
        prop_assert_eq!((w1.local, w1.remote, w1.merged), (w0.local, w0.remote, w0.merged));
        let (cs2, ss2) = (restored.snapshot(now).unwrap(), server2.export_session(now, id2).unwrap());
        prop_assert_eq!(&cs2.queue, &cs.queue);
        prop_assert_eq!(&ss2.queue, &ss.queue);
        if cut {
            // Nothing but the transport was lost: the snapshots are the same.
            prop_assert_eq!(&cs2, &cs);
            prop_assert_eq!(&ss2, &ss);
        } else {
            prop_assert_eq!(cs2.give_up_in, Some(cfg.give_up_after));
            prop_assert_eq!(ss2.expires_in, Some(scfg.resume_grace));
        }

        // The restored pair resumes, and the queues arrive in order.
        let (ce, se) = shuttle(&mut restored, &mut server2, now);
        let got_msgs: Vec<_> = ce.iter().filter_map(|e| match e { merge::MergeClientEvent::Message { message: m, .. } => Some(m.clone()), _ => None }).collect();
        prop_assert_eq!(&ce[0], &merge::MergeClientEvent::Up { session: (), outcome: merge::Outcome::Resumed });
        prop_assert_eq!(got_msgs, ss.queue.clone());
        let got_srv: Vec<_> = se.iter().filter_map(|e| match e { merge::MergeServerEvent::Message { message, .. } => Some(message.clone()), _ => None }).collect();
        prop_assert_eq!(got_srv, cs.queue.clone());
        let resumed = merge::MergeServerEvent::Up { session: id2, outcome: merge::Outcome::Resumed };
        prop_assert!(se.contains(&resumed), "server resumed");
    }
}

type DualNode = Either<DualClient, DualServer<SeqTokens>>;

/// A dual-channel session in the simulator: connected, or with `main` cut off (partition)
/// and messages queued on both sides.
fn dual_session(
    seed: u64,
    lost: bool,
    to_server: &[Vec<u8>],
    to_client: &[Vec<u8>],
) -> (Sim<DualNode>, NodeId, NodeId, u16) {
    let mut sim: Sim<DualNode> = Sim::new(seed, Faults::none());
    let s = sim.add_node(Either::Right(DualServer::new(
        dual::DualServerConfig::default(),
        SeqTokens::new(seed),
    )));
    let c = sim.add_node(Either::Left(DualClient::new(
        dual::DualClientConfig::default(),
    )));
    sim.route(c, Channel::Main, s);
    sim.route(c, Channel::Feed, s);
    sim.command(c, Either::Left(dual::DualClientCommand::Connect));
    sim.run_for(Duration::from_secs(2));
    let player = sim.node(c).left().unwrap().player().unwrap();
    if lost {
        sim.partition(c, s);
        sim.run_for(Duration::from_millis(100));
        for m in to_server {
            sim.command(c, Either::Left(dual::DualClientCommand::Send(app(m))));
        }
        for m in to_client {
            sim.command(
                s,
                Either::Right(dual::DualServerCommand::Send {
                    player,
                    message: app(m),
                }),
            );
        }
        assert!(sim.take_errors(c).is_empty() && sim.take_errors(s).is_empty());
    }
    (sim, c, s, player)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A random dual-channel session: the restored client and the imported player hold the
    /// same player id, tokens and queue, and wait for `main` again.
    #[test]
    fn dual_restored_state_equals_the_original(
        seed in any::<u64>(),
        lost in any::<bool>(),
        to_server in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..20), 0..5),
        to_client in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..20), 0..5),
    ) {
        let (sim, c, s, player) = dual_session(seed, lost, &to_server, &to_client);
        let now = sim.now();
        let client = sim.node(c).left().unwrap();
        let server = sim.node(s).right().unwrap();
        let cs = client.snapshot(now).unwrap();
        let ps = server.export_player(now, player).unwrap();
        prop_assert_eq!(cs.state, if lost { dual::DualClientState::ReopeningMain } else { dual::DualClientState::Connected });
        prop_assert_eq!(ps.state, if lost { PlayerState::MainLost } else { PlayerState::Connected });
        let queued: Vec<Message> = client.queue();
        prop_assert_eq!(&cs.queue, &queued);
        let want_s: Vec<Message> = if lost { to_server.iter().map(|m| app(m)).collect() } else { vec![] };
        let want_c: Vec<Message> = if lost { to_client.iter().map(|m| app(m)).collect() } else { vec![] };
        prop_assert_eq!(&cs.queue, &want_s);
        prop_assert_eq!(&ps.queue, &want_c);

        let mut b = BytesMut::new();
        cs.encode(&mut b);
        let restored = DualClient::restore(now, dual::DualClientConfig::default(), dual::DualClientSnapshot::decode(b.split().freeze()).unwrap()).unwrap();
        ps.encode(&mut b);
        let mut server2 = DualServer::new(dual::DualServerConfig::default(), SeqTokens::new(!seed));
        prop_assert_eq!(server2.import_player(now, dual::PlayerSnapshot::decode(b.freeze()).unwrap()), Ok(player));

        prop_assert_eq!(restored.state(), dual::DualClientState::ReopeningMain);
        prop_assert_eq!(restored.player(), client.player());
        prop_assert_eq!(restored.tokens(), client.tokens());
        prop_assert_eq!(restored.queue(), queued);
        prop_assert_eq!(server2.player_state(player), Some(PlayerState::MainLost));
        prop_assert_eq!(server2.player_queue(player).unwrap(), ps.queue.clone());
        let ps2 = server2.export_player(now, player).unwrap();
        prop_assert_eq!((ps2.token_a, ps2.token_b, ps2.player), (ps.token_a, ps.token_b, ps.player));
        prop_assert!(ps2.feed_next_seq > ps.feed_next_seq, "feed numbering continues past the old server's");
        prop_assert_eq!(ps2.feed_newest, ps.feed_newest);
        let cs2 = restored.snapshot(now).unwrap();
        prop_assert_eq!((cs2.token_a, cs2.token_b, cs2.feed_attempt, cs2.feed_newest), (cs.token_a, cs.token_b, cs.feed_attempt, cs.feed_newest));
    }
}

// ---------------------------------------------------------------------------------------
// Refused imports

#[test]
fn merge_imports_of_a_token_in_use_twice_or_past_the_bounds_are_refused() {
    let t0 = Instant::ZERO;
    let mut client = MergeClient::new(
        t0,
        merge::MergeClientConfig::default(),
        Token::new(&[9; 16]).unwrap(),
    )
    .unwrap();
    let mut server = MergeServer::new(merge::MergeServerConfig::default(), SeqTokens::new(5));
    shuttle(&mut client, &mut server, t0);
    let snap = server.export_session(t0, merge::SessionId(1)).unwrap();
    // The token is in use on this very server.
    assert_eq!(
        server.import_session(t0, snap.clone()),
        Err(ImportError::DuplicateToken)
    );
    assert_eq!(server.session_count(), 1);
    let mut other = MergeServer::new(merge::MergeServerConfig::default(), SeqTokens::new(6));
    let id = other.import_session(t0, snap.clone()).unwrap();
    assert_eq!(
        other.import_session(t0, snap.clone()),
        Err(ImportError::DuplicateToken)
    );
    assert_eq!(other.session_count(), 1);
    // A formally ended session is not brought back.
    other
        .handle_input(
            t0,
            Input::Command(merge::MergeServerCommand::Disconnect { session: id }),
        )
        .unwrap();
    assert_eq!(
        other.import_session(t0, snap.clone()),
        Err(ImportError::Ended)
    );
    let mut full = MergeServer::new(
        merge::MergeServerConfig {
            max_sessions: 0,
            ..Default::default()
        },
        SeqTokens::new(7),
    );
    assert_eq!(
        full.import_session(t0, snap.clone()),
        Err(ImportError::Full)
    );
    let mut small = MergeServer::new(
        merge::MergeServerConfig {
            max_queue: 1,
            ..Default::default()
        },
        SeqTokens::new(8),
    );
    let long = merge::MergeSessionSnapshot {
        queue: vec![app(b"a"), app(b"b")],
        ..snap
    };
    assert_eq!(
        small.import_session(t0, long),
        Err(ImportError::QueueTooLong { len: 2, max: 1 })
    );
    assert_eq!(small.session_count(), 0);
    // A client imports only while idle.
    let cs = client.snapshot(t0).unwrap();
    let mut peer = Peer::new(client, sync_config(), MemJournal::new(1, 10));
    let ps = PeerSnapshot {
        connection: cs,
        marks: Marks::default(),
    };
    assert_eq!(peer.import_session(t0, ps.clone()), Err(ImportError::Busy));
    let fresh = MergeClient::new(
        t0,
        merge::MergeClientConfig::default(),
        Token::new(&[1; 16]).unwrap(),
    )
    .unwrap();
    let mut peer = Peer::new(fresh, sync_config(), MemJournal::new(1, 10));
    assert_eq!(peer.import_session(t0, ps.clone()), Ok(()));
    assert_eq!(peer.connection().view().merged, Some(ps.connection.merged));
    assert_eq!(peer.connection().view().status, Status::Reconnecting);
}

#[test]
fn dual_imports_of_a_token_in_use_twice_or_on_a_taken_id_are_refused() {
    let (sim, _, s, player) = dual_session(3, false, &[], &[]);
    let now = sim.now();
    let server = sim.node(s).right().unwrap();
    let snap = server.export_player(now, player).unwrap();
    let mut same = DualServer::new(dual::DualServerConfig::default(), SeqTokens::new(3));
    assert_eq!(same.import_player(now, snap.clone()), Ok(player));
    assert_eq!(
        same.import_player(now, snap.clone()),
        Err(ImportError::DuplicateToken)
    );
    let other_tokens = dual::PlayerSnapshot {
        token_a: Token::new(&[1; 16]).unwrap(),
        token_b: Token::new(&[2; 16]).unwrap(),
        secret: Token::new(&[4; 16]).unwrap(),
        ..snap.clone()
    };
    assert_eq!(
        same.import_player(now, other_tokens.clone()),
        Err(ImportError::PlayerTaken(player))
    );
    let out_of_range = dual::PlayerSnapshot {
        player: 1000,
        ..other_tokens
    };
    assert_eq!(
        same.import_player(now, out_of_range),
        Err(ImportError::PlayerTaken(1000))
    );
    let short = dual::PlayerSnapshot {
        token_a: Token::new(&[1; 4]).unwrap(),
        player: 9,
        token_b: Token::new(&[3; 16]).unwrap(),
        secret: Token::new(&[5; 16]).unwrap(),
        ..snap
    };
    assert_eq!(same.import_player(now, short), Err(ImportError::BadToken));
    assert_eq!(same.player_count(), 1);
}
