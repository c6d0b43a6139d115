"""Zipkin both ways, with real peers.

Into weft's zipkin receiver: the OpenTelemetry SDK's Zipkin JSON and protobuf
exporters and py_zipkin (v2 JSON, v2 protobuf, v1 JSON); weft's file exporter output
is compared field by field with what each client sent.

Out of weft's zipkin exporter: JSON validated against openzipkin's zipkin2-api schema
(tests/e2e/data/zipkin2-api.yaml) and protobuf decoded with the `zipkin_pb2` types the
SDK's Zipkin protobuf exporter ships, both checked field by field; then OTLP -> zipkin
exporter -> weft's own zipkin receiver -> file as a round trip.

Bad input: the documented status codes, counted in weft_receiver_bad_requests.

The Zipkin protobuf exporter pins protobuf 3, which cannot live in .venv next to the
OTLP peers; the `proto_python` fixture builds .venv-zipkin-proto from
requirements-zipkin-proto.txt once (and again only when that file changes).
"""

from __future__ import annotations

import gzip
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import jsonschema
import pytest
import requests
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from harness import E2E_DIR, REPO_ROOT, otlp_receiver, side_python, wait_for_metric, wait_until
from otlp_support import assert_rows_equal, flatten_spans, metric_sum, parse_otlp_json

APP = E2E_DIR / "apps" / "zipkin_app.py"
PB2_JSON = E2E_DIR / "peers" / "zipkin_pb2_json.py"
SCHEMA = E2E_DIR / "data" / "zipkin2-api.yaml"

JSON = "application/json"
PROTO = "application/x-protobuf"

# OTLP span kinds by name.
KIND = {"UNSPECIFIED": 0, "INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}

# ---------------------------------------------------------------------------
# The protobuf exporter's venv


@pytest.fixture(scope="session")
def proto_python() -> Path:
    """The Python of .venv-zipkin-proto (requirements-zipkin-proto.txt)."""
    return Path(side_python("zipkin-proto"))

# ---------------------------------------------------------------------------
# weft and its file output


def file_config(zipkin_port: int, out: Path, **receiver) -> dict:
    return {
        "receivers": {"zipkin": {"endpoint": f"127.0.0.1:{zipkin_port}", **receiver}},
        "exporters": {"file": {"path": str(out)}},
        "service": {"pipelines": {"traces": {"receivers": ["zipkin"], "exporters": ["file"]}}},
    }


def file_requests(out: Path) -> list[ExportTraceServiceRequest]:
    if not out.exists():
        return []
    return [
        parse_otlp_json(line, ExportTraceServiceRequest)
        for line in out.read_text().splitlines()
        if line.strip()
    ]


def read_rows(out: Path, count: int, w) -> list:
    assert wait_until(lambda: len(flatten_spans(file_requests(out))) >= count, 20), (
        f"{out} holds {len(flatten_spans(file_requests(out)))} spans, want {count}\n{w.log_tail()}"
    )
    rows = flatten_spans(file_requests(out))
    assert len(rows) == count, f"{len(rows)} spans in {out}, want {count}"
    return rows


def value(v: AnyValue):
    """An OTLP AnyValue as plain Python."""
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


def by_span_id(rows) -> dict:
    out = {}
    for r in rows:
        out[r.item.span_id.hex()] = (
            attrs(Resource.FromString(r.resource).attributes),
            InstrumentationScope.FromString(r.scope),
            r.item,
        )
    assert len(out) == len(rows), "duplicate span ids"
    return out


def bad_requests(w) -> float:
    return metric_sum(w.metrics(), "weft_receiver_bad_requests", receiver="zipkin", transport="http")


# ---------------------------------------------------------------------------
# The OpenTelemetry SDK's Zipkin exporters into weft


def usec(ns: int) -> int:
    """The SDK's nanoseconds-to-microseconds rounding."""
    return (ns + 500) // 1000


def zipkin_tag(v) -> str:
    """How the SDK's Zipkin encoder writes an attribute value as a tag."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return json.dumps([zipkin_tag(x) for x in v], separators=(",", ":"))
    return str(v)


def run_app(python, protocol: str, url: str) -> dict:
    proc = subprocess.run(
        [str(python), str(APP), protocol, url], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"zipkin_app {protocol} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["result"] == "SUCCESS", out
    assert out["status"] == 202
    return out


def assert_sdk_spans(sent: dict, rows) -> None:
    """weft's output against the SDK's spans, through the documented mapping."""
    got = by_span_id(rows)
    assert sorted(got) == sorted(s["span_id"] for s in sent["spans"])
    resource_keys = {"service.name", "service.instance.id", "deployment.environment", "telemetry.sdk.language",
                     "telemetry.sdk.name", "telemetry.sdk.version"}
    assert set(sent["resource"]) == resource_keys | {"team"}, sent["resource"]
    want_resource = {k: v for k, v in sent["resource"].items() if k in resource_keys}
    for s in sent["spans"]:
        resource, scope, span = got[s["span_id"]]
        assert resource == want_resource
        assert (scope.name, scope.version) == (sent["scope"]["name"], sent["scope"]["version"])
        assert span.trace_id.hex() == sent["trace_id"]
        assert span.parent_span_id.hex() == s["parent_span_id"], s["name"]
        assert span.name == s["name"]
        # The SDK's Zipkin encoder sends internal spans without a kind.
        want_kind = "UNSPECIFIED" if s["kind"] == "INTERNAL" else s["kind"]
        assert span.kind == KIND[want_kind], s["name"]
        start, dur = usec(s["start"]), usec(s["end"] - s["start"])
        assert span.start_time_unix_nano == start * 1000
        assert span.end_time_unix_nano == (start + dur) * 1000
        assert span.status.code == STATUS[s["status_code"]], s["name"]
        assert span.status.message == s["status_description"], s["name"]
        want_attrs = {k: zipkin_tag(v) for k, v in s["attributes"].items()}
        # The resource attribute that is no resource convention stays on the span;
        # the local endpoint the exporter was given becomes net.host.*.
        want_attrs.update({"team": "payments", "net.host.ip": "127.0.0.1", "net.host.port": 8080})
        assert attrs(span.attributes) == want_attrs, s["name"]
        assert [(e.name, e.time_unix_nano, attrs(e.attributes)) for e in span.events] == [
            (e["name"], usec(e["time"]) * 1000, e["attributes"]) for e in s["events"]
        ], s["name"]
        assert not span.links


def test_sdk_zipkin_json_exporter_into_weft(weft, port, tmp_path):
    zp, out = port(), tmp_path / "spans.jsonl"
    w = weft(file_config(zp, out))
    sent = run_app(sys.executable, "json", f"http://127.0.0.1:{zp}/api/v2/spans")
    assert sent["content_type"] == JSON
    assert_sdk_spans(sent, read_rows(out, len(sent["spans"]), w))
    assert wait_for_metric(w, "otelcol_receiver_accepted_spans", 5, receiver="zipkin", transport="http") == 5
    assert bad_requests(w) == 0


def test_sdk_zipkin_proto_exporter_into_weft(weft, port, tmp_path, proto_python):
    zp, out = port(), tmp_path / "spans.jsonl"
    w = weft(file_config(zp, out))
    sent = run_app(proto_python, "proto", f"http://127.0.0.1:{zp}/api/v2/spans")
    assert sent["content_type"] == PROTO
    # What the exporter posted, read back with its own generated types.
    assert sorted(d["id"] for d in sent["decoded"]) == sorted(s["span_id"] for s in sent["spans"])
    assert {d["traceIdBytes"] for d in sent["decoded"]} == {16}
    assert_sdk_spans(sent, read_rows(out, len(sent["spans"]), w))
    assert wait_for_metric(w, "otelcol_receiver_accepted_spans", 5, receiver="zipkin", transport="http") == 5


# ---------------------------------------------------------------------------
# py_zipkin into weft


class RecordingTransport:
    """A py_zipkin transport that POSTs like a Zipkin reporter and keeps what it sent."""

    def __init__(self, base: str, encoding):
        from py_zipkin import Encoding

        self.url = base + ("/api/v1/spans" if encoding == Encoding.V1_JSON else "/api/v2/spans")
        self.content_type = PROTO if encoding == Encoding.V2_PROTO3 else JSON
        self.sent: list[tuple[bytes, int]] = []

    def get_max_payload_bytes(self):
        return None

    def __call__(self, payload):
        body = payload.encode() if isinstance(payload, str) else payload
        r = requests.post(self.url, data=body, headers={"Content-Type": self.content_type}, timeout=10)
        self.sent.append((body, r.status_code))


def py_zipkin_trace(base: str, encoding) -> tuple[RecordingTransport, dict]:
    from py_zipkin import Encoding, Kind
    from py_zipkin.transport import BaseTransportHandler
    from py_zipkin.zipkin import zipkin_span

    recorder = RecordingTransport(base, encoding)

    class Transport(BaseTransportHandler):
        def get_max_payload_bytes(self):
            return None

        def send(self, payload):
            recorder(payload)

    with zipkin_span(
        service_name="py-zipkin-svc",
        span_name="Root Op",
        transport_handler=Transport(),
        sample_rate=100.0,
        encoding=encoding,
        use_128bit_trace_id=encoding == Encoding.V2_JSON,
        binary_annotations={"http.method": "GET", "retries": "3"},
        kind=Kind.SERVER,
        host="10.1.1.1",
        port=8080,
    ) as root:
        root.add_annotation("cache.miss")
        with zipkin_span(
            service_name="py-zipkin-svc",
            span_name="Child Call",
            kind=Kind.CLIENT,
            binary_annotations={"db.name": "users"},
        ) as child:
            child.add_sa_binary_annotation(port=5432, service_name="postgres", host="10.0.0.9")
            child.update_binary_annotations({"error": "connection reset"})
    ids = {
        "trace_id": root.zipkin_attrs.trace_id,
        "root": root.zipkin_attrs.span_id,
        "child": child.zipkin_attrs.span_id,
    }
    return recorder, ids


def sent_v2_spans(body: bytes, proto: bool) -> list[dict]:
    """The v2 spans py_zipkin posted, decoded with its own types, in JSON's shape."""
    if not proto:
        return json.loads(body)
    import ipaddress

    from py_zipkin.encoding.protobuf import zipkin_pb2

    kinds = {1: "CLIENT", 2: "SERVER", 3: "PRODUCER", 4: "CONSUMER"}
    out = []
    for s in zipkin_pb2.ListOfSpans.FromString(body).spans:
        def ep(e, present):
            if not present:
                return None
            d = {"serviceName": e.service_name, "port": e.port}
            if e.ipv4:
                d["ipv4"] = str(ipaddress.IPv4Address(e.ipv4))
            return d

        d = {
            "traceId": s.trace_id.hex(), "id": s.id.hex(), "name": s.name,
            "timestamp": s.timestamp, "duration": s.duration, "kind": kinds.get(s.kind),
            "localEndpoint": ep(s.local_endpoint, s.HasField("local_endpoint")),
            "tags": dict(s.tags),
            "annotations": [{"timestamp": a.timestamp, "value": a.value} for a in s.annotations],
        }
        if s.parent_id:
            d["parentId"] = s.parent_id.hex()
        if s.HasField("remote_endpoint"):
            d["remoteEndpoint"] = ep(s.remote_endpoint, True)
        out.append(d)
    return out


def expected_from_v2(z: dict) -> tuple[dict, Span]:
    """The documented v2 -> OTLP mapping, for the fields py_zipkin sends."""
    tags = dict(z.get("tags") or {})
    status = Status()
    if "error" in tags:
        status = Status(code=2, message=tags.pop("error"))
    span = Span(
        trace_id=bytes.fromhex(z["traceId"].rjust(32, "0")),
        span_id=bytes.fromhex(z["id"]),
        parent_span_id=bytes.fromhex(z.get("parentId") or ""),
        name=z["name"],
        kind=KIND[z["kind"]],
        start_time_unix_nano=z["timestamp"] * 1000,
        end_time_unix_nano=(z["timestamp"] + z["duration"]) * 1000,
        status=status,
    )
    kvs = {k: AnyValue(string_value=v) for k, v in sorted(tags.items())}
    local = z["localEndpoint"]
    kvs["net.host.ip"] = AnyValue(string_value=local["ipv4"])
    kvs["net.host.port"] = AnyValue(int_value=local["port"])
    remote = z.get("remoteEndpoint")
    if remote:
        kvs["peer.service"] = AnyValue(string_value=remote["serviceName"])
        kvs["net.peer.ip"] = AnyValue(string_value=remote["ipv4"])
        kvs["net.peer.port"] = AnyValue(int_value=remote["port"])
    span.attributes.extend(KeyValue(key=k, value=v) for k, v in kvs.items())
    for a in z.get("annotations") or []:
        span.events.add(time_unix_nano=a["timestamp"] * 1000, name=a["value"])
    return {"service.name": local["serviceName"]}, span


@pytest.mark.parametrize("encoding_name", ["V2_JSON", "V2_PROTO3"])
def test_py_zipkin_v2_into_weft(weft, port, tmp_path, encoding_name):
    from py_zipkin import Encoding

    encoding = getattr(Encoding, encoding_name)
    zp, out = port(), tmp_path / "spans.jsonl"
    w = weft(file_config(zp, out))
    recorder, ids = py_zipkin_trace(f"http://127.0.0.1:{zp}", encoding)
    assert [status for _, status in recorder.sent] == [202]
    sent = sent_v2_spans(recorder.sent[0][0], encoding == Encoding.V2_PROTO3)
    assert sorted(s["id"] for s in sent) == sorted([ids["root"], ids["child"]])
    got = by_span_id(read_rows(out, 2, w))
    for z in sent:
        want_resource, want_span = expected_from_v2(z)
        resource, scope, span = got[z["id"]]
        assert resource == want_resource
        assert scope == InstrumentationScope()
        assert span == want_span, f"got:\n{span}\nwant:\n{want_span}"
    trace_hex = ids["trace_id"].rjust(32, "0")
    assert {s.trace_id.hex() for _, _, s in got.values()} == {trace_hex}
    assert got[ids["child"]][2].parent_span_id.hex() == ids["root"]


def test_py_zipkin_v1_json_into_weft(weft, port, tmp_path):
    from py_zipkin import Encoding

    zp, out = port(), tmp_path / "spans.jsonl"
    w = weft(file_config(zp, out, parse_string_tags=True))
    recorder, ids = py_zipkin_trace(f"http://127.0.0.1:{zp}", Encoding.V1_JSON)
    assert [status for _, status in recorder.sent] == [202]
    sent = {s["id"]: s for s in json.loads(recorder.sent[0][0])}
    got = by_span_id(read_rows(out, 2, w))
    for span_id, v1 in sent.items():
        resource, scope, span = got[span_id]
        # v1: the resource is the endpoint of the core annotations.
        assert resource == {"service.name": "py-zipkin-svc", "ipv4": "10.1.1.1", "port": "8080"}
        assert span.trace_id.hex() == ids["trace_id"].rjust(32, "0")
        assert span.parent_span_id.hex() == v1.get("parentId", "")
        assert span.name == v1["name"]
        assert span.start_time_unix_nano == v1["timestamp"] * 1000
        assert span.end_time_unix_nano == (v1["timestamp"] + v1["duration"]) * 1000
        core = {a["value"] for a in v1["annotations"]} & {"cs", "cr", "sr", "ss"}
        assert span.kind == (KIND["SERVER"] if core == {"sr", "ss"} else KIND["CLIENT"])
        assert [(e.name, e.time_unix_nano) for e in span.events] == [
            (a["value"], a["timestamp"] * 1000)
            for a in v1["annotations"]
            if a["value"] not in ("cs", "cr", "sr", "ss")
        ]
    root = got[ids["root"]][2]
    assert attrs(root.attributes) == {"http.method": "GET", "retries": 3}  # parse_string_tags
    assert root.status == Status()
    child = got[ids["child"]][2]
    # The error tag is the status; `sa` is the peer.
    assert attrs(child.attributes) == {
        "db.name": "users", "peer.service": "postgres", "net.peer.ip": "10.0.0.9", "net.peer.port": 5432,
    }
    assert child.status == Status(code=2)


# ---------------------------------------------------------------------------
# weft's zipkin exporter to independent decoders


class ZipkinSink:
    """A Zipkin collector stand-in: records every POST (path, headers, body) and
    answers 202."""

    def __init__(self, port: int):
        self.requests: list[tuple[str, dict, bytes]] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                sink.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


TRACE_128 = bytes.fromhex("5b8efff798038103d269b633813fc60c")
TRACE_64 = bytes.fromhex("0000000000000000abcdef0123456789")


def kv(key, **v) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**v))


def otlp_request() -> ExportTraceServiceRequest:
    """A SERVER root with a CLIENT child (error, event, link, peer) on a 128-bit trace,
    and an INTERNAL span on a 64-bit trace. Times are whole microseconds."""
    base = 1_700_000_000_000_000_000
    root = Span(
        trace_id=TRACE_128, span_id=bytes.fromhex("eee19b7ec3c1b173"), name="GET /Cart",
        kind=KIND["SERVER"], start_time_unix_nano=base, end_time_unix_nano=base + 25_000_000,
        trace_state="congo=t61rcWkgMzE",
        attributes=[kv("http.method", string_value="GET"), kv("http.status_code", int_value=200),
                    kv("cache.hit", bool_value=False), kv("load", double_value=0.75)],
        status=Status(code=1),
    )
    child = Span(
        trace_id=TRACE_128, span_id=bytes.fromhex("eee19b7ec3c1b174"),
        parent_span_id=root.span_id, name="charge", kind=KIND["CLIENT"],
        start_time_unix_nano=base + 1_000_000, end_time_unix_nano=base + 21_000_000,
        attributes=[kv("net.peer.ip", string_value="10.0.0.7"), kv("net.peer.port", int_value=443),
                    kv("peer.service", string_value="payments")],
        status=Status(code=2, message="card declined"),
    )
    child.events.add(time_unix_nano=base + 2_000_000, name="retry",
                     attributes=[kv("attempt", int_value=2)])
    child.links.add(trace_id=TRACE_64, span_id=bytes.fromhex("1111111111111111"))
    internal = Span(
        trace_id=TRACE_64, span_id=bytes.fromhex("2222222222222222"), name="tidy",
        kind=KIND["INTERNAL"], start_time_unix_nano=base + 5_000_000,
        end_time_unix_nano=base + 5_001_000, status=Status(),
    )
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[kv("service.name", string_value="Checkout"),
                                      kv("host.name", string_value="node-1")]),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name="weft.e2e", version="2.0"),
                                spans=[root, child, internal])],
    )])


def expected_zipkin(json_form: bool) -> list[dict]:
    """The zipkin v2 spans the documented mapping gives for otlp_request(). JSON
    lower-cases names (as the collector's encoder) and writes 64-bit trace ids
    in 16 hex digits."""
    name = (lambda n: n.lower()) if json_form else (lambda n: n)
    scope_tags = {"host.name": "node-1", "otel.library.name": "weft.e2e", "otel.library.version": "2.0",
                  "otel.scope.name": "weft.e2e", "otel.scope.version": "2.0"}
    local = {"serviceName": name("Checkout")}
    return [
        {"traceId": TRACE_128.hex(), "id": "eee19b7ec3c1b173", "kind": "SERVER", "name": name("GET /Cart"),
         "timestamp": 1_700_000_000_000_000, "duration": 25_000, "localEndpoint": local,
         "tags": {**scope_tags, "http.method": "GET", "http.status_code": "200", "cache.hit": "false",
                  "load": "0.75", "otel.status_code": "STATUS_CODE_OK", "w3c.tracestate": "congo=t61rcWkgMzE"}},
        {"traceId": TRACE_128.hex(), "parentId": "eee19b7ec3c1b173", "id": "eee19b7ec3c1b174", "kind": "CLIENT",
         "name": "charge", "timestamp": 1_700_000_000_001_000, "duration": 20_000, "localEndpoint": local,
         "remoteEndpoint": {"serviceName": name("payments"), "ipv4": "10.0.0.7", "port": 443},
         "annotations": [{"timestamp": 1_700_000_000_002_000, "value": 'retry|{"attempt":2}|0'}],
         "tags": {**scope_tags, "error": "true", "otel.status_code": "STATUS_CODE_ERROR",
                  "otel.status_description": "card declined",
                  "otlp.link.0": f"{TRACE_64.hex()}|1111111111111111||{{}}|0"}},
        {"traceId": TRACE_64.hex()[16:] if json_form else TRACE_64.hex(), "id": "2222222222222222",
         "name": "tidy", "timestamp": 1_700_000_000_005_000, "duration": 1, "localEndpoint": local,
         "tags": {**scope_tags, "span.kind": "internal"}},
    ]


def exporter_config(otlp_port: int, sink_port: int, **zipkin) -> dict:
    return {
        "receivers": {"otlp": otlp_receiver(http_port=otlp_port)},
        "exporters": {"zipkin": {"endpoint": f"http://127.0.0.1:{sink_port}/api/v2/spans", **zipkin}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["zipkin"]}}},
    }


def post_otlp(port: int, req: ExportTraceServiceRequest) -> None:
    r = requests.post(f"http://127.0.0.1:{port}/v1/traces", data=req.SerializeToString(),
                      headers={"Content-Type": PROTO}, timeout=10)
    assert r.status_code == 200, r.text


def zipkin2_validator():
    doc = yaml.safe_load(SCHEMA.read_text())
    schema = {"$ref": "#/definitions/ListOfSpans", "definitions": doc["definitions"]}
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())


def test_schema_rejects_what_zipkin_rejects():
    """The schema check is not vacuous: it refuses ids and kinds Zipkin refuses."""
    v = zipkin2_validator()
    v.validate([{"traceId": "abababababababab", "id": "0000000000000001"}])
    for bad in (
        [{"id": "0000000000000001"}],
        [{"traceId": "abab", "id": "0000000000000001"}],
        [{"traceId": "abababababababab", "id": "00000000000000011"}],
        [{"traceId": "abababababababab", "id": "0000000000000001", "kind": "INTERNAL"}],
        [{"traceId": "abababababababab", "id": "0000000000000001", "tags": {"n": 1}}],
        [{"traceId": "abababababababab", "id": "0000000000000001", "localEndpoint": {"ipv4": "1.2.3"}}],
    ):
        with pytest.raises(jsonschema.ValidationError):
            v.validate(bad)


def test_zipkin_exporter_json_matches_the_zipkin2_schema(weft, ports):
    otlp_port, sink_port = ports(2)
    with ZipkinSink(sink_port) as sink:
        w = weft(exporter_config(otlp_port, sink_port, compression="gzip"))
        post_otlp(otlp_port, otlp_request())
        assert wait_until(lambda: sink.requests, 20), w.log_tail()
        path, headers, body = sink.requests[0]
        assert path == "/api/v2/spans"
        assert headers["content-type"] == JSON
        assert headers["content-encoding"] == "gzip"
        doc = json.loads(body)
        zipkin2_validator().validate(doc)
        assert doc == expected_zipkin(json_form=True)
        assert wait_for_metric(w, "otelcol_exporter_sent_spans", 3, exporter="zipkin") == 3
    w.stop()


def test_zipkin_exporter_proto_decodes_with_zipkin_pb2(weft, ports, proto_python):
    otlp_port, sink_port = ports(2)
    with ZipkinSink(sink_port) as sink:
        w = weft(exporter_config(otlp_port, sink_port, format="proto"))
        post_otlp(otlp_port, otlp_request())
        assert wait_until(lambda: sink.requests, 20), w.log_tail()
        _, headers, body = sink.requests[0]
        assert headers["content-type"] == PROTO
        proc = subprocess.run([str(proto_python), str(PB2_JSON)], input=body, capture_output=True,
                              timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr.decode()
        decoded = json.loads(proc.stdout)
        want = expected_zipkin(json_form=False)
        assert len(decoded) == len(want)
        for got, w_span in zip(decoded, want):
            # Every trace id takes 16 bytes in proto, as the collector writes it.
            assert got["traceIdBytes"] == 16
            assert got["traceId"] == w_span["traceId"].rjust(32, "0")
            assert got["id"] == w_span["id"]
            assert got["parentId"] == w_span.get("parentId", "")
            assert got["kind"] == w_span.get("kind")
            assert got["name"] == w_span["name"]
            assert (got["timestamp"], got["duration"]) == (w_span["timestamp"], w_span["duration"])
            assert got["localEndpoint"] == {"serviceName": "Checkout", "ipv4": "", "ipv6": "", "port": 0}
            remote = w_span.get("remoteEndpoint")
            assert got["remoteEndpoint"] == (
                None if remote is None else {"serviceName": remote["serviceName"], "ipv4": remote["ipv4"],
                                             "ipv6": "", "port": remote["port"]}
            )
            assert got["annotations"] == w_span.get("annotations", [])
            assert got["tags"] == w_span["tags"]
            assert (got["debug"], got["shared"]) == (False, False)
    w.stop()


@pytest.mark.parametrize("fmt", ["json", "proto"])
def test_round_trip_through_weft_zipkin_exporter_and_receiver(weft, ports, tmp_path, fmt):
    otlp_port, zipkin_port = ports(2)
    out = tmp_path / "spans.jsonl"
    w = weft({
        "receivers": {"otlp": otlp_receiver(http_port=otlp_port),
                      "zipkin": {"endpoint": f"127.0.0.1:{zipkin_port}", "parse_string_tags": True}},
        "exporters": {"zipkin": {"endpoint": f"http://127.0.0.1:{zipkin_port}/api/v2/spans", "format": fmt},
                      "file": {"path": str(out)}},
        "service": {"pipelines": {
            "traces/out": {"receivers": ["otlp"], "exporters": ["zipkin"]},
            "traces/in": {"receivers": ["zipkin"], "exporters": ["file"]},
        }},
    })
    sent = otlp_request()
    post_otlp(otlp_port, sent)
    rows = read_rows(out, 3, w)
    # What survives, as documented: everything here but the case of names in JSON.
    # Attributes come back sorted by key; peer attributes come back after them.
    want = ExportTraceServiceRequest()
    want.CopyFrom(sent)
    for s in want.resource_spans[0].scope_spans[0].spans:
        if fmt == "json":
            s.name = s.name.lower()
        peer = [a for a in s.attributes if a.key.startswith(("net.peer", "peer."))]
        rest = sorted((a for a in s.attributes if a not in peer), key=lambda a: a.key)
        order = {"peer.service": 0, "net.peer.ip": 1, "net.peer.port": 2}
        del s.attributes[:]
        s.attributes.extend(rest + sorted(peer, key=lambda a: order[a.key]))
    if fmt == "json":
        want.resource_spans[0].resource.attributes[0].value.string_value = "checkout"
    assert_rows_equal(rows, flatten_spans([want]))


# ---------------------------------------------------------------------------
# Bad input


def test_bad_input_gets_documented_codes_and_is_counted(weft, port):
    zp = port()
    w = weft({
        "receivers": {"zipkin": {"endpoint": f"127.0.0.1:{zp}", "max_request_body_size": 2048}},
        "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["zipkin"], "exporters": ["debug"]}}},
    })
    v2, v1 = f"http://127.0.0.1:{zp}/api/v2/spans", f"http://127.0.0.1:{zp}/api/v1/spans"
    good = json.dumps([{"traceId": "abababababababab", "id": "0000000000000001", "name": "ok"}]).encode()
    cases = [
        ("malformed JSON", "POST", v2, {"Content-Type": JSON}, b'[{"traceId": ', 400),
        ("JSON object, not a list", "POST", v2, {"Content-Type": JSON}, b'{"spans": []}', 400),
        ("invalid span id", "POST", v2, {"Content-Type": JSON},
         b'[{"traceId": "abababababababab", "id": "xyz"}]', 400),
        ("malformed protobuf", "POST", v2, {"Content-Type": PROTO}, b"\xff" * 11, 400),
        ("protobuf with a 3-byte trace id", "POST", v2, {"Content-Type": PROTO},
         b"\x0a\x0f\x0a\x03abc\x1a\x08\x00\x00\x00\x00\x00\x00\x00\x01", 400),
        ("corrupt gzip", "POST", v2, {"Content-Type": JSON, "Content-Encoding": "gzip"}, b"not gzip", 400),
        ("unknown encoding", "POST", v2, {"Content-Type": JSON, "Content-Encoding": "br"}, good, 400),
        ("text/plain", "POST", v2, {"Content-Type": "text/plain"}, good, 415),
        ("v1 thrift", "POST", v1, {"Content-Type": "application/x-thrift"}, b"\x0c\x00", 415),
        ("oversized", "POST", v2, {"Content-Type": JSON}, b" " * 4096, 413),
        ("GET", "GET", v2, {}, None, 405),
    ]
    for name, method, url, headers, body, want in cases:
        r = requests.request(method, url, headers=headers, data=body, timeout=10)
        assert r.status_code == want, f"{name}: {r.status_code} {r.text}"
        assert r.text.strip(), f"{name}: empty error body"
    assert wait_for_metric(w, "weft_receiver_bad_requests", len(cases), receiver="zipkin",
                           transport="http") == len(cases)
    r = requests.post(v2, data=good, headers={"Content-Type": JSON}, timeout=10)
    assert r.status_code == 202
    assert wait_for_metric(w, "otelcol_receiver_accepted_spans", 1, receiver="zipkin", transport="http") == 1
    assert requests.get(f"http://127.0.0.1:{zp}/", timeout=10).status_code == 404
    assert bad_requests(w) == len(cases)
