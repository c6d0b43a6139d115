// weft status page: plain JavaScript, no build step. Every value from the API
// is written with textContent, never parsed as HTML.
"use strict";

const POLL_MS = 2000;
const ITEMS = { traces: "spans", metrics: "metric_points", logs: "log_records" };
const view = document.getElementById("view");
const updated = document.getElementById("updated");
let timer = null;
let filters = { service: "", min_duration: "", errors: false, ebpf: false };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "style") e.setAttribute("style", v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}

async function api(path) {
  const r = await fetch(path, { headers: { accept: "application/json" } });
  const body = await r.json().catch(() => ({ error: "not JSON (" + r.status + ")" }));
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}

function stamp() {
  updated.textContent = "updated " + new Date().toLocaleTimeString();
}

function showError(e) {
  view.replaceChildren(el("p", { class: "error" }, "Cannot reach weft: " + e.message));
}

function fmtDuration(ns) {
  if (ns < 1e3) return ns + " ns";
  if (ns < 1e6) return (ns / 1e3).toFixed(1) + " µs";
  if (ns < 1e9) return (ns / 1e6).toFixed(ns < 1e7 ? 2 : 1) + " ms";
  return (ns / 1e9).toFixed(2) + " s";
}

function fmtCount(n) {
  return Number(n).toLocaleString("en-US");
}

// One colour per service, distinct for the first twelve services seen and stable
// for as long as the page is open (services keep the colour they got first).
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2",
  "#edc948", "#9c755f", "#ff9da7", "#2f4b7c", "#a05195", "#665191"];
const serviceOrder = [];

function noteServices(list) {
  for (const s of [...(list || [])].sort()) if (!serviceOrder.includes(s)) serviceOrder.push(s);
}

function serviceColor(s) {
  noteServices([s]);
  return PALETTE[serviceOrder.indexOf(s) % PALETTE.length];
}

// --- pipelines ---------------------------------------------------------------------

function shortName(name) {
  return name.replace(/^otelcol_(receiver|processor|exporter)_/, "").replace(/^weft_/, "");
}

// The counters shown on a component: its totals for this pipeline's signal
// (names of other signals left out), plus autotracing's edges per tier.
function counterRows(comp, signal) {
  const others = Object.entries(ITEMS).filter(([s]) => s !== signal).map(([, i]) => i);
  const rows = [];
  for (const [name, value] of Object.entries(comp.totals)) {
    if (others.some((i) => name.endsWith("_" + i))) continue;
    if (name === "weft_autotracing_edges" || name === "weft_autotracing_refused_edges") continue;
    rows.push([shortName(name), value, name]);
  }
  for (const s of comp.series) {
    if (s.name === "weft_autotracing_edges") rows.push(["edges " + (s.labels.tier || ""), s.value, s.name]);
  }
  const refused = comp.series.filter((s) => s.name === "weft_autotracing_refused_edges");
  if (refused.length) {
    const byReason = {};
    for (const s of refused) {
      const k = s.labels.reason || s.labels.tier || "other";
      byReason[k] = (byReason[k] || 0) + s.value;
    }
    for (const [k, v] of Object.entries(byReason)) rows.push(["refused edges " + k, v, "weft_autotracing_refused_edges"]);
  }
  return rows;
}

function componentBox(kind, comp, signal) {
  const rows = counterRows(comp, signal);
  const table = el("table", { class: "counters" },
    rows.map(([label, value, metric]) =>
      el("tr", { "data-metric": metric, title: metric },
        el("td", {}, label), el("td", { class: "num", "data-counter": label }, fmtCount(value)))));
  return el("div", { class: "comp " + kind, "data-component": kind + "/" + comp.id },
    el("div", { class: "comp-title" }, el("span", { class: "kind" }, kind), " ", comp.id),
    rows.length ? table : el("p", { class: "muted small" }, "no counters yet"));
}

function renderPipelines(data) {
  const cards = data.pipelines.map((p) => {
    const col = (title, kind, list) =>
      el("div", { class: "col" }, el("h4", {}, title), list.map((c) => componentBox(kind, c, p.signal)));
    const tap = data.tap.pipelines.find((t) => t.pipeline === p.id);
    return el("section", { class: "pipeline", "data-pipeline": p.id },
      el("h3", {}, p.id, " ", el("span", { class: "badge" }, p.signal)),
      el("div", { class: "flow" },
        col("receivers", "receiver", p.receivers),
        el("div", { class: "arrow" }, "→"),
        col("processors", "processor", p.processors),
        el("div", { class: "arrow" }, "→"),
        col("exporters", "exporter", p.exporters)),
      tap ? el("p", { class: "muted small" },
        "trace tap: " + fmtCount(tap.spans_held) + " spans held in " + fmtCount(tap.batches_held) +
        " batches (room for " + fmtCount(data.tap.max_spans_per_pipeline) + ")" +
        (tap.skipped_spans ? ", " + fmtCount(tap.skipped_spans) + " spans in batches larger than the tap not kept" : "")) : null);
  });
  view.replaceChildren(
    el("h2", {}, "Pipelines"),
    el("p", { class: "muted small" }, "Extensions: " + (data.extensions.join(", ") || "none") +
      ". Counters are totals since weft started; they refresh every " + POLL_MS / 1000 + " s."),
    ...cards);
}

// --- traces --------------------------------------------------------------------------

function traceQuery() {
  const q = new URLSearchParams();
  if (filters.service) q.set("service", filters.service);
  if (filters.min_duration) q.set("min_duration", filters.min_duration);
  if (filters.errors) q.set("errors", "true");
  if (filters.ebpf) q.set("ebpf", "true");
  return q.toString();
}

function filterBar(services) {
  const select = el("select", { id: "f-service", onchange: (e) => { filters.service = e.target.value; refresh(); } },
    el("option", { value: "" }, "all services"),
    services.map((s) => el("option", { value: s, selected: s === filters.service }, s)));
  const dur = el("input", { id: "f-min-duration", placeholder: "min duration, e.g. 100ms", value: filters.min_duration,
    onchange: (e) => { filters.min_duration = e.target.value.trim(); refresh(); } });
  const check = (id, key, label) => el("label", {},
    el("input", { type: "checkbox", id, checked: filters[key], onchange: (e) => { filters[key] = e.target.checked; refresh(); } }),
    " " + label);
  return el("div", { class: "filters" }, select, dur, check("f-errors", "errors", "errors only"),
    check("f-ebpf", "ebpf", "has eBPF spans"));
}

function renderTraces(data) {
  noteServices(data.services);
  const rows = data.traces.map((t) =>
    el("tr", { class: "trace-row", "data-trace-id": t.trace_id,
      onclick: () => { location.hash = "#/traces/" + t.trace_id + "?pipeline=" + encodeURIComponent(t.pipeline); } },
      el("td", {}, new Date(t.start_unix_nano / 1e6).toLocaleTimeString()),
      el("td", {}, el("span", { class: "swatch", style: "background:" + serviceColor(t.root_service) }), t.root_service),
      el("td", { class: "root-name" }, t.root_name),
      el("td", { class: "num" }, fmtDuration(t.duration_ns)),
      el("td", { class: "num" }, t.span_count),
      el("td", {}, t.error ? el("span", { class: "badge err" }, "error") : "",
        t.has_ebpf ? el("span", { class: "badge ebpf" }, "eBPF") : "",
        t.complete ? "" : el("span", { class: "badge warn", title: "no root span held" }, "partial")),
      el("td", { class: "muted small" }, t.pipeline)));
  const table = rows.length
    ? el("table", { class: "traces", id: "trace-list" },
      el("thead", {}, el("tr", {}, ["time", "root service", "root span", "duration", "spans", "", "pipeline"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows))
    : el("p", { class: "muted", id: "trace-list-empty" }, "No traces match. Traces appear here as they leave a traces pipeline.");
  const existing = document.getElementById("traces-view");
  const body = el("div", { id: "trace-results" },
    el("p", { class: "muted small" }, data.matching + " of " + data.held + " traces held match" +
      (data.matching > data.traces.length ? " (newest " + data.traces.length + " shown)" : "")),
    table);
  if (existing) {
    // Keep the filter inputs (and their focus) while the list refreshes.
    existing.querySelector("#trace-results").replaceWith(body);
    const sel = existing.querySelector("#f-service");
    const known = new Set([...sel.options].map((o) => o.value));
    for (const s of data.services) if (!known.has(s)) sel.appendChild(el("option", { value: s }, s));
    return;
  }
  view.replaceChildren(el("div", { id: "traces-view" }, el("h2", {}, "Recent traces"), filterBar(data.services), body));
}

function attrTable(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return el("p", { class: "muted small" }, "none");
  return el("table", { class: "attrs" }, entries.map(([k, v]) =>
    el("tr", {}, el("td", { class: "key" }, k), el("td", {}, typeof v === "string" ? v : JSON.stringify(v)))));
}

const RULES = {
  tcp_seq: "TCP sequence (same bytes seen on both ends)",
  trace_context: "trace context header captured on the wire",
  syscall_trace_id: "syscall id (same thread, request in then call out)",
  request_id: "request id header through a gateway",
  sdk: "SDK span joined to its eBPF span",
  sdk_context: "context propagated by the SDK",
};

function spanDetails(s) {
  return el("div", { class: "details", id: "span-details", "data-span-id": s.span_id },
    el("h3", {}, s.name),
    el("table", { class: "attrs" },
      [["service", s.service], ["kind", s.kind], ["source", s.source === "ebpf" ? "eBPF (no SDK)" : "SDK"],
        ["span id", s.span_id], ["parent span id", s.parent_span_id || "(root)"],
        ["edge rule", s.edge_rule ? s.edge_rule + " — " + (RULES[s.edge_rule] || "") : (s.parent_span_id ? "unknown" : "—")],
        ["duration", fmtDuration(s.duration_ns)], ["status", s.status + (s.status_message ? ": " + s.status_message : "")],
        ["scope", s.scope], ["links", String(s.links)]]
        .map(([k, v]) => el("tr", {}, el("td", { class: "key" }, k), el("td", {}, v)))),
    el("h4", {}, "Attributes"), attrTable(s.attributes),
    el("h4", {}, "Resource"), attrTable(s.resource),
    s.events.length ? el("h4", {}, "Events") : null,
    s.events.map((e) => el("div", { class: "event" }, el("b", {}, e.name), attrTable(e.attributes))));
}

// What tells rows apart when names do not (eBPF spans are named by the method only):
// the kind, the path and the process.
function spanHint(s) {
  const a = s.attributes || {};
  const parts = [s.kind];
  const path = a["url.path"] || a["http.target"] || a["http.route"];
  if (typeof path === "string" && !s.name.includes(path)) parts.push(path);
  const pid = a["process.pid"] !== undefined ? a["process.pid"] : (s.resource || {})["process.pid"];
  if (pid !== undefined) parts.push("pid " + pid);
  return el("span", { class: "hint muted small" }, parts.join(" · "));
}

function renderWaterfall(t) {
  noteServices(t.services);
  const start = t.start_unix_nano;
  const total = Math.max(t.duration_ns, 1);
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) =>
    el("span", { class: "tick", style: "left:" + f * 100 + "%" }, fmtDuration(Math.round(f * total))));
  const details = el("div", { id: "details-slot" }, el("p", { class: "muted small" }, "Click a span for its attributes."));
  const rows = t.spans.map((s, i) => {
    const left = ((s.start_unix_nano - start) / total) * 100;
    const width = Math.max((s.duration_ns / total) * 100, 0.3);
    const row = el("div", { class: "wf-row" + (s.status === "error" ? " is-error" : ""), "data-span-id": s.span_id,
      "data-depth": s.depth, "data-service": s.service, "data-source": s.source, "data-name": s.name, "data-index": i,
      onclick: () => {
        document.querySelectorAll(".wf-row.selected").forEach((r) => r.classList.remove("selected"));
        row.classList.add("selected");
        details.replaceChildren(spanDetails(s));
      } },
      el("div", { class: "wf-label", style: "padding-left:" + (6 + s.depth * 16) + "px" },
        el("span", { class: "swatch", style: "background:" + serviceColor(s.service) }),
        el("span", { class: "svc" }, s.service), " ",
        el("span", { class: "span-name" }, s.name), " ",
        spanHint(s), " ",
        el("span", { class: "badge " + (s.source === "ebpf" ? "ebpf" : "sdk") }, s.source === "ebpf" ? "eBPF" : "SDK"),
        s.edge_rule ? el("span", { class: "badge rule", "data-rule": s.edge_rule, title: RULES[s.edge_rule] || "" }, s.edge_rule) : null,
        s.parent_missing ? el("span", { class: "badge warn", title: "its parent is not held" }, "orphan") : null),
      el("div", { class: "wf-track" },
        el("div", { class: "wf-bar " + s.source, style: "left:" + left + "%;width:" + width + "%;background-color:" + serviceColor(s.service) }),
        // The duration label sits after the bar, or inside its end when the bar
        // reaches the right edge.
        left + width > 85 && width > 12
          ? el("span", { class: "wf-dur inside", style: "left:" + (left + width) + "%" }, fmtDuration(s.duration_ns))
          : el("span", { class: "wf-dur", style: "left:" + Math.min(left + width, 92) + "%" }, fmtDuration(s.duration_ns))));
    return row;
  });
  view.replaceChildren(
    el("p", {}, el("a", { href: "#/traces" }, "← recent traces")),
    el("h2", {}, t.root_service + ": " + t.root_name),
    el("p", { class: "muted small", id: "trace-summary" }, "trace " + t.trace_id + " · " + t.span_count + " spans · " +
      fmtDuration(t.duration_ns) + " · pipeline " + t.pipeline + (t.error ? " · has errors" : "") +
      (t.spans_left_out ? " · first " + t.spans.length + " spans shown, " + t.spans_left_out + " left out" : "")),
    el("div", { class: "legend" }, (t.services || []).map((s) => el("span", { class: "legend-item" },
      el("span", { class: "swatch", style: "background:" + serviceColor(s) }), s)),
      el("span", { class: "legend-item" }, el("span", { class: "swatch ebpf-swatch" }), "eBPF span (striped)")),
    el("div", { class: "waterfall", id: "waterfall" },
      el("div", { class: "wf-row wf-axis" }, el("div", { class: "wf-label" }, "span"), el("div", { class: "wf-track" }, ticks)),
      rows),
    details);
}

// --- config and reloads --------------------------------------------------------------

function renderConfig(c) {
  view.replaceChildren(el("h2", {}, "Configuration as loaded"),
    el("p", { class: "muted small" }, "Loaded " + new Date(c.loaded_unix_ms).toLocaleString() +
      ". Tokens, passwords, keys and credential headers are shown as [REDACTED]."),
    el("pre", { class: "config", id: "config-yaml" }, c.yaml));
}

function renderReloads(r) {
  view.replaceChildren(el("h2", {}, "Reloads"),
    r.reloads.length
      ? el("table", { class: "traces", id: "reload-list" },
        el("thead", {}, el("tr", {}, ["time", "trigger", "result", "detail"].map((h) => el("th", {}, h)))),
        el("tbody", {}, r.reloads.map((e) => el("tr", { "data-result": e.result },
          el("td", {}, new Date(e.time_unix_ms).toLocaleString()), el("td", {}, e.trigger),
          el("td", {}, el("span", { class: "badge " + (e.result === "failure" ? "err" : "ok") }, e.result)),
          el("td", { class: "detail" }, e.detail)))))
      : el("p", { class: "muted", id: "reload-list" }, "No reload since weft started (send SIGHUP or edit the config file)."));
}

// --- routing ----------------------------------------------------------------------

function route() {
  const h = location.hash || "#/pipelines";
  const [path, query] = h.slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  return { name: parts[0] || "pipelines", arg: parts[1], query: new URLSearchParams(query || "") };
}

async function refresh() {
  const r = route();
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === r.name));
  try {
    if (r.name === "pipelines") renderPipelines(await api("/api/pipelines"));
    else if (r.name === "traces" && r.arg) {
      const p = r.query.get("pipeline");
      renderWaterfall(await api("/api/traces/" + encodeURIComponent(r.arg) + (p ? "?pipeline=" + encodeURIComponent(p) : "")));
    } else if (r.name === "traces") renderTraces(await api("/api/traces?" + traceQuery()));
    else if (r.name === "config") renderConfig(await api("/api/config"));
    else if (r.name === "reloads") renderReloads(await api("/api/reloads"));
    else view.replaceChildren(el("p", {}, "No such view."));
    stamp();
  } catch (e) {
    if (r.name === "traces" && !r.arg && document.getElementById("traces-view")) {
      document.getElementById("trace-results").replaceChildren(el("p", { class: "error" }, e.message));
    } else {
      showError(e);
    }
  }
}

function start() {
  if (timer) clearInterval(timer);
  refresh();
  // Live views poll; a waterfall and the config stay as they are.
  timer = setInterval(() => {
    const r = route();
    if (r.name === "pipelines" || (r.name === "traces" && !r.arg) || r.name === "reloads") refresh();
  }, POLL_MS);
}

window.addEventListener("hashchange", start);
start();
