"""Hot reload under load: while a sender streams spans with known ids into weft, the
config file is rewritten (an exporter added, the batch size changed, a broken config
written and fixed) and SIGHUP is sent. Not one span is lost or duplicated, weft stays
healthy through the broken config and says why it kept the old one, and the exporter
added mid-way gets every span sent after it came up."""

from __future__ import annotations

import signal
import time
from collections import Counter

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from harness import SpanSender, otlp_receiver, wait_until
from otlp_support import flatten_spans, parse_otlp_json, seq_of

# The file is polled once a second; give a change three polls to take effect.
RELOAD_SETTLE = 3.0


def config(sink_endpoint: str, rcv: int, batch: dict, file_path: str | None) -> dict:
    exporters = {"otlp_grpc": {"endpoint": sink_endpoint, "tls": {"insecure": True}}}
    pipeline_exporters = ["otlp_grpc"]
    if file_path is not None:
        exporters["file"] = {"path": file_path}
        pipeline_exporters.append("file")
    return {
        "receivers": {"otlp": otlp_receiver(grpc_port=rcv)},
        "processors": {"batch": batch},
        "exporters": exporters,
        "service": {
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": pipeline_exporters,
                }
            }
        },
    }


def request_sizes(sink) -> list[int]:
    with sink._lock:
        reqs = list(sink.traces)
    return [len(flatten_spans([r])) for r in reqs]


def test_reload_under_load_loses_and_duplicates_nothing(weft, grpc_sink, port, tmp_path):
    sink = grpc_sink()
    rcv = port()
    out_file = tmp_path / "added.jsonl"
    big = {"send_batch_size": 50, "timeout": "100ms"}
    w = weft(config(sink.endpoint, rcv, big, None))
    sender = SpanSender(f"127.0.0.1:{rcv}", per_request=5, interval=0.005).start()
    try:
        assert wait_until(lambda: sender.acked_count() >= 200, 20), "sender made no progress"

        # 1. add a second exporter (file) to the running pipeline
        w.write_config(config(sink.endpoint, rcv, big, str(out_file)))

        def file_spans():
            if not out_file.exists():
                return []
            text = out_file.read_text()
            # the last line may be half written while we read
            lines = [ln for ln in text.split("\n")[:-1] if ln.strip()]
            return flatten_spans(parse_otlp_json(ln, ExportTraceServiceRequest) for ln in lines)

        assert wait_until(lambda: len(file_spans()) > 0, 15, 0.1), (
            f"file exporter added by reload wrote nothing\n{w.log_tail()}"
        )
        # every request acknowledged from here on entered the new graph
        time.sleep(0.5)
        mark = sender.acked_count()

        # 2. change the batch size: requests at the sink shrink to at most 7 spans
        assert max(request_sizes(sink)) > 7
        small = {"send_batch_size": 7, "send_batch_max_size": 7, "timeout": "100ms"}
        w.write_config(config(sink.endpoint, rcv, small, str(out_file)))
        seen_before = len(request_sizes(sink))
        time.sleep(RELOAD_SETTLE)
        assert wait_until(
            lambda: len(request_sizes(sink)) > seen_before + 20
            and max(request_sizes(sink)[-20:]) <= 7,
            15,
            0.1,
        ), f"batch size change not applied: last sizes {request_sizes(sink)[-20:]}"

        # 3. a broken config: weft keeps the running one, stays healthy, says why
        broken = config(sink.endpoint, rcv, small, str(out_file))
        broken["processors"]["batch"]["send_batch_sizee"] = 3
        log_before = len(w.log_text())
        w.write_raw(w.render(broken))
        assert wait_until(lambda: "send_batch_sizee" in w.log_text()[log_before:], 10, 0.1), (
            f"no log line names the bad key after a broken reload\n{w.log_tail()}"
        )
        assert w.alive(), w.log_tail()
        assert w.health_status() == 200
        acked = sender.acked_count()
        assert wait_until(lambda: sender.acked_count() > acked + 100, 10), (
            "weft stopped accepting after a broken config"
        )

        # 4. fix it (a new valid config, so a real reload happens), then SIGHUP
        fixed = {"send_batch_size": 9, "send_batch_max_size": 9, "timeout": "100ms"}
        w.write_config(config(sink.endpoint, rcv, fixed, str(out_file)))
        time.sleep(RELOAD_SETTLE)
        w.signal(signal.SIGHUP)
        time.sleep(RELOAD_SETTLE)
        assert w.alive() and w.health_status() == 200, w.log_tail()
    finally:
        sender.stop()

    # flush everything: SIGTERM drains batches and queues
    assert w.stop() == 0, w.log_tail()

    sent = sender.acked_snapshot()
    assert sender.gave_up == []
    got = [seq_of(r.item) for r in sink.spans()]
    dups = [k for k, n in Counter(got).items() if n > 1]
    assert dups == [], f"{len(dups)} spans delivered twice, e.g. {dups[:10]}"
    assert len(got) == len(sent), f"sent {len(sent)} spans, sink received {len(got)}"
    missing = sorted(set(sent) - set(got))
    extra = sorted(set(got) - set(sent))
    assert missing == [] and extra == [], f"missing {missing[:20]}, unexpected {extra[:20]}"
    # every span the sink got is byte-identical to what was sent
    assert {r.item.name for r in sink.spans()} == {f"op-{n}" for n in sent}

    in_file = [seq_of(r.item) for r in file_spans()]
    file_dups = [k for k, n in Counter(in_file).items() if n > 1]
    assert file_dups == [], f"file exporter wrote {len(file_dups)} spans twice"
    assert set(in_file) <= set(sent)
    after_mark = set(sent[mark:])
    not_in_file = sorted(after_mark - set(in_file))
    assert not_in_file == [], (
        f"{len(not_in_file)} spans sent after the file exporter came up are not in the "
        f"file, e.g. {not_in_file[:20]}"
    )
    # refusals during reloads would mean clients saw the swap
    assert sender.errors == [], f"weft refused {len(sender.errors)} requests: {sender.errors[:5]}"


def simple_config(rcv: int, sink_endpoint: str) -> dict:
    return {
        "receivers": {"otlp": otlp_receiver(grpc_port=rcv)},
        "exporters": {"otlp_grpc": {"endpoint": sink_endpoint, "tls": {"insecure": True}}},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_grpc"]}}
        },
    }


def export(rcv: int, numbers, wait: bool = True):
    from otlp_support import OtlpGrpcClient, make_trace_request

    with OtlpGrpcClient(f"127.0.0.1:{rcv}") as c:
        return c.export(make_trace_request(numbers), timeout=5, wait_for_ready=wait)[0]


def test_reload_moves_receiver_and_exporter_endpoints(weft, grpc_sink, ports):
    import grpc

    old_sink, new_sink = grpc_sink(), grpc_sink()
    old_rcv, new_rcv = ports(2)
    w = weft(simple_config(old_rcv, old_sink.endpoint))
    assert export(old_rcv, range(0, 5)) == grpc.StatusCode.OK
    assert old_sink.wait_for_spans(5)

    w.write_config(simple_config(new_rcv, new_sink.endpoint))
    assert wait_until(lambda: export(new_rcv, [], wait=False) == grpc.StatusCode.OK, 10, 0.2), (
        f"the moved receiver never listened\n{w.log_tail()}"
    )
    # the old port is closed
    assert export(old_rcv, range(900, 901), wait=False) == grpc.StatusCode.UNAVAILABLE
    assert export(new_rcv, range(5, 10)) == grpc.StatusCode.OK
    assert new_sink.wait_for_spans(5), w.log_tail()
    assert w.stop() == 0
    assert sorted(seq_of(r.item) for r in old_sink.spans()) == list(range(0, 5))
    assert sorted(seq_of(r.item) for r in new_sink.spans()) == list(range(5, 10))


def test_reload_that_cannot_bind_keeps_the_running_graph(weft, grpc_sink, ports):
    """The new config's receiver port is taken: the reload fails, says so, and the
    running receiver keeps serving."""
    import socket

    import grpc

    sink = grpc_sink()
    rcv, taken = ports(2)
    w = weft(simple_config(rcv, sink.endpoint))
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", taken))
    blocker.listen(1)
    try:
        log_before = len(w.log_text())
        w.write_config(simple_config(taken, sink.endpoint))
        assert wait_until(lambda: f"127.0.0.1:{taken}" in w.log_text()[log_before:], 10, 0.1), (
            f"no log line names the endpoint that could not be bound\n{w.log_tail()}"
        )
        time.sleep(0.5)
        assert w.alive() and w.health_status() == 200
        assert export(rcv, range(5)) == grpc.StatusCode.OK
        assert sink.wait_for_spans(5), w.log_tail()
    finally:
        blocker.close()
    assert w.stop() == 0
    assert sorted(seq_of(r.item) for r in sink.spans()) == list(range(5))
