//! Exhaustive check of the token-merge and dual-channel handshakes and their resumption
//! (issue 7, part 6).
//!
//! Each is a small world of one client, one server and the transports between them,
//! searched breadth-first from an initial state (the start, or a completed handshake) by
//! one explorer (`explore`), which checks every reached state for (a) safety, (b) no stuck
//! state (a fair, fault-free continuation reaches a goal) and (c) no panic. The bounds and
//! the numbers of states and transitions explored are printed (`--nocapture`).
//!
//! ## Token-merge (seed 004)
//!
//! A small world: one [`MergeClient`], one [`MergeServer`], and the transports between them modelled
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
//! ## Dual-channel (seed 003), in `mod dual`
//!
//! One `DualClient`, one `DualServer`; `main` transports as above (a stream: in order, never
//! losing a frame; cut within the bound); `feed` datagrams in flight as a bag in each
//! direction, any one delivered next (reordering), duplicated or lost within the bounds;
//! opens granted or failed, the client's `feed` transport reported closed; timeouts jump
//! to a side's next deadline, within a budget; the client's `Disconnect` and the server's
//! `Kick` within a budget. The search has no practical depth limit: it is exhaustive
//! within the fault and timeout budgets (states are fingerprinted by both machines' whole
//! `Debug` form, where the test's token source makes every token's length its own).
//!
//! - (a) when the client is `Connected` and the server's player of the client's id is
//!   `Connected`, they hold the same tokens A and B and the same `main`;
//! - (b) from every reached state the fair continuation reaches "both connected" (as (a),
//!   with `main` quiet and the same `feed` link bound on both sides) or "the client
//!   `Closed`, the server without players or `main` links" (the server's timeouts
//!   included);
//! - (c) no panic (the server's `debug_assert`s that each player state change is a row of
//!   `SERVER_TRANSITIONS` included), and no input refused.

use bytes::Bytes;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use tether::connect::merge::{
    MergeClient, MergeClientCommand, MergeClientConfig, MergeError, MergeServer,
    MergeServerCommand, MergeServerConfig, SessionId, Status, TokenSource,
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
    continuation_cached(m, limit, &mut HashMap::new())
}

/// [`continuation`], remembering every state on a continuation that reached a goal (with
/// the goal and the steps left): the continuation is deterministic, so one that reaches
/// such a state reaches that goal too, and stops there.
fn continuation_cached<M: Model>(
    m: &M,
    limit: usize,
    good: &mut HashMap<u128, (&'static str, usize)>,
) -> Result<(&'static str, usize), String> {
    let mut m = m.clone();
    let mut steps = Vec::new();
    let mut keys = Vec::new();
    for n in 0..=limit {
        let key = m.key();
        let reached = match good.get(&key) {
            Some(&(g, left)) => Some((g, n + left)),
            None => m.goal().map(|g| (g, n)),
        };
        if let Some((g, total)) = reached {
            for (i, k) in keys.into_iter().enumerate() {
                good.insert(k, (g, total - i));
            }
            return Ok((g, total));
        }
        keys.push(key);
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

/// Breadth-first search from `init` up to `max_depth` actions, checking every reached state.
/// `cache`: remember the states of the fair continuations (worth it when a model's
/// continuations are long next to the cost of its `key`).
fn explore<M: Model>(init: M, max_depth: usize, fair_limit: usize, cache: bool) -> Report {
    let mut seen: HashSet<u128> = HashSet::new();
    let mut queue: VecDeque<(M, Vec<M::Action>)> = VecDeque::new();
    let mut report = Report {
        states: 0,
        transitions: 0,
        depth: 0,
        goals: Default::default(),
        longest_continuation: 0,
    };
    let mut good = HashMap::new();
    let mut visit = |m: &M, path: &[M::Action], report: &mut Report| {
        if let Err(e) = m.safety() {
            panic!("safety violated: {e}\npath:\n{}", trace(path));
        }
        let outcome = if cache {
            continuation_cached(m, fair_limit, &mut good)
        } else {
            continuation(m, fair_limit)
        };
        match outcome {
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
    client: MergeClient,
    server: MergeServer<Counter>,
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

fn client_config() -> MergeClientConfig {
    MergeClientConfig {
        handshake_timeout: Duration::from_secs(5),
        reconnect_initial: Duration::from_secs(1),
        reconnect_max: Duration::from_secs(2),
        jitter_percent: 0,
        give_up_after: Duration::from_secs(20),
        ..MergeClientConfig::default()
    }
}

fn server_config() -> MergeServerConfig {
    MergeServerConfig {
        handshake_timeout: Duration::from_secs(5),
        resume_grace: Duration::from_secs(10),
        ended_memory: Duration::from_secs(30),
        ..MergeServerConfig::default()
    }
}

impl MergeWorld {
    fn new(bounds: Bounds) -> MergeWorld {
        let client = MergeClient::new(
            Instant::ZERO,
            client_config(),
            Token::new(&[0xc0; 16]).unwrap(),
        )
        .expect("client");
        let mut w = MergeWorld {
            client,
            server: MergeServer::new(server_config(), Counter(0)),
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

    fn client_input(&mut self, input: Input<MergeClientCommand>) -> Result<(), String> {
        match self.client.handle_input(self.now, input.clone()) {
            Ok(()) | Err(MergeError::Ended(_)) => Ok(()),
            Err(e) => Err(format!("client refused {input:?}: {e:?}")),
        }
    }

    fn server_input(&mut self, input: Input<MergeServerCommand>) -> Result<(), String> {
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
                        if let tether::connect::merge::MergeServerEvent::Up { session, .. } = e {
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
                self.client_input(Input::Command(MergeClientCommand::Disconnect))?;
            }
            Act::ServerDisconnect(id) => {
                self.used.commands += 1;
                self.server_input(Input::Command(MergeServerCommand::Disconnect {
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

/// The depth of the search (actions on a path); 9 keeps the whole file near a minute on a
/// loaded two-core machine (10 explores 45,510 states, `TETHER_EXHAUSTIVE_DEPTH=10`).
const DEPTH: usize = 9;
/// The fewest states the search may explore at [`DEPTH`].
const FLOOR: usize = 1_000;
/// The depth of the resumption search (from CONNECTED).
const RESUME_DEPTH: usize = 10;

fn run(what: &str, init: MergeWorld, depth: usize, floor: usize) {
    let bounds = init.bounds;
    let started = std::time::Instant::now();
    let r = explore(init, depth, 400, false);
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

// ---------------------------------------------------------------------------------------
// The dual-channel world (seed 003).
//
// One `DualClient`, one `DualServer`, `main` transports modelled as in the token-merge world
// (a stream: frames delivered in order, never lost; a cut loses what is in flight and each
// end is told on its own action), and `feed` datagrams in flight in each direction as a
// bag: any one of them may be delivered next (reordering), delivered and kept (duplicated)
// or lost, within the bounds. A `feed` transport is the client's socket: when the client
// closes it, datagrams towards it are gone; the server is never told (UDP), it only stops
// getting datagrams. Opens the client asks for may be granted or fail; the client's `feed`
// transport may be reported closed (a fault, as a cut). Timeouts jump to a side's next
// deadline. Commands: the client's `Disconnect`, the server's `Kick`.

mod dual {
    use super::{continuation, Model, Transport};
    use bytes::Bytes;
    use std::collections::VecDeque;
    use std::fmt::Write as _;
    use std::hash::{Hash, Hasher};
    use tether::connect::dual::{
        DualClient, DualClientCommand, DualClientConfig, DualClientState, DualServer,
        DualServerCommand, DualServerConfig, FeedLossPolicy, PlayerState, Retry, TokenSource,
    };
    use tether::wire::FailReason;
    use tether::{Channel, Duration, Input, Instant, Link, Machine, Output, Token};

    /// The server's tokens: the n-th token is `n` repeated over `16 + n % 49` bytes, so that
    /// its length (which `Token`'s `Debug` shows) tells the tokens apart in the fingerprint.
    #[derive(Debug, Clone)]
    pub struct LenCounter(u8);

    impl TokenSource for LenCounter {
        fn next_token(&mut self) -> Token {
            self.0 = self.0.wrapping_add(1);
            let len = 16 + usize::from(self.0 % 49);
            Token::new(&vec![self.0; len]).expect("16 to 64 bytes")
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Bounds {
        /// `feed` datagrams lost.
        pub losses: u8,
        /// `feed` datagrams duplicated.
        pub dups: u8,
        /// `main` cuts, failed opens and `feed` transports reported closed, together.
        pub cuts: u8,
        /// Formal disconnections and kicks.
        pub commands: u8,
        /// Timeouts fired (either side's; time jumps to that side's next deadline).
        pub timeouts: u8,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Act {
        MainToServer(u64),
        MainToClient(u64),
        Cut(u64),
        TellClientClosed(u64),
        TellServerClosed(u64),
        ConnectMain,
        FailOpenMain,
        ConnectFeed,
        FailOpenFeed,
        CloseFeed,
        /// Deliver the i-th datagram in flight (and remove it).
        FeedToServer(usize),
        FeedToClient(usize),
        /// Deliver a copy of the i-th datagram in flight (it stays in flight).
        DupToServer(usize),
        DupToClient(usize),
        LoseToServer(usize),
        LoseToClient(usize),
        ClientTimeout,
        ServerTimeout,
        ClientDisconnect,
        Kick(u16),
    }

    const MAX_PLAYERS: u16 = 4;

    /// Hashes what is written into it.
    #[derive(Default)]
    struct HashWriter(std::collections::hash_map::DefaultHasher);

    impl std::fmt::Write for HashWriter {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }

    #[derive(Clone)]
    pub struct DualWorld {
        client: DualClient,
        server: DualServer<LenCounter>,
        mains: Vec<Transport>,
        /// `feed` datagrams in flight towards the server / the client: (link id, datagram).
        feed_c2s: Vec<(u64, Bytes)>,
        feed_s2c: Vec<(u64, Bytes)>,
        /// The client's open `feed` transport.
        client_feed: Option<u64>,
        next_link: u64,
        open_main: u8,
        open_feed: u8,
        now: Instant,
        used: Bounds,
        pub bounds: Bounds,
    }

    pub fn client_config(policy: FeedLossPolicy) -> DualClientConfig {
        let once = Retry {
            attempts: 2,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(1),
        };
        DualClientConfig {
            reply_timeout: Duration::from_secs(4),
            feed_init: once,
            connect: once,
            reconnect: once,
            feed_keepalive: Duration::from_secs(2),
            feed_timeout: Duration::from_secs(5),
            on_feed_lost: policy,
            ..DualClientConfig::default()
        }
    }

    pub fn server_config() -> DualServerConfig {
        DualServerConfig {
            max_players: MAX_PLAYERS,
            max_links: 4,
            handshake_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
            feed_keepalive: Duration::from_secs(2),
            feed_timeout: Duration::from_secs(5),
            ..DualServerConfig::default()
        }
    }

    impl DualWorld {
        pub fn new(bounds: Bounds, policy: FeedLossPolicy) -> DualWorld {
            let mut w = DualWorld {
                client: DualClient::new(client_config(policy)),
                server: DualServer::new(server_config(), LenCounter(0)),
                mains: Vec::new(),
                feed_c2s: Vec::new(),
                feed_s2c: Vec::new(),
                client_feed: None,
                next_link: 1,
                open_main: 0,
                open_feed: 0,
                now: Instant::ZERO,
                used: Bounds {
                    losses: 0,
                    dups: 0,
                    cuts: 0,
                    commands: 0,
                    timeouts: 0,
                },
                bounds,
            };
            w.client_input(Input::Command(DualClientCommand::Connect))
                .expect("connect");
            w.drain().expect("initial outputs");
            w
        }

        /// The world once the first handshake has completed without faults: the start of
        /// the resumption search.
        pub fn connected(bounds: Bounds, policy: FeedLossPolicy) -> DualWorld {
            let mut w = DualWorld::new(bounds, policy);
            while w.goal() != Some("both connected") {
                let a = w.fair_action().expect("the first handshake completes");
                w.apply(&a).expect("fault-free handshake");
            }
            w
        }

        fn main(&mut self, id: u64) -> Option<&mut Transport> {
            self.mains.iter_mut().find(|t| t.id == id)
        }

        fn client_input(&mut self, input: Input<DualClientCommand>) -> Result<(), String> {
            self.client
                .handle_input(self.now, input.clone())
                .map_err(|e| format!("client refused {input:?}: {e:?}"))
        }

        fn server_input(&mut self, input: Input<DualServerCommand>) -> Result<(), String> {
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
                            match t.link.channel {
                                Channel::Main => {
                                    if let Some(tr) = self.main(t.link.id) {
                                        if tr.client_open && !tr.broken {
                                            tr.c2s.push_back(t.payload);
                                        }
                                    }
                                }
                                Channel::Feed => {
                                    if self.client_feed == Some(t.link.id) {
                                        self.feed_c2s.push((t.link.id, t.payload));
                                    }
                                }
                            }
                        }
                        Output::Event(_) => moved = true,
                        Output::Open(Channel::Main) => {
                            moved = true;
                            self.open_main = self.open_main.saturating_add(1);
                        }
                        Output::Open(Channel::Feed) => {
                            moved = true;
                            self.open_feed = self.open_feed.saturating_add(1);
                        }
                        Output::Close(link) => {
                            moved = true;
                            match link.channel {
                                Channel::Main => {
                                    if let Some(tr) = self.main(link.id) {
                                        if tr.client_open {
                                            tr.client_open = false;
                                            tr.s2c.clear();
                                        }
                                    }
                                }
                                Channel::Feed => {
                                    if self.client_feed == Some(link.id) {
                                        self.client_feed = None;
                                    }
                                    self.feed_s2c.retain(|(l, _)| *l != link.id);
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
                            match t.link.channel {
                                Channel::Main => {
                                    if let Some(tr) = self.main(t.link.id) {
                                        if tr.server_open && !tr.broken {
                                            tr.s2c.push_back(t.payload);
                                        }
                                    }
                                }
                                Channel::Feed => {
                                    // Only the client's open socket receives.
                                    if self.client_feed == Some(t.link.id) {
                                        self.feed_s2c.push((t.link.id, t.payload));
                                    }
                                }
                            }
                        }
                        Output::Event(_) => moved = true,
                        Output::Open(_) => {
                            return Err("the server asked to open a transport".into())
                        }
                        Output::Close(link) => {
                            moved = true;
                            if link.channel == Channel::Main {
                                if let Some(tr) = self.main(link.id) {
                                    if tr.server_open {
                                        tr.server_open = false;
                                        tr.c2s.clear();
                                    }
                                }
                            }
                            // A `feed` link is only forgotten: datagrams from that address
                            // still arrive, as on an unbound link.
                            self.server_input(Input::Closed(link))?;
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
            self.mains.retain(|t| t.client_open || t.server_open);
            Ok(())
        }

        fn players(&self) -> impl Iterator<Item = u16> + '_ {
            (0..MAX_PLAYERS).filter(|p| self.server.player_state(*p).is_some())
        }

        /// The client and the server agree on the player: same tokens, same `main`.
        fn agreement(&self) -> Result<Option<u16>, String> {
            if self.client.state() != DualClientState::Connected {
                return Ok(None);
            }
            let Some(p) = self.client.player() else {
                return Err("client Connected without a player id".into());
            };
            if self.server.player_state(p) != Some(PlayerState::Connected) {
                return Ok(None);
            }
            let Some(snap) = self.server.export_player(self.now, p) else {
                return Err(format!("server player {p} Connected without token B"));
            };
            let (a, b) = self.client.tokens();
            if a != Some(snap.token_a) || b != Some(snap.token_b) {
                return Err(format!(
                    "both Connected as player {p} with different tokens (client A {:?} B {:?})",
                    a.map(|t| t.as_bytes().to_vec()),
                    b.map(|t| t.as_bytes().to_vec())
                ));
            }
            let client_main = self.client.links().0;
            let server_main = self.server.player_links(p).and_then(|l| l.0);
            if client_main != server_main {
                return Err(format!(
                    "both Connected as player {p}, client on main {client_main:?}, server on \
                     {server_main:?}"
                ));
            }
            Ok(Some(p))
        }

        fn feed_actions(
            v: &[(u64, Bytes)],
            deliver: fn(usize) -> Act,
            dup: Option<fn(usize) -> Act>,
            lose: Option<fn(usize) -> Act>,
            out: &mut Vec<Act>,
        ) {
            for (i, d) in v.iter().enumerate() {
                // Equal datagrams give equal states: try one of them.
                if v[..i].contains(d) {
                    continue;
                }
                out.push(deliver(i));
                if let Some(f) = dup {
                    out.push(f(i));
                }
                if let Some(f) = lose {
                    out.push(f(i));
                }
            }
        }
    }

    impl Model for DualWorld {
        type Action = Act;

        fn actions(&self, out: &mut Vec<Act>) {
            let cut = self.used.cuts < self.bounds.cuts;
            for t in &self.mains {
                let live = !t.broken;
                if live && t.server_open && !t.c2s.is_empty() {
                    out.push(Act::MainToServer(t.id));
                }
                if live && t.client_open && !t.s2c.is_empty() {
                    out.push(Act::MainToClient(t.id));
                }
                if t.client_open && (t.broken || (!t.server_open && t.s2c.is_empty())) {
                    out.push(Act::TellClientClosed(t.id));
                }
                if t.server_open && (t.broken || (!t.client_open && t.c2s.is_empty())) {
                    out.push(Act::TellServerClosed(t.id));
                }
                if live && cut {
                    out.push(Act::Cut(t.id));
                }
            }
            if self.open_main > 0 {
                out.push(Act::ConnectMain);
                if cut {
                    out.push(Act::FailOpenMain);
                }
            }
            if self.open_feed > 0 {
                out.push(Act::ConnectFeed);
                if cut {
                    out.push(Act::FailOpenFeed);
                }
            }
            if cut && self.client_feed.is_some() {
                out.push(Act::CloseFeed);
            }
            let dup = self.used.dups < self.bounds.dups;
            let loss = self.used.losses < self.bounds.losses;
            DualWorld::feed_actions(
                &self.feed_c2s,
                Act::FeedToServer,
                dup.then_some(Act::DupToServer as fn(usize) -> Act),
                loss.then_some(Act::LoseToServer as fn(usize) -> Act),
                out,
            );
            DualWorld::feed_actions(
                &self.feed_s2c,
                Act::FeedToClient,
                dup.then_some(Act::DupToClient as fn(usize) -> Act),
                loss.then_some(Act::LoseToClient as fn(usize) -> Act),
                out,
            );
            if self.used.timeouts < self.bounds.timeouts {
                if self.client.poll_timeout().is_some() {
                    out.push(Act::ClientTimeout);
                }
                if self.server.poll_timeout().is_some() {
                    out.push(Act::ServerTimeout);
                }
            }
            if self.used.commands < self.bounds.commands {
                if !matches!(
                    self.client.state(),
                    DualClientState::Idle | DualClientState::Closed
                ) {
                    out.push(Act::ClientDisconnect);
                }
                for p in self.players() {
                    out.push(Act::Kick(p));
                }
            }
        }

        fn apply(&mut self, a: &Act) -> Result<(), String> {
            match *a {
                Act::MainToServer(id) => {
                    if let Some(f) = self.main(id).and_then(|t| t.c2s.pop_front()) {
                        self.server_input(Input::Received(Link::main(id), f))?;
                    }
                }
                Act::MainToClient(id) => {
                    if let Some(f) = self.main(id).and_then(|t| t.s2c.pop_front()) {
                        self.client_input(Input::Received(Link::main(id), f))?;
                    }
                }
                Act::Cut(id) => {
                    self.used.cuts += 1;
                    if let Some(t) = self.main(id) {
                        t.broken = true;
                        t.c2s.clear();
                        t.s2c.clear();
                    }
                }
                Act::TellClientClosed(id) => {
                    if let Some(t) = self.main(id) {
                        t.client_open = false;
                        t.s2c.clear();
                        self.client_input(Input::Closed(Link::main(id)))?;
                    }
                }
                Act::TellServerClosed(id) => {
                    if let Some(t) = self.main(id) {
                        t.server_open = false;
                        t.c2s.clear();
                        self.server_input(Input::Closed(Link::main(id)))?;
                    }
                }
                Act::ConnectMain => {
                    self.open_main -= 1;
                    let id = self.next_link;
                    self.next_link += 1;
                    self.mains.push(Transport {
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
                Act::FailOpenMain | Act::FailOpenFeed => {
                    self.used.cuts += 1;
                    if *a == Act::FailOpenMain {
                        self.open_main -= 1;
                    } else {
                        self.open_feed -= 1;
                    }
                }
                Act::ConnectFeed => {
                    self.open_feed -= 1;
                    let id = self.next_link;
                    self.next_link += 1;
                    if let Some(old) = self.client_feed.replace(id) {
                        self.feed_s2c.retain(|(l, _)| *l != old);
                    }
                    self.client_input(Input::Opened(Link::feed(id)))?;
                }
                Act::CloseFeed => {
                    self.used.cuts += 1;
                    if let Some(id) = self.client_feed.take() {
                        self.feed_s2c.retain(|(l, _)| *l != id);
                        self.client_input(Input::Closed(Link::feed(id)))?;
                    }
                }
                Act::FeedToServer(i) | Act::DupToServer(i) | Act::LoseToServer(i) => {
                    let (id, d) = match a {
                        Act::DupToServer(_) => {
                            self.used.dups += 1;
                            self.feed_c2s[i].clone()
                        }
                        _ => self.feed_c2s.remove(i),
                    };
                    if let Act::LoseToServer(_) = a {
                        self.used.losses += 1;
                    } else {
                        self.server_input(Input::Received(Link::feed(id), d))?;
                    }
                }
                Act::FeedToClient(i) | Act::DupToClient(i) | Act::LoseToClient(i) => {
                    let (id, d) = match a {
                        Act::DupToClient(_) => {
                            self.used.dups += 1;
                            self.feed_s2c[i].clone()
                        }
                        _ => self.feed_s2c.remove(i),
                    };
                    if let Act::LoseToClient(_) = a {
                        self.used.losses += 1;
                    } else {
                        self.client_input(Input::Received(Link::feed(id), d))?;
                    }
                }
                Act::ClientTimeout => {
                    self.used.timeouts = self.used.timeouts.saturating_add(1);
                    if let Some(t) = self.client.poll_timeout() {
                        self.now = self.now.max(t);
                    }
                    self.client_input(Input::Timeout)?;
                }
                Act::ServerTimeout => {
                    self.used.timeouts = self.used.timeouts.saturating_add(1);
                    if let Some(t) = self.server.poll_timeout() {
                        self.now = self.now.max(t);
                    }
                    self.server_input(Input::Timeout)?;
                }
                Act::ClientDisconnect => {
                    self.used.commands += 1;
                    self.client_input(Input::Command(DualClientCommand::Disconnect))?;
                }
                Act::Kick(player) => {
                    self.used.commands += 1;
                    self.server_input(Input::Command(DualServerCommand::Kick {
                        player,
                        reason: FailReason::Timeout,
                    }))?;
                }
            }
            self.drain()
        }

        fn key(&self) -> u128 {
            // Tokens show their length in `Debug`, and `LenCounter` makes every token's
            // length its own: the machines' `Debug` forms are their whole state. They are
            // hashed as they are written (no string), the transports' bytes raw.
            let mut h = HashWriter::default();
            let _ = write!(h, "{:?}|{:?}", self.client, self.server);
            for t in &self.mains {
                (t.id, t.client_open, t.server_open, t.broken).hash(&mut h.0);
                t.c2s.hash(&mut h.0);
                t.s2c.hash(&mut h.0);
            }
            (
                &self.feed_c2s,
                &self.feed_s2c,
                self.client_feed,
                self.next_link,
                self.open_main,
                self.open_feed,
                self.now,
                self.used,
            )
                .hash(&mut h.0);
            let (a, b) = self.client.tokens();
            for t in [a, b].into_iter().flatten() {
                t.as_bytes().hash(&mut h.0);
            }
            let first = h.0.finish();
            first.hash(&mut h.0);
            (u128::from(first) << 64) | u128::from(h.0.finish())
        }

        fn safety(&self) -> Result<(), String> {
            self.agreement().map(|_| ())
        }

        fn fair_action(&self) -> Option<Act> {
            for t in &self.mains {
                let live = !t.broken;
                if live && t.server_open && !t.c2s.is_empty() {
                    return Some(Act::MainToServer(t.id));
                }
                if live && t.client_open && !t.s2c.is_empty() {
                    return Some(Act::MainToClient(t.id));
                }
                if t.client_open && (t.broken || (!t.server_open && t.s2c.is_empty())) {
                    return Some(Act::TellClientClosed(t.id));
                }
                if t.server_open && (t.broken || (!t.client_open && t.c2s.is_empty())) {
                    return Some(Act::TellServerClosed(t.id));
                }
            }
            if self.open_main > 0 {
                return Some(Act::ConnectMain);
            }
            if self.open_feed > 0 {
                return Some(Act::ConnectFeed);
            }
            if !self.feed_c2s.is_empty() {
                return Some(Act::FeedToServer(0));
            }
            if !self.feed_s2c.is_empty() {
                return Some(Act::FeedToClient(0));
            }
            match (self.client.poll_timeout(), self.server.poll_timeout()) {
                (Some(c), Some(s)) if s < c => Some(Act::ServerTimeout),
                (Some(_), _) => Some(Act::ClientTimeout),
                (None, Some(_)) => Some(Act::ServerTimeout),
                (None, None) => None,
            }
        }

        fn goal(&self) -> Option<&'static str> {
            if let Ok(Some(p)) = self.agreement() {
                let main = self.client.links().0;
                let quiet = self
                    .mains
                    .iter()
                    .any(|t| Some(t.link()) == main && t.quiet());
                let same_feed = self.client.links().1.is_some()
                    && self.server.player_links(p).and_then(|l| l.1) == self.client.links().1;
                return (quiet && same_feed).then_some("both connected");
            }
            if self.client.state() == DualClientState::Closed
                && self.server.player_count() == 0
                && self.server.link_count() == 0
            {
                return Some("client closed, server clean");
            }
            None
        }
    }

    /// The fault-free handshake reaches "both connected" (a check of the model itself).
    pub fn sanity(policy: FeedLossPolicy) {
        let w = DualWorld::connected(
            Bounds {
                losses: 0,
                dups: 0,
                cuts: 0,
                commands: 0,
                timeouts: 0,
            },
            policy,
        );
        assert_eq!(continuation(&w, 10).map(|(g, _)| g), Ok("both connected"));
    }
}

/// The depth cap of the dual-channel searches: above the longest path their fault and
/// timeout budgets allow, so they are exhaustive within those budgets (the depth reached is
/// printed).
const DUAL_DEPTH: usize = 60;

/// The timeout budget of the dual-channel searches: 1, or `TETHER_EXHAUSTIVE_TIMEOUTS`
/// (2 explores 556,640 states from the start and 96,912 from Connected, in minutes).
fn dual_timeouts() -> u8 {
    std::env::var("TETHER_EXHAUSTIVE_TIMEOUTS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(1)
}

fn run_dual(what: &str, init: dual::DualWorld, depth: usize, floor: usize) {
    let b = init.bounds;
    let started = std::time::Instant::now();
    let r = explore(init, depth, 400, true);
    println!(
        "dual-channel, {what}: explored {} states, {} transitions, depth {} (bound {depth}), \
         feed losses <= {}, feed duplicates <= {}, cuts/failed opens/feed closes <= {}, \
         disconnections/kicks <= {}, timeouts <= {}; goals reached from every state {:?}, longest fair \
         continuation {} steps ({:.1?})",
        r.states,
        r.transitions,
        r.depth,
        b.losses,
        b.dups,
        b.cuts,
        b.commands,
        b.timeouts,
        r.goals,
        r.longest_continuation,
        started.elapsed()
    );
    if depth == DUAL_DEPTH {
        assert!(
            r.states >= floor,
            "explored only {} states (floor {floor}): the model lost its actions",
            r.states
        );
    }
    assert!(r.goals.contains_key("both connected"));
    assert!(r.goals.contains_key("client closed, server clean"));
}

/// From the start: the dual-channel handshake under every interleaving, with `feed`
/// datagrams lost, duplicated and reordered, `main` cut, opens failing, and a formal
/// disconnection or a kick; `feed` loss re-initialises `feed`.
#[test]
fn dual_handshake_every_interleaving() {
    dual::sanity(tether::connect::dual::FeedLossPolicy::Reinit);
    let bounds = dual::Bounds {
        losses: 1,
        dups: 1,
        cuts: 1,
        commands: 1,
        timeouts: dual_timeouts(),
    };
    run_dual(
        "from the start (FeedLossPolicy::Reinit)",
        dual::DualWorld::new(bounds, tether::connect::dual::FeedLossPolicy::Reinit),
        depth(DUAL_DEPTH),
        25_000,
    );
}

/// From a completed handshake: `main` cut and reconnected, `feed` lost and
/// re-initialised, under every interleaving.
#[test]
fn dual_resumption_every_interleaving() {
    let bounds = dual::Bounds {
        losses: 1,
        dups: 1,
        cuts: 2,
        commands: 0,
        timeouts: dual_timeouts(),
    };
    run_dual(
        "from Connected (resumption, FeedLossPolicy::Reinit)",
        dual::DualWorld::connected(bounds, tether::connect::dual::FeedLossPolicy::Reinit),
        depth(DUAL_DEPTH),
        5_000,
    );
}

/// From a completed handshake under the default `FeedLossPolicy::CloseBoth`: a `feed` lost
/// closes both channels, and the server must end up without the player.
#[test]
fn dual_resumption_close_both_every_interleaving() {
    dual::sanity(tether::connect::dual::FeedLossPolicy::CloseBoth);
    let bounds = dual::Bounds {
        losses: 1,
        dups: 1,
        cuts: 2,
        commands: 1,
        timeouts: dual_timeouts(),
    };
    run_dual(
        "from Connected (resumption, FeedLossPolicy::CloseBoth)",
        dual::DualWorld::connected(bounds, tether::connect::dual::FeedLossPolicy::CloseBoth),
        depth(DUAL_DEPTH),
        2_500,
    );
}
