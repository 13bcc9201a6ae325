//! Model-checked scenarios: a token-merge server and up to four clients, each a composed
//! [`Peer`] with journal sync, driven through the [`Sim`] by a list of [`Step`]s
//! (appends, time, cuts, partitions, fault changes, clock jumps, resyncs, formal
//! disconnections), with the library's promises checked after every step against a small
//! reference model.
//!
//! [`run`] builds the world from a [`Scenario`], applies each step, and after each one checks:
//!
//! - **agreement**: a client CONNECTED on a transport whose server end is a CONNECTED
//!   session holds the same merged token as that session; no two sessions share a token;
//!   the peer layer's idea of which sessions are up matches the connection machine's;
//! - **bounded memory**: open transports per node, sessions, pending handshakes, queued
//!   messages and journal sizes stay within their configured or modelled bounds;
//! - **no invention, no duplicate**: every journal holds only entries somebody appended,
//!   and every node reports each entry it learned ([`SyncEvent::Applied`]) at most once over
//!   the whole run, never one it appended itself;
//! - **no unexpected end**: a client ends only when the scenario disconnects it (or, after a
//!   forward clock jump, gives up).
//!
//! Then it calms the network ([`Faults::none`], every partition healed) and checks
//! **convergence**: every live client is connected, every live node's journal holds the same
//! set of entries (which includes everything a live node appended), and each node saw exactly
//! one `Applied` for every entry it did not append itself.
//!
//! A broken promise is a [`Violation`] naming the invariant, the step, the node and what was
//! expected, so that a proptest failure or a fuzz crash reads as a bug report. The same
//! [`Scenario`] type drives proptest (tests/model.rs) and cargo-fuzz (it implements
//! `arbitrary::Arbitrary` under the `arbitrary` feature); [`run`] clamps every size so that one
//! scenario runs in milliseconds.
//!
//! ```
//! use tether::testkit::scenario::{run, Scenario, Step};
//!
//! let scenario = Scenario {
//!     seed: 7,
//!     clients: 2,
//!     steps: vec![
//!         Step::Append { node: 1, count: 3 },
//!         Step::Advance { millis: 500 },
//!         Step::Cut { client: 0 },
//!         Step::Append { node: 0, count: 2 },
//!         Step::Advance { millis: 3_000 },
//!     ],
//! };
//! let report = run(&scenario).expect("no violation");
//! assert_eq!(report.entries, 5);
//! ```

use super::{Either, Faults, NodeId, Sim};
use crate::connect::merge::{
    self, Client, ClientCommand, ClientEvent, EndReason, Server, ServerCommand, ServerEvent,
    SessionId, Status, TokenSource,
};
use crate::driver::Channel;
use crate::peer::{Peer, PeerCommand, PeerEvent, SharedJournal};
use crate::sync::journal::{JournalStore, MemJournal, Role, SyncCommand, SyncConfig, SyncEvent};
use crate::time::Duration;
use crate::token::Token;
use crate::wire::Entry;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Most clients in a scenario.
pub const MAX_CLIENTS: u8 = 4;
/// Most steps run (longer scenarios are truncated).
pub const MAX_STEPS: usize = 64;
/// Most entries one [`Step::Append`] appends.
pub const MAX_APPEND: u8 = 16;
/// Longest [`Step::Advance`], in milliseconds.
pub const MAX_ADVANCE_MILLIS: u16 = 10_000;
/// Largest clock jump of one [`Step::JumpClock`], in milliseconds either way.
pub const MAX_JUMP_MILLIS: i32 = 60_000;
/// Most transports one client may hold open at once (one current, plus dials and closes
/// still in flight).
pub const MAX_CLIENT_LINKS: usize = 3;
/// Most transports the server may hold open per client.
pub const MAX_SERVER_LINKS_PER_CLIENT: usize = 3;

/// The server's configuration in every scenario: a short resume grace so that long
/// partitions expire sessions, and small bounds so that the bounds are exercised.
pub fn server_config() -> merge::ServerConfig {
    merge::ServerConfig {
        resume_grace: Duration::from_secs(20),
        max_sessions: 8,
        max_pending: 16,
        max_queue: 256,
        ..Default::default()
    }
}

/// The configuration of client `i` (its own jitter seed; it keeps trying for an hour).
pub fn client_config(seed: u64, i: u8) -> merge::Config {
    merge::Config {
        jitter_seed: seed.wrapping_add(u64::from(i)),
        give_up_after: Duration::from_secs(3600),
        reconnect_max: Duration::from_secs(8),
        max_queue: 256,
        ..Default::default()
    }
}

/// The sync configuration of every peer (no idle status: scenarios idle on purpose).
pub fn sync_config() -> SyncConfig {
    SyncConfig {
        idle_timeout: None,
        ..SyncConfig::default()
    }
}

/// A node of a scenario, as violations name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Who {
    /// The server.
    Server,
    /// Client number `k` (from 0).
    Client(u8),
}

impl core::fmt::Display for Who {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Who::Server => f.write_str("server"),
            Who::Client(k) => write!(f, "client{k}"),
        }
    }
}

/// An entry's key, as the model knows it: (author, resource), both text.
pub type Key = (String, String);

/// One step of a scenario. Node and client numbers are taken modulo the number present
/// (node 0 is the server, node `k + 1` client `k`); sizes are clamped to the `MAX_*`
/// constants.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Step {
    /// The node appends `count` new entries of its own (author: its name).
    Append {
        /// Which node (0: the server).
        node: u8,
        /// How many (at most [`MAX_APPEND`]).
        count: u8,
    },
    /// The node appends an entry under a key other nodes may append too (author `shared`):
    /// concurrent appends of one key must still converge to one key everywhere.
    AppendShared {
        /// Which node.
        node: u8,
        /// Which shared resource.
        key: u8,
    },
    /// Virtual time passes.
    Advance {
        /// How long (at most [`MAX_ADVANCE_MILLIS`]).
        millis: u16,
    },
    /// The client's `main` transport is cut.
    Cut {
        /// Which client.
        client: u8,
    },
    /// The client and the server are partitioned until healed.
    Partition {
        /// Which client.
        client: u8,
    },
    /// The partition between the client and the server ends.
    Heal {
        /// Which client.
        client: u8,
    },
    /// Every partition ends.
    HealAll,
    /// The network misbehaves like this from now on (clamped: latency and jitter at most
    /// 100 ms, cuts at most 10 % of stream transmits).
    SetFaults(Faults),
    /// A perfect network again, every partition healed.
    Calm,
    /// A node's clock jumps (at most [`MAX_JUMP_MILLIS`] either way).
    JumpClock {
        /// Which node.
        node: u8,
        /// By how much, in milliseconds (negative: backwards).
        millis: i32,
    },
    /// The node asks a peer for its journal again (on the server: session number `session`
    /// among those it knows).
    Resync {
        /// Which node.
        node: u8,
        /// Which of the server's sessions.
        session: u8,
    },
    /// The client disconnects formally: it ends for good (and leaves the model's
    /// convergence check).
    Disconnect {
        /// Which client.
        client: u8,
    },
    /// The server disconnects the client's session formally: the client ends for good.
    Kick {
        /// Which client.
        client: u8,
    },
}

/// A scenario: a seed for the network's randomness and the machines' tokens, a number of
/// clients (clamped to `1..=`[`MAX_CLIENTS`]), and the steps (at most [`MAX_STEPS`] run).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Scenario {
    /// Seeds the network, the server's tokens and the clients' tokens and jitter.
    pub seed: u64,
    /// How many clients.
    pub clients: u8,
    /// What happens, in order.
    pub steps: Vec<Step>,
}

/// What a scenario did (for figures: steps, entries, network activity).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Steps run (after truncation), not counting the calm phase.
    pub steps: usize,
    /// Distinct entries appended over the run.
    pub entries: usize,
    /// Entries in the converged journals.
    pub converged_entries: usize,
    /// Clients still alive at the end (not disconnected, not given up).
    pub live_clients: usize,
    /// Inputs the simulator delivered.
    pub delivered: u64,
    /// Transports cut.
    pub cuts: u64,
    /// Errors the machines returned (typed refusals of inputs, not violations).
    pub errors: u64,
    /// Virtual time the run took, calm phase included.
    pub virtual_time: Duration,
}

/// A broken promise. `step` is the index of the step after which it was seen; the calm
/// phase counts on from `steps.len()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A client and the server session on the other end of its transport are both
    /// CONNECTED but hold different merged tokens.
    #[error("step {step}: {client} and server session {session:?} are connected on one transport with different tokens")]
    SessionMismatch {
        /// Step.
        step: usize,
        /// The client.
        client: Who,
        /// The server's session.
        session: SessionId,
        /// The client's merged token, in hex.
        client_token: Option<String>,
        /// The session's merged token, in hex.
        server_token: Option<String>,
    },
    /// Two server sessions hold the same merged token.
    #[error("step {step}: sessions {a:?} and {b:?} share a merged token")]
    SharedToken {
        /// Step.
        step: usize,
        /// One session.
        a: SessionId,
        /// The other.
        b: SessionId,
    },
    /// The peer layer and its connection machine disagree on whether a session is up.
    #[error("step {step}: {node}: the peer and its connection disagree: {detail}")]
    LayersDisagree {
        /// Step.
        step: usize,
        /// The node.
        node: Who,
        /// What disagrees.
        detail: String,
    },
    /// A count went past its bound.
    #[error("step {step}: {node}: {what} is {value}, bound {bound}")]
    Unbounded {
        /// Step.
        step: usize,
        /// The node.
        node: Who,
        /// What was counted.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The bound.
        bound: usize,
    },
    /// A journal holds an entry nobody appended.
    #[error("step {step}: {node} holds {key:?}, which nobody appended")]
    Invented {
        /// Step.
        step: usize,
        /// The node.
        node: Who,
        /// The entry.
        key: Key,
    },
    /// A node reported an entry applied twice.
    #[error("step {step}: {node} applied {key:?} {count} times")]
    AppliedTwice {
        /// Step.
        step: usize,
        /// The node.
        node: Who,
        /// The entry.
        key: Key,
        /// How many times so far.
        count: u32,
    },
    /// A node reported applying an entry it had appended itself.
    #[error("step {step}: {node} applied {key:?}, which it appended itself")]
    AppliedOwn {
        /// Step.
        step: usize,
        /// The node.
        node: Who,
        /// The entry.
        key: Key,
    },
    /// A client ended although the scenario did not end it.
    #[error("step {step}: {client} ended unexpectedly: {reason:?}")]
    UnexpectedEnd {
        /// Step.
        step: usize,
        /// The client.
        client: Who,
        /// Why it says it ended.
        reason: EndReason,
    },
    /// After the calm phase a live client is not connected (or its session is not).
    #[error("{client} is not connected after the calm phase: client {client_status:?}, server session {server_status:?}")]
    NotConnected {
        /// The client.
        client: Who,
        /// The client's status.
        client_status: Status,
        /// The status of the server's session with the same token, if any.
        server_status: Option<Status>,
    },
    /// After the calm phase a live node's journal differs from the server's.
    #[error("{node} did not converge: missing {missing:?}, extra {extra:?} (of {expected} entries); errors seen: {errors:?}")]
    NotConverged {
        /// The node.
        node: Who,
        /// Entries the server has and it lacks (the first few).
        missing: Vec<Key>,
        /// Entries it has and the server lacks (the first few).
        extra: Vec<Key>,
        /// How many entries the server has.
        expected: usize,
        /// The last errors the machines returned, for diagnosis.
        errors: Vec<String>,
    },
    /// After the calm phase a live node's journal lacks an entry a live node appended.
    #[error("{key:?}, appended by {author}, is missing everywhere")]
    Lost {
        /// Who appended it.
        author: Who,
        /// The entry.
        key: Key,
    },
    /// After the calm phase and the resume grace, the registry does not hold exactly one
    /// session per live client.
    #[error("after the calm phase the server holds {sessions} sessions for {live} live clients")]
    SessionLeak {
        /// Sessions in the registry.
        sessions: usize,
        /// Live clients.
        live: usize,
    },
    /// After the calm phase a node holds an entry it neither appended nor reported applied.
    #[error("{node} holds {key:?} but never reported it applied")]
    Unreported {
        /// The node.
        node: Who,
        /// The entry.
        key: Key,
    },
}

/// Deterministic 128-bit tokens for the server's temporary nodes (a linear congruential
/// sequence from the scenario's seed; a real server uses a cryptographic source).
#[derive(Debug, Clone)]
pub struct SeqTokens(u64);

impl SeqTokens {
    /// A sequence starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SeqTokens(seed)
    }
}

impl TokenSource for SeqTokens {
    fn next_token(&mut self) -> Token {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.0.to_be_bytes());
        b[8..].copy_from_slice(&(!self.0).to_be_bytes());
        token_from(b)
    }
}

/// A 16-byte token: within [`Token`]'s length bounds, so never refused.
fn token_from(b: [u8; 16]) -> Token {
    Token::new(&b).unwrap_or_else(|_| unreachable!("16 bytes always make a token"))
}

/// The journal every peer uses.
pub type Journal = SharedJournal<MemJournal>;
/// A client peer.
pub type ClientPeer = Peer<Client, Journal>;
/// The server peer.
pub type ServerPeer = Peer<Server<SeqTokens>, Journal>;
/// A node of the simulation.
pub type Node = Either<ClientPeer, ServerPeer>;

/// What the model keeps per node.
#[derive(Debug, Default)]
struct Track {
    /// Keys this node appended while it did not hold them.
    own: BTreeSet<Key>,
    /// `Applied` events per key.
    applied: BTreeMap<Key, u32>,
    /// Set once the client ended (with why).
    ended: Option<EndReason>,
    /// The scenario ended it on purpose.
    ended_on_purpose: bool,
    /// Its clock was moved forwards (it may give up).
    jumped_forward: bool,
    /// Sum of its backward clock jumps, in milliseconds.
    behind_millis: u64,
    /// Next resource number for its own appends.
    next: u32,
}

/// The world of one scenario: the simulation and the model beside it.
struct World {
    sim: Sim<Node>,
    server: NodeId,
    clients: Vec<NodeId>,
    tracks: Vec<Track>,
    appended: BTreeSet<Key>,
    errors: Vec<String>,
    error_count: u64,
}

fn key_of(author: &[u8], resource: &[u8]) -> Key {
    (
        String::from_utf8_lossy(author).into_owned(),
        String::from_utf8_lossy(resource).into_owned(),
    )
}

fn clamp_faults(f: Faults) -> Faults {
    let max = Duration::from_millis(100);
    Faults {
        latency: f.latency.min(max),
        jitter: f.jitter.min(max),
        loss_per_million: f.loss_per_million.min(1_000_000),
        duplicate_per_million: f.duplicate_per_million.min(1_000_000),
        cut_per_million: f.cut_per_million.min(100_000),
        max_chunk: f.max_chunk,
    }
}

impl World {
    fn new(seed: u64, clients: u8) -> World {
        let mut sim = Sim::new(seed, Faults::none());
        let server_peer = Peer::new(
            Server::new(server_config(), SeqTokens::new(seed)),
            Role::Server,
            sync_config(),
            SharedJournal::new(MemJournal::new(1, 100_000)),
        );
        let server = sim.add_node(Either::Right(server_peer));
        let mut ids = Vec::new();
        for i in 0..clients {
            let mut local = [0u8; 16];
            local[..8].copy_from_slice(&(seed ^ (u64::from(i) + 1)).to_be_bytes());
            local[8] = i;
            local[9] = 0xc1;
            let client = Client::new(sim.now(), client_config(seed, i), token_from(local))
                .unwrap_or_else(|_| unreachable!("a 16-byte token suits tether's encoding"));
            let peer = Peer::new(
                client,
                Role::Client,
                sync_config(),
                SharedJournal::new(MemJournal::new(100 + u64::from(i), 100_000)),
            );
            let id = sim.add_node(Either::Left(peer));
            sim.route(id, Channel::Main, server);
            ids.push(id);
        }
        let tracks = (0..=clients).map(|_| Track::default()).collect();
        World {
            sim,
            server,
            clients: ids,
            tracks,
            appended: BTreeSet::new(),
            errors: Vec::new(),
            error_count: 0,
        }
    }

    fn n(&self) -> usize {
        self.clients.len()
    }

    /// Node number `node` (mod the number of nodes): 0 is the server.
    fn node(&self, node: u8) -> (Who, NodeId, usize) {
        let i = usize::from(node) % (self.n() + 1);
        if i == 0 {
            (Who::Server, self.server, 0)
        } else {
            (Who::Client((i - 1) as u8), self.clients[i - 1], i)
        }
    }

    fn client(&self, client: u8) -> (Who, NodeId, usize) {
        let k = usize::from(client) % self.n();
        (Who::Client(k as u8), self.clients[k], k + 1)
    }

    fn client_peer(&self, id: NodeId) -> Option<&ClientPeer> {
        self.sim.node(id).left()
    }

    fn server_peer(&self) -> Option<&ServerPeer> {
        self.sim.node(self.server).right()
    }

    fn journal(&self, id: NodeId) -> &Journal {
        match self.sim.node(id) {
            Either::Left(p) => p.store(),
            Either::Right(p) => p.store(),
        }
    }

    fn keys(&self, id: NodeId) -> BTreeSet<Key> {
        self.journal(id)
            .with(|j| j.keys().into_iter().map(|(a, r)| key_of(&a, &r)).collect())
    }

    fn append(&mut self, index: usize, id: NodeId, entry: Entry) {
        let key = key_of(&entry.author, &entry.resource);
        self.appended.insert(key.clone());
        let had = self
            .journal(id)
            .with(|j| j.contains(&entry.author, &entry.resource));
        if !had {
            if let Some(t) = self.tracks.get_mut(index) {
                t.own.insert(key);
            }
        }
        let cmd = match self.sim.node(id) {
            Either::Left(_) => Either::Left(PeerCommand::Append(entry)),
            Either::Right(_) => Either::Right(PeerCommand::Append(entry)),
        };
        self.sim.command(id, cmd);
    }

    /// The server session holding the same merged token as client `id`, if any.
    fn session_of_client(&self, id: NodeId) -> Option<SessionId> {
        let merged = self.client_peer(id)?.connection().view().merged?;
        let server = self.server_peer()?;
        server
            .sessions()
            .map(|(s, _)| s)
            .find(|s| server.connection().session(*s).and_then(|v| v.merged) == Some(merged))
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Append { node, count } => {
                let (who, id, index) = self.node(node);
                for _ in 0..count.min(MAX_APPEND) {
                    let Some(t) = self.tracks.get_mut(index) else {
                        return;
                    };
                    let n = t.next;
                    t.next += 1;
                    let author = format!("{who}");
                    let resource = format!("r{n}");
                    let entry = Entry::new(author.as_bytes(), resource.as_bytes(), b"payload");
                    self.append(index, id, entry);
                }
            }
            Step::AppendShared { node, key } => {
                let (who, id, index) = self.node(node);
                let resource = format!("s{}", key % 8);
                let payload = format!("from {who}");
                let entry = Entry::new(b"shared", resource.as_bytes(), payload.as_bytes());
                self.append(index, id, entry);
            }
            Step::Advance { millis } => {
                let d = Duration::from_millis(u64::from(millis.min(MAX_ADVANCE_MILLIS)));
                self.sim.run_for(d);
            }
            Step::Cut { client } => {
                let (_, id, _) = self.client(client);
                self.sim.cut(id, Channel::Main);
            }
            Step::Partition { client } => {
                let (_, id, _) = self.client(client);
                self.sim.partition(id, self.server);
            }
            Step::Heal { client } => {
                let (_, id, _) = self.client(client);
                self.sim.heal(id, self.server);
            }
            Step::HealAll => self.sim.heal_all(),
            Step::SetFaults(f) => self.sim.set_faults(clamp_faults(f)),
            Step::Calm => {
                self.sim.set_faults(Faults::none());
                self.sim.heal_all();
            }
            Step::JumpClock { node, millis } => {
                let (_, id, index) = self.node(node);
                let millis = millis.clamp(-MAX_JUMP_MILLIS, MAX_JUMP_MILLIS);
                if let Some(t) = self.tracks.get_mut(index) {
                    if millis > 0 {
                        t.jumped_forward = true;
                    } else {
                        t.behind_millis += u64::from(millis.unsigned_abs());
                    }
                }
                self.sim.jump_clock(id, i64::from(millis) * 1000);
            }
            Step::Resync { node, session } => {
                let (_, id, _) = self.node(node);
                let request = SyncCommand::RequestJournal { limit: None };
                let cmd = match self.sim.node(id) {
                    Either::Left(_) => Some(Either::Left(PeerCommand::Sync((), request))),
                    Either::Right(p) => {
                        let sessions: Vec<SessionId> = p.sessions().map(|(s, _)| s).collect();
                        let pick = usize::from(session) % sessions.len().max(1);
                        sessions
                            .get(pick)
                            .map(|s| Either::Right(PeerCommand::Sync(*s, request)))
                    }
                };
                if let Some(cmd) = cmd {
                    self.sim.command(id, cmd);
                }
            }
            Step::Disconnect { client } => {
                let (_, id, index) = self.client(client);
                if let Some(t) = self.tracks.get_mut(index) {
                    t.ended_on_purpose = true;
                }
                self.sim.command(
                    id,
                    Either::Left(PeerCommand::Connection(ClientCommand::Disconnect)),
                );
            }
            Step::Kick { client } => {
                let (_, id, index) = self.client(client);
                if let Some(session) = self.session_of_client(id) {
                    if let Some(t) = self.tracks.get_mut(index) {
                        t.ended_on_purpose = true;
                    }
                    self.sim.command(
                        self.server,
                        Either::Right(PeerCommand::Connection(ServerCommand::Disconnect {
                            session,
                        })),
                    );
                }
            }
        }
    }

    /// Moves every node's events and errors into the model, checking what events alone
    /// can show (applied at most once, never one's own; no unexpected end).
    fn absorb(&mut self, step: usize) -> Result<(), Violation> {
        let nodes: Vec<(Who, NodeId, usize)> = (0..=self.n() as u8).map(|i| self.node(i)).collect();
        for (who, id, index) in nodes {
            for e in self.sim.take_errors(id) {
                self.error_count += 1;
                if self.errors.len() >= 8 {
                    self.errors.remove(0);
                }
                self.errors.push(format!("{who}: {e}"));
            }
            for event in self.sim.take_events(id) {
                let (sync, ended) = match event {
                    Either::Left(PeerEvent::Sync(_, s)) => (Some(s), None),
                    Either::Right(PeerEvent::Sync(_, s)) => (Some(s), None),
                    Either::Left(PeerEvent::Connection(ClientEvent::Ended(r))) => (None, Some(r)),
                    Either::Right(PeerEvent::Connection(ServerEvent::Ended { .. })) => (None, None),
                    _ => (None, None),
                };
                let Some(track) = self.tracks.get_mut(index) else {
                    continue;
                };
                if let Some(reason) = ended {
                    track.ended = Some(reason);
                    let expected = match reason {
                        EndReason::LocalDisconnect | EndReason::PeerDisconnect => {
                            track.ended_on_purpose
                        }
                        EndReason::GaveUp => track.jumped_forward,
                        // A client whose formally ended session it tries to resume is
                        // refused for good: only after the scenario ended it.
                        EndReason::Refused(_) | EndReason::Expired => track.ended_on_purpose,
                    };
                    if !expected {
                        return Err(Violation::UnexpectedEnd {
                            step,
                            client: who,
                            reason,
                        });
                    }
                }
                if let Some(SyncEvent::Applied {
                    author, resource, ..
                }) = sync
                {
                    let key = key_of(&author, &resource);
                    if track.own.contains(&key) {
                        return Err(Violation::AppliedOwn {
                            step,
                            node: who,
                            key,
                        });
                    }
                    let count = track.applied.entry(key.clone()).or_insert(0);
                    *count += 1;
                    if *count > 1 {
                        return Err(Violation::AppliedTwice {
                            step,
                            node: who,
                            key,
                            count: *count,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The invariants that hold after every step.
    fn check(&mut self, step: usize) -> Result<(), Violation> {
        self.absorb(step)?;
        let Some(server_peer) = self.server_peer() else {
            return Ok(());
        };
        let server = server_peer.connection();
        let cfg = server_config();
        let n = self.n();
        // Sessions: bounded, known to both layers alike, tokens unique.
        let mut tokens: Vec<(Token, SessionId)> = Vec::new();
        let mut known = 0usize;
        for (session, up) in server_peer.sessions() {
            known += 1;
            let Some(view) = server.session(session) else {
                return Err(Violation::LayersDisagree {
                    step,
                    node: Who::Server,
                    detail: format!("the peer knows session {session:?}, the registry does not"),
                });
            };
            if up != (view.status == Status::Connected) {
                return Err(Violation::LayersDisagree {
                    step,
                    node: Who::Server,
                    detail: format!(
                        "session {session:?}: peer says up={up}, registry says {:?}",
                        view.status
                    ),
                });
            }
            if let Some(m) = view.merged {
                if let Some((_, other)) = tokens.iter().find(|(t, _)| *t == m) {
                    return Err(Violation::SharedToken {
                        step,
                        a: *other,
                        b: session,
                    });
                }
                tokens.push((m, session));
            }
            let queued = server.queued(session).unwrap_or(0);
            if queued > cfg.max_queue {
                return Err(unbounded(
                    step,
                    Who::Server,
                    "a session's queue",
                    queued,
                    cfg.max_queue,
                ));
            }
        }
        let bounds = [
            ("sessions known to the peer", known, server.session_count()),
            ("sessions", server.session_count(), cfg.max_sessions),
            (
                "pending handshakes",
                server.pending_count(),
                cfg.max_pending,
            ),
            (
                "ended tokens remembered",
                server.ended_count(),
                cfg.max_sessions,
            ),
            (
                "open transports",
                self.sim.open_links(self.server),
                n * MAX_SERVER_LINKS_PER_CLIENT,
            ),
        ];
        for (what, value, bound) in bounds {
            if value > bound {
                return Err(unbounded(step, Who::Server, what, value, bound));
            }
        }
        if known != server.session_count() {
            return Err(Violation::LayersDisagree {
                step,
                node: Who::Server,
                detail: format!(
                    "the peer knows {known} sessions, the registry holds {}",
                    server.session_count()
                ),
            });
        }
        // Clients: layers agree, bounded, and agree with their server session.
        for (k, &id) in self.clients.iter().enumerate() {
            let who = Who::Client(k as u8);
            let Some(peer) = self.client_peer(id) else {
                continue;
            };
            let client = peer.connection();
            let view = client.view();
            let up = peer.sessions().next().map(|(_, u)| u);
            let connected = view.status == Status::Connected;
            if up.unwrap_or(false) != connected {
                return Err(Violation::LayersDisagree {
                    step,
                    node: who,
                    detail: format!("peer says up={up:?}, connection says {:?}", view.status),
                });
            }
            let cfg = client_config(0, 0);
            if client.queued() > cfg.max_queue {
                return Err(unbounded(
                    step,
                    who,
                    "queued messages",
                    client.queued(),
                    cfg.max_queue,
                ));
            }
            let links = self.sim.open_links(id);
            if links > MAX_CLIENT_LINKS {
                return Err(unbounded(
                    step,
                    who,
                    "open transports",
                    links,
                    MAX_CLIENT_LINKS,
                ));
            }
            let far = view.link.and_then(|l| self.sim.far_end(id, l.id));
            if let (true, Some((node, far_link))) = (connected, far) {
                if node == self.server {
                    if let Some(session) = server.session_of(far_link) {
                        let sv = server.session(session);
                        let both = sv.is_some_and(|v| v.status == Status::Connected);
                        let server_token = sv.and_then(|v| v.merged);
                        if both && server_token != view.merged {
                            return Err(Violation::SessionMismatch {
                                step,
                                client: who,
                                session,
                                client_token: view.merged.map(|t| hex(&t)),
                                server_token: server_token.map(|t| hex(&t)),
                            });
                        }
                    }
                }
            }
        }
        // Journals: nothing invented, never more than was appended.
        let nodes: Vec<(Who, NodeId)> = (0..=n as u8)
            .map(|i| {
                let (w, id, _) = self.node(i);
                (w, id)
            })
            .collect();
        for (who, id) in nodes {
            let keys = self.keys(id);
            if keys.len() > self.appended.len() {
                return Err(unbounded(
                    step,
                    who,
                    "journal entries",
                    keys.len(),
                    self.appended.len(),
                ));
            }
            if let Some(key) = keys.into_iter().find(|k| !self.appended.contains(k)) {
                return Err(Violation::Invented {
                    step,
                    node: who,
                    key,
                });
            }
        }
        Ok(())
    }

    fn live(&self, index: usize) -> bool {
        self.tracks.get(index).is_some_and(|t| t.ended.is_none())
    }

    /// Whether every live node holds the server's set and every live client is connected
    /// with its session.
    fn converged(&self) -> bool {
        let server_keys = self.keys(self.server);
        self.clients.iter().enumerate().all(|(k, &id)| {
            !self.live(k + 1)
                || (self.client_status(id).0 == Status::Connected
                    && self.client_status(id).1 == Some(Status::Connected)
                    && self.keys(id) == server_keys)
        })
    }

    /// The client's status and that of the server session with its token.
    fn client_status(&self, id: NodeId) -> (Status, Option<Status>) {
        let status = self
            .client_peer(id)
            .map_or(Status::Disconnected, |p| p.connection().view().status);
        let server_status = self.session_of_client(id).and_then(|s| {
            self.server_peer()
                .and_then(|p| p.connection().session(s))
                .map(|v| v.status)
        });
        (status, server_status)
    }

    /// The checks once the network is calm.
    fn final_check(&self) -> Result<(), Violation> {
        let server_keys = self.keys(self.server);
        for (k, &id) in self.clients.iter().enumerate() {
            if !self.live(k + 1) {
                continue;
            }
            let who = Who::Client(k as u8);
            let (client_status, server_status) = self.client_status(id);
            if client_status != Status::Connected || server_status != Some(Status::Connected) {
                return Err(Violation::NotConnected {
                    client: who,
                    client_status,
                    server_status,
                });
            }
            let keys = self.keys(id);
            if keys != server_keys {
                return Err(Violation::NotConverged {
                    node: who,
                    missing: server_keys.difference(&keys).take(5).cloned().collect(),
                    extra: keys.difference(&server_keys).take(5).cloned().collect(),
                    expected: server_keys.len(),
                    errors: self.errors.clone(),
                });
            }
        }
        let live = (1..=self.n()).filter(|&i| self.live(i)).count();
        let sessions = self
            .server_peer()
            .map_or(0, |p| p.connection().session_count());
        if sessions != live {
            return Err(Violation::SessionLeak { sessions, live });
        }
        for (index, track) in self.tracks.iter().enumerate() {
            let (who, id, _) = self.node(index as u8);
            if !self.live(index) {
                continue;
            }
            if let Some(key) = track.own.iter().find(|k| !server_keys.contains(*k)) {
                return Err(Violation::Lost {
                    author: who,
                    key: key.clone(),
                });
            }
            let keys = self.keys(id);
            if let Some(key) = keys
                .iter()
                .find(|k| !track.own.contains(*k) && !track.applied.contains_key(*k))
            {
                return Err(Violation::Unreported {
                    node: who,
                    key: key.clone(),
                });
            }
        }
        Ok(())
    }
}

fn hex(t: &Token) -> String {
    t.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn unbounded(step: usize, node: Who, what: &'static str, value: usize, bound: usize) -> Violation {
    Violation::Unbounded {
        step,
        node,
        what,
        value,
        bound,
    }
}

/// Runs a scenario (clamped: see [`Scenario`]), checking the invariants after every step,
/// then calms the network and checks convergence. See the [module docs](self).
pub fn run(scenario: &Scenario) -> Result<Report, Violation> {
    let clients = scenario.clients.clamp(1, MAX_CLIENTS);
    let mut w = World::new(scenario.seed, clients);
    let start = w.sim.now();
    let steps = &scenario.steps[..scenario.steps.len().min(MAX_STEPS)];
    w.check(0)?;
    for (i, step) in steps.iter().enumerate() {
        w.apply(step);
        w.check(i)?;
    }
    // Calm: a perfect network, no partition, and long enough for every backoff, every
    // expiry and every clock left behind to catch up.
    w.sim.set_faults(Faults::none());
    w.sim.heal_all();
    let behind: u64 = w.tracks.iter().map(|t| t.behind_millis).max().unwrap_or(0);
    let budget = 600 + behind / 1000 + 1;
    let mut step = steps.len();
    let mut settled = None;
    for second in 0..budget {
        w.sim.run_for(Duration::from_secs(1));
        step += 1;
        w.check(step)?;
        match settled {
            None if w.converged() => settled = Some(second),
            // Converged a while ago: let whatever is still in flight land, then judge.
            Some(at) if second >= at + 10 => break,
            _ => {}
        }
    }
    // Sessions orphaned by a handshake cut half-way, or left by a client that ended while
    // away, are forgotten after the resume grace: then the registry holds exactly one
    // session per live client.
    // A clock set back waits until real time catches up with what it had seen.
    let grace = server_config().resume_grace + Duration::from_millis(1_000 + behind);
    w.sim.run_for(grace);
    w.check(step + 1)?;
    w.final_check()?;
    let stats = w.sim.stats();
    Ok(Report {
        steps: steps.len(),
        entries: w.appended.len(),
        converged_entries: w.keys(w.server).len(),
        live_clients: (1..=w.n()).filter(|&i| w.live(i)).count(),
        delivered: stats.delivered,
        cuts: stats.cuts,
        errors: w.error_count,
        virtual_time: w.sim.now().saturating_duration_since(start),
    })
}
