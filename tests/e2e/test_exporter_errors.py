"""How the OTLP exporters treat a destination's refusals, as the collector's do:
retryable answers (gRPC UNAVAILABLE, ABORTED, DATA_LOSS...; HTTP 429, 502, 503, 504)
are retried until delivered exactly once, honouring Retry-After; every other answer is
permanent: one attempt, the data dropped and counted in
otelcol_exporter_send_failed_spans."""

from __future__ import annotations

import time

import grpc
import pytest

from harness import otlp_receiver, wait_for_metric
from otlp_support import OtlpGrpcClient, make_trace_request, metric_sum, seq_of

FAST_RETRY = {
    "enabled": True,
    "initial_interval": "100ms",
    "max_interval": "200ms",
    "max_elapsed_time": "30s",
}


def start(weft, rcv: int, exporter_type: str, exporter: dict):
    exporter = {**exporter, "retry_on_failure": FAST_RETRY}
    return weft(
        {
            "receivers": {"otlp": otlp_receiver(grpc_port=rcv)},
            "exporters": {exporter_type: exporter},
            "service": {
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": [exporter_type]}}
            },
        }
    )


def send(rcv: int, numbers) -> None:
    with OtlpGrpcClient(f"127.0.0.1:{rcv}") as c:
        assert c.export(make_trace_request(numbers)) == (grpc.StatusCode.OK, "")


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.DATA_LOSS],
    ids=lambda c: c.name,
)
def test_grpc_retryable_status_is_retried_until_delivered(weft, grpc_sink, port, code):
    sink = grpc_sink()
    sink.fail_next(2, code)
    rcv = port()
    w = start(weft, rcv, "otlp_grpc", {"endpoint": sink.endpoint, "tls": {"insecure": True}})
    send(rcv, range(10))
    assert sink.wait_for_spans(10), w.log_tail()
    time.sleep(0.6)  # a duplicate retry would land by now
    assert [a[1] for a in sink.attempts] == [code.name, code.name, "OK"]
    assert sorted(seq_of(r.item) for r in sink.spans()) == list(range(10))
    assert wait_for_metric(w, "otelcol_exporter_sent_spans", 10, exporter="otlp_grpc") == 10
    assert metric_sum(w.metrics(), "otelcol_exporter_send_failed_spans", exporter="otlp_grpc") == 0


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INTERNAL,
        # without a RetryInfo detail, the collector treats it as permanent
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ],
    ids=lambda c: c.name,
)
def test_grpc_permanent_status_is_not_retried(weft, grpc_sink, port, code):
    sink = grpc_sink()
    sink.fail_next(1, code)
    rcv = port()
    w = start(weft, rcv, "otlp_grpc", {"endpoint": sink.endpoint, "tls": {"insecure": True}})
    send(rcv, range(10))
    assert (
        wait_for_metric(w, "otelcol_exporter_send_failed_spans", 10, exporter="otlp_grpc") == 10
    ), w.log_tail()
    time.sleep(0.6)  # several retry intervals: none may come
    assert [a[1] for a in sink.attempts] == [code.name]
    assert sink.spans() == []
    # the exporter is fine afterwards
    send(rcv, range(100, 105))
    assert sink.wait_for_spans(5), w.log_tail()
    assert sorted(seq_of(r.item) for r in sink.spans()) == list(range(100, 105))
    assert wait_for_metric(w, "otelcol_exporter_sent_spans", 5, exporter="otlp_grpc") == 5


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_http_retryable_status_is_retried_until_delivered(weft, http_sink, port, status):
    sink = http_sink()
    sink.fail_next(2, status)
    rcv = port()
    w = start(weft, rcv, "otlp_http", {"endpoint": sink.base_url})
    send(rcv, range(10))
    assert sink.wait_for_spans(10), w.log_tail()
    time.sleep(0.6)
    assert [a[1] for a in sink.attempts] == [status, status, 200]
    assert sorted(seq_of(r.item) for r in sink.spans()) == list(range(10))
    assert wait_for_metric(w, "otelcol_exporter_sent_spans", 10, exporter="otlp_http") == 10
    assert metric_sum(w.metrics(), "otelcol_exporter_send_failed_spans", exporter="otlp_http") == 0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 500])
def test_http_permanent_status_is_not_retried(weft, http_sink, port, status):
    sink = http_sink()
    sink.fail_next(1, status)
    rcv = port()
    w = start(weft, rcv, "otlp_http", {"endpoint": sink.base_url})
    send(rcv, range(10))
    assert (
        wait_for_metric(w, "otelcol_exporter_send_failed_spans", 10, exporter="otlp_http") == 10
    ), w.log_tail()
    time.sleep(0.6)
    assert [a[1] for a in sink.attempts] == [status]
    assert sink.spans() == []
    send(rcv, range(100, 105))
    assert sink.wait_for_spans(5), w.log_tail()
    assert wait_for_metric(w, "otelcol_exporter_sent_spans", 5, exporter="otlp_http") == 5


def test_http_retry_after_is_honoured(weft, http_sink, port):
    """initial_interval is 100ms, but the destination asked for 2 seconds."""
    sink = http_sink()
    sink.fail_next(1, 503, retry_after="2")
    rcv = port()
    w = start(weft, rcv, "otlp_http", {"endpoint": sink.base_url})
    send(rcv, range(10))
    assert sink.wait_for_spans(10, timeout=20), w.log_tail()
    (t_fail, s1), (t_ok, s2) = sink.attempts
    assert (s1, s2) == (503, 200)
    assert t_ok - t_fail >= 1.9, f"retried {t_ok - t_fail:.2f}s after Retry-After: 2"
