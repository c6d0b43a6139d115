#!/usr/bin/env bash
# Soak: weft (release build) with a batch processor and a persistent sending queue
# (file_storage, fsync on) forwards OTLP/gRPC from weft-loadgen to the loadgen's
# counting sink at half the rate it sustains, for DURATION seconds. Reports RSS at the
# start and end (and its peak), the acknowledged and delivered span counts (loss must
# be zero) and weft's counters.
#
#   cargo build --release && benches/soak.sh            # 10 minutes
#   DURATION=60 benches/soak.sh                          # a shorter look
#
# Not part of the test suite: it runs for minutes. Results go to docs/reliability.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source benches/common.sh

DURATION="${DURATION:-600}"
WEFT_BIN="${WEFT_BIN:-target/release/weft}"
LOADGEN="${LOADGEN:-target/release/weft-loadgen}"
for b in "$WEFT_BIN" "$LOADGEN"; do
    [[ -x "$b" ]] || { echo "missing $b: run cargo build --release" >&2; exit 2; }
done

WORK="$(mktemp -d)"
SINK_PID="" WEFT_PID="" SAMPLER_PID=""
cleanup() {
    local rc=$?
    for p in "$SAMPLER_PID" "$WEFT_PID" "$SINK_PID"; do
        if [[ -n "$p" ]]; then
            kill "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

read -r RCV SINK METRICS <<<"$(free_ports 3)"
"$LOADGEN" sink --listen "127.0.0.1:$SINK" 2>"$WORK/sink.log" &
SINK_PID=$!

cat >"$WORK/weft.yaml" <<EOF
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:$RCV"}
processors:
  memory_limiter: {check_interval: 1s, limit_mib: 400}
  batch: {send_batch_size: 2000, timeout: 100ms}
exporters:
  otlp_grpc:
    endpoint: "127.0.0.1:$SINK"
    tls: {insecure: true}
    sending_queue: {storage: file_storage, sizer: bytes, queue_size: 268435456}
extensions:
  file_storage: {directory: "$WORK/queue", create_directory: true, fsync: true}
service:
  extensions: [file_storage]
  telemetry: {metrics: {address: "127.0.0.1:$METRICS"}}
  pipelines:
    traces: {receivers: [otlp], processors: [memory_limiter, batch], exporters: [otlp_grpc]}
EOF

"$WEFT_BIN" --config "$WORK/weft.yaml" 2>"$WORK/weft.log" &
WEFT_PID=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$METRICS/metrics" >/dev/null && break
    sleep 0.1
done

send() { # rate seconds -> JSON report
    "$LOADGEN" send --protocol otlp-grpc --endpoint "http://127.0.0.1:$RCV" \
        --rate "$1" --duration "${2}s" --connections 4 --spans-per-request 100 \
        --templates 64 --sink-stats "http://127.0.0.1:$SINK/stats" --settle 60s --json
}
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$WEFT_PID/status"; }

echo "==> measuring the sustained rate (15 s as fast as weft answers)"
probe="$(send 0 15 2>/dev/null)"
sustained="$(field acknowledged_per_s <<<"$probe" | cut -d. -f1)"
half=$((sustained / 2))
echo "    sustained ${sustained} spans/s; soaking at ${half} spans/s for ${DURATION}s"

sleep 5
rss_start="$(rss_kib)"
(
    peak=0
    while sleep 1; do
        r="$(rss_kib 2>/dev/null || echo 0)"
        ((r > peak)) && peak=$r && echo "$peak" >"$WORK/peak"
    done
) &
SAMPLER_PID=$!
cpu_start="$(cpu_seconds "$WEFT_PID")"
report="$(send "$half" "$DURATION" 2>"$WORK/send.log")"
cpu_end="$(cpu_seconds "$WEFT_PID")"
rss_end="$(rss_kib)"
kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
peak="$(cat "$WORK/peak" 2>/dev/null || echo "$rss_end")"

acked="$(field acknowledged_spans <<<"$report")"
delivered="$(field delivered_spans <<<"$report")"
refused="$(field refused_spans <<<"$report")"
failed="$(field failed_spans <<<"$report")"
metrics="$(curl -s "http://127.0.0.1:$METRICS/metrics")"
m() { awk -v n="$1" '$1 ~ "^"n"({|$)" { s += $2 } END { print s + 0 }' <<<"$metrics"; }

cat <<EOF

soak: ${DURATION}s at ${half} spans/s (half of the ${sustained} spans/s sustained)
  acknowledged   ${acked}
  delivered      ${delivered}   (loss $((acked - delivered)))
  refused        ${refused}
  failed         ${failed}
  RSS start      $((rss_start / 1024)) MiB
  RSS end        $((rss_end / 1024)) MiB
  RSS peak       $((peak / 1024)) MiB
  weft CPU       $(python3 -c "print(f'{($cpu_end - $cpu_start) / $DURATION * 100:.0f} %')") of one core
  exporter sent  $(m otelcol_exporter_sent_spans) (the rate probe's spans included), send_failed $(m otelcol_exporter_send_failed_spans), queue now $(m otelcol_exporter_queue_size) bytes
EOF
[[ "$acked" == "$delivered" && "$failed" == 0 ]]
