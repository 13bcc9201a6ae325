//! TLS through the adapter (tokio-rustls on ring, rcgen certificates made at run time):
//! TCP + TLS and WebSocket + TLS (`wss`), each cut twice and resumed, nothing lost.

mod common;

use std::time::Duration;
use tether_tokio::{Client, Server, WsEncoding};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_tls_cut_resumes_and_loses_nothing() {
    common::trace();
    let (server_tls, client_tls) = common::tls_configs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let run = common::merge_cut_resume(
        Server::tcp(listener).tls(server_tls),
        Client::tcp(addr).tls(client_tls, "localhost".try_into().unwrap()),
        41,
    );
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("within its bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_cut_resumes_and_loses_nothing() {
    common::trace();
    let (server_tls, client_tls) = common::tls_configs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "wss://localhost:{}/tether",
        listener.local_addr().unwrap().port()
    );
    let run = common::merge_cut_resume(
        Server::ws(listener, WsEncoding::Binary).tls(server_tls),
        Client::ws(url, WsEncoding::Binary).tls(client_tls, "localhost".try_into().unwrap()),
        51,
    );
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("within its bound");
}

/// A client that does not trust the server's certificate never gets a transport: each
/// dial fails (reported `Opened` + `Closed`) and nothing reaches the server's machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_the_dial() {
    common::trace();
    let (server_tls, _) = common::tls_configs();
    let (_, other_client_tls) = common::tls_configs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (server, _sev) = tether_tokio::spawn(
        common::server_peer(61),
        Server::tcp(listener).tls(server_tls),
    );
    let (client, _cev) = tether_tokio::spawn(
        common::client_peer(62),
        Client::tcp(addr).tls(other_client_tls, "localhost".try_into().unwrap()),
    );
    let failed = common::wait_until(Duration::from_secs(5), || async {
        client.stats().await.unwrap().dial_failures >= 2
    })
    .await;
    assert!(failed);
    assert_eq!(server.stats().await.unwrap().opened, 0);
}
