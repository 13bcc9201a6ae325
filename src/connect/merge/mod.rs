//! dop's token-merge connectivity (dop's connectivity proposal): handshake, resumption, formal
//! disconnection, and the server's session registry.
//!
//! Two machines share one node ([`Status`], [`TRANSITIONS`]):
//!
//! - [`MergeClient`]: one session with one server. It asks the caller for a transport
//!   ([`Output::Open`](crate::Output::Open)), runs the handshake on it, and when the
//!   transport is lost waits (1 s at first, then doubling to a cap, with seeded jitter),
//!   opens a new one and resumes the session (with the resumption secret the server
//!   offered last, in tether's encoding; with the merged token in dop's), until it gives up.
//! - [`MergeServer`]: the registry of sessions. Every new transport starts as a temporary node in
//!   OPEN; a resumption secret (or merged token) naming a RECONNECTING session makes that
//!   session adopt the transport; the registry forgets RECONNECTING sessions after a grace period.
//!
//! The handshake (each side sends its local token, takes the peer's, sends its own again,
//! and on the peer's confirmation both hold `merge(local, remote)`) is the document's; the
//! encodings are two ([`Encoding`]): tether's length-prefixed frames (TOKEN, RESUME,
//! DISCONNECT, CONN_FAILED; tokens of at least 128 bits) and dop's bare text, so a dop peer
//! over WebSocket can talk to tether. docs/PROTOCOL.md section 5 has the bytes and the
//! sequence diagrams.
//!
//! A whole handshake between the two machines, moved by hand:
//!
//! ```
//! use tether::connect::merge::*;
//! use tether::{Input, Instant, Link, Machine, Output, Token};
//!
//! let now = Instant::ZERO;
//! let client_token = Token::new(&[b'B'; 16]).unwrap();
//! // The server's tokens: its own key (drawn first, never sent), then a local token per
//! // transport. Use a cryptographic source.
//! let mut server_tokens = [[b'K'; 16], [b'A'; 16]].into_iter();
//! let next = move || Token::new(&server_tokens.next().unwrap()).unwrap();
//! let mut client = MergeClient::new(now, MergeClientConfig::default(), client_token).unwrap();
//! let mut server = MergeServer::new(MergeServerConfig::default(), next);
//!
//! // The client asks for a transport; the caller connects it (link 1 on both sides).
//! assert_eq!(client.poll_output(), Output::Open(tether::Channel::Main));
//! client.handle_input(now, Input::Opened(Link::main(1))).unwrap();
//! server.handle_input(now, Input::Opened(Link::main(1))).unwrap();
//! // Shuttle bytes until both are quiet.
//! loop {
//!     let mut moved = false;
//!     while let Output::Transmit(t) = client.poll_output() {
//!         server.handle_input(now, Input::Received(t.link, t.payload)).unwrap();
//!         moved = true;
//!     }
//!     while let Output::Transmit(t) = server.poll_output() {
//!         client.handle_input(now, Input::Received(t.link, t.payload)).unwrap();
//!         moved = true;
//!     }
//!     if !moved { break; }
//! }
//! assert_eq!(client.view().status, Status::Connected);
//! let merged = client.view().merged.unwrap();
//! assert_eq!(&merged.as_bytes()[..16], &[b'A'; 16]); // merged in byte order
//! ```

mod client;
mod codec;
mod ended;
mod index;
mod node;
mod server;
mod snapshot;

pub use crate::session::{EndReason, Event, Outcome, SessionConfig};
pub use crate::token::TokenSource;
pub use client::{MergeClient, MergeClientCommand, MergeClientEvent, MergeClientNotice};
pub use ended::EndedBy;
pub use node::{NodeView, Status, Step, TRANSITIONS};
pub use server::{MergeServer, MergeServerCommand, MergeServerEvent, MergeServerNotice, SessionId};
pub use snapshot::{
    MergeClientSnapshot, MergeEndedSnapshot, MergeSecrets, MergeSessionSnapshot, Tombstone,
};

use crate::driver::{HasOrigin, Origin};
use crate::tables::NoTransition;
use crate::time::Duration;
use crate::wire::DEFAULT_MAX_FRAME;

/// How the token-merge messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// tether's own: length-prefixed frames, TOKEN / RESUME / DISCONNECT / CONN_FAILED,
    /// versioned, tokens of at least 128 bits, application messages never mistaken for
    /// control messages.
    #[default]
    Tether,
    /// dop's own: every `Input::Received` is one whole WebSocket text message; a token is
    /// the bare text (16 characters of `[A-Za-z0-9]` from dop). Kept for compatibility with
    /// dop peers, weaknesses included: an application message equal to the merged token is
    /// a formal disconnection, and a refusal is a bare close.
    Dop,
}

/// The errors of the token-merge machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// The queue of messages waiting for a connection is full; the message was not queued.
    #[error("send queue full ({max} messages)")]
    QueueFull {
        /// The configured bound.
        max: usize,
    },
    /// The client or session ended for good (sticky for the client).
    #[error("session ended: {0:?}")]
    Ended(EndReason),
    /// dop's encoding carries only text application messages (`Message::App`).
    #[error("dop's encoding carries only Message::App")]
    NotDopText,
    /// In dop's encoding this message equals the merged token, which the peer would take
    /// for a formal disconnection.
    #[error("in dop's encoding this message would read as a formal disconnection")]
    AmbiguousDopMessage,
    /// TOKEN, RESUME, DISCONNECT, SECRET and CONN_FAILED belong to the machine, not the
    /// application.
    #[error("this message is reserved to the connection machine")]
    Reserved,
    /// A local token from the caller cannot be used in the configured encoding.
    #[error("local token unusable: {0}")]
    BadLocalToken(&'static str),
    /// No such session in the registry.
    #[error("unknown session {0:?}")]
    UnknownSession(SessionId),
    /// The caller reported a link id that is already open.
    #[error("link {0} is already open")]
    DuplicateLink(u64),
    /// The caller's input asked the node for a move [`TRANSITIONS`] does not have (e.g. a
    /// transport reported open while the node holds one); the node did not move. A peer's
    /// message that does so is refused on the wire (CONN_FAILED) instead.
    #[error(transparent)]
    NoTransition(#[from] NoTransition<Status, Step>),
}

impl MergeError {
    /// Who misbehaved: every error of the token-merge machines is the local caller's (a
    /// peer that breaks the protocol is told with CONN_FAILED and dropped, never an error).
    pub fn origin(&self) -> Origin {
        match self {
            MergeError::QueueFull { .. }
            | MergeError::Ended(_)
            | MergeError::NotDopText
            | MergeError::AmbiguousDopMessage
            | MergeError::Reserved
            | MergeError::BadLocalToken(_)
            | MergeError::UnknownSession(_)
            | MergeError::DuplicateLink(_)
            | MergeError::NoTransition(_) => Origin::Local,
        }
    }

    /// Whether the machine that returned it is ended for good (the client after
    /// [`MergeError::Ended`]; every later call but the echo of its close returns it again).
    pub fn is_fatal(&self) -> bool {
        matches!(self, MergeError::Ended(_))
    }
}

impl HasOrigin for MergeError {
    fn origin(&self) -> Origin {
        MergeError::origin(self)
    }
}

/// The client's configuration. `Default` gives the values documented on each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeClientConfig {
    /// The encoding (both peers must agree). Default: [`Encoding::Tether`].
    pub encoding: Encoding,
    /// How long a transport may take to open and finish its handshake (or resumption).
    /// Default: 10 s.
    pub handshake_timeout: Duration,
    /// The first wait before reconnecting. Default: 1 s, as dop.
    pub reconnect_initial: Duration,
    /// The longest wait between attempts (the backoff doubles up to it). Default: 30 s.
    pub reconnect_max: Duration,
    /// Up to this share (0 to 100 %) of each wait is cut off at random. Default: 20 %.
    pub jitter_percent: u8,
    /// Seed of the jitter (give each client its own). Default: 0.
    pub jitter_seed: u64,
    /// How long to keep trying, from the loss of the transport (or the start), before
    /// giving up: DISCONNECTED. Default: 300 s.
    pub give_up_after: Duration,
    /// Most messages held for the server: sent and not yet acknowledged, or waiting for a
    /// connection. Default: 1,024. Past it `Send` is refused with [`MergeError::QueueFull`].
    pub max_queue: usize,
    /// Largest message accepted (frame payload, or dop text message).
    /// Default: [`DEFAULT_MAX_FRAME`] (1 MiB).
    pub max_message: usize,
    /// Delivery and heartbeat ([`SessionConfig::default`]: 1 MiB replay buffer, ACK every
    /// 32 messages or 64 KiB, keepalive 10 s). In dop's encoding delivery is at most once
    /// and there is no heartbeat.
    pub session: SessionConfig,
}

impl Default for MergeClientConfig {
    fn default() -> Self {
        MergeClientConfig {
            encoding: Encoding::Tether,
            handshake_timeout: Duration::from_secs(10),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            jitter_percent: 20,
            jitter_seed: 0,
            give_up_after: Duration::from_secs(300),
            max_queue: 1024,
            max_message: DEFAULT_MAX_FRAME,
            session: SessionConfig::default(),
        }
    }
}

/// The server's configuration. `Default` gives the values documented on each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeServerConfig {
    /// The encoding (both peers must agree). Default: [`Encoding::Tether`].
    pub encoding: Encoding,
    /// How long a new transport may take to finish its handshake. Default: 10 s.
    pub handshake_timeout: Duration,
    /// How long a RECONNECTING session is kept for its client to resume (dop: forever).
    /// Default: 60 s.
    pub resume_grace: Duration,
    /// How long a formally disconnected session's tombstone is remembered, to refuse its
    /// secrets with SESSION_ENDED rather than start a fresh session from one. At most
    /// `max_sessions` tombstones of sessions the application ended and as many of sessions
    /// their clients ended, each part forgetting its oldest first, so that no peer can push
    /// out the application's (see [`EndedBy`]). Default: 600 s.
    pub ended_memory: Duration,
    /// Most sessions (CONNECTED or RECONNECTING); past it a handshake is refused with
    /// SERVER_FULL. Default: 10 000.
    pub max_sessions: usize,
    /// Most transports in handshake at once; past it a new transport is refused with
    /// SERVER_FULL. Default: 1024.
    pub max_pending: usize,
    /// Most messages held per session: sent and not yet acknowledged, or waiting while
    /// it is RECONNECTING. Default: 1,024.
    pub max_queue: usize,
    /// Largest message accepted (frame payload, or dop text message).
    /// Default: [`DEFAULT_MAX_FRAME`] (1 MiB).
    pub max_message: usize,
    /// Delivery and heartbeat, as the client's ([`SessionConfig::default`]).
    pub session: SessionConfig,
}

impl Default for MergeServerConfig {
    fn default() -> Self {
        MergeServerConfig {
            encoding: Encoding::Tether,
            handshake_timeout: Duration::from_secs(10),
            resume_grace: Duration::from_secs(60),
            ended_memory: Duration::from_secs(600),
            max_sessions: 10_000,
            max_pending: 1_024,
            max_queue: 1_024,
            max_message: DEFAULT_MAX_FRAME,
            session: SessionConfig::default(),
        }
    }
}
