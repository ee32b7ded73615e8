// The graph page: the scheduler's task graph as a layered DAG (layer = the longest path
// from a root, left to right), nodes coloured by state; and the task page (one task's
// story). The graph comes with its nodes only up to the server's limit (2,000 tasks); the
// layout is O(nodes + edges) and redone only when the graph changes, a poll that changes
// states only recolours the nodes.
"use strict";

const STATES = ["released", "waiting", "queued", "no-worker", "processing", "memory", "erred"];
const STATE_COLOURS = {
  released: "var(--released)", waiting: "var(--waiting)", queued: "var(--queued)",
  "no-worker": "var(--no-worker)", processing: "var(--processing)", memory: "var(--memory)",
  erred: "var(--erred)",
};

const graphView = { signature: null, nodes: [], head: null };

// Edges as compressed adjacency lists: for each node, the range of `list` holding its
// neighbours (its children when `from` is 0, its parents when 1).
function adjacency(n, edges, from) {
  const start = new Int32Array(n + 1);
  for (const e of edges) start[e[from] + 1]++;
  for (let v = 0; v < n; v++) start[v + 1] += start[v];
  const list = new Int32Array(edges.length), fill = start.slice(0, n);
  for (const e of edges) list[fill[e[from]]++] = e[1 - from];
  return { start, list };
}

// Each node's layer (the longest path from a root) and its position in its layer, nodes
// placed near the mean position of their parents (a bucket sort per layer): O(n + e).
function layout(n, edges) {
  const kids = adjacency(n, edges, 0), parents = adjacency(n, edges, 1);
  const left = new Int32Array(n), layer = new Int32Array(n), order = [];
  for (let v = 0; v < n; v++) {
    left[v] = parents.start[v + 1] - parents.start[v];
    if (!left[v]) order.push(v);
  }
  for (let q = 0; q < order.length; q++) {
    const v = order[q];
    for (let k = kids.start[v]; k < kids.start[v + 1]; k++) {
      const c = kids.list[k];
      layer[c] = Math.max(layer[c], layer[v] + 1);
      if (--left[c] === 0) order.push(c);
    }
  }
  // A cycle (a broken graph) leaves nodes unvisited: they keep the layer reached so far.
  const depth = n ? Math.max(...layer) + 1 : 0;
  const size = new Int32Array(depth);
  for (let v = 0; v < n; v++) size[layer[v]]++;
  const members = adjacency(n, Array.from(layer, (l, v) => [l, v]), 0);
  const pos = new Float64Array(n).fill(-1);
  for (let l = 0; l < depth; l++) {
    const m = members.list.subarray(members.start[l], members.start[l + 1]), k = m.length;
    const bucket = new Int32Array(k), counts = new Int32Array(k + 1);
    m.forEach((v, i) => {
      let sum = 0, seen = 0;
      for (let p = parents.start[v]; p < parents.start[v + 1]; p++) {
        const u = parents.list[p];
        if (pos[u] >= 0) { sum += (pos[u] + 0.5) / size[layer[u]]; seen++; }
      }
      const at = seen ? sum / seen : (i + 0.5) / k;
      bucket[i] = Math.min(k - 1, Math.floor(at * k));
      counts[bucket[i] + 1]++;
    });
    for (let b = 0; b < k; b++) counts[b + 1] += counts[b];
    m.forEach((v, i) => { pos[v] = counts[bucket[i]]++; });
  }
  return { layer, pos, size, depth, widest: Math.max(1, ...size) };
}

function graphTitle(node) {
  return node.key + "\n" + node.state + (node.worker ? " on " + node.worker : "");
}

function graphLegend() {
  return el("div", { class: "legend" }, ...STATES.map((s) => swatch(STATE_COLOURS[s], s)));
}

// The SVG of a graph: a circle per node, a curve per edge.
function graphSvg(g) {
  const n = g.nodes.length, L = layout(n, g.edges);
  const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));
  const dx = L.depth > 1 ? clamp(1000 / (L.depth - 1), 40, 200) : 0;
  const dy = clamp(480 / L.widest, 12, 56), r = clamp(dy * 0.3, 3, 9);
  const labels = n <= 100 && dy >= 18 && dx >= 80;
  const padX = labels ? 80 : 20, padY = labels ? 30 : 16, h = L.widest * dy;
  const width = Math.max(300, (L.depth - 1) * dx + 2 * padX), height = h + 2 * padY;
  const xy = (v) => [padX + L.layer[v] * dx, padY + ((L.pos[v] + 0.5) * h) / L.size[L.layer[v]]];
  const s = svg("svg", { id: "graph", width, height, viewBox: `0 0 ${width} ${height}` });
  const edges = svg("g", { class: "graph-edges" });
  for (const [i, j] of g.edges) {
    const [x1, y1] = xy(i), [x2, y2] = xy(j), xm = (x1 + x2) / 2;
    edges.append(svg("path", { class: "graph-edge",
      d: `M${x1},${y1.toFixed(1)} C${xm},${y1.toFixed(1)} ${xm},${y2.toFixed(1)} ${x2},${y2.toFixed(1)}` }));
  }
  s.append(edges);
  graphView.nodes = g.nodes.map((node, v) => {
    const [x, y] = xy(v);
    const c = svg("circle", { cx: x, cy: y.toFixed(1), r, class: "graph-node state-" + node.state,
      "data-key": node.key });
    c.append(svg("title", {}, graphTitle(node)));
    c.addEventListener("click", () => { location.href = "/task?key=" + encodeURIComponent(node.key); });
    s.append(c);
    if (labels) {
      const text = node.key.length > 22 ? node.key.slice(0, 21) + "…" : node.key;
      s.append(svg("text", { x, y: (y - r - 4).toFixed(1), class: "graph-label" }, text));
    }
    return c;
  });
  return s;
}

// The graph's states only (the layout is the same): recolour and retitle the nodes.
function recolour(g) {
  g.nodes.forEach((node, v) => {
    const c = graphView.nodes[v];
    c.setAttribute("class", "graph-node state-" + node.state);
    c.firstChild.textContent = graphTitle(node);
  });
}

function graphHead(g) {
  const by = {};
  for (const node of g.nodes) by[node.state] = (by[node.state] || 0) + 1;
  return count(g.nodes.length) + " tasks, " + count(g.edges.length) + " dependencies: " +
    STATES.filter((s) => by[s]).map((s) => count(by[s]) + " " + s).join(", ");
}

function drawGraph(root, s, data) {
  const g = data.graph;
  let message = null;
  if (data.error) message = "the scheduler gives no graph: " + data.error;
  else if (g.total > g.limit) {
    message = count(g.total) + " tasks: the graph view draws graphs of up to " + count(g.limit) + " tasks";
  } else if (!g.nodes.length) message = "no tasks: the scheduler holds no task graph now";
  if (message) {
    graphView.signature = null;
    root.replaceChildren(section("Task graph", note(message, "graph-message")));
    return;
  }
  const signature = g.nodes.map((x) => x.key).join("\n") + "|" + g.edges.join(" ");
  if (signature !== graphView.signature) {
    graphView.signature = signature;
    graphView.head = note("", "graph-head");
    root.replaceChildren(section("Task graph", graphView.head, graphLegend(),
      el("div", { class: "graph-scroll" }, graphSvg(g))));
  } else recolour(g);
  graphView.head.textContent = graphHead(g);
}

PAGES.graph = {
  async load() {
    try {
      return { graph: await get("/api/v1/graph") };
    } catch (e) {
      return { error: e.message };
    }
  },
  draw: drawGraph,
};

function drawTask(root, s, story) {
  const key = new URLSearchParams(location.search).get("key") || "";
  const t = el("table", { id: "story-table" },
    el("thead", {}, el("tr", {}, ...["at", "from", "to", "why", "worker"].map((h) => el("th", { text: h })))));
  const body = el("tbody");
  for (const e of story) {
    body.append(el("tr", { class: "story-row" }, el("td", { text: e.at_s.toFixed(3) + " s" }),
      el("td", { text: e.from }), el("td", { text: e.to }), el("td", { text: e.why }),
      el("td", { text: e.worker || "—" })));
  }
  t.append(body);
  root.replaceChildren(section("Task " + key, story.length ? t
    : note("the scheduler keeps no transition of this key")));
}

PAGES.task = {
  load: () => get("/api/v1/story?key=" + encodeURIComponent(
    new URLSearchParams(location.search).get("key") || "")),
  draw: drawTask,
};
