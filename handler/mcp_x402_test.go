//go:build !js

package handler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler"
	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	tgmcp "github.com/toolgate/toolgate-go/handler/mcp"
	"github.com/toolgate/toolgate-go/handler/mcp/mcptest"
	"github.com/toolgate/toolgate-go/handler/pay/x402"
	"github.com/toolgate/toolgate-go/handler/pay/x402/facilitatortest"
	"github.com/toolgate/toolgate-go/handler/problem"
)

// connectMCP opens an MCP session with the official SDK client to the
// gateway's /mcp, as the caller whose key is apiKey ("" for an anonymous
// agent).
func (e *x402Env) connectMCP(apiKey string) *mcp.ClientSession {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := mcptest.Connect(ctx, e.env.gw.URL+"/mcp", apiKey, nil)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// mcpCall calls tool in cs with payment (none when nil) and key (none when "").
func mcpCall(t testing.TB, cs *mcp.ClientSession, tool, key string, payment *x402.PaymentPayload) *mcp.CallToolResult {
	t.Helper()
	meta := mcp.Meta{}
	if key != "" {
		meta[tgmcp.MetaIdempotencyKey] = key
	}
	if payment != nil {
		meta[x402.MetaPayment] = payment
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"q": 1}, Meta: meta})
	require.NoError(t, err)
	return res
}

// paymentRequired asserts res is the x402 MCP transport's payment-required
// result for the test offer and returns its structuredContent.
func paymentRequired(t testing.TB, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	require.True(t, res.IsError)
	sc, ok := res.StructuredContent.(map[string]any)
	require.True(t, ok, "structuredContent is an object: %#v", res.StructuredContent)
	require.EqualValues(t, 2, sc["x402Version"])
	accepts := sc["accepts"].([]any)
	require.Len(t, accepts, 1)
	a := accepts[0].(map[string]any)
	require.Equal(t, "50000", a["amount"])
	require.Equal(t, x402Network, a["network"])
	require.Equal(t, x402Asset, a["asset"])
	require.Equal(t, x402PayTo, a["payTo"])
	require.Equal(t, "exact", a["scheme"])
	require.Contains(t, sc["resource"].(map[string]any)["url"], "mcp://")
	require.Contains(t, sc, "extensions")
	require.NotEmpty(t, sc["error"])

	// content[0] is the same document as JSON text (the transport's
	// fallback); content[1] says what to do.
	require.Len(t, res.Content, 2)
	var fromText map[string]any
	require.NoError(t, json.Unmarshal([]byte(res.Content[0].(*mcp.TextContent).Text), &fromText))
	require.Equal(t, sc, fromText)
	require.Contains(t, res.Content[1].(*mcp.TextContent).Text, x402.MetaPayment)
	require.Contains(t, res.Content[1].(*mcp.TextContent).Text, tgmcp.MetaIdempotencyKey)
	require.NotContains(t, res.Meta, x402.MetaPaymentResponse, "nothing settled, no receipt")
	return sc
}

// receiptOf returns a result's x402 receipt.
func receiptOf(t testing.TB, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	r, ok := res.Meta[x402.MetaPaymentResponse].(map[string]any)
	require.True(t, ok, "_meta[%q]: %#v", x402.MetaPaymentResponse, res.Meta)
	return r
}

func TestMCPX402AnonymousAgent(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	cs := e.connectMCP("")
	init := cs.InitializeResult()
	require.Equal(t, tgmcp.ProtocolVersion, init.ProtocolVersion)
	require.Contains(t, init.Instructions, x402.MetaPayment)

	tools, err := cs.ListTools(context.Background(), nil)
	require.NoError(t, err)
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
		accepts, ok := tool.Meta[tgmcp.MetaX402Accepts].([]any)
		require.True(t, ok, "%s: _meta has the x402 offer", tool.Name)
		require.Equal(t, "50000", accepts[0].(map[string]any)["amount"])
		require.Contains(t, tool.Description, "reuse the same")
		require.Contains(t, tool.Description, tgmcp.MetaIdempotencyKey)
	}
	require.ElementsMatch(t, []string{"echo", "slow", "flaky", "bad", "strict"}, names, "an anonymous agent sees only the tools sold per call")

	// A tools/call without a payment: the offer, nothing executed.
	sc := paymentRequired(t, mcpCall(t, cs, "echo", "k", nil))
	require.Equal(t, "payment_required", sc["error"])
	prob := sc["problem"].(map[string]any)
	require.Equal(t, problem.TypeBase+"payment-required", prob["type"])
	require.EqualValues(t, http.StatusPaymentRequired, prob["status"])

	// A prepaid-only tool is not for an anonymous agent, with or without
	// a payment.
	res := mcpCall(t, cs, "prepaid", "k", nil)
	require.True(t, res.IsError)
	require.Equal(t, "unauthorized", res.StructuredContent.(map[string]any)["error"])
	pay := e.fac.Payer("anon").Pay(offer(), time.Now())
	res = mcpCall(t, cs, "prepaid", "k", &pay)
	require.True(t, res.IsError)
	require.Equal(t, "per_call_unavailable", res.StructuredContent.(map[string]any)["error"])

	// A keyed session lists every tool; a key that is present but wrong
	// is 401, anonymous or not.
	c := e.newCaller("lister", "1.00")
	all, err := e.connectMCP(c.key).ListTools(context.Background(), nil)
	require.NoError(t, err)
	require.Len(t, all.Tools, 6)
	_, err = mcptest.Connect(context.Background(), e.env.gw.URL+"/mcp", "tg_wrong", nil)
	require.Error(t, err)
	r := e.do(http.MethodPost, "/mcp", "tg_wrong", map[string]string{"Content-Type": "application/json"},
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`)
	require.Equal(t, http.StatusUnauthorized, r.status, string(r.body))
	r = e.do(http.MethodPost, "/mcp", "", map[string]string{"Content-Type": "application/json", "Authorization": "Basic eDp5"},
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`)
	require.Equal(t, http.StatusUnauthorized, r.status, "a malformed Authorization header is not anonymous")

	require.Equal(t, int64(0), e.up.calls.Load(), "nothing executed")
	require.Equal(t, 0, e.fac.Calls(pay.Nonce()).Verify)
	e.checkInvariants()
}

func TestMCPX402PaidCallSettlesOnceAndReplays(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	payer := e.fac.Payer("alice")
	pay := payer.Pay(offer(), time.Now())
	cs := e.connectMCP("")

	first := mcpCall(t, cs, "echo", "k-1", &pay)
	require.False(t, first.IsError, "%#v", first.Content)
	rc := receiptOf(t, first)
	require.Equal(t, true, rc["success"])
	require.NotEmpty(t, rc["transaction"])
	require.Equal(t, strings.ToLower(payer.Address), rc["payer"])
	require.Equal(t, x402Network, rc["network"])
	require.Equal(t, false, first.Meta[tgmcp.MetaReplayed])
	require.Equal(t, "k-1", first.Meta[tgmcp.MetaIdempotencyKey])
	require.Equal(t, "x402", first.Meta[tgmcp.MetaReceipt].(map[string]any)["rail"])

	again := mcpCall(t, cs, "echo", "k-1", &pay)
	require.False(t, again.IsError)
	require.Equal(t, true, again.Meta[tgmcp.MetaReplayed])
	require.Equal(t, rc, receiptOf(t, again), "a replay carries the same receipt")
	require.Equal(t, first.StructuredContent, again.StructuredContent)

	calls := e.fac.Calls(pay.Nonce())
	require.Equal(t, 1, calls.Verify)
	require.Equal(t, 1, calls.Settle)
	require.Equal(t, 1, e.fac.Settlements())
	require.Equal(t, int64(1), e.up.count("/ok"))

	// Without a key, the payment names the action (its nonce), in any
	// session: a retry after a reconnect replays and never pays twice.
	pay2 := payer.Pay(offer(), time.Now())
	one := mcpCall(t, cs, "echo", "", &pay2)
	require.False(t, one.IsError)
	require.Equal(t, pay2.Nonce(), one.Meta[tgmcp.MetaIdempotencyKey])
	two := mcpCall(t, e.connectMCP(""), "echo", "", &pay2)
	require.Equal(t, true, two.Meta[tgmcp.MetaReplayed])
	require.Equal(t, receiptOf(t, one), receiptOf(t, two))
	require.Equal(t, 2, e.fac.Settlements())
	require.Equal(t, int64(2), e.up.count("/ok"))

	// The same payment under another key pays for nothing more.
	res := mcpCall(t, cs, "echo", "k-2", &pay)
	require.True(t, res.IsError)
	require.Equal(t, "payment_reused", res.StructuredContent.(map[string]any)["error"])
	require.Equal(t, int64(2), e.up.count("/ok"))

	// A caller with a key may pay per call too: the payment pays.
	c := e.newCaller("payer-with-key", "")
	pay3 := payer.Pay(offer(), time.Now())
	res = mcpCall(t, e.connectMCP(c.key), "echo", "k-3", &pay3)
	require.False(t, res.IsError)
	require.Equal(t, true, receiptOf(t, res)["success"])
	require.Equal(t, int64(0), e.balance(c), "nothing taken from the caller's balance")
	require.Equal(t, 3, e.fac.Settlements())
	e.checkInvariants()
}

func TestMCPX402RefusedPaymentsExecuteNothing(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	payer := e.fac.Payer("eve")
	cs := e.connectMCP("")
	wrongTo := payer.Pay(offer(), time.Now())
	wrongTo.Payload.Authorization.To = "0x0000000000000000000000000000000000000001"
	wrongTo = payer.Resign(wrongTo)

	sc := paymentRequired(t, mcpCall(t, cs, "echo", "k", &wrongTo))
	require.Equal(t, x402.ReasonRecipientMismatch, sc["error"])
	require.Equal(t, x402.ReasonRecipientMismatch, sc["problem"].(map[string]any)["reason"])
	require.Equal(t, 0, e.fac.Calls(wrongTo.Nonce()).Verify, "refused before the facilitator")

	// A payment that is not one: bounded decoding, invalid_payload.
	for name, raw := range map[string]any{"not an object": "abc", "no version": map[string]any{"payload": 1},
		"version 3": map[string]any{"x402Version": 3}, "huge": strings.Repeat("a", 10<<10)} {
		ctx := context.Background()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{},
			Meta: mcp.Meta{x402.MetaPayment: raw, tgmcp.MetaIdempotencyKey: "k"}})
		require.NoError(t, err, name)
		sc := paymentRequired(t, res)
		require.Contains(t, []string{x402.ReasonInvalidPayload, x402.ReasonInvalidVersion}, sc["error"], name)
	}

	// The facilitator refuses the payment.
	e.fac.Inject("/verify", 1, facilitatortest.Fault{Kind: facilitatortest.Reject, Reason: "insufficient_funds"})
	funds := payer.Pay(offer(), time.Now())
	sc = paymentRequired(t, mcpCall(t, cs, "echo", "k-funds", &funds))
	require.Equal(t, "insufficient_funds", sc["error"])
	require.Equal(t, 1, e.fac.Calls(funds.Nonce()).Verify)

	// A settle refused after the tool ran: the answer is withheld.
	e.fac.Inject("/settle", 1, facilitatortest.Fault{Kind: facilitatortest.Reject, Reason: "insufficient_funds"})
	late := payer.Pay(offer(), time.Now())
	sc = paymentRequired(t, mcpCall(t, cs, "echo", "k-late", &late))
	require.Equal(t, "insufficient_funds", sc["error"])
	require.Equal(t, int64(1), e.up.count("/ok"), "only the last one ran")
	require.Equal(t, 0, e.fac.Settlements())
	e.checkInvariants()
}

func TestMCPX402ConcurrentCallsOnePayment(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	pay := e.fac.Payer("bob").Pay(offer(), time.Now())
	const n = 10
	sessions := make([]*mcp.ClientSession, n)
	for i := range sessions {
		sessions[i] = e.connectMCP("")
	}
	res := make([]*mcp.CallToolResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = mcpCall(t, sessions[i], "slow", "storm", &pay)
		}()
	}
	wg.Wait()
	tx := receiptOf(t, res[0])["transaction"]
	require.NotEmpty(t, tx)
	replayed := 0
	for _, r := range res {
		require.False(t, r.IsError, "%#v", r.StructuredContent)
		require.Equal(t, tx, receiptOf(t, r)["transaction"])
		require.Equal(t, res[0].StructuredContent, r.StructuredContent)
		if r.Meta[tgmcp.MetaReplayed] == true {
			replayed++
		}
	}
	require.Equal(t, n-1, replayed)
	calls := e.fac.Calls(pay.Nonce())
	require.Equal(t, 1, calls.Verify)
	require.Equal(t, 1, calls.Settle)
	require.Equal(t, int64(1), e.up.count("/ok"))
	e.checkInvariants()
}

// TestMCPX402ShortBalance: a caller whose balance is short on a tool also
// sold per call gets both ways to pay: the x402 offer as structuredContent
// and the insufficient-funds problem (with its top-up) under "problem".
func TestMCPX402ShortBalance(t *testing.T) {
	t.Parallel()
	fac, err := facilitatortest.Start()
	require.NoError(t, err)
	t.Cleanup(func() { _ = fac.Close() })
	e := &env{t: t, up: newUpstream(t), logs: &syncBuffer{}}
	e.st, e.db = openStore(t)
	doc := fmt.Sprintf(`{"tools": [{"name": "echo", "description": "echo", "price": "0.05", "currency": "USD",
	 "upstream": {"url": "%s/ok"}, "x402": {"network": %q, "asset": %q, "payTo": %q, "extra": {"name": "USDC", "version": "2"}}}]}`,
		e.up.srv.URL, x402Network, x402Asset, x402PayTo)
	cat, err := catalog.ParseCatalog([]byte(doc))
	require.NoError(t, err)
	policy, err := engine.ParseTopupPolicy("USD", "", "")
	require.NoError(t, err)
	// Top-ups are enabled (the hint needs no call to Stripe; none is made).
	g, err := handler.NewGateway(handler.Config{Store: e.st, Catalog: cat, AdminToken: adminToken,
		Upstream: &engine.HTTPUpstream{}, Logger: slog.New(slog.NewJSONHandler(e.logs, nil)),
		X402: handler.X402Config{FacilitatorURL: fac.URL()},
		Stripe: handler.StripeConfig{SecretKey: "sk_test_unused", WebhookSecrets: []string{webhookSecret},
			APIBase: "http://127.0.0.1:1", Topups: policy}})
	require.NoError(t, err)
	e.gw = httptest.NewServer(g)
	t.Cleanup(e.gw.Close)
	x := &x402Env{env: e, fac: fac, gw: g}

	c := e.newCaller("short", "0.01")
	res := mcpCall(t, x.connectMCP(c.key), "echo", "k", nil)
	sc := paymentRequired(t, res)
	require.Equal(t, "payment_required", sc["error"])
	prob := sc["problem"].(map[string]any)
	require.Equal(t, problem.TypeBase+"insufficient-funds", prob["type"])
	require.Equal(t, "0.05", prob["price"])
	require.Equal(t, "0.01", prob["balance"])
	require.Equal(t, "0.04", prob["shortfall"])
	topUp := prob["topUp"].(map[string]any)
	require.Equal(t, "/v1/topups", topUp["href"])
	require.Contains(t, res.Content[1].(*mcp.TextContent).Text, "balance")

	// The same caller pays per call instead, with the same key.
	pay := fac.Payer("short").Pay(offer(), time.Now())
	res = mcpCall(t, x.connectMCP(c.key), "echo", "k", &pay)
	require.False(t, res.IsError)
	require.Equal(t, true, receiptOf(t, res)["success"])
	require.Equal(t, int64(1), e.balance(c), "the balance is untouched")
	require.Equal(t, int64(1), e.up.count("/ok"))
	e.checkInvariants()
}
