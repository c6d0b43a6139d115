"""A plain threaded HTTP/1.1 server (Python stdlib only, no instrumentation) for the
ebpf receiver's end-to-end tests: the kernel sees its socket syscalls, nothing else
tells weft what it does.

    python ebpf_http_server.py --host 127.0.0.1 --port 8080 [--set-cookie VALUE]
    python ebpf_http_server.py --host ::1 --port 0
    python ebpf_http_server.py --port 0 --certfile cert.pem --keyfile key.pem   (HTTPS)

Prints the port it listens on, alone on a line, once it accepts connections.

Routes (every response carries `X-Thread-Id`, the native id of the thread that
handled the connection, so a test can check a span's `thread.id`):
  GET  /hello                 200 "hello\\n"
  GET  /item/<name>           200 "item <name>\\n"
  GET  /status/<code>         <code> "status <code>\\n"
  GET  /chunked               200, Transfer-Encoding: chunked, CHUNKS each written by
                              its own syscall, then the last chunk
  GET  /big                   200, BIG_BODY_BYTES bytes of "b"
  POST /echo                  200, the length of the request body as text; a body
                              cut short by the peer closing gets no answer at all
  GET  /downstream?port=N     calls GET 127.0.0.1:N/hello with http.client inside the
                              handler, answers 200 with the downstream status as body
                              and the downstream X-Thread-Id as X-Downstream-Thread-Id
  GET  /setcookie             200 with `Set-Cookie: session=<--set-cookie value>`
Anything else is 404.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNKS = [b"alpha\n", b"beta\n" * 10, b"gamma\n" * 100]
BIG_BODY_BYTES = 100 * 1000


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    set_cookie = "unset"

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass

    def end_headers(self):
        self.send_header("X-Thread-Id", str(threading.get_native_id()))
        super().end_headers()

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlsplit(self.path)
        path = url.path
        if path == "/hello":
            self.reply(200, b"hello\n")
        elif path.startswith("/item/"):
            self.reply(200, f"item {path[len('/item/'):]}\n".encode())
        elif path.startswith("/status/") and path[len("/status/"):].isdigit():
            code = int(path[len("/status/"):])
            self.reply(code, f"status {code}\n".encode())
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in CHUNKS:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                time.sleep(0.005)
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/big":
            self.reply(200, b"b" * BIG_BODY_BYTES)
        elif path == "/downstream":
            port = int(parse_qs(url.query)["port"][0])
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/hello")
                resp = conn.getresponse()
                resp.read()
                status, tid = resp.status, resp.getheader("X-Thread-Id", "")
            finally:
                conn.close()
            self.reply(200, f"{status}\n".encode(), {"X-Downstream-Thread-Id": tid})
        elif path == "/setcookie":
            self.reply(200, b"ok\n", {"Set-Cookie": f"session={self.set_cookie}; Path=/"})
        else:
            self.reply(404, b"not found\n")

    def do_POST(self):
        if urlsplit(self.path).path != "/echo":
            self.reply(404, b"not found\n")
            return
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if len(body) < length:
            # The peer closed mid-body: there is nobody to answer.
            self.close_connection = True
            return
        self.reply(200, f"{len(body)}\n".encode())


class Server4(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class Server6(Server4):
    address_family = socket.AF_INET6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--set-cookie", default="unset")
    ap.add_argument("--certfile", help="serve HTTPS with this certificate (PEM)")
    ap.add_argument("--keyfile", help="the certificate's private key (PEM)")
    args = ap.parse_args()
    Handler.set_cookie = args.set_cookie
    cls = Server6 if args.host == "::1" else Server4
    server = cls((args.host, args.port), Handler)
    if args.certfile:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.certfile, args.keyfile)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
