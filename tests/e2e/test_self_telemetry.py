"""weft's own metrics pushed over OTLP: `service.telemetry.metrics.readers` with a
`periodic` reader, and `service.telemetry.resource`.

- weft A pushes its self-metrics every 300 ms to weft B's OTLP receiver, which writes
  them to a file; after an SDK app sent traces through A, the last push B holds
  carries A's resource and the same counter values A's Prometheus endpoint serves;
- a dead self-telemetry endpoint leaves the data path alone: spans flow, the pushes it
  cannot take are dropped and counted, and weft still stops promptly;
- a change of `service.telemetry` on reload: the resource and readers apply, the
  logs need a restart and weft says so.
"""

from __future__ import annotations

import json
import time

from harness import free_port, otlp_receiver, send_three_tier, wait_until
from otlp_support import metric_sum


def weft_a_config(grpc: int, sink_endpoint: str, self_endpoint: str) -> dict:
    return {
        "receivers": {"otlp": otlp_receiver(grpc_port=grpc)},
        "exporters": {"otlp_grpc": {"endpoint": sink_endpoint, "tls": {"insecure": True}}},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_grpc"]}},
            "telemetry": {
                "resource": {"service.name": "weft-a", "deployment.environment": "e2e"},
                "metrics": {
                    "readers": [{
                        "periodic": {
                            "interval": 300,
                            "exporter": {"otlp": {"protocol": "grpc",
                                                  "endpoint": f"http://{self_endpoint}"}},
                        }
                    }],
                },
            },
        },
    }


def pushes(path) -> list[dict]:
    """Every metrics request B wrote, parsed (OTLP/JSON, one per line)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def flatten(request: dict) -> tuple[dict, dict]:
    """(resource attributes, {(name, sorted labels): value}) of one pushed request."""
    rm = request["resourceMetrics"][0]
    resource = {a["key"]: a["value"]["stringValue"] for a in rm["resource"]["attributes"]}
    values = {}
    for sm in rm["scopeMetrics"]:
        for m in sm["metrics"]:
            data = m.get("sum") or m.get("gauge")
            for p in data["dataPoints"]:
                labels = tuple(sorted((a["key"], a["value"]["stringValue"])
                                      for a in p.get("attributes", [])))
                values[(m["name"], labels)] = int(p.get("asInt", 0))
    return resource, values


def test_self_metrics_pushed_to_another_weft(weft, grpc_sink, tmp_path):
    out_file = tmp_path / "self-metrics.jsonl"
    b_grpc = free_port()
    weft({
        "receivers": {"otlp": otlp_receiver(grpc_port=b_grpc)},
        "exporters": {"file": {"path": str(out_file), "flush_interval": "100ms"}},
        "service": {"pipelines": {"metrics": {"receivers": ["otlp"], "exporters": ["file"]}}},
    }, name="weft-b")
    sink = grpc_sink()
    a_grpc = free_port()
    a = weft(weft_a_config(a_grpc, sink.endpoint, f"127.0.0.1:{b_grpc}"), name="weft-a")

    send_three_tier(a_grpc)
    assert sink.wait_for_spans(4, 20)
    # A's traces counters are final now; wait for a push taken after that.
    assert wait_until(lambda: metric_sum(a.metrics(), "otelcol_exporter_sent_spans") == 4, 10)
    seen = len(pushes(out_file))
    assert wait_until(lambda: len(pushes(out_file)) >= seen + 2, 15), a.log_tail()
    resource, pushed = flatten(pushes(out_file)[-1])

    assert resource["service.name"] == "weft-a"
    assert resource["deployment.environment"] == "e2e"
    assert resource["service.version"] and resource["service.instance.id"]

    prom = a.metrics()
    for name, labels in [
        ("otelcol_receiver_accepted_spans", {"receiver": "otlp", "transport": "grpc"}),
        ("otelcol_exporter_sent_spans", {"exporter": "otlp_grpc"}),
        ("otelcol_exporter_send_failed_spans", {"exporter": "otlp_grpc"}),
        ("otelcol_receiver_refused_spans", {"receiver": "otlp", "transport": "grpc"}),
    ]:
        key = (name, tuple(sorted(labels.items())))
        assert key in pushed, (key, sorted(pushed)[:20])
        assert pushed[key] == metric_sum(prom, name, **labels), key
    assert pushed[("otelcol_receiver_accepted_spans",
                   (("receiver", "otlp"), ("transport", "grpc")))] == 4
    # Every series of the Prometheus endpoint is pushed (same names and labels),
    # except those a push itself creates after the snapshot it sends.
    prom_keys = {(n, tuple(sorted(lbl))) for (n, lbl) in prom}
    missing = {k for k in prom_keys - set(pushed)
               if "self_telemetry" not in str(k) and not k[0].startswith("weft_self")}
    assert not missing, sorted(missing)[:10]
    # The pushes themselves are counted.
    assert metric_sum(a.metrics(), "weft_self_telemetry_pushes", result="queued") >= 2


def test_dead_self_telemetry_endpoint_leaves_the_data_path_alone(weft, grpc_sink):
    sink = grpc_sink()
    a_grpc, dead = free_port(), free_port()
    a = weft(weft_a_config(a_grpc, sink.endpoint, f"127.0.0.1:{dead}"))
    t0 = time.monotonic()
    send_three_tier(a_grpc)
    assert sink.wait_for_spans(4, 20)
    assert time.monotonic() - t0 < 15
    # Pushes fail, are retried for at most an interval, then dropped and counted.
    exporter = "otlp_grpc/self_telemetry_0"
    assert wait_until(
        lambda: metric_sum(a.metrics(), "otelcol_exporter_send_failed_metric_points",
                           exporter=exporter) > 0, 20), a.log_tail()
    assert metric_sum(a.metrics(), "otelcol_exporter_sent_spans", exporter="otlp_grpc") == 4
    t1 = time.monotonic()
    assert a.stop() == 0
    assert time.monotonic() - t1 < 15, "shutdown waited on the dead endpoint"


def test_telemetry_change_on_reload(weft, grpc_sink, tmp_path):
    """The resource and the readers apply on reload (pushes carry the new resource);
    the logs need a restart, and weft says so."""
    out_file = tmp_path / "self-metrics.jsonl"
    b_grpc = free_port()
    weft({
        "receivers": {"otlp": otlp_receiver(grpc_port=b_grpc)},
        "exporters": {"file": {"path": str(out_file), "flush_interval": "100ms"}},
        "service": {"pipelines": {"metrics": {"receivers": ["otlp"], "exporters": ["file"]}}},
    }, name="weft-b")
    sink = grpc_sink()
    a_grpc = free_port()
    cfg = weft_a_config(a_grpc, sink.endpoint, f"127.0.0.1:{b_grpc}")
    a = weft(cfg, name="weft-a")
    assert wait_until(lambda: len(pushes(out_file)) >= 1, 15), a.log_tail()
    assert flatten(pushes(out_file)[-1])[0]["deployment.environment"] == "e2e"

    cfg["service"]["telemetry"]["resource"]["deployment.environment"] = "changed"
    cfg["service"]["telemetry"]["logs"] = {"level": "debug"}
    a.write_config(cfg)
    assert wait_until(lambda: "service.telemetry applied" in a.log_text(), 15), a.log_tail()
    assert "service.telemetry logs changed; not applied on reload" in a.log_text()
    seen = len(pushes(out_file))
    assert wait_until(lambda: len(pushes(out_file)) >= seen + 2, 15), a.log_tail()
    assert flatten(pushes(out_file)[-1])[0]["deployment.environment"] == "changed"
    # One instance: the id stays across the restart of the readers.
    ids = {flatten(p)[0]["service.instance.id"] for p in pushes(out_file)}
    assert len(ids) == 1
