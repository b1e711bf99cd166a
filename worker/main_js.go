//go:build js && wasm

// Command worker is toolgate's Cloudflare Worker (GOOS=js GOARCH=wasm, loaded by build/worker.mjs).
// syumai's shim starts a fresh Go instance and runs main for every request and every cron event.
package main

import (
	"context"
	"database/sql"
	"log"
	"net/http"

	"github.com/syumai/workers"
	"github.com/syumai/workers/cloudflare/cron"
	_ "github.com/syumai/workers/cloudflare/d1" // registers the "d1" database/sql driver
	"github.com/syumai/workers/cloudflare/fetch"
)

func main() {
	// sql.Open is lazy: the DB binding is looked up on first use, inside this request's runtime context.
	db, err := sql.Open("d1", "DB")
	if err != nil {
		log.Fatalf("open d1: %v", err)
	}
	client := fetch.NewClient()
	d := deps{
		DB: db,
		FetchFunc: func(req *http.Request) (*http.Response, error) {
			return client.Do(&fetch.Request{Request: req}, nil)
		},
	}
	// Cron placeholder (wrangler.toml [triggers]): bumps the smoke counter under key "cron" so the E2E
	// harness can prove scheduled events reach Go. The lead replaces it with the real sweep.
	cron.ScheduleTaskNonBlock(func(ctx context.Context) error {
		_, err := bumpSmokeCounter(ctx, db, "cron")
		return err
	})
	workers.Serve(newHandler(d))
}
