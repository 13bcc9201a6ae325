//! Any bytes decode to a message or a typed error, and what decodes re-encodes to the
//! same bytes (layouts are exact).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tether::wire::{FeedDatagram, Message};

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    if let Ok(msg) = Message::decode(input.clone()) {
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        assert_eq!(&out[..], data);
    }
    if let Ok(dgram) = FeedDatagram::decode(input, 500) {
        let mut out = BytesMut::new();
        dgram.encode(&mut out, 500).unwrap();
        assert_eq!(&out[..], data);
    }
});
