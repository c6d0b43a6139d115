//! `propagation_merge` processor: one trace id per trace across tracers.
//!
//! A Datadog tracer in 64-bit mode reports trace ids whose upper 64 bits are
//! zero, while the OpenTelemetry services of the same request report the full
//! 128-bit id. This processor learns `low 64 → high 64` from every span (and
//! from captured `traceparent` headers) and rewrites the Datadog spans to the
//! full id, holding a not-yet-matched Datadog trace for up to `window`. The
//! tracer's own ids stay searchable as `datadog.trace_id` / `datadog.span_id`
//! decimal attributes. In logs pipelines, records that carry `dd.trace_id` /
//! `dd.span_id` get their OTLP trace and span ids filled in.
//!
//! Datadog spans are recognised by their instrumentation scope name `Datadog`
//! (what the datadog receiver, like the collector's, sets) or by arriving from
//! a `datadog` receiver.

mod config;
mod index;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_yaml_ng::Value;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::warn;
use weft_pipeline::{
    parse_config, Batch, Capabilities, ComponentError, ConfigFieldError, ConsumeError, Consumer,
    Counter, DynConsumer, Gauge, Lifecycle, Payload, Processor, ProcessorFactory, Settings, Signal,
};

pub use config::PropagationMergeConfig;
use index::TraceIndex;

/// The scope name Datadog-translated spans carry.
pub const DATADOG_SCOPE: &str = "Datadog";
/// A captured W3C header on an eBPF span (see the ebpf receiver).
const CAPTURED_TRACEPARENT: &str = "weft.header.traceparent";

pub struct PropagationMergeFactory;

impl ProcessorFactory for PropagationMergeFactory {
    fn type_name(&self) -> &'static str {
        "propagation_merge"
    }

    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Logs]
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<PropagationMergeConfig>(raw).map(|_| ())
    }

    fn create(
        &self,
        settings: Settings,
        raw: &Value,
        signal: Signal,
        next: DynConsumer,
    ) -> Result<Arc<dyn Processor>, ComponentError> {
        let config = parse_config::<PropagationMergeConfig>(raw)
            .map_err(|e| ComponentError::new(e.to_string()))?;
        Ok(Arc::new(PropagationMerge::new(
            &settings, config, signal, next,
        )))
    }
}

/// Splits an OTLP trace id into (high, low) 64-bit halves; None unless 16 bytes.
pub fn split_trace_id(id: &[u8]) -> Option<(u64, u64)> {
    let bytes: [u8; 16] = id.try_into().ok()?;
    let (hi, lo) = bytes.split_at(8);
    Some((
        u64::from_be_bytes(hi.try_into().ok()?),
        u64::from_be_bytes(lo.try_into().ok()?),
    ))
}

pub fn join_trace_id(high: u64, low: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&high.to_be_bytes());
    v.extend_from_slice(&low.to_be_bytes());
    v
}

fn span_id_u64(id: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(id.try_into().ok()?))
}

/// The trace id inside a `traceparent` value, as (high, low).
fn traceparent_ids(v: &str) -> Option<(u64, u64)> {
    let hex = v.get(3..35)?;
    if v.get(0..3)? != "00-" || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((
        u64::from_str_radix(&hex[..16], 16).ok()?,
        u64::from_str_radix(&hex[16..], 16).ok()?,
    ))
}

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// A decimal id from a string or int attribute.
fn decimal_attr(attrs: &[KeyValue], key: &str) -> Option<u64> {
    match str_attr(attrs, key)?.value.as_ref()? {
        any_value::Value::StringValue(s) => s.trim().parse().ok(),
        any_value::Value::IntValue(i) => Some(*i as u64),
        _ => None,
    }
}

fn string_kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

struct Stats {
    rekeyed: Counter,
    unmatched: Counter,
    evicted: Counter,
    late_rekeyed: Counter,
    late_full_id: Counter,
    logs_filled: Counter,
    buffered: Gauge,
    index_entries: Gauge,
    dropped: Counter,
}

/// Spans of one Datadog trace (by low 64 bits) waiting for their full id.
struct Held {
    origin: Arc<str>,
    parts: Vec<ResourceSpans>,
    spans: usize,
}

struct State {
    index: TraceIndex,
    /// Low ids released without a full id, to count a full id seen too late.
    released: TraceIndex,
    held: HashMap<u64, Held>,
    order: VecDeque<(u64, Instant)>,
    held_spans: usize,
}

pub struct PropagationMerge {
    id: String,
    config: PropagationMergeConfig,
    signal: Signal,
    next: DynConsumer,
    stats: Arc<Stats>,
    state: Arc<StdMutex<State>>,
    shut: Arc<AtomicBool>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

fn is_datadog_origin(origin: &str) -> bool {
    origin.split('/').next() == Some("datadog")
}

impl PropagationMerge {
    pub fn new(
        settings: &Settings,
        config: PropagationMergeConfig,
        signal: Signal,
        next: DynConsumer,
    ) -> PropagationMerge {
        let id = settings.id.to_string();
        let t = &settings.telemetry;
        let l = [("processor", id.as_str())];
        let c = |name: &str, help: &str| t.counter(name, help, &l);
        let stats = Arc::new(Stats {
            rekeyed: c("weft_propagation_merge_rekeyed_spans", "Datadog spans rewritten to the full 128-bit trace id"),
            unmatched: c("weft_propagation_merge_unmatched_spans", "Datadog 64-bit spans that left after the window without a full id"),
            evicted: c("weft_propagation_merge_evicted_spans", "Datadog 64-bit spans that left early, unchanged, because max_buffered_spans was reached"),
            late_rekeyed: t.counter("weft_propagation_merge_late_spans", "Spans that arrived after the window of their trace", &[("processor", id.as_str()), ("kind", "rekeyed_from_index")]),
            late_full_id: t.counter("weft_propagation_merge_late_spans", "Spans that arrived after the window of their trace", &[("processor", id.as_str()), ("kind", "full_id_after_release")]),
            logs_filled: c("weft_propagation_merge_log_records_linked", "Log records whose trace and span ids were filled from dd.trace_id / dd.span_id"),
            buffered: t.gauge("weft_propagation_merge_buffered_spans", "Datadog spans waiting for their full trace id", &l),
            index_entries: t.gauge("weft_propagation_merge_index_entries", "Remembered low-64 to 128-bit trace id mappings", &l),
            dropped: c("weft_propagation_merge_dropped_spans", "Released spans the next consumer refused"),
        });
        let state = State {
            index: TraceIndex::new(config.index_ttl, config.max_index_entries),
            released: TraceIndex::new(config.index_ttl, config.max_index_entries),
            held: HashMap::new(),
            order: VecDeque::new(),
            held_spans: 0,
        };
        PropagationMerge {
            id,
            config,
            signal,
            next,
            stats,
            state: Arc::new(StdMutex::new(state)),
            shut: Arc::new(AtomicBool::new(false)),
            ticker: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rewrites, holds and releases; returns what goes downstream now, plus
    /// released traces with their origins.
    fn process_traces(&self, rs: &mut Vec<ResourceSpans>, origin: &Arc<str>) -> Vec<ResourceSpans> {
        let now = Instant::now();
        let from_dd_receiver = is_datadog_origin(origin);
        let mut st = self.lock();
        let st = &mut *st;

        // 1. Learn full ids from every span and captured header.
        let mut learned = Vec::new();
        for r in rs.iter() {
            for s in &r.scope_spans {
                for span in &s.spans {
                    if let Some((high, low)) = split_trace_id(&span.trace_id) {
                        if high != 0 && st.index.insert(low, high, now) {
                            learned.push(low);
                        }
                    }
                    if let Some(any_value::Value::StringValue(tp)) =
                        str_attr(&span.attributes, CAPTURED_TRACEPARENT)
                            .and_then(|v| v.value.as_ref())
                    {
                        if let Some((high, low)) = traceparent_ids(tp) {
                            if high != 0 && st.index.insert(low, high, now) {
                                learned.push(low);
                            }
                        }
                    }
                }
            }
        }
        for low in &learned {
            if st.released.contains(*low) {
                self.stats.late_full_id.inc();
            }
        }

        // 2. Datadog spans: keep the originals, re-key what is known, hold the rest.
        let hold = !self.config.window.is_zero() && !self.shut.load(Ordering::Acquire);
        let mut to_hold: HashMap<u64, Vec<ResourceSpans>> = HashMap::new();
        let mut hold_counts: HashMap<u64, usize> = HashMap::new();
        for r in rs.iter_mut() {
            for s in r.scope_spans.iter_mut() {
                let dd =
                    from_dd_receiver || s.scope.as_ref().is_some_and(|sc| sc.name == DATADOG_SCOPE);
                if !dd {
                    continue;
                }
                let mut waiting: HashMap<u64, Vec<Span>> = HashMap::new();
                let mut keep = Vec::with_capacity(s.spans.len());
                for mut span in std::mem::take(&mut s.spans) {
                    if self.config.keep_original_ids {
                        add_original_ids(&mut span);
                    }
                    match split_trace_id(&span.trace_id) {
                        Some((0, low)) => match st.index.get(low) {
                            Some((high, learned_at)) => {
                                span.trace_id = join_trace_id(high, low);
                                self.stats.rekeyed.inc();
                                if now.saturating_duration_since(learned_at) > self.config.window {
                                    self.stats.late_rekeyed.inc();
                                }
                                keep.push(span);
                            }
                            None if hold => waiting.entry(low).or_default().push(span),
                            None => keep.push(span),
                        },
                        _ => keep.push(span),
                    }
                }
                s.spans = keep;
                for (low, spans) in waiting {
                    *hold_counts.entry(low).or_default() += spans.len();
                    to_hold.entry(low).or_default().push(ResourceSpans {
                        resource: r.resource.clone(),
                        schema_url: r.schema_url.clone(),
                        scope_spans: vec![ScopeSpans {
                            scope: s.scope.clone(),
                            schema_url: s.schema_url.clone(),
                            spans,
                        }],
                    });
                }
            }
        }
        rs.retain(|r| r.scope_spans.iter().any(|s| !s.spans.is_empty()));
        for (low, parts) in to_hold {
            let n = hold_counts.get(&low).copied().unwrap_or(0);
            st.held_spans += n;
            let entry = st.held.entry(low).or_insert_with(|| Held {
                origin: origin.clone(),
                parts: Vec::new(),
                spans: 0,
            });
            if entry.parts.is_empty() {
                st.order.push_back((low, now));
            }
            entry.parts.extend(parts);
            entry.spans += n;
        }

        // 3. Release held traces whose full id was just learned.
        let mut out = Vec::new();
        for low in learned {
            if let Some(h) = st.held.remove(&low) {
                st.held_spans -= h.spans;
                if let Some((high, _)) = st.index.get(low) {
                    let mut parts = h.parts;
                    rekey_all(&mut parts, high, low);
                    self.stats.rekeyed.add(h.spans as u64);
                    out.extend(parts);
                }
            }
        }

        // 4. Respect the memory bound: the oldest traces leave unchanged.
        while st.held_spans > self.config.max_buffered_spans {
            let Some((low, _)) = st.order.pop_front() else {
                break;
            };
            if let Some(h) = st.held.remove(&low) {
                st.held_spans -= h.spans;
                self.stats.evicted.add(h.spans as u64);
                st.released.insert(low, 0, now);
                out.extend(h.parts);
            }
        }
        self.stats.buffered.set(st.held_spans as i64);
        self.stats.index_entries.set(st.index.len() as i64);
        out
    }

    fn fill_log_ids(&self, rl: &mut [ResourceLogs]) {
        let st = self.lock();
        for r in rl.iter_mut() {
            for s in r.scope_logs.iter_mut() {
                for rec in s.log_records.iter_mut() {
                    let mut filled = false;
                    if rec.trace_id.iter().all(|b| *b == 0) {
                        if let Some(low) = decimal_attr(&rec.attributes, "dd.trace_id") {
                            let high = st.index.get(low).map_or(0, |(h, _)| h);
                            rec.trace_id = join_trace_id(high, low);
                            filled = true;
                        }
                    } else if let Some((0, low)) = split_trace_id(&rec.trace_id) {
                        if let Some((high, _)) = st.index.get(low) {
                            rec.trace_id = join_trace_id(high, low);
                            filled = true;
                        }
                    }
                    if rec.span_id.iter().all(|b| *b == 0) {
                        if let Some(span) = decimal_attr(&rec.attributes, "dd.span_id") {
                            rec.span_id = span.to_be_bytes().to_vec();
                            filled = true;
                        }
                    }
                    if filled {
                        self.stats.logs_filled.inc();
                    }
                }
            }
        }
    }
}

fn add_original_ids(span: &mut Span) {
    if span
        .attributes
        .iter()
        .any(|kv| kv.key == "datadog.trace_id")
    {
        return;
    }
    if let Some((_, low)) = split_trace_id(&span.trace_id) {
        span.attributes
            .push(string_kv("datadog.trace_id", low.to_string()));
    }
    if let Some(id) = span_id_u64(&span.span_id) {
        span.attributes
            .push(string_kv("datadog.span_id", id.to_string()));
    }
}

fn rekey_all(parts: &mut [ResourceSpans], high: u64, low: u64) {
    let full = join_trace_id(high, low);
    for r in parts {
        for s in r.scope_spans.iter_mut() {
            for span in s.spans.iter_mut() {
                span.trace_id.clone_from(&full);
            }
        }
    }
}

/// Takes every held trace older than `window` (or all, when `all`).
fn take_expired(
    state: &StdMutex<State>,
    window: Duration,
    all: bool,
    stats: &Stats,
) -> Vec<(Arc<str>, Vec<ResourceSpans>)> {
    let now = Instant::now();
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::new();
    while let Some(&(low, since)) = st.order.front() {
        if !all && now.saturating_duration_since(since) < window {
            break;
        }
        st.order.pop_front();
        if let Some(h) = st.held.remove(&low) {
            st.held_spans -= h.spans;
            stats.unmatched.add(h.spans as u64);
            st.released.insert(low, 0, now);
            out.push((h.origin, h.parts));
        }
    }
    st.index.expire(now);
    st.released.expire(now);
    stats.buffered.set(st.held_spans as i64);
    stats.index_entries.set(st.index.len() as i64);
    out
}

async fn forward(
    next: &DynConsumer,
    id: &str,
    stats: &Stats,
    released: Vec<(Arc<str>, Vec<ResourceSpans>)>,
) {
    for (origin, parts) in released {
        let n: usize = parts
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        if let Err(e) = next
            .consume(Batch::new(Payload::Traces(parts), origin))
            .await
        {
            stats.dropped.add(n as u64);
            warn!(processor = %id, spans = n, error = %e, "downstream refused released Datadog spans");
        }
    }
}

#[async_trait]
impl Lifecycle for PropagationMerge {
    async fn start(&self) -> Result<(), ComponentError> {
        if self.signal != Signal::Traces || self.config.window.is_zero() {
            return Ok(());
        }
        let (state, stats, next, id) = (
            self.state.clone(),
            self.stats.clone(),
            self.next.clone(),
            self.id.clone(),
        );
        let window = self.config.window;
        let period = (window / 4).max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let released = take_expired(&state, window, false, &stats);
                forward(&next, &id, &stats, released).await;
            }
        });
        *self.ticker.lock().await = Some(task);
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        self.shut.store(true, Ordering::Release);
        if let Some(t) = self.ticker.lock().await.take() {
            t.abort();
        }
        let released = take_expired(&self.state, self.config.window, true, &self.stats);
        forward(&self.next, &self.id, &self.stats, released).await;
        Ok(())
    }
}

#[async_trait]
impl Consumer for PropagationMerge {
    async fn consume(&self, mut batch: Batch) -> Result<(), ConsumeError> {
        let origin = batch.origin.clone();
        match batch.payload_mut() {
            Payload::Logs(rl) => {
                self.fill_log_ids(rl);
                self.next.consume(batch).await
            }
            Payload::Traces(rs) => {
                let released = self.process_traces(rs, &origin);
                rs.extend(released);
                if rs.is_empty() {
                    return Ok(());
                }
                self.next.consume(batch).await
            }
            Payload::Metrics(_) => self.next.consume(batch).await,
        }
    }

    fn capabilities(&self) -> Capabilities {
        // Spans held for their window wait in memory and are acknowledged on
        // arrival: only without a window does an Ok mean "on disk" downstream.
        Capabilities {
            mutates_data: true,
            acks_on_disk: self.config.window.is_zero() && self.next.capabilities().acks_on_disk,
        }
    }
}

impl Processor for PropagationMerge {}

#[cfg(test)]
mod tests;
