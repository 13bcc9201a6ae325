//! The `Send` handle: cloned into several tasks of a multi-thread runtime, their commands
//! all reach the machine; refusals come back through `apply`; the machine comes back once.

mod common;

use common::{entry, keys, wait_until, ClientPeer, ServerPeer};
use std::time::Duration;
use tether::peer::PeerCommand;
use tether::sync::journal::{JournalStore, StoreError};
use tether::PeerError;
use tether_tokio::{Client, Gone, Handle, Server};
use tokio::net::TcpListener;

fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_from_four_tasks_are_all_applied() {
    common::trace();
    send_sync_clone::<Handle<ClientPeer>>();
    send_sync_clone::<Handle<ServerPeer>>();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (server, _sev) = tether_tokio::spawn(common::server_peer(91), Server::tcp(listener));
    let (client, _cev) = tether_tokio::spawn(common::client_peer(92), Client::tcp(addr));

    // Four tasks, 50 commands each, on both peers' handles at once (half through
    // `command`, half through `try_command`, which may find the channel full).
    let mut tasks = Vec::new();
    for t in 0..4 {
        tasks.push(tokio::spawn(fifty(client.clone(), format!("c{t}"))));
        tasks.push(tokio::spawn(fifty(server.clone(), format!("s{t}"))));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = wait_until(Duration::from_secs(10), || async {
        keys(&client, |m: &ClientPeer| m.store()).await.len() == 400
            && keys(&server, |m: &ServerPeer| m.store()).await.len() == 400
    })
    .await;
    assert!(all, "every command applied, and synced to the other side");

    // A refusal comes back through `apply`.
    let again = client
        .apply(PeerCommand::Append(entry("c0", "r0")))
        .await
        .unwrap();
    assert!(
        matches!(again, Err(PeerError::Store(StoreError::Duplicate))),
        "{again:?}"
    );
    assert_eq!(
        client.stats().await.unwrap().refused_inputs,
        0,
        "apply returns it instead"
    );

    // The machine comes back once; the handles then say the driver is gone.
    let peer = client.shutdown().await.unwrap();
    assert_eq!(peer.store().head(), 400);
    assert_eq!(client.shutdown().await.err(), Some(Gone));
    assert_eq!(client.append(entry("x", "y")).await, Err(Gone));
    assert!(!client.is_running());
}

/// 50 appends by `author` through a handle of any peer.
async fn fifty<M, C, S>(h: Handle<M>, author: String)
where
    M: tether::Machine<Command = PeerCommand<C, S>> + Send + 'static,
    C: Send + std::fmt::Debug,
    S: Send + std::fmt::Debug,
{
    for k in 0..50 {
        let e = entry(&author, &format!("r{k}"));
        if k % 2 == 0 {
            h.append(e).await.unwrap();
        } else {
            let mut cmd = PeerCommand::Append(e);
            loop {
                match h.try_command(cmd) {
                    Ok(()) => break,
                    Err(tether_tokio::TryCommandError::Full(c)) => {
                        cmd = c;
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
}

/// A program that disconnects formally, shuts its driver down and exits at once (here: its
/// runtime is shut down, which drops every task left) still reaches its server: `shutdown`
/// returns once the socket tasks have written what was queued and closed.
#[test]
fn a_formal_disconnection_reaches_the_server_before_shutdown_returns() {
    use tether::connect::merge::MergeServerEvent;
    use tether::peer::PeerEvent;
    use tether::session::EndReason;
    common::trace();
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let (addr, server_events) = server_rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (server, events) = tether_tokio::spawn(common::server_peer(93), Server::tcp(listener));
        std::mem::forget(server); // the server runs for the whole test
        (addr, common::Recorder::start(events))
    });
    // The client, on a runtime of its own that ends with it.
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(async {
        let (client, mut events) = tether_tokio::spawn(common::client_peer(94), Client::tcp(addr));
        while let Some(e) = events.recv().await {
            if matches!(e, PeerEvent::Connection(tether::session::Event::Up { .. })) {
                break;
            }
        }
        client.disconnect().await.unwrap();
        client.shutdown().await.unwrap();
    });
    client_rt.shutdown_background(); // the program exits: every task left is dropped
    let ended = server_rt.block_on(wait_until(Duration::from_secs(10), || async {
        server_events.count(|e| {
            matches!(
                e,
                PeerEvent::Connection(MergeServerEvent::Ended {
                    reason: EndReason::PeerDisconnect,
                    ..
                })
            )
        }) == 1
    }));
    assert!(ended, "the server saw the client's formal disconnection");
}
