//! The replier's side of journal sync: answers to journal requests, made one list at a
//! time as the output drains; resource answers; broadcasts. Lines the peer gave us go
//! back to it as held runs, never as entries.

use super::{status, JournalSync, Serving};
use crate::sync::context::{ContextInput, Transition};
use crate::sync::journal::store::JournalStore;
use crate::wire::{
    HeldLines, JournalList, JournalMessage, JournalRequest, LineId, Message, Status,
    MAX_LIST_ENTRIES,
};
use alloc::vec::Vec;
use core::num::NonZeroU32;

impl JournalSync {
    /// Sends the entries after `req.since` (or the whole journal if `since` is unknown),
    /// never more than the limit, then `SYNC_END`.
    pub(super) fn answer_journal<S: JournalStore + ?Sized>(
        &mut self,
        store: &S,
        ctx: u32,
        req: JournalRequest,
    ) {
        if req.everything {
            self.given.clear(); // the peer lost lines it gave us: send them back
        }
        let epoch = store.epoch();
        let head = store.head();
        // Known only if it names this very line, check included: a journal wiped and
        // regrown under the same epoch has other lines at the same numbers.
        let known = req.since.epoch == epoch && store.line(req.since.seq) == Some(req.since);
        // An unknown `since` (another epoch, past our head, another history) never means
        // silent loss: the whole journal follows, and the requester's dedup keeps it
        // idempotent.
        let since = if known {
            req.since
        } else {
            LineId::start(epoch)
        };
        let cap = u64::from(
            req.limit
                .map_or(self.config.max_entries_per_context, NonZeroU32::get)
                .min(self.config.max_entries_per_context),
        );
        let last = head.min(since.seq.saturating_add(cap));
        self.serving = Some(Serving {
            ctx,
            next: since,
            last,
            bytes: 0,
            first: true,
        });
    }

    /// The next list of the answer in progress, and its end once done.
    pub(super) fn serve<S: JournalStore + ?Sized>(&mut self, store: &S, mut serving: Serving) {
        let done = match self.build_list(store, serving.ctx, serving.next, serving.last) {
            Some((list, end, bytes)) if serving.first || end.seq > serving.next.seq => {
                serving.first = false;
                serving.next = end;
                serving.bytes = serving.bytes.saturating_add(bytes);
                self.send(Message::Journal(JournalMessage::List(list)));
                end.seq >= serving.last || serving.bytes >= self.config.max_bytes_per_context
            }
            _ => true, // the store ended early: end here, never loop
        };
        if !done {
            self.serving = Some(serving);
            return;
        }
        self.replying_to = Some(serving.next);
        // The accepted request put us in Replying, whose row SendEnd is.
        if let Ok(Transition::Moved { .. }) = self.contexts.step(ContextInput::SendEnd) {
            self.send(Message::SyncEnd { ctx: serving.ctx });
        }
    }

    /// Answers one queued resource request: the bytes, or 404.
    pub(super) fn answer_resource<S: JournalStore + ?Sized>(
        &mut self,
        store: &S,
        req: u32,
        author: &[u8],
        resource: &[u8],
    ) {
        match store.resource(author, resource) {
            Some(bytes) => self.send(Message::Journal(JournalMessage::Resource { req, bytes })),
            None => self.send(status(
                Some(req),
                Status::NotFound,
                b"unavailable or deleted",
            )),
        }
    }

    /// Sends lines `since.seq+1 ..= last` unasked (a broadcast), as lists of bounded size,
    /// at most `max_bytes_per_context` of entries in all; returns the line reached.
    fn send_lists<S: JournalStore + ?Sized>(
        &mut self,
        store: &S,
        ctx: u32,
        since: LineId,
        last: u64,
    ) -> LineId {
        let mut at = since;
        let mut sent = 0usize;
        while at.seq < last && sent < self.config.max_bytes_per_context {
            let Some((list, end, bytes)) = self.build_list(store, ctx, at, last) else {
                break;
            };
            if end.seq <= at.seq {
                break; // the store ended early: never loop
            }
            self.send(Message::Journal(JournalMessage::List(list)));
            sent = sent.saturating_add(bytes);
            at = end;
        }
        at
    }

    /// One list of lines `since.seq+1 ..= last` (possibly empty), bounded by
    /// `max_entries_per_message` items and `max_list_bytes`, with the line it ends at and
    /// its bytes of entries. Lines the peer gave us go as held runs (13 bytes a run),
    /// never as entries. `None` if the store has no line `since.seq`.
    fn build_list<S: JournalStore + ?Sized>(
        &self,
        store: &S,
        ctx: u32,
        since: LineId,
        last: u64,
    ) -> Option<(JournalList, LineId, usize)> {
        let from = store.line(since.seq)?;
        let per_msg = self
            .config
            .max_entries_per_message
            .clamp(1, MAX_LIST_ENTRIES);
        let mut entries = Vec::new();
        let mut held: Vec<HeldLines> = Vec::new();
        let mut bytes = 0usize;
        let mut seq = since.seq;
        let mut end = from;
        while seq < last && entries.len() + held.len() < per_msg {
            if let Some(run_end) = self.given.run_at(store, seq + 1) {
                let stop = run_end
                    .min(last)
                    .min(seq.saturating_add(u64::from(u32::MAX)));
                let Some(line) = store.line(stop) else {
                    break;
                };
                held.push(HeldLines {
                    // At most `per_msg` (<= MAX_LIST_ENTRIES) items: fits.
                    at: entries.len() as u16,
                    lines: (stop - seq) as u32,
                    check: line.check,
                });
                bytes += 13;
                seq = stop;
                end = line;
                continue;
            }
            let Some(e) = store.entry(seq + 1) else {
                break;
            };
            let first = entries.is_empty() && held.is_empty();
            if !first && bytes + e.wire_len() > self.config.max_list_bytes {
                break;
            }
            bytes += e.wire_len();
            end = end.next(&e);
            entries.push(e);
            seq += 1;
        }
        let list = JournalList {
            ctx,
            since: from,
            head: store.head(),
            entries,
            held,
        };
        Some((list, end, bytes))
    }

    /// The most recent list: our lines after the peer's confirmed mark, or after what this
    /// connection already carried if that is further, unasked (ctx 0). Without the second
    /// bound every broadcast would resend everything since the last confirmation: a server
    /// relaying each entry to every session would send quadratically many.
    pub(super) fn broadcast<S: JournalStore + ?Sized>(&mut self, store: &S) {
        let epoch = store.epoch();
        let head = store.head();
        let known =
            |l: Option<LineId>| l.filter(|l| l.epoch == epoch && store.line(l.seq) == Some(*l));
        let since = match (known(self.marks.theirs), known(self.broadcast_to)) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b).unwrap_or(LineId::start(epoch)),
        };
        let last = head.min(
            since
                .seq
                .saturating_add(u64::from(self.config.max_entries_per_context)),
        );
        let reached = self.send_lists(store, 0, since, last);
        self.broadcast_to = Some(reached);
    }
}
