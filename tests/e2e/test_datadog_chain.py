"""Datadog and OpenTelemetry tracers in one request chain, through weft.

Three real services as processes, real HTTP between them on loopback:

    A (ddtrace, apps/dd_chain.py front) --HTTP--> B (OpenTelemetry SDK, apps/otel_chain.py)
      --HTTP--> C (ddtrace, apps/dd_chain.py back)

A and C send to weft's `datadog` receiver (v0.5, ddtrace's default, and v0.4), B sends
OTLP/gRPC to the `otlp` receiver; both feed `propagation_merge` and `batch`, and the
file exporter writes the result. Every request must come out as exactly one trace id
with the parent chain unbroken across the three services, and every span must carry
the ids its tracer assigned. The tracers' trace agent traffic passes through a tee
(peers/dd_tee.py) that records which API version really was used and posts the same
bytes to ddapm-test-agent, whose decoding of every Datadog span must match weft's
(as below).

The chains (ddtrace's DD_TRACE_128_BIT_TRACEID_GENERATION_ENABLED and
DD_TRACE_PROPAGATION_STYLE for A and C, the formats B reads and writes):

- 128bit: A and C 128-bit with `datadog,tracecontext`; W3C headers on both hops.
  One 128-bit id everywhere, nothing re-keyed.
- 64bit: as 128bit with 64-bit ids. One id with zero upper bits; the Datadog spans
  wait out propagation_merge's window and leave unchanged.
- 64bit-datadog-only: A and C 64-bit with `datadog` only; x-datadog-* on both hops.
  As 64bit, the context carried by Datadog headers alone.
- rekey: A 128-bit with `datadog,tracecontext`, W3C to B; B writes x-datadog-* to C
  as a 64-bit hop (low 64 bits, no `_dd.p.tid`); C 64-bit with `datadog`. C reports
  the low 64 bits only, and propagation_merge re-keys C's spans to the 128-bit id
  B's spans show.
- rekey-c128: as rekey with C in 128-bit mode: ddtrace continues the 64-bit trace it
  extracted rather than inventing upper bits, so C's spans are re-keyed all the same.

Every hop's headers are also read back with `weft context extract`, which must agree
with what the receiving tracer extracted.

Second, the Datadog decoding cross-checked against Datadog's APM test agent
(ddapm-test-agent) on a richer tree: apps/dd_app.py (an integration service under
`_dd.base_service`, an error, a span link, an exception event) sends through the tee,
which posts the very same bytes to the test agent and to weft; the test agent's
decoded spans, translated to OTLP as docs/config/datadog-receiver.md specifies, must
equal weft's output span by span and field by field (ids, parent, service, name,
resource, every meta and metrics entry, error status, start, end, kind, links,
events), and the resource and scope must follow the tracer's headers.

ddtrace and the test agent run from .venv-dd (requirements-dd.txt): the test agent
pins an opentelemetry-proto that cannot share .venv with the OTLP peers. The
interpreter comes from WEFT_DD_PYTHON (scripts/test.sh sets it); without it, the
`dd_python` fixture builds .venv-dd once (and again only when requirements-dd.txt
changes).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from harness import E2E_DIR, REPO_ROOT, side_python, wait_for_metric, wait_until, weft_binary
from otlp_support import flatten_spans, parse_otlp_json
from peers.dd_tee import DatadogTee

DD_CHAIN = E2E_DIR / "apps" / "dd_chain.py"
OTEL_CHAIN = E2E_DIR / "apps" / "otel_chain.py"
DD_APP = E2E_DIR / "apps" / "dd_app.py"

LOW64 = (1 << 64) - 1
REQUESTS = 2
KIND = {"UNSPECIFIED": 0, "INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
STATUS_OK, STATUS_ERROR = 1, 2

# ---------------------------------------------------------------------------
# The ddtrace venv


@pytest.fixture(scope="session")
def dd_python() -> str:
    """The Python that has ddtrace and ddapm-test-agent (requirements-dd.txt)."""
    return side_python("dd")

def clean_env(**extra: str) -> dict:
    """This environment without tracer settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "OTEL_"))}
    env.update(extra)
    return env


def dd_env(agent_url: str, api: str, bits128: bool, styles: str | None = None) -> dict:
    """ddtrace's settings; v0.5 is ddtrace's default and is left to it."""
    env = clean_env(
        DD_TRACE_AGENT_URL=agent_url,
        DD_TRACE_128_BIT_TRACEID_GENERATION_ENABLED="true" if bits128 else "false",
    )
    if api != "v0.5":
        env["DD_TRACE_API_VERSION"] = api
    if styles:
        env["DD_TRACE_PROPAGATION_STYLE"] = styles
    return env


@pytest.fixture
def procs():
    """Starts long-running app processes; at teardown kills (by pid) those still up."""
    started: list[subprocess.Popen] = []

    def start(args: list[str], env: dict) -> subprocess.Popen:
        p = subprocess.Popen(
            [str(a) for a in args], env=env, cwd=E2E_DIR, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def app_json(name: str, code: int, stdout: str, stderr: str) -> dict:
    assert code == 0, f"{name} exited {code}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    lines = stdout.strip().splitlines()
    assert lines, f"{name} printed nothing\nstderr:\n{stderr}"
    return json.loads(lines[-1])


def finish(name: str, p: subprocess.Popen, timeout: float = 60) -> dict:
    stdout, stderr = p.communicate(timeout=timeout)
    return app_json(name, p.returncode, stdout, stderr)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_listening(p: subprocess.Popen, port: int, name: str) -> None:
    """Until the app accepts connections on `port` (the apps count only real requests,
    so a probe connection costs them nothing)."""
    assert wait_until(lambda: listening(port) or p.poll() is not None, 30), (
        f"{name} not listening on {port} after 30s"
    )
    if p.poll() is not None:
        stdout, stderr = p.communicate()
        raise AssertionError(f"{name} exited {p.returncode} at start\n{stdout}\n{stderr}")


# ---------------------------------------------------------------------------
# weft's file output


def file_rows(out: Path) -> list:
    if not out.exists():
        return []
    return flatten_spans(
        parse_otlp_json(line, ExportTraceServiceRequest)
        for line in out.read_text().splitlines()
        if line.strip()
    )


def value(v: AnyValue):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def attrs(kvs) -> dict:
    out = {}
    for kv in kvs:
        assert kv.key not in out, f"attribute {kv.key} twice"
        out[kv.key] = value(kv.value)
    return out


@dataclass
class OutSpan:
    """A span of weft's output with its resource and scope."""

    resource: dict
    resource_schema_url: str
    scope: InstrumentationScope
    span: object
    attributes: dict

    @property
    def service(self) -> str:
        return self.resource["service.name"]


def out_spans(rows) -> list[OutSpan]:
    return [
        OutSpan(
            attrs(Resource.FromString(r.resource).attributes),
            r.resource_schema_url,
            InstrumentationScope.FromString(r.scope),
            r.item,
            attrs(r.item.attributes),
        )
        for r in rows
    ]


def wait_for_spans(out: Path, count: int, w, timeout: float) -> None:
    assert wait_until(lambda: len(file_rows(out)) >= count, timeout, interval=0.1), (
        f"{out} holds {len(file_rows(out))} spans after {timeout}s, want {count}\n{w.log_tail()}"
    )


def weft_extract(headers: dict, styles: str) -> dict:
    """`weft context extract` on one request's headers."""
    p = subprocess.run(
        [str(weft_binary()), "context", "extract", "--styles", styles],
        input=json.dumps(headers), capture_output=True, text=True, timeout=30,
    )
    assert p.returncode == 0, f"weft context extract exited {p.returncode}: {p.stderr}"
    return json.loads(p.stdout)


# ---------------------------------------------------------------------------
# 1. The chain


@dataclass(frozen=True)
class Chain:
    a_128: bool
    a_styles: str
    b_extract: str
    b_inject: str
    c_128: bool
    c_styles: str

    @property
    def c_low_only(self) -> bool:
        """C cannot learn the upper 64 bits: it must be re-keyed by propagation_merge."""
        return self.a_128 and self.b_inject == "datadog"

    @property
    def window(self) -> str:
        """propagation_merge's window. Re-keyed chains get room for B's spans to reach
        weft after C's on a loaded machine (a match releases them at once); elsewhere
        nothing can match and a 64-bit trace leaves after the window, so keep it short."""
        return "5s" if self.c_low_only else "1s"


CHAINS = {
    "128bit": Chain(True, "datadog,tracecontext", "tracecontext", "tracecontext",
                    True, "datadog,tracecontext"),
    "64bit": Chain(False, "datadog,tracecontext", "tracecontext", "tracecontext",
                   False, "datadog,tracecontext"),
    "64bit-datadog-only": Chain(False, "datadog", "datadog", "datadog", False, "datadog"),
    "rekey": Chain(True, "datadog,tracecontext", "tracecontext", "datadog", False, "datadog"),
    "rekey-c128": Chain(True, "datadog,tracecontext", "tracecontext", "datadog", True, "datadog"),
}

# The exact span tree of one request: name -> (service, kind, parent name).
TREE = {
    "frontend.job": ("chain-a", "INTERNAL", None),
    "frontend.call": ("chain-a", "CLIENT", "frontend.job"),
    "GET /b": ("chain-b", "SERVER", "frontend.call"),
    "GET /c": ("chain-b", "CLIENT", "GET /b"),
    "backend.request": ("chain-c", "SERVER", "GET /c"),
    "backend.compute": ("chain-c", "INTERNAL", "backend.request"),
}
DD_SERVICES = {"chain-a", "chain-c"}


def chain_config(dd_port: int, otlp_port: int, out: Path, window: str) -> dict:
    return {
        "receivers": {
            "datadog": {"endpoint": f"127.0.0.1:{dd_port}"},
            "otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{otlp_port}"}}},
        },
        "processors": {
            "propagation_merge": {"window": window},
            "batch": {"timeout": "200ms"},
        },
        "exporters": {"file": {"path": str(out)}},
        "service": {
            "pipelines": {
                "traces": {
                    "receivers": ["datadog", "otlp"],
                    "processors": ["propagation_merge", "batch"],
                    "exporters": ["file"],
                }
            }
        },
    }


def check_headers(chain: Chain, a_req: dict, b_req: dict, c_req: dict, trace_id: str) -> None:
    """What crossed each hop, as each tracer and `weft context extract` read it."""
    low = int(trace_id, 16) & LOW64
    a_job, a_call = a_req["spans"]
    b_server, b_client = b_req["spans"]

    # A -> B: ddtrace's injection.
    sent = a_req["headers"]
    assert b_req["received"] == {**b_req["received"], **sent}, "B did not receive what A sent"
    assert sent["x-datadog-trace-id"] == str(low)
    assert sent["x-datadog-parent-id"] == a_call["span_id_dec"]
    tags = dict(t.split("=", 1) for t in sent.get("x-datadog-tags", "").split(",") if t)
    if chain.a_128:
        assert tags.get("_dd.p.tid") == trace_id[:16], sent
    else:
        assert "_dd.p.tid" not in tags, sent
    if "tracecontext" in chain.a_styles:
        assert sent["traceparent"] == f"00-{trace_id}-{a_call['span_id']}-01"
    else:
        assert "traceparent" not in sent, sent
    # B read the A client span as its parent, in the format it was told to read.
    assert b_req["extracted"] == {"trace_id": trace_id, "span_id": a_call["span_id"]}
    got = weft_extract(sent, chain.b_extract)
    assert (got["valid"], got["format"], got["trace_id"], got["span_id"]) == (
        True, chain.b_extract, trace_id, a_call["span_id"]
    ), got
    # All of A's formats, in A's order: they agree, so one context and no span link.
    got = weft_extract(sent, chain.a_styles)
    assert (got["valid"], got["format"], got["trace_id"], got["span_id"], got["links"]) == (
        True, chain.a_styles.split(",")[0], trace_id, a_call["span_id"], []
    ), got

    # B -> C: the OpenTelemetry side's injection.
    sent = b_req["sent"]
    assert c_req["headers"] == {**c_req["headers"], **sent}, "C did not receive what B sent"
    c_trace = f"{low:032x}" if chain.c_low_only else trace_id
    if chain.b_inject == "datadog":
        # The 64-bit hop: decimal low 64 bits, no x-datadog-tags, so no _dd.p.tid.
        assert sent == {
            "x-datadog-trace-id": str(low),
            "x-datadog-parent-id": str(int(b_client["span_id"], 16)),
            "x-datadog-sampling-priority": "1",
        }
    else:
        assert sent["traceparent"] == f"00-{trace_id}-{b_client['span_id']}-01"
        assert set(sent) <= {"traceparent", "tracestate"}, sent
    assert c_req["extracted"] == {"trace_id": c_trace, "span_id": b_client["span_id"]}
    # C's styles, in C's order: only the format B wrote can yield a context.
    got = weft_extract(sent, chain.c_styles)
    assert (got["valid"], got["format"], got["trace_id"], got["span_id"]) == (
        True, chain.b_inject, c_trace, b_client["span_id"]
    ), got


@pytest.mark.parametrize("api", ["v0.5", "v0.4"])
@pytest.mark.parametrize("name", list(CHAINS))
def test_one_trace_across_ddtrace_otel_ddtrace(name, api, weft, ports, tmp_path, dd_python, procs,
                                               test_agent):
    chain = CHAINS[name]
    dd_port, otlp_port, tee_port, b_port, c_port = ports(5)
    out = tmp_path / "traces.jsonl"
    w = weft(chain_config(dd_port, otlp_port, out, chain.window))
    # weft first: the tracers get weft's answers; the test agent decodes the same bytes.
    tee = DatadogTee(tee_port, [f"http://127.0.0.1:{dd_port}", test_agent]).start()
    try:
        c = procs([dd_python, DD_CHAIN, "back", c_port, REQUESTS],
                  dd_env(tee.url, api, chain.c_128, chain.c_styles))
        b = procs([sys.executable, OTEL_CHAIN, b_port, REQUESTS, f"127.0.0.1:{otlp_port}",
                   f"http://127.0.0.1:{c_port}/c", chain.b_extract, chain.b_inject],
                  clean_env())
        wait_listening(c, c_port, "C (dd_chain.py back)")
        wait_listening(b, b_port, "B (otel_chain.py)")
        a = subprocess.run(
            [dd_python, str(DD_CHAIN), "front", f"http://127.0.0.1:{b_port}/b", str(REQUESTS)],
            env=dd_env(tee.url, api, chain.a_128, chain.a_styles), cwd=E2E_DIR,
            capture_output=True, text=True, timeout=90,
        )
        a_out = app_json("A (dd_chain.py front)", a.returncode, a.stdout, a.stderr)
        b_out = finish("B (otel_chain.py)", b)
        c_out = finish("C (dd_chain.py back)", c)
    finally:
        tee.stop()
    assert b_out["result"] == "SUCCESS", b_out
    assert [len(o["requests"]) for o in (a_out, b_out, c_out)] == [REQUESTS] * 3
    assert [r["status"] for r in a_out["requests"]] == [200] * REQUESTS

    # The tracers used the API version asked for, and weft took every payload.
    trace_reqs = tee.trace_requests()
    assert {(r.path, tuple(r.statuses)) for r in trace_reqs} == {(f"/{api}/traces", (200, 200))}
    assert {r.method for r in trace_reqs} <= {"PUT", "POST"}
    assert {r.path for r in tee.requests} <= {"/info", f"/{api}/traces"}
    assert sum(int(r.headers.get("x-datadog-trace-count", "0")) for r in trace_reqs) == 2 * REQUESTS

    spans_total = len(TREE) * REQUESTS
    wait_for_spans(out, spans_total, w, timeout=40)

    dd_spans_per_req = sum(1 for s in TREE.values() if s[0] in DD_SERVICES)
    want_metrics = {
        "weft_propagation_merge_rekeyed_spans": 2 * REQUESTS if chain.c_low_only else 0,
        "weft_propagation_merge_unmatched_spans": 0 if chain.a_128 else dd_spans_per_req * REQUESTS,
        "weft_propagation_merge_evicted_spans": 0,
        "weft_propagation_merge_late_spans": 0,
        "weft_propagation_merge_dropped_spans": 0,
        "weft_propagation_merge_buffered_spans": 0,
    }
    got_metrics = {m: wait_for_metric(w, m, v, timeout=10) for m, v in want_metrics.items()}
    assert got_metrics == want_metrics
    accepted = {
        rcv: wait_for_metric(w, "otelcol_receiver_accepted_spans", n, receiver=rcv)
        for rcv, n in (("datadog", 4 * REQUESTS), ("otlp", 2 * REQUESTS))
    }
    assert accepted == {"datadog": 4 * REQUESTS, "otlp": 2 * REQUESTS}
    assert w.stop() == 0

    spans = out_spans(file_rows(out))
    assert len(spans) == spans_total, f"{len(spans)} spans written, want {spans_total}"
    by_trace: dict[str, list[OutSpan]] = {}
    for s in spans:
        by_trace.setdefault(s.span.trace_id.hex(), []).append(s)

    want_traces = [r["trace_id"] for r in a_out["requests"]]
    assert sorted(by_trace) == sorted(want_traces), (
        f"trace ids written {sorted(by_trace)}, want one per request {sorted(want_traces)}"
    )
    for i, trace_id in enumerate(want_traces):
        a_req, b_req, c_req = (o["requests"][i] for o in (a_out, b_out, c_out))
        high, low = int(trace_id[:16], 16), int(trace_id, 16) & LOW64
        assert (high != 0) == chain.a_128, f"A's trace id {trace_id}: 128-bit is {chain.a_128}"
        assert b_req["trace_id"] == trace_id
        c_trace = f"{low:032x}" if chain.c_low_only else trace_id
        assert c_req["trace_id"] == c_trace
        assert a_req["trace_id_low"] == c_req["trace_id_low"] == str(low)
        check_headers(chain, a_req, b_req, c_req, trace_id)

        # The ids each tracer printed, by span name.
        printed = {s["name"]: s for r in (a_req, b_req, c_req) for s in r["spans"]}
        assert set(printed) == set(TREE)
        trace = by_trace[trace_id]
        got_names = {}
        for s in trace:
            got_names.setdefault(s.service, []).append(s.span.name)
        assert {k: sorted(v) for k, v in got_names.items()} == {
            svc: sorted(n for n, t in TREE.items() if t[0] == svc)
            for svc in ("chain-a", "chain-b", "chain-c")
        }
        got = {s.span.name: s for s in trace}
        for span_name, (service, kind, parent) in TREE.items():
            s = got[span_name]
            p = printed[span_name]
            where = f"request {i}, span {span_name}"
            assert s.span.span_id.hex() == p["span_id"], where
            assert s.span.parent_span_id.hex() == p["parent_span_id"], where
            want_parent = printed[parent]["span_id"] if parent else ""
            assert s.span.parent_span_id.hex() == want_parent, where
            assert s.span.kind == KIND[kind], where
            if service in DD_SERVICES:
                assert s.scope.name == "Datadog", where
                # The tracer's own ids, kept by the receiver and by propagation_merge.
                assert s.attributes["datadog.trace.id"] == str(low), where
                assert s.attributes["datadog.span.id"] == p["span_id_dec"], where
                assert s.attributes["datadog.trace_id"] == str(low), where
                assert s.attributes["datadog.span_id"] == p["span_id_dec"], where
            else:
                assert s.scope.name == "weft.e2e.chain", where
                assert not any(k.startswith("datadog.") for k in s.attributes), where
        # `_dd.p.tid` travels on the chunk roots of 128-bit tracers only: C's spans in
        # the rekey chain got their upper bits from propagation_merge, not from a tag.
        tids = {n: got[n].attributes.get("_dd.p.tid") for n in ("frontend.job", "backend.request")}
        assert tids == {
            "frontend.job": trace_id[:16] if chain.a_128 else None,
            "backend.request": trace_id[:16] if chain.a_128 and not chain.c_low_only else None,
        }

    # Every Datadog span as the test agent decoded the same payloads. A chunk here is
    # one service's spans of one trace: each app sends each trace's spans as one chunk.
    agent = [s for t in agent_traces(test_agent) for s in t]
    dd_written = [s for s in spans if s.service in DD_SERVICES]
    assert sorted(f"{s['span_id']:016x}" for s in agent) == sorted(
        s.span.span_id.hex() for s in dd_written
    )
    by_id = {f"{s['span_id']:016x}": s for s in agent}
    for s in dd_written:
        t = by_id[s.span.span_id.hex()]
        chunk = [x for x in agent if (x["trace_id"], x["service"]) == (t["trace_id"], t["service"])]
        want = expected_otlp(t, chunk)
        got = written_otlp(s)
        # propagation_merge's part, checked above: the re-keyed id and the kept originals.
        got["attributes"] = {k: v for k, v in got["attributes"].items()
                             if k not in ("datadog.trace_id", "datadog.span_id")}
        if chain.c_low_only and s.service == "chain-c":
            assert want["trace_id"] == f"{int(got['trace_id'], 16) & LOW64:032x}"
            want["trace_id"] = got["trace_id"]
        assert_same_span(got, want, t["name"])


# ---------------------------------------------------------------------------
# 2. The Datadog decoding, cross-checked against ddapm-test-agent

# docs/config/datadog-receiver.md, "Key translation".
KEY_MAP = {
    "env": "deployment.environment.name",
    "service": "service.name",
    "version": "service.version",
    "container_id": "container.id",
    "container_name": "container.name",
    "image_name": "container.image.name",
    "image_tag": "container.image.tags",
    "runtime": "container.runtime.name",
    "cloud_provider": "cloud.provider",
    "region": "cloud.region",
    "zone": "cloud.availability_zone",
    "task_family": "aws.ecs.task.family",
    "task_arn": "aws.ecs.task.arn",
    "ecs_cluster_name": "aws.ecs.cluster.arn",
    "task_version": "aws.ecs.task.revision",
    "ecs_container_name": "aws.ecs.container.arn",
    "kube_container_name": "k8s.container.name",
    "kube_cluster_name": "k8s.cluster.name",
    "kube_deployment": "k8s.deployment.name",
    "kube_replica_set": "k8s.replicaset.name",
    "kube_stateful_set": "k8s.statefulset.name",
    "kube_daemon_set": "k8s.daemonset.name",
    "kube_job": "k8s.job.name",
    "kube_cronjob": "k8s.cronjob.name",
    "kube_namespace": "k8s.namespace.name",
    "pod_name": "k8s.pod.name",
    "http.method": "http.request.method",
    "http.status_code": "http.response.status_code",
    "http.route": "http.route",
    "http.url": "url.full",
    "http.useragent": "user_agent.original",
    "http.version": "network.protocol.version",
    "http.client_ip": "client.address",
    "http.server_name": "server.address",
    "http.referer": "http.request.header.referer",
    "http.request.content_length": "http.request.body.size",
    "http.response.content_length": "http.response.body.size",
    "db.type": "db.system.name",
    "db.operation": "db.operation.name",
    "db.instance": "db.namespace",
    "db.statement": "db.query.text",
    "db.sql.table": "db.collection.name",
    "db.pool.name": "db.client.connection.pool.name",
    "aws.service": "rpc.service",
    "aws.operation": "rpc.method",
    "aws.s3.bucket_name": "aws.s3.bucket",
    "aws.response.request_id": "aws.request_id",
    "process_id": "process.pid",
    "error.msg": "exception.message",
    "error.stacktrace": "exception.stacktrace",
}
CONSUMED_META = {"_dd.span_links", "events", "_dd.span_events.has_exception"}


def otel_key(key: str) -> str:
    if key.lower() in KEY_MAP:
        return KEY_MAP[key.lower()]
    for dd, otel in (("http.request.headers.", "http.request.header."),
                     ("http.response.headers.", "http.response.header.")):
        if key.startswith(dd):
            return otel + key[len(dd):]
    return key


def json_attr(v):
    """A JSON attribute value as weft's output holds it."""
    if isinstance(v, (list, tuple)):
        return [json_attr(x) for x in v]
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"))
    return v


def link_flags(flags: int) -> int:
    return flags & 0xFF if flags & (1 << 31) else 0


def expected_links(span: dict) -> list[dict]:
    if span.get("span_links"):
        return [
            {
                "trace_id": f"{(l.get('trace_id_high') or 0) << 64 | l['trace_id']:032x}",
                "span_id": f"{l['span_id']:016x}",
                "trace_state": l.get("tracestate") or "",
                "attributes": dict(l.get("attributes") or {}),
                "flags": link_flags(l.get("flags") or 0),
            }
            for l in span["span_links"]
        ]
    raw = (span.get("meta") or {}).get("_dd.span_links")
    out = []
    for l in json.loads(raw) if raw else []:
        trace = l["trace_id"]
        if isinstance(trace, str):
            trace = int(trace, 16)
        else:
            trace |= (l.get("trace_id_high") or 0) << 64
        sid = l["span_id"]
        out.append(
            {
                "trace_id": f"{trace:032x}",
                "span_id": f"{int(sid, 16) if isinstance(sid, str) else sid:016x}",
                "trace_state": l.get("tracestate") or "",
                "attributes": {k: json_attr(v) for k, v in (l.get("attributes") or {}).items()},
                "flags": link_flags(l.get("flags") or 0),
            }
        )
    return out


def expected_events(span: dict) -> list[dict]:
    raw = (span.get("meta") or {}).get("events")
    return [
        {
            "name": e.get("name", ""),
            "time_unix_nano": e.get("time_unix_nano", 0),
            "attributes": {k: json_attr(v) for k, v in (e.get("attributes") or {}).items()
                           if v is not None},
        }
        for e in (json.loads(raw) if raw else [])
    ]


def expected_otlp(span: dict, chunk: list[dict]) -> dict:
    """One test-agent span as weft must write it (docs/config/datadog-receiver.md)."""
    meta = span.get("meta") or {}
    metrics = span.get("metrics") or {}
    tid = next(
        (int(s["meta"]["_dd.p.tid"], 16) for s in chunk
         if (s.get("meta") or {}).get("_dd.p.tid") and s["trace_id"] == span["trace_id"]),
        0,
    )
    a: dict = {"dd.span.Resource": span.get("resource") or ""}
    prio = next((s["metrics"]["_sampling_priority_v1"] for s in chunk
                 if "_sampling_priority_v1" in (s.get("metrics") or {})), None)
    if prio is not None:
        a["sampling.priority"] = f"{prio:.6f}"
    a["datadog.span.id"] = str(span["span_id"])
    a["datadog.trace.id"] = str(span["trace_id"])
    resource_service = span.get("service") or ""
    if meta.get("_dd.base_service"):
        a["service.name"] = resource_service
        resource_service = meta["_dd.base_service"]
    for k, v in meta.items():
        if k not in CONSUMED_META:
            a[otel_key(k)] = v
    for k, v in metrics.items():
        a[otel_key(k)] = float(v)
    kind = {"server": "SERVER", "client": "CLIENT", "producer": "PRODUCER",
            "consumer": "CONSUMER", "internal": "INTERNAL"}.get(meta.get("span.kind", ""))
    if kind is None:
        kind = {"web": "SERVER", "http": "CLIENT"}.get(span.get("type") or "", "UNSPECIFIED")
    if kind in ("CLIENT", "PRODUCER", "CONSUMER") and "server.address" not in a \
            and "peer.hostname" in meta:
        a["server.address"] = meta["peer.hostname"]
    name = span["name"]
    if name in ("servlet.request", "http.request", "web.request") and "http.method" in meta:
        name = meta["http.method"] + (f" {meta['http.route']}" if "http.route" in meta else "")
    error = span.get("error") or 0
    status = (STATUS_ERROR, meta.get("error.message", meta.get("error.msg", ""))) if error \
        else (STATUS_OK, "")
    parent = span.get("parent_id") or 0
    return {
        "service": resource_service,
        "trace_id": f"{tid << 64 | span['trace_id']:032x}",
        "span_id": f"{span['span_id']:016x}",
        "parent_span_id": f"{parent:016x}" if parent else "",
        "name": name,
        "kind": KIND[kind],
        "start": span["start"],
        "end": span["start"] + span["duration"],
        "status": status,
        "attributes": a,
        "links": expected_links(span),
        "events": expected_events(span),
    }


def written_otlp(s: OutSpan) -> dict:
    span = s.span
    return {
        "service": s.service,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "name": span.name,
        "kind": span.kind,
        "start": span.start_time_unix_nano,
        "end": span.end_time_unix_nano,
        "status": (span.status.code, span.status.message),
        "attributes": s.attributes,
        "links": [
            {
                "trace_id": l.trace_id.hex(),
                "span_id": l.span_id.hex(),
                "trace_state": l.trace_state,
                "attributes": attrs(l.attributes),
                "flags": l.flags,
            }
            for l in span.links
        ],
        "events": [
            {"name": e.name, "time_unix_nano": e.time_unix_nano, "attributes": attrs(e.attributes)}
            for e in span.events
        ],
    }


def assert_same_span(got: dict, want: dict, name: str) -> None:
    for field in want:
        assert got[field] == want[field], (
            f"span {want['span_id']} ({name}), {field}:\n"
            f"  weft wrote     {got[field]!r}\n"
            f"  test agent has {want[field]!r}"
        )


def agent_traces(url: str) -> list[list[dict]]:
    """Every trace the test agent received, as it decoded them (spans grouped by the
    low 64 bits of the trace id)."""
    r = requests.get(f"{url}/test/session/traces", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def test_agent(dd_python, ports, tmp_path, procs):
    """ddapm-test-agent on free loopback ports; returns its base URL."""
    port, otlp_http, otlp_grpc = ports(3)
    p = procs(
        [dd_python, "-m", "ddapm_test_agent.agent", "--host", "127.0.0.1", "--port", port,
         "--otlp-http-port", otlp_http, "--otlp-grpc-port", otlp_grpc,
         "--snapshot-dir", tmp_path / "snapshots", "--log-level", "WARNING"],
        clean_env(),
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{url}/info", timeout=1).status_code == 200
        except requests.RequestException:
            return p.poll() is not None

    assert wait_until(up, 60, interval=0.1), "ddapm-test-agent did not answer /info in 60s"
    assert p.poll() is None, f"ddapm-test-agent exited {p.returncode}: {p.communicate()}"
    yield url
    p.terminate()
    p.wait(timeout=10)


@pytest.mark.parametrize("bits", ["128", "64"])
@pytest.mark.parametrize("api", ["v0.5", "v0.4"])
def test_decoding_matches_ddapm_test_agent(api, bits, weft, ports, tmp_path, dd_python,
                                           test_agent):
    dd_port, tee_port = ports(2)
    out = tmp_path / "traces.jsonl"
    w = weft(
        {
            "receivers": {"datadog": {"endpoint": f"127.0.0.1:{dd_port}"}},
            "processors": {"batch": {"timeout": "200ms"}},
            "exporters": {"file": {"path": str(out)}},
            "service": {"pipelines": {"traces": {
                "receivers": ["datadog"], "processors": ["batch"], "exporters": ["file"]}}},
        }
    )
    # weft first: the tracer gets weft's answers (its /info too), the test agent the
    # same bytes.
    tee = DatadogTee(tee_port, [f"http://127.0.0.1:{dd_port}", test_agent]).start()
    try:
        p = subprocess.run(
            [dd_python, str(DD_APP)], env=dd_env(tee.url, api, bits == "128"), cwd=E2E_DIR,
            capture_output=True, text=True, timeout=60,
        )
    finally:
        tee.stop()
    app = app_json("dd_app.py", p.returncode, p.stdout, p.stderr)
    trace_reqs = tee.trace_requests()
    assert [(r.path, r.statuses) for r in trace_reqs] == [(f"/{api}/traces", [200, 200])]
    headers = {k.lower(): v for k, v in trace_reqs[0].headers.items()}

    traces = agent_traces(test_agent)
    assert len(traces) == 1, traces
    chunk = traces[0]
    agent_spans = {f"{s['span_id']:016x}": s for s in chunk}

    # The test agent read what the app says it sent.
    assert sorted(agent_spans) == sorted(s["span_id"] for s in app["spans"])
    for s in app["spans"]:
        t = agent_spans[s["span_id"]]
        assert (t["trace_id"], t["name"], t["service"], t["resource"], t.get("error") or 0,
                f"{t.get('parent_id') or 0:016x}" if t.get("parent_id") else "") == (
            int(app["trace_id_low"]), s["name"], s["service"], s["resource"], s["error"],
            s["parent_span_id"],
        )
    root = agent_spans[app["spans"][0]["span_id"]]
    assert root["meta"].get("_dd.p.tid", "") == app["trace_id_high"]
    assert bool(app["trace_id_high"]) == (bits == "128")

    wait_for_spans(out, len(chunk), w, timeout=20)
    assert w.stop() == 0
    written = out_spans(file_rows(out))
    assert sorted(s.span.span_id.hex() for s in written) == sorted(agent_spans)

    for s in written:
        sid = s.span.span_id.hex()
        want = expected_otlp(agent_spans[sid], chunk)
        got = written_otlp(s)
        assert_same_span(got, want, agent_spans[sid]["name"])
        assert got["trace_id"] == app["trace_id"]
        # Resource and scope from the tracer's headers and the first `version` tag.
        version = next(t["meta"]["version"] for t in chunk if "version" in (t.get("meta") or {}))
        want_resource = {
            "service.name": want["service"],
            "telemetry.sdk.name": "Datadog",
            "telemetry.sdk.language": headers["datadog-meta-lang"],
            "telemetry.sdk.version": "Datadog-" + headers["datadog-meta-tracer-version"],
            "process.runtime.version": headers["datadog-meta-lang-version"],
            "service.version": version,
        }
        if headers.get("datadog-container-id"):
            want_resource["container.id"] = headers["datadog-container-id"]
        assert s.resource == want_resource, sid
        assert s.resource_schema_url == "https://opentelemetry.io/schemas/1.38.0"
        scope = (s.scope.name, s.scope.version)
        assert scope == ("Datadog", headers["datadog-meta-tracer-version"])
