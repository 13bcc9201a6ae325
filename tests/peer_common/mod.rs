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

/// Two peers wired in memory ([`tether::testkit::Pair`]), each over its journal.
pub type PeerPair<C, S> = tether::testkit::Pair<Peer<C, Journal>, Peer<S, Journal>>;

/// The sync config of the idle tests: `idle` as the idle timeout, the rest the testkit's.
pub fn idle_config(idle: Option<tether::Duration>) -> tether::sync::journal::SyncConfig {
    tether::sync::journal::SyncConfig {
        idle_timeout: idle,
        ..tether::testkit::scenario::sync_config()
    }
}

/// Whether these events of one peer hold a sync event matching `f`.
pub fn has_sync<E, S>(events: &[PeerEvent<E, S>], f: impl Fn(&SyncEvent) -> bool) -> bool {
    events
        .iter()
        .any(|e| matches!(e, PeerEvent::Sync(_, s) if f(s)))
}

/// Whether these events of one peer hold a status of `code` received from the other side.
pub fn got_status<E, S>(events: &[PeerEvent<E, S>], status: tether::wire::Status) -> bool {
    has_sync(
        events,
        |s| matches!(s, SyncEvent::PeerStatus(r) if r.status == status),
    )
}

/// The connection events of one peer, in order.
pub fn connection_events<E: Clone, S>(events: &[PeerEvent<E, S>]) -> Vec<E> {
    events
        .iter()
        .filter_map(|e| match e {
            PeerEvent::Connection(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// Whether the bytes sent on `link` (still on the pair's wire, for a frozen receiver) hold
/// a journal status frame of `status`.
pub fn status_on_wire<C, S>(
    pair: &PeerPair<C, S>,
    link: tether::Link,
    status: tether::wire::Status,
) -> bool
where
    C: Profile,
    S: Profile,
    C::Error: 'static,
    S::Error: 'static,
{
    let mut bytes = Vec::new();
    for p in pair.wire.iter().filter(|p| p.link() == link) {
        if let Some(b) = p.bytes() {
            bytes.extend_from_slice(b);
        }
    }
    // Walk the length-prefixed frames of the stream.
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len =
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let Some(frame) = bytes.get(at + 4..at + 4 + len) else {
            break;
        };
        if let Ok(tether::wire::Message::Journal(tether::wire::JournalMessage::Status(s))) =
            tether::wire::Message::decode(Bytes::copy_from_slice(frame))
        {
            if s.status == status {
                return true;
            }
        }
        at += 4 + len;
    }
    false
}

/// An entry by `author` named `r{n}`, as [`append`] makes them.
pub fn entry(author: &str, n: usize) -> Entry {
    Entry::new(author.as_bytes(), format!("r{n}").as_bytes(), b"payload")
}
