"""The persistent sending queue (`file_storage` + `sending_queue.storage`).

A client's request is acknowledged only once its spans are written to the queue, batch
processor or not; what was acknowledged survives SIGKILL and is sent, before anything
new, when weft starts again and the destination comes back. Damaged queue files are
reported, their readable part kept. An outage longer than the in-memory queue could
ride out loses nothing with a large enough persistent queue, and with a small one the
refusals are exactly what the metrics count."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import grpc

from harness import SpanSender, otlp_receiver, wait_for_metric, wait_until
from otlp_support import OtlpGrpcClient, make_trace_request, metric_sum, seq_of

RETRY = {
    "enabled": True,
    "initial_interval": "100ms",
    "max_interval": "1s",
    "max_elapsed_time": "0s",
}


def config(rcv: int, sink_endpoint: str, directory: Path, queue: dict, batch: dict | None,
           fsync: bool = False) -> dict:
    pipeline = {"receivers": ["otlp"], "exporters": ["otlp_grpc"]}
    processors = {}
    if batch is not None:
        processors["batch"] = batch
        pipeline["processors"] = ["batch"]
    return {
        "receivers": {"otlp": otlp_receiver(grpc_port=rcv)},
        "processors": processors,
        "exporters": {
            "otlp_grpc": {
                "endpoint": sink_endpoint,
                "tls": {"insecure": True},
                "timeout": "2s",
                "retry_on_failure": RETRY,
                "sending_queue": {"storage": "file_storage/q", **queue},
            }
        },
        "extensions": {
            "file_storage/q": {
                "directory": str(directory),
                "create_directory": True,
                "fsync": fsync,
            }
        },
        "service": {"extensions": ["file_storage/q"], "pipelines": {"traces": pipeline}},
    }


def records(segment: bytes) -> list[tuple[int, int]]:
    """(start, end) of each record of a queue segment: a 25-byte header
    (magic, payload length, crc, seq, signal, items) and the payload."""
    out, off = [], 0
    while off < len(segment):
        assert segment[off : off + 4] == b"WQR1", off
        length = int.from_bytes(segment[off + 4 : off + 8], "little")
        out.append((off, off + 25 + length))
        off += 25 + length
    return out


def delivered(sink) -> Counter:
    return Counter(seq_of(r.item) for r in sink.spans())


def send(endpoint: str, first: int, requests: int, per_request: int) -> tuple[list[int], list]:
    acked, refused = [], []
    with OtlpGrpcClient(endpoint) as c:
        for i in range(requests):
            nums = list(range(first + i * per_request, first + (i + 1) * per_request))
            code, details = c.export(make_trace_request(nums), timeout=5)
            if code == grpc.StatusCode.OK:
                acked.extend(nums)
            else:
                refused.append((nums[0], code.name, details))
    return acked, refused


def test_acknowledged_spans_survive_sigkill(weft, grpc_sink, port, tmp_path):
    rcv = port()
    sink = grpc_sink(start=False)  # the destination is down
    cfg = config(
        rcv,
        sink.endpoint,
        tmp_path / "queue",
        {"num_consumers": 2, "queue_size": 100000},
        {"send_batch_size": 50, "timeout": "50ms"},
        fsync=True,
    )
    first = weft(cfg, name="before")
    sender = SpanSender(f"127.0.0.1:{rcv}", per_request=10, interval=0.005).start()
    assert wait_until(lambda: sender.acked_count() >= 500, 20), "weft acknowledged too little"
    # Mid-stream: the sender has requests in flight when weft dies.
    assert first.kill() == -9
    acked_before_kill = sender.acked_count()
    time.sleep(0.5)
    second = weft(cfg, name="after")
    assert wait_until(lambda: sender.acked_count() >= acked_before_kill + 500, 20), (
        f"the restarted weft acknowledged too little\n{second.log_tail()}"
    )
    sender.stop()
    assert sender.gave_up == []
    acked = sender.acked_snapshot()
    recovered = metric_sum(
        second.metrics(), "weft_exporter_queue_recovered_batches", exporter="otlp_grpc"
    )
    assert recovered > 0, second.log_tail()
    assert "is sent before new data" in second.log_text()

    sink.start()
    assert sink.wait_for_spans(len(set(acked)), timeout=60), (
        f"the sink got {len(sink.spans())} of {len(set(acked))}\n{second.log_tail()}"
    )
    assert wait_until(
        lambda: metric_sum(second.metrics(), "otelcol_exporter_queue_size", exporter="otlp_grpc")
        == 0,
        30,
    )
    got = delivered(sink)
    missing = set(acked) - set(got)
    assert missing == set(), f"{len(missing)} acknowledged spans lost, e.g. {sorted(missing)[:10]}"
    # Duplicates: a request written to disk whose answer the kill cut off, sent again
    # by the client. The sender has one request in flight at a time.
    dups = sum(n - 1 for n in got.values())
    assert dups in (0, 10), f"{dups} duplicates"
    print(f"kill -9: {len(set(acked))} acknowledged spans, 0 lost, {dups} duplicates")
    assert second.stop() == 0


def test_queue_is_sent_before_new_data_and_damage_is_reported(weft, grpc_sink, port, tmp_path):
    rcv = port()
    sink = grpc_sink(start=False)
    qdir = tmp_path / "queue"
    cfg = config(rcv, sink.endpoint, qdir, {"num_consumers": 1, "queue_size": 1000}, None)
    w = weft(cfg, name="first")
    acked, refused = send(f"127.0.0.1:{rcv}", 0, 30, 10)
    assert refused == [] and len(acked) == 300
    assert w.stop() == 0
    assert "stay in the persistent queue for the next start" in w.log_text()

    # Damage: flip a byte inside the 11th record, cut the last one short.
    segs = sorted((qdir / "exporter_otlp_grpc").glob("seg-*.log"))
    assert len(segs) == 1, segs
    data = bytearray(segs[0].read_bytes())
    bounds = records(bytes(data))
    assert len(bounds) == 30
    start, end = bounds[10]
    data[(start + end) // 2] ^= 0xFF
    segs[0].write_bytes(bytes(data[: len(data) - 5]))
    damaged = (end - start) + (bounds[29][1] - bounds[29][0]) - 5

    w2 = weft(cfg, name="second")
    log = w2.log_text()
    assert log.count("persistent queue damaged") == 2, w2.log_tail()
    samples = w2.metrics()
    assert metric_sum(samples, "weft_exporter_queue_recovered_batches", exporter="otlp_grpc") == 28
    assert metric_sum(
        samples, "weft_exporter_queue_damaged_bytes", exporter="otlp_grpc"
    ) == damaged
    new, refused = send(f"127.0.0.1:{rcv}", 1000, 2, 10)
    assert refused == []
    sink.start()
    assert sink.wait_for_spans(280 + 20, timeout=30), w2.log_tail()
    order = [seq_of(r.item) for r in sink.spans()]
    kept = [n for n in acked if not (100 <= n < 110 or n >= 290)]
    assert order == kept + new, "recovered spans must leave first, in order"
    assert w2.stop() == 0


def test_sixty_second_outage_large_queue_loses_nothing_small_queue_counts_refusals(
    weft, grpc_sink, port, tmp_path
):
    sinks, wefts, senders = [], [], []
    for name, size in (("large", 100000), ("small", 40)):
        rcv = port()
        sink = grpc_sink(start=False)
        cfg = config(
            rcv,
            sink.endpoint,
            tmp_path / name,
            {"num_consumers": 2, "queue_size": size},
            {"send_batch_size": 50, "timeout": "50ms"},
        )
        sinks.append(sink)
        wefts.append(weft(cfg, name=name))
        # One attempt per request: a refused one stays refused, so the counters can be
        # compared with what the client saw.
        senders.append(SpanSender(f"127.0.0.1:{rcv}", per_request=10, interval=0.01,
                                  retries=1).start())
    time.sleep(60)
    for s in senders:
        s.stop()
    for sink in sinks:
        sink.start()
    for name, w, s, sink in zip(("large", "small"), wefts, senders, sinks):
        acked = s.acked_snapshot()
        assert acked, f"{name}: nothing acknowledged"
        assert sink.wait_for_spans(len(acked), timeout=60), (
            f"{name}: the sink got {len(sink.spans())} of {len(acked)}\n{w.log_tail()}"
        )
        time.sleep(1.0)
        got = delivered(sink)
        assert set(got) == set(acked), f"{name}: delivered differs from acknowledged"
        assert all(n == 1 for n in got.values()), f"{name}: duplicates"
        samples = w.metrics()
        refused_spans = 10 * len(s.errors)
        assert metric_sum(
            samples, "otelcol_exporter_enqueue_failed_spans", exporter="otlp_grpc"
        ) == refused_spans
        assert wait_for_metric(w, "otelcol_exporter_sent_spans", len(acked),
                               exporter="otlp_grpc") == len(acked)
        # Every request was acknowledged or refused, once.
        assert len(s.gave_up) == refused_spans
        assert len(acked) == len(set(acked))
        if name == "large":
            assert s.errors == [], s.errors[:3]
            assert len(acked) > 3000, "too little load for the test to mean anything"
        else:
            assert refused_spans > 0, "the small queue never filled"
            assert all(code == "UNAVAILABLE" for _, code, _ in s.errors), s.errors[:3]
        assert w.stop() == 0
