//! Session snapshots: one session's durable state as bytes, so that another process (another
//! server of a fleet, a restarted client) can take the session over.
//!
//! A snapshot holds what a session needs to be resumed: its tokens, whether it was
//! CONNECTED or RECONNECTING, its queue of unsent messages, its expiry relative to the
//! export's `now`, and (for the composed [`Peer`](crate::peer::Peer)) its journal-sync
//! [`Marks`]. Transports, frame buffers and timers in flight are not part of it: a restored
//! session has no transport, so **a session exported while CONNECTED is restored as
//! RECONNECTING**, and its client resumes it by the protocol's normal resumption path
//! (`Outcome::Resumed` / `Outcome::Resumed`).
//!
//! The types, one per machine, all encoded the same way (docs/PROTOCOL.md section 8):
//!
//! | type | from / into |
//! |---|---|
//! | [`merge::MergeSessionSnapshot`](crate::connect::merge::MergeSessionSnapshot) | `merge::MergeServer::export_session` / `import_session` |
//! | [`merge::MergeClientSnapshot`](crate::connect::merge::MergeClientSnapshot) | `merge::MergeClient::snapshot` / `Client::restore` |
//! | [`dual::PlayerSnapshot`](crate::connect::dual::PlayerSnapshot) | `DualServer::export_player` / `import_player` |
//! | [`dual::DualClientSnapshot`](crate::connect::dual::DualClientSnapshot) | `DualClient::snapshot` / `DualClient::restore` |
//! | [`PeerSnapshot`](crate::peer::PeerSnapshot) | `Peer::export_session` / `Peer::import_session` |
//! | [`merge::MergeEndedSnapshot`](crate::connect::merge::MergeEndedSnapshot) | `merge::MergeServer::export_ended` / `import_ended` |
//!
//! **Tokens in a snapshot are secrets**: anyone holding the bytes can resume the session.
//! Store and move snapshots as securely as the tokens themselves (encrypted, over an
//! authenticated channel). The checksum in the format detects corruption and truncation,
//! not a deliberate forgery: it is not a MAC. `Debug` of every snapshot type prints no
//! token bytes ([`Token`]'s `Debug` is redacted).
//!
//! ```
//! use bytes::BytesMut;
//! use tether::connect::merge::{MergeSessionSnapshot, Status};
//! use tether::snapshot::SnapshotError;
//! use tether::Token;
//!
//! let snap = MergeSessionSnapshot {
//!     status: Status::Reconnecting,
//!     local: Token::new(&[1; 16]).unwrap(),
//!     remote: Some(Token::new(&[2; 16]).unwrap()),
//!     merged: Token::new(&[3; 32]).unwrap(),
//!     secrets: None,
//!     queue: Vec::new(),
//!     acked: 0,
//!     received: 0,
//!     expires_in: None,
//! };
//! let mut buf = BytesMut::new();
//! snap.encode(&mut buf);
//! let bytes = buf.freeze();
//! assert_eq!(MergeSessionSnapshot::decode(bytes.clone()), Ok(snap));
//! // Truncated: refused with a typed error.
//! assert!(MergeSessionSnapshot::decode(bytes.slice(..bytes.len() - 1)).is_err());
//! ```

use crate::sync::journal::Marks;
use crate::time::Duration;
use crate::token::Token;
use crate::wire::{put_token, DecodeError, LineId, Message, Reader};
use alloc::vec::Vec;
use bytes::{BufMut, Bytes, BytesMut};

/// The first four bytes of every snapshot: `TSNP`.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"TSNP";
/// The version of the snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u8 = 4;
/// Magic, version, kind and body length: the bytes before the body.
pub const SNAPSHOT_HEADER_LEN: usize = 10;
/// The CRC-32 after the body.
pub const SNAPSHOT_TRAILER_LEN: usize = 4;
/// Largest message in a snapshot's queue (the largest frame tether accepts anywhere).
pub const SNAPSHOT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Which machine a snapshot belongs to: byte 5 of every snapshot.
pub mod kind {
    /// A token-merge server session ([`MergeSessionSnapshot`](crate::connect::merge::MergeSessionSnapshot)).
    pub const MERGE_SESSION: u8 = 0x01;
    /// A token-merge client ([`ClientSnapshot`](crate::connect::merge::MergeClientSnapshot)).
    pub const MERGE_CLIENT: u8 = 0x02;
    /// A dual-channel server player ([`PlayerSnapshot`](crate::connect::dual::PlayerSnapshot)).
    pub const DUAL_PLAYER: u8 = 0x03;
    /// A dual-channel client ([`ClientSnapshot`](crate::connect::dual::DualClientSnapshot)).
    pub const DUAL_CLIENT: u8 = 0x04;
    /// A token-merge server's tombstones of formally ended sessions
    /// ([`MergeEndedSnapshot`](crate::connect::merge::MergeEndedSnapshot)).
    pub const MERGE_ENDED: u8 = 0x05;
    /// Added to the connection's kind in a [`PeerSnapshot`](crate::peer::PeerSnapshot)
    /// (connection snapshot plus journal-sync marks).
    pub const PEER_FLAG: u8 = 0x80;
}

/// Why bytes are not a snapshot. Decoding never panics: any bytes give a snapshot or one of
/// these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Fewer bytes than a header and a checksum.
    #[error("snapshot truncated: {0} bytes")]
    Truncated(usize),
    /// The bytes do not start with [`SNAPSHOT_MAGIC`].
    #[error("not a tether snapshot (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("unsupported snapshot version {0}")]
    UnsupportedVersion(u8),
    /// A snapshot of another machine (see [`kind`]).
    #[error("snapshot kind {found:#04x}, expected {expected:#04x}")]
    WrongKind {
        /// The kind this type reads.
        expected: u8,
        /// The kind the bytes carry.
        found: u8,
    },
    /// The body length does not match the bytes given (truncated, or bytes appended).
    #[error("snapshot body length {declared} does not match the {actual} bytes present")]
    LengthMismatch {
        /// The length in the header.
        declared: u32,
        /// The length actually present.
        actual: usize,
    },
    /// The CRC-32 does not match: the bytes were changed.
    #[error("snapshot checksum mismatch")]
    BadChecksum,
    /// A field of the body is malformed (or a queued message does not decode).
    #[error("snapshot field: {0}")]
    Field(#[from] DecodeError),
}

/// Why a snapshot could not be imported (restored) into a machine. The machine is left as
/// it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The server holds its configured maximum of sessions (or player slots).
    #[error("no room for another session")]
    Full,
    /// A session with the same token (or player with the same token A or B) exists: the
    /// snapshot was imported already, or the caller reused tokens.
    #[error("a session with this token exists")]
    DuplicateToken,
    /// The session's token belongs to a session that ended formally on this server.
    #[error("this session ended formally")]
    Ended,
    /// The player id of the snapshot is taken (or out of this server's range).
    #[error("player id {0} is taken or out of range")]
    PlayerTaken(u16),
    /// The queue is longer than this machine's configured bound.
    #[error("queue of {len} messages is over the bound of {max}")]
    QueueTooLong {
        /// Messages in the snapshot.
        len: usize,
        /// The configured bound.
        max: usize,
    },
    /// A token of the snapshot is unusable under this machine's configuration (too short,
    /// or not dop text in dop's encoding).
    #[error("token unusable here")]
    BadToken,
    /// The machine already holds a session or a transport (a client imports only when idle).
    #[error("the machine is busy with a session of its own")]
    Busy,
    /// The machine is a client, which has one session and cannot give it away.
    #[error("not supported by this machine")]
    Unsupported,
}

/// A snapshot type: its kind byte and its body layout. [`encode`](Snapshot::encode) and
/// [`decode`](Snapshot::decode) add and check the common header and checksum.
pub trait Snapshot: Sized {
    /// The kind byte ([`kind`]).
    const KIND: u8;

    /// Appends the body.
    fn put_body(&self, out: &mut BytesMut);

    /// Reads the body (the reader is checked to be empty afterwards).
    fn read_body(r: &mut Reader) -> Result<Self, SnapshotError>;

    /// Appends the whole snapshot (header, body, checksum) to `out`.
    fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_slice(&SNAPSHOT_MAGIC);
        out.put_u8(SNAPSHOT_VERSION);
        out.put_u8(Self::KIND);
        out.put_u32(0);
        let body = out.len();
        self.put_body(out);
        let len = u32::try_from(out.len() - body).unwrap_or(u32::MAX);
        if let Some(slot) = out.get_mut(body - 4..body) {
            slot.copy_from_slice(&len.to_be_bytes());
        }
        let crc = crc32(out.get(start..).unwrap_or(&[]));
        out.put_u32(crc);
    }

    /// Reads a whole snapshot: refuses bad magic, other versions and kinds, a length that
    /// does not match, a checksum that does not match, and malformed or trailing fields.
    fn decode(bytes: Bytes) -> Result<Self, SnapshotError> {
        let body = check_frame(&bytes, Self::KIND)?;
        let mut r = Reader::new(body);
        let snap = Self::read_body(&mut r)?;
        r.finish()?;
        Ok(snap)
    }
}

/// Checks everything but the body; returns the body.
fn check_frame(bytes: &Bytes, expected: u8) -> Result<Bytes, SnapshotError> {
    let total = bytes.len();
    if total < SNAPSHOT_HEADER_LEN + SNAPSHOT_TRAILER_LEN {
        return Err(SnapshotError::Truncated(total));
    }
    let (header, _) = bytes.split_at(SNAPSHOT_HEADER_LEN);
    let (magic, rest) = header.split_at(4);
    if magic != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let (version, rest) = rest.split_at(1);
    let (found, len) = rest.split_at(1);
    let version = version.first().copied().unwrap_or(0);
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    let found = found.first().copied().unwrap_or(0);
    if found != expected {
        return Err(SnapshotError::WrongKind { expected, found });
    }
    let mut l = [0u8; 4];
    for (d, s) in l.iter_mut().zip(len) {
        *d = *s;
    }
    let declared = u32::from_be_bytes(l);
    let actual = total - SNAPSHOT_HEADER_LEN - SNAPSHOT_TRAILER_LEN;
    if usize::try_from(declared).ok() != Some(actual) {
        return Err(SnapshotError::LengthMismatch { declared, actual });
    }
    let (covered, trailer) = bytes.split_at(total - SNAPSHOT_TRAILER_LEN);
    let mut c = [0u8; 4];
    for (d, s) in c.iter_mut().zip(trailer) {
        *d = *s;
    }
    if crc32(covered) != u32::from_be_bytes(c) {
        return Err(SnapshotError::BadChecksum);
    }
    Ok(bytes.slice(SNAPSHOT_HEADER_LEN..total - SNAPSHOT_TRAILER_LEN))
}

/// CRC-32 (IEEE 802.3, reflected, as zlib): catches every change of up to 32 consecutive
/// bits. Bitwise: snapshots are small and rare, a table is not worth its 1 KiB.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            let mask = (c & 1).wrapping_neg();
            c = (c >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !c
}

// Field helpers shared by the snapshot types (same style as src/wire/).

pub(crate) fn put_opt_token(out: &mut BytesMut, t: Option<&Token>) {
    match t {
        Some(t) => {
            out.put_u8(1);
            put_token(out, t);
        }
        None => out.put_u8(0),
    }
}

pub(crate) fn read_opt_token(
    r: &mut Reader,
    field: &'static str,
) -> Result<Option<Token>, SnapshotError> {
    Ok(if r.bool(field)? {
        Some(r.token(field)?)
    } else {
        None
    })
}

pub(crate) fn put_opt_u64(out: &mut BytesMut, v: Option<u64>) {
    match v {
        Some(v) => {
            out.put_u8(1);
            out.put_u64(v);
        }
        None => out.put_u8(0),
    }
}

pub(crate) fn read_opt_u64(
    r: &mut Reader,
    field: &'static str,
) -> Result<Option<u64>, SnapshotError> {
    Ok(if r.bool(field)? {
        Some(r.u64(field)?)
    } else {
        None
    })
}

pub(crate) fn put_opt_duration(out: &mut BytesMut, d: Option<Duration>) {
    put_opt_u64(out, d.map(Duration::as_micros));
}

pub(crate) fn read_opt_duration(
    r: &mut Reader,
    field: &'static str,
) -> Result<Option<Duration>, SnapshotError> {
    Ok(read_opt_u64(r, field)?.map(Duration::from_micros))
}

/// `[COUNT u32]` then each message as `[LEN u32][message]`.
pub(crate) fn put_queue<'a>(out: &mut BytesMut, queue: impl ExactSizeIterator<Item = &'a Message>) {
    out.put_u32(u32::try_from(queue.len()).unwrap_or(u32::MAX));
    for m in queue {
        let at = out.len();
        out.put_u32(0);
        m.encode(out);
        let len = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
        if let Some(slot) = out.get_mut(at..at + 4) {
            slot.copy_from_slice(&len.to_be_bytes());
        }
    }
}

/// Reads a queue. Memory stays bounded by the input: every message takes at least 5 bytes
/// of it, and nothing is reserved from the announced count.
pub(crate) fn read_queue(r: &mut Reader) -> Result<Vec<Message>, SnapshotError> {
    let count = r.u32("queue count")?;
    let mut queue = Vec::new();
    for _ in 0..count {
        let bytes = r.bytes_u32(SNAPSHOT_MAX_MESSAGE, "queued message")?;
        queue.push(Message::decode(bytes)?);
    }
    Ok(queue)
}

fn put_opt_line(out: &mut BytesMut, l: Option<LineId>) {
    match l {
        Some(l) => {
            out.put_u8(1);
            out.put_u64(l.epoch);
            out.put_u64(l.seq);
            out.put_u64(l.check);
        }
        None => out.put_u8(0),
    }
}

fn read_opt_line(r: &mut Reader, field: &'static str) -> Result<Option<LineId>, SnapshotError> {
    Ok(if r.bool(field)? {
        Some(LineId {
            epoch: r.u64(field)?,
            seq: r.u64(field)?,
            check: r.u64(field)?,
        })
    } else {
        None
    })
}

/// Journal-sync marks: `ours`, `theirs`, then `held`, each `[0]` or
/// `[1][EPOCH u64][SEQ u64][CHECK u64]`.
pub(crate) fn put_marks(out: &mut BytesMut, m: &Marks) {
    put_opt_line(out, m.ours);
    put_opt_line(out, m.theirs);
    put_opt_line(out, m.held);
}

pub(crate) fn read_marks(r: &mut Reader) -> Result<Marks, SnapshotError> {
    Ok(Marks {
        ours: read_opt_line(r, "marks.ours")?,
        theirs: read_opt_line(r, "marks.theirs")?,
        held: read_opt_line(r, "marks.held")?,
    })
}

/// A field holding a value the snapshot format does not allow.
pub(crate) fn bad_field(field: &'static str, reason: &'static str) -> SnapshotError {
    SnapshotError::Field(DecodeError::BadField { field, reason })
}

/// Gives a snapshot type inherent `encode` / `decode` (no trait import needed).
macro_rules! inherent_codec {
    ($t:ty) => {
        impl $t {
            /// Appends the snapshot's bytes (docs/PROTOCOL.md section 8) to `out`.
            pub fn encode(&self, out: &mut bytes::BytesMut) {
                $crate::snapshot::Snapshot::encode(self, out)
            }

            /// Reads a snapshot; any bytes give one or a typed error, never a panic.
            pub fn decode(bytes: bytes::Bytes) -> Result<Self, $crate::snapshot::SnapshotError> {
                <Self as $crate::snapshot::Snapshot>::decode(bytes)
            }
        }
    };
}
pub(crate) use inherent_codec;

#[cfg(test)]
mod tests {
    use super::crc32;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
