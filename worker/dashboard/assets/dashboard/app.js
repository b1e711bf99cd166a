// toolgate publisher dashboard: plain JS, no framework, no CDN. Reads the admin API with the token kept in
// sessionStorage, formats money from integer minor units with each currency's decimals, draws SVG by hand.
"use strict";

const TOKEN_KEY = "toolgate.adminToken";
const $ = (id) => document.getElementById(id);

// el builds an element: el("td", {class: "n", "data-x": 1}, "text", child...).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// money formats an integer amount of minor units with the currency's decimals, exactly (no floats).
function money(minor, currency, decimals) {
  const neg = minor < 0;
  let s = String(Math.abs(minor));
  if (decimals > 0) {
    s = s.padStart(decimals + 1, "0");
    s = s.slice(0, -decimals) + "." + s.slice(-decimals);
  }
  return (neg ? "-" : "") + s + (currency ? " " + currency : "");
}

function when(iso) {
  if (!iso) return "—";
  return new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

// short is when without the year and seconds, for narrow columns.
function short(iso) {
  return iso ? new Date(iso).toISOString().replace("T", " ").slice(5, 16) : "—";
}

class HTTPError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path) {
  const res = await fetch(path, { headers: { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) } });
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON: reported below */ }
  if (!res.ok) throw new HTTPError(res.status, body);
  if (body === null) throw new Error(`${path} did not answer JSON`);
  return body;
}

const state = { stats: null, callers: null, calls: null, attention: null, currency: null };

function showError(msg) {
  $("error").textContent = msg;
  $("error").hidden = !msg;
}

function showLogin() {
  $("login-panel").hidden = false;
  $("session").hidden = true;
  $("content").hidden = true;
  $("token").value = "";
  $("token").focus();
}

async function load() {
  showError("");
  $("loading").hidden = false;
  const days = Number($("range").value);
  const to = new Date();
  const from = new Date(to.getTime() - days * 86400000);
  try {
    const [stats, callers, calls, attention] = await Promise.all([
      api(`/v1/admin/stats?bucket=day&from=${from.toISOString().slice(0, 10)}&to=${to.toISOString()}`),
      api("/v1/admin/callers"),
      api("/v1/admin/calls?limit=50"),
      api("/v1/admin/attention"),
    ]);
    Object.assign(state, { stats, callers, calls, attention });
    $("login-panel").hidden = true;
    $("session").hidden = false;
    $("content").hidden = false;
    render();
  } catch (e) {
    if (e.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin();
      showError("The admin token was refused (401). Check the worker's ADMIN_TOKEN and enter it again.");
    } else {
      showError(`Could not load the dashboard: ${e.message}` + (e.status ? ` (HTTP ${e.status})` : "") +
        ". The numbers shown, if any, are from the last successful load.");
    }
  } finally {
    $("loading").hidden = true;
  }
}

function currencies() {
  const set = new Set(state.stats.totals.map((t) => t.currency));
  for (const c of state.callers.callers) for (const b of c.balances) set.add(b.currency);
  return [...set].sort();
}

function decimalsOf(currency) {
  const c = state.stats.currencies[currency];
  if (c) return c.decimals;
  for (const cl of state.callers.callers) for (const b of cl.balances) if (b.currency === currency) return b.decimals;
  return 2;
}

function render() {
  const list = currencies();
  const sel = $("currency");
  if (!list.includes(state.currency)) state.currency = list[0] || null;
  sel.replaceChildren(...list.map((c) => el("option", { value: c, selected: c === state.currency ? "" : null }, c)));
  sel.disabled = list.length < 2;
  renderKPIs();
  renderChart();
  renderTools();
  renderCallers();
  renderAttention();
  renderCalls();
}

const fmt = (minor) => money(minor, state.currency, decimalsOf(state.currency));

function renderKPIs() {
  const t = state.stats.totals.find((x) => x.currency === state.currency);
  const box = $("kpis");
  if (!t) {
    box.replaceChildren(el("p", { class: "empty" }, "No usage in this range yet: once a tool is called, revenue and calls appear here."));
    return;
  }
  const kpi = (label, value, id) => el("div", { class: "kpi", id }, el("b", {}, value), el("span", {}, label));
  const failures = t.failures5xx + t.failuresTimeout + t.failures4xx;
  box.replaceChildren(
    kpi("revenue", fmt(t.charged), "kpi-revenue"),
    kpi("refunds", fmt(t.refunded), "kpi-refunds"),
    kpi("net", fmt(t.net), "kpi-net"),
    kpi("calls executed", t.calls, "kpi-calls"),
    kpi("duplicates absorbed", t.replays + t.waits, "kpi-absorbed"),
    kpi("upstream failures", failures, "kpi-failures"),
    kpi("credits and top-ups", fmt(t.credited), "kpi-credited"),
  );
}

function renderChart() {
  const rows = state.stats.series.filter((s) => s.currency === state.currency);
  const box = $("chart");
  if (rows.length === 0) {
    box.replaceChildren(el("p", { class: "empty" }, "No charges or refunds in this range."));
    return;
  }
  // One slot per day of the range, so that quiet days show as gaps.
  const from = Date.parse(state.stats.from), to = Date.parse(state.stats.to);
  const days = [];
  for (let t = from; t < to; t += 86400000) days.push(t);
  const byDay = new Map(rows.map((r) => [Date.parse(r.start), r]));
  const W = 1100, H = 240, L = 70, B = 24, T = 10;
  const max = Math.max(1, ...rows.map((r) => Math.max(r.charged, r.refunded)));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const slot = (W - L) / days.length, bw = Math.max(2, slot * 0.35);
  const ns = "http://www.w3.org/2000/svg";
  const s = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "revenue, refunds and net per day" });
  for (let i = 0; i <= 4; i++) {
    const v = Math.round((max * i) / 4);
    svg.append(s("line", { x1: L, x2: W, y1: y(v), y2: y(v), stroke: "#eceff4" }), s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v).split(" ")[0]));
  }
  let path = "";
  days.forEach((d, i) => {
    const r = byDay.get(d) || { charged: 0, refunded: 0, net: 0 };
    const x = L + i * slot + slot / 2;
    const title = `${new Date(d).toISOString().slice(0, 10)}: revenue ${fmt(r.charged)}, refunds ${fmt(r.refunded)}, net ${fmt(r.net)}`;
    const g = s("g", { "data-day": new Date(d).toISOString().slice(0, 10), "data-net-minor": r.net });
    g.append(s("title", {}, title));
    g.append(s("rect", { x: x - bw, y: y(r.charged), width: bw, height: y(0) - y(r.charged), fill: "var(--rev)" }));
    g.append(s("rect", { x: x, y: y(r.refunded), width: bw, height: y(0) - y(r.refunded), fill: "var(--ref)" }));
    svg.append(g);
    path += `${i ? "L" : "M"}${x},${y(Math.max(r.net, 0))}`;
    if (days.length <= 31 && (i % Math.ceil(days.length / 10) === 0)) {
      svg.append(s("text", { x, y: H - 6, "text-anchor": "middle" }, new Date(d).toISOString().slice(5, 10)));
    }
  });
  svg.append(s("path", { d: path, fill: "none", stroke: "var(--net)", "stroke-width": 2 }));
  const legend = el("div", { class: "legend" },
    el("span", {}, el("i", { style: "background:var(--rev)" }), "revenue"),
    el("span", {}, el("i", { style: "background:var(--ref)" }), "refunds"),
    el("span", {}, el("i", { style: "background:var(--net)" }), "net"));
  box.replaceChildren(svg, legend);
}

function table(head, rows, empty) {
  if (rows.length === 0) return el("p", { class: "empty" }, empty);
  return el("table", {},
    el("thead", {}, el("tr", {}, head.map(([h, n]) => el("th", { class: n ? "n" : null }, h)))),
    el("tbody", {}, rows));
}

function renderTools() {
  const rows = state.stats.tools.filter((t) => t.currency === state.currency && t.tool !== "").map((t) => {
    const avg = t.calls ? Math.round(t.latencyMsSum / t.calls) + " ms" : "—";
    return el("tr", { "data-tool": t.tool, "data-net-minor": t.net, "data-charged-minor": t.charged, "data-refunded-minor": t.refunded },
      el("td", {}, t.tool), el("td", { class: "n" }, t.calls), el("td", { class: "n" }, t.replays),
      el("td", { class: "n" }, t.waits), el("td", { class: "n" }, t.failures5xx), el("td", { class: "n" }, t.failuresTimeout),
      el("td", { class: "n" }, t.failures4xx), el("td", { class: "n" }, `${t.paymentRequired} / ${t.inProgress} / ${t.mismatches}`),
      el("td", { class: "n charged" }, fmt(t.charged)), el("td", { class: "n refunded" }, fmt(t.refunded)),
      el("td", { class: "n net" }, fmt(t.net)), el("td", { class: "n" }, avg));
  });
  $("tools").replaceChildren(table(
    [["tool"], ["calls", 1], ["replays", 1], ["waits", 1], ["5xx", 1], ["timeouts", 1], ["4xx", 1], ["402 / 409 / 422", 1],
      ["revenue", 1], ["refunds", 1], ["net", 1], ["avg latency", 1]],
    rows, "No tool was called in this range."));
}

function renderCallers() {
  const balances = new Map(state.callers.callers.map((c) => [c.id, c]));
  const rows = state.stats.topCallers.filter((c) => c.currency === state.currency).map((c) => {
    const info = balances.get(c.caller);
    const bal = info?.balances.find((b) => b.currency === state.currency);
    return el("tr", { "data-caller": c.caller },
      el("td", {}, info?.name ? `${info.name} (${c.caller})` : c.caller), el("td", { class: "n" }, c.calls + c.replays + c.waits),
      el("td", { class: "n" }, fmt(c.net)), el("td", { class: "n balance" }, bal ? fmt(bal.balance) : "—"),
      el("td", { class: "n" }, bal && bal.owed ? fmt(bal.owed) : "—"), el("td", { title: when(c.lastAt) }, short(c.lastAt)));
  });
  $("callers").replaceChildren(table([["caller"], ["requests", 1], ["net", 1], ["balance", 1], ["owed", 1], ["last seen (UTC)"]],
    rows, "No caller used a tool in this range."));
}

function renderAttention() {
  const a = state.attention;
  const parts = [];
  if (a.stuck.length) {
    parts.push(el("h3", {}, `${a.stuck.length} call(s) in progress past their lease`),
      el("p", { class: "note" }, "Their owner crashed or lost its final writes; the next cron sweep refunds and fails them."),
      table([["caller"], ["tool"], ["lease expired"], ["charge"]], a.stuck.map((c) => el("tr", {},
        el("td", {}, c.caller), el("td", {}, c.tool), el("td", {}, when(c.leaseExpiresAt)), el("td", {}, `${c.chargeState} ${c.amount} ${c.currency}`))), ""));
  }
  if (a.owed.length) {
    parts.push(el("h3", {}, `${a.owed.length} caller(s) owe money`),
      table([["caller"], ["owed", 1]], a.owed.map((o) => el("tr", {}, el("td", {}, o.caller),
        el("td", { class: "n" }, money(o.owed, o.currency, o.decimals)))), ""));
  }
  const pending = a.pendingSettlements || [];
  if (pending.length) {
    parts.push(el("h3", {}, `${pending.length} x402 payment(s) with a settle outcome not known yet`),
      el("p", { class: "note" }, "The answer was delivered; the cron settles the same payment again until it settles, is refused (a loss) or expires."),
      table([["payer"], ["amount", 1], ["attempts", 1], ["next attempt"], ["valid until"]], pending.map((p) => el("tr", {},
        el("td", {}, p.payer), el("td", { class: "n" }, `${p.amount} ${p.currency}`), el("td", { class: "n" }, String(p.attempts)),
        el("td", {}, when(p.nextAttemptAt)), el("td", {}, when(p.validBefore)))), ""));
  }
  const losses = a.losses || [];
  if (losses.length) {
    parts.push(el("h3", {}, `${losses.length} x402 payment(s) lost after delivery`),
      el("p", { class: "note" }, "The answer was delivered and the settle then failed for good: recorded losses."),
      table([["payer"], ["amount", 1], ["reason"]], losses.map((p) => el("tr", {},
        el("td", {}, p.payer), el("td", { class: "n" }, `${p.amount} ${p.currency}`), el("td", {}, p.reason || "—"))), ""));
  }
  if (!parts.length) parts.push(el("p", { class: "empty", id: "attention-empty" }, "Nothing needs attention: no call is stuck past its lease, no caller owes money, no x402 settle is pending and no payment was lost."));
  $("attention").replaceChildren(...parts);
}

function renderCalls() {
  const rows = state.calls.calls.map((c, i) => el("tr", { class: "click", "data-index": i, "data-key": c.key, onclick: () => showTrace(i) },
    el("td", {}, when(c.updatedAt)), el("td", {}, c.caller), el("td", {}, c.tool),
    el("td", {}, el("span", { class: "pill " + c.status }, c.status)), el("td", { class: "n" }, c.responseStatus || "—"),
    el("td", {}, c.chargeState), el("td", { class: "n" }, `${c.amount} ${c.currency}`)));
  $("calls").replaceChildren(table([["updated"], ["caller"], ["tool"], ["status"], ["answer", 1], ["charge"], ["amount", 1]],
    rows, "No calls are stored (records are kept for each tool's TTL, then swept; the counters above remain)."));
  $("trace").hidden = true;
}

function showTrace(i) {
  const c = state.calls.calls[i];
  for (const tr of document.querySelectorAll("#calls tr.selected")) tr.classList.remove("selected");
  document.querySelector(`#calls tr[data-index="${i}"]`)?.classList.add("selected");
  const box = $("trace");
  box.replaceChildren(
    el("h3", {}, `Trace of ${c.tool} for ${c.caller}`),
    el("p", { class: "note" }, `key ${c.key} · generation ${c.generation} · lease until ${when(c.leaseExpiresAt)} · kept until ${when(c.expiresAt)}` +
      (c.error ? ` · error: ${c.error}` : "")),
    table([["at"], ["event"], ["amount", 1], ["balance after", 1]], c.events.map((ev) => el("tr", { class: "event", "data-type": ev.type },
      el("td", {}, when(ev.at)), el("td", {}, ev.type), el("td", { class: "n" }, ev.amount ? `${ev.amount} ${c.currency}` : ""),
      el("td", { class: "n" }, ev.balanceAfter || ""))), "No events."));
  box.hidden = false;
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  load();
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showError("");
  showLogin();
});
$("refresh").addEventListener("click", load);
$("range").addEventListener("change", load);
$("currency").addEventListener("change", () => { state.currency = $("currency").value; render(); });

if (sessionStorage.getItem(TOKEN_KEY)) load();
else showLogin();
