//! A tokio + tokio-tungstenite driver for any tether machine whose `main` transport is a
//! WebSocket carrying whole text messages (the token-merge machines in dop's encoding), or,
//! with [`Driver::binary`] on, binary messages (tether's own length-prefixed frames: each
//! message is one chunk of the stream, as the browser client sends them).
//!
//! | tether says | the driver does |
//! |---|---|
//! | `Open(Main)` | dials the WebSocket URL, then `Opened(link)` (or `Opened` + `Closed` if it fails) |
//! | `Transmit` | sends the payload as one text message (one binary message in binary mode) |
//! | `Close(link)` | sends a close frame and drops the socket; `Closed(link)` follows |
//! | `Wait(deadline)` | sleeps until the deadline, then `Timeout` |
//! | a text message arrives | `Received(link, text)`: one message, one input (binary mode: a binary message) |
//! | a message of the other kind arrives | taken for a broken peer: the socket is closed, `Closed(link)` |
//! | the socket ends (close frame, EOF, error) | `Closed(link)` |
//!
//! A server driver also accepts connections on a TCP listener and upgrades them (any path).
//! Each socket lives in a task of its own; the tasks talk to the driver through channels, so
//! the machine is only ever touched by the driver loop.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use tether::{Channel, Input, Instant, Link, Machine, Output};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Things that happen on sockets, sent from socket tasks to the driver loop.
enum Happening {
    Opened(Link),
    Received(Link, bytes::Bytes),
    Closed(Link),
}

/// What the driver asks of a socket task.
enum Out {
    Send(WsMessage),
    Close,
}

/// Where the driver connects (client) or listens (server).
pub enum Role {
    /// Dials this `ws://` URL when the machine asks for a transport.
    Client { url: String },
    /// Accepts WebSocket connections on this listener.
    Server { listener: TcpListener },
}

/// Drives one machine over WebSockets.
pub struct Driver<M: Machine> {
    /// The machine, for inspection between turns.
    pub machine: M,
    /// Prefix of the wire lines printed when `trace` is on ("C" or "S").
    pub name: &'static str,
    /// Print every text message sent and received, as dop's wire trace does.
    pub trace: bool,
    /// Binary mode: payloads travel as binary messages (tether's encoding); text messages
    /// are then the broken peer's. Off by default (text: dop's encoding). Set it before
    /// the first socket.
    pub binary: bool,
    role: Role,
    epoch: tokio::time::Instant,
    next_link: u64,
    sockets: HashMap<u64, (mpsc::UnboundedSender<Out>, JoinHandle<()>)>,
    tx: mpsc::UnboundedSender<Happening>,
    rx: mpsc::UnboundedReceiver<Happening>,
    deadline: Option<Instant>,
}

impl<M: Machine> Driver<M>
where
    M::Error: std::fmt::Debug,
{
    /// A driver for `machine`. `epoch` is time zero of tether's clock for this process.
    pub fn new(machine: M, role: Role, epoch: tokio::time::Instant, name: &'static str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Driver {
            machine,
            name,
            trace: true,
            binary: false,
            role,
            epoch,
            next_link: 1,
            sockets: HashMap::new(),
            tx,
            rx,
            deadline: None,
        }
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

    /// Waits for the next socket happening, accepted connection or deadline, feeds it to
    /// the machine, and returns the events it produced.
    pub async fn turn(&mut self) -> Vec<M::Event> {
        let sleep_until = self
            .deadline
            .map(|d| self.epoch + std::time::Duration::from_micros(d.as_micros()));
        let input = tokio::select! {
            Some(h) = self.rx.recv() => Some(match h {
                Happening::Opened(link) => Input::Opened(link),
                Happening::Received(link, text) => {
                    if self.trace {
                        println!("  wire {} <- {:?}", self.name, String::from_utf8_lossy(&text));
                    }
                    Input::Received(link, text)
                }
                Happening::Closed(link) => {
                    self.sockets.remove(&link.id);
                    Input::Closed(link)
                }
            }),
            Some(stream) = accept(&self.role) => {
                // The upgrade runs in the socket task; `Opened` comes from there.
                let link = self.link();
                self.spawn_socket(link, Dial::Accept(stream));
                None
            }
            _ = sleep_opt(sleep_until) => Some(Input::Timeout),
        };
        if let Some(input) = input {
            let now = self.now();
            if let Err(e) = self.machine.handle_input(now, input) {
                println!("  ({}: input refused: {e:?})", self.name);
            }
        }
        self.flush()
    }

    /// The network drops every socket of this side at once: no close frame, the TCP
    /// connections just end. This side's machine learns it as it would from the OS (the
    /// socket reports an error); the peer sees its socket end without a close handshake.
    pub fn drop_transports(&mut self) {
        for (id, (_, task)) in self.sockets.drain() {
            task.abort();
            let _ = self.tx.send(Happening::Closed(Link::main(id)));
        }
    }

    fn link(&mut self) -> Link {
        let id = self.next_link;
        self.next_link += 1;
        Link::main(id)
    }

    /// Drains the machine's outputs into socket tasks; returns its events.
    fn flush(&mut self) -> Vec<M::Event> {
        let mut events = Vec::new();
        loop {
            match self.machine.poll_output() {
                Output::Transmit(t) => {
                    if self.trace {
                        let text = String::from_utf8_lossy(&t.payload);
                        println!("  wire {} -> {text:?}", self.name);
                    }
                    let message = if self.binary {
                        WsMessage::binary(t.payload)
                    } else {
                        // dop's encoding is text: tokens and application messages are UTF-8.
                        WsMessage::text(String::from_utf8_lossy(&t.payload).into_owned())
                    };
                    if let Some((out, _)) = self.sockets.get(&t.link.id) {
                        let _ = out.send(Out::Send(message));
                    }
                }
                Output::Event(e) => events.push(e),
                Output::Open(Channel::Main) => {
                    if let Role::Client { url } = &self.role {
                        let url = url.clone();
                        let link = self.link();
                        self.spawn_socket(link, Dial::Connect(url));
                    }
                }
                Output::Open(Channel::Feed) => {} // no datagrams over WebSocket
                Output::Close(link) => {
                    if let Some((out, _)) = self.sockets.get(&link.id) {
                        // The task sends the close frame, then reports `Closed`.
                        let _ = out.send(Out::Close);
                    }
                }
                Output::Wait(deadline) => {
                    self.deadline = deadline;
                    return events;
                }
            }
        }
    }

    fn spawn_socket(&mut self, link: Link, dial: Dial) {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_socket(link, dial, self.binary, out_rx, self.tx.clone()));
        self.sockets.insert(link.id, (out_tx, task));
    }
}

enum Dial {
    Connect(String),
    Accept(tokio::net::TcpStream),
}

/// One WebSocket: upgrade or dial, then shuttle messages (text, or binary in binary mode)
/// both ways until it ends.
async fn run_socket(
    link: Link,
    dial: Dial,
    binary: bool,
    mut out: mpsc::UnboundedReceiver<Out>,
    tx: mpsc::UnboundedSender<Happening>,
) {
    let ws = match dial {
        Dial::Connect(url) => tokio_tungstenite::connect_async(url.as_str())
            .await
            .map(|(ws, _response)| ws),
        Dial::Accept(stream) => {
            let _ = stream.set_nodelay(true);
            tokio_tungstenite::accept_async(tokio_tungstenite::MaybeTlsStream::Plain(stream)).await
        }
    };
    let _ = tx.send(Happening::Opened(link));
    let Ok(mut ws) = ws else {
        // Died at birth: the machine sees it opened and closed at once.
        let _ = tx.send(Happening::Closed(link));
        return;
    };
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) if !binary => {
                    let bytes = bytes::Bytes::copy_from_slice(text.as_bytes());
                    if tx.send(Happening::Received(link, bytes)).is_err() {
                        return;
                    }
                }
                Some(Ok(WsMessage::Binary(data))) if binary => {
                    if tx.send(Happening::Received(link, data)).is_err() {
                        return;
                    }
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                // The other kind of message is not part of the encoding: a broken peer.
                Some(Ok(WsMessage::Text(_) | WsMessage::Binary(_) | WsMessage::Close(_)))
                | Some(Err(_))
                | None => break,
            },
            command = out.recv() => match command {
                Some(Out::Send(message)) => {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close) | None => {
                    let _ = ws.close(None).await;
                    break;
                }
            },
        }
    }
    let _ = tx.send(Happening::Closed(link));
}

async fn accept(role: &Role) -> Option<tokio::net::TcpStream> {
    match role {
        Role::Server { listener } => listener.accept().await.ok().map(|(s, _)| s),
        Role::Client { .. } => std::future::pending().await,
    }
}

async fn sleep_opt(until: Option<tokio::time::Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
