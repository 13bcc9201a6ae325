//! The simulator itself: deterministic, ordered streams, lossy datagrams, cuts, partitions,
//! clock jumps.
#![cfg(feature = "testkit")]

use bytes::{BufMut, Bytes, BytesMut};
use tether::testkit::{Faults, NodeId, Sim};
use tether::{Channel, Duration, Input, Instant, Link, Machine, Outbox, Output};

/// A toy machine: on command it dials `main` and `feed` and sends numbered messages; it
/// records every byte it receives and every open/close.
#[derive(Default)]
struct Toy {
    out: Outbox<Seen>,
    main: Option<Link>,
    feed: Option<Link>,
    to_send: u32,
    timer: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Opened(Link),
    Closed(Link),
    Stream(Bytes),
    Datagram(Bytes),
    Tick(Instant),
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Machine for Toy {
    type Command = u32;
    type Event = Seen;
    type Error = Never;

    fn handle_input(&mut self, now: Instant, input: Input<u32>) -> Result<(), Never> {
        match input {
            Input::Command(n) => {
                self.to_send = n;
                self.out.open(Channel::Main);
                self.out.open(Channel::Feed);
                self.timer = Some(now + Duration::from_millis(100));
            }
            Input::Opened(link) => {
                self.out.event(Seen::Opened(link));
                match link.channel {
                    Channel::Main => {
                        self.main = Some(link);
                        for i in 0..self.to_send {
                            let mut b = BytesMut::new();
                            b.put_u32(i);
                            self.out.send_raw(link, b.freeze());
                        }
                    }
                    Channel::Feed => {
                        self.feed = Some(link);
                        for i in 0..self.to_send {
                            let mut b = BytesMut::new();
                            b.put_u32(i);
                            self.out.send_raw(link, b.freeze());
                        }
                    }
                }
            }
            Input::Received(link, bytes) => self.out.event(match link.channel {
                Channel::Main => Seen::Stream(bytes),
                Channel::Feed => Seen::Datagram(bytes),
            }),
            Input::Closed(link) => self.out.event(Seen::Closed(link)),
            Input::Timeout => {
                self.out.event(Seen::Tick(now));
                self.timer = None;
            }
        }
        Ok(())
    }

    fn poll_output(&mut self) -> Output<Seen> {
        self.out.pop_or_wait(self.timer)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    /// The toy never ends: it reports what it sees for as long as the test runs.
    fn is_closed(&self) -> bool {
        false
    }
}

fn pair(seed: u64, faults: Faults) -> (Sim<Toy>, NodeId, NodeId) {
    let mut sim = Sim::new(seed, faults);
    let a = sim.add_node(Toy::default());
    let b = sim.add_node(Toy::default());
    sim.route(a, Channel::Main, b);
    sim.route(a, Channel::Feed, b);
    (sim, a, b)
}

fn stream_bytes(events: &[Seen]) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            Seen::Stream(b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn expected_stream(n: u32) -> Vec<u8> {
    (0..n).flat_map(|i| i.to_be_bytes()).collect()
}

#[test]
fn streams_arrive_whole_and_in_order_even_when_chunked() {
    let faults = Faults {
        max_chunk: 3,
        ..Faults::none()
    };
    let (mut sim, a, b) = pair(1, faults);
    sim.command(a, 50);
    sim.run_for(Duration::from_secs(1));
    let events = sim.take_events(b);
    let chunks = events
        .iter()
        .filter(|e| matches!(e, Seen::Stream(_)))
        .count();
    assert!(chunks > 50, "split into {chunks} chunks");
    assert_eq!(stream_bytes(&events), expected_stream(50));
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let run = |seed| {
        let (mut sim, a, b) = pair(seed, Faults::rough());
        sim.command(a, 200);
        sim.run_for(Duration::from_secs(2));
        (sim.take_events(a), sim.take_events(b), sim.stats())
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn datagrams_are_lost_duplicated_and_reordered() {
    let faults = Faults {
        latency: Duration::from_millis(5),
        jitter: Duration::from_millis(30),
        loss_per_million: 200_000,
        duplicate_per_million: 200_000,
        cut_per_million: 0,
        max_chunk: 0,
    };
    let (mut sim, a, b) = pair(3, faults);
    sim.command(a, 500);
    sim.run_for(Duration::from_secs(1));
    let got: Vec<u32> = sim
        .take_events(b)
        .iter()
        .filter_map(|e| match e {
            Seen::Datagram(d) => Some(u32::from_be_bytes([d[0], d[1], d[2], d[3]])),
            _ => None,
        })
        .collect();
    let stats = sim.stats();
    assert!(stats.lost > 50 && stats.duplicated > 50, "{stats:?}");
    assert_eq!(got.len() as u64, 500 - stats.lost + stats.duplicated);
    assert!(got.windows(2).any(|w| w[0] > w[1]), "some reordering");
}

#[test]
fn a_cut_closes_both_ends_and_loses_what_was_in_flight() {
    let (mut sim, a, b) = pair(4, Faults::none());
    sim.command(a, 10);
    // Opened arrives after 1 ms; the data would arrive 1 ms after that.
    sim.run_for(Duration::from_micros(1_500));
    sim.cut(a, Channel::Main);
    sim.run_for(Duration::from_secs(1));
    let eb = sim.take_events(b);
    assert!(eb.iter().any(|e| matches!(e, Seen::Closed(_))));
    assert!(
        stream_bytes(&eb).is_empty(),
        "in-flight bytes lost with the cut"
    );
    assert!(sim
        .take_events(a)
        .iter()
        .any(|e| matches!(e, Seen::Closed(l) if l.channel == Channel::Main)));
    assert_eq!(sim.stats().cuts, 1);
}

#[test]
fn partitions_fail_dials_and_drop_datagrams_until_healed() {
    let (mut sim, a, b) = pair(5, Faults::none());
    sim.partition(a, b);
    sim.command(a, 3);
    sim.run_for(Duration::from_secs(1));
    let ea = sim.take_events(a);
    // main died at birth: opened then closed at once.
    let main_events: Vec<&Seen> = ea
        .iter()
        .filter(|e| matches!(e, Seen::Opened(l) | Seen::Closed(l) if l.channel == Channel::Main))
        .collect();
    assert_eq!(main_events.len(), 2);
    assert!(sim.take_events(b).is_empty());
    assert_eq!(sim.stats().failed_dials, 1);
    assert_eq!(sim.stats().lost, 3);
    sim.heal(a, b);
    sim.command(a, 3);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(stream_bytes(&sim.take_events(b)), expected_stream(3));
}

#[test]
fn clock_jumps_shift_one_nodes_time() {
    let (mut sim, a, _b) = pair(6, Faults::none());
    sim.jump_clock(a, 3_600_000_000);
    let before = sim.local_now(a);
    sim.command(a, 0);
    sim.run_for(Duration::from_secs(1));
    let ticks: Vec<Instant> = sim
        .take_events(a)
        .iter()
        .filter_map(|e| match e {
            Seen::Tick(t) => Some(*t),
            _ => None,
        })
        .collect();
    assert_eq!(ticks, vec![before + Duration::from_millis(100)]);
    assert!(before.as_micros() > 3_600_000_000);
    // A jump backwards past zero saturates instead of panicking.
    sim.jump_clock(a, i64::MIN);
    assert_eq!(sim.local_now(a), Instant::ZERO);
}
