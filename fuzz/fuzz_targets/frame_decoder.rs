//! The stream decoder fed arbitrary bytes in arbitrary chunks: never a panic, never more
//! buffered than the bound, and the same frames whatever the split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::wire::{FrameDecoder, FRAME_HEADER_LEN};

#[derive(Debug, arbitrary::Arbitrary)]
struct Case {
    max_frame: u16,
    chunks: Vec<Vec<u8>>,
    /// Per chunk: pushed zero-copy (`push_bytes`) or copied (`push`).
    zero_copy: Vec<bool>,
}

fn frames_of(max: usize, chunks: &[&[u8]], zero_copy: &[bool]) -> (Vec<bytes::Bytes>, bool) {
    let mut d = FrameDecoder::new(max);
    let mut out = Vec::new();
    let mut failed = false;
    for (i, chunk) in chunks.iter().enumerate() {
        if zero_copy.get(i).copied().unwrap_or(false) {
            d.push_bytes(bytes::Bytes::copy_from_slice(chunk));
        } else {
            d.push(chunk);
        }
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.len() <= max);
                    out.push(f)
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(d.buffered() <= max + FRAME_HEADER_LEN + chunk.len());
    }
    (out, failed)
}

fuzz_target!(|case: Case| {
    let max = usize::from(case.max_frame);
    let chunks: Vec<&[u8]> = case.chunks.iter().map(|c| c.as_slice()).collect();
    let (split, split_failed) = frames_of(max, &chunks, &case.zero_copy);
    let whole: Vec<u8> = case.chunks.concat();
    let (joined, joined_failed) = frames_of(max, &[&whole], &[]);
    assert_eq!(split, joined);
    assert_eq!(split_failed, joined_failed);
});
