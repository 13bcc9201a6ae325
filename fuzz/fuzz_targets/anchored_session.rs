//! Drives an anchored-sync client and server through the driver contract with arbitrary
//! interleavings: deliveries, drops, cuts, timeouts, commands, edits, and injected garbage
//! or forged messages. Nothing may panic, and queues stay bounded.
#![no_main]

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tether::sync::anchored::*;
use tether::testkit::{Pair, Side};
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

/// An edit of either side's store (their methods are alike): `op / 3` picks a record,
/// `op % 3` replaces it, deletes it, or inserts a new one.
macro_rules! edit {
    ($store:expr, $op:expr, $data:expr) => {{
        let s = $store;
        let id = s.records().keys().nth(usize::from($op / 3)).copied();
        match ($op % 3, id) {
            (1, Some(id)) => {
                s.replace(id, Bytes::from($data));
            }
            (2, Some(id)) => {
                s.delete(id);
            }
            _ => {
                s.insert(Bytes::from($data));
            }
        }
    }};
}

/// The testkit's pair, held: the fuzzer picks which frame moves. Errors are kept (and
/// cleared), events dropped.
type Net = Pair<AnchoredClient<MemClientStore>, AnchoredServer<MemServerStore>>;

/// Frames in flight to `side`.
fn in_flight(net: &Net, side: Side) -> usize {
    net.wire.iter().filter(|p| p.to() == side).count()
}

fuzz_target!(|plan: Plan| {
    let mut cc = ClientConfig::new(Bytes::from_static(b"c"), Bytes::from_static(b"pw"));
    cc.max_changes_per_message = usize::from(plan.per_message);
    let sc = ServerConfig {
        policy: plan.policy,
        max_changes_per_message: usize::from(plan.per_message),
        ..ServerConfig::default()
    };
    let client = Standalone::new(ClientSession::new(cc, MemClientStore::new()));
    let server = Standalone::new(ServerSession::new(sc, MemServerStore::new()));
    let mut net: Net = Pair::new(client, server)
        .at(Instant::from_millis(1))
        .held()
        .without_events();
    let mut link_id = 1;
    let mut link = Link::main(link_id);
    net.open(link);
    for action in plan.actions {
        match action {
            Action::Start => {
                net.client_in(Input::Command(ClientCommand::Start));
            }
            Action::ToServer => {
                if let Some(p) = net.pop_to(Side::Server) {
                    net.deliver(p);
                }
            }
            Action::ToClient => {
                if let Some(p) = net.pop_to(Side::Client) {
                    net.deliver(p);
                }
            }
            Action::DropToServer => {
                net.pop_to(Side::Server);
            }
            Action::DropToClient => {
                net.pop_to(Side::Client);
            }
            Action::Cut => {
                net.cut(link);
                link_id += 1;
                link = Link::main(link_id);
                net.open(link);
            }
            Action::Advance(ms) => {
                net.now += Duration::from_millis(u64::from(ms) * 100);
                net.fire(Side::Client);
                net.fire(Side::Server);
            }
            Action::Server(cmd) => {
                net.server_in(Input::Command(cmd));
            }
            Action::ClientEdit(op, data) => edit!(net.client.core_mut().store_mut(), op, data),
            Action::ServerEdit(op, data) => edit!(net.server.core_mut().store_mut(), op, data),
            Action::GarbageToServer(b) => {
                net.server_in(Input::Received(link, Bytes::from(b)));
            }
            Action::GarbageToClient(b) => {
                net.client_in(Input::Received(link, Bytes::from(b)));
            }
            Action::ForgedToServer(m) => {
                let m = Message::Anchored(m);
                net.server_in(Input::Received(link, frame(&m)));
            }
            Action::ForgedToClient(m) => {
                let m = Message::Anchored(m);
                net.client_in(Input::Received(link, frame(&m)));
            }
        }
        net.pump(); // after the store edits too
        net.client_errors.clear();
        net.server_errors.clear();
        net.closes.clear();
        // Lockstep: a machine never has more than a few messages in flight.
        assert!(in_flight(&net, Side::Server) < 4096 && in_flight(&net, Side::Client) < 4096);
        // Drained, so no output is queued: no deadline is in the past of a session's start.
        assert!(matches!(net.client.poll_output(), Output::Wait(_)));
        assert!(matches!(net.server.poll_output(), Output::Wait(_)));
    }
});
