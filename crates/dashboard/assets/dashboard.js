// Rask's dashboard: polls the scheduler's JSON API every REFRESH_MS and draws the page its
// path names. This file holds the helpers and the polling loop; status.js, cluster.js and
// graph.js add their pages to PAGES. Every page draws a bounded number of elements, so a
// cluster of a million tasks and a thousand workers costs the browser what a small one
// does. After each redraw the body carries data-draws (redraws so far) and data-draw-ms
// (the last redraw's duration), for benchmarks.
"use strict";

const REFRESH_MS = 1000;
const RATE_POINTS = 60;

// name -> { load: async () => data (optional), draw: (root, status, data) => void }
const PAGES = {};

const state = { rates: [], lastDone: null, lastAt: null, draws: 0 };

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

function svg(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

// A transfer rate: bytes over seconds ("—" when no time was measured).
function rate(b, s) {
  return s > 0 ? bytes(b / s) + "/s" : "—";
}

function duration(s) {
  const ms = s * 1000;
  if (ms < 10) return ms.toFixed(1) + " ms";
  if (ms < 1000) return ms.toFixed(0) + " ms";
  return s.toFixed(2) + " s";
}

function count(n) {
  return Number(n).toLocaleString("en-US");
}

function hue(s) {
  let h = 0;
  for (const c of s) h = (h * 31 + c.charCodeAt(0)) % 360;
  return h;
}

// Names in the order a person expects (worker-2 before worker-10).
const byName = new Intl.Collator("en", { numeric: true }).compare;

async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
  return r.json();
}

function section(title, ...body) {
  return el("section", {}, el("h2", { text: title }), ...body);
}

function note(text, cls) {
  return el("p", { class: "note" + (cls ? " " + cls : ""), text });
}

// "and N more …" under a list cut at its bound, or nothing.
function more(n, what) {
  return n > 0 ? note("and " + count(n) + " more " + what, "more") : null;
}

// At most `max` of `items`: all of them in their order when they fit, else the `max`
// largest by `size`, in the same order.
function largest(items, max, size) {
  if (items.length <= max) return items;
  const keep = new Set(items.map((x, i) => [size(x), i]).sort((a, b) => b[0] - a[0])
    .slice(0, max).map(([, i]) => i));
  return items.filter((_, i) => keep.has(i));
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

// A colour swatch and its meaning, for legends.
function swatch(colour, label) {
  const s = el("span", { class: "swatch" });
  s.style.background = colour;
  return el("span", { class: "legend-item" }, s, label);
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
  const tasks = s.tasks.filter(([, v]) => v > 0).map(([k, v]) => k + " " + count(v)).join(" · ");
  document.getElementById("summary").textContent =
    s.address + " · " + count(s.workers.length) + " workers · " + rate.toFixed(0) + " tasks/s" +
    (tasks ? " · " + tasks : "");
}

function pageName() {
  const name = location.pathname.replace(/^\//, "") || "status";
  return PAGES[name] ? name : "status";
}

// One poll: the status (for the header) and the page's own data, then the redraw, timed.
async function refresh() {
  const name = pageName();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("here", a.dataset.page === name);
  const page = PAGES[name];
  const [s, data] = await Promise.all([get("/api/v1/status"), page.load ? page.load() : null]);
  const start = performance.now();
  summary(s);
  page.draw(document.getElementById("page"), s, data);
  state.draws += 1;
  document.body.dataset.draws = String(state.draws);
  document.body.dataset.drawMs = (performance.now() - start).toFixed(1);
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

// After every script has added its pages.
document.addEventListener("DOMContentLoaded", loop);
