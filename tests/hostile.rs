//! What a hostile peer can hold on a server: bounds that attackers test first.

use bytes::Bytes;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use tether::connect::dual::{DualServer, DualServerConfig};
use tether::connect::merge::{MergeServer, MergeServerConfig};
use tether::prelude::*;
use tether::wire::Message;

/// Counts the bytes each thread holds allocated (tests run on threads of their own).
struct Held;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: every call forwards to the system allocator unchanged; the counter is a plain
// thread-local cell that never allocates.
unsafe impl GlobalAlloc for Held {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = HELD.try_with(|h| h.set(h.get() + layout.size() as isize));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = HELD.try_with(|h| h.set(h.get() - layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let _ = HELD.try_with(|h| h.set(h.get() + new as isize - layout.size() as isize));
        System.realloc(ptr, layout, new)
    }
}

#[global_allocator]
static ALLOC: Held = Held;

fn held() -> isize {
    HELD.with(|h| h.get())
}

/// Drains `m`'s output; returns the links it closed.
fn closed<M: Machine>(m: &mut M) -> Vec<Link> {
    let mut out = Vec::new();
    loop {
        match m.poll_output() {
            Output::Close(l) => out.push(l),
            Output::Wait(_) => return out,
            _ => {}
        }
    }
}

fn tokens() -> impl FnMut() -> Token {
    let mut n = 0u64;
    move || {
        n += 1;
        let mut b = [0x5a; 16];
        b[8..].copy_from_slice(&n.to_be_bytes());
        Token::new(&b).unwrap()
    }
}

/// Silent `main` transports (opened, never a `CONN_INIT`) used to hold a dual server's
/// `max_links` forever and lock every legitimate client out with SERVER_FULL. Each is now
/// refused at the handshake timeout, and the server takes new clients again.
#[test]
fn silent_dual_transports_expire_and_free_the_server() {
    let cfg = DualServerConfig {
        max_links: 8,
        ..DualServerConfig::default()
    };
    let mut s = DualServer::new(cfg, tokens());
    let t0 = Instant::ZERO;
    for id in 0..8 {
        s.handle_input(t0, Input::Opened(Link::main(id))).unwrap();
    }
    assert!(closed(&mut s).is_empty());
    // Full: a ninth is refused at once.
    s.handle_input(t0, Input::Opened(Link::main(100))).unwrap();
    assert_eq!(closed(&mut s), [Link::main(100)]);
    // At the handshake timeout every silent transport is refused and closed.
    let t = t0 + cfg.handshake_timeout;
    assert_eq!(s.poll_timeout(), Some(t));
    s.handle_input(t, Input::Timeout).unwrap();
    assert_eq!(closed(&mut s).len(), 8);
    assert_eq!(s.link_count(), 0);
    // And a real client is served again.
    s.handle_input(t, Input::Opened(Link::main(200))).unwrap();
    let mut init = bytes::BytesMut::new();
    Message::ConnInit {
        version: tether::wire::PROTOCOL_VERSION,
    }
    .encode_framed(&mut init);
    s.handle_input(t, Input::Received(Link::main(200), init.freeze()))
        .unwrap();
    assert!(closed(&mut s).is_empty());
    assert_eq!(s.player_count(), 1);
}

/// A bare length prefix announcing the largest frame used to reserve the whole frame: 1,024
/// pending token-merge handshakes, each sending 4 bytes, held a GiB. The decoder now holds
/// what arrives (and a few KiB), and every pending handshake still expires.
#[test]
fn a_length_prefix_alone_does_not_reserve_the_frame() {
    let cfg = MergeServerConfig {
        max_pending: 64,
        ..MergeServerConfig::default()
    };
    let max = cfg.max_message;
    let mut s = MergeServer::new(cfg, tokens());
    let t0 = Instant::ZERO;
    for id in 0..64 {
        s.handle_input(t0, Input::Opened(Link::main(id))).unwrap();
    }
    let _ = closed(&mut s);
    let before = held();
    for id in 0..64 {
        let prefix = Bytes::copy_from_slice(&(max as u32).to_be_bytes());
        s.handle_input(t0, Input::Received(Link::main(id), prefix))
            .unwrap();
    }
    let per_link = (held() - before) / 64;
    // Announced: 64 x 1 MiB, more than a handshake message can be: refused at the prefix
    // (CONN_FAILED, closed), and nothing of it is kept.
    assert!(per_link <= 256, "{per_link} bytes held per 4-byte prefix");
    assert_eq!(closed(&mut s).len(), 64);
    assert_eq!(s.pending_count(), 0);

    // A prefix a handshake message may have (1 KiB) waits for its frame, holding what
    // arrived and the decoder's least reservation, until the handshake deadline.
    for id in 100..164 {
        s.handle_input(t0, Input::Opened(Link::main(id))).unwrap();
    }
    let _ = closed(&mut s);
    let before = held();
    for id in 100..164 {
        let prefix =
            Bytes::copy_from_slice(&(tether::wire::HANDSHAKE_MAX_FRAME as u32).to_be_bytes());
        s.handle_input(t0, Input::Received(Link::main(id), prefix))
            .unwrap();
    }
    let per_link = (held() - before) / 64;
    assert!(
        per_link <= 2 * tether::wire::MIN_RESERVE as isize,
        "{per_link} bytes held per 4-byte prefix"
    );
    assert_eq!(s.pending_count(), 64);
    let t = t0 + cfg.handshake_timeout;
    s.handle_input(t, Input::Timeout).unwrap();
    assert_eq!(closed(&mut s).len(), 64);
    assert_eq!(s.pending_count(), 0);
}

/// A dual server's links that have not completed a handshake used to accept frames up to
/// `max_frame` (1 MiB): 128 of them, each sending half of a large frame, held 64 MiB. They
/// now carry handshake-sized frames only (`wire::HANDSHAKE_MAX_FRAME`); a larger one is
/// refused at its length prefix, and nothing of it is kept.
#[test]
fn unadmitted_dual_links_cannot_hold_large_frames() {
    let cfg = DualServerConfig {
        max_links: 128,
        ..DualServerConfig::default()
    };
    let mut s = DualServer::new(cfg, tokens());
    let t0 = Instant::ZERO;
    for id in 0..128 {
        s.handle_input(t0, Input::Opened(Link::main(id))).unwrap();
    }
    let _ = closed(&mut s);
    let before = held();
    let mut half = bytes::BytesMut::new();
    half.extend_from_slice(&(cfg.max_frame as u32).to_be_bytes());
    half.resize(4 + 64 * 1024, 0x55);
    let half = half.freeze();
    for id in 0..128 {
        // A copy each, as each would arrive from its own socket.
        let input = Bytes::copy_from_slice(&half);
        let _ = s.handle_input(t0, Input::Received(Link::main(id), input));
    }
    let refused = closed(&mut s).len();
    let per_link = (held() - before) / 128;
    assert_eq!(refused, 128, "each oversized handshake frame is refused");
    assert!(
        per_link <= tether::wire::HANDSHAKE_MAX_FRAME as isize,
        "{per_link} bytes held per link after 64 KiB of a large frame"
    );
    assert_eq!(s.link_count(), 0);
}

/// A received entry is a slice of the frame it came in: kept as it is, a one-byte entry
/// beside a large one the journal skips would keep the whole frame alive (40 such entries
/// held 40 MiB). The journal keeps a compact copy of what it appends.
#[test]
fn a_small_received_entry_does_not_pin_its_large_frame() {
    use tether::sync::journal::{JournalMachine, JournalStore, MemJournal, Role, SyncConfig};
    use tether::wire::{Entry, JournalList, JournalMessage, LineId};
    let big = Entry::new(b"srv", b"big", &vec![7u8; 900 * 1024]);
    let mut journal = MemJournal::new(3, 100);
    journal.append(big.clone()).unwrap(); // the large one is a duplicate here
    let config = SyncConfig {
        idle_timeout: None,
        ..SyncConfig::default()
    };
    let mut m = JournalMachine::new(Role::Client, config, journal);
    m.handle_input(Instant::ZERO, Input::Opened(Link::main(1)))
        .unwrap();
    let _ = closed(&mut m);
    drop(big);
    let before = held();
    {
        let list = Message::Journal(JournalMessage::List(JournalList {
            ctx: 0,
            since: LineId::start(9),
            head: 2,
            entries: vec![
                Entry::new(b"srv", b"tiny", b"x"),
                Entry::new(b"srv", b"big", &vec![7u8; 900 * 1024]),
            ],
            held: vec![],
        }));
        let mut frame = bytes::BytesMut::new();
        list.encode_framed(&mut frame);
        m.handle_input(
            Instant::ZERO,
            Input::Received(Link::main(1), frame.freeze()),
        )
        .unwrap();
        let _ = closed(&mut m);
    }
    // The link goes: its read buffer (bounded by the frame limit, whatever it carried) is
    // released; what stays is what the journal keeps.
    m.handle_input(Instant::ZERO, Input::Closed(Link::main(1)))
        .unwrap();
    let _ = closed(&mut m);
    let kept = held() - before;
    assert!(m.store().contains(b"srv", b"tiny"));
    assert!(kept < 64 * 1024, "{kept} bytes kept for a one-byte entry");
}

/// One row of the budget table: what `links` attacker transports, sending `input` bytes
/// in all, made the server hold (live heap after, less before, the transports' own
/// opening included) and send.
struct Row {
    path: &'static str,
    input: usize,
    links: usize,
    held: isize,
    sent: usize,
}

/// Drains `m`, counting the bytes it transmits and feeding its closes back as closed.
fn drain_sent<M: Machine>(m: &mut M, now: Instant) -> usize {
    let mut sent = 0;
    let mut closes = Vec::new();
    loop {
        match m.poll_output() {
            Output::Transmit(t) => sent += t.payload.len(),
            Output::Close(l) => closes.push(l),
            Output::Wait(_) => break,
            _ => {}
        }
    }
    for l in closes {
        let _ = m.handle_input(now, Input::Closed(l));
    }
    sent
}

/// `n` transports opened on `server`, each sending `bytes` on `main`: what the server
/// holds afterwards (it is still alive) and what it sent.
fn flood_main<M: Machine>(path: &'static str, mut server: M, n: usize, bytes: &Bytes) -> Row {
    let t0 = Instant::ZERO;
    let before = held();
    let mut sent = 0;
    for id in 0..n as u64 {
        let _ = server.handle_input(t0, Input::Opened(Link::main(id)));
        let _ = server.handle_input(
            t0,
            Input::Received(Link::main(id), Bytes::copy_from_slice(bytes)),
        );
        sent += drain_sent(&mut server, t0);
    }
    Row {
        path,
        input: n * bytes.len(),
        links: n,
        held: held() - before,
        sent,
    }
}

/// Every unauthenticated input path of the two servers, flooded: bytes held per attacker
/// byte and reply bytes per request byte, printed as a table
/// (`cargo test --test hostile budget -- --nocapture`) and bounded. Before a peer is
/// admitted a server's replies to these floods are never larger than the requests
/// (netcode's rule; on `main` a pending link's replies exceed its input by at most one
/// greeting, 42 bytes, bounded per link, and TCP's handshake has proved its address), and what
/// it holds is a per-transport constant (its entry in the endpoint and its frame decoder's
/// least reservation), capped by `max_pending` / `max_links`, never the announced frame.
#[test]
fn budget_of_every_unauthenticated_input_path() {
    let t0 = Instant::ZERO;
    let mut rows = Vec::new();
    let n = 256usize;
    let partial = {
        // A length prefix announcing 1 MiB and 60 bytes of it.
        let mut b = bytes::BytesMut::new();
        b.extend_from_slice(&(1u32 << 20).to_be_bytes());
        b.resize(64, 0x41);
        b.freeze()
    };
    let garbage = {
        // A whole frame of 60 bytes that is no handshake message.
        let mut b = bytes::BytesMut::new();
        b.extend_from_slice(&60u32.to_be_bytes());
        b.resize(64, 0xee);
        b.freeze()
    };

    for (path, bytes) in [
        ("token-merge main, partial frame", &partial),
        ("token-merge main, garbage frame", &garbage),
    ] {
        let cfg = MergeServerConfig {
            max_pending: n,
            ..MergeServerConfig::default()
        };
        rows.push(flood_main(path, MergeServer::new(cfg, tokens()), n, bytes));
    }
    for (path, bytes) in [
        ("dual-channel main, partial frame", &partial),
        ("dual-channel main, garbage frame", &garbage),
    ] {
        let cfg = DualServerConfig {
            max_links: n,
            ..DualServerConfig::default()
        };
        rows.push(flood_main(path, DualServer::new(cfg, tokens()), n, bytes));
    }

    // Spoofed feed datagrams from addresses no player has (each its own link id): a
    // FEED_INIT with made-up tokens, and datagrams of a bound player with a forged tag.
    {
        let mut s = DualServer::new(DualServerConfig::default(), tokens());
        let before = held();
        let mut sent = 0;
        let mut input = 0;
        for id in 0..(4 * n) as u64 {
            let mut d = vec![0u8; 64];
            d[0] = (id % 256) as u8;
            input += d.len();
            let _ = s.handle_input(t0, Input::Received(Link::feed(1_000 + id), Bytes::from(d)));
            sent += drain_sent(&mut s, t0);
        }
        rows.push(Row {
            path: "dual-channel feed, spoofed datagrams",
            input,
            links: 4 * n,
            held: held() - before,
            sent,
        });
    }

    eprintln!("| input path | attacker bytes | transports | held | held per byte | held per transport | replies per request byte |");
    eprintln!("|---|---|---|---|---|---|---|");
    for r in &rows {
        eprintln!(
            "| {} | {} | {} | {} | {:.2} | {} | {:.3} |",
            r.path,
            r.input,
            r.links,
            r.held,
            r.held as f64 / r.input as f64,
            r.held / r.links as isize,
            r.sent as f64 / r.input as f64
        );
    }
    for r in &rows {
        assert!(
            r.sent <= r.input,
            "{}: {} bytes sent for {} received before admission",
            r.path,
            r.sent,
            r.input
        );
        assert!(
            r.held / (r.links as isize) <= 2 * tether::wire::MIN_RESERVE as isize + 1024,
            "{}: {} bytes held per transport",
            r.path,
            r.held / r.links as isize
        );
    }
}

/// What an authenticated client can make a server `Peer` hold and send, measured through
/// the whole stack (token-merge session, delivery, journal sync) as one read: the two
/// floods that once made a server queue hundreds of MiB for 16 KiB (420 journal requests,
/// each with a SYNC_OK for a list never sent; 963 resource requests). The client then
/// stops reading and acknowledging. Printed beside the unauthenticated table (`cargo test
/// --all-features --test hostile budget -- --nocapture`) and bounded: what the server
/// sends is one context's answer at most (`max_bytes_per_context`) within its replay
/// buffer, plus replies no larger than requests; what it holds is that buffer, the one
/// message a held-back sync keeps, and a constant: a cost per session, not per byte.
#[cfg(feature = "testkit")]
#[test]
fn budget_of_an_authenticated_flood_through_a_peer() {
    use tether::connect::merge::{MergeClient, MergeClientCommand};
    use tether::peer::{Peer, PeerCommand};
    use tether::sync::journal::{MemJournal, SyncConfig};
    use tether::testkit::{Pair, Side};
    use tether::wire::{Entry, JournalMessage, JournalRequest, LineId};

    type Flood = fn(u32) -> Message;
    let floods: [(&str, u32, Flood); 2] = [
        ("journal requests, each with a SYNC_OK", 420, |i| {
            let body = JournalRequest {
                since: LineId::start(0),
                limit: None,
                everything: false,
            }
            .to_body();
            Message::SyncReq { ctx: 100 + i, body }
        }),
        ("resource requests", 963, |i| {
            Message::Journal(JournalMessage::ResourceReq {
                req: i + 1,
                author: Bytes::from_static(b"srv"),
                resource: Bytes::copy_from_slice(&(i % 1_024).to_be_bytes()),
            })
        }),
    ];
    eprintln!("| authenticated input path | attacker bytes | held | held per byte | sent | sent per byte |");
    eprintln!("|---|---|---|---|---|---|");
    for (path, n, make) in floods {
        let t0 = Instant::ZERO;
        let conn = MergeClient::new(t0, Default::default(), Token::new(&[3; 16]).unwrap()).unwrap();
        let client = Peer::new(conn, SyncConfig::default(), MemJournal::new(1, 100_000));
        let mut server = Peer::new(
            MergeServer::new(MergeServerConfig::default(), tokens()),
            SyncConfig::default(),
            MemJournal::new(2, 100_000),
        );
        // The server's journal: 1,024 entries of 4 KiB (4 MiB).
        for i in 0..1_024u32 {
            let e = Entry::new(b"srv", &i.to_be_bytes(), &[0x42; 4096]);
            server
                .handle_input(t0, Input::Command(PeerCommand::Append(e)))
                .unwrap();
        }
        let mut net = Pair::new(client, server)
            .at(t0)
            .granting_opens()
            .without_events();
        net.pump();
        net.drive(); // connected; the client's catch-up is done
        assert!(net.client.connection().view().link.is_some(), "connected");

        // The flood: the client's connection sends the messages (framed and sequenced
        // as any of its messages), the wire holds them, and they arrive as one read.
        let mut net = net.held();
        for i in 0..n {
            for m in [make(i), Message::SyncOk { ctx: 100 + i }] {
                if matches!(m, Message::SyncOk { .. }) && path.starts_with("resource") {
                    continue;
                }
                let send = MergeClientCommand::Send(m);
                net.client_in(Input::Command(PeerCommand::Connection(send)));
            }
        }
        let mut read = bytes::BytesMut::new();
        let mut link = None;
        while let Some(p) = net.pop_to(Side::Server) {
            link = Some(p.link());
            read.extend_from_slice(p.bytes().expect("data"));
        }
        let (link, input) = (link.expect("the flood is on the wire"), read.len());
        net.freeze(Side::Client); // reads nothing more, acknowledges nothing
        let sent_before = net.counts(Side::Server).bytes;
        let before = held();
        net.server_in(Input::Received(link, read.freeze()));
        for _ in 0..64 {
            net.now += Duration::from_millis(100);
            net.fire(Side::Server);
        }
        let sent = (net.counts(Side::Server).bytes - sent_before) as usize;
        // What the server holds: the simulated wire's packets are the network's (counted
        // as sent), so they go first; bytes the server shares with them stay counted.
        net.wire.clear();
        let held = held() - before;
        eprintln!(
            "| token-merge session, {path} | {input} | {held} | {:.2} | {sent} | {:.2} |",
            held as f64 / input as f64,
            sent as f64 / input as f64
        );
        let cap = SyncConfig::default().max_bytes_per_context;
        let replay = tether::session::SessionConfig::default().delivery.max_bytes;
        assert!(
            sent <= cap.min(replay) + 64 * 1024 + 2 * input,
            "{path}: {sent} bytes sent for {input}"
        );
        // Held: the replay buffer (what was sent, kept until acknowledged), the one message
        // a held-back sync keeps (at most a frame), and a constant: per session, whatever
        // the flood's size.
        let frame = tether::wire::DEFAULT_MAX_FRAME;
        assert!(
            held <= (replay + frame + 64 * 1024 + 2 * input) as isize,
            "{path}: {held} bytes held for {input}"
        );
    }
}
