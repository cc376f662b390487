// Drawing helpers for the console's pictures: SVG elements built by hand (no library), time and
// duration formatting, a time axis, and "activate with click, Enter or Space" for focusable shapes.
// Loaded first; the views (runs.js, timeline.js, grid.js, lineage.js, pages.js) call these.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

// An SVG element; attribute values are set as attributes (never as style: the page's CSP allows no
// inline style), text as textContent.
function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    e.setAttribute(k, String(v));
  }
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

// A picture's root. `interactive`: it holds focusable shapes, so it is a labelled group (an "img"
// would hide them from assistive technology); otherwise one image with its label.
function svgRoot(width, height, label, cls, interactive = false) {
  return svgEl("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: interactive ? "group" : "img", "aria-label": label, class: cls });
}

// A <title> child: the tooltip a pointer shows and the name a screen reader reads.
function svgTitle(parent, text) {
  parent.append(svgEl("title", {}, text));
  return parent;
}

// Click, Enter and Space do the same; the element takes the focus (tabindex 0).
function activate(el, fn) {
  el.setAttribute("tabindex", "0");
  el.addEventListener("click", fn);
  el.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      fn(e);
    }
  });
  return el;
}

const ms = (iso) => (iso ? Date.parse(iso) : NaN);

// "14:05" today, "6 Dec" otherwise: an axis label that fits under a small chart.
function compactTime(value) {
  const t = new Date(typeof value === "number" ? value : ms(value));
  if (Number.isNaN(t.getTime())) return "—";
  const today = new Date().toDateString() === t.toDateString();
  return today
    ? t.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })
    : t.toLocaleDateString(undefined, { day: "numeric", month: "short" });
}

// "Mon 7 Dec, 02:00" in the reader's zone: compact enough for a picture's labels.
function shortTime(value) {
  const t = typeof value === "number" ? value : ms(value);
  if (Number.isNaN(t)) return "—";
  return new Date(t).toLocaleString(undefined, { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
}

// 0.4 s, 12 s, 3 min 20 s, 2 h 5 min
function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) {
    const m = Math.floor(s / 60);
    const rest = Math.round(s - m * 60);
    return rest ? `${m} min ${rest} s` : `${m} min`;
  }
  const hours = Math.floor(s / 3600);
  const m = Math.round((s - hours * 3600) / 60);
  return m ? `${hours} h ${m} min` : `${hours} h`;
}

// The tick spacing (seconds) that puts about `count` ticks on a span of `span` seconds.
function niceStep(span, count = 6) {
  const steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400, 172800, 604800];
  const raw = span / Math.max(1, count);
  return steps.find((s) => s >= raw) || steps[steps.length - 1];
}

// A horizontal axis along y: ticks every niceStep of [0, span] seconds, labelled "+12 s".
function timeAxis(g, x0, width, y, span, label = (t) => `+${fmtDuration(t)}`) {
  const step = niceStep(span, Math.max(2, Math.floor(width / 110)));
  g.append(svgEl("line", { x1: x0, y1: y, x2: x0 + width, y2: y, class: "axis" }));
  for (let t = 0; t <= span + 1e-9; t += step) {
    const x = x0 + (t / span) * width;
    g.append(svgEl("line", { x1: x, y1: y, x2: x, y2: y + 5, class: "axis" }));
    g.append(svgEl("text", { x, y: y - 5, class: "axis-label", "text-anchor": t === 0 ? "start" : "middle" }, label(t)));
  }
}

// The text width of a label at the pictures' font size, roughly (no layout pass needed).
const textWidth = (text, px = 13) => String(text).length * px * 0.6;

function clip(text, max) {
  const s = String(text);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}
