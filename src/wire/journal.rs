//! Journal-sync (SDMP) messages, codes `0x30..=0x3f`.
//!
//! | code | what | layout after the code |
//! |---:|---|---|
//! | 0x30 | journal request (a `SYNC_REQ` body, never a message) | `EPOCH u64, SINCE u64, CHECK u64, LIMIT u32, FLAGS u8` |
//! | 0x31 | journal list | `CTX u32, EPOCH u64, SINCE u64, CHECK u64, HEAD u64, COUNT u16, ITEM * COUNT` |
//! | 0x32 | resource request | `REQ u32, AUTHOR_LEN u8, AUTHOR, RES_LEN u8, RESOURCE` |
//! | 0x33 | resource | `REQ u32, BYTES..` |
//! | 0x34 | status response | `STATUS u16, HAS_REQ u8, [REQ u32], DESC_LEN u16, DESC` |
//!
//! An `ITEM` is an entry, `AUTHOR_LEN u8, AUTHOR, RES_LEN u8, RESOURCE, PAYLOAD_LEN u32,
//! PAYLOAD` (`AUTHOR_LEN` at most 64), or a run of held lines, `0xFF, LINES u32, CHECK u64`:
//! lines the receiver gave the sender, not sent back ([`HeldLines`]).
//! Layouts are exact (one encoding per value); every variable-length field comes out of
//! decoding as a slice of the received frame, never a copy. docs/PROTOCOL.md section 6 has
//! the full story.

use super::{DecodeError, Reader};
use alloc::vec::Vec;
use bytes::{BufMut, Bytes, BytesMut};
use core::num::NonZeroU32;

/// Code of the journal request, the body of a `SYNC_REQ` that asks for journal sync. It tags
/// the body so that other kinds of sync can share `SYNC_REQ`; it is never a message code.
pub const JOURNAL_REQUEST: u8 = 0x30;
/// Code of [`JournalMessage::List`].
pub const JOURNAL_LIST: u8 = 0x31;
/// Code of [`JournalMessage::ResourceReq`].
pub const RESOURCE_REQ: u8 = 0x32;
/// Code of [`JournalMessage::Resource`].
pub const RESOURCE: u8 = 0x33;
/// Code of [`JournalMessage::Status`].
pub const STATUS: u8 = 0x34;

/// Most entries one journal list message may carry (a decoder refuses more).
pub const MAX_LIST_ENTRIES: usize = 1024;
/// Longest author or resource id, in bytes (SDMP's are a SHA-256 fingerprint and a hash).
pub const MAX_ID_LEN: usize = 64;
/// Longest status description, in bytes.
pub const MAX_DESCRIPTION: usize = 1024;

/// A journal line id: the journal's epoch, the line's number in it, and the journal's
/// hash chain at that line.
///
/// Line `seq` 0 of any epoch is "before the first entry": `since = {epoch, 0}` asks for the
/// whole journal. A journal that is reset or lost starts a new epoch, so a `since` from an
/// older life of the journal never names a line of the new one (see docs/PROTOCOL.md 6.6).
///
/// `check` makes that hold even when the caller gives two lives of a journal the same
/// epoch: it is a rolling 64-bit hash of every entry up to the line, in order (SDMP's
/// line numbers are a hash chain for the same reason), so a line id names one history.
/// A replier honours a `since` only if its own line there has the same check; anything
/// else is answered with the whole journal. The hash detects accidental divergence (a
/// wiped or restored journal), not forgery: a peer that can forge lines can forge checks.
///
/// ```
/// use tether::wire::{Entry, LineId};
///
/// let start = LineId::start(7);
/// let one = start.next(&Entry::new(b"alice", b"r1", b"hello"));
/// assert_eq!((one.epoch, one.seq), (7, 1));
/// // Another entry at the same place in a journal of the same epoch: another line.
/// let other = start.next(&Entry::new(b"alice", b"r1", b"bye"));
/// assert_ne!(one, other);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct LineId {
    /// Which life of the journal (chosen by its owner, e.g. at random when it is created).
    pub epoch: u64,
    /// The line number, 1 for the first entry; 0 is "before the first entry".
    pub seq: u64,
    /// The hash chain at this line: 0 before the first entry, then
    /// [`LineId::next`]'s fold of each entry in order.
    pub check: u64,
}

impl LineId {
    /// The line before the first entry of `epoch` (check 0).
    pub const fn start(epoch: u64) -> LineId {
        LineId {
            epoch,
            seq: 0,
            check: 0,
        }
    }

    /// The id of the line after this one when it holds `entry`: the number plus one, the
    /// check folded over the entry's author, resource id and payload (docs/PROTOCOL.md
    /// 6.6 gives the function; it is part of the protocol and never changes).
    pub fn next(self, entry: &Entry) -> LineId {
        let mut h = chain_word(self.check, 0x7465_7468_6572_2d31); // "tether-1"
        h = chain_bytes(h, &entry.author);
        h = chain_bytes(h, &entry.resource);
        h = chain_bytes(h, &entry.payload);
        LineId {
            epoch: self.epoch,
            seq: self.seq.saturating_add(1),
            check: chain_finish(h),
        }
    }
}

/// One step of the chain: the word in, multiplied by an odd constant (the golden ratio's
/// 64-bit fraction), high bits folded down.
const fn chain_word(h: u64, w: u64) -> u64 {
    let x = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^ (x >> 29)
}

/// The length, then the bytes as little-endian 8-byte words, the last one zero-padded: a
/// field boundary can never move without changing a word.
fn chain_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    h = chain_word(h, bytes.len() as u64);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = chain_word(h, u64::from_le_bytes(b));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = chain_word(h, u64::from_le_bytes(b));
    }
    h
}

/// splitmix64's finaliser: every input bit reaches every output bit.
const fn chain_finish(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A journal entry: a resource its author published, as SDMP's
/// `<line>@<author>/<resource>` line, with the resource's bytes beside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Who published the resource (at most [`MAX_ID_LEN`] bytes).
    pub author: Bytes,
    /// The resource id (at most [`MAX_ID_LEN`] bytes), unique per author.
    pub resource: Bytes,
    /// The resource's bytes, unchanged.
    pub payload: Bytes,
}

impl Entry {
    /// An entry from byte slices (copies them; received entries are slices instead).
    pub fn new(author: &[u8], resource: &[u8], payload: &[u8]) -> Entry {
        Entry {
            author: Bytes::copy_from_slice(author),
            resource: Bytes::copy_from_slice(resource),
            payload: Bytes::copy_from_slice(payload),
        }
    }

    /// Bytes this entry takes on the wire.
    pub fn wire_len(&self) -> usize {
        1 + self.author.len() + 1 + self.resource.len() + 4 + self.payload.len()
    }

    fn decode(r: &mut Reader) -> Result<Entry, DecodeError> {
        Ok(Entry {
            author: r.bytes_u8(MAX_ID_LEN, "entry author")?,
            resource: r.bytes_u8(MAX_ID_LEN, "entry resource")?,
            payload: r.bytes_u32(usize::MAX, "entry payload")?,
        })
    }

    fn encode(&self, out: &mut BytesMut) {
        put_id(out, &self.author);
        put_id(out, &self.resource);
        // An entry's payload is bounded by the frame size (1 MiB by default) long before
        // 4 GiB; saturating keeps this panic-free and makes a peer refuse it.
        out.put_u32(u32::try_from(self.payload.len()).unwrap_or(u32::MAX));
        out.put_slice(&self.payload);
    }
}

/// Writes `[LEN u8][bytes]`, cutting an over-long id to [`MAX_ID_LEN`] (the machines never
/// build one; this keeps encoding total).
fn put_id(out: &mut BytesMut, id: &[u8]) {
    let id = id.get(..MAX_ID_LEN).unwrap_or(id);
    out.put_u8(id.len() as u8);
    out.put_slice(id);
}

/// What a `SYNC_REQ` for journal sync asks: the entries after `since`, at most `limit` of
/// them. Encoded as the `SYNC_REQ` body
/// `[0x30][EPOCH u64][SINCE u64][CHECK u64][LIMIT u32][FLAGS u8]` (`since` in full, its
/// check included), where a `LIMIT` of 0 means "no limit given" (the replier chooses) and
/// `FLAGS` bit 0 is `everything` (other bits must be 0).
///
/// ```
/// use core::num::NonZeroU32;
/// use tether::wire::{JournalRequest, LineId};
///
/// let since = LineId { epoch: 9, seq: 4, check: 0x1234 };
/// let req = JournalRequest { since, limit: NonZeroU32::new(2), everything: false };
/// let body = req.to_body();
/// assert_eq!(body.len(), 30);
/// assert_eq!(JournalRequest::decode_body(body), Ok(req));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct JournalRequest {
    /// The last line of the replier's journal the requester knows.
    pub since: LineId,
    /// The most entries the answer may hold.
    pub limit: Option<NonZeroU32>,
    /// Send back the lines the requester gave too: its journal lost lines (it was wiped or
    /// restored while the session survived), so the replier's record of what it holds is
    /// stale. Without it, a replier skips those lines ([`HeldLines`]).
    pub everything: bool,
}

impl JournalRequest {
    /// Whether a `SYNC_REQ` body asks for journal sync (its first byte is `0x30`).
    pub fn is_journal_body(body: &[u8]) -> bool {
        body.first() == Some(&JOURNAL_REQUEST)
    }

    /// The `SYNC_REQ` body.
    pub fn to_body(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(30);
        out.put_u8(JOURNAL_REQUEST);
        out.put_u64(self.since.epoch);
        out.put_u64(self.since.seq);
        out.put_u64(self.since.check);
        out.put_u32(self.limit.map_or(0, NonZeroU32::get));
        out.put_u8(u8::from(self.everything));
        out.freeze()
    }

    /// Decodes a `SYNC_REQ` body.
    pub fn decode_body(body: Bytes) -> Result<JournalRequest, DecodeError> {
        let mut r = Reader::new(body);
        if r.u8("sync body kind")? != JOURNAL_REQUEST {
            return Err(DecodeError::BadField {
                field: "sync body kind",
                reason: "not a journal request",
            });
        }
        let since = LineId {
            epoch: r.u64("since epoch")?,
            seq: r.u64("since line")?,
            check: r.u64("since check")?,
        };
        let limit = NonZeroU32::new(r.u32("limit")?);
        let everything = match r.u8("flags")? {
            0 => false,
            1 => true,
            _ => {
                return Err(DecodeError::BadField {
                    field: "flags",
                    reason: "unknown flag",
                })
            }
        };
        r.finish()?;
        Ok(JournalRequest {
            since,
            limit,
            everything,
        })
    }
}

/// The tag of a held run in a list, where an entry's author length would be (at most
/// [`MAX_ID_LEN`], so never this).
const HELD_TAG: u8 = 0xff;

/// A run of consecutive lines in a [`JournalList`] that the receiver holds already because it
/// gave them to the sender: the sender skips them rather than send them back, and says
/// where its chain stands after them, so that the receiver's mark keeps its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct HeldLines {
    /// Where the run sits: before `entries[at]` (or after the last entry if `at` is the
    /// number of entries).
    pub at: u16,
    /// How many lines it covers (at least 1).
    pub lines: u32,
    /// The sender's check at the run's last line.
    pub check: u64,
}

/// A list of consecutive journal entries: the answer inside a sync context, or a broadcast.
///
/// Its items are the sender's lines after `since`, in order: each an entry, or a run of
/// lines the receiver gave the sender ([`HeldLines`]), skipped so that nothing is echoed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalList {
    /// The sync context it answers, or 0 for a broadcast sent without being asked.
    pub ctx: u32,
    /// The line just before the first entry (SDMP: "if the first entry is n, this is n-1").
    /// Entry `i` (from 0) is line `since.seq + 1 + i` of epoch `since.epoch`; its check is
    /// the sender's chain there, from which the receiver folds the entries' own.
    pub since: LineId,
    /// The sender's last line when it sent the list, so the receiver knows whether more
    /// remain (another context then asks for them).
    pub head: u64,
    /// The entries, at most [`MAX_LIST_ENTRIES`] items with `held`.
    pub entries: Vec<Entry>,
    /// The runs of held lines between the entries, in order of `at` (usually none).
    pub held: Vec<HeldLines>,
}

impl JournalList {
    /// Lines the list covers: its entries and its held runs.
    pub fn lines(&self) -> u64 {
        self.entries.len() as u64 + self.held.iter().map(|h| u64::from(h.lines)).sum::<u64>()
    }

    /// The sender's line after the list: `since` with every entry folded into the chain,
    /// and each held run's check taken as it stands.
    pub fn end(&self) -> LineId {
        let mut line = self.since;
        let mut held = self.held.iter().peekable();
        for (i, e) in self.entries.iter().enumerate() {
            while let Some(h) = held.next_if(|h| usize::from(h.at) <= i) {
                line = skip(line, h);
            }
            line = line.next(e);
        }
        for h in held {
            line = skip(line, h);
        }
        line
    }
}

fn skip(line: LineId, held: &HeldLines) -> LineId {
    LineId {
        epoch: line.epoch,
        seq: line.seq.saturating_add(u64::from(held.lines)),
        check: held.check,
    }
}

/// What an SDMP status response says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u16)]
pub enum Status {
    /// 400: a message was not interpretable; the response names the request.
    BadRequest = 400,
    /// 404: the resource is unavailable or was deleted.
    NotFound = 404,
    /// 408: nothing was received for too long; the sender may drop the connection next.
    RequestTimeout = 408,
    /// 429: too many requests await an answer; ask again once answers arrive.
    TooManyRequests = 429,
}

impl Status {
    /// The numeric code (400, 404, 408, 429).
    pub fn code(self) -> u16 {
        self as u16
    }

    fn from_u16(v: u16) -> Option<Status> {
        Some(match v {
            400 => Status::BadRequest,
            404 => Status::NotFound,
            408 => Status::RequestTimeout,
            429 => Status::TooManyRequests,
            _ => return None,
        })
    }
}

/// An SDMP "general node response".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusResponse {
    /// The request it answers: a resource request id or a sync context id (one counter
    /// gives both, so they never collide). `None` when unrelated or unreadable.
    pub req: Option<u32>,
    /// The status.
    pub status: Status,
    /// A human-readable description, at most [`MAX_DESCRIPTION`] bytes.
    pub description: Bytes,
}

/// A journal-sync message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum JournalMessage {
    /// `0x31`: entries of the sender's journal.
    List(JournalList),
    /// `0x32`: a request for one resource.
    ResourceReq {
        /// The request id, answered by the reply.
        req: u32,
        /// The resource's author.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_id))]
        author: Bytes,
        /// The resource id.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_id))]
        resource: Bytes,
    },
    /// `0x33`: the resource asked for, unchanged.
    Resource {
        /// The request it answers.
        req: u32,
        /// The resource's bytes.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = super::arbitrary_bytes))]
        bytes: Bytes,
    },
    /// `0x34`: a status response (400, 404, 408).
    Status(StatusResponse),
}

impl JournalMessage {
    /// This message's code.
    pub fn code(&self) -> u8 {
        match self {
            JournalMessage::List(_) => JOURNAL_LIST,
            JournalMessage::ResourceReq { .. } => RESOURCE_REQ,
            JournalMessage::Resource { .. } => RESOURCE,
            JournalMessage::Status(_) => STATUS,
        }
    }

    pub(crate) fn decode_body(code: u8, r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(match code {
            JOURNAL_LIST => {
                let ctx = r.u32("context")?;
                let since = LineId {
                    epoch: r.u64("since epoch")?,
                    seq: r.u64("since line")?,
                    check: r.u64("since check")?,
                };
                let head = r.u64("head line")?;
                let count = usize::from(r.u16("entry count")?);
                if count > MAX_LIST_ENTRIES {
                    return Err(DecodeError::Oversized {
                        field: "entry count",
                        len: count,
                        max: MAX_LIST_ENTRIES,
                    });
                }
                // Each item takes at least 6 bytes: never reserve more than the input holds.
                let mut entries = Vec::with_capacity(count.min(r.remaining() / 6));
                let mut held = Vec::new();
                for _ in 0..count {
                    if r.peek_u8() == Some(HELD_TAG) {
                        r.u8("held tag")?;
                        let lines = r.u32("held lines")?;
                        if lines == 0 {
                            return Err(DecodeError::BadField {
                                field: "held lines",
                                reason: "a held run covers at least one line",
                            });
                        }
                        held.push(HeldLines {
                            // At most MAX_LIST_ENTRIES items: fits.
                            at: entries.len() as u16,
                            lines,
                            check: r.u64("held check")?,
                        });
                    } else {
                        entries.push(Entry::decode(r)?);
                    }
                }
                JournalMessage::List(JournalList {
                    ctx,
                    since,
                    head,
                    entries,
                    held,
                })
            }
            RESOURCE_REQ => JournalMessage::ResourceReq {
                req: r.u32("request id")?,
                author: r.bytes_u8(MAX_ID_LEN, "author")?,
                resource: r.bytes_u8(MAX_ID_LEN, "resource")?,
            },
            RESOURCE => JournalMessage::Resource {
                req: r.u32("request id")?,
                bytes: r.rest(),
            },
            STATUS => {
                let status = Status::from_u16(r.u16("status")?).ok_or(DecodeError::BadField {
                    field: "status",
                    reason: "unknown status code",
                })?;
                let req = if r.bool("has request")? {
                    Some(r.u32("request id")?)
                } else {
                    None
                };
                JournalMessage::Status(StatusResponse {
                    req,
                    status,
                    description: r.bytes_u16(MAX_DESCRIPTION, "description")?,
                })
            }
            // 0x30 tags a SYNC_REQ body and 0x35..=0x3f are reserved: not messages.
            other => return Err(DecodeError::UnknownCode(other)),
        })
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        match self {
            JournalMessage::List(l) => {
                out.put_u32(l.ctx);
                out.put_u64(l.since.epoch);
                out.put_u64(l.since.seq);
                out.put_u64(l.since.check);
                out.put_u64(l.head);
                // Machines never build more than MAX_LIST_ENTRIES items; a hand-built longer
                // list is cut rather than encoded with a wrong count.
                let n = (l.entries.len() + l.held.len()).min(MAX_LIST_ENTRIES);
                out.put_u16(n as u16);
                let mut held = l.held.iter().peekable();
                let mut entries = l.entries.iter().enumerate();
                for _ in 0..n {
                    let next_entry = entries.clone().next().map(|(i, _)| i);
                    let run = held.next_if(|h| next_entry.map_or(true, |i| usize::from(h.at) <= i));
                    match run {
                        Some(h) => {
                            out.put_u8(HELD_TAG);
                            out.put_u32(h.lines);
                            out.put_u64(h.check);
                        }
                        None => {
                            if let Some((_, e)) = entries.next() {
                                e.encode(out);
                            }
                        }
                    }
                }
            }
            JournalMessage::ResourceReq {
                req,
                author,
                resource,
            } => {
                out.put_u32(*req);
                put_id(out, author);
                put_id(out, resource);
            }
            JournalMessage::Resource { req, bytes } => {
                out.put_u32(*req);
                out.put_slice(bytes);
            }
            JournalMessage::Status(s) => {
                out.put_u16(s.status.code());
                match s.req {
                    Some(req) => {
                        out.put_u8(1);
                        out.put_u32(req);
                    }
                    None => out.put_u8(0),
                }
                let d = s
                    .description
                    .get(..MAX_DESCRIPTION)
                    .unwrap_or(&s.description);
                out.put_u16(d.len() as u16);
                out.put_slice(d);
            }
        }
    }
}

#[cfg(feature = "arbitrary")]
fn arbitrary_id(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Bytes> {
    let len = u.int_in_range(0..=MAX_ID_LEN)?;
    Ok(Bytes::copy_from_slice(u.bytes(len)?))
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Entry {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Entry {
            author: arbitrary_id(u)?,
            resource: arbitrary_id(u)?,
            payload: super::arbitrary_bytes(u)?,
        })
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for JournalList {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let ctx = u.arbitrary()?;
        let since = u.arbitrary()?;
        let head = u.arbitrary()?;
        let n = u.int_in_range(0..=16usize)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(u.arbitrary()?);
        }
        Ok(JournalList {
            ctx,
            since,
            head,
            entries,
            held: Vec::new(),
        })
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for StatusResponse {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let req = u.arbitrary()?;
        let status = u.arbitrary()?;
        let len = u.int_in_range(0..=64usize)?;
        Ok(StatusResponse {
            req,
            status,
            description: Bytes::copy_from_slice(u.bytes(len)?),
        })
    }
}

/// The id a status 400 answering this frame names, read from the frame's first bytes
/// whatever the rest holds: the id the frame's *sender* chose for its own request, that is
/// the `CTX` of `SYNC_REQ` and of `SYNC_OK` (the requester's context) and the `REQ` of a
/// resource request, in the four bytes after the code.
///
/// `None` when the frame is too short to hold the id, and for every other code: the
/// markers, lists, resources, refusals and statuses a peer sends carry an id *we* chose
/// (they answer our requests), and the receiver of a 400 looks its `REQ` up among its
/// own ids, where ours could name one of its resource requests.
pub(crate) fn answered_id(frame: &[u8]) -> Option<u32> {
    match frame {
        [super::codes::SYNC_REQ | super::codes::SYNC_OK | RESOURCE_REQ, a, b, c, d, ..] => {
            Some(u32::from_be_bytes([*a, *b, *c, *d]))
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
