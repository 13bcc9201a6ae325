//! Model-checked scenarios: a server and up to four clients, each a composed [`Peer`] with
//! journal sync over one of the two connection profiles ([`Profile::Merge`]: token-merge,
//! seed 004; [`Profile::Dual`]: dual-channel `main` + `feed`, seed 003), driven through the
//! [`Sim`] by a list of [`Step`]s (appends, feed updates, time, cuts, partitions, fault
//! changes, clock jumps, resyncs, formal disconnections, kicks, reconnections), with the
//! library's promises checked after every step against a small reference model.
//!
//! Both profiles run the same scenarios through one runner: the step vocabulary, the
//! reference model (the union of appended keys, the feed updates sent), the
//! `Applied`-exactly-once checks and the calm phase are shared; only building the nodes and
//! reading each machine's session, bounds and events differ (a private `Harness` per
//! profile, in `merge.rs` and `dual.rs`). A step that means nothing for a profile (a `feed`
//! update under token-merge, [`Step::Connect`] for a client that reconnects by itself) does
//! nothing there.
//!
//! [`run`] builds the world from a [`Scenario`], applies each step, and after each one checks:
//!
//! - **agreement**: a client connected on a transport whose server end belongs to a
//!   connected session holds that session's identity (token-merge: the same merged token;
//!   dual: the same player id and tokens A and B); no two sessions share a token; the peer
//!   layer's idea of which sessions are up matches the connection machine's;
//! - **bounded memory**: open transports per node, sessions or players, pending handshakes,
//!   queued messages and journal sizes stay within their configured or modelled bounds;
//! - **no invention, no duplicate**: every journal holds only entries somebody appended,
//!   and every node reports each entry it learned ([`SyncEvent::Applied`]) at most once over
//!   the whole run, never one it appended itself;
//! - **feed updates** (dual): every update delivered was sent, to this node, and reaches it
//!   at most once, and never older after newer from one sender within one session (the
//!   sender's sequence order; `feed` may lose updates, so delivery is not required while
//!   the network misbehaves);
//! - **no unexpected end, no protocol error**: a token-merge client ends only when the
//!   scenario disconnects or kicks it (or, after a forward clock jump, gives up); a dual
//!   client may give up and close (its retries are bounded by design: seed 003), but only
//!   once something could disconnect it (a cut, a partition, a kick, a clock jump, a
//!   network that loses or cuts), and never because a peer broke the protocol; the server
//!   never fails a player for anything but a timeout.
//!
//! Then it calms the network ([`Faults::none`], every partition healed) and checks
//! **convergence**: every live client is connected, every live node's journal holds the same
//! set of entries (which includes everything a live node appended), and each node saw exactly
//! one `Applied` for every entry it did not append itself; `feed` updates sent then, by
//! every live client and by the server to each of its sessions, all arrive (dual); after the
//! server's session grace, it holds exactly one session (player) per live client.
//!
//! A dual client that closed (gave up, or was refused after a kick) stays closed until its
//! application connects it again: the runner plays that application, sending
//! [`ClientCommand::Connect`](crate::connect::dual::ClientCommand::Connect) on
//! [`Step::Connect`] and, during the calm phase, to every live client it finds closed. A
//! client the scenario disconnected ([`Step::Disconnect`]) has left for good and leaves the
//! convergence check.
//!
//! A broken promise is a [`Violation`] naming the invariant, the step, the node and what was
//! expected, so that a proptest failure or a fuzz crash reads as a bug report. The same
//! [`Scenario`] type drives proptest (tests/model.rs) and cargo-fuzz (it implements
//! `arbitrary::Arbitrary` under the `arbitrary` feature); [`run`] clamps every size so that one
//! scenario runs in milliseconds.
//!
//! ```
//! use tether::testkit::scenario::{run, Profile, Scenario, Step};
//!
//! for profile in [Profile::Merge, Profile::Dual { reinit_feed: false }] {
//!     let scenario = Scenario {
//!         seed: 7,
//!         clients: 2,
//!         profile,
//!         steps: vec![
//!             Step::Append { node: 1, count: 3 },
//!             Step::Advance { millis: 500 },
//!             Step::Update { node: 2, session: 0, count: 2 },
//!             Step::Cut { client: 0 },
//!             Step::Append { node: 0, count: 2 },
//!             Step::Advance { millis: 3_000 },
//!         ],
//!     };
//!     let report = run(&scenario).expect("no violation");
//!     assert_eq!(report.entries, 5);
//! }
//! ```

mod dual;
mod merge;

pub use dual::{
    dual_client_config, dual_server_config, DualClientPeer, DualNode, DualServerPeer,
    MAX_DUAL_LINKS_PER_CLIENT,
};
pub use merge::{
    client_config, server_config, ClientPeer, Node, ServerPeer, MAX_CLIENT_LINKS,
    MAX_SERVER_LINKS_PER_CLIENT,
};

use super::{Either, Faults, NodeId, Sim};
use crate::driver::{Channel, Machine};
use crate::peer::{Peer, PeerCommand, PeerEvent, Profile as PeerProfile, SharedJournal};
use crate::sync::journal::{JournalStore, MemJournal, Role, SyncCommand, SyncConfig, SyncEvent};
use crate::time::{Duration, Instant};
use crate::token::Token;
use crate::wire::{Element, Entry};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bytes::Bytes;

/// Most clients in a scenario.
pub const MAX_CLIENTS: u8 = 4;
/// Most steps run (longer scenarios are truncated).
pub const MAX_STEPS: usize = 64;
/// Most entries one [`Step::Append`] appends.
pub const MAX_APPEND: u8 = 16;
/// Most `feed` updates one [`Step::Update`] sends.
pub const MAX_UPDATES: u8 = 8;
/// Longest [`Step::Advance`], in milliseconds.
pub const MAX_ADVANCE_MILLIS: u16 = 10_000;
/// Largest clock jump of one [`Step::JumpClock`], in milliseconds either way.
pub const MAX_JUMP_MILLIS: i32 = 60_000;

/// The sync configuration of every peer (no idle status: scenarios idle on purpose).
pub fn sync_config() -> SyncConfig {
    SyncConfig {
        idle_timeout: None,
        ..SyncConfig::default()
    }
}

/// Which connection profile a scenario's peers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Profile {
    /// Token-merge (seed 004): one `main` stream, sessions resumed by merged tokens.
    Merge,
    /// Dual-channel (seed 003): `main` and `feed`, player ids and tokens A and B.
    Dual {
        /// The clients re-initialise a lost `feed` ([`FeedLossPolicy::Reinit`]) instead
        /// of closing both channels ([`FeedLossPolicy::CloseBoth`], the default).
        ///
        /// [`FeedLossPolicy::Reinit`]: crate::connect::dual::FeedLossPolicy::Reinit
        /// [`FeedLossPolicy::CloseBoth`]: crate::connect::dual::FeedLossPolicy::CloseBoth
        reinit_feed: bool,
    },
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
    /// The node sends `count` `UPDATE` messages on `feed` (dual only): a client to the
    /// server, the server to its session number `session` among those it knows. Sends
    /// refused because `feed` is not bound are typed errors, not violations.
    Update {
        /// Which node.
        node: u8,
        /// Which of the server's sessions.
        session: u8,
        /// How many (at most [`MAX_UPDATES`]).
        count: u8,
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
    /// The client's `feed` transport is cut (dual only; closes its datagram socket).
    CutFeed {
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
    /// The server ends the client's session formally. A token-merge client ends for good;
    /// a dual client is refused and starts a fresh session (or closes, and is connected
    /// again later).
    Kick {
        /// Which client.
        client: u8,
    },
    /// The client's application connects it again if it is closed (dual only: a
    /// token-merge client reconnects by itself).
    Connect {
        /// Which client.
        client: u8,
    },
}

/// A scenario: a seed for the network's randomness and the machines' tokens, a number of
/// clients (clamped to `1..=`[`MAX_CLIENTS`]), the connection profile, and the steps (at
/// most [`MAX_STEPS`] run).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Scenario {
    /// Seeds the network, the server's tokens and the clients' tokens and jitter.
    pub seed: u64,
    /// How many clients.
    pub clients: u8,
    /// Which connection profile the peers use.
    pub profile: Profile,
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
    /// Clients still alive at the end (not disconnected, not given up for good).
    pub live_clients: usize,
    /// `feed` updates the nodes were asked to send (dual).
    pub updates_sent: u64,
    /// `feed` updates delivered to their receiver (dual).
    pub updates_delivered: u64,
    /// Times a client closed and had to be connected again by its application (dual).
    pub closes: u64,
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
/// phase counts on from `steps.len()`. Sessions are named as the profile names them
/// (`session 3`, `player 2`), tokens in hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A client and the server session on the other end of its transport are both
    /// connected but disagree on the session (tokens, or the dual player id).
    #[error("step {step}: {client} and server {session} are connected on one transport but disagree: client {client_side}, server {server_side}")]
    SessionMismatch {
        /// Step.
        step: usize,
        /// The client.
        client: Who,
        /// The server's session.
        session: String,
        /// What the client holds.
        client_side: String,
        /// What the server holds.
        server_side: String,
    },
    /// Two server sessions hold the same token.
    #[error("step {step}: {a} and {b} share a token")]
    SharedToken {
        /// Step.
        step: usize,
        /// One session.
        a: String,
        /// The other.
        b: String,
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
    #[error("step {step}: {client} ended unexpectedly: {reason}")]
    UnexpectedEnd {
        /// Step.
        step: usize,
        /// The client.
        client: Who,
        /// Why it says it ended.
        reason: String,
    },
    /// A machine reported that its honest peer broke the protocol (or refused it for a
    /// reason an honest peer never earns).
    #[error("step {step}: {node}: protocol error between honest peers: {detail}")]
    ProtocolError {
        /// Step.
        step: usize,
        /// The node that reported it.
        node: Who,
        /// What it reported.
        detail: String,
    },
    /// A `feed` update was delivered that nobody sent, or to the wrong node.
    #[error("step {step}: {node} received a feed update nobody sent it: {detail}")]
    UpdateInvented {
        /// Step.
        step: usize,
        /// The receiver.
        node: Who,
        /// What arrived.
        detail: String,
    },
    /// A `feed` update was delivered twice to one node.
    #[error("step {step}: {node} received update {counter} from {from} twice")]
    UpdateTwice {
        /// Step.
        step: usize,
        /// The receiver.
        node: Who,
        /// The sender.
        from: Who,
        /// The update's number (per sender, in sending order).
        counter: u32,
    },
    /// A `feed` update was delivered after a newer one of the same sender and session.
    #[error("step {step}: {node} received update {counter} from {from} after the newer {newest}")]
    UpdateReordered {
        /// Step.
        step: usize,
        /// The receiver.
        node: Who,
        /// The sender.
        from: Who,
        /// The update's number.
        counter: u32,
        /// The newest number delivered before it in the same session.
        newest: u32,
    },
    /// On a calm network, with every live client connected, a `feed` update did not arrive.
    #[error("on a calm network, update {counter} from {from} never reached {to}")]
    UpdateLost {
        /// The sender.
        from: Who,
        /// The receiver.
        to: Who,
        /// The update's number.
        counter: u32,
    },
    /// After the calm phase a live client is not connected (or its session is not).
    #[error("{client} is not connected after the calm phase: client {client_status}, server session {server_status:?}")]
    NotConnected {
        /// The client.
        client: Who,
        /// The client's status.
        client_status: String,
        /// The status of the server's session for it, if any.
        server_status: Option<String>,
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
    /// After the calm phase and the session grace, the server does not hold exactly one
    /// session per live client.
    #[error("after the calm phase the server holds {sessions} sessions for {live} live clients")]
    SessionLeak {
        /// Sessions (players) on the server.
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

/// Deterministic 128-bit tokens for the servers of both profiles (a linear congruential
/// sequence from the scenario's seed; a real server uses a cryptographic source).
#[derive(Debug, Clone)]
pub struct SeqTokens(u64);

impl SeqTokens {
    /// A sequence starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SeqTokens(seed)
    }

    fn next(&mut self) -> Token {
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

impl crate::connect::merge::TokenSource for SeqTokens {
    fn next_token(&mut self) -> Token {
        self.next()
    }
}

impl crate::connect::dual::TokenSource for SeqTokens {
    fn next_token(&mut self) -> Token {
        self.next()
    }
}

/// A 16-byte token: within [`Token`]'s length bounds, so never refused.
fn token_from(b: [u8; 16]) -> Token {
    Token::new(&b).unwrap_or_else(|_| unreachable!("16 bytes always make a token"))
}

/// The journal every peer uses.
pub type Journal = SharedJournal<MemJournal>;

/// What a connection event of one profile means to the model.
enum News {
    /// Nothing the model tracks.
    Nothing,
    /// The client closed: for good (the scenario ended it), or until its application
    /// connects it again. `allowed` says whether the model expected it.
    Ended {
        reason: String,
        for_good: bool,
        allowed: bool,
    },
    /// The machine says its honest peer broke the protocol.
    Broken(String),
    /// A `feed` update arrived.
    Update(Element),
}

type ClientOf<H> = <H as Harness>::Client;
type ServerOf<H> = <H as Harness>::Server;
type ClientCommandOf<H> = <ClientOf<H> as Machine>::Command;
type ServerCommandOf<H> = <ServerOf<H> as Machine>::Command;
type NodeOf<H> = Either<Peer<ClientOf<H>, Journal>, Peer<ServerOf<H>, Journal>>;

/// What differs between the profiles: building the nodes, and reading each connection
/// machine's session, bounds and events. Everything else is [`World`]'s, shared.
trait Harness: Sized {
    type ClientError: core::error::Error + 'static;
    type ServerError: core::error::Error + 'static;
    type Client: PeerProfile<Session = (), Error = Self::ClientError>;
    type Server: PeerProfile<Error = Self::ServerError>;
    /// The channels a client dials (each routed to the server).
    const CHANNELS: &'static [Channel];

    fn server(&self, seed: u64) -> Self::Server;
    fn client(&self, seed: u64, i: u8, now: Instant) -> Self::Client;
    /// What the application sends a new or closed client to connect it, if anything.
    fn connect(&self) -> Option<ClientCommandOf<Self>>;
    /// Whether the client is closed and waits for its application to connect it again.
    fn closed(client: &Self::Client) -> bool;
    /// The formal disconnection, and whether the client has left for good at once.
    fn disconnect(&self) -> (ClientCommandOf<Self>, bool);
    /// The server's command ending client `id`'s session, and whether that ends the client
    /// for good.
    fn kick(w: &World<Self>, id: NodeId) -> Option<(ServerCommandOf<Self>, bool)>;
    fn client_news(event: &<Self::Client as Machine>::Event, track: &Track) -> News;
    fn server_news(event: &<Self::Server as Machine>::Event) -> News;
    /// Agreement, layers and bounds, after every step.
    fn check(w: &World<Self>, step: usize) -> Result<(), Violation>;
    /// Client `id`'s status, its server session's status, and whether both are connected.
    fn status(w: &World<Self>, id: NodeId) -> (String, Option<String>, bool);
    /// Sessions (players) the server holds.
    fn sessions(server: &Self::Server) -> usize;
    /// How long the server keeps an abandoned session.
    fn grace(&self) -> Duration;
    /// Makes node `from` send `element(target, session tag)` on `feed`, if the profile has
    /// one: the server to its session number `pick`. Returns the receiver's node number
    /// ([`NOBODY`] for a session no client holds) if it was asked to send.
    fn send_update(
        w: &mut World<Self>,
        from: usize,
        pick: u8,
        element: &dyn Fn(usize, &[u8]) -> Element,
    ) -> Option<usize>;
}

/// What the model keeps per node.
#[derive(Debug, Default)]
struct Track {
    /// Keys this node appended while it did not hold them.
    own: BTreeSet<Key>,
    /// `Applied` events per key.
    applied: BTreeMap<Key, u32>,
    /// Set once the client ended for good (with why).
    ended: Option<String>,
    /// The scenario ended it on purpose.
    ended_on_purpose: bool,
    /// Its clock was moved forwards (it may give up).
    jumped_forward: bool,
    /// Something happened that may make it lose its connection: its transports cut, a
    /// partition, a kick, a clock jump (its own or the server's), or a network that loses
    /// datagrams or cuts transports. A dual client that was never disturbed must never
    /// fail an attempt or close.
    disturbed: bool,
    /// Sum of its backward clock jumps, in milliseconds.
    behind_millis: u64,
    /// Next resource number for its own appends.
    next: u32,
    /// `feed` updates it was asked to send (the next update's number).
    updates: u32,
}

/// The world of one scenario: the simulation and the model beside it.
struct World<H: Harness> {
    h: H,
    sim: Sim<NodeOf<H>>,
    server: NodeId,
    clients: Vec<NodeId>,
    tracks: Vec<Track>,
    appended: BTreeSet<Key>,
    /// Per (receiver, sender, session tag): the newest update number delivered.
    newest: BTreeMap<(usize, usize, Vec<u8>), u32>,
    /// Per (receiver, sender): every update number delivered.
    got: BTreeSet<(usize, usize, u32)>,
    updates_delivered: u64,
    closes: u64,
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

/// The receiver of an update sent to nobody the model knows (a session no client holds).
const NOBODY: usize = 0xff;

/// A `feed` update as the model sends it: sender and receiver node numbers, the sender's
/// update number, and the session tag (token A of the session it travels in).
fn update_element(from: usize, to: usize, counter: u32, tag: &[u8]) -> Element {
    let mut data = Vec::with_capacity(6 + tag.len());
    data.push(from as u8);
    data.push(to.min(NOBODY) as u8);
    data.extend_from_slice(&counter.to_be_bytes());
    data.extend_from_slice(tag);
    Element {
        kind: 1,
        sid: counter as u16,
        data: Bytes::from(data),
    }
}

/// The fields of a model update: (sender, receiver, number, session tag).
fn parse_update(e: &Element) -> Option<(usize, usize, u32, Vec<u8>)> {
    let d = &e.data;
    let (&from, rest) = d.split_first()?;
    let (&to, rest) = rest.split_first()?;
    let (counter, tag) = rest.split_first_chunk::<4>()?;
    Some((
        usize::from(from),
        usize::from(to),
        u32::from_be_bytes(*counter),
        tag.to_vec(),
    ))
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

fn hex(t: &Token) -> String {
    t.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

impl<H: Harness> World<H> {
    fn new(h: H, seed: u64, clients: u8) -> World<H> {
        let mut sim = Sim::new(seed, Faults::none());
        let server_peer = Peer::new(
            h.server(seed),
            Role::Server,
            sync_config(),
            SharedJournal::new(MemJournal::new(1, 100_000)),
        );
        let server = sim.add_node(Either::Right(server_peer));
        let mut ids = Vec::new();
        for i in 0..clients {
            let peer = Peer::new(
                h.client(seed, i, sim.now()),
                Role::Client,
                sync_config(),
                SharedJournal::new(MemJournal::new(100 + u64::from(i), 100_000)),
            );
            let id = sim.add_node(Either::Left(peer));
            for &channel in H::CHANNELS {
                sim.route(id, channel, server);
            }
            if let Some(c) = h.connect() {
                sim.command(id, Either::Left(PeerCommand::Connection(c)));
            }
            ids.push(id);
        }
        let tracks = (0..=clients).map(|_| Track::default()).collect();
        World {
            h,
            sim,
            server,
            clients: ids,
            tracks,
            appended: BTreeSet::new(),
            newest: BTreeMap::new(),
            got: BTreeSet::new(),
            updates_delivered: 0,
            closes: 0,
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
        self.node_at(i)
    }

    /// Node at index `i` (at most the number of clients).
    fn node_at(&self, i: usize) -> (Who, NodeId, usize) {
        match i.checked_sub(1).and_then(|k| self.clients.get(k)) {
            Some(&id) => (Who::Client((i - 1) as u8), id, i),
            None => (Who::Server, self.server, 0),
        }
    }

    fn client(&self, client: u8) -> (Who, NodeId, usize) {
        let k = usize::from(client) % self.n();
        self.node_at(k + 1)
    }

    fn client_peer(&self, id: NodeId) -> Option<&Peer<H::Client, Journal>> {
        self.sim.node(id).left()
    }

    fn server_peer(&self) -> Option<&Peer<H::Server, Journal>> {
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

    /// Node `index` sends its next `feed` update (the server to its session `pick`); the
    /// receiver's node number if it was asked to.
    fn send_update(&mut self, index: usize, pick: u8) -> Option<(usize, u32)> {
        let counter = self.tracks.get(index)?.updates;
        let element = |to: usize, tag: &[u8]| update_element(index, to, counter, tag);
        let to = H::send_update(self, index, pick, &element)?;
        if let Some(t) = self.tracks.get_mut(index) {
            t.updates += 1;
        }
        Some((to, counter))
    }

    /// On a calm network, with every live client connected: updates sent now, both ways,
    /// all arrive (`feed` loses datagrams only when the network does).
    fn feed_check(&mut self, step: usize) -> Result<(), Violation> {
        let mut expected = Vec::new();
        for index in 1..=self.n() {
            if self.live(index) {
                expected.extend(self.send_update(index, 0).map(|(to, c)| (index, to, c)));
            }
        }
        let sessions = self
            .server_peer()
            .map_or(0, |p| p.sessions().count().min(usize::from(u8::MAX)));
        for pick in 0..sessions {
            expected.extend(self.send_update(0, pick as u8).map(|(to, c)| (0, to, c)));
        }
        self.sim.run_for(Duration::from_secs(1));
        self.check(step)?;
        for (from, to, counter) in expected {
            // A session kept by a client that left (the server waits for it to expire)
            // has nobody to deliver to.
            if self.live(to) && !self.got.contains(&(to, from, counter)) {
                return Err(Violation::UpdateLost {
                    from: self.node_at(from).0,
                    to: self.node_at(to).0,
                    counter,
                });
            }
        }
        Ok(())
    }

    /// Marks node `index` as disturbed; the server (0) stands for everyone.
    fn disturb(&mut self, index: usize) {
        for (i, t) in self.tracks.iter_mut().enumerate() {
            if index == 0 || i == index {
                t.disturbed = true;
            }
        }
    }

    /// The application connects client `index` again if it is closed (and has not left).
    fn reconnect(&mut self, index: usize) {
        let (_, id, _) = self.node_at(index);
        let closed = self
            .client_peer(id)
            .is_some_and(|p| H::closed(p.connection()));
        if closed && self.live(index) {
            if let Some(c) = self.h.connect() {
                self.sim
                    .command(id, Either::Left(PeerCommand::Connection(c)));
            }
        }
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
            Step::Update {
                node,
                session,
                count,
            } => {
                let (_, _, index) = self.node(node);
                for _ in 0..count.min(MAX_UPDATES) {
                    self.send_update(index, session);
                }
            }
            Step::Advance { millis } => {
                let d = Duration::from_millis(u64::from(millis.min(MAX_ADVANCE_MILLIS)));
                self.sim.run_for(d);
            }
            Step::Cut { client } => {
                let (_, id, index) = self.client(client);
                self.disturb(index);
                self.sim.cut(id, Channel::Main);
            }
            Step::CutFeed { client } => {
                let (_, id, index) = self.client(client);
                self.disturb(index);
                self.sim.cut(id, Channel::Feed);
            }
            Step::Partition { client } => {
                let (_, id, index) = self.client(client);
                self.disturb(index);
                self.sim.partition(id, self.server);
            }
            Step::Heal { client } => {
                let (_, id, _) = self.client(client);
                self.sim.heal(id, self.server);
            }
            Step::HealAll => self.sim.heal_all(),
            Step::SetFaults(f) => {
                let f = clamp_faults(f);
                // Latency, jitter, chunks and duplicates are within every timeout and
                // check; losses and cuts may close anyone.
                if f.loss_per_million > 0 || f.cut_per_million > 0 {
                    self.disturb(0);
                }
                self.sim.set_faults(f);
            }
            Step::Calm => {
                self.sim.set_faults(Faults::none());
                self.sim.heal_all();
            }
            Step::JumpClock { node, millis } => {
                let (_, id, index) = self.node(node);
                let millis = millis.clamp(-MAX_JUMP_MILLIS, MAX_JUMP_MILLIS);
                self.disturb(index);
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
                        let sessions: Vec<_> = p.sessions().map(|(s, _)| s).collect();
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
                let (cmd, gone) = self.h.disconnect();
                if let Some(t) = self.tracks.get_mut(index) {
                    t.ended_on_purpose = true;
                    if gone && t.ended.is_none() {
                        t.ended = Some(String::from("disconnected by the scenario"));
                    }
                }
                self.sim
                    .command(id, Either::Left(PeerCommand::Connection(cmd)));
            }
            Step::Kick { client } => {
                let (_, id, index) = self.client(client);
                self.disturb(index);
                if let Some((cmd, for_good)) = H::kick(self, id) {
                    if let Some(t) = self.tracks.get_mut(index) {
                        t.ended_on_purpose |= for_good;
                    }
                    self.sim
                        .command(self.server, Either::Right(PeerCommand::Connection(cmd)));
                }
            }
            Step::Connect { client } => {
                let (_, _, index) = self.client(client);
                self.reconnect(index);
            }
        }
    }

    /// Moves every node's events and errors into the model, checking what events alone
    /// can show (applied at most once, never one's own; updates; no unexpected end).
    fn absorb(&mut self, step: usize) -> Result<(), Violation> {
        for index in 0..=self.n() {
            let (who, id, _) = self.node_at(index);
            for e in self.sim.take_errors(id) {
                self.error_count += 1;
                if self.errors.len() >= 8 {
                    self.errors.remove(0);
                }
                self.errors.push(format!("{who}: {e}"));
            }
            for event in self.sim.take_events(id) {
                let (sync, news) = match event {
                    Either::Left(PeerEvent::Sync(_, s)) => (Some(s), News::Nothing),
                    Either::Right(PeerEvent::Sync(_, s)) => (Some(s), News::Nothing),
                    Either::Left(PeerEvent::Connection(e)) => {
                        let Some(track) = self.tracks.get(index) else {
                            continue;
                        };
                        (None, H::client_news(&e, track))
                    }
                    Either::Right(PeerEvent::Connection(e)) => (None, H::server_news(&e)),
                };
                self.news(step, who, index, news)?;
                if let Some(SyncEvent::Applied {
                    author, resource, ..
                }) = sync
                {
                    let Some(track) = self.tracks.get_mut(index) else {
                        continue;
                    };
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

    fn news(&mut self, step: usize, who: Who, index: usize, news: News) -> Result<(), Violation> {
        match news {
            News::Nothing => Ok(()),
            News::Broken(detail) => Err(Violation::ProtocolError {
                step,
                node: who,
                detail,
            }),
            News::Ended {
                reason,
                for_good,
                allowed,
            } => {
                if !allowed {
                    return Err(Violation::UnexpectedEnd {
                        step,
                        client: who,
                        reason,
                    });
                }
                if for_good {
                    if let Some(t) = self.tracks.get_mut(index) {
                        t.ended.get_or_insert(reason);
                    }
                } else {
                    self.closes += 1;
                }
                Ok(())
            }
            News::Update(element) => self.update_received(step, who, index, &element),
        }
    }

    /// The reference model of `feed`: sent, to this node, at most once, in order per
    /// sender and session.
    fn update_received(
        &mut self,
        step: usize,
        who: Who,
        index: usize,
        element: &Element,
    ) -> Result<(), Violation> {
        let invented = |detail: String| Violation::UpdateInvented {
            step,
            node: who,
            detail,
        };
        let Some((from, to, counter, tag)) = parse_update(element) else {
            return Err(invented(format!("{element:?}")));
        };
        let sent = self.tracks.get(from).map_or(0, |t| t.updates);
        if counter >= sent || to != index || from == index {
            return Err(invented(format!(
                "number {counter} from node {from} to node {to} (node {from} sent {sent})"
            )));
        }
        let (sender, _, _) = self.node_at(from);
        if !self.got.insert((index, from, counter)) {
            return Err(Violation::UpdateTwice {
                step,
                node: who,
                from: sender,
                counter,
            });
        }
        let newest = self.newest.entry((index, from, tag)).or_insert(counter);
        if *newest > counter {
            return Err(Violation::UpdateReordered {
                step,
                node: who,
                from: sender,
                counter,
                newest: *newest,
            });
        }
        *newest = counter;
        self.updates_delivered += 1;
        Ok(())
    }

    /// The invariants that hold after every step.
    fn check(&mut self, step: usize) -> Result<(), Violation> {
        self.absorb(step)?;
        H::check(self, step)?;
        // Journals: nothing invented, never more than was appended.
        for index in 0..=self.n() {
            let (who, id, _) = self.node_at(index);
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
            !self.live(k + 1) || (H::status(self, id).2 && self.keys(id) == server_keys)
        })
    }

    /// The checks once the network is calm.
    fn final_check(&self) -> Result<(), Violation> {
        let server_keys = self.keys(self.server);
        for (k, &id) in self.clients.iter().enumerate() {
            if !self.live(k + 1) {
                continue;
            }
            let who = Who::Client(k as u8);
            let (client_status, server_status, connected) = H::status(self, id);
            if !connected {
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
            .map_or(0, |p| H::sessions(p.connection()));
        if sessions != live {
            return Err(Violation::SessionLeak { sessions, live });
        }
        for (index, track) in self.tracks.iter().enumerate() {
            let (who, id, _) = self.node_at(index);
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

/// Runs a scenario (clamped: see [`Scenario`]), checking the invariants after every step,
/// then calms the network and checks convergence. See the [module docs](self).
pub fn run(scenario: &Scenario) -> Result<Report, Violation> {
    match scenario.profile {
        Profile::Merge => run_with(merge::MergeHarness, scenario),
        Profile::Dual { reinit_feed } => run_with(dual::DualHarness { reinit_feed }, scenario),
    }
}

fn run_with<H: Harness>(h: H, scenario: &Scenario) -> Result<Report, Violation> {
    let clients = scenario.clients.clamp(1, MAX_CLIENTS);
    let mut w = World::new(h, scenario.seed, clients);
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
        // An application whose client closed connects it again (dual: retries are
        // bounded, so a client closes after a long enough outage).
        for index in 1..=w.n() {
            w.reconnect(index);
        }
        w.sim.run_for(Duration::from_secs(1));
        step += 1;
        w.check(step)?;
        // Judge once every clock left behind has caught up and the world has stayed
        // converged for 10 s: whatever was still in flight has landed, and the timers of
        // a clock that stood still (a `feed` keep-alive late by the jump) have fired.
        if second * 1000 < behind || !w.converged() {
            settled = None;
        } else if second >= *settled.get_or_insert(second) + 10 {
            break;
        }
    }
    if w.converged() {
        step += 1;
        w.feed_check(step)?;
    }
    // Sessions orphaned by a handshake cut half-way, or left by a client that ended or
    // closed while away, are forgotten after the grace: then the server holds exactly one
    // session per live client.
    // A clock set back waits until real time catches up with what it had seen.
    let grace = w.h.grace() + Duration::from_millis(1_000 + behind);
    let end = w.sim.now() + grace;
    while w.sim.now() < end {
        let next = (w.sim.now() + Duration::from_secs(1)).min(end);
        w.sim.run_until(next);
        step += 1;
        w.check(step)?;
    }
    w.final_check()?;
    let stats = w.sim.stats();
    Ok(Report {
        steps: steps.len(),
        entries: w.appended.len(),
        converged_entries: w.keys(w.server).len(),
        live_clients: (1..=w.n()).filter(|&i| w.live(i)).count(),
        updates_sent: w.tracks.iter().map(|t| u64::from(t.updates)).sum(),
        updates_delivered: w.updates_delivered,
        closes: w.closes,
        delivered: stats.delivered,
        cuts: stats.cuts,
        errors: w.error_count,
        virtual_time: w.sim.now().saturating_duration_since(start),
    })
}
