//! JSON as Python writes it. `json.dumps` (RHAPSODY's checkpoint files, NoETL's
//! and AsyncFlow's HTTP clients) writes the non-finite floats as the bare tokens
//! `NaN`, `Infinity` and `-Infinity`, which strict JSON parsers refuse. Before
//! parsing, [`mark_non_finite`] turns each such token (outside strings) into a
//! marker string that cannot occur in accepted text (it starts with a NUL,
//! and NUL is refused everywhere else); [`write_value`] turns the markers back
//! into the bare tokens (`Python` style, what `json.loads` reads back) or into
//! the strings `"NaN"`, `"Infinity"`, `"-Infinity"` (`Strict` style, for
//! consumers that need strict JSON).

use std::borrow::Cow;

use serde_json::Value;

/// Marker of a `NaN` token.
pub const NAN_MARK: &str = "\u{0}NaN";
/// Marker of an `Infinity` token.
pub const INF_MARK: &str = "\u{0}Infinity";
/// Marker of a `-Infinity` token.
pub const NEG_INF_MARK: &str = "\u{0}-Infinity";

/// How non-finite numbers are written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonFinite {
    /// As Python's `json.dumps` writes them: `NaN`, `Infinity`, `-Infinity`.
    Python,
    /// As the strings `"NaN"`, `"Infinity"`, `"-Infinity"` (strict JSON).
    Strict,
}

impl NonFinite {
    /// The `json` query parameter: `python` or `strict`.
    pub fn from_param(value: &str) -> Result<NonFinite, String> {
        match value {
            "python" => Ok(NonFinite::Python),
            "strict" => Ok(NonFinite::Strict),
            other => Err(format!(
                "`json` must be `python` (NaN and Infinity as Python writes them) or `strict` (as strings), not `{other}`"
            )),
        }
    }
}

/// The number a marker string stands for.
pub fn marker_value(s: &str) -> Option<f64> {
    match s {
        NAN_MARK => Some(f64::NAN),
        INF_MARK => Some(f64::INFINITY),
        NEG_INF_MARK => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Rewrites the bare tokens `NaN`, `Infinity` and `-Infinity` outside strings
/// as marker strings. Borrows the input when it has none.
pub fn mark_non_finite(input: &[u8]) -> Cow<'_, [u8]> {
    // Allocated at the first token; `copied` bytes of the input are in it.
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        // Outside strings, valid JSON never holds an `N` or an `I`.
        let rest = &input[i..];
        let found: Option<(usize, &str)> = match b {
            b'"' => {
                in_string = true;
                None
            }
            b'N' if rest.starts_with(b"NaN") => Some((3, NAN_MARK)),
            b'I' if rest.starts_with(b"Infinity") => Some((8, INF_MARK)),
            b'-' if rest.starts_with(b"-Infinity") => Some((9, NEG_INF_MARK)),
            _ => None,
        };
        let Some((len, mark)) = found else {
            i += 1;
            continue;
        };
        let o = out.get_or_insert_with(|| Vec::with_capacity(input.len() + 64));
        o.extend_from_slice(&input[copied..i]);
        // The NUL as a JSON escape, so the output stays valid JSON text.
        o.extend_from_slice(b"\"\\u0000");
        o.extend_from_slice(&mark.as_bytes()[1..]);
        o.push(b'"');
        i += len;
        copied = i;
    }
    match out {
        None => Cow::Borrowed(input),
        Some(mut o) => {
            o.extend_from_slice(&input[copied..]);
            Cow::Owned(o)
        }
    }
}

/// The marker string of a non-finite number (`None` for a finite one).
pub fn marker_of(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some(NAN_MARK)
    } else if v == f64::INFINITY {
        Some(INF_MARK)
    } else if v == f64::NEG_INFINITY {
        Some(NEG_INF_MARK)
    } else {
        None
    }
}

/// Deserializes a number, or the marker string [`mark_non_finite`] made of
/// `NaN`, `Infinity` or `-Infinity`. Any other string is refused.
pub fn deserialize_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct Number;
    impl serde::de::Visitor<'_> for Number {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number (NaN, Infinity and -Infinity as Python writes them)")
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<f64, E> {
            marker_value(v).ok_or_else(|| E::invalid_type(serde::de::Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(Number)
}

/// Serializes a number; a non-finite one as its marker string, which
/// [`write_value`] writes out in the chosen style.
pub fn serialize_f64<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    match marker_of(*v) {
        Some(mark) => s.serialize_str(mark),
        None => s.serialize_f64(*v),
    }
}

/// A JSON answer whose numbers may be non-finite (fields serialized with
/// [`serialize_f64`]), written in the given style.
pub fn response_text<T: serde::Serialize>(v: &T, style: NonFinite) -> String {
    let value = serde_json::to_value(v).unwrap_or(Value::Null);
    let mut out = String::new();
    write_value(&mut out, &value, style);
    out
}

/// Writes `v` as JSON text, markers in the given style.
pub fn write_value(out: &mut String, v: &Value, style: NonFinite) {
    match v {
        Value::String(s) => match marker_value(s) {
            Some(_) => {
                let token = &s[1..];
                match style {
                    NonFinite::Python => out.push_str(token),
                    NonFinite::Strict => {
                        out.push('"');
                        out.push_str(token);
                        out.push('"');
                    }
                }
            }
            None => write_string(out, s),
        },
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, style);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, item, style);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Writes a JSON string literal.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => {
                out.push_str(&s[start..i]);
                out.push_str(&format!("\\u{:04x}", c as u32));
                start = i + c.len_utf8();
                continue;
            }
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(escape);
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Rewrites stored (Python-style) JSON text in strict style: bare non-finite
/// tokens become strings. Borrows when there are none.
pub fn strict_text(text: &str) -> Cow<'_, str> {
    match mark_non_finite(text.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(marked) => {
            // `\u0000NaN` → `NaN`: the marked text without the escaped NUL.
            let marked = String::from_utf8_lossy(&marked).into_owned();
            Cow::Owned(marked.replace("\"\\u0000", "\""))
        }
    }
}

/// Whether any string in `v` (keys included) holds a NUL that is not a
/// marker: refused, as neither backend stores one and markers must stay
/// unambiguous.
pub fn has_stray_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0') && marker_value(s).is_none(),
        Value::Array(items) => items.iter().any(has_stray_nul),
        Value::Object(map) => map
            .iter()
            .any(|(k, item)| k.contains('\0') || has_stray_nul(item)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str, style: NonFinite) -> String {
        let marked = mark_non_finite(text.as_bytes());
        let v: Value = serde_json::from_slice(&marked).expect("parses");
        let mut out = String::new();
        write_value(&mut out, &v, style);
        out
    }

    #[test]
    fn python_tokens_survive_a_round_trip_and_strings_are_left_alone() {
        let text =
            r#"{"a":NaN,"b":[Infinity,-Infinity,1.5],"c":"NaN Infinity \"-Infinity\"","d":-1}"#;
        assert_eq!(round_trip(text, NonFinite::Python), text);
        assert_eq!(
            round_trip(text, NonFinite::Strict),
            r#"{"a":"NaN","b":["Infinity","-Infinity",1.5],"c":"NaN Infinity \"-Infinity\"","d":-1}"#
        );
        assert!(matches!(
            mark_non_finite(br#"{"x":"NaN"}"#),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            strict_text(r#"{"a":NaN,"b":"I"}"#),
            r#"{"a":"NaN","b":"I"}"#
        );
    }

    #[test]
    fn floats_come_back_bit_exact() {
        for f in [
            0.1f64,
            1700000000.123456,
            1.0 / 3.0,
            5e-324,
            1.7976931348623157e308,
            -0.0,
            123456789.98765433,
        ] {
            let text = format!("{{\"v\":{}}}", serde_json::to_string(&f).expect("f"));
            let v: Value = serde_json::from_str(&text).expect("parses");
            let back = v["v"].as_f64().expect("f64");
            assert_eq!(back.to_bits(), f.to_bits(), "{f}");
            let mut out = String::new();
            write_value(&mut out, &v, NonFinite::Python);
            let again: Value = serde_json::from_str(&out).expect("parses");
            assert_eq!(again["v"].as_f64().map(f64::to_bits), Some(f.to_bits()));
        }
    }

    #[test]
    fn control_characters_are_escaped_and_stray_nuls_found() {
        let mut out = String::new();
        write_string(&mut out, "a\u{1}b\"c\\\n");
        assert_eq!(out, r#""a\u0001b\"c\\\n""#);
        let v: Value = serde_json::from_str(r#"{"k":"x\u0000"}"#).expect("parses");
        assert!(has_stray_nul(&v));
        let v: Value = serde_json::from_slice(&mark_non_finite(b"[NaN]")).expect("parses");
        assert!(!has_stray_nul(&v));
    }
}
