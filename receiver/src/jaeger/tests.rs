//! The jaeger receiver over real sockets: Thrift over HTTP, gRPC with the
//! api_v2 client, agent datagrams over UDP, and a consumer that records
//! what reaches it.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use prost::Message;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, Semaphore};
use tonic::codec::CompressionEncoding;
use tonic::Code;
use weft_jaeger::grpc::{CollectorServiceClient, POST_SPANS_PATH};
use weft_jaeger::model::{self, Batch, Log, Process, RefType, SpanRef, Tag, TagValue};
use weft_jaeger::proto::{batch_to_proto, PostSpansRequest, PostSpansResponse};
use weft_jaeger::thrift::{encode_batch, encode_emit_batch};
use weft_pipeline::host::Host;
use weft_pipeline::{
    parse_config, Batch as PipelineBatch, ComponentId, ConsumeError, Consumer, DynConsumer, Kind,
    Lifecycle, Payload, ReceiverFactory, ReceiverOutputs, Settings, Telemetry,
};

use super::config::with_jaeger_defaults;
use super::{JaegerReceiver, JaegerReceiverConfig, JaegerReceiverFactory, Protocol};

/// Records every batch; answers with `refuse` when set; when `gate` is set,
/// waits for a permit before answering (to hold a datagram in a worker).
#[derive(Default)]
struct Collect {
    batches: Mutex<Vec<PipelineBatch>>,
    refuse: Mutex<Option<ConsumeError>>,
    gate: Option<(Notify, Semaphore)>,
}

impl Collect {
    fn new() -> Arc<Collect> {
        Arc::new(Collect::default())
    }

    fn spans(&self) -> Vec<Span> {
        self.batches
            .lock()
            .unwrap()
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

    fn resources(&self) -> Vec<Vec<KeyValue>> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| match b.payload() {
                Payload::Traces(rs) => Some(rs.clone()),
                _ => None,
            })
            .flatten()
            .map(|r| r.resource.unwrap_or_default().attributes)
            .collect()
    }

    fn scopes(&self) -> Vec<InstrumentationScope> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| match b.payload() {
                Payload::Traces(rs) => Some(rs.clone()),
                _ => None,
            })
            .flatten()
            .flat_map(|r| r.scope_spans)
            .map(|s| s.scope.unwrap_or_default())
            .collect()
    }

    async fn wait_for_spans(&self, n: usize) -> Vec<Span> {
        for _ in 0..500 {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.spans()
    }
}

#[async_trait]
impl Consumer for Collect {
    async fn consume(&self, batch: PipelineBatch) -> Result<(), ConsumeError> {
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
    receiver: JaegerReceiver,
    telemetry: Telemetry,
}

const ALL: &str = "protocols:
  grpc: {endpoint: 127.0.0.1:0}
  thrift_http: {endpoint: 127.0.0.1:0}
  thrift_compact: {endpoint: 127.0.0.1:0}
  thrift_binary: {endpoint: 127.0.0.1:0}
";

fn settings(telemetry: &Telemetry) -> Settings {
    Settings {
        id: ComponentId::parse("jaeger").unwrap(),
        kind: Kind::Receiver,
        telemetry: telemetry.clone(),
        host: Arc::new(Host::new()),
    }
}

impl Harness {
    async fn start(yaml: &str, sink: Arc<Collect>) -> Harness {
        let telemetry = Telemetry::new();
        let out: DynConsumer = sink;
        let outputs = ReceiverOutputs {
            traces: out.clone(),
            metrics: out.clone(),
            logs: out,
        };
        let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let config = parse_config::<JaegerReceiverConfig>(&with_jaeger_defaults(&raw)).unwrap();
        let receiver = JaegerReceiver::new(&settings(&telemetry), config, outputs);
        receiver.start().await.unwrap();
        Harness {
            receiver,
            telemetry,
        }
    }

    fn http_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.receiver.addrs().thrift_http.unwrap()
        )
    }

    fn counter(&self, name: &str, transport: &str) -> i64 {
        self.telemetry
            .value(name, &[("receiver", "jaeger"), ("transport", transport)])
            .unwrap_or(0)
    }

    fn accepted(&self, transport: &str) -> i64 {
        self.counter("otelcol_receiver_accepted_spans", transport)
    }

    fn refused(&self, transport: &str) -> i64 {
        self.counter("otelcol_receiver_refused_spans", transport)
    }

    fn bad(&self, transport: &str) -> i64 {
        self.counter("weft_receiver_bad_requests", transport)
    }

    async fn wait_bad(&self, transport: &str, want: i64) -> i64 {
        for _ in 0..500 {
            if self.bad(transport) >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.bad(transport)
    }
}

const HIGH: u64 = 0x0af7_6519_16cd_43dd;
const LOW: u64 = 0x8448_eb21_1c80_319c;
const TRACE: [u8; 16] = [
    0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c,
];

fn str_tag(k: &str, v: &str) -> Tag {
    Tag::string(k, v)
}

/// A batch as a Jaeger client sends it: a server root and an erroring
/// client child with a log, in 128-bit trace `TRACE`.
fn client_batch(service: &str) -> Batch {
    let start = 1_700_000_000_000_000_000u64;
    Batch {
        process: Some(Process {
            service_name: service.into(),
            tags: vec![str_tag("hostname", "box-1")],
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
                tags: vec![
                    str_tag("span.kind", "server"),
                    Tag {
                        key: "http.status_code".into(),
                        value: TagValue::Long(200),
                    },
                    str_tag("otel.scope.name", "weft.test"),
                    str_tag("otel.scope.version", "1.0"),
                ],
                ..Default::default()
            },
            model::Span {
                trace_id_high: HIGH,
                trace_id_low: LOW,
                span_id: 0xb2,
                parent_span_id: 0xa1,
                operation_name: "SELECT orders".into(),
                references: vec![SpanRef {
                    ref_type: RefType::FollowsFrom,
                    trace_id_high: 0,
                    trace_id_low: 0x77,
                    span_id: 0x88,
                }],
                flags: 1,
                start_ns: start + 1_000,
                end_ns: start + 100_000_000,
                tags: vec![
                    str_tag("span.kind", "client"),
                    str_tag("otel.status_code", "ERROR"),
                    str_tag("otel.status_description", "deadline exceeded"),
                    Tag {
                        key: "error".into(),
                        value: TagValue::Bool(true),
                    },
                    Tag {
                        key: "db.rows".into(),
                        value: TagValue::Long(-1),
                    },
                    str_tag("otel.scope.name", "weft.test"),
                    str_tag("otel.scope.version", "1.0"),
                ],
                logs: vec![Log {
                    timestamp_ns: start + 50_000_000,
                    fields: vec![
                        str_tag("event", "retry"),
                        Tag {
                            key: "attempt".into(),
                            value: TagValue::Long(2),
                        },
                    ],
                }],
                process: None,
            },
        ],
    }
}

fn s(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn i(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

/// What `client_batch` must become, field by field.
fn assert_client_batch(spans: &[Span], resources: &[Vec<KeyValue>], service: &str) {
    assert_eq!(spans.len(), 2);
    let root = &spans[0];
    let child = &spans[1];
    assert_eq!(root.trace_id, TRACE);
    assert_eq!(root.span_id, [0, 0, 0, 0, 0, 0, 0, 0xa1]);
    assert!(root.parent_span_id.is_empty());
    assert_eq!(root.name, "GET /checkout");
    assert_eq!(root.kind, SpanKind::Server as i32);
    assert_eq!(root.flags, 1);
    assert_eq!(root.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(root.end_time_unix_nano, 1_700_000_000_250_000_000);
    assert_eq!(root.attributes, vec![i("http.status_code", 200)]);
    assert_eq!(root.status, None);
    assert_eq!(child.trace_id, TRACE);
    assert_eq!(child.span_id, [0, 0, 0, 0, 0, 0, 0, 0xb2]);
    assert_eq!(child.parent_span_id, [0, 0, 0, 0, 0, 0, 0, 0xa1]);
    assert_eq!(child.kind, SpanKind::Client as i32);
    assert_eq!(
        child.status,
        Some(Status {
            code: 2,
            message: "deadline exceeded".into()
        })
    );
    assert_eq!(child.attributes, vec![i("db.rows", -1)]);
    assert_eq!(child.events.len(), 1);
    assert_eq!(child.events[0].name, "retry");
    assert_eq!(child.events[0].time_unix_nano, 1_700_000_000_050_000_000);
    assert_eq!(child.events[0].attributes, vec![i("attempt", 2)]);
    assert_eq!(child.links.len(), 1);
    assert_eq!(child.links[0].span_id, [0, 0, 0, 0, 0, 0, 0, 0x88]);
    assert_eq!(
        child.links[0].attributes,
        vec![s("opentracing.ref_type", "follows_from")]
    );
    assert_eq!(
        resources,
        vec![vec![s("service.name", service), s("host.name", "box-1")]]
    );
}

fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::new()
}

async fn post(
    url: &str,
    content_type: Option<&str>,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = client().post(url).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    req.send().await.unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn thrift_http_delivers_exact_spans_with_202() {
    let sink = Collect::new();
    let h = Harness::start(ALL, sink.clone()).await;
    let body = encode_batch(&client_batch("checkout"), Protocol::Binary);
    let resp = post(
        &h.http_url("/api/traces"),
        Some("application/x-thrift"),
        None,
        body.clone(),
    )
    .await;
    assert_eq!(resp.status(), 202);
    assert!(resp.bytes().await.unwrap().is_empty());
    assert_client_batch(&sink.spans(), &sink.resources(), "checkout");
    assert_eq!(
        sink.scopes(),
        vec![InstrumentationScope {
            name: "weft.test".into(),
            version: "1.0".into(),
            ..Default::default()
        }]
    );
    assert_eq!(h.accepted("collector_http"), 2);
    // The other media type, a gzip body, and a query string are fine too.
    let resp = post(
        &h.http_url("/api/traces?format=jaeger.thrift"),
        Some("application/vnd.apache.thrift.binary"),
        Some("gzip"),
        gzip(&body),
    )
    .await;
    assert_eq!(resp.status(), 202);
    assert_eq!(h.accepted("collector_http"), 4);
    assert_eq!(h.bad("collector_http"), 0);
    h.receiver.shutdown().await.unwrap();
}

/// (method, path, content type, encoding, body, status, answer starts
/// with, counted as a bad request)
type BadCase = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
    bool,
);

#[tokio::test]
async fn thrift_http_bad_input_table() {
    let sink = Collect::new();
    let yaml = "protocols:\n  thrift_http: {endpoint: 127.0.0.1:0, max_request_body_size: 4096, compression_algorithms: [gzip]}\n";
    let h = Harness::start(yaml, sink.clone()).await;
    let url = h.http_url("/api/traces");
    let good = encode_batch(&client_batch("checkout"), Protocol::Binary);
    let compact = encode_batch(&client_batch("checkout"), Protocol::Compact);
    let mut counted = 0;
    let cases: Vec<BadCase> = vec![
        ("GET", "/api/traces", None, None, vec![], 405, "method GET not allowed", true),
        ("POST", "/api/spans", Some("application/x-thrift"), None, good.clone(), 404, "404 page not found", false),
        ("POST", "/api/traces", Some("application/json"), None, good.clone(), 400, "Unsupported content type: application/json", true),
        ("POST", "/api/traces", None, None, good.clone(), 400, "Cannot parse content type: \"\"", true),
        ("POST", "/api/traces", Some("application/x-thrift"), None, b"not thrift".to_vec(), 400, "Unable to process request body: cannot decode the Thrift batch:", true),
        ("POST", "/api/traces", Some("application/x-thrift"), None, compact, 400, "Unable to process request body: cannot decode the Thrift batch:", true),
        ("POST", "/api/traces", Some("application/x-thrift"), None, vec![], 400, "Unable to process request body: cannot decode the Thrift batch: unexpected end of data at byte 0", true),
        ("POST", "/api/traces", Some("application/x-thrift"), Some("zstd"), good.clone(), 400, "unsupported Content-Encoding: zstd", true),
        ("POST", "/api/traces", Some("application/x-thrift"), Some("gzip"), b"not gzip".to_vec(), 400, "cannot decompress the gzip request body", true),
        ("POST", "/api/traces", Some("application/x-thrift"), None, vec![0; 5000], 413, "request body larger than 4096 bytes", true),
        ("POST", "/api/traces", Some("application/x-thrift"), Some("gzip"), gzip(&[0; 5000]), 413, "request body larger than 4096 bytes", true),
    ];
    for (method, path, ct, enc, body, status, text, count) in cases {
        let mut req = client()
            .request(method.parse().unwrap(), h.http_url(path))
            .body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        if let Some(e) = enc {
            req = req.header("content-encoding", e);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status, "{method} {path} {ct:?} {enc:?}");
        if status == 405 {
            assert_eq!(resp.headers()["allow"], "POST");
        }
        let got = resp.text().await.unwrap();
        assert!(got.starts_with(text), "{method} {path} {ct:?}: {got:?}");
        if count {
            counted += 1;
        }
        assert_eq!(h.bad("collector_http"), counted, "{method} {path} {ct:?}");
    }
    assert!(sink.spans().is_empty());
    assert_eq!(h.accepted("collector_http"), 0);
    // Still serving.
    let resp = post(&url, Some("application/x-thrift"), None, good).await;
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn thrift_http_refusals() {
    let body = encode_batch(&client_batch("checkout"), Protocol::Binary);
    for (err, status, retry_after) in [
        (
            ConsumeError::Retryable {
                message: "memory limit".into(),
                retry_after: Some(Duration::from_millis(1500)),
            },
            429,
            "2",
        ),
        (ConsumeError::retryable("busy"), 503, ""),
        (ConsumeError::Permanent("bad data".into()), 500, ""),
    ] {
        let sink = Arc::new(Collect {
            refuse: Mutex::new(Some(err.clone())),
            ..Collect::default()
        });
        let h = Harness::start(ALL, sink.clone()).await;
        let resp = post(
            &h.http_url("/api/traces"),
            Some("application/x-thrift"),
            None,
            body.clone(),
        )
        .await;
        assert_eq!(resp.status(), status, "{err:?}");
        let got_retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert_eq!(got_retry, retry_after);
        assert_eq!(
            resp.text().await.unwrap(),
            format!("Cannot submit Jaeger batch: {err}\n")
        );
        assert_eq!(h.refused("collector_http"), 2);
        assert_eq!(h.accepted("collector_http"), 0);
    }
}

async fn grpc_client(h: &Harness) -> CollectorServiceClient<tonic::transport::Channel> {
    let addr = h.receiver.addrs().grpc.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    CollectorServiceClient::new(channel)
}

#[tokio::test]
async fn grpc_post_spans_delivers_exact_spans() {
    let sink = Collect::new();
    let h = Harness::start(ALL, sink.clone()).await;
    let mut client = grpc_client(&h).await;
    let req = PostSpansRequest {
        batch: Some(batch_to_proto(&client_batch("checkout"))),
    };
    client
        .post_spans(tonic::Request::new(req.clone()))
        .await
        .unwrap();
    assert_client_batch(&sink.spans(), &sink.resources(), "checkout");
    assert_eq!(h.accepted("grpc"), 2);
    // gzip and zstd requests are accepted.
    for enc in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut c = grpc_client(&h).await.send_compressed(enc);
        c.post_spans(tonic::Request::new(req.clone()))
            .await
            .unwrap();
    }
    assert_eq!(h.accepted("grpc"), 6);
    assert_eq!(h.bad("grpc"), 0);
}

#[tokio::test]
async fn grpc_span_level_processes_become_resources() {
    let sink = Collect::new();
    let h = Harness::start(ALL, sink.clone()).await;
    // As the Python proto exporter sends: no batch process, one per span.
    let mut batch = client_batch("checkout");
    let process = batch.process.take();
    for s in &mut batch.spans {
        s.process = process.clone();
    }
    let mut client = grpc_client(&h).await;
    client
        .post_spans(tonic::Request::new(PostSpansRequest {
            batch: Some(batch_to_proto(&batch)),
        }))
        .await
        .unwrap();
    // The parent came from the CHILD_OF reference the proto form carries.
    assert_client_batch(&sink.spans(), &sink.resources(), "checkout");
}

/// A message with the shape of PostSpansRequest but field 1 holding bytes
/// that are not a Batch.
#[derive(Clone, PartialEq, prost::Message)]
struct NotABatch {
    #[prost(bytes = "vec", tag = "1")]
    batch: Vec<u8>,
}

#[tokio::test]
async fn grpc_rejections_are_counted() {
    let sink = Collect::new();
    let yaml = "protocols:\n  grpc: {endpoint: 127.0.0.1:0, max_recv_msg_size_mib: 1}\n";
    let h = Harness::start(yaml, sink.clone()).await;
    let addr = h.receiver.addrs().grpc.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // Bytes that do not decode: tonic refuses them before the handler.
    let mut raw = tonic::client::Grpc::new(channel.clone());
    raw.ready().await.unwrap();
    let err = raw
        .unary::<NotABatch, PostSpansResponse, _>(
            tonic::Request::new(NotABatch {
                batch: vec![0xff, 0xff, 0xff],
            }),
            http::uri::PathAndQuery::from_static(POST_SPANS_PATH),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(h.bad("grpc"), 1);

    // Over max_recv_msg_size_mib: RESOURCE_EXHAUSTED, counted.
    let mut big = client_batch("checkout");
    big.spans[0].operation_name = "x".repeat(1 << 20);
    let mut client = CollectorServiceClient::new(channel.clone());
    let err = client
        .post_spans(tonic::Request::new(PostSpansRequest {
            batch: Some(batch_to_proto(&big)),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(h.bad("grpc"), 2);

    // Ids of the wrong length reach the handler and are refused there.
    let mut bad_ids = batch_to_proto(&client_batch("checkout"));
    bad_ids.spans[1].span_id = vec![1, 2, 3];
    let err = client
        .post_spans(tonic::Request::new(PostSpansRequest {
            batch: Some(bad_ids),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "invalid span ids: span 1: span_id has 3 bytes, want 8"
    );
    assert_eq!(h.bad("grpc"), 3);
    assert!(sink.spans().is_empty());
    // An unknown method of the service.
    raw.ready().await.unwrap();
    let err = raw
        .unary::<NotABatch, PostSpansResponse, _>(
            tonic::Request::new(NotABatch { batch: vec![] }),
            http::uri::PathAndQuery::from_static("/jaeger.api_v2.CollectorService/GetSpans"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert_eq!(h.bad("grpc"), 4);
}

#[tokio::test]
async fn grpc_refusals_map_to_status_codes() {
    for (err, code) in [
        (ConsumeError::retryable("memory limit"), Code::Unavailable),
        (ConsumeError::Permanent("bad".into()), Code::InvalidArgument),
    ] {
        let sink = Arc::new(Collect {
            refuse: Mutex::new(Some(err)),
            ..Collect::default()
        });
        let h = Harness::start(ALL, sink).await;
        let mut client = grpc_client(&h).await;
        let got = client
            .post_spans(tonic::Request::new(PostSpansRequest {
                batch: Some(batch_to_proto(&client_batch("checkout"))),
            }))
            .await
            .unwrap_err();
        assert_eq!(got.code(), code);
        assert_eq!(h.refused("grpc"), 2);
    }
}

async fn send_udp(to: SocketAddr, datagram: &[u8]) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(datagram, to).await.unwrap();
}

#[tokio::test]
async fn udp_compact_and_binary_datagrams() {
    for (protocol, transport) in [
        (Protocol::Compact, "udp_thrift_compact"),
        (Protocol::Binary, "udp_thrift_binary"),
    ] {
        let sink = Collect::new();
        let h = Harness::start(ALL, sink.clone()).await;
        let addrs = h.receiver.addrs();
        let to = match protocol {
            Protocol::Compact => addrs.thrift_compact.unwrap(),
            Protocol::Binary => addrs.thrift_binary.unwrap(),
        };
        send_udp(
            to,
            &encode_emit_batch(&client_batch("udp-app"), protocol, 0),
        )
        .await;
        let spans = sink.wait_for_spans(2).await;
        assert_client_batch(&spans, &sink.resources(), "udp-app");
        assert_eq!(h.accepted(transport), 2);
        h.receiver.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn udp_garbage_and_oversized_datagrams_are_counted() {
    let sink = Collect::new();
    let yaml = "protocols:
  thrift_compact: {endpoint: 127.0.0.1:0, max_packet_size: 2000}
  thrift_binary: {endpoint: 127.0.0.1:0}
";
    let h = Harness::start(yaml, sink.clone()).await;
    let compact = h.receiver.addrs().thrift_compact.unwrap();
    let binary = h.receiver.addrs().thrift_binary.unwrap();
    let good = encode_emit_batch(&client_batch("udp-app"), Protocol::Compact, 0);
    // Garbage, a binary datagram on the compact port, an empty datagram, an
    // unknown method, and one byte over the limit: all counted, none crash.
    let mut unknown = good.clone();
    unknown[4..13].copy_from_slice(b"emitBatcX");
    send_udp(compact, b"\x00\x01garbage").await;
    send_udp(
        compact,
        &encode_emit_batch(&client_batch("x"), Protocol::Binary, 0),
    )
    .await;
    send_udp(compact, &[]).await;
    send_udp(compact, &unknown).await;
    send_udp(compact, &vec![0x82; 2001]).await;
    assert_eq!(h.wait_bad("udp_thrift_compact", 5).await, 5);
    // Exactly at the limit is decoded (and fails as garbage, not as too big).
    send_udp(compact, &vec![0x82; 2000]).await;
    assert_eq!(h.wait_bad("udp_thrift_compact", 6).await, 6);
    // The largest datagram there is, on a port with the default limit.
    send_udp(binary, &vec![0u8; 65_000]).await;
    assert_eq!(h.wait_bad("udp_thrift_binary", 1).await, 1);
    // Still serving.
    send_udp(compact, &good).await;
    assert_eq!(sink.wait_for_spans(2).await.len(), 2);
    assert_eq!(h.accepted("udp_thrift_compact"), 2);
    assert_eq!(h.bad("udp_thrift_compact"), 6);
}

#[tokio::test]
async fn udp_queue_overflow_is_counted_as_dropped() {
    let sink = Arc::new(Collect {
        gate: Some((Notify::new(), Semaphore::new(0))),
        ..Collect::default()
    });
    let yaml = "protocols:\n  thrift_compact: {endpoint: 127.0.0.1:0, queue_size: 1, workers: 1}\n";
    let h = Harness::start(yaml, sink.clone()).await;
    let to = h.receiver.addrs().thrift_compact.unwrap();
    let datagram = encode_emit_batch(&client_batch("udp-app"), Protocol::Compact, 0);
    let (entered, release) = sink.gate.as_ref().unwrap();
    // The one worker holds the first datagram in the pipeline...
    send_udp(to, &datagram).await;
    entered.notified().await;
    // ...the second waits in the queue, the third finds it full.
    send_udp(to, &datagram).await;
    send_udp(to, &datagram).await;
    let dropped = || {
        h.telemetry
            .value(
                "weft_receiver_udp_packets_dropped",
                &[("receiver", "jaeger"), ("transport", "udp_thrift_compact")],
            )
            .unwrap_or(0)
    };
    for _ in 0..500 {
        if dropped() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(dropped(), 1);
    release.add_permits(10);
    assert_eq!(sink.wait_for_spans(4).await.len(), 4);
    assert_eq!(h.accepted("udp_thrift_compact"), 4);
    assert_eq!(dropped(), 1);
}

#[tokio::test]
async fn lifecycle_bind_errors_shutdown_and_rebind() {
    let telemetry = Telemetry::new();
    let sink = Collect::new();
    let out: DynConsumer = sink;
    let outputs = ReceiverOutputs {
        traces: out.clone(),
        metrics: out.clone(),
        logs: out,
    };
    // shutdown without start is fine.
    let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(ALL).unwrap();
    let r = JaegerReceiverFactory
        .create(settings(&telemetry), &raw, outputs.clone())
        .unwrap();
    r.shutdown().await.unwrap();

    let h = Harness::start(ALL, Collect::new()).await;
    let taken = h.receiver.addrs();
    // A second receiver on the same UDP port fails, naming the endpoint.
    let port = taken.thrift_binary.unwrap().port();
    let yaml = format!("protocols:\n  thrift_http: {{endpoint: 127.0.0.1:0}}\n  thrift_binary: {{endpoint: 127.0.0.1:{port}}}\n");
    let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let second = JaegerReceiverFactory
        .create(settings(&telemetry), &raw, outputs.clone())
        .unwrap();
    let err = second.start().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("jaeger receiver: cannot listen on 127.0.0.1:{port}: address in use")
    );
    // After shutdown every port is free again.
    h.receiver.shutdown().await.unwrap();
    for addr in [taken.grpc.unwrap(), taken.thrift_http.unwrap()] {
        tokio::net::TcpListener::bind(addr).await.unwrap();
    }
    for addr in [taken.thrift_compact.unwrap(), taken.thrift_binary.unwrap()] {
        UdpSocket::bind(addr).await.unwrap();
    }
    // Config errors surface through the factory with their key path.
    let raw: serde_yaml_ng::Value =
        serde_yaml_ng::from_str("protocols:\n  thrift_compact:\n    max_packet_size: 0\n").unwrap();
    let err = JaegerReceiverFactory.check_config(&raw).unwrap_err();
    assert_eq!(
        err.path,
        vec!["protocols", "thrift_compact", "max_packet_size"]
    );
    let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str("protocols:\n  grpc:\n").unwrap();
    JaegerReceiverFactory.check_config(&raw).unwrap();
}

#[tokio::test]
async fn pure_decoders_agree_with_the_servers() {
    let batch = client_batch("checkout");
    let via_http = super::decode_thrift_http_body(&encode_batch(&batch, Protocol::Binary)).unwrap();
    let via_udp = super::decode_agent_datagram(
        &encode_emit_batch(&batch, Protocol::Compact, 9),
        Protocol::Compact,
    )
    .unwrap();
    let via_grpc = super::decode_post_spans(
        &PostSpansRequest {
            batch: Some(batch_to_proto(&batch)),
        }
        .encode_to_vec(),
    )
    .unwrap();
    assert_eq!(via_http, via_udp);
    assert_eq!(via_http, via_grpc);
    assert!(super::decode_post_spans(b"\xff\xff").is_err());
}
