"""Over its memory limit weft refuses data with a retryable error, as the collector
does: HTTP 503 and gRPC UNAVAILABLE, counted in otelcol_receiver_refused_spans, and
nothing reaches the exporter."""

from __future__ import annotations

import time

import grpc
import requests

from harness import otlp_receiver, wait_for_metric, wait_until
from otlp_support import OtlpGrpcClient, make_trace_request, metric_sum


def test_memory_limiter_refuses_over_the_limit(weft, grpc_sink, ports):
    sink = grpc_sink()
    grpc_port, http_port = ports(2)
    w = weft(
        {
            "receivers": {"otlp": otlp_receiver(grpc_port=grpc_port, http_port=http_port)},
            "processors": {
                # no process fits in 1 MiB: every check finds weft over the limit
                "memory_limiter": {"check_interval": "100ms", "limit_mib": 1},
                "batch": {"timeout": "50ms"},
            },
            "exporters": {"otlp_grpc": {"endpoint": sink.endpoint, "tls": {"insecure": True}}},
            "service": {
                "pipelines": {
                    "traces": {
                        "receivers": ["otlp"],
                        "processors": ["memory_limiter", "batch"],
                        "exporters": ["otlp_grpc"],
                    }
                }
            },
        }
    )
    # refusing starts with the first sample of memory use
    assert wait_until(
        lambda: metric_sum(w.metrics(), "weft_memory_limiter_usage_bytes") > 0, 10, 0.05
    ), w.log_tail()
    time.sleep(0.2)  # two more check intervals

    http_codes = []
    for i in range(3):
        body = make_trace_request(range(i * 4, i * 4 + 4)).SerializeToString()
        r = requests.post(
            f"http://127.0.0.1:{http_port}/v1/traces",
            data=body,
            headers={"Content-Type": "application/x-protobuf"},
            timeout=10,
        )
        http_codes.append(r.status_code)
    assert http_codes == [503, 503, 503]

    with OtlpGrpcClient(f"127.0.0.1:{grpc_port}") as c:
        grpc_codes = [c.export(make_trace_request(range(100 + i * 5, 105 + i * 5)))[0]
                      for i in range(2)]
    assert grpc_codes == [grpc.StatusCode.UNAVAILABLE] * 2

    assert (
        wait_for_metric(w, "otelcol_receiver_refused_spans", 12, receiver="otlp", transport="http")
        == 12
    )
    assert (
        wait_for_metric(w, "otelcol_receiver_refused_spans", 10, receiver="otlp", transport="grpc")
        == 10
    )
    samples = w.metrics()
    assert metric_sum(samples, "otelcol_receiver_accepted_spans", receiver="otlp") == 0
    assert metric_sum(samples, "otelcol_processor_refused_spans", processor="memory_limiter") == 22
    assert w.alive() and w.health_status() == 200
    time.sleep(0.3)
    assert sink.spans() == []
