"""The ebpf receiver end to end: uninstrumented processes talk HTTP/1.x over loopback
and weft turns their socket syscalls into spans, written by the file exporter and
read back here.

The servers are tests/e2e/apps/ebpf_http_server.py (Python stdlib, threaded) and
nginx serving a file; the clients are curl, Python `requests` (keep-alive and not),
http.client threads and raw sockets (pipelining, garbage, binary protocols). For
every request the test finds exactly one SERVER span and one CLIENT span and checks
them field by field: method, path, status, span status, kind, every attribute key,
mirrored socket tuples, equal TCP sequence numbers on both sides, pids, thread ids,
resource, and start/end inside the wall time measured around the request.

One weft (module scope) watches a pool of ports handed out to the tests one by one,
so each test reads only the spans of its own ports. The ring-buffer test runs its
own weft with a one-page ring.

The probes need root and BTF; without either, this module skips with one line naming
what is missing. nginx and curl must be installed. The receiver's config limits,
which need no kernel, are checked in test_ebpf_config.py.
"""

from __future__ import annotations

import http.client
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from harness import ebpf_unavailable, E2E_DIR, Weft, free_port, wait_until, weft_binary
from otlp_support import metric_series, metric_sum, read_jsonl_traces

SERVER_APP = E2E_DIR / "apps" / "ebpf_http_server.py"
sys.path.insert(0, str(E2E_DIR / "apps"))
from ebpf_http_server import BIG_BODY_BYTES, CHUNKS  # noqa: E402

SERVER, CLIENT = 2, 3
UNSET, ERROR = 0, 2
# Span times come from CLOCK_MONOTONIC converted to wall time; the conversion may be
# off by this much against time.time_ns() taken around a request.
TOLERANCE_NS = 5_000_000
SPAN_WAIT = 20.0
# After the expected number of spans arrived, wait this long for any extra one
# (well past the file exporter's flush interval).
SETTLE = 0.6
PORT_POOL = 24
U32 = 1 << 32

# Every attribute an ebpf span carries, whatever the request.
BASE_KEYS = frozenset(
    {
        "http.request.method",
        "url.path",
        "http.response.status_code",
        "server.address",
        "server.port",
        "client.address",
        "client.port",
        "network.peer.address",
        "network.peer.port",
        "network.local.address",
        "network.local.port",
        "network.type",
        "network.transport",
        "process.pid",
        "thread.id",
        "weft.tcp.req_seq",
        "weft.tcp.resp_seq",
        "weft.syscall_trace_id.req",
        "weft.syscall_trace_id.resp",
        "weft.socket.id",
    }
)

NGINX_SERVICE = "static-files"
LOOPBACK = {"ipv4": "127.0.0.1", "ipv6": "::1"}

# ---------------------------------------------------------------------------
# Skipping: only where the machine lacks what the probes need.


if ebpf_unavailable():
    pytest.skip(ebpf_unavailable(), allow_module_level=True)


# ---------------------------------------------------------------------------
# Spans read back from the file exporter


@dataclass
class Sp:
    kind: int
    name: str
    start: int
    end: int
    status: int
    attrs: dict
    resource: dict
    scope: str
    trace_id: bytes
    span_id: bytes
    parent: bytes

    def __getitem__(self, key):
        return self.attrs[key]

    def short(self) -> str:
        a = self.attrs
        kind = {SERVER: "SERVER", CLIENT: "CLIENT"}.get(self.kind, str(self.kind))
        return (
            f"{kind} {self.name} {a.get('url.path')} {a.get('http.response.status_code')} "
            f"pid={a.get('process.pid')} comm={self.resource.get('process.executable.name')} "
            f"local={a.get('network.local.address')}:{a.get('network.local.port')} "
            f"peer={a.get('network.peer.address')}:{a.get('network.peer.port')}"
        )


def any_value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def kv_dict(kvs) -> dict:
    out = {}
    for kv in kvs:
        assert kv.key not in out, f"attribute {kv.key} twice"
        out[kv.key] = any_value(kv.value)
    return out


class Output:
    """The file exporter's OTLP/JSON lines, read incrementally (only complete lines)."""

    def __init__(self, path: Path, weft: Weft):
        self.path = path
        self.weft = weft
        self._offset = 0
        self._spans: list[Sp] = []

    def spans(self) -> list[Sp]:
        self._offset, requests = read_jsonl_traces(self.path, self._offset)
        for req in requests:
            for rs in req.resource_spans:
                resource = kv_dict(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self._spans.append(
                            Sp(
                                kind=s.kind,
                                name=s.name,
                                start=s.start_time_unix_nano,
                                end=s.end_time_unix_nano,
                                status=s.status.code,
                                attrs=kv_dict(s.attributes),
                                resource=resource,
                                scope=ss.scope.name,
                                trace_id=s.trace_id,
                                span_id=s.span_id,
                                parent=s.parent_span_id,
                            )
                        )
        return list(self._spans)

    def for_ports(self, *ports: int) -> list[Sp]:
        """Spans of connections to these server ports: by the server end of the socket,
        or by what the span itself claims as server.port."""
        out = []
        for s in self.spans():
            a = s.attrs
            if (
                a.get("server.port") in ports
                or (s.kind == SERVER and a.get("network.local.port") in ports)
                or (s.kind == CLIENT and a.get("network.peer.port") in ports)
            ):
                out.append(s)
        return out

    def wait(self, count: int, *ports: int, timeout: float = SPAN_WAIT) -> list[Sp]:
        """Exactly `count` spans for `ports`, after a bounded wait and a settle time in
        which no extra span may show up."""
        wait_until(lambda: len(self.for_ports(*ports)) >= count, timeout, 0.1)
        time.sleep(SETTLE)
        got = self.for_ports(*ports)
        assert len(got) == count, (
            f"{len(got)} spans for port(s) {ports}, want {count}:\n"
            + "\n".join(s.short() for s in got)
            + "\n"
            + self.weft.log_tail()
        )
        for s in got:
            assert s.scope == "weft.ebpf", s.short()
            assert len(s.trace_id) == 16 and any(s.trace_id), s.short()
            assert len(s.span_id) == 8 and any(s.span_id), s.short()
            assert s.parent == b"", f"ebpf spans have no parent: {s.short()}"
            assert s.kind in (SERVER, CLIENT), s.short()
        assert len({s.trace_id for s in got}) == count, "trace ids are not fresh per span"
        assert len({s.span_id for s in got}) == count, "span ids are not unique"
        return got


def by_path(spans: list[Sp], want_paths) -> dict[str, tuple[Sp, Sp]]:
    """One (SERVER, CLIENT) pair per url.path, and exactly the wanted paths."""
    groups: dict[str, tuple[list, list]] = {}
    for s in spans:
        groups.setdefault(s.attrs.get("url.path"), ([], []))[0 if s.kind == SERVER else 1].append(s)
    listing = "\n".join(s.short() for s in spans)
    assert sorted(groups, key=str) == sorted(want_paths), f"paths differ:\n{listing}"
    out = {}
    for path, (srv, cli) in groups.items():
        assert len(srv) == 1 and len(cli) == 1, (
            f"{path}: {len(srv)} SERVER, {len(cli)} CLIENT spans\n{listing}"
        )
        out[path] = (srv[0], cli[0])
    return out


# ---------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class Proc:
    pid: int
    comm: str

    @staticmethod
    def of(pid: int) -> "Proc":
        return Proc(pid, Path(f"/proc/{pid}/comm").read_text().strip())


def this_process() -> Proc:
    return Proc.of(os.getpid())


@dataclass
class Server:
    proc: subprocess.Popen
    host: str
    port: int
    info: Proc

    @property
    def family(self) -> str:
        return "ipv6" if ":" in self.host else "ipv4"

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def http_server(tmp_path):
    """Factory: `srv = http_server(port, host="127.0.0.1", *extra_args)`; stopped (by
    pid) at teardown."""
    started: list[subprocess.Popen] = []

    def start(port: int, host: str = "127.0.0.1", *args: str) -> Server:
        log = open(tmp_path / f"server-{port}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, str(SERVER_APP), "--host", host, "--port", str(port), *args],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        started.append(proc)
        line = proc.stdout.readline().decode().strip()
        assert line == str(port), (
            f"ebpf_http_server did not start on {host}:{port} (printed {line!r})\n"
            + (tmp_path / f"server-{port}.log").read_text()
        )
        return Server(proc, host, port, Proc.of(proc.pid))

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Seen:
    """What a client saw of one request, and the wall time around it."""

    t0: int
    t1: int
    status: int
    headers: dict
    body: bytes
    tid: int  # the client thread that wrote the request

    @property
    def window(self) -> tuple[int, int]:
        return (self.t0, self.t1)

    @property
    def server_tid(self) -> int:
        return int(self.headers["x-thread-id"])


def curl_bin() -> str:
    path = shutil.which("curl")
    if not path:
        pytest.fail("curl is not installed (apt-get install curl)", pytrace=False)
    return path


def curl(url: str, *args: str) -> tuple[Seen, Proc]:
    """One curl run; the comm checked from /proc while it is known to be curl's."""
    t0 = time.time_ns()
    proc = subprocess.Popen(
        [curl_bin(), "-sS", "-i", "--max-time", "10", *args, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    out, err = proc.communicate(timeout=20)
    t1 = time.time_ns()
    assert proc.returncode == 0, f"curl {url} exited {proc.returncode}: {err.decode()}"
    head, _, body = out.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    return Seen(t0, t1, status, headers, body, proc.pid), Proc(proc.pid, "curl")


def parse_head(head: bytes) -> tuple[int, dict]:
    lines = head.decode("iso-8859-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def seen_from_requests(t0: int, r: requests.Response, t1: int) -> Seen:
    return Seen(
        t0, t1, r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content,
        threading.get_native_id(),
    )


@dataclass
class RawResponse:
    raw: bytes
    status: int
    headers: dict
    body: bytes


def read_responses(sock: socket.socket, n: int) -> list[RawResponse]:
    """n Content-Length framed responses, byte-exact."""
    buf, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            assert data, f"connection closed after {len(out)} responses"
            buf += data
        head, rest = buf.split(b"\r\n\r\n", 1)
        status, headers = parse_head(head)
        length = int(headers["content-length"])
        while len(rest) < length:
            data = sock.recv(65536)
            assert data, "connection closed mid-body"
            rest += data
        out.append(RawResponse(head + b"\r\n\r\n" + rest[:length], status, headers, rest[:length]))
        buf = rest[length:]
    assert buf == b"", f"unexpected bytes after {n} responses: {buf[:80]!r}"
    return out


def drain(sock: socket.socket) -> bytes:
    """Everything until the peer closes; a reset counts as closed."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


# ---------------------------------------------------------------------------
# The shared weft


def ebpf_config(ports: list[int], out: Path, **ebpf) -> dict:
    return {
        "receivers": {"ebpf": {"include": {"ports": ports}, **ebpf}},
        "exporters": {"file": {"path": str(out), "flush_interval": "100ms"}},
        "service": {"pipelines": {"traces": {"receivers": ["ebpf"], "exporters": ["file"]}}},
    }


def wait_capturing(w: Weft) -> None:
    """Until the health check answers 200, which it does once every receiver started,
    the probes included. The harness's readiness also accepts an answering metrics
    endpoint when no receiver has a port to probe, which for this receiver comes
    before its probes are attached."""
    assert wait_until(lambda: w.health_status() == 200, 30), f"health check never 200\n{w.log_tail()}"


class Env:
    def __init__(self, weft: Weft, out: Output, ports: list[int]):
        self.weft = weft
        self.out = out
        self._ports = list(ports)

    def port(self) -> int:
        assert self._ports, "the module's port pool is used up: raise PORT_POOL"
        return self._ports.pop(0)

    def metric(self, name: str, **labels) -> float:
        return metric_sum(self.weft.metrics(), name, receiver="ebpf", **labels)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ebpf")
    ports = [free_port() for _ in range(PORT_POOL)]
    out = workdir / "spans.jsonl"
    w = Weft(weft_binary(), workdir, "weft-ebpf")
    config = ebpf_config(
        ports,
        out,
        # X-Api-Key is also named as a request-id header: redaction must win.
        x_request_id_headers=["X-Api-Key", "X-Request-ID"],
        redact_headers=["X-Api-Key"],
        service_names={"nginx": NGINX_SERVICE},
    )
    try:
        w.start(config)
        wait_capturing(w)
    except BaseException:
        if w.alive():
            w.proc.kill()
            w.proc.wait()
        raise
    yield Env(w, Output(out, w), ports)
    code = w.stop()
    assert code == 0, f"weft exited with {code}, want 0\n{w.log_tail()}"


# ---------------------------------------------------------------------------
# The checks every request gets


def span_status(kind: int, code: int) -> int:
    if code >= 500 or (kind == CLIENT and code >= 400):
        return ERROR
    return UNSET


def check_pair(
    server: Sp,
    client: Sp,
    *,
    method: str,
    path: str,
    status: int,
    srv: Proc,
    cli: Proc,
    server_tid: int,
    client_tid: int,
    window: tuple[int, int],
    server_port: int,
    family: str = "ipv4",
    server_address: str | None = None,
    server_service: str | None = None,
    extra: dict | None = None,
    truncated_ok: bool = False,
) -> None:
    """Everything one request's SERVER and CLIENT spans must say."""
    ip = LOOPBACK[family]
    ctx = f"\n  {server.short()}\n  {client.short()}"
    assert (server.kind, client.kind) == (SERVER, CLIENT), ctx
    for s in (server, client):
        keys = set(BASE_KEYS) | set(extra or {})
        if truncated_ok and "weft.truncated" in s.attrs:
            assert s.attrs["weft.truncated"] is True, ctx
            keys.add("weft.truncated")
        assert set(s.attrs) == keys, f"attribute keys differ: {sorted(set(s.attrs) ^ keys)}{ctx}"
        assert s.name == method, ctx
        assert s["http.request.method"] == method, ctx
        assert s["url.path"] == path, ctx
        assert s["http.response.status_code"] == status, ctx
        assert s["server.address"] == (server_address or ip), ctx
        assert s["server.port"] == server_port, ctx
        assert s["client.address"] == ip, ctx
        assert s["network.type"] == family, ctx
        assert s["network.transport"] == "tcp", ctx
        assert s["network.local.address"] == ip and s["network.peer.address"] == ip, ctx
        for key in ("weft.tcp.req_seq", "weft.tcp.resp_seq"):
            assert isinstance(s[key], int) and 0 <= s[key] < U32, f"{key}={s[key]!r}{ctx}"
        for key in ("weft.syscall_trace_id.req", "weft.syscall_trace_id.resp", "weft.socket.id"):
            assert isinstance(s[key], int), f"{key}={s[key]!r}{ctx}"
        for key, value in (extra or {}).items():
            assert s[key] == value, f"{key}: {s[key]!r} != {value!r}{ctx}"
        assert s.status == span_status(s.kind, status), f"span status {s.status}{ctx}"
    # The server end and the client end of one connection.
    assert server["network.local.port"] == server_port, ctx
    assert client["network.peer.port"] == server_port, ctx
    assert server["network.peer.port"] == client["network.local.port"], ctx
    assert server["network.peer.address"] == client["network.local.address"], ctx
    assert server["client.port"] == client["client.port"] == client["network.local.port"], ctx
    assert client["network.peer.address"] == server["network.local.address"], ctx
    # The same bytes seen from both ends.
    assert server["weft.tcp.req_seq"] == client["weft.tcp.req_seq"], ctx
    assert server["weft.tcp.resp_seq"] == client["weft.tcp.resp_seq"], ctx
    # Processes and threads.
    assert server["process.pid"] == srv.pid and client["process.pid"] == cli.pid, ctx
    assert server["thread.id"] == server_tid, ctx
    assert client["thread.id"] == client_tid, ctx
    for s, p, service in ((server, srv, server_service), (client, cli, None)):
        res = dict(s.resource)
        container = res.pop("container.id", None)
        assert container is None or (isinstance(container, str) and container), res
        assert res == {
            "service.name": service or p.comm,
            "process.pid": p.pid,
            "process.executable.name": p.comm,
            "host.name": os.uname().nodename,
        }, ctx
    # Time: the client writes before the server reads, the server writes the response
    # before the client has read it; all of it inside the wall time around the request.
    t0, t1 = window
    assert t0 - TOLERANCE_NS <= client.start, f"client start {client.start - t0} ns after t0{ctx}"
    assert client.start <= server.start <= server.end <= client.end, (
        f"times: client {client.start}..{client.end}, server {server.start}..{server.end}{ctx}"
    )
    assert client.end <= t1 + TOLERANCE_NS, f"client end {client.end - t1} ns after t1{ctx}"


def seq_delta(a: int, b: int) -> int:
    """b - a on the TCP sequence circle."""
    return (b - a) % U32


# ---------------------------------------------------------------------------
# curl, IPv4 and IPv6


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_curl_get(env, http_server, family):
    srv = http_server(env.port(), LOOPBACK[family])
    seen, cli = curl(srv.url("/hello"), *(["-g"] if family == "ipv6" else []))
    assert (seen.status, seen.body) == (200, b"hello\n")
    server, client = by_path(env.out.wait(2, srv.port), ["/hello"])["/hello"]
    check_pair(
        server, client, method="GET", path="/hello", status=200, srv=srv.info, cli=cli,
        server_tid=seen.server_tid, client_tid=seen.tid, window=seen.window,
        server_port=srv.port, family=family,
    )
    assert server["weft.socket.id"] != client["weft.socket.id"]


# ---------------------------------------------------------------------------
# Python requests: keep-alive and Connection: close


def test_requests_keep_alive(env, http_server):
    srv = http_server(env.port())
    me = this_process()
    seen = {}
    with requests.Session() as session:
        for i in range(5):
            t0 = time.time_ns()
            r = session.get(srv.url(f"/item/k{i}?q={i}"), timeout=10)
            seen[f"/item/k{i}"] = seen_from_requests(t0, r, time.time_ns())
            assert r.status_code == 200 and r.content == f"item k{i}\n".encode()
    # One handler thread served them all: one connection.
    assert len({s.server_tid for s in seen.values()}) == 1
    pairs = by_path(env.out.wait(10, srv.port), seen)
    for path, (server, client) in pairs.items():
        s = seen[path]
        check_pair(
            server, client, method="GET", path=path, status=200, srv=srv.info, cli=me,
            server_tid=s.server_tid, client_tid=s.tid, window=s.window, server_port=srv.port,
        )
    servers = [pairs[p][0] for p in seen]
    clients = [pairs[p][1] for p in seen]
    assert len({s["weft.socket.id"] for s in servers}) == 1
    assert len({s["weft.socket.id"] for s in clients}) == 1
    assert servers[0]["weft.socket.id"] != clients[0]["weft.socket.id"]
    assert len({s["network.peer.port"] for s in servers}) == 1
    # Requests follow each other on the connection: sequence numbers strictly grow.
    for side in (servers, clients):
        for key in ("weft.tcp.req_seq", "weft.tcp.resp_seq"):
            seqs = [s[key] for s in side]
            assert all(0 < seq_delta(a, b) < 1 << 20 for a, b in zip(seqs, seqs[1:])), (key, seqs)


def test_requests_connection_close(env, http_server):
    srv = http_server(env.port())
    me = this_process()
    seen = {}
    for i in range(5):
        t0 = time.time_ns()
        r = requests.get(srv.url(f"/item/c{i}"), headers={"Connection": "close"}, timeout=10)
        seen[f"/item/c{i}"] = seen_from_requests(t0, r, time.time_ns())
        assert r.status_code == 200
    pairs = by_path(env.out.wait(10, srv.port), seen)
    for path, (server, client) in pairs.items():
        s = seen[path]
        check_pair(
            server, client, method="GET", path=path, status=200, srv=srv.info, cli=me,
            server_tid=s.server_tid, client_tid=s.tid, window=s.window, server_port=srv.port,
        )
    for side in (0, 1):
        assert len({pairs[p][side]["weft.socket.id"] for p in seen}) == 5
    assert len({pairs[p][0]["network.peer.port"] for p in seen}) == 5


# ---------------------------------------------------------------------------
# Pipelining: three requests in one send


def test_pipelined_requests(env, http_server):
    srv = http_server(env.port())
    me = this_process()
    paths = ["/item/p1", "/status/404", "/item/p3"]
    reqs = [f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode() for p in paths]
    t0 = time.time_ns()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"".join(reqs))
        resps = read_responses(sock, 3)
    t1 = time.time_ns()
    assert [r.status for r in resps] == [200, 404, 200]
    tid = threading.get_native_id()
    pairs = by_path(env.out.wait(6, srv.port), paths)
    for path, resp in zip(paths, resps):
        server, client = pairs[path]
        check_pair(
            server, client, method="GET", path=path, status=resp.status, srv=srv.info, cli=me,
            server_tid=int(resp.headers["x-thread-id"]), client_tid=tid, window=(t0, t1),
            server_port=srv.port,
        )
    # Byte-exact positions in the stream: each request and response starts where the
    # previous one ended.
    for side in (0, 1):
        spans = [pairs[p][side] for p in paths]
        for i in range(2):
            req, nxt = spans[i], spans[i + 1]
            assert seq_delta(req["weft.tcp.req_seq"], nxt["weft.tcp.req_seq"]) == len(reqs[i])
            assert seq_delta(req["weft.tcp.resp_seq"], nxt["weft.tcp.resp_seq"]) == len(resps[i].raw)
        assert len({s["weft.socket.id"] for s in spans}) == 1
        assert [s.start for s in spans] == sorted(s.start for s in spans)
        assert [s.end for s in spans] == sorted(s.end for s in spans)


# ---------------------------------------------------------------------------
# Bodies: chunked, 100 KB, a POST body


def test_chunked_big_and_post_bodies(env, http_server):
    srv = http_server(env.port())
    me = this_process()

    chunked, curl_chunked = curl(srv.url("/chunked"))
    assert chunked.status == 200 and chunked.headers["transfer-encoding"] == "chunked"
    assert chunked.body == b"".join(CHUNKS)
    big, curl_big = curl(srv.url("/big"))
    assert big.status == 200 and big.body == b"b" * BIG_BODY_BYTES
    body = bytes(range(256)) * 20
    t0 = time.time_ns()
    r = requests.post(srv.url("/echo"), data=body, timeout=10)
    posted = seen_from_requests(t0, r, time.time_ns())
    assert (r.status_code, r.content) == (200, f"{len(body)}\n".encode())

    pairs = by_path(env.out.wait(6, srv.port), ["/chunked", "/big", "/echo"])
    common = dict(srv=srv.info, server_port=srv.port, status=200)
    check_pair(
        *pairs["/chunked"], method="GET", path="/chunked", cli=curl_chunked,
        server_tid=chunked.server_tid, client_tid=chunked.tid, window=chunked.window, **common,
    )
    check_pair(
        *pairs["/big"], method="GET", path="/big", cli=curl_big, server_tid=big.server_tid,
        client_tid=big.tid, window=big.window, truncated_ok=True, **common,
    )
    check_pair(
        *pairs["/echo"], method="POST", path="/echo", cli=me, server_tid=posted.server_tid,
        client_tid=posted.tid, window=posted.window, truncated_ok=True, **common,
    )


# ---------------------------------------------------------------------------
# Status codes and span status


def test_error_statuses(env, http_server):
    srv = http_server(env.port())
    runs = {code: curl(srv.url(f"/status/{code}")) for code in (201, 404, 503)}
    pairs = by_path(env.out.wait(6, srv.port), [f"/status/{c}" for c in runs])
    for code, (seen, cli) in runs.items():
        assert seen.status == code
        server, client = pairs[f"/status/{code}"]
        check_pair(
            server, client, method="GET", path=f"/status/{code}", status=code, srv=srv.info,
            cli=cli, server_tid=seen.server_tid, client_tid=seen.tid, window=seen.window,
            server_port=srv.port,
        )
    # Spelled out, not only through span_status(): 404 is an error to the client only.
    assert [pairs[f"/status/{c}"][0].status for c in (201, 404, 503)] == [UNSET, UNSET, ERROR]
    assert [pairs[f"/status/{c}"][1].status for c in (201, 404, 503)] == [UNSET, ERROR, ERROR]


# ---------------------------------------------------------------------------
# 20 concurrent clients, one connection each


def test_concurrent_clients(env, http_server):
    srv = http_server(env.port())
    me = this_process()
    n = 20
    accepted_before = env.metric("otelcol_receiver_accepted_spans", transport="ebpf")
    barrier = threading.Barrier(n)
    seen: dict[str, Seen] = {}
    errors: list[str] = []

    def one(i: int) -> None:
        path = f"/item/n{i}"
        try:
            barrier.wait(10)
            t0 = time.time_ns()
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            conn.request("GET", path)
            r = conn.getresponse()
            data = r.read()
            conn.close()
            t1 = time.time_ns()
            headers = {k.lower(): v for k, v in r.getheaders()}
            seen[path] = Seen(t0, t1, r.status, headers, data, threading.get_native_id())
        except Exception as e:  # reported below, with the path
            errors.append(f"{path}: {e!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert all(s.status == 200 for s in seen.values())
    pairs = by_path(env.out.wait(2 * n, srv.port), seen)
    for path, (server, client) in pairs.items():
        s = seen[path]
        check_pair(
            server, client, method="GET", path=path, status=200, srv=srv.info, cli=me,
            server_tid=s.server_tid, client_tid=s.tid, window=s.window, server_port=srv.port,
        )
    for side in (0, 1):
        assert len({pairs[p][side]["weft.socket.id"] for p in seen}) == n
    accepted = env.metric("otelcol_receiver_accepted_spans", transport="ebpf")
    assert accepted - accepted_before == 2 * n


# ---------------------------------------------------------------------------
# Same-thread syscall trace id across a downstream call


def test_downstream_call_shares_syscall_trace_ids(env, http_server):
    a = http_server(env.port())
    b = http_server(env.port())
    seen, cli = curl(a.url(f"/downstream?port={b.port}"))
    assert (seen.status, seen.body) == (200, b"200\n")
    a_tid, b_tid = seen.server_tid, int(seen.headers["x-downstream-thread-id"])

    outer_server, outer_client = by_path(env.out.wait(2, a.port), ["/downstream"])["/downstream"]
    inner_server, inner_client = by_path(env.out.wait(2, b.port), ["/hello"])["/hello"]
    check_pair(
        outer_server, outer_client, method="GET", path="/downstream", status=200, srv=a.info,
        cli=cli, server_tid=a_tid, client_tid=seen.tid, window=seen.window, server_port=a.port,
    )
    check_pair(
        inner_server, inner_client, method="GET", path="/hello", status=200, srv=b.info,
        cli=a.info, server_tid=b_tid, client_tid=a_tid, window=seen.window, server_port=b.port,
    )
    # The handler thread: request in (id X) -> downstream request out (X);
    # downstream response in (id Y) -> response out (Y).
    assert outer_server["weft.syscall_trace_id.req"] == inner_client["weft.syscall_trace_id.req"]
    assert outer_server["weft.syscall_trace_id.resp"] == inner_client["weft.syscall_trace_id.resp"]
    assert outer_server["weft.syscall_trace_id.req"] != outer_server["weft.syscall_trace_id.resp"]
    # The downstream call lies inside the handler's span.
    assert outer_server.start <= inner_client.start <= inner_client.end <= outer_server.end


# ---------------------------------------------------------------------------
# nginx serving a file


def nginx_bin() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not path:
        pytest.fail("nginx is not installed (apt-get install nginx-light)", pytrace=False)
    return path


@pytest.fixture
def nginx(tmp_path):
    """Factory: `nginx(port, sendfile)` -> Proc; a single nginx process (no master), all
    its files under tmp_path; stopped by pid at teardown."""
    started: list[subprocess.Popen] = []

    def start(port: int, sendfile: bool) -> Proc:
        root = tmp_path / f"nginx-{port}"
        (root / "www").mkdir(parents=True, exist_ok=True)
        (root / "www" / "file.txt").write_bytes(b"static file\n" * 300)
        conf = root / "nginx.conf"
        conf.write_text(
            f"""daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log notice;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    default_type text/plain;
    sendfile {"on" if sendfile else "off"};
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
    }}
}}
"""
        )
        proc = subprocess.Popen(
            [nginx_bin(), "-c", str(conf), "-p", str(root), "-e", str(root / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        started.append(proc)
        # The pid file is written after the listening socket is open.
        assert wait_until(lambda: (root / "nginx.pid").exists() or proc.poll() is not None, 10)
        assert proc.poll() is None, (root / "error.log").read_text()
        return Proc.of(proc.pid)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sendfile", [False, True], ids=["sendfile_off", "sendfile_on"])
def test_nginx_static_file(env, nginx, sendfile):
    port = env.port()
    ngx = nginx(port, sendfile)
    assert ngx.comm == "nginx"
    seen, cli = curl(f"http://127.0.0.1:{port}/file.txt")
    assert (seen.status, seen.body) == (200, b"static file\n" * 300)
    server, client = by_path(env.out.wait(2, port), ["/file.txt"])["/file.txt"]
    check_pair(
        server, client, method="GET", path="/file.txt", status=200, srv=ngx, cli=cli,
        # One single-threaded nginx process reads the request.
        server_tid=ngx.pid, client_tid=seen.tid, window=seen.window, server_port=port,
        server_service=NGINX_SERVICE, truncated_ok=True,
    )


# ---------------------------------------------------------------------------
# Redaction and the headers that are kept


def test_secrets_never_leave_and_ids_do(env, http_server):
    auth, cookie, set_cookie, api_key = (f"s{i}{secrets.token_hex(16)}" for i in range(4))
    srv = http_server(env.port(), "127.0.0.1", "--set-cookie", set_cookie)
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    request_id = f"rid-{secrets.token_hex(8)}"
    b3_trace = secrets.token_hex(16)
    t0 = time.time_ns()
    r = requests.get(
        srv.url("/setcookie"),
        headers={
            "Authorization": f"Bearer {auth}",
            "Cookie": f"sid={cookie}",
            "X-Api-Key": api_key,
            "traceparent": traceparent,
            "X-Request-ID": request_id,
            "X-B3-TraceId": b3_trace,
        },
        timeout=10,
    )
    seen = seen_from_requests(t0, r, time.time_ns())
    assert r.status_code == 200 and set_cookie in r.headers["set-cookie"]
    server, client = by_path(env.out.wait(2, srv.port), ["/setcookie"])["/setcookie"]
    check_pair(
        server, client, method="GET", path="/setcookie", status=200, srv=srv.info,
        cli=this_process(), server_tid=seen.server_tid, client_tid=seen.tid,
        window=seen.window, server_port=srv.port,
        extra={
            "weft.header.traceparent": traceparent,
            "weft.header.x-b3-traceid": b3_trace,
            "weft.x_request_id.req": request_id,
        },
    )
    output = env.out.path.read_bytes()
    log = env.weft.log_text()
    metrics = env.weft.metrics_text()
    for name, secret in (("Authorization", auth), ("Cookie", cookie), ("Set-Cookie", set_cookie),
                         ("X-Api-Key", api_key)):
        assert secret.encode() not in output, f"the {name} value is in the exported spans"
        assert secret not in log, f"the {name} value is in weft's log"
        assert secret not in metrics, f"the {name} value is in weft's metrics"


# ---------------------------------------------------------------------------
# Bad input on a traced port


def test_bad_input_makes_no_wrong_span(env, http_server):
    srv = http_server(env.port())
    me = this_process()
    tid = threading.get_native_id()
    addr = ("127.0.0.1", srv.port)
    before_non_http = env.metric("weft_ebpf_non_http_streams")
    before_dropped = env.metric("weft_ebpf_messages_dropped")
    before_long = env.metric("weft_ebpf_messages_dropped", reason="line_too_long")
    seen: dict[str, Seen] = {}

    keep = http.client.HTTPConnection(*addr, timeout=10)

    def on_keep(path: str, headers: dict | None = None) -> Seen:
        t0 = time.time_ns()
        keep.request("GET", path, headers=headers or {})
        r = keep.getresponse()
        body = r.read()
        return Seen(t0, time.time_ns(), r.status, {k.lower(): v for k, v in r.getheaders()}, body, tid)

    def raw(payload: bytes, *, wait_answer: bool) -> bytes:
        with socket.create_connection(addr, timeout=10) as sock:
            sock.sendall(payload)
            if not wait_answer:
                return b""
            sock.shutdown(socket.SHUT_WR)
            return drain(sock)

    seen["/status/201"] = on_keep("/status/201")
    # Garbage, then a request line cut short by a close.
    raw(b"\x00\xff\xfegarbage\x01\x02 not http\r\n\r\n", wait_answer=True)
    raw(b"GET /trunc HT", wait_answer=False)
    # Binary protocols: a TLS ClientHello prefix, a Redis command.
    tls = b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + bytes(range(0x20, 0x60)) + b"\x00\x02\x13\x01"
    raw(tls, wait_answer=True)
    raw(b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n", wait_answer=True)
    # A 20 KB header line in one send: a valid request whose head is larger than the
    # captured prefix; it gets its spans, and the connection stays aligned.
    seen["/status/202"] = on_keep("/status/202", {"X-Long": "a" * 20000})
    # A 25 KB header line written 1000 bytes at a time, so every byte of it is captured:
    # longer than any line weft accepts, so that message is dropped (counted); the next
    # request on the same connection is still paired with its own response.
    with socket.create_connection(addr, timeout=10) as sock:
        t0 = time.time_ns()
        sock.sendall(f"GET /item/longline HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nX-Long: ".encode())
        for _ in range(25):
            time.sleep(0.002)
            sock.sendall(b"a" * 1000)
        sock.sendall(b"\r\n\r\n")
        (long_resp,) = read_responses(sock, 1)
        assert long_resp.status == 200
        t1 = time.time_ns()
        sock.sendall(f"GET /item/after-long HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode())
        (after_long,) = read_responses(sock, 1)
        seen["/item/after-long"] = Seen(
            t1, time.time_ns(), after_long.status, after_long.headers, after_long.body, tid
        )
    seen["/status/203"] = on_keep("/status/203")
    keep.close()
    # A body cut short by a close: the server gives up without answering.
    raw(
        f"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nContent-Length: 1000\r\n\r\n".encode()
        + b"x" * 100,
        wait_answer=False,
    )
    t0 = time.time_ns()
    r = requests.get(srv.url("/item/after"), timeout=10)
    seen["/item/after"] = seen_from_requests(t0, r, time.time_ns())

    assert [s.status for s in seen.values()] == [201, 202, 200, 203, 200]
    want = 2 * len(seen)
    wait_until(lambda: len(env.out.for_ports(srv.port)) >= want, SPAN_WAIT, 0.1)
    spans = env.out.wait(len(env.out.for_ports(srv.port)), srv.port)
    # The over-long line's own message may leave at most a right span on the side
    # whose capture lost framing before the line grew too long; never a wrong one.
    longline = [s for s in spans if s.attrs.get("url.path") == "/item/longline"]
    for s in longline:
        assert (s.name, s["http.response.status_code"]) == ("GET", 200), s.short()
    assert len({s.kind for s in longline}) == len(longline), [s.short() for s in longline]
    pairs = by_path([s for s in spans if s not in longline], seen)
    for path, (server, client) in pairs.items():
        s = seen[path]
        check_pair(
            server, client, method="GET", path=path, status=s.status, srv=srv.info, cli=me,
            server_tid=s.server_tid, client_tid=s.tid, window=s.window, server_port=srv.port,
            truncated_ok=path == "/status/202",
        )
    assert env.weft.alive() and env.weft.health_status() == 200

    def moved() -> dict:
        return {
            "non_http_streams": env.metric("weft_ebpf_non_http_streams") - before_non_http,
            "messages_dropped": env.metric("weft_ebpf_messages_dropped") - before_dropped,
            "line_too_long": env.metric("weft_ebpf_messages_dropped", reason="line_too_long")
            - before_long,
        }

    def enough(m: dict) -> bool:
        return m["non_http_streams"] >= 3 and m["messages_dropped"] >= 2 and m["line_too_long"] >= 1

    wait_until(lambda: enough(moved()), 10, 0.2)
    samples = env.weft.metrics()
    assert enough(moved()), f"{moved()} {metric_series(samples, 'weft_ebpf_messages_dropped')}"


# ---------------------------------------------------------------------------
# Ring-buffer loss is counted


def test_ring_buffer_loss_is_counted(weft, http_server, tmp_path):
    port = free_port()
    out = tmp_path / "spans.jsonl"
    # One page of ring: a 16 KiB record cannot fit at all.
    page = os.sysconf("SC_PAGE_SIZE")
    w = weft(ebpf_config([port], out, ring_buffer_bytes=page, payload_bytes=16384))
    wait_capturing(w)
    srv = http_server(port)
    errors: list[str] = []

    def fetch() -> None:
        try:
            with requests.Session() as s:
                for _ in range(3):
                    r = s.get(srv.url("/big"), timeout=10)
                    assert r.status_code == 200 and len(r.content) == BIG_BODY_BYTES
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors

    def dropped() -> float:
        return metric_sum(w.metrics(), "weft_ebpf_ringbuf_dropped", receiver="ebpf")

    wait_until(lambda: dropped() > 0, 10, 0.2)
    assert dropped() > 0, f"no ring-buffer loss reported\n{w.metrics_text()}"
    assert w.alive() and w.health_status() == 200


def test_applications_sending_to_weft_are_not_traced(weft, http_server, tmp_path):
    """A loopback connection to one of weft's own receivers is an application exporting
    its telemetry: the kernel leaves it out, even on a listed port, while other traffic
    on listed ports still makes spans and the exported data still arrives."""
    otlp_port, app_port = free_port(), free_port()
    out = tmp_path / "spans.jsonl"
    config = ebpf_config([otlp_port, app_port], out)
    config["receivers"]["otlp"] = {"protocols": {"http": {"endpoint": f"127.0.0.1:{otlp_port}"}}}
    config["service"]["pipelines"]["traces"]["receivers"] = ["otlp", "ebpf"]
    w = weft(config)
    wait_capturing(w)
    # The receiver reads weft's listening ports at its first flush and every 2 s.
    time.sleep(2.5)
    srv = http_server(app_port)
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "exporter"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
            "name": "sent-over-otlp", "kind": 1,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000001000000",
        }]}],
    }]}
    with requests.Session() as s:  # kept alive, as an SDK exporter does
        for _ in range(3):
            r = s.post(f"http://127.0.0.1:{otlp_port}/v1/traces", json=body, timeout=10)
            assert r.status_code == 200, r.text
    r = requests.get(srv.url("/item/x"), timeout=10)
    assert r.status_code == 200
    output = Output(out, w)
    pair = output.wait(2, app_port)
    assert sorted(s.kind for s in pair) == [SERVER, CLIENT]
    exported = lambda: [s for s in output.spans() if s.name == "sent-over-otlp"]  # noqa: E731
    assert wait_until(lambda: len(exported()) == 3, 10), output.spans()
    assert all(s.scope != "weft.ebpf" for s in exported())
    assert output.for_ports(otlp_port) == [], "\n".join(s.short() for s in output.for_ports(otlp_port))
    assert w.alive()


# ---------------------------------------------------------------------------
# container.id from the cgroup path


def cgroup_root() -> Path | None:
    """A cgroup hierarchy this test may create a group in: the v1 pids controller, or
    cgroup v2 (hybrid or unified layout)."""
    for root in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        p = Path(root)
        if (p / "cgroup.procs").exists() and os.access(p, os.W_OK):
            return p
    return None


def test_container_id_comes_from_the_cgroup_path(env, http_server):
    root = cgroup_root()
    assert root is not None, "no writable cgroup hierarchy"
    container = secrets.token_hex(32)
    group = root / "docker" / container
    group.mkdir(parents=True)
    srv = http_server(env.port())
    try:
        # Where Docker puts a container's processes; weft reads /proc/<pid>/cgroup.
        (group / "cgroup.procs").write_text(str(srv.proc.pid))
        assert f"/docker/{container}" in Path(f"/proc/{srv.proc.pid}/cgroup").read_text()
        seen, cli = curl(srv.url("/hello"))
        assert seen.status == 200
        server, client = by_path(env.out.wait(2, srv.port), ["/hello"])["/hello"]
        assert server.resource.get("container.id") == container, server.resource
        assert "container.id" not in client.resource, client.resource
    finally:
        # Back to the root group so the empty groups can go.
        if Path(f"/proc/{srv.proc.pid}").exists():
            (root / "cgroup.procs").write_text(str(srv.proc.pid))
        group.rmdir()
        if not any(p.is_dir() for p in (root / "docker").iterdir()):
            (root / "docker").rmdir()
