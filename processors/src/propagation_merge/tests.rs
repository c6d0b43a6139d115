//! propagation_merge against a real downstream consumer that records batches.

use std::sync::Mutex as StdMutex;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ScopeLogs};
use weft_pipeline::host::Host;
use weft_pipeline::{ComponentId, Kind, Telemetry};

use super::*;

const OTEL_HIGH: u64 = 0x5b8e_fff7_9803_8103;
const LOW: u64 = 0xd269_b633_813f_c60c;

struct Collect(StdMutex<Vec<Payload>>);

#[async_trait]
impl Consumer for Collect {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        self.0.lock().unwrap().push(batch.into_payload());
        Ok(())
    }
}

impl Collect {
    /// (trace id hex, span name, datadog.trace_id attribute) of every span so far.
    fn spans(&self) -> Vec<(String, String, Option<String>)> {
        let got = self.0.lock().unwrap();
        let mut out = Vec::new();
        for p in got.iter() {
            if let Payload::Traces(rs) = p {
                for s in rs
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|s| &s.spans)
                {
                    let dd = s
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "datadog.trace_id")
                        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            any_value::Value::StringValue(v) => Some(v.clone()),
                            _ => None,
                        });
                    out.push((hex(&s.trace_id), s.name.clone(), dd));
                }
            }
        }
        out
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn span(name: &str, high: u64, low: u64, span_id: u64) -> Span {
    Span {
        name: name.into(),
        trace_id: join_trace_id(high, low),
        span_id: span_id.to_be_bytes().to_vec(),
        ..Default::default()
    }
}

fn batch(scope: &str, spans: Vec<Span>, origin: &str) -> Batch {
    Batch::new(
        Payload::Traces(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: scope.into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }]),
        Arc::from(origin),
    )
}

fn processor(yaml: &str, signal: Signal) -> (PropagationMerge, Arc<Collect>, Telemetry) {
    let sink = Arc::new(Collect(StdMutex::new(Vec::new())));
    let telemetry = Telemetry::new();
    let settings = Settings {
        id: ComponentId::new("propagation_merge"),
        kind: Kind::Processor,
        telemetry: telemetry.clone(),
        host: Arc::new(Host::new()),
    };
    let raw: Value = serde_yaml_ng::from_str(yaml).unwrap();
    let config = parse_config::<PropagationMergeConfig>(&raw).unwrap();
    (
        PropagationMerge::new(&settings, config, signal, sink.clone()),
        sink,
        telemetry,
    )
}

fn metric(t: &Telemetry, name: &str) -> i64 {
    t.value(name, &[("processor", "propagation_merge")])
        .unwrap_or(-1)
}

fn full() -> String {
    format!("{OTEL_HIGH:016x}{LOW:016x}")
}

#[tokio::test]
async fn datadog_span_after_otel_span_is_rekeyed_at_once() {
    let (p, sink, t) = processor("window: 1m", Signal::Traces);
    p.start().await.unwrap();
    p.consume(batch(
        "opentelemetry",
        vec![span("otel", OTEL_HIGH, LOW, 1)],
        "otlp",
    ))
    .await
    .unwrap();
    p.consume(batch(DATADOG_SCOPE, vec![span("dd", 0, LOW, 2)], "datadog"))
        .await
        .unwrap();
    assert_eq!(
        sink.spans(),
        vec![
            (full(), "otel".into(), None),
            (full(), "dd".into(), Some(LOW.to_string())),
        ]
    );
    {
        let got = sink.0.lock().unwrap();
        let Payload::Traces(rs) = &got[1] else {
            panic!("traces")
        };
        let attrs = &rs[0].scope_spans[0].spans[0].attributes;
        assert!(attrs.iter().any(|kv| kv.key == "datadog.span_id"
            && kv.value
                == Some(AnyValue {
                    value: Some(any_value::Value::StringValue("2".into()))
                })));
    }
    assert_eq!(metric(&t, "weft_propagation_merge_rekeyed_spans"), 1);
    p.shutdown().await.unwrap();
}

#[tokio::test]
async fn datadog_span_waits_for_the_full_id() {
    let (p, sink, t) = processor("window: 1m", Signal::Traces);
    p.start().await.unwrap();
    p.consume(batch(
        DATADOG_SCOPE,
        vec![span("dd-root", 0, LOW, 2), span("other-trace", 0, 77, 3)],
        "datadog",
    ))
    .await
    .unwrap();
    assert!(sink.spans().is_empty(), "held while waiting");
    assert_eq!(metric(&t, "weft_propagation_merge_buffered_spans"), 2);
    p.consume(batch(
        "opentelemetry",
        vec![span("otel", OTEL_HIGH, LOW, 1)],
        "otlp",
    ))
    .await
    .unwrap();
    assert_eq!(
        sink.spans(),
        vec![
            (full(), "otel".into(), None),
            (full(), "dd-root".into(), Some(LOW.to_string()))
        ]
    );
    // The unmatched trace leaves unchanged at shutdown.
    p.shutdown().await.unwrap();
    assert_eq!(
        sink.spans()[2],
        (
            format!("{:032x}", 77),
            "other-trace".into(),
            Some("77".into())
        )
    );
    assert_eq!(metric(&t, "weft_propagation_merge_unmatched_spans"), 1);
    assert_eq!(metric(&t, "weft_propagation_merge_rekeyed_spans"), 1);
}

#[tokio::test]
async fn window_expiry_releases_unchanged_and_counts_a_late_full_id() {
    let (p, sink, t) = processor("window: 30ms\nindex_ttl: 1m", Signal::Traces);
    p.start().await.unwrap();
    p.consume(batch(DATADOG_SCOPE, vec![span("dd", 0, LOW, 2)], "datadog"))
        .await
        .unwrap();
    for _ in 0..300 {
        if !sink.spans().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        sink.spans(),
        vec![(format!("{LOW:032x}"), "dd".into(), Some(LOW.to_string()))]
    );
    assert_eq!(metric(&t, "weft_propagation_merge_unmatched_spans"), 1);
    p.consume(batch(
        "opentelemetry",
        vec![span("otel", OTEL_HIGH, LOW, 1)],
        "otlp",
    ))
    .await
    .unwrap();
    assert_eq!(
        t.value(
            "weft_propagation_merge_late_spans",
            &[
                ("processor", "propagation_merge"),
                ("kind", "full_id_after_release")
            ]
        ),
        Some(1)
    );
    p.shutdown().await.unwrap();
}

#[tokio::test]
async fn memory_bound_evicts_the_oldest_trace() {
    let (p, sink, t) = processor("window: 1m\nmax_buffered_spans: 2", Signal::Traces);
    p.start().await.unwrap();
    p.consume(batch(
        DATADOG_SCOPE,
        vec![span("a1", 0, 1, 1), span("a2", 0, 1, 2)],
        "datadog",
    ))
    .await
    .unwrap();
    assert!(sink.spans().is_empty());
    p.consume(batch(DATADOG_SCOPE, vec![span("b1", 0, 2, 3)], "datadog"))
        .await
        .unwrap();
    let names: Vec<String> = sink.spans().into_iter().map(|s| s.1).collect();
    assert_eq!(names, ["a1", "a2"]);
    assert_eq!(metric(&t, "weft_propagation_merge_evicted_spans"), 2);
    assert_eq!(metric(&t, "weft_propagation_merge_buffered_spans"), 1);
    p.shutdown().await.unwrap();
}

#[tokio::test]
async fn tid_carrying_datadog_span_teaches_its_children() {
    // A 128-bit Datadog root (tid already applied by the receiver) passes at
    // once; a later 64-bit child chunk of the same trace is re-keyed.
    let (p, sink, _t) = processor("window: 1m", Signal::Traces);
    p.start().await.unwrap();
    p.consume(batch(
        DATADOG_SCOPE,
        vec![span("root", OTEL_HIGH, LOW, 1)],
        "datadog",
    ))
    .await
    .unwrap();
    p.consume(batch(
        DATADOG_SCOPE,
        vec![span("child", 0, LOW, 2)],
        "datadog",
    ))
    .await
    .unwrap();
    let ids: Vec<String> = sink.spans().into_iter().map(|s| s.0).collect();
    assert_eq!(ids, [full(), full()]);
    p.shutdown().await.unwrap();
}

#[tokio::test]
async fn captured_traceparent_header_teaches_too() {
    let (p, sink, _t) = processor("window: 1m", Signal::Traces);
    p.start().await.unwrap();
    let mut ebpf = span("GET /", 0, 99, 5);
    ebpf.attributes.push(string_kv(
        CAPTURED_TRACEPARENT,
        format!("00-{}-00f067aa0ba902b7-01", full()),
    ));
    p.consume(batch("weft.ebpf", vec![ebpf], "ebpf"))
        .await
        .unwrap();
    p.consume(batch(DATADOG_SCOPE, vec![span("dd", 0, LOW, 2)], "datadog"))
        .await
        .unwrap();
    assert_eq!(sink.spans()[1].0, full());
    p.shutdown().await.unwrap();
}

#[tokio::test]
async fn otel_spans_with_zero_high_bits_are_never_touched_or_held() {
    let (p, sink, _t) = processor("window: 1m", Signal::Traces);
    p.start().await.unwrap();
    p.consume(batch(
        "opentelemetry",
        vec![span("otel64", 0, LOW, 1)],
        "otlp",
    ))
    .await
    .unwrap();
    assert_eq!(
        sink.spans(),
        vec![(format!("{LOW:032x}"), "otel64".into(), None)]
    );
    p.shutdown().await.unwrap();
}

#[tokio::test]
async fn log_records_get_ids_from_dd_attributes() {
    let (traces, _sink, _t) = processor("window: 1m", Signal::Traces);
    // The logs instance shares nothing with the traces one; it learns from
    // nothing and widens with zeros.
    let (logs, sink, t) = processor("{}", Signal::Logs);
    drop(traces);
    let rec = |tid: &str, sid: i64| LogRecord {
        attributes: vec![
            string_kv("dd.trace_id", tid.into()),
            KeyValue {
                key: "dd.span_id".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(sid)),
                }),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let b = Batch::new(
        Payload::Logs(vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![rec(&LOW.to_string(), 42), rec("not-a-number", 7)],
                ..Default::default()
            }],
            ..Default::default()
        }]),
        Arc::from("otlp"),
    );
    logs.consume(b).await.unwrap();
    {
        let got = sink.0.lock().unwrap();
        let Payload::Logs(rl) = &got[0] else {
            panic!("logs")
        };
        let recs = &rl[0].scope_logs[0].log_records;
        assert_eq!(hex(&recs[0].trace_id), format!("{LOW:032x}"));
        assert_eq!(hex(&recs[0].span_id), format!("{:016x}", 42));
        assert!(
            recs[1].trace_id.is_empty(),
            "an unparsable id is left alone"
        );
        assert_eq!(hex(&recs[1].span_id), format!("{:016x}", 7));
    }
    assert_eq!(metric(&t, "weft_propagation_merge_log_records_linked"), 2);
}

#[test]
fn config_rules() {
    let bad = |y: &str| {
        parse_config::<PropagationMergeConfig>(&serde_yaml_ng::from_str::<Value>(y).unwrap())
            .unwrap_err()
    };
    assert_eq!(bad("max_index_entries: 0").path, ["max_index_entries"]);
    assert_eq!(bad("window: 10m\nindex_ttl: 1m").path, ["index_ttl"]);
    assert!(bad("windw: 1s").message.contains("unknown field `windw`"));
    let d = parse_config::<PropagationMergeConfig>(&Value::Null).unwrap();
    assert_eq!(d, PropagationMergeConfig::default());
}
