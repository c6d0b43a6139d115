//! Exact translations both ways, case by case against the collector's rules.

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::*;
use crate::model::{Log, SpanRef};

const HIGH: u64 = 0x0af7_6519_16cd_43dd;
const LOW: u64 = 0x8448_eb21_1c80_319c;
const TRACE: [u8; 16] = [
    0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c,
];

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}
fn s(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}
fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}
fn b(key: &str, v: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(v))
}
fn d(key: &str, v: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(v))
}
fn tag(key: &str, value: TagValue) -> Tag {
    Tag {
        key: key.into(),
        value,
    }
}
fn st(key: &str, v: &str) -> Tag {
    Tag::string(key, v)
}

fn thrift_like_span() -> model::Span {
    model::Span {
        trace_id_high: HIGH,
        trace_id_low: LOW,
        span_id: 0x1111,
        parent_span_id: 0x2222,
        operation_name: "SELECT orders".into(),
        references: vec![SpanRef {
            ref_type: RefType::FollowsFrom,
            trace_id_high: 0,
            trace_id_low: 0x77,
            span_id: 0x88,
        }],
        flags: 1,
        start_ns: 1_700_000_000_000_001_000,
        end_ns: 1_700_000_000_250_001_000,
        tags: vec![
            st("db.system", "postgresql"),
            tag("server.port", TagValue::Long(5432)),
            tag("ratio", TagValue::Double(0.25)),
            tag("cached", TagValue::Bool(false)),
            tag("blob", TagValue::Binary(vec![1, 2, 3])),
            tag("odd", TagValue::Unknown("<UNSET>".into())),
            st("span.kind", "client"),
            st("otel.status_code", "ERROR"),
            st("otel.status_description", "deadline exceeded"),
            tag("error", TagValue::Bool(true)),
            st("otel.library.name", "weft.app"),
            st("otel.scope.name", "weft.app"),
            st("otel.scope.version", "0.4.2"),
            st("w3c.tracestate", "vendor=1"),
            st("db.system", "postgres"),
        ],
        logs: vec![
            Log {
                timestamp_ns: 1_700_000_000_100_000_000,
                fields: vec![tag("attempt", TagValue::Long(2)), st("event", "retry")],
            },
            Log {
                timestamp_ns: 1_700_000_000_200_000_000,
                fields: vec![st("message", "no name here")],
            },
            Log {
                timestamp_ns: 7,
                fields: vec![],
            },
        ],
        process: None,
    }
}

#[test]
fn jaeger_span_to_otlp_exactly() {
    let batch = Batch {
        process: Some(Process {
            service_name: "checkout".into(),
            tags: vec![
                st("hostname", "box-1"),
                st("jaeger.version", "Python-4.8"),
                tag("cpus", TagValue::Long(2)),
            ],
        }),
        spans: vec![thrift_like_span()],
    };
    let got = to_otlp(vec![batch]);
    let want = vec![ResourceSpans {
        resource: Some(Resource {
            // host.name is appended, then removing hostname moves the last
            // entry into its slot; likewise for jaeger.version.
            attributes: vec![
                s("service.name", "checkout"),
                s("host.name", "box-1"),
                s("opencensus.exporterversion", "Jaeger-Python-4.8"),
                i("cpus", 2),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "weft.app".into(),
                version: "0.4.2".into(),
                ..Default::default()
            }),
            spans: vec![Span {
                trace_id: TRACE.to_vec(),
                span_id: vec![0, 0, 0, 0, 0, 0, 0x11, 0x11],
                trace_state: "vendor=1".into(),
                parent_span_id: vec![0, 0, 0, 0, 0, 0, 0x22, 0x22],
                flags: 1,
                name: "SELECT orders".into(),
                kind: SpanKind::Client as i32,
                start_time_unix_nano: 1_700_000_000_000_001_000,
                end_time_unix_nano: 1_700_000_000_250_001_000,
                attributes: vec![
                    // The second db.system replaced the first in place;
                    // each removal moved the then-last attribute forward.
                    s("db.system", "postgres"),
                    i("server.port", 5432),
                    d("ratio", 0.25),
                    b("cached", false),
                    kv("blob", any_value::Value::BytesValue(vec![1, 2, 3])),
                    s("odd", "<Unknown Jaeger TagType \"<UNSET>\">"),
                    s("otel.library.name", "weft.app"),
                ],
                events: vec![
                    Event {
                        time_unix_nano: 1_700_000_000_100_000_000,
                        name: "retry".into(),
                        attributes: vec![i("attempt", 2)],
                        ..Default::default()
                    },
                    Event {
                        time_unix_nano: 1_700_000_000_200_000_000,
                        name: String::new(),
                        attributes: vec![s("message", "no name here")],
                        ..Default::default()
                    },
                    Event {
                        time_unix_nano: 7,
                        ..Default::default()
                    },
                ],
                links: vec![Link {
                    trace_id: vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x77],
                    span_id: vec![0, 0, 0, 0, 0, 0, 0, 0x88],
                    attributes: vec![s("opentracing.ref_type", "follows_from")],
                    ..Default::default()
                }],
                status: Some(Status {
                    code: StatusCode::Error as i32,
                    message: "deadline exceeded".into(),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }];
    assert_eq!(got, want);
}

#[test]
fn spans_with_their_own_process_are_regrouped() {
    let p1 = Process {
        service_name: "a".into(),
        tags: vec![tag("x", TagValue::Double(1.0))],
    };
    let p2 = Process {
        service_name: "b".into(),
        tags: vec![],
    };
    let span = |id: u64, process: Option<Process>| model::Span {
        trace_id_low: 1,
        span_id: id,
        operation_name: format!("s{id}"),
        process,
        ..Default::default()
    };
    let got = to_otlp(vec![
        Batch {
            process: Some(p1.clone()),
            spans: vec![span(1, None), span(2, Some(p2.clone()))],
        },
        Batch {
            process: None,
            spans: vec![span(3, Some(p1.clone())), span(4, Some(p2))],
        },
        // Nothing at all: dropped.
        Batch {
            process: None,
            spans: vec![],
        },
    ]);
    let names: Vec<(String, Vec<String>)> = got
        .iter()
        .map(|rs| {
            (
                str_of(get(
                    &rs.resource.as_ref().unwrap().attributes,
                    "service.name",
                ))
                .to_string(),
                rs.scope_spans
                    .iter()
                    .flat_map(|ss| ss.spans.iter().map(|s| s.name.clone()))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("a".to_string(), vec!["s1".to_string(), "s3".to_string()]),
            ("b".to_string(), vec!["s2".to_string(), "s4".to_string()]),
        ]
    );
    // A batch whose spans all moved elsewhere still yields its resource.
    let got = to_otlp(vec![Batch {
        process: Some(p1),
        spans: vec![span(5, Some(Process::default()))],
    }]);
    assert_eq!(got.len(), 2);
    assert!(got[0].scope_spans.is_empty());
    // The empty process has no attributes.
    assert!(got[1].resource.as_ref().unwrap().attributes.is_empty());
}

#[test]
fn status_rules() {
    let status_of = |tags: Vec<Tag>| -> (Option<Status>, Vec<KeyValue>, i32) {
        let batch = Batch {
            process: None,
            spans: vec![model::Span {
                trace_id_low: 1,
                span_id: 1,
                tags,
                ..Default::default()
            }],
        };
        let span = to_otlp(vec![batch])[0].scope_spans[0].spans[0].clone();
        (span.status, span.attributes, span.kind)
    };
    let status = |code: StatusCode, msg: &str| {
        Some(Status {
            code: code as i32,
            message: msg.into(),
        })
    };
    // error=true wins over otel.status_code, which is still removed.
    let (got, attrs, _) = status_of(vec![
        tag("error", TagValue::Bool(true)),
        st("otel.status_code", "OK"),
        st("http.status_message", "Bad Gateway"),
    ]);
    assert_eq!(got, status(StatusCode::Error, "Bad Gateway"));
    assert_eq!(attrs, vec![s("http.status_message", "Bad Gateway")]);
    // error=false stays an attribute; the code is read case-insensitively.
    let (got, attrs, _) = status_of(vec![
        tag("error", TagValue::Bool(false)),
        st("otel.status_code", "ok"),
        st("otel.status_description", "fine"),
    ]);
    assert_eq!(got, status(StatusCode::Ok, "fine"));
    assert_eq!(attrs, vec![b("error", false)]);
    // An unknown code still sets an (unset) status.
    let (got, _, _) = status_of(vec![st("otel.status_code", "MAYBE")]);
    assert_eq!(got, status(StatusCode::Unset, ""));
    // A string "error" tag is just an attribute.
    let (got, attrs, _) = status_of(vec![st("error", "true")]);
    assert_eq!(got, None);
    assert_eq!(attrs, vec![s("error", "true")]);
    // HTTP fallback: 4xx is an error for clients only; 399 is already one.
    let http = |code: TagValue, kind: &str| {
        status_of(vec![
            st("span.kind", kind),
            tag("http.status_code", code),
            st("http.status_message", "m"),
        ])
    };
    assert_eq!(
        http(TagValue::Long(404), "client").0,
        status(StatusCode::Error, "m")
    );
    assert_eq!(http(TagValue::Long(404), "server").0, None);
    assert_eq!(
        http(TagValue::String("503".into()), "server").0,
        status(StatusCode::Error, "m")
    );
    assert_eq!(
        http(TagValue::Long(399), "server").0,
        status(StatusCode::Error, "m")
    );
    assert_eq!(http(TagValue::Long(200), "client").0, None);
    assert_eq!(http(TagValue::Double(500.0), "client").0, None);
    let (_, attrs, kind) = http(TagValue::Long(200), "server");
    assert_eq!(kind, SpanKind::Server as i32);
    assert_eq!(
        attrs,
        vec![s("http.status_message", "m"), i("http.status_code", 200)]
    );
    // Unknown kinds are unspecified, and the tag is gone either way.
    let (_, attrs, kind) = status_of(vec![st("span.kind", "SERVER")]);
    assert_eq!((kind, attrs.len()), (SpanKind::Unspecified as i32, 0));
}

#[test]
fn parents_and_links() {
    let r = |ref_type: RefType, low: u64, span_id: u64| SpanRef {
        ref_type,
        trace_id_high: 0,
        trace_id_low: low,
        span_id,
    };
    let span = |references: Vec<SpanRef>| model::Span {
        trace_id_low: 5,
        span_id: 1,
        references,
        ..Default::default()
    };
    let convert = |s: model::Span| {
        to_otlp(vec![Batch {
            process: None,
            spans: vec![s],
        }])[0]
            .scope_spans[0]
            .spans[0]
            .clone()
    };
    let ids = |sp: &Span| -> (Vec<u8>, Vec<(u8, String)>) {
        (
            sp.parent_span_id.clone(),
            sp.links
                .iter()
                .map(|l| {
                    (
                        l.span_id[7],
                        str_of(get(&l.attributes, ATTR_REF_TYPE)).to_string(),
                    )
                })
                .collect(),
        )
    };
    // The same-trace CHILD_OF is the parent even after a FOLLOWS_FROM; a
    // CHILD_OF into another trace is only a link.
    let got = convert(span(vec![
        r(RefType::ChildOf, 9, 3),
        r(RefType::FollowsFrom, 5, 4),
        r(RefType::ChildOf, 5, 2),
    ]));
    assert_eq!(
        ids(&got),
        (
            vec![0, 0, 0, 0, 0, 0, 0, 2],
            vec![(3, "child_of".into()), (4, "follows_from".into())]
        )
    );
    // Only a FOLLOWS_FROM: it is the parent and stays a link.
    let got = convert(span(vec![r(RefType::FollowsFrom, 5, 4)]));
    assert_eq!(
        ids(&got),
        (
            vec![0, 0, 0, 0, 0, 0, 0, 4],
            vec![(4, "follows_from".into())]
        )
    );
    // No references: no parent. Unknown types count as follows_from links.
    let got = convert(span(vec![r(RefType::Other(7), 5, 6)]));
    assert_eq!(ids(&got), (vec![], vec![(6, "follows_from".into())]));
    // A zero trace id stays empty, as the collector leaves it.
    let got = convert(model::Span {
        span_id: 3,
        ..Default::default()
    });
    assert!(got.trace_id.is_empty());
}

#[test]
fn no_service_name_process_is_an_empty_resource() {
    let got = to_otlp(vec![Batch {
        process: Some(Process {
            service_name: NO_SERVICE_NAME.into(),
            tags: vec![st("ignored", "x")],
        }),
        spans: vec![model::Span {
            trace_id_low: 1,
            span_id: 1,
            ..Default::default()
        }],
    }]);
    assert!(got[0].resource.as_ref().unwrap().attributes.is_empty());
    let back = from_otlp(&got);
    assert_eq!(
        back[0].process.as_ref().unwrap().service_name,
        NO_SERVICE_NAME
    );
}

fn otlp_span() -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
        trace_state: "congo=t61rcWkgMzE".into(),
        parent_span_id: vec![0, 0, 0, 0, 0, 0, 0, 9],
        flags: 0x101,
        name: "GET /checkout".into(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: 1_700_000_000_123_456_789,
        end_time_unix_nano: 1_700_000_000_223_456_788,
        attributes: vec![
            s("http.request.method", "GET"),
            i("http.response.status_code", 504),
            kv(
                "tags",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(any_value::Value::StringValue("a".into())),
                        },
                        AnyValue {
                            value: Some(any_value::Value::IntValue(2)),
                        },
                    ],
                }),
            ),
            KeyValue {
                key: "empty".into(),
                value: None,
                ..Default::default()
            },
        ],
        events: vec![
            Event {
                time_unix_nano: 1_700_000_000_200_000_000,
                name: "retry".into(),
                attributes: vec![i("attempt", 2)],
                ..Default::default()
            },
            Event {
                time_unix_nano: 1_700_000_000_210_000_000,
                name: "shadowed".into(),
                attributes: vec![s("event", "explicit")],
                ..Default::default()
            },
        ],
        links: vec![
            Link {
                trace_id: TRACE.to_vec(),
                span_id: vec![0, 0, 0, 0, 0, 0, 0, 9],
                attributes: vec![s("opentracing.ref_type", "follows_from")],
                ..Default::default()
            },
            Link {
                trace_id: vec![0xaa; 16],
                span_id: vec![0xbb; 8],
                attributes: vec![s("link.reason", "batch")],
                ..Default::default()
            },
            Link {
                trace_id: vec![0xaa; 16],
                span_id: vec![0xcc; 8],
                attributes: vec![s("opentracing.ref_type", "child_of")],
                ..Default::default()
            },
        ],
        status: Some(Status {
            code: StatusCode::Error as i32,
            message: "upstream timed out".into(),
        }),
        ..Default::default()
    }
}

#[test]
fn otlp_to_jaeger_exactly() {
    let rs = vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                s("service.name", "checkout"),
                i("host.cpu_count", 2),
                kv("id", any_value::Value::BytesValue(vec![0xff])),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "weft.app".into(),
                version: "0.4.2".into(),
                ..Default::default()
            }),
            spans: vec![otlp_span()],
            ..Default::default()
        }],
        ..Default::default()
    }];
    let got = from_otlp(&rs);
    let want = vec![Batch {
        process: Some(Process {
            service_name: "checkout".into(),
            tags: vec![
                tag("host.cpu_count", TagValue::Long(2)),
                tag("id", TagValue::Binary(vec![0xff])),
            ],
        }),
        spans: vec![model::Span {
            trace_id_high: HIGH,
            trace_id_low: LOW,
            span_id: 0x0102_0304_0506_0708,
            parent_span_id: 0,
            operation_name: "GET /checkout".into(),
            references: vec![
                // The link to the parent only changed the parent's type.
                SpanRef {
                    ref_type: RefType::FollowsFrom,
                    trace_id_high: HIGH,
                    trace_id_low: LOW,
                    span_id: 9,
                },
                SpanRef {
                    ref_type: RefType::FollowsFrom,
                    trace_id_high: 0xaaaa_aaaa_aaaa_aaaa,
                    trace_id_low: 0xaaaa_aaaa_aaaa_aaaa,
                    span_id: 0xbbbb_bbbb_bbbb_bbbb,
                },
                SpanRef {
                    ref_type: RefType::ChildOf,
                    trace_id_high: 0xaaaa_aaaa_aaaa_aaaa,
                    trace_id_low: 0xaaaa_aaaa_aaaa_aaaa,
                    span_id: 0xcccc_cccc_cccc_cccc,
                },
            ],
            flags: 1,
            start_ns: 1_700_000_000_123_456_789,
            end_ns: 1_700_000_000_223_456_788,
            tags: vec![
                st("otel.scope.name", "weft.app"),
                st("otel.scope.version", "0.4.2"),
                st("http.request.method", "GET"),
                tag("http.response.status_code", TagValue::Long(504)),
                st("tags", r#"["a",2]"#),
                st("empty", ""),
                st("span.kind", "client"),
                st("otel.status_code", "ERROR"),
                tag("error", TagValue::Bool(true)),
                st("otel.status_description", "upstream timed out"),
                st("w3c.tracestate", "congo=t61rcWkgMzE"),
            ],
            logs: vec![
                Log {
                    timestamp_ns: 1_700_000_000_200_000_000,
                    fields: vec![st("event", "retry"), tag("attempt", TagValue::Long(2))],
                },
                Log {
                    timestamp_ns: 1_700_000_000_210_000_000,
                    fields: vec![st("event", "explicit")],
                },
            ],
            process: None,
        }],
    }];
    assert_eq!(got, want);
    // The parent comes back from the references alone.
    assert_eq!(got[0].spans[0].parent_id(), 9);
}

#[test]
fn otlp_status_and_kind_variants() {
    let tags_for = |kind: SpanKind, status: Option<Status>| {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            kind: kind as i32,
            status,
            ..Default::default()
        };
        let rs = [ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let b = from_otlp(&rs);
        assert_eq!(b[0].process.as_ref().unwrap().service_name, NO_SERVICE_NAME);
        b[0].spans[0].tags.clone()
    };
    assert_eq!(
        tags_for(
            SpanKind::Server,
            Some(Status {
                code: StatusCode::Ok as i32,
                message: String::new()
            })
        ),
        vec![st("span.kind", "server"), st("otel.status_code", "OK")]
    );
    // An unset status with a message still carries the description.
    assert_eq!(
        tags_for(
            SpanKind::Unspecified,
            Some(Status {
                code: 0,
                message: "why".into()
            })
        ),
        vec![st("otel.status_description", "why")]
    );
    assert_eq!(
        tags_for(SpanKind::Producer, None),
        vec![st("span.kind", "producer")]
    );
    assert_eq!(
        tags_for(SpanKind::Consumer, None),
        vec![st("span.kind", "consumer")]
    );
    assert_eq!(
        tags_for(SpanKind::Internal, None),
        vec![st("span.kind", "internal")]
    );
    // An empty resource without scopes sends nothing.
    assert!(from_otlp(&[ResourceSpans::default()]).is_empty());
}

#[test]
fn otlp_round_trip_keeps_what_jaeger_can_carry() {
    let rs = vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![s("service.name", "checkout"), i("host.cpu_count", 2)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "weft.app".into(),
                version: "0.4.2".into(),
                ..Default::default()
            }),
            spans: vec![otlp_span()],
            ..Default::default()
        }],
        ..Default::default()
    }];
    let back = to_otlp(from_otlp(&rs));
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].resource, rs[0].resource);
    assert_eq!(back[0].scope_spans[0].scope, rs[0].scope_spans[0].scope);
    let got = &back[0].scope_spans[0].spans[0];
    let sent = otlp_span();
    assert_eq!(got.trace_id, sent.trace_id);
    assert_eq!(got.span_id, sent.span_id);
    assert_eq!(got.parent_span_id, sent.parent_span_id);
    assert_eq!(got.name, sent.name);
    assert_eq!(got.kind, sent.kind);
    assert_eq!(got.status, sent.status);
    assert_eq!(got.trace_state, sent.trace_state);
    assert_eq!(got.flags, 1, "only the sampled bit crosses");
    assert_eq!(
        (got.start_time_unix_nano, got.end_time_unix_nano),
        (sent.start_time_unix_nano, sent.end_time_unix_nano)
    );
    // An `event` attribute names the event on the way back.
    assert_eq!(
        got.events,
        vec![
            sent.events[0].clone(),
            Event {
                time_unix_nano: 1_700_000_000_210_000_000,
                name: "explicit".into(),
                ..Default::default()
            }
        ]
    );
    // Arrays arrive as their JSON text, an empty value as "".
    assert_eq!(
        got.attributes,
        vec![
            s("http.request.method", "GET"),
            i("http.response.status_code", 504),
            s("tags", r#"["a",2]"#),
            s("empty", ""),
        ]
    );
    // Links keep their ids and only the reference type as an attribute; the
    // link to the parent became the parent reference, and being FOLLOWS_FROM
    // it is also a link again.
    assert_eq!(
        got.links
            .iter()
            .map(|l| (l.span_id.clone(), l.attributes.clone()))
            .collect::<Vec<_>>(),
        vec![
            (
                vec![0, 0, 0, 0, 0, 0, 0, 9],
                vec![s("opentracing.ref_type", "follows_from")]
            ),
            (
                vec![0xbb; 8],
                vec![s("opentracing.ref_type", "follows_from")]
            ),
            (vec![0xcc; 8], vec![s("opentracing.ref_type", "child_of")]),
        ]
    );
}
