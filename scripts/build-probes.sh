#!/usr/bin/env bash
# Rebuilds the committed prebuilt eBPF object ebpf-probes/prebuilt/socket_trace.bpf.o
# and records the hash of the sources it came from in ebpf-probes/prebuilt/SOURCES.sha256
# (checked by scripts/check-probes.sh and receiver/build.rs).
#
# Same clang command as receiver/build.rs, plus -Werror. It runs inside ebpf-probes/ on a
# relative source path with the directory mapped to ".", so the object carries no path
# of the building machine.
#
# Environment:
#   WEFT_BPF_CLANG   the clang to use (default clang on PATH)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/ebpf-probes"

fail() { printf 'build-probes: %s\n' "$*" >&2; exit 1; }

CLANG="${WEFT_BPF_CLANG:-clang}"
command -v "$CLANG" >/dev/null 2>&1 || fail "$CLANG not found: install clang (14 or newer) or set WEFT_BPF_CLANG"
printf '#include <bpf/bpf_helpers.h>\n#include <bpf/bpf_core_read.h>\n' |
    "$CLANG" -target bpf -E -x c -o /dev/null - 2>/dev/null ||
    fail "$CLANG does not find the libbpf headers bpf/bpf_helpers.h and bpf/bpf_core_read.h (Debian: apt-get install libbpf-dev)"

mkdir -p prebuilt
tmp="prebuilt/.socket_trace.bpf.o.tmp"
trap 'rm -f "$tmp"' EXIT
"$CLANG" -O2 -g -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -Wall -Werror \
    "-fdebug-prefix-map=$(pwd -P)=." -c socket_trace.bpf.c -o "$tmp"
mv "$tmp" prebuilt/socket_trace.bpf.o
"$ROOT/scripts/check-probes.sh" --print > prebuilt/SOURCES.sha256
printf 'built ebpf-probes/prebuilt/socket_trace.bpf.o with %s\n' "$("$CLANG" --version | head -n1)"
"$ROOT/scripts/check-probes.sh"
