//! What a user of the dual-channel server meets: its configuration, its commands and
//! events, and the player table (states, inputs and every transition).

use crate::session::{Event, SessionConfig};
use crate::time::Duration;
use crate::wire::{Element, FailReason, Message, DEFAULT_FEED_CONTENT, DEFAULT_MAX_FRAME};

/// The server's configuration. `Default` gives the values documented on each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DualServerConfig {
    /// Player ids are `0..max_players` (64); ids are reused once a player is gone.
    /// At most `0xffff`, since `0xffff` is the server's own sender id.
    pub max_players: u16,
    /// `main` transports open at once, with or without a player (128).
    pub max_links: usize,
    /// A handshake not finished within this time is refused (10 s).
    pub handshake_timeout: Duration,
    /// A player whose `main` is lost is forgotten after this time (30 s).
    pub session_timeout: Duration,
    /// Send a `DUMMY` on a player's `feed` when nothing else was sent for this long (1 s).
    pub feed_keepalive: Duration,
    /// A player's `feed` is unbound when nothing arrived on it for this long (5 s).
    pub feed_timeout: Duration,
    /// The largest frame accepted on `main` ([`DEFAULT_MAX_FRAME`], 1 MiB).
    pub max_frame: usize,
    /// The largest content of a `feed` datagram, both ways (500).
    pub max_feed_content: usize,
    /// Messages queued per player while its `main` is not connected (64).
    pub max_queued: usize,
    /// Delivery and heartbeat on `main` ([`SessionConfig::default`]: 1 MiB replay
    /// buffer, ACK every 32 messages or 64 KiB, keepalive 10 s).
    pub session: SessionConfig,
    /// Opt-in: accept tokens shorter than 128 bits from the token source (R-Type's were 32
    /// bits). Weaker: see docs/PROTOCOL.md 4.7. Default: `false`.
    pub allow_short_tokens: bool,
}

impl Default for DualServerConfig {
    fn default() -> Self {
        DualServerConfig {
            max_players: 64,
            max_links: 128,
            handshake_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(30),
            feed_keepalive: Duration::from_secs(1),
            feed_timeout: Duration::from_secs(5),
            max_frame: DEFAULT_MAX_FRAME,
            max_feed_content: DEFAULT_FEED_CONTENT,
            max_queued: 1_024,
            session: SessionConfig::default(),
            allow_short_tokens: false,
        }
    }
}

/// Where a player is in the handshake or the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlayerState {
    /// `CONN_INIT_REP` sent; waiting for the feed init with token A.
    AwaitFeedInit,
    /// `feed` bound and token B sent; waiting for the final auth on `main`.
    AwaitFinalAuth,
    /// Connected.
    Connected,
    /// `main` lost; the session and its `feed` binding wait for a connection request.
    MainLost,
}

/// What moves a player between [`PlayerState`]s, as [`SERVER_TRANSITIONS`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlayerInput {
    /// An authentic `FEED_INIT` (the tag of the player's feed key, its token A, a new
    /// attempt) on a `feed` link not bound to it: the link is bound (the old one, if any,
    /// unbound) and token B sent.
    FeedInit,
    /// A `FINAL_AUTH` with the player's id and token B on its `main`.
    FinalAuth,
    /// A `CONNECTION` with the player's id and reconnection proof on a new `main`: the new link
    /// replaces the old one, if the old one is still open.
    Connection,
    /// The player's `main` closed (or broke the framing) after its handshake.
    MainClosed,
}

/// Every change of a player's state on the server: (state, input, next state), and the only
/// way a player moves ([`tables::fire`](crate::tables::fire)). An input not listed for a
/// state is refused with `CONN_FAILED` (a `FEED_INIT` while `MainLost` and a `CONNECTION`
/// during the handshake: `NOT_RESUMABLE`; anything else: `UNEXPECTED_MESSAGE`).
///
/// A player is created in [`PlayerState::AwaitFeedInit`] by a `CONN_INIT` on a fresh
/// `main`, and removed (its id free again) by a refusal or a `main` closed during its
/// handshake, `handshake_timeout`, `DISCONNECTION`, `session_timeout` in `MainLost`, or
/// [`DualServerCommand::Kick`]; those have no state before or after, so they are not rows.
pub const SERVER_TRANSITIONS: &[(PlayerState, PlayerInput, PlayerState)] = &[
    (
        PlayerState::AwaitFeedInit,
        PlayerInput::FeedInit,
        PlayerState::AwaitFinalAuth,
    ),
    // A resend on a new link (the client's feed transport changed): rebound.
    (
        PlayerState::AwaitFinalAuth,
        PlayerInput::FeedInit,
        PlayerState::AwaitFinalAuth,
    ),
    (
        PlayerState::AwaitFinalAuth,
        PlayerInput::FinalAuth,
        PlayerState::Connected,
    ),
    // A re-initialisation of `feed` (FeedLossPolicy::Reinit).
    (
        PlayerState::Connected,
        PlayerInput::FeedInit,
        PlayerState::Connected,
    ),
    (
        PlayerState::Connected,
        PlayerInput::MainClosed,
        PlayerState::MainLost,
    ),
    (
        PlayerState::MainLost,
        PlayerInput::Connection,
        PlayerState::Connected,
    ),
    // The old `main` is half-open: the new one replaces it.
    (
        PlayerState::Connected,
        PlayerInput::Connection,
        PlayerState::Connected,
    ),
];

/// What the application can ask of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DualServerCommand {
    /// Send on a player's `main`; queued (bounded) while it is not connected.
    Send {
        /// To whom.
        player: u16,
        /// What.
        message: Message,
    },
    /// Send on a player's `feed` now (refused while no `feed` is bound).
    SendFeed {
        /// To whom.
        player: u16,
        /// What.
        message: Message,
    },
    /// End a player's session: `CONN_FAILED` with this reason, then both channels closed.
    Kick {
        /// Whom.
        player: u16,
        /// The reason sent.
        reason: FailReason,
    },
}

/// What the server tells the application: the shared session events ([`Event`]: up,
/// down, message on `main`, ended, each naming its player id) and the notices of this
/// profile. A player id is free again once its session has [ended](Event::Ended).
pub type DualServerEvent = Event<u16, DualServerNotice>;

/// What only a [`DualServer`](super::DualServer) reports: its `feed` channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DualServerNotice {
    /// A connected player's `feed` is bound to a new link (after a feed re-init).
    FeedBound {
        /// The player.
        player: u16,
    },
    /// A player's `feed` closed or went silent and was unbound.
    FeedLost {
        /// The player.
        player: u16,
    },
    /// An `UPDATE_MSG` arrived on a player's `feed`.
    Update {
        /// From whom.
        player: u16,
        /// The element.
        element: Element,
    },
    /// Another message arrived on a player's `feed`.
    FeedReceived {
        /// From whom.
        player: u16,
        /// The message.
        message: Message,
    },
}
