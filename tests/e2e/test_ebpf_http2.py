"""HTTP/2 and gRPC spans end to end: the ebpf receiver reads frames and HPACK off the
socket syscalls (clear text) and OpenSSL's calls (TLS with ALPN h2) of real programs.

- h2c with prior knowledge: nginx (`listen ... http2`) and httpx (`http2=True,
  http1=False`), 100 concurrent streams on one connection: every stream exactly one
  CLIENT span (this process) and one SERVER span (nginx), path, status, request id and
  stream id right, client and server spans with the same TCP sequence, no two streams
  with the same one.
- h2c by `Upgrade`: curl (`--http2` on an http:// URL) and a Python `h2` server that
  switches on `101`: the upgrading request is stream 1 of the HTTP/2 connection (one
  span per end, no HTTP/1.1 span for the 101), the next requests streams 3 and 5.
- h2 over TLS (ALPN): nginx (`listen ... ssl http2`) and curl (OpenSSL): three requests
  on one connection, plaintext attributes and `tls.protocol.*` right.
- gRPC: grpcio on both ends (apps/grpc_service.py, insecure channel): unary, server
  streaming, client streaming, bidi, an error status and a deadline exceeded, each with
  its `rpc.*` attributes, `rpc.grpc.status_code` and message counts.
- Secrets: an `authorization` header and a configured one never leave.

Needs root and BTF like test_ebpf.py (the module skips with one line otherwise).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ebpf_spans import CLIENT, SERVER, Output
from harness import E2E_DIR, Weft, ebpf_unavailable, free_port, wait_until, weft_binary
from otlp_support import metric_sum

if ebpf_unavailable():
    pytest.skip(ebpf_unavailable(), allow_module_level=True)

import grpc  # noqa: E402
import httpx  # noqa: E402

from test_ebpf import nginx_bin  # noqa: E402
from test_ebpf_tls import Started, cert, started  # noqa: E402,F401  (fixtures)

PORT_POOL = 8
UNSET, ERROR = 0, 2
GRPC_APP = E2E_DIR / "apps" / "grpc_service.py"
UPGRADE_APP = E2E_DIR / "apps" / "h2c_upgrade_server.py"


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

    def spans_on(self, port: int, count: int, timeout: float = 20.0):
        """Exactly `count` HTTP/2 spans whose server port is `port`."""
        def mine():
            return [s for s in self.out.spans()
                    if s.get("server.port") == port and s.get("network.protocol.version") == "2"]
        wait_until(lambda: len(mine()) >= count, timeout, 0.1)
        time.sleep(0.8)
        got = mine()
        assert len(got) == count, (f"{len(got)} spans on port {port}, want {count}:\n"
                                   + "\n".join(f"{s.kind} {s.name} {s.attrs}" for s in got))
        return got


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ebpf-h2")
    ports = [free_port() for _ in range(PORT_POOL)]
    out = workdir / "spans.jsonl"
    config = {
        "receivers": {"ebpf": {
            "include": {"ports": ports},
            "flush_interval": "100ms",
            # nginx reads many streams' frames in one call: a frame header past the
            # captured bytes loses the framing until a clean boundary.
            "payload_bytes": 16384,
            "redact_headers": ["x-api-key"],
            "service_names": {"nginx": "h2-nginx"},
        }},
        "exporters": {"file": {"path": str(out), "flush_interval": "100ms"}},
        "service": {"pipelines": {"traces": {"receivers": ["ebpf"], "exporters": ["file"]}}},
    }
    w = Weft(weft_binary(), workdir, "weft-ebpf-h2")
    try:
        w.start(config)
        assert wait_until(lambda: w.health_status() == 200, 30), w.log_tail()
    except BaseException:
        if w.alive():
            w.proc.kill()
            w.proc.wait()
        raise
    yield Env(w, Output(out), ports)
    code = w.stop()
    assert code == 0, f"weft exited with {code}, want 0\n{w.log_tail()}"


def start_app(started: Started, log_path: Path, app: Path, port: int) -> subprocess.Popen:
    """One of apps/*.py serving on `port`, once it said "ready"; stderr in `log_path`."""
    with open(log_path, "wb") as log:
        proc = started.add(subprocess.Popen(
            [sys.executable, str(app), str(port)],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
        ))
    assert proc.stdout.readline().decode().strip() == "ready", log_path.read_text()
    return proc


def start_nginx(started: Started, root: Path, port: int, tls=None) -> int:
    """nginx speaking HTTP/2 only on `port`: h2c with prior knowledge, or h2 over TLS
    when `tls` is (cert, key). Returns its pid."""
    root.mkdir(parents=True, exist_ok=True)
    listen = f"listen 127.0.0.1:{port} http2;"
    ssl = ""
    if tls:
        listen = f"listen 127.0.0.1:{port} ssl http2;"
        ssl = f"ssl_certificate {tls[0]};\n        ssl_certificate_key {tls[1]};\n        ssl_protocols TLSv1.3;"
    conf = root / "nginx.conf"
    conf.write_text(
        f"""daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log notice;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    default_type text/plain;
    http2_max_concurrent_streams 128;
    server {{
        {listen}
        {ssl}
        location /s/ {{ add_header X-Request-ID $http_x_request_id; return 200 "ok $uri\\n"; }}
        location = /missing {{ return 404; }}
        location = /fail {{ return 503; }}
    }}
}}
"""
    )
    proc = started.add(subprocess.Popen(
        [nginx_bin(), "-c", str(conf), "-p", str(root), "-e", str(root / "error.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    ))
    assert wait_until(lambda: (root / "nginx.pid").exists() or proc.poll() is not None, 10)
    assert proc.poll() is None, (root / "error.log").read_text()
    return proc.pid


def split(spans):
    servers = [s for s in spans if s.kind == SERVER]
    clients = [s for s in spans if s.kind == CLIENT]
    return servers, clients


def test_h2c_100_concurrent_streams_on_one_connection(env, started, tmp_path):
    port = env.port()
    nginx_pid = start_nginx(started, tmp_path / "nginx", port)
    n = 100

    async def run():
        async with httpx.AsyncClient(http1=False, http2=True, timeout=20) as client:
            async def one(i):
                r = await client.get(f"http://127.0.0.1:{port}/s/{i}",
                                     headers={"x-request-id": f"req-{i}",
                                              "authorization": "Bearer topsecret",
                                              "x-api-key": "also-secret"})
                return i, r.status_code, r.http_version, r.headers.get("x-request-id")
            return await asyncio.gather(*(one(i) for i in range(n)))

    t0 = time.time_ns()
    results = asyncio.run(run())
    t1 = time.time_ns()
    assert all(r[1:] == (200, "HTTP/2", f"req-{r[0]}") for r in results), results
    spans = env.spans_on(port, 2 * n)
    servers, clients = split(spans)
    assert len(servers) == n and len(clients) == n
    # One connection: one client port, one socket per side.
    assert len({s["client.port"] for s in spans}) == 1
    by_path = {}
    for s in spans:
        by_path.setdefault(s["url.path"], []).append(s)
    assert sorted(by_path) == sorted(f"/s/{i}" for i in range(n))
    seqs = set()
    for i in range(n):
        pair = by_path[f"/s/{i}"]
        server = next(s for s in pair if s.kind == SERVER)
        client = next(s for s in pair if s.kind == CLIENT)
        for s in (server, client):
            assert s.name == "GET"
            assert s["http.request.method"] == "GET"
            assert s["http.response.status_code"] == 200
            assert s["network.protocol.name"] == "http"
            assert s["network.protocol.version"] == "2"
            assert s["server.address"] == "127.0.0.1"
            assert s["server.port"] == port
            assert s["weft.x_request_id.req"] == f"req-{i}"
            assert s["weft.x_request_id.resp"] == f"req-{i}"
            assert s.status == UNSET
            assert t0 <= s.start <= s.end <= t1 + 5_000_000
            assert "weft.http2.unknown_fields" not in s.attrs
        assert server["process.pid"] == nginx_pid
        assert client["process.pid"] == os.getpid()
        assert server.resource["service.name"] == "h2-nginx"
        # The same stream on both ends, the same TCP sequence of its HEADERS frame.
        assert server["weft.http2.stream_id"] == client["weft.http2.stream_id"]
        assert server["weft.tcp.req_seq"] == client["weft.tcp.req_seq"]
        assert server["weft.tcp.resp_seq"] == client["weft.tcp.resp_seq"]
        seqs.add(server["weft.tcp.req_seq"])
    assert len(seqs) == n
    text = json.dumps([s.attrs for s in spans])
    assert "topsecret" not in text and "also-secret" not in text
    assert "authorization" not in text and "x-api-key" not in text
    assert env.metric("weft_ebpf_http2_connections") >= 2


def test_h2c_statuses_and_sequential_streams(env, started, tmp_path):
    port = env.port()
    start_nginx(started, tmp_path / "nginx", port)
    paths = ["/s/a", "/missing", "/fail", "/s/b"]
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        codes = [client.get(f"http://127.0.0.1:{port}{p}").status_code for p in paths]
    assert codes == [200, 404, 503, 200]
    spans = env.spans_on(port, 2 * len(paths))
    for kind in (SERVER, CLIENT):
        mine = sorted((s for s in spans if s.kind == kind), key=lambda s: s.start)
        assert [s["url.path"] for s in mine] == paths
        assert [s["http.response.status_code"] for s in mine] == codes
        assert [s["weft.http2.stream_id"] for s in mine] == [1, 3, 5, 7]
        # A client's 4xx is an error; a server's only from 5xx.
        want = [UNSET, ERROR if kind == CLIENT else UNSET, ERROR, UNSET]
        assert [s.status for s in mine] == want
        # One stream at a time: the syscall ids stay on (autotracing T2).
        assert all("weft.syscall_trace_id.req" in s.attrs for s in mine)


def test_h2c_by_upgrade_from_http1(env, started, tmp_path):
    port = env.port()
    server = start_app(started, tmp_path / "upgrade.log", UPGRADE_APP, port)
    urls = [f"http://127.0.0.1:{port}/u/{i}" for i in range(3)]
    proc = subprocess.run(
        ["curl", "-sS", "--http2", "-H", "X-Request-ID: up-1", "-w", "%{http_version} %{http_code}\n",
         *[arg for url in urls for arg in ("-o", "/dev/null", url)]],
        capture_output=True, timeout=30, check=True,
    )
    assert proc.stdout.decode().split("\n")[:3] == ["2 200"] * 3, proc.stdout
    spans = env.spans_on(port, 6)
    servers, clients = split(spans)
    for group, pid in ((servers, server.pid), (clients, None)):
        group.sort(key=lambda s: s["weft.http2.stream_id"])
        assert [s["weft.http2.stream_id"] for s in group] == [1, 3, 5]
        assert [s["url.path"] for s in group] == [f"/u/{i}" for i in range(3)]
        for s in group:
            assert s.name == "GET"
            assert s["http.request.method"] == "GET"
            assert s["http.response.status_code"] == 200
            assert s["network.protocol.version"] == "2"
            assert s["weft.x_request_id.req"] == "up-1"
            assert s["weft.x_request_id.resp"] == "up-1"
            assert s.status == UNSET
            assert "weft.http2.unknown_fields" not in s.attrs
            if pid:
                assert s["process.pid"] == pid
        # Stream 1's request is the HTTP/1.1 request that asked for the switch.
        assert group[0].start < group[1].start
    # Clear text: both ends know every number, and they agree.
    for server_span, client in zip(servers, clients):
        for key in ("weft.tcp.req_seq", "weft.tcp.resp_seq"):
            assert server_span[key] == client[key], (key, server_span.attrs, client.attrs)
    # The 101 is not a span of its own.
    assert not [s for s in env.out.spans()
                if s.get("server.port") == port and s.get("network.protocol.version") != "2"]


def h2_frame(ty: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ty, flags]) + stream.to_bytes(4, "big") + payload


def raw_h2(port: int, frames: bytes):
    """One connection that sends the preface, SETTINGS and `frames`, reads what the
    server answers until it closes (nginx answers bad frames with GOAWAY), and closes."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(PREFACE_BYTES + h2_frame(0x4, 0, 0, b"") + frames)
        sock.settimeout(2)
        try:
            while sock.recv(65536):
                pass
        except (TimeoutError, ConnectionResetError):
            pass


PREFACE_BYTES = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def test_bad_http2_input_moves_counters_and_makes_no_span(env, started, tmp_path):
    port = env.port()
    start_nginx(started, tmp_path / "nginx", port)
    counters = ("weft_ebpf_http2_protocol_errors", "weft_ebpf_http2_header_blocks_lost")

    def now():
        return tuple(env.metric(c) for c in counters)

    before = now()
    # A CONTINUATION with no HEADERS before it: a protocol error, seen by both ends.
    raw_h2(port, h2_frame(0x9, 0x4, 1, b"\x82"))
    assert wait_until(lambda: now()[0] >= before[0] + 2, 10), (before, now())
    # A header block that breaks HPACK (index 0): lost, on both ends.
    mid = now()
    raw_h2(port, h2_frame(0x1, 0x5, 1, b"\x80"))
    assert wait_until(lambda: now()[1] >= mid[1] + 2, 10), (mid, now())
    # An HPACK bomb: one 4000-byte entry, then 4000 references to it (16 MB decoded):
    # capped, nginx refuses it, and nothing wrong comes out.
    bomb = b"\x40\x05x-big" + b"\x7f\x81\x1f" + b"v" * 4000 + b"\xbe" * 4000
    raw_h2(port, h2_frame(0x1, 0x5, 1, b"\x82\x84\x86" + bomb[:16000]))
    # A capture cut short: the connection ends inside a frame.
    raw_h2(port, h2_frame(0x1, 0x5, 1, b"\x82\x84\x86\x41\x09localhost")[:12])
    time.sleep(1.0)
    # The receiver is healthy: a good request on a new connection is one span per end,
    # and it is the only span the port ever made with a path.
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        r = client.get(f"http://127.0.0.1:{port}/s/ok")
    assert r.status_code == 200
    spans = env.spans_on(port, 2)
    assert sorted(s.kind for s in spans) == [SERVER, CLIENT]
    assert all(s["url.path"] == "/s/ok" and s["http.response.status_code"] == 200 for s in spans)


def test_h2_over_tls_nginx_and_curl(env, started, tmp_path, cert):
    port = env.port()
    nginx_pid = start_nginx(started, tmp_path / "nginx", port, tls=cert)
    urls = [f"https://127.0.0.1:{port}/s/{i}" for i in range(3)]
    proc = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", str(cert[0]), "-H", "X-Request-ID: tls-1",
         "-H", "Authorization: Bearer curlsecret", "-w", "%{http_version} %{http_code}\n",
         *[arg for url in urls for arg in ("-o", "/dev/null", url)]],
        capture_output=True, timeout=30, check=True,
    )
    assert proc.stdout.decode().split("\n")[:3] == ["2 200"] * 3, proc.stdout
    spans = env.spans_on(port, 6)
    servers, clients = split(spans)
    for group, pid in ((servers, nginx_pid), (clients, None)):
        group.sort(key=lambda s: s.start)
        assert [s["url.path"] for s in group] == [f"/s/{i}" for i in range(3)]
        assert [s["weft.http2.stream_id"] for s in group] == [1, 3, 5]
        for s in group:
            assert s["http.response.status_code"] == 200
            assert s["weft.x_request_id.req"] == "tls-1"
            assert s["tls.protocol.name"] == "tls"
            assert s["tls.protocol.version"] == "1.3"
            assert s["network.protocol.version"] == "2"
            if pid:
                assert s["process.pid"] == pid
    assert "curlsecret" not in json.dumps([s.attrs for s in spans])
    # The TCP sequence of each stream's HEADERS: curl writes each request's HEADERS
    # in a record of its own, so the client knows every one, each different. The
    # other numbers are known where a frame starts an SSL call's plaintext and the
    # call read or wrote its own record: nginx reads ahead (OpenSSL's read_ahead),
    # so a record that arrived with an earlier one is read by no socket call, and a
    # frame behind another in one SSL_write has no number of its own. Those are
    # gaps, never wrong numbers: where both ends know a number, it is the same.
    client_seqs = [c["weft.tcp.req_seq"] for c in clients]
    assert len(set(client_seqs)) == 3
    both = 0
    for server, client in zip(servers, clients):
        for key in ("weft.tcp.req_seq", "weft.tcp.resp_seq"):
            if key in server.attrs and key in client.attrs:
                assert server[key] == client[key], (key, server.attrs, client.attrs)
                both += 1
    assert both >= 3, [(s.attrs, c.attrs) for s, c in zip(servers, clients)]


@pytest.fixture
def grpc_server(started, tmp_path, env):
    port = env.port()
    proc = start_app(started, tmp_path / "grpc.log", GRPC_APP, port)
    return port, proc.pid


def test_grpc_every_rpc_shape_status_and_deadline(env, grpc_server):
    port, server_pid = grpc_server
    svc = "weft.test.Echo"
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        unary = ch.unary_unary(f"/{svc}/Unary")
        assert unary(b"hello", metadata=[("x-request-id", "g-1"), ("authorization", "grpcsecret")]) == b"hello"
        with pytest.raises(grpc.RpcError) as e:
            unary(b"missing")
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        parts = list(ch.unary_stream(f"/{svc}/ServerStream")(b"3"))
        assert parts == [b"part-0", b"part-1", b"part-2"]
        assert ch.stream_unary(f"/{svc}/ClientStream")(iter([b"a", b"b", b"c", b"d"])) == b"4"
        echoed = list(ch.stream_stream(f"/{svc}/Bidi")(iter([b"x", b"y"])))
        assert echoed == [b"x", b"y"]
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary(f"/{svc}/Slow")(b"late", timeout=0.2)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(1.2)
    # (method, request messages, response messages, grpc status)
    want = [
        ("Unary", 1, 1, 0),
        ("Unary", 1, 0, 5),
        ("ServerStream", 1, 3, 0),
        ("ClientStream", 4, 1, 0),
        ("Bidi", 2, 2, 0),
    ]
    spans = env.spans_on(port, 2 * len(want) + 2)
    servers, clients = split(spans)
    for kind, group in ((SERVER, servers), (CLIENT, clients)):
        group.sort(key=lambda s: s.start)
        got = [(s["rpc.method"], s.get("weft.grpc.request_messages"),
                s.get("weft.grpc.response_messages"), s.get("rpc.grpc.status_code"))
               for s in group[:len(want)]]
        assert got == want, (kind, got)
        for s in group:
            assert s["rpc.system"] == "grpc"
            assert s["rpc.service"] == svc
            assert s.name == f"{svc}/{s['rpc.method']}"
            assert s["http.request.method"] == "POST"
            assert s["url.path"] == f"/{svc}/{s['rpc.method']}"
            if s["rpc.method"] != "Slow":
                assert s["http.response.status_code"] == 200
        assert group[0]["weft.x_request_id.req"] == "g-1"
        # NOT_FOUND is an error for the client; a server only fails on its own codes.
        assert group[1].status == (ERROR if kind == CLIENT else UNSET)
        assert group[1].message == ("no such thing" if kind == CLIENT else "")
        slow = group[-1]
        assert slow["rpc.method"] == "Slow"
    assert all(s["process.pid"] == server_pid for s in servers)
    assert all(s["process.pid"] == os.getpid() for s in clients)
    # The deadline (0.2 s, the handler sleeps 1 s): both ends time the stream out at
    # once. Either the server's trailers-only DEADLINE_EXCEEDED reached the other end
    # first, or the client's RST_STREAM(CANCEL) ended the stream; each side's span
    # says exactly which. A cancel is the client's decision: an error for it, not for
    # the server.
    for slow in (servers[-1], clients[-1]):
        if "weft.http2.rst_stream" in slow.attrs:
            assert slow["weft.http2.rst_stream"] == "CANCEL"
            assert "rpc.grpc.status_code" not in slow.attrs
            if slow.kind == CLIENT:
                assert (slow.status, slow.message) == (ERROR, "CANCEL")
            else:
                assert (slow.status, slow.message) == (UNSET, "")
        else:
            assert slow["rpc.grpc.status_code"] == 4
            assert slow["http.response.status_code"] == 200
            assert (slow.status, slow.message) == (ERROR, "Deadline Exceeded")
    assert "grpcsecret" not in json.dumps([s.attrs for s in spans])
    for server, client in zip(servers, clients):
        assert server["weft.tcp.req_seq"] == client["weft.tcp.req_seq"]
