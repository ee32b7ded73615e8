// The status page: tasks per second, progress per prefix, the task stream (computing,
// transfers, spills), memory and processing per worker. Bounded: at most STREAM_MAX
// rectangles on STREAM_ROWS workers' rows, PREFIX_MAX prefixes, WORKER_BARS workers per
// chart, each with an "and N more" line when cut.
"use strict";

const STREAM_MAX = 1000;
const STREAM_WINDOW_S = 20;
const STREAM_ROWS = 40;
const PREFIX_MAX = 50;
const WORKER_BARS = 24;

// Dask's task stream colours: computing in its prefix's colour, transfers red, spills orange.
const KIND_COLOURS = { transfer: "#e5484d", spill: "#f59e0b" };

const stream = { entries: [], cursor: 0 };

async function pollStream() {
  const fresh = await get("/api/v1/task_stream?since=" + stream.cursor + "&limit=" + STREAM_MAX);
  for (const e of fresh) stream.cursor = Math.max(stream.cursor, e.cursor);
  stream.entries = stream.entries.concat(fresh).slice(-STREAM_MAX);
}

// The last RATE_POINTS polls' tasks per second, the newest at the right edge, stretched
// to the section's width.
function rateLine() {
  const w = 1000, h = 60, n = state.rates.length;
  const g = svg("svg", { width: "100%", height: h, class: "rate", viewBox: `0 0 ${w} ${h}`,
    preserveAspectRatio: "none" });
  const max = Math.max(0, ...state.rates), top = Math.max(1, max);
  const pts = state.rates.map((r, i) =>
    `${w - ((n - 1 - i) * w) / (RATE_POINTS - 1)},${h - 2 - ((h - 4) * r) / top}`).join(" ");
  g.append(svg("polyline", { points: pts, class: "rate-line" }));
  const caption = n ? "now " + state.rates[n - 1].toFixed(0) + " tasks/s, at most " +
    max.toFixed(0) + " over the last " + RATE_POINTS + " polls" : "measuring (two samples needed)";
  return el("div", {}, note(caption, "rate-caption"), g);
}

// Prefixes with work left first (in the scheduler's order), then the finished ones.
function progress(s) {
  const active = (p) => p.waiting + p.processing + p.erred > 0;
  const ordered = s.prefixes.filter(active).concat(s.prefixes.filter((p) => !active(p)));
  const rows = ordered.slice(0, PREFIX_MAX).map((p) => {
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
  const list = el("div", { class: rows.length > 12 ? "prefix-list two" : "prefix-list" }, ...rows);
  return section("Progress", list, more(s.prefixes.length - PREFIX_MAX, "prefixes"));
}

function memory(s) {
  const held = (w) => w.memory + w.spilled_disk + (w.device === "host" ? 0 : w.device_memory);
  const shown = largest(s.workers, WORKER_BARS, held);
  const rows = shown.map((w) => {
    const total = Math.max(w.memory_limit, w.memory + w.spilled_disk, 1) +
      (w.device === "host" ? 0 : Math.max(w.device_memory_limit, w.device_memory));
    const device = w.device === "host" ? "" : " · " + bytes(w.device_memory) + " " + w.device;
    return bar([
      [w.memory, "memory", "in host memory " + bytes(w.memory)],
      [w.device === "host" ? 0 : w.device_memory, "device", "on the device " + bytes(w.device_memory)],
      [w.spilled_disk, "spilled-disk", "spilled to disk " + bytes(w.spilled_disk)],
    ], total, w.name + ": " + bytes(w.memory) + " host" + device + " · " +
      bytes(w.spilled_disk) + " disk");
  });
  return section("Memory per worker", ...rows,
    more(s.workers.length - shown.length, "workers (those holding the most are shown)"),
    el("div", { class: "legend" }, swatch("var(--memory)", "host memory"),
      swatch("#7c3aed", "device"), swatch("var(--spilled-disk)", "spilled to disk")));
}

function processing(s) {
  const shown = largest(s.workers, WORKER_BARS, (w) => w.processing);
  const max = Math.max(1, ...shown.map((w) => w.processing));
  return section("Processing", ...shown.map((w) =>
    bar([[w.processing, "processing", w.processing + " tasks"]], max,
      w.name + ": " + w.processing)),
  more(s.workers.length - shown.length, "workers (the busiest are shown)"));
}

// The rows of the task stream: every worker when they fit, else those with entries in the
// window, at most STREAM_ROWS; and how many workers with entries got no row.
function streamRows(s, start) {
  const active = new Set();
  for (const e of stream.entries) if (e.stop_s >= start) active.add(e.worker);
  const known = new Set(s.workers.map((w) => w.name));
  let names = s.workers.map((w) => w.name).concat([...active].filter((n) => !known.has(n)));
  if (names.length > STREAM_ROWS) names = names.filter((n) => active.has(n));
  const shown = names.slice(0, STREAM_ROWS);
  return { rows: new Map(shown.map((n, i) => [n, i])), hidden: names.length - shown.length };
}

function streamTitle(e) {
  const took = duration(e.stop_s - e.start_s);
  if (e.kind === "transfer") {
    return e.key + ": " + bytes(e.nbytes) + " from " + e.peer + " over " + e.detail + ", " + took;
  }
  if (e.kind === "spill") return e.key + ": spill " + e.detail + " " + bytes(e.nbytes) + ", " + took;
  return e.key + " on " + e.worker + ": " + took + (e.nbytes ? ", " + bytes(e.nbytes) + " out" : "");
}

function streamRect(e, x, y, rowH, start) {
  const x0 = x(Math.max(e.start_s, start));
  const r = svg("rect", {
    x: x0.toFixed(1), y, width: Math.max(2, x(e.stop_s) - x0).toFixed(1), height: rowH - 3,
    class: "task-rect kind-" + e.kind, "data-key": e.key, "data-worker": e.worker,
    fill: KIND_COLOURS[e.kind] || `hsl(${hue(e.prefix)}, 60%, 55%)`,
  });
  r.append(svg("title", {}, streamTitle(e)));
  r.addEventListener("click", () => { location.href = "/task?key=" + encodeURIComponent(e.key); });
  return r;
}

function taskStream(s) {
  const end = Math.max(s.uptime_s, ...stream.entries.map((e) => e.stop_s));
  const start = end - STREAM_WINDOW_S;
  const { rows, hidden } = streamRows(s, start);
  const rowH = rows.size <= 24 ? 18 : 12, left = 130, w = 1000;
  const h = Math.max(1, rows.size) * rowH + 18;
  const g = svg("svg", { class: "stream", viewBox: `0 0 ${w} ${h}`, width: "100%" });
  const x = (t) => left + ((w - left - 4) * (t - start)) / STREAM_WINDOW_S;
  for (const [name, i] of rows) {
    g.append(svg("text", { x: 2, y: i * rowH + rowH - 5, class: "axis" }, name));
  }
  for (let t = 0; t <= STREAM_WINDOW_S; t += 5) {
    const at = x(start + t);
    g.append(svg("line", { x1: at, x2: at, y1: 0, y2: h - 16, class: "tick" }));
    const anchor = t === 0 ? "start" : t === STREAM_WINDOW_S ? "end" : "middle";
    g.append(svg("text", { x: at, y: h - 4, class: "axis", "text-anchor": anchor },
      t === STREAM_WINDOW_S ? "now" : "-" + (STREAM_WINDOW_S - t) + " s"));
  }
  for (const e of stream.entries) {
    const row = rows.get(e.worker);
    if (e.stop_s < start || row === undefined) continue;
    g.append(streamRect(e, x, row * rowH + 1, rowH, start));
  }
  const legend = el("div", { class: "legend" },
    swatch("linear-gradient(90deg, hsl(200,60%,55%), hsl(120,60%,55%), hsl(30,60%,55%))",
      "compute (colour of its prefix)"),
    swatch(KIND_COLOURS.transfer, "transfer (on the receiving worker)"),
    swatch(KIND_COLOURS.spill, "spill"));
  const cut = hidden ? note("and " + count(hidden) + " more workers (no row) had tasks in these " +
    STREAM_WINDOW_S + " s", "more") : null;
  return section("Task stream (last " + STREAM_WINDOW_S + " s)", legend, g, cut);
}

PAGES.status = {
  load: pollStream,
  draw(root, s) {
    root.replaceChildren(section("Tasks per second", rateLine()), progress(s), taskStream(s),
      el("div", { class: "columns" }, memory(s), processing(s)));
  },
};
