// Test-only entry: toolgate's shim (build/worker.mjs) behind a D1 binding that injects faults. It is never
// part of a build or a deploy: worker/js/miniflare.mjs serves it in place of worker.mjs when its config has
// a "faults" object (Miniflare loads this file as the script at <buildDir>/_faults_entry.mjs, so
// "./worker.mjs" is the build's shim), and edgetest.Options.Faults sets that object.
//
// The config arrives as the TOOLGATE_FAULTS binding (JSON), one per worker:
//   {
//     "seed": 1,            // the PRNG's seed (miniflare.mjs adds the worker's index, so isolates differ)
//     "beforeRate": 0.05,   // share of D1 calls that fail before reaching D1 (nothing executed)
//     "afterRate": 0.05,    // share that execute, then fail: the reply is lost (D1 committed)
//     "latencyMs": 20,      // each eligible call first waits a uniform 0..latencyMs ms
//     "match": "ledger",    // optional: only statements (or batches with a statement) matching this regexp
//     "enabled": true,      // false: every call passes through untouched (default true)
//     "paused": false,      // true: every D1 call waits (in its own request's context) until paused is false:
//                           // a stalled database. stats.held counts the calls waiting, stats.heldTotal all that did
//     "worker": "w0"        // set by miniflare.mjs, echoed by the stats
//   }
// A fault is the error D1 itself throws when the connection drops: Error("D1_ERROR: Network connection lost.").
// The wrapper covers what the shim uses (goruntime.mjs d1/d1batch): prepare(sql).bind(...).raw()/run(), and
// batch([...]); all() and first() too.
//
// Routes answered here, never by Go (this entry only exists in tests):
//   GET  /_faults/stats    {"worker", "config", "stats": {"calls","before","after","delayed","passed","held","heldTotal"}}
//                          counts since this isolate started (a restart resets them)
//   POST /_faults/config   merges a JSON object into the config (a "seed" restarts the PRNG); answers stats
import shim from "./worker.mjs";

const LOST = "D1_ERROR: Network connection lost.";
const REAL = Symbol("real statement");
const SQL = Symbol("sql");

let cfg = null; // this isolate's config, from the first event's env
let rng = null;
let matcher = null;
const stats = { calls: 0, before: 0, after: 0, delayed: 0, passed: 0, held: 0, heldTotal: 0 };
// While paused, a D1 call polls this often with a timer of its own request (no I/O object crosses requests).
const PAUSE_POLL_MS = 5;

// mulberry32 is a small seeded PRNG: the same seed gives the same sequence of decisions.
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function configure(next) {
  const seeded = cfg === null || (next.seed !== undefined && next.seed !== cfg.seed);
  cfg = { enabled: true, beforeRate: 0, afterRate: 0, latencyMs: 0, seed: 1, ...cfg, ...next };
  matcher = cfg.match ? new RegExp(cfg.match) : null;
  if (seeded) rng = mulberry32(cfg.seed);
}

function init(env) {
  if (cfg === null) configure(JSON.parse(env.TOOLGATE_FAULTS ?? "{}"));
}

// faulted runs op (one D1 call: a statement or a batch) under the config.
async function faulted(sql, op) {
  if (cfg.paused) {
    stats.held++;
    stats.heldTotal++;
    try {
      while (cfg.paused) await new Promise((resolve) => setTimeout(resolve, PAUSE_POLL_MS));
    } finally {
      stats.held--;
    }
  }
  if (!cfg.enabled || (matcher !== null && !matcher.test(sql))) return op();
  stats.calls++;
  if (cfg.latencyMs > 0) {
    stats.delayed++;
    await new Promise((resolve) => setTimeout(resolve, rng() * cfg.latencyMs));
  }
  const r = rng();
  if (r < cfg.beforeRate) {
    stats.before++;
    throw new Error(LOST);
  }
  const result = await op();
  if (r < cfg.beforeRate + cfg.afterRate) {
    stats.after++;
    throw new Error(LOST);
  }
  stats.passed++;
  return result;
}

function wrapStatement(stmt, sql) {
  return {
    [REAL]: stmt,
    [SQL]: sql,
    bind: (...args) => wrapStatement(stmt.bind(...args), sql),
    run: () => faulted(sql, () => stmt.run()),
    raw: (options) => faulted(sql, () => stmt.raw(options)),
    all: () => faulted(sql, () => stmt.all()),
    first: (column) => faulted(sql, () => stmt.first(column)),
  };
}

function wrapD1(db) {
  return {
    prepare: (sql) => wrapStatement(db.prepare(sql), sql),
    batch: (list) =>
      faulted(list.map((s) => s[SQL]).join(";\n"), () => db.batch(list.map((s) => s[REAL]))),
  };
}

const envs = new WeakMap(); // the real env -> the env Go sees
function faultyEnv(env) {
  let e = envs.get(env);
  if (e === undefined) {
    e = { ...env, DB: wrapD1(env.DB) };
    envs.set(env, e);
  }
  return e;
}

const answer = () => Response.json({ worker: cfg.worker ?? null, config: cfg, stats });

async function fetch(request, env, ctx) {
  init(env);
  const { pathname } = new URL(request.url);
  if (pathname === "/_faults/stats" && request.method === "GET") return answer();
  if (pathname === "/_faults/config" && request.method === "POST") {
    let next;
    try {
      next = await request.json();
    } catch {
      return new Response("body must be a JSON object\n", { status: 400 });
    }
    if (next === null || typeof next !== "object" || Array.isArray(next)) {
      return new Response("body must be a JSON object\n", { status: 400 });
    }
    try {
      configure(next);
    } catch (e) {
      return new Response(`bad config: ${e.message}\n`, { status: 400 });
    }
    return answer();
  }
  return shim.fetch(request, faultyEnv(env), ctx);
}

async function scheduled(controller, env, ctx) {
  init(env);
  return shim.scheduled(controller, faultyEnv(env), ctx);
}

export default { fetch, scheduled };
