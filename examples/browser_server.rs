//! The server side of tether's browser test (`browser/`): a token-merge server `Peer`
//! (journal sync over `MemJournal`) accepting WebSockets in binary mode, plus a tiny HTTP
//! responder for the page, `driver.js` and the `.wasm`, both on loopback.
//!
//! It prints one line of JSON with its addresses, then plays the server's part of the
//! scenario with the browser client (`browser/index.html`):
//!
//! 1. it holds entries `server/s0..s2` from the start; the client connects (a fresh
//!    session) and appends `browser/c0..c2`;
//! 2. once the first sync is through both ways (the server holds the client's three
//!    entries, and the client confirmed the server's three), it appends `s3` and at once
//!    **kills the client's socket**: the TCP connection just ends, no close frame (`s3` may
//!    or may not have left: the session's replay covers it either way);
//! 3. it appends `s4` while the client is down (the client appends `c3`, `c4`);
//! 4. the client reconnects and **resumes** the same session; the entries of the cut
//!    cross; once the server holds all ten and the client confirmed every server entry,
//!    it prints a final line of JSON (`"final": true`, its journal, what it saw) and exits
//!    5 s later (0 if the scenario held: one fresh session, resumed, every client entry
//!    applied exactly once; 1 otherwise, or after 120 s without completion).
//!
//! Run it: `cargo run --example browser_server`, then open the `page` URL it prints in a
//! browser (`browser/test.mjs` does that in headless Chromium). The files it serves are
//! read at each request from `browser/` (or `$TETHER_BROWSER_DIR`), the wasm from
//! `browser/target/wasm/wasm32-unknown-unknown/release/` (or `$TETHER_BROWSER_WASM`).
//!
//! The tether glue is [`Glue`] and `main`'s loop; the sockets are tether-tokio's
//! (`Server::ws` in binary mode: tether's own encoding, one message per transmit).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use tether::connect::merge::{MergeServer, MergeServerEvent, Outcome, SessionId};
use tether::peer::{Peer, PeerCommand, PeerEvent};
use tether::sync::journal::{JournalStore, MemJournal, SyncConfig, SyncEvent};
use tether::wire::Entry;
use tether::{Machine, Token};
use tether_tokio::{Server, WsEncoding};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Entries each side appends before the cut, and while the client is down (the page has
/// the same numbers: `browser/index.html`).
const BEFORE_CUT: usize = 3;
const WHILE_DOWN: usize = 2;
/// Entries both journals hold at the end.
const ALL: usize = 2 * (BEFORE_CUT + WHILE_DOWN);

/// 128-bit tokens from std's randomly keyed hasher (a real server uses a CSPRNG such as
/// `getrandom`: tether draws no randomness of its own).
fn random_token() -> Token {
    let state = std::collections::hash_map::RandomState::new();
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    Token::new(&bytes).expect("16 bytes make a token")
}

type ServerPeer = Peer<MergeServer<fn() -> Token>, MemJournal>;
type ServerEvent = PeerEvent<MergeServerEvent, SessionId>;

/// Where the scenario stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first sync to go through both ways.
    First,
    /// The socket was killed; waiting for the resumption and the entries of the cut.
    Cut,
    /// Everything arrived.
    Done,
}

/// Everything the server knows of tether: what it saw, and what to do next. (A port onto
/// another adapter keeps this and swaps the driver.)
#[derive(Clone)]
struct Glue {
    phase: Phase,
    fresh: Vec<SessionId>,
    resumed: Vec<SessionId>,
    /// Client entries applied here, and how many times each.
    applied: BTreeMap<(String, String), u32>,
}

impl Glue {
    fn server() -> ServerPeer {
        let mut peer = Peer::new(
            MergeServer::new(Default::default(), random_token as fn() -> Token),
            SyncConfig::default(),
            MemJournal::new(1, 10_000),
        );
        for i in 0..BEFORE_CUT {
            append(&mut peer, i);
        }
        peer
    }

    fn see(&mut self, event: &ServerEvent) {
        match event {
            PeerEvent::Connection(MergeServerEvent::Up { session, outcome }) => match outcome {
                Outcome::Fresh => self.fresh.push(*session),
                Outcome::Resumed => self.resumed.push(*session),
            },
            PeerEvent::Sync(
                _,
                SyncEvent::Applied {
                    author, resource, ..
                },
            ) => {
                let key = (lossy(author), lossy(resource));
                *self.applied.entry(key).or_insert(0) += 1;
            }
            _ => {}
        }
    }

    /// The client holds every server entry up to the last: its mark of our journal
    /// reaches the line of our latest own entry.
    fn client_caught_up(&self, peer: &ServerPeer) -> bool {
        let Some(session) = self.fresh.first() else {
            return false;
        };
        let last_own = peer
            .store()
            .entries()
            .iter()
            .rposition(|e| &e.author[..] == b"server")
            .map_or(0, |i| i as u64 + 1);
        let theirs = peer.marks(*session).and_then(|m| m.theirs);
        theirs.is_some_and(|line| line.seq >= last_own)
    }

    fn holds_client(peer: &ServerPeer, n: usize) -> bool {
        (0..n).all(|i| {
            peer.store()
                .contains(b"browser", format!("c{i}").as_bytes())
        })
    }

    fn ok(&self, peer: &ServerPeer) -> bool {
        let same = self.fresh.len() == 1 && self.resumed.iter().all(|s| *s == self.fresh[0]);
        same && !self.resumed.is_empty()
            && peer.store().entries().len() == ALL
            && self.applied.len() == BEFORE_CUT + WHILE_DOWN
            && self.applied.values().all(|&n| n == 1)
    }

    fn final_line(&self, peer: &ServerPeer) -> String {
        let journal: Vec<String> = peer
            .store()
            .entries()
            .iter()
            .map(|e| {
                format!(
                    "[{},{}]",
                    json(&lossy(&e.author)),
                    json(&lossy(&e.resource))
                )
            })
            .collect();
        let duplicates: Vec<String> = self
            .applied
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|((a, r), _)| json(&format!("{a}/{r}")))
            .collect();
        format!(
            "{{\"final\":true,\"ok\":{},\"phase\":\"{:?}\",\"fresh\":{},\"resumed\":{},\"same_session\":{},\"applied_from_client\":{},\"duplicates\":[{}],\"journal\":[{}]}}",
            self.ok(peer),
            self.phase,
            self.fresh.len(),
            self.resumed.len(),
            self.fresh.len() == 1 && self.resumed.iter().all(|s| *s == self.fresh[0]),
            self.applied.len(),
            duplicates.join(","),
            journal.join(","),
        )
    }
}

/// Appends `server/s{i}` before the driver runs (time zero: the driver's start).
fn append(peer: &mut ServerPeer, i: usize) {
    let input = tether::Input::Command(PeerCommand::Append(entry(i)));
    if let Err(e) = peer.handle_input(tether::Instant::ZERO, input) {
        eprintln!("browser_server: append s{i}: {e}");
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A JSON string literal.
fn json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The files the page needs, and nothing else: (URL path, file, content type).
fn files() -> Vec<(&'static str, PathBuf, &'static str)> {
    let dir = std::env::var_os("TETHER_BROWSER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/browser")));
    let wasm = std::env::var_os("TETHER_BROWSER_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            dir.join("target/wasm/wasm32-unknown-unknown/release/tether_browser.wasm")
        });
    vec![
        (
            "/index.html",
            dir.join("index.html"),
            "text/html; charset=utf-8",
        ),
        (
            "/driver.js",
            dir.join("driver.js"),
            "text/javascript; charset=utf-8",
        ),
        ("/tether_browser.wasm", wasm, "application/wasm"),
    ]
}

/// A tiny HTTP/1.1 responder: GET of the three files, one request per connection.
async fn serve_http(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            // Read the request head (bounded at 16 KiB); the body, if any, is ignored.
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf);
            let mut words = head.split_whitespace();
            let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let path = target.split('?').next().unwrap_or("");
            let path = if path == "/" { "/index.html" } else { path };
            let found = files().into_iter().find(|(p, _, _)| *p == path);
            let (status, kind, body) = match (method, found) {
                ("GET", Some((_, file, kind))) => match tokio::fs::read(&file).await {
                    Ok(body) => ("200 OK", kind, body),
                    Err(e) => (
                        "404 Not Found",
                        "text/plain",
                        format!("{}: {e}\n", file.display()).into_bytes(),
                    ),
                },
                ("GET", None) => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
                _ => ("405 Method Not Allowed", "text/plain", Vec::new()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let ws = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
    let http_addr = http.local_addr().expect("http addr");
    let ws_url = format!("ws://{}/", ws.local_addr().expect("ws addr"));
    tokio::spawn(serve_http(http));
    println!(
        "{{\"http\":\"http://{http_addr}/\",\"ws\":{},\"page\":\"http://{http_addr}/index.html?ws={}&expect={ALL}\"}}",
        json(&ws_url),
        ws_url.replace(':', "%3A").replace('/', "%2F"),
    );

    let (server, mut events) =
        tether_tokio::spawn(Glue::server(), Server::ws(ws, WsEncoding::Binary));
    let mut glue = Glue {
        phase: Phase::First,
        fresh: Vec::new(),
        resumed: Vec::new(),
        applied: BTreeMap::new(),
    };

    let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut stop_at = give_up;
    while let Ok(Some(event)) = tokio::time::timeout_at(stop_at, events.recv()).await {
        glue.see(&event);
        let wanted = match glue.phase {
            Phase::First => BEFORE_CUT,
            _ => BEFORE_CUT + WHILE_DOWN,
        };
        // The machine may be ahead of the events read so far: those it emitted before a
        // reading are in the channel already. Take them, and read again with the glue up
        // to date, until a reading finds no event it has not seen (else the last events
        // could be taken here, after a reading that did not count them, and none follow).
        let through = loop {
            let through = server.with_machine(through(&glue, wanted)).await == Ok(true);
            let mut more = false;
            while let Some(event) = events.try_recv() {
                glue.see(&event);
                more = true;
            }
            if !more {
                break through;
            }
        };
        match glue.phase {
            Phase::First if through => {
                eprintln!("browser_server: first sync through; killing the client's socket");
                // In this order on the driver's channel: s3 is transmitted (or not: the
                // cut may come first), the socket dies, s4 is appended while down.
                let _ = server.append(entry(BEFORE_CUT)).await;
                let _ = server.cut_transports().await;
                let _ = server.append(entry(BEFORE_CUT + 1)).await;
                glue.phase = Phase::Cut;
            }
            Phase::Cut if through && !glue.resumed.is_empty() => {
                glue.phase = Phase::Done;
                println!("{}", final_line(&server, &glue).await.0);
                stop_at = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            }
            _ => {}
        }
    }
    let (line, ok) = final_line(&server, &glue).await;
    if glue.phase != Phase::Done {
        println!("{line}");
        eprintln!("browser_server: the scenario did not complete in 120 s");
        std::process::exit(1);
    }
    std::process::exit(if ok { 0 } else { 1 });
}

/// Whether the server holds the client's first `n` entries and the client every server
/// entry, read in the driver task.
fn through(glue: &Glue, n: usize) -> impl FnOnce(&mut ServerPeer) -> bool + Send + 'static {
    let g = glue.clone();
    move |peer| Glue::holds_client(peer, n) && g.client_caught_up(peer)
}

/// The final line of JSON, and whether the scenario held, read in the driver task.
async fn final_line(server: &tether_tokio::Handle<ServerPeer>, glue: &Glue) -> (String, bool) {
    let g = glue.clone();
    let read = server.with_machine(move |peer| (g.final_line(peer), g.ok(peer)));
    read.await
        .unwrap_or_else(|_| ("{\"final\":true,\"ok\":false}".into(), false))
}

/// The entry `server/s{i}`.
fn entry(i: usize) -> Entry {
    Entry::new(b"server", format!("s{i}").as_bytes(), b"from the server")
}
