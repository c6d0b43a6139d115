"""The peers and the SDK app checked against each other, without weft: if these
fail, the other tests' verdicts about weft mean nothing."""

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from harness import app_result, assert_app_spans, run_app
from otlp_support import (
    OtlpGrpcClient,
    flatten_spans,
    make_trace_request,
    parse_otlp_json,
    to_otlp_json,
)


def test_sdk_grpc_exporter_to_grpc_sink(grpc_sink):
    sink = grpc_sink()
    out = app_result(run_app("grpc", sink.endpoint))
    assert sink.wait_for_spans(3)
    rows = sink.spans()
    assert_app_spans(out, rows)
    root = next(r.item for r in rows if r.item.parent_span_id == b"")
    attrs = {kv.key: kv.value for kv in root.attributes}
    assert attrs["http.response.status_code"].int_value == 200
    assert attrs["server.duration_ratio"].double_value == 0.875
    assert attrs["user.is_admin"].bool_value is True
    assert [v.string_value for v in attrs["tags"].array_value.values] == ["a", "b", "c"]
    client = next(r.item for r in rows if r.item.name == "SELECT orders")
    assert client.status.code == 2 and client.status.message == "deadline exceeded after 2 attempts"
    assert [e.name for e in client.events] == ["retry"]
    internal = next(r.item for r in rows if r.item.name == "render invoice")
    assert internal.links[0].trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert internal.links[0].span_id.hex() == "b7ad6b7169203331"


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_sdk_http_exporter_to_http_sink(http_sink, compression):
    sink = http_sink()
    out = app_result(run_app("http", f"{sink.base_url}/v1/traces", compression))
    assert sink.wait_for_spans(3)
    assert sink.received[0].content_type == "application/x-protobuf"
    assert sink.received[0].content_encoding == ("gzip" if compression == "gzip" else "")
    assert_app_spans(out, sink.spans())


def test_grpc_sink_refuses_then_accepts(grpc_sink):
    sink = grpc_sink()
    sink.fail_next(2)
    req = make_trace_request(range(5))
    with OtlpGrpcClient(sink.endpoint) as c:
        assert c.export(req)[0] == grpc.StatusCode.UNAVAILABLE
        assert c.export(req)[0] == grpc.StatusCode.UNAVAILABLE
        assert c.export(req)[0] == grpc.StatusCode.OK
    assert sink.failed_requests == 2
    assert len(sink.spans()) == 5


def test_grpc_sink_down_and_up_on_same_port(grpc_sink):
    sink = grpc_sink()
    sink.stop()
    with OtlpGrpcClient(sink.endpoint) as c:
        code, _ = c.export(make_trace_request([1]), timeout=2, wait_for_ready=False)
        assert code == grpc.StatusCode.UNAVAILABLE
    sink.start()
    with OtlpGrpcClient(sink.endpoint) as c:
        assert c.export(make_trace_request([2]))[0] == grpc.StatusCode.OK
    assert [r.item.name for r in sink.spans()] == ["op-2"]


def test_otlp_json_roundtrip():
    req = make_trace_request(range(3))
    text = to_otlp_json(req)
    assert '"traceId": "5ef7' in text
    assert parse_otlp_json(text, ExportTraceServiceRequest) == req
    assert len(flatten_spans([req])) == 3
