//! Zipkin v1 JSON (`/api/v1/spans`) to OTLP, as the collector's `zipkinv1`
//! translator reads it: core annotations (`cs`, `sr`, …) give the kind, the
//! times and the endpoint that becomes the resource; other annotations become
//! events; binary annotations attributes, with the OpenCensus-era status tags.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as OtlpSpan, Status};
use serde::Deserialize;

use crate::json::TagValue;
use crate::model::parse_hex_u64;
use crate::tags::{self, insert, kv, parse_tag, upsert};
use crate::Error;

/// The service of spans whose annotations name none.
const UNKNOWN_SERVICE: &str = "unknown-service";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct V1Span {
    trace_id: Option<String>,
    name: Option<String>,
    parent_id: Option<String>,
    id: Option<String>,
    timestamp: Option<i64>,
    duration: Option<i64>,
    annotations: Option<Vec<Option<V1Annotation>>>,
    binary_annotations: Option<Vec<Option<V1BinaryAnnotation>>>,
}

#[derive(Deserialize, Clone, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
struct V1Endpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<i32>,
}

#[derive(Deserialize)]
struct V1Annotation {
    timestamp: Option<i64>,
    value: Option<String>,
    endpoint: Option<V1Endpoint>,
}

#[derive(Deserialize)]
struct V1BinaryAnnotation {
    key: Option<String>,
    value: Option<TagValue>,
    endpoint: Option<V1Endpoint>,
}

impl V1Endpoint {
    fn service(&self) -> &str {
        self.service_name.as_deref().unwrap_or("")
    }
}

/// Decodes a v1 JSON list of spans into OTLP: one resource per endpoint
/// (service, address, port), in order of first appearance.
pub fn decode(body: &[u8], parse_string_tags: bool) -> Result<Vec<ResourceSpans>, Error> {
    let list: Option<Vec<Option<V1Span>>> =
        serde_json::from_slice(body).map_err(|e| Error::Json(format!("zipkin v1: {e}")))?;
    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut by_endpoint: HashMap<V1Endpoint, usize> = HashMap::new();
    for (i, s) in list.unwrap_or_default().into_iter().flatten().enumerate() {
        let (span, endpoint) = translate(s, parse_string_tags)
            .map_err(|e| Error::InvalidSpan(format!("span {i}: {e}")))?;
        let index = *by_endpoint.entry(endpoint.clone()).or_insert_with(|| {
            out.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: resource_attributes(&endpoint),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans::default()],
                ..Default::default()
            });
            out.len() - 1
        });
        out[index].scope_spans[0].spans.push(span);
    }
    Ok(out)
}

/// `service.name`, plus `ipv4`, `ipv6` and `port` (as strings) when known.
fn resource_attributes(e: &V1Endpoint) -> Vec<KeyValue> {
    let mut attrs = vec![kv(
        tags::SERVICE_NAME,
        Value::StringValue(e.service().to_string()),
    )];
    for (key, value) in [("ipv4", &e.ipv4), ("ipv6", &e.ipv6)] {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            attrs.push(kv(key, Value::StringValue(v.clone())));
        }
    }
    if let Some(port) = e.port.filter(|p| *p != 0) {
        attrs.push(kv("port", Value::StringValue(port.to_string())));
    }
    attrs
}

fn trace_id(hex: &str) -> Result<Vec<u8>, String> {
    let id = match hex.len() {
        16 => crate::model::TraceId {
            high: 0,
            low: parse_hex_u64(hex)?,
        },
        32 => crate::model::TraceId {
            high: parse_hex_u64(&hex[..16])?,
            low: parse_hex_u64(&hex[16..])?,
        },
        _ => return Err("traceId must be 16 or 32 hex characters".into()),
    };
    if id.is_zero() {
        return Err("traceId is zero".into());
    }
    Ok(id.to_bytes().to_vec())
}

fn span_id(hex: &str, field: &str) -> Result<Vec<u8>, String> {
    if hex.len() != 16 {
        return Err(format!("{field} must be 16 hex characters"));
    }
    let id = parse_hex_u64(hex).map_err(|e| format!("{field} {e}"))?;
    if id == 0 {
        return Err(format!("{field} is zero"));
    }
    Ok(id.to_be_bytes().to_vec())
}

fn micros_to_nanos(us: i64) -> u64 {
    if us <= 0 {
        0
    } else {
        (us as u64).saturating_mul(1000)
    }
}

fn translate(s: V1Span, parse_string_tags: bool) -> Result<(OtlpSpan, V1Endpoint), String> {
    let mut span = OtlpSpan {
        trace_id: trace_id(s.trace_id.as_deref().unwrap_or(""))?,
        span_id: span_id(s.id.as_deref().unwrap_or(""), "id")?,
        parent_span_id: match s.parent_id.as_deref() {
            None | Some("") => Vec::new(),
            Some(p) => span_id(p, "parentId")?,
        },
        name: s.name.unwrap_or_default(),
        ..Default::default()
    };
    let mut endpoint = annotations(&mut span, s.annotations.unwrap_or_default());
    let fallback = binary_annotations(
        &mut span,
        s.binary_annotations.unwrap_or_default(),
        parse_string_tags,
    );
    if endpoint.service() == UNKNOWN_SERVICE && !fallback.is_empty() {
        endpoint.service_name = Some(fallback);
    }
    if let Some(ts) = s.timestamp.filter(|t| *t != 0) {
        span.start_time_unix_nano = micros_to_nanos(ts);
        span.end_time_unix_nano = micros_to_nanos(ts.saturating_add(s.duration.unwrap_or(0)));
    }
    if span.start_time_unix_nano == 0 {
        // As the collector: an unknown start is "now", and the attribute says so.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        span.start_time_unix_nano = now;
        span.end_time_unix_nano = now;
        upsert(
            &mut span.attributes,
            tags::START_TIME_ABSENT,
            Value::BoolValue(true),
        );
    }
    Ok((span, endpoint))
}

/// Kind from the first core annotation, the endpoint from the first core
/// annotation that names a service, start and end from the earliest and
/// latest annotation; the others become events.
fn annotations(span: &mut OtlpSpan, list: Vec<Option<V1Annotation>>) -> V1Endpoint {
    let mut endpoint: Option<V1Endpoint> = None;
    let mut kind_set = false;
    let mut earliest = i64::MAX;
    let mut latest = i64::MIN;
    for a in list.into_iter().flatten() {
        let value = a.value.unwrap_or_default();
        if value.is_empty() {
            continue;
        }
        let kind = match value.as_str() {
            "cs" | "cr" => Some(SpanKind::Client),
            "ss" | "sr" => Some(SpanKind::Server),
            "ms" => Some(SpanKind::Producer),
            "mr" => Some(SpanKind::Consumer),
            _ => None,
        };
        let named = a.endpoint.as_ref().is_some_and(|e| !e.service().is_empty());
        if endpoint.is_none() && named && kind.is_some() {
            endpoint = a.endpoint.clone();
        }
        if let (Some(k), false) = (kind, kind_set) {
            span.kind = k as i32;
            kind_set = true;
        }
        let ts = a.timestamp.unwrap_or(0);
        if ts < earliest {
            earliest = ts;
            span.start_time_unix_nano = micros_to_nanos(ts);
        }
        if ts > latest {
            latest = ts;
            span.end_time_unix_nano = micros_to_nanos(ts);
        }
        if kind.is_none() {
            span.events.push(Event {
                time_unix_nano: micros_to_nanos(ts),
                name: value,
                ..Default::default()
            });
        }
    }
    endpoint.unwrap_or_else(|| V1Endpoint {
        service_name: Some(UNKNOWN_SERVICE.to_string()),
        ..Default::default()
    })
}

/// Status as the collector derives it for v1, strongest source first.
#[derive(Default)]
struct StatusSources {
    census: (Option<StatusCode>, String),
    otel: (Option<i32>, String),
    error: Option<StatusCode>,
    http: (Option<StatusCode>, String),
}

impl StatusSources {
    /// Records a status tag; true when the tag is consumed (not an attribute).
    fn record(&mut self, key: &str, value: &Value) -> bool {
        match key {
            "census.status_code" => {
                if let Some(code) = int32(value) {
                    self.census.0 = Some(if code == 0 {
                        StatusCode::Ok
                    } else {
                        StatusCode::Error
                    });
                }
                true
            }
            "census.status_description" | "opencensus.status_description" => {
                self.census.1 = text(value);
                true
            }
            tags::STATUS_CODE => {
                self.otel.0 = int32(value);
                true
            }
            tags::STATUS_DESCRIPTION => {
                self.otel.1 = text(value);
                true
            }
            "http.status_code" => {
                if let Some(code) = int32(value) {
                    self.http.0 = Some(if (100..400).contains(&code) {
                        StatusCode::Unset
                    } else {
                        StatusCode::Error
                    });
                }
                false
            }
            "http.status_message" => {
                self.http.1 = text(value);
                false
            }
            tags::ERROR => {
                self.error = Some(StatusCode::Error);
                true
            }
            _ => false,
        }
    }

    fn status(self) -> Option<Status> {
        let (code, message) = if let Some(c) = self.census.0 {
            (c as i32, self.census.1)
        } else if let Some(c) = self.otel.0 {
            (c, self.otel.1)
        } else if let Some(c) = self.error {
            let message = if self.census.1.is_empty() {
                self.otel.1
            } else {
                self.census.1
            };
            (c as i32, message)
        } else if let Some(c) = self.http.0 {
            (c as i32, self.http.1)
        } else {
            return None;
        };
        Some(Status { code, message })
    }
}

fn int32(v: &Value) -> Option<i32> {
    match v {
        Value::IntValue(i) => i32::try_from(*i).ok(),
        Value::StringValue(s) => s.parse::<i64>().ok().and_then(|i| i32::try_from(i).ok()),
        _ => None,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::StringValue(s) => s.clone(),
        _ => String::new(),
    }
}

/// Binary annotations as attributes. `lc` is renamed `component`; `sa`,
/// `ca` and `ma` (the peer's address) become the `peer.service` and
/// `net.peer.*` attributes. Returns the service name to use when the core
/// annotations named none: the last endpoint service seen, else `lc`.
fn binary_annotations(
    span: &mut OtlpSpan,
    list: Vec<Option<V1BinaryAnnotation>>,
    parse_string_tags: bool,
) -> String {
    let mut fallback = String::new();
    let mut local_component = String::new();
    let mut status = StatusSources::default();
    let mut peer: Option<V1Endpoint> = None;
    for b in list.into_iter().flatten() {
        let key = b.key.unwrap_or_default();
        if matches!(key.as_str(), "sa" | "ca" | "ma") {
            if let Some(e) = b.endpoint {
                peer = Some(e);
            }
            continue;
        }
        if let Some(e) = b.endpoint.as_ref().filter(|e| !e.service().is_empty()) {
            fallback = e.service().to_string();
        }
        let raw = b.value.map(TagValue::into_string).unwrap_or_default();
        let key = if key == "lc" {
            local_component = raw.clone();
            "component".to_string()
        } else {
            key
        };
        let value = parse_tag(&raw, parse_string_tags);
        if status.record(&key, &value) {
            continue;
        }
        upsert(&mut span.attributes, &key, value);
    }
    if let Some(e) = peer {
        if !e.service().is_empty() {
            insert(
                &mut span.attributes,
                tags::PEER_SERVICE,
                Value::StringValue(e.service().to_string()),
            );
        }
        for ip in [&e.ipv4, &e.ipv6]
            .into_iter()
            .flatten()
            .filter(|ip| !ip.is_empty())
        {
            insert(
                &mut span.attributes,
                tags::NET_PEER_IP,
                Value::StringValue(ip.clone()),
            );
        }
        if let Some(port) = e.port.filter(|p| *p > 0) {
            upsert(
                &mut span.attributes,
                tags::NET_PEER_PORT,
                Value::IntValue(i64::from(port)),
            );
        }
    }
    span.status = status.status();
    if fallback.is_empty() {
        local_component
    } else {
        fallback
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    /// A client span as py_zipkin's V1 JSON encoder writes it.
    const CLIENT: &str = r#"[{
        "traceId": "463ac35c9f6413ad", "id": "72485a3953bb6124", "parentId": "a2fb4a1d1a96d312",
        "name": "get /users", "timestamp": 1502787600000000, "duration": 150000,
        "annotations": [
            {"timestamp": 1502787600000000, "value": "cs",
             "endpoint": {"serviceName": "frontend", "ipv4": "192.168.1.2", "port": 8080}},
            {"timestamp": 1502787600050000, "value": "cache.miss",
             "endpoint": {"serviceName": "frontend", "ipv4": "192.168.1.2", "port": 8080}},
            {"timestamp": 1502787600150000, "value": "cr",
             "endpoint": {"serviceName": "frontend", "ipv4": "192.168.1.2", "port": 8080}}
        ],
        "binaryAnnotations": [
            {"key": "http.path", "value": "/users", "endpoint": {"serviceName": "frontend"}},
            {"key": "retries", "value": "2", "endpoint": {"serviceName": "frontend"}},
            {"key": "http.status_code", "value": "500"},
            {"key": "error", "value": "timeout"},
            {"key": "sa", "value": true, "endpoint": {"serviceName": "users", "ipv4": "10.0.0.7", "port": 9411}}
        ]
    }]"#;

    #[test]
    fn client_span_from_py_zipkin() {
        let rs = decode(CLIENT.as_bytes(), false).unwrap();
        assert_eq!(rs.len(), 1);
        assert_eq!(
            rs[0].resource.as_ref().unwrap().attributes,
            vec![
                kv("service.name", s("frontend")),
                kv("ipv4", s("192.168.1.2")),
                kv("port", s("8080")),
            ]
        );
        let span = &rs[0].scope_spans[0].spans[0];
        assert_eq!(
            span.trace_id,
            [0, 0, 0, 0, 0, 0, 0, 0, 0x46, 0x3a, 0xc3, 0x5c, 0x9f, 0x64, 0x13, 0xad]
        );
        assert_eq!(
            span.span_id,
            [0x72, 0x48, 0x5a, 0x39, 0x53, 0xbb, 0x61, 0x24]
        );
        assert_eq!(
            span.parent_span_id,
            [0xa2, 0xfb, 0x4a, 0x1d, 0x1a, 0x96, 0xd3, 0x12]
        );
        assert_eq!(span.name, "get /users");
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(span.start_time_unix_nano, 1_502_787_600_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_502_787_600_150_000_000);
        assert_eq!(
            span.events,
            vec![Event {
                time_unix_nano: 1_502_787_600_050_000_000,
                name: "cache.miss".into(),
                ..Default::default()
            }]
        );
        assert_eq!(
            span.attributes,
            vec![
                kv("http.path", s("/users")),
                kv("retries", s("2")),
                kv("http.status_code", s("500")),
                kv("peer.service", s("users")),
                kv("net.peer.ip", s("10.0.0.7")),
                kv("net.peer.port", Value::IntValue(9411)),
            ]
        );
        // The error tag outranks http.status_code.
        assert_eq!(
            span.status,
            Some(Status {
                code: StatusCode::Error as i32,
                message: String::new()
            })
        );
        let typed = decode(CLIENT.as_bytes(), true).unwrap();
        let attrs = &typed[0].scope_spans[0].spans[0].attributes;
        assert!(attrs.contains(&kv("retries", Value::IntValue(2))));
        assert!(attrs.contains(&kv("http.status_code", Value::IntValue(500))));
    }

    #[test]
    fn status_sources_in_order() {
        let span_with = |binary: &str| {
            let body = format!(
                r#"[{{"traceId":"0000000000000001","id":"0000000000000002","timestamp":5,"binaryAnnotations":[{binary}]}}]"#
            );
            let rs = decode(body.as_bytes(), false).unwrap();
            rs[0].scope_spans[0].spans[0].clone()
        };
        let st = |code: StatusCode, m: &str| {
            Some(Status {
                code: code as i32,
                message: m.into(),
            })
        };
        let cases: &[(&str, Option<Status>)] = &[
            ("", None),
            (
                r#"{"key":"census.status_code","value":"0"}"#,
                st(StatusCode::Ok, ""),
            ),
            (
                r#"{"key":"census.status_code","value":"5"},{"key":"census.status_description","value":"nf"}"#,
                st(StatusCode::Error, "nf"),
            ),
            (
                r#"{"key":"otel.status_code","value":"1"},{"key":"otel.status_description","value":"d"}"#,
                st(StatusCode::Ok, "d"),
            ),
            (
                r#"{"key":"http.status_code","value":"404"}"#,
                st(StatusCode::Error, ""),
            ),
            (
                r#"{"key":"http.status_code","value":"204"},{"key":"http.status_message","value":"ok"}"#,
                st(StatusCode::Unset, "ok"),
            ),
            (
                r#"{"key":"error","value":"x"},{"key":"otel.status_description","value":"why"}"#,
                st(StatusCode::Error, "why"),
            ),
        ];
        for (binary, want) in cases {
            let span = span_with(binary);
            assert_eq!(&span.status, want, "{binary}");
            assert!(
                span.attributes.iter().all(|a| !a.key.starts_with("census")
                    && !a.key.starts_with("otel.status")
                    && a.key != "error"),
                "{binary}: {:?}",
                span.attributes
            );
        }
    }

    #[test]
    fn service_fallbacks_and_grouping() {
        let body = r#"[
            {"traceId":"0000000000000001","id":"0000000000000002","timestamp":1,
             "binaryAnnotations":[{"key":"lc","value":"worker"}]},
            {"traceId":"0000000000000001","id":"0000000000000003","timestamp":1,
             "binaryAnnotations":[{"key":"k","value":"v","endpoint":{"serviceName":"batch"}}]},
            {"traceId":"0000000000000001","id":"0000000000000004","timestamp":1,
             "annotations":[{"timestamp":1,"value":"sr","endpoint":{"serviceName":"batch"}}]},
            {"traceId":"0000000000000001","id":"0000000000000005","timestamp":1}
        ]"#;
        let rs = decode(body.as_bytes(), false).unwrap();
        let services: Vec<(String, usize)> = rs
            .iter()
            .map(|r| {
                let a = &r.resource.as_ref().unwrap().attributes[0];
                let Some(Value::StringValue(name)) = a.value.as_ref().and_then(|v| v.value.clone())
                else {
                    panic!("{a:?}")
                };
                (name, r.scope_spans[0].spans.len())
            })
            .collect();
        assert_eq!(
            services,
            vec![
                ("worker".into(), 1),
                ("batch".into(), 2),
                ("unknown-service".into(), 1)
            ]
        );
        let lc = &rs[0].scope_spans[0].spans[0];
        assert_eq!(lc.attributes, vec![kv("component", s("worker"))]);
    }

    #[test]
    fn missing_times_are_now_and_marked() {
        let body = r#"[{"traceId":"00000000000000010000000000000002","id":"0000000000000003"}]"#;
        let rs = decode(body.as_bytes(), false).unwrap();
        let span = &rs[0].scope_spans[0].spans[0];
        assert!(span.start_time_unix_nano > 1_600_000_000_000_000_000);
        assert_eq!(span.start_time_unix_nano, span.end_time_unix_nano);
        assert_eq!(
            span.attributes,
            vec![kv(
                "otel.zipkin.absentField.startTime",
                Value::BoolValue(true)
            )]
        );
        assert_eq!(
            span.trace_id,
            [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]
        );
    }

    #[test]
    fn rejects_bad_ids() {
        let cases: &[(&str, &str)] = &[
            (r#"{"#, "zipkin v1"),
            (r#"[{"id":"0000000000000002"}]"#, "traceId must be 16 or 32"),
            (
                r#"[{"traceId":"1","id":"0000000000000002"}]"#,
                "traceId must be 16 or 32",
            ),
            (
                r#"[{"traceId":"0000000000000000","id":"0000000000000002"}]"#,
                "traceId is zero",
            ),
            (
                r#"[{"traceId":"0000000000000001","id":"2"}]"#,
                "id must be 16",
            ),
            (
                r#"[{"traceId":"0000000000000001","id":"0000000000000000"}]"#,
                "id is zero",
            ),
            (
                r#"[{"traceId":"0000000000000001","id":"0000000000000002","parentId":"zz00000000000000"}]"#,
                "parentId",
            ),
            (
                r#"[{"traceId":"0000000000000001","id":"0000000000000002","binaryAnnotations":[{"key":"a","value":{}}]}]"#,
                "zipkin v1",
            ),
        ];
        for (body, want) in cases {
            let err = decode(body.as_bytes(), false).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
        assert!(decode(b"[]", false).unwrap().is_empty());
    }
}
