// cadbroker portal. Talks to the broker's own API with the portal's HttpOnly cookie (no token
// ever reaches this script) and sends the sign-in's CSRF token on every state-changing call.
import { LANGUAGES, clock, duration, phase, reason, setLanguage, t } from "/portal/i18n.js";

const LIVE = new Set(["Queued", "Starting", "Ready", "Ending"]);
const REFRESH_MS = 5000;
const state = { info: null, me: null, pools: [], sessions: new Map(), streams: new Map(), adminPools: new Map(), timer: null };

const $ = (id) => document.getElementById(id);

/** Creates an element: h("button", { id: "x", onclick: f }, "text", child…). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && state.me) headers["x-csrf-token"] = state.me.csrf;
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const err = new Error(data?.error?.message ?? `${res.status} ${res.statusText}`);
    err.status = res.status;
    err.code = data?.error?.code;
    throw err;
  }
  return data;
}

function notice(message, isError = false) {
  const el = $("notice");
  el.textContent = message;
  el.className = isError ? "notice error" : "notice";
  el.setAttribute("role", isError ? "alert" : "status");
  el.hidden = !message;
}

function fail(e) {
  if (e.status === 401) return signedOut();
  notice(t("error", { message: e.message }), true);
}

/** Re-renders a container while keeping keyboard focus on the element with the same id. */
function replaceKeepingFocus(container, children) {
  const focused = document.activeElement?.id;
  container.replaceChildren(...children);
  if (focused && container.contains(document.getElementById(focused))) document.getElementById(focused).focus();
}

// === language ===

function setupLanguage(initial) {
  const select = $("language");
  select.replaceChildren(...Object.entries(LANGUAGES).map(([code, name]) => h("option", { value: code }, name)));
  select.value = LANGUAGES[initial] ? initial : "en";
  setLanguage(select.value);
  select.addEventListener("change", () => {
    localStorage.setItem("cadbroker.language", select.value);
    setLanguage(select.value);
    render();
  });
}

// === sign-in ===

function showSignIn() {
  $("workspace").hidden = true;
  $("sign-in").hidden = false;
  $("whoami").hidden = true;
  $("sign-out").hidden = true;
  $("dev-login").hidden = !state.info.devLogin;
  $("oidc").hidden = !state.info.oidc;
  $("oidc-button").textContent = state.info.oidc ?? "";
  $("no-sign-in").hidden = state.info.devLogin || !!state.info.oidc;
}

async function devLogin(event) {
  event.preventDefault();
  const groups = $("dev-groups").value.split(",").map((g) => g.trim()).filter(Boolean);
  try {
    state.me = await api("POST", "/portal/dev-login", { user: $("dev-user").value.trim(), groups, admin: $("dev-admin").checked });
    notice("");
    await enterWorkspace();
  } catch (e) {
    notice(t("error", { message: e.message }), true);
  }
}

async function signOut() {
  try { await api("POST", "/portal/logout"); } catch { /* signed out either way */ }
  signedOut();
}

function signedOut() {
  state.me = null;
  for (const s of state.streams.values()) s.close();
  state.streams.clear();
  state.sessions.clear();
  state.adminPools.clear();
  $("admin-pools").replaceChildren();
  clearInterval(state.timer);
  showSignIn();
}

// === workspace ===

async function enterWorkspace() {
  $("sign-in").hidden = true;
  $("workspace").hidden = false;
  $("sign-out").hidden = false;
  $("whoami").hidden = false;
  $("admin").hidden = !state.me.admin;
  renderWho();
  await refresh();
  clearInterval(state.timer);
  state.timer = setInterval(() => refresh().catch(fail), REFRESH_MS);
  $("main").focus();
}

function renderWho() {
  const who = $("whoami");
  who.replaceChildren(t("signedInAs", { user: state.me.name ?? state.me.user }));
  if (state.me.admin) who.append(" ", h("span", { class: "badge" }, t("adminBadge")));
}

async function refresh() {
  const [pools, sessions] = await Promise.all([api("GET", "/api/v1/pools"), api("GET", "/api/v1/sessions")]);
  state.pools = pools;
  for (const s of sessions) update(s, false);
  renderPools();
  renderSessions();
  if (state.me.admin) await renderAdmin(sessions);
}

function update(session, announce = true) {
  const before = state.sessions.get(session.id);
  // Replace, never merge: absent fields (a lifted warning, a spent queue position) are news.
  state.sessions.set(session.id, session);
  if (session.user === state.me?.user && LIVE.has(session.phase)) watch(session.id);
  if (announce && before && session.user === state.me?.user && before.phase !== session.phase) {
    notice(`${poolName(session.pool)}: ${phase(session.phase)}`);
  }
}

/** Follows a session's server-sent events until it ends. */
function watch(id) {
  if (state.streams.has(id)) return;
  const stream = new EventSource(`/api/v1/sessions/${encodeURIComponent(id)}/events`);
  const onEvent = (event) => {
    const view = JSON.parse(event.data);
    update(view);
    renderSessions();
    if (!LIVE.has(view.phase)) {
      stream.close();
      state.streams.delete(id);
      refresh().catch(fail);
    }
  };
  for (const name of ["phase", "warning", "update"]) stream.addEventListener(name, onEvent);
  state.streams.set(id, stream);
}

function poolName(name) {
  return state.pools.find((p) => p.name === name)?.displayName || name;
}

function renderPools() {
  const items = state.pools.map((p) => {
    const a = p.availability;
    return h("li", { class: "card" },
      h("h3", {}, p.displayName || p.name),
      p.description ? h("p", { class: "small" }, p.description) : null,
      h("p", { class: "small" }, t("gpus", { n: p.gpusPerWorkstation })),
      h("p", {}, t("availability", { warm: a.warm, starting: a.starting, free: a.free, queued: a.queued })),
      h("div", { class: "actions" },
        h("button", { id: `request-${p.name}`, class: "primary", type: "button", onclick: () => requestWorkstation(p.name) },
          t("request")),
      ));
  });
  replaceKeepingFocus($("pools"), items.length ? items : [h("li", {}, t("noPools"))]);
}

function renderSessions() {
  const mine = [...state.sessions.values()]
    .filter((s) => s.user === state.me.user)
    .sort((a, b) => (a.requestedAt < b.requestedAt ? 1 : -1))
    .slice(0, 8);
  const items = mine.map(sessionCard);
  replaceKeepingFocus($("sessions"), items.length ? items : [h("li", {}, t("noSessions"))]);
}

function sessionCard(s) {
  const live = LIVE.has(s.phase);
  const lines = [
    h("h3", {}, poolName(s.pool), " ", h("span", { class: "small muted" }, s.id)),
    h("p", {}, h("span", { class: `phase phase-${s.phase}`, "data-phase": s.phase }, phase(s.phase))),
  ];
  if (s.phase === "Queued" && s.queuePosition) lines.push(h("p", {}, t("queued", { pos: s.queuePosition })));
  if (live && s.estimatedWaitSeconds !== undefined && s.phase !== "Ready") {
    lines.push(h("p", {}, t("estimate", { time: duration(s.estimatedWaitSeconds) })));
  }
  if (s.message && live && s.phase !== "Ready") lines.push(h("p", { class: "small muted" }, s.message));
  if (s.readyAt && live) lines.push(h("p", { class: "small" }, t("readySince", { time: clock(s.readyAt) })));
  if (!live && s.endReason) lines.push(h("p", { class: "small" }, t("endedBecause", { reason: reason(s.endReason) })));
  if (live && s.warning) lines.push(warningBanner(s.warning));
  const actions = [];
  if (s.phase === "Ready") {
    actions.push(h("button", { id: `open-${s.id}`, class: "primary", type: "button", onclick: () => openDesktop(s.id) }, t("open")));
  }
  if (live && s.warning) {
    actions.push(h("button", { id: `keep-${s.id}`, type: "button", onclick: () => keepWorking(s.id) }, t("keepWorking")));
  }
  if (live && s.phase !== "Ending") {
    actions.push(h("button", { id: `end-${s.id}`, class: "danger", type: "button", onclick: () => endSession(s.id) }, t("end")));
  }
  return h("li", { class: "card", "data-session": s.id }, lines, h("div", { class: "actions" }, actions));
}

function warningBanner(w) {
  const key = { idletimeout: "warningIdle", maxlifetime: "warningLifetime" }[String(w.reason).toLowerCase()] ?? "warningOther";
  return h("p", { class: "warning", role: "alert" }, t(key, { time: clock(w.endsAt), reason: reason(w.reason) }));
}

async function requestWorkstation(pool) {
  try {
    const key = crypto.randomUUID();
    const res = await fetch("/api/v1/sessions", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": state.me.csrf, "idempotency-key": key },
      body: JSON.stringify({ pool }),
    });
    const body = await res.json();
    if (!res.ok) throw Object.assign(new Error(body?.error?.message ?? res.statusText), { status: res.status });
    update(body, false);
    notice(`${poolName(pool)}: ${phase(body.phase)}`);
    renderSessions();
    $(`end-${body.id}`)?.focus();
  } catch (e) {
    fail(e);
  }
}

async function openDesktop(id) {
  // Open the tab now, inside the click, so no popup blocker stops it; then fetch a fresh
  // single-use connect URL and send the tab there.
  const tab = window.open("about:blank", "_blank");
  try {
    const s = await api("GET", `/api/v1/sessions/${encodeURIComponent(id)}`);
    if (!s.connectUrl) throw new Error(phase(s.phase));
    if (tab) {
      tab.opener = null;
      tab.location.href = s.connectUrl;
    } else {
      location.href = s.connectUrl;
    }
  } catch (e) {
    tab?.close();
    fail(e);
  }
}

async function keepWorking(id) {
  try { update(await api("POST", `/api/v1/sessions/${encodeURIComponent(id)}/keepalive`)); renderSessions(); } catch (e) { fail(e); }
}

async function endSession(id) {
  try {
    update(await api("DELETE", `/api/v1/sessions/${encodeURIComponent(id)}`));
    await refresh();
  } catch (e) {
    fail(e);
  }
}

// === admin ===

async function renderAdmin(sessions) {
  const container = $("admin-pools");
  for (const pool of state.pools) {
    let block = state.adminPools.get(pool.name);
    if (!block) {
      block = adminPoolBlock(pool);
      state.adminPools.set(pool.name, block);
      container.append(block.root);
    }
    block.fill(pool);
    const decisions = await api("GET", `/api/v1/pools/${encodeURIComponent(pool.name)}/decisions`);
    block.decisions.replaceChildren(...(decisions.length
      ? decisions.slice(0, 6).map((d) => h("li", {}, h("time", { datetime: d.at }, clock(d.at)), " ", d.reason))
      : [h("li", {}, t("noDecisions"))]));
  }
  const rows = sessions.filter((s) => LIVE.has(s.phase)).map((s) => h("tr", {},
    h("td", {}, s.id), h("td", {}, s.user), h("td", {}, s.pool),
    h("td", {}, h("span", { class: `phase-${s.phase}` }, phase(s.phase))), h("td", {}, s.workstation ?? ""),
    h("td", {}, s.phase === "Ending" ? "" : h("button", {
      id: `admin-end-${s.id}`, class: "danger", type: "button", "aria-label": t("endFor", { id: s.id }), onclick: () => endSession(s.id),
    }, t("end")))));
  replaceKeepingFocus($("admin-sessions").tBodies[0], rows);
}

/** One pool's admin block; its form is built once so refreshes never clobber typing. */
function adminPoolBlock(pool) {
  const id = (k) => `cap-${pool.name}-${k}`;
  const counts = h("tbody");
  const input = (k, label) => h("div", { class: "field" },
    h("label", { for: id(k) }, t(label)),
    h("input", { id: id(k), name: k, type: "number", min: "0", max: "10000", required: true }));
  const form = h("form", { "aria-label": `${t("capacity")} ${pool.name}` },
    input("min", "min"), input("max", "max"), input("warm", "warmBuffer"),
    h("button", { type: "submit", class: "primary", id: id("save") }, t("save")));
  const decisions = h("ul", { class: "decisions", "aria-label": `${t("decisions")} ${pool.name}` });
  const root = h("div", { class: "card", "data-admin-pool": pool.name },
    h("h3", {}, `${pool.displayName || pool.name} (${pool.name})`),
    h("div", { class: "pool-admin" },
      h("div", {},
        h("table", {}, h("thead", {}, h("tr", {},
          ["warm", "starting", "inUse", "waiting", "capacity"].map((k) => h("th", { scope: "col" }, t(k))))), counts),
        form),
      h("div", {}, h("h4", {}, t("decisions")), decisions)));
  let filled = false;
  form.addEventListener("submit", (e) => { e.preventDefault(); saveCapacity(pool.name, form); });
  return {
    root, decisions,
    fill(p) {
      const a = p.availability;
      const c = p.capacity;
      counts.replaceChildren(h("tr", {}, h("td", {}, String(a.warm)), h("td", {}, String(a.starting)),
        h("td", {}, String(a.inUse)), h("td", {}, String(a.queued)), h("td", {}, `${c.min}–${c.max} (${t("warm").toLowerCase()} ${c.warm})`)));
      if (!filled) {
        for (const k of ["min", "max", "warm"]) form.elements[k].value = c[k];
        filled = true;
      }
    },
  };
}

async function saveCapacity(name, form) {
  const pool = state.pools.find((p) => p.name === name);
  const capacity = Object.fromEntries(["min", "max", "warm"].map((k) => [k, Number(form.elements[k].value)]));
  try {
    await api("PUT", `/api/v1/pools/${encodeURIComponent(name)}`, { ...pool.spec, capacity });
    notice(t("saved", { pool: name }));
    await refresh();
  } catch (e) {
    fail(e);
  }
}

// === start ===

function render() {
  if (!state.info) return;
  if (state.me) {
    renderWho();
    renderPools();
    renderSessions();
    for (const block of state.adminPools.values()) block.root.remove();
    state.adminPools.clear();
    if (state.me.admin) refresh().catch(fail);
  } else {
    showSignIn();
  }
}

async function start() {
  state.info = await api("GET", "/portal/api/config");
  setupLanguage(localStorage.getItem("cadbroker.language") || state.info.language);
  $("dev-login").addEventListener("submit", devLogin);
  $("sign-out").addEventListener("click", signOut);
  const error = new URLSearchParams(location.search).get("error");
  if (error) {
    notice(t("signInFailed", { code: error }), true);
    history.replaceState(null, "", "/portal/");
  }
  try {
    state.me = await api("GET", "/portal/api/me");
  } catch (e) {
    if (e.status !== 401) throw e;
  }
  if (state.me) await enterWorkspace();
  else showSignIn();
}

start().catch((e) => notice(t("error", { message: e.message }), true));
