# toolgate for Go: build, run and test the Cloudflare Worker (Go -> wasm, syumai/workers, D1).
# Node tooling (wrangler, miniflare) is pinned in package.json; install it with `npm ci`.

SHELL := /bin/bash
.DEFAULT_GOAL := build

# Offline-safe wrangler: no metrics, no prompts, no request.cf download.
WRANGLER := WRANGLER_SEND_METRICS=false CI=true CLOUDFLARE_CF_FETCH_ENABLED=false npx --no-install wrangler
WORKERS_VERSION := $(shell go list -m -f '{{.Version}}' github.com/syumai/workers)
MIGRATIONS_DIR := store/sqlstore/migrations
SEED_SQL := worker/seed.sql
DEV_PORT ?= 8787
# -s -w -trimpath: about 2% off the gzip size, and no local paths in the binary.
GOFLAGS_WASM := -trimpath -ldflags='-s -w'

.PHONY: build build-turso migrate-turso shim run dev migrate-local migrate-remote seed-local test test-short check e2e bench bench-go profile profile-js soak deploy clean stripe-mock facilitator

# build: generated JS shim (once per syumai/workers version) + patched wasm_exec.js + app.wasm.
# Safe to run concurrently (go test runs packages in parallel): every file lands by an atomic rename.
build: shim
	@tmp=build/app.wasm.$$$$.tmp; \
	GOOS=js GOARCH=wasm go build $(GOFLAGS_WASM) -o $$tmp ./worker || { rm -f $$tmp; exit 1; }; \
	if cmp -s $$tmp build/app.wasm; then rm $$tmp; else mv $$tmp build/app.wasm; fi
	@# (the wasm is only replaced when it changed, so a running `wrangler dev` reloads only when needed)
	@echo "build/app.wasm: $$(wc -c < build/app.wasm) bytes raw, $$(gzip -9 -c build/app.wasm | wc -c) bytes gzip -9"

# shim: build/worker.mjs and build/goruntime.mjs are toolgate's shim (templates in worker/js/shim: one Go
# runtime per isolate, see worker/internal/bridge); build/wasm_exec.js comes from syumai/workers' generator
# (once per version), patched by worker/js/patch-wasm-exec.mjs. The generator wipes its output dir, so it writes
# to a temp dir; every file lands in build/ by a rename (build/README.md survives, a running wrangler dev never
# sees a half-written file) and is only replaced when it changed. The patch is idempotent.
SHIM_TEMPLATES := $(wildcard worker/js/shim/*.mjs)
shim:
	@if [ ! -f build/wasm_exec.js ] || [ "$$(cat build/.shim-version 2>/dev/null)" != "$(WORKERS_VERSION)" ]; then \
		set -e; tmp=$$(mktemp -d build/.shim.XXXXXX); \
		go run github.com/syumai/workers/cmd/workers-assets-gen -mode=go -o "$$tmp"; \
		node worker/js/patch-wasm-exec.mjs "$$tmp/wasm_exec.js"; \
		echo "$(WORKERS_VERSION)" > "$$tmp/.shim-version"; \
		mv "$$tmp/wasm_exec.js" build/; mv "$$tmp/.shim-version" build/; rm -rf "$$tmp"; \
		echo "shim: build/wasm_exec.js from syumai/workers $(WORKERS_VERSION)"; \
	fi
	@node worker/js/patch-wasm-exec.mjs build/wasm_exec.js
	@for f in $(SHIM_TEMPLATES); do \
		dst=build/$$(basename $$f); \
		cmp -s $$f $$dst || { cp $$f $$dst.$$$$.tmp && mv $$dst.$$$$.tmp $$dst; }; \
	done
	@rm -f build/runtime.mjs # syumai's, unused since toolgate's shim

# build-turso: the same worker with store/hrana, libSQL over the Workers fetch (TURSO_DATABASE_URL), into
# build/ as app.wasm: about 20 KB gzip more than the D1 build (see README); `make build` switches back.
build-turso: shim
	@tmp=build/app.wasm.$$$$.tmp; \
	GOOS=js GOARCH=wasm go build $(GOFLAGS_WASM) -tags turso -o $$tmp ./worker || { rm -f $$tmp; exit 1; }; \
	mv $$tmp build/app.wasm
	@echo "build/app.wasm (turso): $$(wc -c < build/app.wasm) bytes raw, $$(gzip -9 -c build/app.wasm | wc -c) bytes gzip -9"

# facilitator: the x402 test facilitator (handler/pay/x402/facilitatortest) on 127.0.0.1:4021 (override with
# FACILITATOR_ADDR=), for FACILITATOR_URL in local runs. It checks payments signed with its test scheme, not real ones.
FACILITATOR_ADDR ?= 127.0.0.1:4021
facilitator:
	go run ./handler/pay/x402/facilitatortest/cmd/facilitator -addr $(FACILITATOR_ADDR)

# migrate-turso: applies the schema to $$TURSO_DATABASE_URL (token in $$TURSO_AUTH_TOKEN) from Go.
migrate-turso:
	go run ./worker -migrate -db "$$TURSO_DATABASE_URL"

# run: the native twin (same handler, plain net/http) on 127.0.0.1:8787 (override with ADDR=).
run:
	go run ./worker -demo

# Installs the pinned Node tooling when node_modules is missing (after editing package.json, run npm ci yourself).
node_modules:
	npm ci

# dev: local D1 (.wrangler/state) + wrangler dev on 127.0.0.1:$(DEV_PORT), offline. Rebuild with `make build`
# in another terminal: wrangler reloads when build/app.wasm changes.
dev: node_modules build migrate-local seed-local .dev.vars
	$(WRANGLER) dev --local --ip 127.0.0.1 --port $(DEV_PORT)

# .dev.vars: local-only vars and secrets for wrangler dev (git-ignored; never used by deploy): a dev ADMIN_TOKEN,
# the demo upstream and the demo catalog (testdata/tools.demo.json). wrangler.toml itself carries no demo.
.dev.vars:
	@node worker/js/dev-vars.mjs > .dev.vars.tmp
	@mv .dev.vars.tmp .dev.vars
	@echo ".dev.vars: demo catalog, DEMO_UPSTREAM=1, ADMIN_TOKEN=dev-admin-token (local only)"

migrate-local: node_modules
	@if ls $(MIGRATIONS_DIR)/*.sql >/dev/null 2>&1; then \
		$(WRANGLER) d1 migrations apply DB --local; \
	else echo "migrate-local: no $(MIGRATIONS_DIR)/*.sql yet, skipping"; fi

migrate-remote: node_modules
	npx --no-install wrangler d1 migrations apply DB --remote

# seed-local: the demo caller (key tg_demo_key) with 10.00 USD, and 14 days of demo history for the dashboard
# (worker/seed_dashboard.sql, another caller), in the local D1 only. Idempotent.
seed-local: node_modules
	$(WRANGLER) d1 execute DB --local --file $(SEED_SQL)
	$(WRANGLER) d1 execute DB --local --file worker/seed_dashboard.sql

# test: every package, including the E2E tests that run build/app.wasm inside workerd (needs npm ci).
test: node_modules
	go test -timeout 30m ./...

# test-short: the inner loop without Node: every package with -short, which skips the workerd E2E tests (they
# need npm ci and the wasm build). `make test` and CI always run everything.
test-short:
	go test -short ./...

# check: the gates CI runs before make test: gofmt, go vet natively and for js/wasm (D1 and Turso builds), go.mod
# tidy, and staticcheck (pinned as a go tool in go.mod) natively and on the worker's js/wasm code.
check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet ./...
	GOOS=js GOARCH=wasm go vet ./worker/... ./handler/... ./store/...
	GOOS=js GOARCH=wasm go vet -tags turso ./worker/...
	go mod tidy -diff
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; \
		go build -o "$$dir/staticcheck" honnef.co/go/tools/cmd/staticcheck; \
		echo "staticcheck ./..."; "$$dir/staticcheck" ./...; \
		echo "GOOS=js GOARCH=wasm staticcheck ./worker/..."; GOOS=js GOARCH=wasm "$$dir/staticcheck" ./worker/...

e2e: node_modules
	go test -count=1 -run 'E2E' -v ./worker/...

# bench: the Go worker in both runtime modes, the plain-JS reference (worker/js/reference) and the Turso build (on
# the in-repo Hrana test server), side by side on one workerd, phases interleaved across targets, loopback only, every
# phase bounded; writes BENCHMARKS.md with the rows of issue 16 (see worker/bench): throughput, CPU, a 50-way storm on
# a 300 ms upstream over 2 isolates (wall time, waiters' extra latency, D1 statements), a simulated D1 round trip,
# cold starts, wasm sizes, memory. About 10 minutes. BENCH_RSS_CALLS (default 20000) sizes the memory run,
# BENCH_ROUNDS (default 3) the paid c=8 rounds, BENCH_STORMS (8) the slow storms, BENCH_COLD (3) the cold starts,
# BENCH_RTT_MS (20; 0 skips) the simulated round trip; BENCH_GOFLAGS passes build flags. BENCH_ONLY=cold runs only the
# cold starts and prints their table (about a minute; BENCHMARKS.md is left alone).
bench: node_modules
	go test -run '^$$' -bench Edge -benchtime 1x -timeout 40m ./worker/bench

# soak: SOAK_MINUTES (default 5) of REST/MCP traffic, 3 isolates on one D1, injected D1 faults, kill -9 each minute; checks the D1 file every minute, writes FAULTS.md (worker/soak).
soak: node_modules
	go test -tags soak -count=1 -run Soak -timeout 40m -v ./worker/soak

# bench-go: the Go micro-benchmarks of every package (store, handler).
bench-go:
	go test -run '^$$' -bench . $$(go list ./... | grep -v /worker/bench)

# profile: a V8 CPU profile of the Go worker's isolate under 1500 paid calls (PROFILE_CALLS), by area, Go package
# and function (see worker/bench/profile.mjs). Builds an unstripped app.wasm in a temp dir; loopback only.
# PROFILE_KIND=replay profiles replays instead.
PROFILE_CALLS ?= 1500
profile: node_modules shim
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; \
	cp build/worker.mjs build/goruntime.mjs build/bootseed.mjs build/wasm_exec.js "$$dir/"; \
	GOOS=js GOARCH=wasm go build -trimpath -o "$$dir/app.wasm" ./worker; \
	PROFILE_OUT=$${PROFILE_OUT:-build/worker.cpuprofile} node worker/bench/profile.mjs "$$dir" $(PROFILE_CALLS)

# profile-js: the same profile of the plain-JS reference worker (worker/js/reference), to read side by side.
profile-js: node_modules
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; \
	cp worker/js/reference/worker.mjs worker/js/reference/sql.mjs "$$dir/"; \
	PROFILE_TARGET=js PROFILE_OUT=$${PROFILE_OUT:-build/reference.cpuprofile} node worker/bench/profile.mjs "$$dir" $(PROFILE_CALLS)

# stripe-mock: Stripe's official mock API (v0.203.0, the version the tests pin in handler/pay/stripe/stripemock) for
# local walk-throughs, HTTP on 127.0.0.1:12111 (STRIPE_API_BASE=http://127.0.0.1:12111, any sk_test_ key). -http-addr
# (not -http-port) binds loopback only; -https-addr keeps on loopback too the HTTPS listener that stripe-mock would
# otherwise open on :12112 of every interface.
stripe-mock:
	go run github.com/stripe/stripe-mock@v0.203.0 -http-addr 127.0.0.1:12111 -https-addr 127.0.0.1:12112

# deploy refuses an unedited wrangler.toml: the placeholder D1 id or an empty TOOLS would deploy a worker that
# answers nothing useful.
deploy: node_modules build
	@if grep -q '^database_id = "00000000-0000-4000-8000-000000000000"' wrangler.toml; then \
		echo "deploy: wrangler.toml still has the placeholder database_id: run 'npx wrangler d1 create toolgate' and put its id there (README: Deploy)"; exit 1; fi
	@if grep -q '^TOOLS = ""' wrangler.toml; then \
		echo "deploy: TOOLS is empty in wrangler.toml: set [vars] TOOLS to your tool catalog (README: Configuration)"; exit 1; fi
	npx --no-install wrangler deploy

clean:
	rm -rf build/*.wasm build/*.mjs build/*.js build/*.tmp build/.shim-version build/.shim.*
