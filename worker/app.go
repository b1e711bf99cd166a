package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/toolgate/toolgate-go/handler"
	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/mcp"
	"github.com/toolgate/toolgate-go/store"
)

// Settings is the worker's configuration, read from wrangler vars and
// secrets (or the environment, natively) by SettingsFrom.
type Settings struct {
	// Tools is the catalog document (var TOOLS). Required.
	Tools []byte
	// AdminToken guards /v1/admin/* (secret ADMIN_TOKEN). Empty disables
	// the admin API.
	AdminToken string
	// MCPSessionKey signs MCP session ids so that every isolate accepts
	// them (secret MCP_SESSION_KEY). Empty derives it from AdminToken.
	MCPSessionKey []byte
	// WaitForInProgress is how long duplicates wait for an in-flight call
	// (var WAIT_FOR_IN_PROGRESS_MS; "0" fails fast, empty means 5 s). Negative
	// means fail fast, as handler.Config reads it.
	WaitForInProgress time.Duration
	// Demo serves the demo upstream under /_demo/ (var DEMO_UPSTREAM=1).
	Demo bool
	// SweepBatch bounds each statement of the cron sweep (var SWEEP_BATCH;
	// zero means 500).
	SweepBatch int
	// StatsRetention is how long usage counters are kept (var STATS_RETENTION_DAYS; zero means
	// DefaultStatsRetention, 90 days); the cron sweep deletes older ones.
	StatsRetention time.Duration
	// TursoURL and TursoToken select libSQL instead of D1 (var
	// TURSO_DATABASE_URL, secret TURSO_AUTH_TOKEN).
	TursoURL, TursoToken string
}

// SettingsFrom reads Settings through getenv. It returns an error naming
// the variable that is missing or malformed.
func SettingsFrom(getenv func(string) string) (Settings, error) {
	s := Settings{
		Tools:      []byte(getenv("TOOLS")),
		AdminToken: getenv("ADMIN_TOKEN"),
		Demo:       getenv("DEMO_UPSTREAM") == "1",
		TursoURL:   getenv("TURSO_DATABASE_URL"),
		TursoToken: getenv("TURSO_AUTH_TOKEN"),
	}
	if len(s.Tools) == 0 {
		return Settings{}, errors.New("settings: TOOLS is empty: set it to the tool catalog JSON (see README)")
	}
	switch k := getenv("MCP_SESSION_KEY"); {
	case k != "":
		s.MCPSessionKey = []byte(k)
	case s.AdminToken != "":
		mac := hmac.New(sha256.New, []byte(s.AdminToken))
		mac.Write([]byte("toolgate mcp session key"))
		s.MCPSessionKey = mac.Sum(nil)
	}
	if v := getenv("WAIT_FOR_IN_PROGRESS_MS"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 {
			return Settings{}, fmt.Errorf("settings: WAIT_FOR_IN_PROGRESS_MS %q is not a non-negative integer", v)
		}
		s.WaitForInProgress = time.Duration(ms) * time.Millisecond
		if ms == 0 {
			s.WaitForInProgress = -1
		}
	}
	if v := getenv("SWEEP_BATCH"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return Settings{}, fmt.Errorf("settings: SWEEP_BATCH %q is not a positive integer", v)
		}
		s.SweepBatch = n
	}
	if v := getenv("STATS_RETENTION_DAYS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return Settings{}, fmt.Errorf("settings: STATS_RETENTION_DAYS %q is not a positive integer", v)
		}
		s.StatsRetention = time.Duration(n) * 24 * time.Hour
	}
	return s, nil
}

// newApp wires the handler to a store and an upstream, and adds the demo
// upstream when s.Demo is set.
func newApp(st store.Store, up engine.Upstream, s Settings, logger *slog.Logger) (http.Handler, error) {
	cat, err := catalog.ParseCatalog(s.Tools)
	if err != nil {
		return nil, fmt.Errorf("TOOLS: %w", err)
	}
	h, err := handler.New(handler.Config{
		Store:             st,
		Catalog:           cat,
		Upstream:          up,
		AdminToken:        s.AdminToken,
		Logger:            logger,
		WaitForInProgress: s.WaitForInProgress,
		MCP:               mcp.Options{SessionKey: s.MCPSessionKey},
		BackgroundFunc:    background,
	})
	if err != nil {
		return nil, err
	}
	if serveDashboard != nil {
		h = serveDashboard(h)
	}
	if !s.Demo && len(extraRoutes) == 0 {
		return h, nil
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	if s.Demo {
		mux.HandleFunc("POST /_demo/echo", demoEcho)
		mux.HandleFunc("POST /_demo/fail", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":"the demo upstream always fails"}`, http.StatusInternalServerError)
		})
	}
	for _, add := range extraRoutes {
		add(mux)
	}
	return mux, nil
}

// longestLease returns the longest lease of cat's tools (a catalog has at
// least one). After a crash, a retry that waits this long finds the
// abandoned call's lease expired and takes the key over instead of waiting
// for it: the worker's crash Retry-After.
func longestLease(cat *catalog.Catalog) time.Duration {
	var d time.Duration
	for _, t := range cat.Tools() {
		d = max(d, t.Lease)
	}
	return d
}

// extraRoutes are added by build-tagged files: the D1 conformance runner
// exists only in the test build (-tags conformance).
var extraRoutes []func(*http.ServeMux)

// demoEcho is the demo upstream: it answers {"echo": <input>}.
func demoEcho(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || !json.Valid(body) {
		http.Error(w, `{"error":"send JSON"}`, http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"echo":%s}`, body)
}

// sweep deletes expired records in batches of batch until a batch comes
// back short or maxBatches ran, so one cron invocation stays bounded.
func sweep(ctx context.Context, st store.Idempotency, now time.Time, batch, maxBatches int) (int, error) {
	if batch <= 0 {
		batch = 500
	}
	total := 0
	for i := 0; i < maxBatches; i++ {
		n, err := st.Sweep(ctx, now, batch)
		total += n
		if err != nil {
			return total, fmt.Errorf("sweep: %w", err)
		}
		if n < batch {
			break
		}
	}
	return total, nil
}
