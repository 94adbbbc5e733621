// Prism node console: the data owner's screen, a thin client of this node's admin API (/v1).
//
// Every action is one admin API call, and every error shown is the API's own `error.message`.
// Strings from the API (queries and user names the coordinator forwarded among them) reach the
// DOM only through textContent (the `el` helper); nothing here assigns innerHTML.
"use strict";

(() => {
  const TOKEN_KEY = "prism.node-console.token";
  const POLL_MS = 10000;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  // ---------- DOM helpers ----------

  /** Creates an element; `props` sets className/text/attributes; children are nodes or text. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "className") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "hidden") node.hidden = Boolean(value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function show(node, text) {
    node.textContent = text;
    node.hidden = false;
  }

  function hide(node) {
    node.textContent = "";
    node.hidden = true;
  }

  function fmtNum(x) {
    if (typeof x !== "number" || !Number.isFinite(x)) return x === null || x === undefined ? "—" : String(x);
    if (Number.isInteger(x)) return String(x);
    return String(Number(x.toPrecision(6)));
  }

  function badge(word, extra) {
    const w = String(word || "unknown");
    return el("span", { className: "badge " + w.replace(/\s+/g, "-") + (extra ? " " + extra : ""), text: w });
  }

  /** A definition list from [term, value-node-or-text, className] rows (empty values skipped). */
  function facts(rows) {
    const dl = el("dl", { className: "facts" });
    for (const [term, value, cls] of rows) {
      if (value === undefined || value === null || value === "") continue;
      dl.append(el("dt", { text: term }), el("dd", { className: cls }, value));
    }
    return dl;
  }

  function who(by) {
    if (!by || !by.user) return "not forwarded by the coordinator";
    return by.organization ? by.user + " (" + by.organization + ")" : by.user + " (no organization)";
  }

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** Calls the admin API; resolves to the JSON body on 2xx, rejects with the API's error. */
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, "network_error", "this node could not be reached (" + e.message + ")");
    }
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (resp.ok) return data;
    const err = data && data.error;
    if (err && typeof err.message === "string") {
      if (resp.status === 401) signedOut(err.message);
      throw new ApiError(resp.status, err.code, err.message);
    }
    throw new ApiError(resp.status, "http_" + resp.status,
      "HTTP " + resp.status + (text ? ": " + text.slice(0, 300) : " with an empty body"));
  }

  // ---------- session ----------

  const state = { poll: null, loaded: {}, activityBefore: null, verifySeq: 0 };

  async function signIn(token) {
    hide($("signin-error"));
    sessionStorage.setItem(TOKEN_KEY, token);
    let status;
    try {
      status = await api("GET", "/v1/status");
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      show($("signin-error"), e.message);
      return;
    }
    $("signin-panel").hidden = true;
    $("app").hidden = false;
    $("session").hidden = false;
    renderStatus(status);
    state.loaded = {};
    clearInterval(state.poll);
    state.poll = setInterval(pollPending, POLL_MS);
    selectTab(location.hash.replace("#", "") || "requests");
    pollPending();
  }

  function renderStatus(status) {
    $("node-org").textContent = status.org;
    const link = $("node-link");
    link.textContent = status.connected ? "connected" : "coordinator offline";
    link.className = "badge " + (status.connected ? "attested" : "declined");
  }

  function signedOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearInterval(state.poll);
    for (const id of ["requests-list", "datasets-list", "activity-list"]) $(id).replaceChildren();
    for (const id of ["requests-error", "datasets-error", "datasets-note", "activity-error", "audit-verify"]) hide($(id));
    $("pending-badge").hidden = true;
    $("activity-more").hidden = true;
    $("app").hidden = true;
    $("session").hidden = true;
    $("signin-panel").hidden = false;
    $("token").value = "";
    if (message) show($("signin-error"), message);
    else hide($("signin-error"));
  }

  // ---------- tabs (click, or arrow keys between them) ----------

  const TABS = ["requests", "datasets", "activity"];

  function selectTab(name, focus) {
    if (!TABS.includes(name)) name = "requests";
    for (const t of TABS) {
      const tab = $("tab-" + t);
      $("panel-" + t).hidden = t !== name;
      tab.classList.toggle("active", t === name);
      tab.setAttribute("aria-selected", String(t === name));
      tab.tabIndex = t === name ? 0 : -1;
    }
    if (focus) $("tab-" + name).focus();
    if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
    if (!state.loaded[name]) {
      state.loaded[name] = true;
      if (name === "requests") loadRequests();
      if (name === "datasets") loadDatasets();
      if (name === "activity") loadActivity(true);
    }
  }

  // ---------- requests ----------

  function setPending(n) {
    const b = $("pending-badge");
    b.textContent = String(n);
    b.hidden = !(n > 0);
    b.setAttribute("aria-label", n + " pending");
  }

  async function pollPending() {
    try {
      const r = await api("GET", "/v1/requests");
      setPending(r.pending);
    } catch (_) {
      // The next poll or an explicit refresh shows the error.
    }
  }

  async function loadRequests() {
    const list = $("requests-list");
    hide($("requests-error"));
    let r;
    try {
      r = await api("GET", "/v1/requests");
    } catch (e) {
      show($("requests-error"), e.message);
      return;
    }
    setPending(r.pending);
    list.replaceChildren();
    if (!r.requests.length) {
      list.append(el("p", { className: "empty", text: "No data room has invited this node yet." }));
      return;
    }
    for (const q of r.requests) list.append(requestCard(q));
  }

  function changesTable(changes) {
    const rows = changes.map((c) => el("tr", { dataset: { field: c.field } },
      el("th", { text: c.field }),
      el("td", { className: "before mono", text: JSON.stringify(c.before) }),
      el("td", { className: "after mono", text: JSON.stringify(c.after) })));
    return el("table", { className: "changes" },
      el("thead", null, el("tr", null, el("th", { text: "changed" }), el("th", { text: "before" }), el("th", { text: "now" }))),
      el("tbody", null, ...rows));
  }

  function requestCard(q) {
    const card = el("article", { className: "request", dataset: { roomId: q.room_id, status: q.status } });
    const keys = q.group_keys && q.group_keys.length
      ? q.key_count + " — " + q.group_keys.map((k, i) => (q.group_by[i] || "key") + ": " + k.join(", ")).join("; ")
      : "1 (no GROUP BY)";
    card.append(
      el("div", { className: "head" },
        el("h3", { className: "mono", text: q.room_id }),
        badge(q.status, "status")),
      el("pre", { className: "sql", text: q.query }),
      facts([
        ["Requested by", who(q.requested_by), "requested-by"],
        ["Dataset", q.dataset + (q.dataset_held ? "" : " (not held by this node)"), "dataset-name"],
        ["Release mode", q.release, "release"],
        ["ε charged to this node", q.epsilon === null ? "none (no noise is added here)" : fmtNum(q.epsilon), "epsilon"],
        ["Group keys", keys, "group-keys"],
        ["Participants", q.participants.join(", "), "participants"],
        ["Expires", q.expires_at + (q.expired ? " (expired)" : ""), "expiry"],
        ["Manifest hash", q.manifest_hash, "mono hash"],
        ["What leaves this node", q.leaves, "leaves"],
        ["Reason", q.reason, "reason"],
      ]));
    if (q.previous) {
      card.append(el("h4", { text: "Changed from the manifest received " + q.previous.received_at + " (" + q.previous.status + ")" }));
      card.append(q.changes.length ? changesTable(q.changes) : el("p", { className: "muted", text: "No field the owner compares differs." }));
    }
    const error = el("p", { className: "error request-error", role: "alert", hidden: true });
    const actions = el("div", { className: "actions" });
    if (q.status === "pending" || q.status === "withdrawn") {
      const attest = el("button", { type: "button", className: "attest", text: "Attest" });
      attest.addEventListener("click", () => decide(card, error, "attest"));
      const reason = el("input", { type: "text", className: "decline-reason", "aria-label": "Reason for declining", placeholder: "why (shown to the analyst)" });
      const decline = el("button", { type: "button", className: "decline secondary", text: "Decline" });
      decline.addEventListener("click", () => decide(card, error, "decline", { reason: reason.value.trim() || undefined }));
      actions.append(attest, reason, decline);
    } else if (q.status === "attested") {
      const withdraw = el("button", { type: "button", className: "withdraw secondary", text: "Withdraw attestation" });
      withdraw.addEventListener("click", () => decide(card, error, "withdraw"));
      actions.append(withdraw);
    }
    card.append(actions, error);
    return card;
  }

  async function decide(card, error, action, body) {
    hide(error);
    for (const b of card.querySelectorAll("button")) b.disabled = true;
    try {
      await api("POST", "/v1/invitations/" + encodeURIComponent(card.dataset.roomId) + "/" + action, body || {});
      const fresh = await api("GET", "/v1/requests/" + encodeURIComponent(card.dataset.roomId));
      card.replaceWith(requestCard(fresh));
      pollPending();
      state.loaded.activity = false;
      state.loaded.datasets = false;
    } catch (e) {
      for (const b of card.querySelectorAll("button")) b.disabled = false;
      show(error, e.message);
    }
  }

  // ---------- datasets ----------

  async function loadDatasets() {
    const list = $("datasets-list");
    hide($("datasets-error"));
    hide($("datasets-note"));
    let datasets;
    try {
      datasets = await api("GET", "/v1/datasets");
    } catch (e) {
      show($("datasets-error"), e.message);
      return;
    }
    list.replaceChildren();
    if (!datasets.length) {
      list.append(el("p", { className: "empty", text: "No dataset is imported yet (prism-node import)." }));
      return;
    }
    datasets.sort((a, b) => a.name.localeCompare(b.name));
    for (const d of datasets) list.append(datasetCard(d));
  }

  function budgetTable(b) {
    const row = (what, e, d) => el("tr", { className: what.toLowerCase() },
      el("th", { text: what }), el("td", { className: "num epsilon", text: fmtNum(e) }), el("td", { className: "num delta", text: fmtNum(d) }));
    return el("table", { className: "budget" },
      el("thead", null, el("tr", null, el("th", { text: "" }), el("th", { text: "ε" }), el("th", { text: "δ" }))),
      el("tbody", null,
        row("Total", b.total_epsilon, b.total_delta),
        row("Spent", b.spent_epsilon, b.spent_delta),
        row("Reserved", b.reserved_epsilon, b.reserved_delta),
        row("Remaining", b.remaining_epsilon, b.remaining_delta)));
  }

  /** Spend over time: cumulative ε spent (line) against the total in force (dashed). */
  function spendChart(points) {
    const box = el("figure", { className: "chart", dataset: { points: String(points.length) } });
    if (!points.length) {
      box.append(el("figcaption", { className: "muted", text: "Nothing has been charged to this dataset yet." }));
      return box;
    }
    const W = 600, H = 160, P = 28;
    const top = Math.max(...points.map((p) => Math.max(p.spent_epsilon, p.total_epsilon)), 1e-9);
    const x = (i) => P + (points.length === 1 ? (W - 2 * P) / 2 : (i * (W - 2 * P)) / (points.length - 1));
    const y = (v) => H - P - (v / top) * (H - 2 * P);
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "ε spent over time", class: "spend" });
    chart.append(svg("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, class: "axis" }));
    chart.append(svg("polyline", { points: points.map((p, i) => x(i) + "," + y(p.total_epsilon)).join(" "), class: "total" }));
    chart.append(svg("polyline", { points: points.map((p, i) => x(i) + "," + y(p.spent_epsilon)).join(" "), class: "spent" }));
    points.forEach((p, i) => {
      const dot = svg("circle", { cx: x(i), cy: y(p.spent_epsilon), r: 3.5, class: "point" });
      const t = svg("title");
      t.textContent = p.at + ": " + p.action + (p.epsilon ? " ε " + fmtNum(p.epsilon) : "") + ", spent " + fmtNum(p.spent_epsilon) + " of " + fmtNum(p.total_epsilon);
      dot.append(t);
      chart.append(dot);
    });
    const last = points[points.length - 1];
    box.dataset.lastSpent = String(last.spent_epsilon);
    box.append(chart, el("figcaption", { className: "muted",
      text: "ε spent over " + points.length + " ledger change(s), from " + points[0].at + " to " + last.at + "; dashed: the total in force." }));
    return box;
  }

  function columnsTable(d, note) {
    const rows = d.columns.map((c) => {
      const numeric = c.type === "integer" || c.type === "float";
      const bounds = el("td", { className: "bounds" });
      if (numeric) {
        const min = el("input", { type: "number", step: "any", className: "min", "aria-label": c.name + " min", value: c.bounds ? c.bounds.min : "" });
        const max = el("input", { type: "number", step: "any", className: "max", "aria-label": c.name + " max", value: c.bounds ? c.bounds.max : "" });
        const set = el("button", { type: "button", className: "set-bounds secondary", text: "Set" });
        set.addEventListener("click", () => act(note, "PATCH",
          "/v1/datasets/" + encodeURIComponent(d.name) + "/columns/" + encodeURIComponent(c.name),
          { bounds: { min: Number(min.value), max: Number(max.value) } },
          "Bounds of " + c.name + " set."));
        bounds.append(min, el("span", { text: "…" }), max, set);
      } else {
        bounds.append(el("span", { className: "muted", text: "—" }));
      }
      return el("tr", { dataset: { column: c.name } },
        el("td", { className: "mono", text: c.name }),
        el("td", { text: c.type + (d.identifying_columns.includes(c.name) ? " · identifying" : "") }),
        bounds,
        el("td", { className: "keys", text: c.public_keys ? c.public_keys.join(", ") : "—" }));
    });
    return el("div", { className: "scroll" }, el("table", { className: "columns" },
      el("thead", null, el("tr", null, ...["column", "type", "bounds", "public keys"].map((h) => el("th", { text: h })))),
      el("tbody", null, ...rows)));
  }

  function releaseForm(d, note) {
    const form = el("div", { className: "release-form row" });
    const selects = {};
    for (const backend of ["dp_sandbox", "he_backend", "mpc_backend"]) {
      const sel = el("select", { className: "mode", dataset: { backend }, "aria-label": backend + " release mode" },
        ...["policy", "dp", "exact", "off"].map((m) => el("option", { value: m, text: m === "policy" ? "node policy" : m })));
      sel.value = "policy";
      sel.disabled = true;
      selects[backend] = sel;
      form.append(el("div", { className: "field" },
        el("label", { text: backend + " (now " + d.release[backend] + ")" }), sel));
    }
    const set = el("button", { type: "button", className: "set-release secondary", text: "Set release modes" });
    set.addEventListener("click", () => act(note, "PUT", "/v1/datasets/" + encodeURIComponent(d.name) + "/release",
      Object.fromEntries(Object.entries(selects).map(([b, s]) => [b, s.value])), "Release modes set."));
    form.append(el("div", { className: "field end" }, set));
    // Start from the owner's own settings (a backend without one follows the node policy).
    set.disabled = true;
    api("GET", "/v1/datasets/" + encodeURIComponent(d.name) + "/release")
      .then((r) => {
        for (const [backend, sel] of Object.entries(selects)) {
          sel.value = (r.overrides && r.overrides[backend]) || "policy";
          sel.disabled = false;
        }
        set.disabled = false;
      })
      .catch((e) => show(note, e.message));
    return form;
  }

  function budgetForm(d, note) {
    const eps = el("input", { type: "number", step: "any", min: "0", className: "budget-epsilon", "aria-label": "total ε", value: d.budget.total_epsilon });
    const del = el("input", { type: "number", step: "any", min: "0", className: "budget-delta", "aria-label": "total δ", value: d.budget.total_delta });
    const set = el("button", { type: "button", className: "set-budget secondary", text: "Set total" });
    set.addEventListener("click", () => act(note, "PUT", "/v1/datasets/" + encodeURIComponent(d.name) + "/budget",
      { epsilon: Number(eps.value), delta: Number(del.value) }, "Budget total set."));
    return el("div", { className: "row" },
      el("div", { className: "field small" }, el("label", { text: "Total ε" }), eps),
      el("div", { className: "field small" }, el("label", { text: "Total δ" }), del),
      el("div", { className: "field end" }, set));
  }

  /** One settings change; reloads the datasets on success, shows the API's refusal otherwise. */
  async function act(note, method, path, body, done) {
    try {
      await api(method, path, body);
      state.loaded.activity = false;
      await loadDatasets();
      show($("datasets-note"), done);
    } catch (e) {
      note.className = "error dataset-error";
      show(note, e.message);
    }
  }

  /** Where a dataset's rows are: imported, a CSV or Parquet source (path) or a PostgreSQL table. */
  function sourceText(src) {
    if (!src || src.kind === "import") return "imported";
    if (src.kind === "parquet" && src.streamed) return "parquet source " + src.path + " (streamed, pushdown) · counted";
    if (src.kind === "csv" || src.kind === "parquet") return src.kind + " source " + src.path + " · read";
    if (src.kind === "postgres") return "postgres source " + src.table + " (pushdown) · counted";
    return src.kind;
  }

  function datasetCard(d) {
    const card = el("article", { className: "dataset", dataset: { dataset: d.name } });
    const note = el("p", { className: "error dataset-error", role: "alert", hidden: true });
    const chart = el("div", { className: "chart-slot" }, el("p", { className: "muted", text: "Loading the ledger's history…" }));
    card.append(
      el("div", { className: "head" }, el("h3", { className: "mono", text: d.name }),
        el("span", { className: "muted", text: d.rows + " rows · " + sourceText(d.source) + " " + d.imported_at })),
      d.source && d.source.last_error
        ? el("p", { className: "error", role: "alert", text: "The last re-read of the source failed; the previous data is served: " + d.source.last_error })
        : el("span", { hidden: true }),
      note,
      el("div", { className: "split" },
        el("div", null, el("h4", { text: "Privacy budget" }), budgetTable(d.budget), budgetForm(d, note)),
        el("div", { className: "grow" }, el("h4", { text: "Spend over time" }), chart)),
      el("h4", { text: "Release mode per backend" }),
      facts(Object.entries(d.release).map(([b, m]) => [b, m, "mode-" + b])),
      releaseForm(d, note),
      el("h4", { text: "Columns" }),
      columnsTable(d, note));
    api("GET", "/v1/datasets/" + encodeURIComponent(d.name) + "/history")
      .then((h) => chart.replaceChildren(spendChart(h.points)))
      .catch((e) => chart.replaceChildren(el("p", { className: "error", text: e.message })));
    return card;
  }

  // ---------- activity ----------

  function shape(r) {
    if (!r) return null;
    if (typeof r.rows === "number") return r.rows + " row(s) × " + r.columns.length + " column(s): " + r.columns.join(", ");
    if (typeof r.cells === "number") return r.cells + " encrypted value(s) in " + r.groups + " group(s)";
    if (typeof r.group_keys === "number") return "a partial sum over " + r.group_keys + " group(s)";
    return JSON.stringify(r);
  }

  function entryRow(e) {
    const d = e.details || {};
    const what = el("td", { className: "what" });
    if (d.query || d.requested_by || d.result) {
      what.append(facts([
        ["Query", d.query ? el("code", { className: "sql", text: d.query }) : (d.plan ? "plan only (no SQL was forwarded)" : null), "query"],
        ["Requested by", d.requested_by !== undefined ? who(d.requested_by) : null, "requested-by"],
        ["ε", typeof d.epsilon === "number" ? fmtNum(d.epsilon) : null, "epsilon"],
        ["Result", shape(d.result), "result"],
        ["Backend", d.backend, "backend"],
      ]));
    }
    what.append(el("details", null, el("summary", { text: "details" }), el("pre", { text: JSON.stringify(d, null, 2) })));
    return el("tr", { dataset: { seq: String(e.seq), action: e.action } },
      el("td", { className: "num", text: e.seq }),
      el("td", { className: "at", text: e.at }),
      el("td", null, badge(e.action, "action"), el("div", { className: "muted actor", text: e.actor })),
      el("td", { className: "target mono", text: e.target }),
      what);
  }

  async function loadActivity(reset) {
    hide($("activity-error"));
    if (reset) {
      state.activityBefore = null;
      $("activity-list").replaceChildren(el("table", { className: "activity" },
        el("thead", null, el("tr", null, ...["#", "when", "action", "target", "what"].map((h) => el("th", { text: h })))),
        el("tbody")));
    }
    const params = new URLSearchParams();
    const action = $("filter-action").value;
    const q = $("filter-q").value.trim();
    if (action) params.set("action", action);
    if (q) params.set("q", q);
    if (state.activityBefore) params.set("before", String(state.activityBefore));
    params.set("limit", "50");
    let page;
    try {
      page = await api("GET", "/v1/activity?" + params.toString());
    } catch (e) {
      show($("activity-error"), e.message);
      return;
    }
    const body = $("activity-list").querySelector("tbody");
    for (const e of page.entries) body.append(entryRow(e));
    if (!body.children.length) body.append(el("tr", null, el("td", { className: "empty", colspan: 5, text: "No entry matches." })));
    state.activityBefore = page.next_before;
    $("activity-more").hidden = !page.next_before;
  }

  async function verifyChain() {
    const out = $("audit-verify");
    const seq = ++state.verifySeq;
    show(out, "Verifying…");
    try {
      const v = await api("GET", "/v1/audit/verify");
      if (seq !== state.verifySeq) return;
      out.className = v.valid ? "okay" : "error";
      show(out, v.valid ? "Hash chain verified: " + v.entries + " entries, none altered or missing." : "The chain is broken: " + v.error);
    } catch (e) {
      out.className = "error";
      show(out, e.message);
    }
  }

  // ---------- wiring ----------

  function wire() {
    $("signin-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("token").value.trim();
      if (t) signIn(t);
    });
    $("signout").addEventListener("click", () => signedOut());
    const tablist = document.querySelector(".tabs");
    for (const t of TABS) $("tab-" + t).addEventListener("click", () => selectTab(t));
    tablist.addEventListener("keydown", (ev) => {
      const i = TABS.findIndex((t) => $("tab-" + t).classList.contains("active"));
      const step = { ArrowRight: 1, ArrowLeft: -1 }[ev.key];
      if (step === undefined) return;
      ev.preventDefault();
      selectTab(TABS[(i + step + TABS.length) % TABS.length], true);
    });
    $("refresh-requests").addEventListener("click", loadRequests);
    $("refresh-datasets").addEventListener("click", loadDatasets);
    $("refresh-activity").addEventListener("click", () => loadActivity(true));
    $("activity-filter").addEventListener("submit", (ev) => {
      ev.preventDefault();
      loadActivity(true);
    });
    $("activity-more").addEventListener("click", () => loadActivity(false));
    $("verify-audit").addEventListener("click", verifyChain);
    window.addEventListener("error", (ev) => show($("fatal"), "The console hit an error: " + ev.message));
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
  }

  wire();
})();
