//! # tether
//!
//! Sans-IO state machines that keep two programs connected and in sync across dropped
//! connections. Bytes and time go in; bytes to send, events and deadlines come out. No
//! socket, clock, random number generator or thread lives inside: any runtime (tokio, smol,
//! a WASM page, a simulator) drives it with a loop of about twenty lines.
//!
//! ## A first connection
//!
//! The names a first connection needs are at the crate root and in [`prelude`]: a
//! token-merge client and server (after dop's connectivity proposal), every setting left at
//! its default, bytes carried by hand between them.
//!
//! ```
//! use tether::prelude::*;
//! use tether::{MergeClient, MergeServer};
//!
//! let now = Instant::ZERO;
//! let mut client = MergeClient::new(now, Default::default(), Token::new(&[1; 16]).unwrap()).unwrap();
//! let mut server = MergeServer::new(Default::default(), || Token::new(&[2; 16]).unwrap());
//! // The client asks for a transport; the caller connects one (link 1 on both sides).
//! assert_eq!(client.poll_output(), Output::Open(Channel::Main));
//! client.handle_input(now, Input::Opened(Link::main(1))).unwrap();
//! server.handle_input(now, Input::Opened(Link::main(1))).unwrap();
//! let mut up = Vec::new();
//! for _ in 0..4 {
//!     while let Output::Transmit(t) = client.poll_output() {
//!         server.handle_input(now, Input::Received(t.link, t.payload)).unwrap();
//!     }
//!     loop {
//!         match server.poll_output() {
//!             Output::Transmit(t) => client.handle_input(now, Input::Received(t.link, t.payload)).unwrap(),
//!             Output::Event(Event::Up { session, outcome }) => up.push((session, outcome)),
//!             _ => break,
//!         }
//!     }
//! }
//! assert_eq!(up, [(tether::connect::merge::SessionId(1), Outcome::Fresh)]);
//! ```
//!
//! ## What is here
//!
//! - [`connect`]: the connection profiles, [`connect::merge`] ([`MergeClient`],
//!   [`MergeServer`]) and [`connect::dual`] ([`DualClient`], [`DualServer`]).
//! - [`session`]: what every session has whatever its profile: numbered delivery, the
//!   heartbeat, the one [`Event`] vocabulary, [`Outcome`] and [`EndReason`].
//! - [`peer`]: [`Peer`], a connection profile with journal sync on top.
//! - [`sync`]: sync contexts, journal sync, anchored two-way sync.
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

pub use connect::dual::{
    DualClient, DualClientCommand, DualClientConfig, DualClientEvent, DualClientNotice, DualError,
    DualServer, DualServerCommand, DualServerConfig, DualServerEvent, DualServerNotice,
};
pub use connect::merge::{
    MergeClient, MergeClientCommand, MergeClientConfig, MergeClientEvent, MergeClientNotice,
    MergeError, MergeServer, MergeServerCommand, MergeServerConfig, MergeServerEvent,
    MergeServerNotice,
};
pub use driver::{Channel, HasOrigin, Input, Link, Machine, Origin, Outbox, Output, Transmit};
pub use peer::{Peer, PeerCommand, PeerError, PeerEvent};
pub use session::{EndReason, Event, Outcome, SessionConfig};
pub use time::{Duration, Instant};
pub use token::{Token, TokenError, TokenSource};

/// What every driver of a tether machine uses: `use tether::prelude::*;`.
pub mod prelude {
    pub use crate::driver::{Channel, Input, Link, Machine, Output};
    pub use crate::session::{EndReason, Event, Outcome};
    pub use crate::time::{Duration, Instant};
    pub use crate::token::Token;
}
