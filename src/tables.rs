//! Every machine's transition table as data: one uniform shape, rendered as Markdown.
//!
//! Each machine keeps its own `const` table of `(state, input, next state)` (with its own
//! enums, checked against its `match` by the machine's tests). This module gives them one
//! shape, [`Table`] of [`Row`]s named by the enums' variant names, so that docs can be
//! generated from the code and tests can replay the sequence diagrams of docs/PROTOCOL.md
//! through the tables (`tests/tables.rs`).
//!
//! The `const` tables are also the machines themselves (h11's rule: the table is the
//! machine): every machine moves its state only through [`fire`] (or [`fire_to`], where the
//! machine picks one of several rows on data the table does not show), so a move the table
//! does not list is a typed [`NoTransition`], never a silent no-op.
//!
//! ```
//! let t = tether::tables::merge_node();
//! assert!(t.has_row("Open", "RemoteToken", "Preconnected"));
//! assert!(t.to_markdown().contains("| `Preconnected` | `Confirmed` | `Connected` |"));
//! ```

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{Debug, Write};

/// A `(state, input)` pair (or, for [`fire_to`], a `(state, input, next)` triple) that is
/// not a row of a machine's transition table.
///
/// Each machine turns it into what its protocol says: a refusal told to the peer when the
/// peer's message caused it, an error returned to the caller when a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("no transition from {state:?} on {input:?}")]
pub struct NoTransition<S: Debug, I: Debug> {
    /// The state the machine was (and still is) in.
    pub state: S,
    /// The input the table has no row for in that state.
    pub input: I,
}

/// Fires `input` in `state`: the target of the first row `(state, input, _)` of `table`, or
/// [`NoTransition`] if there is none (the caller's state must then stay as it is).
///
/// For tables where each `(state, input)` has at most one row ([`Table::is_function`]).
///
/// ```
/// use tether::connect::merge::{Status, Step, TRANSITIONS};
/// use tether::tables::fire;
/// assert_eq!(fire(TRANSITIONS, Status::Open, Step::RemoteToken), Ok(Status::Preconnected));
/// assert!(fire(TRANSITIONS, Status::Disconnected, Step::Resumed).is_err());
/// ```
pub fn fire<S: Copy + Eq + Debug, I: Copy + Eq + Debug>(
    table: &[(S, I, S)],
    state: S,
    input: I,
) -> Result<S, NoTransition<S, I>> {
    table
        .iter()
        .find(|(s, i, _)| *s == state && *i == input)
        .map(|(_, _, next)| *next)
        .ok_or(NoTransition { state, input })
}

/// Fires `input` in `state` towards `next`, which the machine chose on data the table does
/// not show (e.g. the anchored client after `ALERT`: an early map first, or its changes):
/// `next` if `(state, input, next)` is a row of `table`, else [`NoTransition`].
///
/// ```
/// use tether::sync::anchored::{ClientState as S, ClientTrigger as T, CLIENT_TRANSITIONS};
/// use tether::tables::fire_to;
/// assert_eq!(fire_to(CLIENT_TRANSITIONS, S::AwaitAlert, T::Alert, S::SendingChanges), Ok(S::SendingChanges));
/// assert!(fire_to(CLIENT_TRANSITIONS, S::AwaitAlert, T::Alert, S::SendingMap).is_err());
/// ```
pub fn fire_to<S: Copy + Eq + Debug, I: Copy + Eq + Debug>(
    table: &[(S, I, S)],
    state: S,
    input: I,
    next: S,
) -> Result<S, NoTransition<S, I>> {
    if table
        .iter()
        .any(|(s, i, n)| *s == state && *i == input && *n == next)
    {
        Ok(next)
    } else {
        Err(NoTransition { state, input })
    }
}

/// One transition: in state `from`, input `input` moves the machine to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Row {
    /// The state before (the variant name of the machine's state enum).
    pub from: String,
    /// The input kind (the variant name of the machine's input enum).
    pub input: String,
    /// The state after.
    pub to: String,
}

/// A machine's whole transition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// A short name of the machine, e.g. `merge::node`.
    pub machine: &'static str,
    /// The Rust path of the `const` table the rows come from.
    pub source: &'static str,
    /// The rows, in the order of the `const` table.
    pub rows: Vec<Row>,
}

impl Table {
    /// A table from a machine's `const` table of enum triples (named by their `Debug`
    /// names, which for these field-less enums are the variant names).
    pub fn from_const<S: Debug, I: Debug>(
        machine: &'static str,
        source: &'static str,
        rows: &[(S, I, S)],
    ) -> Table {
        Table {
            machine,
            source,
            rows: rows
                .iter()
                .map(|(from, input, to)| Row {
                    from: format!("{from:?}"),
                    input: format!("{input:?}"),
                    to: format!("{to:?}"),
                })
                .collect(),
        }
    }

    /// Whether `(from, input, to)` is a row.
    pub fn has_row(&self, from: &str, input: &str, to: &str) -> bool {
        self.rows
            .iter()
            .any(|r| r.from == from && r.input == input && r.to == to)
    }

    /// Every state the table can move to from `from` on `input` (several when the machine
    /// decides on data the table does not show, e.g. the anchored client after `ALERT`).
    pub fn next<'a>(&'a self, from: &'a str, input: &'a str) -> impl Iterator<Item = &'a str> {
        self.rows
            .iter()
            .filter(move |r| r.from == from && r.input == input)
            .map(|r| r.to.as_str())
    }

    /// The states named anywhere in the table, in order of first appearance.
    pub fn states(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.rows {
            for s in [r.from.as_str(), r.to.as_str()] {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Whether each `(state, input)` has at most one next state (a deterministic machine).
    pub fn is_function(&self) -> bool {
        self.rows.iter().enumerate().all(|(i, a)| {
            self.rows[i + 1..]
                .iter()
                .all(|b| !(a.from == b.from && a.input == b.input && a.to != b.to))
        })
    }

    /// The states reachable from `start` by following rows (`start` first).
    pub fn reachable_from<'a>(&'a self, start: &'a str) -> Vec<&'a str> {
        let mut seen = alloc::vec![start];
        let mut i = 0;
        while let Some(&s) = seen.get(i) {
            for r in self.rows.iter().filter(|r| r.from == s) {
                if !seen.contains(&r.to.as_str()) {
                    seen.push(r.to.as_str());
                }
            }
            i += 1;
        }
        seen
    }

    /// The table as Markdown: a caption naming the source, then one line per row. This is
    /// the exact text docs/PROTOCOL.md carries (a test keeps the two in step).
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = writeln!(
            s,
            "Transition table of `{}`, generated from `{}` (`tether::tables`; \
             `tests/tables.rs` keeps it in step with the code):",
            self.machine, self.source
        );
        s.push('\n');
        s.push_str("| from | input | to |\n|---|---|---|\n");
        for r in &self.rows {
            let _ = writeln!(s, "| `{}` | `{}` | `{}` |", r.from, r.input, r.to);
        }
        s
    }
}

/// The token-merge node (dop's connectivity), shared by client and server sessions.
pub fn merge_node() -> Table {
    Table::from_const(
        "merge::node",
        "tether::connect::merge::TRANSITIONS",
        crate::connect::merge::TRANSITIONS,
    )
}

/// The client of R-Type's dual-channel connection.
pub fn dual_client() -> Table {
    Table::from_const(
        "dual::client",
        "tether::connect::dual::CLIENT_TRANSITIONS",
        crate::connect::dual::CLIENT_TRANSITIONS,
    )
}

/// The server of R-Type's dual-channel connection, one player's states.
pub fn dual_server() -> Table {
    Table::from_const(
        "dual::server player",
        "tether::connect::dual::SERVER_TRANSITIONS",
        crate::connect::dual::SERVER_TRANSITIONS,
    )
}

/// Sync contexts, one per connection, either side.
pub fn sync_context() -> Table {
    Table::from_const(
        "sync::context",
        "tether::sync::context::TRANSITIONS",
        crate::sync::context::TRANSITIONS,
    )
}

/// The anchored two-way sync client (SyncML).
pub fn anchored_client() -> Table {
    Table::from_const(
        "sync::anchored client",
        "tether::sync::anchored::CLIENT_TRANSITIONS",
        crate::sync::anchored::CLIENT_TRANSITIONS,
    )
}

/// The anchored two-way sync server (SyncML).
pub fn anchored_server() -> Table {
    Table::from_const(
        "sync::anchored server",
        "tether::sync::anchored::SERVER_TRANSITIONS",
        crate::sync::anchored::SERVER_TRANSITIONS,
    )
}

/// Every machine's table.
pub fn all() -> Vec<Table> {
    alloc::vec![
        dual_client(),
        dual_server(),
        merge_node(),
        sync_context(),
        anchored_client(),
        anchored_server(),
    ]
}
