"""The harness of weft's end-to-end tests: free loopback ports, the weft process
and the SDK app runner.

Every weft started here gets its own health_check and self-metrics endpoints on free
loopback ports, and every receiver in a test config names its own free port, so
tests never collide with each other or with anything else on the machine.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parent.parent
sys.path.insert(0, str(E2E_DIR))

def side_python(name: str) -> str:
    """The Python of a side venv for clients whose pins clash with .venv (protobuf 3,
    an old SDK...): $WEFT_<NAME>_PYTHON when set (scripts/test.sh sets it), else
    .venv-<name> built from tests/e2e/requirements-<name>.txt, rebuilt only when that
    file changes. A file lock keeps parallel test processes from building it twice."""
    import fcntl
    import hashlib
    import shutil

    env_var = f"WEFT_{name.upper().replace('-', '_')}_PYTHON"
    given = os.environ.get(env_var)
    if given:
        return given
    reqs = E2E_DIR / f"requirements-{name}.txt"
    venv = REPO_ROOT / f".venv-{name}"
    want = hashlib.sha256(reqs.read_bytes()).hexdigest()
    stamp = venv / ".requirements.sha256"
    python = venv / "bin" / "python"
    with open(REPO_ROOT / f".venv-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (python.exists() and stamp.exists() and stamp.read_text().strip() == want):
            shutil.rmtree(venv, ignore_errors=True)
            base = getattr(sys, "_base_executable", None) or sys.executable
            subprocess.run([base, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "-r", str(reqs)],
                check=True,
                timeout=600,
            )
            stamp.write_text(want + "\n")
    return str(python)


from otlp_support import parse_prometheus  # noqa: E402

STARTUP_TIMEOUT = 30.0
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SHUTDOWN_TIMEOUT = 30.0

# ---------------------------------------------------------------------------
# Ports

_handed_out: set[int] = set()


# Lines a test wants in the run's summary (conftest prints them at the end).
SUMMARY_LINES: list[str] = []


def ebpf_unavailable() -> str | None:
    """Why the ebpf receiver's probes cannot load here (one sentence), or None."""
    if os.geteuid() != 0:
        return "the ebpf receiver needs root to load its probes; these tests are not running as root"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "the kernel has no BTF (/sys/kernel/btf/vmlinux is missing); the ebpf probes need it"
    return None


def free_port() -> int:
    """A loopback TCP port nobody listens on, never handed out twice in one run."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port found")


# ---------------------------------------------------------------------------
# weft


def weft_binary() -> Path:
    path = Path(os.environ.get("WEFT_BIN") or REPO_ROOT / "target" / "debug" / "weft")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"weft binary not found at {path}: run `cargo build` first or set WEFT_BIN",
            pytrace=False,
        )
    return path


def otlp_receiver(grpc_port: int | None = None, http_port: int | None = None, **http_extra):
    """An otlp receiver config with explicit loopback endpoints."""
    protocols = {}
    if grpc_port is not None:
        protocols["grpc"] = {"endpoint": f"127.0.0.1:{grpc_port}"}
    if http_port is not None:
        protocols["http"] = {"endpoint": f"127.0.0.1:{http_port}", **http_extra}
    return {"protocols": protocols}


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Weft:
    """One weft process started from a config dict written as YAML."""

    def __init__(self, binary: Path, workdir: Path, name: str):
        self.binary = binary
        self.workdir = workdir
        self.name = name
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.exit_code: int | None = None
        self.killed = False
        self.config: dict = {}

    # -- config ------------------------------------------------------------

    def render(self, config: dict) -> str:
        """The config with this instance's health_check and metrics endpoints added."""
        cfg = copy.deepcopy(config)
        ext = cfg.setdefault("extensions", {}) or {}
        cfg["extensions"] = ext
        ext.setdefault("health_check", {"endpoint": f"127.0.0.1:{self.health_port}"})
        service = cfg.setdefault("service", {})
        exts = service.setdefault("extensions", [])
        if "health_check" not in exts:
            exts.append("health_check")
        service.setdefault("telemetry", {}).setdefault("metrics", {})[
            "address"
        ] = f"127.0.0.1:{self.metrics_port}"
        return yaml.safe_dump(cfg, sort_keys=False)

    def write_config(self, config: dict) -> None:
        """Write (or rewrite, for a reload) the config file atomically."""
        self.config = copy.deepcopy(config)
        self.write_raw(self.render(config))

    def write_raw(self, text: str) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    def receiver_ports(self) -> list[int]:
        out = []
        for rcv in (self.config.get("receivers") or {}).values():
            for proto in ((rcv or {}).get("protocols") or {}).values():
                ep = (proto or {}).get("endpoint", "")
                if ep.startswith("127.0.0.1:"):
                    out.append(int(ep.rsplit(":", 1)[1]))
        return out

    # -- process -----------------------------------------------------------

    def start(self, config: dict, extra_args: list[str] | None = None) -> "Weft":
        self.write_config(config)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "--config", str(self.config_path), *(extra_args or [])],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        self.wait_ready()
        return self

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def health_status(self) -> int | None:
        try:
            return requests.get(self.health_url, timeout=2).status_code
        except requests.RequestException:
            return None

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Until the health check answers 200, or the metrics endpoint answers and
        every receiver port accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(
                    f"weft exited with {self.proc.returncode} during startup\n{self.log_tail()}"
                )
            if self.health_status() == 200:
                return
            try:
                metrics_up = requests.get(self.metrics_url, timeout=1).status_code == 200
            except requests.RequestException:
                metrics_up = False
            if metrics_up and all(_listening(p) for p in self.receiver_ports()):
                return
            time.sleep(0.05)
        raise AssertionError(f"weft not ready after {timeout}s\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        assert self.alive(), f"weft is not running\n{self.log_tail()}"
        self.proc.send_signal(sig)

    def kill(self) -> int:
        """SIGKILL this process (only this pid), as a crash would end it; return
        its exit status. The fixture's teardown then leaves it alone."""
        assert self.alive(), f"weft is not running\n{self.log_tail()}"
        self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait(timeout=10)
        self._log.close()
        self.killed = True
        return code

    def stop(self, timeout: float = SHUTDOWN_TIMEOUT) -> int:
        """SIGTERM this process (only this pid) and return its exit code."""
        if self.proc is None:
            return 0
        if self.exit_code is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.exit_code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._log.close()
                raise AssertionError(
                    f"weft did not exit within {timeout}s of SIGTERM\n{self.log_tail()}"
                )
            self._log.close()
        return self.exit_code

    # -- observation -------------------------------------------------------

    def log_text(self) -> str:
        """weft's stdout and stderr so far, colour codes removed."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return _ANSI.sub("", text)

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_text().splitlines()[-n:]
        return "---- weft log (tail) ----\n" + "\n".join(lines)

    def metrics_text(self) -> str:
        r = requests.get(self.metrics_url, timeout=5)
        assert r.status_code == 200, f"GET {self.metrics_url} -> {r.status_code}"
        return r.text

    def metrics(self) -> dict:
        return parse_prometheus(self.metrics_text())


def loadgen_binary() -> Path:
    """weft-loadgen: $WEFT_LOADGEN, else the workspace's debug build."""
    path = Path(os.environ.get("WEFT_LOADGEN") or REPO_ROOT / "target" / "debug" / "weft-loadgen")
    if not path.is_file():
        pytest.fail(f"weft-loadgen not found at {path}: run `cargo build --workspace`", pytrace=False)
    return path


def run_app(*args: str, timeout: float = 60.0, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """Run tests/e2e/apps/otel_app.py with this interpreter (`env` adds variables,
    e.g. OTEL_EXPORTER_OTLP_HEADERS)."""
    return subprocess.run(
        [sys.executable, str(E2E_DIR / "apps" / "otel_app.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def send_three_tier(grpc_port: int) -> dict:
    """Run tests/e2e/apps/three_tier_app.py against an OTLP/gRPC receiver on loopback;
    return what it printed (the 3-level trace's ids and the error trace's id) after
    checking that every export succeeded."""
    import json

    r = subprocess.run(
        [sys.executable, str(E2E_DIR / "apps" / "three_tier_app.py"), f"127.0.0.1:{grpc_port}"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["result"] == "SUCCESS", out
    return out


def app_result(proc: subprocess.CompletedProcess) -> dict:
    """The JSON the SDK app printed, after checking that its export succeeded."""
    import json

    assert proc.returncode == 0, (
        f"otel_app exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["result"] == "SUCCESS", out
    return out


def assert_app_spans(out: dict, rows) -> None:
    """Exact comparison of received span rows with what the SDK app sent: the ids it
    printed, and every field of every span, resource and scope."""
    import base64

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from otlp_support import assert_rows_equal, flatten_spans

    want = flatten_spans([ExportTraceServiceRequest.FromString(base64.b64decode(out["request"]))])
    by_id = {r.item.span_id.hex(): r.item for r in rows}
    assert len(by_id) == len(rows), "duplicate span ids received"
    assert sorted(by_id) == sorted(s["span_id"] for s in out["spans"])
    kinds = {"SERVER": 2, "CLIENT": 3, "INTERNAL": 1}
    for s in out["spans"]:
        span = by_id[s["span_id"]]
        assert span.trace_id.hex() == out["trace_id"]
        assert span.parent_span_id.hex() == s["parent_span_id"]
        assert span.name == s["name"]
        assert span.kind == kinds[s["kind"]]
    assert_rows_equal(rows, want)


def wait_for_metric(w: Weft, name: str, want: float, timeout: float = 10.0, **labels) -> float:
    """Poll weft's /metrics until the summed series equals `want`; return the last value
    seen (the caller asserts, so a mismatch shows the real number)."""
    from otlp_support import metric_sum

    deadline = time.monotonic() + timeout
    while True:
        value = metric_sum(w.metrics(), name, **labels)
        if value == want or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class SpanSender:
    """A thread that sends ExportTraceServiceRequests of `per_request` spans with
    known, increasing sequence numbers to an OTLP/gRPC receiver until stopped.

    `acked` holds the sequence numbers of every span weft answered OK for; a refused
    request is retried with the same spans (so ids stay unique) and recorded in
    `errors`."""

    def __init__(self, endpoint: str, per_request: int = 5, interval: float = 0.005,
                 run: int = 0, retries: int = 100):
        import threading

        self.endpoint = endpoint
        self.per_request = per_request
        self.interval = interval
        self.run_id = run
        self.retries = retries
        self.acked: list[int] = []
        self.errors: list[tuple[int, str, str]] = []
        self.gave_up: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "SpanSender":
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "sender thread did not stop"

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def acked_snapshot(self) -> list[int]:
        with self._lock:
            return list(self.acked)

    def _run(self) -> None:
        import grpc

        from otlp_support import OtlpGrpcClient, make_trace_request

        seq = 0
        with OtlpGrpcClient(self.endpoint) as client:
            while not self._stop.is_set():
                nums = list(range(seq, seq + self.per_request))
                seq += self.per_request
                req = make_trace_request(nums, self.run_id)
                for _ in range(self.retries):
                    code, details = client.export(req, timeout=5)
                    if code == grpc.StatusCode.OK:
                        with self._lock:
                            self.acked.extend(nums)
                        break
                    self.errors.append((nums[0], code.name, details))
                    time.sleep(0.05)
                else:
                    self.gave_up.extend(nums)
                time.sleep(self.interval)
