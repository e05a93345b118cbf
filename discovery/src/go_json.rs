//! JSON as Go's `encoding/json` writes it, byte for byte: object keys sorted,
//! `<`, `>`, `&`, U+2028 and U+2029 escaped, and every number passed through
//! a float64 (so `2.50` is `2.5`, `1e3` is `1000`, and integers beyond 2^53
//! lose precision as they do in Go).

use std::io;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Outputs of Go 1.19's `json.Marshal`, from discovery.md.
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
            to_go_json(&json!("{\"name\":\"host\"}")),
            r#""{\"name\":\"host\"}""#
        );
    }
}
