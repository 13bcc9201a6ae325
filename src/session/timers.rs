//! Named timers: each machine's deadlines in one table, the next deadline derived in one
//! place (quinn-proto's `TimerTable` is the model).
//!
//! - [`TimerTable`]: a fixed set of timers, one slot per name (a client's handshake,
//!   reconnection, give-up and liveness timers).
//! - [`TimerQueue`]: timers keyed by a session or link, ordered by deadline, for servers:
//!   the next deadline is the first entry, so an idle registry of any size costs nothing
//!   per poll, and a timer is moved in O(log n).

use crate::time::Instant;
use alloc::collections::{BTreeMap, BTreeSet};

/// A timer's name: an enum whose variants index a [`TimerTable`].
pub trait TimerName: Copy + Eq {
    /// How many names there are.
    const COUNT: usize;
    /// This name's slot, below [`TimerName::COUNT`].
    fn index(self) -> usize;
    /// The name of a slot (the inverse of `index`).
    fn from_index(index: usize) -> Option<Self>;
}

/// Declares an enum of timer names and its [`TimerName`] impl (variants in slot order).
macro_rules! timer_names {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $crate::session::TimerName for $name {
            const COUNT: usize = [$($name::$variant),+].len();
            fn index(self) -> usize {
                self as usize
            }
            fn from_index(index: usize) -> Option<Self> {
                [$($name::$variant),+].get(index).copied()
            }
        }
    };
}
pub(crate) use timer_names;

/// One optional deadline per timer name.
///
/// ```
/// use tether::session::{TimerName, TimerTable};
/// use tether::Instant;
///
/// #[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// enum T { Handshake, GiveUp }
/// impl TimerName for T {
///     const COUNT: usize = 2;
///     fn index(self) -> usize { self as usize }
///     fn from_index(i: usize) -> Option<T> { [T::Handshake, T::GiveUp].get(i).copied() }
/// }
///
/// let mut timers = TimerTable::<T, 2>::new();
/// timers.set(T::GiveUp, Instant::from_secs(300));
/// timers.set(T::Handshake, Instant::from_secs(10));
/// assert_eq!(timers.next(), Some(Instant::from_secs(10)));
/// assert_eq!(timers.expired(Instant::from_secs(10)), Some(T::Handshake));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerTable<T, const N: usize> {
    at: [Option<Instant>; N],
    _names: core::marker::PhantomData<T>,
}

impl<T: TimerName, const N: usize> Default for TimerTable<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: TimerName, const N: usize> TimerTable<T, N> {
    /// No timer set.
    pub fn new() -> Self {
        TimerTable {
            at: [None; N],
            _names: core::marker::PhantomData,
        }
    }

    /// Sets `timer` to fire at `at`.
    pub fn set(&mut self, timer: T, at: Instant) {
        if let Some(slot) = self.at.get_mut(timer.index()) {
            *slot = Some(at);
        }
    }

    /// Sets or clears `timer`.
    pub fn set_opt(&mut self, timer: T, at: Option<Instant>) {
        if let Some(slot) = self.at.get_mut(timer.index()) {
            *slot = at;
        }
    }

    /// Stops `timer`.
    pub fn stop(&mut self, timer: T) {
        self.set_opt(timer, None);
    }

    /// Stops every timer.
    pub fn stop_all(&mut self) {
        self.at = [None; N];
    }

    /// When `timer` fires, if set.
    pub fn get(&self, timer: T) -> Option<Instant> {
        self.at.get(timer.index()).copied().flatten()
    }

    /// Whether `timer` is set and due at `now`.
    pub fn is_due(&self, now: Instant, timer: T) -> bool {
        self.get(timer).is_some_and(|t| t <= now)
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// The first timer (by slot order) due at `now`, stopped as it is returned.
    pub fn expired(&mut self, now: Instant) -> Option<T> {
        let i = self.at.iter().position(|t| t.is_some_and(|t| t <= now))?;
        self.at[i] = None;
        T::from_index(i)
    }
}

/// Deadlines keyed by `K` (a session, a link, a (kind, id) pair), ordered by time.
///
/// ```
/// use tether::session::TimerQueue;
/// use tether::Instant;
///
/// let mut q = TimerQueue::new();
/// q.set(7u64, Instant::from_secs(5));
/// q.set(8u64, Instant::from_secs(3));
/// q.set(7u64, Instant::from_secs(1)); // moved
/// assert_eq!(q.next(), Some(Instant::from_secs(1)));
/// assert_eq!(q.pop_expired(Instant::from_secs(2)), Some(7));
/// assert_eq!(q.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerQueue<K> {
    by_time: BTreeSet<(Instant, K)>,
    by_key: BTreeMap<K, Instant>,
}

impl<K: Ord + Copy> Default for TimerQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Copy> TimerQueue<K> {
    /// No timer set.
    pub fn new() -> Self {
        TimerQueue {
            by_time: BTreeSet::new(),
            by_key: BTreeMap::new(),
        }
    }

    /// Sets (or moves) `key`'s timer to `at` (nothing to do when it is set there already:
    /// servers set a session's timers again after every input that touches it).
    pub fn set(&mut self, key: K, at: Instant) {
        if self.by_key.get(&key) == Some(&at) {
            return;
        }
        if let Some(old) = self.by_key.insert(key, at) {
            self.by_time.remove(&(old, key));
        }
        self.by_time.insert((at, key));
    }

    /// Stops `key`'s timer.
    pub fn stop(&mut self, key: K) {
        if let Some(old) = self.by_key.remove(&key) {
            self.by_time.remove(&(old, key));
        }
    }

    /// When `key`'s timer fires.
    pub fn get(&self, key: K) -> Option<Instant> {
        self.by_key.get(&key).copied()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// The earliest timer due at `now`, stopped as it is returned.
    pub fn pop_expired(&mut self, now: Instant) -> Option<K> {
        let &(at, key) = self.by_time.first()?;
        if at > now {
            return None;
        }
        self.by_time.pop_first();
        self.by_key.remove(&key);
        Some(key)
    }

    /// Timers set.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no timer is set.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every timer, by key.
    pub fn iter(&self) -> impl Iterator<Item = (K, Instant)> + '_ {
        self.by_key.iter().map(|(k, t)| (*k, *t))
    }
}
