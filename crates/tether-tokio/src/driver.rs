//! The driver task: the only place the machine lives. It feeds the machine what the
//! socket tasks, the handles and the timer bring, and turns its outputs into socket
//! writes, dials, closes and events.

use crate::endpoint::{Client, Endpoint, Options, Server};
use crate::transport::{self, Happening, Writer};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tether::{Channel, Input, Instant, Link, Machine, Output};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn, Instrument};

/// A closure run on the machine in the driver task, with the driver's `now`.
pub(crate) type WithMachine<M> = Box<dyn FnOnce(&mut M, Instant) + Send>;

/// The application's save hook ([`spawn_saving`](crate::spawn_saving)), its error as text.
pub(crate) type SaveFn<M> = Box<dyn FnMut(&mut M, Instant) -> Result<(), String> + Send>;

/// How long a failed save waits before it is tried again (unless an input comes first).
const SAVE_RETRY: tether::Duration = tether::Duration::from_secs(1);

/// What a [`Handle`](crate::Handle) asks of the driver.
pub(crate) enum Ctl<M: Machine> {
    Command(M::Command),
    With(WithMachine<M>),
    Cut(oneshot::Sender<usize>),
    Stats(oneshot::Sender<Stats>),
    Shutdown(oneshot::Sender<M>),
}

/// What a driver counted since it started ([`Handle::stats`](crate::Handle::stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// `main` transports opened (dialed or accepted and upgraded).
    pub opened: u64,
    /// Dials that failed (each reported to the machine as `Opened` + `Closed`).
    pub dial_failures: u64,
    /// `main` transports that ended by the peer or the network.
    pub closed_by_peer: u64,
    /// Transports the machine closed.
    pub closed_by_machine: u64,
    /// `main` transports cut: by [`Handle::cut_transports`](crate::Handle::cut_transports),
    /// or because the peer did not read ([`Options::max_unwritten`]).
    pub cut: u64,
    /// Inputs the machine refused (each also traced at warn level); not those of
    /// [`Handle::apply`](crate::Handle::apply), which returns the refusal instead.
    pub refused_inputs: u64,
    /// Datagrams dropped because the server's `feed` map was full.
    pub feed_dropped: u64,
}

/// A transport the driver knows.
enum LinkState {
    /// Dialing: the machine asked; `Opened` or `Opened` + `Closed` will follow.
    Dialing,
    /// A `main` transport, open.
    Stream(Writer),
    /// A client's `feed` socket.
    ClientFeed {
        sock: Arc<UdpSocket>,
        reader: AbortHandle,
    },
    /// A source address on a server's `feed` socket.
    ServerFeed(SocketAddr),
}

/// A server's shared `feed` socket and its address map.
struct FeedServer {
    sock: Arc<UdpSocket>,
    reader: AbortHandle,
    links: HashMap<SocketAddr, (u64, tokio::time::Instant)>,
    max: usize,
    idle: std::time::Duration,
    dropped: u64,
}

pub(crate) struct Driver<M: Machine> {
    machine: M,
    start: tokio::time::Instant,
    opts: Arc<Options>,
    ids: Arc<AtomicU64>,
    links: HashMap<u64, LinkState>,
    client: Option<Client>,
    feed_server: Option<FeedServer>,
    acceptor: Option<AbortHandle>,
    happenings: mpsc::Receiver<Happening>,
    happenings_tx: mpsc::Sender<Happening>,
    ctl: mpsc::Receiver<Ctl<M>>,
    events: mpsc::Sender<M::Event>,
    events_open: bool,
    deadline: Option<Instant>,
    closed_seen: bool,
    stats: Stats,
    /// The save hook, and the round of output it holds until it succeeds.
    save: Option<SaveFn<M>>,
    held: Vec<Output<M::Event>>,
}

impl<M> Driver<M>
where
    M: Machine + Send + 'static,
    M::Command: Send,
    M::Event: Send + std::fmt::Debug,
{
    pub(crate) fn new(
        machine: M,
        endpoint: Endpoint,
        opts: Options,
        start: tokio::time::Instant,
        ctl: mpsc::Receiver<Ctl<M>>,
        events: mpsc::Sender<M::Event>,
        save: Option<SaveFn<M>>,
    ) -> Self {
        let (happenings_tx, happenings) = mpsc::channel(opts.inputs_capacity.max(1));
        let opts = Arc::new(opts);
        let ids = Arc::new(AtomicU64::new(1));
        let mut driver = Driver {
            machine,
            start,
            opts,
            ids,
            links: HashMap::new(),
            client: None,
            feed_server: None,
            acceptor: None,
            happenings,
            happenings_tx,
            ctl,
            events,
            events_open: true,
            deadline: None,
            closed_seen: false,
            stats: Stats::default(),
            save,
            held: Vec::new(),
        };
        match endpoint {
            Endpoint::Client(c) => driver.client = Some(c),
            Endpoint::Server(s) => driver.serve(s),
        }
        driver
    }

    /// Starts the server's socket tasks: the accept loop and the `feed` reader.
    fn serve(&mut self, server: Server) {
        let Server {
            listener,
            accept,
            feed,
            max_feed_peers,
            feed_idle,
            max_upgrades,
        } = server;
        let upgrades = (accept.tls.is_some()
            || matches!(accept.framing, transport::Framing::Ws { .. }))
        .then(|| Arc::new(Semaphore::new(max_upgrades)));
        let task = tokio::spawn(
            accept_loop(
                listener,
                accept,
                upgrades,
                self.opts.clone(),
                self.ids.clone(),
                self.happenings_tx.clone(),
            )
            .instrument(tracing::Span::current()),
        );
        self.acceptor = Some(task.abort_handle());
        if let Some(sock) = feed {
            let sock = Arc::new(sock);
            let reader =
                transport::spawn_udp_reader(sock.clone(), None, self.happenings_tx.clone());
            self.feed_server = Some(FeedServer {
                sock,
                reader,
                links: HashMap::new(),
                max: max_feed_peers,
                idle: feed_idle,
                dropped: 0,
            });
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as u64)
    }

    fn fresh_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    fn feed(&mut self, input: Input<M::Command>) {
        let now = self.now();
        if let Err(e) = self.machine.handle_input(now, input) {
            self.stats.refused_inputs += 1;
            warn!(error = %e, "the machine refused an input");
        }
    }

    /// Runs until [`Ctl::Shutdown`] or until every handle is gone; gives the machine back.
    pub(crate) async fn run(mut self) -> Option<(M, Option<oneshot::Sender<M>>)> {
        loop {
            self.drain().await;
            if self.machine.is_closed() != self.closed_seen {
                self.closed_seen = !self.closed_seen;
                if self.closed_seen {
                    info!("the machine has ended");
                }
            }
            let wake = self
                .deadline
                .map(|d| self.start + std::time::Duration::from_micros(d.as_micros()));
            tokio::select! {
                ctl = self.ctl.recv() => match ctl {
                    None => {
                        debug!("every handle is gone: the driver stops");
                        self.stop();
                        return Some((self.machine, None));
                    }
                    Some(Ctl::Shutdown(reply)) => {
                        debug!("shutdown");
                        self.stop();
                        let Driver { machine, happenings, happenings_tx, opts, .. } = self;
                        drop(happenings_tx);
                        settle(happenings, opts.close_timeout).await;
                        return Some((machine, Some(reply)));
                    }
                    Some(ctl) => self.control(ctl),
                },
                h = self.happenings.recv() => {
                    // The driver holds a sender: `None` cannot happen.
                    if let Some(h) = h {
                        self.happening(h);
                        // Take what else is ready, so one drain answers many inputs.
                        for _ in 0..64 {
                            match self.happenings.try_recv() {
                                Ok(h) => self.happening(h),
                                Err(_) => break,
                            }
                        }
                    }
                }
                () = sleep_opt(wake) => self.feed(Input::Timeout),
            }
        }
    }

    fn control(&mut self, ctl: Ctl<M>) {
        match ctl {
            Ctl::Command(c) => self.feed(Input::Command(c)),
            Ctl::With(f) => {
                let now = self.now();
                f(&mut self.machine, now)
            }
            Ctl::Cut(reply) => {
                let cut = self.cut_streams();
                let _ = reply.send(cut);
            }
            Ctl::Stats(reply) => {
                let mut stats = self.stats;
                stats.feed_dropped = self.feed_server.as_ref().map_or(0, |f| f.dropped);
                let _ = reply.send(stats);
            }
            Ctl::Shutdown(_) => unreachable!("handled by run"),
        }
    }

    /// Cuts every open `main` transport (no flush, no close handshake) and tells the
    /// machine, as a network loss.
    fn cut_streams(&mut self) -> usize {
        let ids: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, s)| matches!(s, LinkState::Stream(_)))
            .map(|(id, _)| *id)
            .collect();
        for &id in &ids {
            if let Some(LinkState::Stream(w)) = self.links.remove(&id) {
                let _ = w.kill.send(());
            }
            self.stats.cut += 1;
            info!(link = id, "transport cut");
            self.feed(Input::Closed(Link::main(id)));
        }
        ids.len()
    }

    /// Every transport closed gracefully (its socket task writes what was queued, then
    /// closes), the socket tasks of the endpoint stopped.
    fn stop(&mut self) {
        self.links.clear();
        if let Some(a) = self.acceptor.take() {
            a.abort();
        }
        if let Some(f) = self.feed_server.take() {
            f.reader.abort();
        }
    }

    fn happening(&mut self, h: Happening) {
        match h {
            Happening::Opened { link, peer, writer } => {
                // A dial the driver forgot (it was shut down meanwhile) never gets here:
                // the task's send fails. A stream accepted is new to the driver.
                let known = self.links.contains_key(&link.id);
                if self.client.is_some() && !known {
                    return; // not ours any more (cannot happen: dials stay in the map)
                }
                self.stats.opened += 1;
                info!(link = link.id, peer = ?peer, "transport opened");
                self.links.insert(link.id, LinkState::Stream(writer));
                self.feed(Input::Opened(link));
            }
            Happening::DialFailed(link) => {
                if matches!(self.links.remove(&link.id), Some(LinkState::Dialing)) {
                    self.stats.dial_failures += 1;
                    self.feed(Input::Opened(link));
                    self.feed(Input::Closed(link));
                }
            }
            Happening::Received(link, bytes) => {
                if self.links.contains_key(&link.id) {
                    self.feed(Input::Received(link, bytes));
                }
            }
            Happening::Closed(link) => {
                if let Some(LinkState::Stream(_)) = self.links.get(&link.id) {
                    // Dropping the writer lets the socket task finish its side gracefully
                    // (a WebSocket answers the peer's close frame).
                    self.links.remove(&link.id);
                    self.stats.closed_by_peer += 1;
                    info!(
                        link = link.id,
                        "transport closed by the peer or the network"
                    );
                    self.feed(Input::Closed(link));
                }
            }
            Happening::Datagram(addr, bytes) => self.datagram(addr, bytes),
        }
    }

    /// A datagram on the server's `feed` socket: its source's link (mapped at the first
    /// datagram, within the bound).
    fn datagram(&mut self, addr: SocketAddr, bytes: Bytes) {
        let Some(fs) = self.feed_server.as_mut() else {
            return;
        };
        let now = tokio::time::Instant::now();
        let id = match fs.links.get_mut(&addr) {
            Some((id, heard)) => {
                *heard = now;
                *id
            }
            None => {
                let mut evicted = None;
                if fs.links.len() >= fs.max {
                    let oldest = fs
                        .links
                        .iter()
                        .min_by_key(|(_, (_, heard))| *heard)
                        .map(|(a, (id, heard))| (*a, *id, *heard));
                    match oldest {
                        Some((a, id, heard)) if now.duration_since(heard) >= fs.idle => {
                            fs.links.remove(&a);
                            evicted = Some(id);
                        }
                        _ => {
                            fs.dropped += 1;
                            debug!(from = %addr, dropped = fs.dropped, "feed map full: datagram from a new address dropped");
                            return;
                        }
                    }
                }
                let id = self.ids.fetch_add(1, Ordering::Relaxed);
                fs.links.insert(addr, (id, now));
                if let Some(old) = evicted {
                    self.links.remove(&old);
                    debug!(link = old, "feed address evicted (idle, map full)");
                    self.feed(Input::Closed(Link::feed(old)));
                }
                debug!(link = id, from = %addr, "feed address mapped");
                self.links.insert(id, LinkState::ServerFeed(addr));
                self.feed(Input::Opened(Link::feed(id)));
                id
            }
        };
        self.feed(Input::Received(Link::feed(id), bytes));
    }

    /// Hands every output to its socket, dial or the application, until the machine
    /// waits. With a save hook, each round of output is held until the hook succeeds.
    async fn drain(&mut self) {
        if self.save.is_some() {
            return self.drain_saving().await;
        }
        loop {
            match self.machine.poll_output() {
                Output::Wait(deadline) => {
                    self.deadline = deadline;
                    return;
                }
                out => self.output(out).await,
            }
        }
    }

    /// [`drain`](Self::drain) with a save hook: the machine's output is taken until it
    /// waits, the hook runs, and only then is the round handed on. Handing it on may feed
    /// the machine (a cut, a failed open), so this goes round until a round is empty. A
    /// failed save keeps the round held, and is tried again at the next input or after
    /// [`SAVE_RETRY`].
    async fn drain_saving(&mut self) {
        loop {
            loop {
                match self.machine.poll_output() {
                    Output::Wait(deadline) => {
                        self.deadline = deadline;
                        break;
                    }
                    out => self.held.push(out),
                }
            }
            if self.held.is_empty() {
                return;
            }
            let now = self.now();
            let saved = match self.save.as_mut() {
                Some(save) => save(&mut self.machine, now),
                None => Ok(()),
            };
            if let Err(error) = saved {
                warn!(%error, held = self.held.len(), "save failed: the round's output is held, to be saved again");
                let retry = now + SAVE_RETRY;
                self.deadline = Some(self.deadline.map_or(retry, |d| d.min(retry)));
                return;
            }
            let mut round = std::mem::take(&mut self.held);
            for out in round.drain(..) {
                self.output(out).await;
            }
            self.held = round; // empty, with its room kept for the next round
        }
    }

    /// Hands one output (not `Wait`) to its socket, dial or the application.
    async fn output(&mut self, out: Output<M::Event>) {
        match out {
            Output::Transmit(t) => self.transmit(t.link, t.payload),
            Output::Event(e) => {
                debug!(event = ?e, "machine event");
                if self.events_open && self.events.send(e).await.is_err() {
                    // The application dropped its receiver: events are discarded.
                    self.events_open = false;
                }
            }
            Output::Open(channel) => self.open(channel),
            Output::Close(link) => self.close(link),
            Output::Wait(_) => {}
        }
    }

    fn transmit(&mut self, link: Link, payload: Bytes) {
        let cut = match self.links.get(&link.id) {
            Some(LinkState::Stream(w)) => {
                let len = payload.len();
                let pending = w.unwritten.fetch_add(len, Ordering::Relaxed) + len;
                let _ = w.tx.send(payload);
                pending > self.opts.max_unwritten
            }
            Some(LinkState::ClientFeed { sock, .. }) => {
                // Lossy by nature: a full socket buffer drops the datagram.
                let _ = sock.try_send(&payload);
                false
            }
            Some(LinkState::ServerFeed(addr)) => {
                if let Some(fs) = &self.feed_server {
                    let _ = fs.sock.try_send_to(&payload, *addr);
                }
                false
            }
            Some(LinkState::Dialing) | None => false, // a link already gone
        };
        if cut {
            if let Some(LinkState::Stream(w)) = self.links.remove(&link.id) {
                let _ = w.kill.send(());
            }
            self.stats.cut += 1;
            warn!(
                link = link.id,
                max = self.opts.max_unwritten,
                "the peer does not read: transport cut"
            );
            self.feed(Input::Closed(link));
        }
    }

    fn open(&mut self, channel: Channel) {
        let Some(client) = &self.client else {
            warn!(
                ?channel,
                "a server's machine asked to open a transport: ignored"
            );
            return;
        };
        let link = Link {
            id: self.fresh_id(),
            channel,
        };
        match channel {
            Channel::Main => {
                debug!(link = link.id, to = %client.dial.addr, "dialing");
                self.links.insert(link.id, LinkState::Dialing);
                transport::spawn_dial(
                    link,
                    client.dial.clone(),
                    self.opts.clone(),
                    self.happenings_tx.clone(),
                );
            }
            Channel::Feed => match client.feed.map(bind_feed) {
                Some(Ok(sock)) => {
                    let sock = Arc::new(sock);
                    let reader = transport::spawn_udp_reader(
                        sock.clone(),
                        Some(link),
                        self.happenings_tx.clone(),
                    );
                    info!(link = link.id, local = ?sock.local_addr().ok(), "feed opened");
                    self.links
                        .insert(link.id, LinkState::ClientFeed { sock, reader });
                    self.feed(Input::Opened(link));
                }
                failed => {
                    match failed {
                        Some(Err(e)) => info!(link = link.id, error = %e, "feed bind failed"),
                        _ => warn!(
                            link = link.id,
                            "the machine asked for feed, the endpoint has none"
                        ),
                    }
                    self.feed(Input::Opened(link));
                    self.feed(Input::Closed(link));
                }
            },
        }
    }

    fn close(&mut self, link: Link) {
        match self.links.remove(&link.id) {
            // Dropping the writer: what was queued is written, then FIN or a close frame.
            Some(LinkState::Stream(w)) => drop(w),
            Some(LinkState::ClientFeed { reader, .. }) => reader.abort(),
            Some(LinkState::ServerFeed(addr)) => {
                if let Some(fs) = self.feed_server.as_mut() {
                    fs.links.remove(&addr);
                }
            }
            Some(LinkState::Dialing) | None => return,
        }
        self.stats.closed_by_machine += 1;
        info!(link = link.id, "transport closed by the machine");
        self.feed(Input::Closed(link));
    }
}

/// A client's `feed` socket: an ephemeral port of the server's address family, connected
/// to it (so only its datagrams are read).
fn bind_feed(to: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = std::net::UdpSocket::bind(local)?;
    sock.connect(to)?;
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(sock)
}

async fn accept_loop(
    listener: TcpListener,
    spec: transport::AcceptSpec,
    upgrades: Option<Arc<Semaphore>>,
    opts: Arc<Options>,
    ids: Arc<AtomicU64>,
    tx: mpsc::Sender<Happening>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match &upgrades {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    info!(from = %peer, "too many upgrades in progress: stream dropped");
                    continue;
                }
            },
        };
        let link = Link::main(ids.fetch_add(1, Ordering::Relaxed));
        debug!(link = link.id, from = %peer, "accepted");
        transport::spawn_accepted(
            link,
            tcp,
            peer,
            spec.clone(),
            opts.clone(),
            tx.clone(),
            permit,
        );
    }
}

async fn sleep_opt(until: Option<tokio::time::Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Waits for the socket tasks to end, at most `close_timeout` and a margin: each holds a
/// sender of `happenings`, so the channel ends when the last one is done. A closing
/// transport writes what was queued and finishes its close first, so what the machine sent
/// last (a formal disconnection, say) is on the wire before [`Handle::shutdown`] returns.
/// What the tasks still report is dropped: the machine is not told.
///
/// [`Handle::shutdown`]: crate::Handle::shutdown
async fn settle(mut happenings: mpsc::Receiver<Happening>, close_timeout: std::time::Duration) {
    let within = close_timeout + std::time::Duration::from_millis(250);
    let drained = async { while happenings.recv().await.is_some() {} };
    let _ = tokio::time::timeout(within, drained).await;
}
