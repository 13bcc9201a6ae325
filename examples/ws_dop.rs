//! tether's token-merge connection over WebSocket, in dop's encoding, on the tokio adapter
//! (`tether-tokio`).
//!
//! What it shows: the machines in dop's wire mode (`Encoding::Dop`: bare 16-character
//! tokens, the merged token to resume and to disconnect) run by `tether_tokio::spawn` over
//! `Server::ws` / `Client::ws` with `WsEncoding::Text` (each token and application message
//! one WebSocket text message), so a dop JavaScript peer can be either end. All the code
//! here is the application's: print events, echo, send lines.
//!
//! Three ways to run it:
//!
//! - `cargo run --example ws_dop`: a self-check, server and client in this one process over
//!   loopback, printing every event of both:
//!   1. the client connects (both sides send their token twice, both hold the merged
//!      token); a message queued before the connection goes out;
//!   2. application messages flow both ways (the server echoes);
//!   3. the network drops the connection (`Handle::cut_transports` on the server: no close
//!      frame); the client sees it go down and queues a message;
//!   4. the client reconnects after its backoff and resumes the session by sending the
//!      merged token; the queued message follows, and its echo comes back;
//!   5. the client disconnects formally (sends the merged token); the server ends the
//!      session and forgets it (none left in its registry).
//!
//!   It exits 0 when every step happened, 1 otherwise, and gives up after 30 seconds.
//! - `cargo run --example ws_dop -- serve 127.0.0.1:PORT`: a standalone echo server
//!   (printing what arrives, answering `echo: <message>`), until killed.
//! - `cargo run --example ws_dop -- connect ws://HOST:PORT/dop`: a standalone client:
//!   each line of stdin is one message, what arrives is printed; it reconnects and resumes
//!   by itself after a drop (backoff from 300 ms up to 30 s, for an hour at most; a server
//!   that forgot the session, restarted, gives a fresh one, and what was queued goes
//!   there); at the end of stdin it disconnects formally (what could not be sent yet is
//!   printed as undelivered) and exits.
//!
//! A dop JavaScript client (dop at 148f612 with dop-transports at 6797f98) points at the
//! `serve` mode with dop-transports' ws connector and the URL `serve` prints (its default,
//! without `url`, is `ws://localhost:4444/` + `dop.name`, that is `ws://localhost:4444/dop`;
//! the server accepts any path):
//!
//! ```js
//! const dop = require('dop')
//! const transports = require('dop-transports')
//! const client = dop.connect({ transport: transports.connect.ws, url: 'ws://127.0.0.1:PORT/dop' })
//! ```

use std::hash::BuildHasher;
use tether::connect::merge::{self, Encoding, MergeClient, MergeClientCommand as Cmd};
use tether::connect::merge::{MergeClientEvent, MergeServer, MergeServerCommand as SCmd};
use tether::{wire::Message, Duration, Event, Machine, Outcome, Token};
use tether_tokio::{Client, Events, Handle, Server, WsEncoding};
use tokio::{io::AsyncBufReadExt, net::TcpListener, task::JoinHandle, time::timeout};

/// A dop token: 16 characters of `[A-Za-z0-9]`. tether draws no randomness of its own; this
/// example takes it from std's randomly keyed hasher (use a CSPRNG such as `getrandom` in a
/// real server).
fn dop_token() -> Token {
    let chars = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let state = std::collections::hash_map::RandomState::new();
    let token: [u8; 16] = std::array::from_fn(|i| chars[(state.hash_one(i) % 62) as usize]);
    Token::new(&token).expect("16 characters make a token")
}

type EchoServer = Handle<MergeServer<fn() -> Token>>;
type ClientEvents = Events<MergeClientEvent>;

/// The echo server: prints every event and answers each message with `echo: <message>`.
/// With `once`, its loop (the task) ends after the first session ends.
fn serve(listener: TcpListener, once: bool) -> (EchoServer, JoinHandle<()>) {
    let config = merge::MergeServerConfig {
        encoding: Encoding::Dop,
        ..Default::default()
    };
    let server = MergeServer::new(config, dop_token as fn() -> Token);
    let (handle, mut events) = tether_tokio::spawn(server, Server::ws(listener, WsEncoding::Text));
    let server = handle.clone();
    let echo = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            println!("[server] {event:?}");
            match event {
                Event::Message { session, message } => {
                    let Message::App(m) = message else { continue };
                    let message =
                        Message::App(format!("echo: {}", String::from_utf8_lossy(&m)).into());
                    let _ = server.command(SCmd::Send { session, message }).await;
                }
                Event::Ended { .. } if once => break,
                _ => {}
            }
        }
    });
    (handle, echo)
}

/// The client: it reconnects and resumes by itself (backoff from 300 ms to 30 s, for an
/// hour at most).
fn connect(url: &str) -> (Handle<MergeClient>, ClientEvents) {
    let config = merge::MergeClientConfig {
        encoding: Encoding::Dop,
        reconnect_initial: Duration::from_millis(300),
        give_up_after: Duration::from_secs(3600),
        ..Default::default()
    };
    let client = MergeClient::new(tether::Instant::ZERO, config, dop_token()).expect("a token");
    tether_tokio::spawn(client, Client::ws(url, WsEncoding::Text))
}

/// Prints the client's events until one matches (`None`: the driver stopped).
async fn until(events: &mut ClientEvents, want: impl Fn(&MergeClientEvent) -> bool) -> Option<()> {
    while let Some(event) = events.recv().await {
        println!("[client] {event:?}");
        if want(&event) {
            return Some(());
        }
    }
    None
}

fn up(want: Outcome) -> impl Fn(&MergeClientEvent) -> bool {
    move |e| matches!(e, Event::Up { outcome, .. } if *outcome == want)
}

fn echo_of(text: &str) -> impl Fn(&MergeClientEvent) -> bool {
    let echo = format!("echo: {text}");
    move |e| matches!(e, Event::Message { message: Message::App(m), .. } if *m == echo)
}

/// The self-check: every step, in order, within 30 s.
async fn self_check() -> Option<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await.ok()?;
    let url = format!("ws://{}/dop", listener.local_addr().ok()?);
    println!("ws_dop: tether server (dop's encoding) at {url}\n\n-- 1. connect");
    let (server, served) = serve(listener, true);
    let (client, mut events) = connect(&url);
    let send = |text: &'static str| client.command(Cmd::Send(Message::App(text.into())));
    send("queued before the first connection").await.ok()?;
    until(&mut events, up(Outcome::Fresh)).await?;
    until(&mut events, echo_of("queued before the first connection")).await?;
    println!("\n-- 2. messages");
    send("hello-before-drop").await.ok()?;
    until(&mut events, echo_of("hello-before-drop")).await?;
    println!("\n-- 3. the network drops the connection (cut on the server)");
    (server.cut_transports().await.ok()? == 1).then_some(())?;
    until(&mut events, |e| matches!(e, Event::Down { .. })).await?;
    println!("\n-- 4. a message sent while down, the session resumed");
    send("hello-while-down").await.ok()?;
    until(&mut events, up(Outcome::Resumed)).await?;
    until(&mut events, echo_of("hello-while-down")).await?;
    println!("\n-- 5. formal disconnection");
    client.command(Cmd::Disconnect).await.ok()?;
    until(&mut events, |e| matches!(e, Event::Ended { .. })).await?;
    served.await.ok()?; // the server's session ended too
    (server.with_machine(|m| m.session_count()).await.ok()? == 0).then_some(())?;
    println!("\nws_dop: connected, echoed, cut, resumed, ended, forgotten: ok");
    Some(())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let error = match (args.get(1).map(String::as_str), args.get(2)) {
        (None, _) => match timeout(std::time::Duration::from_secs(30), self_check()).await {
            Ok(Some(())) => return,
            _ => "a step did not happen (or not within 30 s)".to_string(),
        },
        (Some("serve"), Some(addr)) => match TcpListener::bind(addr).await {
            Ok(listener) => {
                println!("ws_dop: echo server (dop's encoding) at ws://{addr}/dop");
                format!("the server stopped: {:?}", serve(listener, false).1.await)
            }
            Err(e) => format!("cannot listen on {addr}: {e}"),
        },
        (Some("connect"), Some(url)) => {
            let (client, mut events) = connect(url);
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            let input = client.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = input.command(Cmd::Send(Message::App(line.into()))).await;
                }
                let _ = input.command(Cmd::Disconnect).await;
            });
            // A session that expired on the server is followed by a fresh one; the client
            // ends with its machine (stdin's end, or giving up).
            while let Some(()) = until(&mut events, |e| matches!(e, Event::Ended { .. })).await {
                if client.with_machine(|m| m.is_closed()).await.unwrap_or(true) {
                    break;
                }
            }
            // `shutdown` returns once the merged token and the close frame are written.
            let _ = client.shutdown().await;
            std::process::exit(0); // not a return: the runtime would wait for stdin's read
        }
        _ => "usage: ws_dop [serve 127.0.0.1:PORT | connect ws://HOST:PORT/dop]".to_string(),
    };
    eprintln!("ws_dop: {error}");
    std::process::exit(1);
}
