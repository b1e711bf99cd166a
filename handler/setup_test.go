//go:build !js

package handler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler"
	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/problem"
	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlite"
	"github.com/toolgate/toolgate-go/store/sqlstore"
)

const adminToken = "test-admin-token-0123456789"

// upstream is a loopback tool server that counts calls. Paths:
//
//	/ok?delay=D   200 {"n":N,"input":<body>} after D
//	/fail         500
//	/flaky?delay=D 500 on its first call (after D), then like /ok
//	/bad          400 {"error":"bad input"}
//	/block        waits until release is closed (or the request ends)
//	/text         200 text/plain
//	/deep         400 with JSON nested 9,000 levels deep
type upstream struct {
	srv         *httptest.Server
	calls       atomic.Int64
	byPath      sync.Map // path -> *atomic.Int64
	release     chan struct{}
	releaseOnce sync.Once
	started     chan struct{} // receives once per /block call that started

	mu      sync.Mutex
	headers []http.Header
	bodies  [][]byte
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{release: make(chan struct{}), started: make(chan struct{}, 100)}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(func() {
		u.unblock()
		u.srv.Close()
	})
	return u
}

func (u *upstream) unblock() { u.releaseOnce.Do(func() { close(u.release) }) }

func (u *upstream) count(path string) int64 {
	v, ok := u.byPath.Load(path)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	n := u.calls.Add(1)
	c, _ := u.byPath.LoadOrStore(r.URL.Path, &atomic.Int64{})
	pathN := c.(*atomic.Int64).Add(1)
	u.mu.Lock()
	u.headers = append(u.headers, r.Header.Clone())
	u.bodies = append(u.bodies, body)
	u.mu.Unlock()
	if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil {
		time.Sleep(d)
	}
	ok := func() {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"n": %d, "input": %s}`, n, body)
	}
	switch r.URL.Path {
	case "/ok":
		ok()
	case "/fail":
		http.Error(w, "boom", http.StatusInternalServerError)
	case "/flaky":
		if pathN == 1 {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		ok()
	case "/bad":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"bad input"}`))
	case "/block":
		u.started <- struct{}{}
		select {
		case <-u.release:
			ok()
		case <-r.Context().Done():
		}
	case "/deep":
		// A 400 whose JSON nests 9,000 levels: stored, it would be parsed
		// again on every MCP replay.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(strings.Repeat(`{"e":`, 9000) + "1" + strings.Repeat("}", 9000)))
	case "/metered":
		// A metered tool: it reports the units of ?units in its usage
		// header (none without the parameter), then answers as /ok.
		if units, ok := r.URL.Query()["units"]; ok {
			w.Header().Set("Toolgate-Usage", units[0])
		}
		ok()
	case "/text":
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("plain <text> & more"))
	default:
		http.NotFound(w, r)
	}
}

func (u *upstream) lastHeader() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.headers[len(u.headers)-1]
}

// strictSchema is the inputSchema of the tool "strict" (here and in the
// x402 catalog).
const strictSchema = `{"type": "object", "required": ["q"], "additionalProperties": false, "properties": {
	  "q": {"type": "string", "minLength": 1},
	  "limit": {"type": "integer", "minimum": 1, "maximum": 9007199254740992}}}`

// testCatalog is the catalog of every test: one tool per upstream behaviour.
func testCatalog(t testing.TB, base string) *catalog.Catalog {
	t.Helper()
	doc := fmt.Sprintf(`{"tools": [
	 {"name": "echo", "description": "echo", "price": "0.05", "currency": "USD",
	  "forwardHeaders": ["Accept-Language"], "upstream": {"url": "%[1]s/ok", "headers": {"X-Tool-Version": "2"}}},
	 {"name": "echo2", "description": "echo", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/ok"}},
	 {"name": "slow", "description": "300 ms", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/ok?delay=300ms"}},
	 {"name": "slow1s", "description": "1 s", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/ok?delay=1s"}},
	 {"name": "longrun", "description": "3x the lease", "price": "0.05", "currency": "USD", "lease": "300ms",
	  "upstream": {"url": "%[1]s/ok?delay=900ms"}},
	 {"name": "fail", "description": "500", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/fail"}},
	 {"name": "flaky", "description": "500 once", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/flaky"}},
	 {"name": "flakyslow", "description": "500 once after 300ms", "price": "0.05", "currency": "USD",
	  "upstream": {"url": "%[1]s/flaky?delay=300ms"}},
	 {"name": "bad", "description": "400", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/bad"}},
	 {"name": "block", "description": "blocks", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/block"}},
	 {"name": "timeout", "description": "times out", "price": "0.05", "currency": "USD", "timeout": "200ms",
	  "upstream": {"url": "%[1]s/block"}},
	 {"name": "unreachable", "description": "no server", "price": "0.05", "currency": "USD",
	  "upstream": {"url": "http://127.0.0.1:1/x"}},
	 {"name": "deep", "description": "deep 400", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/deep"}},
	 {"name": "text", "description": "text", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/text"}},
	 {"name": "free", "description": "free", "price": "0", "currency": "USD", "upstream": {"url": "%[1]s/ok"}},
	 {"name": "boom", "description": "panics", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/ok?boom=1"}},
	 {"name": "strict", "description": "checked input", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/ok"},
	  "inputSchema": `+strictSchema+`}
	]}`, base)
	c, err := catalog.ParseCatalog([]byte(doc))
	require.NoError(t, err)
	return c
}

// env is one gateway over a real SQLite store and a loopback upstream.
type env struct {
	t    testing.TB
	st   store.Store
	db   *store.CountingClient
	up   *upstream
	gw   *httptest.Server
	logs *syncBuffer
}

type option func(*handler.Config)

func setup(t *testing.T, opts ...option) *env {
	t.Helper()
	return setupDB(t, nil, opts...)
}

// setupDB is setup with the gateway's store over wrap(the counting client),
// when wrap is not nil (a fault injector). The test's own reads through
// e.st (balances, records, invariants) do not go through wrap.
func setupDB(t *testing.T, wrap func(store.DbClient) store.DbClient, opts ...option) *env {
	t.Helper()
	e := &env{t: t, up: newUpstream(t), logs: &syncBuffer{}}
	e.st, e.db = openStore(t)
	var gwStore store.Store = e.st
	if wrap != nil {
		gwStore = sqlstore.New(wrap(e.db))
	}
	cfg := handler.Config{
		Store:      gwStore,
		Catalog:    testCatalog(t, e.up.srv.URL),
		AdminToken: adminToken,
		Upstream: engine.UpstreamFunc(func(ctx context.Context, r engine.UpstreamRequest) (engine.UpstreamResponse, error) {
			if strings.Contains(r.URL, "boom=1") {
				panic("upstream exploded")
			}
			return (&engine.HTTPUpstream{}).Do(ctx, r)
		}),
		Logger: slog.New(slog.NewJSONHandler(e.logs, nil)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	h, err := handler.New(cfg)
	require.NoError(t, err)
	e.gw = httptest.NewServer(h)
	t.Cleanup(func() {
		e.up.unblock()
		e.gw.Close()
	})
	return e
}

func openStore(t testing.TB) (store.Store, *store.CountingClient) {
	t.Helper()
	client, err := sqlite.Open(filepath.Join(t.TempDir(), "toolgate.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.DB().Close() })
	require.NoError(t, sqlstore.Migrate(context.Background(), client))
	counting := &store.CountingClient{Inner: client}
	return sqlstore.New(counting), counting
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), string(r.body))
	return m
}

// problem asserts r is a problem+json of the given status and type slug.
func (r response) problem(t testing.TB, status int, slug string) map[string]any {
	t.Helper()
	require.Equal(t, status, r.status, string(r.body))
	require.Equal(t, "application/problem+json", r.header.Get("Content-Type"))
	m := r.json(t)
	require.Equal(t, problem.TypeBase+slug, m["type"], string(r.body))
	require.EqualValues(t, status, m["status"])
	return m
}

func (e *env) do(method, path, bearer string, header map[string]string, body string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.gw.URL+path, strings.NewReader(body))
	require.NoError(e.t, err)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := e.gw.Client().Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(e.t, err)
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// call posts body to tool with an Idempotency-Key (none when key is "").
func (e *env) call(callerKey, tool, key, body string) response {
	e.t.Helper()
	h := map[string]string{"Content-Type": "application/json"}
	if key != "" {
		h["Idempotency-Key"] = key
	}
	return e.do(http.MethodPost, "/v1/tools/"+tool+"/call", callerKey, h, body)
}

type caller struct{ id, key, keyID string }

// newCaller creates a caller through the admin API and credits it.
func (e *env) newCaller(name, credit string) caller {
	e.t.Helper()
	r := e.do(http.MethodPost, "/v1/admin/callers", adminToken, nil, fmt.Sprintf(`{"name": %q}`, name))
	require.Equal(e.t, http.StatusCreated, r.status, string(r.body))
	m := r.json(e.t)
	c := caller{id: m["id"].(string), key: m["key"].(string)}
	if credit != "" {
		e.credit(c, credit, "initial-"+c.id)
	}
	return c
}

func (e *env) credit(c caller, amount, ref string) {
	e.t.Helper()
	r := e.do(http.MethodPost, "/v1/admin/credits", adminToken, nil,
		fmt.Sprintf(`{"caller": %q, "amount": %q, "currency": "USD", "reference": %q}`, c.id, amount, ref))
	require.Equal(e.t, http.StatusCreated, r.status, string(r.body))
}

func (e *env) balance(c caller) int64 {
	e.t.Helper()
	b, err := e.st.Balance(context.Background(), c.id, "USD")
	require.NoError(e.t, err)
	return b
}

func (e *env) entries(c caller) []store.Entry {
	e.t.Helper()
	es, err := e.st.Entries(context.Background(), store.EntryFilter{Caller: c.id})
	require.NoError(e.t, err)
	return es
}

// kinds lists the ledger entry kinds of c, oldest first.
func (e *env) kinds(c caller) []string {
	var out []string
	for _, en := range e.entries(c) {
		out = append(out, en.Kind)
	}
	return out
}

func (e *env) record(c caller, tool, key string) (store.Record, error) {
	return e.st.Peek(context.Background(), engine.ScopedKey(c.id, tool, key))
}

func (e *env) checkInvariants() {
	e.t.Helper()
	require.NoError(e.t, e.st.CheckInvariants(context.Background()))
}

// logLines returns the parsed "call" log lines.
func (e *env) logLines() []map[string]any {
	e.t.Helper()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(e.logs.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		require.NoError(e.t, json.Unmarshal(line, &m), string(line))
		if m["msg"] == "call" {
			out = append(out, m)
		}
	}
	return out
}

// parallel runs n copies of f at once and waits for them.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			f(i)
		}()
	}
	close(start)
	wg.Wait()
}

// afterFirst runs f(0), and once the upstream has seen its call (so call 0
// holds the key), f(1) to f(n-1) in parallel; it returns when all are done.
// It orders the calls by the upstream's own signal, not by sleeping.
func (e *env) afterFirst(n int, f func(i int)) {
	e.t.Helper()
	before := e.up.calls.Load()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f(0)
	}()
	require.Eventually(e.t, func() bool { return e.up.calls.Load() > before }, 10*time.Second, time.Millisecond,
		"the first call reaches the upstream")
	parallel(n-1, func(i int) { f(i + 1) })
	wg.Wait()
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf.Bytes()...)
}
