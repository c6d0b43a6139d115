"""Spans of the ebpf receiver as the file exporter wrote them, for the protocol tests
(test_ebpf_db.py, test_ebpf_dns.py): read incrementally, attributes as a dict."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from harness import wait_until
from otlp_support import read_jsonl_traces

SERVER, CLIENT = 2, 3
SETTLE = 0.8


@dataclass
class Sp:
    kind: int
    name: str
    start: int
    end: int
    status: int
    message: str
    attrs: dict
    resource: dict
    trace_id: bytes
    span_id: bytes
    parent: bytes

    def __getitem__(self, key):
        return self.attrs[key]

    def get(self, key, default=None):
        return self.attrs.get(key, default)

    def short(self) -> str:
        a = self.attrs
        kind = {SERVER: "SERVER", CLIENT: "CLIENT"}.get(self.kind, str(self.kind))
        text = a.get("db.query.text", a.get("dns.question.name"))
        return (f"{kind} {self.name} {text!r} status={self.status} "
                f"code={a.get('db.response.status_code')} pid={a.get('process.pid')} "
                f"local={a.get('network.local.port')} peer={a.get('network.peer.port')}")


def _value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def _kv(kvs) -> dict:
    return {kv.key: _value(kv.value) for kv in kvs}


class Output:
    """The file exporter's lines, read incrementally."""

    def __init__(self, path: Path):
        self.path = path
        self._offset = 0
        self._spans: list[Sp] = []

    def spans(self) -> list[Sp]:
        self._offset, reqs = read_jsonl_traces(self.path, self._offset)
        for req in reqs:
            for rs in req.resource_spans:
                res = _kv(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self._spans.append(Sp(s.kind, s.name, s.start_time_unix_nano, s.end_time_unix_nano,
                                              s.status.code, s.status.message, _kv(s.attributes), res,
                                              s.trace_id, s.span_id, s.parent_span_id))
        return list(self._spans)

    def of_clients(self, ports: set[int], marker: str = "db.system.name",
                   server_port: int | None = None) -> list[Sp]:
        """Spans carrying `marker` whose client end is on one of `ports` (and, when
        given, whose server is on `server_port`: a client port freed by one test's
        connection may be reused by the next one's, to another server)."""
        return [s for s in self.spans()
                if s.get(marker) and s.get("client.port") in ports
                and (server_port is None or s.get("server.port") == server_port)]

    def wait(self, ports: set[int], count: int, timeout: float = 20.0,
             marker: str = "db.system.name", server_port: int | None = None) -> list[Sp]:
        wait_until(lambda: len(self.of_clients(ports, marker, server_port)) >= count, timeout, 0.1)
        time.sleep(SETTLE)
        got = self.of_clients(ports, marker, server_port)
        assert len(got) == count, (f"{len(got)} spans for client ports {sorted(ports)}, want {count}:\n"
                                   + "\n".join(s.short() for s in sorted(got, key=lambda s: s.start)))
        return got
