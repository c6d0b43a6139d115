#!/usr/bin/env python3
"""Generates the checked-in seed corpus fuzz/seeds/TARGET/ for every fuzz target.

Usage: python3 fuzz/make_seeds.py

Deterministic and idempotent: fuzz/seeds/ is deleted and written again from the
definitions below (python3 standard library only). Each target gets a few valid,
realistic inputs laid out exactly as its fuzz_targets/TARGET.rs reads them
(selector bytes, length prefixes, splits) plus one slightly broken input.
scripts/fuzz reads fuzz/seeds/TARGET next to the working corpus fuzz/corpus/TARGET.
"""

import gzip
import json
import os
import shutil
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")
MAX_SEED = 4096
MAX_ELF_SEED = 64 * 1024

SEED_SETS = {}


def target(name):
    """Registers a function returning {file name: bytes} as the seeds of `name`."""

    def register(fn):
        SEED_SETS[name] = fn
        return fn

    return register


def b(x):
    return x.encode() if isinstance(x, str) else bytes(x)


# ---------------------------------------------------------------------------
# Common ids
# ---------------------------------------------------------------------------

TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN_ID = bytes.fromhex("00f067aa0ba902b7")
PARENT_ID = bytes.fromhex("53995c3f42cd8ad8")
CHILD_ID = bytes.fromhex("b7ad6b7169203331")
T0 = 1_700_000_000_000_000_000  # ns
T1 = T0 + 25_000_000


# ---------------------------------------------------------------------------
# Protobuf encoding (varint keys, length-delimited fields)
# ---------------------------------------------------------------------------


def varint(n):
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_key(field, wire):
    return varint((field << 3) | wire)


def pb_varint(field, n):
    return pb_key(field, 0) + varint(n)


def pb_bytes(field, data):
    data = b(data)
    return pb_key(field, 2) + varint(len(data)) + data


def pb_fixed64(field, n):
    return pb_key(field, 1) + struct.pack("<Q", n)


def pb_sfixed64(field, n):
    return pb_key(field, 1) + struct.pack("<q", n)


def pb_double(field, x):
    return pb_key(field, 1) + struct.pack("<d", x)


def pb_fixed32(field, n):
    return pb_key(field, 5) + struct.pack("<I", n)


def pb_msg(field, *parts):
    return pb_bytes(field, b"".join(parts))


# --- OTLP (opentelemetry/proto) ---


def otlp_any(v):
    if isinstance(v, bool):
        return pb_varint(2, int(v))
    if isinstance(v, int):
        return pb_varint(3, v)
    if isinstance(v, float):
        return pb_double(4, v)
    if isinstance(v, bytes):
        return pb_bytes(7, v)
    if isinstance(v, list):
        return pb_msg(5, *[pb_msg(1, otlp_any(x)) for x in v])
    if isinstance(v, dict):
        return pb_msg(6, *[otlp_kv(1, k, x) for k, x in v.items()])
    return pb_bytes(1, v)


def otlp_kv(field, key, value):
    return pb_msg(field, pb_bytes(1, key), pb_msg(2, otlp_any(value)))


def otlp_attrs(field, attrs):
    return b"".join(otlp_kv(field, k, v) for k, v in attrs.items())


def otlp_resource(attrs):
    return pb_msg(1, otlp_attrs(1, attrs))


def otlp_scope(name, version):
    return pb_msg(1, pb_bytes(1, name), pb_bytes(2, version))


def otlp_span(trace_id, span_id, name, kind=2, parent=b"", start=T0, end=T1,
              attrs=None, events=(), links=(), status=None, trace_state="", flags=None):
    parts = [pb_bytes(1, trace_id), pb_bytes(2, span_id)]
    if trace_state:
        parts.append(pb_bytes(3, trace_state))
    if parent:
        parts.append(pb_bytes(4, parent))
    parts += [pb_bytes(5, name), pb_varint(6, kind), pb_fixed64(7, start), pb_fixed64(8, end)]
    parts.append(otlp_attrs(9, attrs or {}))
    for t, ename, eattrs in events:
        parts.append(pb_msg(11, pb_fixed64(1, t), pb_bytes(2, ename), otlp_attrs(3, eattrs)))
    for ltid, lsid, lstate in links:
        parts.append(pb_msg(13, pb_bytes(1, ltid), pb_bytes(2, lsid), pb_bytes(3, lstate)))
    if status:
        code, message = status
        parts.append(pb_msg(15, pb_bytes(2, message), pb_varint(3, code)))
    if flags is not None:
        parts.append(pb_fixed32(16, flags))
    return b"".join(parts)


def otlp_trace_request(resource_attrs, scope, spans):
    """ExportTraceServiceRequest with one ResourceSpans and one ScopeSpans."""
    scope_spans = pb_msg(2, otlp_scope(*scope), *[pb_msg(2, s) for s in spans])
    return pb_msg(1, otlp_resource(resource_attrs), scope_spans,
                  pb_bytes(3, "https://opentelemetry.io/schemas/1.24.0"))


def otlp_sample_spans():
    server = otlp_span(TRACE_ID, PARENT_ID, "GET /api/orders", kind=2,
                       attrs={"http.request.method": "GET", "url.path": "/api/orders",
                              "http.response.status_code": 200, "server.port": 8080},
                       status=(0, ""), flags=0x301)
    client = otlp_span(TRACE_ID, SPAN_ID, "SELECT orders", kind=3, parent=PARENT_ID,
                       start=T0 + 1_000_000, end=T0 + 9_000_000,
                       attrs={"db.system": "postgresql", "db.statement": "SELECT * FROM orders WHERE id = $1",
                              "net.peer.name": "db", "sampled.ratio": 0.25, "tags": ["a", "b"],
                              "extra": {"k": True}, "raw": b"\x00\x01"},
                       events=[(T0 + 2_000_000, "exception",
                                {"exception.type": "TimeoutError", "exception.message": "deadline"})],
                       links=[(bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), CHILD_ID, "rojo=00f067aa0ba902b7")],
                       status=(2, "timeout"), trace_state="congo=t61rcWkgMzE")
    return [server, client]


OTLP_RESOURCE = {"service.name": "checkout", "service.version": "1.4.2",
                 "host.name": "web-1", "telemetry.sdk.language": "python"}


def otlp_trace_pb():
    return otlp_trace_request(OTLP_RESOURCE, ("weft.fuzz", "0.1.0"), otlp_sample_spans())


def otlp_metrics_pb():
    point = b"".join([otlp_attrs(7, {"route": "/api"}), pb_fixed64(2, T0), pb_fixed64(3, T1),
                      pb_double(4, 12.5)])
    point_int = b"".join([pb_fixed64(3, T1), pb_sfixed64(6, 42)])
    gauge = pb_msg(1, point) + pb_msg(1, point_int)
    metric = pb_msg(2, pb_bytes(1, "http.server.active_requests"), pb_bytes(2, "in flight"),
                    pb_bytes(3, "{request}"), pb_msg(5, gauge))
    scope_metrics = pb_msg(2, otlp_scope("weft.fuzz", "0.1.0"), metric)
    return pb_msg(1, otlp_resource(OTLP_RESOURCE), scope_metrics)


def otlp_logs_pb():
    record = b"".join([pb_fixed64(1, T0), pb_varint(2, 9), pb_bytes(3, "INFO"),
                       pb_msg(5, otlp_any("order placed")), otlp_attrs(6, {"order.id": 7}),
                       pb_fixed32(8, 1), pb_bytes(9, TRACE_ID), pb_bytes(10, SPAN_ID),
                       pb_fixed64(11, T1)])
    scope_logs = pb_msg(2, otlp_scope("weft.fuzz", "0.1.0"), pb_msg(2, record))
    return pb_msg(1, otlp_resource(OTLP_RESOURCE), scope_logs)


def otlp_json_attrs(attrs):
    out = []
    for k, v in attrs.items():
        if isinstance(v, bool):
            val = {"boolValue": v}
        elif isinstance(v, int):
            val = {"intValue": str(v)}
        elif isinstance(v, float):
            val = {"doubleValue": v}
        elif isinstance(v, list):
            val = {"arrayValue": {"values": [{"stringValue": x} for x in v]}}
        else:
            val = {"stringValue": v}
        out.append({"key": k, "value": val})
    return out


def otlp_trace_json():
    doc = {"resourceSpans": [{
        "resource": {"attributes": otlp_json_attrs(OTLP_RESOURCE)},
        "scopeSpans": [{
            "scope": {"name": "weft.fuzz", "version": "0.1.0"},
            "spans": [
                {"traceId": TRACE_ID.hex(), "spanId": PARENT_ID.hex(), "name": "GET /api/orders",
                 "kind": 2, "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T1),
                 "attributes": otlp_json_attrs({"http.request.method": "GET", "http.response.status_code": 200}),
                 "status": {}},
                {"traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "parentSpanId": PARENT_ID.hex(),
                 "name": "SELECT orders", "kind": "SPAN_KIND_CLIENT", "traceState": "congo=t61rcWkgMzE",
                 "startTimeUnixNano": str(T0 + 1_000_000), "endTimeUnixNano": T0 + 9_000_000,
                 "attributes": otlp_json_attrs({"db.system": "postgresql", "ratio": 0.5, "tags": ["x"]}),
                 "events": [{"timeUnixNano": str(T0 + 2_000_000), "name": "exception",
                             "attributes": otlp_json_attrs({"exception.type": "TimeoutError"})}],
                 "links": [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": CHILD_ID.hex()}],
                 "status": {"code": 2, "message": "timeout"}, "flags": 769},
            ]}]}]}
    return json.dumps(doc, separators=(",", ":")).encode()


def otlp_metrics_json():
    doc = {"resourceMetrics": [{"resource": {"attributes": otlp_json_attrs({"service.name": "checkout"})},
                                "scopeMetrics": [{"scope": {"name": "weft.fuzz"}, "metrics": [
                                    {"name": "requests", "unit": "1", "sum": {
                                        "aggregationTemporality": 2, "isMonotonic": True,
                                        "dataPoints": [{"asInt": "17", "timeUnixNano": str(T1),
                                                        "startTimeUnixNano": str(T0)}]}}]}]}]}
    return json.dumps(doc).encode()


def otlp_logs_json():
    doc = {"resourceLogs": [{"resource": {"attributes": otlp_json_attrs({"service.name": "checkout"})},
                             "scopeLogs": [{"scope": {"name": "weft.fuzz"}, "logRecords": [
                                 {"timeUnixNano": str(T0), "severityNumber": 9, "severityText": "INFO",
                                  "body": {"stringValue": "order placed"},
                                  "traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex()}]}]}]}
    return json.dumps(doc).encode()


# ---------------------------------------------------------------------------
# MessagePack encoding
# ---------------------------------------------------------------------------


class F32(float):
    """A float encoded as msgpack float32."""


def mp(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, F32):
        return b"\xca" + struct.pack(">f", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, int):
        if 0 <= v < 0x80:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if v >= 0:
            for tag, fmt, lim in ((0xCC, ">B", 1 << 8), (0xCD, ">H", 1 << 16),
                                  (0xCE, ">I", 1 << 32), (0xCF, ">Q", 1 << 64)):
                if v < lim:
                    return bytes([tag]) + struct.pack(fmt, v)
        for tag, fmt, lim in ((0xD0, ">b", 1 << 7), (0xD1, ">h", 1 << 15),
                              (0xD2, ">i", 1 << 31), (0xD3, ">q", 1 << 63)):
            if -lim <= v:
                return bytes([tag]) + struct.pack(fmt, v)
    if isinstance(v, str):
        data = v.encode()
        n = len(data)
        if n < 32:
            return bytes([0xA0 | n]) + data
        if n < 256:
            return b"\xd9" + bytes([n]) + data
        return b"\xda" + struct.pack(">H", n) + data
    if isinstance(v, (bytes, bytearray)):
        n = len(v)
        if n < 256:
            return b"\xc4" + bytes([n]) + bytes(v)
        return b"\xc5" + struct.pack(">H", n) + bytes(v)
    if isinstance(v, (list, tuple)):
        n = len(v)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        n = len(v)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(type(v))


# --- Datadog ---

DD_TRACE = 0x0A3CE929D0E0E473
DD_ROOT = 0x53995C3F42CD8AD8
DD_CHILD = 0x00F067AA0BA902B7
DD_START = 1_700_000_000_000_000_000


def dd_spans():
    root = {"service": "web", "name": "http.request", "resource": "GET /users/:id",
            "trace_id": DD_TRACE, "span_id": DD_ROOT, "parent_id": 0,
            "start": DD_START, "duration": 25_000_000, "error": 0,
            "meta": {"http.method": "GET", "http.status_code": "200", "_dd.p.tid": "4bf92f3577b34da6",
                     "_dd.p.dm": "-1", "env": "prod"},
            "metrics": {"_sampling_priority_v1": 1.0, "_dd.top_level": 1.0, "_dd.measured": 1},
            "type": "web"}
    child = {"service": "postgres", "name": "postgres.query", "resource": "SELECT * FROM users WHERE id = ?",
             "trace_id": DD_TRACE, "span_id": DD_CHILD, "parent_id": DD_ROOT,
             "start": DD_START + 1_000_000, "duration": 8_000_000, "error": 1,
             "meta": {"db.type": "postgres", "error.msg": "canceling statement", "error.type": "QueryCanceled"},
             "metrics": {"db.row_count": F32(0.0)}, "type": "sql"}
    return [root, child]


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def write_all():
    if os.path.isdir(SEEDS):
        shutil.rmtree(SEEDS)
    counts = {}
    for name in sorted(SEED_SETS):
        files = SEED_SETS[name]()
        if not 3 <= len(files) <= 8:
            raise SystemExit(f"{name}: {len(files)} seeds, want 3..8")
        d = os.path.join(SEEDS, name)
        os.makedirs(d)
        limit = MAX_ELF_SEED if name == "ebpf_tls_elf" else MAX_SEED
        for fname, data in sorted(files.items()):
            data = b(data)
            if len(data) > limit:
                raise SystemExit(f"{name}/{fname}: {len(data)} bytes, over {limit}")
            with open(os.path.join(d, fname), "wb") as f:
                f.write(data)
        counts[name] = len(files)
    for name, n in counts.items():
        print(f"{name}: {n} seeds")


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


@target("go_duration")
def _go_duration():
    # UTF-8 text handed to duration::parse.
    return {
        "minutes_seconds": "1m30s",
        "fractional_ms": "1.5ms",
        "hours_units_mix": "2h45m10.25s",
        "micro_sign": "250\u00b5s",
        "negative_ns": "-300ns",
        "zero": "0",
        "broken_missing_unit": "1m30",
    }


@target("config_yaml")
def _config_yaml():
    # UTF-8 YAML text loaded as one config source; env var SET=value is set.
    minimal = """receivers:
  otlp:
    protocols:
      grpc:
        endpoint: localhost:4317
      http:
        endpoint: localhost:4318
processors:
  batch:
    send_batch_size: 512
    timeout: 200ms
exporters:
  debug:
    verbosity: detailed
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
"""
    full = """receivers:
  otlp:
    protocols:
      grpc:
        endpoint: localhost:4317
  datadog:
    endpoint: localhost:8126
  zipkin:
    endpoint: localhost:9411
  jaeger:
    protocols:
      grpc:
        endpoint: localhost:14250
      thrift_http:
        endpoint: localhost:14268
      thrift_compact:
        endpoint: localhost:6831
  ebpf:
    optional: true
    payload_bytes: 1024
    exclude:
      ports: [4317, 4318, 8126]
processors:
  memory_limiter:
    check_interval: 1s
    limit_mib: 1024
  propagation_merge:
    window: 5s
  autotracing:
    window: 2s
    grace: 2s
    request_id_headers: [X-Request-ID]
  batch:
    send_batch_size: 8192
    timeout: 200ms
exporters:
  debug:
    verbosity: basic
  file:
    path: ./weft-traces.jsonl
    rotation:
      max_megabytes: 100
      max_backups: 3
extensions:
  health_check:
    endpoint: localhost:13133
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp, datadog, zipkin, jaeger, ebpf]
      processors: [memory_limiter, propagation_merge, autotracing, batch]
      exporters: [debug, file]
    metrics:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [debug]
  telemetry:
    logs:
      level: info
    metrics:
      address: localhost:8888
"""
    env = """receivers:
  otlp:
    protocols:
      http:
        endpoint: ${env:HOST:-0.0.0.0}:${env:PORT:-4318}
processors:
  batch:
    timeout: ${SET}
    send_batch_size: ${env:BATCH:-100}
exporters:
  file:
    path: "/tmp/$${literal}.jsonl"
  debug/verbose:
    verbosity: detailed
service:
  pipelines:
    traces/main:
      receivers: [otlp]
      processors: [batch]
      exporters: [file, debug/verbose]
"""
    anchors = """x-endpoint: &ep localhost:4317
receivers:
  otlp:
    protocols:
      grpc: {endpoint: *ep}
exporters:
  debug: {}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [debug]}
    logs: {receivers: [otlp], exporters: [debug]}
"""
    broken = """receivers:
  otlp:
    protocols:
      grpc:
        endpoint: localhost:4317
service:
  pipelines:
    traces:
      receivers: [otlp, missing]
      processors: [batch
      exporters: [debug]
"""
    return {"minimal.yaml": minimal, "full.yaml": full, "env_expansion.yaml": env,
            "flow_and_anchors.yaml": anchors, "broken_unclosed_flow.yaml": broken}


@target("propagation_cli_json")
def _propagation_cli_json():
    # UTF-8 JSON: tried as extract input (headers object), inject input
    # (canonical context) and convert input (an id pair).
    headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
               "tracestate": "dd=s:2;o:rum;p:00f067aa0ba902b7;t.dm:-4,congo=t61rcWkgMzE",
               "baggage": "userId=alice,isProduction=false;meta=1"}
    dd_headers = {"x-datadog-trace-id": 7277407061855694839, "x-datadog-parent-id": "67667974448284343",
                  "x-datadog-sampling-priority": "2", "x-datadog-origin": "synthetics",
                  "x-datadog-tags": "_dd.p.tid=4bf92f3577b34da6,_dd.p.dm=-4",
                  "X-B3-TraceId": ["80f198ee56343ba864fe8b2a57d3eff7", "1"]}
    canonical = {"valid": True, "format": "tracecontext",
                 "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
                 "sampled": True, "sampling_priority": 2, "origin": "rum",
                 "tracestate": "dd=s:2;o:rum,congo=t61rcWkgMzE", "baggage": {"userId": "alice"},
                 "links": [], "propagated_tags": {"_dd.p.dm": "-4"}, "dd_parent_id": "00f067aa0ba902b7"}
    convert_dd = {"trace_id": "7277407061855694839", "span_id": 67667974448284343,
                  "_dd.p.tid": "4bf92f3577b34da6", "from": "datadog"}
    convert_otel = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}
    return {
        "extract_w3c_headers.json": json.dumps(headers),
        "extract_datadog_headers.json": json.dumps(dd_headers),
        "inject_canonical.json": json.dumps(canonical),
        "convert_datadog.json": json.dumps(convert_dd),
        "convert_otel.json": json.dumps(convert_otel),
        "broken_truncated.json": json.dumps(canonical)[:57],
    }


@target("otlp_http_decode")
def _otlp_http_decode():
    # byte 0 selector: signal = sel % 3 (traces, metrics, logs); bit 0x04 = JSON
    # (else protobuf); (sel >> 3) % 4 = encoding (none, gzip, zstd, deflate).
    def sel(signal, is_json, enc):
        return bytes([next(s for s in range(256) if s % 3 == signal and bool(s & 4) == is_json
                           and (s >> 3) % 4 == enc)])

    gz = gzip.compress(otlp_trace_pb(), mtime=0)
    return {
        "traces_protobuf": sel(0, False, 0) + otlp_trace_pb(),
        "traces_protobuf_gzip": sel(0, False, 1) + gz,
        "traces_json": sel(0, True, 0) + otlp_trace_json(),
        "traces_json_deflate": sel(0, True, 3) + zlib.compress(otlp_trace_json(), 9),
        "metrics_protobuf": sel(1, False, 0) + otlp_metrics_pb(),
        "metrics_json": sel(1, True, 0) + otlp_metrics_json(),
        "logs_protobuf": sel(2, False, 0) + otlp_logs_pb(),
        "broken_traces_protobuf_truncated": sel(0, False, 0) + otlp_trace_pb()[:-7],
    }


@target("datadog_v04")
def _datadog_v04():
    # byte 0 selector: content type = [msgpack, json, "", text/plain][sel % 4].
    spans = dd_spans()
    as_json = [[{k: (v if not isinstance(v, F32) else float(v)) for k, v in s.items()} for s in spans]]
    for s in as_json[0]:
        s["metrics"] = {k: float(v) for k, v in s["metrics"].items()}
    return {
        "msgpack_one_trace": b"\x00" + mp([spans]),
        "msgpack_two_traces_nil": b"\x00" + mp([[spans[0]], None, [spans[1]]]),
        "json_one_trace": b"\x01" + json.dumps(as_json).encode(),
        "no_content_type_msgpack": b"\x02" + mp([[spans[1]]]),
        "msgpack_empty": b"\x00" + mp([]),
        "broken_msgpack_truncated": b"\x00" + mp([spans])[:-5],
    }


@target("datadog_v05")
def _datadog_v05():
    # byte 0 selector (content type, ignored by v0.5); body = [string table,
    # traces], each span a 12-element array of string-table indexes and numbers:
    # service, name, resource, trace_id, span_id, parent_id, start, duration,
    # error, meta {idx: idx}, metrics {idx: float}, type.
    table = ["", "web", "http.request", "GET /users/:id", "http.method", "GET", "env", "prod",
             "_sampling_priority_v1", "web", "postgres", "postgres.query", "SELECT 1", "sql",
             "_dd.p.tid", "4bf92f3577b34da6"]
    root = [1, 2, 3, DD_TRACE, DD_ROOT, 0, DD_START, 25_000_000, 0, {4: 5, 6: 7, 14: 15}, {8: 1.0}, 9]
    child = [10, 11, 12, DD_TRACE, DD_CHILD, DD_ROOT, DD_START + 1_000_000, 8_000_000, 1, {}, {}, 13]
    bad_index = [10, 11, 99, DD_TRACE, DD_CHILD, DD_ROOT, DD_START, 1, 0, {}, {}, 13]
    return {
        "one_trace_two_spans": b"\x00" + mp([table, [[root, child]]]),
        "two_traces": b"\x00" + mp([table, [[root], [child]]]),
        "empty_traces": b"\x00" + mp([[""], []]),
        "string_index_out_of_range": b"\x00" + mp([table, [[bad_index]]]),
        "broken_eleven_fields": b"\x00" + mp([table, [[root[:11]]]]),
    }


@target("datadog_v07")
def _datadog_v07():
    # byte 0 selector (content type); body = one TracerPayload map.
    spans = dd_spans()
    link_span = dict(spans[1])
    link_span["span_links"] = [{"trace_id": DD_TRACE, "trace_id_high": 0x4BF92F3577B34DA6,
                                "span_id": DD_ROOT, "attributes": {"link.kind": "follows"},
                                "tracestate": "dd=s:1", "flags": 0x80000001}]
    payload = {"container_id": "cid-7", "language_name": "go", "language_version": "go1.22.1",
               "tracer_version": "v1.62.0", "runtime_id": "2d6c3e1c-5a3b-4e0f-9a77-0c2d1e3f4a5b",
               "env": "prod", "hostname": "web-1", "app_version": "1.4.2",
               "tags": {"_dd.apm_mode": "edot"},
               "chunks": [{"priority": 1, "origin": "lambda", "tags": {"_dd.p.dm": "-1"},
                           "dropped_trace": False, "spans": [spans[0], link_span]}]}
    minimal = {"chunks": [{"spans": [spans[0]]}]}
    return {
        "tracer_payload": b"\x00" + mp(payload),
        "minimal_chunk": b"\x00" + mp(minimal),
        "nil_chunk_and_span": b"\x00" + mp({"chunks": [None, {"priority": -1, "spans": [None, spans[1]]}]}),
        "unknown_keys_skipped": b"\x00" + mp({"unknown": [1, 2, {"x": b"\x00"}], "chunks": []}),
        "broken_chunk_not_map": b"\x00" + mp({"chunks": [[1, 2, 3]]}),
    }



@target("otlp_wire")
def _otlp_wire():
    # Raw ExportTraceServiceRequest protobuf bytes.
    two_resources = otlp_trace_pb() + otlp_trace_request(
        {"service.name": "billing"}, ("weft.fuzz", "0.1.0"),
        [otlp_span(bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), CHILD_ID, "charge", kind=1)])
    empty_ids = otlp_trace_request({"service.name": "x"}, ("s", ""), [otlp_span(b"", b"", "no ids")])
    # Unknown fields (field 99 varint, field 100 bytes) at request and span level.
    unknown = pb_varint(99, 7) + otlp_trace_request(
        OTLP_RESOURCE, ("weft.fuzz", "0.1.0"),
        [otlp_span(TRACE_ID, SPAN_ID, "unknown fields") + pb_bytes(100, b"skip me") + pb_fixed32(101, 5)])
    bad_id = otlp_trace_request(OTLP_RESOURCE, ("weft.fuzz", "0.1.0"),
                                [otlp_span(TRACE_ID[:15], SPAN_ID, "15-byte trace id")])
    return {
        "one_resource_two_spans": otlp_trace_pb(),
        "two_resources": two_resources,
        "empty_request": b"",
        "empty_ids": empty_ids,
        "unknown_fields": unknown,
        "bad_trace_id_length": bad_id,
        "broken_truncated": otlp_trace_pb()[:-3],
    }


@target("propagation_extract")
def _propagation_extract():
    # NUL-separated chunks; each chunk = selector byte + header value. The
    # selector indexes NAMES in fuzz_targets/propagation_extract.rs modulo
    # len+1 (23 + 1); selector 23 means "name:value" follows.
    names = ["traceparent", "tracestate", "baggage", "b3", "x-b3-traceid", "x-b3-spanid",
             "x-b3-sampled", "x-b3-flags", "x-b3-parentspanid", "uber-trace-id", "uberctx-k",
             "ot-tracer-traceid", "ot-tracer-spanid", "ot-tracer-sampled", "ot-baggage-k",
             "x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
             "x-datadog-origin", "x-datadog-tags", "sw8", "sw8-correlation", "x-amzn-trace-id"]
    own = len(names)

    def hdrs(*pairs):
        out = []
        for name, value in pairs:
            sel = own if name is None else names.index(name)
            out.append(bytes([sel]) + value.encode())
        return b"\x00".join(out)

    import base64

    def b64(x):
        return base64.b64encode(x.encode()).decode()

    sw8 = "-".join(["1", b64("4bf92f3577b34da6a3ce929d0e0e4736"), b64("a.b.c"), "3",
                    b64("checkout"), b64("web-1"), b64("/api/orders"), b64("db:5432")])
    return {
        "w3c_tracecontext_baggage": hdrs(
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("tracestate", "dd=s:2;o:rum;p:00f067aa0ba902b7;t.dm:-4,congo=t61rcWkgMzE"),
            ("baggage", "userId=alice,serverNode=DF%2028,isProduction=false;p=1")),
        "b3_single_and_multi": hdrs(
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"),
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"), ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-parentspanid", "0020000000000001"), ("x-b3-sampled", "1"), ("x-b3-flags", "1")),
        "jaeger_uber_and_ot": hdrs(
            ("uber-trace-id", "3ce929d0e0e4736:00f067aa0ba902b7:0:1"), ("uberctx-k", "v1"),
            ("ot-tracer-traceid", "a3ce929d0e0e4736"), ("ot-tracer-spanid", "00f067aa0ba902b7"),
            ("ot-tracer-sampled", "true"), ("ot-baggage-k", "v")),
        "datadog": hdrs(
            ("x-datadog-trace-id", "7277407061855694839"), ("x-datadog-parent-id", "67667974448284343"),
            ("x-datadog-sampling-priority", "2"), ("x-datadog-origin", "synthetics"),
            ("x-datadog-tags", "_dd.p.tid=4bf92f3577b34da6,_dd.p.dm=-4")),
        "skywalking_sw8": hdrs(("sw8", sw8), ("sw8-correlation", b64("k") + ":" + b64("v"))),
        "aws_xray_and_custom_name": hdrs(
            ("x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"),
            (None, "X-Request-ID:f058ebd6-02f7-4d3f-942e-904344e8cde5")),
        "broken_traceparent_bad_version": hdrs(
            ("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("b3", "80f198ee56343ba8-")),
    }


# --- Zipkin ---


def zipkin_v2_spans():
    return [
        {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "id": "53995c3f42cd8ad8", "kind": "SERVER",
         "name": "get /api/orders", "timestamp": 1700000000000000, "duration": 25000,
         "localEndpoint": {"serviceName": "frontend", "ipv4": "192.168.99.1", "port": 8080},
         "remoteEndpoint": {"ipv6": "2001:db8::c001", "port": 51234},
         "annotations": [{"timestamp": 1700000000001000, "value": "wr"}],
         "tags": {"http.method": "GET", "http.path": "/api/orders", "http.status_code": "200", "retries": "2"}},
        {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "parentId": "53995c3f42cd8ad8", "id": "00f067aa0ba902b7",
         "kind": "CLIENT", "name": "select", "timestamp": 1700000000002000, "duration": 8000,
         "localEndpoint": {"serviceName": "frontend"}, "remoteEndpoint": {"serviceName": "postgres"},
         "tags": {"error": "timeout", "sql.query": "SELECT 1"}, "shared": False, "debug": True},
    ]


def zipkin_v1_spans():
    ep = {"serviceName": "frontend", "ipv4": "192.168.99.1", "port": 8080}
    return [{
        "traceId": "a3ce929d0e0e4736", "id": "53995c3f42cd8ad8", "name": "get",
        "timestamp": 1700000000000000, "duration": 25000,
        "annotations": [{"timestamp": 1700000000000000, "value": "sr", "endpoint": ep},
                        {"timestamp": 1700000000025000, "value": "ss", "endpoint": ep}],
        "binaryAnnotations": [{"key": "http.path", "value": "/api", "endpoint": ep},
                              {"key": "sa", "value": True, "endpoint": {"serviceName": "db", "port": 5432}},
                              {"key": "count", "value": 3, "type": "I32", "endpoint": ep}],
    }]


@target("zipkin_json_decode")
def _zipkin_json_decode():
    # byte 0 selector: bit 0 = v1 (else v2), bit 1 = parse_string_tags, bit 2 = gzip.
    v2 = json.dumps(zipkin_v2_spans()).encode()
    v1 = json.dumps(zipkin_v1_spans()).encode()
    return {
        "v2_two_spans": b"\x00" + v2,
        "v2_parse_string_tags": b"\x02" + v2,
        "v2_gzip": b"\x04" + gzip.compress(v2, mtime=0),
        "v1_annotations": b"\x01" + v1,
        "v1_gzip_parse_string_tags": b"\x07" + gzip.compress(v1, mtime=0),
        "v2_empty_list": b"\x00[]",
        "broken_v2_bad_trace_id": b"\x00" + v2.replace(b"4bf92f3577b34da6", b"4bf92f35zzb34da6", 1)[:-2],
    }


def zipkin_proto_endpoint(field, service=None, ipv4=None, ipv6=None, port=None):
    parts = []
    if service:
        parts.append(pb_bytes(1, service))
    if ipv4:
        parts.append(pb_bytes(2, bytes(ipv4)))
    if ipv6:
        parts.append(pb_bytes(3, bytes(ipv6)))
    if port:
        parts.append(pb_varint(4, port))
    return pb_msg(field, *parts)


def zipkin_proto_span(trace_id, span_id, name, kind, parent=b"", ts=1700000000000000, dur=25000,
                      local=None, remote=None, annotations=(), tags=None, debug=False, shared=False):
    parts = [pb_bytes(1, trace_id)]
    if parent:
        parts.append(pb_bytes(2, parent))
    parts += [pb_bytes(3, span_id), pb_varint(4, kind), pb_bytes(5, name), pb_fixed64(6, ts), pb_varint(7, dur)]
    if local:
        parts.append(zipkin_proto_endpoint(8, **local))
    if remote:
        parts.append(zipkin_proto_endpoint(9, **remote))
    for t, v in annotations:
        parts.append(pb_msg(10, pb_fixed64(1, t), pb_bytes(2, v)))
    for k, v in (tags or {}).items():
        parts.append(pb_msg(11, pb_bytes(1, k), pb_bytes(2, v)))
    if debug:
        parts.append(pb_varint(12, 1))
    if shared:
        parts.append(pb_varint(13, 1))
    return b"".join(parts)


def zipkin_proto_list():
    # ListOfSpans { repeated Span spans = 1 }; Kind: CLIENT=1 SERVER=2 PRODUCER=3 CONSUMER=4.
    server = zipkin_proto_span(TRACE_ID, PARENT_ID, "get /api/orders", 2,
                               local={"service": "frontend", "ipv4": [192, 168, 99, 1], "port": 8080},
                               remote={"ipv6": bytes.fromhex("20010db80000000000000000000c0001"), "port": 51234},
                               annotations=[(1700000000001000, "wr")],
                               tags={"http.method": "GET", "http.status_code": "200", "retries": "2"})
    client = zipkin_proto_span(TRACE_ID, SPAN_ID, "select", 1, parent=PARENT_ID, ts=1700000000002000, dur=8000,
                               local={"service": "frontend"}, remote={"service": "postgres", "port": 5432},
                               tags={"error": "timeout"}, debug=True, shared=True)
    return server, client


@target("zipkin_proto_decode")
def _zipkin_proto_decode():
    # byte 0 selector: bit 0 = parse_string_tags; body = zipkin2 ListOfSpans protobuf.
    server, client = zipkin_proto_list()
    body = pb_bytes(1, server) + pb_bytes(1, client)
    trace64 = zipkin_proto_span(TRACE_ID[8:], CHILD_ID, "producer send", 3,
                                local={"service": "kafka-client"}, tags={"messaging.system": "kafka"})
    return {
        "two_spans": b"\x00" + body,
        "two_spans_parse_string_tags": b"\x01" + body,
        "trace_id_64bit_producer": b"\x00" + pb_bytes(1, trace64),
        "empty_list": b"\x00",
        "broken_span_id_7_bytes": b"\x00" + pb_bytes(1, zipkin_proto_span(TRACE_ID, SPAN_ID[:7], "x", 2)),
    }


# ---------------------------------------------------------------------------
# Thrift (binary and compact protocols) and Jaeger
# ---------------------------------------------------------------------------

# Binary protocol type ids; compact ids are mapped from them.
T_BOOL, T_BYTE, T_DOUBLE, T_I16, T_I32, T_I64, T_STRING, T_STRUCT, T_MAP, T_SET, T_LIST = \
    2, 3, 4, 6, 8, 10, 11, 12, 13, 14, 15
COMPACT_TYPE = {T_BOOL: 1, T_BYTE: 3, T_I16: 4, T_I32: 5, T_I64: 6, T_DOUBLE: 7, T_STRING: 8,
                T_LIST: 9, T_SET: 10, T_MAP: 11, T_STRUCT: 12}


def zigzag(n):
    return (n << 1) ^ (n >> 63)


class Thrift:
    """Encodes a value tree: struct = list of (id, type, value); list = (elem_type, [values])."""

    def __init__(self, compact):
        self.compact = compact

    def value(self, t, v):
        c = self.compact
        if t == T_BOOL:
            return bytes([1 if v else 2]) if c else bytes([1 if v else 0])
        if t == T_BYTE:
            return struct.pack(">b", v)
        if t in (T_I16, T_I32, T_I64):
            if c:
                return varint(zigzag(v) & ((1 << 64) - 1))
            return struct.pack({T_I16: ">h", T_I32: ">i", T_I64: ">q"}[t], v)
        if t == T_DOUBLE:
            return struct.pack("<d" if c else ">d", v)
        if t == T_STRING:
            data = b(v)
            return (varint(len(data)) if c else struct.pack(">i", len(data))) + data
        if t == T_STRUCT:
            return self.struct(v)
        if t == T_LIST:
            et, items = v
            if c:
                n = len(items)
                head = bytes([(n << 4) | COMPACT_TYPE[et]]) if n < 15 else \
                    bytes([0xF0 | COMPACT_TYPE[et]]) + varint(n)
            else:
                head = bytes([et]) + struct.pack(">i", len(items))
            return head + b"".join(self.value(et, x) for x in items)
        raise TypeError(t)

    def struct(self, fields):
        out = bytearray()
        last = 0
        for fid, t, v in fields:
            if self.compact:
                ct = COMPACT_TYPE[t]
                if t == T_BOOL:
                    ct = 1 if v else 2
                delta = fid - last
                if 0 < delta <= 15:
                    out.append((delta << 4) | ct)
                else:
                    out.append(ct)
                    out += varint(zigzag(fid))
                last = fid
                if t != T_BOOL:
                    out += self.value(t, v)
            else:
                out += bytes([t]) + struct.pack(">h", fid) + self.value(t, v)
        out.append(0)
        return bytes(out)

    def message(self, name, kind, seq, args):
        if self.compact:
            head = bytes([0x82, (kind << 5) | 1]) + varint(seq) + varint(len(name)) + name.encode()
        else:
            head = struct.pack(">I", 0x80010000 | kind) + struct.pack(">i", len(name)) + name.encode() + \
                struct.pack(">i", seq)
        return head + self.struct(args)


def s64(n):
    return n - (1 << 64) if n >= 1 << 63 else n


J_TRACE_HI = s64(int.from_bytes(TRACE_ID[:8], "big"))
J_TRACE_LO = s64(int.from_bytes(TRACE_ID[8:], "big"))
J_ROOT = s64(int.from_bytes(PARENT_ID, "big"))
J_CHILD = s64(int.from_bytes(SPAN_ID, "big"))
J_START_US = 1_700_000_000_000_000


def jt_tag(key, value):
    # Tag {1 key, 2 vType(STRING=0 DOUBLE=1 BOOL=2 LONG=3 BINARY=4), 3 vStr, 4 vDouble, 5 vBool, 6 vLong, 7 vBinary}
    f = [(1, T_STRING, key)]
    if isinstance(value, bool):
        f += [(2, T_I32, 2), (5, T_BOOL, value)]
    elif isinstance(value, int):
        f += [(2, T_I32, 3), (6, T_I64, value)]
    elif isinstance(value, float):
        f += [(2, T_I32, 1), (4, T_DOUBLE, value)]
    elif isinstance(value, bytes):
        f += [(2, T_I32, 4), (7, T_STRING, value)]
    else:
        f += [(2, T_I32, 0), (3, T_STRING, value)]
    return f


def jt_tags(d):
    return (T_STRUCT, [jt_tag(k, v) for k, v in d.items()])


def jt_batch(service="checkout", spans=None, seq=None):
    process = [(1, T_STRING, service),
               (2, T_LIST, jt_tags({"hostname": "web-1", "ip": "10.0.0.7", "jaeger.version": "Go-2.30.0"}))]
    if spans is None:
        root = [(1, T_I64, J_TRACE_LO), (2, T_I64, J_TRACE_HI), (3, T_I64, J_ROOT), (4, T_I64, 0),
                (5, T_STRING, "HTTP GET /api/orders"), (7, T_I32, 1), (8, T_I64, J_START_US),
                (9, T_I64, 25_000),
                (10, T_LIST, jt_tags({"span.kind": "server", "http.status_code": 200, "error": False,
                                      "sampler.param": 1.0}))]
        child = [(1, T_I64, J_TRACE_LO), (2, T_I64, J_TRACE_HI), (3, T_I64, J_CHILD), (4, T_I64, J_ROOT),
                 (5, T_STRING, "SELECT orders"),
                 # SpanRef {1 refType(CHILD_OF=0 FOLLOWS_FROM=1), 2 traceIdLow, 3 traceIdHigh, 4 spanId}
                 (6, T_LIST, (T_STRUCT, [[(1, T_I32, 0), (2, T_I64, J_TRACE_LO), (3, T_I64, J_TRACE_HI),
                                          (4, T_I64, J_ROOT)]])),
                 (7, T_I32, 1), (8, T_I64, J_START_US + 1000), (9, T_I64, 8000),
                 (10, T_LIST, jt_tags({"span.kind": "client", "db.type": "sql", "error": True,
                                       "payload": b"\x00\x01\x02"})),
                 # Log {1 timestamp, 2 fields}
                 (11, T_LIST, (T_STRUCT, [[(1, T_I64, J_START_US + 2000),
                                           (2, T_LIST, jt_tags({"event": "error", "message": "timeout"}))]]))]
        spans = [root, child]
    fields = [(1, T_STRUCT, process), (2, T_LIST, (T_STRUCT, spans))]
    if seq is not None:
        fields.append((3, T_I64, seq))
    return fields


@target("jaeger_thrift_binary")
def _jaeger_thrift_binary():
    # Raw bytes tried as a binary-Thrift jaeger.Batch (HTTP body) and as a
    # binary-Thrift agent datagram (emitBatch message, arg 1 = Batch).
    t = Thrift(compact=False)
    batch = jt_batch()
    body = t.struct(batch)
    datagram = t.message("emitBatch", 4, 1, [(1, T_STRUCT, batch)])
    # Old non-strict message header: name length, name, type byte, seq id.
    non_strict = struct.pack(">i", 9) + b"emitBatch" + b"\x04" + struct.pack(">i", 2) + \
        t.struct([(1, T_STRUCT, jt_batch(spans=[]))])
    return {
        "http_batch_two_spans": body,
        "http_batch_seqno_no_spans": t.struct(jt_batch(spans=[], seq=42)),
        "agent_emit_batch_strict": datagram,
        "agent_emit_batch_non_strict": non_strict,
        "agent_emit_zipkin_batch_refused": t.message("emitZipkinBatch", 4, 0, [(1, T_LIST, (T_STRUCT, []))]),
        "broken_batch_truncated": body[:-9],
    }


@target("jaeger_thrift_compact")
def _jaeger_thrift_compact():
    # A compact-Thrift agent datagram (UDP 6831): emitBatch message, arg 1 = Batch.
    t = Thrift(compact=True)
    many = []
    for i in range(16):  # 16 spans: the long list header form
        many.append([(1, T_I64, J_TRACE_LO), (2, T_I64, 0), (3, T_I64, 0x1000 + i), (4, T_I64, J_ROOT if i else 0),
                     (5, T_STRING, f"op-{i}"), (7, T_I32, 1), (8, T_I64, J_START_US + i), (9, T_I64, 10)])
    return {
        "emit_batch_two_spans": t.message("emitBatch", 4, 1, [(1, T_STRUCT, jt_batch())]),
        "emit_batch_call_type": t.message("emitBatch", 1, 7, [(1, T_STRUCT, jt_batch(seq=3))]),
        "emit_batch_sixteen_spans": t.message("emitBatch", 4, 2, [(1, T_STRUCT, jt_batch(spans=many))]),
        "emit_batch_no_spans": t.message("emitBatch", 4, 0, [(1, T_STRUCT, jt_batch(spans=[]))]),
        "broken_wrong_method": t.message("emitZipkinBatch", 4, 0, [(1, T_LIST, (T_STRUCT, []))]),
        "broken_truncated": t.message("emitBatch", 4, 1, [(1, T_STRUCT, jt_batch())])[:-11],
    }


def jp_kv(field, key, value):
    # KeyValue {1 key, 2 v_type (STRING=0 BOOL=1 INT64=2 FLOAT64=3 BINARY=4), 3 v_str, 4 v_bool,
    # 5 v_int64, 6 v_float64, 7 v_binary}
    parts = [pb_bytes(1, key)]
    if isinstance(value, bool):
        parts += [pb_varint(2, 1), pb_varint(4, int(value))]
    elif isinstance(value, int):
        parts += [pb_varint(2, 2), pb_varint(5, value)]
    elif isinstance(value, float):
        parts += [pb_varint(2, 3), pb_double(6, value)]
    elif isinstance(value, bytes):
        parts += [pb_varint(2, 4), pb_bytes(7, value)]
    else:
        parts += [pb_bytes(3, value)]
    return pb_msg(field, *parts)


def jp_time(field, us):
    return pb_msg(field, pb_varint(1, us // 1_000_000), pb_varint(2, (us % 1_000_000) * 1000))


def jp_dur(field, us):
    return pb_msg(field, pb_varint(1, us // 1_000_000), pb_varint(2, (us % 1_000_000) * 1000))


def jp_span(trace_id, span_id, name, parent=None, start_us=J_START_US, dur_us=25_000, tags=None, logs=(),
            process=None):
    parts = [pb_bytes(1, trace_id), pb_bytes(2, span_id), pb_bytes(3, name)]
    if parent:
        # SpanRef {1 trace_id, 2 span_id, 3 ref_type (CHILD_OF=0 FOLLOWS_FROM=1)}
        parts.append(pb_msg(4, pb_bytes(1, trace_id), pb_bytes(2, parent), pb_varint(3, 0)))
    parts += [pb_varint(5, 1), jp_time(6, start_us), jp_dur(7, dur_us)]
    for k, v in (tags or {}).items():
        parts.append(jp_kv(8, k, v))
    for ts, fields in logs:
        parts.append(pb_msg(9, jp_time(1, ts), *[jp_kv(2, k, v) for k, v in fields.items()]))
    if process is not None:
        parts.append(pb_msg(10, process))
    return b"".join(parts)


def jp_process(service, tags):
    return pb_bytes(1, service) + b"".join(jp_kv(2, k, v) for k, v in tags.items())


@target("jaeger_proto")
def _jaeger_proto():
    # api_v2 PostSpansRequest { Batch batch = 1 }; Batch { repeated Span spans = 1; Process process = 2 }.
    process = jp_process("checkout", {"hostname": "web-1", "ip": "10.0.0.7"})
    root = jp_span(TRACE_ID, PARENT_ID, "HTTP GET /api/orders",
                   tags={"span.kind": "server", "http.status_code": 200, "error": False, "ratio": 0.5})
    child = jp_span(TRACE_ID, SPAN_ID, "SELECT orders", parent=PARENT_ID, start_us=J_START_US + 1000,
                    dur_us=8000, tags={"span.kind": "client", "payload": b"\x00\x01", "error": True},
                    logs=[(J_START_US + 2000, {"event": "error", "message": "timeout"})])
    batch = pb_msg(1, pb_msg(1, root), pb_msg(1, child), pb_msg(2, process))
    own_process = pb_msg(1, pb_msg(1, jp_span(TRACE_ID, CHILD_ID, "span with own process",
                                              process=jp_process("worker", {"queue": "default"}))))
    return {
        "batch_two_spans": batch,
        "span_own_process": own_process,
        "trace_id_64bit": pb_msg(1, pb_msg(1, jp_span(TRACE_ID[8:], SPAN_ID, "short trace id")),
                                 pb_msg(2, process)),
        "empty_request": b"",
        "broken_span_id_9_bytes": pb_msg(1, pb_msg(1, jp_span(TRACE_ID, SPAN_ID + b"\x00", "bad id"))),
    }



# ---------------------------------------------------------------------------
# eBPF database streams (fuzz_targets/ebpf_db_common.rs)
# ---------------------------------------------------------------------------

REQ, RESP = 0, 1


def db_records(head, records):
    """[head][op][len][bytes]...: capture limit = 1 + head * 8; op bit 0 = side
    (0 request, 1 response), op >> 1 = uncaptured bytes / 512; len <= 255, so a
    longer syscall is written as several records (several syscalls)."""
    out = bytearray([head])
    for rec in records:
        side, data = rec[0], b(rec[1])
        uncaptured = rec[2] if len(rec) > 2 else 0
        if not data:
            out += bytes([side | (uncaptured << 1), 0])
        for i in range(0, len(data), 255):
            part = data[i:i + 255]
            last = i + 255 >= len(data)
            op = side | ((uncaptured if last else 0) << 1)
            out += bytes([op, len(part)]) + part
    return bytes(out)


FULL_CAPTURE = 0xFF  # capture limit 2041 bytes: every record whole


def resp_cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = b(a)
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def redis_seeds():
    return {
        "set_get": db_records(FULL_CAPTURE, [
            (REQ, resp_cmd("SET", "user:7", "alice", "EX", "60")), (RESP, b"+OK\r\n"),
            (REQ, resp_cmd("GET", "user:7")), (RESP, b"$5\r\nalice\r\n"),
            (REQ, resp_cmd("GET", "missing")), (RESP, b"$-1\r\n")]),
        "pipeline_int_error_array": db_records(FULL_CAPTURE, [
            (REQ, resp_cmd("INCR", "hits") + resp_cmd("LPUSH", "hits", "x") + resp_cmd("LRANGE", "q", "0", "-1")),
            (RESP, b":1\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"),
            (RESP, b"*2\r\n$1\r\na\r\n$1\r\nb\r\n")]),
        "inline_ping_and_resp3_hello": db_records(FULL_CAPTURE, [
            (REQ, b"PING\r\n"), (RESP, b"+PONG\r\n"),
            (REQ, resp_cmd("HELLO", "3")),
            (RESP, b"%2\r\n+server\r\n+redis\r\n+proto\r\n:3\r\n"),
            (REQ, resp_cmd("HGETALL", "h")), (RESP, b"%1\r\n$1\r\nf\r\n,1.5\r\n"),
            (REQ, resp_cmd("EXISTS", "k")), (RESP, b"#t\r\n")]),
        "small_capture_uncaptured_tail": db_records(2, [
            (REQ, resp_cmd("SET", "blob", "x" * 40), 2), (RESP, b"+OK\r\n"),
            (REQ, resp_cmd("MGET", "a", "b")), (RESP, b"*2\r\n$1\r\n1\r\n_\r\n")]),
        "broken_bad_bulk_length": db_records(FULL_CAPTURE, [
            (REQ, b"*2\r\n$3\r\nGET\r\n$99\r\nkey\r\n"), (RESP, b"$x\r\n"), (REQ, b"*-5\r\n")]),
    }


def memcached_seeds():
    return {
        "set_get_multi": db_records(FULL_CAPTURE, [
            (REQ, b"set user:7 0 3600 5\r\nalice\r\n"), (RESP, b"STORED\r\n"),
            (REQ, b"get user:7 user:8\r\n"), (RESP, b"VALUE user:7 0 5\r\nalice\r\nEND\r\n")]),
        "incr_delete_touch": db_records(FULL_CAPTURE, [
            (REQ, b"incr hits 1\r\n"), (RESP, b"42\r\n"),
            (REQ, b"delete user:8\r\n"), (RESP, b"NOT_FOUND\r\n"),
            (REQ, b"touch user:7 10\r\n"), (RESP, b"TOUCHED\r\n"),
            (REQ, b"gets user:7\r\n"), (RESP, b"VALUE user:7 0 5 12345\r\nalice\r\nEND\r\n")]),
        "meta_commands_noreply": db_records(FULL_CAPTURE, [
            (REQ, b"mg user:7 v f t\r\n"), (RESP, b"VA 5 f0 t-1\r\nalice\r\n"),
            (REQ, b"ms k 2 T60\r\nhi\r\n"), (RESP, b"HD\r\n"),
            (REQ, b"set quiet 0 0 1 noreply\r\nq\r\n"),
            (REQ, b"version\r\n"), (RESP, b"VERSION 1.6.21\r\n")]),
        "small_capture_large_value": db_records(3, [
            (REQ, b"set big 0 0 3000\r\n" + b"v" * 200, 5), (RESP, b"STORED\r\n"),
            (REQ, b"get big\r\n"), (RESP, b"VALUE big 0 3000\r\n" + b"v" * 100, 6)]),
        "broken_unknown_and_short_data": db_records(FULL_CAPTURE, [
            (REQ, b"bogus\r\n"), (RESP, b"ERROR\r\n"),
            (REQ, b"set k 0 0 99\r\nshort\r\n"), (RESP, b"CLIENT_ERROR bad data chunk\r\n")]),
    }


def pg_msg(tag, body):
    return b(tag) + struct.pack(">I", len(body) + 4) + body


def pg_startup(user="alice", database="shop"):
    body = struct.pack(">I", 0x00030000) + b"user\0" + user.encode() + b"\0database\0" + \
        database.encode() + b"\0application_name\0psql\0\0"
    return struct.pack(">I", len(body) + 4) + body


def pg_ready(state=b"I"):
    return pg_msg("Z", state)


def pg_login_reply():
    return (pg_msg("R", struct.pack(">I", 0)) + pg_msg("S", b"server_version\x0016.2\0") +
            pg_msg("K", struct.pack(">II", 4242, 0xDEADBEEF)) + pg_ready())


def pg_row_description(*cols):
    body = struct.pack(">H", len(cols))
    for name, oid in cols:
        body += name.encode() + b"\0" + struct.pack(">IhIhih", 0, 0, oid, 4, -1, 0)
    return pg_msg("T", body)


def pg_data_row(*vals):
    body = struct.pack(">H", len(vals))
    for v in vals:
        body += struct.pack(">i", -1) if v is None else struct.pack(">I", len(v)) + v.encode()
    return pg_msg("D", body)


def pg_error(code, message):
    return pg_msg("E", b"SERROR\0VERROR\0C" + code.encode() + b"\0M" + message.encode() + b"\0\0")


def postgres_seeds():
    simple = [
        (REQ, pg_startup()), (RESP, pg_login_reply()),
        (REQ, pg_msg("Q", b"SELECT id, name FROM users WHERE id = 7\0")),
        (RESP, pg_row_description(("id", 23), ("name", 25)) + pg_data_row("7", "alice") +
         pg_msg("C", b"SELECT 1\0") + pg_ready()),
    ]
    parse = pg_msg("P", b"s1\0SELECT * FROM orders WHERE user_id = $1\0" + struct.pack(">HI", 1, 23))
    bind = pg_msg("B", b"\0s1\0" + struct.pack(">HHI", 0, 1, 1) + b"7" + struct.pack(">H", 0))
    describe = pg_msg("D", b"P\0")
    execute = pg_msg("E", b"\0" + struct.pack(">I", 0))
    sync = pg_msg("S", b"")
    extended = [
        (REQ, parse + bind + describe + execute + sync),
        (RESP, pg_msg("1", b"") + pg_msg("2", b"") + pg_row_description(("total", 1700)) +
         pg_data_row("9.99") + pg_msg("C", b"SELECT 1\0") + pg_ready()),
        (REQ, bind + execute + sync),
        (RESP, pg_msg("2", b"") + pg_data_row(None) + pg_msg("C", b"SELECT 1\0") + pg_ready()),
    ]
    ssl = [(REQ, struct.pack(">II", 8, 80877103)), (RESP, b"N"), (REQ, pg_startup("bob", "app")),
           (RESP, pg_login_reply()),
           (REQ, pg_msg("Q", b"BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1; COMMIT\0")),
           (RESP, pg_msg("C", b"BEGIN\0") + pg_msg("C", b"UPDATE 1\0") + pg_msg("C", b"COMMIT\0") + pg_ready())]
    error = [(REQ, pg_msg("Q", b"SELEC 1\0")),
             (RESP, pg_error("42601", 'syntax error at or near "SELEC"') + pg_ready()),
             (REQ, parse + execute + sync),
             (RESP, pg_error("26000", "prepared statement does not exist") + pg_ready(b"I")),
             (REQ, pg_msg("X", b""))]
    copy = [(REQ, pg_msg("Q", b"COPY t FROM STDIN\0")),
            (RESP, pg_msg("G", struct.pack(">bH", 0, 0))),
            (REQ, pg_msg("d", b"1\talice\n") + pg_msg("c", b"")),
            (RESP, pg_msg("C", b"COPY 1\0") + pg_ready())]
    return {
        "startup_simple_query": db_records(FULL_CAPTURE, simple),
        "extended_parse_bind_execute": db_records(FULL_CAPTURE, extended),
        "ssl_refused_then_transaction": db_records(FULL_CAPTURE, ssl),
        "errors_and_terminate": db_records(FULL_CAPTURE, error),
        "copy_in": db_records(FULL_CAPTURE, copy),
        "small_capture": db_records(4, simple),
        "broken_bad_length": db_records(FULL_CAPTURE, [
            (REQ, b"Q\xff\xff\xff\xf0SELECT 1\0"), (RESP, pg_ready())]),
    }


def my_packet(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def lenenc_str(x):
    x = b(x)
    assert len(x) < 251
    return bytes([len(x)]) + x


def my_ok(seq, affected=0, status=0x0002):
    return my_packet(seq, b"\x00" + bytes([affected, 0]) + struct.pack("<HH", status, 0))


def my_eof(seq, status=0x0002):
    return my_packet(seq, b"\xfe" + struct.pack("<HH", 0, status))


def my_err(seq, code, state, msg):
    return my_packet(seq, b"\xff" + struct.pack("<H", code) + b"#" + state.encode() + msg.encode())


def my_column(seq, table, name, col_type):
    payload = (lenenc_str("def") + lenenc_str("shop") + lenenc_str(table) + lenenc_str(table) +
               lenenc_str(name) + lenenc_str(name) + b"\x0c" + struct.pack("<HIBHB", 33, 255, col_type, 0, 0) +
               b"\0\0")
    return my_packet(seq, payload)


def mysql_seeds():
    greeting = (b"\x0a8.0.36\0" + struct.pack("<I", 17) + b"abcdefgh\0" + struct.pack("<H", 0xFFFF) +
                b"\xff" + struct.pack("<HH", 0x0002, 0xDFFF) + b"\x15" + b"\0" * 10 + b"ijklmnopqrst\0" +
                b"caching_sha2_password\0")
    caps = 0x00000008 | 0x00000200 | 0x00008000 | 0x00080000 | 0x00000001
    login = (struct.pack("<IIB", caps, 16 * 1024 * 1024, 33) + b"\0" * 23 + b"root\0" +
             bytes([20]) + bytes(range(20)) + b"shop\0" + b"mysql_native_password\0")
    query = b"\x03SELECT id, name FROM users WHERE id = 7"
    result = (my_packet(1, b"\x02") + my_column(2, "users", "id", 8) + my_column(3, "users", "name", 253) +
              my_eof(4) + my_packet(5, lenenc_str("7") + lenenc_str("alice")) + my_eof(6))
    handshake = [(RESP, my_packet(0, greeting)), (REQ, my_packet(1, login)), (RESP, my_ok(2)),
                 (REQ, my_packet(0, query)), (RESP, result)]
    prepare = b"\x16SELECT * FROM orders WHERE user_id = ?"
    prepare_ok = (my_packet(1, b"\x00" + struct.pack("<IHHBH", 1, 0, 1, 0, 0)) +
                  my_column(2, "", "?", 8) + my_eof(3))
    execute = b"\x17" + struct.pack("<IBI", 1, 0, 1) + b"\x00" + b"\x01" + b"\x08\x00" + struct.pack("<q", 7)
    prepared = [(REQ, my_packet(0, prepare)), (RESP, prepare_ok),
                (REQ, my_packet(0, execute)), (RESP, my_ok(1, affected=0)),
                (REQ, my_packet(0, b"\x19" + struct.pack("<I", 1)))]
    misc = [(REQ, my_packet(0, b"\x02shop")), (RESP, my_ok(1)),
            (REQ, my_packet(0, b"\x0e")), (RESP, my_ok(1)),
            (REQ, my_packet(0, b"\x03INSERT INTO t VALUES (1), (2)")), (RESP, my_ok(1, affected=2)),
            (REQ, my_packet(0, b"\x03SELECT * FROM nope")),
            (RESP, my_err(1, 1146, "42S02", "Table 'shop.nope' doesn't exist")),
            (REQ, my_packet(0, b"\x01"))]
    multi = [(REQ, my_packet(0, b"\x03CALL two_results()")),
             (RESP, my_packet(1, b"\x01") + my_column(2, "", "a", 3) + my_eof(3) +
              my_packet(4, lenenc_str("1")) + my_eof(5, status=0x000A) +
              my_packet(6, b"\x01") + my_column(7, "", "b", 3) + my_eof(8) +
              my_packet(9, lenenc_str("2")) + my_eof(10))]
    return {
        "handshake_login_query": db_records(FULL_CAPTURE, handshake),
        "prepare_execute_close": db_records(FULL_CAPTURE, prepared),
        "init_db_ping_insert_error_quit": db_records(FULL_CAPTURE, misc),
        "multi_result_sets": db_records(FULL_CAPTURE, multi),
        "small_capture": db_records(2, handshake),
        "broken_truncated_header": db_records(FULL_CAPTURE, [
            (REQ, b"\x20\x00\x00\x00\x03SELECT"), (RESP, b"\x07\x00")]),
    }


@target("ebpf_db_redis")
def _ebpf_db_redis():
    return redis_seeds()


@target("ebpf_db_memcached")
def _ebpf_db_memcached():
    return memcached_seeds()


@target("ebpf_db_postgres")
def _ebpf_db_postgres():
    return postgres_seeds()


@target("ebpf_db_mysql")
def _ebpf_db_mysql():
    return mysql_seeds()


@target("ebpf_db_stream")
def _ebpf_db_stream():
    # byte 0: protocol = DbProtocol::ALL[b & 3] (Redis, Memcached, Postgresql, Mysql),
    # then the ebpf_db_common layout.
    picks = {
        "redis_set_get": (0, redis_seeds()["set_get"]),
        "redis_pipeline": (0, redis_seeds()["pipeline_int_error_array"]),
        "memcached_set_get": (1, memcached_seeds()["set_get_multi"]),
        "postgres_extended": (2, postgres_seeds()["extended_parse_bind_execute"]),
        "postgres_startup_simple": (2, postgres_seeds()["startup_simple_query"]),
        "mysql_handshake_query": (3, mysql_seeds()["handshake_login_query"]),
        "mysql_as_redis_mismatch": (0, mysql_seeds()["init_db_ping_insert_error_quit"]),
    }
    return {k: bytes([sel]) + data for k, (sel, data) in picks.items()}



# ---------------------------------------------------------------------------
# DNS (fuzz_targets/ebpf_dns.rs)
# ---------------------------------------------------------------------------


def dns_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def dns_msg(qid, flags, questions=(), answers=(), authority=(), additional=()):
    head = struct.pack(">HHHHHH", qid, flags, len(questions), len(answers), len(authority), len(additional))
    body = b"".join(dns_name(n) + struct.pack(">HH", t, 1) for n, t in questions)
    for group in (answers, authority, additional):
        for name, rtype, ttl, rdata in group:
            nm = b"\xc0\x0c" if name is None else dns_name(name)
            body += nm + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata
    return head + body


def dns_records(records):
    """[op][len][payload]...; op bit 0 = sent by the socket."""
    out = b""
    for sent, payload in records:
        out += bytes([1 if sent else 0, len(payload)]) + payload
    return out


@target("ebpf_dns")
def _ebpf_dns():
    A, AAAA, CNAME, MX, TXT, OPT = 1, 28, 5, 15, 16, 41
    q1 = dns_msg(0x1A2B, 0x0100, [("example.com", A)])
    r1 = dns_msg(0x1A2B, 0x8180, [("example.com", A)], [(None, A, 300, bytes([93, 184, 216, 34]))])
    q2 = dns_msg(0x0002, 0x0100, [("www.example.org", AAAA)],
                 additional=[("", OPT, 0, b"")])
    r2 = dns_msg(0x0002, 0x8180, [("www.example.org", AAAA)],
                 [(None, CNAME, 60, b"\x03cdn\xc0\x10"),
                  (None, AAAA, 60, bytes.fromhex("20010db8000000000000000000000001"))])
    nx_q = dns_msg(0xBEEF, 0x0100, [("nope.invalid", A)])
    nx_r = dns_msg(0xBEEF, 0x8183, [("nope.invalid", A)],
                   authority=[("invalid", 6, 900, dns_name("a.root-servers.net") + dns_name("nstld.verisign-grs.com") +
                               struct.pack(">IIIII", 2024010101, 1800, 900, 604800, 86400))])
    mx_q = dns_msg(0x4242, 0x0100, [("mail.example.net", MX)])
    mx_r = dns_msg(0x4242, 0x8580, [("mail.example.net", MX)], [(None, MX, 3600, b"\x00\x0a\x02mx\xc0\x0c")])
    txt_q = dns_msg(0x0777, 0x0100, [("_dmarc.example.com", TXT)])
    txt_r = dns_msg(0x0777, 0x8380, [("_dmarc.example.com", TXT)], [])  # TC bit, no answers
    loop = struct.pack(">HHHHHH", 0x0909, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack(">HH", 1, 1)
    return {
        "client_a_query_answer": dns_records([(True, q1), (False, r1)]),
        "client_aaaa_cname_edns": dns_records([(True, q2), (False, r2)]),
        "server_side_nxdomain": dns_records([(False, nx_q), (True, nx_r)]),
        "two_outstanding_queries": dns_records([(True, mx_q), (True, txt_q), (False, txt_r), (False, mx_r)]),
        "answer_without_query": dns_records([(False, r1), (True, q1)]),
        "broken_compression_loop": dns_records([(True, dns_msg(0x0909, 0x0100, [("loop.test", A)])),
                                                (False, loop), (False, r1[:17])]),
    }


# ---------------------------------------------------------------------------
# HPACK (fuzz_targets/ebpf_hpack.rs): blocks of [len_hi][len_lo][bytes], one table
# ---------------------------------------------------------------------------


def hexb(text):
    return bytes.fromhex("".join(text.split()))


def hpack_blocks(*blocks):
    return b"".join(struct.pack(">H", len(x)) + x for x in blocks)


# RFC 7541 appendix C examples (one decoder per sequence).
RFC7541_C3 = [hexb("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
              hexb("8286 84be 5808 6e6f 2d63 6163 6865"),
              hexb("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65")]
RFC7541_C4 = [hexb("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
              hexb("8286 84be 5886 a8eb 1064 9cbf"),
              hexb("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")]
RFC7541_C5 = [hexb("4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230"
                   "3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65"
                   "7861 6d70 6c65 2e63 6f6d"),
              hexb("4803 3330 37c1 c0bf"),
              hexb("88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220"
                   "474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157"
                   "454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076"
                   "6572 7369 6f6e 3d31")]
RFC7541_C6 = [hexb("4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0"
                   "82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3"),
              hexb("4883 640e ffc1 c0bf")]


def hp_str(x):
    x = b(x)
    assert len(x) < 127
    return bytes([len(x)]) + x


def hp_literal(prefix, name, value):
    """A literal with a new name: prefix 0x40 (incremental indexing), 0x00 (without
    indexing) or 0x10 (never indexed)."""
    return bytes([prefix]) + hp_str(name) + hp_str(value)


@target("ebpf_hpack")
def _ebpf_hpack():
    grpc_request = (b"\x83\x86" + hp_literal(0x40, ":path", "/opentelemetry.proto.collector.trace.v1.TraceService/Export") +
                    b"\x41" + hp_str("collector:4317") +  # :authority, indexed name 1
                    hp_literal(0x40, "content-type", "application/grpc") + hp_literal(0x00, "te", "trailers") +
                    hp_literal(0x40, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") +
                    hp_literal(0x10, "authorization", "Bearer s3cr3t-t0k3n") +
                    b"\x1f\x11" + hp_str("session=abc123"))  # cookie (index 32), never indexed
    grpc_again = b"\x83\x86\xc1\xc0\xbf\xbe"  # the same headers from the dynamic table
    size_update = b"\x20" + b"\x3f\xe1\x1f" + b"\x82\x84" + hp_literal(0x40, "x-request-id", "f058ebd6")
    return {
        "rfc7541_c3_requests_plain": hpack_blocks(*RFC7541_C3),
        "rfc7541_c4_requests_huffman": hpack_blocks(*RFC7541_C4),
        "rfc7541_c5_responses_plain": hpack_blocks(*RFC7541_C5),
        "rfc7541_c6_responses_huffman": hpack_blocks(*RFC7541_C6),
        "grpc_request_secrets_then_indexed": hpack_blocks(grpc_request, grpc_again),
        "table_size_updates": hpack_blocks(size_update, b"\xbe"),
        "broken_index_out_of_range_then_block": hpack_blocks(b"\x82\xff\x7f", RFC7541_C3[0]),
    }


# ---------------------------------------------------------------------------
# eBPF kernel records (fuzz_targets/ebpf_records.rs)
# ---------------------------------------------------------------------------

ROLE_UNKNOWN, ROLE_CLIENT, ROLE_SERVER = 0, 1, 2
DIR_EGRESS, DIR_INGRESS, DIR_CLOSE = 0x80, 0x40, 0x00  # ctl[0] bits 6-7 -> direction 1, 2, 0
SEQ_CONTIGUOUS = 2  # ctl[1] bits 0-2 (0 jump forward, 1 back), bit 3 uncaptured extra, bits 4-7 time


def ebpf_rec(side, role, direction, payload=b"", tls=None, seq_mode=SEQ_CONTIGUOUS, dt=1, arg=0, extra=False):
    """4 control bytes then the payload: ctl[0] = side | role << 2 | tls | direction,
    ctl[1] = seq mode | extra << 3 | dt << 4, ctl[2] = payload length, ctl[3] = jump/extra."""
    payload = b(payload)
    assert len(payload) <= 255
    c0 = side | (role << 2) | direction
    if tls == "seq":
        c0 |= 0x10
    elif tls == "noseq":
        c0 |= 0x30
    c1 = seq_mode | (8 if extra else 0) | (dt << 4)
    return bytes([c0, c1, len(payload), arg]) + payload


def ebpf_raw_record(sock_id, role, direction, payload, comm="curl", ts=1_000_000, seq=1000, local=8080,
                    remote=40000):
    """A record as the kernel writes it (record::encode): 120-byte header + payload."""
    hdr = bytearray(120)
    struct.pack_into("<QQ", hdr, 0, ts, ts)
    struct.pack_into("<QIIQIII", hdr, 24, sock_id, 4242, 4243, len(payload), seq, 0, len(payload))
    struct.pack_into("<HHH", hdr, 60, 2, local, remote)
    hdr[66], hdr[67], hdr[68], hdr[70] = role, direction, 1 if direction else 7, 1
    hdr[72:76] = bytes([127, 0, 0, 1])
    hdr[88:92] = bytes([127, 0, 0, 1])
    hdr[104:104 + len(comm)] = comm.encode()
    return bytes(hdr) + payload


HTTP_REQ = (b"GET /api/orders?id=7 HTTP/1.1\r\nHost: shop.local:8080\r\nUser-Agent: curl/8.5.0\r\n"
            b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nAccept: */*\r\n\r\n")
HTTP_RESP = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"id\": 7}\r\n"


@target("ebpf_records")
def _ebpf_records():
    post = b"POST /v1/charge HTTP/1.1\r\nHost: billing\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n"
    return {
        "http_client_call_close": b"".join([
            ebpf_rec(0, ROLE_CLIENT, DIR_EGRESS, HTTP_REQ),
            ebpf_rec(0, ROLE_CLIENT, DIR_INGRESS, HTTP_RESP, dt=3),
            ebpf_rec(0, ROLE_CLIENT, DIR_CLOSE)]),
        "http_server_with_nested_client": b"".join([
            ebpf_rec(1, ROLE_SERVER, DIR_INGRESS, post),
            ebpf_rec(1, ROLE_SERVER, DIR_INGRESS, b"{\"amount\": 5}"),
            ebpf_rec(2, ROLE_CLIENT, DIR_EGRESS, b"*2\r\n$3\r\nGET\r\n$7\r\nuser:42\r\n"),
            ebpf_rec(2, ROLE_CLIENT, DIR_INGRESS, b"$5\r\nalice\r\n"),
            ebpf_rec(1, ROLE_SERVER, DIR_EGRESS, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", dt=2),
            ebpf_rec(1, ROLE_SERVER, DIR_CLOSE), ebpf_rec(2, ROLE_CLIENT, DIR_CLOSE)]),
        "tls_plaintext_with_and_without_seq": b"".join([
            ebpf_rec(0, ROLE_CLIENT, DIR_EGRESS, b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"),
            ebpf_rec(0, ROLE_CLIENT, DIR_EGRESS, HTTP_REQ, tls="seq"),
            ebpf_rec(0, ROLE_CLIENT, DIR_INGRESS, HTTP_RESP, tls="noseq"),
            ebpf_rec(0, ROLE_CLIENT, DIR_CLOSE)]),
        "sequence_jumps_and_uncaptured": b"".join([
            ebpf_rec(3, ROLE_UNKNOWN, DIR_EGRESS, HTTP_REQ[:60], extra=True, arg=4),
            ebpf_rec(3, ROLE_UNKNOWN, DIR_EGRESS, HTTP_REQ[60:], seq_mode=0, arg=200),
            ebpf_rec(3, ROLE_UNKNOWN, DIR_INGRESS, HTTP_RESP, seq_mode=1, arg=17),
            ebpf_rec(3, ROLE_UNKNOWN, DIR_INGRESS, HTTP_RESP, dt=15)]),
        "raw_kernel_record_http_request": ebpf_raw_record(7, ROLE_CLIENT, 1, HTTP_REQ),
        "raw_kernel_record_close": ebpf_raw_record(7, ROLE_SERVER, 0, b""),
        "broken_short_control": ebpf_rec(0, ROLE_CLIENT, DIR_EGRESS, HTTP_REQ)[:40] + b"\xff\x01",
    }


# ---------------------------------------------------------------------------
# ELF (fuzz_targets/ebpf_tls_elf.rs): a tiny hand-built x86-64 libssl look-alike
# ---------------------------------------------------------------------------


def tiny_libssl(version="OPENSSL_3.0.0", read_prefix=b"\xf3\x0f\x1e\xfa\x48\x83\xec\x08",
                write_prefix=b"", read_callee=b"\x55\x48\x89\xe5", write_callee=b"\x41\x54\x55"):
    """ELF64 ET_DYN for x86-64 with one PT_LOAD covering the file, sections .text,
    .dynsym, .dynstr (naming the symbol version node) and .shstrtab; SSL_read_ex and
    SSL_write_ex are `[endbr64; sub $8,%rsp;] call <internal>` to functions starting
    with a push."""
    text_off = 0x80
    text = bytearray(0x40)

    def call(at, prefix, callee_at):
        code = prefix + b"\xe8" + struct.pack("<i", callee_at - (text_off + at + len(prefix) + 5)) + b"\xc3"
        text[at:at + len(code)] = code

    call(0x00, read_prefix, text_off + 0x20)
    call(0x10, write_prefix, text_off + 0x30)
    text[0x20:0x20 + len(read_callee) + 1] = read_callee + b"\xc3"
    text[0x30:0x30 + len(write_callee) + 1] = write_callee + b"\xc3"

    dynstr = b"\0SSL_read_ex\0SSL_write_ex\0libssl.so.3\0" + version.encode() + b"\0"
    shstrtab = b"\0.text\0.dynsym\0.dynstr\0.shstrtab\0"
    TEXT, DYNSYM, DYNSTR, SHSTRTAB = 1, 2, 3, 4

    def sym(name_off, value, size, info=0x12, shndx=TEXT):
        return struct.pack("<IBBHQQ", name_off, info, 0, shndx, value, size)

    dynsym = sym(0, 0, 0, 0, 0) + sym(1, text_off + 0x00, 16) + sym(13, text_off + 0x10, 16)

    body = bytearray(text_off)
    body += text
    dynsym_off = len(body)
    body += dynsym
    dynstr_off = len(body)
    body += dynstr
    shstr_off = len(body)
    body += shstrtab
    while len(body) % 8:
        body.append(0)
    shoff = len(body)

    def shdr(name, stype, flags, addr, off, size, link=0, info=0, align=1, entsize=0):
        return struct.pack("<IIQQQQIIQQ", name, stype, flags, addr, off, size, link, info, align, entsize)

    shdrs = (shdr(0, 0, 0, 0, 0, 0) +
             shdr(shstrtab.index(b".text"), 1, 6, text_off, text_off, len(text), align=16) +
             shdr(shstrtab.index(b".dynsym"), 11, 2, dynsym_off, dynsym_off, len(dynsym), link=DYNSTR, info=1,
                  align=8, entsize=24) +
             shdr(shstrtab.index(b".dynstr"), 3, 2, dynstr_off, dynstr_off, len(dynstr)) +
             shdr(shstrtab.index(b".shstrtab"), 3, 0, 0, shstr_off, len(shstrtab)))
    total = shoff + len(shdrs)
    ehdr = (b"\x7fELF\x02\x01\x01\x00" + b"\0" * 8 +
            struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, shoff, 0, 64, 56, 1, 64, 5, SHSTRTAB))
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, total, total, 0x1000)
    body[0:64] = ehdr
    body[64:120] = phdr
    return bytes(body) + shdrs


@target("ebpf_tls_elf")
def _ebpf_tls_elf():
    ok = tiny_libssl()
    return {
        "libssl3_found.so": ok,
        "libssl111_plain_calls.so": tiny_libssl(version="OPENSSL_1_1_1", read_prefix=b""),
        "libssl32_refused_version.so": tiny_libssl(version="OPENSSL_3.2.0"),
        "callee_without_push.so": tiny_libssl(write_callee=b"\x31\xc0"),
        "broken_truncated_section_headers.so": ok[:-40],
    }



# ---------------------------------------------------------------------------
# HTTP/1.x streams (fuzz_targets/ebpf_http1_stream.rs)
# ---------------------------------------------------------------------------


def h1_records(cap_byte, records):
    """[cap byte: limit = 1 + b * 4][op][len][bytes]...; op bit 0 = response,
    op >> 1 = uncaptured bytes / 4 KiB. Records over 255 bytes are split."""
    out = bytearray([cap_byte])
    for rec in records:
        side, data = rec[0], b(rec[1])
        uncaptured = rec[2] if len(rec) > 2 else 0
        pieces = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
        for i, part in enumerate(pieces):
            op = side | ((uncaptured if i == len(pieces) - 1 else 0) << 1)
            out += bytes([op, len(part)]) + part
    return bytes(out)


@target("ebpf_http1_stream")
def _ebpf_http1_stream():
    full = 0xFF  # capture limit 1021 bytes
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
               b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n")
    get2 = b"GET /health HTTP/1.1\r\nHost: shop.local\r\nX-Request-ID: f058ebd6-02f7\r\n\r\n"
    post_head = (b"POST /v1/charge HTTP/1.1\r\nHost: billing\r\nAuthorization: Bearer s3cr3t\r\n"
                 b"Cookie: session=abc\r\nContent-Type: application/json\r\nContent-Length: 27\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    return {
        "get_200_content_length": h1_records(full, [(REQ, HTTP_REQ), (RESP, HTTP_RESP)]),
        "keepalive_pipelined_chunked": h1_records(full, [
            (REQ, HTTP_REQ + get2), (RESP, chunked), (RESP, b"HTTP/1.1 204 No Content\r\nX-Request-ID: f058ebd6-02f7\r\n\r\n")]),
        "post_authorization_100_continue": h1_records(full, [
            (REQ, post_head), (RESP, b"HTTP/1.1 100 Continue\r\n\r\n"),
            (REQ, b'{"amount": 5, "cur": "EUR"}'),
            (RESP, b"HTTP/1.1 201 Created\r\nLocation: /v1/charge/9\r\nContent-Length: 0\r\n\r\n")]),
        "head_and_http10_close_delimited": h1_records(full, [
            (REQ, b"HEAD /big HTTP/1.1\r\nHost: x\r\n\r\n"),
            (RESP, b"HTTP/1.1 200 OK\r\nContent-Length: 123456\r\n\r\n"),
            (REQ, b"GET /old HTTP/1.0\r\n\r\n"),
            (RESP, b"HTTP/1.0 404 Not Found\r\nServer: legacy\r\n\r\nnot here, bye")]),
        "small_capture_uncaptured_body": h1_records(10, [
            (REQ, b"PUT /upload HTTP/1.1\r\nHost: s3\r\nContent-Length: 8292\r\n\r\n" + b"x" * 100, 2),
            (RESP, b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5000\r\n\r\n" + b"e" * 100, 1)]),
        "broken_bad_status_line": h1_records(full, [
            (REQ, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), (RESP, b"HTTP/1.1 abc Nope\r\n\r\n"),
            (REQ, b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), (RESP, b"HTTP/1.1 999 Too High\r\n\r\n")]),
    }


# ---------------------------------------------------------------------------
# HTTP/2 streams (fuzz_targets/ebpf_http2_stream.rs)
# ---------------------------------------------------------------------------

H2_DATA, H2_HEADERS, H2_PRIORITY, H2_RST, H2_SETTINGS, H2_PUSH, H2_PING, H2_GOAWAY, H2_WINDOW, H2_CONT = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20


def h2_frame(ftype, flags, stream, payload=b""):
    payload = b(payload)
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def h2_records(from_start, cap_units, records):
    """[flags: bit 0 from start (the harness prepends the client preface), bits 1.. =
    capture limit / 8][op][len][bytes]...; op bit 0 = response, op >> 1 = uncaptured
    bytes / 64. Records over 255 bytes are split."""
    out = bytearray([(1 if from_start else 0) | (cap_units << 1)])
    for rec in records:
        side, data = rec[0], b(rec[1])
        uncaptured = rec[2] if len(rec) > 2 else 0
        pieces = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
        for i, part in enumerate(pieces):
            op = side | ((uncaptured if i == len(pieces) - 1 else 0) << 1)
            out += bytes([op, len(part)]) + part
    return bytes(out)


def grpc_message(msg):
    return b"\x00" + struct.pack(">I", len(msg)) + msg


@target("ebpf_http2_stream")
def _ebpf_http2_stream():
    settings = h2_frame(H2_SETTINGS, 0, 0, struct.pack(">HI", 3, 100) + struct.pack(">HI", 4, 65535))
    settings_ack = h2_frame(H2_SETTINGS, ACK, 0)
    grpc_req_block = (b"\x83\x86" + hp_literal(0x40, ":path", "/weft.Orders/Get") +
                      b"\x41" + hp_str("orders:50051") + hp_literal(0x40, "content-type", "application/grpc") +
                      hp_literal(0x00, "te", "trailers") +
                      hp_literal(0x40, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") +
                      hp_literal(0x10, "authorization", "Bearer s3cr3t"))
    grpc_resp_block = b"\x88" + hp_literal(0x40, "content-type", "application/grpc")
    trailers_block = hp_literal(0x00, "grpc-status", "0") + hp_literal(0x00, "grpc-message", "")
    small_pb = pb_varint(1, 7) + pb_bytes(2, "alice")
    grpc = [
        (REQ, settings + h2_frame(H2_WINDOW, 0, 0, struct.pack(">I", 1 << 20))),
        (RESP, settings + settings_ack),
        (REQ, settings_ack + h2_frame(H2_HEADERS, END_HEADERS, 1, grpc_req_block) +
         h2_frame(H2_DATA, END_STREAM, 1, grpc_message(pb_varint(1, 7)))),
        (RESP, h2_frame(H2_HEADERS, END_HEADERS, 1, grpc_resp_block) +
         h2_frame(H2_DATA, 0, 1, grpc_message(small_pb)) +
         h2_frame(H2_HEADERS, END_HEADERS | END_STREAM, 1, trailers_block)),
    ]
    rest = [
        (REQ, settings + h2_frame(H2_HEADERS, END_HEADERS | END_STREAM, 1, RFC7541_C3[0])),
        (RESP, settings + settings_ack + h2_frame(H2_HEADERS, END_HEADERS, 1, RFC7541_C5[0]) +
         h2_frame(H2_DATA, END_STREAM, 1, b"<html>moved</html>")),
        (REQ, h2_frame(H2_HEADERS, END_HEADERS | END_STREAM, 3, RFC7541_C3[1])),
        (RESP, h2_frame(H2_HEADERS, END_HEADERS | END_STREAM, 3, RFC7541_C5[1])),
        (REQ, h2_frame(H2_GOAWAY, 0, 0, struct.pack(">II", 3, 0))),
    ]
    # HEADERS with PADDED and PRIORITY split by a CONTINUATION; PING; RST_STREAM.
    blk = RFC7541_C4[0]
    headers_payload = bytes([4]) + struct.pack(">IB", 0x80000000 | 0, 15) + blk[:6] + b"\0" * 4
    fancy = [
        (REQ, settings + h2_frame(H2_HEADERS, PADDED | PRIORITY_FLAG, 1, headers_payload) +
         h2_frame(H2_CONT, END_HEADERS, 1, blk[6:]) +
         h2_frame(H2_PRIORITY, 0, 3, struct.pack(">IB", 1, 200)) +
         h2_frame(H2_PING, 0, 0, b"weftping")),
        (RESP, settings + h2_frame(H2_PING, ACK, 0, b"weftping") +
         h2_frame(H2_PUSH, END_HEADERS, 1, struct.pack(">I", 2) + b"\x82\x87\x85")),
        (REQ, h2_frame(H2_DATA, PADDED | END_STREAM, 1, bytes([3]) + b"body" + b"\0" * 3)),
        (RESP, h2_frame(H2_HEADERS, END_HEADERS, 1, RFC7541_C6[0]) + h2_frame(H2_RST, 0, 1, struct.pack(">I", 8))),
    ]
    big_body = grpc_message(b"\x0a" + bytes([250]) + b"z" * 250) * 2
    mid = [
        (RESP, h2_frame(H2_DATA, 0, 5, b"tail of an earlier response")),
        (REQ, h2_frame(H2_HEADERS, END_HEADERS, 7, grpc_req_block) + h2_frame(H2_DATA, END_STREAM, 7, big_body)),
        (RESP, h2_frame(H2_HEADERS, END_HEADERS, 7, grpc_resp_block)),
        (RESP, h2_frame(H2_DATA, 0, 7, b"q" * 100), 3),
        (RESP, h2_frame(H2_HEADERS, END_HEADERS | END_STREAM, 7, trailers_block)),
    ]
    return {
        "grpc_unary_from_start": h2_records(True, 0x7F, grpc),
        "rfc7541_requests_responses_two_streams": h2_records(True, 0x7F, rest),
        "padded_priority_continuation_ping_rst": h2_records(True, 0x7F, fancy),
        "mid_connection_uncaptured_data": h2_records(False, 0x7F, mid),
        "small_capture_grpc": h2_records(True, 3, grpc),
        "broken_headers_on_stream_0_bad_length": h2_records(True, 0x7F, [
            (REQ, settings + h2_frame(H2_HEADERS, END_HEADERS, 0, RFC7541_C3[0]) +
             b"\xff\xff\xff\x01\x04\x00\x00\x00\x01" + RFC7541_C3[1])]),
    }


# ---------------------------------------------------------------------------
# Autotracing (fuzz_targets/autotracing_spans.rs): [knobs][OTLP trace protobuf]
# ---------------------------------------------------------------------------


@target("autotracing_spans")
def _autotracing_spans():
    # knobs: bits 0-3 -> max_spans_in_flight - 1, bits 4-7 -> max_spans_per_trace - 1,
    # bit 0 inference, bit 1 keep_correlation_attributes.
    srv_ip, cli_ip = "10.0.0.7", "10.0.0.9"
    zero16, zero8 = bytes(16), bytes(8)
    ebpf_server = otlp_span(bytes.fromhex("11111111111111111111111111111111"), bytes.fromhex("1111111111111111"),
                            "GET /api/orders", kind=2, start=T0, end=T0 + 20_000_000, attrs={
                                "process.pid": 4242, "thread.id": 4243, "http.request.method": "GET",
                                "weft.tcp.req_seq": 1000, "weft.tcp.resp_seq": 5000,
                                "weft.syscall_trace_id.req": 77, "weft.syscall_trace_id.resp": 78,
                                "weft.x_request_id.req": "f058ebd6", "weft.socket.id": 7,
                                "network.local.address": srv_ip, "network.local.port": 8080,
                                "network.peer.address": cli_ip, "network.peer.port": 40000,
                                "weft.header.traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-53995c3f42cd8ad8-01"})
    ebpf_client = otlp_span(bytes.fromhex("22222222222222222222222222222222"), bytes.fromhex("2222222222222222"),
                            "GET", kind=3, start=T0 - 1_000_000, end=T0 + 21_000_000, attrs={
                                "process.pid": 999, "weft.tcp.req_seq": 1000, "weft.tcp.resp_seq": 5000,
                                "network.local.address": cli_ip, "network.local.port": 40000,
                                "network.peer.address": srv_ip, "network.peer.port": 8080,
                                "weft.x_request_id.resp": "f058ebd6", "weft.truncated": True})
    ebpf_db = otlp_span(bytes.fromhex("33333333333333333333333333333333"), bytes.fromhex("3333333333333333"),
                        "SELECT", kind=3, start=T0 + 2_000_000, end=T0 + 9_000_000, attrs={
                            "process.pid": 4242, "thread.id": 4243, "db.system": "postgresql",
                            "weft.syscall_trace_id.req": 77, "network.peer.port": 5432})
    sdk = otlp_span(TRACE_ID, PARENT_ID, "orders.handler", kind=2, start=T0 + 500_000, end=T0 + 19_000_000,
                    attrs={"process.pid": 4242, "thread.id": 4243})

    def request(ebpf_spans, sdk_spans, host="web-1"):
        out = b""
        if ebpf_spans:
            out += otlp_trace_request({"host.name": host, "process.pid": 4242, "service.name": "ebpf"},
                                      ("weft.ebpf", "0.1.0"), ebpf_spans)
        if sdk_spans:
            out += otlp_trace_request({"host.name": host, "process.pid": 4242, "service.name": "orders"},
                                      ("io.opentelemetry.sdk", "1.30.0"), sdk_spans)
        return out

    many = [otlp_span(TRACE_ID, bytes([0, 0, 0, 0, 0, 0, 1, i + 1]), f"child-{i}", kind=1,
                      parent=PARENT_ID, start=T0 + i * 1000, end=T0 + i * 1000 + 500) for i in range(12)]
    return {
        "sdk_spans_only": b"\x00" + otlp_trace_pb(),
        "ebpf_client_server_db_and_sdk": b"\xf3" + request([ebpf_server, ebpf_client, ebpf_db], [sdk]),
        "ebpf_split_across_resources_small_caps": b"\x11" + request([ebpf_server], []) + request([ebpf_client], [sdk]),
        "one_trace_many_children_small_caps": b"\x32" + request([], [otlp_sample_spans()[0]] + many),
        "zero_ids_and_reversed_times": b"\xff" + request(
            [otlp_span(zero16, zero8, "zero", kind=2, start=T1, end=T0, attrs={"weft.tcp.req_seq": -1})],
            [otlp_span(zero16, zero8, "zero-sdk", kind=0)]),
        "broken_truncated": b"\x05" + request([ebpf_server, ebpf_client], [sdk])[:-20],
    }


if __name__ == "__main__":
    write_all()
