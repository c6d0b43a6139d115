# Helpers shared by the benches/*_overhead.sh scripts (sourced, not run).

cpu_seconds() { # utime + stime of a pid, in seconds
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

probe_stats() { # "run_time_ns run_cnt" summed over the bpf programs a pid holds
    local t=0 c=0 f
    for f in /proc/"$1"/fdinfo/*; do
        grep -q '^prog_type' "$f" 2>/dev/null || continue
        t=$((t + $(awk '/^run_time_ns/ { print $2 }' "$f")))
        c=$((c + $(awk '/^run_cnt/ { print $2 }' "$f")))
    done
    echo "$t $c"
}

free_ports() { # $1 distinct free loopback ports, on one line (each stays bound until all are picked)
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))' "$1"
}

# start_weft CONFIG / stop_weft: run "$WEFT_BIN" in the background (pid in WEFT_PID, log in
# $WORK/weft.log) until its ebpf receiver is active, as the caller's `metric` reads it.
start_weft() {
    "$WEFT_BIN" --config "$1" 2>"$WORK/weft.log" &
    WEFT_PID=$!
    for _ in $(seq 100); do
        [[ "$(metric weft_ebpf_active)" == 1 ]] && return 0
        sleep 0.1
    done
    cat "$WORK/weft.log" >&2
    exit 1
}
stop_weft() {
    kill -TERM "$WEFT_PID"
    wait "$WEFT_PID" || true
    WEFT_PID=""
}
