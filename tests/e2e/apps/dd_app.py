"""An app instrumented with Datadog's ddtrace that sends one known span tree to the
trace agent at DD_TRACE_AGENT_URL, then prints what it sent.

    DD_TRACE_AGENT_URL=http://127.0.0.1:8126 python dd_app.py

ddtrace picks the wire format itself: v0.5 by default, v0.4 with
DD_TRACE_API_VERSION=v0.4 (or after the agent answered 404/415 to v0.5).
DD_TRACE_128_BIT_TRACEID_GENERATION_ENABLED=false makes it generate 64-bit trace
ids; with true (the default) the upper 64 bits travel as the `_dd.p.tid` tag.

The tree, in service "dd-checkout" (env "e2e", version "2.3.1"):
  web.request  "GET /checkout"  type web, span.kind server, http tags, a metric
  ├── postgres.query  "SELECT * FROM orders"  service "dd-checkout-postgres"
  │                   type sql, span.kind client, error (ValueError "deadline exceeded")
  └── render          "invoice.html"  a link to a fixed remote context, an exception event

stdout, one JSON object, after the tracer flushed and shut down:
  {"trace_id": 32 hex, "trace_id_low": decimal low 64 bits, "trace_id_high": 16 hex or "",
   "spans": [{"name", "service", "resource", "span_id": 16 hex, "span_id_dec",
              "parent_span_id": 16 hex or "", "error"}...],
   "link": {"trace_id": 32 hex, "span_id": 16 hex}}
Exit status 0 once the tracer has flushed and shut down. ddtrace drops a payload the agent
refused without telling the app: whether the spans arrived is for the caller to check.
"""

from __future__ import annotations

import json
import os
import sys

LINKED_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
LINKED_SPAN_ID = 0xB7AD6B7169203331


def main() -> int:
    if not os.environ.get("DD_TRACE_AGENT_URL"):
        raise SystemExit(__doc__)
    os.environ.setdefault("DD_SERVICE", "dd-checkout")
    os.environ.setdefault("DD_ENV", "e2e")
    os.environ.setdefault("DD_VERSION", "2.3.1")
    # Nothing but traces: no telemetry, remote config or profiling chatter.
    os.environ.setdefault("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "false")
    os.environ.setdefault("DD_REMOTE_CONFIGURATION_ENABLED", "false")
    os.environ.setdefault("DD_TRACE_STARTUP_LOGS", "false")

    from ddtrace.trace import Context, tracer

    link_ctx = Context(trace_id=LINKED_TRACE_ID, span_id=LINKED_SPAN_ID)
    with tracer.trace("web.request", resource="GET /checkout", span_type="web") as root:
        root.set_tag("span.kind", "server")
        root.set_tag("http.method", "GET")
        root.set_tag("http.route", "/checkout")
        root.set_tag("http.status_code", "200")
        root.set_tag("customer.tier", "gold")
        root.set_metric("cart.items", 3)
        with tracer.trace(
            "postgres.query",
            service="dd-checkout-postgres",
            resource="SELECT * FROM orders",
            span_type="sql",
        ) as db:
            db.set_tag("span.kind", "client")
            db.set_tag("db.type", "postgres")
            db.set_tag("peer.hostname", "db.internal")
            try:
                raise ValueError("deadline exceeded")
            except ValueError:
                db.set_exc_info(*sys.exc_info())
        with tracer.trace("render", resource="invoice.html") as render:
            render.link_span(link_ctx, attributes={"link.reason": "batch"})
            try:
                raise KeyError("template cache miss")
            except KeyError as e:
                render.record_exception(e, attributes={"attempt": 2})
    spans = [root, db, render]
    tracer.flush()
    tracer.shutdown(timeout=10)

    high = root.trace_id >> 64
    out = {
        "trace_id": format(root.trace_id, "032x"),
        "trace_id_low": str(root.trace_id & 0xFFFFFFFFFFFFFFFF),
        "trace_id_high": format(high, "016x") if high else "",
        "spans": [
            {
                "name": s.name,
                "service": s.service,
                "resource": s.resource,
                "span_id": format(s.span_id, "016x"),
                "span_id_dec": str(s.span_id),
                "parent_span_id": format(s.parent_id, "016x") if s.parent_id else "",
                "error": s.error,
            }
            for s in spans
        ],
        "link": {"trace_id": format(LINKED_TRACE_ID, "032x"), "span_id": format(LINKED_SPAN_ID, "016x")},
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
