//! A seeded, deterministic simulated network with virtual time, for testing anything built
//! on tether's driver contract (feature `testkit`).
//!
//! [`Sim`] drives any number of [`Machine`]s of one type (wrap a client and a server in an
//! enum that implements `Machine` to mix them). It plays the driver for each of them:
//! it answers [`Output::Open`] by connecting along the routes you set, carries
//! [`Output::Transmit`] over simulated transports, fires timeouts at the deadlines the
//! machines ask for, and collects their events.
//!
//! - **Stream transports** (`main`) are reliable and ordered while they live, but split
//!   every transmit into chunks of random sizes (TCP keeps no message boundaries), and can
//!   be cut ([`Sim::cut`], or at random with [`Faults::cut_per_million`]): both ends see
//!   `Closed`, and what was in flight is lost.
//! - **Datagrams** (`feed`) are lost, duplicated and reordered (random latency) as
//!   [`Faults`] say.
//! - **Partitions** ([`Sim::partition`]) cut the stream transports between two nodes, drop
//!   their datagrams, and make dials between them fail until [`Sim::heal`].
//! - **Clock jumps** ([`Sim::jump_clock`]) shift one node's view of time, forwards or back.
//!
//! A dial that cannot succeed (no route, a partition) is reported to the dialer as
//! `Opened(link)` followed at once by `Closed(link)`: a transport that died at birth.
//! A `feed` transport is a datagram socket: the dialer sees `Opened` at once, the listener
//! sees only the datagrams, on a link id of its own for that dialer.
//!
//! Everything comes from the seed: the same seed and the same calls give the same run.
//!
//! For two machines and a test that moves every packet itself, [`Pair`] is the smaller
//! harness (quinn-proto's is the model): transmits across at once or held on a wire the
//! test reorders, drops and delivers one by one, events and errors per side, opens and
//! closes recorded or acted on, timers fired in virtual time, a side frozen, a transport
//! cut. [`drain`] collects one machine's outputs, for a test that plays the driver by
//! hand; [`CountingTokens`] and [`SeqTokens`] are deterministic token sources.
//!
//! ```
//! use tether::testkit::{Faults, Sim};
//! # use tether::{Machine, Input, Output, Instant, Channel, Link, Outbox};
//! # struct Echo { out: Outbox<u8> }
//! # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
//! # impl Machine for Echo {
//! #     type Command = (); type Event = u8; type Error = Never;
//! #     fn handle_input(&mut self, _: Instant, input: Input<()>) -> Result<(), Never> {
//! #         match input {
//! #             Input::Received(_, b) => self.out.event(b.len() as u8),
//! #             Input::Command(()) => self.out.open(Channel::Main),
//! #             Input::Opened(l) => self.out.send_raw(l, bytes::Bytes::from_static(b"hi")),
//! #             _ => {}
//! #         }
//! #         Ok(())
//! #     }
//! #     fn poll_output(&mut self) -> Output<u8> { self.out.pop_or_wait(None) }
//! #     fn poll_timeout(&self) -> Option<Instant> { None }
//! #     fn is_closed(&self) -> bool { false } // echoes for as long as it lives
//! # }
//! let mut sim = Sim::new(42, Faults::none());
//! let a = sim.add_node(Echo { out: Outbox::new() });
//! let b = sim.add_node(Echo { out: Outbox::new() });
//! sim.route(a, Channel::Main, b);
//! sim.command(a, ());
//! sim.run_for(tether::Duration::from_secs(1));
//! let got: u32 = sim.take_events(b).iter().map(|n| u32::from(*n)).sum();
//! assert_eq!(got, 2); // "hi", in however many chunks it arrived
//! ```

mod either;
mod pair;
mod rng;
pub mod scenario;
mod tokens;

pub use either::{Either, WrongSide};
pub use pair::{drain, Close, Closes, Counts, Drained, Open, Packet, Pair, Side};
pub use rng::SimRng;
pub use tokens::{CountingTokens, SeqTokens};

use crate::driver::{Channel, Input, Link, Machine, Output};
use crate::time::{Duration, Instant};
use alloc::collections::{BTreeMap, BTreeSet, BinaryHeap};
use alloc::vec::Vec;
use bytes::Bytes;
use core::cmp::{Ordering, Reverse};

/// A node of the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// The network's misbehaviour. Probabilities are in parts per million.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Faults {
    /// One-way latency of every delivery.
    pub latency: Duration,
    /// Extra random latency, up to this much, per datagram (reorders them) and per dial.
    pub jitter: Duration,
    /// Datagrams lost.
    pub loss_per_million: u32,
    /// Datagrams delivered twice.
    pub duplicate_per_million: u32,
    /// Stream transmits that cut their transport instead of arriving.
    pub cut_per_million: u32,
    /// Largest chunk a stream transmit is split into (0: never split).
    pub max_chunk: u16,
}

impl Faults {
    /// A perfect network: 1 ms latency, nothing lost, nothing split.
    pub const fn none() -> Faults {
        Faults {
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss_per_million: 0,
            duplicate_per_million: 0,
            cut_per_million: 0,
            max_chunk: 0,
        }
    }

    /// A bad network: 5-25 ms latency, 10% loss, 5% duplication, streams split in chunks of
    /// at most 7 bytes, 1% of stream transmits cut their transport.
    pub const fn rough() -> Faults {
        Faults {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(20),
            loss_per_million: 100_000,
            duplicate_per_million: 50_000,
            cut_per_million: 10_000,
            max_chunk: 7,
        }
    }
}

/// Counters of what the network did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Inputs delivered to machines (all kinds).
    pub delivered: u64,
    /// Datagrams lost.
    pub lost: u64,
    /// Datagrams duplicated.
    pub duplicated: u64,
    /// Transports cut (by faults, partitions or [`Sim::cut`]).
    pub cuts: u64,
    /// Dials that failed.
    pub failed_dials: u64,
    /// Inputs the machines refused with an error.
    pub errors: u64,
}

#[derive(Debug)]
struct Conn {
    channel: Channel,
    ends: [(usize, u64); 2],
    /// No more transmits accepted.
    closed: bool,
    /// In-flight data is lost too.
    cut: bool,
    /// Last scheduled delivery in each direction (streams keep order).
    last: [Instant; 2],
}

#[derive(Debug)]
struct Scheduled<C> {
    at: Instant,
    seq: u64,
    node: usize,
    conn: Option<usize>,
    input: Input<C>,
}

impl<C> PartialEq for Scheduled<C> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<C> Eq for Scheduled<C> {}
impl<C> PartialOrd for Scheduled<C> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<C> Ord for Scheduled<C> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Node<M: Machine> {
    machine: M,
    events: Vec<M::Event>,
    errors: Vec<M::Error>,
    /// Deadline in the node's own time.
    deadline: Option<Instant>,
    /// The node's clock minus the simulation's, in microseconds.
    offset: i64,
    next_link: u64,
}

/// The simulator. See the [module docs](self).
pub struct Sim<M: Machine> {
    now: Instant,
    rng: SimRng,
    faults: Faults,
    nodes: Vec<Node<M>>,
    routes: BTreeMap<(usize, Channel), usize>,
    conns: Vec<Conn>,
    by_end: BTreeMap<(usize, u64), usize>,
    partitions: BTreeSet<(usize, usize)>,
    queue: BinaryHeap<Reverse<Scheduled<M::Command>>>,
    seq: u64,
    stats: SimStats,
    spins: u32,
}

impl<M: Machine> Sim<M> {
    /// An empty network whose randomness comes from `seed`.
    pub fn new(seed: u64, faults: Faults) -> Self {
        Sim {
            now: Instant::from_millis(1_000),
            rng: SimRng::new(seed),
            faults,
            nodes: Vec::new(),
            routes: BTreeMap::new(),
            conns: Vec::new(),
            by_end: BTreeMap::new(),
            partitions: BTreeSet::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            stats: SimStats::default(),
            spins: 0,
        }
    }

    /// Adds a machine; its outputs are drained at once.
    pub fn add_node(&mut self, machine: M) -> NodeId {
        self.nodes.push(Node {
            machine,
            events: Vec::new(),
            errors: Vec::new(),
            deadline: None,
            offset: 0,
            next_link: 1,
        });
        let id = self.nodes.len() - 1;
        self.drain(id);
        NodeId(id)
    }

    /// `from`'s [`Output::Open`] for `channel` connects to `to`.
    pub fn route(&mut self, from: NodeId, channel: Channel, to: NodeId) {
        self.routes.insert((from.0, channel), to.0);
    }

    /// The simulation's time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The node's view of time (the simulation's, shifted by its clock jumps).
    pub fn local_now(&self, id: NodeId) -> Instant {
        self.local(id.0, self.now)
    }

    /// Changes the network's misbehaviour from now on (e.g. [`Faults::none`] to let
    /// everything converge).
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// What the network did so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// The machine of a node.
    pub fn node(&self, id: NodeId) -> &M {
        &self.nodes[id.0].machine
    }

    /// The machine of a node, to inspect or poke (drain with [`Sim::drain_node`] after).
    pub fn node_mut(&mut self, id: NodeId) -> &mut M {
        &mut self.nodes[id.0].machine
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The events a node emitted since the last call.
    pub fn take_events(&mut self, id: NodeId) -> Vec<M::Event> {
        core::mem::take(&mut self.nodes[id.0].events)
    }

    /// The errors a node's machine returned since the last call.
    pub fn take_errors(&mut self, id: NodeId) -> Vec<M::Error> {
        core::mem::take(&mut self.nodes[id.0].errors)
    }

    /// Transports of this node that are still open.
    pub fn open_links(&self, id: NodeId) -> usize {
        self.conns
            .iter()
            .filter(|c| !c.closed && c.ends.iter().any(|e| e.0 == id.0))
            .count()
    }

    /// The far end of `id`'s transport `link_id`, while it is open: which node, and that
    /// node's link id for it. Lets a test pair up the two ends of a connection.
    pub fn far_end(&self, id: NodeId, link_id: u64) -> Option<(NodeId, u64)> {
        let &c = self.by_end.get(&(id.0, link_id))?;
        let conn = self.conns.get(c).filter(|c| !c.closed)?;
        let side = usize::from(conn.ends[1] == (id.0, link_id));
        let (node, link) = conn.ends[1 - side];
        Some((NodeId(node), link))
    }

    /// Gives the node an application command now.
    pub fn command(&mut self, id: NodeId, command: M::Command) {
        self.deliver(id.0, Input::Command(command));
    }

    /// Drains a node's outputs after it was changed through [`Sim::node_mut`].
    pub fn drain_node(&mut self, id: NodeId) {
        self.drain(id.0);
    }

    /// Cuts every open transport of `id` on `channel`: both ends see `Closed` now.
    pub fn cut(&mut self, id: NodeId, channel: Channel) {
        let victims: Vec<usize> = (0..self.conns.len())
            .filter(|&c| {
                let conn = &self.conns[c];
                !conn.closed && conn.channel == channel && conn.ends.iter().any(|e| e.0 == id.0)
            })
            .collect();
        for c in victims {
            self.cut_conn(c);
        }
    }

    /// Separates `a` and `b` until [`Sim::heal`]: their stream transports are cut, their
    /// datagrams lost, their dials fail.
    pub fn partition(&mut self, a: NodeId, b: NodeId) {
        self.partitions.insert(pair(a.0, b.0));
        let victims: Vec<usize> = (0..self.conns.len())
            .filter(|&c| {
                let conn = &self.conns[c];
                !conn.closed
                    && conn.channel == Channel::Main
                    && pair(conn.ends[0].0, conn.ends[1].0) == pair(a.0, b.0)
            })
            .collect();
        for c in victims {
            self.cut_conn(c);
        }
    }

    /// Ends the partition between `a` and `b`.
    pub fn heal(&mut self, a: NodeId, b: NodeId) {
        self.partitions.remove(&pair(a.0, b.0));
    }

    /// Ends every partition.
    pub fn heal_all(&mut self) {
        self.partitions.clear();
    }

    /// Shifts `id`'s clock by `micros` (negative: backwards). Its next input sees it.
    pub fn jump_clock(&mut self, id: NodeId, micros: i64) {
        let node = &mut self.nodes[id.0];
        node.offset = node.offset.saturating_add(micros);
    }

    /// Runs the simulation for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs until virtual time `until`; returns the number of inputs delivered.
    pub fn run_until(&mut self, until: Instant) -> u64 {
        let start = self.stats.delivered;
        while self.step_before(until) {}
        self.now = self.now.max(until);
        self.stats.delivered - start
    }

    /// Delivers the next scheduled input or timeout if it is due at or before `until`.
    /// Returns false when nothing is.
    pub fn step_before(&mut self, until: Instant) -> bool {
        let next_queue = self.queue.peek().map(|Reverse(s)| s.at);
        let next_timer = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.deadline.map(|d| (self.global(i, d), i)))
            .min();
        let take_timer = match (next_queue, next_timer) {
            (None, None) => return false,
            (Some(q), Some((t, _))) => t < q,
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        if take_timer {
            let Some((at, node)) = next_timer else {
                return false;
            };
            if at > until {
                return false;
            }
            self.now = self.now.max(at);
            self.nodes[node].deadline = None;
            self.deliver(node, Input::Timeout);
            // A machine that keeps asking to be woken at a time already past, without any
            // other input, would spin the simulation forever: that is a bug in the machine.
            let again = self.nodes[node].deadline.map(|d| self.global(node, d));
            if again.is_some_and(|d| d <= self.now) {
                self.spins += 1;
                assert!(
                    self.spins < 10_000,
                    "node {node} asks for a timeout in the past again and again (livelock)"
                );
            } else {
                self.spins = 0;
            }
        } else {
            let Some(Reverse(s)) = self.queue.pop() else {
                return false;
            };
            if s.at > until {
                self.queue.push(Reverse(s));
                return false;
            }
            self.now = self.now.max(s.at);
            if let (Some(c), Input::Received(..)) = (s.conn, &s.input) {
                if self.conns[c].cut {
                    return true; // lost with its transport
                }
            }
            self.deliver(s.node, s.input);
        }
        true
    }

    fn local(&self, node: usize, t: Instant) -> Instant {
        shift(t, self.nodes[node].offset)
    }

    fn global(&self, node: usize, t: Instant) -> Instant {
        shift(t, self.nodes[node].offset.saturating_neg())
    }

    fn schedule(
        &mut self,
        at: Instant,
        node: usize,
        conn: Option<usize>,
        input: Input<M::Command>,
    ) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            node,
            conn,
            input,
        }));
    }

    fn deliver(&mut self, node: usize, input: Input<M::Command>) {
        let now = self.local(node, self.now);
        self.stats.delivered += 1;
        if let Err(e) = self.nodes[node].machine.handle_input(now, input) {
            self.stats.errors += 1;
            self.nodes[node].errors.push(e);
        }
        self.drain(node);
    }

    fn drain(&mut self, node: usize) {
        loop {
            match self.nodes[node].machine.poll_output() {
                Output::Transmit(t) => self.transmit(node, t.link, t.payload),
                Output::Event(e) => self.nodes[node].events.push(e),
                Output::Open(channel) => self.dial(node, channel),
                Output::Close(link) => self.close(node, link),
                Output::Wait(deadline) => {
                    self.nodes[node].deadline = deadline;
                    return;
                }
            }
        }
    }

    fn new_link(&mut self, node: usize) -> u64 {
        let n = &mut self.nodes[node];
        let id = n.next_link;
        n.next_link += 1;
        id
    }

    fn dial(&mut self, node: usize, channel: Channel) {
        let link = self.new_link(node);
        let target = self.routes.get(&(node, channel)).copied();
        // A datagram socket opens whatever the network does; only a stream dial can fail.
        let reachable = target
            .filter(|&t| channel == Channel::Feed || !self.partitions.contains(&pair(node, t)));
        let Some(target) = reachable else {
            // Died at birth: the machine sees a transport that opened and closed at once.
            self.stats.failed_dials += 1;
            let at = self.now + self.faults.latency;
            let l = Link { id: link, channel };
            self.schedule(at, node, None, Input::Opened(l));
            self.schedule(at, node, None, Input::Closed(l));
            return;
        };
        let far = self.new_link(target);
        let conn = self.conns.len();
        self.conns.push(Conn {
            channel,
            ends: [(node, link), (target, far)],
            closed: false,
            cut: false,
            last: [self.now; 2],
        });
        self.by_end.insert((node, link), conn);
        self.by_end.insert((target, far), conn);
        match channel {
            Channel::Main => {
                let at = self.now + self.faults.latency + self.jitter();
                self.conns[conn].last = [at; 2];
                self.schedule(
                    at,
                    target,
                    Some(conn),
                    Input::Opened(Link { id: far, channel }),
                );
                self.schedule(
                    at,
                    node,
                    Some(conn),
                    Input::Opened(Link { id: link, channel }),
                );
            }
            Channel::Feed => {
                let at = self.now;
                self.schedule(
                    at,
                    node,
                    Some(conn),
                    Input::Opened(Link { id: link, channel }),
                );
            }
        }
    }

    fn jitter(&mut self) -> Duration {
        Duration::from_micros(
            self.rng
                .below(self.faults.jitter.as_micros().saturating_add(1)),
        )
    }

    fn transmit(&mut self, node: usize, link: Link, payload: Bytes) {
        let Some(&c) = self.by_end.get(&(node, link.id)) else {
            return; // not a transport of ours: the driver would have nowhere to write
        };
        if self.conns[c].closed {
            return;
        }
        let side = usize::from(self.conns[c].ends[1] == (node, link.id));
        let (far_node, far_link) = self.conns[c].ends[1 - side];
        let far = Link {
            id: far_link,
            channel: self.conns[c].channel,
        };
        match self.conns[c].channel {
            Channel::Main => {
                if self.rng.chance(self.faults.cut_per_million) {
                    self.cut_conn(c);
                    return;
                }
                let mut at = self.conns[c].last[side].max(self.now + self.faults.latency);
                let mut rest = payload;
                while !rest.is_empty() {
                    let max = usize::from(self.faults.max_chunk);
                    let take = if max == 0 {
                        rest.len()
                    } else {
                        1 + self.rng.below(max as u64) as usize
                    }
                    .min(rest.len());
                    let chunk = rest.split_to(take);
                    self.schedule(at, far_node, Some(c), Input::Received(far, chunk));
                    at += Duration::from_micros(1);
                }
                self.conns[c].last[side] = at;
            }
            Channel::Feed => {
                if self.partitions.contains(&pair(node, far_node)) {
                    self.stats.lost += 1;
                    return;
                }
                if self.rng.chance(self.faults.loss_per_million) {
                    self.stats.lost += 1;
                    return;
                }
                let copies = if self.rng.chance(self.faults.duplicate_per_million) {
                    self.stats.duplicated += 1;
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let at = self.now + self.faults.latency + self.jitter();
                    self.schedule(at, far_node, Some(c), Input::Received(far, payload.clone()));
                }
            }
        }
    }

    fn close(&mut self, node: usize, link: Link) {
        let Some(&c) = self.by_end.get(&(node, link.id)) else {
            return;
        };
        if self.conns[c].closed {
            return;
        }
        self.conns[c].closed = true;
        let side = usize::from(self.conns[c].ends[1] == (node, link.id));
        let (far_node, far_link) = self.conns[c].ends[1 - side];
        let channel = self.conns[c].channel;
        self.schedule(self.now, node, Some(c), Input::Closed(link));
        if channel == Channel::Main {
            // The peer sees the close after what was already in flight.
            let at = self.conns[c].last[side].max(self.now + self.faults.latency);
            let far = Link {
                id: far_link,
                channel,
            };
            self.schedule(at, far_node, Some(c), Input::Closed(far));
        }
    }

    fn cut_conn(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        if conn.closed {
            return;
        }
        conn.closed = true;
        conn.cut = true;
        self.stats.cuts += 1;
        let channel = conn.channel;
        let ends = conn.ends;
        for (node, id) in ends {
            // A datagram socket's listener never learns of the cut.
            if channel == Channel::Feed && node != ends[0].0 {
                continue;
            }
            self.schedule(self.now, node, Some(c), Input::Closed(Link { id, channel }));
        }
    }
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

fn shift(t: Instant, micros: i64) -> Instant {
    let v = t.as_micros();
    Instant::from_micros(if micros >= 0 {
        v.saturating_add(micros.unsigned_abs())
    } else {
        v.saturating_sub(micros.unsigned_abs())
    })
}
