"""The OpenTelemetry service in the middle of the cross-tracer chain: an HTTP server
instrumented with the OpenTelemetry Python SDK that serves N requests, each by
calling the next service over HTTP, and exports its spans over OTLP/gRPC.

    python otel_chain.py PORT N OTLP_ENDPOINT NEXT_URL EXTRACT INJECT

EXTRACT and INJECT name the header format read from the caller and written to the
next service: `tracecontext` (the SDK's W3C propagator) or `datadog`.

The SDK has no Datadog propagator (the one that existed left with the deprecated
Datadog exporter), so `datadog` is DatadogFormat below, written from Datadog's header
description rather than taken from weft, so that weft is never checked against
itself. It reads `x-datadog-trace-id` / `x-datadog-parent-id` (decimal),
`x-datadog-sampling-priority` and the `_dd.p.tid` member of `x-datadog-tags` (the upper
64 bits). It writes only what a 64-bit Datadog hop carries: the low 64 bits of the
trace id in decimal, the span id, the sampling priority, and no `x-datadog-tags`,
so the next service cannot know the upper 64 bits.

Per request, service "chain-b":
  GET /b  (SERVER, a child of the extracted context)
  └── GET /c  (CLIENT): GET NEXT_URL with the injected headers
Each span is exported as it ends (SimpleSpanProcessor), so B's spans reach the OTLP
endpoint after the next service's answer and before B answers its caller.

stdout, one JSON object, after the provider shut down:
  {"service", "result": "SUCCESS"|"FAILURE" (every export),
   "requests": [{"trace_id": 32 hex, "received": headers, "sent": headers,
     "extracted": {"trace_id", "span_id"}, "status": HTTP status of the call,
     "spans": [{"name", "span_id": 16 hex, "parent_span_id": 16 hex or ""}]}]}
Exit status 0 when N requests were served and every export succeeded.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

LOW64 = (1 << 64) - 1
IDLE_TIMEOUT = 60.0


class DatadogFormat(TextMapPropagator):
    """x-datadog-* headers; injects the low 64 bits only (see the module doc)."""

    TRACE_ID = "x-datadog-trace-id"
    PARENT_ID = "x-datadog-parent-id"
    PRIORITY = "x-datadog-sampling-priority"
    TAGS = "x-datadog-tags"

    @staticmethod
    def _first(getter: Getter, carrier: CarrierT, key: str) -> str | None:
        values = getter.get(carrier, key)
        return values[0].strip() if values else None

    @staticmethod
    def _decimal_id(text: str | None) -> int:
        if not text or not text.isdigit():
            return 0
        value = int(text)
        return value if 0 < value <= LOW64 else 0

    def extract(self, carrier: CarrierT, context: Context | None = None,
                getter: Getter = default_getter) -> Context:
        if context is None:
            context = Context()
        low = self._decimal_id(self._first(getter, carrier, self.TRACE_ID))
        parent = self._decimal_id(self._first(getter, carrier, self.PARENT_ID))
        if not low or not parent:
            return context
        high = 0
        for member in (self._first(getter, carrier, self.TAGS) or "").split(","):
            key, _, value = member.partition("=")
            if key.strip() == "_dd.p.tid":
                value = value.strip()
                if len(value) == 16 and all(c in "0123456789abcdef" for c in value):
                    high = int(value, 16)
        priority = self._first(getter, carrier, self.PRIORITY)
        sampled = priority is not None and priority.lstrip("-").isdigit() and int(priority) > 0
        span_context = SpanContext(
            trace_id=(high << 64) | low,
            span_id=parent,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        )
        return trace.set_span_in_context(NonRecordingSpan(span_context), context)

    def inject(self, carrier: CarrierT, context: Context | None = None,
               setter: Setter = default_setter) -> None:
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return
        setter.set(carrier, self.TRACE_ID, str(span_context.trace_id & LOW64))
        setter.set(carrier, self.PARENT_ID, str(span_context.span_id))
        setter.set(carrier, self.PRIORITY, "1" if span_context.trace_flags.sampled else "0")

    @property
    def fields(self) -> set[str]:
        return {self.TRACE_ID, self.PARENT_ID, self.PRIORITY, self.TAGS}


PROPAGATORS = {"tracecontext": TraceContextTextMapPropagator, "datadog": DatadogFormat}


class RecordingExporter(OTLPSpanExporter):
    """The SDK's OTLP/gRPC exporter, remembering whether every export succeeded."""

    failures = 0

    def export(self, spans):
        result = super().export(spans)
        if result != SpanExportResult.SUCCESS:
            RecordingExporter.failures += 1
        return result


def span_json(span) -> dict:
    ctx = span.get_span_context()
    return {
        "name": span.name,
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else "",
    }


def main() -> int:
    if len(sys.argv) != 7 or sys.argv[5] not in PROPAGATORS or sys.argv[6] not in PROPAGATORS:
        raise SystemExit(__doc__)
    port, n, endpoint, next_url = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    extractor, injector = PROPAGATORS[sys.argv[5]](), PROPAGATORS[sys.argv[6]]()

    provider = TracerProvider(resource=Resource.create({"service.name": "chain-b"}))
    provider.add_span_processor(
        SimpleSpanProcessor(RecordingExporter(endpoint=endpoint, insecure=True, timeout=10))
    )
    tracer = provider.get_tracer("weft.e2e.chain", "1.0.0")
    out = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            received = {k.lower(): v for k, v in self.headers.items()}
            parent = extractor.extract(received)
            parent_ctx = trace.get_current_span(parent).get_span_context()
            with tracer.start_as_current_span(
                "GET /b", context=parent, kind=SpanKind.SERVER
            ) as server:
                server.set_attribute("http.request.method", "GET")
                with tracer.start_as_current_span("GET /c", kind=SpanKind.CLIENT) as client:
                    client.set_attribute("http.request.method", "GET")
                    sent: dict[str, str] = {}
                    injector.inject(sent)
                    req = urllib.request.Request(next_url, headers=sent)
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        status = resp.status
                        resp.read()
                    client.set_attribute("http.response.status_code", status)
                server.set_attribute("http.response.status_code", 200)
            body = b'{"served": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            out.append(
                {
                    "trace_id": format(server.get_span_context().trace_id, "032x"),
                    "received": received,
                    "sent": sent,
                    "extracted": {
                        "trace_id": format(parent_ctx.trace_id, "032x"),
                        "span_id": format(parent_ctx.span_id, "016x"),
                    },
                    "status": status,
                    "spans": [span_json(server), span_json(client)],
                }
            )

    server = HTTPServer(("127.0.0.1", port), Handler)
    server.timeout = 1.0
    deadline = time.monotonic() + IDLE_TIMEOUT
    while len(out) < n and time.monotonic() < deadline:
        before = len(out)
        server.handle_request()
        if len(out) > before:
            deadline = time.monotonic() + IDLE_TIMEOUT
    server.server_close()
    provider.shutdown()
    ok = len(out) == n and RecordingExporter.failures == 0
    result = "SUCCESS" if ok else "FAILURE"
    print(json.dumps({"service": "chain-b", "result": result, "requests": out}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
