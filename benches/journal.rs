//! Journal sync (seed 001) catching up: a client with an empty journal pulls one million
//! missed entries of 64 payload bytes from a server, through sync contexts, in memory.
//!
//! Three contenders, all moving the same entries:
//!
//! - `message_level`: two `JournalSync` cores, each `SyncOutput::Send(Message)` handed
//!   directly to the other's `handle_message` (no encoding): the cost of the protocol and
//!   of the store.
//! - `framed`: two `JournalMachine`s, each `Transmit`'s bytes handed to the other's
//!   `Input::Received`: encoding, framing, decoding, the protocol and the store.
//! - `copy`: a plain copy (`extend_from_slice` into a `Vec` whose capacity is reused) of
//!   every byte the server transmitted in `framed`: the physical limit of moving them.
//! - `chain`: the journal's hash chain folded over the same entries (`LineId::next`), which
//!   a receiver computes twice per entry (the peer's chain, and its own journal's).
//!
//! The server's journal is built once, outside the timed section; each timed run starts a
//! fresh client with an empty journal (the client dropped outside the timed section) and
//! ends when the client holds all 1,000,000 entries.
//!
//! Run: `cargo bench --bench journal` (about a minute and a half). Allocations per entry are
//! printed before criterion's timings; docs/PERFORMANCE.md records both.

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{black_box, Criterion, SamplingMode, Throughput};
use std::time::Duration as StdDuration;
use tether::sync::journal::{
    JournalMachine, JournalStore, JournalSync, MemJournal, Role, SyncConfig, SyncOutput,
};
use tether::wire::Entry;
use tether::{Input, Instant, Link, Machine, Output};

mod support;
use support::alloc::{allocs, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Entries the client missed.
const ENTRIES: u64 = 1_000_000;
/// Payload bytes per entry.
const PAYLOAD: usize = 64;
const LINK: Link = Link::main(1);
const SERVER_EPOCH: u64 = 0x5e5;
const CLIENT_EPOCH: u64 = 0xc1e;

fn config(role: Role) -> SyncConfig {
    SyncConfig {
        // The client asks as soon as it is up (and again while more remain); the server
        // only answers, so that the run measures one direction.
        sync_on_connect: role == Role::Client,
        idle_timeout: None,
        ..SyncConfig::default()
    }
}

/// The server's journal: `ENTRIES` entries, author `"author-1"` (8 bytes), resource id the
/// entry's number (8 bytes), 64 payload bytes. The fields are slices of one buffer, as
/// entries decoded from received frames are.
fn server_journal() -> MemJournal {
    let per = 16 + PAYLOAD;
    let mut buf = BytesMut::with_capacity(ENTRIES as usize * per);
    for i in 0..ENTRIES {
        buf.put_slice(b"author-1");
        buf.put_u64(i);
        buf.put_bytes((i % 251) as u8, PAYLOAD);
    }
    let mut all = buf.freeze();
    let mut j = MemJournal::new(SERVER_EPOCH, ENTRIES as usize);
    for _ in 0..ENTRIES {
        let mut e = all.split_to(per);
        let author = e.split_to(8);
        let resource = e.split_to(8);
        j.append(Entry {
            author,
            resource,
            payload: e,
        })
        .unwrap();
    }
    j
}

fn client_journal() -> MemJournal {
    MemJournal::new(CLIENT_EPOCH, ENTRIES as usize + 1)
}

/// Message level: every message the cores emit goes straight to the other core.
/// Returns the client (dropped by the caller, outside any timed section).
#[inline(never)]
fn catch_up_messages(server: &mut (JournalSync, MemJournal)) -> (JournalSync, MemJournal) {
    let now = Instant::ZERO;
    let (server, server_journal) = server;
    let mut client = JournalSync::new(Role::Client, config(Role::Client));
    let mut journal = client_journal();
    server.connection_up(now, server_journal);
    client.connection_up(now, &journal);
    loop {
        let mut moved = false;
        while let Some(o) = client.poll(&journal) {
            if let SyncOutput::Send(m) = o {
                server.handle_message(now, server_journal, m);
                moved = true;
            }
        }
        while let Some(o) = server.poll(server_journal) {
            if let SyncOutput::Send(m) = o {
                client.handle_message(now, &mut journal, m);
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    server.connection_down(now);
    while server.poll(server_journal).is_some() {}
    (client, journal)
}

/// Framed: the machines' bytes go to the other's `Input::Received`. With `record`, every
/// byte the server transmitted is appended to it (for the copy's input).
#[inline(never)]
fn catch_up_framed(
    server: &mut JournalMachine<MemJournal>,
    mut record: Option<&mut BytesMut>,
) -> JournalMachine<MemJournal> {
    let now = Instant::ZERO;
    let mut client = JournalMachine::new(Role::Client, config(Role::Client), client_journal());
    server.handle_input(now, Input::Opened(LINK)).unwrap();
    client.handle_input(now, Input::Opened(LINK)).unwrap();
    loop {
        let mut moved = false;
        loop {
            match client.poll_output() {
                Output::Transmit(t) => {
                    server
                        .handle_input(now, Input::Received(t.link, t.payload))
                        .unwrap();
                    moved = true;
                }
                Output::Wait(_) => break,
                _ => {}
            }
        }
        loop {
            match server.poll_output() {
                Output::Transmit(t) => {
                    if let Some(r) = record.as_deref_mut() {
                        r.extend_from_slice(&t.payload);
                    }
                    client
                        .handle_input(now, Input::Received(t.link, t.payload))
                        .unwrap();
                    moved = true;
                }
                Output::Wait(_) => break,
                _ => {}
            }
        }
        if !moved {
            break;
        }
    }
    server.handle_input(now, Input::Closed(LINK)).unwrap();
    while !matches!(server.poll_output(), Output::Wait(_)) {}
    client
}

/// The physical limit: the same encoded bytes copied into a buffer whose capacity is
/// reused (no page faults, no allocation in the timed section).
#[inline(never)]
fn copy(src: &[u8], dst: &mut Vec<u8>) {
    dst.clear();
    dst.extend_from_slice(src);
}

fn check(client: &MemJournal) {
    assert_eq!(client.head(), ENTRIES, "the client caught up");
}

/// Allocations per entry for one whole catch-up on each path, and the encoded bytes.
fn count(
    server_msg: &mut (JournalSync, MemJournal),
    server_framed: &mut JournalMachine<MemJournal>,
) -> Bytes {
    let before = allocs();
    let c = catch_up_messages(server_msg);
    let msg_allocs = allocs() - before;
    check(&c.1);
    drop(c);

    let mut wire = BytesMut::with_capacity(ENTRIES as usize * 100);
    let before = allocs();
    let c = catch_up_framed(server_framed, Some(&mut wire));
    let framed_allocs = allocs() - before;
    check(c.store());
    drop(c);
    let n = ENTRIES as f64;
    println!(
        "allocations per entry: message level {:.3}, framed {:.3}; server transmitted {} bytes \
         ({:.1} per entry)",
        msg_allocs as f64 / n,
        framed_allocs as f64 / n,
        wire.len(),
        wire.len() as f64 / n,
    );
    wire.freeze()
}

fn bench(cr: &mut Criterion) {
    let journal = server_journal();
    let mut server_msg = (
        JournalSync::new(Role::Server, config(Role::Server)),
        journal.clone(),
    );
    let mut server_framed = JournalMachine::new(Role::Server, config(Role::Server), journal);
    let wire = count(&mut server_msg, &mut server_framed);

    let mut g = cr.benchmark_group("journal_catch_up_1m");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(StdDuration::from_millis(500))
        .measurement_time(StdDuration::from_secs(5))
        .throughput(Throughput::Elements(ENTRIES));

    g.bench_function("message_level", |b| {
        b.iter_custom(|iters| {
            let mut total = StdDuration::ZERO;
            for _ in 0..iters {
                let start = std::time::Instant::now();
                let c = catch_up_messages(&mut server_msg);
                total += start.elapsed();
                check(&c.1);
                drop(c);
            }
            total
        })
    });

    g.bench_function("framed", |b| {
        b.iter_custom(|iters| {
            let mut total = StdDuration::ZERO;
            for _ in 0..iters {
                let start = std::time::Instant::now();
                let c = catch_up_framed(&mut server_framed, None);
                total += start.elapsed();
                check(c.store());
                drop(c);
            }
            total
        })
    });

    // The hash chain alone: one `LineId::next` per entry, as a receiver folds the peer's
    // chain over a list (and a store chains its own appends): the share of a catch-up
    // that line checks cost.
    let entries: Vec<Entry> = server_msg.1.entries().to_vec();
    g.bench_function("chain", |b| {
        b.iter(|| {
            let start = tether::wire::LineId::start(SERVER_EPOCH);
            black_box(entries.iter().fold(start, |l, e| l.next(e)))
        })
    });

    let mut dst = Vec::with_capacity(wire.len());
    copy(&wire, &mut dst);
    g.bench_function("copy", |b| {
        b.iter(|| {
            copy(&wire, &mut dst);
            black_box(dst.len())
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
