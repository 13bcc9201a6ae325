//! Tests of the journal-sync codecs: layouts byte by byte, the hash chain's vectors,
//! round trips and hostile bytes.

use super::*;
use crate::wire::Message;
use alloc::vec;
use proptest::prelude::*;

#[test]
fn a_400_names_only_ids_the_frame_sender_chose() {
    let id = [0, 0, 0, 42];
    for code in [
        crate::wire::codes::SYNC_REQ,
        crate::wire::codes::SYNC_OK,
        RESOURCE_REQ,
    ] {
        let mut frame = vec![code];
        frame.extend_from_slice(&id);
        assert_eq!(answered_id(&frame), Some(42), "code {code:#x}");
        frame.push(0xee); // whatever follows
        assert_eq!(answered_id(&frame), Some(42), "code {code:#x}");
        // Too short to hold an id.
        assert_eq!(answered_id(&frame[..4]), None, "code {code:#x}");
    }
    // Ids the frame's receiver chose (it answers its request): never named.
    for code in [
        crate::wire::codes::SYNC_START,
        crate::wire::codes::SYNC_END,
        crate::wire::codes::REFUSED,
        JOURNAL_LIST,
        RESOURCE,
        STATUS,
        0x35,
    ] {
        let mut frame = vec![code];
        frame.extend_from_slice(&id);
        assert_eq!(answered_id(&frame), None, "code {code:#x}");
    }
    assert_eq!(answered_id(&[]), None);
}

fn bytes_up_to(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn line() -> impl Strategy<Value = LineId> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(epoch, seq, check)| LineId {
        epoch,
        seq,
        check,
    })
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        bytes_up_to(MAX_ID_LEN),
        bytes_up_to(MAX_ID_LEN),
        bytes_up_to(40),
    )
        .prop_map(|(author, resource, payload)| Entry {
            author,
            resource,
            payload,
        })
}

fn journal_message() -> impl Strategy<Value = JournalMessage> {
    prop_oneof![
        (
            any::<u32>(),
            line(),
            any::<u64>(),
            proptest::collection::vec(entry(), 0..8),
            proptest::collection::vec((any::<u16>(), 1..=u32::MAX, any::<u64>()), 0..4)
        )
            .prop_map(|(ctx, since, head, entries, runs)| {
                let mut held: Vec<HeldLines> = runs
                    .into_iter()
                    .map(|(at, lines, check)| HeldLines {
                        at: at % (entries.len() as u16 + 1),
                        lines,
                        check,
                    })
                    .collect();
                held.sort_by_key(|h| h.at);
                JournalMessage::List(JournalList {
                    ctx,
                    since,
                    head,
                    entries,
                    held,
                })
            }),
        (
            any::<u32>(),
            bytes_up_to(MAX_ID_LEN),
            bytes_up_to(MAX_ID_LEN)
        )
            .prop_map(|(req, author, resource)| JournalMessage::ResourceReq {
                req,
                author,
                resource
            }),
        (any::<u32>(), bytes_up_to(100))
            .prop_map(|(req, bytes)| JournalMessage::Resource { req, bytes }),
        (
            proptest::option::of(any::<u32>()),
            prop_oneof![
                Just(Status::BadRequest),
                Just(Status::NotFound),
                Just(Status::RequestTimeout)
            ],
            bytes_up_to(MAX_DESCRIPTION)
        )
            .prop_map(|(req, status, description)| JournalMessage::Status(
                StatusResponse {
                    req,
                    status,
                    description
                }
            )),
    ]
}

proptest! {
    #[test]
    fn every_journal_message_round_trips(msg in journal_message()) {
        let msg = Message::Journal(msg);
        let bytes = msg.to_bytes();
        prop_assert_eq!(Message::decode(bytes), Ok(msg));
    }

    #[test]
    fn every_journal_request_round_trips(
        since in line(),
        limit in any::<u32>(),
        everything in any::<bool>(),
    ) {
        let req = JournalRequest { since, limit: NonZeroU32::new(limit), everything };
        prop_assert_eq!(JournalRequest::decode_body(req.to_body()), Ok(req));
    }

    #[test]
    fn any_bytes_decode_without_panic(code in 0x30u8..=0x3f, body in bytes_up_to(200)) {
        let mut v = vec![code];
        v.extend_from_slice(&body);
        let bytes = Bytes::from(v);
        // Exact layouts: whatever decodes re-encodes to the same bytes.
        if let Ok(m) = Message::decode(bytes.clone()) {
            prop_assert_eq!(m.to_bytes(), bytes);
        }
        let _ = JournalRequest::decode_body(body);
    }
}

/// The chain is part of the protocol: these values never change (another
/// implementation checks itself against them).
#[test]
fn chain_test_vectors() {
    let one = LineId::start(1).next(&Entry::new(b"alice", b"r1", b"hello"));
    let two = one.next(&Entry::new(b"bob", b"a-resource-id-longer-than-8", b""));
    assert_eq!((one.seq, two.seq), (1, 2));
    assert_eq!(
        (one.check, two.check),
        (CHAIN_VECTOR_1, CHAIN_VECTOR_2),
        "{:#018x} {:#018x}",
        one.check,
        two.check
    );
    // Field boundaries count: moving a byte from author to resource changes the line.
    let a = LineId::start(1).next(&Entry::new(b"ab", b"c", b""));
    let b = LineId::start(1).next(&Entry::new(b"a", b"bc", b""));
    assert_ne!(a.check, b.check);
    // The epoch is not hashed (it travels beside the check), the order of lines is.
    assert_eq!(
        LineId::start(2)
            .next(&Entry::new(b"alice", b"r1", b"hello"))
            .check,
        one.check
    );
    let swapped = LineId::start(1)
        .next(&Entry::new(b"bob", b"a-resource-id-longer-than-8", b""))
        .next(&Entry::new(b"alice", b"r1", b"hello"));
    assert_ne!(swapped.check, two.check);
}

const CHAIN_VECTOR_1: u64 = 0x09b9_6758_75c3_058f;
const CHAIN_VECTOR_2: u64 = 0x0fa4_3298_33e9_fe56;

#[test]
fn list_layout_is_exact() {
    let msg = Message::Journal(JournalMessage::List(JournalList {
        ctx: 7,
        since: LineId {
            epoch: 1,
            seq: 2,
            check: 0xc4,
        },
        head: 3,
        entries: vec![Entry::new(b"a", b"r", b"xy")],
        held: vec![],
    }));
    let b = msg.to_bytes();
    let mut want = vec![0x31, 0, 0, 0, 7];
    want.extend_from_slice(&1u64.to_be_bytes());
    want.extend_from_slice(&2u64.to_be_bytes());
    want.extend_from_slice(&0xc4u64.to_be_bytes());
    want.extend_from_slice(&3u64.to_be_bytes());
    want.extend_from_slice(&[0, 1, 1, b'a', 1, b'r', 0, 0, 0, 2, b'x', b'y']);
    assert_eq!(&b[..], &want[..]);
    // Entries are slices of the frame, not copies.
    if let Ok(Message::Journal(JournalMessage::List(l))) = Message::decode(b.clone()) {
        let p = l.entries[0].payload.as_ptr() as usize;
        let start = b.as_ptr() as usize;
        assert!(p >= start && p < start + b.len());
    } else {
        panic!("list did not decode");
    }
}

/// A held run sits between entries as `0xFF, LINES u32, CHECK u64`, and the list's end
/// line takes the run's check.
#[test]
fn held_runs_layout_and_end() {
    let since = LineId::start(1);
    let e = Entry::new(b"a", b"r", b"");
    let list = JournalList {
        ctx: 0,
        since,
        head: 9,
        entries: vec![e.clone(), e.clone()],
        held: vec![HeldLines {
            at: 1,
            lines: 5,
            check: 0xabc,
        }],
    };
    assert_eq!(list.lines(), 7);
    let end = list.end();
    assert_eq!(end.seq, 7);
    let end_by_hand = LineId {
        epoch: 1,
        seq: 6,
        check: 0xabc,
    }
    .next(&e);
    assert_eq!(end, end_by_hand);
    let b = Message::Journal(JournalMessage::List(list.clone())).to_bytes();
    let entry_bytes = [1, b'a', 1, b'r', 0, 0, 0, 0];
    let mut want = vec![0x31, 0, 0, 0, 0];
    want.extend_from_slice(&[0; 24]); // since: epoch 1, seq 0, check 0
    want[5 + 7] = 1;
    want.extend_from_slice(&9u64.to_be_bytes());
    want.extend_from_slice(&[0, 3]);
    want.extend_from_slice(&entry_bytes);
    want.extend_from_slice(&[0xff, 0, 0, 0, 5]);
    want.extend_from_slice(&0xabcu64.to_be_bytes());
    want.extend_from_slice(&entry_bytes);
    assert_eq!(&b[..], &want[..]);
    assert_eq!(
        Message::decode(b),
        Ok(Message::Journal(JournalMessage::List(list)))
    );
    // A run of no lines is not a layout.
    let mut empty_run = want.clone();
    empty_run[5 + 24 + 8 + 2 + 8 + 4] = 0;
    assert!(Message::decode(Bytes::from(empty_run)).is_err());
}

#[test]
fn status_layout_and_errors() {
    let msg = Message::Journal(JournalMessage::Status(StatusResponse {
        req: Some(5),
        status: Status::NotFound,
        description: Bytes::from_static(b"gone"),
    }));
    assert_eq!(
        &msg.to_bytes()[..],
        &[0x34, 0x01, 0x94, 1, 0, 0, 0, 5, 0, 4, b'g', b'o', b'n', b'e']
    );
    assert_eq!(
        Message::decode(Bytes::from_static(&[0x34, 0x01, 0x91, 0, 0, 0])),
        Err(DecodeError::BadField {
            field: "status",
            reason: "unknown status code"
        })
    );
    assert_eq!(
        Message::decode(Bytes::from_static(&[0x30, 0])),
        Err(DecodeError::UnknownCode(0x30))
    );
    let too_many = [0x31u8, 0, 0, 0, 0]
        .iter()
        .copied()
        .chain([0u8; 32])
        .chain([0x04, 0x01])
        .collect::<Vec<u8>>();
    assert!(matches!(
        Message::decode(Bytes::from(too_many)),
        Err(DecodeError::Oversized {
            field: "entry count",
            ..
        })
    ));
    assert_eq!(
        JournalRequest::decode_body(Bytes::from_static(&[0x40])),
        Err(DecodeError::BadField {
            field: "sync body kind",
            reason: "not a journal request"
        })
    );
}

/// A journal request's flags are exact: bit 0 or nothing; any other bit, a missing flags
/// byte or a trailing byte is refused by name.
#[test]
fn journal_request_flags_are_exact() {
    let req = JournalRequest {
        since: LineId::start(1),
        limit: None,
        everything: true,
    };
    let body = req.to_body();
    assert_eq!(body[body.len() - 1], 1);
    let mut bad = body.to_vec();
    *bad.last_mut().unwrap() = 2;
    assert!(matches!(
        JournalRequest::decode_body(Bytes::from(bad)),
        Err(DecodeError::BadField { field: "flags", .. })
    ));
    let truncated = body.slice(..body.len() - 1);
    assert!(matches!(
        JournalRequest::decode_body(truncated),
        Err(DecodeError::Truncated { field: "flags" })
    ));
    let mut long = body.to_vec();
    long.push(0);
    assert!(JournalRequest::decode_body(Bytes::from(long)).is_err());
}
