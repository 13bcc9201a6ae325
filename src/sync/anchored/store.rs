//! Storage for anchored sync: the application's, behind one small trait per side, with an
//! in-memory implementation of each.
//!
//! Change tracking lives here, not in the machines, so that it survives an interrupted
//! session: a record changed since the last sync stays *dirty* (with a version number that
//! grows on every edit) until the peer acknowledges that change, and an acknowledgement
//! clears it only if the record was not edited again since it was sent.

use crate::wire::MapEntry;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use bytes::Bytes;

/// The client's storage: records under local ids (LUIDs), what changed since they were last
/// acknowledged, which records the server knows, the id map not yet acknowledged, and the
/// Last anchor.
pub trait ClientStore {
    /// A record.
    fn get(&self, luid: u64) -> Option<Bytes>;
    /// Every record's id (a slow sync sends them all).
    fn ids(&self) -> Vec<u64>;
    /// Stores (`Some`) or deletes (`None`) a record the server sent, without marking it dirty.
    fn apply_remote(&mut self, luid: u64, data: Option<Bytes>);
    /// A local id never used before.
    fn fresh_luid(&mut self) -> u64;
    /// The records changed since last acknowledged, with their versions.
    fn dirty(&self) -> Vec<(u64, u64)>;
    /// The server acknowledged `luid` as of `version`: forget the change unless it was
    /// edited again since.
    fn clean(&mut self, luid: u64, version: u64);
    /// Whether the server has this record (so a change to it is a replace or a delete, not
    /// an add).
    fn is_known(&self, luid: u64) -> bool;
    /// Records whether the server has this record.
    fn set_known(&mut self, luid: u64, known: bool);
    /// Map entries for records the server added that the server has not yet acknowledged.
    fn pending_map(&self) -> Vec<MapEntry>;
    /// The local id of a record the server added (by its server id), if still pending.
    fn pending_luid(&self, guid: u64) -> Option<u64>;
    /// Remembers a map entry until the server acknowledges it.
    fn add_pending(&mut self, entry: MapEntry);
    /// The server acknowledged the whole map.
    fn clear_pending(&mut self);
    /// The Last anchor (0: never synced).
    fn last_anchor(&self) -> u64;
    /// Stores the Last anchor (only when a session completes).
    fn set_last_anchor(&mut self, anchor: u64);
}

/// The server's storage: records under server ids (GUIDs), and for each client it has seen:
/// its anchor, its id map, and the records changed since that client last acknowledged them.
pub trait ServerStore {
    /// A record.
    fn get(&self, guid: u64) -> Option<Bytes>;
    /// Every record's id (a slow sync compares them all).
    fn guids(&self) -> Vec<u64>;
    /// Stores (`Some`) or deletes (`None`) a record a client sent: dirty for every other
    /// registered client, not for `from`.
    fn apply_from(&mut self, from: &[u8], guid: u64, data: Option<Bytes>);
    /// A server id never used before.
    fn fresh_guid(&mut self) -> u64;
    /// An anchor never handed out before.
    fn fresh_anchor(&mut self) -> u64;
    /// Creates the client's state if it has none (its anchor stays unset).
    fn register(&mut self, client: &[u8]);
    /// The client's stored anchor; `None` for a client the server does not know.
    fn anchor(&self, client: &[u8]) -> Option<u64>;
    /// Stores the client's anchor (only when a session completes).
    fn set_anchor(&mut self, client: &[u8], anchor: u64);
    /// The records changed since the client last acknowledged them, with their versions.
    fn dirty(&self, client: &[u8]) -> Vec<(u64, u64)>;
    /// The dirty version of one record for the client.
    fn dirty_version(&self, client: &[u8], guid: u64) -> Option<u64>;
    /// The client acknowledged `guid` as of `version`: forget the change unless it was
    /// edited again since.
    fn clean(&mut self, client: &[u8], guid: u64, version: u64);
    /// The server id of a client's local id.
    fn guid_for(&self, client: &[u8], luid: u64) -> Option<u64>;
    /// The client's local id of a server id.
    fn luid_for(&self, client: &[u8], guid: u64) -> Option<u64>;
    /// Maps a client's local id to a server id (replacing older entries of either).
    fn map(&mut self, client: &[u8], luid: u64, guid: u64);
    /// Forgets the client's mapping of a server id.
    fn unmap(&mut self, client: &[u8], guid: u64);
}

/// An in-memory [`ClientStore`]. The application edits records through
/// [`insert`](MemClientStore::insert), [`replace`](MemClientStore::replace) and
/// [`delete`](MemClientStore::delete), which track the change for the next sync.
///
/// ```
/// use bytes::Bytes;
/// use tether::sync::anchored::{ClientStore, MemClientStore};
///
/// let mut store = MemClientStore::new();
/// let id = store.insert(Bytes::from_static(b"alice"));
/// assert_eq!(store.get(id), Some(Bytes::from_static(b"alice")));
/// assert_eq!(store.dirty().len(), 1); // goes out as an add in the next sync
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemClientStore {
    records: BTreeMap<u64, Bytes>,
    dirty: BTreeMap<u64, u64>,
    known: BTreeSet<u64>,
    pending: BTreeMap<u64, u64>,
    last: u64,
    next_luid: u64,
    version: u64,
}

impl MemClientStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn touch(&mut self, luid: u64) {
        self.version += 1;
        self.dirty.insert(luid, self.version);
    }

    /// Adds a record; returns its local id.
    pub fn insert(&mut self, data: Bytes) -> u64 {
        let luid = self.fresh_luid();
        self.records.insert(luid, data);
        self.touch(luid);
        luid
    }

    /// Replaces a record; `false` if there is none.
    pub fn replace(&mut self, luid: u64, data: Bytes) -> bool {
        match self.records.get_mut(&luid) {
            Some(r) => {
                *r = data;
                self.touch(luid);
                true
            }
            None => false,
        }
    }

    /// Deletes a record; `false` if there is none.
    pub fn delete(&mut self, luid: u64) -> bool {
        if self.records.remove(&luid).is_some() {
            self.touch(luid);
            true
        } else {
            false
        }
    }

    /// All records.
    pub fn records(&self) -> &BTreeMap<u64, Bytes> {
        &self.records
    }

    /// Forgets the Last anchor (as a reinstalled client would): the next sync is slow.
    pub fn forget_anchor(&mut self) {
        self.last = 0;
    }
}

impl ClientStore for MemClientStore {
    fn get(&self, luid: u64) -> Option<Bytes> {
        self.records.get(&luid).cloned()
    }
    fn ids(&self) -> Vec<u64> {
        self.records.keys().copied().collect()
    }
    fn apply_remote(&mut self, luid: u64, data: Option<Bytes>) {
        match data {
            Some(d) => {
                self.records.insert(luid, d);
            }
            None => {
                self.records.remove(&luid);
            }
        }
    }
    fn fresh_luid(&mut self) -> u64 {
        self.next_luid += 1;
        self.next_luid
    }
    fn dirty(&self) -> Vec<(u64, u64)> {
        self.dirty.iter().map(|(k, v)| (*k, *v)).collect()
    }
    fn clean(&mut self, luid: u64, version: u64) {
        if self.dirty.get(&luid) == Some(&version) {
            self.dirty.remove(&luid);
        }
    }
    fn is_known(&self, luid: u64) -> bool {
        self.known.contains(&luid)
    }
    fn set_known(&mut self, luid: u64, known: bool) {
        if known {
            self.known.insert(luid);
        } else {
            self.known.remove(&luid);
        }
    }
    fn pending_map(&self) -> Vec<MapEntry> {
        self.pending
            .iter()
            .map(|(guid, luid)| MapEntry {
                luid: *luid,
                guid: *guid,
            })
            .collect()
    }
    fn pending_luid(&self, guid: u64) -> Option<u64> {
        self.pending.get(&guid).copied()
    }
    fn add_pending(&mut self, entry: MapEntry) {
        self.pending.insert(entry.guid, entry.luid);
    }
    fn clear_pending(&mut self) {
        self.pending.clear();
    }
    fn last_anchor(&self) -> u64 {
        self.last
    }
    fn set_last_anchor(&mut self, anchor: u64) {
        self.last = anchor;
    }
}

#[derive(Debug, Clone, Default)]
struct PerClient {
    anchor: Option<u64>,
    dirty: BTreeMap<u64, u64>,
    by_luid: BTreeMap<u64, u64>,
    by_guid: BTreeMap<u64, u64>,
}

/// An in-memory [`ServerStore`]. The application edits records through
/// [`insert`](MemServerStore::insert), [`replace`](MemServerStore::replace) and
/// [`delete`](MemServerStore::delete), which mark them dirty for every registered client.
#[derive(Debug, Clone, Default)]
pub struct MemServerStore {
    records: BTreeMap<u64, Bytes>,
    clients: BTreeMap<Bytes, PerClient>,
    next_guid: u64,
    next_anchor: u64,
    version: u64,
}

impl MemServerStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn touch_all_but(&mut self, from: Option<&[u8]>, guid: u64) {
        self.version += 1;
        let v = self.version;
        for (id, c) in self.clients.iter_mut() {
            if Some(&id[..]) != from {
                c.dirty.insert(guid, v);
            }
        }
    }

    /// Adds a record; returns its server id.
    pub fn insert(&mut self, data: Bytes) -> u64 {
        let guid = self.fresh_guid();
        self.records.insert(guid, data);
        self.touch_all_but(None, guid);
        guid
    }

    /// Replaces a record; `false` if there is none.
    pub fn replace(&mut self, guid: u64, data: Bytes) -> bool {
        match self.records.get_mut(&guid) {
            Some(r) => {
                *r = data;
                self.touch_all_but(None, guid);
                true
            }
            None => false,
        }
    }

    /// Deletes a record; `false` if there is none.
    pub fn delete(&mut self, guid: u64) -> bool {
        if self.records.remove(&guid).is_some() {
            self.touch_all_but(None, guid);
            true
        } else {
            false
        }
    }

    /// All records.
    pub fn records(&self) -> &BTreeMap<u64, Bytes> {
        &self.records
    }

    /// Forgets everything about a client (as a server that lost its state would).
    pub fn forget_client(&mut self, client: &[u8]) {
        self.clients.remove(client);
    }
}

impl ServerStore for MemServerStore {
    fn get(&self, guid: u64) -> Option<Bytes> {
        self.records.get(&guid).cloned()
    }
    fn guids(&self) -> Vec<u64> {
        self.records.keys().copied().collect()
    }
    fn apply_from(&mut self, from: &[u8], guid: u64, data: Option<Bytes>) {
        match data {
            Some(d) => {
                self.records.insert(guid, d);
            }
            None => {
                self.records.remove(&guid);
            }
        }
        self.touch_all_but(Some(from), guid);
    }
    fn fresh_guid(&mut self) -> u64 {
        self.next_guid += 1;
        self.next_guid
    }
    fn fresh_anchor(&mut self) -> u64 {
        self.next_anchor += 1;
        self.next_anchor
    }
    fn register(&mut self, client: &[u8]) {
        if !self.clients.contains_key(client) {
            self.clients
                .insert(Bytes::copy_from_slice(client), PerClient::default());
        }
    }
    fn anchor(&self, client: &[u8]) -> Option<u64> {
        self.clients.get(client).and_then(|c| c.anchor)
    }
    fn set_anchor(&mut self, client: &[u8], anchor: u64) {
        self.register(client);
        if let Some(c) = self.clients.get_mut(client) {
            c.anchor = Some(anchor);
        }
    }
    fn dirty(&self, client: &[u8]) -> Vec<(u64, u64)> {
        self.clients
            .get(client)
            .map(|c| c.dirty.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }
    fn dirty_version(&self, client: &[u8], guid: u64) -> Option<u64> {
        self.clients
            .get(client)
            .and_then(|c| c.dirty.get(&guid).copied())
    }
    fn clean(&mut self, client: &[u8], guid: u64, version: u64) {
        if let Some(c) = self.clients.get_mut(client) {
            if c.dirty.get(&guid) == Some(&version) {
                c.dirty.remove(&guid);
            }
        }
    }
    fn guid_for(&self, client: &[u8], luid: u64) -> Option<u64> {
        self.clients
            .get(client)
            .and_then(|c| c.by_luid.get(&luid).copied())
    }
    fn luid_for(&self, client: &[u8], guid: u64) -> Option<u64> {
        self.clients
            .get(client)
            .and_then(|c| c.by_guid.get(&guid).copied())
    }
    fn map(&mut self, client: &[u8], luid: u64, guid: u64) {
        self.register(client);
        if let Some(c) = self.clients.get_mut(client) {
            if let Some(old) = c.by_luid.insert(luid, guid) {
                c.by_guid.remove(&old);
            }
            if let Some(old) = c.by_guid.insert(guid, luid) {
                if old != luid {
                    c.by_luid.remove(&old);
                }
            }
        }
    }
    fn unmap(&mut self, client: &[u8], guid: u64) {
        if let Some(c) = self.clients.get_mut(client) {
            if let Some(luid) = c.by_guid.remove(&guid) {
                c.by_luid.remove(&luid);
            }
        }
    }
}
