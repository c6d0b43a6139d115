"""OTLP utilities shared by the end-to-end tests and the peers: OTLP/JSON <-> protobuf,
flattening requests into (resource, scope, item) rows, building requests with known
ids, and reading weft's Prometheus self-metrics."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

# OTLP/JSON writes these byte fields as hex; protobuf's canonical JSON wants base64.
_ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def _convert_ids(obj: Any, to_b64: bool) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in _ID_KEYS and isinstance(v, str):
                if to_b64:
                    out[k] = base64.b64encode(bytes.fromhex(v)).decode()
                else:
                    out[k] = base64.b64decode(v).hex()
            else:
                out[k] = _convert_ids(v, to_b64)
        return out
    if isinstance(obj, list):
        return [_convert_ids(v, to_b64) for v in obj]
    return obj


def parse_otlp_json(text: str | bytes, cls: type[Message]) -> Message:
    """Parse OTLP/JSON (hex ids, lowerCamelCase, enums as ints) into `cls`."""
    doc = json.loads(text)
    msg = cls()
    json_format.ParseDict(_convert_ids(doc, to_b64=True), msg, ignore_unknown_fields=True)
    return msg


def read_jsonl_traces(path, offset: int) -> tuple[int, list[ExportTraceServiceRequest]]:
    """The complete OTLP/JSON lines a file exporter wrote after byte `offset`:
    (the offset after them, the requests). A line still being written waits."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset, []
    complete = data[: data.rfind(b"\n") + 1]
    requests = [
        parse_otlp_json(line, ExportTraceServiceRequest)
        for line in complete.splitlines()
        if line.strip()
    ]
    return offset + len(complete), requests


def to_otlp_json(msg: Message) -> str:
    """Render a message as OTLP/JSON: hex ids, enums as ints, camelCase keys."""
    doc = json_format.MessageToDict(msg, use_integers_for_enums=True)
    return json.dumps(_convert_ids(doc, to_b64=False))


# ---------------------------------------------------------------------------
# Flattening: a pipeline may regroup resources and scopes or split batches, so the
# tests compare rows of (resource, scope, item), each row exact.


@dataclass(frozen=True)
class Row:
    resource: bytes  # serialized Resource (attributes in order)
    resource_schema_url: str
    scope: bytes  # serialized InstrumentationScope
    scope_schema_url: str
    item: Message

    @property
    def key(self) -> tuple[str, str]:
        return span_key(self.item)

    def sort_key(self) -> bytes:
        return self.resource + b"\0" + self.scope + b"\0" + self.item.SerializeToString(
            deterministic=True
        )


def flatten_spans(requests: Iterable[ExportTraceServiceRequest]) -> list[Row]:
    rows = []
    for req in requests:
        for rs in req.resource_spans:
            res = rs.resource.SerializeToString(deterministic=True)
            for ss in rs.scope_spans:
                scope = ss.scope.SerializeToString(deterministic=True)
                for span in ss.spans:
                    rows.append(Row(res, rs.schema_url, scope, ss.schema_url, span))
    return rows


def flatten_metrics(requests: Iterable[ExportMetricsServiceRequest]) -> list[Row]:
    rows = []
    for req in requests:
        for rm in req.resource_metrics:
            res = rm.resource.SerializeToString(deterministic=True)
            for sm in rm.scope_metrics:
                scope = sm.scope.SerializeToString(deterministic=True)
                for metric in sm.metrics:
                    rows.append(Row(res, rm.schema_url, scope, sm.schema_url, metric))
    return rows


def flatten_logs(requests: Iterable[ExportLogsServiceRequest]) -> list[Row]:
    rows = []
    for req in requests:
        for rl in req.resource_logs:
            res = rl.resource.SerializeToString(deterministic=True)
            for sl in rl.scope_logs:
                scope = sl.scope.SerializeToString(deterministic=True)
                for rec in sl.log_records:
                    rows.append(Row(res, rl.schema_url, scope, sl.schema_url, rec))
    return rows


def span_key(span: Span) -> tuple[str, str]:
    return (span.trace_id.hex(), span.span_id.hex())


def assert_rows_equal(got: list[Row], want: list[Row]) -> None:
    """Exact equality of two row multisets, with a readable first difference."""
    assert len(got) == len(want), f"got {len(got)} items, want {len(want)}"
    got_sorted = sorted(got, key=Row.sort_key)
    want_sorted = sorted(want, key=Row.sort_key)
    for g, w in zip(got_sorted, want_sorted):
        if g.resource != w.resource:
            raise AssertionError(
                f"resource differs:\n got  {Resource.FromString(g.resource)}\n"
                f" want {Resource.FromString(w.resource)}"
            )
        if g.scope != w.scope:
            raise AssertionError(
                f"scope differs:\n got  {InstrumentationScope.FromString(g.scope)}\n"
                f" want {InstrumentationScope.FromString(w.scope)}"
            )
        assert g.resource_schema_url == w.resource_schema_url
        assert g.scope_schema_url == w.scope_schema_url
        if g.item != w.item:
            raise AssertionError(f"item differs:\n got:\n{g.item}\n want:\n{w.item}")


# ---------------------------------------------------------------------------
# Requests with known ids, for senders that count exactly.

TEST_RESOURCE = Resource(
    attributes=[
        KeyValue(key="service.name", value=AnyValue(string_value="weft-e2e-sender")),
        KeyValue(key="host.name", value=AnyValue(string_value="e2e")),
    ]
)
TEST_SCOPE = InstrumentationScope(name="weft.e2e", version="1.0.0")


def trace_id_for(n: int, run: int = 0) -> bytes:
    return (0x5EF7 << 112 | run << 64 | n).to_bytes(16, "big")


def span_id_for(n: int) -> bytes:
    return (0x1 << 60 | n).to_bytes(8, "big")


def make_span(n: int, run: int = 0, name: str | None = None) -> Span:
    start = 1_700_000_000_000_000_000 + n * 1000
    return Span(
        trace_id=trace_id_for(n, run),
        span_id=span_id_for(n),
        name=name or f"op-{n}",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start,
        end_time_unix_nano=start + 500,
        attributes=[
            KeyValue(key="seq", value=AnyValue(int_value=n)),
            KeyValue(key="run", value=AnyValue(int_value=run)),
        ],
        status=Status(code=Status.STATUS_CODE_OK),
    )


def make_trace_request(numbers: Iterable[int], run: int = 0) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=TEST_RESOURCE,
                scope_spans=[
                    ScopeSpans(scope=TEST_SCOPE, spans=[make_span(n, run) for n in numbers])
                ],
            )
        ]
    )


def seq_of(span: Span) -> int:
    """The sequence number a sender put in span_id_for()."""
    return int.from_bytes(span.span_id, "big") & ((1 << 60) - 1)


def any_array(*values: AnyValue) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=list(values)))


# ---------------------------------------------------------------------------
# Prometheus text format

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[tuple[str, frozenset], float]:
    out: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError(f"not a Prometheus sample line: {line!r}")
        name, _, labels, value, _ = m.groups()
        lbl = frozenset(_LABEL.findall(labels or ""))
        out[(name, lbl)] = float(value)
    return out


def metric_sum(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """Sum of every series of `name` whose labels include `labels`; 0 when none."""
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= set(lbl))


def metric_series(samples: dict[tuple[str, frozenset], float], name: str) -> dict:
    return {lbl: v for (n, lbl), v in samples.items() if n == name}


# ---------------------------------------------------------------------------
# Clients for weft's receivers


class OtlpGrpcClient:
    """Plain gRPC stubs over one insecure channel to an OTLP receiver."""

    def __init__(self, endpoint: str):
        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self.endpoint = endpoint
        self.channel = grpc.insecure_channel(endpoint)
        self.traces = trace_service_pb2_grpc.TraceServiceStub(self.channel)
        self.metrics = metrics_service_pb2_grpc.MetricsServiceStub(self.channel)
        self.logs = logs_service_pb2_grpc.LogsServiceStub(self.channel)

    def export(self, request: Message, timeout: float = 10.0, wait_for_ready: bool = True):
        """Send one Export; return (grpc.StatusCode, details). With wait_for_ready the
        call waits (up to `timeout`) for the channel to connect instead of failing fast."""
        import grpc

        stub = {
            ExportTraceServiceRequest: self.traces,
            ExportMetricsServiceRequest: self.metrics,
            ExportLogsServiceRequest: self.logs,
        }[type(request)]
        try:
            stub.Export(request, timeout=timeout, wait_for_ready=wait_for_ready)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# Known metrics and logs requests


def sample_metrics_request() -> ExportMetricsServiceRequest:
    """One resource, one scope, a gauge, a cumulative monotonic sum and a histogram."""
    from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

    t0 = 1_700_000_000_000_000_000
    attrs = [
        KeyValue(key="route", value=AnyValue(string_value="/checkout")),
        KeyValue(key="code", value=AnyValue(int_value=200)),
    ]
    return ExportMetricsServiceRequest(
        resource_metrics=[
            m.ResourceMetrics(
                resource=Resource(
                    attributes=[
                        KeyValue(key="service.name", value=AnyValue(string_value="metrics-app")),
                        KeyValue(key="replica", value=AnyValue(int_value=3)),
                    ]
                ),
                schema_url="https://opentelemetry.io/schemas/1.26.0",
                scope_metrics=[
                    m.ScopeMetrics(
                        scope=InstrumentationScope(name="weft.e2e.metrics", version="1.2"),
                        metrics=[
                            m.Metric(
                                name="queue.depth",
                                description="items waiting",
                                unit="{item}",
                                gauge=m.Gauge(
                                    data_points=[
                                        m.NumberDataPoint(
                                            attributes=attrs, time_unix_nano=t0 + 5, as_int=42
                                        )
                                    ]
                                ),
                            ),
                            m.Metric(
                                name="http.server.requests",
                                unit="{request}",
                                sum=m.Sum(
                                    aggregation_temporality=m.AGGREGATION_TEMPORALITY_CUMULATIVE,
                                    is_monotonic=True,
                                    data_points=[
                                        m.NumberDataPoint(
                                            attributes=attrs,
                                            start_time_unix_nano=t0,
                                            time_unix_nano=t0 + 5,
                                            as_double=1234.5,
                                        )
                                    ],
                                ),
                            ),
                            m.Metric(
                                name="http.server.duration",
                                unit="ms",
                                histogram=m.Histogram(
                                    aggregation_temporality=m.AGGREGATION_TEMPORALITY_DELTA,
                                    data_points=[
                                        m.HistogramDataPoint(
                                            attributes=attrs,
                                            start_time_unix_nano=t0,
                                            time_unix_nano=t0 + 5,
                                            count=6,
                                            sum=93.5,
                                            bucket_counts=[1, 2, 3],
                                            explicit_bounds=[10.0, 50.0],
                                            min=1.5,
                                            max=40.0,
                                        )
                                    ],
                                ),
                            ),
                        ],
                    )
                ],
            )
        ]
    )


def sample_logs_request() -> ExportLogsServiceRequest:
    """One log record with a body, severity, attributes and trace context."""
    from opentelemetry.proto.logs.v1 import logs_pb2 as lg

    t0 = 1_700_000_000_000_000_000
    return ExportLogsServiceRequest(
        resource_logs=[
            lg.ResourceLogs(
                resource=Resource(
                    attributes=[
                        KeyValue(key="service.name", value=AnyValue(string_value="logs-app"))
                    ]
                ),
                scope_logs=[
                    lg.ScopeLogs(
                        scope=InstrumentationScope(name="weft.e2e.logs", version="0.1"),
                        log_records=[
                            lg.LogRecord(
                                time_unix_nano=t0 + 7,
                                observed_time_unix_nano=t0 + 9,
                                severity_number=lg.SEVERITY_NUMBER_WARN,
                                severity_text="WARN",
                                body=AnyValue(string_value="payment retried"),
                                attributes=[
                                    KeyValue(key="attempt", value=AnyValue(int_value=2)),
                                    KeyValue(key="ratio", value=AnyValue(double_value=0.5)),
                                    KeyValue(key="final", value=AnyValue(bool_value=False)),
                                    KeyValue(
                                        key="ids",
                                        value=any_array(
                                            AnyValue(int_value=1), AnyValue(int_value=2)
                                        ),
                                    ),
                                ],
                                flags=1,
                                trace_id=bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736"),
                                span_id=bytes.fromhex("00f067aa0ba902b7"),
                                event_name="payment.retry",
                            )
                        ],
                    )
                ],
            )
        ]
    )
