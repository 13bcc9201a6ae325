//! Unit tests of the two-machine harness.

use super::*;
use crate::driver::Outbox;

/// A toy machine: answers `ping` with `pong`, reports every input, dials, closes,
/// arms a timer and refuses `bad` on command or in the bytes.
#[derive(Default)]
struct Toy {
    out: Outbox<Seen>,
    links: Vec<Link>,
    timer: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Opened(Link),
    Got(Link, Bytes),
    Closed(Link),
    Fired(Instant),
}

enum Cmd {
    Send(&'static [u8]),
    Dial(Channel),
    Close,
    Arm(Duration),
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

impl Machine for Toy {
    type Command = Cmd;
    type Event = Seen;
    type Error = Refused;

    fn handle_input(&mut self, now: Instant, input: Input<Cmd>) -> Result<(), Refused> {
        match input {
            Input::Opened(l) => {
                self.links.push(l);
                self.out.event(Seen::Opened(l));
            }
            Input::Received(_, b) if &b[..] == b"bad" => return Err(Refused),
            Input::Received(l, b) => {
                if &b[..] == b"ping" {
                    self.out.send_raw(l, Bytes::from_static(b"pong"));
                }
                self.out.event(Seen::Got(l, b));
            }
            Input::Closed(l) => {
                self.links.retain(|k| *k != l);
                self.out.event(Seen::Closed(l));
            }
            Input::Timeout => {
                if self.timer.is_some_and(|t| t <= now) {
                    self.timer = None;
                    self.out.event(Seen::Fired(now));
                }
            }
            Input::Command(Cmd::Send(b)) => {
                let l = *self.links.first().ok_or(Refused)?;
                self.out.send_raw(l, Bytes::from_static(b));
            }
            Input::Command(Cmd::Dial(c)) => self.out.open(c),
            Input::Command(Cmd::Close) => {
                let l = *self.links.first().ok_or(Refused)?;
                self.out.close(l);
            }
            Input::Command(Cmd::Arm(d)) => self.timer = Some(now + d),
        }
        Ok(())
    }

    fn poll_output(&mut self) -> Output<Seen> {
        self.out.pop_or_wait(self.timer)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.out.is_empty() {
            self.timer
        } else {
            Some(Instant::ZERO)
        }
    }

    fn is_closed(&self) -> bool {
        false
    }
}

fn pair() -> Pair<Toy, Toy> {
    Pair::new(Toy::default(), Toy::default())
}

const L1: Link = Link::main(1);

fn got(l: Link, b: &'static [u8]) -> Seen {
    Seen::Got(l, Bytes::from_static(b))
}

#[test]
fn straight_across_until_quiet() {
    let mut p = pair();
    p.open(L1);
    p.client_in(Input::Command(Cmd::Send(b"ping")));
    assert_eq!(p.client_events, [Seen::Opened(L1), got(L1, b"pong")]);
    assert_eq!(p.server_events, [Seen::Opened(L1), got(L1, b"ping")]);
    assert!(p.wire.is_empty());
    assert_eq!(
        p.counts(Side::Client),
        Counts {
            transmits: 1,
            bytes: 4,
            events: 2
        }
    );
    assert!(p.has_link(Side::Server, L1));
    assert_eq!(p.take_client_events().len(), 2);
    assert!(p.client_events.is_empty());
}

#[test]
fn held_packets_wait_for_the_test() {
    let mut p = pair().held();
    p.open(L1);
    p.client_in(Input::Command(Cmd::Send(b"ping")));
    p.client_in(Input::Command(Cmd::Send(b"one")));
    assert_eq!(p.wire.len(), 2);
    assert_eq!(p.wire[0].bytes().map(|b| &b[..]), Some(&b"ping"[..]));
    let dropped = p.pop_to(Side::Server).unwrap();
    assert_eq!(dropped.to(), Side::Server);
    assert!(p.deliver_next()); // "one"
    p.deliver(dropped.clone()); // late, and twice
    p.deliver(dropped);
    assert_eq!(
        p.server_events[1..],
        [got(L1, b"one"), got(L1, b"ping"), got(L1, b"ping")]
    );
    assert_eq!(p.wire.len(), 2, "two pongs wait");
    p.drive();
    assert!(p.wire.is_empty());
    assert_eq!(p.client_events[1..], [got(L1, b"pong"), got(L1, b"pong")]);
    assert!(!p.deliver_next());
}

#[test]
fn opens_are_recorded_or_granted() {
    let mut p = pair();
    p.client_in(Input::Command(Cmd::Dial(Channel::Main)));
    assert_eq!(p.opens.len(), 1);
    assert_eq!(p.opens[0].link, None);
    assert!(p.client_events.is_empty(), "nobody opened it");

    let mut p = pair().granting_opens();
    p.client_in(Input::Command(Cmd::Dial(Channel::Main)));
    p.client_in(Input::Command(Cmd::Dial(Channel::Feed)));
    let feed = Link::feed(2);
    assert_eq!(
        p.opens.iter().map(|o| o.link).collect::<Vec<_>>(),
        [Some(L1), Some(feed)]
    );
    assert_eq!(p.client_events, [Seen::Opened(L1), Seen::Opened(feed)]);
    assert_eq!(
        p.server_events,
        [Seen::Opened(L1)],
        "a datagram socket has no accept"
    );
    p.freeze(Side::Server);
    p.client_in(Input::Command(Cmd::Dial(Channel::Main)));
    assert!(
        !p.has_link(Side::Server, Link::main(3)),
        "a frozen server misses it"
    );
}

#[test]
fn closes_recorded_forwarded_or_reset() {
    let mut p = pair();
    p.open(L1);
    p.client_in(Input::Command(Cmd::Close));
    assert_eq!(p.closes.len(), 1);
    assert_eq!((p.closes[0].side, p.closes[0].link), (Side::Client, L1));
    assert!(p.has_link(Side::Server, L1), "recorded only");

    // Forward: behind what was sent before, the closer not told.
    let mut p = pair().held().with_closes(Closes::Forward);
    p.open(L1);
    p.client_in(Input::Command(Cmd::Send(b"last")));
    p.client_in(Input::Command(Cmd::Close));
    assert_eq!(
        p.wire[1],
        Packet::Closed {
            to: Side::Server,
            link: L1
        }
    );
    p.drive();
    assert_eq!(p.server_events[1..], [got(L1, b"last"), Seen::Closed(L1)]);
    assert_eq!(p.client_events, [Seen::Opened(L1)]);

    // Reset: in flight lost, both told now.
    let mut p = pair().held().with_closes(Closes::Reset);
    p.open(L1);
    p.client_in(Input::Command(Cmd::Send(b"lost")));
    p.client_in(Input::Command(Cmd::Close));
    assert!(p.wire.is_empty());
    assert_eq!(p.client_events[1..], [Seen::Closed(L1)]);
    assert_eq!(p.server_events[1..], [Seen::Closed(L1)]);
}

#[test]
fn cuts_whole_and_half_open() {
    let mut p = pair().held();
    p.open(L1);
    p.client_in(Input::Command(Cmd::Send(b"lost")));
    p.cut(L1);
    assert!(p.wire.is_empty());
    assert_eq!(p.client_events[1..], [Seen::Closed(L1)]);
    assert_eq!(p.server_events[1..], [Seen::Closed(L1)]);

    let mut p = pair().held();
    p.open(L1);
    p.server_in(Input::Command(Cmd::Send(b"lost")));
    p.cut_half(Side::Client, L1);
    assert!(p.wire.is_empty());
    assert!(!p.has_link(Side::Client, L1));
    assert!(p.has_link(Side::Server, L1), "the server never learns");
    assert_eq!(p.server_events.len(), 1);
}

#[test]
fn a_frozen_side_hears_and_says_nothing_until_thawed() {
    let mut p = pair();
    p.open(L1);
    p.server_in(Input::Command(Cmd::Arm(Duration::from_secs(1))));
    p.freeze(Side::Server);
    p.client_in(Input::Command(Cmd::Send(b"ping")));
    assert_eq!(p.wire.len(), 1, "waits for the frozen server");
    p.run_for(Duration::from_secs(5));
    assert_eq!(p.now, Instant::from_secs(5));
    assert_eq!(p.server_events.len(), 1, "no timer, no packet");
    assert!(p.is_frozen(Side::Server));
    p.thaw(Side::Server);
    p.drive();
    assert_eq!(p.client_events[1..], [got(L1, b"pong")]);
    p.run_for(Duration::ZERO);
    assert_eq!(p.server_events[2..], [Seen::Fired(Instant::from_secs(5))]);
}

#[test]
fn timers_fire_at_their_deadlines_in_virtual_time() {
    let mut p = pair().at(Instant::from_secs(10));
    p.client_in(Input::Command(Cmd::Arm(Duration::from_secs(2))));
    p.server_in(Input::Command(Cmd::Arm(Duration::from_secs(1))));
    assert_eq!(p.next_deadline(), Some(Instant::from_secs(11)));
    p.advance(Duration::from_millis(500));
    assert!(p.server_events.is_empty());
    p.run_until(Instant::from_secs(20));
    assert_eq!(p.now, Instant::from_secs(20));
    assert_eq!(p.server_events, [Seen::Fired(Instant::from_secs(11))]);
    assert_eq!(p.client_events, [Seen::Fired(Instant::from_secs(12))]);

    assert_eq!(p.deadline(Side::Client), None);
    p.client_in(Input::Command(Cmd::Arm(Duration::from_secs(1))));
    p.fire(Side::Client); // early: harmless
    assert_eq!(p.client_events.len(), 1);
    assert_eq!(p.deadline(Side::Client), Some(Instant::from_secs(21)));
}

#[test]
fn errors_are_kept_or_fail_the_test() {
    let mut p = pair();
    p.open(L1);
    p.client_in(Input::Command(Cmd::Send(b"bad")));
    assert_eq!(p.server_errors.len(), 1);
    p.client_in(Input::Command(Cmd::Close));
    p.client_in(Input::Command(Cmd::Send(b"x")));
    assert_eq!(
        p.client_errors.len(),
        0,
        "closes are recorded only: it still has L1"
    );
    let mut q = pair();
    q.client_in(Input::Command(Cmd::Close));
    assert_eq!(q.client_errors.len(), 1, "no link to close");
}

#[test]
#[should_panic(expected = "the server refused Received")]
fn a_strict_side_panics() {
    let mut p = pair().strict(Side::Server);
    p.open(L1);
    p.client_in(Input::Command(Cmd::Send(b"bad")));
}

#[test]
fn streams_can_arrive_split() {
    let mut p = pair().splitting(Side::Server, Some(1));
    p.open(L1);
    p.client_in(Input::Command(Cmd::Send(b"one")));
    assert_eq!(p.server_events[1..], [got(L1, b"o"), got(L1, b"ne")]);
}

#[test]
fn without_events_only_counts() {
    let mut p = pair().without_events().checking_deadlines();
    p.open(L1);
    p.client_in(Input::Command(Cmd::Send(b"ping")));
    assert!(p.client_events.is_empty() && p.server_events.is_empty());
    assert_eq!(p.counts(Side::Server).events, 2);
    let (c, _) = p.into_machines();
    assert_eq!(c.links, [L1]);
}

#[test]
fn drain_sorts_one_machines_outputs() {
    let mut m = Toy::default();
    m.handle_input(Instant::ZERO, Input::Opened(L1)).unwrap();
    m.handle_input(Instant::ZERO, Input::Command(Cmd::Send(b"x")))
        .unwrap();
    m.handle_input(Instant::ZERO, Input::Command(Cmd::Dial(Channel::Feed)))
        .unwrap();
    m.handle_input(Instant::ZERO, Input::Command(Cmd::Close))
        .unwrap();
    m.handle_input(
        Instant::ZERO,
        Input::Command(Cmd::Arm(Duration::from_secs(1))),
    )
    .unwrap();
    let out = drain(&mut m);
    assert_eq!(out.events, [Seen::Opened(L1)]);
    assert_eq!(out.transmits.len(), 1);
    assert_eq!(out.opens, [Channel::Feed]);
    assert_eq!(out.closes, [L1]);
    assert_eq!(out.deadline, Some(Instant::from_secs(1)));
    assert!(drain(&mut m).is_empty());
}
