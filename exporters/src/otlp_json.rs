//! OTLP/JSON as the collector writes it: camelCase keys, hex trace and span
//! ids, 64-bit integers as strings, enums as numbers, and fields left out when
//! they hold their default value.

use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use weft_pipeline::Payload;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TracesRequest<'a> {
    resource_spans: &'a [ResourceSpans],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetricsRequest<'a> {
    resource_metrics: &'a [ResourceMetrics],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogsRequest<'a> {
    resource_logs: &'a [ResourceLogs],
}

/// The payload as one `Export*ServiceRequest` JSON object, without a newline.
pub fn encode_request(payload: &Payload) -> Result<Vec<u8>, serde_json::Error> {
    // serde writes struct fields in proto order; a second pass through an
    // order-keeping tree drops the default-valued fields.
    let full = match payload {
        Payload::Traces(rs) => serde_json::to_vec(&TracesRequest { resource_spans: rs })?,
        Payload::Metrics(rm) => serde_json::to_vec(&MetricsRequest {
            resource_metrics: rm,
        })?,
        Payload::Logs(rl) => serde_json::to_vec(&LogsRequest { resource_logs: rl })?,
    };
    let mut tree: Node = serde_json::from_slice(&full)?;
    tree.omit_defaults();
    serde_json::to_vec(&tree)
}

/// Oneof members and optional fields: their presence carries meaning, so a
/// zero value there is written out.
const KEEP_WHEN_ZERO: &[&str] = &[
    "stringValue",
    "boolValue",
    "intValue",
    "doubleValue",
    "bytesValue",
    "arrayValue",
    "kvlistValue",
    "asDouble",
    "asInt",
    "sum",
    "min",
    "max",
];

/// Messages written as `{}` rather than left out.
const ALWAYS_PRESENT: &[&str] = &["resource", "scope", "status"];

/// 64-bit counters the proto serializer writes as strings.
fn is_u64_string_key(key: &str) -> bool {
    key.ends_with("UnixNano") || key == "count" || key == "zeroCount"
}

/// A JSON tree that keeps object keys in document order.
enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    /// Drops null, empty-string, zero, false and empty-array fields, as
    /// protobuf's JSON mapping does for unset fields. Empty objects stay
    /// (`"status":{}`), as the collector writes them.
    fn omit_defaults(&mut self) {
        match self {
            Node::Object(fields) => {
                for (k, v) in fields.iter_mut() {
                    // The collector's data model always has these messages,
                    // so it writes them as `{}` when they are empty or unset.
                    if matches!(v, Node::Null) && ALWAYS_PRESENT.contains(&k.as_str()) {
                        *v = Node::Object(Vec::new());
                    }
                    v.omit_defaults();
                }
                fields.retain(|(k, v)| !v.is_default(k));
            }
            Node::Array(items) => items.iter_mut().for_each(Node::omit_defaults),
            _ => {}
        }
    }

    fn is_default(&self, key: &str) -> bool {
        if matches!(self, Node::Null) {
            return true;
        }
        if KEEP_WHEN_ZERO.contains(&key) {
            return false;
        }
        match self {
            Node::Null => true,
            Node::String(s) => s.is_empty() || (s == "0" && is_u64_string_key(key)),
            Node::Bool(b) => !b,
            Node::Number(n) => n.as_f64() == Some(0.0),
            Node::Array(a) => a.is_empty(),
            Node::Object(_) => false,
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        struct NodeVisitor;

        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Number(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
                serde_json::Number::from_f64(v)
                    .map(Node::Number)
                    .ok_or_else(|| E::custom("non-finite number"))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::String(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Node>()? {
                    fields.push((k, v));
                }
                Ok(Node::Object(fields))
            }
        }

        d.deserialize_any(NodeVisitor)
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Number(n) => n.serialize(s),
            Node::String(v) => s.serialize_str(v),
            Node::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Object(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, Gauge, Metric, NumberDataPoint, ScopeMetrics,
    };
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span, Status};

    use super::*;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn traces_are_otlp_json_and_round_trip() {
        let rs = vec![ResourceSpans {
            resource: Some(Default::default()),
            scope_spans: vec![ScopeSpans {
                scope: Some(Default::default()),
                spans: vec![Span {
                    trace_id: (1..=16).collect(),
                    span_id: (1..=8).collect(),
                    name: "GET /".into(),
                    kind: 2,
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_500_000_000,
                    attributes: vec![
                        kv("n", any_value::Value::IntValue(0)),
                        kv("s", any_value::Value::StringValue(String::new())),
                        kv("b", any_value::Value::BoolValue(false)),
                    ],
                    status: Some(Status::default()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let payload = Payload::Traces(rs.clone());
        let text = String::from_utf8(encode_request(&payload).unwrap()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"resourceSpans":[{"resource":{},"scopeSpans":[{"scope":{},"spans":[{"#,
                r#""traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","#,
                r#""name":"GET /","kind":2,"#,
                r#""startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000500000000","#,
                r#""attributes":[{"key":"n","value":{"intValue":"0"}},"#,
                r#"{"key":"s","value":{"stringValue":""}},{"key":"b","value":{"boolValue":false}}],"#,
                r#""status":{}}]}]}]}"#
            )
        );
        let back: ExportTraceServiceRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(back.resource_spans, rs);
    }

    #[test]
    fn zero_gauge_values_are_kept() {
        let rm = vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "m".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            value: Some(number_data_point::Value::AsDouble(0.0)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let text = String::from_utf8(encode_request(&Payload::Metrics(rm)).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"resourceMetrics":[{"resource":{},"scopeMetrics":[{"scope":{},"metrics":[{"name":"m","gauge":{"dataPoints":[{"asDouble":0.0}]}}]}]}]}"#
        );
    }
}
