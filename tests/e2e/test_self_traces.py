"""weft's own spans: `service.telemetry.traces` (the collector's declarative form).

- weft A traces itself to weft B's OTLP receiver (B writes them to a file): after an
  SDK app sent its four spans through A (one request each), B holds exactly four
  `receiver/otlp/TraceDataReceived` spans and four `exporter/otlp_grpc/traces` spans,
  each export the child of its receive span, with the collector's attributes and A's
  resource; a reload of A is a `service/reload` span naming what changed; after the
  reload put a batch processor in, one export links the receive spans it merged;
- a receive span continues the caller's trace read with the configured propagators;
- no loop: A tracing itself into its own receiver exports each of its spans once and
  makes no span for its own telemetry;
- a dead self-telemetry endpoint: spans flow, self-spans are counted as refused or
  dropped, and weft stops promptly.
"""

from __future__ import annotations

import time

from harness import free_port, otlp_receiver, send_three_tier, wait_until
from otlp_support import make_trace_request, metric_sum, read_jsonl_traces


def attrs(span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [x.string_value for x in v.array_value.values]
        else:
            out[kv.key] = getattr(v, kind)
    return out


class SpanFile:
    """Every span a weft file exporter wrote, with its resource attributes."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.rows: list[tuple[dict, object]] = []

    def read(self) -> list[tuple[dict, object]]:
        self.offset, reqs = read_jsonl_traces(self.path, self.offset)
        for req in reqs:
            for rs in req.resource_spans:
                res = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.rows.append((res, s))
        return self.rows

    def named(self, name: str) -> list:
        return [s for _, s in self.read() if s.name == name]


def self_tracing(endpoint: str, **batch) -> dict:
    return {
        "resource": {"service.name": "weft-a", "deployment.environment": "e2e"},
        "traces": {
            "propagators": ["tracecontext"],
            "processors": [{
                "batch": {
                    "schedule_delay": 100,
                    **batch,
                    "exporter": {"otlp": {"protocol": "grpc", "endpoint": f"http://{endpoint}"}},
                }
            }],
        },
    }


def weft_b(weft, tmp_path) -> tuple[SpanFile, int]:
    out = tmp_path / "b-traces.jsonl"
    port = free_port()
    weft({
        "receivers": {"otlp": otlp_receiver(grpc_port=port)},
        "exporters": {"file": {"path": str(out), "flush_interval": "50ms"}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}}},
    }, name="weft-b")
    return SpanFile(out), port


def a_config(grpc: int, sink: str, telemetry: dict, processors: list | None = None) -> dict:
    pipeline = {"receivers": ["otlp"], "exporters": ["otlp_grpc"]}
    cfg = {
        "receivers": {"otlp": otlp_receiver(grpc_port=grpc)},
        "exporters": {"otlp_grpc": {"endpoint": sink, "tls": {"insecure": True}}},
        "service": {"pipelines": {"traces": pipeline}, "telemetry": telemetry},
    }
    if processors:
        cfg["processors"] = {
            # Two requests of two spans each leave as one batch of four.
            "batch": {"send_batch_size": 4, "timeout": "10s"},
            "autotracing": {"window": "200ms"},
        }
        pipeline["processors"] = processors
    return cfg


def test_receive_export_and_reload_spans_reach_another_weft(weft, grpc_sink, tmp_path):
    spans_b, b_port = weft_b(weft, tmp_path)
    sink = grpc_sink()
    a_grpc = free_port()
    cfg = a_config(a_grpc, sink.endpoint, self_tracing(f"127.0.0.1:{b_port}"))
    a = weft(cfg, name="weft-a")

    send_three_tier(a_grpc)  # four spans, one request each
    assert sink.wait_for_spans(4, 20)
    assert wait_until(lambda: len(spans_b.named("exporter/otlp_grpc/traces")) >= 4, 20), \
        a.log_tail()
    time.sleep(0.5)  # nothing more may come
    rows = spans_b.read()
    receives = spans_b.named("receiver/otlp/TraceDataReceived")
    exports = spans_b.named("exporter/otlp_grpc/traces")
    assert len(receives) == 4 and len(exports) == 4, sorted(s.name for _, s in rows)
    # Only A's spans, with A's resource; nothing for the self-telemetry traffic.
    assert {s.name for _, s in rows} == {
        "receiver/otlp/TraceDataReceived", "exporter/otlp_grpc/traces"}
    for res, _ in rows:
        assert res["service.name"] == "weft-a"
        assert res["deployment.environment"] == "e2e"
        assert res["service.version"] and res["service.instance.id"]

    by_id = {s.span_id: s for s in receives}
    for r in receives:
        assert r.kind == 2  # SERVER
        assert r.parent_span_id == b""
        assert attrs(r) == {
            "otelcol.component.kind": "receiver",
            "otelcol.component.id": "otlp",
            "otelcol.signal": "traces",
            "transport": "grpc",
            "format": "protobuf",
            "accepted_spans": 1,
            "refused_spans": 0,
        }
        assert r.status.code == 0
    parents = set()
    for e in exports:
        assert e.kind == 3  # CLIENT
        parent = by_id[e.parent_span_id]
        assert e.trace_id == parent.trace_id
        assert parent.start_time_unix_nano <= e.start_time_unix_nano
        parents.add(e.parent_span_id)
        assert attrs(e) == {
            "otelcol.component.kind": "exporter",
            "otelcol.component.id": "otlp_grpc",
            "otelcol.signal": "traces",
            "exporter": "otlp_grpc",
            "data_type": "traces",
            "items": 1,
            "items.sent": 1,
            "items.failed": 0,
        }
        assert [(ev.name, attrs(ev)) for ev in e.events] == [
            ("Sending request.", {"retry_num": 0})]
    assert parents == set(by_id), "each export is the child of its own receive span"
    assert metric_sum(a.metrics(), "weft_self_telemetry_spans", result="dropped") == 0

    # A reload: a span naming what changed; the batch processor now merges requests.
    cfg = a_config(a_grpc, sink.endpoint, self_tracing(f"127.0.0.1:{b_port}"), ["batch"])
    a.write_config(cfg)
    assert wait_until(lambda: spans_b.named("service/reload"), 20), a.log_tail()
    [reload] = spans_b.named("service/reload")
    ra = attrs(reload)
    assert ra["reload.trigger"] == "config file change"
    assert ra["reload.result"] == "success"
    assert ra["reload.changed"] == [
        "processors::autotracing", "processors::batch", "service::pipelines"]
    assert "pipelines [traces]" in ra["reload.summary"]

    from otlp_support import OtlpGrpcClient

    with OtlpGrpcClient(f"127.0.0.1:{a_grpc}") as c:
        for run in (1, 2):
            code, _ = c.export(make_trace_request([1, 2], run=run))
            assert code.name == "OK"
    assert sink.wait_for_spans(8, 20)
    assert wait_until(lambda: len(spans_b.named("exporter/otlp_grpc/traces")) >= 5, 20)
    time.sleep(0.5)
    new_receives = spans_b.named("receiver/otlp/TraceDataReceived")[4:]
    [merged] = spans_b.named("exporter/otlp_grpc/traces")[4:]
    assert len(new_receives) == 2
    assert merged.parent_span_id == b""
    assert {(link.trace_id, link.span_id) for link in merged.links} == {
        (r.trace_id, r.span_id) for r in new_receives}
    assert attrs(merged)["items.sent"] == 4


def test_receive_span_continues_the_callers_trace(weft, grpc_sink, tmp_path):
    spans_b, b_port = weft_b(weft, tmp_path)
    sink = grpc_sink()
    a_grpc = free_port()
    weft(a_config(a_grpc, sink.endpoint, self_tracing(f"127.0.0.1:{b_port}")), name="weft-a")
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with grpc.insecure_channel(f"127.0.0.1:{a_grpc}") as ch:
        stub = trace_service_pb2_grpc.TraceServiceStub(ch)
        stub.Export(make_trace_request([1]), timeout=10, wait_for_ready=True,
                    metadata=(("traceparent", f"00-{trace_id}-{parent}-01"),))
        # A caller's "not sampled" decision is kept (parent-based sampler).
        stub.Export(make_trace_request([2]), timeout=10, wait_for_ready=True,
                    metadata=(("traceparent", f"00-{'ab' * 16}-{parent}-00"),))
    assert wait_until(lambda: spans_b.named("exporter/otlp_grpc/traces"), 20)
    time.sleep(0.5)
    [r] = spans_b.named("receiver/otlp/TraceDataReceived")
    assert r.trace_id.hex() == trace_id
    assert r.parent_span_id.hex() == parent
    [e] = spans_b.named("exporter/otlp_grpc/traces")
    assert (e.trace_id, e.parent_span_id) == (r.trace_id, r.span_id)
    assert sink.wait_for_spans(2, 10)


def test_tracing_itself_into_its_own_receiver_does_not_loop(weft, grpc_sink):
    """Through autotracing and batch too: data without a receive span makes no flush
    span and no send span."""
    sink = grpc_sink()
    a_grpc = free_port()
    cfg = a_config(a_grpc, sink.endpoint, self_tracing(f"127.0.0.1:{a_grpc}"),
                   ["autotracing", "batch"])
    cfg["processors"]["batch"] = {"timeout": "100ms"}
    a = weft(cfg, name="weft-a")
    from otlp_support import OtlpGrpcClient

    with OtlpGrpcClient(f"127.0.0.1:{a_grpc}") as c:
        code, _ = c.export(make_trace_request([1, 2, 3]))
        assert code.name == "OK"
    # The three spans, then A's receive, flush and export spans (once, through A).
    assert sink.wait_for_spans(6, 20), a.log_tail()
    time.sleep(3.0)  # thirty schedule delays: a loop would keep adding spans
    rows = sink.spans()
    names = sorted(r.item.name for r in rows)
    assert names == sorted(["op-1", "op-2", "op-3", "receiver/otlp/TraceDataReceived",
                            "processor/autotracing/flush", "exporter/otlp_grpc/traces"]), names
    by_name = {r.item.name: r.item for r in rows}
    receive = by_name["receiver/otlp/TraceDataReceived"]
    flush = by_name["processor/autotracing/flush"]
    export = by_name["exporter/otlp_grpc/traces"]
    assert flush.parent_span_id == receive.span_id
    assert export.parent_span_id == flush.span_id
    assert len({receive.trace_id, flush.trace_id, export.trace_id}) == 1
    assert metric_sum(a.metrics(), "otelcol_receiver_accepted_spans", receiver="otlp") == 6


def test_dead_self_traces_endpoint_leaves_the_data_path_alone(weft, grpc_sink):
    sink = grpc_sink()
    a_grpc, dead = free_port(), free_port()
    a = weft(a_config(a_grpc, sink.endpoint, self_tracing(f"127.0.0.1:{dead}")), name="weft-a")
    t0 = time.monotonic()
    send_three_tier(a_grpc)
    assert sink.wait_for_spans(4, 20)
    assert time.monotonic() - t0 < 15
    exporter = "otlp_grpc/self_telemetry_traces_0"
    assert wait_until(
        lambda: metric_sum(a.metrics(), "otelcol_exporter_send_failed_spans",
                           exporter=exporter) >= 8, 20), a.log_tail()
    m = a.metrics()
    assert metric_sum(m, "weft_self_telemetry_spans", result="queued") == 8
    assert metric_sum(m, "otelcol_exporter_sent_spans", exporter="otlp_grpc") == 4
    t1 = time.monotonic()
    assert a.stop() == 0
    assert time.monotonic() - t1 < 15, "shutdown waited on the dead endpoint"


def test_autotracing_flushes_are_spans(weft, grpc_sink, tmp_path):
    spans_b, b_port = weft_b(weft, tmp_path)
    sink = grpc_sink()
    a_grpc = free_port()
    cfg = a_config(a_grpc, sink.endpoint, self_tracing(f"127.0.0.1:{b_port}"))
    cfg["processors"] = {"autotracing": {"window": "200ms"}}
    cfg["service"]["pipelines"]["traces"]["processors"] = ["autotracing"]
    a = weft(cfg, name="weft-a")
    send_three_tier(a_grpc)
    assert sink.wait_for_spans(4, 20)
    assert wait_until(lambda: sum(attrs(f)["spans"] for f in
                                  spans_b.named("processor/autotracing/flush")) >= 4, 20), \
        a.log_tail()
    time.sleep(0.5)
    flushes = spans_b.named("processor/autotracing/flush")
    exports = spans_b.named("exporter/otlp_grpc/traces")
    assert len(spans_b.named("receiver/otlp/TraceDataReceived")) == 4
    fa = [attrs(f) for f in flushes]
    assert sum(f["spans"] for f in fa) == 4
    assert sum(f["traces"] for f in fa) == 2
    assert sum(f.get("edges.sdk", 0) for f in fa) == 2, fa
    assert {f["trigger"] for f in fa} <= {"window", "arrival"}
    for f in fa:
        assert f["otelcol.component.id"] == "autotracing"
    # Each flush hangs under the receive spans of the data that arrived before it
    # (their child when there was one, linked when several), and each flush handed
    # one batch on: its export is the flush's child.
    receives = {r.span_id for r in spans_b.named("receiver/otlp/TraceDataReceived")}
    under = set()
    for f in flushes:
        if f.parent_span_id:
            assert not f.links
            under.add(f.parent_span_id)
        else:
            assert len(f.links) >= 2
            under.update(link.span_id for link in f.links)
    assert under == receives
    assert sorted(e.parent_span_id for e in exports) == sorted(f.span_id for f in flushes)
    assert sum(attrs(e)["items.sent"] for e in exports) == 4


def test_one_trace_across_two_weft_with_propagators(weft, tmp_path):
    """A's send span travels on its export request (traceparent): B's receive span is
    its child, so the pipeline tier shows as one trace: A receive -> A export ->
    B receive -> B export."""
    spans_c, c_port = weft_b(weft, tmp_path)
    b_grpc, a_grpc = free_port(), free_port()
    b_data = tmp_path / "b-data.jsonl"
    telemetry_b = self_tracing(f"127.0.0.1:{c_port}")
    telemetry_b["resource"]["service.name"] = "weft-b"
    weft({
        "receivers": {"otlp": otlp_receiver(grpc_port=b_grpc)},
        "exporters": {"file": {"path": str(b_data), "flush_interval": "50ms"}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
                    "telemetry": telemetry_b},
    }, name="weft-b2")
    a = weft(a_config(a_grpc, f"127.0.0.1:{b_grpc}", self_tracing(f"127.0.0.1:{c_port}")),
             name="weft-a")
    from otlp_support import OtlpGrpcClient

    with OtlpGrpcClient(f"127.0.0.1:{a_grpc}") as c:
        code, _ = c.export(make_trace_request([1, 2, 3]))
        assert code.name == "OK"
    assert wait_until(lambda: len(spans_c.named("exporter/file/traces")) >= 1
                      and len(spans_c.named("exporter/otlp_grpc/traces")) >= 1, 20), a.log_tail()
    time.sleep(0.5)
    by_service = {}
    for res, s in spans_c.read():
        by_service.setdefault((res["service.name"], s.name), []).append(s)
    [ra] = by_service[("weft-a", "receiver/otlp/TraceDataReceived")]
    [ea] = by_service[("weft-a", "exporter/otlp_grpc/traces")]
    [rb] = by_service[("weft-b", "receiver/otlp/TraceDataReceived")]
    [eb] = by_service[("weft-b", "exporter/file/traces")]
    assert len(by_service) == 4, sorted(by_service)
    assert ra.parent_span_id == b""
    assert ea.parent_span_id == ra.span_id
    assert rb.parent_span_id == ea.span_id
    assert eb.parent_span_id == rb.span_id
    assert len({ra.trace_id, ea.trace_id, rb.trace_id, eb.trace_id}) == 1
    assert attrs(rb)["accepted_spans"] == 3 and attrs(eb)["items.sent"] == 3
