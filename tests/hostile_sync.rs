//! A peer that floods journal sync with requests: what one input can make a replier send
//! and hold stays bounded by one context's answer and a small queue, whatever the input
//! holds.

use bytes::{BufMut, Bytes, BytesMut};
use tether::sync::journal::{JournalMachine, JournalStore, MemJournal, Role, SyncConfig};
use tether::wire::{Entry, JournalMessage, JournalRequest, LineId, Message, Status};
use tether::{Input, Instant, Link, Machine, Output};

const LINK: Link = Link::main(1);

/// A replier holding 1,024 entries of 4 KiB (4 MiB in all).
fn replier() -> JournalMachine<MemJournal> {
    let mut j = MemJournal::new(7, 10_000);
    for i in 0u32..1_024 {
        j.append(Entry::new(b"srv", &i.to_be_bytes(), &[i as u8; 4096]))
            .unwrap();
    }
    let config = SyncConfig {
        sync_on_connect: false,
        idle_timeout: None,
        ..SyncConfig::default()
    };
    let mut m = JournalMachine::new(Role::Server, config, j);
    m.handle_input(Instant::ZERO, Input::Opened(LINK)).unwrap();
    m
}

fn frame(out: &mut BytesMut, m: &Message) {
    let b = m.to_bytes();
    out.put_u32(b.len() as u32);
    out.put_slice(&b);
}

/// Everything the machine transmits now, and the messages in it.
fn drain(m: &mut JournalMachine<MemJournal>) -> (usize, Vec<Message>) {
    let (mut bytes, mut msgs) = (0, Vec::new());
    loop {
        match m.poll_output() {
            Output::Transmit(t) => {
                bytes += t.payload.len();
                msgs.push(Message::decode(t.payload.slice(4..)).unwrap());
            }
            Output::Wait(_) => return (bytes, msgs),
            _ => {}
        }
    }
}

/// One read holding 420 pairs of "SYNC_REQ for the whole journal" + "SYNC_OK": before,
/// each pair was answered with a full context (the answer was all queued inside the
/// request's handling, so the SYNC_OK right behind it closed it and the next request was
/// accepted): 420 answers for 16 KiB. Now the answer is made as the output drains, the
/// context is still being answered when the rest of the read arrives, and the other
/// requests are refused: one answer, capped by `max_bytes_per_context`.
#[test]
fn a_read_full_of_journal_requests_gets_one_bounded_answer() {
    let mut m = replier();
    let mut input = BytesMut::new();
    for ctx in 1..=420u32 {
        let body = JournalRequest {
            since: LineId::start(0),
            limit: None,
            everything: false,
        }
        .to_body();
        frame(&mut input, &Message::SyncReq { ctx, body });
        frame(&mut input, &Message::SyncOk { ctx });
    }
    let input = input.freeze();
    let _ = m.handle_input(Instant::ZERO, Input::Received(LINK, input.clone()));
    let (sent, msgs) = drain(&mut m);
    let starts = msgs
        .iter()
        .filter(|m| matches!(m, Message::SyncStart { .. }))
        .count();
    let refused = msgs
        .iter()
        .filter(|m| matches!(m, Message::Refused { .. }))
        .count();
    assert_eq!(starts, 1, "one context is answered");
    assert_eq!(refused, 419, "the others are refused while it is");
    let cap = SyncConfig::default().max_bytes_per_context;
    // One context's entries (a list may pass the cap by one list), its headers, and a
    // refusal per refused request (smaller than the request).
    let bound = cap + 64 * 1024 + 2 * input.len();
    assert!(
        sent <= bound,
        "{sent} bytes sent for {} received (bound {bound})",
        input.len()
    );
    // The context ended early at the byte cap: the requester asks again for the rest.
    let entries: usize = msgs
        .iter()
        .map(|m| match m {
            Message::Journal(JournalMessage::List(l)) => l.entries.len(),
            _ => 0,
        })
        .sum();
    assert!(
        entries < 1_024 && entries * 4096 >= cap,
        "{entries} entries"
    );
}

/// One read of 963 resource requests: before, every one was answered at once (30 MiB for
/// 16 KiB). Now at most `max_queued_answers` wait for an answer, made as the output
/// drains; the rest get a 429 no larger than the request.
#[test]
fn a_read_full_of_resource_requests_is_answered_within_the_queue_bound() {
    let mut m = replier();
    let mut input = BytesMut::new();
    for req in 0..963u32 {
        frame(
            &mut input,
            &Message::Journal(JournalMessage::ResourceReq {
                req: req + 1,
                author: Bytes::from_static(b"srv"),
                resource: Bytes::copy_from_slice(&(req % 1_024).to_be_bytes()),
            }),
        );
    }
    let input = input.freeze();
    let request_len = input.len() / 963;
    let _ = m.handle_input(Instant::ZERO, Input::Received(LINK, input.clone()));
    let (sent, msgs) = drain(&mut m);
    let answered = msgs
        .iter()
        .filter(|m| matches!(m, Message::Journal(JournalMessage::Resource { .. })))
        .count();
    let busy: Vec<usize> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Journal(JournalMessage::Status(s)) if s.status == Status::TooManyRequests => {
                Some(m.to_bytes().len() + 4)
            }
            _ => None,
        })
        .collect();
    let queued = SyncConfig::default().max_queued_answers;
    assert_eq!(answered, queued);
    assert_eq!(busy.len(), 963 - queued);
    assert!(
        busy.iter().all(|&n| n <= request_len),
        "a 429 is no larger than a request"
    );
    assert!(
        sent <= queued * (4096 + 64) + input.len(),
        "{sent} bytes sent"
    );
    // The store is untouched, and a later honest request is answered.
    assert_eq!(m.store().head(), 1_024);
}

/// Received entries are held to the limits of a local append: an entry over
/// `max_payload` is refused (not stored, reported), the rest of its list is applied, and
/// the mark moves past it so that it is not fetched again and again.
#[test]
fn a_received_entry_over_max_payload_is_refused_not_stored() {
    use tether::sync::journal::{SyncCommand, SyncEvent};
    let mut server = replier(); // 4 KiB payloads
    server
        .handle_input(
            Instant::ZERO,
            Input::Command(SyncCommand::Append(Entry::new(b"srv", b"small", b"ok"))),
        )
        .unwrap();
    let config = SyncConfig {
        max_payload: 1024,
        idle_timeout: None,
        ..SyncConfig::default()
    };
    let mut client = JournalMachine::new(Role::Client, config, MemJournal::new(8, 10_000));
    client
        .handle_input(Instant::ZERO, Input::Opened(LINK))
        .unwrap();
    // The server's broadcast of its append carries some of them too: count each once.
    let mut refused = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let mut moved = false;
        for (from, to) in [(0, 1), (1, 0)] {
            let m = if from == 0 { &mut client } else { &mut server };
            let mut out = Vec::new();
            loop {
                match m.poll_output() {
                    Output::Transmit(t) => out.push(t.payload),
                    Output::Event(SyncEvent::EntryRefused { len, resource, .. }) => {
                        assert_eq!(len, 4096);
                        refused.insert(resource);
                    }
                    Output::Wait(_) => break,
                    _ => {}
                }
            }
            let dst = if to == 0 { &mut client } else { &mut server };
            for b in out {
                moved = true;
                dst.handle_input(Instant::ZERO, Input::Received(LINK, b))
                    .unwrap();
            }
        }
        if !moved {
            break;
        }
    }
    assert_eq!(refused.len(), 1_024);
    assert_eq!(client.store().head(), 1, "only the small entry is stored");
    assert!(client.store().contains(b"srv", b"small"));
    assert!(client.core().stats().oversized >= 1_024);
    assert_eq!(client.core().marks().ours, server.store().line(1_025));
}

/// Runs a requester and a replier until neither has anything to say; the refusals the
/// requester reported, by resource id.
fn exchange<S: JournalStore>(
    client: &mut JournalMachine<S>,
    server: &mut JournalMachine<MemJournal>,
) -> std::collections::BTreeMap<Bytes, tether::sync::journal::Refusal> {
    use tether::sync::journal::SyncEvent;
    let mut refused = std::collections::BTreeMap::new();
    for _ in 0..1_000 {
        let mut to_server = Vec::new();
        loop {
            match client.poll_output() {
                Output::Transmit(t) => to_server.push(t.payload),
                Output::Event(SyncEvent::EntryRefused {
                    resource, reason, ..
                }) => {
                    refused.insert(resource, reason);
                }
                Output::Wait(_) => break,
                _ => {}
            }
        }
        let mut to_client = Vec::new();
        for b in to_server.drain(..) {
            server
                .handle_input(Instant::ZERO, Input::Received(LINK, b))
                .unwrap();
        }
        loop {
            match server.poll_output() {
                Output::Transmit(t) => to_client.push(t.payload),
                Output::Wait(_) => break,
                _ => {}
            }
        }
        if to_client.is_empty() {
            break;
        }
        for b in to_client {
            client
                .handle_input(Instant::ZERO, Input::Received(LINK, b))
                .unwrap();
        }
    }
    refused
}

/// One session may add at most `max_session_bytes` of payload to the journal: a peer
/// offering 4 MiB to a requester with a 100 KiB quota gets 25 entries of 4 KiB stored and
/// the rest refused (reported, counted), and the session completes (the mark moves past
/// what was refused, so it is not fetched again).
#[test]
fn a_session_adds_no_more_than_its_quota() {
    use tether::sync::journal::Refusal;
    let mut server = replier();
    let config = SyncConfig {
        max_payload: 8 * 1024,
        max_session_bytes: Some(100 * 1024),
        idle_timeout: None,
        ..SyncConfig::default()
    };
    let mut client = JournalMachine::new(Role::Client, config, MemJournal::new(8, 10_000));
    client
        .handle_input(Instant::ZERO, Input::Opened(LINK))
        .unwrap();
    let refused = exchange(&mut client, &mut server);
    assert_eq!(client.store().head(), 25, "100 KiB of 4 KiB entries");
    assert_eq!(refused.len(), 1_024 - 25);
    assert!(refused.values().all(|r| *r == Refusal::SessionQuota));
    let stats = client.core().stats();
    assert_eq!(stats.added_bytes, 25 * 4096);
    assert_eq!(stats.over_quota, 999);
    assert_eq!(client.core().marks().ours, server.store().line(1_024));
}

/// A journal shared by every session, with a per-author quota as the application's
/// policy (`JournalStore::admit`): past its share an author's entries are refused,
/// whoever relays them.
struct PerAuthor {
    inner: MemJournal,
    share: usize,
    held: std::collections::BTreeMap<Vec<u8>, usize>,
}

impl JournalStore for PerAuthor {
    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }
    fn head(&self) -> u64 {
        self.inner.head()
    }
    fn entry(&self, seq: u64) -> Option<Entry> {
        self.inner.entry(seq)
    }
    fn line(&self, seq: u64) -> Option<LineId> {
        self.inner.line(seq)
    }
    fn contains(&self, author: &[u8], resource: &[u8]) -> bool {
        self.inner.contains(author, resource)
    }
    fn append(&mut self, entry: Entry) -> Result<LineId, tether::sync::journal::StoreError> {
        self.inner.append(entry)
    }
    fn resource(&self, author: &[u8], resource: &[u8]) -> Option<Bytes> {
        self.inner.resource(author, resource)
    }
    fn admit(&mut self, entry: &Entry) -> bool {
        if self.inner.contains(&entry.author, &entry.resource) {
            return true; // a duplicate: not stored, costs nothing
        }
        let n = self.held.entry(entry.author.to_vec()).or_insert(0);
        *n += 1;
        *n <= self.share
    }
}

#[test]
fn the_stores_policy_refuses_an_author_past_its_share() {
    use tether::sync::journal::Refusal;
    let mut server = replier();
    let config = SyncConfig {
        max_payload: 8 * 1024,
        idle_timeout: None,
        ..SyncConfig::default()
    };
    let store = PerAuthor {
        inner: MemJournal::new(8, 10_000),
        share: 10,
        held: Default::default(),
    };
    let mut client = JournalMachine::new(Role::Client, config, store);
    client
        .handle_input(Instant::ZERO, Input::Opened(LINK))
        .unwrap();
    let refused = exchange(&mut client, &mut server);
    assert_eq!(client.store().head(), 10, "the author's share");
    assert_eq!(refused.len(), 1_014);
    assert!(refused.values().all(|r| *r == Refusal::Policy));
    assert_eq!(client.core().stats().over_quota, 1_014);
}
