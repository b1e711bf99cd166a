// `make profile`: where the Go worker's CPU goes, from a V8 CPU profile of its isolate under paid-call load.
//
// Usage: node worker/bench/profile.mjs <buildDir> [calls]
// buildDir holds worker.mjs, goruntime.mjs, wasm_exec.js and an app.wasm built WITHOUT -s (so wasm functions
// keep their Go names). It starts worker/js/miniflare.mjs with the V8 inspector on 127.0.0.1 (PROFILE_PORT,
// default 9229), a loopback upstream, one caller with credit, warms up with 300 paid calls, then profiles
// `calls` (default 1500) paid calls at c=8, each on a new key. GO_RUNTIME=per-request profiles the fallback mode.
// The profile covers the worker's isolate only: D1's own work runs in another isolate (its Durable Object) and
// is not in it. Sampling adds overhead, so read shares, not absolute times. The raw profile is written to
// $PROFILE_OUT (default <buildDir>/worker.cpuprofile; open it in Chrome DevTools).
// PROFILE_TARGET=js profiles the plain-JS reference (worker/js/reference, copied into buildDir) under the
// same load instead, for a side-by-side reading (`make profile-js`). PROFILE_KIND=replay profiles replays
// instead: the calls repeat the 300 warm-up keys (each answered from D1, one round trip).
import { spawn } from "node:child_process";
import { writeFileSync, mkdtempSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const [buildDir, callsArg] = process.argv.slice(2);
if (!buildDir) {
  console.error("usage: node worker/bench/profile.mjs <buildDir> [calls]");
  process.exit(2);
}
const calls = Number(callsArg ?? 1500);
const port = Number(process.env.PROFILE_PORT ?? 9229);
const out = process.env.PROFILE_OUT ?? join(buildDir, "worker.cpuprofile");
const reference = process.env.PROFILE_TARGET === "js";
const replays = process.env.PROFILE_KIND === "replay";
const warmCalls = 300;

const upstream = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    res.setHeader("content-type", "application/json");
    res.end(`{"ok":true,"echo":${Buffer.concat(chunks)}}`);
  });
});
await new Promise((r) => upstream.listen(0, "127.0.0.1", r));
const tools = { tools: [{ name: "bench", description: "bench echo", price: "0.01", currency: "USD",
  upstream: { url: `http://127.0.0.1:${upstream.address().port}/echo` } }] };
const config = { d1Persist: mkdtempSync(join(tmpdir(), "toolgate-profile-")), buildDir: resolve(buildDir),
  migrationsDir: "store/sqlstore/migrations", inspectorPort: port,
  vars: { TOOLS: JSON.stringify(tools), ADMIN_TOKEN: "profile-admin", GO_RUNTIME: process.env.GO_RUNTIME ?? "persistent" } };
const mf = spawn("node", [join(repoRoot, "worker/js/miniflare.mjs")], { cwd: repoRoot, stdio: ["pipe", "pipe", "pipe"] });
mf.stdin.write(JSON.stringify(config) + "\n");
let logTail = []; // Miniflare's and the worker's log (a line per call): shown only if something fails
createInterface({ input: mf.stderr }).on("line", (l) => {
  logTail.push(l);
  if (logTail.length > 40) logTail = logTail.slice(-20);
});
const done = () => {
  mf.stdin.end();
  upstream.close();
};
try {
  const ready = JSON.parse(await new Promise((r) => createInterface({ input: mf.stdout }).once("line", r)));
  const base = ready.urls.w0;
  const post = (path, body, headers) =>
    fetch(base + path, { method: "POST", body, headers: { "content-type": "application/json", ...headers } });
  let key = "tg_profile_reference_key";
  if (reference) {
    const seeded = await post(`/_seed?caller=profile&key=${key}&amount=100000000`, "");
    if (seeded.status !== 201) throw new Error(`seed: ${seeded.status} ${await seeded.text()}`);
  } else {
    const admin = { authorization: "Bearer profile-admin" };
    const created = await post("/v1/admin/callers", JSON.stringify({ id: "profile", name: "profile" }), admin);
    if (created.status !== 201) throw new Error(`create caller: ${created.status} ${await created.text()}`);
    key = (await created.json()).key;
    const credited = await post("/v1/admin/credits",
      JSON.stringify({ caller: "profile", amount: "1000000.00", currency: "USD", reference: "profile-seed" }), admin);
    if (credited.status !== 201) throw new Error(`credit: ${credited.status} ${await credited.text()}`);
  }

  // load sends n paid calls at c=8 and returns how many did not answer 200. With cycle, call i repeats
  // the key and input of call i % cycle (a replay once that call completed).
  const load = async (n, tag, cycle = n) => {
    let next = 0;
    let failed = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < n) {
        const i = next++ % cycle;
        const res = await post("/v1/tools/bench/call", `{"n":${i}}`,
          { authorization: `Bearer ${key}`, "idempotency-key": `${tag}-${i}` });
        await res.arrayBuffer();
        if (res.status !== 200) failed++;
      }
    }));
    return failed;
  };
  await load(warmCalls, "warm");

  const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
  const target = targets.find((t) => `${t.title} ${t.id} ${t.url}`.includes("w0")) ?? targets[0];
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((r, j) => ws.once("open", r).once("error", j));
  let seq = 0;
  const pending = new Map();
  ws.on("message", (m) => {
    const msg = JSON.parse(m);
    pending.get(msg.id)?.(msg);
    pending.delete(msg.id);
  });
  const cdp = (method, params = {}) => new Promise((r) => {
    pending.set(++seq, r);
    ws.send(JSON.stringify({ id: seq, method, params }));
  });
  await cdp("Profiler.enable");
  await cdp("Profiler.setSamplingInterval", { interval: 100 });
  await cdp("Profiler.start");
  const started = Date.now();
  const failed = replays ? await load(calls, "warm", warmCalls) : await load(calls, "profile");
  const wall = Date.now() - started;
  const { result } = await cdp("Profiler.stop");
  ws.close();
  writeFileSync(out, JSON.stringify(result.profile));
  report(result.profile, calls, failed, wall);
} catch (err) {
  console.error(logTail.join("\n"));
  console.error(`profile: ${err?.stack ?? err}`);
  process.exitCode = 1;
} finally {
  done();
}

// report prints self time per call: by where the code lives, by Go package, and the top functions.
function report(profile, calls, failed, wall) {
  const self = new Map(); // node id -> µs
  for (let i = 0; i < profile.samples.length; i++) {
    self.set(profile.samples[i], (self.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const area = new Map();
  const pkg = new Map();
  const fn = new Map();
  const add = (m, k, us) => m.set(k, (m.get(k) ?? 0) + us);
  for (const node of profile.nodes) {
    const us = self.get(node.id) ?? 0;
    const { url, functionName } = node.callFrame;
    const name = functionName || "(anonymous)";
    add(fn, `${name} ${url.startsWith("wasm:") ? "[go]" : url ? `[${url.split("/").pop()}]` : ""}`, us);
    if (url.startsWith("wasm:")) {
      add(area, "Go (wasm)", us);
      add(pkg, name.replace(/^github\.com_toolgate_toolgate_go_/, "toolgate/").split(/\.(?=[A-Za-z_(])/)[0].replace(/__.*$/, ""), us);
    } else if (url.endsWith("wasm_exec.js")) add(area, "wasm_exec.js (Go's JS glue)", us);
    else if (reference && (url.endsWith("worker.mjs") || url.endsWith("sql.mjs"))) add(area, "reference worker (JS)", us);
    else if (url.endsWith("goruntime.mjs") || url.endsWith("worker.mjs")) add(area, "toolgate shim", us);
    else if (url.startsWith("cloudflare-internal:")) add(area, `${url} (JS)`, us);
    else if (["(idle)", "(program)", "(garbage collector)"].includes(name)) add(area, name, us);
    else add(area, "runtime builtins (fetch, Response, JSON, ...)", us);
  }
  const per = (us) => `${(us / 1000 / calls).toFixed(3)} ms`;
  const table = (title, m, n) => {
    console.log(`\n${title}`);
    for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) console.log(`${per(us).padStart(10)}  ${k}`);
  };
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  console.log(`${calls} ${replays ? "replays" : "paid calls"} at c=8 (${failed} not 200) in ${wall} ms; sampled ${per(total)} per call (incl. idle)`);
  console.log(`self time per call; profile: ${out}`);
  table("by area", area, 20);
  table("Go by package", pkg, 15);
  table("top functions", fn, 25);
}
