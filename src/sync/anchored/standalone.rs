//! A [`Machine`] over one `main` link for either core, so the anchored machines can be used
//! (and tested, and fuzzed) on their own, through the driver contract.

use super::{AnchoredError, Step};
use crate::driver::{Input, Link, Machine, Outbox, Output};
use crate::time::Instant;
use crate::wire::{DecodeError, FrameDecoder, Message, DEFAULT_MAX_FRAME};

/// What [`Standalone`] needs of a message-level core ([`ClientSession`](super::ClientSession)
/// or [`ServerSession`](super::ServerSession)).
pub trait SessionCore {
    /// The application's commands.
    type Command;
    /// What the core tells the application.
    type Event;
    /// One decoded message from the peer.
    fn handle_message(&mut self, now: Instant, msg: Message) -> Result<(), AnchoredError>;
    /// Bytes from the peer that did not decode: the session ends and the peer is told.
    fn malformed(&mut self, now: Instant, err: DecodeError) -> AnchoredError;
    /// An application command.
    fn command(&mut self, now: Instant, cmd: Self::Command) -> Result<(), AnchoredError>;
    /// The deadline passed (early calls are harmless).
    fn timeout(&mut self, now: Instant) -> Result<(), AnchoredError>;
    /// The transport is gone: the session (if any) is cut, anchors untouched.
    fn cut(&mut self, now: Instant) -> Result<(), AnchoredError>;
    /// The next output.
    fn poll(&mut self) -> Option<Step<Self::Event>>;
    /// When [`SessionCore::timeout`] is due, if a session runs.
    fn deadline(&self) -> Option<Instant>;
}

/// A core driven over one `main` transport with length-prefixed frames.
///
/// `Opened(link)` on `main` makes `link` the transport (cutting any session on the previous
/// one); bytes on any other link are dropped; `Closed` of the current link cuts the session.
/// A frame length over the maximum is fatal ([`AnchoredError::Frame`]: the stream cannot be
/// read past it) and sticky: every later input returns it.
#[derive(Debug)]
pub struct Standalone<C: SessionCore> {
    core: C,
    link: Option<Link>,
    decoder: FrameDecoder,
    outbox: Outbox<C::Event>,
    failed: Option<AnchoredError>,
    now: Instant,
}

impl<C: SessionCore> Standalone<C> {
    /// Wraps a core, with frames of at most [`DEFAULT_MAX_FRAME`] bytes.
    pub fn new(core: C) -> Self {
        Self::with_max_frame(core, DEFAULT_MAX_FRAME)
    }

    /// Wraps a core, refusing frames over `max_frame` bytes.
    pub fn with_max_frame(core: C, max_frame: usize) -> Self {
        Standalone {
            core,
            link: None,
            decoder: FrameDecoder::new(max_frame),
            outbox: Outbox::new(),
            failed: None,
            now: Instant::ZERO,
        }
    }

    /// The core.
    pub fn core(&self) -> &C {
        &self.core
    }

    /// The core, mutably (to reach its store between sessions).
    pub fn core_mut(&mut self) -> &mut C {
        &mut self.core
    }

    /// The current transport.
    pub fn link(&self) -> Option<Link> {
        self.link
    }

    fn flush(&mut self) {
        while let Some(step) = self.core.poll() {
            match step {
                Step::Send(m) => {
                    // With no transport the session was cut: nothing can go out.
                    if let Some(link) = self.link {
                        self.outbox.send_framed(link, &Message::Anchored(m));
                    }
                }
                Step::Event(e) => self.outbox.event(e),
            }
        }
    }

    fn receive(&mut self, now: Instant, bytes: bytes::Bytes) -> Result<(), AnchoredError> {
        // Zero-copy: a frame wholly inside `bytes` is handed out as a slice of it.
        self.decoder.push_bytes(bytes);
        let mut first_err = None;
        loop {
            match self.decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    let r = match Message::decode(frame) {
                        Ok(msg) => self.core.handle_message(now, msg),
                        Err(e) => Err(self.core.malformed(now, e)),
                    };
                    if let Err(e) = r {
                        first_err.get_or_insert(e);
                    }
                }
                Err(e) => {
                    // The stream cannot be resynchronised after a bad length: tell the peer,
                    // then close the transport, for good.
                    let err = match self.core.malformed(now, e) {
                        AnchoredError::Malformed(e) => AnchoredError::Frame(e),
                        other => other,
                    };
                    self.flush();
                    if let Some(link) = self.link.take() {
                        self.outbox.close(link);
                    }
                    let cut = self.core.cut(now);
                    let err = cut.err().unwrap_or(err);
                    if err.is_fatal() {
                        self.failed = Some(err.clone());
                    }
                    return Err(err);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl<C: SessionCore> Machine for Standalone<C> {
    type Command = C::Command;
    type Event = C::Event;
    type Error = AnchoredError;

    fn handle_input(
        &mut self,
        now: Instant,
        input: Input<C::Command>,
    ) -> Result<(), AnchoredError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        // Time never goes backwards inside the machine, whatever the caller passes.
        self.now = self.now.max(now);
        let now = self.now;
        let r = match input {
            Input::Opened(link) if link.channel == crate::Channel::Main => {
                let cut = if self.link.is_some() {
                    self.core.cut(now)
                } else {
                    Ok(())
                };
                self.link = Some(link);
                self.decoder.reset();
                cut
            }
            Input::Opened(_) => Ok(()),
            Input::Closed(link) => {
                if self.link == Some(link) {
                    self.link = None;
                    self.core.cut(now)
                } else {
                    Ok(())
                }
            }
            Input::Received(link, bytes) => {
                if self.link == Some(link) {
                    self.receive(now, bytes)
                } else {
                    Ok(())
                }
            }
            Input::Timeout => self.core.timeout(now),
            Input::Command(cmd) => {
                if self.link.is_none() {
                    Err(AnchoredError::NoLink)
                } else {
                    self.core.command(now, cmd)
                }
            }
        };
        self.flush();
        r
    }

    fn poll_output(&mut self) -> Output<C::Event> {
        self.flush();
        self.outbox.pop_or_wait(self.core.deadline())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.outbox.timeout(self.now, self.core.deadline())
    }

    /// After a fatal error ([`AnchoredError::Frame`]): the stream cannot be read any more.
    fn is_closed(&self) -> bool {
        self.failed.is_some()
    }
}
