//! The retained history of one key.
//!
//! Every change to a key is kept, oldest first, until compaction trims it. A
//! change is either a put (what it stored: value, lease, version and create
//! revision) or a tombstone (the key was deleted, ending its *generation*: the next put starts
//! again at version 1 with a new create revision).
//!
//! A worked example, in etcd's notation (`main.sub`):
//!
//! ```text
//! put(2.0) put(3.0) tombstone(4.0) put(6.0)
//! read at 1 → absent      read at 3 → the put of 3.0     read at 5 → absent
//! compact(3) keeps put(3.0) (the value visible at 3) and everything after it
//! compact(5) drops put(2.0), put(3.0) and tombstone(4.0): nothing before 5 is
//!            visible at 5, and a tombstone older than the compaction point
//!            has nothing left to tell
//! compact(4) keeps tombstone(4.0): a watcher starting at 4 must see it
//! ```

use bytes::Bytes;
use etcd_proto::mvccpb::KeyValue;

use crate::revision::Revision;

/// A put as the history keeps it: a `KeyValue` without the key (the store's
/// map holds it once for every change) and without the mod revision (the
/// change's own). 56 bytes instead of a `KeyValue`'s 96, for every change
/// of every key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) create_revision: i64,
    pub(crate) version: i64,
    pub(crate) lease: i64,
    pub(crate) value: Bytes,
}

impl Stored {
    /// What the history keeps of a put's `KeyValue`.
    pub(crate) fn of(kv: KeyValue) -> Self {
        Self {
            create_revision: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
            value: kv.value,
        }
    }

    /// The put's `KeyValue` again.
    pub(crate) fn to_kv(&self, key: &Bytes, revision: Revision) -> KeyValue {
        KeyValue {
            key: key.clone(),
            create_revision: self.create_revision,
            mod_revision: revision.main,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }
}

/// One change of a key: `Some` for a put, `None` for a tombstone.
#[derive(Debug, Clone)]
struct Change {
    revision: Revision,
    put: Option<Stored>,
}

/// The history of one key, oldest change first; never empty.
#[derive(Debug, Clone)]
pub(crate) struct KeyHistory {
    changes: Vec<Change>,
}

impl KeyHistory {
    /// A history that starts with a put.
    pub(crate) fn created(revision: Revision, put: Stored) -> Self {
        Self {
            changes: vec![Change {
                revision,
                put: Some(put),
            }],
        }
    }

    /// The key as it was at store revision `rev`, if it existed then, and
    /// the revision of that put.
    ///
    /// Every write, and most reads, ask at the current revision: the answer
    /// is the last change, found without a search. A search touches a cache
    /// line at each step, and cold ones: with a few dozen changes a key, it
    /// was most of a put's own time in the store.
    pub(crate) fn at(&self, rev: i64) -> Option<(Revision, &Stored)> {
        let change = match self.changes.last() {
            Some(last) if last.revision.main <= rev => last,
            _ => {
                let newer = self.changes.partition_point(|c| c.revision.main <= rev);
                &self.changes[newer.checked_sub(1)?]
            }
        };
        Some((change.revision, change.put.as_ref()?))
    }

    /// The key as it is now, if it exists.
    pub(crate) fn latest(&self) -> Option<(Revision, &Stored)> {
        let change = self.changes.last()?;
        Some((change.revision, change.put.as_ref()?))
    }

    /// The change made at exactly `revision`: `Some(None)` for a tombstone,
    /// `None` if the key did not change then (or that is compacted).
    pub(crate) fn change_at(&self, revision: Revision) -> Option<Option<&Stored>> {
        let i = self
            .changes
            .binary_search_by_key(&revision, |c| c.revision)
            .ok()?;
        Some(self.changes[i].put.as_ref())
    }

    /// Records a put. `revision` must be newer than every recorded change.
    pub(crate) fn put(&mut self, revision: Revision, put: Stored) {
        debug_assert!(self.changes.last().is_none_or(|c| c.revision < revision));
        self.grow();
        self.changes.push(Change {
            revision,
            put: Some(put),
        });
    }

    /// Records a delete. `revision` must be newer than every recorded change.
    pub(crate) fn tombstone(&mut self, revision: Revision) {
        debug_assert!(self.changes.last().is_none_or(|c| c.revision < revision));
        self.grow();
        self.changes.push(Change {
            revision,
            put: None,
        });
    }

    /// Makes room for one more change. Most keys change once or twice: the
    /// first growth is to two changes, not to the four a vector would
    /// take; after that the vector doubles as usual.
    fn grow(&mut self) {
        if self.changes.len() == self.changes.capacity() && self.changes.capacity() < 2 {
            self.changes.reserve_exact(1);
        }
    }

    /// Forgets every change that no read at `at` or later can see. Returns
    /// `false` when nothing is left, so the key can be forgotten entirely.
    pub(crate) fn compact(&mut self, at: i64) -> bool {
        let visible_at = self.changes.partition_point(|c| c.revision.main <= at);
        let Some(last_before) = visible_at.checked_sub(1) else {
            return true;
        };
        let c = &self.changes[last_before];
        // A tombstone exactly at the compaction point is kept so a watch
        // starting there still sees the delete (etcd ≥ 3.5.16).
        let keep_from = if c.put.is_none() && c.revision.main < at {
            last_before + 1
        } else {
            last_before
        };
        self.changes.drain(..keep_from);
        // A key overwritten a thousand times and compacted gives back what
        // its history held.
        self.changes.shrink_to_fit();
        !self.changes.is_empty()
    }

    /// A history of retained changes, oldest first, as a snapshot holds
    /// them (it may start with a tombstone at the compaction point).
    /// `None` if there are none.
    pub(crate) fn from_changes(changes: Vec<(Revision, Option<KeyValue>)>) -> Option<Self> {
        let changes: Vec<Change> = changes
            .into_iter()
            .map(|(revision, kv)| Change {
                revision,
                put: kv.map(Stored::of),
            })
            .collect();
        (!changes.is_empty()).then_some(Self { changes })
    }

    /// Every retained change, oldest first: its revision, and what was put
    /// (`None` for a tombstone).
    pub(crate) fn changes(&self) -> impl Iterator<Item = (Revision, Option<&Stored>)> {
        self.changes.iter().map(|c| (c.revision, c.put.as_ref()))
    }

    /// How many changes are retained.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.changes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(rev: i64, version: i64) -> Stored {
        Stored {
            create_revision: rev,
            version,
            lease: 0,
            value: Bytes::new(),
        }
    }

    /// The mod revision of what a read at `rev` sees.
    fn seen(h: &KeyHistory, rev: i64) -> Option<i64> {
        h.at(rev).map(|(revision, _)| revision.main)
    }

    /// The example from the module docs.
    fn example() -> KeyHistory {
        let mut h = KeyHistory::created(Revision::new(2, 0), kv(2, 1));
        h.put(Revision::new(3, 0), kv(3, 2));
        h.tombstone(Revision::new(4, 0));
        h.put(Revision::new(6, 0), kv(6, 1));
        h
    }

    #[test]
    fn reads_see_the_change_at_or_before_the_revision() {
        let h = example();
        assert_eq!(seen(&h, 1), None);
        assert_eq!(seen(&h, 2), Some(2));
        assert_eq!(seen(&h, 3), Some(3));
        assert_eq!(seen(&h, 4), None);
        assert_eq!(seen(&h, 5), None);
        assert_eq!(seen(&h, 6), Some(6));
        assert_eq!(seen(&h, 7), Some(6));
        assert_eq!(h.latest().unwrap().0.main, 6);
        assert_eq!(h.at(3).unwrap().1.version, 2);
    }

    #[test]
    fn reads_at_or_after_the_last_change_see_it_and_earlier_reads_search() {
        // A long history ending in a tombstone, then a put: every read
        // agrees with a search of the whole history.
        let mut h = KeyHistory::created(Revision::new(10, 0), kv(10, 1));
        for rev in (12..400).step_by(2) {
            h.put(Revision::new(rev, 1), kv(10, rev));
        }
        let searched = |h: &KeyHistory, rev: i64| {
            let newer = h.changes.partition_point(|c| c.revision.main <= rev);
            let change = &h.changes[newer.checked_sub(1)?];
            change.put.as_ref().map(|_| change.revision.main)
        };
        h.tombstone(Revision::new(400, 0));
        for rev in 0..410 {
            assert_eq!(seen(&h, rev), searched(&h, rev), "at {rev}");
        }
        assert_eq!(seen(&h, 400), None);
        h.put(Revision::new(405, 0), kv(405, 1));
        for rev in 0..410 {
            assert_eq!(seen(&h, rev), searched(&h, rev), "at {rev}");
        }
        assert_eq!(seen(&h, 404), None);
        assert_eq!(seen(&h, 405), Some(405));
        assert_eq!(seen(&h, 399), Some(398));
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_after_it_see() {
        let mut h = example();
        assert!(h.compact(3));
        assert_eq!(h.len(), 3);
        assert_eq!(seen(&h, 3), Some(3));

        let mut h = example();
        assert!(h.compact(4));
        assert_eq!(h.len(), 2, "the tombstone at the compaction point stays");

        let mut h = example();
        assert!(h.compact(5));
        assert_eq!(h.len(), 1);
        assert_eq!(seen(&h, 5), None);
        assert_eq!(seen(&h, 6), Some(6));
    }

    #[test]
    fn the_change_at_a_revision_is_found_exactly() {
        let h = example();
        assert!(matches!(h.change_at(Revision::new(3, 0)), Some(Some(_))));
        assert!(matches!(h.change_at(Revision::new(4, 0)), Some(None)));
        assert!(h.change_at(Revision::new(5, 0)).is_none());
        assert!(h.change_at(Revision::new(3, 1)).is_none());
    }

    #[test]
    fn a_key_deleted_before_the_compaction_point_is_forgotten() {
        let mut h = KeyHistory::created(Revision::new(2, 0), kv(2, 1));
        h.tombstone(Revision::new(3, 0));
        assert!(
            h.compact(3),
            "kept: the tombstone is at the compaction point"
        );
        assert!(!h.compact(4));
    }
}
