//! A counting global allocator: allocations (and reallocations) made, and, when asked,
//! the bytes live on the heap. Each bench binary installs it as its own:
//!
//! ```ignore
//! mod support;
//! use support::alloc::{allocs, Counting};
//! #[global_allocator]
//! static GLOBAL: Counting = Counting; // Counting<true> also keeps `live()`
//! ```
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Forwards every call to the system allocator, counting. With `LIVE_BYTES`, it also keeps
/// the bytes live on the heap (one more atomic operation per call, so only the benches
/// that report memory ask for it).
pub struct Counting<const LIVE_BYTES: bool = false>;

/// Allocations and reallocations made so far.
pub static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes live on the heap (with `Counting<true>` only).
pub static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl<const LIVE_BYTES: bool> GlobalAlloc for Counting<LIVE_BYTES> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        if LIVE_BYTES {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if LIVE_BYTES {
            LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        if LIVE_BYTES {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations and reallocations made so far.
pub fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// Bytes live on the heap (with `Counting<true>`; zero otherwise).
pub fn live() -> i64 {
    LIVE.load(Ordering::Relaxed)
}
