"""Starting the ebpf receiver where the machine is not ready for it.

Without privilege (weft run as uid 65534): not optional, exit 2 with one sentence
saying what is missing; optional, one warning and the rest of the pipeline serves as
usual. Without tracefs mounted: weft mounts it itself and captures.

Needs root (to start weft as another user, and to unmount tracefs)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests
import yaml

from harness import free_port, wait_until, weft_binary

NOBODY = 65534
SENTENCE = (
    "weft: cannot start the pipelines: cannot start receiver ebpf: ebpf receiver: "
    "needs root, or the CAP_BPF and CAP_PERFMON capabilities, to load eBPF programs "
    f"(running as uid {NOBODY} without them)"
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run weft as another user and to unmount tracefs")


@pytest.fixture
def shared_dir():
    # pytest's tmp_path lives under a root-only directory; the other user needs its own.
    d = Path(tempfile.mkdtemp(prefix="weft-unpriv-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write(d: Path, config: dict) -> Path:
    p = d / "weft.yaml"
    p.write_text(yaml.safe_dump(config, sort_keys=False))
    p.chmod(0o644)
    return p


def test_not_optional_exits_2_with_one_sentence(shared_dir):
    cfg = write(shared_dir, {
        "receivers": {"ebpf": {}},
        "exporters": {"debug": {}},
        "service": {
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {"traces": {"receivers": ["ebpf"], "exporters": ["debug"]}},
        },
    })
    proc = subprocess.run(
        [str(weft_binary()), "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, user=NOBODY, cwd=shared_dir,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("weft: ")]
    assert lines == [SENTENCE], proc.stderr


def test_optional_warns_and_the_rest_runs(shared_dir):
    http_port, health_port = free_port(), free_port()
    out = shared_dir / "spans.jsonl"
    cfg = write(shared_dir, {
        "receivers": {
            "ebpf": {"optional": True},
            "otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}},
        },
        "exporters": {"file": {"path": str(out)}},
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health_port}"}},
        "service": {
            "extensions": ["health_check"],
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {"traces": {"receivers": ["ebpf", "otlp"], "exporters": ["file"]}},
        },
    })
    log = shared_dir / "weft.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [str(weft_binary()), "--config", str(cfg)],
            stdout=logf, stderr=subprocess.STDOUT, user=NOBODY, cwd=shared_dir,
        )
        try:
            def healthy() -> bool:
                try:
                    return requests.get(f"http://127.0.0.1:{health_port}/", timeout=1).status_code == 200
                except requests.RequestException:
                    return False

            assert wait_until(healthy, 30), log.read_text()
            span = {
                "traceId": "5b8efff798038103d269b633813fc60c",
                "spanId": "eee19b7ec3c1b174",
                "name": "after-ebpf-warning",
                "kind": 2,
                "startTimeUnixNano": "1700000000000000000",
                "endTimeUnixNano": "1700000000001000000",
            }
            body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
            r = requests.post(
                f"http://127.0.0.1:{http_port}/v1/traces", data=json.dumps(body),
                headers={"Content-Type": "application/json"}, timeout=10,
            )
            assert r.status_code == 200, r.text
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
    assert code == 0, log.read_text()
    text = log.read_text()
    warnings = [l for l in text.splitlines() if "eBPF capture is off" in l]
    assert len(warnings) == 1, text
    assert "needs root, or the CAP_BPF and CAP_PERFMON capabilities" in warnings[0]
    assert "WARN" in warnings[0]
    got = [
        s
        for line in out.read_text().splitlines()
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    ]
    assert [(s["traceId"], s["spanId"], s["name"]) for s in got] == [
        ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "after-ebpf-warning")
    ]


TRACEFS = "/sys/kernel/tracing"


def tracefs_mounted() -> bool:
    with open("/proc/self/mounts") as f:
        return any(l.split()[1] == TRACEFS and l.split()[2] == "tracefs" for l in f)


@pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").exists(), reason="kernel has no BTF")
def test_tracefs_is_mounted_when_absent(shared_dir):
    if tracefs_mounted():
        subprocess.run(["umount", TRACEFS], check=True)
    assert not tracefs_mounted()
    health_port, metrics_port = free_port(), free_port()
    cfg = write(shared_dir, {
        "receivers": {"ebpf": {"include": {"ports": [free_port()]}}},
        "exporters": {"debug": {}},
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health_port}"}},
        "service": {
            "extensions": ["health_check"],
            "telemetry": {"metrics": {"address": f"127.0.0.1:{metrics_port}"}},
            "pipelines": {"traces": {"receivers": ["ebpf"], "exporters": ["debug"]}},
        },
    })
    log = shared_dir / "weft.log"
    try:
        with open(log, "wb") as logf:
            proc = subprocess.Popen(
                [str(weft_binary()), "--config", str(cfg)],
                stdout=logf, stderr=subprocess.STDOUT, cwd=shared_dir,
            )
            try:
                def healthy() -> bool:
                    try:
                        return requests.get(f"http://127.0.0.1:{health_port}/", timeout=1).status_code == 200
                    except requests.RequestException:
                        return False

                assert wait_until(healthy, 30), log.read_text()
                metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
                assert 'weft_ebpf_active{receiver="ebpf"} 1' in metrics.splitlines(), metrics
            finally:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(30)
        assert code == 0, log.read_text()
        assert tracefs_mounted()
        assert f"mounted tracefs at {TRACEFS}" in log.read_text()
    finally:
        if not tracefs_mounted():
            subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=False)
