//! How an instance is laid out in etcd: its key and its value.
//!
//! [`GoNaming`] is the default: exactly what Go's `etcd/client/v3/naming`
//! writes and reads, so Rust and Go services share a prefix. [`ServerInfo`]
//! is another common layout (a JSON document with name, address, version and
//! weight). Implement [`Codec`] for any other.

use serde_json::{json, Map, Value};

use crate::go_json::to_go_json;

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
/// Reading follows Go's reader: field names match case-insensitively,
/// unknown fields are ignored, `Op` must be a whole number from 0 to 255
/// (and is otherwise ignored: every put is an add), and a value that is not
/// such JSON is skipped. Unlike Go, an empty `Addr` is skipped too: it cannot
/// be dialed.
///
/// # Example
///
/// ```
/// use discovery::{Codec, Endpoint, GoNaming};
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
        let Value::Object(fields) = serde_json::from_slice::<Value>(value).ok()? else {
            return None;
        };
        let field = |name: &str| go_field(&fields, name);
        if let Some(op) = field("op") {
            // Go unmarshals Op into a uint8: anything else is an error.
            op.as_u64().filter(|op| *op <= 255)?;
        }
        let addr = match field("addr") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(addr)) => addr.clone(),
            Some(_) => return None,
        };
        if addr.is_empty() {
            return None;
        }
        let metadata = field("metadata").cloned().unwrap_or(Value::Null);
        Some(Endpoint { id, addr, metadata })
    }
}

/// A field as Go's `encoding/json` finds it: an exact match first, then a
/// case-insensitive one.
fn go_field<'a>(fields: &'a Map<String, Value>, lower: &str) -> Option<&'a Value> {
    fields
        .iter()
        .find(|(k, _)| k.as_str() == capitalized(lower))
        .or_else(|| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(lower)))
        .map(|(_, v)| v)
}

fn capitalized(lower: &str) -> &'static str {
    match lower {
        "op" => "Op",
        "addr" => "Addr",
        _ => "Metadata",
    }
}

/// A JSON server-info layout: key `<service>/<id>`, value
/// `{"name":..,"addr":..,"version":..,"weight":..}` plus any other metadata
/// fields. Metadata must be an object (or null) to round-trip.
///
/// # Example
///
/// ```
/// use discovery::{Codec, Endpoint, ServerInfo};
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
