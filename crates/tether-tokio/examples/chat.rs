//! A shared chat log: a server and its clients keep one journal in sync over TCP, with
//! the token-merge connection profile and journal sync ([`Peer`]), run by tether-tokio.
//! Each message is a journal entry (author: the client's name, a resource id minted by
//! `Handle::publish`, the text). The server's journal and its sessions live in a SQLite file
//! (tether-sqlite), saved every round before the round's bytes leave, so a server
//! restarted on its file resumes its clients' sessions.
//!
//! ```sh
//! # The self-check (what CI runs): a server and three clients in one process, one of
//! # them cut while messages flow; every journal ends with every message, once.
//! cargo run -p tether-tokio --example chat
//! # A server, forever, printing each entry as it arrives (default file: chat.db).
//! cargo run -p tether-tokio --example chat -- serve 127.0.0.1:7000 chat.db
//! # A client: each stdin line is posted as NAME; what the others post is printed.
//! cargo run -p tether-tokio --example chat -- join 127.0.0.1:7000 alice
//! ```

use tether::sync::journal::{JournalStore, MemJournal};
use tether::{wire::Entry, Instant, Machine, MergeClient, MergeServer, Peer};
use tether_sqlite::{sessions::DurableSessions, SqliteJournal};
use tether_tokio::{random, spawn_saving, Client, Events, Handle, Options, Server};
use tokio::{io::AsyncBufReadExt, net::TcpListener};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;
type Ends<M> = (Handle<M>, Events<<M as Machine>::Event>);

/// Prints the `entries` not written by `me` (bytes from the network, escaped), and moves
/// `*next` past them all.
fn show(entries: Vec<Entry>, next: &mut u64, me: &[u8]) {
    *next += entries.len() as u64;
    for e in entries.iter().filter(|e| *e.author != *me) {
        println!("{}: {}", e.author.escape_ascii(), e.payload.escape_ascii());
    }
}

/// The server, its journal and sessions in the file `db`; the sessions are saved after
/// every round, before the round's bytes leave, so a restarted server resumes them.
fn server(l: Server, db: &str) -> Res<Ends<Peer<MergeServer<random::Tokens>, SqliteJournal>>> {
    let c = MergeServer::new(Default::default(), random::Tokens); // token-merge
    let mut peer = Peer::new(c, Default::default(), SqliteJournal::open(db, random::u64)?);
    let mut sessions = DurableSessions::new();
    sessions.restore(&mut peer, Instant::ZERO)?;
    let save = move |p: &mut _, now| sessions.save(p, now);
    Ok(spawn_saving(peer, l, Options::default(), save))
}
fn client(addr: impl ToString) -> Res<Ends<Peer<MergeClient, MemJournal>>> {
    let c = MergeClient::new(Instant::ZERO, Default::default(), random::token())?;
    let journal = MemJournal::new(random::u64(), 1 << 20);
    let peer = Peer::new(c, Default::default(), journal);
    Ok(tether_tokio::spawn(peer, Client::tcp(addr)))
}

async fn serve(addr: &str, db: Option<&String>) -> Res {
    let l = Server::tcp(TcpListener::bind(addr).await?);
    let ((h, mut events), mut next) = (server(l, db.map_or("chat.db", |d| d))?, 1);
    loop {
        events.recv().await; // then print what it brought (`Gone` once the server stops)
        show(h.entries(next).await?, &mut next, b"");
    }
}
/// Posts each stdin line as `name` and prints what the others post (on after stdin ends).
async fn join(addr: &str, name: &str) -> Res {
    let ((h, mut events), mut next) = (client(addr)?, 1);
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            Ok(Some(text)) = stdin.next_line() => drop(h.publish(name, text).await??),
            _ = events.recv() => show(h.entries(next).await?, &mut next, name.as_bytes()),
        }
    }
}

/// Three clients post 4 messages each, client0 is cut while they do; then the server and
/// every client must hold the 12 entries, each once.
async fn check() -> Res {
    let dir = tempfile::tempdir()?;
    let l = Server::tcp(TcpListener::bind("127.0.0.1:0").await?);
    let addr = l.local_addr()?;
    let (srv, _) = server(l, &dir.path().join("chat.db").to_string_lossy())?;
    let (mut clients, mut posted) = ([client(addr)?, client(addr)?, client(addr)?], vec![]);
    for (k, c) in (0..12).map(|i| (i / 3, i % 3)) {
        let (h, events) = &mut clients[c];
        if (c, k) == (0, 2) {
            h.until(events, |m| m.sessions().any(|(_, up)| up)).await?;
            h.cut_transports().await?;
        }
        posted.push(h.publish(format!("client{c}"), format!("hi {k}")).await??);
    }
    let same = |j: Vec<Entry>| j.len() == 12 && posted.iter().all(|e| j.contains(e));
    let mut ok = true;
    for (h, events) in &mut clients {
        h.until(events, |m| m.store().head() >= 12).await?;
        ok &= same(h.entries(1).await?);
    }
    ok &= same(srv.entries(1).await?); // every entry passed through it
    ok.then_some(()).ok_or("a journal is not the 12 entries")?;
    println!("ok: the server and the 3 clients hold the 12 entries, each once");
    Ok(())
}

#[tokio::main]
async fn main() -> Res {
    match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => tokio::time::timeout(std::time::Duration::from_secs(30), check()).await?,
        [m, addr, db @ ..] if m == "serve" && db.len() < 2 => serve(addr, db.first()).await,
        [m, addr, name] if m == "join" => join(addr, name).await,
        _ => Err("usage: chat [serve ADDR [DB_PATH] | join ADDR NAME]".into()),
    }
}
