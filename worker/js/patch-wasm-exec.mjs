// Patches the generated build/wasm_exec.js so outbound fetch from Go works in workerd.
//
// Why: syumai's wasm_exec.js hands Go a Proxy of globalThis. Go then calls `fetch` with the Proxy as
// `this`, and workerd throws "Illegal invocation: function called with incorrect 'this' reference".
// The fix makes the Proxy return `fetch` bound to the real globalThis.
//
// Idempotent: a marker comment records that the patch is in. Fails loudly if the generator's output
// no longer has the line we anchor on (e.g. after a syumai/workers upgrade), instead of silently
// shipping a worker whose outbound calls panic.
//
// Usage: node worker/js/patch-wasm-exec.mjs build/wasm_exec.js
import { readFileSync, writeFileSync } from "node:fs";

const file = process.argv[2] ?? "build/wasm_exec.js";
const marker = "/* toolgate: fetch-this patch */";
const anchor = "return Reflect.get(target, prop, target);";
const patch =
  `${marker} if (prop === "fetch") { return target.fetch.bind(target); }\n\t\t\t\t\t${anchor}`;

const src = readFileSync(file, "utf8");
if (src.includes(marker)) {
  process.exit(0);
}
const hits = src.split(anchor).length - 1;
if (hits !== 1) {
  console.error(`patch-wasm-exec: expected exactly 1 "${anchor}" in ${file}, found ${hits}; update this script`);
  process.exit(1);
}
writeFileSync(file, src.replace(anchor, patch));
console.log(`patch-wasm-exec: patched ${file}`);
