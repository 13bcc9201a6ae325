//! Durable catch-up: a client with an empty journal pulls missed entries of 64 payload
//! bytes from a server (in memory) through journal sync, and stores them:
//!
//! - `mem_1m`: into a `MemJournal` (the in-memory reference), 1,000,000 entries;
//! - `sqlite_full_1m`: into a `SqliteJournal` with `synchronous = FULL`, one transaction
//!   and one fsync per received list (`append_batch`), 1,000,000 entries;
//! - `sqlite_full_lists_of_64_1m`: the same with lists of 64 entries (the server's
//!   `max_entries_per_message` at 64, its default before the store had batches);
//! - `sqlite_normal_1m`: as `sqlite_full_1m` with `synchronous = NORMAL` (fsync at
//!   checkpoints only: survives a killed process, not necessarily a power cut);
//! - `sqlite_full_per_entry_3k`: a `SqliteJournal` (FULL) through the trait's default
//!   `append_batch`, one `append` and so one transaction and one fsync per entry, 3,000
//!   entries (a million would take over an hour).
//!
//! Lists are the size journal sync sends by default (`SyncConfig::default()`: at most
//! `max_entries_per_message` 1,024 entries and `max_list_bytes` 64 KiB; these entries are
//! 86 bytes on the wire, so 762 a list). Message level: each message goes straight to the
//! other side's `handle_message` (no encoding; `benches/journal.rs` of `tether` measures
//! that). Each timed run starts with a fresh, empty database file (created outside the
//! timed section) in cargo's target temp dir, and ends once the client holds every entry
//! and has sent its last `SYNC_OK`.
//!
//! After criterion's figures the bench prints entries per second for each store, measured
//! over the same run, and their ratios.
//!
//! Run: `cargo bench -p tether-sqlite --bench catch_up` (about four minutes, most of it
//! fsyncs). docs/PERFORMANCE.md records the figures.

use bytes::{BufMut, BytesMut};
use criterion::{Criterion, SamplingMode, Throughput};
use std::cell::RefCell;
use std::path::PathBuf;
use std::time::{Duration as StdDuration, Instant as StdInstant};
use tether::sync::journal::{
    JournalStore, JournalSync, MemJournal, Role, StoreError, SyncConfig, SyncOutput,
};
use tether::wire::{Entry, LineId};
use tether::Instant;
use tether_sqlite::{Options, SqliteJournal, Synchronous};

const BIG: u64 = 1_000_000;
const SMALL: u64 = 3_000;
const PAYLOAD: usize = 64;
/// The reference the ratios are given against.
const FULL_PER_LIST: &str = "sqlite FULL, fsync per list";

fn config(role: Role) -> SyncConfig {
    SyncConfig {
        // The client asks as soon as it is up (and again while more remain); the server
        // only answers, so that the run measures one direction.
        sync_on_connect: role == Role::Client,
        idle_timeout: None,
        ..SyncConfig::default()
    }
}

/// `n` entries, author `"author-1"`, resource id the entry's number (8 bytes), 64
/// payload bytes, as slices of one buffer (as decoded entries are).
fn journal(n: u64) -> MemJournal {
    let per = 16 + PAYLOAD;
    let mut buf = BytesMut::with_capacity(n as usize * per);
    for i in 0..n {
        buf.put_slice(b"author-1");
        buf.put_u64(i);
        buf.put_bytes((i % 251) as u8, PAYLOAD);
    }
    let mut all = buf.freeze();
    let mut j = MemJournal::new(0x5e5, n as usize);
    for _ in 0..n {
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

/// One end: its sync and the journal it is given.
struct Node<S> {
    sync: JournalSync,
    store: S,
}

/// A server answering from `journal`, `per_list` entries a list at most.
fn server(journal: MemJournal, per_list: usize) -> Node<MemJournal> {
    let config = SyncConfig {
        max_entries_per_message: per_list,
        ..config(Role::Server)
    };
    Node {
        sync: JournalSync::new(Role::Server, config),
        store: journal,
    }
}

/// A `SqliteJournal` written one entry (one transaction, one fsync) at a time: the
/// trait's default `append_batch`, as a store without a batch hook does.
struct PerEntry(SqliteJournal);

impl JournalStore for PerEntry {
    fn epoch(&self) -> u64 {
        self.0.epoch()
    }
    fn head(&self) -> u64 {
        self.0.head()
    }
    fn entry(&self, seq: u64) -> Option<Entry> {
        self.0.entry(seq)
    }
    fn line(&self, seq: u64) -> Option<LineId> {
        self.0.line(seq)
    }
    fn head_line(&self) -> LineId {
        self.0.head_line()
    }
    fn contains(&self, author: &[u8], resource: &[u8]) -> bool {
        self.0.contains(author, resource)
    }
    fn append(&mut self, entry: Entry) -> Result<LineId, StoreError> {
        self.0.append(entry)
    }
    fn resource(&self, author: &[u8], resource: &[u8]) -> Option<bytes::Bytes> {
        self.0.resource(author, resource)
    }
}

/// Counts the batches (received lists) a store is handed.
struct Counted<S> {
    inner: S,
    batches: u64,
}

impl<S: JournalStore> JournalStore for Counted<S> {
    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }
    fn head(&self) -> u64 {
        self.inner.head()
    }
    fn entry(&self, seq: u64) -> Option<Entry> {
        self.inner.entry(seq)
    }
    fn line(&self, seq: u64) -> Option<LineId> {
        self.inner.line(seq)
    }
    fn head_line(&self) -> LineId {
        self.inner.head_line()
    }
    fn contains(&self, author: &[u8], resource: &[u8]) -> bool {
        self.inner.contains(author, resource)
    }
    fn append(&mut self, entry: Entry) -> Result<LineId, StoreError> {
        self.inner.append(entry)
    }
    fn append_batch(
        &mut self,
        entries: &[Entry],
        outcomes: &mut Vec<Option<LineId>>,
    ) -> Result<(), StoreError> {
        self.batches += 1;
        self.inner.append_batch(entries, outcomes)
    }
    fn resource(&self, author: &[u8], resource: &[u8]) -> Option<bytes::Bytes> {
        self.inner.resource(author, resource)
    }
}

/// Every message straight to the other side until both are quiet; returns the client.
#[inline(never)]
fn catch_up<S: JournalStore>(server: &mut Node<MemJournal>, store: S) -> Node<Counted<S>> {
    let now = Instant::ZERO;
    let store = Counted {
        inner: store,
        batches: 0,
    };
    let mut client = Node {
        sync: JournalSync::new(Role::Client, config(Role::Client)),
        store,
    };
    server.sync.connection_up(now, &server.store);
    client.sync.connection_up(now, &client.store);
    loop {
        let mut moved = false;
        while let Some(o) = client.sync.poll(&client.store) {
            if let SyncOutput::Send(m) = o {
                server.sync.handle_message(now, &mut server.store, m);
                moved = true;
            }
        }
        while let Some(o) = server.sync.poll(&server.store) {
            if let SyncOutput::Send(m) = o {
                client.sync.handle_message(now, &mut client.store, m);
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    server.sync.connection_down(now);
    while server.sync.poll(&server.store).is_some() {}
    client
}

/// A fresh database path (any earlier file of that name removed).
fn fresh_db(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tether-sqlite-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

fn open(name: &str, synchronous: Synchronous) -> SqliteJournal {
    let options = Options {
        synchronous,
        ..Options::default()
    };
    SqliteJournal::open_with(fresh_db(name), options, || 0xc1e).unwrap()
}

/// What each contender measured over the whole run: entries stored, time, batches.
#[derive(Default, Clone, Copy)]
struct Tally {
    entries: u64,
    time: StdDuration,
    batches: u64,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.entries as f64 / self.time.as_secs_f64()
    }
}

thread_local! {
    static TALLIES: RefCell<Vec<(&'static str, Tally)>> = const { RefCell::new(Vec::new()) };
}

fn record(name: &'static str, entries: u64, time: StdDuration, batches: u64) {
    TALLIES.with(|t| {
        let mut t = t.borrow_mut();
        let i = match t.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None => {
                t.push((name, Tally::default()));
                t.len() - 1
            }
        };
        let tally = &mut t[i].1;
        tally.entries += entries;
        tally.time += time;
        tally.batches += batches;
    });
}

/// Times `runs` catch-ups of `server` into fresh stores made by `make` (untimed).
fn run<S: JournalStore>(
    name: &'static str,
    server: &mut Node<MemJournal>,
    expected: u64,
    iters: u64,
    mut make: impl FnMut() -> S,
) -> StdDuration {
    let mut total = StdDuration::ZERO;
    for _ in 0..iters {
        let store = make();
        let start = StdInstant::now();
        let client = catch_up(server, store);
        let took = start.elapsed();
        total += took;
        assert_eq!(client.store.head(), expected, "the client caught up");
        assert_eq!(client.sync.stats().applied, expected);
        record(name, expected, took, client.store.batches);
        drop(client);
    }
    total
}

fn bench(cr: &mut Criterion) {
    let default_list = SyncConfig::default().max_entries_per_message;
    let big_journal = journal(BIG);
    let mut big = server(big_journal.clone(), default_list);
    let mut big_64 = server(big_journal, 64);
    let mut small = server(journal(SMALL), default_list);

    let mut g = cr.benchmark_group("durable_catch_up");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(StdDuration::from_millis(100))
        .measurement_time(StdDuration::from_secs(5));

    g.throughput(Throughput::Elements(BIG));
    g.bench_function("mem_1m", |b| {
        b.iter_custom(|iters| {
            run("mem (MemJournal)", &mut big, BIG, iters, || {
                MemJournal::new(0xc1e, BIG as usize)
            })
        })
    });
    g.bench_function("sqlite_full_1m", |b| {
        b.iter_custom(|iters| {
            run(FULL_PER_LIST, &mut big, BIG, iters, || {
                open("full", Synchronous::Full)
            })
        })
    });
    g.bench_function("sqlite_full_lists_of_64_1m", |b| {
        b.iter_custom(|iters| {
            run("sqlite FULL, lists of 64", &mut big_64, BIG, iters, || {
                open("full_64", Synchronous::Full)
            })
        })
    });
    g.bench_function("sqlite_normal_1m", |b| {
        b.iter_custom(|iters| {
            run("sqlite NORMAL, per list", &mut big, BIG, iters, || {
                open("normal", Synchronous::Normal)
            })
        })
    });
    g.throughput(Throughput::Elements(SMALL));
    g.bench_function("sqlite_full_per_entry_3k", |b| {
        b.iter_custom(|iters| {
            run(
                "sqlite FULL, fsync per entry",
                &mut small,
                SMALL,
                iters,
                || PerEntry(open("full_per_entry", Synchronous::Full)),
            )
        })
    });
    g.finish();

    println!("\nsame run, every timed catch-up (warm-up included), into a fresh store:");
    TALLIES.with(|t| {
        let t = t.borrow();
        let reference = t
            .iter()
            .find(|(n, _)| *n == FULL_PER_LIST)
            .map(|(_, t)| t.rate());
        for (name, tally) in t.iter() {
            let ratio = reference.map_or(String::new(), |r| {
                format!(", {:.3} x FULL per list", tally.rate() / r)
            });
            println!(
                "  {name:<30} {:>8.0} entries/s ({:.2} us/entry, {} entries in {} lists{ratio})",
                tally.rate(),
                1e6 / tally.rate(),
                tally.entries,
                tally.batches,
            );
        }
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
