//! Seed 000 (synchronization), replayed step by step: the document's three diagrams, then
//! refusal by policy, crossing requests, and sync messages outside a context.

mod sync_common;

use bytes::Bytes;
use sync_common::{config, Net};
use tether::sync::context::ContextState;
use tether::sync::journal::{Policy, SyncCommand, SyncEvent};
use tether::wire::{Element, Message, RefuseReason};
use tether::Machine;

const REQUESTER: usize = 0;
const REPLIER: usize = 1;

fn el(sid: u16) -> Element {
    Element {
        kind: 1,
        sid,
        data: Bytes::from_static(b"state"),
    }
}

fn net() -> Net {
    let mut n = Net::new(config(), config(), 1, 2);
    n.connect();
    n
}

/// Delivers the next frame from `from` and checks it is `want`.
fn step(n: &mut Net, from: usize, want: Message) {
    let at = n.log.len();
    let frame = n.wire[from].front().cloned().expect("a frame in flight");
    assert_eq!(Message::decode(frame.slice(4..)).unwrap(), want);
    assert!(n.deliver(from));
    let _ = at;
}

/// SYNC_REQ -> SYNC_START, returns the context id.
fn open_context(n: &mut Net) -> u32 {
    n.cmd(
        REQUESTER,
        SyncCommand::Request {
            body: Bytes::from_static(b"world"),
        },
    );
    let ctx = 1;
    step(
        n,
        REQUESTER,
        Message::SyncReq {
            ctx,
            body: Bytes::from_static(b"world"),
        },
    );
    assert_eq!(
        n.take_events(REPLIER),
        vec![SyncEvent::SyncRequested {
            ctx,
            body: Bytes::from_static(b"world")
        }]
    );
    step(n, REPLIER, Message::SyncStart { ctx });
    assert_eq!(
        n.m[REQUESTER].core().context_state(),
        ContextState::Receiving
    );
    assert_eq!(n.m[REPLIER].core().context_state(), ContextState::Replying);
    ctx
}

fn sync_message(n: &mut Net, sid: u16) {
    n.cmd(REPLIER, SyncCommand::SendSync(el(sid)));
    step(n, REPLIER, Message::Sync(el(sid)));
    assert_eq!(
        n.take_events(REQUESTER),
        vec![SyncEvent::SyncMessage {
            ctx: 1,
            element: el(sid)
        }]
    );
}

fn close_context(n: &mut Net, ctx: u32) {
    n.cmd(REPLIER, SyncCommand::EndSync);
    step(n, REPLIER, Message::SyncEnd { ctx });
    assert_eq!(
        n.take_events(REQUESTER),
        vec![SyncEvent::Completed { ctx, mark: None }]
    );
    step(n, REQUESTER, Message::SyncOk { ctx });
    assert_eq!(
        n.take_events(REPLIER),
        vec![SyncEvent::Confirmed { ctx, line: None }]
    );
    for m in &n.m {
        assert_eq!(m.core().context_state(), ContextState::Idle);
    }
    assert!(n.wire[0].is_empty() && n.wire[1].is_empty());
}

#[test]
fn diagram_1_request_start_messages_end_ok() {
    let mut n = net();
    let ctx = open_context(&mut n);
    for sid in 1..=3 {
        sync_message(&mut n, sid);
    }
    close_context(&mut n, ctx);
}

#[test]
fn diagram_2_other_messages_flow_between_the_markers() {
    let mut n = net();
    let ctx = open_context(&mut n);
    sync_message(&mut n, 1);
    sync_message(&mut n, 2);
    // "in the case an important message is sent during sync, we should still handle it"
    let other = Message::App(Bytes::from_static(b"important"));
    n.cmd(REPLIER, SyncCommand::Send(other.clone()));
    step(&mut n, REPLIER, other.clone());
    assert_eq!(n.take_events(REQUESTER), vec![SyncEvent::Message(other)]);
    let reply = Message::App(Bytes::from_static(b"reply"));
    n.cmd(REQUESTER, SyncCommand::Send(reply.clone()));
    step(&mut n, REQUESTER, reply.clone());
    assert_eq!(n.take_events(REPLIER), vec![SyncEvent::Message(reply)]);
    assert_eq!(
        n.m[REQUESTER].core().context_state(),
        ContextState::Receiving
    );
    sync_message(&mut n, 3);
    close_context(&mut n, ctx);
}

#[test]
fn diagram_3_a_request_while_pending_is_refused_both_ways() {
    let mut n = net();
    let ctx = open_context(&mut n);
    sync_message(&mut n, 1);
    sync_message(&mut n, 2);

    // The requester sends SYNC_REQ while its context is pending (a raw send: tether's own
    // requester would wait, see below) -> REFUSED.
    n.cmd(
        REQUESTER,
        SyncCommand::Send(Message::SyncReq {
            ctx: 50,
            body: Bytes::new(),
        }),
    );
    step(
        &mut n,
        REQUESTER,
        Message::SyncReq {
            ctx: 50,
            body: Bytes::new(),
        },
    );
    step(
        &mut n,
        REPLIER,
        Message::Refused {
            ctx: 50,
            reason: RefuseReason::Pending,
        },
    );

    // Same the other way.
    n.cmd(
        REPLIER,
        SyncCommand::Send(Message::SyncReq {
            ctx: 60,
            body: Bytes::new(),
        }),
    );
    step(
        &mut n,
        REPLIER,
        Message::SyncReq {
            ctx: 60,
            body: Bytes::new(),
        },
    );
    step(
        &mut n,
        REQUESTER,
        Message::Refused {
            ctx: 60,
            reason: RefuseReason::Pending,
        },
    );

    // The context is untouched by either refusal.
    assert_eq!(
        n.m[REQUESTER].core().context_state(),
        ContextState::Receiving
    );
    assert_eq!(n.m[REPLIER].core().context_state(), ContextState::Replying);
    sync_message(&mut n, 3);
    close_context(&mut n, ctx);
}

#[test]
fn a_request_made_while_pending_waits_for_the_end_then_goes() {
    let mut n = net();
    let ctx = open_context(&mut n);
    // The replier wants its own context: tether queues it rather than be refused.
    n.cmd(
        REPLIER,
        SyncCommand::Request {
            body: Bytes::from_static(b"mine"),
        },
    );
    assert!(n.wire[REPLIER].is_empty());
    n.cmd(REPLIER, SyncCommand::EndSync);
    step(&mut n, REPLIER, Message::SyncEnd { ctx });
    step(&mut n, REQUESTER, Message::SyncOk { ctx });
    // Now idle: the replier's request leaves at once (its first id: each requester
    // numbers its own contexts).
    step(
        &mut n,
        REPLIER,
        Message::SyncReq {
            ctx: 1,
            body: Bytes::from_static(b"mine"),
        },
    );
    step(&mut n, REQUESTER, Message::SyncStart { ctx: 1 });
}

#[test]
fn a_server_may_refuse_by_policy_and_the_client_asks_again_after_a_backoff() {
    let mut n = net();
    n.cmd(REPLIER, SyncCommand::SetPolicy(Policy::Refuse));
    n.cmd(
        REQUESTER,
        SyncCommand::Request {
            body: Bytes::from_static(b"x"),
        },
    );
    step(
        &mut n,
        REQUESTER,
        Message::SyncReq {
            ctx: 1,
            body: Bytes::from_static(b"x"),
        },
    );
    step(
        &mut n,
        REPLIER,
        Message::Refused {
            ctx: 1,
            reason: RefuseReason::Policy,
        },
    );
    let ev = n.take_events(REQUESTER);
    let Some(SyncEvent::Refused {
        ctx: 1,
        reason: RefuseReason::Policy,
        retry_at: Some(at),
    }) = ev.first().cloned()
    else {
        panic!("{ev:?}");
    };
    assert!(at > n.now);
    assert_eq!(n.m[REQUESTER].poll_timeout(), Some(at));
    // Nothing is sent before the backoff...
    n.m[REQUESTER]
        .handle_input(n.now, tether::Input::Timeout)
        .unwrap();
    n.pump();
    assert!(n.wire[REQUESTER].is_empty());
    // ...and the request goes again when it expires; the server now accepts.
    n.cmd(REPLIER, SyncCommand::SetPolicy(Policy::Accept));
    n.now = at;
    n.m[REQUESTER]
        .handle_input(n.now, tether::Input::Timeout)
        .unwrap();
    n.pump();
    step(
        &mut n,
        REQUESTER,
        Message::SyncReq {
            ctx: 2,
            body: Bytes::from_static(b"x"),
        },
    );
    step(&mut n, REPLIER, Message::SyncStart { ctx: 2 });
}

#[test]
fn crossing_requests_are_both_refused_then_resolved_by_the_backoff() {
    let mut n = net();
    n.cmd(
        REQUESTER,
        SyncCommand::Request {
            body: Bytes::from_static(b"a"),
        },
    );
    n.cmd(
        REPLIER,
        SyncCommand::Request {
            body: Bytes::from_static(b"b"),
        },
    );
    // Both SYNC_REQs are on the wire at once: each side refuses the other's.
    step(
        &mut n,
        REQUESTER,
        Message::SyncReq {
            ctx: 1,
            body: Bytes::from_static(b"a"),
        },
    );
    step(
        &mut n,
        REPLIER,
        Message::SyncReq {
            ctx: 1,
            body: Bytes::from_static(b"b"),
        },
    );
    step(
        &mut n,
        REPLIER,
        Message::Refused {
            ctx: 1,
            reason: RefuseReason::Pending,
        },
    );
    step(
        &mut n,
        REQUESTER,
        Message::Refused {
            ctx: 1,
            reason: RefuseReason::Pending,
        },
    );
    // The client's backoff is shorter: its request goes first and is accepted; the
    // server's follows once that context is over.
    n.settle();
    let started: Vec<_> = n
        .log
        .iter()
        .filter(|(_, m)| matches!(m, Message::SyncStart { .. }))
        .map(|(side, _)| *side)
        .collect();
    assert_eq!(started, vec![REPLIER]);
    assert_eq!(
        n.take_events(REPLIER).last(),
        Some(&SyncEvent::SyncRequested {
            ctx: 2,
            body: Bytes::from_static(b"a")
        })
    );
    n.cmd(REPLIER, SyncCommand::EndSync);
    n.settle();
    // Then the server's own request, which the client now answers.
    assert_eq!(
        n.take_events(REQUESTER).last(),
        Some(&SyncEvent::SyncRequested {
            ctx: 2,
            body: Bytes::from_static(b"b")
        })
    );
    n.cmd(REQUESTER, SyncCommand::EndSync);
    n.settle();
    for m in &n.m {
        assert_eq!(m.core().context_state(), ContextState::Idle);
    }
}

#[test]
fn sync_messages_outside_a_context_client_ignores_server_refuses() {
    let mut n = net();
    n.cmd(REPLIER, SyncCommand::SendSync(el(9)));
    step(&mut n, REPLIER, Message::Sync(el(9)));
    assert!(n.take_events(REQUESTER).is_empty());
    assert_eq!(n.m[REQUESTER].core().stats().ignored_sync_messages, 1);
    assert!(n.wire[REQUESTER].is_empty());

    n.cmd(REQUESTER, SyncCommand::SendSync(el(9)));
    step(&mut n, REQUESTER, Message::Sync(el(9)));
    step(
        &mut n,
        REPLIER,
        Message::Refused {
            ctx: 0,
            reason: RefuseReason::NotInContext,
        },
    );
    assert_eq!(n.m[REPLIER].core().stats().refused_sync_messages, 1);
}

#[test]
fn a_stale_marker_from_a_cut_context_is_ignored() {
    let mut n = net();
    let ctx = open_context(&mut n);
    n.cut();
    n.connect();
    // The application context is asked again from scratch (context 2)...
    step(
        &mut n,
        REQUESTER,
        Message::SyncReq {
            ctx: 2,
            body: Bytes::from_static(b"world"),
        },
    );
    step(&mut n, REPLIER, Message::SyncStart { ctx: 2 });
    // ...and a late SYNC_END of context 1 is not taken for it.
    n.cmd(REPLIER, SyncCommand::Send(Message::SyncEnd { ctx }));
    step(&mut n, REPLIER, Message::SyncEnd { ctx });
    assert_eq!(
        n.m[REQUESTER].core().context_state(),
        ContextState::Receiving
    );
    assert_eq!(n.m[REQUESTER].core().stats().stale, 1);
}
