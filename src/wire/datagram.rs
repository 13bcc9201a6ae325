//! The `feed` datagram header: `[MAGIC u64][SEQ u64][SENDER u16][TAG 16 bytes][CONTENT]`.
//!
//! R-Type's header kept byte for byte in its first 18 bytes: the magic `0xff1cec0ffeedefec`,
//! a sequence number that grows by one per datagram sent, the sender's id. tether adds a
//! 16-byte tag after them: HMAC-SHA-256 of the 18 header bytes and the content, keyed by the
//! session's feed key ([`FeedKey`](super::FeedKey)), which only `main` carries the secret
//! of. The content (one encoded [`Message`](super::Message)) is at most a configured number
//! of bytes (500 by default, as R-Type had it); the tag does not count against it.

use super::{DecodeError, FEED_TAG_LEN};
use bytes::{BufMut, Bytes, BytesMut};

/// The magic number that starts every `feed` datagram.
pub const FEED_MAGIC: u64 = 0xff1c_ec0f_feed_efec;

/// Bytes of R-Type's header fields (`MAGIC SEQ SENDER`), the part of the header the tag
/// covers.
pub const FEED_FIELDS_LEN: usize = 18;

/// Bytes of header before the content: R-Type's fields, then the tag.
pub const FEED_HEADER_LEN: usize = FEED_FIELDS_LEN + FEED_TAG_LEN;

/// The default largest content of a `feed` datagram, in bytes.
pub const DEFAULT_FEED_CONTENT: usize = 500;

/// A `feed` datagram, decoded: header fields and the content as a slice of the input.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use tether::wire::FeedDatagram;
///
/// let sent = FeedDatagram { seq: 7, sender: 3, tag: [0; 16], content: Bytes::from_static(b"\x01hi") };
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
    /// The tag (see [`FeedKey`](super::FeedKey)); this codec neither makes nor checks it.
    pub tag: [u8; FEED_TAG_LEN],
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
        let tag_bytes = r.bytes(FEED_TAG_LEN, "tag")?;
        let mut tag = [0u8; FEED_TAG_LEN];
        tag.copy_from_slice(&tag_bytes);
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
            tag,
            content,
        })
    }

    /// Appends the datagram to `out`, refusing content over `max_content`.
    pub fn encode(&self, out: &mut BytesMut, max_content: usize) -> Result<(), DecodeError> {
        encode_header_and(
            self.seq,
            self.sender,
            &self.tag,
            &self.content,
            out,
            max_content,
        )
    }
}

/// Appends a datagram made of a header (with this `tag`) and `content` to `out` without
/// building a [`FeedDatagram`] (no `Bytes` needed for the content).
pub fn encode_header_and(
    seq: u64,
    sender: u16,
    tag: &[u8; FEED_TAG_LEN],
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
    out.put_slice(tag);
    out.put_slice(content);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_r_type_s_then_the_tag() {
        let mut buf = BytesMut::new();
        encode_header_and(1, 2, &[0xaa; 16], b"x", &mut buf, 500).unwrap();
        let mut want = alloc::vec![0xff, 0x1c, 0xec, 0x0f, 0xfe, 0xed, 0xef, 0xec];
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 2]);
        want.extend_from_slice(&[0xaa; 16]);
        want.push(b'x');
        assert_eq!(&buf[..], &want[..]);
        assert_eq!(buf.len(), FEED_HEADER_LEN + 1);
    }

    #[test]
    fn refuses_bad_magic_short_and_oversized() {
        assert_eq!(
            FeedDatagram::decode(Bytes::from_static(&[0; 34]), 500),
            Err(DecodeError::BadMagic)
        );
        assert!(matches!(
            FeedDatagram::decode(Bytes::from_static(&[0xff, 0x1c]), 500),
            Err(DecodeError::Truncated { .. })
        ));
        let mut buf = BytesMut::new();
        encode_header_and(1, 2, &[0; 16], &[0; 10], &mut buf, 10).unwrap();
        assert!(matches!(
            FeedDatagram::decode(buf.freeze(), 9),
            Err(DecodeError::Oversized {
                len: 10,
                max: 9,
                ..
            })
        ));
        assert!(encode_header_and(1, 2, &[0; 16], &[0; 11], &mut BytesMut::new(), 10).is_err());
        // R-Type's 18-byte header alone, without a tag, is too short.
        let mut short = BytesMut::new();
        short.put_u64(FEED_MAGIC);
        short.put_u64(1);
        short.put_u16(2);
        short.put_u8(0);
        assert!(matches!(
            FeedDatagram::decode(short.freeze(), 500),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
