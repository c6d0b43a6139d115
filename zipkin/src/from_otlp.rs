//! OTLP spans to Zipkin v2 spans, as the collector's `zipkinv2` translator
//! maps them: resource and scope become tags, `service.name` the local
//! endpoint, `peer.service`/`net.peer.*` the remote one, status and links
//! become tags, events annotations.

use std::collections::BTreeMap;
use std::net::IpAddr;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span as OtlpSpan};

use crate::model::{hex, Annotation, Endpoint, Kind, Span, TraceId};
use crate::tags::{self, attributes_json, tag_value};

/// The translated spans, and how many OTLP spans could not be translated
/// (a missing or all-zero trace or span id).
#[derive(Debug, Default)]
pub struct Translated {
    pub spans: Vec<Span>,
    pub invalid: usize,
}

/// Translates OTLP resource spans. `default_service_name` names the local
/// endpoint of spans whose resource has no service name.
pub fn from_otlp(resource_spans: &[ResourceSpans], default_service_name: &str) -> Translated {
    let mut out = Translated::default();
    for rs in resource_spans {
        let attrs = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        if attrs.is_empty() && rs.scope_spans.is_empty() {
            continue;
        }
        let mut resource_tags: BTreeMap<String, String> = attrs
            .iter()
            .map(|kv| (kv.key.clone(), tag_value(kv.value.as_ref())))
            .collect();
        let service = take_service_name(&mut resource_tags)
            .unwrap_or_else(|| default_service_name.to_string());
        for ss in &rs.scope_spans {
            let mut scope_tags = resource_tags.clone();
            if let Some(scope) = &ss.scope {
                for kv in &scope.attributes {
                    scope_tags.insert(kv.key.clone(), tag_value(kv.value.as_ref()));
                }
                if !scope.name.is_empty() {
                    scope_tags.insert(tags::LIBRARY_NAME.into(), scope.name.clone());
                    scope_tags.insert(tags::SCOPE_NAME.into(), scope.name.clone());
                }
                if !scope.version.is_empty() {
                    scope_tags.insert(tags::LIBRARY_VERSION.into(), scope.version.clone());
                    scope_tags.insert(tags::SCOPE_VERSION.into(), scope.version.clone());
                }
            }
            for span in &ss.spans {
                match translate_span(span, &service, &scope_tags) {
                    Some(z) => out.spans.push(z),
                    None => out.invalid += 1,
                }
            }
        }
    }
    out
}

/// `service.name`, else the first of the collector's fallbacks (recording
/// which in `otlp.service.name.source`); the key is removed from the tags.
fn take_service_name(tags: &mut BTreeMap<String, String>) -> Option<String> {
    if let Some(name) = tags.remove(tags::SERVICE_NAME).filter(|n| !n.is_empty()) {
        return Some(name);
    }
    for key in tags::SERVICE_NAME_FALLBACKS {
        if let Some(name) = tags.get(key).filter(|n| !n.is_empty()).cloned() {
            tags.remove(key);
            tags.insert(tags::SERVICE_NAME_SOURCE.into(), key.to_string());
            return Some(name);
        }
    }
    None
}

fn id8(b: &[u8]) -> Option<u64> {
    let id = u64::from_be_bytes(b.try_into().ok()?);
    (id != 0).then_some(id)
}

fn translate_span(
    span: &OtlpSpan,
    service: &str,
    scope_tags: &BTreeMap<String, String>,
) -> Option<Span> {
    let trace_id = TraceId::from_bytes(&span.trace_id)
        .filter(|t| span.trace_id.len() == 16 && !t.is_zero())?;
    let id = id8(&span.span_id)?;

    let mut tags = scope_tags.clone();
    for kv in &span.attributes {
        tags.insert(kv.key.clone(), tag_value(kv.value.as_ref()));
    }
    if !span.trace_state.is_empty() {
        tags.insert(tags::TRACE_STATE.into(), span.trace_state.clone());
    }

    let kind = match SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified) {
        SpanKind::Client => Some(Kind::Client),
        SpanKind::Server => Some(Kind::Server),
        SpanKind::Producer => Some(Kind::Producer),
        SpanKind::Consumer => Some(Kind::Consumer),
        SpanKind::Internal => {
            tags.insert(tags::SPAN_KIND.into(), "internal".into());
            None
        }
        SpanKind::Unspecified => None,
    };

    let local_endpoint = endpoint_from_tags(&mut tags, service, false);
    let remote_endpoint = endpoint_from_tags(&mut tags, "", true);

    let status = span.status.clone().unwrap_or_default();
    let code = StatusCode::try_from(status.code).ok();
    if code == Some(StatusCode::Error) {
        tags.insert(tags::ERROR.into(), "true".into());
    } else {
        // Zipkin reads any `error` tag as a failure, `"false"` included.
        tags.remove(tags::ERROR);
    }
    let code_name = match code {
        Some(StatusCode::Ok) => Some("STATUS_CODE_OK"),
        Some(StatusCode::Error) => Some("STATUS_CODE_ERROR"),
        _ => None,
    };
    if let Some(name) = code_name {
        tags.insert(tags::STATUS_CODE.into(), name.into());
        if !status.message.is_empty() {
            tags.insert(tags::STATUS_DESCRIPTION.into(), status.message.clone());
        }
    }

    let annotations = span
        .events
        .iter()
        .map(|e| Annotation {
            timestamp: nanos_to_micros(e.time_unix_nano),
            value: if e.attributes.is_empty() && e.dropped_attributes_count == 0 {
                e.name.clone()
            } else {
                format!(
                    "{}|{}|{}",
                    e.name,
                    serde_json::Value::Object(attributes_json(&e.attributes)),
                    e.dropped_attributes_count
                )
            },
        })
        .collect();

    for (i, link) in span.links.iter().enumerate() {
        tags.insert(
            format!("{}{i}", tags::LINK_PREFIX),
            format!(
                "{}|{}|{}|{}|{}",
                hex_or_empty(&link.trace_id),
                hex_or_empty(&link.span_id),
                link.trace_state,
                serde_json::Value::Object(attributes_json(&link.attributes)),
                link.dropped_attributes_count
            ),
        );
    }

    Some(Span {
        trace_id,
        id,
        parent_id: id8(&span.parent_span_id),
        name: span.name.clone(),
        kind,
        timestamp: start_micros(span.start_time_unix_nano),
        duration: duration_micros(span.start_time_unix_nano, span.end_time_unix_nano),
        local_endpoint,
        remote_endpoint,
        annotations,
        tags,
        debug: false,
        shared: false,
    })
}

/// Nanoseconds to the nearest microsecond.
fn nanos_to_micros(ns: u64) -> u64 {
    ns / 1000 + u64::from(ns % 1000 >= 500)
}

/// A start in the first second of the epoch is what a receiver writes for a
/// span that had no timestamp: it goes out without one again.
fn start_micros(start: u64) -> Option<u64> {
    (start >= 1_000_000_000).then(|| nanos_to_micros(start))
}

/// Rounded to the nearest microsecond, at least 1; none when the span has no
/// end or ends before it starts.
fn duration_micros(start: u64, end: u64) -> Option<u64> {
    if end == 0 || end <= start {
        return None;
    }
    Some(nanos_to_micros(end - start).max(1))
}

fn hex_or_empty(id: &[u8]) -> String {
    if id.iter().all(|b| *b == 0) {
        String::new()
    } else {
        hex(id)
    }
}

/// The local (`net.host.*`) or remote (`peer.service`, `net.peer.*`)
/// endpoint. Tags used for it are removed; values that do not parse as an
/// address or port stay tags.
fn endpoint_from_tags(
    tags: &mut BTreeMap<String, String>,
    service: &str,
    remote: bool,
) -> Option<Endpoint> {
    let (ip_key, port_key) = if remote {
        (tags::NET_PEER_IP, tags::NET_PEER_PORT)
    } else {
        (tags::NET_HOST_IP, tags::NET_HOST_PORT)
    };
    let service_name = if remote {
        tags.get(tags::PEER_SERVICE).cloned().unwrap_or_default()
    } else {
        service.to_string()
    };
    let ip = tags.get(ip_key).and_then(|v| v.parse::<IpAddr>().ok());
    let port = tags.get(port_key).and_then(|v| v.parse::<u16>().ok());
    if service_name.is_empty() && ip.is_none() {
        return None;
    }
    if remote {
        tags.remove(tags::PEER_SERVICE);
    }
    if ip.is_some() {
        tags.remove(ip_key);
    }
    if port.is_some() {
        tags.remove(port_key);
    }
    Some(Endpoint {
        service_name,
        ipv4: match ip {
            Some(IpAddr::V4(v4)) => Some(v4),
            _ => None,
        },
        ipv6: match ip {
            Some(IpAddr::V6(v6)) => Some(v6),
            _ => None,
        },
        port: port.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Status};
    use std::net::{Ipv4Addr, Ipv6Addr};

    use crate::tags::kv;

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn resource(
        attrs: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
        spans: Vec<OtlpSpan>,
    ) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: attrs,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.weft.test".into(),
                    version: "1.2.3".into(),
                    attributes: vec![kv("scope.attr", s("sv"))],
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn base_span() -> OtlpSpan {
        OtlpSpan {
            trace_id: vec![
                0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f,
                0xc6, 0x0c,
            ],
            span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74],
            parent_span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73],
            name: "Get /Users".into(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: 1_544_712_660_000_000_499,
            end_time_unix_nano: 1_544_712_661_000_000_500,
            ..Default::default()
        }
    }

    /// (status code, message, error attribute) and the tags expected:
    /// (error, otel.status_code, otel.status_description).
    type StatusCase = (
        StatusCode,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );

    /// Resource attributes, the service name and `otlp.service.name.source`.
    type ServiceCase = (
        Vec<(&'static str, &'static str)>,
        &'static str,
        Option<&'static str>,
    );

    fn one(rs: ResourceSpans) -> Span {
        let t = from_otlp(&[rs], "<missing service name>");
        assert_eq!(t.invalid, 0);
        assert_eq!(t.spans.len(), 1);
        t.spans.into_iter().next().unwrap()
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_field_of_a_server_span() {
        let mut span = base_span();
        span.trace_state = "rojo=00f067aa0ba902b7".into();
        span.attributes = vec![
            kv("http.method", s("GET")),
            kv("http.status_code", Value::IntValue(200)),
            kv("net.host.ip", s("10.1.2.3")),
            kv("net.host.port", Value::IntValue(8080)),
            kv("net.peer.ip", s("2001:db8::7")),
            kv("net.peer.port", s("52100")),
            kv("peer.service", s("frontend")),
            kv("retry", Value::BoolValue(false)),
            kv("ratio", Value::DoubleValue(0.25)),
        ];
        span.status = Some(Status {
            code: StatusCode::Ok as i32,
            message: "fine".into(),
        });
        span.events = vec![
            Event {
                time_unix_nano: 1_544_712_660_500_000_000,
                name: "started".into(),
                ..Default::default()
            },
            Event {
                time_unix_nano: 1_544_712_660_600_000_400,
                name: "cache".into(),
                attributes: vec![kv("hit", Value::BoolValue(true)), kv("key", s("u:1"))],
                dropped_attributes_count: 2,
            },
        ];
        span.links = vec![Link {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            trace_state: "k=v".into(),
            attributes: vec![kv("link.kind", s("follows"))],
            dropped_attributes_count: 1,
            ..Default::default()
        }];
        let z = one(resource(
            vec![
                kv("service.name", s("api")),
                kv("host.name", s("node-1")),
                kv("telemetry.sdk.language", s("rust")),
            ],
            vec![span],
        ));
        assert_eq!(
            z.trace_id,
            TraceId {
                high: 0x5b8e_fff7_9803_8103,
                low: 0xd269_b633_813f_c60c
            }
        );
        assert_eq!(z.id, 0xeee1_9b7e_c3c1_b174);
        assert_eq!(z.parent_id, Some(0xeee1_9b7e_c3c1_b173));
        assert_eq!(z.name, "Get /Users");
        assert_eq!(z.kind, Some(Kind::Server));
        // 1544712660000000499 ns rounds down, the 1000000001 ns duration to 1000000 µs.
        assert_eq!(z.timestamp, Some(1_544_712_660_000_000));
        assert_eq!(z.duration, Some(1_000_000));
        assert_eq!(
            z.local_endpoint,
            Some(Endpoint {
                service_name: "api".into(),
                ipv4: Some(Ipv4Addr::new(10, 1, 2, 3)),
                ipv6: None,
                port: 8080,
            })
        );
        assert_eq!(
            z.remote_endpoint,
            Some(Endpoint {
                service_name: "frontend".into(),
                ipv4: None,
                ipv6: Some("2001:db8::7".parse::<Ipv6Addr>().unwrap()),
                port: 52100,
            })
        );
        assert_eq!(
            z.annotations,
            vec![
                Annotation {
                    timestamp: 1_544_712_660_500_000,
                    value: "started".into()
                },
                Annotation {
                    timestamp: 1_544_712_660_600_000,
                    value: r#"cache|{"hit":true,"key":"u:1"}|2"#.into()
                },
            ]
        );
        assert_eq!(
            z.tags,
            tags(&[
                ("host.name", "node-1"),
                ("http.method", "GET"),
                ("http.status_code", "200"),
                ("otel.library.name", "io.weft.test"),
                ("otel.library.version", "1.2.3"),
                ("otel.scope.name", "io.weft.test"),
                ("otel.scope.version", "1.2.3"),
                ("otel.status_code", "STATUS_CODE_OK"),
                ("otel.status_description", "fine"),
                (
                    "otlp.link.0",
                    r#"01010101010101010101010101010101|0202020202020202|k=v|{"link.kind":"follows"}|1"#
                ),
                ("ratio", "0.25"),
                ("retry", "false"),
                ("scope.attr", "sv"),
                ("telemetry.sdk.language", "rust"),
                ("w3c.tracestate", "rojo=00f067aa0ba902b7"),
            ])
        );
        assert!(!z.debug && !z.shared);
    }

    #[test]
    fn kinds_table() {
        let cases = [
            (SpanKind::Client, Some(Kind::Client), None),
            (SpanKind::Server, Some(Kind::Server), None),
            (SpanKind::Producer, Some(Kind::Producer), None),
            (SpanKind::Consumer, Some(Kind::Consumer), None),
            (SpanKind::Internal, None, Some("internal")),
            (SpanKind::Unspecified, None, None),
        ];
        for (otlp, want, tag) in cases {
            let mut span = base_span();
            span.kind = otlp as i32;
            let z = one(resource(vec![kv("service.name", s("a"))], vec![span]));
            assert_eq!(z.kind, want, "{otlp:?}");
            assert_eq!(z.tags.get("span.kind").map(String::as_str), tag, "{otlp:?}");
        }
    }

    #[test]
    fn status_table() {
        // (code, message, existing error attribute) -> (error, otel.status_code, description)
        let cases: [StatusCase; 5] = [
            (StatusCode::Unset, "", None, None, None, None),
            (StatusCode::Unset, "", Some("false"), None, None, None),
            (
                StatusCode::Ok,
                "",
                Some("x"),
                None,
                Some("STATUS_CODE_OK"),
                None,
            ),
            (
                StatusCode::Error,
                "",
                None,
                Some("true"),
                Some("STATUS_CODE_ERROR"),
                None,
            ),
            (
                StatusCode::Error,
                "timeout",
                Some("x"),
                Some("true"),
                Some("STATUS_CODE_ERROR"),
                Some("timeout"),
            ),
        ];
        for (code, message, error_attr, want_error, want_code, want_desc) in cases {
            let mut span = base_span();
            span.status = Some(Status {
                code: code as i32,
                message: message.into(),
            });
            if let Some(e) = error_attr {
                span.attributes.push(kv("error", s(e)));
            }
            let z = one(resource(vec![kv("service.name", s("a"))], vec![span]));
            let get = |k: &str| z.tags.get(k).map(String::as_str);
            assert_eq!(get("error"), want_error, "{code:?}");
            assert_eq!(get("otel.status_code"), want_code, "{code:?}");
            assert_eq!(get("otel.status_description"), want_desc, "{code:?}");
        }
    }

    #[test]
    fn service_name_fallbacks_and_default() {
        let cases: Vec<ServiceCase> = vec![
            (
                vec![("service.name", "svc"), ("faas.name", "f")],
                "svc",
                None,
            ),
            (
                vec![("faas.name", "f"), ("k8s.deployment.name", "d")],
                "f",
                Some("faas.name"),
            ),
            (
                vec![("k8s.deployment.name", "d")],
                "d",
                Some("k8s.deployment.name"),
            ),
            (
                vec![("process.executable.name", "p")],
                "p",
                Some("process.executable.name"),
            ),
            (vec![("host.name", "h")], "<missing service name>", None),
            (vec![("service.name", "")], "<missing service name>", None),
            (vec![], "<missing service name>", None),
        ];
        for (attrs, want, source) in cases {
            let attrs = attrs.iter().map(|(k, v)| kv(k, s(v))).collect();
            let z = one(resource(attrs, vec![base_span()]));
            assert_eq!(z.local_endpoint.as_ref().unwrap().service_name, want);
            assert_eq!(
                z.tags.get("otlp.service.name.source").map(String::as_str),
                source
            );
            assert!(!z.tags.contains_key("service.name"));
        }
        // A resource with neither attributes nor scopes is skipped, as in the collector.
        let empty = ResourceSpans::default();
        assert!(from_otlp(&[empty], "x").spans.is_empty());
    }

    #[test]
    fn endpoints_keep_tags_they_cannot_use() {
        let mut span = base_span();
        span.attributes = vec![
            kv("net.peer.port", Value::IntValue(99)),
            kv("net.host.ip", s("not-an-ip")),
            kv("net.host.port", s("99999")),
        ];
        let z = one(resource(vec![kv("service.name", s("a"))], vec![span]));
        // No peer.service or peer address: no remote endpoint, the port stays a tag.
        assert_eq!(z.remote_endpoint, None);
        assert_eq!(z.local_endpoint.as_ref().unwrap().ipv4, None);
        assert_eq!(z.local_endpoint.as_ref().unwrap().port, 0);
        assert_eq!(z.tags.get("net.peer.port").map(String::as_str), Some("99"));
        assert_eq!(
            z.tags.get("net.host.ip").map(String::as_str),
            Some("not-an-ip")
        );
        assert_eq!(
            z.tags.get("net.host.port").map(String::as_str),
            Some("99999")
        );
    }

    #[test]
    fn times() {
        assert_eq!(nanos_to_micros(1499), 1);
        assert_eq!(nanos_to_micros(1500), 2);
        assert_eq!(start_micros(0), None);
        assert_eq!(start_micros(999_999_999), None);
        assert_eq!(start_micros(1_000_000_000), Some(1_000_000));
        assert_eq!(duration_micros(10, 0), None);
        assert_eq!(duration_micros(10, 10), None);
        assert_eq!(duration_micros(10, 5), None);
        assert_eq!(duration_micros(10, 11), Some(1));
        assert_eq!(duration_micros(0, 2_499), Some(2));
    }

    #[test]
    fn invalid_ids_are_counted_not_sent() {
        let mut no_trace = base_span();
        no_trace.trace_id = vec![0; 16];
        let mut short_span = base_span();
        short_span.span_id = vec![1; 4];
        let mut no_span = base_span();
        no_span.span_id = vec![];
        let mut short_trace = base_span();
        short_trace.trace_id = vec![1; 8];
        let t = from_otlp(
            &[resource(
                vec![kv("service.name", s("a"))],
                vec![no_trace, short_span, base_span(), no_span, short_trace],
            )],
            "x",
        );
        assert_eq!(t.invalid, 4);
        assert_eq!(t.spans.len(), 1);
    }

    #[test]
    fn scope_tags_do_not_leak_between_scopes() {
        let mut rs = resource(vec![kv("service.name", s("a"))], vec![base_span()]);
        rs.scope_spans.push(ScopeSpans {
            scope: None,
            spans: vec![base_span()],
            ..Default::default()
        });
        let t = from_otlp(&[rs], "x");
        assert_eq!(t.spans.len(), 2);
        assert!(t.spans[0].tags.contains_key("otel.library.name"));
        assert!(!t.spans[1].tags.contains_key("otel.library.name"));
        assert!(!t.spans[1].tags.contains_key("scope.attr"));
    }
}
