//! Request bodies: a few distinct requests are generated up front and sent in
//! turn, so producing load costs the generator next to nothing.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use rmp::encode as mp;

/// How each request looks.
#[derive(Debug, Clone)]
pub struct Shape {
    pub spans_per_request: usize,
    /// String attributes per span, besides the span's own fields.
    pub attributes: usize,
    /// Bytes of each attribute value.
    pub attribute_size: usize,
}

/// The wire format of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OtlpProto,
    OtlpJson,
    DatadogV05,
    ZipkinJson,
}

/// Spans per trace in generated requests: a root and its children.
const SPANS_PER_TRACE: usize = 10;

/// Generated requests, kept as OTLP and encoded per format on demand.
pub struct Templates {
    pub otlp: Vec<ExportTraceServiceRequest>,
}

fn kv(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    }
}

/// Words attribute values are made of: values read like the text real spans
/// carry (queries, URLs, messages), so compression sees realistic input
/// rather than random letters, its worst case.
const WORDS: &[&str] = &[
    "select",
    "from",
    "where",
    "user",
    "order",
    "id",
    "in",
    "and",
    "status",
    "GET",
    "POST",
    "/api/v1/items",
    "/cart",
    "checkout",
    "timeout",
    "retry",
    "cache",
    "miss",
    "hit",
    "db",
    "query",
    "payment",
    "service",
    "region",
    "eu-west-1",
    "us-east-2",
    "pod",
    "node",
    "error",
    "ok",
    "latency",
    "ms",
    "request",
    "response",
    "header",
    "value",
    "null",
    "true",
    "false",
    "limit",
    "offset",
    "join",
    "on",
    "account",
    "session",
    "token",
    "created",
    "updated",
];

fn filler(size: usize) -> String {
    let mut s = String::with_capacity(size + 16);
    while s.len() < size {
        if !s.is_empty() {
            s.push(' ');
        }
        if fastrand::u8(0..4) == 0 {
            s.push_str(&fastrand::u32(0..100_000).to_string());
        } else {
            s.push_str(WORDS[fastrand::usize(0..WORDS.len())]);
        }
    }
    s.truncate(size);
    s
}

impl Templates {
    /// `count` distinct requests of the given shape.
    pub fn new(shape: &Shape, count: usize) -> Templates {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let otlp = (0..count)
            .map(|r| {
                let mut spans = Vec::with_capacity(shape.spans_per_request);
                let mut trace_id = [0u8; 16];
                let mut root_id = [0u8; 8];
                for i in 0..shape.spans_per_request {
                    if i % SPANS_PER_TRACE == 0 {
                        fastrand::fill(&mut trace_id);
                        fastrand::fill(&mut root_id);
                    }
                    let root = i % SPANS_PER_TRACE == 0;
                    let span_id = if root {
                        root_id
                    } else {
                        fastrand::u64(1..).to_be_bytes()
                    };
                    let start = now + (r * 1_000_000 + i * 1000) as u64;
                    let mut attributes = Vec::with_capacity(shape.attributes);
                    for a in 0..shape.attributes {
                        attributes.push(kv(format!("attr.{a}"), filler(shape.attribute_size)));
                    }
                    spans.push(Span {
                        trace_id: trace_id.to_vec(),
                        span_id: span_id.to_vec(),
                        parent_span_id: if root { Vec::new() } else { root_id.to_vec() },
                        name: if root {
                            format!("GET /api/items/{}", i % 7)
                        } else {
                            format!("SELECT items {}", i % 5)
                        },
                        kind: if root {
                            span::SpanKind::Server
                        } else {
                            span::SpanKind::Client
                        } as i32,
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + 250_000,
                        attributes,
                        status: Some(Status {
                            message: String::new(),
                            code: status::StatusCode::Unset as i32,
                        }),
                        ..Span::default()
                    });
                }
                ExportTraceServiceRequest {
                    resource_spans: vec![ResourceSpans {
                        resource: Some(Resource {
                            attributes: vec![
                                kv("service.name", "loadgen"),
                                kv("host.name", "loadgen-host"),
                            ],
                            ..Resource::default()
                        }),
                        scope_spans: vec![ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "weft-loadgen".into(),
                                ..InstrumentationScope::default()
                            }),
                            spans,
                            schema_url: String::new(),
                        }],
                        schema_url: String::new(),
                    }],
                }
            })
            .collect();
        Templates { otlp }
    }

    /// Every request encoded in `format`.
    pub fn bodies(&self, format: Format) -> Vec<Bytes> {
        self.otlp
            .iter()
            .map(|req| match format {
                Format::OtlpProto => Bytes::from(req.encode_to_vec()),
                Format::OtlpJson => {
                    let payload = weft_pipeline::Payload::Traces(req.resource_spans.clone());
                    Bytes::from(
                        weft_exporters::otlp_json::encode_request(&payload).unwrap_or_default(),
                    )
                }
                Format::DatadogV05 => Bytes::from(datadog_v05(req)),
                Format::ZipkinJson => Bytes::from(zipkin_json(req)),
            })
            .collect()
    }
}

fn id64(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .take(8)
        .rev()
        .fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr_str(kv: &KeyValue) -> &str {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s,
        _ => "",
    }
}

/// A Datadog v0.5 payload: `[strings, traces]`, each span a 12-element array
/// of string-table indexes and numbers.
fn datadog_v05(req: &ExportTraceServiceRequest) -> Vec<u8> {
    let mut table: Vec<String> = vec![String::new()];
    let mut index = std::collections::HashMap::<String, u32>::new();
    let mut idx = |s: &str| -> u32 {
        if let Some(i) = index.get(s) {
            return *i;
        }
        table.push(s.to_string());
        let i = (table.len() - 1) as u32;
        index.insert(s.to_string(), i);
        i
    };
    let spans: Vec<&Span> = req
        .resource_spans
        .iter()
        .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.iter()))
        .collect();
    let mut traces: Vec<Vec<&Span>> = Vec::new();
    for s in spans {
        match traces.last_mut() {
            Some(t) if t[0].trace_id == s.trace_id => t.push(s),
            _ => traces.push(vec![s]),
        }
    }
    let mut body = Vec::new();
    // Infallible: writes into a Vec.
    let _ = mp::write_array_len(&mut body, traces.len() as u32);
    for t in &traces {
        let _ = mp::write_array_len(&mut body, t.len() as u32);
        for s in t {
            let _ = mp::write_array_len(&mut body, 12);
            let _ = mp::write_uint(&mut body, u64::from(idx("loadgen")));
            let _ = mp::write_uint(&mut body, u64::from(idx(&s.name)));
            let _ = mp::write_uint(&mut body, u64::from(idx(&s.name)));
            let _ = mp::write_uint(&mut body, id64(&s.trace_id));
            let _ = mp::write_uint(&mut body, id64(&s.span_id));
            let _ = mp::write_uint(&mut body, id64(&s.parent_span_id));
            let _ = mp::write_sint(&mut body, s.start_time_unix_nano as i64);
            let _ = mp::write_sint(
                &mut body,
                s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as i64,
            );
            let _ = mp::write_sint(&mut body, 0);
            let root = s.parent_span_id.is_empty();
            let extra = if root { 1 } else { 0 };
            let _ = mp::write_map_len(&mut body, (s.attributes.len() + extra) as u32);
            if root {
                let _ = mp::write_uint(&mut body, u64::from(idx("_dd.p.tid")));
                let high = format!("{:016x}", id64(&s.trace_id[..8]));
                let _ = mp::write_uint(&mut body, u64::from(idx(&high)));
            }
            for a in &s.attributes {
                let _ = mp::write_uint(&mut body, u64::from(idx(&a.key)));
                let _ = mp::write_uint(&mut body, u64::from(idx(attr_str(a))));
            }
            let _ = mp::write_map_len(&mut body, 0);
            let _ = mp::write_uint(&mut body, u64::from(idx("web")));
        }
    }
    let mut out = Vec::with_capacity(body.len() + table.iter().map(|s| s.len() + 5).sum::<usize>());
    let _ = mp::write_array_len(&mut out, 2);
    let _ = mp::write_array_len(&mut out, table.len() as u32);
    for s in &table {
        let _ = mp::write_str(&mut out, s);
    }
    out.extend_from_slice(&body);
    out
}

/// A Zipkin v2 JSON list of spans.
fn zipkin_json(req: &ExportTraceServiceRequest) -> Vec<u8> {
    let spans: Vec<serde_json::Value> = req
        .resource_spans
        .iter()
        .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.iter()))
        .map(|s| {
            let tags: serde_json::Map<String, serde_json::Value> = s
                .attributes
                .iter()
                .map(|a| (a.key.clone(), serde_json::Value::from(attr_str(a))))
                .collect();
            let mut v = serde_json::json!({
                "traceId": hex(&s.trace_id),
                "id": hex(&s.span_id),
                "name": s.name,
                "kind": if s.parent_span_id.is_empty() { "SERVER" } else { "CLIENT" },
                "timestamp": s.start_time_unix_nano / 1000,
                "duration": (s.end_time_unix_nano - s.start_time_unix_nano) / 1000,
                "localEndpoint": {"serviceName": "loadgen"},
                "tags": tags,
            });
            if !s.parent_span_id.is_empty() {
                v["parentId"] = serde_json::Value::from(hex(&s.parent_span_id));
            }
            v
        })
        .collect();
    serde_json::to_vec(&spans).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            spans_per_request: 20,
            attributes: 2,
            attribute_size: 8,
        }
    }

    #[test]
    fn requests_have_the_shape_asked_for() {
        let t = Templates::new(&shape(), 3);
        assert_eq!(t.otlp.len(), 3);
        let spans = &t.otlp[0].resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 20);
        assert_eq!(spans[0].attributes.len(), 2);
        assert_eq!(attr_str(&spans[0].attributes[1]).len(), 8);
        // Ten spans per trace: a root, then its children.
        assert!(spans[0].parent_span_id.is_empty());
        assert_eq!(spans[1].parent_span_id, spans[0].span_id);
        assert_eq!(spans[9].trace_id, spans[0].trace_id);
        assert_ne!(spans[10].trace_id, spans[0].trace_id);
        assert!(spans[10].parent_span_id.is_empty());
    }

    #[test]
    fn datadog_payload_is_two_traces_of_ten() {
        let t = Templates::new(&shape(), 1);
        let body = &t.bodies(Format::DatadogV05)[0];
        let mut rd = &body[..];
        assert_eq!(rmp::decode::read_array_len(&mut rd).ok(), Some(2));
        let strings = rmp::decode::read_array_len(&mut rd).unwrap_or(0);
        assert!(strings > 3);
        for _ in 0..strings {
            let len = rmp::decode::read_str_len(&mut rd).unwrap_or(0) as usize;
            rd = &rd[len..];
        }
        assert_eq!(rmp::decode::read_array_len(&mut rd).ok(), Some(2));
        assert_eq!(rmp::decode::read_array_len(&mut rd).ok(), Some(10));
        assert_eq!(rmp::decode::read_array_len(&mut rd).ok(), Some(12));
    }

    #[test]
    fn zipkin_payload_lists_every_span() {
        let t = Templates::new(&shape(), 1);
        let body = &t.bodies(Format::ZipkinJson)[0];
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let list = v.as_array().cloned().unwrap_or_default();
        assert_eq!(list.len(), 20);
        assert_eq!(list[1]["parentId"], list[0]["id"]);
        assert_eq!(list[0]["traceId"].as_str().map(str::len), Some(32));
    }
}
