//! An oversized length prefix is refused without allocating for it, checked with a counting
//! allocator (this test binary's only test, so nothing else allocates concurrently).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tether::wire::{DecodeError, FrameDecoder};

struct Counting;

static BYTES: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size(), Ordering::SeqCst);
        LARGEST.fetch_max(layout.size(), Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.fetch_add(new_size, Ordering::SeqCst);
        LARGEST.fetch_max(new_size, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn oversized_length_prefix_allocates_nothing_for_it() {
    let mut decoder = FrameDecoder::new(1 << 20);
    // Announce 4 GiB - 1, then keep sending.
    let chunk = [0xffu8, 0xff, 0xff, 0xff, 1, 2, 3];
    BYTES.store(0, Ordering::SeqCst);
    LARGEST.store(0, Ordering::SeqCst);
    decoder.push(&chunk);
    let err = decoder.next_frame().unwrap_err();
    for _ in 0..1000 {
        decoder.push(&[0u8; 64]);
        assert_eq!(decoder.next_frame(), Err(err));
    }
    assert!(matches!(err, DecodeError::Oversized { .. }));
    let largest = LARGEST.load(Ordering::SeqCst);
    let total = BYTES.load(Ordering::SeqCst);
    assert!(largest < 1024, "largest allocation {largest} bytes");
    assert!(total < 4096, "total allocated {total} bytes after refusing");
    assert_eq!(decoder.buffered(), 0);
}
