//! A token-merge server and clients in one process, each a `Peer` on its own SQLite file,
//! wired in memory and driven the way a durable driver must drive them: every round, the
//! output is drained with the bytes held, the sessions are saved, and only then are the
//! bytes delivered. A node can be killed (its peer dropped, its transports closed on the
//! other side) and started again from its file, without it (wiped), or from an older copy.
//!
//! Shared by `tests/sessions.rs` and `examples/restarts.rs`.

#![allow(dead_code)]

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tether::connect::merge::{
    MergeClient, MergeClientConfig, MergeServer, MergeServerConfig, TokenSource,
};
use tether::peer::{Peer, PeerCommand, PeerEvent};
use tether::session::{EndReason, Event, Outcome};
use tether::sync::journal::{Continuity, JournalStore, SyncConfig, SyncEvent};
use tether::wire::Entry;
use tether::{Duration, Input, Instant, Link, Machine, Output, Token};
use tether_sqlite::sessions::{DurableProfile, DurableSessions, Restored};
use tether_sqlite::SqliteJournal;

/// Tokens from a counter (a real node draws them from its randomness).
pub struct Tokens(pub u64);

impl TokenSource for Tokens {
    fn next_token(&mut self) -> Token {
        self.0 += 1;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.0.to_be_bytes());
        b[8] = 0x5e;
        Token::new(&b).expect("16 bytes make a token")
    }
}

pub type Server = MergeServer<Tokens>;
/// A peer's output, as the driver handles it.
pub type PeerOutput<P> =
    Output<PeerEvent<<P as Machine>::Event, <P as tether::peer::Profile>::Session>>;
pub type Client = MergeClient;

/// When a node writes its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saving {
    /// After every round, before its bytes leave: the rule.
    EveryRound,
    /// Only in rounds that report a session up, down or ended: the mistake the rule
    /// prevents (the delivery counters move with every message).
    OnEvents,
}

/// One node: its peer on its file, its sessions, what it reported.
pub struct Node<P: DurableProfile> {
    pub name: String,
    pub path: PathBuf,
    pub peer: Peer<P, SqliteJournal>,
    pub sessions: DurableSessions<P>,
    pub saving: Saving,
    /// Everything the peer reported since it was (re)started.
    pub events: Vec<PeerEvent<P::Event, P::Session>>,
    /// Lives so far (1: never restarted).
    pub life: u64,
    /// Output taken from the peer and not yet handled (a restore's pending output).
    held: Vec<Output<PeerEvent<P::Event, P::Session>>>,
}

impl<P: DurableProfile> Node<P>
where
    P::Error: 'static,
{
    /// The `Up` outcomes reported since the last (re)start.
    pub fn ups(&self) -> Vec<Outcome> {
        self.events
            .iter()
            .filter_map(|e| match e {
                PeerEvent::Connection(Event::Up { outcome, .. }) => Some(*outcome),
                _ => None,
            })
            .collect()
    }

    /// The `Ended` reasons reported since the last (re)start.
    pub fn ended(&self) -> Vec<EndReason> {
        self.events
            .iter()
            .filter_map(|e| match e {
                PeerEvent::Connection(Event::Ended { reason, .. }) => Some(*reason),
                _ => None,
            })
            .collect()
    }

    /// The continuity each session was told, since the last (re)start.
    pub fn continuity(&self) -> Vec<Continuity> {
        self.events
            .iter()
            .filter_map(|e| match e {
                PeerEvent::Sync(_, SyncEvent::Continuity { continuity, .. }) => Some(*continuity),
                _ => None,
            })
            .collect()
    }

    /// How many times each (author, resource) was reported applied since the last
    /// (re)start.
    pub fn applied(&self) -> BTreeMap<(Bytes, Bytes), usize> {
        let mut n = BTreeMap::new();
        for e in &self.events {
            if let PeerEvent::Sync(
                _,
                SyncEvent::Applied {
                    author, resource, ..
                },
            ) = e
            {
                *n.entry((author.clone(), resource.clone())).or_insert(0) += 1;
            }
        }
        n
    }

    /// The (author, resource) of every line of the journal.
    pub fn keys(&self) -> BTreeSet<(Bytes, Bytes)> {
        let journal = self.peer.store();
        (1..=journal.head())
            .filter_map(|seq| journal.entry(seq))
            .map(|e| (e.author, e.resource))
            .collect()
    }

    /// Rows of this profile's snapshots in the file.
    pub fn rows(&self) -> usize {
        self.peer
            .store()
            .states_with_prefix(P::KEY_PREFIX)
            .map_or(0, |r| r.len())
    }

    /// The peer's output until it waits (events recorded), and whether a session came
    /// up, went down or ended.
    fn drain(&mut self) -> (Vec<PeerOutput<P>>, bool) {
        let mut out = Vec::new();
        let mut eventful = false;
        let held = std::mem::take(&mut self.held);
        for o in held
            .into_iter()
            .map(Some)
            .chain(std::iter::repeat_with(|| None))
        {
            let o = match o {
                Some(o) => o,
                None => self.peer.poll_output(),
            };
            match o {
                Output::Wait(_) => return (out, eventful),
                Output::Event(e) => {
                    eventful |= matches!(
                        e,
                        PeerEvent::Connection(
                            Event::Up { .. } | Event::Down { .. } | Event::Ended { .. }
                        )
                    );
                    self.events.push(e)
                }
                o => out.push(o),
            }
        }
        (out, eventful)
    }

    fn save(&mut self, now: Instant, eventful: bool) {
        if self.saving == Saving::EveryRound || eventful {
            self.sessions
                .save(&mut self.peer, now)
                .expect("the sessions are written");
        }
    }

    pub fn input(
        &mut self,
        now: Instant,
        input: Input<<Peer<P, SqliteJournal> as Machine>::Command>,
    ) {
        self.peer
            .handle_input(now, input)
            .unwrap_or_else(|e| panic!("{}: input refused: {e}", self.name));
    }
}

/// How a node comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From its file as it stood when it was killed.
    WithFile,
    /// Without it: the file is deleted, a new one (a new epoch) is created.
    Wiped,
    /// From the copy taken by [`World::copy_file`].
    OlderCopy,
}

/// A server and its clients, in memory.
pub struct World {
    pub dir: PathBuf,
    pub now: Instant,
    pub server: Node<Server>,
    pub clients: Vec<Node<Client>>,
    /// Which client each link belongs to.
    links: BTreeMap<u64, usize>,
    next_link: u64,
    /// Each new file's epoch (a real node draws it from its randomness).
    next_epoch: u64,
}

fn sync_config() -> SyncConfig {
    SyncConfig {
        idle_timeout: None,
        ..SyncConfig::default()
    }
}

fn server_config() -> MergeServerConfig {
    MergeServerConfig {
        resume_grace: Duration::from_secs(3600),
        ..Default::default()
    }
}

fn client_config() -> MergeClientConfig {
    MergeClientConfig {
        give_up_after: Duration::from_secs(3600),
        ..Default::default()
    }
}

fn remove_file(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

impl World {
    /// A server and `clients` clients, each on a new file in a new directory under the
    /// system's temporary directory (named by `name`).
    pub fn new(name: &str, clients: usize) -> World {
        let dir =
            std::env::temp_dir().join(format!("tether-sessions-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut w = World {
            server: Node {
                name: String::new(),
                path: PathBuf::new(),
                peer: Peer::new(
                    MergeServer::new(server_config(), Tokens(0)),
                    sync_config(),
                    SqliteJournal::open_in_memory(0).expect("a journal in memory"),
                ),
                sessions: DurableSessions::new(),
                saving: Saving::EveryRound,
                events: Vec::new(),
                life: 0,
                held: Vec::new(),
            },
            dir,
            now: Instant::ZERO,
            clients: Vec::new(),
            links: BTreeMap::new(),
            next_link: 1,
            next_epoch: 0x1000,
        };
        w.server.name = "server".into();
        w.server.path = w.dir.join("server.db");
        let (server, _) = w.start_server();
        w.server = server;
        for k in 0..clients {
            let path = w.dir.join(format!("client{k}.db"));
            let (node, _) = w.start_client(format!("client{k}"), path, 1);
            w.clients.push(node);
        }
        w
    }

    fn open(&mut self, path: &Path) -> SqliteJournal {
        let epoch = &mut self.next_epoch;
        SqliteJournal::open(path, || {
            *epoch += 1;
            *epoch
        })
        .expect("the journal opens")
    }

    fn start_server(&mut self) -> (Node<Server>, Restored<Server>) {
        let path = self.server.path.clone();
        let life = self.server.life + 1;
        let journal = self.open(&path);
        let tokens = Tokens(life << 32);
        let mut peer = Peer::new(
            MergeServer::new(server_config(), tokens),
            sync_config(),
            journal,
        );
        let mut sessions = DurableSessions::new();
        let mut restored = sessions
            .restore(&mut peer, self.now)
            .expect("the sessions restore");
        let node = Node {
            name: "server".into(),
            path,
            peer,
            sessions,
            saving: self.server.saving,
            events: Vec::new(),
            life,
            held: std::mem::take(&mut restored.pending),
        };
        (node, restored)
    }

    fn start_client(
        &mut self,
        name: String,
        path: PathBuf,
        life: u64,
    ) -> (Node<Client>, Restored<Client>) {
        let journal = self.open(&path);
        // A new process draws a new local token.
        let index = path.file_name().map_or(0, |n| n.len() as u64);
        let token = Tokens((life << 32) + (self.next_link << 16) + index).next_token();
        let conn = MergeClient::new(self.now, client_config(), token).expect("a client");
        let mut peer = Peer::new(conn, sync_config(), journal);
        let mut sessions = DurableSessions::new();
        let mut restored = sessions
            .restore(&mut peer, self.now)
            .expect("the session restores");
        let node = Node {
            name,
            path,
            peer,
            sessions,
            saving: Saving::EveryRound,
            events: Vec::new(),
            life,
            // What the fresh client had queued besides the request the restore replaced:
            // handled as if polled, at the next round.
            held: std::mem::take(&mut restored.pending),
        };
        (node, restored)
    }

    /// One round: every node's output is drained (bytes held), every node saves its
    /// sessions, then the bytes, opens and closes are delivered. Whether anything moved.
    pub fn round(&mut self) -> bool {
        let now = self.now;
        let (server_out, eventful) = self.server.drain();
        self.server.save(now, eventful);
        let mut client_out = Vec::new();
        for c in self.clients.iter_mut() {
            let (out, eventful) = c.drain();
            c.save(now, eventful);
            client_out.push(out);
        }
        let mut moved = false;
        for o in server_out {
            moved = true;
            match o {
                Output::Transmit(t) => {
                    if let Some(&k) = self.links.get(&t.link.id) {
                        self.clients[k].input(now, Input::Received(t.link, t.payload));
                    }
                }
                Output::Close(link) => self.close(link),
                _ => {}
            }
        }
        for (k, out) in client_out.into_iter().enumerate() {
            for o in out {
                moved = true;
                match o {
                    Output::Transmit(t) if self.links.get(&t.link.id) == Some(&k) => {
                        self.server.input(now, Input::Received(t.link, t.payload));
                    }
                    Output::Open(_) => {
                        let link = Link::main(self.next_link);
                        self.next_link += 1;
                        self.links.insert(link.id, k);
                        self.clients[k].input(now, Input::Opened(link));
                        self.server.input(now, Input::Opened(link));
                    }
                    Output::Close(link) => self.close(link),
                    _ => {}
                }
            }
        }
        moved
    }

    /// Both ends of a link are told it closed (the closer too: the echo of its close).
    fn close(&mut self, link: Link) {
        if let Some(k) = self.links.remove(&link.id) {
            let now = self.now;
            self.clients[k].input(now, Input::Closed(link));
            self.server.input(now, Input::Closed(link));
        }
    }

    /// Rounds, and timers in virtual time, for `d`.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            if self.round() {
                continue;
            }
            let next = std::iter::once(self.server.peer.poll_timeout())
                .chain(self.clients.iter().map(|c| c.peer.poll_timeout()))
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    if self.server.peer.poll_timeout().is_some_and(|d| d <= now) {
                        self.server.input(now, Input::Timeout);
                    }
                    for c in self.clients.iter_mut() {
                        if c.peer.poll_timeout().is_some_and(|d| d <= now) {
                            c.input(now, Input::Timeout);
                        }
                    }
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
    }

    /// Node `index` (0: the server, `k + 1`: client `k`) appends `count` entries of its own,
    /// numbered on from its journal's count of its entries.
    pub fn append(&mut self, index: usize, count: usize) {
        let now = self.now;
        for _ in 0..count {
            let (name, journal_len) = match index {
                0 => (self.server.name.clone(), self.server.keys().len()),
                k => (
                    self.clients[k - 1].name.clone(),
                    self.clients[k - 1].keys().len(),
                ),
            };
            // Unique across restarts and wipes: the journal's epoch and its length.
            let epoch = match index {
                0 => self.server.peer.store().epoch(),
                k => self.clients[k - 1].peer.store().epoch(),
            };
            let resource = format!("{epoch:x}-{journal_len}");
            let entry = Entry::new(name.as_bytes(), resource.as_bytes(), b"payload");
            match index {
                0 => self
                    .server
                    .input(now, Input::Command(PeerCommand::Append(entry))),
                k => self.clients[k - 1].input(now, Input::Command(PeerCommand::Append(entry))),
            }
        }
    }

    /// Copies node `index`'s file as it stands (for [`Start::OlderCopy`]).
    pub fn copy_file(&mut self, index: usize) {
        let path = self.path(index);
        for suffix in ["", "-wal"] {
            let from = format!("{}{suffix}", path.display());
            if Path::new(&from).exists() {
                std::fs::copy(&from, format!("{}.copy{suffix}", path.display()))
                    .expect("the file copies");
            }
        }
    }

    fn path(&self, index: usize) -> PathBuf {
        match index {
            0 => self.server.path.clone(),
            k => self.clients[k - 1].path.clone(),
        }
    }

    /// Node `index`'s links, closed on the other side (its process is gone).
    fn kill_links(&mut self, index: usize) {
        let now = self.now;
        let links: Vec<(u64, usize)> = self
            .links
            .iter()
            .filter(|(_, &k)| index == 0 || k + 1 == index)
            .map(|(&l, &k)| (l, k))
            .collect();
        for (id, k) in links {
            self.links.remove(&id);
            if index == 0 {
                self.clients[k].input(now, Input::Closed(Link::main(id)));
            } else {
                self.server.input(now, Input::Closed(Link::main(id)));
            }
        }
    }

    fn prepare_file(&self, index: usize, how: Start) {
        let path = self.path(index);
        match how {
            Start::WithFile => {}
            Start::Wiped => remove_file(&path),
            Start::OlderCopy => {
                remove_file(&path);
                for suffix in ["", "-wal"] {
                    let from = format!("{}.copy{suffix}", path.display());
                    if Path::new(&from).exists() {
                        std::fs::copy(&from, format!("{}{suffix}", path.display()))
                            .expect("the copy is put back");
                    }
                }
            }
        }
    }

    /// The server is killed (nothing more is saved) and started again as `how` says.
    pub fn restart_server(&mut self, how: Start) -> Restored<Server> {
        self.kill_links(0);
        // The old process's peer and file handle go first: a new process opens the file.
        let old = std::mem::replace(
            &mut self.server.peer,
            Peer::new(
                MergeServer::new(server_config(), Tokens(0)),
                sync_config(),
                SqliteJournal::open_in_memory(0).expect("a journal in memory"),
            ),
        );
        drop(old);
        self.prepare_file(0, how);
        let (node, restored) = self.start_server();
        let saving = self.server.saving;
        self.server = node;
        self.server.saving = saving;
        self.clear_events();
        restored
    }

    /// Client `k` is killed (nothing more is saved) and started again as `how` says.
    pub fn restart_client(&mut self, k: usize, how: Start) -> Restored<Client> {
        self.kill_links(k + 1);
        let (name, path, life, saving) = {
            let c = &self.clients[k];
            (c.name.clone(), c.path.clone(), c.life + 1, c.saving)
        };
        let placeholder = Peer::new(
            MergeClient::new(
                self.now,
                client_config(),
                Tokens(u64::MAX >> 1).next_token(),
            )
            .expect("a client"),
            sync_config(),
            SqliteJournal::open_in_memory(0).expect("a journal in memory"),
        );
        drop(std::mem::replace(&mut self.clients[k].peer, placeholder));
        self.prepare_file(k + 1, how);
        let (mut node, restored) = self.start_client(name, path, life);
        node.saving = saving;
        self.clients[k] = node;
        self.clear_events();
        restored
    }

    /// Forgets every node's events (after a restart: what follows is the restart's).
    pub fn clear_events(&mut self) {
        self.server.events.clear();
        for c in self.clients.iter_mut() {
            c.events.clear();
        }
    }

    /// Whether every journal holds the same entries.
    pub fn converged(&self) -> bool {
        let keys = self.server.keys();
        self.clients.iter().all(|c| c.keys() == keys)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
