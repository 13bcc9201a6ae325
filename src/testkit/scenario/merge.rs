//! dop's token-merge profile in the scenarios: a [`MergeServer`] registry and
//! [`MergeClient`]s that reconnect by themselves and end only when told (or after giving up).

use super::{
    hex, token_from, unbounded, within, Harness, Journal, News, SeqTokens, Track, Violation, Who,
    World,
};
use crate::connect::merge::{
    self, EndReason, MergeClient, MergeClientCommand, MergeClientEvent, MergeServer,
    MergeServerCommand, SessionId, Status,
};
use crate::driver::Channel;
use crate::peer::Peer;
use crate::testkit::{Either, NodeId};
use crate::time::{Duration, Instant};
use crate::token::Token;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Most transports one token-merge client may hold open at once (one current, plus dials
/// and closes still in flight).
pub const MAX_CLIENT_LINKS: usize = 3;
/// Most transports the token-merge server may hold open per client.
pub const MAX_SERVER_LINKS_PER_CLIENT: usize = 3;

/// The token-merge server's configuration in every scenario: a short resume grace so that
/// long partitions expire sessions, and small bounds so that the bounds are exercised.
pub fn server_config() -> merge::MergeServerConfig {
    merge::MergeServerConfig {
        resume_grace: Duration::from_secs(20),
        max_sessions: 8,
        max_pending: 16,
        max_queue: 256,
        ..Default::default()
    }
}

/// The configuration of token-merge client `i` (its own jitter seed; it keeps trying for
/// an hour).
pub fn client_config(seed: u64, i: u8) -> merge::MergeClientConfig {
    merge::MergeClientConfig {
        jitter_seed: seed.wrapping_add(u64::from(i)),
        give_up_after: Duration::from_secs(3600),
        reconnect_max: Duration::from_secs(8),
        max_queue: 256,
        ..Default::default()
    }
}

/// A token-merge client peer.
pub type ClientPeer = Peer<MergeClient, Journal>;
/// The token-merge server peer.
pub type ServerPeer = Peer<MergeServer<SeqTokens>, Journal>;
/// A node of a token-merge scenario.
pub type Node = Either<ClientPeer, ServerPeer>;

/// The token-merge profile.
pub(super) struct MergeHarness;

impl MergeHarness {
    /// The server session holding the same merged token as client `id`, if any.
    fn session_of_client(w: &World<Self>, id: NodeId) -> Option<SessionId> {
        let merged = w.client_peer(id)?.connection().view().merged?;
        let server = w.server_peer()?;
        server
            .sessions()
            .map(|(s, _)| s)
            .find(|s| server.connection().session(*s).and_then(|v| v.merged) == Some(merged))
    }

    fn client_status(w: &World<Self>, id: NodeId) -> (Status, Option<Status>) {
        let status = w
            .client_peer(id)
            .map_or(Status::Disconnected, |p| p.connection().view().status);
        let server_status = Self::session_of_client(w, id).and_then(|s| {
            w.server_peer()
                .and_then(|p| p.connection().session(s))
                .map(|v| v.status)
        });
        (status, server_status)
    }
}

impl Harness for MergeHarness {
    type ClientError = merge::MergeError;
    type ServerError = merge::MergeError;
    type Client = MergeClient;
    type Server = MergeServer<SeqTokens>;
    const CHANNELS: &'static [Channel] = &[Channel::Main];

    fn server(&self, seed: u64) -> MergeServer<SeqTokens> {
        MergeServer::new(server_config(), SeqTokens::new(seed))
    }

    fn client(&self, seed: u64, i: u8, now: Instant) -> MergeClient {
        let mut local = [0u8; 16];
        local[..8].copy_from_slice(&(seed ^ (u64::from(i) + 1)).to_be_bytes());
        local[8] = i;
        local[9] = 0xc1;
        MergeClient::new(now, client_config(seed, i), token_from(local))
            .unwrap_or_else(|_| unreachable!("a 16-byte token suits tether's encoding"))
    }

    fn connect(&self) -> Option<MergeClientCommand> {
        None // a token-merge client connects and reconnects by itself
    }

    fn closed(_: &MergeClient) -> bool {
        false
    }

    fn disconnect(&self) -> (MergeClientCommand, bool) {
        // The client ends when it says so (`Ended(LocalDisconnect)`).
        (MergeClientCommand::Disconnect, false)
    }

    fn kick(w: &World<Self>, id: NodeId) -> Option<(MergeServerCommand, bool)> {
        let session = Self::session_of_client(w, id)?;
        Some((MergeServerCommand::Disconnect { session }, true))
    }

    fn client_news(event: &MergeClientEvent, track: &Track) -> News {
        let MergeClientEvent::Ended { reason, .. } = event else {
            return News::Nothing;
        };
        let allowed = match reason {
            // The server forgot the session and a fresh one replaced it: the client goes on.
            EndReason::Expired => return News::Nothing,
            EndReason::LocalDisconnect | EndReason::PeerDisconnect => track.ended_on_purpose,
            EndReason::GaveUp => track.jumped_forward,
            // A client whose formally ended session it tries to resume is refused for
            // good: only after the scenario ended it.
            EndReason::Refused(_) => track.ended_on_purpose,
            // No scenario restores an older copy of a session: diverged is a bug here.
            EndReason::Violation(_) | EndReason::FeedLost | EndReason::Diverged => false,
        };
        News::Ended {
            reason: format!("{reason:?}"),
            for_good: true,
            allowed,
        }
    }

    fn server_news(_: &merge::MergeServerEvent) -> News {
        News::Nothing
    }

    fn check(w: &World<Self>, step: usize) -> Result<(), Violation> {
        let Some(server_peer) = w.server_peer() else {
            return Ok(());
        };
        let server = server_peer.connection();
        let cfg = server_config();
        let n = w.n();
        // Sessions: bounded, known to both layers alike, tokens unique.
        let mut tokens: Vec<(Token, SessionId)> = Vec::new();
        let mut known = 0usize;
        for (session, up) in server_peer.sessions() {
            known += 1;
            let Some(view) = server.session(session) else {
                return Err(Violation::LayersDisagree {
                    step,
                    node: Who::Server,
                    detail: format!("the peer knows session {session:?}, the registry does not"),
                });
            };
            if up != (view.status == Status::Connected) {
                return Err(Violation::LayersDisagree {
                    step,
                    node: Who::Server,
                    detail: format!(
                        "session {session:?}: peer says up={up}, registry says {:?}",
                        view.status
                    ),
                });
            }
            if let Some(m) = view.merged {
                if let Some((_, other)) = tokens.iter().find(|(t, _)| *t == m) {
                    return Err(Violation::SharedToken {
                        step,
                        a: format!("session {other:?}"),
                        b: format!("session {session:?}"),
                    });
                }
                tokens.push((m, session));
            }
            let queued = server.queued(session).unwrap_or(0);
            if queued > cfg.max_queue {
                return Err(unbounded(
                    step,
                    Who::Server,
                    "a session's queue",
                    queued,
                    cfg.max_queue,
                ));
            }
        }
        let bounds = [
            ("sessions known to the peer", known, server.session_count()),
            ("sessions", server.session_count(), cfg.max_sessions),
            (
                "pending handshakes",
                server.pending_count(),
                cfg.max_pending,
            ),
            (
                "ended tokens remembered",
                server.ended_count(),
                cfg.max_sessions,
            ),
            (
                "open transports",
                w.sim.open_links(w.server),
                n * MAX_SERVER_LINKS_PER_CLIENT,
            ),
        ];
        for (what, value, bound) in bounds {
            if value > bound {
                return Err(unbounded(step, Who::Server, what, value, bound));
            }
        }
        if known != server.session_count() {
            return Err(Violation::LayersDisagree {
                step,
                node: Who::Server,
                detail: format!(
                    "the peer knows {known} sessions, the registry holds {}",
                    server.session_count()
                ),
            });
        }
        // Clients: layers agree, bounded, and agree with their server session.
        for (k, &id) in w.clients.iter().enumerate() {
            let who = Who::Client(k as u8);
            let Some(peer) = w.client_peer(id) else {
                continue;
            };
            let client = peer.connection();
            let view = client.view();
            let up = peer.sessions().next().map(|(_, u)| u);
            let connected = view.status == Status::Connected;
            if up.unwrap_or(false) != connected {
                return Err(Violation::LayersDisagree {
                    step,
                    node: who,
                    detail: format!("peer says up={up:?}, connection says {:?}", view.status),
                });
            }
            let cfg = client_config(0, 0);
            within(step, who, "queued messages", client.queued(), cfg.max_queue)?;
            let links = w.sim.open_links(id);
            within(step, who, "open transports", links, MAX_CLIENT_LINKS)?;
            let far = view.link.and_then(|l| w.sim.far_end(id, l.id));
            if let (true, Some((node, far_link))) = (connected, far) {
                if node == w.server {
                    if let Some(session) = server.session_of(far_link) {
                        let sv = server.session(session);
                        let both = sv.is_some_and(|v| v.status == Status::Connected);
                        let server_token = sv.and_then(|v| v.merged);
                        if both && server_token != view.merged {
                            return Err(Violation::SessionMismatch {
                                step,
                                client: who,
                                session: format!("session {session:?}"),
                                client_side: format!(
                                    "merged token {:?}",
                                    view.merged.map(|t| hex(&t))
                                ),
                                server_side: format!(
                                    "merged token {:?}",
                                    server_token.map(|t| hex(&t))
                                ),
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn status(w: &World<Self>, id: NodeId) -> (String, Option<String>, bool) {
        let (client, server) = Self::client_status(w, id);
        (
            format!("{client:?}"),
            server.map(|s| format!("{s:?}")),
            client == Status::Connected && server == Some(Status::Connected),
        )
    }

    fn sessions(server: &MergeServer<SeqTokens>) -> usize {
        server.session_count()
    }

    fn grace(&self) -> Duration {
        server_config().resume_grace
    }

    fn send_update(
        _: &mut World<Self>,
        _: usize,
        _: u8,
        _: &dyn Fn(usize, &[u8]) -> crate::wire::Element,
    ) -> Option<usize> {
        None // token-merge has no `feed`
    }
}
