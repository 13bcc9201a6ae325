//! Tombstones of formally ended sessions: what would have resumed them (the merged token,
//! and the locator every secret of the session carries), refused with SESSION_ENDED for
//! `ended_memory`.
//!
//! Indexed by keyed fingerprint ([`TokenKey`]): a lookup costs O(log n) and one
//! constant-time comparison per candidate, with 10 tombstones or 20,000 (the linear scan it
//! replaces cost 456 us per handshake and disconnect at 10,000).
//!
//! **Who can push a tombstone out.** The set is bounded, and a bound means eviction, so it
//! is split by who ended the session, each part with its own bound (`max_sessions`):
//!
//! - [`EndedBy::Application`]: the application's own `Disconnect` commands (kept so when
//!   exported and imported again, [`MergeEndedSnapshot`](super::MergeEndedSnapshot)). No
//!   peer creates these, so no peer can evict them, however many sessions it opens and ends.
//!   These are the ones that matter: the server decided a session is over, and its client
//!   (which may not have seen the DISCONNECT) must not come back into it.
//! - [`EndedBy::Peer`]: sessions their own client ended with DISCONNECT. A peer can fill
//!   this part cheaply (a handshake and a DISCONNECT each), evicting the oldest first, but
//!   what it evicts protects little: the client that sent DISCONNECT is ended for good and
//!   never resumes, and a replay of such a secret once forgotten gets what any stranger
//!   gets, a fresh, empty session (the server's own new token merged in), never the ended
//!   session's state or messages.
//!
//! Secrets left behind by a rotation are not kept here: their live session refuses them
//! (each secret carries its generation), so a peer that resumes in a loop adds nothing.

use super::index::TokenKey;
use crate::time::{Duration, Instant};
use crate::token::Token;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

/// Who ended a session formally (and so which part of the ended set its tombstone is in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndedBy {
    /// The server's application (`MergeServerCommand::Disconnect`). Peers cannot evict
    /// these.
    Application,
    /// The session's client, with DISCONNECT.
    Peer,
}

impl EndedBy {
    fn part(self) -> usize {
        match self {
            EndedBy::Application => 0,
            EndedBy::Peer => 1,
        }
    }
}

/// One ended session: the tokens that could have resumed it.
#[derive(Debug, Clone)]
struct Tomb {
    secrets: Vec<Token>,
    forget_at: Instant,
    by: EndedBy,
}

/// The ended set.
#[derive(Debug, Clone)]
pub(crate) struct EndedSet {
    /// Tombstones by number (numbers are never reused).
    tombs: BTreeMap<u64, Tomb>,
    /// `(fingerprint, tombstone)` for every secret of every tombstone.
    by_print: BTreeSet<(u64, u64)>,
    /// Per part: `(forget_at, tombstone)`, soonest first: expiry and eviction order.
    by_expiry: [BTreeSet<(Instant, u64)>; 2],
    next: u64,
    max_per_part: usize,
}

impl EndedSet {
    pub fn new(max_per_part: usize) -> EndedSet {
        EndedSet {
            tombs: BTreeMap::new(),
            by_print: BTreeSet::new(),
            by_expiry: [BTreeSet::new(), BTreeSet::new()],
            next: 0,
            max_per_part: max_per_part.max(1),
        }
    }

    /// Tombstones held (ended sessions remembered).
    pub fn len(&self) -> usize {
        self.tombs.len()
    }

    /// Changes whenever a tombstone is added (the counter moves) or forgotten (fewer
    /// are held): the pair never comes back to an earlier value.
    pub fn version(&self) -> (u64, usize) {
        (self.next, self.tombs.len())
    }

    /// Whether `t` is a token of an ended session: every candidate with its fingerprint is
    /// compared, in constant time, with no early exit.
    pub fn contains(&self, key: &TokenKey, t: &Token) -> bool {
        let f = key.fingerprint(t);
        self.by_print
            .range((f, 0)..=(f, u64::MAX))
            .filter_map(|(_, n)| self.tombs.get(n))
            .fold(false, |acc, tomb| {
                acc | tomb.secrets.iter().fold(false, |a, s| a | (s == t))
            })
    }

    /// Remembers an ended session's tokens until `forget_at`; past the bound of its part,
    /// the tombstone of that part that would be forgotten soonest goes first.
    pub fn insert(&mut self, key: &TokenKey, secrets: Vec<Token>, forget_at: Instant, by: EndedBy) {
        if secrets.is_empty() {
            return;
        }
        let part = by.part();
        while self.by_expiry[part].len() >= self.max_per_part {
            let Some(&(_, n)) = self.by_expiry[part].first() else {
                break;
            };
            self.remove(key, n);
        }
        let n = self.next;
        self.next = self.next.wrapping_add(1);
        for s in &secrets {
            self.by_print.insert((key.fingerprint(s), n));
        }
        self.by_expiry[part].insert((forget_at, n));
        self.tombs.insert(
            n,
            Tomb {
                secrets,
                forget_at,
                by,
            },
        );
    }

    fn remove(&mut self, key: &TokenKey, n: u64) {
        if let Some(tomb) = self.tombs.remove(&n) {
            for s in &tomb.secrets {
                self.by_print.remove(&(key.fingerprint(s), n));
            }
            self.by_expiry[tomb.by.part()].remove(&(tomb.forget_at, n));
        }
    }

    /// Forgets every tombstone due by `now`.
    pub fn expire(&mut self, key: &TokenKey, now: Instant) {
        for part in 0..self.by_expiry.len() {
            while let Some(&(at, n)) = self.by_expiry[part].first() {
                if at > now {
                    break;
                }
                self.remove(key, n);
            }
        }
    }

    /// When the next tombstone is forgotten.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_expiry
            .iter()
            .filter_map(|p| p.first().map(|e| e.0))
            .min()
    }

    /// Every tombstone, with its time left from `now` (those already due left out).
    pub fn export(&self, now: Instant) -> Vec<(Vec<Token>, Duration, EndedBy)> {
        self.tombs
            .values()
            .filter(|t| t.forget_at > now)
            .map(|t| {
                (
                    t.secrets.clone(),
                    t.forget_at.saturating_duration_since(now),
                    t.by,
                )
            })
            .collect()
    }
}
