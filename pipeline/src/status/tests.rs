use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};

use super::hub::StatusHub;
use super::tap::TapBuffer;
use super::*;
use crate::data::{Batch, Payload};
use crate::otlp_wire::EncodedTraces;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn sp(trace: u8, id: u8, parent: u8, start: u64, end: u64, name: &str) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![0, 0, 0, 0, 0, 0, 0, id],
        parent_span_id: if parent == 0 {
            Vec::new()
        } else {
            vec![0, 0, 0, 0, 0, 0, 0, parent]
        },
        name: name.into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    }
}

fn rs(service: &str, scope: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: scope.into(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn tap(max: usize) -> (Arc<StatusHub>, Arc<TapBuffer>) {
    let hub = Arc::new(StatusHub::default());
    hub.configure_tap(max);
    let t = hub.tap("traces");
    (hub, t)
}

fn batch(v: Vec<ResourceSpans>) -> Batch {
    Batch::new(Payload::Traces(v), Arc::from("otlp"))
}

#[test]
fn a_three_level_trace_across_batches_nests_in_order() {
    let (hub, t) = tap(100);
    // Child batches first, encoded and decoded, the root last.
    t.push(&batch(vec![rs(
        "backend",
        "sdk",
        vec![
            sp(7, 3, 2, 300, 400, "SELECT"),
            sp(7, 4, 2, 150, 250, "auth"),
        ],
    )]));
    let enc = EncodedTraces::from_resource_spans(&[rs(
        "frontend",
        "sdk",
        vec![sp(7, 2, 1, 100, 500, "GET /api")],
    )]);
    t.push(&Batch::encoded(enc, Arc::from("otlp")));
    let mut root = sp(7, 1, 0, 50, 600, "GET /");
    root.status = Some(Status {
        code: status::StatusCode::Error as i32,
        message: "boom".into(),
    });
    t.push(&batch(vec![rs("gateway", weft_scope(), vec![root])]));

    let idx = t.index(&hub);
    assert_eq!(idx.traces.len(), 1);
    let tr = &idx.traces[0];
    let s = &tr.summary;
    assert_eq!(s.trace_id, "07".repeat(16));
    assert_eq!(s.root_service, "gateway");
    assert_eq!(s.root_name, "GET /");
    assert_eq!((s.start_unix_nano, s.duration_ns), (50, 550));
    assert_eq!(s.span_count, 4);
    assert!(s.error && s.has_ebpf && s.complete);
    assert_eq!(s.services, vec!["backend", "frontend", "gateway"]);
    let rows: Vec<(&str, usize, &str, Option<&str>)> = tr
        .spans
        .iter()
        .map(|x| (x.name.as_str(), x.depth, x.source, x.edge_rule.as_deref()))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("GET /", 0, "ebpf", None),
            ("GET /api", 1, "sdk", Some("sdk_context")),
            ("auth", 2, "sdk", Some("sdk_context")),
            ("SELECT", 2, "sdk", Some("sdk_context")),
        ]
    );
    assert_eq!(tr.spans[0].status, "error");
    assert_eq!(tr.spans[0].status_message, "boom");
    assert!(idx.get(&"07".repeat(16)).is_some());
    // Cached until a new batch arrives.
    assert!(Arc::ptr_eq(&idx, &t.index(&hub)));
}

fn weft_scope() -> &'static str {
    super::tap::EBPF_SCOPE
}

#[test]
fn edge_rules_come_from_the_attribute_or_the_ledger() {
    let (hub, t) = tap(100);
    let mut a = sp(1, 2, 1, 10, 20, "client");
    a.attributes.push(kv("weft.autotracing.rule", "tcp_seq"));
    let b = sp(1, 3, 2, 12, 18, "server");
    hub.edge_rules()
        .expect("tap on")
        .record([0, 0, 0, 0, 0, 0, 0, 3], "syscall_trace_id");
    let c = sp(1, 4, 3, 13, 14, "unknown parent rule");
    t.push(&batch(vec![rs(
        "a",
        weft_scope(),
        vec![sp(1, 1, 0, 0, 30, "root"), a, b, c],
    )]));
    let idx = t.index(&hub);
    let rules: Vec<Option<&str>> = idx.traces[0]
        .spans
        .iter()
        .map(|s| s.edge_rule.as_deref())
        .collect();
    assert_eq!(
        rules,
        vec![None, Some("tcp_seq"), Some("syscall_trace_id"), None]
    );
}

#[test]
fn orphans_come_after_roots_and_duplicates_once() {
    let (hub, t) = tap(100);
    t.push(&batch(vec![rs(
        "s",
        "sdk",
        vec![
            sp(2, 5, 9, 10, 20, "orphan"),
            sp(2, 1, 0, 30, 40, "root"),
            sp(2, 1, 0, 30, 40, "root"),
        ],
    )]));
    let idx = t.index(&hub);
    let tr = &idx.traces[0];
    assert_eq!(tr.summary.span_count, 2);
    assert_eq!(tr.spans[0].name, "root");
    assert_eq!(tr.spans[1].name, "orphan");
    assert!(tr.spans[1].parent_missing);
    assert!(tr.summary.complete);
}

#[test]
fn the_tap_is_bounded_in_spans_and_off_by_default() {
    let hub = Arc::new(StatusHub::default());
    let t = hub.tap("traces");
    t.push(&batch(vec![rs("s", "sdk", vec![sp(1, 1, 0, 0, 1, "x")])]));
    assert_eq!(t.held(), (0, 0), "off until a status extension runs");
    hub.configure_tap(3);
    for i in 0..5u8 {
        t.push(&batch(vec![rs("s", "sdk", vec![sp(i, 1, 0, 0, 1, "x")])]));
    }
    assert_eq!(t.held(), (3, 3));
    // A batch bigger than the whole tap is not kept, and is counted.
    let big: Vec<Span> = (1..=4).map(|i| sp(9, i, 0, 0, 1, "y")).collect();
    t.push(&batch(vec![rs("s", "sdk", big)]));
    assert_eq!(t.held(), (3, 3));
    assert_eq!(t.skipped_spans(), 4);
    let idx = t.index(&hub);
    let ids: Vec<&str> = idx
        .traces
        .iter()
        .map(|x| &x.summary.trace_id[..2])
        .collect();
    assert_eq!(ids, vec!["04", "03", "02"], "newest first");
    hub.configure_tap(0);
    assert_eq!(t.held(), (0, 0));
}

#[test]
fn the_tap_consumer_keeps_only_what_the_exporters_took() {
    use crate::consumer::{ConsumeError, Consumer};
    struct Refuse;
    #[async_trait::async_trait]
    impl Consumer for Refuse {
        async fn consume(&self, _b: Batch) -> Result<(), ConsumeError> {
            Err(ConsumeError::retryable("full"))
        }
    }
    struct Take;
    #[async_trait::async_trait]
    impl Consumer for Take {
        async fn consume(&self, _b: Batch) -> Result<(), ConsumeError> {
            Ok(())
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    let (_hub, t) = tap(10);
    let b = batch(vec![rs("s", "sdk", vec![sp(1, 1, 0, 0, 1, "x")])]);
    rt.block_on(async {
        let refuse = TapConsumer::new(t.clone(), Arc::new(Refuse));
        assert!(refuse.consume(b.clone()).await.is_err());
        assert_eq!(t.held(), (0, 0));
        let take = TapConsumer::new(t.clone(), Arc::new(Take));
        take.consume(b).await.expect("taken");
        assert_eq!(t.held(), (1, 1));
    });
}

#[test]
fn config_defaults_and_bounds() {
    let c: StatusConfig =
        crate::component::parse_config(&serde_yaml_ng::Value::Null).expect("null");
    assert_eq!(c.endpoint, "localhost:55679");
    assert_eq!(c.tap_size(), DEFAULT_MAX_SPANS);
    let raw: serde_yaml_ng::Value =
        serde_yaml_ng::from_str("traces: {max_spans: 0}").expect("yaml");
    let e = crate::component::parse_config::<StatusConfig>(&raw).expect_err("0 refused");
    assert!(e.to_string().contains("max_spans must be from 1"), "{e}");
    let raw: serde_yaml_ng::Value =
        serde_yaml_ng::from_str("traces: {enabled: false, max_spans: 0}").expect("yaml");
    let c = crate::component::parse_config::<StatusConfig>(&raw).expect("off");
    assert_eq!(c.tap_size(), 0);
    let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str("endpoint: 55679").expect("yaml");
    assert!(crate::component::parse_config::<StatusConfig>(&raw).is_err());
    let _unused = (AtomicBool::new(false), AtomicUsize::new(0));
}

fn graph_of(traces_pipelines: &[&str]) -> GraphView {
    GraphView {
        pipelines: traces_pipelines
            .iter()
            .map(|id| PipelineView {
                id: id.to_string(),
                signal: "traces".into(),
                receivers: vec!["otlp".into()],
                processors: vec![],
                exporters: vec!["debug".into()],
            })
            .collect(),
        extensions: vec!["status".into()],
    }
}

#[test]
fn a_renamed_extension_keeps_the_tap_on_until_the_last_one_stops() {
    let hub = StatusHub::default();
    let old = hub.open_tap(100);
    // On reload, status/2 starts before status stops.
    let new = hub.open_tap(50);
    hub.close_tap(old);
    assert!(hub.tap_on());
    assert_eq!(hub.max_spans(), 50);
    hub.close_tap(new);
    assert!(!hub.tap_on());
    assert_eq!(hub.max_spans(), 0);
}

#[test]
fn taps_of_pipelines_gone_are_dropped_and_others_kept() {
    let hub = StatusHub::default();
    hub.open_tap(10);
    hub.set_graph(graph_of(&["traces", "traces/b"]));
    hub.tap("traces")
        .push(&batch(vec![rs("s", "sdk", vec![sp(1, 1, 0, 0, 1, "x")])]));
    let gone = hub.tap("traces/b");
    gone.push(&batch(vec![rs("s", "sdk", vec![sp(2, 1, 0, 0, 1, "x")])]));
    hub.set_graph(graph_of(&["traces"]));
    assert_eq!(hub.taps().len(), 1);
    assert_eq!(hub.tap("traces").held(), (1, 1), "kept across the reload");
    // A pipeline of the same name built again starts empty.
    assert_eq!(hub.tap("traces/b").held(), (0, 0));
}

#[test]
fn traces_of_several_pipelines_share_one_arrival_order() {
    let hub = StatusHub::default();
    hub.open_tap(10);
    hub.set_graph(graph_of(&["a", "b"]));
    let (a, b) = (hub.tap("a"), hub.tap("b"));
    a.push(&batch(vec![rs("s", "sdk", vec![sp(1, 1, 0, 50, 60, "x")])]));
    b.push(&batch(vec![rs("s", "sdk", vec![sp(2, 1, 0, 10, 20, "x")])]));
    a.push(&batch(vec![rs("s", "sdk", vec![sp(3, 1, 0, 5, 6, "x")])]));
    let mut all: Vec<_> = [a.index(&hub), b.index(&hub)]
        .iter()
        .flat_map(|i| {
            i.traces
                .iter()
                .map(|t| t.summary.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    all.sort_by_key(|s| std::cmp::Reverse(s.newest_seq));
    let ids: Vec<&str> = all.iter().map(|s| &s.trace_id[..2]).collect();
    assert_eq!(ids, vec!["03", "02", "01"]);
}

#[test]
fn spans_with_trace_ids_of_other_lengths_are_not_listed() {
    let (hub, t) = tap(10);
    let mut odd = sp(1, 1, 0, 0, 1, "odd");
    odd.trace_id = vec![1; 8];
    let mut empty = sp(1, 2, 0, 0, 1, "empty");
    empty.trace_id = Vec::new();
    t.push(&batch(vec![rs(
        "s",
        "sdk",
        vec![odd, empty, sp(2, 3, 0, 0, 1, "ok")],
    )]));
    let idx = t.index(&hub);
    let names: Vec<&str> = idx
        .traces
        .iter()
        .map(|x| x.summary.root_name.as_str())
        .collect();
    assert_eq!(names, vec!["ok"]);
}

#[test]
fn host_names_other_than_ips_localhost_and_the_endpoint_are_refused() {
    assert_eq!(api::endpoint_host("localhost:55679"), "localhost");
    assert_eq!(api::endpoint_host("[::1]:55679"), "::1");
    assert_eq!(api::endpoint_host("Status.Example:80"), "status.example");
    for (host, ok) in [
        ("127.0.0.1:55679", true),
        ("[::1]:55679", true),
        ("localhost:55679", true),
        ("LOCALHOST", true),
        ("10.1.2.3", true),
        ("status.example:55679", true),
        ("status.example.", true),
        ("evil.example:55679", false),
        ("127.0.0.1.evil.example", false),
        ("", false),
    ] {
        assert_eq!(api::host_allowed(host, "status.example"), ok, "{host}");
    }
}
