//! [`Pair`]: two machines wired to each other in memory, with a hand on every packet; and
//! [`drain`], one machine's outputs collected. (What they do is in their own docs: this
//! module is private, they are re-exported at the testkit's root.)

use crate::driver::{Channel, Input, Link, Machine, Output, Transmit};
use crate::time::{Duration, Instant};
use alloc::collections::{BTreeSet, VecDeque};
use alloc::vec::Vec;
use bytes::Bytes;
use core::fmt::Debug;

/// Most outputs one machine may give in a row before the pair calls it a livelock.
const OUTPUT_LIMIT: usize = 1_000_000;
/// Most rounds of [`Pair::drive`] (a round: both sides pumped, or one packet delivered).
const DRIVE_LIMIT: usize = 10_000_000;
/// Most timer firings in a row at one instant before [`Pair::run_until`] calls it a livelock.
const SPIN_LIMIT: u32 = 10_000;

/// One of the two machines of a [`Pair`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// [`Pair::client`] (whichever machine the test put first).
    Client,
    /// [`Pair::server`].
    Server,
}

impl Side {
    /// The other side.
    pub const fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    const fn at(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Server => 1,
        }
    }
}

/// Something in flight to one side of a [`Pair`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Bytes sent on `link`: a piece of `main`'s stream, or one `feed` datagram.
    Data {
        /// Who receives it.
        to: Side,
        /// The transport (the same id at both ends).
        link: Link,
        /// What was sent.
        bytes: Bytes,
    },
    /// The peer closed `link` ([`Closes::Forward`]): the receiver sees `Closed` after what
    /// was sent before it.
    Closed {
        /// Who is told.
        to: Side,
        /// The transport.
        link: Link,
    },
}

impl Packet {
    /// Who receives it.
    pub fn to(&self) -> Side {
        match self {
            Packet::Data { to, .. } | Packet::Closed { to, .. } => *to,
        }
    }

    /// The transport it travels on.
    pub fn link(&self) -> Link {
        match self {
            Packet::Data { link, .. } | Packet::Closed { link, .. } => *link,
        }
    }

    /// The bytes, for [`Packet::Data`].
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Packet::Data { bytes, .. } => Some(bytes),
            Packet::Closed { .. } => None,
        }
    }
}

/// What a [`Pair`] does when a machine asks to close a transport ([`Output::Close`]).
/// Every close is recorded in [`Pair::closes`] whatever the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Closes {
    /// Nothing more: the test tells whom it wants.
    #[default]
    Record,
    /// An orderly close: on `main` the peer sees `Closed` after what was sent before (a
    /// [`Packet::Closed`] behind the data); a `feed` socket's close reaches nobody. The
    /// closer is not told.
    Forward,
    /// A reset: what is in flight on the transport either way is lost, and both ends see
    /// `Closed` at once (the closer, and the peer if it has the transport open and is not
    /// frozen).
    Reset,
}

/// An [`Output::Open`] a [`Pair`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    /// Who asked.
    pub side: Side,
    /// For which channel.
    pub channel: Channel,
    /// When.
    pub at: Instant,
    /// The transport the pair opened for it ([`Pair::granting_opens`]); `None` when the
    /// test opens transports itself.
    pub link: Option<Link>,
}

/// An [`Output::Close`] a [`Pair`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// Who closed.
    pub side: Side,
    /// Which transport.
    pub link: Link,
    /// When.
    pub at: Instant,
}

/// What one side of a [`Pair`] gave so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Transmits.
    pub transmits: u64,
    /// Bytes in those transmits.
    pub bytes: u64,
    /// Events (kept in the pair's lists or not: [`Pair::without_events`]).
    pub events: u64,
}

/// What the pair itself feeds a machine (a command comes only from the test).
#[derive(Debug, Clone)]
enum Net {
    Opened(Link),
    Closed(Link),
    Timeout,
}

impl Net {
    #[inline]
    fn input<C>(self) -> Input<C> {
        match self {
            Net::Opened(l) => Input::Opened(l),
            Net::Closed(l) => Input::Closed(l),
            Net::Timeout => Input::Timeout,
        }
    }
}

/// An input's kind, for a panic message (commands need not be `Debug`).
fn kind<C>(input: &Input<C>) -> &'static str {
    match input {
        Input::Opened(_) => "Opened",
        Input::Received(..) => "Received",
        Input::Closed(_) => "Closed",
        Input::Timeout => "Timeout",
        Input::Command(_) => "a command",
    }
}

/// The per-side internals of [`Pair`], written once for the client and once for the
/// server (their machines' types differ).
macro_rules! side_internals {
    ($M:ident, $machine:ident, $events:ident, $errors:ident, $side:expr, $i:expr, $name:literal,
     $give:ident, $recv:ident, $pump:ident, $refused:ident) => {
        #[cold]
        #[inline(never)]
        fn $refused(&mut self, what: &str, e: $M::Error) {
            assert!(
                !self.strict[$i],
                concat!("the ", $name, " refused {} at {:?}: {:?} ({})"),
                what, self.now, e, e
            );
            self.$errors.push(e);
        }

        /// One input, tracking the transports; without pumping.
        #[inline]
        fn $give(&mut self, input: Input<$M::Command>) {
            match &input {
                Input::Opened(l) => {
                    self.links[$i].insert(*l);
                }
                Input::Closed(l) => {
                    self.links[$i].remove(l);
                }
                _ => {}
            }
            let what = kind(&input);
            if let Err(e) = self.$machine.handle_input(self.now, input) {
                self.$refused(what, e);
            }
        }

        /// Bytes received, without pumping (the hot path: no transport to track).
        #[inline]
        fn $recv(&mut self, link: Link, bytes: Bytes) {
            if let Err(e) = self
                .$machine
                .handle_input(self.now, Input::Received(link, bytes))
            {
                self.$refused("Received", e);
            }
        }

        /// Drains the side's outputs; whether there were any.
        fn $pump(&mut self) -> bool {
            if self.frozen[$i] {
                return false;
            }
            let mut moved = false;
            for _ in 0..OUTPUT_LIMIT {
                let due = if self.check_deadlines {
                    self.$machine.poll_timeout()
                } else {
                    None
                };
                let output = self.$machine.poll_output();
                if self.check_deadlines && !matches!(output, Output::Wait(_)) {
                    assert!(
                        due.is_some_and(|d| d <= self.now),
                        concat!(
                            "the ",
                            $name,
                            " has output queued but its deadline is {:?}, not now ({:?})"
                        ),
                        due,
                        self.now
                    );
                }
                match output {
                    Output::Wait(_) => return moved,
                    Output::Event(e) => {
                        self.counts[$i].events += 1;
                        if self.keep_events {
                            self.$events.push(e);
                        }
                    }
                    Output::Transmit(t) => self.transmitted($side, t),
                    Output::Open(channel) => self.dialled($side, channel),
                    Output::Close(link) => self.closed_by($side, link),
                }
                moved = true;
            }
            panic!(concat!(
                "the ",
                $name,
                " never stops giving output (livelock)"
            ));
        }
    };
}

/// Two machines wired to each other in memory: the test's network, after quinn-proto's
/// test `Pair`.
///
/// Where the [`Sim`](super::Sim) plays a whole network from a seed, a `Pair` is the
/// smallest harness a test of two machines needs, and does only what the test asks: it
/// moves transmits from one machine to the other, collects each side's events and errors,
/// records the transports the machines open and close (and, if asked, opens them and passes
/// the closes on), fires the timers at virtual times, and can freeze a side or cut a
/// transport. The two ends of a transport share its id: the client's link 3 is the
/// server's link 3. A transport the test opens by hand should be opened through the pair
/// ([`Pair::open`], [`Pair::client_in`]) so that it knows it ([`Pair::has_link`]).
///
/// By default transmits go straight across (each one handed to the other machine as it is
/// polled), nothing happens to the transports the machines open or close but a record, a
/// machine's error is kept in its side's list, and time moves only when the test says. The
/// builder methods change that: [`held`](Pair::held) keeps transmits on the
/// [`wire`](Pair::wire) until delivered, [`granting_opens`](Pair::granting_opens) opens
/// transports, [`with_closes`](Pair::with_closes) passes closes on,
/// [`strict`](Pair::strict) panics on a side's errors.
///
/// A token-merge client and server, connected and then resumed after a cut:
///
/// ```
/// use tether::connect::merge::{MergeClient, MergeClientConfig, MergeServer, MergeServerConfig, Status};
/// use tether::testkit::{Closes, Pair, SeqTokens, Side};
/// use tether::{Duration, Event, Instant, Outcome, Token};
///
/// let client = MergeClient::new(Instant::ZERO, MergeClientConfig::default(), Token::new(&[7; 16]).unwrap()).unwrap();
/// let server = MergeServer::new(MergeServerConfig::default(), SeqTokens::new(1));
/// let mut pair = Pair::new(client, server)
///     .granting_opens()          // the client's Open(Main) becomes link 1 at both ends
///     .with_closes(Closes::Reset)
///     .strict(Side::Client);     // any error of the client's fails the test
/// pair.drive();                  // everything moves until both are quiet; no time passes
/// assert_eq!(pair.client.view().status, Status::Connected);
/// assert_eq!(pair.client_events, [Event::Up { session: (), outcome: Outcome::Fresh }]);
///
/// let link = pair.client.view().link.unwrap();
/// pair.cut(link);                // both ends see Closed; the client redials after its wait
/// pair.run_for(Duration::from_secs(5)); // timers fire at their deadlines, in virtual time
/// assert_eq!(pair.client.view().status, Status::Connected);
/// assert_eq!(pair.opens.len(), 2);
/// assert_eq!(pair.client_events.last(), Some(&Event::Up { session: (), outcome: Outcome::Resumed }));
/// ```
///
/// With [`held`](Pair::held), the test moves the packets itself:
///
/// ```
/// # use tether::connect::merge::{MergeClient, MergeClientConfig, MergeServer, MergeServerConfig, Status};
/// # use tether::testkit::{Pair, SeqTokens};
/// # use tether::{Instant, Link, Token};
/// # let client = MergeClient::new(Instant::ZERO, MergeClientConfig::default(), Token::new(&[7; 16]).unwrap()).unwrap();
/// # let server = MergeServer::new(MergeServerConfig::default(), SeqTokens::new(1));
/// let mut pair = Pair::new(client, server).held().granting_opens();
/// pair.pump(); // link 1 opens at both ends; each side's first TOKEN waits on the wire
/// assert_eq!(pair.wire.len(), 2);
/// assert!(pair.wire.iter().all(|p| p.link() == Link::main(1)));
/// let mut delivered = 0;
/// while pair.deliver_next() {
///     delivered += 1;
/// }
/// // A TOKEN and its confirmation, each way; then the server's SECRET and the client's
/// // confirmation of it.
/// assert_eq!(delivered, 6);
/// assert_eq!(pair.client.view().status, Status::Connected);
/// ```
pub struct Pair<C: Machine, S: Machine> {
    /// The first machine (usually the one that dials).
    pub client: C,
    /// The second machine.
    pub server: S,
    /// The time every input is given at; moved by the test or by the timer methods.
    pub now: Instant,
    /// Packets in flight, in the order sent (both directions). Only [`held`](Pair::held)
    /// pairs, and packets for a frozen side, wait here; the test may change it at will.
    pub wire: VecDeque<Packet>,
    /// The client's events, in order.
    pub client_events: Vec<C::Event>,
    /// The server's events, in order.
    pub server_events: Vec<S::Event>,
    /// Errors the client returned to inputs the pair gave it (unless strict).
    pub client_errors: Vec<C::Error>,
    /// Errors the server returned to inputs the pair gave it (unless strict).
    pub server_errors: Vec<S::Error>,
    /// Every [`Output::Open`], in order.
    pub opens: Vec<Open>,
    /// Every [`Output::Close`], in order.
    pub closes: Vec<Close>,
    counts: [Counts; 2],
    hold: bool,
    grant: bool,
    close_mode: Closes,
    keep_events: bool,
    check_deadlines: bool,
    strict: [bool; 2],
    frozen: [bool; 2],
    split: [Option<usize>; 2],
    links: [BTreeSet<Link>; 2],
    next_link: u64,
}

impl<C: Machine, S: Machine> Pair<C, S> {
    /// The two machines, at time zero, transmits going straight across.
    pub fn new(client: C, server: S) -> Self {
        Pair {
            client,
            server,
            now: Instant::ZERO,
            wire: VecDeque::new(),
            client_events: Vec::new(),
            server_events: Vec::new(),
            client_errors: Vec::new(),
            server_errors: Vec::new(),
            opens: Vec::new(),
            closes: Vec::new(),
            counts: [Counts::default(); 2],
            hold: false,
            grant: false,
            close_mode: Closes::Record,
            keep_events: true,
            check_deadlines: false,
            strict: [false; 2],
            frozen: [false; 2],
            split: [None; 2],
            links: [BTreeSet::new(), BTreeSet::new()],
            next_link: 1,
        }
    }

    /// Starts the clock at `now`.
    pub fn at(mut self, now: Instant) -> Self {
        self.now = now;
        self
    }

    /// Transmits wait on the [`wire`](Pair::wire) until delivered ([`Pair::deliver_next`],
    /// [`Pair::deliver`], [`Pair::drive`]...), so that the test can look at them, hold
    /// them back, drop, duplicate or reorder them.
    pub fn held(mut self) -> Self {
        self.hold = true;
        self
    }

    /// The pair opens the transports the machines ask for: each [`Output::Open`] gets the
    /// next link id (from 1). On `main` both ends see `Opened` (the peer accepted the
    /// stream; not if it is frozen); on `feed`, only the asker (a datagram socket: its
    /// peer sees only datagrams, on the same link id).
    pub fn granting_opens(mut self) -> Self {
        self.grant = true;
        self
    }

    /// What a machine's [`Output::Close`] does (see [`Closes`]; default
    /// [`Closes::Record`]).
    pub fn with_closes(mut self, closes: Closes) -> Self {
        self.close_mode = closes;
        self
    }

    /// Any error `side`'s machine returns to an input the pair gives it panics, naming the
    /// side and the input; otherwise errors are kept in its list.
    pub fn strict(mut self, side: Side) -> Self {
        self.strict[side.at()] = true;
        self
    }

    /// Events are counted ([`Pair::counts`]) but not kept: for benches, where the lists
    /// would allocate.
    pub fn without_events(mut self) -> Self {
        self.keep_events = false;
        self
    }

    /// Checks the driver contract on every output: while a machine has output queued, its
    /// [`Machine::poll_timeout`] is not later than now.
    pub fn checking_deadlines(mut self) -> Self {
        self.check_deadlines = true;
        self
    }

    /// Every `main` packet to `side` arrives in two reads, cut at `at` (modulo its length
    /// plus one), so that frames are split; `None`: whole.
    pub fn splitting(mut self, side: Side, at: Option<usize>) -> Self {
        self.split[side.at()] = at;
        self
    }

    /// What `side` gave so far.
    pub fn counts(&self, side: Side) -> Counts {
        self.counts[side.at()]
    }

    /// Whether `side` has `link` open, as far as the pair knows (it opened it, or was given
    /// `Opened` through the pair, and was not told `Closed` since).
    pub fn has_link(&self, side: Side, link: Link) -> bool {
        self.links[side.at()].contains(&link)
    }

    /// Freezes `side`, as a process stopped with SIGSTOP: the pair gives it no input
    /// (packets for it wait on the wire, its timers do not fire, a stream it would accept
    /// or a close it would see is missed) and takes no output from it, until
    /// [`Pair::thaw`].
    pub fn freeze(&mut self, side: Side) {
        self.frozen[side.at()] = true;
    }

    /// Ends a [`Pair::freeze`]; what waited for it is delivered by the next drive.
    pub fn thaw(&mut self, side: Side) {
        self.frozen[side.at()] = false;
    }

    /// Whether `side` is frozen.
    pub fn is_frozen(&self, side: Side) -> bool {
        self.frozen[side.at()]
    }

    /// Gives the client an input now, then [pumps](Pair::pump).
    pub fn client_in(&mut self, input: Input<C::Command>) {
        self.give_client(input);
        self.pump();
    }

    /// Gives the server an input now, then [pumps](Pair::pump).
    pub fn server_in(&mut self, input: Input<S::Command>) {
        self.give_server(input);
        self.pump();
    }

    /// Tells both ends that `link` is open (the server first, as a listener accepts before
    /// the dialer's connect returns), then pumps.
    pub fn open(&mut self, link: Link) {
        self.give(Side::Server, Net::Opened(link));
        self.give(Side::Client, Net::Opened(link));
        self.pump();
    }

    /// Cuts `link`: what is in flight on it either way is lost, and each end that has it
    /// open (and is not frozen) sees `Closed` now.
    pub fn cut(&mut self, link: Link) {
        self.wire.retain(|p| p.link() != link);
        for side in [Side::Client, Side::Server] {
            if self.has_link(side, link) && !self.is_frozen(side) {
                self.give(side, Net::Closed(link));
            }
        }
        self.pump();
    }

    /// Cuts `link` half-open: what is in flight on it either way is lost, but only `side`
    /// learns that it died; the other still believes it open.
    pub fn cut_half(&mut self, side: Side, link: Link) {
        self.wire.retain(|p| p.link() != link);
        self.give(side, Net::Closed(link));
        self.pump();
    }

    /// Moves each side's outputs (over and over, until neither has any): transmits across,
    /// or onto the wire when held or for a frozen side; events into the lists; opens and
    /// closes as configured. Delivers nothing that is on the wire.
    pub fn pump(&mut self) {
        while self.pump_client() | self.pump_server() {}
    }

    /// Delivers `packet` to its receiver now (frozen or not: the test says so), then pumps.
    pub fn deliver(&mut self, packet: Packet) {
        self.hand(packet);
        self.pump();
    }

    /// Delivers the first packet on the wire whose receiver is not frozen, then pumps;
    /// false if there is none.
    pub fn deliver_next(&mut self) -> bool {
        let Some(p) = self.next_deliverable() else {
            return false;
        };
        self.hand(p);
        self.pump();
        true
    }

    /// Takes the first packet on the wire for `side` off it, undelivered.
    pub fn pop_to(&mut self, side: Side) -> Option<Packet> {
        let i = self.wire.iter().position(|p| p.to() == side)?;
        self.wire.remove(i)
    }

    /// Pumps and delivers until both sides are quiet and nothing deliverable is on the
    /// wire. No time passes.
    pub fn drive(&mut self) {
        for _ in 0..DRIVE_LIMIT {
            if self.pump_client() | self.pump_server() {
                continue;
            }
            match self.next_deliverable() {
                Some(p) => self.hand(p),
                None => return,
            }
        }
        panic!("the pair never went quiet (livelock)");
    }

    /// Gives `side` a timeout now (due or not: machines look at the time), then pumps.
    pub fn fire(&mut self, side: Side) {
        self.give(side, Net::Timeout);
        self.pump();
    }

    /// Gives a timeout to each side (not frozen) whose deadline has come, then pumps;
    /// whether any had.
    pub fn fire_due(&mut self) -> bool {
        let mut any = false;
        for side in [Side::Client, Side::Server] {
            if !self.is_frozen(side) && self.deadline(side).is_some_and(|d| d <= self.now) {
                self.give(side, Net::Timeout);
                any = true;
            }
        }
        self.pump();
        any
    }

    /// `side`'s next deadline ([`Machine::poll_timeout`]).
    pub fn deadline(&self, side: Side) -> Option<Instant> {
        match side {
            Side::Client => self.client.poll_timeout(),
            Side::Server => self.server.poll_timeout(),
        }
    }

    /// The earliest deadline of the sides that are not frozen.
    pub fn next_deadline(&self) -> Option<Instant> {
        [Side::Client, Side::Server]
            .into_iter()
            .filter(|s| !self.is_frozen(*s))
            .filter_map(|s| self.deadline(s))
            .min()
    }

    /// Moves time on by `d` and fires the timers that have come (delivering nothing that
    /// is on the wire).
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.fire_due();
    }

    /// Runs until `until`: [drives](Pair::drive), then moves time to the earliest deadline
    /// and fires it, and again, while that deadline is not after `until`; then the time is
    /// `until`.
    pub fn run_until(&mut self, until: Instant) {
        let mut spins = 0;
        loop {
            self.drive();
            match self.next_deadline() {
                Some(t) if t <= until => {
                    spins = if t <= self.now { spins + 1 } else { 0 };
                    assert!(
                        spins < SPIN_LIMIT,
                        "a machine asks for a timeout in the past again and again (livelock)"
                    );
                    self.now = self.now.max(t);
                    self.fire_due();
                }
                _ => {
                    self.now = self.now.max(until);
                    return;
                }
            }
        }
    }

    /// [`Pair::run_until`] `d` from now.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// The client's events so far, taken out of the list.
    pub fn take_client_events(&mut self) -> Vec<C::Event> {
        core::mem::take(&mut self.client_events)
    }

    /// The server's events so far, taken out of the list.
    pub fn take_server_events(&mut self) -> Vec<S::Event> {
        core::mem::take(&mut self.server_events)
    }

    /// The two machines back.
    pub fn into_machines(self) -> (C, S) {
        (self.client, self.server)
    }

    // ------------------------------------------------------------------ internals

    fn next_deliverable(&mut self) -> Option<Packet> {
        let i = self.wire.iter().position(|p| !self.is_frozen(p.to()))?;
        self.wire.remove(i)
    }

    side_internals!(
        C,
        client,
        client_events,
        client_errors,
        Side::Client,
        0,
        "client",
        give_client,
        recv_client,
        pump_client,
        refused_client
    );
    side_internals!(
        S,
        server,
        server_events,
        server_errors,
        Side::Server,
        1,
        "server",
        give_server,
        recv_server,
        pump_server,
        refused_server
    );

    /// One input from the network, without pumping.
    #[inline]
    fn give(&mut self, side: Side, net: Net) {
        match side {
            Side::Client => self.give_client(net.input()),
            Side::Server => self.give_server(net.input()),
        }
    }

    /// Bytes to their receiver (in two reads if it asked for split `main` reads), without
    /// pumping.
    #[inline]
    fn hand_bytes(&mut self, to: Side, link: Link, bytes: Bytes) {
        let recv = match to {
            Side::Client => Self::recv_client,
            Side::Server => Self::recv_server,
        };
        match self.split[to.at()].filter(|_| link.channel == Channel::Main) {
            Some(at) => {
                let at = at % (bytes.len() + 1);
                recv(self, link, bytes.slice(..at));
                recv(self, link, bytes.slice(at..));
            }
            None => recv(self, link, bytes),
        }
    }

    /// A packet to its receiver, without pumping.
    fn hand(&mut self, packet: Packet) {
        match packet {
            Packet::Data { to, link, bytes } => self.hand_bytes(to, link, bytes),
            Packet::Closed { to, link } => self.give(to, Net::Closed(link)),
        }
    }

    /// Whether a packet for `to` may go across at once: not held, not frozen, and no older
    /// packet for it waiting (order is kept).
    #[inline]
    fn across(&self, to: Side) -> bool {
        !self.hold
            && !self.is_frozen(to)
            && (self.wire.is_empty() || !self.wire.iter().any(|p| p.to() == to))
    }

    /// Across at once, or onto the wire.
    fn send(&mut self, packet: Packet) {
        if self.across(packet.to()) {
            self.hand(packet);
        } else {
            self.wire.push_back(packet);
        }
    }

    #[inline]
    fn transmitted(&mut self, from: Side, t: Transmit) {
        let c = &mut self.counts[from.at()];
        c.transmits += 1;
        c.bytes += t.payload.len() as u64;
        let to = from.other();
        if self.across(to) {
            self.hand_bytes(to, t.link, t.payload);
        } else {
            self.wire.push_back(Packet::Data {
                to,
                link: t.link,
                bytes: t.payload,
            });
        }
    }

    fn dialled(&mut self, side: Side, channel: Channel) {
        let link = self.grant.then(|| {
            let id = self.next_link;
            self.next_link += 1;
            Link { id, channel }
        });
        self.opens.push(Open {
            side,
            channel,
            at: self.now,
            link,
        });
        if let Some(link) = link {
            if channel == Channel::Main && !self.is_frozen(side.other()) {
                self.give(side.other(), Net::Opened(link));
            }
            self.give(side, Net::Opened(link));
        }
    }

    fn closed_by(&mut self, side: Side, link: Link) {
        self.closes.push(Close {
            side,
            link,
            at: self.now,
        });
        match self.close_mode {
            Closes::Record => {}
            Closes::Forward => {
                self.links[side.at()].remove(&link);
                if link.channel == Channel::Main {
                    self.send(Packet::Closed {
                        to: side.other(),
                        link,
                    });
                }
            }
            Closes::Reset => {
                self.wire.retain(|p| p.link() != link);
                self.give(side, Net::Closed(link));
                let peer = side.other();
                if self.has_link(peer, link) && !self.is_frozen(peer) {
                    self.give(peer, Net::Closed(link));
                }
            }
        }
    }
}

/// One machine's outputs until it waited: see [`drain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained<E> {
    /// The transmits, in order.
    pub transmits: Vec<Transmit>,
    /// The events, in order.
    pub events: Vec<E>,
    /// The channels it asked to open.
    pub opens: Vec<Channel>,
    /// The transports it asked to close.
    pub closes: Vec<Link>,
    /// What its final [`Output::Wait`] said.
    pub deadline: Option<Instant>,
}

impl<E> Drained<E> {
    /// Whether it gave nothing but the `Wait`.
    pub fn is_empty(&self) -> bool {
        self.transmits.is_empty()
            && self.events.is_empty()
            && self.opens.is_empty()
            && self.closes.is_empty()
    }
}

/// Polls `machine` until [`Output::Wait`], sorting what it gave: the loop of a driver,
/// for tests that play the driver by hand.
///
/// ```
/// # #[cfg(feature = "testkit")] {
/// use tether::connect::merge::{MergeClient, MergeClientConfig};
/// use tether::testkit::drain;
/// use tether::{Channel, Instant, Token};
/// let mut client = MergeClient::new(Instant::ZERO, MergeClientConfig::default(), Token::new(&[7; 16]).unwrap()).unwrap();
/// let out = drain(&mut client);
/// assert_eq!(out.opens, [Channel::Main]); // a new client asks for its transport
/// assert!(drain(&mut client).is_empty());
/// # }
/// ```
pub fn drain<M: Machine>(machine: &mut M) -> Drained<M::Event> {
    let mut out = Drained {
        transmits: Vec::new(),
        events: Vec::new(),
        opens: Vec::new(),
        closes: Vec::new(),
        deadline: None,
    };
    for _ in 0..OUTPUT_LIMIT {
        match machine.poll_output() {
            Output::Transmit(t) => out.transmits.push(t),
            Output::Event(e) => out.events.push(e),
            Output::Open(c) => out.opens.push(c),
            Output::Close(l) => out.closes.push(l),
            Output::Wait(d) => {
                out.deadline = d;
                return out;
            }
        }
    }
    panic!("the machine never stops giving output (livelock)");
}

impl<C: Machine, S: Machine> Debug for Pair<C, S>
where
    C: Debug,
    S: Debug,
    C::Event: Debug,
    S::Event: Debug,
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pair")
            .field("client", &self.client)
            .field("server", &self.server)
            .field("now", &self.now)
            .field("wire", &self.wire)
            .field("client_events", &self.client_events)
            .field("server_events", &self.server_events)
            .field("opens", &self.opens)
            .field("closes", &self.closes)
            .field("frozen", &self.frozen)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "pair_tests.rs"]
mod tests;
