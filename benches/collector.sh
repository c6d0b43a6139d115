#!/usr/bin/env bash
# The collector path, weft against rotel in the same run: OTLP (and Datadog v0.5) load
# from weft-loadgen into each collector, a batch processor (8192 spans / 200 ms), and an
# OTLP gRPC exporter (gzip, both collectors' default) into weft-loadgen's counting sink.
# Rounds alternate the two collectors; each run reads the collector's CPU from /proc,
# its peak RSS (VmHWM), and checks that every acknowledged span reached the sink.
#
#   benches/collector.sh                   # every scenario, 3 rounds
#   ROUNDS=5 SCENARIOS="grpc testbed-10k" benches/collector.sh
#
# Environment: ROUNDS (default 3), DURATION seconds per saturation run (default 20),
#   SCENARIOS (default: all; see benches/collector.py), OUT (default
#   target/bench/collector), CHART (default docs/img/collector.svg; empty for none).
# It builds weft and weft-loadgen in release mode and makes its own venv with the
# rotel wheel from PyPI (pinned below).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROTEL_VERSION="0.0.1a15"
VENV="$ROOT/target/bench-venv"

cd "$ROOT"
cargo build --release -q -p weft -p weft-loadgen
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('rotel') == '$ROTEL_VERSION'" 2>/dev/null; then
    "$VENV/bin/pip" install -q "rotel==$ROTEL_VERSION"
fi
ROTEL_BIN="$("$VENV/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')"
[[ -x "$ROTEL_BIN" ]] || { echo "the rotel wheel has no rotel-agent binary at $ROTEL_BIN" >&2; exit 2; }

exec python3 "$ROOT/benches/collector.py" \
    --weft "$ROOT/target/release/weft" \
    --loadgen "$ROOT/target/release/weft-loadgen" \
    --rotel "$ROTEL_BIN" \
    --rounds "${ROUNDS:-3}" \
    --duration "${DURATION:-20}" \
    --out "${OUT:-$ROOT/target/bench/collector}" \
    --chart "${CHART-$ROOT/docs/img/collector.svg}" \
    ${SCENARIOS:+--scenarios $SCENARIOS}
