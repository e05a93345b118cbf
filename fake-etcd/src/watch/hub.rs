//! The watch hub: streams, watchers, the index of synced watchers, catch-up
//! and progress notifications. See the [module docs](super).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use etcd_proto::mvccpb::Event;
use tokio::sync::mpsc;

use super::delivery::{
    split, Delivery, Interest, Outgoing, Part, Recipients, Subscriber, WatcherKey,
};
use super::index::{Reached, SyncedIndex};
use crate::error::EtcdError;
use crate::header::HeaderSource;
use crate::mvcc::{KeyRange, Store};

/// Items a stream may have queued before its watchers count as slow
/// (etcd's `chanBufLen`, which counts responses; here a write's events for
/// all of a stream's watchers are one item, see [`Delivery`]).
pub(crate) const STREAM_BUFFER: usize = 128;

/// Where a stream's responses go.
pub(crate) type Outbox = mpsc::Sender<Outgoing>;

/// A catch-up response covers at most this many revisions (etcd's
/// `watchBatchMaxRevs`).
const MAX_REVISIONS_PER_BATCH: i64 = 1000;

/// The shortest progress interval a hub takes: a tick per millisecond of
/// the member's clock is already more than any client asks for.
pub(crate) const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(1);
/// The longest: a year, far beyond any test, and far from overflowing the
/// clock's arithmetic.
pub(crate) const MAX_PROGRESS_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Identifies a watch stream within a member.
pub(crate) type StreamId = u64;

/// Where a watcher stands; [`transition`] changes it, and keeps the synced
/// index and the unsynced set in step with it (as does
/// [`WatchHub::deliver`], which sets a whole audience aside at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Registered; its `created` response is on the way.
    Creating,
    Unsynced,
    Synced,
    /// Told that its history is compacted; keeps its ID reserved.
    Compacted,
}

#[derive(Debug)]
struct Watcher {
    range: KeyRange,
    interest: Interest,
    start_revision: i64,
    /// The first revision this watcher has not been told about; for a
    /// synced watcher, the first it may be told about (writes do not move
    /// it: a synced watcher has seen every write up to the current one).
    next_revision: i64,
    state: State,
}

impl Watcher {
    /// The events this watcher is sent, from those of writes that matched
    /// its range: filters applied, `prev_kv` only if asked for and still
    /// retained.
    fn select(&self, events: impl Iterator<Item = Event>) -> Vec<Event> {
        // Room for as many events as the changes caught up (a thousand
        // revisions' worth, some 200 KB), reserved once: growing the vector
        // by doubling copied it into fresh pages at every step, a quarter
        // of a mass expiry's catch-up.
        const RESERVED_AT_MOST: usize = 4096;
        let most = events.size_hint().1.unwrap_or(0).min(RESERVED_AT_MOST);
        let mut selected = Vec::with_capacity(most);
        selected.extend(
            events
                .filter(|e| self.interest.wants(e))
                .map(|e| self.interest.shape(e)),
        );
        selected
    }

    /// How the synced index holds it.
    fn subscriber(&self, key: WatcherKey) -> Subscriber {
        Subscriber {
            key,
            from: self.next_revision,
            interest: self.interest,
        }
    }
}

#[derive(Debug)]
struct Stream {
    outbox: Outbox,
    watchers: BTreeMap<i64, Watcher>,
    next_auto_id: i64,
    progress_deadline: Duration,
    /// Set when a watcher of this stream fell behind; the stream's sender
    /// wakes the syncer once it has made room.
    lagging: Arc<AtomicBool>,
}

/// The start of a prefix range: `Some(p)` if `[start, end)` is exactly the
/// keys beginning with `p`.
pub(super) fn as_prefix(range: &KeyRange) -> Option<&Bytes> {
    match range {
        KeyRange::Between(start, end) if prefix_end(start).as_deref() == Some(&end[..]) => {
            Some(start)
        }
        _ => None,
    }
}

/// The first key after every key that starts with `prefix`, as clients
/// compute it; `None` when there is none (all bytes 0xff).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

/// The `range_end` of a request for every key under `prefix`, as clients
/// send it: [`prefix_end`], or `"\0"` (every key from `prefix` on) when
/// there is none.
pub(crate) fn prefix_range_end(prefix: &[u8]) -> Bytes {
    prefix_end(prefix).map_or_else(|| Bytes::from_static(b"\0"), Bytes::from)
}

/// Every watch stream and watcher of a member.
#[derive(Debug)]
pub(crate) struct WatchHub {
    streams: HashMap<StreamId, Stream>,
    synced: SyncedIndex,
    unsynced: BTreeSet<WatcherKey>,
    /// `(deadline, stream)` of every stream's next progress tick.
    progress_queue: BTreeSet<(Duration, StreamId)>,
    progress_interval: Duration,
    next_stream: StreamId,
}

/// What a hub call needs from the rest of the core.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub(crate) store: &'a Store,
    pub(crate) header: HeaderSource,
}

impl Context<'_> {
    /// The header of a watch response at `revision`.
    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(self.header.at(revision))
    }
}

/// Takes a watcher out of whichever of the synced index and the unsynced
/// set holds it (before it leaves its state or is removed).
fn unindex(
    synced: &mut SyncedIndex,
    unsynced: &mut BTreeSet<WatcherKey>,
    key: WatcherKey,
    w: &Watcher,
) {
    match w.state {
        State::Synced => synced.remove(&w.range, key.stream, key.id),
        State::Unsynced => {
            unsynced.remove(&key);
        }
        State::Creating | State::Compacted => {}
    }
}

/// Moves a watcher to state `to`, and into the synced index or the
/// unsynced set if `to` keeps it there.
fn transition(
    synced: &mut SyncedIndex,
    unsynced: &mut BTreeSet<WatcherKey>,
    key: WatcherKey,
    w: &mut Watcher,
    to: State,
) {
    if w.state == to {
        return;
    }
    unindex(synced, unsynced, key, w);
    match to {
        State::Synced => synced.insert(&w.range, w.subscriber(key)),
        State::Unsynced => {
            unsynced.insert(key);
        }
        State::Creating | State::Compacted => {}
    }
    w.state = to;
}

impl WatchHub {
    /// A hub whose progress notifications come every `progress_interval`,
    /// held within [`MIN_PROGRESS_INTERVAL`] and [`MAX_PROGRESS_INTERVAL`]
    /// (the builder refuses others before they get here).
    pub(crate) fn new(progress_interval: Duration) -> Self {
        Self {
            streams: HashMap::new(),
            synced: SyncedIndex::default(),
            unsynced: BTreeSet::new(),
            progress_queue: BTreeSet::new(),
            progress_interval: progress_interval
                .clamp(MIN_PROGRESS_INTERVAL, MAX_PROGRESS_INTERVAL),
            next_stream: 0,
        }
    }

    /// Whether any watcher waits to catch up.
    pub(crate) fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// How many watchers are open (compacted ones holding an ID included).
    pub(crate) fn watcher_count(&self) -> usize {
        self.streams.values().map(|s| s.watchers.len()).sum()
    }

    /// Opens a stream; its responses go to `outbox`. The returned flag is
    /// set when the stream has watchers waiting for room in the outbox.
    pub(crate) fn open_stream(
        &mut self,
        outbox: Outbox,
        now: Duration,
    ) -> (StreamId, Arc<AtomicBool>) {
        let id = self.next_stream;
        self.next_stream += 1;
        let lagging = Arc::new(AtomicBool::new(false));
        let progress_deadline = now + self.progress_interval;
        self.progress_queue.insert((progress_deadline, id));
        let stream = Stream {
            outbox,
            watchers: BTreeMap::new(),
            next_auto_id: 0,
            progress_deadline,
            lagging: Arc::clone(&lagging),
        };
        self.streams.insert(id, stream);
        (id, lagging)
    }

    /// Closes a stream and frees its watchers.
    pub(crate) fn close_stream(&mut self, stream: StreamId) {
        let Some(s) = self.streams.remove(&stream) else {
            return;
        };
        self.progress_queue.remove(&(s.progress_deadline, stream));
        let synced = s.watchers.iter().filter(|(_, w)| w.state == State::Synced);
        self.synced
            .remove_many(stream, synced.map(|(&id, w)| (&w.range, id)));
        for &id in s.watchers.keys() {
            self.unsynced.remove(&WatcherKey { stream, id });
        }
    }

    /// Handles a create request: the response to send, and the watcher to
    /// start once it is sent ([`WatchHub::created`]).
    pub(crate) fn create(
        &mut self,
        stream: StreamId,
        req: WatchCreateRequest,
        ctx: Context<'_>,
    ) -> (WatchResponse, Option<i64>) {
        let current = ctx.store.revision();
        let header = ctx.header(current);
        let refuse = |reason: EtcdError| WatchResponse {
            header,
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.message(),
            ..Default::default()
        };
        let Some(s) = self.streams.get_mut(&stream) else {
            return (refuse(EtcdError::WatcherRangeEmpty), None);
        };
        if req.start_revision < 0 {
            // etcd ≥ 3.5.24 refuses a negative start outright, before it
            // looks at the range.
            return (refuse(EtcdError::Compacted), None);
        }
        // Copies: the request's fields are slices of its whole buffer, which
        // a watcher would keep alive for as long as it watches.
        let key = if req.key.is_empty() {
            Bytes::from_static(b"\0")
        } else {
            Bytes::copy_from_slice(&req.key)
        };
        let range = KeyRange::new(&key, &Bytes::copy_from_slice(&req.range_end));
        if range == KeyRange::Empty {
            return (refuse(EtcdError::WatcherRangeEmpty), None);
        }
        let id = if req.watch_id == 0 {
            while s.watchers.contains_key(&s.next_auto_id) {
                s.next_auto_id += 1;
            }
            s.next_auto_id += 1;
            s.next_auto_id - 1
        } else if s.watchers.contains_key(&req.watch_id) {
            return (refuse(EtcdError::DuplicateWatchId), None);
        } else {
            req.watch_id
        };
        let filters = |f: i32| req.filters.contains(&f);
        let watcher = Watcher {
            range,
            interest: Interest {
                no_put: filters(0),
                no_delete: filters(1),
                prev_kv: req.prev_kv,
                fragment: req.fragment,
                progress_notify: req.progress_notify,
            },
            start_revision: req.start_revision,
            next_revision: if req.start_revision == 0 {
                current + 1
            } else {
                req.start_revision
            },
            state: State::Creating,
        };
        s.watchers.insert(id, watcher);
        let response = WatchResponse {
            header,
            watch_id: id,
            created: true,
            ..Default::default()
        };
        (response, Some(id))
    }

    /// Starts a watcher whose `created` response has been sent: it catches
    /// up from history, then follows new writes.
    pub(crate) fn created(&mut self, stream: StreamId, id: i64, ctx: Context<'_>) {
        let key = WatcherKey { stream, id };
        let Some(w) = self
            .streams
            .get_mut(&stream)
            .and_then(|s| s.watchers.get_mut(&id))
        else {
            return;
        };
        if w.state == State::Creating {
            transition(
                &mut self.synced,
                &mut self.unsynced,
                key,
                w,
                State::Unsynced,
            );
            self.sync_watcher(key, ctx);
        }
    }

    /// Handles a cancel request: the response to send, or `None` for an
    /// unknown ID (etcd answers nothing then).
    pub(crate) fn cancel(
        &mut self,
        stream: StreamId,
        id: i64,
        ctx: Context<'_>,
    ) -> Option<WatchResponse> {
        let w = self.streams.get_mut(&stream)?.watchers.remove(&id)?;
        unindex(
            &mut self.synced,
            &mut self.unsynced,
            WatcherKey { stream, id },
            &w,
        );
        Some(WatchResponse {
            header: ctx.header(ctx.store.revision()),
            watch_id: id,
            canceled: true,
            ..Default::default()
        })
    }

    /// Handles a progress request, as etcd ≥ 3.5.8 does: an answer with
    /// watch ID -1 only if every watcher of the stream is synced (none are
    /// sent for a stream without watchers).
    pub(crate) fn progress(&self, stream: StreamId, ctx: Context<'_>) -> Option<WatchResponse> {
        let s = self.streams.get(&stream)?;
        let current = ctx.store.revision();
        // A compacted watcher still counts, and is not synced (as in etcd).
        let mut watchers = s.watchers.values().peekable();
        watchers.peek()?;
        let all_synced = watchers.all(|w| w.state == State::Synced && current >= w.start_revision);
        all_synced.then(|| WatchResponse {
            header: ctx.header(current),
            watch_id: -1,
            ..Default::default()
        })
    }

    /// Tells the synced watchers a write matches about its events: one
    /// [`Delivery`] per stream, which the stream's sender unpacks into one
    /// response per watcher, with its events in the write's order. The
    /// writer's work is a lookup per event and a few words per stream; the
    /// index's audiences are shared, not copied. The watchers of a stream
    /// whose outbox is full fall back to catching up from history.
    pub(crate) fn publish(&mut self, events: Vec<Event>, ctx: Context<'_>) {
        if events.is_empty() || self.synced.is_empty() {
            return;
        }
        let several = events.len() > 1;
        let mut parts: Vec<(StreamId, Part)> = Vec::new();
        // Where each audience's part is, when a write has several events
        // (an audience of a prefix may match more than one).
        let mut part_of: HashMap<PartId, usize> = HashMap::new();
        for (i, event) in (0u32..).zip(events.iter()) {
            let Some(kv) = &event.kv else { continue };
            self.synced
                .reached_by(&kv.key, |Reached { stream, recipients }| {
                    if several {
                        let id = PartId::of(&recipients);
                        if let Some(&at) = part_of.get(&id) {
                            parts[at].1.events.push(i);
                            return;
                        }
                        part_of.insert(id, parts.len());
                    }
                    parts.push((
                        stream,
                        Part {
                            recipients,
                            events: vec![i],
                        },
                    ));
                });
        }
        if parts.is_empty() {
            return;
        }
        // Shared by the deliveries; a write no watcher matches (most, in
        // a busy test) never pays for the copy.
        let events: Arc<[Event]> = events.into();
        parts.sort_by_key(|(stream, _)| *stream);
        let revision = ctx.store.revision();
        let header = ctx.header(revision);
        let mut parts = parts.into_iter().peekable();
        while let Some((stream, part)) = parts.next() {
            let mut delivery = Delivery {
                header,
                revision,
                events: Arc::clone(&events),
                parts: vec![part],
            };
            while let Some((_, part)) = parts.next_if(|(next, _)| *next == stream) {
                delivery.parts.push(part);
            }
            self.deliver(stream, delivery);
        }
    }

    /// Queues a write's delivery to one stream, or, if its outbox is full,
    /// sets the delivery's watchers aside to catch up from its revision on.
    fn deliver(&mut self, stream: StreamId, delivery: Delivery) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let Err(refused) = s.outbox.try_send(Outgoing::Delivery(delivery)) else {
            return;
        };
        let Outgoing::Delivery(delivery) = refused.into_inner() else {
            return;
        };
        s.lagging.store(true, Ordering::Release);
        let mut leaving = Vec::new();
        for recipient in delivery.recipients() {
            let id = recipient.key.id;
            let Some(w) = s.watchers.get_mut(&id) else {
                continue;
            };
            if w.state == State::Synced {
                w.next_revision = delivery.revision;
                w.state = State::Unsynced;
                self.unsynced.insert(recipient.key);
                leaving.push((w.range.clone(), id));
            }
        }
        // One pass over each audience, however many of its watchers leave.
        self.synced
            .remove_many(stream, leaving.iter().map(|(range, id)| (range, *id)));
    }

    /// Catches unsynced watchers up as far as their outboxes allow.
    pub(crate) fn sync(&mut self, ctx: Context<'_>) {
        let pending: Vec<WatcherKey> = self.unsynced.iter().copied().collect();
        for key in pending {
            self.sync_watcher(key, ctx);
        }
    }

    fn sync_watcher(&mut self, key: WatcherKey, ctx: Context<'_>) {
        let current = ctx.store.revision();
        let compacted = ctx.store.compact_revision();
        let Some(s) = self.streams.get_mut(&key.stream) else {
            return;
        };
        let Some(w) = s.watchers.get_mut(&key.id) else {
            return;
        };
        loop {
            if w.next_revision < compacted {
                let response = WatchResponse {
                    // etcd sends this one with revision 0 in its header.
                    header: ctx.header(0),
                    watch_id: key.id,
                    canceled: true,
                    compact_revision: compacted,
                    ..Default::default()
                };
                if s.outbox.try_send(Outgoing::plain(response)).is_ok() {
                    transition(
                        &mut self.synced,
                        &mut self.unsynced,
                        key,
                        w,
                        State::Compacted,
                    );
                } else {
                    s.lagging.store(true, Ordering::Release);
                }
                return;
            }
            if w.next_revision > current {
                transition(&mut self.synced, &mut self.unsynced, key, w, State::Synced);
                return;
            }
            let last = current.min(w.next_revision + MAX_REVISIONS_PER_BATCH - 1);
            let range = &w.range;
            let matching =
                ctx.store
                    .events_between(w.next_revision, last, w.interest.prev_kv, |key| {
                        range.contains(key)
                    });
            let selected = w.select(matching);
            if !selected.is_empty() {
                let response = WatchResponse {
                    header: ctx.header(current),
                    watch_id: key.id,
                    events: selected,
                    ..Default::default()
                };
                if !send(&s.outbox, response, w.interest) {
                    s.lagging.store(true, Ordering::Release);
                    return;
                }
            }
            w.next_revision = last + 1;
        }
    }

    /// The next time a progress notification may be due.
    pub(crate) fn next_progress_deadline(&self) -> Option<Duration> {
        self.progress_queue.first().map(|&(deadline, _)| deadline)
    }

    /// Sends the progress ticks due at `now`: each watcher that asked for
    /// notifications and is synced is sent one, unless it got events since
    /// the last tick (which the stream's sender knows, see [`Outgoing`]).
    ///
    /// Each stream is visited at most once per call, whatever the interval:
    /// the due entries are taken out of the queue before any goes back in,
    /// so a next deadline that is itself already due cannot make the loop
    /// run forever.
    pub(crate) fn progress_due(&mut self, now: Duration, ctx: Context<'_>) {
        let current = ctx.store.revision();
        let header = ctx.header(current);
        let later = self
            .progress_queue
            .split_off(&(now.saturating_add(Duration::from_nanos(1)), 0));
        let due = std::mem::replace(&mut self.progress_queue, later);
        for (deadline, stream) in due {
            let Some(s) = self.streams.get_mut(&stream) else {
                continue;
            };
            let mut asked = false;
            let watch_ids = s
                .watchers
                .iter()
                .filter(|(_, w)| {
                    asked |= w.interest.progress_notify;
                    w.interest.progress_notify
                        && w.state == State::Synced
                        && current >= w.start_revision
                })
                .map(|(&id, _)| id)
                .collect();
            if asked {
                // A full outbox already tells the client plenty.
                let _ = s
                    .outbox
                    .try_send(Outgoing::ProgressTick { header, watch_ids });
            }
            s.progress_deadline = next_tick(deadline, self.progress_interval, now);
            self.progress_queue.insert((s.progress_deadline, stream));
        }
    }
}

/// Identifies a part of a delivery while a write is published: the
/// audience it shares, by the address of the audience's shared list (the
/// index does not change while a write is published, so each audience has
/// one list, at one address, for the whole write), or the one watcher it
/// is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PartId {
    Audience(*const Subscriber),
    Watcher(WatcherKey),
}

impl PartId {
    fn of(recipients: &Recipients) -> Self {
        match recipients {
            Recipients::Many(many) => Self::Audience(many.as_ptr()),
            Recipients::One(one) => Self::Watcher(one.key),
        }
    }
}

/// The first tick after `now` of a ticker that ticked at `last`: like a Go
/// ticker, ticks missed during a long jump are dropped. Always after `now`.
fn next_tick(last: Duration, interval: Duration, now: Duration) -> Duration {
    let interval = interval.max(MIN_PROGRESS_INTERVAL);
    let next = last.saturating_add(interval);
    if next > now {
        return next;
    }
    let missed = (now - next).as_nanos() / interval.as_nanos() + 1;
    let skip = u32::try_from(missed).map_or(Duration::MAX, |m| interval.saturating_mul(m));
    next.saturating_add(skip)
}

/// Sends a watcher's catch-up events as one response, or as fragments when
/// it asked for them and the response is too large; all or nothing.
fn send(outbox: &Outbox, whole: WatchResponse, interest: Interest) -> bool {
    let responses = split(whole, interest.fragment);
    match outbox.try_reserve_many(responses.len()) {
        Ok(permits) => {
            for (permit, response) in permits.zip(responses) {
                permit.send(Outgoing::Response {
                    response,
                    events_count: interest.progress_notify,
                });
            }
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_tick_is_always_after_now() {
        let ms = Duration::from_millis;
        assert_eq!(next_tick(ms(10), ms(10), ms(15)), ms(20));
        // Ticks missed during a long jump are dropped.
        assert_eq!(next_tick(ms(10), ms(10), ms(55)), ms(60));
        assert_eq!(next_tick(ms(10), ms(10), ms(60)), ms(70));
        // Whatever the interval, even one the hub would never be given.
        assert!(next_tick(ms(10), Duration::ZERO, ms(10)) > ms(10));
        assert_eq!(
            next_tick(Duration::MAX, ms(10), Duration::MAX),
            Duration::MAX
        );
    }

    #[test]
    fn progress_due_visits_each_stream_once_even_with_a_zero_interval() {
        let mut hub = WatchHub::new(Duration::from_secs(1));
        hub.progress_interval = Duration::ZERO;
        let (outbox, _responses) = mpsc::channel(STREAM_BUFFER);
        hub.open_stream(outbox, Duration::ZERO);
        let store = Store::default();
        let ctx = Context {
            store: &store,
            header: HeaderSource {
                cluster_id: 1,
                member_id: 2,
                raft_term: 3,
            },
        };
        hub.progress_due(Duration::from_secs(5), ctx);
        assert!(hub.next_progress_deadline().unwrap() > Duration::from_secs(5));
    }

    #[test]
    fn prefix_ranges_are_recognised() {
        let range = KeyRange::new(&Bytes::from_static(b"svc/"), &Bytes::from_static(b"svc0"));
        assert_eq!(as_prefix(&range).map(|b| &b[..]), Some(&b"svc/"[..]));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        let other = KeyRange::new(&Bytes::from_static(b"a"), &Bytes::from_static(b"c"));
        assert!(as_prefix(&other).is_none());
    }
}
