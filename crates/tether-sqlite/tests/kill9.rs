//! Continuity across SIGKILL, with real processes: a token-merge server and three clients
//! (`tether-node`, each with its SQLite file) append continuously while the server and
//! the clients are killed with SIGKILL at seeded random moments and started again from
//! their files. Then appending stops, the journals converge, and the files are checked:
//!
//! - every entry a node was told was appended (`appended ID`, printed once the append
//!   returned) is in its own file: an acknowledged append survives kill -9;
//! - a node's own entries are exactly `0..own`: its ids never collide across restarts;
//! - every journal holds the same entries, exactly the union of all nodes' own entries, no
//!   (author, resource) twice;
//! - no node, across all its incarnations, applied a line twice (or its own line);
//! - sessions resumed across restarts (of the server, and of a client);
//! - no node refused an input.
//!
//! What is checked is deterministic; only where the kills land in the nodes' work depends
//! on timing (the schedule itself is seeded: `TETHER_KILL9_SEED`). Loopback only, bounded
//! (under 60 s; about 10 s). Figures: `cargo test -p tether-sqlite --test kill9 -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};
use tether::sync::journal::JournalStore;
use tether_sqlite::SqliteJournal;

const NODE: &str = env!("CARGO_BIN_EXE_tether-node");
/// SIGKILLs in all (the server and clients), at least.
const KILLS: usize = 24;
/// The wait between two kills, in milliseconds: `MIN_GAP..MIN_GAP + SPREAD`.
const MIN_GAP: u64 = 120;
const SPREAD: u64 = 420;
/// How often each node appends, in milliseconds (the server appends too).
const CLIENT_EVERY: u64 = 8;
const SERVER_EVERY: u64 = 25;
/// The whole test, at most.
const LIMIT: Duration = Duration::from_secs(55);

/// splitmix64: the test's only randomness, seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One line a node printed: which node, which incarnation (0 first, +1 per restart).
struct Line {
    node: usize,
    life: u32,
    text: String,
}

/// One of the four nodes.
struct Node {
    name: String,
    server: bool,
    db: PathBuf,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    life: u32,
}

/// What the nodes said, gathered line by line.
#[derive(Default)]
struct Seen {
    /// Per node: every `appended ID`, across incarnations (an id twice is a collision).
    appended: Vec<BTreeMap<u64, u32>>,
    /// Per node: `applied AUTHOR ID` counts across incarnations.
    applied: Vec<HashMap<(String, String), u32>>,
    /// Per node and incarnation: ready, and its last `own`/`head` after `stop`.
    ready: Vec<BTreeSet<u32>>,
    stopped: Vec<Option<(u32, u64)>>,
    head: Vec<Option<(u32, u64)>>,
    /// Per node: `up resumed` / `up fresh` in incarnations after the first.
    resumed_after_restart: Vec<u32>,
    fresh_after_restart: Vec<u32>,
    resumed: Vec<u32>,
    /// Every line that is not routine, with its node, for the report.
    notable: Vec<String>,
    errors: Vec<String>,
    /// The last lines of each node (shown when something fails).
    tail: Vec<Vec<String>>,
}

impl Seen {
    fn new(n: usize) -> Seen {
        let mut s = Seen::default();
        s.appended.resize_with(n, Default::default);
        s.applied.resize_with(n, Default::default);
        s.ready.resize_with(n, Default::default);
        s.stopped.resize(n, None);
        s.head.resize(n, None);
        s.resumed_after_restart.resize(n, 0);
        s.fresh_after_restart.resize(n, 0);
        s.resumed.resize(n, 0);
        s.tail.resize_with(n, Default::default);
        s
    }

    fn absorb(&mut self, names: &[String], line: Line) {
        let (i, life) = (line.node, line.life);
        let tail = &mut self.tail[i];
        tail.push(format!("[{life}] {}", line.text));
        if tail.len() > 40 {
            tail.remove(0);
        }
        let words: Vec<&str> = line.text.split_whitespace().collect();
        let num = |s: &str| s.parse::<u64>().ok();
        let field = |w: &str, key: &str| w.strip_prefix(key).and_then(num);
        match words.as_slice() {
            ["appended", id] => {
                if let Some(id) = num(id) {
                    *self.appended[i].entry(id).or_default() += 1;
                }
            }
            ["applied", author, resource] => {
                let key = (author.to_string(), resource.to_string());
                *self.applied[i].entry(key).or_default() += 1;
            }
            ["ready", ..] => {
                self.ready[i].insert(life);
            }
            ["stopped", own, head] => {
                if let (Some(own), Some(head)) = (field(own, "own="), field(head, "head=")) {
                    self.stopped[i] = Some((life, own));
                    self.head[i] = Some((life, head));
                }
            }
            ["head", head] => {
                if let Some(head) = num(head) {
                    self.head[i] = Some((life, head));
                }
            }
            ["up", outcome, ..] => {
                let resumed = *outcome == "resumed";
                if resumed {
                    self.resumed[i] += 1;
                }
                if life > 0 {
                    if resumed {
                        self.resumed_after_restart[i] += 1;
                    } else {
                        self.fresh_after_restart[i] += 1;
                    }
                }
            }
            ["error", ..] => self
                .errors
                .push(format!("{}[{life}]: {}", names[i], line.text)),
            ["down", ..] | ["bye"] => {}
            _ => self
                .notable
                .push(format!("{}[{life}]: {}", names[i], line.text)),
        }
    }
}

/// The nodes, their output, and the clock of the whole test. Kills every child when
/// dropped, so that a failing test leaves no process behind.
struct Cluster {
    nodes: Vec<Node>,
    addr: String,
    seed: u64,
    tx: Sender<Line>,
    rx: Receiver<Line>,
    seen: Seen,
    started: Instant,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Cluster {
    fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let side = if node.server { "server" } else { "client" };
        let every = if node.server {
            SERVER_EVERY
        } else {
            CLIENT_EVERY
        };
        let mut child = Command::new(NODE)
            .arg(side)
            .args(["--db".as_ref(), node.db.as_os_str()])
            .args(["--addr", &self.addr, "--name", &node.name])
            .args(["--seed", &(self.seed ^ i as u64).to_string()])
            .args(["--every", &every.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tether-node starts");
        let life = node.life;
        for out in [
            Box::new(child.stdout.take().expect("piped stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped stderr")),
        ] {
            let tx = self.tx.clone();
            std::thread::spawn(move || {
                for text in BufReader::new(out).lines() {
                    let Ok(text) = text else { break };
                    if tx
                        .send(Line {
                            node: i,
                            life,
                            text,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        node.stdin = child.stdin.take();
        node.child = Some(child);
    }

    /// SIGKILL (`Child::kill` on Unix), reaped, then started again on the same file.
    fn kill_and_restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut c) = node.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reaped");
        }
        node.stdin = None;
        node.life += 1;
        self.spawn(i);
    }

    fn tell(&mut self, what: &str) {
        for node in &mut self.nodes {
            if let Some(stdin) = node.stdin.as_mut() {
                // A node that died already is found out by the checks.
                let _ = writeln!(stdin, "{what}");
                let _ = stdin.flush();
            }
        }
    }

    /// Takes in the nodes' lines for `d`.
    fn pump_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if !self.pump_once(left) {
                break;
            }
        }
    }

    /// One line (waiting at most `d`); false on timeout.
    fn pump_once(&mut self, d: Duration) -> bool {
        match self.rx.recv_timeout(d) {
            Ok(line) => {
                let names = self.names();
                self.seen.absorb(&names, line);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => unreachable!("the cluster holds a sender"),
        }
    }

    /// Takes in lines until `done` holds; panics with the nodes' last lines past `limit`
    /// or the test's overall bound.
    fn wait_until(&mut self, what: &str, limit: Duration, done: impl Fn(&Cluster) -> bool) {
        let end = (Instant::now() + limit).min(self.started + LIMIT);
        while !done(self) {
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                self.fail(&format!("timed out waiting for {what}"));
            };
            self.pump_once(left.min(Duration::from_millis(50)));
        }
    }

    fn fail(&self, why: &str) -> ! {
        let mut report = format!("{why} (seed {:#x})\n", self.seed);
        for (node, tail) in self.nodes.iter().zip(&self.seen.tail) {
            report += &format!("--- {} (life {}), last lines:\n", node.name, node.life);
            for l in tail {
                report += &format!("    {l}\n");
            }
        }
        report += &format!(
            "errors: {:#?}\nnotable: {:#?}\n",
            self.seen.errors, self.seen.notable
        );
        panic!("{report}");
    }
}

/// A port on loopback that was free a moment ago (the server, and every restart of it,
/// listens there: the clients dial a fixed address).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Every (author, resource) in a node's file, in line order (a duplicate would show).
fn journal_keys(db: &Path) -> Vec<(String, String)> {
    let j = SqliteJournal::open(db, || panic!("{} should exist", db.display()))
        .expect("the node's file opens");
    assert!(!j.is_new());
    (1..=j.head())
        .map(|seq| {
            let e = j
                .entry(seq)
                .unwrap_or_else(|| panic!("{}: line {seq} missing", db.display()));
            (
                String::from_utf8_lossy(&e.author).into_owned(),
                String::from_utf8_lossy(&e.resource).into_owned(),
            )
        })
        .collect()
}

#[test]
fn kill_9_the_server_and_clients_at_random_and_lose_nothing() {
    let seed = std::env::var("TETHER_KILL9_SEED")
        .ok()
        .and_then(|s| {
            let s = s.trim();
            match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => s.parse().ok(),
            }
        })
        .unwrap_or(0x6b11_9000_0001);
    let dir = std::env::temp_dir().join(format!("tether-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let names = ["s", "c1", "c2", "c3"];
    let (tx, rx) = mpsc::channel();
    let mut cluster = Cluster {
        nodes: names
            .iter()
            .enumerate()
            .map(|(i, name)| Node {
                name: name.to_string(),
                server: i == 0,
                db: dir.join(format!("{name}.db")),
                child: None,
                stdin: None,
                life: 0,
            })
            .collect(),
        addr: format!("127.0.0.1:{}", free_port()),
        seed,
        tx,
        rx,
        seen: Seen::new(names.len()),
        started: Instant::now(),
    };
    for i in 0..names.len() {
        cluster.spawn(i);
    }
    cluster.wait_until("every node ready", Duration::from_secs(10), |c| {
        c.seen.ready.iter().all(|r| r.contains(&0))
    });

    // Kills at seeded moments: the first two are the server's and a client's, so both
    // kinds are always killed; then the server about one time in three.
    let mut rng = Rng(seed);
    let mut kills = [0usize; 4];
    for k in 0..KILLS {
        cluster.pump_for(Duration::from_millis(MIN_GAP + rng.below(SPREAD)));
        let victim = match k {
            0 => 0,
            1 => 1,
            _ if rng.below(3) == 0 => 0,
            _ => 1 + rng.below(3) as usize,
        };
        cluster.kill_and_restart(victim);
        kills[victim] += 1;
    }
    let kill_phase = cluster.started.elapsed();
    // Every node up again before appending stops (a restarted node counts its own).
    cluster.wait_until(
        "every node ready after the kills",
        Duration::from_secs(10),
        |c| {
            c.nodes
                .iter()
                .zip(&c.seen.ready)
                .all(|(n, r)| r.contains(&n.life))
        },
    );
    cluster.pump_for(Duration::from_millis(300));

    let stop_at = Instant::now();
    cluster.tell("stop");
    cluster.wait_until("every node stopped", Duration::from_secs(10), |c| {
        c.nodes
            .iter()
            .zip(&c.seen.stopped)
            .all(|(n, s)| s.is_some_and(|(life, _)| life == n.life))
    });
    let own: Vec<u64> = cluster
        .seen
        .stopped
        .iter()
        .map(|s| s.expect("stopped").1)
        .collect();
    let total: u64 = own.iter().sum();
    cluster.wait_until("the journals to converge", Duration::from_secs(30), |c| {
        c.nodes
            .iter()
            .zip(&c.seen.head)
            .all(|(n, h)| *h == Some((n.life, total)))
    });
    let converged = stop_at.elapsed();
    cluster.tell("quit");
    for (i, name) in names.iter().enumerate() {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let exited = cluster.nodes[i]
                .child
                .as_mut()
                .map(|c| c.try_wait().expect("try_wait"));
            match exited {
                Some(Some(status)) => {
                    assert!(status.success(), "{name} exited with {status}");
                    cluster.nodes[i].child = None;
                    break;
                }
                Some(None) if Instant::now() < end => cluster.pump_for(Duration::from_millis(10)),
                Some(None) => cluster.fail(&format!("{name} did not quit")),
                None => break,
            }
        }
    }
    cluster.pump_for(Duration::from_millis(50));

    // The files.
    let union: BTreeSet<(String, String)> = names
        .iter()
        .zip(&own)
        .flat_map(|(name, &n)| (0..n).map(move |id| (name.to_string(), id.to_string())))
        .collect();
    let seen = &cluster.seen;
    let mut problems = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let keys = journal_keys(&node.db);
        let set: BTreeSet<(String, String)> = keys.iter().cloned().collect();
        if set.len() != keys.len() {
            problems.push(format!("{}: a line twice in the journal", node.name));
        }
        if set != union {
            let missing: Vec<_> = union.difference(&set).take(5).collect();
            let extra: Vec<_> = set.difference(&union).take(5).collect();
            problems.push(format!(
                "{}: journal is not the union ({} lines, union {}; missing {missing:?}, extra {extra:?})",
                node.name,
                set.len(),
                union.len()
            ));
        }
        // Acknowledged appends survive, and ids never collide across restarts.
        for (&id, &times) in &seen.appended[i] {
            if times > 1 {
                problems.push(format!("{}: id {id} appended {times} times", node.name));
            }
            if id >= own[i] || !set.contains(&(node.name.clone(), id.to_string())) {
                problems.push(format!("{}: acknowledged append {id} lost", node.name));
            }
        }
        // Exactly once, across incarnations.
        for ((author, resource), &times) in &seen.applied[i] {
            if times > 1 || *author == node.name {
                problems.push(format!(
                    "{}: {author}/{resource} applied {times} times",
                    node.name
                ));
            }
            if !set.contains(&(author.clone(), resource.clone())) {
                problems.push(format!(
                    "{}: applied {author}/{resource}, not in its journal",
                    node.name
                ));
            }
        }
    }
    if !seen.errors.is_empty() {
        problems.push(format!("nodes refused inputs: {:#?}", seen.errors));
    }
    // Continuity: a restarted server's sessions are resumed by their clients, and a
    // restarted client resumes its session.
    if seen.resumed_after_restart[0] == 0 {
        problems.push("no client resumed its session on a restarted server".into());
    }
    if seen.resumed_after_restart[1..].iter().sum::<u32>() == 0 {
        problems.push("no restarted client resumed its session".into());
    }
    if !problems.is_empty() {
        cluster.fail(&problems.join("\n"));
    }
    assert!(kills.iter().sum::<usize>() >= 20);
    println!(
        "kill -9: {} kills (server {}, clients {:?}) in {:.1?}; converged {:.1?} after stop; \
         {} entries ({own:?}); whole test {:.1?}",
        kills.iter().sum::<usize>(),
        kills[0],
        &kills[1..],
        kill_phase,
        converged,
        union.len(),
        cluster.started.elapsed()
    );
    println!(
        "sessions: resumed after a restart {:?}, fresh after a restart {:?}, resumed in all {:?}",
        seen.resumed_after_restart, seen.fresh_after_restart, seen.resumed
    );
    // Crossing journal requests are refused (`Pending`) and retried: routine, counted.
    let (pending, other): (Vec<&String>, Vec<&String>) = seen
        .notable
        .iter()
        .partition(|l| l.contains("reason: Pending"));
    println!(
        "sync requests refused as crossing (Pending): {}; other lines: {}",
        pending.len(),
        other.len()
    );
    for l in other.iter().take(30) {
        println!("  {l}");
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
