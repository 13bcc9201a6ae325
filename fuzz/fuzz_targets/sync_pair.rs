//! Two journal-sync machines driven with arbitrary interleavings, cuts, dropped frames,
//! commands and garbage bytes: no panic and bounded output.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tether::sync::journal::{JournalMachine, MemJournal, Role, SyncCommand, SyncConfig};
use tether::testkit::{Pair, Side};
use tether::wire::Entry;
use tether::{Duration, Input, Link};

#[derive(Debug, Arbitrary)]
enum Step {
    Deliver(bool),
    Drop(bool),
    Cut,
    Append(bool, u8),
    Command(bool, SyncCommand),
    Garbage(bool, Vec<u8>),
    Advance(u16),
}

type M = JournalMachine<MemJournal>;

/// Side `false` is the client (role and pair alike), `true` the server.
fn side(s: bool) -> Side {
    if s {
        Side::Server
    } else {
        Side::Client
    }
}

/// An input to the machine of side `s`.
fn give(net: &mut Pair<M, M>, s: bool, input: Input<SyncCommand>) {
    if s {
        net.server_in(input);
    } else {
        net.client_in(input);
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let cfg = SyncConfig {
        max_entries_per_message: 3,
        ..SyncConfig::default()
    };
    // The testkit's pair, held: the fuzzer picks which frame moves. Errors are kept (and
    // cleared), events dropped.
    let mut net = Pair::new(
        JournalMachine::new(Role::Client, cfg.clone(), MemJournal::new(1, 10_000)),
        JournalMachine::new(Role::Server, cfg, MemJournal::new(2, 10_000)),
    )
    .held()
    .without_events();
    let mut link = 1u64;
    let mut n_appended = 0u32;
    net.open(Link::main(link));
    for step in steps.into_iter().take(500) {
        match step {
            // A frame from side `s` to the other.
            Step::Deliver(s) => {
                if let Some(p) = net.pop_to(side(!s)) {
                    net.deliver(p);
                }
            }
            Step::Drop(s) => {
                net.pop_to(side(!s));
            }
            Step::Cut => {
                net.cut(Link::main(link));
                link += 1;
                net.open(Link::main(link));
            }
            Step::Append(s, k) => {
                n_appended += 1;
                let e = Entry::new(&[s as u8], &n_appended.to_be_bytes(), &[k]);
                give(&mut net, s, Input::Command(SyncCommand::Append(e)));
            }
            Step::Command(s, c) => give(&mut net, s, Input::Command(c)),
            Step::Garbage(s, g) => give(
                &mut net,
                s,
                Input::Received(Link::main(link), Bytes::from(g)),
            ),
            Step::Advance(ms) => {
                net.now += Duration::from_millis(u64::from(ms));
                net.fire(Side::Client);
                net.fire(Side::Server);
            }
        }
        net.client_errors.clear();
        net.server_errors.clear();
        net.closes.clear();
        for s in [Side::Client, Side::Server] {
            let in_flight = net.wire.iter().filter(|p| p.to() != s).count();
            assert!(in_flight < 100_000, "unbounded output");
        }
    }
});
