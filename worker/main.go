//go:build !js

// Command worker is toolgate's native twin of the Cloudflare Worker: the
// same handler on plain net/http, over an embedded SQLite file or a libSQL
// URL. It is the no-Node local default (make run).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/libsql"
	"github.com/toolgate/toolgate-go/store/sqlite"
	"github.com/toolgate/toolgate-go/store/sqlstore"
)

// Demo caller for `make run` and `make dev`: documented in the README,
// seeded only with -demo (natively) or worker/seed.sql (wrangler dev).
const (
	demoCallerID  = "demo"
	demoCallerKey = "tg_demo_key"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "toolgate:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		addr      = flag.String("addr", envOr("ADDR", "127.0.0.1:8787"), "listen address (env ADDR)")
		dbURL     = flag.String("db", envOr("TOOLGATE_DB", "toolgate.db"), "SQLite file, or a libsql://, https:// or http:// libSQL URL (env TOOLGATE_DB; token in TURSO_AUTH_TOKEN)")
		toolsFile = flag.String("tools", envOr("TOOLS_FILE", "testdata/tools.demo.json"), "tool catalog JSON file (env TOOLS_FILE; env TOOLS with the JSON itself wins)")
		demo      = flag.Bool("demo", false, "serve the demo upstream under /_demo/ and seed the demo caller with 10.00 USD")
		migrate   = flag.Bool("migrate", false, "apply the schema to -db and exit")
	)
	flag.Parse()
	ctx := context.Background()
	db, err := openDB(*dbURL)
	if err != nil {
		return err
	}
	if err := sqlstore.Migrate(ctx, db); err != nil {
		return fmt.Errorf("migrate %s: %w", *dbURL, err)
	}
	if *migrate {
		fmt.Println("schema is up to date:", *dbURL)
		return nil
	}
	st := sqlstore.New(&store.CountingClient{Inner: db})

	getenv := os.Getenv
	if os.Getenv("TOOLS") == "" {
		doc, err := os.ReadFile(*toolsFile)
		if err != nil {
			return fmt.Errorf("read tool catalog: %w", err)
		}
		getenv = func(k string) string {
			if k == "TOOLS" {
				return string(doc)
			}
			return os.Getenv(k)
		}
	}
	s, err := SettingsFrom(getenv)
	if err != nil {
		return err
	}
	s.Demo = s.Demo || *demo
	if *demo {
		if err := seedDemo(ctx, st); err != nil {
			return err
		}
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	h, err := newApp(st, &engine.HTTPUpstream{Client: &http.Client{}}, s, logger)
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: *addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go sweepEvery(st, h, 15*time.Minute, s, logger)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-stop
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	logger.Info("toolgate (native) listening", "url", "http://"+*addr, "db", *dbURL, "demo", s.Demo)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// openDB opens a libSQL URL or a SQLite file.
func openDB(u string) (store.DbClient, error) {
	for _, p := range []string{"libsql://", "https://", "http://"} {
		if strings.HasPrefix(u, p) {
			return libsql.Open(u, os.Getenv("TURSO_AUTH_TOKEN"))
		}
	}
	return sqlite.Open(u)
}

// seedDemo creates the demo caller and credits it once.
func seedDemo(ctx context.Context, st store.Store) error {
	err := st.CreateCaller(ctx, store.Caller{ID: demoCallerID, Name: "Demo agent", KeyHash: engine.HashKey(demoCallerKey), CreatedAt: time.Now()})
	if err != nil && !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("seed demo caller: %w", err)
	}
	_, err = st.Credit(ctx, store.CreditParams{Caller: demoCallerID, Currency: "USD", Amount: 1000, Reference: "demo-seed", Now: time.Now()})
	if err != nil {
		return fmt.Errorf("seed demo credit: %w", err)
	}
	return nil
}

// sweepEvery is the native stand-in for the cron trigger.
func sweepEvery(st store.Store, h http.Handler, every time.Duration, s Settings, logger *slog.Logger) {
	for range time.Tick(every) {
		if n, err := sweepUsage(context.Background(), st, time.Now(), s.StatsRetention, s.SweepBatch, 1000); err != nil {
			logger.Error("usage sweep failed", "deleted", n, "err", err)
		}
		n, err := sweep(context.Background(), st, time.Now(), s.SweepBatch, 1000)
		if err != nil {
			logger.Error("sweep failed", "deleted", n, "err", err)
			continue
		}
		logger.Info("sweep", "deleted", n)
		reconcile(context.Background(), h, logger)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
