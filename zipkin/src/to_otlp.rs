//! Zipkin v2 spans to OTLP, the reverse of [`crate::from_otlp`]: the local
//! endpoint's service and the resource tags make the resource,
//! `otel.scope.*`/`otel.library.*` the scope, status and link tags become
//! status and links, annotations events, endpoints `net.*` attributes.

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as OtlpSpan, Status};

use crate::model::{Endpoint, Kind, Span};
use crate::tags::{self, attributes_from_json, insert, kv, parse_tag, upsert};

/// Spans with the same resource (service and resource tags) and the same
/// scope share one `ResourceSpans` / `ScopeSpans`, in order of first
/// appearance. With `parse_string_tags`, numeric and boolean tag strings
/// become typed attributes.
pub fn to_otlp(spans: Vec<Span>, parse_string_tags: bool) -> Vec<ResourceSpans> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut resources: HashMap<Vec<(String, String)>, usize> = HashMap::new();
    let mut scopes: HashMap<(usize, String, String), usize> = HashMap::new();
    for span in spans {
        let mut tags = span.tags.clone();
        let resource = take_resource(&span, &mut tags);
        let (scope_name, scope_version) = take_scope(&mut tags);
        let ri = *resources.entry(resource.clone()).or_insert_with(|| {
            out.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: resource
                        .iter()
                        .map(|(k, v)| kv(k, Value::StringValue(v.clone())))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            out.len() - 1
        });
        let si = *scopes
            .entry((ri, scope_name.clone(), scope_version.clone()))
            .or_insert_with(|| {
                let scope_spans = &mut out[ri].scope_spans;
                scope_spans.push(ScopeSpans {
                    scope: (!scope_name.is_empty() || !scope_version.is_empty()).then(|| {
                        InstrumentationScope {
                            name: scope_name,
                            version: scope_version,
                            ..Default::default()
                        }
                    }),
                    ..Default::default()
                });
                scope_spans.len() - 1
            });
        out[ri].scope_spans[si]
            .spans
            .push(translate_span(span, tags, parse_string_tags));
    }
    out
}

/// The resource attributes: the local service name (under the key named by
/// `otlp.service.name.source`, else `service.name`) and every tag that is a
/// resource semantic convention, removed from the span's tags.
fn take_resource(span: &Span, tags: &mut BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut attrs: Vec<(String, String)> = Vec::new();
    let source = tags.remove(tags::SERVICE_NAME_SOURCE);
    if let Some(service) = span
        .local_endpoint
        .as_ref()
        .map(|e| e.service_name.as_str())
        .filter(|s| !s.is_empty())
    {
        let key = source
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| tags::SERVICE_NAME.to_string());
        attrs.push((key, service.to_string()));
    }
    let keys: Vec<String> = tags
        .keys()
        .filter(|k| tags::is_resource_key(k))
        .cloned()
        .collect();
    for key in keys {
        let Some(value) = tags.remove(&key) else {
            continue;
        };
        match attrs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => attrs.push((key, value)),
        }
    }
    attrs
}

/// The scope from `otel.scope.*`, else the older `otel.library.*`.
fn take_scope(tags: &mut BTreeMap<String, String>) -> (String, String) {
    let library_name = tags.remove(tags::LIBRARY_NAME);
    let library_version = tags.remove(tags::LIBRARY_VERSION);
    let name = tags.remove(tags::SCOPE_NAME).or(library_name);
    let version = tags.remove(tags::SCOPE_VERSION).or(library_version);
    (name.unwrap_or_default(), version.unwrap_or_default())
}

fn translate_span(
    span: Span,
    mut tags: BTreeMap<String, String>,
    parse_string_tags: bool,
) -> OtlpSpan {
    let trace_state = tags.remove(tags::TRACE_STATE).unwrap_or_default();
    let kind = match span.kind {
        Some(Kind::Client) => SpanKind::Client,
        Some(Kind::Server) => SpanKind::Server,
        Some(Kind::Producer) => SpanKind::Producer,
        Some(Kind::Consumer) => SpanKind::Consumer,
        None => match tags.remove(tags::SPAN_KIND).as_deref() {
            Some("internal") => SpanKind::Internal,
            _ => SpanKind::Unspecified,
        },
    };
    let status = take_status(&mut tags);
    let links = take_links(&mut tags);

    let mut attributes: Vec<KeyValue> = tags
        .into_iter()
        .map(|(k, v)| kv(&k, parse_tag(&v, parse_string_tags)))
        .collect();
    endpoint_attributes(&mut attributes, span.local_endpoint.as_ref(), false);
    endpoint_attributes(&mut attributes, span.remote_endpoint.as_ref(), true);

    let duration = span.duration.unwrap_or(0).saturating_mul(1000);
    let (start, end) = match span.timestamp {
        Some(ts) if ts != 0 => {
            let start = ts.saturating_mul(1000);
            (start, start.saturating_add(duration))
        }
        // OTLP needs a start; the epoch marks it unknown, and the attribute says so.
        _ => {
            upsert(
                &mut attributes,
                tags::START_TIME_ABSENT,
                Value::BoolValue(true),
            );
            (0, duration)
        }
    };

    OtlpSpan {
        trace_id: span.trace_id.to_bytes().to_vec(),
        span_id: span.id.to_be_bytes().to_vec(),
        trace_state,
        parent_span_id: span
            .parent_id
            .filter(|p| *p != 0 && *p != span.id)
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        name: span.name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        events: span
            .annotations
            .into_iter()
            .map(|a| event(a.timestamp, a.value))
            .collect(),
        links,
        status,
        ..Default::default()
    }
}

/// `otel.status_code` (the collector's `STATUS_CODE_*`, the OpenTelemetry
/// SDKs' `OK`/`ERROR`) with `otel.status_description`, and the `error` tag,
/// which always means a failure; its text, unless just `true`, is the
/// message when no description was given.
fn take_status(tags: &mut BTreeMap<String, String>) -> Option<Status> {
    let mut code = StatusCode::Unset;
    let mut message = String::new();
    if let Some(value) = tags.remove(tags::STATUS_CODE) {
        code = match value.as_str() {
            "STATUS_CODE_OK" | "Ok" | "OK" => StatusCode::Ok,
            "STATUS_CODE_ERROR" | "Error" | "ERROR" => StatusCode::Error,
            _ => StatusCode::Unset,
        };
        message = tags.remove(tags::STATUS_DESCRIPTION).unwrap_or_default();
    }
    if let Some(value) = tags.remove(tags::ERROR) {
        code = StatusCode::Error;
        if message.is_empty() && value != "true" {
            message = value;
        }
    }
    let set = code != StatusCode::Unset || !message.is_empty();
    set.then_some(Status {
        code: code as i32,
        message,
    })
}

/// `otlp.link.0`, `otlp.link.1`, … in order until one is missing. A value
/// that does not parse stays a tag.
fn take_links(tags: &mut BTreeMap<String, String>) -> Vec<Link> {
    let mut links = Vec::new();
    for i in 0..tags::MAX_LINKS {
        let key = format!("{}{i}", tags::LINK_PREFIX);
        let Some(value) = tags.get(&key) else { break };
        if let Some(link) = parse_link(value) {
            links.push(link);
            tags.remove(&key);
        }
    }
    links
}

fn parse_link(value: &str) -> Option<Link> {
    let parts: Vec<&str> = value.split('|').collect();
    let n = parts.len();
    if n < 5 {
        return None;
    }
    let attrs = parts[3..n - 1].join("|");
    let attrs: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&attrs).ok()?;
    Some(Link {
        trace_id: hex_id(parts[0], 16)?,
        span_id: hex_id(parts[1], 8)?,
        trace_state: parts[2].to_string(),
        attributes: attributes_from_json(&attrs),
        dropped_attributes_count: parts[n - 1].parse().ok()?,
        ..Default::default()
    })
}

/// Exactly `len` bytes of hex, or empty for an empty id.
fn hex_id(s: &str, len: usize) -> Option<Vec<u8>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    if s.len() != len * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..len)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// An annotation as an event. `name|{attributes}|dropped` (what the collector
/// and weft write) and `{"name": {attributes}}` (what the OpenTelemetry SDKs
/// write) carry attributes; any other value is the event name as it is.
fn event(timestamp: u64, value: String) -> Event {
    let time_unix_nano = timestamp.saturating_mul(1000);
    if let Some((name, attributes, dropped)) = parse_pipe_event(&value) {
        return Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count: dropped,
        };
    }
    if let Some((name, attributes)) = parse_sdk_event(&value) {
        return Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count: 0,
        };
    }
    Event {
        time_unix_nano,
        name: value,
        ..Default::default()
    }
}

fn parse_pipe_event(value: &str) -> Option<(String, Vec<KeyValue>, u32)> {
    let parts: Vec<&str> = value.split('|').collect();
    let n = parts.len();
    if n < 3 {
        return None;
    }
    let attrs: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&parts[1..n - 1].join("|")).ok()?;
    let dropped = parts[n - 1].parse().ok()?;
    Some((parts[0].to_string(), attributes_from_json(&attrs), dropped))
}

fn parse_sdk_event(value: &str) -> Option<(String, Vec<KeyValue>)> {
    if !value.starts_with('{') {
        return None;
    }
    let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(value).ok()?;
    if obj.len() != 1 {
        return None;
    }
    let (name, attrs) = obj.into_iter().next()?;
    let serde_json::Value::Object(attrs) = attrs else {
        return None;
    };
    Some((name, attributes_from_json(&attrs)))
}

/// `net.host.ip`/`net.host.port` from the local endpoint, `peer.service`,
/// `net.peer.ip`/`net.peer.port` from the remote one. Addresses do not
/// replace a tag of the same name; ports do.
fn endpoint_attributes(attrs: &mut Vec<KeyValue>, e: Option<&Endpoint>, remote: bool) {
    let Some(e) = e else { return };
    let (ip_key, port_key) = if remote {
        if !e.service_name.is_empty() {
            insert(
                attrs,
                tags::PEER_SERVICE,
                Value::StringValue(e.service_name.clone()),
            );
        }
        (tags::NET_PEER_IP, tags::NET_PEER_PORT)
    } else {
        (tags::NET_HOST_IP, tags::NET_HOST_PORT)
    };
    if let Some(ip) = e.ipv4 {
        insert(attrs, ip_key, Value::StringValue(ip.to_string()));
    }
    if let Some(ip) = e.ipv6 {
        insert(attrs, ip_key, Value::StringValue(ip.to_string()));
    }
    if e.port > 0 {
        upsert(attrs, port_key, Value::IntValue(i64::from(e.port)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Annotation, TraceId};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue};
    use std::net::Ipv4Addr;

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn zspan(service: &str, tags: &[(&str, &str)]) -> Span {
        Span {
            trace_id: TraceId {
                high: 0x0102_0304_0506_0708,
                low: 0x1112_1314_1516_1718,
            },
            id: 0xaa,
            parent_id: Some(0xbb),
            name: "op".into(),
            kind: Some(Kind::Client),
            timestamp: Some(1_700_000_000_000_001),
            duration: Some(1500),
            local_endpoint: Some(Endpoint {
                service_name: service.into(),
                ..Default::default()
            }),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    type Tags = &'static [(&'static str, &'static str)];
    /// Resource attributes and (scope name, version, span count) per scope.
    type Shape = (Vec<KeyValue>, Vec<(String, String, usize)>);

    fn single(rs: &[ResourceSpans]) -> &OtlpSpan {
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].scope_spans.len(), 1);
        assert_eq!(rs[0].scope_spans[0].spans.len(), 1);
        &rs[0].scope_spans[0].spans[0]
    }

    #[test]
    fn every_field_of_a_client_span() {
        let mut z = zspan(
            "checkout",
            &[
                ("http.method", "GET"),
                ("http.status_code", "503"),
                ("host.name", "node-1"),
                ("service.name", "checkout"),
                ("otel.library.name", "io.weft"),
                ("otel.library.version", "2.0"),
                ("w3c.tracestate", "k=v"),
                ("otel.status_code", "STATUS_CODE_ERROR"),
                ("otel.status_description", "upstream down"),
                ("error", "true"),
                (
                    "otlp.link.0",
                    r#"0101010101010101010101010101010a|020202020202020b|s=1|{"n":2,"x":"y"}|3"#,
                ),
                ("otlp.link.1", "|||{}|0"),
            ],
        );
        z.local_endpoint.as_mut().unwrap().ipv4 = Some(Ipv4Addr::new(10, 0, 0, 5));
        z.local_endpoint.as_mut().unwrap().port = 8443;
        z.remote_endpoint = Some(Endpoint {
            service_name: "payments".into(),
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 9)),
            ipv6: Some("fe80::1".parse().unwrap()),
            port: 9000,
        });
        z.annotations = vec![
            Annotation {
                timestamp: 1_700_000_000_000_100,
                value: "plain".into(),
            },
            Annotation {
                timestamp: 1_700_000_000_000_200,
                value: r#"exception|{"exception.type":"IOError","attempt":2}|1"#.into(),
            },
            Annotation {
                timestamp: 1_700_000_000_000_300,
                value: r#"{"retry": {"backoff": 1.5, "tags": ["a", "b"]}}"#.into(),
            },
        ];
        let rs = to_otlp(vec![z], false);
        assert_eq!(
            rs[0].resource.as_ref().unwrap().attributes,
            vec![
                kv("service.name", s("checkout")),
                kv("host.name", s("node-1"))
            ]
        );
        assert_eq!(
            rs[0].scope_spans[0].scope,
            Some(InstrumentationScope {
                name: "io.weft".into(),
                version: "2.0".into(),
                ..Default::default()
            })
        );
        let span = single(&rs);
        assert_eq!(
            span.trace_id,
            [1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
        );
        assert_eq!(span.span_id, 0xaau64.to_be_bytes());
        assert_eq!(span.parent_span_id, 0xbbu64.to_be_bytes());
        assert_eq!(span.trace_state, "k=v");
        assert_eq!(span.name, "op");
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_001_000);
        assert_eq!(span.end_time_unix_nano, 1_700_000_000_001_501_000);
        assert_eq!(
            span.status,
            Some(Status {
                code: StatusCode::Error as i32,
                message: "upstream down".into()
            })
        );
        assert_eq!(
            span.attributes,
            vec![
                kv("http.method", s("GET")),
                kv("http.status_code", s("503")),
                kv("net.host.ip", s("10.0.0.5")),
                kv("net.host.port", Value::IntValue(8443)),
                kv("peer.service", s("payments")),
                kv("net.peer.ip", s("10.0.0.9")),
                kv("net.peer.port", Value::IntValue(9000)),
            ]
        );
        assert_eq!(
            span.links,
            vec![
                Link {
                    trace_id: vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0x0a],
                    span_id: vec![2, 2, 2, 2, 2, 2, 2, 0x0b],
                    trace_state: "s=1".into(),
                    attributes: vec![kv("n", Value::IntValue(2)), kv("x", s("y"))],
                    dropped_attributes_count: 3,
                    ..Default::default()
                },
                Link::default(),
            ]
        );
        assert_eq!(
            span.events,
            vec![
                Event {
                    time_unix_nano: 1_700_000_000_000_100_000,
                    name: "plain".into(),
                    ..Default::default()
                },
                Event {
                    time_unix_nano: 1_700_000_000_000_200_000,
                    name: "exception".into(),
                    attributes: vec![
                        kv("attempt", Value::IntValue(2)),
                        kv("exception.type", s("IOError"))
                    ],
                    dropped_attributes_count: 1,
                },
                Event {
                    time_unix_nano: 1_700_000_000_000_300_000,
                    name: "retry".into(),
                    attributes: vec![
                        kv("backoff", Value::DoubleValue(1.5)),
                        kv(
                            "tags",
                            Value::ArrayValue(ArrayValue {
                                values: vec![
                                    AnyValue {
                                        value: Some(s("a"))
                                    },
                                    AnyValue {
                                        value: Some(s("b"))
                                    }
                                ]
                            })
                        ),
                    ],
                    dropped_attributes_count: 0,
                },
            ]
        );
    }

    #[test]
    fn status_table() {
        // tags -> (code, message, error attribute left)
        let cases: &[(Tags, Option<(StatusCode, &str)>)] = &[
            (&[], None),
            (
                &[("otel.status_code", "STATUS_CODE_OK")],
                Some((StatusCode::Ok, "")),
            ),
            (&[("otel.status_code", "OK")], Some((StatusCode::Ok, ""))),
            (&[("otel.status_code", "Ok")], Some((StatusCode::Ok, ""))),
            (
                &[("otel.status_code", "ERROR")],
                Some((StatusCode::Error, "")),
            ),
            (&[("otel.status_code", "bogus")], None),
            (
                &[
                    ("otel.status_code", "STATUS_CODE_ERROR"),
                    ("otel.status_description", "d"),
                ],
                Some((StatusCode::Error, "d")),
            ),
            (&[("error", "true")], Some((StatusCode::Error, ""))),
            (&[("error", "")], Some((StatusCode::Error, ""))),
            (&[("error", "boom")], Some((StatusCode::Error, "boom"))),
            // The OpenTelemetry SDKs' shape: code plus the description in `error`.
            (
                &[("otel.status_code", "ERROR"), ("error", "boom")],
                Some((StatusCode::Error, "boom")),
            ),
            // A description only counts next to a code.
            (&[("otel.status_description", "d")], None),
        ];
        for (tags, want) in cases {
            let rs = to_otlp(vec![zspan("a", tags)], false);
            let span = single(&rs);
            let want = want.map(|(code, message)| Status {
                code: code as i32,
                message: message.into(),
            });
            assert_eq!(span.status, want, "{tags:?}");
            let keys: Vec<&str> = span.attributes.iter().map(|a| a.key.as_str()).collect();
            assert!(
                !keys.contains(&"error") && !keys.contains(&"otel.status_code"),
                "{tags:?}"
            );
        }
    }

    #[test]
    fn kinds_table() {
        let cases = [
            (Some(Kind::Client), None, SpanKind::Client, None),
            (Some(Kind::Server), None, SpanKind::Server, None),
            (Some(Kind::Producer), None, SpanKind::Producer, None),
            (Some(Kind::Consumer), None, SpanKind::Consumer, None),
            (None, Some("internal"), SpanKind::Internal, None),
            (None, Some("other"), SpanKind::Unspecified, None),
            (None, None, SpanKind::Unspecified, None),
            // With a Zipkin kind, a span.kind tag is just a tag.
            (
                Some(Kind::Server),
                Some("internal"),
                SpanKind::Server,
                Some("internal"),
            ),
        ];
        for (kind, tag, want, left) in cases {
            let mut z = zspan("a", &[]);
            z.kind = kind;
            if let Some(t) = tag {
                z.tags.insert("span.kind".into(), t.into());
            }
            let rs = to_otlp(vec![z], false);
            let span = single(&rs);
            assert_eq!(span.kind, want as i32, "{kind:?} {tag:?}");
            let got = span
                .attributes
                .iter()
                .find(|a| a.key == "span.kind")
                .map(|a| a.value.clone());
            assert_eq!(got, left.map(|l| Some(AnyValue { value: Some(s(l)) })));
        }
    }

    #[test]
    fn parse_string_tags_types_attributes() {
        let z = zspan(
            "a",
            &[("n", "12"), ("f", "1.5"), ("b", "true"), ("s", "x1")],
        );
        let rs = to_otlp(vec![z.clone()], true);
        assert_eq!(
            single(&rs).attributes,
            vec![
                kv("b", Value::BoolValue(true)),
                kv("f", Value::DoubleValue(1.5)),
                kv("n", Value::IntValue(12)),
                kv("s", s("x1")),
            ]
        );
        let rs = to_otlp(vec![z], false);
        assert_eq!(
            single(&rs).attributes,
            vec![
                kv("b", s("true")),
                kv("f", s("1.5")),
                kv("n", s("12")),
                kv("s", s("x1"))
            ]
        );
    }

    #[test]
    fn missing_timestamp_and_odd_parents() {
        let mut z = zspan("a", &[]);
        z.timestamp = None;
        z.duration = Some(7);
        z.parent_id = Some(z.id);
        let rs = to_otlp(vec![z], false);
        let span = single(&rs);
        assert_eq!(span.start_time_unix_nano, 0);
        assert_eq!(span.end_time_unix_nano, 7000);
        assert!(span.parent_span_id.is_empty());
        assert_eq!(
            span.attributes,
            vec![kv(
                "otel.zipkin.absentField.startTime",
                Value::BoolValue(true)
            )]
        );
        // Huge times saturate instead of wrapping.
        let mut z = zspan("a", &[]);
        z.timestamp = Some(u64::MAX);
        z.duration = Some(u64::MAX);
        let rs = to_otlp(vec![z], false);
        assert_eq!(single(&rs).end_time_unix_nano, u64::MAX);
    }

    #[test]
    fn grouping_by_resource_and_scope() {
        let spans = vec![
            zspan("a", &[("otel.scope.name", "s1")]),
            zspan("b", &[]),
            zspan(
                "a",
                &[("otel.scope.name", "s2"), ("otel.scope.version", "1")],
            ),
            zspan("a", &[("otel.scope.name", "s1")]),
            zspan("a", &[("host.name", "other"), ("otel.scope.name", "s1")]),
            zspan("", &[]),
        ];
        let rs = to_otlp(spans, false);
        let shape: Vec<Shape> = rs
            .iter()
            .map(|r| {
                (
                    r.resource.clone().unwrap().attributes,
                    r.scope_spans
                        .iter()
                        .map(|s| {
                            let sc = s.scope.clone().unwrap_or_default();
                            (sc.name, sc.version, s.spans.len())
                        })
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (
                    vec![kv("service.name", s("a"))],
                    vec![("s1".into(), "".into(), 2), ("s2".into(), "1".into(), 1)]
                ),
                (
                    vec![kv("service.name", s("b"))],
                    vec![("".into(), "".into(), 1)]
                ),
                (
                    vec![kv("service.name", s("a")), kv("host.name", s("other"))],
                    vec![("s1".into(), "".into(), 1)]
                ),
                (vec![], vec![("".into(), "".into(), 1)]),
            ]
        );
    }

    #[test]
    fn service_name_source_names_the_resource_key() {
        let z = zspan("fn-1", &[("otlp.service.name.source", "faas.name")]);
        let rs = to_otlp(vec![z], false);
        assert_eq!(
            rs[0].resource.as_ref().unwrap().attributes,
            vec![kv("faas.name", s("fn-1"))]
        );
        assert!(single(&rs).attributes.is_empty());
    }

    #[test]
    fn malformed_links_and_events_are_kept_as_text() {
        let z = zspan(
            "a",
            &[
                ("otlp.link.0", "zz|01|x|{}|0"),
                ("otlp.link.1", "not|enough"),
                ("otlp.link.3", "||||0"),
            ],
        );
        let mut z = z;
        z.annotations = vec![
            Annotation {
                timestamp: 1,
                value: "a|b".into(),
            },
            Annotation {
                timestamp: 2,
                value: "a|{bad json|1".into(),
            },
            Annotation {
                timestamp: 3,
                value: r#"{"a":1}"#.into(),
            },
            Annotation {
                timestamp: 4,
                value: r#"{"a":{},"b":{}}"#.into(),
            },
        ];
        let rs = to_otlp(vec![z], false);
        let span = single(&rs);
        assert!(span.links.is_empty());
        let keys: Vec<&str> = span.attributes.iter().map(|a| a.key.as_str()).collect();
        // Unparsable links stay tags; link 3 is never reached (2 is missing).
        assert_eq!(keys, ["otlp.link.0", "otlp.link.1", "otlp.link.3"]);
        let names: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["a|b", "a|{bad json|1", r#"{"a":1}"#, r#"{"a":{},"b":{}}"#]
        );
        assert!(span.events.iter().all(|e| e.attributes.is_empty()));
    }
}
