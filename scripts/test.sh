#!/usr/bin/env bash
# The project's test command: formatting, lints, the build, the Rust tests and the
# end-to-end suite (tests/e2e, real processes over loopback).
#
# On a fresh Debian machine run as root it installs what it needs: python3-venv from
# apt when the venv module is missing, and a Python venv at .venv from
# tests/e2e/requirements.txt (rebuilt only when that file changes), and a second
# one at .venv-jaeger from tests/e2e/requirements-jaeger.txt for the Jaeger
# clients, whose pinned SDK and protobuf cannot share the first, and one at .venv-dd
# from tests/e2e/requirements-dd.txt for ddtrace and the Datadog APM test agent,
# whose opentelemetry-proto pin cannot share it either.
#
# Environment:
#   WEFT_BIN       the weft binary the end-to-end tests run (default target/debug/weft)
#   PYTEST_ARGS    extra arguments for pytest (e.g. "-k reload -x")
#   WEFT_JAEGER_PYTHON  the interpreter of the Jaeger clients (default .venv-jaeger/bin/python)
#   WEFT_DD_PYTHON      the interpreter of ddtrace and the test agent (default .venv-dd/bin/python)
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

# --- Python venv for the Jaeger clients -----------------------------------------
JAEGER_VENV="$ROOT/.venv-jaeger"
JAEGER_REQS="$ROOT/tests/e2e/requirements-jaeger.txt"
JAEGER_STAMP="$JAEGER_VENV/.requirements.sha256"
want_hash="$(sha256sum "$JAEGER_REQS" | cut -d' ' -f1)"
if [[ ! -x "$JAEGER_VENV/bin/python" || ! -f "$JAEGER_STAMP" || "$(cat "$JAEGER_STAMP")" != "$want_hash" ]]; then
    step "creating .venv-jaeger from tests/e2e/requirements-jaeger.txt"
    rm -rf "$JAEGER_VENV"
    python3 -m venv "$JAEGER_VENV"
    "$JAEGER_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$JAEGER_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$JAEGER_REQS"
    echo "$want_hash" >"$JAEGER_STAMP"
else
    step "reusing .venv-jaeger (tests/e2e/requirements-jaeger.txt unchanged)"
fi

# --- Python venv for ddtrace and the Datadog APM test agent ----------------------
DD_VENV="$ROOT/.venv-dd"
DD_REQS="$ROOT/tests/e2e/requirements-dd.txt"
DD_STAMP="$DD_VENV/.requirements.sha256"
want_hash="$(sha256sum "$DD_REQS" | cut -d' ' -f1)"
if [[ ! -x "$DD_VENV/bin/python" || ! -f "$DD_STAMP" || "$(cat "$DD_STAMP")" != "$want_hash" ]]; then
    step "creating .venv-dd from tests/e2e/requirements-dd.txt"
    rm -rf "$DD_VENV"
    python3 -m venv "$DD_VENV"
    "$DD_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$DD_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$DD_REQS"
    echo "$want_hash" >"$DD_STAMP"
else
    step "reusing .venv-dd (tests/e2e/requirements-dd.txt unchanged)"
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
export WEFT_JAEGER_PYTHON="${WEFT_JAEGER_PYTHON:-$JAEGER_VENV/bin/python}"
export WEFT_DD_PYTHON="${WEFT_DD_PYTHON:-$DD_VENV/bin/python}"
[[ -x "$WEFT_BIN" ]] || fail "weft binary not found at $WEFT_BIN"

step "pytest tests/e2e (WEFT_BIN=$WEFT_BIN)"
# shellcheck disable=SC2086 # PYTEST_ARGS is a list of words on purpose
timeout --kill-after=60 3000 \
    "$VENV/bin/python" -m pytest tests/e2e -v ${PYTEST_ARGS:-} \
    || fail "end-to-end tests failed"

step "all checks passed"
