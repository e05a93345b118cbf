//! JSON as Go's `encoding/json` writes and reads it.
//!
//! Writing, byte for byte: object keys sorted, `<`, `>`, `&`, U+2028 and
//! U+2029 escaped, and every number passed through a float64 (so `2.50` is
//! `2.5`, `1e3` is `1000`, and integers beyond 2^53 lose precision as they
//! do in Go).
//!
//! Reading: Go accepts string literals that serde_json refuses, so
//! [`object_members`] first rewrites them as Go decodes them (invalid UTF-8
//! and lone surrogate escapes become U+FFFD), and keeps an object's members
//! in document order, duplicates included, for a caller that must apply
//! them one by one as Go does.
//!
//! One difference remains: serde_json refuses nesting deeper than 128
//! levels, where Go allows 10,000. No instance value nests that deep.

use std::borrow::Cow;
use std::fmt;
use std::io;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::ser::Formatter;
use serde_json::Value;

/// Serializes `value` as Go's `json.Marshal` would.
pub(crate) fn to_go_json(value: &Value) -> String {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    // Writing a `Value` to memory cannot fail.
    let _ = serde::Serialize::serialize(value, &mut serializer);
    String::from_utf8(out).unwrap_or_default()
}

struct GoFormatter;

/// Go's float formatting in `encoding/json`: shortest representation, plain
/// decimal for 1e-6 ≤ |f| < 1e21, exponent form outside (with `e+21`,
/// `e-7`).
fn go_float(f: f64) -> String {
    if !f.is_finite() {
        // Go refuses these; JSON has no spelling for them.
        return "null".to_owned();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let text = format!("{f:e}");
        return match text.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
            _ => text,
        };
    }
    let text = format!("{f}");
    text.strip_suffix(".0").map_or(text.clone(), str::to_owned)
}

impl Formatter for GoFormatter {
    fn write_i64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: i64) -> io::Result<()> {
        writer.write_all(go_float(value as f64).as_bytes())
    }

    fn write_u64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: u64) -> io::Result<()> {
        writer.write_all(go_float(value as f64).as_bytes())
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(go_float(value).as_bytes())
    }

    // Control characters are left to serde_json, which writes `\b` and `\f`
    // as two-character escapes (and the others as `\u00XX`). Go writes the
    // same from Go 1.22 on; earlier versions wrote `\u0008` and `\u000c`.
    // Either form reads back the same everywhere, and a byte-exact match is
    // kept with current Go.

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// The members of the JSON object in `text`, in document order and with
/// duplicate names kept, read as Go's `encoding/json` reads them; `None` if
/// `text` is not exactly one JSON object.
pub(crate) fn object_members(text: &[u8]) -> Option<Vec<(String, Value)>> {
    let text = go_strings(text);
    serde_json::from_slice::<Members>(&text).ok().map(|m| m.0)
}

/// An object's members in document order (serde_json's `Map` sorts them
/// and keeps one member per name).
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;

        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor)
    }
}

/// `text` with its string literals rewritten the way Go's decoder reads
/// them, so that serde_json accepts what Go accepts and reads the same
/// characters:
///
/// - each byte of invalid UTF-8 becomes U+FFFD (Go decodes rune by rune and
///   an invalid rune is one byte wide, so a truncated three-byte sequence is
///   two U+FFFD, not the single one of `String::from_utf8_lossy`);
/// - a `\u` escape of a surrogate that is not the high half of a valid pair
///   (written as two escapes) becomes `\uFFFD`.
///
/// Bytes outside string literals are left alone: anything invalid there is
/// a syntax error for both decoders.
fn go_strings(text: &[u8]) -> Cow<'_, [u8]> {
    if text.is_ascii() && !text.windows(3).any(|w| w.eq_ignore_ascii_case(b"\\ud")) {
        // Nothing to rewrite (the common case: Go and Rust writers).
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len());
    let mut in_string = false;
    let mut i = 0;
    while i < text.len() {
        let byte = text[i];
        if !in_string {
            in_string = byte == b'"';
            out.push(byte);
            i += 1;
            continue;
        }
        match byte {
            b'"' => {
                in_string = false;
                out.push(byte);
                i += 1;
            }
            b'\\' => match text.get(i + 1) {
                Some(b'u') => match hex4(text, i + 2) {
                    Some(unit) if is_surrogate(unit) => {
                        let low = (text.get(i + 6..i + 8) == Some(b"\\u"))
                            .then(|| hex4(text, i + 8))
                            .flatten();
                        let pair = is_high_surrogate(unit)
                            && low.is_some_and(|low| (0xDC00..=0xDFFF).contains(&low));
                        if pair {
                            out.extend_from_slice(&text[i..i + 12]);
                            i += 12;
                        } else {
                            // Go reads the lone half as U+FFFD and goes on
                            // right after it.
                            out.extend_from_slice(b"\\uFFFD");
                            i += 6;
                        }
                    }
                    // A plain escape, or a malformed one serde_json refuses
                    // as Go does.
                    _ => {
                        out.extend_from_slice(&text[i..i + 2]);
                        i += 2;
                    }
                },
                Some(&escaped) => {
                    out.extend_from_slice(&[byte, escaped]);
                    i += 2;
                }
                None => {
                    out.push(byte);
                    i += 1;
                }
            },
            0x80.. => {
                // A run of non-ASCII bytes (no quote or backslash inside).
                let end = text[i..]
                    .iter()
                    .position(u8::is_ascii)
                    .map_or(text.len(), |n| i + n);
                for chunk in text[i..end].utf8_chunks() {
                    out.extend_from_slice(chunk.valid().as_bytes());
                    for _ in chunk.invalid() {
                        out.extend_from_slice("\u{FFFD}".as_bytes());
                    }
                }
                i = end;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// The four hex digits at `text[at..at + 4]` as a UTF-16 code unit.
fn hex4(text: &[u8], at: usize) -> Option<u16> {
    let digits = std::str::from_utf8(text.get(at..at + 4)?).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(digits, 16).ok()
}

fn is_surrogate(unit: u16) -> bool {
    (0xD800..=0xDFFF).contains(&unit)
}

fn is_high_surrogate(unit: u16) -> bool {
    (0xD800..=0xDBFF).contains(&unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Outputs of Go's `json.Marshal`, from discovery.md (Go 1.19; control
    /// characters as Go 1.22 writes them).
    #[test]
    fn matches_go_byte_for_byte() {
        assert_eq!(
            to_go_json(&json!({"weight": 3, "zone": "a"})),
            r#"{"weight":3,"zone":"a"}"#
        );
        assert_eq!(
            to_go_json(&json!({"zone": "a", "weight": 3})),
            r#"{"weight":3,"zone":"a"}"#,
            "keys sorted"
        );
        assert_eq!(to_go_json(&json!("<a&b>")), r#""\u003ca\u0026b\u003e""#);
        assert_eq!(to_go_json(&json!("\u{2028}\u{2029}")), r#""\u2028\u2029""#);
        assert_eq!(to_go_json(&json!(2.50)), "2.5");
        assert_eq!(to_go_json(&json!(1e3)), "1000");
        assert_eq!(
            to_go_json(&json!(9_007_199_254_740_993u64)),
            "9007199254740992"
        );
        assert_eq!(to_go_json(&json!(1e21)), "1e+21");
        assert_eq!(to_go_json(&json!(1.5e-7)), "1.5e-7");
        assert_eq!(to_go_json(&json!(0.000001)), "0.000001");
        assert_eq!(to_go_json(&json!(-0.5)), "-0.5");
        assert_eq!(to_go_json(&json!(null)), "null");
        assert_eq!(
            to_go_json(&json!("\u{8}\u{c}\n\u{1}")),
            r#""\b\f\n\u0001""#,
            "as Go 1.22 and later write them"
        );
        assert_eq!(
            to_go_json(&json!("{\"name\":\"host\"}")),
            r#""{\"name\":\"host\"}""#
        );
    }
}

#[cfg(test)]
mod reader_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_keep_document_order_and_duplicates() {
        let members = object_members(br#"{"b":1,"a":2,"b":3}"#).unwrap();
        assert_eq!(
            members,
            [
                ("b".to_owned(), json!(1)),
                ("a".to_owned(), json!(2)),
                ("b".to_owned(), json!(3))
            ]
        );
        assert!(object_members(b"[1]").is_none());
        assert!(object_members(b"{} {}").is_none());
    }

    #[test]
    fn strings_are_rewritten_only_where_go_and_serde_differ() {
        let text = br#"{"k":"a\"b\u00e9"}"#;
        assert!(matches!(go_strings(text), Cow::Borrowed(_)));
        assert_eq!(
            &*go_strings(b"{\"k\":\"\\\\\\ud800\xff\"}"),
            "{\"k\":\"\\\\\\uFFFD\u{FFFD}\"}".as_bytes(),
            "an escaped backslash, then a lone surrogate, then a bad byte"
        );
        assert_eq!(
            &*go_strings(b"\xff{\"k\":1}"),
            b"\xff{\"k\":1}",
            "outside strings nothing changes"
        );
    }
}
