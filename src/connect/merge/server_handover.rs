//! Session snapshots (src/snapshot.rs, docs/PROTOCOL.md section 8): hand one session over
//! to another registry, in another process.

use super::*;
use crate::connect::merge::{MergeEndedSnapshot, MergeSecrets, MergeSessionSnapshot, Tombstone};
use crate::snapshot::ImportError;
use crate::time::Duration;

impl<S: TokenSource> MergeServer<S> {
    /// One session's durable state, to hand it over to another server: tokens, status,
    /// queue, and the time left before it would expire (relative to `now`). `None` if no
    /// such session. The session stays here; see [`MergeServer::take_session`] to move it.
    ///
    /// The snapshot holds the session's secret tokens: store and move it securely.
    pub fn export_session(&self, now: Instant, id: SessionId) -> Option<MergeSessionSnapshot> {
        let s = self.endpoint.get(id)?;
        let node = s.state.node();
        let merged = node.merged?;
        let status = match node.status {
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
            local: node.local,
            remote: node.remote,
            merged,
            secrets: s
                .state
                .secrets
                .zip(s.state.root())
                .map(|(k, key)| MergeSecrets {
                    key,
                    oldest: k.oldest,
                    next: k.next,
                    merged_resumes: k.merged_resumes,
                }),
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
        self.unindex(id);
        if let Some(s) = self.endpoint.remove(id) {
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
    /// ([`ImportError::Full`]), when a session holds the same merged token or secrets
    /// (imported twice: [`ImportError::DuplicateToken`]), when the session ended formally
    /// here ([`ImportError::Ended`]: a tombstone, kept or imported with
    /// [`MergeServer::import_ended`]), when the queue is over `max_queue`, or when a token
    /// does not suit the encoding (secrets in dop's encoding, none in tether's).
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
        let secrets = snap.secrets.map(|k| Secrets {
            key: SecretKey::from_token(&k.key),
            oldest: k.oldest,
            next: k.next,
            merged_resumes: k.merged_resumes,
        });
        let locator = secrets.map(|k| k.key.locator());
        if self.find(&snap.merged).is_some()
            || locator.is_some_and(|l| self.candidates(l, Role::Locator).next().is_some())
        {
            return Err(ImportError::DuplicateToken);
        }
        // A tombstone of its merged token or of its secrets' locator: the session ended
        // after this snapshot was taken.
        if self.is_ended(&snap.merged)
            || locator.is_some_and(|l| self.is_ended(&index::locator_token(l)))
        {
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
            || secrets.is_some() != (self.cfg.encoding == Encoding::Tether)
            || snap.secrets.is_some_and(|k| !k.key.is_secure())
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
                status: Status::Reconnecting,
                tokens: TokenPack::new([
                    Some(&snap.local),
                    snap.remote.as_ref(),
                    Some(&snap.merged),
                    snap.secrets.as_ref().map(|k| &k.key),
                ]),
                secrets,
            },
        );
        self.index(id);
        let left = snap.expires_in.unwrap_or(self.cfg.resume_grace);
        self.endpoint
            .set_timer(id, SessionTimer::Expire, Some(now + left));
        Ok(id)
    }
}

impl<S: TokenSource> MergeServer<S> {
    /// A value that changes whenever a tombstone is added or forgotten, and never comes
    /// back to an earlier one: a durable store writes
    /// [`export_ended`](Self::export_ended) again only when it moved, rather than every
    /// round (an export encodes every tombstone).
    pub fn ended_version(&self) -> (u64, usize) {
        self.ended.version()
    }

    /// The tombstones of formally ended sessions, with their time left from `now`: persist
    /// them with the sessions' snapshots, so that a restarted server that imports an older
    /// snapshot of a session that has since ended refuses it
    /// ([`MergeServer::import_ended`], then [`MergeServer::import_session`]).
    pub fn export_ended(&self, now: Instant) -> MergeEndedSnapshot {
        MergeEndedSnapshot {
            tombstones: self
                .ended
                .export(now)
                .into_iter()
                .map(|(tokens, forget_in, ended_by)| Tombstone {
                    tokens,
                    forget_in,
                    ended_by,
                })
                .collect(),
        }
    }

    /// Takes over tombstones exported by [`MergeServer::export_ended`] (this server's own
    /// before a restart, or another's of the fleet). Import them before the sessions:
    /// [`MergeServer::import_session`] refuses a session whose secrets have a tombstone
    /// ([`ImportError::Ended`]). A session already here that one of them names is left as
    /// it is. Each part of the ended set keeps its bound (`max_sessions`, the soonest
    /// forgotten first); tombstones with no time left are skipped. Returns how many were
    /// taken.
    pub fn import_ended(&mut self, now: Instant, snap: &MergeEndedSnapshot) -> usize {
        self.now = self.now.max(now);
        let mut taken = 0;
        for t in &snap.tombstones {
            if t.forget_in == Duration::ZERO || t.tokens.is_empty() {
                continue;
            }
            let tokens: Vec<Token> = t.tokens.iter().take(2).copied().collect();
            self.ended
                .insert(&self.key, tokens, now + t.forget_in, t.ended_by);
            taken += 1;
        }
        taken
    }
}
