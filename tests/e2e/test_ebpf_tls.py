"""The ebpf receiver on TLS: plaintext read from OpenSSL's SSL_write/SSL_read (and
their _ex forms) by uprobes, tied to the TCP sequence of the encrypted bytes.

Real TLS on loopback with a self-signed certificate made here by the `openssl` CLI:
nginx (HTTP/1.1 over TLS 1.2 and 1.3) with curl, and the Python stdlib HTTPS server
(tests/e2e/apps/ebpf_http_server.py --certfile) with `requests` (keep-alive) and
`http.client`. Every request gets the same field-by-field checks as clear text
(test_ebpf.check_pair), plus `tls.protocol.*`, and the client and server spans carry
equal `weft.tcp.req_seq`/`resp_seq`: the sequence of the ciphertext on the wire, seen
from both ends. All servers and clients start after weft.

A server started after weft with its own copy of libssl (LD_LIBRARY_PATH) is found by
the receiver's scan of new processes: its file is probed and its requests make spans.
With `tls: {openssl: false}` the same traffic makes no span at all.
"""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from harness import Weft, ebpf_unavailable, free_port, wait_until, weft_binary
from otlp_support import metric_sum

if ebpf_unavailable():
    pytest.skip(ebpf_unavailable(), allow_module_level=True)

from test_ebpf import (  # noqa: E402
    NGINX_SERVICE,
    SERVER_APP,
    Env,
    Output,
    Proc,
    Seen,
    by_path,
    check_pair,
    curl,
    ebpf_config,
    nginx_bin,
    seq_delta,
    this_process,
    wait_capturing,
)

PORT_POOL = 8
TLS_SCAN_WAIT = 15.0


def read_ahead_gap(server, client) -> bool:
    """nginx reads ahead (OpenSSL's read_ahead): when curl's request arrives together
    with its Finished message, the handshake's receive takes both, and the request's
    SSL_read makes no socket call. The server span then has no `weft.tcp.req_seq`: a
    gap, never a wrong number. The rest of the pair is checked as usual (the client's
    number is put in for the shared checks). True when that happened."""
    if "weft.tcp.req_seq" in server.attrs:
        return False
    server.attrs["weft.tcp.req_seq"] = client["weft.tcp.req_seq"]
    return True


def tls_extra(version: str) -> dict:
    return {"tls.protocol.name": "tls", "tls.protocol.version": version}


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.fail("the openssl CLI is not installed (apt-get install openssl)", pytrace=False)
    d = tmp_path_factory.mktemp("cert")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(crt), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return crt, key


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ebpf-tls")
    ports = [free_port() for _ in range(PORT_POOL)]
    out = workdir / "spans.jsonl"
    w = Weft(weft_binary(), workdir, "weft-ebpf-tls")
    config = ebpf_config(ports, out, service_names={"nginx": NGINX_SERVICE})
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


class Started:
    """Processes a test started, stopped by pid at teardown."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def add(self, proc: subprocess.Popen) -> subprocess.Popen:
        self.procs.append(proc)
        return proc

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def started():
    s = Started()
    yield s
    s.stop()


def start_nginx(started: Started, root: Path, port: int, cert) -> Proc:
    crt, key = cert
    (root / "www").mkdir(parents=True, exist_ok=True)
    (root / "www" / "file.txt").write_bytes(b"secret file\n" * 200)
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
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        root {root}/www;
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
    return Proc.of(proc.pid)


def start_https_server(started: Started, tmp: Path, port: int, cert, env_vars=None) -> Proc:
    crt, key = cert
    log = open(tmp / f"server-{port}.log", "wb")
    proc = started.add(subprocess.Popen(
        [sys.executable, str(SERVER_APP), "--port", str(port),
         "--certfile", str(crt), "--keyfile", str(key)],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env_vars,
    ))
    log.close()
    line = proc.stdout.readline().decode().strip()
    assert line == str(port), (tmp / f"server-{port}.log").read_text()
    return Proc.of(proc.pid)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_nginx_and_curl(env, started, tmp_path, cert, version):
    port = env.port()
    ngx = start_nginx(started, tmp_path / "nginx", port, cert)
    seen, cli = curl(
        f"https://127.0.0.1:{port}/file.txt", "--cacert", str(cert[0]), "--http1.1",
        f"--tlsv{version}", "--tls-max", version,
    )
    assert (seen.status, seen.body) == (200, b"secret file\n" * 200)
    server, client = by_path(env.out.wait(2, port), ["/file.txt"])["/file.txt"]
    read_ahead_gap(server, client)
    check_pair(
        server, client, method="GET", path="/file.txt", status=200, srv=ngx, cli=cli,
        server_tid=ngx.pid, client_tid=seen.tid, window=seen.window, server_port=port,
        server_service=NGINX_SERVICE, extra=tls_extra(version), truncated_ok=True,
    )
    # The handshake tied the SSL object to its socket even when it read ahead.
    assert env.metric("weft_ebpf_tls_no_socket") == 0


def test_requests_keep_alive_and_http_client(env, started, tmp_path, cert):
    port = env.port()
    srv = start_https_server(started, tmp_path, port, cert)
    me = this_process()
    seen: dict[str, Seen] = {}
    with requests.Session() as session:
        for i in range(3):
            t0 = time.time_ns()
            r = session.get(f"https://127.0.0.1:{port}/item/t{i}", verify=str(cert[0]), timeout=10)
            assert (r.status_code, r.content) == (200, f"item t{i}\n".encode())
            seen[f"/item/t{i}"] = Seen(
                t0, time.time_ns(), r.status_code, {k.lower(): v for k, v in r.headers.items()},
                r.content, threading.get_native_id(),
            )
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    t0 = time.time_ns()
    conn.request("GET", "/status/503")
    resp = conn.getresponse()
    body = resp.read()
    seen["/status/503"] = Seen(
        t0, time.time_ns(), resp.status, {k.lower(): v for k, v in resp.getheaders()}, body,
        threading.get_native_id(),
    )
    conn.close()
    assert (resp.status, body) == (503, b"status 503\n")
    pairs = by_path(env.out.wait(8, port), seen)
    for path, (server, client) in pairs.items():
        s = seen[path]
        check_pair(
            server, client, method="GET", path=path, status=s.status, srv=srv, cli=me,
            server_tid=s.server_tid, client_tid=s.tid, window=s.window, server_port=port,
            extra=tls_extra("1.3"),
        )
    # The keep-alive requests follow each other on one connection.
    keep = [pairs[f"/item/t{i}"] for i in range(3)]
    assert len({c["weft.socket.id"] for _, c in keep}) == 1
    for side in (0, 1):
        for key in ("weft.tcp.req_seq", "weft.tcp.resp_seq"):
            seqs = [p[side][key] for p in keep]
            assert all(0 < seq_delta(a, b) < 1 << 16 for a, b in zip(seqs, seqs[1:])), (key, seqs)
    assert env.metric("weft_ebpf_tls_no_socket") == 0


def test_a_process_with_its_own_libssl_is_found(env, started, tmp_path, cert):
    """A server started after weft loads a copy of libssl (another file, another
    inode) that no uprobe was attached to: the scan of new processes probes it."""
    system = Path(ssl._ssl.__file__)
    ldd = subprocess.run(["ldd", str(system)], capture_output=True, text=True, check=True)
    libssl = next(
        (Path(line.split("=>")[1].split()[0]) for line in ldd.stdout.splitlines()
         if line.strip().startswith("libssl.so.")),
        None,
    )
    if libssl is None:
        pytest.fail(f"Python's _ssl does not link a shared libssl:\n{ldd.stdout}", pytrace=False)
    own = tmp_path / "own-openssl"
    own.mkdir()
    shutil.copy2(libssl, own / libssl.name)
    before = env.metric("weft_ebpf_tls_libraries")
    port = env.port()
    vars_ = dict(os.environ, LD_LIBRARY_PATH=str(own))
    srv = start_https_server(started, tmp_path, port, cert, vars_)
    maps = Path(f"/proc/{srv.pid}/maps").read_text()
    assert str(own / libssl.name) in maps, "the server did not load the copy"
    assert wait_until(lambda: env.metric("weft_ebpf_tls_libraries") == before + 1, TLS_SCAN_WAIT), (
        f"the copy was never probed\n{env.weft.log_tail()}"
    )
    # Reached through the process's root, so a container's own file is the one probed.
    probed = f"/proc/{srv.pid}/root{own / libssl.name}"
    assert probed in env.weft.log_path.read_text(), env.weft.log_tail()
    # Debian's OpenSSL 3.0 is laid out as weft knows: the shared functions are probed.
    assert f"file={probed} probed=ssl_read_internal and ssl_write_internal" in (
        env.weft.log_path.read_text()
    ), env.weft.log_tail()
    t0 = time.time_ns()
    # The client (this process) uses the host's libssl, probed since weft started.
    r = requests.get(f"https://127.0.0.1:{port}/hello", verify=str(cert[0]), timeout=10)
    s = Seen(t0, time.time_ns(), r.status_code, {k.lower(): v for k, v in r.headers.items()},
             r.content, threading.get_native_id())
    assert (r.status_code, r.content) == (200, b"hello\n")
    server, client = by_path(env.out.wait(2, port), ["/hello"])["/hello"]
    check_pair(
        server, client, method="GET", path="/hello", status=200, srv=srv, cli=this_process(),
        server_tid=s.server_tid, client_tid=s.tid, window=s.window, server_port=port,
        extra=tls_extra("1.3"),
    )


def test_tls_off_makes_no_span(tmp_path, started, cert):
    port = free_port()
    out = tmp_path / "spans.jsonl"
    w = Weft(weft_binary(), tmp_path, "weft-tls-off")
    w.start(ebpf_config([port], out, tls={"openssl": False}))
    try:
        wait_capturing(w)
        ngx = start_nginx(started, tmp_path / "nginx", port, cert)
        assert ngx.comm == "nginx"
        seen, _ = curl(f"https://127.0.0.1:{port}/file.txt", "--cacert", str(cert[0]))
        assert seen.status == 200
        time.sleep(1.5)
        assert Output(out, w).for_ports(port) == []
        metrics = w.metrics()
        assert metric_sum(metrics, "weft_ebpf_tls_libraries", receiver="ebpf") == 0
        assert metric_sum(metrics, "weft_ebpf_non_http_streams", receiver="ebpf") == 0, (
            "ciphertext is known as TLS, not counted as a broken stream"
        )
    finally:
        code = w.stop()
    assert code == 0, w.log_tail()


def test_exported_functions_give_the_same_spans(tmp_path, started, cert):
    """`shared_functions: false` probes SSL_read, SSL_read_ex, SSL_write and
    SSL_write_ex themselves: curl and nginx use the plain forms, Python the _ex forms."""
    ngx_port, py_port = free_port(), free_port()
    out = tmp_path / "spans.jsonl"
    w = Weft(weft_binary(), tmp_path, "weft-tls-exported")
    w.start(ebpf_config([ngx_port, py_port], out, tls={"shared_functions": False}))
    try:
        wait_capturing(w)
        log = w.log_path.read_text()
        assert "probed=4 exported SSL_read/SSL_write functions" in log, w.log_tail()
        ngx = start_nginx(started, tmp_path / "nginx", ngx_port, cert)
        srv = start_https_server(started, tmp_path, py_port, cert)
        output = Output(out, w)
        seen, cli = curl(f"https://127.0.0.1:{ngx_port}/file.txt", "--cacert", str(cert[0]))
        assert seen.status == 200
        server, client = by_path(output.wait(2, ngx_port), ["/file.txt"])["/file.txt"]
        read_ahead_gap(server, client)
        check_pair(
            server, client, method="GET", path="/file.txt", status=200, srv=ngx, cli=cli,
            server_tid=ngx.pid, client_tid=seen.tid, window=seen.window, server_port=ngx_port,
            extra=tls_extra("1.3"), truncated_ok=True,
        )
        t0 = time.time_ns()
        r = requests.get(f"https://127.0.0.1:{py_port}/hello", verify=str(cert[0]), timeout=10)
        s = Seen(t0, time.time_ns(), r.status_code, {k.lower(): v for k, v in r.headers.items()},
                 r.content, threading.get_native_id())
        server, client = by_path(output.wait(2, py_port), ["/hello"])["/hello"]
        check_pair(
            server, client, method="GET", path="/hello", status=200, srv=srv, cli=this_process(),
            server_tid=s.server_tid, client_tid=s.tid, window=s.window, server_port=py_port,
            extra=tls_extra("1.3"),
        )
        assert metric_sum(w.metrics(), "weft_ebpf_tls_no_socket", receiver="ebpf") == 0
    finally:
        code = w.stop()
    assert code == 0, w.log_tail()
