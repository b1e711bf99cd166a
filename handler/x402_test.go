//go:build !js

package handler_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler"
	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/pay/x402"
	"github.com/toolgate/toolgate-go/handler/pay/x402/facilitatortest"
	"github.com/toolgate/toolgate-go/store"
)

const (
	x402Network = "eip155:84532"
	x402Asset   = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
	x402PayTo   = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
)

// x402Env is a gateway selling tools per call through the facilitator
// test server (written from the x402 v2 specification).
type x402Env struct {
	*env
	fac   *facilitatortest.Server
	gw    *handler.Gateway
	clock *testClock // the gateway's and the facilitator's clock
}

// testClock is the wall clock plus an offset a test moves forward.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

func setupX402(t *testing.T) *x402Env {
	t.Helper()
	clock := &testClock{}
	fac, err := facilitatortest.Start(facilitatortest.WithClock(clock.now))
	require.NoError(t, err)
	t.Cleanup(func() { _ = fac.Close() })
	e := &env{t: t, up: newUpstream(t), logs: &syncBuffer{}}
	e.st, e.db = openStore(t)
	price := `"x402": {"network": %q, "asset": %q, "payTo": %q, "extra": {"name": "USDC", "version": "2"}}`
	price = fmt.Sprintf(price, x402Network, x402Asset, x402PayTo)
	doc := fmt.Sprintf(`{"tools": [
	 {"name": "echo", "description": "echo", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/ok"}, %[2]s},
	 {"name": "slow", "description": "300 ms", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/ok?delay=300ms"}, %[2]s},
	 {"name": "flaky", "description": "500 once", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/flaky"}, %[2]s},
	 {"name": "bad", "description": "400", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/bad"}, %[2]s},
	 {"name": "prepaid", "description": "no x402", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/ok"}},
	 {"name": "strict", "description": "checked input", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/ok"}, %[2]s,
	  "inputSchema": `+strictSchema+`}
	]}`, e.up.srv.URL, price)
	cat, err := catalog.ParseCatalog([]byte(doc))
	require.NoError(t, err)
	g, err := handler.NewGateway(handler.Config{Store: e.st, Catalog: cat, AdminToken: adminToken,
		Upstream: &engine.HTTPUpstream{}, Logger: slog.New(slog.NewJSONHandler(e.logs, nil)), NowFunc: clock.now,
		X402: handler.X402Config{FacilitatorURL: fac.URL()}})
	require.NoError(t, err)
	e.gw = httptest.NewServer(g)
	t.Cleanup(func() {
		e.up.unblock()
		e.gw.Close()
	})
	return &x402Env{env: e, fac: fac, gw: g, clock: clock}
}

func offer() x402.PaymentRequirements {
	return x402.Offer{Network: x402Network, Asset: x402Asset, PayTo: x402PayTo, Amount: 50000, Currency: "USDC",
		MaxTimeoutSeconds: 60}.Requirements()
}

func paymentHeader(t testing.TB, p x402.PaymentPayload) string {
	t.Helper()
	h, err := x402.Encode(p)
	require.NoError(t, err)
	return h
}

// paidCall calls tool with a payment (and an Idempotency-Key unless key is "").
func (e *x402Env) paidCall(tool, key string, p x402.PaymentPayload, body string) response {
	e.t.Helper()
	h := map[string]string{"Content-Type": "application/json", x402.HeaderPaymentSignature: paymentHeader(e.t, p)}
	if key != "" {
		h["Idempotency-Key"] = key
	}
	return e.do(http.MethodPost, "/v1/tools/"+tool+"/call", "", h, body)
}

func settleReceipt(t testing.TB, r response) x402.SettleResponse {
	t.Helper()
	v := r.header.Get(x402.HeaderPaymentResponse)
	require.NotEmpty(t, v, "PAYMENT-RESPONSE")
	sr, err := x402.DecodeSettleResponse(v)
	require.NoError(t, err)
	return sr
}

// payerBalance is the payer's credit-back balance.
func (e *x402Env) payerBalance(p facilitatortest.Payer) int64 {
	b, err := e.st.Balance(context.Background(), x402.CallerPrefix+strings.ToLower(p.Address), "USDC")
	require.NoError(e.t, err)
	return b
}

func TestX402OfferWithoutAccount(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	r := e.call("", "echo", "k", `{"q":1}`)
	p := r.problem(t, http.StatusPaymentRequired, "payment-required")
	doc, err := x402.DecodePaymentRequired(r.header.Get(x402.HeaderPaymentRequired))
	require.NoError(t, err)
	require.Equal(t, 2, doc.X402Version)
	require.Len(t, doc.Accepts, 1)
	require.Equal(t, "50000", doc.Accepts[0].Amount, "0.05 USD as a 6-decimal token")
	require.Equal(t, x402Network, doc.Accepts[0].Network)
	require.Equal(t, x402PayTo, doc.Accepts[0].PayTo)
	require.Contains(t, doc.Resource.URL, "/v1/tools/echo/call")
	require.Contains(t, doc.Extensions, x402.ExtensionPaymentIdentifier)
	require.Equal(t, "50000", p["x402"].(map[string]any)["accepts"].([]any)[0].(map[string]any)["amount"])
	require.Less(t, len(r.header.Get(x402.HeaderPaymentRequired)), 2048, "the header stays small")

	// A tool without an x402 price still wants a key.
	e.call("", "prepaid", "k", `{}`).problem(t, http.StatusUnauthorized, "unauthorized")
	require.Equal(t, int64(0), e.up.calls.Load())
}

func TestX402PaidCallSettlesOnceAndReplays(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	payer := e.fac.Payer("alice")
	pay := payer.Pay(offer(), time.Now())

	r := e.paidCall("echo", "k-1", pay, `{"q":1}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	sr := settleReceipt(t, r)
	require.True(t, sr.Success)
	require.NotEmpty(t, sr.Transaction)
	require.Equal(t, strings.ToLower(payer.Address), sr.Payer)
	rc := r.json(t)["receipt"].(map[string]any)
	require.Equal(t, "x402", rc["rail"])
	require.Equal(t, "0.050000", rc["amount"])

	again := e.paidCall("echo", "k-1", pay, `{"q":1}`)
	require.Equal(t, http.StatusOK, again.status)
	require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
	require.Equal(t, string(r.body), string(again.body))
	require.Equal(t, sr.Transaction, settleReceipt(t, again).Transaction)

	calls := e.fac.Calls(pay.Nonce())
	require.Equal(t, 1, calls.Verify)
	require.Equal(t, 1, calls.Settle)
	require.Equal(t, 1, e.fac.Settlements())
	require.Equal(t, int64(1), e.up.count("/ok"))
	e.checkInvariants()
}

func TestX402StormOnePaymentOneExecution(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	pay := e.fac.Payer("bob").Pay(offer(), time.Now())
	const n = 20
	res := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = e.paidCall("slow", "storm", pay, `{"q":"storm"}`)
		}()
	}
	wg.Wait()
	for _, r := range res {
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		require.Equal(t, string(res[0].body), string(r.body))
	}
	calls := e.fac.Calls(pay.Nonce())
	require.Equal(t, 1, calls.Verify, "duplicates never verify")
	require.Equal(t, 1, calls.Settle)
	require.Equal(t, int64(1), e.up.count("/ok"))
	e.checkInvariants()
}

func TestX402OnePaymentPaysForOneKey(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	pay := e.fac.Payer("carol").Pay(offer(), time.Now())
	require.Equal(t, http.StatusOK, e.paidCall("echo", "k-a", pay, `{"q":1}`).status)
	e.paidCall("echo", "k-b", pay, `{"q":2}`).problem(t, http.StatusConflict, "payment-reused")
	require.Equal(t, int64(1), e.up.count("/ok"))
	require.Equal(t, 1, e.fac.Settlements())

	// Without an Idempotency-Key the payment's nonce is the key: the same
	// payment again replays.
	pay2 := e.fac.Payer("carol").Pay(offer(), time.Now())
	first := e.paidCall("echo", "", pay2, `{"q":3}`)
	require.Equal(t, http.StatusOK, first.status, string(first.body))
	second := e.paidCall("echo", "", pay2, `{"q":3}`)
	require.Equal(t, "true", second.header.Get("Idempotent-Replayed"))
	require.Equal(t, int64(2), e.up.count("/ok"))
	e.checkInvariants()
}

func TestX402FailureSettlesNothingThenRetrySettlesOnce(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	pay := e.fac.Payer("dave").Pay(offer(), time.Now())
	r := e.paidCall("flaky", "k", pay, `{}`)
	r.problem(t, http.StatusBadGateway, "upstream-failed")
	require.Equal(t, 0, e.fac.Calls(pay.Nonce()).Settle, "no settle after a failure")
	r = e.paidCall("flaky", "k", pay, `{}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.True(t, settleReceipt(t, r).Success)
	require.Equal(t, 1, e.fac.Settlements())
	require.Equal(t, int64(2), e.up.count("/flaky"))

	// An upstream 4xx: 424, nothing settled, nothing stored.
	bad := e.fac.Payer("dave").Pay(offer(), time.Now())
	r = e.paidCall("bad", "k-bad", bad, `{}`)
	require.Equal(t, http.StatusFailedDependency, r.status, string(r.body))
	require.Equal(t, 0, e.fac.Calls(bad.Nonce()).Settle)
	require.Equal(t, 1, e.fac.Settlements())
	e.checkInvariants()
}

func TestX402RefusedPaymentsExecuteNothing(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	payer := e.fac.Payer("eve")
	now := time.Now()
	wrongTo := payer.Pay(offer(), now)
	wrongTo.Payload.Authorization.To = "0x0000000000000000000000000000000000000001"
	wrongTo = payer.Resign(wrongTo)
	cheap := payer.Pay(offer(), now)
	cheap.Payload.Authorization.Value = "49999"
	cheap = payer.Resign(cheap)
	expired := payer.Pay(offer(), now.Add(-time.Hour))
	tampered := payer.Pay(offer(), now)
	tampered.Payload.Signature = "0x" + strings.Repeat("ab", 65)
	otherNet := offer()
	otherNet.Network = "eip155:1"
	wrongNet := payer.Pay(otherNet, now)

	for name, p := range map[string]x402.PaymentPayload{"wrong payTo": wrongTo, "below price": cheap,
		"expired": expired, "wrong network": wrongNet} {
		r := e.paidCall("echo", "k-"+name, p, `{}`)
		pr := r.problem(t, http.StatusPaymentRequired, "payment-required")
		require.NotEmpty(t, pr["reason"], name)
		require.NotEmpty(t, r.header.Get(x402.HeaderPaymentRequired), name)
	}
	// A bad signature passes our checks and is refused by the facilitator.
	r := e.paidCall("echo", "k-sig", tampered, `{}`)
	require.Equal(t, http.StatusPaymentRequired, r.status, string(r.body))
	require.Equal(t, 1, e.fac.Calls(tampered.Nonce()).Verify)

	for name, h := range map[string]string{"garbled": "not base64!", "not json": base64.StdEncoding.EncodeToString([]byte("{")),
		"deep": base64.StdEncoding.EncodeToString([]byte(strings.Repeat("[", 4000)))} {
		r := e.do(http.MethodPost, "/v1/tools/echo/call", "", map[string]string{x402.HeaderPaymentSignature: h,
			"Idempotency-Key": "k"}, `{}`)
		r.problem(t, http.StatusPaymentRequired, "payment-required")
		require.NotEmpty(t, r.header.Get(x402.HeaderPaymentRequired), name)
	}
	// A payment for a tool not sold per call.
	e.paidCall("prepaid", "k", payer.Pay(offer(), now), `{}`).problem(t, http.StatusBadRequest, "per-call-unavailable")

	// The facilitator refuses verification.
	e.fac.Inject("/verify", 1, facilitatortest.Fault{Kind: facilitatortest.Reject, Reason: "insufficient_funds"})
	r = e.paidCall("echo", "k-funds", payer.Pay(offer(), now), `{}`)
	pr := r.problem(t, http.StatusPaymentRequired, "payment-required")
	require.Equal(t, "insufficient_funds", pr["reason"])

	require.Equal(t, int64(0), e.up.count("/ok"), "nothing executed")
	require.Equal(t, 0, e.fac.Settlements())
	e.checkInvariants()
}

// TestX402SettleLostThenReconciled: the facilitator settles but the answer
// is lost: the call is delivered (never a fresh 402), the payment pending;
// the reconciler's settle of the same payment finds it settled (the nonce
// is used) and records it, once, with no credit-back.
func TestX402SettleLostThenReconciled(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	payer := e.fac.Payer("frank")
	pay := payer.Pay(offer(), time.Now())
	e.fac.Inject("/settle", 1, facilitatortest.Fault{Kind: facilitatortest.Drop})
	r := e.paidCall("echo", "k", pay, `{}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	sr := settleReceipt(t, r)
	require.False(t, sr.Success)
	require.Equal(t, string(store.PaymentPending), sr.ErrorReason)
	require.Equal(t, 1, e.fac.Settlements())

	attention := func() []any {
		r := e.do(http.MethodGet, "/v1/admin/attention", adminToken, nil, "")
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		return r.json(t)["pendingSettlements"].([]any)
	}
	pending := attention()
	require.Len(t, pending, 1, "the dashboard's attention list shows the pending settle")
	require.Equal(t, "settlement_pending", pending[0].(map[string]any)["state"])
	require.Equal(t, "0.050000", pending[0].(map[string]any)["amount"])

	res, err := e.gw.ReconcilePayments(context.Background(), 10)
	require.NoError(t, err)
	require.Equal(t, engine.ReconcileResult{Due: 1, Settled: 1}, res)
	require.Empty(t, attention())
	again := e.paidCall("echo", "k", pay, `{}`)
	require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
	require.True(t, settleReceipt(t, again).Success)
	require.Equal(t, 1, e.fac.Settlements(), "settled once")
	require.Equal(t, int64(0), e.payerBalance(payer), "delivered: nothing credited back")
	res, err = e.gw.ReconcilePayments(context.Background(), 10)
	require.NoError(t, err)
	require.Equal(t, 0, res.Due)
	e.checkInvariants()
}

// TestX402SettleRefusedAfterSuccess: a settle the facilitator refuses
// definitively means nothing moved: the answer is not given away (402 with
// the reason), and nothing is settled.
func TestX402SettleRefusedAfterSuccess(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	pay := e.fac.Payer("gina").Pay(offer(), time.Now())
	e.fac.Inject("/settle", 1, facilitatortest.Fault{Kind: facilitatortest.Reject, Reason: "insufficient_funds"})
	r := e.paidCall("echo", "k", pay, `{}`)
	pr := r.problem(t, http.StatusPaymentRequired, "payment-required")
	require.Equal(t, "insufficient_funds", pr["reason"])
	require.Equal(t, 0, e.fac.Settlements())
	require.Equal(t, int64(1), e.up.count("/ok"))
	e.checkInvariants()
}

// TestX402PendingTakeoverSettlesTheBoundPayment: a call that crashed after
// marking its payment R settling (outcome unknown) is retried after its
// lease with a new payment P2 under the same key: the action runs, P2 is
// only verified, and R, which may have moved money, is the one settled
// (once); P2 stays unsettled.
func TestX402PendingTakeoverSettlesTheBoundPayment(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	ctx := context.Background()
	payer := e.fac.Payer("hank")
	offerX := x402.Offer{Network: x402Network, Asset: x402Asset, PayTo: x402PayTo, Amount: 50000, Currency: "USDC", MaxTimeoutSeconds: 60}
	r := payer.Pay(offer(), e.clock.now())
	rp, err := x402.PaymentFor(r, offerX, e.clock.now())
	require.NoError(t, err)
	key := engine.ScopedKey(rp.Caller, "echo", "k-crash")
	canonical, err := engine.Canonicalize([]byte(`{"q":1}`))
	require.NoError(t, err)
	now := e.clock.now()
	cr, err := e.st.ClaimPayment(ctx, store.ClaimPaymentParams{ClaimParams: store.ClaimParams{Key: key, Owner: "o_crashed",
		Fingerprint: engine.Fingerprint("echo", canonical), Now: now, Lease: time.Second, TTL: time.Hour},
		Payment: store.Payment{Caller: rp.Caller, Ref: rp.Ref, Key: key, Rail: rp.Rail, Network: rp.Network, Amount: rp.Amount,
			Currency: rp.Currency, State: store.PaymentVerified, Payload: rp.Payload, Requirements: rp.Requirements,
			ValidBefore: rp.ValidBefore, CreatedAt: now, UpdatedAt: now}})
	require.NoError(t, err)
	require.Equal(t, store.OutcomeClaimed, cr.Outcome)
	require.NoError(t, e.st.MarkSettling(ctx, store.Fence{Key: key, Owner: "o_crashed", Generation: cr.Record.Generation}, rp.Ref, now))
	e.clock.advance(2 * time.Second) // the crashed owner's lease ran out

	p2 := payer.Pay(offer(), e.clock.now())
	res := e.paidCall("echo", "k-crash", p2, `{"q":1}`)
	require.Equal(t, http.StatusOK, res.status, string(res.body))
	require.True(t, settleReceipt(t, res).Success)
	require.Equal(t, 1, e.fac.Calls(r.Nonce()).Settle, "the bound payment is settled")
	require.Equal(t, 0, e.fac.Calls(p2.Nonce()).Settle, "the new one only verified")
	require.Equal(t, 1, e.fac.Calls(p2.Nonce()).Verify)
	got, err := e.st.PaymentByRef(ctx, rp.Caller, rp.Ref)
	require.NoError(t, err)
	require.Equal(t, store.PaymentSettled, got.State)
	require.Equal(t, 1, e.fac.Settlements())
	e.checkInvariants()
}

// TestX402ReplayNeedsTheSamePayment: after a settle, a payment's fields are
// public on chain; a copy with another signature does not open the answer
// without the facilitator's verify (which refuses it), and an expired copy
// of the very payment still replays the answer it paid for, while an
// expired payment pays for nothing new.
func TestX402ReplayNeedsTheSamePayment(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	payer := e.fac.Payer("ivy")
	pay := payer.Pay(offer(), e.clock.now())
	first := e.paidCall("echo", "", pay, `{"q":"secret"}`) // keyed by the nonce
	require.Equal(t, http.StatusOK, first.status, string(first.body))

	forged := pay
	forged.Payload.Signature = "0x" + strings.Repeat("00", 65)
	r := e.paidCall("echo", "", forged, `{"q":"secret"}`)
	require.Equal(t, http.StatusPaymentRequired, r.status, string(r.body))
	require.Equal(t, 2, e.fac.Calls(pay.Nonce()).Verify, "the copy was verified, and refused")

	e.clock.advance(2 * time.Minute) // the authorization expired
	again := e.paidCall("echo", "", pay, `{"q":"secret"}`)
	require.Equal(t, http.StatusOK, again.status, string(again.body))
	require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
	require.Equal(t, string(first.body), string(again.body))

	stale := payer.Pay(offer(), e.clock.now().Add(-2*time.Minute))
	r = e.paidCall("echo", "k-new", stale, `{"q":2}`)
	p := r.problem(t, http.StatusPaymentRequired, "payment-required")
	require.Equal(t, x402.ReasonValidBefore, p["reason"])
	require.Equal(t, int64(1), e.up.count("/ok"))
	require.Equal(t, 1, e.fac.Settlements())

	over := payer.Pay(offer(), e.clock.now())
	over.Payload.Authorization.Value = "50001"
	over = payer.Resign(over)
	p = e.paidCall("echo", "k-over", over, `{}`).problem(t, http.StatusPaymentRequired, "payment-required")
	require.Equal(t, x402.ReasonValue, p["reason"], "the exact scheme: no silent overpayment")
	e.checkInvariants()
}

// TestX402UnresolvedAfterExpiry: a delivered call whose settle stays
// unknown past its authorization's expiry: a refusal that an earlier
// success could explain (expired) proves nothing, so the payment stays
// pending through the grace, then is recorded as a possible loss, never
// as failed-and-free while it might have moved.
func TestX402UnresolvedAfterExpiry(t *testing.T) {
	t.Parallel()
	e := setupX402(t)
	pay := e.fac.Payer("jay").Pay(offer(), e.clock.now())
	e.fac.Inject("/settle", 2, facilitatortest.Fault{Kind: facilitatortest.Status, Status: 503})
	r := e.paidCall("echo", "k", pay, `{}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.False(t, settleReceipt(t, r).Success)

	e.clock.advance(5 * time.Minute) // expired, within the grace
	res, err := e.gw.ReconcilePayments(context.Background(), 10)
	require.NoError(t, err)
	require.Equal(t, 1, res.Pending, "an expired refusal proves nothing")
	e.clock.advance(engine.UnresolvedGrace + time.Hour)
	res, err = e.gw.ReconcilePayments(context.Background(), 10)
	require.NoError(t, err)
	require.Equal(t, 1, res.Failed)
	key := engine.ScopedKey(x402.CallerPrefix+strings.ToLower(e.fac.Payer("jay").Address), "echo", "k")
	ps, err := e.st.PaymentsByKey(context.Background(), key)
	require.NoError(t, err)
	require.Len(t, ps, 1)
	require.Equal(t, store.PaymentFailed, ps[0].State)
	require.True(t, ps[0].Delivered, "a recorded loss")
	require.Contains(t, ps[0].Reason, "unresolved")
	require.Equal(t, 0, e.fac.Settlements())
	r = e.do(http.MethodGet, "/v1/admin/attention", adminToken, nil, "")
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	losses := r.json(t)["losses"].([]any)
	require.Len(t, losses, 1, "the admin sees the loss")
	require.Equal(t, true, losses[0].(map[string]any)["delivered"])
	e.checkInvariants()
}
