//! Seed 001 (SDMP journal sync): since/limit, marks, a cut mid-context and its resend,
//! broadcasts, an unknown `since`, resources and each status; and the property that two
//! journals with random appends and random cuts always end equal.

mod sync_common;

use bytes::Bytes;
use core::num::NonZeroU32;
use proptest::prelude::*;
use sync_common::{config, Net};
use tether::sync::journal::{JournalStore, Marks, SyncCommand, SyncConfig, SyncEvent};
use tether::wire::{Entry, JournalList, JournalMessage, LineId, Message, Status};
use tether::{Duration, Input, Link, Machine};

const CLIENT: usize = 0;
const SERVER: usize = 1;
const E0: u64 = 0xc1;
const E1: u64 = 0x5e;

fn entry(author: &str, i: u32) -> Entry {
    Entry::new(
        author.as_bytes(),
        &i.to_be_bytes(),
        format!("payload {i}").as_bytes(),
    )
}

fn server_with(n: u32) -> Net {
    let mut net = Net::new(config(), config(), E0, E1);
    for i in 1..=n {
        net.cmd(SERVER, SyncCommand::Append(entry("srv", i)));
    }
    net.connect();
    net
}

fn lists(net: &Net, from: usize) -> Vec<JournalList> {
    net.log
        .iter()
        .filter(|(s, _)| *s == from)
        .filter_map(|(_, m)| match m {
            Message::Journal(JournalMessage::List(l)) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn since_and_limit_page_over_several_contexts() {
    let mut net = server_with(10);
    net.cmd(
        CLIENT,
        SyncCommand::RequestJournal {
            limit: NonZeroU32::new(3),
        },
    );
    net.settle();
    // Four contexts: 3 + 3 + 3 + 1 entries, each asked from the previous mark.
    let reqs: Vec<_> = net
        .log
        .iter()
        .filter_map(|(_, m)| match m {
            Message::SyncReq { body, .. } => {
                Some(tether::wire::JournalRequest::decode_body(body.clone()).unwrap())
            }
            _ => None,
        })
        .collect();
    let sinces: Vec<u64> = reqs.iter().map(|r| r.since.seq).collect();
    assert_eq!(sinces, vec![0, 3, 6, 9]);
    assert!(reqs.iter().all(|r| r.limit == NonZeroU32::new(3)));
    for l in lists(&net, SERVER) {
        assert!(l.entries.len() <= 3, "limit exceeded");
        assert_eq!(l.since.epoch, E1);
        // `since` is n-1: the first entry is line since+1 of the server's journal.
        for (i, e) in l.entries.iter().enumerate() {
            let n = u32::try_from(l.since.seq).unwrap() + 1 + i as u32;
            assert_eq!(*e, entry("srv", n));
        }
    }
    assert_eq!(net.m[CLIENT].store().entries().len(), 10);
    // Marks: the client's `since` and the server's record of the client agree.
    let want = net.m[SERVER].store().line(10);
    assert_eq!(net.m[CLIENT].core().marks().ours, want);
    assert_eq!(net.m[SERVER].core().marks().theirs, want);
}

#[test]
fn lists_are_split_to_respect_message_size() {
    let small = SyncConfig {
        max_entries_per_message: 4,
        ..config()
    };
    let mut net = Net::new(config(), small, E0, E1);
    for i in 1..=10 {
        net.cmd(SERVER, SyncCommand::Append(entry("srv", i)));
    }
    net.connect();
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.settle();
    let sizes: Vec<usize> = lists(&net, SERVER)
        .iter()
        .map(|l| l.entries.len())
        .collect();
    assert_eq!(sizes, vec![4, 4, 2]);
    assert_eq!(net.m[CLIENT].store().entries().len(), 10);
}

#[test]
fn a_context_cut_midway_is_sent_again_from_the_confirmed_mark() {
    let small = SyncConfig {
        max_entries_per_message: 2,
        ..config()
    };
    let mut net = Net::new(config(), small, E0, E1);
    for i in 1..=6 {
        net.cmd(SERVER, SyncCommand::Append(entry("srv", i)));
    }
    net.connect();
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.deliver(CLIENT); // SYNC_REQ
    net.deliver(SERVER); // SYNC_START
    net.deliver(SERVER); // list: lines 1, 2
    assert_eq!(net.m[CLIENT].store().entries().len(), 2);
    net.cut();
    // Nothing confirmed: marks unchanged on both sides.
    assert_eq!(net.m[CLIENT].core().marks(), Marks::default());
    assert_eq!(net.m[SERVER].core().marks(), Marks::default());
    net.connect();
    net.settle();
    // Resent from the beginning; lines 1 and 2 arrive twice but are applied once.
    let s = net.m[CLIENT].core().stats();
    assert_eq!(s.applied, 6);
    assert_eq!(s.duplicates, 2);
    assert_eq!(net.m[CLIENT].store().entries().len(), 6);
    assert_eq!(
        net.m[SERVER].core().marks().theirs,
        net.m[SERVER].store().line(6)
    );
}

#[test]
fn a_cut_after_sync_end_but_before_sync_ok_resends_from_the_old_mark() {
    let mut net = server_with(3);
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.settle();
    for i in 4..=5 {
        net.cmd(SERVER, SyncCommand::Append(entry("srv", i)));
    }
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.deliver(CLIENT); // SYNC_REQ since 3
    while net.deliver(SERVER) {} // START, list 4..5, END; client sends SYNC_OK
    assert_eq!(net.m[CLIENT].core().marks().ours.map(|l| l.seq), Some(5));
    net.cut(); // SYNC_OK lost
    assert_eq!(net.m[SERVER].core().marks().theirs.map(|l| l.seq), Some(3));
    net.connect();
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.settle();
    assert_eq!(net.m[SERVER].core().marks().theirs.map(|l| l.seq), Some(5));
    assert_eq!(net.m[CLIENT].core().stats().applied, 5);
}

#[test]
fn broadcasts_send_the_most_recent_list_from_the_confirmed_line() {
    let bcast = SyncConfig {
        broadcast_on_append: true,
        ..config()
    };
    let mut net = Net::new(config(), bcast, E0, E1);
    net.cmd(SERVER, SyncCommand::Append(entry("srv", 1)));
    net.connect();
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.settle();
    let before = net.log.len();
    net.cmd(SERVER, SyncCommand::Append(entry("srv", 2)));
    // Unasked, context 0, from the client's confirmed line 1.
    assert_eq!(
        net.sent_since(before).last().map(|(_, m)| m.clone()),
        Some(Message::Journal(JournalMessage::List(JournalList {
            ctx: 0,
            since: net.m[SERVER].store().line(1).unwrap(),
            head: 2,
            entries: vec![entry("srv", 2)],
        })))
    );
    let before = net.log.len();
    net.cmd(SERVER, SyncCommand::Append(entry("srv", 3)));
    // The next one continues from the last line this connection carried (seed 001: each
    // node keeps the last line sent to each other node), not again from line 1.
    assert_eq!(
        net.sent_since(before).last().map(|(_, m)| m.clone()),
        Some(Message::Journal(JournalMessage::List(JournalList {
            ctx: 0,
            since: net.m[SERVER].store().line(2).unwrap(),
            head: 3,
            entries: vec![entry("srv", 3)],
        })))
    );
    net.settle();
    assert_eq!(net.m[CLIENT].store().entries().len(), 3);
    // Broadcasts do not move marks (only SYNC_OK does), and nothing was sent twice.
    assert_eq!(net.m[SERVER].core().marks().theirs.map(|l| l.seq), Some(1));
    assert_eq!(net.m[CLIENT].core().stats().duplicates, 0);
}

#[test]
fn an_unknown_since_leads_to_a_full_resync() {
    let mut net = server_with(4);
    net.m[CLIENT].core_mut().set_marks(Marks {
        ours: Some(LineId { epoch: 999, seq: 2, check: 0 }),
        theirs: None,
        held: None,
    });
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.settle();
    assert!(net.events[CLIENT]
        .iter()
        .any(|e| matches!(e, SyncEvent::FullResync { since, .. } if *since == LineId::start(E1))));
    assert_eq!(net.m[CLIENT].store().entries().len(), 4);
    // A `since` past the replier's head is unknown too.
    net.m[CLIENT].core_mut().set_marks(Marks {
        ours: Some(LineId { epoch: E1, seq: 40, check: 0 }),
        theirs: None,
        held: None,
    });
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.settle();
    assert_eq!(net.m[CLIENT].core().stats().duplicates, 4);
    assert_eq!(
        net.m[CLIENT].core().marks().ours,
        net.m[SERVER].store().line(4)
    );
}

#[test]
fn resources_are_answered_unchanged_or_with_404() {
    let mut net = server_with(2);
    net.m[SERVER]
        .store_mut()
        .delete(b"srv", &2u32.to_be_bytes());
    let ask = |net: &mut Net, i: u32| {
        net.cmd(
            CLIENT,
            SyncCommand::RequestResource {
                author: Bytes::from_static(b"srv"),
                resource: Bytes::copy_from_slice(&i.to_be_bytes()),
            },
        );
        net.settle();
        net.take_events(CLIENT)
    };
    assert_eq!(
        ask(&mut net, 1),
        vec![SyncEvent::Resource {
            req: 1,
            author: Bytes::from_static(b"srv"),
            resource: Bytes::copy_from_slice(&1u32.to_be_bytes()),
            bytes: Bytes::from_static(b"payload 1"),
        }]
    );
    for (i, req) in [(2u32, 2u32), (7, 3)] {
        // 2 is deleted, 7 never existed: both 404, each naming its request.
        assert_eq!(
            ask(&mut net, i),
            vec![SyncEvent::ResourceStatus {
                req,
                author: Bytes::from_static(b"srv"),
                resource: Bytes::copy_from_slice(&i.to_be_bytes()),
                status: Status::NotFound,
            }]
        );
    }
}

#[test]
fn status_400_names_the_request_that_was_not_interpretable() {
    let mut net = server_with(0);
    // A resource request with an author length over the maximum.
    let mut frame = vec![0, 0, 0, 7, 0x32, 0, 0, 0, 42, 200, b'x'];
    frame[3] = (frame.len() - 4) as u8;
    let r = net.m[SERVER].handle_input(net.now, Input::Received(Link::main(1), Bytes::from(frame)));
    assert!(matches!(r, Err(ref e) if !e.is_fatal()));
    net.pump();
    assert_eq!(
        net.wire[SERVER]
            .pop_front()
            .map(|f| Message::decode(f.slice(4..)).unwrap()),
        Some(Message::Journal(JournalMessage::Status(
            tether::wire::StatusResponse {
                req: Some(42),
                status: Status::BadRequest,
                description: Bytes::from_static(b"not interpretable"),
            }
        )))
    );
    // A sync request whose journal body is bad: 400 naming the context.
    net.cmd(
        CLIENT,
        SyncCommand::Send(Message::SyncReq {
            ctx: 9,
            body: Bytes::from_static(&[0x30, 1]),
        }),
    );
    net.deliver(CLIENT);
    let Some((_, Message::Journal(JournalMessage::Status(s)))) = net.log.last().cloned() else {
        panic!()
    };
    assert_eq!((s.req, s.status), (Some(9), Status::BadRequest));
    // The machine goes on: a valid request is still served.
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.settle();
    assert!(net.events[CLIENT]
        .iter()
        .any(|e| matches!(e, SyncEvent::Completed { .. })));
}

#[test]
fn status_408_after_the_idle_timeout_then_the_connection_is_dropped() {
    let idle = SyncConfig {
        idle_timeout: Some(Duration::from_secs(5)),
        ..config()
    };
    let mut net = Net::new(config(), idle, E0, E1);
    net.connect();
    let deadline = net.m[SERVER].poll_timeout().unwrap();
    assert_eq!(deadline, net.now + Duration::from_secs(5));
    net.now = deadline;
    net.m[SERVER].handle_input(net.now, Input::Timeout).unwrap();
    net.pump();
    assert_eq!(net.events[SERVER], vec![SyncEvent::IdleTimeout]);
    assert_eq!(net.closes[SERVER], 1);
    net.deliver(SERVER);
    assert!(matches!(
        net.events[CLIENT].last(),
        Some(SyncEvent::PeerStatus(s)) if s.status == Status::RequestTimeout && s.req.is_none()
    ));
}

#[test]
fn an_oversized_frame_is_fatal_and_sticky() {
    let mut net = server_with(0);
    let bad = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]);
    let r = net.m[SERVER].handle_input(net.now, Input::Received(Link::main(1), bad));
    assert!(matches!(r, Err(ref e) if e.is_fatal()));
    let again = net.m[SERVER].handle_input(net.now, Input::Timeout);
    assert_eq!(again, r);
}

/// One step of the property: what happens next between the two nodes.
#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Deliver(usize),
    Cut,
    Request(usize, Option<u32>),
    Broadcast(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..2usize).prop_map(Op::Append),
        6 => (0..2usize).prop_map(Op::Deliver),
        1 => Just(Op::Cut),
        2 => (0..2usize, proptest::option::of(1..5u32)).prop_map(|(s, l)| Op::Request(s, l)),
        1 => (0..2usize).prop_map(Op::Broadcast),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    /// Random appends on both sides, random cuts in the middle of contexts: once connected
    /// and settled, both journals hold the same set of entries, every entry appended
    /// anywhere, none twice.
    #[test]
    fn two_journals_always_end_equal(ops in proptest::collection::vec(op(), 0..120)) {
        let cfg = SyncConfig {
            max_entries_per_message: 2,
            broadcast_on_append: true,
            sync_on_connect: true,
            ..config()
        };
        let mut net = Net::new(cfg.clone(), cfg, E0, E1);
        net.connect();
        let mut appended = [0u32, 0u32];
        for op in ops {
            match op {
                Op::Append(s) => {
                    appended[s] += 1;
                    net.cmd(s, SyncCommand::Append(entry(["a", "b"][s], appended[s])));
                }
                Op::Deliver(s) => { net.deliver(s); }
                Op::Cut => { net.cut(); net.connect(); }
                Op::Request(s, l) => {
                    net.cmd(s, SyncCommand::RequestJournal { limit: l.and_then(NonZeroU32::new) });
                }
                Op::Broadcast(s) => net.cmd(s, SyncCommand::Broadcast),
            }
        }
        net.settle();
        // Ask both ways once more, so the last appends travel both directions.
        net.cmd(0, SyncCommand::RequestJournal { limit: None });
        net.settle();
        net.cmd(1, SyncCommand::RequestJournal { limit: None });
        net.settle();
        let total = (appended[0] + appended[1]) as usize;
        for i in 0..2 {
            let store = net.m[i].store();
            prop_assert_eq!(store.entries().len(), total, "side {} lost or doubled", i);
            prop_assert_eq!(store.keys().len(), total);
        }
        prop_assert_eq!(net.m[0].store().keys(), net.m[1].store().keys());
    }
}
