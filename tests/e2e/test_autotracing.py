"""The `autotracing` processor end to end: real services on loopback, real nginx, real
SDKs, real eBPF capture; weft stitches what the `ebpf` receiver and the SDK receivers
deliver, and the file exporter's traces are compared with the tree every request must
have.

Every request has a unique path, which every hop forwards, so the test knows the
exact expected tree of each one: which spans (kind, process, peer), which parent each
has, one trace id per request and no other request in it. Per topology it prints
`completeness X/Y` (requests whose tree is exactly right) and `wrong edges W` (spans
whose parent is not their true parent, plus requests sharing a trace) and asserts
the figures the topology is held to.

Topologies (apps/chain_service.py, apps/chain_service.js, apps/load_client.py):
- zero SDK: client -> nginx (2 workers, generates $request_id, sends it upstream and
  back, upstream keep-alive) -> A -> B -> C, and A -> D after B;
- mixed SDKs: client -> ddtrace service (64-bit ids) -> OpenTelemetry SDK service ->
  service without SDK;
- event loop: client -> Node.js service -> B, with and without the request id
  passed on;
- thread hand-off: client -> a service that reads requests on one thread and serves
  them on a pool -> B;
- late and lost: a parent held back past the window, a hop weft does not see, a
  connection killed mid-request.

Needs root and BTF like test_ebpf.py (the module skips with one line otherwise),
nginx and node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import SUMMARY_LINES, ebpf_unavailable, E2E_DIR, Weft, free_port, otlp_receiver, side_python, wait_until, weft_binary
from otlp_support import metric_sum, read_jsonl_traces

APPS = E2E_DIR / "apps"
SERVER, CLIENT = 2, 3
WINDOW = "2s"
GRACE = "2s"


if ebpf_unavailable():
    pytest.skip(ebpf_unavailable(), allow_module_level=True)


# ---------------------------------------------------------------------------
# Spans read back


@dataclass
class Sp:
    kind: int
    attrs: dict
    resource: dict
    scope: str
    trace_id: bytes
    span_id: bytes
    parent: bytes
    links: list

    @property
    def path(self) -> str | None:
        return self.attrs.get("url.path")

    @property
    def ebpf(self) -> bool:
        return self.scope == "weft.ebpf"

    def pid(self) -> int | None:
        p = self.attrs.get("process.pid", self.resource.get("process.pid"))
        return int(p) if p is not None else None


def any_value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class Output:
    def __init__(self, path: Path):
        self.path = path
        self._offset = 0
        self._spans: list[Sp] = []

    def spans(self) -> list[Sp]:
        self._offset, requests = read_jsonl_traces(self.path, self._offset)
        for req in requests:
            for rs in req.resource_spans:
                res = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self._spans.append(
                            Sp(
                                kind=s.kind,
                                attrs={kv.key: any_value(kv.value) for kv in s.attributes},
                                resource=res,
                                scope=ss.scope.name,
                                trace_id=s.trace_id,
                                span_id=s.span_id,
                                parent=s.parent_span_id,
                                links=[(bytes(l.trace_id), bytes(l.span_id)) for l in s.links],
                            )
                        )
        return list(self._spans)

    def with_prefix(self, prefix: str) -> list[Sp]:
        return [s for s in self.spans() if (s.path or "").startswith(f"/{prefix}/")]


# ---------------------------------------------------------------------------
# Processes


class Procs:
    """Starts services that print `ready <pid>`; stops them by pid."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.started: list[subprocess.Popen] = []

    def start(self, cmd: list[str], env: dict | None = None, name: str = "svc") -> int:
        log = open(self.tmp / f"{name}-{len(self.started)}.log", "wb")
        p = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        self.started.append(p)
        line = p.stdout.readline().decode()
        assert line.startswith("ready "), f"{cmd} did not start: {line!r}\n" + (
            (self.tmp / f"{name}-{len(self.started) - 1}.log").read_text()
        )
        return int(line.split()[1])

    def service(self, port: int, *args: str, python: str | None = None, env=None,
                name="svc") -> int:
        return self.start(
            [python or sys.executable, str(APPS / "chain_service.py"), "--port", str(port),
             "--name", name, *args],
            env=env, name=name,
        )

    def stop(self) -> None:
        for p in self.started:
            if p.poll() is None:
                p.terminate()
        for p in self.started:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_client(port: int, prefix: str, count: int, concurrency: int, *extra: str) -> int:
    r = subprocess.run(
        [sys.executable, str(APPS / "load_client.py"), f"127.0.0.1:{port}", prefix,
         str(count), str(concurrency), *extra],
        capture_output=True, timeout=300,
    )
    out = json.loads(r.stdout)
    return out["pid"], out["statuses"]


def nginx_bin() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not path:
        pytest.fail("nginx is not installed (apt-get install nginx)", pytrace=False)
    return path


def start_nginx(procs: Procs, port: int, upstream: int) -> list[int]:
    """A gateway with a master and two workers that generates $request_id, sends it
    upstream and answers with it; upstream connections are kept alive. Returns the
    worker pids."""
    root = procs.tmp / f"nginx-{port}"
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(
        f"""daemon off;
master_process on;
worker_processes 2;
user root root;
pid {root}/nginx.pid;
error_log {root}/error.log notice;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream app {{
        server 127.0.0.1:{upstream};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 100000;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Request-ID $request_id;
            add_header X-Request-ID $request_id always;
        }}
    }}
}}
"""
    )
    p = subprocess.Popen(
        [nginx_bin(), "-c", str(conf), "-p", str(root), "-e", str(root / "error.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    procs.started.append(p)

    def workers() -> list[int]:
        try:
            kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        except OSError:
            return []
        return [int(k) for k in kids]

    assert wait_until(lambda: len(workers()) == 2 and (root / "nginx.pid").exists(), 15), (
        (root / "error.log").read_text() if (root / "error.log").exists() else "nginx did not start"
    )
    return workers()


# ---------------------------------------------------------------------------
# weft


class Env:
    def __init__(self, weft: Weft, out: Output, ports: list[int], otlp: int, dd: int):
        self.weft, self.out, self._ports, self.otlp, self.dd = weft, out, ports, otlp, dd

    def ports(self, n: int) -> list[int]:
        got, self._ports = self._ports[:n], self._ports[n:]
        assert len(got) == n, "the module's port pool is used up"
        return got

    def metric(self, name: str, **labels) -> float:
        return metric_sum(self.weft.metrics(), name, **labels)


CAPTURED_PORTS = 24
UNCAPTURED_PORTS = 2


def start_env(tmp_path_factory, sdk_merge: str, record: str | None):
    workdir = tmp_path_factory.mktemp(f"autotracing-{sdk_merge}")
    ports = [free_port() for _ in range(CAPTURED_PORTS)]
    otlp, dd = free_port(), free_port()
    out = workdir / "traces.jsonl"
    config = {
        "receivers": {
            "ebpf": {"include": {"ports": ports}, "flush_interval": "100ms"},
            "otlp": otlp_receiver(grpc_port=otlp),
            "datadog": {"endpoint": f"127.0.0.1:{dd}"},
        },
        "processors": {
            "propagation_merge": {"window": "200ms"},
            "autotracing": {"window": WINDOW, "grace": GRACE, "max_hold": "30s",
                            "sdk_merge": sdk_merge},
        },
        "exporters": {"file": {"path": str(out), "flush_interval": "100ms"}},
        "service": {
            "pipelines": {
                "traces": {
                    "receivers": ["ebpf", "otlp", "datadog"],
                    "processors": ["propagation_merge", "autotracing"],
                    "exporters": ["file"],
                }
            }
        },
    }
    if record:
        # The eBPF spans as the receiver made them, for the replay benchmark
        # (processors/benches/autotracing_replay.rs).
        config["exporters"]["file/raw"] = {"path": record, "format": "proto",
                                           "compression": "zstd", "flush_interval": "100ms"}
        config["service"]["pipelines"]["traces/raw"] = {"receivers": ["ebpf"],
                                                        "exporters": ["file/raw"]}
    w = Weft(weft_binary(), workdir, f"weft-autotracing-{sdk_merge}")
    try:
        w.start(config)
        assert wait_until(lambda: w.health_status() == 200, 30), w.log_tail()
    except BaseException:
        if w.alive():
            w.proc.kill()
            w.proc.wait()
        raise
    return Env(w, Output(out), ports, otlp, dd)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = start_env(tmp_path_factory, "child", os.environ.get("WEFT_AUTOTRACING_RECORD"))
    yield e
    code = e.weft.stop()
    assert code == 0, f"weft exited with {code}\n{e.weft.log_tail()}"


@pytest.fixture(scope="module")
def env_merge(tmp_path_factory):
    """A second weft whose stitcher merges eBPF spans into the SDK spans of their call."""
    e = start_env(tmp_path_factory, "merge", None)
    yield e
    code = e.weft.stop()
    assert code == 0, f"weft exited with {code}\n{e.weft.log_tail()}"


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.stop()


# ---------------------------------------------------------------------------
# Trees


@dataclass
class Result:
    requests: int
    complete: int
    wrong: int
    problems: list[str]

    def line(self, name: str) -> str:
        pct = 100.0 * self.complete / max(self.requests, 1)
        return (f"autotracing {name}: completeness {self.complete}/{self.requests} "
                f"({pct:.1f}%), wrong edges {self.wrong}")


def judge(spans: list[Sp], paths: list[str], expected: dict, name_of) -> Result:
    """Compares the exported spans of these request paths with the expected tree.

    `expected` maps each node name to its parent's name (None: the root); `name_of`
    names a span (None: not part of the topology). A request is complete when its
    spans are exactly the expected nodes, every parent is the expected one and all
    share one trace id no other request uses. A wrong edge is a span whose parent is
    a span other than its true parent (or a parent id no span has), and every extra
    request sharing a trace."""
    by_id = {s.span_id: s for s in spans}
    per_path: dict[str, list[Sp]] = defaultdict(list)
    for s in spans:
        per_path[s.path].append(s)
    traces_paths: dict[bytes, set] = defaultdict(set)
    for s in spans:
        traces_paths[s.trace_id].add(s.path)
    wrong = 0
    problems: list[str] = []
    for s in spans:
        n = name_of(s)
        if not s.parent or n is None:
            continue
        p = by_id.get(s.parent)
        want = expected.get(n)
        if p is None or p.path != s.path or name_of(p) != want:
            wrong += 1
            problems.append(
                f"{s.path}: {n} has parent "
                f"{name_of(p) if p else 'unknown ' + s.parent.hex()} ({p.path if p else '-'}), want {want}"
            )
    for t, ps in traces_paths.items():
        if len(ps) > 1:
            wrong += len(ps) - 1
            problems.append(f"one trace {t.hex()} holds requests {sorted(ps)[:4]}")
    complete = 0
    for path in paths:
        got = per_path.get(path, [])
        names = Counter(name_of(s) for s in got)
        if set(names) != set(expected) or any(c != 1 for c in names.values()):
            problems.append(f"{path}: spans {sorted(map(str, names.elements()))}")
            continue
        nodes = {name_of(s): s for s in got}
        why = []
        if len({s.trace_id for s in got}) != 1:
            why.append(f"{len({s.trace_id for s in got})} trace ids")
        elif len(traces_paths[got[0].trace_id]) != 1:
            why.append("trace shared with another request")
        for n, want in expected.items():
            s = nodes[n]
            if want is None:
                if not (s.parent == b"" or by_id.get(s.parent) is None and not s.ebpf):
                    why.append(f"{n} not a root")
            elif s.parent != nodes[want].span_id:
                p = by_id.get(s.parent)
                why.append(f"{n} under {name_of(p) if p else s.parent.hex() or 'nothing'}")
        if not why:
            complete += 1
        else:
            problems.append(f"{path}: " + "; ".join(why))
    return Result(len(paths), complete, wrong, problems)


def wait_spans(env: Env, prefix: str, want: int, timeout: float = 60.0) -> list[Sp]:
    wait_until(lambda: len(env.out.with_prefix(prefix)) >= want, timeout, 0.2)
    time.sleep(1.0)
    return env.out.with_prefix(prefix)


def namer(roles: dict[int, str], port_names: dict[int, str]):
    """Names eBPF spans by process (server) or process->peer (client), SDK spans
    by `sdk:<service.name>.<kind>`."""

    def name_of(s: Sp) -> str | None:
        if not s.ebpf:
            kind = {SERVER: "server", CLIENT: "client"}.get(s.kind, str(s.kind))
            return f"sdk:{s.resource.get('service.name')}.{kind}"
        who = roles.get(s.pid())
        if who is None:
            return None
        if s.kind == SERVER:
            return who
        return f"{who}->{port_names.get(s.attrs.get('network.peer.port'), '?')}"

    return name_of


def _series(env: Env, name: str):
    from otlp_support import metric_series

    return [((name, dict(labels)), v) for labels, v in metric_series(env.weft.metrics(), name).items()]


def report(env: Env, name: str, res: Result) -> None:
    print("\n" + res.line(name))
    SUMMARY_LINES.append(res.line(name))
    tiers = {t: env.metric("weft_autotracing_edges", tier=t) for t in ("t0", "t1", "t2", "t3", "sdk")}
    print(f"  edges so far by tier: {tiers}")
    counts = {m: env.metric(f"weft_autotracing_{m}") for m in ("spans_in", "spans_out", "in_flight_spans")}
    print(f"  spans so far: {counts}")
    refused = {
        f"{lab['tier']}/{lab['reason']}": v
        for (name, lab), v in _series(env, "weft_autotracing_refused_edges") if v
    }
    print(f"  refused so far: {refused}")
    for p in res.problems[:15]:
        print("  ", p)
    results = Path(os.environ.get("WEFT_AUTOTRACING_RESULTS", "")) if os.environ.get(
        "WEFT_AUTOTRACING_RESULTS") else None
    if results:
        with open(results, "a") as f:
            f.write(json.dumps({"topology": name, "requests": res.requests,
                                "complete": res.complete, "wrong": res.wrong}) + "\n")


# ---------------------------------------------------------------------------
# Topologies


def test_zero_sdk_gateway_chain(env, procs):
    """client -> nginx -> A -> B -> C, A -> D: 300 requests, 20 at a time."""
    ng, a, b, c, d = env.ports(5)
    pid = {}
    pid["D"] = procs.service(d, name="D")
    pid["C"] = procs.service(c, name="C")
    pid["B"] = procs.service(b, "--call", f"127.0.0.1:{c}", "--forward-request-id", name="B")
    pid["A"] = procs.service(a, "--call", f"127.0.0.1:{b}", "--call", f"127.0.0.1:{d}", name="A")
    workers = start_nginx(procs, ng, a)
    n = 300
    client_pid, statuses = run_client(ng, "zs", n, 20)
    assert set(statuses.values()) == {200}, Counter(statuses.values())
    roles = {v: k for k, v in pid.items()} | {w: "nginx" for w in workers} | {client_pid: "client"}
    name_of = namer(roles, {ng: "nginx", a: "A", b: "B", c: "C", d: "D"})
    expected = {
        "client->nginx": None,
        "nginx": "client->nginx",
        "nginx->A": "nginx",
        "A": "nginx->A",
        "A->B": "A",
        "B": "A->B",
        "B->C": "B",
        "C": "B->C",
        "A->D": "A",
        "D": "A->D",
    }
    spans = wait_spans(env, "zs", n * len(expected))
    res = judge(spans, list(statuses), expected, name_of)
    report(env, "zero-SDK (client, nginx x2 workers, A, B, C, D)", res)
    assert res.wrong == 0, res.problems[:20]
    assert res.complete >= 0.99 * n, res.problems[:20]
    # Correlation attributes do not leave by default.
    assert not [k for s in spans for k in s.attrs if k.startswith("weft.")]


MIXED_TREES = {
    # sdk_merge: child: the SDK and eBPF spans of each call are both kept.
    "child": {
        "client->D": None,
        "D": "client->D",
        "sdk:mixed-dd.server": "D",
        "sdk:mixed-dd.client": "sdk:mixed-dd.server",
        "D->O": "sdk:mixed-dd.client",
        "O": "D->O",
        "sdk:mixed-otel.server": "O",
        "sdk:mixed-otel.client": "sdk:mixed-otel.server",
        "O->N": "sdk:mixed-otel.client",
        "N": "O->N",
    },
    # sdk_merge: merge: where an SDK span stands for a call, its eBPF span is dropped.
    "merge": {
        "client->D": None,
        "sdk:mixed-dd.server": "client->D",
        "sdk:mixed-dd.client": "sdk:mixed-dd.server",
        "sdk:mixed-otel.server": "sdk:mixed-dd.client",
        "sdk:mixed-otel.client": "sdk:mixed-otel.server",
        "N": "sdk:mixed-otel.client",
    },
}


@pytest.mark.parametrize("sdk_merge", ["child", "merge"])
def test_mixed_sdk_chain(request, procs, sdk_merge):
    """client (no SDK) -> ddtrace service (64-bit) -> OpenTelemetry SDK service ->
    service without SDK: one tree per request with SDK and eBPF spans, related as
    `sdk_merge` says."""
    env = request.getfixturevalue("env" if sdk_merge == "child" else "env_merge")
    d, o, nsdk = env.ports(3)
    pid = {}
    pid["N"] = procs.service(nsdk, name="N")
    pid["O"] = procs.service(o, "--sdk", "otel", "--otlp-endpoint", f"http://127.0.0.1:{env.otlp}",
                             "--call", f"127.0.0.1:{nsdk}", name="mixed-otel")
    pid["D"] = procs.service(
        d, "--sdk", "ddtrace", "--call", f"127.0.0.1:{o}", name="mixed-dd",
        python=side_python("dd"),
        env={"DD_TRACE_AGENT_URL": f"http://127.0.0.1:{env.dd}",
             "DD_TRACE_128_BIT_TRACEID_GENERATION_ENABLED": "false",
             "DD_TRACE_WRITER_INTERVAL_SECONDS": "0.2"},
    )
    n = 200
    client_pid, statuses = run_client(d, "mx", n, 20)
    assert set(statuses.values()) == {200}, Counter(statuses.values())
    roles = {v: k for k, v in pid.items()} | {client_pid: "client"}
    name_of = namer(roles, {d: "D", o: "O", nsdk: "N"})
    expected = MIXED_TREES[sdk_merge]
    spans = wait_spans(env, "mx", n * len(expected), timeout=90)
    res = judge(spans, list(statuses), expected, name_of)
    report(env, f"mixed SDK (client, ddtrace 64-bit, OpenTelemetry SDK, no SDK), sdk_merge {sdk_merge}", res)
    assert res.wrong == 0, res.problems[:20]
    assert res.complete >= 0.99 * n, res.problems[:20]
    # The trace id is the SDKs' (ddtrace's 64-bit id, as OpenTelemetry continued it).
    adopted = 0
    for path in statuses:
        mine = [s for s in spans if s.path == path]
        sdk_ids = {s.trace_id for s in mine if not s.ebpf}
        adopted += len(sdk_ids) == 1 and {s.trace_id for s in mine} == sdk_ids
    assert adopted >= 0.99 * n
    if sdk_merge == "merge":
        assert env.metric("weft_autotracing_merged_spans") >= 4 * 0.99 * n


def node_bin() -> str:
    path = shutil.which("node") or shutil.which("nodejs")
    if not path:
        pytest.fail("node is not installed (apt-get install nodejs)", pytrace=False)
    return path


@pytest.mark.parametrize("forward", [True, False], ids=["request_id_passed", "no_request_id"])
def test_event_loop_service(env, procs, forward):
    """client -> Node.js (one thread, many requests in flight) -> B."""
    nd, b = env.ports(2)
    pid = {"B": procs.service(b, name="B")}
    args = [node_bin(), str(APPS / "chain_service.js"), str(nd), "--call", f"127.0.0.1:{b}"]
    if forward:
        args.append("--forward-request-id")
    pid["node"] = procs.start(args, name="node")
    n = 300
    prefix = "el1" if forward else "el0"
    client_pid, statuses = run_client(nd, prefix, n, 20, "--request-id")
    assert set(statuses.values()) == {200}, Counter(statuses.values())
    roles = {v: k for k, v in pid.items()} | {client_pid: "client"}
    name_of = namer(roles, {nd: "node", b: "B"})
    expected = {"client->node": None, "node": "client->node", "node->B": "node", "B": "node->B"}
    spans = wait_spans(env, prefix, n * len(expected))
    res = judge(spans, list(statuses), expected, name_of)
    report(env, f"event loop (Node.js), request id {'passed on' if forward else 'not passed on'}", res)
    assert res.wrong == 0, res.problems[:20]
    if forward:
        assert res.complete >= 0.99 * n, res.problems[:20]


def test_thread_handoff_service(env, procs):
    """client -> a service reading on one thread, serving on a pool -> B."""
    h, b = env.ports(2)
    pid = {"B": procs.service(b, name="B")}
    pid["H"] = procs.service(h, "--handoff", "4", "--call", f"127.0.0.1:{b}", name="H")
    n = 200
    client_pid, statuses = run_client(h, "ho", n, 20)
    assert set(statuses.values()) == {200}, Counter(statuses.values())
    roles = {v: k for k, v in pid.items()} | {client_pid: "client"}
    name_of = namer(roles, {h: "H", b: "B"})
    expected = {"client->H": None, "H": "client->H", "H->B": "H", "B": "H->B"}
    spans = wait_spans(env, "ho", n * len(expected))
    res = judge(spans, list(statuses), expected, name_of)
    report(env, "thread hand-off (accept thread + pool of 4)", res)
    assert res.wrong == 0, res.problems[:20]


def test_late_parent_missing_hop_and_killed_connection(env, procs):
    l, b, a, c, k, a3 = env.ports(6)
    m = free_port()  # not in the receiver's ports: weft does not see this hop
    pid = {}
    # Late: L answers 2 windows after its downstream call ended.
    pid["B"] = procs.service(b, name="B")
    pid["L"] = procs.service(l, "--call", f"127.0.0.1:{b}", "--sleep-after-calls", "7", name="L")
    # Missing hop: A -> M -> C, M's port not captured.
    pid["C"] = procs.service(c, name="C")
    pid["M"] = procs.service(m, "--call", f"127.0.0.1:{c}", name="M")
    pid["A"] = procs.service(a, "--call", f"127.0.0.1:{m}", name="A")
    # Killed: K shuts the connection instead of answering /kl/.
    pid["K"] = procs.service(k, "--close-on", "/kl/", name="K")
    roles = {v: key for key, v in pid.items()}

    n = 5
    late_before = env.metric("weft_autotracing_late_spans", kind="linked")
    cpid, statuses = run_client(l, "lt", n, n)
    assert set(statuses.values()) == {200}
    roles[cpid] = "client"
    name_of = namer(roles, {l: "L", b: "B"})
    spans = wait_spans(env, "lt", 4 * n, timeout=60)
    # L's span arrived after its child's trace left: the child keeps no parent (a gap),
    # L joins the child's trace and links to it; nothing else is wrong.
    res = judge(spans, list(statuses), {"client->L": None, "L": "client->L", "L->B": None,
                                        "B": "L->B"}, name_of)
    report(env, "late parent (held back past the window)", res)
    assert res.wrong == 0 and res.complete == n, res.problems
    for path in statuses:
        nodes = {name_of(s): s for s in spans if s.path == path}
        assert nodes["L"].links == [(nodes["L->B"].trace_id, nodes["L->B"].span_id)]
    assert env.metric("weft_autotracing_late_spans", kind="linked") - late_before == n

    roots_before = {kind: env.metric("weft_autotracing_root_spans", kind=kind)
                    for kind in ("ebpf_server", "ebpf_client")}
    cpid, statuses = run_client(a, "mh", 20, 5)
    assert set(statuses.values()) == {200}
    roles[cpid] = "client"
    name_of = namer(roles, {a: "A", c: "C"})
    spans = wait_spans(env, "mh", 4 * 20)
    # Two trees per request: what lies above the unseen hop and what lies below it.
    upper = judge([s for s in spans if name_of(s) in ("client->A", "A")], list(statuses),
                  {"client->A": None, "A": "client->A"}, name_of)
    lower = judge([s for s in spans if name_of(s) in ("M->C", "C")], list(statuses),
                  {"M->C": None, "C": "M->C"}, name_of)
    report(env, "missing middle hop, part above (client -> A)", upper)
    report(env, "missing middle hop, part below (M -> C)", lower)
    assert upper.wrong == 0 and lower.wrong == 0, upper.problems + lower.problems
    assert upper.complete == lower.complete == 20, upper.problems + lower.problems
    for path in statuses:
        nodes = {name_of(s): s for s in spans if s.path == path}
        assert nodes["A"].trace_id != nodes["C"].trace_id
    # The gap is counted: per request two client spans left without a parent (the load
    # client's, which has none, and M's call to C, whose caller was not seen).
    roots = {kind: env.metric("weft_autotracing_root_spans", kind=kind) - before
             for kind, before in roots_before.items()}
    print(f"missing middle hop, roots left: {roots}")
    assert roots == {"ebpf_server": 0, "ebpf_client": 2 * 20}, roots

    pid["A3"] = procs.service(a3, "--call", f"127.0.0.1:{k}", name="A3")
    roles[pid["A3"]] = "A3"
    dropped_before = {r: metric_sum(env.weft.metrics(), "weft_ebpf_messages_dropped", reason=r)
                      for r in ("closed_mid_message", "unpaired")}
    cpid, statuses = run_client(a3, "kl", 10, 2)
    assert set(statuses.values()) == {502}
    roles[cpid] = "client"
    name_of = namer(roles, {a3: "A3", k: "K"})
    spans = wait_spans(env, "kl", 2 * 10)
    res = judge(spans, list(statuses), {"client->A3": None, "A3": "client->A3"}, name_of)
    report(env, "killed connection (K closes instead of answering)", res)
    assert res.wrong == 0 and res.complete == 10, res.problems
    # The exchanges K never answered make no span on either end, and are counted: A3
    # tries twice per request (a fresh connection after the first is dropped), each
    # attempt unanswered on A3's end and on K's.
    dropped = {r: metric_sum(env.weft.metrics(), "weft_ebpf_messages_dropped", reason=r) - before
               for r, before in dropped_before.items()}
    print(f"killed connection, requests counted as dropped: {dropped}")
    assert dropped == {"closed_mid_message": 0, "unpaired": 2 * 2 * 10}, dropped
