// The MAO web console: vanilla JS, no dependencies, no build step.
// Every value from the API is put on the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "mao-token";
const REFRESH_MS = 2000;
const ACTIVE = new Set(["pending", "queued", "running", "retrying"]);
let refreshTimer = null;
let generation = 0; // bumped at every navigation: an answer for an earlier view is dropped
let cancelSupported = null; // unknown until the first answer of POST /runs/{id}/cancel

// -- the API ------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (response.status === 401) {
    showLogin("The token was refused: sign in again.");
    throw new ApiError(401, data);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// -- small DOM helpers --------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const short = (sha) => (sha ? String(sha).slice(0, 10) : "—");
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
const secs = (d) => (d === null || d === undefined ? "—" : `${Number(d).toFixed(d < 10 ? 2 : 0)} s`);
const badge = (status) => h("span", { class: `badge s-${status || "unknown"}` }, status || "unknown");
const view = () => document.getElementById("view");

function setView(...children) {
  view().replaceChildren(...children.flat(2).filter((c) => c !== null && c !== undefined && c !== false));
}

function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, err instanceof ApiError ? err.message : String(err));
}

function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.showModal();
  });
}

// -- sign in ------------------------------------------------------------------------------------
function showLogin(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopRefresh();
  document.getElementById("login").hidden = false;
  document.getElementById("view").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("token").value = "";
  document.getElementById("token").focus();
}

async function probeCancel() {
  // The OpenAPI document lists every route: no cancel route, no cancel button.
  try {
    const doc = await api("GET", "/openapi.json");
    cancelSupported = Boolean(doc.paths && doc.paths["/runs/{id}/cancel"]);
  } catch (_) {
    cancelSupported = null;
  }
}

async function signIn(event) {
  event.preventDefault();
  const token = document.getElementById("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    const hello = await api("GET", "/");
    document.getElementById("instance").textContent = `${hello.instance} · ${hello.version}`;
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      document.getElementById("login-error").textContent = String(err.message || err);
    }
    return;
  }
  document.getElementById("token").value = "";
  document.getElementById("login").hidden = true;
  document.getElementById("view").hidden = false;
  document.getElementById("logout").hidden = false;
  await probeCancel();
  route();
}

// -- refreshing ---------------------------------------------------------------------------------
function stopRefresh() {
  if (refreshTimer !== null) clearTimeout(refreshTimer);
  refreshTimer = null;
}

function refreshIn(render, ms = REFRESH_MS) {
  stopRefresh();
  const gen = generation;
  refreshTimer = setTimeout(() => {
    if (gen !== generation) return;
    if (document.getElementById("confirm").open) refreshIn(render, ms);
    else render(true);
  }, ms);
}

// -- runs ---------------------------------------------------------------------------------------
async function renderRuns(again) {
  const gen = generation;
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const query = new URLSearchParams({ limit: "50" });
  if (params.get("pipeline")) query.set("pipeline", params.get("pipeline"));
  if (params.get("status")) query.set("status", params.get("status"));
  let runs, pipelines;
  try {
    [runs, pipelines] = await Promise.all([api("GET", `/runs?${query}`), api("GET", "/pipeline")]);
  } catch (err) {
    if (gen !== generation) return;
    if (!again) setView(h("h1", {}, "Runs"), errorBox(err));
    refreshIn(renderRuns, REFRESH_MS * 3);
    return;
  }
  if (gen !== generation) return;
  const filter = (name, values) =>
    h(
      "select",
      {
        id: `filter-${name}`,
        "aria-label": `Filter by ${name}`,
        onchange: () => {
          const p = new URLSearchParams(location.hash.split("?")[1] || "");
          const value = document.getElementById(`filter-${name}`).value;
          if (value) p.set(name, value);
          else p.delete(name);
          location.hash = `#/runs?${p}`;
        },
      },
      h("option", { value: "" }, `any ${name}`),
      values.map((v) => h("option", { value: v, selected: params.get(name) === v }, v)),
    );
  const focused = document.activeElement && document.activeElement.id;
  setView(
    h("h1", {}, "Runs"),
    h(
      "div",
      { class: "toolbar" },
      filter("pipeline", pipelines.map((p) => p.name)),
      filter("status", ["pending", "running", "succeeded", "failed", "cancelled"]),
      h("span", { class: "muted" }, "refreshes every 2 s"),
    ),
    runs.length === 0
      ? h("p", { class: "muted" }, "No runs yet.")
      : h(
          "table",
          { id: "runs" },
          h("thead", {}, h("tr", {}, ["Run", "Pipeline", "Trigger", "Status", "Created", "Duration", "Steps"].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            runs.map((run) =>
              h(
                "tr",
                { "data-run": run.id },
                h("td", {}, h("a", { href: `#/run/${run.id}`, class: "mono" }, run.id.slice(0, 12))),
                h("td", {}, run.pipeline),
                h("td", {}, run.trigger),
                h("td", {}, badge(run.status)),
                h("td", {}, when(run.created_at)),
                h("td", {}, secs(run.duration)),
                h("td", {}, h("span", { class: "steps" }, (run.steps || []).map((s) => h("span", { class: `dot s-${s.status}`, title: `${s.name}: ${s.status}` })))),
              ),
            ),
          ),
        ),
  );
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
  refreshIn(renderRuns);
}

// -- one run ------------------------------------------------------------------------------------
let selectedStep = null;

function stepGraph(steps) {
  // Columns by depth in the needs graph (the list order when steps have no `needs`).
  const byName = new Map(steps.map((s) => [s.name, s]));
  const hasNeeds = steps.some((s) => Array.isArray(s.needs));
  const needsOf = (s, i) => (hasNeeds ? (s.needs || []).filter((n) => byName.has(n)) : i > 0 ? [steps[i - 1].name] : []);
  const depth = new Map();
  const depthOf = (name, seen = new Set()) => {
    if (depth.has(name)) return depth.get(name);
    if (seen.has(name)) return 0;
    seen.add(name);
    const i = steps.findIndex((s) => s.name === name);
    const d = Math.max(-1, ...needsOf(steps[i], i).map((n) => depthOf(n, seen))) + 1;
    depth.set(name, d);
    return d;
  };
  steps.forEach((s) => depthOf(s.name));
  const rows = new Map();
  const pos = new Map();
  steps.forEach((s) => {
    const d = depth.get(s.name);
    const r = rows.get(d) || 0;
    rows.set(d, r + 1);
    pos.set(s.name, { x: 20 + d * 190, y: 20 + r * 70 });
  });
  const width = 40 + (Math.max(...depth.values()) + 1) * 190;
  const height = 40 + 44 + (Math.max(...rows.values()) - 1) * 70;
  const svgNS = "http://www.w3.org/2000/svg";
  const el = (tag, attrs, text) => {
    const e = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "Steps of the run", class: "graph" });
  const defs = el("defs", {});
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" });
  marker.append(el("path", { d: "M0,0 L10,5 L0,10 z", class: "edge-head" }));
  defs.append(marker);
  svg.append(defs);
  steps.forEach((s, i) => {
    for (const need of needsOf(s, i)) {
      const a = pos.get(need);
      const b = pos.get(s.name);
      svg.append(el("line", { x1: a.x + 150, y1: a.y + 22, x2: b.x, y2: b.y + 22, class: "edge", "marker-end": "url(#arrow)" }));
    }
  });
  steps.forEach((s) => {
    const p = pos.get(s.name);
    const g = el("g", { class: `node s-${s.status}`, tabindex: 0, role: "button", "data-step": s.name, "aria-label": `${s.name}: ${s.status}` });
    g.append(el("rect", { x: p.x, y: p.y, width: 150, height: 44, rx: 6 }));
    g.append(el("text", { x: p.x + 10, y: p.y + 18, class: "node-name" }, s.name.length > 20 ? `${s.name.slice(0, 19)}…` : s.name));
    g.append(el("text", { x: p.x + 10, y: p.y + 35, class: "node-status" }, `${s.status}${s.duration != null ? ` · ${secs(s.duration)}` : ""}`));
    const open = () => {
      selectedStep = s.name;
      renderRun(true);
    };
    g.addEventListener("click", open);
    g.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        open();
      }
    });
    svg.append(g);
  });
  return svg;
}

function commitChain(step) {
  const part = (label, sha) => h("span", { class: "commit", title: sha || "" }, h("span", { class: "muted" }, `${label} `), h("code", {}, short(sha)));
  return h("span", { class: "chain" }, part("input", step.input_commit), " → ", part("output", step.output_commit), " → ", part("ground-truth", step.merge_commit));
}

async function cancelRun(run) {
  if (!(await confirmAction(`Cancel run ${run.id.slice(0, 12)} of ${run.pipeline}?`))) return;
  try {
    await api("POST", `/runs/${run.id}/cancel`, {});
  } catch (err) {
    // This instance's engine has no cancel route (an unknown run is a 404 too, but says so).
    if (err instanceof ApiError && (err.status === 405 || (err.status === 404 && /no such endpoint/.test(err.message)))) {
      cancelSupported = false;
    }
    alertBox(err);
  }
  renderRun(true);
}

function alertBox(err) {
  const box = document.getElementById("action-error");
  if (box) box.textContent = err instanceof ApiError ? err.message : String(err);
}

async function renderRun(again) {
  const gen = generation;
  const id = decodeURIComponent(location.hash.split("/")[2] || "");
  let run;
  try {
    run = await api("GET", `/runs/${encodeURIComponent(id)}`);
  } catch (err) {
    if (!again && gen === generation) setView(h("h1", {}, "Run"), errorBox(err));
    return;
  }
  if (gen !== generation) return;
  const steps = run.steps || [];
  if (!selectedStep || !steps.some((s) => s.name === selectedStep)) {
    const failed = steps.find((s) => ["failed", "conflict"].includes(s.status));
    const running = steps.find((s) => s.status === "running");
    selectedStep = (failed || running || steps[steps.length - 1] || {}).name || null;
  }
  const step = steps.find((s) => s.name === selectedStep);
  const active = ACTIVE.has(run.status);
  const focused = document.activeElement && (document.activeElement.id || document.activeElement.getAttribute("data-step"));
  setView(
    h("p", {}, h("a", { href: "#/runs" }, "← Runs")),
    h("h1", {}, `Run ${run.id.slice(0, 12)} `, badge(run.status)),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Pipeline"), h("dd", {}, h("a", { href: `#/runs?pipeline=${encodeURIComponent(run.pipeline)}` }, run.pipeline)),
      h("dt", {}, "Trigger"), h("dd", {}, run.trigger),
      h("dt", {}, "Started"), h("dd", {}, when(run.started_at)),
      h("dt", {}, "Ended"), h("dd", {}, when(run.ended_at)),
      h("dt", {}, "Duration"), h("dd", {}, secs(run.duration)),
      run.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, run.error)] : null,
    ),
    active && cancelSupported !== false
      ? h("p", {}, h("button", { id: "cancel-run", type: "button", class: "danger", onclick: () => cancelRun(run) }, "Cancel run"))
      : null,
    h("p", { id: "action-error", class: "error", role: "alert" }),
    h("h2", {}, "Steps"),
    steps.length ? stepGraph(steps) : null,
    h(
      "table",
      { id: "steps" },
      h("thead", {}, h("tr", {}, ["Step", "Status", "Exit", "Attempts", "Duration", "Commits", ""].map((c) => h("th", { scope: "col" }, c)))),
      h(
        "tbody",
        {},
        steps.map((s) =>
          h(
            "tr",
            { class: s.name === selectedStep ? "selected" : null },
            h("td", {}, s.name, h("div", { class: "muted small" }, `${s.tool} → ${s.output_dataset}`)),
            h("td", {}, badge(s.status), s.error ? h("div", { class: "error small" }, s.error) : null),
            h("td", {}, s.exit_code ?? "—"),
            h("td", {}, Array.isArray(s.attempts) ? s.attempts.map((a, i) => h("span", { class: `badge s-${a.status}`, title: a.error || "" }, `#${a.attempt ?? i + 1} ${a.status}`)) : "1"),
            h("td", {}, secs(s.duration)),
            h("td", {}, commitChain(s)),
            h("td", {}, h("button", { type: "button", class: "log-button", "data-step": s.name, onclick: () => { selectedStep = s.name; renderRun(true); } }, "Log")),
          ),
        ),
      ),
    ),
    step
      ? h(
          "section",
          { id: "log-section", "aria-label": `Log of ${step.name}` },
          h("h2", {}, `Log of ${step.name}`, h("span", { class: "muted small" }, " (last 200 lines, secrets masked)")),
          h("pre", { id: "log", tabindex: 0 }, step.log_tail || (ACTIVE.has(step.status) ? "(running: the log appears when the step ends)" : "(no output)")),
        )
      : null,
  );
  if (focused) {
    const target = document.getElementById(focused) || view().querySelector(`[data-step="${CSS.escape(focused)}"]`);
    if (target) target.focus();
  }
  if (active) refreshIn(renderRun);
  else stopRefresh();
}

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

async function renderPipelines(again) {
  const gen = generation;
  let pipelines, local, federation;
  try {
    [pipelines, local] = await Promise.all([api("GET", "/pipeline"), api("GET", "/schedules")]);
    federation = await api("GET", "/federation/schedules").catch(() => []);
  } catch (err) {
    if (!again && gen === generation) setView(h("h1", {}, "Pipelines"), errorBox(err));
    return;
  }
  if (gen !== generation) return;
  setView(
    h("h1", {}, "Pipelines"),
    h("p", { id: "action-error", class: "error", role: "alert" }),
    pipelines.length === 0 ? h("p", { class: "muted" }, "No pipeline is initialised on this instance.") : null,
    pipelines.map((p) => {
      const schedules = [...scheduleRows(local.filter((s) => s.pipeline === p.name), "this instance"), ...scheduleRows(federation.filter((s) => s.pipeline === p.name), "federation")];
      return h(
        "article",
        { class: "card", "data-pipeline": p.name },
        h("h2", {}, p.name, " ", h("button", { type: "button", class: "run-button", "data-pipeline": p.name, onclick: () => runPipeline(p.name) }, "Run now"), " ", h("a", { href: `#/runs?pipeline=${encodeURIComponent(p.name)}`, class: "small" }, "runs")),
        p.description ? h("p", {}, p.description) : null,
        h("ol", { class: "small" }, p.steps.map((s) => h("li", {}, h("strong", {}, s.name), ` — ${s.tool}: ${s.input_dataset || "(no input)"} → ${s.output_dataset}`, Array.isArray(s.needs) && s.needs.length ? ` (needs ${s.needs.join(", ")})` : ""))),
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
  const detail = h("section", { id: "dataset-detail" });
  const open = async (name) => {
    detail.replaceChildren(h("p", { class: "muted" }, `Loading ${name}…`));
    try {
      const [dataset, history] = await Promise.all([
        api("GET", `/registry/datasets/${encodeURIComponent(name)}`),
        api("GET", `/registry/datasets/${encodeURIComponent(name)}/history?limit=20`).catch((err) => err),
      ]);
      detail.replaceChildren(
        h("h2", {}, name),
        h("dl", { class: "facts" }, h("dt", {}, "Master"), h("dd", { class: "mono" }, dataset.master), h("dt", {}, "Node branches"), h("dd", {}, (dataset.nodes || []).join(", ") || "—")),
        h("h3", {}, "ground-truth history"),
        history instanceof Error
          ? errorBox(history)
          : h("ol", { class: "history" }, history.map((c) =>
              h("li", {}, h("code", {}, short(c.commit)), " ", c.subject, h("div", { class: "muted small" }, `${c.author} · ${when(c.date)}`),
                Object.keys(c.trailers || {}).length
                  ? h("dl", { class: "trailers small" }, Object.entries(c.trailers).map(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono" }, k === "MAO-Run" ? h("a", { href: `#/run/${v}` }, v) : v)]))
                  : null))),
      );
    } catch (err) {
      detail.replaceChildren(errorBox(err));
    }
  };
  setView(
    h("h1", {}, "Datasets"),
    names.length
      ? h("ul", { class: "pills" }, names.map((n) => h("li", {}, h("button", { type: "button", onclick: () => open(n) }, n))))
      : h("p", { class: "muted" }, "No dataset is registered."),
    detail,
  );
}

// -- routing ------------------------------------------------------------------------------------
const VIEWS = { runs: renderRuns, run: renderRun, pipelines: renderPipelines, federation: renderFederation, datasets: renderDatasets };

function route() {
  stopRefresh();
  generation += 1;
  if (!sessionStorage.getItem(TOKEN_KEY) && sessionStorage.getItem(TOKEN_KEY) !== "") {
    showLogin();
    return;
  }
  const name = (location.hash.replace(/^#\//, "").split(/[/?]/)[0] || "runs").toLowerCase();
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    link.toggleAttribute("aria-current", link.dataset.view === name || (name === "run" && link.dataset.view === "runs"));
  }
  if (name !== "run") selectedStep = null;
  (VIEWS[name] || renderRuns)(false);
  document.getElementById("main").focus({ preventScroll: true });
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", signIn);
  document.getElementById("logout").addEventListener("click", () => showLogin("Signed out."));
  window.addEventListener("hashchange", route);
  if (sessionStorage.getItem(TOKEN_KEY) === null) {
    showLogin();
    return;
  }
  document.getElementById("logout").hidden = false;
  api("GET", "/")
    .then(async (hello) => {
      document.getElementById("instance").textContent = `${hello.instance} · ${hello.version}`;
      await probeCancel();
      route();
    })
    .catch(() => {});
});
