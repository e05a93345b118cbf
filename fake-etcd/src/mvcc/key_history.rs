//! The retained history of one key.
//!
//! Every change to a key is kept, oldest first, until compaction trims it. A
//! change is either a put (the full `KeyValue` as of that revision) or a
//! tombstone (the key was deleted, ending its *generation*: the next put starts
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

use etcd_proto::mvccpb::KeyValue;

use crate::revision::Revision;

/// One change of a key: `Some` for a put, `None` for a tombstone.
#[derive(Debug, Clone)]
struct Change {
    revision: Revision,
    kv: Option<KeyValue>,
}

/// The history of one key, oldest change first; never empty.
#[derive(Debug, Clone)]
pub(crate) struct KeyHistory {
    changes: Vec<Change>,
}

impl KeyHistory {
    /// A history that starts with a put.
    pub(crate) fn created(revision: Revision, kv: KeyValue) -> Self {
        Self {
            changes: vec![Change {
                revision,
                kv: Some(kv),
            }],
        }
    }

    /// The key as it was at store revision `rev`, if it existed then.
    pub(crate) fn at(&self, rev: i64) -> Option<&KeyValue> {
        let newer = self.changes.partition_point(|c| c.revision.main <= rev);
        newer
            .checked_sub(1)
            .and_then(|i| self.changes[i].kv.as_ref())
    }

    /// The key as it is now, if it exists.
    pub(crate) fn latest(&self) -> Option<&KeyValue> {
        self.changes.last().and_then(|c| c.kv.as_ref())
    }

    /// Records a put. `revision` must be newer than every recorded change.
    pub(crate) fn put(&mut self, revision: Revision, kv: KeyValue) {
        debug_assert!(self.changes.last().is_none_or(|c| c.revision < revision));
        self.changes.push(Change {
            revision,
            kv: Some(kv),
        });
    }

    /// Records a delete. `revision` must be newer than every recorded change.
    pub(crate) fn tombstone(&mut self, revision: Revision) {
        debug_assert!(self.changes.last().is_none_or(|c| c.revision < revision));
        self.changes.push(Change { revision, kv: None });
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
        let keep_from = if c.kv.is_none() && c.revision.main < at {
            last_before + 1
        } else {
            last_before
        };
        self.changes.drain(..keep_from);
        !self.changes.is_empty()
    }

    /// A history of retained changes, oldest first, as a snapshot holds
    /// them (it may start with a tombstone at the compaction point).
    /// `None` if there are none.
    pub(crate) fn from_changes(changes: Vec<(Revision, Option<KeyValue>)>) -> Option<Self> {
        let changes: Vec<Change> = changes
            .into_iter()
            .map(|(revision, kv)| Change { revision, kv })
            .collect();
        (!changes.is_empty()).then_some(Self { changes })
    }

    /// Every retained change, oldest first: its revision, and the key's
    /// value for a put (`None` for a tombstone).
    pub(crate) fn changes(&self) -> impl Iterator<Item = (Revision, Option<&KeyValue>)> {
        self.changes.iter().map(|c| (c.revision, c.kv.as_ref()))
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

    fn kv(rev: i64, version: i64) -> KeyValue {
        KeyValue {
            key: "k".into(),
            create_revision: rev,
            mod_revision: rev,
            version,
            ..Default::default()
        }
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
        assert!(h.at(1).is_none());
        assert_eq!(h.at(2).unwrap().mod_revision, 2);
        assert_eq!(h.at(3).unwrap().mod_revision, 3);
        assert!(h.at(4).is_none());
        assert!(h.at(5).is_none());
        assert_eq!(h.at(6).unwrap().mod_revision, 6);
        assert_eq!(h.latest().unwrap().mod_revision, 6);
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_after_it_see() {
        let mut h = example();
        assert!(h.compact(3));
        assert_eq!(h.len(), 3);
        assert_eq!(h.at(3).unwrap().mod_revision, 3);

        let mut h = example();
        assert!(h.compact(4));
        assert_eq!(h.len(), 2, "the tombstone at the compaction point stays");

        let mut h = example();
        assert!(h.compact(5));
        assert_eq!(h.len(), 1);
        assert!(h.at(5).is_none());
        assert_eq!(h.at(6).unwrap().mod_revision, 6);
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
