"""An app instrumented with the OpenTelemetry Python SDK that sends one known span
tree with the SDK's own OTLP exporter, then prints what it sent.

    python otel_app.py grpc 127.0.0.1:4317
    python otel_app.py http http://127.0.0.1:4318/v1/traces [gzip]
    python otel_app.py encode        (build the tree, send nothing, print it)

The tree: a SERVER root with a CLIENT child (status ERROR with a message, an event)
and an INTERNAL child (a link to a span of another trace). Attributes of every OTLP
type are set on spans, the event, the link and the resource.

stdout, one JSON object, after the exporter answered:
  {"result": "SUCCESS"|"FAILURE",
   "trace_id": hex, "spans": [{"name", "span_id", "parent_span_id", "kind"}...],
   "request": base64 of the ExportTraceServiceRequest the SDK encodes for these spans}
Exit status 0 when the export succeeded, 1 otherwise.
"""

from __future__ import annotations

import base64
import json
import sys

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

LINKED_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
LINKED_SPAN_ID = 0xB7AD6B7169203331


def make_exporter(transport: str, endpoint: str, compression: str | None):
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from grpc import Compression

        comp = Compression.Gzip if compression == "gzip" else Compression.NoCompression
        return OTLPSpanExporter(endpoint=endpoint, insecure=True, compression=comp, timeout=10)
    if transport == "http":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        comp = Compression.Gzip if compression == "gzip" else Compression.NoCompression
        return OTLPSpanExporter(endpoint=endpoint, compression=comp, timeout=10)
    raise SystemExit(f"unknown transport {transport!r}: use grpc or http")


def build_spans():
    memory = InMemorySpanExporter()
    resource = Resource.create(
        {
            "service.name": "checkout",
            "service.version": "2.3.1",
            "deployment.environment": "e2e",
            "host.cpu_count": 2,
            "app.ratio": 0.25,
            "app.canary": False,
            "app.regions": ["eu-west-1", "us-east-2"],
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("weft.e2e.app", "0.4.2")

    link_ctx = SpanContext(
        trace_id=LINKED_TRACE_ID,
        span_id=LINKED_SPAN_ID,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    with tracer.start_as_current_span(
        "GET /checkout",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "http.response.status_code": 200,
            "http.route": "/checkout",
            "server.duration_ratio": 0.875,
            "user.is_admin": True,
            "tags": ["a", "b", "c"],
            "retry.delays_ms": [10, 20, 40],
            "weights": [0.5, 1.5],
            "flags": [True, False, True],
        },
    ):
        with tracer.start_as_current_span(
            "SELECT orders",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",
                "db.query.text": "SELECT * FROM orders WHERE id = $1",
                "server.port": 5432,
                "db.rows": -1,
            },
        ) as client:
            client.add_event(
                "retry",
                attributes={"attempt": 2, "backoff_s": 0.125, "final": True, "cause": "timeout"},
            )
            client.set_status(Status(StatusCode.ERROR, "deadline exceeded after 2 attempts"))
        with tracer.start_as_current_span(
            "render invoice",
            kind=SpanKind.INTERNAL,
            links=[Link(link_ctx, attributes={"link.reason": "batch", "link.index": 7})],
        ) as internal:
            internal.set_attribute("template", "invoice.html")
            internal.set_attribute("bytes", 18342)
            internal.set_status(Status(StatusCode.OK))
    provider.force_flush()
    spans = memory.get_finished_spans()
    provider.shutdown()
    return spans


def main(argv: list[str]) -> int:
    if len(argv) < 2 or (argv[1] != "encode" and len(argv) < 3):
        raise SystemExit(__doc__)
    spans = build_spans()
    if argv[1] == "encode":
        result = SpanExportResult.SUCCESS
    else:
        transport, endpoint = argv[1], argv[2]
        compression = argv[3] if len(argv) > 3 else None
        exporter = make_exporter(transport, endpoint, compression)
        result = exporter.export(spans)
        exporter.shutdown()
    request = encode_spans(spans)
    out = {
        "result": "SUCCESS" if result == SpanExportResult.SUCCESS else "FAILURE",
        "trace_id": format(spans[0].context.trace_id, "032x"),
        "spans": [
            {
                "name": s.name,
                "span_id": format(s.context.span_id, "016x"),
                "parent_span_id": format(s.parent.span_id, "016x") if s.parent else "",
                "kind": s.kind.name,
            }
            for s in spans
        ],
        "request": base64.b64encode(request.SerializeToString()).decode(),
    }
    print(json.dumps(out), flush=True)
    return 0 if result == SpanExportResult.SUCCESS else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
