//! The gRPC exporter against a real tonic OTLP server on loopback.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use weft_pipeline::{ConsumeError, Exporter, ExporterFactory, Telemetry};

use super::*;
use crate::testutil::{exporter_value, resource_spans, settings, trace_batch, yaml};

/// A receiving OTLP trace service that answers from a script of failures.
#[derive(Clone, Default)]
struct Collector {
    failures: Arc<Mutex<VecDeque<Status>>>,
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    attempts: Arc<Mutex<Vec<Instant>>>,
    tenants: Arc<Mutex<Vec<String>>>,
    partial: bool,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.attempts.lock().unwrap().push(Instant::now());
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
        let partial_success = self.partial.then(|| ExportTracePartialSuccess {
            rejected_spans: 1,
            error_message: "span too old".into(),
        });
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success,
        }))
    }
}

async fn serve(collector: Collector) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(collector)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

const ID: &str = "otlp/backend";

fn exporter(t: &Telemetry, extra: &str, addr: SocketAddr) -> Arc<dyn Exporter> {
    let raw = yaml(&format!(
        "endpoint: http://{addr}\n\
         headers: {{x-tenant: acme}}\n\
         retry_on_failure: {{initial_interval: 10ms, max_interval: 50ms}}\n\
         sending_queue: {{num_consumers: 1}}\n{extra}"
    ));
    OtlpGrpcFactory.check_config(&raw).unwrap();
    OtlpGrpcFactory.create(settings(ID, t), &raw).unwrap()
}

#[tokio::test]
async fn delivers_the_exact_spans_with_headers() {
    for compression in ["gzip", "zstd", "none"] {
        let t = Telemetry::new();
        let collector = Collector::default();
        let addr = serve(collector.clone()).await;
        let exp = exporter(&t, &format!("compression: {compression}"), addr);
        exp.start().await.unwrap();
        exp.consume(trace_batch(&["GET /cart", "SELECT cart"]))
            .await
            .unwrap();
        exp.shutdown().await.unwrap();

        let received = collector.received.lock().unwrap().clone();
        assert_eq!(received.len(), 1, "{compression}");
        assert_eq!(
            received[0].resource_spans,
            resource_spans(&["GET /cart", "SELECT cart"])
        );
        let span = &received[0].resource_spans[0].scope_spans[0].spans[1];
        assert_eq!(span.trace_id, vec![2; 16]);
        assert_eq!(span.span_id, vec![2; 8]);
        assert_eq!(span.name, "SELECT cart");
        assert_eq!(*collector.tenants.lock().unwrap(), vec!["acme"]);
        assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 2);
        assert_eq!(
            exporter_value(&t, "otelcol_exporter_send_failed_spans", ID),
            0
        );
    }
}

#[tokio::test]
async fn unavailable_then_ok_delivers_once() {
    let t = Telemetry::new();
    let collector = Collector::default();
    collector
        .failures
        .lock()
        .unwrap()
        .push_back(Status::unavailable("overloaded"));
    let addr = serve(collector.clone()).await;
    let exp = exporter(&t, "", addr);
    exp.start().await.unwrap();
    exp.consume(trace_batch(&["a", "b", "c"])).await.unwrap();
    exp.shutdown().await.unwrap();

    assert_eq!(collector.attempts.lock().unwrap().len(), 2);
    let received = collector.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].resource_spans, resource_spans(&["a", "b", "c"]));
    assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 3);
    assert_eq!(
        exporter_value(&t, "otelcol_exporter_send_failed_spans", ID),
        0
    );
}

#[tokio::test]
async fn retry_info_sets_the_delay() {
    let t = Telemetry::new();
    let collector = Collector::default();
    let asked = Duration::from_millis(300);
    collector
        .failures
        .lock()
        .unwrap()
        .push_back(Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(asked)),
        ));
    let addr = serve(collector.clone()).await;
    let exp = exporter(&t, "", addr);
    exp.start().await.unwrap();
    exp.consume(trace_batch(&["a"])).await.unwrap();
    exp.shutdown().await.unwrap();

    let attempts = collector.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 2);
    assert!(attempts[1] - attempts[0] >= asked);
    assert_eq!(collector.received.lock().unwrap().len(), 1);
    assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 1);
}

#[tokio::test]
async fn permanent_codes_drop_at_once() {
    for status in [
        Status::invalid_argument("bad span"),
        // RESOURCE_EXHAUSTED without RetryInfo is not retried
        Status::resource_exhausted("quota"),
        Status::permission_denied("who are you"),
    ] {
        let t = Telemetry::new();
        let collector = Collector::default();
        collector.failures.lock().unwrap().push_back(status);
        let addr = serve(collector.clone()).await;
        let exp = exporter(&t, "", addr);
        exp.start().await.unwrap();
        exp.consume(trace_batch(&["a", "b"])).await.unwrap();
        exp.shutdown().await.unwrap();
        assert_eq!(collector.attempts.lock().unwrap().len(), 1);
        assert!(collector.received.lock().unwrap().is_empty());
        assert_eq!(
            exporter_value(&t, "otelcol_exporter_send_failed_spans", ID),
            2
        );
        assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 0);
    }
}

#[tokio::test]
async fn partial_success_is_not_retried() {
    let t = Telemetry::new();
    let collector = Collector {
        partial: true,
        ..Collector::default()
    };
    let addr = serve(collector.clone()).await;
    let exp = exporter(&t, "", addr);
    exp.start().await.unwrap();
    exp.consume(trace_batch(&["a", "b"])).await.unwrap();
    exp.shutdown().await.unwrap();
    assert_eq!(collector.attempts.lock().unwrap().len(), 1);
    assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 2);
}

#[tokio::test]
async fn unreachable_endpoint_is_retryable_and_counted() {
    // a port nothing listens on: bind, learn the port, close
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let t = Telemetry::new();
    let raw = yaml(&format!(
        "endpoint: {addr}\ntls: {{insecure: true}}\nretry_on_failure: {{enabled: false}}\nsending_queue: {{enabled: false}}\n"
    ));
    let exp = OtlpGrpcFactory.create(settings(ID, &t), &raw).unwrap();
    exp.start().await.unwrap();
    let err = exp.consume(trace_batch(&["a"])).await.unwrap_err();
    assert!(matches!(err, ConsumeError::Retryable { .. }), "{err:?}");
    assert_eq!(
        exporter_value(&t, "otelcol_exporter_send_failed_spans", ID),
        1
    );
    exp.shutdown().await.unwrap();
}

#[test]
fn status_classification_follows_the_collector() {
    for code in [
        Code::Cancelled,
        Code::DeadlineExceeded,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unavailable,
        Code::DataLoss,
    ] {
        assert!(
            classify_status(&Status::new(code, "x")).is_retryable(),
            "{code:?}"
        );
    }
    for code in [
        Code::InvalidArgument,
        Code::NotFound,
        Code::PermissionDenied,
        Code::Unauthenticated,
        Code::Unimplemented,
        Code::Internal,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Unknown,
    ] {
        assert!(
            !classify_status(&Status::new(code, "x")).is_retryable(),
            "{code:?}"
        );
    }
    let throttled = Status::with_error_details(
        Code::ResourceExhausted,
        "x",
        ErrorDetails::with_retry_info(Some(Duration::from_secs(2))),
    );
    assert_eq!(
        classify_status(&throttled),
        ExportError::Retryable {
            message: "rpc error: code = ResourceExhausted desc = x".into(),
            retry_after: Some(Duration::from_secs(2)),
        }
    );
}

#[test]
fn registered_under_both_names() {
    let mut r = weft_pipeline::Registry::default();
    crate::register(&mut r);
    assert!(r.exporters.contains_key("otlp"));
    assert!(r.exporters.contains_key("otlp_grpc"));
    assert_eq!(r.exporters["otlp"].type_name(), "otlp_grpc");
}

/// A CA and a server certificate for `collector.internal` signed by it, as PEM.
struct TestPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["collector.internal".to_string()]).unwrap();
    let cert = params
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

async fn serve_tls(collector: Collector, pki: &TestPki) -> SocketAddr {
    use tonic::transport::{Identity, ServerTlsConfig};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(&pki.cert_pem, &pki.key_pem));
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(
            TraceServiceServer::new(collector).accept_compressed(CompressionEncoding::Gzip),
        )
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    addr
}

fn tls_exporter(t: &Telemetry, addr: SocketAddr, tls: &str) -> Arc<dyn Exporter> {
    let raw = yaml(&format!(
        "endpoint: {addr}\ntls: {tls}\nretry_on_failure: {{enabled: false}}\nsending_queue: {{enabled: false}}\n"
    ));
    OtlpGrpcFactory.check_config(&raw).unwrap();
    OtlpGrpcFactory.create(settings(ID, t), &raw).unwrap()
}

#[tokio::test]
async fn tls_verifies_against_ca_file_and_server_name_override() {
    let pki = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let collector = Collector::default();
    let addr = serve_tls(collector.clone(), &pki).await;

    let t = Telemetry::new();
    let exp = tls_exporter(
        &t,
        addr,
        &format!(
            "{{ca_file: '{}', server_name_override: collector.internal}}",
            ca_file.display()
        ),
    );
    exp.start().await.unwrap();
    exp.consume(trace_batch(&["over tls"])).await.unwrap();
    exp.shutdown().await.unwrap();
    let received = collector.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].resource_spans, resource_spans(&["over tls"]));
    assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", ID), 1);

    // the certificate does not name 127.0.0.1: without the override it fails
    let t = Telemetry::new();
    let exp = tls_exporter(&t, addr, &format!("{{ca_file: '{}'}}", ca_file.display()));
    exp.start().await.unwrap();
    let err = exp.consume(trace_batch(&["refused"])).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(
        exporter_value(&t, "otelcol_exporter_send_failed_spans", ID),
        1
    );
    assert_eq!(collector.received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn tls_insecure_skip_verify_accepts_any_certificate() {
    let pki = test_pki();
    let collector = Collector::default();
    let addr = serve_tls(collector.clone(), &pki).await;
    let t = Telemetry::new();
    let exp = tls_exporter(&t, addr, "{insecure_skip_verify: true}");
    exp.start().await.unwrap();
    exp.consume(trace_batch(&["a"])).await.unwrap();
    exp.shutdown().await.unwrap();
    assert_eq!(collector.received.lock().unwrap().len(), 1);
}

#[test]
fn tls_settings_are_checked() {
    let err =
        parse_config::<OtlpGrpcConfig>(&yaml("{endpoint: 'h:1', tls: {cert_file: /x/cert.pem}}"))
            .unwrap_err();
    assert_eq!(err.path, vec!["tls"]);
    let t = Telemetry::new();
    let raw = yaml("{endpoint: 'h:1', tls: {ca_file: /nonexistent/ca.pem}}");
    let err = OtlpGrpcFactory
        .create(settings(ID, &t), &raw)
        .err()
        .expect("a missing CA file is an error");
    assert!(err.0.contains("/nonexistent/ca.pem"), "{err}");
}
