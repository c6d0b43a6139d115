"""SIGTERM drains: spans accepted just before it, still waiting in a batch whose
timer is far away, reach the destination before weft exits 0; with the destination
down, the drain gives up at its deadline."""

from __future__ import annotations

import time

import grpc
import pytest

from harness import otlp_receiver
from otlp_support import OtlpGrpcClient, make_trace_request, seq_of

SLOW_BATCH = {"send_batch_size": 8192, "timeout": "10s"}


@pytest.mark.parametrize("exporter_type", ["otlp_grpc", "otlp_http"])
def test_sigterm_flushes_pending_batch(weft, grpc_sink, http_sink, port, exporter_type):
    rcv = port()
    if exporter_type == "otlp_grpc":
        sink = grpc_sink()
        exporter = {"endpoint": sink.endpoint, "tls": {"insecure": True}}
    else:
        sink = http_sink()
        exporter = {"endpoint": sink.base_url}
    w = weft(
        {
            "receivers": {"otlp": otlp_receiver(grpc_port=rcv)},
            "processors": {"batch": SLOW_BATCH},
            "exporters": {exporter_type: exporter},
            "service": {
                "pipelines": {
                    "traces": {
                        "receivers": ["otlp"],
                        "processors": ["batch"],
                        "exporters": [exporter_type],
                    }
                }
            },
        }
    )
    sent = []
    with OtlpGrpcClient(f"127.0.0.1:{rcv}") as c:
        for i in range(3):
            nums = list(range(i * 7, i * 7 + 7))
            assert c.export(make_trace_request(nums)) == (grpc.StatusCode.OK, "")
            sent.extend(nums)
    time.sleep(0.5)
    assert sink.spans() == [], "the batch should still hold the spans (timeout 10s)"

    t0 = time.monotonic()
    code = w.stop()  # one SIGTERM
    elapsed = time.monotonic() - t0
    assert code == 0, w.log_tail()
    # delivered by the shutdown flush, not by the 10s batch timer
    assert elapsed < 9.0, f"exit took {elapsed:.1f}s: the flush waited for the batch timer"
    assert sorted(seq_of(r.item) for r in sink.spans()) == sent


def test_sigterm_with_destination_down_is_bounded_by_the_drain_deadline(weft, grpc_sink, port):
    """With the destination down, shutdown keeps retrying only until the drain
    deadline (max_elapsed_time, capped at 30s), then drops what is left and exits 0."""
    rcv = port()
    down = grpc_sink(start=False)  # nothing listens on its port
    w = weft(
        {
            "receivers": {"otlp": otlp_receiver(grpc_port=rcv)},
            "processors": {"batch": {"timeout": "50ms"}},
            "exporters": {
                "otlp_grpc": {
                    "endpoint": down.endpoint,
                    "tls": {"insecure": True},
                    "timeout": "1s",
                    "retry_on_failure": {
                        "enabled": True,
                        "initial_interval": "500ms",
                        "max_interval": "1s",
                        "max_elapsed_time": "3s",
                    },
                }
            },
            "service": {
                "pipelines": {
                    "traces": {
                        "receivers": ["otlp"],
                        "processors": ["batch"],
                        "exporters": ["otlp_grpc"],
                    }
                }
            },
        }
    )
    with OtlpGrpcClient(f"127.0.0.1:{rcv}") as c:
        for i in range(3):
            assert c.export(make_trace_request(range(i * 7, i * 7 + 7))) == (
                grpc.StatusCode.OK,
                "",
            )
    time.sleep(0.3)  # the batch reached the exporter; its first attempt failed

    t0 = time.monotonic()
    code = w.stop(timeout=60)
    elapsed = time.monotonic() - t0
    assert code == 0, w.log_tail()
    assert elapsed < 8.0, (
        f"weft took {elapsed:.1f}s to exit with its destination down and a 3s drain "
        f"deadline\n{w.log_tail()}"
    )
