//! The wire's hot paths, side by side with what a user would use instead.
//!
//! - `frames/*`: splitting a stream of one million 64-byte frames, arriving in 64 KiB
//!   chunks (one socket read each), with tether's `FrameDecoder` (zero-copy `push_bytes`,
//!   and copying `push`), tokio-util's `LengthDelimitedCodec` (the usual choice), and a
//!   naive `Vec<u8>` buffer that copies each frame out.
//! - `message/*`: decoding a framed sync message, tether (`Bytes` slices) vs copying the
//!   payload into a `Vec` (what a serde-style owned struct does).
//!
//! Before criterion runs, the bench prints heap allocations per frame for each contender
//! (a counting global allocator; this binary only).

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tether::wire::{encode_frame, Element, FrameDecoder, Message};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

mod support;
use support::alloc::{allocs, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

const FRAMES: usize = 1_000_000;
const PAYLOAD: usize = 64;
const CHUNK: usize = 64 * 1024;

/// The stream, cut into socket-read-sized chunks that are `Bytes` (as a driver that reads
/// into a `BytesMut` and freezes has them).
fn chunks() -> Vec<Bytes> {
    let mut buf = BytesMut::new();
    let payload = [0x5au8; PAYLOAD];
    for _ in 0..FRAMES {
        encode_frame(&payload, &mut buf).unwrap();
    }
    let stream = buf.freeze();
    (0..stream.len())
        .step_by(CHUNK)
        .map(|i| stream.slice(i..(i + CHUNK).min(stream.len())))
        .collect()
}

fn tether_zero_copy(chunks: &[Bytes]) -> usize {
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut n = 0;
    for chunk in chunks {
        decoder.push_bytes(chunk.clone());
        while let Ok(Some(frame)) = decoder.next_frame() {
            n += frame.len();
        }
    }
    n
}

fn tether_copy(chunks: &[Bytes]) -> usize {
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut n = 0;
    for chunk in chunks {
        decoder.push(chunk);
        while let Ok(Some(frame)) = decoder.next_frame() {
            n += frame.len();
        }
    }
    n
}

fn tokio_util(chunks: &[Bytes]) -> usize {
    let mut codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(1 << 20)
        .new_codec();
    let mut buf = BytesMut::new();
    let mut n = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            n += frame.len();
        }
    }
    n
}

fn naive(chunks: &[Bytes]) -> usize {
    let mut buf: Vec<u8> = Vec::new();
    let mut n = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let mut pos = 0;
        while buf.len() - pos >= 4 {
            let len =
                u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
            if buf.len() - pos < 4 + len {
                break;
            }
            let frame: Vec<u8> = buf[pos + 4..pos + 4 + len].to_vec();
            n += frame.len();
            pos += 4 + len;
        }
        buf.drain(..pos);
    }
    n
}

/// A way of splitting the chunks into frames; returns the payload bytes seen.
type Contender = fn(&[Bytes]) -> usize;

fn report_allocations(chunks: &[Bytes]) {
    let contenders: [(&str, Contender); 4] = [
        ("tether_zero_copy", tether_zero_copy),
        ("tether_copy", tether_copy),
        ("tokio_util_length_delimited", tokio_util),
        ("naive_vec_copy", naive),
    ];
    for (name, f) in contenders {
        let before = allocs();
        let n = f(chunks);
        let allocs = allocs() - before;
        assert_eq!(n, FRAMES * PAYLOAD);
        println!(
            "allocations: {name}: {allocs} for {FRAMES} frames ({:.4} per frame)",
            allocs as f64 / FRAMES as f64
        );
    }
}

fn frames(c: &mut Criterion) {
    let chunks = chunks();
    report_allocations(&chunks);
    let mut group = c.benchmark_group("frames");
    group.sample_size(10);
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.bench_function("tether_zero_copy", |b| {
        b.iter(|| black_box(tether_zero_copy(&chunks)))
    });
    group.bench_function("tether_copy", |b| {
        b.iter(|| black_box(tether_copy(&chunks)))
    });
    group.bench_function("tokio_util_length_delimited", |b| {
        b.iter(|| black_box(tokio_util(&chunks)))
    });
    group.bench_function("naive_vec_copy", |b| b.iter(|| black_box(naive(&chunks))));
    group.finish();
}

fn message(c: &mut Criterion) {
    let msg = Message::Sync(Element {
        kind: 1,
        sid: 42,
        data: Bytes::from(vec![7u8; 200]),
    });
    let bytes = msg.to_bytes();
    let mut group = c.benchmark_group("message");
    group.throughput(Throughput::Elements(1));
    group.bench_function("tether_decode_zero_copy", |b| {
        b.iter(|| black_box(Message::decode(black_box(bytes.clone())).ok()))
    });
    group.bench_function("owned_vec_decode", |b| {
        b.iter(|| {
            let raw: &[u8] = black_box(&bytes);
            let owned = (
                raw[0],
                raw[1],
                u16::from_be_bytes([raw[2], raw[3]]),
                raw[4..].to_vec(),
            );
            black_box(owned)
        })
    });
    group.bench_function("tether_encode_framed", |b| {
        let mut out = BytesMut::with_capacity(4096);
        b.iter(|| {
            msg.encode_framed(&mut out);
            let frame: Bytes = out.split().freeze();
            black_box(frame)
        })
    });
    group.finish();
}

criterion_group!(benches, frames, message);
criterion_main!(benches);
