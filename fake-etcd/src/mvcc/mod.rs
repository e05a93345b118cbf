//! The multi-version key-value store.
//!
//! [`Store`] keeps, for every key, its history (`key_history`): each put
//! and delete since the last compaction, stamped with its
//! [`Revision`](crate::revision::Revision). A put keeps what it stored
//! (value, lease, version, create revision), not a whole `KeyValue`: the
//! key is the map's, and the mod revision the change's own. Keys sit in an
//! ordered map, so a range over `k` keys costs `O(log n + k)` whatever the
//! store's size, and a read at an old revision is a binary search in each
//! key's history. Keys and values are copies, never slices of a request's
//! buffer, which would keep all of it alive.
//!
//! Writes go through a [`WriteTxn`]: all changes of one request or txn share
//! one main revision, which the store takes on the first change (a write that
//! changes nothing does not bump the revision). Because changes land in the
//! store as they are made, reads later in the same txn see them, as in etcd.
//! The txn returns the events it produced, for watchers, and adds each
//! change's revision and key to the store's change log, from which a watcher
//! that fell behind catches up ([`Store::events_between`] rebuilds the
//! events from the histories).

mod key_history;
mod store;

pub(crate) use store::{KeyRange, Store, WriteTxn};
