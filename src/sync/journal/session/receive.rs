//! The requester's side of journal sync: lists received inside a context (their
//! continuity with what came before, checks folded into the mark), applied as one batch
//! each, and the continuity report of a session's first answer.

use super::JournalSync;
use crate::sync::journal::store::JournalStore;
use crate::sync::journal::types::{Continuity, Refusal, SyncEvent, SyncOutput};
use crate::wire::{Entry, JournalList, JournalRequest};
use alloc::vec::Vec;

impl JournalSync {
    pub(super) fn on_context_list<S: JournalStore + ?Sized>(
        &mut self,
        store: &mut S,
        list: JournalList,
    ) {
        let ctx = list.ctx;
        let Some(mut inc) = self.incoming.take() else {
            self.stats.stale += 1;
            return;
        };
        if !inc.broken {
            let n = list.lines();
            let expected_ok = match (inc.pos, inc.journal) {
                (Some(pos), _) => list.since == pos,
                (None, Some(req)) => {
                    self.report_continuity(ctx, &req, &list);
                    if list.since != req.since {
                        if list.since.seq == 0 && list.since.check == 0 {
                            if req.since.seq != 0 {
                                self.event(SyncEvent::FullResync {
                                    ctx,
                                    since: list.since,
                                });
                            }
                            true
                        } else {
                            false
                        }
                    } else {
                        true
                    }
                }
                (None, None) => false, // a list in an application context
            };
            let limit = inc
                .journal
                .and_then(|r| r.limit)
                .map_or(u64::MAX, |l| u64::from(l.get()));
            if !expected_ok || inc.received + n > limit {
                inc.broken = true;
            } else {
                inc.received += n;
                // The peer's chain over what it sent: the check our mark will carry.
                inc.pos = Some(list.end());
                inc.head = list.head;
                let at = list.end().seq;
                let journal = inc.journal.is_some();
                self.incoming = Some(inc);
                if self.apply(store, ctx, &list.entries) && journal {
                    self.event(SyncEvent::Progress {
                        ctx,
                        at,
                        head: list.head,
                    });
                }
                return;
            }
        }
        self.incoming = Some(inc);
    }

    /// Appends each entry we do not have, as one batch (one transaction and one fsync for
    /// a durable store); dedup by `(author, resource)` makes resends, broadcasts and full
    /// resyncs idempotent. Returns once the store has committed the batch: what follows
    /// (a `SYNC_OK` at the context's end) may rely on it.
    pub(super) fn apply<S: JournalStore + ?Sized>(
        &mut self,
        store: &mut S,
        ctx: u32,
        entries: &[Entry],
    ) -> bool {
        if entries.is_empty() {
            return true;
        }
        // The limits of a local append hold for received entries too: a peer cannot store
        // what the application could not. Then the session's quota (entries the journal
        // holds already cost none) and the store's own policy. One pass; the entries are
        // copied only once one is refused.
        let quota = self.config.max_session_bytes;
        let mut added = self.stats.added_bytes;
        let mut kept: Option<Vec<Entry>> = None;
        for (i, e) in entries.iter().enumerate() {
            let len = e.payload.len();
            let reason = if len > self.config.max_payload {
                Some(Refusal::TooLarge)
            } else if quota.is_some_and(|q| {
                added.saturating_add(len as u64) > q && !store.contains(&e.author, &e.resource)
            }) {
                Some(Refusal::SessionQuota)
            } else if !store.admit(e) {
                Some(Refusal::Policy)
            } else {
                added = added.saturating_add(len as u64);
                None
            };
            match (reason, kept.as_mut()) {
                (None, Some(k)) => k.push(e.clone()),
                (None, None) => {}
                (Some(reason), _) => {
                    if kept.is_none() {
                        kept = Some(entries[..i].to_vec());
                    }
                    match reason {
                        Refusal::TooLarge => self.stats.oversized += 1,
                        _ => self.stats.over_quota += 1,
                    }
                    self.out
                        .push_back(SyncOutput::Event(SyncEvent::EntryRefused {
                            author: e.author.clone(),
                            resource: e.resource.clone(),
                            len,
                            reason,
                        }));
                }
            }
        }
        let entries = kept.as_deref().unwrap_or(entries);
        let mut outcomes = core::mem::take(&mut self.outcomes);
        outcomes.clear();
        let result = store.append_batch(entries, &mut outcomes);
        for (e, outcome) in entries.iter().zip(&outcomes) {
            match outcome {
                Some(line) => {
                    self.given.insert(line.seq, line.check);
                    self.stats.applied += 1;
                    self.stats.added_bytes = self
                        .stats
                        .added_bytes
                        .saturating_add(e.payload.len() as u64);
                    self.event(SyncEvent::Applied {
                        line: *line,
                        author: e.author.clone(),
                        resource: e.resource.clone(),
                    });
                }
                None => self.stats.duplicates += 1,
            }
        }
        outcomes.clear();
        self.outcomes = outcomes;
        if let Err(error) = result {
            // Not (all) applied: the context must not confirm past it.
            if let Some(inc) = self.incoming.as_mut() {
                inc.broken = true;
            }
            self.event(SyncEvent::StoreFailed { ctx, error });
            return false;
        }
        true
    }

    /// The first list answering the first journal request of a connection: tells the
    /// application where its mark stands, before the list's entries are applied.
    fn report_continuity(&mut self, ctx: u32, req: &JournalRequest, list: &JournalList) {
        if !core::mem::take(&mut self.report) {
            return;
        }
        let mark = req.since;
        let continuity = if mark.seq == 0 {
            // No mark: whatever epoch we named, the whole journal was asked for.
            match self.rebuilt.take() {
                Some(mark) => Continuity::Rebuilt { mark },
                None => Continuity::Start,
            }
        } else if list.since != mark {
            Continuity::Diverged { mark }
        } else if list.head == mark.seq {
            Continuity::UpToDate { mark }
        } else {
            Continuity::CatchUp { mark }
        };
        self.event(SyncEvent::Continuity {
            ctx,
            epoch: list.since.epoch,
            head: list.head,
            continuity,
        });
    }
}
