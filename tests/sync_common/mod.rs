//! A two-node harness for the sync tests: two `JournalMachine`s joined by an in-memory
//! `main` link whose frames the test delivers one by one, or all, and can cut.
#![allow(dead_code)]

use bytes::Bytes;
use std::collections::VecDeque;
use tether::sync::journal::{JournalMachine, MemJournal, Role, SyncCommand, SyncConfig, SyncEvent};
use tether::wire::Message;
use tether::{Duration, Input, Instant, Link, Machine, Output};

pub type M = JournalMachine<MemJournal>;

/// Side 0 (a client) and side 1 (a server).
pub struct Net {
    pub m: [M; 2],
    pub now: Instant,
    link: u64,
    up: bool,
    /// Frames in flight from side i to the other.
    pub wire: [VecDeque<Bytes>; 2],
    /// Every message sent, in order: (sender, message).
    pub log: Vec<(usize, Message)>,
    pub events: [Vec<SyncEvent>; 2],
    pub closes: [usize; 2],
}

pub fn config() -> SyncConfig {
    SyncConfig {
        sync_on_connect: false,
        broadcast_on_append: false,
        idle_timeout: None,
        ..SyncConfig::default()
    }
}

impl Net {
    pub fn new(c0: SyncConfig, c1: SyncConfig, e0: u64, e1: u64) -> Net {
        Net {
            m: [
                JournalMachine::new(Role::Client, c0, MemJournal::new(e0, 100_000)),
                JournalMachine::new(Role::Server, c1, MemJournal::new(e1, 100_000)),
            ],
            now: Instant::from_millis(1_000),
            link: 0,
            up: false,
            wire: [VecDeque::new(), VecDeque::new()],
            log: Vec::new(),
            events: [Vec::new(), Vec::new()],
            closes: [0, 0],
        }
    }

    pub fn connect(&mut self) {
        self.link += 1;
        self.up = true;
        for i in 0..2 {
            self.m[i]
                .handle_input(self.now, Input::Opened(Link::main(self.link)))
                .unwrap();
        }
        self.pump();
    }

    /// Transport down on both sides; frames in flight are lost.
    pub fn cut(&mut self) {
        self.up = false;
        self.wire = [VecDeque::new(), VecDeque::new()];
        for i in 0..2 {
            self.m[i]
                .handle_input(self.now, Input::Closed(Link::main(self.link)))
                .unwrap();
        }
        self.pump();
    }

    pub fn cmd(&mut self, side: usize, cmd: SyncCommand) {
        self.m[side]
            .handle_input(self.now, Input::Command(cmd))
            .unwrap();
        self.pump();
    }

    /// Drains both machines' outputs onto the wire and into the event lists.
    pub fn pump(&mut self) {
        for i in 0..2 {
            loop {
                match self.m[i].poll_output() {
                    Output::Transmit(t) => {
                        let frame = t.payload.slice(4..);
                        self.log.push((i, Message::decode(frame).unwrap()));
                        if self.up {
                            self.wire[i].push_back(t.payload);
                        }
                    }
                    Output::Event(e) => self.events[i].push(e),
                    Output::Close(_) => self.closes[i] += 1,
                    Output::Open(_) => {}
                    Output::Wait(_) => break,
                }
            }
        }
    }

    /// Delivers the next frame from `from` to the other side; false if none.
    pub fn deliver(&mut self, from: usize) -> bool {
        let Some(frame) = self.wire[from].pop_front() else {
            return false;
        };
        let _ =
            self.m[1 - from].handle_input(self.now, Input::Received(Link::main(self.link), frame));
        self.pump();
        true
    }

    /// Messages logged since index `from`.
    pub fn sent_since(&self, from: usize) -> Vec<(usize, Message)> {
        self.log[from..].to_vec()
    }

    /// Delivers everything, firing timers, until quiet (bounded).
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            if self.deliver(0) || self.deliver(1) {
                continue;
            }
            let next = [self.m[0].poll_timeout(), self.m[1].poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= self.now + Duration::from_secs(60) => {
                    self.now = self.now.max(t);
                    for i in 0..2 {
                        if self.m[i].poll_timeout().is_some_and(|d| d <= self.now) {
                            self.m[i].handle_input(self.now, Input::Timeout).unwrap();
                        }
                    }
                    self.pump();
                }
                _ => return,
            }
        }
        panic!("did not settle");
    }

    pub fn take_events(&mut self, side: usize) -> Vec<SyncEvent> {
        std::mem::take(&mut self.events[side])
    }
}
