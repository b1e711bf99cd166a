//go:build !js

package handler_test

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/safejson"
)

// TestIdempotencyKeyForms: the IETF draft's sf-string form ("k") and the
// bare form (k) name the same key, and keys that clients already send keep
// working, commas included when quoted.
func TestIdempotencyKeyForms(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")

	first := e.call(alice.key, "echo", `"order-1"`, `{}`)
	require.Equal(t, http.StatusOK, first.status, string(first.body))
	again := e.call(alice.key, "echo", "order-1", `{}`)
	require.Equal(t, http.StatusOK, again.status, string(again.body))
	require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
	require.Equal(t, first.body, again.body)

	escaped := e.call(alice.key, "echo", `"it's-\"quoted\""`, `{}`)
	require.Equal(t, http.StatusOK, escaped.status, string(escaped.body))
	bare := e.call(alice.key, "echo", `it's-"quoted"`, `{}`)
	require.Equal(t, "true", bare.header.Get("Idempotent-Replayed"), string(bare.body))

	for _, key := range []string{`"a,b"`, `order:42;retry 1`, `"a\\b"`} {
		r := e.call(alice.key, "echo", key, `{}`)
		require.Equal(t, http.StatusOK, r.status, "%s: %s", key, r.body)
		require.Empty(t, r.header.Get("Idempotent-Replayed"), key)
	}
	require.EqualValues(t, 5, e.up.count("/ok"))
	require.Equal(t, int64(100-5*5), e.balance(alice))
	e.checkInvariants()
}

// TestParseIdempotencyKey is the parser's table.
func TestParseIdempotencyKey(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`k`: "k", `"k"`: "k", `  "k"  `: "k", `"a, b"`: "a, b", `"a\"b"`: `a"b`, `"a\\b"`: `a\b`,
		`order:42;retry 1`: "order:42;retry 1", `"`: "!", `"a`: "!", `"a" , "b"`: "!", `a,b`: "!",
		`"a";x`: "!", `"a"b`: "!", `"a\nb"`: "!", "\"a\x01\"": "!",
	} {
		got, err := engine.ParseIdempotencyKey([]string{in})
		if want == "!" {
			require.ErrorIs(t, err, engine.ErrInvalidIdempotencyKey, in)
			continue
		}
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	_, err := engine.ParseIdempotencyKey([]string{"a", "b"})
	require.ErrorIs(t, err, engine.ErrInvalidIdempotencyKey)
	got, err := engine.ParseIdempotencyKey(nil)
	require.NoError(t, err)
	require.Empty(t, got)
}

// TestJSONAtTheDepthLimitAndValidUnicode: what is refused is only what must
// be: MaxJSONDepth levels, surrogate pairs and U+FFFD itself are inputs.
func TestJSONAtTheDepthLimitAndValidUnicode(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	deep := strings.Repeat(`{"a":`, safejson.MaxDepth-1) + "[1]" + strings.Repeat("}", safejson.MaxDepth-1)
	r := e.call(alice.key, "text", "deep", deep) // (echo would answer one level deeper)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	e.up.mu.Lock()
	require.Equal(t, deep, string(e.up.bodies[len(e.up.bodies)-1]))
	e.up.mu.Unlock()
	for key, body := range map[string]string{"pair": `{"t":"\ud83d\ude00"}`, "fffd": `{"t":"\ufffd"}`,
		"escaped": `{"t":"\\ud800 is text"}`} {
		r := e.call(alice.key, "echo", key, body)
		require.Equal(t, http.StatusOK, r.status, "%s: %s", key, r.body)
	}
	require.EqualValues(t, 3, e.up.count("/ok"))
	require.EqualValues(t, 1, e.up.count("/text"))
	e.checkInvariants()
}

// TestUpstreamDeepJSONIsRefused: an upstream answer nested past the limit is
// not stored (MCP would parse it again on every replay); the call is
// refunded and retryable, on REST and MCP.
func TestUpstreamDeepJSONIsRefused(t *testing.T) {
	t.Parallel()
	m := setupMCP(t)
	alice := m.newCaller("alice", "1.00")
	r := m.call(alice.key, "deep", "k", `{}`)
	p := r.problem(t, http.StatusBadGateway, "upstream-failed")
	require.Contains(t, p["detail"], "deeper than 128")
	require.Equal(t, true, p["refunded"])
	rec, err := m.record(alice, "deep", "k")
	require.NoError(t, err)
	require.Equal(t, "failed", string(rec.Status))
	require.Nil(t, rec.Response)

	sid := m.initialize(alice.key)
	res := m.callTool(alice.key, sid, "deep", `{}`, "k")
	require.Equal(t, true, res["isError"])
	require.EqualValues(t, 2, m.up.count("/deep"))
	require.Equal(t, int64(100), m.balance(alice))
	m.checkInvariants()
}

// TestMCPDeepJSONIsAnInvalidRequest: the depth limit holds for every part of
// an MCP message, the id included, before anything is decoded.
func TestMCPDeepJSONIsAnInvalidRequest(t *testing.T) {
	t.Parallel()
	m := setupMCP(t)
	alice := m.newCaller("alice", "1.00")
	sid := m.initialize(alice.key)
	deep := strings.Repeat("[", 9000) + strings.Repeat("]", 9000)
	deepObj := strings.Repeat(`{"a":`, 9990) + "1" + strings.Repeat("}", 9990)
	for name, body := range map[string]string{
		"arguments": `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":` + deepObj + `}}`,
		"id":        `{"jsonrpc":"2.0","id":` + deep + `,"method":"ping"}`,
		"meta":      `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{},"_meta":` + deepObj + `}}`,
		"surrogate": `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"t":"\udc00"}}}`,
	} {
		before := m.state(alice)
		r := m.post(alice.key, map[string]string{"Mcp-Session-Id": sid}, body)
		e := rpcError(t, r, http.StatusBadRequest, -32600)
		require.NotContains(t, e["message"], "Parse error", name)
		require.Equal(t, before, m.state(alice), name)
	}
}

// TestMCPSessionIDStrictDecoding: a session id has one spelling; the same
// bytes spelled with other unused trailing bits are an unknown session.
func TestMCPSessionIDStrictDecoding(t *testing.T) {
	t.Parallel()
	m := setupMCP(t)
	alice := m.newCaller("alice", "1.00")
	sid := m.initialize(alice.key)
	ping := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	rpcResult(t, m.post(alice.key, map[string]string{"Mcp-Session-Id": sid}, ping))

	// The MAC is 16 bytes in 22 characters: the last one carries 4 unused bits.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, sid[len(sid)-1])
	respelled := sid[:len(sid)-1] + string(alphabet[last^1])
	mac := sid[strings.LastIndexByte(sid, '.')+1:]
	lenient, err := base64.RawURLEncoding.DecodeString(respelled[strings.LastIndexByte(respelled, '.')+1:])
	require.NoError(t, err)
	orig, err := base64.RawURLEncoding.DecodeString(mac)
	require.NoError(t, err)
	require.Equal(t, orig, lenient, "the respelled id decodes leniently to the same bytes")

	rpcError(t, m.post(alice.key, map[string]string{"Mcp-Session-Id": respelled}, ping), http.StatusNotFound, -32001)
}
