#!/usr/bin/env bash
# eBPF receiver overhead on HTTP/2: nginx serving a small static file over h2c (prior
# knowledge) on loopback, driven by h2load with several concurrent streams per
# connection, without weft ("off"), with weft's ebpf receiver making a span per stream
# ("on", spans written by the file exporter) and with the receiver filtered to an
# unrelated port ("filtered"). Rounds alternate off/on/filtered so drift hits all sides
# alike. Prints requests/s per run, the throughput ratios against "off", weft's CPU per
# request, the probes' kernel time per request, and checks that "on" made one span per
# request (weft_ebpf_exchanges against h2load's count, both ends).
#
# Needs root, kernel BTF, nginx, h2load (Debian: nghttp2-client) and a release build:
#   cargo build --release && benches/http2_overhead.sh
# Environment: ROUNDS (default 3), DURATION seconds per run (default 10),
#   CONNECTIONS (default 8), STREAMS concurrent streams per connection (default 10),
#   WEFT_BIN (default target/release/weft).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
WEFT_BIN="${WEFT_BIN:-$ROOT/target/release/weft}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-8}"
STREAMS="${STREAMS:-10}"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

[[ $(id -u) -eq 0 ]] || { echo "needs root (the ebpf receiver loads eBPF programs)" >&2; exit 2; }
[[ -x "$WEFT_BIN" ]] || { echo "no weft binary at $WEFT_BIN: cargo build --release" >&2; exit 2; }
command -v h2load >/dev/null || { echo "h2load is not installed (apt-get install nghttp2-client)" >&2; exit 2; }
[[ -x "$NGINX" ]] || { echo "nginx is not installed (apt-get install nginx)" >&2; exit 2; }

WORK="$(mktemp -d)"
NGINX_PID=""
WEFT_PID=""
STATS_BEFORE="$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || echo 0)"
cleanup() {
    sysctl -qw kernel.bpf_stats_enabled="$STATS_BEFORE" 2>/dev/null || true
    [[ -n "$WEFT_PID" ]] && kill "$WEFT_PID" 2>/dev/null || true
    [[ -n "$NGINX_PID" ]] && kill "$NGINX_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

read -r PORT METRICS_PORT OTHER_PORT < <(free_ports 3)

mkdir -p "$WORK/www" "$WORK/logs" "$WORK/tmp"
head -c 612 /dev/zero | tr '\0' 'x' >"$WORK/www/index.html"
cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/tmp;
    proxy_temp_path $WORK/tmp;
    fastcgi_temp_path $WORK/tmp;
    uwsgi_temp_path $WORK/tmp;
    scgi_temp_path $WORK/tmp;
    server {
        listen 127.0.0.1:$PORT http2;
        root $WORK/www;
    }
}
EOF
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_PID=$!
for _ in $(seq 50); do
    curl -sf --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$PORT/index.html" && break
    sleep 0.1
done

weft_config() { # $1: the port the receiver is limited to
    cat <<EOF
receivers:
  ebpf:
    include:
      ports: [$1]
    payload_bytes: 16384
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
weft_config "$PORT" >"$WORK/weft-on.yaml"
weft_config "$OTHER_PORT" >"$WORK/weft-filtered.yaml"

metric() { # a metric family's samples summed, from weft's self-metrics
    curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" |
        awk -v m="$1" '$1 ~ "^"m"[{ ]" || $1 == m { s += $2 } END { printf "%.0f\n", s }'
}
run_h2load() { # prints "req/s succeeded"
    h2load -c"$CONNECTIONS" -m"$STREAMS" -D"$DURATION" "http://127.0.0.1:$PORT/index.html" 2>&1 |
        awk '/^finished in/ { gsub(/,/, ""); rps = $4 }
             /^requests:/ { gsub(/,/, ""); ok = $8 }
             END { printf "%.0f %d\n", rps, ok }'
}

# One run: $1 mode. Sets RPS OK CPU KNS SPANS LOST.
measure() {
    KNS=0; CPU=0; SPANS=0; LOST=0
    if [[ "$1" == off ]]; then
        read -r RPS OK < <(run_h2load)
        return
    fi
    local config="$WORK/weft-on.yaml"
    [[ "$1" == filtered ]] && config="$WORK/weft-filtered.yaml"
    [[ "$1" == on ]] && sysctl -qw kernel.bpf_stats_enabled=1
    start_weft "$config"
    local cpu0 s0 k0 c0 cpu1 s1 k1 c1
    cpu0="$(cpu_seconds "$WEFT_PID")"; s0="$(metric weft_ebpf_exchanges)"
    read -r k0 c0 < <(probe_stats "$WEFT_PID")
    read -r RPS OK < <(run_h2load)
    read -r k1 c1 < <(probe_stats "$WEFT_PID")
    sysctl -qw kernel.bpf_stats_enabled="$STATS_BEFORE"
    sleep 2 # h2load's connections close: the last streams' spans flush
    cpu1="$(cpu_seconds "$WEFT_PID")"; s1="$(metric weft_ebpf_exchanges)"
    LOST="$(( $(metric weft_ebpf_http2_header_blocks_lost) + $(metric weft_ebpf_http2_framing_lost) + $(metric weft_ebpf_ringbuf_dropped) ))"
    stop_weft
    CPU=$(echo "$cpu1 - $cpu0" | bc -l); SPANS=$((s1 - s0)); KNS=$((k1 - k0))
}

echo "nginx h2c on 127.0.0.1:$PORT, h2load -c$CONNECTIONS -m$STREAMS -D$DURATION, $(nproc) CPUs, kernel $(uname -r)"
printf '%-6s %-9s %10s %10s %10s %9s %12s %14s %6s\n' round weft req/s requests spans weft_cpu weft_us/req kernel_us/req lost
declare -A SUM_RPS
for mode in off on filtered; do SUM_RPS[$mode]=0; done
CPU_ON=0; REQ_ON=0; KNS_ON=0
for round in $(seq "$ROUNDS"); do
    for mode in off on filtered; do
        measure "$mode"
        if [[ "$mode" == on ]]; then
            printf '%-6s %-9s %10s %10s %10s %9.2f %12.2f %14.2f %6s\n' "$round" "$mode" "$RPS" "$OK" "$SPANS" "$CPU" \
                "$(echo "$CPU / $OK * 1000000" | bc -l)" "$(echo "$KNS / $OK / 1000" | bc -l)" "$LOST"
            CPU_ON=$(echo "$CPU_ON + $CPU" | bc -l); REQ_ON=$((REQ_ON + OK)); KNS_ON=$((KNS_ON + KNS))
        else
            printf '%-6s %-9s %10s %10s %10s %9s %12s %14s %6s\n' "$round" "$mode" "$RPS" "$OK" - - - - -
        fi
        SUM_RPS[$mode]=$(echo "${SUM_RPS[$mode]} + $RPS" | bc -l)
    done
done
echo
printf 'throughput ratio, on / off:        %.3f\n' "$(echo "${SUM_RPS[on]} / ${SUM_RPS[off]}" | bc -l)"
printf 'throughput ratio, filtered / off:  %.3f\n' "$(echo "${SUM_RPS[filtered]} / ${SUM_RPS[off]}" | bc -l)"
printf 'weft CPU per request (user space): %.2f us\n' "$(echo "$CPU_ON / $REQ_ON * 1000000" | bc -l)"
printf 'probe time per request (kernel):   %.2f us\n' "$(echo "$KNS_ON / $REQ_ON / 1000" | bc -l)"
