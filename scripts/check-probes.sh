#!/usr/bin/env bash
# Checks that the committed prebuilt eBPF object is current: the hash of the probe
# sources must equal the one recorded in ebpf-probes/prebuilt/SOURCES.sha256 when
# scripts/build-probes.sh built the object. receiver/build.rs falls back to that object
# on machines without clang, so a stale one would load old probes.
#
# The hash is SHA-256 over, for each source in order, its path relative to
# ebpf-probes/, a NUL byte and its contents; receiver/build.rs computes the same.
#
# Usage: scripts/check-probes.sh            exit 0 when current, 1 when stale or missing
#        scripts/check-probes.sh --print    print the sources' hash and exit
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/ebpf-probes"

# Keep in step with SOURCES in receiver/build.rs.
SOURCES=(socket_trace.bpf.c include/weft_kernel_types.h)

sources_hash() {
    local f
    for f in "${SOURCES[@]}"; do
        printf '%s\0' "$f"
        cat "$f"
    done | sha256sum | cut -d' ' -f1
}

if [[ ${1:-} == --print ]]; then
    sources_hash
    exit 0
fi
[[ $# -eq 0 ]] || { echo "usage: $0 [--print]" >&2; exit 2; }

stale() {
    printf 'ebpf-probes: %s\nRun scripts/build-probes.sh (needs clang and the libbpf headers) and commit ebpf-probes/prebuilt/.\n' "$1" >&2
    exit 1
}

[[ -f prebuilt/socket_trace.bpf.o ]] || stale "prebuilt/socket_trace.bpf.o is missing."
[[ -f prebuilt/SOURCES.sha256 ]] || stale "prebuilt/SOURCES.sha256 is missing."
recorded="$(tr -d '[:space:]' < prebuilt/SOURCES.sha256)"
current="$(sources_hash)"
if [[ $recorded != "$current" ]]; then
    stale "prebuilt/socket_trace.bpf.o is stale: the sources hash to $current, prebuilt/SOURCES.sha256 records $recorded."
fi
echo "ebpf-probes: prebuilt object is current ($current)"
