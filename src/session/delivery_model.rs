//! A model of `Delivery`: the plain implementation it replaced (one `Bytes` per frame in
//! a list, cloned to be written), against which the ring is checked step by step.

use super::*;
use alloc::vec;
use bytes::BytesMut;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Model {
    cfg: DeliveryConfig,
    frames: Vec<Bytes>,
    acked: u64,
    written: u64,
    received: u64,
    ack_sent: u64,
    bytes_since_ack: usize,
    hold: bool,
    superseded_upto: u64,
    superseded: (usize, usize),
}

fn sync(f: &Bytes) -> bool {
    f.get(FRAME_HEADER_LEN).copied().is_some_and(is_sync_code)
}

impl Model {
    fn new(cfg: DeliveryConfig) -> Self {
        Model {
            cfg,
            frames: Vec::new(),
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

    fn restore(cfg: DeliveryConfig, acked: u64, received: u64, frames: Vec<Bytes>) -> Self {
        Model {
            frames,
            acked,
            written: acked,
            received,
            ack_sent: received,
            hold: true,
            ..Model::new(cfg)
        }
    }

    fn bytes(&self) -> usize {
        self.frames.iter().map(Bytes::len).sum()
    }

    fn fits(&self, len: usize) -> bool {
        let n = self.frames.len().saturating_sub(self.superseded.0);
        let bytes = self.bytes().saturating_sub(self.superseded.1);
        n == 0 || (n < self.cfg.max_messages && bytes + len <= self.cfg.max_bytes)
    }

    fn push(&mut self, f: Bytes) -> Result<(), Full> {
        if !self.fits(f.len()) {
            return Err(Full {
                max_messages: self.cfg.max_messages,
                max_bytes: self.cfg.max_bytes,
            });
        }
        self.frames.push(f);
        Ok(())
    }

    fn push_write(&mut self, f: Bytes) -> Result<Option<Bytes>, Full> {
        let now = !self.hold && self.written - self.acked == self.frames.len() as u64;
        self.push(f)?;
        Ok(if now { self.next_to_write() } else { None })
    }

    fn next_to_write(&mut self) -> Option<Bytes> {
        if self.hold {
            return None;
        }
        let f = self
            .frames
            .get((self.written - self.acked) as usize)?
            .clone();
        self.written += 1;
        Some(f)
    }

    fn has_unwritten(&self) -> bool {
        !self.hold && self.written - self.acked < self.frames.len() as u64
    }

    fn on_ack(&mut self, acked: u64) -> Result<(), AckError> {
        let sent = self.acked + self.frames.len() as u64;
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
        self.frames.drain(..(acked - self.acked) as usize);
        self.acked = acked;
        if self.hold {
            self.hold = false;
            self.written = self.acked;
            self.drop_superseded();
        }
        Ok(())
    }

    fn supersede_sync(&mut self) {
        self.superseded_upto = self.acked + self.frames.len() as u64;
        let old: Vec<&Bytes> = self.frames.iter().filter(|f| sync(f)).collect();
        self.superseded = (old.len(), old.iter().map(|f| f.len()).sum());
    }

    fn drop_superseded(&mut self) {
        let upto = core::mem::take(&mut self.superseded_upto);
        self.superseded = (0, 0);
        if upto == 0 {
            return;
        }
        let keep = (upto.saturating_sub(self.acked)) as usize;
        let mut index = 0;
        self.frames.retain(|f| {
            let old = index < keep && sync(f);
            index += 1;
            !old
        });
    }

    fn on_received(&mut self, len: usize) -> bool {
        self.received += 1;
        self.bytes_since_ack += len + FRAME_HEADER_LEN;
        self.received - self.ack_sent >= u64::from(self.cfg.ack_every.max(1))
            || self.bytes_since_ack >= self.cfg.ack_bytes
    }

    fn take_ack(&mut self) -> u64 {
        self.ack_sent = self.received;
        self.bytes_since_ack = 0;
        self.received
    }

    fn rewind(&mut self, hold: bool) {
        self.hold = hold;
        self.written = self.acked;
    }

    fn renumber(&mut self) {
        self.drop_superseded();
        self.acked = 0;
        self.written = 0;
        self.received = 0;
        self.ack_sent = 0;
        self.bytes_since_ack = 0;
    }

    fn take_undelivered(&mut self) -> Vec<Message> {
        self.drop_superseded();
        self.written = self.acked;
        self.frames
            .drain(..)
            .filter_map(|f| Message::decode(f.slice(FRAME_HEADER_LEN.min(f.len())..)).ok())
            .collect()
    }

    fn restart(&mut self) -> Vec<Message> {
        let lost = self.take_undelivered();
        *self = Model::new(self.cfg);
        lost
    }
}

#[derive(Debug, Clone)]
enum Op {
    Push(Bytes),
    PushWrite(Bytes),
    Write(u8),
    /// An ACK, relative to what was acknowledged (negative: backwards).
    Ack(i8),
    /// The peer's ACK of everything written (what a well-behaved peer says).
    AckWritten,
    Received(u16),
    TakeAck,
    Lost,
    Fresh,
    Resumed,
    Supersede,
    Renumber,
    Undelivered,
    Restart,
    Restore,
    Trim,
}

/// A frame: an App message, a sync-layer one, a code the sync layer does not own, or
/// a few raw bytes (shorter than a header, or with a header that lies); small, or
/// large enough to make the ring grow and wrap.
fn frame() -> impl Strategy<Value = Bytes> {
    // Small (copied into the ring), around `COPY_MAX`, or larger (held as given).
    let size =
        prop_oneof![8 => 0usize..80, 1 => 200usize..500, 1 => 505usize..520, 1 => 520usize..3000];
    let code = prop_oneof![
        Just(codes::APP),
        Just(codes::SYNC_START),
        Just(0x31u8),
        Just(0x42u8),
        any::<u8>()
    ];
    prop_oneof![
        9 => (code, size).prop_map(|(code, n)| {
            let mut b = BytesMut::new();
            b.extend_from_slice(&((n + 1) as u32).to_be_bytes());
            b.extend_from_slice(&[code]);
            b.extend((0..n).map(|i| i as u8));
            b.freeze()
        }),
        // Bytes that sync codes are among, so that a short frame followed by another
        // could be mistaken for a sync frame.
        1 => proptest::collection::vec(
            prop_oneof![Just(0u8), Just(codes::SYNC_START), Just(0x31), any::<u8>()],
            0..7,
        )
        .prop_map(Bytes::from),
    ]
}

use crate::wire::codes;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => frame().prop_map(Op::Push),
        6 => frame().prop_map(Op::PushWrite),
        4 => (0u8..5).prop_map(Op::Write),
        2 => (-2i8..6).prop_map(Op::Ack),
        3 => Just(Op::AckWritten),
        3 => any::<u16>().prop_map(Op::Received),
        1 => Just(Op::TakeAck),
        1 => Just(Op::Lost),
        1 => Just(Op::Fresh),
        1 => Just(Op::Resumed),
        1 => Just(Op::Supersede),
        1 => Just(Op::Renumber),
        1 => Just(Op::Undelivered),
        1 => Just(Op::Restart),
        1 => Just(Op::Restore),
        1 => Just(Op::Trim),
    ]
}

fn config() -> impl Strategy<Value = DeliveryConfig> {
    (1usize..12, 16usize..6000, 0u32..5, 1usize..400).prop_map(
        |(max_messages, max_bytes, ack_every, ack_bytes)| DeliveryConfig {
            max_messages,
            max_bytes,
            ack_every,
            ack_bytes,
        },
    )
}

fn same(d: &Delivery, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(d.held(), m.frames.len());
    prop_assert_eq!(d.held_bytes(), m.bytes());
    prop_assert_eq!(d.acked(), m.acked);
    prop_assert_eq!(d.received(), m.received);
    prop_assert_eq!(d.has_unwritten(), m.has_unwritten());
    prop_assert_eq!(d.ack_pending(), m.received != m.ack_sent);
    prop_assert_eq!(d.frames().collect::<Vec<_>>(), m.frames.clone());
    for len in [0, 1, 70, 1000] {
        prop_assert_eq!(d.fits(len), m.fits(len));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every call, in any order, gives what the plain implementation gives: the same
    /// frames written (byte for byte), the same errors, counts, bounds and reports.
    #[test]
    fn the_ring_behaves_as_a_list_of_frames(
        cfg in config(),
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        let (mut d, mut m) = (Delivery::new(cfg), Model::new(cfg));
        for op in ops {
            match op {
                Op::Push(f) => prop_assert_eq!(d.push(f.clone()), m.push(f)),
                Op::PushWrite(f) => prop_assert_eq!(d.push_write(f.clone()), m.push_write(f)),
                Op::Write(n) => {
                    for _ in 0..n {
                        prop_assert_eq!(d.next_to_write(), m.next_to_write());
                    }
                }
                Op::Ack(delta) => {
                    let a = m.acked.saturating_add_signed(delta.into());
                    prop_assert_eq!(d.on_ack(a), m.on_ack(a));
                }
                Op::AckWritten => {
                    let a = if m.hold { m.acked + m.frames.len() as u64 / 2 } else { m.written };
                    prop_assert_eq!(d.on_ack(a), m.on_ack(a));
                }
                Op::Received(len) => {
                    prop_assert_eq!(d.on_received(len.into()), m.on_received(len.into()));
                }
                Op::TakeAck => prop_assert_eq!(d.take_ack(), m.take_ack()),
                Op::Lost => {
                    d.link_lost();
                    m.rewind(true);
                }
                Op::Fresh => {
                    d.link_fresh();
                    m.rewind(false);
                }
                Op::Resumed => {
                    d.link_resumed();
                    m.rewind(true);
                }
                Op::Supersede => {
                    d.supersede_sync();
                    m.supersede_sync();
                }
                Op::Renumber => {
                    d.renumber();
                    m.renumber();
                }
                Op::Undelivered => prop_assert_eq!(d.take_undelivered(), m.take_undelivered()),
                Op::Restart => prop_assert_eq!(d.restart(), m.restart()),
                Op::Restore => {
                    let frames: Vec<Bytes> = d.frames().collect();
                    d = Delivery::restore(cfg, d.acked(), d.received(), frames.clone());
                    m = Model::restore(cfg, m.acked, m.received, frames);
                }
                Op::Trim => d.trim(),
            }
            same(&d, &m)?;
        }
    }
}
