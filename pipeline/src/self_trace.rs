//! weft's own spans: `service.telemetry.traces`.
//!
//! The spans are made by the OpenTelemetry Rust SDK (`opentelemetry_sdk`: its
//! tracer, id generator and samplers) and encoded to OTLP by
//! `opentelemetry-proto`'s transform. What carries them out is a private
//! instance of weft's own `otlp_grpc` / `otlp_http` exporter, as for the pushed
//! self-metrics, so endpoints, TLS, headers, compression, retries and the
//! bounded sending queue behave as they do for data.
//!
//! Cost and isolation:
//! - Off (no `traces` key, `level: none`, or no processor): every hook is one
//!   atomic load of an empty slot in the [`Host`].
//! - On: a finished span goes into a bounded queue (`max_queue_size`) with a
//!   non-blocking send; a full queue drops it and counts it
//!   (`weft_self_telemetry_spans{result="dropped"}`). A task batches the queue
//!   (`schedule_delay`, `max_export_batch_size`) and hands each batch to the
//!   private exporter, whose own queue of 10 batches refuses (counted) rather
//!   than waits. Nothing on the data path ever waits on the self-telemetry
//!   endpoint.
//! - No loop: the requests weft's self-telemetry makes carry the
//!   [`SELF_TELEMETRY_HEADER`]; a weft receiver that gets one makes no receive
//!   span and the data makes no exporter span. Data a request brought in
//!   carries the receive span's context ([`Batch::self_spans`]); an exporter
//!   makes a send span only for data that has one, so weft's self-telemetry
//!   batches (which have none) are never traced by its own exporters. The ebpf
//!   receiver never captures weft's own process.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{
    Link, Span as _, SpanBuilder, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, ShouldSample, SpanData, SpanLimits, SpanProcessor,
};
use serde_yaml_ng::{Mapping, Value};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use weft_propagation::{extract, ExtractOptions, Headers, Style};

use crate::component::{ComponentId, Exporter, Registry};
use crate::config::TelemetryConfig;
use crate::data::{Batch, Payload, Signal};
use crate::host::Host;
use crate::self_telemetry::{
    config_err, declarative_exporter, millis, start_private_exporter, SelfTelemetryError, SCOPE,
    SELF_TELEMETRY_HEADER,
};
use crate::telemetry::{Counter, Telemetry};

/// The declarative batch span processor's defaults (the SDK specification's).
pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(5000);
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_millis(30_000);
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
pub const DEFAULT_MAX_EXPORT_BATCH_SIZE: usize = 512;
/// At most this many links on one span (an export of a merged batch links the
/// receive spans of its parts).
pub const MAX_LINKS: usize = 128;

/// The contexts of weft's own spans a batch passed through (receive spans,
/// autotracing flushes): the parent of an exporter's send span when there is
/// one, its links when a batch processor merged several. `None` when weft does
/// not trace itself, and for weft's own self-telemetry batches.
pub type SelfSpans = Option<Arc<[SpanContext]>>;

/// `service.telemetry.traces`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TracesSettings {
    pub level: String,
    /// Formats a receive span's remote parent is read from (`propagators`).
    pub propagators: Vec<Style>,
    pub sampler: SamplerSpec,
    pub processors: Vec<BatchSpec>,
    pub limits: Limits,
}

/// The span limits (the SDK's defaults unless `limits` sets them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub attributes: u32,
    pub events: u32,
    pub links: u32,
    pub event_attributes: u32,
    pub link_attributes: u32,
}

impl Limits {
    fn sdk(self) -> SpanLimits {
        SpanLimits {
            max_attributes_per_span: self.attributes,
            max_events_per_span: self.events,
            max_links_per_span: self.links,
            max_attributes_per_event: self.event_attributes,
            max_attributes_per_link: self.link_attributes,
        }
    }
}

/// One span processor: how spans are batched, and the weft exporter that
/// sends them.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSpec {
    pub schedule_delay: Duration,
    pub export_timeout: Duration,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub exporter_type: &'static str,
    pub exporter_config: Value,
}

/// The declarative sampler.
#[derive(Debug, Clone, PartialEq)]
pub enum SamplerSpec {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBased {
        root: Box<SamplerSpec>,
        remote_parent_sampled: Box<SamplerSpec>,
        remote_parent_not_sampled: Box<SamplerSpec>,
        local_parent_sampled: Box<SamplerSpec>,
        local_parent_not_sampled: Box<SamplerSpec>,
    },
}

impl SamplerSpec {
    /// The collector's (and the SDK's) default: parent-based, always on at the root.
    pub fn default_parent_based() -> SamplerSpec {
        SamplerSpec::ParentBased {
            root: Box::new(SamplerSpec::AlwaysOn),
            remote_parent_sampled: Box::new(SamplerSpec::AlwaysOn),
            remote_parent_not_sampled: Box::new(SamplerSpec::AlwaysOff),
            local_parent_sampled: Box::new(SamplerSpec::AlwaysOn),
            local_parent_not_sampled: Box::new(SamplerSpec::AlwaysOff),
        }
    }

    fn build(&self) -> Box<dyn ShouldSample> {
        match self {
            SamplerSpec::AlwaysOn => Box::new(Sampler::AlwaysOn),
            SamplerSpec::AlwaysOff => Box::new(Sampler::AlwaysOff),
            SamplerSpec::Ratio(r) => Box::new(Sampler::TraceIdRatioBased(*r)),
            SamplerSpec::ParentBased {
                root,
                remote_parent_sampled,
                remote_parent_not_sampled,
                local_parent_sampled,
                local_parent_not_sampled,
            } => Box::new(
                Sampler::parent_based(root.build())
                    .with_remote_parent_sampled(remote_parent_sampled.build())
                    .with_remote_parent_not_sampled(remote_parent_not_sampled.build())
                    .with_local_parent_sampled(local_parent_sampled.build())
                    .with_local_parent_not_sampled(local_parent_not_sampled.build()),
            ),
        }
    }
}

fn check_keys(path: &str, m: &Mapping, known: &[&str]) -> Result<(), SelfTelemetryError> {
    for k in m.keys() {
        let k = k.as_str().unwrap_or_default();
        if !known.contains(&k) {
            return Err(config_err(
                path,
                format!("unknown key {k:?} (valid: {})", known.join(", ")),
            ));
        }
    }
    Ok(())
}

fn sampler(path: &str, v: &Value) -> Result<SamplerSpec, SelfTelemetryError> {
    let Some(m) = v.as_mapping().filter(|m| m.len() == 1) else {
        return Err(config_err(
            path,
            "one sampler: always_on, always_off, trace_id_ratio_based or parent_based",
        ));
    };
    let Some((name, body)) = m.iter().next() else {
        return Err(config_err(path, "empty sampler"));
    };
    let name = name.as_str().unwrap_or_default();
    let empty = Mapping::new();
    let body = match body {
        Value::Null => &empty,
        Value::Mapping(b) => b,
        _ => return Err(config_err(format!("{path}::{name}"), "expected a map")),
    };
    let here = format!("{path}::{name}");
    match name {
        "always_on" => Ok(SamplerSpec::AlwaysOn),
        "always_off" => Ok(SamplerSpec::AlwaysOff),
        "trace_id_ratio_based" => {
            check_keys(&here, body, &["ratio"])?;
            let ratio = match body.get("ratio") {
                None | Some(Value::Null) => 1.0,
                Some(r) => r
                    .as_f64()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        config_err(format!("{here}::ratio"), "a number from 0 to 1")
                    })?,
            };
            Ok(SamplerSpec::Ratio(ratio))
        }
        "parent_based" => {
            let keys = [
                "root",
                "remote_parent_sampled",
                "remote_parent_not_sampled",
                "local_parent_sampled",
                "local_parent_not_sampled",
            ];
            check_keys(&here, body, &keys)?;
            let SamplerSpec::ParentBased {
                root,
                remote_parent_sampled,
                remote_parent_not_sampled,
                local_parent_sampled,
                local_parent_not_sampled,
            } = SamplerSpec::default_parent_based()
            else {
                return Err(config_err(&here, "internal: default sampler"));
            };
            let pick = |k: &str, d: Box<SamplerSpec>| -> Result<Box<SamplerSpec>, SelfTelemetryError> {
                match body.get(k) {
                    None | Some(Value::Null) => Ok(d),
                    Some(v) => Ok(Box::new(sampler(&format!("{here}::{k}"), v)?)),
                }
            };
            Ok(SamplerSpec::ParentBased {
                root: pick("root", root)?,
                remote_parent_sampled: pick("remote_parent_sampled", remote_parent_sampled)?,
                remote_parent_not_sampled: pick(
                    "remote_parent_not_sampled",
                    remote_parent_not_sampled,
                )?,
                local_parent_sampled: pick("local_parent_sampled", local_parent_sampled)?,
                local_parent_not_sampled: pick(
                    "local_parent_not_sampled",
                    local_parent_not_sampled,
                )?,
            })
        }
        other => Err(config_err(
            path,
            format!("unknown sampler {other:?} (valid: always_on, always_off, trace_id_ratio_based, parent_based)"),
        )),
    }
}

fn count(path: &str, v: Option<&Value>, default: usize) -> Result<usize, SelfTelemetryError> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0 && *n <= 1_000_000)
            .map(|n| n as usize)
            .ok_or_else(|| config_err(path, "a positive whole number (at most 1000000)")),
    }
}

fn processor(path: &str, v: &Value) -> Result<BatchSpec, SelfTelemetryError> {
    let Some(m) = v.as_mapping().filter(|m| m.len() == 1) else {
        return Err(config_err(
            path,
            "one processor: {batch: {...}} or {simple: {...}}",
        ));
    };
    let Some((name, body)) = m.iter().next() else {
        return Err(config_err(path, "empty processor"));
    };
    let name = name.as_str().unwrap_or_default();
    let here = format!("{path}::{name}");
    let Some(body) = body.as_mapping() else {
        return Err(config_err(&here, "expected a map with `exporter`"));
    };
    match name {
        "batch" => {
            check_keys(
                &here,
                body,
                &[
                    "schedule_delay",
                    "export_timeout",
                    "max_queue_size",
                    "max_export_batch_size",
                    "exporter",
                ],
            )?;
            let schedule_delay = millis(
                &format!("{here}::schedule_delay"),
                body.get("schedule_delay"),
                DEFAULT_SCHEDULE_DELAY,
            )?;
            let export_timeout = millis(
                &format!("{here}::export_timeout"),
                body.get("export_timeout"),
                DEFAULT_EXPORT_TIMEOUT,
            )?;
            let max_queue_size = count(
                &format!("{here}::max_queue_size"),
                body.get("max_queue_size"),
                DEFAULT_MAX_QUEUE_SIZE,
            )?;
            let max_export_batch_size = count(
                &format!("{here}::max_export_batch_size"),
                body.get("max_export_batch_size"),
                DEFAULT_MAX_EXPORT_BATCH_SIZE,
            )?;
            if max_export_batch_size > max_queue_size {
                return Err(config_err(
                    format!("{here}::max_export_batch_size"),
                    format!("{max_export_batch_size} is more than max_queue_size {max_queue_size}"),
                ));
            }
            let (exporter_type, exporter_config) = declarative_exporter(
                &format!("{here}::exporter"),
                body.get("exporter"),
                Signal::Traces,
                export_timeout,
                schedule_delay.max(Duration::from_secs(1)),
            )?;
            Ok(BatchSpec {
                schedule_delay,
                export_timeout,
                max_queue_size,
                max_export_batch_size,
                exporter_type,
                exporter_config,
            })
        }
        // The SDK's simple processor exports each span as it ends, on the
        // caller's thread. weft never exports on the data path: it is a batch
        // processor that sends at once (each span goes out within ~1 ms).
        "simple" => {
            check_keys(&here, body, &["exporter"])?;
            let (exporter_type, exporter_config) = declarative_exporter(
                &format!("{here}::exporter"),
                body.get("exporter"),
                Signal::Traces,
                DEFAULT_EXPORT_TIMEOUT,
                Duration::from_secs(1),
            )?;
            Ok(BatchSpec {
                schedule_delay: Duration::from_millis(1),
                export_timeout: DEFAULT_EXPORT_TIMEOUT,
                max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
                max_export_batch_size: DEFAULT_MAX_EXPORT_BATCH_SIZE,
                exporter_type,
                exporter_config,
            })
        }
        other => Err(config_err(
            path,
            format!("unknown span processor {other:?} (valid: batch, simple)"),
        )),
    }
}

/// Reads `service.telemetry.traces`. `None` when weft does not trace itself:
/// no `traces` key, `level: none`, or no processor to send spans with.
pub fn traces_settings(
    cfg: &TelemetryConfig,
) -> Result<Option<TracesSettings>, SelfTelemetryError> {
    let m = match &cfg.traces {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Mapping(m)) => m,
        Some(_) => return Err(config_err("traces", "expected a map")),
    };
    check_keys(
        "traces",
        m,
        &["level", "propagators", "processors", "sampler", "limits"],
    )?;
    let level = match m.get("level") {
        None | Some(Value::Null) => "basic".to_string(),
        Some(Value::String(l)) if ["none", "basic", "normal", "detailed"].contains(&l.as_str()) => {
            l.clone()
        }
        Some(other) => {
            return Err(config_err(
                "traces::level",
                format!("{other:?} (valid: none, basic, normal, detailed)"),
            ))
        }
    };
    let mut propagators = Vec::new();
    match m.get("propagators") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(list)) => {
            for (i, p) in list.iter().enumerate() {
                let Some(name) = p.as_str() else {
                    return Err(config_err(
                        format!("traces::propagators::{i}"),
                        "a propagator name",
                    ));
                };
                if name == "none" {
                    continue;
                }
                let style: Style = name
                    .parse()
                    .map_err(|e| config_err(format!("traces::propagators::{i}"), format!("{e}")))?;
                if !propagators.contains(&style) {
                    propagators.push(style);
                }
            }
        }
        Some(_) => {
            return Err(config_err(
                "traces::propagators",
                "a list of names: [tracecontext, baggage, b3, ...]",
            ))
        }
    }
    let sampler = match m.get("sampler") {
        None | Some(Value::Null) => SamplerSpec::default_parent_based(),
        Some(v) => sampler("traces::sampler", v)?,
    };
    let mut processors = Vec::new();
    match m.get("processors") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(list)) => {
            for (i, p) in list.iter().enumerate() {
                processors.push(processor(&format!("traces::processors::{i}"), p)?);
            }
        }
        Some(_) => {
            return Err(config_err(
                "traces::processors",
                "a list: [{batch: {exporter: {otlp: {...}}}}]",
            ))
        }
    }
    let limits = limits(m.get("limits"))?;
    if level == "none" || processors.is_empty() {
        return Ok(None);
    }
    Ok(Some(TracesSettings {
        level,
        propagators,
        sampler,
        processors,
        limits,
    }))
}

/// The declarative `limits` (the SDK's span limits). `attribute_value_length_limit`
/// is accepted and has no effect: weft's own attribute values are short.
fn limits(v: Option<&Value>) -> Result<Limits, SelfTelemetryError> {
    let d = SpanLimits::default();
    let mut out = Limits {
        attributes: d.max_attributes_per_span,
        events: d.max_events_per_span,
        links: d.max_links_per_span,
        event_attributes: d.max_attributes_per_event,
        link_attributes: d.max_attributes_per_link,
    };
    let m = match v {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Mapping(m)) => m,
        Some(_) => return Err(config_err("traces::limits", "expected a map")),
    };
    check_keys(
        "traces::limits",
        m,
        &[
            "attribute_count_limit",
            "attribute_value_length_limit",
            "event_count_limit",
            "link_count_limit",
            "event_attribute_count_limit",
            "link_attribute_count_limit",
        ],
    )?;
    let get = |k: &str, d: u32| -> Result<u32, SelfTelemetryError> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(d),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| config_err(format!("traces::limits::{k}"), "a whole number")),
        }
    };
    get("attribute_value_length_limit", 0)?;
    out.attributes = get("attribute_count_limit", out.attributes)?;
    out.events = get("event_count_limit", out.events)?;
    out.links = get("link_count_limit", out.links)?;
    out.event_attributes = get("event_attribute_count_limit", out.event_attributes)?;
    out.link_attributes = get("link_attribute_count_limit", out.link_attributes)?;
    Ok(out)
}

/// Where a new span hangs.
pub enum Parent<'a> {
    /// A root span, or the child of a context read from request headers.
    Remote(Option<SpanContext>),
    /// The child of the one context, or a root linking all of them.
    Of(&'a [SpanContext]),
}

/// The live tracer, held by the [`Host`] while weft traces itself.
pub struct SelfTracer {
    tracer: SdkTracer,
    propagators: ExtractOptions,
}

impl std::fmt::Debug for SelfTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfTracer").finish_non_exhaustive()
    }
}

impl SelfTracer {
    /// True when receivers should read a remote parent from request headers.
    pub fn reads_headers(&self) -> bool {
        self.propagators.styles.iter().any(|s| s.carries_context())
    }

    /// The remote parent in `headers`, read with the configured propagators.
    pub fn remote_parent(&self, headers: &Headers) -> Option<SpanContext> {
        if !self.reads_headers() {
            return None;
        }
        let c = extract(headers, &self.propagators).context?;
        let trace_id = TraceId::from_bytes(c.trace_id.as_u128().to_be_bytes());
        let span_id = SpanId::from_bytes(c.span_id.as_u64().to_be_bytes());
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        let flags = if c.sampled == Some(false) {
            TraceFlags::default()
        } else {
            TraceFlags::SAMPLED
        };
        Some(SpanContext::new(
            trace_id,
            span_id,
            flags,
            true,
            TraceState::default(),
        ))
    }

    /// The headers that carry `sc` to the next hop in the configured formats
    /// (`None` without propagators).
    pub fn inject(&self, sc: &SpanContext) -> Option<OutgoingHeaders> {
        let styles: Vec<Style> = self
            .propagators
            .styles
            .iter()
            .copied()
            .filter(|s| s.carries_context())
            .collect();
        if styles.is_empty() || !sc.is_valid() {
            return None;
        }
        let trace_id =
            weft_propagation::TraceId::from_u128(u128::from_be_bytes(sc.trace_id().to_bytes()));
        let span_id =
            weft_propagation::SpanId::from_u64(u64::from_be_bytes(sc.span_id().to_bytes()));
        let mut c = weft_propagation::SpanContext::new(trace_id, span_id)?;
        c.sampled = Some(sc.is_sampled());
        let e = weft_propagation::Extracted {
            context: Some(c),
            ..Default::default()
        };
        let h = weft_propagation::inject(&e, &styles);
        Some(
            h.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
                .into(),
        )
    }

    /// Starts a span; it ends when dropped (or at [`SelfSpan::end`]).
    pub fn start(
        &self,
        name: String,
        kind: SpanKind,
        parent: Parent<'_>,
        attributes: Vec<KeyValue>,
    ) -> SelfSpan {
        self.build(SpanBuilder::from_name(name), kind, parent, attributes)
    }

    /// As [`SelfTracer::start`], for work that began at `started`.
    pub fn start_at(
        &self,
        name: String,
        kind: SpanKind,
        parent: Parent<'_>,
        attributes: Vec<KeyValue>,
        started: std::time::SystemTime,
    ) -> SelfSpan {
        let builder = SpanBuilder::from_name(name).with_start_time(started);
        self.build(builder, kind, parent, attributes)
    }

    fn build(
        &self,
        builder: SpanBuilder,
        kind: SpanKind,
        parent: Parent<'_>,
        attributes: Vec<KeyValue>,
    ) -> SelfSpan {
        let mut builder = builder.with_kind(kind).with_attributes(attributes);
        let cx = match parent {
            Parent::Remote(Some(sc)) => Context::new().with_remote_span_context(sc),
            Parent::Remote(None) => Context::new(),
            Parent::Of([one]) => Context::new().with_remote_span_context(one.clone()),
            Parent::Of(many) => {
                builder = builder.with_links(
                    many.iter()
                        .take(MAX_LINKS)
                        .map(|sc| Link::with_context(sc.clone()))
                        .collect(),
                );
                Context::new()
            }
        };
        SelfSpan(builder.start_with_context(&self.tracer, &cx))
    }
}

/// One of weft's own spans.
pub struct SelfSpan(opentelemetry_sdk::trace::Span);

impl SelfSpan {
    pub fn context(&self) -> SpanContext {
        self.0.span_context().clone()
    }

    /// Its context, for the data it hands on (nothing when it is not sampled).
    pub fn as_parent(&self) -> SelfSpans {
        let sc = self.0.span_context();
        (sc.is_valid() && sc.is_sampled()).then(|| Arc::from([sc.clone()]))
    }

    pub fn set(&mut self, kv: KeyValue) {
        self.0.set_attribute(kv);
    }

    pub fn event(&mut self, name: &'static str, attributes: Vec<KeyValue>) {
        self.0.add_event(name, attributes);
    }

    pub fn error(&mut self, message: String) {
        self.0
            .set_status(opentelemetry::trace::Status::error(message));
    }

    pub fn ok(&mut self) {
        self.0.set_status(opentelemetry::trace::Status::Ok);
    }

    pub fn end(mut self) {
        self.0.end();
    }
}

/// Counters of one processor's queue.
#[derive(Clone)]
struct SpanCounters {
    queued: Counter,
    dropped: Counter,
    exported: Counter,
    refused: Counter,
}

impl SpanCounters {
    fn new(telemetry: &Telemetry, exporter: &str) -> SpanCounters {
        let counter = |result: &str| {
            telemetry.counter(
                "weft_self_telemetry_spans",
                "weft's own spans, by what became of them: queued for export, dropped (the span queue was full), exported (taken by the exporter's queue), refused (the exporter's queue was full or timed out)",
                &[("exporter", exporter), ("result", result)],
            )
        };
        SpanCounters {
            queued: counter("queued"),
            dropped: counter("dropped"),
            exported: counter("exported"),
            refused: counter("refused"),
        }
    }
}

/// The span processor: a non-blocking hand-off into a bounded queue.
struct QueueProcessor {
    tx: mpsc::Sender<SpanData>,
    counters: SpanCounters,
    /// Told when the queue holds a full export batch: the queue's task sleeps
    /// through the schedule delay otherwise, instead of waking for every span.
    full: Arc<Notify>,
    batch: usize,
}

impl QueueProcessor {
    /// A processor and the receiving end of its queue.
    fn new(
        max_queue_size: usize,
        batch: usize,
        counters: SpanCounters,
    ) -> (QueueProcessor, mpsc::Receiver<SpanData>, Arc<Notify>) {
        let (tx, rx) = mpsc::channel(max_queue_size.max(1));
        let full = Arc::new(Notify::new());
        let p = QueueProcessor {
            tx,
            counters,
            full: full.clone(),
            batch: batch.max(1),
        };
        (p, rx, full)
    }
}

impl std::fmt::Debug for QueueProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueProcessor").finish_non_exhaustive()
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.tx.try_send(span) {
            Ok(()) => {
                self.counters.queued.inc();
                if self.tx.max_capacity() - self.tx.capacity() >= self.batch {
                    self.full.notify_one();
                }
            }
            Err(_) => self.counters.dropped.inc(),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    // The queue's task drains on `SelfTraces::shutdown`.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The running self-tracing: the provider, and per processor its exporter and
/// batching task.
pub struct SelfTraces {
    host: Arc<Host>,
    tracer: Option<Arc<SelfTracer>>,
    provider: Option<SdkTracerProvider>,
    stop: watch::Sender<bool>,
    processors: Vec<(Arc<dyn Exporter>, JoinHandle<()>)>,
}

impl SelfTraces {
    /// Starts the exporters and installs the tracer in `host`. Off (an empty
    /// `SelfTraces`) when `service.telemetry.traces` does not turn it on.
    pub async fn start(
        registry: &Registry,
        telemetry: &Telemetry,
        host: Arc<Host>,
        cfg: &TelemetryConfig,
        instance_id: &str,
    ) -> Result<SelfTraces, SelfTelemetryError> {
        let (stop, stopped) = watch::channel(false);
        let Some(settings) = traces_settings(cfg)? else {
            return Ok(SelfTraces {
                host,
                tracer: None,
                provider: None,
                stop,
                processors: Vec::new(),
            });
        };
        let proto_resource = crate::self_telemetry::resource(cfg, instance_id)?;
        let sdk_resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes(proto_resource.attributes.iter().filter_map(|kv| {
                match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s),
                    ) => Some(KeyValue::new(kv.key.clone(), s.clone())),
                    _ => None,
                }
            }))
            .build();
        let mut builder = SdkTracerProvider::builder()
            .with_sampler(settings.sampler.build())
            .with_span_limits(settings.limits.sdk())
            .with_resource(sdk_resource.clone());
        let mut processors: Vec<(Arc<dyn Exporter>, JoinHandle<()>)> = Vec::new();
        for (i, p) in settings.processors.into_iter().enumerate() {
            let id = ComponentId {
                type_name: p.exporter_type.to_string(),
                name: Some(format!("self_telemetry_traces_{i}")),
            };
            let started = start_private_exporter(
                registry,
                telemetry,
                &host,
                &id,
                p.exporter_type,
                &p.exporter_config,
            )
            .await;
            let exporter = match started {
                Ok(e) => e,
                Err(e) => {
                    // The ones already started stop again.
                    for (exporter, task) in processors {
                        task.abort();
                        let _ = exporter.shutdown().await;
                    }
                    return Err(e);
                }
            };
            let name = id.to_string();
            let counters = SpanCounters::new(telemetry, &name);
            let (processor, rx, full) =
                QueueProcessor::new(p.max_queue_size, p.max_export_batch_size, counters.clone());
            builder = builder.with_span_processor(processor);
            let task = tokio::spawn(run_queue(
                (rx, full),
                exporter.clone(),
                ResourceAttributesWithSchema::from(&sdk_resource),
                p,
                Arc::from(name.as_str()),
                counters,
                stopped.clone(),
            ));
            processors.push((exporter, task));
        }
        let provider = builder.build();
        let tracer = provider.tracer_with_scope(
            InstrumentationScope::builder(SCOPE)
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        let tracer = Arc::new(SelfTracer {
            tracer,
            propagators: ExtractOptions::with_styles(&settings.propagators),
        });
        // Replaces the tracer of a previous SelfTraces (a reload): new spans go
        // to the new exporters at once, the old one drains what it holds.
        host.set_self_tracer(Some(tracer.clone()));
        Ok(SelfTraces {
            host,
            tracer: Some(tracer),
            provider: Some(provider),
            stop,
            processors,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.processors.is_empty()
    }

    /// Uninstalls the tracer, sends what is queued, stops the exporters.
    pub async fn shutdown(mut self) {
        if let Some(t) = &self.tracer {
            self.host.clear_self_tracer(t);
        }
        // Spans of work still in flight end after the queue's task is gone:
        // their hand-off fails and they are counted as dropped.
        drop(self.provider.take());
        let _ = self.stop.send(true);
        for (exporter, task) in self.processors {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            if let Err(e) = exporter.shutdown().await {
                tracing::warn!("self-traces exporter did not shut down cleanly: {e}");
            }
        }
    }
}

/// Batches one processor's queue and hands the batches to its exporter: a
/// batch leaves `schedule_delay` after its first span, or as soon as the queue
/// holds `max_export_batch_size`; at stop, everything queued leaves as one
/// batch. The task wakes about twice per batch, not per span.
async fn run_queue(
    (mut rx, full): (mpsc::Receiver<SpanData>, Arc<Notify>),
    exporter: Arc<dyn Exporter>,
    resource: ResourceAttributesWithSchema,
    spec: BatchSpec,
    origin: Arc<str>,
    counters: SpanCounters,
    mut stopped: watch::Receiver<bool>,
) {
    let max = spec.max_export_batch_size.max(1);
    loop {
        // Idle until a span arrives (or the stop).
        let first = tokio::select! {
            s = rx.recv() => s,
            _ = stopped.wait_for(|s| *s) => None,
        };
        let mut last = first.is_none();
        if let Some(s) = first {
            // Then wait out the delay, unless a full batch is there.
            if rx.len() + 1 < max {
                let deadline = tokio::time::sleep(spec.schedule_delay);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        // A permit may be left from a batch already sent: check.
                        _ = full.notified() => if rx.len() + 1 >= max { break },
                        _ = stopped.wait_for(|s| *s) => {
                            last = true;
                            break;
                        }
                    }
                }
            }
            let buf = vec![s];
            send_spans(
                &mut rx, buf, max, last, &exporter, &resource, &spec, &origin, &counters,
            )
            .await;
        }
        if last || *stopped.borrow() {
            // What is left, as one batch.
            send_spans(
                &mut rx,
                Vec::new(),
                max,
                true,
                &exporter,
                &resource,
                &spec,
                &origin,
                &counters,
            )
            .await;
            return;
        }
    }
}

/// Takes queued spans into `buf` (up to `max`, or all when `all`) and hands
/// them to the exporter as one batch.
#[allow(clippy::too_many_arguments)]
async fn send_spans(
    rx: &mut mpsc::Receiver<SpanData>,
    mut buf: Vec<SpanData>,
    max: usize,
    all: bool,
    exporter: &Arc<dyn Exporter>,
    resource: &ResourceAttributesWithSchema,
    spec: &BatchSpec,
    origin: &Arc<str>,
    counters: &SpanCounters,
) {
    while all || buf.len() < max {
        match rx.try_recv() {
            Ok(s) => buf.push(s),
            Err(_) => break,
        }
    }
    if buf.is_empty() {
        return;
    }
    let n = buf.len() as u64;
    let rs = group_spans_by_resource_and_scope(buf, resource);
    let batch = Batch::new(Payload::Traces(rs), origin.clone());
    match tokio::time::timeout(spec.export_timeout, exporter.consume(batch)).await {
        Ok(Ok(())) => counters.exported.add(n),
        _ => counters.refused.add(n),
    }
}

pub use opentelemetry::trace::{SpanContext, SpanKind};
pub use opentelemetry::KeyValue as Attr;
pub use opentelemetry::Value as AttrValue;

/// Trace-context headers for the requests of one send.
pub type OutgoingHeaders = Arc<[(String, String)]>;

tokio::task_local! {
    static OUTGOING: OutgoingHeaders;
}

/// The headers that carry the current send span to the next hop: set while an
/// exporter's attempt runs (`with_outgoing`), empty otherwise. Exporters add
/// them to their requests.
pub fn outgoing_headers() -> Option<OutgoingHeaders> {
    OUTGOING.try_with(Arc::clone).ok()
}

/// Runs `f` (one send attempt) with `headers` as its outgoing context.
pub async fn with_outgoing<F: std::future::Future>(
    headers: Option<OutgoingHeaders>,
    f: F,
) -> F::Output {
    match headers {
        Some(h) => OUTGOING.scope(h, f).await,
        None => f.await,
    }
}

/// Who sent a request, as far as weft's own tracing cares.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The remote parent read with the configured propagators.
    pub parent: Option<SpanContext>,
    /// The request is weft's own telemetry: not traced.
    pub self_telemetry: bool,
}

impl Caller {
    /// From a request's headers (names in lower case, as `http` keeps them).
    pub fn from_headers<'a>(
        tracer: &SelfTracer,
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Caller {
        let mut h = Headers::new();
        let mut self_telemetry = false;
        let wanted = tracer.reads_headers();
        for (k, v) in headers {
            if k == SELF_TELEMETRY_HEADER {
                self_telemetry = true;
            } else if wanted && is_context_header(k) {
                h.append(k, String::from_utf8_lossy(v).into_owned());
            }
        }
        if self_telemetry {
            return Caller {
                parent: None,
                self_telemetry,
            };
        }
        Caller {
            parent: tracer.remote_parent(&h),
            self_telemetry,
        }
    }
}

/// True for the headers some trace-context format reads (lower-case names).
fn is_context_header(name: &str) -> bool {
    matches!(
        name,
        "traceparent"
            | "tracestate"
            | "baggage"
            | "b3"
            | "uber-trace-id"
            | "sw8"
            | "sw8-correlation"
            | "x-amzn-trace-id"
    ) || [
        "x-b3-",
        "uberctx-",
        "ot-tracer-",
        "ot-baggage-",
        "x-datadog-",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// A receive span's name, as the collector's receivers name theirs.
pub fn receive_span_name(receiver: &str, signal: Signal) -> String {
    let what = match signal {
        Signal::Traces => "TraceDataReceived",
        Signal::Metrics => "MetricsReceived",
        Signal::Logs => "LogsReceived",
    };
    format!("receiver/{receiver}/{what}")
}

/// The collector's item word of a signal in attribute names
/// (`accepted_spans`, `refused_metric_points`, `accepted_log_records`).
pub fn items_word(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "spans",
        Signal::Metrics => "metric_points",
        Signal::Logs => "log_records",
    }
}

/// A list of strings as one attribute value.
pub fn string_array(items: &[String]) -> AttrValue {
    let values: Vec<opentelemetry::StringValue> = items.iter().map(|s| s.clone().into()).collect();
    AttrValue::Array(values.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcfg(yaml: &str) -> TelemetryConfig {
        serde_yaml_ng::from_str(yaml).expect("telemetry yaml")
    }

    #[test]
    fn off_unless_a_processor_sends_spans() {
        assert_eq!(traces_settings(&tcfg("{}")).expect("ok"), None);
        assert_eq!(traces_settings(&tcfg("traces: {}")).expect("ok"), None);
        assert_eq!(
            traces_settings(&tcfg(
                "traces: {level: none, processors: [{batch: {exporter: {otlp: {}}}}]}"
            ))
            .expect("ok"),
            None
        );
    }

    #[test]
    fn the_collectors_declarative_form() {
        let s = traces_settings(&tcfg(
            "traces:\n  propagators: [tracecontext, b3, none]\n  sampler: {parent_based: {root: {trace_id_ratio_based: {ratio: 0.25}}}}\n  limits: {attribute_count_limit: 64}\n  processors:\n    - batch:\n        schedule_delay: 200\n        max_queue_size: 100\n        max_export_batch_size: 10\n        exporter:\n          otlp:\n            protocol: http/protobuf\n            endpoint: http://127.0.0.1:4318\n            headers: [{name: x-tenant, value: a}]\n    - simple: {exporter: {otlp_grpc: {endpoint: http://127.0.0.1:4317}}}\n",
        ))
        .expect("ok")
        .expect("on");
        assert_eq!(s.level, "basic");
        assert_eq!(s.propagators, vec![Style::TraceContext, Style::B3]);
        let SamplerSpec::ParentBased {
            root,
            remote_parent_not_sampled,
            ..
        } = &s.sampler
        else {
            panic!("parent based: {:?}", s.sampler)
        };
        assert_eq!(**root, SamplerSpec::Ratio(0.25));
        assert_eq!(**remote_parent_not_sampled, SamplerSpec::AlwaysOff);
        assert_eq!(s.limits.attributes, 64);
        let b = &s.processors[0];
        assert_eq!(
            (
                b.schedule_delay,
                b.export_timeout,
                b.max_queue_size,
                b.max_export_batch_size
            ),
            (Duration::from_millis(200), DEFAULT_EXPORT_TIMEOUT, 100, 10)
        );
        assert_eq!(b.exporter_type, "otlp_http");
        assert_eq!(
            b.exporter_config["traces_endpoint"].as_str(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(b.exporter_config["headers"]["x-tenant"].as_str(), Some("a"));
        assert_eq!(
            b.exporter_config["headers"][SELF_TELEMETRY_HEADER].as_str(),
            Some("traces")
        );
        let simple = &s.processors[1];
        assert_eq!(simple.exporter_type, "otlp_grpc");
        assert_eq!(simple.schedule_delay, Duration::from_millis(1));
    }

    #[test]
    fn bad_traces_config_says_what_is_wrong() {
        for (yaml, want) in [
            ("traces: {level: loud}", "valid: none, basic"),
            ("traces: {propagators: [smoke]}", "unknown propagation style"),
            ("traces: {processors: [{batch: {}}]}", "traces exporter is needed"),
            ("traces: {processors: [{batch: 3}]}", "expected a map"),
            ("traces: {processors: [{lazy: {exporter: {otlp: {}}}}]}", "unknown span processor"),
            ("traces: {processors: [{batch: {exporter: {console: {}}}}]}", "not supported"),
            ("traces: {processors: [{batch: {max_queue_size: 5, max_export_batch_size: 6, exporter: {otlp: {}}}}]}", "more than max_queue_size"),
            ("traces: {sampler: {always_maybe: {}}}", "unknown sampler"),
            ("traces: {sampler: {trace_id_ratio_based: {ratio: 2}}}", "from 0 to 1"),
            ("traces: {limits: {span_count_limit: 3}}", "unknown key"),
            ("traces: {exporters: []}", "unknown key"),
        ] {
            let e = traces_settings(&tcfg(yaml)).expect_err(yaml).to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    fn tracer(propagators: &[Style]) -> (SelfTracer, mpsc::Receiver<SpanData>, SpanCounters) {
        let counters = SpanCounters::new(&Telemetry::new(), "test");
        let (processor, rx, _) = QueueProcessor::new(2, 2, counters.clone());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = SelfTracer {
            tracer: provider.tracer("test"),
            propagators: ExtractOptions::with_styles(propagators),
        };
        (tracer, rx, counters)
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let (t, mut rx, counters) = tracer(&[]);
        for i in 0..5 {
            t.start(
                format!("s{i}"),
                SpanKind::Internal,
                Parent::Remote(None),
                vec![],
            )
            .end();
        }
        assert_eq!(counters.queued.get(), 2);
        assert_eq!(counters.dropped.get(), 3);
        let first = rx.try_recv().expect("queued span");
        assert_eq!(first.name, "s0");
    }

    #[test]
    fn children_and_links() {
        let (t, mut rx, _) = tracer(&[]);
        let a = t.start("a".into(), SpanKind::Server, Parent::Remote(None), vec![]);
        let b = t.start("b".into(), SpanKind::Server, Parent::Remote(None), vec![]);
        let (ca, cb) = (a.context(), b.context());
        let child = t.start(
            "child".into(),
            SpanKind::Client,
            Parent::Of(std::slice::from_ref(&ca)),
            vec![],
        );
        assert_eq!(child.context().trace_id(), ca.trace_id());
        child.end();
        let span = rx.try_recv().expect("child");
        assert_eq!(span.parent_span_id, ca.span_id());
        let merged = t.start(
            "merged".into(),
            SpanKind::Client,
            Parent::Of(&[ca.clone(), cb.clone()]),
            vec![],
        );
        merged.end();
        let span = rx.try_recv().expect("merged");
        assert_eq!(span.parent_span_id, SpanId::INVALID);
        let linked: Vec<_> = span
            .links
            .iter()
            .map(|l| l.span_context.span_id())
            .collect();
        assert_eq!(linked, vec![ca.span_id(), cb.span_id()]);
    }

    #[test]
    fn remote_parent_with_the_configured_propagators_only() {
        let (t, _, _) = tracer(&[Style::B3]);
        let h: Headers = [
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ]
        .into_iter()
        .collect();
        let p = t.remote_parent(&h).expect("b3 parent");
        assert_eq!(
            format!("{:032x}", p.trace_id()),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(format!("{:016x}", p.span_id()), "e457b5a2e4d86bd1");
        assert!(p.is_remote() && p.is_sampled());
        let (none, _, _) = tracer(&[]);
        assert!(none.remote_parent(&h).is_none());
        // The same formats carry a send span's context to the next hop.
        let (both, _, _) = tracer(&[Style::TraceContext, Style::Baggage, Style::B3]);
        let out = both.inject(&p).expect("headers");
        let out: Vec<(&str, &str)> = out.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            out,
            vec![
                (
                    "traceparent",
                    "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"
                ),
                ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ]
        );
        assert!(none.inject(&p).is_none());
        // The self-telemetry marker: not traced, whatever the headers say.
        let c = Caller::from_headers(
            &t,
            [
                (
                    "b3",
                    &b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"[..],
                ),
                (SELF_TELEMETRY_HEADER, &b"traces"[..]),
            ]
            .into_iter(),
        );
        assert!(c.self_telemetry && c.parent.is_none());
    }

    /// Records the span count of every batch it takes.
    struct Record(std::sync::Mutex<Vec<usize>>);
    #[async_trait::async_trait]
    impl crate::component::Lifecycle for Record {}
    #[async_trait::async_trait]
    impl crate::consumer::Consumer for Record {
        async fn consume(&self, b: Batch) -> Result<(), crate::consumer::ConsumeError> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(b.item_count());
            Ok(())
        }
    }
    impl Exporter for Record {}

    #[tokio::test(start_paused = true)]
    async fn the_queue_sends_full_batches_at_once_and_the_rest_at_stop() {
        let counters = SpanCounters::new(&Telemetry::new(), "test");
        let (processor, rx, full) = QueueProcessor::new(100, 2, counters.clone());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = SelfTracer {
            tracer: provider.tracer("test"),
            propagators: ExtractOptions::with_styles(&[]),
        };
        let record = Arc::new(Record(std::sync::Mutex::new(Vec::new())));
        let (stop, stopped) = watch::channel(false);
        let spec = BatchSpec {
            schedule_delay: Duration::from_secs(3600),
            export_timeout: Duration::from_secs(1),
            max_queue_size: 100,
            max_export_batch_size: 2,
            exporter_type: "otlp_grpc",
            exporter_config: Value::Null,
        };
        let task = tokio::spawn(run_queue(
            (rx, full),
            record.clone(),
            ResourceAttributesWithSchema::from(
                &opentelemetry_sdk::Resource::builder_empty().build(),
            ),
            spec,
            Arc::from("self"),
            counters.clone(),
            stopped,
        ));
        for i in 0..5 {
            tracer
                .start(
                    format!("s{i}"),
                    SpanKind::Internal,
                    Parent::Remote(None),
                    vec![],
                )
                .end();
        }
        // Two full batches leave without waiting for the (hour-long) delay.
        for _ in 0..100 {
            if record.0.lock().unwrap_or_else(|p| p.into_inner()).len() >= 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            *record.0.lock().unwrap_or_else(|p| p.into_inner()),
            vec![2, 2]
        );
        let _ = stop.send(true);
        task.await.expect("queue task");
        assert_eq!(
            *record.0.lock().unwrap_or_else(|p| p.into_inner()),
            vec![2, 2, 1]
        );
        assert_eq!((counters.queued.get(), counters.exported.get()), (5, 5));
        // After the stop a span has nowhere to go: dropped, counted.
        tracer
            .start(
                "late".into(),
                SpanKind::Internal,
                Parent::Remote(None),
                vec![],
            )
            .end();
        assert_eq!(counters.dropped.get(), 1);
    }
}
