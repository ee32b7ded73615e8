// The workers page (a table, filtered by a search box) and the devices page (each GPU's
// memory and utilization, the device-to-device transfer matrix, totals per link class).
// Bounded: at most WORKERS_MAX table rows, DEVICE_MAX GPUs (the busiest when there are
// more), a MATRIX_MAX × MATRIX_MAX matrix, each with a line saying what was left out.
"use strict";

const WORKERS_MAX = 200;
const DEVICE_MAX = 32;
const MATRIX_MAX = 16;

// The filter is kept in the address (`/workers?filter=…`), so a filtered view can be shared.
const workersView = { filter: new URLSearchParams(location.search).get("filter") || "", status: null };

// The worker's name, linking to its own metrics where it serves them (http and https
// addresses only: the address comes from the worker).
function workerName(w) {
  if (!/^https?:\/\//.test(w.dashboard)) return w.name;
  const href = w.dashboard.replace(/\/+$/, "") + "/metrics";
  return el("a", { class: "worker-link", href, title: w.name + "'s own metrics" }, w.name);
}

function workerRow(w) {
  const dev = w.device === "host" ? "—"
    : bytes(w.device_memory) + " / " + bytes(w.device_memory_limit);
  return el("tr", { class: "worker-row", "data-address": w.address, "data-name": w.name },
    el("td", {}, workerName(w)), el("td", { text: w.address }), el("td", { text: w.host }),
    el("td", {}, w.device, w.device_name ? el("div", { class: "sub", text: w.device_name }) : null),
    el("td", { class: "num", text: String(w.threads) }),
    el("td", { text: bytes(w.memory) + (w.memory_limit ? " / " + bytes(w.memory_limit) : "") }),
    el("td", { text: dev }), el("td", { class: "num", text: String(w.processing) }),
    el("td", { text: w.last_seen_s.toFixed(1) + " s ago" }), el("td", { text: w.transport }),
    el("td", { text: w.received.map(([k, v]) => k + " " + bytes(v)).join(", ") || "—" }));
}

function workersTable(s) {
  const f = workersView.filter.trim().toLowerCase();
  const match = f ? s.workers.filter((w) =>
    (w.name + " " + w.address + " " + w.host + " " + w.device).toLowerCase().includes(f)) : s.workers;
  const head = ["name", "address", "host", "device", "threads", "memory", "device memory",
    "processing", "last heartbeat", "transport", "received by link"];
  const t = el("table", { id: "workers-table" },
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { text: h })))),
    el("tbody", {}, ...match.slice(0, WORKERS_MAX).map(workerRow)));
  const cut = match.length > WORKERS_MAX
    ? note("and " + count(match.length - WORKERS_MAX) + " more workers (filter to find one)", "more")
    : null;
  const none = f && !match.length ? note("no worker matches “" + workersView.filter + "”") : null;
  return [t, none, cut].filter(Boolean);
}

// The search box stays across redraws (it keeps its focus and text); the table is redrawn.
function drawWorkers(root, s) {
  workersView.status = s;
  let body = root.querySelector("#workers-body");
  if (!body) {
    const box = el("input", { id: "worker-filter", type: "search",
      placeholder: "filter by name, address, host or device", "aria-label": "filter workers" });
    box.value = workersView.filter;
    box.addEventListener("input", () => {
      workersView.filter = box.value;
      history.replaceState(null, "", box.value ? "?filter=" + encodeURIComponent(box.value) : "/workers");
      drawWorkers(root, workersView.status);
    });
    body = el("div", { id: "workers-body", class: "scroll-x" });
    root.replaceChildren(el("section", {},
      el("div", { class: "section-head" }, el("h2", { id: "workers-title" }), box), body));
  }
  root.querySelector("#workers-title").textContent = "Workers (" + count(s.workers.length) + ")";
  body.replaceChildren(...workersTable(s));
}

function utilization(w) {
  if (w.utilization == null) return el("span", { class: "muted", text: "utilization unknown" });
  const u = Math.max(0, Math.min(100, w.utilization));
  const row = bar([[u, "busy", u.toFixed(0) + " % busy"]], 100, u.toFixed(0) + " % busy");
  row.classList.add("utilization");
  row.dataset.utilization = u.toFixed(0);
  return row;
}

// How busy a GPU is: its utilization or the share of its memory in use, the larger.
function busy(w) {
  return Math.max((w.utilization || 0) / 100, w.device_memory / Math.max(w.device_memory_limit, 1));
}

function deviceTable(gpus) {
  const body = el("tbody");
  for (const w of largest(gpus, DEVICE_MAX, busy)) {
    const used = bar([[w.device_memory, "memory", "in use " + bytes(w.device_memory)]],
      Math.max(w.device_memory_limit, 1),
      bytes(w.device_memory) + " of " + bytes(w.device_memory_limit));
    const tr = el("tr", { class: "device-row" }, el("td", {}, workerName(w)),
      el("td", { text: w.device + (w.device_name ? " (" + w.device_name + ")" : "") }),
      el("td", { class: "wide" }, used), el("td", { class: "wide" }, utilization(w)));
    tr.dataset.worker = w.name;
    tr.dataset.device = w.device;
    tr.dataset.used = String(w.device_memory);
    tr.dataset.limit = String(w.device_memory_limit);
    body.append(tr);
  }
  return el("table", { id: "devices-table" }, el("thead", {}, el("tr", {},
    ...["worker", "device", "memory", "utilization"].map((h) => el("th", { text: h })))), body);
}

// The pairs of workers (bytes, seconds, link classes, summed over classes) and each
// worker's traffic (sent plus received): one pass over the links.
function pairs(links) {
  const byPair = new Map(), traffic = new Map();
  for (const l of links) {
    const k = l.to + "\u0000" + l.from;
    const p = byPair.get(k) || { from: l.from, to: l.to, bytes: 0, seconds: 0, links: [] };
    p.bytes += l.bytes;
    p.seconds += l.seconds;
    if (!p.links.includes(l.link)) p.links.push(l.link);
    byPair.set(k, p);
    traffic.set(l.from, (traffic.get(l.from) || 0) + l.bytes);
    traffic.set(l.to, (traffic.get(l.to) || 0) + l.bytes);
  }
  return { byPair, traffic };
}

function matrixCell(p, max) {
  if (!p) return el("td", { class: "matrix-cell empty" });
  const td = el("td", { class: "matrix-cell", "data-from": p.from, "data-to": p.to,
    "data-bytes": String(p.bytes), "data-link": p.links.join("+"),
    "data-rate": p.seconds > 0 ? String(Math.round(p.bytes / p.seconds)) : "",
    title: p.to + " received " + bytes(p.bytes) + " from " + p.from + " over " +
      p.links.join(" and ") + " in " + duration(p.seconds) + ": " + rate(p.bytes, p.seconds) },
  el("div", { class: "cell-bytes", text: bytes(p.bytes) }),
  el("div", { class: "cell-link", text: p.links.join("+") }),
  el("div", { class: "cell-rate", text: rate(p.bytes, p.seconds) }));
  const heat = Math.log1p(p.bytes) / Math.log1p(Math.max(max, 1));
  td.style.background = `rgba(59, 130, 246, ${(0.06 + 0.34 * heat).toFixed(3)})`;
  return td;
}

function matrix(s) {
  const { byPair, traffic } = pairs(s.links);
  if (!byPair.size) {
    return section("Transfers between workers", note("no transfers between workers yet"));
  }
  const shown = [...traffic].sort((a, b) => b[1] - a[1]).slice(0, MATRIX_MAX)
    .map(([n]) => n).sort(byName);
  const max = Math.max(...[...byPair.values()].map((p) => p.bytes));
  const t = el("table", { id: "matrix" }, el("thead", {}, el("tr", {},
    el("th", { class: "corner" }, "sender →", el("br"), "receiver ↓"),
    ...shown.map((n) => el("th", { class: "sender", text: n })))));
  const body = el("tbody");
  let drawn = 0;
  for (const to of shown) {
    const cells = shown.map((from) => byPair.get(to + "\u0000" + from));
    drawn += cells.filter(Boolean).length;
    body.append(el("tr", {}, el("th", { class: "receiver", text: to }),
      ...cells.map((p) => matrixCell(p, max))));
  }
  t.append(body);
  const left = byPair.size - drawn;
  const cut = left > 0 ? note("the " + shown.length + " workers with the most traffic of " +
    count(traffic.size) + "; " + count(left) + " of " + count(byPair.size) + " pairs and " +
    count(traffic.size - shown.length) + " workers left out", "more") : null;
  return section("Transfers between workers", el("div", { class: "scroll-x" }, t), cut);
}

// Totals per link class: bytes received (every worker's own count), and the time and rate
// of the transfers between the pairs the scheduler lists.
function linkTotals(s) {
  const totals = new Map();
  const at = (k) => totals.get(k) || totals.set(k, { bytes: 0, pairBytes: 0, seconds: 0 }).get(k);
  for (const w of s.workers) for (const [k, v] of w.received) at(k).bytes += v;
  for (const l of s.links) {
    at(l.link).pairBytes += l.bytes;
    at(l.link).seconds += l.seconds;
  }
  if (!totals.size) return section("Bytes received, by link", note("nothing received yet"));
  const rows = [...totals].sort((a, b) => b[1].bytes - a[1].bytes).map(([k, v]) =>
    el("tr", { class: "link-total", "data-link": k }, el("td", { text: k }),
      el("td", { text: bytes(v.bytes) }), el("td", { text: duration(v.seconds) }),
      el("td", { text: rate(v.pairBytes, v.seconds) })));
  return section("Bytes received, by link", el("table", { id: "links-table" },
    el("thead", {}, el("tr", {}, ...["link", "received", "transfer time", "achieved rate"]
      .map((h) => el("th", { text: h })))), el("tbody", {}, ...rows)));
}

function drawDevices(root, s) {
  const gpus = s.workers.filter((w) => w.device !== "host");
  const devices = gpus.length
    ? section("Devices", deviceTable(gpus), more(gpus.length - DEVICE_MAX, "GPUs (the busiest are shown)"))
    : section("Devices", note("no GPU workers (CUDA or simulated)"));
  root.replaceChildren(devices, matrix(s), linkTotals(s));
}

PAGES.workers = { draw: drawWorkers };
PAGES.devices = { draw: drawDevices };
