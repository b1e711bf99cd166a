//go:build !js

package handler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler"
	"github.com/toolgate/toolgate-go/handler/engine"
	tgmcp "github.com/toolgate/toolgate-go/handler/mcp"
	"github.com/toolgate/toolgate-go/handler/mcp/mcptest"
)

// mcpEnv is env with the MCP endpoint at /mcp beside the REST API. The two
// surfaces run on separate engines over one store, as two instances would.
type mcpEnv struct {
	*env
	url   string
	clock *atomic.Int64 // offset added to time.Now for session expiry
	cfg   handler.Config
	opts  tgmcp.Options
}

// instance starts another MCP endpoint over the same store, as another
// Workers isolate would be, with opts changed by edit.
func (m *mcpEnv) instance(edit func(*tgmcp.Options)) string {
	m.t.Helper()
	eng, err := engine.New(m.cfg.Engine())
	require.NoError(m.t, err)
	opts := m.opts
	if edit != nil {
		edit(&opts)
	}
	srv := httptest.NewServer(tgmcp.New(eng, opts))
	m.t.Cleanup(srv.Close)
	return srv.URL
}

func setupMCP(t *testing.T, opts ...func(*tgmcp.Options)) *mcpEnv {
	t.Helper()
	e := &env{t: t, up: newUpstream(t), logs: &syncBuffer{}}
	e.st, e.db = openStore(t)
	cfg := handler.Config{
		Store:      e.st,
		Catalog:    testCatalog(t, e.up.srv.URL),
		AdminToken: adminToken,
		Upstream:   &engine.HTTPUpstream{},
		Logger:     slog.New(slog.NewJSONHandler(e.logs, nil)),
	}
	rest, err := handler.New(cfg)
	require.NoError(t, err)
	eng, err := engine.New(cfg.Engine())
	require.NoError(t, err)
	clock := &atomic.Int64{}
	mo := tgmcp.Options{
		SessionKey: []byte("mcp-test-session-key-0123456789abcdef"),
		NowFunc:    func() time.Time { return time.Now().Add(time.Duration(clock.Load())) },
	}
	for _, o := range opts {
		o(&mo)
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", tgmcp.New(eng, mo))
	mux.Handle("/", rest)
	e.gw = httptest.NewServer(mux)
	t.Cleanup(func() {
		e.up.unblock()
		e.gw.Close()
	})
	return &mcpEnv{env: e, url: e.gw.URL + "/mcp", clock: clock, cfg: cfg, opts: mo}
}

// post sends one JSON-RPC body to /mcp with the caller's key and the
// headers a client sends after initialize; header overrides them, and an
// empty value removes one.
func (m *mcpEnv) post(callerKey string, header map[string]string, body string) response {
	m.t.Helper()
	h := map[string]string{
		"Content-Type":         "application/json",
		"Accept":               "application/json, text/event-stream",
		"MCP-Protocol-Version": tgmcp.ProtocolVersion,
	}
	for k, v := range header {
		h[k] = v
	}
	for k, v := range h {
		if v == "" {
			delete(h, k)
		}
	}
	return m.do(http.MethodPost, "/mcp", callerKey, h, body)
}

// initialize starts a session for the caller and returns its id.
func (m *mcpEnv) initialize(callerKey string) string {
	m.t.Helper()
	r := m.post(callerKey, nil, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18",
	 "capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	require.Equal(m.t, http.StatusOK, r.status, string(r.body))
	sid := r.header.Get("Mcp-Session-Id")
	require.NotEmpty(m.t, sid)
	return sid
}

// callBody is a tools/call message; key goes to params._meta unless empty.
func callBody(tool, args, key string) string {
	meta := ""
	if key != "" {
		meta = fmt.Sprintf(`,"_meta":{%q:%q}`, tgmcp.MetaIdempotencyKey, key)
	}
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":%q,"arguments":%s%s}}`, tool, args, meta)
}

// callTool posts tools/call in session sid and returns the result object.
func (m *mcpEnv) callTool(callerKey, sid, tool, args, key string) map[string]any {
	m.t.Helper()
	return rpcResult(m.t, m.post(callerKey, map[string]string{"Mcp-Session-Id": sid}, callBody(tool, args, key)))
}

// rpcResult asserts a 200 JSON-RPC success answering id 7 (or any id) and
// returns its result.
func rpcResult(t testing.TB, r response) map[string]any {
	t.Helper()
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	m := r.json(t)
	require.Equal(t, "2.0", m["jsonrpc"])
	require.Nil(t, m["error"], string(r.body))
	res, ok := m["result"].(map[string]any)
	require.True(t, ok, string(r.body))
	return res
}

// rpcError asserts a JSON-RPC error with the HTTP status and code, and
// returns the error object.
func rpcError(t testing.TB, r response, status, code int) map[string]any {
	t.Helper()
	require.Equal(t, status, r.status, string(r.body))
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	m := r.json(t)
	require.Equal(t, "2.0", m["jsonrpc"])
	require.Nil(t, m["result"])
	e, ok := m["error"].(map[string]any)
	require.True(t, ok, string(r.body))
	require.EqualValues(t, code, e["code"], string(r.body))
	require.NotEmpty(t, e["message"])
	return e
}

func meta(res map[string]any) map[string]any {
	m, _ := res["_meta"].(map[string]any)
	return m
}

func structured(res map[string]any) map[string]any {
	m, _ := res["structuredContent"].(map[string]any)
	return m
}

func resultText(res map[string]any) string {
	var parts []string
	content, _ := res["content"].([]any)
	for _, c := range content {
		if c, ok := c.(map[string]any); ok && c["type"] == "text" {
			parts = append(parts, c["text"].(string))
		}
	}
	return strings.Join(parts, "\n")
}

// mcpState is what a rejected request must not change.
type mcpState struct {
	balance  int64
	kinds    []string
	upstream int64
}

func (m *mcpEnv) state(c caller) mcpState {
	m.t.Helper()
	return mcpState{balance: m.balance(c), kinds: m.kinds(c), upstream: m.up.calls.Load()}
}

func TestMCPClientSDK(t *testing.T) {
	t.Parallel()
	m := setupMCP(t)
	c := m.newCaller("agent", "1.00")

	res := mcptest.Exercise(t, mcptest.Params{URL: m.url, APIKey: c.key, Tool: "echo",
		Arguments: map[string]any{"q": "hello"}, HTTPClient: m.gw.Client()})

	require.Equal(t, "0.05", res.Price)
	require.Equal(t, "USD", res.Currency)
	require.Equal(t, map[string]any{"q": "hello"}, res.First.StructuredContent.(map[string]any)["input"])
	require.Equal(t, "0.95", res.Receipt["balanceAfter"])
	require.EqualValues(t, 1, m.up.count("/ok"), "one upstream call")
	require.EqualValues(t, 95, m.balance(c), "one charge")
	require.Equal(t, []string{"credit", "charge"}, m.kinds(c))
	m.checkInvariants()

	// Close sent DELETE: the session is over.
	r := m.post(c.key, map[string]string{"Mcp-Session-Id": res.SessionID}, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	rpcError(t, r, http.StatusNotFound, -32001)
}

func TestMCPConcurrentCallsOneKey(t *testing.T) {
	t.Parallel()
	m := setupMCP(t)
	c := m.newCaller("agent", "1.00")
	ctx := context.Background()
	// Two sessions: an explicit key does not depend on the session.
	var sessions [2]*mcp.ClientSession
	for i := range sessions {
		cs, err := mcptest.Connect(ctx, m.url, c.key, m.gw.Client())
		require.NoError(t, err)
		t.Cleanup(func() { _ = cs.Close() })
		sessions[i] = cs
	}

	const n = 20
	results := make([]*mcp.CallToolResult, n)
	errs := make([]error, n)
	parallel(n, func(i int) {
		results[i], errs[i] = sessions[i%2].CallTool(ctx, &mcp.CallToolParams{Name: "slow",
			Arguments: map[string]any{"q": "once"}, Meta: mcp.Meta{tgmcp.MetaIdempotencyKey: "k-concurrent"}})
	})

	executed := 0
	first, err := json.Marshal([]any{results[0].Content, results[0].StructuredContent, results[0].Meta[tgmcp.MetaReceipt]})
	require.NoError(t, errs[0])
	require.NoError(t, err)
	for i, res := range results {
		require.NoError(t, errs[i])
		require.False(t, res.IsError)
		if res.Meta[tgmcp.MetaReplayed] == false {
			executed++
		} else {
			require.Equal(t, true, res.Meta[tgmcp.MetaReplayed])
		}
		got, err := json.Marshal([]any{res.Content, res.StructuredContent, res.Meta[tgmcp.MetaReceipt]})
		require.NoError(t, err)
		require.JSONEq(t, string(first), string(got), "every answer is the first one")
	}
	require.Equal(t, 1, executed, "one execution, 19 replays marked in _meta")
	require.EqualValues(t, 1, m.up.count("/ok"), "one upstream call")
	require.EqualValues(t, 95, m.balance(c), "one charge")
	require.Equal(t, []string{"credit", "charge"}, m.kinds(c))
	m.checkInvariants()
}

func TestMCPSharesExecutionWithREST(t *testing.T) {
	t.Parallel()
	for name, keyInHeader := range map[string]bool{"mcp first, key in _meta": false, "mcp first, key in header": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := setupMCP(t)
			c := m.newCaller("agent", "1.00")
			sid := m.initialize(c.key)
			h := map[string]string{"Mcp-Session-Id": sid}
			body := callBody("echo", `{"q":"same","n":1}`, "shared-key")
			if keyInHeader {
				h["Idempotency-Key"] = "shared-key"
				body = callBody("echo", `{"q":"same","n":1}`, "")
			}
			res := rpcResult(t, m.post(c.key, h, body))
			require.Nil(t, res["isError"])
			require.Equal(t, false, meta(res)[tgmcp.MetaReplayed])
			require.Equal(t, "shared-key", meta(res)[tgmcp.MetaIdempotencyKey])

			// The same caller, tool, key and input over REST is the same paid action.
			r := m.call(c.key, "echo", "shared-key", `{"n": 1, "q": "same"}`)
			require.Equal(t, http.StatusOK, r.status, string(r.body))
			require.Equal(t, "true", r.header.Get("Idempotent-Replayed"))
			rest := r.json(t)
			require.Equal(t, meta(res)[tgmcp.MetaReceipt], rest["receipt"])
			require.Equal(t, structured(res), rest["output"])

			require.EqualValues(t, 1, m.up.count("/ok"))
			require.EqualValues(t, 95, m.balance(c))
			require.Equal(t, []string{"credit", "charge"}, m.kinds(c))
			m.checkInvariants()
		})
	}
	t.Run("rest first", func(t *testing.T) {
		t.Parallel()
		m := setupMCP(t)
		c := m.newCaller("agent", "1.00")
		r := m.call(c.key, "echo", "shared-key", `{"q":"same"}`)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		rest := r.json(t)

		res := m.callTool(c.key, m.initialize(c.key), "echo", `{"q":"same"}`, "shared-key")
		require.Equal(t, true, meta(res)[tgmcp.MetaReplayed])
		require.Equal(t, rest["receipt"], meta(res)[tgmcp.MetaReceipt])
		require.Equal(t, rest["output"], structured(res))

		require.EqualValues(t, 1, m.up.count("/ok"))
		require.EqualValues(t, 95, m.balance(c))
		m.checkInvariants()
	})
}

func TestMCPDerivedKey(t *testing.T) {
	t.Parallel()
	m := setupMCP(t)
	c := m.newCaller("agent", "1.00")
	sid := m.initialize(c.key)

	first := m.callTool(c.key, sid, "echo", `{"a":1,"b":2}`, "")
	require.Equal(t, false, meta(first)[tgmcp.MetaReplayed])
	require.Equal(t, tgmcp.DeriveKey(sid, "echo", []byte(`{"a":1,"b":2}`)), meta(first)[tgmcp.MetaIdempotencyKey])

	// Same session, same arguments (in any order): the same paid action.
	again := m.callTool(c.key, sid, "echo", `{ "b": 2, "a": 1 }`, "")
	require.Equal(t, true, meta(again)[tgmcp.MetaReplayed])
	require.Equal(t, meta(first)[tgmcp.MetaReceipt], meta(again)[tgmcp.MetaReceipt])

	// Other arguments, or a new session: a new action.
	other := m.callTool(c.key, sid, "echo", `{"a":2}`, "")
	require.Equal(t, false, meta(other)[tgmcp.MetaReplayed])
	fresh := m.callTool(c.key, m.initialize(c.key), "echo", `{"a":1,"b":2}`, "")
	require.Equal(t, false, meta(fresh)[tgmcp.MetaReplayed])

	// _meta wins over the header.
	res := rpcResult(t, m.post(c.key, map[string]string{"Mcp-Session-Id": sid, "Idempotency-Key": "from-header"},
		callBody("echo", `{"a":3}`, "from-meta")))
	require.Equal(t, "from-meta", meta(res)[tgmcp.MetaIdempotencyKey])
	_, err := m.record(c, "echo", "from-meta")
	require.NoError(t, err)

	require.EqualValues(t, 4, m.up.count("/ok"))
	require.EqualValues(t, 80, m.balance(c))
	m.checkInvariants()
}

func TestMCPToolErrors(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		credit string
		prior  func(m *mcpEnv, c caller, sid string) // runs before the state snapshot
		tool   string
		args   string
		check  func(t *testing.T, res map[string]any)
		// change is how the call moves the state from the snapshot.
		balanceDelta  int64
		addKinds      []string
		upstreamDelta int64
	}{
		"payment required": {
			credit: "0.01", tool: "echo", args: `{"q":1}`,
			check: func(t *testing.T, res map[string]any) {
				sc := structured(res)
				require.Equal(t, "payment_required", sc["error"])
				require.Equal(t, "0.05", sc["price"])
				require.Equal(t, "0.01", sc["balance"])
				require.Equal(t, "USD", sc["currency"])
				require.EqualValues(t, http.StatusPaymentRequired, sc["status"])
				require.Contains(t, resultText(res), "nothing was charged")
			},
		},
		"upstream failure is refunded": {
			credit: "1.00", tool: "fail", args: `{"q":1}`,
			check: func(t *testing.T, res map[string]any) {
				sc := structured(res)
				require.Equal(t, "upstream_failed", sc["error"])
				require.Equal(t, true, sc["refunded"])
				require.Equal(t, true, sc["retryable"])
				require.Equal(t, "1.00", sc["balance"])
				require.Contains(t, resultText(res), "refunded")
			},
			addKinds: []string{"charge", "refund"}, upstreamDelta: 1,
		},
		"upstream rejection is refunded and final": {
			credit: "1.00", tool: "bad", args: `{"q":1}`,
			check: func(t *testing.T, res map[string]any) {
				sc := structured(res)
				require.Equal(t, "upstream_rejected", sc["error"])
				require.Equal(t, map[string]any{"error": "bad input"}, sc["output"])
				require.Contains(t, resultText(res), "bad input")
				receipt := meta(res)[tgmcp.MetaReceipt].(map[string]any)
				require.Equal(t, true, receipt["refunded"])
				require.Equal(t, "0.00", receipt["amount"])
			},
			addKinds: []string{"charge", "refund"}, upstreamDelta: 1,
		},
		"key reused with other arguments": {
			credit: "1.00", tool: "echo", args: `{"q":2}`,
			prior: func(m *mcpEnv, c caller, sid string) {
				res := m.callTool(c.key, sid, "echo", `{"q":1}`, "k1")
				require.Nil(m.t, res["isError"])
			},
			check: func(t *testing.T, res map[string]any) {
				require.Equal(t, "idempotency_key_mismatch", structured(res)["error"])
				require.EqualValues(t, http.StatusUnprocessableEntity, structured(res)["status"])
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := setupMCP(t)
			c := m.newCaller("agent", tc.credit)
			sid := m.initialize(c.key)
			if tc.prior != nil {
				tc.prior(m, c, sid)
			}
			before := m.state(c)

			res := m.callTool(c.key, sid, tc.tool, tc.args, "k1")
			require.Equal(t, true, res["isError"])
			require.Equal(t, "k1", meta(res)[tgmcp.MetaIdempotencyKey])
			tc.check(t, res)

			after := m.state(c)
			require.Equal(t, before.balance+tc.balanceDelta, after.balance)
			require.Equal(t, append(before.kinds, tc.addKinds...), after.kinds)
			require.Equal(t, before.upstream+tc.upstreamDelta, after.upstream)
			m.checkInvariants()
		})
	}
}

func TestMCPRejectsBadRequests(t *testing.T) {
	t.Parallel()
	call := callBody("echo", `{"q":1}`, "k1")
	tests := map[string]struct {
		do     func(m *mcpEnv, c caller, sid string) response
		status int
		code   int
		check  func(t *testing.T, r response)
	}{
		"unknown tool": {status: http.StatusOK, code: -32602, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post(c.key, map[string]string{"Mcp-Session-Id": sid}, callBody("nope", `{}`, "k1"))
		}},
		"missing tool name": {status: http.StatusOK, code: -32602, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post(c.key, map[string]string{"Mcp-Session-Id": sid}, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`)
		}},
		"arguments not an object": {status: http.StatusOK, code: -32602, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post(c.key, map[string]string{"Mcp-Session-Id": sid}, callBody("echo", `[1]`, "k1"))
		}},
		"invalid idempotency key": {status: http.StatusOK, code: -32602, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post(c.key, map[string]string{"Mcp-Session-Id": sid}, callBody("echo", `{}`, strings.Repeat("k", 256)))
		}},
		"two idempotency key headers": {status: http.StatusOK, code: -32602, do: func(m *mcpEnv, c caller, sid string) response {
			req, err := http.NewRequest(http.MethodPost, m.url, strings.NewReader(callBody("echo", `{}`, "")))
			require.NoError(m.t, err)
			req.Header.Set("Authorization", "Bearer "+c.key)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Mcp-Session-Id", sid)
			req.Header.Add("Idempotency-Key", "a")
			req.Header.Add("Idempotency-Key", "b")
			return send(m, req)
		}},
		"unknown method": {status: http.StatusOK, code: -32601, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post(c.key, map[string]string{"Mcp-Session-Id": sid}, `{"jsonrpc":"2.0","id":1,"method":"resources/list"}`)
		}},
		"malformed JSON": {status: http.StatusBadRequest, code: -32700, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post(c.key, map[string]string{"Mcp-Session-Id": sid}, call[:40])
		}},
		"batch": {status: http.StatusBadRequest, code: -32600, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post(c.key, map[string]string{"Mcp-Session-Id": sid}, "["+call+"]")
		}},
		"not JSON-RPC 2.0": {status: http.StatusBadRequest, code: -32600, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post(c.key, map[string]string{"Mcp-Session-Id": sid}, strings.Replace(call, `"2.0"`, `"1.0"`, 1))
		}},
		"null id": {status: http.StatusBadRequest, code: -32600, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post(c.key, map[string]string{"Mcp-Session-Id": sid}, strings.Replace(call, `"id":7`, `"id":null`, 1))
		}},
		"missing session": {status: http.StatusBadRequest, code: -32000, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post(c.key, nil, call)
		}},
		"unknown session": {status: http.StatusNotFound, code: -32001, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post(c.key, map[string]string{"Mcp-Session-Id": "tgs1.nope"}, call)
		}},
		"forged session": {status: http.StatusNotFound, code: -32001, do: func(m *mcpEnv, c caller, sid string) response {
			// Another nonce under the same MAC.
			i := len("tgs1.") + 20
			forged := sid[:i] + map[bool]string{true: "x", false: "y"}[sid[i] != 'x'] + sid[i+1:]
			return m.post(c.key, map[string]string{"Mcp-Session-Id": forged}, call)
		}},
		"another caller's session": {status: http.StatusNotFound, code: -32001, do: func(m *mcpEnv, c caller, sid string) response {
			other := m.newCaller("other", "1.00")
			return m.post(other.key, map[string]string{"Mcp-Session-Id": sid}, call)
		}},
		"ended session": {status: http.StatusNotFound, code: -32001, do: func(m *mcpEnv, c caller, sid string) response {
			r := m.do(http.MethodDelete, "/mcp", c.key, map[string]string{"Mcp-Session-Id": sid}, "")
			require.Equal(m.t, http.StatusNoContent, r.status, string(r.body))
			return m.post(c.key, map[string]string{"Mcp-Session-Id": sid}, call)
		}},
		"expired session": {status: http.StatusNotFound, code: -32001, do: func(m *mcpEnv, c caller, sid string) response {
			m.clock.Add(int64(tgmcp.DefaultSessionTTL + time.Second))
			return m.post(c.key, map[string]string{"Mcp-Session-Id": sid}, call)
		}},
		"bad protocol version": {status: http.StatusBadRequest, code: -32000,
			do: func(m *mcpEnv, c caller, sid string) response {
				return m.post(c.key, map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "1999-01-01"}, call)
			},
			check: func(t *testing.T, r response) {
				data := r.json(t)["error"].(map[string]any)["data"].(map[string]any)
				require.Equal(t, []any{"2025-06-18", "2025-03-26"}, data["supported"])
			}},
		"bad origin": {status: http.StatusForbidden, code: -32000, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post(c.key, map[string]string{"Mcp-Session-Id": sid, "Origin": "https://evil.example"}, call)
		}},
		"wrong credential": {status: http.StatusUnauthorized, code: -32000,
			do: func(m *mcpEnv, c caller, sid string) response {
				return m.post("tg_wrong", map[string]string{"Mcp-Session-Id": sid}, call)
			},
			check: func(t *testing.T, r response) {
				require.Equal(t, `Bearer realm="toolgate"`, r.header.Get("WWW-Authenticate"))
			}},
		"no credential": {status: http.StatusUnauthorized, code: -32000, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post("", map[string]string{"Mcp-Session-Id": sid}, call)
		}},
		"wrong content type": {status: http.StatusUnsupportedMediaType, code: -32000, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post(c.key, map[string]string{"Mcp-Session-Id": sid, "Content-Type": "text/plain"}, call)
		}},
		"not acceptable": {status: http.StatusNotAcceptable, code: -32000, do: func(m *mcpEnv, c caller, sid string) response {
			return m.post(c.key, map[string]string{"Mcp-Session-Id": sid, "Accept": "text/html"}, call)
		}},
		"GET offers no stream": {status: http.StatusMethodNotAllowed, code: -32000,
			do: func(m *mcpEnv, c caller, sid string) response {
				return m.do(http.MethodGet, "/mcp", c.key, map[string]string{"Mcp-Session-Id": sid, "Accept": "text/event-stream"}, "")
			},
			check: func(t *testing.T, r response) { require.Equal(t, "POST, DELETE", r.header.Get("Allow")) }},
		"DELETE without session": {status: http.StatusBadRequest, code: -32000, do: func(m *mcpEnv, c caller, sid string) response {
			return m.do(http.MethodDelete, "/mcp", c.key, nil, "")
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := setupMCP(t)
			c := m.newCaller("agent", "1.00")
			sid := m.initialize(c.key)
			before := m.state(c)

			r := tc.do(m, c, sid)
			rpcError(t, r, tc.status, tc.code)
			if tc.check != nil {
				tc.check(t, r)
			}

			require.Equal(t, before, m.state(c), "nothing changed")
			m.checkInvariants()
		})
	}
}

func send(m *mcpEnv, req *http.Request) response {
	m.t.Helper()
	res, err := m.gw.Client().Do(req)
	require.NoError(m.t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(m.t, err)
	return response{status: res.StatusCode, header: res.Header, body: body}
}

func TestMCPHandshake(t *testing.T) {
	t.Parallel()
	m := setupMCP(t, func(o *tgmcp.Options) {
		o.AllowedOrigins = []string{"https://app.example"}
		o.ServerVersion = "1.2.3"
	})
	c := m.newCaller("agent", "1.00")

	for _, requested := range []string{"2025-06-18", "2099-01-01"} {
		r := m.post(c.key, map[string]string{"MCP-Protocol-Version": ""}, fmt.Sprintf(
			`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":%q,"capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`,
			requested))
		res := rpcResult(t, r)
		require.Equal(t, "init", r.json(t)["id"])
		require.Equal(t, "2025-06-18", res["protocolVersion"])
		require.Equal(t, map[string]any{"tools": map[string]any{"listChanged": false}}, res["capabilities"])
		require.Equal(t, map[string]any{"name": "toolgate", "version": "1.2.3"}, res["serverInfo"])
		require.True(t, strings.HasPrefix(r.header.Get("Mcp-Session-Id"), "tgs1."))
	}
	sid := m.initialize(c.key)
	withSession := map[string]string{"Mcp-Session-Id": sid}

	r := m.post(c.key, withSession, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	require.Equal(t, http.StatusAccepted, r.status)
	require.Empty(t, r.body)
	r = m.post(c.key, withSession, `{"jsonrpc":"2.0","id":5,"result":{}}`)
	require.Equal(t, http.StatusAccepted, r.status, "a client's response is accepted and ignored")

	require.Empty(t, rpcResult(t, m.post(c.key, withSession, `{"jsonrpc":"2.0","id":1,"method":"ping"}`)))
	require.Empty(t, rpcResult(t, m.post(c.key, nil, `{"jsonrpc":"2.0","id":1,"method":"ping"}`)),
		"ping needs no session")

	list := rpcResult(t, m.post(c.key, map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-03-26",
		"Origin": "https://app.example"}, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`))
	tools := map[string]map[string]any{}
	for _, tool := range list["tools"].([]any) {
		tool := tool.(map[string]any)
		tools[tool["name"].(string)] = tool
	}
	require.Len(t, tools, len(testCatalog(t, "http://x").Tools()))
	echo := tools["echo"]
	require.Contains(t, echo["description"], "0.05 USD per call")
	require.Equal(t, map[string]any{"type": "object"}, echo["inputSchema"])
	require.Equal(t, map[string]any{tgmcp.MetaPrice: "0.05", tgmcp.MetaCurrency: "USD"}, echo["_meta"])
	require.Contains(t, tools["free"]["description"], "Price: free.")

	// A text upstream answer is text content, without structured content.
	res := m.callTool(c.key, sid, "text", `{}`, "t1")
	require.Equal(t, "plain <text> & more", resultText(res))
	require.Nil(t, res["structuredContent"])
	require.Equal(t, []string{"credit", "charge"}, m.kinds(c))
	m.checkInvariants()
}

func TestMCPSessionAcrossInstances(t *testing.T) {
	t.Parallel()
	m := setupMCP(t)
	c := m.newCaller("agent", "1.00")
	sid := m.initialize(c.key)
	list := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	postTo := func(base string) response {
		req, err := http.NewRequest(http.MethodPost, base, strings.NewReader(list))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+c.key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Mcp-Session-Id", sid)
		return send(m, req)
	}

	// Any instance holding the key validates the session: no shared memory.
	shared := m.instance(nil)
	rpcResult(t, postTo(shared))
	other := m.instance(func(o *tgmcp.Options) { o.SessionKey = []byte("another-key-0123456789abcdef012345") })
	rpcError(t, postTo(other), http.StatusNotFound, -32001)

	// The documented limitation: DELETE ends the session on the instance
	// that received it only; the others accept it until it expires.
	r := m.do(http.MethodDelete, "/mcp", c.key, map[string]string{"Mcp-Session-Id": sid}, "")
	require.Equal(t, http.StatusNoContent, r.status)
	rpcError(t, m.post(c.key, map[string]string{"Mcp-Session-Id": sid}, list), http.StatusNotFound, -32001)
	rpcResult(t, postTo(shared))
}
