//! Every message tether sends, with its exact encoding.
//!
//! Layouts are exact: decoding accepts one encoding per message and refuses trailing bytes,
//! so `encode(decode(b)) == b` for every `b` that decodes. docs/PROTOCOL.md gives each
//! layout byte by byte.

use super::reader::{put_token, Reader};
use super::{codes, AnchoredMessage, DecodeError, JournalMessage};
use crate::token::Token;
use bytes::{BufMut, Bytes, BytesMut};

/// The protocol version tether speaks. Carried by every message that opens or resumes a
/// session (`CONN_INIT`, `CONN_INIT_REP`, `CONNECTION`, `TOKEN`, `RESUME`), and checked by
/// both sides: a mismatch is answered with `CONN_FAILED` ([`FailReason::UnsupportedVersion`]).
pub const PROTOCOL_VERSION: u8 = 1;

/// An element of shared state, R-Type's `UPDATE_MSG` / `SYNC_MSG` body:
/// `[TYPE u8][SID u16][DATA]`, where SID names the same element on every host.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Element {
    /// Application-defined element type.
    pub kind: u8,
    /// Shared id of the element.
    pub sid: u16,
    /// The element's data, a slice of the received bytes.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = super::arbitrary_bytes))]
    pub data: Bytes,
}

/// Why a connection step failed (`CONN_FAILED`'s reason byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum FailReason {
    /// The peer speaks another protocol version.
    UnsupportedVersion = 1,
    /// No such player or session.
    UnknownPlayer = 2,
    /// A token did not match.
    WrongToken = 3,
    /// The server has no room for another player or handshake.
    ServerFull = 4,
    /// The message makes no sense in the current state.
    UnexpectedMessage = 5,
    /// The message could not be decoded.
    Malformed = 6,
    /// A token is shorter than 128 bits where tether requires them.
    InsecureToken = 7,
    /// The session exists but cannot be resumed now (it is not reconnecting).
    NotResumable = 8,
    /// The session ended for good (formal disconnection) or expired.
    SessionEnded = 9,
    /// A handshake or session timed out.
    Timeout = 10,
    /// The application refused.
    Refused = 11,
    /// The session cannot continue: the two sides' records of it disagree (one resumed
    /// from an older copy of it, e.g. a snapshot restored after a restart). Both sides end
    /// it; the client starts a fresh one.
    Diverged = 12,
}

impl FailReason {
    fn from_u8(v: u8) -> Option<FailReason> {
        use FailReason::*;
        Some(match v {
            1 => UnsupportedVersion,
            2 => UnknownPlayer,
            3 => WrongToken,
            4 => ServerFull,
            5 => UnexpectedMessage,
            6 => Malformed,
            7 => InsecureToken,
            8 => NotResumable,
            9 => SessionEnded,
            10 => Timeout,
            11 => Refused,
            12 => Diverged,
            _ => return None,
        })
    }
}

/// Why a sync request or sync message was refused (`REFUSED`'s reason byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum RefuseReason {
    /// A sync context is already pending, in either direction.
    Pending = 1,
    /// The replier's policy refused (the requester should ask again later).
    Policy = 2,
    /// A sync message arrived outside any sync context.
    NotInContext = 3,
}

impl RefuseReason {
    fn from_u8(v: u8) -> Option<RefuseReason> {
        Some(match v {
            1 => RefuseReason::Pending,
            2 => RefuseReason::Policy,
            3 => RefuseReason::NotInContext,
            _ => return None,
        })
    }
}

/// Every message of tether's wire.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use tether::wire::Message;
///
/// let msg = Message::SyncStart { ctx: 7 };
/// let mut buf = BytesMut::new();
/// msg.encode(&mut buf);
/// assert_eq!(&buf[..], &[14, 0, 0, 0, 7]);
/// assert_eq!(Message::decode(buf.freeze()), Ok(msg));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Message {
    /// `[0]`: carries nothing (keep-alive).
    Dummy,
    /// `[1][TYPE u8][SID u16][DATA]`: an element update, on `feed`.
    Update(Element),
    /// `[2][TYPE u8][SID u16][DATA]`: a sync message, on `main`.
    Sync(Element),
    /// `[3][VERSION u8][PLAYER u16][TOKEN A][SECRET]`: conn init reply, on `main`.
    ConnInitRep {
        /// The server's protocol version.
        version: u8,
        /// The player id the server gave the client.
        player: u16,
        /// Token A, to be proven on `feed`.
        token_a: Token,
        /// The session secret (at least [`MIN_SECRET_LEN`](super::MIN_SECRET_LEN) bytes):
        /// the feed key and the reconnection proof are derived from it. It travels on
        /// `main` only, never on `feed`.
        secret: Token,
    },
    /// `[4][PLAYER u16][ATTEMPT u32][TOKEN A]`: feed init, on `feed`. The attempt number is
    /// echoed by the reply, so that a late reply is never taken for a newer attempt's.
    FeedInit {
        /// The client's player id.
        player: u16,
        /// Which attempt this is (1, 2, ...).
        attempt: u32,
        /// Token A, from the conn init reply.
        token_a: Token,
    },
    /// `[5][ATTEMPT u32][TOKEN B]`: feed init reply, on `feed`.
    FeedInitRep {
        /// The attempt this answers.
        attempt: u32,
        /// Token B, to be proven on `main` by the final auth.
        token_b: Token,
    },
    /// `[6][TEXT]`: a text request.
    TextReq(#[cfg_attr(feature = "arbitrary", arbitrary(with = super::arbitrary_bytes))] Bytes),
    /// `[7][TEXT]`: a text reply.
    TextRep(#[cfg_attr(feature = "arbitrary", arbitrary(with = super::arbitrary_bytes))] Bytes),
    /// `[8][VERSION u8][PLAYER u16][PROOF]`: reconnection of `main`, proving the player
    /// with its reconnection proof ([`reconnection_proof`](super::reconnection_proof) of
    /// the session secret; nothing seen on `feed` gives it).
    Connection {
        /// The client's protocol version.
        version: u8,
        /// The player reconnecting.
        player: u16,
        /// The reconnection proof.
        token: Token,
    },
    /// `[9]`: the client leaves for good.
    Disconnection,
    /// `[10][VERSION u8]`: opens a connection.
    ConnInit {
        /// The client's protocol version.
        version: u8,
    },
    /// `[11][REASON u8]`: a connection step failed; the sender closes after it.
    ConnFailed {
        /// Why.
        reason: FailReason,
    },
    /// `[11][REASON u8][ATTEMPT u32]`: `CONN_FAILED` as the server sends it on `feed`,
    /// refusing the feed init `ATTEMPT`: a client takes it only for its latest attempt
    /// (and with a valid tag), so a refusal can be neither forged nor replayed.
    FeedFailed {
        /// Why.
        reason: FailReason,
        /// The feed init refused.
        attempt: u32,
    },
    /// `[12]`: connected (or reconnected).
    ConnOk,
    /// `[13][CTX u32][BODY]`: opens sync context `CTX`; the body says what to sync and is
    /// defined by what the context carries (journal sync: see [`JournalMessage`]).
    SyncReq {
        /// The context id, chosen by the requester.
        ctx: u32,
        /// What is requested, opaque at this layer.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = super::arbitrary_bytes))]
        body: Bytes,
    },
    /// `[14][CTX u32]`: the replier starts context `CTX`.
    SyncStart {
        /// The context id.
        ctx: u32,
    },
    /// `[15][CTX u32]`: the replier ends context `CTX`.
    SyncEnd {
        /// The context id.
        ctx: u32,
    },
    /// `[16][CTX u32]`: the requester confirms the end of context `CTX`.
    SyncOk {
        /// The context id.
        ctx: u32,
    },
    /// `[17][CTX u32][REASON u8]`: sync request `CTX` (or a sync message, `CTX` 0) refused.
    Refused {
        /// The context refused, or 0 for a sync message.
        ctx: u32,
        /// Why.
        reason: RefuseReason,
    },
    /// `[18][PLAYER u16][TOKEN B]`: final auth, on `main`.
    FinalAuth {
        /// The client's player id.
        player: u16,
        /// Token B, from the feed init reply.
        token_b: Token,
    },
    /// `[0x20][VERSION u8][TOKEN]`: token-merge: a node's local token (sent twice).
    Token {
        /// The sender's protocol version.
        version: u8,
        /// The sender's local token.
        token: Token,
    },
    /// `[0x21][VERSION u8][TOKEN]`: token-merge: resume the session of this merged token;
    /// from the server, the confirmation that it resumed.
    Resume {
        /// The sender's protocol version.
        version: u8,
        /// The merged session token.
        token: Token,
    },
    /// `[0x22][TOKEN]`: token-merge: formal disconnection of the session of this merged
    /// token; it can never be resumed.
    Disconnect {
        /// The merged session token.
        token: Token,
    },
    /// `[0x23][RECEIVED u64]`: the session layer's cumulative acknowledgement: the sender
    /// has received every numbered message of the session up to `received`. Sent every
    /// few messages, as the heartbeat when `main` is idle, and first on a resumed
    /// transport, where it says where the peer must replay from.
    Ack {
        /// Numbered messages received so far in this session.
        received: u64,
    },
    /// `[0x24][TOKEN]`: token-merge: from the server, the secret the client must present
    /// in its next RESUME (a fresh one after every confirmation, so that a captured RESUME
    /// cannot be replayed); from the client, the same secret back, confirming it holds it.
    Secret {
        /// The resumption secret.
        token: Token,
    },
    /// `0x30..=0x3f`: journal sync (SDMP).
    Journal(JournalMessage),
    /// `0x40..=0x4f`: anchored two-way sync (SyncML).
    Anchored(AnchoredMessage),
    /// `[0x50][DATA]`: an application message on `main`, opaque to tether.
    App(#[cfg_attr(feature = "arbitrary", arbitrary(with = super::arbitrary_bytes))] Bytes),
}

fn bad(field: &'static str, reason: &'static str) -> DecodeError {
    DecodeError::BadField { field, reason }
}

impl Message {
    /// This message's code (first byte).
    pub fn code(&self) -> u8 {
        use Message::*;
        match self {
            Dummy => codes::DUMMY,
            Update(_) => codes::UPDATE_MSG,
            Sync(_) => codes::SYNC_MSG,
            ConnInitRep { .. } => codes::CONN_INIT_REP,
            FeedInit { .. } => codes::FEED_INIT,
            FeedInitRep { .. } => codes::FEED_INIT_REP,
            TextReq(_) => codes::TEXT_REQ,
            TextRep(_) => codes::TEXT_REP,
            Connection { .. } => codes::CONNECTION,
            Disconnection => codes::DISCONNECTION,
            ConnInit { .. } => codes::CONN_INIT,
            ConnFailed { .. } | FeedFailed { .. } => codes::CONN_FAILED,
            ConnOk => codes::CONN_OK,
            SyncReq { .. } => codes::SYNC_REQ,
            SyncStart { .. } => codes::SYNC_START,
            SyncEnd { .. } => codes::SYNC_END,
            SyncOk { .. } => codes::SYNC_OK,
            Refused { .. } => codes::REFUSED,
            FinalAuth { .. } => codes::FINAL_AUTH,
            Token { .. } => codes::TOKEN,
            Resume { .. } => codes::RESUME,
            Disconnect { .. } => codes::DISCONNECT,
            Ack { .. } => codes::ACK,
            Secret { .. } => codes::SECRET,
            Journal(m) => m.code(),
            Anchored(m) => m.code(),
            App(_) => codes::APP,
        }
    }

    /// Decodes one message; the variable-length fields are slices of `bytes`.
    pub fn decode(bytes: Bytes) -> Result<Message, DecodeError> {
        let mut r = Reader::new(bytes);
        let code = r.u8("code")?;
        let msg = match code {
            codes::DUMMY => Message::Dummy,
            codes::UPDATE_MSG => Message::Update(element(&mut r)?),
            codes::SYNC_MSG => Message::Sync(element(&mut r)?),
            codes::CONN_INIT_REP => Message::ConnInitRep {
                version: r.u8("version")?,
                player: r.u16("player id")?,
                token_a: r.token("token A")?,
                secret: r.token("session secret")?,
            },
            codes::FEED_INIT => Message::FeedInit {
                player: r.u16("player id")?,
                attempt: r.u32("attempt")?,
                token_a: r.token("token A")?,
            },
            codes::FEED_INIT_REP => Message::FeedInitRep {
                attempt: r.u32("attempt")?,
                token_b: r.token("token B")?,
            },
            codes::TEXT_REQ => Message::TextReq(r.rest()),
            codes::TEXT_REP => Message::TextRep(r.rest()),
            codes::CONNECTION => Message::Connection {
                version: r.u8("version")?,
                player: r.u16("player id")?,
                token: r.token("session token")?,
            },
            codes::DISCONNECTION => Message::Disconnection,
            codes::CONN_INIT => Message::ConnInit {
                version: r.u8("version")?,
            },
            codes::CONN_FAILED => {
                let reason = FailReason::from_u8(r.u8("reason")?)
                    .ok_or_else(|| bad("reason", "unknown failure reason"))?;
                // Two layouts, told apart by length (each has exactly one encoding): the
                // reason alone (`main`), or with the attempt it answers (`feed`).
                if r.remaining() == 0 {
                    Message::ConnFailed { reason }
                } else {
                    Message::FeedFailed {
                        reason,
                        attempt: r.u32("attempt")?,
                    }
                }
            }
            codes::CONN_OK => Message::ConnOk,
            codes::SYNC_REQ => Message::SyncReq {
                ctx: r.u32("context")?,
                body: r.rest(),
            },
            codes::SYNC_START => Message::SyncStart {
                ctx: r.u32("context")?,
            },
            codes::SYNC_END => Message::SyncEnd {
                ctx: r.u32("context")?,
            },
            codes::SYNC_OK => Message::SyncOk {
                ctx: r.u32("context")?,
            },
            codes::REFUSED => Message::Refused {
                ctx: r.u32("context")?,
                reason: RefuseReason::from_u8(r.u8("reason")?)
                    .ok_or_else(|| bad("reason", "unknown refusal reason"))?,
            },
            codes::FINAL_AUTH => Message::FinalAuth {
                player: r.u16("player id")?,
                token_b: r.token("token B")?,
            },
            codes::TOKEN => Message::Token {
                version: r.u8("version")?,
                token: r.token("token")?,
            },
            codes::RESUME => Message::Resume {
                version: r.u8("version")?,
                token: r.token("merged token")?,
            },
            codes::DISCONNECT => Message::Disconnect {
                token: r.token("merged token")?,
            },
            codes::ACK => Message::Ack {
                received: r.u64("received")?,
            },
            codes::SECRET => Message::Secret {
                token: r.token("resumption secret")?,
            },
            codes::APP => Message::App(r.rest()),
            c if codes::JOURNAL_RANGE.contains(&c) => {
                Message::Journal(JournalMessage::decode_body(c, &mut r)?)
            }
            c if codes::ANCHORED_RANGE.contains(&c) => {
                Message::Anchored(AnchoredMessage::decode_body(c, &mut r)?)
            }
            other => return Err(DecodeError::UnknownCode(other)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Appends the message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.code());
        match self {
            Message::Dummy | Message::Disconnection | Message::ConnOk => {}
            Message::Update(e) | Message::Sync(e) => {
                out.put_u8(e.kind);
                out.put_u16(e.sid);
                out.put_slice(&e.data);
            }
            Message::ConnInitRep {
                version,
                player,
                token_a,
                secret,
            } => {
                out.put_u8(*version);
                out.put_u16(*player);
                put_token(out, token_a);
                put_token(out, secret);
            }
            Message::FeedInit {
                player,
                attempt,
                token_a,
            } => {
                out.put_u16(*player);
                out.put_u32(*attempt);
                put_token(out, token_a);
            }
            Message::FeedInitRep { attempt, token_b } => {
                out.put_u32(*attempt);
                put_token(out, token_b);
            }
            Message::TextReq(b) | Message::TextRep(b) | Message::App(b) => out.put_slice(b),
            Message::Connection {
                version,
                player,
                token,
            } => {
                out.put_u8(*version);
                out.put_u16(*player);
                put_token(out, token);
            }
            Message::ConnInit { version } => out.put_u8(*version),
            Message::ConnFailed { reason } => out.put_u8(*reason as u8),
            Message::FeedFailed { reason, attempt } => {
                out.put_u8(*reason as u8);
                out.put_u32(*attempt);
            }
            Message::SyncReq { ctx, body } => {
                out.put_u32(*ctx);
                out.put_slice(body);
            }
            Message::SyncStart { ctx } | Message::SyncEnd { ctx } | Message::SyncOk { ctx } => {
                out.put_u32(*ctx)
            }
            Message::Refused { ctx, reason } => {
                out.put_u32(*ctx);
                out.put_u8(*reason as u8);
            }
            Message::FinalAuth { player, token_b } => {
                out.put_u16(*player);
                put_token(out, token_b);
            }
            Message::Token { version, token } | Message::Resume { version, token } => {
                out.put_u8(*version);
                put_token(out, token);
            }
            Message::Disconnect { token } | Message::Secret { token } => put_token(out, token),
            Message::Ack { received } => out.put_u64(*received),
            Message::Journal(m) => m.encode_body(out),
            Message::Anchored(m) => m.encode_body(out),
        }
    }

    /// Appends the message to `out` as one length-prefixed stream frame
    /// (see [`FrameDecoder`](super::FrameDecoder)), without an intermediate buffer.
    pub fn encode_framed(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
        self.encode(out);
        // A message longer than 4 GiB cannot be built from a bounded input; saturate to
        // make the receiver refuse it rather than panic here.
        let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The message encoded into a fresh `Bytes`.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

fn element(r: &mut Reader) -> Result<Element, DecodeError> {
    Ok(Element {
        kind: r.u8("element type")?,
        sid: r.u16("element sid")?,
        data: r.rest(),
    })
}
