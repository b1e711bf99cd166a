//go:build js && wasm

// Command testworker is the worker the bridge tests and `make bench` run: bridge.Serve over a few routes
// that exercise the runtime model, and a paid-call route (claim, charge, complete) on the real SQL store
// over D1. Built to its own wasm by worker/internal/benchharness.BuildWorker.
//
// Routes:
//
//	GET  /healthz                       {"ok":true}
//	POST /seed?caller=C&amount=N         credit C with N minor units of USD (reference = caller)
//	POST /paid?caller=C&key=K            claim K, charge 1 USD minor unit, complete; a duplicate replays, or
//	                                     polls every 25 ms (up to 5 s) while K is in progress
//	POST /job?id=X&ms=N                  202 now; a WaitUntil job sleeps N ms, then inserts X into D1
//	GET  /slow?ms=N                      sleeps N ms, runs one D1 statement, answers
//	GET  /panic                          panics in the handler
//	GET  /crash                          panics on a bare goroutine: the instance dies
//	GET  /overflow                       recurses until V8's stack overflows: a wasm trap kills the instance
//	GET  /fetch?url=U&deadline=N         bridge.Fetch(U) with a context that ends after N ms (deadline= sets
//	GET  /fetch?url=U&cancel=N           a deadline, cancel= cancels it without one): the upstream's answer,
//	                                     or 504 {"error", "deadline", "canceled"} when the context ended first
//	GET  /mem?gc=1                       runtime.MemStats (after a GC)
//	POST /bytes?n=N&url=U                a text of N bytes (not ASCII only) through every way bytes cross
//	                                     the bridge: D1 Query and Batch (SELECT ?), Fetch(U) (an echo), the
//	                                     D1 error of a table named after it; answers {"body": the request
//	                                     body's length and SHA-256, "query", "batch", "fetch": true if the
//	                                     text came back whole, "error": the D1 error} and then the text
//
// A scheduled event inserts "cron:<expression>" into the jobs table. Requests abandoned by a dying
// instance are answered with Retry-After: 12 (crashRetryAfter).
//
// Every D1 route answers X-D1-Statements: the statements it ran.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/d1"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/worker/internal/bridge"
)

const (
	currency = "USD"
	price    = 1
	lease    = 30 * time.Second
	ttl      = 24 * time.Hour
	pollStep = 25 * time.Millisecond
	pollMax  = 5 * time.Second
	// crashRetryAfter is what the testworker passes to bridge.SetCrashRetryAfter (not the shim's default).
	crashRetryAfter = 12 * time.Second
)

// db opens the D1 store on first use: bindings exist only while an event is served.
type db struct {
	mu     sync.Mutex
	client *store.CountingClient
	store  *sqlstore.Store
}

// open returns the store over bridge.OpenD1, or over store/d1 (syumai's database/sql driver) when the
// TESTWORKER_D1 var is "syumai".
func (d *db) open(ctx context.Context) (*sqlstore.Store, *store.CountingClient, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.store == nil {
		var c store.DbClient = bridge.OpenD1("DB")
		if bridge.Getenv(ctx, "TESTWORKER_D1") == "syumai" {
			sc, err := d1.Open("DB")
			if err != nil {
				return nil, nil, err
			}
			c = sc
		}
		d.client = &store.CountingClient{Inner: c}
		d.store = sqlstore.New(d.client)
	}
	return d.store, d.client, nil
}

func main() {
	d := &db{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	})
	mux.HandleFunc("POST /seed", d.withStore(seed))
	mux.HandleFunc("POST /paid", d.withStore(paid))
	mux.HandleFunc("POST /job", d.withStore(job))
	mux.HandleFunc("GET /slow", d.withStore(slow))
	mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic("testworker: boom") })
	mux.HandleFunc("GET /crash", func(w http.ResponseWriter, r *http.Request) {
		go panic("testworker: unrecovered panic on a bare goroutine")
		time.Sleep(time.Second)
	})
	mux.HandleFunc("GET /overflow", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"depth": recurse(1 << 30)})
	})
	mux.HandleFunc("GET /fetch", fetchUpstream)
	mux.HandleFunc("POST /bytes", roundTripBytes)
	mux.HandleFunc("GET /mem", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gc") == "1" {
			runtime.GC()
		}
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		writeJSON(w, http.StatusOK, map[string]any{"heapAlloc": m.HeapAlloc, "heapInuse": m.HeapInuse,
			"heapSys": m.HeapSys, "sys": m.Sys, "numGC": m.NumGC, "goroutines": runtime.NumGoroutine()})
	})
	bridge.OnScheduled(func(ctx context.Context) error {
		_, c, err := d.open(ctx)
		if err != nil {
			return err
		}
		s, _ := bridge.ScheduledEvent(ctx)
		return insertJob(ctx, c, "cron:"+s.Cron)
	})
	bridge.SetCrashRetryAfter(crashRetryAfter)
	bridge.Serve(mux)
}

// recurse calls itself n deep; the wasm stack (V8's) overflows long before 1<<30.
//
//go:noinline
func recurse(n int) int {
	if n == 0 {
		return 0
	}
	return recurse(n-1) + 1
}

// fetchUpstream fetches url with a context that ends after deadline= ms (a deadline) or cancel= ms (a
// cancellation, no deadline).
func fetchUpstream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if ms, err := strconv.Atoi(q.Get("deadline")); err == nil {
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
		defer cancel()
	}
	if ms, err := strconv.Atoi(q.Get("cancel")); err == nil {
		time.AfterFunc(time.Duration(ms)*time.Millisecond, cancel)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, q.Get("url"), strings.NewReader(`{"q":1}`))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
		return
	}
	res, err := bridge.Fetch(req)
	if err != nil {
		writeJSON(w, http.StatusGatewayTimeout, map[string]any{"error": err.Error(),
			"deadline": errors.Is(err, context.DeadlineExceeded), "canceled": errors.Is(err, context.Canceled)})
		return
	}
	defer res.Body.Close()
	w.WriteHeader(res.StatusCode)
	_, _ = io.Copy(w, res.Body)
}

// roundTripBytes sends a text of n= bytes through D1 and Fetch (url=, an echo) and checks it comes back
// whole: small ones cross through the bridge's inbox, big ones as JS values.
func roundTripBytes(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
		return
	}
	sum := sha256.Sum256(body)
	text := []byte(strings.Repeat("é€😀x", n/10+1))[:n] // 2+3+4+1 bytes
	for !utf8.Valid(text) {
		text = text[:len(text)-1]
	}
	text = append(text, strings.Repeat("y", n-len(text))...)
	out := map[string]any{"body": fmt.Sprintf("%d %x", len(body), sum)}
	ctx := r.Context()
	c := bridge.OpenD1("DB")
	rows, err := c.Query(ctx, `SELECT ? AS s`, string(text))
	out["query"] = err == nil && len(rows) == 1 && rows[0][0] == string(text)
	if err != nil {
		out["queryError"] = err.Error()
	}
	res, err := c.Batch(ctx, []store.Stmt{{Query: `SELECT 1 AS one`}, {Query: `SELECT ? AS s`, Args: []any{string(text)}}})
	out["batch"] = err == nil && len(res) == 2 && len(res[1]) == 1 && res[1][0][0] == string(text)
	if err != nil {
		out["batchError"] = err.Error()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL.Query().Get("url"), bytes.NewReader(text))
	if err == nil {
		var up *http.Response
		if up, err = bridge.Fetch(req); err == nil {
			echoed, _ := io.ReadAll(up.Body)
			out["fetch"] = bytes.Equal(echoed, text)
			if !bytes.Equal(echoed, text) {
				i := 0
				for i < min(len(echoed), len(text)) && echoed[i] == text[i] {
					i++
				}
				out["fetchError"] = fmt.Sprintf("echoed %d bytes for %d, the same up to byte %d", len(echoed), len(text), i)
			}
		}
	}
	if err != nil {
		out["fetchError"] = err.Error()
	}
	if _, err = c.Exec(ctx, `SELECT * FROM "nö_tåble_`+string(text)+`"`); err != nil {
		out["error"] = err.Error()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
	_, _ = w.Write(text)
}

type storeHandler func(ctx context.Context, s *sqlstore.Store, c store.DbClient, w http.ResponseWriter, r *http.Request) error

// withStore opens the store, counts the request's statements into X-D1-Statements, and answers errors 500.
func (d *db) withStore(h storeHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, c, err := d.open(r.Context())
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error()})
			return
		}
		ctx, rt := store.WithRoundTrips(r.Context())
		cw := &countingWriter{ResponseWriter: w, rt: rt}
		if err := h(ctx, s, c, cw, r.WithContext(ctx)); err != nil {
			writeJSON(cw, http.StatusInternalServerError, map[string]any{"error": err.Error()})
		}
	}
}

// countingWriter sets X-D1-Statements when the header is written.
type countingWriter struct {
	http.ResponseWriter
	rt *store.RoundTrips
}

func (w *countingWriter) WriteHeader(status int) {
	w.Header().Set("X-D1-Statements", strconv.FormatInt(w.rt.Count(), 10))
	w.ResponseWriter.WriteHeader(status)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.Header().Get("X-D1-Statements") == "" {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

func seed(ctx context.Context, s *sqlstore.Store, _ store.DbClient, w http.ResponseWriter, r *http.Request) error {
	caller := r.URL.Query().Get("caller")
	amount, err := strconv.ParseInt(r.URL.Query().Get("amount"), 10, 64)
	if err != nil {
		return fmt.Errorf("amount: %w", err)
	}
	res, err := s.Credit(ctx, store.CreditParams{Caller: caller, Currency: currency, Amount: amount,
		Reference: "seed:" + caller, Now: time.Now()})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"applied": res.Applied, "balance": res.Balance})
	return nil
}

// paid is the paid call's store path: claim, charge, complete; a duplicate replays or waits.
func paid(ctx context.Context, s *sqlstore.Store, _ store.DbClient, w http.ResponseWriter, r *http.Request) error {
	input, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	caller, key := r.URL.Query().Get("caller"), r.URL.Query().Get("key")
	sum := sha256.Sum256(input)
	p := store.ClaimParams{Key: caller + "/" + key, Owner: newID("o_"), Fingerprint: hex.EncodeToString(sum[:]),
		Now: time.Now(), Lease: lease, TTL: ttl}
	for waited := time.Duration(0); ; waited += pollStep {
		cr, err := s.Claim(ctx, p)
		if err != nil {
			return err
		}
		switch cr.Outcome {
		case store.OutcomeCompleted:
			return answerStored(w, cr.Record, true)
		case store.OutcomeClaimed:
			return execute(ctx, s, w, caller, store.Fence{Key: p.Key, Owner: p.Owner, Generation: cr.Record.Generation})
		}
		if waited >= pollMax {
			writeJSON(w, http.StatusConflict, map[string]any{"error": "in progress"})
			return nil
		}
		time.Sleep(pollStep)
		rec, err := s.Peek(ctx, p.Key)
		if err == nil && rec.Status == store.StatusCompleted {
			return answerStored(w, rec, true)
		}
		p.Now = time.Now()
	}
}

func execute(ctx context.Context, s *sqlstore.Store, w http.ResponseWriter, caller string, f store.Fence) error {
	ch, err := s.Charge(ctx, store.ChargeParams{Fence: f, Caller: caller, Currency: currency, Amount: price, Now: time.Now()})
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]any{"key": f.Key, "charged": ch.Charged, "balance": ch.Balance})
	rec := store.Record{Response: &store.Response{StatusCode: http.StatusOK, ContentType: "application/json", Body: body}}
	if err := s.Complete(ctx, store.CompleteParams{Fence: f, Now: time.Now(), Response: *rec.Response}); err != nil {
		return err
	}
	return answerStored(w, rec, false)
}

func answerStored(w http.ResponseWriter, rec store.Record, replayed bool) error {
	if rec.Response == nil {
		return errors.New("completed record holds no response")
	}
	w.Header().Set("Content-Type", rec.Response.ContentType)
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.WriteHeader(rec.Response.StatusCode)
	_, err := w.Write(rec.Response.Body)
	return err
}

// job answers 202 at once; a WaitUntil job sleeps, then records id in D1.
func job(ctx context.Context, _ *sqlstore.Store, c store.DbClient, w http.ResponseWriter, r *http.Request) error {
	id := r.URL.Query().Get("id")
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	bridge.WaitUntil(ctx, func(ctx context.Context) {
		time.Sleep(time.Duration(ms) * time.Millisecond)
		if err := insertJob(ctx, c, id); err != nil {
			fmt.Printf("testworker: job %s: %v\n", id, err)
		}
	})
	writeJSON(w, http.StatusAccepted, map[string]any{"id": id})
	return nil
}

func insertJob(ctx context.Context, c store.DbClient, id string) error {
	if _, err := c.Exec(ctx, `CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, done_at INTEGER NOT NULL)`); err != nil {
		return err
	}
	_, err := c.Exec(ctx, `INSERT INTO jobs (id, done_at) VALUES (?, ?)`, id, time.Now().UnixMilli())
	return err
}

func slow(ctx context.Context, _ *sqlstore.Store, c store.DbClient, w http.ResponseWriter, r *http.Request) error {
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	time.Sleep(time.Duration(ms) * time.Millisecond)
	rows, err := c.Query(ctx, `SELECT 1`)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"slept": ms, "rows": len(rows)})
	return nil
}

func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
