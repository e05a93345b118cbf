//! The store: keys in an ordered map, each with its history.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use bytes::{Bytes, BytesMut};
use etcd_proto::mvccpb::{event::EventType, Event, KeyValue};
use prost::Message;

use super::key_history::{KeyHistory, Stored};
use crate::error::EtcdError;
use crate::revision::Revision;

/// Which keys a request addresses, decoded from etcd's `key`/`range_end` pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum KeyRange {
    /// `range_end` empty: exactly this key.
    Single(Bytes),
    /// `range_end` is `"\0"`: every key ≥ this one.
    From(Bytes),
    /// `[key, range_end)`, with `key < range_end`.
    Between(Bytes, Bytes),
    /// `range_end ≤ key`: nothing (etcd answers with an empty result, not an error).
    Empty,
}

impl KeyRange {
    /// Decodes a request's `key` and `range_end` as etcd does.
    pub(crate) fn new(key: &Bytes, range_end: &Bytes) -> Self {
        match &range_end[..] {
            [] => Self::Single(key.clone()),
            [0] => Self::From(key.clone()),
            end if end > &key[..] => Self::Between(key.clone(), range_end.clone()),
            _ => Self::Empty,
        }
    }

    /// Whether `key` falls in the range.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        match self {
            Self::Single(k) => &k[..] == key,
            Self::From(start) => key >= &start[..],
            Self::Between(start, end) => key >= &start[..] && key < &end[..],
            Self::Empty => false,
        }
    }

    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        match self {
            Self::Single(k) => (Bound::Included(k), Bound::Included(k)),
            Self::From(start) => (Bound::Included(start), Bound::Unbounded),
            Self::Between(start, end) => (Bound::Included(start), Bound::Excluded(end)),
            // An empty interval that `BTreeMap::range` accepts (it panics on
            // two equal excluded bounds).
            Self::Empty => (Bound::Included(&[]), Bound::Excluded(&[])),
        }
    }
}

/// A key as a read at some revision sees it, borrowed from the store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Visible<'s> {
    pub(crate) key: &'s Bytes,
    /// The revision of the put it shows.
    pub(crate) revision: Revision,
    pub(crate) stored: &'s Stored,
}

impl Visible<'_> {
    pub(crate) fn to_kv(self) -> KeyValue {
        self.stored.to_kv(self.key, self.revision)
    }
}

/// The multi-version store. See the [module docs](super).
#[derive(Debug, Clone)]
pub(crate) struct Store {
    keys: BTreeMap<Bytes, KeyHistory>,
    /// Every retained change in revision order, as its main revision and
    /// key (the key's history holds what changed): watchers that start in
    /// the past or fell behind catch up from it. A change's sub revision is
    /// its place among its revision's changes, so it is not kept. Compaction
    /// trims the log like the histories. 40 bytes a change, where keeping
    /// each write's events cost a `KeyValue` and its previous one.
    log: VecDeque<(i64, Bytes)>,
    /// How many keys the map held when it was last built dense (see
    /// [`Store::repack_if_grown`]), or fewer, after a compaction.
    packed_len: usize,
    /// The revision of the last write; 1 for an empty store, as in etcd.
    revision: i64,
    /// Reads below this revision fail. -1 until the first compaction, as in
    /// etcd, which is why compacting at revision 0 succeeds once.
    compact_revision: i64,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            keys: BTreeMap::new(),
            log: VecDeque::new(),
            packed_len: 0,
            revision: 1,
            compact_revision: -1,
        }
    }
}

impl Store {
    /// The current revision.
    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    /// The revision of the last compaction, -1 if there was none.
    pub(crate) fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// Keys that have a retained history (live or not), for size estimates.
    pub(crate) fn retained_keys(&self) -> usize {
        self.keys.len()
    }

    /// The keys of `range` that existed at revision `rev`, in key order.
    ///
    /// `rev` must be retained (≥ the compaction revision); callers check.
    pub(crate) fn range_at<'s>(
        &'s self,
        range: &KeyRange,
        rev: i64,
    ) -> impl Iterator<Item = Visible<'s>> + 's {
        self.keys
            .range::<[u8], _>(range.bounds())
            .filter_map(move |(key, history)| {
                let (revision, stored) = history.at(rev)?;
                Some(Visible {
                    key,
                    revision,
                    stored,
                })
            })
    }

    /// The key as it is now.
    pub(crate) fn get(&self, key: &[u8]) -> Option<KeyValue> {
        let (key, history) = self.keys.get_key_value(key)?;
        let (revision, stored) = history.latest()?;
        Some(stored.to_kv(key, revision))
    }

    /// The key as it was at `rev`.
    #[cfg(test)]
    pub(crate) fn get_at(&self, key: &[u8], rev: i64) -> Option<KeyValue> {
        let (key, history) = self.keys.get_key_value(key)?;
        let (revision, stored) = history.at(rev)?;
        Some(stored.to_kv(key, revision))
    }

    /// Starts a write. See [`WriteTxn`].
    pub(crate) fn write(&mut self) -> WriteTxn<'_> {
        WriteTxn {
            begin: self.revision,
            store: self,
            events: Vec::new(),
        }
    }

    /// Compacts history at `rev`: reads below it fail from now on, and every
    /// change no read at `rev` or later can see is freed.
    ///
    /// # Errors
    ///
    /// [`EtcdError::Compacted`] if `rev` is not above the last compaction,
    /// [`EtcdError::FutureRevision`] if it is above the current revision.
    pub(crate) fn compact(&mut self, rev: i64) -> Result<(), EtcdError> {
        if rev <= self.compact_revision {
            return Err(EtcdError::Compacted);
        }
        if rev > self.revision {
            return Err(EtcdError::FutureRevision);
        }
        self.compact_revision = rev;
        self.keys.retain(|_, history| history.compact(rev));
        self.packed_len = self.packed_len.min(self.keys.len());
        let kept = self.log.partition_point(|&(main, _)| main < rev);
        self.log.drain(..kept);
        if self.log.len() < self.log.capacity() / 4 {
            self.log.shrink_to_fit();
        }
        Ok(())
    }

    /// Every retained change of every key, in revision order: the entries
    /// of etcd's `key` bucket (a tombstone's value is `None`).
    pub(crate) fn history(&self) -> Vec<(Revision, &Bytes, Option<KeyValue>)> {
        let mut entries: Vec<_> = self
            .keys
            .iter()
            .flat_map(|(key, history)| {
                history
                    .changes()
                    .map(move |(r, put)| (r, key, put.map(|put| put.to_kv(key, r))))
            })
            .collect();
        entries.sort_unstable_by_key(|&(revision, ..)| revision);
        entries
    }

    /// A store holding `history` (every retained change, in revision
    /// order, as [`Store::history`] gives them), compacted at
    /// `compact_revision` (-1 for never). Its revision is the last change's,
    /// or the compaction's if that is later. The change log watchers catch
    /// up from is rebuilt from the compaction revision on.
    pub(crate) fn restore(
        history: Vec<(Revision, Bytes, Option<KeyValue>)>,
        compact_revision: i64,
    ) -> Self {
        let mut store = Store {
            compact_revision,
            ..Store::default()
        };
        let mut by_key: BTreeMap<Bytes, Vec<(Revision, Option<KeyValue>)>> = BTreeMap::new();
        for (revision, key, kv) in history {
            store.revision = store.revision.max(revision.main);
            // The compaction revision's own changes stay: a watch may start
            // there.
            if revision.main >= compact_revision {
                store.log.push_back((revision.main, key.clone()));
            }
            by_key.entry(key).or_default().push((revision, kv));
        }
        store.revision = store.revision.max(compact_revision);
        // A compaction scheduled but not finished when the snapshot was
        // taken is finished now, as etcd's restore does.
        store.keys = by_key
            .into_iter()
            .filter_map(|(key, changes)| Some((key, KeyHistory::from_changes(changes)?)))
            .filter_map(|(key, mut history)| {
                (compact_revision < 0 || history.compact(compact_revision))
                    .then_some((key, history))
            })
            .collect();
        store.packed_len = store.keys.len();
        store
    }

    /// `Maintenance.HashKV`: etcd's crc32c (Castagnoli) of its `key` bucket
    /// up to revision `rev` (0: now), and the compaction revision (-1 if
    /// none). The bucket's entries are every change, keyed by revision
    /// (tombstones marked) and holding the `KeyValue` (a tombstone's holds
    /// only the key); etcd hashes `"key"` and then each entry at or below
    /// `rev` in revision order, skipping, at or below the compaction point,
    /// tombstones and puts a read at `rev` no longer sees (unless no key is
    /// visible at `rev` at all).
    ///
    /// # Errors
    ///
    /// [`EtcdError::FutureRevision`] past the current revision;
    /// [`EtcdError::Compacted`] below the compaction point (etcd 3.5.1
    /// refuses the compaction revision itself too; the 3.5 branch, which
    /// the fake follows, hashes it).
    pub(crate) fn hash_kv(&self, rev: i64) -> Result<(u32, i64), EtcdError> {
        let compacted = self.compact_revision;
        if rev > self.revision {
            return Err(EtcdError::FutureRevision);
        }
        if rev > 0 && rev < compacted {
            return Err(EtcdError::Compacted);
        }
        let rev = if rev == 0 { self.revision } else { rev };
        // A read at `rev` sees, for each key, its last change up to `rev`
        // if that is a put.
        let mut visible = std::collections::HashSet::new();
        for history in self.keys.values() {
            if let Some((revision, Some(_))) =
                history.changes().filter(|(r, _)| r.main <= rev).last()
            {
                visible.insert(revision);
            }
        }
        let any_visible = !visible.is_empty();
        let entries = self
            .history()
            .into_iter()
            .take_while(|(revision, ..)| revision.main <= rev)
            .map(|(revision, key, kv)| (revision, key, kv, visible.contains(&revision)));
        let mut hash = crc32c::crc32c(b"key");
        for (revision, key, kv, visible) in entries {
            let key: &Bytes = key;
            if revision.main <= compacted && (kv.is_none() || (any_visible && !visible)) {
                continue;
            }
            let value = match &kv {
                Some(kv) => kv.encode_to_vec(),
                None => KeyValue {
                    key: key.clone(),
                    ..Default::default()
                }
                .encode_to_vec(),
            };
            hash = crc32c::crc32c_append(hash, &revision.to_bucket_key(kv.is_none()));
            hash = crc32c::crc32c_append(hash, &value);
        }
        Ok((hash, compacted))
    }

    /// Rebuilds the key map from its sorted entries when it has grown by
    /// half since it was last built.
    ///
    /// std's B-tree splits a full node into two halves, and keys that
    /// arrive in ascending order (the way most tests load data) only ever
    /// land at the right edge, so every node they fill stays half full:
    /// some 60 bytes a key of empty slots. A tree built from sorted entries
    /// has its nodes full. Rebuilding at each growth by half keeps the
    /// cost amortized (three moves of an entry per insert), as a hash
    /// table's growth does, at a pause of about 0.1 s a million keys when
    /// it happens. `append` builds the new tree straight from the old
    /// one's entries, freeing old nodes as it goes; `collect` would first
    /// copy them all into a vector.
    fn repack_if_grown(&mut self) {
        /// Smaller maps are not worth a rebuild.
        const SMALLEST: usize = 4096;
        let len = self.keys.len();
        if len >= SMALLEST && 2 * len >= 3 * self.packed_len {
            let mut rebuilt = BTreeMap::new();
            if let Some((key, history)) = self.keys.pop_last() {
                rebuilt.insert(key, history);
            }
            rebuilt.append(&mut self.keys);
            self.keys = rebuilt;
            self.packed_len = len;
        }
    }

    /// The events, in order, of every write from revision `from` to `to`
    /// inclusive, of the keys `wanted` picks, each with the key's previous
    /// value if `with_prev` (and that is retained). Revisions below the
    /// compaction point are gone.
    pub(crate) fn events_between<'s>(
        &'s self,
        from: i64,
        to: i64,
        with_prev: bool,
        wanted: impl Fn(&[u8]) -> bool + 's,
    ) -> impl Iterator<Item = Event> + 's {
        // `start` is the first change of its revision, so the count of sub
        // revisions starts there.
        let start = self.log.partition_point(|&(main, _)| main < from);
        let end = self.log.partition_point(|&(main, _)| main <= to);
        // A bounded range, so that the iterator's size hint bounds how many
        // events there can be.
        self.log
            .range(start..end.max(start))
            .scan(None, |last: &mut Option<Revision>, &(main, ref key)| {
                let revision = match *last {
                    Some(last) if last.main == main => Revision::new(main, last.sub + 1),
                    _ => Revision::new(main, 0),
                };
                *last = Some(revision);
                Some((revision, key))
            })
            .filter(move |(_, key)| wanted(key))
            .filter_map(move |(revision, key)| self.event_at(revision, key, with_prev))
    }

    /// The event of the change of `key` at `revision`, rebuilt from the
    /// key's history, with the key's previous value if `with_prev`.
    fn event_at(&self, revision: Revision, key: &Bytes, with_prev: bool) -> Option<Event> {
        let history = self.keys.get(key)?;
        let change = history.change_at(revision)?;
        let prev_kv = with_prev
            .then(|| history.at(revision.main - 1))
            .flatten()
            .map(|(r, stored)| stored.to_kv(key, r));
        Some(match change {
            Some(put) => Event {
                r#type: EventType::Put as i32,
                kv: Some(put.to_kv(key, revision)),
                prev_kv,
            },
            None => Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: key.clone(),
                    mod_revision: revision.main,
                    ..Default::default()
                }),
                prev_kv,
            },
        })
    }
}

/// A write in progress: one request, or one txn.
///
/// Changes go straight into the store, under the revision after the one the
/// write started from; the store takes that revision at the first change. So
/// reads through [`WriteTxn::store`] see earlier changes of the same txn, and a
/// write that changes nothing leaves the revision alone. Callers validate
/// everything that can fail before the first change: a txn is all or nothing.
#[derive(Debug)]
pub(crate) struct WriteTxn<'s> {
    store: &'s mut Store,
    /// The revision the write started from.
    begin: i64,
    events: Vec<Event>,
}

impl WriteTxn<'_> {
    /// The store, including the changes made so far.
    pub(crate) fn store(&self) -> &Store {
        self.store
    }

    /// Whether anything has changed yet.
    fn changed(&self) -> bool {
        !self.events.is_empty()
    }

    fn next_revision(&mut self) -> Revision {
        if !self.changed() {
            self.store.revision += 1;
        }
        Revision::new(self.store.revision, self.events.len() as i64)
    }

    /// Puts `key`, returning the previous value if there was one.
    ///
    /// The store keeps copies of the key and value, not the request's
    /// slices: a slice keeps its whole buffer alive (all of a txn's
    /// request, and the decoder's spare room), which cost a million-key
    /// store about 250 bytes a key.
    pub(crate) fn put(&mut self, key: Bytes, value: Bytes, lease: i64) -> Option<KeyValue> {
        let revision = self.next_revision();
        let begin = self.begin;
        // An entry is one descent of the tree (a range of the one key would
        // search each node twice, for its start and for its end); when the
        // key is new it hands the caller's key back, for the store's copy.
        let key = match self.store.keys.entry(key) {
            Entry::Occupied(mut found) => {
                let stored_key = found.key().clone();
                let history = found.get_mut();
                let prev = history
                    .latest()
                    .map(|(r, stored)| stored.to_kv(&stored_key, r));
                // What a watcher's `prev_kv` shows: the key before this write.
                let before = history
                    .at(begin)
                    .map(|(r, stored)| stored.to_kv(&stored_key, r));
                let stored = Stored {
                    create_revision: prev.as_ref().map_or(revision.main, |p| p.create_revision),
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                    lease,
                    value: Bytes::copy_from_slice(&value),
                };
                let kv = stored.to_kv(&stored_key, revision);
                history.put(revision, stored);
                self.events.push(Event {
                    r#type: EventType::Put as i32,
                    kv: Some(kv),
                    prev_kv: before,
                });
                return prev;
            }
            Entry::Vacant(vacant) => vacant.into_key(),
        };
        let (key, value) = copy_new(&key, &value);
        let stored = Stored {
            create_revision: revision.main,
            version: 1,
            lease,
            value,
        };
        let kv = stored.to_kv(&key, revision);
        self.store
            .keys
            .insert(key, KeyHistory::created(revision, stored));
        self.store.repack_if_grown();
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: None,
        });
        None
    }

    /// Deletes every live key of `range`, in key order, returning what was
    /// deleted. One pass over the range: each key's history is found once
    /// (a lease's expiry deletes its keys one by one, a hundred thousand in
    /// one `advance` for some tests).
    pub(crate) fn delete_range(&mut self, range: &KeyRange) -> Vec<KeyValue> {
        let store = &mut *self.store;
        let rev = store.revision;
        let mut deleted = Vec::new();
        for (key, history) in store.keys.range_mut::<[u8], _>(range.bounds()) {
            let Some(prev) = history.at(rev).map(|(r, stored)| stored.to_kv(key, r)) else {
                continue;
            };
            record_delete(
                &mut self.events,
                &mut store.revision,
                self.begin,
                key,
                history,
            );
            deleted.push(prev);
        }
        deleted
    }

    /// Deletes `key` if it is live, as a `delete_range` of it would, but
    /// without copying out what it deleted: a lease's expiry tells only
    /// watchers, through the events.
    pub(crate) fn delete(&mut self, key: &[u8]) {
        let store = &mut *self.store;
        let found = store
            .keys
            .range_mut::<[u8], _>((Bound::Included(key), Bound::Included(key)))
            .next();
        if let Some((key, history)) = found {
            if history.latest().is_some() {
                record_delete(
                    &mut self.events,
                    &mut store.revision,
                    self.begin,
                    key,
                    history,
                );
            }
        }
    }

    /// Ends the write, returning its events in the order they happened (empty
    /// if nothing changed), and keeps them for watchers that catch up later.
    /// Each event carries the key's previous value.
    pub(crate) fn into_events(self) -> Vec<Event> {
        let main = self.store.revision;
        self.store.log.extend(
            self.events
                .iter()
                .filter_map(|event| Some((main, event.kv.as_ref()?.key.clone()))),
        );
        self.events
    }
}

/// Records the delete of a live `key` in a write that began at `begin`:
/// its tombstone at the write's revision (taken at its first change), and
/// its event.
fn record_delete(
    events: &mut Vec<Event>,
    revision: &mut i64,
    begin: i64,
    key: &Bytes,
    history: &mut KeyHistory,
) {
    // What a watcher's `prev_kv` shows: the key before this write.
    let before = history.at(begin).map(|(r, stored)| stored.to_kv(key, r));
    if events.is_empty() {
        *revision += 1;
    }
    let at = Revision::new(*revision, events.len() as i64);
    history.tombstone(at);
    events.push(Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue {
            key: key.clone(),
            mod_revision: at.main,
            ..Default::default()
        }),
        prev_kv: before,
    });
}

/// A new key and its first value, copied: into one allocation when the
/// value is small (most are), so the two cost one allocation and one
/// shared header; a large value gets its own, so that the key, which lives
/// as long as the key's history, does not keep it alive once overwritten.
fn copy_new(key: &[u8], value: &[u8]) -> (Bytes, Bytes) {
    const SHARED_UP_TO: usize = 256;
    if value.len() > SHARED_UP_TO {
        return (Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
    }
    let mut both = BytesMut::with_capacity(key.len() + value.len());
    both.extend_from_slice(key);
    both.extend_from_slice(value);
    let both = both.freeze();
    (both.slice(..key.len()), both.slice(key.len()..))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn keys_at(store: &Store, range: &KeyRange, rev: i64) -> Vec<String> {
        store
            .range_at(range, rev)
            .map(|kv| String::from_utf8_lossy(kv.key).into_owned())
            .collect()
    }

    #[test]
    fn range_end_rules() {
        assert_eq!(KeyRange::new(&b("a"), &b("")), KeyRange::Single(b("a")));
        assert_eq!(
            KeyRange::new(&b("a"), &Bytes::from_static(b"\0")),
            KeyRange::From(b("a"))
        );
        assert_eq!(
            KeyRange::new(&b("a"), &b("c")),
            KeyRange::Between(b("a"), b("c"))
        );
        assert_eq!(KeyRange::new(&b("c"), &b("a")), KeyRange::Empty);
        assert_eq!(KeyRange::new(&b("a"), &b("a")), KeyRange::Empty);
    }

    #[test]
    fn an_empty_range_reads_nothing() {
        let mut store = Store::default();
        store.write().put(b("a"), b("1"), 0);
        assert_eq!(store.range_at(&KeyRange::Empty, 2).count(), 0);
    }

    #[test]
    fn one_revision_per_write_and_none_for_a_noop() {
        let mut store = Store::default();
        assert_eq!(store.revision(), 1);
        let mut txn = store.write();
        txn.put(b("a"), b("1"), 0);
        txn.put(b("b"), b("2"), 0);
        let events = txn.into_events();
        assert_eq!(events.len(), 2);
        assert_eq!(store.revision(), 2);

        let mut txn = store.write();
        assert!(txn.delete_range(&KeyRange::Single(b("missing"))).is_empty());
        assert!(txn.into_events().is_empty());
        assert_eq!(store.revision(), 2);
    }

    #[test]
    fn deleting_one_key_is_a_delete_range_of_it() {
        let mut store = Store::default();
        let mut write = store.write();
        write.put(b("a"), b("1"), 0);
        write.put(b("b"), b("2"), 0);
        write.into_events();

        let mut write = store.write();
        write.delete(b"missing");
        assert!(write.into_events().is_empty(), "nothing changed");
        assert_eq!(store.revision(), 2);

        let mut write = store.write();
        write.put(b("a"), b("3"), 0);
        write.delete(b"a");
        write.delete(b"b");
        write.delete(b"b");
        let events = write.into_events();
        assert_eq!(store.revision(), 3, "one revision for the whole write");
        let seen: Vec<_> = events
            .iter()
            .map(|e| {
                let kv = e.kv.as_ref().unwrap();
                let prev = e.prev_kv.as_ref().map(|p| p.value.clone());
                (e.r#type, kv.key.clone(), kv.mod_revision, prev)
            })
            .collect();
        let delete = EventType::Delete as i32;
        assert_eq!(
            seen,
            [
                (EventType::Put as i32, b("a"), 3, Some(b("1"))),
                // A watcher's prev_kv is the key before the write.
                (delete, b("a"), 3, Some(b("1"))),
                (delete, b("b"), 3, Some(b("2"))),
            ]
        );
        assert!(store.get(b"a").is_none() && store.get(b"b").is_none());
        let replayed: Vec<Event> = store.events_between(3, 3, true, |_| true).collect();
        assert_eq!(&replayed[..], &events[..], "the change log rebuilds them");
    }

    #[test]
    fn versions_and_generations() {
        let mut store = Store::default();
        store.write().put(b("k"), b("1"), 0);
        store.write().put(b("k"), b("2"), 0);
        let kv = store.get(b"k").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        store.write().delete_range(&KeyRange::Single(b("k")));
        assert!(store.get(b"k").is_none());
        store.write().put(b("k"), b("3"), 0);
        let kv = store.get(b"k").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
        assert_eq!(&store.get_at(b"k", 3).unwrap().value[..], b"2");
    }

    #[test]
    fn reads_at_old_revisions_and_compaction() {
        let mut store = Store::default();
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            store.write().put(b(k), b(&i.to_string()), 0);
        }
        store.write().delete_range(&KeyRange::Single(b("b")));
        let all = KeyRange::From(Bytes::from_static(b"\0"));
        assert_eq!(keys_at(&store, &all, 3), ["a", "b"]);
        assert_eq!(keys_at(&store, &all, 5), ["a", "c"]);

        assert_eq!(store.compact(6), Err(EtcdError::FutureRevision));
        store.compact(5).unwrap();
        assert_eq!(store.compact(5), Err(EtcdError::Compacted));
        assert_eq!(
            store.retained_keys(),
            3,
            "b's tombstone at the compaction point stays"
        );
        assert_eq!(keys_at(&store, &all, 5), ["a", "c"]);

        store.write().put(b("d"), b("3"), 0);
        store.compact(6).unwrap();
        assert_eq!(store.retained_keys(), 3, "b's history is freed");
        assert_eq!(keys_at(&store, &all, 6), ["a", "c", "d"]);
    }

    #[test]
    fn rebuilt_events_carry_prev_kv_only_while_it_is_retained() {
        let prev_of_the_event_at_5 = |compact_at: i64| {
            let mut store = Store::default();
            for (key, value) in [("k", "1"), ("other", "x"), ("other", "y"), ("k", "2")] {
                let mut write = store.write();
                write.put(b(key), b(value), 0);
                write.into_events();
            }
            assert_eq!(store.revision(), 5);
            store.compact(compact_at).unwrap();
            let events: Vec<Event> = store.events_between(5, 5, true, |_| true).collect();
            assert_eq!(events.len(), 1);
            events[0].prev_kv.as_ref().map(|kv| kv.value.clone())
        };
        // Revision 4 is still readable after a compaction at 4, not at 5.
        assert_eq!(prev_of_the_event_at_5(4), Some(b("1")));
        assert_eq!(prev_of_the_event_at_5(5), None);
    }

    #[test]
    fn the_key_map_rebuilt_dense_keeps_every_key_and_its_history() {
        let key = |i: usize| Bytes::from(format!("k{i:05}"));
        let mut store = Store::default();
        for i in 0..7000 {
            store.write().put(key(i), b("1"), 0);
        }
        for i in (0..7000).step_by(3) {
            store.write().put(key(i), b("2"), 0);
        }
        assert_eq!(store.packed_len, 6144, "rebuilt at 4096 and at 6144 keys");
        let all = KeyRange::From(Bytes::from_static(b"\0"));
        let now = store.revision();
        assert_eq!(store.range_at(&all, now).count(), 7000);
        for i in 0..7000 {
            let kv = store.get(&key(i)).unwrap();
            let expected: &[u8] = if i % 3 == 0 { b"2" } else { b"1" };
            assert_eq!(
                (&kv.value[..], kv.create_revision),
                (expected, i as i64 + 2)
            );
        }
        assert_eq!(&store.get_at(&key(0), 2).unwrap().value[..], b"1");
    }

    #[test]
    fn compacting_revision_zero_succeeds_once() {
        let mut store = Store::default();
        store.compact(0).unwrap();
        assert_eq!(store.compact(0), Err(EtcdError::Compacted));
    }
}
