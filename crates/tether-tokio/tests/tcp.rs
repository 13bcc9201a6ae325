//! TCP `main` through the adapter: a token-merge client and server `Peer`, cut by the
//! client and then by the server; the session resumes each time, and the entries appended
//! before, during and after the cuts arrive exactly once.

mod common;

use tether_tokio::{Client, Server};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_cut_resumes_and_loses_nothing() {
    common::trace();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let run = common::merge_cut_resume(Server::tcp(listener), Client::tcp(addr), 11);
    tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .expect("within its bound");
}

/// A dial that fails is reported as `Opened` then `Closed`, and the machine's own
/// backoff dials again (the adapter adds no retry): once the server listens, the client
/// connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_dials_are_reported_and_the_machine_retries() {
    common::trace();
    // A port with nobody on it (bound, then freed).
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (client, _events) = tether_tokio::spawn(common::client_peer(3), Client::tcp(addr));
    let failed = common::wait_until(std::time::Duration::from_secs(5), || async {
        client.stats().await.unwrap().dial_failures >= 2
    })
    .await;
    assert!(failed, "the machine dialed again after a failure");
    assert_eq!(client.stats().await.unwrap().refused_inputs, 0);
    let listener = TcpListener::bind(addr).await.unwrap();
    let (_server, _sev) = tether_tokio::spawn(common::server_peer(4), Server::tcp(listener));
    let up = common::wait_until(std::time::Duration::from_secs(5), || async {
        client
            .with_machine(|m| m.sessions().any(|(_, up)| up))
            .await
            .unwrap()
    })
    .await;
    assert!(up, "connected once the server listens");
}
