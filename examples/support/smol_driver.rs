//! A smol driver for any tether machine over TCP (`main` only).
//!
//! | tether says | the driver does |
//! |---|---|
//! | `Open(Main)` | connects a TCP stream, then `Opened(link)` (or `Opened` + `Closed` if it fails) |
//! | `Transmit` | hands the bytes to the link's writer task |
//! | `Close(link)` | writes what was queued, shuts the stream down; `Closed(link)` |
//! | `Wait(deadline)` | a `smol::Timer` until the deadline, then `Timeout` |
//! | bytes arrive / EOF or error | `Received(link, bytes)` / `Closed(link)` |
//!
//! A server driver also accepts connections (`Opened` with a fresh link). The machine lives
//! in the driver loop only, so it need not be `Send` (a `Peer` with a shared journal is
//! not); socket tasks run on smol's global executor and talk to the loop through channels.
#![allow(dead_code)]

use smol::channel::{unbounded, Receiver, Sender};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{Shutdown, TcpListener, TcpStream};
use smol::{Task, Timer};
use std::collections::HashMap;
use std::net::SocketAddr;
use tether::{Channel, Input, Instant, Link, Machine, Output};

enum Happening {
    Accepted(TcpStream),
    Dialed(Link, Option<TcpStream>),
    Received(Link, bytes::Bytes),
    Closed(Link),
}

/// Where the driver connects (client) or listens (server).
pub enum Role {
    /// Connects to this address when the machine asks for a transport.
    Client { addr: SocketAddr },
    /// Accepts on this listener.
    Server { listener: TcpListener },
}

/// One open TCP stream: a clone kept to shut it down, its reader and writer tasks (dropping
/// a `Task` cancels it).
struct Conn {
    stream: TcpStream,
    out: Sender<bytes::Bytes>,
    reader: Task<()>,
    writer: Task<()>,
}

/// Drives one machine over TCP with smol.
pub struct Driver<M: Machine> {
    /// The machine, for inspection between turns.
    pub machine: M,
    /// Name used in the driver's own messages.
    pub name: &'static str,
    dial: Option<SocketAddr>,
    epoch: std::time::Instant,
    next_link: u64,
    conns: HashMap<u64, Conn>,
    tx: Sender<Happening>,
    rx: Receiver<Happening>,
    deadline: Option<Instant>,
    _acceptor: Option<Task<()>>,
}

impl<M: Machine> Driver<M>
where
    M::Error: std::fmt::Debug,
{
    /// A driver for `machine`. `epoch` is time zero of tether's clock for this process.
    pub fn new(machine: M, role: Role, epoch: std::time::Instant, name: &'static str) -> Self {
        let (tx, rx) = unbounded();
        let (dial, acceptor) = match role {
            Role::Client { addr } => (Some(addr), None),
            Role::Server { listener } => {
                let tx = tx.clone();
                let task = smol::spawn(async move {
                    while let Ok((stream, _)) = listener.accept().await {
                        if tx.send(Happening::Accepted(stream)).await.is_err() {
                            return;
                        }
                    }
                });
                (None, Some(task))
            }
        };
        Driver {
            machine,
            name,
            dial,
            epoch,
            next_link: 1,
            conns: HashMap::new(),
            tx,
            rx,
            deadline: None,
            _acceptor: acceptor,
        }
    }

    /// The machine driven (to read its state: a peer's journal, its sessions).
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// tether's `now`: microseconds since the epoch.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// Gives the machine an application command; returns the events it produced.
    pub fn command(&mut self, command: M::Command) -> Vec<M::Event> {
        let now = self.now();
        if let Err(e) = self.machine.handle_input(now, Input::Command(command)) {
            println!("  ({}: command refused: {e:?})", self.name);
        }
        self.flush()
    }

    /// Waits for the next socket happening or the machine's deadline, feeds it to the
    /// machine, and returns the events it produced.
    pub async fn turn(&mut self) -> Vec<M::Event> {
        let timer = match self.deadline {
            Some(d) => Timer::at(self.epoch + std::time::Duration::from_micros(d.as_micros())),
            None => Timer::never(),
        };
        let rx = self.rx.clone();
        let happening = smol::future::or(async { rx.recv().await.ok() }, async {
            timer.await;
            None
        })
        .await;
        let input = match happening {
            None => Some(Input::Timeout),
            Some(Happening::Accepted(stream)) => {
                let link = self.link();
                self.register(link, stream);
                Some(Input::Opened(link))
            }
            Some(Happening::Dialed(link, Some(stream))) => {
                self.register(link, stream);
                Some(Input::Opened(link))
            }
            Some(Happening::Dialed(link, None)) => {
                // Died at birth: opened, then closed at once.
                let _ = self.tx.try_send(Happening::Closed(link));
                Some(Input::Opened(link))
            }
            Some(Happening::Received(link, bytes)) => Some(Input::Received(link, bytes)),
            Some(Happening::Closed(link)) => {
                self.conns.remove(&link.id);
                Some(Input::Closed(link))
            }
        };
        if let Some(input) = input {
            let now = self.now();
            if let Err(e) = self.machine.handle_input(now, input) {
                println!("  ({}: input refused: {e:?})", self.name);
            }
        }
        self.flush()
    }

    /// The network drops every stream of this side: each is shut down (the peer reads EOF)
    /// and this side's machine hears `Closed`, as from a reset connection.
    pub fn drop_transports(&mut self) {
        for (id, conn) in self.conns.drain() {
            let _ = conn.stream.shutdown(Shutdown::Both);
            let _ = self.tx.try_send(Happening::Closed(Link::main(id)));
        }
    }

    fn link(&mut self) -> Link {
        let id = self.next_link;
        self.next_link += 1;
        Link::main(id)
    }

    fn register(&mut self, link: Link, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (out, out_rx) = unbounded::<bytes::Bytes>();
        let mut read = stream.clone();
        let tx = self.tx.clone();
        let reader = smol::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = bytes::Bytes::copy_from_slice(&buf[..n]);
                        if tx.send(Happening::Received(link, chunk)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Happening::Closed(link)).await;
        });
        let mut write = stream.clone();
        let writer = smol::spawn(async move {
            while let Ok(bytes) = out_rx.recv().await {
                if write.write_all(&bytes).await.is_err() {
                    return; // the reader reports the close
                }
            }
            // The driver closed the channel (`Close`): everything queued is written; end it.
            let _ = write.shutdown(Shutdown::Both);
        });
        self.conns.insert(
            link.id,
            Conn {
                stream,
                out,
                reader,
                writer,
            },
        );
    }

    /// Drains the machine's outputs into the socket tasks; returns its events.
    fn flush(&mut self) -> Vec<M::Event> {
        let mut events = Vec::new();
        loop {
            match self.machine.poll_output() {
                Output::Transmit(t) => {
                    if let Some(conn) = self.conns.get(&t.link.id) {
                        let _ = conn.out.try_send(t.payload);
                    }
                }
                Output::Event(e) => events.push(e),
                Output::Open(Channel::Main) => {
                    if let Some(addr) = self.dial {
                        let link = self.link();
                        let tx = self.tx.clone();
                        smol::spawn(async move {
                            let stream = TcpStream::connect(addr).await.ok();
                            let _ = tx.send(Happening::Dialed(link, stream)).await;
                        })
                        .detach();
                    }
                }
                Output::Open(Channel::Feed) => {} // this driver carries `main` only
                Output::Close(link) => {
                    if let Some(conn) = self.conns.remove(&link.id) {
                        // Let the writer send what the machine queued before the close (a
                        // DISCONNECT, a CONN_FAILED), then shut the stream down.
                        drop(conn.out);
                        conn.writer.detach();
                        drop(conn.reader);
                    }
                    let _ = self.tx.try_send(Happening::Closed(link));
                }
                Output::Wait(deadline) => {
                    self.deadline = deadline;
                    return events;
                }
            }
        }
    }
}
