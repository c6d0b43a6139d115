"""A service that calls Redis and PostgreSQL inside its HTTP handler, for the
database autotracing test (test_ebpf_db.py).

    python db_service.py HTTP_PORT REDIS_PORT POSTGRES_PORT OTLP_ENDPOINT

One thread serves one request at a time over connections opened at start (as a pool
would hold them), so every database call of a request is made on the handler's thread:
- GET /orders/<n>: Redis `GET cart:<n>`, then PostgreSQL `SELECT <n> + 1`; no SDK.
- GET /sdk/<n>: inside an OpenTelemetry SDK server span (exported over OTLP/gRPC as it
  ends), a PostgreSQL query carrying the span's `traceparent` in a sqlcommenter comment;
  answers {"trace_id", "span_id"} of that SDK span, in hex.

Prints "ready" once listening; serves until terminated.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import psycopg
import redis
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind


def main() -> None:
    http_port, redis_port, pg_port = (int(a) for a in sys.argv[1:4])
    otlp = sys.argv[4]
    cache = redis.Redis(host="127.0.0.1", port=redis_port, protocol=2, lib_name=None, lib_version=None)
    cache.ping()
    db = psycopg.connect(host="127.0.0.1", port=pg_port, user="postgres", dbname="postgres",
                         sslmode="disable", autocommit=True)
    provider = TracerProvider(resource=Resource.create({"service.name": "db-service",
                                                        "process.pid": os.getpid()}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=otlp, insecure=True)))
    tracer = provider.get_tracer("db_service")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 - http.server's name
            parts = self.path.strip("/").split("/")
            n = int(parts[1])
            if parts[0] == "orders":
                cache.get(f"cart:{n}")
                (value,) = db.execute("SELECT %s::int + 1", (n,)).fetchone()
                body = {"value": value}
            else:
                with tracer.start_as_current_span(f"GET /sdk/{n}", kind=SpanKind.SERVER) as span:
                    ctx = span.get_span_context()
                    tp = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"
                    db.execute(f"SELECT {n} /*traceparent='{tp}'*/").fetchone()
                body = {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", http_port), Handler)
    print("ready", flush=True)
    try:
        server.serve_forever()
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()
