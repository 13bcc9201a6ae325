//! An attacker on `feed`: an on-path observer who reads every datagram (and replays or
//! rewrites them), and an off-path spoofer who sends datagrams with the victim's address
//! and any header it likes. Neither may take a session over, rebind its `feed`, silence a
//! sender or end a session (docs/PROTOCOL.md 4.11).
//!
//! Every forgery is made by hand from the wire codec: the header is the magic, a sequence
//! number and a sender, padded with zeros to the header's length (the attacker does not
//! know the key of the tag), then a message.
#![cfg(feature = "testkit")]

use bytes::{BufMut, Bytes, BytesMut};
use tether::connect::dual::{
    DualClient, DualClientCommand, DualClientConfig, DualClientEvent, DualClientNotice,
    DualClientState, DualServer, DualServerCommand, DualServerConfig, DualServerEvent,
    DualServerNotice, FeedLossPolicy,
};
use tether::testkit::{CountingTokens, Packet, Pair, Side};
use tether::wire::{
    Element, FailReason, FrameDecoder, Message, FEED_HEADER_LEN, FEED_MAGIC, PROTOCOL_VERSION,
    SERVER_SENDER,
};
use tether::{Channel, Duration, Event, Input, Link};

type Net = Pair<DualClient, DualServer<CountingTokens>>;

const MAIN: Link = Link::main(1);
const FEED: Link = Link::feed(2);

/// A client and a server, every packet held on the wire so that the test sees it.
fn pair(policy: FeedLossPolicy) -> Net {
    let cfg = DualClientConfig {
        on_feed_lost: policy,
        ..DualClientConfig::default()
    };
    Pair::new(
        DualClient::new(cfg),
        DualServer::new(DualServerConfig::default(), CountingTokens::new()),
    )
    .held()
    .granting_opens()
}

/// Delivers everything on the wire, in order, until it is quiet; returns what crossed.
fn drive_recording(net: &mut Net) -> Vec<Packet> {
    let mut seen = Vec::new();
    loop {
        net.pump();
        let Some(p) = net.wire.pop_front() else {
            return seen;
        };
        seen.push(p.clone());
        net.deliver(p);
    }
}

/// The handshake, recorded; the client ends connected (`main` link 1, `feed` link 2).
fn connected(policy: FeedLossPolicy) -> (Net, Vec<Packet>) {
    let mut net = pair(policy);
    net.client_in(Input::Command(DualClientCommand::Connect));
    let seen = drive_recording(&mut net);
    assert_eq!(net.client.state(), DualClientState::Connected);
    assert_eq!(net.client.links(), (Some(MAIN), Some(FEED)));
    (net, seen)
}

/// The message a `feed` datagram carries (whatever its header holds).
fn content(datagram: &Bytes) -> Option<Message> {
    Message::decode(datagram.slice(FEED_HEADER_LEN.min(datagram.len())..)).ok()
}

/// Every `feed` datagram of `seen`, with who received it.
fn feed_datagrams(seen: &[Packet]) -> Vec<(Side, Bytes)> {
    seen.iter()
        .filter(|p| p.link().channel == Channel::Feed)
        .filter_map(|p| p.bytes().map(|b| (p.to(), b.clone())))
        .collect()
}

/// A datagram as an attacker writes it: header fields of its choice, the rest of the
/// header zeros, then `msg`.
fn forge(seq: u64, sender: u16, msg: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u64(FEED_MAGIC);
    b.put_u64(seq);
    b.put_u16(sender);
    b.resize(FEED_HEADER_LEN, 0);
    b.put_slice(msg);
    b.freeze()
}

/// The messages in the frames of a `main` byte stream.
fn frames(bytes: &[Bytes]) -> Vec<Message> {
    let mut d = FrameDecoder::new(1 << 20);
    let mut out = Vec::new();
    for b in bytes {
        d.push_bytes(b.clone());
        while let Ok(Some(f)) = d.next_frame() {
            if let Ok(m) = Message::decode(f) {
                out.push(m);
            }
        }
    }
    out
}

/// What the server sent on `link` (taken off the wire).
fn sent_on(net: &mut Net, link: Link) -> Vec<Bytes> {
    let mut out = Vec::new();
    net.wire.retain(|p| {
        if p.link() == link {
            out.extend(p.bytes().cloned());
            false
        } else {
            true
        }
    });
    out
}

fn framed(msg: &Message) -> Bytes {
    let mut b = BytesMut::new();
    msg.encode_framed(&mut b);
    b.freeze()
}

fn update(data: &'static [u8]) -> Message {
    Message::Update(Element {
        kind: 1,
        sid: 7,
        data: Bytes::from_static(data),
    })
}

/// An observer of `feed` saw token A (feed init) and token B (its reply) go by in clear.
/// It used to open its own `main` and send `CONNECTION` with token B: the server took the
/// player's live `main` over and answered `CONN_OK`, so the attacker spoke as the player.
/// Now nothing that crosses `feed` proves a player on `main`: every try is refused.
#[test]
fn an_observer_of_feed_cannot_resume_the_session_with_what_it_saw() {
    let (mut net, seen) = connected(FeedLossPolicy::CloseBoth);
    let player = net.client.player().unwrap();
    // Every token-shaped field and every 16-byte window of every datagram on `feed`.
    let mut candidates = Vec::new();
    for (_, d) in feed_datagrams(&seen) {
        match content(&d) {
            Some(Message::FeedInit { token_a, .. }) => candidates.push(token_a),
            Some(Message::FeedInitRep { token_b, .. }) => candidates.push(token_b),
            _ => {}
        }
        for w in d.windows(16) {
            candidates.push(tether::Token::new(w).unwrap());
        }
    }
    assert!(candidates.len() > 2);
    for (i, token) in candidates.into_iter().enumerate() {
        let link = Link::main(1_000 + i as u64);
        net.server_in(Input::Opened(link));
        let ask = Message::Connection {
            version: PROTOCOL_VERSION,
            player,
            token,
        };
        net.server_in(Input::Received(link, framed(&ask)));
        let answer = frames(&sent_on(&mut net, link));
        assert!(
            !answer.contains(&Message::ConnOk),
            "a token seen on feed resumed the session: {answer:?}"
        );
    }
    assert_eq!(net.server.takeovers(), 0);
    assert_eq!(
        net.server.player_links(player),
        Some((Some(MAIN), Some(FEED)))
    );
    // The player's own session is untouched.
    net.client_in(Input::Command(DualClientCommand::Send(Message::App(
        Bytes::from_static(b"still me"),
    ))));
    drive_recording(&mut net);
    assert!(net.take_server_events().iter().any(|e| matches!(
        e,
        Event::Message { message: Message::App(b), .. } if &b[..] == b"still me"
    )));
}

/// The observer replays the victim's feed init from its own address, with its `SEQ`
/// rewritten to something larger (or unchanged). It used to rebind the victim's `feed` to
/// the attacker and send it token B. Now the rewritten one fails its tag and the unchanged
/// one is a replay: the victim's `feed` stays where it is and the attacker gets no reply
/// carrying token B.
#[test]
fn a_replayed_feed_init_does_not_rebind_feed_or_reveal_token_b() {
    let (mut net, seen) = connected(FeedLossPolicy::CloseBoth);
    let player = net.client.player().unwrap();
    let init = feed_datagrams(&seen)
        .into_iter()
        .find(|(to, d)| *to == Side::Server && matches!(content(d), Some(Message::FeedInit { .. })))
        .map(|(_, d)| d)
        .expect("the client's feed init");
    let seq = u64::from_be_bytes(init[8..16].try_into().unwrap());
    for (i, new_seq) in [seq, seq + 1, seq + 1_000, u64::MAX]
        .into_iter()
        .enumerate()
    {
        let mut replay = BytesMut::from(&init[..]);
        replay[8..16].copy_from_slice(&new_seq.to_be_bytes());
        let attacker = Link::feed(500 + i as u64);
        net.server_in(Input::Received(attacker, replay.freeze()));
        for d in sent_on(&mut net, attacker) {
            assert!(
                !matches!(content(&d), Some(Message::FeedInitRep { .. })),
                "token B sent to the attacker (SEQ {new_seq})"
            );
        }
        assert_eq!(
            net.server.player_links(player),
            Some((Some(MAIN), Some(FEED))),
            "feed rebound by a replay (SEQ {new_seq})"
        );
    }
    // The victim's `feed` still works both ways.
    net.client_in(Input::Command(DualClientCommand::SendFeed(update(b"up"))));
    net.server_in(Input::Command(DualServerCommand::SendFeed {
        player,
        message: update(b"down"),
    }));
    drive_recording(&mut net);
    assert!(net
        .take_server_events()
        .iter()
        .any(|e| matches!(e, DualServerEvent::Notice(DualServerNotice::Update { .. }))));
    assert!(net
        .take_client_events()
        .iter()
        .any(|e| matches!(e, DualClientEvent::Notice(DualClientNotice::Update(_)))));
}

/// One spoofed datagram with `SEQ = u64::MAX` (sender and address the victim's) used to
/// move the receiver's window to the end: every later datagram of the real sender was
/// dropped as stale, on both sides and under both feed-loss policies, and the session died
/// of `feed` silence. Now the forgery fails its tag and the window does not move.
#[test]
fn a_spoofed_huge_seq_does_not_silence_a_sender() {
    for policy in [FeedLossPolicy::CloseBoth, FeedLossPolicy::Reinit] {
        let (mut net, _) = connected(policy);
        let player = net.client.player().unwrap();
        // To the server, as the player; to the client, as the server.
        for seq in [u64::MAX, u64::MAX - 1, 1 << 40] {
            net.server_in(Input::Received(FEED, forge(seq, player, &[0])));
            net.client_in(Input::Received(FEED, forge(seq, SERVER_SENDER, &[0])));
        }
        drive_recording(&mut net);
        net.client_in(Input::Command(DualClientCommand::SendFeed(update(b"up"))));
        net.server_in(Input::Command(DualServerCommand::SendFeed {
            player,
            message: update(b"down"),
        }));
        drive_recording(&mut net);
        assert!(
            net.take_server_events()
                .iter()
                .any(|e| matches!(e, DualServerEvent::Notice(DualServerNotice::Update { .. }))),
            "{policy:?}: the player was silenced"
        );
        assert!(
            net.take_client_events()
                .iter()
                .any(|e| matches!(e, DualClientEvent::Notice(DualClientNotice::Update(_)))),
            "{policy:?}: the server was silenced"
        );
        // Keep-alives keep flowing: 20 s later nothing was lost or re-initialised.
        net.run_for(Duration::from_secs(20));
        assert_eq!(net.client.state(), DualClientState::Connected, "{policy:?}");
        let events = net.take_client_events();
        assert!(
            !events.iter().any(|e| matches!(
                e,
                Event::Ended { .. } | Event::Notice(DualClientNotice::FeedLost)
            )),
            "{policy:?}: {events:?}"
        );
        assert_eq!(
            net.server.player_links(player),
            Some((Some(MAIN), Some(FEED)))
        );
    }
}

/// While the client re-initialises `feed`, a spoofer sends it a `CONN_FAILED` datagram
/// (in either layout, any attempt number). It used to end the session. Now a refusal on
/// `feed` counts only with the tag and the attempt of the client's own request: the
/// re-initialisation goes on and `feed` is restored.
#[test]
fn a_forged_refusal_does_not_end_a_feed_reinit() {
    let (mut net, _) = connected(FeedLossPolicy::Reinit);
    // `feed` lost: the client opens a new one and sends its feed init (held on the wire).
    net.cut(FEED);
    assert_eq!(net.client.state(), DualClientState::AwaitFeedReinitRep);
    let (_, new_feed) = net.client.links();
    let new_feed = new_feed.expect("a new feed");
    let reason = FailReason::WrongToken as u8;
    let mut forgeries = vec![forge(u64::MAX, SERVER_SENDER, &[11, reason])];
    for attempt in 0..8u32 {
        let mut m = vec![11, reason];
        m.extend_from_slice(&attempt.to_be_bytes());
        forgeries.push(forge(1 << 30, SERVER_SENDER, &m));
    }
    for f in forgeries {
        net.client_in(Input::Received(new_feed, f));
        assert_eq!(net.client.state(), DualClientState::AwaitFeedReinitRep);
    }
    drive_recording(&mut net);
    assert_eq!(net.client.state(), DualClientState::Connected);
    let events = net.take_client_events();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Notice(DualClientNotice::FeedRestored))));
    assert!(
        !events.iter().any(|e| matches!(e, Event::Ended { .. })),
        "{events:?}"
    );
}
