//! The multi-version key-value store.
//!
//! [`Store`] keeps, for every key, its [`KeyHistory`]: each put and delete
//! since the last compaction, stamped with its [`Revision`](crate::revision::Revision).
//! Keys sit in an ordered map, so a range over `k` keys costs `O(log n + k)`
//! whatever the store's size, and a read at an old revision is a binary search
//! in each key's history.
//!
//! Writes go through a [`WriteTxn`]: all changes of one request or txn share
//! one main revision, which the store takes on the first change (a write that
//! changes nothing does not bump the revision). Because changes land in the
//! store as they are made, reads later in the same txn see them, as in etcd.
//! The txn returns the events it produced, for watchers.

mod key_history;
mod store;

pub(crate) use store::{KeyRange, Store, WriteTxn};
