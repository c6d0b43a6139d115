"""One service of the autotracing topologies: an HTTP/1.1 server that, for every
request, calls each downstream service in turn with the same path and answers 200
once they all answered. Keep-alive everywhere: the server keeps client connections
open, and each handler thread keeps one persistent connection per downstream.

    python chain_service.py --port P [--call HOST:PORT ...] [options]

Options:
  --forward-request-id   pass the X-Request-ID received on to the downstream calls
  --forward-trace-headers  pass trace-context headers received on unchanged
  --sdk none|otel|ddtrace  instrument by hand with that SDK (default none): a SERVER
      span per request (continuing the extracted context) and a CLIENT span per
      downstream call, whose context is injected into the call's headers. Server
      spans carry process.pid and thread.id. otel exports OTLP/gRPC to
      --otlp-endpoint; ddtrace sends to DD_TRACE_AGENT_URL.
  --handoff N            accept and read each request on the server thread, then
      serve it (downstream calls and the answer) on a pool of N worker threads
      (concurrent.futures), as thread-pool servers do
  --sleep-after-calls S  wait S seconds after the downstream calls, before answering
  --close-on PREFIX      requests whose path starts with PREFIX get no answer: the
      connection is shut down instead

Prints one line `ready <pid>` once listening. Runs until SIGTERM; with an SDK it
flushes its spans first. Paths: anything; `/` answers without downstream calls.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TRACE_HEADERS = (
    "traceparent",
    "tracestate",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "x-datadog-tags",
    "x-datadog-origin",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "uber-trace-id",
)


class Sdk:
    """No instrumentation."""

    def server(self, handler, headers: dict):
        return None

    def client(self, parent, path: str, headers: dict):
        return None

    def end(self, span, status: int | None = None) -> None:
        pass

    def shutdown(self) -> None:
        pass


class OtelSdk(Sdk):
    def __init__(self, name: str, endpoint: str):
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = TracerProvider(
            resource=Resource.create({"service.name": name, "process.pid": os.getpid()})
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=endpoint, insecure=True), schedule_delay_millis=200
            )
        )
        self.tracer = self.provider.get_tracer("chain_service")
        self.prop = TraceContextTextMapPropagator()
        self.trace = trace

    def server(self, handler, headers: dict):
        from opentelemetry.trace import SpanKind

        ctx = self.prop.extract({k.lower(): v for k, v in headers.items()})
        span = self.tracer.start_span(
            f"GET {handler.path}",
            context=ctx,
            kind=SpanKind.SERVER,
            attributes={
                "url.path": handler.path,
                "http.request.method": "GET",
                "thread.id": threading.get_native_id(),
            },
        )
        return span

    def client(self, parent, path: str, headers: dict):
        from opentelemetry.trace import SpanKind

        ctx = self.trace.set_span_in_context(parent) if parent is not None else None
        span = self.tracer.start_span(
            f"GET {path}", context=ctx, kind=SpanKind.CLIENT,
            attributes={"url.path": path, "http.request.method": "GET"},
        )
        self.prop.inject(headers, context=self.trace.set_span_in_context(span))
        return span

    def end(self, span, status: int | None = None) -> None:
        if span is not None:
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            span.end()

    def shutdown(self) -> None:
        self.provider.shutdown()


class DdSdk(Sdk):
    def __init__(self, name: str):
        os.environ.setdefault("DD_SERVICE", name)
        for k in ("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "DD_REMOTE_CONFIGURATION_ENABLED",
                  "DD_TRACE_STARTUP_LOGS", "DD_TRACE_STATS_COMPUTATION_ENABLED",
                  "DD_CRASHTRACKING_ENABLED"):
            os.environ.setdefault(k, "false")
        from ddtrace.propagation.http import HTTPPropagator
        from ddtrace.trace import tracer

        self.tracer = tracer
        self.prop = HTTPPropagator

    def server(self, handler, headers: dict):
        ctx = self.prop.extract({k.lower(): v for k, v in headers.items()})
        span = self.tracer.start_span(
            "web.request", child_of=ctx, activate=False, span_type="web",
            resource=f"GET {handler.path}",
        )
        span.set_tag("span.kind", "server")
        span.set_tag("url.path", handler.path)
        span.set_tag("thread.id", str(threading.get_native_id()))
        span.set_metric("process_id", os.getpid())
        return span

    def client(self, parent, path: str, headers: dict):
        span = self.tracer.start_span(
            "http.request", child_of=parent, activate=False, span_type="http",
            resource=f"GET {path}",
        )
        span.set_tag("span.kind", "client")
        span.set_tag("url.path", path)
        # Injecting the span (not its context) lets the tracer decide sampling first.
        self.prop.inject(span, headers)
        return span

    def end(self, span, status: int | None = None) -> None:
        if span is not None:
            if status is not None:
                span.set_tag("http.status_code", str(status))
            span.finish()

    def shutdown(self) -> None:
        self.tracer.flush()
        self.tracer.shutdown(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="chain")
    ap.add_argument("--call", action="append", default=[])
    ap.add_argument("--forward-request-id", action="store_true")
    ap.add_argument("--forward-trace-headers", action="store_true")
    ap.add_argument("--sdk", choices=["none", "otel", "ddtrace"], default="none")
    ap.add_argument("--otlp-endpoint", default="")
    ap.add_argument("--handoff", type=int, default=0)
    ap.add_argument("--sleep-after-calls", type=float, default=0.0)
    ap.add_argument("--close-on", default="")
    args = ap.parse_args()

    if args.sdk == "otel":
        sdk: Sdk = OtelSdk(args.name, args.otlp_endpoint)
    elif args.sdk == "ddtrace":
        sdk = DdSdk(args.name)
    else:
        sdk = Sdk()

    local = threading.local()

    def conn(target: str) -> http.client.HTTPConnection:
        pool = getattr(local, "pool", None)
        if pool is None:
            pool = local.pool = {}
        c = pool.get(target)
        if c is None:
            host, port = target.rsplit(":", 1)
            c = pool[target] = http.client.HTTPConnection(host, int(port), timeout=30)
        return c

    def call(target: str, path: str, headers: dict) -> int:
        for attempt in (0, 1):
            c = conn(target)
            try:
                c.request("GET", path, headers=headers)
                r = c.getresponse()
                r.read()
                return r.status
            except (http.client.HTTPException, OSError):
                c.close()
                local.pool.pop(target, None)
                if attempt:
                    return 502
        return 502

    def serve(handler: BaseHTTPRequestHandler) -> None:
        incoming = dict(handler.headers.items())
        span = sdk.server(handler, incoming)
        status = 200
        if handler.path != "/":
            for target in args.call:
                headers = {}
                if args.forward_request_id and "X-Request-ID" in handler.headers:
                    headers["X-Request-ID"] = handler.headers["X-Request-ID"]
                if args.forward_trace_headers:
                    for k, v in incoming.items():
                        if k.lower() in TRACE_HEADERS:
                            headers[k] = v
                cspan = sdk.client(span, handler.path, headers)
                got = call(target, handler.path, headers)
                sdk.end(cspan, got)
                if got != 200:
                    status = 502
        if args.sleep_after_calls:
            time.sleep(args.sleep_after_calls)
        body = f"{args.name} {handler.path}\n".encode()
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()
        sdk.end(span, status)

    pool = ThreadPoolExecutor(args.handoff) if args.handoff else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802
            if args.close_on and self.path.startswith(args.close_on):
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if pool is not None:
                pool.submit(serve, self).result()
            else:
                serve(self)

        def log_message(self, *a):
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    if pool is not None:
        # Hand-off: one thread accepts and reads every request of every connection
        # (selectors over the connections), the pool serves them.
        run_handoff(args, serve, pool)
        return

    srv = Server((args.host, args.port), Handler)

    def stop(*_):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"ready {os.getpid()}", flush=True)
    srv.serve_forever(poll_interval=0.1)
    sdk.shutdown()


def run_handoff(args, serve, pool: ThreadPoolExecutor) -> None:
    """A single thread accepts connections and reads each request head; the request
    is then served on a pool thread, which writes the answer. The reading thread
    waits for nothing: it goes on reading other connections' requests meanwhile."""
    import io
    import selectors

    from http.client import parse_headers

    sel = selectors.DefaultSelector()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((args.host, args.port))
    lsock.listen(128)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, None)
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    buffers: dict[socket.socket, bytes] = {}
    busy: set[socket.socket] = set()
    lock = threading.Lock()

    class Req:
        """What `serve` needs of a request handler."""

        def __init__(self, sock, path, headers):
            self.path = path
            self.headers = headers
            self.sock = sock
            self.wfile = self
            self._status = 200
            self._hdrs: list[tuple[str, str]] = []

        def send_response(self, status):
            self._status = status

        def send_header(self, k, v):
            self._hdrs.append((k, v))

        def end_headers(self):
            head = f"HTTP/1.1 {self._status} OK\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in self._hdrs
            ) + "\r\n"
            self._head = head.encode()

        def write(self, body):
            self.sock.sendall(self._head + body)

        def flush(self):
            pass

    def done(sock):
        with lock:
            busy.discard(sock)

    print(f"ready {os.getpid()}", flush=True)
    while running:
        for key, _ in sel.select(timeout=0.1):
            if key.fileobj is lsock:
                try:
                    c, _ = lsock.accept()
                except OSError:
                    continue
                c.setblocking(True)
                sel.register(c, selectors.EVENT_READ, None)
                buffers[c] = b""
                continue
            c = key.fileobj
            with lock:
                if c in busy:
                    continue
            try:
                data = c.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(c)
                buffers.pop(c, None)
                c.close()
                continue
            buf = buffers[c] + data
            if b"\r\n\r\n" not in buf:
                buffers[c] = buf
                continue
            head, _, rest = buf.partition(b"\r\n\r\n")
            buffers[c] = rest
            line, _, hdr = head.partition(b"\r\n")
            path = line.split(b" ")[1].decode()
            headers = parse_headers(io.BytesIO(hdr + b"\r\n\r\n"))
            with lock:
                busy.add(c)
            fut = pool.submit(serve, Req(c, path, headers))
            fut.add_done_callback(lambda _f, c=c: done(c))
    pool.shutdown(wait=True)


if __name__ == "__main__":
    sys.exit(main())
