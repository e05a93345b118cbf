//! Leases: grants, keepalives, and expiry from a deadline queue.
//!
//! The [`Lessor`] knows each lease's TTL, deadline and attached keys. It never
//! deletes keys itself: revoking or expiring a lease hands its keys to the
//! core, which deletes them through the store in one write (so watchers see
//! the DELETE events, as etcd's lessor goes through a `RangeDeleter`).
//! Deadlines sit in an ordered queue, so finding what is due costs
//! `O(log n)` per expired lease, never a scan of every lease.

mod lessor;

pub(crate) use lessor::{Lease, LeaseError, LeaseKeys, Lessor};
