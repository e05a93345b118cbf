//! The index of synced watchers: who a written key reaches.
//!
//! Watchers of an exact key and of a prefix are found by hashing the written
//! key (and its prefixes); other ranges, which clients rarely use, are
//! tested one by one. The watchers of one stream that watch the same key or
//! prefix form an *audience*, which a write reaches as a whole: a
//! [`Delivery`](super::delivery::Delivery) shares the audience's list
//! instead of copying a word per watcher, so ten thousand watchers of one
//! key cost a write one lookup per stream.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::delivery::{Recipients, Subscriber};
use super::hub::{as_prefix, StreamId};
use crate::mvcc::KeyRange;

/// The synced watchers of one stream that watch the same key or prefix.
#[derive(Debug, Default)]
struct Audience {
    subscribers: Vec<Subscriber>,
    /// `subscribers` as deliveries share it; built again after a change.
    shared: Option<Arc<[Subscriber]>>,
}

impl Audience {
    fn push(&mut self, subscriber: Subscriber) {
        self.subscribers.push(subscriber);
        self.shared = None;
    }

    fn shared(&mut self) -> Arc<[Subscriber]> {
        let subscribers = &self.subscribers;
        Arc::clone(
            self.shared
                .get_or_insert_with(|| subscribers.as_slice().into()),
        )
    }

    /// Removes the watchers `leaving` names; whether any is left.
    fn remove(&mut self, leaving: impl Fn(&Subscriber) -> bool) -> bool {
        let before = self.subscribers.len();
        self.subscribers.retain(|s| !leaving(s));
        if self.subscribers.len() != before {
            self.shared = None;
        }
        !self.subscribers.is_empty()
    }
}

/// The audiences of one key or prefix, by stream.
type Audiences = BTreeMap<StreamId, Audience>;

/// Who a written key reaches on one stream.
#[derive(Debug)]
pub(super) struct Reached {
    pub(super) stream: StreamId,
    pub(super) recipients: Recipients,
}

/// Synced watchers by what they watch.
#[derive(Debug, Default)]
pub(super) struct SyncedIndex {
    keys: HashMap<Bytes, Audiences>,
    prefixes: HashMap<Bytes, Audiences>,
    /// How many distinct watched prefixes there are of each length: a
    /// written key is looked up only at those lengths, so a long key costs
    /// its length once per watched prefix length, never its length squared.
    prefix_lengths: BTreeMap<usize, usize>,
    ranges: Vec<(KeyRange, Subscriber)>,
}

impl SyncedIndex {
    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.prefixes.is_empty() && self.ranges.is_empty()
    }

    pub(super) fn insert(&mut self, range: &KeyRange, watcher: Subscriber) {
        let stream = watcher.key.stream;
        match (range, as_prefix(range)) {
            (KeyRange::Single(key), _) => self
                .keys
                .entry(key.clone())
                .or_default()
                .entry(stream)
                .or_default(),
            (_, Some(prefix)) => {
                let audiences = self.prefixes.entry(prefix.clone()).or_insert_with(|| {
                    *self.prefix_lengths.entry(prefix.len()).or_default() += 1;
                    Audiences::new()
                });
                audiences.entry(stream).or_default()
            }
            _ => {
                self.ranges.push((range.clone(), watcher));
                return;
            }
        }
        .push(watcher);
    }

    /// Removes one watcher of `stream`.
    pub(super) fn remove(&mut self, range: &KeyRange, stream: StreamId, id: i64) {
        self.remove_many(stream, [(range, id)]);
    }

    /// Removes watchers of `stream`, each audience visited once however
    /// many of its watchers leave.
    pub(super) fn remove_many<'a>(
        &mut self,
        stream: StreamId,
        watchers: impl IntoIterator<Item = (&'a KeyRange, i64)>,
    ) {
        let mut by_range: HashMap<&KeyRange, HashSet<i64>> = HashMap::new();
        for (range, id) in watchers {
            by_range.entry(range).or_default().insert(id);
        }
        for (range, ids) in by_range {
            let leaving = |s: &Subscriber| ids.contains(&s.key.id);
            match (range, as_prefix(range)) {
                (KeyRange::Single(key), _) => {
                    remove_from(&mut self.keys, key, stream, leaving);
                }
                (_, Some(prefix)) => {
                    if remove_from(&mut self.prefixes, prefix, stream, leaving) {
                        if let Some(count) = self.prefix_lengths.get_mut(&prefix.len()) {
                            *count -= 1;
                            if *count == 0 {
                                self.prefix_lengths.remove(&prefix.len());
                            }
                        }
                    }
                }
                _ => self
                    .ranges
                    .retain(|(_, s)| s.key.stream != stream || !leaving(s)),
            }
        }
    }

    /// Everyone a write of `key` reaches, by stream.
    pub(super) fn reached_by(&mut self, key: &[u8], mut found: impl FnMut(Reached)) {
        let mut audiences = |audiences: &mut Audiences| {
            for (&stream, audience) in audiences.iter_mut() {
                found(Reached {
                    stream,
                    recipients: Recipients::Many(audience.shared()),
                });
            }
        };
        if let Some(exact) = self.keys.get_mut(key) {
            audiences(exact);
        }
        if !self.prefixes.is_empty() {
            for &len in self.prefix_lengths.range(..=key.len()).map(|(len, _)| len) {
                if let Some(under) = self.prefixes.get_mut(&key[..len]) {
                    audiences(under);
                }
            }
        }
        for (range, subscriber) in &self.ranges {
            if range.contains(key) {
                found(Reached {
                    stream: subscriber.key.stream,
                    recipients: Recipients::One(*subscriber),
                });
            }
        }
    }
}

/// Removes the watchers `leaving` names from `stream`'s audience of `key`;
/// whether the key's last audience went.
fn remove_from(
    map: &mut HashMap<Bytes, Audiences>,
    key: &Bytes,
    stream: StreamId,
    leaving: impl Fn(&Subscriber) -> bool,
) -> bool {
    let Some(audiences) = map.get_mut(key) else {
        return false;
    };
    if let Some(audience) = audiences.get_mut(&stream) {
        if !audience.remove(leaving) {
            audiences.remove(&stream);
        }
    }
    let emptied = audiences.is_empty();
    if emptied {
        map.remove(key);
    }
    emptied
}

#[cfg(test)]
mod tests {
    use super::super::delivery::{Interest, WatcherKey};
    use super::super::hub::prefix_end;
    use super::*;

    /// The watchers the index finds for `key`.
    fn found(index: &mut SyncedIndex, key: &[u8]) -> Vec<WatcherKey> {
        let mut found = Vec::new();
        index.reached_by(key, |reached| {
            found.extend(reached.recipients.as_slice().iter().map(|s| s.key));
        });
        found
    }

    fn subscriber(stream: StreamId, id: i64) -> Subscriber {
        Subscriber {
            key: WatcherKey { stream, id },
            from: 0,
            interest: Interest::default(),
        }
    }

    fn prefix(p: &'static [u8]) -> KeyRange {
        KeyRange::new(&Bytes::from_static(p), &Bytes::from(prefix_end(p).unwrap()))
    }

    #[test]
    fn the_index_finds_exact_prefix_and_range_watchers_only() {
        let mut index = SyncedIndex::default();
        let w = |id| WatcherKey { stream: 0, id };
        index.insert(
            &KeyRange::Single(Bytes::from_static(b"svc/a")),
            subscriber(0, 1),
        );
        index.insert(&prefix(b"svc/"), subscriber(0, 2));
        index.insert(&KeyRange::From(Bytes::from_static(b"t")), subscriber(0, 3));
        index.insert(
            &KeyRange::Single(Bytes::from_static(b"other")),
            subscriber(0, 4),
        );
        assert_eq!(found(&mut index, b"svc/a"), [w(1), w(2)]);
        assert_eq!(found(&mut index, b"u"), [w(3)]);
        index.remove(&prefix(b"svc/"), 0, 2);
        assert!(found(&mut index, b"svc/b").is_empty());
        assert!(index.prefix_lengths.is_empty(), "no prefix is watched");
        index.remove(&KeyRange::From(Bytes::from_static(b"t")), 0, 3);
        index.remove(&KeyRange::Single(Bytes::from_static(b"svc/a")), 0, 1);
        index.remove(&KeyRange::Single(Bytes::from_static(b"other")), 0, 4);
        assert!(index.is_empty());
    }

    #[test]
    fn an_audience_is_shared_until_it_changes() {
        let mut index = SyncedIndex::default();
        let key = KeyRange::Single(Bytes::from_static(b"k"));
        for id in 0..3 {
            index.insert(&key, subscriber(7, id));
        }
        index.insert(&key, subscriber(8, 0));
        let mut lists = Vec::new();
        index.reached_by(b"k", |reached| lists.push(reached));
        assert_eq!(lists.len(), 2, "one audience per stream");
        let mut again = Vec::new();
        index.reached_by(b"k", |reached| again.push(reached));
        let (Recipients::Many(first), Recipients::Many(second)) =
            (&lists[0].recipients, &again[0].recipients)
        else {
            panic!("key watchers are reached as audiences");
        };
        assert!(Arc::ptr_eq(first, second), "unchanged, so shared");
        index.remove_many(7, [(&key, 0), (&key, 2)]);
        let ids: Vec<i64> = found(&mut index, b"k").iter().map(|w| w.id).collect();
        assert_eq!(ids, [1, 0]);
        assert_eq!(first.len(), 3, "a delivery's list does not change");
    }

    #[test]
    fn prefixes_of_several_lengths_match_long_keys() {
        let mut index = SyncedIndex::default();
        let w = |id| WatcherKey { stream: 0, id };
        index.insert(&prefix(b"a"), subscriber(0, 1));
        index.insert(&prefix(b"ab"), subscriber(0, 2));
        index.insert(&prefix(b"ab"), subscriber(0, 3));
        index.insert(&prefix(b"b"), subscriber(0, 4));
        let mut long = b"ab".to_vec();
        long.resize(1 << 20, b'x');
        let mut matched = found(&mut index, &long);
        matched.sort();
        assert_eq!(matched, [w(1), w(2), w(3)]);
        assert_eq!(index.prefix_lengths.get(&2), Some(&1));
        index.remove(&prefix(b"ab"), 0, 2);
        assert_eq!(
            index.prefix_lengths.get(&2),
            Some(&1),
            "w(3) still watches ab"
        );
    }
}
