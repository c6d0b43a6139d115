//! The jaeger exporter against real servers on loopback: a tonic server with
//! the api_v2 CollectorService, and an axum server that decodes Thrift.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use tonic::codec::CompressionEncoding;
use weft_jaeger::grpc::{CollectorService, CollectorServiceServer};
use weft_jaeger::model::{self, Log, Process, RefType, SpanRef, Tag, TagValue};
use weft_jaeger::proto::{self, PostSpansRequest, PostSpansResponse};
use weft_jaeger::thrift::decode_batch;
use weft_pipeline::{Batch, ConsumeError, Exporter, ExporterFactory, Telemetry};

use super::*;
use crate::testutil::{exporter_value, settings, string_kv, yaml};

const TRACE: [u8; 16] = [
    0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c,
];
const HIGH: u64 = 0x0af7_6519_16cd_43dd;
const LOW: u64 = 0x8448_eb21_1c80_319c;

fn int_kv(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

/// Two resources: `checkout` (a server root and an erroring client child
/// with an event and a link) and `billing` (one internal span).
fn payload() -> Vec<ResourceSpans> {
    let start = 1_700_000_000_123_456_789u64;
    let scope = Some(InstrumentationScope {
        name: "weft.app".into(),
        version: "0.4.2".into(),
        ..Default::default()
    });
    vec![
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string_kv("service.name", "checkout"),
                    int_kv("host.cpu_count", 2),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: scope.clone(),
                spans: vec![
                    Span {
                        trace_id: TRACE.to_vec(),
                        span_id: vec![0, 0, 0, 0, 0, 0, 0, 0xa1],
                        flags: 1,
                        name: "GET /checkout".into(),
                        kind: SpanKind::Server as i32,
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + 250_000_000,
                        attributes: vec![string_kv("http.route", "/checkout")],
                        status: Some(Status {
                            code: 1,
                            message: String::new(),
                        }),
                        ..Default::default()
                    },
                    Span {
                        trace_id: TRACE.to_vec(),
                        span_id: vec![0, 0, 0, 0, 0, 0, 0, 0xb2],
                        parent_span_id: vec![0, 0, 0, 0, 0, 0, 0, 0xa1],
                        name: "SELECT orders".into(),
                        kind: SpanKind::Client as i32,
                        start_time_unix_nano: start + 1_999,
                        end_time_unix_nano: start + 100_000_000,
                        attributes: vec![int_kv("db.rows", -1)],
                        events: vec![Event {
                            time_unix_nano: start + 50_000_000,
                            name: "retry".into(),
                            attributes: vec![int_kv("attempt", 2)],
                            ..Default::default()
                        }],
                        links: vec![Link {
                            trace_id: vec![0; 15].into_iter().chain([0x77]).collect(),
                            span_id: vec![0, 0, 0, 0, 0, 0, 0, 0x88],
                            ..Default::default()
                        }],
                        status: Some(Status {
                            code: 2,
                            message: "deadline exceeded".into(),
                        }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        },
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_kv("service.name", "billing")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope,
                spans: vec![Span {
                    trace_id: TRACE.to_vec(),
                    span_id: vec![0, 0, 0, 0, 0, 0, 0, 0xc3],
                    parent_span_id: vec![0, 0, 0, 0, 0, 0, 0, 0xb2],
                    name: "invoice".into(),
                    kind: SpanKind::Internal as i32,
                    start_time_unix_nano: start + 5_000,
                    end_time_unix_nano: start + 6_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    ]
}

fn batch() -> Batch {
    Batch::new(Payload::Traces(payload()), Arc::from("otlp"))
}

fn st(k: &str, v: &str) -> Tag {
    Tag::string(k, v)
}

/// The Jaeger batches `payload()` must arrive as, in the model (times in
/// whole nanoseconds as the protobuf form carries them).
fn expected() -> Vec<model::Batch> {
    let start = 1_700_000_000_123_456_789u64;
    let scope = [
        st("otel.scope.name", "weft.app"),
        st("otel.scope.version", "0.4.2"),
    ];
    vec![
        model::Batch {
            process: Some(Process {
                service_name: "checkout".into(),
                tags: vec![Tag {
                    key: "host.cpu_count".into(),
                    value: TagValue::Long(2),
                }],
            }),
            spans: vec![
                model::Span {
                    trace_id_high: HIGH,
                    trace_id_low: LOW,
                    span_id: 0xa1,
                    operation_name: "GET /checkout".into(),
                    flags: 1,
                    start_ns: start,
                    end_ns: start + 250_000_000,
                    tags: [
                        &scope[..],
                        &[
                            st("http.route", "/checkout"),
                            st("span.kind", "server"),
                            st("otel.status_code", "OK"),
                        ],
                    ]
                    .concat(),
                    ..Default::default()
                },
                model::Span {
                    trace_id_high: HIGH,
                    trace_id_low: LOW,
                    span_id: 0xb2,
                    operation_name: "SELECT orders".into(),
                    references: vec![
                        SpanRef {
                            ref_type: RefType::ChildOf,
                            trace_id_high: HIGH,
                            trace_id_low: LOW,
                            span_id: 0xa1,
                        },
                        SpanRef {
                            ref_type: RefType::FollowsFrom,
                            trace_id_high: 0,
                            trace_id_low: 0x77,
                            span_id: 0x88,
                        },
                    ],
                    start_ns: start + 1_999,
                    end_ns: start + 100_000_000,
                    tags: [
                        &scope[..],
                        &[
                            Tag {
                                key: "db.rows".into(),
                                value: TagValue::Long(-1),
                            },
                            st("span.kind", "client"),
                            st("otel.status_code", "ERROR"),
                            Tag {
                                key: "error".into(),
                                value: TagValue::Bool(true),
                            },
                            st("otel.status_description", "deadline exceeded"),
                        ],
                    ]
                    .concat(),
                    logs: vec![Log {
                        timestamp_ns: start + 50_000_000,
                        fields: vec![
                            st("event", "retry"),
                            Tag {
                                key: "attempt".into(),
                                value: TagValue::Long(2),
                            },
                        ],
                    }],
                    ..Default::default()
                },
            ],
        },
        model::Batch {
            process: Some(Process {
                service_name: "billing".into(),
                tags: vec![],
            }),
            spans: vec![model::Span {
                trace_id_high: HIGH,
                trace_id_low: LOW,
                span_id: 0xc3,
                operation_name: "invoice".into(),
                references: vec![SpanRef {
                    ref_type: RefType::ChildOf,
                    trace_id_high: HIGH,
                    trace_id_low: LOW,
                    span_id: 0xb2,
                }],
                start_ns: start + 5_000,
                end_ns: start + 6_000,
                tags: [&scope[..], &[st("span.kind", "internal")]].concat(),
                ..Default::default()
            }],
        },
    ]
}

// ---------------------------------------------------------------------------
// gRPC

#[derive(Clone, Default)]
struct Collector {
    failures: Arc<Mutex<VecDeque<tonic::Status>>>,
    received: Arc<Mutex<Vec<PostSpansRequest>>>,
    tenants: Arc<Mutex<Vec<String>>>,
    attempts: Arc<Mutex<usize>>,
}

#[tonic::async_trait]
impl CollectorService for Collector {
    async fn post_spans(
        &self,
        request: tonic::Request<PostSpansRequest>,
    ) -> Result<tonic::Response<PostSpansResponse>, tonic::Status> {
        *self.attempts.lock().unwrap() += 1;
        if let Some(t) = request.metadata().get("x-tenant") {
            self.tenants
                .lock()
                .unwrap()
                .push(t.to_str().unwrap().to_string());
        }
        if let Some(status) = self.failures.lock().unwrap().pop_front() {
            return Err(status);
        }
        self.received.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(PostSpansResponse {}))
    }
}

async fn serve_grpc(collector: Collector) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = CollectorServiceServer::new(collector)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

const ID: &str = "jaeger/backend";

fn exporter(t: &Telemetry, cfg: &str) -> Arc<dyn Exporter> {
    exporter_with(
        t,
        &format!(
            "retry_on_failure: {{initial_interval: 10ms, max_interval: 50ms}}\n\
             sending_queue: {{num_consumers: 1}}\n{cfg}"
        ),
    )
}

fn exporter_with(t: &Telemetry, cfg: &str) -> Arc<dyn Exporter> {
    let raw = yaml(&format!("headers: {{x-tenant: acme}}\n{cfg}"));
    JaegerFactory.check_config(&raw).unwrap();
    JaegerFactory.create(settings(ID, t), &raw).unwrap()
}

#[tokio::test]
async fn grpc_delivers_each_resource_as_one_exact_batch() {
    for compression in ["", "compression: gzip\n", "compression: zstd\n"] {
        let t = Telemetry::new();
        let collector = Collector::default();
        let addr = serve_grpc(collector.clone()).await;
        let cfg = format!(
            "endpoint: 127.0.0.1:{}\ntls: {{insecure: true}}\n{compression}",
            addr.port()
        );
        let exp = exporter(&t, &cfg);
        exp.start().await.unwrap();
        exp.consume(batch()).await.unwrap();
        exp.shutdown().await.unwrap();

        let received = collector.received.lock().unwrap().clone();
        let want: Vec<PostSpansRequest> = expected()
            .iter()
            .map(|b| PostSpansRequest {
                batch: Some(proto::batch_to_proto(b)),
            })
            .collect();
        assert_eq!(received, want, "{compression}");
        // Spot checks on the wire form itself.
        let child = &received[0].batch.as_ref().unwrap().spans[1];
        assert_eq!(child.trace_id, TRACE);
        assert_eq!(child.span_id, [0, 0, 0, 0, 0, 0, 0, 0xb2]);
        assert_eq!(
            child.start_time,
            Some(proto::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_458_788
            })
        );
        assert_eq!(
            child.duration,
            Some(proto::Duration {
                seconds: 0,
                nanos: 99_998_001
            })
        );
        assert_eq!(
            child.references[0].ref_type,
            proto::SpanRefType::ChildOf as i32
        );
        assert_eq!(*collector.tenants.lock().unwrap(), vec!["acme", "acme"]);
        assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 3);
        assert_eq!(
            exporter_value(&t, "otelcol_exporter_send_failed_spans", ID),
            0
        );
    }
}

#[tokio::test]
async fn grpc_retryable_and_permanent_codes() {
    let t = Telemetry::new();
    let collector = Collector::default();
    collector
        .failures
        .lock()
        .unwrap()
        .push_back(tonic::Status::unavailable("overloaded"));
    let addr = serve_grpc(collector.clone()).await;
    let exp = exporter(&t, &format!("endpoint: http://{addr}\n"));
    exp.start().await.unwrap();
    exp.consume(batch()).await.unwrap();
    exp.shutdown().await.unwrap();
    // The retry resends the whole payload: both batches arrive once.
    assert_eq!(*collector.attempts.lock().unwrap(), 3);
    assert_eq!(collector.received.lock().unwrap().len(), 2);
    assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 3);

    let t = Telemetry::new();
    let collector = Collector::default();
    collector
        .failures
        .lock()
        .unwrap()
        .push_back(tonic::Status::invalid_argument("bad span"));
    let addr = serve_grpc(collector.clone()).await;
    let exp = exporter(&t, &format!("endpoint: http://{addr}\n"));
    exp.start().await.unwrap();
    exp.consume(batch()).await.unwrap();
    exp.shutdown().await.unwrap();
    assert_eq!(*collector.attempts.lock().unwrap(), 1);
    assert!(collector.received.lock().unwrap().is_empty());
    assert_eq!(
        exporter_value(&t, "otelcol_exporter_send_failed_spans", ID),
        3
    );
    assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 0);
}

// ---------------------------------------------------------------------------
// Thrift over HTTP

type Answer = (u16, Vec<(&'static str, String)>);

#[derive(Clone, Default)]
struct ThriftBackend {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    /// (path and query, headers, decoded batch) of every request.
    requests: Arc<Mutex<Vec<(String, HeaderMap, model::Batch)>>>,
    attempts: Arc<Mutex<Vec<Instant>>>,
}

async fn thrift_handler(
    State(b): State<ThriftBackend>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    b.attempts.lock().unwrap().push(Instant::now());
    let batch = decode_batch(&body, weft_jaeger::thrift::Protocol::Binary).unwrap();
    b.requests
        .lock()
        .unwrap()
        .push((uri.to_string(), headers, batch));
    let (status, extra) = b
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((202, vec![]));
    let mut resp = (StatusCode::from_u16(status).unwrap(), "").into_response();
    for (k, v) in extra {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

async fn serve_thrift(backend: ThriftBackend) -> SocketAddr {
    let app = Router::new()
        .route("/api/traces", post(thrift_handler))
        .route("/jaeger/api/traces", post(thrift_handler))
        .with_state(backend);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// What Thrift keeps of `expected()`: microseconds (truncated), the parent
/// named explicitly.
fn expected_thrift() -> Vec<model::Batch> {
    let mut want = expected();
    for b in &mut want {
        for s in &mut b.spans {
            s.parent_span_id = s.parent_id();
            let start_us = (s.start_ns as i64) / 1000;
            let duration_us = (s.end_ns as i64 - s.start_ns as i64) / 1000;
            s.start_ns = (start_us * 1000) as u64;
            s.end_ns = ((start_us + duration_us) * 1000) as u64;
            for l in &mut s.logs {
                l.timestamp_ns = (l.timestamp_ns / 1000) * 1000;
            }
        }
    }
    want
}

#[tokio::test]
async fn thrift_http_posts_exact_batches() {
    for (endpoint, path) in [
        ("127.0.0.1:{port}", "/api/traces"),
        ("http://127.0.0.1:{port}", "/api/traces"),
        (
            "http://127.0.0.1:{port}/jaeger/api/traces",
            "/jaeger/api/traces",
        ),
    ] {
        let t = Telemetry::new();
        let backend = ThriftBackend::default();
        let addr = serve_thrift(backend.clone()).await;
        let endpoint = endpoint.replace("{port}", &addr.port().to_string());
        let exp = exporter(
            &t,
            &format!("protocol: thrift_http\nendpoint: {endpoint}\n"),
        );
        exp.start().await.unwrap();
        exp.consume(batch()).await.unwrap();
        exp.shutdown().await.unwrap();

        let requests = backend.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 2, "{endpoint}");
        for (uri, headers, _) in &requests {
            assert_eq!(uri, path);
            assert_eq!(headers["content-type"], "application/x-thrift");
            assert_eq!(headers["x-tenant"], "acme");
            assert!(headers.get("content-encoding").is_none());
        }
        let got: Vec<model::Batch> = requests.into_iter().map(|(_, _, b)| b).collect();
        assert_eq!(got, expected_thrift());
        // The child's times, truncated to microseconds as Jaeger does.
        let child = &got[0].spans[1];
        assert_eq!(child.parent_span_id, 0xa1);
        assert_eq!(child.start_ns, 1_700_000_000_123_458_000);
        assert_eq!(child.end_ns, 1_700_000_000_223_456_000);
        assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 3);
    }
}

#[tokio::test]
async fn thrift_http_status_handling() {
    // 503 with Retry-After is retried after that delay; then accepted.
    let t = Telemetry::new();
    let backend = ThriftBackend::default();
    backend
        .answers
        .lock()
        .unwrap()
        .push_back((503, vec![("retry-after", "1".into())]));
    let addr = serve_thrift(backend.clone()).await;
    let exp = exporter(
        &t,
        &format!("protocol: thrift_http\nendpoint: http://{addr}\n"),
    );
    exp.start().await.unwrap();
    exp.consume(batch()).await.unwrap();
    exp.shutdown().await.unwrap();
    let attempts = backend.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 3);
    assert!(attempts[1] - attempts[0] >= Duration::from_secs(1));
    assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 3);

    // 400 is permanent: one attempt, the spans counted as failed.
    for status in [400u16, 500] {
        let t = Telemetry::new();
        let backend = ThriftBackend::default();
        backend.answers.lock().unwrap().push_back((status, vec![]));
        let addr = serve_thrift(backend.clone()).await;
        let exp = exporter(
            &t,
            &format!("protocol: thrift_http\nendpoint: http://{addr}\n"),
        );
        exp.start().await.unwrap();
        exp.consume(batch()).await.unwrap();
        exp.shutdown().await.unwrap();
        assert_eq!(backend.attempts.lock().unwrap().len(), 1, "{status}");
        assert_eq!(
            exporter_value(&t, "otelcol_exporter_send_failed_spans", ID),
            3
        );
    }

    // Nobody listening: retryable, dropped once retries are exhausted.
    let t = Telemetry::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let exp = exporter_with(
        &t,
        &format!(
            "protocol: thrift_http\nendpoint: http://127.0.0.1:{port}\nretry_on_failure: {{enabled: false}}\nsending_queue: {{enabled: false}}\n"
        ),
    );
    exp.start().await.unwrap();
    let err = exp.consume(batch()).await.unwrap_err();
    assert!(matches!(
        err,
        ConsumeError::Retryable { .. } | ConsumeError::Permanent(_)
    ));
    exp.shutdown().await.unwrap();
    assert_eq!(
        exporter_value(&t, "otelcol_exporter_send_failed_spans", ID),
        3
    );
}

#[tokio::test]
async fn other_signals_are_not_for_jaeger() {
    assert_eq!(JaegerFactory.signals(), &[Signal::Traces]);
    let err = batches(&Payload::Logs(vec![])).unwrap_err();
    assert_eq!(
        err,
        ExportError::Permanent("the jaeger exporter sends traces only, not logs".into())
    );
}
