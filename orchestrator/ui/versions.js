// Pipeline versions in the console: the version a run ran with and, on request, what changed (on the
// run's page), and a pipeline's versions with the difference between any two (#/versions/<name>).
// Loaded before console.js, which holds the helpers (api, h, ...) these call and the routing.
"use strict";

const jsonText = (value) => (value === null || value === undefined ? "—" : typeof value === "string" ? value : JSON.stringify(value));

// The difference as the API answers it (GET /pipeline/{name}/versions/{n}/diff): a sentence, a table
// by step and field, and the unified text with its lines coloured.
function diffView(diff) {
  const title = diff.against === null ? `Version ${diff.version} (compared with nothing)` : `Version ${diff.against} → ${diff.version}`;
  const rows = [
    ...diff.pipeline_fields.map((f) => ({ step: "(pipeline)", change: "changed", f })),
    ...diff.steps.flatMap((s) =>
      (s.fields.length ? s.fields : [{ field: "position", before: s.position_before, after: s.position_after }]).map((f, i) => ({ step: i ? "" : s.step, change: i ? "" : s.change, f, kind: s.change }))),
  ];
  return h(
    "section",
    { id: "version-diff", class: "card", "data-version": diff.version, "data-against": diff.against === null ? "" : diff.against, "aria-label": title },
    h("h2", {}, title),
    h("p", { class: diff.same ? "muted" : null, id: "diff-summary" }, diff.same ? "The same definition." : diff.summary),
    rows.length
      ? h("table", { id: "diff-fields", class: "small" },
          h("thead", {}, h("tr", {}, ["Step", "Change", "Field", "Before", "After"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, rows.map((r) => h("tr", { "data-step": r.step || null, "data-change": r.change || null, "data-field": r.f.field },
            h("td", {}, r.step), h("td", { class: r.kind ? `ch-${r.kind}` : null }, r.change), h("td", { class: "mono" }, r.f.field),
            h("td", { class: "mono small" }, jsonText(r.f.before)), h("td", { class: "mono small" }, jsonText(r.f.after))))))
      : null,
    diff.unified
      ? h("pre", { class: "diff", tabindex: 0, "aria-label": "unified diff" }, diff.unified.split("\n").map((line) =>
          h("span", { class: line.startsWith("@@") ? "d-hunk" : line.startsWith("+") ? "d-add" : line.startsWith("-") ? "d-del" : null }, `${line}\n`)))
      : null,
  );
}

// -- on a run's page ------------------------------------------------------------------------------
// The difference asked for on a run's page, kept across the page's refreshes: {run, version, against, diff | error}.
let runDiff = null;

async function showRunDiff(run, version, against) {
  const path = `/pipeline/${encodeURIComponent(run.pipeline)}/versions/${version}/diff${against ? `?against=${against}` : ""}`;
  runDiff = { run: run.id, version, against, diff: null, error: null };
  try {
    runDiff.diff = await api("GET", path);
  } catch (err) {
    runDiff.error = err;
  }
  renderRun(true);
}

async function compareWithCurrent(run) {
  try {
    const [newest] = await api("GET", `/pipeline/${encodeURIComponent(run.pipeline)}/versions?limit=1`);
    await showRunDiff(run, newest.version, Number(versionOf(run)));
  } catch (err) {
    runDiff = { run: run.id, error: err };
    renderRun(true);
  }
}

// The run page's Version fact: the number, and the buttons that ask for a difference.
function versionFacts(run) {
  const v = versionOf(run);
  if (v === null) return null;
  const n = Number(v);
  return [
    h("dt", {}, "Version"),
    h("dd", {},
      h("span", { id: "run-version" }, v), " ",
      n > 1 ? h("button", { type: "button", id: "diff-previous", class: "small", onclick: () => showRunDiff(run, n, n - 1) }, `What changed in version ${n}`) : null, " ",
      h("button", { type: "button", id: "diff-current", class: "small", onclick: () => compareWithCurrent(run) }, "Compare with the current version"), " ",
      h("a", { href: `#/versions/${encodeURIComponent(run.pipeline)}`, class: "small" }, "all versions")),
  ];
}

function runDiffSection(run) {
  if (!runDiff || runDiff.run !== run.id) return null;
  if (runDiff.error) return h("section", { id: "version-diff" }, errorBox(runDiff.error));
  if (!runDiff.diff) return h("p", { id: "version-diff", class: "muted" }, "Loading the difference…");
  return diffView(runDiff.diff);
}

// -- a pipeline's versions (#/versions/<name>?diff=N&against=M) -----------------------------------
async function renderVersions() {
  const gen = generation;
  const name = decodeURIComponent(location.hash.split("/")[2] || "").split("?")[0];
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  let versions, diff = null, problem = null;
  try {
    versions = await api("GET", `/pipeline/${encodeURIComponent(name)}/versions?limit=200`);
    if (params.get("diff")) {
      const against = params.get("against") ? `?against=${encodeURIComponent(params.get("against"))}` : "";
      diff = await api("GET", `/pipeline/${encodeURIComponent(name)}/versions/${encodeURIComponent(params.get("diff"))}/diff${against}`).catch((err) => {
        problem = err;
        return null;
      });
    }
  } catch (err) {
    if (gen === generation) setView(h("p", {}, h("a", { href: "#/pipelines" }, "← Pipelines")), h("h1", {}, `Versions of ${name}`), errorBox(err));
    return;
  }
  if (gen !== generation) return;
  const link = (n, against) => `#/versions/${encodeURIComponent(name)}?diff=${n}${against ? `&against=${against}` : ""}`;
  const current = versions.find((v) => v.current);
  setView(
    h("p", {}, h("a", { href: "#/pipelines" }, "← Pipelines")),
    h("h1", {}, `Versions of ${name}`),
    h("p", { class: "muted small" }, "Each init that changed the pipeline recorded a version. A run ran with the version shown on its page; POST /pipeline/run {name, version} (maoctl pipeline run --version) runs an earlier one."),
    h("table", { id: "versions" },
      h("thead", {}, h("tr", {}, ["Version", "Created", "By", "Hash", "Changes", ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, versions.map((v) => h("tr", { "data-version": v.version, class: v.current ? "selected" : null },
        h("td", {}, String(v.version), v.current ? h("span", { class: "badge s-succeeded" }, "current") : null),
        h("td", {}, when(v.created_at)),
        h("td", {}, v.created_by || "—"),
        h("td", { class: "mono small", title: v.hash }, short(v.hash)),
        h("td", { class: "small" }, v.changes || "—"),
        h("td", { class: "nowrap" },
          v.version > 1 ? h("a", { href: link(v.version, v.version - 1), class: "small" }, "changes") : null,
          current && !v.current ? [" · ", h("a", { href: link(current.version, v.version), class: "small" }, "to current")] : null))))),
    problem ? errorBox(problem) : null,
    diff ? diffView(diff) : null,
  );
}
