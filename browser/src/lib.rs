//! tether in a real browser: a token-merge client [`Peer`] (journal sync over
//! [`MemJournal`]) behind a small C-ABI surface that JavaScript drives over a browser
//! `WebSocket` (`browser/driver.js`).
//!
//! A `no_std` cdylib for `wasm32-unknown-unknown` with no imports: the host gives it
//! everything (bytes, link ids, time, randomness) through its exports, and takes what it
//! has to say from [`poll`]. There is no wasm-bindgen; the boundary is numbers and linear
//! memory:
//!
//! - **bytes in**: [`input_buffer`]`(len)` returns the address of a buffer of at least
//!   `len` bytes (at most [`INPUT_MAX`], else 0); the host copies the bytes there, then
//!   calls the function that consumes them ([`create`], [`received`], [`append`]) with the
//!   length. The buffer is allocated once and never moves.
//! - **bytes out**: [`output_ptr`] and [`output_len`] name the bytes of the last output
//!   (a transmit's payload, an applied entry's key, a journal dump). They stay valid until
//!   the next call into the module: the host copies them out at once.
//! - **time**: every input takes `now_us`, `performance.now()` in microseconds, as an
//!   `f64` (a JS number; NaN and negative values count as 0, and time never goes back:
//!   the latest `now` seen wins).
//! - **results**: every input returns an `i32`, 0 or more on success and one of the
//!   negative `ERR_*` codes otherwise; [`error_ptr`] and [`error_len`] then hold the
//!   error's text. Nothing the network sends can make the module panic; a panic (a bug)
//!   traps, which JavaScript sees as a thrown `RuntimeError`.
//!
//! The driver loop is the contract of [`tether::Machine`]: after every input, call
//! [`poll`] until it returns [`KIND_WAIT`], acting on each output on the way. See
//! `browser/README.md`.
#![no_std]
// `#[no_mangle]` counts as unsafe code (two exports of one name would clash at link time),
// so `forbid` cannot hold at the crate root: the crate root holds only the exports, each a
// one-line call into `client`, allowed one by one; everything else lives in `client`,
// which forbids unsafe code outright.
#![deny(unsafe_code)]

extern crate alloc;

pub mod client;

pub use client::{
    ERR_BAD_ARGUMENT, ERR_LOCAL, ERR_NO_CLIENT, ERR_REMOTE, ERR_STORE, ERR_TOO_BIG, EVENT_APPLIED,
    EVENT_COMPLETED, EVENT_CONFIRMED, EVENT_DOWN, EVENT_ENDED, EVENT_OTHER, EVENT_REFUSED,
    EVENT_UP_FRESH, EVENT_UP_RESUMED, INPUT_MAX, KIND_CLOSE, KIND_EVENT, KIND_OPEN, KIND_TRANSMIT,
    KIND_WAIT,
};

#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// Any panic (there should be none) traps: the call throws in JavaScript.
#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// The address of the input buffer, holding at least `len` bytes; 0 if `len` is over
/// [`INPUT_MAX`] (split a longer `received` into chunks: `main` is a byte stream).
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn input_buffer(len: u32) -> u32 {
    client::input_buffer(len)
}

/// Creates the client (replacing any earlier one). The input buffer holds `token_len`
/// bytes of the client's token (16 to 64 random bytes from `crypto.getRandomValues`),
/// then 8 random bytes seeding the reconnection jitter, then 8 naming this journal's epoch.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn create(now_us: f64, token_len: u32) -> i32 {
    client::create(now_us, token_len)
}

/// The WebSocket the host opened for the last [`KIND_OPEN`] is open, as link `link`
/// (a fresh id per WebSocket).
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn opened(now_us: f64, link: u32) -> i32 {
    client::opened(now_us, link)
}

/// `len` bytes (in the input buffer) arrived on `link`: one WebSocket message, or a chunk
/// of one.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn received(now_us: f64, link: u32, len: u32) -> i32 {
    client::received(now_us, link, len)
}

/// The WebSocket of `link` closed or failed (or the host closed it after [`KIND_CLOSE`]).
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn closed(now_us: f64, link: u32) -> i32 {
    client::closed(now_us, link)
}

/// The deadline of the last [`KIND_WAIT`] passed (an early call is harmless).
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn timeout(now_us: f64) -> i32 {
    client::timeout(now_us)
}

/// Appends a journal entry: the input buffer holds the author (`author_len` bytes, at most
/// 255), the resource id (`resource_len`, at most 255) and the payload, one after the other.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn append(now_us: f64, author_len: u32, resource_len: u32, payload_len: u32) -> i32 {
    client::append(now_us, author_len, resource_len, payload_len)
}

/// The next output: one of the `KIND_*` codes, or [`ERR_NO_CLIENT`]. Its details:
/// [`out_link`], [`out_deadline_us`], [`out_event`] and the output bytes.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn poll() -> i32 {
    client::poll()
}

/// The link of the last [`KIND_TRANSMIT`] or [`KIND_CLOSE`].
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn out_link() -> u32 {
    client::out_link()
}

/// The deadline of the last [`KIND_WAIT`] in microseconds on the host's clock, or -1 for
/// "until new input".
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn out_deadline_us() -> f64 {
    client::out_deadline_us()
}

/// The `EVENT_*` code of the last [`KIND_EVENT`].
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn out_event() -> u32 {
    client::out_event()
}

/// The address of the last output's bytes.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn output_ptr() -> u32 {
    client::output_ptr()
}

/// How many bytes the last output has.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn output_len() -> u32 {
    client::output_len()
}

/// The address of the last error's text (UTF-8).
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn error_ptr() -> u32 {
    client::error_ptr()
}

/// How many bytes the last error's text has.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn error_len() -> u32 {
    client::error_len()
}

/// Entries in the client's journal, or [`ERR_NO_CLIENT`].
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn journal_len() -> i32 {
    client::journal_len()
}

/// Writes the journal's keys, in journal order, as the output bytes: per entry
/// `[author length: u8][author][resource length: u8][resource]`. Returns the byte count,
/// [`ERR_NO_CLIENT`] or [`ERR_TOO_BIG`].
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn journal_dump() -> i32 {
    client::journal_dump()
}

/// 1 once the client has ended for good (it gave up, or the session ended), else 0.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn is_closed() -> i32 {
    client::is_closed()
}
