"""Zipkin proto3 `ListOfSpans` bodies decoded with the generated `zipkin_pb2` types
the OpenTelemetry Zipkin proto exporter ships, written out as JSON with hex ids.

    python zipkin_pb2_json.py < body.bin     (prints the decoded list)

It runs in the venv of tests/e2e/requirements-zipkin-proto.txt (protobuf 3), so it
imports nothing from the test suite.
"""

from __future__ import annotations

import ipaddress
import json
import sys


def _endpoint(e, present: bool):
    if not present:
        return None
    return {
        "serviceName": e.service_name,
        "ipv4": str(ipaddress.IPv4Address(e.ipv4)) if len(e.ipv4) == 4 else e.ipv4.hex(),
        "ipv6": str(ipaddress.IPv6Address(e.ipv6)) if len(e.ipv6) == 16 else e.ipv6.hex(),
        "port": e.port,
    }


def list_of_spans_json(message) -> list:
    """Every field of every span, ids in hex, the kind by name, tags as a dict."""
    kinds = {0: None, 1: "CLIENT", 2: "SERVER", 3: "PRODUCER", 4: "CONSUMER"}
    out = []
    for s in message.spans:
        out.append(
            {
                "traceId": s.trace_id.hex(),
                "traceIdBytes": len(s.trace_id),
                "parentId": s.parent_id.hex(),
                "id": s.id.hex(),
                "kind": kinds.get(s.kind, s.kind),
                "name": s.name,
                "timestamp": s.timestamp,
                "duration": s.duration,
                "localEndpoint": _endpoint(s.local_endpoint, s.HasField("local_endpoint")),
                "remoteEndpoint": _endpoint(s.remote_endpoint, s.HasField("remote_endpoint")),
                "annotations": [{"timestamp": a.timestamp, "value": a.value} for a in s.annotations],
                "tags": dict(s.tags),
                "debug": s.debug,
                "shared": s.shared,
            }
        )
    return out


def main() -> int:
    from opentelemetry.exporter.zipkin.proto.http.v2.gen import zipkin_pb2

    body = sys.stdin.buffer.read()
    print(json.dumps(list_of_spans_json(zipkin_pb2.ListOfSpans.FromString(body))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
