"""weft-loadgen through weft into a real gRPC collector sink: every acknowledged span
arrives exactly once, whatever the intake protocol and compression, and weft's own
counters agree. OTLP protobuf traces travel through weft encoded (checked, joined by
the batch processor, sent as they came); the sink decodes every request in full, so a
malformed join would show here."""

from __future__ import annotations

import json
import subprocess

import pytest

from harness import loadgen_binary, otlp_receiver, wait_for_metric

SPANS_PER_REQUEST = 50
ATTRIBUTES = 4
ATTRIBUTE_SIZE = 24


def send(protocol: str, endpoint: str, compression: str = "none") -> dict:
    p = subprocess.run(
        [
            str(loadgen_binary()), "send",
            "--protocol", protocol,
            "--endpoint", endpoint,
            "--compression", compression,
            "--rate", "2000", "--duration", "2s", "--connections", "2",
            "--spans-per-request", str(SPANS_PER_REQUEST),
            "--attributes", str(ATTRIBUTES), "--attribute-size", str(ATTRIBUTE_SIZE),
            # distinct requests for the whole run: no span is sent twice
            "--templates", "200",
            "--json",
        ],
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


CASES = [
    ("otlp-grpc", "none", "grpc"),
    ("otlp-grpc", "gzip", "grpc"),
    ("otlp-grpc", "zstd", "grpc"),
    ("otlp-http", "gzip", "http"),
    ("otlp-http-json", "none", "http"),
    ("datadog-v05", "none", "datadog"),
    ("zipkin-json", "none", "zipkin"),
]


@pytest.mark.parametrize("protocol,compression,intake", CASES)
def test_every_acknowledged_span_arrives_once(weft, grpc_sink, ports, protocol, compression, intake):
    sink = grpc_sink()
    grpc_port, http_port, dd_port, zipkin_port = ports(4)
    w = weft(
        {
            "receivers": {
                "otlp": otlp_receiver(grpc_port=grpc_port, http_port=http_port),
                "datadog": {"endpoint": f"127.0.0.1:{dd_port}"},
                "zipkin": {"endpoint": f"127.0.0.1:{zipkin_port}"},
            },
            "processors": {"batch": {"send_batch_size": 500, "timeout": "100ms"}},
            "exporters": {
                "otlp_grpc": {
                    "endpoint": sink.endpoint,
                    "tls": {"insecure": True},
                    "sending_queue": {
                        "sizer": "bytes", "queue_size": 4 << 20, "block_on_overflow": True
                    },
                }
            },
            "service": {
                "pipelines": {
                    "traces": {
                        "receivers": ["otlp", "datadog", "zipkin"],
                        "processors": ["batch"],
                        "exporters": ["otlp_grpc"],
                    }
                }
            },
        }
    )
    port = {"grpc": grpc_port, "http": http_port, "datadog": dd_port, "zipkin": zipkin_port}[intake]
    rep = send(protocol, f"http://127.0.0.1:{port}", compression)
    acked = rep["acknowledged_spans"]
    assert rep["failed_spans"] == 0 and rep["refused_spans"] == 0, rep
    assert acked == rep["sent_spans"] >= 3000, rep
    assert acked % SPANS_PER_REQUEST == 0

    assert sink.wait_for_spans(acked), f"sink holds {sink.span_count()} of {acked}\n{w.log_tail()}"
    # nothing more arrives than was acknowledged
    assert not sink.wait_for_spans(acked + 1, timeout=1.0)
    rows = sink.spans()
    assert len(rows) == acked
    keys = {(r.item.trace_id, r.item.span_id) for r in rows}
    assert len(keys) == acked, "a span arrived twice"
    for r in rows:
        assert len(r.item.trace_id) == 16 and len(r.item.span_id) == 8
        attrs = {a.key: a.value.string_value for a in r.item.attributes}
        for i in range(ATTRIBUTES):
            assert len(attrs[f"attr.{i}"]) == ATTRIBUTE_SIZE, attrs
    # ten spans per trace, a root and nine children of it
    by_trace: dict[bytes, list] = {}
    for r in rows:
        by_trace.setdefault(r.item.trace_id, []).append(r.item)
    assert all(len(v) == 10 for v in by_trace.values())
    for spans in by_trace.values():
        roots = [s for s in spans if not s.parent_span_id]
        assert len(roots) == 1
        assert all(s.parent_span_id == roots[0].span_id for s in spans if s is not roots[0])

    receiver = {"grpc": "otlp", "http": "otlp", "datadog": "datadog", "zipkin": "zipkin"}[intake]
    assert wait_for_metric(w, "otelcol_receiver_accepted_spans", acked, receiver=receiver) == acked
    assert wait_for_metric(w, "otelcol_exporter_sent_spans", acked, exporter="otlp_grpc") == acked
