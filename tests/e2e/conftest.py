"""Fixtures for weft's end-to-end tests: free loopback ports, the weft process, and
the OTLP peers (gRPC and HTTP sinks). The machinery lives in harness.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import SUMMARY_LINES, Weft, free_port, weft_binary  # noqa: E402
from peers.otlp_grpc_sink import OtlpGrpcSink  # noqa: E402
from peers.otlp_http_sink import OtlpHttpSink  # noqa: E402


@pytest.fixture
def port():
    """Call to get a fresh free loopback port: `p = port()`."""
    return free_port


@pytest.fixture
def ports():
    """Call with a count: `a, b = ports(2)`."""
    return lambda n: [free_port() for _ in range(n)]


# ---------------------------------------------------------------------------
# Peers


@pytest.fixture
def grpc_sink():
    """Factory: `sink = grpc_sink()` (started) or `grpc_sink(port, start=False)`."""
    sinks: list[OtlpGrpcSink] = []

    def make(port: int | None = None, start: bool = True) -> OtlpGrpcSink:
        sink = OtlpGrpcSink(port or free_port())
        sinks.append(sink)
        return sink.start() if start else sink

    yield make
    for s in sinks:
        s.stop()


@pytest.fixture
def http_sink():
    """Factory: `sink = http_sink()` (started)."""
    sinks: list[OtlpHttpSink] = []

    def make(port: int | None = None, start: bool = True) -> OtlpHttpSink:
        sink = OtlpHttpSink(port or free_port())
        sinks.append(sink)
        return sink.start() if start else sink

    yield make
    for s in sinks:
        s.stop()


# ---------------------------------------------------------------------------
# weft


@pytest.fixture
def weft(tmp_path: Path, grpc_sink, http_sink):
    """Factory: `w = weft(config)` starts weft with `config` (a dict) and waits until
    it is ready. At teardown every instance still running gets SIGTERM and must exit 0.

    It depends on the sink fixtures so that weft stops (and flushes) before the sinks
    do: a sink that vanished first would leave weft retrying through its shutdown."""
    binary = weft_binary()
    started: list[Weft] = []

    def start(config: dict, name: str | None = None, extra_args=None) -> Weft:
        w = Weft(binary, tmp_path, name or f"weft{len(started)}")
        started.append(w)
        return w.start(config, extra_args)

    yield start

    failures = []
    for w in started:
        if w.proc is None or w.killed:
            continue
        try:
            code = w.stop()
        except AssertionError as e:
            failures.append(str(e))
            continue
        if code != 0:
            failures.append(f"weft {w.name} exited with {code}, want 0\n{w.log_tail()}")
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def pytest_terminal_summary(terminalreporter):
    """Figures tests report for the record (autotracing completeness per topology),
    shown whether or not output capture is on."""
    if SUMMARY_LINES:
        terminalreporter.section("measured")
        for line in SUMMARY_LINES:
            terminalreporter.write_line(line)

