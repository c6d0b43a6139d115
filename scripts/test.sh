#!/usr/bin/env bash
# The project's test command: formatting, lints, the build, the Rust tests and the
# end-to-end suite (tests/e2e, real processes over loopback).
#
# On a fresh Debian machine run as root it installs what it needs: python3-venv from
# apt when the venv module is missing, and the Python venvs of the end-to-end peers
# (.venv, plus side venvs for clients whose pins clash with it; see make_venv below).
#
# Environment:
#   WEFT_BIN       the weft binary the end-to-end tests run (default target/debug/weft)
#   PYTEST_ARGS    extra arguments for pytest (e.g. "-k reload -x")
#   WEFT_JAEGER_PYTHON, WEFT_ZIPKIN_PROTO_PYTHON, WEFT_DD_PYTHON
#                  interpreters of the side venvs (default .venv-<name>/bin/python)
#   SKIP_FUZZ=1    skip the fuzz smoke (scripts/fuzz --smoke: needs the nightly toolchain;
#                  it installs cargo-fuzz when missing)
#   SKIP_E2E=1     stop after the Rust tests and the fuzz smoke
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"


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
# The eBPF probes are compiled from source with clang and the libbpf headers (receiver/
# build.rs); the ebpf receiver's end-to-end tests drive curl and nginx.
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
[[ -f /usr/include/bpf/bpf_helpers.h ]] || need_apt+=(libbpf-dev)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
# The autotracing end-to-end tests run an event-loop service on Node.js.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
# The status page's browser test drives Debian's Chromium with playwright-core (npm).
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
[[ -x /usr/bin/chromium ]] || need_apt+=(chromium)
# The ebpf receiver's DB and DNS span tests run real database and DNS servers (never the
# system services: each test starts its own on a loopback port, in a scratch directory).
[[ -x /usr/bin/redis-server ]] || need_apt+=(redis-server)
[[ -x /usr/bin/memcached ]] || need_apt+=(memcached)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
[[ -x /usr/sbin/mariadbd ]] || need_apt+=(mariadb-server)
[[ -x /usr/sbin/dnsmasq ]] || need_apt+=(dnsmasq-base)
if ((${#need_apt[@]})); then
    step "installing system packages: ${need_apt[*]}"
    [[ $(id -u) -eq 0 ]] || fail "need root to apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Packages with a service (nginx, the databases) must not start it: the tests run their own.
    no_autostart=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        no_autostart=1
    fi
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
    if ((no_autostart)); then rm -f /usr/sbin/policy-rc.d; fi
fi

# --- Python venvs ----------------------------------------------------------------
# .venv holds the OTLP peers and pytest. Clients whose pins clash with it (the Jaeger
# exporters' old SDK, the Zipkin proto exporter's protobuf 3, ddtrace with the
# Datadog test agent) get a side venv each: .venv-<name> from requirements-<name>.txt.
# A venv is rebuilt only when its requirements file changes.
make_venv() { # <venv dir> <requirements file>
    local venv="$1" reqs="$2" stamp="$1/.requirements.sha256" want
    want="$(sha256sum "$reqs" | cut -d' ' -f1)"
    if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        step "reusing ${venv#"$ROOT"/} (${reqs#"$ROOT"/} unchanged)"
        return
    fi
    step "creating ${venv#"$ROOT"/} from ${reqs#"$ROOT"/}"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"
    echo "$want" >"$stamp"
}

# --- the browser driver's node modules (tests/e2e/browser) -------------------------
# Installed from its package-lock.json, again only when the lock file changes.
BROWSER="$ROOT/tests/e2e/browser"
want="$(sha256sum "$BROWSER/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$BROWSER/node_modules/.lock.sha256" && "$(cat "$BROWSER/node_modules/.lock.sha256")" == "$want" ]]; then
    step "reusing tests/e2e/browser/node_modules (package-lock.json unchanged)"
else
    step "installing tests/e2e/browser/node_modules (npm ci)"
    (cd "$BROWSER" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$BROWSER/node_modules/.lock.sha256"
fi

VENV="$ROOT/.venv"
make_venv "$VENV" "$ROOT/tests/e2e/requirements.txt"
for side in jaeger zipkin-proto dd; do
    make_venv "$ROOT/.venv-$side" "$ROOT/tests/e2e/requirements-$side.txt"
    # WEFT_JAEGER_PYTHON, WEFT_ZIPKIN_PROTO_PYTHON, WEFT_DD_PYTHON (tests/e2e/harness.py)
    var="WEFT_$(echo "$side" | tr 'a-z-' 'A-Z_')_PYTHON"
    export "$var=${!var:-$ROOT/.venv-$side/bin/python}"
done

# --- Rust ----------------------------------------------------------------------
step "cargo fmt --all -- --check"
cargo fmt --all -- --check || fail "formatting differs: run cargo fmt --all"

step "scripts/check-probes.sh"
scripts/check-probes.sh || fail "the prebuilt eBPF object is stale: run scripts/build-probes.sh"

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

# --- fuzz smoke ------------------------------------------------------------------
# Every cargo-fuzz target builds, replays its seed corpus (fuzz/seeds) and fuzzes for a
# couple of seconds. Long campaigns: scripts/fuzz (docs/reliability.md).
if [[ "${SKIP_FUZZ:-0}" == 1 ]]; then
    step "SKIP_FUZZ=1: fuzz smoke skipped"
else
    step "scripts/fuzz --smoke --time 2"
    scripts/fuzz --smoke --time 2 || fail "a fuzz target failed to build or crashed on its seeds"
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
