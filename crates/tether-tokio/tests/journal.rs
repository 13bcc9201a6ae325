//! The journal conveniences of a `Peer`'s handle (`publish`, `entries`, `until`) and the
//! save hook of `spawn_saving`: output held while the hook fails, and a durable server
//! (tether-sqlite) restarted on its file resumes its client's session.

mod common;

use common::{ClientPeer, ServerPeer};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tether::connect::merge::{MergeClientEvent, MergeServer, Outcome};
use tether::peer::{Peer, PeerEvent};
use tether::sync::journal::{JournalStore, ResourceIds};
use tether::Instant;
use tether_sqlite::{sessions::DurableSessions, SqliteJournal};
use tether_tokio::{random, Client, Options, Server};
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_entries_and_until() {
    common::trace();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (server, mut sev) = tether_tokio::spawn(common::server_peer(31), Server::tcp(listener));
    let (client, mut cev) = tether_tokio::spawn(common::client_peer(32), Client::tcp(addr));

    // Two entries from the same author get two minted ids, in the journal's epoch.
    let a = client.publish("alice", "one").await.unwrap().unwrap();
    let b = client.publish(b"alice", b"two").await.unwrap().unwrap();
    assert_ne!(a.resource, b.resource);
    let epoch = client.with_machine(|m| m.store().epoch()).await.unwrap();
    assert_eq!(ResourceIds::parse(&a.resource).map(|(e, _)| e), Some(epoch));

    // The server learns both (an event follows each); `entries` reads them in order.
    let both = server.until(&mut sev, |m: &mut ServerPeer| m.store().head() == 2);
    tokio::time::timeout(LIMIT, both).await.unwrap().unwrap();
    assert_eq!(server.entries(1).await.unwrap(), [a.clone(), b.clone()]);
    assert_eq!(server.entries(0).await.unwrap().len(), 2, "0 counts as 1");
    assert_eq!(server.entries(2).await.unwrap(), [b]);
    assert!(server.entries(3).await.unwrap().is_empty(), "past the head");
    // A condition that holds already returns at once.
    let up = client.until(&mut cev, |m: &mut ClientPeer| m.store().head() == 2);
    tokio::time::timeout(LIMIT, up).await.unwrap().unwrap();

    // Once the driver is gone, `until` says so.
    let _ = client.shutdown().await.unwrap();
    let never = client.until(&mut cev, |_| false);
    assert!(tokio::time::timeout(LIMIT, never).await.unwrap().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_save_holds_the_round_until_it_succeeds() {
    common::trace();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (fail, calls) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (f, n) = (fail.clone(), calls.clone());
    let save = move |_: &mut ServerPeer, _| {
        n.fetch_add(1, Ordering::SeqCst);
        if f.load(Ordering::SeqCst) {
            Err("disk full")
        } else {
            Ok(())
        }
    };
    let endpoint = Server::tcp(listener);
    let (_server, _sev) =
        tether_tokio::spawn_saving(common::server_peer(41), endpoint, Options::default(), save);
    let (client, mut cev) = tether_tokio::spawn(common::client_peer(42), Client::tcp(addr));

    // The server's answer to the handshake is held while saving fails: the client cannot
    // come up, however long (here: until the hook was retried, a second apart).
    let retried = common::wait_until(LIMIT, || async { calls.load(Ordering::SeqCst) >= 3 }).await;
    assert!(retried, "the failed save is tried again");
    let up = client
        .with_machine(|m| m.sessions().any(|(_, up)| up))
        .await
        .unwrap();
    assert!(!up, "nothing of a round leaves before it is saved");

    // Saving works again: the held round goes out, the client comes up.
    fail.store(false, Ordering::SeqCst);
    let up = client.until(&mut cev, |m: &mut ClientPeer| {
        m.sessions().any(|(_, up)| up)
    });
    tokio::time::timeout(LIMIT, up).await.unwrap().unwrap();
}

type DurableServer = Peer<MergeServer<random::Tokens>, SqliteJournal>;

/// A durable server on `path`: its journal and sessions restored from the file, saved by
/// the hook. Returns how many sessions it restored.
fn durable(
    listener: TcpListener,
    path: &std::path::Path,
) -> (
    usize,
    tether_tokio::Handle<DurableServer>,
    tether_tokio::Events<<DurableServer as tether::Machine>::Event>,
) {
    let journal = SqliteJournal::open(path, random::u64).unwrap();
    let conn = MergeServer::new(Default::default(), random::Tokens);
    let mut peer = Peer::new(conn, common::sync_config(), journal);
    let mut sessions = DurableSessions::new();
    let restored = sessions.restore(&mut peer, Instant::ZERO).unwrap();
    let save = move |p: &mut DurableServer, now| sessions.save(p, now);
    let endpoint = Server::tcp(listener);
    let (h, e) = tether_tokio::spawn_saving(peer, endpoint, Options::default(), save);
    (restored.sessions.len(), h, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_server_restarted_on_its_file_resumes_the_client() {
    common::trace();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (restored, server, _sev) = durable(listener, &path);
    assert_eq!(restored, 0, "a new file");
    let (client, mut cev) = tether_tokio::spawn(common::client_peer(52), Client::tcp(addr));
    let sent = client.publish("c", "before").await.unwrap().unwrap();
    let synced = client.until(&mut cev, |m: &mut ClientPeer| {
        m.sessions().any(|(_, up)| up)
            && m.marks(())
                .and_then(|k| k.theirs)
                .is_some_and(|l| l.seq >= 1)
    });
    tokio::time::timeout(LIMIT, synced).await.unwrap().unwrap();

    // The server stops (its process would be gone); the file stays.
    drop(server.shutdown().await.unwrap());
    // Its listener goes with its accept task: bind the port again once it is free.
    let mut again = None;
    for _ in 0..500 {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                again = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let (restored, server, _sev) = durable(again.expect("the port is free again"), &path);
    assert_eq!(restored, 1, "the client's session, from the file");
    assert_eq!(server.entries(1).await.unwrap(), [sent]);

    // The client resumes the session it had (not a fresh one).
    let resumed = async {
        while let Some(e) = cev.recv().await {
            if let PeerEvent::Connection(MergeClientEvent::Up { outcome, .. }) = e {
                return Some(outcome);
            }
        }
        None
    };
    let outcome = tokio::time::timeout(LIMIT, resumed).await.unwrap();
    assert_eq!(outcome, Some(Outcome::Resumed));
}
