//! The stitcher on synthetic span sets: every tier, veto, ambiguity and cap, with
//! explicit times, then the processor against a real downstream consumer.

use std::collections::HashMap;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value as AV;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use weft_pipeline::host::Host;
use weft_pipeline::{ComponentConfig, ComponentId, Kind, Telemetry};

use super::stats::{Tier, Veto};
use super::*;

const MS: u64 = 1_000_000;
const T0_NS: u64 = 1_700_000_000_000_000_000;

fn kv(k: &str, v: AV) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(k: &str, v: &str) -> KeyValue {
    kv(k, AV::StringValue(v.into()))
}

fn i(k: &str, v: i64) -> KeyValue {
    kv(k, AV::IntValue(v))
}

/// An eBPF span as the receiver makes it.
#[derive(Clone)]
struct E {
    name: &'static str,
    server: bool,
    pid: u32,
    tid: u32,
    start_ms: u64,
    end_ms: u64,
    seq: (u32, u32),
    local: u16,
    peer: u16,
    sys: (u64, u64),
    rid: (Option<&'static str>, Option<&'static str>),
    headers: Vec<(&'static str, String)>,
}

fn e(name: &'static str, server: bool, pid: u32, start_ms: u64, end_ms: u64) -> E {
    E {
        name,
        server,
        pid,
        tid: pid,
        start_ms,
        end_ms,
        seq: (0, 0),
        local: 0,
        peer: 0,
        sys: (0, 0),
        rid: (None, None),
        headers: Vec::new(),
    }
}

impl E {
    fn seq(mut self, req: u32, resp: u32, local: u16, peer: u16) -> E {
        self.seq = (req, resp);
        self.local = local;
        self.peer = peer;
        self
    }
    fn sys(mut self, req: u64, resp: u64) -> E {
        self.sys = (req, resp);
        self
    }
    fn tid(mut self, tid: u32) -> E {
        self.tid = tid;
        self
    }
    fn rid(mut self, req: Option<&'static str>, resp: Option<&'static str>) -> E {
        self.rid = (req, resp);
        self
    }
    fn header(mut self, name: &'static str, v: String) -> E {
        self.headers.push((name, v));
        self
    }

    fn span(&self) -> Span {
        let mut attrs = vec![
            s("url.path", self.name),
            i("process.pid", self.pid.into()),
            i("thread.id", self.tid.into()),
            i("weft.syscall_trace_id.req", self.sys.0 as i64),
            i("weft.syscall_trace_id.resp", self.sys.1 as i64),
        ];
        if self.local != 0 {
            attrs.extend([
                i("weft.tcp.req_seq", self.seq.0.into()),
                i("weft.tcp.resp_seq", self.seq.1.into()),
                s("network.local.address", "127.0.0.1"),
                i("network.local.port", self.local.into()),
                s("network.peer.address", "127.0.0.1"),
                i("network.peer.port", self.peer.into()),
            ]);
        }
        if let Some(r) = self.rid.0 {
            attrs.push(s("weft.x_request_id.req", r));
        }
        if let Some(r) = self.rid.1 {
            attrs.push(s("weft.x_request_id.resp", r));
        }
        for (h, v) in &self.headers {
            attrs.push(s(&format!("weft.header.{h}"), v));
        }
        let mut trace = [0u8; 16];
        fastrand::fill(&mut trace);
        Span {
            trace_id: trace.to_vec(),
            span_id: fastrand::u64(1..).to_be_bytes().to_vec(),
            name: self.name.into(),
            kind: if self.server {
                SpanKind::Server
            } else {
                SpanKind::Client
            } as i32,
            start_time_unix_nano: T0_NS + self.start_ms * MS,
            end_time_unix_nano: T0_NS + self.end_ms * MS,
            attributes: attrs,
            ..Default::default()
        }
    }
}

fn ebpf_batch(spans: &[E]) -> Vec<ResourceSpans> {
    spans
        .iter()
        .map(|x| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![s("service.name", &format!("svc{}", x.pid))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "weft.ebpf".into(),
                    ..Default::default()
                }),
                spans: vec![x.span()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect()
}

/// An SDK span.
#[allow(clippy::too_many_arguments)]
fn sdk(
    name: &str,
    kind: SpanKind,
    pid: u32,
    trace: u128,
    id: u64,
    parent: u64,
    start_ms: u64,
    end_ms: u64,
) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![s("service.name", "sdk"), i("process.pid", pid.into())],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "opentelemetry.instrumentation.requests".into(),
                ..Default::default()
            }),
            spans: vec![Span {
                trace_id: trace.to_be_bytes().to_vec(),
                span_id: id.to_be_bytes().to_vec(),
                parent_span_id: if parent == 0 {
                    Vec::new()
                } else {
                    parent.to_be_bytes().to_vec()
                },
                name: name.into(),
                kind: kind as i32,
                start_time_unix_nano: T0_NS + start_ms * MS,
                end_time_unix_nano: T0_NS + end_ms * MS,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Out {
    trace: u128,
    span: u64,
    parent: u64,
    attrs: Vec<String>,
    links: Vec<(u128, u64)>,
}

fn u64_of(b: &[u8]) -> u64 {
    <[u8; 8]>::try_from(b).map(u64::from_be_bytes).unwrap_or(0)
}

fn u128_of(b: &[u8]) -> u128 {
    <[u8; 16]>::try_from(b)
        .map(u128::from_be_bytes)
        .unwrap_or(0)
}

fn collect(rs: Vec<ResourceSpans>, into: &mut HashMap<String, Out>) {
    for r in rs {
        for sc in r.scope_spans {
            for sp in sc.spans {
                let prev = into.insert(
                    sp.name.clone(),
                    Out {
                        trace: u128_of(&sp.trace_id),
                        span: u64_of(&sp.span_id),
                        parent: u64_of(&sp.parent_span_id),
                        attrs: sp.attributes.iter().map(|k| k.key.clone()).collect(),
                        links: sp
                            .links
                            .iter()
                            .map(|l| (u128_of(&l.trace_id), u64_of(&l.span_id)))
                            .collect(),
                    },
                );
                assert!(prev.is_none(), "span {} emitted twice", sp.name);
            }
        }
    }
}

struct Run {
    st: Stitcher,
    stats: Arc<Stats>,
    t: Instant,
    out: HashMap<String, Out>,
}

impl Run {
    fn new(cfg: AutotracingConfig) -> Run {
        let stats = Arc::new(Stats::new(&Telemetry::new(), "autotracing"));
        Run {
            st: Stitcher::new(cfg, stats.clone()),
            stats,
            t: Instant::now(),
            out: HashMap::new(),
        }
    }

    fn default() -> Run {
        Run::new(AutotracingConfig::default())
    }

    fn feed(&mut self, rs: Vec<ResourceSpans>) {
        self.st.ingest(rs, self.t);
    }

    fn ebpf(&mut self, spans: &[E]) {
        self.feed(ebpf_batch(spans));
    }

    fn advance(&mut self, d: Duration) {
        self.t += d;
        let out = self.st.tick(self.t);
        collect(out, &mut self.out);
    }

    /// Past the window: everything fed so far is decided and emitted.
    fn settle(&mut self) {
        // Past the window (spans decided), then past the grace (traces leave).
        self.advance(Duration::from_secs(3));
        self.advance(Duration::from_secs(3));
    }

    fn get(&self, name: &str) -> &Out {
        self.out
            .get(name)
            .unwrap_or_else(|| panic!("span {name} not emitted; got {:?}", self.out.keys()))
    }

    /// `child`'s parent is `parent` and both share a trace id.
    fn assert_edge(&self, parent: &str, child: &str) {
        let (p, c) = (self.get(parent), self.get(child));
        assert_eq!(c.parent, p.span, "{child} should be the child of {parent}");
        assert_eq!(
            c.trace, p.trace,
            "{child} and {parent} should share a trace"
        );
    }

    fn assert_root(&self, name: &str) {
        assert_eq!(self.get(name).parent, 0, "{name} should be a root");
    }

    fn assert_apart(&self, a: &str, b: &str) {
        assert_ne!(
            self.get(a).trace,
            self.get(b).trace,
            "{a} and {b} must not share a trace"
        );
    }
}

// ------------------------------------------------------------------ T0

#[test]
fn t0_client_and_server_of_one_exchange() {
    let mut r = Run::default();
    r.ebpf(&[
        e("srv", true, 2, 1, 9).seq(1000, 5000, 80, 40000),
        e("cli", false, 1, 0, 10).seq(1000, 5000, 40000, 80),
    ]);
    r.settle();
    r.assert_edge("cli", "srv");
    r.assert_root("cli");
    assert_eq!(r.stats.edges_of(Tier::T0), 1);
    assert_eq!(r.stats.traces_out.get(), 1);
    // A fresh 128-bit id, and no correlation attributes on the way out.
    assert_ne!(r.get("cli").trace >> 64, 0);
    assert!(r.get("srv").attrs.iter().all(|k| !k.starts_with("weft.")));
}

#[test]
fn t0_refuses_two_clients_with_the_same_sequence() {
    let mut r = Run::default();
    r.ebpf(&[
        e("srv", true, 2, 1, 9).seq(1000, 5000, 80, 40000),
        e("cli1", false, 1, 0, 10).seq(1000, 5000, 40000, 80),
        e("cli2", false, 3, 0, 10).seq(1000, 5000, 40000, 80),
    ]);
    r.settle();
    r.assert_root("srv");
    r.assert_apart("srv", "cli1");
    r.assert_apart("srv", "cli2");
    assert_eq!(r.stats.ambiguous_of(Tier::T0), 1);
}

#[test]
fn t0_one_client_never_gets_two_servers() {
    let mut r = Run::default();
    r.ebpf(&[
        e("srv1", true, 2, 1, 9).seq(1000, 5000, 80, 40000),
        e("srv2", true, 3, 1, 9).seq(1000, 5000, 80, 40000),
        e("cli", false, 1, 0, 10).seq(1000, 5000, 40000, 80),
    ]);
    r.settle();
    r.assert_root("srv1");
    r.assert_root("srv2");
    assert_eq!(r.stats.edges_of(Tier::T0), 0);
}

#[test]
fn t0_needs_mirrored_tuples_equal_response_seq_and_time_inside() {
    let mut r = Run::default();
    r.ebpf(&[
        // Same seq, tuples not mirrored.
        e("a_srv", true, 2, 1, 9).seq(1, 5, 80, 40001),
        e("a_cli", false, 1, 0, 10).seq(1, 5, 40000, 80),
        // Response seq differs.
        e("b_srv", true, 2, 1, 9).seq(2, 6, 80, 40002),
        e("b_cli", false, 1, 0, 10).seq(2, 7, 40002, 80),
        // Server ends 80 ms after its client (beyond the 50 ms tolerance).
        e("c_srv", true, 2, 1, 90).seq(3, 8, 80, 40003),
        e("c_cli", false, 1, 0, 10).seq(3, 8, 40003, 80),
    ]);
    r.settle();
    for x in ["a", "b", "c"] {
        r.assert_root(&format!("{x}_srv"));
        r.assert_apart(&format!("{x}_srv"), &format!("{x}_cli"));
    }
    assert_eq!(r.stats.edges_of(Tier::T0), 0);
}

// ------------------------------------------------------------------ T2

#[test]
fn t2_server_and_its_chained_downstream_calls() {
    let mut r = Run::default();
    r.ebpf(&[
        e("c1", false, 5, 2, 4).sys(100, 101),
        e("c2", false, 5, 5, 7).sys(101, 102),
        e("c3", false, 5, 8, 9).sys(102, 103),
        e("srv", true, 5, 1, 10).sys(100, 103),
    ]);
    r.settle();
    r.assert_edge("srv", "c1");
    r.assert_edge("srv", "c2");
    r.assert_edge("srv", "c3");
    assert_eq!(r.stats.edges_of(Tier::T2), 3);
}

#[test]
fn t2_refuses_pipelined_servers_sharing_an_id() {
    // Two requests read in one call on one thread share the id.
    let mut r = Run::default();
    r.ebpf(&[
        e("c1", false, 5, 2, 4).sys(100, 101),
        e("srv1", true, 5, 1, 10).sys(100, 101),
        e("srv2", true, 5, 1, 11).sys(100, 102),
    ]);
    r.settle();
    r.assert_root("c1");
    assert_eq!(r.stats.ambiguous_of(Tier::T2), 1);
}

#[test]
fn t2_vetoed_on_an_event_loop_thread() {
    let mut r = Run::default();
    // Two requests in flight on one thread; the downstream call of the first took
    // the id of the second request's read.
    r.ebpf(&[
        e("c", false, 5, 3, 4).sys(201, 202),
        e("srv1", true, 5, 1, 6).sys(200, 203),
        e("srv2", true, 5, 2, 8).sys(201, 202),
    ]);
    r.settle();
    r.assert_root("c");
    assert_eq!(r.stats.vetoes_of(Tier::T2, Veto::ThreadBusy), 1);
    assert_eq!(r.stats.edges_of(Tier::T2), 0);
}

#[test]
fn t2_keep_alive_requests_on_one_thread_in_turn() {
    let mut r = Run::default();
    r.ebpf(&[
        e("c1", false, 5, 2, 3).sys(300, 301),
        e("srv1", true, 5, 1, 4).sys(300, 301),
        e("c2", false, 5, 6, 7).sys(302, 303),
        e("srv2", true, 5, 5, 8).sys(302, 303),
    ]);
    r.settle();
    r.assert_edge("srv1", "c1");
    r.assert_edge("srv2", "c2");
    r.assert_apart("srv1", "srv2");
}

#[test]
fn t2_other_process_never() {
    let mut r = Run::default();
    r.ebpf(&[
        e("c", false, 6, 2, 3).sys(400, 401),
        e("srv", true, 5, 1, 4).sys(400, 401),
    ]);
    r.settle();
    r.assert_root("c");
    r.assert_apart("c", "srv");
}

// ------------------------------------------------------------------ T3

#[test]
fn t3_gateway_generated_id_and_passed_on_id() {
    let mut r = Run::default();
    r.ebpf(&[
        // A gateway that generated the id: in its response and its upstream request.
        e("up", false, 7, 2, 8).rid(Some("r1"), None),
        e("gw", true, 7, 1, 9).rid(None, Some("r1")),
        // An app that passes the id it received on.
        e("down", false, 8, 3, 4).rid(Some("r2"), None),
        e("app", true, 8, 2, 5).rid(Some("r2"), None),
    ]);
    r.settle();
    r.assert_edge("gw", "up");
    r.assert_edge("app", "down");
    assert_eq!(r.stats.edges_of(Tier::T3), 2);
}

#[test]
fn t3_retries_pick_by_time_and_refuse_ties() {
    let mut r = Run::default();
    r.ebpf(&[
        e("gw1", true, 7, 1, 9).rid(Some("r"), None),
        e("up1", false, 7, 2, 8).rid(Some("r"), None),
        e("gw2", true, 7, 20, 29).rid(Some("r"), None),
        e("up2", false, 7, 21, 28).rid(Some("r"), None),
        // Overlapping retries: both contain up3.
        e("gw3", true, 7, 40, 60).rid(Some("q"), None).tid(70),
        e("gw4", true, 7, 41, 60).rid(Some("q"), None).tid(71),
        e("up3", false, 7, 45, 50).rid(Some("q"), None).tid(70),
    ]);
    r.settle();
    r.assert_edge("gw1", "up1");
    r.assert_edge("gw2", "up2");
    r.assert_root("up3");
    assert_eq!(r.stats.ambiguous_of(Tier::T3), 1);
}

#[test]
fn t3_only_within_one_process() {
    let mut r = Run::default();
    r.ebpf(&[
        e("gw", true, 7, 1, 9).rid(Some("r"), None),
        e("other", false, 9, 2, 8).rid(Some("r"), None),
    ]);
    r.settle();
    r.assert_root("other");
}

// ------------------------------------------------------------------ T1 and SDK spans

const TRACE: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;

fn tp(span: u64) -> String {
    format!("00-{TRACE:032x}-{span:016x}-01")
}

/// SDK client (pid 20) -> eBPF client (pid 20) -> eBPF server (pid 30) -> SDK server (pid 30).
fn mixed(r: &mut Run) {
    r.feed(vec![sdk(
        "sdk_srv",
        SpanKind::Server,
        30,
        TRACE,
        0xB,
        0xA,
        3,
        7,
    )]);
    r.ebpf(&[
        e("ebpf_srv", true, 30, 2, 8)
            .seq(10, 20, 80, 40000)
            .header("traceparent", tp(0xA)),
        e("ebpf_cli", false, 20, 1, 9)
            .seq(10, 20, 40000, 80)
            .header("traceparent", tp(0xA)),
    ]);
    r.feed(vec![sdk(
        "sdk_cli",
        SpanKind::Client,
        20,
        TRACE,
        0xA,
        0x1,
        0,
        10,
    )]);
    r.settle();
}

#[test]
fn t1_sdk_and_ebpf_spans_of_one_call_as_children() {
    let mut r = Run::default();
    mixed(&mut r);
    r.assert_edge("sdk_cli", "ebpf_cli");
    r.assert_edge("ebpf_cli", "ebpf_srv");
    r.assert_edge("ebpf_srv", "sdk_srv");
    // The SDK's trace id; the SDK client keeps its own (unseen) parent.
    assert_eq!(r.get("ebpf_srv").trace, TRACE);
    assert_eq!(r.get("sdk_cli").parent, 0x1);
    assert_eq!(r.stats.edges_of(Tier::T1), 2);
}

#[test]
fn t1_merge_keeps_the_sdk_spans_only() {
    let mut r = Run::new(AutotracingConfig {
        sdk_merge: SdkMerge::Merge,
        ..Default::default()
    });
    mixed(&mut r);
    assert_eq!(r.out.len(), 2, "{:?}", r.out.keys());
    r.assert_edge("sdk_cli", "sdk_srv");
    assert_eq!(r.stats.merged.get(), 2);
}

#[test]
fn t1_header_from_an_unseen_caller_names_trace_and_parent() {
    let mut r = Run::default();
    r.ebpf(&[e("srv", true, 30, 2, 8)
        .seq(10, 20, 80, 40000)
        .header("x-b3-traceid", format!("{TRACE:032x}"))
        .header("x-b3-spanid", "00000000000000aa".into())
        .header("x-b3-sampled", "1".into())]);
    r.settle();
    assert_eq!(r.get("srv").trace, TRACE);
    assert_eq!(r.get("srv").parent, 0xaa);
}

#[test]
fn t1_datadog_64_bit_header_joins_the_128_bit_trace() {
    let mut r = Run::default();
    let low = TRACE as u64;
    r.feed(vec![sdk(
        "dd_cli",
        SpanKind::Client,
        20,
        TRACE,
        0xC,
        0,
        0,
        10,
    )]);
    r.ebpf(&[e("cli", false, 20, 1, 9)
        .header("x-datadog-trace-id", low.to_string())
        .header("x-datadog-parent-id", 0xCu64.to_string())]);
    r.settle();
    r.assert_edge("dd_cli", "cli");
    assert_eq!(r.get("cli").trace, TRACE);
}

#[test]
fn veto_two_sdk_traces_are_never_joined() {
    let mut r = Run::default();
    r.ebpf(&[
        e("srv", true, 30, 2, 8).seq(10, 20, 80, 40000).header(
            "traceparent",
            format!("00-{:032x}-{:016x}-01", 7u128 << 64 | 7, 9),
        ),
        e("cli", false, 20, 1, 9)
            .seq(10, 20, 40000, 80)
            .header("traceparent", tp(0xA)),
    ]);
    r.settle();
    r.assert_apart("cli", "srv");
    assert_eq!(r.stats.vetoes_of(Tier::T0, Veto::TraceConflict), 1);
}

#[test]
fn sdk_spans_keep_their_ids() {
    let mut r = Run::default();
    r.feed(vec![
        sdk("a", SpanKind::Server, 1, TRACE, 1, 0, 0, 10),
        sdk("b", SpanKind::Internal, 1, TRACE, 2, 1, 1, 9),
    ]);
    r.settle();
    assert_eq!(
        (r.get("a").trace, r.get("a").span, r.get("a").parent),
        (TRACE, 1, 0)
    );
    r.assert_edge("a", "b");
}

// ------------------------------------------------------------------ late spans

#[test]
fn late_child_joins_the_emitted_trace() {
    let mut r = Run::default();
    r.ebpf(&[e("srv", true, 5, 1, 100).sys(100, 101)]);
    r.settle();
    r.ebpf(&[e("c", false, 5, 2, 4).sys(100, 101)]);
    r.settle();
    r.assert_edge("srv", "c");
    assert_eq!(r.stats.late_joined.get(), 1);
}

#[test]
fn late_parent_gets_a_link_never_reparents() {
    let mut r = Run::default();
    r.ebpf(&[e("srv", true, 2, 1, 9).seq(1000, 5000, 80, 40000)]);
    r.settle();
    r.ebpf(&[e("cli", false, 1, 0, 10).seq(1000, 5000, 40000, 80)]);
    r.settle();
    r.assert_root("srv");
    let srv = r.get("srv").clone();
    let cli = r.get("cli");
    assert_eq!(cli.trace, srv.trace);
    assert_eq!(cli.links, vec![(srv.trace, srv.span)]);
    assert_eq!(r.stats.late_linked.get(), 1);
}

// ------------------------------------------------------------------ caps

#[test]
fn max_spans_per_trace_refuses_growth() {
    let mut r = Run::new(AutotracingConfig {
        max_spans_per_trace: 3,
        ..Default::default()
    });
    let mut spans = vec![e("srv", true, 5, 0, 100).sys(1, 9)];
    let names = ["c1", "c2", "c3", "c4"];
    for (k, n) in names.iter().enumerate() {
        let k = k as u64;
        spans.push(e(n, false, 5, 1 + k * 10, 5 + k * 10).sys(1 + k, 2 + k));
    }
    r.ebpf(&spans);
    r.settle();
    r.assert_edge("srv", "c1");
    r.assert_edge("srv", "c2");
    r.assert_root("c3");
    assert_eq!(r.stats.vetoes_of(Tier::T2, Veto::MaxSpansPerTrace), 1);
}

#[test]
fn max_children_per_span_refuses_more() {
    let mut r = Run::new(AutotracingConfig {
        max_children_per_span: 1,
        ..Default::default()
    });
    r.ebpf(&[
        e("srv", true, 7, 0, 100).rid(Some("r"), None),
        e("c1", false, 7, 1, 2).rid(Some("r"), None),
        e("c2", false, 7, 3, 4).rid(Some("r"), None),
    ]);
    r.settle();
    r.assert_edge("srv", "c1");
    r.assert_root("c2");
    assert_eq!(r.stats.vetoes_of(Tier::T3, Veto::MaxChildren), 1);
}

#[test]
fn in_flight_spans_stay_under_the_cap_in_a_storm() {
    let mut r = Run::new(AutotracingConfig {
        max_spans_in_flight: 100,
        ..Default::default()
    });
    let mut sent = 0;
    for round in 0..50u32 {
        let spans: Vec<E> = (0..100u32)
            .map(|k| e("x", true, 1000 + k, 0, 1).seq(round * 1000 + k, 1, 80, 1))
            .collect();
        sent += spans.len();
        let rs = ebpf_batch(&spans);
        r.st.ingest(rs, r.t);
        assert!(r.st.held_spans() <= 100, "held {}", r.st.held_spans());
        assert!(r.st.known_spans() <= 200, "known {}", r.st.known_spans());
        let out = r.st.tick(r.t);
        let n: usize = out
            .iter()
            .flat_map(|x| &x.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        r.stats.spans_out.get();
        let _ = n;
    }
    let out = r.st.flush_all(r.t);
    drop(out);
    assert_eq!(r.stats.spans_out.get() as usize, sent);
    assert!(r.stats.cut_in_flight.get() >= 4900);
}

#[test]
fn a_flood_of_never_ending_server_spans_and_ever_growing_traces_stays_bounded() {
    // Server spans that never end in the window (long polls, streams), a new batch every
    // 250 ms, and a stream of calls joining the oldest one by request id, so its trace
    // grows for the whole run: held and remembered spans stay under the caps at every
    // step, and every span still leaves.
    const CAP: usize = 100;
    let mut r = Run::new(AutotracingConfig {
        max_spans_in_flight: CAP,
        window: Duration::from_millis(500),
        grace: Duration::from_millis(200),
        max_hold: Duration::from_secs(2),
        ..Default::default()
    });
    const RIDS: [&str; 4] = ["r0", "r1", "r2", "r3"];
    let mut sent = 0usize;
    for step in 0..60u64 {
        let t = step * 250;
        let mut spans: Vec<E> = (0..10u32)
            .map(|k| {
                e("stream", true, 1 + k % 5, t, 1_000_000_000).rid(Some(RIDS[k as usize % 4]), None)
            })
            .collect();
        if step == 0 {
            spans.push(e("root", true, 99, 0, 1_000_000_000).rid(Some("grow"), None));
        }
        spans.extend(
            (0..50u64).map(|k| e("call", false, 99, t + k, t + k + 1).rid(Some("grow"), None)),
        );
        sent += spans.len();
        r.st.ingest(ebpf_batch(&spans), r.t);
        assert!(
            r.st.held_spans() <= CAP,
            "step {step}: held {}",
            r.st.held_spans()
        );
        assert!(
            r.st.known_spans() <= 2 * CAP + 64,
            "step {step}: known {}",
            r.st.known_spans()
        );
        r.t += Duration::from_millis(250);
        drop(r.st.tick(r.t));
        assert!(
            r.st.held_spans() <= CAP,
            "step {step}: held {}",
            r.st.held_spans()
        );
        assert!(
            r.st.known_spans() <= 2 * CAP + 64,
            "step {step}: known {}",
            r.st.known_spans()
        );
    }
    drop(r.st.flush_all(r.t));
    assert_eq!(r.stats.spans_out.get() as usize, sent);
    assert!(r.stats.cut_in_flight.get() > 0, "the cap was reached");
}

#[test]
fn one_connection_reused_by_thousands_of_requests_stays_separate() {
    let mut r = Run::default();
    let mut spans = Vec::new();
    for k in 0..2000u32 {
        let t = u64::from(k) * 3;
        spans.push(e("s", true, 2, t + 1, t + 2).seq(k * 100, k * 100 + 50, 80, 40000));
        spans.push(e("c", false, 1, t, t + 3).seq(k * 100, k * 100 + 50, 40000, 80));
    }
    let rs = ebpf_batch(&spans);
    r.st.ingest(rs, r.t);
    r.t += Duration::from_secs(3);
    let mut out = r.st.tick(r.t);
    r.t += Duration::from_secs(3);
    out.extend(r.st.tick(r.t));
    let mut traces: HashMap<u128, usize> = HashMap::new();
    for sp in out
        .iter()
        .flat_map(|x| &x.scope_spans)
        .flat_map(|s| &s.spans)
    {
        *traces.entry(u128_of(&sp.trace_id)).or_default() += 1;
    }
    assert_eq!(traces.len(), 2000);
    assert!(traces.values().all(|n| *n == 2));
    assert_eq!(r.stats.edges_of(Tier::T0), 2000);
}

#[test]
fn max_hold_lets_a_growing_trace_leave() {
    let mut r = Run::new(AutotracingConfig {
        window: Duration::from_secs(1),
        grace: Duration::from_millis(500),
        max_hold: Duration::from_secs(2),
        ..Default::default()
    });
    r.ebpf(&[e("srv", true, 5, 0, 10_000).rid(Some("r"), None)]);
    r.advance(Duration::from_millis(900));
    r.ebpf(&[e("c1", false, 5, 1, 2).rid(Some("r"), None)]);
    r.advance(Duration::from_millis(900));
    r.ebpf(&[e("c2", false, 5, 3, 4).rid(Some("r"), None)]);
    r.advance(Duration::from_millis(300));
    // srv and c1 left at max_hold; c2 follows under the same trace id.
    assert!(r.out.contains_key("srv") && r.out.contains_key("c1"));
    assert!(!r.out.contains_key("c2"));
    r.settle();
    r.assert_edge("srv", "c1");
    r.assert_edge("srv", "c2");
}

// ------------------------------------------------------------------ inference, attributes

#[test]
fn t4_inference_only_links() {
    let mut r = Run::new(AutotracingConfig {
        inference: true,
        ..Default::default()
    });
    r.ebpf(&[
        e("srv1", true, 5, 0, 10),
        e("srv2", true, 5, 1, 10).tid(6),
        e("c", false, 5, 2, 3).tid(7),
    ]);
    r.settle();
    r.assert_root("c");
    assert_eq!(r.get("c").links.len(), 2);
    assert_eq!(r.stats.inferred.get(), 2);
}

#[test]
fn keep_correlation_attributes_adds_the_rule() {
    let mut r = Run::new(AutotracingConfig {
        keep_correlation_attributes: true,
        ..Default::default()
    });
    r.ebpf(&[
        e("srv", true, 2, 1, 9).seq(1000, 5000, 80, 40000),
        e("cli", false, 1, 0, 10).seq(1000, 5000, 40000, 80),
    ]);
    r.settle();
    assert!(r
        .get("srv")
        .attrs
        .contains(&"weft.autotracing.rule".to_string()));
    assert!(r.get("srv").attrs.contains(&"weft.tcp.req_seq".to_string()));
}

#[test]
fn config_validation_names_the_key() {
    let bad = |c: AutotracingConfig| c.validate().unwrap_err().path.join(".");
    let d = AutotracingConfig::default;
    assert!(d().validate().is_ok());
    assert_eq!(
        bad(AutotracingConfig {
            window: Duration::ZERO,
            ..d()
        }),
        "window"
    );
    assert_eq!(
        bad(AutotracingConfig {
            max_hold: Duration::from_millis(1),
            ..d()
        }),
        "max_hold"
    );
    assert_eq!(
        bad(AutotracingConfig {
            max_spans_in_flight: 0,
            ..d()
        }),
        "max_spans_in_flight"
    );
    assert_eq!(
        bad(AutotracingConfig {
            request_id_headers: vec!["X Request".into()],
            ..d()
        }),
        "request_id_headers.0"
    );
    let parsed: Result<AutotracingConfig, _> = serde_yaml_ng::from_str("sdk_merge: maybe\n");
    assert!(parsed.is_err());
    let parsed: AutotracingConfig = serde_yaml_ng::from_str(
        "window: 500ms\nsdk_merge: merge\nrequest_id_headers: [X-Trace-Req]\n",
    )
    .unwrap();
    assert_eq!(parsed.window, Duration::from_millis(500));
    assert_eq!(parsed.sdk_merge, SdkMerge::Merge);
}

// ------------------------------------------------------------------ the processor

struct Collect(StdMutex<Vec<ResourceSpans>>);

#[async_trait]
impl Consumer for Collect {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        if let Payload::Traces(rs) = batch.into_payload() {
            self.0.lock().unwrap().extend(rs);
        }
        Ok(())
    }
}

#[tokio::test]
async fn processor_emits_after_the_window_and_flushes_on_shutdown() {
    let sink = Arc::new(Collect(StdMutex::new(Vec::new())));
    let settings = Settings {
        id: ComponentId::new("autotracing"),
        kind: Kind::Processor,
        telemetry: Telemetry::new(),
        host: Arc::new(Host::new()),
    };
    let cfg = AutotracingConfig {
        window: Duration::from_millis(100),
        grace: Duration::from_millis(100),
        max_hold: Duration::from_secs(1),
        ..Default::default()
    };
    let p = Autotracing::new(&settings, cfg, sink.clone());
    p.start().await.unwrap();
    let spans = [
        e("srv", true, 2, 1, 9).seq(1000, 5000, 80, 40000),
        e("cli", false, 1, 0, 10).seq(1000, 5000, 40000, 80),
    ];
    p.consume(Batch::new(
        Payload::Traces(ebpf_batch(&spans)),
        "ebpf".into(),
    ))
    .await
    .unwrap();
    assert!(sink.0.lock().unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut out = HashMap::new();
    collect(std::mem::take(&mut *sink.0.lock().unwrap()), &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out["srv"].parent, out["cli"].span);
    // Held spans leave on shutdown.
    p.consume(Batch::new(
        Payload::Traces(ebpf_batch(&spans[..1])),
        "ebpf".into(),
    ))
    .await
    .unwrap();
    p.shutdown().await.unwrap();
    assert_eq!(sink.0.lock().unwrap().len(), 1);
}

fn with_attrs(mut rs: ResourceSpans, attrs: Vec<KeyValue>) -> ResourceSpans {
    rs.scope_spans[0].spans[0].attributes.extend(attrs);
    rs
}

#[test]
fn t1_sdk_root_joins_the_ebpf_server_span_its_thread_served() {
    let mut r = Run::default();
    r.feed(vec![with_attrs(
        sdk("sdk_root", SpanKind::Server, 40, TRACE, 0xD, 0, 2, 8),
        vec![s("thread.id", "41")],
    )]);
    r.ebpf(&[
        e("ebpf_srv", true, 40, 1, 9).tid(41).seq(10, 20, 80, 40000),
        // Another thread of the process serving at the same time.
        e("other", true, 40, 1, 9).tid(42),
        e("cli", false, 1, 0, 10).seq(10, 20, 40000, 80),
    ]);
    r.settle();
    r.assert_edge("cli", "ebpf_srv");
    r.assert_edge("ebpf_srv", "sdk_root");
    // The upstream eBPF spans take the trace id the SDK started.
    assert_eq!(r.get("cli").trace, TRACE);
    r.assert_apart("other", "cli");
}

#[test]
fn t1_sdk_root_refused_when_its_thread_had_two_open_server_spans() {
    let mut r = Run::default();
    r.feed(vec![with_attrs(
        sdk("sdk_root", SpanKind::Server, 40, TRACE, 0xD, 0, 3, 7),
        vec![i("thread.id", 41)],
    )]);
    r.ebpf(&[
        e("a", true, 40, 1, 9).tid(41),
        e("b", true, 40, 2, 8).tid(41),
    ]);
    r.settle();
    r.assert_root("sdk_root");
    assert_eq!(r.stats.ambiguous_of(Tier::T1), 1);
}

#[test]
fn t1_header_passed_through_by_a_process_without_sdk_is_not_a_parent() {
    let mut r = Run::default();
    // The SDK client span 0xA lives in pid 20; pid 50 passed its header on.
    r.feed(vec![sdk(
        "sdk_cli",
        SpanKind::Client,
        20,
        TRACE,
        0xA,
        0,
        0,
        20,
    )]);
    r.ebpf(&[
        e("proxy_srv", true, 50, 1, 19)
            .sys(500, 501)
            .header("traceparent", tp(0xA)),
        e("proxy_cli", false, 50, 2, 18)
            .sys(500, 501)
            .header("traceparent", tp(0xA)),
    ]);
    r.settle();
    r.assert_edge("proxy_srv", "proxy_cli");
    assert_eq!(r.stats.edges_of(Tier::T2), 1);
    assert_eq!(r.get("proxy_cli").trace, TRACE);
}

#[test]
fn t3_gateway_that_echoes_the_id_it_received() {
    let mut r = Run::default();
    r.ebpf(&[
        e("gw", true, 7, 1, 9).rid(Some("r1"), Some("r1")),
        e("up", false, 7, 2, 8).rid(Some("r1"), None),
    ]);
    r.settle();
    r.assert_edge("gw", "up");
    assert_eq!(r.stats.ambiguous_of(Tier::T3), 0);
}

#[test]
fn t3_an_id_shared_by_many_requests_names_none() {
    let mut r = Run::default();
    let mut spans: Vec<E> = (0..20u64)
        .map(|k| {
            let name: &'static str = Box::leak(format!("s{k}").into_boxed_str());
            e(name, true, 7, k * 10, k * 10 + 9)
                .rid(Some("-"), None)
                .tid(100 + k as u32)
        })
        .collect();
    spans.push(e("up", false, 7, 2, 3).rid(Some("-"), None).tid(100));
    r.ebpf(&spans[..]);
    r.settle();
    r.assert_root("up");
}

#[test]
fn t2_vetoed_on_a_thread_once_seen_serving_two_requests() {
    let mut r = Run::default();
    // Two overlapping requests on one thread mark it an event loop...
    r.ebpf(&[
        e("a", true, 5, 0, 10).sys(1, 2),
        e("b", true, 5, 5, 15).sys(3, 4),
    ]);
    r.settle();
    // ...so later, a call whose id matches a server span is not linked, even though
    // the other request open at the time has not arrived (yet).
    r.ebpf(&[
        e("c", false, 5, 102, 103).sys(600, 601),
        e("srv", true, 5, 100, 110).sys(600, 601),
    ]);
    r.settle();
    r.assert_root("c");
    assert!(r.stats.vetoes_of(Tier::T2, Veto::ThreadBusy) >= 1);
}

#[test]
fn t2_needs_thread_ids() {
    let mut r = Run::default();
    let mut c = e("c", false, 5, 2, 3).sys(700, 701);
    c.tid = 0;
    let rs = ebpf_batch(&[c, e("srv", true, 5, 1, 4).sys(700, 701)]);
    let rs = rs
        .into_iter()
        .map(|mut x| {
            for sp in &mut x.scope_spans[0].spans {
                if sp.name == "c" {
                    sp.attributes.retain(|kv| kv.key != "thread.id");
                }
            }
            x
        })
        .collect();
    r.feed(rs);
    r.settle();
    r.assert_root("c");
}

#[test]
fn t1_forwarded_header_without_pids_is_not_a_parent() {
    let mut r = Run::default();
    // An SDK client span without process.pid; pid 50 received its header and sent it on.
    let mut rs = sdk("sdk_cli", SpanKind::Client, 0, TRACE, 0xA, 0, 0, 20);
    if let Some(res) = rs.resource.as_mut() {
        res.attributes.retain(|kv| kv.key != "process.pid");
    }
    r.feed(vec![rs]);
    r.ebpf(&[
        e("proxy_srv", true, 50, 1, 19)
            .sys(800, 801)
            .header("traceparent", tp(0xA)),
        e("proxy_cli", false, 50, 2, 18)
            .sys(800, 801)
            .header("traceparent", tp(0xA)),
    ]);
    r.settle();
    r.assert_edge("proxy_srv", "proxy_cli");
}

#[test]
fn in_flight_cap_sends_undecided_spans_without_guessing() {
    let mut r = Run::new(AutotracingConfig {
        max_spans_in_flight: 2,
        ..Default::default()
    });
    r.ebpf(&[e("c", false, 5, 2, 3).sys(900, 901)]);
    r.ebpf(&[e("x", true, 9, 0, 1)]);
    r.ebpf(&[e("srv", true, 5, 1, 4).sys(900, 901)]);
    // "c" left undecided when the cap was hit; it is not linked afterwards.
    r.settle();
    r.assert_root("c");
    assert!(r.stats.cut_in_flight.get() >= 1);
}

#[test]
fn veto_parent_and_child_starting_too_far_apart() {
    let mut r = Run::new(AutotracingConfig {
        max_transaction_time: Duration::from_secs(1),
        ..Default::default()
    });
    r.ebpf(&[
        e("srv", true, 7, 0, 5_000).rid(Some("r"), None),
        e("c", false, 7, 3_000, 3_001).rid(Some("r"), None),
    ]);
    r.settle();
    r.assert_root("c");
    assert_eq!(r.stats.vetoes_of(Tier::T3, Veto::Age), 1);
}

#[test]
fn veto_a_parent_that_descends_from_the_child() {
    let mut r = Run::default();
    // A process calling itself: its server span is the T0 child of its client span,
    // and the client span would be the T3 child of the server span (same times, same
    // request id): the second edge would close a cycle.
    r.ebpf(&[
        e("srv", true, 7, 0, 10)
            .seq(5, 6, 80, 40000)
            .rid(Some("r"), None)
            .tid(70),
        e("cli", false, 7, 0, 10)
            .seq(5, 6, 40000, 80)
            .rid(Some("r"), None)
            .tid(71),
    ]);
    r.settle();
    r.assert_edge("cli", "srv");
    r.assert_root("cli");
    assert_eq!(r.stats.vetoes_of(Tier::T3, Veto::Cycle), 1);
}

#[test]
fn grace_lets_an_sdk_span_exported_late_join_the_ebpf_span_of_its_call() {
    let mut r = Run::default();
    // The eBPF spans arrive first and are decided after the window...
    r.ebpf(&[
        e("ebpf_srv", true, 40, 1, 9).tid(41).seq(10, 20, 80, 40000),
        e("cli", false, 1, 0, 10).seq(10, 20, 40000, 80),
    ]);
    r.advance(Duration::from_millis(2100));
    assert!(r.out.is_empty(), "held through the grace period");
    // ...then the SDK's batch exporter delivers the server span of the same call.
    r.feed(vec![with_attrs(
        sdk("sdk_root", SpanKind::Server, 40, TRACE, 0xD, 0, 2, 8),
        vec![s("thread.id", "41")],
    )]);
    r.settle();
    r.assert_edge("cli", "ebpf_srv");
    r.assert_edge("ebpf_srv", "sdk_root");
    assert_eq!(r.get("cli").trace, TRACE);
    assert_eq!(r.stats.late_joined.get(), 0);
}
