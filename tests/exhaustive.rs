//! Exhaustive check of the token-merge handshake and its resumption (issue 7, part 6).
//!
//! A small world: one [`Client`], one [`Server`], and the transports between them modelled
//! explicitly, each with a queue of in-flight frames per direction. From the initial state
//! a breadth-first search tries every action in every reached state:
//!
//! - deliver the head frame of either direction of any transport;
//! - lose it (at most `losses` times on a path; stronger than `main` promises, since a
//!   stream never loses a frame and lives on, but the handshake timers must cope anyway);
//! - cut a transport (both queues lost, both sides told later, each on its own action) or
//!   fail a requested open (at most `cuts` of these together);
//! - tell a side that its transport closed (after the peer closed it and the frames the
//!   peer sent before are delivered, or after a cut);
//! - connect a transport the client asked for;
//! - fire either side's next deadline (time jumps to it);
//! - a formal disconnection by either application (at most `commands`).
//!
//! Every machine is driven only through `Machine` (`handle_input` / `poll_output`); a panic
//! anywhere fails the test. States are deduplicated on a fingerprint of both machines
//! (their complete `Debug` form plus every token's bytes, which `Debug` redacts), the
//! transports, the time and the fault budget used.
//!
//! Properties checked in every reached state:
//!
//! - (a) safety: a client CONNECTED on a transport whose server session is CONNECTED holds
//!   the same merged token; and with no loss so far, once a transport is quiet (both ends
//!   open, nothing in flight) the client is CONNECTED on it exactly when the server's
//!   session on it is;
//! - (b) no stuck state: from every reached state a fair, fault-free continuation
//!   (deliver everything, connect when asked, fire the earliest deadline) reaches either
//!   "both CONNECTED on one quiet transport with the same token" or "the client has ended
//!   and the server holds nothing", within a step limit;
//! - (c) no panic, and no error other than `Ended` (input after the client ended) from any
//!   input.
//!
//! The bounds and the numbers of states explored are printed (`--nocapture`).

use bytes::Bytes;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use tether::connect::merge::{
    Client, ClientCommand, Config, Error, Server, ServerCommand, ServerConfig, SessionId, Status,
    TokenSource,
};
use tether::{Duration, Input, Instant, Link, Machine, Output, Token};

// ---------------------------------------------------------------------------------------
// The explorer, independent of the machines.

/// A world the explorer can search.
trait Model: Clone {
    type Action: Clone + std::fmt::Debug;
    /// Every action enabled in this state (faults within the bound included).
    fn actions(&self, out: &mut Vec<Self::Action>);
    /// Applies one action; `Err` is a violated property (c).
    fn apply(&mut self, a: &Self::Action) -> Result<(), String>;
    /// The state's identity for the visited set.
    fn key(&self) -> u128;
    /// Property (a); `Err` says what disagrees.
    fn safety(&self) -> Result<(), String>;
    /// The next step of the fair, fault-free continuation, `None` if nothing is enabled.
    fn fair_action(&self) -> Option<Self::Action>;
    /// A goal of property (b) (`Some` names which).
    fn goal(&self) -> Option<&'static str>;
}

struct Report {
    states: usize,
    transitions: usize,
    depth: usize,
    goals: std::collections::BTreeMap<&'static str, usize>,
    longest_continuation: usize,
}

fn trace<A: std::fmt::Debug>(path: &[A]) -> String {
    let mut s = String::new();
    for (i, a) in path.iter().enumerate() {
        let _ = writeln!(s, "  {i:3}: {a:?}");
    }
    s
}

/// From `m`, runs the fair fault-free continuation until a goal; returns the goal and the
/// number of steps, or why it is stuck.
fn continuation<M: Model>(m: &M, limit: usize) -> Result<(&'static str, usize), String> {
    let mut m = m.clone();
    let mut steps = Vec::new();
    for n in 0..=limit {
        if let Some(g) = m.goal() {
            return Ok((g, n));
        }
        let Some(a) = m.fair_action() else {
            return Err(format!(
                "deadlock: nothing enabled\ncontinuation:\n{}",
                trace(&steps)
            ));
        };
        m.apply(&a)
            .map_err(|e| format!("{e}\ncontinuation:\n{}", trace(&steps)))?;
        m.safety()
            .map_err(|e| format!("{e}\ncontinuation:\n{}", trace(&steps)))?;
        steps.push(a);
    }
    Err(format!(
        "no goal after {limit} fair steps (livelock)\ncontinuation:\n{}",
        trace(&steps)
    ))
}

fn explore<M: Model>(init: M, max_depth: usize, fair_limit: usize) -> Report {
    let mut seen: HashSet<u128> = HashSet::new();
    let mut queue: VecDeque<(M, Vec<M::Action>)> = VecDeque::new();
    let mut report = Report {
        states: 0,
        transitions: 0,
        depth: 0,
        goals: Default::default(),
        longest_continuation: 0,
    };
    let visit = |m: &M, path: &[M::Action], report: &mut Report| {
        if let Err(e) = m.safety() {
            panic!("safety violated: {e}\npath:\n{}", trace(path));
        }
        match continuation(m, fair_limit) {
            Ok((g, n)) => {
                *report.goals.entry(g).or_default() += 1;
                report.longest_continuation = report.longest_continuation.max(n);
            }
            Err(e) => panic!("stuck state: {e}\npath:\n{}", trace(path)),
        }
        report.states += 1;
        report.depth = report.depth.max(path.len());
    };
    seen.insert(init.key());
    visit(&init, &[], &mut report);
    queue.push_back((init, Vec::new()));
    let mut actions = Vec::new();
    while let Some((m, path)) = queue.pop_front() {
        if path.len() >= max_depth {
            continue;
        }
        actions.clear();
        m.actions(&mut actions);
        for a in &actions {
            let mut next = m.clone();
            let mut p = path.clone();
            p.push(a.clone());
            if let Err(e) = next.apply(a) {
                panic!("{e}\npath:\n{}", trace(&p));
            }
            report.transitions += 1;
            if seen.insert(next.key()) {
                visit(&next, &p, &mut report);
                queue.push_back((next, p));
            }
        }
    }
    report
}

// ---------------------------------------------------------------------------------------
// The token-merge world.

/// The server's tokens: a counter, so that the n-th transport's node has token n.
#[derive(Debug, Clone)]
struct Counter(u8);

impl TokenSource for Counter {
    fn next_token(&mut self) -> Token {
        self.0 = self.0.wrapping_add(1);
        Token::new(&[self.0; 16]).expect("16 bytes")
    }
}

/// One transport between the two.
#[derive(Debug, Clone, Hash)]
struct Transport {
    id: u64,
    c2s: VecDeque<Bytes>,
    s2c: VecDeque<Bytes>,
    /// The client's end is open (it has not closed it nor been told it closed).
    client_open: bool,
    /// The server's end is open.
    server_open: bool,
    /// The network cut it: nothing more is delivered, each open end is told.
    broken: bool,
}

impl Transport {
    fn link(&self) -> Link {
        Link::main(self.id)
    }
    fn quiet(&self) -> bool {
        self.client_open
            && self.server_open
            && !self.broken
            && self.c2s.is_empty()
            && self.s2c.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Bounds {
    losses: u8,
    cuts: u8,
    commands: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Act {
    DeliverToServer(u64),
    DeliverToClient(u64),
    LoseToServer(u64),
    LoseToClient(u64),
    Cut(u64),
    TellClientClosed(u64),
    TellServerClosed(u64),
    Connect,
    FailOpen,
    ClientTimeout,
    ServerTimeout,
    ClientDisconnect,
    ServerDisconnect(u64),
}

#[derive(Clone)]
struct MergeWorld {
    client: Client,
    server: Server<Counter>,
    transports: Vec<Transport>,
    next_link: u64,
    open_requests: u8,
    now: Instant,
    /// Fault budget used so far.
    used: Bounds,
    bounds: Bounds,
    /// A frame was lost on this path (property (a)'s second half assumes none).
    lost_any: bool,
    /// Sessions the server ever made (ids 1..=sessions).
    sessions: u64,
}

fn client_config() -> Config {
    Config {
        handshake_timeout: Duration::from_secs(5),
        reconnect_initial: Duration::from_secs(1),
        reconnect_max: Duration::from_secs(2),
        jitter_percent: 0,
        give_up_after: Duration::from_secs(20),
        ..Config::default()
    }
}

fn server_config() -> ServerConfig {
    ServerConfig {
        handshake_timeout: Duration::from_secs(5),
        resume_grace: Duration::from_secs(10),
        ended_memory: Duration::from_secs(30),
        ..ServerConfig::default()
    }
}

impl MergeWorld {
    fn new(bounds: Bounds) -> MergeWorld {
        let client = Client::new(
            Instant::ZERO,
            client_config(),
            Token::new(&[0xc0; 16]).unwrap(),
        )
        .expect("client");
        let mut w = MergeWorld {
            client,
            server: Server::new(server_config(), Counter(0)),
            transports: Vec::new(),
            next_link: 1,
            open_requests: 0,
            now: Instant::ZERO,
            used: Bounds {
                losses: 0,
                cuts: 0,
                commands: 0,
            },
            bounds,
            lost_any: false,
            sessions: 0,
        };
        w.drain().expect("initial outputs");
        w
    }

    /// The world once the first handshake has completed without faults: the start of the
    /// resumption search.
    fn connected(bounds: Bounds) -> MergeWorld {
        let mut w = MergeWorld::new(bounds);
        while w.goal() != Some("both connected") {
            let a = w.fair_action().expect("the first handshake completes");
            w.apply(&a).expect("fault-free handshake");
        }
        w
    }

    fn transport(&mut self, id: u64) -> Option<&mut Transport> {
        self.transports.iter_mut().find(|t| t.id == id)
    }

    fn client_input(&mut self, input: Input<ClientCommand>) -> Result<(), String> {
        match self.client.handle_input(self.now, input.clone()) {
            Ok(()) | Err(Error::Ended(_)) => Ok(()),
            Err(e) => Err(format!("client refused {input:?}: {e:?}")),
        }
    }

    fn server_input(&mut self, input: Input<ServerCommand>) -> Result<(), String> {
        self.server
            .handle_input(self.now, input.clone())
            .map_err(|e| format!("server refused {input:?}: {e:?}"))
    }

    /// Drains both machines' outputs into the world until both wait.
    fn drain(&mut self) -> Result<(), String> {
        loop {
            let mut moved = false;
            loop {
                match self.client.poll_output() {
                    Output::Wait(_) => break,
                    Output::Transmit(t) => {
                        moved = true;
                        if let Some(tr) = self.transport(t.link.id) {
                            if tr.client_open && !tr.broken {
                                tr.c2s.push_back(t.payload);
                            }
                        }
                    }
                    Output::Event(_) => moved = true,
                    Output::Open(_) => {
                        moved = true;
                        self.open_requests = self.open_requests.saturating_add(1);
                    }
                    Output::Close(link) => {
                        moved = true;
                        if let Some(tr) = self.transport(link.id) {
                            if tr.client_open {
                                tr.client_open = false;
                                tr.s2c.clear();
                            }
                        }
                        // The driver reports the close it made.
                        self.client_input(Input::Closed(link))?;
                    }
                }
            }
            loop {
                match self.server.poll_output() {
                    Output::Wait(_) => break,
                    Output::Transmit(t) => {
                        moved = true;
                        if let Some(tr) = self.transport(t.link.id) {
                            if tr.server_open && !tr.broken {
                                tr.s2c.push_back(t.payload);
                            }
                        }
                    }
                    Output::Event(e) => {
                        moved = true;
                        if let tether::connect::merge::ServerEvent::Connected { session, .. } = e {
                            self.sessions = self.sessions.max(session.0);
                        }
                    }
                    Output::Open(_) => return Err("the server asked to open a transport".into()),
                    Output::Close(link) => {
                        moved = true;
                        if let Some(tr) = self.transport(link.id) {
                            if tr.server_open {
                                tr.server_open = false;
                                tr.c2s.clear();
                            }
                        }
                        self.server_input(Input::Closed(link))?;
                    }
                }
            }
            if !moved {
                break;
            }
        }
        self.transports.retain(|t| t.client_open || t.server_open);
        Ok(())
    }

    fn client_connected_on(&self) -> Option<Link> {
        let v = self.client.view();
        (v.status == Status::Connected).then_some(v.link).flatten()
    }
}

impl Model for MergeWorld {
    type Action = Act;

    fn actions(&self, out: &mut Vec<Act>) {
        let fault = self.used.cuts < self.bounds.cuts;
        let loss = self.used.losses < self.bounds.losses;
        for t in &self.transports {
            let live = !t.broken;
            if live && t.server_open && !t.c2s.is_empty() {
                out.push(Act::DeliverToServer(t.id));
                if loss {
                    out.push(Act::LoseToServer(t.id));
                }
            }
            if live && t.client_open && !t.s2c.is_empty() {
                out.push(Act::DeliverToClient(t.id));
                if loss {
                    out.push(Act::LoseToClient(t.id));
                }
            }
            if t.client_open && (t.broken || (!t.server_open && t.s2c.is_empty())) {
                out.push(Act::TellClientClosed(t.id));
            }
            if t.server_open && (t.broken || (!t.client_open && t.c2s.is_empty())) {
                out.push(Act::TellServerClosed(t.id));
            }
            if live && fault {
                out.push(Act::Cut(t.id));
            }
        }
        if self.open_requests > 0 {
            out.push(Act::Connect);
            if fault {
                out.push(Act::FailOpen);
            }
        }
        if self.client.poll_timeout().is_some() {
            out.push(Act::ClientTimeout);
        }
        if self.server.poll_timeout().is_some() {
            out.push(Act::ServerTimeout);
        }
        if self.used.commands < self.bounds.commands {
            if self.client.view().status != Status::Disconnected {
                out.push(Act::ClientDisconnect);
            }
            for id in 1..=self.sessions {
                if self.server.session(SessionId(id)).is_some() {
                    out.push(Act::ServerDisconnect(id));
                }
            }
        }
    }

    fn apply(&mut self, a: &Act) -> Result<(), String> {
        match *a {
            Act::DeliverToServer(id) => {
                let f = self.transport(id).and_then(|t| t.c2s.pop_front());
                if let Some(f) = f {
                    self.server_input(Input::Received(Link::main(id), f))?;
                }
            }
            Act::DeliverToClient(id) => {
                let f = self.transport(id).and_then(|t| t.s2c.pop_front());
                if let Some(f) = f {
                    self.client_input(Input::Received(Link::main(id), f))?;
                }
            }
            Act::LoseToServer(id) | Act::LoseToClient(id) => {
                self.used.losses += 1;
                self.lost_any = true;
                if let Some(t) = self.transport(id) {
                    if matches!(a, Act::LoseToServer(_)) {
                        t.c2s.pop_front();
                    } else {
                        t.s2c.pop_front();
                    }
                }
            }
            Act::Cut(id) => {
                self.used.cuts += 1;
                if let Some(t) = self.transport(id) {
                    t.broken = true;
                    t.c2s.clear();
                    t.s2c.clear();
                }
            }
            Act::TellClientClosed(id) => {
                if let Some(t) = self.transport(id) {
                    t.client_open = false;
                    t.s2c.clear();
                    let link = t.link();
                    self.client_input(Input::Closed(link))?;
                }
            }
            Act::TellServerClosed(id) => {
                if let Some(t) = self.transport(id) {
                    t.server_open = false;
                    t.c2s.clear();
                    let link = t.link();
                    self.server_input(Input::Closed(link))?;
                }
            }
            Act::Connect => {
                self.open_requests -= 1;
                let id = self.next_link;
                self.next_link += 1;
                self.transports.push(Transport {
                    id,
                    c2s: VecDeque::new(),
                    s2c: VecDeque::new(),
                    client_open: true,
                    server_open: true,
                    broken: false,
                });
                self.server_input(Input::Opened(Link::main(id)))?;
                self.drain()?;
                self.client_input(Input::Opened(Link::main(id)))?;
            }
            Act::FailOpen => {
                self.used.cuts += 1;
                self.open_requests -= 1;
            }
            Act::ClientTimeout => {
                if let Some(t) = self.client.poll_timeout() {
                    self.now = self.now.max(t);
                }
                self.client_input(Input::Timeout)?;
            }
            Act::ServerTimeout => {
                if let Some(t) = self.server.poll_timeout() {
                    self.now = self.now.max(t);
                }
                self.server_input(Input::Timeout)?;
            }
            Act::ClientDisconnect => {
                self.used.commands += 1;
                self.client_input(Input::Command(ClientCommand::Disconnect))?;
            }
            Act::ServerDisconnect(id) => {
                self.used.commands += 1;
                self.server_input(Input::Command(ServerCommand::Disconnect {
                    session: SessionId(id),
                }))?;
            }
        }
        self.drain()
    }

    fn key(&self) -> u128 {
        let mut desc = format!(
            "{:?}|{:?}|{:?}|{}|{}|{:?}|{:?}|{}|{}",
            self.client,
            self.server,
            self.transports,
            self.next_link,
            self.open_requests,
            self.now,
            self.used,
            self.lost_any,
            self.sessions
        );
        // Debug redacts tokens: add their bytes.
        let mut tokens = |v: Option<tether::connect::merge::NodeView>| {
            if let Some(v) = v {
                for t in [Some(v.local), v.remote, v.merged].into_iter().flatten() {
                    let _ = write!(desc, "|{:x?}", t.as_bytes());
                }
            }
            desc.push(';');
        };
        tokens(Some(self.client.view()));
        for id in 1..=self.sessions {
            tokens(self.server.session(SessionId(id)));
        }
        for id in 1..self.next_link {
            tokens(self.server.pending(id));
        }
        let mut a = DefaultHasher::new();
        desc.hash(&mut a);
        let mut b = DefaultHasher::new();
        0x5eed_u32.hash(&mut b);
        desc.hash(&mut b);
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }

    fn safety(&self) -> Result<(), String> {
        let client = self.client.view();
        if let Some(link) = self.client_connected_on() {
            if let Some(s) = self
                .server
                .session_of(link.id)
                .and_then(|id| self.server.session(id))
            {
                if s.status == Status::Connected && s.merged != client.merged {
                    return Err(format!(
                        "both CONNECTED on link {} with different tokens",
                        link.id
                    ));
                }
            }
        }
        if !self.lost_any {
            for t in self.transports.iter().filter(|t| t.quiet()) {
                let client_connected = self.client_connected_on() == Some(t.link());
                let server_connected = self
                    .server
                    .session_of(t.id)
                    .and_then(|id| self.server.session(id))
                    .is_some_and(|s| s.status == Status::Connected);
                if client_connected != server_connected {
                    return Err(format!(
                        "link {} is quiet but client CONNECTED = {client_connected}, server \
                         session CONNECTED = {server_connected}",
                        t.id
                    ));
                }
            }
        }
        Ok(())
    }

    fn fair_action(&self) -> Option<Act> {
        for t in &self.transports {
            let live = !t.broken;
            if live && t.server_open && !t.c2s.is_empty() {
                return Some(Act::DeliverToServer(t.id));
            }
            if live && t.client_open && !t.s2c.is_empty() {
                return Some(Act::DeliverToClient(t.id));
            }
            if t.client_open && (t.broken || (!t.server_open && t.s2c.is_empty())) {
                return Some(Act::TellClientClosed(t.id));
            }
            if t.server_open && (t.broken || (!t.client_open && t.c2s.is_empty())) {
                return Some(Act::TellServerClosed(t.id));
            }
        }
        if self.open_requests > 0 {
            return Some(Act::Connect);
        }
        match (self.client.poll_timeout(), self.server.poll_timeout()) {
            (Some(c), Some(s)) if s < c => Some(Act::ServerTimeout),
            (Some(_), _) => Some(Act::ClientTimeout),
            (None, Some(_)) => Some(Act::ServerTimeout),
            (None, None) => None,
        }
    }

    fn goal(&self) -> Option<&'static str> {
        let client = self.client.view();
        if let Some(link) = self.client_connected_on() {
            let quiet = self.transports.iter().any(|t| t.id == link.id && t.quiet());
            let agreed = self
                .server
                .session_of(link.id)
                .and_then(|id| self.server.session(id))
                .is_some_and(|s| s.status == Status::Connected && s.merged == client.merged);
            return (quiet && agreed).then_some("both connected");
        }
        if client.status == Status::Disconnected
            && self.server.session_count() == 0
            && self.server.pending_count() == 0
        {
            return Some("client ended, server clean");
        }
        None
    }
}

/// The depth of the search (actions on a path).
const DEPTH: usize = 10;
/// The fewest states the search may explore at [`DEPTH`].
const FLOOR: usize = 1_000;
/// The depth of the resumption search (from CONNECTED).
const RESUME_DEPTH: usize = 10;

fn run(what: &str, init: MergeWorld, depth: usize, floor: usize) {
    let bounds = init.bounds;
    let started = std::time::Instant::now();
    let r = explore(init, depth, 400);
    println!(
        "token-merge, {what}: explored {} states, {} transitions, depth {} (bound {depth}), \
         losses <= {}, cuts/failed opens <= {}, formal disconnections <= {}; \
         goals reached from every state {:?}, longest fair continuation {} steps ({:.1?})",
        r.states,
        r.transitions,
        r.depth,
        bounds.losses,
        bounds.cuts,
        bounds.commands,
        r.goals,
        r.longest_continuation,
        started.elapsed()
    );
    assert!(
        r.states >= floor,
        "explored only {} states (floor {floor}): the model lost its actions",
        r.states
    );
    assert!(r.goals.contains_key("both connected"));
}

fn depth(default: usize) -> usize {
    // TETHER_EXHAUSTIVE_DEPTH overrides the depth (to explore deeper by hand).
    std::env::var("TETHER_EXHAUSTIVE_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(default)
}

/// From the start: the first handshake under every interleaving, with faults and a formal
/// disconnection by either side.
#[test]
fn token_merge_handshake_every_interleaving() {
    let bounds = Bounds {
        losses: 1,
        cuts: 2,
        commands: 1,
    };
    run(
        "from the start",
        MergeWorld::new(bounds),
        depth(DEPTH),
        FLOOR,
    );
}

/// From a completed handshake: losing the transport and resuming, under every
/// interleaving, with faults.
#[test]
fn token_merge_resumption_every_interleaving() {
    let bounds = Bounds {
        losses: 1,
        cuts: 2,
        commands: 0,
    };
    run(
        "from CONNECTED (resumption)",
        MergeWorld::connected(bounds),
        depth(RESUME_DEPTH),
        FLOOR,
    );
}
