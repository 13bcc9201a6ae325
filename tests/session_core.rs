//! The session core under both connection profiles: a frozen peer is noticed, a half-open
//! transport is taken over, and application messages arrive exactly once and in order
//! across cuts (mid-frame, right after a write, half-open), resumes and give-ups.
#![cfg(feature = "testkit")]

use bytes::Bytes;
use proptest::prelude::*;
use std::collections::BTreeMap;
use tether::connect::{dual, merge};
use tether::session::SessionConfig;
use tether::testkit::{Closes, Either, Faults, Packet, Pair, SeqTokens, Side, Sim};
use tether::wire::Message;
use tether::{Channel, Duration, Input, Instant, Machine, Token};

const KEEPALIVE: Duration = Duration::from_secs(10);

fn app(side: u8, n: u32) -> Message {
    let mut b = vec![side];
    b.extend_from_slice(&n.to_be_bytes());
    Message::App(Bytes::from(b))
}

fn number(m: &Message) -> Option<(u8, u32)> {
    match m {
        Message::App(b) if b.len() == 5 => {
            Some((b[0], u32::from_be_bytes([b[1], b[2], b[3], b[4]])))
        }
        _ => None,
    }
}

/// A token-merge client and server on the testkit's [`Pair`], with a hand on every byte:
/// bytes wait on the wire, and reach the server in two reads cut mid-frame (at byte 3);
/// [`Steps::carry`] delivers a few chunks each way split anywhere; a cut drops what is in
/// flight (half-open: only the client learns); the server can be frozen (it takes no input
/// and gives no output, as a process stopped with SIGSTOP; its links stay open).
type MergePair = Pair<merge::MergeClient, merge::MergeServer<SeqTokens>>;

fn new_pair(seed: u64) -> MergePair {
    let session = SessionConfig {
        keepalive: Some(KEEPALIVE),
        ..SessionConfig::default()
    };
    let client = merge::MergeClient::new(
        Instant::ZERO,
        merge::MergeClientConfig {
            jitter_seed: seed,
            give_up_after: Duration::from_secs(3600),
            session,
            ..merge::MergeClientConfig::default()
        },
        Token::new(&[0x42; 16]).unwrap(),
    )
    .unwrap();
    let server = merge::MergeServer::new(
        merge::MergeServerConfig {
            resume_grace: Duration::from_secs(3600),
            session,
            ..merge::MergeServerConfig::default()
        },
        SeqTokens::new(seed),
    );
    Pair::new(client, server)
        .held()
        .granting_opens()
        .with_closes(Closes::Reset)
        .splitting(Side::Server, Some(3))
        .strict(Side::Client)
        .strict(Side::Server)
}

/// What these tests do on top of the pair.
trait Steps {
    fn carry(&mut self, n: usize, split: usize);
    fn cut_client(&mut self, half_open: bool);
    fn session(&self) -> Option<merge::SessionId>;
    fn client_send(&mut self, m: Message) -> bool;
    fn server_send(&mut self, m: Message) -> bool;
    fn client_got(&self) -> Vec<u32>;
    fn server_got(&self) -> Vec<u32>;
}

impl Steps for MergePair {
    /// Delivers up to `n` chunks each way; a chunk to the server is split at `split`
    /// (mid-frame).
    fn carry(&mut self, n: usize, split: usize) {
        for _ in 0..n {
            self.pump();
            if self.is_frozen(Side::Server) {
                continue;
            }
            if let Some(Packet::Data { link, bytes, .. }) = self.pop_to(Side::Server) {
                let at = split % (bytes.len() + 1);
                for part in [bytes.slice(..at), bytes.slice(at..)] {
                    self.server
                        .handle_input(self.now, Input::Received(link, part))
                        .unwrap();
                }
            }
            if let Some(Packet::Data { link, bytes, .. }) = self.pop_to(Side::Client) {
                self.client
                    .handle_input(self.now, Input::Received(link, bytes))
                    .unwrap();
            }
        }
        self.pump();
    }

    /// The client's link drops; the server sees it too unless `half_open`.
    fn cut_client(&mut self, half_open: bool) {
        self.pump();
        let Some(l) = self.client.view().link else {
            return;
        };
        if half_open {
            self.cut_half(Side::Client, l);
        } else {
            self.cut(l);
        }
    }

    fn session(&self) -> Option<merge::SessionId> {
        self.server_events.iter().find_map(|e| match e {
            merge::MergeServerEvent::Up { session, .. } => Some(*session),
            _ => None,
        })
    }

    fn client_send(&mut self, m: Message) -> bool {
        self.client
            .handle_input(self.now, Input::Command(merge::MergeClientCommand::Send(m)))
            .is_ok()
    }

    fn server_send(&mut self, m: Message) -> bool {
        let Some(session) = self.session() else {
            return false;
        };
        self.server
            .handle_input(
                self.now,
                Input::Command(merge::MergeServerCommand::Send {
                    session,
                    message: m,
                }),
            )
            .is_ok()
    }

    fn client_got(&self) -> Vec<u32> {
        self.client_events
            .iter()
            .filter_map(|e| match e {
                merge::MergeClientEvent::Message { message: m, .. } => number(m).map(|x| x.1),
                _ => None,
            })
            .collect()
    }

    fn server_got(&self) -> Vec<u32> {
        self.server_events
            .iter()
            .filter_map(|e| match e {
                merge::MergeServerEvent::Message { message, .. } => number(message).map(|x| x.1),
                _ => None,
            })
            .collect()
    }
}

fn connected(seed: u64) -> MergePair {
    let mut p = new_pair(seed);
    p.run_until(Instant::from_secs(1));
    assert_eq!(p.client.view().status, merge::Status::Connected);
    p
}

#[test]
fn a_frozen_server_is_noticed_within_one_and_a_half_keepalives_and_the_client_resumes() {
    let mut p = connected(1);
    for n in 1..=3 {
        assert!(p.client_send(app(b'c', n)));
        assert!(p.server_send(app(b's', n)));
    }
    p.drive();
    // SIGSTOP: the server reads nothing and writes nothing; its socket stays open.
    let frozen_at = p.now;
    p.freeze(Side::Server);
    for n in 4..=6 {
        assert!(
            p.client_send(app(b'c', n)),
            "queued while the server is frozen"
        );
    }
    let lost_before = p.client_events.len();
    p.run_until(frozen_at + Duration::from_secs(60));
    let lost = p.client_events[lost_before..]
        .iter()
        .position(|e| *e == merge::MergeClientEvent::Down { session: () })
        .expect("the client noticed the frozen server");
    let _ = lost;
    // It closed its link and dialled again: the first new dial is at the detection plus
    // the first backoff wait (at most 1 s); detection is 1.5 x keepalive after the last
    // byte received, plus at most one tick.
    assert!(p.opens.len() >= 2, "dials at {:?}", p.opens);
    let first_redial = p.opens[1].at;
    let detected_by = frozen_at + Duration::from_secs(15) + Duration::from_secs(1);
    assert!(
        first_redial <= detected_by && first_redial >= Instant::from_secs(15),
        "1.5 x keepalive after the last byte, then at most 1 s: dials at {:?}",
        p.opens
    );
    // SIGCONT: the server wakes, its old link still open; the client's next try resumes.
    p.thaw(Side::Server);
    p.run_until(p.now + Duration::from_secs(120));
    assert_eq!(p.client.view().status, merge::Status::Connected);
    assert!(p.client_events.contains(&merge::MergeClientEvent::Up {
        session: (),
        outcome: merge::Outcome::Resumed
    }));
    for n in 7..=8 {
        assert!(p.client_send(app(b'c', n)));
        assert!(p.server_send(app(b's', n - 3)));
    }
    p.run_until(p.now + Duration::from_secs(1));
    assert_eq!(
        p.server_got(),
        (1..=8).collect::<Vec<_>>(),
        "nothing lost, nothing twice"
    );
    assert_eq!(p.client_got(), (1..=5).collect::<Vec<_>>());
}

#[test]
fn a_resumption_takes_over_a_half_open_transport() {
    let mut p = connected(2);
    let session = p.session().unwrap();
    let old = p.client.view().link.unwrap();
    assert!(p.client_send(app(b'c', 1)));
    // The client's side dies (a phone changed networks); the server notices nothing.
    p.pump();
    p.cut_client(true);
    assert!(
        p.has_link(Side::Server, old),
        "the server still holds the old link"
    );
    assert!(p.client_send(app(b'c', 2)));
    p.run_until(p.now + Duration::from_secs(5));
    assert_eq!(p.client.view().status, merge::Status::Connected);
    let new = p.client.view().link.unwrap();
    assert_ne!(new, old);
    assert_eq!(
        p.server.session_of(new.id),
        Some(session),
        "the session moved"
    );
    assert_eq!(p.server.session_of(old.id), None);
    assert!(
        !p.has_link(Side::Server, old),
        "the old transport was closed"
    );
    assert_eq!(p.server.takeovers(), 1);
    assert_eq!(p.server_got(), vec![1, 2]);
}

#[test]
fn an_impossible_ack_refuses_the_transport_and_the_session_resumes() {
    for forged in [
        Message::Ack { received: 1_000 }, // acknowledges messages never sent
        Message::Ack { received: u64::MAX },
    ] {
        let mut p = connected(5);
        assert!(p.server_send(app(b's', 1)));
        p.drive();
        let link = p.client.view().link.unwrap();
        let mut frame = bytes::BytesMut::new();
        forged.encode_framed(&mut frame);
        // Repeated, and split mid-frame by carry().
        for bytes in [frame.clone().freeze(), frame.freeze()] {
            p.wire.push_back(Packet::Data {
                to: Side::Server,
                link,
                bytes,
            });
        }
        p.carry(4, 5);
        let session = p.session().unwrap();
        assert!(
            p.server_events
                .contains(&merge::MergeServerEvent::Down { session }),
            "{forged:?}: the transport was refused"
        );
        p.run_until(p.now + Duration::from_secs(10));
        assert_eq!(p.client.view().status, merge::Status::Connected);
        assert!(p.server_send(app(b's', 2)));
        p.run_until(p.now + Duration::from_secs(1));
        assert_eq!(
            p.client_got(),
            vec![1, 2],
            "{forged:?}: nothing lost or repeated"
        );
    }
}

#[test]
fn the_client_that_gives_up_reports_exactly_what_was_never_acknowledged() {
    let mut p = connected(3);
    // The server acknowledges every 32 messages: 40 sent, 32 acknowledged.
    for n in 1..=40 {
        assert!(p.client_send(app(b'c', n)));
    }
    p.drive();
    p.freeze(Side::Server);
    for n in 41..=45 {
        assert!(p.client_send(app(b'c', n)));
    }
    p.run_until(p.now + Duration::from_secs(4000));
    let undelivered: Vec<u32> = p
        .client_events
        .iter()
        .filter_map(|e| match e {
            merge::MergeClientEvent::Ended { undelivered, .. } => Some(undelivered.clone()),
            _ => None,
        })
        .flatten()
        .filter_map(|m| number(&m).map(|x| x.1))
        .collect();
    assert_eq!(undelivered, (33..=45).collect::<Vec<_>>());
    assert!(p.client_events.iter().any(|e| matches!(
        e,
        merge::MergeClientEvent::Ended {
            reason: merge::EndReason::GaveUp,
            ..
        }
    )));
}

#[test]
fn a_full_replay_buffer_refuses_with_a_typed_error_and_drops_nothing() {
    let mut p = connected(4);
    p.freeze(Side::Server);
    let mut accepted = 0;
    for n in 1..=2_000 {
        if p.client_send(app(b'c', n)) {
            accepted += 1;
        } else {
            let err = p
                .client
                .handle_input(
                    p.now,
                    Input::Command(merge::MergeClientCommand::Send(app(b'c', n))),
                )
                .unwrap_err();
            assert!(
                matches!(err, merge::MergeError::QueueFull { max: 1024 }),
                "{err:?}"
            );
            break;
        }
    }
    assert_eq!(accepted, 1_024);
    assert_eq!(p.client.queued(), 1_024);
    p.thaw(Side::Server);
    p.run_until(p.now + Duration::from_secs(120));
    assert_eq!(p.server_got(), (1..=1_024).collect::<Vec<_>>());
}

#[test]
fn clients_retrying_after_the_same_cut_spread_their_attempts() {
    // Sixteen clients lose the server at the same moment; their first redials spread
    // over the jitter share (20 % of the first 1 s wait) instead of all at once.
    let mut redials = Vec::new();
    for seed in 0..16 {
        let mut p = connected(100 + seed);
        let cut_at = p.now;
        p.cut_client(false);
        let dials = p.opens.len();
        p.run_until(cut_at + Duration::from_secs(2));
        let at = p.opens[dials].at;
        redials.push(at.saturating_duration_since(cut_at).as_micros());
    }
    let (lo, hi) = (
        *redials.iter().min().unwrap(),
        *redials.iter().max().unwrap(),
    );
    let distinct: std::collections::BTreeSet<u64> = redials.iter().copied().collect();
    assert!(distinct.len() >= 14, "{redials:?}");
    assert!(
        hi - lo >= 100_000,
        "spread over at least 100 ms: {redials:?}"
    );
    assert!(
        lo >= 800_000 && hi <= 1_000_000,
        "within the jitter share: {redials:?}"
    );
}

#[derive(Debug, Clone)]
enum Step {
    ClientSends,
    ServerSends,
    Carry(u8, u8),
    Cut,
    HalfOpenCut,
    Wait(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::ClientSends),
        4 => Just(Step::ServerSends),
        4 => (0u8..8, any::<u8>()).prop_map(|(n, s)| Step::Carry(n, s)),
        1 => Just(Step::Cut),
        1 => Just(Step::HalfOpenCut),
        1 => (0u16..3000).prop_map(Step::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Token merge: messages sent continuously both ways while links are cut at random
    /// moments (mid-frame, right after a write, half-open): each arrives exactly once and
    /// in order.
    #[test]
    fn merge_delivers_exactly_once_in_order_across_random_cuts(
        seed in 0u64..1_000,
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let mut p = connected(seed);
        let (mut c_sent, mut s_sent) = (0u32, 0u32);
        for s in steps {
            match s {
                Step::ClientSends => {
                    if p.client_send(app(b'c', c_sent + 1)) { c_sent += 1; }
                }
                Step::ServerSends => {
                    if p.server_send(app(b's', s_sent + 1)) { s_sent += 1; }
                }
                Step::Carry(n, split) => p.carry(n.into(), split.into()),
                Step::Cut => p.cut_client(false),
                Step::HalfOpenCut => p.cut_client(true),
                Step::Wait(ms) => p.run_until(p.now + Duration::from_millis(ms.into())),
            }
        }
        p.run_until(p.now + Duration::from_secs(120));
        prop_assert_eq!(p.client.view().status, merge::Status::Connected);
        prop_assert_eq!(p.server_got(), (1..=c_sent).collect::<Vec<_>>());
        prop_assert_eq!(p.client_got(), (1..=s_sent).collect::<Vec<_>>());
    }
}

type DualNode = Either<dual::DualClient, dual::DualServer<SeqTokens>>;

/// Dual channel, in the simulator (streams split into random chunks, so cuts fall
/// mid-frame): the client and the server send continuously while `main` is cut; every
/// message arrives exactly once and in order.
#[test]
fn dual_delivers_exactly_once_in_order_across_cuts_of_main() {
    for seed in 0..24u64 {
        let mut sim: Sim<DualNode> = Sim::new(seed, Faults::none());
        let server = sim.add_node(Either::Right(dual::DualServer::new(
            dual::DualServerConfig {
                session_timeout: Duration::from_secs(600),
                ..dual::DualServerConfig::default()
            },
            SeqTokens::new(seed),
        )));
        let client = sim.add_node(Either::Left(dual::DualClient::new(
            dual::DualClientConfig {
                reconnect: dual::Retry {
                    attempts: 100,
                    initial: Duration::from_millis(200),
                    max: Duration::from_secs(1),
                },
                on_feed_lost: dual::FeedLossPolicy::Reinit,
                ..dual::DualClientConfig::default()
            },
        )));
        sim.route(client, Channel::Main, server);
        sim.route(client, Channel::Feed, server);
        sim.command(client, Either::Left(dual::DualClientCommand::Connect));
        sim.run_for(Duration::from_secs(2));
        let player = sim.node(client).left().unwrap().player().unwrap();
        let (mut c_sent, mut s_sent) = (0u32, 0u32);
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for round in 0..60u32 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            for _ in 0..(rng % 5) {
                c_sent += 1;
                sim.command(
                    client,
                    Either::Left(dual::DualClientCommand::Send(app(b'c', c_sent))),
                );
                s_sent += 1;
                sim.command(
                    server,
                    Either::Right(dual::DualServerCommand::Send {
                        player,
                        message: app(b's', s_sent),
                    }),
                );
            }
            let errors = sim.take_errors(client).len() + sim.take_errors(server).len();
            assert_eq!(errors, 0, "seed {seed}: nothing refused");
            sim.run_for(Duration::from_millis(rng % 40));
            if round % 7 == (seed % 7) as u32 {
                sim.cut(client, Channel::Main);
            }
        }
        sim.run_for(Duration::from_secs(30));
        let mut got: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
        for e in sim.take_events(client) {
            if let Either::Left(dual::DualClientEvent::Message { message: m, .. }) = e {
                let (side, n) = number(&m).unwrap();
                got.entry(side).or_default().push(n);
            }
        }
        for e in sim.take_events(server) {
            if let Either::Right(dual::DualServerEvent::Message { message, .. }) = e {
                let (side, n) = number(&message).unwrap();
                got.entry(side).or_default().push(n);
            }
        }
        assert_eq!(
            got.remove(&b's').unwrap_or_default(),
            (1..=s_sent).collect::<Vec<_>>(),
            "seed {seed}"
        );
        assert_eq!(
            got.remove(&b'c').unwrap_or_default(),
            (1..=c_sent).collect::<Vec<_>>(),
            "seed {seed}"
        );
    }
}
