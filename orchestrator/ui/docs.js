// Renders /openapi.json as a readable page: operations by tag, their parameters, request body and
// answers, with the schemas they reference spelled out. Text only (textContent), no dependencies.
"use strict";

const TOKEN_KEY = "mao-token";

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function typeOf(schema, doc, depth = 0) {
  if (!schema) return "any";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.anyOf) return schema.anyOf.map((s) => typeOf(s, doc, depth)).join(" | ");
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.type === "array") return `${typeOf(schema.items, doc, depth)}[]`;
  if (schema.type === "object" && schema.additionalProperties) return `{string: ${typeOf(schema.additionalProperties, doc, depth)}}`;
  return schema.type || "any";
}

function refsIn(schema, found = new Set()) {
  if (!schema || typeof schema !== "object") return found;
  if (schema.$ref) found.add(schema.$ref.split("/").pop());
  for (const value of Object.values(schema)) if (value && typeof value === "object") refsIn(value, found);
  return found;
}

function schemaTable(name, doc) {
  const schema = doc.components.schemas[name];
  const required = new Set(schema.required || []);
  const rows = Object.entries(schema.properties || {}).map(([prop, s]) =>
    h("tr", {}, h("td", { class: "mono" }, prop, required.has(prop) ? " *" : ""), h("td", { class: "mono small" }, typeOf(s, doc)), h("td", { class: "small" }, s.description || (s.default !== undefined ? `default ${JSON.stringify(s.default)}` : ""))),
  );
  return h("div", { id: `schema-${name}` }, h("h4", {}, name), schema.description ? h("p", { class: "small muted" }, schema.description) : null,
    rows.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "field"), h("th", {}, "type"), h("th", {}, ""))), h("tbody", {}, rows)) : h("p", { class: "small muted" }, "any JSON object"));
}

function render(doc) {
  const byTag = new Map();
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push({ path, method, op });
    }
  }
  const toc = document.getElementById("toc");
  const out = document.getElementById("reference");
  toc.replaceChildren(h("p", {}, doc.info.description), h("ul", { class: "pills" }, [...byTag.keys()].map((t) => h("li", {}, h("a", { href: `#tag-${t}` }, t)))));
  out.replaceChildren(
    ...[...byTag.entries()].map(([tag, ops]) =>
      h("section", { id: `tag-${tag}` }, h("h2", {}, tag),
        ops.map(({ path, method, op }) => {
          const refs = new Set();
          if (op.requestBody) refsIn(op.requestBody, refs);
          for (const r of Object.values(op.responses)) refsIn(r.content, refs);
          for (const name of [...refs]) refsIn(doc.components.schemas[name], refs); // Run -> RunStep
          refs.delete("Error");
          // A body of another type (the staging upload's tarball) is named by its media type.
          const bodyType = op.requestBody ? Object.keys(op.requestBody.content)[0] : null;
          const body = bodyType === "application/json" ? op.requestBody.content[bodyType].schema : null;
          return h("article", { class: "card", id: op.operationId },
            h("h3", {}, h("span", { class: "badge" }, method.toUpperCase()), " ", h("code", {}, path)),
            h("p", {}, op.summary, op.security && op.security.length === 0 ? h("span", { class: "muted small" }, " (no token needed)") : ""),
            (op.parameters || []).length ? h("p", { class: "small" }, "Parameters: ", op.parameters.map((p) => h("span", { class: "label mono" }, `${p.name} (${p.in}${p.required ? ", required" : ""}): ${typeOf(p.schema, doc)}`))) : null,
            bodyType ? h("p", { class: "small" }, "Body: ", h("code", {}, body ? typeOf(body, doc) : bodyType)) : null,
            h("p", { class: "small" }, "Answers: ", Object.entries(op.responses).map(([status, r]) => {
              const content = r.content || {};
              const type = Object.keys(content)[0];
              return h("span", { class: "label" }, `${status} ${type === "application/json" ? typeOf(content[type].schema, doc) : type || ""}`.trim());
            })),
            [...refs].filter((n) => doc.components.schemas[n]).map((n) => schemaTable(n, doc)),
          );
        })),
    ),
  );
}

async function load() {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch("/openapi.json", { headers, credentials: "omit" });
  const form = document.getElementById("login-form");
  if (response.status === 401) {
    form.hidden = false;
    document.getElementById("login-error").textContent = token ? "The token was refused." : "";
    return;
  }
  form.hidden = true;
  render(await response.json());
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    load();
  });
  load();
});
