"""Data in equals data out: an app instrumented with the OpenTelemetry SDK sends a
known span tree through weft (otlp receiver -> batch -> exporter) to an independent
OTLP peer, and every id, name, kind, status, attribute (type and value), event, link,
resource and scope arrives unchanged. Metrics and logs pipelines likewise."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from harness import (
    app_result,
    assert_app_spans,
    otlp_receiver,
    run_app,
    wait_for_metric,
    wait_until,
)
from otlp_support import (
    OtlpGrpcClient,
    assert_rows_equal,
    flatten_logs,
    flatten_metrics,
    flatten_spans,
    parse_otlp_json,
    sample_logs_request,
    sample_metrics_request,
    to_otlp_json,
)

BATCH = {"batch": {"timeout": "100ms"}}


def traces_pipeline(receivers, exporters, processors=("batch",)):
    return {"receivers": list(receivers), "processors": list(processors), "exporters": list(exporters)}


@pytest.mark.parametrize(
    "exporter_type,compression",
    [("otlp_grpc", None), ("otlp_grpc", "none"), ("otlp", "gzip")],
)
def test_sdk_grpc_through_weft_to_grpc_sink(weft, grpc_sink, port, exporter_type, compression):
    sink = grpc_sink()
    rcv = port()
    exporter = {"endpoint": sink.endpoint, "tls": {"insecure": True}}
    if compression is not None:
        exporter["compression"] = compression
    w = weft(
        {
            "receivers": {"otlp": otlp_receiver(grpc_port=rcv)},
            "processors": BATCH,
            "exporters": {exporter_type: exporter},
            "service": {"pipelines": {"traces": traces_pipeline(["otlp"], [exporter_type])}},
        }
    )
    out = app_result(run_app("grpc", f"127.0.0.1:{rcv}"))
    assert sink.wait_for_spans(3), f"sink got {len(sink.spans())} spans\n{w.log_tail()}"
    assert_app_spans(out, sink.spans())
    assert (
        wait_for_metric(w, "otelcol_receiver_accepted_spans", 3, receiver="otlp", transport="grpc")
        == 3
    )
    assert wait_for_metric(w, "otelcol_exporter_sent_spans", 3, exporter=exporter_type) == 3
    assert w.stop() == 0
    # nothing more arrived at shutdown: exactly once
    assert len(sink.spans()) == 3


@pytest.mark.parametrize(
    "exporter_type,encoding,compression",
    [
        ("otlp_http", "proto", "none"),
        ("otlp_http", "proto", None),
        ("otlphttp", "json", "none"),
        ("otlp_http", "json", "gzip"),
    ],
)
def test_sdk_http_through_weft_to_http_sink(
    weft, http_sink, port, exporter_type, encoding, compression
):
    sink = http_sink()
    rcv = port()
    exporter = {"endpoint": sink.base_url, "encoding": encoding}
    if compression is not None:
        exporter["compression"] = compression
    w = weft(
        {
            "receivers": {"otlp": otlp_receiver(http_port=rcv)},
            "processors": BATCH,
            "exporters": {exporter_type: exporter},
            "service": {"pipelines": {"traces": traces_pipeline(["otlp"], [exporter_type])}},
        }
    )
    out = app_result(run_app("http", f"http://127.0.0.1:{rcv}/v1/traces", "gzip"))
    assert sink.wait_for_spans(3), f"sink got {sink.rejected}\n{w.log_tail()}"
    assert_app_spans(out, sink.spans())
    first = sink.received[0]
    assert first.path == "/v1/traces"
    want_ct = "application/json" if encoding == "json" else "application/x-protobuf"
    assert first.content_type == want_ct
    # the collector's otlphttp exporter compresses with gzip unless told otherwise
    want_enc = "" if compression == "none" else "gzip"
    assert first.content_encoding == want_enc
    assert sink.rejected == []
    assert (
        wait_for_metric(w, "otelcol_receiver_accepted_spans", 3, receiver="otlp", transport="http")
        == 3
    )
    assert wait_for_metric(w, "otelcol_exporter_sent_spans", 3, exporter=exporter_type) == 3
    assert w.stop() == 0
    assert len(sink.spans()) == 3


def test_otlp_json_request_through_weft(weft, grpc_sink, port):
    """OTLP/JSON in (hex ids, enums as ints, 64-bit ints as strings) comes out as the
    same protobuf; the response is JSON because the request was."""
    sink = grpc_sink()
    rcv = port()
    weft(
        {
            "receivers": {"otlp": otlp_receiver(http_port=rcv)},
            "processors": BATCH,
            "exporters": {"otlp_grpc": {"endpoint": sink.endpoint, "tls": {"insecure": True}}},
            "service": {"pipelines": {"traces": traces_pipeline(["otlp"], ["otlp_grpc"])}},
        }
    )
    # the SDK's own encoding of the known tree, not sent by the app
    out = app_result(run_app("encode"))
    req = ExportTraceServiceRequest.FromString(base64.b64decode(out["request"]))
    body = to_otlp_json(req)
    assert '"traceId"' in body and '"startTimeUnixNano": "' in body
    r = requests.post(
        f"http://127.0.0.1:{rcv}/v1/traces",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    parse_otlp_json(r.content, ExportTraceServiceResponse)  # a valid (empty) response
    assert sink.wait_for_spans(3)
    assert_rows_equal(sink.spans(), flatten_spans([req]))


def test_file_exporter_writes_one_otlp_json_request_per_line(weft, port, tmp_path):
    rcv = port()
    out_file = tmp_path / "traces.jsonl"
    w = weft(
        {
            "receivers": {"otlp": otlp_receiver(grpc_port=rcv)},
            "processors": BATCH,
            "exporters": {"file": {"path": str(out_file)}},
            "service": {"pipelines": {"traces": traces_pipeline(["otlp"], ["file"])}},
        }
    )
    out = app_result(run_app("grpc", f"127.0.0.1:{rcv}"))

    def lines():
        if not out_file.exists():
            return []
        return [ln for ln in out_file.read_text().splitlines() if ln.strip()]

    def spans_in_file():
        return flatten_spans(parse_otlp_json(ln, ExportTraceServiceRequest) for ln in lines())

    assert wait_until(lambda: len(spans_in_file()) >= 3, 20), (
        f"file has {lines()!r}\n{w.log_tail()}"
    )
    assert w.stop() == 0
    for ln in lines():
        doc = json.loads(ln)
        assert list(doc) == ["resourceSpans"], f"not an ExportTraceServiceRequest: {ln[:200]}"
        span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        # OTLP/JSON: ids are hex, not base64
        assert len(span["traceId"]) == 32 and int(span["traceId"], 16) >= 0
    assert_app_spans(out, spans_in_file())


@pytest.mark.parametrize(
    "receiver_transport,exporter_type",
    [
        ("grpc", "otlp_grpc"),
        ("grpc", "otlp_http"),
        ("http-proto", "otlp_grpc"),
        ("http-json", "otlp_http"),
    ],
)
def test_metrics_and_logs_pipelines(
    weft, grpc_sink, http_sink, ports, receiver_transport, exporter_type
):
    grpc_port, http_port = ports(2)
    if exporter_type == "otlp_grpc":
        sink = grpc_sink()
        exporter = {"endpoint": sink.endpoint, "tls": {"insecure": True}}
    else:
        sink = http_sink()
        exporter = {"endpoint": sink.base_url}
    w = weft(
        {
            "receivers": {"otlp": otlp_receiver(grpc_port=grpc_port, http_port=http_port)},
            "processors": BATCH,
            "exporters": {exporter_type: exporter},
            "service": {
                "pipelines": {
                    "metrics": traces_pipeline(["otlp"], [exporter_type]),
                    "logs": traces_pipeline(["otlp"], [exporter_type]),
                }
            },
        }
    )
    metrics_req = sample_metrics_request()
    logs_req = sample_logs_request()
    transport = "grpc" if receiver_transport == "grpc" else "http"
    if receiver_transport == "grpc":
        with OtlpGrpcClient(f"127.0.0.1:{grpc_port}") as c:
            assert c.export(metrics_req) == (grpc.StatusCode.OK, "")
            assert c.export(logs_req) == (grpc.StatusCode.OK, "")
    else:
        for path, req in (("/v1/metrics", metrics_req), ("/v1/logs", logs_req)):
            if receiver_transport == "http-json":
                body, ctype = to_otlp_json(req), "application/json"
            else:
                body, ctype = req.SerializeToString(), "application/x-protobuf"
            r = requests.post(
                f"http://127.0.0.1:{http_port}{path}",
                data=body,
                headers={"Content-Type": ctype},
                timeout=10,
            )
            assert r.status_code == 200, (path, r.status_code, r.text)
            assert r.headers["Content-Type"].startswith(ctype)
    assert sink.wait_for_metrics(3), w.log_tail()
    assert sink.wait_for_logs(1), w.log_tail()
    assert_rows_equal(sink.metric_rows(), flatten_metrics([metrics_req]))
    assert_rows_equal(sink.log_rows(), flatten_logs([logs_req]))
    assert (
        wait_for_metric(
            w, "otelcol_receiver_accepted_metric_points", 3, receiver="otlp", transport=transport
        )
        == 3
    )
    assert (
        wait_for_metric(
            w, "otelcol_receiver_accepted_log_records", 1, receiver="otlp", transport=transport
        )
        == 1
    )
    assert wait_for_metric(w, "otelcol_exporter_sent_metric_points", 3, exporter=exporter_type) == 3
    assert wait_for_metric(w, "otelcol_exporter_sent_log_records", 1, exporter=exporter_type) == 1
    assert w.stop() == 0
    assert len(sink.metric_rows()) == 3 and len(sink.log_rows()) == 1


def test_debug_exporter_detailed_prints_every_span(weft, port):
    rcv = port()
    w = weft(
        {
            "receivers": {"otlp": otlp_receiver(grpc_port=rcv)},
            "exporters": {"debug": {"verbosity": "detailed"}},
            "service": {"pipelines": {"traces": traces_pipeline(["otlp"], ["debug"], ())}},
        }
    )
    out = app_result(run_app("grpc", f"127.0.0.1:{rcv}"))
    assert w.stop() == 0
    log = w.log_text()
    for s in out["spans"]:
        assert f"Name           : {s['name']}" in log, w.log_tail()
        assert f"ID             : {s['span_id']}" in log
    assert f"Trace ID       : {out['trace_id']}" in log
    assert "Status message : deadline exceeded after 2 attempts" in log
