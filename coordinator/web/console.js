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

  /** The released table; `halfWidths` (one per column, from the API) adds `± h (95 %)`. */
  function resultTable(result, halfWidths) {
    if (!result || !Array.isArray(result.columns) || !Array.isArray(result.rows)) return null;
    const hw = Array.isArray(halfWidths) ? halfWidths : [];
    const head = el("tr", null, ...result.columns.map((c) => el("th", { text: c })));
    const rows = result.rows.map((row) =>
      el("tr", null, ...(Array.isArray(row) ? row : []).map((v, i) => {
        const h = typeof v === "number" && typeof hw[i] === "number" ? hw[i] : null;
        return el("td", { className: typeof v === "number" ? "num" : "", dataset: h === null ? {} : { ci95: String(h) } },
          el("span", { className: "value", text: fmtCell(v) }),
          h === null ? null : el("span", { className: "ci", text: " ± " + fmtNum(h) + " (95 %)" }));
      })));
    if (rows.length === 0) {
      rows.push(el("tr", null, el("td", { className: "empty", colspan: result.columns.length || 1, text: "no rows released" })));
    }
    const table = el("table", { className: "result" }, el("thead", null, head), el("tbody", null, ...rows));
    return el("div", { className: "table-scroll" }, table);
  }

  /** One CSV field: quoted when needed; text that a spreadsheet would run as a formula is defused. */
  function csvField(v) {
    if (v === null || v === undefined) return "";
    let s = typeof v === "object" ? JSON.stringify(v) : String(v);
    if (typeof v === "string" && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  /** The result as CSV: its columns, then `<column>_ci95_half_width` for those that have one. */
  function resultCsv(result, halfWidths) {
    const hw = Array.isArray(halfWidths) ? halfWidths : [];
    const ciCols = result.columns.map((c, i) => i).filter((i) => typeof hw[i] === "number");
    const header = result.columns.concat(ciCols.map((i) => result.columns[i] + "_ci95_half_width"));
    const lines = [header.map(csvField).join(",")];
    for (const row of result.rows) {
      lines.push(row.concat(ciCols.map((i) => hw[i])).map(csvField).join(","));
    }
    return lines.join("\r\n") + "\r\n";
  }

  /** Download links (CSV and JSON) for a released table; `stem` names the files. */
  function downloads(stem, result, halfWidths, proof) {
    if (!result || !Array.isArray(result.columns) || !Array.isArray(result.rows)) return null;
    const json = JSON.stringify({ columns: result.columns, rows: result.rows, ci95_half_width: halfWidths || [], proof_artifacts: proof || {} }, null, 2);
    return el("div", { className: "downloads" }, "Download ",
      el("a", { className: "download-csv", download: stem + ".csv", href: "data:text/csv;charset=utf-8," + encodeURIComponent(resultCsv(result, halfWidths)), text: "CSV" }),
      " · ",
      el("a", { className: "download-json", download: stem + ".json", href: "data:application/json;charset=utf-8," + encodeURIComponent(json), text: "JSON" }));
  }

  /** The proof as a person reads it: mechanism, ε, δ and the noise of each statistic. */
  function proofPanel(proof) {
    if (!proof || typeof proof !== "object") return null;
    const rel = proof.release;
    const rows = [];
    const facts = [];
    if (rel && Array.isArray(rel.statistics)) {
      facts.push(["Mechanism", rel.mechanism], ["ε spent", fmtNum(rel.epsilon)], ["δ spent", fmtNum(rel.delta)],
        ["Composition", rel.composition], ["GROUP BY keys", rel.key_release && rel.key_release.mode]);
      for (const st of rel.statistics) {
        if (st.hidden) continue;
        rows.push([st.aggregate, st.mechanism, fmtNum(st.epsilon), fmtNum(st.noise_scale), fmtNum(st.sensitivity),
          typeof st.ci95_half_width === "number" ? "± " + fmtNum(st.ci95_half_width) : "—"]);
      }
    } else if (rel && rel.mode) {
      facts.push(["Release", rel.mode], ["Mechanism", rel.mechanism], ["ε spent", fmtNum(rel.epsilon || 0)]);
      if (typeof rel.delta === "number") facts.push(["δ spent", fmtNum(rel.delta)]);
      for (const n of Array.isArray(rel.noise) ? rel.noise : []) {
        rows.push([n.value, "discrete_laplace", fmtNum(n.epsilon), fmtNum(n.noise_scale), fmtNum(n.sensitivity),
          typeof n.ci95_half_width === "number" ? "± " + fmtNum(n.ci95_half_width) : "—"]);
      }
    } else {
      const room = proof.dp ? proof : (proof.mpc && proof.mpc.dp ? proof.mpc : null);
      if (!room) return null;
      facts.push(["Release", room.release || "dp"], ["Mechanism", "discrete Laplace noise added by each party (OpenDP)"],
        ["Parties", (room.dp.parties || []).map((p) => p.organization + " ε " + fmtNum(p.epsilon)).join(", ")]);
      for (const n of Array.isArray(room.dp.noise) ? room.dp.noise : []) {
        rows.push([n.component, "sum of parties' noise", "—", fmtNum(n.scale_sum), "—", "± " + fmtNum(n.ci95_half_width)]);
      }
    }
    const dl = el("dl", { className: "facts" });
    for (const [k, v] of facts) {
      if (v === undefined || v === null || v === "") continue;
      dl.append(el("dt", { text: k }), el("dd", { text: v }));
    }
    const table = rows.length === 0 ? null : el("div", { className: "table-scroll" }, el("table", { className: "proof-stats" },
      el("thead", null, el("tr", null, ...["Statistic", "Mechanism", "ε", "Noise scale", "Sensitivity", "95 % interval"].map((h) => el("th", { text: h })))),
      el("tbody", null, ...rows.map((r) => el("tr", null, ...r.map((c) => el("td", { text: c })))))));
    return el("div", { className: "proof-panel" }, el("h4", { text: "How this answer was protected" }), dl, table);
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
      // Only the session that sent the request is signed out: a late answer to a request of a
      // session already closed (or sent without a token) must not clear the next sign-in.
      if (resp.status === 401 && path !== "/backends" && token && token === sessionStorage.getItem(TOKEN_KEY)) {
        signedOut(err.message);
      }
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
    me: null,
    organizations: [],
    runs: [],
    audit: [],
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
    try {
      state.me = (await api("GET", "/me")).data;
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      show(signinError, e.message);
      return;
    }
    $("session-user").textContent = state.me.name;
    $("session-role").textContent = state.me.role;
    $("session-role").className = "badge role-" + state.me.role;
    $("session-org").textContent = state.me.organization ? "· " + state.me.organization : "";
    // The audit log is for admins; analysts do not get the tab.
    $("tab-audit").hidden = state.me.role !== "admin";
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
    state.me = null;
    state.organizations = [];
    state.runs = [];
    state.audit = [];
    $("token").value = "";
    $("session-user").textContent = "";
    $("session-role").textContent = "";
    $("session-org").textContent = "";
    $("tab-audit").hidden = true;
    $("audit-filter").value = "";
    for (const id of ["backends", "last-run", "runs-list", "spend-history", "rooms-list", "audit-list", "room-participants"]) $(id).replaceChildren();
    for (const id of ["run-error", "runs-error", "rooms-error", "audit-error", "audit-verify",
      "backends-error", "datasets-error", "room-form-error", "dataset-budget"]) hide($(id));
    $("last-run-card").hidden = true;
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

  function visibleTabs() {
    return TABS.filter((t) => !$("tab-" + t).hidden);
  }

  function selectTab(name) {
    if (!visibleTabs().includes(name)) name = "query";
    for (const t of TABS) {
      $("panel-" + t).hidden = t !== name;
      $("tab-" + t).classList.toggle("active", t === name);
      $("tab-" + t).setAttribute("aria-selected", String(t === name));
      $("tab-" + t).tabIndex = t === name ? 0 : -1;
    }
    if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
    if (name === "runs" && !state.loaded.runs) loadRuns();
    if (name === "rooms" && !state.loaded.rooms) loadRooms();
    if (name === "audit" && !state.loaded.audit) loadAudit();
  }

  /** Arrow keys, Home and End move between tabs (the WAI-ARIA tabs pattern). */
  function tabKeys(ev) {
    const tabs = visibleTabs();
    const current = tabs.indexOf(ev.target && ev.target.dataset ? ev.target.dataset.tab : "");
    if (current < 0) return;
    let next = null;
    if (ev.key === "ArrowRight") next = (current + 1) % tabs.length;
    else if (ev.key === "ArrowLeft") next = (current - 1 + tabs.length) % tabs.length;
    else if (ev.key === "Home") next = 0;
    else if (ev.key === "End") next = tabs.length - 1;
    if (next === null) return;
    ev.preventDefault();
    selectTab(tabs[next]);
    $("tab-" + tabs[next]).focus();
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
      let label = d.id + " — " + d.row_count + " rows";
      if (d.budget) label += " · ε " + fmtNum(d.budget.remaining_epsilon) + " of " + fmtNum(d.budget.total_epsilon) + " left";
      if (d.online === false) label += " (node offline)";
      select.append(el("option", { value: d.id, text: label }));
    }
    if (state.datasets.some((d) => d.id === previous)) select.value = previous;
    describeDataset();
    fillRunFilters();
  }

  function budgetText(b) {
    return "Privacy budget: ε " + fmtNum(b.remaining_epsilon) + " of " + fmtNum(b.total_epsilon) +
      " left (" + fmtNum(b.spent_epsilon) + " spent) · δ " + fmtNum(b.remaining_delta) + " of " + fmtNum(b.total_delta) + " left";
  }

  function describeDataset() {
    const d = state.datasets.find((x) => x.id === $("dataset").value);
    const out = $("dataset-columns");
    const budget = $("dataset-budget");
    if (!d) {
      out.replaceChildren();
      hide(budget);
      return;
    }
    if (d.budget) {
      budget.dataset.remainingEpsilon = String(d.budget.remaining_epsilon);
      show(budget, budgetText(d.budget));
    } else {
      delete budget.dataset.remainingEpsilon;
      show(budget, "The data owner of " + d.organization + " does not publish this dataset's budget; the node still enforces it.");
    }
    const rows = (d.columns || []).map((c) => {
      const domain = [];
      if (c.bounds) domain.push("bounds " + fmtNum(c.bounds.min) + " … " + fmtNum(c.bounds.max));
      if (Array.isArray(c.public_keys) && c.public_keys.length) domain.push("values: " + c.public_keys.join(", "));
      return el("tr", { dataset: { column: c.name } },
        el("td", { className: "mono", text: c.name }),
        el("td", { text: c.type }),
        el("td", { className: "domain", text: domain.join(" · ") || "—" }));
    });
    out.replaceChildren(
      el("p", { className: "muted", text: "table " + d.name + " (" + d.organization + ")" }),
      el("div", { className: "table-scroll" }, el("table", { className: "columns" },
        el("thead", null, el("tr", null, el("th", { text: "Column" }), el("th", { text: "Type" }), el("th", { text: "Declared bounds / allowed values" }))),
        el("tbody", null, ...rows))));
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
    const delta = $("delta");
    if (delta.value.trim() !== "") body.delta = Number(delta.value);
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
      if (answer.budget) {
        const left = answer.budget.remaining_epsilon - (answer.estimated_epsilon || 0);
        parts.push(el("span", { className: "muted", id: "budget-after", text: " · ε " + fmtNum(Math.max(0, left)) + " of " + fmtNum(answer.budget.total_epsilon) + " left after it" }));
      }
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
      const path = "/queries/" + encodeURIComponent(query.id) + "/execute";
      if (query.backend === "mpc_backend") {
        // It opens a data room that waits for every participant's attestation: say so at once.
        let run = (await api("POST", path, {})).data;
        run = await waitForRoomOf(run);
        $("last-run").replaceChildren(renderRun(run));
        state.loaded.rooms = false;
        if (run.status !== "completed" && run.status !== "failed") {
          followRun(run);
        }
      } else {
        // The card is shown at once and kept up to date while the run is in flight (a long HE
        // run shows the node's progress on it), then the result is scrolled into view.
        let run = (await api("POST", path, {})).data;
        $("last-run").replaceChildren(renderRun(run));
        card.scrollIntoView({ block: "nearest" });
        run = await waitForRun(run, showOnCard);
        const shown = showOnCard(run, true);
        const result = shown && shown.querySelector(".table-scroll");
        (result || card).scrollIntoView({ block: "nearest" });
      }
      state.loaded.runs = false;
      // The holding node republishes its ledger just after it answers: read the catalog now
      // and once more shortly after.
      loadDatasets();
      setTimeout(loadDatasets, 1500);
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

  /**
   * Redraws the latest-run card of `run` when its status or progress changed (or `always`);
   * returns the card shown, or null when the card is no longer on the page.
   */
  function showOnCard(run, always) {
    const card = run && $("last-run").querySelector(".run[data-run-id='" + CSS.escape(run.id) + "']");
    if (!card) return null;
    const seen = JSON.stringify([run.status, run.progress || null]);
    if (!always && card.dataset.seen === seen) return card;
    const fresh = renderRun(run);
    fresh.dataset.seen = seen;
    card.replaceWith(fresh);
    return fresh;
  }

  /** Polls an mpc_backend run until it names the room it opened (or ends). */
  async function waitForRoomOf(run) {
    let current = run;
    for (let i = 0; i < 100 && current && !isFinal(current) && !(current.proof_artifacts || {}).room_id; i++) {
      await new Promise((r) => setTimeout(r, 200));
      current = (await api("GET", "/runs/" + encodeURIComponent(current.id))).data;
    }
    return current;
  }

  /** Keeps the latest-run card up to date while a room-backed run waits for its room. */
  async function followRun(run) {
    try {
      const done = await waitForRun(run);
      showOnCard(done, true);
      state.loaded.runs = false;
      loadDatasets();
    } catch (_) {
      // The Runs tab shows the run's end; nothing to add here.
    }
  }

  function isFinal(run) {
    return run.status === "completed" || run.status === "failed";
  }

  /**
   * Polls a run until it is final, every 500 ms (how often a node reports an HE evaluation's
   * progress) for the first minute, then every second; `onUpdate` sees each answer.
   */
  async function waitForRun(run, onUpdate) {
    let current = run;
    for (let i = 0; i < 720 && current && !isFinal(current); i++) {
      await new Promise((r) => setTimeout(r, i < 120 ? 500 : 1000));
      current = (await api("GET", "/runs/" + encodeURIComponent(current.id))).data;
      if (onUpdate) onUpdate(current);
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
    if (run.progress && !isFinal(run)) {
      const p = run.progress;
      node.append(el("div", { className: "progress meta",
        text: "Evaluating under encryption on the node: " + p.encrypted_steps + " encrypted steps over " +
          p.groups + " groups of " + p.rows + " rows, " + fmtMs(p.elapsed_ms) + " so far" }));
    }
    if (run.error_message) {
      node.append(el("p", { className: "error run-error", text: run.error_message }));
    }
    const proof = run.proof_artifacts || {};
    if (proof.room_id && !isFinal(run)) node.append(roomOpened(proof));
    const table = resultTable(run.result, run.ci95_half_width);
    if (table) {
      node.append(table, downloads("prism-run-" + run.id, run.result, run.ci95_half_width, proof));
    }
    const panel = proofPanel(proof);
    if (panel) node.append(panel);
    if (Object.keys(proof).length > 0) {
      node.append(jsonDetails("Raw proof artifacts (JSON)", proof, "proof"));
    }
    return node;
  }

  /** What an mpc_backend query did: it opened a data room, which runs once everyone attests. */
  function roomOpened(proof) {
    const waiting = Array.isArray(proof.waiting_for_attestations) ? proof.waiting_for_attestations : [];
    const link = el("a", { href: "#rooms", className: "room-link", dataset: { roomId: proof.room_id }, text: "data room " + proof.room_id });
    link.addEventListener("click", (ev) => {
      ev.preventDefault();
      showRoom(proof.room_id);
    });
    return el("div", { className: "note room-opened" },
      "This mpc_backend query opened ", link, ". It runs when every participant's data owner has attested its manifest",
      waiting.length ? el("span", null, "; waiting for ", el("strong", { className: "waiting-for", text: waiting.join(", ") }), ".") : ".");
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
    state.runs = runs;
    fillRunFilters();
    renderRuns();
  }

  /** The dataset of a run (through its query), for filtering. */
  function runDataset(run) {
    const q = state.queries.get(run.query_id);
    return q ? q.dataset_id : "";
  }

  function fillRunFilters() {
    const fill = (id, values) => {
      const select = $(id);
      const previous = select.value;
      select.replaceChildren(el("option", { value: "", text: "all" }), ...values.map((v) => el("option", { value: v, text: v })));
      select.value = values.includes(previous) ? previous : "";
    };
    fill("runs-filter-dataset", state.datasets.map((d) => d.id));
    fill("runs-filter-backend", state.backends.map((b) => b.id));
  }

  function renderRuns() {
    const ds = $("runs-filter-dataset").value;
    const be = $("runs-filter-backend").value;
    const st = $("runs-filter-status").value;
    const shown = state.runs.filter((r) => (!ds || runDataset(r) === ds) && (!be || r.backend_used === be) && (!st || r.status === st));
    const list = $("runs-list");
    list.replaceChildren(...shown.map(renderRun));
    if (shown.length === 0) list.append(el("p", { className: "empty", text: state.runs.length ? "No run matches the filters." : "No runs yet." }));
    // ε charged per dataset by the runs shown.
    const spent = new Map();
    for (const r of shown) {
      if (r.epsilon_consumed > 0) spent.set(runDataset(r) || "?", (spent.get(runDataset(r) || "?") || 0) + r.epsilon_consumed);
    }
    $("runs-summary").textContent = shown.length + " of " + state.runs.length + " runs" +
      (spent.size ? " · ε spent: " + [...spent].map(([d, e]) => d + " " + fmtNum(e)).join(", ") : "");
    const history = window.PrismHistory;
    $("spend-history").replaceChildren(history.chart(history.series(shown, state.me ? state.me.id : null, runDataset)));
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
    if (room.status === "pending" || room.status === "ready") {
      const cancel = el("button", { type: "button", className: "secondary cancel-room", text: "Cancel room" });
      cancel.addEventListener("click", async () => {
        cancel.disabled = true;
        errorSlot.hidden = true;
        try {
          const answer = (await api("POST", "/data_rooms/" + encodeURIComponent(room.id) + "/cancel", {})).data;
          node.replaceWith(renderRoom(answer));
        } catch (e) {
          show(errorSlot, e.message);
          cancel.disabled = false;
        }
      });
      let actions = node.querySelector(".actions");
      if (!actions) {
        actions = el("div", { className: "actions" });
        node.append(actions);
      }
      actions.append(cancel);
    }
    if (room.error_message) node.append(el("p", { className: "error room-error-message", text: room.error_message }));
    if (room.result !== null && room.result !== undefined) {
      node.append(resultTable(room.result, room.ci95_half_width) || jsonDetails("Result", room.result, "room-result"));
      const dl = downloads("prism-room-" + room.id, room.result, room.ci95_half_width, room.proof_artifacts);
      if (dl) node.append(dl);
    }
    if (typeof room.execution_time_ms === "number") {
      node.append(el("div", { className: "meta", text: "executed in " + fmtMs(room.execution_time_ms) }));
    }
    if (room.proof_artifacts && typeof room.proof_artifacts === "object" && Object.keys(room.proof_artifacts).length > 0) {
      const panel = proofPanel(room.proof_artifacts);
      if (panel) node.append(panel);
      node.append(jsonDetails("Raw proof artifacts (JSON)", room.proof_artifacts, "proof"));
    }
    return node;
  }

  /** Opens the rooms tab with one room scrolled into view and marked. */
  async function showRoom(id) {
    state.loaded.rooms = true; // loaded just below, once
    selectTab("rooms");
    await loadRooms();
    const card = $("rooms-list").querySelector(".room[data-room-id='" + CSS.escape(id) + "']");
    if (card) {
      card.classList.add("highlight");
      card.scrollIntoView({ block: "start" });
    }
  }

  // ---------- new data room ----------

  async function loadOrganizations() {
    try {
      const orgs = (await api("GET", "/organizations")).data;
      state.organizations = Array.isArray(orgs) ? orgs : [];
    } catch (e) {
      show($("room-form-error"), e.message);
      return;
    }
    const box = $("room-participants");
    box.replaceChildren(...state.organizations.map((o) => el("div", { className: "participant-pick" },
      el("label", { className: "inline" },
        el("input", { type: "checkbox", className: "room-participant", value: o.id }),
        " " + o.id + (o.connected ? "" : " (offline)")),
      el("input", { type: "number", className: "room-party-epsilon", min: "0", step: "0.05", dataset: { org: o.id },
        placeholder: "ε (default)", "aria-label": "ε " + o.id + " spends" }))));
  }

  /** `column: a, b` lines into `{column: ["a", "b"]}`. */
  function parseGroupKeys(text) {
    const keys = {};
    for (const line of text.split(/\r?\n/)) {
      if (!line.trim()) continue;
      const at = line.indexOf(":");
      if (at < 1) throw new Error("group keys: write each line as column: value, value (got " + JSON.stringify(line) + ")");
      keys[line.slice(0, at).trim()] = line.slice(at + 1).split(",").map((v) => v.trim()).filter((v) => v !== "");
    }
    return keys;
  }

  async function createRoom(ev) {
    ev.preventDefault();
    const errorBox = $("room-form-error");
    hide(errorBox);
    const participants = [...document.querySelectorAll(".room-participant:checked")].map((c) => c.value);
    const perParty = {};
    for (const input of document.querySelectorAll(".room-party-epsilon")) {
      if (input.value.trim() !== "" && participants.includes(input.dataset.org)) perParty[input.dataset.org] = Number(input.value);
    }
    let body;
    try {
      body = {
        name: $("room-name").value,
        description: $("room-description").value,
        query_text: $("room-sql").value,
        backend: "mpc_backend",
        participants,
        group_keys: parseGroupKeys($("room-keys").value),
      };
    } catch (e) {
      show(errorBox, e.message);
      return;
    }
    if ($("room-epsilon").value.trim() !== "") body.epsilon = Number($("room-epsilon").value);
    if (Object.keys(perParty).length) body.participant_epsilon = perParty;
    const button = $("create-room");
    button.disabled = true;
    try {
      const room = (await api("POST", "/data_rooms", body)).data;
      $("room-form").reset();
      $("new-room").open = false;
      await showRoom(room.id);
    } catch (e) {
      show(errorBox, e.message);
    } finally {
      button.disabled = false;
    }
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
    if (state.organizations.length === 0) loadOrganizations();
    list.replaceChildren(...rooms.map(renderRoom));
    if (rooms.length === 0) list.append(el("p", { className: "empty", text: "No data rooms yet." }));
  }

  // ---------- audit ----------

  /** Loads the whole log (pages of 1000) and shows it newest first. */
  async function loadAudit() {
    const errorBox = $("audit-error");
    hide(errorBox);
    hide($("audit-verify"));
    state.loaded.audit = true;
    const limit = 1000;
    const all = [];
    try {
      for (let after = 0, page = 0; page < 100; page++) {
        const entries = (await api("GET", "/audit?after=" + after + "&limit=" + limit)).data;
        const list = Array.isArray(entries) ? entries : [];
        all.push(...list);
        if (list.length < limit) break;
        after = Math.max(after, ...list.map((e) => Number(e.seq) || 0));
      }
    } catch (e) {
      state.loaded.audit = false;
      $("audit-list").replaceChildren();
      show(errorBox, e.message);
      return;
    }
    state.audit = all.sort((a, b) => (Number(b.seq) || 0) - (Number(a.seq) || 0));
    renderAudit();
  }

  function renderAudit() {
    const list = $("audit-list");
    const needle = $("audit-filter").value.trim().toLowerCase();
    const shown = needle === "" ? state.audit : state.audit.filter((e) =>
      [e.actor, e.action, e.target, JSON.stringify(e.details)].some((f) => String(f).toLowerCase().includes(needle)));
    if (shown.length === 0) {
      list.replaceChildren(el("p", { className: "empty", text: state.audit.length ? "No entry matches the filter." : "The audit log is empty." }));
      return;
    }
    const tbody = el("tbody", null, ...shown.map((e) => el("tr", { dataset: { seq: String(e.seq) } },
      el("td", { className: "num", text: e.seq }),
      el("td", { text: e.at }),
      el("td", { text: e.actor }),
      el("td", { className: "mono", text: e.action }),
      el("td", { className: "mono target", text: e.target }),
      el("td", { className: "mono details", text: JSON.stringify(e.details) }))));
    list.replaceChildren(el("table", { className: "audit" },
      el("thead", null, el("tr", null, ...["#", "Time", "Actor", "Action", "Target", "Details"].map((h) => el("th", { text: h })))),
      tbody));
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
    $("tabs").addEventListener("keydown", tabKeys);
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
    $("delta").addEventListener("input", scheduleValidation);
    $("sql").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("query-form").requestSubmit();
    });
    $("query-form").addEventListener("submit", runQuery);
    $("refresh-runs").addEventListener("click", loadRuns);
    $("refresh-rooms").addEventListener("click", loadRooms);
    $("refresh-audit").addEventListener("click", loadAudit);
    $("audit-filter").addEventListener("input", renderAudit);
    for (const id of ["runs-filter-dataset", "runs-filter-backend", "runs-filter-status"]) $(id).addEventListener("change", renderRuns);
    $("room-form").addEventListener("submit", createRoom);
    $("verify-audit").addEventListener("click", verifyAudit);

    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
  }

  init();
})();
