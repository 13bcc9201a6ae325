//! The wire's hot paths, side by side with what a user would use instead.
//!
//! - `frames/*`: splitting a stream of 64 frames of 100 bytes, arriving in 1,460-byte chunks
//!   (one TCP segment each), with tether's `FrameDecoder`, tokio-util's
//!   `LengthDelimitedCodec` (the usual choice), and a naive `Vec<u8>` buffer that copies
//!   each frame out.
//! - `message/*`: decoding a framed sync message, tether (`Bytes` slices) vs copying the
//!   payload into a `Vec` (what a serde-style owned struct does).

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tether::wire::{encode_frame, Element, FrameDecoder, Message};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

fn stream() -> (Vec<u8>, usize) {
    let mut buf = BytesMut::new();
    let payload = [0x5au8; 100];
    for _ in 0..64 {
        encode_frame(&payload, &mut buf).unwrap();
    }
    (buf.to_vec(), 64)
}

fn frames(c: &mut Criterion) {
    let (stream, count) = stream();
    let chunks: Vec<&[u8]> = stream.chunks(1460).collect();
    let mut group = c.benchmark_group("frames");
    group.throughput(Throughput::Elements(count as u64));

    group.bench_function("tether_frame_decoder", |b| {
        let mut decoder = FrameDecoder::new(1 << 20);
        b.iter(|| {
            let mut n = 0;
            for chunk in &chunks {
                decoder.push(chunk);
                while let Ok(Some(frame)) = decoder.next_frame() {
                    n += frame.len();
                }
            }
            black_box(n)
        })
    });

    group.bench_function("tokio_util_length_delimited", |b| {
        let mut codec = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .max_frame_length(1 << 20)
            .new_codec();
        let mut buf = BytesMut::new();
        b.iter(|| {
            let mut n = 0;
            for chunk in &chunks {
                buf.extend_from_slice(chunk);
                while let Ok(Some(frame)) = codec.decode(&mut buf) {
                    n += frame.len();
                }
            }
            black_box(n)
        })
    });

    group.bench_function("naive_vec_copy", |b| {
        let mut buf: Vec<u8> = Vec::new();
        b.iter(|| {
            let mut n = 0;
            for chunk in &chunks {
                buf.extend_from_slice(chunk);
                loop {
                    if buf.len() < 4 {
                        break;
                    }
                    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    if buf.len() < 4 + len {
                        break;
                    }
                    let frame: Vec<u8> = buf[4..4 + len].to_vec();
                    buf.drain(..4 + len);
                    n += frame.len();
                }
            }
            black_box(n)
        })
    });
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
