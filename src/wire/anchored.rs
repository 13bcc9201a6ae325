//! Anchored two-way sync (SyncML) messages, codes `0x40..=0x4f`.
//!
//! Every message carries the `SESSION u32` the client chose for the session right after its
//! code, so that a message from an abandoned session is never taken for the current one.
//! docs/PROTOCOL.md section 7 gives each layout byte by byte.
//!
//! Encoders never write a field the decoder would refuse: an over-long field (which tether's
//! machines never build) is cut to its maximum, so every encoding decodes.

use super::{DecodeError, Reader};
use alloc::vec::Vec;
use bytes::{BufMut, Bytes, BytesMut};

/// `HELLO`: the client opens a session.
pub const HELLO: u8 = 0x40;
/// `AUTH_REQ`: the server asks for credentials.
pub const AUTH_REQ: u8 = 0x41;
/// `CREDENTIALS`: the client's credentials, opaque to tether.
pub const CREDENTIALS: u8 = 0x42;
/// `STATUS`: a session-level status; an error status ends the session.
pub const STATUS: u8 = 0x43;
/// `ANCHOR_REQ`: the server accepted the credentials and asks a known client for its anchor.
pub const ANCHOR_REQ: u8 = 0x44;
/// `ANCHORS`: the client's Last anchor.
pub const ANCHORS: u8 = 0x45;
/// `ALERT`: the server's choice of sync type and the Next anchor.
pub const ALERT: u8 = 0x46;
/// `CHANGES`: one chunk of changes (add / replace / delete).
pub const CHANGES: u8 = 0x47;
/// `STATUSES`: one status per change of the peer's last chunk.
pub const STATUSES: u8 = 0x48;
/// `MAP`: one chunk of the client's id map (client id to server id).
pub const MAP: u8 = 0x49;
/// `MAP_ACK`: the server acknowledges a map chunk; on the final one, the session is complete.
pub const MAP_ACK: u8 = 0x4a;

/// The longest client id (`HELLO`), in bytes.
pub const MAX_CLIENT_ID: usize = 255;
/// The longest credentials (`CREDENTIALS`), in bytes.
pub const MAX_CREDENTIALS: usize = 4096;
/// The most items (changes, statuses or map entries) in one message.
pub const MAX_ITEMS: usize = 1024;
/// The longest record payload, in bytes.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// SyncML status codes tether uses on the wire.
pub mod status {
    /// OK: the change was applied (or there was nothing to do).
    pub const OK: u16 = 200;
    /// Item added.
    pub const ITEM_ADDED: u16 = 201;
    /// Conflict, resolved for the originator (the client): its change was applied.
    pub const CONFLICT_CLIENT_WON: u16 = 208;
    /// Item not deleted: the record to delete was not found (harmless).
    pub const NOT_DELETED: u16 = 211;
    /// Authentication accepted (implied by `ANCHOR_REQ` and `ALERT`).
    pub const AUTH_ACCEPTED: u16 = 212;
    /// Bad request: a malformed or out-of-order message, or a status for a change never sent.
    pub const BAD_REQUEST: u16 = 400;
    /// Invalid credentials.
    pub const INVALID_CREDENTIALS: u16 = 401;
    /// Credentials missing (authentication required).
    pub const AUTH_REQUIRED: u16 = 407;
    /// Request timeout: the session stalled.
    pub const TIMEOUT: u16 = 408;
    /// Conflict, resolved for the server: the client's change was not applied.
    pub const CONFLICT_SERVER_WON: u16 = 419;
    /// Refresh required: the session cannot go on; the next one will be a slow sync.
    pub const REFRESH_REQUIRED: u16 = 508;
}

/// The sync type the server chooses (SyncML alert codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u16)]
pub enum SyncType {
    /// 200, two-way: only what changed since the last sync, both ways.
    TwoWay = 200,
    /// 201, slow: the client sends all its records, the server compares them with its own.
    Slow = 201,
}

impl SyncType {
    fn from_u16(v: u16) -> Option<SyncType> {
        match v {
            200 => Some(SyncType::TwoWay),
            201 => Some(SyncType::Slow),
            _ => None,
        }
    }
}

/// One change. The id is the sender's view: from the client, its local id (LUID); from the
/// server, its own id (GUID) for an `Add` and the client's LUID for `Replace` and `Delete`
/// (as SyncML does, so the client never needs the server's ids except in its map).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Change {
    /// `[1][ID u64][LEN u32][DATA]`: a record the receiver does not have yet.
    Add {
        /// The record's id.
        id: u64,
        /// The record.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_payload))]
        data: Bytes,
    },
    /// `[2][ID u64][LEN u32][DATA]`: a new version of a record the receiver has.
    Replace {
        /// The record's id.
        id: u64,
        /// The record.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_payload))]
        data: Bytes,
    },
    /// `[3][ID u64]`: the record is gone.
    Delete {
        /// The record's id.
        id: u64,
    },
}

impl Change {
    /// The record id this change names.
    pub fn id(&self) -> u64 {
        match self {
            Change::Add { id, .. } | Change::Replace { id, .. } | Change::Delete { id } => *id,
        }
    }

    fn decode(r: &mut Reader) -> Result<Change, DecodeError> {
        let kind = r.u8("change kind")?;
        let id = r.u64("record id")?;
        Ok(match kind {
            1 => Change::Add {
                id,
                data: r.bytes_u32(MAX_PAYLOAD, "record data")?,
            },
            2 => Change::Replace {
                id,
                data: r.bytes_u32(MAX_PAYLOAD, "record data")?,
            },
            3 => Change::Delete { id },
            _ => {
                return Err(DecodeError::BadField {
                    field: "change kind",
                    reason: "unknown change kind",
                })
            }
        })
    }

    fn encode(&self, out: &mut BytesMut) {
        match self {
            Change::Add { id, data } | Change::Replace { id, data } => {
                out.put_u8(if matches!(self, Change::Add { .. }) {
                    1
                } else {
                    2
                });
                out.put_u64(*id);
                let data = cut(data, MAX_PAYLOAD);
                out.put_u32(data.len() as u32);
                out.put_slice(data);
            }
            Change::Delete { id } => {
                out.put_u8(3);
                out.put_u64(*id);
            }
        }
    }
}

/// One id-map entry: the client's id for a record the server added, and the server's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct MapEntry {
    /// The client's local id (LUID).
    pub luid: u64,
    /// The server's id (GUID).
    pub guid: u64,
}

/// An anchored-sync message. Every variant names its session.
///
/// ```
/// use tether::wire::{AnchoredMessage, Message, SyncType};
///
/// let msg = Message::Anchored(AnchoredMessage::Alert { session: 7, sync: SyncType::Slow, next: 9 });
/// let bytes = msg.to_bytes();
/// assert_eq!(&bytes[..], &[0x46, 0, 0, 0, 7, 0, 201, 0, 0, 0, 0, 0, 0, 0, 9]);
/// assert_eq!(Message::decode(bytes), Ok(msg));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum AnchoredMessage {
    /// `[0x40][SESSION u32][LEN u8][CLIENT]`: the client says hello and names itself.
    Hello {
        /// The session id, chosen by the client.
        session: u32,
        /// The client's id (its device id), 0 to 255 bytes.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_client_id))]
        client: Bytes,
    },
    /// `[0x41][SESSION u32]`: the server asks for credentials.
    AuthRequest {
        /// The session id.
        session: u32,
    },
    /// `[0x42][SESSION u32][LEN u16][CREDENTIALS]`: the client's credentials.
    Credentials {
        /// The session id.
        session: u32,
        /// Opaque to tether: the application checks them (0 to 4096 bytes).
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_credentials))]
        credentials: Bytes,
    },
    /// `[0x43][SESSION u32][CODE u16]`: a session-level status (401, 407, 400, 408, 508);
    /// the session ends after it.
    Status {
        /// The session id.
        session: u32,
        /// A SyncML status code (see [`status`]).
        code: u16,
    },
    /// `[0x44][SESSION u32]`: credentials accepted (212); the server asks for the anchor.
    AnchorRequest {
        /// The session id.
        session: u32,
    },
    /// `[0x45][SESSION u32][LAST u64]`: the client's Last anchor (0: none).
    Anchors {
        /// The session id.
        session: u32,
        /// The anchor of the client's last completed session.
        last: u64,
    },
    /// `[0x46][SESSION u32][TYPE u16][NEXT u64]`: the sync type, and the Next anchor both
    /// sides store as Last when the session completes.
    Alert {
        /// The session id.
        session: u32,
        /// Two-way (200) or slow (201).
        sync: SyncType,
        /// The Next anchor.
        next: u64,
    },
    /// `[0x47][SESSION u32][FIRST u32][FINAL u8][COUNT u16][CHANGE]*COUNT`: changes number
    /// `FIRST..FIRST+COUNT` of the sender's changes in this session; `FINAL` on the last.
    Changes {
        /// The session id.
        session: u32,
        /// The number of the first change in this chunk.
        first: u32,
        /// Whether this is the sender's last chunk.
        last_chunk: bool,
        /// At most [`MAX_ITEMS`] changes.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_items))]
        changes: Vec<Change>,
    },
    /// `[0x48][SESSION u32][FIRST u32][COUNT u16][CODE u16]*COUNT`: one status per change,
    /// for the peer's changes number `FIRST..FIRST+COUNT`.
    Statuses {
        /// The session id.
        session: u32,
        /// The number of the first change acknowledged.
        first: u32,
        /// At most [`MAX_ITEMS`] status codes.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_items))]
        codes: Vec<u16>,
    },
    /// `[0x49][SESSION u32][FINAL u8][COUNT u16]([LUID u64][GUID u64])*COUNT`: the client's
    /// id map; `FINAL` on the chunk that closes the session.
    Map {
        /// The session id.
        session: u32,
        /// Whether this is the closing map's last chunk.
        last_chunk: bool,
        /// At most [`MAX_ITEMS`] entries.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_items))]
        entries: Vec<MapEntry>,
    },
    /// `[0x4a][SESSION u32][FINAL u8]`: the server stored a map chunk; `FINAL`: it also
    /// stored its anchor and the session is complete.
    MapAck {
        /// The session id.
        session: u32,
        /// Whether this acknowledges the closing chunk.
        last_chunk: bool,
    },
}

impl From<AnchoredMessage> for super::Message {
    fn from(m: AnchoredMessage) -> Self {
        super::Message::Anchored(m)
    }
}

fn cut(b: &Bytes, max: usize) -> &[u8] {
    &b[..b.len().min(max)]
}

fn count(r: &mut Reader) -> Result<usize, DecodeError> {
    let n = usize::from(r.u16("count")?);
    if n > MAX_ITEMS {
        return Err(DecodeError::Oversized {
            field: "count",
            len: n,
            max: MAX_ITEMS,
        });
    }
    Ok(n)
}

impl AnchoredMessage {
    /// This message's code.
    pub fn code(&self) -> u8 {
        use AnchoredMessage::*;
        match self {
            Hello { .. } => HELLO,
            AuthRequest { .. } => AUTH_REQ,
            Credentials { .. } => CREDENTIALS,
            Status { .. } => STATUS,
            AnchorRequest { .. } => ANCHOR_REQ,
            Anchors { .. } => ANCHORS,
            Alert { .. } => ALERT,
            Changes { .. } => CHANGES,
            Statuses { .. } => STATUSES,
            Map { .. } => MAP,
            MapAck { .. } => MAP_ACK,
        }
    }

    /// The session this message belongs to.
    pub fn session(&self) -> u32 {
        use AnchoredMessage::*;
        match self {
            Hello { session, .. }
            | AuthRequest { session }
            | Credentials { session, .. }
            | Status { session, .. }
            | AnchorRequest { session }
            | Anchors { session, .. }
            | Alert { session, .. }
            | Changes { session, .. }
            | Statuses { session, .. }
            | Map { session, .. }
            | MapAck { session, .. } => *session,
        }
    }

    pub(crate) fn decode_body(code: u8, r: &mut Reader) -> Result<Self, DecodeError> {
        use AnchoredMessage::*;
        if !(HELLO..=MAP_ACK).contains(&code) {
            return Err(DecodeError::UnknownCode(code));
        }
        let session = r.u32("session")?;
        Ok(match code {
            HELLO => Hello {
                session,
                client: r.bytes_u8(MAX_CLIENT_ID, "client id")?,
            },
            AUTH_REQ => AuthRequest { session },
            CREDENTIALS => Credentials {
                session,
                credentials: r.bytes_u16(MAX_CREDENTIALS, "credentials")?,
            },
            STATUS => Status {
                session,
                code: r.u16("status")?,
            },
            ANCHOR_REQ => AnchorRequest { session },
            ANCHORS => Anchors {
                session,
                last: r.u64("last anchor")?,
            },
            ALERT => Alert {
                session,
                sync: SyncType::from_u16(r.u16("sync type")?).ok_or(DecodeError::BadField {
                    field: "sync type",
                    reason: "only 200 (two-way) and 201 (slow) are supported",
                })?,
                next: r.u64("next anchor")?,
            },
            CHANGES => {
                let first = r.u32("first")?;
                let last_chunk = r.bool("final")?;
                let n = count(r)?;
                let mut changes = Vec::with_capacity(n.min(r.remaining() / 9));
                for _ in 0..n {
                    changes.push(Change::decode(r)?);
                }
                Changes {
                    session,
                    first,
                    last_chunk,
                    changes,
                }
            }
            STATUSES => {
                let first = r.u32("first")?;
                let n = count(r)?;
                let mut codes = Vec::with_capacity(n.min(r.remaining() / 2));
                for _ in 0..n {
                    codes.push(r.u16("status")?);
                }
                Statuses {
                    session,
                    first,
                    codes,
                }
            }
            MAP => {
                let last_chunk = r.bool("final")?;
                let n = count(r)?;
                let mut entries = Vec::with_capacity(n.min(r.remaining() / 16));
                for _ in 0..n {
                    entries.push(MapEntry {
                        luid: r.u64("luid")?,
                        guid: r.u64("guid")?,
                    });
                }
                Map {
                    session,
                    last_chunk,
                    entries,
                }
            }
            _ => MapAck {
                session,
                last_chunk: r.bool("final")?,
            },
        })
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        use AnchoredMessage::*;
        out.put_u32(self.session());
        match self {
            Hello { client, .. } => {
                let c = cut(client, MAX_CLIENT_ID);
                out.put_u8(c.len() as u8);
                out.put_slice(c);
            }
            AuthRequest { .. } | AnchorRequest { .. } => {}
            Credentials { credentials, .. } => {
                let c = cut(credentials, MAX_CREDENTIALS);
                out.put_u16(c.len() as u16);
                out.put_slice(c);
            }
            Status { code, .. } => out.put_u16(*code),
            Anchors { last, .. } => out.put_u64(*last),
            Alert { sync, next, .. } => {
                out.put_u16(*sync as u16);
                out.put_u64(*next);
            }
            Changes {
                first,
                last_chunk,
                changes,
                ..
            } => {
                out.put_u32(*first);
                out.put_u8(u8::from(*last_chunk));
                let changes = &changes[..changes.len().min(MAX_ITEMS)];
                out.put_u16(changes.len() as u16);
                for c in changes {
                    c.encode(out);
                }
            }
            Statuses { first, codes, .. } => {
                out.put_u32(*first);
                let codes = &codes[..codes.len().min(MAX_ITEMS)];
                out.put_u16(codes.len() as u16);
                for c in codes {
                    out.put_u16(*c);
                }
            }
            Map {
                last_chunk,
                entries,
                ..
            } => {
                out.put_u8(u8::from(*last_chunk));
                let entries = &entries[..entries.len().min(MAX_ITEMS)];
                out.put_u16(entries.len() as u16);
                for e in entries {
                    out.put_u64(e.luid);
                    out.put_u64(e.guid);
                }
            }
            MapAck { last_chunk, .. } => out.put_u8(u8::from(*last_chunk)),
        }
    }
}

#[cfg(feature = "arbitrary")]
fn arbitrary_capped(u: &mut arbitrary::Unstructured<'_>, max: usize) -> arbitrary::Result<Bytes> {
    let mut v: Vec<u8> = u.arbitrary()?;
    v.truncate(max);
    Ok(Bytes::from(v))
}

#[cfg(feature = "arbitrary")]
fn arbitrary_payload(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Bytes> {
    arbitrary_capped(u, MAX_PAYLOAD)
}

#[cfg(feature = "arbitrary")]
fn arbitrary_client_id(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Bytes> {
    arbitrary_capped(u, MAX_CLIENT_ID)
}

#[cfg(feature = "arbitrary")]
fn arbitrary_credentials(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Bytes> {
    arbitrary_capped(u, MAX_CREDENTIALS)
}

#[cfg(feature = "arbitrary")]
fn arbitrary_items<'a, T: arbitrary::Arbitrary<'a>>(
    u: &mut arbitrary::Unstructured<'a>,
) -> arbitrary::Result<Vec<T>> {
    let mut v: Vec<T> = u.arbitrary()?;
    v.truncate(MAX_ITEMS);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Message;
    use alloc::vec;
    use proptest::prelude::*;

    fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (any::<u64>(), bytes(40)).prop_map(|(id, data)| Change::Add { id, data }),
            (any::<u64>(), bytes(40)).prop_map(|(id, data)| Change::Replace { id, data }),
            any::<u64>().prop_map(|id| Change::Delete { id }),
        ]
    }

    fn message() -> impl Strategy<Value = AnchoredMessage> {
        use AnchoredMessage::*;
        let s = any::<u32>();
        prop_oneof![
            (s, bytes(300)).prop_map(|(session, client)| Hello {
                session,
                client: client.slice(..client.len().min(MAX_CLIENT_ID))
            }),
            s.prop_map(|session| AuthRequest { session }),
            (s, bytes(64)).prop_map(|(session, credentials)| Credentials {
                session,
                credentials
            }),
            (s, any::<u16>()).prop_map(|(session, code)| Status { session, code }),
            s.prop_map(|session| AnchorRequest { session }),
            (s, any::<u64>()).prop_map(|(session, last)| Anchors { session, last }),
            (s, any::<bool>(), any::<u64>()).prop_map(|(session, slow, next)| Alert {
                session,
                sync: if slow {
                    SyncType::Slow
                } else {
                    SyncType::TwoWay
                },
                next
            }),
            (
                s,
                any::<u32>(),
                any::<bool>(),
                proptest::collection::vec(change(), 0..8)
            )
                .prop_map(|(session, first, last_chunk, changes)| Changes {
                    session,
                    first,
                    last_chunk,
                    changes
                }),
            (
                s,
                any::<u32>(),
                proptest::collection::vec(any::<u16>(), 0..20)
            )
                .prop_map(|(session, first, codes)| Statuses {
                    session,
                    first,
                    codes
                }),
            (
                s,
                any::<bool>(),
                proptest::collection::vec((any::<u64>(), any::<u64>()), 0..20)
            )
                .prop_map(|(session, last_chunk, e)| Map {
                    session,
                    last_chunk,
                    entries: e
                        .into_iter()
                        .map(|(luid, guid)| MapEntry { luid, guid })
                        .collect()
                }),
            (s, any::<bool>()).prop_map(|(session, last_chunk)| MapAck {
                session,
                last_chunk
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(msg in message()) {
            let m = Message::Anchored(msg);
            let b = m.to_bytes();
            prop_assert_eq!(Message::decode(b.clone()), Ok(m.clone()));
            // Exact: one byte more or less never decodes to the same message.
            let mut longer = BytesMut::from(&b[..]);
            longer.put_u8(0);
            prop_assert!(Message::decode(longer.freeze()).is_err());
            prop_assert!(Message::decode(b.slice(..b.len() - 1)).is_err());
        }

        #[test]
        fn any_bytes_decode_or_error_and_reencode(body in proptest::collection::vec(any::<u8>(), 0..64), code in 0x40u8..=0x4f) {
            let mut v = vec![code];
            v.extend_from_slice(&body);
            if let Ok(m) = Message::decode(Bytes::from(v.clone())) {
                prop_assert_eq!(&m.to_bytes()[..], &v[..]);
            }
        }
    }

    #[test]
    fn changes_layout_is_exact() {
        let m = Message::Anchored(AnchoredMessage::Changes {
            session: 1,
            first: 2,
            last_chunk: true,
            changes: vec![
                Change::Add {
                    id: 5,
                    data: Bytes::from_static(b"hi"),
                },
                Change::Delete { id: 6 },
            ],
        });
        assert_eq!(
            &m.to_bytes()[..],
            &[
                0x47, 0, 0, 0, 1, 0, 0, 0, 2, 1, 0, 2, //
                1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 2, b'h', b'i', //
                3, 0, 0, 0, 0, 0, 0, 0, 6
            ]
        );
    }

    #[test]
    fn unknown_change_kind_is_a_typed_error() {
        let b = Bytes::from_static(&[
            0x47, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0, 5,
        ]);
        assert_eq!(
            Message::decode(b),
            Err(DecodeError::BadField {
                field: "change kind",
                reason: "unknown change kind"
            })
        );
    }

    #[test]
    fn unused_codes_of_the_range_are_unknown() {
        for code in 0x4bu8..=0x4f {
            assert_eq!(
                Message::decode(Bytes::from(vec![code, 0, 0, 0, 0])),
                Err(DecodeError::UnknownCode(code))
            );
        }
    }

    #[test]
    fn unknown_sync_type_is_refused() {
        let b = Bytes::from_static(&[0x46, 0, 0, 0, 1, 0, 202, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(matches!(
            Message::decode(b),
            Err(DecodeError::BadField {
                field: "sync type",
                ..
            })
        ));
    }
}
