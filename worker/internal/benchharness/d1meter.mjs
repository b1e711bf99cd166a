// Bench-only entry, never part of a build or a deploy: benchharness.MeterD1 puts it as worker.mjs into a
// copy of a worker's build directory, in front of that worker (renamed inner.mjs: toolgate's shim, or the
// plain-JS reference). It hands the worker a D1 binding that counts what reaches D1 and, when asked, delays
// every D1 call (one statement or one batch) by a fixed time before it goes out: a simulated round trip
// between the isolate and a distant database.
//
// The binding it wraps covers what both workers use: prepare(sql).bind(...) then raw()/run()/all()/first(),
// and batch([...]).
//
// The delay starts as the BENCH_D1_RTT_MS var (ms, default 0). Routes answered here, never by the worker:
//   GET  /_bench/d1   {"rttMs", "calls", "statements", "batches"}: counts since this isolate started
//   POST /_bench/d1   {"rttMs": N} sets the delay; answers the same object
import inner from "./inner.mjs";

const REAL = Symbol("real statement");
const counts = { calls: 0, statements: 0, batches: 0 };
let rttMs = null; // null until the first event reads the var

const delay = () => (rttMs > 0 ? new Promise((resolve) => setTimeout(resolve, rttMs)) : null);

// metered runs one D1 call of n statements after the delay.
async function metered(n, op) {
  counts.calls++;
  counts.statements += n;
  const d = delay();
  if (d !== null) await d;
  return op();
}

function statement(stmt) {
  return {
    [REAL]: stmt,
    bind: (...args) => statement(stmt.bind(...args)),
    run: () => metered(1, () => stmt.run()),
    raw: (options) => metered(1, () => stmt.raw(options)),
    all: () => metered(1, () => stmt.all()),
    first: (column) => metered(1, () => stmt.first(column)),
  };
}

function meteredD1(db) {
  return {
    prepare: (sql) => statement(db.prepare(sql)),
    batch: (list) => {
      counts.batches++;
      return metered(list.length, () => db.batch(list.map((s) => s[REAL])));
    },
  };
}

const envs = new WeakMap(); // the real env -> the env the worker sees
function meteredEnv(env) {
  if (rttMs === null) rttMs = Number(env.BENCH_D1_RTT_MS ?? 0) || 0;
  let e = envs.get(env);
  if (e === undefined) {
    e = { ...env, DB: meteredD1(env.DB) };
    envs.set(env, e);
  }
  return e;
}

const stats = () => Response.json({ rttMs, ...counts });

export default {
  async fetch(request, env, ctx) {
    const menv = meteredEnv(env);
    if (new URL(request.url).pathname === "/_bench/d1") {
      if (request.method === "POST") {
        const next = await request.json().catch(() => null);
        if (next === null || typeof next.rttMs !== "number" || next.rttMs < 0) {
          return new Response('body must be {"rttMs": N}, N >= 0\n', { status: 400 });
        }
        rttMs = next.rttMs;
      }
      return stats();
    }
    return inner.fetch(request, menv, ctx);
  },
  async scheduled(controller, env, ctx) {
    return inner.scheduled?.(controller, meteredEnv(env), ctx);
  },
};
