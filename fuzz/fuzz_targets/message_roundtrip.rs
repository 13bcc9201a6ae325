//! Every message encodes and decodes back to itself, framed or not.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tether::wire::{FrameDecoder, Message};

fuzz_target!(|msg: Message| {
    let mut out = BytesMut::new();
    msg.encode(&mut out);
    assert_eq!(Message::decode(out.freeze()), Ok(msg.clone()));

    let mut framed = BytesMut::new();
    msg.encode_framed(&mut framed);
    let mut d = FrameDecoder::new(usize::MAX);
    d.push(&framed);
    let frame = d.next_frame().unwrap().unwrap();
    assert_eq!(Message::decode(frame), Ok(msg));
});
