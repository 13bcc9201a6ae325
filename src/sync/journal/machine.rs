//! [`JournalMachine`]: [`JournalSync`] alone over one `main` transport, as a [`Machine`].

use super::session::JournalSync;
use super::store::JournalStore;
use super::types::{Role, SyncCommand, SyncConfig, SyncError, SyncEvent, SyncOutput};
use crate::driver::{Channel, Input, Link, Machine, Outbox, Output};
use crate::time::Instant;
use crate::wire::{FrameDecoder, Message, DEFAULT_MAX_FRAME};

/// Journal sync over one `main` transport (length-prefixed frames), usable on its own.
///
/// The transport is the caller's: [`Input::Opened`] with a `main` link brings the
/// connection up (a second one replaces the first), [`Input::Closed`] takes it down (the
/// context in flight is abandoned and resent from the confirmed mark once up again).
/// `feed` links are ignored. A frame that does not decode is answered with status 400 and
/// reported as a non-fatal [`SyncError::Malformed`]; a frame length over the maximum is
/// fatal (the stream cannot be read past it) and sticky.
///
/// ```
/// use tether::sync::journal::{JournalMachine, MemJournal, Role, SyncConfig};
/// use tether::{Input, Instant, Link, Machine, Output};
///
/// let mut m = JournalMachine::new(Role::Client, SyncConfig::default(), MemJournal::new(1, 100));
/// m.handle_input(Instant::ZERO, Input::Opened(Link::main(1))).unwrap();
/// // Once up, the client asks for the server's journal: a SYNC_REQ frame.
/// let Output::Transmit(t) = m.poll_output() else { panic!() };
/// assert_eq!(t.payload[4], 13);
/// ```
#[derive(Debug)]
pub struct JournalMachine<S> {
    core: JournalSync,
    store: S,
    link: Option<Link>,
    decoder: FrameDecoder,
    outbox: Outbox<SyncEvent>,
    failed: Option<SyncError>,
    now: Instant,
}

impl<S: JournalStore> JournalMachine<S> {
    /// A machine for `role` over `store`, waiting for a `main` transport.
    pub fn new(role: Role, config: SyncConfig, store: S) -> Self {
        JournalMachine {
            core: JournalSync::new(role, config),
            store,
            link: None,
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
            outbox: Outbox::new(),
            failed: None,
            now: Instant::ZERO,
        }
    }

    /// The message-level machine inside (marks, stats).
    pub fn core(&self) -> &JournalSync {
        &self.core
    }

    /// The message-level machine inside, mutably.
    pub fn core_mut(&mut self) -> &mut JournalSync {
        &mut self.core
    }

    /// The journal.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The journal, to change it directly (appends made here are not broadcast: use
    /// [`SyncCommand::Append`]).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The current `main` link, if up.
    pub fn link(&self) -> Option<Link> {
        self.link
    }

    fn down(&mut self) {
        if self.link.take().is_some() {
            self.decoder.reset();
            self.core.connection_down(self.now);
        }
    }

    fn received(&mut self, bytes: bytes::Bytes) -> Result<(), SyncError> {
        // Zero-copy: a frame wholly inside `bytes` is handed out as a slice of it.
        self.decoder.push_bytes(bytes);
        let mut first_err = None;
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => match Message::decode(frame.clone()) {
                    Ok(msg) => self.core.handle_message(self.now, &mut self.store, msg),
                    Err(e) => {
                        let err = self.core.handle_malformed(self.now, &frame, e);
                        first_err.get_or_insert(err);
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    let err = SyncError::Frame(e);
                    self.failed = Some(err.clone());
                    if let Some(link) = self.link {
                        self.outbox.close(link);
                    }
                    self.down();
                    return Err(err);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl<S: JournalStore> Machine for JournalMachine<S> {
    type Command = SyncCommand;
    type Event = SyncEvent;
    type Error = SyncError;

    fn handle_input(&mut self, now: Instant, input: Input<SyncCommand>) -> Result<(), SyncError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.now = self.now.max(now);
        match input {
            Input::Opened(link) if link.channel == Channel::Main => {
                self.down();
                self.link = Some(link);
                self.core.connection_up(self.now, &self.store);
                Ok(())
            }
            Input::Opened(_) => Ok(()),
            Input::Closed(link) => {
                if Some(link) == self.link {
                    self.down();
                }
                Ok(())
            }
            Input::Received(link, bytes) => {
                if Some(link) != self.link {
                    return Ok(()); // late bytes of a replaced or closed transport
                }
                self.received(bytes)
            }
            Input::Timeout => {
                self.core.handle_timeout(self.now);
                Ok(())
            }
            Input::Command(cmd) => self.core.command(self.now, &mut self.store, cmd),
        }
    }

    fn poll_output(&mut self) -> Output<SyncEvent> {
        loop {
            if let Some(o) = self.outbox.pop() {
                return o;
            }
            match self.core.poll(&self.store) {
                Some(SyncOutput::Send(msg)) => {
                    if let Some(link) = self.link {
                        self.outbox.send_framed(link, &msg);
                    }
                }
                Some(SyncOutput::Event(e)) => {
                    if e == SyncEvent::IdleTimeout {
                        // 408 sent: drop the connection, as SDMP allows.
                        if let Some(link) = self.link {
                            self.outbox.close(link);
                        }
                    }
                    return Output::Event(e);
                }
                None => return Output::Wait(self.core.deadline()),
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.core.has_output() {
            return Some(self.now);
        }
        self.outbox.timeout(self.now, self.core.deadline())
    }

    /// After a fatal error ([`SyncError::Frame`]): the stream cannot be read any more.
    fn is_closed(&self) -> bool {
        self.failed.is_some()
    }
}
