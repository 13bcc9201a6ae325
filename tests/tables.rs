//! Transition tables as data (issue 7, part 7): docs/PROTOCOL.md against the code.
//!
//! 1. Every machine's table, rendered by `tether::tables`, appears verbatim in
//!    docs/PROTOCOL.md. If it does not, the test fails and prints the new table; run with
//!    `TETHER_BLESS=1` to write it into the document (the old rendering is replaced; a
//!    missing one is inserted at the end of its section).
//! 2. The sequence diagrams of docs/PROTOCOL.md are replayed through the tables (the
//!    dual-channel ones of section 4 through both the client's and the server's): each
//!    diagram's arrows are parsed (message names in order, with their direction), mapped
//!    to the table's inputs for one side, and run through the table from the diagram's
//!    first state. Every message that moves the machine must be a row of the table (the
//!    replay keeps the set of states the table allows, as some machines decide on data
//!    the table does not show), every state the diagram names on that side's column must
//!    be one the table allows at that point, and the replay must end in the diagram's last
//!    state.

use std::collections::BTreeSet;
use tether::tables::{self, Table};

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");

fn doc() -> String {
    std::fs::read_to_string(DOC_PATH).expect("docs/PROTOCOL.md")
}

/// Where each table lives in the document: at the end of this section.
fn section_of(table: &Table) -> &'static str {
    match table.machine {
        "dual::client" => "### 4.9 The client's states",
        "dual::server player" => "### 4.10 The server's player states",
        "merge::node" => "### 5.1 States",
        "sync::context" => "### 6.1 Markers (seed 000)",
        "sync::anchored client" | "sync::anchored server" => "### 7.2 A session",
        other => panic!("no section for {other}"),
    }
}

/// Whether a line is a Markdown heading (`#1 C->S ...` in a trace is not).
fn is_heading(line: &str) -> bool {
    line.starts_with('#') && line.trim_start_matches('#').starts_with(' ')
}

/// The lines of the section starting at `heading`, up to the next heading of any level.
fn section<'a>(doc: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != heading);
    assert!(
        lines.next().is_some(),
        "no section {heading:?} in PROTOCOL.md"
    );
    lines.take_while(|l| !is_heading(l)).collect()
}

/// Replaces (or inserts) a table's rendering in the document text.
fn bless(doc: &str, table: &Table) -> String {
    let rendered = table.to_markdown();
    let caption = rendered.lines().next().unwrap_or_default();
    let lines: Vec<&str> = doc.lines().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    let mut done = false;
    let mut in_section = false;
    while i < lines.len() {
        let l = lines[i];
        if l == caption {
            // Skip the old rendering: caption, blank line, table rows.
            i += 2;
            while i < lines.len() && lines[i].starts_with('|') {
                i += 1;
            }
            out.extend(rendered.lines().map(String::from));
            done = true;
            continue;
        }
        if is_heading(l) {
            if in_section && !done {
                out.extend(rendered.lines().map(String::from));
                out.push(String::new());
                done = true;
            }
            in_section = l.trim_end() == section_of(table);
        }
        out.push(l.to_string());
        i += 1;
    }
    if !done {
        out.push(String::new());
        out.extend(rendered.lines().map(String::from));
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

#[test]
fn every_table_appears_verbatim_in_protocol_md() {
    let mut text = doc();
    let mut stale = Vec::new();
    for table in tables::all() {
        assert!(!table.rows.is_empty(), "{} has no rows", table.machine);
        let rendered = table.to_markdown();
        let in_section = section(&text, section_of(&table)).join("\n");
        if !in_section.contains(rendered.trim_end()) {
            stale.push(table.machine);
            println!(
                "--- {} (section {}):\n{rendered}",
                table.machine,
                section_of(&table)
            );
            text = bless(&text, &table);
        }
    }
    if !stale.is_empty() && std::env::var_os("TETHER_BLESS").is_some() {
        std::fs::write(DOC_PATH, &text).expect("write docs/PROTOCOL.md");
        println!("wrote {DOC_PATH}");
        return;
    }
    assert!(
        stale.is_empty(),
        "docs/PROTOCOL.md is out of step with the code for {stale:?} (new tables printed \
         above; run with TETHER_BLESS=1 to write them)"
    );
}

#[test]
fn rendering_is_one_line_per_row_and_names_the_source() {
    for table in tables::all() {
        let md = table.to_markdown();
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| `")).collect();
        assert_eq!(rows.len(), table.rows.len(), "{}", table.machine);
        assert!(md.contains(table.source));
        for (line, row) in rows.iter().zip(&table.rows) {
            assert_eq!(
                *line,
                format!("| `{}` | `{}` | `{}` |", row.from, row.input, row.to)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Diagrams.

/// Who sent a message, as drawn: the left column (client, requester) or the right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    LeftToRight,
    RightToLeft,
}

/// One thing a diagram shows happening, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// A message (its name as drawn, whether the line says `final`).
    Msg {
        name: String,
        dir: Dir,
        last: bool,
    },
    /// The state the diagram names for the replayed side at this point.
    State(String),
    /// The transport went down / came up.
    Down,
    Up,
}

/// The fenced code blocks of a section.
fn diagrams(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<String>> = None;
    for l in section(doc, heading) {
        if l.trim_start().starts_with("```") {
            match cur.take() {
                Some(block) => out.push(block),
                None => cur = Some(Vec::new()),
            }
        } else if let Some(block) = cur.as_mut() {
            block.push(l.to_string());
        }
    }
    out
}

fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

fn arrow(line: &str) -> Option<Dir> {
    if line.contains("<-") {
        Some(Dir::RightToLeft)
    } else if line.contains("->") {
        Some(Dir::LeftToRight)
    } else {
        None
    }
}

/// A line that starts with an arrow between the first two columns (`|------>|`, perhaps
/// with notes after it): it gives its direction to the messages named on the lines just
/// before it.
fn leading_arrow(line: &str) -> Option<Dir> {
    let t = line.trim_start().strip_prefix('|')?;
    let segment = t.split('|').next().unwrap_or_default();
    let only_arrow = segment.contains('-') && segment.chars().all(|c| matches!(c, '-' | '<' | '>'));
    only_arrow.then(|| arrow(segment)).flatten()
}

/// Parses a diagram: messages from `vocabulary` (with aliases) on arrow lines, or on the
/// lines before a bare arrow; states from `states` at the start of the text left of
/// `column` (the replayed side's column); transport down / up.
fn parse(
    block: &[String],
    vocabulary: &[(&str, &str)],
    states: &[&str],
    column: usize,
) -> Vec<Item> {
    let mut items = Vec::new();
    let mut waiting: Vec<(String, bool)> = Vec::new();
    for line in block {
        if let Some(dir) = leading_arrow(line) {
            for (name, last) in waiting.drain(..) {
                items.push(Item::Msg { name, dir, last });
            }
            continue;
        }
        let left: String = line.chars().take(column).collect();
        let left = left.trim_start_matches([' ', '|']);
        let before_arrow = left.split("--").next().unwrap_or_default();
        if let Some(first) = words(before_arrow).next() {
            if states.contains(&first) {
                items.push(Item::State(first.to_string()));
            }
        }
        if line.contains("transport down") {
            items.push(Item::Down);
        }
        if line.contains("transport up") {
            items.push(Item::Up);
        }
        let last = words(line).any(|w| w == "final");
        let names: Vec<String> = words(line)
            .filter_map(|w| {
                vocabulary
                    .iter()
                    .find(|(drawn, _)| *drawn == w)
                    .map(|(_, name)| name.to_string())
            })
            .collect();
        match arrow(line) {
            Some(dir) if !line.contains("transport") => {
                for name in names {
                    items.push(Item::Msg { name, dir, last });
                }
            }
            _ => waiting.extend(names.into_iter().map(|n| (n, last))),
        }
    }
    items
}

/// Replays `items` through `table` from `start`; `inputs` maps a message to the table
/// inputs it may be for the replayed side (none: it does not move that side). Returns the
/// states the table allows at the end.
fn replay(
    what: &str,
    table: &Table,
    start: &str,
    items: &[Item],
    inputs: &dyn Fn(&str, Dir, bool) -> Vec<&'static str>,
    state_name: &dyn Fn(&str) -> String,
) -> BTreeSet<String> {
    let mut now: BTreeSet<String> = [start.to_string()].into();
    let mut steps = 0;
    for item in items {
        let kinds: Vec<&str> = match item {
            Item::Msg { name, dir, last } => inputs(name, *dir, *last),
            Item::Down => vec!["Down"],
            Item::Up => vec!["Up"],
            Item::State(s) => {
                let s = state_name(s);
                assert!(
                    now.contains(&s),
                    "{what}: the diagram says {s} where the table allows {now:?}"
                );
                now = [s].into();
                continue;
            }
        };
        if kinds.is_empty() {
            continue;
        }
        let next: BTreeSet<String> = now
            .iter()
            .flat_map(|s| kinds.iter().flat_map(move |k| table.next(s, k)))
            .map(String::from)
            .collect();
        assert!(
            !next.is_empty(),
            "{what}: {item:?} (inputs {kinds:?}) is no row of {} from {now:?}",
            table.machine
        );
        now = next;
        steps += 1;
    }
    assert!(steps > 0, "{what}: nothing replayed (diagram not parsed?)");
    now
}

/// The last state a diagram names for the replayed side, if any.
fn last_named(items: &[Item]) -> Option<&str> {
    items.iter().rev().find_map(|i| match i {
        Item::State(s) => Some(s.as_str()),
        _ => None,
    })
}

fn ends_in(what: &str, end: &BTreeSet<String>, expected: &str) {
    assert!(
        end.contains(expected),
        "{what}: the replay ends in {end:?}, the diagram in {expected}"
    );
}

// Token-merge: the client's column.

const MERGE_MESSAGES: &[(&str, &str)] = &[
    ("TOKEN", "TOKEN"),
    ("RESUME", "RESUME"),
    ("DISCONNECT", "DISCONNECT"),
    ("CONN_FAILED", "CONN_FAILED"),
];
const MERGE_STATES: &[&str] = &[
    "OPEN",
    "PRECONNECTED",
    "CONNECTED",
    "RECONNECTING",
    "DISCONNECTED",
];

/// `PRECONNECTED` as drawn is `Preconnected` in the table.
fn merge_state(drawn: &str) -> String {
    let mut s = drawn.to_ascii_lowercase();
    s[..1].make_ascii_uppercase();
    s
}

fn replay_merge_client(heading: &str, index: usize, start: &str) {
    let what = format!("{heading}, diagram {}", index + 1);
    let blocks = diagrams(&doc(), heading);
    let block = blocks
        .get(index)
        .unwrap_or_else(|| panic!("{what}: missing"));
    let items = parse(block, MERGE_MESSAGES, MERGE_STATES, 42);
    let sent_first = std::cell::Cell::new(false);
    let inputs = |name: &str, dir: Dir, _last: bool| -> Vec<&'static str> {
        match (dir, name) {
            // The client sends its first token (or RESUME) when the transport opens.
            (Dir::LeftToRight, "TOKEN" | "RESUME") if !sent_first.get() => {
                sent_first.set(true);
                vec!["Opened"]
            }
            (Dir::LeftToRight, "TOKEN") => vec![],
            (_, "DISCONNECT") => vec!["FormalDisconnect"],
            (Dir::RightToLeft, "TOKEN") => vec!["RemoteToken", "Confirmed"],
            (Dir::RightToLeft, "RESUME") => vec!["Resumed"],
            (Dir::RightToLeft, "CONN_FAILED") => vec!["TransportLost", "HandshakeFailed"],
            other => panic!("{what}: unexpected {other:?}"),
        }
    };
    let end = replay(
        &what,
        &tables::merge_node(),
        start,
        &items,
        &inputs,
        &merge_state,
    );
    let last = last_named(&items).unwrap_or_else(|| panic!("{what}: names no client state"));
    ends_in(&what, &end, &merge_state(last));
}

#[test]
fn merge_connect_diagram_follows_the_node_table() {
    replay_merge_client("### 5.3 Connect", 0, "Open");
}

#[test]
fn merge_resume_diagrams_follow_the_node_table() {
    // Accepted, takeover, forgotten (fresh session from the old token), diverged (ended,
    // then fresh).
    for i in 0..4 {
        replay_merge_client("### 5.4 Resume", i, "Reconnecting");
    }
}

#[test]
fn merge_disconnect_diagram_follows_the_node_table() {
    replay_merge_client("### 5.5 Formal disconnection", 0, "Connected");
}

// Sync contexts: both columns (requester on the left, replier on the right).

const CONTEXT_MESSAGES: &[(&str, &str)] = &[
    ("SYNC_REQ", "SYNC_REQ"),
    ("SYNC_START", "SYNC_START"),
    ("START", "SYNC_START"),
    ("SYNC_END", "SYNC_END"),
    ("END", "SYNC_END"),
    ("SYNC_OK", "SYNC_OK"),
    ("REFUSED", "REFUSED"),
];

fn context_inputs(side: Dir) -> impl Fn(&str, Dir, bool) -> Vec<&'static str> {
    move |name, dir, _| {
        let mine = dir == side;
        match (name, mine) {
            ("SYNC_REQ", true) => vec!["SendRequest"],
            ("SYNC_REQ", false) => vec![
                "PeerRequestAccepted",
                "PeerRequestRefusedByPolicy",
                "PeerRequestWhilePending",
            ],
            ("SYNC_START", true) => vec![],
            ("SYNC_START", false) => vec!["PeerStart"],
            ("SYNC_END", true) => vec!["SendEnd"],
            ("SYNC_END", false) => vec!["PeerEnd"],
            ("SYNC_OK", true) => vec![],
            ("SYNC_OK", false) => vec!["PeerOk"],
            ("REFUSED", true) => vec![],
            ("REFUSED", false) => vec!["PeerRefused"],
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn replay_context(heading: &str, index: usize, requester_end: &str, replier_end: &str) {
    let what = format!("{heading}, diagram {}", index + 1);
    let blocks = diagrams(&doc(), heading);
    let block = blocks
        .get(index)
        .unwrap_or_else(|| panic!("{what}: missing"));
    let items = parse(block, CONTEXT_MESSAGES, &[], 0);
    let table = tables::sync_context();
    let same = |s: &str| s.to_string();
    for (side, expected, who) in [
        (Dir::LeftToRight, requester_end, "requester"),
        (Dir::RightToLeft, replier_end, "replier"),
    ] {
        let what = format!("{what} ({who})");
        let end = replay(&what, &table, "Idle", &items, &context_inputs(side), &same);
        ends_in(&what, &end, expected);
    }
}

#[test]
fn context_diagrams_follow_the_context_table() {
    // Diagram 1 of seed 000: a whole context.
    replay_context("### 6.1 Markers (seed 000)", 0, "Idle", "Idle");
    // Since/limit: the second request is under way when the diagram stops.
    replay_context(
        "### 6.4 Journal sync with since/limit, over several contexts",
        0,
        "Requesting",
        "Replying",
    );
    // A cut mid-context, and the resend.
    replay_context(
        "### 6.5 A cut mid-context, and the resend",
        0,
        "Idle",
        "Idle",
    );
}

// Anchored sync: the client's column of the first session diagram.

const ANCHORED_MESSAGES: &[(&str, &str)] = &[
    ("HELLO", "HELLO"),
    ("AUTH_REQ", "AUTH_REQ"),
    ("CREDENTIALS", "CREDENTIALS"),
    ("ANCHOR_REQ", "ANCHOR_REQ"),
    ("ANCHORS", "ANCHORS"),
    ("ALERT", "ALERT"),
    ("CHANGES", "CHANGES"),
    ("STATUSES", "STATUSES"),
    ("MAP", "MAP"),
    ("MAP_ACK", "MAP_ACK"),
    ("STATUS", "STATUS"),
];

#[test]
fn anchored_first_session_diagram_follows_the_client_table() {
    let heading = "### 7.2 A session";
    let what = format!("{heading}, diagram 1 (client)");
    let blocks = diagrams(&doc(), heading);
    let items = parse(&blocks[0], ANCHORED_MESSAGES, &[], 0);
    let inputs = |name: &str, dir: Dir, last: bool| -> Vec<&'static str> {
        if dir == Dir::LeftToRight {
            return match name {
                "HELLO" => vec!["Start"],
                _ => vec![],
            };
        }
        match (name, last) {
            ("AUTH_REQ", _) => vec!["AuthRequest"],
            ("ANCHOR_REQ", _) => vec!["AnchorRequest"],
            ("ALERT", _) => vec!["Alert"],
            ("STATUSES", _) => vec!["Statuses", "FinalStatuses"],
            ("CHANGES", true) => vec!["FinalChanges"],
            ("CHANGES", false) => vec!["Changes"],
            ("MAP_ACK", true) => vec!["FinalMapAck"],
            ("MAP_ACK", false) => vec!["MapAck"],
            ("STATUS", _) => vec!["Status"],
            other => panic!("{what}: unexpected {other:?}"),
        }
    };
    let names: Vec<&str> = items
        .iter()
        .filter_map(|i| match i {
            Item::Msg { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        names,
        [
            "HELLO",
            "AUTH_REQ",
            "CREDENTIALS",
            "ALERT",
            "CHANGES",
            "STATUSES",
            "CHANGES",
            "STATUSES",
            "MAP",
            "MAP_ACK"
        ],
        "{what}: parsed"
    );
    let same = |s: &str| s.to_string();
    let end = replay(
        &what,
        &tables::anchored_client(),
        "Idle",
        &items,
        &inputs,
        &same,
    );
    ends_in(&what, &end, "Idle");
}

// Dual-channel (section 4): the client's column of `main` and `feed` together, and the
// server's for the diagrams that move its player.

const DUAL_MESSAGES: &[(&str, &str)] = &[
    ("CONN_INIT", "CONN_INIT"),
    ("CONN_INIT_REP", "CONN_INIT_REP"),
    ("FEED_INIT", "FEED_INIT"),
    ("FEED_INIT_REP", "FEED_INIT_REP"),
    ("REP", "FEED_INIT_REP"),
    ("FINAL_AUTH", "FINAL_AUTH"),
    ("CONN_OK", "CONN_OK"),
    ("CONN_FAILED", "CONN_FAILED"),
    ("CONNECTION", "CONNECTION"),
];

/// One thing a section 4 diagram shows, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DualItem {
    /// A message; `lost` when the line draws it lost (`X`, "lost").
    Msg { name: String, dir: Dir, lost: bool },
    /// "main lost": the client's `main` closed.
    MainLost,
    /// The client's event the line names: `Connected { .. }` or `Closed { .. }`
    /// (`timeout`: `Closed { Timeout }`, the end of a wait the diagram does not draw).
    Says { state: &'static str, timeout: bool },
}

/// The parts of a fenced block, split at label lines such as `ok:` (one part if none).
fn parts(block: &[String]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for l in block {
        let t = l.trim();
        let label = t.ends_with(':') && !t.contains('|') && t.split(' ').count() <= 2;
        if label {
            out.push((t.trim_end_matches(':').to_string(), Vec::new()));
        } else if let Some((_, lines)) = out.last_mut() {
            lines.push(l.clone());
        } else {
            out.push((String::new(), vec![l.clone()]));
        }
    }
    out
}

fn parse_dual(lines: &[String]) -> Vec<DualItem> {
    let mut items = Vec::new();
    for line in lines {
        if line.contains("main lost") {
            items.push(DualItem::MainLost);
        }
        let lost = words(line).any(|w| w == "X" || w == "lost");
        if let Some(dir) = arrow(line) {
            for w in words(line) {
                if let Some((_, name)) = DUAL_MESSAGES.iter().find(|(drawn, _)| *drawn == w) {
                    items.push(DualItem::Msg {
                        name: name.to_string(),
                        dir,
                        lost,
                    });
                }
            }
        }
        if line.contains("Connected {") {
            items.push(DualItem::Says {
                state: "Connected",
                timeout: false,
            });
        }
        if line.contains("Closed {") {
            items.push(DualItem::Says {
                state: "Closed",
                timeout: line.contains("Closed { Timeout"),
            });
        }
    }
    items
}

/// One step of a replay: every state `table` allows after any of `kinds` from `now`.
fn advance(
    what: &str,
    table: &Table,
    now: &BTreeSet<String>,
    kinds: &[&str],
    item: &dyn std::fmt::Debug,
) -> BTreeSet<String> {
    let next: BTreeSet<String> = now
        .iter()
        .flat_map(|s| kinds.iter().flat_map(move |k| table.next(s, k)))
        .map(String::from)
        .collect();
    assert!(
        !next.is_empty(),
        "{what}: {item:?} (inputs {kinds:?}) is no row of {} from {now:?}",
        table.machine
    );
    next
}

/// Replays a section 4 diagram through the dual client table from `start`; returns the
/// states allowed at the end and the number of table steps taken.
fn replay_dual_client(what: &str, start: &str, items: &[DualItem]) -> (BTreeSet<String>, usize) {
    let table = tables::dual_client();
    let mut now: BTreeSet<String> = [start.to_string()].into();
    let mut steps = 0;
    let mut feed_inits = 0;
    let mut unanswered_connection = false;
    for item in items {
        // Each entry: the inputs it may be, in order (a retry is three steps).
        let seq: Vec<Vec<&str>> = match item {
            DualItem::MainLost => vec![vec!["MainLost"]],
            DualItem::Says { state, timeout } => {
                if !now.contains(*state) && *state == "Closed" && *timeout {
                    // The last wait ran out: the client gives up.
                    now = advance(what, &table, &now, &["GaveUp"], item);
                    steps += 1;
                }
                assert!(
                    now.contains(*state),
                    "{what}: the diagram says {state} where the table allows {now:?}"
                );
                now = [state.to_string()].into();
                continue;
            }
            DualItem::Msg { name, dir, lost } => match (*dir, name.as_str()) {
                (Dir::LeftToRight, "CONN_INIT") => vec![vec!["MainOpened"]],
                (Dir::LeftToRight, "FEED_INIT") => {
                    feed_inits += 1;
                    // The first goes out when `feed` opens; each later one is a resend
                    // after the feed init timer.
                    if feed_inits == 1 {
                        vec![vec!["FeedOpened"]]
                    } else {
                        vec![vec!["FeedInitTimeout"]]
                    }
                }
                (Dir::LeftToRight, "CONNECTION") => {
                    let retry = unanswered_connection;
                    unanswered_connection = *lost;
                    if retry {
                        // The previous try timed out, the backoff ran out, `main` reopened.
                        vec![vec!["Failed"], vec!["RetryTimer"], vec!["MainOpened"]]
                    } else {
                        vec![vec!["MainOpened"]]
                    }
                }
                (Dir::LeftToRight, "FINAL_AUTH") => vec![],
                (Dir::RightToLeft, _) if *lost => vec![],
                (Dir::RightToLeft, "CONN_INIT_REP") => vec![vec!["ConnInitRep"]],
                (Dir::RightToLeft, "FEED_INIT_REP") => vec![vec!["FeedInitRep"]],
                (Dir::RightToLeft, "CONN_OK") => vec![vec!["ConnOk"]],
                (Dir::RightToLeft, "CONN_FAILED") => vec![vec!["Failed", "GaveUp"]],
                other => panic!("{what}: unexpected {other:?}"),
            },
        };
        for kinds in seq {
            now = advance(what, &table, &now, &kinds, item);
            steps += 1;
        }
    }
    (now, steps)
}

/// Replays a section 4 diagram through the server's player table from `start`.
fn replay_dual_server(what: &str, start: &str, items: &[DualItem]) -> BTreeSet<String> {
    let table = tables::dual_server();
    let mut now: BTreeSet<String> = [start.to_string()].into();
    let mut steps = 0;
    for item in items {
        let kinds: Vec<&str> = match item {
            DualItem::MainLost => vec!["MainClosed"],
            DualItem::Says { .. } => continue,
            DualItem::Msg { lost: true, .. } => continue,
            DualItem::Msg { name, dir, .. } => match (*dir, name.as_str()) {
                // CONN_INIT creates the player (in `start`): not a row.
                (Dir::LeftToRight, "CONN_INIT") => continue,
                (Dir::LeftToRight, "FEED_INIT") => vec!["FeedInit"],
                (Dir::LeftToRight, "FINAL_AUTH") => vec!["FinalAuth"],
                (Dir::LeftToRight, "CONNECTION") => vec!["Connection"],
                (Dir::RightToLeft, _) => continue,
                other => panic!("{what}: unexpected {other:?}"),
            },
        };
        now = advance(what, &table, &now, &kinds, item);
        steps += 1;
    }
    assert!(steps > 0, "{what}: nothing replayed for the server");
    now
}

fn dual_block(heading: &str, index: usize, part: &str) -> Vec<DualItem> {
    let blocks = diagrams(&doc(), heading);
    let block = blocks
        .get(index)
        .unwrap_or_else(|| panic!("{heading}, diagram {}: missing", index + 1));
    let (_, lines) = parts(block)
        .into_iter()
        .find(|(label, _)| label == part)
        .unwrap_or_else(|| panic!("{heading}: no part {part:?}"));
    parse_dual(&lines)
}

fn dual_names(items: &[DualItem]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|i| match i {
            DualItem::Msg { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn dual_initial_connection_diagram_follows_the_tables() {
    let what = "4.2 Initial connection";
    let items = dual_block("### 4.2 Initial connection", 0, "");
    assert_eq!(
        dual_names(&items),
        [
            "CONN_INIT",
            "CONN_INIT_REP",
            "FEED_INIT",
            "FEED_INIT_REP",
            "FINAL_AUTH",
            "CONN_OK"
        ],
        "{what}: parsed"
    );
    let (end, steps) = replay_dual_client(what, "OpeningMain", &items);
    assert_eq!(steps, 5, "{what}: client steps");
    ends_in(what, &end, "Connected");
    ends_in(
        what,
        &replay_dual_server(what, "AwaitFeedInit", &items),
        "Connected",
    );
}

#[test]
fn dual_feed_init_retry_diagram_follows_the_tables() {
    let what = "4.3 Feed init retry";
    let items = dual_block("### 4.3 Feed init retry (loss on `feed`)", 0, "");
    let lost: Vec<(&str, bool)> = items
        .iter()
        .filter_map(|i| match i {
            DualItem::Msg { name, lost, .. } => Some((name.as_str(), *lost)),
            _ => None,
        })
        .collect();
    assert_eq!(
        lost,
        [
            ("CONN_INIT", false),
            ("CONN_INIT_REP", false),
            ("FEED_INIT", true),
            ("FEED_INIT", false),
            ("FEED_INIT_REP", true),
            ("FEED_INIT", false),
            ("FEED_INIT_REP", false),
            ("FINAL_AUTH", false),
            ("CONN_OK", false),
        ],
        "{what}: parsed"
    );
    let (end, steps) = replay_dual_client(what, "OpeningMain", &items);
    // MainOpened, ConnInitRep, FeedOpened, two resends, FeedInitRep, ConnOk.
    assert_eq!(steps, 7, "{what}: client steps");
    ends_in(what, &end, "Connected");
    ends_in(
        what,
        &replay_dual_server(what, "AwaitFeedInit", &items),
        "Connected",
    );
}

#[test]
fn dual_main_reconnection_diagrams_follow_the_tables() {
    let heading = "### 4.4 Reconnection of `main`";
    // ok: from Connected, main lost, CONNECTION, CONN_OK.
    let items = dual_block(heading, 0, "ok");
    assert_eq!(items.first(), Some(&DualItem::MainLost), "4.4 ok: parsed");
    assert_eq!(
        dual_names(&items),
        ["CONNECTION", "CONN_OK"],
        "4.4 ok: parsed"
    );
    let (end, steps) = replay_dual_client("4.4 ok", "Connected", &items);
    assert_eq!(steps, 3);
    ends_in("4.4 ok", &end, "Connected");
    ends_in(
        "4.4 ok",
        &replay_dual_server("4.4 ok", "Connected", &items),
        "Connected",
    );
    // refused: the client reopened main and is refused; it closes.
    let items = dual_block(heading, 0, "refused");
    assert_eq!(dual_names(&items), ["CONNECTION", "CONN_FAILED"]);
    let (end, _) = replay_dual_client("4.4 refused", "ReopeningMain", &items);
    assert_eq!(end, ["Closed".to_string()].into(), "4.4 refused");
    // no answer: a retry after the timeout and the backoff, then the client gives up.
    let items = dual_block(heading, 0, "no answer");
    assert_eq!(dual_names(&items), ["CONNECTION", "CONNECTION"]);
    let (end, steps) = replay_dual_client("4.4 no answer", "ReopeningMain", &items);
    // MainOpened; Failed, RetryTimer, MainOpened; GaveUp.
    assert_eq!(steps, 5, "4.4 no answer: client steps");
    assert_eq!(end, ["Closed".to_string()].into(), "4.4 no answer");
}

/// The dual replay can fail: a diagram where the client is connected before its feed
/// init is caught.
#[test]
fn a_dual_diagram_that_skips_the_feed_init_is_caught() {
    let block: Vec<String> = [
        "|--CONN_INIT v1--->|",
        "|<-CONN_INIT_REP---|",
        "|<-----CONN_OK-----|  both: Connected { session: Fresh }",
    ]
    .map(String::from)
    .to_vec();
    let items = parse_dual(&block);
    let caught = std::panic::catch_unwind(|| replay_dual_client("bad", "OpeningMain", &items));
    assert!(caught.is_err(), "OpeningFeed -ConnOk-> is not in the table");
}

/// The replay can fail: a diagram that skips a step of the table is caught.
#[test]
fn a_diagram_that_skips_a_step_is_caught() {
    let block: Vec<String> = [
        "client                                      server",
        "  OPEN   ---- TOKEN B ------------------->  OPEN",
        "  CONNECTED",
    ]
    .map(String::from)
    .to_vec();
    let items = parse(&block, MERGE_MESSAGES, MERGE_STATES, 42);
    let inputs = |_: &str, _: Dir, _: bool| vec!["Opened"];
    let caught = std::panic::catch_unwind(|| {
        replay(
            "bad",
            &tables::merge_node(),
            "Open",
            &items,
            &inputs,
            &merge_state,
        )
    });
    assert!(
        caught.is_err(),
        "OPEN -> CONNECTED on one TOKEN is not in the table"
    );
}

#[test]
fn deterministic_tables_are_functions_and_every_state_is_reachable() {
    // The machines whose next state depends only on (state, input), from their first state.
    let starts = [
        (tables::merge_node(), "Open"),
        (tables::dual_client(), "Idle"),
        (tables::dual_server(), "AwaitFeedInit"),
    ];
    for (table, start) in &starts {
        assert!(
            table.is_function(),
            "{}: two next states for one (state, input)",
            table.machine
        );
        let mut reachable = table.reachable_from(start);
        let mut states = table.states();
        reachable.sort_unstable();
        states.sort_unstable();
        assert_eq!(
            reachable, states,
            "{}: every state reachable from {start}",
            table.machine
        );
    }
}
