//! Datadog spans to OTLP, as the collector's `datadogreceiver` translates
//! them: one resource per service, the operation name as the span name,
//! meta and metrics as attributes under OpenTelemetry's names, 128-bit trace
//! ids rebuilt from `_dd.p.tid`.

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::decode::{DdChunk, DdPayload, DdSpan, Str};

/// The semantic-conventions version of the attribute names used here.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.38.0";
/// The instrumentation scope every translated span gets.
pub const SCOPE_NAME: &str = "Datadog";
/// Meta key holding the upper 64 bits of a 128-bit trace id, as 16 hex digits.
pub const TRACE_ID_HIGH_KEY: &str = "_dd.p.tid";
/// The "no priority" value of a v0.7 chunk.
const PRIORITY_NONE: i32 = -128;

/// What the request's headers say about the tracer (the Agent's
/// `Datadog-Meta-*` and `Datadog-Container-ID`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracerHeaders {
    /// `Datadog-Meta-Lang`: `python`, `go`, `.NET`...
    pub lang: Option<String>,
    /// `Datadog-Meta-Lang-Version`.
    pub lang_version: Option<String>,
    /// `Datadog-Meta-Tracer-Version`.
    pub tracer_version: Option<String>,
    /// `Datadog-Container-ID`.
    pub container_id: Option<String>,
}

/// The upper 64 trace-id bits seen for recent traces, keyed by the lower 64:
/// a bounded least-recently-used map.
#[derive(Debug)]
pub struct TraceIdCache {
    capacity: usize,
    clock: u64,
    /// low 64 bits -> (high 64 bits, last use)
    entries: HashMap<u64, (u64, u64)>,
    /// last use -> low 64 bits, oldest first
    by_use: BTreeMap<u64, u64>,
}

impl TraceIdCache {
    /// A cache of `capacity` traces; 0 remembers nothing.
    pub fn new(capacity: usize) -> TraceIdCache {
        TraceIdCache {
            capacity,
            clock: 0,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The high bits remembered for `low`, marking it used.
    pub fn get(&mut self, low: u64) -> Option<u64> {
        let now = self.tick();
        let (high, used) = self.entries.get_mut(&low)?;
        self.by_use.remove(used);
        *used = now;
        self.by_use.insert(now, low);
        Some(*high)
    }

    /// Remembers `high` for `low`, forgetting the least recently used trace
    /// when full.
    pub fn insert(&mut self, low: u64, high: u64) {
        if self.capacity == 0 {
            return;
        }
        let now = self.tick();
        if let Some((_, used)) = self.entries.insert(low, (high, now)) {
            self.by_use.remove(&used);
        }
        self.by_use.insert(now, low);
        while self.entries.len() > self.capacity {
            match self.by_use.pop_first() {
                Some((_, oldest)) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
    }
}

/// Parses a `_dd.p.tid` value: 16 hex digits, not all zero.
pub fn parse_trace_id_high(value: &str) -> Option<u64> {
    if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(value, 16).ok().filter(|&v| v != 0)
}

/// The upper trace-id bits of every span of every chunk, in order: from a
/// `_dd.p.tid` tag in the same chunk (on any span, or the v0.7 chunk tags)
/// for the same lower 64 bits, else from the cache. Tags seen are
/// remembered; a tag overrides what the cache held.
pub fn resolve_trace_id_highs(payload: &DdPayload<'_>, cache: &mut TraceIdCache) -> Vec<Vec<u64>> {
    payload
        .chunks
        .iter()
        .map(|chunk| {
            // Usually one trace per chunk: resolve each distinct low id once.
            let mut resolved = chunk_tids(chunk);
            for (&low, &high) in &resolved {
                cache.insert(low, high);
            }
            chunk
                .spans
                .iter()
                .map(|span| {
                    *resolved
                        .entry(span.trace_id)
                        .or_insert_with(|| cache.get(span.trace_id).unwrap_or(0))
                })
                .collect()
        })
        .collect()
}

/// low -> high for each trace in the chunk that carries a valid tag; the
/// first tag of a trace counts.
fn chunk_tids(chunk: &DdChunk<'_>) -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    let chunk_tag = chunk
        .tags
        .iter()
        .rev()
        .find(|(k, _)| k == TRACE_ID_HIGH_KEY)
        .and_then(|(_, v)| parse_trace_id_high(v));
    if let (Some(high), Some(first)) = (chunk_tag, chunk.spans.first()) {
        out.insert(first.trace_id, high);
    }
    for span in &chunk.spans {
        if let Some(high) = span
            .meta(TRACE_ID_HIGH_KEY)
            .and_then(|v| parse_trace_id_high(v))
        {
            out.entry(span.trace_id).or_insert(high);
        }
    }
    out
}

/// Datadog keys that have an OpenTelemetry name (compared lowercased), the
/// collector's table.
const KEY_MAP: &[(&str, &str)] = &[
    ("env", "deployment.environment.name"),
    ("service", "service.name"),
    ("version", "service.version"),
    ("container_id", "container.id"),
    ("container_name", "container.name"),
    ("image_name", "container.image.name"),
    ("image_tag", "container.image.tags"),
    ("runtime", "container.runtime.name"),
    ("cloud_provider", "cloud.provider"),
    ("region", "cloud.region"),
    ("zone", "cloud.availability_zone"),
    ("task_family", "aws.ecs.task.family"),
    ("task_arn", "aws.ecs.task.arn"),
    ("ecs_cluster_name", "aws.ecs.cluster.arn"),
    ("task_version", "aws.ecs.task.revision"),
    ("ecs_container_name", "aws.ecs.container.arn"),
    ("kube_container_name", "k8s.container.name"),
    ("kube_cluster_name", "k8s.cluster.name"),
    ("kube_deployment", "k8s.deployment.name"),
    ("kube_replica_set", "k8s.replicaset.name"),
    ("kube_stateful_set", "k8s.statefulset.name"),
    ("kube_daemon_set", "k8s.daemonset.name"),
    ("kube_job", "k8s.job.name"),
    ("kube_cronjob", "k8s.cronjob.name"),
    ("kube_namespace", "k8s.namespace.name"),
    ("pod_name", "k8s.pod.name"),
    ("http.client_ip", "client.address"),
    ("http.response.content_length", "http.response.body.size"),
    ("http.status_code", "http.response.status_code"),
    ("http.request.content_length", "http.request.body.size"),
    ("http.referer", "http.request.header.referer"),
    ("http.method", "http.request.method"),
    ("http.route", "http.route"),
    ("http.version", "network.protocol.version"),
    ("http.server_name", "server.address"),
    ("http.url", "url.full"),
    ("http.useragent", "user_agent.original"),
    ("aws.s3.bucket_name", "aws.s3.bucket"),
    ("aws.response.request_id", "aws.request_id"),
    ("aws.service", "rpc.service"),
    ("aws.operation", "rpc.method"),
    ("db.type", "db.system.name"),
    ("db.operation", "db.operation.name"),
    ("db.instance", "db.namespace"),
    ("db.sql.table", "db.collection.name"),
    ("db.pool.name", "db.client.connection.pool.name"),
    ("db.statement", "db.query.text"),
    ("process_id", "process.pid"),
    ("error.stacktrace", "exception.stacktrace"),
    ("error.msg", "exception.message"),
];

/// The OpenTelemetry name of a Datadog tag or metric key; unknown keys keep
/// their name.
pub fn otel_key(key: &str) -> String {
    // Every tag of every span passes here: a hashed lookup, lowercasing only
    // the rare key that has upper-case letters.
    static BY_KEY: std::sync::OnceLock<HashMap<&'static str, &'static str>> =
        std::sync::OnceLock::new();
    let by_key = BY_KEY.get_or_init(|| KEY_MAP.iter().copied().collect());
    let found = if key.bytes().any(|b| b.is_ascii_uppercase()) {
        by_key.get(key.to_ascii_lowercase().as_str())
    } else {
        by_key.get(key)
    };
    if let Some(otel) = found {
        return (*otel).to_string();
    }
    if let Some(h) = key.strip_prefix("http.response.headers.") {
        return format!("http.response.header.{h}");
    }
    if let Some(h) = key.strip_prefix("http.request.headers.") {
        return format!("http.request.header.{h}");
    }
    key.to_string()
}

/// Meta keys consumed by the translation instead of copied.
const SPAN_LINKS_KEY: &str = "_dd.span_links";
const SPAN_EVENTS_KEY: &str = "events";
const SPAN_EVENTS_HAS_EXCEPTION_KEY: &str = "_dd.span_events.has_exception";

fn string_value(s: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    })
}

fn double_value(v: f64) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::DoubleValue(v)),
    })
}

/// Attributes built by successive puts where a later put of a key replaces
/// an earlier one; finished sorted by key.
#[derive(Default)]
struct Attrs(Vec<KeyValue>);

impl Attrs {
    fn put(&mut self, key: String, value: Option<AnyValue>) {
        self.0.push(KeyValue {
            key,
            value,
            ..Default::default()
        });
    }

    fn put_str(&mut self, key: &str, value: impl Into<String>) {
        self.put(key.to_string(), string_value(value));
    }

    fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|kv| kv.key == key)
    }

    fn finish(mut self) -> Vec<KeyValue> {
        // Stable: equal keys stay in put order, so keeping the last keeps the latest.
        self.0.sort_by(|a, b| a.key.cmp(&b.key));
        let mut out: Vec<KeyValue> = Vec::with_capacity(self.0.len());
        for kv in self.0 {
            match out.last_mut() {
                Some(last) if last.key == kv.key => *last = kv,
                _ => out.push(kv),
            }
        }
        out
    }
}

/// The attributes every resource of the request shares.
fn shared_resource_attrs(payload: &DdPayload<'_>, headers: &TracerHeaders) -> Attrs {
    let t = &payload.tracer;
    let or_header = |body: &Str<'_>, header: &Option<String>| -> String {
        if body.is_empty() {
            header.clone().unwrap_or_default()
        } else {
            body.to_string()
        }
    };
    let app_version = if t.app_version.is_empty() {
        payload
            .chunks
            .iter()
            .flat_map(|c| &c.spans)
            .find_map(|s| s.meta("version").filter(|v| !v.is_empty()))
            .map(|v| v.to_string())
            .unwrap_or_default()
    } else {
        t.app_version.to_string()
    };
    let mut attrs = Attrs::default();
    for (key, value) in [
        (
            "container.id",
            or_header(&t.container_id, &headers.container_id),
        ),
        (
            "telemetry.sdk.language",
            or_header(&t.language_name, &headers.lang),
        ),
        (
            "process.runtime.version",
            or_header(&t.language_version, &headers.lang_version),
        ),
        ("deployment.environment.name", t.env.to_string()),
        ("host.name", t.hostname.to_string()),
        ("service.version", app_version),
        ("telemetry.sdk.name", SCOPE_NAME.to_string()),
        ("telemetry.sdk.version", t.tracer_version.to_string()),
    ] {
        if !value.is_empty() {
            attrs.put_str(key, value);
        }
    }
    for (k, v) in &t.tags {
        if !v.is_empty() {
            attrs.put(otel_key(k), string_value(v.as_ref()));
        }
    }
    // As the collector does, the headers have the last word.
    if let Some(v) = headers.tracer_version.as_deref().filter(|v| !v.is_empty()) {
        attrs.put_str("telemetry.sdk.version", format!("Datadog-{v}"));
    }
    if let Some(lang) = headers.lang.as_deref().filter(|v| !v.is_empty()) {
        attrs.put_str(
            "telemetry.sdk.language",
            if lang == ".NET" { "dotnet" } else { lang },
        );
    }
    attrs
}

/// Translates a decoded payload. `highs` comes from
/// [`resolve_trace_id_highs`] for the same payload.
pub fn translate(
    payload: &DdPayload<'_>,
    headers: &TracerHeaders,
    highs: &[Vec<u64>],
) -> Vec<ResourceSpans> {
    let shared = shared_resource_attrs(payload, headers).finish();
    let scope_version = if payload.tracer.tracer_version.is_empty() {
        headers.tracer_version.clone().unwrap_or_default()
    } else {
        payload.tracer.tracer_version.to_string()
    };
    // Services in order of first appearance.
    let mut services: Vec<(String, Vec<Span>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (c, chunk) in payload.chunks.iter().enumerate() {
        let priority = chunk_sampling_priority(chunk);
        for (s, span) in chunk.spans.iter().enumerate() {
            let high = highs.get(c).and_then(|h| h.get(s)).copied().unwrap_or(0);
            let (service, otel) = translate_span(span, high, priority);
            match index.get(&service) {
                Some(&i) => services[i].1.push(otel),
                None => {
                    index.insert(service.clone(), services.len());
                    services.push((service, vec![otel]));
                }
            }
        }
    }
    services
        .into_iter()
        .map(|(service, spans)| {
            let mut attributes = shared.clone();
            attributes.retain(|kv| kv.key != "service.name");
            attributes.insert(
                0,
                KeyValue {
                    key: "service.name".to_string(),
                    value: string_value(service),
                    ..Default::default()
                },
            );
            ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_string(),
                        version: scope_version.clone(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: SCHEMA_URL.to_string(),
            }
        })
        .collect()
}

/// The chunk's priority (v0.7), else the first span's `_sampling_priority_v1`.
fn chunk_sampling_priority(chunk: &DdChunk<'_>) -> Option<f64> {
    if let Some(p) = chunk.priority.filter(|&p| p != PRIORITY_NONE) {
        return Some(p.into());
    }
    chunk
        .spans
        .iter()
        .find_map(|s| s.metric("_sampling_priority_v1"))
}

fn id_bytes(id: u64) -> Vec<u8> {
    if id == 0 {
        Vec::new()
    } else {
        id.to_be_bytes().to_vec()
    }
}

fn trace_id_bytes(high: u64, low: u64) -> Vec<u8> {
    if high == 0 && low == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&high.to_be_bytes());
    out.extend_from_slice(&low.to_be_bytes());
    out
}

/// One span; returns the service whose resource it belongs to.
fn translate_span(span: &DdSpan<'_>, high: u64, priority: Option<f64>) -> (String, Span) {
    let mut service = span.service.to_string();
    let mut attrs = Attrs::default();
    attrs.put_str("dd.span.Resource", span.resource.as_ref());
    if let Some(p) = priority {
        attrs.put_str("sampling.priority", format!("{p:.6}"));
    }
    attrs.put_str("datadog.span.id", span.span_id.to_string());
    attrs.put_str("datadog.trace.id", span.trace_id.to_string());
    // Integration spans (a database client...) carry their own service; the
    // application's is in `_dd.base_service`. Group under the application.
    if let Some(base) = span.meta("_dd.base_service").filter(|b| !b.is_empty()) {
        attrs.put_str("service.name", span.service.as_ref());
        service = base.to_string();
    }
    for (k, v) in &span.meta {
        if k == SPAN_LINKS_KEY || k == SPAN_EVENTS_KEY || k == SPAN_EVENTS_HAS_EXCEPTION_KEY {
            continue;
        }
        attrs.put(otel_key(k), string_value(v.as_ref()));
    }
    for (k, v) in &span.metrics {
        attrs.put(otel_key(k), double_value(*v));
    }

    let kind = span_kind(span);
    let mut otel = Span {
        trace_id: trace_id_bytes(high, span.trace_id),
        span_id: id_bytes(span.span_id),
        parent_span_id: id_bytes(span.parent_id),
        name: span.name.to_string(),
        kind: kind as i32,
        // Negative times are nonsense a tracer can still send: clamp to 0.
        start_time_unix_nano: span.start.max(0) as u64,
        end_time_unix_nano: (span.start.max(0) as u64).saturating_add(span.duration.max(0) as u64),
        status: Some(status(span)),
        links: links(span),
        events: events(span),
        ..Default::default()
    };
    if matches!(
        kind,
        SpanKind::Client | SpanKind::Producer | SpanKind::Consumer
    ) && !attrs.contains("server.address")
    {
        if let Some(host) = span.meta("peer.hostname") {
            attrs.put_str("server.address", host.as_ref());
        }
    }
    by_operation(span, &mut otel, &mut attrs);
    otel.attributes = attrs.finish();
    (service, otel)
}

fn status(span: &DdSpan<'_>) -> Status {
    if span.error == 0 {
        return Status {
            code: StatusCode::Ok as i32,
            message: String::new(),
        };
    }
    let message = span
        .meta("error.message")
        .or_else(|| span.meta("error.msg"))
        .map(|m| m.to_string())
        .unwrap_or_default();
    Status {
        code: StatusCode::Error as i32,
        message,
    }
}

/// `span.kind` meta wins; else the span type: `web` serves, `http` calls.
fn span_kind(span: &DdSpan<'_>) -> SpanKind {
    match span.meta("span.kind").map(|k| k.as_ref()) {
        Some("server") => SpanKind::Server,
        Some("client") => SpanKind::Client,
        Some("producer") => SpanKind::Producer,
        Some("consumer") => SpanKind::Consumer,
        Some("internal") => SpanKind::Internal,
        _ => match span.span_type.as_ref() {
            "web" => SpanKind::Server,
            "http" => SpanKind::Client,
            _ => SpanKind::Unspecified,
        },
    }
}

/// Names (and a few attributes) for well-known operations, as the collector
/// derives them, following OpenTelemetry's span naming rules.
fn by_operation(span: &DdSpan<'_>, otel: &mut Span, attrs: &mut Attrs) {
    let meta = |k: &str| span.meta(k).map(|v| v.as_ref());
    match span.name.as_ref() {
        "servlet.request" | "http.request" | "web.request" => {
            if let Some(method) = meta("http.method") {
                otel.name = match meta("http.route") {
                    Some(route) => format!("{method} {route}"),
                    None => method.to_string(),
                };
            }
        }
        "spring.handler" => {
            otel.name = span.resource.to_string();
            otel.kind = SpanKind::Internal as i32;
        }
        "postgresql.query" | "redis.query" => {
            if let Some(summary) = meta("db.query.summary") {
                otel.name = summary.to_string();
            } else if let Some(op) = meta("db.operation") {
                let target = ["db.instance", "db.namespace", "peer.hostname"]
                    .into_iter()
                    .filter_map(meta)
                    .find(|v| !v.is_empty());
                otel.name = match target {
                    Some(t) => format!("{op} {t}"),
                    None => op.to_string(),
                };
            } else if let Some(system) = meta("db.type") {
                otel.name = system.to_string();
            }
        }
        "grpc.server" | "grpc.client" => grpc(span, otel, attrs),
        "aws.request" | "aws.command" => {
            attrs.put_str("rpc.system.name", "aws-api");
            if let Some(service) = meta("aws.service") {
                otel.name = match meta("aws.operation") {
                    Some(op) => format!("{service}/{op}"),
                    None => service.to_string(),
                };
            }
        }
        _ => {}
    }
}

fn grpc(span: &DdSpan<'_>, otel: &mut Span, attrs: &mut Attrs) {
    attrs.put_str("rpc.system.name", "grpc");
    // Datadog keeps the gRPC status code number in `error`.
    attrs.put_str("rpc.response.status_code", span.error.to_string());
    let meta = |k: &str| span.meta(k).map(|v| v.as_ref());
    // `/package.Service/Method` -> (service, method)
    let split = |full: &str| -> Option<(String, String)> {
        let (s, m) = full.trim_start_matches('/').split_once('/')?;
        Some((s.to_string(), m.to_string()))
    };
    let (service, method) = if let Some(method) = meta("rpc.method") {
        (
            meta("rpc.service").unwrap_or("").to_string(),
            method.to_string(),
        )
    } else if let Some(full) = meta("rpc.grpc.full_method") {
        split(full).unwrap_or_default()
    } else if let Some(full) = meta("grpc.method.name") {
        split(full).unwrap_or_else(|| (full.trim_start_matches('/').to_string(), String::new()))
    } else {
        split(&span.resource).unwrap_or_default()
    };
    if !method.is_empty() {
        attrs.put_str("rpc.method", method.as_str());
        attrs.put_str("rpc.service", service.as_str());
        otel.name = format!("{service}/{method}");
    } else if !service.is_empty() {
        attrs.put_str("rpc.service", service.as_str());
        otel.name = service;
    }
}

/// Native links win; else the `_dd.span_links` JSON that v0.5 payloads and
/// older tracers send. A malformed JSON list is dropped.
fn links(span: &DdSpan<'_>) -> Vec<Link> {
    if !span.links.is_empty() {
        return span
            .links
            .iter()
            .map(|l| Link {
                trace_id: trace_id_bytes(l.trace_id_high, l.trace_id),
                span_id: id_bytes(l.span_id),
                trace_state: l.tracestate.to_string(),
                attributes: l
                    .attributes
                    .iter()
                    .map(|(k, v)| KeyValue {
                        key: k.to_string(),
                        value: string_value(v.as_ref()),
                        ..Default::default()
                    })
                    .collect(),
                flags: link_flags(l.flags),
                ..Default::default()
            })
            .collect();
    }
    match span.meta(SPAN_LINKS_KEY) {
        Some(raw) => json_links(raw).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "ignoring malformed {SPAN_LINKS_KEY}");
            Vec::new()
        }),
        None => Vec::new(),
    }
}

/// Datadog sets bit 31 to say the W3C trace flags in the low byte are
/// present; OTLP link flags carry only those.
fn link_flags(flags: u32) -> u32 {
    if flags & (1 << 31) != 0 {
        flags & 0xff
    } else {
        0
    }
}

#[derive(serde::Deserialize)]
struct JsonLink {
    trace_id: serde_json::Value,
    #[serde(default)]
    trace_id_high: Option<u64>,
    span_id: serde_json::Value,
    #[serde(default)]
    tracestate: Option<String>,
    #[serde(default)]
    flags: Option<u32>,
    #[serde(default)]
    attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An id as hex text or a decimal number.
fn json_id(v: &serde_json::Value, hex_len: usize) -> Result<u128, String> {
    match v {
        serde_json::Value::String(s)
            if s.len() == hex_len && s.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            u128::from_str_radix(s, 16).map_err(|_| format!("{s:?} is not {hex_len} hex digits"))
        }
        serde_json::Value::Number(n) => n
            .as_u64()
            .map(u128::from)
            .ok_or_else(|| format!("{n} is not an unsigned 64-bit id")),
        other => Err(format!("{other} is not an id")),
    }
}

fn json_links(raw: &str) -> Result<Vec<Link>, String> {
    let list: Vec<JsonLink> = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    list.into_iter()
        .map(|l| {
            let trace = json_id(&l.trace_id, 32)?;
            let trace = if l.trace_id.is_number() {
                (u128::from(l.trace_id_high.unwrap_or(0)) << 64) | trace
            } else {
                trace
            };
            let span_id = json_id(&l.span_id, 16)? as u64;
            Ok(Link {
                trace_id: trace_id_bytes((trace >> 64) as u64, trace as u64),
                span_id: id_bytes(span_id),
                trace_state: l.tracestate.unwrap_or_default(),
                attributes: json_attributes(l.attributes),
                flags: link_flags(l.flags.unwrap_or(0)),
                ..Default::default()
            })
        })
        .collect()
}

fn json_value(v: serde_json::Value) -> Option<AnyValue> {
    use any_value::Value as V;
    let value = match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => V::BoolValue(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => V::StringValue(s),
        serde_json::Value::Array(items) => V::ArrayValue(ArrayValue {
            values: items.into_iter().filter_map(json_value).collect(),
        }),
        // Datadog attributes are flat; keep a nested object as its JSON text.
        obj @ serde_json::Value::Object(_) => V::StringValue(obj.to_string()),
    };
    Some(AnyValue { value: Some(value) })
}

fn json_attributes(attrs: Option<serde_json::Map<String, serde_json::Value>>) -> Vec<KeyValue> {
    attrs
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, v)| {
            Some(KeyValue {
                key,
                value: Some(json_value(v)?),
                ..Default::default()
            })
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct JsonEvent {
    #[serde(default)]
    name: String,
    #[serde(default)]
    time_unix_nano: u64,
    #[serde(default)]
    attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Span events from the `events` meta JSON (sent while the receiver does not
/// advertise native span events). A malformed list is dropped.
fn events(span: &DdSpan<'_>) -> Vec<Event> {
    let Some(raw) = span.meta(SPAN_EVENTS_KEY) else {
        return Vec::new();
    };
    match serde_json::from_str::<Vec<JsonEvent>>(raw) {
        Ok(list) => list
            .into_iter()
            .map(|e| Event {
                time_unix_nano: e.time_unix_nano,
                name: e.name,
                attributes: json_attributes(e.attributes),
                dropped_attributes_count: 0,
            })
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "ignoring malformed span events");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn span(meta: &[(&'static str, &'static str)]) -> DdSpan<'static> {
        DdSpan {
            service: Cow::Borrowed("svc"),
            name: Cow::Borrowed("op"),
            resource: Cow::Borrowed("res"),
            trace_id: 1,
            span_id: 2,
            meta: meta
                .iter()
                .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
                .collect(),
            ..DdSpan::default()
        }
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn str_attr(s: &Span, key: &str) -> Option<String> {
        match attr(s, key) {
            Some(any_value::Value::StringValue(v)) => Some(v.clone()),
            _ => None,
        }
    }

    fn one(span: DdSpan<'static>) -> (String, Span) {
        translate_span(&span, 0, None)
    }

    #[test]
    fn keys_translate_like_the_collector() {
        assert_eq!(otel_key("env"), "deployment.environment.name");
        assert_eq!(otel_key("ENV"), "deployment.environment.name");
        assert_eq!(otel_key("http.status_code"), "http.response.status_code");
        assert_eq!(otel_key("db.statement"), "db.query.text");
        assert_eq!(
            otel_key("http.request.headers.x-id"),
            "http.request.header.x-id"
        );
        assert_eq!(
            otel_key("http.response.headers.etag"),
            "http.response.header.etag"
        );
        assert_eq!(otel_key("custom.tag"), "custom.tag");
        assert_eq!(otel_key("_dd.p.tid"), "_dd.p.tid");
    }

    #[test]
    fn cache_is_lru_and_bounded() {
        let mut c = TraceIdCache::new(2);
        c.insert(1, 10);
        c.insert(2, 20);
        assert_eq!(c.get(1), Some(10));
        c.insert(3, 30); // 2 is the least recently used
        assert_eq!((c.get(1), c.get(2), c.get(3)), (Some(10), None, Some(30)));
        c.insert(1, 11); // replacing keeps the size
        assert_eq!((c.len(), c.get(1)), (2, Some(11)));
        let mut off = TraceIdCache::new(0);
        off.insert(1, 10);
        assert!(off.is_empty());
        assert_eq!(off.get(1), None);
    }

    #[test]
    fn trace_id_high_is_16_hex_digits_not_zero() {
        assert_eq!(
            parse_trace_id_high("640cfd8d00000000"),
            Some(0x640cfd8d00000000)
        );
        assert_eq!(
            parse_trace_id_high("640CFD8D00000000"),
            Some(0x640cfd8d00000000)
        );
        for bad in [
            "",
            "0000000000000000",
            "640cfd8d",
            "640cfd8d000000000",
            "+40cfd8d00000000",
            "640cfd8d0000000g",
        ] {
            assert_eq!(parse_trace_id_high(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_tag_overrides_the_cache_and_other_traces_in_a_chunk_keep_theirs() {
        let mut cache = TraceIdCache::new(10);
        cache.insert(1, 0xaa);
        let mut a = span(&[("_dd.p.tid", "00000000000000bb")]);
        a.trace_id = 1;
        let mut b = span(&[]);
        b.trace_id = 2;
        let payload = DdPayload {
            chunks: vec![DdChunk {
                spans: vec![b.clone(), a],
                ..DdChunk::default()
            }],
            ..DdPayload::default()
        };
        assert_eq!(
            resolve_trace_id_highs(&payload, &mut cache),
            vec![vec![0, 0xbb]]
        );
        assert_eq!(cache.get(1), Some(0xbb));
        // v0.7 chunk tags count too, for the chunk's trace.
        let payload = DdPayload {
            chunks: vec![DdChunk {
                tags: vec![(
                    Cow::Borrowed("_dd.p.tid"),
                    Cow::Borrowed("00000000000000cc"),
                )],
                spans: vec![b],
                ..DdChunk::default()
            }],
            ..DdPayload::default()
        };
        assert_eq!(
            resolve_trace_id_highs(&payload, &mut cache),
            vec![vec![0xcc]]
        );
    }

    #[test]
    fn status_kind_times_and_server_address() {
        let mut s = span(&[
            ("error.msg", "old style"),
            ("span.kind", "producer"),
            ("peer.hostname", "kafka-1"),
        ]);
        s.error = 2;
        s.start = -5;
        s.duration = -1;
        let (_, otel) = one(s);
        let status = otel.status.clone().unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (StatusCode::Error as i32, "old style")
        );
        assert_eq!(
            str_attr(&otel, "exception.message").as_deref(),
            Some("old style")
        );
        assert_eq!(otel.kind, SpanKind::Producer as i32);
        assert_eq!((otel.start_time_unix_nano, otel.end_time_unix_nano), (0, 0));
        assert_eq!(
            str_attr(&otel, "server.address").as_deref(),
            Some("kafka-1")
        );

        let mut s = span(&[("span.kind", "server"), ("peer.hostname", "x")]);
        s.error = 1;
        let (_, otel) = one(s);
        assert_eq!(otel.status.as_ref().unwrap().message, "");
        assert_eq!(str_attr(&otel, "server.address"), None);
        for (t, kind) in [
            ("web", SpanKind::Server),
            ("http", SpanKind::Client),
            ("sql", SpanKind::Unspecified),
        ] {
            let mut s = span(&[]);
            s.span_type = Cow::Borrowed(t);
            assert_eq!(one(s).1.kind, kind as i32, "{t}");
        }
    }

    #[test]
    fn base_service_groups_integration_spans_under_the_application() {
        let mut s = span(&[("_dd.base_service", "checkout")]);
        s.service = Cow::Borrowed("checkout-postgres");
        let (service, otel) = one(s);
        assert_eq!(service, "checkout");
        assert_eq!(
            str_attr(&otel, "service.name").as_deref(),
            Some("checkout-postgres")
        );
    }

    #[test]
    fn well_known_operations_are_renamed() {
        let named =
            |name: &'static str, resource: &'static str, meta: &[(&'static str, &'static str)]| {
                let mut s = span(meta);
                s.name = Cow::Borrowed(name);
                s.resource = Cow::Borrowed(resource);
                one(s).1
            };
        assert_eq!(
            named(
                "http.request",
                "",
                &[("http.method", "GET"), ("http.route", "/u/{id}")]
            )
            .name,
            "GET /u/{id}"
        );
        assert_eq!(
            named("web.request", "", &[("http.method", "POST")]).name,
            "POST"
        );
        assert_eq!(
            named("flask.request", "", &[("http.method", "POST")]).name,
            "flask.request"
        );
        let h = named("spring.handler", "UserController.get", &[]);
        assert_eq!(
            (h.name.as_str(), h.kind),
            ("UserController.get", SpanKind::Internal as i32)
        );
        assert_eq!(
            named(
                "postgresql.query",
                "",
                &[("db.operation", "SELECT"), ("db.instance", "shop")]
            )
            .name,
            "SELECT shop"
        );
        assert_eq!(
            named("redis.query", "", &[("db.type", "redis")]).name,
            "redis"
        );
        let g = named(
            "grpc.server",
            "",
            &[("rpc.grpc.full_method", "/shop.Cart/Add")],
        );
        assert_eq!(g.name, "shop.Cart/Add");
        assert_eq!(str_attr(&g, "rpc.method").as_deref(), Some("Add"));
        assert_eq!(str_attr(&g, "rpc.service").as_deref(), Some("shop.Cart"));
        assert_eq!(str_attr(&g, "rpc.system.name").as_deref(), Some("grpc"));
        assert_eq!(
            str_attr(&g, "rpc.response.status_code").as_deref(),
            Some("0")
        );
        assert_eq!(named("grpc.client", "/a.B/C", &[]).name, "a.B/C");
        let a = named(
            "aws.command",
            "",
            &[("aws.service", "S3"), ("aws.operation", "PutObject")],
        );
        assert_eq!(
            (a.name.as_str(), str_attr(&a, "rpc.system.name").as_deref()),
            ("S3/PutObject", Some("aws-api"))
        );
    }

    #[test]
    fn links_from_meta_json_and_native_links_win() {
        let json = r#"[{"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331",
            "attributes":{"reason":"terminated_context","n":3,"ok":true,"r":0.5},"tracestate":"dd=s:1","flags":2147483649},
            {"trace_id":5,"trace_id_high":6,"span_id":7}]"#;
        let (_, otel) = one(span(&[("_dd.span_links", json)]));
        assert_eq!(otel.links.len(), 2);
        let l = &otel.links[0];
        assert_eq!(
            l.trace_id,
            0x0af7651916cd43dd8448eb211c80319cu128
                .to_be_bytes()
                .to_vec()
        );
        assert_eq!(l.span_id, 0xb7ad6b7169203331u64.to_be_bytes().to_vec());
        assert_eq!((l.trace_state.as_str(), l.flags), ("dd=s:1", 1));
        let keys: Vec<&str> = l.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["n", "ok", "r", "reason"]);
        assert_eq!(
            l.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(3))
        );
        let l = &otel.links[1];
        assert_eq!(
            l.trace_id,
            [6u64.to_be_bytes(), 5u64.to_be_bytes()].concat()
        );
        assert_eq!(l.flags, 0);
        // The JSON is consumed, not copied as an attribute.
        assert_eq!(str_attr(&otel, "_dd.span_links"), None);

        let mut s = span(&[("_dd.span_links", json)]);
        s.links = vec![super::super::decode::DdSpanLink {
            trace_id: 1,
            span_id: 2,
            ..Default::default()
        }];
        assert_eq!(one(s).1.links.len(), 1);
        assert!(one(span(&[("_dd.span_links", "not json")]))
            .1
            .links
            .is_empty());
    }

    #[test]
    fn events_from_meta_json() {
        let json = r#"[{"name":"exception","time_unix_nano":1700000000000000001,
            "attributes":{"exception.type":"ValueError","count":2,"tags":["a","b"]}}]"#;
        let (_, otel) = one(span(&[
            ("events", json),
            ("_dd.span_events.has_exception", "true"),
        ]));
        assert_eq!(otel.events.len(), 1);
        let e = &otel.events[0];
        assert_eq!(
            (e.name.as_str(), e.time_unix_nano),
            ("exception", 1700000000000000001)
        );
        assert_eq!(e.attributes.len(), 3);
        assert_eq!(str_attr(&otel, "events"), None);
        assert_eq!(str_attr(&otel, "_dd.span_events.has_exception"), None);
        assert!(one(span(&[("events", "[{")])).1.events.is_empty());
    }

    #[test]
    fn later_keys_win_and_metrics_win_over_meta() {
        let mut s = span(&[("a", "1"), ("a", "2"), ("m", "text")]);
        s.metrics = vec![(Cow::Borrowed("m"), 4.0)];
        let (_, otel) = one(s);
        assert_eq!(str_attr(&otel, "a").as_deref(), Some("2"));
        assert_eq!(attr(&otel, "m"), Some(&any_value::Value::DoubleValue(4.0)));
        let keys: Vec<&str> = otel.attributes.iter().map(|kv| kv.key.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
