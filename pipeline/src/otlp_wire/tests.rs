use super::*;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ScopeSpans, Span, Status};

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// A request using every field of the schema.
fn rich(spans: usize) -> ExportTraceServiceRequest {
    let nested = any_value::Value::ArrayValue(ArrayValue {
        values: vec![
            AnyValue {
                value: Some(any_value::Value::IntValue(-7)),
            },
            AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("inner", any_value::Value::DoubleValue(1.5))],
                })),
            },
            AnyValue {
                value: Some(any_value::Value::BytesValue(vec![0, 255])),
            },
            AnyValue {
                value: Some(any_value::Value::BoolValue(true)),
            },
        ],
    });
    let span = |i: usize| Span {
        trace_id: vec![i as u8 + 1; 16],
        span_id: vec![2; 8],
        parent_span_id: if i.is_multiple_of(2) {
            vec![]
        } else {
            vec![3; 8]
        },
        trace_state: "k=v".into(),
        flags: 0x301,
        name: format!("span {i} ü"),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: vec![kv("a", s("b")), kv("deep", nested.clone())],
        dropped_attributes_count: 3,
        events: vec![span::Event {
            time_unix_nano: 5,
            name: "ev".into(),
            attributes: vec![kv("e", s("f"))],
            dropped_attributes_count: 1,
        }],
        dropped_events_count: 4,
        links: vec![span::Link {
            trace_id: vec![9; 16],
            span_id: vec![8; 8],
            trace_state: "x=y".into(),
            attributes: vec![kv("l", s("m"))],
            dropped_attributes_count: 2,
            flags: 1,
        }],
        dropped_links_count: 5,
        status: Some(Status {
            message: "boom".into(),
            code: 2,
        }),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("svc"))],
                    dropped_attributes_count: 1,
                    entity_refs: vec![EntityRef {
                        schema_url: "u".into(),
                        r#type: "service".into(),
                        id_keys: vec!["service.name".into()],
                        description_keys: vec!["d".into()],
                    }],
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        version: "1".into(),
                        attributes: vec![kv("sa", s("sb"))],
                        dropped_attributes_count: 0,
                    }),
                    spans: (0..spans).map(span).collect(),
                    schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                }],
                schema_url: "r".into(),
            },
            ResourceSpans::default(),
        ],
    }
}

/// What the OTLP receivers accept: prost decodes it and the ids have their
/// lengths.
fn accepted_by_prost(bytes: &[u8]) -> bool {
    let Ok(req) = ExportTraceServiceRequest::decode(bytes) else {
        return false;
    };
    let ok = |id: &[u8], n: usize| id.is_empty() || id.len() == n;
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .all(|sp| {
            ok(&sp.trace_id, 16)
                && ok(&sp.span_id, 8)
                && ok(&sp.parent_span_id, 8)
                && sp
                    .links
                    .iter()
                    .all(|l| ok(&l.trace_id, 16) && ok(&l.span_id, 8))
        })
}

#[test]
fn a_valid_request_is_kept_counted_and_decodes_to_itself() {
    let req = rich(5);
    let bytes = Bytes::from(req.encode_to_vec());
    let enc = EncodedTraces::new(bytes.clone()).unwrap();
    assert_eq!(enc.span_count(), 5);
    assert_eq!(enc.resource_count(), 2);
    assert_eq!(enc.bytes(), &bytes);
    assert_eq!(enc.decode().unwrap(), req.resource_spans);
    assert_eq!(
        encode_resource_spans(&req.resource_spans),
        Bytes::from(req.encode_to_vec())
    );
}

#[test]
fn empty_request_is_valid_and_empty() {
    let enc = EncodedTraces::new(Bytes::new()).unwrap();
    assert_eq!((enc.span_count(), enc.resource_count()), (0, 0));
}

#[test]
fn concatenated_requests_are_one_request_with_both_lists() {
    let a = rich(2);
    let b = rich(3);
    let parts = [
        EncodedTraces::new(Bytes::from(a.encode_to_vec())).unwrap(),
        EncodedTraces::new(Bytes::from(b.encode_to_vec())).unwrap(),
    ];
    let joined = EncodedTraces::concat(&parts);
    assert_eq!(joined.span_count(), 5);
    assert_eq!(joined.resource_count(), 4);
    let mut both = a.resource_spans.clone();
    both.extend(b.resource_spans.clone());
    assert_eq!(joined.decode().unwrap(), both);
    // and the concatenation passes the check itself
    assert_eq!(EncodedTraces::new(joined.bytes().clone()).unwrap(), joined);
}

#[test]
fn bad_ids_are_refused_with_the_receivers_message() {
    let mut req = rich(1);
    req.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1; 15];
    let err = EncodedTraces::new(Bytes::from(req.encode_to_vec())).unwrap_err();
    assert_eq!(
        err,
        WireError::InvalidId("invalid trace id: 15 bytes, expected 16 (or empty)".into())
    );
    let mut req = rich(1);
    req.resource_spans[0].scope_spans[0].spans[0].links[0].span_id = vec![1; 9];
    let err = EncodedTraces::new(Bytes::from(req.encode_to_vec())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid link span id: 9 bytes, expected 8 (or empty)"
    );
}

#[test]
fn the_last_id_of_a_span_is_the_one_checked_as_prost_keeps_it() {
    let req = rich(1);
    let mut bytes = req.encode_to_vec();
    // A second span id (field 2) of the wrong length inside the span would be
    // refused; appended after a good one inside the same span it is what
    // prost keeps. Build by hand: a span with span_id 3 bytes then 8 bytes.
    let mut span = Vec::new();
    span.extend_from_slice(&[0x12, 3, 1, 2, 3]);
    span.extend_from_slice(&[0x12, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    let mut ss = vec![0x12, span.len() as u8];
    ss.extend_from_slice(&span);
    let mut rs = vec![0x12, ss.len() as u8];
    rs.extend_from_slice(&ss);
    bytes.push(0x0a);
    bytes.push(rs.len() as u8);
    bytes.extend_from_slice(&rs);
    assert!(accepted_by_prost(&bytes));
    assert_eq!(
        EncodedTraces::new(Bytes::from(bytes)).unwrap().span_count(),
        2
    );
}

#[test]
fn unknown_fields_and_groups_are_skipped_as_prost_skips_them() {
    let mut bytes = rich(1).encode_to_vec();
    // field 99 varint, field 98 fixed32, a group 97 holding a varint field
    bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
    bytes.extend_from_slice(&[0x95, 0x06, 1, 2, 3, 4]);
    bytes.extend_from_slice(&[0x8b, 0x06, 0x08, 0x01, 0x8c, 0x06]);
    assert!(accepted_by_prost(&bytes));
    assert!(EncodedTraces::new(Bytes::from(bytes.clone())).is_ok());
    // an end group that does not match
    bytes.extend_from_slice(&[0x8b, 0x06, 0x94, 0x06]);
    assert!(!accepted_by_prost(&bytes));
    assert!(EncodedTraces::new(Bytes::from(bytes)).is_err());
}

#[test]
fn nesting_is_refused_exactly_where_prost_refuses_it() {
    for depth in 90..110 {
        let mut v = AnyValue {
            value: Some(any_value::Value::IntValue(1)),
        };
        for _ in 0..depth {
            v = AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })),
            };
        }
        let mut req = rich(1);
        req.resource_spans[0].scope_spans[0].spans[0].attributes = vec![KeyValue {
            key: "d".into(),
            value: Some(v),
            key_strindex: 0,
        }];
        let bytes = req.encode_to_vec();
        assert_eq!(
            EncodedTraces::new(Bytes::from(bytes.clone())).is_ok(),
            accepted_by_prost(&bytes),
            "depth {depth}"
        );
    }
}

/// xorshift: deterministic mutations without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_requests_are_accepted_exactly_when_prost_accepts_them() {
    let base = rich(3).encode_to_vec();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..40_000 {
        let mut b = base.clone();
        for _ in 0..=rng.below(3) {
            match rng.below(4) {
                0 if !b.is_empty() => {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
                1 if !b.is_empty() => {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
                2 => {
                    let i = rng.below(b.len() + 1);
                    b.truncate(i);
                }
                _ => {
                    let i = rng.below(b.len() + 1);
                    b.insert(i, rng.next() as u8);
                }
            }
        }
        let walked = EncodedTraces::new(Bytes::from(b.clone()));
        let prost = accepted_by_prost(&b);
        assert_eq!(walked.is_ok(), prost, "{walked:?} for {b:02x?}");
        if let Ok(enc) = walked {
            let decoded = enc.decode().unwrap();
            assert_eq!(enc.resource_count(), decoded.len());
            assert_eq!(
                enc.span_count(),
                decoded
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum::<usize>()
            );
            ok += 1;
        } else {
            refused += 1;
        }
    }
    // Both outcomes were exercised.
    assert!(ok > 1000 && refused > 1000, "ok {ok} refused {refused}");
}
