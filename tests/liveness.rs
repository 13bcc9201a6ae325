//! Liveness of `main` (heartbeat every `keepalive`, dead peer after 1.5 x `keepalive`) under
//! both connection profiles, with a peer that freezes without closing anything.
//!
//! - `a_frozen_server_process_is_noticed_by_silence_and_the_client_resumes_over_loopback`:
//!   token merge over real loopback TCP; the server is another process (this test binary,
//!   run again as `frozen_server_child`) stopped with SIGSTOP and continued with SIGCONT.
//! - `dual_a_{stopped,mute}_{server,client}_*`: the dual-channel profile in the testkit
//!   simulator, with virtual time; either side frozen as a stopped process (inputs wait,
//!   nothing comes out, no timer fires) or as a mute one (it reads, but every byte it
//!   writes is lost), while both applications keep sending on `main`.
//! - `dual_clients_cut_by_a_server_restart_*`: sixteen dual clients cut at the same
//!   instant retry spread over the jitter window (and in lockstep without jitter).
//!
//! Every match on a machine's events (and every command built) is in the helpers right
//! below, so that renaming the event enums touches this file in one place.
#![cfg(feature = "testkit")]

mod liveness_support;
mod loopback_support;

use bytes::Bytes;
use liveness_support::{Freeze, Probe};
use loopback_support::{run_local, Action, Driver, Role};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Duration as StdDuration;
use tether::connect::dual::{self, DualClient, DualServer};
use tether::connect::merge;
use tether::session::SessionConfig;
use tether::testkit::{Either, Faults, NodeId, SeqTokens, Sim};
use tether::wire::Message;
use tether::{Channel, Duration, Instant, Outcome, Token};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant as TokioInstant;

// ---------------------------------------------------------------------------------------
// The machines' vocabulary: every match on an event, every command built.
// ---------------------------------------------------------------------------------------

/// Token merge, client: the transport was lost (RECONNECTING).
fn merge_is_lost(e: &merge::MergeClientEvent) -> bool {
    matches!(e, merge::MergeClientEvent::Down { .. })
}

/// Token merge, client: a handshake or resumption completed.
fn merge_is_up(e: &merge::MergeClientEvent) -> Option<Outcome> {
    match e {
        merge::MergeClientEvent::Up { outcome, .. } => Some(*outcome),
        _ => None,
    }
}

/// Token merge, client: the session ended (and reported what it could not deliver).
fn merge_is_trouble(e: &merge::MergeClientEvent) -> bool {
    matches!(e, merge::MergeClientEvent::Ended { .. })
}

/// Token merge, server: the number of an application message received.
fn merge_server_got(e: &merge::MergeServerEvent) -> Option<u32> {
    match e {
        merge::MergeServerEvent::Message { message, .. } => number(message).map(|x| x.1),
        _ => None,
    }
}

fn merge_send(m: Message) -> merge::MergeClientCommand {
    merge::MergeClientCommand::Send(m)
}

/// Dual, client: `main` was lost (reconnecting).
fn dual_client_is_lost(e: &dual::DualClientEvent) -> bool {
    matches!(e, dual::DualClientEvent::Down { .. })
}

/// Dual, client: connected, fresh or resumed.
fn dual_client_is_up(e: &dual::DualClientEvent) -> Option<Outcome> {
    match e {
        dual::DualClientEvent::Up { outcome, .. } => Some(*outcome),
        _ => None,
    }
}

/// Dual, client: a message received on `main`.
fn dual_client_got(e: &dual::DualClientEvent) -> Option<&Message> {
    match e {
        dual::DualClientEvent::Message { message, .. } => Some(message),
        _ => None,
    }
}

/// Dual, client: the session ended (the client gave up, or a fresh session replaced it).
fn dual_client_is_closed(e: &dual::DualClientEvent) -> bool {
    matches!(e, dual::DualClientEvent::Ended { .. })
}

/// Dual, client: anything that should not happen to a session that only froze.
fn dual_client_is_trouble(e: &dual::DualClientEvent) -> bool {
    matches!(
        e,
        dual::DualClientEvent::Ended { .. }
            | dual::DualClientEvent::Notice(
                dual::DualClientNotice::AttemptFailed { .. } | dual::DualClientNotice::FeedLost
            )
    )
}

/// Dual, server: a player's `main` was lost.
fn dual_server_is_lost(e: &dual::DualServerEvent) -> Option<u16> {
    match e {
        dual::DualServerEvent::Down { session } => Some(*session),
        _ => None,
    }
}

/// Dual, server: a player connected, fresh or resumed.
fn dual_server_is_up(e: &dual::DualServerEvent) -> Option<(u16, Outcome)> {
    match e {
        dual::DualServerEvent::Up { session, outcome } => Some((*session, *outcome)),
        _ => None,
    }
}

/// Dual, server: a message received on a player's `main`.
fn dual_server_got(e: &dual::DualServerEvent) -> Option<&Message> {
    match e {
        dual::DualServerEvent::Message { message, .. } => Some(message),
        _ => None,
    }
}

/// Dual, server: anything that should not happen to a session that only froze.
fn dual_server_is_trouble(e: &dual::DualServerEvent) -> bool {
    matches!(
        e,
        dual::DualServerEvent::Ended { .. }
            | dual::DualServerEvent::Notice(dual::DualServerNotice::FeedLost { .. })
    )
}

fn dual_connect() -> dual::DualClientCommand {
    dual::DualClientCommand::Connect
}

fn dual_send(m: Message) -> dual::DualClientCommand {
    dual::DualClientCommand::Send(m)
}

fn dual_server_send(player: u16, message: Message) -> dual::DualServerCommand {
    dual::DualServerCommand::Send { player, message }
}

/// Dual, server: whether the player is kept, waiting for its client to reconnect `main`.
fn dual_player_waits(server: &DualServer<SeqTokens>, player: u16) -> bool {
    server.player_state(player) == Some(dual::PlayerState::MainLost)
}

fn dual_player_connected(server: &DualServer<SeqTokens>, player: u16) -> bool {
    server.player_state(player) == Some(dual::PlayerState::Connected)
}

fn dual_client_connected(client: &DualClient) -> bool {
    client.state() == dual::DualClientState::Connected
}

// ---------------------------------------------------------------------------------------
// Numbered application messages.
// ---------------------------------------------------------------------------------------

/// Application message `n` from `side` (`b'c'` or `b's'`).
fn app(side: u8, n: u32) -> Message {
    let mut b = vec![side];
    b.extend_from_slice(&n.to_be_bytes());
    Message::App(Bytes::from(b))
}

fn number(m: &Message) -> Option<(u8, u32)> {
    match m {
        Message::App(b) if b.len() == 5 => {
            Some((b[0], u32::from_be_bytes([b[1], b[2], b[3], b[4]])))
        }
        _ => None,
    }
}

fn session(keepalive: Duration) -> SessionConfig {
    SessionConfig {
        keepalive: Some(keepalive),
        ..SessionConfig::default()
    }
}

/// 1.5 x keepalive.
fn dead_after(keepalive: Duration) -> Duration {
    Duration::from_micros(keepalive.as_micros() * 3 / 2)
}

// ---------------------------------------------------------------------------------------
// 1. A real server process, frozen with SIGSTOP, over loopback TCP (token merge).
// ---------------------------------------------------------------------------------------

/// Set in the environment of the server process.
const CHILD_ENV: &str = "TETHER_LIVENESS_SERVER_CHILD";
const LOOP_KEEPALIVE: Duration = Duration::from_millis(300);
/// The driver's timer is late by scheduling alone (a millisecond or so); this is the slack
/// allowed for it, on a loaded machine.
const LOOP_TICK: Duration = Duration::from_millis(50);
/// Messages the client sends, one every 20 ms: before, during and after the freeze.
const LOOP_MESSAGES: u32 = 250;

/// Not a test of its own: the token-merge server process of
/// `a_frozen_server_process_is_noticed_by_silence_and_the_client_resumes_over_loopback`,
/// which runs this test binary again with `CHILD_ENV` set. Without it, it returns at once.
///
/// It prints `LISTENING <port>`, then `GOT <n>` for each application message received,
/// and exits when its stdin closes (the parent is gone) or after 60 s.
#[test]
fn frozen_server_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    std::thread::spawn(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
        std::process::exit(0);
    });
    run_local(StdDuration::from_secs(60), async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("LISTENING {}", listener.local_addr().expect("addr").port());
        let server = merge::MergeServer::new(
            merge::MergeServerConfig {
                handshake_timeout: Duration::from_secs(2),
                resume_grace: Duration::from_secs(60),
                session: session(LOOP_KEEPALIVE),
                ..merge::MergeServerConfig::default()
            },
            SeqTokens::new(7),
        );
        let (_stop_tx, stop) = watch::channel(false);
        let driver = Driver::new(server, Role::Server(listener), TokioInstant::now());
        driver
            .run(stop, None, |_, ev| match merge_server_got(&ev) {
                Some(n) => println!("GOT {n}"),
                None => println!("EVENT {ev:?}"),
            })
            .await;
    });
}

/// Kills the child process however the test ends (SIGKILL works on a stopped process).
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn signal(pid: u32, sig: &str) {
    let status = tokio::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .await
        .expect("kill runs");
    assert!(status.success(), "kill -{sig} {pid}");
}

async fn wait_until(limit: StdDuration, mut done: impl FnMut() -> bool) -> bool {
    let end = TokioInstant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if TokioInstant::now() >= end {
            return false;
        }
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
}

/// What the loopback run saw.
struct LoopRun {
    stopped_at: Instant,
    continued_at: Instant,
    events: Vec<(Instant, merge::MergeClientEvent)>,
    client: Probe<merge::MergeClient>,
    refused_inputs: Vec<String>,
    got: Vec<u32>,
    other_lines: Vec<String>,
}

#[test]
fn a_frozen_server_process_is_noticed_by_silence_and_the_client_resumes_over_loopback() {
    let started = std::time::Instant::now();
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new(exe)
        .args([
            "frozen_server_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the server process starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let pid = child.id();
    let _reaper = Reaper(child);
    let (line_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let port = loop {
        let line = lines
            .recv_timeout(StdDuration::from_secs(10))
            .expect("the server process says where it listens");
        // libtest's "test frozen_server_child ... " may share the line.
        if let Some((_, p)) = line.split_once("LISTENING ") {
            break p.trim().parse::<u16>().expect("a port");
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let run = run_local(StdDuration::from_secs(30), async move {
        let epoch = TokioInstant::now();
        let now = move || Instant::from_micros(epoch.elapsed().as_micros() as u64);
        let client = merge::MergeClient::new(
            now(),
            merge::MergeClientConfig {
                handshake_timeout: Duration::from_millis(500),
                reconnect_initial: Duration::from_millis(100),
                reconnect_max: Duration::from_millis(400),
                jitter_seed: 11,
                give_up_after: Duration::from_secs(60),
                session: session(LOOP_KEEPALIVE),
                ..merge::MergeClientConfig::default()
            },
            Token::new(&[0x42; 16]).expect("16 bytes"),
        )
        .expect("a client");
        let events = Rc::new(RefCell::new(
            Vec::<(Instant, merge::MergeClientEvent)>::new(),
        ));
        let (stop_tx, stop) = watch::channel(false);
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let seen = events.clone();
        let task = tokio::task::spawn_local(
            Driver::new(Probe::new(client), Role::Client(addr), epoch).run(
                stop,
                Some(ctl_rx),
                move |_, ev| seen.borrow_mut().push(ev),
            ),
        );
        let up = wait_until(StdDuration::from_secs(5), || {
            events.borrow().iter().any(|e| merge_is_up(&e.1).is_some())
        })
        .await;
        assert!(up, "the client connected: {:?}", events.borrow());
        let t_up = TokioInstant::now();
        for n in 1..=LOOP_MESSAGES {
            let at = t_up + StdDuration::from_millis(20 * u64::from(n));
            let _ = ctl.send((at, Action::Command(merge_send(app(b'c', n)))));
        }
        // SIGSTOP: the server reads nothing and writes nothing; its sockets stay open and
        // the kernel still takes the client's writes, so only silence can tell.
        tokio::time::sleep_until(t_up + StdDuration::from_secs(1)).await;
        let stopped_at = now();
        signal(pid, "STOP").await;
        let lost = wait_until(StdDuration::from_secs(3), || {
            events
                .borrow()
                .iter()
                .any(|e| e.0 >= stopped_at && merge_is_lost(&e.1))
        })
        .await;
        // Stopped for 2 s, during which the client dials and its attempts time out.
        tokio::time::sleep_until(t_up + StdDuration::from_secs(3)).await;
        let continued_at = now();
        signal(pid, "CONT").await;
        let mut got = Vec::new();
        let mut other_lines = Vec::new();
        let end = TokioInstant::now() + StdDuration::from_secs(10);
        while lost && got.len() < LOOP_MESSAGES as usize && TokioInstant::now() < end {
            while let Ok(line) = lines.try_recv() {
                match line
                    .split_once("GOT ")
                    .map(|(_, n)| n.trim().parse::<u32>())
                {
                    Some(Ok(n)) => got.push(n),
                    _ => other_lines.push(line),
                }
            }
            tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
        let _ = stop_tx.send(true);
        let driver = task.await.expect("the client's driver");
        let events = events.borrow().clone();
        LoopRun {
            stopped_at,
            continued_at,
            events,
            refused_inputs: driver.refused_inputs.clone(),
            client: driver.machine,
            got,
            other_lines,
        }
    });

    let k = LOOP_KEEPALIVE;
    let events = &run.events;
    let context = || format!("events {events:?}\nserver said {:?}", run.other_lines);
    let (lost_at, _) = events
        .iter()
        .find(|e| e.0 >= run.stopped_at && merge_is_lost(&e.1))
        .unwrap_or_else(|| panic!("the client noticed the frozen server\n{}", context()));
    let last_rx = run
        .client
        .last_main_rx_before(*lost_at)
        .expect("bytes arrived before");
    let silence = *lost_at - last_rx;
    let since_stop = *lost_at - run.stopped_at;
    println!(
        "loopback: keepalive {k:?}; lost {since_stop:?} after SIGSTOP, {silence:?} after the \
         last byte received; wall time {:?}",
        started.elapsed()
    );
    assert!(
        silence >= dead_after(k),
        "not before 1.5 x keepalive of silence: {silence:?}\n{}",
        context()
    );
    assert!(
        silence <= dead_after(k) + LOOP_TICK && since_stop <= dead_after(k) + LOOP_TICK,
        "within 1.5 x keepalive + one tick: {silence:?} of silence, {since_stop:?} after SIGSTOP"
    );
    // While stopped, the client dialled (the kernel accepts) and nothing answered.
    let ups: Vec<(Instant, Outcome)> = events
        .iter()
        .filter_map(|e| merge_is_up(&e.1).map(|o| (e.0, o)))
        .collect();
    let dials = run
        .client
        .main_opens_since(*lost_at)
        .into_iter()
        .filter(|&t| t < run.continued_at)
        .count();
    assert!(
        dials >= 1,
        "the client dialled while the server was stopped"
    );
    assert_eq!(
        ups.iter().map(|u| u.1).collect::<Vec<_>>(),
        [Outcome::Fresh, Outcome::Resumed],
        "one fresh session, resumed once: {ups:?}"
    );
    assert!(
        ups[1].0 >= run.continued_at,
        "resumed only once the server was continued: {ups:?}, SIGCONT at {:?}",
        run.continued_at
    );
    assert_eq!(
        events.iter().filter(|e| merge_is_lost(&e.1)).count(),
        1,
        "lost once\n{}",
        context()
    );
    assert!(
        !events.iter().any(|e| merge_is_trouble(&e.1)),
        "nothing ended or undelivered\n{}",
        context()
    );
    assert!(
        run.refused_inputs.is_empty() && run.client.errors.is_empty(),
        "no input refused: {:?}",
        run.refused_inputs
    );
    assert_eq!(
        run.got,
        (1..=LOOP_MESSAGES).collect::<Vec<_>>(),
        "every message exactly once, in order, at the server\n{}",
        context()
    );
}

// ---------------------------------------------------------------------------------------
// 2. Dual channel, simulated: a frozen server, and a frozen client.
// ---------------------------------------------------------------------------------------

type DualNode = Either<Probe<DualClient>, Probe<DualServer<SeqTokens>>>;

const SIM_KEEPALIVE: Duration = Duration::from_secs(2);
/// A network where frames are split mid-way and nothing else goes wrong (1 ms latency).
const CALM: Faults = Faults {
    max_chunk: 11,
    ..Faults::none()
};

/// [`Faults::rough`] without its random cuts of `main` (a cut is not a freeze): 5-25 ms
/// latency, 10 % of the datagrams lost and 5 % duplicated, streams in chunks of 1-7 bytes.
const ROUGH: Faults = Faults {
    cut_per_million: 0,
    ..Faults::rough()
};

/// The simulator fires timers exactly: the slack of "1.5 x keepalive + one tick" after a
/// freeze is the bytes already in flight when it began (one delivery, at most the latency
/// and its jitter), and the microsecond steps of a split stream.
fn sim_tick(faults: Faults) -> Duration {
    faults.latency + faults.jitter + Duration::from_millis(1)
}
const SEND_EVERY: Duration = Duration::from_millis(50);

fn dual_client_config(seed: u64) -> dual::DualClientConfig {
    dual::DualClientConfig {
        reply_timeout: Duration::from_millis(500),
        reconnect: dual::Retry {
            attempts: 100,
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
        },
        // Longer than any freeze here: the test is about `main`'s liveness.
        feed_timeout: Duration::from_secs(30),
        on_feed_lost: dual::FeedLossPolicy::Reinit,
        jitter_seed: seed,
        session: session(SIM_KEEPALIVE),
        ..dual::DualClientConfig::default()
    }
}

fn dual_server_config() -> dual::DualServerConfig {
    dual::DualServerConfig {
        session_timeout: Duration::from_secs(60),
        feed_timeout: Duration::from_secs(30),
        session: session(SIM_KEEPALIVE),
        ..dual::DualServerConfig::default()
    }
}

/// One dual client and its server in the simulator, each behind a [`Probe`].
struct DualPair {
    sim: Sim<DualNode>,
    client: NodeId,
    server: NodeId,
    player: u16,
    client_events: Vec<(Instant, dual::DualClientEvent)>,
    server_events: Vec<(Instant, dual::DualServerEvent)>,
    errors: Vec<String>,
    c_sent: u32,
    s_sent: u32,
}

impl DualPair {
    fn connected(seed: u64, faults: Faults) -> Self {
        let mut sim: Sim<DualNode> = Sim::new(seed, faults);
        let server = sim.add_node(Either::Right(Probe::new(DualServer::new(
            dual_server_config(),
            SeqTokens::new(seed),
        ))));
        let client = sim.add_node(Either::Left(Probe::new(DualClient::new(
            dual_client_config(seed),
        ))));
        sim.route(client, Channel::Main, server);
        sim.route(client, Channel::Feed, server);
        sim.command(client, Either::Left(dual_connect()));
        sim.run_for(Duration::from_secs(2));
        let player = sim
            .node(client)
            .left()
            .and_then(|p| p.inner.player())
            .expect("connected");
        let mut p = DualPair {
            sim,
            client,
            server,
            player,
            client_events: Vec::new(),
            server_events: Vec::new(),
            errors: Vec::new(),
            c_sent: 0,
            s_sent: 0,
        };
        p.collect();
        assert!(
            p.client_events
                .iter()
                .any(|e| dual_client_is_up(&e.1) == Some(Outcome::Fresh)),
            "connected: {:?}",
            p.client_events
        );
        p
    }

    fn client_probe(&mut self) -> &mut Probe<DualClient> {
        self.sim.node_mut(self.client).left_mut().expect("client")
    }

    fn server_probe(&mut self) -> &mut Probe<DualServer<SeqTokens>> {
        self.sim.node_mut(self.server).right_mut().expect("server")
    }

    fn collect(&mut self) {
        for e in self.sim.take_events(self.client) {
            if let Either::Left(e) = e {
                self.client_events.push(e);
            }
        }
        for e in self.sim.take_events(self.server) {
            if let Either::Right(e) = e {
                self.server_events.push(e);
            }
        }
        let (c, s) = (self.client, self.server);
        self.errors.extend(
            self.sim
                .take_errors(c)
                .into_iter()
                .chain(self.sim.take_errors(s))
                .map(|e| format!("{e:?}")),
        );
    }

    /// Both applications send one message every [`SEND_EVERY`] for `d`.
    fn send_for(&mut self, d: Duration) {
        let end = self.sim.now() + d;
        while self.sim.now() < end {
            self.c_sent += 1;
            let m = app(b'c', self.c_sent);
            self.sim.command(self.client, Either::Left(dual_send(m)));
            self.s_sent += 1;
            let m = app(b's', self.s_sent);
            let player = self.player;
            self.sim
                .command(self.server, Either::Right(dual_server_send(player, m)));
            self.sim.run_for(SEND_EVERY);
            self.collect();
        }
    }

    fn freeze(&mut self, node: NodeId, how: Freeze) {
        match self.sim.node_mut(node) {
            Either::Left(p) => p.freeze(how),
            Either::Right(p) => p.freeze(how),
        }
        self.sim.drain_node(node);
    }

    fn thaw(&mut self, node: NodeId) {
        let now = self.sim.local_now(node);
        match self.sim.node_mut(node) {
            Either::Left(p) => p.thaw(now),
            Either::Right(p) => p.thaw(now),
        }
        self.sim.drain_node(node);
        self.collect();
    }

    fn received(&self) -> (Vec<u32>, Vec<u32>) {
        let at_server = self
            .server_events
            .iter()
            .filter_map(|e| dual_server_got(&e.1).and_then(number))
            .map(|(side, n)| {
                assert_eq!(side, b'c');
                n
            })
            .collect();
        let at_client = self
            .client_events
            .iter()
            .filter_map(|e| dual_client_got(&e.1).and_then(number))
            .map(|(side, n)| {
                assert_eq!(side, b's');
                n
            })
            .collect();
        (at_server, at_client)
    }

    fn probe_errors(&mut self) -> Vec<String> {
        let mut errors = self.client_probe().errors.clone();
        errors.extend(self.server_probe().errors.clone());
        errors
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// What a frozen-peer run measured.
#[derive(Debug)]
struct Detection {
    /// From the freeze to the watcher's loss event.
    since_freeze: Duration,
    /// From the last byte the watcher received on `main` to its loss event.
    silence: Duration,
    /// From the thaw to the resumption (on the watcher's side).
    resumed_after_thaw: Duration,
}

/// `frozen` freezes as `how` for `freeze_for` (more than 1.5 x keepalive) while both applications keep sending on
/// `main`; the other side must notice within 1.5 x keepalive + one tick, the session must
/// resume once it thaws, and every message must arrive exactly once, in order.
fn dual_frozen_peer(
    frozen: Side,
    how: Freeze,
    freeze_for: Duration,
    faults: Faults,
    seed: u64,
) -> Detection {
    let tick = sim_tick(faults);
    let mut p = DualPair::connected(seed, faults);
    let player = p.player;
    p.send_for(Duration::from_secs(1));
    let frozen_node = match frozen {
        Side::Client => p.client,
        Side::Server => p.server,
    };
    let frozen_at = p.sim.now();
    p.freeze(frozen_node, how);
    p.send_for(freeze_for);
    let thawed_at = p.sim.now();
    // Just before the thaw: the watcher noticed, and could not resume.
    let lost_at = match frozen {
        Side::Server => p
            .client_events
            .iter()
            .find(|e| e.0 >= frozen_at && dual_client_is_lost(&e.1))
            .map(|e| e.0),
        Side::Client => p
            .server_events
            .iter()
            .find(|e| e.0 >= frozen_at && dual_server_is_lost(&e.1) == Some(player))
            .map(|e| e.0),
    };
    let lost_at = lost_at.unwrap_or_else(|| {
        panic!(
            "{frozen:?} frozen ({how:?}): the other side noticed\nclient {:?}\nserver {:?}",
            p.client_events, p.server_events
        )
    });
    let last_rx = match frozen {
        Side::Server => p.client_probe().last_main_rx_before(lost_at),
        Side::Client => p.server_probe().last_main_rx_before(lost_at),
    }
    .expect("bytes arrived before");
    let detection = Detection {
        since_freeze: lost_at - frozen_at,
        silence: lost_at - last_rx,
        resumed_after_thaw: Duration::ZERO,
    };
    let dead = dead_after(SIM_KEEPALIVE);
    assert!(
        detection.silence >= dead,
        "{frozen:?} frozen ({how:?}): not before 1.5 x keepalive of silence: {detection:?}"
    );
    assert!(
        detection.silence <= dead + tick && detection.since_freeze <= dead + tick,
        "{frozen:?} frozen ({how:?}): within 1.5 x keepalive + one tick: {detection:?}"
    );
    match frozen {
        Side::Server => {
            let redials = p
                .client_probe()
                .main_opens_since(lost_at)
                .into_iter()
                .filter(|&t| t < thawed_at)
                .count();
            assert!(redials >= 2, "{how:?}: the client kept reconnecting `main`");
            assert!(
                !p.client_events
                    .iter()
                    .any(|e| e.0 > lost_at && dual_client_is_up(&e.1).is_some()),
                "{how:?}: no resumption while the server is frozen: {:?}",
                p.client_events
            );
        }
        Side::Client => {
            let server = &p.server_probe().inner;
            assert!(
                dual_player_waits(server, player),
                "{how:?}: the server keeps the player for its client to resume: {:?}",
                server.player_state(player)
            );
            assert!(
                !p.server_events
                    .iter()
                    .any(|e| e.0 > lost_at && dual_server_is_up(&e.1).is_some()),
                "{how:?}: no resumption while the client is frozen: {:?}",
                p.server_events
            );
        }
    }
    p.thaw(frozen_node);
    p.send_for(Duration::from_secs(3));
    p.sim.run_for(Duration::from_secs(10));
    p.collect();

    // Both sides resumed the same session.
    let client_up: Vec<(Instant, Outcome)> = p
        .client_events
        .iter()
        .filter_map(|e| dual_client_is_up(&e.1).map(|o| (e.0, o)))
        .collect();
    // (A mute server resumes each try it reads, unanswered; the last one is what counts.)
    let server_up: Vec<(Instant, u16, Outcome)> = p
        .server_events
        .iter()
        .filter_map(|e| dual_server_is_up(&e.1).map(|(pl, o)| (e.0, pl, o)))
        .collect();
    let resumed_at = client_up
        .iter()
        .find(|u| u.0 >= thawed_at)
        .map(|u| u.0)
        .unwrap_or(Instant::MAX);
    assert_eq!(
        client_up.iter().map(|u| u.1).collect::<Vec<_>>(),
        [Outcome::Fresh, Outcome::Resumed],
        "{frozen:?} frozen ({how:?}): the client resumed once: {client_up:?}"
    );
    assert!(
        resumed_at >= thawed_at,
        "{frozen:?} frozen ({how:?}): resumed after the thaw: {client_up:?}"
    );
    assert!(
        server_up
            .last()
            .is_some_and(|u| u.1 == player && u.2 == Outcome::Resumed && u.0 >= thawed_at),
        "{frozen:?} frozen ({how:?}): the server resumed player {player}: {server_up:?}"
    );
    let client = &p.client_probe().inner;
    assert!(dual_client_connected(client));
    assert_eq!(client.player(), Some(player));
    assert!(dual_player_connected(&p.server_probe().inner, player));
    assert!(
        !p.client_events.iter().any(|e| dual_client_is_trouble(&e.1)),
        "{frozen:?} frozen ({how:?}): {:?}",
        p.client_events
    );
    assert!(
        !p.server_events.iter().any(|e| dual_server_is_trouble(&e.1)),
        "{frozen:?} frozen ({how:?}): {:?}",
        p.server_events
    );
    let mut errors = p.errors.clone();
    errors.extend(p.probe_errors());
    assert!(errors.is_empty(), "no input refused: {errors:?}");

    // Nothing lost, nothing twice, in order, both ways.
    let (at_server, at_client) = p.received();
    assert_eq!(
        at_server,
        (1..=p.c_sent).collect::<Vec<_>>(),
        "{frozen:?} frozen ({how:?}): client to server"
    );
    assert_eq!(
        at_client,
        (1..=p.s_sent).collect::<Vec<_>>(),
        "{frozen:?} frozen ({how:?}): server to client"
    );
    let detection = Detection {
        resumed_after_thaw: resumed_at - thawed_at,
        ..detection
    };
    // At worst the client is waiting out a failed try when the peer thaws: the longest
    // backoff wait (1 s) plus a try's round trip; a try in flight is answered at once.
    assert!(
        detection.resumed_after_thaw <= Duration::from_millis(1_500),
        "{frozen:?} frozen ({how:?}): resumed soon after the thaw: {detection:?}"
    );
    detection
}

#[test]
fn dual_a_stopped_server_is_noticed_in_time_and_main_resumes_losing_nothing() {
    for seed in 0..4 {
        let d = dual_frozen_peer(
            Side::Server,
            Freeze::Stopped,
            Duration::from_secs(8),
            CALM,
            seed,
        );
        println!("dual, server stopped, seed {seed}: {d:?}");
    }
}

#[test]
fn dual_a_mute_server_is_noticed_in_time_and_main_resumes_losing_nothing() {
    for seed in 0..4 {
        let d = dual_frozen_peer(
            Side::Server,
            Freeze::Mute,
            Duration::from_secs(8),
            CALM,
            seed,
        );
        println!("dual, server mute, seed {seed}: {d:?}");
    }
}

#[test]
fn dual_a_stopped_client_is_noticed_by_the_server_which_keeps_its_player() {
    for seed in 0..4 {
        let d = dual_frozen_peer(
            Side::Client,
            Freeze::Stopped,
            Duration::from_secs(8),
            CALM,
            seed,
        );
        println!("dual, client stopped, seed {seed}: {d:?}");
    }
}

#[test]
fn dual_a_mute_client_is_noticed_by_the_server_which_keeps_its_player() {
    for seed in 0..4 {
        let d = dual_frozen_peer(
            Side::Client,
            Freeze::Mute,
            Duration::from_secs(8),
            CALM,
            seed,
        );
        println!("dual, client mute, seed {seed}: {d:?}");
    }
}

/// Both sides, both ways of freezing, freezes of 4 to 12 s starting at every phase of the
/// heartbeat, on a rough network.
#[test]
fn dual_frozen_peers_across_seeds_freeze_lengths_and_a_rough_network() {
    let (mut silence, mut since_freeze) = (Duration::ZERO, Duration::ZERO);
    for seed in 0..8u64 {
        for secs in [4u64, 7, 11] {
            let freeze_for = Duration::from_millis(secs * 1_000 + seed * 137);
            for side in [Side::Server, Side::Client] {
                for how in [Freeze::Stopped, Freeze::Mute] {
                    let d = dual_frozen_peer(side, how, freeze_for, ROUGH, 100 + seed);
                    silence = silence.max(d.silence);
                    since_freeze = since_freeze.max(d.since_freeze);
                }
            }
        }
    }
    println!(
        "dual, rough network: noticed at most {since_freeze:?} after the freeze, after at \
         most {silence:?} of silence"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Dual channel: clients cut by the same server restart spread their retries.
// ---------------------------------------------------------------------------------------

const CLIENTS: usize = 16;
const RECONNECT_INITIAL: Duration = Duration::from_millis(500);

/// Per client, the times (after the cut) at which it asked for a new `main`.
struct Restart {
    redials: Vec<Vec<Duration>>,
    /// Whether every client, refused by the restarted server (it knows no player), started
    /// a fresh session when asked and got one.
    all_fresh_again: bool,
}

/// [`CLIENTS`] dual clients connected to one server, which restarts: every `main` is cut
/// at the same instant, dials fail for 3 s, then a fresh server (no players) answers.
fn server_restart(jitter_percent: u8) -> Restart {
    let mut sim: Sim<DualNode> = Sim::new(99, Faults::none());
    let new_server = || {
        Either::Right(Probe::new(DualServer::new(
            dual_server_config(),
            SeqTokens::new(5),
        )))
    };
    let server = sim.add_node(new_server());
    let clients: Vec<NodeId> = (0..CLIENTS)
        .map(|i| {
            let c = sim.add_node(Either::Left(Probe::new(DualClient::new(
                dual::DualClientConfig {
                    reconnect: dual::Retry {
                        attempts: 10,
                        initial: RECONNECT_INITIAL,
                        max: Duration::from_secs(4),
                    },
                    jitter_percent,
                    jitter_seed: 1_000 + i as u64,
                    ..dual::DualClientConfig::default()
                },
            ))));
            sim.route(c, Channel::Main, server);
            sim.route(c, Channel::Feed, server);
            sim.command(c, Either::Left(dual_connect()));
            c
        })
        .collect();
    sim.run_for(Duration::from_secs(2));
    let up = |sim: &mut Sim<DualNode>, c: NodeId| {
        sim.take_events(c).iter().any(|e| {
            e.left()
                .is_some_and(|e| dual_client_is_up(&e.1) == Some(Outcome::Fresh))
        })
    };
    for &c in &clients {
        assert!(up(&mut sim, c), "client {c:?} connected");
    }
    // The restart: every stream cut now, dials refused while the server is down.
    let cut_at = sim.now();
    for &c in &clients {
        sim.partition(c, server);
    }
    *sim.node_mut(server) = new_server();
    sim.drain_node(server);
    sim.run_for(Duration::from_secs(3));
    sim.heal_all();
    sim.run_for(Duration::from_secs(10));
    // The fresh server knows none of them: each gives up its session; asked to, each
    // connects again, as a fresh session.
    let mut closed = 0;
    for &c in &clients {
        let events = sim.take_events(c);
        if events
            .iter()
            .any(|e| e.left().is_some_and(|e| dual_client_is_closed(&e.1)))
        {
            closed += 1;
            sim.command(c, Either::Left(dual_connect()));
        }
    }
    sim.run_for(Duration::from_secs(10));
    let fresh = clients.iter().filter(|&&c| up(&mut sim, c)).count();
    let redials = clients
        .iter()
        .map(|&c| {
            let probe = sim.node(c).left().expect("client");
            probe
                .main_opens_since(cut_at)
                .into_iter()
                .map(|t| t - cut_at)
                .collect()
        })
        .collect();
    Restart {
        redials,
        all_fresh_again: closed == CLIENTS && fresh == CLIENTS,
    }
}

/// The `n`th (0-based) `main` dial of each client after the cut, in microseconds.
fn nth_redial(r: &Restart, n: usize) -> Vec<u64> {
    r.redials
        .iter()
        .map(|d| d.get(n).expect("enough dials").as_micros())
        .collect()
}

fn spread(v: &[u64]) -> (u64, u64, usize) {
    let lo = *v.iter().min().expect("values");
    let hi = *v.iter().max().expect("values");
    let distinct: BTreeSet<u64> = v.iter().copied().collect();
    (lo, hi, distinct.len())
}

#[test]
fn dual_clients_cut_by_a_server_restart_spread_their_retries_over_the_jitter_window() {
    let r = server_restart(20);
    let first = nth_redial(&r, 0);
    let retry1 = nth_redial(&r, 1);
    let retry2 = nth_redial(&r, 2);
    println!("dual restart, jitter 20 %: first redial after the cut (us) {first:?}");
    println!("dual restart, jitter 20 %: first retry (us) {retry1:?}");
    println!("dual restart, jitter 20 %: second retry (us) {retry2:?}");
    // The first retry waits 500 ms less up to 20 % of it (after the 1 ms failed dial):
    // sixteen seeds cover most of that 100 ms window, nearly all at distinct times.
    let (lo, hi, distinct) = spread(&retry1);
    let base = RECONNECT_INITIAL.as_micros() + 1_000;
    assert!(
        lo >= base - 100_000 && hi <= base,
        "within the jitter share: {retry1:?}"
    );
    assert!(hi - lo >= 50_000, "spread over at least 50 ms: {retry1:?}");
    assert!(distinct >= CLIENTS - 2, "at distinct times: {retry1:?}");
    // The second retry waits 1 s less up to 20 % of it: still spread.
    let waits2: Vec<u64> = retry1.iter().zip(&retry2).map(|(a, b)| b - a).collect();
    let (lo2, hi2, distinct2) = spread(&waits2);
    assert!(
        lo2 >= 800_000 + 1_000 && hi2 <= 1_000_000 + 1_000,
        "the second wait within its jitter share: {waits2:?}"
    );
    assert!(
        hi2 - lo2 >= 100_000 && distinct2 >= CLIENTS - 2,
        "{waits2:?}"
    );
    let (lo_all, hi_all, _) = spread(&retry2);
    assert!(hi_all - lo_all >= 100_000, "{retry2:?}");
    assert!(
        r.all_fresh_again,
        "refused by the fresh server, every client connected again"
    );
}

#[test]
fn dual_clients_cut_by_a_server_restart_retry_in_lockstep_without_jitter() {
    // The control case: the same run without jitter puts every retry at the same instant,
    // which is what the assertions above would catch.
    let r = server_restart(0);
    let retry1 = nth_redial(&r, 1);
    let retry2 = nth_redial(&r, 2);
    println!("dual restart, jitter 0 %: first retry (us) {retry1:?}");
    let base = RECONNECT_INITIAL.as_micros() + 1_000;
    assert_eq!(spread(&retry1), (base, base, 1), "{retry1:?}");
    assert_eq!(spread(&retry2).2, 1, "{retry2:?}");
    assert!(r.all_fresh_again);
}
