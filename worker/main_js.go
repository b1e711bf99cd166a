//go:build js && wasm

// Command worker is toolgate's Cloudflare Worker (GOOS=js GOARCH=wasm,
// loaded by build/worker.mjs, toolgate's shim). It serves the handler on D1 (binding DB), or
// on libSQL when built with -tags turso and TURSO_DATABASE_URL is set.
package main

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/syumai/workers/cloudflare"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/worker/internal/bridge"
)

// maxSweepBatches bounds one cron invocation: D1 allows 1,000 queries per
// invocation, and one Sweep call makes at most sqlstore.MaxSweepRefunds+3.
const maxSweepBatches = 20

// app builds the handler on first use, inside a request, because bindings
// and vars come from the runtime's env.
type app struct {
	once     sync.Once
	settings Settings
	store    store.Store
	h        http.Handler
	err      error
	logger   *slog.Logger
}

func (a *app) init() {
	a.once.Do(func() {
		a.logger = slog.New(slog.NewJSONHandler(bridge.Console, nil))
		if a.settings, a.err = SettingsFrom(cloudflare.Getenv); a.err != nil {
			return
		}
		if a.store, a.err = openStore(a.settings); a.err != nil {
			return
		}
		// bridge's D1 and fetch release their JS callbacks per call; syumai's
		// leak two per await, which adds up in a runtime that lives on.
		if a.h, a.err = newApp(a.store, engine.SendFunc(bridge.Fetch), a.settings, a.logger); a.err != nil {
			return
		}
		// Requests in flight when the runtime dies are answered 503 with this
		// Retry-After (newApp validated the catalog; parsing it again once
		// per runtime keeps newApp's signature).
		if cat, err := catalog.ParseCatalog(a.settings.Tools); err == nil {
			bridge.SetCrashRetryAfter(longestLease(cat))
		}
	})
}

// ServeHTTP implements http.Handler.
func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.init()
	if a.err != nil {
		a.logger.Error("worker misconfigured", "err", a.err)
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write(problemJSON("worker misconfigured: " + a.err.Error()))
		return
	}
	a.h.ServeHTTP(w, r)
}

// scheduled sweeps expired records and settles again the per-call
// payments whose outcome is unknown. It logs errors instead of returning
// them: syumai's cron runner panics on an error, which ends the instance.
func (a *app) scheduled(ctx context.Context) error {
	a.init()
	if a.err != nil {
		a.logger.Error("sweep skipped: worker misconfigured", "err", a.err)
		return nil
	}
	n, err := sweep(ctx, a.store, time.Now(), a.settings.SweepBatch, maxSweepBatches)
	if err != nil {
		a.logger.Error("sweep failed", "deleted", n, "err", err)
		return nil
	}
	a.logger.Info("sweep", "deleted", n)
	// After the sweep, which leaves the payments of abandoned calls due.
	reconcile(ctx, a.h, a.logger)
	if n, err := sweepUsage(ctx, a.store, time.Now(), a.settings.StatsRetention, a.settings.SweepBatch, maxSweepBatches); err != nil {
		a.logger.Error("usage sweep failed", "deleted", n, "err", err)
	}
	return nil
}

// main hands the app to the bridge: one Go runtime per isolate serves
// every request and cron event (worker/js/shim), each with its own env and
// waitUntil. GO_RUNTIME=per-request selects the old one-runtime-per-request
// mode in the shim.
func main() {
	a := &app{}
	background = bridge.WaitUntil
	bridge.OnScheduled(a.scheduled)
	// Booted at start-up (TOOLGATE_BOOT_SEED), the app is built there.
	bridge.OnStart(func(context.Context) { a.init() })
	bridge.Serve(a)
}
