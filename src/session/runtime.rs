//! One session's runtime, shared by the four connection machines: delivery, liveness and
//! the bounded send queue, over whichever link the session holds now.
//!
//! A profile hands it whole payloads (a length-prefixed frame in tether's encoding, one
//! text message in dop's) and tells it when the session's link comes up, goes down, or
//! the session ends; it decides what to write, when to acknowledge, when a heartbeat is
//! due and when the peer is dead.

use super::{Delivery, DeliveryConfig, Full, Liveness, Undelivered};
use crate::driver::{Link, Outbox};
use crate::time::{Duration, Instant};
use crate::wire::Message;
use alloc::collections::VecDeque;
use bytes::Bytes;

/// How a session's messages are delivered.
#[derive(Debug, Clone)]
enum Mode {
    /// tether's encoding: numbered, acknowledged, replayed after a resumption.
    Reliable(Delivery),
    /// dop's encoding (no room for numbers): at most once. Messages sent while the
    /// session is down wait here; once written they are gone.
    AtMostOnce { queue: VecDeque<Bytes>, max: usize },
}

/// What a timeout means for the session's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing to do, or a heartbeat was sent.
    Alive,
    /// Nothing arrived for 1.5 x keepalive: close the link, take the lost-transport path.
    Dead,
}

/// Why the peer's `ACK` was refused, and so what becomes of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckFault {
    /// The first `ACK` on a resumed link does not fit this side's record of the session:
    /// it names messages never sent here (this side's copy is older than the peer's), or
    /// goes back before what the peer acknowledged already (the peer's is older). One side
    /// resumed from an older copy of the session (a snapshot restored after a restart):
    /// messages one side counts as delivered are gone on the other, so the session cannot
    /// continue exactly once, on this transport or any other. It must end on both sides;
    /// the client starts a fresh one.
    Diverged(super::AckError),
    /// An impossible `ACK` in the middle of a session: the peer is broken. Only the
    /// transport is refused; the session waits for a resumption.
    Invalid(super::AckError),
}

/// One session's delivery, liveness and queue.
#[derive(Debug, Clone)]
pub(crate) struct SessionCore {
    mode: Mode,
    live: Liveness,
    /// Whether the session's link is up (handshake done, not lost).
    up: bool,
}

impl SessionCore {
    /// A reliable session (tether's encoding) holding at most `max_messages` frames.
    pub fn reliable(
        cfg: DeliveryConfig,
        max_messages: usize,
        keepalive: Option<Duration>,
        now: Instant,
    ) -> Self {
        let cfg = DeliveryConfig {
            max_messages,
            ..cfg
        };
        SessionCore {
            mode: Mode::Reliable(Delivery::new(cfg)),
            live: Liveness::new(now, keepalive),
            up: false,
        }
    }

    /// An at-most-once session (dop's encoding): no numbers, no heartbeat.
    pub fn at_most_once(max_messages: usize, now: Instant) -> Self {
        SessionCore {
            mode: Mode::AtMostOnce {
                queue: VecDeque::new(),
                max: max_messages,
            },
            live: Liveness::new(now, None),
            up: false,
        }
    }

    /// A session restored from a snapshot: the peer acknowledged `acked`, this side
    /// received `received`, and `messages` were held (numbered from `acked + 1` when
    /// reliable). Its link comes up resumed.
    pub fn restored(&mut self, acked: u64, received: u64, messages: alloc::vec::Vec<Message>) {
        match &mut self.mode {
            Mode::Reliable(d) => {
                let frames = messages
                    .iter()
                    .map(|m| {
                        let mut b = bytes::BytesMut::new();
                        m.encode_framed(&mut b);
                        b.freeze()
                    })
                    .collect();
                *d = Delivery::restore(d.config(), acked, received, frames);
            }
            Mode::AtMostOnce { queue, .. } => {
                *queue = messages
                    .into_iter()
                    .filter_map(|m| match m {
                        Message::App(t) => Some(t),
                        _ => None,
                    })
                    .collect();
            }
        }
    }

    /// The delivery counters and held messages, for a snapshot: (acked, received,
    /// messages oldest first).
    pub fn snapshot(&self) -> (u64, u64, alloc::vec::Vec<Message>) {
        match &self.mode {
            Mode::Reliable(d) => (
                d.acked(),
                d.received(),
                d.frames()
                    .filter_map(|f| {
                        Message::decode(f.slice(crate::wire::FRAME_HEADER_LEN.min(f.len())..)).ok()
                    })
                    .collect(),
            ),
            Mode::AtMostOnce { queue, .. } => {
                (0, 0, queue.iter().cloned().map(Message::App).collect())
            }
        }
    }

    /// Whether messages are numbered and replayed.
    pub fn is_reliable(&self) -> bool {
        matches!(self.mode, Mode::Reliable(_))
    }

    /// Messages held: unacknowledged or waiting.
    pub fn held(&self) -> usize {
        match &self.mode {
            Mode::Reliable(d) => d.held(),
            Mode::AtMostOnce { queue, .. } => queue.len(),
        }
    }

    /// Takes a payload to send; written at once if the link is up, else when it is.
    pub fn send<E>(
        &mut self,
        out: &mut Outbox<E>,
        link: Option<Link>,
        payload: Bytes,
        now: Instant,
    ) -> Result<(), Full> {
        match &mut self.mode {
            Mode::Reliable(d) => match link.filter(|_| self.up) {
                Some(l) => match d.push_write(payload)? {
                    // Nothing waited before it: written now, no other frame to write.
                    Some(f) => {
                        out.send_raw(l, f);
                        self.live.on_sent(now);
                    }
                    None => self.flush(out, link, now),
                },
                None => d.push(payload)?,
            },
            Mode::AtMostOnce { queue, max } => match link.filter(|_| self.up) {
                Some(l) => out.send_raw(l, payload),
                None if queue.len() >= *max => {
                    return Err(Full {
                        max_messages: *max,
                        max_bytes: usize::MAX,
                    })
                }
                None => queue.push_back(payload),
            },
        }
        Ok(())
    }

    /// Writes what may be written now on `link`.
    pub fn flush<E>(&mut self, out: &mut Outbox<E>, link: Option<Link>, now: Instant) {
        let Some(link) = link.filter(|_| self.up) else {
            return;
        };
        match &mut self.mode {
            Mode::Reliable(d) => {
                let mut wrote = false;
                while let Some(f) = d.next_to_write() {
                    out.send_raw(link, f);
                    wrote = true;
                }
                if wrote {
                    self.live.on_sent(now);
                }
            }
            Mode::AtMostOnce { queue, .. } => {
                while let Some(p) = queue.pop_front() {
                    out.send_raw(link, p);
                }
            }
        }
    }

    /// Bytes arrived on the session's link.
    pub fn on_bytes(&mut self, now: Instant) {
        self.live.on_received(now);
    }

    /// A numbered message of `len` bytes arrived: count it, acknowledge when due.
    pub fn on_message<E>(&mut self, out: &mut Outbox<E>, link: Link, len: usize, now: Instant) {
        if let Mode::Reliable(d) = &mut self.mode {
            if d.on_received(len) {
                let n = d.take_ack();
                out.send_framed(link, &Message::Ack { received: n });
                self.live.on_sent(now);
            }
        }
    }

    /// The peer's ACK; `Err` if it cannot be true, saying whether the session diverged (it
    /// must end) or only the link must be refused.
    pub fn on_ack<E>(
        &mut self,
        out: &mut Outbox<E>,
        link: Link,
        acked: u64,
        now: Instant,
    ) -> Result<(), AckFault> {
        if let Mode::Reliable(d) = &mut self.mode {
            // Read before the ACK releases the hold: only the first ACK on a resumed link
            // compares the two sides' records of the session.
            let resuming = d.is_holding();
            d.on_ack(acked).map_err(|e| {
                if resuming {
                    AckFault::Diverged(e)
                } else {
                    AckFault::Invalid(e)
                }
            })?;
        }
        self.flush(out, Some(link), now);
        Ok(())
    }

    /// Whether the session is up on a resumed link whose peer's first `ACK` has not arrived
    /// yet: the resumption is not proven until that `ACK` fits (see [`AckFault::Diverged`]).
    pub fn awaits_resume_ack(&self) -> bool {
        self.up && matches!(&self.mode, Mode::Reliable(d) if d.is_holding())
    }

    /// The session is up on `link`. Resumed: send our ACK first and hold until the
    /// peer's. Fresh: numbering starts again; what an earlier session of this machine
    /// left unacknowledged is returned (`continues_queue`: the messages were sent before
    /// any session existed, so they belong to this one and are kept).
    pub fn link_up<E>(
        &mut self,
        out: &mut Outbox<E>,
        link: Link,
        resumed: bool,
        continues_queue: bool,
        now: Instant,
    ) -> Undelivered {
        self.up = true;
        self.live = Liveness::new(now, self.live.keepalive());
        let mut lost = Undelivered::new();
        if let Mode::Reliable(d) = &mut self.mode {
            if resumed {
                d.link_resumed();
                let n = d.take_ack();
                out.send_framed(link, &Message::Ack { received: n });
                self.live.on_sent(now);
            } else {
                if continues_queue {
                    // What waits was sent for this session: kept, numbered from 1.
                    d.renumber();
                } else {
                    lost = d.restart();
                }
                d.link_fresh();
            }
        }
        self.flush(out, Some(link), now);
        lost
    }

    /// The sync layer above started over: its held frames are obsolete (see
    /// [`Delivery::supersede_sync`]).
    pub fn supersede_sync(&mut self) {
        if let Mode::Reliable(d) = &mut self.mode {
            d.supersede_sync();
        }
    }

    /// The link is gone; the session may come back.
    pub fn link_down(&mut self) {
        self.up = false;
        if let Mode::Reliable(d) = &mut self.mode {
            d.link_lost();
        }
    }

    /// The session ended: what was never delivered (acknowledged, or written in dop's
    /// encoding).
    pub fn end(&mut self) -> Undelivered {
        self.up = false;
        match &mut self.mode {
            Mode::Reliable(d) => d.take_undelivered(),
            Mode::AtMostOnce { queue, .. } => queue.drain(..).map(Message::App).collect(),
        }
    }

    /// When bytes last arrived on the session's link (anything: the peer's messages, its
    /// acknowledgements, its heartbeats), while the link is up; the link's start if none
    /// did since. The layer above uses it to tell an idle peer from a silent one.
    pub fn last_received(&self) -> Option<Instant> {
        self.up.then(|| self.live.last_received())
    }

    /// The next liveness deadline while up.
    pub fn deadline(&self) -> Option<Instant> {
        if self.up {
            self.live.deadline()
        } else {
            None
        }
    }

    /// A timeout: the peer is dead, or a heartbeat is due (sent here).
    pub fn on_timeout<E>(
        &mut self,
        out: &mut Outbox<E>,
        link: Option<Link>,
        now: Instant,
    ) -> Verdict {
        let Some(link) = link.filter(|_| self.up) else {
            return Verdict::Alive;
        };
        if self.live.is_dead(now) {
            return Verdict::Dead;
        }
        if self.live.heartbeat_due(now) {
            if let Mode::Reliable(d) = &mut self.mode {
                // Nothing was sent for a keepalive: an idle session keeps no replay buffer.
                d.trim();
                let n = d.take_ack();
                out.send_framed(link, &Message::Ack { received: n });
                self.live.on_sent(now);
            }
        }
        Verdict::Alive
    }
}
