//! A ready tokio adapter for [`tether`]'s machines: it turns any [`tether::Machine`] into
//! a running connection over TCP, UDP, WebSocket and TLS, with a cloneable `Send`
//! [`Handle`] and an [`Events`] receiver (the shape of rumqttc's client and event loop).
//!
//! The shortest program: a token-merge client [`Peer`](tether::peer::Peer) that keeps
//! its journal in sync with a server, across dropped connections, by itself.
//!
//! ```no_run
//! use tether::connect::merge::MergeClient;
//! use tether::peer::Peer;
//! use tether::sync::journal::{MemJournal, SyncConfig};
//! use tether::wire::Entry;
//! use tether::Instant;
//! use tether_tokio::random;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let token = random::token(); // 128 bits from the OS's randomness
//!     let conn = MergeClient::new(Instant::ZERO, Default::default(), token)?;
//!     let peer = Peer::new(conn, SyncConfig::default(), MemJournal::new(1, 10_000));
//!     let (handle, mut events) = tether_tokio::spawn(peer, tether_tokio::Client::tcp("127.0.0.1:7000"));
//!     handle.append(Entry::new(b"me", b"r1", b"hello")).await?;
//!     while let Some(event) = events.recv().await {
//!         println!("{event:?}"); // up (fresh or resumed), down, entries applied, ...
//!     }
//!     Ok(())
//! }
//! ```
//!
//! And its server, with a `feed` socket as well (for a dual-channel machine; the
//! token-merge server ignores it):
//!
//! ```no_run
//! use tether::connect::merge::MergeServer;
//! use tether::peer::Peer;
//! use tether::sync::journal::{MemJournal, SyncConfig};
//! use tether_tokio::random;
//! use tokio::net::TcpListener;
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let peer = Peer::new(MergeServer::new(Default::default(), random::Tokens), SyncConfig::default(), MemJournal::new(2, 10_000));
//!     let server = tether_tokio::Server::tcp(TcpListener::bind("127.0.0.1:7000").await?);
//!     let (_handle, mut events) = tether_tokio::spawn(peer, server);
//!     while let Some(event) = events.recv().await {
//!         println!("{event:?}");
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # What the adapter does
//!
//! | the machine says | the adapter does |
//! |---|---|
//! | `Open(Main)` (client) | dials (TCP, then TLS, then the WebSocket handshake, as configured; `TCP_NODELAY`; bounded by [`Options::handshake_timeout`]), then `Opened(link)`, or `Opened` + `Closed` if the dial failed. Every transport gets a fresh link id. It never retries on its own: the machine's backoff decides when to ask again |
//! | `Open(Feed)` (client) | binds a UDP socket connected to [`Client::feed`], then `Opened(link)` |
//! | `Transmit` on `main` | hands the payload whole to the transport's socket task (TCP: written as it is; WebSocket: one binary or text message, [`WsEncoding`]) |
//! | `Transmit` on `feed` | sends one datagram (dropped if the socket buffer is full: `feed` is lossy) |
//! | `Close(link)` | `Closed(link)` at once; the socket task writes what was queued, then closes (TCP: FIN, TLS: close_notify; WebSocket: a close frame, 1000, and the peer's awaited for [`Options::close_timeout`]) |
//! | `Wait(Some(t))` | a tokio sleep until the matching tokio instant, then `Timeout` |
//! | `Event(e)` | sent on the [`Events`] channel (and traced at debug level) |
//!
//! A [`Server`] accepts on its listener: each stream gets a fresh `Link::main(id)` and
//! `Opened` once its TLS and WebSocket upgrades are done. Reads become `Received`, one per
//! read chunk on TCP (tether's frame decoder does not care where reads split), one per
//! message on a WebSocket, one per datagram on UDP. A stream that ends (EOF, error, the
//! peer's close frame, which is answered) is `Closed`. A server's `feed` socket maps each
//! source address to a `feed` link of its own, within a bound ([`Server::max_feed_peers`]).
//!
//! # Tasks and time
//!
//! One driver task per machine, started with `tokio::spawn` (so [`spawn`] must be called
//! inside a tokio runtime; the multi-thread one is fine, the machine is `Send`): the
//! machine is only ever touched there. Each transport has a socket task of its own (its
//! dial or upgrade, its reads and writes); the accept loop and each UDP socket's reader
//! too. The driver's `select!` waits only on channel receives and a sleep, which are
//! cancel-safe. tether's `now` is the time since [`Options::start`] (by default, the call
//! to [`spawn`]: create the machine with `Instant::ZERO`).
//!
//! # Back-pressure and bounds
//!
//! Every channel is bounded ([`Options`]): an application that does not read its
//! [`Events`] pauses the driver (nothing is dropped); a transport whose peer does not read
//! is cut past [`Options::max_unwritten`] bytes (the machine resumes it as after a loss).
//!
//! # Tracing
//!
//! The adapter emits [`tracing`] events itself, in a span per driver (`tether`, with the
//! [`Options::name`] and the side) and a span per transport (`transport`, with its link id
//! and address): dials and their failures (info), transports opened and closed and by whom
//! (info), cuts and refused inputs (warn), the `feed` map (debug). The machine's events are
//! emitted as they are, with their `Debug` form, at debug level: whether an event is a
//! resumption, a loss, a heartbeat timeout, a refusal or sync progress is in that form
//! (`Up { outcome: Resumed }`, `Down`, `Notice(Refused(..))`, `Sync((), Applied { .. })`),
//! and the adapter, generic over every machine, does not classify them further. It cannot
//! tell sessions apart either (a server's events name them in their own way), so there is
//! no per-session span. The core crate has no tracing of its own.
//!
//! # Durable nodes, journals, randomness
//!
//! [`spawn_saving`] runs a save hook after each round of the machine's output and before
//! any of it leaves (tether-sqlite's `DurableSessions::save`), so a restarted node resumes
//! its sessions. A [`Peer`](tether::peer::Peer)'s handle reads its journal
//! ([`Handle::entries`]) and appends under a minted resource id ([`Handle::publish`]);
//! [`Handle::until`] waits on events for a condition of the machine. [`random`] gives the
//! operating system's randomness for tokens and epochs. `examples/chat.rs` uses them all:
//! a shared chat log, with a self-check (`cargo run -p tether-tokio --example chat`).
//!
//! # Testing and chaos
//!
//! [`Handle::cut_transports`] cuts every `main` transport of a machine as a network loss
//! would; [`Handle::with_machine`] reads (or changes) the machine while it runs, and
//! [`Handle::shutdown`] gives it back.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod driver;
mod endpoint;
mod handle;
pub mod random;
mod transport;

pub use driver::Stats;
pub use endpoint::{Client, Endpoint, Options, Server, WsEncoding};
pub use handle::{ClientCommand, Events, Gone, Handle, TryCommandError};
/// The `rustls` the adapter's TLS is built with (its `ring` provider): build the
/// `ClientConfig` / `ServerConfig` given to [`Client::tls`] and [`Server::tls`] with it.
pub use tokio_rustls::rustls;

use tether::Machine;
use tracing::Instrument;

/// Runs `machine` over `endpoint`'s transports with the default [`Options`]: see
/// [`spawn_with`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use tether::connect::dual::{DualClient, DualClientCommand};
/// use tether::peer::Peer;
/// use tether::sync::journal::{MemJournal, SyncConfig};
/// use tether_tokio::Client;
/// // The dual-channel profile: TCP `main`, UDP `feed`.
/// let peer = Peer::new(DualClient::new(Default::default()), SyncConfig::default(), MemJournal::new(1, 10_000));
/// let endpoint = Client::tcp("127.0.0.1:7000").feed("127.0.0.1:7001".parse().unwrap());
/// let (handle, mut events) = tether_tokio::spawn(peer, endpoint);
/// handle.connection(DualClientCommand::Connect).await.expect("running");
/// # let _ = events.recv().await; Ok(()) }
/// ```
pub fn spawn<M>(machine: M, endpoint: impl Into<Endpoint>) -> (Handle<M>, Events<M::Event>)
where
    M: Machine + Send + 'static,
    M::Command: Send,
    M::Event: Send + std::fmt::Debug,
{
    spawn_with(machine, endpoint, Options::default())
}

/// Runs `machine` over `endpoint`'s transports in a driver task of its own
/// (`tokio::spawn`: call it inside a tokio runtime), and returns the handle to command it
/// and the receiver of its events.
///
/// The driver runs until [`Handle::shutdown`] or until every [`Handle`] is dropped. A
/// machine that ends ([`Machine::is_closed`]) stays with the driver (a dual-channel client
/// can be told to connect again; [`Handle::with_machine`] can still read it).
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use std::time::Duration;
/// use tether::connect::merge::{MergeServer, MergeServerConfig};
/// use tether::peer::Peer;
/// use tether::sync::journal::{MemJournal, SyncConfig};
/// use tether::Token;
/// use tether_tokio::{Options, Server, WsEncoding};
/// use tokio::net::TcpListener;
/// let tokens = || Token::new(&[9; 16]).unwrap();
/// let peer = Peer::new(MergeServer::new(MergeServerConfig::default(), tokens), SyncConfig::default(), MemJournal::new(2, 10_000));
/// let server = Server::ws(TcpListener::bind("127.0.0.1:7002").await?, WsEncoding::Binary);
/// let options = Options { name: "ws-server".into(), events_capacity: 8192, ..Default::default() };
/// let (handle, events) = tether_tokio::spawn_with(peer, server, options);
/// # let _ = (handle, events); Ok(()) }
/// ```
pub fn spawn_with<M>(
    machine: M,
    endpoint: impl Into<Endpoint>,
    options: Options,
) -> (Handle<M>, Events<M::Event>)
where
    M: Machine + Send + 'static,
    M::Command: Send,
    M::Event: Send + std::fmt::Debug,
{
    launch(machine, endpoint.into(), options, None)
}

/// [`spawn_with`], and `save` runs on the machine after each round of its output is
/// drained and **before** any of that round is handed on (bytes written, transports
/// opened or closed, events sent): the hook a durable node needs, whose state must be on
/// disk before a peer can have seen it (tether-sqlite's `DurableSessions::save`, which its
/// docs ask to be called after every round and before the round's bytes are written).
///
/// `save` is called with the machine and tether's `now`, only for rounds with output. If
/// it fails, the round stays held (nothing of it is written or sent), the error is traced
/// (warn), and `save` is tried again, with the round and whatever followed it, at the next
/// input or after a second at most. To stop the node instead, do so in `save`.
///
/// A token-merge server whose journal and sessions live in a SQLite file: restarted on
/// the file, it resumes its clients' sessions.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use tether::connect::merge::MergeServer;
/// use tether::peer::Peer;
/// use tether::sync::journal::SyncConfig;
/// use tether::Instant;
/// use tether_sqlite::{sessions::DurableSessions, SqliteJournal};
/// use tether_tokio::{random, Options, Server};
/// use tokio::net::TcpListener;
/// let journal = SqliteJournal::open("server.db", random::u64)?; // the epoch: drawn once
/// let mut peer = Peer::new(MergeServer::new(Default::default(), random::Tokens), SyncConfig::default(), journal);
/// let mut sessions = DurableSessions::new();
/// sessions.restore(&mut peer, Instant::ZERO)?; // what the file holds, before any input
/// let server = Server::tcp(TcpListener::bind("127.0.0.1:7000").await?);
/// let save = move |peer: &mut _, now| sessions.save(peer, now);
/// let (handle, events) = tether_tokio::spawn_saving(peer, server, Options::default(), save);
/// # let _ = (handle, events); Ok(()) }
/// ```
pub fn spawn_saving<M, F, R, E>(
    machine: M,
    endpoint: impl Into<Endpoint>,
    options: Options,
    mut save: F,
) -> (Handle<M>, Events<M::Event>)
where
    M: Machine + Send + 'static,
    M::Command: Send,
    M::Event: Send + std::fmt::Debug,
    F: FnMut(&mut M, tether::Instant) -> Result<R, E> + Send + 'static,
    E: std::fmt::Display,
{
    let save = move |m: &mut M, now| save(m, now).map(drop).map_err(|e| e.to_string());
    launch(machine, endpoint.into(), options, Some(Box::new(save)))
}

fn launch<M>(
    machine: M,
    endpoint: Endpoint,
    options: Options,
    save: Option<driver::SaveFn<M>>,
) -> (Handle<M>, Events<M::Event>)
where
    M: Machine + Send + 'static,
    M::Command: Send,
    M::Event: Send + std::fmt::Debug,
{
    let start = options.start.unwrap_or_else(tokio::time::Instant::now);
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(options.commands_capacity.max(1));
    let (ev_tx, ev_rx) = tokio::sync::mpsc::channel(options.events_capacity.max(1));
    let side = match &endpoint {
        Endpoint::Client(_) => "client",
        Endpoint::Server(_) => "server",
    };
    let span = tracing::info_span!("tether", name = %options.name, side);
    let driver = {
        let _enter = span.enter();
        driver::Driver::new(machine, endpoint, options, start, ctl_rx, ev_tx, save)
    };
    tokio::spawn(
        async move {
            if let Some((machine, Some(reply))) = driver.run().await {
                let _ = reply.send(machine);
            }
        }
        .instrument(span),
    );
    (Handle { tx: ctl_tx, start }, Events { rx: ev_rx })
}
