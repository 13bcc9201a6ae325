//! The `feed` datagram header: `[MAGIC u64][SEQ u64][SENDER u16][CONTENT]`.
//!
//! Kept from R-Type byte for byte: the magic `0xff1cec0ffeedefec`, a sequence number that
//! grows by one per datagram sent (so that an older datagram is never applied after a newer
//! one), the sender's id, and the content (one encoded [`Message`](super::Message)), at most
//! a configured number of bytes (500 by default, as R-Type had it).

use super::DecodeError;
use bytes::{BufMut, Bytes, BytesMut};

/// The magic number that starts every `feed` datagram.
pub const FEED_MAGIC: u64 = 0xff1c_ec0f_feed_efec;

/// Bytes of header before the content.
pub const FEED_HEADER_LEN: usize = 18;

/// The default largest content of a `feed` datagram, in bytes.
pub const DEFAULT_FEED_CONTENT: usize = 500;

/// A `feed` datagram, decoded: header fields and the content as a slice of the input.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use tether::wire::FeedDatagram;
///
/// let sent = FeedDatagram { seq: 7, sender: 3, content: Bytes::from_static(b"\x01hi") };
/// let mut buf = BytesMut::new();
/// sent.encode(&mut buf, 500).unwrap();
/// let got = FeedDatagram::decode(buf.freeze(), 500).unwrap();
/// assert_eq!(got, sent);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct FeedDatagram {
    /// Sequence number: one more than the sender's previous datagram.
    pub seq: u64,
    /// The sender's id (a player id; the server uses [`SERVER_SENDER`]).
    pub sender: u16,
    /// The content: one encoded message.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::wire::arbitrary_bytes))]
    pub content: Bytes,
}

/// The sender id a server puts in its own `feed` datagrams.
pub const SERVER_SENDER: u16 = 0xffff;

impl FeedDatagram {
    /// Checks the header and the content limit; the content is a slice of `datagram`.
    pub fn decode(datagram: Bytes, max_content: usize) -> Result<FeedDatagram, DecodeError> {
        let mut r = super::Reader::new(datagram);
        if r.u64("magic")? != FEED_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let seq = r.u64("sequence")?;
        let sender = r.u16("sender")?;
        let content = r.rest();
        if content.len() > max_content {
            return Err(DecodeError::Oversized {
                field: "feed content",
                len: content.len(),
                max: max_content,
            });
        }
        Ok(FeedDatagram {
            seq,
            sender,
            content,
        })
    }

    /// Appends the datagram to `out`, refusing content over `max_content`.
    pub fn encode(&self, out: &mut BytesMut, max_content: usize) -> Result<(), DecodeError> {
        encode_header_and(self.seq, self.sender, &self.content, out, max_content)
    }
}

/// Appends a datagram made of a header and `content` to `out` without building a
/// [`FeedDatagram`] (no `Bytes` needed for the content).
pub fn encode_header_and(
    seq: u64,
    sender: u16,
    content: &[u8],
    out: &mut BytesMut,
    max_content: usize,
) -> Result<(), DecodeError> {
    if content.len() > max_content {
        return Err(DecodeError::Oversized {
            field: "feed content",
            len: content.len(),
            max: max_content,
        });
    }
    out.reserve(FEED_HEADER_LEN + content.len());
    out.put_u64(FEED_MAGIC);
    out.put_u64(seq);
    out.put_u16(sender);
    out.put_slice(content);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_r_type_s() {
        let mut buf = BytesMut::new();
        encode_header_and(1, 2, b"x", &mut buf, 500).unwrap();
        assert_eq!(
            &buf[..],
            &[0xff, 0x1c, 0xec, 0x0f, 0xfe, 0xed, 0xef, 0xec, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, b'x']
        );
    }

    #[test]
    fn refuses_bad_magic_short_and_oversized() {
        assert_eq!(
            FeedDatagram::decode(Bytes::from_static(&[0; 18]), 500),
            Err(DecodeError::BadMagic)
        );
        assert!(matches!(
            FeedDatagram::decode(Bytes::from_static(&[0xff, 0x1c]), 500),
            Err(DecodeError::Truncated { .. })
        ));
        let mut buf = BytesMut::new();
        encode_header_and(1, 2, &[0; 10], &mut buf, 10).unwrap();
        assert!(matches!(
            FeedDatagram::decode(buf.freeze(), 9),
            Err(DecodeError::Oversized {
                len: 10,
                max: 9,
                ..
            })
        ));
        assert!(encode_header_and(1, 2, &[0; 11], &mut BytesMut::new(), 10).is_err());
    }
}
