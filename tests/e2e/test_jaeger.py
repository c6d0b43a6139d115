"""Jaeger in and out, against real peers.

(a) The OpenTelemetry Python Jaeger exporters (SDK 1.21, in .venv-jaeger) send a
    known span tree into weft's jaeger receiver over Thrift/HTTP, the agent's UDP
    port (compact Thrift) and gRPC; weft's file output is compared with what the
    app printed: every id, name, kind, status, attribute, event and link.
(b) weft's jaeger exporter sends to independent decoders built from the types
    those exporters ship: a grpcio server from their generated
    CollectorServiceServicer, and an HTTP server decoding with their generated
    jaeger.thrift types and Thrift's TBinaryProtocol. Every field is checked
    against an independent Python rendering of the collector's OTLP -> Jaeger
    rules.
(c) OTLP -> weft's jaeger exporter -> weft's jaeger receiver -> file, an extra
    round-trip check.
Bad input: malformed Thrift over HTTP is 400 and counted; garbage and oversized
datagrams are counted and weft keeps serving.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import queue
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from harness import E2E_DIR, REPO_ROOT, app_result, run_app, side_python, wait_for_metric, wait_until
from otlp_support import parse_otlp_json

BATCH = {"batch": {"timeout": "100ms"}}
KINDS = {"UNSPECIFIED": 0, "INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
KIND_TAGS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}


# ---------------------------------------------------------------------------
# The Jaeger venv and its processes




@functools.cache
def jaeger_python() -> str:
    """The Python with the Jaeger exporters (requirements-jaeger.txt)."""
    return side_python("jaeger")

def clean_env() -> dict:
    """This environment without OpenTelemetry settings the exporters would read."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def run_jaeger_app(*args: str) -> dict:
    """Run apps/jaeger_app.py under the Jaeger venv; return what it printed."""
    proc = subprocess.run(
        [jaeger_python(), str(E2E_DIR / "apps" / "jaeger_app.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert proc.returncode == 0, (
        f"jaeger_app exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["result"] == "SUCCESS", out
    return out


class JaegerPeer:
    """peers/jaeger_peer.py as a subprocess of the Jaeger venv."""

    def __init__(self, mode: str, port: int, out: Path):
        self.mode, self.port, self.out = mode, port, out
        self.proc = subprocess.Popen(
            [jaeger_python(), str(E2E_DIR / "peers" / "jaeger_peer.py"), mode, str(port), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(),
        )
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(ln) for ln in self.proc.stdout], daemon=True).start()
        seen = []
        while True:
            try:
                line = lines.get(timeout=30)
            except queue.Empty:
                self.stop()
                raise AssertionError(f"jaeger peer not ready after 30s: {seen}")
            if line.strip() == "READY":
                return
            seen.append(line)

    def records(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(ln) for ln in self.out.read_text().splitlines() if ln.strip()]

    def spans(self) -> list[tuple[dict, dict]]:
        """(record, span) for every span received."""
        return [(r, s) for r in self.records() for s in r["batch"]["spans"]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def jaeger_peer(tmp_path):
    peers: list[JaegerPeer] = []

    def start(mode: str, port: int) -> JaegerPeer:
        peer = JaegerPeer(mode, port, tmp_path / f"peer-{mode}-{port}.jsonl")
        peers.append(peer)
        return peer

    yield start
    for p in peers:
        p.stop()


# ---------------------------------------------------------------------------
# weft's file output


def file_rows(path: Path) -> list[tuple]:
    """(resource attributes, scope, span) for every span in the file exporter's output."""
    if not path.exists():
        return []
    rows = []
    for ln in path.read_text().splitlines():
        if not ln.strip():
            continue
        req = parse_otlp_json(ln, ExportTraceServiceRequest)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    rows.append((rs.resource.attributes, ss.scope, span))
    return rows


def value_of(v) -> tuple:
    """An OTLP AnyValue as (type, value)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return ("str", v.string_value)
    if kind == "int_value":
        return ("int", v.int_value)
    if kind == "double_value":
        return ("float", v.double_value)
    if kind == "bool_value":
        return ("bool", v.bool_value)
    if kind == "bytes_value":
        return ("bytes", v.bytes_value.hex())
    if kind == "array_value":
        return ("array", [value_of(x) for x in v.array_value.values])
    return (kind, None)


def attrs_of(kvs) -> dict:
    out = {kv.key: value_of(kv.value) for kv in kvs}
    assert len(out) == len(kvs), f"duplicate attribute keys in {[kv.key for kv in kvs]}"
    return out


def app_typed(t: dict) -> tuple:
    """An attribute as the Jaeger exporters send it: tuples as their str()."""
    return ("str", t["value"]) if t["type"] == "tuple" else (t["type"], t["value"])


def file_exporter_config(out: Path, receivers: dict) -> dict:
    return {
        "receivers": receivers,
        "processors": BATCH,
        "exporters": {"file": {"path": str(out)}},
        "service": {
            "pipelines": {
                "traces": {"receivers": list(receivers), "processors": ["batch"], "exporters": ["file"]}
            }
        },
    }


def wait_for_rows(w, out: Path, n: int) -> list[tuple]:
    assert wait_until(lambda: len(file_rows(out)) >= n, 20), (
        f"file has {len(file_rows(out))} spans, want {n}\n{w.log_tail()}"
    )
    return file_rows(out)


# ---------------------------------------------------------------------------
# (a) real Jaeger clients into weft's receiver


def assert_client_spans(app: dict, rows: list[tuple], transport: str) -> None:
    """weft's OTLP for what the Jaeger exporter sent, by the collector's rules."""
    assert len(rows) == len(app["spans"]) == 3
    by_id = {span.span_id.hex(): (res, scope, span) for res, scope, span in rows}
    assert sorted(by_id) == sorted(s["span_id"] for s in app["spans"])
    resource = {k: app_typed(v) for k, v in app["resource"].items()}
    for sent in app["spans"]:
        res, scope, span = by_id[sent["span_id"]]
        where = f"{transport} {sent['name']}"
        # Thrift clients send only the service name as the process; the proto
        # client sends every resource attribute as process tags.
        want_resource = resource if transport == "grpc" else {"service.name": ("str", app["service"])}
        assert attrs_of(res) == want_resource, where
        # otel.scope.* become the scope; otel.library.* stay attributes.
        assert (scope.name, scope.version) == tuple(app["scope"]), where
        assert span.trace_id.hex() == sent["trace_id"], where
        assert span.parent_span_id.hex() == sent["parent_span_id"], where
        assert span.name == sent["name"], where
        assert span.kind == KINDS[sent["kind"]], where
        code, description = sent["status"]
        assert span.status.code == STATUS[code], where
        assert span.status.message == (description or ""), where
        assert span.flags == sent["flags"] == 1, where
        assert span.trace_state == "", where
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (sent["start"], sent["end"]), where
        # The exporters put resource attributes on every span too.
        want_attrs = {k: app_typed(v) for k, v in sent["attributes"].items()}
        want_attrs.update(resource)
        want_attrs["otel.library.name"] = ("str", app["scope"][0])
        want_attrs["otel.library.version"] = ("str", app["scope"][1])
        assert attrs_of(span.attributes) == want_attrs, where
        # The exporters name an event in a "message" field; the collector reads
        # the name from "event", so it stays an attribute.
        assert len(span.events) == len(sent["events"]), where
        for got, ev in zip(span.events, sent["events"]):
            assert got.name == "", where
            assert got.time_unix_nano == ev["time"], where
            want_ev = {k: app_typed(v) for k, v in ev["attributes"].items()}
            want_ev["message"] = ("str", ev["name"])
            assert attrs_of(got.attributes) == want_ev, where
        assert [(l.trace_id.hex(), l.span_id.hex(), attrs_of(l.attributes)) for l in span.links] == [
            (l["trace_id"], l["span_id"], {"opentracing.ref_type": ("str", "follows_from")})
            for l in sent["links"]
        ], where
        assert span.dropped_attributes_count == span.dropped_events_count == 0, where


@pytest.mark.parametrize("transport", ["thrift-http", "thrift-udp", "grpc"])
def test_jaeger_clients_into_weft(weft, ports, tmp_path, transport):
    rcv, = ports(1)
    out = tmp_path / "traces.jsonl"
    protocol, args, metric_transport = {
        "thrift-http": ("thrift_http", [f"http://127.0.0.1:{rcv}/api/traces"], "collector_http"),
        "thrift-udp": ("thrift_compact", ["127.0.0.1", str(rcv)], "udp_thrift_compact"),
        "grpc": ("grpc", [f"127.0.0.1:{rcv}"], "grpc"),
    }[transport]
    w = weft(file_exporter_config(out, {"jaeger": {"protocols": {protocol: {"endpoint": f"127.0.0.1:{rcv}"}}}}))
    app = run_jaeger_app(transport, *args)
    rows = wait_for_rows(w, out, 3)
    assert_client_spans(app, rows, transport)
    assert (
        wait_for_metric(
            w, "otelcol_receiver_accepted_spans", 3, receiver="jaeger", transport=metric_transport
        )
        == 3
    )
    assert w.stop() == 0
    assert len(file_rows(out)) == 3


# ---------------------------------------------------------------------------
# (b) weft's exporter into decoders built from the Jaeger exporters' own types


def go_json(v) -> str:
    """An OTLP array or map attribute as the collector writes it (Go's JSON)."""
    def raw(x):
        kind = x.WhichOneof("value")
        if kind == "array_value":
            return [raw(y) for y in x.array_value.values]
        if kind == "kvlist_value":
            return {kv.key: raw(kv.value) for kv in x.kvlist_value.values}
        if kind == "bytes_value":
            return base64.b64encode(x.bytes_value).decode()
        return getattr(x, kind) if kind else None

    return json.dumps(raw(v), separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def jaeger_tag(key: str, v, thrift: bool) -> dict:
    kind = v.WhichOneof("value")
    names = {
        "string_value": ("STRING", "STRING"),
        "bool_value": ("BOOL", "BOOL"),
        "int_value": ("INT64", "LONG"),
        "double_value": ("FLOAT64", "DOUBLE"),
        "bytes_value": ("BINARY", "BINARY"),
    }
    if kind in names:
        value = v.bytes_value.hex() if kind == "bytes_value" else getattr(v, kind)
        return {"key": key, "type": names[kind][thrift], "value": value}
    return {"key": key, "type": "STRING", "value": go_json(v)}


def st(key: str, value: str) -> dict:
    return {"key": key, "type": "STRING", "value": value}


def expected_jaeger(req: ExportTraceServiceRequest, thrift: bool) -> tuple[dict, dict]:
    """(process, {span id hex: span}) the collector's translator makes of `req`."""
    assert len(req.resource_spans) == 1
    rs = req.resource_spans[0]
    attrs = rs.resource.attributes
    service = next(kv.value.string_value for kv in attrs if kv.key == "service.name")
    process = {
        "service_name": service,
        "tags": [jaeger_tag(kv.key, kv.value, thrift) for kv in attrs if kv.key != "service.name"],
    }
    spans = {}
    for ss in rs.scope_spans:
        for s in ss.spans:
            tags = [st("otel.scope.name", ss.scope.name), st("otel.scope.version", ss.scope.version)]
            tags += [jaeger_tag(kv.key, kv.value, thrift) for kv in s.attributes]
            tags.append(st("span.kind", KIND_TAGS[s.kind]))
            if s.status.code == 2:
                tags.append(st("otel.status_code", "ERROR"))
                tags.append({"key": "error", "type": "BOOL", "value": True})
            elif s.status.code == 1:
                tags.append(st("otel.status_code", "OK"))
            if s.status.message:
                tags.append(st("otel.status_description", s.status.message))
            if s.trace_state:
                tags.append(st("w3c.tracestate", s.trace_state))
            refs = []
            if s.parent_span_id:
                refs.append({"trace_id": s.trace_id.hex(), "span_id": s.parent_span_id.hex(), "ref_type": "CHILD_OF"})
            for link in s.links:
                # Link attributes other than opentracing.ref_type have no Jaeger form.
                refs.append({"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(), "ref_type": "FOLLOWS_FROM"})
            logs = []
            for e in s.events:
                fields = ([st("event", e.name)] if e.name else []) + [
                    jaeger_tag(kv.key, kv.value, thrift) for kv in e.attributes
                ]
                ts = e.time_unix_nano
                logs.append({"timestamp": ts // 1000 if thrift else [ts // 10**9, ts % 10**9], "fields": fields})
            start, end = s.start_time_unix_nano, s.end_time_unix_nano
            span = {
                "trace_id": s.trace_id.hex(),
                "span_id": s.span_id.hex(),
                "operation_name": s.name,
                "references": refs,
                "flags": 1 if s.flags & 1 else 0,
                "tags": tags,
                "logs": logs,
            }
            if thrift:
                span["parent_span_id"] = (s.parent_span_id or bytes(8)).hex()
                span["start_time"] = start // 1000
                span["duration"] = (end - start) // 1000
            else:
                span["start_time"] = [start // 10**9, start % 10**9]
                span["duration"] = [(end - start) // 10**9, (end - start) % 10**9]
                span["process"] = None
            spans[s.span_id.hex()] = span
    return process, spans


@pytest.mark.parametrize("protocol", ["grpc", "thrift_http"])
def test_weft_jaeger_exporter_to_independent_decoders(weft, jaeger_peer, ports, protocol):
    rcv, peer_port = ports(2)
    peer = jaeger_peer("grpc" if protocol == "grpc" else "thrift-http", peer_port)
    if protocol == "grpc":
        exporter = {"endpoint": f"127.0.0.1:{peer_port}", "tls": {"insecure": True}}
    else:
        exporter = {"protocol": "thrift_http", "endpoint": f"http://127.0.0.1:{peer_port}"}
    exporter["headers"] = {"x-tenant": "acme"}
    w = weft(
        {
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{rcv}"}}}},
            "processors": BATCH,
            "exporters": {"jaeger": exporter},
            "service": {
                "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["jaeger"]}}
            },
        }
    )
    out = app_result(run_app("grpc", f"127.0.0.1:{rcv}"))
    assert wait_until(lambda: len(peer.spans()) >= 3, 20), f"peer got {peer.records()}\n{w.log_tail()}"
    req = ExportTraceServiceRequest.FromString(base64.b64decode(out["request"]))
    thrift = protocol == "thrift_http"
    want_process, want_spans = expected_jaeger(req, thrift)
    got = peer.spans()
    assert sorted(s["span_id"] for _, s in got) == sorted(want_spans)
    for record, span in got:
        assert record["headers"]["x-tenant"] == "acme"
        if thrift:
            assert record["path"] == "/api/traces"
            assert record["headers"]["content-type"] == "application/x-thrift"
        assert record["batch"]["process"] == want_process
        want = want_spans[span["span_id"]]
        for key in want:
            assert span[key] == want[key], f"{protocol} {span['operation_name']}: {key}"
        assert set(span) == set(want)
        assert span["trace_id"] == out["trace_id"]
    assert wait_for_metric(w, "otelcol_exporter_sent_spans", 3, exporter="jaeger") == 3
    assert w.stop() == 0
    assert len(peer.spans()) == 3


# ---------------------------------------------------------------------------
# (c) OTLP -> jaeger exporter -> jaeger receiver -> file


def otlp_value_after_jaeger(v) -> tuple:
    kind = v.WhichOneof("value")
    if kind in ("array_value", "kvlist_value"):
        return ("str", go_json(v))
    return value_of(v)


@pytest.mark.parametrize("protocol", ["grpc", "thrift_http"])
def test_round_trip_through_weft_jaeger_exporter_and_receiver(weft, ports, tmp_path, protocol):
    otlp_port, jaeger_port = ports(2)
    out = tmp_path / "traces.jsonl"
    if protocol == "grpc":
        exporter = {"endpoint": f"127.0.0.1:{jaeger_port}", "tls": {"insecure": True}}
    else:
        exporter = {"protocol": "thrift_http", "endpoint": f"127.0.0.1:{jaeger_port}"}
    w = weft(
        {
            "receivers": {
                "otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{otlp_port}"}}},
                "jaeger": {"protocols": {protocol: {"endpoint": f"127.0.0.1:{jaeger_port}"}}},
            },
            "processors": BATCH,
            "exporters": {"jaeger": exporter, "file": {"path": str(out)}},
            "service": {
                "pipelines": {
                    "traces/in": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["jaeger"]},
                    "traces/out": {"receivers": ["jaeger"], "processors": ["batch"], "exporters": ["file"]},
                }
            },
        }
    )
    sent = app_result(run_app("grpc", f"127.0.0.1:{otlp_port}"))
    rows = wait_for_rows(w, out, 3)
    req = ExportTraceServiceRequest.FromString(base64.b64decode(sent["request"]))
    rs = req.resource_spans[0]
    want_resource = {kv.key: otlp_value_after_jaeger(kv.value) for kv in rs.resource.attributes}
    want = {s.span_id.hex(): (ss.scope, s) for ss in rs.scope_spans for s in ss.spans}
    assert sorted(span.span_id.hex() for _, _, span in rows) == sorted(want)
    thrift = protocol == "thrift_http"
    for res, scope, span in rows:
        want_scope, s = want[span.span_id.hex()]
        where = f"{protocol} {s.name}"
        assert attrs_of(res) == want_resource, where
        assert (scope.name, scope.version) == (want_scope.name, want_scope.version), where
        assert span.trace_id == s.trace_id, where
        assert span.parent_span_id == s.parent_span_id, where
        assert (span.name, span.kind) == (s.name, s.kind), where
        assert (span.status.code, span.status.message) == (s.status.code, s.status.message), where
        # Only the sampled bit crosses Jaeger (the SDK sets only is-remote bits).
        assert span.flags == s.flags & 1, where
        start, end = s.start_time_unix_nano, s.end_time_unix_nano
        if thrift:
            # Thrift carries microseconds: start and duration each truncated.
            end = (start // 1000 + (end - start) // 1000) * 1000
            start = start // 1000 * 1000
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (start, end), where
        assert attrs_of(span.attributes) == {
            kv.key: otlp_value_after_jaeger(kv.value) for kv in s.attributes
        }, where
        assert [(e.name, e.time_unix_nano, attrs_of(e.attributes)) for e in span.events] == [
            (
                e.name,
                e.time_unix_nano // 1000 * 1000 if thrift else e.time_unix_nano,
                {kv.key: otlp_value_after_jaeger(kv.value) for kv in e.attributes},
            )
            for e in s.events
        ], where
        # A link keeps its ids; its attributes become the reference type.
        assert [(l.trace_id, l.span_id, attrs_of(l.attributes)) for l in span.links] == [
            (l.trace_id, l.span_id, {"opentracing.ref_type": ("str", "follows_from")}) for l in s.links
        ], where
    assert wait_for_metric(w, "otelcol_exporter_sent_spans", 3, exporter="jaeger") == 3
    transport = "grpc" if protocol == "grpc" else "collector_http"
    assert wait_for_metric(w, "otelcol_receiver_accepted_spans", 3, receiver="jaeger", transport=transport) == 3
    assert w.stop() == 0


# ---------------------------------------------------------------------------
# Bad input


def test_bad_thrift_and_datagrams_are_counted_and_weft_keeps_serving(weft, ports, tmp_path):
    http_port, compact_port, binary_port = ports(3)
    out = tmp_path / "traces.jsonl"
    w = weft(
        file_exporter_config(
            out,
            {
                "jaeger": {
                    "protocols": {
                        "thrift_http": {"endpoint": f"127.0.0.1:{http_port}"},
                        "thrift_compact": {"endpoint": f"127.0.0.1:{compact_port}", "max_packet_size": 8000},
                        "thrift_binary": {"endpoint": f"127.0.0.1:{binary_port}"},
                    }
                }
            },
        )
    )
    url = f"http://127.0.0.1:{http_port}/api/traces"
    r = requests.post(url, data=b"\x0c\x00\x01garbage", headers={"Content-Type": "application/x-thrift"}, timeout=10)
    assert r.status_code == 400
    assert r.text.startswith("Unable to process request body: cannot decode the Thrift batch:"), r.text
    r = requests.post(url, data=b"{}", headers={"Content-Type": "application/json"}, timeout=10)
    assert (r.status_code, r.text) == (400, "Unsupported content type: application/json\n")
    r = requests.get(url, timeout=10)
    assert r.status_code == 405
    r = requests.post(f"http://127.0.0.1:{http_port}/api/v2/spans", data=b"", timeout=10)
    assert r.status_code == 404
    assert (
        wait_for_metric(w, "weft_receiver_bad_requests", 3, receiver="jaeger", transport="collector_http")
        == 3
    )

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x82" * 8001, ("127.0.0.1", compact_port))  # over max_packet_size
        s.sendto(b"\x82\x21garbage", ("127.0.0.1", compact_port))
        s.sendto(b"\x80\x01\x00\x04" + b"\xff" * 2000, ("127.0.0.1", binary_port))
        s.sendto(b"", ("127.0.0.1", binary_port))
    assert (
        wait_for_metric(w, "weft_receiver_bad_requests", 2, receiver="jaeger", transport="udp_thrift_compact")
        == 2
    )
    assert (
        wait_for_metric(w, "weft_receiver_bad_requests", 2, receiver="jaeger", transport="udp_thrift_binary")
        == 2
    )
    assert w.alive() and w.health_status() == 200
    # A real client still gets through.
    app = run_jaeger_app("thrift-udp", "127.0.0.1", str(compact_port))
    assert_client_spans(app, wait_for_rows(w, out, 3), "thrift-udp")
    assert w.stop() == 0
