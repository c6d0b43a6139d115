"""OTLP server and client rules beyond the happy path: OTLP/JSON variants, zstd and
gzip bodies, gRPC compression and message size, fan-out to several pipelines and
exporters, and the HTTP exporter's traces_endpoint."""

from __future__ import annotations

import gzip
import json

import grpc
import pytest
import requests
import zstandard
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from harness import otlp_receiver, wait_for_metric
from otlp_support import (
    OtlpGrpcClient,
    assert_rows_equal,
    flatten_spans,
    make_trace_request,
    seq_of,
    to_otlp_json,
)

PROTO = "application/x-protobuf"


def simple(weft, receiver: dict, sink_endpoint: str):
    return weft(
        {
            "receivers": {"otlp": receiver},
            "exporters": {"otlp_grpc": {"endpoint": sink_endpoint, "tls": {"insecure": True}}},
            "service": {
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_grpc"]}}
            },
        }
    )


def test_otlp_json_numbers_enums_and_unknown_fields(weft, grpc_sink, port):
    """64-bit integers as JSON numbers, enums as integers, unknown keys ignored."""
    sink = grpc_sink()
    rcv = port()
    simple(weft, otlp_receiver(http_port=rcv), sink.endpoint)
    start = 1_700_000_000_000_000_123  # above 2**53: must not pass through a double
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "j"}}],
                    "futureResourceField": {"x": 1},
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "json-scope"},
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "parentSpanId": "eee19b7ec3c1b173",
                                "name": "numbers",
                                "kind": 3,
                                "startTimeUnixNano": start,
                                "endTimeUnixNano": str(start + 1000),
                                "attributes": [
                                    {"key": "big", "value": {"intValue": 9007199254740993}},
                                    {"key": "str_int", "value": {"intValue": "-42"}},
                                    {"key": "d", "value": {"doubleValue": 1.5}},
                                    {"key": "b", "value": {"boolValue": True}},
                                    {"key": "raw", "value": {"bytesValue": "AAEC"}},
                                ],
                                "status": {"code": 2, "message": "boom"},
                                "someUnknownField": [1, 2, 3],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    r = requests.post(
        f"http://127.0.0.1:{rcv}/v1/traces",
        data=json.dumps(body),
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert sink.wait_for_spans(1)
    (row,) = sink.spans()
    span = row.item
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert span.span_id.hex() == "eee19b7ec3c1b174"
    assert span.parent_span_id.hex() == "eee19b7ec3c1b173"
    assert span.kind == 3
    assert span.start_time_unix_nano == start
    assert span.end_time_unix_nano == start + 1000
    attrs = {kv.key: kv.value for kv in span.attributes}
    assert attrs["big"].int_value == 9007199254740993
    assert attrs["str_int"].int_value == -42
    assert attrs["d"].double_value == 1.5
    assert attrs["b"].bool_value is True
    assert attrs["raw"].bytes_value == b"\x00\x01\x02"
    assert (span.status.code, span.status.message) == (2, "boom")


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
@pytest.mark.parametrize("content_type", [PROTO, "application/json"])
def test_compressed_http_bodies(weft, grpc_sink, port, encoding, content_type):
    sink = grpc_sink()
    rcv = port()
    simple(weft, otlp_receiver(http_port=rcv), sink.endpoint)
    req = make_trace_request(range(20))
    raw = req.SerializeToString() if content_type == PROTO else to_otlp_json(req).encode()
    body = gzip.compress(raw) if encoding == "gzip" else zstandard.ZstdCompressor().compress(raw)
    r = requests.post(
        f"http://127.0.0.1:{rcv}/v1/traces",
        data=body,
        headers={"Content-Type": content_type, "Content-Encoding": encoding},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    if content_type == PROTO:
        ExportTraceServiceResponse.FromString(r.content)
    assert sink.wait_for_spans(20)
    assert_rows_equal(sink.spans(), flatten_spans([req]))


def padded_request(mib: float, first: int) -> ExportTraceServiceRequest:
    req = make_trace_request([first])
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.add(key="pad").value.string_value = "x" * int(mib * (1 << 20))
    return req


def big_message_stub(rcv: int):
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    channel = grpc.insecure_channel(
        f"127.0.0.1:{rcv}", options=[("grpc.max_send_message_length", 64 << 20)]
    )
    return channel, trace_service_pb2_grpc.TraceServiceStub(channel)


def test_grpc_gzip_request_and_large_message(weft, grpc_sink, port):
    sink = grpc_sink()
    rcv = port()
    simple(weft, otlp_receiver(grpc_port=rcv), sink.endpoint)
    channel, stub = big_message_stub(rcv)
    stub.Export(
        make_trace_request(range(50)),
        timeout=10,
        wait_for_ready=True,
        compression=grpc.Compression.Gzip,
    )
    # max_recv_msg_size_mib defaults to 4
    stub.Export(padded_request(3, 1000), timeout=20)
    channel.close()
    assert sink.wait_for_spans(51)
    assert sorted(seq_of(r.item) for r in sink.spans()) == list(range(50)) + [1000]


def test_grpc_message_over_the_limit_is_resource_exhausted(weft, grpc_sink, port):
    """The collector (grpc-go) answers RESOURCE_EXHAUSTED, which OTLP exporters treat
    as permanent. OUT_OF_RANGE would be retried by them (the collector's otlp exporter,
    the SDKs, weft's own otlp_grpc) for max_elapsed_time, with no chance of success."""
    sink = grpc_sink()
    rcv = port()
    simple(weft, otlp_receiver(grpc_port=rcv), sink.endpoint)
    channel, stub = big_message_stub(rcv)
    with pytest.raises(grpc.RpcError) as err:
        stub.Export(padded_request(5, 2000), timeout=20, wait_for_ready=True)
    channel.close()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value
    assert sink.spans() == []


def test_fan_out_to_pipelines_and_exporters(weft, grpc_sink, http_sink, port, tmp_path):
    """One receiver feeding two pipelines, one of them with two exporters: each
    destination gets every span exactly once."""
    a, b = grpc_sink(), grpc_sink()
    h = http_sink()
    rcv = port()
    w = weft(
        {
            "receivers": {"otlp": otlp_receiver(grpc_port=rcv)},
            "processors": {"batch": {"timeout": "50ms"}, "batch/other": {"timeout": "80ms"}},
            "exporters": {
                "otlp_grpc/a": {"endpoint": a.endpoint, "tls": {"insecure": True}},
                "otlp/b": {"endpoint": b.endpoint, "tls": {"insecure": True}},
                "otlphttp/h": {"endpoint": h.base_url},
            },
            "service": {
                "pipelines": {
                    "traces": {
                        "receivers": ["otlp"],
                        "processors": ["batch"],
                        "exporters": ["otlp_grpc/a", "otlphttp/h"],
                    },
                    "traces/second": {
                        "receivers": ["otlp"],
                        "processors": ["batch/other"],
                        "exporters": ["otlp/b"],
                    },
                }
            },
        }
    )
    reqs = [make_trace_request(range(i * 10, i * 10 + 10)) for i in range(5)]
    with OtlpGrpcClient(f"127.0.0.1:{rcv}") as c:
        for req in reqs:
            assert c.export(req) == (grpc.StatusCode.OK, "")
    want = flatten_spans(reqs)
    for sink in (a, b, h):
        assert sink.wait_for_spans(50), w.log_tail()
    # the receiver counts each span once, however many pipelines it feeds
    assert (
        wait_for_metric(w, "otelcol_receiver_accepted_spans", 50, receiver="otlp", transport="grpc")
        == 50
    )
    for exporter in ("otlp_grpc/a", "otlp/b", "otlphttp/h"):
        assert wait_for_metric(w, "otelcol_exporter_sent_spans", 50, exporter=exporter) == 50
    assert w.stop() == 0
    for sink in (a, b, h):
        assert_rows_equal(sink.spans(), want)


def test_http_exporter_traces_endpoint(weft, http_sink, port):
    """traces_endpoint is used as is, nothing appended."""
    sink = http_sink()
    sink.add_path("/ingest/otlp/spans", "traces")
    rcv = port()
    w = weft(
        {
            "receivers": {"otlp": otlp_receiver(grpc_port=rcv)},
            "exporters": {"otlp_http": {"traces_endpoint": f"{sink.base_url}/ingest/otlp/spans"}},
            "service": {
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_http"]}}
            },
        }
    )
    with OtlpGrpcClient(f"127.0.0.1:{rcv}") as c:
        assert c.export(make_trace_request(range(3))) == (grpc.StatusCode.OK, "")
    assert sink.wait_for_spans(3), (sink.rejected, w.log_tail())
    assert [r.path for r in sink.received] == ["/ingest/otlp/spans"]
    assert wait_for_metric(w, "otelcol_exporter_sent_spans", 3, exporter="otlp_http") == 3
