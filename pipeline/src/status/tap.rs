//! The trace tap: the most recent batches leaving a traces pipeline, kept as
//! they are (a clone of the batch, which shares its allocation), bounded in
//! spans, and assembled into traces only when someone asks.
//!
//! Cost in the data path while a status page runs: one `Arc` clone and one
//! short mutex hold per batch. Nothing is decoded until the page or the API
//! asks; the assembled index is cached until new data arrives, and dropped
//! when nobody asked for a while ([`TapBuffer::expire_cache`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans};
use serde::Serialize;
use serde_json::{Map, Value as Json};

use super::hub::StatusHub;
use crate::consumer::{Capabilities, ConsumeError, Consumer, DynConsumer};
use crate::data::{Batch, Payload};

/// The instrumentation scope of the eBPF receiver's spans.
pub const EBPF_SCOPE: &str = "weft.ebpf";
const RULE_ATTRIBUTE: &str = "weft.autotracing.rule";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Tapped {
    /// Order of arrival in this tap.
    seq: u64,
    batch: Batch,
    spans: usize,
}

#[derive(Default)]
struct Ring {
    batches: VecDeque<Tapped>,
    spans: usize,
}

/// The recent traffic of one traces pipeline.
pub struct TapBuffer {
    pipeline: String,
    on: Arc<AtomicBool>,
    max_spans: Arc<AtomicUsize>,
    ring: Mutex<Ring>,
    /// Shared by every tap of the hub, so traces of several pipelines sort
    /// newest first together.
    seq: Arc<AtomicU64>,
    /// Spans not kept because their batch alone was larger than the tap.
    skipped_spans: AtomicU64,
    /// The assembled index: the newest batch it holds, when it was built.
    cache: Mutex<Option<(u64, Instant, Arc<TraceIndex>)>>,
    /// One index build at a time; requests arriving meanwhile reuse it.
    building: Mutex<()>,
    last_query: Mutex<Option<Instant>>,
}

/// An index younger than this is reused even when newer batches arrived: a page
/// polling every 2 s under steady traffic rebuilds it at most once a second.
const MIN_REBUILD: Duration = Duration::from_secs(1);

impl std::fmt::Debug for TapBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (spans, batches) = self.held();
        f.debug_struct("TapBuffer")
            .field("pipeline", &self.pipeline)
            .field("spans", &spans)
            .field("batches", &batches)
            .finish()
    }
}

impl TapBuffer {
    pub fn new(
        pipeline: &str,
        on: Arc<AtomicBool>,
        max_spans: Arc<AtomicUsize>,
        seq: Arc<AtomicU64>,
    ) -> TapBuffer {
        TapBuffer {
            pipeline: pipeline.to_string(),
            on,
            max_spans,
            ring: Mutex::new(Ring::default()),
            seq,
            skipped_spans: AtomicU64::new(0),
            cache: Mutex::new(None),
            building: Mutex::new(()),
            last_query: Mutex::new(None),
        }
    }

    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Keeps `batch` (a shared clone) if the tap is on.
    pub fn push(&self, batch: &Batch) {
        if !self.is_on() {
            return;
        }
        let spans = batch.item_count();
        if spans == 0 {
            return;
        }
        let mut evicted = Vec::new();
        {
            let mut ring = lock(&self.ring);
            // Read again under the lock: a tap turned off or shrunk meanwhile
            // (trim takes the same lock) must not keep this batch.
            let max = if self.is_on() {
                self.max_spans.load(Ordering::Relaxed)
            } else {
                0
            };
            if spans > max {
                drop(ring);
                if max > 0 {
                    self.skipped_spans
                        .fetch_add(spans as u64, Ordering::Relaxed);
                }
                return;
            }
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            ring.batches.push_back(Tapped {
                seq,
                batch: batch.clone(),
                spans,
            });
            ring.spans += spans;
            while ring.spans > max {
                match ring.batches.pop_front() {
                    Some(old) => {
                        ring.spans -= old.spans;
                        evicted.push(old);
                    }
                    None => break,
                }
            }
        }
        // Freed outside the lock the data path takes.
        drop(evicted);
    }

    /// Applies a new size (or off): drops the oldest batches over it.
    pub fn trim(&self) {
        let max = if self.is_on() {
            self.max_spans.load(Ordering::Relaxed)
        } else {
            0
        };
        let mut ring = lock(&self.ring);
        while ring.spans > max {
            match ring.batches.pop_front() {
                Some(old) => ring.spans -= old.spans,
                None => break,
            }
        }
        if ring.batches.is_empty() {
            ring.batches = VecDeque::new();
            ring.spans = 0;
        }
        drop(ring);
        *lock(&self.cache) = None;
    }

    /// Spans held and batches held.
    pub fn held(&self) -> (usize, usize) {
        let ring = lock(&self.ring);
        (ring.spans, ring.batches.len())
    }

    pub fn skipped_spans(&self) -> u64 {
        self.skipped_spans.load(Ordering::Relaxed)
    }

    /// Drops the assembled index when nobody asked for `idle`.
    pub fn expire_cache(&self, idle: Duration) {
        let stale = lock(&self.last_query).is_none_or(|t| t.elapsed() >= idle);
        if stale {
            *lock(&self.cache) = None;
        }
    }

    /// The traces now held, assembled: cached until a newer batch arrives and
    /// the cached index is at least a second old. Blocking (decoding may take a
    /// while): call it off the async workers.
    pub fn index(&self, hub: &StatusHub) -> Arc<TraceIndex> {
        *lock(&self.last_query) = Some(Instant::now());
        if let Some(idx) = self.fresh_cache() {
            return idx;
        }
        let _one_build = lock(&self.building);
        // Another request may have built it while this one waited.
        if let Some(idx) = self.fresh_cache() {
            return idx;
        }
        let (newest, batches): (u64, Vec<(u64, Batch)>) = {
            let ring = lock(&self.ring);
            (
                ring.batches.back().map_or(0, |t| t.seq),
                ring.batches
                    .iter()
                    .map(|t| (t.seq, t.batch.clone()))
                    .collect(),
            )
        };
        let idx = Arc::new(TraceIndex::build(&self.pipeline, &batches, hub));
        *lock(&self.cache) = Some((newest, Instant::now(), idx.clone()));
        idx
    }

    /// The cached index if it holds the newest batch or is younger than
    /// [`MIN_REBUILD`].
    fn fresh_cache(&self) -> Option<Arc<TraceIndex>> {
        let newest = lock(&self.ring).batches.back().map_or(0, |t| t.seq);
        let cache = lock(&self.cache);
        let (seq, built, idx) = cache.as_ref()?;
        (*seq == newest || built.elapsed() < MIN_REBUILD).then(|| idx.clone())
    }
}

/// Placed at the end of a traces pipeline, in front of its exporters: keeps a
/// copy of what the exporters accepted.
pub struct TapConsumer {
    tap: Arc<TapBuffer>,
    next: DynConsumer,
}

impl TapConsumer {
    pub fn new(tap: Arc<TapBuffer>, next: DynConsumer) -> TapConsumer {
        TapConsumer { tap, next }
    }
}

#[async_trait]
impl Consumer for TapConsumer {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        if !self.tap.is_on() {
            return self.next.consume(batch).await;
        }
        let copy = batch.clone();
        let r = self.next.consume(batch).await;
        if r.is_ok() {
            self.tap.push(&copy);
        }
        r
    }

    fn capabilities(&self) -> Capabilities {
        self.next.capabilities()
    }
}

// --- assembled traces ----------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub name: String,
    pub time_unix_nano: u64,
    pub attributes: Map<String, Json>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpanView {
    pub span_id: String,
    /// Empty for a root.
    pub parent_span_id: String,
    pub name: String,
    pub kind: &'static str,
    pub service: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub duration_ns: u64,
    /// `unset`, `ok` or `error`.
    pub status: &'static str,
    pub status_message: String,
    /// `ebpf` (made by the eBPF receiver) or `sdk`.
    pub source: &'static str,
    pub scope: String,
    /// How the span's parent was chosen: an autotracing rule (`tcp_seq`,
    /// `trace_context`, `syscall_trace_id`, `request_id`, `sdk`), or
    /// `sdk_context` for a parent the SDK propagated itself; null for a root
    /// or when unknown.
    pub edge_rule: Option<String>,
    /// Nesting depth in the waterfall (0 for a root).
    pub depth: usize,
    /// The span names a parent that is not among the spans held.
    pub parent_missing: bool,
    pub attributes: Map<String, Json>,
    pub resource: Map<String, Json>,
    pub events: Vec<EventView>,
    pub links: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceSummary {
    pub trace_id: String,
    pub pipeline: String,
    pub root_service: String,
    pub root_name: String,
    pub start_unix_nano: u64,
    pub duration_ns: u64,
    pub span_count: usize,
    pub error: bool,
    pub has_ebpf: bool,
    /// A span without parent is held (the trace's start is not cut off).
    pub complete: bool,
    pub services: Vec<String>,
    /// Arrival order of the newest batch with a span of this trace, across
    /// every tap of the hub (newest first sorting).
    #[serde(skip)]
    pub newest_seq: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceView {
    #[serde(flatten)]
    pub summary: TraceSummary,
    /// Depth-first, children by start time: the waterfall's rows in order.
    pub spans: Vec<SpanView>,
}

/// The traces of one tap, newest first.
#[derive(Debug, Default)]
pub struct TraceIndex {
    pub traces: Vec<TraceView>,
    /// trace id (hex) → position in `traces`.
    by_id: HashMap<String, usize>,
}

impl TraceIndex {
    fn build(pipeline: &str, batches: &[(u64, Batch)], hub: &StatusHub) -> TraceIndex {
        // trace id → (newest batch seq, spans by span id in arrival order)
        let mut groups: BTreeMap<Vec<u8>, (u64, Vec<SpanView>)> = BTreeMap::new();
        for (seq, batch) in batches {
            let decoded;
            let rs: &[ResourceSpans] = match batch.encoded_traces() {
                Some(wire) => match wire.decode() {
                    Ok(v) => {
                        decoded = v;
                        &decoded
                    }
                    Err(_) => continue,
                },
                None => match batch.payload() {
                    Payload::Traces(rs) => rs,
                    _ => continue,
                },
            };
            collect_spans(rs, *seq, hub, &mut groups);
        }
        let mut traces: Vec<(u64, TraceView)> = groups
            .into_iter()
            .map(|(tid, (seq, spans))| {
                let mut t = assemble(pipeline, &tid, spans);
                t.summary.newest_seq = seq;
                (seq, t)
            })
            .collect();
        // Newest first: by the last batch that brought a span, then start time.
        traces.sort_by(|a, b| {
            b.0.cmp(&a.0).then(
                b.1.summary
                    .start_unix_nano
                    .cmp(&a.1.summary.start_unix_nano),
            )
        });
        let traces: Vec<TraceView> = traces.into_iter().map(|(_, t)| t).collect();
        let by_id = traces
            .iter()
            .enumerate()
            .map(|(i, t)| (t.summary.trace_id.clone(), i))
            .collect();
        TraceIndex { traces, by_id }
    }

    pub fn get(&self, trace_id: &str) -> Option<&TraceView> {
        self.by_id.get(trace_id).map(|i| &self.traces[*i])
    }
}

fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|x| *x == 0)
}

pub fn any_to_json(v: &AnyValue) -> Json {
    match &v.value {
        None => Json::Null,
        Some(any_value::Value::StringValue(s)) => Json::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Json::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Json::from(*i),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map_or_else(|| Json::String(d.to_string()), Json::Number),
        Some(any_value::Value::ArrayValue(a)) => {
            Json::Array(a.values.iter().map(any_to_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Json::Object(attrs_to_json(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => Json::String(hex(b)),
        // A string by index into a dictionary weft does not carry.
        Some(_) => Json::Null,
    }
}

pub fn attrs_to_json(kvs: &[KeyValue]) -> Map<String, Json> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map_or(Json::Null, any_to_json),
            )
        })
        .collect()
}

fn kind_name(k: i32) -> &'static str {
    match span::SpanKind::try_from(k) {
        Ok(span::SpanKind::Internal) => "internal",
        Ok(span::SpanKind::Server) => "server",
        Ok(span::SpanKind::Client) => "client",
        Ok(span::SpanKind::Producer) => "producer",
        Ok(span::SpanKind::Consumer) => "consumer",
        _ => "unspecified",
    }
}

fn collect_spans(
    rs: &[ResourceSpans],
    seq: u64,
    hub: &StatusHub,
    groups: &mut BTreeMap<Vec<u8>, (u64, Vec<SpanView>)>,
) {
    for r in rs {
        let resource_attrs = r
            .resource
            .as_ref()
            .map(|res| attrs_to_json(&res.attributes))
            .unwrap_or_default();
        let service = match resource_attrs.get("service.name") {
            Some(Json::String(s)) if !s.is_empty() => s.clone(),
            _ => "unknown_service".to_string(),
        };
        for ss in &r.scope_spans {
            let scope = ss
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            let source = if scope == EBPF_SCOPE { "ebpf" } else { "sdk" };
            for s in &ss.spans {
                // A trace id that is not 16 bytes cannot be asked for by id;
                // such spans are not listed.
                if s.trace_id.len() != 16 {
                    continue;
                }
                let attributes = attrs_to_json(&s.attributes);
                let has_parent = !s.parent_span_id.is_empty() && !is_zero(&s.parent_span_id);
                let edge_rule = if !has_parent {
                    None
                } else if let Some(Json::String(r)) = attributes.get(RULE_ATTRIBUTE) {
                    Some(r.clone())
                } else if let Some(r) = hub.rule_of(&s.span_id) {
                    Some(r.to_string())
                } else if source == "sdk" {
                    Some("sdk_context".to_string())
                } else {
                    None
                };
                let (status, status_message) = match &s.status {
                    Some(st) => (
                        match status::StatusCode::try_from(st.code) {
                            Ok(status::StatusCode::Ok) => "ok",
                            Ok(status::StatusCode::Error) => "error",
                            _ => "unset",
                        },
                        st.message.clone(),
                    ),
                    None => ("unset", String::new()),
                };
                let view = SpanView {
                    span_id: hex(&s.span_id),
                    parent_span_id: if has_parent {
                        hex(&s.parent_span_id)
                    } else {
                        String::new()
                    },
                    name: s.name.clone(),
                    kind: kind_name(s.kind),
                    service: service.clone(),
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano,
                    duration_ns: s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano),
                    status,
                    status_message,
                    source,
                    scope: scope.clone(),
                    edge_rule,
                    depth: 0,
                    parent_missing: false,
                    attributes,
                    resource: resource_attrs.clone(),
                    events: s
                        .events
                        .iter()
                        .map(|e| EventView {
                            name: e.name.clone(),
                            time_unix_nano: e.time_unix_nano,
                            attributes: attrs_to_json(&e.attributes),
                        })
                        .collect(),
                    links: s.links.len(),
                };
                let g = groups
                    .entry(s.trace_id.clone())
                    .or_insert_with(|| (seq, Vec::new()));
                g.0 = g.0.max(seq);
                g.1.push(view);
            }
        }
    }
}

/// Orders a trace's spans depth-first (children by start time) and sums it up.
fn assemble(pipeline: &str, trace_id: &[u8], mut spans: Vec<SpanView>) -> TraceView {
    // The same span twice (a resend): keep the last copy.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut unique: Vec<SpanView> = Vec::with_capacity(spans.len());
    for s in spans.drain(..) {
        match seen.get(&s.span_id) {
            Some(i) => unique[*i] = s,
            None => {
                seen.insert(s.span_id.clone(), unique.len());
                unique.push(s);
            }
        }
    }
    let ids: HashMap<&str, usize> = unique
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots: Vec<usize> = Vec::new();
    let mut parent_missing = vec![false; unique.len()];
    for (i, s) in unique.iter().enumerate() {
        match ids.get(s.parent_span_id.as_str()) {
            Some(p) if !s.parent_span_id.is_empty() && *p != i => {
                children.entry(*p).or_default().push(i)
            }
            _ => {
                parent_missing[i] = !s.parent_span_id.is_empty();
                roots.push(i);
            }
        }
    }
    let by_start = |v: &mut Vec<usize>, spans: &[SpanView]| {
        v.sort_by(|a, b| {
            spans[*a]
                .start_unix_nano
                .cmp(&spans[*b].start_unix_nano)
                .then(spans[*a].span_id.cmp(&spans[*b].span_id))
        })
    };
    // True roots before orphans, each by start time.
    by_start(&mut roots, &unique);
    roots.sort_by_key(|i| parent_missing[*i]);
    for v in children.values_mut() {
        by_start(v, &unique);
    }
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(unique.len());
    let mut visited = vec![false; unique.len()];
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|r| (*r, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut visited[i], true) {
            continue;
        }
        order.push((i, depth));
        if let Some(c) = children.get(&i) {
            for ch in c.iter().rev() {
                stack.push((*ch, depth + 1));
            }
        }
    }
    // Spans in a parent cycle are reachable from no root: list them last.
    for (i, v) in visited.iter().enumerate() {
        if !v {
            order.push((i, 0));
        }
    }
    let mut slots: Vec<Option<SpanView>> = unique.into_iter().map(Some).collect();
    let mut ordered = Vec::with_capacity(slots.len());
    for (i, depth) in order {
        if let Some(mut s) = slots[i].take() {
            s.depth = depth;
            s.parent_missing = parent_missing[i];
            ordered.push(s);
        }
    }
    let start = ordered.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let end = ordered.iter().map(|s| s.end_unix_nano).max().unwrap_or(0);
    let root = ordered.first();
    let mut services: Vec<String> = ordered.iter().map(|s| s.service.clone()).collect();
    services.sort();
    services.dedup();
    TraceView {
        summary: TraceSummary {
            trace_id: hex(trace_id),
            pipeline: pipeline.to_string(),
            root_service: root.map(|s| s.service.clone()).unwrap_or_default(),
            root_name: root.map(|s| s.name.clone()).unwrap_or_default(),
            start_unix_nano: start,
            duration_ns: end.saturating_sub(start),
            span_count: ordered.len(),
            error: ordered.iter().any(|s| s.status == "error"),
            has_ebpf: ordered.iter().any(|s| s.source == "ebpf"),
            complete: ordered.iter().any(|s| s.parent_span_id.is_empty()),
            services,
            newest_seq: 0,
        },
        spans: ordered,
    }
}

/// Milliseconds since the epoch of a `SystemTime`, for the API.
pub fn now_unix_ms() -> u64 {
    super::hub::unix_ms(SystemTime::now())
}
