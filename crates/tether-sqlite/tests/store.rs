//! `SqliteJournal`: open, append, reopen, batches all or nothing (against a real SQLite
//! failure mid-batch and a process killed mid-transaction), duplicates, epoch and state
//! that persist, and a catch-up through the journal sync machines.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant as StdInstant};
use tether::sync::journal::{
    JournalStore, JournalSync, MemJournal, Role, StoreError, SyncConfig, SyncOutput,
};
use tether::wire::{Entry, LineId};
use tether::Instant;
use tether_sqlite::{Error, Options, SqliteJournal, Synchronous};

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "tether-sqlite-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn db(&self) -> PathBuf {
        self.0.join("journal.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn entry(author: &str, i: u32, payload_len: usize) -> Entry {
    Entry::new(
        author.as_bytes(),
        format!("r{i}").as_bytes(),
        &vec![i as u8; payload_len],
    )
}

fn seqs(outcomes: &[Option<LineId>]) -> Vec<Option<u64>> {
    outcomes.iter().map(|o| o.map(|l| l.seq)).collect()
}

#[test]
fn open_append_reopen_keeps_epoch_lines_and_resources() {
    let dir = TempDir::new("reopen");
    let mut calls = 0;
    let mut j = SqliteJournal::open(dir.db(), || {
        calls += 1;
        0xdead_beef_0000_0001
    })
    .unwrap();
    assert!(j.is_new());
    assert_eq!((j.epoch(), j.head()), (0xdead_beef_0000_0001, 0));
    let mut expect = LineId::start(0xdead_beef_0000_0001);
    for i in 0..10 {
        let line = j.append(entry("a", i, 8)).unwrap();
        expect = expect.next(&entry("a", i, 8));
        assert_eq!(line, expect, "each line is the chain folded so far");
    }
    drop(j);
    assert_eq!(calls, 1);

    let j =
        SqliteJournal::open(dir.db(), || panic!("an existing journal keeps its epoch")).unwrap();
    assert!(!j.is_new());
    assert_eq!((j.epoch(), j.head()), (0xdead_beef_0000_0001, 10));
    assert_eq!(j.head_line(), expect, "the chain survives the restart");
    for i in 0..10 {
        assert_eq!(j.entry(u64::from(i) + 1), Some(entry("a", i, 8)));
        assert!(j.contains(b"a", format!("r{i}").as_bytes()));
    }
    assert_eq!(j.entry(0), None);
    assert_eq!(j.entry(11), None);
    assert_eq!(j.resource(b"a", b"r3").as_deref(), Some(&[3u8; 8][..]));
    assert_eq!(j.resource(b"a", b"nope"), None);
}

/// A `SqliteJournal` can move to another thread (a tokio task), as a `Peer` owning it must.
#[test]
fn the_journal_is_send() {
    fn send<T: Send>() {}
    send::<SqliteJournal>();
}

#[test]
fn an_empty_batch_writes_nothing() {
    let mut j = SqliteJournal::open_in_memory(4).unwrap();
    let mut out = Vec::new();
    j.append_batch(&[], &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(j.head(), 0);
}

#[test]
fn an_epoch_with_the_high_bit_set_round_trips() {
    let dir = TempDir::new("epoch-bits");
    drop(SqliteJournal::open(dir.db(), || u64::MAX - 1).unwrap());
    let j = SqliteJournal::open(dir.db(), || 0).unwrap();
    assert_eq!(j.epoch(), u64::MAX - 1);
}

#[test]
fn a_wiped_file_is_a_new_journal_with_a_new_epoch() {
    let dir = TempDir::new("wiped");
    let mut j = SqliteJournal::open(dir.db(), || 1).unwrap();
    j.append(entry("a", 0, 1)).unwrap();
    drop(j);
    std::fs::remove_file(dir.db()).unwrap();
    let j = SqliteJournal::open(dir.db(), || 2).unwrap();
    assert!(j.is_new());
    assert_eq!((j.epoch(), j.head()), (2, 0));
}

#[test]
fn duplicates_are_typed_and_skipped_in_batches() {
    let dir = TempDir::new("dup");
    let mut j = SqliteJournal::open(dir.db(), || 5).unwrap();
    j.append(entry("a", 1, 4)).unwrap();
    assert_eq!(j.append(entry("a", 1, 9)), Err(StoreError::Duplicate));
    assert_eq!(j.head(), 1);
    assert_eq!(j.resource(b"a", b"r1").as_deref(), Some(&[1u8; 4][..]));

    let list = [
        entry("a", 1, 4),
        entry("a", 2, 4),
        entry("a", 2, 4),
        entry("b", 1, 4),
    ];
    let mut out = Vec::new();
    j.append_batch(&list, &mut out).unwrap();
    assert_eq!(seqs(&out), [None, Some(2), None, Some(3)]);
    assert_eq!(j.head(), 3);
}

/// A real SQLite failure in the middle of a batch (a trigger that aborts on one entry):
/// nothing of the batch, nor of the state staged with it, is written; the state stays
/// staged, and the same batch goes through once the cause is gone.
#[test]
fn a_batch_that_fails_midway_leaves_nothing() {
    let dir = TempDir::new("atomic");
    let mut j = SqliteJournal::open(dir.db(), || 7).unwrap();
    j.append(entry("a", 0, 4)).unwrap();
    let other = rusqlite::Connection::open(dir.db()).unwrap();
    other
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON tether_entries \
             WHEN NEW.resource = CAST('r3' AS BLOB) \
             BEGIN SELECT RAISE(ABORT, 'poisoned entry'); END;",
        )
        .unwrap();

    let list: Vec<Entry> = (1..6).map(|i| entry("a", i, 4)).collect();
    j.stage_state(b"marks".to_vec(), b"after the batch".to_vec());
    let mut out = Vec::new();
    let err = j.append_batch(&list, &mut out).unwrap_err();
    let StoreError::Failed(inner) = &err else {
        panic!("{err:?}")
    };
    assert!(inner.downcast_ref::<Error>().is_some(), "{inner}");
    assert!(err.to_string().contains("poisoned entry"), "{err}");
    assert!(out.is_empty());
    assert_eq!(j.head(), 1);
    assert!(j.has_staged_state());
    drop(j);

    // Nothing of it on disk, seen from a fresh open.
    let mut j = SqliteJournal::open(dir.db(), || 0).unwrap();
    assert_eq!(j.head(), 1);
    assert!(!j.contains(b"a", b"r1") && !j.contains(b"a", b"r2"));
    assert_eq!(j.get_state(b"marks").unwrap(), None);

    other.execute_batch("DROP TRIGGER poison").unwrap();
    j.append_batch_with_state(&list, &mut out, &[(b"marks", b"after the batch")])
        .unwrap();
    assert_eq!(seqs(&out), (2..7).map(Some).collect::<Vec<_>>());
    drop(j);
    let j = SqliteJournal::open(dir.db(), || 0).unwrap();
    assert_eq!(j.head(), 6);
    assert_eq!(
        j.get_state(b"marks").unwrap().as_deref(),
        Some(&b"after the batch"[..])
    );
}

/// Another connection holds the write lock: the batch fails with SQLite's own error
/// (busy) as `StoreError::Failed`, and nothing is written.
#[test]
fn a_locked_database_is_a_typed_failure() {
    let dir = TempDir::new("busy");
    let options = Options {
        busy_timeout: Duration::from_millis(10),
        ..Options::default()
    };
    let mut j = SqliteJournal::open_with(dir.db(), options, || 1).unwrap();
    let other = rusqlite::Connection::open(dir.db()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut out = Vec::new();
    let err = j.append_batch(&[entry("a", 1, 1)], &mut out).unwrap_err();
    let StoreError::Failed(inner) = &err else {
        panic!("{err:?}")
    };
    assert!(matches!(
        inner.downcast_ref::<Error>(),
        Some(Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)))
            if f.code == rusqlite::ErrorCode::DatabaseBusy
    ));
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(j.head(), 0);
    j.append_batch(&[entry("a", 1, 1)], &mut out).unwrap();
    assert_eq!(j.head(), 1);
}

#[test]
fn a_batch_past_max_entries_appends_nothing() {
    let dir = TempDir::new("full");
    let options = Options {
        max_entries: Some(3),
        ..Options::default()
    };
    let mut j = SqliteJournal::open_with(dir.db(), options.clone(), || 1).unwrap();
    j.append(entry("a", 0, 1)).unwrap();
    let list: Vec<Entry> = (1..4).map(|i| entry("a", i, 1)).collect();
    let mut out = Vec::new();
    assert_eq!(j.append_batch(&list, &mut out), Err(StoreError::Full(3)));
    assert!(out.is_empty());
    assert_eq!(j.head(), 1);
    j.append_batch(&list[..2], &mut out).unwrap();
    assert_eq!(j.head(), 3);
    assert_eq!(j.append(entry("a", 9, 1)), Err(StoreError::Full(3)));
    // A duplicate is still a duplicate when full.
    assert_eq!(j.append(entry("a", 0, 1)), Err(StoreError::Duplicate));
}

#[test]
fn state_is_kept_staged_overlaid_and_persisted() {
    let dir = TempDir::new("state");
    let mut j = SqliteJournal::open(dir.db(), || 1).unwrap();
    assert_eq!(j.get_state(b"k").unwrap(), None);
    j.put_state(b"k", b"v1").unwrap();
    j.stage_state(b"k".to_vec(), b"v2".to_vec());
    j.stage_state(b"gone".to_vec(), b"x".to_vec());
    j.stage_remove_state(b"gone".to_vec());
    // Staged values answer reads before they are written.
    assert_eq!(j.get_state(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    drop(j); // staged, never written: lost with the handle, as a crash would lose it

    let mut j = SqliteJournal::open(dir.db(), || 1).unwrap();
    assert_eq!(j.get_state(b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    // Written with the next append (one transaction).
    j.stage_state(b"k".to_vec(), b"v3".to_vec());
    j.append(entry("a", 1, 1)).unwrap();
    assert!(!j.has_staged_state());
    // A duplicate append still commits the staged state.
    j.stage_state(b"other".to_vec(), b"y".to_vec());
    assert_eq!(j.append(entry("a", 1, 1)), Err(StoreError::Duplicate));
    j.put_state(b"bin\0key", &[0, 255, 0]).unwrap();
    j.remove_state(b"absent").unwrap();
    drop(j);

    let mut j = SqliteJournal::open(dir.db(), || 1).unwrap();
    assert_eq!(j.get_state(b"k").unwrap().as_deref(), Some(&b"v3"[..]));
    assert_eq!(j.get_state(b"other").unwrap().as_deref(), Some(&b"y"[..]));
    assert_eq!(
        j.get_state(b"bin\0key").unwrap().as_deref(),
        Some(&[0, 255, 0][..])
    );
    j.remove_state(b"k").unwrap();
    j.commit_state().unwrap();
    assert_eq!(j.get_state(b"k").unwrap(), None);
}

#[test]
fn states_with_a_prefix_are_listed_in_order_staged_overlaid() {
    let dir = TempDir::new("prefix");
    let mut j = SqliteJournal::open(dir.db(), || 1).unwrap();
    j.put_state(b"session/b", b"2").unwrap();
    j.put_state(b"session/a", b"1").unwrap();
    j.put_state(b"session/c", b"3").unwrap();
    j.put_state(b"session0", b"not under the prefix").unwrap();
    j.put_state(b"sessio", b"shorter").unwrap();
    j.put_state(&[0xff, 0xff, 1], b"high").unwrap();
    // Staged: one replaced, one removed, one added; all answered before being written.
    j.stage_state(b"session/a".to_vec(), b"1'".to_vec());
    j.stage_remove_state(b"session/b".to_vec());
    j.stage_state(b"session/d".to_vec(), b"4".to_vec());
    let listed = |j: &SqliteJournal, prefix: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
        j.states_with_prefix(prefix).unwrap().into_iter().collect()
    };
    let want = vec![
        (b"session/a".to_vec(), b"1'".to_vec()),
        (b"session/c".to_vec(), b"3".to_vec()),
        (b"session/d".to_vec(), b"4".to_vec()),
    ];
    assert_eq!(listed(&j, b"session/"), want);
    j.commit_state().unwrap();
    drop(j);
    let j = SqliteJournal::open(dir.db(), || unreachable!()).unwrap();
    assert_eq!(listed(&j, b"session/"), want);
    // A prefix of 0xff bytes has no successor: the scan is open-ended.
    assert_eq!(
        listed(&j, &[0xff, 0xff]),
        vec![(vec![0xff, 0xff, 1], b"high".to_vec())]
    );
    assert_eq!(listed(&j, b"").len(), 6);
    assert!(listed(&j, b"nothing").is_empty());
}

#[test]
fn deleted_resources_answer_none_and_keep_their_line() {
    let dir = TempDir::new("delete");
    let mut j = SqliteJournal::open(dir.db(), || 1).unwrap();
    j.append(entry("a", 1, 3)).unwrap();
    assert!(j.delete(b"a", b"r1").unwrap());
    assert!(!j.delete(b"a", b"r2").unwrap());
    assert_eq!(j.resource(b"a", b"r1"), None);
    assert!(j.contains(b"a", b"r1"));
    assert_eq!(j.head(), 1);
}

#[test]
fn a_database_of_another_format_is_refused() {
    let dir = TempDir::new("format");
    let c = rusqlite::Connection::open(dir.db()).unwrap();
    c.pragma_update(None, "user_version", 42).unwrap();
    drop(c);
    assert!(matches!(
        SqliteJournal::open(dir.db(), || 1),
        Err(Error::Format(42))
    ));
}

#[test]
fn normal_synchronous_and_in_memory_journals_work_alike() {
    let dir = TempDir::new("normal");
    let options = Options {
        synchronous: Synchronous::Normal,
        ..Options::default()
    };
    let mut j = SqliteJournal::open_with(dir.db(), options, || 3).unwrap();
    let mut m = SqliteJournal::open_in_memory(3).unwrap();
    for s in [&mut j, &mut m] {
        let mut out = Vec::new();
        s.append_batch(&[entry("a", 1, 1), entry("a", 2, 1)], &mut out)
            .unwrap();
        assert_eq!((s.epoch(), s.head()), (3, 2));
    }
}

/// A client on SQLite catches up 1,000 entries from a server in memory through the
/// journal sync machines (one batch per list), then the file alone has them all.
#[test]
fn a_catch_up_through_journal_sync_is_durable() {
    let dir = TempDir::new("catchup");
    let mut server_j = MemJournal::new(77, 10_000);
    for i in 0..1_000 {
        server_j.append(entry("srv", i, 64)).unwrap();
    }
    let answer_only = SyncConfig {
        sync_on_connect: false,
        ..SyncConfig::default()
    };
    let mut server = JournalSync::new(Role::Server, answer_only);
    let mut store = SqliteJournal::open(dir.db(), || 1).unwrap();
    let mut client = JournalSync::new(Role::Client, SyncConfig::default());
    let now = Instant::ZERO;
    server.connection_up(now, &server_j);
    client.connection_up(now, &store);
    while client.has_output() || server.has_output() {
        while let Some(out) = client.poll(&store) {
            if let SyncOutput::Send(m) = out {
                server.handle_message(now, &mut server_j, m);
            }
        }
        while let Some(out) = server.poll(&server_j) {
            if let SyncOutput::Send(m) = out {
                client.handle_message(now, &mut store, m);
            }
        }
    }
    assert_eq!(client.stats().applied, 1_000);
    assert_eq!(client.marks().ours, server_j.line(1_000));
    drop(store);
    let j = SqliteJournal::open(dir.db(), || 0).unwrap();
    assert_eq!(j.head(), 1_000);
    assert!((0..1_000).all(|i| j.contains(b"srv", format!("r{i}").as_bytes())));
}

// ---- A process killed (SIGKILL) in the middle of a batch's transaction. ----

const CHILD_ENV: &str = "TETHER_SQLITE_CRASH_CHILD_DB";
const BIG: u32 = 100_000;

/// Not a test of its own: the child process of `a_kill_mid_batch_leaves_no_partial_batch`
/// (it does nothing unless the environment names a database).
#[test]
fn crash_child() {
    let Some(db) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut j = SqliteJournal::open(Path::new(&db), || unreachable!()).unwrap();
    let list: Vec<Entry> = (0..BIG).map(|i| entry("big", i, 500)).collect();
    j.stage_state(b"marks".to_vec(), b"covering the big batch".to_vec());
    println!("batch starts");
    let mut out = Vec::new();
    j.append_batch(&list, &mut out).unwrap();
    println!("batch committed");
    // Wait to be killed: the parent decides when.
    std::thread::sleep(Duration::from_secs(60));
}

/// A batch of 100,000 entries (50 MB) spills its pages into the write-ahead log long
/// before it commits; the child is killed with SIGKILL once the log has grown well past
/// what the journal had. Reopened, the journal has all of the batch or none of it (none,
/// unless the kill came after the commit), and the state staged with it likewise.
#[test]
fn a_kill_mid_batch_leaves_no_partial_batch() {
    let dir = TempDir::new("kill");
    let mut j = SqliteJournal::open(dir.db(), || 11).unwrap();
    let mut out = Vec::new();
    let before: Vec<Entry> = (0..10).map(|i| entry("a", i, 8)).collect();
    j.append_batch(&before, &mut out).unwrap();
    drop(j); // closed cleanly: the log is checkpointed and removed

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.db())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let wal = dir.0.join("journal.db-wal");
    let deadline = StdInstant::now() + Duration::from_secs(60);
    let mut killed_mid_batch = false;
    while StdInstant::now() < deadline {
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 8 << 20) {
            killed_mid_batch = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no rollback, no checkpoint
    child.wait().unwrap();

    let j = SqliteJournal::open(dir.db(), || unreachable!()).unwrap();
    let head = j.head();
    assert!(
        head == 10 || head == 10 + u64::from(BIG),
        "partial batch: head {head}"
    );
    let state = j.get_state(b"marks").unwrap();
    assert_eq!(
        state.is_some(),
        head > 10,
        "state and entries commit together"
    );
    assert!((0..10).all(|i| j.contains(b"a", format!("r{i}").as_bytes())));
    // The log held uncommitted frames when the kill came (the batch was not done).
    assert!(
        killed_mid_batch,
        "the batch ended before the log grew: nothing was tested"
    );
    assert_eq!(head, 10, "killed before the commit, yet the batch is there");
}

/// A file of the first format (no hash chain) opens: each line gets the check the chain
/// gives it, as if it had been appended by this version.
#[test]
fn a_format_1_file_gains_its_hash_chain() {
    let dir = TempDir::new("format1");
    {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute_batch(
            "CREATE TABLE tether_meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) \
                 WITHOUT ROWID;
             CREATE TABLE tether_entries (seq INTEGER PRIMARY KEY, author BLOB NOT NULL, \
                 resource BLOB NOT NULL, payload BLOB NOT NULL, \
                 deleted INTEGER NOT NULL DEFAULT 0, UNIQUE (author, resource));
             CREATE TABLE tether_state (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL) \
                 WITHOUT ROWID;
             INSERT INTO tether_meta VALUES ('epoch', 42);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        for i in 0..5u32 {
            let e = entry("old", i, 4);
            conn.execute(
                "INSERT INTO tether_entries (seq, author, resource, payload) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![i64::from(i) + 1, &e.author[..], &e.resource[..], &e.payload[..]],
            )
            .unwrap();
        }
    }
    let mut j = SqliteJournal::open(dir.db(), || panic!("not a new journal")).unwrap();
    let mut expect = LineId::start(42);
    for i in 0..5u32 {
        expect = expect.next(&entry("old", i, 4));
        assert_eq!(j.line(u64::from(i) + 1), Some(expect));
    }
    assert_eq!(j.head_line(), expect);
    // Appends chain on from the migrated head.
    let next = j.append(entry("new", 0, 4)).unwrap();
    assert_eq!(next, expect.next(&entry("new", 0, 4)));
}
