package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
)

// deps holds the concrete things main_js.go / main.go wire into the HTTP surface.
//
// SEAM: this file is the placeholder the lead replaces with handler.New(store, ...).
// Only the recover middleware and /healthz are meant to outlive it.
type deps struct {
	// DB is the database behind /_smoke/d1. Nil means the route is not served.
	DB *sql.DB
	// FetchFunc performs outbound HTTP for /_smoke/fetch. Nil means the route is not served.
	FetchFunc func(*http.Request) (*http.Response, error)
}

// newHandler returns the worker's HTTP surface wrapped in recoverPanics.
func newHandler(d deps) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	})
	if d.DB != nil {
		mux.HandleFunc("GET /_smoke/d1", func(w http.ResponseWriter, r *http.Request) {
			n, err := bumpSmokeCounter(r.Context(), d.DB, "x")
			if err != nil {
				writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error()})
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"n": n})
		})
	}
	if d.FetchFunc != nil {
		mux.HandleFunc("GET /_smoke/fetch", func(w http.ResponseWriter, r *http.Request) {
			smokeFetch(w, r, d.FetchFunc)
		})
	}
	return recoverPanics(mux)
}

// bumpSmokeCounter increments the smoke counter for key in one statement and returns its new value.
func bumpSmokeCounter(ctx context.Context, db *sql.DB, key string) (int64, error) {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS smoke(k TEXT PRIMARY KEY, n INTEGER)`); err != nil {
		return 0, fmt.Errorf("create smoke table: %w", err)
	}
	var n int64
	err := db.QueryRowContext(ctx,
		`INSERT INTO smoke VALUES(?, 1) ON CONFLICT(k) DO UPDATE SET n = n + 1 RETURNING n`, key).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("bump smoke counter: %w", err)
	}
	return n, nil
}

// smokeFetch GETs ?url= (loopback hosts only, so a deployed worker is no open proxy) and relays the body.
func smokeFetch(w http.ResponseWriter, r *http.Request, fetch func(*http.Request) (*http.Response, error)) {
	u, err := url.Parse(r.URL.Query().Get("url"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !isLoopback(u.Hostname()) {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "url must be an http(s) loopback URL"})
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, u.String(), nil)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
		return
	}
	res, err := fetch(req)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]any{"error": err.Error()})
		return
	}
	defer res.Body.Close()
	w.Header().Set("Content-Type", res.Header.Get("Content-Type"))
	w.WriteHeader(res.StatusCode)
	_, _ = io.Copy(w, res.Body)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// recoverPanics turns a handler panic into a 500. In workerd an unrecovered Go panic ends the
// wasm instance and wrangler reports a misleading "syscall/js.valueNew" TypeError instead.
func recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				log.Printf("panic: %s %s: %v\n%s", r.Method, r.URL.Path, v, debug.Stack())
				writeJSON(w, http.StatusInternalServerError, map[string]any{"error": "internal error"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
