#!/usr/bin/env bash
# eBPF receiver overhead: nginx serving a small static file on loopback, wrk at
# saturation, without and with weft's ebpf receiver attached (capturing and turning
# every exchange into spans written by the file exporter). Rounds alternate
# without/with so drift hits both sides alike.
#
# Prints per round: requests/s, p99 latency, weft CPU seconds and records read; then
# the throughput and p99 ratios and the weft CPU per request.
#
# Needs root, kernel BTF, nginx, wrk and a release build of weft:
#   cargo build --release && benches/ebpf_overhead.sh
# Environment: ROUNDS (default 3), DURATION seconds per run (default 10),
#   CONNECTIONS (default 32), WEFT_BIN (default target/release/weft),
#   EXPORTER: debug (default: spans counted and dropped, so the figure is capture and
#   span building) or file (spans also encoded as OTLP JSON and written).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WEFT_BIN="${WEFT_BIN:-$ROOT/target/release/weft}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
EXPORTER="${EXPORTER:-debug}"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

[[ $(id -u) -eq 0 ]] || { echo "needs root (the ebpf receiver loads eBPF programs)" >&2; exit 2; }
[[ -x "$WEFT_BIN" ]] || { echo "no weft binary at $WEFT_BIN: cargo build --release" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
[[ -x "$NGINX" ]] || { echo "nginx is not installed (apt-get install nginx)" >&2; exit 2; }

WORK="$(mktemp -d)"
NGINX_PID=""
WEFT_PID=""
cleanup() {
    [[ -n "$WEFT_PID" ]] && kill "$WEFT_PID" 2>/dev/null || true
    [[ -n "$NGINX_PID" ]] && kill "$NGINX_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"
METRICS_PORT="$(free_port)"

mkdir -p "$WORK/www" "$WORK/logs"
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
        listen 127.0.0.1:$PORT;
        root $WORK/www;
    }
}
EOF
mkdir -p "$WORK/tmp"
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_PID=$!
for _ in $(seq 50); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/index.html" && break
    sleep 0.1
done

cat >"$WORK/weft.yaml" <<EOF
receivers:
  ebpf:
    include:
      ports: [$PORT]
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

cpu_seconds() { # utime + stime of a pid, in seconds
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}
metric() { # first sample of a metric family from weft's self-metrics
    curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v m="$1" '$1 ~ "^"m"[{ ]" || $1 == m { print $2; exit }'
}
run_wrk() { # prints "req/s p99_ms"
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$PORT/index.html" |
        awk '/Requests\/sec/ { rps = $2 }
             /^ +99%/ { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 }
                        else if (v ~ /ms$/) { sub(/ms/, "", v) }
                        else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 }
                        p99 = v }
             END { printf "%.0f %.3f\n", rps, p99 }'
}

echo "nginx on 127.0.0.1:$PORT, wrk -t1 -c$CONNECTIONS -d${DURATION}s, exporter $EXPORTER, $(nproc) CPUs"
printf '%-7s %-8s %12s %10s %10s %12s\n' round weft req/s p99_ms weft_cpu_s records
sum_off=0; sum_on=0; p99_off=0; p99_on=0; cpu_on=0; req_on=0
for round in $(seq "$ROUNDS"); do
    read -r rps p99 < <(run_wrk)
    printf '%-7s %-8s %12s %10s %10s %12s\n' "$round" off "$rps" "$p99" - -
    sum_off=$(echo "$sum_off + $rps" | bc -l); p99_off=$(echo "$p99_off + $p99" | bc -l)

    "$WEFT_BIN" --config "$WORK/weft.yaml" 2>"$WORK/weft.log" &
    WEFT_PID=$!
    for _ in $(seq 100); do
        [[ "$(metric weft_ebpf_active)" == 1 ]] && break
        sleep 0.1
    done
    [[ "$(metric weft_ebpf_active)" == 1 ]] || { cat "$WORK/weft.log" >&2; exit 1; }
    cpu0="$(cpu_seconds "$WEFT_PID")"; rec0="$(metric weft_ebpf_records)"
    read -r rps p99 < <(run_wrk)
    sleep 1 # let the last spans flush
    cpu1="$(cpu_seconds "$WEFT_PID")"; rec1="$(metric weft_ebpf_records)"
    dropped="$(metric weft_ebpf_ringbuf_dropped)"
    kill -TERM "$WEFT_PID"; wait "$WEFT_PID" || true; WEFT_PID=""
    cpu=$(echo "$cpu1 - $cpu0" | bc -l); recs=$(echo "$rec1 - $rec0" | bc -l)
    printf '%-7s %-8s %12s %10s %10.2f %12s  (ring drops %s)\n' "$round" on "$rps" "$p99" "$cpu" "$recs" "$dropped"
    sum_on=$(echo "$sum_on + $rps" | bc -l); p99_on=$(echo "$p99_on + $p99" | bc -l)
    cpu_on=$(echo "$cpu_on + $cpu" | bc -l); req_on=$(echo "$req_on + $rps * $DURATION" | bc -l)
done

echo
printf 'throughput ratio (with / without): %.3f\n' "$(echo "$sum_on / $sum_off" | bc -l)"
printf 'p99 ratio (with / without):        %.3f\n' "$(echo "$p99_on / $p99_off" | bc -l)"
printf 'weft CPU per request:              %.2f us\n' "$(echo "$cpu_on / $req_on * 1000000" | bc -l)"
