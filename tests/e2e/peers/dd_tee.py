"""A Datadog trace-agent tee: http.server in a thread that forwards every request a
tracer makes, byte for byte, to one or more trace agents, answers with the first
agent's response, and records what went where.

With one agent it is a transparent recorder (which API paths a tracer used); with
two it sends the exact same payload to both, so two decoders can be compared on
identical input (same ids, same timestamps).

    tee = DatadogTee(port, ["http://127.0.0.1:8126", "http://127.0.0.1:9126"]).start()
    ... DD_TRACE_AGENT_URL=tee.url ...
    tee.stop()
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Request headers a tracer sends that an agent reads; hop-by-hop headers stay behind.
_SKIP_HEADERS = {"host", "connection", "content-length", "transfer-encoding", "keep-alive"}


@dataclass
class Forwarded:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    # One status per agent, in the order the agents were given.
    statuses: list[int] = field(default_factory=list)


class DatadogTee:
    def __init__(self, port: int, agents: list[str], timeout: float = 10.0):
        assert agents, "a tee needs at least one agent"
        self.port = port
        self.agents = [a.rstrip("/") for a in agents]
        self.timeout = timeout
        self.requests: list[Forwarded] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def trace_requests(self) -> list[Forwarded]:
        """The requests that carried traces (`/v0.N/traces`)."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/traces")]

    def _forward(self, agent: str, method: str, path: str, headers: dict, body: bytes):
        req = urllib.request.Request(
            agent + path, data=body if method in ("POST", "PUT") else None,
            headers=headers, method=method,
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()
        except OSError as e:
            return 502, {"Content-Type": "text/plain"}, f"tee: {agent}: {e}".encode()

    def start(self) -> "DatadogTee":
        tee = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {
                    k.lower(): v for k, v in self.headers.items() if k.lower() not in _SKIP_HEADERS
                }
                rec = Forwarded(self.command, self.path, headers, body)
                answers = [
                    tee._forward(a, self.command, self.path, headers, body) for a in tee.agents
                ]
                rec.statuses = [a[0] for a in answers]
                with tee._lock:
                    tee.requests.append(rec)
                status, resp_headers, resp_body = answers[0]
                self.send_response(status)
                for k, v in resp_headers.items():
                    if k.lower() not in _SKIP_HEADERS and k.lower() not in ("date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp_body)))
                self.end_headers()
                self.wfile.write(resp_body)

            do_GET = do_POST = do_PUT = do_OPTIONS = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
