// The console's run views: the list of runs and one run (its step graph, timeline, commits and logs).
// Loaded before console.js, which holds the helpers (api, h, ...) these call and the routing.
"use strict";

// -- runs ---------------------------------------------------------------------------------------
async function renderRuns(again) {
  const gen = generation;
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const query = new URLSearchParams({ limit: "50" });
  if (params.get("pipeline")) query.set("pipeline", params.get("pipeline"));
  if (params.get("status")) query.set("status", params.get("status"));
  if (params.get("trigger")) query.set("trigger", params.get("trigger"));
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
  const versioned = runs.some((r) => versionOf(r) !== null);
  setView(
    h("h1", {}, "Runs"),
    h(
      "div",
      { class: "toolbar" },
      filter("pipeline", pipelines.map((p) => p.name)),
      filter("status", RUN_STATES),
      filter("trigger", TRIGGERS),
      h("span", { class: "muted" }, "refreshes every 2 s"),
    ),
    runs.length === 0
      ? h("p", { class: "muted" }, "No runs yet.")
      : h(
          "table",
          { id: "runs" },
          h("thead", {}, h("tr", {}, ["Run", "Pipeline", versioned ? "Version" : null, "Trigger", "Status", "Created", "Duration", "Steps"].filter(Boolean).map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            runs.map((run) =>
              h(
                "tr",
                { "data-run": run.id },
                h("td", {}, h("a", { href: `#/run/${run.id}`, class: "mono" }, run.id.slice(0, 12))),
                h("td", {}, run.pipeline),
                versioned ? h("td", { class: "version", title: versionOf(run) === null ? "takes the current version when it starts" : null }, versionOf(run) ?? "—") : null,
                h("td", {}, run.trigger, run.retry_of ? h("div", { class: "muted small" }, "of ", h("a", { href: `#/run/${run.retry_of}`, class: "mono" }, short(run.retry_of))) : null),
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

// Where an attempt ran: its backend (MAO_BACKENDS), the node its backend named, and how long it
// waited to be scheduled there.
function ranOn(a) {
  if (!a || !a.backend) return "";
  const node = a.node ? ` on ${a.node}` : "";
  const queued = a.queued_seconds != null ? `, queued ${secs(a.queued_seconds)}` : "";
  return `${a.backend}${node}${queued}`;
}

function ranOnCell(s) {
  const attempts = Array.isArray(s.attempts) ? s.attempts : [];
  const last = attempts[attempts.length - 1];
  if (!last || !last.backend) return "—";
  return [
    h("span", { class: "backend" }, last.backend),
    last.node ? h("div", { class: "muted small node" }, last.node) : null,
    last.queued_seconds != null ? h("div", { class: "muted small queued" }, `queued ${secs(last.queued_seconds)}`) : null,
  ];
}

// The full log of the selected step's latest attempt (GET /runs/{id}/log): streamed (follow=1,
// read from the response body as it comes) while the attempt runs, fetched whole once it ended.
// It lives outside the view, which is rebuilt at every refresh, and is put back into #log each time.
const MAX_LOG_CHARS = 4000000; // beyond it the page keeps the end; maoctl pipeline logs has it all
let logState = { key: null, text: "", note: "", controller: null };

// The attempt picked on the timeline ({step, attempt, shard}); the step's latest one otherwise.
let selectedAttempt = null;

function logKey(run, step) {
  const attempts = Array.isArray(step.attempts) ? step.attempts : [];
  if (!attempts.length) return null;
  const picked = selectedAttempt && selectedAttempt.step === step.name
    ? attempts.find((a) => a.attempt === selectedAttempt.attempt && (a.shard ?? null) === selectedAttempt.shard)
    : null;
  const last = picked || attempts[attempts.length - 1];
  const running = last.status === "running";
  return { key: [run.id, step.name, last.attempt, last.shard ?? "", running ? "live" : "ended"].join("/"), last, running };
}

function showLog() {
  const pre = document.getElementById("log");
  if (!pre) return;
  // Rebuilt at each refresh: a reader at the end of a live log stays at its end.
  const atEnd = pre.dataset.filled !== "1" || pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = logState.text || logState.note;
  pre.dataset.filled = "1";
  if (atEnd && logState.key && logState.key.endsWith("/live")) pre.scrollTop = pre.scrollHeight;
}

function stopLog() {
  if (logState.controller) logState.controller.abort();
  logState = { key: null, text: "", note: "", controller: null };
}

function appendLog(text) {
  logState.text += text;
  if (logState.text.length > MAX_LOG_CHARS) {
    logState.text = "(… earlier output left out here: maoctl pipeline logs prints all of it)\n" + logState.text.slice(-MAX_LOG_CHARS);
  }
  showLog();
}

async function loadLog(run, step) {
  const found = logKey(run, step);
  if (!found) {
    if (logState.controller) logState.controller.abort();
    logState = { key: null, text: step.log_tail || "", note: ACTIVE.has(step.status) ? "(waiting for the step to start)" : "(no output)", controller: null };
    return;
  }
  if (found.key === logState.key) return;
  if (logState.controller) logState.controller.abort();
  const controller = new AbortController();
  logState = { key: found.key, text: "", note: found.running ? "(running: waiting for output)" : "(loading the log)", controller };
  const query = new URLSearchParams({ step: step.name, attempt: String(found.last.attempt) });
  if (found.last.shard != null) query.set("shard", String(found.last.shard));
  if (found.running) query.set("follow", "1");
  const headers = { Accept: "text/plain" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const mine = () => logState.controller === controller;
  try {
    const response = await fetch(`/runs/${encodeURIComponent(run.id)}/log?${query}`, { headers, credentials: "omit", cache: "no-store", signal: controller.signal });
    if (!response.ok) {
      let body = null;
      try {
        body = await response.json();
      } catch (_) {
        body = null;
      }
      if (mine()) {
        logState.text = step.log_tail || "";
        logState.note = (body && body.message) || `HTTP ${response.status}`;
        showLog();
      }
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (!mine()) return;
      if (done) break;
      appendLog(decoder.decode(value, { stream: true }));
    }
    appendLog(decoder.decode());
    if (!logState.text) logState.note = "(no output)";
    showLog();
  } catch (err) {
    if (mine() && err.name !== "AbortError") {
      logState.note = String(err.message || err);
      showLog();
    }
  }
}

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
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "group", "aria-label": "Steps of the run", class: "graph" });
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
      selectedAttempt = null;
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

async function retryRun(run, current) {
  const what = current ? "with the pipeline's current definition" : "with the version it ran";
  if (!(await confirmAction(`Retry run ${run.id.slice(0, 12)} of ${run.pipeline} from its failed step, ${what}? Steps that succeeded are reused.`))) return;
  let started;
  try {
    started = await api("POST", `/runs/${run.id}/retry`, current ? { definition: "current" } : {});
  } catch (err) {
    alertBox(err);
    return;
  }
  location.hash = `#/run/${started.id}`;
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
  const activeEl = document.activeElement;
  const focused = activeEl && (activeEl.id || activeEl.getAttribute("data-step"));
  // A focused timeline bar is found again by its step, attempt and shard after the refresh.
  const focusedBar = activeEl && activeEl.getAttribute("data-kind") === "attempt"
    ? `#timeline [data-kind="attempt"][data-step="${CSS.escape(activeEl.getAttribute("data-step"))}"][data-attempt="${activeEl.getAttribute("data-attempt")}"]${activeEl.getAttribute("data-shard") ? `[data-shard="${activeEl.getAttribute("data-shard")}"]` : ""}`
    : null;
  setView(
    h("p", {}, h("a", { href: "#/runs" }, "← Runs")),
    h("h1", {}, `Run ${run.id.slice(0, 12)} `, badge(run.status)),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Pipeline"), h("dd", {}, h("a", { href: `#/runs?pipeline=${encodeURIComponent(run.pipeline)}` }, run.pipeline)),
      versionFacts(run),
      h("dt", {}, "Trigger"), h("dd", {}, run.trigger, run.tick_at ? h("span", { class: "muted" }, ` (tick ${when(run.tick_at)})`) : null),
      run.retry_of ? [h("dt", {}, "Retry of"), h("dd", {}, h("a", { href: `#/run/${run.retry_of}`, class: "mono" }, short(run.retry_of)))] : null,
      h("dt", {}, "Queued"), h("dd", {}, run.started_at ? fmtDuration((ms(run.started_at) - ms(run.created_at)) / 1000) : ACTIVE.has(run.status) ? "waiting" : "—"),
      h("dt", {}, "Started"), h("dd", {}, when(run.started_at)),
      h("dt", {}, "Ended"), h("dd", {}, when(run.ended_at)),
      h("dt", {}, "Duration"), h("dd", {}, secs(run.duration)),
      run.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, run.error)] : null,
    ),
    runDiffSection(run),
    active && cancelSupported !== false
      ? h("p", {}, h("button", { id: "cancel-run", type: "button", class: "danger", onclick: () => cancelRun(run) }, "Cancel run"))
      : null,
    RETRYABLE.has(run.status) && retrySupported
      ? h(
          "p",
          {},
          h("button", { id: "retry-run", type: "button", onclick: () => retryRun(run, false) }, "Retry"),
          " ",
          h("button", { id: "retry-run-current", type: "button", onclick: () => retryRun(run, true) }, "Retry with the current definition"),
        )
      : null,
    h("p", { id: "action-error", class: "error", role: "alert" }),
    h("h2", {}, "Steps"),
    steps.length ? stepGraph(steps) : null,
    h("h2", {}, "Timeline"),
    h("div", { id: "timeline", class: "picture-box" }, runTimeline(run, (s, a) => {
      selectedStep = s.name;
      selectedAttempt = { step: s.name, attempt: a.attempt, shard: a.shard ?? null };
      renderRun(true);
    })),
    h(
      "table",
      { id: "steps" },
      h("thead", {}, h("tr", {}, ["Step", "Status", "Exit", "Attempts", "Ran on", "Duration", "Commits", ""].map((c) => h("th", { scope: "col" }, c)))),
      h(
        "tbody",
        {},
        steps.map((s) =>
          h(
            "tr",
            { class: s.name === selectedStep ? "selected" : null },
            h("td", {}, s.name, h("div", { class: "muted small" }, `${s.tool} → ${s.output_dataset}`)),
            h("td", {}, badge(s.status), s.reason ? h("div", { class: "muted small reason" }, s.reason) : null, s.error ? h("div", { class: "error small" }, s.error) : null),
            h("td", {}, s.exit_code ?? "—"),
            h("td", {}, Array.isArray(s.attempts) ? s.attempts.map((a, i) => h("span", { class: `badge s-${a.status}`, title: [a.error, ranOn(a)].filter(Boolean).join(" — ") }, `#${a.attempt ?? i + 1} ${a.status}`)) : "1"),
            h("td", { class: "ran-on" }, ranOnCell(s)),
            h("td", {}, secs(s.duration)),
            h("td", {}, commitChain(s)),
            h("td", {}, h("button", { type: "button", class: "log-button", "data-step": s.name, onclick: () => { selectedStep = s.name; selectedAttempt = null; renderRun(true); } }, "Log")),
          ),
        ),
      ),
    ),
    step
      ? h(
          "section",
          { id: "log-section", "aria-label": `Log of ${step.name}` },
          h("h2", {}, `Log of ${step.name}`, h("span", { class: "muted small" }, logKey(run, step) ? ` (attempt ${logKey(run, step).last.attempt}${logKey(run, step).last.shard != null ? `, shard ${logKey(run, step).last.shard}` : ""}; full log, secrets masked${logKey(run, step).running ? ", live" : ""})` : "")),
          h("pre", { id: "log", tabindex: 0 }),
        )
      : null,
  );
  if (step) {
    loadLog(run, step);
    showLog();
  }
  if (focusedBar && view().querySelector(focusedBar)) view().querySelector(focusedBar).focus();
  else if (focused) {
    const target = document.getElementById(focused) || view().querySelector(`svg.graph [data-step="${CSS.escape(focused)}"]`);
    if (target) target.focus();
  }
  if (active) refreshIn(renderRun);
  else stopRefresh();
}

