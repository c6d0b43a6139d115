"""Malformed input at weft's OTLP receiver gets the collector's status codes, a
google.rpc.Status body for 400s, is counted in weft_receiver_bad_requests, and leaves
weft alive and serving."""

from __future__ import annotations

import json

import grpc
import pytest
import requests
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from harness import otlp_receiver, wait_for_metric
from otlp_support import OtlpGrpcClient, make_trace_request, metric_sum, seq_of

MAX_BODY = 2048
PROTO = "application/x-protobuf"
JSON = "application/json"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def truncated_protobuf() -> bytes:
    raw = make_trace_request(range(3)).SerializeToString()
    cut = raw[:-7]
    with pytest.raises(DecodeError):  # the reference decoder rejects it too
        ExportTraceServiceRequest.FromString(cut)
    return cut


def garbage() -> bytes:
    # an 11-byte varint tag: no protobuf decoder can accept it
    data = b"\xff" * 11 + b"garbage"
    with pytest.raises(DecodeError):
        ExportTraceServiceRequest.FromString(data)
    return data


def oversized() -> bytes:
    req = make_trace_request(range(100))
    data = req.SerializeToString()
    assert len(data) > 2 * MAX_BODY
    return data


# (name, method, headers, body, want status)
def cases():
    return [
        ("truncated protobuf", "POST", {"Content-Type": PROTO}, truncated_protobuf(), 400),
        ("garbage bytes", "POST", {"Content-Type": PROTO}, garbage(), 400),
        ("invalid json", "POST", {"Content-Type": JSON}, b'{"resourceSpans": [{', 400),
        ("text/plain", "POST", {"Content-Type": "text/plain"}, b"hello", 415),
        ("GET", "GET", {}, None, 405),
        ("over max_request_body_size", "POST", {"Content-Type": PROTO}, oversized(), 413),
        (
            "corrupt gzip",
            "POST",
            {"Content-Type": PROTO, "Content-Encoding": "gzip"},
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03this is not deflate data",
            400,
        ),
        (
            "zstd garbage",
            "POST",
            {"Content-Type": PROTO, "Content-Encoding": "zstd"},
            b"\x28\xb5\x2f\xfd" + b"\x00\xff" * 16,
            400,
        ),
    ]


def decode_status(resp: requests.Response, request_type: str) -> status_pb2.Status:
    """The google.rpc.Status of a 400, in the request's content type."""
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
    assert ctype == request_type, f"400 answered as {ctype!r} to a {request_type} request"
    if request_type == JSON:
        doc = json.loads(resp.content)
        st = status_pb2.Status(code=doc["code"], message=doc.get("message", ""))
    else:
        st = status_pb2.Status.FromString(resp.content)
    return st


def test_bad_requests_get_exact_status_codes_and_are_counted(weft, grpc_sink, ports):
    sink = grpc_sink()
    grpc_port, http_port = ports(2)
    w = weft(
        {
            "receivers": {
                "otlp": otlp_receiver(
                    grpc_port=grpc_port, http_port=http_port, max_request_body_size=MAX_BODY
                )
            },
            "processors": {"batch": {"timeout": "50ms"}},
            "exporters": {"otlp_grpc": {"endpoint": sink.endpoint, "tls": {"insecure": True}}},
            "service": {
                "pipelines": {
                    "traces": {
                        "receivers": ["otlp"],
                        "processors": ["batch"],
                        "exporters": ["otlp_grpc"],
                    }
                }
            },
        }
    )
    url = f"http://127.0.0.1:{http_port}/v1/traces"
    before = w.metrics()
    assert metric_sum(before, "weft_receiver_bad_requests", receiver="otlp") == 0

    got = []
    for name, method, headers, body, want in cases():
        r = requests.request(method, url, headers=headers, data=body, timeout=10)
        got.append((name, r.status_code))
        if want == 400 and r.status_code == 400:
            st = decode_status(r, headers["Content-Type"])
            assert st.code == code_pb2.INVALID_ARGUMENT, f"{name}: status {st}"
            assert st.message, f"{name}: a 400 must say what was wrong"
    assert got == [(c[0], c[4]) for c in cases()]

    # gRPC: bytes that are not an ExportTraceServiceRequest
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    raw_export = channel.unary_unary(EXPORT_METHOD)  # bytes in, bytes out
    with pytest.raises(grpc.RpcError) as err:
        raw_export(garbage(), timeout=10, wait_for_ready=True)
    assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL), (
        err.value
    )
    channel.close()

    # weft is alive and a good request still goes through, on both transports
    assert w.alive() and w.health_status() == 200
    good_http = make_trace_request([1001, 1002])
    r = requests.post(
        url, data=good_http.SerializeToString(), headers={"Content-Type": PROTO}, timeout=10
    )
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith(PROTO)
    with OtlpGrpcClient(f"127.0.0.1:{grpc_port}") as c:
        assert c.export(make_trace_request([2001])) == (grpc.StatusCode.OK, "")
    assert sink.wait_for_spans(3), w.log_tail()
    assert sorted(seq_of(r.item) for r in sink.spans()) == [1001, 1002, 2001]

    http_bad = len(cases())
    assert (
        wait_for_metric(w, "weft_receiver_bad_requests", http_bad, receiver="otlp", transport="http")
        == http_bad
    )
    assert (
        wait_for_metric(w, "weft_receiver_bad_requests", 1, receiver="otlp", transport="grpc") == 1
    )
    samples = w.metrics()
    assert (
        metric_sum(samples, "otelcol_receiver_accepted_spans", receiver="otlp", transport="http")
        == 2
    )
    assert (
        metric_sum(samples, "otelcol_receiver_accepted_spans", receiver="otlp", transport="grpc")
        == 1
    )


def test_json_error_body_is_json_status(weft, grpc_sink, port):
    """A 400 to a JSON request is a JSON google.rpc.Status (code 3 and a message)."""
    sink = grpc_sink()
    http_port = port()
    weft(
        {
            "receivers": {"otlp": otlp_receiver(http_port=http_port)},
            "exporters": {"otlp_grpc": {"endpoint": sink.endpoint, "tls": {"insecure": True}}},
            "service": {
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_grpc"]}}
            },
        }
    )
    r = requests.post(
        f"http://127.0.0.1:{http_port}/v1/traces",
        data=b'{"resourceSpans": "not a list"}',
        headers={"Content-Type": JSON},
        timeout=10,
    )
    assert r.status_code == 400
    st = decode_status(r, JSON)
    assert st.code == code_pb2.INVALID_ARGUMENT and st.message


def test_unknown_path_is_404(weft, grpc_sink, port):
    sink = grpc_sink()
    http_port = port()
    weft(
        {
            "receivers": {"otlp": otlp_receiver(http_port=http_port)},
            "exporters": {"otlp_grpc": {"endpoint": sink.endpoint, "tls": {"insecure": True}}},
            "service": {
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_grpc"]}}
            },
        }
    )
    body = make_trace_request([1]).SerializeToString()
    for path in ("/v1/trace", "/v2/traces", "/"):
        r = requests.post(
            f"http://127.0.0.1:{http_port}{path}",
            data=body,
            headers={"Content-Type": PROTO},
            timeout=10,
        )
        assert r.status_code == 404, (path, r.status_code)
    assert sink.spans() == []
