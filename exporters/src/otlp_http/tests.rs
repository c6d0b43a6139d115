//! The OTLP/HTTP exporter against a real axum server on loopback.

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use weft_pipeline::{ConsumeError, Exporter, ExporterFactory, Telemetry};

use super::*;
use crate::testutil::{exporter_value, resource_spans, settings, trace_batch, yaml};

/// One scripted answer: status, headers, content type and body.
type Answer = (u16, Vec<(&'static str, String)>, &'static str, Vec<u8>);

#[derive(Clone, Default)]
struct Backend {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    /// (path, headers, decoded request) of every request, failed or not.
    requests: Arc<Mutex<Vec<(String, HeaderMap, ExportTraceServiceRequest)>>>,
    attempts: Arc<Mutex<Vec<Instant>>>,
}

fn decode(headers: &HeaderMap, body: &[u8]) -> ExportTraceServiceRequest {
    let raw = match headers.get("content-encoding").map(|v| v.to_str().unwrap()) {
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
    };
    match headers.get("content-type").unwrap().to_str().unwrap() {
        "application/x-protobuf" => ExportTraceServiceRequest::decode(raw.as_slice()).unwrap(),
        "application/json" => serde_json::from_slice(&raw).unwrap(),
        other => panic!("unexpected content-type {other}"),
    }
}

async fn handle(
    State(b): State<Backend>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    b.attempts.lock().unwrap().push(Instant::now());
    let request = decode(&headers, &body);
    b.requests
        .lock()
        .unwrap()
        .push((uri.path().to_string(), headers, request));
    match b.answers.lock().unwrap().pop_front() {
        None => (
            StatusCode::OK,
            [("content-type", "application/x-protobuf")],
            Vec::new(),
        )
            .into_response(),
        Some((code, extra, content_type, body)) => {
            let mut resp = (
                StatusCode::from_u16(code).unwrap(),
                [("content-type", content_type)],
                body,
            )
                .into_response();
            for (k, v) in extra {
                resp.headers_mut().insert(k, v.parse().unwrap());
            }
            resp
        }
    }
}

async fn serve(backend: Backend) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/traces", post(handle))
        .route("/custom/spans", post(handle))
        .with_state(backend);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

const ID: &str = "otlphttp/backend";

fn exporter(t: &Telemetry, config: &str) -> Arc<dyn Exporter> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let queue = if config.contains("sending_queue") {
        ""
    } else {
        "sending_queue: {num_consumers: 1}\n"
    };
    let raw = yaml(&format!(
        "retry_on_failure: {{initial_interval: 10ms, max_interval: 50ms}}\n\
         headers: {{x-tenant: acme}}\n{queue}{config}"
    ));
    OtlpHttpFactory.check_config(&raw).unwrap();
    OtlpHttpFactory.create(settings(ID, t), &raw).unwrap()
}

#[tokio::test]
async fn proto_and_json_bodies_carry_the_exact_spans() {
    for (encoding, compression) in [
        ("proto", "gzip"),
        ("proto", "none"),
        ("json", "none"),
        ("json", "zstd"),
    ] {
        let t = Telemetry::new();
        let backend = Backend::default();
        let addr = serve(backend.clone()).await;
        let exp = exporter(
            &t,
            &format!("endpoint: http://{addr}\nencoding: {encoding}\ncompression: {compression}"),
        );
        exp.start().await.unwrap();
        exp.consume(trace_batch(&["GET /cart", "SELECT cart"]))
            .await
            .unwrap();
        exp.shutdown().await.unwrap();

        let requests = backend.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1, "{encoding}/{compression}");
        let (path, headers, request) = &requests[0];
        assert_eq!(path, "/v1/traces");
        assert_eq!(headers["x-tenant"], "acme");
        assert!(headers["user-agent"].to_str().unwrap().starts_with("weft/"));
        assert_eq!(
            request.resource_spans,
            resource_spans(&["GET /cart", "SELECT cart"]),
            "{encoding}/{compression}"
        );
        assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 2);
    }
}

#[test]
fn json_body_is_otlp_json() {
    let t = Telemetry::new();
    let cfg: OtlpHttpConfig =
        parse_config(&yaml("{endpoint: 'http://127.0.0.1:4318', encoding: json}")).unwrap();
    let client = HttpClient::new(&settings(ID, &t), &cfg).unwrap();
    let payload = Payload::Traces(resource_spans(&["a"]));
    let text = String::from_utf8(client.encode(&payload).unwrap()).unwrap();
    assert!(
        text.starts_with(concat!(
            r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","#,
            r#""value":{"stringValue":"checkout"}}]}"#
        )),
        "{text}"
    );
    assert!(
        text.contains(
            r#""traceId":"01010101010101010101010101010101","spanId":"0101010101010101""#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#""kind":2,"startTimeUnixNano":"1700000000000000000""#),
        "{text}"
    );
}

#[tokio::test]
async fn retry_after_then_ok_delivers_once() {
    let t = Telemetry::new();
    let backend = Backend::default();
    backend.answers.lock().unwrap().push_back((
        503,
        vec![("retry-after", "1".to_string())],
        "text/plain",
        b"busy".to_vec(),
    ));
    let addr = serve(backend.clone()).await;
    let exp = exporter(&t, &format!("endpoint: http://{addr}"));
    exp.start().await.unwrap();
    exp.consume(trace_batch(&["a", "b", "c"])).await.unwrap();
    exp.shutdown().await.unwrap();

    let attempts = backend.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 2);
    assert!(attempts[1] - attempts[0] >= Duration::from_secs(1));
    assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 3);
    assert_eq!(
        exporter_value(&t, "otelcol_exporter_send_failed_spans", ID),
        0
    );
}

#[tokio::test]
async fn retryable_statuses_are_retried() {
    for code in [429, 502, 504] {
        let t = Telemetry::new();
        let backend = Backend::default();
        backend
            .answers
            .lock()
            .unwrap()
            .push_back((code, vec![], "text/plain", Vec::new()));
        let addr = serve(backend.clone()).await;
        let exp = exporter(&t, &format!("endpoint: http://{addr}"));
        exp.start().await.unwrap();
        exp.consume(trace_batch(&["a"])).await.unwrap();
        exp.shutdown().await.unwrap();
        assert_eq!(backend.attempts.lock().unwrap().len(), 2, "{code}");
        assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 1);
    }
}

#[tokio::test]
async fn client_and_server_errors_drop_and_count() {
    let json_status = br#"{"code":3,"message":"span name too long"}"#.to_vec();
    for (code, content_type, body) in [
        (400, "application/json", json_status),
        (
            400,
            "application/x-protobuf",
            tonic_types::pb::Status {
                code: 3,
                message: "span name too long".into(),
                details: vec![],
            }
            .encode_to_vec(),
        ),
        (500, "text/plain", b"internal".to_vec()),
        (404, "text/plain", Vec::new()),
    ] {
        let t = Telemetry::new();
        let backend = Backend::default();
        backend
            .answers
            .lock()
            .unwrap()
            .push_back((code, vec![], content_type, body));
        let addr = serve(backend.clone()).await;
        let exp = exporter(&t, &format!("endpoint: http://{addr}"));
        exp.start().await.unwrap();
        exp.consume(trace_batch(&["a", "b"])).await.unwrap();
        exp.shutdown().await.unwrap();
        assert_eq!(backend.attempts.lock().unwrap().len(), 1, "{code}");
        assert_eq!(
            exporter_value(&t, "otelcol_exporter_send_failed_spans", ID),
            2
        );
        assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 0);
    }
}

#[tokio::test]
async fn permanent_error_message_reaches_the_caller() {
    let t = Telemetry::new();
    let backend = Backend::default();
    backend.answers.lock().unwrap().push_back((
        400,
        vec![],
        "application/json",
        br#"{"code":3,"message":"span name too long"}"#.to_vec(),
    ));
    let addr = serve(backend.clone()).await;
    let exp = exporter(
        &t,
        &format!("endpoint: http://{addr}\nsending_queue: {{enabled: false}}"),
    );
    let err = exp.consume(trace_batch(&["a"])).await.unwrap_err();
    assert_eq!(
        err,
        ConsumeError::Permanent(format!(
            "error exporting items, request to http://{addr}/v1/traces responded with HTTP Status Code 400, Message=span name too long"
        ))
    );
}

#[tokio::test]
async fn partial_success_is_logged_not_retried() {
    let t = Telemetry::new();
    let backend = Backend::default();
    backend.answers.lock().unwrap().push_back((
        200,
        vec![],
        "application/json",
        br#"{"partialSuccess":{"rejectedSpans":"1","errorMessage":"too old"}}"#.to_vec(),
    ));
    let addr = serve(backend.clone()).await;
    let exp = exporter(&t, &format!("endpoint: http://{addr}"));
    exp.start().await.unwrap();
    exp.consume(trace_batch(&["a", "b"])).await.unwrap();
    exp.shutdown().await.unwrap();
    assert_eq!(backend.attempts.lock().unwrap().len(), 1);
    assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 2);
    assert_eq!(
        partial_success(
            &{
                let mut h = HeaderMap::new();
                h.insert("content-type", "application/json".parse().unwrap());
                h
            },
            br#"{"partialSuccess":{"rejectedSpans":"1","errorMessage":"too old"}}"#
        ),
        Some((1, "too old".to_string()))
    );
}

#[tokio::test]
async fn signal_endpoint_is_used_as_written() {
    let t = Telemetry::new();
    let backend = Backend::default();
    let addr = serve(backend.clone()).await;
    let exp = exporter(
        &t,
        &format!("endpoint: http://{addr}/ignored\ntraces_endpoint: http://{addr}/custom/spans"),
    );
    exp.start().await.unwrap();
    exp.consume(trace_batch(&["a"])).await.unwrap();
    exp.shutdown().await.unwrap();
    let requests = backend.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0, "/custom/spans");
}

#[test]
fn retry_after_forms() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
    let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
    assert_eq!(
        parse_retry_after(&later, now),
        Some(Duration::from_secs(30))
    );
    let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
    assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("soon", now), None);
}

#[test]
fn registered_under_both_names() {
    let mut r = weft_pipeline::Registry::default();
    crate::register(&mut r);
    assert_eq!(r.exporters["otlphttp"].type_name(), "otlp_http");
    assert!(r.exporters.contains_key("otlp_http"));
}
