//! `tether-node`: a durable token-merge node over loopback TCP, in std only.
//!
//! One process is one node: a server (`Peer<MergeServer, _>`) or a client
//! (`Peer<MergeClient, _>`), with journal sync on top and everything it must not forget in
//! one SQLite file ([`SqliteJournal`]): the journal, the count of its own entries, and its
//! sessions' snapshots (a client's one session; every session of a server). Killed at any
//! moment (SIGKILL) and started again on the same file, it resumes where it was: a client
//! resumes its session, a server imports its sessions and its clients resume them, and
//! the journals converge with every entry applied once. `tests/kill9.rs` checks exactly
//! that; this file is also an example of a durable driver.
//!
//! ```text
//! tether-node server|client --db FILE --addr 127.0.0.1:PORT --name NAME [--seed N] [--every MS]
//! ```
//!
//! The server listens on `--addr`, a client dials it. Each node appends one entry every
//! `--every` milliseconds (0: never) as author `NAME`, resource ids `0, 1, 2, ...`.
//! On stdin, `stop` stops appending and `quit` (or end of input) exits. On stdout, one line
//! per fact: `ready`, `appended ID` (once the entry is committed), `applied AUTHOR ID`,
//! `up fresh|resumed`, `down`, `ended`, `stopped own=N head=H`, then `head H` on every
//! change, and `error ...` for anything refused.
//!
//! # Why the snapshots are written before any byte leaves
//!
//! A session snapshot holds the delivery counters, which move with every message; a node
//! restarted from a snapshot older than what its peer has seen cannot continue the session
//! (it ends as `Diverged` and the client starts a fresh one). So after each round of
//! inputs this driver drains the machine's output, saves the changed snapshots with
//! [`DurableSessions::save`] (one SQLite transaction), and only then writes the bytes to
//! the sockets: whatever the peer has seen, the file covers. `tether_sqlite::sessions`
//! has the whole rule; docs/RESTARTS.md what a restart looks like from both sides.

#![forbid(unsafe_code)]

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::io::{BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration as StdDuration, Instant as StdInstant};
use tether::connect::merge::{self, MergeClient, MergeServer, TokenSource};
use tether::peer::{Peer, PeerCommand, PeerEvent};
use tether::prelude::*;
use tether::sync::journal::{JournalStore, SyncConfig, SyncEvent};
use tether::wire::Entry;
use tether_sqlite::sessions::{DurableProfile, DurableSessions};
use tether_sqlite::{Options, SqliteJournal, Synchronous};

const USAGE: &str = "usage: tether-node server|client --db FILE --addr 127.0.0.1:PORT \
                     --name NAME [--seed N] [--every MS]";

/// The state key of the count of this node's own entries (written with each append).
const OWN_KEY: &[u8] = b"own";

/// splitmix64: tokens, the epoch of a new journal, jitter seeds.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn token(&mut self) -> Token {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next().to_be_bytes());
        b[8..].copy_from_slice(&self.next().to_be_bytes());
        match Token::new(&b) {
            Ok(t) => t,
            // Token::new refuses only empty or over-long bytes; these are 16.
            Err(_) => unreachable!("16 bytes make a token"),
        }
    }
}

impl TokenSource for Rng {
    fn next_token(&mut self) -> Token {
        self.token()
    }
}

/// What the reader threads (and stdin's) tell the main loop.
enum Net {
    Accepted(TcpStream),
    Received(Link, Bytes),
    Closed(Link),
    Line(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

#[derive(Debug)]
struct Args {
    side: Side,
    db: std::path::PathBuf,
    addr: SocketAddr,
    name: String,
    seed: u64,
    every: Option<StdDuration>,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let side = match args.next().as_deref() {
            Some("server") => Side::Server,
            Some("client") => Side::Client,
            other => return Err(format!("expected server or client, got {other:?}")),
        };
        let (mut db, mut addr, mut name, mut seed, mut every) = (None, None, None, 0, None);
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
            match flag.as_str() {
                "--db" => db = Some(value.clone().into()),
                "--addr" => addr = Some(value.parse().map_err(|e| format!("--addr: {e}"))?),
                "--name" => name = Some(value.clone()),
                "--seed" => seed = number()?,
                "--every" => every = Some(number()?).filter(|&ms| ms > 0),
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        let name: String = name.ok_or("--name is required")?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err("--name must be one word".into());
        }
        Ok(Args {
            side,
            db: db.ok_or("--db is required")?,
            addr: addr.ok_or("--addr is required")?,
            name,
            seed,
            every: every.map(StdDuration::from_millis),
        })
    }
}

/// One line on stdout. A closed stdout (the test gone) is not this node's failure: the
/// line is dropped, and the end of stdin stops the node.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tether-node: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("error fatal {e}");
            eprintln!("tether-node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let clock = StdInstant::now();
    // Tokens and a new file's epoch must differ between incarnations: the seed is mixed
    // with the process id and the time.
    let salt = u64::from(std::process::id()) << 32
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = Rng(args.seed ^ salt);
    // NORMAL: a commit survives the process being killed (the OS has it), which is what
    // this node is tested against; FULL would add an fsync per commit for power cuts.
    let options = Options {
        synchronous: Synchronous::Normal,
        ..Options::default()
    };
    let file = SqliteJournal::open_with(&args.db, options, || rng.next())?;
    let own = match file.get_state(OWN_KEY)? {
        Some(v) => std::str::from_utf8(&v)?.parse()?,
        None => 0,
    };
    let store = file;
    let (tx, rx) = mpsc::channel();
    spawn_stdin(tx.clone());
    let sync = SyncConfig {
        // The test stops appending and waits: an idle session is not a dead one.
        idle_timeout: None,
        retry_max: Duration::from_secs(1),
        jitter_seed: rng.next(),
        ..SyncConfig::default()
    };
    match args.side {
        Side::Server => {
            let listener = bind(args.addr)?;
            let cfg = merge::MergeServerConfig {
                resume_grace: Duration::from_secs(600),
                handshake_timeout: Duration::from_secs(2),
                ..Default::default()
            };
            let peer = Peer::new(MergeServer::new(cfg, Rng(rng.next())), sync, store);
            let mut node = Node::new(peer, &args, None, clock, own, tx.clone(), rx);
            node.restore()?;
            spawn_accept(listener, tx);
            node.run()
        }
        Side::Client => {
            let cfg = merge::MergeClientConfig {
                reconnect_initial: Duration::from_millis(20),
                reconnect_max: Duration::from_millis(250),
                handshake_timeout: Duration::from_secs(2),
                give_up_after: Duration::from_secs(600),
                jitter_seed: rng.next(),
                ..Default::default()
            };
            let now = Instant::ZERO;
            let client = MergeClient::new(now, cfg, rng.token())?;
            let peer = Peer::new(client, sync, store);
            let mut node = Node::new(peer, &args, Some(args.addr), clock, own, tx, rx);
            node.restore()?;
            node.run()
        }
    }
}

/// Binds the listener, waiting a little for a killed predecessor's port to be free.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) if tries >= 100 => return Err(e),
            Err(_) => {
                tries += 1;
                std::thread::sleep(StdDuration::from_millis(20));
            }
        }
    }
}

fn spawn_accept(listener: TcpListener, tx: Sender<Net>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(s) => {
                    if tx.send(Net::Accepted(s)).is_err() {
                        return;
                    }
                }
                // A failed accept (the client gave up already) concerns no session.
                Err(_) => std::thread::sleep(StdDuration::from_millis(5)),
            }
        }
    });
}

fn spawn_stdin(tx: Sender<Net>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(Net::Line(line)).is_err() {
                return;
            }
        }
        // No more commands can come: nobody is watching, leave.
        let _ = tx.send(Net::Line("quit".into()));
    });
}

/// One node: the peer, its sockets, and what it has written to its file.
struct Node<P: DurableProfile> {
    peer: Peer<P, SqliteJournal>,
    name: String,
    /// Where a client dials (`None` on the server, which accepts).
    dial: Option<SocketAddr>,
    clock: StdInstant,
    tx: Sender<Net>,
    rx: Receiver<Net>,
    streams: HashMap<u64, TcpStream>,
    next_link: u64,
    /// Bytes to write per link, held until the snapshots covering them are on disk.
    gathered: BTreeMap<u64, Vec<u8>>,
    /// Links the machine closed, closed once their last bytes are written.
    closing: Vec<Link>,
    /// The sessions' snapshots in the file.
    sessions: DurableSessions<P>,
    /// This node's own entries so far: the next one's resource id.
    own: u64,
    every: Option<StdDuration>,
    next_append: StdInstant,
    stopped: bool,
    head: u64,
    quit: bool,
}

impl<P> Node<P>
where
    P: DurableProfile,
    P::Error: 'static,
    P::Notice: Debug,
{
    fn new(
        peer: Peer<P, SqliteJournal>,
        args: &Args,
        dial: Option<SocketAddr>,
        clock: StdInstant,
        own: u64,
        tx: Sender<Net>,
        rx: Receiver<Net>,
    ) -> Self {
        Node {
            peer,
            name: args.name.clone(),
            dial,
            clock,
            tx,
            rx,
            streams: HashMap::new(),
            next_link: 1,
            gathered: BTreeMap::new(),
            closing: Vec::new(),
            sessions: DurableSessions::new(),
            own,
            every: args.every,
            next_append: clock,
            stopped: false,
            head: 0,
            quit: false,
        }
    }

    /// tether's clock: microseconds since this process started.
    fn now(&self) -> Instant {
        Instant::from_micros(self.clock.elapsed().as_micros() as u64)
    }

    /// Imports the sessions kept in the file (a snapshot that no longer decodes or
    /// imports is dropped: that session starts afresh).
    fn restore(&mut self) -> Result<(), tether_sqlite::Error> {
        let now = self.now();
        let restored = self.sessions.restore(&mut self.peer, now)?;
        for (_, why) in &restored.dropped {
            say!("error restore {why}");
        }
        for out in restored.pending {
            self.handle(out);
        }
        self.head = self.peer.store().head();
        say!(
            "ready own={} head={} restored={}",
            self.own,
            self.head,
            restored.sessions.len()
        );
        Ok(())
    }

    fn run(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        loop {
            self.turn()?;
            if self.quit {
                say!("bye");
                return Ok(());
            }
            if self.peer.is_closed() {
                // A client whose session ended for good (formally disconnected, refused,
                // given up) cannot connect again; its snapshot is removed, so starting the
                // node again starts a fresh session on the same journal.
                return Err("the session ended for good".into());
            }
            let wake = self.wake();
            let first = match wake {
                Some(at) => {
                    match self
                        .rx
                        .recv_timeout(at.saturating_duration_since(StdInstant::now()))
                    {
                        Ok(net) => Some(net),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return Ok(()),
                    }
                }
                None => match self.rx.recv() {
                    Ok(net) => Some(net),
                    Err(_) => return Ok(()),
                },
            };
            if let Some(net) = first {
                self.on_net(net);
                // Take what else is ready, so that one turn (one write of the state)
                // answers many inputs.
                for _ in 0..256 {
                    match self.rx.try_recv() {
                        Ok(net) => self.on_net(net),
                        Err(_) => break,
                    }
                }
            }
            if self.peer.poll_timeout().is_some_and(|d| d <= self.now()) {
                self.feed(Input::Timeout);
            }
            if let Some(every) = self.every.filter(|_| !self.stopped) {
                let now = StdInstant::now();
                if now >= self.next_append {
                    self.append();
                    // Behind schedule (a slow disk, a loaded machine): skip, do not burst.
                    self.next_append = (self.next_append + every).max(now);
                }
            }
        }
    }

    /// The earliest of the machine's deadline and the next append.
    fn wake(&self) -> Option<StdInstant> {
        // A deadline past what std's clock can hold is as good as none.
        let machine = self.peer.poll_timeout().and_then(|d| {
            self.clock
                .checked_add(StdDuration::from_micros(d.as_micros()))
        });
        let append = self
            .every
            .filter(|_| !self.stopped)
            .map(|_| self.next_append);
        match (machine, append) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn feed(&mut self, input: Input<<Peer<P, SqliteJournal> as Machine>::Command>) {
        if let Err(e) = self.peer.handle_input(self.now(), input) {
            say!("error input {e}");
        }
    }

    fn on_net(&mut self, net: Net) {
        match net {
            Net::Accepted(stream) => {
                let link = self.fresh_link();
                if self.register(link, stream) {
                    self.feed(Input::Opened(link));
                }
            }
            Net::Received(link, bytes) => {
                if self.streams.contains_key(&link.id) {
                    self.feed(Input::Received(link, bytes));
                }
            }
            Net::Closed(link) => {
                // A link we closed ourselves was reported to the machine then.
                if self.streams.remove(&link.id).is_some() {
                    self.gathered.remove(&link.id);
                    self.feed(Input::Closed(link));
                }
            }
            Net::Line(line) => match line.trim() {
                "stop" => {
                    self.stopped = true;
                    self.head = self.peer.store().head();
                    say!("stopped own={} head={}", self.own, self.head);
                }
                "quit" => self.quit = true,
                other => say!("error command {other:?}"),
            },
        }
    }

    fn fresh_link(&mut self) -> Link {
        let link = Link::main(self.next_link);
        self.next_link += 1;
        link
    }

    /// Starts the stream's reader thread; false if the stream cannot be used.
    fn register(&mut self, link: Link, stream: TcpStream) -> bool {
        let _ = stream.set_nodelay(true);
        // A peer that stops reading must not stall this node forever.
        let _ = stream.set_write_timeout(Some(StdDuration::from_secs(2)));
        let Ok(mut reader) = stream.try_clone() else {
            return false;
        };
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = Bytes::copy_from_slice(&buf[..n]);
                        if tx.send(Net::Received(link, chunk)).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Net::Closed(link));
        });
        self.streams.insert(link.id, stream);
        true
    }

    /// Until quiet: drain the machine, write the state, then the bytes, then the closes.
    fn turn(&mut self) -> Result<(), tether_sqlite::Error> {
        loop {
            self.drain();
            self.persist()?;
            self.write();
            if self.closing.is_empty() {
                break;
            }
            for link in std::mem::take(&mut self.closing) {
                if let Some(s) = self.streams.remove(&link.id) {
                    let _ = s.shutdown(Shutdown::Both);
                    // The machine is told of the close it asked for (its echo).
                    self.feed(Input::Closed(link));
                }
            }
        }
        let head = self.peer.store().head();
        if head != self.head {
            self.head = head;
            if self.stopped {
                say!("head {head}");
            }
        }
        Ok(())
    }

    /// Takes the machine's output until it waits; bytes are gathered, not written.
    fn drain(&mut self) {
        loop {
            match self.peer.poll_output() {
                Output::Wait(_) => return,
                out => self.handle(out),
            }
        }
    }

    /// One output: bytes are gathered, not written.
    fn handle(&mut self, out: Output<PeerEvent<P::Event, P::Session>>) {
        match out {
            Output::Wait(_) => {}
            Output::Transmit(t) => {
                if t.link.channel == Channel::Main && self.streams.contains_key(&t.link.id) {
                    self.gathered
                        .entry(t.link.id)
                        .or_default()
                        .extend_from_slice(&t.payload);
                }
            }
            Output::Event(e) => self.report(e),
            Output::Open(Channel::Main) => self.dial(),
            // The token-merge profile never asks for a feed.
            Output::Open(Channel::Feed) => {}
            Output::Close(link) => self.closing.push(link),
        }
    }

    /// Connects to the server (a refusal is reported as a transport opened and closed:
    /// the machine backs off and tries again).
    fn dial(&mut self) {
        let Some(addr) = self.dial else { return };
        let link = self.fresh_link();
        let opened = TcpStream::connect_timeout(&addr, StdDuration::from_millis(500))
            .is_ok_and(|s| self.register(link, s));
        self.feed(Input::Opened(link));
        if !opened {
            self.feed(Input::Closed(link));
        }
    }

    fn report(&mut self, event: PeerEvent<P::Event, P::Session>) {
        match event {
            PeerEvent::Connection(Event::Up { session, outcome }) => {
                let outcome = match outcome {
                    Outcome::Fresh => "fresh",
                    Outcome::Resumed => "resumed",
                };
                say!("up {outcome} {session:?}");
            }
            PeerEvent::Connection(Event::Down { session }) => say!("down {session:?}"),
            PeerEvent::Connection(Event::Ended {
                session, reason, ..
            }) => say!("ended {session:?} {reason:?}"),
            PeerEvent::Connection(Event::Notice(n)) => say!("notice {n:?}"),
            PeerEvent::Connection(Event::Message { .. }) => {}
            PeerEvent::Backlogged(session) => say!("backlogged {session:?}"),
            PeerEvent::Sync(
                _,
                SyncEvent::Applied {
                    author, resource, ..
                },
            ) => say!(
                "applied {} {}",
                String::from_utf8_lossy(&author),
                String::from_utf8_lossy(&resource)
            ),
            PeerEvent::Sync(
                session,
                e @ (SyncEvent::Refused { .. }
                | SyncEvent::StoreFailed { .. }
                | SyncEvent::PeerStatus(_)),
            ) => {
                say!("sync {session:?} {e:?}")
            }
            PeerEvent::Sync(..) => {}
        }
    }

    /// Writes every snapshot that changed, and removes those of sessions gone, in one
    /// transaction: before any byte of the round leaves.
    fn persist(&mut self) -> Result<(), tether_sqlite::Error> {
        let now = self.now();
        self.sessions.save(&mut self.peer, now).map(|_| ())
    }

    /// Writes the gathered bytes (after [`persist`](Self::persist)). A failed write means
    /// a dead stream: its reader reports the close.
    fn write(&mut self) {
        for (id, bytes) in std::mem::take(&mut self.gathered) {
            if let Some(s) = self.streams.get_mut(&id) {
                if s.write_all(&bytes).is_err() {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }

    /// Appends this node's next entry. Its id (author, count of own entries) cannot be
    /// reused after a restart: the new count is staged, so it is written in the very
    /// transaction that writes the entry.
    fn append(&mut self) {
        let n = self.own;
        let resource = n.to_string();
        let entry = Entry::new(
            self.name.as_bytes(),
            resource.as_bytes(),
            format!("{} #{n}", self.name).as_bytes(),
        );
        self.peer
            .store_mut()
            .stage_state(OWN_KEY.to_vec(), (n + 1).to_string().into_bytes());
        let result = self
            .peer
            .handle_input(self.now(), Input::Command(PeerCommand::Append(entry)));
        // An error may be about something else the input set off (a send the connection
        // refused): the journal says whether the entry is in.
        let journal = self.peer.store_mut();
        let appended = journal.contains(self.name.as_bytes(), resource.as_bytes());
        if !appended && journal.has_staged_state() {
            // Not written: the count must not go out with the next transaction alone.
            journal.stage_state(OWN_KEY.to_vec(), n.to_string().into_bytes());
        }
        if appended {
            self.own = n + 1;
            say!("appended {n}");
        }
        if let Err(e) = result {
            say!("error append {n}: {e}");
        }
    }
}
