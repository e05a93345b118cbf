//! A watch response as a stream's sender hands it to the wire.
//!
//! A write that reaches a thousand watchers of a key on one stream is a
//! thousand responses that differ only in their watch ID. Building,
//! encoding and dropping one message each cost the sender most of a
//! fan-out's time, and every clone of the event's `Bytes` counted on one
//! shared buffer. So the [`Unpacker`](super::Unpacker) encodes a
//! delivery's header once, and its events once for each shape watchers ask
//! for (with `prev_kv` or not, filtered or not), and each watcher's
//! response is those bytes around its ID: [`WatchFrame::Shared`]. Its
//! bytes are exactly what prost writes for the same `WatchResponse`; the
//! tests below hold it to that. Every other response is a
//! [`WatchFrame::Message`].

use bytes::{BufMut, Bytes, BytesMut};
use etcd_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use etcd_proto::mvccpb::Event;
use prost::Message;

/// `WatchResponse`'s field numbers.
const HEADER_FIELD: u32 = 1;
const WATCH_ID_FIELD: u32 = 2;
const EVENTS_FIELD: u32 = 11;

/// One response on a watch stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WatchFrame {
    /// A response built as a message.
    Message(WatchResponse),
    /// One watcher's response to a delivery: encoded parts shared with the
    /// delivery's other watchers, and its own ID.
    Shared {
        /// The `header` field, encoded.
        header: Bytes,
        watch_id: i64,
        /// The `events` fields, encoded (never empty: a watcher with no
        /// events is sent nothing).
        events: Bytes,
    },
}

impl WatchFrame {
    /// A response's `header` field, encoded.
    pub(crate) fn encode_header(header: Option<&ResponseHeader>) -> Bytes {
        let mut buf = BytesMut::new();
        if let Some(header) = header {
            prost::encoding::message::encode(HEADER_FIELD, header, &mut buf);
        }
        buf.freeze()
    }

    /// A response's `events` fields, encoded.
    pub(crate) fn encode_events(events: impl IntoIterator<Item = Event>) -> Bytes {
        let mut buf = BytesMut::new();
        for event in events {
            prost::encoding::message::encode(EVENTS_FIELD, &event, &mut buf);
        }
        buf.freeze()
    }

    /// Writes the response's protobuf encoding, as prost would.
    ///
    /// # Errors
    ///
    /// Only for a buffer that cannot grow to hold it; a stream's encode
    /// buffer grows.
    pub(crate) fn encode(&self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        match self {
            Self::Message(response) => response.encode(buf),
            Self::Shared {
                header,
                watch_id,
                events,
            } => {
                buf.put_slice(header);
                // proto3 leaves a field at its default out.
                if *watch_id != 0 {
                    prost::encoding::int64::encode(WATCH_ID_FIELD, watch_id, buf);
                }
                buf.put_slice(events);
                Ok(())
            }
        }
    }

    /// Whether it may go out while its member is out of touch with the
    /// leader: one that says what happened to a watcher, with no events.
    pub(crate) fn tells_of_a_watcher_only(&self) -> bool {
        match self {
            Self::Message(response) => {
                (response.created || response.canceled) && response.events.is_empty()
            }
            Self::Shared { .. } => false,
        }
    }

    /// The response as a message, decoded from its encoding.
    #[cfg(test)]
    pub(crate) fn decoded(&self) -> WatchResponse {
        let mut buf = BytesMut::new();
        self.encode(&mut buf).expect("a BytesMut grows");
        WatchResponse::decode(buf.freeze()).expect("a frame decodes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_proto::mvccpb::{event::EventType, KeyValue};

    fn kv(key: &str, value: &str, revision: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: 2,
            mod_revision: revision,
            version: revision - 1,
            lease: 0x694d_0000_0000_0001,
        }
    }

    fn header() -> ResponseHeader {
        ResponseHeader {
            cluster_id: 0xcdf8_1843_c2f0_2fd7,
            member_id: 0x8e9e_05c5_2164_694d,
            revision: 12,
            raft_term: 3,
        }
    }

    /// The frame's bytes, and prost's for the same response.
    fn both(frame: &WatchFrame, response: &WatchResponse) -> (Vec<u8>, Vec<u8>) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf).unwrap();
        (buf.to_vec(), response.encode_to_vec())
    }

    #[test]
    fn a_shared_frame_is_byte_for_byte_what_prost_writes() {
        let events = vec![
            Event {
                r#type: EventType::Put as i32,
                kv: Some(kv("k", "v2", 12)),
                prev_kv: Some(kv("k", "v1", 11)),
            },
            Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: Bytes::from_static(b"gone"),
                    mod_revision: 12,
                    ..KeyValue::default()
                }),
                prev_kv: None,
            },
        ];
        // Watch IDs 0 (left out on the wire), small, large and negative;
        // a response with and without a header.
        for watch_id in [0, 1, 300, i64::MAX, -5] {
            for header in [Some(header()), None] {
                let frame = WatchFrame::Shared {
                    header: WatchFrame::encode_header(header.as_ref()),
                    watch_id,
                    events: WatchFrame::encode_events(events.clone()),
                };
                let response = WatchResponse {
                    header,
                    watch_id,
                    events: events.clone(),
                    ..WatchResponse::default()
                };
                let (ours, prosts) = both(&frame, &response);
                assert_eq!(ours, prosts, "watch ID {watch_id}, header {header:?}");
                assert_eq!(frame.decoded(), response);
            }
        }
    }

    #[test]
    fn a_message_frame_is_the_message() {
        let response = WatchResponse {
            header: Some(header()),
            watch_id: 7,
            canceled: true,
            compact_revision: 5,
            cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
            ..WatchResponse::default()
        };
        let frame = WatchFrame::Message(response.clone());
        let (ours, prosts) = both(&frame, &response);
        assert_eq!(ours, prosts);
        assert!(frame.tells_of_a_watcher_only());
    }
}
