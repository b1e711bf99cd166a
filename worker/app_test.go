//go:build !js

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlite"
	"github.com/toolgate/toolgate-go/store/sqlstore"
)

func TestSettingsFrom(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		env     map[string]string
		wantErr string
		check   func(t *testing.T, s Settings)
	}{
		"tools required": {env: map[string]string{}, wantErr: "TOOLS is empty"},
		"bad wait":       {env: map[string]string{"TOOLS": "{}", "WAIT_FOR_IN_PROGRESS_MS": "soon"}, wantErr: "WAIT_FOR_IN_PROGRESS_MS"},
		"bad sweep":      {env: map[string]string{"TOOLS": "{}", "SWEEP_BATCH": "0"}, wantErr: "SWEEP_BATCH"},
		"bad cache ttl":  {env: map[string]string{"TOOLS": "{}", "CALLER_CACHE_TTL_MS": "-1"}, wantErr: "CALLER_CACHE_TTL_MS"},
		"caller cache ttl": {env: map[string]string{"TOOLS": "{}", "CALLER_CACHE_TTL_MS": "1500"}, check: func(t *testing.T, s Settings) {
			require.Equal(t, 1500*time.Millisecond, s.CallerCacheTTL)
		}},
		"no caller cache": {env: map[string]string{"TOOLS": "{}", "CALLER_CACHE_TTL_MS": "0"}, check: func(t *testing.T, s Settings) {
			require.Negative(t, s.CallerCacheTTL, "0 turns the cache off")
		}},
		"zero wait fails fast": {env: map[string]string{"TOOLS": "{}", "WAIT_FOR_IN_PROGRESS_MS": "0"}, check: func(t *testing.T, s Settings) {
			require.Negative(t, s.WaitForInProgress, "fails fast")
		}},
		"mcp key derived from the admin token": {env: map[string]string{"TOOLS": "{}", "ADMIN_TOKEN": "secret"}, check: func(t *testing.T, s Settings) {
			require.Len(t, s.MCPSessionKey, 32)
			require.NotContains(t, string(s.MCPSessionKey), "secret")
		}},
		"explicit mcp key": {env: map[string]string{"TOOLS": "{}", "MCP_SESSION_KEY": "k"}, check: func(t *testing.T, s Settings) {
			require.Equal(t, []byte("k"), s.MCPSessionKey)
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := SettingsFrom(func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			tc.check(t, s)
		})
	}
}

// setup serves the native app on a real SQLite file with the demo upstream
// and the demo caller, exactly as `make run` does.
func setup(t *testing.T) (*httptest.Server, store.Store) {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "toolgate.db"))
	require.NoError(t, err)
	require.NoError(t, sqlstore.Migrate(context.Background(), db))
	st := sqlstore.New(db)
	require.NoError(t, seedDemo(context.Background(), st))
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	tools := strings.ReplaceAll(readFile(t, "../testdata/tools.demo.json"), "http://127.0.0.1:8787", srv.URL)
	s, err := SettingsFrom(func(k string) string { return map[string]string{"TOOLS": tools}[k] })
	require.NoError(t, err)
	s.Demo = true
	h, err = newApp(st, &engine.HTTPUpstream{}, s, nil)
	require.NoError(t, err)
	return srv, st
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func call(t *testing.T, base, tool, key, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/v1/tools/"+tool+"/call", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+demoCallerKey)
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, string(b)
}

func TestLongestLease(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		tools string
		want  time.Duration
	}{
		"the default lease":   {`{"tools":[` + leaseTool("a", "") + `]}`, catalog.DefaultToolLease},
		"the longest of many": {`{"tools":[` + leaseTool("a", "2s") + `,` + leaseTool("b", "45s") + `,` + leaseTool("c", "") + `]}`, 45 * time.Second},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cat, err := catalog.ParseCatalog([]byte(tc.tools))
			require.NoError(t, err)
			require.Equal(t, tc.want, longestLease(cat))
		})
	}
}

func leaseTool(name, lease string) string {
	s := `{"name":"` + name + `","description":"d","price":"0.01","currency":"USD","upstream":{"url":"http://127.0.0.1:1/x"},"ttl":"1h"`
	if lease != "" {
		s += `,"lease":"` + lease + `"`
	}
	return s + `}`
}

// TestDemoNative walks the README's demo natively: a paid call, a replay,
// a mismatch and a refunded failure, with the ledger checked at each step.
func TestDemoNative(t *testing.T) {
	t.Parallel()
	srv, st := setup(t)
	ctx := context.Background()
	balance := func() int64 {
		b, err := st.Balance(ctx, demoCallerID, "USD")
		require.NoError(t, err)
		return b
	}
	require.Equal(t, int64(1000), balance())

	res, first := call(t, srv.URL, "echo", "demo-1", `{"text":"hi"}`)
	require.Equal(t, http.StatusOK, res.StatusCode, first)
	var env struct {
		Output  json.RawMessage `json:"output"`
		Receipt struct{ Amount, BalanceAfter string }
	}
	require.NoError(t, json.Unmarshal([]byte(first), &env))
	require.JSONEq(t, `{"echo":{"text":"hi"}}`, string(env.Output))
	require.Equal(t, "0.05", env.Receipt.Amount)
	require.Equal(t, "9.95", env.Receipt.BalanceAfter)
	require.Equal(t, int64(995), balance())

	res, again := call(t, srv.URL, "echo", "demo-1", `{ "text" : "hi" }`)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "true", res.Header.Get("Idempotent-Replayed"))
	require.Equal(t, first, again)
	require.Equal(t, int64(995), balance())

	res, body := call(t, srv.URL, "echo", "demo-1", `{"text":"other"}`)
	require.Equal(t, http.StatusUnprocessableEntity, res.StatusCode, body)
	require.Equal(t, "application/problem+json", res.Header.Get("Content-Type"))
	require.Equal(t, int64(995), balance())

	res, body = call(t, srv.URL, "flaky", "demo-2", `{}`)
	require.Equal(t, http.StatusBadGateway, res.StatusCode, body)
	require.Contains(t, body, "refunded")
	require.Equal(t, int64(995), balance())
	require.NoError(t, st.CheckInvariants(ctx))
}

func TestSweepBounded(t *testing.T) {
	t.Parallel()
	_, st := setup(t)
	ctx := context.Background()
	now := time.Now()
	for i := 0; i < 7; i++ {
		_, err := st.Claim(ctx, store.ClaimParams{Key: "k" + string(rune('a'+i)), Owner: "o", Fingerprint: "f", Now: now, Lease: time.Second, TTL: 2 * time.Second})
		require.NoError(t, err)
	}
	n, err := sweep(ctx, st, now.Add(time.Minute), 3, 2)
	require.NoError(t, err)
	require.Equal(t, 6, n, "two batches of three, then the bound stops it")
	n, err = sweep(ctx, st, now.Add(time.Minute), 3, 2)
	require.NoError(t, err)
	require.Equal(t, 1, n)
}
