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
