#!/usr/bin/env python3
"""weft against rotel on the collector path, alternating rounds; run through
benches/collector.sh, which builds the binaries and fetches rotel.

Per run: a fresh counting sink (weft-loadgen sink), the collector under test,
weft-loadgen sending the scenario's load and then waiting until the sink holds
every acknowledged span. Read from /proc: the collector's CPU-seconds
(utime + stime, from just before the load until the sink caught up) and its
peak resident memory (VmHWM). Results go to OUT/runs.jsonl, the summary to
stdout and OUT/summary.md, and a chart to CHART (SVG).
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Ports on loopback used by the runs.
GRPC, HTTP, DATADOG, SINK, METRICS = 24317, 24318, 24126, 24999, 24888

# name: (what it is, loadgen arguments, receiver port, has a peer)
SCENARIOS = {
    "grpc": (
        "OTLP gRPC, as fast as answered, 4 connections, 100 spans x 8 attributes",
        ["--protocol", "otlp-grpc", "--rate", "0"],
        GRPC,
        True,
    ),
    "grpc-uncompressed-export": (
        # weft only: rotel's OTLP exporter gzips whatever its compression flag
        # says (the sink sees every request compressed), so there is no peer.
        "OTLP gRPC as fast as answered, export without compression (weft only)",
        ["--protocol", "otlp-grpc", "--rate", "0"],
        GRPC,
        False,
    ),
    "grpc-zstd-export": (
        "OTLP gRPC as fast as answered, export with zstd (weft only: rotel has gzip or none)",
        ["--protocol", "otlp-grpc", "--rate", "0"],
        GRPC,
        False,
    ),
    "grpc-nop": (
        "OTLP gRPC as fast as answered into a batch and no export (weft nop, rotel blackhole)",
        ["--protocol", "otlp-grpc", "--rate", "0"],
        GRPC,
        True,
    ),
    "grpc-gzip": (
        "OTLP gRPC with gzip requests, as fast as answered",
        ["--protocol", "otlp-grpc", "--rate", "0", "--compression", "gzip"],
        GRPC,
        True,
    ),
    "http-json": (
        "OTLP/HTTP JSON, as fast as answered",
        ["--protocol", "otlp-http-json", "--rate", "0"],
        HTTP,
        True,
    ),
    "testbed-10k": (
        "10k spans/s fixed rate, 100 spans per request (the collector testbed's shape)",
        ["--protocol", "otlp-grpc", "--rate", "10000", "--connections", "1"],
        GRPC,
        True,
    ),
    "large-attrs": (
        "1k spans/s, 20 attributes of 5 KB per span, 10 spans per request",
        [
            "--protocol", "otlp-grpc", "--rate", "1000", "--connections", "1",
            "--spans-per-request", "10", "--attributes", "20", "--attribute-size", "5000",
        ],
        GRPC,
        True,
    ),
    "datadog-v05": (
        "Datadog v0.5 msgpack -> propagation_merge -> OTLP, as fast as answered (weft only)",
        ["--protocol", "datadog-v05", "--rate", "0"],
        DATADOG,
        False,
    ),
    "datadog-v05-uncompressed-export": (
        "as datadog-v05, the OTLP export without compression (weft only)",
        ["--protocol", "datadog-v05", "--rate", "0"],
        DATADOG,
        False,
    ),
}

FIXED_RATE_SECONDS = 30


def plain_export(scenario):
    return scenario.endswith("uncompressed-export")


def no_export(scenario):
    return scenario == "grpc-nop"


def weft_config(scenario):
    datadog = scenario.startswith("datadog-v05")
    compression = (
        "none" if plain_export(scenario) else "zstd" if scenario == "grpc-zstd-export" else "gzip"
    )
    receivers = "[datadog]" if datadog else "[otlp]"
    processors = "[propagation_merge, batch]" if datadog else "[batch]"
    return f"""receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{GRPC}}}
      http: {{endpoint: 127.0.0.1:{HTTP}}}
  datadog:
    endpoint: 127.0.0.1:{DATADOG}
processors:
  batch: {{send_batch_size: 8192, timeout: 200ms}}
  propagation_merge: {{}}
exporters:
  nop:
  otlp:
    endpoint: 127.0.0.1:{SINK}
    tls: {{insecure: true}}
    compression: {compression}
    # As rotel's, below: a 20 MB batch of large spans takes seconds to gzip.
    timeout: 30s
    # Bounded by bytes, waiting for room when full (rotel's channels also push
    # back): the default, 1000 batches, holds up to 8M spans behind an 8192 batch.
    sending_queue: {{sizer: bytes, queue_size: 16777216, block_on_overflow: true}}
service:
  telemetry:
    metrics: {{address: 127.0.0.1:{METRICS}}}
  pipelines:
    traces:
      receivers: {receivers}
      processors: {processors}
      exporters: [{"nop" if no_export(scenario) else "otlp"}]
"""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15; fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def wait_port(port, proc, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_once(args, work, scenario, collector, rnd):
    desc, load, port, _ = SCENARIOS[scenario]
    sink = subprocess.Popen(
        [args.loadgen, "sink", "--listen", f"127.0.0.1:{SINK}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    log = open(os.path.join(work, f"{collector}-{scenario}-{rnd}.log"), "w")
    try:
        wait_port(SINK, sink)
        if collector == "weft":
            cfg = os.path.join(work, f"weft-{scenario}.yaml")
            with open(cfg, "w") as f:
                f.write(weft_config(scenario))
            cmd = [args.weft, "--config", cfg]
        else:
            cmd = [
                args.rotel, "start",
                "--otlp-grpc-endpoint", f"127.0.0.1:{GRPC}",
                "--otlp-http-endpoint", f"127.0.0.1:{HTTP}",
                "--exporter", "blackhole" if no_export(scenario) else "otlp",
                "--otlp-exporter-endpoint", f"http://127.0.0.1:{SINK}",
                "--batch-max-size", "8192", "--batch-timeout", "200ms",
                "--otlp-exporter-compression", "none" if plain_export(scenario) else "gzip",
                "--otlp-exporter-request-timeout", "30s",
                "--pid-file", os.path.join(work, "rotel.pid"),
                "--log-file", os.path.join(work, "rotel.log"),
            ]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(port, proc)
            time.sleep(0.5)
            cpu0 = cpu_seconds(proc.pid)
            fixed = load[load.index("--rate") + 1] != "0"
            duration = FIXED_RATE_SECONDS if fixed else args.duration
            out = subprocess.run(
                [
                    args.loadgen, "send", *load,
                    "--endpoint", f"http://127.0.0.1:{port}",
                    "--duration", f"{duration}s",
                    *([] if no_export(scenario) else [
                        "--sink-stats", f"http://127.0.0.1:{SINK}/stats", "--settle", "60s",
                    ]),
                    "--json",
                ],
                capture_output=True, text=True, timeout=duration + 120,
            )
            cpu = cpu_seconds(proc.pid) - cpu0
            hwm = peak_rss_kib(proc.pid)
            sink_stats = {}
            if not no_export(scenario):
                with urllib.request.urlopen(f"http://127.0.0.1:{SINK}/stats", timeout=5) as r:
                    sink_stats = json.loads(r.read())
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
        "scenario": scenario,
        "collector": collector,
        "round": rnd,
        "sent": rep["sent_spans"],
        "acknowledged": acked,
        "refused": rep["refused_spans"],
        "failed": rep["failed_spans"],
        "delivered": rep["delivered_spans"],
        "elapsed_s": rep["elapsed_s"],
        "acknowledged_per_s": rep["acknowledged_per_s"],
        "cpu_s": cpu,
        "cpu_s_per_m_spans": cpu / (acked / 1e6) if acked else None,
        "spans_per_cpu_s": acked / cpu if cpu > 0 else None,
        "cpu_pct": 100.0 * cpu / rep["elapsed_s"],
        "peak_rss_mib": hwm / 1024.0,
        "sink_requests": sink_stats.get("requests"),
        "sink_compressed_requests": sink_stats.get("compressed_requests"),
        "sink_bytes": sink_stats.get("bytes"),
        # Loss: acknowledged spans that never reached the sink (without an
        # export there is nothing to count). Spans delivered beyond those
        # acknowledged come from requests the client saw fail (a timeout, a
        # refusal after the data was taken) and are counted as extra.
        "lossless": no_export(scenario) or rep["delivered_spans"] >= acked,
        "extra_delivered": 0 if no_export(scenario) else max(0, rep["delivered_spans"] - acked),
    }


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(runs, scenarios):
    lines = [
        "| scenario | weft spans/CPU-s | rotel spans/CPU-s | weft/rotel efficiency (min/med/max) "
        "| weft CPU % | rotel CPU % | weft peak RSS MiB | rotel peak RSS MiB | weft spans/s | rotel spans/s | lossless |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    table = {}
    for s in scenarios:
        w = [r for r in runs if r["scenario"] == s and r["collector"] == "weft"]
        p = [r for r in runs if r["scenario"] == s and r["collector"] == "rotel"]
        ratios = []
        for r in w:
            q = [x for x in p if x["round"] == r["round"]]
            if q and r["spans_per_cpu_s"] and q[0]["spans_per_cpu_s"]:
                ratios.append(r["spans_per_cpu_s"] / q[0]["spans_per_cpu_s"])
        row = {
            "weft_eff": med(r["spans_per_cpu_s"] for r in w),
            "rotel_eff": med(r["spans_per_cpu_s"] for r in p),
            "weft_rss": med(r["peak_rss_mib"] for r in w),
            "rotel_rss": med(r["peak_rss_mib"] for r in p),
            "weft_cpu": med(r["cpu_pct"] for r in w),
            "rotel_cpu": med(r["cpu_pct"] for r in p),
            "weft_rate": med(r["acknowledged_per_s"] for r in w),
            "rotel_rate": med(r["acknowledged_per_s"] for r in p),
            "ratios": sorted(ratios),
            "lossless": all(r["lossless"] for r in w + p),
        }
        table[s] = row

        def f(x, fmt="{:,.0f}"):
            return "-" if x is None else fmt.format(x)

        ratio = (
            f"{row['ratios'][0]:.2f} / {statistics.median(row['ratios']):.2f} / {row['ratios'][-1]:.2f}"
            if ratios else "-"
        )
        lines.append(
            f"| {s} | {f(row['weft_eff'])} | {f(row['rotel_eff'])} | {ratio} "
            f"| {f(row['weft_cpu'], '{:.1f}')} | {f(row['rotel_cpu'], '{:.1f}')} "
            f"| {f(row['weft_rss'], '{:.1f}')} | {f(row['rotel_rss'], '{:.1f}')} "
            f"| {f(row['weft_rate'])} | {f(row['rotel_rate'])} | {'yes' if row['lossless'] else 'NO'} |"
        )
    return "\n".join(lines), table


def chart(table, path):
    """Two grouped bar charts side by side: spans per CPU-second and peak RSS."""
    names = list(table)
    panel_w, bar_h, gap = 430, 14, 12
    row_h = 2 * bar_h + gap
    top = 56
    height = top + row_h * len(names) + 40
    width = 2 * panel_w + 170
    colors = {"weft": "#2b6cb0", "rotel": "#c05621"}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="10" y="20" font-size="15" font-weight="bold">'
        "weft vs rotel, same run (median of rounds)</text>",
    ]
    for k, (key, title) in enumerate(
        [("eff", "spans per CPU-second (higher is better)"), ("rss", "peak RSS, MiB (lower is better)")]
    ):
        x0 = 160 + k * (panel_w + 10)
        out.append(f'<text x="{x0}" y="44" font-weight="bold">{title}</text>')
        vals = [v for n in names for v in (table[n][f"weft_{key}"], table[n][f"rotel_{key}"]) if v]
        vmax = max(vals) if vals else 1
        for i, n in enumerate(names):
            y = top + i * row_h
            if k == 0:
                out.append(f'<text x="10" y="{y + bar_h + 4}">{n}</text>')
            for j, who in enumerate(("weft", "rotel")):
                v = table[n][f"{who}_{key}"]
                yy = y + j * bar_h
                if v is None:
                    out.append(f'<text x="{x0 + 4}" y="{yy + 11}" fill="#888">{who}: no peer</text>')
                    continue
                w = max(1.0, (panel_w - 90) * v / vmax)
                out.append(
                    f'<rect x="{x0}" y="{yy}" width="{w:.1f}" height="{bar_h - 2}" fill="{colors[who]}"/>'
                )
                label = f"{v:,.0f}" if key == "eff" else f"{v:.1f}"
                out.append(f'<text x="{x0 + w + 4:.1f}" y="{yy + 11}">{label}</text>')
    ly = height - 16
    for j, who in enumerate(("weft", "rotel")):
        out.append(f'<rect x="{160 + j * 90}" y="{ly - 10}" width="12" height="12" fill="{colors[who]}"/>')
        out.append(f'<text x="{176 + j * 90}" y="{ly}">{who}</text>')
    out.append("</svg>")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weft", required=True)
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--rotel", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--out", required=True)
    ap.add_argument("--chart", default="")
    ap.add_argument("--scenarios", nargs="*", default=list(SCENARIOS))
    args = ap.parse_args()
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenarios {unknown}; known: {list(SCENARIOS)}")
    os.makedirs(args.out, exist_ok=True)
    runs = []
    with tempfile.TemporaryDirectory() as work, open(os.path.join(args.out, "runs.jsonl"), "w") as jl:
        for rnd in range(args.rounds):
            for s in args.scenarios:
                order = ["weft", "rotel"] if SCENARIOS[s][3] else ["weft"]
                if rnd % 2:
                    order.reverse()
                for c in order:
                    r = run_once(args, work, s, c, rnd)
                    runs.append(r)
                    jl.write(json.dumps(r) + "\n")
                    jl.flush()
                    print(
                        f"round {rnd} {s:12} {c:5}: {r['acknowledged_per_s']:>9,.0f} spans/s, "
                        f"{r['spans_per_cpu_s'] or 0:>9,.0f} spans/CPU-s, {r['cpu_pct']:5.1f}% CPU, "
                        f"peak RSS {r['peak_rss_mib']:6.1f} MiB, "
                        f"{'lossless' if r['lossless'] else 'LOSS: delivered %s of %s acknowledged' % (r['delivered'], r['acknowledged'])}"
                        f"{', %s failed' % r['failed'] if r['failed'] else ''}"
                        f"{', %s refused' % r['refused'] if r['refused'] else ''}"
                        f"{', %s delivered beyond the acknowledged' % r['extra_delivered'] if r['extra_delivered'] else ''}",
                        flush=True,
                    )
    text, table = summarize(runs, args.scenarios)
    print()
    print(text)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text + "\n")
    if args.chart:
        chart(table, args.chart)
        print(f"\nchart: {args.chart}")
    if not all(r["lossless"] for r in runs):
        sys.exit("some run lost acknowledged spans")


if __name__ == "__main__":
    main()
