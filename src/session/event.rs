//! The one event vocabulary of the connection machines.
//!
//! Whatever the profile, a session comes up (fresh or resumed), goes down, carries
//! messages and ends once, with the messages its peer never acknowledged. Those four
//! events have the same shape on every client and server, so a layer above (such as
//! [`Peer`](crate::peer::Peer)) handles all of them in one place; what only one profile has
//! (the dual-channel `feed`, a refused handshake) travels as a [`Event::Notice`].

use super::{EndReason, Outcome, Undelivered};
use crate::wire::Message;

/// What a connection machine tells the application.
///
/// `S` names a session: `()` on a client (it has one), a session or player id on a
/// server. `N` is the profile's own notices.
///
/// ```
/// use tether::session::{EndReason, Event, Outcome};
///
/// /// What an application typically does with the shared events of any profile.
/// fn describe<S: core::fmt::Debug, N>(event: &Event<S, N>) -> String {
///     match event {
///         Event::Up { session, outcome: Outcome::Fresh } => format!("{session:?}: new, resync"),
///         Event::Up { session, outcome: Outcome::Resumed } => format!("{session:?}: resumed"),
///         Event::Down { session } => format!("{session:?}: down, resuming"),
///         Event::Message { session, .. } => format!("{session:?}: a message"),
///         Event::Ended { session, reason, undelivered } => {
///             format!("{session:?}: ended ({reason:?}), {} undelivered", undelivered.len())
///         }
///         Event::Notice(_) => "something of the profile's own".into(),
///     }
/// }
/// let e: Event<u16, ()> = Event::Ended { session: 7, reason: EndReason::Expired, undelivered: vec![] };
/// assert_eq!(describe(&e), "7: ended (Expired), 0 undelivered");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<S, N> {
    /// A session is up on a transport: a new one, or an earlier one resumed. After
    /// [`Outcome::Fresh`] nothing carried over (resynchronise); after
    /// [`Outcome::Resumed`] messages continue exactly once and in order.
    Up {
        /// The session.
        session: S,
        /// Fresh or resumed.
        outcome: Outcome,
    },
    /// The session's transport was lost (or its peer went silent); the session waits for a
    /// resumption. Messages sent meanwhile are held, and replayed once it is back.
    Down {
        /// The session.
        session: S,
    },
    /// A message arrived on the session's `main` that the connection does not consume
    /// (the application's, or a sync layer's).
    Message {
        /// The session.
        session: S,
        /// The message.
        message: Message,
    },
    /// The session ended for good. Given once per session; on a client a later connection
    /// is a new session (it comes up [`Outcome::Fresh`]).
    Ended {
        /// The session.
        session: S,
        /// Why.
        reason: EndReason,
        /// The messages the peer never acknowledged, oldest first: nothing is dropped
        /// without this report. (In dop's encoding: messages never written.)
        undelivered: Undelivered,
    },
    /// Something only this profile has.
    Notice(N),
}

impl<S: Copy, N> Event<S, N> {
    /// The session the event is about, for the four shared events.
    pub fn session(&self) -> Option<S> {
        match self {
            Event::Up { session, .. }
            | Event::Down { session }
            | Event::Message { session, .. }
            | Event::Ended { session, .. } => Some(*session),
            Event::Notice(_) => None,
        }
    }
}
