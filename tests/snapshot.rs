//! Session snapshots: the codec (round trip, any bytes, tampering), handover of a session
//! to another server in the simulator (token-merge and dual-channel, exported CONNECTED or
//! RECONNECTING), restored state equal to the original, and refused imports.
#![cfg(feature = "testkit")]

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use tether::connect::dual::{self, DualClient, DualServer, PlayerState};
use tether::connect::merge::{self, Client, Server, Status};
use tether::peer::{Peer, PeerCommand, PeerEvent, PeerSnapshot, SharedJournal};
use tether::snapshot::{crc32, ImportError, SnapshotError, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use tether::sync::journal::{Marks, MemJournal, Role, SyncConfig, SyncEvent};
use tether::testkit::{Either, Faults, NodeId, Sim};
use tether::wire::{Entry, LineId, Message};
use tether::{Channel, Duration, Input, Instant, Link, Machine, Output, Token};

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
        (any::<u64>(), any::<u64>()).prop_map(|(epoch, seq)| LineId { epoch, seq }),
    );
    (line.clone(), line).prop_map(|(ours, theirs)| Marks { ours, theirs })
}

fn merge_session_strategy() -> impl Strategy<Value = merge::SessionSnapshot> {
    (
        prop::bool::ANY,
        token_strategy(),
        prop::option::of(token_strategy()),
        token_strategy(),
        queue_strategy(6),
        opt_duration(),
    )
        .prop_map(
            |(c, local, remote, merged, queue, expires_in)| merge::SessionSnapshot {
                status: if c {
                    Status::Connected
                } else {
                    Status::Reconnecting
                },
                local,
                remote,
                merged,
                queue,
                expires_in,
            },
        )
}

fn merge_client_strategy() -> impl Strategy<Value = merge::ClientSnapshot> {
    merge_session_strategy().prop_map(|s| merge::ClientSnapshot {
        status: s.status,
        local: s.local,
        remote: s.remote,
        merged: s.merged,
        queue: s.queue,
        give_up_in: s.expires_in,
    })
}

fn player_strategy() -> impl Strategy<Value = dual::PlayerSnapshot> {
    (
        any::<u16>(),
        prop::bool::ANY,
        token_strategy(),
        token_strategy(),
        queue_strategy(6),
        opt_duration(),
        any::<u64>(),
        prop::option::of(any::<u64>()),
    )
        .prop_map(
            |(player, c, token_a, token_b, queue, expires_in, next, newest)| dual::PlayerSnapshot {
                player,
                state: if c {
                    PlayerState::Connected
                } else {
                    PlayerState::MainLost
                },
                token_a,
                token_b,
                queue,
                expires_in,
                feed_next_seq: next,
                feed_newest: newest,
            },
        )
}

fn dual_client_strategy() -> impl Strategy<Value = dual::ClientSnapshot> {
    (player_strategy(), any::<u32>()).prop_map(|(p, attempt)| dual::ClientSnapshot {
        player: p.player,
        state: if p.state == PlayerState::Connected {
            dual::ClientState::Connected
        } else {
            dual::ClientState::ReopeningMain
        },
        token_a: p.token_a,
        token_b: p.token_b,
        queue: p.queue,
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
        codec_laws(&s, |s, b| s.encode(b), merge::SessionSnapshot::decode, at, f);
    }

    #[test]
    fn merge_client_snapshots_round_trip(s in merge_client_strategy(), at in any::<usize>(), f in any::<u8>()) {
        codec_laws(&s, |s, b| s.encode(b), merge::ClientSnapshot::decode, at, f);
    }

    #[test]
    fn dual_player_snapshots_round_trip(s in player_strategy(), at in any::<usize>(), f in any::<u8>()) {
        codec_laws(&s, |s, b| s.encode(b), dual::PlayerSnapshot::decode, at, f);
    }

    #[test]
    fn dual_client_snapshots_round_trip(s in dual_client_strategy(), at in any::<usize>(), f in any::<u8>()) {
        codec_laws(&s, |s, b| s.encode(b), dual::ClientSnapshot::decode, at, f);
    }

    #[test]
    fn peer_snapshots_round_trip(c in merge_session_strategy(), p in player_strategy(), marks in marks_strategy(), at in any::<usize>(), f in any::<u8>()) {
        let s = PeerSnapshot { connection: c, marks };
        codec_laws(&s, |s, b| s.encode(b), PeerSnapshot::<merge::SessionSnapshot>::decode, at, f);
        let s = PeerSnapshot { connection: p, marks };
        codec_laws(&s, |s, b| s.encode(b), PeerSnapshot::<dual::PlayerSnapshot>::decode, at, f);
    }

    #[test]
    fn any_bytes_decode_to_a_snapshot_or_a_typed_error(bytes in prop::collection::vec(any::<u8>(), 0..256), kind in prop::sample::select(vec![1u8, 2, 3, 4, 0x81, 0x82, 0x83, 0x84, 7])) {
        for input in [Bytes::from(bytes.clone()), framed(kind, &bytes)] {
            let _ = merge::SessionSnapshot::decode(input.clone());
            let _ = merge::ClientSnapshot::decode(input.clone());
            let _ = dual::PlayerSnapshot::decode(input.clone());
            let _ = dual::ClientSnapshot::decode(input.clone());
            let _ = PeerSnapshot::<merge::SessionSnapshot>::decode(input.clone());
            let _ = PeerSnapshot::<dual::ClientSnapshot>::decode(input);
        }
    }
}

#[test]
fn a_snapshot_of_another_kind_or_version_is_refused_by_name() {
    let s = merge::SessionSnapshot {
        status: Status::Connected,
        local: Token::new(&[b'Q'; 16]).unwrap(),
        remote: None,
        merged: Token::new(&[b'Q'; 32]).unwrap(),
        queue: vec![Message::App(Bytes::from_static(b"hello"))],
        expires_in: None,
    };
    let mut buf = BytesMut::new();
    s.encode(&mut buf);
    let bytes = buf.freeze();
    assert_eq!(
        merge::ClientSnapshot::decode(bytes.clone()),
        Err(SnapshotError::WrongKind {
            expected: 2,
            found: 1
        })
    );
    let mut v2 = bytes.to_vec();
    v2[4] = 2;
    assert_eq!(
        merge::SessionSnapshot::decode(Bytes::from(v2)),
        Err(SnapshotError::UnsupportedVersion(2))
    );
    let mut bad = bytes.to_vec();
    bad[0] = b'X';
    assert_eq!(
        merge::SessionSnapshot::decode(Bytes::from(bad)),
        Err(SnapshotError::BadMagic)
    );
    let n = bytes.len();
    let mut changed = bytes.to_vec();
    changed[n - 6] ^= 1; // inside the queued message
    assert_eq!(
        merge::SessionSnapshot::decode(Bytes::from(changed)),
        Err(SnapshotError::BadChecksum)
    );
    // Debug never prints the secrets.
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("QQQQ") && !dbg.contains("81, 81"), "{dbg}");
}

// ---------------------------------------------------------------------------------------
// Handover in the simulator: token-merge

struct Tokens(u64);

impl Tokens {
    fn next(&mut self) -> Token {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.0.to_be_bytes());
        b[8..].copy_from_slice(&(!self.0).rotate_left(9).to_be_bytes());
        Token::new(&b).unwrap()
    }
}

impl merge::TokenSource for Tokens {
    fn next_token(&mut self) -> Token {
        self.next()
    }
}

impl dual::TokenSource for Tokens {
    fn next_token(&mut self) -> Token {
        self.next()
    }
}

type Journal = SharedJournal<MemJournal>;

fn sync_config() -> SyncConfig {
    SyncConfig {
        idle_timeout: None,
        ..SyncConfig::default()
    }
}

fn keys_of(j: &Journal) -> BTreeSet<(Bytes, Bytes)> {
    j.with(|j| j.keys())
}

fn entry(author: &str, n: usize) -> Entry {
    Entry::new(author.as_bytes(), format!("r{n}").as_bytes(), b"payload")
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

    pub type ClientPeer = Peer<Client, Journal>;
    pub type ServerPeer = Peer<Server<Tokens>, Journal>;
    pub type Node = Either<ClientPeer, ServerPeer>;
    pub type Event = <Node as Machine>::Event;

    pub fn server(seed: u64, journal: Journal) -> ServerPeer {
        Peer::new(
            Server::new(
                merge::ServerConfig {
                    resume_grace: Duration::from_secs(3600),
                    ..Default::default()
                },
                Tokens(seed),
            ),
            Role::Server,
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
                Either::Left(PeerEvent::Connection(merge::ClientEvent::Connected(o))) => Some(*o),
                _ => None,
            })
            .collect()
    }

    pub fn append(sim: &mut Sim<Node>, id: NodeId, author: &str, n: usize) {
        let cmd = match sim.node(id) {
            Either::Left(_) => Either::Left(PeerCommand::Append(entry(author, n))),
            Either::Right(_) => Either::Right(PeerCommand::Append(entry(author, n))),
        };
        sim.command(id, cmd);
    }

    pub fn journal(sim: &Sim<Node>, id: NodeId) -> Journal {
        match sim.node(id) {
            Either::Left(p) => p.store().clone(),
            Either::Right(p) => p.store().clone(),
        }
    }
}

/// A client syncing with server A; 300 entries each way, and the session handed over to
/// server B in the middle of the sync (CONNECTED, or RECONNECTING after a cut). The client
/// resumes on B, and both journals end with everything, nothing applied twice.
fn merge_handover(cut_first: bool) {
    use merge_world::*;
    let mut sim: Sim<Node> = Sim::new(7, Faults::none());
    let a = sim.add_node(Either::Right(server(
        1,
        SharedJournal::new(MemJournal::new(1, 100_000)),
    )));
    let client = Client::new(
        sim.now(),
        merge::Config {
            jitter_seed: 3,
            give_up_after: Duration::from_secs(3600),
            ..Default::default()
        },
        Token::new(&[0x5a; 16]).unwrap(),
    )
    .unwrap();
    let c = sim.add_node(Either::Left(Peer::new(
        client,
        Role::Client,
        sync_config(),
        SharedJournal::new(MemJournal::new(100, 100_000)),
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
    let snap = server_a.take_session(session, now).expect("exported");
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
    let journal_b = SharedJournal::new(journal(&sim, a).with(|j| j.clone()));
    let mut server_b = server(2, journal_b);
    let decoded = PeerSnapshot::<merge::SessionSnapshot>::decode(bytes).unwrap();
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
