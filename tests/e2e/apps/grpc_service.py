"""A gRPC server with no generated code (generic handlers, raw bytes) for the ebpf
receiver's HTTP/2 tests: one method per RPC shape of `weft.test.Echo`.

  Unary            echoes the request; a request b"missing" fails with NOT_FOUND
  ServerStream     answers a request b"n" with n messages
  ClientStream     answers every request it read with one message: their count
  Bidi             echoes each message as it arrives
  Slow             sleeps 1 s before answering (for deadlines)

Usage: grpc_service.py PORT   (prints "ready" once it listens)
"""

from __future__ import annotations

import sys
import time
from concurrent import futures

import grpc

SERVICE = "weft.test.Echo"


def unary(request: bytes, context) -> bytes:
    if request == b"missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    return request


def server_stream(request: bytes, context):
    for i in range(int(request.decode() or "0")):
        yield b"part-%d" % i


def client_stream(requests, context) -> bytes:
    return str(sum(1 for _ in requests)).encode()


def bidi(requests, context):
    for r in requests:
        yield r


def slow(request: bytes, context) -> bytes:
    time.sleep(1.0)
    return request


def main() -> None:
    port = int(sys.argv[1])
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
