"""Overload: a dead destination and three times the rate weft sustains.

Resident memory stays under the memory_limiter's limit, receivers refuse with 503 /
UNAVAILABLE (429 + Retry-After when memory_limiter sets `retry_after`), and the counters
add up exactly: what the client sent = what weft acknowledged + what it refused, and
every acknowledged span is in the sending queue. The ebpf receiver cannot refuse the
kernel: it builds the spans, the pipeline refuses them, and every one is counted."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
import requests

from harness import ebpf_unavailable, free_port, loadgen_binary, otlp_receiver, wait_until
from otlp_support import OtlpGrpcClient, make_trace_request, metric_sum

LIMIT_MIB = 120
SPIKE_MIB = 30


def loadgen(endpoint: str, rate: int, seconds: int, connections: int = 4) -> dict:
    p = subprocess.run(
        [str(loadgen_binary()), "send", "--protocol", "otlp-grpc", "--endpoint", endpoint,
         "--rate", str(rate), "--duration", f"{seconds}s", "--connections", str(connections),
         "--spans-per-request", "100", "--timeout", "5s", "--json"],
        capture_output=True, text=True, timeout=seconds + 60,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssWatch:
    """Samples a process's resident memory every 10 ms in a thread."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.samples = pid, 0.0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RssWatch":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            self.samples += 1
            time.sleep(0.01)


def pipeline(rcv_port: int, exporter: dict, processors: dict | None = None) -> dict:
    procs = processors or {}
    return {
        "receivers": {"otlp": otlp_receiver(grpc_port=rcv_port)},
        "processors": procs,
        "exporters": exporter,
        "service": {"pipelines": {"traces": {
            "receivers": ["otlp"], "processors": list(procs), "exporters": list(exporter)}}},
    }


def test_dead_exporter_at_three_times_the_sustained_rate(weft, grpc_sink, port):
    # What this pipeline sustains: the rate its destination (the gRPC sink) takes in
    # while weft is fed as fast as it answers.
    sink = grpc_sink()
    rcv = port()
    probe = weft(pipeline(rcv, {"otlp_grpc": {
        "endpoint": sink.endpoint, "tls": {"insecure": True},
        "sending_queue": {"sizer": "items", "queue_size": 200_000}}}), name="sustained")
    rep = loadgen(f"http://127.0.0.1:{rcv}", 0, 4)
    sustained = sink.span_count() // 4
    assert sustained > 1000, (rep, sink.span_count())
    assert probe.stop() == 0

    dead = free_port()  # nothing listens there
    rcv = port()
    w = weft(pipeline(
        rcv,
        {"otlp_grpc": {
            "endpoint": f"127.0.0.1:{dead}", "tls": {"insecure": True}, "timeout": "1s",
            "retry_on_failure": {"initial_interval": "1s", "max_elapsed_time": "0s"},
            # Room for far more than the memory limit: memory_limiter is the bound.
            "sending_queue": {"sizer": "items", "queue_size": 50_000_000, "num_consumers": 2},
        }},
        {"memory_limiter": {"check_interval": "20ms", "limit_mib": LIMIT_MIB,
                            "spike_limit_mib": SPIKE_MIB}},
    ), name="overloaded")
    with RssWatch(w.proc.pid) as watch:
        rep = loadgen(f"http://127.0.0.1:{rcv}", 3 * sustained, 10, connections=8)
    offered = rep["sent_spans"] / 10
    print(f"overload: sustained {sustained} spans/s, offered {offered:.0f} spans/s "
          f"({offered / sustained:.1f}x), "
          f"acknowledged {rep['acknowledged_spans']}, refused {rep['refused_spans']}, "
          f"peak RSS {watch.peak:.1f} MiB of {LIMIT_MIB} ({watch.samples} samples)")
    assert watch.samples > 100
    assert watch.peak < LIMIT_MIB, f"peak RSS {watch.peak:.1f} MiB over the {LIMIT_MIB} MiB limit"
    assert rep["failed_spans"] == 0, rep
    assert offered > 2.5 * sustained, "the load generator fell short of 3x"
    assert rep["refused_spans"] > 0, "never over the limit: the test offered too little"
    assert rep["acknowledged_spans"] + rep["refused_spans"] == rep["sent_spans"]

    time.sleep(0.5)
    s = w.metrics()
    accepted = metric_sum(s, "otelcol_receiver_accepted_spans", receiver="otlp")
    refused = metric_sum(s, "otelcol_receiver_refused_spans", receiver="otlp")
    assert accepted == rep["acknowledged_spans"]
    assert refused == rep["refused_spans"]
    # Every refusal is the limiter's or the queue's, counted where it happened.
    by_limiter = metric_sum(s, "otelcol_processor_refused_spans", processor="memory_limiter")
    by_queue = metric_sum(s, "otelcol_exporter_enqueue_failed_spans", exporter="otlp_grpc")
    assert by_limiter + by_queue == refused and by_limiter > 0
    # Every accepted span waits in the queue or in one of the 2 senders' retries (a
    # batch being retried has left the queue): none sent, none dropped.
    queued = metric_sum(s, "otelcol_exporter_queue_size", exporter="otlp_grpc")
    assert 0 <= accepted - queued <= 2 * 100, (accepted, queued)
    assert metric_sum(s, "otelcol_exporter_sent_spans", exporter="otlp_grpc") == 0
    assert metric_sum(s, "otelcol_exporter_send_failed_spans", exporter="otlp_grpc") == 0


def test_retry_after_turns_refusals_into_429_with_a_delay(weft, ports):
    g, h = ports(2)
    w = weft({
        "receivers": {"otlp": otlp_receiver(grpc_port=g, http_port=h)},
        # No process fits in 1 MiB: every request is refused.
        "processors": {"memory_limiter": {"check_interval": "50ms", "limit_mib": 1,
                                          "retry_after": "2500ms"}},
        "exporters": {"nop": {}},
        "service": {"pipelines": {"traces": {
            "receivers": ["otlp"], "processors": ["memory_limiter"], "exporters": ["nop"]}}},
    })
    body = make_trace_request([1, 2]).SerializeToString()
    url = f"http://127.0.0.1:{h}/v1/traces"
    assert wait_until(lambda: requests.post(url, data=body, timeout=5, headers={
        "Content-Type": "application/x-protobuf"}).status_code == 429, 10)
    r = requests.post(url, data=body, headers={"Content-Type": "application/x-protobuf"},
                      timeout=5)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    with OtlpGrpcClient(f"127.0.0.1:{g}") as c:
        code, details = c.export(make_trace_request([3]))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details == "data refused due to high memory usage"
    s = w.metrics()
    assert metric_sum(s, "otelcol_receiver_accepted_spans", receiver="otlp") == 0
    assert metric_sum(s, "otelcol_receiver_refused_spans", receiver="otlp") == metric_sum(
        s, "otelcol_processor_refused_spans", processor="memory_limiter")


@pytest.mark.skipif(bool(ebpf_unavailable()), reason=ebpf_unavailable() or "")
def test_ebpf_spans_the_pipeline_refuses_are_counted(weft, tmp_path):
    import http.server

    srv_port = free_port()

    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", srv_port), Quiet)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        w = weft({
            "receivers": {"ebpf": {"include": {"ports": [srv_port]}}},
            "processors": {"memory_limiter": {"check_interval": "50ms", "limit_mib": 1}},
            "exporters": {"file": {"path": str(tmp_path / "out.jsonl")}},
            "service": {"pipelines": {"traces": {
                "receivers": ["ebpf"], "processors": ["memory_limiter"],
                "exporters": ["file"]}}},
        })
        assert wait_until(lambda: w.health_status() == 200, 30), w.log_tail()
        time.sleep(0.3)  # the limiter's first sample
        n = 200
        with requests.Session() as s:
            for i in range(n):
                assert s.get(f"http://127.0.0.1:{srv_port}/r{i}", timeout=5).status_code == 200

        def counts():
            m = w.metrics()
            return (metric_sum(m, "weft_ebpf_spans_built"),
                    metric_sum(m, "otelcol_receiver_accepted_spans", receiver="ebpf"),
                    metric_sum(m, "otelcol_receiver_refused_spans", receiver="ebpf"),
                    metric_sum(m, "weft_ebpf_spans_dropped"))

        # One CLIENT and one SERVER span per request, all refused and counted.
        assert wait_until(lambda: counts() == (2 * n, 0, 2 * n, 0), 20), counts()
    finally:
        server.shutdown()
        server.server_close()
