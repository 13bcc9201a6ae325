//! What the flood targets share: a counting global allocator (live heap bytes of the
//! process, which in a fuzz target is the machine under test plus the target's own small
//! bookkeeping) and the attacker's chunks of bytes.

// Each target uses a part.
#![allow(dead_code)]

use arbitrary::Arbitrary;
use bytes::{BufMut, Bytes, BytesMut};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use tether::wire::Message;

/// Counts the live heap bytes (libFuzzer runs the target on one thread; its own C++
/// allocations do not go through Rust's allocator).
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call forwards to the system allocator unchanged; the counter is an atomic
// that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new);
        if !p.is_null() {
            grew(new as isize - layout.size() as isize);
        }
        p
    }
}

/// Live heap bytes now.
pub fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// The highest the live heap was since the last [`reset_peak`].
pub fn peak() -> isize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new peak from the live heap now.
pub fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

/// Bytes an attacker writes on a `main` transport.
#[derive(Debug, Arbitrary)]
pub enum Chunk {
    /// Anything.
    Raw(Vec<u8>),
    /// A length prefix (any value, up to 4 GiB) and `fill` bytes of it.
    Prefix { len: u32, fill: u16 },
    /// A well-formed frame of any message.
    Frame(Message),
    /// A frame whose prefix says `len` and whose payload is `payload` (maybe shorter or
    /// longer than announced).
    Lying { len: u16, payload: Vec<u8> },
}

impl Chunk {
    /// The bytes, at most `max` of them (so that one input cannot allocate without end).
    pub fn bytes(self, max: usize) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            Chunk::Raw(v) => b.extend_from_slice(&v[..v.len().min(max)]),
            Chunk::Prefix { len, fill } => {
                b.put_u32(len);
                b.resize(4 + usize::from(fill).min(max), 0x41);
            }
            Chunk::Frame(m) => m.encode_framed(&mut b),
            Chunk::Lying { len, payload } => {
                b.put_u32(u32::from(len));
                b.extend_from_slice(&payload[..payload.len().min(max)]);
            }
        }
        b.truncate(max.max(4));
        b.freeze()
    }
}

/// A framed message.
pub fn framed(m: &Message) -> Bytes {
    let mut b = BytesMut::new();
    m.encode_framed(&mut b);
    b.freeze()
}
