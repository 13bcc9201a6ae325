//! tether inside WebAssembly.
//!
//! A `no_std` cdylib for `wasm32-unknown-unknown`. Its export `run` plays, entirely inside
//! the WebAssembly instance, what tether is for: two composed peers (a token-merge client
//! and a token-merge registry, each with journal sync on top) in tether's seeded simulator
//! ([`tether::testkit::Sim`], virtual time, no host imports at all):
//!
//! 1. the client connects (fresh session, handshake in tether's encoding);
//! 2. both sides append entries and start syncing;
//! 3. the transport is cut in the middle of the sync;
//! 4. both sides append more while it is down;
//! 5. the client reconnects and resumes the session, and the journals finish syncing.
//!
//! `run` returns [`Report::packed`]; `applied` returns how many entries each side applied
//! (from the other). `wasm/run.js` checks both against the only right answers.
//!
//! Build with `/work/shared/tools/wasm-build wasm --release`, run with `node wasm/run.js`.
#![no_std]
// `#[no_mangle]` counts as unsafe code (two exports of one name would clash at link time);
// it is allowed on the three exports only, and nothing else here is unsafe.
#![deny(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use tether::connect::merge::{
    self, MergeClient, MergeClientEvent, MergeServer, MergeServerEvent, Outcome, TokenSource,
};
use tether::peer::{Peer, PeerCommand, PeerEvent};
use tether::sync::journal::{MemJournal, SyncConfig, SyncEvent};
use tether::testkit::{Either, Faults, NodeId, Sim};
use tether::wire::Entry;
use tether::{Channel, Duration, Token};

#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// Any panic (there should be none) traps: `run` then throws in JavaScript.
#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

type Journal = MemJournal;
type ClientPeer = Peer<MergeClient, Journal>;
type ServerPeer = Peer<MergeServer<Tokens>, Journal>;
type Node = Either<ClientPeer, ServerPeer>;
type NodeEvent =
    Either<<ClientPeer as tether::Machine>::Event, <ServerPeer as tether::Machine>::Event>;

/// Entries each side appends before the cut.
pub const BEFORE_CUT: usize = 50;
/// Entries each side appends while the transport is down.
pub const WHILE_DOWN: usize = 10;

/// The server's tokens: a deterministic stand-in for the host's randomness.
struct Tokens(u64);

impl TokenSource for Tokens {
    fn next_token(&mut self) -> Token {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.0.to_be_bytes());
        b[8..].copy_from_slice(&(!self.0).to_be_bytes());
        Token::new(&b).expect("16 bytes make a valid token")
    }
}

/// What the run saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The client connected fresh exactly once.
    pub fresh_once: bool,
    /// The client saw its transport lost (the cut) at least once.
    pub lost: bool,
    /// The client resumed its session exactly once, and the server reported a resumption.
    pub resumed_once: bool,
    /// Both journals hold the same (author, resource) keys.
    pub journals_equal: bool,
    /// Entries in the client's journal.
    pub client_entries: u32,
    /// Entries in the server's journal.
    pub server_entries: u32,
    /// MergeServer entries applied on the client (each exactly once, else 0).
    pub client_applied: u32,
    /// MergeClient entries applied on the server (each exactly once, else 0).
    pub server_applied: u32,
}

impl Report {
    /// `flags << 28 | client_entries << 14 | server_entries`, flags being fresh (1), lost
    /// (2), resumed (4), journals equal (8). Counts are capped at 14 bits.
    pub fn packed(&self) -> u32 {
        let flags = u32::from(self.fresh_once)
            | u32::from(self.lost) << 1
            | u32::from(self.resumed_once) << 2
            | u32::from(self.journals_equal) << 3;
        flags << 28 | self.client_entries.min(0x3fff) << 14 | self.server_entries.min(0x3fff)
    }
}

static APPLIED: AtomicU32 = AtomicU32::new(0);
static APPLIED_BEFORE_CUT: AtomicU32 = AtomicU32::new(0);

/// Runs the whole scenario and returns [`Report::packed`].
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn run() -> u32 {
    let report = scenario(7);
    APPLIED.store(
        report.client_applied.min(0xffff) << 16 | report.server_applied.min(0xffff),
        Ordering::Relaxed,
    );
    report.packed()
}

/// After [`run`]: `client_applied << 16 | server_applied`.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn applied() -> u32 {
    APPLIED.load(Ordering::Relaxed)
}

/// After [`run`]: server entries the client had applied when the transport was cut
/// (between 1 and [`BEFORE_CUT`] - 1: the cut fell in the middle of the sync).
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn applied_before_cut() -> u32 {
    APPLIED_BEFORE_CUT.load(Ordering::Relaxed)
}

/// The scenario, with the simulator seeded by `seed`.
pub fn scenario(seed: u64) -> Report {
    let mut sim: Sim<Node> = Sim::new(seed, Faults::none());
    let sync = SyncConfig {
        idle_timeout: None,
        // Small lists, so that the sync takes several messages and the cut falls inside it.
        max_entries_per_message: 8,
        ..SyncConfig::default()
    };
    let server = sim.add_node(Either::Right(Peer::new(
        MergeServer::new(
            merge::MergeServerConfig {
                resume_grace: Duration::from_secs(3600),
                ..Default::default()
            },
            Tokens(seed),
        ),
        sync.clone(),
        MemJournal::new(1, 10_000),
    )));
    let local = match Token::new(&[b'c'; 16]) {
        Ok(t) => t,
        Err(_) => return Report::default(),
    };
    let client = match MergeClient::new(
        sim.now(),
        merge::MergeClientConfig {
            jitter_seed: seed,
            ..Default::default()
        },
        local,
    ) {
        Ok(c) => c,
        Err(_) => return Report::default(),
    };
    let client = sim.add_node(Either::Left(Peer::new(
        client,
        sync,
        MemJournal::new(2, 10_000),
    )));
    sim.route(client, Channel::Main, server);

    // 1. Connect.
    sim.run_for(Duration::from_secs(2));
    let mut client_events = sim.take_events(client);
    let mut server_events = sim.take_events(server);

    // 2. Append on both sides; step until the client has applied some, not all.
    for i in 0..BEFORE_CUT {
        append(&mut sim, client, "client", i);
        append(&mut sim, server, "server", i);
    }
    let limit = sim.now() + Duration::from_secs(5);
    while applied_counts(&client_events).is_empty() && sim.step_before(limit) {
        client_events.extend(sim.take_events(client));
    }
    APPLIED_BEFORE_CUT.store(
        applied_counts(&client_events).len() as u32,
        Ordering::Relaxed,
    );

    // 3. Cut the transport mid-sync. 4. Append while it is down.
    sim.cut(client, Channel::Main);
    for i in BEFORE_CUT..BEFORE_CUT + WHILE_DOWN {
        append(&mut sim, client, "client", i);
        append(&mut sim, server, "server", i);
    }

    // 5. Reconnect (1 s backoff), resume, finish syncing.
    sim.run_for(Duration::from_secs(30));
    client_events.extend(sim.take_events(client));
    server_events.extend(sim.take_events(server));

    let count = |events: &[NodeEvent], pred: fn(&NodeEvent) -> bool| {
        events.iter().filter(|e| pred(e)).count()
    };
    let fresh = count(&client_events, |e| {
        matches!(
            e,
            Either::Left(PeerEvent::Connection(MergeClientEvent::Up {
                session: (),
                outcome: Outcome::Fresh
            }))
        )
    });
    let lost = count(&client_events, |e| {
        matches!(
            e,
            Either::Left(PeerEvent::Connection(MergeClientEvent::Down {
                session: ()
            }))
        )
    });
    let resumed = count(&client_events, |e| {
        matches!(
            e,
            Either::Left(PeerEvent::Connection(MergeClientEvent::Up {
                session: (),
                outcome: Outcome::Resumed
            }))
        )
    });
    let server_resumed = count(&server_events, |e| {
        matches!(
            e,
            Either::Right(PeerEvent::Connection(MergeServerEvent::Up {
                outcome: Outcome::Resumed,
                ..
            }))
        )
    });
    let client_keys = keys(&sim, client);
    let server_keys = keys(&sim, server);
    Report {
        fresh_once: fresh == 1,
        lost: lost >= 1,
        resumed_once: resumed == 1 && server_resumed == 1,
        journals_equal: client_keys == server_keys,
        client_entries: client_keys.len() as u32,
        server_entries: server_keys.len() as u32,
        client_applied: exactly_once(&client_events),
        server_applied: exactly_once(&server_events),
    }
}

fn append(sim: &mut Sim<Node>, id: NodeId, author: &str, n: usize) {
    let entry = Entry::new(author.as_bytes(), format!("r{n}").as_bytes(), b"payload");
    let cmd = match sim.node(id) {
        Either::Left(_) => Either::Left(PeerCommand::Append(entry)),
        Either::Right(_) => Either::Right(PeerCommand::Append(entry)),
    };
    sim.command(id, cmd);
}

fn keys(sim: &Sim<Node>, id: NodeId) -> Vec<(bytes::Bytes, bytes::Bytes)> {
    let set = match sim.node(id) {
        Either::Left(p) => p.store().keys(),
        Either::Right(p) => p.store().keys(),
    };
    set.into_iter().collect()
}

/// How many times each (author, resource) was applied from the peer.
fn applied_counts(events: &[NodeEvent]) -> alloc::collections::BTreeMap<(Vec<u8>, Vec<u8>), u32> {
    let mut counts = alloc::collections::BTreeMap::new();
    for e in events {
        let s = match e {
            Either::Left(PeerEvent::Sync(_, s)) | Either::Right(PeerEvent::Sync(_, s)) => s,
            _ => continue,
        };
        if let SyncEvent::Applied {
            author, resource, ..
        } = s
        {
            *counts
                .entry((author.to_vec(), resource.to_vec()))
                .or_insert(0) += 1;
        }
    }
    counts
}

/// How many distinct entries were applied, or 0 if any was applied twice.
fn exactly_once(events: &[NodeEvent]) -> u32 {
    let counts = applied_counts(events);
    if counts.values().all(|&n| n == 1) {
        counts.len() as u32
    } else {
        0
    }
}
