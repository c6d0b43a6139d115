"""The `status` extension: the status page in a real browser (headless Chromium driven
by playwright-core) and its JSON API.

- an OpenTelemetry SDK app sends a three-level trace and an error trace through
  weft to an OTLP sink; the page's counters move, the trace list and its filters
  show exactly those traces, the waterfall has exactly their spans at their depths,
  clicking a span shows its ids and attributes, the config view is redacted;
- every API route, including its 400s, 404s and 405s, and the reload history after
  a good and a bad SIGHUP;
- `traces.enabled: false` keeps no traces;
- with no SDK at all: the ebpf receiver and the autotracing stitcher make a trace of
  client -> A -> B, and the waterfall shows each edge's rule (needs root and BTF).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from harness import (E2E_DIR, ebpf_unavailable, free_port, otlp_receiver, send_three_tier,
                     wait_until)

APPS = E2E_DIR / "apps"
BROWSER_DIR = E2E_DIR / "browser"
ARTIFACTS = E2E_DIR / "artifacts"
TOKEN = "s3cr3t-status-token"


# ---------------------------------------------------------------------------
# The browser


class Browser:
    """tests/e2e/browser/driver.mjs: one JSON command per line, one JSON answer."""

    def __init__(self, base: str, log: Path):
        node = shutil.which("node")
        if not node:
            pytest.fail("node is not installed (Node.js 20 runs the browser driver)", pytrace=False)
        if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
            pytest.fail("tests/e2e/browser/node_modules is missing: run `npm ci` there "
                        "(scripts/test.sh does)", pytrace=False)
        chromium = os.environ.get("WEFT_CHROMIUM", "/usr/bin/chromium")
        if not Path(chromium).exists():
            pytest.fail(f"no Chromium at {chromium} (apt-get install chromium)", pytrace=False)
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [node, str(BROWSER_DIR / "driver.mjs"), base],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            cwd=BROWSER_DIR, text=True,
        )
        self.log = log

    def __call__(self, op: str, **args) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the browser driver exited\n{self.log.read_text(errors='replace')}"
        out = json.loads(line)
        assert out.pop("ok"), f"{op} {args}: {out['error']}"
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def browser(tmp_path):
    made: list[Browser] = []

    def open_(base: str) -> Browser:
        b = Browser(base, tmp_path / f"browser-{len(made)}.log")
        made.append(b)
        return b

    yield open_
    for b in made:
        b.close()


# ---------------------------------------------------------------------------
# weft with the status extension


def status_config(grpc: int, status: int, sink_endpoint: str, **status_extra) -> dict:
    return {
        "receivers": {"otlp": otlp_receiver(grpc_port=grpc)},
        "processors": {"batch": {"timeout": "50ms"}},
        "exporters": {"otlp_grpc": {"endpoint": sink_endpoint, "tls": {"insecure": True}}},
        "extensions": {
            "status": {"endpoint": f"127.0.0.1:{status}", **status_extra},
            "bearertokenauth/unused": {"token": TOKEN},
        },
        "service": {
            "extensions": ["status", "bearertokenauth/unused"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["otlp_grpc"],
                }
            },
        },
    }



def api(base: str, path: str, status: int = 200, **params):
    r = requests.get(base + path, params=params, timeout=10)
    assert r.status_code == status, f"GET {path} {params} -> {r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    return r.json()


def wait_traces(base: str, n: int, **params) -> dict:
    got = {}

    def ready():
        nonlocal got
        got = api(base, "/api/traces", **params)
        return len(got["traces"]) >= n

    assert wait_until(ready, 15, 0.1), got
    return got


@pytest.fixture
def status_weft(weft, grpc_sink):
    sink = grpc_sink()
    grpc, status = free_port(), free_port()
    w = weft(status_config(grpc, status, sink.endpoint))
    return w, f"http://127.0.0.1:{status}", grpc, sink


# ---------------------------------------------------------------------------
# The page


def test_status_page_in_a_browser(status_weft, browser):
    w, base, grpc, sink = status_weft
    b = browser(base)

    # Pipelines: every component of the graph, its counters at zero.
    assert b("goto", hash="#/pipelines")["title"] == "weft status"
    comps = {c["id"]: c for c in b("components")["components"]}
    assert sorted(comps) == ["exporter/otlp_grpc", "processor/batch", "receiver/otlp"]
    assert {c["pipeline"] for c in comps.values()} == {"traces"}
    assert comps["receiver/otlp"]["counters"].get("accepted_spans", 0) == 0

    out = send_three_tier(grpc)
    tree, err_id = out["tree"], out["error_trace_id"]
    assert sink.wait_for_spans(4, 20)

    # The counters move on the open page (it polls): 4 spans in, 4 out.
    assert b("wait_counter_above", component="receiver/otlp", counter="accepted_spans",
             value=3)["value"] == 4
    assert b("wait_counter_above", component="exporter/otlp_grpc", counter="sent_spans",
             value=3)["value"] == 4
    assert b("counter", component="receiver/otlp", counter="refused_spans")["value"] == 0

    # The trace list: both traces, newest first.
    b("goto", hash="#/traces")
    listed = b("trace_list", wait_for=tree["trace_id"])["traces"]
    assert sorted(t["trace_id"] for t in listed) == sorted([tree["trace_id"], err_id])
    row = next(t for t in listed if t["trace_id"] == tree["trace_id"])
    assert "frontend" in row["cells"] and "GET /checkout" in row["cells"], row
    assert "3" in row["cells"], row

    # Filters.
    assert b("filter", errors=True, expect=[err_id])["traces"] == [err_id]
    assert sorted(b("filter", errors=False, expect=[tree["trace_id"], err_id])["traces"]) == \
        sorted([tree["trace_id"], err_id])
    assert b("filter", service="db", expect=[tree["trace_id"]])["traces"] == [tree["trace_id"]]
    assert b("filter", service="", expect=[tree["trace_id"], err_id])["traces"] != []
    empty = b("filter", min_duration="1h", expect=[])
    assert empty == {"traces": [], "empty": True}
    b("filter", min_duration="", expect=[tree["trace_id"], err_id])
    assert b("filter", ebpf=True, expect=[]) == {"traces": [], "empty": True}
    b("filter", ebpf=False, expect=[tree["trace_id"], err_id])

    # The waterfall: exactly the three spans, parent above child, indented by depth.
    wf = b("open_trace", trace_id=tree["trace_id"], spans=3)
    by_name = {s["name"]: s for s in tree["spans"]}
    rows = wf["rows"]
    assert [(r["name"], r["depth"], r["service"], r["source"], r["span_id"]) for r in rows] == [
        ("GET /checkout", 0, "frontend", "sdk", by_name["GET /checkout"]["span_id"]),
        ("POST /orders", 1, "backend", "sdk", by_name["POST /orders"]["span_id"]),
        ("INSERT orders", 2, "db", "sdk", by_name["INSERT orders"]["span_id"]),
    ]
    # The root has no edge; the others were linked by their SDK's context.
    assert [r["rule"] for r in rows] == [None, "sdk_context", "sdk_context"]
    assert rows[0]["indent_px"] < rows[1]["indent_px"] < rows[2]["indent_px"]
    # Bars start in order and the root's bar spans the trace.
    assert rows[0]["bar"]["left"] == 0
    assert rows[0]["bar"]["left"] <= rows[1]["bar"]["left"] <= rows[2]["bar"]["left"]
    assert rows[0]["bar"]["width"] >= rows[1]["bar"]["width"] >= rows[2]["bar"]["width"]
    assert len({r["bar"]["color"] for r in rows}) == 3, "one colour per service"
    assert wf["summary"].startswith(f"trace {tree['trace_id']} · 3 spans · "), wf["summary"]

    details = b("click_span", index=2)
    assert details["span_id"] == by_name["INSERT orders"]["span_id"]
    fields = {f[0]: f[1] for f in details["fields"] if len(f) == 2}
    assert fields["span id"] == by_name["INSERT orders"]["span_id"]
    assert fields["parent span id"] == by_name["POST /orders"]["span_id"]
    assert fields["kind"] == "client"
    assert fields["db.system"] == "postgresql"
    assert fields["service.name"] == "db"
    assert fields["edge rule"].startswith("sdk_context")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = b("screenshot", path=str(ARTIFACTS / "status-waterfall.png"))["path"]
    assert Path(shot).stat().st_size > 10_000

    # The config view: the loaded config, the token redacted.
    b("goto", hash="#/config")
    text = b("text", selector="#config-yaml")["text"]
    assert "bearertokenauth/unused" in text and "[REDACTED]" in text
    assert TOKEN not in text

    # The reload view: nothing reloaded yet.
    b("goto", hash="#/reloads")
    assert "no reload" in b("text", selector="#reload-list")["text"].lower()

    assert b("console_errors")["errors"] == []


# ---------------------------------------------------------------------------
# The API


def test_status_api(status_weft):
    w, base, grpc, sink = status_weft
    out = send_three_tier(grpc)
    tree, err_id = out["tree"], out["error_trace_id"]

    got = wait_traces(base, 2)
    assert got["held"] == 2 and got["matching"] == 2
    assert got["services"] == ["backend", "db", "frontend"]
    summaries = {t["trace_id"]: t for t in got["traces"]}
    assert sorted(summaries) == sorted([tree["trace_id"], err_id])
    s = summaries[tree["trace_id"]]
    assert (s["root_service"], s["root_name"], s["span_count"], s["error"], s["has_ebpf"],
            s["complete"], s["services"], s["pipeline"]) == (
        "frontend", "GET /checkout", 3, False, False, True, ["backend", "db", "frontend"], "traces")
    e = summaries[err_id]
    assert (e["root_name"], e["span_count"], e["error"]) == ("GET /fail", 1, True)

    # Filters.
    ids = lambda **p: sorted(t["trace_id"] for t in api(base, "/api/traces", **p)["traces"])  # noqa: E731
    assert ids(errors="true") == [err_id]
    assert ids(errors="false") == [tree["trace_id"]]
    assert ids(service="db") == [tree["trace_id"]]
    assert ids(service="nobody") == []
    assert ids(min_duration="1h") == []
    assert ids(min_duration="1ns") == sorted([tree["trace_id"], err_id])
    assert ids(ebpf="true") == []
    assert ids(ebpf="0") == sorted([tree["trace_id"], err_id])
    assert ids(pipeline="traces") == sorted([tree["trace_id"], err_id])
    limited = api(base, "/api/traces", limit="1")
    assert (len(limited["traces"]), limited["matching"]) == (1, 2)

    # One trace, spans in waterfall order with their ids.
    t = api(base, f"/api/traces/{tree['trace_id'].upper()}")
    by_name = {x["name"]: x for x in tree["spans"]}
    assert [(x["name"], x["depth"], x["span_id"], x["parent_span_id"], x["edge_rule"], x["source"])
            for x in t["spans"]] == [
        ("GET /checkout", 0, by_name["GET /checkout"]["span_id"], "", None, "sdk"),
        ("POST /orders", 1, by_name["POST /orders"]["span_id"],
         by_name["GET /checkout"]["span_id"], "sdk_context", "sdk"),
        ("INSERT orders", 2, by_name["INSERT orders"]["span_id"],
         by_name["POST /orders"]["span_id"], "sdk_context", "sdk"),
    ]
    assert t["spans"][2]["attributes"]["db.system"] == "postgresql"
    assert t["spans"][2]["kind"] == "client"
    assert api(base, f"/api/traces/{err_id}")["spans"][0]["status_message"] == "payment declined"

    # Pipelines and counters.
    p = api(base, "/api/pipelines")
    assert [x["id"] for x in p["pipelines"]] == ["traces"]
    pipe = p["pipelines"][0]
    assert [r["id"] for r in pipe["receivers"]] == ["otlp"]
    assert [r["id"] for r in pipe["processors"]] == ["batch"]
    assert [r["id"] for r in pipe["exporters"]] == ["otlp_grpc"]
    assert sorted(p["extensions"]) == ["bearertokenauth/unused", "health_check", "status"]
    assert pipe["receivers"][0]["totals"]["otelcol_receiver_accepted_spans"] == 4
    assert wait_until(lambda: api(base, "/api/pipelines")["pipelines"][0]["exporters"][0]
                      ["totals"].get("otelcol_exporter_sent_spans") == 4, 10)
    assert p["tap"]["on"] is True and p["tap"]["max_spans_per_pipeline"] == 10000
    assert p["tap"]["pipelines"] == [
        {"pipeline": "traces", "spans_held": 4, "batches_held": p["tap"]["pipelines"][0]["batches_held"],
         "skipped_spans": 0}]

    m = api(base, "/api/metrics", name="otelcol_receiver_accepted_spans")
    assert {"name": "otelcol_receiver_accepted_spans", "type": "counter",
            "labels": {"receiver": "otlp", "transport": "grpc"}, "value": 4} in m["series"]
    assert sum(x["value"] for x in m["series"]) == 4
    assert api(base, "/api/metrics", name="no_such_metric") == {"series": []}

    cfg = api(base, "/api/config")
    assert "[REDACTED]" in cfg["yaml"] and TOKEN not in cfg["yaml"]
    assert cfg["loaded_unix_ms"] > 0

    assert api(base, "/api/reloads") == {"reloads": []}

    # Bad requests: a clear JSON error each.
    for path, params, want in [
        ("/api/traces", {"limit": "0"}, "limit must be a whole number from 1 to 1000"),
        ("/api/traces", {"limit": "abc"}, "limit must be"),
        ("/api/traces", {"errors": "maybe"}, "errors must be true or false"),
        ("/api/traces", {"ebpf": "yes"}, "ebpf must be true or false"),
        ("/api/traces", {"min_duration": "fast"}, "min_duration"),
        ("/api/traces", {"colour": "red"}, "unknown query parameter colour"),
        ("/api/traces", {"pipeline": "nope"}, 'pipeline "nope" is not a running traces pipeline'),
        ("/api/traces/xyz", {}, "trace id must be 32 hex digits"),
        ("/api/pipelines", {"x": "1"}, "this route takes none"),
        ("/api/metrics", {"label": "x"}, "this route takes name"),
    ]:
        body = api(base, path, 400, **params)
        assert want in body["error"], (path, params, body)
    assert "not among the traces held" in api(base, "/api/traces/" + "ab" * 16, 404)["error"]
    assert api(base, "/api/nothing", 404)["error"] == "no such page or API route"
    r = requests.post(base + "/api/traces", timeout=5)
    assert r.status_code == 405 and "read only" in r.json()["error"]
    # A host name that is not an IP, localhost or the endpoint's name: a page from
    # elsewhere reaching this one by DNS rebinding.
    r = requests.get(base + "/api/config", headers={"Host": "evil.example"}, timeout=5)
    assert r.status_code == 403 and "host name not allowed" in r.json()["error"]
    assert requests.get(base + "/api/config", headers={"Host": "localhost"},
                        timeout=5).status_code == 200

    # The page and its assets.
    page = requests.get(base + "/", timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>weft status</title>" in page.text
    js = requests.get(base + "/app.js", timeout=5)
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    css = requests.get(base + "/app.css", timeout=5)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_reload_history(weft, grpc_sink):
    sink = grpc_sink()
    grpc, status = free_port(), free_port()
    config = status_config(grpc, status, sink.endpoint)
    w = weft(config)
    base = f"http://127.0.0.1:{status}"

    # A good reload, noticed by the file watch: the batch timeout changes.
    config["processors"]["batch"]["timeout"] = "80ms"
    w.write_config(config)
    assert wait_until(lambda: len(api(base, "/api/reloads")["reloads"]) == 1, 15), w.log_tail()
    assert "80ms" in api(base, "/api/config")["yaml"]

    # A bad one: an unknown processor; the running config stays.
    bad = json.loads(json.dumps(config))
    bad["service"]["pipelines"]["traces"]["processors"] = ["nosuch"]
    w.write_config(bad)
    assert wait_until(lambda: len(api(base, "/api/reloads")["reloads"]) == 2, 15), w.log_tail()
    assert "80ms" in api(base, "/api/config")["yaml"]

    # Put the good file back, then SIGHUP with nothing changed since.
    w.write_config(config)
    assert wait_until(lambda: len(api(base, "/api/reloads")["reloads"]) == 3, 15), w.log_tail()
    w.signal(signal.SIGHUP)
    assert wait_until(lambda: len(api(base, "/api/reloads")["reloads"]) == 4, 15), w.log_tail()
    reloads = api(base, "/api/reloads")["reloads"]
    assert [(r["result"], r["trigger"]) for r in reloads] == [
        ("unchanged", "SIGHUP"),
        ("unchanged", "config file change"),
        ("failure", "config file change"),
        ("success", "config file change"),
    ], reloads
    assert "nosuch" in reloads[2]["detail"], reloads[2]
    times = [r["time_unix_ms"] for r in reloads]
    assert times == sorted(times, reverse=True)

    # The tap survived the reload: traces sent now are listed.
    out = send_three_tier(grpc)
    wait_traces(base, 2)
    assert api(base, f"/api/traces/{out['tree']['trace_id']}")["span_count"] == 3


def test_tap_disabled(weft, grpc_sink):
    sink = grpc_sink()
    grpc, status = free_port(), free_port()
    weft(status_config(grpc, status, sink.endpoint, traces={"enabled": False}))
    base = f"http://127.0.0.1:{status}"
    send_three_tier(grpc)
    assert sink.wait_for_spans(4, 20)
    assert wait_until(lambda: api(base, "/api/pipelines")["pipelines"][0]["receivers"][0]
                      ["totals"].get("otelcol_receiver_accepted_spans") == 4, 10)
    got = api(base, "/api/traces")
    assert (got["traces"], got["held"]) == ([], 0)
    p = api(base, "/api/pipelines")
    assert p["tap"]["on"] is False
    assert p["tap"]["pipelines"] == [
        {"pipeline": "traces", "spans_held": 0, "batches_held": 0, "skipped_spans": 0}]


def test_bad_status_config(tmp_path):
    from harness import weft_binary

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "receivers: {otlp: {protocols: {grpc: {endpoint: 127.0.0.1:0}}}}\n"
        "exporters: {debug: {}}\n"
        "extensions: {status: {traces: {max_spans: 0}}}\n"
        "service:\n  extensions: [status]\n"
        "  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}\n"
    )
    r = subprocess.run([str(weft_binary()), "validate", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "max_spans" in r.stderr + r.stdout, r.stderr + r.stdout


# ---------------------------------------------------------------------------
# Zero SDK: eBPF spans stitched by autotracing


def start_chain(tmp_path: Path, port: int, name: str, *args: str) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, str(APPS / "chain_service.py"), "--port", str(port), "--name", name,
         *args],
        stdout=subprocess.PIPE, stderr=open(tmp_path / f"{name}.log", "wb"),
        stdin=subprocess.DEVNULL,
    )
    line = p.stdout.readline().decode()
    assert line.startswith("ready "), (tmp_path / f"{name}.log").read_text()
    return p


@pytest.mark.skipif(ebpf_unavailable() is not None, reason=ebpf_unavailable() or "")
def test_zero_sdk_waterfall(weft, browser, tmp_path):
    a, b_port, status = free_port(), free_port(), free_port()
    config = {
        "receivers": {"ebpf": {"include": {"ports": [a, b_port]}, "flush_interval": "100ms"}},
        "processors": {"autotracing": {"window": "2s"}},
        "exporters": {"file": {"path": str(tmp_path / "out.jsonl"), "flush_interval": "100ms"}},
        "extensions": {"status": {"endpoint": f"127.0.0.1:{status}"}},
        "service": {
            "extensions": ["status"],
            "pipelines": {"traces": {"receivers": ["ebpf"], "processors": ["autotracing"],
                                     "exporters": ["file"]}},
        },
    }
    w = weft(config)
    # The harness counts weft ready once its metrics answer (the ebpf receiver has no
    # port to wait for); the probes are attached once the health check says 200.
    assert wait_until(lambda: w.health_status() == 200, 30), w.log_tail()
    base = f"http://127.0.0.1:{status}"
    procs = []
    try:
        procs.append(start_chain(tmp_path, b_port, "B"))
        procs.append(start_chain(tmp_path, a, "A", "--call", f"127.0.0.1:{b_port}"))
        r = subprocess.run(
            [sys.executable, str(APPS / "load_client.py"), f"127.0.0.1:{a}", "zsw", "1", "1"],
            capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0, r.stderr
        client_pid = json.loads(r.stdout)["pid"]

        # client -> A, A's server span, A -> B, B's server span: one trace of four.
        def one_trace():
            got = api(base, "/api/traces", ebpf="true")
            return [t for t in got["traces"] if t["span_count"] == 4]

        if not wait_until(lambda: len(one_trace()) == 1, 20):
            pytest.fail(f"no trace of four spans: {api(base, '/api/traces')}\n" + "\n".join(
                x for x in w.metrics_text().splitlines()
                if ("ebpf" in x or "autotracing" in x) and not x.startswith("#")
                and not x.endswith(" 0")), pytrace=False)
        tid = one_trace()[0]["trace_id"]
        trace = api(base, f"/api/traces/{tid}")
        spans = trace["spans"]
        assert [(s["kind"], s["depth"], s["source"]) for s in spans] == [
            ("client", 0, "ebpf"), ("server", 1, "ebpf"), ("client", 2, "ebpf"),
            ("server", 3, "ebpf")]
        assert [s["edge_rule"] for s in spans] == [None, "tcp_seq", "syscall_trace_id", "tcp_seq"]
        pids = [s["resource"].get("process.pid") for s in spans]
        assert pids == [client_pid, procs[1].pid, procs[1].pid, procs[0].pid]
        assert all(s["name"].startswith("GET") for s in spans), [s["name"] for s in spans]

        br = browser(base)
        br("goto", hash="#/traces")
        br("filter", ebpf=True, expect=[t["trace_id"] for t in
                                        api(base, "/api/traces", ebpf="true")["traces"]])
        wf = br("open_trace", trace_id=tid, spans=4)["rows"]
        assert [(r["span_id"], r["depth"], r["source"], r["rule"]) for r in wf] == [
            (s["span_id"], s["depth"], "ebpf", s["edge_rule"]) for s in spans]
        ARTIFACTS.mkdir(exist_ok=True)
        br("screenshot", path=str(ARTIFACTS / "status-waterfall-ebpf.png"))
        assert br("console_errors")["errors"] == []
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
