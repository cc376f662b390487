// The console's pages for tools, the queue, backfills and schedules.
// Loaded before console.js, which holds the helpers (api, h, ...) these call and the routing.
"use strict";

// -- tools --------------------------------------------------------------------------------------
// Where an image comes from: the registry host named by its first path part, else Docker Hub.
function imageRegistry(image) {
  if (!image) return "—";
  const first = image.split("/")[0];
  return image.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost") ? first : "docker.io (default)";
}

function usedBy(tool) {
  if (!tool.used_by.length) return h("span", { class: "muted" }, "no pipeline");
  const byPipeline = new Map();
  for (const u of tool.used_by) {
    if (!byPipeline.has(u.pipeline)) byPipeline.set(u.pipeline, []);
    byPipeline.get(u.pipeline).push(u.role === "fallback" ? `${u.step} (fallback)` : u.step);
  }
  return h("ul", { class: "plain" }, [...byPipeline.entries()].map(([p, steps]) =>
    h("li", {}, h("a", { href: `#/grid?pipeline=${encodeURIComponent(p)}` }, p), h("span", { class: "muted small" }, ` — ${steps.join(", ")}`))));
}

async function renderTools(again) {
  const gen = generation;
  let graph;
  try {
    graph = await api("GET", "/lineage");
  } catch (err) {
    if (gen === generation && !again) setView(h("h1", {}, "Tools"), errorBox(err));
    return;
  }
  if (gen !== generation) return;
  setView(
    h("h1", {}, "Tools"),
    graph.etcd !== "ok" ? h("p", { class: "error", role: "alert" }, `The registry could not be read (${graph.etcd}): the tools this instance's pipelines name, without their registrations.`) : null,
    graph.tools.length
      ? h(
          "table",
          { id: "tools" },
          h("thead", {}, h("tr", {}, ["Tool", "Image", "Registry", "Owner", "Used by"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, graph.tools.map((t) =>
            h("tr", { "data-tool": t.name },
              h("td", {}, h("a", { href: `#/tool/${encodeURIComponent(t.name)}` }, t.name), t.registered === false ? h("div", { class: "error small" }, "not registered") : null),
              h("td", { class: "mono small" }, t.image || "—"),
              h("td", { class: "small" }, imageRegistry(t.image)),
              h("td", {}, t.author || "—"),
              h("td", {}, usedBy(t))))),
        )
      : h("p", { class: "muted" }, "No tool is registered."),
  );
}

async function renderTool() {
  const gen = generation;
  const name = decodeURIComponent(location.hash.split("/")[2] || "").split("?")[0];
  let graph;
  try {
    graph = await api("GET", "/lineage");
  } catch (err) {
    if (gen === generation) setView(h("h1", {}, `Tool ${name}`), errorBox(err));
    return;
  }
  if (gen !== generation) return;
  const tool = graph.tools.find((t) => t.name === name);
  if (!tool) {
    setView(h("p", {}, h("a", { href: "#/tools" }, "← Tools")), h("h1", {}, `Tool ${name}`), h("p", { class: "error" }, "No such tool in the registry or in any pipeline."));
    return;
  }
  const pipelines = [...new Set(tool.used_by.map((u) => u.pipeline))];
  const here = [...new Set(tool.used_by.filter((u) => u.here).map((u) => u.pipeline))];
  const charts = h("div", { id: "tool-charts" });
  const fact = (label, value, cls) => [h("dt", {}, label), h("dd", { class: cls || null }, value || "—")];
  setView(
    h("p", {}, h("a", { href: "#/tools" }, "← Tools")),
    h("h1", {}, `Tool ${tool.name}`),
    h("dl", { class: "facts", id: "tool-facts" },
      fact("Image", tool.image, "mono"), fact("Registry", imageRegistry(tool.image)), fact("Owner", tool.author),
      fact("Description", tool.description), fact("Code", tool.code_repo, "mono"), fact("Data", tool.data_repo, "mono"),
      fact("Artefact", tool.artefact, "mono"), fact("Registered", tool.registered === null ? "unknown (etcd unreachable)" : tool.registered ? "yes" : "no")),
    h("h2", {}, "Used by"),
    usedBy(tool),
    pipelines.length ? h("h2", {}, "Run durations of those pipelines here") : null,
    charts,
  );
  if (!here.length) return;
  try {
    const grid = await api("GET", `/runs/grid?${new URLSearchParams({ pipelines: here.join(","), last: "30" })}`);
    if (gen !== generation) return;
    charts.replaceChildren(...grid.pipelines.map((row) => h("div", { class: "chart-row" }, h("span", { class: "chart-name" }, row.pipeline), durationChart(row.runs, { pipeline: row.pipeline, width: 360, label: `Run durations of ${row.pipeline}` }))));
  } catch (err) {
    charts.replaceChildren(errorBox(err));
  }
}

// -- the queue ----------------------------------------------------------------------------------
async function cancelQueued(entry) {
  if (!(await confirmAction(`Cancel queued run ${entry.id.slice(0, 12)} of ${entry.pipeline}?`))) return;
  try {
    await api("POST", `/runs/${entry.id}/cancel`, {});
  } catch (err) {
    alertBox(err);
  }
  renderQueue(true);
}

const since = (iso) => fmtDuration((Date.now() - ms(iso)) / 1000);

async function renderQueue(again) {
  const gen = generation;
  let queue, running;
  try {
    [queue, running] = await Promise.all([api("GET", "/queue"), api("GET", "/runs?status=running&limit=200")]);
  } catch (err) {
    if (gen !== generation) return;
    if (!again) setView(h("h1", {}, "Queue"), errorBox(err));
    refreshIn(renderQueue, REFRESH_MS * 3);
    return;
  }
  if (gen !== generation) return;
  const focused = document.activeElement && document.activeElement.getAttribute("data-cancel");
  setView(
    h("h1", {}, "Queue"),
    h("p", { id: "action-error", class: "error", role: "alert" }),
    h("p", { class: "muted small" }, "Queued runs in the order they will be considered (higher priority first, then older); a run whose pipeline is busy is passed over. Refreshes every 2 s."),
    queue.length
      ? h("table", { id: "queue" },
          h("thead", {}, h("tr", {}, ["#", "Run", "Pipeline", "Priority", "Trigger", "Queued for", "Waiting for", ""].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, queue.map((q) => h("tr", { "data-run": q.id },
            h("td", {}, q.position),
            h("td", {}, h("a", { href: `#/run/${q.id}`, class: "mono" }, short(q.id))),
            h("td", {}, q.pipeline),
            h("td", {}, q.priority),
            h("td", {}, q.trigger, q.tick_at ? h("div", { class: "muted small" }, `tick ${when(q.tick_at)}`) : null),
            h("td", {}, since(q.queued_at)),
            h("td", { class: "small" }, q.waiting_for),
            h("td", {}, h("button", { type: "button", class: "danger", "data-cancel": q.id, onclick: () => cancelQueued(q) }, "Cancel"))))))
      : h("p", { class: "muted", id: "queue-empty" }, "Nothing is queued."),
    h("h2", {}, "Running now"),
    running.length
      ? h("table", { id: "running" },
          h("thead", {}, h("tr", {}, ["Run", "Pipeline", "Trigger", "Running for", "Steps"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, running.map((r) => h("tr", { "data-run": r.id },
            h("td", {}, h("a", { href: `#/run/${r.id}`, class: "mono" }, short(r.id))),
            h("td", {}, r.pipeline),
            h("td", {}, r.trigger),
            h("td", {}, r.started_at ? since(r.started_at) : "—"),
            h("td", {}, h("span", { class: "steps" }, (r.steps || []).map((s) => h("span", { class: `dot s-${s.status}`, title: `${s.name}: ${s.status}` }))))))))
      : h("p", { class: "muted" }, "No run is running."),
  );
  if (focused && document.querySelector(`[data-cancel="${CSS.escape(focused)}"]`)) document.querySelector(`[data-cancel="${CSS.escape(focused)}"]`).focus();
  refreshIn(renderQueue);
}

// -- backfills ----------------------------------------------------------------------------------
// GET /backfills (newest first, each with its progress) and, for each card shown, GET /backfills/{id}
// (its ticks in order). An ended backfill's ticks no longer change: they are fetched once.
const BACKFILLS_SHOWN = 20;
const BACKFILL_ENDED = new Set(["succeeded", "failed", "cancelled"]);
const endedBackfills = new Map(); // id -> detail, once ended
// Progress keys of the API and the state class each is drawn with.
const PROGRESS_PARTS = [["done", "succeeded"], ["failed", "failed"], ["cancelled", "cancelled"], ["running", "running"], ["queued", "queued"]];

function progressBar(backfill) {
  const width = 320;
  const p = backfill.progress;
  const svg = svgRoot(width, 14, `${p.ended} of ${p.total} runs ended`, "progress picture");
  let x = 0;
  for (const [key, status] of PROGRESS_PARTS) {
    const n = p[key] || 0;
    if (!n) continue;
    const w = (n / Math.max(p.total, 1)) * width;
    svg.append(svgTitle(svgEl("rect", { x, y: 0, width: w, height: 14, class: `bar s-${status}`, "data-status": status }), `${n} ${key}`));
    x += w;
  }
  return svg;
}

async function cancelBackfill(backfill, running) {
  const what = running ? "its queued runs and stop its running run" : "its queued runs (a running run goes on)";
  if (!(await confirmAction(`Cancel backfill ${short(backfill.id)} of ${backfill.pipeline}: ${what}?`))) return;
  try {
    await api("POST", `/backfills/${encodeURIComponent(backfill.id)}/cancel`, { running });
  } catch (err) {
    alertBox(err);
    return;
  }
  renderBackfills(true);
}

function backfillCard(b, position) {
  const p = b.progress;
  const nextQueued = (b.ticks || []).map((t) => position.get(t.run_id)).filter((n) => n !== undefined);
  const active = !BACKFILL_ENDED.has(b.status);
  return h(
    "article",
    { class: "card backfill", "data-backfill": b.id, "data-pipeline": b.pipeline, "data-status": b.status },
    h("h2", {}, b.pipeline, " ", h("span", { class: "muted small mono" }, short(b.id)), " ", badge(b.status)),
    h("p", { class: "small" }, `${b.count} ticks of `, h("code", {}, b.cron), ` (${b.timezone}) from ${when(b.from)} to ${when(b.to)} · started ${when(b.created_at)}${b.created_by ? ` by ${b.created_by}` : ""} · `,
      h("strong", { class: "progress-text" }, `${p.ended} of ${p.total} ended`),
      b.version ? h("span", { class: "muted" }, ` · version ${b.version}`) : null,
      b.cancelled_at ? h("span", { class: "error" }, ` · cancelled ${when(b.cancelled_at)}`) : null,
      nextQueued.length ? h("span", { class: "muted" }, ` · next in the queue at position ${Math.min(...nextQueued)}`) : null),
    progressBar(b),
    h("p", { class: "small progress-counts" }, PROGRESS_PARTS.filter(([key]) => p[key]).map(([key, status]) => [h("span", { class: `badge s-${status}`, "data-count": key }, key), ` ${p[key]} `])),
    h("div", { class: "tick-cells", "aria-label": "Its runs in tick order" }, (b.ticks || []).map((t) =>
      h("a", { href: `#/run/${t.run_id}`, class: `sq big s-${t.status}`, "data-run": t.run_id, "data-status": t.status, title: `${when(t.tick_at)}: ${t.status}`, "aria-label": `tick ${when(t.tick_at)}: ${t.status}` }))),
    active
      ? h("p", {},
          p.queued ? h("button", { type: "button", class: "danger", "data-cancel-backfill": b.id, onclick: () => cancelBackfill(b, false) }, "Cancel queued runs") : null, " ",
          p.running ? h("button", { type: "button", class: "danger", "data-cancel-running": b.id, onclick: () => cancelBackfill(b, true) }, "Cancel, also the running run") : null)
      : null,
  );
}

async function renderBackfills(again) {
  const gen = generation;
  let backfills, queue;
  try {
    [backfills, queue] = await Promise.all([api("GET", `/backfills?limit=${BACKFILLS_SHOWN}`), api("GET", "/queue")]);
    backfills = await Promise.all(backfills.map((b) => endedBackfills.get(b.id) || api("GET", `/backfills/${encodeURIComponent(b.id)}`)));
  } catch (err) {
    if (gen !== generation) return;
    if (!again) setView(h("h1", {}, "Backfills"), errorBox(err));
    refreshIn(renderBackfills, REFRESH_MS * 3);
    return;
  }
  if (gen !== generation) return;
  for (const b of backfills) if (BACKFILL_ENDED.has(b.status)) endedBackfills.set(b.id, b);
  const position = new Map(queue.map((q) => [q.id, q.position]));
  setView(
    h("h1", {}, "Backfills"),
    h("p", { id: "action-error", class: "error", role: "alert" }),
    h("p", { class: "muted small" }, `Each backfill is one run per tick, queued together and started in tick order (POST /pipeline/backfill, maoctl pipeline backfill); the newest ${BACKFILLS_SHOWN}. Refreshes every 4 s.`),
    backfills.length === 0 ? h("p", { class: "muted" }, "No backfill yet.") : null,
    backfills.map((b) => backfillCard(b, position)),
  );
  refreshIn(renderBackfills, REFRESH_MS * 2);
}

// -- schedules ----------------------------------------------------------------------------------
// A strip of time: each recent tick a dot coloured by its outcome, then "now", then the next ticks
// as rings.
function tickStrip(schedule) {
  const width = 420;
  const past = (schedule.ticks || []).map((t) => ({ at: ms(t.due_at || t.recorded_at), t })).filter((x) => !Number.isNaN(x.at));
  const next = (schedule.next_ticks || []).map((iso) => ms(iso));
  const now = Date.now();
  const times = [...past.map((x) => x.at), ...next, now];
  const lo = Math.min(...times);
  const hi = Math.max(...times, lo + 1000);
  const x = (t) => 10 + ((t - lo) / (hi - lo)) * (width - 20);
  const svg = svgRoot(width, 40, `Ticks of ${schedule.pipeline}: ${past.length} recent, ${next.length} next`, "ticks-strip picture");
  svg.setAttribute("data-schedule", schedule.id);
  svg.append(svgEl("line", { x1: 6, y1: 16, x2: width - 6, y2: 16, class: "axis" }));
  const nowLine = svgEl("line", { x1: x(now), y1: 4, x2: x(now), y2: 28, class: "now" });
  svg.append(svgTitle(nowLine, `now (${new Date(now).toLocaleString()})`));
  svg.append(svgEl("text", { x: x(now), y: 38, class: "tl-note", "text-anchor": "middle" }, "now"));
  for (const { at, t } of past) {
    const dot = svgEl("circle", { cx: x(at), cy: 16, r: 5, class: `tick s-${t.outcome}`, "data-outcome": t.outcome });
    svg.append(svgTitle(dot, `${when(t.due_at || t.recorded_at)}: ${t.outcome}${t.instance ? ` on ${t.instance}` : ""}${t.reason ? ` — ${t.reason}` : ""}`));
  }
  for (const at of next) {
    const ring = svgEl("circle", { cx: x(at), cy: 16, r: 5, class: "tick next", "data-outcome": "next" });
    svg.append(svgTitle(ring, `next: ${new Date(at).toLocaleString()}`));
  }
  if (past.length) svg.append(svgEl("text", { x: 6, y: 38, class: "tl-note" }, shortTime(lo)));
  if (next.length) svg.append(svgEl("text", { x: width - 6, y: 38, class: "tl-note", "text-anchor": "end" }, shortTime(hi)));
  return svg;
}

function scheduleRow(s, scope) {
  const what = s.trigger ? h("span", {}, "on ", h("strong", {}, s.trigger.dataset), " advancing") : h("span", {}, h("code", {}, s.cron), ` ${s.timezone}`);
  return h(
    "tr",
    { "data-schedule": s.id, "data-scope": scope },
    h("td", { class: "nowrap" }, h("a", { href: `#/grid?pipeline=${encodeURIComponent(s.pipeline)}` }, s.pipeline), h("div", { class: "muted small" }, scope)),
    h("td", {}, what, h("div", { class: "muted small" }, `overlap ${s.overlap || "skip"} · priority ${s.priority || 0}${s.catchup ? ` · catch-up ${s.catchup}` : ""}`)),
    h("td", {}, tickStrip(s)),
    h("td", { class: "small" }, (s.next_ticks || []).length ? h("ol", { class: "ticks next-ticks" }, s.next_ticks.map((t) => h("li", { title: when(t) }, shortTime(t)))) : h("span", { class: "muted" }, s.trigger ? "when the dataset advances" : "—")),
    h("td", {}, ticksList(s.ticks)),
  );
}

async function renderSchedules(again) {
  const gen = generation;
  let local, federation;
  try {
    local = await api("GET", "/schedules?ticks=20&next=5");
    federation = await api("GET", "/federation/schedules?next=5").catch((err) => err);
  } catch (err) {
    if (gen !== generation) return;
    if (!again) setView(h("h1", {}, "Schedules"), errorBox(err));
    refreshIn(renderSchedules, REFRESH_MS * 5);
    return;
  }
  if (gen !== generation) return;
  const rows = [...local.map((s) => scheduleRow(s, "this instance")), ...(federation instanceof Error ? [] : federation.map((s) => scheduleRow(s, "federation")))];
  setView(
    h("h1", {}, "Schedules"),
    h("p", { class: "legend small" }, ["fired", "skipped", "missed"].map((o) => h("span", { class: "legend-item" }, h("span", { class: `sq round s-${o}` }), o)), h("span", { class: "legend-item" }, h("span", { class: "sq round ring" }), "next")),
    federation instanceof Error ? h("p", { class: "error", role: "alert" }, `Federation-wide schedules: ${federation.message}`) : null,
    rows.length
      ? h("table", { id: "schedules" },
          h("thead", {}, h("tr", {}, ["Pipeline", "When", "Ticks", "Next", "Last ticks"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, rows))
      : h("p", { class: "muted" }, "Nothing is scheduled."),
  );
  refreshIn(renderSchedules, REFRESH_MS * 5);
}
