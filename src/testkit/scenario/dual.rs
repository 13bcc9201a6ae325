//! R-Type's dual-channel profile in the scenarios: a [`DualServer`] and
//! [`DualClient`]s dialling both `main` and `feed`.
//!
//! A dual client connects when its application says so ([`DualClientCommand::Connect`]) and,
//! unlike a token-merge client, gives up after a bounded number of tries (or at once when
//! `feed` goes silent under [`FeedLossPolicy::CloseBoth`]): it is then closed until its
//! application connects it again, which the runner does on [`Step::Connect`] and during the
//! calm phase. A kicked client is refused and starts a fresh session by itself (or closes).
//!
//! [`Step::Connect`]: super::Step::Connect

use super::{
    hex, unbounded, within, Harness, Journal, News, SeqTokens, Track, Violation, Who, World,
};
use crate::connect::dual::{
    AttemptFailure, DualClient, DualClientCommand, DualClientConfig, DualClientEvent,
    DualClientNotice, DualClientState, DualError, DualServer, DualServerCommand, DualServerConfig,
    DualServerEvent, DualServerNotice, EndReason, Event, FeedLossPolicy, PlayerState,
};
use crate::driver::Channel;
use crate::peer::{Peer, PeerCommand};
use crate::testkit::{Either, NodeId};
use crate::time::{Duration, Instant};
use crate::token::Token;
use crate::wire::{Element, FailReason, Message};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Most transports one dual client may hold open at once: `main` and `feed`, plus one dial
/// or close still in flight.
pub const MAX_DUAL_LINKS_PER_CLIENT: usize = 3;

/// The dual server's configuration in every scenario: a short session timeout so that
/// long partitions expire sessions, and small bounds so that the bounds are exercised.
pub fn dual_server_config() -> DualServerConfig {
    DualServerConfig {
        max_players: 8,
        max_links: 12,
        session_timeout: Duration::from_secs(20),
        max_queued: 256,
        ..DualServerConfig::default()
    }
}

/// The dual clients' configuration: `feed` re-initialised or both channels closed when
/// `feed` is lost, a queue as deep as the server's.
pub fn dual_client_config(reinit_feed: bool) -> DualClientConfig {
    DualClientConfig {
        on_feed_lost: if reinit_feed {
            FeedLossPolicy::Reinit
        } else {
            FeedLossPolicy::CloseBoth
        },
        max_queued: 256,
        ..DualClientConfig::default()
    }
}

/// A dual client peer.
pub type DualClientPeer = Peer<DualClient, Journal>;
/// The dual server peer.
pub type DualServerPeer = Peer<DualServer<SeqTokens>, Journal>;
/// A node of a dual-channel scenario.
pub type DualNode = Either<DualClientPeer, DualServerPeer>;

/// The dual-channel profile.
pub(super) struct DualHarness {
    pub(super) reinit_feed: bool,
}

/// Whether `main` is up and the session continues (the peer's sync is up).
fn main_up(s: DualClientState) -> bool {
    matches!(
        s,
        DualClientState::Connected
            | DualClientState::ReopeningFeed
            | DualClientState::AwaitFeedReinitRep
    )
}

impl DualHarness {
    /// The player of client `id` on the server: its player id, if the server holds that id
    /// with the client's token A (not a later session that reused the id).
    fn player_of(w: &World<Self>, id: NodeId) -> Option<u16> {
        let client = w.client_peer(id)?.connection();
        let player = client.player()?;
        let (a, _) = client.tokens();
        let (sa, _) = w.server_peer()?.connection().player_tokens(player)?;
        (a == Some(sa)).then_some(player)
    }
}

impl Harness for DualHarness {
    type ClientError = DualError;
    type ServerError = DualError;
    type Client = DualClient;
    type Server = DualServer<SeqTokens>;
    const CHANNELS: &'static [Channel] = &[Channel::Main, Channel::Feed];

    fn server(&self, seed: u64) -> DualServer<SeqTokens> {
        DualServer::new(dual_server_config(), SeqTokens::new(seed))
    }

    fn client(&self, _: u64, _: u8, _: Instant) -> DualClient {
        DualClient::new(dual_client_config(self.reinit_feed))
    }

    fn connect(&self) -> Option<DualClientCommand> {
        Some(DualClientCommand::Connect)
    }

    fn closed(client: &DualClient) -> bool {
        matches!(
            client.state(),
            DualClientState::Closed | DualClientState::Idle
        )
    }

    fn disconnect(&self) -> (DualClientCommand, bool) {
        // Left for good at once, even if it was already closed (then it says nothing).
        (DualClientCommand::Disconnect, true)
    }

    fn kick(w: &World<Self>, id: NodeId) -> Option<(DualServerCommand, bool)> {
        let player = Self::player_of(w, id)?;
        let kick = DualServerCommand::Kick {
            player,
            reason: FailReason::Refused,
        };
        Some((kick, false))
    }

    fn client_news(event: &DualClientEvent, track: &Track) -> News {
        match event {
            Event::Ended { reason, .. } => match reason {
                EndReason::Violation(r) => News::Broken(format!("ended: protocol {r:?}")),
                EndReason::LocalDisconnect => News::Ended {
                    reason: format!("{reason:?}"),
                    for_good: true,
                    allowed: track.ended_on_purpose,
                },
                _ => News::Ended {
                    reason: format!("{reason:?}"),
                    for_good: false,
                    allowed: track.disturbed,
                },
            },
            Event::Notice(DualClientNotice::AttemptFailed {
                reason: AttemptFailure::Violation(r),
                ..
            }) => News::Broken(format!("attempt failed: protocol {r:?}")),
            Event::Notice(DualClientNotice::AttemptFailed { reason, .. }) if !track.disturbed => {
                News::Ended {
                    reason: format!("attempt failed: {reason:?}"),
                    for_good: false,
                    allowed: false,
                }
            }
            Event::Notice(DualClientNotice::Update(element)) => News::Update(element.clone()),
            Event::Notice(DualClientNotice::FeedReceived(m)) => {
                News::Broken(format!("unexpected on feed: {m:?}"))
            }
            _ => News::Nothing,
        }
    }

    fn server_news(event: &DualServerEvent) -> News {
        match event {
            Event::Ended {
                session: player,
                reason: EndReason::Violation(r),
                ..
            } if *r != FailReason::Timeout => {
                News::Broken(format!("player {player} failed: {r:?}"))
            }
            Event::Notice(DualServerNotice::Update { element, .. }) => {
                News::Update(element.clone())
            }
            Event::Notice(DualServerNotice::FeedReceived { player, message }) => {
                News::Broken(format!("unexpected on player {player}'s feed: {message:?}"))
            }
            _ => News::Nothing,
        }
    }

    fn check(w: &World<Self>, step: usize) -> Result<(), Violation> {
        let Some(server_peer) = w.server_peer() else {
            return Ok(());
        };
        let server = server_peer.connection();
        let cfg = dual_server_config();
        let n = w.n();
        // Players: bounded, tokens unique, announced ones known to the peer alike.
        let mut tokens: Vec<(Token, u16)> = Vec::new();
        let mut announced = 0usize;
        for player in 0..cfg.max_players {
            let Some(state) = server.player_state(player) else {
                continue;
            };
            if matches!(state, PlayerState::Connected | PlayerState::MainLost) {
                announced += 1;
            }
            let (a, b) = server.player_tokens(player).unzip();
            for t in [a, b.flatten()].into_iter().flatten() {
                if let Some((_, other)) = tokens.iter().find(|(u, _)| *u == t) {
                    return Err(Violation::SharedToken {
                        step,
                        a: format!("player {other}"),
                        b: format!("player {player}"),
                    });
                }
                tokens.push((t, player));
            }
            let queued = server.player_queue(player).map_or(0, |q| q.len());
            if queued > cfg.max_queued {
                return Err(unbounded(
                    step,
                    Who::Server,
                    "a player's queue",
                    queued,
                    cfg.max_queued,
                ));
            }
        }
        let mut known = 0usize;
        for (player, up) in server_peer.sessions() {
            known += 1;
            let state = server.player_state(player);
            if state.is_none() || up != (state == Some(PlayerState::Connected)) {
                return Err(Violation::LayersDisagree {
                    step,
                    node: Who::Server,
                    detail: format!("player {player}: peer says up={up}, server says {state:?}"),
                });
            }
        }
        if known != announced {
            return Err(Violation::LayersDisagree {
                step,
                node: Who::Server,
                detail: format!("the peer knows {known} players, the server announced {announced}"),
            });
        }
        let bounds = [
            (
                "players",
                server.player_count(),
                usize::from(cfg.max_players),
            ),
            ("main links", server.link_count(), cfg.max_links),
            (
                "open transports",
                w.sim.open_links(w.server),
                n * MAX_DUAL_LINKS_PER_CLIENT,
            ),
        ];
        for (what, value, bound) in bounds {
            if value > bound {
                return Err(unbounded(step, Who::Server, what, value, bound));
            }
        }
        // Clients: layers agree, bounded, and agree with the player on their `main`.
        let ccfg = dual_client_config(false);
        for (k, &id) in w.clients.iter().enumerate() {
            let who = Who::Client(k as u8);
            let Some(peer) = w.client_peer(id) else {
                continue;
            };
            let client = peer.connection();
            let state = client.state();
            let up = peer.sessions().next().map(|(_, u)| u);
            if up.unwrap_or(false) != main_up(state) {
                return Err(Violation::LayersDisagree {
                    step,
                    node: who,
                    detail: format!("peer says up={up:?}, connection says {state:?}"),
                });
            }
            within(
                step,
                who,
                "queued messages",
                client.queued(),
                ccfg.max_queued,
            )?;
            let links = w.sim.open_links(id);
            within(
                step,
                who,
                "open transports",
                links,
                MAX_DUAL_LINKS_PER_CLIENT,
            )?;
            if !main_up(state) {
                continue;
            }
            let Some((node, far)) = client.links().0.and_then(|l| w.sim.far_end(id, l.id)) else {
                continue;
            };
            if node != w.server {
                continue;
            }
            // The player whose `main` is the far end of ours, if it is connected.
            let Some(player) = (0..cfg.max_players).find(|&p| {
                server.player_state(p) == Some(PlayerState::Connected)
                    && server
                        .player_links(p)
                        .and_then(|(m, _)| m)
                        .is_some_and(|m| m.id == far)
            }) else {
                continue;
            };
            let (a, b) = server.player_tokens(player).unzip();
            let server_side = (Some(player), a, b.flatten());
            let (ca, cb) = client.tokens();
            let client_side = (client.player(), ca, cb);
            if client_side != server_side {
                let show = |(p, a, b): (Option<u16>, Option<Token>, Option<Token>)| {
                    format!(
                        "player {p:?}, token A {:?}, token B {:?}",
                        a.map(|t| hex(&t)),
                        b.map(|t| hex(&t))
                    )
                };
                return Err(Violation::SessionMismatch {
                    step,
                    client: who,
                    session: format!("player {player}"),
                    client_side: show(client_side),
                    server_side: show(server_side),
                });
            }
        }
        Ok(())
    }

    fn status(w: &World<Self>, id: NodeId) -> (String, Option<String>, bool) {
        let state = w
            .client_peer(id)
            .map_or(DualClientState::Idle, |p| p.connection().state());
        let server = Self::player_of(w, id)
            .and_then(|p| w.server_peer().and_then(|s| s.connection().player_state(p)));
        (
            format!("{state:?}"),
            server.map(|s| format!("{s:?}")),
            state == DualClientState::Connected && server == Some(PlayerState::Connected),
        )
    }

    fn sessions(server: &DualServer<SeqTokens>) -> usize {
        server.player_count()
    }

    fn grace(&self) -> Duration {
        let cfg = dual_server_config();
        cfg.session_timeout.max(cfg.handshake_timeout)
    }

    fn send_update(
        w: &mut World<Self>,
        from: usize,
        pick: u8,
        element: &dyn Fn(usize, &[u8]) -> Element,
    ) -> Option<usize> {
        let (_, id, _) = w.node_at(from);
        let mut target = 0;
        let command = if from == 0 {
            let server = w.server_peer()?;
            let players: Vec<u16> = server.sessions().map(|(p, _)| p).collect();
            let &player = players.get(usize::from(pick) % players.len().max(1))?;
            let (token_a, _) = server.connection().player_tokens(player)?;
            // The client holding this session, if any still does.
            let to = (1..=w.n())
                .find(|&i| {
                    let (_, c, _) = w.node_at(i);
                    Self::player_of(w, c) == Some(player)
                })
                .unwrap_or(super::NOBODY);
            let message = Message::Update(element(to, token_a.as_bytes()));
            target = to;
            Either::Right(PeerCommand::Connection(DualServerCommand::SendFeed {
                player,
                message,
            }))
        } else {
            let client = w.client_peer(id)?;
            let tag = client.connection().tokens().0;
            let tag = tag.as_ref().map_or(&[][..], |t| t.as_bytes());
            let message = Message::Update(element(0, tag));
            Either::Left(PeerCommand::Connection(DualClientCommand::SendFeed(
                message,
            )))
        };
        w.sim.command(id, command);
        Some(target)
    }
}
