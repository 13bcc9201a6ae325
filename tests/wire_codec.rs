//! Properties of the wire: round trips, exact layouts, chunking, and no panic on any bytes.

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tether::wire::{
    encode_frame, DecodeError, Element, FailReason, FeedDatagram, FrameDecoder, Message,
    RefuseReason, FRAME_HEADER_LEN, PROTOCOL_VERSION,
};
use tether::Token;

/// Builds a `Message` from proptest's random bytes through `Arbitrary`, the same generator
/// the fuzz targets use. `None` when the bytes do not make a message.
fn message_from(seed: &[u8]) -> Option<Message> {
    Message::arbitrary(&mut Unstructured::new(seed)).ok()
}

fn roundtrip(msg: &Message) {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf);
    let bytes = buf.freeze();
    assert_eq!(bytes[0], msg.code(), "code first");
    assert_eq!(Message::decode(bytes).as_ref(), Ok(msg));
}

fn token(bytes: &[u8]) -> Token {
    Token::new(bytes).unwrap()
}

/// One of every message, with fields that exercise their bounds.
fn one_of_each() -> Vec<Message> {
    let t16 = token(&[7; 16]);
    let t64 = token(&[9; 64]);
    let el = Element {
        kind: 3,
        sid: 0xbeef,
        data: Bytes::from_static(b"payload"),
    };
    vec![
        Message::Dummy,
        Message::Update(el.clone()),
        Message::Sync(el),
        Message::ConnInitRep {
            version: PROTOCOL_VERSION,
            player: 1,
            token_a: t16,
            secret: t64,
        },
        Message::FeedFailed {
            reason: FailReason::NotResumable,
            attempt: 7,
        },
        Message::FeedInit {
            player: 65535,
            attempt: u32::MAX,
            token_a: t64,
        },
        Message::FeedInitRep {
            attempt: 1,
            token_b: t16,
        },
        Message::TextReq(Bytes::from_static(b"hello")),
        Message::TextRep(Bytes::new()),
        Message::Connection {
            version: 1,
            player: 2,
            token: t16,
        },
        Message::Disconnection,
        Message::ConnInit { version: 1 },
        Message::ConnFailed {
            reason: FailReason::WrongToken,
        },
        Message::ConnOk,
        Message::SyncReq {
            ctx: 1,
            body: Bytes::from_static(b"since"),
        },
        Message::SyncStart { ctx: 2 },
        Message::SyncEnd { ctx: 3 },
        Message::SyncOk { ctx: 4 },
        Message::Refused {
            ctx: 5,
            reason: RefuseReason::Pending,
        },
        Message::FinalAuth {
            player: 9,
            token_b: t16,
        },
        Message::Token {
            version: 1,
            token: t16,
        },
        Message::Resume {
            version: 1,
            token: t64,
        },
        Message::Disconnect { token: t16 },
        Message::Ack {
            received: u64::MAX - 1,
        },
        Message::App(Bytes::from_static(b"\x00\xff")),
    ]
}

#[test]
fn every_message_round_trips() {
    for msg in one_of_each() {
        roundtrip(&msg);
    }
}

#[test]
fn r_type_layouts_are_kept() {
    // Signal markers of R-Type stay one byte, with R-Type's codes.
    assert_eq!(&Message::ConnOk.to_bytes()[..], &[12]);
    assert_eq!(&Message::Disconnection.to_bytes()[..], &[9]);
    assert_eq!(&Message::Dummy.to_bytes()[..], &[0]);
    // The session layer's ACK: [0x23][RECEIVED u64], big-endian.
    assert_eq!(
        &Message::Ack { received: 0x0102 }.to_bytes()[..],
        &[0x23, 0, 0, 0, 0, 0, 0, 1, 2]
    );
    // UPDATE_MSG: [CODE][TYPE int8][SID int16][DATA].
    let update = Message::Update(Element {
        kind: 4,
        sid: 0x0102,
        data: Bytes::from_static(b"xy"),
    });
    assert_eq!(&update.to_bytes()[..], &[1, 4, 1, 2, b'x', b'y']);
    // CONN_INIT_REP: [CODE][VERSION][PLAYERID int16][TOKEN A][SECRET]; tokens
    // length-prefixed.
    let rep = Message::ConnInitRep {
        version: 1,
        player: 0x0203,
        token_a: token(b"abcd"),
        secret: token(b"s"),
    };
    assert_eq!(
        &rep.to_bytes()[..],
        &[3, 1, 2, 3, 4, b'a', b'b', b'c', b'd', 1, b's']
    );
    // CONN_FAILED on `main` and, with the attempt it answers, on `feed`.
    let failed = Message::ConnFailed {
        reason: FailReason::WrongToken,
    };
    assert_eq!(&failed.to_bytes()[..], &[11, 3]);
    let feed_failed = Message::FeedFailed {
        reason: FailReason::WrongToken,
        attempt: 0x0102_0304,
    };
    assert_eq!(&feed_failed.to_bytes()[..], &[11, 3, 1, 2, 3, 4]);
    assert_eq!(
        Message::decode(Bytes::from_static(&[11, 3, 1, 2, 3])),
        Err(DecodeError::Truncated { field: "attempt" })
    );
    assert_eq!(
        Message::decode(Bytes::from_static(&[11, 3, 1, 2, 3, 4, 5])),
        Err(DecodeError::TrailingBytes(1))
    );
}

#[test]
fn decoding_errors_are_typed() {
    assert_eq!(
        Message::decode(Bytes::new()),
        Err(DecodeError::Truncated { field: "code" })
    );
    assert_eq!(
        Message::decode(Bytes::from_static(&[0xee])),
        Err(DecodeError::UnknownCode(0xee))
    );
    assert_eq!(
        Message::decode(Bytes::from_static(&[12, 0])),
        Err(DecodeError::TrailingBytes(1))
    );
    assert!(matches!(
        Message::decode(Bytes::from_static(&[11, 200])),
        Err(DecodeError::BadField {
            field: "reason",
            ..
        })
    ));
    // A token with a zero length, and one longer than the maximum.
    assert!(matches!(
        Message::decode(Bytes::from_static(&[0x22, 0])),
        Err(DecodeError::BadField { .. })
    ));
    let mut long = vec![0x22, 65];
    long.extend_from_slice(&[1; 65]);
    assert!(matches!(
        Message::decode(Bytes::from(long)),
        Err(DecodeError::Oversized {
            len: 65,
            max: 64,
            ..
        })
    ));
    // A token whose length promises more bytes than there are.
    assert!(matches!(
        Message::decode(Bytes::from_static(&[0x22, 4, 1, 2])),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn decoded_payloads_are_slices_of_the_input() {
    let bytes = Message::App(Bytes::from_static(b"zero-copy payload")).to_bytes();
    let start = bytes.as_ptr() as usize;
    match Message::decode(bytes.clone()).unwrap() {
        Message::App(data) => assert_eq!(data.as_ptr() as usize, start + 1),
        other => panic!("unexpected {other:?}"),
    }
}

fn frames_of(max: usize, stream: &[u8], cuts: &[usize]) -> Result<Vec<Bytes>, DecodeError> {
    let mut decoder = FrameDecoder::new(max);
    let mut frames = Vec::new();
    let mut pos = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    ends.sort_unstable();
    ends.push(stream.len());
    for end in ends {
        decoder.push(&stream[pos..end]);
        pos = end;
        while let Some(frame) = decoder.next_frame()? {
            frames.push(frame);
        }
    }
    Ok(frames)
}

/// Like `frames_of`, but each chunk goes in by `push` (copied) or `push_bytes` (zero-copy)
/// as `modes` says.
fn frames_of_mixed(
    max: usize,
    stream: &[u8],
    cuts: &[usize],
    modes: &[bool],
) -> Result<Vec<Bytes>, DecodeError> {
    let mut decoder = FrameDecoder::new(max);
    let mut frames = Vec::new();
    let mut pos = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    ends.sort_unstable();
    ends.push(stream.len());
    for (i, end) in ends.into_iter().enumerate() {
        let chunk = &stream[pos..end];
        if modes.get(i).copied().unwrap_or(false) {
            decoder.push_bytes(Bytes::copy_from_slice(chunk));
        } else {
            decoder.push(chunk);
        }
        pos = end;
        // Sometimes leave frames unread before the next chunk arrives.
        if i % 3 == 2 {
            continue;
        }
        while let Some(frame) = decoder.next_frame()? {
            frames.push(frame);
        }
    }
    while let Some(frame) = decoder.next_frame()? {
        frames.push(frame);
    }
    Ok(frames)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn zero_copy_and_copied_chunks_give_the_same_frames(
        stream in proptest::collection::vec(any::<u8>(), 0..300),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        modes in proptest::collection::vec(any::<bool>(), 0..13),
        max in 0usize..80,
    ) {
        let whole = frames_of(max, &stream, &[]);
        let mixed = frames_of_mixed(max, &stream, &cuts, &modes);
        match (whole, mixed) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "whole {:?} vs mixed {:?}", a, b),
        }
    }

    #[test]
    fn valid_frames_survive_any_mix_of_chunk_kinds(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        modes in proptest::collection::vec(any::<bool>(), 0..21),
    ) {
        let mut stream = BytesMut::new();
        for p in &payloads {
            encode_frame(p, &mut stream).unwrap();
        }
        let frames = frames_of_mixed(64, &stream, &cuts, &modes).unwrap();
        let expected: Vec<Bytes> = payloads.iter().map(|p| Bytes::copy_from_slice(p)).collect();
        prop_assert_eq!(frames, expected);
    }

    #[test]
    fn arbitrary_messages_round_trip(seed in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Some(msg) = message_from(&seed) {
            roundtrip(&msg);
        }
    }

    #[test]
    fn what_decodes_re_encodes_to_the_same_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        if let Ok(msg) = Message::decode(Bytes::from(bytes.clone())) {
            let mut out = BytesMut::new();
            msg.encode(&mut out);
            prop_assert_eq!(&out[..], &bytes[..]);
        }
    }

    #[test]
    fn valid_code_with_random_body_never_panics(code in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..80)) {
        let mut bytes = vec![code];
        bytes.extend_from_slice(&body);
        let _ = Message::decode(Bytes::from(bytes));
    }

    #[test]
    fn every_split_of_a_stream_gives_the_same_frames(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut stream = BytesMut::new();
        for p in &payloads {
            encode_frame(p, &mut stream).unwrap();
        }
        let frames = frames_of(64, &stream, &cuts).unwrap();
        let expected: Vec<Bytes> = payloads.iter().map(|p| Bytes::copy_from_slice(p)).collect();
        prop_assert_eq!(frames, expected);
    }

    #[test]
    fn arbitrary_streams_split_anyhow_agree_with_the_whole(
        stream in proptest::collection::vec(any::<u8>(), 0..200),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
        max in 0usize..64,
    ) {
        let whole = frames_of(max, &stream, &[]);
        let split = frames_of(max, &stream, &cuts);
        // Frames before an error are the same; the error is the same.
        match (whole, split) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "whole {:?} vs split {:?}", a, b),
        }
    }

    #[test]
    fn framed_messages_survive_any_split(
        seeds in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let msgs: Vec<Message> = seeds.iter().filter_map(|s| message_from(s)).collect();
        let mut stream = BytesMut::new();
        for m in &msgs {
            m.encode_framed(&mut stream);
        }
        let frames = frames_of(1 << 16, &stream, &cuts).unwrap();
        let decoded: Vec<Message> = frames.into_iter().map(|f| Message::decode(f).unwrap()).collect();
        prop_assert_eq!(decoded, msgs);
    }

    #[test]
    fn feed_datagrams_round_trip(seq in any::<u64>(), sender in any::<u16>(), content in proptest::collection::vec(any::<u8>(), 0..=500)) {
        let d = FeedDatagram { seq, sender, tag: [0x5a; 16], content: Bytes::from(content) };
        let mut buf = BytesMut::new();
        d.encode(&mut buf, 500).unwrap();
        prop_assert_eq!(FeedDatagram::decode(buf.freeze(), 500), Ok(d));
    }

    #[test]
    fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), max in 0usize..600) {
        if let Ok(d) = FeedDatagram::decode(Bytes::from(bytes.clone()), max) {
            prop_assert!(d.content.len() <= max);
            prop_assert_eq!(bytes.len(), d.content.len() + tether::wire::FEED_HEADER_LEN);
        }
    }
}

#[test]
fn zero_copy_input_refuses_an_oversized_prefix_and_stays_failed() {
    let mut d = FrameDecoder::new(8);
    d.push_bytes(Bytes::from_static(&[
        0, 0, 0, 2, b'o', b'k', 0, 0, 0, 9, 1, 2,
    ]));
    assert_eq!(d.next_frame(), Ok(Some(Bytes::from_static(b"ok"))));
    let err = d.next_frame().unwrap_err();
    assert!(matches!(err, DecodeError::Oversized { len: 9, max: 8, .. }));
    assert_eq!(d.buffered(), 0);
    d.push_bytes(Bytes::from_static(&[0, 0, 0, 1, 1]));
    assert_eq!(d.next_frame(), Err(err));
    assert_eq!(d.buffered(), 0);
}

#[test]
fn oversized_prefix_in_a_stream_is_refused_at_once() {
    let mut d = FrameDecoder::new(1024);
    d.push(&[0, 0, 4, 1]); // 1025
    assert!(matches!(
        d.next_frame(),
        Err(DecodeError::Oversized {
            len: 1025,
            max: 1024,
            ..
        })
    ));
    assert_eq!(d.buffered(), 0);
    // A frame at exactly the limit is fine.
    let mut d = FrameDecoder::new(4);
    d.push(&[0, 0, 0, 4, 1, 2, 3, 4]);
    assert_eq!(d.next_frame(), Ok(Some(Bytes::from_static(&[1, 2, 3, 4]))));
    assert_eq!(FRAME_HEADER_LEN, 4);
}
