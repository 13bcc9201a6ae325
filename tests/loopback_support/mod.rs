//! A compact tokio driver for the loopback tests: any tether [`Machine`] over real TCP on
//! 127.0.0.1, a client that dials or a server that accepts.
//!
//! | tether says | the driver does |
//! |---|---|
//! | `Open(Main)` | connects to the server, then `Opened(link)` (or `Opened` + `Closed` if the connect fails) |
//! | `Transmit` | gathers the bytes per link and writes them once per turn |
//! | `Close(link)` | writes what was gathered for it, drops the stream, then `Closed(link)` |
//! | `Wait(deadline)` | sleeps until the deadline, then `Timeout` |
//!
//! A reader task per stream turns reads into `Received` and EOF or an error into `Closed`,
//! so a stream killed under the machine ([`Action::Kill`]: `shutdown(Both)` on the socket,
//! the machine not told) is learned from the read side, as a real drop is. The machine is
//! `!Send` (a peer over an `Rc` journal): run the driver inside a `LocalSet`.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, HashMap};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsFd;
use tether::{Channel, Input, Instant, Link, Machine, Output};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// What a reader task reports.
enum Net {
    Received(Link, Bytes),
    Closed(Link),
}

/// Something scheduled for a machine at a moment.
pub enum Action<C> {
    /// Give the machine this command.
    Command(C),
    /// Kill every stream under the machine without telling it (`shutdown(Both)`): its
    /// reader sees EOF and reports the close. `then` is fed right after the machine has
    /// learned of the close, so it runs while the machine is certainly disconnected.
    Kill {
        /// A command fed once the killed stream's close has been reported.
        then: Option<C>,
    },
}

/// An action and when to take it (now or past: at the next turn).
pub type Scheduled<C> = (tokio::time::Instant, Action<C>);

/// Where the driver's streams come from.
pub enum Role {
    /// Dials this address on `Open(Main)`.
    Client(SocketAddr),
    /// Accepts on this listener; every accepted stream is a `main` link with a fresh id.
    Server(TcpListener),
}

/// Drives one machine over loopback TCP until `stop` turns true.
pub struct Driver<M: Machine> {
    /// The machine driven.
    pub machine: M,
    role: Role,
    epoch: tokio::time::Instant,
    next_link: u64,
    streams: HashMap<u64, OwnedWriteHalf>,
    /// Bytes to write, per link, gathered during one turn.
    gathered: BTreeMap<u64, BytesMut>,
    tx: mpsc::UnboundedSender<Net>,
    rx: mpsc::UnboundedReceiver<Net>,
    script: BTreeMap<(tokio::time::Instant, u64), Action<M::Command>>,
    script_seq: u64,
    /// Streams killed under the machine.
    pub kills: u64,
    /// Fed once a killed stream's close is reported.
    after_kill: HashMap<u64, M::Command>,
    deadline: Option<Instant>,
    /// Inputs the machine refused (none expected).
    pub refused_inputs: Vec<String>,
    /// Time spent inside the machine (inputs and outputs), for the figures.
    pub busy: std::time::Duration,
}

impl<M: Machine> Driver<M>
where
    M::Error: std::fmt::Debug,
{
    /// A driver for `machine`; `epoch` is time zero of tether's clock.
    pub fn new(machine: M, role: Role, epoch: tokio::time::Instant) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Driver {
            machine,
            role,
            epoch,
            next_link: 1,
            streams: HashMap::new(),
            gathered: BTreeMap::new(),
            tx,
            rx,
            script: BTreeMap::new(),
            script_seq: 0,
            kills: 0,
            after_kill: HashMap::new(),
            deadline: None,
            refused_inputs: Vec::new(),
            busy: std::time::Duration::ZERO,
        }
    }

    /// Schedules `action` at `at`.
    pub fn schedule(&mut self, at: tokio::time::Instant, action: Action<M::Command>) {
        self.script_seq += 1;
        self.script.insert((at, self.script_seq), action);
    }

    /// tether's `now`: microseconds since the epoch.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    fn feed(&mut self, input: Input<M::Command>) {
        let now = self.now();
        let t = std::time::Instant::now();
        if let Err(e) = self.machine.handle_input(now, input) {
            self.refused_inputs.push(format!("{e:?}"));
        }
        self.busy += t.elapsed();
    }

    /// Runs until `stop` is true, handing every event to `on_event`; actions arriving on
    /// `ctl` are scheduled as they come.
    pub async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        mut ctl: Option<mpsc::UnboundedReceiver<Scheduled<M::Command>>>,
        mut on_event: impl FnMut(&M, M::Event),
    ) -> Self {
        loop {
            self.flush(&mut on_event).await;
            if *stop.borrow() {
                return self;
            }
            let wake = self
                .deadline
                .map(|d| self.epoch + std::time::Duration::from_micros(d.as_micros()));
            let next_action = self.script.keys().next().map(|k| k.0);
            tokio::select! {
                net = self.rx.recv() => {
                    if let Some(net) = net {
                        self.on_net(net);
                        // Take what else is ready, so one flush answers many inputs.
                        for _ in 0..256 {
                            match self.rx.try_recv() {
                                Ok(net) => self.on_net(net),
                                Err(_) => break,
                            }
                        }
                    }
                }
                accepted = accept(&self.role) => {
                    if let Some(stream) = accepted {
                        let link = self.fresh_link();
                        self.register(link, stream);
                        self.feed(Input::Opened(link));
                    }
                }
                scheduled = recv_opt(&mut ctl) => match scheduled {
                    Some((at, action)) => self.schedule(at, action),
                    None => ctl = None,
                },
                _ = sleep_opt(next_action) => {
                    let now = tokio::time::Instant::now();
                    while let Some(entry) = self.script.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        let action = entry.remove();
                        self.act(action);
                    }
                }
                _ = sleep_opt(wake) => self.feed(Input::Timeout),
                _ = stop.changed() => {}
            }
        }
    }

    fn act(&mut self, action: Action<M::Command>) {
        match action {
            Action::Command(c) => self.feed(Input::Command(c)),
            Action::Kill { then } => {
                let ids: Vec<u64> = self.streams.keys().copied().collect();
                for id in &ids {
                    if let Some(w) = self.streams.get(id) {
                        kill(w);
                        self.kills += 1;
                    }
                }
                match (then, ids.first()) {
                    (Some(c), Some(&id)) => {
                        self.after_kill.insert(id, c);
                    }
                    // Nothing to kill: already disconnected, feed it now.
                    (Some(c), None) => self.feed(Input::Command(c)),
                    (None, _) => {}
                }
            }
        }
    }

    fn on_net(&mut self, net: Net) {
        match net {
            Net::Received(link, bytes) => self.feed(Input::Received(link, bytes)),
            Net::Closed(link) => {
                if self.streams.remove(&link.id).is_some() {
                    self.gathered.remove(&link.id);
                    self.feed(Input::Closed(link));
                    if let Some(c) = self.after_kill.remove(&link.id) {
                        self.feed(Input::Command(c));
                    }
                }
            }
        }
    }

    fn fresh_link(&mut self) -> Link {
        let link = Link::main(self.next_link);
        self.next_link += 1;
        link
    }

    fn register(&mut self, link: Link, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (mut read, write) = stream.into_split();
        let tx = self.tx.clone();
        tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match read.read(&mut buf).await {
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
        self.streams.insert(link.id, write);
    }

    async fn write_gathered(&mut self, id: u64) {
        if let (Some(bytes), Some(w)) = (self.gathered.remove(&id), self.streams.get_mut(&id)) {
            // A failed write means the stream is dead: its reader reports the close.
            let _ = w.write_all(&bytes).await;
        }
    }

    /// Drains the machine's outputs into sockets.
    async fn flush(&mut self, on_event: &mut impl FnMut(&M, M::Event)) {
        loop {
            match self.machine.poll_output() {
                Output::Transmit(t) => {
                    if t.link.channel == Channel::Main && self.streams.contains_key(&t.link.id) {
                        self.gathered
                            .entry(t.link.id)
                            .or_default()
                            .extend_from_slice(&t.payload);
                    }
                }
                Output::Event(e) => on_event(&self.machine, e),
                Output::Open(Channel::Main) => {
                    let Role::Client(addr) = self.role else {
                        continue;
                    };
                    let link = self.fresh_link();
                    let connect = tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        TcpStream::connect(addr),
                    );
                    match connect.await {
                        Ok(Ok(stream)) => {
                            self.register(link, stream);
                            self.feed(Input::Opened(link));
                        }
                        _ => {
                            self.feed(Input::Opened(link));
                            self.feed(Input::Closed(link));
                        }
                    }
                }
                Output::Open(Channel::Feed) => {} // the token-merge profile never asks
                Output::Close(link) => {
                    self.write_gathered(link.id).await;
                    if self.streams.remove(&link.id).is_some() {
                        // Dropping the write half sends FIN; the reader ends on the peer's
                        // close and its report is then stale.
                        self.feed(Input::Closed(link));
                    }
                }
                Output::Wait(deadline) => {
                    self.deadline = deadline;
                    let ids: Vec<u64> = self.gathered.keys().copied().collect();
                    for id in ids {
                        self.write_gathered(id).await;
                    }
                    return;
                }
            }
        }
    }
}

/// Kills a stream under its machine: both directions shut down on the socket itself (a
/// duplicate descriptor of it), so our reader sees EOF and the peer sees FIN.
pub fn kill(w: &OwnedWriteHalf) {
    let stream: &TcpStream = w.as_ref();
    if let Ok(fd) = stream.as_fd().try_clone_to_owned() {
        let dup = std::net::TcpStream::from(fd);
        let _ = dup.shutdown(Shutdown::Both);
    }
}

async fn accept(role: &Role) -> Option<TcpStream> {
    match role {
        Role::Server(l) => l.accept().await.ok().map(|(s, _)| s),
        Role::Client(_) => std::future::pending().await,
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(until: Option<tokio::time::Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Runs `f` on a current-thread runtime with a `LocalSet` (the drivers are `!Send`),
/// failing the test if it takes longer than `limit`.
pub fn run_local<F: std::future::Future>(limit: std::time::Duration, f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    rt.block_on(local.run_until(async move {
        tokio::time::timeout(limit, f)
            .await
            .expect("the test finished within its overall bound")
    }))
}
