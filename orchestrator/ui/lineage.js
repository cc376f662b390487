// Lineage (GET /lineage): datasets (rounded) and pipelines (square) as a layered graph drawn left to
// right: a dataset a pipeline reads points at it, a dataset it writes is pointed at; a data trigger
// is a dashed edge; a pipeline started by a federation-wide schedule or trigger has a double border.
// Opening a dataset shows its ground-truth history with provenance; opening a pipeline its grid.
// `?focus=<id>` keeps one node's lineage (everything upstream and downstream of it), `?scope=here`
// this instance's pipelines and their datasets.
"use strict";

const LG = { col: 222, row: 62, w: 168, h: 40, pad: 24 };

// Layers by longest path, after turning the edges that close a cycle around (a pipeline that reads
// and writes one dataset); then a few barycentre sweeps to untangle each layer's order.
function layoutLineage(nodes, edges) {
  const out = new Map(nodes.map((n) => [n.id, []]));
  const ins = new Map(nodes.map((n) => [n.id, []]));
  const state = new Map();
  const forward = [];
  const visit = (id) => {
    state.set(id, 1);
    for (const e of edges.filter((x) => x.source === id)) {
      const s = state.get(e.target);
      if (s === 1) continue; // closes a cycle: left out of the layering
      forward.push(e);
      if (!s) visit(e.target);
    }
    state.set(id, 2);
  };
  const sorted = [...nodes].sort((a, b) => (a.kind === b.kind ? a.name.localeCompare(b.name) : a.kind === "dataset" ? -1 : 1));
  for (const n of sorted) if (!state.get(n.id) && !edges.some((e) => e.target === n.id)) visit(n.id);
  for (const n of sorted) if (!state.get(n.id)) visit(n.id);
  const seen = new Set();
  for (const e of forward) {
    const key = `${e.source}>${e.target}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.get(e.source).push(e.target);
    ins.get(e.target).push(e.source);
  }
  const layer = new Map();
  const layerOf = (id) => {
    if (layer.has(id)) return layer.get(id);
    layer.set(id, 0);
    const l = Math.max(-1, ...ins.get(id).map(layerOf)) + 1;
    layer.set(id, l);
    return l;
  };
  nodes.forEach((n) => layerOf(n.id));
  const columns = [];
  for (const n of sorted) {
    const l = layer.get(n.id);
    (columns[l] = columns[l] || []).push(n.id);
  }
  const index = new Map();
  const reindex = () => columns.forEach((col) => col.forEach((id, i) => index.set(id, i)));
  reindex();
  const centre = (ids) => (ids.length ? ids.reduce((s, id) => s + index.get(id), 0) / ids.length : null);
  for (let sweep = 0; sweep < 4; sweep++) {
    const order = sweep % 2 === 0 ? columns.keys() : [...columns.keys()].reverse();
    for (const c of order) {
      const col = columns[c] || [];
      const key = new Map(col.map((id) => [id, centre(sweep % 2 === 0 ? ins.get(id) : out.get(id)) ?? index.get(id)]));
      col.sort((a, b) => key.get(a) - key.get(b));
      reindex();
    }
  }
  const tallest = Math.max(1, ...columns.map((c) => (c || []).length));
  const pos = new Map();
  columns.forEach((col, c) => {
    const offset = ((tallest - col.length) * LG.row) / 2;
    col.forEach((id, i) => pos.set(id, { x: LG.pad + c * LG.col, y: LG.pad + offset + i * LG.row }));
  });
  return { pos, width: LG.pad * 2 + (columns.length - 1) * LG.col + LG.w, height: LG.pad * 2 + tallest * LG.row };
}

// Where a pipeline is initialised: "here", "here + 2 more", "on fed-a, fed-b".
function pipelinePlaces(n) {
  const others = n.instances.filter((i) => i !== instanceName());
  if (n.here) return others.length ? `here + ${others.length} more` : "here";
  return n.instances.length ? `on ${n.instances.join(", ")}` : "elsewhere";
}

// The nodes upstream and downstream of `id`, itself included.
function lineageOf(id, edges) {
  const keep = new Set([id]);
  for (const [from, to] of [["source", "target"], ["target", "source"]]) {
    const todo = [id];
    const seen = new Set([id]);
    while (todo.length) {
      const cur = todo.pop();
      for (const e of edges) {
        if (e[from] === cur && !seen.has(e[to])) {
          seen.add(e[to]);
          keep.add(e[to]);
          todo.push(e[to]);
        }
      }
    }
  }
  return keep;
}

// A curve from the right side of `a` to the left side of `b` (`a` in an earlier column).
function edgePath(a, b, bend) {
  const x1 = a.x + LG.w;
  const y1 = a.y + LG.h / 2 + bend;
  const x2 = b.x;
  const y2 = b.y + LG.h / 2 + bend;
  const dx = (x2 - x1) / 2;
  return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
}

function lineagePicture(graph, onDataset) {
  const { pos, width, height } = layoutLineage(graph.nodes, graph.edges);
  const svg = svgRoot(width, height, "Lineage: datasets and the pipelines that read, write and are triggered by them", "lineage picture", true);
  const defs = svgEl("defs", {});
  for (const [id, cls] of [["lg-arrow", "edge-head"], ["lg-arrow-trigger", "edge-head trigger"]]) {
    const m = svgEl("marker", { id, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    m.append(svgEl("path", { d: "M0,0 L10,5 L0,10 z", class: cls }));
    defs.append(m);
  }
  svg.append(defs);
  const edgesG = svgEl("g", { class: "edges" });
  for (const e of graph.edges) {
    const a = pos.get(e.source);
    const b = pos.get(e.target);
    if (!a || !b) continue;
    const trigger = e.kind === "triggers";
    // An edge that closes a cycle (a pipeline writing a dataset it reads) points back to an earlier
    // column: it is drawn the layout's way, a little apart, with its arrow at its start.
    const back = b.x <= a.x;
    const path = svgEl("path", {
      d: back ? edgePath(b, a, -7) : edgePath(a, b, trigger ? 7 : 0),
      class: `edge ${e.kind}${e.scope ? ` scope-${e.scope}` : ""}`,
      "data-kind": e.kind,
      "data-source": e.source,
      "data-target": e.target,
      "data-scope": e.scope,
      [back ? "marker-start" : "marker-end"]: `url(#${trigger ? "lg-arrow-trigger" : "lg-arrow"})`,
    });
    const what = trigger ? `triggers (${e.scope})` : `${e.kind} (${e.steps.join(", ")})`;
    svgTitle(path, `${e.source.split(":")[1]} → ${e.target.split(":")[1]}: ${what}`);
    edgesG.append(path);
  }
  svg.append(edgesG);
  const highlight = (id, on) => {
    for (const p of edgesG.children) {
      if (p.getAttribute("data-source") === id || p.getAttribute("data-target") === id) p.classList.toggle("hl", on);
    }
  };
  for (const n of graph.nodes) {
    const p = pos.get(n.id);
    const dataset = n.kind === "dataset";
    const cls = ["node", n.kind, n.federation ? "federation" : "", !dataset && !n.here ? "elsewhere" : "", dataset && n.registered === false ? "unregistered" : ""].filter(Boolean).join(" ");
    const g = svgEl("g", { class: cls, "data-kind": n.kind, "data-name": n.name, "data-id": n.id, "data-federation": n.federation ? "true" : null, role: "button" });
    const note = dataset
      ? n.registered === false ? "not registered" : "dataset"
      : [n.federation ? "federation-wide" : "pipeline", pipelinePlaces(n)].filter(Boolean).join(" · ");
    if (n.federation) g.append(svgEl("rect", { x: p.x - 4, y: p.y - 4, width: LG.w + 8, height: LG.h + 8, rx: dataset ? 22 : 8, class: "outer" }));
    g.append(svgEl("rect", { x: p.x, y: p.y, width: LG.w, height: LG.h, rx: dataset ? 18 : 4, class: "shape" }));
    g.append(svgEl("text", { x: p.x + 12, y: p.y + 17, class: "node-name" }, clip(n.name, 24)));
    g.append(svgEl("text", { x: p.x + 12, y: p.y + 32, class: "node-note" }, clip(note, 30)));
    g.setAttribute("aria-label", `${n.kind} ${n.name}: ${note}`);
    svgTitle(g, `${n.kind} ${n.name}${n.description ? ` — ${n.description}` : ""}\n${note}`);
    activate(g, () => (dataset ? onDataset(n.name) : (location.hash = `#/grid?pipeline=${encodeURIComponent(n.name)}`)));
    for (const [ev, on] of [["mouseenter", true], ["mouseleave", false], ["focus", true], ["blur", false]]) g.addEventListener(ev, () => highlight(n.id, on));
    svg.append(g);
  }
  return svg;
}

async function renderLineage(again) {
  const gen = generation;
  const params = hashParams();
  let graph;
  try {
    graph = await api("GET", "/lineage");
  } catch (err) {
    if (gen === generation && !again) setView(h("h1", {}, "Lineage"), errorBox(err));
    return;
  }
  if (gen !== generation) return;
  let nodes = graph.nodes;
  if (params.get("scope") === "here") {
    const here = new Set(nodes.filter((n) => n.kind === "pipeline" && n.here).map((n) => n.id));
    const touched = new Set(graph.edges.filter((e) => here.has(e.source) || here.has(e.target)).flatMap((e) => [e.source, e.target]));
    nodes = nodes.filter((n) => here.has(n.id) || touched.has(n.id));
  }
  const focus = params.get("focus");
  if (focus && nodes.some((n) => n.id === focus)) {
    const keep = lineageOf(focus, graph.edges);
    nodes = nodes.filter((n) => keep.has(n.id));
  }
  const ids = new Set(nodes.map((n) => n.id));
  const edges = graph.edges.filter((e) => ids.has(e.source) && ids.has(e.target));
  const detail = h("section", { id: "dataset-detail", "aria-live": "polite" });
  const focusOptions = graph.nodes.map((n) => [n.id, `lineage of ${n.kind} ${n.name}`]);
  setView(
    h("h1", {}, "Lineage"),
    h(
      "div",
      { class: "toolbar" },
      filterSelect("lineage", "scope", [["here", "this instance's pipelines"]], "Which pipelines", params.get("scope"), "the federation's pipelines"),
      filterSelect("lineage", "focus", focusOptions, "The lineage of one dataset or pipeline", focus, "every dataset and pipeline"),
      h("span", { class: "muted small" }, `${nodes.filter((n) => n.kind === "dataset").length} datasets, ${nodes.filter((n) => n.kind === "pipeline").length} pipelines`),
    ),
    graph.etcd !== "ok" ? h("p", { class: "error", role: "alert" }, `The federation's registries could not be read (${graph.etcd}): this instance's part only.`) : null,
    h(
      "p",
      { class: "legend small" },
      h("span", { class: "legend-item" }, h("span", { class: "key-ds" }), "dataset"),
      h("span", { class: "legend-item" }, h("span", { class: "key-pl" }), "pipeline"),
      h("span", { class: "legend-item" }, h("span", { class: "key-pl key-fed" }), "federation-wide (a federation schedule or trigger)"),
      h("span", { class: "legend-item" }, h("span", { class: "key-edge" }), "reads / writes"),
      h("span", { class: "legend-item" }, h("span", { class: "key-edge key-trigger" }), "data trigger"),
      h("span", { class: "muted" }, "· open a dataset for its history, a pipeline for its grid"),
    ),
    nodes.length
      ? h("div", { class: "picture-box", id: "lineage" }, lineagePicture({ nodes, edges }, (name) => datasetDetail(name, detail)))
      : h("p", { class: "muted" }, "No dataset and no pipeline yet."),
    detail,
  );
  if (params.get("dataset")) datasetDetail(params.get("dataset"), detail);
}
