//! # tether
//!
//! Sans-IO state machines that keep two programs connected and in sync across dropped
//! connections. Bytes and time go in; bytes to send, events and deadlines come out. No
//! socket, clock, random number generator or thread lives inside: any runtime (tokio, smol,
//! a WASM page, a simulator) drives it with a loop of about twenty lines.
//!
//! ## What is here
//!
//! - [`time`]: [`Instant`] and [`Duration`] of tether's own; the caller's clock.
//! - [`token`]: [`Token`], constant-time, and dop's merge.
//! - [`wire`]: frames on `main`, the `feed` datagram header, and every [`wire::Message`].
//! - [`driver`]: the contract every machine shares ([`Machine`], [`Input`], [`Output`]).
//! - [`snapshot`]: a session written to bytes and taken over by another process.
//! - [`tables`]: every machine's transition table as data, rendered as Markdown.
//!
//! ## The driver contract
//!
//! Every machine implements [`Machine`]:
//!
//! - `handle_input(now, input)` takes one [`Input`]: bytes received on a [`Link`] (a
//!   transport the caller named: `main` stream chunks of any size, or one `feed` datagram),
//!   a transport opened or closed, a timeout, or an application command.
//! - `poll_output()` is called until it returns [`Output::Wait`]; before that it yields
//!   [`Output::Transmit`] (bytes for a link), [`Output::Event`], [`Output::Open`] (open a
//!   transport for a channel) and [`Output::Close`].
//! - While output is queued the deadline is "now", so a driver never sleeps on unsent bytes.
//! - Errors are typed; a fatal one is sticky; each says whether the local caller or the
//!   remote peer misbehaved ([`Origin`]); [`Machine::is_closed`] says when a machine ended.
//!
//! A driver, in outline (see `examples/` for tokio, WebSocket and smol):
//!
//! ```text
//! loop {
//!     let deadline = loop {
//!         match machine.poll_output() {
//!             Output::Transmit(t) => transports[t.link].write_all(&t.payload),
//!             Output::Event(e)    => app.handle(e),
//!             Output::Open(ch)    => spawn_connect(ch),       // later: Input::Opened(link)
//!             Output::Close(link) => transports.remove(link), // later: Input::Closed(link)
//!             Output::Wait(d)     => break d,
//!         }
//!     };
//!     let input = select! {
//!         (link, bytes) = transports.read()  => Input::Received(link, bytes),
//!         link = transports.closed()         => Input::Closed(link),
//!         cmd = app.commands()               => Input::Command(cmd),
//!         _ = sleep_until(deadline)          => Input::Timeout,
//!     };
//!     machine.handle_input(clock.now(), input)?;
//! }
//! ```
//!
//! ## Guarantees
//!
//! - **No panic on input**: any bytes, any order of calls, any time give a typed error or
//!   are ignored and counted; memory stays bounded by configuration.
//! - **Deterministic**: the same inputs at the same times give the same outputs.
//! - **`no_std`** with `alloc`, and `#![forbid(unsafe_code)]`.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod connect;
pub mod driver;
pub mod peer;
mod rng;
pub mod session;
pub mod snapshot;
pub mod sync;
pub mod tables;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod time;
pub mod token;
pub mod wire;

pub use driver::{Channel, HasOrigin, Input, Link, Machine, Origin, Outbox, Output, Transmit};
pub use session::{EndReason, Outcome};
pub use time::{Duration, Instant};
pub use token::{Token, TokenError, TokenSource};
