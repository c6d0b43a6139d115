"""The ebpf receiver's config limits, checked by `weft validate` (no kernel, no root
needed): out-of-range values exit 2 naming the key and its place in the file; the
limits themselves pass."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import weft_binary

PAGE = os.sysconf("SC_PAGE_SIZE")


def validate(tmp_path: Path, ebpf: dict) -> subprocess.CompletedProcess:
    cfg = tmp_path / "ebpf.yaml"
    config = {
        "receivers": {"ebpf": {"include": {"ports": [8080]}, **ebpf}},
        "exporters": {"file": {"path": str(tmp_path / "out.jsonl")}},
        "service": {"pipelines": {"traces": {"receivers": ["ebpf"], "exporters": ["file"]}}},
    }
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run(
        [str(weft_binary()), "validate", "--config", str(cfg)],
        capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize(
    "key,value",
    [("payload_bytes", 0), ("payload_bytes", 16385), ("payload_bytes", 20000),
     ("ring_buffer_bytes", PAGE + 1000), ("ring_buffer_bytes", PAGE // 2)],
)
def test_validate_rejects_out_of_range(tmp_path, key, value):
    proc = validate(tmp_path, {key: value})
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    assert f"receivers::ebpf::{key}" in proc.stderr, proc.stderr
    assert "line " in proc.stderr and "column " in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "ebpf",
    [{"payload_bytes": 1}, {"payload_bytes": 16384}, {"ring_buffer_bytes": PAGE},
     {"ring_buffer_bytes": 8388608, "optional": True}],
)
def test_validate_accepts_limits(tmp_path, ebpf):
    proc = validate(tmp_path, ebpf)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
