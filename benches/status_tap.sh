#!/usr/bin/env bash
# What the status page's trace tap costs: the same OTLP load through weft with no
# status extension, with the tap off, on (10k and 100k spans) with nobody looking, and
# with the page open, alternating in each round (see benches/status_tap.py).
#
#   benches/status_tap.sh
#   ROUNDS=5 RATE=50000 benches/status_tap.sh
#
# Environment: ROUNDS (default 3), RATE spans/s of the fixed-rate load (default 20000),
#   FIXED and SATURATION seconds per run (defaults 20 and 15), OUT (default
#   target/bench/status_tap). Builds weft and weft-loadgen in release mode.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build --release -q -p weft -p weft-loadgen
exec python3 "$ROOT/benches/status_tap.py" \
    --weft "$ROOT/target/release/weft" \
    --loadgen "$ROOT/target/release/weft-loadgen" \
    --rounds "${ROUNDS:-3}" \
    --rate "${RATE:-20000}" \
    --fixed "${FIXED:-20}" \
    --saturation "${SATURATION:-15}" \
    --out "${OUT:-$ROOT/target/bench/status_tap}"
