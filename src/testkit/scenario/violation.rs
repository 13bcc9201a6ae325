//! What a broken promise looks like: [`Violation`], named for a bug report.

use super::{Key, Who};
use alloc::string::String;
use alloc::vec::Vec;

/// A broken promise. `step` is the index of the step after which it was seen; the calm
/// phase counts on from `steps.len()`. Sessions are named as the profile names them
/// (`session 3`, `player 2`), tokens in hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A client and the server session on the other end of its transport are both
    /// connected but disagree on the session (tokens, or the dual player id).
    #[error("step {step}: {client} and server {session} are connected on one transport but disagree: client {client_side}, server {server_side}")]
    SessionMismatch {
        /// Step.
        step: usize,
        /// The client.
        client: Who,
        /// The server's session.
        session: String,
        /// What the client holds.
        client_side: String,
        /// What the server holds.
        server_side: String,
    },
    /// Two server sessions hold the same token.
    #[error("step {step}: {a} and {b} share a token")]
    SharedToken {
        /// Step.
        step: usize,
        /// One session.
        a: String,
        /// The other.
        b: String,
    },
    /// The peer layer and its connection machine disagree on whether a session is up.
    #[error("step {step}: {node}: the peer and its connection disagree: {detail}")]
    LayersDisagree {
        /// Step.
        step: usize,
        /// The node.
        node: Who,
        /// What disagrees.
        detail: String,
    },
    /// A count went past its bound.
    #[error("step {step}: {node}: {what} is {value}, bound {bound}")]
    Unbounded {
        /// Step.
        step: usize,
        /// The node.
        node: Who,
        /// What was counted.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The bound.
        bound: usize,
    },
    /// A journal holds an entry nobody appended.
    #[error("step {step}: {node} holds {key:?}, which nobody appended")]
    Invented {
        /// Step.
        step: usize,
        /// The node.
        node: Who,
        /// The entry.
        key: Key,
    },
    /// A node reported an entry applied twice.
    #[error("step {step}: {node} applied {key:?} {count} times")]
    AppliedTwice {
        /// Step.
        step: usize,
        /// The node.
        node: Who,
        /// The entry.
        key: Key,
        /// How many times so far.
        count: u32,
    },
    /// A node reported applying an entry it had appended itself.
    #[error("step {step}: {node} applied {key:?}, which it appended itself")]
    AppliedOwn {
        /// Step.
        step: usize,
        /// The node.
        node: Who,
        /// The entry.
        key: Key,
    },
    /// A client ended although the scenario did not end it.
    #[error("step {step}: {client} ended unexpectedly: {reason}")]
    UnexpectedEnd {
        /// Step.
        step: usize,
        /// The client.
        client: Who,
        /// Why it says it ended.
        reason: String,
    },
    /// A machine reported that its honest peer broke the protocol (or refused it for a
    /// reason an honest peer never earns).
    #[error("step {step}: {node}: protocol error between honest peers: {detail}")]
    ProtocolError {
        /// Step.
        step: usize,
        /// The node that reported it.
        node: Who,
        /// What it reported.
        detail: String,
    },
    /// A `feed` update was delivered that nobody sent, or to the wrong node.
    #[error("step {step}: {node} received a feed update nobody sent it: {detail}")]
    UpdateInvented {
        /// Step.
        step: usize,
        /// The receiver.
        node: Who,
        /// What arrived.
        detail: String,
    },
    /// A `feed` update was delivered twice to one node.
    #[error("step {step}: {node} received update {counter} from {from} twice")]
    UpdateTwice {
        /// Step.
        step: usize,
        /// The receiver.
        node: Who,
        /// The sender.
        from: Who,
        /// The update's number (per sender, in sending order).
        counter: u32,
    },
    /// A `feed` update was delivered after a newer one of the same sender and session.
    #[error("step {step}: {node} received update {counter} from {from} after the newer {newest}")]
    UpdateReordered {
        /// Step.
        step: usize,
        /// The receiver.
        node: Who,
        /// The sender.
        from: Who,
        /// The update's number.
        counter: u32,
        /// The newest number delivered before it in the same session.
        newest: u32,
    },
    /// On a calm network, with every live client connected, a `feed` update did not arrive.
    #[error("on a calm network, update {counter} from {from} never reached {to}")]
    UpdateLost {
        /// The sender.
        from: Who,
        /// The receiver.
        to: Who,
        /// The update's number.
        counter: u32,
    },
    /// After the calm phase a live client is not connected (or its session is not).
    #[error("{client} is not connected after the calm phase: client {client_status}, server session {server_status:?}")]
    NotConnected {
        /// The client.
        client: Who,
        /// The client's status.
        client_status: String,
        /// The status of the server's session for it, if any.
        server_status: Option<String>,
    },
    /// After the calm phase a live node's journal differs from the server's.
    #[error("{node} did not converge: missing {missing:?}, extra {extra:?} (of {expected} entries); errors seen: {errors:?}")]
    NotConverged {
        /// The node.
        node: Who,
        /// Entries the server has and it lacks (the first few).
        missing: Vec<Key>,
        /// Entries it has and the server lacks (the first few).
        extra: Vec<Key>,
        /// How many entries the server has.
        expected: usize,
        /// The last errors the machines returned, for diagnosis.
        errors: Vec<String>,
    },
    /// After the calm phase a live node's journal lacks an entry a live node appended.
    #[error("{key:?}, appended by {author}, is missing everywhere")]
    Lost {
        /// Who appended it.
        author: Who,
        /// The entry.
        key: Key,
    },
    /// After the calm phase and the session grace, the server does not hold exactly one
    /// session per live client.
    #[error("after the calm phase the server holds {sessions} sessions for {live} live clients")]
    SessionLeak {
        /// Sessions (players) on the server.
        sessions: usize,
        /// Live clients.
        live: usize,
    },
    /// After the calm phase a node holds an entry it neither appended nor reported applied.
    #[error("{node} holds {key:?} but never reported it applied")]
    Unreported {
        /// The node.
        node: Who,
        /// The entry.
        key: Key,
    },
}

pub(super) fn unbounded(
    step: usize,
    node: Who,
    what: &'static str,
    value: usize,
    bound: usize,
) -> Violation {
    Violation::Unbounded {
        step,
        node,
        what,
        value,
        bound,
    }
}

/// Checks a value against its bound: `what` over `bound` is [`Violation::Unbounded`].
pub(super) fn within(
    step: usize,
    node: Who,
    what: &'static str,
    value: usize,
    bound: usize,
) -> Result<(), Violation> {
    if value > bound {
        return Err(unbounded(step, node, what, value, bound));
    }
    Ok(())
}
