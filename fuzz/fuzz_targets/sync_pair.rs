//! Two journal-sync machines driven with arbitrary interleavings, cuts, dropped frames,
//! commands and garbage bytes: no panic and bounded output.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;
use tether::sync::journal::{JournalMachine, MemJournal, Role, SyncCommand, SyncConfig};
use tether::wire::Entry;
use tether::{Duration, Input, Instant, Link, Machine, Output};

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

fuzz_target!(|steps: Vec<Step>| {
    let cfg = SyncConfig {
        max_entries_per_message: 3,
        ..SyncConfig::default()
    };
    let mut m = [
        JournalMachine::new(Role::Client, cfg.clone(), MemJournal::new(1, 10_000)),
        JournalMachine::new(Role::Server, cfg, MemJournal::new(2, 10_000)),
    ];
    let mut wire: [VecDeque<Bytes>; 2] = [VecDeque::new(), VecDeque::new()];
    let mut now = Instant::ZERO;
    let mut link = 1u64;
    let mut n_appended = 0u32;
    m_open(&mut m, now, link);
    for step in steps.into_iter().take(500) {
        match step {
            Step::Deliver(s) => deliver(&mut m, &mut wire, now, link, s as usize),
            Step::Drop(s) => {
                wire[s as usize].pop_front();
            }
            Step::Cut => {
                for x in &mut m {
                    let _ = x.handle_input(now, Input::Closed(Link::main(link)));
                }
                wire = [VecDeque::new(), VecDeque::new()];
                link += 1;
                m_open(&mut m, now, link);
            }
            Step::Append(s, k) => {
                n_appended += 1;
                let e = Entry::new(&[s as u8], &n_appended.to_be_bytes(), &[k]);
                let _ = m[s as usize].handle_input(now, Input::Command(SyncCommand::Append(e)));
            }
            Step::Command(s, c) => {
                let _ = m[s as usize].handle_input(now, Input::Command(c));
            }
            Step::Garbage(s, g) => {
                let _ = m[s as usize].handle_input(now, Input::Received(Link::main(link), Bytes::from(g)));
            }
            Step::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms));
                for x in &mut m {
                    let _ = x.handle_input(now, Input::Timeout);
                }
            }
        }
        for i in 0..2 {
            pump(&mut m[i], &mut wire[i]);
            assert!(wire[i].len() < 100_000, "unbounded output");
        }
    }
});

fn m_open(m: &mut [JournalMachine<MemJournal>; 2], now: Instant, link: u64) {
    for x in m.iter_mut() {
        let _ = x.handle_input(now, Input::Opened(Link::main(link)));
    }
}

fn deliver(
    m: &mut [JournalMachine<MemJournal>; 2],
    wire: &mut [VecDeque<Bytes>; 2],
    now: Instant,
    link: u64,
    from: usize,
) {
    if let Some(f) = wire[from].pop_front() {
        let _ = m[1 - from].handle_input(now, Input::Received(Link::main(link), f));
    }
}

fn pump(m: &mut JournalMachine<MemJournal>, wire: &mut VecDeque<Bytes>) {
    loop {
        match m.poll_output() {
            Output::Transmit(t) => wire.push_back(t.payload),
            Output::Wait(_) => return,
            _ => {}
        }
    }
}
