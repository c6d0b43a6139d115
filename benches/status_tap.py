#!/usr/bin/env python3
"""What the status page's trace tap costs weft; run through benches/status_tap.sh,
which builds the binaries.

The same OTLP load (weft-loadgen, gRPC, 100 spans x 8 attributes per request) goes
through weft -> batch -> OTLP export (uncompressed) into weft-loadgen's counting sink,
under these variants, alternating in each round:

  no-status     no status extension (the baseline)
  tap-off       status extension with traces.enabled: false
  tap-on        status extension, default tap (10000 spans), nobody looking
  tap-on-100k   tap of 100000 spans, nobody looking
  tap-viewed    default tap with the page open: /api/pipelines and /api/traces every 2 s,
                one trace opened every 2 s (what the page's polling does)

Two loads: a fixed rate (LOAD_RATE spans/s for FIXED seconds: CPU % and peak RSS at the
same work) and saturation (as fast as answered for SATURATION seconds: spans per
CPU-second). Read from /proc: CPU-seconds (utime+stime) from just before the load until
the sink holds every acknowledged span, peak RSS (VmHWM). Results: OUT/runs.jsonl and
the summary table on stdout and in OUT/summary.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from collector import cpu_seconds, peak_rss_kib, stop, wait_port  # noqa: E402

GRPC, SINK, METRICS, STATUS = 25317, 25999, 25888, 25679
VARIANTS = ["no-status", "tap-off", "tap-on", "tap-on-100k", "tap-viewed"]


def config(variant):
    ext = ""
    exts = "[]"
    if variant != "no-status":
        traces = {
            "tap-off": "{enabled: false}",
            "tap-on-100k": "{max_spans: 100000}",
        }.get(variant, "{}")
        ext = f"extensions:\n  status: {{endpoint: 127.0.0.1:{STATUS}, traces: {traces}}}\n"
        exts = "[status]"
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
{ext}service:
  extensions: {exts}
  telemetry:
    metrics: {{address: 127.0.0.1:{METRICS}}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
"""


class Viewer(threading.Thread):
    """Polls the API as an open page does, until stopped; counts requests."""

    def __init__(self):
        super().__init__(daemon=True)
        self.done = threading.Event()
        self.requests = 0
        self.errors = 0

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{STATUS}{path}", timeout=30) as r:
                body = json.loads(r.read())
            self.requests += 1
            return body
        except Exception:  # noqa: BLE001 - counted; the bench reports it
            self.errors += 1
            return None

    def run(self):
        while not self.done.is_set():
            self.get("/api/pipelines")
            listed = self.get("/api/traces")
            if listed and listed["traces"]:
                self.get(f"/api/traces/{listed['traces'][0]['trace_id']}")
            self.done.wait(2.0)


def run_once(args, work, variant, load, rnd):
    sink = subprocess.Popen(
        [args.loadgen, "sink", "--listen", f"127.0.0.1:{SINK}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    log = open(os.path.join(work, f"{variant}-{load}-{rnd}.log"), "w")
    viewer = None
    try:
        wait_port(SINK, sink)
        cfg = os.path.join(work, f"{variant}.yaml")
        with open(cfg, "w") as f:
            f.write(config(variant))
        proc = subprocess.Popen([args.weft, "--config", cfg], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(GRPC, proc)
            time.sleep(0.5)
            if variant == "tap-viewed":
                viewer = Viewer()
                viewer.start()
            cpu0 = cpu_seconds(proc.pid)
            if load == "fixed":
                shape = ["--rate", str(args.rate), "--connections", "1"]
                duration = args.fixed
            else:
                shape = ["--rate", "0"]
                duration = args.saturation
            out = subprocess.run(
                [args.loadgen, "send", "--protocol", "otlp-grpc", *shape,
                 "--endpoint", f"http://127.0.0.1:{GRPC}", "--duration", f"{duration}s",
                 "--sink-stats", f"http://127.0.0.1:{SINK}/stats", "--settle", "60s", "--json"],
                capture_output=True, text=True, timeout=duration + 120,
            )
            cpu = cpu_seconds(proc.pid) - cpu0
            hwm = peak_rss_kib(proc.pid)
            if viewer:
                viewer.done.set()
                viewer.join(35)
            if out.returncode != 0:
                raise RuntimeError(f"loadgen failed: {out.stderr.strip()}")
            rep = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            stop(proc)
    finally:
        stop(sink)
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
        "cpu_s": cpu,
        "spans_per_cpu_s": acked / cpu if cpu > 0 else None,
        "cpu_pct": 100.0 * cpu / rep["elapsed_s"],
        "peak_rss_mib": hwm / 1024.0,
        "lossless": rep["delivered_spans"] >= acked,
        "viewer_requests": viewer.requests if viewer else 0,
        "viewer_errors": viewer.errors if viewer else 0,
    }


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(runs, args):
    lines = [
        f"| variant | CPU % at {args.rate:,} spans/s | peak RSS MiB at {args.rate:,} spans/s "
        "| spans/CPU-s at saturation | vs no-status | peak RSS MiB at saturation "
        "| page requests (errors) | lossless |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = med(r["spans_per_cpu_s"] for r in runs
               if r["variant"] == "no-status" and r["load"] == "saturation")
    for v in VARIANTS:
        fx = [r for r in runs if r["variant"] == v and r["load"] == "fixed"]
        sat = [r for r in runs if r["variant"] == v and r["load"] == "saturation"]
        eff = med(r["spans_per_cpu_s"] for r in sat)

        def f(x, fmt="{:,.0f}"):
            return "-" if x is None else fmt.format(x)

        lines.append(
            f"| {v} | {f(med(r['cpu_pct'] for r in fx), '{:.1f}')} "
            f"| {f(med(r['peak_rss_mib'] for r in fx), '{:.1f}')} | {f(eff)} "
            f"| {f(eff / base if eff and base else None, '{:.2f}')} "
            f"| {f(med(r['peak_rss_mib'] for r in sat), '{:.1f}')} "
            f"| {sum(r['viewer_requests'] for r in fx + sat)} ({sum(r['viewer_errors'] for r in fx + sat)}) "
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
                    print(f"round {rnd} {load:10} {v:12} cpu {r['cpu_pct']:6.1f}% "
                          f"rss {r['peak_rss_mib']:6.1f} MiB "
                          f"{r['spans_per_cpu_s'] or 0:10,.0f} spans/CPU-s", flush=True)
    table = summarize(runs, args)
    print(table)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
