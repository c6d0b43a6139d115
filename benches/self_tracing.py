#!/usr/bin/env python3
"""What weft's own tracing costs the data path; run through benches/self_tracing.sh,
which builds the binaries.

The same OTLP load (weft-loadgen, gRPC, 100 spans x 8 attributes per request, 4
connections) goes through weft -> batch -> OTLP export (uncompressed) into
weft-loadgen's counting sink, under these variants, alternating in each round:

  off        no service.telemetry.traces (the baseline)
  on-live    self-tracing to a second weft-loadgen sink (a live OTLP endpoint)
  on-dead    self-tracing to a port nothing listens on (connection refused)
  on-hung    self-tracing to a socket that accepts connections and never answers
             (every export waits for its timeout)

Self-tracing runs with the collector's batch defaults except a 1 s schedule delay, so a
run sends several batches: one receive span per request, one send span per exported
batch.

Two loads: a fixed rate (RATE spans/s for FIXED seconds: CPU %, request latency) and
saturation (as fast as answered for SATURATION seconds: spans/s acknowledged, spans per
CPU-second, latency). Latency is weft-loadgen's, from sending a request to its answer.
After each run the self-span counters are read from weft's metrics
(weft_self_telemetry_spans by result, and the self exporter's send failures).
Results: OUT/runs.jsonl and the summary table on stdout and in OUT/summary.md.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from collector import cpu_seconds, peak_rss_kib, stop, wait_port  # noqa: E402

GRPC, SINK, SELF_SINK, DEAD, HUNG, METRICS = 26317, 26999, 26998, 26997, 26996, 26888
VARIANTS = ["off", "on-live", "on-dead", "on-hung"]


def config(variant):
    telemetry = f"    metrics: {{address: 127.0.0.1:{METRICS}}}\n"
    port = {"on-live": SELF_SINK, "on-dead": DEAD, "on-hung": HUNG}.get(variant)
    if port:
        telemetry += f"""    traces:
      processors:
        - batch:
            schedule_delay: 1000
            exporter:
              otlp: {{protocol: grpc, endpoint: "http://127.0.0.1:{port}", timeout: 5000}}
"""
    return f"""receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{GRPC}}}
processors:
  batch: {{send_batch_size: 8192, timeout: 200ms}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{SINK}
    tls: {{insecure: true}}
    compression: none
service:
  telemetry:
{telemetry}  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
"""


def scrape():
    """weft's metrics: {(name, frozenset(labels)): value}."""
    out = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if not line or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            name, _, labels = head.partition("{")
            pairs = frozenset(
                tuple(kv.split("=", 1)) for kv in labels.rstrip("}").split(",") if "=" in kv
            )
            out[(name, frozenset((k, v.strip('"')) for k, v in pairs))] = float(value)
    return out


def total(samples, name, **labels):
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= set(lbl))


def run_once(args, work, variant, load, rnd):
    sink = subprocess.Popen([args.loadgen, "sink", "--listen", f"127.0.0.1:{SINK}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    self_sink = subprocess.Popen([args.loadgen, "sink", "--listen", f"127.0.0.1:{SELF_SINK}"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Accepts connections (the kernel completes the handshake) and never reads.
    hung = socket.socket()
    hung.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hung.bind(("127.0.0.1", HUNG))
    hung.listen(64)
    log = open(os.path.join(work, f"{variant}-{load}-{rnd}.log"), "w")
    try:
        wait_port(SINK, sink)
        wait_port(SELF_SINK, self_sink)
        cfg = os.path.join(work, f"{variant}.yaml")
        with open(cfg, "w") as f:
            f.write(config(variant))
        proc = subprocess.Popen([args.weft, "--config", cfg], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(GRPC, proc)
            time.sleep(0.5)
            cpu0 = cpu_seconds(proc.pid)
            if load == "fixed":
                shape = ["--rate", str(args.rate)]
                duration = args.fixed
            else:
                shape = ["--rate", "0"]
                duration = args.saturation
            out = subprocess.run(
                [args.loadgen, "send", "--protocol", "otlp-grpc", *shape, "--connections", "4",
                 "--endpoint", f"http://127.0.0.1:{GRPC}", "--duration", f"{duration}s",
                 "--sink-stats", f"http://127.0.0.1:{SINK}/stats", "--settle", "60s", "--json"],
                capture_output=True, text=True, timeout=duration + 120,
            )
            cpu = cpu_seconds(proc.pid) - cpu0
            hwm = peak_rss_kib(proc.pid)
            time.sleep(1.5)  # one more self-span batch
            m = scrape()
            if out.returncode != 0:
                raise RuntimeError(f"loadgen failed: {out.stderr.strip()}")
            rep = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            t_stop = time.monotonic()
            stop(proc)
            stop_s = time.monotonic() - t_stop
    finally:
        stop(sink)
        stop(self_sink)
        hung.close()
        log.close()
    acked = rep["acknowledged_spans"]
    return {
        "variant": variant,
        "load": load,
        "round": rnd,
        "acknowledged": acked,
        "delivered": rep["delivered_spans"],
        "elapsed_s": rep["elapsed_s"],
        "acknowledged_per_s": rep["acknowledged_per_s"],
        "latency_p50_ms": rep["latency_ms"]["p50"],
        "latency_p99_ms": rep["latency_ms"]["p99"],
        "cpu_s": cpu,
        "spans_per_cpu_s": acked / cpu if cpu > 0 else None,
        "cpu_pct": 100.0 * cpu / rep["elapsed_s"],
        "peak_rss_mib": hwm / 1024.0,
        "lossless": rep["delivered_spans"] >= acked,
        "self_queued": total(m, "weft_self_telemetry_spans", result="queued"),
        "self_dropped": total(m, "weft_self_telemetry_spans", result="dropped"),
        "self_exported": total(m, "weft_self_telemetry_spans", result="exported"),
        "self_refused": total(m, "weft_self_telemetry_spans", result="refused"),
        "self_send_failed": total(m, "otelcol_exporter_send_failed_spans",
                                  exporter="otlp_grpc/self_telemetry_traces_0"),
        "self_enqueue_failed": total(m, "otelcol_exporter_enqueue_failed_spans",
                                     exporter="otlp_grpc/self_telemetry_traces_0"),
        "stop_s": stop_s,
    }


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(runs, args):
    lines = [
        f"| variant | CPU % at {args.rate:,} spans/s | p50 / p99 ms at {args.rate:,} spans/s "
        "| spans/s at saturation | vs off | spans/CPU-s at saturation | p50 / p99 ms at saturation "
        "| self spans queued / dropped / refused / send-failed (saturation) | stop s | lossless |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = med(r["acknowledged_per_s"] for r in runs
               if r["variant"] == "off" and r["load"] == "saturation")

    def f(x, fmt="{:,.0f}"):
        return "-" if x is None else fmt.format(x)

    for v in VARIANTS:
        fx = [r for r in runs if r["variant"] == v and r["load"] == "fixed"]
        sat = [r for r in runs if r["variant"] == v and r["load"] == "saturation"]
        if not fx and not sat:
            continue
        thr = med(r["acknowledged_per_s"] for r in sat)
        lines.append(
            f"| {v} | {f(med(r['cpu_pct'] for r in fx), '{:.1f}')} "
            f"| {f(med(r['latency_p50_ms'] for r in fx), '{:.2f}')} / "
            f"{f(med(r['latency_p99_ms'] for r in fx), '{:.2f}')} "
            f"| {f(thr)} | {f(thr / base if thr and base else None, '{:.2f}')} "
            f"| {f(med(r['spans_per_cpu_s'] for r in sat))} "
            f"| {f(med(r['latency_p50_ms'] for r in sat), '{:.2f}')} / "
            f"{f(med(r['latency_p99_ms'] for r in sat), '{:.2f}')} "
            f"| {f(med(r['self_queued'] for r in sat))} / {f(med(r['self_dropped'] for r in sat))} / "
            f"{f(med(r['self_refused'] for r in sat))} / {f(med(r['self_send_failed'] for r in sat))} "
            f"| {f(max((r['stop_s'] for r in fx + sat), default=None), '{:.1f}')} "
            f"| {'yes' if all(r['lossless'] for r in fx + sat) else 'NO'} |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weft", required=True)
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--fixed", type=int, default=20)
    ap.add_argument("--saturation", type=int, default=15)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", nargs="*", default=VARIANTS)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    runs = []
    with tempfile.TemporaryDirectory() as work, open(os.path.join(args.out, "runs.jsonl"), "w") as rec:
        for rnd in range(args.rounds):
            for load in ("fixed", "saturation"):
                for v in args.variants:
                    r = run_once(args, work, v, load, rnd)
                    runs.append(r)
                    rec.write(json.dumps(r) + "\n")
                    rec.flush()
                    print(f"round {rnd} {load:10} {v:8} cpu {r['cpu_pct']:6.1f}% "
                          f"{r['acknowledged_per_s']:10,.0f} spans/s "
                          f"p99 {r['latency_p99_ms'] or 0:7.2f} ms "
                          f"self q/d/r/f {r['self_queued']:.0f}/{r['self_dropped']:.0f}/"
                          f"{r['self_refused']:.0f}/{r['self_send_failed']:.0f}", flush=True)
    table = summarize(runs, args)
    print(table)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
