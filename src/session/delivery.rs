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
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use bytes::Bytes;

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
#[derive(Debug, Clone)]
pub struct Delivery {
    cfg: Bounds,
    /// Frames `acked + 1 ..= acked + len`, oldest first.
    buffer: VecDeque<Bytes>,
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

impl Delivery {
    /// A fresh session: nothing sent, nothing received.
    pub fn new(cfg: DeliveryConfig) -> Self {
        Delivery {
            cfg: cfg.into(),
            buffer: VecDeque::new(),
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
        let bytes = frames.iter().map(Bytes::len).sum();
        Delivery {
            cfg: cfg.into(),
            buffer: frames.into(),
            bytes,
            acked,
            written: acked,
            received,
            ack_sent: received,
            bytes_since_ack: 0,
            hold: true,
            superseded_upto: 0,
            superseded: (0, 0),
        }
    }

    /// The configuration.
    pub fn config(&self) -> DeliveryConfig {
        self.cfg.into()
    }

    /// Frames held (sent and unacknowledged, or not yet sent).
    pub fn held(&self) -> usize {
        self.buffer.len()
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

    /// The held frames, oldest first (numbered from `acked() + 1`), for a snapshot.
    pub fn frames(&self) -> impl Iterator<Item = &Bytes> + '_ {
        self.buffer.iter()
    }

    /// Whether one more frame of `len` bytes fits.
    pub fn fits(&self, len: usize) -> bool {
        let (n, bytes) = (
            self.buffer.len().saturating_sub(self.superseded.0 as usize),
            self.bytes.saturating_sub(self.superseded.1 as usize),
        );
        n == 0
            || (n < self.cfg.max_messages as usize
                && bytes.saturating_add(len) <= self.cfg.max_bytes as usize)
    }

    /// Takes a whole frame (length prefix included) to deliver; it is written when
    /// [`Delivery::next_to_write`] hands it out.
    pub fn push(&mut self, frame: Bytes) -> Result<(), Full> {
        if !self.fits(frame.len()) {
            return Err(Full {
                max_messages: self.cfg.max_messages as usize,
                max_bytes: self.cfg.max_bytes as usize,
            });
        }
        self.bytes += frame.len();
        self.buffer.push_back(frame);
        Ok(())
    }

    /// The next frame to write on the current link, if any (none while holding for the
    /// peer's ACK after a resumption).
    pub fn next_to_write(&mut self) -> Option<Bytes> {
        if self.hold {
            return None;
        }
        let index = usize::try_from(self.written - self.acked).ok()?;
        let frame = self.buffer.get(index)?.clone();
        self.written += 1;
        Some(frame)
    }

    /// Whether frames wait to be written now.
    pub fn has_unwritten(&self) -> bool {
        !self.hold && self.written - self.acked < self.buffer.len() as u64
    }

    /// The peer's cumulative ACK. After a resumption it also says where to replay from.
    pub fn on_ack(&mut self, acked: u64) -> Result<(), AckError> {
        let sent = self.acked + self.buffer.len() as u64;
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
        while self.acked < acked {
            if let Some(f) = self.buffer.pop_front() {
                self.bytes -= f.len();
            }
            self.acked += 1;
        }
        if self.hold {
            // Replay everything after what the peer has, less what was superseded.
            self.hold = false;
            self.written = self.acked;
            self.drop_superseded();
        }
        Ok(())
    }

    /// The sync layer above started over while the link was down: its frames held now
    /// are obsolete. Those the peer has not received are dropped before the replay (never
    /// sent, so the implicit numbering of the rest stays true on both sides); the
    /// application's own messages are kept and replayed.
    pub fn supersede_sync(&mut self) {
        self.superseded_upto = self.acked + self.buffer.len() as u64;
        // Within the bounds (u32 each), so the sums fit.
        let (n, b) = self
            .buffer
            .iter()
            .filter(|f| is_sync_frame(f))
            .fold((0usize, 0usize), |(n, b), f| (n + 1, b + f.len()));
        self.superseded = (n as u32, b as u32);
    }

    fn drop_superseded(&mut self) {
        let upto = core::mem::take(&mut self.superseded_upto);
        self.superseded = (0, 0);
        if upto == 0 {
            return;
        }
        let keep = usize::try_from(upto.saturating_sub(self.acked)).unwrap_or(usize::MAX);
        let mut index = 0usize;
        let mut dropped = 0usize;
        self.buffer.retain(|f| {
            let old = index < keep && is_sync_frame(f);
            index += 1;
            if old {
                dropped += f.len();
            }
            !old
        });
        self.bytes -= dropped;
    }

    /// A frame of `len` bytes was received; `true` if an ACK is due now.
    pub fn on_received(&mut self, len: usize) -> bool {
        self.received += 1;
        let len = u32::try_from(len + FRAME_HEADER_LEN).unwrap_or(u32::MAX);
        self.bytes_since_ack = self.bytes_since_ack.saturating_add(len);
        self.received - self.ack_sent >= u64::from(self.cfg.ack_every)
            || self.bytes_since_ack >= self.cfg.ack_bytes
    }

    /// What to put in an ACK now, counting it as sent.
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
    }

    /// A fresh session's first link: write at once (numbering starts at 1 for both).
    pub fn link_fresh(&mut self) {
        self.hold = false;
        self.written = self.acked;
    }

    /// The session resumed on a new link: hold until the peer's ACK says what it has.
    pub fn link_resumed(&mut self) {
        self.hold = true;
        self.written = self.acked;
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
    }

    /// The frames never acknowledged, decoded, oldest first; the buffer is emptied. Called
    /// when the session ends, to report them to the application.
    pub fn take_undelivered(&mut self) -> Vec<Message> {
        self.drop_superseded();
        self.bytes = 0;
        self.written = self.acked;
        self.buffer
            .drain(..)
            .filter_map(|f| Message::decode(f.slice(FRAME_HEADER_LEN.min(f.len())..)).ok())
            .collect()
    }
}

fn is_sync_frame(f: &Bytes) -> bool {
    f.get(FRAME_HEADER_LEN).copied().is_some_and(is_sync_code)
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
mod tests {
    use super::*;
    use bytes::BytesMut;
    use proptest::prelude::*;

    fn frame(n: u32) -> Bytes {
        let mut b = BytesMut::new();
        Message::App(Bytes::copy_from_slice(&n.to_be_bytes())).encode_framed(&mut b);
        b.freeze()
    }

    fn number(f: &Bytes) -> u32 {
        match Message::decode(f.slice(4..)) {
            Ok(Message::App(b)) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            other => panic!("not a test frame: {other:?}"),
        }
    }

    #[test]
    fn refuses_past_its_bounds_and_takes_one_large_frame_when_empty() {
        let cfg = DeliveryConfig {
            max_messages: 2,
            max_bytes: 20,
            ..DeliveryConfig::default()
        };
        let mut d = Delivery::new(cfg);
        d.push(Bytes::from(alloc::vec![0u8; 100])).unwrap();
        assert!(d.push(frame(1)).is_err(), "over the bytes");
        d.on_ack(0).unwrap();
        assert!(d.next_to_write().is_some());
        d.on_ack(1).unwrap();
        d.push(frame(1)).unwrap();
        d.push(frame(2)).unwrap();
        assert_eq!(
            d.push(frame(3)),
            Err(Full {
                max_messages: 2,
                max_bytes: 20
            })
        );
    }

    #[test]
    fn an_ack_of_unsent_or_earlier_frames_is_refused() {
        let mut d = Delivery::new(DeliveryConfig::default());
        d.push(frame(1)).unwrap();
        assert!(
            matches!(d.on_ack(1), Err(AckError::Unsent { .. })),
            "not written yet"
        );
        d.next_to_write();
        d.on_ack(1).unwrap();
        assert!(matches!(d.on_ack(0), Err(AckError::Backwards { .. })));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Send,
        /// Move up to n frames across (the rest stay in flight).
        Carry(u8),
        /// Cut the link: frames in flight are lost; the session resumes.
        Cut,
        Ack,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Send),
            3 => (0u8..6).prop_map(Step::Carry),
            1 => Just(Step::Cut),
            1 => Just(Step::Ack),
        ]
    }

    proptest! {
        /// Whatever the cuts, the receiver gets 1, 2, 3, ... exactly once each, and the
        /// sender's buffer empties once everything is carried and acknowledged.
        #[test]
        fn exactly_once_in_order_across_cuts(steps in proptest::collection::vec(step(), 0..200)) {
            let cfg = DeliveryConfig { ack_every: 3, ..DeliveryConfig::default() };
            let (mut tx, mut rx) = (Delivery::new(cfg), Delivery::new(cfg));
            let mut wire: VecDeque<Bytes> = VecDeque::new();
            let mut acks: VecDeque<u64> = VecDeque::new();
            let (mut sent, mut got) = (0u32, Vec::new());
            let deliver = |wire: &mut VecDeque<Bytes>, rx: &mut Delivery, got: &mut Vec<u32>, acks: &mut VecDeque<u64>, n: usize| {
                for _ in 0..n {
                    let Some(f) = wire.pop_front() else { break };
                    got.push(number(&f));
                    if rx.on_received(f.len() - 4) {
                        acks.push_back(rx.take_ack());
                    }
                }
            };
            for s in steps {
                match s {
                    Step::Send => {
                        sent += 1;
                        if tx.push(frame(sent)).is_err() { sent -= 1; }
                    }
                    Step::Carry(n) => deliver(&mut wire, &mut rx, &mut got, &mut acks, n.into()),
                    Step::Ack => acks.push_back(rx.take_ack()),
                    Step::Cut => {
                        wire.clear();
                        acks.clear();
                        tx.link_resumed();
                        rx.link_resumed();
                        // Each side's first frame on the new link is its ACK.
                        tx.on_ack(rx.take_ack()).unwrap();
                        rx.on_ack(0).unwrap();
                    }
                }
                while let Some(a) = acks.pop_front() {
                    tx.on_ack(a).unwrap();
                }
                while let Some(f) = tx.next_to_write() {
                    wire.push_back(f);
                }
            }
            deliver(&mut wire, &mut rx, &mut got, &mut acks, usize::MAX);
            tx.on_ack(rx.take_ack()).unwrap();
            let want: Vec<u32> = (1..=sent).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(tx.held(), 0);
            prop_assert_eq!(tx.held_bytes(), 0);
        }
    }

    #[test]
    fn superseded_sync_frames_are_dropped_unsent_and_the_numbering_stays_true() {
        let sync = |ctx: u32| {
            let mut b = BytesMut::new();
            Message::SyncStart { ctx }.encode_framed(&mut b);
            b.freeze()
        };
        let mut tx = Delivery::new(DeliveryConfig::default());
        tx.push(frame(1)).unwrap();
        tx.push(sync(1)).unwrap();
        tx.push(frame(2)).unwrap();
        tx.push(sync(2)).unwrap();
        for _ in 0..4 {
            tx.next_to_write();
        }
        // The link drops; the peer had received the first two. The sync layer starts
        // over and queues a new request.
        tx.link_lost();
        tx.supersede_sync();
        tx.push(sync(3)).unwrap();
        tx.link_resumed();
        tx.on_ack(2).unwrap();
        let replay: Vec<Bytes> = core::iter::from_fn(|| tx.next_to_write()).collect();
        assert_eq!(
            replay,
            [frame(2), sync(3)],
            "sync(2) superseded, sync(3) kept"
        );
        tx.on_ack(4).unwrap();
        assert_eq!((tx.held(), tx.held_bytes()), (0, 0));
    }

    #[test]
    fn restart_reports_what_was_never_acknowledged() {
        let mut d = Delivery::new(DeliveryConfig::default());
        for n in 1..=3 {
            d.push(frame(n)).unwrap();
        }
        d.next_to_write();
        d.next_to_write();
        d.on_ack(1).unwrap();
        let lost: Vec<Message> = d.restart();
        assert_eq!(
            lost,
            [2u32, 3]
                .map(|n| Message::App(Bytes::copy_from_slice(&n.to_be_bytes())))
                .to_vec()
        );
        assert_eq!((d.held(), d.acked(), d.received()), (0, 0, 0));
    }
}
