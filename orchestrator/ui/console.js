// The MAO web console: vanilla JS, no dependencies, no build step.
// Every value from the API is put on the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "mao-token";
const REFRESH_MS = 2000;
const ACTIVE = new Set(["pending", "queued", "running", "retrying"]);
const RUN_STATES = ["pending", "queued", "running", "succeeded", "failed", "cancelled"];
const TRIGGERS = ["manual", "cron", "backfill", "dataset", "retry"];
const RETRYABLE = new Set(["failed", "cancelled"]);
let refreshTimer = null;
let generation = 0; // bumped at every navigation: an answer for an earlier view is dropped
let cancelSupported = null; // unknown until the first answer of POST /runs/{id}/cancel
let retrySupported = null; // whether this instance's API has POST /runs/{id}/retry

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
  for (const child of children.flat(Infinity)) {
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
// This instance's name, as GET / said at sign-in.
const instanceName = () => document.getElementById("instance").dataset.name || "";
// The pipeline version a run ran with, once the API records one (null before that).
const versionOf = (run) => (run && run.version !== undefined && run.version !== null ? String(run.version) : null);

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

async function checkToken() {
  // GET / answers without a token (liveness), so it proves nothing: the OpenAPI document needs the
  // token (a wrong one is a 401 here) and lists every route (no cancel route, no cancel button).
  const doc = await api("GET", "/openapi.json");
  cancelSupported = Boolean(doc.paths && doc.paths["/runs/{id}/cancel"]);
  retrySupported = Boolean(doc.paths && doc.paths["/runs/{id}/retry"]);
  const hello = await api("GET", "/");
  document.getElementById("instance").textContent = `${hello.instance} · ${hello.version}`;
  document.getElementById("instance").dataset.name = hello.instance;
}

async function signIn(event) {
  event.preventDefault();
  const token = document.getElementById("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await checkToken();
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

// -- routing ------------------------------------------------------------------------------------
const VIEWS = {
  runs: renderRuns,
  run: renderRun,
  grid: renderGrid,
  pipelines: renderPipelines,
  lineage: renderLineage,
  tools: renderTools,
  tool: renderTool,
  queue: renderQueue,
  backfills: renderBackfills,
  versions: renderVersions,
  schedules: renderSchedules,
  federation: renderFederation,
  datasets: renderDatasets,
};
// A view reached from another's link keeps that one's tab marked (a run from the runs, a tool from the tools).
const PARENT_VIEW = { run: "runs", tool: "tools", versions: "pipelines" };

function route() {
  stopRefresh();
  stopLog(); // runs.js: a followed log of the page left behind is closed
  generation += 1;
  if (!sessionStorage.getItem(TOKEN_KEY) && sessionStorage.getItem(TOKEN_KEY) !== "") {
    showLogin();
    return;
  }
  const name = (location.hash.replace(/^#\//, "").split(/[/?]/)[0] || "runs").toLowerCase();
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    link.toggleAttribute("aria-current", link.dataset.view === name || PARENT_VIEW[name] === link.dataset.view);
  }
  if (name !== "run") {
    selectedStep = null;
    selectedAttempt = null;
  }
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
  checkToken()
    .then(route)
    .catch(() => {});
});
