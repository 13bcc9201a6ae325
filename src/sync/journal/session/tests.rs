//! Unit tests of the journal sync core: batches, store failures, duplicates.

use super::*;
use crate::sync::journal::MemJournal;
use crate::wire::Entry;
use alloc::vec;

/// What the recording store saw, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// A batch of this many entries, committed.
    Batch(usize),
    /// A batch refused.
    Failed,
}

/// A store over `MemJournal` that logs each batch and fails the batches named.
#[derive(Debug)]
struct Recording {
    inner: MemJournal,
    log: Vec<Seen>,
    fail: Vec<usize>,
    calls: usize,
}

impl JournalStore for Recording {
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
        self.calls += 1;
        if self.fail.contains(&self.calls) {
            self.log.push(Seen::Failed);
            return Err(StoreError::message("disk on fire"));
        }
        self.inner.append_batch(entries, outcomes)?;
        self.log.push(Seen::Batch(entries.len()));
        Ok(())
    }
    fn resource(&self, author: &[u8], resource: &[u8]) -> Option<Bytes> {
        self.inner.resource(author, resource)
    }
}

/// One end: its sync and the journal it is given.
struct Side<S> {
    sync: JournalSync,
    store: S,
}

impl<S: JournalStore> Side<S> {
    fn up(&mut self, now: Instant) {
        self.sync.connection_up(now, &self.store);
    }
}

fn server(n: u32) -> Side<MemJournal> {
    let mut j = MemJournal::new(9, 10_000);
    for i in 0..n {
        j.append(Entry::new(b"srv", &i.to_be_bytes(), &[0; 64]))
            .unwrap();
    }
    let config = SyncConfig {
        sync_on_connect: false,
        max_entries_per_message: 64,
        ..SyncConfig::default()
    };
    Side {
        sync: JournalSync::new(Role::Server, config),
        store: j,
    }
}

/// Shuttles messages both ways at `now` until both are quiet; returns the client's
/// events, and the store log as it stood when each client `SYNC_OK` was polled.
fn shuttle(
    now: Instant,
    client: &mut Side<Recording>,
    server: &mut Side<MemJournal>,
) -> (Vec<SyncEvent>, Vec<Vec<Seen>>) {
    let (mut events, mut at_ok) = (Vec::new(), Vec::new());
    while client.sync.has_output() || server.sync.has_output() {
        while let Some(out) = client.sync.poll(&client.store) {
            match out {
                SyncOutput::Send(m) => {
                    if matches!(m, Message::SyncOk { .. }) {
                        at_ok.push(client.store.log.clone());
                    }
                    server.sync.handle_message(now, &mut server.store, m);
                }
                SyncOutput::Event(e) => events.push(e),
            }
        }
        while let Some(out) = server.sync.poll(&server.store) {
            if let SyncOutput::Send(m) = out {
                client.sync.handle_message(now, &mut client.store, m);
            }
        }
    }
    (events, at_ok)
}

fn recording_client(fail: Vec<usize>) -> Side<Recording> {
    let store = Recording {
        inner: MemJournal::new(1, 10_000),
        log: Vec::new(),
        fail,
        calls: 0,
    };
    Side {
        sync: JournalSync::new(Role::Client, SyncConfig::default()),
        store,
    }
}

#[test]
fn each_received_list_is_one_batch_committed_before_sync_ok() {
    let (now, mut server, mut client) = (Instant::ZERO, server(200), recording_client(vec![]));
    server.up(now);
    client.up(now);
    let (events, at_ok) = shuttle(now, &mut client, &mut server);
    // 200 entries in lists of 64 (the server's `max_entries_per_message`): four batches,
    // and the one SYNC_OK left after all four were committed.
    let batches = vec![
        Seen::Batch(64),
        Seen::Batch(64),
        Seen::Batch(64),
        Seen::Batch(8),
    ];
    assert_eq!(client.store.log, batches);
    assert_eq!(at_ok, [batches]);
    let applied = events
        .iter()
        .filter(|e| matches!(e, SyncEvent::Applied { .. }))
        .count();
    assert_eq!((applied, client.sync.stats().applied), (200, 200));
    assert_eq!(client.sync.marks().ours, server.store.line(200));
    assert_eq!(server.sync.marks().theirs, server.store.line(200));
}

#[test]
fn a_failed_batch_is_reported_moves_no_mark_and_is_fetched_again() {
    let (now, mut server, mut client) = (Instant::ZERO, server(100), recording_client(vec![2]));
    server.up(now);
    client.up(now);
    let (events, _) = shuttle(now, &mut client, &mut server);
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SyncEvent::StoreFailed { ctx, error } => Some((*ctx, alloc::format!("{error}"))),
            _ => None,
        })
        .collect();
    assert_eq!(
        failed,
        [(
            1,
            alloc::string::String::from("journal store failed: disk on fire")
        )]
    );
    // The first list (64) is in; the second was refused whole; no mark moved.
    assert_eq!(client.store.head(), 64);
    assert_eq!(client.sync.marks().ours, None);
    assert!(events.contains(&SyncEvent::Completed { ctx: 1, mark: None }));
    // After the backoff the client asks again from its mark and gets the rest.
    let later = client.sync.deadline().expect("a retry is scheduled");
    client.sync.handle_timeout(later);
    let (events, _) = shuttle(later, &mut client, &mut server);
    assert_eq!(client.store.head(), 100);
    assert_eq!(client.sync.stats().applied, 100);
    assert_eq!(client.sync.stats().duplicates, 64);
    assert_eq!(client.sync.marks().ours, server.store.line(100));
    assert!(!events
        .iter()
        .any(|e| matches!(e, SyncEvent::StoreFailed { .. })));
}

#[test]
fn appending_a_duplicate_is_a_typed_error() {
    let mut sync = JournalSync::new(Role::Client, SyncConfig::default());
    let mut store = MemJournal::new(1, 10);
    let e = Entry::new(b"me", b"r1", b"x");
    sync.command(Instant::ZERO, &mut store, SyncCommand::Append(e.clone()))
        .unwrap();
    assert_eq!(
        sync.command(Instant::ZERO, &mut store, SyncCommand::Append(e)),
        Err(SyncError::Store(StoreError::Duplicate))
    );
    assert_eq!(store.head(), 1);
}

#[test]
fn refusals_for_a_flood_that_is_not_read_are_bounded() {
    // The peer sends journal requests and never takes what it is sent (its connection
    // holds the sync back, so nothing is polled): the first is being answered, the
    // refusals of the others queued stop at a bound, the rest are dropped and counted.
    let mut s = server(100);
    s.up(Instant::ZERO);
    let flood = 10_000u32;
    let body = crate::wire::JournalRequest {
        since: LineId::start(0),
        limit: None,
        everything: false,
    }
    .to_body();
    for ctx in 1..=flood {
        let m = Message::SyncReq {
            ctx,
            body: body.clone(),
        };
        s.sync.handle_message(Instant::ZERO, &mut s.store, m);
    }
    let bound = s.sync.config.max_entries_per_message + REFUSALS_QUEUED;
    let held = s.sync.out.len();
    assert!(held <= bound, "{held} outputs held");
    let dropped = s.sync.stats().refusals_dropped as usize;
    assert!(
        dropped + bound >= flood as usize,
        "{dropped} dropped, {held} held"
    );
    // What is held is the first context's start and refusals, in order.
    assert!(matches!(
        s.sync.poll(&s.store),
        Some(SyncOutput::Send(Message::SyncStart { ctx: 1 }))
    ));
    assert!(matches!(
        s.sync.poll(&s.store),
        Some(SyncOutput::Send(Message::Refused { ctx: 2, .. }))
    ));
}
