//! WebSocket `main` through the adapter: tether's binary encoding cut and resumed with
//! nothing lost, and the close handshake answered both ways (a raw tokio-tungstenite peer
//! sees a normal close, never 1006).

mod common;

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tether_tokio::{Client, Server, WsEncoding};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_binary_cut_resumes_and_loses_nothing() {
    common::trace();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/tether", listener.local_addr().unwrap());
    let run = common::merge_cut_resume(
        Server::ws(listener, WsEncoding::Binary),
        Client::ws(url, WsEncoding::Binary),
        21,
    );
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("within its bound");
}

/// Reads until the close frame; what came before it, the frame, and how the stream
/// ended after it (`None`: cleanly).
async fn until_close<S>(ws: &mut S) -> (usize, Option<CloseFrame>, Option<String>)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut before = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                // After the close frame the stream must end cleanly.
                let end = match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                    Ok(None) => None,
                    Ok(Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed))) => None,
                    other => Some(format!("{other:?}")),
                };
                return (before, frame, end);
            }
            Ok(Some(Ok(_))) => before += 1,
            other => panic!("the stream ended without a close frame: {other:?}"),
        }
    }
}

fn normal(frame: &Option<CloseFrame>) -> bool {
    match frame {
        None => true, // 1005: no status, a normal close
        Some(f) => f.code == CloseCode::Normal,
    }
}

/// A raw client closes; the adapter's server answers with a close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_answers_a_close_frame() {
    common::trace();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (server, _events) = tether_tokio::spawn(
        common::server_peer(31),
        Server::ws(listener, WsEncoding::Binary),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // The server offers its token on open: the transport is up in the machine.
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(
        matches!(first, Ok(Some(Ok(Message::Binary(_))))),
        "{first:?}"
    );
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let (_, frame, end) = until_close(&mut ws).await;
    assert!(normal(&frame), "a normal close answered: {frame:?}");
    assert_eq!(end, None, "then the stream ended cleanly");
    let closed = common::wait_until(Duration::from_secs(5), || async {
        server.stats().await.unwrap().closed_by_peer == 1
    })
    .await;
    assert!(closed, "the machine was told");
}

/// The adapter's server closes (its machine refuses garbage: CONN_FAILED, then
/// `Output::Close`); the raw client sees a close frame, 1000, after the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_closes_with_a_close_frame() {
    common::trace();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (server, _events) = tether_tokio::spawn(
        common::server_peer(32),
        Server::ws(listener, WsEncoding::Binary),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::Binary(bytes::Bytes::from_static(
        b"GET / HTTP/1.1\r\n\r\n",
    )))
    .await
    .unwrap();
    let (before, frame, end) = until_close(&mut ws).await;
    assert!(
        before >= 2,
        "the token and the refusal came first ({before})"
    );
    assert_eq!(
        frame.map(|f| f.code),
        Some(CloseCode::Normal),
        "a normal close"
    );
    assert_eq!(end, None, "and a clean end once answered");
    assert_eq!(server.stats().await.unwrap().closed_by_machine, 1);
}

/// A raw server closes; the adapter's client answers with a close frame (and its machine
/// then reconnects by itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_client_answers_a_close_frame() {
    common::trace();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (client, _events) =
        tether_tokio::spawn(common::client_peer(33), Client::ws(url, WsEncoding::Binary));
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    ws.send(Message::Close(None)).await.unwrap();
    let (_, frame, end) = until_close(&mut ws).await;
    assert!(normal(&frame), "a normal close answered: {frame:?}");
    assert_eq!(end, None, "then the stream ended cleanly");
    // The machine's backoff dials again.
    let again = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
    assert!(again.is_ok(), "the client reconnected");
    assert_eq!(client.stats().await.unwrap().closed_by_peer, 1);
}

/// dop's encoding over text messages: bare token-merge machines (no `Peer`), each token
/// and application message one text frame; a message goes up, the server's application
/// echoes it, and after a cut the client resumes and the echo of a message sent while
/// down comes back too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_text_carries_dops_encoding() {
    use tether::connect::merge::{
        Encoding, MergeClient, MergeClientCommand, MergeClientConfig, MergeClientEvent,
        MergeServer, MergeServerCommand, MergeServerConfig, MergeServerEvent, Outcome,
    };
    use tether::wire::Message as TetherMessage;
    common::trace();
    // dop's tokens: 16 characters of [A-Za-z0-9].
    fn dop_token(state: &mut u64) -> tether::Token {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut out = [0u8; 16];
        for b in &mut out {
            *b = ALPHABET[(common::splitmix64(state) % 62) as usize];
        }
        tether::Token::new(&out).unwrap()
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/dop", listener.local_addr().unwrap());
    let mut seed = 7u64;
    let server = MergeServer::new(
        MergeServerConfig {
            encoding: Encoding::Dop,
            ..Default::default()
        },
        move || dop_token(&mut seed),
    );
    let (server, mut sev) = tether_tokio::spawn(server, Server::ws(listener, WsEncoding::Text));
    tokio::spawn(async move {
        while let Some(e) = sev.recv().await {
            if let MergeServerEvent::Message { session, message } = e {
                let _ = server
                    .command(MergeServerCommand::Send { session, message })
                    .await;
            }
        }
    });
    let client = MergeClient::new(
        tether::Instant::ZERO,
        MergeClientConfig {
            encoding: Encoding::Dop,
            reconnect_initial: tether::Duration::from_millis(20),
            ..Default::default()
        },
        dop_token(&mut 99),
    )
    .unwrap();
    let (client, cev) = tether_tokio::spawn(client, Client::ws(url, WsEncoding::Text));
    let cev = common::Recorder::start(cev);
    let app = |s: &'static str| TetherMessage::App(bytes::Bytes::from_static(s.as_bytes()));
    let echoed = |s: &'static str| {
        let cev = cev.clone();
        move || {
            let n = cev.count(|e| matches!(e, MergeClientEvent::Message { message: TetherMessage::App(b), .. } if &b[..] == s.as_bytes()));
            async move { n == 1 }
        }
    };
    client
        .command(MergeClientCommand::Send(app("hello")))
        .await
        .unwrap();
    assert!(
        common::wait_until(Duration::from_secs(10), echoed("hello")).await,
        "echoed"
    );
    assert_eq!(client.cut_transports().await.unwrap(), 1);
    client
        .command(MergeClientCommand::Send(app("while down")))
        .await
        .unwrap();
    assert!(
        common::wait_until(Duration::from_secs(10), echoed("while down")).await,
        "queued while down, echoed after the resumption"
    );
    let resumed = cev.count(|e| {
        matches!(
            e,
            MergeClientEvent::Up {
                outcome: Outcome::Resumed,
                ..
            }
        )
    });
    assert_eq!(resumed, 1);
}
