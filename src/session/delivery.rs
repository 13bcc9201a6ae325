//! Exactly-once, in-order delivery of a session's messages across cuts and resumptions.
//!
//! Every application-level frame a session sends on `main` is numbered implicitly: the
//! first is 1, the next 2, and so on for the life of the session (SignalR's stateful
//! reconnect and MQTT's QoS 1 are the models). Both sides count what they receive and say
//! so with `ACK [RECEIVED u64]`: cumulatively, every [`DeliveryConfig::ack_every`] messages
//! or [`DeliveryConfig::ack_bytes`] bytes, and as the heartbeat when the link is otherwise
//! idle. The sender keeps each frame until it is acknowledged, in a replay buffer bounded
//! by messages and bytes.
//!
//! When a session resumes on a new transport, each side first sends its `ACK` and holds
//! every frame until the peer's `ACK` has arrived on the new transport; then it replays
//! the frames after the peer's count, in order, and continues. A frame is therefore
//! received exactly once and in order, across any number of cuts and resumes. When the
//! session ends, the frames never acknowledged are handed back to the application
//! ([`Delivery::take_undelivered`]): nothing is dropped without a report.
//!
//! Bytes held per session: at most [`DeliveryConfig::max_bytes`] of frames (one frame of
//! any legal size is always accepted into an empty buffer), in at most
//! [`DeliveryConfig::max_messages`] entries.

use crate::wire::{Message, FRAME_HEADER_LEN};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use bytes::{Bytes, BytesMut};

/// Bounds and acknowledgement rate of a session's delivery. `Default` gives the values
/// documented on each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Most frames held, sent and not yet acknowledged or not yet sent (1,024). Past it a
    /// send is refused with a typed `QueueFull`; nothing is dropped.
    pub max_messages: usize,
    /// Most bytes of frames held (1 MiB; SignalR keeps 100 kB by default, tether's frames
    /// may be up to 1 MiB). A single frame of any legal size is accepted into an empty
    /// buffer.
    pub max_bytes: usize,
    /// Acknowledge after this many frames received (32). Keep it well below the peer's
    /// bound on frames held, or the peer waits for the heartbeat to free its buffer.
    pub ack_every: u32,
    /// Acknowledge after this many bytes received (64 KiB), whichever comes first.
    pub ack_bytes: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_messages: 1_024,
            max_bytes: 1 << 20,
            ack_every: 32,
            ack_bytes: 64 << 10,
        }
    }
}

/// The replay buffer is full: the frame was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// The bound on frames.
    pub max_messages: usize,
    /// The bound on bytes.
    pub max_bytes: usize,
}

/// The peer's `ACK` cannot be true: it names frames never sent, or it goes back before
/// what it acknowledged already (the peer lost state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// It acknowledges more frames than were sent.
    Unsent {
        /// What it acknowledged.
        acked: u64,
        /// What was sent.
        sent: u64,
    },
    /// It goes back before an earlier acknowledgement: the frames between are gone here.
    Backwards {
        /// What it acknowledged.
        acked: u64,
        /// What it had acknowledged before.
        before: u64,
    },
}

/// [`DeliveryConfig`] held compactly (every idle session has one).
#[derive(Debug, Clone, Copy)]
struct Bounds {
    max_messages: u32,
    max_bytes: u32,
    ack_every: u32,
    ack_bytes: u32,
}

impl From<DeliveryConfig> for Bounds {
    fn from(c: DeliveryConfig) -> Self {
        let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Bounds {
            max_messages: clamp(c.max_messages),
            max_bytes: clamp(c.max_bytes),
            ack_every: c.ack_every.max(1),
            ack_bytes: clamp(c.ack_bytes),
        }
    }
}

impl From<Bounds> for DeliveryConfig {
    fn from(b: Bounds) -> Self {
        DeliveryConfig {
            max_messages: b.max_messages as usize,
            max_bytes: b.max_bytes as usize,
            ack_every: b.ack_every,
            ack_bytes: b.ack_bytes as usize,
        }
    }
}

/// One session's delivery state: the replay buffer out, the count in.
///
/// ```
/// use tether::session::{Delivery, DeliveryConfig};
/// use bytes::Bytes;
///
/// let mut a = Delivery::new(DeliveryConfig::default());
/// a.push(Bytes::from_static(b"\0\0\0\x01\x50")).unwrap();
/// assert!(a.next_to_write().is_some()); // written on the link
/// // The link is cut; the session resumes and the peer says it received nothing.
/// a.link_resumed();
/// assert!(a.next_to_write().is_none()); // held until the peer's ACK
/// a.on_ack(0).unwrap();
/// assert!(a.next_to_write().is_some()); // replayed
/// a.on_ack(1).unwrap();
/// assert_eq!(a.held(), 0);
/// ```
///
/// How frames are held: the bytes of a frame of up to [`Delivery::COPY_MAX`] bytes are
/// copied, as it is pushed, into one ring of bytes, where it ends kept beside it. The
/// newest frame is also kept as it was given until it is written: the usual
/// push-then-write hands that very `Bytes` to the link, with no reference count taken and
/// no allocation. An ACK releases a prefix of the ring in place. Frames written from the
/// ring (a replay, or several pushed before a write) are copied out once per batch into
/// one buffer that they are slices of. A larger frame is held as given (a reference count
/// costs less than copying it).
#[derive(Debug, Clone)]
pub struct Delivery {
    cfg: Bounds,
    /// The frames held, allocated with the first (an idle session, after
    /// [`Delivery::trim`], holds no memory for them).
    held: Option<Box<Held>>,
    /// Bytes held.
    bytes: usize,
    /// The peer received every frame up to this one.
    acked: u64,
    /// Frames written on the current link, counted from the session's start.
    written: u64,
    /// Frames received from the peer.
    received: u64,
    /// What the last ACK we sent said.
    ack_sent: u64,
    bytes_since_ack: u32,
    /// After a resumption: write nothing until the peer's ACK says where to replay from.
    hold: bool,
    /// Sync-layer frames numbered up to here are superseded (the sync layer started
    /// over while the link was down): dropped, unsent, once the peer's ACK says which it
    /// has.
    /// (0: none; a frame number is never 0.)
    superseded_upto: u64,
    /// Frames and bytes among those that are superseded: they do not count against the
    /// bounds while they wait to be dropped.
    superseded: (u32, u32),
}

/// The frames a [`Delivery`] holds, `acked + 1 ..= acked + ends.len()`.
///
/// Ring offsets count the bytes of every frame copied in since the session's start (the
/// ring's first byte is at `base`), so that releasing frames moves no end.
#[derive(Debug, Clone, Default)]
struct Held {
    /// The small frames' bytes, oldest first.
    ring: Ring,
    /// Where each frame ends in the ring, oldest first; with [`LARGE`] for a frame held
    /// in `large` (it adds no byte to the ring).
    ends: VecDeque<u64>,
    /// Where the ring starts.
    base: u64,
    /// Where the next small frame to write starts in the ring.
    at: u64,
    /// The frames over [`Delivery::COPY_MAX`] bytes, as given, oldest first.
    large: VecDeque<Bytes>,
    /// The next large frame to write, in `large`.
    large_at: usize,
    /// The newest frame as pushed (a small one), while it is not written on the current
    /// link.
    newest: Option<Bytes>,
    /// While writing from the ring: a copy of its frames from `at` on, as they were when
    /// copied (the next small frame written is split off its front). Empty otherwise.
    copied: Bytes,
}

/// In [`Held::ends`]: the frame is held by reference, in [`Held::large`].
const LARGE: u64 = 1 << 63;

/// Where a held frame is.
#[derive(Debug, Clone, Copy)]
enum Span {
    /// In the ring: at, length.
    Ring(usize, usize),
    /// In `large`, at this index.
    Large(usize),
}

impl Held {
    /// Forgets what was being written: the next write starts at the oldest frame.
    fn rewind(&mut self) {
        self.at = self.base;
        self.large_at = 0;
        self.newest = None;
        self.copied = Bytes::new();
    }

    /// Where each frame is, oldest first.
    fn spans(&self) -> impl Iterator<Item = Span> + '_ {
        let (mut start, mut large) = (self.base, 0usize);
        self.ends.iter().map(move |&end| {
            if end & LARGE != 0 {
                large += 1;
                Span::Large(large - 1)
            } else {
                let span = Span::Ring((start - self.base) as usize, (end - start) as usize);
                start = end;
                span
            }
        })
    }

    fn len_of(&self, span: Span) -> usize {
        match span {
            Span::Ring(_, len) => len,
            Span::Large(i) => self.large[i].len(),
        }
    }

    /// Whether the frame belongs to the sync layer.
    fn is_sync(&self, span: Span) -> bool {
        match span {
            Span::Ring(at, len) => {
                len > FRAME_HEADER_LEN
                    && self
                        .ring
                        .get(at + FRAME_HEADER_LEN)
                        .is_some_and(is_sync_code)
            }
            Span::Large(i) => self.large[i]
                .get(FRAME_HEADER_LEN)
                .copied()
                .is_some_and(is_sync_code),
        }
    }

    /// Every frame, oldest first: the small ones copied out of the ring (one allocation
    /// for all).
    fn frames(&self) -> impl Iterator<Item = Bytes> + '_ {
        let all = self.ring.copy_out(0, self.ring.len());
        self.spans().map(move |span| match span {
            Span::Ring(at, len) => all.slice(at..at + len),
            Span::Large(i) => self.large[i].clone(),
        })
    }

    /// Holds a frame after the others.
    #[inline]
    fn hold(&mut self, frame: &Bytes) {
        if frame.len() <= Delivery::COPY_MAX {
            self.ring.push(frame);
            self.ends.push_back(self.base + self.ring.len() as u64);
        } else {
            self.large.push_back(frame.clone());
            self.ends
                .push_back((self.base + self.ring.len() as u64) | LARGE);
        }
    }

    /// Releases the `n` oldest frames (fewer than are held); returns their bytes.
    fn release(&mut self, n: usize) -> usize {
        let end = self.ends[n - 1] & !LARGE;
        let mut released = (end - self.base) as usize;
        if !self.large.is_empty() {
            let k = self.ends.range(..n).filter(|&&e| e & LARGE != 0).count();
            released += self.large.drain(..k).map(|f| f.len()).sum::<usize>();
            self.large_at = self.large_at.saturating_sub(k);
        }
        self.ends.drain(..n);
        self.ring.release((end - self.base) as usize);
        self.base = end;
        // Not holding, the frames released were written: `at` is past them.
        self.at = self.at.max(end);
        released
    }
}

impl Delivery {
    /// The longest frame copied into the replay buffer (512 bytes); a longer one is held
    /// as given. (Copying 256 to 512 bytes costs about as much as taking and dropping a
    /// reference count does on the machine measured: docs/PERFORMANCE.md.)
    pub const COPY_MAX: usize = 512;

    /// A fresh session: nothing sent, nothing received.
    pub fn new(cfg: DeliveryConfig) -> Self {
        Delivery {
            cfg: cfg.into(),
            held: None,
            bytes: 0,
            acked: 0,
            written: 0,
            received: 0,
            ack_sent: 0,
            bytes_since_ack: 0,
            hold: false,
            superseded_upto: 0,
            superseded: (0, 0),
        }
    }

    /// A session restored from a snapshot: the peer acknowledged `acked`, this side
    /// received `received`, and `frames` (numbered from `acked + 1`) wait for replay. It
    /// holds until the peer's ACK, as after any resumption.
    pub fn restore(cfg: DeliveryConfig, acked: u64, received: u64, frames: Vec<Bytes>) -> Self {
        let mut d = Delivery {
            acked,
            written: acked,
            received,
            ack_sent: received,
            hold: true,
            ..Delivery::new(cfg)
        };
        for f in &frames {
            d.hold_frame(f);
        }
        d
    }

    /// The configuration.
    pub fn config(&self) -> DeliveryConfig {
        self.cfg.into()
    }

    /// Frames held (sent and unacknowledged, or not yet sent).
    #[inline]
    pub fn held(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.ends.len())
    }

    /// Bytes held.
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// Frames the peer acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Frames received from the peer.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The held frames, oldest first (numbered from `acked() + 1`), for a snapshot: copied
    /// out of the replay buffer (one allocation for all).
    pub fn frames(&self) -> impl Iterator<Item = Bytes> + '_ {
        self.held.iter().flat_map(|h| h.frames())
    }

    /// Whether one more frame of `len` bytes fits.
    #[inline]
    pub fn fits(&self, len: usize) -> bool {
        let (n, bytes) = (
            self.held().saturating_sub(self.superseded.0 as usize),
            self.bytes.saturating_sub(self.superseded.1 as usize),
        );
        n == 0
            || (n < self.cfg.max_messages as usize
                && bytes.saturating_add(len) <= self.cfg.max_bytes as usize)
    }

    /// Takes a whole frame (length prefix included) to deliver; it is written when
    /// [`Delivery::next_to_write`] hands it out.
    pub fn push(&mut self, frame: Bytes) -> Result<(), Full> {
        self.check_fits(frame.len())?;
        let keep = !self.hold && frame.len() <= Self::COPY_MAX;
        let h = self.hold_frame(&frame);
        if keep {
            // Kept as given for its first write; not while holding (it would only pin
            // the caller's buffer until a replay that copies it anyway).
            h.newest = Some(frame);
        }
        Ok(())
    }

    /// [`Delivery::push`] and, if the frame can be written at once (not holding, and no
    /// frame waits before it), [`Delivery::next_to_write`] in one step: `Some(frame)` is
    /// written now, the very `Bytes` given. `None`: it waits its turn behind the others,
    /// or for the link.
    #[inline]
    pub fn push_write(&mut self, frame: Bytes) -> Result<Option<Bytes>, Full> {
        self.check_fits(frame.len())?;
        if self.hold || self.written - self.acked != self.held() as u64 {
            self.push(frame)?;
            return Ok(None);
        }
        let h = self.hold_frame(&frame);
        if frame.len() <= Self::COPY_MAX {
            h.at += frame.len() as u64;
        } else {
            h.large_at += 1;
        }
        self.written += 1;
        Ok(Some(frame))
    }

    #[inline]
    fn check_fits(&self, len: usize) -> Result<(), Full> {
        if self.fits(len) {
            Ok(())
        } else {
            Err(Full {
                max_messages: self.cfg.max_messages as usize,
                max_bytes: self.cfg.max_bytes as usize,
            })
        }
    }

    /// Holds a frame after the others.
    #[inline]
    fn hold_frame(&mut self, frame: &Bytes) -> &mut Held {
        let h = self.held.get_or_insert_with(Box::default);
        h.hold(frame);
        self.bytes += frame.len();
        h
    }

    /// The next frame to write on the current link, if any (none while holding for the
    /// peer's ACK after a resumption).
    pub fn next_to_write(&mut self) -> Option<Bytes> {
        if self.hold {
            return None;
        }
        let h = self.held.as_deref_mut()?;
        // At most `ends.len()`: `written` never passes what is held.
        let index = (self.written - self.acked) as usize;
        let end = *h.ends.get(index)?;
        if end & LARGE != 0 {
            let frame = h.large[h.large_at].clone();
            h.large_at += 1;
            self.written += 1;
            return Some(frame);
        }
        let newest = match &mut h.newest {
            // The newest frame, not written yet: the frame itself.
            n @ Some(_) if h.copied.is_empty() && index + 1 == h.ends.len() => n.take(),
            _ => None,
        };
        let frame = newest.unwrap_or_else(|| {
            if h.copied.is_empty() {
                // Frames queued before a write, or a replay: all that is left to write,
                // copied out once (the newest frame with them).
                let from = (h.at - h.base) as usize;
                h.copied = h.ring.copy_out(from, h.ring.len() - from);
                h.newest = None;
            }
            h.copied.split_to((end - h.at) as usize)
        });
        h.at = end;
        self.written += 1;
        Some(frame)
    }

    /// Whether every frame is held until the peer's `ACK` says what it has: on a resumed
    /// link before that `ACK` (and while the link is down). The first `ACK` on a resumed link
    /// is the one that tells whether both sides hold the same session: one that does not
    /// fit ([`AckError`]) means one side resumed from an older copy of it.
    pub fn is_holding(&self) -> bool {
        self.hold
    }

    /// Whether frames wait to be written now.
    pub fn has_unwritten(&self) -> bool {
        !self.hold && self.written - self.acked < self.held() as u64
    }

    /// The peer's cumulative ACK. After a resumption it also says where to replay from.
    pub fn on_ack(&mut self, acked: u64) -> Result<(), AckError> {
        let sent = self.acked + self.held() as u64;
        let limit = if self.hold { sent } else { self.written };
        if acked > limit {
            return Err(AckError::Unsent { acked, sent: limit });
        }
        if acked < self.acked {
            return Err(AckError::Backwards {
                acked,
                before: self.acked,
            });
        }
        if let Some(h) = self.held.as_deref_mut() {
            // At most `held()`, checked above.
            let n = (acked - self.acked) as usize;
            if n == h.ends.len() {
                h.base += h.ring.len() as u64;
                h.ends.clear();
                h.ring.clear();
                h.large.clear();
                h.rewind();
                self.bytes = 0;
            } else if n > 0 {
                self.bytes -= h.release(n);
            }
        }
        self.acked = acked;
        if self.hold {
            // Replay everything after what the peer has, less what was superseded.
            self.hold = false;
            self.written = self.acked;
            self.rewind();
            self.drop_superseded();
        }
        Ok(())
    }

    /// The sync layer above started over while the link was down: its frames held now
    /// are obsolete. Those the peer has not received are dropped before the replay (never
    /// sent, so the implicit numbering of the rest stays true on both sides); the
    /// application's own messages are kept and replayed.
    pub fn supersede_sync(&mut self) {
        self.superseded_upto = self.acked + self.held() as u64;
        let (mut n, mut b) = (0usize, 0usize);
        if let Some(h) = self.held.as_deref() {
            for span in h.spans().filter(|&span| h.is_sync(span)) {
                n += 1;
                b += h.len_of(span);
            }
        }
        // Within the bounds (u32 each) but for one large frame alone.
        let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        self.superseded = (clamp(n), clamp(b));
    }

    fn drop_superseded(&mut self) {
        let upto = core::mem::take(&mut self.superseded_upto);
        self.superseded = (0, 0);
        let Some(h) = self.held.as_deref_mut() else {
            return;
        };
        if upto == 0 {
            return;
        }
        let keep = usize::try_from(upto.saturating_sub(self.acked)).unwrap_or(usize::MAX);
        // Rare (a resumption after the sync layer started over): rebuilt.
        let mut kept = Held::default();
        let frames: Vec<Bytes> = h.frames().collect();
        for (index, (span, f)) in h.spans().zip(&frames).enumerate() {
            if index < keep && h.is_sync(span) {
                self.bytes -= f.len();
            } else {
                kept.hold(f);
            }
        }
        *h = kept;
    }

    /// Forgets what was being written on the link (the next write starts at `acked + 1`).
    fn rewind(&mut self) {
        if let Some(h) = self.held.as_deref_mut() {
            h.rewind();
        }
    }

    /// A frame of `len` bytes was received; `true` if an ACK is due now.
    #[inline]
    pub fn on_received(&mut self, len: usize) -> bool {
        self.received += 1;
        let len = u32::try_from(len + FRAME_HEADER_LEN).unwrap_or(u32::MAX);
        self.bytes_since_ack = self.bytes_since_ack.saturating_add(len);
        self.received - self.ack_sent >= u64::from(self.cfg.ack_every)
            || self.bytes_since_ack >= self.cfg.ack_bytes
    }

    /// What to put in an ACK now, counting it as sent.
    #[inline]
    pub fn take_ack(&mut self) -> u64 {
        self.ack_sent = self.received;
        self.bytes_since_ack = 0;
        self.received
    }

    /// Whether frames were received since the last ACK.
    pub fn ack_pending(&self) -> bool {
        self.received != self.ack_sent
    }

    /// The link is gone: nothing is written until the session is up again.
    pub fn link_lost(&mut self) {
        self.hold = true;
        self.written = self.acked;
        self.rewind();
    }

    /// A fresh session's first link: write at once (numbering starts at 1 for both).
    pub fn link_fresh(&mut self) {
        self.hold = false;
        self.written = self.acked;
        self.rewind();
    }

    /// The session resumed on a new link: hold until the peer's ACK says what it has.
    pub fn link_resumed(&mut self) {
        self.hold = true;
        self.written = self.acked;
        self.rewind();
    }

    /// A fresh session on a new link: numbering starts again; whatever was held for the
    /// old session is returned, undelivered.
    pub fn restart(&mut self) -> Vec<Message> {
        let undelivered = self.take_undelivered();
        *self = Delivery::new(self.cfg.into());
        undelivered
    }

    /// A fresh session keeps the frames waiting (sent before it existed) and numbers
    /// them from 1; the counters of any earlier session are forgotten.
    pub fn renumber(&mut self) {
        self.drop_superseded();
        self.acked = 0;
        self.written = 0;
        self.received = 0;
        self.ack_sent = 0;
        self.bytes_since_ack = 0;
        self.rewind();
    }

    /// The frames never acknowledged, decoded, oldest first; the buffer is emptied (and
    /// its memory given back). Called when the session ends, to report them to the
    /// application.
    pub fn take_undelivered(&mut self) -> Vec<Message> {
        self.drop_superseded();
        let undelivered = self
            .frames()
            .filter_map(|f| Message::decode(f.slice(FRAME_HEADER_LEN.min(f.len())..)).ok())
            .collect();
        self.bytes = 0;
        self.written = self.acked;
        self.held = None;
        undelivered
    }

    /// Gives back the memory kept for frames if none is held: the replay buffer keeps its
    /// capacity from one ACK to the next so that a stream does not allocate; an idle
    /// session need not (the session core calls it when a heartbeat is due).
    pub fn trim(&mut self) {
        if self.held() == 0 {
            self.held = None;
        }
    }
}

/// Bytes in a circular buffer that grows (doubling) when full: frames are appended at the
/// back and released from the front, their boundaries kept by the caller. A frame may
/// wrap around the end.
#[derive(Debug, Clone, Default)]
struct Ring {
    /// The storage; its length is the capacity.
    buf: Vec<u8>,
    head: usize,
    len: usize,
}

impl Ring {
    /// The smallest storage allocated.
    const MIN: usize = 1024;

    fn len(&self) -> usize {
        self.len
    }

    /// The physical index of logical byte `at` (`at <= len`).
    #[inline]
    fn phys(&self, at: usize) -> usize {
        let i = self.head + at;
        if i >= self.buf.len() {
            i - self.buf.len()
        } else {
            i
        }
    }

    fn get(&self, at: usize) -> Option<u8> {
        (at < self.len).then(|| self.buf[self.phys(at)])
    }

    /// Logical bytes `at .. at + n` as two slices (the second empty unless they wrap).
    fn slices(&self, at: usize, n: usize) -> (&[u8], &[u8]) {
        debug_assert!(at + n <= self.len);
        if n == 0 {
            return (&[], &[]);
        }
        let start = self.phys(at);
        let first = n.min(self.buf.len() - start);
        (&self.buf[start..start + first], &self.buf[..n - first])
    }

    #[inline]
    fn push(&mut self, src: &[u8]) {
        let (n, cap) = (src.len(), self.buf.len());
        let tail = self.phys(self.len);
        if self.len + n <= cap && n <= cap - tail {
            // It fits, before the end: the usual case.
            self.buf[tail..tail + n].copy_from_slice(src);
            self.len += n;
        } else {
            self.push_slow(src);
        }
    }

    #[cold]
    fn push_slow(&mut self, src: &[u8]) {
        let n = src.len();
        if self.len + n > self.buf.len() {
            self.grow(self.len + n);
        }
        let tail = self.phys(self.len);
        if let Some(dst) = self.buf.get_mut(tail..tail + n) {
            dst.copy_from_slice(src);
        } else {
            // Wraps around the end.
            let (a, b) = src.split_at(self.buf.len() - tail);
            self.buf[tail..].copy_from_slice(a);
            self.buf[..b.len()].copy_from_slice(b);
        }
        self.len += n;
    }

    fn grow(&mut self, need: usize) {
        let cap = need.max(self.buf.len() * 2).max(Self::MIN);
        let mut buf = alloc::vec![0u8; cap];
        let (a, b) = self.slices(0, self.len);
        buf[..a.len()].copy_from_slice(a);
        buf[a.len()..a.len() + b.len()].copy_from_slice(b);
        self.buf = buf;
        self.head = 0;
    }

    /// Drops the first `n` bytes.
    fn release(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.head = self.phys(n);
        self.len -= n;
        if self.len == 0 {
            self.head = 0;
        }
    }

    /// Empties it, keeping the storage.
    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// A copy of logical bytes `at .. at + n`.
    fn copy_out(&self, at: usize, n: usize) -> Bytes {
        if n == 0 {
            return Bytes::new();
        }
        let (a, b) = self.slices(at, n);
        let mut out = BytesMut::with_capacity(n);
        out.extend_from_slice(a);
        out.extend_from_slice(b);
        out.freeze()
    }
}

/// Whether a frame with this code belongs to the sync layer (sync contexts, journal and
/// anchored sync), which starts over after a cut rather than continuing.
pub(crate) fn is_sync_code(code: u8) -> bool {
    use crate::wire::codes;
    matches!(
        code,
        codes::SYNC_REQ | codes::SYNC_START | codes::SYNC_END | codes::SYNC_OK | codes::REFUSED
    ) || codes::JOURNAL_RANGE.contains(&code)
        || codes::ANCHORED_RANGE.contains(&code)
}

#[cfg(test)]
#[path = "delivery_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "delivery_model.rs"]
mod model;
