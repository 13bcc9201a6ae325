//! A tokio driver for any tether machine: TCP for `main`, UDP for `feed`.
//!
//! This is the whole adapter. It turns tether's outputs into socket calls and socket
//! happenings into tether's inputs:
//!
//! | tether says | the driver does |
//! |---|---|
//! | `Open(Main)` | connects a TCP stream to the server, then `Opened(link)` (or `Opened` + `Closed` if the connect fails) |
//! | `Open(Feed)` | binds a UDP socket connected to the server, then `Opened(link)` |
//! | `Transmit` | writes the bytes to the link's stream, or sends the datagram |
//! | `Close(link)` | drops the socket, then `Closed(link)` |
//! | `Wait(deadline)` | sleeps until the deadline, then `Timeout` |
//!
//! A server driver also accepts TCP connections (`Opened` with a fresh link) and gives each
//! UDP peer address a link id of its own.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tether::{Channel, Input, Instant, Link, Machine, Output};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Things that happen on sockets, sent from reader tasks to the driver loop.
enum Happening {
    Opened(Link, Option<OwnedWriteHalf>, Option<JoinHandle<()>>),
    Received(Link, bytes::Bytes),
    Closed(Link),
    Datagram(SocketAddr, bytes::Bytes),
}

/// Where the driver connects (client) or listens (server).
pub enum Role {
    /// Dials these addresses when the machine asks.
    Client { main: SocketAddr, feed: SocketAddr },
    /// Accepts on this listener and this UDP socket.
    Server {
        main: TcpListener,
        feed: Arc<UdpSocket>,
    },
}

/// Drives one machine over real sockets.
pub struct Driver<M: Machine> {
    pub machine: M,
    role: Role,
    epoch: tokio::time::Instant,
    next_link: u64,
    streams: HashMap<u64, (OwnedWriteHalf, Option<JoinHandle<()>>)>,
    /// Client: the feed socket, by link. Server: one socket for all.
    udp: HashMap<u64, Arc<UdpSocket>>,
    addr_of: HashMap<u64, SocketAddr>,
    link_of: HashMap<SocketAddr, u64>,
    tx: mpsc::UnboundedSender<Happening>,
    rx: mpsc::UnboundedReceiver<Happening>,
    deadline: Option<Instant>,
    commands: Option<mpsc::UnboundedReceiver<M::Command>>,
}

impl<M: Machine> Driver<M>
where
    M::Error: std::fmt::Debug,
{
    /// A driver for `machine`. `epoch` is time zero of tether's clock for this process.
    pub fn new(machine: M, role: Role, epoch: tokio::time::Instant) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let d = Driver {
            machine,
            role,
            epoch,
            next_link: 1,
            streams: HashMap::new(),
            udp: HashMap::new(),
            addr_of: HashMap::new(),
            link_of: HashMap::new(),
            tx,
            rx,
            deadline: None,
            commands: None,
        };
        if let Role::Server { feed, .. } = &d.role {
            spawn_udp_reader(feed.clone(), None, d.tx.clone());
        }
        d
    }

    /// The machine driven (to read its state: a peer's journal, its sessions).
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// tether's `now`: microseconds since the epoch.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// A sender of application commands that another task can use; [`Driver::turn`] takes
    /// them as inputs.
    pub fn command_sender(&mut self) -> mpsc::UnboundedSender<M::Command> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.commands = Some(rx);
        tx
    }

    /// Gives the machine an application command.
    pub async fn command(&mut self, command: M::Command) -> Vec<M::Event> {
        let now = self.now();
        if let Err(e) = self.machine.handle_input(now, Input::Command(command)) {
            eprintln!("  (command refused: {e:?})");
        }
        self.flush().await
    }

    /// Waits for the next socket happening, accept, or timeout, feeds it to the machine, and
    /// returns the events it produced.
    pub async fn turn(&mut self) -> Vec<M::Event> {
        let sleep_until = self
            .deadline
            .map(|d| self.epoch + std::time::Duration::from_micros(d.as_micros()));
        let input = tokio::select! {
            Some(h) = self.rx.recv() => self.happening(h),
            accepted = accept(&self.role) => {
                let link = self.link(Channel::Main);
                match accepted {
                    Some(stream) => {
                        self.register_stream(link, stream);
                        Some(Input::Opened(link))
                    }
                    None => None,
                }
            }
            Some(command) = recv_opt(&mut self.commands) => Some(Input::Command(command)),
            _ = sleep_opt(sleep_until) => Some(Input::Timeout),
        };
        if let Some(input) = input {
            let now = self.now();
            if let Err(e) = self.machine.handle_input(now, input) {
                eprintln!("  (input refused: {e:?})");
            }
        }
        self.flush().await
    }

    /// Kills every TCP stream without telling the machine: the network dropped them. The
    /// machine learns it from the reader tasks, as it would from a real drop.
    pub fn drop_tcp(&mut self) {
        for (id, (write, reader)) in self.streams.drain() {
            drop(write);
            if let Some(r) = reader {
                r.abort();
            }
            // The reader task is gone, so report what a reader sees on a dropped socket.
            let _ = self.tx.send(Happening::Closed(Link::main(id)));
        }
    }

    fn link(&mut self, channel: Channel) -> Link {
        let id = self.next_link;
        self.next_link += 1;
        Link { id, channel }
    }

    fn register_stream(&mut self, link: Link, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let reader = spawn_tcp_reader(read, link, self.tx.clone());
        self.streams.insert(link.id, (write, Some(reader)));
    }

    fn happening(&mut self, h: Happening) -> Option<Input<M::Command>> {
        match h {
            Happening::Opened(link, write, reader) => {
                if let Some(w) = write {
                    self.streams.insert(link.id, (w, reader));
                }
                Some(Input::Opened(link))
            }
            Happening::Received(link, bytes) => Some(Input::Received(link, bytes)),
            Happening::Closed(link) => {
                self.streams.remove(&link.id);
                Some(Input::Closed(link))
            }
            Happening::Datagram(addr, bytes) => {
                let id = match self.link_of.get(&addr) {
                    Some(&id) => id,
                    None => {
                        let link = self.link(Channel::Feed);
                        self.link_of.insert(addr, link.id);
                        self.addr_of.insert(link.id, addr);
                        link.id
                    }
                };
                Some(Input::Received(Link::feed(id), bytes))
            }
        }
    }

    /// Drains the machine's outputs into sockets; returns its events.
    async fn flush(&mut self) -> Vec<M::Event> {
        let mut events = Vec::new();
        loop {
            match self.machine.poll_output() {
                Output::Transmit(t) => match t.link.channel {
                    Channel::Main => {
                        if let Some((w, _)) = self.streams.get_mut(&t.link.id) {
                            if w.write_all(&t.payload).await.is_err() {
                                // The reader task reports the close.
                            }
                        }
                    }
                    Channel::Feed => match &self.role {
                        Role::Client { .. } => {
                            if let Some(s) = self.udp.get(&t.link.id) {
                                let _ = s.send(&t.payload).await;
                            }
                        }
                        Role::Server { feed, .. } => {
                            if let Some(addr) = self.addr_of.get(&t.link.id) {
                                let _ = feed.send_to(&t.payload, addr).await;
                            }
                        }
                    },
                },
                Output::Event(e) => events.push(e),
                Output::Open(channel) => self.open(channel).await,
                Output::Close(link) => {
                    if let Some((_, Some(reader))) = self.streams.remove(&link.id) {
                        reader.abort();
                    }
                    if let Some(sock) = self.udp.remove(&link.id) {
                        drop(sock);
                    }
                    let _ = self.tx.send(Happening::Closed(link));
                }
                Output::Wait(deadline) => {
                    self.deadline = deadline;
                    return events;
                }
            }
        }
    }

    async fn open(&mut self, channel: Channel) {
        let Role::Client { main, feed } = self.role else {
            return; // a server never dials
        };
        let link = self.link(channel);
        match channel {
            Channel::Main => {
                let tx = self.tx.clone();
                let me = self.tx.clone();
                tokio::spawn(async move {
                    match TcpStream::connect(main).await {
                        Ok(stream) => {
                            let _ = stream.set_nodelay(true);
                            let (read, write) = stream.into_split();
                            let reader = spawn_tcp_reader(read, link, tx);
                            let _ = me.send(Happening::Opened(link, Some(write), Some(reader)));
                        }
                        Err(_) => {
                            // Died at birth, as the simulator reports it.
                            let _ = me.send(Happening::Opened(link, None, None));
                            let _ = me.send(Happening::Closed(link));
                        }
                    }
                });
            }
            Channel::Feed => {
                let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
                sock.connect(feed).await.expect("connect udp");
                let sock = Arc::new(sock);
                spawn_udp_reader(sock.clone(), Some(link), self.tx.clone());
                self.udp.insert(link.id, sock);
                let _ = self.tx.send(Happening::Opened(link, None, None));
            }
        }
    }
}

/// Reads a TCP stream into `Received` happenings until it ends, then reports `Closed`.
/// Each read becomes one chunk: tether's frame decoder does not care where reads split.
fn spawn_tcp_reader(
    mut read: tokio::net::tcp::OwnedReadHalf,
    link: Link,
    tx: mpsc::UnboundedSender<Happening>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = bytes::BytesMut::with_capacity(16 * 1024);
        loop {
            buf.reserve(16 * 1024);
            match read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    // Frozen, not copied: the machine slices frames straight out of it.
                    let chunk = buf.split().freeze();
                    if tx.send(Happening::Received(link, chunk)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Happening::Closed(link));
    })
}

fn spawn_udp_reader(
    sock: Arc<UdpSocket>,
    link: Option<Link>,
    tx: mpsc::UnboundedSender<Happening>,
) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            match sock.recv_from(&mut buf).await {
                Ok((n, addr)) => {
                    let bytes = bytes::Bytes::copy_from_slice(&buf[..n]);
                    let h = match link {
                        Some(l) => Happening::Received(l, bytes),
                        None => Happening::Datagram(addr, bytes),
                    };
                    if tx.send(h).is_err() {
                        return;
                    }
                }
                Err(_) => continue, // ICMP errors on UDP: nothing to do
            }
        }
    });
}

async fn accept(role: &Role) -> Option<TcpStream> {
    match role {
        Role::Server { main, .. } => main.accept().await.ok().map(|(s, _)| s),
        Role::Client { .. } => std::future::pending().await,
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
