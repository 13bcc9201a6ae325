//! `snapshot_decode` past the checks of the frame: the fuzzer's bytes are the body of a
//! snapshot whose magic, version, kind, length and CRC-32 are right (docs/PROTOCOL.md
//! section 8.2), so every input reaches the body's fields. The first byte picks the type.
//!
//! Checked: no panic; what decodes re-encodes to the same bytes; and what decoding
//! allocates (the peak of the live heap above what it was before, the result included) is
//! at most `PER_BYTE` x the snapshot's length + `BASE`: nothing is reserved from a count,
//! every queued message takes at least 5 bytes of the input, every ended token 2, every
//! journal entry a few, and each of them, decoded, is a few dozen bytes in a `Vec` that
//! may have doubled (64 per byte holds with room; a reservation from an announced count,
//! up to 4 Gi elements, would not).
#![no_main]

#[path = "common/mod.rs"]
mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::{live, peak, reset_peak, Counting};
use libfuzzer_sys::fuzz_target;
use tether::connect::{dual, merge};
use tether::peer::PeerSnapshot;
use tether::snapshot::{crc32, Snapshot, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};

#[global_allocator]
static ALLOC: Counting = Counting;

const PER_BYTE: isize = 64;
const BASE: isize = 4 * 1024;

fn check<T: Snapshot>(body: &[u8]) {
    let mut b = BytesMut::new();
    b.put_slice(&SNAPSHOT_MAGIC);
    b.put_u8(SNAPSHOT_VERSION);
    b.put_u8(T::KIND);
    b.put_u32(body.len() as u32);
    b.put_slice(body);
    let crc = crc32(&b);
    b.put_u32(crc);
    let whole: Bytes = b.freeze();
    let len = whole.len() as isize;
    let before = live();
    reset_peak();
    let decoded = T::decode(whole.clone());
    let used = peak() - before;
    assert!(
        used <= PER_BYTE * len + BASE,
        "decoding {len} bytes allocated {used}"
    );
    if let Ok(snapshot) = decoded {
        let mut out = BytesMut::new();
        snapshot.encode(&mut out);
        assert_eq!(&out[..], &whole[..], "re-encodes differently");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 7 {
        0 => check::<merge::MergeSessionSnapshot>(body),
        1 => check::<merge::MergeClientSnapshot>(body),
        2 => check::<merge::MergeEndedSnapshot>(body),
        3 => check::<dual::PlayerSnapshot>(body),
        4 => check::<dual::DualClientSnapshot>(body),
        5 => check::<PeerSnapshot<merge::MergeSessionSnapshot>>(body),
        _ => check::<PeerSnapshot<dual::DualClientSnapshot>>(body),
    }
});
