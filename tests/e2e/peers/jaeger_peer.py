"""A Jaeger collector built from the types the Python Jaeger exporters ship, as an
independent decoder for weft's jaeger exporter. It runs under the Jaeger venv
(.venv-jaeger), as a subprocess of the tests.

    python jaeger_peer.py grpc PORT OUT
        a grpcio server with the CollectorServiceServicer generated in
        opentelemetry-exporter-jaeger-proto-grpc (jaeger.api_v2 PostSpans)
    python jaeger_peer.py thrift-http PORT OUT
        an HTTP server that decodes POST bodies with the generated jaeger.thrift
        types of opentelemetry-exporter-jaeger-thrift and Thrift's own
        TBinaryProtocol, answering 202 as a Jaeger collector does

Every request becomes one JSON line in OUT:
  {"path", "headers": {lowercased name: value}, "batch": {"process": {...},
   "spans": [...]}}
with ids as hex, tag values as {"type": TYPE NAME, "value": ...} (binary as hex),
proto times as [seconds, nanos] and Thrift times as integers (microseconds).
It prints READY once listening, and stops on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()


def _write(out: str, record: dict) -> None:
    with _lock, open(out, "a") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------
# gRPC (protobuf api_v2)


def _proto_value(kv, model_pb2):
    name = model_pb2.ValueType.Name(kv.v_type)
    value = {
        "STRING": kv.v_str,
        "BOOL": kv.v_bool,
        "INT64": kv.v_int64,
        "FLOAT64": kv.v_float64,
        "BINARY": kv.v_binary.hex(),
    }[name]
    return {"key": kv.key, "type": name, "value": value}


def _proto_process(p, model_pb2):
    return {
        "service_name": p.service_name,
        "tags": [_proto_value(t, model_pb2) for t in p.tags],
    }


def _proto_batch(batch, model_pb2) -> dict:
    return {
        "process": _proto_process(batch.process, model_pb2) if batch.HasField("process") else None,
        "spans": [
            {
                "trace_id": s.trace_id.hex(),
                "span_id": s.span_id.hex(),
                "operation_name": s.operation_name,
                "references": [
                    {
                        "trace_id": r.trace_id.hex(),
                        "span_id": r.span_id.hex(),
                        "ref_type": model_pb2.SpanRefType.Name(r.ref_type),
                    }
                    for r in s.references
                ],
                "flags": s.flags,
                "start_time": [s.start_time.seconds, s.start_time.nanos],
                "duration": [s.duration.seconds, s.duration.nanos],
                "tags": [_proto_value(t, model_pb2) for t in s.tags],
                "logs": [
                    {
                        "timestamp": [l.timestamp.seconds, l.timestamp.nanos],
                        "fields": [_proto_value(f, model_pb2) for f in l.fields],
                    }
                    for l in s.logs
                ],
                "process": _proto_process(s.process, model_pb2) if s.HasField("process") else None,
            }
            for s in batch.spans
        ],
    }


def serve_grpc(port: int, out: str):
    from concurrent import futures

    import grpc
    from opentelemetry.exporter.jaeger.proto.grpc.gen import (  # noqa: F401 (sets sys.path)
        collector_pb2,
        model_pb2,
    )

    # The generated service module imports its messages by bare name.
    import collector_pb2_grpc

    class Servicer(collector_pb2_grpc.CollectorServiceServicer):
        def PostSpans(self, request, context):
            headers = {k.lower(): v for k, v in context.invocation_metadata()}
            _write(
                out,
                {
                    "path": "/jaeger.api_v2.CollectorService/PostSpans",
                    "headers": headers,
                    "batch": _proto_batch(request.batch, model_pb2),
                },
            )
            return collector_pb2.PostSpansResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    collector_pb2_grpc.add_CollectorServiceServicer_to_server(Servicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return lambda: server.stop(grace=1).wait()


# ---------------------------------------------------------------------------
# Thrift over HTTP


def _thrift_tag(t, jaeger):
    name = jaeger.TagType._VALUES_TO_NAMES[t.vType]
    value = {
        "STRING": t.vStr,
        "DOUBLE": t.vDouble,
        "BOOL": t.vBool,
        "LONG": t.vLong,
        "BINARY": t.vBinary.hex() if t.vBinary is not None else None,
    }[name]
    return {"key": t.key, "type": name, "value": value}


def _u64_hex(v: int) -> str:
    return format(v & 0xFFFFFFFFFFFFFFFF, "016x")


def _thrift_batch(batch, jaeger) -> dict:
    return {
        "process": {
            "service_name": batch.process.serviceName,
            "tags": [_thrift_tag(t, jaeger) for t in (batch.process.tags or [])],
        },
        "spans": [
            {
                "trace_id": _u64_hex(s.traceIdHigh) + _u64_hex(s.traceIdLow),
                "span_id": _u64_hex(s.spanId),
                "parent_span_id": _u64_hex(s.parentSpanId),
                "operation_name": s.operationName,
                "references": [
                    {
                        "trace_id": _u64_hex(r.traceIdHigh) + _u64_hex(r.traceIdLow),
                        "span_id": _u64_hex(r.spanId),
                        "ref_type": jaeger.SpanRefType._VALUES_TO_NAMES[r.refType],
                    }
                    for r in (s.references or [])
                ],
                "flags": s.flags,
                "start_time": s.startTime,
                "duration": s.duration,
                "tags": [_thrift_tag(t, jaeger) for t in (s.tags or [])],
                "logs": [
                    {
                        "timestamp": l.timestamp,
                        "fields": [_thrift_tag(f, jaeger) for f in (l.fields or [])],
                    }
                    for l in (s.logs or [])
                ],
            }
            for s in batch.spans
        ],
    }


def serve_thrift_http(port: int, out: str):
    from opentelemetry.exporter.jaeger.thrift.gen.jaeger import ttypes as jaeger
    from thrift.protocol import TBinaryProtocol
    from thrift.transport import TTransport

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            batch = jaeger.Batch()
            batch.read(TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(body)))
            _write(
                out,
                {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "batch": _thrift_batch(batch, jaeger),
                },
            )
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.shutdown


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in ("grpc", "thrift-http"):
        raise SystemExit(__doc__)
    mode, port, out = argv[1], int(argv[2]), argv[3]
    stop = serve_grpc(port, out) if mode == "grpc" else serve_thrift_http(port, out)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print("READY", flush=True)
    done.wait()
    stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
