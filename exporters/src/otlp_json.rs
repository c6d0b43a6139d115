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
    if let Payload::Traces(rs) = payload {
        // About a kilobyte and a half per span: one allocation for most batches.
        let spans: usize = rs
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let mut out = Vec::with_capacity(256 + 1536 * spans);
        crate::otlp_json_traces::encode_traces(rs, &mut out);
        return Ok(out);
    }
    encode_generic(payload)
}

/// Any payload through serde: the reference the direct trace writer is tested against.
fn encode_generic(payload: &Payload) -> Result<Vec<u8>, serde_json::Error> {
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

    /// Random traces covering every field, default and non-default, odd strings and
    /// odd doubles: the direct writer must give the generic path's bytes exactly.
    mod direct_writer {
        use opentelemetry_proto::tonic::common::v1::{
            any_value::Value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue,
            KeyValueList,
        };
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
        use weft_pipeline::Payload;

        struct Gen(fastrand::Rng);

        impl Gen {
            fn n(&mut self, max: usize) -> usize {
                self.0.usize(..=max)
            }
            fn coin(&mut self) -> bool {
                self.0.bool()
            }
            fn string(&mut self) -> String {
                const PIECES: &[&str] = &[
                    "",
                    "a",
                    "GET /x",
                    "\"",
                    "\\",
                    "\n",
                    "\t",
                    "\r",
                    "\u{8}",
                    "\u{c}",
                    "\u{1}",
                    "\u{1f}",
                    "\u{7f}",
                    "é",
                    "日本",
                    "😀",
                    "/",
                    "</script>",
                    " ",
                    "0123456789abcdef",
                    "\u{80}\u{ff}",
                    "~~~~~~~",
                    "`{|}",
                ];
                (0..self.n(8))
                    .map(|_| PIECES[self.0.usize(..PIECES.len())])
                    .collect()
            }
            fn bytes(&mut self, max: usize) -> Vec<u8> {
                (0..self.n(max)).map(|_| self.0.u8(..)).collect()
            }
            fn num<T: From<u8>>(&mut self) -> T {
                T::from(if self.coin() { 0 } else { self.0.u8(..) })
            }
            fn double(&mut self) -> f64 {
                const ODD: &[f64] = &[
                    0.0,
                    -0.0,
                    1.0,
                    -2.5,
                    1e300,
                    1e-300,
                    0.1,
                    f64::NAN,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    f64::MAX,
                    f64::MIN_POSITIVE,
                ];
                ODD[self.0.usize(..ODD.len())]
            }
            fn any(&mut self, depth: u32) -> AnyValue {
                let value = match self.0.u8(..9) {
                    0 => None,
                    1 => Some(Value::StringValue(self.string())),
                    2 => Some(Value::BoolValue(self.coin())),
                    3 => Some(Value::IntValue(match self.0.u8(..4) {
                        0 => 0,
                        1 => i64::MIN,
                        2 => i64::MAX,
                        _ => self.0.i64(..),
                    })),
                    4 => Some(Value::DoubleValue(self.double())),
                    5 if depth < 2 => Some(Value::ArrayValue(ArrayValue {
                        values: (0..self.n(2)).map(|_| self.any(depth + 1)).collect(),
                    })),
                    6 if depth < 2 => Some(Value::KvlistValue(KeyValueList {
                        values: self.kvs(depth + 1),
                    })),
                    7 => Some(Value::BytesValue(self.bytes(7))),
                    8 => Some(Value::StringValueStrindex(self.num())),
                    _ => None,
                };
                AnyValue { value }
            }
            fn kvs(&mut self, depth: u32) -> Vec<KeyValue> {
                (0..self.n(3))
                    .map(|_| KeyValue {
                        key: self.string(),
                        value: if self.0.u8(..4) == 0 {
                            None
                        } else {
                            Some(self.any(depth))
                        },
                        key_strindex: self.num(),
                    })
                    .collect()
            }
            fn span(&mut self) -> Span {
                Span {
                    trace_id: self.bytes(16),
                    span_id: self.bytes(8),
                    trace_state: self.string(),
                    parent_span_id: self.bytes(8),
                    flags: self.num(),
                    name: self.string(),
                    kind: self.num(),
                    start_time_unix_nano: if self.coin() { 0 } else { self.0.u64(..) },
                    end_time_unix_nano: if self.coin() { 0 } else { u64::MAX },
                    attributes: self.kvs(0),
                    dropped_attributes_count: self.num(),
                    events: (0..self.n(2))
                        .map(|_| Event {
                            time_unix_nano: self.num(),
                            name: self.string(),
                            attributes: self.kvs(0),
                            dropped_attributes_count: self.num(),
                        })
                        .collect(),
                    dropped_events_count: self.num(),
                    links: (0..self.n(2))
                        .map(|_| Link {
                            trace_id: self.bytes(16),
                            span_id: self.bytes(8),
                            trace_state: self.string(),
                            attributes: self.kvs(0),
                            dropped_attributes_count: self.num(),
                            flags: self.num(),
                        })
                        .collect(),
                    dropped_links_count: self.num(),
                    status: if self.coin() {
                        None
                    } else {
                        Some(Status {
                            message: self.string(),
                            code: i32::from(self.0.u8(..3)),
                        })
                    },
                }
            }
            fn resource_spans(&mut self) -> ResourceSpans {
                ResourceSpans {
                    resource: if self.coin() {
                        None
                    } else {
                        Some(Resource {
                            attributes: self.kvs(0),
                            dropped_attributes_count: self.num(),
                            entity_refs: (0..self.n(1))
                                .map(|_| EntityRef {
                                    schema_url: self.string(),
                                    r#type: self.string(),
                                    id_keys: (0..self.n(2)).map(|_| self.string()).collect(),
                                    description_keys: (0..self.n(2))
                                        .map(|_| self.string())
                                        .collect(),
                                })
                                .collect(),
                        })
                    },
                    scope_spans: (0..self.n(2))
                        .map(|_| ScopeSpans {
                            scope: if self.coin() {
                                None
                            } else {
                                Some(InstrumentationScope {
                                    name: self.string(),
                                    version: self.string(),
                                    attributes: self.kvs(0),
                                    dropped_attributes_count: self.num(),
                                })
                            },
                            spans: (0..self.n(3)).map(|_| self.span()).collect(),
                            schema_url: self.string(),
                        })
                        .collect(),
                    schema_url: self.string(),
                }
            }
        }

        #[test]
        fn same_bytes_as_the_generic_path() {
            let mut g = Gen(fastrand::Rng::with_seed(7));
            for case in 0..3000 {
                let rs: Vec<ResourceSpans> = (0..g.n(2)).map(|_| g.resource_spans()).collect();
                let payload = Payload::Traces(rs);
                let direct = super::super::encode_request(&payload).unwrap();
                let generic = super::super::encode_generic(&payload).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&direct),
                    String::from_utf8_lossy(&generic),
                    "case {case}"
                );
            }
        }
    }
}
