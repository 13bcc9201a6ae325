//! Session snapshots (src/snapshot.rs, docs/PROTOCOL.md section 8): hand one session over
//! to another registry, in another process.

use super::*;
use crate::connect::merge::MergeSessionSnapshot;
use crate::snapshot::ImportError;

impl<S: TokenSource> MergeServer<S> {
    /// One session's durable state, to hand it over to another server: tokens, status,
    /// queue, and the time left before it would expire (relative to `now`). `None` if no
    /// such session. The session stays here; see [`MergeServer::take_session`] to move it.
    ///
    /// The snapshot holds the session's secret tokens: store and move it securely.
    pub fn export_session(&self, now: Instant, id: SessionId) -> Option<MergeSessionSnapshot> {
        let s = self.endpoint.get(id)?;
        let merged = s.state.node.merged?;
        let status = match s.state.node.status {
            Status::Connected if s.link.is_some() => Status::Connected,
            _ => Status::Reconnecting,
        };
        let expires_in = match status {
            Status::Connected => None,
            _ => Some(
                self.endpoint
                    .timer(id, SessionTimer::Expire)
                    .map_or(self.cfg.resume_grace, |at| {
                        at.saturating_duration_since(now)
                    }),
            ),
        };
        let (acked, received, queue) = s.core.snapshot();
        Some(MergeSessionSnapshot {
            status,
            local: s.state.node.local,
            remote: s.state.node.remote,
            merged,
            queue,
            acked,
            received,
            expires_in,
        })
    }

    /// Exports a session and forgets it here, without telling its client: its transport is
    /// closed ([`Output::Close`]) and no event is given. The client sees its transport
    /// lost and resumes, wherever the caller now routes it (the importing server).
    pub fn take_session(&mut self, now: Instant, id: SessionId) -> Option<MergeSessionSnapshot> {
        let snap = self.export_session(now, id)?;
        self.now = self.now.max(now);
        if let Some(s) = self.endpoint.remove(id) {
            if let Some(m) = s.state.node.merged {
                self.by_token.remove(&(fingerprint(&m), id));
            }
            if let Some(link) = s.link {
                self.outbox.close(link);
            }
        }
        Some(snap)
    }

    /// Takes over a session exported by another server: it becomes RECONNECTING here
    /// (whatever its status at export: its transport did not move), with its queue, and is
    /// forgotten when its time left runs out (`resume_grace` if it was exported
    /// CONNECTED). Its client resumes it with RESUME as after any lost transport.
    ///
    /// Refused, leaving the registry as it was, when the registry is full
    /// ([`ImportError::Full`]), when a session holds the same merged token (imported
    /// twice: [`ImportError::DuplicateToken`]), when that token ended formally here, when
    /// the queue is over `max_queue`, or when a token does not suit the encoding.
    ///
    /// The next deadline may be earlier: poll the output after an import.
    pub fn import_session(
        &mut self,
        now: Instant,
        snap: MergeSessionSnapshot,
    ) -> Result<SessionId, ImportError> {
        if self.endpoint.session_count() >= self.cfg.max_sessions {
            return Err(ImportError::Full);
        }
        if self.find(&snap.merged).is_some() {
            return Err(ImportError::DuplicateToken);
        }
        if self.is_ended(&snap.merged) {
            return Err(ImportError::Ended);
        }
        if snap.queue.len() > self.cfg.max_queue {
            return Err(ImportError::QueueTooLong {
                len: snap.queue.len(),
                max: self.cfg.max_queue,
            });
        }
        if codec::check_local(self.cfg.encoding, &snap.local).is_err()
            || codec::check_local(self.cfg.encoding, &snap.merged).is_err()
        {
            return Err(ImportError::BadToken);
        }
        self.now = self.now.max(now);
        let id = SessionId(self.next_id);
        self.next_id = self.next_id.saturating_add(1);
        let mut core = self.new_core();
        core.restored(snap.acked, snap.received, snap.queue);
        self.endpoint.insert(
            id,
            core,
            Session {
                node: Node {
                    status: Status::Reconnecting,
                    local: snap.local,
                    remote: snap.remote,
                    merged: Some(snap.merged),
                },
            },
        );
        self.by_token.insert((fingerprint(&snap.merged), id));
        let left = snap.expires_in.unwrap_or(self.cfg.resume_grace);
        self.endpoint
            .set_timer(id, SessionTimer::Expire, Some(now + left));
        Ok(id)
    }
}
