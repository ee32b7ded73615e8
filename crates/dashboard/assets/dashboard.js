// Rask's dashboard: polls the scheduler's JSON API and draws the page its path names.
// Everything drawn is bounded (at most STREAM_MAX task rectangles, PREFIX_MAX prefixes,
// one row per worker), so a huge graph costs the browser what a small one does.
"use strict";

const REFRESH_MS = 1000;
const STREAM_MAX = 1000;
const STREAM_WINDOW_S = 20;
const PREFIX_MAX = 50;
const RATE_POINTS = 60;

const state = { stream: [], cursor: 0, rates: [], lastDone: null, lastAt: null };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function hue(s) {
  let h = 0;
  for (const c of s) h = (h * 31 + c.charCodeAt(0)) % 360;
  return h;
}

async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
  return r.json();
}

function section(title, ...body) {
  return el("section", {}, el("h2", { text: title }), ...body);
}

// A horizontal bar of parts [[value, class, label]] out of `total`.
function bar(parts, total, caption) {
  const b = el("div", { class: "bar" });
  for (const [v, cls, label] of parts) {
    if (v <= 0 || total <= 0) continue;
    const p = el("span", { class: "part " + cls, title: label });
    p.style.width = Math.min(100, (100 * v) / total) + "%";
    b.append(p);
  }
  return el("div", { class: "bar-row" }, b, el("span", { class: "caption", text: caption }));
}

function summary(s) {
  const done = s.tasks_completed;
  const now = s.uptime_s;
  if (state.lastDone !== null && now > state.lastAt) {
    state.rates.push((done - state.lastDone) / (now - state.lastAt));
    if (state.rates.length > RATE_POINTS) state.rates.shift();
  }
  state.lastDone = done;
  state.lastAt = now;
  const rate = state.rates.length ? state.rates[state.rates.length - 1] : 0;
  const tasks = s.tasks.filter(([, v]) => v > 0).map(([k, v]) => k + " " + v).join(" · ");
  document.getElementById("summary").textContent =
    s.address + " · " + s.workers.length + " workers · " + rate.toFixed(0) + " tasks/s" +
    (tasks ? " · " + tasks : "");
}

function rateLine() {
  const w = 600, h = 60;
  const g = svg("svg", { width: w, height: h, class: "rate", viewBox: `0 0 ${w} ${h}` });
  const max = Math.max(1, ...state.rates);
  const pts = state.rates.map((r, i) =>
    `${(i * w) / (RATE_POINTS - 1)},${h - 2 - ((h - 4) * r) / max}`).join(" ");
  g.append(svg("polyline", { points: pts, class: "rate-line" }));
  const t = svg("text", { x: 4, y: 14, class: "axis" });
  t.textContent = "max " + max.toFixed(0) + " tasks/s";
  g.append(t);
  return g;
}

function progress(s) {
  const rows = s.prefixes.slice(0, PREFIX_MAX).map((p) => {
    const total = p.waiting + p.processing + p.memory + p.erred + p.released;
    const row = bar([
      [p.released, "released", "released " + p.released],
      [p.memory, "memory", "in memory " + p.memory],
      [p.processing, "processing", "processing " + p.processing],
      [p.waiting, "waiting", "waiting " + p.waiting],
      [p.erred, "erred", "erred " + p.erred],
    ], total, p.prefix + ": " + (p.memory + p.released) + " / " + total +
      (p.erred ? " (" + p.erred + " erred)" : ""));
    row.classList.add("prefix-row");
    row.dataset.prefix = p.prefix;
    return row;
  });
  const more = s.prefixes.length > PREFIX_MAX
    ? el("p", { class: "note", text: (s.prefixes.length - PREFIX_MAX) + " more prefixes" }) : null;
  return section("Progress", ...rows, more);
}

function memory(s) {
  const rows = s.workers.map((w) => {
    const total = Math.max(w.memory_limit, w.memory + w.spilled_disk, 1) +
      (w.device === "host" ? 0 : Math.max(w.device_memory_limit, w.device_memory));
    const device = w.device === "host" ? "" : ", " + bytes(w.device_memory) + " on " + w.device;
    return bar([
      [w.memory, "memory", "in host memory " + bytes(w.memory)],
      [w.device === "host" ? 0 : w.device_memory, "device", "on the device " + bytes(w.device_memory)],
      [w.spilled_disk, "spilled-disk", "spilled to disk " + bytes(w.spilled_disk)],
    ], total, w.name + ": " + bytes(w.memory) + " in host memory" + device + ", " +
      bytes(w.spilled_disk) + " on disk");
  });
  return section("Memory per worker", ...rows,
    el("p", { class: "note", text: "host memory (green), device (violet), spilled to disk (brown)" }));
}

function processing(s) {
  const max = Math.max(1, ...s.workers.map((w) => w.processing));
  return section("Processing", ...s.workers.map((w) =>
    bar([[w.processing, "processing", w.processing + " tasks"]], max,
      w.name + ": " + w.processing)));
}

function taskStream(s) {
  const workers = s.workers.map((w) => w.name);
  for (const e of state.stream) if (!workers.includes(e.worker)) workers.push(e.worker);
  const rowH = 18, w = 900, h = Math.max(1, workers.length) * rowH + 20;
  const g = svg("svg", { width: w, height: h, class: "stream", viewBox: `0 0 ${w} ${h}` });
  const end = Math.max(s.uptime_s, ...state.stream.map((e) => e.stop_s));
  const start = end - STREAM_WINDOW_S;
  workers.forEach((name, i) => {
    const t = svg("text", { x: 2, y: i * rowH + 13, class: "axis" });
    t.textContent = name;
    g.append(t);
  });
  const x = (t) => 120 + ((w - 124) * (t - start)) / STREAM_WINDOW_S;
  for (const e of state.stream) {
    if (e.stop_s < start) continue;
    const row = workers.indexOf(e.worker);
    const r = svg("rect", {
      x: x(Math.max(e.start_s, start)), y: row * rowH + 2,
      width: Math.max(2, x(e.stop_s) - x(Math.max(e.start_s, start))), height: rowH - 4,
      class: "task-rect kind-" + e.kind, "data-key": e.key, "data-worker": e.worker,
    });
    if (e.kind === "compute") r.style.fill = `hsl(${hue(e.prefix)}, 60%, 55%)`;
    const tip = svg("title");
    tip.textContent = e.key + " on " + e.worker + ", " +
      ((e.stop_s - e.start_s) * 1000).toFixed(2) + " ms (" + e.kind + ")";
    r.append(tip);
    r.addEventListener("click", () => { location.href = "/task?key=" + encodeURIComponent(e.key); });
    g.append(r);
  }
  return section("Task stream (last " + STREAM_WINDOW_S + " s)", g,
    el("p", { class: "note", text: "compute in the colour of its prefix; transfers red, spills orange" }));
}

function workersTable(s) {
  const head = ["name", "address", "host", "device", "threads", "memory", "device memory",
    "processing", "last heartbeat", "transport", "received by link"];
  const t = el("table", { id: "workers-table" },
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { text: h })))));
  const body = el("tbody");
  for (const w of s.workers) {
    const dev = w.device === "host" ? "—"
      : bytes(w.device_memory) + " / " + bytes(w.device_memory_limit);
    const tr = el("tr", { class: "worker-row", "data-address": w.address, "data-name": w.name },
      el("td", { text: w.name }), el("td", { text: w.address }), el("td", { text: w.host }),
      el("td", { text: w.device + (w.device_name ? " (" + w.device_name + ")" : "") }),
      el("td", { text: String(w.threads) }),
      el("td", { text: bytes(w.memory) + (w.memory_limit ? " / " + bytes(w.memory_limit) : "") }),
      el("td", { text: dev }), el("td", { text: String(w.processing) }),
      el("td", { text: w.last_seen_s.toFixed(1) + " s ago" }), el("td", { text: w.transport }),
      el("td", { text: w.received.map(([k, v]) => k + " " + bytes(v)).join(", ") || "—" }));
    body.append(tr);
  }
  t.append(body);
  return section("Workers", t);
}

function devices(s) {
  const gpus = s.workers.filter((w) => w.device !== "host");
  if (!gpus.length) return section("Devices", el("p", { class: "note", text: "no GPU workers (CUDA or simulated)" }));
  const rows = gpus.map((w) => {
    const row = bar([[w.device_memory, "memory", "in use " + bytes(w.device_memory)]],
      Math.max(w.device_memory_limit, 1),
      w.name + " " + w.device + (w.device_name ? " (" + w.device_name + ")" : "") + ": " +
      bytes(w.device_memory) + " of " + bytes(w.device_memory_limit) +
      (w.utilization != null ? ", " + w.utilization.toFixed(0) + " % busy" : ""));
    row.classList.add("device-row");
    row.dataset.worker = w.name;
    row.dataset.device = w.device;
    row.dataset.used = String(w.device_memory);
    row.dataset.limit = String(w.device_memory_limit);
    return row;
  });
  const links = [...new Set(s.workers.flatMap((w) => w.received.map(([k]) => k)))].sort();
  const t = el("table", { id: "links-table" },
    el("thead", {}, el("tr", {}, el("th", { text: "received by" }), ...links.map((l) => el("th", { text: l })))));
  const body = el("tbody");
  for (const w of s.workers) {
    const got = Object.fromEntries(w.received);
    body.append(el("tr", {}, el("td", { text: w.name + " (" + w.device + ")" }),
      ...links.map((l) => el("td", { text: got[l] ? bytes(got[l]) : "—" }))));
  }
  t.append(body);
  return el("div", {}, section("Device memory", ...rows), section("Bytes received, by link", t));
}

async function taskPage() {
  const key = new URLSearchParams(location.search).get("key") || "";
  const page = document.getElementById("page");
  const story = await get("/api/v1/story?key=" + encodeURIComponent(key));
  const t = el("table", { id: "story-table" },
    el("thead", {}, el("tr", {}, ...["at", "from", "to", "why", "worker"].map((h) => el("th", { text: h })))));
  const body = el("tbody");
  for (const e of story) {
    body.append(el("tr", { class: "story-row" }, el("td", { text: e.at_s.toFixed(3) + " s" }),
      el("td", { text: e.from }), el("td", { text: e.to }), el("td", { text: e.why }),
      el("td", { text: e.worker || "—" })));
  }
  t.append(body);
  page.replaceChildren(section("Task " + key, story.length ? t
    : el("p", { class: "note", text: "the scheduler keeps no transition of this key" })));
}

async function pollStream() {
  const fresh = await get("/api/v1/task_stream?since=" + state.cursor + "&limit=" + STREAM_MAX);
  for (const e of fresh) state.cursor = Math.max(state.cursor, e.cursor);
  state.stream = state.stream.concat(fresh).slice(-STREAM_MAX);
}

async function refresh() {
  const name = location.pathname.replace(/^\//, "") || "status";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("here", a.dataset.page === name);
  const s = await get("/api/v1/status");
  summary(s);
  const page = document.getElementById("page");
  if (name === "workers") page.replaceChildren(workersTable(s));
  else if (name === "devices") page.replaceChildren(devices(s));
  else if (name === "task") await taskPage();
  else {
    await pollStream();
    page.replaceChildren(section("Tasks per second", rateLine()), progress(s), taskStream(s),
      el("div", { class: "columns" }, memory(s), processing(s)));
  }
}

async function loop() {
  const error = document.getElementById("error");
  try {
    await refresh();
    error.hidden = true;
    document.body.dataset.ready = "yes";
  } catch (e) {
    error.hidden = false;
    error.textContent = "cannot reach the scheduler: " + e.message;
  }
  setTimeout(loop, REFRESH_MS);
}

loop();
