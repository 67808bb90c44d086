//! A minimal JSON writer for `bftctl --json` (output only; we never parse JSON).
//!
//! Invariant: the output is valid JSON for any input: strings are escaped per RFC 8259,
//! non-finite floats become `null`, and byte strings that are not UTF-8 are written as hex
//! under a `*_hex` key (see [`bytes_field`]).

use crate::keys_file::to_hex;

#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    U64(u64),
    F64(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An object from `(key, value)` pairs, in order.
    pub fn obj(fields: Vec<(&str, Json)>) -> Self {
        Json::Obj(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    pub fn str(s: impl Into<String>) -> Self {
        Json::Str(s.into())
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::U64(n) => out.push_str(&n.to_string()),
            Json::F64(x) if x.is_finite() => out.push_str(&format!("{x}")),
            Json::F64(_) => out.push_str("null"),
            Json::Str(s) => write_str(s, out),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `(name, "text")` when `bytes` are UTF-8, else `(name_hex, "hex")`.
pub fn bytes_field(name: &str, bytes: &[u8]) -> (String, Json) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (name.to_string(), Json::str(s)),
        Err(_) => (format!("{name}_hex"), Json::Str(to_hex(bytes))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_shapes() {
        let j = Json::obj(vec![
            ("a", Json::str("q\"\\\n\u{1}é")),
            ("n", Json::U64(7)),
            ("x", Json::F64(f64::NAN)),
            ("l", Json::Arr(vec![Json::Bool(true), Json::Null])),
        ]);
        assert_eq!(
            j.render(),
            r#"{"a":"q\"\\\n\u0001é","n":7,"x":null,"l":[true,null]}"#
        );
        assert_eq!(bytes_field("value", &[0xff, 0]).0, "value_hex");
        assert_eq!(bytes_field("value", b"ok").1, Json::str("ok"));
    }
}
