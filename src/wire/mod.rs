//! The wire: frames on `main`, datagrams on `feed`, and the messages inside them.
//!
//! - [`FrameDecoder`] / [`encode_frame`]: `[LEN u32][payload]` frames on stream transports.
//! - [`FeedDatagram`]: the `feed` header, `[MAGIC u64][SEQ u64][SENDER u16][TAG 16][CONTENT]`,
//!   and [`FeedKey`], the key of its tag (HMAC-SHA-256), derived from a secret `main` carries.
//! - [`Message`]: every message, each with an exact encoding (docs/PROTOCOL.md).
//!
//! Decoding never panics: any bytes give a value or a [`DecodeError`].

pub mod anchored;
mod auth;
pub mod codes;
mod datagram;
mod error;
mod frame;
mod journal;
mod message;
mod reader;

pub use anchored::{AnchoredMessage, Change, MapEntry, SyncType};
pub use auth::{reconnection_proof, FeedKey, FEED_TAG_LEN, MIN_SECRET_LEN, PROOF_LEN};
pub use datagram::{
    encode_header_and, FeedDatagram, DEFAULT_FEED_CONTENT, FEED_FIELDS_LEN, FEED_HEADER_LEN,
    FEED_MAGIC, SERVER_SENDER,
};
pub use error::DecodeError;
pub use frame::{
    encode_frame, FrameDecoder, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN, HANDSHAKE_MAX_FRAME,
    MIN_RESERVE,
};
pub(crate) use journal::answered_id;
pub use journal::{
    Entry, HeldLines, JournalList, JournalMessage, JournalRequest, LineId, Status, StatusResponse,
    JOURNAL_LIST, JOURNAL_REQUEST, MAX_DESCRIPTION, MAX_ID_LEN, MAX_LIST_ENTRIES, RESOURCE,
    RESOURCE_REQ, STATUS,
};
pub use message::{Element, FailReason, Message, RefuseReason, PROTOCOL_VERSION};
pub use reader::{put_token, Reader};

/// Arbitrary bytes as `Bytes`, for `#[arbitrary(with = ...)]` on fields (`bytes` has no
/// `arbitrary` support of its own).
#[cfg(feature = "arbitrary")]
pub fn arbitrary_bytes(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<bytes::Bytes> {
    let v: alloc::vec::Vec<u8> = u.arbitrary()?;
    Ok(bytes::Bytes::from(v))
}
