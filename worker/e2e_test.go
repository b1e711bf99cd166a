//go:build !js

package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/mcp/mcptest"
	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/store/storetest"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// These tests run the compiled wasm inside workerd (Miniflare), with a real
// local D1 and a loopback upstream that counts calls.

const e2eAdminToken = "e2e-admin-token"

// upstream is a loopback tool provider that counts calls per path.
type upstream struct {
	*httptest.Server
	mu    sync.Mutex
	calls map[string]int
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{calls: map[string]int{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.calls[r.URL.Path]++
		n := u.calls[r.URL.Path]
		u.mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/slow":
			time.Sleep(time.Second)
		case "/flaky":
			if n == 1 {
				http.Error(w, "first call fails", http.StatusInternalServerError)
				return
			}
		case "/metered":
			// A metered tool reports the units of ?units in its usage header.
			if units := r.URL.Query().Get("units"); units != "" {
				w.Header().Set("Toolgate-Usage", units)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q,"input":%s}`, r.URL.Path, body)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) count(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[path]
}

func (u *upstream) tools() string {
	tool := func(name, path, extra string) string {
		return fmt.Sprintf(`{"name":%q,"description":"e2e %s","price":"0.05","currency":"USD",
			"upstream":{"url":"%s%s"}%s}`, name, name, u.URL, path, extra)
	}
	return `{"tools":[` + strings.Join([]string{
		tool("echo", "/echo", ""),
		tool("slow", "/slow", `,"timeout":"10s"`),
		tool("flaky", "/flaky", ""),
		tool("brief", "/brief", `,"timeout":"500ms","lease":"1s","ttl":"2s"`),
	}, ",") + `]}`
}

// client talks to one worker as one caller.
type client struct {
	t    *testing.T
	base string
	key  string
}

func (c client) do(method, path string, body []byte, hdr map[string]string) (*http.Response, []byte) {
	c.t.Helper()
	res, b, err := c.try(method, path, body, hdr)
	require.NoError(c.t, err)
	return res, b
}

// try is do without t, for goroutines.
func (c client) try(method, path string, body []byte, hdr map[string]string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, b, err
}

func (c client) call(tool, key, body string) (*http.Response, []byte) {
	c.t.Helper()
	return c.do(http.MethodPost, "/v1/tools/"+tool+"/call", []byte(body), map[string]string{"Idempotency-Key": key})
}

// newCaller creates a caller through the admin API and credits it.
func newCaller(t *testing.T, base, id string, credit string) client {
	t.Helper()
	admin := client{t: t, base: base, key: e2eAdminToken}
	res, body := admin.do(http.MethodPost, "/v1/admin/callers", []byte(fmt.Sprintf(`{"id":%q,"name":%q}`, id, id)), nil)
	require.Equal(t, http.StatusCreated, res.StatusCode, string(body))
	var created struct{ Key string }
	require.NoError(t, json.Unmarshal(body, &created))
	if credit != "" {
		res, body = admin.do(http.MethodPost, "/v1/admin/credits",
			[]byte(fmt.Sprintf(`{"caller":%q,"amount":%q,"currency":"USD","reference":"seed-%s"}`, id, credit, id)), nil)
		require.Equal(t, http.StatusCreated, res.StatusCode, string(body))
	}
	return client{t: t, base: base, key: created.Key}
}

// storm sends n identical calls spread over bases and returns the bodies
// and how many were marked replayed.
func storm(t *testing.T, bases []string, key, tool, idem, body string, n int) (bodies [][]byte, replayed int) {
	t.Helper()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
		errs     []error
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := client{base: bases[i%len(bases)], key: key}
			res, b, err := c.try(http.MethodPost, "/v1/tools/"+tool+"/call", []byte(body), map[string]string{"Idempotency-Key": idem})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			statuses[res.StatusCode]++
			bodies = append(bodies, b)
			if res.Header.Get("Idempotent-Replayed") == "true" {
				replayed++
			}
		}(i)
	}
	wg.Wait()
	require.Empty(t, errs)
	require.Equal(t, map[int]int{http.StatusOK: n}, statuses, "every storm call answers 200")
	for _, b := range bodies[1:] {
		require.Equal(t, string(bodies[0]), string(b), "storm bodies are byte-identical")
	}
	return bodies, replayed
}

// checkLedger reads the local D1 file (read-only) and runs the store's
// invariant checks on it, then returns caller's USD balance.
func checkLedger(t *testing.T, db *sql.DB, caller string) int64 {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, sqlstore.New(store.NewSQLClient("d1file", db)).CheckInvariants(ctx))
	var bal int64
	require.NoError(t, db.QueryRowContext(ctx, `SELECT coalesce((SELECT balance FROM balances WHERE caller = ? AND currency = 'USD'), 0)`, caller).Scan(&bal))
	return bal
}

func countCharges(t *testing.T, db *sql.DB, caller string) (charges, refunds int) {
	t.Helper()
	require.NoError(t, db.QueryRow(`SELECT count(*) FILTER (WHERE kind = 'charge'), count(*) FILTER (WHERE kind = 'refund')
		FROM ledger_entries WHERE caller = ?`, caller).Scan(&charges, &refunds))
	return charges, refunds
}

// TestE2EWorker runs the suite in both of the shim's Go runtime modes: one
// runtime per isolate (the default) and one per request (the fallback).
func TestE2EWorker(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{edgetest.ModePersistent, edgetest.ModePerRequest} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testWorker(t, mode)
		})
	}
}

func testWorker(t *testing.T, mode string) {
	up := newUpstream(t)
	edge := edgetest.Start(t, edgetest.Options{
		Mode:          mode,
		Workers:       []string{"w0", "w1", "fast"},
		MigrationsDir: "store/sqlstore/migrations",
		Vars:          map[string]string{"TOOLS": up.tools(), "ADMIN_TOKEN": e2eAdminToken},
		WorkerVars:    map[string]map[string]string{"fast": {"WAIT_FOR_IN_PROGRESS_MS": "0"}},
	})
	w0, w1 := edge.URL("w0"), edge.URL("w1")
	db := edge.OpenD1(t)

	t.Run("storm of 50 on one isolate", func(t *testing.T) {
		alice := newCaller(t, w0, "alice", "10.00")
		bodies, replayed := storm(t, []string{w0}, alice.key, "echo", "storm-1", `{"q":1}`, 50)
		require.Len(t, bodies, 50)
		require.Equal(t, 49, replayed)
		require.Equal(t, 1, up.count("/echo"))
		charges, _ := countCharges(t, db, "alice")
		require.Equal(t, 1, charges)
		require.Equal(t, int64(995), checkLedger(t, db, "alice"))
	})

	t.Run("storm of 50 across two isolates", func(t *testing.T) {
		bob := newCaller(t, w0, "bob", "10.00")
		before := up.count("/echo")
		_, replayed := storm(t, []string{w0, w1}, bob.key, "echo", "storm-2", `{"q":2}`, 50)
		require.Equal(t, 49, replayed)
		require.Equal(t, before+1, up.count("/echo"), "one upstream call across isolates")
		charges, _ := countCharges(t, db, "bob")
		require.Equal(t, 1, charges)
		require.Equal(t, int64(995), checkLedger(t, db, "bob"))
	})

	t.Run("4xx through the real worker change nothing", func(t *testing.T) {
		carol := newCaller(t, w1, "carol", "0.10")
		res, body := carol.call("echo", "c-1", `{"q":"a"}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		echoes := up.count("/echo")
		cases := map[string]struct {
			c      client
			tool   string
			key    string
			body   string
			status int
		}{
			"422 same key other payload": {carol, "echo", "c-1", `{"q":"b"}`, http.StatusUnprocessableEntity},
			"400 missing key":            {carol, "echo", "", `{}`, http.StatusBadRequest},
			"400 bad json":               {carol, "echo", "c-2", `{"q":`, http.StatusBadRequest},
			"401 wrong credential":       {client{t: t, base: w1, key: "tg_wrong"}, "echo", "c-3", `{}`, http.StatusUnauthorized},
			"404 unknown tool":           {carol, "nope", "c-4", `{}`, http.StatusNotFound},
			"413 oversized body":         {carol, "echo", "c-5", `{"q":"` + strings.Repeat("x", 1<<20) + `"}`, http.StatusRequestEntityTooLarge},
		}
		for name, tc := range cases {
			hdr := map[string]string{}
			if tc.key != "" {
				hdr["Idempotency-Key"] = tc.key
			}
			res, body := tc.c.do(http.MethodPost, "/v1/tools/"+tc.tool+"/call", []byte(tc.body), hdr)
			require.Equal(t, tc.status, res.StatusCode, "%s: %s", name, body)
			require.Equal(t, "application/problem+json", res.Header.Get("Content-Type"), name)
		}
		// 402: the balance (0.05 left) covers one more call, not two.
		res, body = carol.call("echo", "c-6", `{"q":"c"}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		res, body = carol.call("echo", "c-7", `{"q":"d"}`)
		require.Equal(t, http.StatusPaymentRequired, res.StatusCode, string(body))
		require.Contains(t, string(body), `"price"`)
		require.Equal(t, echoes+1, up.count("/echo"))
		require.Equal(t, int64(0), checkLedger(t, db, "carol"))
		charges, _ := countCharges(t, db, "carol")
		require.Equal(t, 2, charges)
	})

	t.Run("409 past the deadline with Retry-After", func(t *testing.T) {
		dave := newCaller(t, w0, "dave", "1.00")
		done := make(chan int)
		go func() {
			res, _, err := client{base: w0, key: dave.key}.try(http.MethodPost, "/v1/tools/slow/call", []byte(`{}`), map[string]string{"Idempotency-Key": "d-1"})
			if err != nil {
				done <- 0
				return
			}
			done <- res.StatusCode
		}()
		// The fail-fast isolate answers 409 while the first call is in flight
		// (once the upstream has it: a probe that came first would claim the
		// key itself).
		require.Eventually(t, func() bool { return up.count("/slow") == 1 }, 10*time.Second, 5*time.Millisecond)
		var res *http.Response
		require.Eventually(t, func() bool {
			res, _ = client{t: t, base: edge.URL("fast"), key: dave.key}.call("slow", "d-1", `{}`)
			return res.StatusCode == http.StatusConflict
		}, 5*time.Second, 50*time.Millisecond)
		require.NotEmpty(t, res.Header.Get("Retry-After"))
		require.Equal(t, http.StatusOK, <-done)
		require.Equal(t, 1, up.count("/slow"))
		require.Equal(t, int64(95), checkLedger(t, db, "dave"))
	})

	t.Run("upstream 500 is refunded and the retry executes", func(t *testing.T) {
		erin := newCaller(t, w1, "erin", "1.00")
		res, body := erin.call("flaky", "e-1", `{}`)
		require.Equal(t, http.StatusBadGateway, res.StatusCode, string(body))
		require.Contains(t, string(body), "refunded")
		require.Equal(t, int64(100), checkLedger(t, db, "erin"))
		res, body = erin.call("flaky", "e-1", `{}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		require.Equal(t, 2, up.count("/flaky"))
		charges, refunds := countCharges(t, db, "erin")
		require.Equal(t, [2]int{2, 1}, [2]int{charges, refunds})
		require.Equal(t, int64(95), checkLedger(t, db, "erin"))
	})

	t.Run("cron sweep removes expired records", func(t *testing.T) {
		frank := newCaller(t, w0, "frank", "1.00")
		res, body := frank.call("brief", "f-1", `{}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		var before int
		require.NoError(t, db.QueryRow(`SELECT count(*) FROM idem_records`).Scan(&before))
		time.Sleep(2100 * time.Millisecond) // the tool's TTL is 2 s
		require.NoError(t, edge.Scheduled(context.Background(), "w1", "*/15 * * * *"))
		var after int
		require.NoError(t, db.QueryRow(`SELECT count(*) FROM idem_records`).Scan(&after))
		require.Equal(t, before-1, after, "only the expired record is gone")
		require.Equal(t, int64(95), checkLedger(t, db, "frank"))
	})

	t.Run("MCP client through the worker", func(t *testing.T) {
		gina := newCaller(t, w0, "gina", "1.00")
		before := up.count("/echo")
		mcptest.Exercise(t, mcptest.Params{URL: w0 + "/mcp", APIKey: gina.key, Tool: "echo", Arguments: map[string]any{"q": "mcp"}})
		require.Equal(t, before+1, up.count("/echo"))
		charges, _ := countCharges(t, db, "gina")
		require.Equal(t, 1, charges)
		require.Equal(t, int64(95), checkLedger(t, db, "gina"))
	})
}

// TestE2ED1Conformance runs the store conformance suite against D1 inside
// workerd, through the test build's runner route.
func TestE2ED1Conformance(t *testing.T) {
	t.Parallel()
	dir := edgetest.BuildVariant(t, "conformance")
	edge := edgetest.Start(t, edgetest.Options{
		BuildDir: dir,
		Vars:     map[string]string{"TOOLS": newUpstream(t).tools()},
	})
	// Both D1 clients: store/d1 (syumai's driver) and the bridge's, which
	// the worker uses in production.
	for path, batches := range map[string]string{"/_test/d1-conformance": "false", "/_test/d1-conformance?client=bridge": "true"} {
		// A fresh connection per run: a kept-alive one was reset now and then
		// right after the first long run, before the request reached Go.
		req, err := http.NewRequest(http.MethodPost, edge.URL("w0")+path, nil)
		require.NoError(t, err)
		res, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		require.NoError(t, err)
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		require.Equal(t, batches, res.Header.Get("Toolgate-D1-Batch"), "%s: claims and charges in one D1 batch", path)
		var results []storetest.Result
		require.NoError(t, json.Unmarshal(body, &results))
		require.Len(t, results, len(storetest.Cases))
		for _, r := range results {
			require.True(t, r.Passed, "D1 %s %s: %s", path, r.Name, r.Failure)
		}
	}
}

// TestE2EMigrations checks that the harness applies migrations like `wrangler d1 migrations apply`:
// compound statements survive, each file is recorded in d1_migrations, and a restart applies nothing twice.
func TestE2EMigrations(t *testing.T) {
	t.Parallel()
	opts := edgetest.Options{MigrationsDir: "worker/testdata/migrations", PersistDir: t.TempDir(),
		Vars: map[string]string{"TOOLS": `{"tools":[]}`}}
	for range 2 { // the second start must find both files applied (0002 would double the balance)
		edge := edgetest.Start(t, opts)
		edge.Close()
	}
	db := edgetest.OpenD1File(t, opts.PersistDir)
	var balance int64
	require.NoError(t, db.QueryRow(`SELECT balance FROM accounts WHERE id = 'a; b'`).Scan(&balance))
	require.Equal(t, int64(380), balance)
	var names string
	require.NoError(t, db.QueryRow(`SELECT group_concat(name, ',') FROM (SELECT name FROM d1_migrations ORDER BY id)`).Scan(&names))
	require.Equal(t, "0001_accounts.sql,0002_seed.sql", names)
}
