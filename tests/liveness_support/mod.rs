//! [`Probe`]: a wrapper around any tether [`Machine`] that a driver (the testkit `Sim`, the
//! loopback tokio driver) runs in its place. It matches no event of the machine it wraps,
//! so renaming the machines' events does not touch it.
//!
//! - It stamps every event with the machine's `now` (the time of the input that caused
//!   it): the `Event` type is `(Instant, M::Event)`.
//! - It logs when the machine asked for a transport ([`Output::Open`]) and when bytes
//!   arrived on `main`, so a test can measure a detection against the last byte received.
//! - It can freeze the machine, as a process can be:
//!   - [`Freeze::Stopped`] (SIGSTOP): the machine takes no input and gives no output, and
//!     no timer fires; what arrives waits, as in the kernel's socket buffers, and is read
//!     in order at [`Probe::thaw`], at the time of the thaw;
//!   - [`Freeze::Mute`]: the machine runs, but every byte it writes is lost (its links
//!     stay open and it still reads): a peer that stopped answering.
#![allow(dead_code)]

use tether::{Channel, Input, Instant, Link, Machine, Output};

/// How a [`Probe`] freezes its machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freeze {
    /// Running normally.
    Running,
    /// SIGSTOP: nothing in, nothing out, no timer; inputs wait for the thaw.
    Stopped,
    /// Runs, but its transmits are dropped.
    Mute,
}

/// A machine with a stopwatch and a freeze switch.
pub struct Probe<M: Machine> {
    /// The machine.
    pub inner: M,
    now: Instant,
    freeze: Freeze,
    /// Inputs that arrived while [`Freeze::Stopped`].
    held: Vec<Input<M::Command>>,
    /// Every [`Output::Open`], with the time it was asked for.
    pub opens: Vec<(Instant, Channel)>,
    /// Every chunk received on a `main` link, with its time (as the machine saw it).
    pub main_rx: Vec<(Instant, Link)>,
    /// Transmits dropped while [`Freeze::Mute`].
    pub muted: u64,
    /// Inputs the machine refused (their errors, formatted).
    pub errors: Vec<String>,
}

impl<M: Machine> Probe<M>
where
    M::Error: std::fmt::Debug,
{
    /// A running probe around `inner`.
    pub fn new(inner: M) -> Self {
        Probe {
            inner,
            now: Instant::ZERO,
            freeze: Freeze::Running,
            held: Vec::new(),
            opens: Vec::new(),
            main_rx: Vec::new(),
            muted: 0,
            errors: Vec::new(),
        }
    }

    /// The latest `now` the machine was given.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// How the machine is frozen now.
    pub fn freeze_mode(&self) -> Freeze {
        self.freeze
    }

    /// Freezes the machine (drain the driver's view of it afterwards: a stopped machine
    /// asks for no timer).
    pub fn freeze(&mut self, how: Freeze) {
        self.freeze = how;
    }

    /// Wakes the machine at `now`: what arrived while it was stopped is read first, in
    /// order; then the driver's next poll sees its outputs and its (overdue) deadline.
    pub fn thaw(&mut self, now: Instant) {
        self.freeze = Freeze::Running;
        for input in std::mem::take(&mut self.held) {
            self.pass(now, input);
        }
    }

    /// The last chunk received on `main` at or before `t`.
    pub fn last_main_rx_before(&self, t: Instant) -> Option<Instant> {
        self.main_rx.iter().map(|r| r.0).filter(|&at| at <= t).max()
    }

    /// Times of the `main` transports asked for at or after `t`.
    pub fn main_opens_since(&self, t: Instant) -> Vec<Instant> {
        self.opens
            .iter()
            .filter(|o| o.1 == Channel::Main && o.0 >= t)
            .map(|o| o.0)
            .collect()
    }

    fn pass(&mut self, now: Instant, input: Input<M::Command>) {
        self.now = self.now.max(now);
        if let Input::Received(link, _) = &input {
            if link.channel == Channel::Main {
                self.main_rx.push((self.now, *link));
            }
        }
        if let Err(e) = self.inner.handle_input(self.now, input) {
            self.errors.push(format!("{e:?}"));
        }
    }
}

impl<M: Machine> Machine for Probe<M>
where
    M::Error: std::fmt::Debug,
{
    type Command = M::Command;
    type Event = (Instant, M::Event);
    type Error = M::Error;

    fn handle_input(&mut self, now: Instant, input: Input<M::Command>) -> Result<(), M::Error> {
        if self.freeze == Freeze::Stopped {
            // A stopped process reads nothing; its timers are looked at when it wakes.
            if !matches!(input, Input::Timeout) {
                self.held.push(input);
            }
            return Ok(());
        }
        self.now = self.now.max(now);
        if let Input::Received(link, _) = &input {
            if link.channel == Channel::Main {
                self.main_rx.push((self.now, *link));
            }
        }
        self.inner.handle_input(self.now, input)
    }

    fn poll_output(&mut self) -> Output<(Instant, M::Event)> {
        if self.freeze == Freeze::Stopped {
            return Output::Wait(None);
        }
        loop {
            return match self.inner.poll_output() {
                Output::Transmit(_) if self.freeze == Freeze::Mute => {
                    self.muted += 1;
                    continue;
                }
                Output::Transmit(t) => Output::Transmit(t),
                Output::Event(e) => Output::Event((self.now, e)),
                Output::Open(c) => {
                    self.opens.push((self.now, c));
                    Output::Open(c)
                }
                Output::Close(l) => Output::Close(l),
                Output::Wait(d) => Output::Wait(d),
            };
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.freeze {
            Freeze::Stopped => None,
            _ => self.inner.poll_timeout(),
        }
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}
