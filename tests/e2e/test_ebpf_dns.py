"""DNS over UDP end to end: a real dnsmasq from Debian on a loopback port weft is told
is a DNS port (`protocols: dns: ports:`), queried by dnspython from this process, and
weft's ebpf receiver turning each query and its answer into one CLIENT span (this
process) and one SERVER span (dnsmasq).

Every lookup is checked on both ends: question name and type, response code, answer
count, status, the ports and processes of both ends, the message id, and times inside
the wall time around it. Then 20 threads look up at once, two identical queries on one
socket are left unpaired (either answer could be either's), datagrams that are not
DNS make no span and are counted, lookups over TCP are framed by their length, and a
lookup made inside an HTTP handler (apps/dns_service.py) is, through `autotracing`, a
child of the handler's server span.

Needs root and BTF like test_ebpf.py (the module skips with one line otherwise).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass

import pytest

from db_servers import Servers
from ebpf_spans import CLIENT, SERVER, SETTLE, Output, Sp
from harness import E2E_DIR, Weft, ebpf_unavailable, free_port, wait_until, weft_binary
from otlp_support import metric_sum

if ebpf_unavailable():
    pytest.skip(ebpf_unavailable(), allow_module_level=True)

import dns.flags  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rcode  # noqa: E402

UNSET, ERROR = 0, 2
TOLERANCE_NS = 5_000_000
MARK = "dns.question.name"


@dataclass
class Env:
    weft: Weft
    raw: Output
    stitched: Output
    dns: int
    dns_pid: int
    http: int

    def metric(self, name: str) -> float:
        return metric_sum(self.weft.metrics(), name, receiver="ebpf")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ebpf-dns")
    servers = Servers(workdir)
    port, http = free_port(), free_port()
    raw, stitched = workdir / "raw.jsonl", workdir / "stitched.jsonl"
    config = {
        "receivers": {
            "ebpf": {
                "flush_interval": "100ms",
                "protocols": {"dns": {"ports": [port]}},
            },
        },
        "processors": {"autotracing": {"window": "2s", "grace": "2s", "max_hold": "30s"}},
        "exporters": {
            "file/raw": {"path": str(raw), "flush_interval": "100ms"},
            "file/stitched": {"path": str(stitched), "flush_interval": "100ms"},
        },
        "service": {"pipelines": {
            "traces/raw": {"receivers": ["ebpf"], "exporters": ["file/raw"]},
            "traces/stitched": {"receivers": ["ebpf"], "processors": ["autotracing"],
                                "exporters": ["file/stitched"]},
        }},
    }
    w = Weft(weft_binary(), workdir, "weft-ebpf-dns")
    try:
        pid = servers.dnsmasq(port).pid
        w.start(config)
        assert wait_until(lambda: w.health_status() == 200, 30), w.log_tail()
        yield Env(w, Output(raw), Output(stitched), port, pid, http)
        code = w.stop()
        assert code == 0, f"weft exited with {code}\n{w.log_tail()}"
    finally:
        if w.alive():
            w.proc.kill()
            w.proc.wait()
        servers.stop()


@dataclass
class Lookup:
    name: str
    qtype: str
    rcode: str
    answers: int
    client_port: int
    msg_id: int
    window: tuple[int, int]
    transport: str = "udp"


def lookup(env: Env, name: str, qtype: str, transport: str = "udp") -> Lookup:
    """One query from a fresh socket on a port of our choosing (dnspython's own UDP
    sockets are unconnected: sendto, recvfrom; over TCP it connects)."""
    q = dns.message.make_query(name, qtype)
    q.flags &= ~dns.flags.RD
    sport = free_port()
    query = dns.query.udp if transport == "udp" else dns.query.tcp
    t0 = time.time_ns()
    r = query(q, "127.0.0.1", port=env.dns, source="127.0.0.1", source_port=sport, timeout=5)
    t1 = time.time_ns()
    answers = sum(len(rrset) for rrset in r.answer)
    return Lookup(name, qtype, dns.rcode.to_text(r.rcode()), answers, sport, q.id, (t0, t1), transport)


def check(env: Env, spans: list[Sp], want: Lookup) -> None:
    mine = [s for s in spans if s.get("client.port") == want.client_port]
    listing = "\n".join(s.short() for s in mine)
    assert sorted(s.kind for s in mine) == [SERVER, CLIENT], listing
    status = ERROR if want.rcode in ("SERVFAIL", "REFUSED", "FORMERR", "NOTIMP") else UNSET
    for s in mine:
        assert s.name == f"DNS {want.qtype}", listing
        assert s[MARK] == want.name.rstrip(".").lower(), listing
        assert s["dns.question.type"] == want.qtype, listing
        assert s["dns.response_code"] == want.rcode, listing
        assert s["dns.answer.count"] == want.answers, listing
        assert s["weft.dns.id"] == want.msg_id, listing
        assert s["network.transport"] == want.transport
        assert s["server.port"] == env.dns and s["server.address"] == "127.0.0.1", listing
        assert s["client.address"] == "127.0.0.1", listing
        assert s.status == status, listing
        if status == ERROR:
            assert s.message == want.rcode
        assert want.window[0] - TOLERANCE_NS <= s.start <= s.end <= want.window[1] + TOLERANCE_NS, s.short()
    c = next(s for s in mine if s.kind == CLIENT)
    sv = next(s for s in mine if s.kind == SERVER)
    assert c["process.pid"] == os.getpid(), listing
    if want.transport == "udp":
        assert sv["process.pid"] == env.dns_pid, listing
    else:
        # dnsmasq answers each TCP connection in a child process of its own.
        assert sv["process.pid"] not in (os.getpid(), env.dns_pid), listing
    assert c["network.local.port"] == want.client_port and c["network.peer.port"] == env.dns
    assert sv["network.local.port"] == env.dns and sv["network.peer.port"] == want.client_port
    # The server read the query after the client sent it and answered before the
    # client read the answer.
    assert c.start <= sv.start + TOLERANCE_NS and sv.end <= c.end + TOLERANCE_NS, listing


def test_lookups_make_one_client_and_one_server_span_each(env):
    session = [
        lookup(env, "svc.test.", "A"),
        lookup(env, "SVC.test.", "AAAA"),
        lookup(env, "db.test.", "A"),
        lookup(env, "missing.test.", "A"),
        lookup(env, "example.org.", "MX"),
    ]
    assert [(x.rcode, x.answers) for x in session] == [
        ("NOERROR", 1), ("NOERROR", 0), ("NOERROR", 2), ("NXDOMAIN", 0), ("REFUSED", 0)]
    spans = env.raw.wait({x.client_port for x in session}, 2 * len(session), marker=MARK)
    for x in session:
        check(env, spans, x)


def test_20_threads_looking_up_at_once(env):
    n, per = 20, 3
    got: dict[int, list[Lookup]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        try:
            barrier.wait(10)
            got[i] = [lookup(env, f"host{i}-{k}.test.", "A") for k in range(per)]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    all_lookups = [x for xs in got.values() for x in xs]
    assert len(all_lookups) == n * per
    spans = env.raw.wait({x.client_port for x in all_lookups}, 2 * n * per, marker=MARK)
    for x in all_lookups:
        assert x.rcode == "NXDOMAIN"
        check(env, spans, x)


def test_twin_queries_on_one_socket_are_not_paired(env):
    """Two queries with the same id, name and type in flight on one socket: each answer
    could be either's, so weft makes no span of them and counts the ambiguity."""
    before = env.metric("weft_ebpf_dns_ambiguous")
    q = dns.message.make_query("twin.test.", "A")
    wire = q.to_wire()
    sport = free_port()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", sport))
    s.settimeout(5)
    try:
        s.sendto(wire, ("127.0.0.1", env.dns))
        s.sendto(wire, ("127.0.0.1", env.dns))
        answers = [s.recvfrom(4096)[0] for _ in range(2)]
    finally:
        s.close()
    assert all(dns.message.from_wire(a).id == q.id for a in answers)
    assert wait_until(lambda: env.metric("weft_ebpf_dns_ambiguous") >= before + 1, 10, 0.1), \
        env.metric("weft_ebpf_dns_ambiguous")
    time.sleep(SETTLE)
    mine = [sp for sp in env.raw.spans() if sp.get(MARK) == "twin.test"]
    listing = "\n".join(sp.short() for sp in mine)
    # This socket had both in flight: no CLIENT span. dnsmasq answers a query before
    # it reads the next one, so on its socket each answer had one owner: two SERVER
    # spans, one after the other.
    assert [sp.kind for sp in mine] == [SERVER, SERVER], listing
    first, second = sorted(mine, key=lambda sp: sp.start)
    assert first.end <= second.start, listing
    # The next lookup from a fresh socket is read as usual.
    x = lookup(env, "svc.test.", "A")
    check(env, env.raw.wait({x.client_port}, 2, marker=MARK), x)


def test_datagrams_that_are_not_dns_make_no_span_and_are_counted(env):
    before = env.metric("weft_ebpf_dns_bad_messages")
    sport = free_port()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", sport))
    try:
        for junk in (b"\x00", b"GET / HTTP/1.1\r\n\r\n", bytes(range(64))):
            s.sendto(junk, ("127.0.0.1", env.dns))
    finally:
        s.close()
    # Three sent by this socket, and three read by dnsmasq's.
    assert wait_until(lambda: env.metric("weft_ebpf_dns_bad_messages") >= before + 6, 10, 0.1), \
        env.metric("weft_ebpf_dns_bad_messages") - before
    time.sleep(SETTLE)
    assert env.raw.of_clients({sport}, MARK) == []
    x = lookup(env, "db.test.", "A")
    check(env, env.raw.wait({x.client_port}, 2, marker=MARK), x)


def test_lookups_over_tcp_are_framed_by_their_length(env):
    """DNS over TCP on the same port: each connection's messages are framed by their
    2-byte length; the spans say `tcp`."""
    session = [
        lookup(env, "db.test.", "A", "tcp"),
        lookup(env, "nothing.test.", "AAAA", "tcp"),
    ]
    assert [(x.rcode, x.answers) for x in session] == [("NOERROR", 2), ("NXDOMAIN", 0)]
    spans = env.raw.wait({x.client_port for x in session}, 2 * len(session), marker=MARK)
    for x in session:
        check(env, spans, x)


def test_a_lookup_inside_a_handler_is_a_child_of_the_handler_span(env, tmp_path):
    """Through `autotracing`: the service's DNS client span is a child of its HTTP
    server span (same thread: the syscall trace id, T2)."""
    log = open(tmp_path / "dns_service.log", "wb")
    app = subprocess.Popen([sys.executable, str(E2E_DIR / "apps" / "dns_service.py"), str(env.http),
                            str(env.dns)], stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    try:
        assert app.stdout.readline().decode().strip() == "ready", (tmp_path / "dns_service.log").read_text()
        for name in ("svc.test", "gone.test"):
            with urllib.request.urlopen(f"http://127.0.0.1:{env.http}/lookup/{name}", timeout=10) as resp:
                assert json.loads(resp.read())["rcode"] == ("NOERROR" if name == "svc.test" else "NXDOMAIN")
    finally:
        app.terminate()
        app.wait(10)

    def tree(name: str):
        spans = env.stitched.spans()
        roots = [s for s in spans if s.kind == SERVER and s.get("url.path") == f"/lookup/{name}"
                 and s["process.pid"] == app.pid]
        lookups = [s for s in spans if s.kind == CLIENT and s.get(MARK) == name
                   and s["process.pid"] == app.pid]
        if len(roots) != 1 or len(lookups) != 1:
            return None
        return roots[0], lookups[0]

    for name in ("svc.test", "gone.test"):
        assert wait_until(lambda: tree(name) is not None, 30, 0.2), [
            s.short() for s in env.stitched.spans() if s.get(MARK) == name or s.get("url.path")]
        root, lookup_span = tree(name)
        assert lookup_span.trace_id == root.trace_id, (root.short(), lookup_span.short())
        assert lookup_span.parent == root.span_id, (root.short(), lookup_span.short())
        assert root.start <= lookup_span.start and lookup_span.end <= root.end


def test_queries_sent_together_with_sendmmsg(env):
    """glibc's resolver sends a name's A and AAAA queries in one sendmmsg on a connected
    socket; each message is read (the one being sent is the first whose msg_len the
    kernel has not filled yet)."""
    import ctypes

    class Iovec(ctypes.Structure):
        _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]

    class Msghdr(ctypes.Structure):
        _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                    ("msg_iov", ctypes.POINTER(Iovec)), ("msg_iovlen", ctypes.c_size_t),
                    ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                    ("msg_flags", ctypes.c_int)]

    class Mmsghdr(ctypes.Structure):
        _fields_ = [("msg_hdr", Msghdr), ("msg_len", ctypes.c_uint)]

    libc = ctypes.CDLL(None, use_errno=True)
    queries = [dns.message.make_query("db.test.", t) for t in ("A", "AAAA")]
    wires = [ctypes.create_string_buffer(q.to_wire(), len(q.to_wire())) for q in queries]
    iovs = (Iovec * 2)(*[Iovec(ctypes.cast(w, ctypes.c_void_p), len(w.raw)) for w in wires])
    vec = (Mmsghdr * 2)()
    for i in range(2):
        vec[i].msg_hdr.msg_iov = ctypes.pointer(iovs[i])
        vec[i].msg_hdr.msg_iovlen = 1
    sport = free_port()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", sport))
    s.connect(("127.0.0.1", env.dns))
    s.settimeout(5)
    t0 = time.time_ns()
    try:
        sent = libc.sendmmsg(s.fileno(), vec, 2, 0)
        assert sent == 2, os.strerror(ctypes.get_errno())
        answers = [dns.message.from_wire(s.recv(4096)) for _ in range(2)]
    finally:
        s.close()
    t1 = time.time_ns()
    by_type = {a.question[0].rdtype: a for a in answers}
    assert len(by_type) == 2
    want = [Lookup("db.test.", "A", "NOERROR", 2, sport, queries[0].id, (t0, t1)),
            Lookup("db.test.", "AAAA", "NOERROR", 0, sport, queries[1].id, (t0, t1))]
    spans = env.raw.wait({sport}, 4, marker=MARK)
    for x in want:
        check(env, [sp for sp in spans if sp["dns.question.type"] == x.qtype], x)
