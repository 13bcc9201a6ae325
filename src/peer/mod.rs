//! The composed machine most users drive: a connection profile with journal sync on top.
//!
//! A [`Peer`] wraps a connection machine (any [`Profile`]: the dual-channel client or
//! server after R-Type, the token-merge client or registry after dop) and keeps one
//! [`JournalSync`] per session over it:
//!
//! - when a session comes up (fresh or resumed), its sync is told, and it resyncs from the
//!   confirmed marks by itself;
//! - messages the connection does not consume go to that session's sync;
//! - what the sync wants to send goes out through the connection, which queues it (bounded)
//!   while the session is down and flushes it in order once it is back;
//! - entries are deduplicated by the journal, so the application sees each exactly once
//!   ([`SyncEvent::Applied`]);
//! - on a server, an entry learned from one session is broadcast to the others;
//! - when a session's sync heard nothing from its peer for
//!   [`SyncConfig::idle_timeout`], it sends status 408 and the peer drops the session's
//!   transport ([`Profile::drop_transport`]), so the connection's resume path runs.
//!   Everything the connection received counts ([`Profile::last_received`]), its
//!   heartbeats included: with the keepalive on, a live peer with nothing to say is never
//!   dropped, and a silent one is the session core's to notice first (1.5 x keepalive).
//!
//! The peer owns its journal, one store whatever the number of sessions: each session's
//! sync is handed the store for the length of a call, so no session can hold a copy that
//! drifts from the others, and a `Peer` is `Send` whenever its connection and store are.

mod profiles;
mod snapshot;

pub use snapshot::{Handover, PeerSnapshot};

use crate::driver::{earliest, HasOrigin, Input, Machine, Origin, Outbox, Output};
use crate::session::{Event, Outcome};
use crate::sync::journal::{
    JournalStore, JournalSync, Marks, Role, StoreError, SyncCommand, SyncConfig, SyncError,
    SyncEvent, SyncOutput,
};
use crate::time::Instant;
use crate::wire::{Entry, Message};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt::Debug;

/// A connection machine that a [`Peer`] can put journal sync on: any machine that speaks
/// the shared [`Event`] vocabulary, with a way to send on a session.
pub trait Profile:
    Machine<Event = Event<<Self as Profile>::Session, <Self as Profile>::Notice>>
{
    /// Names a session: `()` on a client, a session or player id on a server.
    type Session: Copy + Ord + Debug;
    /// The profile's own notices, passed to the application as they are.
    type Notice;
    /// The journal-sync role a peer over this machine takes (clients ask first).
    const ROLE: Role;

    /// Sends a message to a session on `main` (queued while the session is down). The
    /// message is borrowed so that one refused for want of room (see
    /// [`Profile::is_full`]) can be offered again later.
    fn send(
        &mut self,
        now: Instant,
        session: Self::Session,
        message: &Message,
    ) -> Result<(), Self::Error>;

    /// Whether `error`, returned by [`Profile::send`], says the session's replay buffer is
    /// full: the peer is not acknowledging what it was sent. A [`Peer`] then holds the
    /// session's sync back (nothing lost, nothing more made) until [`Profile::queued`]
    /// goes down.
    fn is_full(error: &Self::Error) -> bool;

    /// Messages the connection holds for the session (sent and not yet acknowledged, or
    /// waiting for a transport); 0 for an unknown session.
    fn queued(&self, session: Self::Session) -> usize;

    /// The session's sync layer started over (its transport is down): sync messages the
    /// connection still holds for it are obsolete and must not be delivered after a
    /// resumption (the session core's delivery would otherwise replay them).
    fn supersede_sync(&mut self, session: Self::Session);

    /// When bytes last arrived on the session's current `main` transport: anything, the
    /// peer's messages and also the acknowledgements and heartbeats the connection
    /// consumes itself; `None` while the session has no transport up. A [`Peer`] counts it
    /// as the session's sync having heard from its peer, so that a live peer with nothing
    /// to say is never taken for a silent one (see the [module docs](self)).
    fn last_received(&self, session: Self::Session) -> Option<Instant>;

    /// Closes the session's current `main` transport as if the network had dropped it,
    /// and takes the machine's own path after a lost transport: a client reconnects and
    /// resumes, a server keeps the session for its client to resume. Nothing if the
    /// session is not up on a transport. A [`Peer`] calls it after its sync sent status
    /// 408 ([`SyncEvent::IdleTimeout`]).
    fn drop_transport(&mut self, now: Instant, session: Self::Session);
}

/// What the application asks of a [`Peer`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum PeerCommand<C, S> {
    /// A command for the connection machine.
    Connection(C),
    /// Append an entry to the journal and broadcast it to every session that is up. An
    /// (author, resource) the journal holds already is refused with
    /// [`StoreError::Duplicate`]. Mint the resource ids of the node's own entries with
    /// [`ResourceIds`](crate::sync::journal::ResourceIds), so that a restart with a lost
    /// journal never repeats one.
    Append(Entry),
    /// A sync command for one session (ignored if the session is unknown).
    Sync(S, SyncCommand),
}

/// What a [`Peer`] tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent<E, S> {
    /// An event of the connection machine (connected, resumed, lost, ...).
    Connection(E),
    /// An event of a session's journal sync (applied entries, confirmations, ...).
    Sync(S, SyncEvent),
    /// The connection's replay buffer for this session is full: its peer is not
    /// acknowledging what it was sent (a slow or stuck reader, or one that means harm).
    /// The session's sync is held back, with its next message kept, and goes on by itself
    /// once the peer acknowledges; nothing is lost and nothing more is made for it
    /// meanwhile. Reported once per stall.
    Backlogged(S),
}

/// Why a [`Peer`] refused an input.
#[derive(Debug, thiserror::Error)]
pub enum PeerError<E: core::error::Error> {
    /// The connection machine refused.
    #[error("connection: {0}")]
    Connection(E),
    /// A session's sync refused.
    #[error("sync: {0}")]
    Sync(#[from] SyncError),
    /// The journal refused an append.
    #[error("journal: {0}")]
    Store(#[from] StoreError),
}

impl<E: core::error::Error + HasOrigin> PeerError<E> {
    /// Who misbehaved: the connection's own answer for its errors, the sync's for a sync
    /// error; a journal that refused an append is the local application's.
    pub fn origin(&self) -> Origin {
        match self {
            PeerError::Connection(e) => e.origin(),
            PeerError::Sync(e) => e.origin(),
            PeerError::Store(_) => Origin::Local,
        }
    }
}

impl<E: core::error::Error + HasOrigin> HasOrigin for PeerError<E> {
    fn origin(&self) -> Origin {
        PeerError::origin(self)
    }
}

/// A connection profile with journal sync on top. See the [module docs](self).
///
/// A token-merge client and server, each a `Peer`: once the session is up, each side asks
/// for the other's journal and the client learns the server's entry.
///
/// ```
/// use tether::connect::merge::{self, MergeClientEvent, Outcome};
/// use tether::peer::{Peer, PeerCommand, PeerEvent};
/// use tether::sync::journal::{JournalStore, MemJournal, Role, SyncConfig, SyncEvent};
/// use tether::wire::Entry;
/// use tether::{Channel, Duration, Input, Instant, Link, Machine, Output, Token};
///
/// let mut now = Instant::ZERO;
/// // The server: the token-merge registry (tokens from the caller's randomness).
/// let registry = merge::MergeServer::new(merge::MergeServerConfig::default(), || Token::new(&[b'S'; 16]).unwrap());
/// let journal = MemJournal::new(1, 10_000);
/// let mut server = Peer::new(registry, SyncConfig::default(), journal);
/// let entry = Entry::new(b"srv", b"r1", b"hello");
/// server.handle_input(now, Input::Command(PeerCommand::Append(entry))).unwrap();
///
/// // The client: one token-merge session.
/// let conn = merge::MergeClient::new(now, merge::MergeClientConfig::default(), Token::new(&[b'C'; 16]).unwrap()).unwrap();
/// let journal = MemJournal::new(2, 10_000);
/// let mut client = Peer::new(conn, SyncConfig::default(), journal);
///
/// // The client asks for a transport; the caller connects one (link 1 on both sides).
/// assert_eq!(client.poll_output(), Output::Open(Channel::Main));
/// client.handle_input(now, Input::Opened(Link::main(1))).unwrap();
/// server.handle_input(now, Input::Opened(Link::main(1))).unwrap();
///
/// // Carry the bytes both ways and fire the timers, as a driver does over a socket.
/// let events = drive(&mut now, &mut client, &mut server);
/// assert!(events.contains(&PeerEvent::Connection(MergeClientEvent::Up { session: (), outcome: Outcome::Fresh })));
/// assert!(events.iter().any(|e| matches!(e,
///     PeerEvent::Sync((), SyncEvent::Applied { resource, .. }) if resource == &b"r1"[..])));
/// assert!(client.store().contains(b"srv", b"r1"));
///
/// /// Shuttles `a`'s and `b`'s transmits to each other, and fires their timers for a
/// /// second of quiet at most; returns `a`'s events.
/// fn drive<A: Machine, B: Machine>(now: &mut Instant, a: &mut A, b: &mut B) -> Vec<A::Event> {
///     let mut events = Vec::new();
///     for _ in 0..1_000 {
///         let mut moved = false;
///         loop {
///             match a.poll_output() {
///                 Output::Transmit(t) => {
///                     b.handle_input(*now, Input::Received(t.link, t.payload)).unwrap();
///                     moved = true;
///                 }
///                 Output::Event(e) => events.push(e),
///                 Output::Wait(_) => break,
///                 _ => {}
///             }
///         }
///         loop {
///             match b.poll_output() {
///                 Output::Transmit(t) => {
///                     a.handle_input(*now, Input::Received(t.link, t.payload)).unwrap();
///                     moved = true;
///                 }
///                 Output::Wait(_) => break,
///                 _ => {}
///             }
///         }
///         if moved {
///             continue;
///         }
///         match [a.poll_timeout(), b.poll_timeout()].into_iter().flatten().min() {
///             Some(t) if t <= *now + Duration::from_secs(1) => {
///                 *now = (*now).max(t);
///                 if a.poll_timeout().is_some_and(|d| d <= *now) {
///                     a.handle_input(*now, Input::Timeout).unwrap();
///                 }
///                 if b.poll_timeout().is_some_and(|d| d <= *now) {
///                     b.handle_input(*now, Input::Timeout).unwrap();
///                 }
///             }
///             _ => break,
///         }
///     }
///     events
/// }
/// ```
pub struct Peer<P: Profile, S> {
    conn: P,
    role: Role,
    config: SyncConfig,
    store: S,
    syncs: BTreeMap<P::Session, JournalSync>,
    up: BTreeMap<P::Session, bool>,
    out: Outbox<PeerEvent<P::Event, P::Session>>,
    conn_deadline: Option<Instant>,
    now: Instant,
    /// Errors of sends made while pumping that are not a full buffer (the connection
    /// refused a sync message: a configuration the sync cannot run on, such as dop's text
    /// encoding): kept to return from the next `handle_input`.
    deferred: Option<PeerError<P::Error>>,
    /// Sessions whose sync is held back because the connection's replay buffer was full:
    /// the sync goes on once the connection holds fewer messages than then (an
    /// acknowledgement arrived), so a stalled session costs no work per input.
    backlogged: BTreeMap<P::Session, Stall>,
    /// Sessions that taught us entries not yet relayed to the others. The relay waits
    /// until the queued output is drained, so entries learned from many inputs go out as
    /// one broadcast per session rather than one per entry.
    relay_from: BTreeSet<P::Session>,
}

/// A session held back because its connection's replay buffer was full.
#[derive(Debug, Clone, Copy)]
struct Stall {
    /// Messages the connection held for it then: the stall ends when fewer are held.
    held: usize,
    /// Entries were appended or learned meanwhile: broadcast when the stall ends.
    missed: bool,
}

impl<P, S> Peer<P, S>
where
    P: Profile,
    S: JournalStore,
{
    /// A peer over `conn`, syncing `store` (the one journal of every session). The sync
    /// role is the profile's: a client's peer asks first.
    pub fn new(conn: P, config: SyncConfig, store: S) -> Self {
        let mut peer = Peer {
            conn,
            role: P::ROLE,
            config,
            store,
            syncs: BTreeMap::new(),
            up: BTreeMap::new(),
            out: Outbox::new(),
            conn_deadline: None,
            now: Instant::ZERO,
            deferred: None,
            backlogged: BTreeMap::new(),
            relay_from: BTreeSet::new(),
        };
        // The connection may have output before any input (a client asks for its first
        // transport at construction): surface it, or the first poll would say Wait(None).
        peer.pump();
        peer
    }

    /// The connection machine.
    pub fn connection(&self) -> &P {
        &self.conn
    }

    /// The connection machine, to call its own import and export methods (a token-merge
    /// server's [`import_ended`](crate::connect::merge::MergeServer::import_ended), say).
    /// Messages sent through it directly bypass the sessions' journal sync.
    pub fn connection_mut(&mut self) -> &mut P {
        &mut self.conn
    }

    /// The journal.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The journal, to change it directly: appends made here are not broadcast (use
    /// [`PeerCommand::Append`]), and the sessions see them at their next resync.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The journal back, and the connection, ending the peer.
    pub fn into_parts(self) -> (P, S) {
        (self.conn, self.store)
    }

    /// A session's confirmed marks, if the session is known.
    pub fn marks(&self, session: P::Session) -> Option<Marks> {
        self.syncs.get(&session).map(|s| s.marks())
    }

    /// Sessions known, and whether each is up.
    pub fn sessions(&self) -> impl Iterator<Item = (P::Session, bool)> + '_ {
        self.up.iter().map(|(s, u)| (*s, *u))
    }

    /// A session's sync machine.
    pub fn sync(&self, session: P::Session) -> Option<&JournalSync> {
        self.syncs.get(&session)
    }

    /// A session's sync, created down if the session is new (a free function of the
    /// fields it needs, so that the caller can hand the store to it at the same time).
    fn sync_for<'a>(
        syncs: &'a mut BTreeMap<P::Session, JournalSync>,
        role: Role,
        config: &SyncConfig,
        session: P::Session,
    ) -> &'a mut JournalSync {
        syncs
            .entry(session)
            .or_insert_with(|| JournalSync::new(role, config.clone()))
    }

    /// Moves everything the connection and the syncs have to say into our outbox, until
    /// neither has anything left (a sync's send can make the connection transmit).
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            loop {
                match self.conn.poll_output() {
                    Output::Wait(d) => {
                        self.conn_deadline = d;
                        break;
                    }
                    Output::Event(e) => {
                        progressed = true;
                        self.route(e);
                    }
                    Output::Transmit(t) => self.out.send_raw(t.link, t.payload),
                    Output::Open(c) => self.out.open(c),
                    Output::Close(l) => self.out.close(l),
                }
            }
            // Only the sessions with something to say: a server has many idle ones, and
            // looking each up on every input would cost n log n per input.
            self.unstall();
            let ready: Vec<P::Session> = self
                .syncs
                .iter()
                .filter(|(session, s)| s.has_output() && !self.backlogged.contains_key(session))
                .map(|(session, _)| *session)
                .collect();
            for session in ready {
                let store = &self.store;
                while let Some(o) = self.syncs.get_mut(&session).and_then(|s| s.poll(store)) {
                    match o {
                        SyncOutput::Send(m) => match self.conn.send(self.now, session, &m) {
                            Ok(()) => progressed = true,
                            Err(e) if P::is_full(&e) => {
                                // Kept, and offered again once the peer acknowledges.
                                if let Some(s) = self.syncs.get_mut(&session) {
                                    s.unpoll(SyncOutput::Send(m));
                                }
                                let held = self.conn.queued(session);
                                self.backlogged.insert(
                                    session,
                                    Stall {
                                        held,
                                        missed: false,
                                    },
                                );
                                self.out.event(PeerEvent::Backlogged(session));
                                break;
                            }
                            Err(e) => {
                                progressed = true;
                                self.deferred.get_or_insert(PeerError::Connection(e));
                            }
                        },
                        SyncOutput::Event(e) => {
                            progressed = true;
                            match &e {
                                SyncEvent::Applied { .. } => {
                                    self.relay_from.insert(session);
                                }
                                // The 408 went out just before (the sync queues it first):
                                // drop the link after it, as SDMP says, so that the
                                // connection's resume path runs. The Down it reports is
                                // routed on the next turn of this loop.
                                SyncEvent::IdleTimeout => {
                                    self.conn.drop_transport(self.now, session)
                                }
                                _ => {}
                            }
                            self.out.event(PeerEvent::Sync(session, e));
                        }
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// Ends the stalls whose peer acknowledged something since: their sync goes on, with
    /// one broadcast of what they missed meanwhile.
    fn unstall(&mut self) {
        if self.backlogged.is_empty() {
            return;
        }
        let conn = &self.conn;
        let ended: Vec<(P::Session, bool)> = self
            .backlogged
            .iter()
            .filter(|(session, stall)| conn.queued(**session) < stall.held)
            .map(|(session, stall)| (*session, stall.missed))
            .collect();
        for (session, missed) in ended {
            self.backlogged.remove(&session);
            if missed {
                if let Some(sync) = self.syncs.get_mut(&session) {
                    let _ = sync.command(self.now, &mut self.store, SyncCommand::Broadcast);
                }
            }
        }
    }

    /// Entries learned from some sessions are news for every other session that is up
    /// (a session that was the only source has them already).
    fn relay(&mut self) {
        let from = core::mem::take(&mut self.relay_from);
        let only = match (from.len(), from.first()) {
            (1, Some(s)) => Some(*s),
            _ => None,
        };
        self.broadcast(self.now, only);
        self.pump();
    }

    fn route(&mut self, event: P::Event) {
        let now = self.now;
        match &event {
            Event::Up { session, outcome } => {
                let session = *session;
                self.up.insert(session, true);
                if *outcome == Outcome::Fresh {
                    // Nothing carries over into a fresh session, marks included: they
                    // confirmed positions in a conversation that no longer exists.
                    self.syncs.remove(&session);
                }
                let sync = Self::sync_for(&mut self.syncs, self.role, &self.config, session);
                sync.connection_up(now, &self.store);
            }
            Event::Down { session } => {
                let session = *session;
                self.up.insert(session, false);
                self.backlogged.remove(&session);
                if let Some(s) = self.syncs.get_mut(&session) {
                    s.connection_down(now);
                }
                self.conn.supersede_sync(session);
            }
            Event::Ended { session, .. } => {
                self.up.remove(session);
                self.backlogged.remove(session);
                if let Some(mut s) = self.syncs.remove(session) {
                    s.connection_down(now);
                }
            }
            Event::Message { .. } => {
                let Event::Message { session, message } = event else {
                    return;
                };
                // A message for a session never reported up is counted as the sync of a
                // fresh session would count it: by creating it down (it drops it).
                let sync = Self::sync_for(&mut self.syncs, self.role, &self.config, session);
                return sync.handle_message(now, &mut self.store, message);
            }
            Event::Notice(_) => {}
        }
        self.out.event(PeerEvent::Connection(event));
    }
}

impl<P, S> Machine for Peer<P, S>
where
    P: Profile,
    P::Error: 'static,
    S: JournalStore,
{
    type Command = PeerCommand<P::Command, P::Session>;
    type Event = PeerEvent<P::Event, P::Session>;
    type Error = PeerError<P::Error>;

    fn handle_input(
        &mut self,
        now: Instant,
        input: Input<Self::Command>,
    ) -> Result<(), Self::Error> {
        self.now = self.now.max(now);
        let now = self.now;
        let result = match input {
            Input::Command(PeerCommand::Append(entry)) => self.append(now, entry),
            Input::Command(PeerCommand::Sync(session, cmd)) => match self.syncs.get_mut(&session) {
                Some(s) => s
                    .command(now, &mut self.store, cmd)
                    .map_err(PeerError::Sync),
                None => Err(PeerError::Sync(SyncError::NotConnected)),
            },
            Input::Command(PeerCommand::Connection(c)) => self
                .conn
                .handle_input(now, Input::Command(c))
                .map_err(PeerError::Connection),
            Input::Timeout => {
                for (session, s) in self.syncs.iter_mut() {
                    if s.deadline().is_some_and(|d| d <= now) {
                        // Whatever the connection received counts against the idle
                        // timeout, heartbeats included: only a peer from which nothing
                        // at all arrived is silent (read here, when the timer is due,
                        // rather than on every input).
                        if let Some(at) = self.conn.last_received(*session) {
                            s.heard_from_peer(at);
                        }
                        s.handle_timeout(now);
                    }
                }
                if self.conn_deadline.is_some_and(|d| d <= now) {
                    self.conn
                        .handle_input(now, Input::Timeout)
                        .map_err(PeerError::Connection)
                } else {
                    Ok(())
                }
            }
            Input::Opened(l) => self
                .conn
                .handle_input(now, Input::Opened(l))
                .map_err(PeerError::Connection),
            Input::Closed(l) => self
                .conn
                .handle_input(now, Input::Closed(l))
                .map_err(PeerError::Connection),
            Input::Received(l, b) => self
                .conn
                .handle_input(now, Input::Received(l, b))
                .map_err(PeerError::Connection),
        };
        self.pump();
        match (result, self.deferred.take()) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(e)) => Err(e),
            (Ok(()), None) => Ok(()),
        }
    }

    fn poll_output(&mut self) -> Output<Self::Event> {
        // The deadline looks at every session: only compute it when nothing is queued, or
        // draining a relay to n sessions would cost n^2.
        if self.out.is_empty() && !self.relay_from.is_empty() {
            self.relay();
        }
        match self.out.pop() {
            Some(out) => out,
            None => Output::Wait(self.poll_timeout_inner()),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if !self.relay_from.is_empty() {
            return Some(self.now); // the relay is output not yet queued
        }
        let d = self.poll_timeout_inner();
        self.out.timeout(self.now, d)
    }

    /// When its connection is: journal sync runs on the connection and ends with it.
    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }
}

impl<P, S> Peer<P, S>
where
    P: Profile,
    S: JournalStore,
{
    fn poll_timeout_inner(&self) -> Option<Instant> {
        earliest(
            core::iter::once(self.conn_deadline).chain(self.syncs.values().map(|s| s.deadline())),
        )
    }

    fn append(&mut self, now: Instant, entry: Entry) -> Result<(), PeerError<P::Error>> {
        // The limits every peer checks on receive: an entry over them would be refused by
        // all of them, and stay in this journal alone.
        if entry.author.len() > crate::wire::MAX_ID_LEN
            || entry.resource.len() > crate::wire::MAX_ID_LEN
            || entry.payload.len() > self.config.max_payload
        {
            return Err(PeerError::Sync(SyncError::EntryTooLarge));
        }
        if self.store.contains(&entry.author, &entry.resource) {
            // Already there: appending twice would apply it twice, and doing nothing would
            // lose the caller's entry without a word.
            return Err(PeerError::Store(StoreError::Duplicate));
        }
        self.store.append(entry)?;
        self.broadcast(now, None);
        Ok(())
    }

    /// Tells every session that is up, but `except`, about the journal's new entries. A
    /// backlogged session is only marked: it gets one broadcast of everything new when its
    /// stall ends, not one per entry piling up while its peer reads nothing.
    fn broadcast(&mut self, now: Instant, except: Option<P::Session>) {
        for (session, sync) in self.syncs.iter_mut() {
            if Some(*session) == except || !self.up.get(session).copied().unwrap_or(false) {
                continue;
            }
            if let Some(stall) = self.backlogged.get_mut(session) {
                stall.missed = true;
                continue;
            }
            // A broadcast refused (not connected) is harmless: the next resync sends it.
            let _ = sync.command(now, &mut self.store, SyncCommand::Broadcast);
        }
    }
}
