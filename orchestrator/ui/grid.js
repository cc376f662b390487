// The grid (GET /runs/grid): pipelines down, their last N runs across (oldest left, newest right),
// each cell the run's steps as squares coloured by state under a bar as tall as the run was long;
// a cell links to its run. Arrow keys move between cells. Beside each row, its run durations as a
// small chart (durationChart, also on the pipelines page).
"use strict";

const DURATION_LEVELS = 10; // the run bar's height classes d-0 .. d-10 (no inline style under the CSP)
const GRID_LASTS = ["10", "25", "50", "100"];

function hashParams() {
  return new URLSearchParams(location.hash.split("?")[1] || "");
}

function filterSelect(view, name, values, label, current, anyText) {
  return h(
    "select",
    {
      id: `filter-${name}`,
      "aria-label": label,
      onchange: (e) => {
        const p = hashParams();
        if (e.target.value) p.set(name, e.target.value);
        else p.delete(name);
        location.hash = `#/${view}?${p}`;
      },
    },
    anyText === null ? null : h("option", { value: "" }, anyText || `any ${name}`),
    // A value, or [value, label].
    values.map((v) => (Array.isArray(v) ? v : [v, v])).map(([v, label]) => h("option", { value: v, selected: current === v }, label)),
  );
}

function stateLegend(states) {
  return h(
    "p",
    { class: "legend small", "aria-label": "Colours" },
    states.map(([s, label]) => h("span", { class: "legend-item" }, h("span", { class: `sq s-${s}` }), label || s)),
    h("span", { class: "legend-item" }, h("span", { class: "sq s-succeeded retried" }), "after a retry"),
  );
}

function gridCell(run, stepNames, longest) {
  const byName = new Map((run.steps || []).map((s) => [s.name, s]));
  const level = run.duration != null && longest > 0 ? Math.max(1, Math.round((run.duration / longest) * DURATION_LEVELS)) : 0;
  const title = [
    `${run.id.slice(0, 12)} ${run.status}`,
    versionOf(run) !== null ? `version ${versionOf(run)}` : null,
    `${run.trigger}, ${when(run.created_at)}`,
    run.retry_of ? `retry of ${run.retry_of.slice(0, 12)}` : null,
    run.queued ? `queued ${fmtDuration(run.queued)}` : null,
    run.duration != null ? `ran ${fmtDuration(run.duration)}` : null,
    ...(run.steps || []).map((s) => `${s.name}: ${s.status}${s.attempts > 1 ? ` (${s.attempts} attempts${s.retried ? "" : ", one per shard"})` : ""}`),
  ].filter(Boolean).join("\n");
  return h(
    "a",
    { class: `cell c-${run.status}`, href: `#/run/${run.id}`, "data-run": run.id, "data-status": run.status, title, "aria-label": title.replace(/\n/g, "; ") },
    h("span", { class: "runbar-box" }, h("span", { class: `runbar s-${run.status} d-${level}` })),
    stepNames.map((name) => {
      const step = byName.get(name);
      return step
        ? h("span", { class: `sq s-${step.status}${step.retried ? " retried" : ""}`, "data-step": name, "data-status": step.status })
        : h("span", { class: "sq none", "data-step": name });
    }),
  );
}

// Run durations over time: one bar per run (oldest left), its height the run's duration, its colour
// the run's state; the longest run's duration and the median (dashed) written beside.
function durationChart(runs, opts = {}) {
  const width = opts.width || 220;
  const height = (opts.height || 64) + 12; // + the dates of the oldest and newest run
  const done = runs.filter((r) => r.duration != null);
  const svg = svgRoot(width, height, opts.label || "Run durations", "durations picture");
  if (opts.pipeline) svg.setAttribute("data-pipeline", opts.pipeline);
  if (!done.length) {
    svg.append(svgEl("text", { x: 4, y: height / 2 + 4, class: "tl-note" }, "no finished run yet"));
    return svg;
  }
  const longest = Math.max(...done.map((r) => r.duration), 0.001);
  const sorted = done.map((r) => r.duration).sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  const left = 4;
  const right = 64;
  const base = height - 16; // the axis line
  const plotH = base - 6;
  const slot = (width - left - right) / Math.max(runs.length, 1);
  const barW = Math.max(2, Math.min(14, slot - 2));
  const ordered = [...runs].reverse(); // the answers are newest first; time runs left to right
  ordered.forEach((r, i) => {
    if (r.duration == null) return;
    const bh = Math.max(2, (r.duration / longest) * plotH);
    const x = left + i * slot + (slot - barW) / 2;
    const bar = svgEl("rect", { x, y: base - bh, width: barW, height: bh, class: `bar s-${r.status}`, "data-run": r.id });
    svgTitle(bar, `${r.id.slice(0, 12)} ${r.status}: ${fmtDuration(r.duration)} (${when(r.created_at)})`);
    const link = svgEl("a", { href: `#/run/${r.id}`, tabindex: -1 });
    link.append(bar);
    svg.append(link);
  });
  const my = base - (median / longest) * plotH;
  svg.append(svgEl("line", { x1: left, y1: my, x2: width - right + 2, y2: my, class: "median" }));
  svg.append(svgEl("line", { x1: left, y1: base, x2: width - right + 2, y2: base, class: "axis" }));
  svg.append(svgEl("text", { x: width - right + 6, y: 12, class: "tl-note" }, `max ${fmtDuration(longest)}`));
  svg.append(svgEl("text", { x: width - right + 6, y: Math.min(base, Math.max(24, my + 4)), class: "tl-note" }, `med ${fmtDuration(median)}`));
  svg.append(svgEl("text", { x: left, y: height - 2, class: "tl-note" }, compactTime(ordered[0].created_at)));
  if (ordered.length > 1) svg.append(svgEl("text", { x: width - right + 2, y: height - 2, class: "tl-note", "text-anchor": "end" }, compactTime(ordered[ordered.length - 1].created_at)));
  return svg;
}

function gridKeys(event) {
  const cell = event.target.closest && event.target.closest("a.cell");
  if (!cell) return;
  const row = cell.closest("tr");
  const cells = [...row.querySelectorAll("a.cell")];
  const i = cells.indexOf(cell);
  let target = null;
  if (event.key === "ArrowLeft") target = cells[i - 1];
  else if (event.key === "ArrowRight") target = cells[i + 1];
  else if (event.key === "Home") target = cells[0];
  else if (event.key === "End") target = cells[cells.length - 1];
  else if (event.key === "ArrowUp" || event.key === "ArrowDown") {
    // Newest runs line up on the right: keep the distance from the right edge.
    let other = event.key === "ArrowUp" ? row.previousElementSibling : row.nextElementSibling;
    while (other && !other.querySelector("a.cell")) other = event.key === "ArrowUp" ? other.previousElementSibling : other.nextElementSibling;
    if (other) {
      const theirs = [...other.querySelectorAll("a.cell")];
      target = theirs[Math.max(0, theirs.length - (cells.length - i))];
    }
  }
  if (target) {
    event.preventDefault();
    target.focus();
  }
}

async function renderGrid(again) {
  const gen = generation;
  const params = hashParams();
  const last = GRID_LASTS.includes(params.get("last")) ? params.get("last") : "25";
  const query = new URLSearchParams({ last });
  for (const key of ["status", "trigger"]) if (params.get(key)) query.set(key, params.get(key));
  if (params.get("pipeline")) query.set("pipelines", params.get("pipeline"));
  let grid, pipelines;
  try {
    [grid, pipelines] = await Promise.all([api("GET", `/runs/grid?${query}`), api("GET", "/pipeline")]);
  } catch (err) {
    if (gen !== generation) return;
    if (!again) setView(h("h1", {}, "Grid"), errorBox(err));
    refreshIn(renderGrid, REFRESH_MS * 3);
    return;
  }
  if (gen !== generation) return;
  const focusedRun = document.activeElement && document.activeElement.getAttribute("data-run");
  const focusedId = document.activeElement && document.activeElement.id;
  const names = [...new Set([...pipelines.map((p) => p.name), ...grid.pipelines.map((r) => r.pipeline)])].sort();
  const rows = grid.pipelines.map((row) => {
    const longest = Math.max(0, ...row.runs.map((r) => r.duration || 0));
    const oldestFirst = [...row.runs].reverse();
    return h(
      "tr",
      { "data-pipeline": row.pipeline },
      h(
        "th",
        { scope: "row" },
        h("a", { href: `#/runs?pipeline=${encodeURIComponent(row.pipeline)}`, class: "grid-name" }, row.pipeline),
        row.defined ? null : h("span", { class: "muted small" }, " (not defined here)"),
        h("span", { class: "step-names small muted" }, row.steps.map((s) => h("span", {}, s))),
      ),
      h(
        "td",
        { class: "cells-td" },
        row.runs.length ? h("div", { class: "cells" }, oldestFirst.map((run) => gridCell(run, row.steps, longest))) : h("span", { class: "muted small" }, "no runs"),
      ),
      h("td", { class: "chart-td" }, durationChart(row.runs, { pipeline: row.pipeline, label: `Run durations of ${row.pipeline}` })),
    );
  });
  setView(
    h("h1", {}, "Grid"),
    h(
      "div",
      { class: "toolbar" },
      filterSelect("grid", "pipeline", names, "Filter by pipeline", params.get("pipeline"), "every pipeline"),
      filterSelect("grid", "status", RUN_STATES, "Filter by run state", params.get("status")),
      filterSelect("grid", "trigger", TRIGGERS, "Filter by trigger", params.get("trigger")),
      h("label", { for: "filter-last", class: "small muted" }, "last"),
      filterSelect("grid", "last", GRID_LASTS, "Runs per pipeline", last, null),
      h("span", { class: "muted small" }, "runs per pipeline · refreshes every 5 s · arrow keys move between runs"),
    ),
    stateLegend([["succeeded"], ["cached"], ["reused"], ["running"], ["pending", "pending / queued"], ["failed"], ["cancelled"], ["skipped"]]),
    rows.length
      ? h(
          "table",
          { id: "grid", class: "grid", onkeydown: gridKeys },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Pipeline and steps"), h("th", { scope: "col" }, "Runs, oldest → newest (bar: duration)"), h("th", { scope: "col" }, "Durations"))),
          h("tbody", {}, rows),
        )
      : h("p", { class: "muted" }, "No pipeline and no run yet."),
  );
  const target = (focusedRun && view().querySelector(`a.cell[data-run="${CSS.escape(focusedRun)}"]`)) || (focusedId && document.getElementById(focusedId));
  if (target) target.focus();
  refreshIn(renderGrid, REFRESH_MS * 2.5);
}
