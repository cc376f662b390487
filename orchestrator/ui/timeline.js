// The timeline of one run (on its page): a time axis from the run's creation; the run's queue time
// and run time; per step the wait for a slot once its needs were done, then each attempt as a bar
// (retries side by side with the wait between them, a fallback tool named); a fan-out step gets one
// row per shard, a speculative copy drawn dashed in a second lane under its twin.
// Every bar is a focusable shape: Enter or a click shows that attempt's log (runs.js).
"use strict";

const TL = { label: 190, width: 1180, row: 24, bar: 14, top: 34, maxShards: 40 };
// A wait shorter than this is bookkeeping (a run or step starting at once), not queue time.
const QUEUE_SHOWN_MS = 50;

// Intervals placed in lanes so that overlapping ones (a speculative copy and its twin) stay visible.
function lanes(items) {
  const ends = [];
  return items.map((item) => {
    let lane = ends.findIndex((end) => end <= item.start);
    if (lane < 0) lane = ends.length;
    ends[lane] = item.end;
    return { ...item, lane };
  });
}

function timelineRows(run, now) {
  const rows = [];
  const runStart = ms(run.started_at);
  rows.push({ kind: "run", label: "run", spans: [
    { cls: "queued", start: ms(run.created_at), end: Number.isNaN(runStart) ? (run.status === "queued" || run.status === "pending" ? now : ms(run.ended_at)) : runStart, title: "queued: waiting to start", data: { kind: "run-queued" } },
    Number.isNaN(runStart) ? null : { cls: `bar s-${run.status}`, start: runStart, end: ms(run.ended_at) || now, title: `run ${run.status}`, data: { kind: "run" } },
  ].filter((s) => s && !Number.isNaN(s.start) && !Number.isNaN(s.end) && s.end >= s.start && (s.cls !== "queued" || s.end - s.start >= QUEUE_SHOWN_MS)) });

  const byName = new Map((run.steps || []).map((s) => [s.name, s]));
  for (const step of run.steps || []) {
    const needs = (step.needs || []).map((n) => byName.get(n)).filter(Boolean);
    const needsDone = needs.every((n) => n.ended_at);
    const ready = needs.length ? (needsDone ? Math.max(...needs.map((n) => ms(n.ended_at))) : NaN) : runStart;
    const started = ms(step.started_at);
    const spans = [];
    // Queue time of the step: ready (its needs done) but not yet holding a slot.
    const waitEnd = Number.isNaN(started) ? (step.status === "pending" && ACTIVE.has(run.status) ? now : NaN) : started;
    if (!Number.isNaN(ready) && !Number.isNaN(waitEnd) && waitEnd - ready >= QUEUE_SHOWN_MS) {
      spans.push({ cls: "waiting", start: ready, end: waitEnd, title: "waiting for a slot", data: { kind: "step-waiting", step: step.name } });
    }
    const attempts = Array.isArray(step.attempts) ? step.attempts : [];
    const shardRows = new Map();
    const plain = [];
    for (const a of attempts) {
      const start = ms(a.started_at);
      if (Number.isNaN(start)) continue;
      const end = ms(a.ended_at) || (a.status === "running" ? now : ms(step.ended_at) || now);
      const span = {
        cls: `bar attempt s-${a.status}${a.speculative ? " speculative" : ""}${a.tool !== step.tool ? " fallback" : ""}`,
        start, end, attempt: a, step,
        text: `#${a.attempt}${a.speculative ? " spec" : ""}${a.tool !== step.tool ? ` ${a.tool}` : ""}`,
        title: `${step.name}${a.shard != null ? ` shard ${a.shard}` : ""} attempt ${a.attempt}${a.speculative ? " (speculative copy)" : ""}: ${a.status}, ${fmtDuration((end - start) / 1000)}${a.tool !== step.tool ? `, fallback tool ${a.tool}` : ""}${a.exit_code != null ? `, exit ${a.exit_code}` : ""}${a.error ? ` — ${a.error}` : ""}`,
        data: { kind: "attempt", step: step.name, attempt: a.attempt, shard: a.shard ?? null, speculative: a.speculative ? "true" : null, status: a.status },
      };
      if (a.shard != null) {
        if (!shardRows.has(a.shard)) shardRows.set(a.shard, []);
        shardRows.get(a.shard).push(span);
      } else plain.push(span);
    }
    if (step.shards || shardRows.size) {
      // The step's own row: its wait and its whole span; the shards below it.
      if (!Number.isNaN(started)) spans.push({ cls: `span s-${step.status}`, start: started, end: ms(step.ended_at) || now, title: `${step.name}: ${step.status}`, data: { kind: "step", step: step.name } });
      rows.push({ kind: "step", step, label: step.name, note: step.shards ? `${step.shards.count} shards` : "", spans });
      const shards = [...shardRows.keys()].sort((a, b) => a - b);
      for (const shard of shards.slice(0, TL.maxShards)) {
        rows.push({ kind: "shard", step, label: `shard ${shard}`, spans: lanes(shardRows.get(shard).sort((a, b) => a.start - b.start)), retries: true });
      }
      if (shards.length > TL.maxShards) rows.push({ kind: "more", label: `… ${shards.length - TL.maxShards} more shards`, spans: [] });
    } else {
      if (!attempts.length && !Number.isNaN(started) && ["cached", "reused"].includes(step.status)) {
        spans.push({ cls: `mark s-${step.status}`, start: started, end: ms(step.ended_at) || started, title: `${step.name}: ${step.status} (no container)`, data: { kind: "step", step: step.name } });
      }
      rows.push({ kind: "step", step, label: step.name, note: attempts.length ? "" : step.status, spans: [...spans, ...lanes(plain)], retries: true });
    }
  }
  return rows;
}

function runTimeline(run, onPick) {
  const now = Date.now();
  const rows = timelineRows(run, now);
  const t0 = ms(run.created_at);
  let tEnd = t0 + 1000;
  for (const row of rows) for (const s of row.spans) tEnd = Math.max(tEnd, s.end);
  const span = (tEnd - t0) / 1000;
  const plot = TL.width - TL.label - 16;
  const xOf = (t) => TL.label + Math.max(0, Math.min(1, (t - t0) / 1000 / span)) * plot;
  const laneCount = (row) => 1 + Math.max(0, ...row.spans.map((s) => s.lane || 0));
  const height = TL.top + rows.reduce((sum, r) => sum + TL.row * laneCount(r), 0) + 40;
  const svg = svgRoot(TL.width, height, `Timeline of run ${run.id.slice(0, 12)}: queue time and each step's attempts`, "tl picture", Boolean(onPick));
  const defs = svgEl("defs", {});
  const hatch = svgEl("pattern", { id: "tl-hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" });
  hatch.append(svgEl("rect", { width: 6, height: 6, class: "hatch-bg" }), svgEl("line", { x1: 0, y1: 0, x2: 0, y2: 6, class: "hatch-line" }));
  defs.append(hatch);
  svg.append(defs);
  const axis = svgEl("g", { class: "axis-g" });
  timeAxis(axis, TL.label, plot, TL.top - 10, span);
  svg.append(axis);

  let y = TL.top;
  rows.forEach((row, i) => {
    const tall = TL.row * laneCount(row);
    const g = svgEl("g", { class: `tl-row tl-${row.kind}`, "data-row": row.kind, "data-step": row.step ? row.step.name : null });
    if (i % 2 === 0) g.append(svgEl("rect", { x: 0, y, width: TL.width, height: tall, class: "stripe" }));
    const indent = row.kind === "shard" || row.kind === "more" ? 18 : 6;
    g.append(svgEl("text", { x: indent, y: y + 16, class: `tl-label${row.kind === "run" ? " strong" : ""}` }, clip(row.label, 24)));
    if (row.note) g.append(svgEl("text", { x: TL.label - 8, y: y + 16, class: "tl-note", "text-anchor": "end" }, row.note));
    // The wait between one attempt's end and the next one's start in the same lane: a retry's backoff.
    if (row.retries) {
      const attempts = row.spans.filter((s) => s.attempt && !s.attempt.speculative).sort((a, b) => a.start - b.start);
      for (let k = 1; k < attempts.length; k++) {
        const [a, b] = [attempts[k - 1], attempts[k]];
        if (b.start > a.end) {
          const line = svgEl("line", { x1: xOf(a.end), y1: y + 11, x2: xOf(b.start), y2: y + 11, class: "retry-wait", "data-kind": "retry-wait" });
          g.append(svgTitle(line, `retry after ${fmtDuration((b.start - a.end) / 1000)}`));
        }
      }
    }
    for (const s of row.spans) {
      const top = y + (s.lane || 0) * TL.row + (TL.row - TL.bar) / 2;
      const x = xOf(s.start);
      const w = Math.max(s.cls.startsWith("mark") ? 8 : 3, xOf(s.end) - x);
      const data = Object.fromEntries(Object.entries(s.data || {}).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => [`data-${k}`, v]));
      const shape = s.cls.startsWith("span")
        ? svgEl("rect", { x, y: top + TL.bar / 2 - 2, width: w, height: 4, class: s.cls, ...data })
        : svgEl("rect", { x, y: top, width: w, height: TL.bar, rx: 2, class: s.cls, ...data });
      svgTitle(shape, s.title);
      if (s.attempt && onPick) {
        shape.setAttribute("aria-label", s.title);
        activate(shape, () => onPick(s.step, s.attempt));
      }
      g.append(shape);
      if (s.text && w > textWidth(s.text, 11) + 6) g.append(svgEl("text", { x: x + 4, y: top + 11, class: "bar-label" }, s.text));
    }
    svg.append(g);
    y += tall;
  });

  // The legend: what each mark means, drawn with the same classes.
  const legend = svgEl("g", { class: "legend" });
  const items = [["queued", "queued / waiting for a slot"], ["bar s-running", "running"], ["bar s-succeeded", "succeeded"], ["bar s-failed", "failed"], ["bar s-succeeded speculative", "speculative copy"]];
  let lx = TL.label;
  for (const [cls, text] of items) {
    legend.append(svgEl("rect", { x: lx, y: y + 14, width: 18, height: 10, rx: 2, class: cls }));
    legend.append(svgEl("text", { x: lx + 24, y: y + 23, class: "tl-note" }, text));
    lx += 40 + textWidth(text, 12);
  }
  legend.append(svgEl("line", { x1: lx, y1: y + 19, x2: lx + 18, y2: y + 19, class: "retry-wait" }));
  legend.append(svgEl("text", { x: lx + 24, y: y + 23, class: "tl-note" }, "retry wait"));
  svg.append(legend);
  return svg;
}
