"""Sends two known traces with the OpenTelemetry Python SDK's OTLP/gRPC exporter,
one TracerProvider per service (as three processes would):

- "GET /checkout" (frontend, SERVER) -> "POST /orders" (backend, SERVER) ->
  "INSERT orders" (db, CLIENT, db.system=postgresql): three levels, ~10 ms apart;
- "GET /fail" (frontend, SERVER, status ERROR "payment declined"): one span.

    python three_tier_app.py 127.0.0.1:4317

stdout, one JSON object once every exporter answered:
  {"result": "SUCCESS"|"FAILURE", "tree": {"trace_id", "spans": [{"name", "service",
   "span_id", "parent_span_id"}...]}, "error_trace_id": hex}
"""

from __future__ import annotations

import json
import sys
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode


class Recording(SpanExporter):
    """Wraps the OTLP exporter and remembers whether every export succeeded."""

    def __init__(self, inner: SpanExporter):
        self.inner = inner
        self.ok = True

    def export(self, spans):
        r = self.inner.export(spans)
        self.ok = self.ok and r == SpanExportResult.SUCCESS
        return r

    def shutdown(self):
        self.inner.shutdown()


def main() -> int:
    endpoint = sys.argv[1]
    exporters = []

    def provider(service: str) -> TracerProvider:
        exp = Recording(OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=10))
        exporters.append(exp)
        p = TracerProvider(resource=Resource.create({"service.name": service}))
        p.add_span_processor(SimpleSpanProcessor(exp))
        return p

    fe, be, db = provider("frontend"), provider("backend"), provider("db")
    hex_id = lambda n, w: format(n, f"0{w}x")  # noqa: E731
    with fe.get_tracer("e2e").start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as a:
        time.sleep(0.01)
        with be.get_tracer("e2e").start_as_current_span("POST /orders", kind=SpanKind.SERVER) as b:
            time.sleep(0.01)
            with db.get_tracer("e2e").start_as_current_span("INSERT orders", kind=SpanKind.CLIENT) as c:
                c.set_attribute("db.system", "postgresql")
                time.sleep(0.005)
            time.sleep(0.005)
    with fe.get_tracer("e2e").start_as_current_span(
        "GET /fail", kind=SpanKind.SERVER, context=trace.set_span_in_context(trace.INVALID_SPAN)
    ) as f:
        f.set_status(Status(StatusCode.ERROR, "payment declined"))
    for p in (fe, be, db):
        p.shutdown()
    spans = []
    for span, service in ((a, "frontend"), (b, "backend"), (c, "db")):
        ctx = span.get_span_context()
        parent = span.parent
        spans.append({
            "name": span.name,
            "service": service,
            "span_id": hex_id(ctx.span_id, 16),
            "parent_span_id": hex_id(parent.span_id, 16) if parent else "",
        })
    print(json.dumps({
        "result": "SUCCESS" if all(e.ok for e in exporters) else "FAILURE",
        "tree": {"trace_id": hex_id(a.get_span_context().trace_id, 32), "spans": spans},
        "error_trace_id": hex_id(f.get_span_context().trace_id, 32),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
