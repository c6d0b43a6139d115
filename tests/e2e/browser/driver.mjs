// Drives weft's status page in headless Chromium for the Python end-to-end tests.
//
//   node driver.mjs <base url>
//
// Reads one JSON command per line on stdin, answers one JSON line on stdout:
// {"ok": true, ...result} or {"ok": false, "error": "..."}. The browser is
// Debian's chromium (WEFT_CHROMIUM, default /usr/bin/chromium), driven by
// playwright-core (no browser download).
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const base = process.argv[2];
if (!base) {
  console.error("usage: node driver.mjs <base url>");
  process.exit(2);
}
const executablePath = process.env.WEFT_CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
const consoleErrors = [];
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));

const T = 10000;

const ops = {
  async goto({ hash }) {
    await page.goto(base + "/" + (hash || ""));
    await page.waitForFunction(() => document.getElementById("updated").textContent !== "", null, { timeout: T });
    return { title: await page.title() };
  },
  async counter({ component, counter }) {
    const sel = `[data-component="${component}"] [data-counter="${counter}"]`;
    await page.waitForSelector(sel, { timeout: T });
    return { value: Number((await page.textContent(sel)).replace(/,/g, "")) };
  },
  async wait_counter_above({ component, counter, value, timeout_ms }) {
    const sel = `[data-component="${component}"] [data-counter="${counter}"]`;
    const h = await page.waitForFunction(([s, v]) => {
      const e = document.querySelector(s);
      const n = e ? Number(e.textContent.replace(/,/g, "")) : NaN;
      return n > v ? n : false;
    }, [sel, value], { timeout: timeout_ms || T, polling: 200 });
    return { value: await h.jsonValue() };
  },
  async components() {
    return {
      components: await page.$$eval("[data-component]", (els) => els.map((e) => ({
        id: e.dataset.component,
        pipeline: e.closest("[data-pipeline]").dataset.pipeline,
        counters: Object.fromEntries([...e.querySelectorAll("[data-counter]")].map((c) => [c.dataset.counter, Number(c.textContent.replace(/,/g, ""))])),
      }))),
    };
  },
  async click({ selector }) {
    await page.click(selector, { timeout: T });
    return {};
  },
  async trace_list({ wait_for }) {
    if (wait_for) await page.waitForSelector(`tr[data-trace-id="${wait_for}"]`, { timeout: T });
    else await page.waitForSelector("#trace-list, #trace-list-empty", { timeout: T });
    return {
      traces: await page.$$eval("tr.trace-row", (rows) => rows.map((r) => ({
        trace_id: r.dataset.traceId,
        cells: [...r.querySelectorAll("td")].map((td) => td.textContent),
      }))),
    };
  },
  async filter({ service, min_duration, errors, ebpf, expect }) {
    if (service !== undefined) await page.selectOption("#f-service", service);
    if (min_duration !== undefined) {
      await page.fill("#f-min-duration", min_duration);
      await page.press("#f-min-duration", "Enter");
      await page.dispatchEvent("#f-min-duration", "change");
    }
    if (errors !== undefined) await page.setChecked("#f-errors", errors);
    if (ebpf !== undefined) await page.setChecked("#f-ebpf", ebpf);
    // Wait until the list shows exactly the expected traces (or time out).
    const want = JSON.stringify([...(expect || [])].sort());
    await page.waitForFunction((w) => {
      const got = [...document.querySelectorAll("tr.trace-row")].map((r) => r.dataset.traceId).sort();
      const empty = document.getElementById("trace-list-empty");
      return JSON.stringify(got) === w && (got.length > 0 || empty !== null);
    }, want, { timeout: T, polling: 200 }).catch(() => {});
    return {
      traces: await page.$$eval("tr.trace-row", (rows) => rows.map((r) => r.dataset.traceId)),
      empty: (await page.$("#trace-list-empty")) !== null,
    };
  },
  async open_trace({ trace_id, spans }) {
    await page.click(`tr[data-trace-id="${trace_id}"]`, { timeout: T });
    await page.waitForFunction((n) => document.querySelectorAll("#waterfall .wf-row[data-span-id]").length >= n,
      spans || 1, { timeout: T });
    return ops.waterfall();
  },
  async waterfall() {
    return {
      summary: await page.textContent("#trace-summary"),
      rows: await page.$$eval("#waterfall .wf-row[data-span-id]", (rows) => rows.map((r) => {
        const bar = r.querySelector(".wf-bar");
        const rule = r.querySelector(".badge.rule");
        return {
          span_id: r.dataset.spanId,
          name: r.dataset.name,
          depth: Number(r.dataset.depth),
          service: r.dataset.service,
          source: r.dataset.source,
          rule: rule ? rule.dataset.rule : null,
          indent_px: parseFloat(r.querySelector(".wf-label").style.paddingLeft),
          bar: { left: parseFloat(bar.style.left), width: parseFloat(bar.style.width), color: getComputedStyle(bar).backgroundColor },
        };
      })),
    };
  },
  async click_span({ index }) {
    await page.click(`#waterfall .wf-row[data-index="${index}"]`, { timeout: T });
    await page.waitForSelector("#span-details", { timeout: T });
    return {
      span_id: await page.getAttribute("#span-details", "data-span-id"),
      fields: await page.$$eval("#span-details table.attrs tr", (rows) => rows.map((r) =>
        [...r.querySelectorAll("td")].map((td) => td.textContent))),
    };
  },
  async text({ selector }) {
    await page.waitForSelector(selector, { timeout: T });
    return { text: await page.textContent(selector) };
  },
  async screenshot({ path }) {
    await page.screenshot({ path, fullPage: true });
    return { path };
  },
  async console_errors() {
    return { errors: consoleErrors };
  },
};

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  let out;
  try {
    const cmd = JSON.parse(line);
    const f = ops[cmd.op];
    if (!f) throw new Error("unknown op " + cmd.op);
    out = { ok: true, ...(await f(cmd)) };
  } catch (e) {
    out = { ok: false, error: String(e && e.message || e) };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}
await browser.close();
