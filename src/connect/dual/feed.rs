//! The `feed` channel: one [`FeedDatagram`](crate::wire::FeedDatagram) per datagram, each
//! carrying one message, with the sender's sequence number.
//!
//! Receiving is the hot path, so it allocates nothing: the header is checked in place, the
//! sequence number compared with the newest seen from that sender, and the message decoded
//! with its payload as a slice of the datagram. A datagram older than or equal to the newest
//! seen is dropped (stale or duplicate); one that does not match the format is ignored and
//! counted. Neither is an error: `feed` is lossy by design and garbage on it must not be able
//! to close anything.
//!
//! ```
//! use bytes::BytesMut;
//! use tether::connect::dual::feed::{FeedReceiver, FeedSender, Verdict};
//! use tether::wire::{Message, DEFAULT_FEED_CONTENT};
//!
//! let mut tx = FeedSender::new(7);
//! let mut rx = FeedReceiver::new(DEFAULT_FEED_CONTENT);
//! let mut buf = BytesMut::new();
//! tx.encode(&Message::Dummy, &mut buf, DEFAULT_FEED_CONTENT).unwrap();
//! let datagram = buf.split().freeze();
//! assert_eq!(rx.accept(datagram.clone(), Some(7)), Verdict::Accepted(Message::Dummy));
//! assert_eq!(rx.accept(datagram, Some(7)), Verdict::Stale); // a duplicate
//! assert_eq!(rx.stats().stale, 1);
//! ```

use super::DualError;
use crate::wire::{codes, DecodeError, Element, Message, FEED_HEADER_LEN, FEED_MAGIC};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Counters of what a receiver did with datagrams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedStats {
    /// Datagrams accepted and delivered.
    pub accepted: u64,
    /// Datagrams dropped as older than or equal to the newest seen (late or duplicated).
    pub stale: u64,
    /// Datagrams ignored because they did not match the format.
    pub malformed: u64,
    /// Well-formed datagrams ignored because the sender id was not the expected one.
    pub foreign: u64,
}

/// The newest sequence number seen from one sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqWindow {
    newest: Option<u64>,
}

impl SeqWindow {
    /// Takes `seq` if it is newer than everything seen so far.
    pub fn accept(&mut self, seq: u64) -> bool {
        match self.newest {
            Some(n) if seq <= n => false,
            _ => {
                self.newest = Some(seq);
                true
            }
        }
    }

    /// The newest sequence number accepted, if any.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }
}

/// What became of one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// New, well-formed: deliver it.
    Accepted(Message),
    /// Older than or equal to the newest seen: dropped.
    Stale,
    /// Not tether's format: ignored.
    Malformed(DecodeError),
    /// Well-formed but from another sender: ignored.
    Foreign(u16),
}

/// Splits a datagram into its header fields and decoded message, without allocating.
pub fn parse(datagram: Bytes, max_content: usize) -> Result<(u64, u16, Message), DecodeError> {
    let header = datagram
        .get(..FEED_HEADER_LEN)
        .ok_or(DecodeError::Truncated {
            field: "feed header",
        })?;
    let (magic, rest) = header.split_at(8);
    let (seq, sender) = rest.split_at(8);
    if u64::from_be_bytes(array8(magic)) != FEED_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let seq = u64::from_be_bytes(array8(seq));
    let sender = u16::from_be_bytes([
        sender.first().copied().unwrap_or(0),
        sender.get(1).copied().unwrap_or(0),
    ]);
    let content_len = datagram.len() - FEED_HEADER_LEN;
    if content_len > max_content {
        return Err(DecodeError::Oversized {
            field: "feed content",
            len: content_len,
            max: max_content,
        });
    }
    // `advance` rather than `slice`: no reference-count traffic on the hot path.
    let mut content = datagram;
    content.advance(FEED_HEADER_LEN);
    let msg = decode_content(content)?;
    Ok((seq, sender, msg))
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

/// The receiving side of `feed` for one sender: format check, sequence check, counters.
#[derive(Debug, Clone, Default)]
pub struct FeedReceiver {
    window: SeqWindow,
    stats: FeedStats,
    max_content: usize,
}

impl FeedReceiver {
    /// A receiver that refuses content over `max_content` bytes.
    pub fn new(max_content: usize) -> Self {
        FeedReceiver {
            window: SeqWindow::default(),
            stats: FeedStats::default(),
            max_content,
        }
    }

    /// Checks one datagram. With `expected` set, a datagram from another sender is foreign.
    /// The sequence number is only recorded for a datagram that is accepted, so a forged
    /// or garbled one cannot push the window forward.
    pub fn accept(&mut self, datagram: Bytes, expected: Option<u16>) -> Verdict {
        match parse(datagram, self.max_content) {
            Err(e) => {
                self.stats.malformed += 1;
                Verdict::Malformed(e)
            }
            Ok((_, sender, _)) if expected.is_some_and(|s| s != sender) => {
                self.stats.foreign += 1;
                Verdict::Foreign(sender)
            }
            Ok((seq, _, msg)) => {
                if self.window.accept(seq) {
                    self.stats.accepted += 1;
                    Verdict::Accepted(msg)
                } else {
                    self.stats.stale += 1;
                    Verdict::Stale
                }
            }
        }
    }

    /// Records a datagram that was parsed elsewhere; `true` if it is newer than all seen.
    pub fn accept_seq(&mut self, seq: u64) -> bool {
        let ok = self.window.accept(seq);
        if ok {
            self.stats.accepted += 1;
        } else {
            self.stats.stale += 1;
        }
        ok
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

/// The sending side of `feed`: the sender id and the next sequence number.
#[derive(Debug, Clone)]
pub struct FeedSender {
    sender: u16,
    next_seq: u64,
}

impl FeedSender {
    /// A sender with this id, whose first datagram has sequence number 1.
    pub fn new(sender: u16) -> Self {
        FeedSender {
            sender,
            next_seq: 1,
        }
    }

    /// The sequence number the next datagram will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends one datagram carrying `msg` to `out`, encoding in place. Refuses (and leaves
    /// `out` as it was) a message longer than `max_content`; the sequence number is only
    /// used up by a datagram that was built.
    pub fn encode(
        &mut self,
        msg: &Message,
        out: &mut BytesMut,
        max_content: usize,
    ) -> Result<(), DualError> {
        let start = out.len();
        out.put_u64(FEED_MAGIC);
        out.put_u64(self.next_seq);
        out.put_u16(self.sender);
        msg.encode(out);
        let len = out.len() - start - FEED_HEADER_LEN;
        if len > max_content {
            out.truncate(start);
            return Err(DualError::ContentTooLarge {
                len,
                max: max_content,
            });
        }
        self.next_seq = self.next_seq.saturating_add(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FeedDatagram;

    fn dg(seq: u64, sender: u16, msg: &Message) -> Bytes {
        let mut out = BytesMut::new();
        FeedDatagram {
            seq,
            sender,
            content: msg.to_bytes(),
        }
        .encode(&mut out, 500)
        .unwrap();
        out.freeze()
    }

    #[test]
    fn drops_stale_and_duplicates_and_counts_garbage() {
        let mut rx = FeedReceiver::new(500);
        let up = Message::Update(Element {
            kind: 1,
            sid: 2,
            data: Bytes::from_static(b"x"),
        });
        assert_eq!(
            rx.accept(dg(5, 1, &up), Some(1)),
            Verdict::Accepted(up.clone())
        );
        assert_eq!(rx.accept(dg(5, 1, &up), Some(1)), Verdict::Stale);
        assert_eq!(rx.accept(dg(3, 1, &up), Some(1)), Verdict::Stale);
        assert_eq!(rx.accept(dg(9, 2, &up), Some(1)), Verdict::Foreign(2));
        assert!(matches!(
            rx.accept(Bytes::from_static(b"nonsense"), Some(1)),
            Verdict::Malformed(_)
        ));
        // A garbled datagram with a huge sequence number must not move the window.
        let mut bad = BytesMut::from(&dg(1_000, 1, &up)[..]);
        bad.truncate(FEED_HEADER_LEN + 1);
        assert!(matches!(
            rx.accept(bad.freeze(), Some(1)),
            Verdict::Malformed(_)
        ));
        assert_eq!(rx.accept(dg(6, 1, &up), Some(1)), Verdict::Accepted(up));
        assert_eq!(
            rx.stats(),
            FeedStats {
                accepted: 2,
                stale: 2,
                malformed: 2,
                foreign: 1
            }
        );
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
    fn sender_refuses_oversized_content_without_using_a_sequence_number() {
        let mut tx = FeedSender::new(3);
        let mut out = BytesMut::new();
        let big = Message::App(Bytes::from(alloc::vec![0u8; 10]));
        assert_eq!(
            tx.encode(&big, &mut out, 10),
            Err(DualError::ContentTooLarge { len: 11, max: 10 })
        );
        assert!(out.is_empty());
        tx.encode(&Message::Dummy, &mut out, 10).unwrap();
        assert_eq!(parse(out.freeze(), 10).unwrap(), (1, 3, Message::Dummy));
    }
}
