"""An app instrumented with the OpenTelemetry Python SDK 1.21 that sends one known
span tree with the SDK's own Jaeger exporters, then prints what it sent. It runs
under the Jaeger venv (.venv-jaeger: the Jaeger exporters need SDK 1.21 and an old
protobuf), never under the main one.

    python jaeger_app.py thrift-http http://127.0.0.1:14268/api/traces
    python jaeger_app.py thrift-udp 127.0.0.1 6831        (agent, compact Thrift)
    python jaeger_app.py grpc 127.0.0.1:14250              (api_v2 CollectorService)

The tree: a SERVER root with a CLIENT child (status ERROR with a description, an
event) and an INTERNAL child (status OK, a link to a span of another trace).

stdout, one JSON object:
  {"service": str, "resource": {key: typed}, "scope": [name, version],
   "spans": [{"trace_id", "span_id", "parent_span_id" (hex, "" for none), "name",
              "kind", "status": [code name, description or null],
              "attributes": {key: typed}, "events": [{"name", "attributes",
              "time"}], "links": [{"trace_id", "span_id"}], "flags",
              "start", "end"}]}
where typed is {"type": "str"|"int"|"float"|"bool"|"tuple", "value": ...}, and
start, end and event times are Unix nanoseconds as the Jaeger wire form carries
them (read back from the exporter's own translation of these spans).
Exit status 0 when the exporter reported success.
"""

from __future__ import annotations

import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

LINKED_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
LINKED_SPAN_ID = 0xB7AD6B7169203331
SERVICE = "jaeger-e2e"


def typed(v):
    if isinstance(v, bool):
        return {"type": "bool", "value": v}
    if isinstance(v, int):
        return {"type": "int", "value": v}
    if isinstance(v, float):
        return {"type": "float", "value": v}
    if isinstance(v, str):
        return {"type": "str", "value": v}
    if isinstance(v, tuple):
        # The Jaeger exporters send str(tuple); keep what they sent.
        return {"type": "tuple", "value": str(v)}
    raise TypeError(f"unexpected attribute value {v!r}")


def build_spans():
    memory = InMemorySpanExporter()
    resource = Resource.create(
        {
            "service.name": SERVICE,
            "service.version": "2.3.1",
            "host.cpu_count": 2,
            "app.ratio": 0.25,
            "app.canary": False,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("weft.e2e.jaeger", "0.4.2")
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
            "http.method": "GET",
            "http.status_code": 200,
            "http.route": "/checkout",
            "server.duration_ratio": 0.875,
            "user.is_admin": True,
            "tags": ("a", "b", "c"),
        },
    ):
        with tracer.start_as_current_span(
            "SELECT orders",
            kind=SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "server.port": 5432, "db.rows": -1},
        ) as client:
            client.add_event(
                "retry",
                attributes={"attempt": 2, "backoff_s": 0.125, "final": True, "cause": "timeout"},
            )
            client.set_status(Status(StatusCode.ERROR, "deadline exceeded after 2 attempts"))
        with tracer.start_as_current_span(
            "render invoice",
            kind=SpanKind.INTERNAL,
            links=[Link(link_ctx, attributes={"link.reason": "batch"})],
        ) as internal:
            internal.set_attribute("template", "invoice.html")
            internal.set_status(Status(StatusCode.OK))
    provider.force_flush()
    spans = memory.get_finished_spans()
    provider.shutdown()
    return spans


def wire_times(transport: str, spans):
    """(start, end, [event times]) in ns per span, from the exporter's translation."""
    out = []
    if transport == "grpc":
        from opentelemetry.exporter.jaeger.proto.grpc.translate import (
            ProtobufTranslator,
            Translate,
        )

        for s in Translate(spans)._translate(ProtobufTranslator(SERVICE)):
            start = s.start_time.seconds * 10**9 + s.start_time.nanos
            end = start + s.duration.seconds * 10**9 + s.duration.nanos
            events = [l.timestamp.seconds * 10**9 + l.timestamp.nanos for l in s.logs]
            out.append((start, end, events))
    else:
        from opentelemetry.exporter.jaeger.thrift.translate import ThriftTranslator, Translate

        for s in Translate(spans)._translate(ThriftTranslator()):
            events = [l.timestamp * 1000 for l in (s.logs or [])]
            out.append((s.startTime * 1000, (s.startTime + s.duration) * 1000, events))
    return out


def make_exporter(transport: str, args: list[str]):
    if transport == "thrift-http":
        from opentelemetry.exporter.jaeger.thrift import JaegerExporter

        return JaegerExporter(collector_endpoint=args[0], timeout=10)
    if transport == "thrift-udp":
        from opentelemetry.exporter.jaeger.thrift import JaegerExporter

        return JaegerExporter(agent_host_name=args[0], agent_port=int(args[1]))
    if transport == "grpc":
        from opentelemetry.exporter.jaeger.proto.grpc import JaegerExporter

        return JaegerExporter(collector_endpoint=args[0], insecure=True, timeout=10)
    raise SystemExit(f"unknown transport {transport!r}: use thrift-http, thrift-udp or grpc")


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        raise SystemExit(__doc__)
    transport = argv[1]
    spans = build_spans()
    exporter = make_exporter(transport, argv[2:])
    result = exporter.export(spans)
    exporter.shutdown()
    times = wire_times(transport, spans)
    out = {
        "result": "SUCCESS" if result == SpanExportResult.SUCCESS else "FAILURE",
        "service": SERVICE,
        "resource": {k: typed(v) for k, v in spans[0].resource.attributes.items()},
        "scope": [spans[0].instrumentation_scope.name, spans[0].instrumentation_scope.version],
        "spans": [
            {
                "trace_id": format(s.context.trace_id, "032x"),
                "span_id": format(s.context.span_id, "016x"),
                "parent_span_id": format(s.parent.span_id, "016x") if s.parent else "",
                "name": s.name,
                "kind": s.kind.name,
                "status": [s.status.status_code.name, s.status.description],
                "attributes": {k: typed(v) for k, v in s.attributes.items()},
                "events": [
                    {
                        "name": e.name,
                        "attributes": {k: typed(v) for k, v in e.attributes.items()},
                        "time": t,
                    }
                    for e, t in zip(s.events, ev_times)
                ],
                "links": [
                    {
                        "trace_id": format(l.context.trace_id, "032x"),
                        "span_id": format(l.context.span_id, "016x"),
                    }
                    for l in s.links
                ],
                "flags": int(s.context.trace_flags),
                "start": start,
                "end": end,
            }
            for s, (start, end, ev_times) in zip(spans, times)
        ],
    }
    print(json.dumps(out), flush=True)
    return 0 if result == SpanExportResult.SUCCESS else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
