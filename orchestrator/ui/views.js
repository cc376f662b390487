// The console's other views: pipelines (run durations, schedules, ticks, run now, unschedule), the federation
// (members, federation schedules, locks) and datasets (ground-truth history with provenance).
// Loaded before console.js, which holds the helpers (api, h, ...) these call and the routing.
"use strict";

// -- pipelines ----------------------------------------------------------------------------------
function ticksList(ticks) {
  if (!ticks || ticks.length === 0) return h("span", { class: "muted" }, "no ticks yet");
  return h(
    "ul",
    { class: "ticks" },
    ticks.slice(0, 5).map((t) =>
      h("li", {}, badge(t.outcome), " ", when(t.due_at), t.instance ? ` on ${t.instance}` : "", t.run_id ? [" ", h("a", { href: `#/run/${t.run_id}` }, short(t.run_id))] : "", t.reason ? h("span", { class: "muted" }, ` — ${t.reason}`) : ""),
    ),
  );
}

async function runPipeline(name) {
  if (!(await confirmAction(`Run pipeline ${name} now?`))) return;
  try {
    const started = await api("POST", "/pipeline/run", { name, wait: false });
    location.hash = `#/run/${started.id}`;
  } catch (err) {
    alertBox(err);
  }
}

async function unschedule(schedule) {
  if (!(await confirmAction(`Unschedule ${schedule.pipeline} (${schedule.cron}, ${schedule.timezone})?`))) return;
  try {
    await api("DELETE", `/jobs/${encodeURIComponent(schedule.id)}`);
  } catch (err) {
    alertBox(err);
  }
  renderPipelines(true);
}

function scheduleRows(schedules, scope) {
  return schedules.map((s) =>
    h(
      "tr",
      {},
      h("td", {}, h("code", {}, s.cron), h("div", { class: "muted small" }, `${s.timezone} · ${scope}`, s.placement && s.placement.labels ? ` · ${JSON.stringify(s.placement.labels)}` : "")),
      h("td", {}, when(s.next_run_time)),
      h("td", {}, ticksList(s.ticks)),
      h("td", {}, h("button", { type: "button", class: "danger", "data-job": s.id, onclick: () => unschedule(s) }, "Unschedule")),
    ),
  );
}

// A step with a strategy: the tool its runs start with now, and why (docs/strategies.md).
function strategyNote(state) {
  if (!state) return null;
  const forced = state.forced ? " (forced)" : "";
  return h("span", { class: "strategy", "data-active": state.active, title: `since ${state.since}: ${state.reason}` }, ` · active tool ${state.active}${forced}`);
}

async function renderPipelines(again) {
  const gen = generation;
  let pipelines, local, federation, grid;
  try {
    [pipelines, local, grid] = await Promise.all([api("GET", "/pipeline"), api("GET", "/schedules"), api("GET", "/runs/grid?last=30")]);
    federation = await api("GET", "/federation/schedules").catch(() => []);
  } catch (err) {
    if (!again && gen === generation) setView(h("h1", {}, "Pipelines"), errorBox(err));
    return;
  }
  if (gen !== generation) return;
  const runsOf = new Map(grid.pipelines.map((row) => [row.pipeline, row.runs]));
  setView(
    h("h1", {}, "Pipelines"),
    h("p", { id: "action-error", class: "error", role: "alert" }),
    pipelines.length === 0 ? h("p", { class: "muted" }, "No pipeline is initialised on this instance.") : null,
    pipelines.map((p) => {
      const schedules = [...scheduleRows(local.filter((s) => s.pipeline === p.name), "this instance"), ...scheduleRows(federation.filter((s) => s.pipeline === p.name), "federation")];
      return h(
        "article",
        { class: "card", "data-pipeline": p.name },
        h("h2", {}, p.name, " ", h("button", { type: "button", class: "run-button", "data-pipeline": p.name, onclick: () => runPipeline(p.name) }, "Run now"), " ", h("a", { href: `#/runs?pipeline=${encodeURIComponent(p.name)}`, class: "small" }, "runs"), p.version ? [" · ", h("a", { href: `#/versions/${encodeURIComponent(p.name)}`, class: "small pipeline-version" }, `version ${p.version}`)] : null),
        p.description ? h("p", {}, p.description) : null,
        h("div", { class: "chart-row small muted" }, h("span", {}, "Run durations (last 30)"), durationChart(runsOf.get(p.name) || [], { pipeline: p.name, width: 360, label: `Run durations of ${p.name}` })),
        h("ol", { class: "small" }, p.steps.map((s) => h("li", {}, h("strong", {}, s.name), ` — ${s.tool}: ${s.input_dataset || "(no input)"} → ${s.output_dataset}`, Array.isArray(s.needs) && s.needs.length ? ` (needs ${s.needs.join(", ")})` : "", strategyNote((p.strategies || {})[s.name])))),
        schedules.length
          ? h("table", {}, h("thead", {}, h("tr", {}, ["Schedule", "Next tick", "Recent ticks", ""].map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, schedules))
          : h("p", { class: "muted small" }, "Not scheduled."),
      );
    }),
  );
  refreshIn(renderPipelines, REFRESH_MS * 5);
}

// -- the federation -----------------------------------------------------------------------------
async function renderFederation(again) {
  const gen = generation;
  let members, schedules, locks;
  try {
    [members, schedules, locks] = await Promise.all([api("GET", "/federation/members"), api("GET", "/federation/schedules"), api("GET", "/locks")]);
  } catch (err) {
    if (gen !== generation) return;
    if (!again) setView(h("h1", {}, "Federation"), errorBox(err));
    refreshIn(renderFederation, REFRESH_MS * 5);
    return;
  }
  if (gen !== generation) return;
  const labels = (l) => Object.entries(l || {}).map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`));
  setView(
    h("h1", {}, "Federation"),
    h("h2", {}, "Instances"),
    h("table", { id: "members" }, h("thead", {}, h("tr", {}, ["Instance", "API", "Labels", "Version", "Started"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, members.instances.map((m) => h("tr", {}, h("td", {}, m.name), h("td", { class: "mono small" }, m.api_url || "—"), h("td", {}, labels(m.labels)), h("td", {}, m.version || "—"), h("td", {}, when(m.started_at)))))),
    h("h2", {}, "etcd members"),
    h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Peer URLs", "Client URLs", "Healthy"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, members.etcd.map((m) => h("tr", {}, h("td", {}, m.name || "(unstarted)"), h("td", { class: "mono small" }, (m.peer_urls || []).join(", ")), h("td", { class: "mono small" }, (m.client_urls || []).join(", ")), h("td", {}, badge(m.healthy ? "ok" : "down")))))),
    h("h2", {}, "Federation schedules"),
    schedules.length
      ? h("table", {}, h("thead", {}, h("tr", {}, ["Pipeline", "Schedule", "Placement", "Next tick", "Ticks (who fired)"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, schedules.map((s) => h("tr", {}, h("td", {}, s.pipeline), h("td", {}, h("code", {}, s.cron), ` ${s.timezone}`), h("td", {}, labels((s.placement || {}).labels)), h("td", {}, when(s.next_run_time)), h("td", {}, ticksList(s.ticks))))))
      : h("p", { class: "muted" }, "No federation-wide schedule."),
    h("h2", {}, "Locks held now"),
    locks.length
      ? h("table", {}, h("thead", {}, h("tr", {}, ["Dataset", "Instance", "Purpose", "Since"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, locks.map((l) => h("tr", {}, h("td", {}, l.dataset || l.key), h("td", {}, l.instance || "—"), h("td", {}, l.purpose || "—"), h("td", {}, when(l.acquired_at))))))
      : h("p", { class: "muted" }, "No lock is held."),
  );
  refreshIn(renderFederation, REFRESH_MS * 2);
}

// -- datasets -----------------------------------------------------------------------------------
// A dataset's registration and its ground-truth history with provenance, into `detail` (also used by
// the lineage view when a dataset node is opened).
async function datasetDetail(name, detail) {
  detail.replaceChildren(h("p", { class: "muted" }, `Loading ${name}…`));
  try {
    const [entry, history] = await Promise.all([
      api("GET", `/registry/datasets/${encodeURIComponent(name)}`),
      api("GET", `/registry/datasets/${encodeURIComponent(name)}/history?limit=20`).catch((err) => err),
    ]);
    // In legacy open mode the entry comes as the prototype sent it: a string holding its JSON.
    const dataset = typeof entry === "string" ? JSON.parse(entry) : entry;
    detail.replaceChildren(
      h("h2", {}, name),
      h("dl", { class: "facts" }, h("dt", {}, "Master"), h("dd", { class: "mono" }, dataset.master), h("dt", {}, "Node branches"), h("dd", {}, (dataset.nodes || []).join(", ") || "—")),
      h("h3", {}, "ground-truth history"),
      history instanceof Error
        ? errorBox(history)
        : history.length === 0
          ? h("p", { class: "muted" }, "No commit on ground-truth yet.")
          : h("ol", { class: "history" }, history.map((c) =>
              h("li", {}, h("code", {}, short(c.commit)), " ", c.subject, h("div", { class: "muted small" }, `${c.author} · ${when(c.date)}`),
                Object.keys(c.trailers || {}).length
                  ? h("dl", { class: "trailers small" }, Object.entries(c.trailers).map(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono" }, k === "MAO-Run" ? h("a", { href: `#/run/${v}` }, v) : v)]))
                  : null))),
    );
  } catch (err) {
    detail.replaceChildren(h("h2", {}, name), errorBox(err));
  }
}

async function renderDatasets() {
  const gen = generation;
  let names;
  try {
    names = await api("GET", "/registry/datasets");
  } catch (err) {
    if (gen === generation) setView(h("h1", {}, "Datasets"), errorBox(err));
    return;
  }
  if (gen !== generation) return;
  const detail = h("section", { id: "dataset-detail", "aria-live": "polite" });
  setView(
    h("h1", {}, "Datasets"),
    names.length
      ? h("ul", { class: "pills" }, names.map((n) => h("li", {}, h("button", { type: "button", onclick: () => datasetDetail(n, detail) }, n))))
      : h("p", { class: "muted" }, "No dataset is registered."),
    detail,
  );
}
