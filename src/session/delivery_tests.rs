//! Unit and property tests of numbered delivery.

use super::*;
use bytes::BytesMut;
use proptest::prelude::*;

fn frame(n: u32) -> Bytes {
    let mut b = BytesMut::new();
    Message::App(Bytes::copy_from_slice(&n.to_be_bytes())).encode_framed(&mut b);
    b.freeze()
}

fn number(f: &Bytes) -> u32 {
    match Message::decode(f.slice(4..)) {
        Ok(Message::App(b)) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        other => panic!("not a test frame: {other:?}"),
    }
}

#[test]
fn refuses_past_its_bounds_and_takes_one_large_frame_when_empty() {
    let cfg = DeliveryConfig {
        max_messages: 2,
        max_bytes: 20,
        ..DeliveryConfig::default()
    };
    let mut d = Delivery::new(cfg);
    d.push(Bytes::from(alloc::vec![0u8; 100])).unwrap();
    assert!(d.push(frame(1)).is_err(), "over the bytes");
    d.on_ack(0).unwrap();
    assert!(d.next_to_write().is_some());
    d.on_ack(1).unwrap();
    d.push(frame(1)).unwrap();
    d.push(frame(2)).unwrap();
    assert_eq!(
        d.push(frame(3)),
        Err(Full {
            max_messages: 2,
            max_bytes: 20
        })
    );
}

#[test]
fn an_ack_of_unsent_or_earlier_frames_is_refused() {
    let mut d = Delivery::new(DeliveryConfig::default());
    d.push(frame(1)).unwrap();
    assert!(
        matches!(d.on_ack(1), Err(AckError::Unsent { .. })),
        "not written yet"
    );
    d.next_to_write();
    d.on_ack(1).unwrap();
    assert!(matches!(d.on_ack(0), Err(AckError::Backwards { .. })));
}

#[derive(Debug, Clone)]
enum Step {
    Send,
    /// Move up to n frames across (the rest stay in flight).
    Carry(u8),
    /// Cut the link: frames in flight are lost; the session resumes.
    Cut,
    Ack,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Send),
        3 => (0u8..6).prop_map(Step::Carry),
        1 => Just(Step::Cut),
        1 => Just(Step::Ack),
    ]
}

proptest! {
    /// Whatever the cuts, the receiver gets 1, 2, 3, ... exactly once each, and the
    /// sender's buffer empties once everything is carried and acknowledged.
    #[test]
    fn exactly_once_in_order_across_cuts(steps in proptest::collection::vec(step(), 0..200)) {
        let cfg = DeliveryConfig { ack_every: 3, ..DeliveryConfig::default() };
        let (mut tx, mut rx) = (Delivery::new(cfg), Delivery::new(cfg));
        let mut wire: VecDeque<Bytes> = VecDeque::new();
        let mut acks: VecDeque<u64> = VecDeque::new();
        let (mut sent, mut got) = (0u32, Vec::new());
        let deliver = |wire: &mut VecDeque<Bytes>, rx: &mut Delivery, got: &mut Vec<u32>, acks: &mut VecDeque<u64>, n: usize| {
            for _ in 0..n {
                let Some(f) = wire.pop_front() else { break };
                got.push(number(&f));
                if rx.on_received(f.len() - 4) {
                    acks.push_back(rx.take_ack());
                }
            }
        };
        for s in steps {
            match s {
                Step::Send => {
                    sent += 1;
                    if tx.push(frame(sent)).is_err() { sent -= 1; }
                }
                Step::Carry(n) => deliver(&mut wire, &mut rx, &mut got, &mut acks, n.into()),
                Step::Ack => acks.push_back(rx.take_ack()),
                Step::Cut => {
                    wire.clear();
                    acks.clear();
                    tx.link_resumed();
                    rx.link_resumed();
                    // Each side's first frame on the new link is its ACK.
                    tx.on_ack(rx.take_ack()).unwrap();
                    rx.on_ack(0).unwrap();
                }
            }
            while let Some(a) = acks.pop_front() {
                tx.on_ack(a).unwrap();
            }
            while let Some(f) = tx.next_to_write() {
                wire.push_back(f);
            }
        }
        deliver(&mut wire, &mut rx, &mut got, &mut acks, usize::MAX);
        tx.on_ack(rx.take_ack()).unwrap();
        let want: Vec<u32> = (1..=sent).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(tx.held(), 0);
        prop_assert_eq!(tx.held_bytes(), 0);
    }
}

#[test]
fn superseded_sync_frames_are_dropped_unsent_and_the_numbering_stays_true() {
    let sync = |ctx: u32| {
        let mut b = BytesMut::new();
        Message::SyncStart { ctx }.encode_framed(&mut b);
        b.freeze()
    };
    let mut tx = Delivery::new(DeliveryConfig::default());
    tx.push(frame(1)).unwrap();
    tx.push(sync(1)).unwrap();
    tx.push(frame(2)).unwrap();
    tx.push(sync(2)).unwrap();
    for _ in 0..4 {
        tx.next_to_write();
    }
    // The link drops; the peer had received the first two. The sync layer starts
    // over and queues a new request.
    tx.link_lost();
    tx.supersede_sync();
    tx.push(sync(3)).unwrap();
    tx.link_resumed();
    tx.on_ack(2).unwrap();
    let replay: Vec<Bytes> = core::iter::from_fn(|| tx.next_to_write()).collect();
    assert_eq!(
        replay,
        [frame(2), sync(3)],
        "sync(2) superseded, sync(3) kept"
    );
    tx.on_ack(4).unwrap();
    assert_eq!((tx.held(), tx.held_bytes()), (0, 0));
}

#[test]
fn an_idle_session_gives_its_replay_buffer_back() {
    // Small inline (every idle session has one); the frames live behind one pointer.
    assert!(core::mem::size_of::<Delivery>() <= 96);
    let mut d = Delivery::new(DeliveryConfig::default());
    assert!(d.held.is_none(), "nothing allocated before the first frame");
    assert_eq!(d.push_write(frame(1)), Ok(Some(frame(1))));
    d.push(frame(2)).unwrap();
    d.trim();
    assert_eq!(d.held(), 2, "frames held are kept");
    assert_eq!(d.next_to_write(), Some(frame(2)));
    d.on_ack(2).unwrap();
    assert!(
        d.held.is_some(),
        "an ACK keeps the buffer for the next frames"
    );
    d.trim();
    assert!(d.held.is_none());
    assert_eq!(d.push_write(frame(3)), Ok(Some(frame(3))));
    assert_eq!((d.held(), d.held_bytes()), (1, frame(3).len()));
}

#[test]
fn restart_reports_what_was_never_acknowledged() {
    let mut d = Delivery::new(DeliveryConfig::default());
    for n in 1..=3 {
        d.push(frame(n)).unwrap();
    }
    d.next_to_write();
    d.next_to_write();
    d.on_ack(1).unwrap();
    let lost: Vec<Message> = d.restart();
    assert_eq!(
        lost,
        [2u32, 3]
            .map(|n| Message::App(Bytes::copy_from_slice(&n.to_be_bytes())))
            .to_vec()
    );
    assert_eq!((d.held(), d.acked(), d.received()), (0, 0, 0));
}
