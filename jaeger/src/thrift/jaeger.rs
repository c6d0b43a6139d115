//! `jaeger.thrift` (`Batch` and what it holds) and the agent's `emitBatch`
//! call, read into and written from [`crate::model`].
//!
//! Like generated Thrift code, the reader skips unknown fields and fields
//! whose type differs from the IDL's, and fails when a required field is
//! missing.

use super::protocol::{Protocol, Reader, TType, ThriftError, Writer};
use crate::model::{Batch, Log, Process, RefType, Span, SpanRef, Tag, TagValue};

/// Thrift message types.
const CALL: u8 = 1;
const ONEWAY: u8 = 4;

/// Reads a struct, calling `field` for each field it holds.
fn read_struct<'a, F>(r: &mut Reader<'a>, mut field: F) -> Result<(), ThriftError>
where
    F: FnMut(&mut Reader<'a>, TType, i16) -> Result<(), ThriftError>,
{
    r.read_struct_begin()?;
    while let Some((ttype, id)) = r.read_field_begin()? {
        field(r, ttype, id)?;
    }
    r.read_struct_end();
    Ok(())
}

/// Reads a list of `elem` structs with `read`; a list of another element
/// type is skipped, as a field of the wrong type would be.
fn read_list<'a, T>(
    r: &mut Reader<'a>,
    mut read: impl FnMut(&mut Reader<'a>) -> Result<T, ThriftError>,
) -> Result<Option<Vec<T>>, ThriftError> {
    let (elem, n) = r.read_list_begin()?;
    if elem != TType::Struct {
        for _ in 0..n {
            r.skip(elem)?;
        }
        r.read_container_end();
        return Ok(None);
    }
    // Lengths were checked against the input; still, grow as items arrive.
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        out.push(read(r)?);
    }
    r.read_container_end();
    Ok(Some(out))
}

fn missing(strukt: &'static str, field: &'static str) -> ThriftError {
    ThriftError::MissingField { strukt, field }
}

fn read_tag(r: &mut Reader<'_>) -> Result<Tag, ThriftError> {
    let mut key = None;
    let mut vtype = None;
    let (mut s, mut d, mut b, mut l, mut bin) = (None, None, None, None, None);
    read_struct(r, |r, t, id| {
        match (id, t) {
            (1, TType::Binary) => key = Some(r.read_string()?),
            (2, TType::I32) => vtype = Some(r.read_i32()?),
            (3, TType::Binary) => s = Some(r.read_string()?),
            (4, TType::Double) => d = Some(r.read_double()?),
            (5, TType::Bool) => b = Some(r.read_bool()?),
            (6, TType::I64) => l = Some(r.read_i64()?),
            (7, TType::Binary) => bin = Some(r.read_binary()?.to_vec()),
            _ => r.skip(t)?,
        }
        Ok(())
    })?;
    let key = key.ok_or_else(|| missing("Tag", "key"))?;
    let vtype = vtype.ok_or_else(|| missing("Tag", "vType"))?;
    let value = match vtype {
        0 => TagValue::String(s.unwrap_or_default()),
        1 => TagValue::Double(d.unwrap_or_default()),
        2 => TagValue::Bool(b.unwrap_or_default()),
        3 => TagValue::Long(l.unwrap_or_default()),
        4 => TagValue::Binary(bin.unwrap_or_default()),
        // Generated Go code prints unknown enum values as "<UNSET>".
        _ => TagValue::Unknown("<UNSET>".to_string()),
    };
    Ok(Tag { key, value })
}

fn read_tags(r: &mut Reader<'_>) -> Result<Option<Vec<Tag>>, ThriftError> {
    read_list(r, read_tag)
}

fn read_log(r: &mut Reader<'_>) -> Result<Log, ThriftError> {
    let mut ts = None;
    let mut fields = None;
    read_struct(r, |r, t, id| {
        match (id, t) {
            (1, TType::I64) => ts = Some(r.read_i64()?),
            (2, TType::List) => {
                if let Some(f) = read_tags(r)? {
                    fields = Some(f);
                }
            }
            _ => r.skip(t)?,
        }
        Ok(())
    })?;
    Ok(Log {
        timestamp_ns: micros_to_nanos(ts.ok_or_else(|| missing("Log", "timestamp"))?),
        fields: fields.ok_or_else(|| missing("Log", "fields"))?,
    })
}

fn read_ref(r: &mut Reader<'_>) -> Result<SpanRef, ThriftError> {
    let (mut kind, mut low, mut high, mut span) = (None, None, None, None);
    read_struct(r, |r, t, id| {
        match (id, t) {
            (1, TType::I32) => kind = Some(r.read_i32()?),
            (2, TType::I64) => low = Some(r.read_i64()?),
            (3, TType::I64) => high = Some(r.read_i64()?),
            (4, TType::I64) => span = Some(r.read_i64()?),
            _ => r.skip(t)?,
        }
        Ok(())
    })?;
    Ok(SpanRef {
        ref_type: RefType::from_i32(kind.ok_or_else(|| missing("SpanRef", "refType"))?),
        trace_id_low: low.ok_or_else(|| missing("SpanRef", "traceIdLow"))? as u64,
        trace_id_high: high.ok_or_else(|| missing("SpanRef", "traceIdHigh"))? as u64,
        span_id: span.ok_or_else(|| missing("SpanRef", "spanId"))? as u64,
    })
}

/// Thrift times are microseconds; the collector multiplies as unsigned.
fn micros_to_nanos(us: i64) -> u64 {
    (us as u64).wrapping_mul(1000)
}

fn read_span(r: &mut Reader<'_>) -> Result<Span, ThriftError> {
    let (mut low, mut high, mut id_, mut parent, mut name) = (None, None, None, None, None);
    let (mut flags, mut start, mut duration) = (None, None, None);
    let (mut refs, mut tags, mut logs) = (Vec::new(), Vec::new(), Vec::new());
    read_struct(r, |r, t, id| {
        match (id, t) {
            (1, TType::I64) => low = Some(r.read_i64()?),
            (2, TType::I64) => high = Some(r.read_i64()?),
            (3, TType::I64) => id_ = Some(r.read_i64()?),
            (4, TType::I64) => parent = Some(r.read_i64()?),
            (5, TType::Binary) => name = Some(r.read_string()?),
            (6, TType::List) => refs = read_list(r, read_ref)?.unwrap_or_default(),
            (7, TType::I32) => flags = Some(r.read_i32()?),
            (8, TType::I64) => start = Some(r.read_i64()?),
            (9, TType::I64) => duration = Some(r.read_i64()?),
            (10, TType::List) => tags = read_tags(r)?.unwrap_or_default(),
            (11, TType::List) => logs = read_list(r, read_log)?.unwrap_or_default(),
            _ => r.skip(t)?,
        }
        Ok(())
    })?;
    let start = start.ok_or_else(|| missing("Span", "startTime"))?;
    let duration = duration.ok_or_else(|| missing("Span", "duration"))?;
    Ok(Span {
        trace_id_low: low.ok_or_else(|| missing("Span", "traceIdLow"))? as u64,
        trace_id_high: high.ok_or_else(|| missing("Span", "traceIdHigh"))? as u64,
        span_id: id_.ok_or_else(|| missing("Span", "spanId"))? as u64,
        parent_span_id: parent.ok_or_else(|| missing("Span", "parentSpanId"))? as u64,
        operation_name: name.ok_or_else(|| missing("Span", "operationName"))?,
        references: refs,
        flags: flags.ok_or_else(|| missing("Span", "flags"))? as u32,
        start_ns: micros_to_nanos(start),
        end_ns: micros_to_nanos(start.wrapping_add(duration)),
        tags,
        logs,
        process: None,
    })
}

fn read_process(r: &mut Reader<'_>) -> Result<Process, ThriftError> {
    let mut name = None;
    let mut tags = Vec::new();
    read_struct(r, |r, t, id| {
        match (id, t) {
            (1, TType::Binary) => name = Some(r.read_string()?),
            (2, TType::List) => tags = read_tags(r)?.unwrap_or_default(),
            _ => r.skip(t)?,
        }
        Ok(())
    })?;
    Ok(Process {
        service_name: name.ok_or_else(|| missing("Process", "serviceName"))?,
        tags,
    })
}

/// Reads one `jaeger.Batch` struct.
pub fn read_batch(r: &mut Reader<'_>) -> Result<Batch, ThriftError> {
    let mut process = None;
    let mut spans = None;
    read_struct(r, |r, t, id| {
        match (id, t) {
            (1, TType::Struct) => process = Some(read_process(r)?),
            (2, TType::List) => {
                if let Some(s) = read_list(r, read_span)? {
                    spans = Some(s);
                }
            }
            // seqNo and stats are client bookkeeping the collector ignores.
            _ => r.skip(t)?,
        }
        Ok(())
    })?;
    Ok(Batch {
        process: Some(process.ok_or_else(|| missing("Batch", "process"))?),
        spans: spans.ok_or_else(|| missing("Batch", "spans"))?,
    })
}

/// Decodes a bare `jaeger.Batch` (the body of `POST /api/traces`).
/// Bytes after the struct are ignored, as the collector's deserializer does.
pub fn decode_batch(bytes: &[u8], proto: Protocol) -> Result<Batch, ThriftError> {
    read_batch(&mut Reader::new(bytes, proto))
}

/// Decodes an agent datagram: an `emitBatch` message whose argument 1 is
/// the batch. `emitZipkinBatch` and other methods are refused.
pub fn decode_emit_batch(bytes: &[u8], proto: Protocol) -> Result<Batch, ThriftError> {
    let mut r = Reader::new(bytes, proto);
    let (name, kind, _seq) = r.read_message_begin()?;
    if name != "emitBatch" {
        return Err(ThriftError::UnknownMethod(name));
    }
    if kind != ONEWAY && kind != CALL {
        return Err(ThriftError::BadMessage(format!(
            "message type {kind}, want ONEWAY (4) or CALL (1)"
        )));
    }
    let mut batch = None;
    read_struct(&mut r, |r, t, id| {
        match (id, t) {
            (1, TType::Struct) => batch = Some(read_batch(r)?),
            _ => r.skip(t)?,
        }
        Ok(())
    })?;
    batch.ok_or_else(|| missing("emitBatch_args", "batch"))
}

fn write_tag(w: &mut Writer, tag: &Tag) {
    w.write_struct_begin();
    w.field_string(1, &tag.key);
    match &tag.value {
        TagValue::String(s) => {
            w.field_i32(2, 0);
            w.field_string(3, s);
        }
        TagValue::Double(d) => {
            w.field_i32(2, 1);
            w.field_double(4, *d);
        }
        TagValue::Bool(b) => {
            w.field_i32(2, 2);
            w.field_bool(5, *b);
        }
        TagValue::Long(l) => {
            w.field_i32(2, 3);
            w.field_i64(6, *l);
        }
        TagValue::Binary(b) => {
            w.field_i32(2, 4);
            w.field_binary(7, b);
        }
        TagValue::Unknown(s) => {
            w.field_i32(2, 0);
            w.field_string(3, s);
        }
    }
    w.write_struct_end();
}

fn write_tags(w: &mut Writer, id: i16, tags: &[Tag]) {
    w.write_field_begin(TType::List, id);
    w.write_list_begin(TType::Struct, tags.len());
    for t in tags {
        write_tag(w, t);
    }
}

/// Nanoseconds to the microseconds Thrift carries, truncating as Go's
/// integer division does.
fn nanos_to_micros(ns: i64) -> i64 {
    ns / 1000
}

fn write_span(w: &mut Writer, s: &Span) {
    w.write_struct_begin();
    w.field_i64(1, s.trace_id_low as i64);
    w.field_i64(2, s.trace_id_high as i64);
    w.field_i64(3, s.span_id as i64);
    w.field_i64(4, s.parent_id() as i64);
    w.field_string(5, &s.operation_name);
    if !s.references.is_empty() {
        w.write_field_begin(TType::List, 6);
        w.write_list_begin(TType::Struct, s.references.len());
        for r in &s.references {
            w.write_struct_begin();
            w.field_i32(1, r.ref_type.as_i32());
            w.field_i64(2, r.trace_id_low as i64);
            w.field_i64(3, r.trace_id_high as i64);
            w.field_i64(4, r.span_id as i64);
            w.write_struct_end();
        }
    }
    w.field_i32(7, s.flags as i32);
    let start = s.start_ns as i64;
    let duration = (s.end_ns as i64).saturating_sub(start);
    w.field_i64(8, nanos_to_micros(start));
    w.field_i64(9, nanos_to_micros(duration));
    if !s.tags.is_empty() {
        write_tags(w, 10, &s.tags);
    }
    if !s.logs.is_empty() {
        w.write_field_begin(TType::List, 11);
        w.write_list_begin(TType::Struct, s.logs.len());
        for l in &s.logs {
            w.write_struct_begin();
            w.field_i64(1, nanos_to_micros(l.timestamp_ns as i64));
            write_tags(w, 2, &l.fields);
            w.write_struct_end();
        }
    }
    w.write_struct_end();
}

/// Writes one `jaeger.Batch` struct; a batch without a process gets an
/// empty one, since the IDL requires it.
pub fn write_batch(w: &mut Writer, batch: &Batch) {
    w.write_struct_begin();
    w.write_field_begin(TType::Struct, 1);
    w.write_struct_begin();
    let empty = Process::default();
    let process = batch.process.as_ref().unwrap_or(&empty);
    w.field_string(1, &process.service_name);
    if !process.tags.is_empty() {
        write_tags(w, 2, &process.tags);
    }
    w.write_struct_end();
    w.write_field_begin(TType::List, 2);
    w.write_list_begin(TType::Struct, batch.spans.len());
    for s in &batch.spans {
        write_span(w, s);
    }
    w.write_struct_end();
}

/// A bare `jaeger.Batch` (the body of `POST /api/traces`).
pub fn encode_batch(batch: &Batch, proto: Protocol) -> Vec<u8> {
    let mut w = Writer::new(proto);
    write_batch(&mut w, batch);
    w.into_bytes()
}

/// An agent datagram: a one-way `emitBatch` call carrying `batch`.
pub fn encode_emit_batch(batch: &Batch, proto: Protocol, seq: i32) -> Vec<u8> {
    let mut w = Writer::new(proto);
    w.write_message_begin("emitBatch", ONEWAY, seq);
    w.write_struct_begin();
    w.write_field_begin(TType::Struct, 1);
    write_batch(&mut w, batch);
    w.write_struct_end();
    w.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Batch {
        Batch {
            process: Some(Process {
                service_name: "checkout".into(),
                tags: vec![
                    Tag::string("hostname", "box-1"),
                    Tag {
                        key: "cpus".into(),
                        value: TagValue::Long(8),
                    },
                ],
            }),
            spans: vec![Span {
                trace_id_high: 0x0102_0304_0506_0708,
                trace_id_low: 0xf1f2_f3f4_f5f6_f7f8,
                span_id: 0xa1a2_a3a4_a5a6_a7a8,
                parent_span_id: 0,
                operation_name: "GET /cart".into(),
                references: vec![
                    SpanRef {
                        ref_type: RefType::ChildOf,
                        trace_id_high: 0x0102_0304_0506_0708,
                        trace_id_low: 0xf1f2_f3f4_f5f6_f7f8,
                        span_id: 0x11,
                    },
                    SpanRef {
                        ref_type: RefType::FollowsFrom,
                        trace_id_high: 0,
                        trace_id_low: 0x99,
                        span_id: 0x22,
                    },
                ],
                flags: 1,
                start_ns: 1_700_000_000_123_456_000,
                end_ns: 1_700_000_000_223_456_000,
                tags: vec![
                    Tag::string("span.kind", "server"),
                    Tag {
                        key: "ok".into(),
                        value: TagValue::Bool(true),
                    },
                    Tag {
                        key: "ratio".into(),
                        value: TagValue::Double(0.25),
                    },
                    Tag {
                        key: "blob".into(),
                        value: TagValue::Binary(vec![0, 1, 255]),
                    },
                ],
                logs: vec![Log {
                    timestamp_ns: 1_700_000_000_200_000_000,
                    fields: vec![Tag::string("event", "retry")],
                }],
                process: None,
            }],
        }
    }

    #[test]
    fn batch_round_trips_in_both_protocols() {
        for p in [Protocol::Binary, Protocol::Compact] {
            let mut want = sample();
            // The writer names the parent explicitly, as Jaeger clients do.
            want.spans[0].parent_span_id = 0x11;
            let bytes = encode_batch(&sample(), p);
            assert_eq!(decode_batch(&bytes, p).unwrap(), want, "{p:?}");
            let dgram = encode_emit_batch(&sample(), p, 3);
            assert_eq!(decode_emit_batch(&dgram, p).unwrap(), want, "{p:?}");
        }
    }

    #[test]
    fn missing_required_fields_are_named() {
        let mut w = Writer::new(Protocol::Binary);
        w.write_struct_begin();
        w.write_field_begin(TType::List, 2);
        w.write_list_begin(TType::Struct, 0);
        w.write_struct_end();
        assert_eq!(
            decode_batch(&w.into_bytes(), Protocol::Binary).unwrap_err(),
            ThriftError::MissingField {
                strukt: "Batch",
                field: "process"
            }
        );
        let mut w = Writer::new(Protocol::Compact);
        w.write_struct_begin();
        w.write_field_begin(TType::Struct, 1);
        w.write_struct_begin();
        w.field_string(1, "svc");
        w.write_struct_end();
        w.write_field_begin(TType::List, 2);
        w.write_list_begin(TType::Struct, 1);
        w.write_struct_begin();
        w.field_i64(1, 1);
        w.write_struct_end();
        w.write_struct_end();
        assert_eq!(
            decode_batch(&w.into_bytes(), Protocol::Compact).unwrap_err(),
            ThriftError::MissingField {
                strukt: "Span",
                field: "startTime"
            }
        );
    }

    #[test]
    fn unknown_and_mistyped_fields_are_skipped() {
        let mut w = Writer::new(Protocol::Compact);
        w.write_struct_begin();
        w.field_string(9, "from a newer IDL");
        w.write_field_begin(TType::Struct, 1);
        w.write_struct_begin();
        w.field_i64(1, 5); // serviceName with the wrong type: skipped
        w.field_string(1, "svc");
        w.write_struct_end();
        w.write_field_begin(TType::List, 2);
        w.write_list_begin(TType::Struct, 0);
        w.field_i64(3, 77); // seqNo
        w.write_struct_end();
        let b = decode_batch(&w.into_bytes(), Protocol::Compact).unwrap();
        assert_eq!(b.process.unwrap().service_name, "svc");
        assert!(b.spans.is_empty());
    }

    #[test]
    fn emit_zipkin_batch_and_bad_headers_are_refused() {
        let mut w = Writer::new(Protocol::Compact);
        w.write_message_begin("emitZipkinBatch", ONEWAY, 0);
        assert_eq!(
            decode_emit_batch(&w.into_bytes(), Protocol::Compact).unwrap_err(),
            ThriftError::UnknownMethod("emitZipkinBatch".into())
        );
        let dgram = encode_emit_batch(&sample(), Protocol::Compact, 0);
        // A compact datagram read as binary is a bad header, not a panic.
        assert!(decode_emit_batch(&dgram, Protocol::Binary).is_err());
        let dgram = encode_emit_batch(&sample(), Protocol::Binary, 0);
        assert!(matches!(
            decode_emit_batch(&dgram, Protocol::Compact).unwrap_err(),
            ThriftError::BadMessage(_)
        ));
    }

    #[test]
    fn unknown_tag_types_keep_the_go_rendering() {
        let mut w = Writer::new(Protocol::Binary);
        w.write_struct_begin();
        w.field_string(1, "k");
        w.field_i32(2, 9);
        w.write_struct_end();
        let tag = read_tag(&mut Reader::new(&w.into_bytes(), Protocol::Binary)).unwrap();
        assert_eq!(tag.value, TagValue::Unknown("<UNSET>".into()));
    }

    #[test]
    fn every_truncation_and_mutation_is_an_error_not_a_panic() {
        for p in [Protocol::Binary, Protocol::Compact] {
            let good = encode_emit_batch(&sample(), p, 0);
            for cut in 0..good.len() {
                assert!(
                    decode_emit_batch(&good[..cut], p).is_err(),
                    "{p:?} cut {cut}"
                );
            }
            for i in 0..good.len() {
                for b in [0u8, 1, 0x0f, 0x7f, 0x80, 0xff] {
                    let mut bad = good.clone();
                    bad[i] = b;
                    let _ = decode_emit_batch(&bad, p);
                }
            }
        }
    }
}
