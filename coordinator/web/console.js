// Prism web console: a thin client of the coordinator's admin API (/api/v1).
//
// It never bypasses the API: every action is one or two API calls, and every error it shows is
// the API's own `error.message`. Strings from the API reach the DOM only through textContent
// (the `el` helper below); nothing here assigns innerHTML.
"use strict";

(() => {
  const TOKEN_KEY = "prism.console.token";
  const VALIDATE_DELAY_MS = 350;
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

  function show(node, text) {
    node.textContent = text;
    node.hidden = false;
  }

  function hide(node) {
    node.textContent = "";
    node.hidden = true;
  }

  function fmtNum(x) {
    if (typeof x !== "number" || !Number.isFinite(x)) return String(x);
    if (Number.isInteger(x)) return String(x);
    return String(Number(x.toPrecision(6)));
  }

  function fmtMs(ms) {
    return (ms >= 100 ? String(Math.round(ms)) : ms.toFixed(1)) + " ms";
  }

  function fmtCell(v) {
    if (v === null || v === undefined) return "null";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Number(v.toFixed(3)));
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  function badge(word) {
    const w = String(word || "unknown");
    return el("span", { className: "badge " + w.replace(/\s+/g, "-"), text: w });
  }

  function resultTable(result) {
    if (!result || !Array.isArray(result.columns) || !Array.isArray(result.rows)) return null;
    const head = el("tr", null, ...result.columns.map((c) => el("th", { text: c })));
    const rows = result.rows.map((row) =>
      el("tr", null, ...(Array.isArray(row) ? row : []).map((v) =>
        el("td", { className: typeof v === "number" ? "num" : "", text: fmtCell(v) }))));
    if (rows.length === 0) {
      rows.push(el("tr", null, el("td", { className: "empty", colspan: result.columns.length || 1, text: "no rows released" })));
    }
    return el("table", { className: "result" }, el("thead", null, head), el("tbody", null, ...rows));
  }

  function jsonDetails(summary, value, className) {
    return el("details", { className },
      el("summary", { text: summary }),
      el("pre", { text: JSON.stringify(value, null, 2) }));
  }

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details;
    }
  }

  /** Calls the API; resolves to {status, data} on 2xx, rejects with the API's error otherwise. */
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
      resp = await fetch("/api/v1" + path, init);
    } catch (e) {
      throw new ApiError(0, "network_error", "the coordinator could not be reached (" + e.message + ")");
    }
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (resp.ok) return { status: resp.status, data };
    const err = data && data.error;
    if (err && typeof err.message === "string") {
      if (resp.status === 401 && path !== "/backends") signedOut(err.message);
      throw new ApiError(resp.status, err.code, err.message, err.details);
    }
    // Not an API error body (e.g. a proxy in between): say what came back.
    throw new ApiError(resp.status, "http_" + resp.status,
      "HTTP " + resp.status + (text ? ": " + text.slice(0, 300) : " with an empty body"));
  }

  // ---------- state ----------

  const state = {
    backends: [],
    datasets: [],
    queries: new Map(),
    validateTimer: null,
    validateSeq: 0,
    auditAfter: 0,
    loaded: { runs: false, rooms: false, audit: false },
  };

  // ---------- sign in / out ----------

  async function signIn(token) {
    const signinError = $("signin-error");
    hide(signinError);
    sessionStorage.setItem(TOKEN_KEY, token);
    let backends;
    try {
      backends = (await api("GET", "/backends")).data;
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      show(signinError, e.message);
      return;
    }
    $("signin-panel").hidden = true;
    $("app").hidden = false;
    $("session").hidden = false;
    state.loaded = { runs: false, rooms: false, audit: false };
    renderBackends(Array.isArray(backends) ? backends : []);
    await loadDatasets();
    selectTab(location.hash.replace("#", "") || "query");
  }

  /** Back to the sign-in form; `message` is the API's reason, if any. */
  function signedOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    // Leave nothing of the previous user's session on the page.
    clearTimeout(state.validateTimer);
    state.validateSeq++;
    state.queries.clear();
    for (const id of ["backends", "last-run", "runs-list", "rooms-list", "audit-list"]) $(id).replaceChildren();
    for (const id of ["run-error", "runs-error", "rooms-error", "audit-error", "audit-verify",
      "backends-error", "datasets-error"]) hide($(id));
    $("last-run-card").hidden = true;
    $("audit-more").hidden = true;
    $("sql").value = "";
    setValidation("idle", [el("span", { text: "Type a query to validate it." })]);
    $("app").hidden = true;
    $("session").hidden = true;
    $("signin-panel").hidden = false;
    $("token").value = "";
    if (message) show($("signin-error"), message);
    else hide($("signin-error"));
  }

  // ---------- tabs ----------

  const TABS = ["query", "runs", "rooms", "audit"];

  function selectTab(name) {
    if (!TABS.includes(name)) name = "query";
    for (const t of TABS) {
      $("panel-" + t).hidden = t !== name;
      $("tab-" + t).classList.toggle("active", t === name);
      $("tab-" + t).setAttribute("aria-selected", String(t === name));
    }
    if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
    if (name === "runs" && !state.loaded.runs) loadRuns();
    if (name === "rooms" && !state.loaded.rooms) loadRooms();
    if (name === "audit" && !state.loaded.audit) loadAudit(true);
  }

  // ---------- backends ----------

  function renderBackends(list) {
    state.backends = list;
    const grid = $("backends");
    grid.replaceChildren();
    const select = $("backend");
    const previous = select.value || "dp_sandbox";
    select.replaceChildren();
    for (const b of list) {
      const card = el("div", { className: "backend-card", role: "radio", tabindex: "0", dataset: { backend: b.id } },
        el("div", { className: "head" },
          el("span", { className: "name", text: b.name }),
          badge(b.status)),
        el("div", { className: "id", text: b.id }),
        el("p", { className: "description", text: b.description }),
        el("dl", null,
          el("dt", { text: "Performance" }), el("dd", { className: "performance", text: b.performance }),
          el("dt", { text: "Privacy guarantee" }), el("dd", { className: "guarantee", text: b.privacy_guarantee }),
          Array.isArray(b.supports) && b.supports.length
            ? el("dt", { text: "Supports" }) : null,
          Array.isArray(b.supports) && b.supports.length
            ? el("dd", { className: "mono", text: b.supports.join(", ") }) : null));
      card.addEventListener("click", () => chooseBackend(b.id));
      card.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          chooseBackend(b.id);
        }
      });
      grid.append(card);
      select.append(el("option", { value: b.id, text: b.name + " (" + b.status + ")" }));
    }
    select.value = list.some((b) => b.id === previous) ? previous : (list[0] ? list[0].id : "");
    markSelectedBackend();
  }

  function chooseBackend(id) {
    $("backend").value = id;
    markSelectedBackend();
    scheduleValidation();
  }

  function markSelectedBackend() {
    const id = $("backend").value;
    for (const card of $("backends").querySelectorAll(".backend-card")) {
      const on = card.dataset.backend === id;
      card.classList.toggle("selected", on);
      card.setAttribute("aria-checked", String(on));
    }
  }

  // ---------- datasets ----------

  async function loadDatasets() {
    const errorBox = $("datasets-error");
    hide(errorBox);
    let list;
    try {
      list = (await api("GET", "/datasets")).data;
    } catch (e) {
      show(errorBox, e.message);
      return;
    }
    state.datasets = Array.isArray(list) ? list : [];
    const select = $("dataset");
    const previous = select.value;
    select.replaceChildren();
    if (state.datasets.length === 0) {
      select.append(el("option", { value: "", text: "no datasets in the catalog yet" }));
    }
    for (const d of state.datasets) {
      const label = d.id + " — " + d.row_count + " rows" + (d.online === false ? " (node offline)" : "");
      select.append(el("option", { value: d.id, text: label }));
    }
    if (state.datasets.some((d) => d.id === previous)) select.value = previous;
    describeDataset();
  }

  function describeDataset() {
    const d = state.datasets.find((x) => x.id === $("dataset").value);
    const out = $("dataset-columns");
    if (!d) {
      out.textContent = "";
      return;
    }
    const cols = (d.columns || []).map((c) => {
      let s = c.name + " " + c.type;
      if (c.bounds) s += " [" + fmtNum(c.bounds.min) + ", " + fmtNum(c.bounds.max) + "]";
      return s;
    });
    out.textContent = "table " + d.name + " (" + d.organization + "): " + cols.join(", ");
  }

  // ---------- query form ----------

  function queryInput() {
    const body = {
      dataset_id: $("dataset").value,
      sql: $("sql").value,
      backend: $("backend").value,
    };
    const eps = $("epsilon");
    if (eps.value.trim() !== "") body.epsilon = Number(eps.value);
    return body;
  }

  function scheduleValidation() {
    clearTimeout(state.validateTimer);
    state.validateSeq++; // an answer to an earlier edit is now stale
    const box = $("validation");
    if ($("sql").value.trim() === "") {
      setValidation("idle", [el("span", { text: "Type a query to validate it." })]);
      return;
    }
    box.className = "validation checking";
    box.dataset.state = "checking";
    state.validateTimer = setTimeout(validate, VALIDATE_DELAY_MS);
  }

  function setValidation(kind, children) {
    const box = $("validation");
    box.className = "validation " + kind;
    box.dataset.state = kind;
    box.replaceChildren(...children);
  }

  async function validate() {
    const seq = ++state.validateSeq;
    let answer;
    try {
      answer = (await api("POST", "/queries/validate", queryInput())).data;
    } catch (e) {
      if (seq === state.validateSeq) setValidation("invalid", [el("span", { className: "message", text: e.message })]);
      return;
    }
    if (seq !== state.validateSeq) return; // a newer edit is being validated
    if (answer && answer.valid) {
      const parts = [
        el("strong", { text: "Valid." }), " Estimated ε = ",
        el("span", { id: "estimated-epsilon", text: fmtNum(answer.estimated_epsilon) }),
      ];
      if (typeof answer.estimated_delta === "number" && answer.estimated_delta > 0) {
        parts.push(", δ = " + fmtNum(answer.estimated_delta));
      }
      if (answer.estimate_source && answer.estimate_source !== "none") {
        parts.push(el("span", { className: "muted", text: " (estimated by " + answer.estimate_source + ")" }));
      }
      if (answer.release_mode) {
        // The holding node's decision: dp (noise it adds and charges), exact (owner opt-in) or off.
        const how = answer.release_mode === "dp" ? "with differential-privacy noise the node adds and charges"
          : answer.release_mode === "exact" ? "exactly (the data owner opted in; small groups are suppressed)"
          : answer.release_mode;
        parts.push(" · released ", el("span", { id: "release-mode", dataset: { mode: answer.release_mode }, text: how }));
      }
      if (answer.organization) parts.push(el("span", { className: "muted", text: " · runs on " + answer.organization }));
      setValidation("valid", parts);
    } else {
      const errors = (answer && Array.isArray(answer.errors)) ? answer.errors : [];
      const items = errors.map((e) => el("li", { className: "message", dataset: { code: e.code || "" }, text: e.message }));
      setValidation("invalid", [el("ul", null, ...items)]);
    }
  }

  async function runQuery(ev) {
    ev.preventDefault();
    const button = $("run-query");
    const runError = $("run-error");
    const card = $("last-run-card");
    button.disabled = true;
    $("run-progress").hidden = false;
    hide(runError);
    $("last-run").replaceChildren();
    card.hidden = false;
    try {
      const query = (await api("POST", "/queries", queryInput())).data;
      state.queries.set(query.id, query);
      let run = (await api("POST", "/queries/" + encodeURIComponent(query.id) + "/execute?wait=true", {})).data;
      run = await waitForRun(run);
      $("last-run").replaceChildren(renderRun(run));
      state.loaded.runs = false;
    } catch (e) {
      show(runError, e.message);
      if (e.details !== undefined && e.details !== null) {
        $("last-run").replaceChildren(jsonDetails("Details from the API", e.details, "error-details"));
      }
      state.loaded.runs = false;
    } finally {
      button.disabled = false;
      $("run-progress").hidden = true;
    }
  }

  /** `?wait=true` answers 202 if the run outlives the coordinator's wait: poll until final. */
  async function waitForRun(run) {
    let current = run;
    for (let i = 0; i < 600 && current && (current.status === "pending" || current.status === "running"); i++) {
      await new Promise((r) => setTimeout(r, 1000));
      current = (await api("GET", "/runs/" + encodeURIComponent(current.id))).data;
    }
    return current;
  }

  // ---------- runs ----------

  function renderRun(run) {
    const query = state.queries.get(run.query_id);
    const metric = (label, value, cls) =>
      el("span", { className: "metric " + (cls || "") }, label + " ", el("strong", { text: value }));
    const node = el("div", { className: "run", dataset: { runId: run.id, status: run.status } },
      el("div", { className: "head" },
        badge(run.status),
        el("span", { className: "mono", text: run.backend_used }),
        metric("ε consumed", fmtNum(run.epsilon_consumed), "epsilon"),
        run.delta_consumed ? metric("δ", fmtNum(run.delta_consumed), "delta") : null,
        metric("time", typeof run.execution_time_ms === "number"
          ? fmtMs(run.execution_time_ms) : "—", "time"),
        el("span", { className: "meta", text: run.created_at })),
      query ? el("div", { className: "sql", text: query.sql + "   -- " + query.dataset_id }) : null,
      el("div", { className: "meta", text: "run " + run.id + " · query " + run.query_id }));
    if (run.error_message) {
      node.append(el("p", { className: "error run-error", text: run.error_message }));
    }
    const table = resultTable(run.result);
    if (table) node.append(table);
    if (run.proof_artifacts && Object.keys(run.proof_artifacts).length > 0) {
      node.append(jsonDetails("Proof artifacts", run.proof_artifacts, "proof"));
    }
    return node;
  }

  async function loadRuns() {
    const errorBox = $("runs-error");
    hide(errorBox);
    state.loaded.runs = true;
    let runs;
    try {
      const [r, q] = await Promise.all([api("GET", "/runs"), api("GET", "/queries")]);
      runs = Array.isArray(r.data) ? r.data : [];
      for (const query of Array.isArray(q.data) ? q.data : []) state.queries.set(query.id, query);
    } catch (e) {
      state.loaded.runs = false;
      show(errorBox, e.message);
      return;
    }
    const list = $("runs-list");
    list.replaceChildren(...runs.map(renderRun));
    if (runs.length === 0) list.append(el("p", { className: "empty", text: "No runs yet." }));
  }

  // ---------- data rooms ----------

  function renderRoom(room) {
    const participants = Array.isArray(room.participants) ? room.participants : [];
    const errorSlot = el("p", { className: "error room-error", role: "alert", hidden: true });
    const node = el("div", { className: "room", dataset: { roomId: room.id, status: room.status } },
      el("div", { className: "head" },
        el("h3", { text: room.name }),
        badge(room.status)),
      room.description ? el("p", { className: "muted", text: room.description }) : null,
      el("div", { className: "meta" }, "backend ", el("span", { className: "mono", text: room.backend }),
        room.created_at ? " · created " + room.created_at : ""),
      room.query_text ? el("div", { className: "sql", text: room.query_text }) : null,
      el("table", { className: "participants" },
        el("thead", null, el("tr", null, el("th", { text: "Organization" }), el("th", { text: "Attestation" }),
          el("th", { text: "Attested at" }))),
        el("tbody", null, ...participants.map((p) =>
          el("tr", { dataset: { organization: p.organization, status: p.status } },
            el("td", { text: p.organization }),
            el("td", null, badge(p.status), p.reason ? el("span", { className: "muted", text: " " + p.reason }) : null),
            el("td", { text: p.attested_at || "—" }))))),
      errorSlot);
    if (room.status === "ready") {
      const button = el("button", { type: "button", className: "execute-room", text: "Execute" });
      button.addEventListener("click", async () => {
        button.disabled = true;
        errorSlot.hidden = true;
        try {
          const path = "/data_rooms/" + encodeURIComponent(room.id);
          let answer = (await api("POST", path + "/execute?wait=true", {})).data;
          // Still executing when the API stopped waiting: poll the room until it settles.
          for (let i = 0; i < 300 && answer && answer.id === room.id && answer.status === "executing"; i++) {
            await new Promise((r) => setTimeout(r, 1000));
            answer = (await api("GET", path)).data;
          }
          if (answer && answer.id === room.id) node.replaceWith(renderRoom(answer));
          else await loadRooms();
        } catch (e) {
          show(errorSlot, e.message);
          button.disabled = false;
        }
      });
      node.append(el("div", { className: "actions" }, button));
    }
    if (room.error_message) node.append(el("p", { className: "error", text: room.error_message }));
    if (room.result !== null && room.result !== undefined) {
      node.append(resultTable(room.result) || jsonDetails("Result", room.result, "room-result"));
    }
    if (typeof room.execution_time_ms === "number") {
      node.append(el("div", { className: "meta", text: "executed in " + fmtMs(room.execution_time_ms) }));
    }
    if (room.proof_artifacts && typeof room.proof_artifacts === "object" && Object.keys(room.proof_artifacts).length > 0) {
      node.append(jsonDetails("Proof artifacts", room.proof_artifacts, "proof"));
    }
    return node;
  }

  async function loadRooms() {
    const errorBox = $("rooms-error");
    hide(errorBox);
    state.loaded.rooms = true;
    const list = $("rooms-list");
    let data;
    try {
      data = (await api("GET", "/data_rooms")).data;
    } catch (e) {
      list.replaceChildren();
      state.loaded.rooms = false;
      show(errorBox, e.message);
      return;
    }
    const rooms = Array.isArray(data) ? data : [];
    list.replaceChildren(...rooms.map(renderRoom));
    if (rooms.length === 0) list.append(el("p", { className: "empty", text: "No data rooms yet." }));
  }

  // ---------- audit ----------

  async function loadAudit(fresh) {
    const errorBox = $("audit-error");
    const list = $("audit-list");
    hide(errorBox);
    state.loaded.audit = true;
    if (fresh) {
      state.auditAfter = 0;
      list.replaceChildren();
      hide($("audit-verify"));
    }
    const limit = 200;
    let entries;
    try {
      entries = (await api("GET", "/audit?after=" + state.auditAfter + "&limit=" + limit)).data;
    } catch (e) {
      state.loaded.audit = false;
      $("audit-more").hidden = true;
      show(errorBox, e.message);
      return;
    }
    entries = Array.isArray(entries) ? entries : [];
    let tbody = list.querySelector("tbody");
    if (!tbody) {
      tbody = el("tbody");
      list.append(el("table", { className: "audit" },
        el("thead", null, el("tr", null, ...["#", "Time", "Actor", "Action", "Target", "Details"].map((h) => el("th", { text: h })))),
        tbody));
    }
    for (const e of entries) {
      tbody.append(el("tr", null,
        el("td", { className: "num", text: e.seq }),
        el("td", { text: e.at }),
        el("td", { text: e.actor }),
        el("td", { className: "mono", text: e.action }),
        el("td", { className: "mono target", text: e.target }),
        el("td", { className: "mono details", text: JSON.stringify(e.details) })));
      state.auditAfter = Math.max(state.auditAfter, Number(e.seq) || 0);
    }
    if (fresh && entries.length === 0) list.replaceChildren(el("p", { className: "empty", text: "The audit log is empty." }));
    $("audit-more").hidden = entries.length < limit;
  }

  async function verifyAudit() {
    const out = $("audit-verify");
    hide($("audit-error"));
    try {
      const v = (await api("GET", "/audit/verify")).data;
      out.className = v.valid ? "okay" : "error";
      show(out, v.valid ? "Hash chain verified: " + v.entries + " entries, none altered."
        : "Hash chain BROKEN: " + v.error);
    } catch (e) {
      hide(out);
      show($("audit-error"), e.message);
    }
  }

  // ---------- wiring ----------

  function init() {
    window.addEventListener("error", (ev) => {
      // Surface a console bug instead of failing silently.
      show($("fatal"), "The console hit an error: " + (ev.message || "unknown"));
    });
    window.addEventListener("unhandledrejection", (ev) => {
      const reason = ev.reason && ev.reason.message ? ev.reason.message : String(ev.reason);
      show($("fatal"), "The console hit an error: " + reason);
    });
    $("signin-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("token").value.trim();
      if (token) signIn(token);
    });
    $("signout").addEventListener("click", () => signedOut(null));
    for (const t of TABS) $("tab-" + t).addEventListener("click", () => selectTab(t));
    window.addEventListener("hashchange", () => {
      if (!$("app").hidden) selectTab(location.hash.replace("#", ""));
    });
    $("dataset").addEventListener("change", () => {
      describeDataset();
      scheduleValidation();
    });
    $("backend").addEventListener("change", () => {
      markSelectedBackend();
      scheduleValidation();
    });
    $("sql").addEventListener("input", scheduleValidation);
    $("epsilon").addEventListener("input", scheduleValidation);
    $("sql").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("query-form").requestSubmit();
    });
    $("query-form").addEventListener("submit", runQuery);
    $("refresh-runs").addEventListener("click", loadRuns);
    $("refresh-rooms").addEventListener("click", loadRooms);
    $("refresh-audit").addEventListener("click", () => loadAudit(true));
    $("audit-more").addEventListener("click", () => loadAudit(false));
    $("verify-audit").addEventListener("click", verifyAudit);

    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
  }

  init();
})();
