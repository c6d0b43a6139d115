"""An OTLP/HTTP destination: http.server in a thread that decodes
`application/x-protobuf` and `application/json` (OTLP/JSON, hex ids) bodies, gzip,
deflate or zstd (when the zstandard module is present) encoded, into the
opentelemetry-proto request types, and answers in the request's content type.

It can answer a chosen HTTP status (with Retry-After) for the next N requests.

    sink = OtlpHttpSink(port).start()
    ... weft exporter endpoint: sink.base_url ...
    sink.stop()
"""

from __future__ import annotations

import gzip
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from otlp_support import (  # noqa: E402
    flatten_logs,
    flatten_metrics,
    flatten_spans,
    parse_otlp_json,
    to_otlp_json,
)

try:  # optional: only needed when an exporter is configured with zstd
    import zstandard  # type: ignore
except ImportError:  # pragma: no cover
    zstandard = None

SIGNALS = {
    "/v1/traces": (
        "traces",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (
        "logs",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}


@dataclass
class Received:
    path: str
    content_type: str
    content_encoding: str
    headers: dict
    message: object


class OtlpHttpSink:
    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.host = host
        self.port = port
        self._lock = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._fail_remaining = 0
        self._fail_status = 503
        self._fail_retry_after: str | None = None
        self.received: list[Received] = []
        self.rejected: list[tuple[str, int, str]] = []  # (path, status, why)
        self.failed_requests = 0
        # path -> (signal, request type, response type); add_path() adds more
        self.paths = dict(SIGNALS)
        # (monotonic time, status answered) of every POST, in arrival order
        self.attempts: list[tuple[float, int]] = []

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "OtlpHttpSink":
        sink = self

        class Handler(_Handler):
            pass

        Handler.sink = sink
        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def fail_next(self, n: int, status: int = 503, retry_after: str | None = None) -> None:
        with self._lock:
            self._fail_remaining = n
            self._fail_status = status
            self._fail_retry_after = retry_after

    def add_path(self, path: str, kind: str) -> None:
        """Also accept `kind` ("traces", "metrics", "logs") at `path`."""
        self.paths[path] = next(v for v in SIGNALS.values() if v[0] == kind)

    def _of(self, kind: str):
        return [r.message for r in self.received if self.paths[r.path][0] == kind]

    def spans(self):
        with self._lock:
            return flatten_spans(self._of("traces"))

    def metric_rows(self):
        with self._lock:
            return flatten_metrics(self._of("metrics"))

    def log_rows(self):
        with self._lock:
            return flatten_logs(self._of("logs"))

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
        return self.wait_for(lambda: len(flatten_spans(self._of("traces"))) >= n, timeout)

    def wait_for_metrics(self, n: int, timeout: float = 20.0) -> bool:
        return self.wait_for(lambda: len(flatten_metrics(self._of("metrics"))) >= n, timeout)

    def wait_for_logs(self, n: int, timeout: float = 20.0) -> bool:
        return self.wait_for(lambda: len(flatten_logs(self._of("logs"))) >= n, timeout)


def _decode_body(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "zstd" and zstandard is not None:
        return zstandard.ZstdDecompressor().decompress(body, max_output_size=256 << 20)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class _Handler(BaseHTTPRequestHandler):
    sink: OtlpHttpSink
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _reply(self, status: int, body: bytes, content_type: str, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        sink = self.sink
        body = self._read_body()
        path = self.path.split("?")[0]
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        cenc = self.headers.get("Content-Encoding", "")
        if path not in sink.paths:
            sink.rejected.append((path, 404, "unknown path"))
            return self._reply(404, b"not found", "text/plain")
        _, req_cls, resp_cls = sink.paths[path]
        with sink._lock:
            if sink._fail_remaining > 0:
                sink._fail_remaining -= 1
                sink.failed_requests += 1
                sink.attempts.append((time.monotonic(), sink._fail_status))
                extra = {}
                if sink._fail_retry_after is not None:
                    extra["Retry-After"] = sink._fail_retry_after
                return self._reply(sink._fail_status, b"refused", "text/plain", extra)
        try:
            raw = _decode_body(body, cenc)
            if ctype == "application/x-protobuf":
                msg = req_cls.FromString(raw)
            elif ctype == "application/json":
                msg = parse_otlp_json(raw, req_cls)
            else:
                sink.rejected.append((path, 415, ctype))
                return self._reply(415, b"unsupported content type", "text/plain")
        except (ValueError, OSError, DecodeError, EOFError) as e:
            sink.rejected.append((path, 400, repr(e)))
            return self._reply(400, repr(e).encode(), "text/plain")
        with sink._lock:
            sink.attempts.append((time.monotonic(), 200))
            sink.received.append(Received(path, ctype, cenc, dict(self.headers), msg))
            sink._lock.notify_all()
        if ctype == "application/json":
            return self._reply(200, to_otlp_json(resp_cls()).encode(), "application/json")
        return self._reply(200, resp_cls().SerializeToString(), "application/x-protobuf")
