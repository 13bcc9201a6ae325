//! The token-merge node: its five states, the steps that move it, and the transition table.
//!
//! MergeClient and server share this node; what differs is who sends what (see
//! [`MergeClient`](super::Client) and [`MergeServer`](super::Server)).

use crate::driver::Link;
use crate::tables::{fire, NoTransition};
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
    /// The client gave up reconnecting or was refused for good, or the server forgot the
    /// session.
    Expired,
}

/// The transition table: `(from, step, to)`, every legal move of a node, and the only way
/// a node moves ([`tables::fire`](crate::tables::fire)). A `(state, step)` pair absent from
/// the table is a protocol error (the transport is closed, the peer told).
///
/// ```
/// use tether::connect::merge::{Status, Step, TRANSITIONS};
/// use tether::tables::fire;
/// assert_eq!(fire(TRANSITIONS, Status::Open, Step::RemoteToken), Ok(Status::Preconnected));
/// assert!(fire(TRANSITIONS, Status::Disconnected, Step::Resumed).is_err());
/// ```
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
        // The server refused a connected session for good (CONN_FAILED SESSION_ENDED...).
        (Connected, Expired, Disconnected),
        (Reconnecting, Opened, Reconnecting),
        (Reconnecting, RemoteToken, Preconnected),
        (Reconnecting, Resumed, Connected),
        (Reconnecting, TransportLost, Reconnecting),
        (Reconnecting, FormalDisconnect, Disconnected),
        (Reconnecting, Expired, Disconnected),
    ]
};

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

    /// Fires `step` through [`TRANSITIONS`]: the node moves to the row's target, or stays
    /// as it is and the caller gets the missing row to act on.
    pub fn apply(&mut self, step: Step) -> Result<(), NoTransition<Status, Step>> {
        self.status = fire(TRANSITIONS, self.status, step)?;
        Ok(())
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
    use proptest::prelude::*;

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

    /// A pair without a row is the typed error and leaves the node as it was; a pair with a
    /// row moves the node to its target.
    fn check(from: Status, step: Step) -> Result<(), TestCaseError> {
        let row = TRANSITIONS
            .iter()
            .find(|(f, s, _)| *f == from && *s == step);
        let mut node = Node::new(Token::new(&[b'a'; 16]).unwrap());
        node.status = from;
        let got = node.apply(step);
        match row {
            Some(&(_, _, to)) => {
                prop_assert_eq!(got, Ok(()));
                prop_assert_eq!(node.status, to);
            }
            None => {
                prop_assert_eq!(
                    got,
                    Err(NoTransition {
                        state: from,
                        input: step
                    })
                );
                prop_assert_eq!(node.status, from);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn apply_follows_the_table(from in 0..ALL_STATUS.len(), step in 0..ALL_STEPS.len()) {
            check(ALL_STATUS[from], ALL_STEPS[step])?;
        }
    }

    #[test]
    fn apply_follows_the_table_on_every_pair() {
        for from in ALL_STATUS {
            for step in ALL_STEPS {
                check(from, step).unwrap();
            }
        }
    }

    #[test]
    fn disconnected_is_final_and_status_numbers_match_the_document() {
        for step in ALL_STEPS {
            assert!(fire(TRANSITIONS, Status::Disconnected, step).is_err());
        }
        let numbers: [u8; 5] = ALL_STATUS.map(|s| s as u8);
        assert_eq!(numbers, [0, 1, 2, 3, 4]);
    }
}
