//! The `feed` channel: one [`FeedDatagram`](crate::wire::FeedDatagram) per datagram, each
//! carrying one message, with the sender's sequence number and a tag keyed by the
//! session's [`FeedKey`].
//!
//! Receiving is the hot path, so it allocates nothing: the header is checked in place, the
//! tag verified (HMAC-SHA-256 of the header fields and the content, compared in constant
//! time), the sequence number checked against a [`ReplayWindow`] of the last 256, and the
//! message decoded with its payload as a slice of the datagram. The window takes each
//! authentic datagram once, in any order; what the application sees keeps R-Type's rule,
//! that an older datagram is never applied after a newer one ([`Opened::late`]). Nothing is decoded, and no
//! window moves, before the tag is verified: a spoofer who does not hold the key can
//! neither deliver a message nor silence a sender. A replayed, duplicated or too old
//! datagram is dropped; one that does not match the format is ignored and counted. None is
//! an error: `feed` is lossy by design and garbage on it must not be able to close anything.
//!
//! ```
//! use bytes::BytesMut;
//! use tether::connect::dual::feed::{FeedReceiver, FeedSender, Verdict};
//! use tether::wire::{FeedKey, Message, DEFAULT_FEED_CONTENT};
//! use tether::Token;
//!
//! let key = FeedKey::derive(&Token::new(&[9; 16]).unwrap(), 7);
//! let mut tx = FeedSender::new(7, key.clone());
//! let mut rx = FeedReceiver::new(DEFAULT_FEED_CONTENT, key);
//! let mut buf = BytesMut::new();
//! tx.encode(&Message::Dummy, &mut buf, DEFAULT_FEED_CONTENT).unwrap();
//! let datagram = buf.split().freeze();
//! assert_eq!(rx.accept(datagram.clone(), Some(7)), Verdict::Accepted(Message::Dummy));
//! assert_eq!(rx.accept(datagram, Some(7)), Verdict::Stale); // a replay
//! assert_eq!(rx.stats().stale, 1);
//! ```

use super::DualError;
use crate::wire::{
    codes, DecodeError, Element, FeedKey, Message, FEED_FIELDS_LEN, FEED_HEADER_LEN, FEED_MAGIC,
    FEED_TAG_LEN,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Counters of what a receiver did with datagrams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedStats {
    /// Datagrams accepted and delivered.
    pub accepted: u64,
    /// Authentic datagrams dropped as replays: seen already, or older than the replay
    /// window (late, duplicated, or replayed by an attacker).
    pub stale: u64,
    /// Datagrams ignored because they did not match the format.
    pub malformed: u64,
    /// Well-formed datagrams ignored because the sender id was not the expected one.
    pub foreign: u64,
    /// Datagrams whose tag did not verify (forged, corrupted, or sent before this side
    /// had the key).
    pub forged: u64,
}

/// Which of the last [`ReplayWindow::SIZE`] sequence numbers were seen from one sender
/// (netcode.io's replay protection): a datagram is taken once, in any order, if it is not
/// older than the window; the window moves only on datagrams the caller accepted (whose
/// tag verified), so no forgery can push it forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    newest: Option<u64>,
    /// Bit `i` (of word `i / 64`): `newest - i` was seen.
    seen: [u64; 4],
}

impl ReplayWindow {
    /// How many sequence numbers the window remembers (netcode.io's 256).
    pub const SIZE: u64 = 256;

    /// A window that has seen nothing.
    pub fn new() -> Self {
        ReplayWindow::default()
    }

    /// A window that has seen everything up to `newest` (and nothing after it): what a
    /// receiver starts from when it takes a session over, or when `feed` is bound anew.
    pub fn after(newest: Option<u64>) -> Self {
        ReplayWindow {
            newest,
            seen: [u64::MAX; 4],
        }
    }

    /// Whether `seq` would be taken: newer than the newest, or within the window and not
    /// seen yet. Does not record it.
    pub fn check(&self, seq: u64) -> bool {
        let Some(newest) = self.newest else {
            return true;
        };
        if seq > newest {
            return true;
        }
        let back = newest - seq;
        back < Self::SIZE && !self.bit(back)
    }

    /// Records `seq` as seen (the caller checked it first).
    pub fn record(&mut self, seq: u64) {
        match self.newest {
            Some(newest) if seq <= newest => {
                let back = newest - seq;
                if back < Self::SIZE {
                    self.set(back);
                }
            }
            Some(newest) => {
                self.shift(seq - newest);
                self.newest = Some(seq);
                self.set(0);
            }
            None => {
                self.seen = [0; 4];
                self.newest = Some(seq);
                self.set(0);
            }
        }
    }

    /// [`check`](Self::check), then [`record`](Self::record) if it passes.
    pub fn accept(&mut self, seq: u64) -> bool {
        let ok = self.check(seq);
        if ok {
            self.record(seq);
        }
        ok
    }

    /// Forgets the window and starts again at `seq`: `seq` and everything before it count
    /// as seen. Used when `feed` is bound anew, so that nothing sent before the new
    /// binding (on the old transport, or replayed) is taken after it.
    pub fn restart_at(&mut self, seq: u64) {
        *self = ReplayWindow::after(Some(seq));
    }

    /// The newest sequence number recorded, if any.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    fn bit(&self, back: u64) -> bool {
        let (w, b) = ((back / 64) as usize, back % 64);
        self.seen.get(w).is_some_and(|x| x & (1 << b) != 0)
    }

    fn set(&mut self, back: u64) {
        let (w, b) = ((back / 64) as usize, back % 64);
        if let Some(x) = self.seen.get_mut(w) {
            *x |= 1 << b;
        }
    }

    /// Moves every bit `by` places older; bits past the window fall off.
    fn shift(&mut self, by: u64) {
        if by >= Self::SIZE {
            self.seen = [0; 4];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        let old = self.seen;
        for (i, word) in self.seen.iter_mut().enumerate() {
            let from = i.checked_sub(words);
            let hi = from.and_then(|f| old.get(f)).copied().unwrap_or(0);
            let lo = from
                .and_then(|f| f.checked_sub(1))
                .and_then(|f| old.get(f))
                .copied()
                .unwrap_or(0);
            *word = if bits == 0 {
                hi
            } else {
                (hi << bits) | (lo >> (64 - bits))
            };
        }
    }
}

/// What became of one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Authentic, new, well-formed: deliver it.
    Accepted(Message),
    /// Authentic, but seen already or older than the replay window: dropped.
    Stale,
    /// Not tether's format: ignored.
    Malformed(DecodeError),
    /// Well-formed but from another sender: ignored.
    Foreign(u16),
    /// The tag did not verify: ignored (never decoded).
    Forged,
}

/// Why [`FeedReceiver::open`] dropped a datagram (each counted in [`FeedStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Authentic, but seen already or older than the replay window.
    Stale,
    /// Not tether's format.
    Malformed(DecodeError),
    /// Well-formed but from another sender.
    Foreign(u16),
    /// The tag did not verify.
    Forged,
}

impl From<Dropped> for Verdict {
    fn from(d: Dropped) -> Verdict {
        match d {
            Dropped::Stale => Verdict::Stale,
            Dropped::Malformed(e) => Verdict::Malformed(e),
            Dropped::Foreign(s) => Verdict::Foreign(s),
            Dropped::Forged => Verdict::Forged,
        }
    }
}

/// A datagram that passed every check of [`FeedReceiver::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Its sequence number (not recorded yet: see [`FeedReceiver::commit`]).
    pub seq: u64,
    /// Its sender.
    pub sender: u16,
    /// Its message.
    pub message: Message,
    /// Older than a datagram already taken (it came late, reordered). R-Type's rule is
    /// that an older datagram is never applied after a newer one, so a late message is
    /// not delivered to the application ([`FeedReceiver::drop_late`]); the connection's
    /// own messages (feed init and its reply or refusal, keep-alives) are still taken,
    /// since they are matched by attempt number, not by order.
    pub late: bool,
}

/// The header fields of a datagram, checked in place: `(SEQ, SENDER)`. Refuses a short
/// datagram, a wrong magic and content over `max_content`; neither the tag nor the
/// content is looked at.
pub fn header(datagram: &[u8], max_content: usize) -> Result<(u64, u16), DecodeError> {
    if datagram.len() < FEED_HEADER_LEN {
        return Err(DecodeError::Truncated {
            field: "feed header",
        });
    }
    let (fields, rest) = datagram.split_at(FEED_FIELDS_LEN);
    let (magic, rest_fields) = fields.split_at(8);
    let (seq, sender) = rest_fields.split_at(8);
    if u64::from_be_bytes(array8(magic)) != FEED_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let content_len = rest.len() - FEED_TAG_LEN;
    if content_len > max_content {
        return Err(DecodeError::Oversized {
            field: "feed content",
            len: content_len,
            max: max_content,
        });
    }
    let sender = u16::from_be_bytes([
        sender.first().copied().unwrap_or(0),
        sender.get(1).copied().unwrap_or(0),
    ]);
    Ok((u64::from_be_bytes(array8(seq)), sender))
}

/// Whether `datagram`'s tag is the one `key` gives its header fields and content. The
/// caller checked the [`header`] (so the datagram is long enough).
fn verify(key: &FeedKey, datagram: &[u8]) -> bool {
    let (fields, rest) = datagram.split_at(FEED_FIELDS_LEN.min(datagram.len()));
    let (tag, content) = rest.split_at(FEED_TAG_LEN.min(rest.len()));
    key.verify(fields, tag, content)
}

/// [`Message::decode`], with `UPDATE_MSG` (the bulk of `feed` traffic) decoded inline:
/// the same result, without going through the general decoder's table.
fn decode_content(mut content: Bytes) -> Result<Message, DecodeError> {
    if content.first() == Some(&codes::UPDATE_MSG) && content.len() >= 4 {
        content.advance(1);
        let kind = content.get_u8();
        let sid = content.get_u16();
        return Ok(Message::Update(Element {
            kind,
            sid,
            data: content,
        }));
    }
    Message::decode(content)
}

fn array8(s: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    for (d, v) in a.iter_mut().zip(s) {
        *d = *v;
    }
    a
}

/// The connection's own messages on `feed`, matched by attempt number rather than by order:
/// taken even when they come late.
pub(crate) fn is_control(m: &Message) -> bool {
    matches!(
        m,
        Message::Dummy
            | Message::FeedInit { .. }
            | Message::FeedInitRep { .. }
            | Message::FeedFailed { .. }
            | Message::ConnFailed { .. }
    )
}

/// The receiving side of `feed` for one sender: format, sender, tag, replay window,
/// counters.
#[derive(Debug, Clone)]
pub struct FeedReceiver {
    window: ReplayWindow,
    stats: FeedStats,
    max_content: usize,
    /// `None` before the session secret is known: then nothing verifies.
    key: Option<FeedKey>,
}

impl FeedReceiver {
    /// A receiver that verifies tags with `key` and refuses content over `max_content`
    /// bytes.
    pub fn new(max_content: usize, key: FeedKey) -> Self {
        FeedReceiver {
            window: ReplayWindow::new(),
            stats: FeedStats::default(),
            max_content,
            key: Some(key),
        }
    }

    /// A receiver that has no key yet: every datagram is [`Verdict::Forged`].
    pub fn pending(max_content: usize) -> Self {
        FeedReceiver {
            window: ReplayWindow::new(),
            stats: FeedStats::default(),
            max_content,
            key: None,
        }
    }

    /// Checks one datagram in full (header, sender if `expected` is set, tag, replay
    /// window, message) without recording it: the caller [commits](Self::commit) the
    /// sequence number of a datagram it acts on. A datagram refused is counted.
    pub fn open(&mut self, datagram: Bytes, expected: Option<u16>) -> Result<Opened, Dropped> {
        let (seq, sender) = match header(&datagram, self.max_content) {
            Ok(v) => v,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(Dropped::Malformed(e));
            }
        };
        if expected.is_some_and(|s| s != sender) {
            self.stats.foreign += 1;
            return Err(Dropped::Foreign(sender));
        }
        if !self.key.as_ref().is_some_and(|k| verify(k, &datagram)) {
            self.stats.forged += 1;
            return Err(Dropped::Forged);
        }
        if !self.window.check(seq) {
            self.stats.stale += 1;
            return Err(Dropped::Stale);
        }
        // `advance` rather than `slice`: no reference-count traffic on the hot path.
        let mut content = datagram;
        content.advance(FEED_HEADER_LEN);
        let late = self.window.newest().is_some_and(|n| seq < n);
        match decode_content(content) {
            Ok(message) => Ok(Opened {
                seq,
                sender,
                message,
                late,
            }),
            // Authentic but undecodable (a peer's bug): ignored, and the window stays.
            Err(e) => {
                self.stats.malformed += 1;
                Err(Dropped::Malformed(e))
            }
        }
    }

    /// Records a datagram [opened](Self::open) and acted on: it will not be taken again.
    pub fn commit(&mut self, seq: u64) {
        self.window.record(seq);
        self.stats.accepted += 1;
    }

    /// Records a datagram [opened](Self::open) that came [late](Opened::late) and is not
    /// delivered: counted as stale, and not taken again.
    pub fn drop_late(&mut self, seq: u64) {
        self.window.record(seq);
        self.stats.stale += 1;
    }

    /// [`open`](Self::open), then [`commit`](Self::commit): the datagram's message, or why
    /// it was dropped. A [late](Opened::late) datagram is dropped as [`Verdict::Stale`],
    /// whatever it carries.
    pub fn accept(&mut self, datagram: Bytes, expected: Option<u16>) -> Verdict {
        match self.open(datagram, expected) {
            Ok(o) if o.late => {
                self.drop_late(o.seq);
                Verdict::Stale
            }
            Ok(o) => {
                self.commit(o.seq);
                Verdict::Accepted(o.message)
            }
            Err(d) => d.into(),
        }
    }

    /// `feed` is bound anew by the datagram `seq`: nothing at or before it is taken
    /// again (see [`ReplayWindow::restart_at`]).
    pub fn restart_at(&mut self, seq: u64) {
        self.window.restart_at(seq);
    }

    /// Counts a datagram ignored for its format.
    pub fn count_malformed(&mut self) {
        self.stats.malformed += 1;
    }

    /// What this receiver has done so far.
    pub fn stats(&self) -> FeedStats {
        self.stats
    }

    /// The newest sequence number accepted.
    pub fn newest(&self) -> Option<u64> {
        self.window.newest()
    }
}

/// The sending side of `feed`: the sender id, the next sequence number, the key of the tag.
#[derive(Debug, Clone)]
pub struct FeedSender {
    sender: u16,
    next_seq: u64,
    /// `None` before the session secret is known: then nothing can be sent but
    /// [unauthenticated refusals](Self::encode_unauthenticated).
    key: Option<FeedKey>,
}

impl FeedSender {
    /// A sender with this id and key, whose first datagram has sequence number 1.
    pub fn new(sender: u16, key: FeedKey) -> Self {
        FeedSender {
            sender,
            next_seq: 1,
            key: Some(key),
        }
    }

    /// A sender with no key yet: [`encode`](Self::encode) refuses
    /// ([`DualError::FeedUnavailable`]).
    pub fn pending(sender: u16) -> Self {
        FeedSender {
            sender,
            next_seq: 1,
            key: None,
        }
    }

    /// The sequence number the next datagram will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends one datagram carrying `msg` to `out`, encoding in place, with its tag.
    /// Refuses (and leaves `out` as it was) a message longer than `max_content`, or any
    /// message while the sender has no key; the sequence number is only used up by a
    /// datagram that was built.
    pub fn encode(
        &mut self,
        msg: &Message,
        out: &mut BytesMut,
        max_content: usize,
    ) -> Result<(), DualError> {
        let Some(key) = &self.key else {
            return Err(DualError::FeedUnavailable);
        };
        let start = out.len();
        Self::put(self.sender, self.next_seq, msg, out, max_content)?;
        let datagram = &out[start..];
        let (fields, rest) = datagram.split_at(FEED_FIELDS_LEN);
        let tag = key.tag(fields, &rest[FEED_TAG_LEN..]);
        out[start + FEED_FIELDS_LEN..start + FEED_HEADER_LEN].copy_from_slice(&tag);
        self.next_seq = self.next_seq.saturating_add(1);
        Ok(())
    }

    /// Appends one datagram with an all-zero tag: a refusal of a request that could not be
    /// authenticated (the server has no key to answer it with, or must not use one, since
    /// that would hand a forger a valid datagram). A receiver never acts on it.
    pub fn encode_unauthenticated(
        &mut self,
        msg: &Message,
        out: &mut BytesMut,
        max_content: usize,
    ) -> Result<(), DualError> {
        Self::put(self.sender, self.next_seq, msg, out, max_content)?;
        self.next_seq = self.next_seq.saturating_add(1);
        Ok(())
    }

    /// The header with a zero tag, then `msg`; refused (`out` unchanged) when too long.
    fn put(
        sender: u16,
        seq: u64,
        msg: &Message,
        out: &mut BytesMut,
        max_content: usize,
    ) -> Result<(), DualError> {
        let start = out.len();
        out.put_u64(FEED_MAGIC);
        out.put_u64(seq);
        out.put_u16(sender);
        out.put_bytes(0, FEED_TAG_LEN);
        msg.encode(out);
        let len = out.len() - start - FEED_HEADER_LEN;
        if len > max_content {
            out.truncate(start);
            return Err(DualError::ContentTooLarge {
                len,
                max: max_content,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Token;
    use crate::wire::FeedDatagram;

    fn key(player: u16) -> FeedKey {
        FeedKey::derive(&Token::new(&[5; 16]).unwrap(), player)
    }

    /// A datagram as its sender makes it (tagged with `key(1)` unless `tag` is given).
    fn dg(seq: u64, sender: u16, msg: &Message) -> Bytes {
        let content = msg.to_bytes();
        let mut fields = BytesMut::new();
        fields.put_u64(FEED_MAGIC);
        fields.put_u64(seq);
        fields.put_u16(sender);
        let tag = key(1).tag(&fields, &content);
        let mut out = BytesMut::new();
        FeedDatagram {
            seq,
            sender,
            tag,
            content,
        }
        .encode(&mut out, 500)
        .unwrap();
        out.freeze()
    }

    fn up() -> Message {
        Message::Update(Element {
            kind: 1,
            sid: 2,
            data: Bytes::from_static(b"x"),
        })
    }

    #[test]
    fn drops_replays_forgeries_and_counts_garbage() {
        let mut rx = FeedReceiver::new(500, key(1));
        assert_eq!(rx.accept(dg(5, 1, &up()), Some(1)), Verdict::Accepted(up()));
        assert_eq!(rx.accept(dg(5, 1, &up()), Some(1)), Verdict::Stale);
        // Late (older than the newest): never applied after a newer one.
        assert_eq!(rx.accept(dg(3, 1, &up()), Some(1)), Verdict::Stale);
        assert_eq!(rx.accept(dg(3, 1, &up()), Some(1)), Verdict::Stale);
        // `open` says it is late; the machines still take the connection's own messages.
        let late = rx.open(dg(4, 1, &Message::Dummy), Some(1)).unwrap();
        assert!(late.late);
        rx.commit(late.seq);
        assert_eq!(
            rx.open(dg(4, 1, &Message::Dummy), Some(1)),
            Err(Dropped::Stale)
        );
        assert_eq!(rx.accept(dg(9, 2, &up()), Some(1)), Verdict::Foreign(2));
        assert!(matches!(
            rx.accept(Bytes::from_static(b"nonsense"), Some(1)),
            Verdict::Malformed(_)
        ));
        // A huge sequence number with a wrong tag: forged, and the window does not move.
        let mut bad = BytesMut::from(&dg(u64::MAX, 1, &up())[..]);
        bad[FEED_FIELDS_LEN] ^= 1;
        assert_eq!(rx.accept(bad.freeze(), Some(1)), Verdict::Forged);
        // A genuine datagram with its sequence number rewritten: forged too.
        let mut moved = BytesMut::from(&dg(6, 1, &up())[..]);
        moved[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(rx.accept(moved.freeze(), Some(1)), Verdict::Forged);
        assert_eq!(rx.accept(dg(6, 1, &up()), Some(1)), Verdict::Accepted(up()));
        // Another session's key: forged.
        let mut other = FeedReceiver::new(500, key(2));
        assert_eq!(other.accept(dg(1, 1, &up()), Some(1)), Verdict::Forged);
        // No key yet: everything is forged.
        let mut pending = FeedReceiver::pending(500);
        assert_eq!(pending.accept(dg(1, 1, &up()), None), Verdict::Forged);
        assert_eq!(
            rx.stats(),
            FeedStats {
                accepted: 3,
                stale: 4,
                malformed: 1,
                foreign: 1,
                forged: 2,
            }
        );
    }

    #[test]
    fn the_window_is_netcode_s_256() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(1_000));
        assert!(w.accept(1_000 - 255));
        assert!(!w.accept(1_000 - 255));
        assert!(!w.accept(1_000 - 256), "older than the window");
        assert!(w.accept(1_001));
        assert!(!w.accept(1_000));
        // Backwards within the window: each taken once, and never again.
        let mut w = ReplayWindow::new();
        assert!(w.accept(10_255));
        for s in (10_000..10_255u64).rev() {
            assert!(w.accept(s), "{s}");
        }
        for s in 10_000..=10_255u64 {
            assert!(!w.accept(s), "{s}");
        }
        // A jump of more than the window clears it; u64::MAX does not overflow.
        let mut w = ReplayWindow::new();
        assert!(w.accept(5));
        assert!(w.accept(u64::MAX));
        assert!(!w.accept(u64::MAX));
        assert!(!w.accept(5));
        assert!(w.accept(u64::MAX - 255));
        // Shifts by less than a word, by a word and by more keep the right bits.
        for jump in [1u64, 63, 64, 65, 128, 200, 255] {
            let mut w = ReplayWindow::new();
            assert!(w.accept(100));
            assert!(w.accept(100 + jump));
            assert!(!w.accept(100), "jump {jump}");
            // 99 is `jump + 1` behind the newest: in the window up to 255 behind.
            assert_eq!(w.accept(99), jump < 255, "jump {jump}");
        }
    }

    #[test]
    fn a_restart_takes_nothing_sent_before_it() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(10));
        w.restart_at(20);
        for s in [10, 11, 19, 20] {
            assert!(!w.accept(s), "{s}");
        }
        assert!(w.accept(21));
        assert_eq!(ReplayWindow::after(None), ReplayWindow::after(None));
        assert!(ReplayWindow::after(None).check(0));
    }

    #[test]
    fn the_update_fast_path_agrees_with_the_general_decoder() {
        for bytes in [
            &b"\x01\x02\x00\x03data"[..],
            b"\x01\x02\x00\x03",
            b"\x01\x02\x00",
            b"\x01",
            b"\x00",
            b"\x00\x00",
            b"",
        ] {
            let b = Bytes::copy_from_slice(bytes);
            assert_eq!(decode_content(b.clone()), Message::decode(b), "{bytes:?}");
        }
    }

    #[test]
    fn sender_tags_refuses_oversized_content_and_sends_nothing_without_a_key() {
        let mut tx = FeedSender::new(3, key(3));
        let mut out = BytesMut::new();
        let big = Message::App(Bytes::from(alloc::vec![0u8; 10]));
        assert_eq!(
            tx.encode(&big, &mut out, 10),
            Err(DualError::ContentTooLarge { len: 11, max: 10 })
        );
        assert!(out.is_empty());
        tx.encode(&Message::Dummy, &mut out, 10).unwrap();
        let d = out.split().freeze();
        assert_eq!(d.len(), FEED_HEADER_LEN + 1);
        assert_eq!(header(&d, 10).unwrap(), (1, 3));
        let mut rx = FeedReceiver::new(10, key(3));
        assert_eq!(rx.accept(d, Some(3)), Verdict::Accepted(Message::Dummy));
        let mut none = FeedSender::pending(3);
        assert_eq!(
            none.encode(&Message::Dummy, &mut out, 10),
            Err(DualError::FeedUnavailable)
        );
        none.encode_unauthenticated(&Message::Dummy, &mut out, 10)
            .unwrap();
        let d = out.split().freeze();
        assert_eq!(&d[FEED_FIELDS_LEN..FEED_HEADER_LEN], &[0; FEED_TAG_LEN]);
        assert_eq!(rx.accept(d, Some(3)), Verdict::Forged);
    }
}

// Session snapshots (src/snapshot.rs): a `feed` endpoint taken over in another process
// continues the sequence numbers, so the peer's receiver neither drops the new datagrams
// as stale nor accepts replays of old ones.
mod resume {
    use super::*;

    impl FeedSender {
        /// A sender with this id and key whose next datagram carries `next_seq` (at
        /// least 1).
        pub fn resume_at(sender: u16, next_seq: u64, key: FeedKey) -> Self {
            FeedSender {
                sender,
                next_seq: next_seq.max(1),
                key: Some(key),
            }
        }
    }

    impl FeedReceiver {
        /// A receiver with this key that has already seen everything up to `newest`.
        pub fn resume_after(max_content: usize, key: FeedKey, newest: Option<u64>) -> Self {
            FeedReceiver {
                window: ReplayWindow::after(newest),
                stats: FeedStats::default(),
                max_content,
                key: Some(key),
            }
        }
    }
}
