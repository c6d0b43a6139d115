"""A service that resolves a name inside its HTTP handler, for the DNS autotracing test
(test_ebpf_dns.py).

    python dns_service.py HTTP_PORT DNS_PORT

GET /lookup/<name>: one A query for <name> to 127.0.0.1:DNS_PORT (dnspython, over UDP,
on the handler's thread), answered with {"rcode": ..., "answers": n}. One thread serves
one request at a time. Prints "ready" once listening; serves until terminated.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import dns.message
import dns.query
import dns.rcode


def main() -> None:
    http_port, dns_port = int(sys.argv[1]), int(sys.argv[2])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 - http.server's name
            name = self.path.rsplit("/", 1)[-1]
            r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=dns_port, timeout=5)
            body = json.dumps({"rcode": dns.rcode.to_text(r.rcode()),
                               "answers": sum(len(a) for a in r.answer)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", http_port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
