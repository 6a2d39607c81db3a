// The /docs page's renderer (engine/server/docs.html): a static file, so the page
// runs under the console's Content-Security-Policy (no inline script or style).
"use strict";
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
function code(text) { return el("code", {}, text); }
function refName(ref) { return ref.split("/").pop(); }
function typeOf(schema) {
  if (!schema) return "";
  if (schema.$ref) return refName(schema.$ref);
  if (schema.oneOf) return schema.oneOf.map(typeOf).join(" | ");
  if (schema.type === "array") return typeOf(schema.items) + "[]";
  if (Array.isArray(schema.type)) return schema.type.join(" | ");
  if (schema.enum) return schema.enum.map(x => JSON.stringify(x)).join(" | ");
  return schema.type || "object";
}
function schemaLink(schema) {
  const t = typeOf(schema);
  return schema && schema.$ref ? el("a", {href: "#schema-" + t}, t) : code(t);
}
function responses(op) {
  const table = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning"), el("th", {}, "body")));
  for (const [status, r] of Object.entries(op.responses || {})) {
    const content = r.content || {};
    const media = Object.keys(content)[0];
    const body = media ? el("span", {}, code(media), " ", schemaLink(content[media].schema)) : "";
    const headers = Object.keys(r.headers || {});
    table.append(el("tr", {}, el("td", {}, code(status)),
      el("td", {}, r.description || "", headers.length ? el("div", {class: "muted"}, "headers: " + headers.join(", ")) : ""),
      el("td", {}, body)));
  }
  return table;
}
function operation(path, method, op) {
  const box = el("div", {class: "op", id: op.operationId || (method + path)});
  box.append(el("div", {}, el("span", {class: "method " + method}, method), " ", code(path), " ",
                el("span", {class: "muted"}, op.summary || "")));
  if (op.description) box.append(el("p", {}, op.description));
  const params = op.parameters || [];
  if (params.length) {
    const t = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "")));
    for (const p of params) t.append(el("tr", {}, el("td", {}, code(p.name)), el("td", {}, p.in),
      el("td", {}, typeOf(p.schema) + (p.schema && p.schema.pattern ? " " + p.schema.pattern : "")), el("td", {}, p.description || "")));
    box.append(t);
  }
  if (op.requestBody) {
    const media = Object.keys(op.requestBody.content || {})[0];
    box.append(el("p", {}, "Request body: ", code(media || ""), " ", schemaLink(op.requestBody.content[media].schema)));
  }
  const auth = op.security && op.security.length === 0 ? "no token needed" : "Authorization: Bearer <token>";
  box.append(el("p", {class: "muted"}, auth));
  box.append(responses(op));
  return box;
}
function schemaBlock(name, schema) {
  const box = el("details", {id: "schema-" + name}, el("summary", {}, code(name), " ",
                 el("span", {class: "muted"}, schema.description || typeOf(schema))));
  const props = schema.properties || {};
  if (Object.keys(props).length) {
    const required = new Set(schema.required || []);
    const t = el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "")));
    for (const [k, v] of Object.entries(props)) t.append(el("tr", {},
      el("td", {}, code(k), required.has(k) ? " *" : ""), el("td", {}, schemaLink(v)), el("td", {}, v.description || "")));
    box.append(t);
  }
  box.append(el("pre", {}, JSON.stringify(schema, null, 2)));
  return box;
}
fetch("openapi.json").then(r => r.json()).then(spec => {
  document.getElementById("title").textContent = spec.info.title + " (version " + spec.info.version + ")";
  document.getElementById("description").textContent = spec.info.description || "";
  const paths = document.getElementById("paths");
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) paths.append(operation(path, method, op));
  }
  const schemas = document.getElementById("schemas");
  for (const [name, schema] of Object.entries((spec.components || {}).schemas || {})) schemas.append(schemaBlock(name, schema));
  document.body.setAttribute("data-rendered", String(Object.keys(spec.paths).length));
}).catch(err => { document.getElementById("error").textContent = "could not load openapi.json: " + err; });
