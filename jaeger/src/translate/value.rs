//! Attribute values as strings, the way the collector's `Value.AsString`
//! renders them: arrays and maps as Go's `encoding/json` writes them (map
//! keys sorted, HTML characters escaped, `1e+21` style exponents), bytes as
//! standard base64.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};

/// The string form of an attribute value; "" when it holds NaN or an
/// infinity inside an array or map (Go's JSON encoder refuses those).
pub fn as_string(v: &AnyValue) -> String {
    match &v.value {
        // A string-table index means nothing outside a profile: empty.
        None | Some(Value::StringValueStrindex(_)) => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => {
            go_float(*d).unwrap_or_else(|| format!("json: unsupported value: {d}"))
        }
        Some(Value::BytesValue(b)) => base64(b),
        Some(Value::ArrayValue(_)) | Some(Value::KvlistValue(_)) => {
            let mut out = String::new();
            if json(v, &mut out) {
                out
            } else {
                String::new()
            }
        }
    }
}

/// Writes `v` as JSON; false when it cannot be (NaN, infinities).
fn json(v: &AnyValue, out: &mut String) -> bool {
    match &v.value {
        None | Some(Value::StringValueStrindex(_)) => out.push_str("null"),
        Some(Value::StringValue(s)) => json_string(s, out),
        Some(Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => out.push_str(&i.to_string()),
        Some(Value::DoubleValue(d)) => match go_float(*d) {
            Some(s) => out.push_str(&s),
            None => return false,
        },
        Some(Value::BytesValue(b)) => {
            out.push('"');
            out.push_str(&base64(b));
            out.push('"');
        }
        Some(Value::ArrayValue(a)) => {
            out.push('[');
            for (i, item) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !json(item, out) {
                    return false;
                }
            }
            out.push(']');
        }
        Some(Value::KvlistValue(kv)) => {
            // A Go map: one value per key (the last one wins), keys sorted.
            let mut entries: BTreeMap<&str, &AnyValue> = BTreeMap::new();
            for item in &kv.values {
                entries.insert(&item.key, item.value.as_ref().unwrap_or(&NULL));
            }
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out);
                out.push(':');
                if !json(v, out) {
                    return false;
                }
            }
            out.push('}');
        }
    }
    true
}

static NULL: AnyValue = AnyValue { value: None };

/// A float as Go's JSON encoder writes it: shortest digits, plain notation
/// within [1e-6, 1e21), `1e+21` / `1e-7` notation outside. None for NaN and
/// infinities, which it refuses.
fn go_float(f: f64) -> Option<String> {
    if !f.is_finite() {
        return None;
    }
    let abs = f.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        return Some(format!("{f}"));
    }
    let s = format!("{f:e}");
    Some(match s.split_once('e') {
        Some((mantissa, e)) if !e.starts_with('-') => format!("{mantissa}e+{e}"),
        _ => s,
    })
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValue, KeyValueList};

    fn s(v: &str) -> AnyValue {
        AnyValue {
            value: Some(Value::StringValue(v.into())),
        }
    }
    fn d(v: f64) -> AnyValue {
        AnyValue {
            value: Some(Value::DoubleValue(v)),
        }
    }
    fn arr(values: Vec<AnyValue>) -> AnyValue {
        AnyValue {
            value: Some(Value::ArrayValue(ArrayValue { values })),
        }
    }

    #[test]
    fn arrays_and_maps_render_like_go_json() {
        let v = arr(vec![
            s("a<b>&\"c\"\n"),
            AnyValue {
                value: Some(Value::IntValue(-3)),
            },
            d(1.0),
            d(0.5),
            d(1e21),
            d(1.5e-7),
            d(123456789.0),
            AnyValue {
                value: Some(Value::BoolValue(false)),
            },
            AnyValue {
                value: Some(Value::BytesValue(vec![0xde, 0xad, 0xbe, 0xef])),
            },
            AnyValue { value: None },
        ]);
        assert_eq!(
            as_string(&v),
            r#"["a\u003cb\u003e\u0026\"c\"\n",-3,1,0.5,1e+21,1.5e-7,123456789,false,"3q2+7w==",null]"#
        );
        let m = AnyValue {
            value: Some(Value::KvlistValue(KeyValueList {
                values: vec![
                    KeyValue {
                        key: "z".into(),
                        value: Some(s("last")),
                        ..Default::default()
                    },
                    KeyValue {
                        key: "a".into(),
                        value: Some(arr(vec![])),
                        ..Default::default()
                    },
                    KeyValue {
                        key: "z".into(),
                        value: Some(s("wins")),
                        ..Default::default()
                    },
                ],
            })),
        };
        assert_eq!(as_string(&m), r#"{"a":[],"z":"wins"}"#);
        assert_eq!(as_string(&arr(vec![d(f64::NAN)])), "");
    }

    #[test]
    fn scalars_and_base64() {
        assert_eq!(as_string(&d(1e-5)), "0.00001");
        assert_eq!(as_string(&d(-2e-7)), "-2e-7");
        assert_eq!(as_string(&d(2.5)), "2.5");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }
}
