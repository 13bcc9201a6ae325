//! Two journal-sync `Peer`s over the token-merge profile, every limit at its default (no
//! small `max_message`, no small lists): the client is an authenticated attacker as well
//! as a peer. Besides its own sync, it sends any message straight through its connection
//! (SYNC_REQ floods, SYNC_OK for lists never sent, resource requests, garbage), holds back
//! or drops what the server sends, cuts and resumes, and lets time pass.
//!
//! Checked: no panic, and the server's output is bounded by what it is sent, not by what
//! it holds. The bytes the server has sent that the client has not taken off the wire are
//! at most its replay buffer (`SessionConfig::default`, 1 MiB: what is sent and not
//! acknowledged), one message past it (1 MiB, the largest), 64 KiB of control traffic, and
//! 4 bytes per byte it received. An answer that is encoded whole, or once per request,
//! exceeds that with a journal of a few hundred KiB and a few hundred requests.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tether::connect::merge::{MergeClient, MergeClientCommand, MergeServer};
use tether::peer::{Peer, PeerCommand};
use tether::sync::journal::{MemJournal, SyncCommand, SyncConfig};
use tether::testkit::{Packet, Pair, Side};
use tether::wire::{Entry, Message};
use tether::{Duration, Input, Instant, Machine, Token};

#[derive(Debug, Arbitrary)]
enum Step {
    /// The next packet to the server (`true`) or to the client.
    Deliver(bool),
    /// Everything on the wire to that side.
    DeliverAll(bool),
    Drop(bool),
    Cut,
    /// An entry of `4 * len` bytes appended by that side.
    Append(bool, u8),
    /// Any message, straight through the client's connection.
    Raw(Message),
    /// A sync command of the client's own sync.
    Command(SyncCommand),
    /// Bytes on the client's transport, to the server.
    Garbage(Vec<u8>),
    Advance(u16),
}

fuzz_target!(|steps: Vec<Step>| {
    let now = Instant::ZERO;
    let Ok(token) = Token::new(b"client-token-16b") else {
        return;
    };
    let Ok(conn) = MergeClient::new(now, Default::default(), token) else {
        return;
    };
    let mut n = 0u8;
    let tokens = move || {
        n = n.wrapping_add(1);
        Token::new(&[n; 16]).expect("16 bytes")
    };
    let client = Peer::new(conn, SyncConfig::default(), MemJournal::new(1, 100_000));
    let server = Peer::new(
        MergeServer::new(Default::default(), tokens),
        SyncConfig::default(),
        MemJournal::new(2, 100_000),
    );
    let mut net = Pair::new(client, server)
        .at(now)
        .held()
        .granting_opens()
        .without_events();
    net.pump();
    let mut received = 0u64; // bytes the server was given
    let mut appended = 0u32;
    for step in steps.into_iter().take(600) {
        match step {
            Step::Deliver(to_server) => {
                let side = if to_server {
                    Side::Server
                } else {
                    Side::Client
                };
                if let Some(p) = net.pop_to(side) {
                    received += server_bytes(&p);
                    net.deliver(p);
                }
            }
            Step::DeliverAll(to_server) => {
                let side = if to_server {
                    Side::Server
                } else {
                    Side::Client
                };
                for _ in 0..10_000 {
                    let Some(p) = net.pop_to(side) else { break };
                    received += server_bytes(&p);
                    net.deliver(p);
                }
            }
            Step::Drop(to_server) => {
                net.pop_to(if to_server {
                    Side::Server
                } else {
                    Side::Client
                });
            }
            Step::Cut => {
                if let Some(link) = net.client.connection().view().link {
                    net.cut(link);
                }
            }
            Step::Append(to_server, len) => {
                appended += 1;
                let payload = vec![len; 4 * usize::from(len)];
                let e = Entry::new(&[u8::from(to_server)], &appended.to_be_bytes(), &payload);
                if to_server {
                    net.server_in(Input::Command(PeerCommand::Append(e)));
                } else {
                    net.client_in(Input::Command(PeerCommand::Append(e)));
                }
            }
            Step::Raw(message) => {
                let send = MergeClientCommand::Send(message);
                net.client_in(Input::Command(PeerCommand::Connection(send)));
            }
            Step::Command(c) => net.client_in(Input::Command(PeerCommand::Sync((), c))),
            Step::Garbage(bytes) => {
                if let Some(link) = net.client.connection().view().link {
                    received += bytes.len() as u64;
                    net.server_in(Input::Received(link, Bytes::from(bytes)));
                }
            }
            Step::Advance(ms) => {
                net.now += Duration::from_millis(u64::from(ms));
                net.fire(Side::Client);
                net.fire(Side::Server);
            }
        }
        net.client_errors.clear();
        net.server_errors.clear();
        net.closes.clear();
        let unread: u64 = net
            .wire
            .iter()
            .filter(|p| p.to() == Side::Client)
            .filter_map(|p| p.bytes())
            .map(|b| b.len() as u64)
            .sum();
        let bound = (1 << 20) + (1 << 20) + (64 << 10) + 4 * received;
        assert!(
            unread <= bound,
            "the server has {unread} bytes on the wire unread, for {received} received"
        );
        let _ = net.server.poll_timeout();
    }
});

/// The bytes a packet gives the server.
fn server_bytes(p: &Packet) -> u64 {
    match (p.to(), p.bytes()) {
        (Side::Server, Some(b)) => b.len() as u64,
        _ => 0,
    }
}
