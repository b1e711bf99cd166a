//go:build !js

package handler_test

import (
	"context"
	"errors"
	"net/http"
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
	"github.com/toolgate/toolgate-go/handler/pay/stripe/stripemock"
	"github.com/toolgate/toolgate-go/store"
)

const webhookSecret = "whsec_handler_test"

// stripeDown makes the Stripe API unreachable while set: an injected
// network fault in front of the real stripe-mock.
type stripeDown struct{ on atomic.Bool }

// withStripe enables the Stripe rail against stripe-mock, through a send
// function that fails while down is on.
func withStripe(t *testing.T, down *stripeDown) option {
	api := stripemock.Start(t)
	policy, err := engine.ParseTopupPolicy("USD,EUR", "", "")
	require.NoError(t, err)
	policy.SuccessURL, policy.CancelURL = "https://agent.example/ok", "https://agent.example/cancel"
	return func(c *handler.Config) {
		c.Stripe = handler.StripeConfig{SecretKey: "sk_test_handler", WebhookSecrets: []string{webhookSecret},
			APIBase: api, Topups: policy,
			Send: func(r *http.Request) (*http.Response, error) {
				if down != nil && down.on.Load() {
					return nil, errors.New("dial tcp: connection refused")
				}
				return http.DefaultClient.Do(r)
			}}
	}
}

func (e *env) topup(c caller, key, body string) response {
	e.t.Helper()
	return e.do(http.MethodPost, "/v1/topups", c.key, map[string]string{"Idempotency-Key": key}, body)
}

func (e *env) webhook(body []byte, sig string) response {
	e.t.Helper()
	h := map[string]string{"Content-Type": "application/json"}
	if sig != "" {
		h["Stripe-Signature"] = sig
	}
	return e.do(http.MethodPost, "/v1/webhooks/stripe", "", h, string(body))
}

func (e *env) topupSession(c caller, id string) string {
	e.t.Helper()
	tu, err := e.st.Topup(context.Background(), c.id, id)
	require.NoError(e.t, err)
	require.True(e.t, strings.HasPrefix(tu.SessionID, "cs_"), tu.SessionID)
	return tu.SessionID
}

// TestTopupThen402Clears: a caller refused with 402 (which names the
// top-up route and the least amount, on REST and MCP alike) tops up; the
// signed webhook credits it once; the same paid call with the same key then
// runs once.
func TestTopupThen402Clears(t *testing.T) {
	t.Parallel()
	e := setup(t, withStripe(t, nil))
	c := e.newCaller("agent", "")

	p := e.call(c.key, "echo", "k-1", `{"q":1}`).problem(t, http.StatusPaymentRequired, "insufficient-funds")
	require.Equal(t, "0.05", p["shortfall"])
	require.Equal(t, map[string]any{"method": "POST", "href": "/v1/topups", "currency": "USD",
		"minimum": "5.00", "maximum": "1000.00"}, p["topUp"])
	require.Contains(t, p["detail"], "add at least 5.00 USD with POST /v1/topups")

	// MCP says the same in structuredContent.
	ctx := context.Background()
	cs, err := mcptest.Connect(ctx, e.gw.URL+"/mcp", c.key, e.gw.Client())
	require.NoError(t, err)
	t.Cleanup(func() { _ = cs.Close() })
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"q": 1},
		Meta: mcp.Meta{tgmcp.MetaIdempotencyKey: "k-mcp"}})
	require.NoError(t, err)
	require.True(t, res.IsError)
	sc := res.StructuredContent.(map[string]any)
	require.Equal(t, "payment_required", sc["error"])
	require.Equal(t, "/v1/topups", sc["topUp"].(map[string]any)["href"])

	r := e.topup(c, "t-1", `{"amount":"5.00","currency":"USD"}`)
	require.Equal(t, http.StatusCreated, r.status, string(r.body))
	tu := r.json(t)
	id := tu["id"].(string)
	require.Equal(t, "open", tu["status"])
	require.Equal(t, "0.00", tu["credited"])

	session := e.topupSession(c, id)
	obj := stripemock.CheckoutSession(session, c.id, id, 500, "usd", "paid", "complete", "pi_h_1")
	body, sig := stripemock.SignedEvent(t, webhookSecret, "checkout.session.completed", obj, time.Now())
	r = e.webhook(body, sig)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, "credited", r.json(t)["status"])
	r = e.webhook(body, sig)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, true, r.json(t)["duplicate"])
	require.Equal(t, int64(500), e.balance(c))

	r = e.call(c.key, "echo", "k-1", `{"q":1}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, int64(1), e.up.count("/ok"))
	require.Equal(t, int64(495), e.balance(c))
	require.Equal(t, []string{store.EntryCredit, store.EntryCharge}, e.kinds(c))

	r = e.do(http.MethodGet, "/v1/topups/"+id, c.key, nil, "")
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, "credited", r.json(t)["status"])
	require.Equal(t, "5.00", r.json(t)["credited"])

	// Refunded in full after 0.05 was spent: 0.05 is owed, and the admin's
	// attention list and caller list say so.
	refund, refundSig := stripemock.SignedEvent(t, webhookSecret, "charge.refunded",
		stripemock.Charge("ch_h_1", "pi_h_1", 500, 500, "usd", map[string]string{"caller": c.id, "topup_id": id}), time.Now())
	require.Equal(t, http.StatusOK, e.webhook(refund, refundSig).status)
	require.Equal(t, int64(0), e.balance(c))
	r = e.do(http.MethodGet, "/v1/admin/attention", adminToken, nil, "")
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	owed := r.json(t)["owed"].([]any)
	require.Len(t, owed, 1)
	require.Equal(t, c.id, owed[0].(map[string]any)["caller"])
	require.EqualValues(t, 5, owed[0].(map[string]any)["owed"])
	e.call(c.key, "echo", "k-2", `{"q":2}`).problem(t, http.StatusPaymentRequired, "insufficient-funds")
	e.checkInvariants()
}

// TestTopupWhileStripeIsDown: a top-up whose Checkout Session could not be
// made answers 503 and stays pending; the same request retried makes the
// session, and the key never makes a second top-up.
func TestTopupWhileStripeIsDown(t *testing.T) {
	t.Parallel()
	down := &stripeDown{}
	e := setup(t, withStripe(t, down))
	c := e.newCaller("agent", "")
	down.on.Store(true)
	r := e.topup(c, "t-down", `{"amount":"10.00","currency":"EUR"}`)
	r.problem(t, http.StatusServiceUnavailable, "payment-provider-unavailable")
	require.NotEmpty(t, r.header.Get("Retry-After"))
	down.on.Store(false)
	r = e.topup(c, "t-down", `{"amount":"10.00","currency":"EUR"}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body)) // the key's top-up existed
	first := r.json(t)
	require.Equal(t, "open", first["status"])
	require.Equal(t, "EUR", first["currency"])
	r = e.topup(c, "t-down", `{"amount":"10.00","currency":"EUR"}`)
	require.Equal(t, first["id"], r.json(t)["id"])
	require.Equal(t, first["url"], r.json(t)["url"])
	require.Empty(t, e.entries(c), "no money moves before the webhook")
}

// TestTopupRejects: bad top-ups get a precise 400 (or 401, 422) and create
// nothing.
func TestTopupRejects(t *testing.T) {
	t.Parallel()
	e := setup(t, withStripe(t, nil))
	c := e.newCaller("agent", "")
	require.Equal(t, http.StatusCreated, e.topup(c, "t-ok", `{"amount":"5.00","currency":"USD"}`).status)
	for body, slug := range map[string]string{
		`{"amount":"4.99","currency":"USD"}`:                                     "invalid-topup",
		`{"amount":"1000.01","currency":"USD"}`:                                  "invalid-topup",
		`{"amount":"5.00","currency":"GBP"}`:                                     "invalid-topup",
		`{"amount":"5.001","currency":"USD"}`:                                    "invalid-topup",
		`{"amount":"abc","currency":"USD"}`:                                      "invalid-topup",
		`{"currency":"USD"}`:                                                     "invalid-topup",
		`{"amount":"5.00","currency":"USD","successUrl":"ftp://x/"}`:             "invalid-topup",
		`{"amount":"5.00","currency":"USD","cancelUrl":"/relative"}`:             "invalid-topup",
		`{"amount":"5.00","currency":"USD","bonus":"1.00"}`:                      "invalid-request",
		`{"amount":5,"currency":"USD"}`:                                          "invalid-request",
		`[1]`:                                                                    "invalid-request",
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000):                  "invalid-request",
		`{"amount":"5.00","currency":"USD","successUrl":"https://x/` + "\xff\"}": "invalid-request",
	} {
		e.topup(c, "t-bad", body).problem(t, http.StatusBadRequest, slug)
	}
	e.topup(c, "t-ok", `{"amount":"6.00","currency":"USD"}`).problem(t, http.StatusUnprocessableEntity, "idempotency-key-mismatch")
	e.do(http.MethodPost, "/v1/topups", c.key, nil, `{"amount":"5.00","currency":"USD"}`).problem(t, http.StatusBadRequest, "invalid-idempotency-key")
	e.do(http.MethodPost, "/v1/topups", "tg_nobody", map[string]string{"Idempotency-Key": "x"}, `{}`).problem(t, http.StatusUnauthorized, "unauthorized")
	e.do(http.MethodGet, "/v1/topups/tu_nope", c.key, nil, "").problem(t, http.StatusNotFound, "topup-not-found")
	_, err := e.st.Topup(context.Background(), c.id, "t-bad")
	require.ErrorIs(t, err, store.ErrNotFound)
	e.checkInvariants()
}

// TestStripeWebhookRejects: unsigned, mis-signed, stale and malformed
// deliveries get 400 invalid-webhook and move no money.
func TestStripeWebhookRejects(t *testing.T) {
	t.Parallel()
	e := setup(t, withStripe(t, nil))
	c := e.newCaller("agent", "")
	id := e.topup(c, "t-1", `{"amount":"5.00","currency":"USD"}`).json(t)["id"].(string)
	obj := stripemock.CheckoutSession(e.topupSession(c, id), c.id, id, 500, "usd", "paid", "complete", "pi_1")
	body, sig := stripemock.SignedEvent(t, webhookSecret, "checkout.session.completed", obj, time.Now())
	_, wrong := stripemock.SignedEvent(t, "whsec_other", "checkout.session.completed", obj, time.Now())
	stale, staleSig := stripemock.SignedEvent(t, webhookSecret, "checkout.session.completed", obj, time.Now().Add(-10*time.Minute))
	future, futureSig := stripemock.SignedEvent(t, webhookSecret, "checkout.session.completed", obj, time.Now().Add(10*time.Minute))
	garbled := []byte(`{"id":"evt_1","type":"checkout.session.completed","created":1,"data":{"object":[`)
	for name, d := range map[string]struct {
		body []byte
		sig  string
	}{
		"no header":      {body, ""},
		"wrong secret":   {body, wrong},
		"tampered":       {[]byte(strings.Replace(string(body), "500", "900", 1)), sig},
		"stale":          {stale, staleSig},
		"future":         {future, futureSig},
		"bad header":     {body, "v1=abc"},
		"garbled body":   {garbled, "t=1,v1=00"},
		"deep body":      {[]byte(strings.Repeat("[", 5000)), sig},
		"huge header":    {body, strings.Repeat("v1=00,", 20000)},
		"empty body":     {nil, sig},
		"another header": {body, "t=" + strings.Repeat("9", 30) + ",v1=00"},
	} {
		r := e.webhook(d.body, d.sig)
		require.Contains(t, []int{http.StatusBadRequest, http.StatusRequestEntityTooLarge}, r.status, name)
		if r.status == http.StatusBadRequest {
			r.problem(t, http.StatusBadRequest, "invalid-webhook")
		}
	}
	require.Empty(t, e.entries(c))
	e.checkInvariants()
}

// TestTopupsDisabled: without Stripe configuration the routes answer 501.
func TestTopupsDisabled(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := e.newCaller("agent", "")
	e.topup(c, "t-1", `{"amount":"5.00","currency":"USD"}`).problem(t, http.StatusNotImplemented, "topups-disabled")
	e.do(http.MethodGet, "/v1/topups/tu_1", c.key, nil, "").problem(t, http.StatusNotImplemented, "topups-disabled")
	e.webhook([]byte(`{}`), "t=1,v1=00").problem(t, http.StatusNotImplemented, "topups-disabled")
	p := e.call(c.key, "echo", "k", `{}`).problem(t, http.StatusPaymentRequired, "insufficient-funds")
	require.NotContains(t, p, "topUp", "no top-up hint when top-ups are off")
}

// TestDisputeBeforeItsPaymentIsKept: a dispute that arrives before any
// event of its session was applied names only the PaymentIntent; it is
// kept (200 parked), and taken back once the payment's event credits the
// top-up: never lost, never taken twice.
func TestDisputeBeforeItsPaymentIsKept(t *testing.T) {
	t.Parallel()
	e := setup(t, withStripe(t, nil))
	c := e.newCaller("agent", "")
	id := e.topup(c, "t-1", `{"amount":"10.00","currency":"USD"}`).json(t)["id"].(string)

	dispute, dispSig := stripemock.SignedEvent(t, webhookSecret, "charge.dispute.created",
		stripemock.Dispute("dp_early", "ch_early", "pi_early", 400, "usd"), time.Now())
	r := e.webhook(dispute, dispSig)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, true, r.json(t)["parked"])
	require.Empty(t, e.entries(c))

	obj := stripemock.CheckoutSession(e.topupSession(c, id), c.id, id, 1000, "usd", "paid", "complete", "pi_early")
	paid, paidSig := stripemock.SignedEvent(t, webhookSecret, "checkout.session.completed", obj, time.Now())
	r = e.webhook(paid, paidSig)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, "refunded", r.json(t)["status"])
	require.Equal(t, int64(600), e.balance(c))
	require.Equal(t, []string{store.EntryCredit, store.EntryReversal}, e.kinds(c))

	r = e.webhook(dispute, dispSig) // redelivered: now routed, asks nothing more
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, int64(600), e.balance(c))
	e.checkInvariants()
}
