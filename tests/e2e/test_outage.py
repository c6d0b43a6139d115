"""The destination goes away: the otlp_grpc exporter's sending queue holds what fits
and retries until the destination is back; what does not fit is dropped and counted
in otelcol_exporter_enqueue_failed_spans, exactly."""

from __future__ import annotations

import time
from collections import Counter

import grpc

from harness import otlp_receiver, wait_for_metric, wait_until
from otlp_support import OtlpGrpcClient, make_trace_request, metric_sum, seq_of

RETRY = {
    "enabled": True,
    "initial_interval": "100ms",
    "max_interval": "1s",
    "max_elapsed_time": "60s",
}


def outage_config(rcv: int, sink_endpoint: str, batch: dict, queue: dict) -> dict:
    return {
        "receivers": {"otlp": otlp_receiver(grpc_port=rcv)},
        "processors": {"batch": batch},
        "exporters": {
            "otlp_grpc": {
                "endpoint": sink_endpoint,
                "tls": {"insecure": True},
                "timeout": "2s",
                "retry_on_failure": RETRY,
                "sending_queue": queue,
            }
        },
        "service": {
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["otlp_grpc"]}
            }
        },
    }


def send(endpoint: str, requests: int, per_request: int, pause: float) -> tuple[list[int], list]:
    """Send `requests` requests; return the acknowledged span numbers and the refusals."""
    acked, refused = [], []
    with OtlpGrpcClient(endpoint) as c:
        for i in range(requests):
            nums = list(range(i * per_request, (i + 1) * per_request))
            code, details = c.export(make_trace_request(nums), timeout=5)
            if code == grpc.StatusCode.OK:
                acked.extend(nums)
            else:
                refused.append((nums[0], code.name, details))
            time.sleep(pause)
    return acked, refused


def received_once(sink) -> list[int]:
    got = [seq_of(r.item) for r in sink.spans()]
    dups = [k for k, n in Counter(got).items() if n > 1]
    assert dups == [], f"{len(dups)} spans delivered more than once, e.g. {dups[:10]}"
    return got


def test_queue_rides_out_a_ten_second_outage(weft, grpc_sink, port):
    rcv = port()
    sink = grpc_sink(start=False)  # its port is free: the destination is down
    w = weft(
        outage_config(
            rcv,
            sink.endpoint,
            {"send_batch_size": 10, "send_batch_max_size": 10, "timeout": "50ms"},
            {"enabled": True, "num_consumers": 2, "queue_size": 100},
        )
    )
    down_since = time.monotonic()
    acked, refused = send(f"127.0.0.1:{rcv}", requests=30, per_request=10, pause=0.02)
    assert refused == [] and len(acked) == 300
    # everything is queued or in a retry: nothing can have been sent
    time.sleep(1.0)
    samples = w.metrics()
    assert metric_sum(samples, "otelcol_exporter_sent_spans", exporter="otlp_grpc") == 0
    assert metric_sum(samples, "otelcol_exporter_queue_size", exporter="otlp_grpc") > 0

    time.sleep(max(0.0, 10.0 - (time.monotonic() - down_since)))
    sink.start()
    assert sink.wait_for_spans(300, timeout=30), (
        f"after the outage the sink got {len(sink.spans())} of 300 spans\n{w.log_tail()}"
    )
    # a late duplicate (a retry of something already delivered) would show up now
    time.sleep(2.0)
    got = received_once(sink)
    assert sorted(got) == sorted(acked)
    assert wait_for_metric(w, "otelcol_exporter_sent_spans", 300, exporter="otlp_grpc") == 300
    samples = w.metrics()
    assert metric_sum(samples, "otelcol_exporter_send_failed_spans", exporter="otlp_grpc") == 0
    assert metric_sum(samples, "otelcol_exporter_enqueue_failed_spans", exporter="otlp_grpc") == 0
    assert metric_sum(samples, "otelcol_exporter_queue_size", exporter="otlp_grpc") == 0
    assert w.stop() == 0
    assert len(sink.spans()) == 300


def test_full_queue_drops_are_counted_exactly(weft, grpc_sink, port):
    rcv = port()
    sink = grpc_sink(start=False)
    w = weft(
        outage_config(
            rcv,
            sink.endpoint,
            {"send_batch_size": 10, "send_batch_max_size": 10, "timeout": "50ms"},
            {"enabled": True, "num_consumers": 1, "queue_size": 2},
        )
    )
    acked, refused = send(f"127.0.0.1:{rcv}", requests=40, per_request=10, pause=0.02)
    assert acked, f"weft refused everything: {refused[:3]}"
    time.sleep(2.0)
    sink.start()

    # drained: queue empty and nothing new arriving for longer than max_interval
    def settled():
        before = len(sink.spans())
        time.sleep(1.5)
        q = metric_sum(w.metrics(), "otelcol_exporter_queue_size", exporter="otlp_grpc")
        return q == 0 and len(sink.spans()) == before and before > 0

    assert wait_until(settled, 40, 0.1), f"queue never drained\n{w.log_tail()}"
    got = received_once(sink)
    assert set(got) <= set(acked), "the sink got spans nobody sent"
    dropped = len(acked) - len(got)
    assert dropped > 0, "the queue never overflowed: the test sent too little"
    samples = w.metrics()
    assert (
        metric_sum(samples, "otelcol_exporter_enqueue_failed_spans", exporter="otlp_grpc")
        == dropped
    ), f"acked {len(acked)}, received {len(got)}, refused requests {len(refused)}"
    assert metric_sum(samples, "otelcol_exporter_send_failed_spans", exporter="otlp_grpc") == 0
    assert metric_sum(samples, "otelcol_exporter_sent_spans", exporter="otlp_grpc") == len(got)
    assert w.stop() == 0
