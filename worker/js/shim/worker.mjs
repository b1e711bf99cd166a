// toolgate's worker shim (template: worker/js/shim/worker.mjs; `make build` copies it into build/ with
// goruntime.mjs, next to app.wasm and the patched wasm_exec.js). It replaces syumai's generated
// worker.mjs, which started a new Go instance and ran main() for every request.
//
// Modes, chosen per event by the GO_RUNTIME var (wrangler.toml [vars], or a Miniflare binding):
//   unset or "persistent": one Go instance per isolate, booted by the first event (concurrent first
//     events share the boot); every fetch and scheduled event is dispatched into it with its own env
//     and ctx and served by its own goroutine. If the instance dies (exit, trap), every request in flight
//     on it is answered 503 problem+json (runtime-restarted: retry with the same Idempotency-Key after
//     Retry-After), one JSON line is logged, and the next event boots a new instance.
//   "per-request": a new instance and main() for every event (syumai's model), for comparison and as a
//     fallback.
// A program still built on syumai's workers.Serve (not bridge.Serve) is always served per request: it
// cannot serve twice.
//
// Start-up (the module's top level, which Cloudflare runs before the first event and which may not
// generate random values, set timers or do I/O) instantiates the first event's instance ahead. That
// event still starts its Go runtime, because the runtime reads random data (hash seeds) as it starts.
//
// TOOLGATE_STARTUP_REHEARSAL = "on" also runs a rehearsal at start-up (goruntime.mjs, rehearse): a
// throwaway Go instance through its boot and one request, so that V8 has compiled that code before the
// first event. It is off by default: measured, it cut the first request's extra CPU from about 180 ms to
// 25-35 ms in plain workerd, but behind Miniflare V8 drops the code it compiled before the first event
// (no gain), and it roughly doubles the start-up's CPU, which Cloudflare bounds.
//
// TOOLGATE_BOOT_SEED (a secret: at least 32 random bytes as hex, e.g. `openssl rand -hex 32 | npx wrangler
// secret put TOOLGATE_BOOT_SEED`) boots the persistent Go instance at start-up instead (goruntime.mjs,
// bootAtStartup): Go's runtime and the app (catalog, engine) are ready before the first event, which then
// pays only for the code it runs first. While it boots there, Go's runtime seeds its own generator (hash
// seeds, math/rand) from the secret, the same in every isolate of the deployment; crypto/rand (ids, keys)
// reads crypto.getRandomValues, as always.
// A seed that is not valid hex of 32 bytes or more is ignored with a warning (the first event boots, as
// without it). The rehearsal is not run when the instance booted at start-up.
//
// With TOOLGATE_RUNTIME_STATS = "on", GET /_toolgate/runtime[?gc=1] answers the instance's statistics
// (Go heap from runtime.MemStats, goroutines, events served, the start-up's timings) without reaching
// the Go handler.
import { env as moduleEnv } from "cloudflare:workers";
import mod from "./app.wasm";
import { parseBootSeed } from "./bootseed.mjs";
import { Event, GoInstance, RuntimeStopped, crashRetryAfter, decodeHeaders, encodeHeaders, rehearse } from "./goruntime.mjs";

const STATS_PATH = "/_toolgate/runtime";
const NULL_BODY_STATUS = new Set([101, 204, 205, 304]);

let shared = null; // this isolate's persistent instance
let sharedReady = null; // its boot
let boots = 0;
let legacyProgram = false; // app.wasm uses syumai's workers.Serve
let spare = null; // an instance instantiated at start-up, for the first event that needs one

const perRequest = (env) => legacyProgram || env.GO_RUNTIME === "per-request";

// newInstance returns a new instance for an event, the start-up's spare first.
function newInstance() {
  const inst = spare ?? new GoInstance(mod);
  spare = null;
  boots++;
  return inst;
}

// instanceFor returns a booted instance for ev: the isolate's shared one, or ev's own.
async function instanceFor(ev) {
  if (!perRequest(ev.env)) {
    if (shared === null || shared.dead) {
      shared = newInstance();
      sharedReady = shared.boot(ev);
    }
    const inst = shared;
    await sharedReady;
    if (inst.legacy === null) return inst;
    // The first boot revealed a workers.Serve program: its instance serves one event (the first to
    // claim it), everyone else boots their own from now on.
    legacyProgram = true;
    if (shared === inst) shared = null;
    if (!inst.claimed) {
      inst.claimed = true;
      return inst;
    }
  }
  const inst = newInstance();
  await inst.boot(ev);
  return inst;
}

// Problem types, as problem.TypeBase + slug in Go (handler/problem).
const PROBLEM_TYPE_BASE = "https://toolgate.dev/problems/";

function problem(status, members, headers = {}) {
  return new Response(JSON.stringify({ status, ...members }) + "\n", {
    status,
    headers: { "content-type": "application/problem+json", "cache-control": "no-store", ...headers },
  });
}

// runtimeRestarted answers a request that the Go runtime abandoned when it died (already logged by
// GoInstance). Whatever the request had done is safe to redo with the same Idempotency-Key: a completed
// call replays, a charged one is not charged again, and after Retry-After (the longest tool lease) the
// abandoned attempt's lease has expired, so the retry takes the key over instead of waiting for it.
function runtimeRestarted() {
  const retryAfter = crashRetryAfter();
  return problem(
    503,
    {
      type: PROBLEM_TYPE_BASE + "runtime-restarted",
      title: "Runtime restarted",
      detail:
        "the gateway's runtime stopped while serving this request and restarts with the next one; " +
        `the same Idempotency-Key is safe to retry after ${retryAfter} s: it replays the call if it completed, ` +
        "or runs it without charging it twice",
      retryable: true,
      retryAfter,
    },
    { "retry-after": String(retryAfter) },
  );
}

// internalError answers an unexpected error of the shim itself (a bug): 500, logged as one JSON line.
function internalError(err) {
  console.error(JSON.stringify({ level: "error", msg: "toolgate: shim error", err: `${err?.stack ?? err}` }));
  return problem(500, {
    type: PROBLEM_TYPE_BASE + "internal",
    title: "Internal error",
    detail: "the gateway failed unexpectedly",
  });
}

async function fetch(request, env, ctx) {
  const ev = new Event("fetch", env, ctx);
  ctx.waitUntil(ev.done);
  try {
    const url = new URL(request.url);
    if (url.pathname === STATS_PATH && env.TOOLGATE_RUNTIME_STATS === "on") {
      const inst = await instanceFor(ev);
      const stats = inst.legacy ? { instance: inst.id } : inst.stats(ev, url.searchParams.get("gc") === "1");
      return Response.json({ mode: perRequest(env) ? "per-request" : "persistent", boots, startup, ...stats });
    }
    let body = null;
    if (request.body !== null) {
      body = new Uint8Array(await request.arrayBuffer());
      if (body.byteLength === 0) body = null;
    }
    const inst = await instanceFor(ev);
    if (inst.legacy !== null) {
      return await inst.legacyFetch(ev, new Request(request.url, { method: request.method, headers: request.headers, body }));
    }
    inst.fetch(ev, request.method, request.url, encodeHeaders(request.headers), body);
    const res = await ev.answered;
    return new Response(NULL_BODY_STATUS.has(res.status) ? null : res.body, {
      status: res.status,
      headers: decodeHeaders(res.headers),
    });
  } catch (err) {
    // The instance died with this request in flight (ev.stopped), or before it could take it.
    if (ev.stopped !== null || err instanceof RuntimeStopped) return runtimeRestarted();
    return internalError(err);
  } finally {
    ev.handlerReturned();
    ev.release();
  }
}

async function scheduled(controller, env, ctx) {
  const ev = new Event("scheduled", env, ctx);
  ctx.waitUntil(ev.done);
  try {
    const inst = await instanceFor(ev);
    if (inst.legacy !== null) {
      await inst.legacyScheduled(ev, controller);
      return;
    }
    inst.scheduled(ev, controller.cron, controller.scheduledTime);
    await ev.answered; // rejects with the scheduled function's error, failing the event
  } finally {
    ev.handlerReturned();
    ev.release();
  }
}

export default { fetch, scheduled };

// The start-up's timings (Date.now advances at the top level, unlike inside an event): the boot at start-up
// (TOOLGATE_BOOT_SEED), its outcome and the random bytes Go drew from the seed, the rehearsal until its answer (ms), the spare's instantiation (ms),
// and "ok", "off" or why not.
const startup = { bootMs: -1, boot: "off", seedBytes: 0, rehearsalMs: -1, instantiateMs: -1, rehearsal: "off" };
if (moduleEnv?.TOOLGATE_BOOT_SEED !== undefined && moduleEnv.TOOLGATE_BOOT_SEED !== "" && !perRequest(moduleEnv)) {
  bootAtStartup(moduleEnv);
}
if (shared === null && moduleEnv?.TOOLGATE_STARTUP_REHEARSAL === "on") {
  startup.rehearsal = "running";
  const t0 = Date.now();
  const rehearsed = (outcome) => {
    startup.rehearsalMs = Date.now() - t0;
    startup.rehearsal = outcome;
  };
  // A paid call with a key that no caller has: Go boots, builds the app from the vars and serves it up
  // to the key lookup, which fails (the rehearsal's D1 fails every statement); the answer is dropped.
  rehearse(mod, moduleEnv, "POST", "https://rehearsal.invalid/v1/tools/rehearsal/call",
    "authorization:Bearer tg_rehearsal\ncontent-type:application/json\nidempotency-key:rehearsal\n",
    new TextEncoder().encode("{}")).then(
    () => rehearsed("ok"),
    (err) => {
      rehearsed(`${err?.message ?? err}`);
      console.warn(JSON.stringify({ level: "warn", msg: "toolgate: the start-up rehearsal failed; the first request compiles the Go code itself", err: startup.rehearsal }));
    },
  );
}
if (shared === null) {
  const t1 = Date.now();
  spare = new GoInstance(mod);
  spare.instantiate();
  startup.instantiateMs = Date.now() - t1;
}

// bootAtStartup boots the isolate's persistent instance now, with the boot seed of env (see the top of
// this file), or warns why not; the first event then boots one as usual.
function bootAtStartup(env) {
  const t0 = Date.now();
  let outcome;
  try {
    const inst = new GoInstance(mod);
    outcome = inst.bootAtStartup(env, parseBootSeed(env.TOOLGATE_BOOT_SEED));
    startup.seedBytes = inst.seedBytes;
    if (outcome === "ok") {
      shared = inst;
      sharedReady = inst.ready;
      boots++;
    }
  } catch (err) {
    outcome = `${err?.message ?? err}`;
  }
  startup.bootMs = Date.now() - t0;
  startup.boot = outcome;
  if (outcome !== "ok") {
    console.warn(JSON.stringify({ level: "warn", msg: "toolgate: no boot at start-up; the first event boots the Go runtime", err: outcome }));
  }
}
