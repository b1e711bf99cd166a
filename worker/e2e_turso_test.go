//go:build !js

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/hrana"
	"github.com/toolgate/toolgate-go/store/libsql"
	"github.com/toolgate/toolgate-go/store/libsql/hranatest"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/store/storetest"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// The Turso build in workerd, against the Hrana test server on loopback:
// libSQL over HTTP from inside the isolate, through store/hrana on the
// bridge's fetch.

// TestE2ETurso runs the Turso build of the same worker against the Hrana
// test server on loopback: libSQL over HTTP from inside workerd.
func TestE2ETurso(t *testing.T) {
	t.Parallel()
	dir := edgetest.BuildVariant(t, "turso")
	path := filepath.Join(t.TempDir(), "turso.db")
	srv, err := hranatest.Start(path)
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	// The schema comes from libsql-client-go natively, as `make migrate-turso` does.
	ldb, err := libsql.Open(srv.URL(), "")
	require.NoError(t, err)
	require.NoError(t, sqlstore.Migrate(context.Background(), ldb))
	up := newUpstream(t)
	edge := edgetest.Start(t, edgetest.Options{
		BuildDir: dir,
		Vars:     map[string]string{"TOOLS": up.tools(), "ADMIN_TOKEN": e2eAdminToken, "TURSO_DATABASE_URL": srv.URL()},
	})
	before := srv.Requests()
	hana := newCaller(t, edge.URL("w0"), "hana", "10.00")
	require.Greater(t, srv.Requests(), before, "the worker talks to the Hrana server")
	_, replayed := storm(t, []string{edge.URL("w0")}, hana.key, "echo", "t-1", `{"q":"turso"}`, 50)
	require.Equal(t, 49, replayed)
	require.Equal(t, 1, up.count("/echo"))

	// Round trips once the caller is cached: a paid call claims and charges
	// in one batch, then completes; a replay is one read.
	before = srv.Requests()
	res, body := hana.call("echo", "t-2", `{"q":"trips"}`)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	require.Equal(t, int64(2), srv.Requests()-before, "HTTP requests to libSQL for a paid call")
	before = srv.Requests()
	res, body = hana.call("echo", "t-2", `{"q":"trips"}`)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	require.Equal(t, "true", res.Header.Get("Idempotent-Replayed"))
	require.Equal(t, int64(1), srv.Requests()-before, "HTTP requests to libSQL for a replay")

	st := sqlstore.New(ldb)
	require.NoError(t, st.CheckInvariants(context.Background()))
	bal, err := st.Balance(context.Background(), "hana", "USD")
	require.NoError(t, err)
	require.Equal(t, int64(990), bal)
	entries, err := st.Entries(context.Background(), store.EntryFilter{Caller: "hana"})
	require.NoError(t, err)
	require.Len(t, entries, 3, "one credit, two charges")
	requireHealthyIsolate(t, edge)
}

// TestE2ETursoConformance runs the store conformance suite inside workerd
// on store/hrana over the bridge's fetch (the Turso build's client), against
// the Hrana test server, through the test build's runner route.
func TestE2ETursoConformance(t *testing.T) {
	t.Parallel()
	dir := edgetest.BuildVariant(t, "conformance")
	srv, err := hranatest.Start(filepath.Join(t.TempDir(), "conformance.db"))
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	edge := edgetest.Start(t, edgetest.Options{
		BuildDir: dir,
		Vars:     map[string]string{"TOOLS": newUpstream(t).tools(), "TEST_HRANA_URL": srv.URL()},
	})
	res, body := client{t: t, base: edge.URL("w0")}.do(http.MethodPost, "/_test/hrana-conformance", nil, nil)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	require.Equal(t, "true", res.Header.Get("Toolgate-Hrana-Batch"), "claims and charges in one Hrana batch")
	var results []storetest.Result
	require.NoError(t, json.Unmarshal(body, &results))
	require.Len(t, results, len(storetest.Cases))
	for _, r := range results {
		require.True(t, r.Passed, "hrana in workerd %s: %s", r.Name, r.Failure)
	}
	requireHealthyIsolate(t, edge)
}

// TestE2ETursoHeartbeats runs calls that outlive several leases, so their
// heartbeats are in flight when the upstream answers and the heartbeat's
// context ends. Go's js/wasm net/http transport (libsql-client-go) aborted
// such a fetch from another request's turn and workerd killed the isolate
// ("Cannot perform I/O on behalf of a different request", "Go program exited").
func TestE2ETursoHeartbeats(t *testing.T) {
	t.Parallel()
	te := startTurso(t)
	c := newCaller(t, te.edge.URL("w0"), "ivy", "100.00")

	t.Run("concurrent long calls and a duplicate storm", func(t *testing.T) {
		const keys, dups = 24, 20
		var wg sync.WaitGroup
		statuses := make(chan int, keys+dups)
		send := func(key string) {
			defer wg.Done()
			res, body, err := c.try(http.MethodPost, "/v1/tools/hb/call", []byte(`{"k":"`+key+`"}`), map[string]string{"Idempotency-Key": key})
			if err != nil {
				statuses <- 0
				return
			}
			if res.StatusCode != http.StatusOK {
				t.Logf("%s: %d %s", key, res.StatusCode, body)
			}
			statuses <- res.StatusCode
		}
		for i := range keys {
			wg.Add(1)
			go send(fmt.Sprint("hb-", i))
		}
		for range dups {
			wg.Add(1)
			go send("hb-0")
		}
		wg.Wait()
		close(statuses)
		got := map[int]int{}
		for s := range statuses {
			got[s]++
		}
		require.Equal(t, keys, te.up.keys("/sleep"), "upstream keys")
		require.Equal(t, keys, te.up.count("/sleep"), "upstream calls: one per key")
		require.Equal(t, map[int]int{http.StatusOK: keys + dups}, got)
		require.Equal(t, keys, te.charges(t, "ivy"))
	})

	t.Run("database stalls while every heartbeat is in flight", func(t *testing.T) {
		const keys = 12
		mark := te.up.count("/gate")
		var wg sync.WaitGroup
		statuses := make(chan int, keys)
		for i := range keys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, _, err := c.try(http.MethodPost, "/v1/tools/stall/call", []byte(`{"gate":"stall"}`),
					map[string]string{"Idempotency-Key": fmt.Sprint("stall-", i)})
				if err != nil {
					statuses <- 0
					return
				}
				statuses <- res.StatusCode
			}()
		}
		te.up.waitCalls(t, "/gate", mark+keys)
		// Every call is now inside its upstream call. Stall the database
		// until each call's heartbeat is held there (a heartbeat waits for
		// the previous one, so that is one per call), then let the upstream
		// answer: each call cancels its heartbeat mid-statement and goes on
		// to complete, which the stalled database holds too.
		// (A heartbeat cancelled mid-statement is aborted, so it leaves the
		// server: count the requests held so far, not those still held.)
		heldBefore := te.srv.HeldTotal()
		release := te.srv.Pause()
		defer release() // a failure below must not leave the database stalled
		waitHeld(t, te.srv, keys)
		te.up.open("stall")
		waitHeldTotal(t, te.srv, heldBefore+2*keys)
		release()
		wg.Wait()
		close(statuses)
		got := map[int]int{}
		for s := range statuses {
			got[s]++
		}
		require.Equal(t, map[int]int{http.StatusOK: keys}, got)
		require.Equal(t, mark+keys, te.up.count("/gate"), "upstream calls: one per key")
	})

	te.check(t, "ivy")
	requireHealthyIsolate(t, te.edge)
}

// TestE2ETursoRestart stops the database while calls are in flight and
// starts it again on the same address and file.
func TestE2ETursoRestart(t *testing.T) {
	t.Parallel()
	te := startTurso(t)
	c := newCaller(t, te.edge.URL("w0"), "jo", "10.00")
	type result struct {
		status int
		body   string
		err    error
	}
	call := func(key, gate string) chan result {
		ch := make(chan result, 1)
		go func() {
			res, body, err := c.try(http.MethodPost, "/v1/tools/stall/call", []byte(`{"gate":"`+gate+`"}`),
				map[string]string{"Idempotency-Key": key})
			if err != nil {
				ch <- result{err: err}
				return
			}
			ch <- result{status: res.StatusCode, body: string(body)}
		}()
		return ch
	}
	// "up" answers after the database is back, "down" while it is down.
	upDone, downDone := call("r-up", "up"), call("r-down", "down")
	te.up.waitCalls(t, "/gate", 2)
	addr := strings.TrimPrefix(te.srv.URL(), "http://")
	require.NoError(t, te.srv.Close())

	// While it is down: 503 with Retry-After, nothing else.
	res, body, err := c.try(http.MethodPost, "/v1/tools/echo/call", []byte(`{}`), map[string]string{"Idempotency-Key": "r-new"})
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, res.StatusCode, string(body))
	require.NotEmpty(t, res.Header.Get("Retry-After"))
	te.up.open("down")
	down := <-downDone
	require.NoError(t, down.err)
	t.Logf("answered while the database was down: %d %s", down.status, down.body)

	srv, err := hranatest.Start(te.srv.Path(), hranatest.WithAddr(addr))
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	te.srv = srv
	te.up.open("up")
	up := <-upDone
	require.NoError(t, up.err)
	require.Equal(t, http.StatusOK, up.status, "a call whose database came back completes: %s", up.body)

	// The call answered while the database was down can be retried with
	// its key. Its final write may have been lost with the database (the
	// engine does not retry it yet), so the retry may take over once the
	// lease runs out and execute again: it is never charged twice.
	require.Eventually(t, func() bool {
		res, _, err := c.try(http.MethodPost, "/v1/tools/stall/call", []byte(`{"gate":"down"}`), map[string]string{"Idempotency-Key": "r-down"})
		return err == nil && res.StatusCode == http.StatusOK
	}, 30*time.Second, 200*time.Millisecond)
	res, body = c.call("echo", "r-new", `{}`)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	t.Logf("upstream calls for the call answered while down, after its retry: %d", te.up.count("/gate")-1)
	require.LessOrEqual(t, te.up.count("/gate"), 3, "r-up once, r-down at most twice")

	require.Equal(t, 3, te.charges(t, "jo"), "one charge per key: r-up, r-down, r-new")
	te.check(t, "jo")
	requireHealthyIsolate(t, te.edge)
}

// TestWasmLinksNoLibsqlClient pins that no wasm build links
// libsql-client-go (and with it Go's js/wasm net/http client): the Turso
// build talks to libSQL through store/hrana on the bridge's fetch.
func TestWasmLinksNoLibsqlClient(t *testing.T) {
	t.Parallel()
	for _, tags := range []string{"", "turso", "conformance", "turso,conformance"} {
		cmd := exec.Command("go", "list", "-deps", "-tags", tags, "./worker")
		cmd.Dir = edgetest.RepoRoot(t)
		cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
		out, err := cmd.Output()
		require.NoError(t, err, "go list -tags %q", tags)
		deps := strings.Fields(string(out))
		require.Contains(t, deps, "github.com/toolgate/toolgate-go/worker/internal/bridge", "tags %q", tags)
		for _, d := range deps {
			require.NotContains(t, d, "libsql-client-go", "tags %q", tags)
		}
		// The D1 build carries no libSQL client at all; the Turso and test builds carry store/hrana.
		require.Equal(t, tags != "", slices.Contains(deps, "github.com/toolgate/toolgate-go/store/hrana"), "tags %q: store/hrana linked", tags)
	}
}

// turso is one Turso-build worker, its database and its upstream.
type turso struct {
	edge *edgetest.Edge
	srv  *hranatest.Server
	up   *gatedUpstream
}

// startTurso starts the Hrana test server on a fresh file, migrates it and
// runs the Turso build against it with the tools of gatedUpstream.
func startTurso(t *testing.T) *turso {
	t.Helper()
	dir := edgetest.BuildVariant(t, "turso")
	srv, err := hranatest.Start(filepath.Join(t.TempDir(), "turso.db"))
	require.NoError(t, err)
	te := &turso{srv: srv, up: newGatedUpstream(t)}
	t.Cleanup(func() { te.srv.Close() })
	db, err := hrana.Open(srv.URL(), hrana.Options{})
	require.NoError(t, err)
	require.NoError(t, sqlstore.Migrate(context.Background(), db))
	te.edge = edgetest.Start(t, edgetest.Options{
		BuildDir: dir,
		// Duplicates wait for the owner however slow a loaded machine makes it: the tests assert
		// that every call ends 200, not how long a waiter waits.
		Vars: map[string]string{"TOOLS": te.up.tools(), "ADMIN_TOKEN": e2eAdminToken, "TURSO_DATABASE_URL": srv.URL(),
			"WAIT_FOR_IN_PROGRESS_MS": "60000"},
	})
	return te
}

func (te *turso) store(t *testing.T) *sqlstore.Store {
	t.Helper()
	db, err := hrana.Open(te.srv.URL(), hrana.Options{})
	require.NoError(t, err)
	return sqlstore.New(db)
}

// charges returns caller's net number of charges (charges minus refunds).
func (te *turso) charges(t *testing.T, caller string) int {
	t.Helper()
	entries, err := te.store(t).Entries(context.Background(), store.EntryFilter{Caller: caller})
	require.NoError(t, err)
	n := 0
	for _, e := range entries {
		switch e.Kind {
		case "charge":
			n++
		case "refund":
			n--
		}
	}
	return n
}

// check runs the store's invariants on the database and checks caller's
// balance against its ledger: every net charge is 0.05.
func (te *turso) check(t *testing.T, caller string) {
	t.Helper()
	st := te.store(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, st.CheckInvariants(ctx))
	entries, err := st.Entries(ctx, store.EntryFilter{Caller: caller})
	require.NoError(t, err)
	var credits int64
	for _, e := range entries {
		if e.Kind == "credit" {
			credits += e.Amount
		}
	}
	bal, err := st.Balance(ctx, caller, "USD")
	require.NoError(t, err)
	require.Equal(t, credits-5*int64(te.charges(t, caller)), bal)
}

// waitHeld waits until n requests are held by a paused Hrana server.
func waitHeldTotal(t *testing.T, srv *hranatest.Server, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, srv.WaitHeldTotal(ctx, n), "waiting for %d requests held in all", n)
}

func waitHeld(t *testing.T, srv *hranatest.Server, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, srv.WaitPaused(ctx, n), "waiting for %d held requests", n)
}

// requireHealthyIsolate fails if the Go runtime died or workerd refused
// cross-request I/O at any point.
func requireHealthyIsolate(t *testing.T, edge *edgetest.Edge) {
	t.Helper()
	for line := range strings.SplitSeq(edge.Logs(), "\n") {
		for _, bad := range []string{"Go program exited", "different request", "panic:"} {
			if strings.Contains(line, bad) {
				require.FailNow(t, "the isolate's Go runtime failed", "workerd log line: %.400s", line)
			}
		}
	}
}

// gatedUpstream is a loopback tool provider: /sleep answers after
// sleepFor, /gate when the gate named by the input's "gate" opens. It
// counts calls per path and per upstream Idempotency-Key.
type gatedUpstream struct {
	*httptest.Server
	mu      sync.Mutex
	calls   map[string]int
	keySeen map[string]map[string]bool
	gates   map[string]chan struct{}
	changed chan struct{}
	closing chan struct{} // closed at cleanup: held calls answer, so Close does not wait for them
}

// sleepFor is 2.5 leases of the tools below. The lease is 2 s, not 1 s: a heartbeat (every lease/3) delayed
// past the lease by a loaded machine lets a duplicate take over and call the upstream once more, which is
// allowed (never charged twice) but is not what these tests are about.
const sleepFor = 5000 * time.Millisecond

// answeredSuffix counts, under path+answeredSuffix, the calls of path that
// got their answer written.
const answeredSuffix = "#answered"

func newGatedUpstream(t *testing.T) *gatedUpstream {
	t.Helper()
	u := &gatedUpstream{calls: map[string]int{}, keySeen: map[string]map[string]bool{},
		gates: map[string]chan struct{}{}, changed: make(chan struct{}), closing: make(chan struct{})}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.calls[r.URL.Path]++
		if u.keySeen[r.URL.Path] == nil {
			u.keySeen[r.URL.Path] = map[string]bool{}
		}
		u.keySeen[r.URL.Path][r.Header.Get("Idempotency-Key")] = true
		close(u.changed)
		u.changed = make(chan struct{})
		u.mu.Unlock()
		switch r.URL.Path {
		case "/sleep":
			time.Sleep(sleepFor)
		case "/gate":
			name, _, _ := strings.Cut(strings.TrimPrefix(string(body), `{"gate":"`), `"`)
			select {
			case <-u.gate(name):
			case <-u.closing:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q,"input":%s}`, r.URL.Path, body)
		u.mu.Lock()
		u.calls[r.URL.Path+answeredSuffix]++
		close(u.changed)
		u.changed = make(chan struct{})
		u.mu.Unlock()
	}))
	t.Cleanup(func() {
		close(u.closing)
		u.Close()
	})
	return u
}

func (u *gatedUpstream) tools() string {
	tool := func(name, path string) string {
		return fmt.Sprintf(`{"name":%q,"description":"e2e %s","price":"0.05","currency":"USD",
			"upstream":{"url":"%s%s"},"timeout":"60s","lease":"2s","ttl":"1h"}`, name, name, u.URL, path)
	}
	return `{"tools":[` + strings.Join([]string{tool("hb", "/sleep"), tool("stall", "/gate"), tool("echo", "/echo")}, ",") + `]}`
}

func (u *gatedUpstream) gate(name string) chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	g, ok := u.gates[name]
	if !ok {
		g = make(chan struct{})
		u.gates[name] = g
	}
	return g
}

// open lets every call held at gate name answer, now and later.
func (u *gatedUpstream) open(name string) { close(u.gate(name)) }

func (u *gatedUpstream) count(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[path]
}

// keys returns how many distinct upstream Idempotency-Keys path saw.
func (u *gatedUpstream) keys(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.keySeen[path])
}

// waitCalls waits until path has been called n times.
func (u *gatedUpstream) waitCalls(t *testing.T, path string, n int) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		u.mu.Lock()
		got, changed := u.calls[path], u.changed
		u.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			require.FailNow(t, "upstream calls", "%s: %d calls, want %d", path, got, n)
		}
	}
}
