#!/usr/bin/env bash
# Overhead of the ebpf receiver's UDP (DNS) capture on a DNS-heavy load: dnsmasq
# answering from its own records on a loopback port, driven by dnsperf at saturation.
# Rounds alternate three runs so drift hits all sides alike:
#   off       no weft;
#   dns-off   weft's ebpf receiver with `protocols: dns: enabled: false` (what the
#             receiver cost before UDP was captured: the probes still see every
#             datagram and leave at once);
#   on        the receiver reading DNS on dnsmasq's port: every query is a CLIENT span
#             (dnsperf) and a SERVER span (dnsmasq), written by the file exporter;
#   other     DNS on port 53 only, while the load goes to dnsmasq's port: UDP traffic
#             that is not DNS (dnsperf's sockets are connected: one lookup each, then
#             left alone in the kernel).
# Per run: queries/s, average latency, and for weft runs its CPU per query, the probes'
# kernel time per query (kernel.bpf_stats_enabled) and the spans made.
#
# Needs root, kernel BTF, dnsmasq, dnsperf and a release build of weft:
#   cargo build --release && benches/dns_overhead.sh
# Environment: ROUNDS (default 3), DURATION seconds per run (default 10), CLIENTS
#   (dnsperf sockets, default 4), WEFT_BIN (default target/release/weft).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
WEFT_BIN="${WEFT_BIN:-$ROOT/target/release/weft}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CLIENTS="${CLIENTS:-4}"
DNSMASQ="$(command -v dnsmasq || echo /usr/sbin/dnsmasq)"

[[ $(id -u) -eq 0 ]] || { echo "needs root (the ebpf receiver loads eBPF programs)" >&2; exit 2; }
[[ -x "$WEFT_BIN" ]] || { echo "no weft binary at $WEFT_BIN: cargo build --release" >&2; exit 2; }
command -v dnsperf >/dev/null || { echo "dnsperf is not installed (apt-get install dnsperf)" >&2; exit 2; }
[[ -x "$DNSMASQ" ]] || { echo "dnsmasq is not installed (apt-get install dnsmasq-base)" >&2; exit 2; }

WORK="$(mktemp -d)"
DNS_PID=""
WEFT_PID=""
STATS_BEFORE="$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || echo 0)"
cleanup() {
    sysctl -qw kernel.bpf_stats_enabled="$STATS_BEFORE" 2>/dev/null || true
    [[ -n "$WEFT_PID" ]] && kill "$WEFT_PID" 2>/dev/null || true
    [[ -n "$DNS_PID" ]] && kill "$DNS_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

read -r PORT METRICS_PORT < <(free_ports 2)

# 100 names dnsmasq knows, each asked for A.
records=()
for i in $(seq 100); do
    records+=("--host-record=h$i.bench.test,10.0.$((i / 256)).$((i % 256))")
    echo "h$i.bench.test A"
done >"$WORK/queries"
"$DNSMASQ" --keep-in-foreground --conf-file=/dev/null --port="$PORT" --listen-address=127.0.0.1 \
    --bind-interfaces --no-resolv --no-hosts --no-poll --user=root --pid-file= --local=/test/ \
    --cache-size=0 "${records[@]}" 2>"$WORK/dnsmasq.log" &
DNS_PID=$!
sleep 0.5
kill -0 "$DNS_PID" 2>/dev/null || { cat "$WORK/dnsmasq.log" >&2; exit 1; }

weft_config() { # $1: protocols.dns block
    cat <<EOF
receivers:
  ebpf:
    protocols:
      dns: $1
exporters:
  file:
    path: $WORK/spans.jsonl
    rotation:
      max_megabytes: 200
      max_backups: 1
service:
  telemetry:
    logs:
      level: warn
    metrics:
      address: 127.0.0.1:$METRICS_PORT
  pipelines:
    traces:
      receivers: [ebpf]
      exporters: [file]
EOF
}
weft_config "{enabled: false}" >"$WORK/weft-dns-off.yaml"
weft_config "{ports: [$PORT]}" >"$WORK/weft-on.yaml"
weft_config "{ports: [53]}" >"$WORK/weft-other.yaml"

metric() { # sum of a metric family's samples
    curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" |
        awk -v m="$1" '$1 ~ "^"m"[{ ]" || $1 == m { s += $2 } END { print s + 0 }'
}
run_dnsperf() { # prints "qps avg_latency_us"
    dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries" -l "$DURATION" -c "$CLIENTS" -q 64 2>&1 |
        awk '/Queries per second:/ { qps = $4 } /Average Latency/ { lat = $4 * 1e6 }
             END { printf "%.0f %.0f\n", qps, lat }'
}

# One run: $1 mode. Sets QPS LAT CPU KNS KCNT SPANS.
measure() {
    CPU=0; KNS=0; KCNT=0; SPANS=0
    if [[ "$1" == off ]]; then
        read -r QPS LAT < <(run_dnsperf)
        return
    fi
    "$WEFT_BIN" --config "$WORK/weft-$1.yaml" 2>"$WORK/weft.log" &
    WEFT_PID=$!
    local up=0
    for _ in $(seq 100); do
        [[ "$(metric weft_ebpf_active)" == 1 ]] && { up=1; break; }
        sleep 0.1
    done
    ((up)) || { cat "$WORK/weft.log" >&2; exit 1; }
    sysctl -qw kernel.bpf_stats_enabled=1
    local c0 k0 n0 s0
    c0=$(cpu_seconds "$WEFT_PID")
    read -r k0 n0 < <(probe_stats "$WEFT_PID")
    s0=$(metric otelcol_receiver_accepted_spans)
    read -r QPS LAT < <(run_dnsperf)
    sleep 1
    CPU=$(awk -v a="$c0" -v b="$(cpu_seconds "$WEFT_PID")" 'BEGIN { print b - a }')
    read -r KNS KCNT < <(probe_stats "$WEFT_PID")
    KNS=$((KNS - k0)); KCNT=$((KCNT - n0))
    SPANS=$(awk -v a="$s0" -v b="$(metric otelcol_receiver_accepted_spans)" 'BEGIN { print b - a }')
    sysctl -qw kernel.bpf_stats_enabled="$STATS_BEFORE"
    kill -TERM "$WEFT_PID"
    wait "$WEFT_PID" || true
    WEFT_PID=""
}

declare -A QSUM LSUM CSUM KSUM NSUM SSUM
MODES=(off dns-off on other)
for m in "${MODES[@]}"; do QSUM[$m]=0; LSUM[$m]=0; CSUM[$m]=0; KSUM[$m]=0; NSUM[$m]=0; SSUM[$m]=0; done
printf '%-8s %-5s %10s %10s %12s %12s %10s\n' mode round queries/s avg_us weft_us/q probe_ns/q spans/q
for r in $(seq "$ROUNDS"); do
    for m in "${MODES[@]}"; do
        measure "$m"
        n=$((QPS * DURATION))
        QSUM[$m]=$((QSUM[$m] + QPS)); LSUM[$m]=$((LSUM[$m] + LAT))
        CSUM[$m]=$(awk -v a="${CSUM[$m]}" -v b="$CPU" 'BEGIN { print a + b }')
        KSUM[$m]=$((KSUM[$m] + KNS)); NSUM[$m]=$((NSUM[$m] + n)); SSUM[$m]=$((SSUM[$m] + ${SPANS%.*}))
        awk -v m="$m" -v r="$r" -v q="$QPS" -v l="$LAT" -v c="$CPU" -v k="$KNS" -v n="$n" -v s="$SPANS" \
            'BEGIN { printf "%-8s %-5s %10d %10d %12.2f %12.0f %10.2f\n", m, r, q, l,
                     n ? c * 1e6 / n : 0, n ? k / n : 0, n ? s / n : 0 }'
    done
done
echo
for m in "${MODES[@]}"; do
    awk -v m="$m" -v q="${QSUM[$m]}" -v q0="${QSUM[off]}" -v l="${LSUM[$m]}" -v l0="${LSUM[off]}" \
        -v c="${CSUM[$m]}" -v k="${KSUM[$m]}" -v n="${NSUM[$m]}" -v s="${SSUM[$m]}" \
        'BEGIN { printf "%-8s throughput ratio %.3f, latency ratio %.2f, weft %.2f us/query, probes %.0f ns/query, %.2f spans/query\n",
                 m, q / q0, l / l0, n ? c * 1e6 / n : 0, n ? k / n : 0, n ? s / n : 0 }'
done
