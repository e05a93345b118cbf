//! The KV requests: what `Range`, `Put`, `DeleteRange`, `Txn` and `Compact`
//! mean, on top of the [store](crate::mvcc).
//!
//! As in etcd, a request is checked in two stages. [`validate`] holds the
//! checks etcd makes when a request arrives (`v3rpc/key.go`): empty keys, op
//! counts, overlapping keys in a txn; they need no state. [`apply`] holds what
//! etcd does when it applies the request (`etcdserver/apply.go`): the checks
//! that need the store (missing leases, `ignore_*` on missing keys, compacted
//! or future revisions), then the change itself. Every check of a request runs
//! before its first change, so a failed request changes nothing.

pub(crate) mod apply;
pub(crate) mod go_sort;
pub(crate) mod validate;

use bytes::Bytes;

/// What KV writes need from the lessor: whether a lease exists, and which keys
/// are attached to it (so revoking or expiring the lease deletes them).
pub(crate) trait LeaseAttachments {
    /// Whether the lease exists (and has not expired).
    fn exists(&self, lease: i64) -> bool;
    /// Records that `key` now belongs to `lease`.
    fn attach(&mut self, lease: i64, key: &Bytes);
    /// Records that `key` no longer belongs to `lease`.
    fn detach(&mut self, lease: i64, key: &Bytes);
}
