//! The zipkin receiver over real sockets: real HTTP requests on loopback and a
//! consumer that records what reaches it.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtlpStatus;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, Status};
use prost::Message;
use weft_pipeline::host::Host;
use weft_pipeline::{
    parse_config, Batch, ComponentId, ConsumeError, Consumer, DynConsumer, Kind, Lifecycle,
    Payload, ReceiverFactory, ReceiverOutputs, Registry, Settings, Telemetry,
};
use weft_zipkin::proto::{ListOfSpans, ProtoAnnotation, ProtoEndpoint, ProtoSpan};

use super::{ZipkinReceiver, ZipkinReceiverConfig, ZipkinReceiverFactory};

/// Records every batch; answers with `refuse` when set.
#[derive(Default)]
struct Collect {
    batches: Mutex<Vec<Batch>>,
    refuse: Mutex<Option<ConsumeError>>,
}

impl Collect {
    fn resource_spans(&self) -> Vec<ResourceSpans> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| match b.payload() {
                Payload::Traces(rs) => rs.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    fn spans(&self) -> Vec<Span> {
        self.resource_spans()
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
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

struct Harness {
    receiver: ZipkinReceiver,
    telemetry: Telemetry,
    sink: Arc<Collect>,
}

impl Harness {
    async fn start(yaml: &str) -> Harness {
        let telemetry = Telemetry::new();
        let sink = Arc::new(Collect::default());
        let out: DynConsumer = sink.clone();
        let settings = Settings {
            id: ComponentId::parse("zipkin").unwrap(),
            kind: Kind::Receiver,
            telemetry: telemetry.clone(),
            host: Arc::new(Host::new()),
        };
        let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let config = parse_config::<ZipkinReceiverConfig>(&raw).unwrap();
        let outputs = ReceiverOutputs {
            traces: out.clone(),
            metrics: out.clone(),
            logs: out,
        };
        let receiver = ZipkinReceiver::new(&settings, config, outputs);
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
            .value(name, &[("receiver", "zipkin"), ("transport", "http")])
            .unwrap_or(0)
    }
}

const LOCAL: &str = "endpoint: 127.0.0.1:0\n";

/// Request headers as (name, value).
type Headers = Vec<(&'static str, &'static str)>;
/// (url, content type, content encoding, body, expected status).
type BadCase<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16);

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> reqwest::Response {
    let mut req = client().post(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn sv(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(v.into())),
    })
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A server span with every v2 field, as the OpenTelemetry SDKs send it.
const V2_JSON: &str = r#"[{
    "traceId": "0af7651916cd43dd8448eb211c80319c",
    "id": "b7ad6b7169203331",
    "parentId": "00f067aa0ba902b7",
    "name": "GET /cart",
    "kind": "SERVER",
    "timestamp": 1700000000123456,
    "duration": 2500,
    "localEndpoint": {"serviceName": "checkout", "ipv4": "10.0.0.1", "port": 8080},
    "remoteEndpoint": {"serviceName": "web", "ipv6": "2001:db8::1", "port": 51000},
    "annotations": [{"timestamp": 1700000000124000, "value": "{\"cache.miss\": {\"key\": \"cart:7\"}}"}],
    "tags": {
        "http.method": "GET", "http.status_code": "500", "service.name": "checkout",
        "telemetry.sdk.language": "python", "otel.scope.name": "shop", "otel.scope.version": "1.0",
        "otel.library.name": "shop", "otel.library.version": "1.0",
        "otel.status_code": "ERROR", "error": "payment declined"
    },
    "debug": true
}]"#;

fn expected_v2_span() -> Span {
    Span {
        trace_id: vec![
            0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80,
            0x31, 0x9c,
        ],
        span_id: vec![0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31],
        parent_span_id: vec![0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
        name: "GET /cart".into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: 1_700_000_000_123_456_000,
        end_time_unix_nano: 1_700_000_000_125_956_000,
        attributes: vec![
            KeyValue {
                key: "http.method".into(),
                value: sv("GET"),
                ..Default::default()
            },
            KeyValue {
                key: "http.status_code".into(),
                value: sv("500"),
                ..Default::default()
            },
            KeyValue {
                key: "net.host.ip".into(),
                value: sv("10.0.0.1"),
                ..Default::default()
            },
            kv("net.host.port", Value::IntValue(8080)),
            KeyValue {
                key: "peer.service".into(),
                value: sv("web"),
                ..Default::default()
            },
            KeyValue {
                key: "net.peer.ip".into(),
                value: sv("2001:db8::1"),
                ..Default::default()
            },
            kv("net.peer.port", Value::IntValue(51000)),
        ],
        events: vec![Event {
            time_unix_nano: 1_700_000_000_124_000_000,
            name: "cache.miss".into(),
            attributes: vec![KeyValue {
                key: "key".into(),
                value: sv("cart:7"),
                ..Default::default()
            }],
            dropped_attributes_count: 0,
        }],
        status: Some(Status {
            code: OtlpStatus::Error as i32,
            message: "payment declined".into(),
        }),
        ..Default::default()
    }
}

fn proto_body() -> Vec<u8> {
    ListOfSpans {
        spans: vec![ProtoSpan {
            trace_id: vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34],
            id: vec![0, 0, 0, 0, 0, 0, 0, 0x42],
            kind: 1,
            name: "SELECT cart".into(),
            timestamp: 1_700_000_000_000_000,
            duration: 900,
            local_endpoint: Some(ProtoEndpoint {
                service_name: "cart-db".into(),
                ..Default::default()
            }),
            annotations: vec![ProtoAnnotation {
                timestamp: 1_700_000_000_000_500,
                value: "retry".into(),
            }],
            tags: [("db.system".to_string(), "postgresql".to_string())].into(),
            shared: true,
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test]
async fn v2_json_every_field_arrives() {
    let h = Harness::start(LOCAL).await;
    let resp = post(
        &h.url("/api/v2/spans"),
        &[("content-type", "application/json")],
        V2_JSON.into(),
    )
    .await;
    assert_eq!(resp.status(), 202);
    assert!(resp.bytes().await.unwrap().is_empty());

    let rs = h.sink.resource_spans();
    assert_eq!(rs.len(), 1);
    assert_eq!(
        rs[0].resource.as_ref().unwrap().attributes,
        vec![
            KeyValue {
                key: "service.name".into(),
                value: sv("checkout"),
                ..Default::default()
            },
            KeyValue {
                key: "telemetry.sdk.language".into(),
                value: sv("python"),
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        rs[0].scope_spans[0].scope,
        Some(InstrumentationScope {
            name: "shop".into(),
            version: "1.0".into(),
            ..Default::default()
        })
    );
    assert_eq!(h.sink.spans(), vec![expected_v2_span()]);
    let batch = h.sink.batches.lock().unwrap()[0].clone();
    assert_eq!(&*batch.origin, "zipkin");
    assert!(batch.metadata.is_none());
    assert_eq!(h.counter("otelcol_receiver_accepted_spans"), 1);
    assert_eq!(h.counter("otelcol_receiver_refused_spans"), 0);
    assert_eq!(h.counter("weft_receiver_bad_requests"), 0);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn proto_gzip_zstd_and_v1_deliver_exact_spans() {
    let h = Harness::start("endpoint: 127.0.0.1:0\nparse_string_tags: true\n").await;
    let url = h.url("/api/v2/spans");
    let pb = proto_body();
    let cases: Vec<(Headers, Vec<u8>)> = vec![
        (vec![("content-type", "application/x-protobuf")], pb.clone()),
        (
            vec![
                ("content-type", "application/x-protobuf"),
                ("content-encoding", "gzip"),
            ],
            gzip(&pb),
        ),
        (
            vec![
                ("content-type", "application/x-protobuf"),
                ("content-encoding", "zstd"),
            ],
            zstd::encode_all(&pb[..], 3).unwrap(),
        ),
        (
            vec![
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            gzip(V2_JSON.as_bytes()),
        ),
    ];
    for (headers, body) in cases {
        let resp = post(&url, &headers, body).await;
        assert_eq!(resp.status(), 202, "{headers:?}");
    }
    let v1 = br#"[{"traceId":"463ac35c9f6413ad48485a3953bb6124","id":"72485a3953bb6124","name":"get",
        "timestamp":1502787600000000,"duration":150000,
        "annotations":[{"timestamp":1502787600000000,"value":"sr","endpoint":{"serviceName":"api"}},
                       {"timestamp":1502787600150000,"value":"ss","endpoint":{"serviceName":"api"}}],
        "binaryAnnotations":[{"key":"http.status_code","value":"200"}]}]"#;
    let resp = post(
        &h.url("/api/v1/spans"),
        &[("content-type", "application/json")],
        v1.to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 202);

    let spans = h.sink.spans();
    assert_eq!(spans.len(), 5);
    let want_proto = Span {
        trace_id: vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34],
        span_id: vec![0, 0, 0, 0, 0, 0, 0, 0x42],
        name: "SELECT cart".into(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_000_900_000,
        attributes: vec![KeyValue {
            key: "db.system".into(),
            value: sv("postgresql"),
            ..Default::default()
        }],
        events: vec![Event {
            time_unix_nano: 1_700_000_000_000_500_000,
            name: "retry".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(
        spans[..3],
        [want_proto.clone(), want_proto.clone(), want_proto]
    );
    // parse_string_tags: "500" became an int.
    let mut want_json = expected_v2_span();
    want_json.attributes[1] = kv("http.status_code", Value::IntValue(500));
    assert_eq!(spans[3], want_json);
    let v1_span = &spans[4];
    assert_eq!(
        v1_span.trace_id,
        [
            0x46, 0x3a, 0xc3, 0x5c, 0x9f, 0x64, 0x13, 0xad, 0x48, 0x48, 0x5a, 0x39, 0x53, 0xbb,
            0x61, 0x24
        ]
    );
    assert_eq!(v1_span.kind, SpanKind::Server as i32);
    assert_eq!(v1_span.end_time_unix_nano, 1_502_787_600_150_000_000);
    assert_eq!(
        v1_span.attributes,
        vec![kv("http.status_code", Value::IntValue(200))]
    );
    assert_eq!(h.counter("otelcol_receiver_accepted_spans"), 5);
    assert_eq!(h.counter("weft_receiver_bad_requests"), 0);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_table() {
    let h = Harness::start(
        "endpoint: 127.0.0.1:0\nmax_request_body_size: 4096\ncompression_algorithms: [gzip]\n",
    )
    .await;
    let v2 = h.url("/api/v2/spans");
    let v1 = h.url("/api/v1/spans");
    let json = "application/json";
    let pb = "application/x-protobuf";
    let good = proto_body();
    let cases: Vec<BadCase> = vec![
        (&v2, json, None, b"[{\"traceId\":".to_vec(), 400),
        (&v2, json, None, b"{\"spans\":[]}".to_vec(), 400),
        (
            &v2,
            json,
            None,
            br#"[{"traceId":"zz","id":"1"}]"#.to_vec(),
            400,
        ),
        (
            &v2,
            json,
            None,
            br#"[{"traceId":"1","id":"0"}]"#.to_vec(),
            400,
        ),
        (&v2, pb, None, good[..good.len() - 3].to_vec(), 400),
        (&v2, pb, None, vec![0xff; 11], 400),
        (
            &v2,
            pb,
            None,
            ListOfSpans {
                spans: vec![ProtoSpan {
                    trace_id: vec![1; 3],
                    id: vec![1; 8],
                    ..Default::default()
                }],
            }
            .encode_to_vec(),
            400,
        ),
        (&v2, pb, Some("gzip"), b"not gzip".to_vec(), 400),
        (
            &v2,
            pb,
            Some("zstd"),
            zstd::encode_all(&good[..], 3).unwrap(),
            400,
        ),
        (&v2, pb, Some("br"), good.clone(), 400),
        (&v2, "text/plain", None, good.clone(), 415),
        (&v2, "application/x-thrift", None, good.clone(), 415),
        (&v1, "application/x-thrift", None, good.clone(), 415),
        (&v1, pb, None, good.clone(), 415),
        (
            &v1,
            json,
            None,
            br#"[{"traceId":"1","id":"0000000000000001"}]"#.to_vec(),
            400,
        ),
        (&v2, json, None, vec![b' '; 5000], 413),
        // 1 MiB of spaces gzip to about 1 KiB: small on the wire, over the limit inflated.
        (&v2, json, Some("gzip"), gzip(&vec![b' '; 1 << 20]), 413),
    ];
    for (i, (url, ct, enc, body, want)) in cases.iter().enumerate() {
        let mut headers = vec![("content-type", *ct)];
        if let Some(e) = enc {
            headers.push(("content-encoding", e));
        }
        let resp = post(url, &headers, body.clone()).await;
        assert_eq!(resp.status().as_u16(), *want, "case {i}: {ct} {enc:?}");
        let text = resp.text().await.unwrap();
        assert!(!text.trim().is_empty(), "case {i}: empty error body");
    }

    let resp = client().get(&v2).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let resp = client().put(&v1).body(good.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 405);

    // Other paths are not Zipkin requests and are not counted.
    let resp = post(
        &h.url("/api/v2/span"),
        &[("content-type", pb)],
        good.clone(),
    )
    .await;
    assert_eq!(resp.status(), 404);

    assert_eq!(
        h.counter("weft_receiver_bad_requests"),
        cases.len() as i64 + 2
    );
    assert_eq!(h.counter("otelcol_receiver_accepted_spans"), 0);
    assert_eq!(h.counter("otelcol_receiver_refused_spans"), 0);
    assert!(h.sink.spans().is_empty());

    // Still serving after all that.
    let resp = post(&v2, &[("content-type", pb)], good).await;
    assert_eq!(resp.status(), 202);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn refusals_map_to_429_503_and_400() {
    let h = Harness::start(LOCAL).await;
    let url = h.url("/api/v2/spans");
    let pb = [("content-type", "application/x-protobuf")];

    *h.sink.refuse.lock().unwrap() = Some(ConsumeError::Retryable {
        message: "memory limit".into(),
        retry_after: Some(Duration::from_millis(1500)),
    });
    let resp = post(&url, &pb, proto_body()).await;
    // A refusal that says when to come back is "too many requests".
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    *h.sink.refuse.lock().unwrap() = Some(ConsumeError::retryable("busy"));
    let resp = post(&url, &pb, proto_body()).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_none());

    *h.sink.refuse.lock().unwrap() = Some(ConsumeError::Permanent("bad data".into()));
    let resp = post(&url, &pb, proto_body()).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.text().await.unwrap(), "bad data\n");

    assert_eq!(h.counter("otelcol_receiver_refused_spans"), 3);
    assert_eq!(h.counter("otelcol_receiver_accepted_spans"), 0);
    assert_eq!(h.counter("weft_receiver_bad_requests"), 0);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn empty_lists_are_accepted_without_a_batch() {
    let h = Harness::start(LOCAL).await;
    for (ct, body) in [
        ("application/json", b"[]".to_vec()),
        ("application/x-protobuf", Vec::new()),
    ] {
        let resp = post(&h.url("/api/v2/spans"), &[("content-type", ct)], body).await;
        assert_eq!(resp.status(), 202, "{ct}");
    }
    // No Content-Type at all reads as JSON.
    let resp = client()
        .post(h.url("/api/v2/spans"))
        .body(V2_JSON)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(h.sink.batches.lock().unwrap().len(), 1);
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn include_metadata_attaches_peer_and_headers() {
    let h = Harness::start("endpoint: 127.0.0.1:0\ninclude_metadata: true\n").await;
    let resp = post(
        &h.url("/api/v2/spans"),
        &[("content-type", "application/json"), ("x-tenant", "acme")],
        V2_JSON.into(),
    )
    .await;
    assert_eq!(resp.status(), 202);
    let batch = h.sink.batches.lock().unwrap()[0].clone();
    let md = batch.metadata.expect("metadata");
    assert!(md.peer.as_deref().unwrap().starts_with("127.0.0.1:"));
    assert!(md
        .headers
        .iter()
        .any(|(k, v)| k == "x-tenant" && v == "acme"));
    h.receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn lifecycle_and_registration() {
    // Shutdown without start is fine; a taken port is an error naming it.
    let h = Harness::start(LOCAL).await;
    let taken = h.receiver.addr().unwrap();
    let telemetry = Telemetry::new();
    let sink: DynConsumer = Arc::new(Collect::default());
    let settings = Settings {
        id: ComponentId::parse("zipkin/second").unwrap(),
        kind: Kind::Receiver,
        telemetry,
        host: Arc::new(Host::new()),
    };
    let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(&format!("endpoint: {taken}")).unwrap();
    let outputs = ReceiverOutputs {
        traces: sink.clone(),
        metrics: sink.clone(),
        logs: sink,
    };
    let second = ZipkinReceiverFactory
        .create(settings, &raw, outputs)
        .unwrap();
    second.shutdown().await.unwrap();
    let err = second.start().await.unwrap_err().to_string();
    assert_eq!(
        err,
        format!("zipkin/second receiver: cannot listen on {taken}: address in use")
    );
    h.receiver.shutdown().await.unwrap();
    h.receiver.shutdown().await.unwrap();
    assert_eq!(h.receiver.addr(), None);

    let mut r = Registry::default();
    crate::register(&mut r);
    assert_eq!(r.receivers["zipkin"].type_name(), "zipkin");
    assert!(ZipkinReceiverFactory
        .check_config(&serde_yaml_ng::from_str("endpoint: nope").unwrap())
        .is_err());
}
