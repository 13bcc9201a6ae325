//! The token-merge node: its five states, the steps that move it, and the transition table.
//!
//! Client and server share this node; what differs is who sends what (see
//! [`Client`](super::Client) and [`Server`](super::Server)).

use crate::driver::Link;
use crate::token::Token;

/// A node's status, with the numbers dop's proposal gives them (they never go on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Status {
    /// A transport is open (or being opened); no token received yet.
    Open = 0,
    /// The peer's local token was received; waiting for its confirmation (or, when resuming,
    /// for the server's echo of the merged token).
    Preconnected = 1,
    /// Both sides hold the merged token; application messages flow.
    Connected = 2,
    /// The transport was lost after a session existed; the session can be resumed.
    Reconnecting = 3,
    /// Ended for good: formal disconnection, expiry, or giving up. Never left.
    Disconnected = 4,
}

/// What moves a node: the kinds of input of the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// A new transport is open: the client sends its local token (or, holding a session,
    /// the merged token to resume it).
    Opened,
    /// The peer's first token arrived (its local token; for a resuming client, the server's
    /// fresh token).
    RemoteToken,
    /// The peer's token arrived again, equal to the first: the handshake is confirmed.
    Confirmed,
    /// Resumption: the server adopted the new transport for the session, or the client
    /// received the server's echo of the merged token.
    Resumed,
    /// The transport of a node that holds a session was lost (closed, timed out, refused,
    /// or sent garbage).
    TransportLost,
    /// A handshake that had no session yet failed; the client tries again from scratch.
    HandshakeFailed,
    /// The merged token was sent or received as a formal disconnection (or the application
    /// ended the node locally).
    FormalDisconnect,
    /// The client gave up reconnecting, or the server forgot the session.
    Expired,
}

/// The transition table: `(from, step, to)`, every legal move of a node. A `(state, step)`
/// pair absent from the table is a protocol error (the transport is closed, the peer told).
///
/// [`transition`] is the same table as a `match`; a test checks that the two agree.
pub const TRANSITIONS: &[(Status, Step, Status)] = {
    use Status::*;
    use Step::*;
    &[
        (Open, Opened, Open),
        (Open, RemoteToken, Preconnected),
        (Open, HandshakeFailed, Open),
        (Open, FormalDisconnect, Disconnected),
        (Open, Expired, Disconnected),
        (Preconnected, Confirmed, Connected),
        (Preconnected, Resumed, Connected),
        (Preconnected, HandshakeFailed, Open),
        (Preconnected, TransportLost, Reconnecting),
        (Preconnected, FormalDisconnect, Disconnected),
        (Preconnected, Expired, Disconnected),
        (Connected, TransportLost, Reconnecting),
        (Connected, FormalDisconnect, Disconnected),
        (Reconnecting, Opened, Reconnecting),
        (Reconnecting, RemoteToken, Preconnected),
        (Reconnecting, Resumed, Connected),
        (Reconnecting, TransportLost, Reconnecting),
        (Reconnecting, FormalDisconnect, Disconnected),
        (Reconnecting, Expired, Disconnected),
    ]
};

/// The next status after `step` in `from`, or `None` if the move is not in the table.
///
/// ```
/// use tether::connect::merge::{transition, Status, Step};
/// assert_eq!(transition(Status::Open, Step::RemoteToken), Some(Status::Preconnected));
/// assert_eq!(transition(Status::Disconnected, Step::Resumed), None);
/// ```
pub const fn transition(from: Status, step: Step) -> Option<Status> {
    use Status::*;
    use Step::*;
    Some(match (from, step) {
        // CONNECTION, steps 1-8: token, token again, merge.
        (Open, Opened) => Open,
        (Open, RemoteToken) => Preconnected,
        (Preconnected, Confirmed) => Connected,
        // RECONNECTION, steps 9-15: the client sends the merged token on a new transport,
        // takes the server's fresh token (PRECONNECTED), then its echo (CONNECTED); the
        // server's old node adopts the transport (RECONNECTING -> CONNECTED).
        (Connected, TransportLost) => Reconnecting,
        (Reconnecting, Opened) => Reconnecting,
        (Reconnecting, RemoteToken) => Preconnected,
        (Preconnected, Resumed) => Connected,
        (Reconnecting, Resumed) => Connected,
        (Preconnected, TransportLost) => Reconnecting,
        (Reconnecting, TransportLost) => Reconnecting,
        // A first handshake that fails is simply tried again (dop let the node linger).
        (Open, HandshakeFailed) => Open,
        (Preconnected, HandshakeFailed) => Open,
        // DISCONNECTION: for good.
        (Connected, FormalDisconnect) => Disconnected,
        (Open, FormalDisconnect) => Disconnected,
        (Preconnected, FormalDisconnect) => Disconnected,
        (Reconnecting, FormalDisconnect) => Disconnected,
        // Timers dop did not have: the client gives up, the server forgets.
        (Open, Expired) => Disconnected,
        (Preconnected, Expired) => Disconnected,
        (Reconnecting, Expired) => Disconnected,
        _ => return None,
    })
}

/// A node's tokens and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Node {
    pub status: Status,
    pub local: Token,
    pub remote: Option<Token>,
    pub merged: Option<Token>,
}

impl Node {
    pub fn new(local: Token) -> Node {
        Node {
            status: Status::Open,
            local,
            remote: None,
            merged: None,
        }
    }

    /// Applies `step` if the table allows it; returns whether it did. A refused step leaves
    /// the node unchanged (callers only apply steps they matched on, so a `false` is a bug
    /// that shows in tests, never a panic).
    pub fn apply(&mut self, step: Step) -> bool {
        match transition(self.status, step) {
            Some(next) => {
                self.status = next;
                true
            }
            None => false,
        }
    }

    pub fn view(&self, link: Option<Link>) -> NodeView {
        NodeView {
            status: self.status,
            local: self.local,
            remote: self.remote,
            merged: self.merged,
            link,
        }
    }
}

/// What a node holds, as the proposal's state tables show it: status, tokens, transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView {
    /// The status.
    pub status: Status,
    /// The node's own token (`token_local`).
    pub local: Token,
    /// The peer's token (`token_remote`), once received.
    pub remote: Option<Token>,
    /// The merged session token (`token`), once connected.
    pub merged: Option<Token>,
    /// The transport the node holds (`socket`), if any.
    pub link: Option<Link>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATUS: [Status; 5] = [
        Status::Open,
        Status::Preconnected,
        Status::Connected,
        Status::Reconnecting,
        Status::Disconnected,
    ];
    const ALL_STEPS: [Step; 8] = [
        Step::Opened,
        Step::RemoteToken,
        Step::Confirmed,
        Step::Resumed,
        Step::TransportLost,
        Step::HandshakeFailed,
        Step::FormalDisconnect,
        Step::Expired,
    ];

    #[test]
    fn table_and_match_agree_on_every_pair() {
        for from in ALL_STATUS {
            for step in ALL_STEPS {
                let in_table = TRANSITIONS
                    .iter()
                    .find(|(f, s, _)| *f == from && *s == step)
                    .map(|(_, _, to)| *to);
                assert_eq!(in_table, transition(from, step), "{from:?} {step:?}");
            }
        }
    }

    #[test]
    fn disconnected_is_final_and_status_numbers_match_the_document() {
        for step in ALL_STEPS {
            assert_eq!(transition(Status::Disconnected, step), None);
        }
        let numbers: [u8; 5] = ALL_STATUS.map(|s| s as u8);
        assert_eq!(numbers, [0, 1, 2, 3, 4]);
    }
}
