//! Watchers: who is told about which writes, and how they catch up.
//!
//! The [`WatchHub`] lives in the core, under the same lock as the store, so
//! a write and its notification are one step: no watcher can miss a write or
//! see it twice. Each watch stream has a bounded outbox (etcd's 128 items).
//! Every watcher is in one of three states, as in etcd's `watchable_store`:
//!
//! - **synced**: it has seen everything up to the current revision. It sits
//!   in an index by key (exact keys, prefixes, other ranges; see `index`),
//!   so a write finds the watchers it matches without testing the others.
//!   The write queues one delivery per stream with a non-blocking send; the
//!   stream's sender unpacks it into one response per watcher (see
//!   `delivery`), so the writer's cost does not grow with the watchers.
//! - **unsynced**: it starts in the past, or its outbox was full when a write
//!   came (a slow consumer). It is caught up from the store's retained
//!   history, up to 1000 revisions per response, when its stream drains; a
//!   writer never waits for it, and no events pile up for it in memory.
//! - **compacted**: it needs history that compaction removed; it is told so
//!   once and then holds on to its ID only.
//!
//! New watchers start unsynced, so the `created` response always reaches the
//! client before the watcher's first event.
//!
//! The hub speaks in `WatchResponse`s and deliveries only: how a stream ends
//! with an error is the Watch service's business, not the hub's.

mod delivery;
mod frame;
mod hub;
mod index;

pub(crate) use delivery::{Outgoing, Unpacker};
pub(crate) use frame::WatchFrame;
pub(crate) use hub::{
    prefix_range_end, Context, Outbox, StreamId, WatchHub, MAX_PROGRESS_INTERVAL,
    MIN_PROGRESS_INTERVAL, STREAM_BUFFER,
};
