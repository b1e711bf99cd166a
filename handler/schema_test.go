//go:build !js

package handler_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/jsonschema"
	"github.com/toolgate/toolgate-go/handler/problem"
	"github.com/toolgate/toolgate-go/store"
)

// wantViolations are the violations of badStrictInput against strictSchema.
var wantViolations = []any{
	map[string]any{"path": "/extra", "keyword": "additionalProperties", "message": "is not allowed: the schema does not list this property"},
	map[string]any{"path": "/limit", "keyword": "type", "message": "must be integer, not number"},
	map[string]any{"path": "/q", "keyword": "minLength", "message": "must be at least 1 characters long, is 0"},
}

const badStrictInput = `{"q": "", "limit": 1.5, "extra": true}`

// An input that fails the tool's inputSchema is refused before the claim:
// 400 invalid-input with the violations, nothing charged, no record, no
// upstream call. The same key then works with a corrected input.
func TestInputSchemaRefusesBeforeMoneyMoves(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := e.newCaller("agent", "1.00")
	kinds := e.kinds(c)

	r := e.call(c.key, "strict", "k-1", badStrictInput)
	m := r.problem(t, http.StatusBadRequest, "invalid-input")
	require.Equal(t, wantViolations, m["violations"])
	require.Contains(t, m["detail"], `the input does not match the inputSchema of "strict" (3 violations); nothing was charged, stored or executed`)

	// Integers beyond 2^53 are judged exactly: 2^53+1 is over the maximum
	// 2^53, though both are the same float64.
	r = e.call(c.key, "strict", "k-1", `{"q": "x", "limit": 9007199254740993}`)
	m = r.problem(t, http.StatusBadRequest, "invalid-input")
	require.Equal(t, []any{map[string]any{"path": "/limit", "keyword": "maximum", "message": "must be at most 9007199254740992"}}, m["violations"])
	r = e.call(c.key, "strict", "k-1", `[]`)
	r.problem(t, http.StatusBadRequest, "invalid-input")

	require.EqualValues(t, 100, e.balance(c), "nothing charged")
	require.Equal(t, kinds, e.kinds(c), "no ledger entry")
	_, err := e.record(c, "strict", "k-1")
	require.ErrorIs(t, err, store.ErrNotFound, "nothing stored under the key")
	require.EqualValues(t, 0, e.up.count("/ok"), "the upstream is not called")

	// Malformed JSON is still invalid-json; a tool without inputSchema
	// takes any JSON.
	e.call(c.key, "strict", "k-1", `{"q":`).problem(t, http.StatusBadRequest, "invalid-json")
	r = e.call(c.key, "echo", "k-any", `[1, "anything"]`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))

	// The same key with a valid input (1.0 is an integer) executes and
	// charges once.
	r = e.call(c.key, "strict", "k-1", `{"q": "x", "limit": 1.0}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.EqualValues(t, 100-5-5, e.balance(c))
	require.EqualValues(t, 2, e.up.count("/ok"))
	rec, err := e.record(c, "strict", "k-1")
	require.NoError(t, err)
	require.Equal(t, store.StatusCompleted, rec.Status)
	e.checkInvariants()
}

// Over MCP, an input that fails the schema is JSON-RPC -32602 with the
// problem type and the violations as data; nothing changes.
func TestMCPInputSchemaIsInvalidParams(t *testing.T) {
	t.Parallel()
	m := setupMCP(t)
	c := m.newCaller("agent", "1.00")
	sid := m.initialize(c.key)
	before := m.state(c)

	r := m.post(c.key, map[string]string{"Mcp-Session-Id": sid}, callBody("strict", badStrictInput, "mcp-k"))
	rpcErr := rpcError(t, r, http.StatusOK, -32602)
	require.Contains(t, rpcErr["message"], `Invalid params: the input does not match the inputSchema of "strict" (3 violations)`)
	data, ok := rpcErr["data"].(map[string]any)
	require.True(t, ok, string(r.body))
	require.Equal(t, problem.TypeBase+"invalid-input", data["type"])
	require.Equal(t, wantViolations, data["violations"])
	require.Equal(t, before, m.state(c))
	_, err := m.record(c, "strict", "mcp-k")
	require.ErrorIs(t, err, store.ErrNotFound)

	res := m.callTool(c.key, sid, "strict", `{"q":"ok"}`, "mcp-k")
	require.Nil(t, res["isError"], resultText(res))
	require.EqualValues(t, 95, m.balance(c))
	require.EqualValues(t, 1, m.up.count("/ok"))
	m.checkInvariants()
}

// A call paid per request (x402) is checked before the payment is bound to
// the key or sent to the facilitator: nothing verified or settled, and the
// same payment then pays for a valid call.
func TestX402InputSchemaRefusesBeforePayment(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	pay := e.fac.Payer("erin").Pay(offer(), time.Now())

	r := e.paidCall("strict", "k-x", pay, badStrictInput)
	m := r.problem(t, http.StatusBadRequest, "invalid-input")
	require.Equal(t, wantViolations, m["violations"])
	calls := e.fac.Calls(pay.Nonce())
	require.Zero(t, calls.Verify)
	require.Zero(t, calls.Settle)
	require.EqualValues(t, 0, e.up.count("/ok"))

	// The payment is still free: under another key with a valid input it
	// pays once.
	r = e.paidCall("strict", "k-y", pay, `{"q": "ok"}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.True(t, settleReceipt(t, r).Success)
	require.Equal(t, 1, e.fac.Settlements())
	require.EqualValues(t, 1, e.up.count("/ok"))
	e.checkInvariants()
}

// The engine's error for it, for callers of the engine itself.
func TestInputSchemaErrorIsTyped(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := e.newCaller("agent", "1.00")
	r := e.call(c.key, "strict", "k", `{}`)
	m := r.problem(t, http.StatusBadRequest, "invalid-input")
	require.Equal(t, []any{map[string]any{"path": "", "keyword": "required", "message": `missing required property "q"`}}, m["violations"])
	p := problem.For(&engine.InputSchemaError{Tool: "t", Truncated: true, Violations: make([]jsonschema.Violation, 20)})
	require.Equal(t, http.StatusBadRequest, p.Status)
	require.Contains(t, p.Detail, "the first 20 violations are listed")
}
