//! What the adapter's integration tests share: seeded tokens, event recorders, waits with a
//! bound, rcgen certificates, and one scenario (a token-merge client and server `Peer`,
//! cut twice, nothing lost) run over every stream transport.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;
use tether::connect::merge::{
    self, MergeClient, MergeClientEvent, MergeServer, MergeServerEvent, Outcome, TokenSource,
};
use tether::peer::{Peer, PeerEvent};
use tether::sync::journal::{JournalStore, MemJournal, SyncConfig, SyncEvent};
use tether::wire::Entry;
use tether::{Duration, Token};
use tether_tokio::{Client, Handle, Server};

/// Tracing to stderr when `TETHER_TRACE` is set (`debug`, `info`, ...).
pub fn trace() {
    if let Ok(level) = std::env::var("TETHER_TRACE") {
        let level = level.parse().unwrap_or(tracing::Level::DEBUG);
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_test_writer()
            .try_init();
    }
}

/// splitmix64: the tests' only randomness, seeded.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 16 bytes from the seeded generator.
pub fn token(state: &mut u64) -> Token {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&splitmix64(state).to_be_bytes());
    b[8..].copy_from_slice(&splitmix64(state).to_be_bytes());
    Token::new(&b).expect("16 bytes make a token")
}

/// A server's tokens (the caller's randomness; seeded here).
pub struct Tokens(pub u64);

impl TokenSource for Tokens {
    fn next_token(&mut self) -> Token {
        token(&mut self.0)
    }
}

pub type ClientPeer = Peer<MergeClient, MemJournal>;
pub type ServerPeer = Peer<MergeServer<Tokens>, MemJournal>;

pub fn sync_config() -> SyncConfig {
    SyncConfig {
        idle_timeout: None,
        ..SyncConfig::default()
    }
}

pub fn client_peer(seed: u64) -> ClientPeer {
    let mut rng = seed;
    let conn = MergeClient::new(
        tether::Instant::ZERO,
        merge::MergeClientConfig {
            reconnect_initial: Duration::from_millis(20),
            reconnect_max: Duration::from_millis(200),
            jitter_seed: seed,
            ..Default::default()
        },
        token(&mut rng),
    )
    .expect("a 16-byte token");
    Peer::new(conn, sync_config(), MemJournal::new(100 + seed, 100_000))
}

pub fn server_peer(seed: u64) -> ServerPeer {
    Peer::new(
        MergeServer::new(merge::MergeServerConfig::default(), Tokens(seed)),
        sync_config(),
        MemJournal::new(1, 100_000),
    )
}

/// Every event of a machine, recorded by a task of its own as they come.
pub struct Recorder<E>(pub Arc<Mutex<Vec<E>>>);

impl<E> Clone for Recorder<E> {
    fn clone(&self) -> Self {
        Recorder(self.0.clone())
    }
}

impl<E: Send + 'static> Recorder<E> {
    pub fn start(mut events: tether_tokio::Events<E>) -> Self {
        let all = Arc::new(Mutex::new(Vec::new()));
        let r = all.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                r.lock().unwrap().push(e);
            }
        });
        Recorder(all)
    }

    pub fn count(&self, f: impl Fn(&E) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|e| f(e)).count()
    }
}

/// Waits (every 10 ms) until `done` says true; false after `limit`.
pub async fn wait_until<F, Fut>(limit: StdDuration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + limit;
    loop {
        if done().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
}

/// The (author, resource) keys in a running peer's journal.
pub async fn keys<M, P>(handle: &Handle<M>, store: P) -> Vec<(Vec<u8>, Vec<u8>)>
where
    M: tether::Machine + Send + 'static,
    M::Command: Send,
    P: Fn(&M) -> &MemJournal + Send + 'static,
{
    handle
        .with_machine(move |m| {
            let j = store(m);
            (1..=j.head())
                .filter_map(|s| j.entry(s))
                .map(|e| (e.author.to_vec(), e.resource.to_vec()))
                .collect()
        })
        .await
        .expect("the driver runs")
}

/// `Applied` events per (author, resource).
pub fn applied<C, S>(events: &[PeerEvent<C, S>]) -> BTreeMap<(Vec<u8>, Vec<u8>), usize> {
    let mut m = BTreeMap::new();
    for e in events {
        if let PeerEvent::Sync(
            _,
            SyncEvent::Applied {
                author, resource, ..
            },
        ) = e
        {
            *m.entry((author.to_vec(), resource.to_vec())).or_insert(0) += 1;
        }
    }
    m
}

pub fn entry(author: &str, resource: &str) -> Entry {
    Entry::new(author.as_bytes(), resource.as_bytes(), b"payload")
}

/// A self-signed certificate for `localhost`, and the rustls configurations of both sides.
pub fn tls_configs() -> (
    Arc<tether_tokio::rustls::ServerConfig>,
    Arc<tether_tokio::rustls::ClientConfig>,
) {
    use tether_tokio::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tether_tokio::rustls::{ClientConfig, RootCertStore, ServerConfig};
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a certificate");
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let server = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("a server config");
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("the root");
    let client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// The scenario every stream transport must pass: a token-merge client and server
/// `Peer` over the adapter; entries appended on both sides before, during and after two
/// cuts (one by the client, one by the server); the client resumes after each, and every
/// entry arrives exactly once on the other side.
pub async fn merge_cut_resume(server: Server, client: Client, seed: u64) {
    let (server, server_events) = tether_tokio::spawn(server_peer(seed), server);
    let (client, client_events) = tether_tokio::spawn(client_peer(seed + 1), client);
    let (sev, cev) = (
        Recorder::start(server_events),
        Recorder::start(client_events),
    );
    let resumed = |r: &Recorder<PeerEvent<MergeClientEvent, ()>>| {
        r.count(|e| {
            matches!(
                e,
                PeerEvent::Connection(MergeClientEvent::Up {
                    outcome: Outcome::Resumed,
                    ..
                })
            )
        })
    };
    let limit = StdDuration::from_secs(10);
    let mut expected_on_client = Vec::new();
    let mut expected_on_server = Vec::new();
    let mut round = |phase: &str, n: usize| {
        let mut c = Vec::new();
        let mut s = Vec::new();
        for k in 0..n {
            c.push(entry("client", &format!("{phase}{k}")));
            s.push(entry("server", &format!("{phase}{k}")));
        }
        expected_on_server.extend(c.iter().map(|e| (e.author.to_vec(), e.resource.to_vec())));
        expected_on_client.extend(s.iter().map(|e| (e.author.to_vec(), e.resource.to_vec())));
        (c, s)
    };

    // Before: connect and sync.
    let (c, s) = round("before", 5);
    for e in c {
        client.append(e).await.unwrap();
    }
    for e in s {
        server.append(e).await.unwrap();
    }
    let want = 10;
    assert!(
        wait_until(limit, || async {
            keys(&client, |m: &ClientPeer| m.store()).await.len() == want
                && keys(&server, |m: &ServerPeer| m.store()).await.len() == want
        })
        .await,
        "connected and synced before the cut"
    );

    // The client's cut: it is down when the entries of `during` are appended (the cut is
    // taken before them, in order).
    assert_eq!(
        client.cut_transports().await.unwrap(),
        1,
        "one transport cut"
    );
    let (c, s) = round("during", 5);
    for e in c {
        client.append(e).await.unwrap();
    }
    for e in s {
        server.append(e).await.unwrap();
    }
    assert!(
        wait_until(limit, || async { resumed(&cev) == 1 }).await,
        "the client resumed after its cut"
    );

    // The server's cut: the client learns it from its socket.
    assert!(
        wait_until(limit, || async {
            server.cut_transports().await.unwrap() > 0
        })
        .await,
        "the server had the session's transport to cut"
    );
    let (c, s) = round("after", 5);
    for e in c {
        client.append(e).await.unwrap();
    }
    for e in s {
        server.append(e).await.unwrap();
    }
    assert!(
        wait_until(limit, || async { resumed(&cev) == 2 }).await,
        "the client resumed after the server's cut"
    );
    let want = 30;
    assert!(
        wait_until(limit, || async {
            keys(&client, |m: &ClientPeer| m.store()).await.len() == want
                && keys(&server, |m: &ServerPeer| m.store()).await.len() == want
        })
        .await,
        "every entry reached the other side"
    );
    // Exactly once: each side applied each of the other's entries once, and its journal
    // holds no line twice.
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    let on_client = applied(&cev.0.lock().unwrap());
    let on_server = applied(&sev.0.lock().unwrap());
    for k in &expected_on_client {
        assert_eq!(on_client.get(k), Some(&1), "client applied {k:?} once");
    }
    for k in &expected_on_server {
        assert_eq!(on_server.get(k), Some(&1), "server applied {k:?} once");
    }
    assert_eq!(on_client.len(), expected_on_client.len());
    assert_eq!(on_server.len(), expected_on_server.len());
    let fresh = cev.count(|e| {
        matches!(
            e,
            PeerEvent::Connection(MergeClientEvent::Up {
                outcome: Outcome::Fresh,
                ..
            })
        )
    });
    assert_eq!(fresh, 1, "one session, resumed twice");
    let server_resumed = sev.count(|e| {
        matches!(
            e,
            PeerEvent::Connection(MergeServerEvent::Up {
                outcome: Outcome::Resumed,
                ..
            })
        )
    });
    assert_eq!(server_resumed, 2, "the server resumed the same session");
    let (cs, ss) = (client.stats().await.unwrap(), server.stats().await.unwrap());
    assert_eq!(cs.refused_inputs + ss.refused_inputs, 0, "no input refused");
    assert!(
        cs.cut == 1 && ss.cut >= 1,
        "the cuts were made: {cs:?} {ss:?}"
    );
    let peer = client.shutdown().await.expect("the machine back");
    assert_eq!(peer.store().head(), 30, "no line twice on the client");
    let peer = server.shutdown().await.expect("the machine back");
    assert_eq!(peer.store().head(), 30, "no line twice on the server");
}
