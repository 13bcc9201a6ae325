//! Model-checked scenarios: a server and up to four clients, each a composed [`Peer`](crate::peer::Peer) with
//! journal sync over one of the two connection profiles ([`Profile::Merge`]: token-merge,
//! after dop; [`Profile::Dual`]: dual-channel `main` + `feed`, after R-Type), driven through the
//! [`Sim`](super::Sim) by a list of [`Step`]s (appends, feed updates, time, cuts, partitions, fault
//! changes, clock jumps, resyncs, formal disconnections, kicks, reconnections), with the
//! library's promises checked after every step against a small reference model.
//!
//! Both profiles run the same scenarios through one runner: the step vocabulary, the
//! reference model (the union of appended keys, the feed updates sent), the
//! `Applied`-exactly-once checks and the calm phase are shared; only building the nodes and
//! reading each machine's session, bounds and events differ (the runner is in `world.rs`;
//! each profile implements its private `Harness` in `merge.rs` and `dual.rs`). A step that means nothing for a profile (a `feed`
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
//!   and every node reports each entry it learned ([`SyncEvent::Applied`](crate::sync::journal::SyncEvent::Applied)) at most once over
//!   the whole run, never one it appended itself;
//! - **feed updates** (dual): every update delivered was sent, to this node, and reaches it
//!   at most once, and never older after newer from one sender within one session (the
//!   sender's sequence order; `feed` may lose updates, so delivery is not required while
//!   the network misbehaves);
//! - **no unexpected end, no protocol error**: a token-merge client ends only when the
//!   scenario disconnects or kicks it (or, after a forward clock jump, gives up); a dual
//!   client may give up and close (its retries are bounded by design: R-Type's RFC), but only
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
//! [`ClientCommand::Connect`](crate::connect::dual::DualClientCommand::Connect) on
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
mod violation;
mod world;

pub use dual::{
    dual_client_config, dual_server_config, DualClientPeer, DualNode, DualServerPeer,
    MAX_DUAL_LINKS_PER_CLIENT,
};
pub use merge::{
    client_config, server_config, ClientPeer, Node, ServerPeer, MAX_CLIENT_LINKS,
    MAX_SERVER_LINKS_PER_CLIENT,
};
pub use violation::Violation;

use super::Faults;
use crate::sync::journal::{MemJournal, SyncConfig};
use crate::time::Duration;
use alloc::string::String;
use alloc::vec::Vec;
// For the profiles' harnesses (merge.rs, dual.rs).
use violation::{unbounded, within};
// Moved to the testkit's root (`tether::testkit::SeqTokens`); still here under its old path.
use super::tokens::token_from;
pub use super::SeqTokens;
use world::{hex, Harness, News, Track, World, NOBODY};

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
    /// dop's token-merge connectivity: one `main` stream, sessions resumed by merged tokens.
    Merge,
    /// R-Type's dual-channel connection: `main` and `feed`, player ids and tokens A and B.
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
    /// `feed` updates the nodes were asked to send (dual; the calm phase's check included,
    /// and sends refused because `feed` was not bound).
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

/// The journal every peer uses.
pub type Journal = MemJournal;

/// Runs a scenario (clamped: see [`Scenario`]), checking the invariants after every step,
/// then calms the network and checks convergence. See the [module docs](self).
pub fn run(scenario: &Scenario) -> Result<Report, Violation> {
    match scenario.profile {
        Profile::Merge => world::run_with(merge::MergeHarness, scenario),
        Profile::Dual { reinit_feed } => {
            world::run_with(dual::DualHarness { reinit_feed }, scenario)
        }
    }
}
