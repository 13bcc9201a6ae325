//! [`Profile`] for each connection machine: what each of its events means to a [`Peer`].
//!
//! [`Peer`]: super::Peer

use super::{Profile, Routed};
use crate::connect::{dual, merge};
use crate::driver::Machine;
use crate::time::Instant;
use crate::wire::Message;

impl Profile for merge::Client {
    type Session = ();

    fn send(&mut self, now: Instant, _: (), message: Message) -> Result<(), merge::Error> {
        self.handle_input(
            now,
            crate::Input::Command(merge::ClientCommand::Send(message)),
        )
    }

    fn route(event: merge::ClientEvent) -> Routed<(), merge::ClientEvent> {
        use merge::ClientEvent as E;
        match event {
            E::Connected(outcome) => Routed::Up {
                session: (),
                resumed: outcome == merge::Outcome::Resumed,
                event,
            },
            E::Lost => Routed::Down { session: (), event },
            E::Ended(_) => Routed::Gone { session: (), event },
            E::Message(message) => Routed::Message {
                session: (),
                message,
            },
            other => Routed::Other(other),
        }
    }

    fn supersede_sync(&mut self, _: ()) {
        merge::Client::supersede_sync(self);
    }
}

impl<S: merge::TokenSource> Profile for merge::Server<S> {
    type Session = merge::SessionId;

    fn send(
        &mut self,
        now: Instant,
        session: merge::SessionId,
        message: Message,
    ) -> Result<(), merge::Error> {
        self.handle_input(
            now,
            crate::Input::Command(merge::ServerCommand::Send { session, message }),
        )
    }

    fn route(event: merge::ServerEvent) -> Routed<merge::SessionId, merge::ServerEvent> {
        use merge::ServerEvent as E;
        match event {
            E::Connected { session, outcome } => Routed::Up {
                session,
                resumed: outcome == merge::Outcome::Resumed,
                event,
            },
            E::Lost { session } => Routed::Down { session, event },
            E::Ended { session, .. } => Routed::Gone { session, event },
            E::Message { session, message } => Routed::Message { session, message },
            other => Routed::Other(other),
        }
    }

    fn supersede_sync(&mut self, session: merge::SessionId) {
        merge::Server::supersede_sync(self, session);
    }
}

impl Profile for dual::DualClient {
    type Session = ();

    fn send(&mut self, now: Instant, _: (), message: Message) -> Result<(), dual::DualError> {
        self.handle_input(
            now,
            crate::Input::Command(dual::ClientCommand::Send(message)),
        )
    }

    fn route(event: dual::ClientEvent) -> Routed<(), dual::ClientEvent> {
        use dual::ClientEvent as E;
        match event {
            E::Connected { session, .. } => Routed::Up {
                session: (),
                resumed: session == dual::Outcome::Resumed,
                event,
            },
            // A failed attempt leaves the client without `main` until a fresh session is
            // up: after a refusal while connected (a kick) the session is down too.
            E::MainLost | E::AttemptFailed { .. } => Routed::Down { session: (), event },
            E::Closed { .. } => Routed::Gone { session: (), event },
            E::Received(message) => Routed::Message {
                session: (),
                message,
            },
            other => Routed::Other(other),
        }
    }

    fn supersede_sync(&mut self, _: ()) {
        dual::DualClient::supersede_sync(self);
    }
}

impl<T: dual::TokenSource> Profile for dual::DualServer<T> {
    /// The player id.
    type Session = u16;

    fn send(&mut self, now: Instant, player: u16, message: Message) -> Result<(), dual::DualError> {
        self.handle_input(
            now,
            crate::Input::Command(dual::ServerCommand::Send { player, message }),
        )
    }

    fn route(event: dual::ServerEvent) -> Routed<u16, dual::ServerEvent> {
        use dual::ServerEvent as E;
        match event {
            E::Connected { player, session } => Routed::Up {
                session: player,
                resumed: session == dual::Outcome::Resumed,
                event,
            },
            E::MainLost { player } => Routed::Down {
                session: player,
                event,
            },
            E::Left { player, .. } => Routed::Gone {
                session: player,
                event,
            },
            E::Received { player, message } => Routed::Message {
                session: player,
                message,
            },
            other => Routed::Other(other),
        }
    }

    fn supersede_sync(&mut self, player: u16) {
        dual::DualServer::supersede_sync(self, player)
    }
}
