"""An OTLP/gRPC destination built on the opentelemetry-proto generated servicers.

It records every Export request of the three signals, and can answer a chosen gRPC
status for the next N requests or go down and come back on the same port, so tests
can drive an exporter's retry and queue.

In-process use (what the tests do):

    sink = OtlpGrpcSink(port).start()
    ...
    sink.wait_for_spans(10)
    sink.stop()

Standalone: python otlp_grpc_sink.py --port 4317 [--fail-first 3]; on SIGTERM or
SIGINT it prints a JSON summary (request and item counts, span ids) on stdout.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from otlp_support import flatten_logs, flatten_metrics, flatten_spans  # noqa: E402


class OtlpGrpcSink:
    """A gRPC server answering TraceService, MetricsService and LogsService."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.host = host
        self.port = port
        self._lock = threading.Condition()
        self._server: grpc.Server | None = None
        self._fail_remaining = 0
        self._fail_code = grpc.StatusCode.UNAVAILABLE
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.logs: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.failed_requests = 0
        # (monotonic time, status code name) of every Export call, in arrival order
        self.attempts: list[tuple[float, str]] = []

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "OtlpGrpcSink":
        if self._server is not None:
            return self
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            # A restarted sink must own its port alone; never share it with a stale one.
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(self), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(self), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(self), server)
        bound = server.add_insecure_port(self.endpoint)
        if bound != self.port:
            raise RuntimeError(f"otlp grpc sink could not bind {self.endpoint}")
        server.start()
        self._server = server
        return self

    def stop(self, grace: float | None = None) -> None:
        """Stop listening; recorded data stays. start() brings it back on the same port."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait()

    @property
    def running(self) -> bool:
        return self._server is not None

    # -- behaviour ---------------------------------------------------------

    def fail_next(self, n: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        """Answer `code` to the next `n` Export calls (any signal)."""
        with self._lock:
            self._fail_remaining = n
            self._fail_code = code

    def _record(self, kind: str, request, context) -> bool:
        with self._lock:
            if self._fail_remaining > 0:
                self._fail_remaining -= 1
                self.failed_requests += 1
                code = self._fail_code
                self.attempts.append((time.monotonic(), code.name))
            else:
                code = None
                self.attempts.append((time.monotonic(), "OK"))
                getattr(self, kind).append(request)
                self.metadata.append(dict(context.invocation_metadata()))
                self._lock.notify_all()
        if code is not None:
            context.abort(code, "otlp grpc sink told to refuse this request")
        return True

    # -- reading -----------------------------------------------------------

    def spans(self):
        with self._lock:
            return flatten_spans(list(self.traces))

    def metric_rows(self):
        with self._lock:
            return flatten_metrics(list(self.metrics))

    def log_rows(self):
        with self._lock:
            return flatten_logs(list(self.logs))

    def span_count(self) -> int:
        return len(self.spans())

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.2))
        return True

    def wait_for_spans(self, n: int, timeout: float = 20.0) -> bool:
        return self.wait_for(lambda: len(flatten_spans(self.traces)) >= n, timeout)

    def wait_for_metrics(self, n: int, timeout: float = 20.0) -> bool:
        return self.wait_for(lambda: len(flatten_metrics(self.metrics)) >= n, timeout)

    def wait_for_logs(self, n: int, timeout: float = 20.0) -> bool:
        return self.wait_for(lambda: len(flatten_logs(self.logs)) >= n, timeout)


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: OtlpGrpcSink):
        self.sink = sink

    def Export(self, request, context):
        self.sink._record("traces", request, context)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, sink: OtlpGrpcSink):
        self.sink = sink

    def Export(self, request, context):
        self.sink._record("metrics", request, context)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink: OtlpGrpcSink):
        self.sink = sink

    def Export(self, request, context):
        self.sink._record("logs", request, context)
        return logs_service_pb2.ExportLogsServiceResponse()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--fail-first", type=int, default=0, help="answer UNAVAILABLE N times")
    args = ap.parse_args()
    sink = OtlpGrpcSink(args.port, args.host)
    sink.fail_next(args.fail_first)
    sink.start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(json.dumps({"listening": sink.endpoint}), flush=True)
    while not done.wait(0.2):
        pass
    sink.stop(grace=1)
    spans = sink.spans()
    print(
        json.dumps(
            {
                "trace_requests": len(sink.traces),
                "metric_requests": len(sink.metrics),
                "log_requests": len(sink.logs),
                "failed_requests": sink.failed_requests,
                "spans": [{"trace_id": r.key[0], "span_id": r.key[1]} for r in spans],
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
