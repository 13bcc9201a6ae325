//! [`Profile`] for each connection machine: how a [`Peer`] sends through it, and which
//! journal-sync role it takes. The events need no translation: every connection machine
//! speaks the one [`Event`](crate::session::Event) vocabulary.
//!
//! [`Peer`]: super::Peer

use super::Profile;
use crate::connect::{dual, merge};
use crate::sync::journal::Role;
use crate::time::Instant;
use crate::wire::Message;

impl Profile for merge::MergeClient {
    type Session = ();
    type Notice = merge::MergeClientNotice;
    const ROLE: Role = Role::Client;

    fn send(&mut self, now: Instant, _: (), message: &Message) -> Result<(), merge::MergeError> {
        self.send_ref(now, message)
    }

    fn is_full(error: &merge::MergeError) -> bool {
        matches!(error, merge::MergeError::QueueFull { .. })
    }

    fn queued(&self, _: ()) -> usize {
        merge::MergeClient::queued(self)
    }

    fn supersede_sync(&mut self, _: ()) {
        merge::MergeClient::supersede_sync(self);
    }

    fn last_received(&self, _: ()) -> Option<Instant> {
        merge::MergeClient::last_received(self)
    }

    fn drop_transport(&mut self, now: Instant, _: ()) {
        merge::MergeClient::drop_transport(self, now);
    }
}

impl<S: merge::TokenSource> Profile for merge::MergeServer<S> {
    type Session = merge::SessionId;
    type Notice = merge::MergeServerNotice;
    const ROLE: Role = Role::Server;

    fn send(
        &mut self,
        now: Instant,
        session: merge::SessionId,
        message: &Message,
    ) -> Result<(), merge::MergeError> {
        self.send_ref(now, session, message)
    }

    fn is_full(error: &merge::MergeError) -> bool {
        matches!(error, merge::MergeError::QueueFull { .. })
    }

    fn queued(&self, session: merge::SessionId) -> usize {
        merge::MergeServer::queued(self, session).unwrap_or(0)
    }

    fn supersede_sync(&mut self, session: merge::SessionId) {
        merge::MergeServer::supersede_sync(self, session);
    }

    fn last_received(&self, session: merge::SessionId) -> Option<Instant> {
        merge::MergeServer::last_received(self, session)
    }

    fn drop_transport(&mut self, now: Instant, session: merge::SessionId) {
        merge::MergeServer::drop_transport(self, now, session);
    }
}

impl Profile for dual::DualClient {
    type Session = ();
    type Notice = dual::DualClientNotice;
    const ROLE: Role = Role::Client;

    fn send(&mut self, now: Instant, _: (), message: &Message) -> Result<(), dual::DualError> {
        self.send_ref(now, message)
    }

    fn is_full(error: &dual::DualError) -> bool {
        matches!(error, dual::DualError::QueueFull { .. })
    }

    fn queued(&self, _: ()) -> usize {
        dual::DualClient::queued(self)
    }

    fn supersede_sync(&mut self, _: ()) {
        dual::DualClient::supersede_sync(self);
    }

    fn last_received(&self, _: ()) -> Option<Instant> {
        dual::DualClient::last_received(self)
    }

    fn drop_transport(&mut self, now: Instant, _: ()) {
        dual::DualClient::drop_transport(self, now);
    }
}

impl<T: dual::TokenSource> Profile for dual::DualServer<T> {
    /// The player id.
    type Session = u16;
    type Notice = dual::DualServerNotice;
    const ROLE: Role = Role::Server;

    fn send(
        &mut self,
        now: Instant,
        player: u16,
        message: &Message,
    ) -> Result<(), dual::DualError> {
        self.send_ref(now, player, message)
    }

    fn is_full(error: &dual::DualError) -> bool {
        matches!(error, dual::DualError::QueueFull { .. })
    }

    fn queued(&self, player: u16) -> usize {
        dual::DualServer::queued(self, player).unwrap_or(0)
    }

    fn supersede_sync(&mut self, player: u16) {
        dual::DualServer::supersede_sync(self, player)
    }

    fn last_received(&self, player: u16) -> Option<Instant> {
        dual::DualServer::last_received(self, player)
    }

    fn drop_transport(&mut self, now: Instant, player: u16) {
        dual::DualServer::drop_transport(self, now, player);
    }
}
