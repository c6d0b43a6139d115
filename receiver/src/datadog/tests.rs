//! End-to-end tests of the datadog receiver: real listeners on loopback, a
//! real HTTP client, hand-built MessagePack and JSON payloads for every API
//! version, and a consumer that records what reaches it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, Status};
use weft_pipeline::host::Host;
use weft_pipeline::{
    parse_config, Batch, ComponentId, ConsumeError, Consumer, DynConsumer, Kind, Lifecycle,
    Payload, ReceiverOutputs, Registry, Settings, Signal, Telemetry,
};

use super::{DatadogReceiver, DatadogReceiverConfig};

/// A MessagePack value to encode, with explicit integer widths where a test
/// needs one.
#[derive(Debug, Clone)]
pub(crate) enum Mp {
    Nil,
    Bool(bool),
    /// Smallest encoding.
    Uint(u64),
    /// Smallest encoding.
    Int(i64),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Str(String),
    Bin(Vec<u8>),

    Arr(Vec<Mp>),
    Map(Vec<(Mp, Mp)>),
    /// Bytes copied as they are.
    Raw(Vec<u8>),
}

impl Mp {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        use rmp::encode as e;
        match self {
            Mp::Nil => e::write_nil(out).unwrap(),
            Mp::Bool(b) => e::write_bool(out, *b).unwrap(),
            Mp::Uint(v) => drop(e::write_uint(out, *v).unwrap()),
            Mp::Int(v) => drop(e::write_sint(out, *v).unwrap()),
            Mp::U8(v) => e::write_u8(out, *v).unwrap(),
            Mp::U16(v) => e::write_u16(out, *v).unwrap(),
            Mp::U32(v) => e::write_u32(out, *v).unwrap(),
            Mp::U64(v) => e::write_u64(out, *v).unwrap(),
            Mp::I8(v) => e::write_i8(out, *v).unwrap(),
            Mp::I16(v) => e::write_i16(out, *v).unwrap(),
            Mp::I32(v) => e::write_i32(out, *v).unwrap(),
            Mp::I64(v) => e::write_i64(out, *v).unwrap(),
            Mp::F32(v) => e::write_f32(out, *v).unwrap(),
            Mp::F64(v) => e::write_f64(out, *v).unwrap(),
            Mp::Str(s) => e::write_str(out, s).unwrap(),
            Mp::Bin(b) => e::write_bin(out, b).unwrap(),
            Mp::Arr(items) => {
                e::write_array_len(out, items.len() as u32).unwrap();
                items.iter().for_each(|i| i.write(out));
            }
            Mp::Map(entries) => {
                e::write_map_len(out, entries.len() as u32).unwrap();
                for (k, v) in entries {
                    k.write(out);
                    v.write(out);
                }
            }
            Mp::Raw(b) => out.extend_from_slice(b),
        }
    }
}

pub(crate) fn s(v: &str) -> Mp {
    Mp::Str(v.to_string())
}

/// A map with string keys.
pub(crate) fn map(entries: Vec<(&str, Mp)>) -> Mp {
    Mp::Map(entries.into_iter().map(|(k, v)| (s(k), v)).collect())
}

/// A map of strings to strings.
pub(crate) fn tags(entries: &[(&str, &str)]) -> Mp {
    Mp::Map(entries.iter().map(|(k, v)| (s(k), s(v))).collect())
}

/// A map of strings to doubles.
pub(crate) fn metrics(entries: &[(&str, f64)]) -> Mp {
    Mp::Map(entries.iter().map(|(k, v)| (s(k), Mp::F64(*v))).collect())
}

/// The spans every version's test sends: a web root with an error, and a
/// database child in another service.
pub(crate) struct TestSpan {
    pub service: &'static str,
    pub name: &'static str,
    pub resource: &'static str,
    pub span_type: &'static str,
    pub trace_id: u64,
    pub span_id: u64,
    pub parent_id: u64,
    pub start: i64,
    pub duration: i64,
    pub error: i32,
    pub meta: Vec<(&'static str, &'static str)>,
    pub metrics: Vec<(&'static str, f64)>,
}

pub(crate) fn root_and_child() -> Vec<TestSpan> {
    vec![
        TestSpan {
            service: "checkout",
            name: "flask.request",
            resource: "GET /cart",
            span_type: "web",
            trace_id: 12345678901234567890,
            span_id: 1111,
            parent_id: 0,
            start: 1_700_000_000_000_000_000,
            duration: 5_000_000,
            error: 1,
            meta: vec![
                ("env", "prod"),
                ("version", "1.2.3"),
                ("http.method", "GET"),
                ("http.status_code", "500"),
                ("error.message", "boom"),
                ("_dd.p.dm", "-0"),
            ],
            metrics: vec![("_sampling_priority_v1", 1.0), ("_dd.top_level", 1.0)],
        },
        TestSpan {
            service: "checkout-db",
            name: "postgres.query",
            resource: "SELECT 1",
            span_type: "sql",
            trace_id: 12345678901234567890,
            span_id: 2222,
            parent_id: 1111,
            start: 1_700_000_000_001_000_000,
            duration: 1_000_000,
            error: 0,
            meta: vec![("span.kind", "client"), ("db.type", "postgresql")],
            metrics: vec![("db.row_count", 3.0)],
        },
    ]
}

impl TestSpan {
    pub(crate) fn v04(&self) -> Mp {
        map(vec![
            ("service", s(self.service)),
            ("name", s(self.name)),
            ("resource", s(self.resource)),
            ("type", s(self.span_type)),
            ("trace_id", Mp::Uint(self.trace_id)),
            ("span_id", Mp::Uint(self.span_id)),
            ("parent_id", Mp::Uint(self.parent_id)),
            ("start", Mp::Int(self.start)),
            ("duration", Mp::Int(self.duration)),
            ("error", Mp::Int(self.error.into())),
            ("meta", tags(&self.meta)),
            ("metrics", metrics(&self.metrics)),
        ])
    }

    /// The span as a v0.5 array, adding its strings to `table`.
    pub(crate) fn v05(&self, table: &mut Vec<String>) -> Mp {
        let mut idx = |v: &str| -> Mp {
            let i = match table.iter().position(|t| t == v) {
                Some(i) => i,
                None => {
                    table.push(v.to_string());
                    table.len() - 1
                }
            };
            Mp::Uint(i as u64)
        };
        let meta: Vec<(Mp, Mp)> = self.meta.iter().map(|(k, v)| (idx(k), idx(v))).collect();
        let metrics: Vec<(Mp, Mp)> = self
            .metrics
            .iter()
            .map(|(k, v)| (idx(k), Mp::F64(*v)))
            .collect();
        Mp::Arr(vec![
            idx(self.service),
            idx(self.name),
            idx(self.resource),
            Mp::Uint(self.trace_id),
            Mp::Uint(self.span_id),
            Mp::Uint(self.parent_id),
            Mp::Int(self.start),
            Mp::Int(self.duration),
            Mp::Int(self.error.into()),
            Mp::Map(meta),
            Mp::Map(metrics),
            idx(self.span_type),
        ])
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "service": self.service, "name": self.name, "resource": self.resource,
            "type": self.span_type, "trace_id": self.trace_id, "span_id": self.span_id,
            "parent_id": self.parent_id, "start": self.start, "duration": self.duration,
            "error": self.error,
            "meta": self.meta.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "metrics": self.metrics.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// A v0.5 payload of the given traces.
pub(crate) fn v05_payload(traces: &[Vec<TestSpan>]) -> Vec<u8> {
    let mut table = Vec::new();
    let traces: Vec<Mp> = traces
        .iter()
        .map(|t| Mp::Arr(t.iter().map(|sp| sp.v05(&mut table)).collect()))
        .collect();
    Mp::Arr(vec![
        Mp::Arr(table.iter().map(|t| s(t)).collect()),
        Mp::Arr(traces),
    ])
    .encode()
}

/// A v0.4 payload of the given traces.
pub(crate) fn v04_payload(traces: &[Vec<TestSpan>]) -> Vec<u8> {
    Mp::Arr(
        traces
            .iter()
            .map(|t| Mp::Arr(t.iter().map(TestSpan::v04).collect()))
            .collect(),
    )
    .encode()
}

fn sv(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.to_string())),
    })
}

fn dv(v: f64) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::DoubleValue(v)),
    })
}

fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value,
        ..Default::default()
    }
}

/// Attribute keys and values, as (key, "s:text" | "d:number") for compact
/// exact comparisons.
fn attrs(list: &[KeyValue]) -> Vec<(String, String)> {
    list.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => format!("s:{s}"),
                Some(any_value::Value::DoubleValue(d)) => format!("d:{d}"),
                Some(any_value::Value::IntValue(i)) => format!("i:{i}"),
                Some(any_value::Value::BoolValue(b)) => format!("b:{b}"),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The OTLP spans `root_and_child` must become (without 128-bit ids).
fn expected_root() -> Span {
    Span {
        trace_id: [0u64.to_be_bytes(), 12345678901234567890u64.to_be_bytes()].concat(),
        span_id: 1111u64.to_be_bytes().to_vec(),
        parent_span_id: Vec::new(),
        name: "flask.request".into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_005_000_000,
        status: Some(Status {
            code: StatusCode::Error as i32,
            message: "boom".into(),
        }),
        attributes: vec![
            kv("_dd.p.dm", sv("-0")),
            kv("_dd.top_level", dv(1.0)),
            kv("_sampling_priority_v1", dv(1.0)),
            kv("datadog.span.id", sv("1111")),
            kv("datadog.trace.id", sv("12345678901234567890")),
            kv("dd.span.Resource", sv("GET /cart")),
            kv("deployment.environment.name", sv("prod")),
            kv("error.message", sv("boom")),
            kv("http.request.method", sv("GET")),
            kv("http.response.status_code", sv("500")),
            kv("sampling.priority", sv("1.000000")),
            kv("service.version", sv("1.2.3")),
        ],
        ..Default::default()
    }
}

fn expected_child() -> Span {
    Span {
        trace_id: [0u64.to_be_bytes(), 12345678901234567890u64.to_be_bytes()].concat(),
        span_id: 2222u64.to_be_bytes().to_vec(),
        parent_span_id: 1111u64.to_be_bytes().to_vec(),
        name: "postgres.query".into(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: 1_700_000_000_001_000_000,
        end_time_unix_nano: 1_700_000_000_002_000_000,
        status: Some(Status {
            code: StatusCode::Ok as i32,
            message: String::new(),
        }),
        attributes: vec![
            kv("datadog.span.id", sv("2222")),
            kv("datadog.trace.id", sv("12345678901234567890")),
            kv("db.row_count", dv(3.0)),
            kv("db.system.name", sv("postgresql")),
            kv("dd.span.Resource", sv("SELECT 1")),
            kv("sampling.priority", sv("1.000000")),
            kv("span.kind", sv("client")),
        ],
        ..Default::default()
    }
}

/// Records every batch; answers with `refuse` when set.
#[derive(Default)]
struct Collect {
    batches: Mutex<Vec<Batch>>,
    refuse: Mutex<Option<ConsumeError>>,
}

impl Collect {
    fn new() -> Arc<Collect> {
        Arc::new(Collect::default())
    }

    fn resource_spans(&self) -> Vec<ResourceSpans> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| match b.payload() {
                Payload::Traces(rs) => Some(rs.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn spans(&self) -> Vec<Span> {
        self.resource_spans()
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
    }

    fn take(&self) -> Vec<ResourceSpans> {
        let rs = self.resource_spans();
        self.batches.lock().unwrap().clear();
        rs
    }
}

#[async_trait]
impl Consumer for Collect {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        self.batches.lock().unwrap().push(batch);
        match self.refuse.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn outputs(sink: Arc<Collect>) -> ReceiverOutputs {
    let out: DynConsumer = sink;
    ReceiverOutputs {
        traces: out.clone(),
        metrics: out.clone(),
        logs: out,
    }
}

fn build(id: &str, yaml: &str, telemetry: &Telemetry, sink: Arc<Collect>) -> DatadogReceiver {
    let settings = Settings {
        id: ComponentId::parse(id).unwrap(),
        kind: Kind::Receiver,
        telemetry: telemetry.clone(),
        host: Arc::new(Host::new()),
    };
    let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    let config = parse_config::<DatadogReceiverConfig>(&raw).unwrap();
    DatadogReceiver::new(&settings, config, outputs(sink))
}

struct Harness {
    receiver: DatadogReceiver,
    telemetry: Telemetry,
    sink: Arc<Collect>,
}

const LOCAL: &str = "endpoint: 127.0.0.1:0\n";

impl Harness {
    async fn start(yaml: &str) -> Harness {
        let telemetry = Telemetry::new();
        let sink = Collect::new();
        let receiver = build("datadog", yaml, &telemetry, sink.clone());
        receiver.start().await.unwrap();
        Harness {
            receiver,
            telemetry,
            sink,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.receiver.addr().unwrap())
    }

    fn counter(&self, name: &str) -> i64 {
        self.telemetry
            .value(name, &[("receiver", "datadog"), ("transport", "http")])
            .unwrap_or(0)
    }

    fn accepted(&self) -> i64 {
        self.counter("otelcol_receiver_accepted_spans")
    }

    fn refused(&self) -> i64 {
        self.counter("otelcol_receiver_refused_spans")
    }

    fn bad_requests(&self) -> i64 {
        self.counter("weft_receiver_bad_requests")
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, String, String) {
        self.send_with(method, path, &[("content-type", content_type)], body)
            .await
    }

    async fn send_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, String, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client().request(method, self.url(path)).body(body);
        for (k, v) in headers {
            if !v.is_empty() {
                req = req.header(*k, *v);
            }
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ct, resp.text().await.unwrap())
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

const MSGPACK: &str = "application/msgpack";
const RATES: &str = r#"{"rate_by_service":{}}"#;

/// The resource attributes of each resource, by service name.
fn resources(rs: &[ResourceSpans]) -> Vec<Vec<(String, String)>> {
    rs.iter()
        .map(|r| attrs(&r.resource.as_ref().unwrap().attributes))
        .collect()
}

#[tokio::test]
async fn v04_and_v05_give_the_same_exact_spans_resource_per_service() {
    let h = Harness::start(LOCAL).await;
    let headers = [
        ("content-type", MSGPACK),
        ("datadog-meta-lang", "python"),
        ("datadog-meta-lang-version", "3.11.7"),
        ("datadog-meta-tracer-version", "4.16.0"),
        ("datadog-container-id", "abc123"),
        ("x-datadog-trace-count", "1"),
    ];
    for (path, body) in [
        ("/v0.4/traces", v04_payload(&[root_and_child()])),
        ("/v0.5/traces", v05_payload(&[root_and_child()])),
    ] {
        let (status, ct, text) = h.send_with("PUT", path, &headers, body).await;
        assert_eq!(
            (status, ct.as_str(), text.as_str()),
            (200, "application/json", RATES),
            "{path}"
        );
        let rs = h.sink.take();
        assert_eq!(rs.len(), 2, "{path}: one resource per service");
        let shared = [
            ("container.id", "s:abc123"),
            ("process.runtime.version", "s:3.11.7"),
            ("service.version", "s:1.2.3"),
            ("telemetry.sdk.language", "s:python"),
            ("telemetry.sdk.name", "s:Datadog"),
            ("telemetry.sdk.version", "s:Datadog-4.16.0"),
        ];
        let with_service = |svc: &str| {
            let mut v = pairs(&[("service.name", svc)]);
            v.extend(pairs(&shared));
            v
        };
        assert_eq!(
            resources(&rs),
            vec![with_service("s:checkout"), with_service("s:checkout-db")],
            "{path}"
        );
        for r in &rs {
            assert_eq!(r.schema_url, super::translate::SCHEMA_URL);
            let scope = r.scope_spans[0].scope.as_ref().unwrap();
            assert_eq!(
                (scope.name.as_str(), scope.version.as_str()),
                ("Datadog", "4.16.0")
            );
        }
        assert_eq!(rs[0].scope_spans[0].spans, vec![expected_root()], "{path}");
        assert_eq!(rs[1].scope_spans[0].spans, vec![expected_child()], "{path}");
    }
    assert_eq!(h.accepted(), 4);
    assert_eq!(h.bad_requests(), 0);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn v03_json_and_msgpack_answer_ok() {
    let h = Harness::start(LOCAL).await;
    let json = serde_json::json!([root_and_child()
        .iter()
        .map(TestSpan::json)
        .collect::<Vec<_>>()]);
    let body = serde_json::to_vec(&json).unwrap();
    for ct in ["application/json", "text/json", ""] {
        let (status, rct, text) = h.send("POST", "/v0.3/traces", ct, body.clone()).await;
        assert_eq!(
            (status, rct.as_str(), text.as_str()),
            (200, "text/plain; charset=utf-8", "OK"),
            "{ct:?}"
        );
        let spans = h.sink.spans();
        assert_eq!(spans, vec![expected_root(), expected_child()], "{ct:?}");
        h.sink.take();
    }
    // JSON also on v0.4, and an unknown content type is tried as JSON then MessagePack.
    let (status, _, text) = h
        .send("PUT", "/v0.4/traces", "application/json", body.clone())
        .await;
    assert_eq!((status, text.as_str()), (200, RATES));
    let (status, _, _) = h
        .send("PUT", "/v0.4/traces", "application/octet-stream", body)
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = h
        .send(
            "PUT",
            "/v0.3/traces",
            "application/x-whatever",
            v04_payload(&[root_and_child()]),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, text) = h
        .send(
            "PUT",
            "/v0.3/traces",
            MSGPACK,
            v04_payload(&[root_and_child()]),
        )
        .await;
    assert_eq!((status, text.as_str()), (200, "OK"));
    assert_eq!(h.sink.spans().len(), 8);
    assert_eq!(h.accepted(), 14);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn v07_tracer_payload_fields_become_resource_attributes() {
    let h = Harness::start(LOCAL).await;
    let spans = root_and_child();
    let chunk = |priority: i32, spans: Vec<Mp>| {
        map(vec![
            ("priority", Mp::Int(priority.into())),
            ("origin", s("synthetics")),
            ("spans", Mp::Arr(spans)),
            ("tags", tags(&[("_dd.p.dm", "-4")])),
            ("dropped_trace", Mp::Bool(false)),
        ])
    };
    let body = map(vec![
        ("container_id", s("cid-7")),
        ("language_name", s("go")),
        ("language_version", s("go1.22")),
        ("tracer_version", s("v1.70.0")),
        ("runtime_id", s("rid")),
        (
            "chunks",
            Mp::Arr(vec![
                chunk(2, vec![spans[0].v04()]),
                Mp::Nil,
                chunk(-128, vec![spans[1].v04()]),
            ]),
        ),
        (
            "tags",
            tags(&[("kube_namespace", "shop"), ("region", "eu-west-1")]),
        ),
        ("env", s("staging")),
        ("hostname", s("host-1")),
        ("app_version", s("9.9.9")),
        (
            "unknown_future_key",
            Mp::Arr(vec![Mp::Map(vec![]), Mp::Nil]),
        ),
    ])
    .encode();
    let (status, ct, text) = h.send("POST", "/v0.7/traces", MSGPACK, body).await;
    assert_eq!(
        (status, ct.as_str(), text.as_str()),
        (200, "application/json", RATES)
    );
    let rs = h.sink.take();
    assert_eq!(
        resources(&rs)[0],
        pairs(&[
            ("service.name", "s:checkout"),
            ("cloud.region", "s:eu-west-1"),
            ("container.id", "s:cid-7"),
            ("deployment.environment.name", "s:staging"),
            ("host.name", "s:host-1"),
            ("k8s.namespace.name", "s:shop"),
            ("process.runtime.version", "s:go1.22"),
            ("service.version", "s:9.9.9"),
            ("telemetry.sdk.language", "s:go"),
            ("telemetry.sdk.name", "s:Datadog"),
            ("telemetry.sdk.version", "s:v1.70.0"),
        ])
    );
    assert_eq!(
        rs[0].scope_spans[0].scope.as_ref().unwrap().version,
        "v1.70.0"
    );
    // The chunk priority wins over the span metric; a chunk without one
    // falls back to `_sampling_priority_v1` (none in the child's chunk).
    let root = &rs[0].scope_spans[0].spans[0];
    assert!(attrs(&root.attributes).contains(&("sampling.priority".into(), "s:2.000000".into())));
    let child = &rs[1].scope_spans[0].spans[0];
    assert!(!attrs(&child.attributes)
        .iter()
        .any(|(k, _)| k == "sampling.priority"));
    h.receiver.shutdown().await.unwrap();
}

/// A span of trace `low` with the given meta.
fn tid_span(low: u64, span_id: u64, parent: u64, meta: &[(&str, &str)]) -> Mp {
    map(vec![
        ("service", s("svc")),
        ("name", s("op")),
        ("trace_id", Mp::Uint(low)),
        ("span_id", Mp::Uint(span_id)),
        ("parent_id", Mp::Uint(parent)),
        ("meta", tags(meta)),
    ])
}

fn trace_ids(spans: &[Span]) -> Vec<String> {
    spans
        .iter()
        .map(|s| s.trace_id.iter().map(|b| format!("{b:02x}")).collect())
        .collect()
}

#[tokio::test]
async fn tid_reaches_later_chunks_through_the_cache_and_is_evicted_lru() {
    let h = Harness::start("endpoint: 127.0.0.1:0\ntrace_id_cache_size: 2\n").await;
    let send = |chunks: Vec<Vec<Mp>>| {
        let body = Mp::Arr(chunks.into_iter().map(Mp::Arr).collect()).encode();
        h.send("PUT", "/v0.4/traces", MSGPACK, body)
    };
    const TID_A: &str = "6a4b2c1d00000001";
    const TID_B: &str = "6a4b2c1d00000002";
    const TID_C: &str = "6a4b2c1d00000003";
    // In one chunk, a child listed before the tagged root gets the tid too.
    let (status, _, _) = send(vec![vec![
        tid_span(10, 2, 1, &[]),
        tid_span(10, 1, 0, &[("_dd.p.tid", TID_A)]),
    ]])
    .await;
    assert_eq!(status, 200);
    // A later request: children of trace 10 without the tag.
    send(vec![vec![tid_span(10, 3, 1, &[])]]).await;
    assert_eq!(
        trace_ids(&h.sink.spans()),
        [
            "6a4b2c1d00000001000000000000000a",
            "6a4b2c1d00000001000000000000000a",
            "6a4b2c1d00000001000000000000000a"
        ]
    );
    // The tag is kept as an attribute.
    let root = &h.sink.spans()[1];
    assert!(attrs(&root.attributes).contains(&("_dd.p.tid".into(), format!("s:{TID_A}"))));
    h.sink.take();

    // Cache of 2: B and C push A out (A was used last before B and C).
    send(vec![
        vec![tid_span(11, 1, 0, &[("_dd.p.tid", TID_B)])],
        vec![tid_span(12, 1, 0, &[("_dd.p.tid", TID_C)])],
    ])
    .await;
    // Touch B so C is the least recently used next.
    send(vec![vec![tid_span(11, 2, 1, &[])]]).await;
    send(vec![vec![tid_span(10, 4, 1, &[]), tid_span(12, 2, 1, &[])]]).await;
    let ids = trace_ids(&h.sink.spans());
    assert_eq!(
        ids,
        [
            "6a4b2c1d00000002000000000000000b",
            "6a4b2c1d00000003000000000000000c",
            "6a4b2c1d00000002000000000000000b",
            // A forgotten: 64-bit id only.
            "0000000000000000000000000000000a",
            "6a4b2c1d00000003000000000000000c",
        ]
    );
    h.sink.take();

    // Invalid tags are ignored (kept as attributes), never half-applied.
    for bad in [
        "0000000000000000",
        "6a4b2c1d0000001",
        "zz4b2c1d00000001",
        "6a4b2c1d000000010",
    ] {
        send(vec![vec![tid_span(20, 1, 0, &[("_dd.p.tid", bad)])]]).await;
    }
    assert!(trace_ids(&h.sink.spans())
        .iter()
        .all(|id| id == "00000000000000000000000000000014"));
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_integer_width_and_float_metrics_decode() {
    let h = Harness::start(LOCAL).await;
    let span = |trace_id: Mp, span_id: Mp, parent: Mp, metric: Mp| {
        map(vec![
            ("service", s("svc")),
            ("name", s("op")),
            ("trace_id", trace_id),
            ("span_id", span_id),
            ("parent_id", parent),
            ("start", Mp::U64(1_000)),
            ("duration", Mp::I8(5)),
            ("error", Mp::U8(0)),
            ("meta", Mp::Nil),
            ("metrics", Mp::Map(vec![(s("m"), metric)])),
            ("type", Mp::Nil),
        ])
    };
    let spans = vec![
        span(Mp::U8(7), Mp::U16(300), Mp::U32(70_000), Mp::F32(0.5)),
        span(Mp::U64(u64::MAX), Mp::Uint(1), Mp::Nil, Mp::Int(-3)),
        // Negative int64 ids are the two's complement of a large unsigned id.
        span(Mp::I64(-2), Mp::I32(5), Mp::I8(-1), Mp::U64(1 << 40)),
        span(Mp::I16(1000), Mp::Uint(127), Mp::Int(-32), Mp::Nil),
    ];
    let (status, _, _) = h
        .send(
            "PUT",
            "/v0.4/traces",
            MSGPACK,
            Mp::Arr(vec![Mp::Arr(spans)]).encode(),
        )
        .await;
    assert_eq!(status, 200);
    let got: Vec<(String, u64, u64, String)> = h
        .sink
        .spans()
        .iter()
        .map(|sp| {
            let id = |b: &[u8]| {
                if b.is_empty() {
                    0
                } else {
                    u64::from_be_bytes(b.try_into().unwrap())
                }
            };
            let m = attrs(&sp.attributes)
                .into_iter()
                .find(|(k, _)| k == "m")
                .unwrap()
                .1;
            (
                trace_ids(std::slice::from_ref(sp))[0].clone(),
                id(&sp.span_id),
                id(&sp.parent_span_id),
                m,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "00000000000000000000000000000007".into(),
                300,
                70_000,
                "d:0.5".into()
            ),
            (
                "0000000000000000ffffffffffffffff".into(),
                1,
                0,
                "d:-3".into()
            ),
            (
                "0000000000000000fffffffffffffffe".into(),
                5,
                u64::MAX,
                "d:1099511627776".into()
            ),
            (
                "000000000000000000000000000003e8".into(),
                127,
                (-32i64) as u64,
                "d:0".into()
            ),
        ]
    );
    let first = &h.sink.spans()[0];
    assert_eq!(
        (first.start_time_unix_nano, first.end_time_unix_nano),
        (1_000, 1_005)
    );
    h.receiver.shutdown().await.unwrap();
}

/// A str32 header announcing 4 GiB followed by 3 bytes.
fn huge_string() -> Mp {
    Mp::Raw(vec![0xdb, 0xff, 0xff, 0xff, 0xff, b'a', b'b', b'c'])
}

/// (method, path, content type, body, status, text the answer contains)
type BadCase = (
    &'static str,
    &'static str,
    &'static str,
    Vec<u8>,
    u16,
    &'static str,
);

#[tokio::test]
async fn bad_input_table_exact_statuses_and_counters() {
    let h = Harness::start("endpoint: 127.0.0.1:0\nmax_request_body_size: 4096\n").await;
    let good = v04_payload(&[root_and_child()]);
    let good05 = v05_payload(&[root_and_child()]);
    let span05 = |fields: Vec<Mp>| {
        Mp::Arr(vec![
            Mp::Arr(vec![s("a")]),
            Mp::Arr(vec![Mp::Arr(vec![Mp::Arr(fields)])]),
        ])
        .encode()
    };
    let twelve = || {
        vec![
            Mp::Uint(0),
            Mp::Uint(0),
            Mp::Uint(0),
            Mp::Uint(1),
            Mp::Uint(2),
            Mp::Uint(0),
            Mp::Uint(0),
            Mp::Uint(0),
            Mp::Uint(0),
            Mp::Map(vec![]),
            Mp::Map(vec![]),
            Mp::Uint(0),
        ]
    };
    let mut eleven = twelve();
    eleven.pop();
    let mut out_of_range = twelve();
    out_of_range[1] = Mp::Uint(1);
    let mut negative_index = twelve();
    negative_index[2] = Mp::Int(-1);
    let mut string_id = twelve();
    string_id[3] = Mp::Uint(0);
    string_id[4] = s("2");
    let v04_span = |k: &str, v: Mp| Mp::Arr(vec![Mp::Arr(vec![map(vec![(k, v)])])]).encode();
    let cases: Vec<BadCase> = vec![
        ("PUT", "/v0.4/traces", MSGPACK, good[..good.len() - 7].to_vec(), 400, "the payload ends too early"),
        ("PUT", "/v0.5/traces", MSGPACK, good05[..good05.len() - 1].to_vec(), 400, "the payload ends too early"),
        ("PUT", "/v0.5/traces", MSGPACK, span05(eleven), 400, "a v0.5 span has exactly 12 fields, found 11"),
        ("PUT", "/v0.5/traces", MSGPACK, Mp::Arr(vec![Mp::Arr(vec![]), Mp::Arr(vec![]), Mp::Nil]).encode(), 400, "a v0.5 payload is [string table, traces]: found an array of 3 elements"),
        ("PUT", "/v0.5/traces", MSGPACK, span05(out_of_range), 400, "name: string table index 1 out of range, the table has 1 strings"),
        ("PUT", "/v0.5/traces", MSGPACK, span05(negative_index), 400, "resource: -1 does not fit an unsigned 32-bit integer"),
        ("PUT", "/v0.5/traces", MSGPACK, span05(string_id), 400, "span_id: expected an integer, found a string"),
        ("PUT", "/v0.5/traces", MSGPACK, Mp::Arr(vec![Mp::Arr(vec![huge_string()]), Mp::Arr(vec![])]).encode(), 400, "string table entry 0: the payload ends too early: 4294967295 more bytes needed, 4 left"),
        ("PUT", "/v0.4/traces", MSGPACK, v04_span("start", Mp::U64(u64::MAX)), 400, "start: 18446744073709551615 does not fit a signed 64-bit integer"),
        ("PUT", "/v0.4/traces", MSGPACK, v04_span("error", Mp::U32(u32::MAX)), 400, "error: 4294967295 does not fit a signed 32-bit integer"),
        ("PUT", "/v0.4/traces", MSGPACK, v04_span("trace_id", Mp::F64(1.0)), 400, "trace_id: expected an integer, found a float"),
        ("PUT", "/v0.4/traces", MSGPACK, v04_span("meta", Mp::Arr(vec![])), 400, "meta: expected a map, found an array"),
        ("PUT", "/v0.4/traces", MSGPACK, Mp::Arr(vec![Mp::Arr(vec![map(vec![("service", huge_string())])])]).encode(), 400, "more bytes needed"),
        ("PUT", "/v0.4/traces", MSGPACK, Mp::Raw(vec![0xdd, 0xff, 0xff, 0xff, 0xff]).encode(), 400, "4294967295 elements announced but only 0 bytes left"),
        ("PUT", "/v0.4/traces", MSGPACK, Mp::Map(vec![]).encode(), 400, "expected an array, found a map"),
        ("PUT", "/v0.4/traces", "application/json", b"[[{\"trace_id\": -1}]]".to_vec(), 400, "invalid JSON"),
        ("PUT", "/v0.4/traces", "application/json", b"[[{".to_vec(), 400, "invalid JSON"),
        ("PUT", "/v0.4/traces", "text/plain", b"neither json nor msgpack".to_vec(), 400, "invalid MessagePack"),
        ("PUT", "/v0.5/traces", "application/json", good05.clone(), 415, "v0.5 payloads are MessagePack: content type \"application/json\" is not accepted"),
        ("PUT", "/v0.7/traces", "text/plain", good.clone(), 415, "v0.7 payloads are MessagePack"),
        ("PUT", "/v0.4/traces", MSGPACK, vec![0x90; 5000], 413, "request body larger than 4096 bytes"),
        ("GET", "/v0.4/traces", MSGPACK, Vec::new(), 405, "method GET not allowed, use PUT or POST"),
        ("DELETE", "/v0.5/traces", MSGPACK, good05.clone(), 405, "method DELETE not allowed"),
    ];
    for (i, (method, path, ct, body, want, text)) in cases.iter().enumerate() {
        let (status, rct, got) = h.send(method, path, ct, body.clone()).await;
        assert_eq!(status, *want, "case {i}: {got}");
        assert!(got.contains(text), "case {i}: {got:?} lacks {text:?}");
        assert_eq!(rct, "text/plain; charset=utf-8", "case {i}");
    }
    let (status, _, _) = h.send("PUT", "/v0.4/traces", MSGPACK, good.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(h.bad_requests(), cases.len() as i64);

    // Compression: bad gzip and unknown encodings are 400, counted.
    let (status, _, text) = h
        .send_with(
            "PUT",
            "/v0.4/traces",
            &[("content-type", MSGPACK), ("content-encoding", "gzip")],
            b"not gzip".to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    let (status, _, text) = h
        .send_with(
            "PUT",
            "/v0.4/traces",
            &[("content-type", MSGPACK), ("content-encoding", "br")],
            good.clone(),
        )
        .await;
    assert_eq!(
        (status, text.as_str()),
        (400, "unsupported Content-Encoding: br\n")
    );
    assert_eq!(h.bad_requests(), cases.len() as i64 + 2);

    // Not counted: an empty probe, unknown paths.
    let (status, _, text) = h.send("PUT", "/v0.4/traces", MSGPACK, Vec::new()).await;
    assert_eq!(
        (status, text.as_str()),
        (400, "empty payload: nothing to decode\n")
    );
    for path in [
        "/v0.6/stats",
        "/v0.2/traces",
        "/api/v0.2/traces",
        "/v0.4/traces/x",
    ] {
        let (status, _, _) = h.send("PUT", path, MSGPACK, good.clone()).await;
        assert_eq!(status, 404, "{path}");
    }
    assert_eq!(h.bad_requests(), cases.len() as i64 + 2);
    assert_eq!(h.accepted(), 2);
    assert_eq!(h.refused(), 0);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413_and_gzip_is_read() {
    let h = Harness::start("endpoint: 127.0.0.1:0\nmax_request_body_size: 4096\n").await;
    // A streamed body has no Content-Length: the limit applies while reading.
    let chunks: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>> = (0..10)
        .map(|_| {
            Ok(hyper::body::Frame::data(bytes::Bytes::from(vec![
                0x90u8;
                1000
            ])))
        })
        .collect();
    let body = reqwest::Body::wrap(http_body_util::StreamBody::new(futures_util::stream::iter(
        chunks,
    )));
    let resp = client()
        .put(h.url("/v0.4/traces"))
        .header("content-type", MSGPACK)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &v05_payload(&[root_and_child()])).unwrap();
    let (status, _, text) = h
        .send_with(
            "PUT",
            "/v0.5/traces",
            &[("content-type", MSGPACK), ("content-encoding", "gzip")],
            gz.finish().unwrap(),
        )
        .await;
    assert_eq!((status, text.as_str()), (200, RATES));
    // Inflating past the limit is refused as too large.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &vec![0x90u8; 100_000]).unwrap();
    let (status, _, _) = h
        .send_with(
            "PUT",
            "/v0.4/traces",
            &[("content-type", MSGPACK), ("content-encoding", "gzip")],
            gz.finish().unwrap(),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(h.bad_requests(), 2);
    assert_eq!(h.accepted(), 2);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn info_and_root_advertise_only_what_is_implemented() {
    let h = Harness::start(LOCAL).await;
    let (status, ct, text) = h.send("GET", "/info", "", Vec::new()).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let info: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        info,
        serde_json::json!({
            "version": format!("weft-{}", env!("CARGO_PKG_VERSION")),
            "endpoints": ["/v0.3/traces", "/v0.4/traces", "/v0.5/traces", "/v0.7/traces"],
            "client_drop_p0s": false,
            "span_meta_structs": false,
            "long_running_spans": false,
            "span_events": false,
        })
    );
    let (status, _, text) = h.send("GET", "/", "", Vec::new()).await;
    assert_eq!((status, text.as_str()), (200, ""));
    // An empty trace list is fine and reaches no pipeline.
    let (status, _, text) = h
        .send("PUT", "/v0.4/traces", MSGPACK, Mp::Arr(vec![]).encode())
        .await;
    assert_eq!((status, text.as_str()), (200, RATES));
    let (status, _, _) = h
        .send(
            "PUT",
            "/v0.4/traces",
            MSGPACK,
            Mp::Arr(vec![Mp::Arr(vec![]), Mp::Nil]).encode(),
        )
        .await;
    assert_eq!(status, 200);
    assert!(h.sink.batches.lock().unwrap().is_empty());
    assert_eq!(h.bad_requests(), 0);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn pipeline_refusals_map_to_429_503_and_400() {
    let h = Harness::start(LOCAL).await;
    let body = v05_payload(&[root_and_child()]);
    *h.sink.refuse.lock().unwrap() = Some(ConsumeError::Retryable {
        message: "memory limit".into(),
        retry_after: Some(Duration::from_millis(1500)),
    });
    let resp = client()
        .put(h.url("/v0.5/traces"))
        .header("content-type", MSGPACK)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    // A refusal that says when to come back is "too many requests".
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(resp.text().await.unwrap(), "memory limit\n");
    *h.sink.refuse.lock().unwrap() = Some(ConsumeError::retryable("memory limit"));
    let (status, _, _) = h.send("PUT", "/v0.5/traces", MSGPACK, body.clone()).await;
    assert_eq!(status, 503);
    *h.sink.refuse.lock().unwrap() = Some(ConsumeError::Permanent("bad data".into()));
    let (status, _, text) = h.send("PUT", "/v0.5/traces", MSGPACK, body.clone()).await;
    assert_eq!((status, text.as_str()), (400, "bad data\n"));
    *h.sink.refuse.lock().unwrap() = Some(ConsumeError::NoPipeline(Signal::Traces));
    let (status, _, _) = h.send("PUT", "/v0.5/traces", MSGPACK, body).await;
    assert_eq!(status, 503);
    assert_eq!(h.refused(), 8);
    assert_eq!(h.accepted(), 0);
    assert_eq!(h.bad_requests(), 0);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn include_metadata_and_response_headers() {
    let h = Harness::start(
        "endpoint: 127.0.0.1:0\ninclude_metadata: true\nresponse_headers:\n  X-Served-By: weft\n",
    )
    .await;
    let resp = client()
        .put(h.url("/v0.4/traces"))
        .header("content-type", MSGPACK)
        .header("datadog-meta-lang", ".NET")
        .body(v04_payload(&[root_and_child()]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-served-by"], "weft");
    let batches = h.sink.batches.lock().unwrap().clone();
    let meta = batches[0].metadata.as_ref().unwrap();
    assert!(meta.peer.as_ref().unwrap().starts_with("127.0.0.1:"));
    assert!(meta
        .headers
        .contains(&("datadog-meta-lang".into(), ".NET".into())));
    assert_eq!(&*batches[0].origin, "datadog");
    let rs = h.sink.resource_spans();
    assert!(resources(&rs)[0].contains(&("telemetry.sdk.language".into(), "s:dotnet".into())));
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn lifecycle_bind_errors_shutdown_and_restart() {
    let telemetry = Telemetry::new();
    // Shutdown before start is fine.
    build("datadog", LOCAL, &telemetry, Collect::new())
        .shutdown()
        .await
        .unwrap();
    let h = Harness::start("endpoint: localhost:0\n").await;
    let addr = h.receiver.addr().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    h.receiver.start().await.unwrap();
    assert_eq!(h.receiver.addr(), Some(addr));
    let endpoint = format!("127.0.0.1:{}", addr.port());
    let second = build(
        "datadog/2",
        &format!("endpoint: {endpoint}\n"),
        &telemetry,
        Collect::new(),
    );
    assert_eq!(
        second.start().await.unwrap_err().to_string(),
        format!("datadog/2 receiver: cannot listen on {endpoint}: address in use")
    );
    h.receiver.shutdown().await.unwrap();
    assert_eq!(h.receiver.addr(), None);
    h.receiver.shutdown().await.unwrap();
    second.start().await.unwrap();
    assert_eq!(second.addr(), Some(addr));
    second.shutdown().await.unwrap();
}

#[test]
fn factory_is_registered_for_traces_only() {
    let mut registry = Registry::default();
    crate::register(&mut registry);
    assert!(registry.knows(Kind::Receiver, "datadog"));
    assert_eq!(
        registry.signals(Kind::Receiver, "datadog"),
        &[Signal::Traces]
    );
    registry
        .check_config(Kind::Receiver, "datadog", &serde_yaml_ng::Value::Null)
        .unwrap();
    let bad: serde_yaml_ng::Value = serde_yaml_ng::from_str("endpont: x\n").unwrap();
    let err = registry
        .check_config(Kind::Receiver, "datadog", &bad)
        .unwrap_err();
    assert_eq!(err.path, vec!["endpont"]);
}

#[tokio::test]
async fn a_body_slower_than_read_timeout_is_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start("endpoint: 127.0.0.1:0\nread_timeout: 200ms\n").await;
    let mut conn = tokio::net::TcpStream::connect(h.receiver.addr().unwrap())
        .await
        .unwrap();
    conn.write_all(
        b"PUT /v0.4/traces HTTP/1.1\r\nHost: weft\r\nContent-Type: application/msgpack\r\nContent-Length: 100\r\n\r\n\x91",
    )
    .await
    .unwrap();
    // The rest of the body never comes.
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 408 "), "{head}");
    assert_eq!(h.bad_requests(), 1);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_string_table_bomb_is_413() {
    let h = Harness::start(LOCAL).await;
    // 100 KiB of text referenced 200 000 times would expand to 20 GB.
    let entries: Vec<(Mp, Mp)> = (0..200_000).map(|_| (Mp::Uint(0), Mp::Uint(0))).collect();
    let mut fields = vec![Mp::Uint(0); 9];
    fields.extend([Mp::Map(entries), Mp::Map(vec![]), Mp::Uint(0)]);
    let bomb = Mp::Arr(vec![
        Mp::Arr(vec![s(&"x".repeat(100 << 10))]),
        Mp::Arr(vec![Mp::Arr(vec![Mp::Arr(fields)])]),
    ])
    .encode();
    let (status, _, text) = h.send("PUT", "/v0.5/traces", MSGPACK, bomb).await;
    assert_eq!(status, 413, "{text}");
    assert!(
        text.starts_with("cannot decode the v0.5 payload: the payload would take more than "),
        "{text}"
    );
    assert_eq!((h.bad_requests(), h.accepted()), (1, 0));
    h.receiver.shutdown().await.unwrap();
}
