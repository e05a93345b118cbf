//! The watch hub: streams, watchers, the index of synced watchers, catch-up
//! and progress notifications. See the [module docs](super).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use etcd_proto::mvccpb::{event::EventType, Event};
use prost::Message;
use tokio::sync::mpsc;

use crate::error::EtcdError;
use crate::header::HeaderSource;
use crate::limits::MAX_RECV_BYTES;
use crate::mvcc::{KeyRange, Store};

/// Responses a stream may have queued before its watchers count as slow
/// (etcd's `chanBufLen`).
pub(crate) const STREAM_BUFFER: usize = 128;

/// Where a stream's responses go.
pub(crate) type Outbox = mpsc::Sender<WatchResponse>;

/// A catch-up response covers at most this many revisions (etcd's
/// `watchBatchMaxRevs`).
const MAX_REVISIONS_PER_BATCH: i64 = 1000;

/// A response this large (etcd's max request bytes plus gRPC overhead, its
/// receive limit) is split when its watcher asked for fragments.
const FRAGMENT_BYTES: usize = MAX_RECV_BYTES;

/// The shortest progress interval a hub takes: a tick per millisecond of
/// the member's clock is already more than any client asks for.
pub(crate) const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(1);
/// The longest: a year, far beyond any test, and far from overflowing the
/// clock's arithmetic.
pub(crate) const MAX_PROGRESS_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Identifies a watch stream within a member.
pub(crate) type StreamId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct WatcherKey {
    stream: StreamId,
    id: i64,
}

/// Where a watcher stands; [`transition`] is the one place it changes, and
/// keeps the synced index and the unsynced set in step with it.
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
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    fragment: bool,
    start_revision: i64,
    /// The first revision this watcher has not been told about.
    next_revision: i64,
    state: State,
    /// Whether events went out since the last progress tick.
    events_since_tick: bool,
}

impl Watcher {
    /// The events this watcher is sent, from those of a write that matched
    /// its range: filters applied, `prev_kv` only if asked for and still
    /// retained.
    fn select(&self, events: impl Iterator<Item = Event>, compact_revision: i64) -> Vec<Event> {
        events
            .filter(|e| {
                let put = e.r#type == EventType::Put as i32;
                !(put && self.no_put || !put && self.no_delete)
            })
            .map(|mut e| {
                let mod_revision = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                if !self.prev_kv || mod_revision - 1 < compact_revision {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
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

/// Synced watchers by what they watch: exact keys and prefixes are found by
/// hashing the written key (and its prefixes); other ranges, which clients
/// rarely use, are tested one by one.
#[derive(Debug, Default)]
struct SyncedIndex {
    keys: HashMap<Bytes, Vec<WatcherKey>>,
    prefixes: HashMap<Bytes, Vec<WatcherKey>>,
    /// How many distinct watched prefixes there are of each length: a
    /// written key is looked up only at those lengths, so a long key costs
    /// its length once per watched prefix length, never its length squared.
    prefix_lengths: BTreeMap<usize, usize>,
    ranges: Vec<(KeyRange, WatcherKey)>,
}

/// The start of a prefix range: `Some(p)` if `[start, end)` is exactly the
/// keys beginning with `p`.
fn as_prefix(range: &KeyRange) -> Option<&Bytes> {
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

impl SyncedIndex {
    fn insert(&mut self, range: &KeyRange, watcher: WatcherKey) {
        match (range, as_prefix(range)) {
            (KeyRange::Single(key), _) => self.keys.entry(key.clone()).or_default().push(watcher),
            (_, Some(prefix)) => {
                let watchers = self.prefixes.entry(prefix.clone()).or_default();
                if watchers.is_empty() {
                    *self.prefix_lengths.entry(prefix.len()).or_default() += 1;
                }
                watchers.push(watcher);
            }
            _ => self.ranges.push((range.clone(), watcher)),
        }
    }

    fn remove(&mut self, range: &KeyRange, watcher: WatcherKey) {
        /// Whether the key's last watcher went.
        fn remove_from(
            map: &mut HashMap<Bytes, Vec<WatcherKey>>,
            key: &Bytes,
            watcher: WatcherKey,
        ) -> bool {
            let Some(list) = map.get_mut(key) else {
                return false;
            };
            list.retain(|w| *w != watcher);
            let emptied = list.is_empty();
            if emptied {
                map.remove(key);
            }
            emptied
        }
        match (range, as_prefix(range)) {
            (KeyRange::Single(key), _) => {
                remove_from(&mut self.keys, key, watcher);
            }
            (_, Some(prefix)) => {
                if remove_from(&mut self.prefixes, prefix, watcher) {
                    if let Some(count) = self.prefix_lengths.get_mut(&prefix.len()) {
                        *count -= 1;
                        if *count == 0 {
                            self.prefix_lengths.remove(&prefix.len());
                        }
                    }
                }
            }
            _ => self.ranges.retain(|(_, w)| *w != watcher),
        }
    }

    /// Every synced watcher whose range holds `key`.
    fn matching(&self, key: &[u8], out: &mut Vec<WatcherKey>) {
        if let Some(list) = self.keys.get(key) {
            out.extend(list);
        }
        if !self.prefixes.is_empty() {
            for &len in self.prefix_lengths.range(..=key.len()).map(|(len, _)| len) {
                if let Some(list) = self.prefixes.get(&key[..len]) {
                    out.extend(list);
                }
            }
        }
        out.extend(
            self.ranges
                .iter()
                .filter(|(r, _)| r.contains(key))
                .map(|(_, w)| *w),
        );
    }
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
        State::Synced => synced.remove(&w.range, key),
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
        State::Synced => synced.insert(&w.range, key),
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
        for (id, w) in s.watchers {
            unindex(
                &mut self.synced,
                &mut self.unsynced,
                WatcherKey { stream, id },
                &w,
            );
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
        let key = if req.key.is_empty() {
            Bytes::from_static(b"\0")
        } else {
            req.key
        };
        let range = KeyRange::new(&key, &req.range_end);
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
            no_put: filters(0),
            no_delete: filters(1),
            prev_kv: req.prev_kv,
            progress_notify: req.progress_notify,
            fragment: req.fragment,
            start_revision: req.start_revision,
            next_revision: if req.start_revision == 0 {
                current + 1
            } else {
                req.start_revision
            },
            state: State::Creating,
            events_since_tick: false,
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
    /// response per watcher, with its events in the write's order. A watcher
    /// whose outbox is full falls back to catching up from history.
    pub(crate) fn publish(&mut self, events: &[Event], ctx: Context<'_>) {
        if events.is_empty()
            || (self.synced.keys.is_empty()
                && self.synced.prefixes.is_empty()
                && self.synced.ranges.is_empty())
        {
            return;
        }
        let revision = ctx.store.revision();
        let mut per_watcher: BTreeMap<WatcherKey, Vec<usize>> = BTreeMap::new();
        let mut matched = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let Some(kv) = &event.kv else { continue };
            matched.clear();
            self.synced.matching(&kv.key, &mut matched);
            for w in &matched {
                per_watcher.entry(*w).or_default().push(i);
            }
        }
        for (key, indices) in per_watcher {
            let Some(s) = self.streams.get_mut(&key.stream) else {
                continue;
            };
            let Some(w) = s.watchers.get_mut(&key.id) else {
                continue;
            };
            if revision < w.next_revision {
                continue; // it starts in the future
            }
            let selected = w.select(
                indices.iter().map(|&i| events[i].clone()),
                ctx.store.compact_revision(),
            );
            if selected.is_empty() {
                w.next_revision = revision + 1;
            } else if send(
                &s.outbox,
                key.id,
                ctx.header(revision),
                selected,
                w.fragment,
            ) {
                w.next_revision = revision + 1;
                // Only a response with events counts against progress.
                w.events_since_tick = true;
            } else {
                // A slow consumer: set aside, caught up from history later.
                w.next_revision = revision;
                s.lagging.store(true, Ordering::Release);
                transition(
                    &mut self.synced,
                    &mut self.unsynced,
                    key,
                    w,
                    State::Unsynced,
                );
            }
        }
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
                if s.outbox.try_send(response).is_ok() {
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
            let matching = ctx
                .store
                .changes(w.next_revision, last)
                .flat_map(|(_, events)| events.iter())
                .filter(|e| e.kv.as_ref().is_some_and(|kv| w.range.contains(&kv.key)))
                .cloned();
            let selected = w.select(matching, compacted);
            if !selected.is_empty() {
                if !send(&s.outbox, key.id, ctx.header(current), selected, w.fragment) {
                    s.lagging.store(true, Ordering::Release);
                    return;
                }
                w.events_since_tick = true;
            }
            w.next_revision = last + 1;
        }
    }

    /// The next time a progress notification may be due.
    pub(crate) fn next_progress_deadline(&self) -> Option<Duration> {
        self.progress_queue.first().map(|&(deadline, _)| deadline)
    }

    /// Sends the progress notifications due at `now`: to each watcher that
    /// asked for them, is synced, and got no events since the last tick.
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
            for (&id, w) in &mut s.watchers {
                if w.progress_notify
                    && !w.events_since_tick
                    && w.state == State::Synced
                    && current >= w.start_revision
                {
                    let response = WatchResponse {
                        header,
                        watch_id: id,
                        ..Default::default()
                    };
                    // A full outbox already tells the client plenty.
                    let _ = s.outbox.try_send(response);
                }
                w.events_since_tick = false;
            }
            s.progress_deadline = next_tick(deadline, self.progress_interval, now);
            self.progress_queue.insert((s.progress_deadline, stream));
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

/// Sends a watcher's events as one response, or as fragments when it asked
/// for them and the response is too large; all or nothing.
fn send(
    outbox: &Outbox,
    watch_id: i64,
    header: Option<ResponseHeader>,
    events: Vec<Event>,
    fragment: bool,
) -> bool {
    let whole = WatchResponse {
        header,
        watch_id,
        events,
        ..Default::default()
    };
    let responses = if fragment && whole.events.len() > 1 && whole.encoded_len() >= FRAGMENT_BYTES {
        fragments(whole)
    } else {
        vec![whole]
    };
    match outbox.try_reserve_many(responses.len()) {
        Ok(permits) => {
            for (permit, response) in permits.zip(responses) {
                permit.send(response);
            }
            true
        }
        Err(_) => false,
    }
}

/// etcd's `sendFragments`: pieces of at most the fragment size (at least
/// one event each), every one but the last marked `fragment`.
fn fragments(whole: WatchResponse) -> Vec<WatchResponse> {
    let template = WatchResponse {
        events: Vec::new(),
        fragment: true,
        ..whole.clone()
    };
    let mut pieces = Vec::new();
    let mut current = template.clone();
    for event in whole.events {
        current.events.push(event);
        if current.events.len() > 1 && current.encoded_len() >= FRAGMENT_BYTES {
            let overflow = current.events.pop();
            pieces.push(std::mem::replace(&mut current, template.clone()));
            current.events.extend(overflow);
        }
    }
    current.fragment = false;
    pieces.push(current);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_proto::mvccpb::KeyValue;

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

    #[test]
    fn the_index_finds_exact_prefix_and_range_watchers_only() {
        let mut index = SyncedIndex::default();
        let w = |id| WatcherKey { stream: 0, id };
        index.insert(&KeyRange::Single(Bytes::from_static(b"svc/a")), w(1));
        index.insert(
            &KeyRange::new(&Bytes::from_static(b"svc/"), &Bytes::from_static(b"svc0")),
            w(2),
        );
        index.insert(&KeyRange::From(Bytes::from_static(b"t")), w(3));
        index.insert(&KeyRange::Single(Bytes::from_static(b"other")), w(4));
        let mut found = Vec::new();
        index.matching(b"svc/a", &mut found);
        assert_eq!(found, [w(1), w(2)]);
        found.clear();
        index.matching(b"u", &mut found);
        assert_eq!(found, [w(3)]);
        index.remove(
            &KeyRange::new(&Bytes::from_static(b"svc/"), &Bytes::from_static(b"svc0")),
            w(2),
        );
        found.clear();
        index.matching(b"svc/b", &mut found);
        assert!(found.is_empty());
        assert!(index.prefix_lengths.is_empty(), "no prefix is watched");
    }

    #[test]
    fn prefixes_of_several_lengths_match_long_keys() {
        let mut index = SyncedIndex::default();
        let w = |id| WatcherKey { stream: 0, id };
        let prefix = |p: &'static [u8]| {
            KeyRange::new(&Bytes::from_static(p), &Bytes::from(prefix_end(p).unwrap()))
        };
        index.insert(&prefix(b"a"), w(1));
        index.insert(&prefix(b"ab"), w(2));
        index.insert(&prefix(b"ab"), w(3));
        index.insert(&prefix(b"b"), w(4));
        let mut long = b"ab".to_vec();
        long.resize(1 << 20, b'x');
        let mut found = Vec::new();
        index.matching(&long, &mut found);
        found.sort();
        assert_eq!(found, [w(1), w(2), w(3)]);
        assert_eq!(index.prefix_lengths.get(&2), Some(&1));
        index.remove(&prefix(b"ab"), w(2));
        assert_eq!(
            index.prefix_lengths.get(&2),
            Some(&1),
            "w(3) still watches ab"
        );
    }

    #[test]
    fn fragments_split_by_size_and_keep_every_event() {
        let event = |i: u8| Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: vec![i].into(),
                value: vec![0; 900_000].into(),
                ..Default::default()
            }),
            prev_kv: None,
        };
        let whole = WatchResponse {
            watch_id: 7,
            events: (0..5).map(event).collect(),
            ..Default::default()
        };
        let pieces = fragments(whole);
        assert_eq!(pieces.iter().map(|p| p.events.len()).sum::<usize>(), 5);
        assert!(pieces.len() > 1);
        assert!(pieces[..pieces.len() - 1]
            .iter()
            .all(|p| p.fragment && p.watch_id == 7));
        assert!(!pieces.last().unwrap().fragment);
        assert!(pieces
            .iter()
            .all(|p| p.encoded_len() < FRAGMENT_BYTES || p.events.len() == 1));
    }
}
