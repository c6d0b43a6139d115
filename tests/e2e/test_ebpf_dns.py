"""DNS over UDP end to end: a real dnsmasq from Debian on a loopback port weft is told
is a DNS port (`protocols: dns: ports:`), queried by dnspython from this process, and
weft's ebpf receiver turning each query and its answer into one CLIENT span (this
process) and one SERVER span (dnsmasq).

Every lookup is checked on both ends: question name and type, response code, answer
count, status, the ports and processes of both ends, the message id, and times inside
the wall time around it. Then 20 threads look up at once, two identical queries on one
socket are left unpaired (either answer could be either's), and datagrams that are not
DNS make no span and are counted.

Needs root and BTF like test_ebpf.py (the module skips with one line otherwise).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass

import pytest

from db_servers import Servers
from ebpf_spans import CLIENT, SERVER, SETTLE, Output, Sp
from harness import Weft, ebpf_unavailable, free_port, wait_until, weft_binary
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
    dns: int
    dns_pid: int

    def metric(self, name: str) -> float:
        return metric_sum(self.weft.metrics(), name, receiver="ebpf")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ebpf-dns")
    servers = Servers(workdir)
    port = free_port()
    raw = workdir / "raw.jsonl"
    config = {
        "receivers": {
            "ebpf": {
                "flush_interval": "100ms",
                "protocols": {"dns": {"ports": [port]}},
            },
        },
        "exporters": {"file/raw": {"path": str(raw), "flush_interval": "100ms"}},
        "service": {"pipelines": {"traces/raw": {"receivers": ["ebpf"], "exporters": ["file/raw"]}}},
    }
    w = Weft(weft_binary(), workdir, "weft-ebpf-dns")
    try:
        pid = servers.dnsmasq(port).pid
        w.start(config)
        assert wait_until(lambda: w.health_status() == 200, 30), w.log_tail()
        yield Env(w, Output(raw), port, pid)
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
