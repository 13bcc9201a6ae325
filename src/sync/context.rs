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
//! markers and carries the data. [`TRANSITIONS`] is the whole table and the only way the
//! contexts move ([`tables::fire`](crate::tables::fire)): an input the table has no row for
//! in the current state is a [`NoTransition`].
//!
//! ```
//! use tether::sync::context::{ContextInput, ContextState, Contexts, Transition};
//!
//! let mut c = Contexts::new();
//! c.step(ContextInput::Up).unwrap();
//! let Ok(Transition::Moved { ctx, .. }) = c.step(ContextInput::SendRequest) else { panic!() };
//! assert_eq!(c.state(), ContextState::Requesting);
//! assert!(c.step(ContextInput::SendRequest).is_err()); // one context at a time
//! c.step(ContextInput::PeerStart { ctx }).unwrap();
//! c.step(ContextInput::PeerEnd { ctx }).unwrap(); // the owner then sends SYNC_OK
//! assert_eq!(c.state(), ContextState::Idle);
//! ```

use crate::tables::{fire, NoTransition};
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
/// transition: [`Contexts::step`] returns [`NoTransition`] (the owner counts a peer's marker
/// as stale, as the protocol says, and refuses a command with an error).
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
    /// unchanged (a self-loop row of the table).
    Refuse {
        /// The peer's context id.
        ctx: u32,
        /// Why.
        reason: RefuseReason,
    },
    /// A marker that names another context than the pending one (stale after a cut, or a
    /// confused peer): not fired, to be ignored and counted. (With no context pending, a
    /// marker has no row: [`NoTransition`].)
    Stale,
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

    /// Applies one input through [`TRANSITIONS`]: the input is named by its kind (a
    /// `SYNC_REQ` by whether a context is pending and by the policy), then fired. A marker
    /// naming another context than the pending one is [`Transition::Stale`] and not fired;
    /// a kind without a row in the current state is [`NoTransition`], and nothing changes.
    pub fn step(
        &mut self,
        input: ContextInput,
    ) -> Result<Transition, NoTransition<ContextState, InputKind>> {
        use ContextInput as I;
        let from = self.state();
        let pending = self.pending();
        // The peer's markers name their context: another one than the pending one is stale
        // (with none pending, the table's missing row says it).
        let marker = |ctx: u32, kind| {
            if pending.is_none() || pending == Some(ctx) {
                Some((kind, ctx))
            } else {
                None
            }
        };
        let named = match input {
            I::Up => Some((K::Up, 0)),
            I::Down => Some((K::Down, 0)),
            I::SendRequest => Some((K::SendRequest, 0)),
            I::SendEnd => Some((K::SendEnd, pending.unwrap_or(0))),
            I::PeerRequest { ctx, .. } if from.is_pending() => {
                Some((K::PeerRequestWhilePending, ctx))
            }
            I::PeerRequest { ctx, accept: true } => Some((K::PeerRequestAccepted, ctx)),
            I::PeerRequest { ctx, accept: false } => Some((K::PeerRequestRefusedByPolicy, ctx)),
            I::PeerStart { ctx } => marker(ctx, K::PeerStart),
            I::PeerRefused { ctx } => marker(ctx, K::PeerRefused),
            I::PeerEnd { ctx } => marker(ctx, K::PeerEnd),
            I::PeerOk { ctx } => marker(ctx, K::PeerOk),
        };
        let Some((kind, ctx)) = named else {
            return Ok(Transition::Stale);
        };
        let to = fire(TRANSITIONS, from, kind)?;
        match kind {
            K::PeerRequestWhilePending => {
                return Ok(Transition::Refuse {
                    ctx,
                    reason: RefuseReason::Pending,
                })
            }
            K::PeerRequestRefusedByPolicy => {
                return Ok(Transition::Refuse {
                    ctx,
                    reason: RefuseReason::Policy,
                })
            }
            _ => {}
        }
        // Only a request that fired takes an id.
        let ctx = if kind == K::SendRequest {
            self.allocate_id()
        } else {
            ctx
        };
        self.phase = match to {
            S::Down => Phase::Down,
            S::Idle => Phase::Idle,
            S::Requesting => Phase::Requesting(ctx),
            S::Receiving => Phase::Receiving(ctx),
            S::Replying => Phase::Replying(ctx),
            S::AwaitingOk => Phase::AwaitingOk(ctx),
        };
        Ok(Transition::Moved {
            input: kind,
            from,
            to,
            ctx,
        })
    }

    /// Puts the contexts in `state` with `ctx` pending, for the tests of every pair.
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
    use proptest::prelude::*;

    const STATES: [ContextState; 6] = [
        S::Down,
        S::Idle,
        S::Requesting,
        S::Receiving,
        S::Replying,
        S::AwaitingOk,
    ];

    /// Every kind of input, with an input of that kind in `from` (a `SYNC_REQ` is of the
    /// "while pending" kind exactly when a context is pending).
    fn input_of(kind: InputKind, ctx: u32) -> ContextInput {
        use ContextInput as I;
        match kind {
            K::Up => I::Up,
            K::Down => I::Down,
            K::SendRequest => I::SendRequest,
            K::PeerRequestAccepted | K::PeerRequestWhilePending => {
                I::PeerRequest { ctx, accept: true }
            }
            K::PeerRequestRefusedByPolicy => I::PeerRequest { ctx, accept: false },
            K::PeerStart => I::PeerStart { ctx },
            K::PeerRefused => I::PeerRefused { ctx },
            K::PeerEnd => I::PeerEnd { ctx },
            K::SendEnd => I::SendEnd,
            K::PeerOk => I::PeerOk { ctx },
        }
    }

    /// A pair without a row is the typed error and changes nothing; a pair with a row moves
    /// to its target (a refusal's self-loop stays, and says so).
    fn check(from: ContextState, kind: InputKind) -> Result<(), TestCaseError> {
        let mut c = Contexts::new();
        c.force(from, 7);
        // A `SYNC_REQ` is "while pending" exactly when a context is pending; the other kind
        // of request cannot be asked for in that state, so it is not a pair to check.
        let while_pending = kind == K::PeerRequestWhilePending;
        let is_request = matches!(
            kind,
            K::PeerRequestAccepted | K::PeerRequestWhilePending | K::PeerRequestRefusedByPolicy
        );
        if is_request && while_pending != from.is_pending() {
            return Ok(());
        }
        let listed = TRANSITIONS
            .iter()
            .find(|(s, k, _)| *s == from && *k == kind)
            .map(|(_, _, to)| *to);
        let got = c.step(input_of(kind, 7));
        match listed {
            None => {
                prop_assert_eq!(
                    got,
                    Err(NoTransition {
                        state: from,
                        input: kind
                    })
                );
                prop_assert_eq!(c.state(), from);
                prop_assert_eq!(c.pending(), if from.is_pending() { Some(7) } else { None });
            }
            Some(to) => {
                match got {
                    Ok(Transition::Moved { input, to: t, .. }) => {
                        prop_assert_eq!(input, kind);
                        prop_assert_eq!(t, to);
                    }
                    Ok(Transition::Refuse { reason, .. }) => {
                        let k = match reason {
                            RefuseReason::Pending => K::PeerRequestWhilePending,
                            RefuseReason::Policy => K::PeerRequestRefusedByPolicy,
                            RefuseReason::NotInContext => K::Up,
                        };
                        prop_assert_eq!(k, kind);
                        prop_assert_eq!(to, from);
                    }
                    other => prop_assert!(false, "{:?} + {:?} gave {:?}", from, kind, other),
                }
                prop_assert_eq!(c.state(), to);
            }
        }
        Ok(())
    }

    const KINDS: [InputKind; 11] = [
        K::Up,
        K::Down,
        K::SendRequest,
        K::PeerRequestAccepted,
        K::PeerRequestWhilePending,
        K::PeerRequestRefusedByPolicy,
        K::PeerStart,
        K::PeerRefused,
        K::PeerEnd,
        K::SendEnd,
        K::PeerOk,
    ];

    proptest! {
        #[test]
        fn step_follows_the_table(s in 0..STATES.len(), k in 0..KINDS.len()) {
            check(STATES[s], KINDS[k])?;
        }
    }

    #[test]
    fn step_follows_the_table_on_every_pair() {
        for s in STATES {
            for k in KINDS {
                check(s, k).unwrap();
            }
        }
    }

    #[test]
    fn stale_markers_are_ignored() {
        let mut c = Contexts::new();
        c.force(S::Receiving, 3);
        assert_eq!(
            c.step(ContextInput::PeerEnd { ctx: 2 }),
            Ok(Transition::Stale)
        );
        assert_eq!(c.state(), S::Receiving);
        c.force(S::AwaitingOk, 3);
        assert_eq!(
            c.step(ContextInput::PeerOk { ctx: 4 }),
            Ok(Transition::Stale)
        );
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
