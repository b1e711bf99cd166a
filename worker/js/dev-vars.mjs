// dev-vars.mjs: prints the .dev.vars that `make dev` uses (local only, git-ignored): a dev ADMIN_TOKEN, the demo
// upstream, and the demo catalog from testdata/tools.demo.json as TOOLS. wrangler.toml itself carries no demo, so
// an unedited deploy serves none. Values are single-quoted: wrangler's .dev.vars parser takes them literally.
import { readFileSync } from "node:fs";

const tools = JSON.stringify(JSON.parse(readFileSync(new URL("../../testdata/tools.demo.json", import.meta.url), "utf8")));
if (tools.includes("'")) throw new Error("dev-vars: the demo catalog may not contain a single quote");
process.stdout.write(`ADMIN_TOKEN=dev-admin-token\nDEMO_UPSTREAM=1\nTOOLS='${tools}'\n`);
