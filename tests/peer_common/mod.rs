//! What the peer tests of both profiles share: a client peer and a server peer side by side
//! in the simulator, and the questions they ask of them.
#![allow(dead_code)]

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use tether::peer::{Peer, PeerCommand, PeerEvent, Profile};
use tether::sync::journal::{MemJournal, SyncEvent};
use tether::testkit::{Either, NodeId, Sim};
use tether::wire::Entry;

pub type Journal = MemJournal;

/// A client peer over `C` and a server peer over `S`, as one simulated node type.
pub type Node<C, S> = Either<Peer<C, Journal>, Peer<S, Journal>>;

/// The `(author, resource)` keys of a node's journal.
pub fn keys<C, S>(sim: &Sim<Node<C, S>>, id: NodeId) -> BTreeSet<(Bytes, Bytes)>
where
    C: Profile,
    S: Profile,
    C::Error: 'static,
    S::Error: 'static,
{
    match sim.node(id) {
        Either::Left(p) => p.store().keys(),
        Either::Right(p) => p.store().keys(),
    }
}

/// A handle on a node's journal (shared with the node).
pub fn journal<C, S>(sim: &Sim<Node<C, S>>, id: NodeId) -> Journal
where
    C: Profile,
    S: Profile,
    C::Error: 'static,
    S::Error: 'static,
{
    match sim.node(id) {
        Either::Left(p) => p.store().clone(),
        Either::Right(p) => p.store().clone(),
    }
}

/// Appends entry `r{n}` by `author` on a node, through its peer.
pub fn append<C, S>(sim: &mut Sim<Node<C, S>>, id: NodeId, author: &str, n: usize)
where
    C: Profile,
    S: Profile,
    C::Error: 'static,
    S::Error: 'static,
{
    let entry = Entry::new(author.as_bytes(), format!("r{n}").as_bytes(), b"payload");
    let cmd = match sim.node(id) {
        Either::Left(_) => Either::Left(PeerCommand::Append(entry)),
        Either::Right(_) => Either::Right(PeerCommand::Append(entry)),
    };
    sim.command(id, cmd);
}

/// An event of a [`Node`]: the client peer's or the server peer's.
pub type NodeEvent<CE, CS, SE, SS> = Either<PeerEvent<CE, CS>, PeerEvent<SE, SS>>;

/// Times applied, per `(author, resource)`.
pub type AppliedCounts = BTreeMap<(Vec<u8>, Vec<u8>), usize>;

/// How many times each `(author, resource)` was reported applied in these events.
pub fn applied<CE, CS, SE, SS>(events: &[NodeEvent<CE, CS, SE, SS>]) -> AppliedCounts {
    let mut counts = BTreeMap::new();
    for e in events {
        let sync_event = match e {
            Either::Left(PeerEvent::Sync(_, s)) => s,
            Either::Right(PeerEvent::Sync(_, s)) => s,
            _ => continue,
        };
        if let SyncEvent::Applied {
            author, resource, ..
        } = sync_event
        {
            *counts
                .entry((author.to_vec(), resource.to_vec()))
                .or_insert(0) += 1;
        }
    }
    counts
}
