#!/usr/bin/env bash
# eBPF receiver overhead: nginx serving a small static file on loopback, driven by wrk,
# without weft, with weft's ebpf receiver capturing every exchange ("on": spans written
# by the file exporter), and with the receiver filtered to an unrelated port
# ("filtered": nginx is not traced and should pay next to nothing). Rounds alternate
# off/on/filtered so drift hits all sides alike.
#
# Two parts:
# 1. Saturation (wrk as fast as it goes): requests/s and p99 per run, then the
#    throughput and p99 ratios against "off".
# 2. Fixed rate (half of the "off" saturation rate, wrk pacing each connection): p50
#    and p99 added latency, weft's CPU per request, and the probes' kernel time per
#    request and per invocation (kernel.bpf_stats_enabled, switched on only for the
#    "on" runs and restored after).
#
# Needs root, kernel BTF, nginx, wrk and a release build of weft:
#   cargo build --release && benches/ebpf_overhead.sh
# With TLS=1 nginx serves HTTPS (TLS 1.3, a self-signed certificate made with the
# openssl CLI) and wrk speaks TLS: "on" then reads the plaintext through the OpenSSL
# uprobes, and "filtered" shows what the uprobes cost a process that is not traced
# (they fire in every process using libssl; the filters apply after).
# Environment: ROUNDS (default 3), DURATION seconds per run (default 10),
#   CONNECTIONS (default 32), WEFT_BIN (default target/release/weft),
#   EXPORTER: file (default: spans encoded as OTLP JSON and written) or debug (spans
#   counted and dropped, so the figure is capture and span building).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
WEFT_BIN="${WEFT_BIN:-$ROOT/target/release/weft}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
EXPORTER="${EXPORTER:-file}"
TLS="${TLS:-0}"
SCHEME=http
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

[[ $(id -u) -eq 0 ]] || { echo "needs root (the ebpf receiver loads eBPF programs)" >&2; exit 2; }
[[ -x "$WEFT_BIN" ]] || { echo "no weft binary at $WEFT_BIN: cargo build --release" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
[[ -x "$NGINX" ]] || { echo "nginx is not installed (apt-get install nginx)" >&2; exit 2; }
case "$EXPORTER" in file|debug) ;; *) echo "EXPORTER must be file or debug" >&2; exit 2 ;; esac

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
LISTEN_TLS=""
if [[ "$TLS" == 1 ]]; then
    command -v openssl >/dev/null || { echo "the openssl CLI is not installed (apt-get install openssl)" >&2; exit 2; }
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" \
        -subj /CN=localhost 2>/dev/null
    SCHEME=https
    LISTEN_TLS="ssl; ssl_protocols TLSv1.3; ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem"
fi
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
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/tmp;
    proxy_temp_path $WORK/tmp;
    fastcgi_temp_path $WORK/tmp;
    uwsgi_temp_path $WORK/tmp;
    scgi_temp_path $WORK/tmp;
    server {
        listen 127.0.0.1:$PORT $LISTEN_TLS;
        root $WORK/www;
    }
}
EOF
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_PID=$!
for _ in $(seq 50); do
    curl -sfk -o /dev/null "$SCHEME://127.0.0.1:$PORT/index.html" && break
    sleep 0.1
done

weft_config() { # $1: the port the receiver is limited to
    cat <<EOF
receivers:
  ebpf:
    include:
      ports: [$1]
exporters:
  debug:
    verbosity: basic
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
      exporters: [$EXPORTER]
EOF
}
weft_config "$PORT" >"$WORK/weft-on.yaml"
weft_config "$OTHER_PORT" >"$WORK/weft-filtered.yaml"

# wrk paces each connection by this many milliseconds between requests (fixed rate).
cat >"$WORK/paced.lua" <<'EOF'
function delay() return 1 end
EOF

metric() { # first sample of a metric family from weft's self-metrics
    curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v m="$1" '!done && ($1 ~ "^"m"[{ ]" || $1 == m) { print $2; done = 1 }'
}
run_wrk() { # $1: connections, $2: extra wrk args; prints "req/s p50_ms p99_ms"
    # shellcheck disable=SC2086
    wrk -t1 -c"$1" -d"${DURATION}s" --latency $2 "$SCHEME://127.0.0.1:$PORT/index.html" |
        awk 'function ms(v) { if (v ~ /us$/) { sub(/us/, "", v); return v / 1000 }
                              if (v ~ /ms$/) { sub(/ms/, "", v); return v }
                              if (v ~ /s$/) { sub(/s/, "", v); return v * 1000 }
                              return v }
             /Requests\/sec/ { rps = $2 }
             /^ +50%/ { p50 = ms($2) }
             /^ +99%/ { p99 = ms($2) }
             END { printf "%.0f %.3f %.3f\n", rps, p50, p99 }'
}

# One measured run: $1 mode (off|on|filtered), $2 connections, $3 extra wrk args.
# Sets RPS P50 P99 CPU (weft seconds) KNS KCNT (probe ns and invocations) RECS DROPS.
measure() {
    KNS=0; KCNT=0; CPU=0; RECS=0; DROPS=0
    if [[ "$1" == off ]]; then
        read -r RPS P50 P99 < <(run_wrk "$2" "$3")
        return
    fi
    local config="$WORK/weft-on.yaml"
    [[ "$1" == filtered ]] && config="$WORK/weft-filtered.yaml"
    [[ "$1" == on ]] && sysctl -qw kernel.bpf_stats_enabled=1
    start_weft "$config"
    local cpu0 rec0 k0 c0 cpu1 rec1 k1 c1
    cpu0="$(cpu_seconds "$WEFT_PID")"; rec0="$(metric weft_ebpf_records)"
    read -r k0 c0 < <(probe_stats "$WEFT_PID")
    read -r RPS P50 P99 < <(run_wrk "$2" "$3")
    read -r k1 c1 < <(probe_stats "$WEFT_PID")
    sysctl -qw kernel.bpf_stats_enabled="$STATS_BEFORE"
    sleep 1 # let the last spans flush
    cpu1="$(cpu_seconds "$WEFT_PID")"; rec1="$(metric weft_ebpf_records)"
    DROPS="$(metric weft_ebpf_ringbuf_dropped)"
    stop_weft
    CPU=$(echo "$cpu1 - $cpu0" | bc -l); RECS=$(echo "$rec1 - $rec0" | bc -l)
    KNS=$((k1 - k0)); KCNT=$((c1 - c0))
}

echo "nginx on $SCHEME://127.0.0.1:$PORT, wrk -t1 -c$CONNECTIONS -d${DURATION}s, exporter $EXPORTER, $(nproc) CPUs, kernel $(uname -r)"
echo
echo "saturation"
printf '%-6s %-9s %10s %9s %9s %11s %10s\n' round weft req/s p99_ms weft_cpu_s records ring_drops
declare -A SUM_RPS SUM_P99
for mode in off on filtered; do SUM_RPS[$mode]=0; SUM_P99[$mode]=0; done
for round in $(seq "$ROUNDS"); do
    for mode in off on filtered; do
        measure "$mode" "$CONNECTIONS" ""
        printf '%-6s %-9s %10s %9s %9.2f %11s %10s\n' "$round" "$mode" "$RPS" "$P99" "$CPU" "$RECS" "$DROPS"
        SUM_RPS[$mode]=$(echo "${SUM_RPS[$mode]} + $RPS" | bc -l)
        SUM_P99[$mode]=$(echo "${SUM_P99[$mode]} + $P99" | bc -l)
    done
done
echo
printf 'throughput ratio, on / off:        %.3f\n' "$(echo "${SUM_RPS[on]} / ${SUM_RPS[off]}" | bc -l)"
printf 'p99 ratio, on / off:               %.3f\n' "$(echo "${SUM_P99[on]} / ${SUM_P99[off]}" | bc -l)"
printf 'throughput ratio, filtered / off:  %.3f\n' "$(echo "${SUM_RPS[filtered]} / ${SUM_RPS[off]}" | bc -l)"

# Fixed rate: half the saturation rate without weft. Each connection waits 1 ms between
# requests; the number of connections that gives the rate is calibrated on a short run
# without weft.
HALF=$(echo "${SUM_RPS[off]} / $ROUNDS / 2" | bc -l)
CALIBRATE=16
read -r rate _ _ < <(DURATION=3 run_wrk "$CALIBRATE" "-s $WORK/paced.lua")
PACED_CONNS=$(printf '%.0f' "$(echo "$CALIBRATE * $HALF / $rate" | bc -l)")
[[ "$PACED_CONNS" -ge 1 ]] || PACED_CONNS=1
echo
echo "fixed rate: about $(printf '%.0f' "$HALF") req/s (wrk -c$PACED_CONNS, 1 ms between requests per connection)"
printf '%-6s %-9s %10s %9s %9s %12s %14s %12s\n' round weft req/s p50_ms p99_ms weft_us/req kernel_us/req ns/probe
P50_OFF=0; P99_OFF=0; P50_ON=0; P99_ON=0; CPU_ON=0; REQ_ON=0; KNS_ON=0; KCNT_ON=0
for round in $(seq "$ROUNDS"); do
    for mode in off on; do
        measure "$mode" "$PACED_CONNS" "-s $WORK/paced.lua"
        if [[ "$mode" == off ]]; then
            printf '%-6s %-9s %10s %9s %9s %12s %14s %12s\n' "$round" off "$RPS" "$P50" "$P99" - - -
            P50_OFF=$(echo "$P50_OFF + $P50" | bc -l); P99_OFF=$(echo "$P99_OFF + $P99" | bc -l)
        else
            req=$(echo "$RPS * $DURATION" | bc -l)
            printf '%-6s %-9s %10s %9s %9s %12.2f %14.2f %12.0f\n' "$round" on "$RPS" "$P50" "$P99" \
                "$(echo "$CPU / $req * 1000000" | bc -l)" "$(echo "$KNS / $req / 1000" | bc -l)" \
                "$(echo "$KNS / ($KCNT + 0.000001)" | bc -l)"
            P50_ON=$(echo "$P50_ON + $P50" | bc -l); P99_ON=$(echo "$P99_ON + $P99" | bc -l)
            CPU_ON=$(echo "$CPU_ON + $CPU" | bc -l); REQ_ON=$(echo "$REQ_ON + $req" | bc -l)
            KNS_ON=$((KNS_ON + KNS)); KCNT_ON=$((KCNT_ON + KCNT))
        fi
    done
done
echo
printf 'added p50 latency:                 %.1f us\n' "$(echo "($P50_ON - $P50_OFF) / $ROUNDS * 1000" | bc -l)"
printf 'added p99 latency:                 %.1f us\n' "$(echo "($P99_ON - $P99_OFF) / $ROUNDS * 1000" | bc -l)"
printf 'weft CPU per request (user space): %.2f us\n' "$(echo "$CPU_ON / $REQ_ON * 1000000" | bc -l)"
printf 'probe time per request (kernel):   %.2f us\n' "$(echo "$KNS_ON / $REQ_ON / 1000" | bc -l)"
printf 'probe invocations per request:     %.2f\n' "$(echo "$KCNT_ON / $REQ_ON" | bc -l)"
printf 'time per probe invocation:         %.0f ns (includes the stats accounting itself)\n' \
    "$(echo "$KNS_ON / ($KCNT_ON + 0.000001)" | bc -l)"
