//! The application's side of a running machine: a cloneable [`Handle`] to command it and an
//! [`Events`] receiver to hear it.

use crate::driver::Ctl;
use bytes::Bytes;
use tether::connect::dual::DualClientCommand;
use tether::connect::merge::MergeClientCommand;
use tether::peer::{Peer, PeerCommand, PeerError, Profile};
use tether::sync::journal::{JournalStore, ResourceIds, StoreError, SyncCommand};
use tether::wire::{Entry, Message};
use tether::{Input, Machine};
use tokio::sync::{mpsc, oneshot};

/// The driver is gone: [`Handle::shutdown`] was called (or the runtime shut down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl std::error::Error for Gone {}

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the tether driver has stopped")
    }
}

/// Why [`Handle::try_command`] did not take a command (it is given back).
#[derive(Debug, PartialEq, Eq)]
pub enum TryCommandError<C> {
    /// The command channel is full ([`Options::commands_capacity`](crate::Options)).
    Full(C),
    /// The driver is gone.
    Gone(C),
}

impl<C> std::fmt::Display for TryCommandError<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TryCommandError::Full(_) => f.write_str("the command channel is full"),
            TryCommandError::Gone(_) => f.write_str("the tether driver has stopped"),
        }
    }
}

impl<C: std::fmt::Debug> std::error::Error for TryCommandError<C> {}

/// A cloneable, `Send + Sync` handle to a machine that runs in its driver task: the shape
/// of rumqttc's client. Every clone talks to the same driver, through one bounded channel
/// taken in order, so a command sent after [`Handle::cut_transports`] returned is seen by
/// the machine after the cut.
///
/// The driver stops on [`Handle::shutdown`] (which gives the machine back), or when the
/// last handle is dropped (the machine is then dropped with it, its transports closed
/// gracefully).
///
/// ```no_run
/// # async fn f(handle: tether_tokio::Handle<tether::Peer<tether::connect::merge::MergeClient, tether::sync::journal::MemJournal>>) -> Result<(), tether_tokio::Gone> {
/// use tether::sync::journal::JournalStore;
/// use tether::wire::Entry;
/// // From any task: the handle is Clone + Send + Sync.
/// let h = handle.clone();
/// tokio::spawn(async move { h.append(Entry::new(b"me", b"r1", b"hello")).await });
/// // Read the machine while it runs.
/// let head = handle.with_machine(|peer| peer.store().head()).await?;
/// // Stop, and take the machine back.
/// let peer = handle.shutdown().await?;
/// # let _ = (head, peer); Ok(()) }
/// ```
pub struct Handle<M: Machine> {
    pub(crate) tx: mpsc::Sender<Ctl<M>>,
    pub(crate) start: tokio::time::Instant,
}

impl<M: Machine> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Handle {
            tx: self.tx.clone(),
            start: self.start,
        }
    }
}

impl<M: Machine> std::fmt::Debug for Handle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("running", &!self.tx.is_closed())
            .finish()
    }
}

impl<M> Handle<M>
where
    M: Machine + Send + 'static,
    M::Command: Send,
{
    /// Gives the machine an application command (`Input::Command`), waiting while the
    /// command channel is full. Returns once the driver has the command, not once the
    /// machine took it: a refusal is traced (warn); use [`Handle::apply`] to get it.
    pub async fn command(&self, command: M::Command) -> Result<(), Gone> {
        self.tx.send(Ctl::Command(command)).await.map_err(|_| Gone)
    }

    /// [`Handle::command`] without waiting: fails if the channel is full.
    pub fn try_command(&self, command: M::Command) -> Result<(), TryCommandError<M::Command>> {
        self.tx
            .try_send(Ctl::Command(command))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(Ctl::Command(c)) => TryCommandError::Full(c),
                mpsc::error::TrySendError::Closed(Ctl::Command(c)) => TryCommandError::Gone(c),
                _ => unreachable!("a command was sent"),
            })
    }

    /// Gives the machine a command and waits for its verdict (`handle_input`'s result).
    ///
    /// ```no_run
    /// # async fn f(handle: tether_tokio::Handle<tether::Peer<tether::connect::merge::MergeClient, tether::sync::journal::MemJournal>>) -> Result<(), tether_tokio::Gone> {
    /// use tether::peer::PeerCommand;
    /// use tether::wire::Entry;
    /// let entry = Entry::new(b"me", b"r1", b"hello");
    /// handle.apply(PeerCommand::Append(entry.clone())).await?.expect("a new entry");
    /// // The same (author, resource) again is refused by the journal.
    /// assert!(handle.apply(PeerCommand::Append(entry)).await?.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn apply(&self, command: M::Command) -> Result<Result<(), M::Error>, Gone>
    where
        M::Command: 'static,
        M::Error: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let f = move |m: &mut M, now| {
            let _ = reply.send(m.handle_input(now, Input::Command(command)));
        };
        self.tx
            .send(Ctl::With(Box::new(f)))
            .await
            .map_err(|_| Gone)?;
        answer.await.map_err(|_| Gone)
    }

    /// Runs `f` on the machine in the driver task, between two inputs, and returns its
    /// result: to read a peer's store, its sessions, its statistics. If `f` changes the
    /// machine, the driver drains its outputs right after.
    ///
    /// The machine may be ahead of the [`Events`] the program has read: what `f` sees
    /// includes what the events still waiting in the channel report. Take those first
    /// (`Events::try_recv`) when a decision depends on both.
    pub async fn with_machine<R, F>(&self, f: F) -> Result<R, Gone>
    where
        R: Send + 'static,
        F: FnOnce(&mut M) -> R + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let f = move |m: &mut M, _now| {
            let _ = reply.send(f(m));
        };
        self.tx
            .send(Ctl::With(Box::new(f)))
            .await
            .map_err(|_| Gone)?;
        answer.await.map_err(|_| Gone)
    }

    /// **For tests and chaos:** cuts every open `main` transport at once, as a network
    /// loss would (no flush, no FIN handshake or close frame: the socket is dropped, the
    /// peer sees it end or reset), and tells the machine `Closed` for each, which takes its
    /// own path after a loss (a client reconnects and resumes). Returns how many were cut.
    /// `feed` sockets are left alone.
    pub async fn cut_transports(&self) -> Result<usize, Gone> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Ctl::Cut(reply)).await.map_err(|_| Gone)?;
        answer.await.map_err(|_| Gone)
    }

    /// Reads `events` until `done` holds of the machine: `done` runs on the machine (as
    /// [`Handle::with_machine`]) at once, then after each event received. The events read
    /// are dropped. `Err(Gone)` if the driver stops first. Bound the wait with
    /// `tokio::time::timeout`.
    ///
    /// Made for conditions that an event follows (a session up, entries learned from a
    /// peer) or that hold already: a change that no event reports (an append made
    /// through another handle meanwhile) is only seen at the next event. A command sent
    /// through the same handle before the call is seen by the first check.
    ///
    /// ```no_run
    /// # async fn f(handle: tether_tokio::Handle<tether::Peer<tether::connect::merge::MergeClient, tether::sync::journal::MemJournal>>, mut events: tether_tokio::Events<tether::peer::PeerEvent<tether::connect::merge::MergeClientEvent, ()>>) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tether::sync::journal::JournalStore;
    /// // Connected, within ten seconds.
    /// let up = handle.until(&mut events, |peer| peer.sessions().any(|(_, up)| up));
    /// tokio::time::timeout(Duration::from_secs(10), up).await??;
    /// // Then 100 lines in the journal, ours and the server's.
    /// handle.until(&mut events, |peer| peer.store().head() >= 100).await?;
    /// # Ok(()) }
    /// ```
    pub async fn until<F>(&self, events: &mut Events<M::Event>, done: F) -> Result<(), Gone>
    where
        F: Fn(&mut M) -> bool + Clone + Send + 'static,
    {
        while !self.with_machine(done.clone()).await? {
            events.recv().await.ok_or(Gone)?;
        }
        Ok(())
    }

    /// What the driver counted so far: transports opened, closed, cut, dials failed,
    /// inputs the machine refused.
    pub async fn stats(&self) -> Result<crate::Stats, Gone> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Ctl::Stats(reply)).await.map_err(|_| Gone)?;
        answer.await.map_err(|_| Gone)
    }

    /// Stops the driver and gives the machine back (its transports are closed gracefully,
    /// the machine is not told). It returns once every socket task has ended, at most
    /// [`Options::close_timeout`](crate::Options::close_timeout) and a margin later: what
    /// the machine sent last (a formal disconnection, say) has been written and each
    /// transport's close done, so a program may exit right after. Only the first call gets
    /// the machine; later ones get [`Gone`].
    pub async fn shutdown(&self) -> Result<M, Gone> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Ctl::Shutdown(reply)).await.map_err(|_| Gone)?;
        answer.await.map_err(|_| Gone)
    }

    /// tether's `now` for this machine (microseconds since its
    /// [`Options::start`](crate::Options::start)): what to give a machine's own methods in
    /// [`Handle::with_machine`].
    pub fn now(&self) -> tether::Instant {
        tether::Instant::from_micros(self.start.elapsed().as_micros() as u64)
    }

    /// Whether the driver still runs.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }
}

/// Conveniences for a [`Peer`](tether::peer::Peer) (any machine whose commands are
/// [`PeerCommand`]s).
impl<M, C, S> Handle<M>
where
    M: Machine<Command = PeerCommand<C, S>> + Send + 'static,
    M::Command: Send,
{
    /// Appends an entry to the peer's journal and broadcasts it (`PeerCommand::Append`).
    pub async fn append(&self, entry: Entry) -> Result<(), Gone> {
        self.command(PeerCommand::Append(entry)).await
    }

    /// A command for the peer's connection machine (`PeerCommand::Connection`).
    pub async fn connection(&self, command: C) -> Result<(), Gone> {
        self.command(PeerCommand::Connection(command)).await
    }

    /// A sync command for one session (`PeerCommand::Sync`).
    pub async fn sync(&self, session: S, command: SyncCommand) -> Result<(), Gone> {
        self.command(PeerCommand::Sync(session, command)).await
    }
}

/// A [`Peer`]'s journal while it runs: read it, append to it.
impl<P, S> Handle<Peer<P, S>>
where
    P: Profile + 'static,
    P::Command: Send,
    P::Session: Send,
    P::Error: Send,
    S: JournalStore + 'static,
    Peer<P, S>: Send,
{
    /// Appends an entry from `author` with `payload` under a fresh resource id, and
    /// broadcasts it (`PeerCommand::Append`): what every node that writes to the journal
    /// needs, in one step in the driver task. The id is minted by
    /// [`ResourceIds::mint_for`] from the journal as it is then (its epoch and a counter
    /// past its head, skipping any id the author holds), so ids never repeat, across
    /// restarts and lost journals too. Returns the entry appended, or the peer's refusal
    /// (a full journal, the store's error).
    ///
    /// ```no_run
    /// # async fn f(handle: tether_tokio::Handle<tether::Peer<tether::connect::merge::MergeClient, tether::sync::journal::MemJournal>>) -> Result<(), Box<dyn std::error::Error>> {
    /// let entry = handle.publish("alice", "hello").await??;
    /// assert_eq!(&entry.payload[..], b"hello");
    /// # Ok(()) }
    /// ```
    pub async fn publish(
        &self,
        author: impl AsRef<[u8]>,
        payload: impl AsRef<[u8]>,
    ) -> Result<Result<Entry, PeerError<P::Error>>, Gone> {
        let author = Bytes::copy_from_slice(author.as_ref());
        let payload = Bytes::copy_from_slice(payload.as_ref());
        let (reply, answer) = oneshot::channel();
        let f = move |peer: &mut Peer<P, S>, now| {
            let journal = peer.store();
            let minted = ResourceIds::for_journal(journal).mint_for(journal, &author);
            let result = match minted {
                // Only past 2^64 ids in one journal life.
                None => Err(PeerError::Store(StoreError::message("no resource id left"))),
                Some(resource) => {
                    let entry = Entry {
                        author,
                        resource,
                        payload,
                    };
                    let append = Input::Command(PeerCommand::Append(entry.clone()));
                    peer.handle_input(now, append).map(|()| entry)
                }
            };
            let _ = reply.send(result);
        };
        self.tx
            .send(Ctl::With(Box::new(f)))
            .await
            .map_err(|_| Gone)?;
        answer.await.map_err(|_| Gone)
    }

    /// The entries of the peer's journal from line `from` to its head, in order (the
    /// first line is 1, and 0 counts as 1); empty past the head. `entries(1)` is the
    /// whole journal;
    /// to show what arrived since the last call, ask from the line after the last one
    /// returned. The entries' bytes are shared with the journal's where the store keeps
    /// them in memory (`Bytes`), copied out of it otherwise.
    ///
    /// ```no_run
    /// # async fn f(handle: tether_tokio::Handle<tether::Peer<tether::connect::merge::MergeClient, tether::sync::journal::MemJournal>>, mut events: tether_tokio::Events<tether::peer::PeerEvent<tether::connect::merge::MergeClientEvent, ()>>) -> Result<(), tether_tokio::Gone> {
    /// // Print each entry once, as it arrives.
    /// let mut next = 1;
    /// while events.recv().await.is_some() {
    ///     for entry in handle.entries(next).await? {
    ///         next += 1;
    ///         println!("{}: {}", entry.author.escape_ascii(), entry.payload.escape_ascii());
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn entries(&self, from: u64) -> Result<Vec<Entry>, Gone> {
        self.with_machine(move |peer| {
            let journal = peer.store();
            (from.max(1)..=journal.head())
                .filter_map(|seq| journal.entry(seq))
                .collect()
        })
        .await
    }
}

/// The commands a client connection machine shares: send on `main`, leave for good.
pub trait ClientCommand: Sized {
    /// Sends a message on `main` (queued, bounded, while not connected).
    fn send(message: Message) -> Self;
    /// Formal disconnection: the session ends for good on both sides.
    fn disconnect() -> Self;
}

impl ClientCommand for MergeClientCommand {
    fn send(message: Message) -> Self {
        MergeClientCommand::Send(message)
    }
    fn disconnect() -> Self {
        MergeClientCommand::Disconnect
    }
}

impl ClientCommand for DualClientCommand {
    fn send(message: Message) -> Self {
        DualClientCommand::Send(message)
    }
    fn disconnect() -> Self {
        DualClientCommand::Disconnect
    }
}

/// Conveniences for a client [`Peer`](tether::peer::Peer) (token-merge or dual-channel).
impl<M, C, S> Handle<M>
where
    M: Machine<Command = PeerCommand<C, S>> + Send + 'static,
    M::Command: Send,
    C: ClientCommand,
{
    /// Sends a message on `main` through the connection (`Send`).
    pub async fn send(&self, message: Message) -> Result<(), Gone> {
        self.connection(C::send(message)).await
    }

    /// Leaves for good (`Disconnect`): the session ends on both sides.
    pub async fn disconnect(&self) -> Result<(), Gone> {
        self.connection(C::disconnect()).await
    }
}

/// What the machine tells the application, in order: a bounded channel
/// ([`Options::events_capacity`](crate::Options::events_capacity)).
///
/// If the application does not read, the driver waits once the channel is full
/// (back-pressure: the machine and its transports pause, nothing is dropped). If it drops
/// the `Events`, later events are discarded and the machine runs on.
#[derive(Debug)]
pub struct Events<E> {
    pub(crate) rx: mpsc::Receiver<E>,
}

impl<E> Events<E> {
    /// The next event; `None` once the driver has stopped and every event was read.
    pub async fn recv(&mut self) -> Option<E> {
        self.rx.recv().await
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<E> {
        self.rx.try_recv().ok()
    }

    /// The channel itself (for `tokio_stream::wrappers::ReceiverStream` and the like).
    pub fn into_inner(self) -> mpsc::Receiver<E> {
        self.rx
    }
}
