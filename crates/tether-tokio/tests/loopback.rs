//! Integration over real loopback sockets (127.0.0.1) through the adapter: one
//! token-merge server peer, many client peers, each with its own journal, each driven by
//! `tether_tokio::spawn` on a multi-thread runtime. (Moved from the root crate's
//! tests/loopback.rs, where each peer had a hand-written driver; the bounds are the same.)
//!
//! - `a_thousand_clients_killed_at_random_resume_and_lose_nothing`: 1,000 clients connect;
//!   300 have their TCP stream cut under them at random moments (seeded;
//!   `Handle::cut_transports`) and resume by themselves; entries appended everywhere (some
//!   while disconnected) end up in every journal exactly once.
//! - `wrong_tokens_and_garbage_are_refused_without_disturbing_the_others`: raw TCP clients
//!   send garbage, bogus or stolen tokens; each is told `CONN_FAILED` and closed, and the
//!   real sessions see nothing.
//!
//! Both are bounded: fixed counts, an overall timeout, loopback only. Figures are printed
//! (`cargo test -p tether-tokio --test loopback -- --nocapture`).

use bytes::{Bytes, BytesMut};
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;
use tether::connect::merge::{
    self, MergeClient, MergeClientEvent, MergeClientNotice, MergeServer, MergeServerEvent,
    MergeServerNotice, Outcome, TokenSource,
};
use tether::peer::{Peer, PeerEvent};
use tether::sync::journal::{JournalStore, StoreError, SyncConfig, SyncEvent};
use tether::wire::LineId;
use tether::wire::{Entry, FailReason, FrameDecoder, Message, PROTOCOL_VERSION};
use tether::{Duration, Link, Token};
use tether_tokio::{Client, Handle, Options, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant as TokioInstant;

type Journal = Shared<HashJournal>;

/// A store the test reads while the peer that owns it runs in its driver task: the peer
/// holds one handle, the test another (`Handle::with_machine` would do too, at the cost
/// of a round trip through the driver for each of the 1,000 peers at every check).
#[derive(Debug)]
struct Shared<T>(Arc<Mutex<T>>);

impl<T> Shared<T> {
    fn new(inner: T) -> Self {
        Shared(Arc::new(Mutex::new(inner)))
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl Shared<HashJournal> {
    fn keys(&self) -> BTreeSet<(Bytes, Bytes)> {
        self.0.lock().unwrap().keys()
    }
}

// Each call locks for its own length: the peer never holds the lock across calls.
impl<T: JournalStore> JournalStore for Shared<T> {
    fn epoch(&self) -> u64 {
        self.0.lock().unwrap().epoch()
    }
    fn head(&self) -> u64 {
        self.0.lock().unwrap().head()
    }
    fn entry(&self, seq: u64) -> Option<Entry> {
        self.0.lock().unwrap().entry(seq)
    }
    fn line(&self, seq: u64) -> Option<LineId> {
        self.0.lock().unwrap().line(seq)
    }
    fn head_line(&self) -> LineId {
        self.0.lock().unwrap().head_line()
    }
    fn contains(&self, author: &[u8], resource: &[u8]) -> bool {
        self.0.lock().unwrap().contains(author, resource)
    }
    fn append(&mut self, entry: Entry) -> Result<LineId, StoreError> {
        self.0.lock().unwrap().append(entry)
    }
    fn append_batch(
        &mut self,
        entries: &[Entry],
        outcomes: &mut Vec<Option<LineId>>,
    ) -> Result<(), StoreError> {
        self.0.lock().unwrap().append_batch(entries, outcomes)
    }
    fn resource(&self, author: &[u8], resource: &[u8]) -> Option<Bytes> {
        self.0.lock().unwrap().resource(author, resource)
    }
}

/// An in-memory journal indexed by a hash map: every client applies every other client's
/// entries (n^2 of them in all), and in a debug build `MemJournal`'s ordered index of
/// `(Bytes, Bytes)` keys costs most of that. The store is pluggable; the machines under
/// test are the same.
#[derive(Debug)]
struct HashJournal {
    epoch: u64,
    lines: Vec<Entry>,
    checks: Vec<u64>,
    index: HashMap<Vec<u8>, usize>,
}

impl HashJournal {
    fn new(epoch: u64) -> Self {
        HashJournal {
            epoch,
            lines: Vec::new(),
            checks: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn key(author: &[u8], resource: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(author.len() + resource.len() + 1);
        k.push(author.len() as u8);
        k.extend_from_slice(author);
        k.extend_from_slice(resource);
        k
    }

    fn keys(&self) -> BTreeSet<(Bytes, Bytes)> {
        self.lines
            .iter()
            .map(|e| (e.author.clone(), e.resource.clone()))
            .collect()
    }
}

impl JournalStore for HashJournal {
    fn epoch(&self) -> u64 {
        self.epoch
    }
    fn head(&self) -> u64 {
        self.lines.len() as u64
    }
    fn entry(&self, seq: u64) -> Option<Entry> {
        let i = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.lines.get(i).cloned()
    }
    fn line(&self, seq: u64) -> Option<LineId> {
        let check = match seq {
            0 => 0,
            _ => *self.checks.get(usize::try_from(seq - 1).ok()?)?,
        };
        Some(LineId {
            epoch: self.epoch,
            seq,
            check,
        })
    }
    fn contains(&self, author: &[u8], resource: &[u8]) -> bool {
        self.index.contains_key(&Self::key(author, resource))
    }
    fn append(&mut self, entry: Entry) -> Result<LineId, StoreError> {
        let line = self.head_line().next(&entry);
        self.index
            .insert(Self::key(&entry.author, &entry.resource), self.lines.len());
        self.lines.push(entry);
        self.checks.push(line.check);
        Ok(line)
    }
    fn resource(&self, author: &[u8], resource: &[u8]) -> Option<Bytes> {
        let i = *self.index.get(&Self::key(author, resource))?;
        self.lines.get(i).map(|e| e.payload.clone())
    }
}
type ClientPeer = Peer<MergeClient, Journal>;
type ServerPeer = Peer<MergeServer<Tokens>, Journal>;

/// splitmix64: the test's only randomness, seeded.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A number in `0..n`.
fn below(state: &mut u64, n: u64) -> u64 {
    splitmix64(state) % n.max(1)
}

/// 16 bytes from the seeded generator.
fn token(state: &mut u64) -> Token {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&splitmix64(state).to_be_bytes());
    b[8..].copy_from_slice(&splitmix64(state).to_be_bytes());
    Token::new(&b).expect("16 bytes make a token")
}

/// The server's local tokens (the caller's randomness; seeded here).
struct Tokens(u64);

impl TokenSource for Tokens {
    fn next_token(&mut self) -> Token {
        token(&mut self.0)
    }
}

fn sync_config() -> SyncConfig {
    SyncConfig {
        idle_timeout: None,
        ..SyncConfig::default()
    }
}

fn entry(author: &str, resource: &str) -> Entry {
    Entry::new(author.as_bytes(), resource.as_bytes(), b"payload")
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientStats {
    fresh: u32,
    resumed: u32,
    lost: u32,
    refused: Vec<FailReason>,
    ended: u32,
    /// `Applied` events per expected entry (indexed by [`Plan::index`]); anything else
    /// counts in `unexpected`.
    applied: Vec<u8>,
    unexpected: u32,
}

/// What the server saw.
#[derive(Debug, Default)]
struct ServerStats {
    fresh: u32,
    resumed: u32,
    lost: u32,
    ended: u32,
    refused: Vec<(Link, FailReason)>,
    applied: Vec<u8>,
    unexpected: u32,
}

/// Who appends what: client `i` appends `c{i}/r{k}` for `k < per_client`, the server
/// `s/r{j}` for `j < server_entries`.
#[derive(Debug, Clone, Copy)]
struct Plan {
    clients: usize,
    per_client: usize,
    server_entries: usize,
}

impl Plan {
    fn total(&self) -> usize {
        self.clients * self.per_client + self.server_entries
    }

    fn client_entry(&self, i: usize, k: usize) -> Entry {
        entry(&format!("c{i}"), &format!("r{k}"))
    }

    fn server_entry(&self, j: usize) -> Entry {
        entry("s", &format!("r{j}"))
    }

    /// The expected entry's index in `0..total()`, or `None` for anything unplanned.
    fn index(&self, author: &[u8], resource: &[u8]) -> Option<usize> {
        let num = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<usize>().ok();
        let r = num(resource.strip_prefix(b"r")?)?;
        if author == b"s" {
            return (r < self.server_entries).then(|| self.clients * self.per_client + r);
        }
        let i = num(author.strip_prefix(b"c")?)?;
        (i < self.clients && r < self.per_client).then(|| i * self.per_client + r)
    }

    fn keys(&self) -> BTreeSet<(Bytes, Bytes)> {
        let mut keys = BTreeSet::new();
        for i in 0..self.clients {
            for k in 0..self.per_client {
                let e = self.client_entry(i, k);
                keys.insert((e.author, e.resource));
            }
        }
        for j in 0..self.server_entries {
            let e = self.server_entry(j);
            keys.insert((e.author, e.resource));
        }
        keys
    }
}

fn count_applied(plan: &Plan, applied: &mut Vec<u8>, unexpected: &mut u32, ev: &SyncEvent) {
    if let SyncEvent::Applied {
        author, resource, ..
    } = ev
    {
        if applied.is_empty() {
            applied.resize(plan.total(), 0);
        }
        match plan.index(author, resource) {
            Some(i) => applied[i] = applied[i].saturating_add(1),
            None => *unexpected += 1,
        }
    }
}

/// A running server: its journal, its stats, and its handle.
struct ServerHandle {
    addr: SocketAddr,
    journal: Journal,
    stats: Arc<Mutex<ServerStats>>,
    handle: Handle<ServerPeer>,
}

fn options(name: &str, start: TokioInstant) -> Options {
    Options {
        name: name.into(),
        start: Some(start),
        events_capacity: 4096,
        ..Options::default()
    }
}

async fn spawn_server(seed: u64, plan: Plan, epoch: TokioInstant) -> ServerHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let journal = Shared::new(HashJournal::new(1));
    let peer = Peer::new(
        MergeServer::new(
            merge::MergeServerConfig {
                resume_grace: Duration::from_secs(600),
                max_pending: 4096,
                ..Default::default()
            },
            Tokens(seed),
        ),
        sync_config(),
        journal.clone(),
    );
    let stats = Arc::new(Mutex::new(ServerStats::default()));
    let (handle, mut events) =
        tether_tokio::spawn_with(peer, Server::tcp(listener), options("server", epoch));
    let s = stats.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let mut s = s.lock().unwrap();
            match ev {
                PeerEvent::Connection(MergeServerEvent::Up { outcome, .. }) => match outcome {
                    Outcome::Fresh => s.fresh += 1,
                    Outcome::Resumed => s.resumed += 1,
                },
                PeerEvent::Connection(MergeServerEvent::Down { .. }) => s.lost += 1,
                PeerEvent::Connection(MergeServerEvent::Ended { .. }) => s.ended += 1,
                PeerEvent::Connection(MergeServerEvent::Notice(MergeServerNotice::Refused {
                    link,
                    reason,
                })) => s.refused.push((link, reason)),
                PeerEvent::Sync(_, ev) => {
                    let s = &mut *s;
                    count_applied(&plan, &mut s.applied, &mut s.unexpected, &ev)
                }
                _ => {}
            }
        }
    });
    ServerHandle {
        addr,
        journal,
        stats,
        handle,
    }
}

struct ClientHandle {
    journal: Journal,
    stats: Arc<Mutex<ClientStats>>,
    handle: Handle<ClientPeer>,
    /// Streams cut under the client.
    kills: Arc<AtomicU64>,
}

fn spawn_client(
    i: usize,
    rng: &mut u64,
    plan: Plan,
    addr: SocketAddr,
    epoch: TokioInstant,
) -> ClientHandle {
    let journal = Shared::new(HashJournal::new(100 + i as u64));
    let client = MergeClient::new(
        tether::Instant::from_micros(epoch.elapsed().as_micros() as u64),
        merge::MergeClientConfig {
            reconnect_initial: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(800),
            jitter_seed: splitmix64(rng),
            give_up_after: Duration::from_secs(120),
            ..Default::default()
        },
        token(rng),
    )
    .expect("a 16-byte token suits tether's encoding");
    let peer = Peer::new(client, sync_config(), journal.clone());
    let stats = Arc::new(Mutex::new(ClientStats::default()));
    let (handle, mut events) =
        tether_tokio::spawn_with(peer, Client::tcp(addr), options("client", epoch));
    let s = stats.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let mut s = s.lock().unwrap();
            match ev {
                PeerEvent::Connection(MergeClientEvent::Up { outcome, .. }) => match outcome {
                    Outcome::Fresh => s.fresh += 1,
                    Outcome::Resumed => s.resumed += 1,
                },
                PeerEvent::Connection(MergeClientEvent::Down { session: () }) => s.lost += 1,
                PeerEvent::Connection(MergeClientEvent::Notice(MergeClientNotice::Refused(r))) => {
                    s.refused.push(r)
                }
                PeerEvent::Connection(MergeClientEvent::Ended { .. }) => s.ended += 1,
                PeerEvent::Sync(_, ev) => {
                    let s = &mut *s;
                    count_applied(&plan, &mut s.applied, &mut s.unexpected, &ev)
                }
                _ => {}
            }
        }
    });
    ClientHandle {
        journal,
        stats,
        handle,
        kills: Arc::new(AtomicU64::new(0)),
    }
}

/// What a client is told to do at a moment.
enum Action {
    /// Append this entry.
    Append(Entry),
    /// Cut its stream (the machine learns it as a loss), then append this entry: the
    /// handle's channel is taken in order, so the append comes while it is disconnected.
    CutThenAppend(Entry),
}

/// Runs `action` on the client at `at`, in a task of its own.
fn schedule(c: &ClientHandle, at: TokioInstant, action: Action) {
    let (h, kills) = (c.handle.clone(), c.kills.clone());
    tokio::spawn(async move {
        tokio::time::sleep_until(at).await;
        match action {
            Action::Append(e) => {
                let _ = h.append(e).await;
            }
            Action::CutThenAppend(e) => {
                let n = h.cut_transports().await.unwrap_or(0);
                kills.fetch_add(n as u64, Ordering::Relaxed);
                let _ = h.append(e).await;
            }
        }
    });
}

/// Waits (5 s at most) until every recorder has counted the `Applied` events the journals
/// already show: each client every entry but its own, the server every client's.
async fn events_caught_up(plan: &Plan, server: &ServerHandle, clients: &[ClientHandle]) {
    let sum = |v: &Vec<u8>| v.iter().map(|&n| u64::from(n)).sum::<u64>();
    let total = plan.total() as u64;
    let own = plan.per_client as u64;
    let _ = wait_until(
        StdDuration::from_secs(5),
        StdDuration::from_millis(10),
        || {
            sum(&server.stats.lock().unwrap().applied) >= (plan.clients * plan.per_client) as u64
                && clients
                    .iter()
                    .all(|c| sum(&c.stats.lock().unwrap().applied) >= total - own)
        },
    )
    .await;
}

/// Runs `f`, failing the test if it takes longer than `limit`.
async fn within<F: std::future::Future>(limit: StdDuration, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .expect("the test finished within its overall bound")
}

/// Waits (polling every `every`) until `done` holds; false if `limit` passes first.
async fn wait_until(
    limit: StdDuration,
    every: StdDuration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let end = TokioInstant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if TokioInstant::now() >= end {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_killed_at_random_resume_and_lose_nothing() {
    const CLIENTS: usize = 1000;
    const KILLED: usize = 300;
    let plan = Plan {
        clients: CLIENTS,
        per_client: 1,
        server_entries: 10,
    };
    let started = std::time::Instant::now();
    within(StdDuration::from_secs(55), async move {
        let mut rng = 0x5eed_0001_u64;
        let epoch = TokioInstant::now();
        let server = spawn_server(splitmix64(&mut rng), plan, epoch).await;

        // Phase 1: everyone connects.
        let t = TokioInstant::now();
        let clients: Vec<ClientHandle> = (0..CLIENTS)
            .map(|i| spawn_client(i, &mut rng, plan, server.addr, epoch))
            .collect();
        let all_up = wait_until(
            StdDuration::from_secs(30),
            StdDuration::from_millis(10),
            // The client is connected on the server's confirmation; the server on the
            // client's, a moment later.
            || {
                server.stats.lock().unwrap().fresh as usize == CLIENTS
                    && clients.iter().all(|c| c.stats.lock().unwrap().fresh == 1)
            },
        )
        .await;
        let connect_time = t.elapsed();
        assert!(all_up, "all {CLIENTS} clients connected");
        assert_eq!(server.stats.lock().unwrap().fresh as usize, CLIENTS);

        // Phase 2: entries everywhere, kills at random moments. Each client appends one
        // entry (every client applies every other's: n^2 applications in all, which is
        // what bounds the count): a killed client once it has learned of its loss (so
        // while disconnected), the others at a random moment.
        let t0 = TokioInstant::now();
        let ms = |n: u64| t0 + StdDuration::from_millis(n);
        let mut order: Vec<usize> = (0..CLIENTS).collect();
        for k in (1..order.len()).rev() {
            order.swap(k, below(&mut rng, k as u64 + 1) as usize);
        }
        let killed: BTreeSet<usize> = order[..KILLED].iter().copied().collect();
        for (i, c) in clients.iter().enumerate() {
            let append = plan.client_entry(i, 0);
            let action = if killed.contains(&i) {
                Action::CutThenAppend(append)
            } else {
                Action::Append(append)
            };
            schedule(c, ms(below(&mut rng, 1500)), action);
        }
        for j in 0..plan.server_entries {
            let (h, e, at) = (server.handle.clone(), plan.server_entry(j), ms(below(&mut rng, 1500)));
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let _ = h.append(e).await;
            });
        }

        // Phase 3: everything converges.
        let total = plan.total() as u64;
        let converged = wait_until(
            StdDuration::from_secs(40),
            StdDuration::from_millis(50),
            || {
                server.journal.head() >= total
                    && clients.iter().enumerate().all(|(i, c)| {
                        let s = c.stats.lock().unwrap();
                        c.journal.head() >= total
                            && (!killed.contains(&i) || (s.resumed >= 1 && s.resumed == s.lost))
                    })
            },
        )
        .await;
        let churn_time = t0.elapsed();
        // The journals are written in the driver tasks, the events counted in the
        // recorders' tasks a moment later: let the counts catch up.
        if converged {
            events_caught_up(&plan, &server, &clients).await;
        }
        let mut refused_inputs = server.handle.stats().await.expect("server runs").refused_inputs;
        let mut kills = 0;
        let mut rest = Vec::new();
        let mut handles = Vec::new();
        for c in clients {
            let k = c.kills.load(Ordering::Relaxed);
            kills += k;
            refused_inputs += c.handle.stats().await.expect("client runs").refused_inputs;
            rest.push((c.journal, std::mem::take(&mut *c.stats.lock().unwrap()), k));
            handles.push(c.handle);
        }
        let ss = std::mem::take(&mut *server.stats.lock().unwrap());
        // The server's machine back before the clients stop (their ends would be losses).
        let server_machine = server.handle.shutdown().await.expect("the server back");
        drop(handles);
        let resumptions: u32 = rest.iter().map(|r| r.1.resumed).sum();
        let not_resumable = rest
            .iter()
            .flat_map(|r| r.1.refused.iter())
            .filter(|r| **r == FailReason::NotResumable)
            .count();
        let applied_on_clients: u64 = rest
            .iter()
            .map(|r| r.1.applied.iter().map(|&n| u64::from(n)).sum::<u64>())
            .sum();
        println!(
            "loopback: {CLIENTS} clients connected in {connect_time:?}; {kills} streams killed, \
             {resumptions} resumptions ({} lost on the server, {not_resumable} early resumes \
             refused NOT_RESUMABLE and retried); {} entries, {} applied on the server, \
             {applied_on_clients} on the clients; converged {churn_time:?} after the churn began",
            ss.lost,
            plan.total(),
            ss.applied.iter().map(|&n| u64::from(n)).sum::<u64>(),
        );
        {
            let mut hist = std::collections::BTreeMap::new();
            for r in rest.iter().flat_map(|r| r.1.refused.iter()) {
                *hist.entry(format!("client refused {r:?}")).or_insert(0) += 1;
            }
            for r in ss.refused.iter() {
                *hist.entry(format!("server refused {:?}", r.1)).or_insert(0) += 1;
            }
            let lost: u32 = rest.iter().map(|r| r.1.lost).sum();
            let behind = rest.iter().filter(|r| r.0.head() < total).count();
            let have = server.journal.keys();
            let missing: Vec<String> = plan
                .keys()
                .difference(&have)
                .take(400)
                .map(|(a, r)| {
                    let a = String::from_utf8_lossy(a).to_string();
                    let k = a[1..]
                        .parse::<usize>()
                        .map(|i| killed.contains(&i))
                        .unwrap_or(false);
                    format!(
                        "{a}/{}{}",
                        String::from_utf8_lossy(r),
                        if k { "*" } else { "" }
                    )
                })
                .collect();
            println!(
                "loopback: server misses {} entries: {missing:?}",
                missing.len()
            );
            let downs: Vec<_> = server_machine.sessions().filter(|s| !s.1).collect();
            println!("loopback: server sessions down: {downs:?}");
            println!("loopback: client lost {lost}, {behind} clients behind, refusals {hist:?}, server ended {}", ss.ended);
        }
        assert!(
            converged,
            "every journal holds every entry and every killed client resumed"
        );
        assert_eq!(refused_inputs, 0, "no input refused (see the warnings traced)");

        let expected = plan.keys();
        let own = |i: usize| i * plan.per_client..(i + 1) * plan.per_client;
        let server_entries = plan.clients * plan.per_client..plan.total();
        {
            assert_eq!(server.journal.head(), total, "no line twice on the server");
        }
        assert!(
            server.journal.keys() == expected,
            "the server has every entry"
        );
        for (x, &n) in ss.applied.iter().enumerate() {
            let want = u8::from(!server_entries.contains(&x));
            assert_eq!(n, want, "server: entry {x} applied {n} times");
        }
        assert_eq!(ss.unexpected, 0);
        assert_eq!((ss.fresh as usize, ss.ended), (CLIENTS, 0));
        assert_eq!(
            ss.resumed, resumptions,
            "the server resumed what the clients did"
        );
        assert_eq!(
            kills as usize, KILLED,
            "every planned kill hit a live stream"
        );

        for (i, (journal, s, k)) in rest.iter().enumerate() {
            assert_eq!(journal.head(), total, "client {i}: no line twice");
            assert!(journal.keys() == expected, "client {i} has every entry");
            for (x, &n) in s.applied.iter().enumerate() {
                let want = u8::from(!own(i).contains(&x));
                assert_eq!(n, want, "client {i}: entry {x} applied {n} times");
            }
            assert_eq!(s.unexpected, 0);
            assert_eq!(
                (s.fresh, s.ended),
                (1, 0),
                "client {i}: one fresh session, never ended"
            );
            if killed.contains(&i) {
                assert_eq!(*k, 1, "client {i} was killed once");
                assert!(
                    s.lost >= 1 && s.resumed == s.lost,
                    "client {i} resumed: {s:?}"
                );
            } else {
                assert_eq!(
                    (s.lost, s.resumed),
                    (0, 0),
                    "client {i} was never disturbed"
                );
            }
        }
    })
    .await;
    println!("loopback: wall time {:?}", started.elapsed());
}

fn framed(msg: &Message) -> BytesMut {
    let mut b = BytesMut::new();
    msg.encode_framed(&mut b);
    b
}

/// Opens a raw TCP connection, sends `bytes`, and reads until the server closes: what it
/// said, and whether it closed (EOF or reset) within the bound.
async fn raw_attempt(addr: SocketAddr, bytes: &[u8]) -> (Vec<Message>, bool) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut messages = Vec::new();
    let mut buf = vec![0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(StdDuration::from_secs(10), stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => {
                decoder.push(&buf[..n]);
                while let Ok(Some(frame)) = decoder.next_frame() {
                    messages.push(Message::decode(frame).expect("the server speaks tether"));
                }
            }
        }
    };
    (messages, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_and_garbage_are_refused_without_disturbing_the_others() {
    const CLIENTS: usize = 100;
    let plan = Plan {
        clients: CLIENTS,
        per_client: 1,
        server_entries: 1,
    };
    within(StdDuration::from_secs(55), async move {
        let mut rng = 0x5eed_0002_u64;
        let epoch = TokioInstant::now();
        let server = spawn_server(splitmix64(&mut rng), plan, epoch).await;
        let clients: Vec<ClientHandle> = (0..CLIENTS)
            .map(|i| spawn_client(i, &mut rng, plan, server.addr, epoch))
            .collect();
        let all_up = wait_until(
            StdDuration::from_secs(30),
            StdDuration::from_millis(10),
            || clients.iter().all(|c| c.stats.lock().unwrap().fresh == 1),
        )
        .await;
        assert!(all_up, "all {CLIENTS} clients connected");
        assert!(
            wait_until(
                StdDuration::from_secs(10),
                StdDuration::from_millis(10),
                || { server.stats.lock().unwrap().fresh as usize == CLIENTS }
            )
            .await,
            "the server saw every session"
        );
        let victim = clients[7]
            .handle
            .with_machine(|m| m.connection().view().merged)
            .await
            .expect("the client runs")
            .expect("a connected client's token");

        let v = PROTOCOL_VERSION;
        let bogus = token(&mut rng);
        let other = token(&mut rng);
        let mut bogus_then_wrong = framed(&Message::Resume {
            version: v,
            token: bogus,
        });
        bogus_then_wrong.extend_from_slice(&framed(&Message::Token {
            version: v,
            token: other,
        }));
        let attempts: Vec<(&str, BytesMut, FailReason)> = vec![
            (
                "garbage (an HTTP request)",
                BytesMut::from(&b"GET / HTTP/1.1\r\nHost: tether\r\n\r\n"[..]),
                FailReason::Malformed,
            ),
            // An unknown merged token is taken as a forgotten session (dop): the server
            // offers a fresh handshake from it, and a confirmation with another token is a
            // wrong token.
            (
                "bogus RESUME, then a wrong confirmation",
                bogus_then_wrong,
                FailReason::WrongToken,
            ),
            // (A RESUME with a live session's merged token is no attack: the token is the
            // session's proof, and the session core lets it take over a half-open link;
            // tests/session_core.rs covers the takeover.)
            (
                "DISCONNECT of a live session from another transport",
                framed(&Message::Disconnect { token: victim }),
                FailReason::UnexpectedMessage,
            ),
            (
                "RESUME with a 64-bit token",
                framed(&Message::Resume {
                    version: v,
                    token: Token::new(&[9u8; 8]).expect("8 bytes"),
                }),
                FailReason::InsecureToken,
            ),
            (
                "TOKEN of another protocol version",
                framed(&Message::Token {
                    version: v.wrapping_add(1),
                    token: other,
                }),
                FailReason::UnsupportedVersion,
            ),
        ];
        for (what, bytes, reason) in &attempts {
            let (messages, closed) = raw_attempt(server.addr, bytes).await;
            println!("loopback: {what}: {messages:?}, closed: {closed}");
            assert!(
                matches!(messages.first(), Some(Message::Token { .. })),
                "{what}: the server offered its token on open"
            );
            assert_eq!(
                messages.last(),
                Some(&Message::ConnFailed { reason: *reason }),
                "{what}: told why"
            );
            assert!(closed, "{what}: then closed");
        }
        // The raw client sees the refusal before the server's driver has handed its event
        // on: wait (bounded) for the last one to arrive.
        let want: Vec<FailReason> = attempts.iter().map(|a| a.2).collect();
        wait_until(
            StdDuration::from_secs(5),
            StdDuration::from_millis(10),
            || server.stats.lock().unwrap().refused.len() >= want.len(),
        )
        .await;
        {
            let ss = server.stats.lock().unwrap();
            let reasons: Vec<FailReason> = ss.refused.iter().map(|r| r.1).collect();
            assert_eq!(
                reasons, want,
                "the server refused each attempt, for its reason"
            );
            assert_eq!(
                (ss.fresh as usize, ss.lost, ss.resumed, ss.ended),
                (CLIENTS, 0, 0, 0)
            );
        }

        // The others never noticed, and their sessions still carry entries both ways.
        for (i, c) in clients.iter().enumerate() {
            schedule(
                c,
                TokioInstant::now(),
                Action::Append(plan.client_entry(i, 0)),
            );
        }
        server
            .handle
            .append(plan.server_entry(0))
            .await
            .expect("server runs");
        let total = plan.total() as u64;
        let converged = wait_until(
            StdDuration::from_secs(30),
            StdDuration::from_millis(20),
            || server.journal.head() >= total && clients.iter().all(|c| c.journal.head() >= total),
        )
        .await;
        assert!(converged, "entries still flow on every session");
        events_caught_up(&plan, &server, &clients).await;
        let expected = plan.keys();
        for (i, c) in clients.iter().enumerate() {
            let s = c.stats.lock().unwrap();
            assert_eq!(
                (s.fresh, s.resumed, s.lost, s.ended),
                (1, 0, 0, 0),
                "client {i} was never disturbed"
            );
            assert!(s.refused.is_empty(), "client {i} was never refused");
            assert!(c.journal.keys() == expected, "client {i} has every entry");
            assert!(
                s.applied
                    .iter()
                    .enumerate()
                    .all(|(x, &n)| n == u8::from(x != i)),
                "client {i}: each entry applied once"
            );
        }
        let ss = server.stats.lock().unwrap();
        assert_eq!((ss.lost, ss.resumed, ss.ended), (0, 0, 0));
        assert!(server.journal.keys() == expected);
    })
    .await;
}
