//! Sync contexts: `SYNC_REQ`, `SYNC_START`, sync messages, `SYNC_END`,
//! `SYNC_OK`, `REFUSED`.
//!
//! One connection has at most one context pending, in either direction: the requester
//! sends `SYNC_REQ`, the replier answers `SYNC_START`, its sync messages, then `SYNC_END`,
//! and the requester confirms with `SYNC_OK`. A `SYNC_REQ` that arrives while a context is
//! pending (either way, including two requests that cross on the wire) is answered
//! `REFUSED` (reason `Pending`). Every marker carries the context id, so a marker of a
//! context cut off by a disconnection is recognised as stale and ignored.
//!
//! [`Contexts`] is only the marker bookkeeping: it says which transition an input makes,
//! and the machine that owns it ([`JournalSync`](super::journal::JournalSync)) sends the
//! markers and carries the data. [`TRANSITIONS`] is the whole table, checked against the
//! code by a test.
//!
//! ```
//! use tether::sync::context::{ContextInput, ContextState, Contexts, Transition};
//!
//! let mut c = Contexts::new();
//! c.step(ContextInput::Up);
//! let Transition::Moved { ctx, .. } = c.step(ContextInput::SendRequest) else { panic!() };
//! assert_eq!(c.state(), ContextState::Requesting);
//! c.step(ContextInput::PeerStart { ctx });
//! c.step(ContextInput::PeerEnd { ctx });   // the owner then sends SYNC_OK
//! assert_eq!(c.state(), ContextState::Idle);
//! ```

use crate::wire::RefuseReason;

/// Where a connection's sync contexts stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContextState {
    /// The transport is down: no context can run; a context in flight was abandoned.
    Down,
    /// Connected, no context pending.
    Idle,
    /// We sent `SYNC_REQ` and wait for `SYNC_START` (or `REFUSED`).
    Requesting,
    /// We got `SYNC_START`: we receive sync messages until `SYNC_END`.
    Receiving,
    /// We accepted a `SYNC_REQ` and sent `SYNC_START`: we send sync messages, then `SYNC_END`.
    Replying,
    /// We sent `SYNC_END` and wait for `SYNC_OK`.
    AwaitingOk,
}

impl ContextState {
    /// Whether a context is pending (in either direction): a `SYNC_REQ` is then refused.
    pub fn is_pending(self) -> bool {
        !matches!(self, ContextState::Down | ContextState::Idle)
    }
}

/// The kinds of input of the context table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// The transport came up.
    Up,
    /// The transport went down.
    Down,
    /// We send a `SYNC_REQ`.
    SendRequest,
    /// A `SYNC_REQ` arrived and we accept it (we send `SYNC_START`).
    PeerRequestAccepted,
    /// A `SYNC_REQ` arrived while a context is pending: we send `REFUSED` (pending).
    PeerRequestWhilePending,
    /// A `SYNC_REQ` arrived and our policy refuses it: we send `REFUSED` (policy).
    PeerRequestRefusedByPolicy,
    /// `SYNC_START` for our request arrived.
    PeerStart,
    /// `REFUSED` for our request arrived.
    PeerRefused,
    /// `SYNC_END` of the context we receive arrived (we send `SYNC_OK`).
    PeerEnd,
    /// We send `SYNC_END`.
    SendEnd,
    /// `SYNC_OK` for the context we replied to arrived.
    PeerOk,
}

use ContextState as S;
use InputKind as K;

/// Every transition: (state, input, next state). An input not listed for a state makes no
/// transition (a stale marker, ignored and counted, or a command refused with an error).
pub const TRANSITIONS: &[(ContextState, InputKind, ContextState)] = &[
    (S::Down, K::Up, S::Idle),
    (S::Idle, K::Down, S::Down),
    (S::Requesting, K::Down, S::Down),
    (S::Receiving, K::Down, S::Down),
    (S::Replying, K::Down, S::Down),
    (S::AwaitingOk, K::Down, S::Down),
    (S::Idle, K::SendRequest, S::Requesting),
    (S::Idle, K::PeerRequestAccepted, S::Replying),
    (S::Idle, K::PeerRequestRefusedByPolicy, S::Idle),
    (S::Requesting, K::PeerRequestWhilePending, S::Requesting),
    (S::Receiving, K::PeerRequestWhilePending, S::Receiving),
    (S::Replying, K::PeerRequestWhilePending, S::Replying),
    (S::AwaitingOk, K::PeerRequestWhilePending, S::AwaitingOk),
    (S::Requesting, K::PeerStart, S::Receiving),
    (S::Requesting, K::PeerRefused, S::Idle),
    (S::Receiving, K::PeerEnd, S::Idle),
    (S::Replying, K::SendEnd, S::AwaitingOk),
    (S::AwaitingOk, K::PeerOk, S::Idle),
];

/// One input to [`Contexts::step`], with the context id it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextInput {
    /// The transport came up.
    Up,
    /// The transport went down: the context in flight is abandoned.
    Down,
    /// We want to send a `SYNC_REQ` (the id is allocated here).
    SendRequest,
    /// A `SYNC_REQ` for `ctx` arrived; `accept` is our policy's answer.
    PeerRequest {
        /// The peer's context id.
        ctx: u32,
        /// Whether our policy accepts it.
        accept: bool,
    },
    /// `SYNC_START` arrived.
    PeerStart {
        /// Its context id.
        ctx: u32,
    },
    /// `REFUSED` arrived.
    PeerRefused {
        /// Its context id.
        ctx: u32,
    },
    /// `SYNC_END` arrived.
    PeerEnd {
        /// Its context id.
        ctx: u32,
    },
    /// We want to send `SYNC_END` for the context we reply to.
    SendEnd,
    /// `SYNC_OK` arrived.
    PeerOk {
        /// Its context id.
        ctx: u32,
    },
}

/// What [`Contexts::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A transition of the table; `ctx` is the context concerned (0 for up/down).
    Moved {
        /// The kind of input that made it.
        input: InputKind,
        /// The state before.
        from: ContextState,
        /// The state after.
        to: ContextState,
        /// The context id.
        ctx: u32,
    },
    /// The peer's `SYNC_REQ` must be answered `REFUSED { ctx, reason }`; the state is
    /// unchanged.
    Refuse {
        /// The peer's context id.
        ctx: u32,
        /// Why.
        reason: RefuseReason,
    },
    /// A marker that names no pending context of ours (stale after a cut, or a confused
    /// peer): ignored.
    Stale,
    /// A command that makes no sense now (e.g. requesting while a context is pending).
    NotNow,
}

/// Where a connection's contexts stand, with the pending context's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Down,
    Idle,
    Requesting(u32),
    Receiving(u32),
    Replying(u32),
    AwaitingOk(u32),
}

/// The marker bookkeeping of one connection.
#[derive(Debug, Clone)]
pub struct Contexts {
    phase: Phase,
    next_id: u32,
}

impl Default for Contexts {
    fn default() -> Self {
        Contexts::new()
    }
}

impl Contexts {
    /// Down, with context ids starting at 1.
    pub fn new() -> Self {
        Contexts {
            phase: Phase::Down,
            next_id: 1,
        }
    }

    /// The state.
    pub fn state(&self) -> ContextState {
        match self.phase {
            Phase::Down => S::Down,
            Phase::Idle => S::Idle,
            Phase::Requesting(_) => S::Requesting,
            Phase::Receiving(_) => S::Receiving,
            Phase::Replying(_) => S::Replying,
            Phase::AwaitingOk(_) => S::AwaitingOk,
        }
    }

    /// The pending context's id, if any.
    pub fn pending(&self) -> Option<u32> {
        match self.phase {
            Phase::Down | Phase::Idle => None,
            Phase::Requesting(c)
            | Phase::Receiving(c)
            | Phase::Replying(c)
            | Phase::AwaitingOk(c) => Some(c),
        }
    }

    /// A fresh id (never 0, which names "no context"), from the same counter as resource
    /// request ids so that a status response's request id is never ambiguous.
    pub fn allocate_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Applies one input: the `match (state, input)` below is [`TRANSITIONS`] in code.
    pub fn step(&mut self, input: ContextInput) -> Transition {
        use ContextInput as I;
        let from = self.state();
        let (to, kind, ctx) = match (self.phase, input) {
            (Phase::Down, I::Up) => (Phase::Idle, K::Up, 0),
            (Phase::Down, I::Down) | (_, I::Up) => return Transition::Stale,
            (_, I::Down) => (Phase::Down, K::Down, 0),

            (Phase::Idle, I::SendRequest) => {
                let ctx = self.allocate_id();
                (Phase::Requesting(ctx), K::SendRequest, ctx)
            }
            (_, I::SendRequest) => return Transition::NotNow,

            (Phase::Idle, I::PeerRequest { ctx, accept: true }) => {
                (Phase::Replying(ctx), K::PeerRequestAccepted, ctx)
            }
            (Phase::Idle, I::PeerRequest { ctx, accept: false }) => {
                return Transition::Refuse {
                    ctx,
                    reason: RefuseReason::Policy,
                }
            }
            (Phase::Down, I::PeerRequest { .. }) => return Transition::Stale,
            (_, I::PeerRequest { ctx, .. }) => {
                return Transition::Refuse {
                    ctx,
                    reason: RefuseReason::Pending,
                }
            }

            (Phase::Requesting(c), I::PeerStart { ctx }) if c == ctx => {
                (Phase::Receiving(c), K::PeerStart, c)
            }
            (Phase::Requesting(c), I::PeerRefused { ctx }) if c == ctx => {
                (Phase::Idle, K::PeerRefused, c)
            }
            (Phase::Receiving(c), I::PeerEnd { ctx }) if c == ctx => (Phase::Idle, K::PeerEnd, c),
            (Phase::Replying(c), I::SendEnd) => (Phase::AwaitingOk(c), K::SendEnd, c),
            (_, I::SendEnd) => return Transition::NotNow,
            (Phase::AwaitingOk(c), I::PeerOk { ctx }) if c == ctx => (Phase::Idle, K::PeerOk, c),
            (
                _,
                I::PeerStart { .. } | I::PeerRefused { .. } | I::PeerEnd { .. } | I::PeerOk { .. },
            ) => return Transition::Stale,
        };
        self.phase = to;
        Transition::Moved {
            input: kind,
            from,
            to: self.state(),
            ctx,
        }
    }

    #[cfg(test)]
    fn force(&mut self, state: ContextState, ctx: u32) {
        self.phase = match state {
            S::Down => Phase::Down,
            S::Idle => Phase::Idle,
            S::Requesting => Phase::Requesting(ctx),
            S::Receiving => Phase::Receiving(ctx),
            S::Replying => Phase::Replying(ctx),
            S::AwaitingOk => Phase::AwaitingOk(ctx),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [ContextState; 6] = [
        S::Down,
        S::Idle,
        S::Requesting,
        S::Receiving,
        S::Replying,
        S::AwaitingOk,
    ];

    fn inputs(ctx: u32) -> [(InputKind, ContextInput); 11] {
        use ContextInput as I;
        [
            (K::Up, I::Up),
            (K::Down, I::Down),
            (K::SendRequest, I::SendRequest),
            (K::PeerRequestAccepted, I::PeerRequest { ctx, accept: true }),
            (
                K::PeerRequestWhilePending,
                I::PeerRequest { ctx, accept: true },
            ),
            (
                K::PeerRequestRefusedByPolicy,
                I::PeerRequest { ctx, accept: false },
            ),
            (K::PeerStart, I::PeerStart { ctx }),
            (K::PeerRefused, I::PeerRefused { ctx }),
            (K::PeerEnd, I::PeerEnd { ctx }),
            (K::SendEnd, I::SendEnd),
            (K::PeerOk, I::PeerOk { ctx }),
        ]
    }

    /// The code and the table agree, for every state and every input.
    #[test]
    fn step_matches_the_table() {
        for from in STATES {
            for (kind, input) in inputs(7) {
                let mut c = Contexts::new();
                c.force(from, 7);
                let t = c.step(input);
                let listed = TRANSITIONS
                    .iter()
                    .find(|(s, k, _)| *s == from && *k == kind)
                    .map(|(_, _, to)| *to);
                let got = match t {
                    Transition::Moved { input, to, .. } if input == kind => Some(to),
                    Transition::Refuse { reason, .. } => {
                        let k = match reason {
                            RefuseReason::Pending => K::PeerRequestWhilePending,
                            RefuseReason::Policy => K::PeerRequestRefusedByPolicy,
                            RefuseReason::NotInContext => unreachable!(),
                        };
                        if k == kind {
                            Some(from)
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                assert_eq!(got, listed, "{from:?} + {kind:?} gave {t:?}");
            }
        }
    }

    #[test]
    fn stale_markers_are_ignored() {
        let mut c = Contexts::new();
        c.force(S::Receiving, 3);
        assert_eq!(c.step(ContextInput::PeerEnd { ctx: 2 }), Transition::Stale);
        assert_eq!(c.state(), S::Receiving);
        c.force(S::AwaitingOk, 3);
        assert_eq!(c.step(ContextInput::PeerOk { ctx: 4 }), Transition::Stale);
        assert_eq!(c.pending(), Some(3));
    }

    #[test]
    fn ids_never_zero() {
        let mut c = Contexts::new();
        c.next_id = u32::MAX;
        assert_eq!(c.allocate_id(), u32::MAX);
        assert_eq!(c.allocate_id(), 1);
    }
}
