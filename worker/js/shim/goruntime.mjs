// goruntime.mjs: one Go (GOOS=js GOARCH=wasm) instance and the events it serves. Used by worker.mjs;
// `make build` copies both into build/. The Go side is worker/internal/bridge.
//
// Why this is more than "keep the instance in a variable": workerd runs every event (fetch, scheduled)
// in its own I/O context, and I/O started in a context belongs to it: a D1 query, a fetch or a
// setTimeout started while context A is current is cancelled when A ends, and A ends when its response
// is sent and its waitUntil promises have settled. ctx.waitUntil itself always extends the *current*
// context, whichever ctx object it is called on. Go runs goroutines of any event whenever JavaScript
// calls into the instance, so event B's goroutine can start a D1 query while A's context is current.
// If A then ends, B's query never settles and B hangs.
//
// So every event is a "host": each time JavaScript enters Go we know whose context is current (the
// event we dispatch, the host a timer or callback was created in), and every promise or timer Go creates
// is counted against that host. An event's ctx.waitUntil(ev.done) settles only once its own answer is
// out, its bridge.WaitUntil jobs are done and nothing Go started in its context is pending.
import "./wasm_exec.js"; // defines globalThis.Go (syumai's copy, patched by worker/js/patch-wasm-exec.mjs)
import { connect } from "cloudflare:sockets";
import { seedStream } from "./bootseed.mjs";

// wasm_exec.js stores a reference to a JS object as a NaN whose high word is this (NaN head | type 1).
const OBJECT_REF_HIGH = 0x7ff80000 | 1;
// An event whose Go work has not settled this long after its handler returned stops waiting for it. This
// is the platform's own limit for waitUntil after a response.
const KEEPALIVE_CAP_MS = 30_000;
// While an event waits for Go, a timer of its own must be pending: workerd cancels an invocation whose
// context has nothing pending ("hung") even if Go, running in another event's context, is about to answer.
const TICK_MS = 1_000;
// How long a caller should wait before retrying a request that a dying runtime abandoned, until Go says
// (setCrashRetryAfter; the worker passes its longest tool lease): by then the abandoned call's lease has
// expired and a retry with the same Idempotency-Key takes it over instead of waiting for it.
const DEFAULT_CRASH_RETRY_AFTER_S = 30;
let crashRetryAfterSeconds = DEFAULT_CRASH_RETRY_AFTER_S; // per isolate: it outlives the instance that set it

// crashRetryAfter returns the Retry-After (whole seconds) for requests abandoned by a dying runtime.
export function crashRetryAfter() {
  return crashRetryAfterSeconds;
}

// RuntimeStopped is the error of every event a Go instance abandoned when it died (a wasm trap such as a
// stack overflow, Go's exit, a panic outside recover): the instance id and the cause.
export class RuntimeStopped extends Error {
  constructor(instance, reason) {
    super(`Go instance #${instance} stopped: ${reason}`);
    this.name = "RuntimeStopped";
    this.instance = instance;
    this.reason = reason;
  }
}

// Bits of the second argument of Go's settle(id, how, x) (bridge's calls_js.go).
const SETTLE_OK = 1; // the call succeeded (else x is, or the inbox holds, the error's message)
const SETTLE_IN_INBOX = 2; // the outcome's bytes are in Go's inbox, x of them (else x is the outcome)

const getInt64 = (mem, addr) => mem.getUint32(addr, true) + mem.getInt32(addr + 4, true) * 4294967296;

// Headers cross between JS and Go as one string of "name:value\n" lines: one call instead of one per
// header (names never contain ':', values never a newline).
export function encodeHeaders(headers) {
  let s = "";
  for (const [name, value] of headers) s += `${name}:${value}\n`;
  return s;
}

export function decodeHeaders(lines) {
  const headers = new Headers();
  for (const line of lines.split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) headers.append(line.slice(0, i), line.slice(i + 1));
  }
  return headers;
}

// HTTP messages cross between JS and Go as one Uint8Array each (Go pays a finalizer and calls back into
// JS for every JS value it holds). bridge's codec.go has the same four functions. Big-endian integers:
//   request:  meta length (uint32), meta "method\nurl\nheaderLines", body
//   response: status (uint16), meta length (uint32), meta "statusText\nheaderLines", body
// Methods, URLs and status texts never contain a newline.
const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

// pack lays out [prefix bytes left for the caller][meta length][meta][body] and returns the array and
// a DataView of it.
function pack(prefix, meta, body) {
  const m = utf8.encode(meta);
  const n = body?.byteLength ?? 0;
  const out = new Uint8Array(prefix + 4 + m.length + n);
  const view = new DataView(out.buffer);
  view.setUint32(prefix, m.length);
  out.set(m, prefix + 4);
  if (n > 0) out.set(body, prefix + 4 + m.length);
  return { out, view };
}

export function packRequest(method, url, headerLines, body) {
  return pack(0, `${method}\n${url}\n${headerLines}`, body).out;
}

// unpackRequest returns [method, url, headerLines, body (a view, or null if empty)].
export function unpackRequest(b) {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const m = view.getUint32(0);
  const meta = utf8Decoder.decode(b.subarray(4, 4 + m));
  const i = meta.indexOf("\n");
  const j = meta.indexOf("\n", i + 1);
  const body = b.byteLength > 4 + m ? b.subarray(4 + m) : null;
  return [meta.slice(0, i), meta.slice(i + 1, j), meta.slice(j + 1), body];
}

export function packResponse(status, statusText, headerLines, body) {
  const { out, view } = pack(2, `${statusText}\n${headerLines}`, body);
  view.setUint16(0, status);
  return out;
}

// unpackResponse returns {status, statusText, headers (header lines), body (a view, or null if empty)}.
export function unpackResponse(b) {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const m = view.getUint32(2);
  const meta = utf8Decoder.decode(b.subarray(6, 6 + m));
  const i = meta.indexOf("\n");
  return {
    status: view.getUint16(0),
    statusText: meta.slice(0, i),
    headers: meta.slice(i + 1),
    body: b.byteLength > 6 + m ? b.subarray(6 + m) : null,
  };
}

// reviveBlob turns the bridge's {"$b": base64} arguments back into bytes.
function reviveBlob(_, v) {
  if (v !== null && typeof v === "object" && typeof v.$b === "string") {
    return Uint8Array.from(atob(v.$b), (c) => c.charCodeAt(0));
  }
  return v;
}

// d1Rows turns raw() rows into JSON for Go: one string instead of a call per value. BLOBs (ArrayBuffer)
// become {"$b": base64}.
function d1Rows(rows) {
  return JSON.stringify(rows, (_, v) => {
    if (v instanceof ArrayBuffer) return blobJSON(new Uint8Array(v));
    return v;
  });
}

function blobJSON(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return { $b: btoa(bin) };
}

// Event is one fetch or scheduled invocation and the I/O context it runs in. Go receives it as a JS
// object and calls respond/answer/fail/hold/release on it.
export class Event {
  // The caller must construct an Event inside the invocation (so its promises and timers belong to
  // it) and pass ev.done to ctx.waitUntil. The event starts with one hold: the JS handler itself.
  constructor(kind, env, ctx) {
    this.kind = kind;
    this.env = env;
    this.ctx = ctx;
    this.open = 1;
    this.settled = false;
    this.stopped = null; // the RuntimeStopped error if the instance serving this event died
    this.answered = new Promise((resolve, reject) => {
      this._resolveAnswer = resolve;
      this._rejectAnswer = reject;
    });
    this.answered.catch(() => {}); // a failed answer is read by the handler, never unhandled
    this._hasAnswer = false;
    this.done = new Promise((resolve) => (this._resolveDone = resolve));
    this._onDone = [];
    this._returnedAt = 0;
    this._ticker = setInterval(() => {
      if (this._returnedAt > 0 && Date.now() - this._returnedAt >= KEEPALIVE_CAP_MS) this._finish(true);
    }, TICK_MS);
    this._arm();
  }

  // answer delivers the Go handler's response (status, "name:value\n" header lines, body bytes or null).
  answer(status, headers, body) {
    if (this._hasAnswer) return;
    this._hasAnswer = true;
    this._resolveAnswer({ status, headers, body });
  }

  // respond delivers the Go handler's packed response (packResponse).
  respond(packed) {
    const { status, headers, body } = unpackResponse(packed);
    this.answer(status, headers, body);
  }

  // fail delivers an error (a message, or an Error) instead of a response.
  fail(reason) {
    if (this._hasAnswer) return;
    this._hasAnswer = true;
    this._rejectAnswer(reason instanceof Error ? reason : new Error(reason));
  }

  // hold and release count work that needs this event's context to stay alive.
  hold() {
    this.open++;
  }

  release() {
    if (this.open > 0 && --this.open === 0) this._fireZero();
  }

  // track holds the event until promise p settles.
  track(p) {
    this.hold();
    p.then(
      () => this.release(),
      () => this.release(),
    );
  }

  // handlerReturned starts the KEEPALIVE_CAP_MS bound on how long the event outlives its handler.
  handlerReturned() {
    if (this._returnedAt === 0) this._returnedAt = Date.now();
  }

  // abandon ends the event because the Go instance serving it died (err: a RuntimeStopped), whether or
  // not Go had answered it: the handler answers from ev.stopped if it still can.
  abandon(err) {
    this.stopped = err;
    this.fail(err);
    this.open = 0;
    this._fireZero();
  }

  onDone(fn) {
    if (this.settled) fn();
    else this._onDone.push(fn);
  }

  // The zero check runs in this event's own context (a promise created here is resolved from whatever
  // context, and workerd runs its reaction here), one timer tick later, so Go continuations queued in
  // the same turn (they may start new work here) run first.
  _arm() {
    let fire;
    const zero = new Promise((resolve) => (fire = resolve));
    this._fireZero = fire;
    zero.then(() => setTimeout(() => this._check(), 0));
  }

  _check() {
    if (this.settled) return;
    if (this.open > 0) {
      this._arm();
      return;
    }
    this._finish(false);
  }

  _finish(capped) {
    if (this.settled) return;
    this.settled = true;
    if (capped) {
      console.warn(`toolgate: ${this.kind} event still had ${this.open} pending Go operations ${KEEPALIVE_CAP_MS} ms after its answer; no longer waiting for them`);
    }
    clearInterval(this._ticker);
    this._resolveDone();
    for (const fn of this._onDone) fn();
    this._onDone = [];
  }
}

let nextInstanceID = 1;

// GoInstance is one instantiation of the wasm module: one Go runtime, started once and entered for
// every event it serves.
export class GoInstance {
  constructor(module, { rehearsal = false } = {}) {
    this.id = rehearsal ? 0 : nextInstanceID++;
    this.module = module;
    this.rehearsal = rehearsal; // see rehearse
    this.rehearsalCalls = 0; // asynchronous calls the rehearsal made
    this.dead = false;
    this.stopped = null; // the RuntimeStopped error once dead
    this.api = null; // {fetch, scheduled, stats} registered by bridge.Serve
    this.legacy = null; // syumai's binding object, for programs still built on workers.Serve
    this.current = null; // the event whose context is current while Go runs
    this.depth = 0; // nesting of JS -> Go entries (Go -> JS -> Go calls are synchronous)
    this.events = new Set(); // events dispatched here that are not done
    this.aborts = new Map(); // Go call id -> resolver that aborts the call, while it runs (see _abortable)
    this.served = 0;
    this.started = Date.now();
    this.sqlTexts = []; // statement texts Go numbered (toolgate.sql): Go sends the number instead
    this.inboxAddr = 0; // Go's inbox (see _toInbox), in its linear memory: address and size (0: none)
    this.inboxSize = 0;
    this.outboxAddr = 0; // Go's outbox (see _outBytes)
    this.outboxSize = 0;
    this.inboxView = null; // Uint8Arrays over them, made again once the memory grew (see _view)
    this.outboxView = null;
    this.instance = null; // see instantiate
    this.seedFill = null; // while booted at start-up: fills Go's random data from the boot seed (bootAtStartup)
    this.seedBytes = 0; // how many bytes of random data Go drew from the boot seed
    this.deferred = []; // Go's wake-up timers set at start-up, armed by the first event (see _armDeferred)
  }

  // _binding returns the binding called name (a text or its number, see toolgate.sql) in holder.env.
  _binding(holder, name) {
    const env = holder?.env;
    if (typeof env !== "object" || env === null) throw new Error("no env: call it while an event is served");
    const binding = env[this._sql(name)];
    if (typeof binding !== "object" || binding === null) throw new Error(`no D1 binding "${this._sql(name)}" in env`);
    return binding;
  }

  // _sql returns the statement text for what Go sent: the text itself, or its number (toolgate.sql).
  _sql(q) {
    if (typeof q !== "number") return q;
    const text = this.sqlTexts[q];
    if (text === undefined) throw new Error(`toolgate: no SQL text #${q}`);
    return text;
  }

  // instantiate creates the WebAssembly instance (Go's linear memory and data) without running any Go
  // code: no random values, timers or I/O, so the module's top level may call it ahead of the first
  // event (see worker.mjs). boot calls it if nobody did.
  instantiate() {
    if (this.instance) return;
    const go = new Go();
    this.go = go;
    // Go's exit is noticed synchronously through exit(); the run() promise must not wait for it (that
    // promise belongs to the booting event, which may be long gone when Go exits).
    go._exitPromise = undefined;
    go._resolveExitPromise = () => {};
    go.exit = (code) => this._die(`Go program exited with code ${code}`, code === 0);
    this._instrument(go);
    if (this.rehearsal) this._isolate(go);

    this.ready = new Promise((resolve, reject) => {
      this._bootOK = resolve;
      this._bootFail = reject;
    });
    this.ready.catch(() => {});
    const rt = this;
    // The runtime context Go reads as globalThis.context (wasm_exec.js's Proxy). syumai's packages read
    // env (d1.OpenConnector, cloudflare.Getenv/GetBinding) and ctx (cloudflare.WaitUntil) from it at call
    // time: env is the current event's, and waitUntil holds the current event, which is what workerd's
    // ctx.waitUntil does anyway.
    const context = {
      get env() {
        return rt.current?.env;
      },
      ctx: {
        waitUntil: (p) => rt.current?.track(Promise.resolve(p)),
        passThroughOnException: () => rt.current?.ctx?.passThroughOnException?.(),
      },
      binding: {}, // syumai's workers/cron packages register their handlers here at init
      connect,
      // The bridge's side (worker/internal/bridge): registration, and asynchronous calls that answer
      // Go through one settle(id, ok, value) callback, entered in the host that made the call.
      toolgate: {
        register(api) {
          rt.api = api;
          rt._bootOK();
        },
        // init registers settle, Go's inbox (see _toInbox) and its outbox (see _outBytes).
        init(settle, inboxAddr, inboxSize, outboxAddr, outboxSize) {
          rt.settle = settle;
          rt.inboxAddr = inboxAddr ?? 0;
          rt.inboxSize = inboxSize ?? 0;
          rt.outboxAddr = outboxAddr ?? 0;
          rt.outboxSize = outboxSize ?? 0;
        },
        // log writes a line (outbox bytes, see _outBytes) with console.log.
        log(line) {
          console.log(rt._outText(line));
        },
        // respond delivers the Go handler's packed response (packResponse; outbox bytes) to ev.
        respond(ev, packed) {
          ev.respond(rt._outBytes(packed));
        },
        await(id, p) {
          rt._await(id, Promise.resolve(p));
        },
        // sql keeps a statement's text under the number Go sends in its place from now on (d1, d1batch):
        // a text crosses, is decoded and parsed once per instance instead of on every call.
        sql(id, text) {
          rt.sqlTexts[id] = text;
        },
        // d1 and d1batch find the binding name (a text or its number, see sql) in holder.env: holder is
        // the call's Event, or this context (whose env is the current event's).
        // argsJSON and batchJSON are outbox bytes (see _outBytes).
        d1(id, holder, name, sql, argsJSON, blobs, raw) {
          argsJSON = rt._outText(argsJSON);
          rt._call(id, () => {
            const db = rt._binding(holder, name);
            const stmt = db.prepare(rt._sql(sql)).bind(...JSON.parse(argsJSON, blobs ? reviveBlob : undefined));
            return raw ? stmt.raw().then(d1Rows) : stmt.run().then((r) => r.meta.changes);
          }, raw);
        },
        // d1batch runs [[sql, args], ...] (sql: a text or its number, see sql) with db.batch (one
        // transaction, one call) and answers each statement's rows in d1Rows' shape. Batch results are objects keyed by column name; their
        // values are in column order (the bridge requires distinct, non-integer column names).
        d1batch(id, holder, name, batchJSON, blobs) {
          batchJSON = rt._outText(batchJSON);
          rt._call(id, async () => {
            const db = rt._binding(holder, name);
            const list = JSON.parse(batchJSON, blobs ? reviveBlob : undefined);
            const results = await db.batch(list.map(([sql, args]) => db.prepare(rt._sql(sql)).bind(...args)));
            const value = (v) => (Array.isArray(v) ? blobJSON(Uint8Array.from(v)) : v); // a BLOB as number[]
            return d1Rows(results.map((r) => (r.results ?? []).map((row) => Object.values(row).map(value))));
          }, true);
        },
        // fetch sends a packed request (packRequest; outbox bytes, see _outBytes). It aborts at timeoutMs
        // (none if negative) with a timer of the calling host, or earlier when Go calls abort(id) (its
        // context ended): see _abortable. It answers the packed response (packResponse), or null when the
        // timer aborted it, so Go can tell its deadline from a network failure.
        fetch(id, packed, timeoutMs) {
          packed = rt._outBytes(packed);
          const call = rt._abortable(id, timeoutMs);
          rt._call(id, async () => {
            try {
              const [method, url, headers, body] = unpackRequest(packed);
              const res = await globalThis.fetch(url, { method, headers: decodeHeaders(headers), body, signal: call.signal });
              return packResponse(res.status, res.statusText, encodeHeaders(res.headers), new Uint8Array(await res.arrayBuffer()));
            } catch (e) {
              if (call.deadline) return null;
              throw e;
            } finally {
              call.end();
            }
          }, true);
        },
        // abort aborts Go's call id if it is still running. Go calls it from whichever host is current;
        // the abort itself runs in the call's own host (see _abortable).
        abort(id) {
          const resolve = rt.aborts.get(id);
          rt.aborts.delete(id);
          resolve?.();
        },
        // setCrashRetryAfter sets the Retry-After (seconds) of the answers to requests abandoned by a
        // dying runtime.
        setCrashRetryAfter(seconds) {
          if (Number.isFinite(seconds) && seconds >= 1) crashRetryAfterSeconds = Math.ceil(seconds);
        },
      },
    };
    if (this.rehearsal) {
      // No I/O and no timers at module scope: an outbound fetch fails at once.
      context.toolgate.fetch = (id) => rt._call(id, () => Promise.reject(new Error(REHEARSAL_NO_IO)));
      context.toolgate.setCrashRetryAfter = () => {};
      context.toolgate.log = () => {}; // it logs nothing (see rehearse)
    }
    this.context = context;
    const imports = {
      ...go.importObject,
      // syumai's workers.Ready(): a program still built on workers.Serve (served per request).
      workers: {
        ready: () => {
          rt.legacy = context.binding;
          rt._bootOK();
        },
      },
    };
    this.instance = new WebAssembly.Instance(this.module, imports);
  }

  // boot runs main() until it registers with bridge.Serve (or syumai's workers.Serve), instantiating
  // first if needed. It runs in ev's context, and main()'s own I/O counts against ev.
  boot(ev) {
    this.instantiate();
    this.events.add(ev);
    ev.onDone(() => this.events.delete(ev));
    this.enter(ev, () => this.go.run(this.instance, this.context)).catch((e) => this._die(`Go run failed: ${e?.stack ?? e}`));
    return this.ready;
  }

  // bootAtStartup boots this instance at the module's top level (worker.mjs, TOOLGATE_BOOT_SEED), so the
  // first event finds Go running and the app built: main() until it registers with bridge.Serve, then the
  // program's start-up function (bridge.OnStart), both with env as the event's env. It returns "ok", or
  // why not (the instance must then be dropped: a program built on workers.Serve, or one that did not
  // register at once).
  //
  // The top level allows no random values, timers or I/O. Go's runtime reads random data as it starts
  // (32 bytes: the seed of its own generator, which gives hash seeds and math/rand and is never reseeded):
  // during the boot that data comes from seed, a secret of the deployment (at least 32 bytes; see
  // seedStream), so it is as unpredictable to callers as the secret, and every instance of the deployment
  // starts from the same state. After the boot every read (crypto/rand: ids, keys, the MCP session key
  // when none is configured, the engine's backoff jitter) gets crypto.getRandomValues; the boot draws
  // nothing else (seedBytes says how much it drew). Go's wake-up timers set during the boot wait for the
  // first event (_armDeferred). I/O fails, as at the top level it must: the app's start-up does none.
  bootAtStartup(env, seed) {
    this.instantiate();
    const host = new StartupHost(env);
    this.seedFill = seedStream(seed);
    try {
      this.enter(host, () => this.go.run(this.instance, this.context)).catch((e) => this._die(`Go run failed: ${e?.stack ?? e}`));
      if (this.dead) return this.stopped.reason;
      if (this.legacy !== null) return "a workers.Serve program boots per event";
      if (this.api === null) return "the Go program did not register with bridge.Serve at start-up";
      const start = this.api.start; // called as a plain function: no `this` for Go to wrap
      if (start !== undefined) this.enter(host, () => start(host));
      return this.dead ? this.stopped.reason : "ok";
    } finally {
      this.seedFill = null;
    }
  }

  // _armDeferred arms, in ev's context, the wake-up timers Go set while it booted at start-up.
  _armDeferred(ev) {
    const deferred = this.deferred;
    this.deferred = [];
    for (const { id, timeout, ms } of deferred) {
      if (this.go._scheduledTimeouts.get(id) !== timeout) continue; // cleared meanwhile
      timeout.host = ev;
      this._armTimeout(id, timeout, ms);
    }
  }

  // fetch dispatches a request into Go; the answer arrives through ev.respond or ev.fail.
  fetch(ev, method, url, headers, body) {
    // Called as a plain function (no `this` for Go to wrap), with the request packed (packRequest) into
    // Go's inbox (see _toInbox), or as one Uint8Array if it does not fit: every JS value Go receives
    // costs it a finalizer and calls back to JS.
    const dispatch = this.api.fetch;
    const packed = packRequest(method, url, headers, body);
    this._dispatch(ev, () => {
      const n = this._toInbox(packed);
      return dispatch(ev, n >= 0 ? n : packed);
    });
  }

  // scheduled dispatches a cron event into Go; Go answers with ev.answer or ev.fail.
  scheduled(ev, cron, scheduledTime) {
    this._dispatch(ev, () => this.api.scheduled(ev, cron, scheduledTime));
  }

  // stats returns the Go runtime's statistics (a JSON string) merged with this instance's.
  stats(ev, gc) {
    const goStats = JSON.parse(this.enter(ev, () => this.api.stats(gc)));
    const go = this.go;
    return {
      instance: this.id,
      served: this.served,
      uptimeMs: Date.now() - this.started,
      liveEvents: this.events.size,
      jsValuesHeldByGo: go._values ? go._values.length - go._idPool.length : 0,
      wasmMemoryBytes: go.mem ? go.mem.buffer.byteLength : 0,
      ...goStats,
    };
  }

  // legacyFetch serves a request through syumai's protocol (binding.handleRequest). Such an instance
  // serves one request: syumai's Serve returns after the first response.
  legacyFetch(ev, request) {
    this._track(ev);
    return this.enter(ev, () => this.legacy.handleRequest(request));
  }

  legacyScheduled(ev, controller) {
    this._track(ev);
    return this.enter(ev, () => this.legacy.runScheduler(controller));
  }

  // _await settles Go's call id with p's outcome, in the host that made the call, which stays alive
  // until then. Go's settle(id, how, x) takes the outcome's bytes from its inbox when they fit there
  // (see _toInbox): always for an error's message, and for the value too if bytes is true (a string or
  // a Uint8Array; other values, such as null, cross as they are).
  _await(id, p, bytes = false) {
    if (this.rehearsal && ++this.rehearsalCalls > REHEARSAL_MAX_CALLS) return; // never settles: see rehearse
    const host = this.current;
    host.hold();
    const settle = (ok, v) => {
      try {
        const goSettle = this.settle; // called as a plain function: no `this` for Go to wrap
        if (this.dead) return;
        let how = ok ? SETTLE_OK : 0;
        if (!ok || bytes) {
          const n = this._toInbox(v); // Go reads it in the settle below, before anything else writes it
          if (n >= 0) {
            how |= SETTLE_IN_INBOX;
            v = n;
          }
        }
        this.enter(host, () => goSettle(id, how, v));
      } finally {
        host.release();
      }
    };
    p.then(
      (v) => settle(true, v),
      (e) => settle(false, `${e?.message ?? e}`),
    );
  }

  // _abortable gives Go's call id an AbortSignal that belongs to the current host, the one the call's
  // I/O is started in. I/O objects must never be touched from another request's context (workerd kills
  // the instance: "Cannot perform I/O on behalf of a different request"), so both ways to abort run in
  // this host: a timer of its own at timeoutMs, and the reaction to a promise that Go's abort(id)
  // resolves from whatever host is current (a reaction runs in the context that registered it). The
  // caller must call end() once the call settled: it clears the timer and drops the resolver, so
  // nothing of the call outlives it.
  _abortable(id, timeoutMs) {
    const controller = new AbortController();
    const call = { signal: controller.signal, deadline: false, end: null };
    let timer = 0;
    if (timeoutMs >= 0) {
      timer = setTimeout(() => {
        call.deadline = true;
        controller.abort(new Error("toolgate: the call's deadline passed"));
      }, timeoutMs);
    }
    new Promise((resolve) => this.aborts.set(id, resolve)).then(() =>
      controller.abort(new Error("toolgate: Go gave up on the call")),
    );
    call.end = () => {
      clearTimeout(timer);
      this.aborts.delete(id);
    };
    return call;
  }

  // _call settles Go's call id with the outcome of fn(), a promise; fn throwing rejects it. bytes: see
  // _await.
  _call(id, fn, bytes = false) {
    let p;
    try {
      p = fn();
    } catch (e) {
      p = Promise.reject(e);
    }
    this._await(id, p, bytes);
  }

  // _outBytes returns the bytes Go passed as x through its outbox (bridge's calls_js.go, outbox): a copy
  // of the outbox's first x bytes, or x itself, a Uint8Array, when they did not fit there. It must be
  // called before the call from Go that passed x returns, and nothing in between may call into Go.
  _outBytes(x) {
    if (typeof x !== "number") return x;
    if (this.outboxView === null || this.outboxView.byteLength === 0) this.outboxView = this._view(this.outboxAddr, this.outboxSize);
    return this.outboxView.slice(0, x);
  }

  // _outText is _outBytes decoded as UTF-8.
  _outText(x) {
    if (typeof x !== "number") return utf8Decoder.decode(x);
    if (this.outboxView === null || this.outboxView.byteLength === 0) this.outboxView = this._view(this.outboxAddr, this.outboxSize);
    return utf8Decoder.decode(this.outboxView.subarray(0, x));
  }

  // _view returns a Uint8Array over size bytes of Go's memory at addr. Growing the memory detaches its
  // buffer, and every view of it then has length 0: callers keep a view while its length is not 0.
  _view(addr, size) {
    return new Uint8Array(this.go._inst.exports.mem.buffer, addr, size);
  }

  // _toInbox writes v (a string, as UTF-8, or a Uint8Array) into Go's inbox and returns how many bytes
  // it wrote, or -1 if v is neither or does not fit. Go copies them out inside the call that the caller
  // makes next, with that length (settle, or the dispatch of a request): nothing may enter Go in
  // between (bridge's calls_js.go, inbox). A JS value Go receives costs it a finalizer and calls back
  // to read it; a number costs nothing.
  _toInbox(v) {
    if (this.inboxSize === 0 || this.go.exited) return -1;
    if (this.inboxView === null || this.inboxView.byteLength === 0) this.inboxView = this._view(this.inboxAddr, this.inboxSize);
    const inbox = this.inboxView;
    if (typeof v === "string") {
      if (v.length > inbox.length) return -1; // every UTF-16 unit takes at least a byte
      const { read, written } = utf8.encodeInto(v, inbox);
      return read === v.length ? written : -1;
    }
    if (v instanceof Uint8Array && v.byteLength <= inbox.length) {
      inbox.set(v);
      return v.byteLength;
    }
    return -1;
  }

  _dispatch(ev, call) {
    if (this.dead) throw this.stopped;
    if (this.deferred.length > 0) this._armDeferred(ev);
    this._track(ev);
    this.served++;
    this.enter(ev, call);
  }

  _track(ev) {
    if (!this.events.has(ev)) {
      this.events.add(ev);
      ev.onDone(() => this.events.delete(ev));
    }
  }

  // enter runs fn (which calls into Go) with host as the current event.
  enter(host, fn) {
    const prev = this.current;
    this.current = host;
    this.depth++;
    try {
      return fn();
    } catch (e) {
      // JS exceptions inside Go's calls reach Go as errors; one escaping here means the instance broke
      // (a wasm trap, or "Go program has already exited").
      this._die(`${e?.stack ?? e}`);
      throw e;
    } finally {
      this.depth--;
      this.current = prev;
    }
  }

  // _die marks the instance dead and abandons every event in flight on it. It logs one JSON line (unless
  // a program that never registered exited cleanly); worker.mjs answers the abandoned requests 503.
  _die(reason, clean = false) {
    if (this.dead) return;
    this.dead = true;
    this.stopped = new RuntimeStopped(this.id, reason);
    if (!this.rehearsal && (!clean || this.api !== null)) {
      console.error(JSON.stringify({
        level: "error",
        msg: "toolgate: Go runtime stopped",
        instance: this.id,
        cause: reason,
        inFlight: this.events.size,
        served: this.served,
        uptimeMs: Date.now() - this.started,
      }));
    }
    this._bootFail?.(this.stopped);
    for (const ev of this.events) ev.abandon(this.stopped);
    this.events.clear();
    // Abort the calls still running (each in its own host, see _abortable): their upstreams must not
    // keep working for requests that were just abandoned.
    for (const abort of this.aborts.values()) abort();
    this.aborts.clear();
  }

  // _isolate makes go a rehearsal's (see rehearse): it runs at module scope, where workerd allows no
  // random values, no timers and no I/O. Go's wake-up timer never fires (a goroutine that sleeps stays
  // asleep), and the runtime's random data is zeros: this instance's hash seeds are predictable, which
  // is harmless only because it never sees a real request and is dropped once rehearsed.
  _isolate(go) {
    const gojs = go.importObject.gojs;
    gojs["runtime.getRandomData"] = () => {};
    gojs["runtime.scheduleTimeoutEvent"] = (sp) => go.mem.setInt32((sp >>> 0) + 16, 0, true);
    gojs["runtime.clearTimeoutEvent"] = () => {};
  }

  // _instrument hooks wasm_exec.js so that we always know the current host and count what Go leaves
  // pending in it: promises returned by JS calls, and Go's wake-up timer.
  _instrument(go) {
    const rt = this;
    const gojs = go.importObject.gojs;

    // func valueCall(v ref, m string, args []ref) (ref, bool); valueInvoke and valueNew: (v, args) (ref, bool).
    const trackResult = (name, offset) => {
      const call = gojs[name];
      gojs[name] = (sp) => {
        call(sp);
        if (go.exited) return;
        const at = (go._inst.exports.getsp() >>> 0) + offset; // the stack may have moved during the call
        const mem = go.mem;
        if (mem.getUint8(at + 8) !== 1 || mem.getUint32(at + 4, true) !== OBJECT_REF_HIGH) return;
        const v = go._values[mem.getUint32(at, true)];
        if (v instanceof Promise) rt.current?.track(v);
      };
    };
    trackResult("syscall/js.valueCall", 56);
    trackResult("syscall/js.valueInvoke", 40);
    trackResult("syscall/js.valueNew", 40);

    // Go keeps one pending wake-up timer (for time.Sleep, timeouts, tickers). It belongs to the host
    // that scheduled it; when it fires, Go runs in that host. clearTimeout from another context cannot
    // reach it, so a cleared timer is also dropped by id when it fires. One set at start-up (no timers
    // there) waits for the first event (_armDeferred).
    this._armTimeout = (id, timeout, ms) => {
      const host = timeout.host;
      timeout.armed = true;
      timeout.handle = setTimeout(() => {
        if (go._scheduledTimeouts.get(id) !== timeout) return;
        if (rt.dead) {
          go._scheduledTimeouts.delete(id);
          host.release();
          return;
        }
        rt.enter(host, () => {
          go._resume(); // Go clears this timeout (clearTimeoutEvent) while handling it
          for (let i = 0; i < 10 && !go.exited && go._scheduledTimeouts.get(id) === timeout; i++) {
            go._resume(); // wasm_exec.js's workaround for golang/go#28975
          }
        });
      }, ms);
      host.hold();
    };
    gojs["runtime.scheduleTimeoutEvent"] = (sp) => {
      sp >>>= 0;
      const id = go._nextCallbackTimeoutID++;
      const timeout = { host: rt.current, handle: 0, armed: false };
      go._scheduledTimeouts.set(id, timeout);
      const ms = getInt64(go.mem, sp + 8);
      if (timeout.host instanceof StartupHost) rt.deferred.push({ id, timeout, ms });
      else rt._armTimeout(id, timeout, ms);
      go.mem.setInt32(sp + 16, id, true);
    };
    gojs["runtime.clearTimeoutEvent"] = (sp) => {
      sp >>>= 0;
      const id = go.mem.getInt32(sp + 8, true);
      const timeout = go._scheduledTimeouts.get(id);
      if (timeout === undefined) return;
      go._scheduledTimeouts.delete(id);
      if (!timeout.armed) return; // deferred: dropped by _armDeferred
      clearTimeout(timeout.handle);
      timeout.host.release();
    };

    // Go's random data (the runtime's seeds at start, crypto/rand later): from the boot seed while the
    // instance boots at start-up (bootAtStartup), from crypto.getRandomValues otherwise.
    const getRandomData = gojs["runtime.getRandomData"];
    gojs["runtime.getRandomData"] = (sp) => {
      if (rt.seedFill === null) return getRandomData(sp);
      const at = (sp >>> 0) + 8;
      const out = new Uint8Array(go._inst.exports.mem.buffer, getInt64(go.mem, at), getInt64(go.mem, at + 8));
      rt.seedFill(out);
      rt.seedBytes += out.length;
    };

    // A js.FuncOf callback invoked by the event loop (a promise reaction, typically) runs in the context
    // of the host that was current when Go created it: Go creates the callback and calls .then() in the
    // same run, and workerd runs the reaction there. Calls made while Go is already running (depth > 0)
    // keep the current host.
    const makeFuncWrapper = go._makeFuncWrapper;
    go._makeFuncWrapper = function (id) {
      const callback = makeFuncWrapper.call(this, id);
      const host = rt.current;
      return function (...args) {
        if (rt.depth > 0) return callback.apply(this, args);
        if (rt.dead) return undefined;
        return rt.enter(host, () => callback.apply(this, args));
      };
    };
  }
}

const REHEARSAL_NO_IO = "toolgate: no I/O while the module starts (rehearsal)";
// A rehearsal's asynchronous calls (D1, fetch, awaits) beyond this many are left pending, so Go's goroutines
// wait for ever instead of looping: at the module's top level Go's clock (performance.now) stands still,
// and a loop that retries until a deadline would never end.
const REHEARSAL_MAX_CALLS = 64;

// A stand-in for the D1 binding during a rehearsal: every statement fails, as D1 would at module scope.
const rehearsalD1 = {
  prepare() {
    throw new Error(REHEARSAL_NO_IO);
  },
  batch() {
    return Promise.reject(new Error(REHEARSAL_NO_IO));
  },
};

// StartupHost is the host of Go's entries at the module's top level (bootAtStartup, rehearse): an Event
// without a context of its own (no timers, nothing to keep alive), with env as its env.
class StartupHost {
  constructor(env, kind = "startup") {
    this.kind = kind;
    this.env = env;
    this.ctx = { waitUntil() {}, passThroughOnException() {} };
    this.stopped = null;
    this.answered = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.answered.catch(() => {});
  }
  answer(status, headers, body) {
    this._resolve({ status, headers, body });
  }
  respond(packed) {
    const { status, headers, body } = unpackResponse(packed);
    this.answer(status, headers, body);
  }
  fail(reason) {
    this._reject(reason instanceof Error ? reason : new Error(reason));
  }
  hold() {}
  release() {}
  track() {}
  handlerReturned() {}
  abandon(err) {
    this.stopped = err;
    this.fail(err);
  }
  onDone() {}
}

// RehearsalEvent is the host of a rehearsal: its env has the real vars and a D1 that fails every
// statement.
class RehearsalEvent extends StartupHost {
  constructor(env) {
    super(Object.create(env ?? null, { DB: { value: rehearsalD1 } }), "rehearsal");
  }
}

const silentConsole = new Proxy({}, { get: () => () => {} });

// rehearse runs a throwaway Go instance of module at module scope, through its boot and one request
// (its answer is dropped), and returns a promise of that answer, for statistics and tests.
//
// Why: V8 compiles wasm lazily, each function when it is first called, and compiling the Go runtime,
// the package initialisers and the code of a first request is most of what a fresh isolate's first
// request costs. Compiled code belongs to the module, not the instance, so a rehearsal at module scope
// (which Cloudflare's start-up pays for) leaves the code compiled for the instance that serves. The
// serving instance still boots in the first event, because its runtime must read real random data
// (hash seeds) and workerd allows none at module scope; the rehearsal's runtime reads none (see
// _isolate) and is dropped. It logs nothing (Go's console is a silent one) and does no I/O.
//
// V8 may drop that code again before the first event: it can flush the baseline (Liftoff) code of every
// wasm module in the process (WasmEngine::FlushLiftoffCode: on critical memory pressure, or when code
// space runs short); only optimised (TurboFan) code survives. Measured (2026-12-01, workerd
// 1.20260426.1): in plain workerd the code survives and a first request costs about 150 ms less CPU;
// behind Miniflare something flushes it (with the V8 flag --no-flush-liftoff-code it survives there too).
export function rehearse(module, env, method, url, headers, body) {
  const ev = new RehearsalEvent(env);
  const inst = new GoInstance(module, { rehearsal: true });
  const console0 = globalThis.console;
  globalThis.console = silentConsole; // read once, by Go's package initialisers
  try {
    inst.boot(ev).catch(() => {});
  } finally {
    globalThis.console = console0;
  }
  if (inst.dead) return Promise.reject(inst.stopped);
  if (inst.legacy !== null) return Promise.resolve(null); // syumai's workers.Serve: it serves one request only
  if (inst.api === null) return Promise.reject(new Error("toolgate: the rehearsal's Go program did not register"));
  inst.fetch(ev, method, url, headers, body);
  return ev.answered;
}
