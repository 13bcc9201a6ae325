//! Anchored two-way sync (SyncML): sans-IO client and server machines.
//!
//! The session, in tether's order: the client says hello ([`ClientSession`]);
//! the server asks for credentials; the client sends them; the application checks them
//! ([`ServerEvent::Credentials`], answered with [`ServerCommand::Authenticate`]: tether
//! stores no passwords) and the server answers 401 / 407 or goes on; a known client is asked
//! for its anchor, an unknown one goes straight to a slow sync; a matching anchor gives a
//! two-way sync, anything else a slow sync. Then changes flow both ways in chunks, each
//! acknowledged with a status per change; the server resolves conflicts by a
//! [`ConflictPolicy`]; the client sends its id map; the server acknowledges it and both
//! store the Next anchor as Last.
//!
//! Two layers:
//! - the message-level cores, [`ClientSession`] and [`ServerSession`]: a decoded
//!   [`Message`](crate::wire::Message) and `now` in, [`Step`]s (messages to send, events)
//!   and a deadline out; the composed peer layers them over any connection;
//! - [`Standalone`]: a [`Machine`](crate::Machine) over one `main` [`Link`](crate::Link) (length-prefixed
//!   frames), so the machines also work on their own.
//!
//! Storage is the application's: [`ClientStore`] and [`ServerStore`], with in-memory
//! [`MemClientStore`] and [`MemServerStore`]. Change tracking lives there, so it survives a
//! session cut at any point.
//!
//! ```
//! use bytes::Bytes;
//! use tether::sync::anchored::*;
//! use tether::{Instant, Duration};
//!
//! let mut client = ClientSession::new(ClientConfig::new(Bytes::from_static(b"palm"), Bytes::from_static(b"pw")), MemClientStore::new());
//! let mut server = ServerSession::new(ServerConfig::default(), MemServerStore::new());
//! client.store_mut().insert(Bytes::from_static(b"a record"));
//! let now = Instant::ZERO;
//! client.start(now).unwrap();
//! // Shuttle messages until both are idle; accept the credentials when asked.
//! for _ in 0..50 {
//!     while let Some(step) = client.poll() {
//!         if let Step::Send(m) = step { server.handle_message(now, m.into()).unwrap(); }
//!     }
//!     while let Some(step) = server.poll() {
//!         match step {
//!             Step::Send(m) => client.handle_message(now, m.into()).unwrap(),
//!             Step::Event(ServerEvent::Credentials { .. }) => server
//!                 .command(now, ServerCommand::Authenticate(AuthDecision::Accept)).unwrap(),
//!             Step::Event(_) => {}
//!         }
//!     }
//! }
//! assert_eq!(server.store().records().len(), 1);
//! assert_eq!(client.state(), ClientState::Idle);
//! assert_ne!(client.store().last_anchor(), 0);
//! ```

mod client;
mod conflict;
mod server;
mod standalone;
mod store;

pub use client::{
    ClientCommand, ClientConfig, ClientEvent, ClientSession, ClientState, ClientTrigger,
    CLIENT_TRANSITIONS,
};
pub use conflict::{ConflictPolicy, Winner};
pub use server::{
    AuthDecision, ServerCommand, ServerConfig, ServerEvent, ServerSession, ServerState,
    ServerTrigger, SERVER_TRANSITIONS,
};
pub use standalone::{SessionCore, Standalone};
pub use store::{ClientStore, MemClientStore, MemServerStore, ServerStore};

use crate::driver::{HasOrigin, Origin};
use crate::tables::NoTransition;
use crate::wire::{AnchoredMessage, DecodeError};

/// A standalone anchored-sync client over one `main` link.
pub type AnchoredClient<S> = Standalone<ClientSession<S>>;
/// A standalone anchored-sync server over one `main` link.
pub type AnchoredServer<S> = Standalone<ServerSession<S>>;

/// One output of a message-level core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<E> {
    /// Send this message to the peer.
    Send(AnchoredMessage),
    /// Tell the application.
    Event(E),
}

/// Why a session ended before completing. Anchors are untouched, so the next session is a
/// correct two-way sync if both still agree, or a slow sync if not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// The peer ended the session with this status (400, 408, 508...).
    PeerStatus(u16),
    /// The peer said nothing for the session timeout.
    Timeout,
    /// The transport closed, or a new session replaced this one.
    Cut,
    /// The peer sent bad input; it was told with status 400.
    BadInput,
    /// The session would exceed the configured item limit; the peer was told with 508.
    TooManyItems,
}

/// Why an input was refused. None is fatal to the session cores: a bad input ends the
/// current session (the peer is told with a status) and the next session starts clean. The
/// one fatal error is [`AnchoredError::Frame`], of the [`Standalone`] machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnchoredError {
    /// The bytes did not decode.
    #[error("malformed message: {0}")]
    Malformed(#[from] DecodeError),
    /// A message that is not anchored sync reached an anchored-sync machine.
    #[error("message code {0:#04x} is not anchored sync")]
    NotAnchored(u8),
    /// A message out of order.
    #[error("message code {code:#04x} unexpected in state {state}")]
    Unexpected {
        /// The message's code.
        code: u8,
        /// The machine's state.
        state: &'static str,
    },
    /// A chunk of changes that does not follow the previous one.
    #[error("changes out of sequence: expected {expected}, got {got}")]
    OutOfSequence {
        /// The number of the change expected first.
        expected: u32,
        /// The number received.
        got: u32,
    },
    /// Statuses for changes that were never sent (or not the ones just sent).
    #[error("statuses for changes {first}..+{count} that were not the ones sent")]
    UnknownStatus {
        /// The first change number acknowledged.
        first: u32,
        /// How many.
        count: usize,
    },
    /// More changes in one message than configured.
    #[error("{count} changes in one message, over the maximum of {max}")]
    ChunkTooLarge {
        /// Changes received.
        count: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A session would hold more items than configured.
    #[error("more than {0} items in one session")]
    TooManyItems(usize),
    /// A command that needs a session, or a start while one runs.
    #[error("command not valid in state {0}")]
    BadCommand(&'static str),
    /// A session start with no transport open.
    #[error("no transport is open")]
    NoLink,
    /// The stream on `main` cannot be read past a bad frame length (the peer was told with
    /// status 400 and the transport closed). Fatal to [`Standalone`], and sticky.
    #[error("fatal framing error: {0}")]
    Frame(DecodeError),
    /// The client was asked for a move [`CLIENT_TRANSITIONS`] does not have; it did not
    /// move. When the server's message asked for it, the server was told with status 400.
    #[error("anchored client: {0}")]
    ClientTransition(NoTransition<ClientState, ClientTrigger>),
    /// The server was asked for a move [`SERVER_TRANSITIONS`] does not have; it did not
    /// move. When the client's message asked for it, the client was told with status 400.
    #[error("anchored server: {0}")]
    ServerTransition(NoTransition<ServerState, ServerTrigger>),
}

impl AnchoredError {
    /// Who misbehaved: the peer for what it sent (bytes, messages out of order or over the
    /// limits), the local caller for its commands and for sessions too large for this
    /// side's own limit; for a missing row, whoever sent the input that asked for it.
    pub fn origin(&self) -> Origin {
        match self {
            AnchoredError::Malformed(_)
            | AnchoredError::NotAnchored(_)
            | AnchoredError::Unexpected { .. }
            | AnchoredError::OutOfSequence { .. }
            | AnchoredError::UnknownStatus { .. }
            | AnchoredError::ChunkTooLarge { .. }
            | AnchoredError::Frame(_) => Origin::Remote,
            AnchoredError::TooManyItems(_)
            | AnchoredError::BadCommand(_)
            | AnchoredError::NoLink => Origin::Local,
            AnchoredError::ClientTransition(e) => match e.input {
                ClientTrigger::Start => Origin::Local,
                _ => Origin::Remote,
            },
            AnchoredError::ServerTransition(e) => match e.input {
                ServerTrigger::Accept | ServerTrigger::Reject | ServerTrigger::Resolve => {
                    Origin::Local
                }
                _ => Origin::Remote,
            },
        }
    }

    /// Whether the machine that returned it is failed for good ([`AnchoredError::Frame`]).
    pub fn is_fatal(&self) -> bool {
        matches!(self, AnchoredError::Frame(_))
    }
}

impl HasOrigin for AnchoredError {
    fn origin(&self) -> Origin {
        AnchoredError::origin(self)
    }
}
