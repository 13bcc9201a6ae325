//! The server half every connection profile shares (quinn's `Endpoint`): which transport
//! leads where, the bound on handshakes in progress, the sessions with their session
//! cores, their timers, and the takeover of a half-open transport.
//!
//! A profile's server keeps only its admission handshake (the token exchange and RESUME
//! of dop's token merge; `CONN_INIT`, feed init and final auth of R-Type's dual channel)
//! and what its sessions alone carry. Everything else is here, written once:
//!
//! - every open transport is a [`Route`]: its reader state `L` (a frame decoder) and, once
//!   admitted, the session it belongs to. Inputs naming no open transport, or an older
//!   transport with a reused id, are stale and counted, never mixed into a session;
//! - a transport not yet admitted is *pending*: at most `max_pending` at once, each with a
//!   handshake timer;
//! - a session is a [`Slot`]: its transport (if up), its [`SessionCore`] and the profile's
//!   state `S`;
//! - [`Endpoint::attach`] gives a session a transport. If the session still holds another
//!   one (half-open after a NAT rebinding or a network switch), that one is closed and
//!   counted: the takeover;
//! - one [`TimerQueue`] holds every deadline: handshakes by transport, and per session one
//!   timer for each [`SessionTimer`]; the next deadline is its first entry, so an idle
//!   endpoint of any size costs nothing per poll.

use super::{SessionCore, TimerQueue};
use crate::driver::Link;
use crate::time::Instant;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::hash::Hash;
use hashbrown::HashMap;

/// A hash table whose `Debug` lists its entries in key order, so that a machine's `Debug`
/// form (which tests fingerprint states by) depends on what it holds, not on the order
/// the table happens to keep.
#[derive(Clone)]
pub(crate) struct Table<K, V>(HashMap<K, V>);

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Table(HashMap::default())
    }
}

impl<K, V> core::ops::Deref for Table<K, V> {
    type Target = HashMap<K, V>;
    fn deref(&self) -> &HashMap<K, V> {
        &self.0
    }
}

impl<K, V> core::ops::DerefMut for Table<K, V> {
    fn deref_mut(&mut self) -> &mut HashMap<K, V> {
        &mut self.0
    }
}

impl<K: Hash + Eq, V> Table<K, V> {
    /// Removes `key`'s entry; a table left under a quarter full gives back half its room
    /// (a table never shrinks by itself: a registry that once held a million transports
    /// would keep their room forever). Amortised: the next shrink needs as many removals
    /// again.
    pub fn take(&mut self, key: &K) -> Option<V> {
        let v = self.0.remove(key)?;
        let cap = self.0.capacity();
        if cap > 64 && self.0.len() < cap / 4 {
            self.0.shrink_to(cap / 2);
        }
        Some(v)
    }
}

impl<K: Ord + core::fmt::Debug, V: core::fmt::Debug> core::fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut all: Vec<(&K, &V)> = self.0.iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        f.debug_map().entries(all).finish()
    }
}

/// A session's named deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum SessionTimer {
    /// The session is forgotten (its transport stayed lost), or its handshake expires.
    Expire,
    /// The session core's heartbeat or dead-peer check.
    Live,
    /// A deadline of the profile's own (the dual channel's `feed`).
    Profile,
}

/// A deadline of the endpoint: a pending handshake (by transport id) or a session's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer<K> {
    /// A transport still in its admission handshake.
    Handshake(u64),
    /// One of a session's deadlines.
    Session(K, SessionTimer),
}

/// An open transport: what reads it, and the session it was admitted to.
#[derive(Debug, Clone)]
pub(crate) struct Route<K, L> {
    /// The transport (its id is the key; the channel is kept to tell a reused id apart).
    pub link: Link,
    /// The session, once admitted; `None` while pending.
    pub session: Option<K>,
    /// The profile's per-transport state (a frame decoder, a handshake in progress).
    pub state: L,
}

/// A session held by the endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Slot<S> {
    /// The transport it is up on, if any.
    pub link: Option<Link>,
    /// Delivery, liveness and the bounded queue.
    pub core: SessionCore,
    /// The profile's per-session state.
    pub state: S,
}

/// Why a transport could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its id names a transport already open (the caller's bug).
    Duplicate,
    /// As many handshakes are in progress as allowed.
    Full,
}

/// Transports, sessions and their timers. See the [module docs](self).
#[derive(Debug, Clone)]
pub(crate) struct Endpoint<K: Ord, L, S> {
    /// Hash tables, not ordered maps: a lookup costs the same with 10 entries or a
    /// million (a B-tree's grows with its depth, and a handshake makes a few dozen), and
    /// nothing iterates the routes. [`Endpoint::sessions`] sorts what it lists, so that no
    /// output depends on the table's order.
    routes: Table<u64, Route<K, L>>,
    /// Boxed: a table is between 44 and 87 % full, so a slot stored in it would cost up
    /// to twice its size; a box costs its size and the table a 16-byte entry.
    sessions: Table<K, Box<Slot<S>>>,
    timers: TimerQueue<Timer<K>>,
    pending: usize,
    max_pending: usize,
    takeovers: u64,
    stale: u64,
}

impl<K: Ord + Copy + Hash, L, S> Endpoint<K, L, S> {
    /// No transport, no session; at most `max_pending` handshakes at once.
    pub fn new(max_pending: usize) -> Self {
        Endpoint {
            routes: Table::default(),
            sessions: Table::default(),
            timers: TimerQueue::new(),
            pending: 0,
            max_pending,
            takeovers: 0,
            stale: 0,
        }
    }

    /// Takes a new transport, pending until admitted; its handshake expires at `deadline`
    /// (`None`: the profile times it otherwise).
    pub fn open(&mut self, link: Link, state: L, deadline: Option<Instant>) -> Result<(), Refusal> {
        if self.routes.contains_key(&link.id) {
            return Err(Refusal::Duplicate);
        }
        if self.pending >= self.max_pending {
            return Err(Refusal::Full);
        }
        self.pending += 1;
        self.routes.insert(
            link.id,
            Route {
                link,
                session: None,
                state,
            },
        );
        if let Some(at) = deadline {
            self.timers.set(Timer::Handshake(link.id), at);
        }
        Ok(())
    }

    /// The open transport `link` exactly (same id and channel); an input for anything else
    /// is stale, counted, and gets `None`.
    pub fn route(&mut self, link: Link) -> Option<&mut Route<K, L>> {
        match self.routes.get_mut(&link.id).filter(|r| r.link == link) {
            Some(r) => Some(r),
            None => {
                self.stale += 1;
                None
            }
        }
    }

    /// The open transport `link_id`, without counting anything.
    pub fn peek(&self, link_id: u64) -> Option<&Route<K, L>> {
        self.routes.get(&link_id)
    }

    /// The open transport `link_id`, mutably, without counting anything.
    pub fn peek_mut(&mut self, link_id: u64) -> Option<&mut Route<K, L>> {
        self.routes.get_mut(&link_id)
    }

    /// Forgets a transport (closed, refused or replaced): pending or not, and detached from
    /// its session if it was the session's.
    pub fn close(&mut self, link_id: u64) -> Option<Route<K, L>> {
        let r = self.routes.take(&link_id)?;
        match r.session {
            None => {
                self.pending -= 1;
                self.timers.stop(Timer::Handshake(link_id));
            }
            Some(k) => {
                if let Some(s) = self
                    .sessions
                    .get_mut(&k)
                    .filter(|s| s.link.is_some_and(|l| l.id == link_id))
                {
                    s.link = None;
                    s.core.link_down();
                    self.timers.stop(Timer::Session(k, SessionTimer::Live));
                }
            }
        }
        Some(r)
    }

    /// Adds a session (not up on any transport yet).
    pub fn insert(&mut self, key: K, core: SessionCore, state: S) {
        self.sessions.insert(
            key,
            Box::new(Slot {
                link: None,
                core,
                state,
            }),
        );
    }

    /// Removes a session, its timers, and the route of its transport (returned in the
    /// slot's `link` for the caller to close).
    pub fn remove(&mut self, key: K) -> Option<Slot<S>> {
        let s = *self.sessions.take(&key)?;
        for t in [
            SessionTimer::Expire,
            SessionTimer::Live,
            SessionTimer::Profile,
        ] {
            self.timers.stop(Timer::Session(key, t));
        }
        if let Some(l) = s.link {
            self.routes.take(&l.id);
        }
        Some(s)
    }

    /// Puts session `key` up on the open transport `link` (admitted from pending, or
    /// moved); its expiry stops. A transport the session still held is forgotten (see
    /// [`Endpoint::take_over`] to count and close it first).
    pub fn attach(&mut self, key: K, link: Link) {
        let old = self.sessions.get(&key).and_then(|s| s.link);
        if let Some(o) = old.filter(|o| *o != link) {
            self.routes.take(&o.id);
        }
        if let Some(r) = self.routes.get_mut(&link.id) {
            if r.session.is_none() {
                self.pending -= 1;
                self.timers.stop(Timer::Handshake(link.id));
            }
            r.session = Some(key);
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            s.link = Some(link);
        }
        self.timers.stop(Timer::Session(key, SessionTimer::Expire));
    }

    /// A valid resumption arrived on a new transport while session `key` still holds one
    /// (half-open after a NAT rebinding or a network switch): the old transport is
    /// detached, counted, and returned for the caller to close.
    pub fn take_over(&mut self, key: K) -> Option<Link> {
        let old = self.sessions.get(&key).and_then(|s| s.link)?;
        self.close(old.id);
        self.takeovers += 1;
        Some(old)
    }

    /// A session, if known.
    pub fn get(&self, key: K) -> Option<&Slot<S>> {
        self.sessions.get(&key).map(|s| &**s)
    }

    /// A session, mutably.
    pub fn get_mut(&mut self, key: K) -> Option<&mut Slot<S>> {
        self.sessions.get_mut(&key).map(|s| &mut **s)
    }

    /// Whether `key` names a session.
    pub fn contains(&self, key: K) -> bool {
        self.sessions.contains_key(&key)
    }

    /// Every session, in key order.
    pub fn sessions(&self) -> impl Iterator<Item = (K, &Slot<S>)> + '_ {
        let mut all: Vec<(K, &Slot<S>)> = self.sessions.iter().map(|(k, s)| (*k, &**s)).collect();
        all.sort_unstable_by_key(|e| e.0);
        all.into_iter()
    }

    /// Sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Transports in their admission handshake.
    pub fn pending_count(&self) -> usize {
        self.pending
    }

    /// Transports open (pending or admitted).
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Transports taken over by a session's new one while still open here.
    pub fn takeovers(&self) -> u64 {
        self.takeovers
    }

    /// Inputs that named no open transport.
    pub fn stale(&self) -> u64 {
        self.stale
    }

    /// Sets (or, with `None`, stops) one of a session's timers.
    pub fn set_timer(&mut self, key: K, timer: SessionTimer, at: Option<Instant>) {
        let t = Timer::Session(key, timer);
        match at {
            Some(at) => self.timers.set(t, at),
            None => self.timers.stop(t),
        }
    }

    /// When one of a session's timers fires.
    pub fn timer(&self, key: K, timer: SessionTimer) -> Option<Instant> {
        self.timers.get(Timer::Session(key, timer))
    }

    /// Sets the liveness timer from the session core's clocks (stopped while it is down).
    pub fn schedule_live(&mut self, key: K) {
        let at = self.sessions.get(&key).and_then(|s| s.core.deadline());
        self.set_timer(key, SessionTimer::Live, at);
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The earliest timer due at `now`, stopped as it is returned.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Timer<K>> {
        self.timers.pop_expired(now)
    }

    /// Timers set (handshakes and sessions').
    #[cfg(test)]
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Every timer set, for checks.
    #[cfg(test)]
    pub fn timers(&self) -> impl Iterator<Item = (Timer<K>, Instant)> + '_ {
        self.timers.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::DeliveryConfig;

    type E = Endpoint<u32, (), ()>;

    fn core() -> SessionCore {
        SessionCore::reliable(DeliveryConfig::default(), 16, None, Instant::ZERO)
    }

    #[test]
    fn pending_transports_are_bounded_and_timed() {
        let mut e = E::new(2);
        assert_eq!(
            e.open(Link::main(1), (), Some(Instant::from_secs(5))),
            Ok(())
        );
        assert_eq!(e.open(Link::main(1), (), None), Err(Refusal::Duplicate));
        assert_eq!(
            e.open(Link::main(2), (), Some(Instant::from_secs(3))),
            Ok(())
        );
        assert_eq!(e.open(Link::main(3), (), None), Err(Refusal::Full));
        assert_eq!(e.next_deadline(), Some(Instant::from_secs(3)));
        assert!(e.close(2).is_some());
        assert_eq!(e.pending_count(), 1);
        assert_eq!(
            e.pop_expired(Instant::from_secs(9)),
            Some(Timer::Handshake(1))
        );
        assert_eq!(e.open(Link::main(3), (), None), Ok(()));
    }

    #[test]
    fn a_stale_or_reused_id_is_counted_and_never_routed() {
        let mut e = E::new(4);
        e.open(Link::main(1), (), None).unwrap();
        assert!(e.route(Link::main(9)).is_none());
        assert!(e.route(Link::feed(1)).is_none(), "same id, other channel");
        assert!(e.route(Link::main(1)).is_some());
        assert_eq!(e.stale(), 2);
    }

    #[test]
    fn attach_admits_then_takes_over_a_half_open_transport() {
        let mut e = E::new(4);
        e.open(Link::main(1), (), Some(Instant::from_secs(5)))
            .unwrap();
        e.insert(7, core(), ());
        e.attach(7, Link::main(1));
        assert_eq!(e.pending_count(), 0);
        assert_eq!(e.timer_count(), 0, "the handshake timer stopped");
        // The client comes back on a new transport while the old one looks open.
        e.open(Link::main(2), (), Some(Instant::from_secs(6)))
            .unwrap();
        e.set_timer(7, SessionTimer::Expire, Some(Instant::from_secs(30)));
        assert_eq!(e.take_over(7), Some(Link::main(1)));
        e.attach(7, Link::main(2));
        assert_eq!(e.takeovers(), 1);
        assert_eq!(e.take_over(8), None);
        assert!(e.peek(1).is_none(), "the old transport is forgotten");
        assert_eq!(e.get(7).unwrap().link, Some(Link::main(2)));
        assert_eq!(e.timer(7, SessionTimer::Expire), None);
        // Closing the session's transport detaches it; removing it forgets everything.
        assert_eq!(e.close(2).unwrap().session, Some(7));
        assert_eq!(e.get(7).unwrap().link, None);
        e.set_timer(7, SessionTimer::Profile, Some(Instant::from_secs(1)));
        assert!(e.remove(7).is_some());
        assert_eq!((e.timer_count(), e.route_count()), (0, 0));
    }
}
