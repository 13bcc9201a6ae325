//! Seed 001 (SDMP journal sync): since/limit, marks, a cut mid-context and its resend,
//! broadcasts, an unknown `since`, resources and each status; and the property that two
//! journals with random appends and random cuts always end equal.

mod sync_common;

use bytes::Bytes;
use core::num::NonZeroU32;
use proptest::prelude::*;
use sync_common::{config, Net};
use tether::sync::journal::{
    Continuity, JournalStore, Marks, MemJournal, SyncCommand, SyncConfig, SyncEvent,
};
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
            held: vec![],
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
            held: vec![],
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
        ours: Some(LineId {
            epoch: 999,
            seq: 2,
            check: 0,
        }),
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
        ours: Some(LineId {
            epoch: E1,
            seq: 40,
            check: 0,
        }),
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

/// Hands the server one frame that does not decode; returns the status it answers with.
fn answer_to_bad_frame(net: &mut Net, body: &[u8]) -> tether::wire::StatusResponse {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    let r = net.m[SERVER].handle_input(net.now, Input::Received(Link::main(1), Bytes::from(frame)));
    assert!(
        matches!(r, Err(ref e) if !e.is_fatal()),
        "{body:02x?}: {r:?}"
    );
    net.pump();
    match net.wire[SERVER]
        .pop_front()
        .map(|f| Message::decode(f.slice(4..)).unwrap())
    {
        Some(Message::Journal(JournalMessage::Status(s))) => {
            assert_eq!(s.status, Status::BadRequest, "{body:02x?}");
            s
        }
        other => panic!("{body:02x?}: {other:?}"),
    }
}

#[test]
fn status_400_names_the_id_the_sender_gave_whenever_the_frame_holds_one() {
    let mut net = server_with(0);
    // The sender's own ids, readable: named.
    let sync_ok_too_long = [0x10, 0, 0, 0, 7, 0xee];
    assert_eq!(
        answer_to_bad_frame(&mut net, &sync_ok_too_long).req,
        Some(7)
    );
    let resource_req_cut = [0x32, 0, 0, 0, 43, 3, b's'];
    assert_eq!(
        answer_to_bad_frame(&mut net, &resource_req_cut).req,
        Some(43)
    );
    // Too short to hold an id: none can be named.
    for short in [&[0x0d, 0, 1][..], &[0x32, 0, 0, 0], &[0x10], &[]] {
        assert_eq!(
            answer_to_bad_frame(&mut net, short).req,
            None,
            "{short:02x?}"
        );
    }
    // Frames whose id is the receiver's (they answer its requests: a marker, a list, a
    // resource, a status): never named, since the peer would look the id up among its own.
    let sync_end_too_long = [0x0f, 0, 0, 0, 1, 0xee];
    let list_cut = [0x31, 0, 0, 0, 1, 0, 0];
    let status_unknown = [0x34, 0x01, 0xf4, 1, 0, 0, 0, 9, 0, 0];
    for theirs in [&sync_end_too_long[..], &list_cut, &status_unknown] {
        assert_eq!(
            answer_to_bad_frame(&mut net, theirs).req,
            None,
            "{theirs:02x?}"
        );
    }
    assert_eq!(net.m[SERVER].core().stats().malformed, 9);
}

/// A requester told 400 about its own request gives that request up instead of asking
/// again and again: the 400 names its context, so it knows which.
#[test]
fn a_400_naming_our_request_ends_it() {
    let mut net = server_with(1);
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    let Some((_, Message::SyncReq { ctx, .. })) = net.log.last().cloned() else {
        panic!("the client asked")
    };
    // The server's answer, as if it could not read the body.
    net.wire[CLIENT].clear();
    let status = Message::Journal(JournalMessage::Status(tether::wire::StatusResponse {
        req: Some(ctx),
        status: Status::BadRequest,
        description: Bytes::from_static(b"not interpretable"),
    }));
    let mut frame = bytes::BytesMut::new();
    status.encode_framed(&mut frame);
    net.m[CLIENT]
        .handle_input(net.now, Input::Received(Link::main(1), frame.freeze()))
        .unwrap();
    net.pump();
    assert_eq!(
        net.m[CLIENT].core().context_state(),
        tether::sync::context::ContextState::Idle
    );
    assert!(matches!(
        net.events[CLIENT].last(),
        Some(SyncEvent::PeerStatus(s)) if s.req == Some(ctx) && s.status == Status::BadRequest
    ));
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

// ---- Line ids name one history (the hash chain), and every session says where it stands.

fn continuity(net: &Net, side: usize) -> Vec<Continuity> {
    net.events[side]
        .iter()
        .filter_map(|e| match e {
            SyncEvent::Continuity { continuity, .. } => Some(*continuity),
            _ => None,
        })
        .collect()
}

/// A server journal wiped and regrown under the same epoch past the client's mark: epoch
/// and number alone would name a line of the new history, and the client would silently
/// miss every line before its mark. The check tells the histories apart.
#[test]
fn a_journal_regrown_under_the_same_epoch_is_not_taken_for_the_one_confirmed() {
    let mut net = server_with(4);
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.settle();
    let mark = net.m[CLIENT].core().marks().ours.expect("a mark");
    assert_eq!(mark.seq, 4);
    // The server's disk is lost; the new journal is given the same epoch and grows to 6.
    net.cut();
    *net.m[SERVER].store_mut() = MemJournal::new(E1, 100);
    for i in 100..106 {
        net.cmd(SERVER, SyncCommand::Append(entry("srv", i)));
    }
    net.events = Default::default();
    net.connect();
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.settle();
    assert_eq!(continuity(&net, CLIENT), [Continuity::Diverged { mark }]);
    assert!(net.events[CLIENT]
        .iter()
        .any(|e| matches!(e, SyncEvent::FullResync { since, .. } if since.seq == 0)));
    // Every line of the new history arrived, lines 1 to 4 included.
    assert_eq!(net.m[CLIENT].store().entries().len(), 4 + 6);
    assert_eq!(
        net.m[CLIENT].core().marks().ours,
        net.m[SERVER].store().line(6)
    );
}

/// The first answer of each connection says where the mark stands: first contact, caught
/// up from the mark, resumed with nothing new.
#[test]
fn each_connection_reports_its_continuity_before_any_entry() {
    let mut net = server_with(3);
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.settle();
    assert_eq!(continuity(&net, CLIENT), [Continuity::Start]);
    // The report comes before the first entry is applied.
    let first = |net: &Net| {
        net.events[CLIENT]
            .iter()
            .position(|e| matches!(e, SyncEvent::Continuity { .. } | SyncEvent::Applied { .. }))
    };
    assert!(matches!(
        net.events[CLIENT][first(&net).unwrap()],
        SyncEvent::Continuity {
            epoch: E1,
            head: 3,
            ..
        }
    ));
    let mark = net.m[CLIENT].core().marks().ours.unwrap();
    for cut_and_grow in [true, false] {
        net.cut();
        if cut_and_grow {
            net.cmd(SERVER, SyncCommand::Append(entry("srv", 4)));
        }
        net.events = Default::default();
        net.connect();
        net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
        net.settle();
        let mark = net.m[CLIENT].core().marks().ours.map_or(mark, |m| m);
        if cut_and_grow {
            assert_eq!(
                continuity(&net, CLIENT),
                [Continuity::CatchUp {
                    mark: net.m[SERVER].store().line(3).unwrap()
                }]
            );
        } else {
            assert_eq!(continuity(&net, CLIENT), [Continuity::UpToDate { mark }]);
        }
    }
    assert_eq!(net.m[CLIENT].core().stats().duplicates, 0);
}

/// Marks restored with a journal that no longer holds what they covered (the session's
/// state outlived the journal): the mark is dropped and the whole journal asked for.
#[test]
fn a_mark_whose_lines_our_journal_lost_is_dropped() {
    let mut net = server_with(5);
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.settle();
    let marks = net.m[CLIENT].core().marks();
    assert_eq!(marks.held, Some(net.m[CLIENT].store().head_line()));
    net.cut();
    // The client's journal is lost; its session state (the marks) survives.
    *net.m[CLIENT].store_mut() = MemJournal::new(E0 + 1, 100);
    net.m[CLIENT].core_mut().set_marks(marks);
    net.events = Default::default();
    net.connect();
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.settle();
    assert_eq!(
        continuity(&net, CLIENT),
        [Continuity::Rebuilt {
            mark: marks.ours.unwrap()
        }]
    );
    assert_eq!(net.m[CLIENT].store().entries().len(), 5);
}

/// Both sides sync on connect: the server lets the client's opening request go first and
/// asks as soon as it has answered it, so the two never cross and nothing is refused.
#[test]
fn a_clean_connect_opens_one_context_each_way_without_refusal() {
    let both = SyncConfig {
        sync_on_connect: true,
        ..config()
    };
    let mut net = Net::new(both.clone(), both, E0, E1);
    for i in 1..=3 {
        net.cmd(SERVER, SyncCommand::Append(entry("srv", i)));
        net.cmd(CLIENT, SyncCommand::Append(entry("cli", i)));
    }
    let start = net.now;
    net.connect();
    // Deliver without firing any timer: the server's request must not wait for one.
    while net.deliver(0) || net.deliver(1) {}
    assert_eq!(net.now, start);
    let refused = net
        .log
        .iter()
        .filter(|(_, m)| matches!(m, Message::Refused { .. }))
        .count();
    let requests: Vec<usize> = net
        .log
        .iter()
        .filter(|(_, m)| matches!(m, Message::SyncReq { .. }))
        .map(|(side, _)| *side)
        .collect();
    assert_eq!(refused, 0);
    assert_eq!(
        requests,
        [CLIENT, SERVER],
        "the client's first, then the server's"
    );
    assert_eq!(net.m[CLIENT].store().entries().len(), 6);
    assert_eq!(net.m[SERVER].store().entries().len(), 6);
    assert_eq!(continuity(&net, CLIENT), [Continuity::Start]);
    assert_eq!(continuity(&net, SERVER), [Continuity::Start]);
}

/// A server whose client does not sync on connect asks by itself once `answer_first`
/// has passed.
#[test]
fn a_server_asks_by_itself_when_the_client_does_not() {
    let server = SyncConfig {
        sync_on_connect: true,
        answer_first: Duration::from_millis(300),
        ..config()
    };
    let mut net = Net::new(config(), server, E0, E1);
    net.cmd(CLIENT, SyncCommand::Append(entry("cli", 1)));
    let start = net.now;
    net.connect();
    assert!(
        net.wire[SERVER].is_empty(),
        "the server waits for the client first"
    );
    net.settle();
    assert_eq!(net.m[SERVER].store().entries().len(), 1);
    assert!(net.now >= start + Duration::from_millis(300));
}

/// A broadcast that continues the receiver's mark exactly moves the mark: the next
/// connection asks only for what came after.
#[test]
fn broadcasts_that_continue_the_mark_move_it() {
    let bcast = SyncConfig {
        broadcast_on_append: true,
        ..config()
    };
    let mut net = Net::new(config(), bcast, E0, E1);
    net.cmd(SERVER, SyncCommand::Append(entry("srv", 1)));
    net.connect();
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.settle();
    for i in 2..=5 {
        net.cmd(SERVER, SyncCommand::Append(entry("srv", i)));
    }
    net.settle();
    assert_eq!(
        net.m[CLIENT].core().marks().ours,
        net.m[SERVER].store().line(5)
    );
    net.cut();
    net.connect();
    let before = net.log.len();
    net.cmd(CLIENT, SyncCommand::RequestJournal { limit: None });
    net.settle();
    let resent: usize = net
        .sent_since(before)
        .iter()
        .map(|(_, m)| match m {
            Message::Journal(JournalMessage::List(l)) => l.entries.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(resent, 0, "nothing the broadcasts carried is sent again");
}
