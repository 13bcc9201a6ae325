//! The client behind the exports: one token-merge client [`Peer`] and the buffers of the
//! JS/wasm boundary, in one static (a wasm32-unknown-unknown instance is single-threaded
//! and calls never re-enter, so its lock is never contended).
//!
//! Every function here returns a code instead of panicking: lengths are checked against
//! the buffers before any slice is taken, errors of the machine are typed and reported,
//! and the machine itself never panics on input (tether's promise).
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use bytes::Bytes;
use spin::Mutex;
use tether::connect::merge::{
    MergeClient, MergeClientConfig, MergeClientEvent, MergeClientNotice, Outcome,
};
use tether::peer::{Peer, PeerCommand, PeerError, PeerEvent};
use tether::sync::journal::{MemJournal, SyncConfig, SyncEvent};
use tether::wire::{Entry, MAX_ID_LEN};
use tether::{Input, Instant, Link, Machine, Origin, Output, Token};

/// The largest input the host may hand over in one call (a longer WebSocket message is
/// given in chunks of at most this: `main` is a byte stream, any split is fine).
pub const INPUT_MAX: u32 = 64 * 1024;
/// The largest journal dump [`journal_dump`] writes.
const DUMP_MAX: usize = 16 * 1024 * 1024;
/// Most entries the client's journal holds.
const JOURNAL_MAX: usize = 100_000;

/// [`poll`]: nothing to do until [`out_deadline_us`] (or new input).
pub const KIND_WAIT: i32 = 0;
/// [`poll`]: send the output bytes as one binary message on [`out_link`]'s WebSocket.
pub const KIND_TRANSMIT: i32 = 1;
/// [`poll`]: open a new WebSocket, then call `opened` with a fresh link id (or `opened`
/// then `closed` if it fails).
pub const KIND_OPEN: i32 = 2;
/// [`poll`]: close [`out_link`]'s WebSocket, then call `closed`.
pub const KIND_CLOSE: i32 = 3;
/// [`poll`]: an event, [`out_event`] says which.
pub const KIND_EVENT: i32 = 4;

/// The session is up, fresh: nothing carried over.
pub const EVENT_UP_FRESH: u32 = 1;
/// The session is up again, resumed: the token-merge resumption, not a new session.
pub const EVENT_UP_RESUMED: u32 = 2;
/// The session's transport was lost; the client reconnects and resumes by itself.
pub const EVENT_DOWN: u32 = 3;
/// The session ended for good.
pub const EVENT_ENDED: u32 = 4;
/// An entry of the server was applied to the journal; the output bytes are its key,
/// `[author length: u8][author][resource length: u8][resource]`.
pub const EVENT_APPLIED: u32 = 5;
/// The server refused a handshake attempt (the client retries).
pub const EVENT_REFUSED: u32 = 6;
/// A sync of the server's journal completed (we confirmed it).
pub const EVENT_COMPLETED: u32 = 7;
/// The server confirmed our journal.
pub const EVENT_CONFIRMED: u32 = 8;
/// Any other event (sync bookkeeping, application messages).
pub const EVENT_OTHER: u32 = 9;

/// No client: call `create` first.
pub const ERR_NO_CLIENT: i32 = -1;
/// A length or argument out of bounds (nothing was done).
pub const ERR_BAD_ARGUMENT: i32 = -2;
/// The machine refused the input, the host's fault (a link reported twice, a call after
/// the end, a bad token).
pub const ERR_LOCAL: i32 = -3;
/// The machine refused the input, the server's fault (bytes that do not decode).
pub const ERR_REMOTE: i32 = -4;
/// The journal refused the append (a duplicate key, or full).
pub const ERR_STORE: i32 = -5;
/// The output would be larger than its bound.
pub const ERR_TOO_BIG: i32 = -6;

type ClientPeer = Peer<MergeClient, MemJournal>;

struct State {
    peer: Option<ClientPeer>,
    /// The input buffer: allocated once at [`INPUT_MAX`], so its address never changes.
    input: Vec<u8>,
    /// The last output's bytes (kept alive until the next output).
    output: Bytes,
    error: Vec<u8>,
    out_link: u32,
    out_deadline_us: f64,
    out_event: u32,
    /// The latest `now` seen, in microseconds: time never goes back.
    now_us: u64,
}

static STATE: Mutex<State> = Mutex::new(State {
    peer: None,
    input: Vec::new(),
    output: Bytes::new(),
    error: Vec::new(),
    out_link: 0,
    out_deadline_us: -1.0,
    out_event: 0,
    now_us: 0,
});

impl State {
    /// `now_us` as tether's `Instant`, never before the latest seen.
    fn now(&mut self, now_us: f64) -> Instant {
        // `as` saturates: NaN is 0, negatives are 0, huge values are u64::MAX.
        let us = if now_us.is_finite() { now_us as u64 } else { 0 };
        self.now_us = self.now_us.max(us);
        Instant::from_micros(self.now_us)
    }

    fn fail(&mut self, code: i32, message: &str) -> i32 {
        self.error.clear();
        self.error.extend_from_slice(message.as_bytes());
        code
    }

    /// The first `len` bytes of the input buffer, if it holds that many.
    fn input(&self, len: u32) -> Option<&[u8]> {
        self.input.get(..usize::try_from(len).ok()?)
    }

    /// Feeds one input to the peer.
    fn feed(
        &mut self,
        now_us: f64,
        input: Input<PeerCommand<tether::connect::merge::MergeClientCommand, ()>>,
    ) -> i32 {
        let now = self.now(now_us);
        let Some(peer) = self.peer.as_mut() else {
            return self.fail(ERR_NO_CLIENT, "no client: call create first");
        };
        match peer.handle_input(now, input) {
            Ok(()) => 0,
            Err(e) => {
                let code = match &e {
                    PeerError::Store(_) => ERR_STORE,
                    other => match other.origin() {
                        Origin::Local => ERR_LOCAL,
                        Origin::Remote => ERR_REMOTE,
                    },
                };
                let text = alloc::format!("{e}");
                self.fail(code, &text)
            }
        }
    }
}

pub fn input_buffer(len: u32) -> u32 {
    if len > INPUT_MAX {
        return 0;
    }
    let mut s = STATE.lock();
    if s.input.len() < INPUT_MAX as usize {
        s.input.resize(INPUT_MAX as usize, 0);
    }
    // A wasm32 address fits in u32 (the cast is exact on the only target this is for).
    s.input.as_ptr() as usize as u32
}

pub fn create(now_us: f64, token_len: u32) -> i32 {
    let mut s = STATE.lock();
    let now = s.now(now_us);
    let Some(all) = token_len.checked_add(16).and_then(|n| s.input(n)) else {
        return s.fail(
            ERR_BAD_ARGUMENT,
            "the input buffer must hold the token, then 16 bytes",
        );
    };
    let (token, seeds) = all.split_at(all.len() - 16);
    let (jitter, epoch) = seeds.split_at(8);
    let jitter = u64::from_le_bytes(jitter.try_into().unwrap_or([0; 8]));
    let epoch = u64::from_le_bytes(epoch.try_into().unwrap_or([0; 8]));
    let token = match Token::new(token) {
        Ok(t) => t,
        Err(e) => {
            let text = alloc::format!("token: {e}");
            return s.fail(ERR_BAD_ARGUMENT, &text);
        }
    };
    let config = MergeClientConfig {
        jitter_seed: jitter,
        ..MergeClientConfig::default()
    };
    let conn = match MergeClient::new(now, config, token) {
        Ok(c) => c,
        Err(e) => {
            let text = alloc::format!("client: {e}");
            return s.fail(ERR_LOCAL, &text);
        }
    };
    let sync = SyncConfig {
        jitter_seed: jitter.rotate_left(17),
        ..SyncConfig::default()
    };
    s.peer = Some(Peer::new(conn, sync, MemJournal::new(epoch, JOURNAL_MAX)));
    0
}

pub fn opened(now_us: f64, link: u32) -> i32 {
    STATE
        .lock()
        .feed(now_us, Input::Opened(Link::main(u64::from(link))))
}

pub fn received(now_us: f64, link: u32, len: u32) -> i32 {
    let mut s = STATE.lock();
    let Some(bytes) = s.input(len).map(Bytes::copy_from_slice) else {
        return s.fail(ERR_BAD_ARGUMENT, "received: length over the input buffer");
    };
    s.feed(now_us, Input::Received(Link::main(u64::from(link)), bytes))
}

pub fn closed(now_us: f64, link: u32) -> i32 {
    STATE
        .lock()
        .feed(now_us, Input::Closed(Link::main(u64::from(link))))
}

pub fn timeout(now_us: f64) -> i32 {
    STATE.lock().feed(now_us, Input::Timeout)
}

pub fn append(now_us: f64, author_len: u32, resource_len: u32, payload_len: u32) -> i32 {
    let mut s = STATE.lock();
    if author_len as usize > MAX_ID_LEN || resource_len as usize > MAX_ID_LEN {
        return s.fail(
            ERR_BAD_ARGUMENT,
            "append: author and resource hold 64 bytes at most",
        );
    }
    let total = author_len
        .checked_add(resource_len)
        .and_then(|n| n.checked_add(payload_len));
    let Some(all) = total.and_then(|n| s.input(n)) else {
        return s.fail(ERR_BAD_ARGUMENT, "append: lengths over the input buffer");
    };
    let (author, rest) = all.split_at(author_len as usize);
    let (resource, payload) = rest.split_at(resource_len as usize);
    let entry = Entry::new(author, resource, payload);
    s.feed(now_us, Input::Command(PeerCommand::Append(entry)))
}

/// `[len: u8][author][len: u8][resource]` (ids are at most 64 bytes on the wire).
fn push_key(out: &mut Vec<u8>, author: &[u8], resource: &[u8]) {
    for id in [author, resource] {
        let id = id.get(..MAX_ID_LEN.min(id.len())).unwrap_or_default();
        out.push(id.len() as u8);
        out.extend_from_slice(id);
    }
}

pub fn poll() -> i32 {
    let mut s = STATE.lock();
    let Some(peer) = s.peer.as_mut() else {
        return s.fail(ERR_NO_CLIENT, "no client: call create first");
    };
    let output = peer.poll_output();
    let s = &mut *s;
    s.output = Bytes::new();
    match output {
        Output::Transmit(t) => {
            s.out_link = t.link.id as u32;
            s.output = t.payload;
            KIND_TRANSMIT
        }
        Output::Open(_) => KIND_OPEN,
        Output::Close(link) => {
            s.out_link = link.id as u32;
            KIND_CLOSE
        }
        Output::Wait(deadline) => {
            s.out_deadline_us = deadline.map_or(-1.0, |d| d.as_micros() as f64);
            KIND_WAIT
        }
        Output::Event(e) => {
            s.out_event = summarise(&e, &mut s.output);
            KIND_EVENT
        }
    }
}

/// An event's `EVENT_*` code; an applied entry's key goes to `output`.
fn summarise(event: &PeerEvent<MergeClientEvent, ()>, output: &mut Bytes) -> u32 {
    match event {
        PeerEvent::Connection(MergeClientEvent::Up { outcome, .. }) => match outcome {
            Outcome::Fresh => EVENT_UP_FRESH,
            Outcome::Resumed => EVENT_UP_RESUMED,
        },
        PeerEvent::Connection(MergeClientEvent::Down { .. }) => EVENT_DOWN,
        PeerEvent::Connection(MergeClientEvent::Ended { .. }) => EVENT_ENDED,
        PeerEvent::Connection(MergeClientEvent::Notice(MergeClientNotice::Refused(_))) => {
            EVENT_REFUSED
        }
        PeerEvent::Sync(
            (),
            SyncEvent::Applied {
                author, resource, ..
            },
        ) => {
            let mut key = Vec::with_capacity(2 + author.len() + resource.len());
            push_key(&mut key, author, resource);
            *output = Bytes::from(key);
            EVENT_APPLIED
        }
        PeerEvent::Sync((), SyncEvent::Completed { .. }) => EVENT_COMPLETED,
        PeerEvent::Sync((), SyncEvent::Confirmed { .. }) => EVENT_CONFIRMED,
        _ => EVENT_OTHER,
    }
}

pub fn out_link() -> u32 {
    STATE.lock().out_link
}

pub fn out_deadline_us() -> f64 {
    STATE.lock().out_deadline_us
}

pub fn out_event() -> u32 {
    STATE.lock().out_event
}

pub fn output_ptr() -> u32 {
    STATE.lock().output.as_ptr() as usize as u32
}

pub fn output_len() -> u32 {
    STATE.lock().output.len() as u32
}

pub fn error_ptr() -> u32 {
    STATE.lock().error.as_ptr() as usize as u32
}

pub fn error_len() -> u32 {
    STATE.lock().error.len() as u32
}

pub fn journal_len() -> i32 {
    let mut s = STATE.lock();
    match s.peer.as_ref() {
        Some(p) => i32::try_from(p.store().entries().len()).unwrap_or(i32::MAX),
        None => s.fail(ERR_NO_CLIENT, "no client: call create first"),
    }
}

pub fn journal_dump() -> i32 {
    let mut s = STATE.lock();
    let Some(peer) = s.peer.as_ref() else {
        return s.fail(ERR_NO_CLIENT, "no client: call create first");
    };
    let mut out = Vec::new();
    for e in peer.store().entries() {
        push_key(&mut out, &e.author, &e.resource);
        if out.len() > DUMP_MAX {
            return s.fail(ERR_TOO_BIG, "journal dump over 16 MiB");
        }
    }
    let n = out.len() as i32;
    s.output = Bytes::from(out);
    n
}

pub fn is_closed() -> i32 {
    let s = STATE.lock();
    i32::from(s.peer.as_ref().is_some_and(|p| p.is_closed()))
}
