// scriptvisor console: plain JavaScript, no build step, no dependencies.
//
// Safe by construction:
// - every piece of text that comes from the server (script names, sources,
//   logs, results, errors) is written with textContent or .value, never
//   innerHTML, so a log line "<img src=x onerror=...>" is shown, not run;
// - the token lives in sessionStorage (this tab only) and goes out only as an
//   Authorization header: never in a cookie, a URL or a query string;
// - the page loads no script but this file (Content-Security-Policy).
"use strict";

(function () {
  const TOKEN_KEY = "scriptvisor.token";
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let me = null;            // {role, tenant}
  let current = null;       // tenant view state
  let operatorTimer = null;

  // -- DOM helpers (text only) ---------------------------------------------
  function el(tag, opts, ...children) {
    const node = document.createElement(tag);
    if (opts) {
      if (opts.cls) node.className = opts.cls;
      if (opts.text !== undefined && opts.text !== null) node.textContent = String(opts.text);
      if (opts.title) node.title = String(opts.title);
      if (opts.data) for (const [k, v] of Object.entries(opts.data)) node.dataset[k] = String(v);
      if (opts.onclick) node.addEventListener("click", opts.onclick);
      if (opts.type) node.type = opts.type;
    }
    for (const child of children) if (child) node.appendChild(child);
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function show(id, visible) { $(id).hidden = !visible; }
  function notice(text) {
    const n = $("notice");
    n.textContent = text || "";
    n.hidden = !text;
  }
  function fmtBytes(n) {
    if (n === null || n === undefined) return "-";
    return (n / (1024 * 1024)).toFixed(1) + " MiB";
  }
  function fmtTime(iso) { return iso ? iso.replace("T", " ").replace("Z", "") : ""; }

  // -- API -------------------------------------------------------------------
  async function api(method, path, body) {
    const headers = { "Authorization": "Bearer " + token };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    let data = null;
    const text = await resp.text();
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { raw: text }; }
    return { status: resp.status, data, text, headers: resp.headers };
  }
  function errorText(r) {
    const e = r.data && r.data.error;
    return e ? `${r.status} ${e.code}: ${e.message}` : `HTTP ${r.status}`;
  }
  const enc = encodeURIComponent;

  // -- sign in / routing -------------------------------------------------------
  async function signIn(newToken) {
    token = newToken;
    const r = await api("GET", "/v1/whoami");
    if (r.status !== 200) {
      $("login-error").textContent = r.status === 401 ? "This token is not valid here." : errorText(r);
      token = "";
      sessionStorage.removeItem(TOKEN_KEY);
      return false;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    me = r.data;
    $("who").textContent = me.role === "admin" ? "operator" : "tenant " + me.tenant;
    show("signout", true);
    buildNav();
    return true;
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    token = "";
    me = null;
    stopTenant();
    stopOperator();
    location.hash = "";
    location.reload();
  }

  function buildNav() {
    const nav = $("nav");
    clear(nav);
    if (me.role === "admin") {
      nav.appendChild(el("button", { cls: "link", text: "Operator", onclick: () => { location.hash = "#operator"; } }));
    } else {
      nav.appendChild(el("button", { cls: "link", text: "Scripts",
        onclick: () => { location.hash = "#tenant/" + me.tenant; } }));
    }
  }

  function route() {
    notice("");
    if (!me) {
      show("login", true); show("tenant-view", false); show("operator-view", false);
      return;
    }
    show("login", false);
    const hash = location.hash.replace(/^#/, "");
    const m = /^tenant\/([a-z0-9][a-z0-9_-]{0,62})$/.exec(hash);
    if (m) return openTenant(m[1]);
    if (hash === "operator" && me.role === "admin") return openOperator();
    location.hash = me.role === "admin" ? "#operator" : "#tenant/" + me.tenant;
  }

  // -- tenant view -------------------------------------------------------------
  function stopTenant() {
    if (current && current.stream) current.stream.abort();
    if (current && current.checkTimer) clearTimeout(current.checkTimer);
    current = null;
  }

  async function openTenant(name) {
    stopOperator();
    stopTenant();
    show("operator-view", false);
    const r = await api("GET", `/v1/tenants/${enc(name)}/scripts`);
    if (r.status !== 200) {
      show("tenant-view", false);
      notice(`Tenant ${name}: ${errorText(r)}`);
      return;
    }
    current = {
      tenant: name, info: r.data, script: null, sha: null, dirty: false, checkSeq: 0, checkTimer: null,
      stream: null, paused: false, held: [], lastEventId: null,
    };
    show("tenant-view", true);
    renderScriptList();
    renderOperations();
    $("editing-state").textContent = r.data.editing
      ? "Saving is enabled for this tenant: a save is checked first and the previous version is kept."
      : "Saving is off for this tenant (the operator enables it with [editing] enabled = true in tenant.toml).";
    $("save").disabled = !r.data.editing;
    $("try-timeout").placeholder = `tenant limit ${r.data.timeout}`;
    const first = r.data.scripts[0];
    if (first) await loadScript(first.name);
    startStream();
    refreshInvocations();
  }

  function renderScriptList() {
    const list = $("script-list");
    clear(list);
    for (const s of current.info.scripts) {
      const btn = el("button", { cls: "link" + (s.name === current.script ? " active" : ""), text: s.name,
        data: { script: s.name }, onclick: () => loadScript(s.name) });
      list.appendChild(el("li", null, btn));
    }
  }

  async function loadScript(name) {
    const r = await api("GET", `/v1/tenants/${enc(current.tenant)}/scripts/${enc(name)}`);
    if (r.status !== 200) { notice(errorText(r)); return; }
    current.script = name;
    current.sha = r.data.sha256;
    current.dirty = false;
    $("script-title").textContent = name + ".py";
    $("source").value = r.data.source;
    renderVersions(r.data.versions);
    renderScriptList();
    renderGutter([]);
    setCheckState("", "");
    clear($("problems"));
    $("save-state").textContent = "";
    scheduleCheck(0);
  }

  function renderGutter(problems) {
    const gutter = $("gutter");
    clear(gutter);
    const lines = $("source").value.split("\n").length;
    const bad = new Map();
    for (const p of problems) {
      const prev = bad.get(p.line);
      bad.set(p.line, prev ? prev + "\n" + p.message : p.message);
    }
    for (let i = 1; i <= lines; i++) {
      const d = el("div", { text: i, data: { line: i } });
      if (bad.has(i)) { d.className = "err"; d.title = bad.get(i); }
      gutter.appendChild(d);
    }
    gutter.scrollTop = $("source").scrollTop;
  }

  function setCheckState(text, cls) {
    const s = $("check-state");
    s.textContent = text;
    s.className = "pill" + (cls ? " " + cls : "");
  }

  function renderProblems(problems) {
    const ul = $("problems");
    clear(ul);
    for (const p of problems) {
      const li = el("li", { text: `line ${p.line}, column ${p.column}: ${p.message}`, data: { line: p.line },
        onclick: () => selectLine(p.line) });
      ul.appendChild(li);
    }
    renderGutter(problems);
    setCheckState(problems.length ? `${problems.length} problem${problems.length > 1 ? "s" : ""}` : "check ok",
      problems.length ? "bad" : "ok");
  }

  function selectLine(line) {
    const ta = $("source");
    const lines = ta.value.split("\n");
    let start = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
    ta.focus();
    ta.setSelectionRange(start, start + (lines[line - 1] || "").length);
  }

  function scheduleCheck(delay) {
    if (current.checkTimer) clearTimeout(current.checkTimer);
    current.checkTimer = setTimeout(runCheck, delay === undefined ? 350 : delay);
  }

  async function runCheck() {
    if (!current || !current.script) return;
    const seq = ++current.checkSeq;
    setCheckState("checking...", "");
    const r = await api("POST", `/v1/tenants/${enc(current.tenant)}/check`,
      { source: $("source").value, script: current.script });
    if (!current || seq !== current.checkSeq) return;  // a newer edit was checked since
    if (r.status === 429) { scheduleCheck(1000); return; }
    if (r.status !== 200) { setCheckState(errorText(r), "bad"); return; }
    renderProblems(r.data.problems);
  }

  function renderVersions(versions) {
    const ul = $("versions");
    clear(ul);
    if (!versions.length) { ul.appendChild(el("li", { cls: "muted", text: "none kept yet" })); return; }
    for (const v of versions) {
      const btn = el("button", { cls: "link", text: "Roll back", data: { version: v.version },
        onclick: () => rollback(v.version) });
      btn.disabled = !current.info.editing;
      ul.appendChild(el("li", { data: { version: v.version } },
        el("span", { text: `v${v.version} · ${fmtTime(v.saved_at)} · ${v.bytes} bytes · ${v.sha256.slice(0, 10)} ` }), btn));
    }
  }

  async function save() {
    const source = $("source").value;
    $("save-state").textContent = "saving...";
    const r = await api("PUT", `/v1/tenants/${enc(current.tenant)}/scripts/${enc(current.script)}`,
      { source, base_sha256: current.sha });
    if (r.status === 200) {
      current.sha = r.data.sha256;
      current.dirty = false;
      // name the node: with a folder per node a save changes that node only (docs/scaling.md)
      const node = r.headers.get("X-Scriptvisor-Node");
      const where = node ? ` on node ${node}` : "";
      $("save-state").textContent = r.data.kept_version
        ? `saved${where} (${r.data.sha256.slice(0, 10)}); the previous content is version ${r.data.kept_version}`
        : `saved${where} (${r.data.sha256.slice(0, 10)}); nothing changed`;
      renderVersions(r.data.versions);
      return;
    }
    if (r.status === 422 && r.data && r.data.error && r.data.error.problems) renderProblems(r.data.error.problems);
    $("save-state").textContent = "not saved: " + errorText(r);
  }

  async function rollback(version) {
    const r = await api("POST", `/v1/tenants/${enc(current.tenant)}/scripts/${enc(current.script)}/rollback`,
      { version });
    if (r.status !== 200) { $("save-state").textContent = "rollback failed: " + errorText(r); return; }
    await loadScript(current.script);
    $("save-state").textContent = `rolled back to version ${version}; the replaced content is version ${r.data.kept_version}`;
  }

  // -- try ---------------------------------------------------------------------
  function renderOperations() {
    const sel = $("op-select");
    clear(sel);
    for (const op of Object.keys(current.info.operations)) sel.appendChild(el("option", { text: op }));
    sel.onchange = renderOpArgs;
    renderOpArgs();
    $("try-op").disabled = !sel.options.length;
  }

  function renderOpArgs() {
    const box = $("op-args");
    clear(box);
    const op = $("op-select").value;
    for (const arg of (current.info.operations[op] || [])) {
      const id = "op-arg-" + arg;
      box.appendChild(el("label", { text: arg + " (JSON value)" }));
      const input = el("input");
      input.id = id;
      input.dataset.arg = arg;
      input.spellcheck = false;
      input.placeholder = arg === "user" ? '{"email": "...", "password": "..."}' : '"..."';
      box.appendChild(input);
    }
  }

  function showResponse(r, label) {
    $("try-status").textContent = `${label} → HTTP ${r.status}`;
    const dl = $("try-summary");
    clear(dl);
    const d = r.data || {};
    const rows = [
      ["ok", d.ok], ["result", d.result === undefined ? undefined : JSON.stringify(d.result)],
      ["error", d.error ? `${d.error.code}: ${d.error.message}` : (d.error === null ? "none" : undefined)],
      ["scripts_called", d.scripts_called ? d.scripts_called.join(" → ") : undefined],
      ["duration_ms", d.duration_ms], ["logs", d.logs ? d.logs.length + " line(s)" : undefined],
      ["invocation", r.headers.get("X-Invocation-Id")],
    ];
    for (const [k, v] of rows) {
      if (v === undefined || v === null) continue;
      dl.appendChild(el("dt", { text: k }));
      dl.appendChild(el("dd", { text: String(v), data: { key: k } }));
    }
    // the body exactly as the API returned it
    let pretty = r.text;
    try { pretty = JSON.stringify(JSON.parse(r.text), null, 2); } catch (e) { /* not JSON: show as is */ }
    $("try-output").textContent = pretty;
  }

  function parseJSON(text, what) {
    try { return { value: JSON.parse(text) }; } catch (e) { return { error: `${what} is not valid JSON: ${e.message}` }; }
  }

  async function tryScript() {
    const args = parseJSON($("try-args").value || "[]", "Arguments");
    if (args.error) { $("try-status").textContent = args.error; return; }
    const body = { args: args.value };
    const t = $("try-timeout").value;
    if (t) body.timeout = Number(t);
    $("try-status").textContent = "running...";
    const r = await api("POST", `/v1/tenants/${enc(current.tenant)}/scripts/${enc(current.script)}`, body);
    showResponse(r, current.script);
  }

  async function tryOperation() {
    const op = $("op-select").value;
    const args = [];
    for (const input of $("op-args").querySelectorAll("input")) {
      const v = parseJSON(input.value || "null", input.dataset.arg);
      if (v.error) { $("try-status").textContent = v.error; return; }
      args.push(v.value);
    }
    $("try-status").textContent = "running...";
    const r = await api("POST", `/v1/tenants/${enc(current.tenant)}/connection/${enc(op)}`, { args });
    showResponse(r, op);
  }

  // -- recent invocations -------------------------------------------------------
  async function refreshInvocations() {
    if (!current) return;
    const tenant = current.tenant;
    const r = await api("GET", `/v1/tenants/${enc(tenant)}/invocations`);
    if (!current || current.tenant !== tenant || r.status !== 200) return;
    const body = $("invocations");
    clear(body);
    for (const inv of r.data.invocations) {
      const row = el("tr", { data: { invocation: inv.invocation_id } },
        el("td", { text: fmtTime(inv.at) }),
        el("td", { text: (inv.kind === "connection" ? "⚙ " : "") + inv.name }),
        el("td", { text: inv.outcome, cls: inv.outcome === "ok" ? "code-ok" : "code-bad" }),
        el("td", { text: inv.status, cls: "num" }),
        el("td", { text: inv.duration_ms.toFixed(1), cls: "num" }));
      body.appendChild(row);
    }
  }

  // -- live logs (SSE read with fetch, so the token stays in a header) ----------
  function logLine(kind, parts) {
    const li = el("li", { cls: kind });
    for (const [cls, text] of parts) li.appendChild(el("span", { cls, text }));
    li.dataset.text = parts.map((p) => p[1]).join(" ").toLowerCase();
    return li;
  }

  function addLogLines(items) {
    if (!current) return;
    if (current.paused) {
      current.held.push(...items);
      $("log-pause").textContent = `Resume (${current.held.length} new)`;
      return;
    }
    const ol = $("log-lines");
    const atBottom = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 30;
    const filter = $("log-filter").value.toLowerCase();
    for (const li of items) {
      li.hidden = !!filter && !li.dataset.text.includes(filter);
      ol.appendChild(li);
    }
    while (ol.childNodes.length > 2000) ol.removeChild(ol.firstChild);
    if (atBottom) ol.scrollTop = ol.scrollHeight;
  }

  function onEvent(event, data) {
    const t = new Date().toISOString().slice(11, 23);
    const src = data.script || data.operation || "?";
    if (event === "start") {
      addLogLines([logLine("meta", [["t", t], ["src", src], ["", "started " + (data.invocation_id || "")]])]);
    } else if (event === "result") {
      const lines = (data.logs || []).map((line) => logLine("log", [["t", t], ["src", src], ["", line]]));
      const outcome = data.ok ? "ok" : (data.error && data.error.code) || "error";
      const msg = data.ok ? "" : " " + ((data.error && data.error.message) || "");
      lines.push(logLine(data.ok ? "res-ok" : "res-bad",
        [["t", t], ["src", src], ["", `${outcome} in ${Number(data.duration_ms || 0).toFixed(1)} ms${msg}`]]));
      if (data.dropped) lines.unshift(logLine("meta", [["t", t], ["", `${data.dropped} event(s) dropped`]]));
      addLogLines(lines);
      refreshInvocations();
    }
  }

  function setStreamState(text, cls) {
    const s = $("stream-state");
    s.textContent = text;
    s.className = "pill" + (cls ? " " + cls : "");
  }

  async function startStream() {
    const state = current;
    const ctrl = new AbortController();
    state.stream = ctrl;
    const headers = { "Authorization": "Bearer " + token, "Accept": "text/event-stream" };
    if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
    let resp;
    try {
      resp = await fetch(`/v1/tenants/${enc(state.tenant)}/logs`, { headers, signal: ctrl.signal, cache: "no-store",
        credentials: "omit" });
    } catch (e) {
      return retryStream(state);
    }
    if (resp.status !== 200) {
      setStreamState("stream: HTTP " + resp.status, "bad");
      // too many open streams (429) or a draining node (503) pass; a refused token does not
      if (resp.status === 429 || resp.status === 503) retryStream(state, 5000);
      return;
    }
    setStreamState("live", "ok");
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let event = "message", data = "";
          for (const line of frame.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
            else if (line.startsWith("id:")) state.lastEventId = line.slice(3).trim();
          }
          if (data) {
            try { onEvent(event, JSON.parse(data)); } catch (e) { /* a frame we do not understand */ }
          }
        }
      }
    } catch (e) { /* aborted or cut */ }
    retryStream(state);
  }

  function retryStream(state, delay) {
    if (current !== state || state.stream.signal.aborted) return;
    if (!delay) setStreamState("reconnecting", "bad");
    setTimeout(() => { if (current === state) startStream(); }, delay || 1000);
  }

  function togglePause() {
    if (!current) return;
    current.paused = !current.paused;
    $("log-pause").textContent = current.paused ? "Resume" : "Pause";
    if (!current.paused) {
      const held = current.held;
      current.held = [];
      addLogLines(held);
    }
  }

  function applyFilter() {
    const filter = $("log-filter").value.toLowerCase();
    for (const li of $("log-lines").children) li.hidden = !!filter && !li.dataset.text.includes(filter);
  }

  // -- operator view -------------------------------------------------------------
  function stopOperator() {
    if (operatorTimer) clearInterval(operatorTimer);
    operatorTimer = null;
  }

  async function openOperator() {
    stopTenant();
    stopOperator();
    show("tenant-view", false);
    show("operator-view", true);
    await refreshOperator();
    operatorTimer = setInterval(refreshOperator, 2000);
  }

  async function refreshOperator() {
    const [t, a] = await Promise.all([api("GET", "/v1/admin/tenants"), api("GET", "/v1/admin/activity")]);
    if (t.status !== 200) { notice(errorText(t)); stopOperator(); return; }
    renderTenants(t.data.tenants);
    if (a.status === 200) renderCharts(a.data);
    $("op-updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  function renderTenants(tenants) {
    const body = $("tenant-rows");
    clear(body);
    for (const t of tenants) {
      const e = t.last_error;
      const last = e ? `${e.code} (${e.script || e.operation || "?"}, ${new Date(e.ts * 1000).toISOString().slice(11, 19)}) ${e.message}` : "";
      const actions = el("td", { cls: "actions" });
      actions.appendChild(el("button", { cls: "link", text: "Scripts", data: { open: t.name },
        onclick: () => { location.hash = "#tenant/" + t.name; } }));
      actions.appendChild(el("span", { text: " " }));
      const rec = el("button", { cls: "danger", text: "Recycle workers", data: { recycle: t.name },
        onclick: () => recycle(t.name) });
      rec.disabled = t.state !== "ready";
      actions.appendChild(rec);
      const w = t.workers;
      body.appendChild(el("tr", { data: { tenant: t.name } },
        el("td", { text: t.name }),
        el("td", { text: t.state + (t.config_error ? ": " + t.config_error.message : ""), cls: "state-" + t.state }),
        el("td", { text: `${w.alive} (${w.busy} busy, ${w.idle} idle)` }),
        el("td", { text: w.queued, cls: "num" }),
        el("td", { text: last, cls: e ? "code-bad" : "" }),
        actions));
      if (t.processes.length) {
        const wt = el("table", { cls: "workers" },
          el("tr", null, ...["pid", "state", "age", "calls", "RSS", "USS"].map((h) => el("th", { text: h }))));
        for (const w of t.processes) {
          wt.appendChild(el("tr", { data: { pid: w.pid } },
            el("td", { text: w.pid }), el("td", { text: w.state }),
            el("td", { text: w.age_s === null ? "-" : Number(w.age_s).toFixed(0) + " s" }),
            el("td", { text: w.calls }), el("td", { text: fmtBytes(w.rss) }), el("td", { text: fmtBytes(w.uss) })));
        }
        const cell = el("td", null, wt);
        cell.colSpan = 6;
        body.appendChild(el("tr", { cls: "sub", data: { workersOf: t.name } }, cell));
      }
    }
  }

  async function recycle(name) {
    const r = await api("POST", `/v1/admin/tenants/${enc(name)}/recycle`);
    notice(r.status === 200 ? "" : errorText(r));
    await refreshOperator();
  }

  // -- charts (SVG built with DOM calls) ----------------------------------------
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f8a4c", "#c0392b", "#b7791f", "#7d3cbd", "#2f5bd3", "#16a3a3", "#e67e22", "#7f8c8d"];
  function svg(tag, attrs) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
    return n;
  }
  function legend(id, entries) {
    const box = $(id);
    clear(box);
    for (const [name, color] of entries) {
      const sw = el("span", { cls: "sw" });
      sw.style.background = color;  // CSSOM, allowed by the CSP (no style attribute in markup)
      box.appendChild(el("span", null, sw, document.createTextNode(name)));
    }
  }

  function axis(chart, W, H, P, series) {
    const minutes = Math.round((series.buckets.length * series.bucket_seconds) / 60);
    for (const [x, anchor, label] of [[P, "start", `-${minutes} min`], [W - 2, "end", "now"]]) {
      const t = svg("text", { x, y: H - 3, "font-size": 10, fill: "#667", "text-anchor": anchor });
      t.textContent = label;
      chart.appendChild(t);
    }
  }

  function renderCharts(series) {
    const buckets = series.buckets;
    const W = 600, H = 180, P = 28;
    const n = buckets.length;
    const bw = (W - P) / n;
    // outcomes: stacked bars, "ok" first
    const names = new Set();
    for (const b of buckets) for (const k of Object.keys(b.outcomes)) names.add(k);
    const order = ["ok", ...[...names].filter((k) => k !== "ok").sort()].filter((k) => names.has(k));
    const color = (k, i) => (k === "ok" ? COLORS[0] : COLORS[1 + (i % (COLORS.length - 1))]);
    const maxCount = Math.max(1, ...buckets.map((b) => b.count));
    const c1 = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
    c1.appendChild(svg("line", { x1: P, y1: H - 16, x2: W, y2: H - 16, stroke: "#ccd" }));
    const t1 = svg("text", { x: 2, y: 12, "font-size": 10, fill: "#667" });
    t1.textContent = String(maxCount);
    c1.appendChild(t1);
    buckets.forEach((b, i) => {
      let y = H - 16;
      order.forEach((k, j) => {
        const v = b.outcomes[k] || 0;
        if (!v) return;
        const h = (v / maxCount) * (H - 30);
        y -= h;
        const r = svg("rect", { x: P + i * bw, y, width: Math.max(1, bw - 1), height: h, fill: color(k, j - 1) });
        const tip = svg("title");
        tip.textContent = `${b.start} ${k}: ${v}`;
        r.appendChild(tip);
        c1.appendChild(r);
      });
    });
    axis(c1, W, H, P, series);
    const out = $("chart-outcomes");
    clear(out);
    out.appendChild(c1);
    legend("legend-outcomes", order.map((k, j) => [k, color(k, j - 1)]));
    // latency: one log-scale line per percentile
    const keys = ["p50", "p90", "p99"];
    const lcol = { p50: "#2f5bd3", p90: "#b7791f", p99: "#c0392b" };
    const vals = buckets.flatMap((b) => keys.map((k) => b.latency_ms[k]).filter((v) => v));
    const lo = Math.log10(Math.max(0.01, Math.min(...vals, 1)));
    const hi = Math.log10(Math.max(...vals, 10)) + 0.1;
    const yOf = (v) => H - 16 - ((Math.log10(v) - lo) / (hi - lo)) * (H - 30);
    const c2 = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
    c2.appendChild(svg("line", { x1: P, y1: H - 16, x2: W, y2: H - 16, stroke: "#ccd" }));
    for (const tick of [0.1, 1, 10, 100, 1000, 10000]) {
      if (Math.log10(tick) < lo || Math.log10(tick) > hi) continue;
      const y = yOf(tick);
      c2.appendChild(svg("line", { x1: P, y1: y, x2: W, y2: y, stroke: "#eef" }));
      const tt = svg("text", { x: 2, y: y + 3, "font-size": 10, fill: "#667" });
      tt.textContent = String(tick);
      c2.appendChild(tt);
    }
    for (const k of keys) {
      let d = "";
      buckets.forEach((b, i) => {
        const v = b.latency_ms[k];
        if (!v) return;
        d += (d ? " L" : "M") + (P + i * bw + bw / 2).toFixed(1) + " " + yOf(v).toFixed(1);
      });
      if (d) c2.appendChild(svg("path", { d, fill: "none", stroke: lcol[k], "stroke-width": 2 }));
      buckets.forEach((b, i) => {
        const v = b.latency_ms[k];
        if (v) c2.appendChild(svg("circle", { cx: P + i * bw + bw / 2, cy: yOf(v), r: 2, fill: lcol[k] }));
      });
    }
    axis(c2, W, H, P, series);
    const lat = $("chart-latency");
    clear(lat);
    lat.appendChild(c2);
    legend("legend-latency", keys.map((k) => [k, lcol[k]]));
  }

  // -- wiring ----------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", async () => {
    $("signin").addEventListener("click", async () => {
      if (await signIn($("token").value.trim())) { $("token").value = ""; route(); }
    });
    $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") $("signin").click(); });
    $("signout").addEventListener("click", signOut);
    $("source").addEventListener("input", () => {
      if (!current) return;
      current.dirty = true;
      renderGutter([]);
      setCheckState("editing", "");
      scheduleCheck();
    });
    $("source").addEventListener("scroll", () => { $("gutter").scrollTop = $("source").scrollTop; });
    $("source").addEventListener("keydown", (e) => {
      if (e.key === "Tab") {  // indent instead of leaving the editor
        e.preventDefault();
        const ta = e.target, s = ta.selectionStart;
        ta.setRangeText("    ", s, ta.selectionEnd, "end");
        ta.dispatchEvent(new Event("input"));
      }
    });
    $("save").addEventListener("click", save);
    $("try-script").addEventListener("click", tryScript);
    $("try-op").addEventListener("click", tryOperation);
    $("log-pause").addEventListener("click", togglePause);
    $("log-clear").addEventListener("click", () => clear($("log-lines")));
    $("log-filter").addEventListener("input", applyFilter);
    window.addEventListener("hashchange", route);
    if (token) await signIn(token);
    route();
  });
})();
