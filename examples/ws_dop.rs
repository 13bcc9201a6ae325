//! tether's token-merge connection over WebSocket, in dop's encoding, with tokio and
//! tokio-tungstenite.
//!
//! What it shows: the whole adapter between tether's sans-IO machines and real WebSockets
//! is one small driver loop (`examples/support/ws_driver.rs`): each WebSocket text message
//! is one `Input::Received` on the link, each `Output::Transmit` one text message. The
//! machines speak dop's wire (bare 16-character tokens, the merged token to resume and to
//! disconnect), so a dop JavaScript peer can be either end.
//!
//! The run, server and client in this one process over loopback, printing every text
//! message on the wire (`wire C ->` is the client sending, `wire S <-` the server receiving):
//!
//! 1. the client connects: both sides send their token twice, both hold the merged token;
//! 2. application messages flow both ways (the server echoes);
//! 3. the network drops the TCP connection (no close frame);
//! 4. the client queues a message while down, reconnects after its backoff and resumes the
//!    session by sending the merged token; the queued message follows;
//! 5. the client disconnects formally (sends the merged token), and the server forgets it.
//!
//! Run it: `cargo run --example ws_dop`. It exits 0 when every step happened, 1 otherwise,
//! and gives up after 30 seconds.
//!
//! A dop JavaScript client (dop at 148f612 with dop-transports at 6797f98) points at this
//! server with dop-transports' ws connector, whose default URL is
//! `ws://localhost:4444/` + `dop.name`, that is `ws://localhost:4444/dop`:
//!
//! ```js
//! const dop = require('dop')
//! const transports = require('dop-transports')
//! const client = dop.connect({ transport: transports.connect.ws, url: 'ws://127.0.0.1:PORT/dop' })
//! ```
//!
//! with PORT the one this example prints (any path is accepted; `/dop` is dop's).

#[path = "support/ws_driver.rs"]
mod ws_driver;

use bytes::Bytes;
use std::hash::{BuildHasher, Hasher};
use tether::connect::merge::{
    self, Encoding, MergeClient, MergeClientCommand, MergeClientEvent, MergeServer,
    MergeServerCommand, MergeServerEvent, Outcome,
};
use tether::wire::Message;
use tether::{Duration, Token};
use ws_driver::{Driver, Role};

/// A dop token: 16 characters of `[A-Za-z0-9]`. tether draws no randomness of its own; this
/// example takes it from std's randomly keyed hasher (use a CSPRNG such as `getrandom` in a
/// real server).
fn dop_token() -> Token {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let mut out = [0u8; 16];
    for (i, c) in out.iter_mut().enumerate() {
        h.write_usize(i);
        *c = ALPHABET[(h.finish() % ALPHABET.len() as u64) as usize];
    }
    Token::new(&out).expect("16 characters make a token")
}

fn text(message: &Message) -> String {
    match message {
        Message::App(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

type ServerDriver = Driver<MergeServer<fn() -> Token>>;
type ClientDriver = Driver<MergeClient>;

/// The server's loop: prints its events and echoes every message, until a session ends
/// formally. Returns whether it saw a fresh session, its resumption and its end.
async fn serve(mut server: ServerDriver) -> bool {
    let (mut fresh, mut resumed) = (false, false);
    loop {
        for event in server.turn().await {
            match &event {
                MergeServerEvent::Up { outcome, .. } => {
                    fresh |= *outcome == Outcome::Fresh;
                    resumed |= *outcome == Outcome::Resumed;
                }
                MergeServerEvent::Ended { reason, .. } => {
                    println!("[server] {event:?}");
                    return fresh && resumed && *reason == merge::EndReason::PeerDisconnect;
                }
                _ => {}
            }
            match event {
                MergeServerEvent::Message { session, message } => {
                    println!("[server] {session:?} says {:?}", text(&message));
                    let reply = Message::App(Bytes::from(format!("echo: {}", text(&message))));
                    server.command(MergeServerCommand::Send {
                        session,
                        message: reply,
                    });
                }
                other => println!("[server] {other:?}"),
            }
        }
    }
}

/// Prints the client's events; says whether one matched `want`.
fn show(events: Vec<MergeClientEvent>, want: &impl Fn(&MergeClientEvent) -> bool) -> bool {
    let mut matched = false;
    for event in events {
        match &event {
            MergeClientEvent::Message { message: m, .. } => println!("[client] got {:?}", text(m)),
            other => println!("[client] {other:?}"),
        }
        matched |= want(&event);
    }
    matched
}

/// Turns the client until an event matches `want`.
async fn until(client: &mut ClientDriver, want: impl Fn(&MergeClientEvent) -> bool) {
    while !show(client.turn().await, &want) {}
}

fn send(client: &mut ClientDriver, s: &str) {
    println!("[client] sends {s:?}");
    let events = client.command(MergeClientCommand::Send(Message::App(Bytes::from(
        s.to_owned(),
    ))));
    show(events, &|_| false);
}

fn is_echo(of: &'static str) -> impl Fn(&MergeClientEvent) -> bool {
    move |e| matches!(e, MergeClientEvent::Message { message: m, .. } if text(m) == format!("echo: {of}"))
}

async fn scenario() -> bool {
    let epoch = tokio::time::Instant::now();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("ws://{}/dop", listener.local_addr().expect("local addr"));
    println!("ws_dop: tether server (dop's encoding) at {url}");

    let server = MergeServer::new(
        merge::MergeServerConfig {
            encoding: Encoding::Dop,
            ..Default::default()
        },
        dop_token as fn() -> Token,
    );
    let server = Driver::new(server, Role::Server { listener }, epoch, "S");
    let server_task = tokio::spawn(serve(server));

    let client = MergeClient::new(
        tether::Instant::ZERO,
        merge::MergeClientConfig {
            encoding: Encoding::Dop,
            reconnect_initial: Duration::from_millis(300),
            ..Default::default()
        },
        dop_token(),
    )
    .expect("a dop token");
    let mut client = Driver::new(client, Role::Client { url }, epoch, "C");
    // The client's first output asks for a transport.
    client.command(MergeClientCommand::Send(Message::App(Bytes::from_static(
        b"queued before the first connection",
    ))));

    println!("\n-- 1. connect");
    until(&mut client, |e| {
        matches!(
            e,
            MergeClientEvent::Up {
                session: (),
                outcome: Outcome::Fresh
            }
        )
    })
    .await;
    until(&mut client, is_echo("queued before the first connection")).await;

    println!("\n-- 2. messages");
    send(&mut client, "hello-before-drop");
    until(&mut client, is_echo("hello-before-drop")).await;

    println!("\n-- 3. the network drops the connection");
    client.drop_transports();
    until(&mut client, |e| {
        matches!(e, MergeClientEvent::Down { session: () })
    })
    .await;
    send(&mut client, "hello-while-down");
    println!("[client] {} message(s) queued", client.machine.queued());

    println!("\n-- 4. resume");
    until(&mut client, |e| {
        matches!(
            e,
            MergeClientEvent::Up {
                session: (),
                outcome: Outcome::Resumed
            }
        )
    })
    .await;
    until(&mut client, is_echo("hello-while-down")).await;
    send(&mut client, "hello-after-resume");
    until(&mut client, is_echo("hello-after-resume")).await;

    println!("\n-- 5. formal disconnection");
    // The client ends at once (the event comes with the command); the server learns it
    // from the merged token on the wire.
    let ended = |e: &MergeClientEvent| matches!(e, MergeClientEvent::Ended { .. });
    if !show(client.command(MergeClientCommand::Disconnect), &ended) {
        until(&mut client, ended).await;
    }
    server_task.await.unwrap_or(false)
}

#[tokio::main]
async fn main() {
    match tokio::time::timeout(std::time::Duration::from_secs(30), scenario()).await {
        Ok(true) => println!("\nws_dop: connect, drop, resume, messages and disconnection: ok"),
        Ok(false) => {
            eprintln!("ws_dop: the server did not see a fresh session, its resumption and its end");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("ws_dop: timed out");
            std::process::exit(1);
        }
    }
}
