//! The tag names the translation shares with the collector, and conversions
//! between OTLP attribute values and Zipkin's string tags.

use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValue};

/// Present on failed spans; `"true"` when written by an OTLP translator.
pub const ERROR: &str = "error";
/// `STATUS_CODE_OK` or `STATUS_CODE_ERROR`; absent for unset status.
pub const STATUS_CODE: &str = "otel.status_code";
pub const STATUS_DESCRIPTION: &str = "otel.status_description";
/// `internal` for OTLP internal spans, which Zipkin has no kind for.
pub const SPAN_KIND: &str = "span.kind";
pub const TRACE_STATE: &str = "w3c.tracestate";
pub const LIBRARY_NAME: &str = "otel.library.name";
pub const LIBRARY_VERSION: &str = "otel.library.version";
pub const SCOPE_NAME: &str = "otel.scope.name";
pub const SCOPE_VERSION: &str = "otel.scope.version";
/// The resource key the service name was taken from, when not `service.name`.
pub const SERVICE_NAME_SOURCE: &str = "otlp.service.name.source";
/// Set (true) on spans whose Zipkin timestamp was missing.
pub const START_TIME_ABSENT: &str = "otel.zipkin.absentField.startTime";
/// `otlp.link.<i>`: `trace-id|span-id|tracestate|attributes-json|dropped`.
pub const LINK_PREFIX: &str = "otlp.link.";
/// Links read back from tags, at most (as the collector).
pub const MAX_LINKS: usize = 128;

pub const SERVICE_NAME: &str = "service.name";
pub const PEER_SERVICE: &str = "peer.service";
pub const NET_PEER_IP: &str = "net.peer.ip";
pub const NET_PEER_PORT: &str = "net.peer.port";
pub const NET_HOST_IP: &str = "net.host.ip";
pub const NET_HOST_PORT: &str = "net.host.port";

/// Where a missing `service.name` is looked for, in order.
pub const SERVICE_NAME_FALLBACKS: [&str; 3] = [
    "faas.name",
    "k8s.deployment.name",
    "process.executable.name",
];

/// Tags that describe the resource rather than the span: the resource
/// semantic conventions the collector's translator knows (semconv 1.6.1),
/// plus its OpenCensus leftovers. Sorted, for binary search.
const RESOURCE_KEYS: &[&str] = &[
    "aws.ecs.cluster.arn",
    "aws.ecs.container.arn",
    "aws.ecs.launchtype",
    "aws.ecs.task.arn",
    "aws.ecs.task.family",
    "aws.ecs.task.revision",
    "aws.eks.cluster.arn",
    "aws.log.group.arns",
    "aws.log.group.names",
    "aws.log.stream.arns",
    "aws.log.stream.names",
    "cloud.account.id",
    "cloud.availability_zone",
    "cloud.platform",
    "cloud.provider",
    "cloud.region",
    "container.id",
    "container.image.name",
    "container.image.tag",
    "container.name",
    "container.runtime",
    "deployment.environment",
    "device.id",
    "device.model.identifier",
    "device.model.name",
    "faas.id",
    "faas.instance",
    "faas.max_memory",
    "faas.name",
    "faas.version",
    "host.arch",
    "host.id",
    "host.image.id",
    "host.image.name",
    "host.image.version",
    "host.name",
    "host.type",
    "k8s.cluster.name",
    "k8s.container.name",
    "k8s.cronjob.name",
    "k8s.cronjob.uid",
    "k8s.daemonset.name",
    "k8s.daemonset.uid",
    "k8s.deployment.name",
    "k8s.deployment.uid",
    "k8s.job.name",
    "k8s.job.uid",
    "k8s.namespace.name",
    "k8s.node.name",
    "k8s.node.uid",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.replicaset.name",
    "k8s.replicaset.uid",
    "k8s.statefulset.name",
    "k8s.statefulset.uid",
    "opencensus.exporterversion",
    "opencensus.resourcetype",
    "opencensus.starttime",
    "os.description",
    "os.name",
    "os.type",
    "os.version",
    "process.command",
    "process.command_args",
    "process.command_line",
    "process.executable.name",
    "process.executable.path",
    "process.owner",
    "process.pid",
    "process.runtime.description",
    "process.runtime.name",
    "process.runtime.version",
    "service.instance.id",
    "service.name",
    "service.namespace",
    "service.version",
    "telemetry.auto.version",
    "telemetry.sdk.language",
    "telemetry.sdk.name",
    "telemetry.sdk.version",
    "webengine.description",
    "webengine.name",
    "webengine.version",
];

/// Whether a tag belongs on the resource.
pub fn is_resource_key(key: &str) -> bool {
    RESOURCE_KEYS.binary_search(&key).is_ok()
}

/// An attribute value as a tag string, the way the collector's `AsString`
/// writes it: doubles without exponent, bytes in base64, arrays and maps as
/// compact JSON with sorted keys, an empty value as "".
pub fn tag_value(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        // A string-table index means nothing without the table (profiles only).
        None | Some(Value::StringValueStrindex(_)) => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => format_double(*d),
        Some(Value::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        Some(other @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => {
            raw_json(Some(other)).to_string()
        }
    }
}

/// Go's `FormatFloat(f, 'f', -1, 64)`: shortest digits that read back
/// exactly, never an exponent.
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        "NaN".to_string()
    } else if d.is_infinite() {
        if d > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        d.to_string()
    }
}

/// An attribute value as plain JSON (what `json.Marshal(value.AsRaw())`
/// gives); non-finite doubles, which JSON cannot hold, become null.
pub fn raw_json(v: Option<&Value>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        None | Some(Value::StringValueStrindex(_)) => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d).map_or(J::Null, J::Number),
        Some(Value::BytesValue(b)) => {
            J::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(Value::ArrayValue(a)) => J::Array(
            a.values
                .iter()
                .map(|v| raw_json(v.value.as_ref()))
                .collect(),
        ),
        Some(Value::KvlistValue(kv)) => J::Object(attributes_json(&kv.values)),
    }
}

/// Attributes as one JSON object; keys sorted, a repeated key's last value wins.
pub fn attributes_json(attrs: &[KeyValue]) -> serde_json::Map<String, serde_json::Value> {
    let sorted: std::collections::BTreeMap<&str, serde_json::Value> = attrs
        .iter()
        .map(|kv| {
            (
                kv.key.as_str(),
                raw_json(kv.value.as_ref().and_then(|v| v.value.as_ref())),
            )
        })
        .collect();
    sorted
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// A JSON object (event or link attributes written by a translator) back as
/// attributes: strings, booleans, numbers (whole numbers as ints) and arrays
/// of those. Other values are skipped.
pub fn attributes_from_json(obj: &serde_json::Map<String, serde_json::Value>) -> Vec<KeyValue> {
    obj.iter()
        .filter_map(|(k, v)| {
            Some(KeyValue {
                key: k.clone(),
                value: Some(AnyValue {
                    value: Some(value_from_json(v)?),
                }),
                ..Default::default()
            })
        })
        .collect()
}

fn value_from_json(v: &serde_json::Value) -> Option<Value> {
    use serde_json::Value as J;
    match v {
        J::String(s) => Some(Value::StringValue(s.clone())),
        J::Bool(b) => Some(Value::BoolValue(*b)),
        J::Number(n) => Some(number_value(n)),
        J::Array(items) => Some(Value::ArrayValue(ArrayValue {
            values: items
                .iter()
                .filter_map(|i| {
                    Some(AnyValue {
                        value: Some(value_from_json(i)?),
                    })
                })
                .collect(),
        })),
        J::Null | J::Object(_) => None,
    }
}

/// A JSON number as the collector reads it into an attribute: whole numbers
/// as ints, everything else as doubles.
fn number_value(n: &serde_json::Number) -> Value {
    if let Some(i) = n.as_i64() {
        return Value::IntValue(i);
    }
    let d = n.as_f64().unwrap_or(f64::NAN);
    // 2^63 as f64: whole doubles below it (and from -2^63) fit an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if d.fract() == 0.0 && (-LIMIT..LIMIT).contains(&d) {
        Value::IntValue(d as i64)
    } else {
        Value::DoubleValue(d)
    }
}

/// A tag as an attribute value. With `parse_string_tags`, `-12` becomes an
/// int, `1.5` a double and `true`/`false` a bool, as the collector decides
/// (integers too large for an int stay strings).
pub fn parse_tag(value: &str, parse_string_tags: bool) -> Value {
    if parse_string_tags {
        let digits = value.strip_prefix('-').unwrap_or(value);
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if all_digits(digits) {
            if let Ok(i) = value.parse::<i64>() {
                return Value::IntValue(i);
            }
        } else if let Some((whole, frac)) = digits.split_once('.') {
            if all_digits(whole) && all_digits(frac) {
                if let Ok(d) = value.parse::<f64>() {
                    return Value::DoubleValue(d);
                }
            }
        } else if value == "true" || value == "false" {
            return Value::BoolValue(value == "true");
        }
    }
    Value::StringValue(value.to_string())
}

/// A key-value attribute.
pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Sets `key` only when it is not there yet.
pub fn insert(attrs: &mut Vec<KeyValue>, key: &str, value: Value) {
    if !attrs.iter().any(|a| a.key == key) {
        attrs.push(kv(key, value));
    }
}

/// Sets `key`, replacing a value already there.
pub fn upsert(attrs: &mut Vec<KeyValue>, key: &str, value: Value) {
    match attrs.iter_mut().find(|a| a.key == key) {
        Some(a) => a.value = Some(AnyValue { value: Some(value) }),
        None => attrs.push(kv(key, value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::KeyValueList;

    fn av(v: Value) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    #[test]
    fn resource_keys_are_sorted() {
        assert!(RESOURCE_KEYS.windows(2).all(|w| w[0] < w[1]));
        assert!(is_resource_key("service.name"));
        assert!(is_resource_key("telemetry.sdk.language"));
        assert!(!is_resource_key("http.method"));
        assert!(!is_resource_key(LIBRARY_NAME));
    }

    #[test]
    fn tag_values_as_the_collector_writes_them() {
        let cases: Vec<(Option<AnyValue>, &str)> = vec![
            (None, ""),
            (Some(AnyValue { value: None }), ""),
            (Some(av(Value::StringValue("GET".into()))), "GET"),
            (Some(av(Value::BoolValue(true))), "true"),
            (Some(av(Value::IntValue(-42))), "-42"),
            (Some(av(Value::DoubleValue(1.5))), "1.5"),
            (Some(av(Value::DoubleValue(1e21))), "1000000000000000000000"),
            (Some(av(Value::DoubleValue(0.000001))), "0.000001"),
            (Some(av(Value::DoubleValue(f64::NAN))), "NaN"),
            (Some(av(Value::DoubleValue(f64::NEG_INFINITY))), "-Inf"),
            (
                Some(av(Value::BytesValue(vec![0xde, 0xad, 0xbe, 0xef]))),
                "3q2+7w==",
            ),
            (
                Some(av(Value::ArrayValue(ArrayValue {
                    values: vec![av(Value::StringValue("a".into())), av(Value::IntValue(2))],
                }))),
                r#"["a",2]"#,
            ),
            (
                Some(av(Value::KvlistValue(KeyValueList {
                    values: vec![
                        kv("z", Value::BoolValue(false)),
                        kv("a", Value::DoubleValue(0.5)),
                    ],
                }))),
                r#"{"a":0.5,"z":false}"#,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(tag_value(v.as_ref()), want, "{v:?}");
        }
    }

    #[test]
    fn parse_string_tags_table() {
        let cases: &[(&str, Value)] = &[
            ("12", Value::IntValue(12)),
            ("-7", Value::IntValue(-7)),
            ("1.5", Value::DoubleValue(1.5)),
            ("-0.25", Value::DoubleValue(-0.25)),
            ("true", Value::BoolValue(true)),
            ("false", Value::BoolValue(false)),
            ("True", Value::StringValue("True".into())),
            ("1.", Value::StringValue("1.".into())),
            (".5", Value::StringValue(".5".into())),
            ("1e5", Value::StringValue("1e5".into())),
            ("+1", Value::StringValue("+1".into())),
            ("", Value::StringValue("".into())),
            ("-", Value::StringValue("-".into())),
            ("12a", Value::StringValue("12a".into())),
            (
                "99999999999999999999",
                Value::StringValue("99999999999999999999".into()),
            ),
            ("[1,2]", Value::StringValue("[1,2]".into())),
        ];
        for (input, want) in cases {
            assert_eq!(&parse_tag(input, true), want, "{input:?}");
            assert_eq!(
                parse_tag(input, false),
                Value::StringValue(input.to_string()),
                "{input:?}"
            );
        }
    }

    #[test]
    fn json_attributes_round_trip() {
        let attrs = vec![
            kv("s", Value::StringValue("x".into())),
            kv("i", Value::IntValue(3)),
            kv("d", Value::DoubleValue(2.5)),
            kv("b", Value::BoolValue(true)),
        ];
        let obj = attributes_json(&attrs);
        assert_eq!(
            serde_json::Value::Object(obj.clone()).to_string(),
            r#"{"b":true,"d":2.5,"i":3,"s":"x"}"#
        );
        let mut back = attributes_from_json(&obj);
        back.sort_by(|a, b| a.key.cmp(&b.key));
        let mut want = attrs;
        want.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(back, want);
        // Whole doubles come back as ints, as the collector reads them.
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"w":2.0,"big":1e300,"n":null,"o":{},"a":[1,"x",null]}"#)
                .unwrap();
        let mut got = attributes_from_json(&obj);
        got.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(
            got,
            vec![
                kv(
                    "a",
                    Value::ArrayValue(ArrayValue {
                        values: vec![av(Value::IntValue(1)), av(Value::StringValue("x".into()))]
                    })
                ),
                kv("big", Value::DoubleValue(1e300)),
                kv("w", Value::IntValue(2)),
            ]
        );
    }

    #[test]
    fn insert_keeps_upsert_replaces() {
        let mut attrs = vec![kv("k", Value::IntValue(1))];
        insert(&mut attrs, "k", Value::IntValue(2));
        assert_eq!(attrs, vec![kv("k", Value::IntValue(1))]);
        upsert(&mut attrs, "k", Value::IntValue(3));
        upsert(&mut attrs, "n", Value::IntValue(4));
        assert_eq!(
            attrs,
            vec![kv("k", Value::IntValue(3)), kv("n", Value::IntValue(4))]
        );
    }
}
