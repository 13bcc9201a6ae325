//! Drives an anchored-sync client and server through the driver contract with arbitrary
//! interleavings: deliveries, drops, cuts, timeouts, commands, edits, and injected garbage
//! or forged messages. Nothing may panic, and queues stay bounded.
#![no_main]

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;
use tether::sync::anchored::*;
use tether::wire::{AnchoredMessage, Message};
use tether::{Duration, Input, Instant, Link, Machine, Output};

#[derive(Debug, Arbitrary)]
enum Action {
    Start,
    ToServer,
    ToClient,
    DropToServer,
    DropToClient,
    Cut,
    Advance(u16),
    Server(ServerCommand),
    ClientEdit(u8, Vec<u8>),
    ServerEdit(u8, Vec<u8>),
    GarbageToServer(Vec<u8>),
    GarbageToClient(Vec<u8>),
    ForgedToServer(AnchoredMessage),
    ForgedToClient(AnchoredMessage),
}

#[derive(Debug, Arbitrary)]
struct Plan {
    policy: ConflictPolicy,
    per_message: u8,
    actions: Vec<Action>,
}

fn frame(m: &Message) -> Bytes {
    let mut b = BytesMut::new();
    m.encode_framed(&mut b);
    b.freeze()
}

fn drain<M: Machine>(m: &mut M, to: &mut VecDeque<Bytes>) {
    for _ in 0..10_000 {
        match m.poll_output() {
            Output::Transmit(t) => to.push_back(t.payload),
            Output::Wait(_) => return,
            _ => {}
        }
    }
    panic!("output never drained");
}

fuzz_target!(|plan: Plan| {
    let mut cc = ClientConfig::new(Bytes::from_static(b"c"), Bytes::from_static(b"pw"));
    cc.max_changes_per_message = usize::from(plan.per_message);
    let sc = ServerConfig {
        policy: plan.policy,
        max_changes_per_message: usize::from(plan.per_message),
        ..ServerConfig::default()
    };
    let mut client = Standalone::new(ClientSession::new(cc, MemClientStore::new()));
    let mut server = Standalone::new(ServerSession::new(sc, MemServerStore::new()));
    let mut now = Instant::from_millis(1);
    let mut link_id = 1;
    let mut link = Link::main(link_id);
    let _ = client.handle_input(now, Input::Opened(link));
    let _ = server.handle_input(now, Input::Opened(link));
    let mut to_server = VecDeque::new();
    let mut to_client = VecDeque::new();
    for action in plan.actions {
        match action {
            Action::Start => {
                let _ = client.handle_input(now, Input::Command(ClientCommand::Start));
            }
            Action::ToServer => {
                if let Some(b) = to_server.pop_front() {
                    let _ = server.handle_input(now, Input::Received(link, b));
                }
            }
            Action::ToClient => {
                if let Some(b) = to_client.pop_front() {
                    let _ = client.handle_input(now, Input::Received(link, b));
                }
            }
            Action::DropToServer => {
                to_server.pop_front();
            }
            Action::DropToClient => {
                to_client.pop_front();
            }
            Action::Cut => {
                let _ = client.handle_input(now, Input::Closed(link));
                let _ = server.handle_input(now, Input::Closed(link));
                to_server.clear();
                to_client.clear();
                link_id += 1;
                link = Link::main(link_id);
                let _ = client.handle_input(now, Input::Opened(link));
                let _ = server.handle_input(now, Input::Opened(link));
            }
            Action::Advance(ms) => {
                now = now + Duration::from_millis(u64::from(ms) * 100);
                let _ = client.handle_input(now, Input::Timeout);
                let _ = server.handle_input(now, Input::Timeout);
            }
            Action::Server(cmd) => {
                let _ = server.handle_input(now, Input::Command(cmd));
            }
            Action::ClientEdit(op, data) => {
                let s = client.core_mut().store_mut();
                let id = s.records().keys().nth(usize::from(op / 3)).copied();
                match (op % 3, id) {
                    (1, Some(id)) => {
                        s.replace(id, Bytes::from(data));
                    }
                    (2, Some(id)) => {
                        s.delete(id);
                    }
                    _ => {
                        s.insert(Bytes::from(data));
                    }
                }
            }
            Action::ServerEdit(op, data) => {
                let s = server.core_mut().store_mut();
                let id = s.records().keys().nth(usize::from(op / 3)).copied();
                match (op % 3, id) {
                    (1, Some(id)) => {
                        s.replace(id, Bytes::from(data));
                    }
                    (2, Some(id)) => {
                        s.delete(id);
                    }
                    _ => {
                        s.insert(Bytes::from(data));
                    }
                }
            }
            Action::GarbageToServer(b) => {
                let _ = server.handle_input(now, Input::Received(link, Bytes::from(b)));
            }
            Action::GarbageToClient(b) => {
                let _ = client.handle_input(now, Input::Received(link, Bytes::from(b)));
            }
            Action::ForgedToServer(m) => {
                let m = Message::Anchored(m);
                let _ = server.handle_input(now, Input::Received(link, frame(&m)));
            }
            Action::ForgedToClient(m) => {
                let m = Message::Anchored(m);
                let _ = client.handle_input(now, Input::Received(link, frame(&m)));
            }
        }
        drain(&mut client, &mut to_server);
        drain(&mut server, &mut to_client);
        // Lockstep: a machine never has more than a few messages in flight.
        assert!(to_server.len() < 4096 && to_client.len() < 4096);
        // Drained, so no output is queued: no deadline is in the past of a session's start.
        assert!(matches!(client.poll_output(), Output::Wait(_)));
        assert!(matches!(server.poll_output(), Output::Wait(_)));
    }
});
