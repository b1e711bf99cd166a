// The plain-JS reference worker: the ceiling the Go worker is measured against by `make bench`.
//
// It serves POST /v1/tools/{tool}/call the way handler.Engine does on the happy path, with the same
// statements on the same D1 schema (sql.mjs is store/sqlstore's SQL, verbatim): authenticate the bearer
// key (cached in memory for a minute, as the engine does), claim the scoped key, charge, call the
// upstream, complete, answer the envelope. A completed key replays; an in-progress one is polled with
// Peek under the engine's backoff (25 ms doubling to 500 ms, jitter [d/2, d], up to 5 s), then claimed.
// Error paths (refunds, 4xx rule, takeovers) are out of scope: the bench never takes them.
//
// POST /_seed?caller=ID&key=BEARER&amount=MINOR seeds a caller and a USD credit (the Go worker uses its
// admin API instead). Configuration: the TOOLS var (the catalog; only name, price, currency, upstream.url
// and lease/ttl in seconds are read).
import * as SQL from "./sql.mjs";

const LEASE_MS = 10_000; // handler.DefaultToolLease
const TTL_MS = 24 * 3600_000; // store.DefaultTTL
const WAIT_MS = 5_000; // handler.DefaultWaitForInProgress
const CALLER_TTL_MS = 60_000;
const DECIMALS = { USD: 2, EUR: 2, JPY: 0 };

const encoder = new TextEncoder();
let catalog = null; // Map name -> {name, price, currency, url}
const callers = new Map(); // sha256(key) hex -> {caller, expires}

function tools(env) {
  if (catalog === null) {
    catalog = new Map();
    for (const t of JSON.parse(env.TOOLS).tools) {
      const d = DECIMALS[t.currency] ?? 2;
      const [whole, frac = ""] = (t.price ?? "0").split(".");
      const price = Number(whole) * 10 ** d + Number(frac.padEnd(d, "0") || 0);
      catalog.set(t.name, { name: t.name, price, currency: t.currency, url: t.upstream.url, d });
    }
  }
  return catalog;
}

async function sha256hex(s) {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(s)));
  return Array.from(h, (b) => b.toString(16).padStart(2, "0")).join("");
}

function randomID(prefix) {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return prefix + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

const formatAmount = (minor, d) => (d === 0 ? String(minor) : (minor / 10 ** d).toFixed(d));

function problem(status, title) {
  return Response.json({ type: "about:blank", title, status }, { status, headers: { "content-type": "application/problem+json" } });
}

function answer(rec, replayed) {
  const headers = { "content-type": rec.resp_type, "cache-control": "no-store" };
  if (replayed) headers["idempotent-replayed"] = "true";
  return new Response(Uint8Array.from(atob(rec.resp_body), (c) => c.charCodeAt(0)), { status: rec.resp_status, headers });
}

// Record columns, in recordCols order (see sql.mjs claim/peek RETURNING lists).
const COLS = ["key", "status", "owner", "generation", "lease_expires_at", "expires_at", "fingerprint", "resp_status",
  "resp_type", "resp_body", "error", "charge_state", "charge_count", "charge_caller", "charge_currency", "charge_amount",
  "created_at", "updated_at"];
const record = (row) => Object.fromEntries(COLS.map((c, i) => [c, row[i]]));

async function authenticate(db, request) {
  const m = /^Bearer (.+)$/.exec(request.headers.get("authorization") ?? "");
  if (!m) return null;
  const hash = await sha256hex(m[1]);
  const now = Date.now();
  const hit = callers.get(hash);
  if (hit && hit.expires > now) return hit.caller;
  const row = await db.prepare(SQL.callerByKeyHash).bind(now, hash).first();
  if (row === null) return null;
  const caller = { id: row.caller, keyId: row.key_id, name: row.name };
  callers.set(hash, { caller, expires: now + CALLER_TTL_MS });
  return caller;
}

async function claim(db, key, owner, fingerprint) {
  const now = Date.now();
  const rows = await db.prepare(SQL.claim)
    .bind(key, owner, `${owner}:${now}`, now + LEASE_MS, now + TTL_MS, fingerprint, now, now, "", "").raw();
  return record(rows[0]);
}

// claimCharge claims and, if the claim wins, charges, in one batch (one D1 call), as
// sqlstore.Store.ClaimCharge does. It returns the record and the charge's rows.
async function claimCharge(db, tool, caller, key, owner, fingerprint) {
  const now = Date.now();
  const [claimed, charged] = await db.batch([
    db.prepare(SQL.claim).bind(key, owner, `${owner}:${now}`, now + LEASE_MS, now + TTL_MS, fingerprint, now, now, tool.name, caller.id),
    db.prepare(SQL.chargeClaimed).bind(tool.price, tool.price, now, caller.keyId ?? "", 0, key, owner, fingerprint, caller.id, tool.currency, tool.price,
      now, caller.keyId ?? "", tool.price),
  ]);
  // Batch rows are objects; their values are in column order.
  return { rec: record(Object.values(claimed.results[0])), charged: charged.results.map((r) => Object.values(r)) };
}

// execute runs a claimed key; charged holds the charge's rows if the claim already took it.
async function execute(db, tool, caller, rec, body, charged) {
  const now = Date.now();
  charged ??= await db.prepare(SQL.charge)
    .bind(tool.price, tool.price, now, caller.keyId ?? "", 0, rec.key, rec.owner, rec.generation, caller.id, tool.currency, tool.price,
      now, caller.keyId ?? "", tool.price).raw();
  if (charged.length !== 1) return problem(402, "Insufficient funds");
  const balance = charged[0][0];
  const up = await fetch(tool.url, {
    method: "POST",
    body,
    headers: { "content-type": "application/json", "idempotency-key": `tg-${rec.key.slice(3, 35)}`, "user-agent": "toolgate-js-reference" },
  });
  const upBody = await up.text();
  if (up.status >= 300) return problem(502, "Upstream failed");
  const env = {
    tool: tool.name,
    output: JSON.parse(upBody),
    upstream: { status: up.status, contentType: up.headers.get("content-type") ?? "", encoding: "json" },
    receipt: {
      callId: randomID("call_"), tool: tool.name, price: formatAmount(tool.price, tool.d), amount: formatAmount(tool.price, tool.d),
      currency: tool.currency, balanceAfter: formatAmount(balance, tool.d), refunded: false, at: new Date(now).toISOString(),
    },
  };
  const text = JSON.stringify(env);
  const done = Date.now();
  // Complete and count the call in one batch, as the Go engine does (store/sqlstore completeCounted).
  const hour = Math.floor(done / 3600000) * 3600000;
  const usage = JSON.stringify([[hour, caller.id, tool.name, tool.currency, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    done - now, done - now <= 100 ? 1 : 0, done - now > 100 && done - now <= 300 ? 1 : 0, 0, 0, done - now > 300 ? 1 : 0, done,
    caller.keyId ?? ""]]);
  const [completed] = await db.batch([
    db.prepare(SQL.completeCounted).bind(200, "application/json", btoa(text), done, done, done + TTL_MS, null, rec.key, rec.owner, rec.generation),
    db.prepare(SQL.countUsage).bind(usage),
  ]);
  if (completed.results.length !== 1) return problem(503, "Lost the lease");
  return new Response(text, { status: 200, headers: { "content-type": "application/json", "cache-control": "no-store" } });
}

// call serves one paid call and logs one JSON line, as the Go engine does.
async function call(request, env, toolName) {
  const start = Date.now();
  const res = await callInner(request, env, toolName);
  console.log(JSON.stringify({ level: "INFO", msg: "call", tool: toolName, status: res.status, durationMs: Date.now() - start }));
  return res;
}

async function callInner(request, env, toolName) {
  const db = env.DB;
  const caller = await authenticate(db, request);
  if (caller === null) return problem(401, "Unauthorized");
  const tool = tools(env).get(toolName);
  if (tool === undefined) return problem(404, "Unknown tool");
  const idem = request.headers.get("idempotency-key") ?? "";
  if (idem === "" || idem.length > 255) return problem(400, "Invalid Idempotency-Key");
  const body = JSON.stringify(JSON.parse(await request.text())); // canonical enough for the bench's inputs
  const key = "k1:" + (await sha256hex(`${caller.id}\0${tool.name}\0${idem}`));
  const fingerprint = "v1:" + (await sha256hex(`${tool.name}\0${body}`));
  const owner = randomID("o_");

  const first = await claimCharge(db, tool, caller, key, owner, fingerprint);
  let rec = first.rec;
  if (rec.fingerprint !== fingerprint) return problem(422, "Idempotency-Key reused with a different input");
  if (rec.status === "completed") return answer(rec, true);
  if (rec.status === "in_progress" && rec.owner === owner) return execute(db, tool, caller, rec, body, first.charged);
  // In progress elsewhere: wait for it, as Engine.waitThenReplay does.
  let delay = 25;
  for (let waited = 0; waited < WAIT_MS; ) {
    const d = Math.min(delay, WAIT_MS - waited);
    const slept = d / 2 + Math.random() * (d / 2);
    await new Promise((resolve) => setTimeout(resolve, slept));
    waited += slept;
    delay = Math.min(2 * delay, 500);
    const row = await db.prepare(SQL.peek).bind(key).raw();
    const now = Date.now();
    if (row.length === 1) {
      rec = record(row[0]);
      if (rec.status === "completed" && now < rec.expires_at) return answer(rec, true);
      if (rec.status === "in_progress" && now < rec.lease_expires_at) continue;
    }
    rec = await claim(db, key, owner, fingerprint);
    if (rec.status === "completed") return answer(rec, true);
    if (rec.status === "in_progress" && rec.owner === owner) return execute(db, tool, caller, rec, body);
  }
  return problem(409, "In progress");
}

async function seed(url, env) {
  const caller = url.searchParams.get("caller");
  const hash = await sha256hex(url.searchParams.get("key"));
  const amount = Number(url.searchParams.get("amount"));
  const now = Date.now();
  await env.DB.prepare(SQL.createCaller).bind(caller, caller, hash, now).run();
  const ref = `credit:seed-${caller}`;
  const rows = await env.DB.prepare(SQL.credit).bind(caller, "USD", amount, ref, caller, "USD", amount, now, ref).raw();
  return Response.json({ caller, balance: rows[0]?.[0] ?? null }, { status: 201 });
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const m = /^\/v1\/tools\/([^/]+)\/call$/.exec(url.pathname);
    if (m && request.method === "POST") return call(request, env, decodeURIComponent(m[1]));
    if (url.pathname === "/_seed" && request.method === "POST") return seed(url, env);
    if (url.pathname === "/healthz") return Response.json({ ok: true });
    return problem(404, "Not found");
  },
};
