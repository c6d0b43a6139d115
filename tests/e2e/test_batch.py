"""The batch processor's sizes as the collector's: send_batch_size triggers a send,
send_batch_max_size splits, timeout sends the rest."""

from __future__ import annotations

import grpc

from harness import otlp_receiver, wait_for_metric
from otlp_support import OtlpGrpcClient, flatten_spans, make_trace_request, seq_of


def test_batch_splits_at_max_size_and_flushes_rest_on_timeout(weft, grpc_sink, port):
    sink = grpc_sink()
    rcv = port()
    w = weft(
        {
            "receivers": {"otlp": otlp_receiver(grpc_port=rcv)},
            "processors": {
                "batch": {"send_batch_size": 10, "send_batch_max_size": 10, "timeout": "300ms"}
            },
            # One queue consumer: with the default ten, batches may reach the sink in any
            # order, and this test checks the order the batch processor made them in.
            "exporters": {
                "otlp_grpc": {
                    "endpoint": sink.endpoint,
                    "tls": {"insecure": True},
                    "sending_queue": {"num_consumers": 1},
                }
            },
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
    with OtlpGrpcClient(f"127.0.0.1:{rcv}") as c:
        assert c.export(make_trace_request(range(25))) == (grpc.StatusCode.OK, "")
    assert sink.wait_for_spans(25), w.log_tail()
    sizes = [len(flatten_spans([r])) for r in sink.traces]
    assert sizes == [10, 10, 5]
    # order within the stream is kept
    assert [seq_of(r.item) for r in sink.spans()] == list(range(25))
    samples_size = wait_for_metric(
        w, "otelcol_processor_batch_batch_size_trigger_send", 2, processor="batch"
    )
    assert samples_size == 2
    assert wait_for_metric(w, "otelcol_processor_batch_timeout_trigger_send", 1, processor="batch") == 1
