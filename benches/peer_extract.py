"""Header extraction by real peers, for comparison with weft-propagation's criterion
bench (propagation/benches/extract.rs): the same request headers through the
OpenTelemetry Python propagators and ddtrace's HTTPPropagator, ns per extraction.

Run with an interpreter that has the packages (the e2e venvs do):
  .venv/bin/python benches/peer_extract.py otel
  .venv-dd/bin/python benches/peer_extract.py ddtrace
"""

import sys
import timeit

BASE = {
    "host": "checkout.internal:8080",
    "user-agent": "curl/8.5.0",
    "accept": "*/*",
    "content-type": "application/json",
}
# Carriers are built once; only the extraction is timed.
W3C = {
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "tracestate": "dd=s:2;o:rum;t.dm:-4;t.usr.id:baz64,congo=t61rcWkgMzE",
}
DATADOG = {
    "x-datadog-trace-id": "13088165645273925489",
    "x-datadog-parent-id": "5678",
    "x-datadog-sampling-priority": "1",
    "x-datadog-origin": "synthetics",
    "x-datadog-tags": "_dd.p.tid=640cfd8d00000000,_dd.p.dm=-4",
}
B3 = {"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"}
BAGGAGE = {"baggage": "userId=alice,serverNode=DF%2028,isProduction=false"}


def ns_per_op(fn, number=20000, repeat=5):
    best = min(timeit.repeat(fn, number=number, repeat=repeat))
    return best / number * 1e9


def otel():
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    tc = TraceContextTextMapPropagator()
    bg = W3CBaggagePropagator()
    w3c, baggage, b3 = {**BASE, **W3C}, {**BASE, **BAGGAGE}, {**BASE, **B3}
    rows = [("tracecontext", lambda: tc.extract(w3c)),
            ("baggage", lambda: bg.extract(baggage))]
    try:
        from opentelemetry.propagators.b3 import B3SingleFormat

        b3_format = B3SingleFormat()
        rows.append(("b3", lambda: b3_format.extract(b3)))
    except ImportError:
        pass
    return rows


def ddtrace_rows():
    from ddtrace.propagation.http import HTTPPropagator

    datadog, w3c = {**BASE, **DATADOG}, {**BASE, **W3C}
    return [
        ("datadog (ddtrace default styles)", lambda: HTTPPropagator.extract(datadog)),
        ("tracecontext (ddtrace default styles)", lambda: HTTPPropagator.extract(w3c)),
    ]


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "otel"
    rows = otel() if which == "otel" else ddtrace_rows()
    for name, fn in rows:
        print(f"{which}\t{name}\t{ns_per_op(fn):.0f} ns")


if __name__ == "__main__":
    main()
