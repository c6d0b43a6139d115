//! `jaeger.api_v2` protobuf messages (model.proto and collector.proto),
//! written out by hand with the IDL's field numbers, and their conversion
//! to and from [`crate::model`].

use crate::model;

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ValueType {
    String = 0,
    Bool = 1,
    Int64 = 2,
    Float64 = 3,
    Binary = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SpanRefType {
    ChildOf = 0,
    FollowsFrom = 1,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(enumeration = "ValueType", tag = "2")]
    pub v_type: i32,
    #[prost(string, tag = "3")]
    pub v_str: String,
    #[prost(bool, tag = "4")]
    pub v_bool: bool,
    #[prost(int64, tag = "5")]
    pub v_int64: i64,
    #[prost(double, tag = "6")]
    pub v_float64: f64,
    #[prost(bytes = "vec", tag = "7")]
    pub v_binary: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Log {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "2")]
    pub fields: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SpanRef {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(enumeration = "SpanRefType", tag = "3")]
    pub ref_type: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Process {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(message, repeated, tag = "2")]
    pub tags: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub operation_name: String,
    #[prost(message, repeated, tag = "4")]
    pub references: Vec<SpanRef>,
    #[prost(uint32, tag = "5")]
    pub flags: u32,
    #[prost(message, optional, tag = "6")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "7")]
    pub duration: Option<Duration>,
    #[prost(message, repeated, tag = "8")]
    pub tags: Vec<KeyValue>,
    #[prost(message, repeated, tag = "9")]
    pub logs: Vec<Log>,
    #[prost(message, optional, tag = "10")]
    pub process: Option<Process>,
    #[prost(string, tag = "11")]
    pub process_id: String,
    #[prost(string, repeated, tag = "12")]
    pub warnings: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Batch {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<Span>,
    #[prost(message, optional, tag = "2")]
    pub process: Option<Process>,
}

/// `jaeger.api_v2.PostSpansRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostSpansRequest {
    #[prost(message, optional, tag = "1")]
    pub batch: Option<Batch>,
}

/// `jaeger.api_v2.PostSpansResponse`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct PostSpansResponse {}

/// A protobuf batch that does not fit the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("span {index}: trace_id has {len} bytes, want 16 (or 8)")]
    TraceId { index: usize, len: usize },
    #[error("span {index}: span_id has {len} bytes, want 8")]
    SpanId { index: usize, len: usize },
    #[error("span {index}, reference {reference}: trace_id has {len} bytes, want 16 (or 8)")]
    RefTraceId {
        index: usize,
        reference: usize,
        len: usize,
    },
    #[error("span {index}, reference {reference}: span_id has {len} bytes, want 8")]
    RefSpanId {
        index: usize,
        reference: usize,
        len: usize,
    },
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// (high, low) from 16 bytes, or (0, low) from 8; absent means zero.
fn trace_id(b: &[u8]) -> Option<(u64, u64)> {
    match b.len() {
        0 => Some((0, 0)),
        8 => Some((0, be_u64(b))),
        16 => Some((be_u64(&b[..8]), be_u64(&b[8..]))),
        _ => None,
    }
}

fn span_id(b: &[u8]) -> Option<u64> {
    match b.len() {
        0 => Some(0),
        8 => Some(be_u64(b)),
        _ => None,
    }
}

/// Unix nanoseconds as the collector computes them from a Timestamp
/// (`uint64(t.UnixNano())`, wrapping outside the representable range).
fn timestamp_ns(t: Option<&Timestamp>) -> i64 {
    let t = t.copied().unwrap_or_default();
    (i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)) as i64
}

fn duration_ns(d: Option<&Duration>) -> i64 {
    let d = d.copied().unwrap_or_default();
    (i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos)) as i64
}

fn tag_from_proto(kv: KeyValue) -> model::Tag {
    let value = match ValueType::try_from(kv.v_type) {
        Ok(ValueType::String) => model::TagValue::String(kv.v_str),
        Ok(ValueType::Bool) => model::TagValue::Bool(kv.v_bool),
        Ok(ValueType::Int64) => model::TagValue::Long(kv.v_int64),
        Ok(ValueType::Float64) => model::TagValue::Double(kv.v_float64),
        Ok(ValueType::Binary) => model::TagValue::Binary(kv.v_binary),
        // gogo's enum String() prints an unknown value as its number.
        Err(_) => model::TagValue::Unknown(kv.v_type.to_string()),
    };
    model::Tag { key: kv.key, value }
}

fn tags_from_proto(tags: Vec<KeyValue>) -> Vec<model::Tag> {
    tags.into_iter().map(tag_from_proto).collect()
}

fn process_from_proto(p: Process) -> model::Process {
    model::Process {
        service_name: p.service_name,
        tags: tags_from_proto(p.tags),
    }
}

/// Converts a received protobuf batch; ids of other lengths are errors.
pub fn batch_from_proto(batch: Batch) -> Result<model::Batch, ProtoError> {
    let mut spans = Vec::with_capacity(batch.spans.len());
    for (index, s) in batch.spans.into_iter().enumerate() {
        let (high, low) = trace_id(&s.trace_id).ok_or(ProtoError::TraceId {
            index,
            len: s.trace_id.len(),
        })?;
        let id = span_id(&s.span_id).ok_or(ProtoError::SpanId {
            index,
            len: s.span_id.len(),
        })?;
        let mut references = Vec::with_capacity(s.references.len());
        for (reference, r) in s.references.into_iter().enumerate() {
            let (rh, rl) = trace_id(&r.trace_id).ok_or(ProtoError::RefTraceId {
                index,
                reference,
                len: r.trace_id.len(),
            })?;
            let rs = span_id(&r.span_id).ok_or(ProtoError::RefSpanId {
                index,
                reference,
                len: r.span_id.len(),
            })?;
            references.push(model::SpanRef {
                ref_type: model::RefType::from_i32(r.ref_type),
                trace_id_high: rh,
                trace_id_low: rl,
                span_id: rs,
            });
        }
        let start = timestamp_ns(s.start_time.as_ref());
        let end = start.wrapping_add(duration_ns(s.duration.as_ref()));
        spans.push(model::Span {
            trace_id_high: high,
            trace_id_low: low,
            span_id: id,
            parent_span_id: 0,
            operation_name: s.operation_name,
            references,
            flags: s.flags,
            start_ns: start as u64,
            end_ns: end as u64,
            tags: tags_from_proto(s.tags),
            logs: s
                .logs
                .into_iter()
                .map(|l| model::Log {
                    timestamp_ns: timestamp_ns(l.timestamp.as_ref()) as u64,
                    fields: tags_from_proto(l.fields),
                })
                .collect(),
            process: s.process.map(process_from_proto),
        });
    }
    Ok(model::Batch {
        process: batch.process.map(process_from_proto),
        spans,
    })
}

fn tag_to_proto(t: &model::Tag) -> KeyValue {
    let mut kv = KeyValue {
        key: t.key.clone(),
        ..KeyValue::default()
    };
    match &t.value {
        model::TagValue::String(s) | model::TagValue::Unknown(s) => {
            kv.v_type = ValueType::String as i32;
            kv.v_str = s.clone();
        }
        model::TagValue::Bool(b) => {
            kv.v_type = ValueType::Bool as i32;
            kv.v_bool = *b;
        }
        model::TagValue::Long(l) => {
            kv.v_type = ValueType::Int64 as i32;
            kv.v_int64 = *l;
        }
        model::TagValue::Double(d) => {
            kv.v_type = ValueType::Float64 as i32;
            kv.v_float64 = *d;
        }
        model::TagValue::Binary(b) => {
            kv.v_type = ValueType::Binary as i32;
            kv.v_binary = b.clone();
        }
    }
    kv
}

fn tags_to_proto(tags: &[model::Tag]) -> Vec<KeyValue> {
    tags.iter().map(tag_to_proto).collect()
}

fn trace_id_bytes(high: u64, low: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&high.to_be_bytes());
    b.extend_from_slice(&low.to_be_bytes());
    b
}

/// A Timestamp as Go's `time.Time` splits it: whole seconds rounded down,
/// nanoseconds in [0, 1e9).
fn to_timestamp(ns: i64) -> Timestamp {
    Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: ns.rem_euclid(1_000_000_000) as i32,
    }
}

/// A Duration as protobuf wants it: seconds and nanos of the same sign.
fn to_duration(ns: i64) -> Duration {
    Duration {
        seconds: ns / 1_000_000_000,
        nanos: (ns % 1_000_000_000) as i32,
    }
}

fn process_to_proto(p: &model::Process) -> Process {
    Process {
        service_name: p.service_name.clone(),
        tags: tags_to_proto(&p.tags),
    }
}

/// The protobuf form names the parent only by reference: an explicit
/// (Thrift) parent id becomes a leading CHILD_OF reference unless one of the
/// references already points at it, as Jaeger converts Thrift spans.
fn references_with_parent(s: &model::Span) -> Vec<model::SpanRef> {
    let parent = s.parent_span_id;
    let named = s.references.iter().any(|r| {
        r.span_id == parent
            && r.trace_id_high == s.trace_id_high
            && r.trace_id_low == s.trace_id_low
    });
    if parent == 0 || named {
        return s.references.clone();
    }
    let mut refs = Vec::with_capacity(s.references.len() + 1);
    refs.push(model::SpanRef {
        ref_type: model::RefType::ChildOf,
        trace_id_high: s.trace_id_high,
        trace_id_low: s.trace_id_low,
        span_id: parent,
    });
    refs.extend_from_slice(&s.references);
    refs
}

/// Converts a batch for sending; ids are always written out in full, as
/// Jaeger's own marshaller does.
pub fn batch_to_proto(batch: &model::Batch) -> Batch {
    Batch {
        process: batch.process.as_ref().map(process_to_proto),
        spans: batch
            .spans
            .iter()
            .map(|s| {
                let start = s.start_ns as i64;
                let duration = (s.end_ns as i64).saturating_sub(start);
                Span {
                    trace_id: trace_id_bytes(s.trace_id_high, s.trace_id_low),
                    span_id: s.span_id.to_be_bytes().to_vec(),
                    operation_name: s.operation_name.clone(),
                    references: references_with_parent(s)
                        .iter()
                        .map(|r| SpanRef {
                            trace_id: trace_id_bytes(r.trace_id_high, r.trace_id_low),
                            span_id: r.span_id.to_be_bytes().to_vec(),
                            ref_type: r.ref_type.as_i32(),
                        })
                        .collect(),
                    flags: s.flags,
                    start_time: Some(to_timestamp(start)),
                    duration: Some(to_duration(duration)),
                    tags: tags_to_proto(&s.tags),
                    logs: s
                        .logs
                        .iter()
                        .map(|l| Log {
                            timestamp: Some(to_timestamp(l.timestamp_ns as i64)),
                            fields: tags_to_proto(&l.fields),
                        })
                        .collect(),
                    process: s.process.as_ref().map(process_to_proto),
                    process_id: String::new(),
                    warnings: Vec::new(),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn field_numbers_match_the_idl() {
        // KeyValue{key:"k", v_type:INT64, v_int64:5}: tags 1 (len), 2 (varint), 5 (varint).
        let kv = KeyValue {
            key: "k".into(),
            v_type: ValueType::Int64 as i32,
            v_int64: 5,
            ..Default::default()
        };
        assert_eq!(kv.encode_to_vec(), vec![0x0a, 1, b'k', 0x10, 2, 0x28, 5]);
        let span = Span {
            flags: 1,
            process_id: "p1".into(),
            ..Default::default()
        };
        assert_eq!(span.encode_to_vec(), vec![0x28, 1, 0x5a, 2, b'p', b'1']);
        let req = PostSpansRequest {
            batch: Some(Batch {
                spans: vec![],
                process: Some(Process {
                    service_name: "s".into(),
                    tags: vec![],
                }),
            }),
        };
        assert_eq!(req.encode_to_vec(), vec![0x0a, 5, 0x12, 3, 0x0a, 1, b's']);
    }

    #[test]
    fn ids_and_times_convert_both_ways() {
        let m = model::Batch {
            process: None,
            spans: vec![model::Span {
                trace_id_high: 1,
                trace_id_low: 2,
                span_id: 3,
                references: vec![model::SpanRef {
                    ref_type: model::RefType::ChildOf,
                    trace_id_high: 1,
                    trace_id_low: 2,
                    span_id: 9,
                }],
                start_ns: 1_500_000_000_999_999_999,
                end_ns: 1_500_000_001_000_000_001,
                ..Default::default()
            }],
        };
        let p = batch_to_proto(&m);
        let s = &p.spans[0];
        assert_eq!(s.trace_id, [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(s.span_id, [0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(
            s.start_time,
            Some(Timestamp {
                seconds: 1_500_000_000,
                nanos: 999_999_999
            })
        );
        assert_eq!(
            s.duration,
            Some(Duration {
                seconds: 0,
                nanos: 2
            })
        );
        assert_eq!(batch_from_proto(p).unwrap(), m);
        assert_eq!(
            to_duration(-1_500_000_000),
            Duration {
                seconds: -1,
                nanos: -500_000_000
            }
        );
    }

    #[test]
    fn short_ids_and_bad_lengths() {
        let batch = Batch {
            spans: vec![Span {
                trace_id: vec![0, 0, 0, 0, 0, 0, 0, 7],
                span_id: vec![],
                ..Default::default()
            }],
            process: None,
        };
        let m = batch_from_proto(batch).unwrap();
        assert_eq!((m.spans[0].trace_id_high, m.spans[0].trace_id_low), (0, 7));
        let batch = Batch {
            spans: vec![Span {
                trace_id: vec![1; 16],
                span_id: vec![1; 4],
                ..Default::default()
            }],
            process: None,
        };
        assert_eq!(
            batch_from_proto(batch).unwrap_err(),
            ProtoError::SpanId { index: 0, len: 4 }
        );
        let kv = KeyValue {
            key: "k".into(),
            v_type: 7,
            ..Default::default()
        };
        assert_eq!(
            tag_from_proto(kv).value,
            model::TagValue::Unknown("7".into())
        );
    }
}
