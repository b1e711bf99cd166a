//go:build !js

package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/store/sqlite"
	"github.com/toolgate/toolgate-go/store/sqlstore"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// TestE2EAbuse sends hostile input to every route of the compiled worker in
// workerd while another caller's paid call is in flight on the same isolate:
// deep JSON (REST, MCP arguments, MCP id, admin bodies, an upstream answer),
// lone surrogates, joined Idempotency-Key headers, huge and wide bodies, and
// the handler's fuzz corpus. Every answer must be a precise problem (or
// JSON-RPC error), never a 500, and the in-flight call must complete: before
// the depth limit, one 10,000-deep array killed the isolate's Go runtime and
// every call on it.
func TestE2EAbuse(t *testing.T) {
	t.Parallel()
	runAbuse(t, func(t *testing.T, tools string) abuseTarget {
		edge := edgetest.Start(t, edgetest.Options{
			Mode:          edgetest.ModePersistent,
			MigrationsDir: "store/sqlstore/migrations",
			Vars:          map[string]string{"TOOLS": tools, "ADMIN_TOKEN": e2eAdminToken},
		})
		mark := edge.LogMark()
		return abuseTarget{base: edge.URL("w0"), db: edge.OpenD1(t), logs: func() string { return edge.LogsSince(mark) }}
	})
}

// TestNativeAbuse runs the same battery against the native twin (the same
// handler on net/http over a SQLite file): the limits and every 4xx rule
// hold there too.
func TestNativeAbuse(t *testing.T) {
	t.Parallel()
	runAbuse(t, func(t *testing.T, tools string) abuseTarget {
		db, err := sqlite.Open(filepath.Join(t.TempDir(), "toolgate.db"))
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.DB().Close() })
		require.NoError(t, sqlstore.Migrate(context.Background(), db))
		s, err := SettingsFrom(func(k string) string {
			return map[string]string{"TOOLS": tools, "ADMIN_TOKEN": e2eAdminToken}[k]
		})
		require.NoError(t, err)
		h, err := newApp(sqlstore.New(db), &engine.HTTPUpstream{}, s, nil)
		require.NoError(t, err)
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return abuseTarget{base: srv.URL, db: db.DB(), logs: func() string { return "" }}
	})
}

// abuseTarget is a running gateway: its URL, its database (for the ledger
// checks) and its log since it started.
type abuseTarget struct {
	base string
	db   *sql.DB
	logs func() string
}

func runAbuse(t *testing.T, start func(t *testing.T, tools string) abuseTarget) {
	deep400 := strings.Repeat(`{"e":`, 9000) + "1" + strings.Repeat("}", 9000)
	var slowCalls sync.WaitGroup
	slowCalls.Add(1)
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/slow":
			slowCalls.Done()
			<-release
		case "/deep":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, deep400)
			return
		}
		fmt.Fprintf(w, `{"input":%s}`, body)
	}))
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(up.Close)
	t.Cleanup(unblock) // runs first: a failed test must not leave /slow holding up.Close
	tools := fmt.Sprintf(`{"tools":[
		{"name":"echo","description":"e","price":"0.05","currency":"USD","upstream":{"url":"%[1]s/echo"}},
		{"name":"slow","description":"s","price":"0.05","currency":"USD","timeout":"20s","upstream":{"url":"%[1]s/slow"}},
		{"name":"deep","description":"d","price":"0.05","currency":"USD","upstream":{"url":"%[1]s/deep"}},
		{"name":"strict","description":"recursive schema","price":"0.05","currency":"USD","upstream":{"url":"%[1]s/echo"},
		 "inputSchema":{"type":"object","properties":{"c":{"$ref":"#"}},"additionalProperties":false}},
		{"name":"branchy","description":"exponential schema","price":"0.05","currency":"USD","upstream":{"url":"%[1]s/echo"},
		 "inputSchema":{"type":"object","properties":{"v":{"$ref":"#/$defs/x"}},
		  "$defs":{"x":{"anyOf":[{"$ref":"#/$defs/x","type":"string"},{"$ref":"#/$defs/x"}]}}}}]}`, up.URL)
	target := start(t, tools)
	w0, db := target.base, target.db
	alice := newCaller(t, w0, "alice", "1.00")
	mallory := newCaller(t, w0, "mallory", "") // a registered caller with no money
	admin := client{t: t, base: w0, key: e2eAdminToken}

	inflight := make(chan int, 1)
	go func() {
		res, _, err := client{base: w0, key: alice.key}.try(http.MethodPost, "/v1/tools/slow/call", []byte(`{}`),
			map[string]string{"Idempotency-Key": "inflight"})
		if err != nil {
			inflight <- 0
			return
		}
		inflight <- res.StatusCode
	}()
	slowCalls.Wait()

	deepArr := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	deepObj := strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000)
	problem := func(t *testing.T, name string, res *http.Response, body []byte, status int, slug string) {
		t.Helper()
		require.Equal(t, status, res.StatusCode, "%s: %s", name, body)
		require.Equal(t, "application/problem+json", res.Header.Get("Content-Type"), name)
		var p struct{ Type string }
		require.NoError(t, json.Unmarshal(body, &p), name)
		require.Equal(t, "https://toolgate.dev/problems/"+slug, p.Type, name)
	}
	callHdr := func(key string) map[string]string { return map[string]string{"Idempotency-Key": key} }

	t.Run("REST", func(t *testing.T) {
		for name, tc := range map[string]struct {
			body, slug string
			status     int
		}{
			"deep arrays":    {deepArr, "invalid-json", 400},
			"deep objects":   {deepObj, "invalid-json", 400},
			"lone surrogate": {`{"t":"\udc00"}`, "invalid-json", 400},
			"huge":           {`{"t":"` + strings.Repeat("x", 2<<20) + `"}`, "body-too-large", 413},
			"wide":           {"[" + strings.Repeat("0,", 200000) + "0]", "insufficient-funds", 402},
		} {
			res, body := mallory.do(http.MethodPost, "/v1/tools/echo/call", []byte(tc.body), callHdr("m-"+name))
			problem(t, name, res, body, tc.status, tc.slug)
		}
	})

	// The inputSchema is checked before the claim (so before the balance):
	// as deep as the body may nest along a recursive schema, as wide as the
	// body may be, and against a schema whose work doubles per $ref, the
	// check is bounded and the isolate lives on.
	t.Run("inputSchema", func(t *testing.T) {
		deepValid := strings.Repeat(`{"c":`, 127) + "{}" + strings.Repeat("}", 127)
		deepInvalid := strings.Repeat(`{"c":`, 127) + `{"x":1}` + strings.Repeat("}", 127)
		var wide strings.Builder
		wide.WriteString(`{"c":{}`)
		for i := range 60000 {
			fmt.Fprintf(&wide, `,"k%d":1`, i)
		}
		wide.WriteString("}")
		for name, tc := range map[string]struct {
			tool, body, slug string
			status           int
			violations       int
		}{
			"deep valid":   {"strict", deepValid, "insufficient-funds", 402, 0},
			"deep invalid": {"strict", deepInvalid, "invalid-input", 400, 1},
			"wide invalid": {"strict", wide.String(), "invalid-input", 400, 20},
			"exponential":  {"branchy", `{"v":1}`, "invalid-input", 400, 1},
		} {
			res, body := mallory.do(http.MethodPost, "/v1/tools/"+tc.tool+"/call", []byte(tc.body), callHdr("s-"+name))
			problem(t, name, res, body, tc.status, tc.slug)
			var p struct {
				Violations []struct{ Path, Keyword string }
			}
			require.NoError(t, json.Unmarshal(body, &p), name)
			require.Len(t, p.Violations, tc.violations, "%s: %s", name, body)
		}
	})

	t.Run("the 4xx table", func(t *testing.T) {
		res, body := alice.call("echo", "r-1", `{"q":1}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		res, body = alice.call("echo", "r-1", `{"q":2}`)
		problem(t, "422", res, body, 422, "idempotency-key-mismatch")
		res, body = alice.do(http.MethodPost, "/v1/tools/echo/call", []byte(`{}`), nil)
		problem(t, "missing key", res, body, 400, "invalid-idempotency-key")
		res, body = client{t: t, base: w0, key: "tg_wrong"}.call("echo", "r-2", `{}`)
		problem(t, "401", res, body, 401, "unauthorized")
		res, body = alice.call("nope", "r-3", `{}`)
		problem(t, "404", res, body, 404, "unknown-tool")
		res, body = alice.do(http.MethodGet, "/v1/tools/echo/call", nil, nil)
		problem(t, "405", res, body, 405, "method-not-allowed")
	})

	t.Run("two Idempotency-Key headers are joined by workerd and refused", func(t *testing.T) {
		for _, keys := range [][]string{{"a", "b"}, {"x", "x"}} {
			req, err := http.NewRequest(http.MethodPost, w0+"/v1/tools/echo/call", strings.NewReader(`{}`))
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+alice.key)
			req.Header["Idempotency-Key"] = keys
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			problem(t, "joined keys", res, body, 400, "invalid-idempotency-key")
		}
		res, body := alice.call("echo", `"quoted,key"`, `{}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	})

	t.Run("admin", func(t *testing.T) {
		for _, path := range []string{"/v1/admin/callers", "/v1/admin/credits"} {
			res, body := admin.do(http.MethodPost, path, []byte(deepObj), nil)
			problem(t, path, res, body, 400, "invalid-request")
		}
	})

	t.Run("paths", func(t *testing.T) {
		res, body := alice.do(http.MethodGet, "/v1/calls/"+strings.Repeat("%2F", 300), nil, nil)
		require.Less(t, res.StatusCode, 500, string(body))
		res, body = alice.do(http.MethodGet, "/v1//balance", nil, nil)
		problem(t, "double slash", res, body, 404, "not-found")
	})

	t.Run("MCP", func(t *testing.T) {
		mcp := func(sid, body string) (*http.Response, []byte) {
			hdr := map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
				"MCP-Protocol-Version": "2025-06-18"}
			if sid != "" {
				hdr["Mcp-Session-Id"] = sid
			}
			return alice.do(http.MethodPost, "/mcp", []byte(body), hdr)
		}
		res, body := mcp("", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"abuse","version":"1"}}}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		sid := res.Header.Get("Mcp-Session-Id")
		for name, msg := range map[string]string{
			"arguments": `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":` + deepObj[:len(deepObj)-1] + `}}`,
			"id":        `{"jsonrpc":"2.0","id":` + deepArr[:18000] + `,"method":"ping"}`,
		} {
			res, body := mcp(sid, msg)
			require.Less(t, res.StatusCode, 500, "%s: %s", name, body)
			require.Contains(t, string(body), `"error"`, name)
		}
		// An upstream 400 with a 9,000-deep body: refunded, never stored, so
		// no replay ever parses it.
		call := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"deep","arguments":{},"_meta":{"io.toolgate/idempotency-key":"deep-1"}}}`
		for i := 0; i < 3; i++ {
			res, body := mcp(sid, call)
			require.Equal(t, http.StatusOK, res.StatusCode, string(body))
			require.Contains(t, string(body), `"isError":true`)
		}
		res, body = alice.call("deep", "deep-1", `{}`)
		problem(t, "deep upstream", res, body, 502, "upstream-failed")
	})

	t.Run("the handler's fuzz corpus", func(t *testing.T) {
		dir := filepath.Join(edgetest.RepoRoot(t), "handler", "testdata", "fuzz", "FuzzCallRequest")
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.NotEmpty(t, entries)
		for _, en := range entries {
			key, body := readCorpusEntry(t, filepath.Join(dir, en.Name()))
			req, err := http.NewRequest(http.MethodPost, w0+"/v1/tools/echo/call", bytes.NewReader(body))
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+mallory.key)
			req.Header["Idempotency-Key"] = []string{key} // as is, even when invalid
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				continue // a key net/http refuses to send
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			require.Contains(t, []int{400, 402}, res.StatusCode, "%s: %s", en.Name(), b)
		}
	})

	unblock()
	require.Equal(t, http.StatusOK, <-inflight, "the call in flight on the same isolate completes")
	logs := target.logs()
	require.NotContains(t, logs, "stopped")
	require.NotContains(t, logs, "Maximum call stack")
	// alice: slow, r-1 and "quoted,key" (0.05 each); deep refunded each time.
	require.Equal(t, int64(85), checkLedger(t, db, "alice"))
	require.Equal(t, int64(0), checkLedger(t, db, "mallory"))
}

// readCorpusEntry reads a `go test fuzz v1` file of (string, []byte).
func readCorpusEntry(t *testing.T, path string) (string, []byte) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var vals []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		line := sc.Text()
		open, close := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
		if open < 0 || close < open {
			continue
		}
		s, err := strconv.Unquote(line[open+1 : close])
		require.NoError(t, err, line)
		vals = append(vals, s)
	}
	require.Len(t, vals, 2, path)
	return vals[0], []byte(vals[1])
}
