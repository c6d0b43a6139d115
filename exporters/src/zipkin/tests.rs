//! The zipkin exporter against a real axum server on loopback: the bodies it
//! posts, decoded field by field, and its answers to server failures.

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::json;
use weft_pipeline::{Batch, ConsumeError, Exporter, ExporterFactory, Payload, Telemetry};
use weft_zipkin::proto::ListOfSpans;

use super::*;
use crate::testutil::{exporter_value, resource_spans, settings, string_kv, trace_batch, yaml};

/// One scripted answer: status and extra headers.
type Answer = (u16, Vec<(&'static str, String)>);

/// A request as the server saw it: headers and the body, decompressed.
type Received = (HeaderMap, Vec<u8>);

#[derive(Clone, Default)]
struct Backend {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    requests: Arc<Mutex<Vec<Received>>>,
    attempts: Arc<Mutex<Vec<Instant>>>,
}

impl Backend {
    fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

fn inflate(headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    match headers.get("content-encoding").map(|v| v.to_str().unwrap()) {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Some("zstd") => zstd::decode_all(body).unwrap(),
        None => body.to_vec(),
        Some(other) => panic!("unexpected content-encoding {other}"),
    }
}

async fn handle(State(b): State<Backend>, headers: HeaderMap, body: Bytes) -> Response {
    b.attempts.lock().unwrap().push(Instant::now());
    let plain = inflate(&headers, &body);
    b.requests.lock().unwrap().push((headers, plain));
    let (code, extra) = b
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((202, Vec::new()));
    let mut resp = (StatusCode::from_u16(code).unwrap(), "").into_response();
    for (k, v) in extra {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

async fn serve(backend: Backend) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/api/v2/spans", post(handle))
        .with_state(backend);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

const ID: &str = "zipkin/backend";

fn exporter(t: &Telemetry, addr: SocketAddr, config: &str) -> Arc<dyn Exporter> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let queue = if config.contains("sending_queue") {
        ""
    } else {
        "sending_queue: {num_consumers: 1}\n"
    };
    let raw = yaml(&format!(
        "endpoint: http://{addr}/api/v2/spans\n\
         retry_on_failure: {{initial_interval: 10ms, max_interval: 50ms}}\n\
         headers: {{x-tenant: acme}}\n{queue}{config}"
    ));
    ZipkinFactory.check_config(&raw).unwrap();
    ZipkinFactory.create(settings(ID, t), &raw).unwrap()
}

async fn send(config: &str, batch: Batch) -> (Telemetry, Backend) {
    let t = Telemetry::new();
    let backend = Backend::default();
    let addr = serve(backend.clone()).await;
    let exp = exporter(&t, addr, config);
    exp.start().await.unwrap();
    exp.consume(batch).await.unwrap();
    exp.shutdown().await.unwrap();
    (t, backend)
}

/// One span with every field the translation maps: a CLIENT child with
/// events, a link, an error status and peer attributes.
fn rich_batch() -> Batch {
    let span = Span {
        trace_id: vec![
            0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f,
            0xc6, 0x0c,
        ],
        span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74],
        parent_span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73],
        trace_state: "congo=t61rcWkgMzE".into(),
        name: "POST /Charge".into(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_012_345_678,
        attributes: vec![
            string_kv("http.method", "POST"),
            string_kv("peer.service", "payments"),
            string_kv("net.peer.ip", "10.2.3.4"),
            string_kv("net.peer.port", "443"),
        ],
        events: vec![Event {
            time_unix_nano: 1_700_000_000_001_000_000,
            name: "retry".into(),
            attributes: vec![string_kv("attempt", "2")],
            dropped_attributes_count: 0,
        }],
        links: vec![Link {
            trace_id: vec![0x11; 16],
            span_id: vec![0x22; 8],
            ..Default::default()
        }],
        status: Some(Status {
            code: 2,
            message: "card declined".into(),
        }),
        ..Default::default()
    };
    let mut rs = resource_spans(&[]);
    rs[0].scope_spans[0].spans = vec![span];
    Batch::new(Payload::Traces(rs), Arc::from("otlp"))
}

#[tokio::test]
async fn json_body_is_zipkin_v2_field_by_field() {
    let (t, backend) = send("", rich_batch()).await;
    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    let (headers, body) = &requests[0];
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(headers["x-tenant"], "acme");
    assert!(headers["user-agent"].to_str().unwrap().starts_with("weft/"));
    let got: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        got,
        json!([{
            "traceId": "5b8efff798038103d269b633813fc60c",
            "parentId": "eee19b7ec3c1b173",
            "id": "eee19b7ec3c1b174",
            "kind": "CLIENT",
            "name": "post /charge",
            "timestamp": 1_700_000_000_000_000u64,
            "duration": 12_346,
            "localEndpoint": {"serviceName": "checkout"},
            "remoteEndpoint": {"serviceName": "payments", "ipv4": "10.2.3.4", "port": 443},
            "annotations": [{"timestamp": 1_700_000_000_001_000u64, "value": "retry|{\"attempt\":\"2\"}|0"}],
            "tags": {
                "error": "true",
                "http.method": "POST",
                "otel.library.name": "test",
                "otel.library.version": "1.0",
                "otel.scope.name": "test",
                "otel.scope.version": "1.0",
                "otel.status_code": "STATUS_CODE_ERROR",
                "otel.status_description": "card declined",
                "otlp.link.0": "11111111111111111111111111111111|2222222222222222||{}|0",
                "w3c.tracestate": "congo=t61rcWkgMzE"
            }
        }])
    );
    assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 1);
}

#[tokio::test]
async fn proto_body_is_a_list_of_spans() {
    let (t, backend) = send("format: proto\ncompression: gzip\n", rich_batch()).await;
    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    let (headers, body) = &requests[0];
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert_eq!(headers["content-encoding"], "gzip");
    let list = ListOfSpans::decode(&body[..]).unwrap();
    assert_eq!(list.spans.len(), 1);
    let s = &list.spans[0];
    assert_eq!(
        s.trace_id,
        [
            0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f,
            0xc6, 0x0c
        ]
    );
    assert_eq!(
        s.parent_id,
        [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73]
    );
    assert_eq!(s.id, [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]);
    assert_eq!(s.kind, 1);
    // Proto keeps the name's case; only JSON lower-cases it, as the collector.
    assert_eq!(s.name, "POST /Charge");
    assert_eq!(s.timestamp, 1_700_000_000_000_000);
    assert_eq!(s.duration, 12_346);
    assert_eq!(s.local_endpoint.as_ref().unwrap().service_name, "checkout");
    let remote = s.remote_endpoint.as_ref().unwrap();
    assert_eq!(
        (
            remote.service_name.as_str(),
            remote.ipv4.as_slice(),
            remote.port
        ),
        ("payments", &[10u8, 2, 3, 4][..], 443)
    );
    assert_eq!(s.annotations.len(), 1);
    assert_eq!(s.annotations[0].value, "retry|{\"attempt\":\"2\"}|0");
    assert_eq!(s.tags["otel.status_code"], "STATUS_CODE_ERROR");
    assert_eq!(s.tags["error"], "true");
    assert_eq!(s.tags.len(), 10);
    assert!(!s.debug && !s.shared);
    assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 1);
}

#[tokio::test]
async fn default_service_name_and_64_bit_ids() {
    let mut rs = resource_spans(&["a"]);
    rs[0].resource = Some(Resource::default());
    rs[0].scope_spans[0].spans[0].trace_id = [vec![0; 8], vec![0xab; 8]].concat();
    let batch = Batch::new(Payload::Traces(rs), Arc::from("otlp"));
    let (_, backend) = send("default_service_name: Unknown-Svc\n", batch).await;
    let got: serde_json::Value = serde_json::from_slice(&backend.requests()[0].1).unwrap();
    assert_eq!(got[0]["traceId"], "abababababababab");
    assert_eq!(
        got[0]["localEndpoint"],
        json!({"serviceName": "unknown-svc"})
    );
    assert_eq!(got[0]["kind"], "SERVER");
    assert_eq!(got[0]["tags"]["otel.status_code"], "STATUS_CODE_OK");
    assert_eq!(got[0]["tags"]["http.route"], "/cart");
}

#[tokio::test]
async fn zstd_and_many_spans_in_one_request() {
    let (t, backend) = send("compression: zstd\n", trace_batch(&["a", "b", "c"])).await;
    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0["content-encoding"], "zstd");
    let got: serde_json::Value = serde_json::from_slice(&requests[0].1).unwrap();
    let ids: Vec<&str> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["0101010101010101", "0202020202020202", "0303030303030303"]
    );
    assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 3);
}

#[tokio::test]
async fn spans_without_ids_are_dropped_before_sending() {
    let mut rs = resource_spans(&["good", "bad"]);
    rs[0].scope_spans[0].spans[1].span_id.clear();
    let (_, backend) = send("", Batch::new(Payload::Traces(rs), Arc::from("otlp"))).await;
    let got: serde_json::Value = serde_json::from_slice(&backend.requests()[0].1).unwrap();
    assert_eq!(got.as_array().unwrap().len(), 1);
    assert_eq!(got[0]["name"], "good");

    // Nothing left to send: no request at all.
    let mut rs = resource_spans(&["bad"]);
    rs[0].scope_spans[0].spans[0].trace_id = vec![0; 16];
    let (_, backend) = send("", Batch::new(Payload::Traces(rs), Arc::from("otlp"))).await;
    assert!(backend.requests().is_empty());
}

#[tokio::test]
async fn retry_after_then_accepted_delivers_once() {
    let t = Telemetry::new();
    let backend = Backend::default();
    backend
        .answers
        .lock()
        .unwrap()
        .push_back((503, vec![("retry-after", "1".to_string())]));
    let addr = serve(backend.clone()).await;
    let exp = exporter(&t, addr, "");
    exp.start().await.unwrap();
    exp.consume(trace_batch(&["a", "b"])).await.unwrap();
    exp.shutdown().await.unwrap();
    let attempts = backend.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 2);
    assert!(attempts[1] - attempts[0] >= Duration::from_secs(1));
    assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 2);
    assert_eq!(
        exporter_value(&t, "otelcol_exporter_send_failed_spans", ID),
        0
    );
}

#[tokio::test]
async fn status_answers_retry_or_drop() {
    for (code, attempts) in [(429, 2), (502, 2), (504, 2), (400, 1), (404, 1), (500, 1)] {
        let t = Telemetry::new();
        let backend = Backend::default();
        backend.answers.lock().unwrap().push_back((code, vec![]));
        let addr = serve(backend.clone()).await;
        let exp = exporter(&t, addr, "");
        exp.start().await.unwrap();
        exp.consume(trace_batch(&["a"])).await.unwrap();
        exp.shutdown().await.unwrap();
        assert_eq!(backend.attempts.lock().unwrap().len(), attempts, "{code}");
        let (sent, failed) = if attempts == 2 { (1, 0) } else { (0, 1) };
        assert_eq!(
            exporter_value(&t, "otelcol_exporter_sent_spans", ID),
            sent,
            "{code}"
        );
        assert_eq!(
            exporter_value(&t, "otelcol_exporter_send_failed_spans", ID),
            failed,
            "{code}"
        );
    }
}

#[tokio::test]
async fn permanent_error_reaches_the_caller() {
    let t = Telemetry::new();
    let backend = Backend::default();
    backend.answers.lock().unwrap().push_back((400, vec![]));
    let addr = serve(backend.clone()).await;
    let exp = exporter(&t, addr, "sending_queue: {enabled: false}\n");
    let err = exp.consume(trace_batch(&["a"])).await.unwrap_err();
    assert_eq!(
        err,
        ConsumeError::Permanent(format!(
            "failed to push trace data to http://{addr}/api/v2/spans: HTTP status 400"
        ))
    );
}

#[test]
fn other_signals_are_refused() {
    let t = Telemetry::new();
    let cfg: ZipkinExporterConfig =
        parse_config(&yaml("endpoint: http://127.0.0.1:9411/api/v2/spans")).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = ZipkinClient::new(&settings(ID, &t), &cfg).unwrap();
    let err = client.encode(&Payload::Logs(vec![])).unwrap_err();
    assert_eq!(
        err,
        ExportError::permanent("the zipkin exporter takes traces, not logs")
    );
    let empty = Payload::Traces(vec![ResourceSpans {
        scope_spans: vec![ScopeSpans::default()],
        ..Default::default()
    }]);
    assert_eq!(client.encode(&empty).unwrap(), None);
}

#[test]
fn registered_for_traces_only() {
    let mut r = weft_pipeline::Registry::default();
    crate::register(&mut r);
    let f = &r.exporters["zipkin"];
    assert_eq!(f.type_name(), "zipkin");
    assert_eq!(f.signals(), &[Signal::Traces]);
}
