//! How an instance is laid out in etcd: its key and its value.
//!
//! [`GoNaming`] is the default: exactly what Go's `etcd/client/v3/naming`
//! writes and reads, so Rust and Go services share a prefix. [`ServerInfo`]
//! is another common layout (a JSON document with name, address, version and
//! weight). Implement [`Codec`] for any other.

use serde_json::{json, Map, Value};

use crate::go_json::{self, to_go_json};

/// One instance of a service, as registered in etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// The instance's ID: the part of the key after `<service>/`.
    pub id: String,
    /// Where to reach it: `host:port`, as grpc-go dials it.
    pub addr: String,
    /// Anything else (weight, zone, version...); `null` if none.
    pub metadata: Value,
}

impl Endpoint {
    /// The `weight` in the metadata, 1 if absent or not a positive number.
    pub fn weight(&self) -> u32 {
        self.metadata
            .get("weight")
            .and_then(Value::as_f64)
            .filter(|w| *w >= 1.0)
            .map_or(1, |w| w.min(f64::from(u32::MAX)) as u32)
    }

    /// `http://<addr>`, for a tonic endpoint.
    pub fn uri(&self) -> String {
        if self.addr.contains("://") {
            self.addr.clone()
        } else {
            format!("http://{}", self.addr)
        }
    }
}

/// A layout of instance values in etcd. Keys are always
/// `<service>/<instance id>` (the prefix the resolver lists and watches, as
/// Go's resolver does); a codec chooses the ID's meaning and the value.
pub trait Codec: Send + Sync + std::fmt::Debug + 'static {
    /// The value stored for an instance.
    fn encode(&self, endpoint: &Endpoint) -> Vec<u8>;

    /// The instance stored under `key` (which starts with `<service>/`), or
    /// `None` for a value this layout skips.
    fn decode(&self, service: &str, key: &[u8], value: &[u8]) -> Option<Endpoint>;
}

/// The key of instance `id` of `service`: `<service>/<id>`.
pub(crate) fn instance_key(service: &str, id: &str) -> String {
    format!("{service}/{id}")
}

/// The instance ID in a key `<service>/<id>`.
pub(crate) fn instance_id(service: &str, key: &[u8]) -> Option<String> {
    let key = std::str::from_utf8(key).ok()?;
    key.strip_prefix(service)?
        .strip_prefix('/')
        .map(str::to_owned)
}

/// Go's `naming/endpoints` layout: key `<service>/<id>`, value
/// `{"Op":0,"Addr":"host:port","Metadata":<json>}` as Go's `encoding/json`
/// writes it.
///
/// Reading follows Go's reader (`encoding/json` into
/// `Update{Op uint8; Addr string; Metadata any}`): field names match
/// case-insensitively and the last of several matches wins, unknown fields
/// are ignored, `null` leaves `Op` and `Addr` as they were, `Op` must be a
/// whole number from 0 to 255 (and is otherwise ignored: every put is an
/// add), invalid UTF-8 and lone surrogate escapes in strings read as
/// U+FFFD, and a value that is not such JSON is skipped. Unlike Go, an empty
/// `Addr` is skipped too: it cannot be dialed.
///
/// # Example
///
/// ```
/// use etcd_grpc_discovery::{Codec, Endpoint, GoNaming};
///
/// let endpoint = Endpoint {
///     id: "10.0.0.1:50051".into(),
///     addr: "10.0.0.1:50051".into(),
///     metadata: serde_json::json!({"zone": "a", "weight": 3}),
/// };
/// let value = GoNaming.encode(&endpoint);
/// assert_eq!(value, br#"{"Op":0,"Addr":"10.0.0.1:50051","Metadata":{"weight":3,"zone":"a"}}"#);
/// assert_eq!(GoNaming.decode("svc", b"svc/10.0.0.1:50051", &value), Some(endpoint));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct GoNaming;

impl Codec for GoNaming {
    fn encode(&self, endpoint: &Endpoint) -> Vec<u8> {
        // Go writes the struct's fields in declaration order, then
        // Metadata through the generic encoder (sorted keys).
        format!(
            "{{\"Op\":0,\"Addr\":{},\"Metadata\":{}}}",
            to_go_json(&Value::String(endpoint.addr.clone())),
            to_go_json(&endpoint.metadata)
        )
        .into_bytes()
    }

    fn decode(&self, service: &str, key: &[u8], value: &[u8]) -> Option<Endpoint> {
        let id = instance_id(service, key)?;
        // Go unmarshals into `Update{Op uint8; Addr string; Metadata any}`,
        // applying the members in document order: each name matches a field
        // case-insensitively (an exact match is preferred only between
        // fields that differ in case alone, and `Update` has none), so of
        // several members for one field the last wins. Go folds names with
        // Unicode simple folding, but no non-ASCII letter folds to a letter
        // of these three names, so ASCII folding is the same here.
        let mut addr = String::new();
        let mut metadata = Value::Null;
        for (name, member) in go_json::object_members(value)? {
            if name.eq_ignore_ascii_case("op") {
                match member {
                    // Null leaves a non-pointer field as it was (zero).
                    Value::Null => {}
                    // A uint8 takes only a whole number from 0 to 255 (Go
                    // parses the literal itself: no sign, fraction or
                    // exponent, which serde_json reads as floats). Its
                    // value does not matter: every put is an add.
                    Value::Number(op) if op.as_u64().is_some_and(|op| op <= 255) => {}
                    _ => return None,
                }
            } else if name.eq_ignore_ascii_case("addr") {
                match member {
                    Value::Null => {}
                    Value::String(value) => addr = value,
                    _ => return None,
                }
            } else if name.eq_ignore_ascii_case("metadata") {
                // Null sets an interface to nil, like any other value.
                metadata = member;
            }
        }
        if addr.is_empty() {
            return None;
        }
        Some(Endpoint { id, addr, metadata })
    }
}

/// A JSON server-info layout: key `<service>/<id>`, value
/// `{"name":..,"addr":..,"version":..,"weight":..}` plus any other metadata
/// fields. Metadata must be an object (or null) to round-trip.
///
/// # Example
///
/// ```
/// use etcd_grpc_discovery::{Codec, Endpoint, ServerInfo};
///
/// let endpoint = Endpoint {
///     id: "a".into(),
///     addr: "10.0.0.1:80".into(),
///     metadata: serde_json::json!({"name": "api", "version": "1.2.0", "weight": 5}),
/// };
/// let value = ServerInfo.encode(&endpoint);
/// let back = ServerInfo.decode("svc", b"svc/a", &value).unwrap();
/// assert_eq!((back.addr.as_str(), back.weight()), ("10.0.0.1:80", 5));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerInfo;

impl Codec for ServerInfo {
    fn encode(&self, endpoint: &Endpoint) -> Vec<u8> {
        let mut doc = match &endpoint.metadata {
            Value::Object(map) => map.clone(),
            Value::Null => Map::new(),
            other => {
                let mut map = Map::new();
                map.insert("metadata".into(), other.clone());
                map
            }
        };
        doc.insert("addr".into(), json!(endpoint.addr));
        serde_json::to_vec(&Value::Object(doc)).unwrap_or_default()
    }

    fn decode(&self, service: &str, key: &[u8], value: &[u8]) -> Option<Endpoint> {
        let id = instance_id(service, key)?;
        let Value::Object(mut doc) = serde_json::from_slice::<Value>(value).ok()? else {
            return None;
        };
        let addr = match doc.remove("addr") {
            Some(Value::String(addr)) if !addr.is_empty() => addr,
            _ => return None,
        };
        let metadata = if doc.is_empty() {
            Value::Null
        } else {
            Value::Object(doc)
        };
        Some(Endpoint { id, addr, metadata })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(value: &str) -> Option<Endpoint> {
        GoNaming.decode("svc", b"svc/i1", value.as_bytes())
    }

    /// Go's writer, byte for byte (values from discovery.md, made by Go).
    #[test]
    fn go_values_byte_for_byte() {
        let e = |addr: &str, metadata: Value| Endpoint {
            id: "x".into(),
            addr: addr.into(),
            metadata,
        };
        assert_eq!(
            GoNaming.encode(&e("127.0.0.1:2000", Value::Null)),
            br#"{"Op":0,"Addr":"127.0.0.1:2000","Metadata":null}"#
        );
        assert_eq!(
            GoNaming.encode(&e("10.0.0.1:50051", json!({"zone": "a", "weight": 3}))),
            br#"{"Op":0,"Addr":"10.0.0.1:50051","Metadata":{"weight":3,"zone":"a"}}"#
        );
        assert_eq!(
            GoNaming.encode(&e("h:1", json!("{\"name\":\"host\"}"))),
            br#"{"Op":0,"Addr":"h:1","Metadata":"{\"name\":\"host\"}"}"#
        );
        assert_eq!(
            GoNaming.encode(&e("<h>&:1", json!(2.50))),
            br#"{"Op":0,"Addr":"\u003ch\u003e\u0026:1","Metadata":2.5}"#
        );
    }

    #[test]
    fn go_reader_rules() {
        assert_eq!(
            decode(r#"{"Op":0,"Addr":"a:1","Metadata":null}"#)
                .unwrap()
                .addr,
            "a:1"
        );
        assert_eq!(
            decode(r#"{"op":0,"addr":"a:1"}"#).unwrap().addr,
            "a:1",
            "keys match case-insensitively"
        );
        assert_eq!(
            decode(r#"{"ADDR":"a:1","Extra":true}"#).unwrap().addr,
            "a:1",
            "unknown keys ignored"
        );
        assert_eq!(
            decode(r#"{"Op":1,"Addr":"a:1"}"#).unwrap().addr,
            "a:1",
            "every put is an add"
        );
        assert!(
            decode(r#"{"Op":"0","Addr":"a:1"}"#).is_none(),
            "a string Op fails in Go"
        );
        assert!(
            decode(r#"{"Op":256,"Addr":"a:1"}"#).is_none(),
            "out of uint8 range"
        );
        assert!(decode(r#"{"Op":1.5,"Addr":"a:1"}"#).is_none());
        assert!(decode("a:1").is_none(), "not JSON");
        assert!(decode(r#"{"Addr":""}"#).is_none(), "nothing to dial");
        assert!(decode(r#"{"Addr":5}"#).is_none());
        assert_eq!(
            decode(r#"{"Addr":"a:1","Metadata":"s"}"#).unwrap().metadata,
            json!("s")
        );
        assert!(
            GoNaming
                .decode("svc", b"svc2/i1", br#"{"Addr":"a:1"}"#)
                .is_none(),
            "another service"
        );
    }

    /// Go's reader on inputs another writer can produce, as Go's
    /// `encoding/json` decodes them into `Update{Op uint8; Addr string;
    /// Metadata any}`.
    #[test]
    fn go_reader_null_fields_keep_their_value() {
        assert_eq!(
            decode(r#"{"Op":null,"Addr":"a:1"}"#).unwrap().addr,
            "a:1",
            "null for Op (a uint8) leaves it 0: listed"
        );
        assert_eq!(
            decode(r#"{"Addr":"a:1","addr":null}"#).unwrap().addr,
            "a:1",
            "null for Addr (a string) leaves it as it was"
        );
        assert_eq!(
            decode(r#"{"Addr":"a:1","Metadata":{"weight":2},"metadata":null}"#)
                .unwrap()
                .metadata,
            Value::Null,
            "null for Metadata (an interface) sets it to nil"
        );
    }

    #[test]
    fn go_reader_duplicate_keys_last_one_wins_whatever_its_case() {
        assert_eq!(
            decode(r#"{"Addr":"a:1","addr":"b:2"}"#).unwrap().addr,
            "b:2"
        );
        assert_eq!(
            decode(r#"{"addr":"b:2","Addr":"a:1"}"#).unwrap().addr,
            "a:1"
        );
        assert_eq!(
            decode(r#"{"Addr":"a:1","METADATA":1,"Metadata":2,"metaData":3}"#)
                .unwrap()
                .metadata,
            json!(3)
        );
        assert!(
            decode(r#"{"Op":0,"oP":"x","Addr":"a:1"}"#).is_none(),
            "every member is decoded: a bad duplicate fails the value"
        );
    }

    #[test]
    fn go_reader_invalid_utf8_becomes_replacement_characters() {
        let decode_bytes = |value: &[u8]| GoNaming.decode("svc", b"svc/i1", value);
        assert_eq!(
            decode_bytes(b"{\"Addr\":\"a\xff:1\"}").unwrap().addr,
            "a\u{FFFD}:1"
        );
        // Go replaces byte by byte: a truncated 3-byte sequence is two
        // U+FFFD (Rust's lossy conversion would make it one).
        assert_eq!(
            decode_bytes(b"{\"Addr\":\"a\xe2\x82:1\"}").unwrap().addr,
            "a\u{FFFD}\u{FFFD}:1"
        );
        assert_eq!(
            decode_bytes(b"{\"Addr\":\"h\xc3\xa9:1\",\"Metadata\":{\"zone\":\"\xc0\"}}").unwrap(),
            Endpoint {
                id: "i1".into(),
                addr: "h\u{e9}:1".into(),
                metadata: json!({"zone": "\u{FFFD}"}),
            },
            "valid UTF-8 is kept; metadata strings follow the same rule"
        );
        assert!(
            decode_bytes(b"{\"Addr\":\"a:1\"}\xff").is_none(),
            "outside strings, invalid bytes are a syntax error in Go too"
        );
    }

    #[test]
    fn go_reader_lone_surrogate_escapes_become_replacement_characters() {
        assert_eq!(
            decode(r#"{"Addr":"a\uD800:1"}"#).unwrap().addr,
            "a\u{FFFD}:1"
        );
        assert_eq!(
            decode(r#"{"Addr":"a\uDC00:1"}"#).unwrap().addr,
            "a\u{FFFD}:1"
        );
        assert_eq!(
            decode(r#"{"Addr":"\uD800\uD800\uDC00"}"#).unwrap().addr,
            "\u{FFFD}\u{10000}",
            "a high surrogate followed by a valid pair"
        );
        assert_eq!(
            decode(r#"{"Addr":"\uD83D\uDE00:1"}"#).unwrap().addr,
            "\u{1F600}:1",
            "a valid pair"
        );
        assert_eq!(
            decode(r#"{"Addr":"a:1","Metadata":"\udfff"}"#)
                .unwrap()
                .metadata,
            json!("\u{FFFD}")
        );
    }

    #[test]
    fn weights() {
        let e = |metadata: Value| Endpoint {
            id: String::new(),
            addr: String::new(),
            metadata,
        };
        assert_eq!(e(json!({"weight": 5})).weight(), 5);
        assert_eq!(e(json!({"weight": 0})).weight(), 1);
        assert_eq!(e(json!({"weight": "x"})).weight(), 1);
        assert_eq!(e(Value::Null).weight(), 1);
    }
}
