#!/usr/bin/env bash
# What weft's own tracing (`service.telemetry.traces`) costs the data path, and that a
# dead or hung self-telemetry endpoint leaves it alone: the same OTLP load through weft
# with self-tracing off, on (a live endpoint), on with nothing listening, and on with an
# endpoint that accepts connections and never answers, alternating in each round (see
# benches/self_tracing.py).
#
#   benches/self_tracing.sh
#   ROUNDS=5 RATE=50000 benches/self_tracing.sh
#
# Environment: ROUNDS (default 3), RATE spans/s of the fixed-rate load (default 20000),
#   FIXED and SATURATION seconds per run (defaults 20 and 15), OUT (default
#   target/bench/self_tracing). Builds weft and weft-loadgen in release mode.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build --release -q -p weft -p weft-loadgen
exec python3 "$ROOT/benches/self_tracing.py" \
    --weft "$ROOT/target/release/weft" \
    --loadgen "$ROOT/target/release/weft-loadgen" \
    --rounds "${ROUNDS:-3}" \
    --rate "${RATE:-20000}" \
    --fixed "${FIXED:-20}" \
    --saturation "${SATURATION:-15}" \
    --out "${OUT:-$ROOT/target/bench/self_tracing}"
