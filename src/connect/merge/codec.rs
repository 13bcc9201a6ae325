//! The two encodings of the token-merge messages: tether's frames and dop's bare text.
//!
//! A [`LinkReader`] turns what arrives on one transport into [`Incoming`] items. In
//! tether's encoding each item is a decoded, checked frame; in dop's encoding each item is
//! one whole WebSocket text message, and what it means (a token, the merged token, an
//! application message) depends on the node's state, so the machines classify it.

use super::{Encoding, MergeError};
use crate::driver::{Link, Outbox};
use crate::token::Token;
use crate::wire::{FailReason, FrameDecoder, Message, PROTOCOL_VERSION};
use bytes::Bytes;

/// One item received on a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A local token (TOKEN, or a dop token in a state that expects one).
    Token(Token),
    /// A merged token naming a session to resume (RESUME, or its server echo).
    Resume(Token),
    /// A formal disconnection (DISCONNECT, or dop's merged token while connected).
    Disconnect(Token),
    /// The peer refused (CONN_FAILED); it closes next.
    Failed(FailReason),
    /// The session layer's cumulative acknowledgement (tether's encoding only).
    Ack(u64),
    /// A resumption secret: offered by the server, confirmed by the client (tether's
    /// encoding only; at least 128 bits).
    Secret(Token),
    /// Anything else, for the application once connected.
    Other(Message),
    /// dop: one text message, to be classified by the node's state.
    Text(Bytes),
    /// dop: text that cannot be what the state expects.
    Invalid,
}

/// Decodes what arrives on one transport.
#[derive(Debug, Clone)]
pub(crate) enum LinkReader {
    Tether(FrameDecoder),
    Dop { pending: Option<Bytes>, max: usize },
}

impl LinkReader {
    pub fn new(encoding: Encoding, max_message: usize) -> Self {
        match encoding {
            Encoding::Tether => LinkReader::Tether(FrameDecoder::new(max_message)),
            Encoding::Dop => LinkReader::Dop {
                pending: None,
                max: max_message,
            },
        }
    }

    /// Changes the largest message accepted (once a link is admitted).
    pub fn set_max(&mut self, max_message: usize) {
        match self {
            LinkReader::Tether(d) => d.set_max_frame(max_message),
            LinkReader::Dop { max, .. } => *max = max_message,
        }
    }

    /// Takes received bytes: a chunk of the stream (tether) or one whole text message (dop).
    pub fn push(&mut self, bytes: Bytes) -> Result<(), FailReason> {
        match self {
            LinkReader::Tether(d) => {
                d.push_bytes(bytes);
                Ok(())
            }
            LinkReader::Dop { pending, max } => {
                if bytes.len() > *max {
                    return Err(FailReason::Malformed);
                }
                *pending = Some(bytes);
                Ok(())
            }
        }
    }

    /// The next item and the bytes it took, `Ok(None)` if more bytes are needed, or why
    /// the transport must close.
    pub fn next(&mut self) -> Result<Option<(Incoming, usize)>, FailReason> {
        match self {
            LinkReader::Dop { pending, .. } => Ok(pending.take().map(|t| {
                let len = t.len();
                (Incoming::Text(t), len)
            })),
            LinkReader::Tether(d) => {
                let Some(frame) = d.next_frame().map_err(|_| FailReason::Malformed)? else {
                    return Ok(None);
                };
                let len = frame.len();
                let msg = Message::decode(frame).map_err(|_| FailReason::Malformed)?;
                Ok(Some((
                    match msg {
                        Message::Token { version, token } => {
                            Incoming::Token(checked(version, token)?)
                        }
                        Message::Resume { version, token } => {
                            Incoming::Resume(checked(version, token)?)
                        }
                        Message::Disconnect { token } => Incoming::Disconnect(token),
                        Message::ConnFailed { reason } => Incoming::Failed(reason),
                        Message::Ack { received } => Incoming::Ack(received),
                        // As short a secret as a token would be as guessable.
                        Message::Secret { token } if !token.is_secure() => {
                            return Err(FailReason::InsecureToken)
                        }
                        Message::Secret { token } => Incoming::Secret(token),
                        other => Incoming::Other(other),
                    },
                    len,
                )))
            }
        }
    }
}

/// The checks every TOKEN and RESUME passes in tether's encoding: the version, and at
/// least 128 bits.
fn checked(version: u8, token: Token) -> Result<Token, FailReason> {
    if version != PROTOCOL_VERSION {
        Err(FailReason::UnsupportedVersion)
    } else if !token.is_secure() {
        Err(FailReason::InsecureToken)
    } else {
        Ok(token)
    }
}

/// A dop token: 1 to 64 characters of `[A-Za-z0-9]` (dop's own are 16; merged ones 32).
pub(crate) fn dop_token(text: &[u8]) -> Option<Token> {
    if text.iter().all(u8::is_ascii_alphanumeric) {
        Token::new(text).ok()
    } else {
        None
    }
}

/// Whether `token` may be a local token in `encoding`.
pub(crate) fn check_local(encoding: Encoding, token: &Token) -> Result<(), MergeError> {
    match encoding {
        Encoding::Tether if !token.is_secure() => Err(MergeError::BadLocalToken(
            "tether's encoding needs at least 16 bytes (128 bits)",
        )),
        Encoding::Dop if dop_token(token.as_bytes()).is_none() => Err(MergeError::BadLocalToken(
            "dop's encoding needs [A-Za-z0-9] characters",
        )),
        _ => Ok(()),
    }
}

/// Whether the application may send `msg` in `encoding`, with the session's merged token.
pub(crate) fn check_app(
    encoding: Encoding,
    msg: &Message,
    merged: Option<&Token>,
) -> Result<(), MergeError> {
    match (encoding, msg) {
        (Encoding::Tether, Message::Token { .. } | Message::Resume { .. })
        | (Encoding::Tether, Message::Disconnect { .. } | Message::ConnFailed { .. }) => {
            Err(MergeError::Reserved)
        }
        (Encoding::Tether, _) => Ok(()),
        (Encoding::Dop, Message::App(text)) => match merged {
            Some(m) if is_token(text, m) => Err(MergeError::AmbiguousDopMessage),
            _ => Ok(()),
        },
        (Encoding::Dop, _) => Err(MergeError::NotDopText),
    }
}

/// Constant-time comparison of received bytes with a token.
pub(crate) fn is_token(bytes: &[u8], token: &Token) -> bool {
    Token::new(bytes).is_ok_and(|t| t == *token)
}

/// Sends a local token: TOKEN, or the bare text.
pub(crate) fn send_token<E>(out: &mut Outbox<E>, enc: Encoding, link: Link, token: &Token) {
    match enc {
        Encoding::Tether => out.send_framed(
            link,
            &Message::Token {
                version: PROTOCOL_VERSION,
                token: *token,
            },
        ),
        Encoding::Dop => out.send_raw(link, Bytes::copy_from_slice(token.as_bytes())),
    }
}

/// Sends a merged token to resume (client) or confirm a resumption (server).
pub(crate) fn send_resume<E>(out: &mut Outbox<E>, enc: Encoding, link: Link, token: &Token) {
    match enc {
        Encoding::Tether => out.send_framed(
            link,
            &Message::Resume {
                version: PROTOCOL_VERSION,
                token: *token,
            },
        ),
        Encoding::Dop => out.send_raw(link, Bytes::copy_from_slice(token.as_bytes())),
    }
}

/// Sends a resumption secret: the server's offer, or the client's confirmation (tether's
/// encoding only: dop's has no message for it, so there the merged token never changes).
pub(crate) fn send_secret<E>(out: &mut Outbox<E>, enc: Encoding, link: Link, secret: &Token) {
    if enc == Encoding::Tether {
        out.send_framed(link, &Message::Secret { token: *secret });
    }
}

/// Sends the formal disconnection.
pub(crate) fn send_disconnect<E>(out: &mut Outbox<E>, enc: Encoding, link: Link, token: &Token) {
    match enc {
        Encoding::Tether => out.send_framed(link, &Message::Disconnect { token: *token }),
        Encoding::Dop => out.send_raw(link, Bytes::copy_from_slice(token.as_bytes())),
    }
}

/// Tells the peer why its transport is closed (dop's encoding has no such message: the
/// close alone says it).
pub(crate) fn send_failed<E>(out: &mut Outbox<E>, enc: Encoding, link: Link, reason: FailReason) {
    if enc == Encoding::Tether {
        out.send_framed(link, &Message::ConnFailed { reason });
    }
}
