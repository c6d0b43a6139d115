//! Traces that travel encoded: an OTLP `ExportTraceServiceRequest` kept as
//! the bytes it arrived in, checked once by a walk over its fields, and
//! decoded only if a consumer asks for the spans themselves.
//!
//! The walk accepts exactly what decoding with prost accepts, plus the id
//! checks the OTLP receivers make (trace ids of 16 bytes, span ids of 8, or
//! empty), so a batch that passed it always decodes. It counts spans and
//! resources on the way. Encoded requests concatenate: the request is one
//! repeated field, so two valid requests end to end are one valid request
//! holding both lists.

use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;

/// Why an encoded request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a protobuf message of the trace schema (what prost would refuse).
    #[error("failed to decode protobuf: {0}")]
    Malformed(&'static str),
    /// A trace or span id of the wrong length.
    #[error("{0}")]
    InvalidId(String),
}

/// A checked, encoded `ExportTraceServiceRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedTraces {
    bytes: Bytes,
    spans: usize,
    resources: usize,
}

impl EncodedTraces {
    /// Checks `bytes` and keeps them.
    pub fn new(bytes: Bytes) -> Result<EncodedTraces, WireError> {
        let counts = check_traces(&bytes)?;
        Ok(EncodedTraces {
            bytes,
            spans: counts.spans,
            resources: counts.resources,
        })
    }

    /// Encodes decoded spans (weft's own data, so no check is needed).
    pub fn from_resource_spans(resource_spans: &[ResourceSpans]) -> EncodedTraces {
        EncodedTraces {
            bytes: encode_resource_spans(resource_spans),
            spans: resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum(),
            resources: resource_spans.len(),
        }
    }

    /// The encoded request.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn span_count(&self) -> usize {
        self.spans
    }

    /// `ResourceSpans` entries (a request without any is empty).
    pub fn resource_count(&self) -> usize {
        self.resources
    }

    /// The spans as prost types.
    pub fn decode(&self) -> Result<Vec<ResourceSpans>, prost::DecodeError> {
        ExportTraceServiceRequest::decode(&self.bytes[..]).map(|r| r.resource_spans)
    }

    /// Several requests as one, in order.
    pub fn concat(parts: &[EncodedTraces]) -> EncodedTraces {
        if let [one] = parts {
            return one.clone();
        }
        let mut out = BytesMut::with_capacity(parts.iter().map(|p| p.bytes.len()).sum());
        for p in parts {
            out.extend_from_slice(&p.bytes);
        }
        EncodedTraces {
            bytes: out.freeze(),
            spans: parts.iter().map(|p| p.spans).sum(),
            resources: parts.iter().map(|p| p.resources).sum(),
        }
    }
}

/// Encodes `resource_spans` as an `ExportTraceServiceRequest` without
/// copying them into one first.
pub fn encode_resource_spans(resource_spans: &[ResourceSpans]) -> Bytes {
    let len: usize = resource_spans
        .iter()
        .map(|rs| prost::encoding::message::encoded_len(1, rs))
        .sum();
    let mut buf = BytesMut::with_capacity(len);
    for rs in resource_spans {
        prost::encoding::message::encode(1, rs, &mut buf);
    }
    buf.freeze()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    spans: usize,
    resources: usize,
}

/// prost's recursion limit: a message nested deeper than this is refused.
const RECURSION_LIMIT: u32 = 100;

type R<T> = Result<T, WireError>;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> R<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or(WireError::Malformed("invalid varint"))?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(WireError::Malformed("invalid varint"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::Malformed("invalid varint"))
    }

    /// A field key: (field number, wire type).
    fn key(&mut self) -> R<(u32, u8)> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(WireError::Malformed("invalid key value"));
        }
        let wire = (key & 7) as u8;
        if wire > 5 {
            return Err(WireError::Malformed("invalid wire type value"));
        }
        let tag = (key >> 3) as u32;
        if tag == 0 {
            return Err(WireError::Malformed("invalid tag value: 0"));
        }
        Ok((tag, wire))
    }

    fn advance(&mut self, n: usize) -> R<()> {
        if self.buf.len() - self.pos < n {
            return Err(WireError::Malformed("buffer underflow"));
        }
        self.pos += n;
        Ok(())
    }

    fn len_delimited(&mut self) -> R<&'a [u8]> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| WireError::Malformed("buffer underflow"))?;
        let start = self.pos;
        self.advance(len)?;
        Ok(&self.buf[start..start + len])
    }

    /// Skips an unknown field as prost does, groups included. `budget` is
    /// the recursion budget left at the message holding the field.
    fn skip(&mut self, tag: u32, wire: u8, budget: u32) -> R<()> {
        if budget == 0 {
            return Err(WireError::Malformed("recursion limit reached"));
        }
        match wire {
            VARINT => self.varint().map(|_| ()),
            FIXED64 => self.advance(8),
            FIXED32 => self.advance(4),
            LEN => self.len_delimited().map(|_| ()),
            START_GROUP => loop {
                let (inner, w) = self.key()?;
                if w == END_GROUP {
                    if inner != tag {
                        return Err(WireError::Malformed("unexpected end group tag"));
                    }
                    return Ok(());
                }
                self.skip(inner, w, budget - 1)?;
            },
            _ => Err(WireError::Malformed("unexpected end group tag")),
        }
    }
}

/// What a known field holds.
#[derive(Clone, Copy)]
enum Field {
    Varint,
    Fixed32,
    Fixed64,
    Str,
    Bytes,
    Msg(Schema),
}

/// The messages of the trace schema.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Schema {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

impl Schema {
    fn field(self, tag: u32) -> Option<Field> {
        use Field::*;
        use Schema as S;
        Some(match (self, tag) {
            (S::Request, 1) => Msg(S::ResourceSpans),
            (S::ResourceSpans, 1) => Msg(S::Resource),
            (S::ResourceSpans, 2) => Msg(S::ScopeSpans),
            (S::ResourceSpans, 3) => Str,
            (S::Resource, 1) => Msg(S::KeyValue),
            (S::Resource, 2) => Varint,
            (S::Resource, 3) => Msg(S::EntityRef),
            (S::EntityRef, 1..=4) => Str,
            (S::ScopeSpans, 1) => Msg(S::Scope),
            (S::ScopeSpans, 2) => Msg(S::Span),
            (S::ScopeSpans, 3) => Str,
            (S::Scope, 1 | 2) => Str,
            (S::Scope, 3) => Msg(S::KeyValue),
            (S::Scope, 4) => Varint,
            (S::Span, 1 | 2 | 4) => Bytes,
            (S::Span, 3 | 5) => Str,
            (S::Span, 6 | 10 | 12 | 14) => Varint,
            (S::Span, 7 | 8) => Fixed64,
            (S::Span, 9) => Msg(S::KeyValue),
            (S::Span, 11) => Msg(S::Event),
            (S::Span, 13) => Msg(S::Link),
            (S::Span, 15) => Msg(S::Status),
            (S::Span, 16) => Fixed32,
            (S::Event, 1) => Fixed64,
            (S::Event, 2) => Str,
            (S::Event, 3) => Msg(S::KeyValue),
            (S::Event, 4) => Varint,
            (S::Link, 1 | 2) => Bytes,
            (S::Link, 3) => Str,
            (S::Link, 4) => Msg(S::KeyValue),
            (S::Link, 5) => Varint,
            (S::Link, 6) => Fixed32,
            (S::Status, 2) => Str,
            (S::Status, 3) => Varint,
            (S::KeyValue, 1) => Str,
            (S::KeyValue, 2) => Msg(S::AnyValue),
            (S::KeyValue, 3) => Varint,
            (S::AnyValue, 1) => Str,
            (S::AnyValue, 2 | 3 | 8) => Varint,
            (S::AnyValue, 4) => Fixed64,
            (S::AnyValue, 5) => Msg(S::ArrayValue),
            (S::AnyValue, 6) => Msg(S::KeyValueList),
            (S::AnyValue, 7) => Bytes,
            (S::ArrayValue, 1) => Msg(S::AnyValue),
            (S::KeyValueList, 1) => Msg(S::KeyValue),
            _ => return None,
        })
    }
}

/// The last value of each id field of a span or link (prost keeps the last).
#[derive(Default)]
struct Ids {
    trace: usize,
    span: usize,
    parent: usize,
}

fn check_id(what: &str, len: usize, want: usize) -> R<()> {
    if len == 0 || len == want {
        Ok(())
    } else {
        Err(WireError::InvalidId(format!(
            "invalid {what}: {len} bytes, expected {want} (or empty)"
        )))
    }
}

/// Walks one message body of `schema`. `budget` is prost's recursion count
/// at this message (100 at the request).
fn walk(buf: &[u8], schema: Schema, budget: u32, counts: &mut Counts) -> R<()> {
    let mut r = Reader::new(buf);
    let mut ids = Ids::default();
    while !r.done() {
        let (tag, wire) = r.key()?;
        let Some(field) = schema.field(tag) else {
            r.skip(tag, wire, budget)?;
            continue;
        };
        let want = match field {
            Field::Varint => VARINT,
            Field::Fixed32 => FIXED32,
            Field::Fixed64 => FIXED64,
            Field::Str | Field::Bytes | Field::Msg(_) => LEN,
        };
        if wire != want {
            return Err(WireError::Malformed("invalid wire type"));
        }
        match field {
            Field::Varint => {
                r.varint()?;
            }
            Field::Fixed32 => r.advance(4)?,
            Field::Fixed64 => r.advance(8)?,
            Field::Str => {
                let s = r.len_delimited()?;
                if std::str::from_utf8(s).is_err() {
                    return Err(WireError::Malformed(
                        "invalid string value: data is not UTF-8 encoded",
                    ));
                }
            }
            Field::Bytes => {
                let b = r.len_delimited()?;
                match tag {
                    1 => ids.trace = b.len(),
                    2 => ids.span = b.len(),
                    _ => ids.parent = b.len(),
                }
            }
            Field::Msg(inner) => {
                if budget == 0 {
                    return Err(WireError::Malformed("recursion limit reached"));
                }
                let body = r.len_delimited()?;
                walk(body, inner, budget - 1, counts)?;
                match inner {
                    Schema::Span => counts.spans += 1,
                    Schema::ResourceSpans => counts.resources += 1,
                    _ => {}
                }
            }
        }
    }
    match schema {
        Schema::Span => {
            check_id("trace id", ids.trace, 16)?;
            check_id("span id", ids.span, 8)?;
            check_id("parent span id", ids.parent, 8)?;
        }
        Schema::Link => {
            check_id("link trace id", ids.trace, 16)?;
            check_id("link span id", ids.span, 8)?;
        }
        _ => {}
    }
    Ok(())
}

/// Checks an encoded `ExportTraceServiceRequest` and counts what it holds.
fn check_traces(buf: &[u8]) -> R<Counts> {
    let mut counts = Counts::default();
    walk(buf, Schema::Request, RECURSION_LIMIT, &mut counts)?;
    Ok(counts)
}

#[cfg(test)]
mod tests;
