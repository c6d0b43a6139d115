//! Zipkin spans — v2 JSON and proto3, v1 JSON — and their translation to and
//! from OTLP, as the OpenTelemetry Collector's Zipkin translator maps them.
//! The `zipkin` receiver and exporter share it.
//!
//! The flow is wire bytes ⇄ [`model::Span`] ⇄ OTLP: [`json`] and [`proto`]
//! read and write the wire formats, [`from_otlp`] and [`to_otlp`] translate.
//! Zipkin v1 JSON has no v2 shape, so [`v1`] translates it to OTLP directly.

pub mod from_otlp;
pub mod json;
pub mod model;
pub mod proto;
pub mod tags;
pub mod to_otlp;
pub mod v1;

pub use from_otlp::{from_otlp, Translated};
pub use model::{Annotation, Endpoint, Kind, Span, TraceId};
pub use to_otlp::to_otlp;

/// Why a Zipkin request body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The body is not JSON of the expected shape.
    #[error("cannot decode the Zipkin JSON body: {0}")]
    Json(String),
    /// The body is not a `ListOfSpans` protobuf message.
    #[error("cannot decode the Zipkin protobuf body: {0}")]
    Protobuf(String),
    /// A span parsed but carries a value Zipkin forbids (bad id, address...).
    #[error("invalid Zipkin span: {0}")]
    InvalidSpan(String),
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    use crate::tags::kv;

    fn otlp() -> Vec<ResourceSpans> {
        let span = |id: u8, kind: SpanKind, status: Option<Status>| Span {
            trace_id: vec![
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, id,
            ],
            span_id: vec![0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, id],
            parent_span_id: if id == 1 {
                vec![]
            } else {
                vec![0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 1]
            },
            trace_state: "vendor=x".into(),
            name: format!("op {id}"),
            kind: kind as i32,
            start_time_unix_nano: 1_700_000_000_000_001_000,
            end_time_unix_nano: 1_700_000_000_250_001_000,
            attributes: vec![
                kv("a.bool", Value::BoolValue(true)),
                kv("a.double", Value::DoubleValue(2.5)),
                kv("a.int", Value::IntValue(-3)),
                kv("a.string", Value::StringValue("GET".into())),
            ],
            events: vec![
                Event {
                    time_unix_nano: 1_700_000_000_100_000_000,
                    name: "plain".into(),
                    ..Default::default()
                },
                Event {
                    time_unix_nano: 1_700_000_000_200_000_000,
                    name: "exception".into(),
                    attributes: vec![
                        kv("exception.message", Value::StringValue("a|b".into())),
                        kv("n", Value::IntValue(1)),
                    ],
                    dropped_attributes_count: 2,
                },
            ],
            links: vec![Link {
                trace_id: vec![7; 16],
                span_id: vec![8; 8],
                trace_state: "l=1".into(),
                attributes: vec![kv("why", Value::StringValue("batch".into()))],
                dropped_attributes_count: 1,
                ..Default::default()
            }],
            status,
            ..Default::default()
        };
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", Value::StringValue("Checkout".into())),
                    kv("host.name", Value::StringValue("node-1".into())),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.weft".into(),
                    version: "0.1".into(),
                    ..Default::default()
                }),
                spans: vec![
                    span(
                        1,
                        SpanKind::Server,
                        Some(Status {
                            code: 1,
                            message: String::new(),
                        }),
                    ),
                    span(
                        2,
                        SpanKind::Client,
                        Some(Status {
                            code: 2,
                            message: "boom".into(),
                        }),
                    ),
                    span(3, SpanKind::Internal, None),
                    span(4, SpanKind::Producer, None),
                    span(5, SpanKind::Consumer, None),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }]
    }

    #[test]
    fn otlp_round_trips_through_proto_and_json() {
        let original = otlp();
        let translated = crate::from_otlp(&original, "unused");
        assert_eq!(translated.invalid, 0);
        let via_proto = crate::to_otlp(
            crate::proto::decode(&crate::proto::encode(&translated.spans)).unwrap(),
            true,
        );
        assert_eq!(via_proto, original);
        // JSON lower-cases names, as the collector's encoder does; nothing else changes.
        let via_json = crate::to_otlp(
            crate::json::decode(&crate::json::encode(&translated.spans)).unwrap(),
            true,
        );
        let mut lowered = original;
        for r in &mut lowered {
            r.resource.as_mut().unwrap().attributes[0] =
                kv("service.name", Value::StringValue("checkout".into()));
            for s in r.scope_spans.iter_mut().flat_map(|s| s.spans.iter_mut()) {
                s.name = s.name.to_lowercase();
            }
        }
        assert_eq!(via_json, lowered);
    }
}
