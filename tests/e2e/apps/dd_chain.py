"""The two ddtrace services of the cross-tracer chain: the front service that starts
each trace and calls the next service over HTTP, and the back service that serves
the last hop. Both send their spans to the trace agent at DD_TRACE_AGENT_URL.

    DD_TRACE_AGENT_URL=... python dd_chain.py front URL N     (N requests to URL)
    DD_TRACE_AGENT_URL=... python dd_chain.py back PORT N     (serve N requests on PORT)

ddtrace's own environment variables choose the wire format (DD_TRACE_API_VERSION),
64- or 128-bit trace ids (DD_TRACE_128_BIT_TRACEID_GENERATION_ENABLED) and the
headers it injects and extracts (DD_TRACE_PROPAGATION_STYLE). Spans are made with
ddtrace's API and the context crosses HTTP with ddtrace's own HTTPPropagator.

front, service "chain-a", per request:
  frontend.job   (span.kind internal, the trace root)
  └── frontend.call  (span.kind client, type http): GET URL with the injected headers
back, service "chain-c", per request, a child of the extracted context:
  backend.request  (span.kind server, type web)
  └── backend.compute  (span.kind internal)
The back service flushes its spans before it answers, so they reach the agent before
the caller's spans exist.

stdout, one JSON object, after the tracer flushed and shut down:
  {"service", "requests": [{"trace_id": 32 hex, "trace_id_low": decimal low 64 bits,
    "headers": the headers sent (front) or received (back),
    "extracted": {"trace_id": 32 hex, "span_id": 16 hex} (back only),
    "status": HTTP status of the call (front only),
    "spans": [{"name", "span_id": 16 hex, "span_id_dec", "parent_span_id": 16 hex or ""}]}]}
Exit status 0 when every request was made (front) or served (back).
"""

from __future__ import annotations

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

LOW64 = (1 << 64) - 1
# The back service gives up when no request came for this long.
IDLE_TIMEOUT = 60.0


def configure(service: str) -> None:
    if not os.environ.get("DD_TRACE_AGENT_URL"):
        raise SystemExit(__doc__)
    os.environ.setdefault("DD_SERVICE", service)
    os.environ.setdefault("DD_ENV", "e2e")
    os.environ.setdefault("DD_VERSION", "1.0.0")
    # Nothing but traces: no telemetry, remote config, profiling or stats chatter.
    os.environ.setdefault("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "false")
    os.environ.setdefault("DD_REMOTE_CONFIGURATION_ENABLED", "false")
    os.environ.setdefault("DD_TRACE_STARTUP_LOGS", "false")
    os.environ.setdefault("DD_TRACE_STATS_COMPUTATION_ENABLED", "false")
    os.environ.setdefault("DD_CRASHTRACKING_ENABLED", "false")


def span_json(span) -> dict:
    return {
        "name": span.name,
        "span_id": format(span.span_id, "016x"),
        "span_id_dec": str(span.span_id),
        "parent_span_id": format(span.parent_id, "016x") if span.parent_id else "",
    }


def trace_json(trace_id: int) -> dict:
    return {"trace_id": format(trace_id, "032x"), "trace_id_low": str(trace_id & LOW64)}


def front(url: str, n: int) -> int:
    configure("chain-a")
    import requests
    from ddtrace.propagation.http import HTTPPropagator
    from ddtrace.trace import tracer

    out = []
    ok = True
    for i in range(n):
        with tracer.trace("frontend.job", resource=f"job {i}") as root:
            root.set_tag("span.kind", "internal")
            with tracer.trace("frontend.call", resource="GET /b", span_type="http") as call:
                call.set_tag("span.kind", "client")
                call.set_tag("http.method", "GET")
                call.set_tag("http.url", url)
                headers: dict[str, str] = {}
                HTTPPropagator.inject(call, headers)
                resp = requests.get(url, headers=headers, timeout=30)
                call.set_tag("http.status_code", str(resp.status_code))
        ok = ok and resp.status_code == 200
        out.append(
            {
                **trace_json(root.trace_id),
                "headers": headers,
                "status": resp.status_code,
                "spans": [span_json(root), span_json(call)],
            }
        )
    tracer.flush()
    tracer.shutdown(timeout=10)
    print(json.dumps({"service": "chain-a", "requests": out}), flush=True)
    return 0 if ok else 1


def back(port: int, n: int) -> int:
    configure("chain-c")
    from ddtrace.propagation.http import HTTPPropagator
    from ddtrace.trace import tracer

    out = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            headers = {k.lower(): v for k, v in self.headers.items()}
            ctx = HTTPPropagator.extract(headers)
            span = tracer.start_span(
                "backend.request",
                child_of=ctx,
                resource="GET /c",
                span_type="web",
                activate=True,
            )
            span.set_tag("span.kind", "server")
            span.set_tag("http.method", "GET")
            span.set_tag("http.status_code", "200")
            with tracer.trace("backend.compute", resource="compute") as work:
                work.set_tag("span.kind", "internal")
            span.finish()
            # Out before the answer: these spans reach the agent before the caller's.
            tracer.flush()
            out.append(
                {
                    **trace_json(span.trace_id),
                    "headers": headers,
                    "extracted": {
                        "trace_id": format(ctx.trace_id or 0, "032x"),
                        "span_id": format(ctx.span_id or 0, "016x"),
                    },
                    "spans": [span_json(span), span_json(work)],
                }
            )
            body = b'{"served": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = HTTPServer(("127.0.0.1", port), Handler)
    server.timeout = 1.0
    deadline = time.monotonic() + IDLE_TIMEOUT
    while len(out) < n and time.monotonic() < deadline:
        before = len(out)
        server.handle_request()
        if len(out) > before:
            deadline = time.monotonic() + IDLE_TIMEOUT
    server.server_close()
    tracer.flush()
    tracer.shutdown(timeout=10)
    print(json.dumps({"service": "chain-c", "requests": out}), flush=True)
    return 0 if len(out) == n else 1


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[1] not in ("front", "back"):
        raise SystemExit(__doc__)
    role, where, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if role == "front":
        return front(where, n)
    return back(int(where), n)


if __name__ == "__main__":
    sys.exit(main())
