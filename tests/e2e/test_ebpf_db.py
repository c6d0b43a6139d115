"""Database and cache spans end to end: real redis-server, memcached, PostgreSQL and
MariaDB from Debian on loopback, driven by the real Python clients (redis, pymemcache,
psycopg, PyMySQL, mysql-connector-python), and weft's ebpf receiver turning their
socket syscalls into one CLIENT span (in the test process) and one SERVER span (in the
server process) per command.

For every scripted session the test knows the exact list of commands on each
connection and checks both sides span by span: operation, sanitised query text,
namespace, status and status code, the system name, mirrored TCP sequence numbers,
thread and process ids, and times inside the wall time around the session. Redis and
memcached and MySQL are read on ports pinned to them in `protocols:`; PostgreSQL and a
second Redis are recognised from their first bytes on ports nobody configured.

The last tests run a traced HTTP service (apps/db_service.py) that calls Redis and
PostgreSQL inside its handler through the `autotracing` processor: the database spans
are children of the handler's server span, and a query carrying a sqlcommenter
`traceparent` joins the SDK trace it names.

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
from pathlib import Path

import pytest

from db_servers import Servers
from harness import E2E_DIR, Weft, ebpf_unavailable, free_port, otlp_receiver, wait_until, weft_binary
from ebpf_spans import CLIENT, SERVER, Output, Sp  # noqa: F401
from otlp_support import metric_sum

if ebpf_unavailable():
    pytest.skip(ebpf_unavailable(), allow_module_level=True)

import psycopg  # noqa: E402
import pymemcache.client.base as memcache  # noqa: E402
import pymemcache.exceptions  # noqa: E402
import pymysql  # noqa: E402
import redis  # noqa: E402

UNSET, ERROR = 0, 2
TOLERANCE_NS = 5_000_000
SETTLE = 0.8


# ---------------------------------------------------------------------------
# The environment: servers, and one weft for the module


@dataclass
class Env:
    weft: Weft
    raw: Output
    stitched: Output
    redis: int
    redis_detected: int
    memcached: int
    postgres: int
    mysql: int
    otlp: int
    http_ports: list[int]
    pids: dict

    def metric(self, name: str, **labels) -> float:
        return metric_sum(self.weft.metrics(), name, receiver="ebpf", **labels)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ebpf-db")
    servers = Servers(workdir)
    ports = {name: free_port() for name in ("redis", "redis_detected", "memcached", "postgres", "mysql")}
    http_ports = [free_port() for _ in range(4)]
    otlp = free_port()
    raw, stitched = workdir / "raw.jsonl", workdir / "stitched.jsonl"
    config = {
        "receivers": {
            "ebpf": {
                "include": {"ports": [*ports.values(), *http_ports]},
                "flush_interval": "100ms",
                "protocols": {
                    "redis": {"ports": [ports["redis"]]},
                    "memcached": {"ports": [ports["memcached"]]},
                    "mysql": {"ports": [ports["mysql"]]},
                },
            },
            "otlp": otlp_receiver(grpc_port=otlp),
        },
        "processors": {"autotracing": {"window": "2s", "grace": "2s", "max_hold": "30s"}},
        "exporters": {
            "file/raw": {"path": str(raw), "flush_interval": "100ms"},
            "file/stitched": {"path": str(stitched), "flush_interval": "100ms"},
        },
        "service": {"pipelines": {
            "traces/raw": {"receivers": ["ebpf"], "exporters": ["file/raw"]},
            "traces/stitched": {"receivers": ["ebpf", "otlp"], "processors": ["autotracing"],
                                "exporters": ["file/stitched"]},
        }},
    }
    w = Weft(weft_binary(), workdir, "weft-ebpf-db")
    try:
        pids = {
            "redis": servers.redis(ports["redis"]).pid,
            "redis_detected": servers.redis(ports["redis_detected"]).pid,
            "memcached": servers.memcached(ports["memcached"]).pid,
            "mysql": servers.mariadb(ports["mysql"]).pid,
        }
        servers.postgres(ports["postgres"])
        w.start(config)
        assert wait_until(lambda: w.health_status() == 200, 30), w.log_tail()
        yield Env(w, Output(raw), Output(stitched), ports["redis"], ports["redis_detected"],
                  ports["memcached"], ports["postgres"], ports["mysql"], otlp, http_ports, pids)
        code = w.stop()
        assert code == 0, f"weft exited with {code}\n{w.log_tail()}"
    finally:
        if w.alive():
            w.proc.kill()
            w.proc.wait()
        servers.stop()


# ---------------------------------------------------------------------------
# Checks


@dataclass
class Cmd:
    """One expected command: its span name, query text, and how it ended."""

    op: str
    text: str | None
    status: int = UNSET
    code: str | None = None
    namespace: str | None = None


def check_session(env: Env, spans: list[Sp], client_port: int, want: list[Cmd], *, system: str,
                  server_port: int, server_pid: int | None, window: tuple[int, int],
                  namespace: str | None = None, truncated: set[int] = frozenset(),
                  pipelined: set[int] = frozenset()) -> None:
    """The CLIENT and SERVER spans of one connection are exactly `want`, in order, and
    mirror each other. Each command starts once the previous one's answer was read
    (on both ends), except those in `pipelined`, sent before it."""
    mine = sorted((s for s in spans if s.get("client.port") == client_port), key=lambda s: s.start)
    listing = "\n".join(s.short() for s in mine)
    clients = [s for s in mine if s.kind == CLIENT]
    servers = [s for s in mine if s.kind == SERVER]
    for side, got in (("CLIENT", clients), ("SERVER", servers)):
        seen = [(s.name, s.get("db.query.text"), s.status, s.get("db.response.status_code")) for s in got]
        expected = [(c.op, c.text, c.status, c.code) for c in want]
        assert seen == expected, f"{side} spans of client port {client_port} differ:\n{listing}"
    for i, (c, s, cmd) in enumerate(zip(clients, servers, want)):
        for sp in (c, s):
            assert sp["db.system.name"] == system, sp.short()
            assert sp["db.operation.name"] == cmd.op, sp.short()
            assert sp.get("db.namespace") == (cmd.namespace or namespace), sp.short()
            assert sp["server.port"] == server_port, sp.short()
            assert sp["network.transport"] == "tcp"
            assert sp.get("weft.truncated", False) == (i in truncated), f"truncated? {sp.short()}"
            assert window[0] - TOLERANCE_NS <= sp.start <= sp.end <= window[1] + TOLERANCE_NS, sp.short()
            if cmd.status == ERROR:
                assert sp.message, f"an error span carries the message: {sp.short()}"
        assert c["process.pid"] == os.getpid()
        assert c["network.local.port"] == client_port and c["network.peer.port"] == server_port
        assert s["network.local.port"] == server_port and s["network.peer.port"] == client_port
        if server_pid is not None:
            assert s["process.pid"] == server_pid, s.short()
        # Both ends saw the same bytes: the same sequence numbers.
        assert c["weft.tcp.req_seq"] == s["weft.tcp.req_seq"], (c.short(), s.short())
        assert c.get("weft.tcp.resp_seq") == s.get("weft.tcp.resp_seq"), (c.short(), s.short())
        # The server starts reading no earlier than the client started writing.
        assert s.start + TOLERANCE_NS >= c.start
        if i > 0 and i not in pipelined:
            for side in (clients, servers):
                assert side[i].start >= side[i - 1].end, (
                    f"command {i} starts before command {i - 1} was answered:\n"
                    f"{side[i - 1].short()} end={side[i - 1].end}\n{side[i].short()} start={side[i].start}")


def client_port_of(sock: socket.socket) -> int:
    return sock.getsockname()[1]


def redis_client(port: int, **kw) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, lib_name=None, lib_version=None, **kw)


def redis_port_of(r: redis.Redis) -> int:
    conn = r.connection_pool.get_connection()
    try:
        return client_port_of(conn._sock)
    finally:
        r.connection_pool.release(conn)


# ---------------------------------------------------------------------------
# Redis


def test_redis_session_pipelines_transactions_and_errors(env):
    t0 = time.time_ns()
    r = redis_client(env.redis, protocol=2)
    r.set("user:1", "alice")
    assert r.get("user:1") == b"alice"
    assert r.get("missing") is None
    with pytest.raises(redis.ResponseError):
        r.lpush("user:1", "x")
    pipe = r.pipeline(transaction=False)
    for _ in range(10):
        pipe.incr("hits")
    assert pipe.execute() == list(range(1, 11))
    tx = r.pipeline(transaction=True)
    tx.set("a", 1)
    tx.incr("a")
    assert tx.execute() == [True, 2]
    r.delete("user:1")
    port = redis_port_of(r)
    r.close()
    t1 = time.time_ns()
    want = [
        Cmd("SET", "SET user:1 ?"),
        Cmd("GET", "GET user:1"),
        Cmd("GET", "GET missing"),
        Cmd("LPUSH", "LPUSH user:1 ?", ERROR, "WRONGTYPE"),
        *[Cmd("INCRBY", "INCRBY hits ?")] * 10,
        Cmd("MULTI", "MULTI"),
        Cmd("SET", "SET a ?"),
        Cmd("INCRBY", "INCRBY a ?"),
        Cmd("EXEC", "EXEC"),
        Cmd("DEL", "DEL user:1"),
    ]
    spans = env.raw.wait({port}, 2 * len(want))
    check_session(env, spans, port, want, system="redis", server_port=env.redis,
                  server_pid=env.pids["redis"], window=(t0, t1), namespace="0",
                  pipelined={*range(5, 14), 15, 16, 17})


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_redis_pubsub_pushes_are_not_replies(env, protocol):
    t0 = time.time_ns()
    r = redis_client(env.redis, protocol=protocol)
    sub = r.pubsub()
    sub.subscribe("news", "sports")
    confirmations = [sub.get_message(timeout=5) for _ in range(2)]
    assert [m["type"] for m in confirmations] == ["subscribe", "subscribe"], confirmations
    sub_port = client_port_of(sub.connection._sock)
    for i in range(3):
        assert r.publish("news", f"hello {i}") == 1
    got = [sub.get_message(timeout=5) for _ in range(3)]
    assert [m["data"] for m in got] == [b"hello 0", b"hello 1", b"hello 2"], got
    r.hset("h", mapping={"f1": "v1", "f2": "v2"})
    assert r.hgetall("h") == {b"f1": b"v1", b"f2": b"v2"}
    sub.unsubscribe("news")
    assert sub.get_message(timeout=5)["type"] == "unsubscribe"
    pub_port = redis_port_of(r)
    sub.close()
    r.close()
    t1 = time.time_ns()
    # RESP3 connections open with HELLO, and redis-py then asks for maintenance
    # notifications, which this server version does not know.
    hello = [Cmd("HELLO", "HELLO ?"), Cmd("CLIENT", "CLIENT MAINT_NOTIFICATIONS ? ? ?", ERROR, "ERR")] \
        if protocol == 3 else []
    want_sub = [*hello, Cmd("SUBSCRIBE", "SUBSCRIBE news ?"), Cmd("UNSUBSCRIBE", "UNSUBSCRIBE news")]
    want_pub = [*hello, *[Cmd("PUBLISH", "PUBLISH news ?")] * 3, Cmd("HSET", "HSET h ? ? ? ?"),
                Cmd("HGETALL", "HGETALL h")]
    spans = env.raw.wait({sub_port, pub_port}, 2 * (len(want_sub) + len(want_pub)))
    check_session(env, spans, sub_port, want_sub, system="redis", server_port=env.redis,
                  server_pid=env.pids["redis"], window=(t0, t1), namespace="0")
    check_session(env, spans, pub_port, want_pub, system="redis", server_port=env.redis,
                  server_pid=env.pids["redis"], window=(t0, t1), namespace="0")


def test_redis_recognised_by_its_first_bytes_on_20_pipelined_connections(env):
    n_conns, n_keys = 20, 5
    ports: dict[int, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(n_conns)

    def worker(i: int) -> None:
        try:
            r = redis_client(env.redis_detected, protocol=2)
            r.ping()
            start.wait(10)
            pipe = r.pipeline(transaction=False)
            for k in range(n_keys):
                pipe.set(f"c{i}:k{k}", k)
            for k in range(n_keys):
                pipe.get(f"c{i}:k{k}")
            pipe.execute()
            ports[i] = redis_port_of(r)
            r.close()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t0 = time.time_ns()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    t1 = time.time_ns()
    assert not errors, errors
    per_conn = 1 + 2 * n_keys
    spans = env.raw.wait(set(ports.values()), 2 * n_conns * per_conn)
    for i, port in ports.items():
        want = [Cmd("PING", "PING"),
                *[Cmd("SET", f"SET c{i}:k{k} ?") for k in range(n_keys)],
                *[Cmd("GET", f"GET c{i}:k{k}") for k in range(n_keys)]]
        check_session(env, spans, port, want, system="redis", server_port=env.redis_detected,
                      server_pid=env.pids["redis_detected"], window=(t0, t1), namespace="0",
                      pipelined=set(range(2, per_conn)))


# ---------------------------------------------------------------------------
# memcached


def test_memcached_session(env):
    t0 = time.time_ns()
    m = memcache.Client(("127.0.0.1", env.memcached), default_noreply=False)
    m.set("a", b"1")
    assert m.get("a") == b"1"
    assert m.get("missing") is None
    assert m.get_many(["a", "missing"]) == {"a": b"1"}
    big = b"x" * 20000
    m.set("big", big)
    assert m.get("big") == big
    assert m.incr("a", 5) == 6
    first = client_port_of(m.sock)
    # pymemcache drops the connection after a CLIENT_ERROR and opens a new one.
    with pytest.raises(pymemcache.exceptions.MemcacheClientError):
        m.incr("big", 1)
    assert m.delete("a") is True
    assert m.delete("a") is False
    m.set("quiet", b"1", noreply=True)
    assert m.get("quiet") == b"1"
    second = client_port_of(m.sock)
    assert second != first
    m.close()
    t1 = time.time_ns()
    want_first = [
        Cmd("set", "set a 0 0 1"),
        Cmd("get", "get a"),
        Cmd("get", "get missing"),
        Cmd("get", "get a missing"),
        Cmd("set", "set big 0 0 20000"),
        Cmd("get", "get big"),
        Cmd("incr", "incr a 5"),
        Cmd("incr", "incr big 1", ERROR, "CLIENT_ERROR"),
    ]
    want_second = [
        Cmd("delete", "delete a"),
        Cmd("delete", "delete a"),
        Cmd("set", "set quiet 0 0 1 noreply"),
        Cmd("get", "get quiet"),
    ]
    spans = env.raw.wait({first, second}, 2 * (len(want_first) + len(want_second)))
    # The big value's bytes were never captured: its set and get are marked truncated,
    # and the get (whose END fell in uncaptured bytes) ends at its last bytes seen.
    check_session(env, spans, first, want_first, system="memcached", server_port=env.memcached,
                  server_pid=env.pids["memcached"], window=(t0, t1), truncated={4, 5})
    check_session(env, spans, second, want_second, system="memcached", server_port=env.memcached,
                  server_pid=env.pids["memcached"], window=(t0, t1))


# ---------------------------------------------------------------------------
# PostgreSQL


def pg_connect(env: Env, **kw) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=env.postgres, user="postgres", dbname="postgres",
                           sslmode="disable", autocommit=True, **kw)


def pg_port(conn: psycopg.Connection) -> int:
    s = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        return client_port_of(s)
    finally:
        s.close()


def test_postgres_simple_extended_prepared_copy_and_pipeline(env):
    t0 = time.time_ns()
    conn = pg_connect(env)
    port = pg_port(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
    conn.execute("INSERT INTO items VALUES (%s, %s)", (1, "apple"))
    assert conn.execute("SELECT name FROM items WHERE id = %s", (1,)).fetchall() == [("apple",)]
    with pytest.raises(psycopg.errors.UndefinedTable):
        conn.execute("SELECT * FROM missing_table")
    for i in range(3):
        conn.execute("SELECT name FROM items WHERE id = %s AND name <> 'x'", (i,), prepare=True).fetchall()
    with conn.cursor().copy("COPY items (id, name) FROM STDIN") as cp:
        for i in range(2, 40):
            cp.write_row((i, f"item {i}"))
    with conn.pipeline():
        conn.execute("INSERT INTO items VALUES (%s, %s)", (100, "pear"))
        conn.execute("SELECT count(*) FROM items")
    with pytest.raises(psycopg.errors.DivisionByZero):
        with conn.pipeline():
            conn.execute("SELECT 1 / %s", (0,))
            conn.execute("SELECT %s", (2,))
    rows = conn.execute("SELECT i, repeat('y', 50) FROM generate_series(1, 2000) AS i").fetchall()
    assert len(rows) == 2000
    conn.execute("SELECT 1")
    conn.close()
    t1 = time.time_ns()
    want = [
        Cmd("CREATE", "CREATE TABLE items (id int PRIMARY KEY, name text)"),
        Cmd("INSERT", "INSERT INTO items VALUES ($1, $2)"),
        Cmd("SELECT", "SELECT name FROM items WHERE id = $1"),
        Cmd("SELECT", "SELECT * FROM missing_table", ERROR, "42P01"),
        *[Cmd("SELECT", "SELECT name FROM items WHERE id = $1 AND name <> ?")] * 3,
        Cmd("COPY", "COPY items (id, name) FROM STDIN"),
        Cmd("INSERT", "INSERT INTO items VALUES ($1, $2)"),
        Cmd("SELECT", "SELECT count(*) FROM items"),
        Cmd("SELECT", "SELECT ? / $1", ERROR, "22012"),
        Cmd("SELECT", "SELECT i, repeat(?, ?) FROM generate_series(?, ?) AS i"),
        Cmd("SELECT", "SELECT ?"),
    ]
    spans = env.raw.wait({port}, 2 * len(want))
    check_session(env, spans, port, want, system="postgresql", server_port=env.postgres,
                  server_pid=None, window=(t0, t1), namespace="postgres", truncated={len(want) - 2},
                  pipelined={9})
    # One backend process serves the connection.
    assert len({s["process.pid"] for s in spans if s.kind == SERVER}) == 1


# ---------------------------------------------------------------------------
# MySQL / MariaDB


def test_mariadb_queries_errors_multi_results_and_init_db(env):
    t0 = time.time_ns()
    db = pymysql.connect(host="127.0.0.1", port=env.mysql, user="root", database="mysql",
                         client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    port = client_port_of(db._sock)
    cur = db.cursor()
    cur.execute("CREATE DATABASE IF NOT EXISTS shop")
    db.select_db("shop")
    cur.execute("CREATE TABLE IF NOT EXISTS items (id INT PRIMARY KEY, name VARCHAR(50))")
    cur.execute("INSERT INTO items VALUES (%s, %s)", (1, "apple"))
    cur.execute("SELECT name FROM items WHERE id = %s", (1,))
    assert cur.fetchall() == (("apple",),)
    with pytest.raises(pymysql.err.ProgrammingError):
        cur.execute("SELECT * FROM missing_table")
    cur.execute("SELECT 1; SELECT 2, 3")
    while cur.nextset():
        pass
    cur.execute("SELECT seq, REPEAT('z', 40) FROM seq_1_to_3000")
    assert len(cur.fetchall()) == 3000
    db.ping(reconnect=False)
    cur.execute("SELECT 4")
    db.close()
    t1 = time.time_ns()
    want = [
        Cmd("SET", "SET NAMES utf8mb4", namespace="mysql"),
        Cmd("SET", "SET AUTOCOMMIT = ?", namespace="mysql"),
        Cmd("CREATE", "CREATE DATABASE IF NOT EXISTS shop", namespace="mysql"),
        Cmd("USE", None, namespace="shop"),
        Cmd("CREATE", "CREATE TABLE IF NOT EXISTS items (id INT PRIMARY KEY, name VARCHAR(?))"),
        Cmd("INSERT", "INSERT INTO items VALUES (?, ?)"),
        Cmd("SELECT", "SELECT name FROM items WHERE id = ?"),
        Cmd("SELECT", "SELECT * FROM missing_table", ERROR, "1146"),
        Cmd("SELECT", "SELECT ?; SELECT ?, ?"),
        Cmd("SELECT", "SELECT seq, REPEAT(?, ?) FROM seq_1_to_3000"),
        Cmd("PING", None),
        Cmd("SELECT", "SELECT ?"),
    ]
    spans = env.raw.wait({port}, 2 * len(want))
    check_session(env, spans, port, want, system="mariadb", server_port=env.mysql,
                  server_pid=env.pids["mysql"], window=(t0, t1), namespace="shop", truncated={9})


def test_mariadb_prepared_statements_remember_their_text(env):
    import mysql.connector

    t0 = time.time_ns()
    db = mysql.connector.connect(host="127.0.0.1", port=env.mysql, user="root", database="mysql",
                                 use_pure=True, ssl_disabled=True)
    port = client_port_of(db._socket.sock)
    cur = db.cursor(prepared=True)
    for i in range(3):
        cur.execute("SELECT host, %s FROM user WHERE user = %s", (i, "nobody"))
        cur.fetchall()
    cur.close()
    db.close()
    t1 = time.time_ns()
    # The connector's own setup queries come first; the prepared statement is
    # prepared once and executed three times with its text, and its close makes none.
    assert wait_until(lambda: len(env.raw.of_clients({port})) >= 8, 20, 0.1)
    time.sleep(SETTLE)
    got = sorted((s for s in env.raw.of_clients({port}) if s.kind == CLIENT), key=lambda s: s.start)
    text = "SELECT host, ? FROM user WHERE user = ?"
    names = [(s.name, s.get("db.query.text")) for s in got]
    assert [n for n in names if n[1] == text] == [("PREPARE", text)] + [("SELECT", text)] * 3, names
    for s in got:
        assert t0 - TOLERANCE_NS <= s.start <= s.end <= t1 + TOLERANCE_NS, s.short()
        assert s["db.system.name"] == "mariadb" and s.status == UNSET, s.short()


# ---------------------------------------------------------------------------
# Concurrency across protocols


def _concurrent(env: Env, n_conns: int, connect, run, close, want_of, **check) -> None:
    ports: dict[int, int] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_conns)

    def worker(i: int) -> None:
        try:
            c, port = connect()
            barrier.wait(20)
            run(c, i)
            ports[i] = port
            close(c)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t0 = time.time_ns()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    t1 = time.time_ns()
    assert not errors, errors
    total = sum(len(want_of(i)) for i in ports)
    spans = env.raw.wait(set(ports.values()), 2 * total, server_port=check["server_port"])
    for i, port in ports.items():
        check_session(env, spans, port, want_of(i), window=(t0, t1), **check)


def test_20_concurrent_connections_per_protocol(env):
    n = 20

    def mc_connect():
        m = memcache.Client(("127.0.0.1", env.memcached), default_noreply=False)
        m.version()
        return m, client_port_of(m.sock)

    def mc_run(m, i):
        for k in range(3):
            m.set(f"m{i}:{k}", b"v")
            assert m.get(f"m{i}:{k}") == b"v"

    _concurrent(env, n, mc_connect, mc_run, lambda m: m.close(),
                lambda i: [Cmd("version", "version")]
                + [c for k in range(3) for c in (Cmd("set", f"set m{i}:{k} 0 0 1"), Cmd("get", f"get m{i}:{k}"))],
                system="memcached", server_port=env.memcached, server_pid=env.pids["memcached"])

    def pg_conn():
        c = pg_connect(env)
        return c, pg_port(c)

    def pg_run(c, i):
        for k in range(3):
            assert c.execute("SELECT %s::int * 2", (k,)).fetchone() == (2 * k,)

    _concurrent(env, n, pg_conn, pg_run, lambda c: c.close(),
                lambda i: [Cmd("SELECT", "SELECT $1::int * ?")] * 3,
                system="postgresql", server_port=env.postgres, server_pid=None, namespace="postgres")

    def my_conn():
        db = pymysql.connect(host="127.0.0.1", port=env.mysql, user="root", database="mysql")
        return db, client_port_of(db._sock)

    def my_run(db, i):
        cur = db.cursor()
        for k in range(3):
            cur.execute("SELECT %s * 2", (k,))
            assert cur.fetchone() == (2 * k,)

    _concurrent(env, n, my_conn, my_run, lambda db: db.close(),
                lambda i: [Cmd("SET", "SET NAMES utf8mb4"), Cmd("SET", "SET AUTOCOMMIT = ?")]
                + [Cmd("SELECT", "SELECT ? * ?")] * 3,
                system="mariadb", server_port=env.mysql, server_pid=env.pids["mysql"], namespace="mysql")


# ---------------------------------------------------------------------------
# Bad input


def _raw_exchange(port: int, payload: bytes) -> int:
    """Sends `payload`, reads what comes back until the server closes or goes quiet,
    and returns the client port."""
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    cport = client_port_of(s)
    try:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    except OSError:
        pass
    finally:
        s.close()
    return cport


def test_garbage_and_the_wrong_protocol_make_no_span_and_are_counted(env):
    before = {p: env.metric("weft_ebpf_db_protocol_errors", protocol=p)
              for p in ("redis", "memcached", "postgresql")}
    ports = {
        # HTTP to Redis: Redis answers the request line, then drops the connection.
        _raw_exchange(env.redis, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        # Binary garbage to memcached.
        _raw_exchange(env.memcached, bytes(range(1, 200))),
        # A Redis command to PostgreSQL's port (read as PostgreSQL only once its first
        # bytes say so: they do not, so nothing is made of it).
        _raw_exchange(env.postgres, b"*1\r\n$4\r\nPING\r\n"),
        # A RESP array whose element is not a bulk string.
        _raw_exchange(env.redis, b"*1\r\n:12\r\n"),
        # Half a command, then the connection closes.
        _raw_exchange(env.redis, b"*2\r\n$3\r\nGET\r\n$10\r\nabc"),
    }

    def counted():
        now = {p: env.metric("weft_ebpf_db_protocol_errors", protocol=p) for p in before}
        return now["redis"] >= before["redis"] + 2 and now["memcached"] >= before["memcached"] + 1

    assert wait_until(counted, 10, 0.1), {p: env.metric("weft_ebpf_db_protocol_errors", protocol=p)
                                           for p in before}
    time.sleep(SETTLE)
    assert env.raw.of_clients(ports) == [], "\n".join(s.short() for s in env.raw.of_clients(ports))
    # The servers still work, and weft still reads them.
    r = redis_client(env.redis, protocol=2)
    r.set("after", "garbage")
    port = redis_port_of(r)
    r.close()
    env.raw.wait({port}, 2)


# ---------------------------------------------------------------------------
# A traced service: database calls inside a handler, through autotracing


def test_handler_database_calls_are_children_of_the_handler_span(env, tmp_path):
    http_port = env.http_ports[0]
    log = open(tmp_path / "db_service.log", "wb")
    app = subprocess.Popen(
        [sys.executable, str(E2E_DIR / "apps" / "db_service.py"), str(http_port), str(env.redis),
         str(env.postgres), f"127.0.0.1:{env.otlp}"],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    try:
        assert app.stdout.readline().decode().strip() == "ready", (tmp_path / "db_service.log").read_text()
        results = {}
        for path in ("/orders/1", "/orders/2", "/sdk/3"):
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=10) as resp:
                results[path] = json.loads(resp.read())
    finally:
        app.terminate()
        app.wait(10)
    # The stitched output: per request, the service's server span, its Redis and
    # PostgreSQL client spans as children in call order, and the servers' spans
    # below them.
    def tree_of(path: str):
        spans = env.stitched.spans()
        roots = [s for s in spans if s.kind == SERVER and s.get("url.path") == path
                 and s["process.pid"] == app.pid]
        if len(roots) != 1:
            return None
        root = roots[0]
        same = [s for s in spans if s.trace_id == root.trace_id]
        return root, same

    for path in ("/orders/1", "/orders/2"):
        assert wait_until(lambda: (t := tree_of(path)) is not None and len(t[1]) >= 6, 30, 0.2), (
            path, [s.short() for s in env.stitched.spans() if s.get("url.path") == path])
        time.sleep(SETTLE)
        root, same = tree_of(path)
        listing = "\n".join(f"{s.short()} span={s.span_id.hex()} parent={s.parent.hex()}" for s in same)
        children = sorted((s for s in same if s.parent == root.span_id and s.kind == CLIENT),
                          key=lambda s: s.start)
        assert [(s.name, s.get("db.system.name")) for s in children] == [
            ("GET", "redis"), ("SELECT", "postgresql")], listing
        for c in children:
            below = [s for s in same if s.parent == c.span_id]
            assert [(s.kind, s.name) for s in below] == [(SERVER, c.name)], listing
        # The test's own CLIENT span is the root's parent; nothing else is in the trace.
        assert len(same) == 6, listing

    sdk = results["/sdk/3"]
    trace_id, span_id = bytes.fromhex(sdk["trace_id"]), bytes.fromhex(sdk["span_id"])

    def joined():
        return [s for s in env.stitched.spans()
                if s.get("db.system.name") == "postgresql" and s.kind == CLIENT and s.trace_id == trace_id]

    assert wait_until(lambda: len(joined()) == 1, 30, 0.2), [s.short() for s in env.stitched.spans()
                                                             if s.get("db.system.name") == "postgresql"]
    pg = joined()[0]
    assert pg.parent == span_id, f"parent {pg.parent.hex()}, want the SDK span {span_id.hex()}"
    assert pg["db.query.text"].startswith("SELECT ?"), pg.short()
