//! What travels through a stream's outbox, and how the stream's sender turns
//! it into responses.
//!
//! A write reaches every synced watcher of a stream it matches as one
//! [`Delivery`]: the write's events and the lists of watchers to tell, both
//! shared (the lists with the index, see `index`). The writer's work under
//! the core's lock is a few words per stream; the per-watcher work happens in
//! the stream's sender, which an [`Unpacker`] feeds: it encodes the
//! delivery's header and events once for all the watchers that get the
//! same, and each watcher's response is those bytes around its watch ID
//! (see `frame`). So a put with ten thousand watchers of its key costs its
//! writer little more than a put with none, and the outbox counts writes,
//! not watchers.
//!
//! Progress ticks travel the same way, so the sender knows, in the order the
//! client sees them, which watchers got events since the last tick: those
//! are not sent a progress notification (etcd's `sendLoop` keeps the same
//! account).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use etcd_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use etcd_proto::mvccpb::{event::EventType, Event};
use prost::Message;

use super::frame::WatchFrame;
use super::hub::StreamId;
use crate::limits::MAX_RECV_BYTES;

/// A response this large (etcd's max request bytes plus gRPC overhead, its
/// receive limit) is split when its watcher asked for fragments.
const FRAGMENT_BYTES: usize = MAX_RECV_BYTES;

/// What a watcher asked for about the events it is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Interest {
    pub(crate) no_put: bool,
    pub(crate) no_delete: bool,
    pub(crate) prev_kv: bool,
    pub(crate) fragment: bool,
    pub(crate) progress_notify: bool,
}

impl Interest {
    /// Whether an event of this type passes the watcher's filters.
    pub(crate) fn wants(&self, event: &Event) -> bool {
        let put = event.r#type == EventType::Put as i32;
        !(put && self.no_put || !put && self.no_delete)
    }

    /// The event as this watcher is sent it: `prev_kv` only if asked for.
    /// (One that compaction removed is already absent: the store rebuilds
    /// past events from what compaction kept.)
    pub(crate) fn shape(&self, mut event: Event) -> Event {
        if !self.prev_kv {
            event.prev_kv = None;
        }
        event
    }

    /// [`Interest::shape`] of a shared event, copying only what the
    /// watcher gets: a `prev_kv` it did not ask for is not cloned only to
    /// be dropped (each `Bytes` clone is an atomic count on the shared
    /// buffer, for every watcher of a fan-out).
    pub(crate) fn copy_of(&self, event: &Event) -> Event {
        Event {
            r#type: event.r#type,
            kv: event.kv.clone(),
            prev_kv: if self.prev_kv {
                event.prev_kv.clone()
            } else {
                None
            },
        }
    }
}

/// Identifies a watcher within a member: its stream and its watch ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct WatcherKey {
    pub(crate) stream: StreamId,
    pub(crate) id: i64,
}

/// A synced watcher as the index and deliveries hold it: all a write needs
/// to address it, without looking the watcher up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subscriber {
    pub(crate) key: WatcherKey,
    /// The first revision it is told about (later than the current one for
    /// a watcher that starts in the future).
    pub(crate) from: i64,
    pub(crate) interest: Interest,
}

/// The watchers a part of a delivery is for.
#[derive(Debug, Clone)]
pub(crate) enum Recipients {
    /// An audience of the index (a stream's watchers of one key or
    /// prefix), shared with it.
    Many(Arc<[Subscriber]>),
    /// A watcher of another range.
    One(Subscriber),
}

impl Recipients {
    pub(crate) fn as_slice(&self) -> &[Subscriber] {
        match self {
            Self::Many(many) => many,
            Self::One(one) => std::slice::from_ref(one),
        }
    }
}

/// Watchers that a write matched with the same of its events.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) recipients: Recipients,
    /// Positions of those events in the write's, in order.
    pub(crate) events: Vec<u32>,
}

/// One write's events for the watchers of one stream it matched.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) header: Option<ResponseHeader>,
    pub(crate) revision: i64,
    pub(crate) events: Arc<[Event]>,
    pub(crate) parts: Vec<Part>,
}

impl Delivery {
    /// The events of `part` a watcher with `interest` is sent, as it is
    /// sent them.
    fn events_for<'d>(
        &'d self,
        part: &'d Part,
        interest: Interest,
    ) -> impl Iterator<Item = Event> + 'd {
        part.events
            .iter()
            .map(move |&i| &self.events[i as usize])
            .filter(move |e| interest.wants(e))
            .map(move |e| interest.copy_of(e))
    }

    /// Every watcher this delivery is for: those its revision reaches
    /// (watchers that start in the future wait for theirs).
    pub(crate) fn recipients(&self) -> impl Iterator<Item = &Subscriber> {
        self.parts
            .iter()
            .flat_map(|part| part.recipients.as_slice())
            .filter(|s| s.from <= self.revision)
    }
}

/// An item of a stream's outbox.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A response sent as it is. `events_count` says whether its events
    /// stand for the watcher's progress (it asked for notifications).
    Response {
        response: WatchResponse,
        events_count: bool,
    },
    /// A write's events for several watchers.
    Delivery(Delivery),
    /// A progress tick: each of `watch_ids` that got no events since the
    /// last tick is sent a notification with `header`.
    ProgressTick {
        header: Option<ResponseHeader>,
        watch_ids: Vec<i64>,
    },
}

impl Outgoing {
    /// A response that is not events for a progress-notified watcher.
    pub(crate) fn plain(response: WatchResponse) -> Self {
        Self::Response {
            response,
            events_count: false,
        }
    }
}

impl From<WatchResponse> for Outgoing {
    fn from(response: WatchResponse) -> Self {
        Self::plain(response)
    }
}

/// Turns outbox items into responses, one at a time, in order.
#[derive(Debug, Default)]
pub(crate) struct Unpacker {
    current: Option<Outgoing>,
    /// The next watch ID of `current`, or its next part and recipient.
    position: usize,
    recipient: usize,
    /// What of `current` is encoded already, for its next recipients.
    encoded: Encoded,
    /// The member whose ID shared headers carry; `None` leaves them as
    /// the delivery has them.
    member_id: Option<u64>,
    /// Responses already built and not yet taken (fragments).
    ready: VecDeque<WatchResponse>,
    /// Progress-notified watchers sent events since the last tick.
    had_events: HashSet<i64>,
}

/// A delivery's parts encoded for its recipients: its header, and the
/// current part's events in each shape asked for so far.
#[derive(Debug, Default)]
struct Encoded {
    header: Option<Bytes>,
    /// `None` where the shape's filters leave no event.
    events: Vec<(EventsKey, Option<Bytes>)>,
}

/// What decides which of a write's events a watcher is sent, and how:
/// its filters and `prev_kv`.
type EventsKey = (bool, bool, bool);

impl Interest {
    fn events_key(&self) -> EventsKey {
        (self.no_put, self.no_delete, self.prev_kv)
    }
}

impl Unpacker {
    /// An unpacker for the streams of member `member_id`, whose ID the
    /// responses it encodes carry in their header.
    pub(crate) fn sent_by(member_id: u64) -> Self {
        Self {
            member_id: Some(member_id),
            ..Self::default()
        }
    }

    /// Whether every response of the items given so far has been taken.
    pub(crate) fn is_empty(&self) -> bool {
        self.current.is_none() && self.ready.is_empty()
    }

    /// Takes the next item to unpack; only once [`Unpacker::is_empty`].
    pub(crate) fn load(&mut self, item: Outgoing) {
        debug_assert!(self.is_empty());
        self.current = Some(item);
        self.position = 0;
        self.recipient = 0;
        self.encoded = Encoded::default();
    }

    /// The next response, or `None` once the loaded items are used up.
    pub(crate) fn next_response(&mut self) -> Option<WatchFrame> {
        loop {
            if let Some(response) = self.ready.pop_front() {
                return Some(WatchFrame::Message(response));
            }
            match self.current.take()? {
                Outgoing::Response {
                    response,
                    events_count,
                } => {
                    if events_count && !response.events.is_empty() {
                        self.had_events.insert(response.watch_id);
                    }
                    if response.canceled {
                        // Its ID may be given to a new watcher, which has
                        // had no events yet.
                        self.had_events.remove(&response.watch_id);
                    }
                    return Some(WatchFrame::Message(response));
                }
                Outgoing::Delivery(delivery) => {
                    let Some(part) = delivery.parts.get(self.position) else {
                        continue;
                    };
                    let recipients = part.recipients.as_slice();
                    let Some(&recipient) = recipients.get(self.recipient) else {
                        self.position += 1;
                        self.recipient = 0;
                        self.encoded.events.clear();
                        self.current = Some(Outgoing::Delivery(delivery));
                        continue;
                    };
                    self.recipient += 1;
                    let frame = if recipient.from > delivery.revision {
                        // It starts later.
                        None
                    } else if recipient.interest.fragment {
                        // It may get more than one response for a write,
                        // each sized by its events: built as messages.
                        let response = self.unpack(&delivery, part, recipient);
                        self.ready
                            .extend(response.map(|r| split(r, true)).unwrap_or_default());
                        None
                    } else {
                        self.share(&delivery, part, recipient)
                    };
                    self.current = Some(Outgoing::Delivery(delivery));
                    if frame.is_some() {
                        return frame;
                    }
                }
                Outgoing::ProgressTick { header, watch_ids } => {
                    let Some(&watch_id) = watch_ids.get(self.position) else {
                        self.had_events.clear();
                        continue;
                    };
                    self.position += 1;
                    self.current = Some(Outgoing::ProgressTick { header, watch_ids });
                    if !self.had_events.contains(&watch_id) {
                        return Some(WatchFrame::Message(WatchResponse {
                            header,
                            watch_id,
                            ..Default::default()
                        }));
                    }
                }
            }
        }
    }

    /// One recipient's response to a delivery, from the delivery's parts
    /// encoded once for every recipient that gets the same: `None` if its
    /// filters leave none of the part's events.
    fn share(
        &mut self,
        delivery: &Delivery,
        part: &Part,
        recipient: Subscriber,
    ) -> Option<WatchFrame> {
        let interest = recipient.interest;
        let key = interest.events_key();
        let events = match self.encoded.events.iter().find(|(k, _)| *k == key) {
            Some((_, events)) => events.clone(),
            None => {
                let mut wanted = delivery.events_for(part, interest).peekable();
                let events = wanted
                    .peek()
                    .is_some()
                    .then(|| WatchFrame::encode_events(wanted));
                self.encoded.events.push((key, events.clone()));
                events
            }
        }?;
        if interest.progress_notify {
            self.had_events.insert(recipient.key.id);
        }
        let member_id = self.member_id;
        let header = self.encoded.header.get_or_insert_with(|| {
            let mut header = delivery.header;
            if let (Some(header), Some(member_id)) = (header.as_mut(), member_id) {
                header.member_id = member_id;
            }
            WatchFrame::encode_header(header.as_ref())
        });
        Some(WatchFrame::Shared {
            header: header.clone(),
            watch_id: recipient.key.id,
            events,
        })
    }

    /// One recipient's response to a delivery, as a message: `None` if its
    /// filters leave none of the part's events.
    fn unpack(
        &mut self,
        delivery: &Delivery,
        part: &Part,
        recipient: Subscriber,
    ) -> Option<WatchResponse> {
        let interest = recipient.interest;
        let events: Vec<Event> = delivery.events_for(part, interest).collect();
        if events.is_empty() {
            return None;
        }
        if interest.progress_notify {
            self.had_events.insert(recipient.key.id);
        }
        Some(WatchResponse {
            header: delivery.header,
            watch_id: recipient.key.id,
            events,
            ..Default::default()
        })
    }
}

/// A watcher's events as one response, or as fragments when it asked for
/// them and the response is too large.
pub(crate) fn split(whole: WatchResponse, fragment: bool) -> Vec<WatchResponse> {
    if fragment && whole.events.len() > 1 && whole.encoded_len() >= FRAGMENT_BYTES {
        fragments(whole)
    } else {
        vec![whole]
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

    fn event(kind: EventType, key: &'static [u8], revision: i64) -> Event {
        let kv = |mod_revision| KeyValue {
            key: key.into(),
            mod_revision,
            ..Default::default()
        };
        Event {
            r#type: kind as i32,
            kv: Some(kv(revision)),
            prev_kv: Some(kv(revision - 1)),
        }
    }

    fn drain(unpacker: &mut Unpacker) -> Vec<WatchResponse> {
        std::iter::from_fn(|| unpacker.next_response())
            .map(|frame| frame.decoded())
            .collect()
    }

    fn subscriber(id: i64, from: i64, interest: Interest) -> Subscriber {
        Subscriber {
            key: WatcherKey { stream: 0, id },
            from,
            interest,
        }
    }

    #[test]
    fn a_delivery_becomes_one_response_per_recipient_with_its_events() {
        let events: Arc<[Event]> = vec![
            event(EventType::Put, b"a", 5),
            event(EventType::Delete, b"b", 5),
        ]
        .into();
        let plain = Interest::default();
        let with_prev = Interest {
            prev_kv: true,
            ..plain
        };
        let no_delete = Interest {
            no_delete: true,
            ..plain
        };
        let delivery = Delivery {
            header: None,
            revision: 5,
            events,
            parts: vec![
                Part {
                    recipients: Recipients::Many(
                        vec![subscriber(1, 0, with_prev), subscriber(2, 6, plain)].into(),
                    ),
                    events: vec![0, 1],
                },
                Part {
                    recipients: Recipients::Many(
                        vec![subscriber(3, 5, plain), subscriber(4, 0, no_delete)].into(),
                    ),
                    events: vec![1],
                },
            ],
        };
        let reached: Vec<i64> = delivery.recipients().map(|s| s.key.id).collect();
        assert_eq!(reached, [1, 3, 4], "2 starts at 6");
        let mut unpacker = Unpacker::default();
        unpacker.load(Outgoing::Delivery(delivery));
        let responses = drain(&mut unpacker);
        let ids: Vec<i64> = responses.iter().map(|r| r.watch_id).collect();
        assert_eq!(ids, [1, 3], "2 starts later; 4 filters out deletes");
        assert_eq!(responses[0].events.len(), 2);
        assert!(responses[0].events.iter().all(|e| e.prev_kv.is_some()));
        assert_eq!(responses[1].events[0].kv.as_ref().unwrap().key, &b"b"[..]);
        assert!(responses[1].events[0].prev_kv.is_none(), "not asked for");
        assert!(unpacker.is_empty());
    }

    #[test]
    fn a_tick_skips_watchers_that_had_events_since_the_last_one() {
        let mut unpacker = Unpacker::default();
        unpacker.load(Outgoing::Response {
            response: WatchResponse {
                watch_id: 1,
                events: vec![event(EventType::Put, b"a", 2)],
                ..Default::default()
            },
            events_count: true,
        });
        assert_eq!(drain(&mut unpacker).len(), 1);
        let tick = || Outgoing::ProgressTick {
            header: None,
            watch_ids: vec![1, 2],
        };
        unpacker.load(tick());
        let ids: Vec<i64> = drain(&mut unpacker).iter().map(|r| r.watch_id).collect();
        assert_eq!(ids, [2]);
        // The next tick starts a new account.
        unpacker.load(tick());
        let ids: Vec<i64> = drain(&mut unpacker).iter().map(|r| r.watch_id).collect();
        assert_eq!(ids, [1, 2]);
        // A canceled watcher's account goes with it: a new watcher may take
        // its ID.
        unpacker.load(Outgoing::Response {
            response: WatchResponse {
                watch_id: 1,
                events: vec![event(EventType::Put, b"a", 3)],
                ..Default::default()
            },
            events_count: true,
        });
        assert_eq!(drain(&mut unpacker).len(), 1);
        unpacker.load(Outgoing::plain(WatchResponse {
            watch_id: 1,
            canceled: true,
            ..Default::default()
        }));
        assert_eq!(drain(&mut unpacker).len(), 1);
        unpacker.load(tick());
        let ids: Vec<i64> = drain(&mut unpacker).iter().map(|r| r.watch_id).collect();
        assert_eq!(ids, [1, 2], "the new watcher 1 had no events");
    }

    #[test]
    fn prev_kv_only_when_asked_for() {
        let interest = Interest {
            prev_kv: true,
            ..Interest::default()
        };
        let kept = interest.shape(event(EventType::Put, b"a", 5));
        assert!(kept.prev_kv.is_some());
        let shaped = Interest::default().shape(event(EventType::Put, b"a", 5));
        assert!(shaped.prev_kv.is_none());

        let shared = event(EventType::Put, b"a", 5);
        assert_eq!(interest.copy_of(&shared), shared);
        assert_eq!(Interest::default().copy_of(&shared), shaped);
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
