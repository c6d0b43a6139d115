#!/usr/bin/env bash
# The project's test command: formatting, lints, the build, the Rust tests and the
# end-to-end suite (tests/e2e, real processes over loopback).
#
# On a fresh Debian machine run as root it installs what it needs: python3-venv from
# apt when the venv module is missing, and a Python venv at .venv from
# tests/e2e/requirements.txt (rebuilt only when that file changes).
#
# Environment:
#   WEFT_BIN       the weft binary the end-to-end tests run (default target/debug/weft)
#   PYTEST_ARGS    extra arguments for pytest (e.g. "-k reload -x")
#   SKIP_E2E=1     stop after the Rust tests
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
REQS="$ROOT/tests/e2e/requirements.txt"
STAMP="$VENV/.requirements.sha256"

step() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

on_error() {
    local code=$? line=$1
    printf '\nFAILED: scripts/test.sh stopped at line %s (exit %s): %s\n' \
        "$line" "$code" "$BASH_COMMAND" >&2
    exit "$code"
}
trap 'on_error $LINENO' ERR

# --- system packages ----------------------------------------------------------
# Only what is missing, only through apt, only when we can.
need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
fi
command -v cargo >/dev/null 2>&1 || fail "cargo is not on PATH: install the Rust toolchain"
if ((${#need_apt[@]})); then
    step "installing system packages: ${need_apt[*]}"
    [[ $(id -u) -eq 0 ]] || fail "need root to apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# --- Python venv for the end-to-end peers --------------------------------------
want_hash="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$want_hash" ]]; then
    step "creating .venv from tests/e2e/requirements.txt"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
    echo "$want_hash" >"$STAMP"
else
    step "reusing .venv (tests/e2e/requirements.txt unchanged)"
fi

# --- Rust ----------------------------------------------------------------------
step "cargo fmt --all -- --check"
cargo fmt --all -- --check || fail "formatting differs: run cargo fmt --all"

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings || fail "clippy found problems"

step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets || fail "the build failed"

if cargo nextest --version >/dev/null 2>&1; then
    step "cargo nextest run --workspace"
    # nextest does not run doctests; cargo test --doc covers them.
    cargo nextest run --workspace --no-tests=pass || fail "Rust tests failed"
    step "cargo test --workspace --doc"
    cargo test --workspace --doc || fail "doctests failed"
else
    step "cargo test --workspace"
    cargo test --workspace || fail "Rust tests failed"
fi

if [[ "${SKIP_E2E:-0}" == 1 ]]; then
    step "SKIP_E2E=1: end-to-end tests skipped"
    exit 0
fi

# --- end-to-end ------------------------------------------------------------------
export WEFT_BIN="${WEFT_BIN:-$ROOT/target/debug/weft}"
[[ -x "$WEFT_BIN" ]] || fail "weft binary not found at $WEFT_BIN"

step "pytest tests/e2e (WEFT_BIN=$WEFT_BIN)"
# shellcheck disable=SC2086 # PYTEST_ARGS is a list of words on purpose
timeout --kill-after=60 3000 \
    "$VENV/bin/python" -m pytest tests/e2e -v ${PYTEST_ARGS:-} \
    || fail "end-to-end tests failed"

step "all checks passed"
