// E2E harness: runs build/worker.mjs (the compiled Go wasm) as several workers in ONE Miniflare process.
// Each worker is its own isolate on its own 127.0.0.1 port; all share one D1 database in one persist dir
// (two processes on one persist dir fail with SQLITE_BUSY, see shared/PLATFORM.md).
//
// Usage: node worker/js/miniflare.mjs [config.json]   (no argument: the first stdin line is the config)
// Config (JSON; only d1Persist is required):
//   {
//     "d1Persist": "/tmp/x",          // directory for D1's SQLite files
//     "workers": 2,                   // or ["a","b"], or [{"name":"a","vars":{"K":"v"}}]; default 1 ("w0")
//     "vars": {"K": "v"},             // vars for every worker (a worker's own vars win)
//     "migrationsDir": "store/sqlstore/migrations", // optional: *.sql applied before serving, like wrangler
//     "buildDir": "build",            // default: <repo>/build
//     "d1DatabaseId": "...",          // default: wrangler.toml's placeholder id
//     "compatibilityDate": "2026-04-26",
//     "inspectorPort": 9229,          // optional: V8 inspector (DevTools protocol) on 127.0.0.1, for profiling
//     "assets": {"directory": "worker/dashboard/assets", "runWorkerFirst": ["/v1/*"]}, // optional: Workers
//                                     // static assets in front of every worker, as wrangler.toml's [assets]
//     "faults": {"seed": 1, ...}      // optional, tests only: serve worker/js/faults/entry.mjs in front of the
//                                     // shim, with a D1 binding that injects faults (see that file); each
//                                     // worker gets the object as its TOOLGATE_FAULTS var, seed + its index
//   }
// Stdout carries exactly one line: {"ready":true,"urls":{"w0":"http://127.0.0.1:P",...},"entry":"http://..."}
// ("entry" is Miniflare's router: GET /cdn-cgi/handler/scheduled?cron=... with header MF-Route-Override: <name>
// runs that worker's cron handler). Everything else (Miniflare and workerd logs, Go panics) goes to stderr.
// The process exits on stdin EOF or SIGTERM/SIGINT: the parent keeps stdin open for as long as it wants the
// workers, so a test that dies, even by SIGKILL, never leaks this process.
import { readFileSync, readdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Log, LogLevel, Miniflare } from "miniflare";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const stdout = (line) => process.stdout.write(line + "\n");
console.log = console.error; // Miniflare's Log writes with console.log; keep stdout for the ready line.

// normalizeWorkers turns 2 | ["a","b"] | [{name, vars}] into [{name, vars}].
function normalizeWorkers(workers = 1) {
  if (typeof workers === "number") {
    return Array.from({ length: workers }, (_, i) => ({ name: `w${i}`, vars: {} }));
  }
  return workers.map((w) => (typeof w === "string" ? { name: w, vars: {} } : { vars: {}, ...w }));
}

// splitSql is a port of wrangler 4.86.0's src/d1/splitter.ts: it splits on `;` outside quotes and comments
// and keeps compound statements (CREATE TRIGGER ... BEGIN ...; ...; END;) whole.
function splitSql(sql) {
  const statements = [];
  const compound = []; // stack of "is this the end?" checks for BEGIN/CASE ... END
  let str = "";
  const it = sql[Symbol.iterator]();
  const consumeUntil = (marker) => {
    let s = "";
    for (let n = it.next(); !n.done; n = it.next()) {
      s += n.value;
      if (s.endsWith(marker)) break;
    }
    return s;
  };
  let next = it.next();
  while (!next.done) {
    const ch = next.value;
    if (compound[0]?.(str + ch)) compound.shift();
    switch (ch) {
      case "'":
      case '"':
      case "`":
        str += ch + consumeUntil(ch);
        break;
      case "-":
        next = it.next();
        if (!next.done && next.value === "-") {
          consumeUntil("\n");
          str += "\n";
          break;
        }
        str += ch;
        continue; // the character after "-" is still unprocessed
      case "/":
        next = it.next();
        if (!next.done && next.value === "*") {
          consumeUntil("*/");
          break;
        }
        str += ch;
        continue;
      case ";":
        if (compound.length === 0) {
          statements.push(str);
          str = "";
        } else {
          str += ch;
        }
        break;
      default:
        str += ch;
    }
    if (/\s(BEGIN|CASE)\s$/i.test(str)) compound.unshift((s) => /\sEND[;\s]$/.test(s));
    next = it.next();
  }
  statements.push(str);
  return statements.map((s) => s.trim()).filter((s) => s.length > 0);
}

// applyMigrations applies unapplied *.sql files in numeric-prefix order, each with its d1_migrations row in
// one batch (one transaction), exactly the bookkeeping `wrangler d1 migrations apply` does.
async function applyMigrations(db, dir) {
  await db
    .prepare(
      `CREATE TABLE IF NOT EXISTS d1_migrations(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT UNIQUE,
        applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL)`,
    )
    .run();
  const applied = new Set((await db.prepare("SELECT name FROM d1_migrations").all()).results.map((r) => r.name));
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".sql"))
    .sort((a, b) => parseInt(a) - parseInt(b) || a.localeCompare(b));
  for (const name of files.filter((f) => !applied.has(f))) {
    const stmts = splitSql(readFileSync(join(dir, name), "utf8")).map((s) => db.prepare(s));
    stmts.push(db.prepare("INSERT INTO d1_migrations (name) VALUES (?)").bind(name));
    try {
      await db.batch(stmts);
    } catch (e) {
      throw new Error(`migration ${name}: ${e?.cause?.message ?? e.message}`);
    }
    console.error(`miniflare.mjs: applied migration ${name}`);
  }
}

let mf;
let closing = false;
// shutdown disposes Miniflare (which stops workerd: a plain exit would orphan it) and exits.
async function shutdown(code) {
  if (closing) return;
  closing = true;
  await mf?.dispose().catch(() => {});
  process.exit(code);
}

async function main() {
  process.on("SIGTERM", () => shutdown(0));
  process.on("SIGINT", () => shutdown(0));
  const stdin = createInterface({ input: process.stdin });
  const firstLine = new Promise((res) => stdin.once("line", res));
  stdin.on("close", () => shutdown(0));

  const configArg = process.argv[2];
  const config = JSON.parse(configArg ? readFileSync(configArg, "utf8") : await firstLine);
  if (!config.d1Persist) throw new Error("config.d1Persist is required");
  const buildDir = resolve(repoRoot, config.buildDir ?? "build");
  const workers = normalizeWorkers(config.workers);
  // With faults, the script is the test-only entry, placed (by name) in the build dir so that its
  // "./worker.mjs" is the build's shim; the build dir itself stays untouched.
  const faultsEntry = config.faults && readFileSync(join(repoRoot, "worker/js/faults/entry.mjs"), "utf8");
  const script = faultsEntry
    ? { script: faultsEntry, scriptPath: join(buildDir, "_faults_entry.mjs") }
    : { scriptPath: join(buildDir, "worker.mjs") };
  const faultVars = (w, i) =>
    config.faults
      ? { TOOLGATE_FAULTS: JSON.stringify({ ...config.faults, seed: (config.faults.seed ?? 1) + i, worker: w.name }) }
      : {};

  mf = new Miniflare({
    host: "127.0.0.1",
    port: 0,
    cf: false, // offline: never download request.cf data
    log: new Log(LogLevel.WARN),
    d1Persist: resolve(config.d1Persist),
    unsafeTriggerHandlers: true, // enables /cdn-cgi/handler/scheduled on the entry URL
    ...(config.inspectorPort ? { inspectorPort: config.inspectorPort } : {}),
    handleRuntimeStdio(out, err) {
      out.pipe(process.stderr); // worker console output and Go panics
      err.pipe(process.stderr);
    },
    workers: workers.map((w, i) => ({
      name: w.name,
      modules: true,
      ...script,
      modulesRoot: buildDir,
      // build/runtime.mjs does `import mod from "./app.wasm"`; Miniflare's API has no default rule for it.
      modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
      compatibilityDate: config.compatibilityDate ?? "2026-04-26",
      bindings: { ...config.vars, ...w.vars, ...faultVars(w, i) },
      d1Databases: { DB: config.d1DatabaseId ?? "00000000-0000-4000-8000-000000000000" },
      unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }], // one port per worker, bypassing the router
      ...(config.assets
        ? {
            assets: {
              directory: resolve(repoRoot, config.assets.directory),
              routerConfig: {
                has_user_worker: true,
                ...(config.assets.runWorkerFirst ? { static_routing: { user_worker: config.assets.runWorkerFirst } } : {}),
              },
            },
          }
        : {}),
    })),
  });

  const entry = await mf.ready;
  if (config.migrationsDir) {
    await applyMigrations(await mf.getD1Database("DB", workers[0].name), resolve(repoRoot, config.migrationsDir));
  }
  const urls = {};
  for (const w of workers) urls[w.name] = (await mf.unsafeGetDirectURL(w.name)).origin;
  stdout(JSON.stringify({ ready: true, urls, entry: entry.origin }));
}

main().catch((e) => {
  console.error(`miniflare.mjs: ${e?.stack ?? e}`);
  shutdown(1);
});
