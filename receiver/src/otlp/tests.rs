//! End-to-end tests of the otlp receiver: real listeners on loopback, real
//! HTTP and gRPC clients, and a consumer that records what reaches it.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::sync::{Notify, Semaphore};
use tonic::codec::CompressionEncoding;
use tonic::Code;
use tonic_types::StatusExt;
use weft_pipeline::consumer::SwapConsumer;
use weft_pipeline::host::Host;
use weft_pipeline::{
    parse_config, Batch, ComponentId, ConsumeError, Consumer, DynConsumer, Kind, Lifecycle,
    Payload, ReceiverOutputs, Registry, Settings, Signal, Telemetry,
};

use super::{OtlpReceiver, OtlpReceiverConfig};

/// Records every batch; answers with `refuse` when set; when `gate` is set,
/// waits for a permit before answering (to hold a request in flight).
#[derive(Default)]
struct Collect {
    batches: Mutex<Vec<Batch>>,
    refuse: Mutex<Option<ConsumeError>>,
    gate: Option<(Notify, Semaphore)>,
}

impl Collect {
    fn new() -> Arc<Collect> {
        Arc::new(Collect::default())
    }

    fn refusing(e: ConsumeError) -> Arc<Collect> {
        Arc::new(Collect {
            refuse: Mutex::new(Some(e)),
            ..Collect::default()
        })
    }

    fn batches(&self) -> Vec<Batch> {
        self.batches.lock().unwrap().clone()
    }

    /// Names of all spans received, in order.
    fn span_names(&self) -> Vec<String> {
        self.spans().into_iter().map(|s| s.name).collect()
    }

    fn spans(&self) -> Vec<Span> {
        self.batches()
            .iter()
            .filter_map(|b| match b.payload() {
                Payload::Traces(rs) => Some(rs.clone()),
                _ => None,
            })
            .flatten()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
    }
}

#[async_trait]
impl Consumer for Collect {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        if let Some((entered, release)) = &self.gate {
            entered.notify_one();
            let _permit = release.acquire().await;
        }
        self.batches.lock().unwrap().push(batch);
        match self.refuse.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

struct Harness {
    receiver: OtlpReceiver,
    telemetry: Telemetry,
}

fn outputs(sink: Arc<Collect>) -> ReceiverOutputs {
    let out: DynConsumer = sink;
    ReceiverOutputs {
        traces: out.clone(),
        metrics: out.clone(),
        logs: out,
    }
}

/// A receiver that is not started yet.
fn build(id: &str, yaml: &str, telemetry: &Telemetry, outputs: ReceiverOutputs) -> OtlpReceiver {
    let settings = Settings {
        id: ComponentId::parse(id).unwrap(),
        kind: Kind::Receiver,
        telemetry: telemetry.clone(),
        host: Arc::new(Host::new()),
    };
    let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    let config = parse_config::<OtlpReceiverConfig>(&raw).unwrap();
    OtlpReceiver::new(&settings, config, outputs)
}

impl Harness {
    async fn start(yaml: &str, sink: Arc<Collect>) -> Harness {
        Harness::start_with(yaml, outputs(sink)).await
    }

    async fn start_with(yaml: &str, outputs: ReceiverOutputs) -> Harness {
        let telemetry = Telemetry::new();
        let receiver = build("otlp", yaml, &telemetry, outputs);
        receiver.start().await.unwrap();
        Harness {
            receiver,
            telemetry,
        }
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.receiver.http_addr().unwrap())
    }

    fn grpc_url(&self) -> String {
        format!("http://{}", self.receiver.grpc_addr().unwrap())
    }

    fn counter(&self, name: &str, transport: &str) -> i64 {
        self.telemetry
            .value(name, &[("receiver", "otlp"), ("transport", transport)])
            .unwrap_or(0)
    }

    fn accepted_spans(&self, transport: &str) -> i64 {
        self.counter("otelcol_receiver_accepted_spans", transport)
    }

    fn refused_spans(&self, transport: &str) -> i64 {
        self.counter("otelcol_receiver_refused_spans", transport)
    }

    fn bad_requests(&self, transport: &str) -> i64 {
        self.counter("weft_receiver_bad_requests", transport)
    }
}

const BOTH: &str =
    "protocols:\n  grpc:\n    endpoint: 127.0.0.1:0\n  http:\n    endpoint: 127.0.0.1:0\n";

fn trace_request(names: &[&str]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![i as u8 + 1; 8],
                        name: n.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// reqwest is built without a default crypto provider; weft uses ring.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::new()
}

async fn post(
    url: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = client()
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    req.send().await.unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn http_protobuf_json_gzip_zstd_deliver_exact_spans() {
    let sink = Collect::new();
    let h = Harness::start(BOTH, sink.clone()).await;
    let url = h.http_url("/v1/traces");
    let proto = trace_request(&["a", "b"]).encode_to_vec();

    let resp = post(&url, "application/x-protobuf", None, proto.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "application/x-protobuf");
    assert!(resp.bytes().await.unwrap().is_empty());

    let resp = post(&url, "application/x-protobuf", Some("gzip"), gzip(&proto)).await;
    assert_eq!(resp.status(), 200);
    let zstd = zstd::encode_all(&proto[..], 3).unwrap();
    let resp = post(&url, "application/x-protobuf", Some("zstd"), zstd).await;
    assert_eq!(resp.status(), 200);

    let json = include_str!("testdata/python_traces.json")
        .as_bytes()
        .to_vec();
    let resp = post(&url, "application/json", None, json.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "application/json");
    assert_eq!(resp.text().await.unwrap(), "{}");
    let resp = post(
        &url,
        "application/json; charset=utf-8",
        Some("gzip"),
        gzip(&json),
    )
    .await;
    assert_eq!(resp.status(), 200);

    assert_eq!(
        sink.span_names(),
        ["a", "b", "a", "b", "a", "b", "child", "parent", "child", "parent"]
    );
    let spans = sink.spans();
    assert_eq!(spans[1].span_id, vec![2; 8]);
    assert_eq!(spans[1].trace_id, vec![0xab; 16]);
    assert_eq!(
        spans[6].span_id,
        vec![0x27, 0x11, 0xd4, 0x57, 0x32, 0x03, 0x09, 0x49]
    );
    let batch = &sink.batches()[0];
    assert_eq!(&*batch.origin, "otlp");
    assert!(batch.metadata.is_none());
    assert_eq!(h.accepted_spans("http"), 10);
    assert_eq!(h.refused_spans("http"), 0);
    assert_eq!(h.bad_requests("http"), 0);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn http_metrics_and_logs_paths() {
    let sink = Collect::new();
    let h = Harness::start(
        "protocols:\n  http:\n    endpoint: 127.0.0.1:0\n    metrics_url_path: /m\n",
        sink.clone(),
    )
    .await;
    let resp = post(
        &h.http_url("/m"),
        "application/json",
        None,
        include_str!("testdata/python_metrics.json").into(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let resp = post(
        &h.http_url("/v1/logs"),
        "application/json",
        None,
        include_str!("testdata/spec_logs.json").into(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    // The default metrics path is not served once moved.
    let resp = post(
        &h.http_url("/v1/metrics"),
        "application/json",
        None,
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 404);

    let signals: Vec<Signal> = sink.batches().iter().map(|b| b.signal()).collect();
    assert_eq!(signals, [Signal::Metrics, Signal::Logs]);
    assert_eq!(
        h.counter("otelcol_receiver_accepted_metric_points", "http"),
        3
    );
    assert_eq!(
        h.counter("otelcol_receiver_accepted_log_records", "http"),
        1
    );
    h.receiver.shutdown().await.unwrap();
}

/// Decodes a google.rpc.Status error body in the given format.
async fn rpc_status(resp: reqwest::Response, json: bool) -> (i32, String) {
    let body = resp.bytes().await.unwrap();
    if json {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (
            v["code"].as_i64().unwrap() as i32,
            v["message"].as_str().unwrap().to_string(),
        )
    } else {
        let s = tonic_types::Status::decode(&body[..]).unwrap();
        (s.code, s.message)
    }
}

#[tokio::test]
async fn http_bad_input_table() {
    let sink = Collect::new();
    let h = Harness::start(
        "protocols:\n  http:\n    endpoint: 127.0.0.1:0\n    max_request_body_size: 4096\n",
        sink.clone(),
    )
    .await;
    let url = h.http_url("/v1/traces");
    let proto = trace_request(&["a"]).encode_to_vec();
    let pb = "application/x-protobuf";

    // (content type, encoding, body, status, expected rpc code in the body)
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        (pb, None, proto[..proto.len() - 2].to_vec(), 400),
        (pb, None, vec![0xff, 0xff, 0xff, 0xff], 400),
        (
            "application/json",
            None,
            b"{\"resourceSpans\": [".to_vec(),
            400,
        ),
        ("application/json", None, b"[]".to_vec(), 400),
        ("text/plain", None, proto.clone(), 415),
        ("", None, proto.clone(), 415),
        (pb, None, vec![0; 5000], 413),
        // 1 MiB of zeros gzip to about 1 KiB: small on the wire, over the limit inflated.
        (pb, Some("gzip"), gzip(&vec![0; 1 << 20]), 413),
        (pb, Some("gzip"), b"definitely not gzip".to_vec(), 400),
        (pb, Some("br"), proto.clone(), 400),
    ];
    for (i, (ct, enc, body, want)) in cases.iter().enumerate() {
        let resp = post(&url, ct, *enc, body.clone()).await;
        assert_eq!(resp.status().as_u16(), *want, "case {i}: {ct} {enc:?}");
        if *want == 400 || *want == 413 {
            let json = ct.starts_with("application/json");
            assert_eq!(
                header(&resp, "content-type"),
                if json { "application/json" } else { pb }
            );
            let (code, message) = rpc_status(resp, json).await;
            assert_eq!(code, 3, "case {i}: {message}");
            assert!(!message.is_empty());
        }
    }

    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(header(&resp, "allow"), "POST");
    let resp = client().put(&url).body(proto.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 405);

    // Unknown paths are not OTLP requests and not counted.
    let resp = post(&h.http_url("/v1/spans"), pb, None, proto.clone()).await;
    assert_eq!(resp.status(), 404);

    assert_eq!(h.bad_requests("http"), cases.len() as i64 + 2);
    assert_eq!(h.accepted_spans("http"), 0);
    assert_eq!(h.refused_spans("http"), 0);
    assert!(sink.batches().is_empty());

    // A body exactly at the limit is fine.
    let resp = post(&url, pb, None, proto).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.accepted_spans("http"), 1);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let h = Harness::start(
        "protocols:\n  http:\n    endpoint: 127.0.0.1:0\n    max_request_body_size: 1000\n",
        Collect::new(),
    )
    .await;
    // A streamed body has no Content-Length: the limit applies while reading.
    let chunks: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>> = (0..10)
        .map(|_| Ok(hyper::body::Frame::data(bytes::Bytes::from(vec![0u8; 200]))))
        .collect();
    let resp = client()
        .post(h.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(reqwest::Body::wrap(http_body_util::StreamBody::new(
            futures_util::stream::iter(chunks),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(h.bad_requests("http"), 1);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn consumer_refusals_map_to_status_codes() {
    let retry = ConsumeError::Retryable {
        message: "memory limit reached".into(),
        retry_after: Some(Duration::from_millis(2500)),
    };
    let sink = Collect::refusing(retry);
    let h = Harness::start(BOTH, sink.clone()).await;
    let url = h.http_url("/v1/traces");
    let proto = trace_request(&["a", "b", "c"]).encode_to_vec();

    let resp = post(&url, "application/x-protobuf", None, proto.clone()).await;
    // A refusal that says when to come back is "too many requests".
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "retry-after"), "3");
    assert_eq!(
        rpc_status(resp, false).await,
        (14, "memory limit reached".to_string())
    );
    let resp = post(
        &url,
        "application/json",
        None,
        include_str!("testdata/spec_trace.json").into(),
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(rpc_status(resp, true).await.0, 14);
    assert_eq!(h.refused_spans("http"), 4);
    assert_eq!(h.accepted_spans("http"), 0);
    assert_eq!(h.bad_requests("http"), 0);

    let mut grpc = TraceServiceClient::connect(h.grpc_url()).await.unwrap();
    let err = grpc.export(trace_request(&["a", "b"])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "memory limit reached");
    let details = err.get_error_details();
    assert_eq!(
        details.retry_info().and_then(|r| r.retry_delay),
        Some(Duration::from_millis(2500))
    );
    assert_eq!(h.refused_spans("grpc"), 2);

    // Without a known delay: no Retry-After, plain UNAVAILABLE.
    *sink.refuse.lock().unwrap() = Some(ConsumeError::retryable("queue full"));
    let resp = post(&url, "application/x-protobuf", None, proto.clone()).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_none());
    let err = grpc.export(trace_request(&["a"])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.get_error_details().retry_info().is_none());

    *sink.refuse.lock().unwrap() = Some(ConsumeError::Permanent("bad data".into()));
    let resp = post(&url, "application/x-protobuf", None, proto).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(rpc_status(resp, false).await, (3, "bad data".to_string()));
    let err = grpc.export(trace_request(&["a"])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    assert_eq!(h.refused_spans("http"), 10);
    assert_eq!(h.refused_spans("grpc"), 4);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn signal_without_pipeline() {
    let sink = Collect::new();
    let traces: DynConsumer = sink.clone();
    let h = Harness::start_with(
        BOTH,
        ReceiverOutputs {
            traces,
            metrics: Arc::new(SwapConsumer::new(Signal::Metrics)),
            logs: Arc::new(SwapConsumer::new(Signal::Logs)),
        },
    )
    .await;
    let resp = post(
        &h.http_url("/v1/logs"),
        "application/json",
        None,
        include_str!("testdata/python_logs.json").into(),
    )
    .await;
    assert_eq!(resp.status(), 404);
    let (code, message) = rpc_status(resp, true).await;
    assert_eq!(code, 12);
    assert_eq!(message, "no logs pipeline takes data from this receiver");

    let mut logs = LogsServiceClient::connect(h.grpc_url()).await.unwrap();
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default()],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let err = logs.export(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert_eq!(h.counter("otelcol_receiver_refused_log_records", "http"), 1);
    assert_eq!(h.counter("otelcol_receiver_refused_log_records", "grpc"), 1);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn grpc_plain_gzip_zstd_and_all_signals() {
    let sink = Collect::new();
    let h = Harness::start(BOTH, sink.clone()).await;
    let mut plain = TraceServiceClient::connect(h.grpc_url()).await.unwrap();
    let resp = plain.export(trace_request(&["p1", "p2"])).await.unwrap();
    assert_eq!(resp.into_inner().partial_success, None);
    let mut gz = TraceServiceClient::connect(h.grpc_url())
        .await
        .unwrap()
        .send_compressed(CompressionEncoding::Gzip);
    gz.export(trace_request(&["g"])).await.unwrap();
    let mut zs = TraceServiceClient::connect(h.grpc_url())
        .await
        .unwrap()
        .send_compressed(CompressionEncoding::Zstd);
    zs.export(trace_request(&["z"])).await.unwrap();

    let mut metrics = MetricsServiceClient::connect(h.grpc_url()).await.unwrap();
    metrics
        .export(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "g".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint::default(); 3],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await
        .unwrap();

    assert_eq!(sink.span_names(), ["p1", "p2", "g", "z"]);
    assert_eq!(sink.spans()[1].span_id, vec![2; 8]);
    assert_eq!(h.accepted_spans("grpc"), 4);
    assert_eq!(
        h.counter("otelcol_receiver_accepted_metric_points", "grpc"),
        3
    );
    assert_eq!(h.accepted_spans("http"), 0);
    assert_eq!(h.bad_requests("grpc"), 0);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn grpc_rejections_are_counted() {
    let sink = Collect::new();
    let h = Harness::start(
        "protocols:\n  grpc:\n    endpoint: 127.0.0.1:0\n    max_recv_msg_size_mib: 1\n",
        sink.clone(),
    )
    .await;
    // Over max_recv_msg_size_mib.
    let big = "x".repeat(1 << 20);
    let mut c = TraceServiceClient::connect(h.grpc_url()).await.unwrap();
    let err = c.export(trace_request(&[&big])).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    // Over the limit only once inflated.
    let mut gz = TraceServiceClient::connect(h.grpc_url())
        .await
        .unwrap()
        .send_compressed(CompressionEncoding::Gzip);
    let err = gz.export(trace_request(&[&big])).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    // Bad ids are INVALID_ARGUMENT.
    let mut bad_id = trace_request(&["x"]);
    bad_id.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1; 3];
    let err = c.export(bad_id).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "invalid trace id: 3 bytes, expected 16 (or empty)"
    );

    // A frame that is not a protobuf message, sent by a plain HTTP/2 client.
    let mut frame = vec![0u8];
    frame.extend_from_slice(&4u32.to_be_bytes());
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    install_crypto_provider();
    let raw = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = raw
        .post(format!(
            "{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            h.grpc_url()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "grpc-status"), "13");

    assert_eq!(h.bad_requests("grpc"), 4);
    assert_eq!(h.accepted_spans("grpc"), 0);
    assert!(sink.batches().is_empty());
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn include_metadata_attaches_peer_and_headers() {
    let sink = Collect::new();
    let h = Harness::start(
        "protocols:\n  grpc:\n    endpoint: 127.0.0.1:0\n    include_metadata: true\n  http:\n    endpoint: 127.0.0.1:0\n    include_metadata: true\n",
        sink.clone(),
    )
    .await;
    let resp = client()
        .post(h.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("x-tenant", "acme")
        .body(trace_request(&["h"]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut c = TraceServiceClient::connect(h.grpc_url()).await.unwrap();
    let mut req = tonic::Request::new(trace_request(&["g"]));
    req.metadata_mut()
        .insert("x-tenant", "globex".parse().unwrap());
    c.export(req).await.unwrap();

    let batches = sink.batches();
    for (batch, tenant) in batches.iter().zip(["acme", "globex"]) {
        let md = batch.metadata.as_ref().expect("metadata");
        let peer: SocketAddr = md.peer.as_ref().unwrap().parse().unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.1");
        assert!(
            md.headers
                .contains(&("x-tenant".to_string(), tenant.to_string())),
            "{:?}",
            md.headers
        );
    }
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn cors_preflight_and_simple_requests() {
    let h = Harness::start(
        "protocols:\n  http:\n    endpoint: 127.0.0.1:0\n    cors:\n      allowed_origins: ['https://*.example.com']\n      allowed_headers: ['X-Tenant']\n      max_age: 600\n    response_headers:\n      X-Served-By: weft\n",
        Collect::new(),
    )
    .await;
    let url = h.http_url("/v1/traces");
    let preflight = |origin: &'static str, headers: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", headers)
            .send()
    };
    let resp = preflight("https://app.example.com", "content-type, x-tenant")
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(header(&resp, "access-control-allow-methods"), "POST");
    assert_eq!(
        header(&resp, "access-control-allow-headers"),
        "content-type, x-tenant"
    );
    assert_eq!(header(&resp, "access-control-allow-credentials"), "true");
    assert_eq!(header(&resp, "access-control-max-age"), "600");
    assert_eq!(header(&resp, "x-served-by"), "weft");

    let resp = preflight("https://evil.test", "content-type")
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let resp = preflight("https://app.example.com", "x-other")
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    let resp = client()
        .post(&url)
        .header("origin", "https://app.example.com")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(header(&resp, "vary"), "Origin");
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn tls_for_both_transports() {
    install_crypto_provider();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.pem();
    let key = ck.signing_key.serialize_pem();
    // YAML reads JSON, which spares indenting the PEM blocks.
    let tls = serde_json::json!({ "cert_pem": cert, "key_pem": key });
    let yaml = serde_json::json!({ "protocols": {
        "grpc": { "endpoint": "127.0.0.1:0", "tls": tls },
        "http": { "endpoint": "127.0.0.1:0", "tls": tls },
    }})
    .to_string();
    let sink = Collect::new();
    let h = Harness::start(&yaml, sink.clone()).await;

    let http_port = h.receiver.http_addr().unwrap().port();
    let https = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.as_bytes()).unwrap()])
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], http_port)))
        .build()
        .unwrap();
    let resp = https
        .post(format!("https://localhost:{http_port}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(trace_request(&["over-https"]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Plain HTTP to a TLS port does not get through.
    assert!(client()
        .post(format!("http://127.0.0.1:{http_port}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(trace_request(&["plain"]).encode_to_vec())
        .send()
        .await
        .is_err());

    let grpc_port = h.receiver.grpc_addr().unwrap().port();
    let channel = tonic::transport::Channel::from_shared(format!("https://localhost:{grpc_port}"))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&cert))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    TraceServiceClient::new(channel)
        .export(trace_request(&["over-grpcs"]))
        .await
        .unwrap();
    assert_eq!(sink.span_names(), ["over-https", "over-grpcs"]);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn lifecycle_bind_errors_shutdown_and_rebind() {
    let sink = Collect::new();
    // Shutdown before start is fine.
    build("otlp", BOTH, &Telemetry::new(), outputs(sink.clone()))
        .shutdown()
        .await
        .unwrap();

    let h = Harness::start(
        "protocols:\n  http:\n    endpoint: localhost:0\n",
        sink.clone(),
    )
    .await;
    let addr = h.receiver.http_addr().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert!(h.receiver.grpc_addr().is_none());
    // Starting twice is a no-op.
    h.receiver.start().await.unwrap();
    assert_eq!(h.receiver.http_addr(), Some(addr));

    // The port is taken: a second receiver names the endpoint in its error.
    let endpoint = format!("127.0.0.1:{}", addr.port());
    let second = build(
        "otlp/second",
        &format!("protocols:\n  http:\n    endpoint: {endpoint}\n"),
        &Telemetry::new(),
        outputs(sink.clone()),
    );
    let err = second.start().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("otlp/second receiver: cannot listen on {endpoint}: address in use")
    );
    second.shutdown().await.unwrap();

    // After shutdown the port is free again and the address is forgotten.
    h.receiver.shutdown().await.unwrap();
    assert_eq!(h.receiver.http_addr(), None);
    h.receiver.shutdown().await.unwrap();
    second.start().await.unwrap();
    assert_eq!(second.http_addr(), Some(addr));
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let sink = Arc::new(Collect {
        gate: Some((Notify::new(), Semaphore::new(0))),
        ..Collect::default()
    });
    let h = Arc::new(Harness::start(BOTH, sink.clone()).await);
    let url = h.http_url("/v1/traces");
    let body = trace_request(&["inflight"]).encode_to_vec();
    let mut request =
        tokio::spawn(async move { post(&url, "application/x-protobuf", None, body).await });
    let (entered, release) = sink.gate.as_ref().unwrap();
    tokio::select! {
        _ = entered.notified() => {}
        r = &mut request => panic!("the request ended before reaching the pipeline: {r:?}"),
    }
    // The request is inside the pipeline; shut down while it waits there.
    let addr = h.receiver.http_addr().unwrap();
    let h2 = h.clone();
    let shutdown = tokio::spawn(async move { h2.receiver.shutdown().await });
    // New connections are refused as soon as shutdown begins...
    let mut closed = false;
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "still accepting connections during shutdown");
    assert!(!shutdown.is_finished());
    // ...while the request in flight is still answered.
    release.add_permits(1);
    let resp = request.await.unwrap();
    assert_eq!(resp.status(), 200);
    shutdown.await.unwrap().unwrap();
    assert_eq!(sink.span_names(), ["inflight"]);
}

#[tokio::test]
async fn bind_failure_of_second_protocol_leaves_nothing_listening() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let grpc_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let r = build(
        "otlp",
        &format!(
            "protocols:\n  grpc:\n    endpoint: 127.0.0.1:{grpc_port}\n  http:\n    endpoint: 127.0.0.1:{port}\n"
        ),
        &Telemetry::new(),
        outputs(Collect::new()),
    );
    let err = r.start().await.unwrap_err();
    assert!(err.to_string().contains("address in use"), "{err}");
    assert_eq!(r.grpc_addr(), None);
    // The gRPC listener bound first was released with the failed start.
    drop(std::net::TcpListener::bind(("127.0.0.1", grpc_port)).unwrap());
    drop(taken);
}

#[test]
fn factory_is_registered_and_checks_config() {
    let mut registry = Registry::default();
    crate::register(&mut registry);
    assert!(registry.knows(Kind::Receiver, "otlp"));
    assert_eq!(registry.signals(Kind::Receiver, "otlp"), &Signal::ALL);
    let null = serde_yaml_ng::Value::Null;
    let err = registry
        .check_config(Kind::Receiver, "otlp", &null)
        .unwrap_err();
    assert_eq!(
        err.message,
        "must specify at least one protocol when using the OTLP receiver"
    );
    let ok: serde_yaml_ng::Value = serde_yaml_ng::from_str("protocols:\n  grpc:\n").unwrap();
    registry.check_config(Kind::Receiver, "otlp", &ok).unwrap();
}

#[tokio::test]
async fn missing_certificate_file_fails_start_naming_it() {
    let r = build(
        "otlp",
        "protocols:\n  http:\n    endpoint: 127.0.0.1:0\n    tls:\n      cert_file: /nonexistent/server.crt\n      key_file: /nonexistent/server.key\n",
        &Telemetry::new(),
        outputs(Collect::new()),
    );
    let err = r.start().await.unwrap_err().to_string();
    assert!(
        err.starts_with("otlp receiver: cannot read TLS certificate /nonexistent/server.crt"),
        "{err}"
    );
    assert_eq!(r.http_addr(), None);
}
