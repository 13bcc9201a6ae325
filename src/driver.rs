//! The driver contract: the one shape of input and output that every tether machine shares.
//!
//! A machine is driven through two doors:
//!
//! - **in**: [`Machine::handle_input`] with the caller's `now` and one [`Input`]: bytes
//!   received on a transport, a transport opened or closed, a timeout that fired, or an
//!   application command;
//! - **out**: [`Machine::poll_output`], called until it returns [`Output::Wait`], yields
//!   transmits, events, requests to open or close a transport, and finally the next deadline.
//!
//! While any output is queued, `poll_output` returns it rather than `Wait`, so a driver that
//! drains before sleeping can never sleep on unsent output; [`Machine::poll_timeout`] says
//! "now" in that case too.

use crate::time::Instant;
use crate::wire::Message;
use alloc::collections::VecDeque;
use bytes::{Bytes, BytesMut};

/// The two channels of a tether connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Channel {
    /// A reliable, ordered byte stream (TCP, a WebSocket): handshakes, sync, important
    /// messages. Carries length-prefixed frames.
    Main,
    /// Datagrams that may be lost, duplicated or reordered (UDP): real-time updates.
    Feed,
}

/// One transport, named by the caller: an id the caller chose (unique among the transports
/// it has open with this machine) and the channel it serves.
///
/// The id lets a machine tell a new transport from an old one: bytes that arrive late on a
/// transport that has been replaced are recognised and dropped. For a server's `feed`
/// socket, the caller maps each peer address to an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Link {
    /// The caller's id for the transport.
    pub id: u64,
    /// The channel it serves.
    pub channel: Channel,
}

impl Link {
    /// A `main` transport with this id.
    pub const fn main(id: u64) -> Link {
        Link {
            id,
            channel: Channel::Main,
        }
    }
    /// A `feed` transport with this id.
    pub const fn feed(id: u64) -> Link {
        Link {
            id,
            channel: Channel::Feed,
        }
    }
}

/// Everything that goes into a machine, with the caller's `now` beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Input<C> {
    /// A transport is open (after [`Output::Open`], or accepted by a server).
    Opened(Link),
    /// Bytes arrived: a chunk of the stream on `main` (any split), one datagram on `feed`.
    Received(
        Link,
        #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::wire::arbitrary_bytes))] Bytes,
    ),
    /// A transport closed (by the peer, the network, or after [`Output::Close`]).
    Closed(Link),
    /// The deadline last returned by [`Output::Wait`] has passed (an early or spurious
    /// timeout is harmless: machines look at `now`).
    Timeout,
    /// An application command.
    Command(C),
}

/// Bytes to send on a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send them.
    pub link: Link,
    /// What to send: complete frames for `main` (write them all), one datagram for `feed`.
    pub payload: Bytes,
}

/// Everything that comes out of a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<E> {
    /// Send these bytes.
    Transmit(Transmit),
    /// Something the application should know.
    Event(E),
    /// Open a new transport for this channel, then report it with [`Input::Opened`].
    Open(Channel),
    /// Close this transport (after sending what was transmitted on it before).
    Close(Link),
    /// Nothing more to do until this deadline (feed [`Input::Timeout`] then) or new input;
    /// `None`: until new input.
    Wait(Option<Instant>),
}

/// The shape every tether machine has.
///
/// A driver loop (the transport and timer calls are the caller's runtime):
///
/// ```
/// use tether::{Instant, Machine, Output, Input};
///
/// fn drive<M: Machine>(machine: &mut M, now: Instant) -> Option<Instant> {
///     loop {
///         match machine.poll_output() {
///             Output::Transmit(t) => { /* write t.payload to the transport t.link */ }
///             Output::Event(e) => { /* hand e to the application */ }
///             Output::Open(channel) => { /* connect, then Input::Opened(link) */ }
///             Output::Close(link) => { /* close the transport, then Input::Closed(link) */ }
///             Output::Wait(deadline) => return deadline, // sleep until then or new input
///         }
///     }
/// }
/// ```
pub trait Machine {
    /// What the application can ask of the machine.
    type Command;
    /// What the machine tells the application.
    type Event;
    /// Why an input was refused. Fatal errors are sticky: every later call returns them.
    /// Each machine's error says who misbehaved with an `origin()` method ([`Origin`]).
    type Error: core::error::Error;

    /// Feeds one input at time `now`.
    fn handle_input(
        &mut self,
        now: Instant,
        input: Input<Self::Command>,
    ) -> Result<(), Self::Error>;

    /// The next output; [`Output::Wait`] once nothing is queued.
    fn poll_output(&mut self) -> Output<Self::Event>;

    /// The next deadline: the time of the last input while output is queued, else what
    /// [`Output::Wait`] would say.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Whether the machine has ended: nothing it does from here on moves it on by itself,
    /// so a driver may stop polling it and drop it once the last output is drained. Which
    /// end counts is each machine's (a sticky fatal error, a client that gave up or was
    /// disconnected); a server that serves until dropped is never closed.
    fn is_closed(&self) -> bool;
}

/// A machine borrowed is a machine: code generic over [`Machine`] (a driver loop, the
/// testkit's `Pair`) can drive one it does not own, and give it back.
impl<M: Machine + ?Sized> Machine for &mut M {
    type Command = M::Command;
    type Event = M::Event;
    type Error = M::Error;

    fn handle_input(
        &mut self,
        now: Instant,
        input: Input<Self::Command>,
    ) -> Result<(), Self::Error> {
        (**self).handle_input(now, input)
    }

    fn poll_output(&mut self) -> Output<Self::Event> {
        (**self).poll_output()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }

    fn is_closed(&self) -> bool {
        (**self).is_closed()
    }
}

/// Who misbehaved when a machine refused an input: what an error's `origin()` says, so a
/// driver can tell its own bugs (fix the caller) from a peer's (log it, drop the peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The local caller: a command that makes no sense now, a configuration or token source
    /// that cannot work, a transport reported twice, a call after the machine ended.
    Local,
    /// The remote peer: bytes that do not decode, or messages the protocol does not allow
    /// at this point (the peer was told, where the protocol has a way to tell it).
    Remote,
}

/// Errors that know their [`Origin`], for code generic over machines (the composed peer
/// asks its connection's error through it). Every machine error implements it with the
/// same answer as its inherent `origin()` method.
pub trait HasOrigin {
    /// Who misbehaved.
    fn origin(&self) -> Origin;
}

/// A queue of outputs with an encoding buffer, shared by the machines.
///
/// Encoding goes into one growing `BytesMut` and each transmit is split off it as a
/// `Bytes`, so a steady state allocates only when the buffer's capacity runs out.
#[derive(Debug, Clone)]
pub struct Outbox<E> {
    queue: VecDeque<Output<E>>,
    buf: BytesMut,
}

impl<E> Default for Outbox<E> {
    fn default() -> Self {
        Outbox {
            queue: VecDeque::new(),
            buf: BytesMut::new(),
        }
    }
}

impl<E> Outbox<E> {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `msg` as one frame on the `main` transport `link`.
    pub fn send_framed(&mut self, link: Link, msg: &Message) {
        msg.encode_framed(self.buf());
        let payload = self.buf.split().freeze();
        self.queue
            .push_back(Output::Transmit(Transmit { link, payload }));
    }

    /// Queues raw bytes (already a frame or a datagram) on `link`.
    pub fn send_raw(&mut self, link: Link, payload: Bytes) {
        self.queue
            .push_back(Output::Transmit(Transmit { link, payload }));
    }

    /// The encoding buffer, for callers that build a payload in place; take the result
    /// with [`Outbox::take_buf`].
    ///
    /// It grows by 16 KiB at a time, so that many small payloads are split off one
    /// allocation rather than each allocating its own.
    pub fn buf(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(16 * 1024);
        }
        &mut self.buf
    }

    /// Splits off what was written into [`Outbox::buf`].
    pub fn take_buf(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Queues an event.
    pub fn event(&mut self, event: E) {
        self.queue.push_back(Output::Event(event));
    }

    /// Asks the caller to open a transport.
    pub fn open(&mut self, channel: Channel) {
        self.queue.push_back(Output::Open(channel));
    }

    /// Asks the caller to close a transport.
    pub fn close(&mut self, link: Link) {
        self.queue.push_back(Output::Close(link));
    }

    /// Whether anything is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Outputs queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// The next queued output, or `Wait(deadline)`.
    pub fn pop_or_wait(&mut self, deadline: Option<Instant>) -> Output<E> {
        self.queue.pop_front().unwrap_or(Output::Wait(deadline))
    }

    /// The next queued output, if any.
    pub fn pop(&mut self) -> Option<Output<E>> {
        self.queue.pop_front()
    }

    /// `now` if output is queued, else `deadline`: the contract of [`Machine::poll_timeout`].
    pub fn timeout(&self, now: Instant, deadline: Option<Instant>) -> Option<Instant> {
        if self.queue.is_empty() {
            deadline
        } else {
            Some(now)
        }
    }
}

/// The earliest of some optional deadlines.
///
/// ```
/// use tether::{driver::earliest, Instant};
/// let a = Some(Instant::from_millis(5));
/// assert_eq!(earliest([None, a, Some(Instant::from_millis(9))]), a);
/// assert_eq!(earliest([None, None]), None);
/// ```
pub fn earliest<I: IntoIterator<Item = Option<Instant>>>(deadlines: I) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}
