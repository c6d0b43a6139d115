"""An app instrumented with the OpenTelemetry Python SDK that sends one known span
tree with the SDK's own Zipkin exporter (JSON or protobuf), then prints what it
sent.

    python zipkin_app.py json  http://127.0.0.1:9411/api/v2/spans
    python zipkin_app.py proto http://127.0.0.1:9411/api/v2/spans

The proto exporter pins protobuf 3, so it runs from its own venv
(tests/e2e/requirements-zipkin-proto.txt); the JSON one from the main venv.

The tree: a SERVER root with attributes of every type, a CLIENT child with a peer,
an event and status ERROR with a message, an INTERNAL child with an event without
attributes, and a PRODUCER and a CONSUMER span. The exporter is told a local IPv4
address and port, which Zipkin carries on the local endpoint.

stdout, one JSON object:
  {"result": "SUCCESS"|"FAILURE", "trace_id": hex,
   "resource": {key: value}, "scope": {"name", "version"},
   "spans": [{"span_id", "parent_span_id", "name", "kind", "start", "end",
              "status_code", "status_description", "attributes": {...},
              "events": [{"name", "time", "attributes"}]}],
   "content_type": the Content-Type posted, "status": the HTTP status weft answered,
   "payload": base64 of the exact body posted,
   "decoded": the body decoded with the exporter's own types (proto only)}
Exit status 0 when the export succeeded, 1 otherwise.
"""

from __future__ import annotations

import base64
import json
import sys

import requests
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode


class RecordingSession(requests.Session):
    """A requests session that keeps what the exporter posted and the answer."""

    def __init__(self):
        super().__init__()
        self.posts: list[tuple[str, bytes, int]] = []

    def post(self, url, data=None, **kwargs):  # noqa: D401 - requests' signature
        resp = super().post(url, data=data, **kwargs)
        body = data.encode() if isinstance(data, str) else bytes(data)
        self.posts.append((self.headers.get("Content-Type", ""), body, resp.status_code))
        return resp


def make_exporter(protocol: str, endpoint: str, session: RecordingSession):
    kwargs = dict(
        endpoint=endpoint,
        local_node_ipv4="127.0.0.1",
        local_node_port=8080,
        timeout=10,
        session=session,
    )
    if protocol == "json":
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        return ZipkinExporter(**kwargs)
    if protocol == "proto":
        from opentelemetry.exporter.zipkin.proto.http import ZipkinExporter

        return ZipkinExporter(**kwargs)
    raise SystemExit(f"unknown protocol {protocol!r}: use json or proto")


def build_spans():
    memory = InMemorySpanExporter()
    resource = Resource.create(
        {
            "service.name": "zipkin-app",
            "deployment.environment": "e2e",
            "team": "payments",
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    # The Zipkin exporter reads the service name from the global provider.
    trace.set_tracer_provider(provider)
    tracer = provider.get_tracer("weft.e2e.zipkin", "1.4.0")

    with tracer.start_as_current_span(
        "GET /checkout",
        kind=SpanKind.SERVER,
        attributes={
            "http.method": "GET",
            "http.status_code": 200,
            "http.flavor": 1.1,
            "cache.hit": False,
            "cart.items": ["book", "pen"],
        },
    ) as root:
        with tracer.start_as_current_span(
            "charge card",
            kind=SpanKind.CLIENT,
            attributes={"peer.service": "payments", "net.peer.ip": "10.0.0.7", "net.peer.port": 443},
        ) as client:
            client.add_event("retry", {"attempt": 2, "reason": "timeout", "backoff": 0.5})
            client.set_status(Status(StatusCode.ERROR, "card declined"))
        with tracer.start_as_current_span("compute total", kind=SpanKind.INTERNAL) as internal:
            internal.add_event("rounded")
        with tracer.start_as_current_span("publish order", kind=SpanKind.PRODUCER):
            pass
        with tracer.start_as_current_span("consume order", kind=SpanKind.CONSUMER):
            pass
        root.set_status(Status(StatusCode.OK))
    provider.force_flush()
    return list(memory.get_finished_spans()), resource


def span_json(s) -> dict:
    return {
        "span_id": format(s.context.span_id, "016x"),
        "parent_span_id": format(s.parent.span_id, "016x") if s.parent else "",
        "name": s.name,
        "kind": s.kind.name,
        "start": s.start_time,
        "end": s.end_time,
        "status_code": s.status.status_code.name,
        "status_description": s.status.description or "",
        "attributes": dict(s.attributes),
        "events": [
            {"name": e.name, "time": e.timestamp, "attributes": dict(e.attributes)}
            for e in s.events
        ],
    }


def decode_proto(body: bytes) -> list:
    from opentelemetry.exporter.zipkin.proto.http.v2.gen import zipkin_pb2

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "peers"))
    from zipkin_pb2_json import list_of_spans_json

    return list_of_spans_json(zipkin_pb2.ListOfSpans.FromString(body))


def main() -> int:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    protocol, endpoint = sys.argv[1], sys.argv[2]
    spans, resource = build_spans()
    session = RecordingSession()
    exporter = make_exporter(protocol, endpoint, session)
    result = exporter.export(spans)
    content_type, payload, status = session.posts[-1] if session.posts else ("", b"", 0)
    out = {
        "result": "SUCCESS" if result == SpanExportResult.SUCCESS else "FAILURE",
        "trace_id": format(spans[0].context.trace_id, "032x"),
        "resource": dict(resource.attributes),
        "scope": {"name": spans[0].instrumentation_scope.name, "version": spans[0].instrumentation_scope.version},
        "spans": [span_json(s) for s in spans],
        "content_type": content_type,
        "status": status,
        "payload": base64.b64encode(payload).decode(),
        "decoded": decode_proto(payload) if protocol == "proto" and payload else None,
    }
    print(json.dumps(out))
    return 0 if result == SpanExportResult.SUCCESS else 1


if __name__ == "__main__":
    sys.exit(main())
