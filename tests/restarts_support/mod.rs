//! The world of the restart tests: one token-merge server peer and a few client peers in
//! the simulator, each of which can be restarted (the process dies: its transports are
//! cut, its machines are dropped) with its database, without it, or with an older copy of
//! it, plus a small reference model of what each journal must end with.
//!
//! The testkit's scenario `World` is private to the crate and has no restarts, so this is
//! a world of its own (see the report): nothing here needs anything the testkit does not
//! export.
//!
//! The model:
//!
//! - `expected`: the entries that exist somewhere. An append adds its entry. Sync only
//!   copies entries, so between restarts the union of the journals only grows; at a
//!   restart that loses data (wiped, older copy) `expected` becomes the union of what the
//!   journals hold right after it (what only the lost database held is gone for good, and
//!   no protocol can bring it back).
//! - per node and per *database lifetime*: the keys it appended (`own`) and how many times
//!   it reported each other key `Applied`. A restart with the database keeps both (the
//!   application's state survives with the journal: an entry applied before and after the
//!   restart is applied twice). A wiped restart clears both (the application's state went
//!   with the disk, so learning an entry again is right). An older copy keeps what the
//!   copy holds.
//!
//! At the end every node's journal must hold exactly `expected`, and each key of its
//! journal must be its own or applied exactly once, never twice.

#![allow(dead_code)]

pub mod store;

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use store::Store;
use tether::connect::merge::{
    self, MergeClient, MergeClientEvent, MergeServer, MergeSessionSnapshot, Outcome,
};
use tether::peer::{Peer, PeerCommand, PeerEvent, PeerSnapshot};
use tether::sync::journal::{MemJournal, SyncConfig, SyncEvent};
use tether::testkit::{Either, Faults, NodeId, SeqTokens, Sim};
use tether::wire::Entry;
use tether::{Channel, Duration, Input, Instant, Machine, Output, Token};

pub type ClientPeer = Peer<MergeClient, Store>;
pub type ServerPeer = Peer<MergeServer<SeqTokens>, Store>;
pub type Inner = Either<ClientPeer, ServerPeer>;
pub type Node = Metered<Inner>;
pub type NodeEvent = <Inner as Machine>::Event;
pub type Key = (Bytes, Bytes);

/// The server's epoch in its first life; client `k`'s is `CLIENT_EPOCH + k`.
pub const SERVER_EPOCH: u64 = 1;
pub const CLIENT_EPOCH: u64 = 100;

// ---------------------------------------------------------------------------------------
// A machine that counts the bytes it transmits

/// A machine wrapped to count the bytes it hands the network.
pub struct Metered<M> {
    pub inner: M,
    /// Bytes of every transmit so far.
    pub sent: u64,
}

impl<M> Metered<M> {
    pub fn new(inner: M) -> Self {
        Metered { inner, sent: 0 }
    }
}

impl<M: Machine> Machine for Metered<M> {
    type Command = M::Command;
    type Event = M::Event;
    type Error = M::Error;

    fn handle_input(&mut self, now: Instant, input: Input<M::Command>) -> Result<(), M::Error> {
        self.inner.handle_input(now, input)
    }

    fn poll_output(&mut self) -> Output<M::Event> {
        let out = self.inner.poll_output();
        if let Output::Transmit(t) = &out {
            self.sent += t.payload.len() as u64;
        }
        out
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

// ---------------------------------------------------------------------------------------
// Configurations

/// No idle status: the tests idle on purpose.
pub fn sync_config() -> SyncConfig {
    SyncConfig {
        idle_timeout: None,
        ..SyncConfig::default()
    }
}

/// A grace long enough that no session expires during a test: a session ends only when a
/// restart forgets it.
pub fn server_config() -> merge::MergeServerConfig {
    merge::MergeServerConfig {
        resume_grace: Duration::from_secs(3600),
        ..Default::default()
    }
}

pub fn client_config(seed: u64, k: usize, life: u32) -> merge::MergeClientConfig {
    merge::MergeClientConfig {
        jitter_seed: seed ^ ((k as u64) << 8) ^ u64::from(life),
        give_up_after: Duration::from_secs(3600),
        reconnect_max: Duration::from_secs(4),
        ..Default::default()
    }
}

pub fn server_peer(tokens: u64, journal: MemJournal) -> ServerPeer {
    Peer::new(
        MergeServer::new(server_config(), SeqTokens::new(tokens)),
        sync_config(),
        store::store_from(journal),
    )
}

/// Client `k`'s local token in its `life`-th life (a new process draws a new one).
pub fn client_token(seed: u64, k: usize, life: u32) -> Token {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&seed.to_be_bytes());
    b[8] = k as u8;
    b[9..13].copy_from_slice(&life.to_be_bytes());
    b[15] = 0xc1;
    Token::new(&b).unwrap()
}

pub fn client_peer(
    now: Instant,
    seed: u64,
    k: usize,
    life: u32,
    journal: MemJournal,
) -> ClientPeer {
    let conn = MergeClient::new(
        now,
        client_config(seed, k, life),
        client_token(seed, k, life),
    )
    .expect("a 16-byte token");
    Peer::new(conn, sync_config(), store::store_from(journal))
}

// ---------------------------------------------------------------------------------------
// Restarts

/// Which epoch a wiped node's new, empty journal gets (the caller's choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epoch {
    /// A new epoch, as a store should draw when it is created.
    New,
    /// The epoch it had before it was wiped (a store that derives its epoch from a
    /// configuration, a host name, or a constant).
    Same,
}

/// How a node comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Not restarted.
    No,
    /// With its database as it stood when the process died: its journal and (server) its
    /// sessions' snapshots, (client) its `PeerSnapshot`.
    WithDb,
    /// Without it: an empty journal, no session.
    Wiped(Epoch),
    /// With an older copy of its database (server only): the journal and session snapshots
    /// saved by [`World::checkpoint_server`].
    Older,
    /// Its sessions' snapshots survived but its journal did not: an empty journal of this
    /// epoch, the session(s) as they stood.
    JournalLost(Epoch),
}

/// The server's database at some moment.
#[derive(Clone)]
pub struct SavedServer {
    pub journal: MemJournal,
    pub sessions: Vec<PeerSnapshot<MergeSessionSnapshot>>,
}

/// What the model knows of one node.
#[derive(Debug, Default, Clone)]
pub struct Track {
    pub name: String,
    /// Lives so far (1: never restarted).
    pub life: u32,
    pub first_epoch: u64,
    /// Entries appended by this node, numbered across its lives (resource ids stay unique:
    /// an application that lost its disk mints new ids, it does not reuse old ones).
    pub appended: u32,
    /// Keys this node appended, in its database's current lifetime.
    pub own: BTreeSet<Key>,
    /// `Applied` reports per key, in its database's current lifetime.
    pub applied: BTreeMap<Key, usize>,
    /// Keys applied twice (or more) within one database lifetime, with the count.
    pub twice: BTreeMap<Key, usize>,
    /// Connection outcomes (`Up`) seen since the last restart of anyone (clients).
    pub ups: Vec<Outcome>,
    /// `FullResync` events since the last restart of anyone (the closest thing today to
    /// being told that the peer's history is not what we thought).
    pub full_resyncs: usize,
    /// `SyncEvent`s since the last restart of anyone, for the continuity checks.
    pub sync_events: Vec<SyncEvent>,
    /// Errors the node's machine returned.
    pub errors: Vec<String>,
}

/// What went wrong at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A node's journal is not the union of entries.
    NotConverged {
        node: String,
        missing: usize,
        extra: usize,
        example_missing: Option<String>,
    },
    /// A node applied an entry twice within one database lifetime.
    AppliedTwice {
        node: String,
        key: String,
        count: usize,
    },
    /// A node holds an entry it neither appended nor reported applied.
    Unreported { node: String, key: String },
    /// A client is not connected at the end.
    NotConnected { node: String },
    /// A machine returned an error.
    Errors {
        node: String,
        first: String,
        count: usize,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

fn show(k: &Key) -> String {
    format!(
        "{}/{}",
        String::from_utf8_lossy(&k.0),
        String::from_utf8_lossy(&k.1)
    )
}

pub struct World {
    pub sim: Sim<Node>,
    pub seed: u64,
    pub server: NodeId,
    pub clients: Vec<NodeId>,
    /// Index 0: the server; `k + 1`: client `k`.
    pub tracks: Vec<Track>,
    pub expected: BTreeSet<Key>,
    pub saved: Option<SavedServer>,
    pub payload: Vec<u8>,
}

impl World {
    pub fn new(seed: u64, clients: usize, faults: Faults) -> World {
        let mut sim: Sim<Node> = Sim::new(seed, faults);
        let server = sim.add_node(Metered::new(Either::Right(server_peer(
            seed,
            store::empty(SERVER_EPOCH),
        ))));
        let tracks = vec![Track {
            name: "server".into(),
            life: 1,
            first_epoch: SERVER_EPOCH,
            ..Track::default()
        }];
        let mut w = World {
            sim,
            seed,
            server,
            clients: Vec::new(),
            tracks,
            expected: BTreeSet::new(),
            saved: None,
            payload: b"payload".to_vec(),
        };
        for _ in 0..clients {
            w.add_client();
        }
        w
    }

    /// A new client, with an empty journal, joins (it connects by itself).
    pub fn add_client(&mut self) -> usize {
        let k = self.clients.len();
        let epoch = CLIENT_EPOCH + k as u64;
        let peer = client_peer(self.sim.now(), self.seed, k, 1, store::empty(epoch));
        let id = self.sim.add_node(Metered::new(Either::Left(peer)));
        self.sim.route(id, Channel::Main, self.server);
        self.clients.push(id);
        self.tracks.push(Track {
            name: format!("client{k}"),
            life: 1,
            first_epoch: epoch,
            ..Track::default()
        });
        k
    }

    pub fn id(&self, index: usize) -> NodeId {
        if index == 0 {
            self.server
        } else {
            self.clients[index - 1]
        }
    }

    pub fn server_peer(&self) -> &ServerPeer {
        self.sim
            .node(self.server)
            .inner
            .right()
            .expect("the server")
    }

    pub fn client_peer(&self, k: usize) -> &ClientPeer {
        self.sim
            .node(self.clients[k])
            .inner
            .left()
            .expect("a client")
    }

    pub fn store_of(&self, index: usize) -> &Store {
        match &self.sim.node(self.id(index)).inner {
            Either::Left(p) => p.store(),
            Either::Right(p) => p.store(),
        }
    }

    pub fn keys(&self, index: usize) -> BTreeSet<Key> {
        store::keys(self.store_of(index))
    }

    /// Node `index` appends `count` new entries of its own.
    pub fn append(&mut self, index: usize, count: usize) {
        let id = self.id(index);
        for _ in 0..count {
            let t = &mut self.tracks[index];
            let resource = format!("L{}-r{}", t.life, t.appended);
            t.appended += 1;
            let entry = Entry::new(t.name.as_bytes(), resource.as_bytes(), &self.payload);
            let key = (entry.author.clone(), entry.resource.clone());
            let cmd = match self.sim.node(id).inner {
                Either::Left(_) => Either::Left(PeerCommand::Append(entry)),
                Either::Right(_) => Either::Right(PeerCommand::Append(entry)),
            };
            self.sim.command(id, cmd);
            t.own.insert(key.clone());
            self.expected.insert(key);
        }
        self.absorb();
    }

    /// Every client's transport is cut (both ends see it closed; in-flight data is lost).
    pub fn cut_all(&mut self) {
        for k in 0..self.clients.len() {
            self.sim.cut(self.clients[k], Channel::Main);
        }
    }

    pub fn cut(&mut self, k: usize) {
        self.sim.cut(self.clients[k], Channel::Main);
    }

    pub fn run(&mut self, d: Duration) {
        self.sim.run_for(d);
        self.absorb();
    }

    /// Moves every node's events and errors into the model.
    pub fn absorb(&mut self) {
        for index in 0..self.tracks.len() {
            let id = self.id(index);
            for e in self.sim.take_errors(id) {
                self.tracks[index].errors.push(format!("{e}"));
            }
            for event in self.sim.take_events(id) {
                self.event(index, event);
            }
        }
    }

    fn event(&mut self, index: usize, event: NodeEvent) {
        let t = &mut self.tracks[index];
        let sync = match event {
            Either::Left(PeerEvent::Sync(_, s)) | Either::Right(PeerEvent::Sync(_, s)) => s,
            Either::Left(PeerEvent::Connection(MergeClientEvent::Up { outcome, .. })) => {
                t.ups.push(outcome);
                return;
            }
            _ => return,
        };
        match &sync {
            SyncEvent::Applied {
                author, resource, ..
            } => {
                let key = (author.clone(), resource.clone());
                let n = t.applied.entry(key.clone()).or_insert(0);
                *n += 1;
                if *n > 1 {
                    t.twice.insert(key, *n);
                }
            }
            SyncEvent::FullResync { .. } => t.full_resyncs += 1,
            _ => {}
        }
        t.sync_events.push(sync);
    }

    /// Saves the server's database as it stands now (journal and sessions' snapshots),
    /// for a later [`Restart::Older`].
    pub fn checkpoint_server(&mut self) {
        self.saved = Some(self.server_db());
    }

    fn server_db(&self) -> SavedServer {
        let now = self.sim.local_now(self.server);
        let peer = self.server_peer();
        let sessions = peer
            .sessions()
            .filter_map(|(s, _)| peer.export_session(now, s))
            .collect();
        SavedServer {
            journal: store::copy(peer.store()),
            sessions,
        }
    }

    fn new_epoch(&self, index: usize, epoch: Epoch) -> u64 {
        let t = &self.tracks[index];
        match epoch {
            Epoch::Same => t.first_epoch,
            Epoch::New => t.first_epoch + 1_000 * u64::from(t.life),
        }
    }

    /// The server's process dies and a new one starts as `how` says.
    pub fn restart_server(&mut self, how: Restart) {
        if how == Restart::No {
            return;
        }
        self.absorb();
        let now = self.sim.local_now(self.server);
        let db = match how {
            Restart::No => unreachable!(),
            Restart::WithDb => self.server_db(),
            Restart::Wiped(e) => SavedServer {
                journal: store::empty(self.new_epoch(0, e)),
                sessions: Vec::new(),
            },
            Restart::Older => self.saved.clone().expect("checkpoint_server first"),
            Restart::JournalLost(e) => SavedServer {
                journal: store::empty(self.new_epoch(0, e)),
                sessions: self.server_db().sessions,
            },
        };
        let life = self.tracks[0].life + 1;
        let mut peer = server_peer(self.seed.wrapping_add(7919 * u64::from(life)), db.journal);
        for s in db.sessions {
            peer.import_session(now, s)
                .expect("the new server imports its sessions");
        }
        self.replace(0, Either::Right(peer), how);
    }

    /// Client `k`'s process dies and a new one starts as `how` says.
    pub fn restart_client(&mut self, k: usize, how: Restart) {
        if how == Restart::No {
            return;
        }
        self.absorb();
        let index = k + 1;
        let id = self.clients[k];
        let now = self.sim.local_now(id);
        let (journal, snapshot) = match how {
            Restart::WithDb => {
                let old = self.client_peer(k);
                (store::copy(old.store()), old.export_session(now, ()))
            }
            Restart::Wiped(e) => (store::empty(self.new_epoch(index, e)), None),
            Restart::JournalLost(e) => (
                store::empty(self.new_epoch(index, e)),
                self.client_peer(k).export_session(now, ()),
            ),
            other => panic!("a client restarts with or without its database, not {other:?}"),
        };
        let life = self.tracks[index].life + 1;
        let mut peer = client_peer(now, self.seed, k, life, journal);
        if let Some(snapshot) = snapshot {
            // The fresh client's first output (a transport for a new session) is moot: the
            // restored client asks for its own.
            while !matches!(peer.poll_output(), Output::Wait(_)) {}
            peer.import_session(now, snapshot)
                .expect("a fresh client imports its snapshot");
        }
        self.replace(index, Either::Left(peer), how);
    }

    /// Puts the new process in the node's place; its old transports die with the old one
    /// (both ends see them closed; what was in flight is lost).
    fn replace(&mut self, index: usize, machine: Inner, how: Restart) {
        let id = self.id(index);
        *self.sim.node_mut(id) = Metered::new(machine);
        self.sim.cut(id, Channel::Main);
        self.sim.drain_node(id);
        let keys = self.keys(index);
        let t = &mut self.tracks[index];
        t.life += 1;
        match how {
            Restart::No | Restart::WithDb => {}
            Restart::Wiped(_) | Restart::JournalLost(_) => {
                t.own.clear();
                t.applied.clear();
            }
            Restart::Older => {
                t.own.retain(|k| keys.contains(k));
                t.applied.retain(|k, _| keys.contains(k));
            }
        }
        if matches!(
            how,
            Restart::Wiped(_) | Restart::Older | Restart::JournalLost(_)
        ) {
            // What only the lost database held is gone for good.
            self.expected = (0..self.tracks.len()).flat_map(|i| self.keys(i)).collect();
        }
        for t in self.tracks.iter_mut() {
            t.ups.clear();
            t.full_resyncs = 0;
            t.sync_events.clear();
        }
    }

    /// Whether every journal holds `expected` and every client is connected.
    pub fn converged(&self) -> bool {
        (0..self.tracks.len()).all(|i| self.keys(i) == self.expected)
            && (0..self.clients.len()).all(|k| self.client_up(k))
    }

    pub fn client_up(&self, k: usize) -> bool {
        self.client_peer(k).sessions().any(|(_, up)| up)
    }

    /// Runs a perfect network until the world has stayed converged for 5 s, or `budget`
    /// has passed.
    pub fn settle(&mut self, budget: Duration) {
        self.sim.set_faults(Faults::none());
        self.sim.heal_all();
        let end = self.sim.now() + budget;
        let mut since = None;
        while self.sim.now() < end {
            self.run(Duration::from_secs(1));
            if !self.converged() {
                since = None;
            } else if self.sim.now()
                >= *since.get_or_insert(self.sim.now()) + Duration::from_secs(5)
            {
                return;
            }
        }
    }

    /// Everything that is wrong now (empty: nothing).
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for (i, t) in self.tracks.iter().enumerate() {
            let keys = self.keys(i);
            if keys != self.expected {
                let missing: Vec<_> = self.expected.difference(&keys).collect();
                out.push(Problem::NotConverged {
                    node: t.name.clone(),
                    missing: missing.len(),
                    extra: keys.difference(&self.expected).count(),
                    example_missing: missing.first().map(|k| show(k)),
                });
            }
            for (k, n) in &t.twice {
                out.push(Problem::AppliedTwice {
                    node: t.name.clone(),
                    key: show(k),
                    count: *n,
                });
            }
            if let Some(k) = keys
                .iter()
                .find(|k| !t.own.contains(*k) && !t.applied.contains_key(*k))
            {
                out.push(Problem::Unreported {
                    node: t.name.clone(),
                    key: show(k),
                });
            }
            if !t.errors.is_empty() {
                out.push(Problem::Errors {
                    node: t.name.clone(),
                    first: t.errors[0].clone(),
                    count: t.errors.len(),
                });
            }
        }
        for k in 0..self.clients.len() {
            if !self.client_up(k) {
                out.push(Problem::NotConnected {
                    node: self.tracks[k + 1].name.clone(),
                });
            }
        }
        out
    }
}
