//! The runner shared by both profiles: the world of one scenario (the simulation and the
//! reference model beside it), the checks after every step, the calm phase, and the
//! `Harness` each profile implements.

use super::violation::unbounded;
use super::{
    sync_config, Journal, Key, Report, Scenario, Step, Violation, Who, MAX_ADVANCE_MILLIS,
    MAX_APPEND, MAX_CLIENTS, MAX_JUMP_MILLIS, MAX_STEPS, MAX_UPDATES,
};
use crate::driver::{Channel, Machine};
use crate::peer::{Peer, PeerCommand, PeerEvent, Profile as PeerProfile};
use crate::sync::journal::{JournalStore, MemJournal, SyncCommand, SyncEvent};
use crate::testkit::{Either, Faults, NodeId, Sim};
use crate::time::{Duration, Instant};
use crate::token::Token;
use crate::wire::{Element, Entry};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bytes::Bytes;

/// What a connection event of one profile means to the model.
pub(super) enum News {
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

pub(super) type ClientOf<H> = <H as Harness>::Client;
pub(super) type ServerOf<H> = <H as Harness>::Server;
pub(super) type ClientCommandOf<H> = <ClientOf<H> as Machine>::Command;
pub(super) type ServerCommandOf<H> = <ServerOf<H> as Machine>::Command;
pub(super) type NodeOf<H> = Either<Peer<ClientOf<H>, Journal>, Peer<ServerOf<H>, Journal>>;

/// What differs between the profiles: building the nodes, and reading each connection
/// machine's session, bounds and events. Everything else is [`World`]'s, shared.
pub(super) trait Harness: Sized {
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
pub(super) struct Track {
    /// Keys this node appended while it did not hold them.
    pub(super) own: BTreeSet<Key>,
    /// `Applied` events per key.
    pub(super) applied: BTreeMap<Key, u32>,
    /// Set once the client ended for good (with why).
    pub(super) ended: Option<String>,
    /// The scenario ended it on purpose.
    pub(super) ended_on_purpose: bool,
    /// Its clock was moved forwards (it may give up).
    pub(super) jumped_forward: bool,
    /// Something happened that may make it lose its connection: its transports cut, a
    /// partition, a kick, a clock jump (its own or the server's), or a network that loses
    /// datagrams or cuts transports. A dual client that was never disturbed must never
    /// fail an attempt or close.
    pub(super) disturbed: bool,
    /// Sum of its backward clock jumps, in milliseconds.
    pub(super) behind_millis: u64,
    /// Next resource number for its own appends.
    pub(super) next: u32,
    /// `feed` updates it was asked to send (the next update's number).
    pub(super) updates: u32,
}

/// The world of one scenario: the simulation and the model beside it.
pub(super) struct World<H: Harness> {
    pub(super) h: H,
    pub(super) sim: Sim<NodeOf<H>>,
    pub(super) server: NodeId,
    pub(super) clients: Vec<NodeId>,
    pub(super) tracks: Vec<Track>,
    pub(super) appended: BTreeSet<Key>,
    /// Per (receiver, sender, session tag): the newest update number delivered.
    pub(super) newest: BTreeMap<(usize, usize, Vec<u8>), u32>,
    /// Per (receiver, sender): every update number delivered.
    pub(super) got: BTreeSet<(usize, usize, u32)>,
    pub(super) updates_delivered: u64,
    pub(super) closes: u64,
    pub(super) errors: Vec<String>,
    pub(super) error_count: u64,
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
pub(super) const NOBODY: usize = 0xff;

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

pub(super) fn hex(t: &Token) -> String {
    t.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

impl<H: Harness> World<H> {
    fn new(h: H, seed: u64, clients: u8) -> World<H> {
        let mut sim = Sim::new(seed, Faults::none());
        let server_peer = Peer::new(h.server(seed), sync_config(), MemJournal::new(1, 100_000));
        let server = sim.add_node(Either::Right(server_peer));
        let mut ids = Vec::new();
        for i in 0..clients {
            let peer = Peer::new(
                h.client(seed, i, sim.now()),
                sync_config(),
                MemJournal::new(100 + u64::from(i), 100_000),
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

    pub(super) fn n(&self) -> usize {
        self.clients.len()
    }

    /// Node number `node` (mod the number of nodes): 0 is the server.
    fn node(&self, node: u8) -> (Who, NodeId, usize) {
        let i = usize::from(node) % (self.n() + 1);
        self.node_at(i)
    }

    /// Node at index `i` (at most the number of clients).
    pub(super) fn node_at(&self, i: usize) -> (Who, NodeId, usize) {
        match i.checked_sub(1).and_then(|k| self.clients.get(k)) {
            Some(&id) => (Who::Client((i - 1) as u8), id, i),
            None => (Who::Server, self.server, 0),
        }
    }

    fn client(&self, client: u8) -> (Who, NodeId, usize) {
        let k = usize::from(client) % self.n();
        self.node_at(k + 1)
    }

    pub(super) fn client_peer(&self, id: NodeId) -> Option<&Peer<H::Client, Journal>> {
        self.sim.node(id).left()
    }

    pub(super) fn server_peer(&self) -> Option<&Peer<H::Server, Journal>> {
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
            .keys()
            .into_iter()
            .map(|(a, r)| key_of(&a, &r))
            .collect()
    }

    fn append(&mut self, index: usize, id: NodeId, entry: Entry) {
        let key = key_of(&entry.author, &entry.resource);
        self.appended.insert(key.clone());
        let had = self.journal(id).contains(&entry.author, &entry.resource);
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
                    // A stall, not a loss: the scenario's delivery checks see what follows.
                    Either::Left(PeerEvent::Backlogged(_))
                    | Either::Right(PeerEvent::Backlogged(_)) => (None, News::Nothing),
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

pub(super) fn run_with<H: Harness>(h: H, scenario: &Scenario) -> Result<Report, Violation> {
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
