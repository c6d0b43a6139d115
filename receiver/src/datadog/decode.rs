//! Datadog trace payloads as tracers send them to the Agent: v0.3/v0.4
//! (MessagePack or JSON arrays of traces of span maps), v0.5 (a string table
//! and traces of 12-element span arrays) and v0.7 (a `TracerPayload` map).
//!
//! [`decode_payload`] is pure: bytes in, borrowed spans or a [`DecodeError`]
//! out. It never panics, never recurses on input, and never allocates more
//! than the input could fill, so hostile bodies cost at most linear time.

use std::borrow::Cow;
use std::fmt;

use rmp::Marker;
use serde::Deserialize;

/// A string from the payload: borrowed when it was valid UTF-8, repaired
/// (invalid sequences replaced by U+FFFD, as the Agent does) otherwise.
pub type Str<'a> = Cow<'a, str>;

/// The trace endpoints, by the API version in their path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    V03,
    V04,
    V05,
    V07,
}

impl ApiVersion {
    pub const ALL: [ApiVersion; 4] = [
        ApiVersion::V03,
        ApiVersion::V04,
        ApiVersion::V05,
        ApiVersion::V07,
    ];

    /// `/v0.4/traces` -> `V04`.
    pub fn from_path(path: &str) -> Option<ApiVersion> {
        ApiVersion::ALL.into_iter().find(|v| v.path() == path)
    }

    pub fn path(self) -> &'static str {
        match self {
            ApiVersion::V03 => "/v0.3/traces",
            ApiVersion::V04 => "/v0.4/traces",
            ApiVersion::V05 => "/v0.5/traces",
            ApiVersion::V07 => "/v0.7/traces",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V03 => "v0.3",
            ApiVersion::V04 => "v0.4",
            ApiVersion::V05 => "v0.5",
            ApiVersion::V07 => "v0.7",
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request's traces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DdPayload<'a> {
    /// Payload-wide facts; only v0.7 carries them in the body.
    pub tracer: TracerInfo<'a>,
    pub chunks: Vec<DdChunk<'a>>,
}

impl DdPayload<'_> {
    pub fn span_count(&self) -> usize {
        self.chunks.iter().map(|c| c.spans.len()).sum()
    }
}

/// The v0.7 `TracerPayload` fields other than its chunks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracerInfo<'a> {
    pub container_id: Str<'a>,
    pub language_name: Str<'a>,
    pub language_version: Str<'a>,
    pub tracer_version: Str<'a>,
    pub runtime_id: Str<'a>,
    pub env: Str<'a>,
    pub hostname: Str<'a>,
    pub app_version: Str<'a>,
    pub tags: Vec<(Str<'a>, Str<'a>)>,
}

/// Spans a tracer flushed together: one trace, or part of one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DdChunk<'a> {
    /// The chunk's sampling priority (v0.7 only).
    pub priority: Option<i32>,
    /// v0.7 only.
    pub origin: Str<'a>,
    /// v0.7 only.
    pub tags: Vec<(Str<'a>, Str<'a>)>,
    /// v0.7 only.
    pub dropped_trace: bool,
    pub spans: Vec<DdSpan<'a>>,
}

/// One Datadog span. Maps keep the payload's order; a key sent twice keeps
/// both entries (the later one wins in translation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DdSpan<'a> {
    pub service: Str<'a>,
    /// The operation name (`flask.request`).
    pub name: Str<'a>,
    /// What was operated on (`GET /users/<id>`).
    pub resource: Str<'a>,
    /// `web`, `http`, `sql`, `cache`, `custom`...
    pub span_type: Str<'a>,
    /// The low 64 bits of the trace id.
    pub trace_id: u64,
    pub span_id: u64,
    /// 0 for a root span.
    pub parent_id: u64,
    /// Unix nanoseconds.
    pub start: i64,
    /// Nanoseconds.
    pub duration: i64,
    /// Non-zero for a failed operation.
    pub error: i32,
    pub meta: Vec<(Str<'a>, Str<'a>)>,
    pub metrics: Vec<(Str<'a>, f64)>,
    /// Links sent in the span's `span_links` field (v0.4, v0.7, JSON).
    pub links: Vec<DdSpanLink<'a>>,
}

impl<'a> DdSpan<'a> {
    /// The last value of a meta key.
    pub fn meta(&self, key: &str) -> Option<&Str<'a>> {
        self.meta
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The last value of a metrics key.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }
}

/// A native span link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DdSpanLink<'a> {
    pub trace_id: u64,
    pub trace_id_high: u64,
    pub span_id: u64,
    pub attributes: Vec<(Str<'a>, Str<'a>)>,
    pub tracestate: Str<'a>,
    pub flags: u32,
}

/// Why a payload was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("{version} payloads are MessagePack: content type {content_type:?} is not accepted, send application/msgpack")]
    UnsupportedContentType {
        version: ApiVersion,
        content_type: String,
    },
    #[error("invalid MessagePack at byte {offset}: {message}")]
    Msgpack { offset: usize, message: String },
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("the payload would take more than {limit} bytes of memory once decoded")]
    Expansion { limit: usize },
}

impl DecodeError {
    /// The HTTP status the receiver answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            DecodeError::UnsupportedContentType { .. } => 415,
            DecodeError::Expansion { .. } => 413,
            DecodeError::Msgpack { .. } | DecodeError::Json(_) => 400,
        }
    }

    /// Prefixes the message with where in the payload it happened.
    fn context(self, at: impl FnOnce() -> String) -> DecodeError {
        match self {
            DecodeError::Msgpack { offset, message } => DecodeError::Msgpack {
                offset,
                message: format!("{}: {message}", at()),
            },
            other => other,
        }
    }
}

/// Decoded spans take more memory than their wire form: a v0.5 string-table
/// index of one byte can stand for a long string, an empty map for a whole
/// span. A request may take at most this many times its body size (plus
/// [`EXPANSION_SLACK`]) once decoded and translated; past that it is refused,
/// so no body can make the receiver allocate without bound.
pub const EXPANSION_FACTOR: usize = 64;
/// Memory any body may take once decoded, however small it is.
pub const EXPANSION_SLACK: usize = 4 << 20;
/// What one decoded span costs, apart from its strings and entries.
const SPAN_COST: usize = 256;
/// What one meta, metrics, tag or attribute entry costs, apart from its strings.
const ENTRY_COST: usize = 48;
/// What one chunk or link costs, apart from its contents.
const CHUNK_COST: usize = 64;
/// Resource attributes every resource gets besides the payload's tags.
const FIXED_RESOURCE_ATTRS: usize = 10;

/// The memory a body of `len` bytes may take once decoded.
pub fn expansion_limit(len: usize) -> usize {
    len.saturating_mul(EXPANSION_FACTOR)
        .saturating_add(EXPANSION_SLACK)
}

/// Room reserved up front for `n` announced elements: a few, then growth as
/// elements really arrive.
fn prealloc(n: usize) -> usize {
    n.min(64)
}

/// Memory left for one body's decoded form.
#[derive(Debug, Clone, Copy)]
struct Budget {
    limit: usize,
    left: usize,
}

impl Budget {
    fn for_body(len: usize) -> Budget {
        let limit = expansion_limit(len);
        Budget { limit, left: limit }
    }

    fn charge(&mut self, bytes: usize) -> Result<(), DecodeError> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(DecodeError::Expansion { limit: self.limit }),
        }
    }

    fn span(&mut self, s: &DdSpan<'_>) -> Result<(), DecodeError> {
        self.charge(
            SPAN_COST
                .saturating_add(s.service.len())
                .saturating_add(s.name.len())
                .saturating_add(s.resource.len())
                .saturating_add(s.span_type.len()),
        )
    }

    fn entry(&mut self, key: &str, value: &str) -> Result<(), DecodeError> {
        self.charge(
            ENTRY_COST
                .saturating_add(key.len())
                .saturating_add(value.len()),
        )
    }

    /// Every resource (one per distinct service) gets a copy of the
    /// payload-wide attributes: charge the copies.
    fn resources(&mut self, payload: &DdPayload<'_>) -> Result<(), DecodeError> {
        let t = &payload.tracer;
        let shared_bytes = t
            .tags
            .iter()
            .map(|(k, v)| ENTRY_COST + k.len() + v.len())
            .chain(
                [
                    &t.container_id,
                    &t.language_name,
                    &t.language_version,
                    &t.tracer_version,
                    &t.env,
                    &t.hostname,
                    &t.app_version,
                ]
                .map(|s| s.len()),
            )
            .fold(FIXED_RESOURCE_ATTRS * ENTRY_COST, usize::saturating_add);
        let mut services = std::collections::HashSet::new();
        for span in payload.chunks.iter().flat_map(|c| &c.spans) {
            services.insert(span.service.as_ref());
            if let Some(base) = span.meta("_dd.base_service") {
                services.insert(base.as_ref());
            }
        }
        self.charge(services.len().saturating_mul(shared_bytes))
    }
}

/// How a body of a version and content type is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Msgpack,
    Json,
    /// An unknown media type on v0.3/v0.4: JSON, else MessagePack, as the Agent tries.
    Either,
}

fn wire(version: ApiVersion, content_type: &str) -> Result<Wire, DecodeError> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match version {
        ApiVersion::V05 | ApiVersion::V07 => match media.as_str() {
            "" | "application/msgpack" => Ok(Wire::Msgpack),
            _ => Err(DecodeError::UnsupportedContentType {
                version,
                content_type: content_type.to_string(),
            }),
        },
        ApiVersion::V03 | ApiVersion::V04 => Ok(match media.as_str() {
            "application/msgpack" => Wire::Msgpack,
            // The Agent reads a missing content type as JSON.
            "" | "application/json" | "text/json" => Wire::Json,
            _ => Wire::Either,
        }),
    }
}

/// Decodes one trace request body. `content_type` is the request's header
/// (empty when absent).
pub fn decode_payload<'a>(
    version: ApiVersion,
    content_type: &str,
    body: &'a [u8],
) -> Result<DdPayload<'a>, DecodeError> {
    match (version, wire(version, content_type)?) {
        (ApiVersion::V05, _) => decode_v05(body),
        (ApiVersion::V07, _) => decode_v07(body),
        (_, Wire::Msgpack) => decode_v04(body),
        (_, Wire::Json) => decode_json(body),
        (_, Wire::Either) => decode_json(body).or_else(|_| decode_v04(body)),
    }
}

/// v0.3/v0.4 MessagePack: `[[{span}, ...], ...]`.
pub fn decode_v04(body: &[u8]) -> Result<DdPayload<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let traces = r.array_len("the payload (an array of traces)")?;
    let mut chunks = Vec::with_capacity(prealloc(traces));
    for t in 0..traces {
        let spans = r
            .array_or_nil_len("a trace (an array of spans)")
            .map_err(|e| e.context(|| format!("trace {t}")))?;
        r.budget.charge(CHUNK_COST)?;
        let mut chunk = DdChunk {
            spans: Vec::with_capacity(prealloc(spans)),
            ..DdChunk::default()
        };
        for s in 0..spans {
            if r.take_nil() {
                continue;
            }
            let span =
                span_map(&mut r).map_err(|e| e.context(|| format!("trace {t}, span {s}")))?;
            chunk.spans.push(span);
        }
        chunks.push(chunk);
    }
    finish(
        r,
        DdPayload {
            tracer: TracerInfo::default(),
            chunks,
        },
    )
}

/// The fields of a v0.5 span array, in order.
const V05_SPAN_FIELDS: usize = 12;

/// v0.5: `[[string, ...], [[[12 fields], ...], ...]]`, strings as indices
/// into the table.
pub fn decode_v05(body: &[u8]) -> Result<DdPayload<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let top = r.array_len("the payload ([string table, traces])")?;
    if top != 2 {
        return Err(r.error_at(
            0,
            format!("a v0.5 payload is [string table, traces]: found an array of {top} elements"),
        ));
    }
    let n = r.array_len("the string table")?;
    let mut table = Vec::with_capacity(prealloc(n));
    for i in 0..n {
        r.budget.charge(std::mem::size_of::<Str<'_>>())?;
        table.push(
            r.str("a string")
                .map_err(|e| e.context(|| format!("string table entry {i}")))?,
        );
    }
    let traces = r.array_len("the traces")?;
    let mut chunks = Vec::with_capacity(prealloc(traces));
    for t in 0..traces {
        let spans = r
            .array_len("a trace (an array of spans)")
            .map_err(|e| e.context(|| format!("trace {t}")))?;
        r.budget.charge(CHUNK_COST)?;
        let mut chunk = DdChunk {
            spans: Vec::with_capacity(prealloc(spans)),
            ..DdChunk::default()
        };
        for s in 0..spans {
            let span = span_v05(&mut r, &table)
                .map_err(|e| e.context(|| format!("trace {t}, span {s}")))?;
            chunk.spans.push(span);
        }
        chunks.push(chunk);
    }
    finish(
        r,
        DdPayload {
            tracer: TracerInfo::default(),
            chunks,
        },
    )
}

fn span_v05<'a>(r: &mut Reader<'a>, table: &[Str<'a>]) -> Result<DdSpan<'a>, DecodeError> {
    let start = r.pos;
    let n = r.array_len("a span (an array of 12 fields)")?;
    if n != V05_SPAN_FIELDS {
        return Err(r.error_at(
            start,
            format!("a v0.5 span has exactly {V05_SPAN_FIELDS} fields, found {n}"),
        ));
    }
    let mut span = DdSpan {
        service: r.indexed(table, "service")?,
        name: r.indexed(table, "name")?,
        resource: r.indexed(table, "resource")?,
        trace_id: r.uint64("trace_id")?,
        span_id: r.uint64("span_id")?,
        parent_id: r.uint64("parent_id")?,
        start: r.int64("start")?,
        duration: r.int64("duration")?,
        error: r.int32("error")?,
        ..DdSpan::default()
    };
    let n = r.map_len("meta")?;
    span.meta.reserve(prealloc(n));
    for _ in 0..n {
        let k = r.indexed(table, "meta key")?;
        let v = r.indexed(table, "meta value")?;
        r.budget.entry(&k, &v)?;
        span.meta.push((k, v));
    }
    let n = r.map_len("metrics")?;
    span.metrics.reserve(prealloc(n));
    for _ in 0..n {
        let k = r.indexed(table, "metrics key")?;
        let v = r.float64("metrics value")?;
        r.budget.entry(&k, "")?;
        span.metrics.push((k, v));
    }
    span.span_type = r.indexed(table, "type")?;
    r.budget.span(&span)?;
    Ok(span)
}

/// v0.7: one `TracerPayload` map.
pub fn decode_v07(body: &[u8]) -> Result<DdPayload<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let mut payload = DdPayload::default();
    let n = r.map_len("the payload (a TracerPayload map)")?;
    for _ in 0..n {
        let key = r.key()?;
        let t = &mut payload.tracer;
        match key {
            b"container_id" => t.container_id = r.str("container_id")?,
            b"language_name" => t.language_name = r.str("language_name")?,
            b"language_version" => t.language_version = r.str("language_version")?,
            b"tracer_version" => t.tracer_version = r.str("tracer_version")?,
            b"runtime_id" => t.runtime_id = r.str("runtime_id")?,
            b"env" => t.env = r.str("env")?,
            b"hostname" => t.hostname = r.str("hostname")?,
            b"app_version" => t.app_version = r.str("app_version")?,
            b"tags" => t.tags = r.string_map("tags")?,
            b"chunks" => {
                let chunks = r.array_or_nil_len("chunks")?;
                payload.chunks.reserve(prealloc(chunks));
                for c in 0..chunks {
                    if r.take_nil() {
                        continue;
                    }
                    let chunk =
                        chunk_map(&mut r).map_err(|e| e.context(|| format!("chunk {c}")))?;
                    payload.chunks.push(chunk);
                }
            }
            _ => r.skip()?,
        }
    }
    finish(r, payload)
}

fn chunk_map<'a>(r: &mut Reader<'a>) -> Result<DdChunk<'a>, DecodeError> {
    r.budget.charge(CHUNK_COST)?;
    let mut chunk = DdChunk::default();
    let n = r.map_len("a chunk (a TraceChunk map)")?;
    for _ in 0..n {
        match r.key()? {
            b"priority" => chunk.priority = Some(r.int32("priority")?),
            b"origin" => chunk.origin = r.str("origin")?,
            b"tags" => chunk.tags = r.string_map("tags")?,
            b"dropped_trace" => chunk.dropped_trace = r.bool("dropped_trace")?,
            b"spans" => {
                let spans = r.array_or_nil_len("spans")?;
                chunk.spans.reserve(prealloc(spans));
                for s in 0..spans {
                    if r.take_nil() {
                        continue;
                    }
                    let span = span_map(r).map_err(|e| e.context(|| format!("span {s}")))?;
                    chunk.spans.push(span);
                }
            }
            _ => r.skip()?,
        }
    }
    Ok(chunk)
}

/// A span as a map (v0.4, v0.7); unknown keys (`meta_struct`,
/// `span_events`) are skipped.
fn span_map<'a>(r: &mut Reader<'a>) -> Result<DdSpan<'a>, DecodeError> {
    let mut span = DdSpan::default();
    let n = r.map_len("a span (a map)")?;
    for _ in 0..n {
        match r.key()? {
            b"service" => span.service = r.str("service")?,
            b"name" => span.name = r.str("name")?,
            b"resource" => span.resource = r.str("resource")?,
            b"type" => span.span_type = r.str("type")?,
            b"trace_id" => span.trace_id = r.uint64("trace_id")?,
            b"span_id" => span.span_id = r.uint64("span_id")?,
            b"parent_id" => span.parent_id = r.uint64("parent_id")?,
            b"start" => span.start = r.int64("start")?,
            b"duration" => span.duration = r.int64("duration")?,
            b"error" => span.error = r.int32("error")?,
            b"meta" => span.meta = r.string_map("meta")?,
            b"metrics" => {
                let n = r.map_or_nil_len("metrics")?;
                span.metrics = Vec::with_capacity(prealloc(n));
                for _ in 0..n {
                    let k = r.str("metrics key")?;
                    let v = r.float64("metrics value")?;
                    r.budget.entry(&k, "")?;
                    span.metrics.push((k, v));
                }
            }
            b"span_links" => {
                let n = r.array_or_nil_len("span_links")?;
                span.links = Vec::with_capacity(prealloc(n));
                for l in 0..n {
                    if r.take_nil() {
                        continue;
                    }
                    let link = link_map(r).map_err(|e| e.context(|| format!("span link {l}")))?;
                    span.links.push(link);
                }
            }
            _ => r.skip()?,
        }
    }
    r.budget.span(&span)?;
    Ok(span)
}

fn link_map<'a>(r: &mut Reader<'a>) -> Result<DdSpanLink<'a>, DecodeError> {
    let mut link = DdSpanLink::default();
    let n = r.map_len("a span link (a map)")?;
    for _ in 0..n {
        match r.key()? {
            b"trace_id" => link.trace_id = r.uint64("trace_id")?,
            b"trace_id_high" => link.trace_id_high = r.uint64("trace_id_high")?,
            b"span_id" => link.span_id = r.uint64("span_id")?,
            b"attributes" => link.attributes = r.string_map("attributes")?,
            b"tracestate" => link.tracestate = r.str("tracestate")?,
            b"flags" => link.flags = r.uint32("flags")?,
            _ => r.skip()?,
        }
    }
    r.budget
        .charge(CHUNK_COST.saturating_add(link.tracestate.len()))?;
    Ok(link)
}

/// Charges the per-resource copies of payload-wide attributes.
fn finish<'a>(mut r: Reader<'a>, payload: DdPayload<'a>) -> Result<DdPayload<'a>, DecodeError> {
    r.budget.resources(&payload)?;
    Ok(payload)
}

/// A MessagePack cursor over a borrowed body. Every read checks bounds and
/// reports the byte offset where it failed.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    budget: Budget,
}

/// What a marker announces, for error messages.
fn kind(m: Marker) -> &'static str {
    match m {
        Marker::Null => "nil",
        Marker::True | Marker::False => "a boolean",
        Marker::FixPos(_)
        | Marker::FixNeg(_)
        | Marker::U8
        | Marker::U16
        | Marker::U32
        | Marker::U64
        | Marker::I8
        | Marker::I16
        | Marker::I32
        | Marker::I64 => "an integer",
        Marker::F32 | Marker::F64 => "a float",
        Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => "a string",
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => "binary data",
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => "an array",
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => "a map",
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16
        | Marker::Ext8
        | Marker::Ext16
        | Marker::Ext32 => "an extension value",
        Marker::Reserved => "the reserved byte 0xc1",
    }
}

/// An integer as sent, before it is fitted to a field.
enum Int {
    Unsigned(u64),
    Signed(i64),
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            budget: Budget::for_body(buf.len()),
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn error_at(&self, offset: usize, message: impl Into<String>) -> DecodeError {
        DecodeError::Msgpack {
            offset,
            message: message.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        match self.buf.get(self.pos..).and_then(|rest| rest.get(..n)) {
            Some(bytes) => {
                self.pos += n;
                Ok(bytes)
            }
            None => Err(self.error_at(
                self.pos,
                format!(
                    "the payload ends too early: {n} more bytes needed, {} left",
                    self.remaining()
                ),
            )),
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.be()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.be()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.be()?))
    }

    fn marker(&mut self) -> Result<Marker, DecodeError> {
        let b = self.take(1).map_err(|_| {
            self.error_at(self.pos, "the payload ends too early: a value is missing")
        })?[0];
        Ok(Marker::from_u8(b))
    }

    /// Consumes a nil if one is next.
    fn take_nil(&mut self) -> bool {
        if self.buf.get(self.pos) == Some(&0xc0) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn wrong_type(&self, at: usize, what: &str, expected: &str, found: Marker) -> DecodeError {
        self.error_at(
            at,
            format!("{what}: expected {expected}, found {}", kind(found)),
        )
    }

    /// A container length, refused when the remaining bytes could not hold
    /// that many elements (each takes at least one byte), so a forged
    /// header cannot make the decoder reserve memory it will never fill.
    fn fit(
        &self,
        at: usize,
        what: &str,
        n: usize,
        per_element: usize,
    ) -> Result<usize, DecodeError> {
        if n.saturating_mul(per_element) > self.remaining() {
            return Err(self.error_at(
                at,
                format!(
                    "{what}: {n} elements announced but only {} bytes left",
                    self.remaining()
                ),
            ));
        }
        Ok(n)
    }

    fn array_len(&mut self, what: &str) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = match self.marker()? {
            Marker::FixArray(n) => n as usize,
            Marker::Array16 => self.u16()? as usize,
            Marker::Array32 => self.u32()? as usize,
            m => return Err(self.wrong_type(at, what, "an array", m)),
        };
        self.fit(at, what, n, 1)
    }

    fn array_or_nil_len(&mut self, what: &str) -> Result<usize, DecodeError> {
        if self.take_nil() {
            return Ok(0);
        }
        self.array_len(what)
    }

    fn map_len(&mut self, what: &str) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = match self.marker()? {
            Marker::FixMap(n) => n as usize,
            Marker::Map16 => self.u16()? as usize,
            Marker::Map32 => self.u32()? as usize,
            m => return Err(self.wrong_type(at, what, "a map", m)),
        };
        self.fit(at, what, n, 2)
    }

    fn map_or_nil_len(&mut self, what: &str) -> Result<usize, DecodeError> {
        if self.take_nil() {
            return Ok(0);
        }
        self.map_len(what)
    }

    /// The bytes of a string or binary value, after its marker.
    fn raw_after(&mut self, m: Marker) -> Result<Option<&'a [u8]>, DecodeError> {
        let n = match m {
            Marker::FixStr(n) => n as usize,
            Marker::Str8 | Marker::Bin8 => self.u8()? as usize,
            Marker::Str16 | Marker::Bin16 => self.u16()? as usize,
            Marker::Str32 | Marker::Bin32 => self.u32()? as usize,
            _ => return Ok(None),
        };
        self.take(n).map(Some)
    }

    /// A string, binary (read as text) or nil (the empty string).
    fn str(&mut self, what: &str) -> Result<Str<'a>, DecodeError> {
        let at = self.pos;
        let m = self.marker()?;
        if m == Marker::Null {
            return Ok(Cow::Borrowed(""));
        }
        match self.raw_after(m)? {
            Some(bytes) => Ok(String::from_utf8_lossy(bytes)),
            None => Err(self.wrong_type(at, what, "a string", m)),
        }
    }

    /// A map key: a string or binary, compared as bytes.
    fn key(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let m = self.marker()?;
        match self.raw_after(m)? {
            Some(bytes) => Ok(bytes),
            None => Err(self.wrong_type(at, "a map key", "a string", m)),
        }
    }

    /// A map of strings to strings, or nil.
    fn string_map(&mut self, what: &str) -> Result<Vec<(Str<'a>, Str<'a>)>, DecodeError> {
        let n = self.map_or_nil_len(what)?;
        let mut out = Vec::with_capacity(prealloc(n));
        for _ in 0..n {
            let k = self.str(what)?;
            let v = self.str(what)?;
            self.budget.entry(&k, &v)?;
            out.push((k, v));
        }
        Ok(out)
    }

    /// Any integer, or None for nil.
    fn int(&mut self, what: &str, expected: &str) -> Result<Option<Int>, DecodeError> {
        let at = self.pos;
        Ok(Some(match self.marker()? {
            Marker::Null => return Ok(None),
            Marker::FixPos(n) => Int::Unsigned(n.into()),
            Marker::FixNeg(n) => Int::Signed(n.into()),
            Marker::U8 => Int::Unsigned(self.u8()?.into()),
            Marker::U16 => Int::Unsigned(self.u16()?.into()),
            Marker::U32 => Int::Unsigned(self.u32()?.into()),
            Marker::U64 => Int::Unsigned(self.u64()?),
            Marker::I8 => Int::Signed((self.u8()? as i8).into()),
            Marker::I16 => Int::Signed((self.u16()? as i16).into()),
            Marker::I32 => Int::Signed((self.u32()? as i32).into()),
            Marker::I64 => Int::Signed(self.u64()? as i64),
            m => return Err(self.wrong_type(at, what, expected, m)),
        }))
    }

    /// An id: unsigned, or signed reinterpreted as its 64 bits (tracers
    /// whose language lacks unsigned integers send ids above 2^63 as
    /// negative numbers); nil is 0.
    fn uint64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(match self.int(what, "an integer")? {
            None => 0,
            Some(Int::Unsigned(u)) => u,
            Some(Int::Signed(i)) => i as u64,
        })
    }

    /// A signed 64-bit number; unsigned values above `i64::MAX` are refused.
    fn int64(&mut self, what: &str) -> Result<i64, DecodeError> {
        let at = self.pos;
        Ok(match self.int(what, "an integer")? {
            None => 0,
            Some(Int::Signed(i)) => i,
            Some(Int::Unsigned(u)) => i64::try_from(u).map_err(|_| {
                self.error_at(
                    at,
                    format!("{what}: {u} does not fit a signed 64-bit integer"),
                )
            })?,
        })
    }

    fn int32(&mut self, what: &str) -> Result<i32, DecodeError> {
        let at = self.pos;
        let out_of_range = |r: &Self, v: &dyn fmt::Display| {
            r.error_at(
                at,
                format!("{what}: {v} does not fit a signed 32-bit integer"),
            )
        };
        Ok(match self.int(what, "an integer")? {
            None => 0,
            Some(Int::Signed(i)) => i32::try_from(i).map_err(|_| out_of_range(self, &i))?,
            Some(Int::Unsigned(u)) => i32::try_from(u).map_err(|_| out_of_range(self, &u))?,
        })
    }

    fn uint32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let at = self.pos;
        let out_of_range = |r: &Self, v: &dyn fmt::Display| {
            r.error_at(
                at,
                format!("{what}: {v} does not fit an unsigned 32-bit integer"),
            )
        };
        Ok(match self.int(what, "an integer")? {
            None => 0,
            Some(Int::Signed(i)) => u32::try_from(i).map_err(|_| out_of_range(self, &i))?,
            Some(Int::Unsigned(u)) => u32::try_from(u).map_err(|_| out_of_range(self, &u))?,
        })
    }

    /// A number of any encoding (encoders shrink whole floats to integers);
    /// nil is 0.
    fn float64(&mut self, what: &str) -> Result<f64, DecodeError> {
        match self.buf.get(self.pos).copied().map(Marker::from_u8) {
            Some(Marker::F32) => {
                self.pos += 1;
                Ok(f32::from_bits(self.u32()?).into())
            }
            Some(Marker::F64) => {
                self.pos += 1;
                Ok(f64::from_bits(self.u64()?))
            }
            _ => Ok(match self.int(what, "a number")? {
                None => 0.0,
                Some(Int::Unsigned(u)) => u as f64,
                Some(Int::Signed(i)) => i as f64,
            }),
        }
    }

    fn bool(&mut self, what: &str) -> Result<bool, DecodeError> {
        let at = self.pos;
        match self.marker()? {
            Marker::Null | Marker::False => Ok(false),
            Marker::True => Ok(true),
            m => Err(self.wrong_type(at, what, "a boolean", m)),
        }
    }

    /// A v0.5 string-table reference.
    fn indexed(&mut self, table: &[Str<'a>], what: &str) -> Result<Str<'a>, DecodeError> {
        let at = self.pos;
        let i = self.uint32(what)? as usize;
        match table.get(i) {
            Some(s) => Ok(s.clone()),
            None => Err(self.error_at(
                at,
                format!(
                    "{what}: string table index {i} out of range, the table has {} strings",
                    table.len()
                ),
            )),
        }
    }

    /// Skips one value of any shape. Iterative: nesting depth costs nothing.
    fn skip(&mut self) -> Result<(), DecodeError> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let m = self.marker()?;
            let (extra_values, bytes): (u64, usize) = match m {
                Marker::FixArray(n) => (n.into(), 0),
                Marker::Array16 => (self.u16()?.into(), 0),
                Marker::Array32 => (self.u32()?.into(), 0),
                Marker::FixMap(n) => (2 * u64::from(n), 0),
                Marker::Map16 => (2 * u64::from(self.u16()?), 0),
                Marker::Map32 => (2 * u64::from(self.u32()?), 0),
                Marker::FixStr(n) => (0, n as usize),
                Marker::Str8 | Marker::Bin8 => (0, self.u8()? as usize),
                Marker::Str16 | Marker::Bin16 => (0, self.u16()? as usize),
                Marker::Str32 | Marker::Bin32 => (0, self.u32()? as usize),
                Marker::Null
                | Marker::True
                | Marker::False
                | Marker::FixPos(_)
                | Marker::FixNeg(_) => (0, 0),
                Marker::U8 | Marker::I8 => (0, 1),
                Marker::U16 | Marker::I16 => (0, 2),
                Marker::U32 | Marker::I32 | Marker::F32 => (0, 4),
                Marker::U64 | Marker::I64 | Marker::F64 => (0, 8),
                Marker::FixExt1 => (0, 2),
                Marker::FixExt2 => (0, 3),
                Marker::FixExt4 => (0, 5),
                Marker::FixExt8 => (0, 9),
                Marker::FixExt16 => (0, 17),
                Marker::Ext8 => (0, self.u8()? as usize + 1),
                Marker::Ext16 => (0, self.u16()? as usize + 1),
                Marker::Ext32 => (0, (self.u32()? as usize).saturating_add(1)),
                Marker::Reserved => {
                    return Err(self.error_at(self.pos - 1, "the reserved byte 0xc1 is not a value"))
                }
            };
            self.take(bytes)?;
            pending = pending.saturating_add(extra_values);
            // Each value takes at least one byte: a count past what is left is a lie.
            if pending > self.remaining() as u64 {
                return Err(self.error_at(
                    self.pos,
                    format!(
                        "{} more values announced but only {} bytes left",
                        pending,
                        self.remaining()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Deserializes a JSON object as its entries, in order.
struct Entries<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// A span as the Agent's JSON decoder reads it (`encoding/json` on its
/// `pb.Span`): absent or null fields are zero, unknown fields ignored.
#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonSpan {
    service: Option<String>,
    name: Option<String>,
    resource: Option<String>,
    #[serde(rename = "type")]
    span_type: Option<String>,
    trace_id: Option<u64>,
    span_id: Option<u64>,
    parent_id: Option<u64>,
    start: Option<i64>,
    duration: Option<i64>,
    error: Option<i32>,
    meta: Option<Entries<Option<String>>>,
    metrics: Option<Entries<Option<f64>>>,
    span_links: Option<Vec<Option<JsonLink>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonLink {
    trace_id: Option<u64>,
    trace_id_high: Option<u64>,
    span_id: Option<u64>,
    attributes: Option<Entries<Option<String>>>,
    tracestate: Option<String>,
    flags: Option<u32>,
}

/// The JSON variant of v0.3/v0.4: `[[{span}, ...], ...]`.
pub fn decode_json(body: &[u8]) -> Result<DdPayload<'static>, DecodeError> {
    // The JSON decoder allocates as it parses: bound what it may allocate by
    // counting, before parsing, the objects, elements and fields the text
    // can hold at most.
    let mut budget = Budget::for_body(body.len());
    let (mut values, mut fields) = (0usize, 0usize);
    for &b in body {
        match b {
            b'{' | b',' => values += 1,
            b':' => fields += 1,
            _ => {}
        }
    }
    budget.charge(values.saturating_mul(SPAN_COST))?;
    budget.charge(fields.saturating_mul(ENTRY_COST))?;
    let traces: Vec<Option<Vec<Option<JsonSpan>>>> =
        serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    let chunks = traces
        .into_iter()
        .map(|t| DdChunk {
            spans: t
                .unwrap_or_default()
                .into_iter()
                .flatten()
                .map(json_span)
                .collect(),
            ..DdChunk::default()
        })
        .collect();
    let payload = DdPayload {
        tracer: TracerInfo::default(),
        chunks,
    };
    budget.resources(&payload)?;
    Ok(payload)
}

fn owned(s: Option<String>) -> Str<'static> {
    Cow::Owned(s.unwrap_or_default())
}

fn strings(m: Option<Entries<Option<String>>>) -> Vec<(Str<'static>, Str<'static>)> {
    m.map(|e| e.0)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (Cow::Owned(k), owned(v)))
        .collect()
}

fn json_span(s: JsonSpan) -> DdSpan<'static> {
    DdSpan {
        service: owned(s.service),
        name: owned(s.name),
        resource: owned(s.resource),
        span_type: owned(s.span_type),
        trace_id: s.trace_id.unwrap_or_default(),
        span_id: s.span_id.unwrap_or_default(),
        parent_id: s.parent_id.unwrap_or_default(),
        start: s.start.unwrap_or_default(),
        duration: s.duration.unwrap_or_default(),
        error: s.error.unwrap_or_default(),
        meta: strings(s.meta),
        metrics: s
            .metrics
            .map(|e| e.0)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (Cow::Owned(k), v.unwrap_or_default()))
            .collect(),
        links: s
            .span_links
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .map(|l| DdSpanLink {
                trace_id: l.trace_id.unwrap_or_default(),
                trace_id_high: l.trace_id_high.unwrap_or_default(),
                span_id: l.span_id.unwrap_or_default(),
                attributes: strings(l.attributes),
                tracestate: owned(l.tracestate),
                flags: l.flags.unwrap_or_default(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datadog::tests::{map, s, tags, Mp};

    fn v04(spans: Vec<Mp>) -> Vec<u8> {
        Mp::Arr(vec![Mp::Arr(spans)]).encode()
    }

    fn one_span(body: &[u8]) -> DdSpan<'_> {
        let mut p = decode_v04(body).unwrap();
        assert_eq!(p.chunks.len(), 1);
        assert_eq!(p.chunks[0].spans.len(), 1);
        p.chunks.remove(0).spans.remove(0)
    }

    #[test]
    fn content_types_pick_the_decoder() {
        assert_eq!(
            wire(ApiVersion::V04, "application/msgpack").unwrap(),
            Wire::Msgpack
        );
        assert_eq!(
            wire(ApiVersion::V04, "Application/MsgPack; charset=x").unwrap(),
            Wire::Msgpack
        );
        assert_eq!(wire(ApiVersion::V03, "").unwrap(), Wire::Json);
        assert_eq!(wire(ApiVersion::V03, "text/json").unwrap(), Wire::Json);
        assert_eq!(
            wire(ApiVersion::V04, "application/x-foo").unwrap(),
            Wire::Either
        );
        assert_eq!(wire(ApiVersion::V05, "").unwrap(), Wire::Msgpack);
        assert_eq!(
            wire(ApiVersion::V07, "application/msgpack").unwrap(),
            Wire::Msgpack
        );
        let e = wire(ApiVersion::V05, "application/json").unwrap_err();
        assert_eq!(e.http_status(), 415);
        assert_eq!(ApiVersion::from_path("/v0.5/traces"), Some(ApiVersion::V05));
        assert_eq!(ApiVersion::from_path("/v0.5/traces/"), None);
    }

    #[test]
    fn strings_borrow_repair_and_accept_binary_and_nil() {
        let body = v04(vec![Mp::Map(vec![
            (Mp::Bin(b"service".to_vec()), Mp::Bin(b"svc".to_vec())),
            (s("name"), Mp::Raw(vec![0xa3, b'o', 0xff, b'p'])),
            (s("resource"), Mp::Nil),
            (
                s("meta"),
                Mp::Map(vec![
                    (s("k"), Mp::Nil),
                    (s("k2"), s("v2")),
                    (s("k"), s("last")),
                ]),
            ),
        ])]);
        let span = one_span(&body);
        assert_eq!(span.service, "svc");
        assert!(matches!(span.service, Cow::Borrowed(_)));
        assert_eq!(span.name, "o\u{fffd}p");
        assert!(matches!(span.name, Cow::Owned(_)));
        assert_eq!(span.resource, "");
        assert_eq!(span.meta.len(), 3);
        assert_eq!(span.meta("k").map(|v| v.as_ref()), Some("last"));
    }

    #[test]
    fn unknown_values_of_any_shape_and_depth_are_skipped() {
        // 100 000 nested arrays: no recursion, no stack overflow.
        let mut deep = vec![0x91u8; 100_000];
        deep.push(0xc0);
        let fixext4 = Mp::Raw(vec![0xd6, 0x01, 1, 2, 3, 4]);
        let ext8 = Mp::Raw(vec![0xc7, 0x02, 0x05, 9, 9]);
        let body = v04(vec![map(vec![
            ("meta_struct", Mp::Raw(deep)),
            (
                "span_events",
                Mp::Arr(vec![fixext4, ext8, Mp::F32(1.0), Mp::Bin(vec![1, 2])]),
            ),
            ("span_id", Mp::Uint(9)),
        ])]);
        let span = one_span(&body);
        assert_eq!(span.span_id, 9, "{span:?}");

        let reserved = v04(vec![map(vec![("x", Mp::Raw(vec![0xc1]))])]);
        let e = decode_v04(&reserved).unwrap_err();
        assert!(
            e.to_string()
                .contains("the reserved byte 0xc1 is not a value"),
            "{e}"
        );
        // A forged count inside a skipped value fails at once, without looping.
        let forged = v04(vec![map(vec![(
            "x",
            Mp::Raw(vec![0xdf, 0xff, 0xff, 0xff, 0xff]),
        )])]);
        let e = decode_v04(&forged).unwrap_err();
        assert!(
            e.to_string()
                .contains("8589934590 more values announced but only 0 bytes left"),
            "{e}"
        );
    }

    #[test]
    fn errors_say_where() {
        let body = Mp::Arr(vec![
            Mp::Arr(vec![]),
            Mp::Arr(vec![map(vec![("span_id", s("x"))])]),
        ])
        .encode();
        assert_eq!(
            decode_v04(&body).unwrap_err(),
            DecodeError::Msgpack {
                offset: 12,
                message: "trace 1, span 0: span_id: expected an integer, found a string".into()
            }
        );
        assert_eq!(
            decode_v04(&[]).unwrap_err().to_string(),
            "invalid MessagePack at byte 0: the payload ends too early: a value is missing"
        );
    }

    #[test]
    fn v07_chunks_spans_and_native_links() {
        let link = map(vec![
            ("trace_id", Mp::Uint(5)),
            ("trace_id_high", Mp::Uint(6)),
            ("span_id", Mp::Uint(7)),
            ("attributes", tags(&[("reason", "terminated_context")])),
            ("tracestate", s("dd=s:1")),
            ("flags", Mp::U32(0x8000_0001)),
        ]);
        let span = map(vec![
            ("span_id", Mp::Uint(1)),
            ("span_links", Mp::Arr(vec![link, Mp::Nil])),
        ]);
        let body = map(vec![
            ("env", s("prod")),
            (
                "chunks",
                Mp::Arr(vec![
                    Mp::Nil,
                    map(vec![
                        ("priority", Mp::Int(-1)),
                        ("origin", s("rum")),
                        ("spans", Mp::Arr(vec![Mp::Nil, span])),
                        ("tags", tags(&[("_dd.p.tid", "00000000000000ab")])),
                        ("dropped_trace", Mp::Bool(true)),
                    ]),
                ]),
            ),
        ])
        .encode();
        let p = decode_v07(&body).unwrap();
        assert_eq!(p.tracer.env, "prod");
        assert_eq!(p.chunks.len(), 1);
        let c = &p.chunks[0];
        assert_eq!(
            (c.priority, c.origin.as_ref(), c.dropped_trace),
            (Some(-1), "rum", true)
        );
        assert_eq!(
            c.tags,
            vec![(
                Cow::Borrowed("_dd.p.tid"),
                Cow::Borrowed("00000000000000ab")
            )]
        );
        assert_eq!(
            c.spans[0].links,
            vec![DdSpanLink {
                trace_id: 5,
                trace_id_high: 6,
                span_id: 7,
                attributes: vec![(Cow::Borrowed("reason"), Cow::Borrowed("terminated_context"))],
                tracestate: Cow::Borrowed("dd=s:1"),
                flags: 0x8000_0001,
            }]
        );
        assert_eq!(p.span_count(), 1);
        let e = decode_v07(&Mp::Arr(vec![]).encode()).unwrap_err();
        assert!(
            e.to_string().contains("expected a map, found an array"),
            "{e}"
        );
    }

    #[test]
    fn json_nulls_links_and_unknown_fields() {
        let body =
            br#"[null, [null, {"service": "s", "trace_id": 18446744073709551615, "span_id": 2,
            "parent_id": null, "meta": {"a": "1", "b": null}, "metrics": {"m": 2, "n": null},
            "span_links": [{"trace_id": 3, "span_id": 4, "attributes": {"x": "y"}}, null],
            "future": {"nested": [1, 2]}}]]"#;
        let p = decode_json(body).unwrap();
        assert_eq!(p.chunks.len(), 2);
        let span = &p.chunks[1].spans[0];
        assert_eq!(
            (span.trace_id, span.span_id, span.parent_id),
            (u64::MAX, 2, 0)
        );
        assert_eq!(span.meta("b").map(|v| v.as_ref()), Some(""));
        assert_eq!(span.metric("m"), Some(2.0));
        assert_eq!(span.metric("n"), Some(0.0));
        assert_eq!(span.links.len(), 1);
        assert_eq!(span.links[0].attributes[0].1, "y");
        for bad in [
            &b"{}"[..],
            b"[[{\"span_id\": 1.5}]]",
            b"[[{\"error\": 3000000000}]]",
            b"[[{\"meta\": {\"a\": 1}}]]",
        ] {
            assert!(
                matches!(decode_json(bad), Err(DecodeError::Json(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn expansion_bombs_are_refused_and_real_payloads_are_not() {
        use crate::datadog::tests::{root_and_child, v04_payload, v05_payload};
        // One long string, referenced by 100 000 meta entries.
        let long = "x".repeat(1 << 20);
        let entries: Vec<(Mp, Mp)> = (0..100_000).map(|_| (Mp::Uint(0), Mp::Uint(0))).collect();
        let mut fields = vec![Mp::Uint(0); 9];
        fields.extend([Mp::Map(entries), Mp::Map(vec![]), Mp::Uint(0)]);
        let bomb = Mp::Arr(vec![
            Mp::Arr(vec![s(&long)]),
            Mp::Arr(vec![Mp::Arr(vec![Mp::Arr(fields)])]),
        ])
        .encode();
        let e = decode_v05(&bomb).unwrap_err();
        assert_eq!(
            e,
            DecodeError::Expansion {
                limit: expansion_limit(bomb.len())
            }
        );
        assert_eq!(e.http_status(), 413);
        // A million empty span maps.
        let mut flood = vec![0xdd, 0, 0, 0, 1, 0xdd, 0, 0x0f, 0x42, 0x40];
        flood.extend(std::iter::repeat_n(0x80u8, 1_000_000));
        assert!(matches!(
            decode_v04(&flood),
            Err(DecodeError::Expansion { .. })
        ));
        let json = format!("[[{}{{}}]]", "{},".repeat(1_000_000));
        assert!(matches!(
            decode_json(json.as_bytes()),
            Err(DecodeError::Expansion { .. })
        ));
        // Many payload tags, copied into many resources (one per service).
        let spans: Vec<Mp> = (0..20_000)
            .map(|i| map(vec![("service", s(&i.to_string()))]))
            .collect();
        let tag_entries: Vec<(Mp, Mp)> = (0..20_000).map(|i| (s(&i.to_string()), s("v"))).collect();
        let v07 = map(vec![
            ("tags", Mp::Map(tag_entries)),
            (
                "chunks",
                Mp::Arr(vec![map(vec![("spans", Mp::Arr(spans))])]),
            ),
        ])
        .encode();
        assert!(matches!(
            decode_v07(&v07),
            Err(DecodeError::Expansion { .. })
        ));

        // Real-shaped payloads of any size pass.
        let traces: Vec<_> = (0..2_000).map(|_| root_and_child()).collect();
        assert_eq!(
            decode_v05(&v05_payload(&traces)).unwrap().span_count(),
            4_000
        );
        assert_eq!(
            decode_v04(&v04_payload(&traces)).unwrap().span_count(),
            4_000
        );
    }

    #[test]
    fn every_prefix_of_a_valid_payload_is_an_error_not_a_panic() {
        let body = crate::datadog::tests::v05_payload(&[crate::datadog::tests::root_and_child()]);
        assert!(decode_v05(&body).is_ok());
        for cut in 0..body.len() {
            assert!(decode_v05(&body[..cut]).is_err(), "prefix of {cut} bytes");
        }
        let body = crate::datadog::tests::v04_payload(&[crate::datadog::tests::root_and_child()]);
        for cut in 0..body.len() {
            assert!(decode_v04(&body[..cut]).is_err(), "prefix of {cut} bytes");
        }
    }
}
