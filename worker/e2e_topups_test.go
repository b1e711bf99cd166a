//go:build !js

package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/pay/stripe/stripemock"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

const e2eWebhookSecret = "whsec_e2e_test_secret"

// TestE2ETopups runs the Stripe rail through the compiled worker in
// workerd: Checkout Sessions are created on Stripe's official mock server
// (stripe-mock), and the webhook events are signed by stripe-go, as Stripe
// signs them. A caller refused with 402 tops up, the webhook credits it
// exactly once however the events arrive, and the same paid call with the
// same key then goes through; a refund after the money was spent leaves a
// debt that refuses paid calls until a credit pays it.
func TestE2ETopups(t *testing.T) {
	t.Parallel()
	stripeAPI := stripemock.Start(t)
	up := newUpstream(t)
	edge := edgetest.Start(t, edgetest.Options{
		Workers:       []string{"w0", "w1", "off"},
		MigrationsDir: "store/sqlstore/migrations",
		Vars: map[string]string{"TOOLS": up.tools(), "ADMIN_TOKEN": e2eAdminToken,
			"STRIPE_SECRET_KEY": "sk_test_e2e", "STRIPE_WEBHOOK_SECRET": "whsec_old_rotated_out," + e2eWebhookSecret,
			"STRIPE_API_BASE": stripeAPI, "TOPUP_SUCCESS_URL": "https://agents.example/paid",
			"TOPUP_CANCEL_URL": "https://agents.example/cancelled"},
		WorkerVars: map[string]map[string]string{"off": {"STRIPE_SECRET_KEY": "", "STRIPE_WEBHOOK_SECRET": ""}},
	})
	w0, w1 := edge.URL("w0"), edge.URL("w1")
	db := edge.OpenD1(t)

	dora := newCaller(t, w0, "dora", "")
	admin := client{t: t, base: w0, key: e2eAdminToken}

	// 402, with what to do about it.
	res, body := dora.call("echo", "paid-1", `{"q":"after top-up"}`)
	require.Equal(t, http.StatusPaymentRequired, res.StatusCode, string(body))
	var p402 struct {
		Shortfall string `json:"shortfall"`
		TopUp     struct {
			Method, Href, Currency, Minimum, Maximum string
		} `json:"topUp"`
	}
	require.NoError(t, json.Unmarshal(body, &p402))
	require.Equal(t, "0.05", p402.Shortfall)
	require.Equal(t, "POST", p402.TopUp.Method)
	require.Equal(t, "/v1/topups", p402.TopUp.Href)
	require.Equal(t, "USD", p402.TopUp.Currency)
	require.Equal(t, "5.00", p402.TopUp.Minimum)
	require.Equal(t, 0, up.count("/echo"))

	// The top-up, and its replay.
	topup := func(c client, base, key, body string) (*http.Response, map[string]any) {
		t.Helper()
		c.base = base
		res, b := c.do(http.MethodPost, "/v1/topups", []byte(body), map[string]string{"Idempotency-Key": key})
		var m map[string]any
		require.NoError(t, json.Unmarshal(b, &m), string(b))
		return res, m
	}
	res, created := topup(dora, w0, "top-1", `{"amount":"5.00","currency":"USD"}`)
	require.Equal(t, http.StatusCreated, res.StatusCode, created)
	id, _ := created["id"].(string)
	require.True(t, strings.HasPrefix(id, "tu_"), created)
	require.Equal(t, "open", created["status"])
	require.Contains(t, created["url"], "https://checkout.stripe.com/")
	require.Equal(t, "/v1/topups/"+id, res.Header.Get("Location"))

	res, again := topup(dora, w1, "top-1", `{"amount":"5.00","currency":"USD"}`)
	require.Equal(t, http.StatusOK, res.StatusCode, again)
	require.Equal(t, "true", res.Header.Get("Idempotent-Replayed"))
	require.Equal(t, created["id"], again["id"])
	require.Equal(t, created["url"], again["url"])

	res, mismatch := topup(dora, w0, "top-1", `{"amount":"6.00","currency":"USD"}`)
	require.Equal(t, http.StatusUnprocessableEntity, res.StatusCode, mismatch)
	for _, bad := range []string{`{"amount":"4.99","currency":"USD"}`, `{"amount":"1000.01","currency":"USD"}`,
		`{"amount":"5.00","currency":"EUR"}`, `{"amount":"5","currency":"JPY"}`, `{"amount":"-5.00","currency":"USD"}`,
		`{"amount":"5.00"}`, `{"amount":"5.00","currency":"USD","extra":1}`, `{"amount":"5.00","currency":"USD","successUrl":"javascript:alert(1)"}`} {
		res, m := topup(dora, w0, "top-bad-"+fmt.Sprint(len(bad)), bad)
		require.Equal(t, http.StatusBadRequest, res.StatusCode, "%s: %v", bad, m)
		require.Contains(t, m["type"], "/problems/invalid-", bad)
	}
	var topups int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM topups WHERE caller = 'dora'`).Scan(&topups))
	require.Equal(t, 1, topups, "refused top-ups store nothing")

	res, off := topup(dora, edge.URL("off"), "top-off", `{"amount":"5.00","currency":"USD"}`)
	require.Equal(t, http.StatusNotImplemented, res.StatusCode, off)
	require.Contains(t, off["type"], "/problems/topups-disabled")

	// Another caller cannot see it.
	eve := newCaller(t, w0, "eve", "")
	res, b := eve.do(http.MethodGet, "/v1/topups/"+id, nil, nil)
	require.Equal(t, http.StatusNotFound, res.StatusCode, string(b))

	var session string
	require.NoError(t, db.QueryRow(`SELECT session_id FROM topups WHERE caller = 'dora' AND id = ?`, id).Scan(&session))
	require.True(t, strings.HasPrefix(session, "cs_"), session)

	webhook := func(base string, body []byte, header string) (int, string) {
		req, err := http.NewRequest(http.MethodPost, base+"/v1/webhooks/stripe", strings.NewReader(string(body)))
		require.NoError(t, err)
		if header != "" {
			req.Header.Set("Stripe-Signature", header)
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res.StatusCode, string(b)
	}

	// Bad webhooks change nothing.
	entries := countEntries(t, db)
	obj := stripemock.CheckoutSession(session, "dora", id, 500, "usd", "paid", "complete", "pi_e2e_1")
	good, sig := stripemock.SignedEvent(t, e2eWebhookSecret, "checkout.session.completed", obj, time.Now())
	_, wrongSig := stripemock.SignedEvent(t, "whsec_wrong", "checkout.session.completed", obj, time.Now())
	oldBody, oldSig := stripemock.SignedEvent(t, e2eWebhookSecret, "checkout.session.completed", obj, time.Now().Add(-time.Hour))
	tampered := []byte(strings.Replace(string(good), `"amount_total":500`, `"amount_total":50000`, 1))
	require.NotEqual(t, string(good), string(tampered))
	for name, c := range map[string]struct {
		body   []byte
		header string
	}{
		"tampered body":    {tampered, sig},
		"wrong secret":     {good, wrongSig},
		"old timestamp":    {oldBody, oldSig},
		"missing header":   {good, ""},
		"garbage header":   {good, "t=abc,v1=zz"},
		"unparseable body": {[]byte(`{"id":`), sig},
	} {
		status, out := webhook(w0, c.body, c.header)
		require.Equal(t, http.StatusBadRequest, status, "%s: %s", name, out)
		require.Contains(t, out, "/problems/invalid-webhook", name)
	}
	require.Equal(t, entries, countEntries(t, db), "bad webhooks move no money")

	// The storm: one event 20 times at once over two isolates, and the
	// session's other success event: one credit.
	succeeded, succeededSig := stripemock.SignedEvent(t, e2eWebhookSecret, "checkout.session.async_payment_succeeded", obj, time.Now())
	var wg sync.WaitGroup
	statuses := make(chan int, 21)
	for i := 0; i < 21; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			base := []string{w0, w1}[i%2]
			body, header := good, sig
			if i == 20 {
				body, header = succeeded, succeededSig
			}
			status, _ := webhook(base, body, header)
			statuses <- status
		}(i)
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		require.Equal(t, http.StatusOK, s)
	}
	require.Equal(t, int64(500), checkLedger(t, db, "dora"))
	var credits int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM ledger_entries WHERE caller = 'dora' AND kind = 'credit'`).Scan(&credits))
	require.Equal(t, 1, credits, "one credit for one payment")
	res, b = dora.do(http.MethodGet, "/v1/topups/"+id, nil, nil)
	require.Equal(t, http.StatusOK, res.StatusCode, string(b))
	require.Contains(t, string(b), `"status":"credited"`)
	require.Contains(t, string(b), `"credited":"5.00"`)

	// The same paid call, the same key: it goes through now, once.
	res, body = dora.call("echo", "paid-1", `{"q":"after top-up"}`)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	require.Equal(t, 1, up.count("/echo"))
	require.Equal(t, int64(495), checkLedger(t, db, "dora"))

	// Unknown types are acknowledged and ignored.
	cust, custSig := stripemock.SignedEvent(t, e2eWebhookSecret, "customer.created", map[string]any{"id": "cus_1", "object": "customer"}, time.Now())
	status, out := webhook(w1, cust, custSig)
	require.Equal(t, http.StatusOK, status, out)
	require.Contains(t, out, `"ignored"`)

	// A full refund after 0.05 was spent: 4.95 taken back, 0.05 owed.
	charge := stripemock.Charge("ch_e2e_1", "pi_e2e_1", 500, 500, "usd", nil)
	refund, refundSig := stripemock.SignedEvent(t, e2eWebhookSecret, "charge.refunded", charge, time.Now())
	status, out = webhook(w0, refund, refundSig)
	require.Equal(t, http.StatusOK, status, out)
	require.Equal(t, int64(0), checkLedger(t, db, "dora"))
	var owed int64
	require.NoError(t, db.QueryRow(`SELECT owed FROM balances WHERE caller = 'dora' AND currency = 'USD'`).Scan(&owed))
	require.Equal(t, int64(5), owed)
	res, b = dora.do(http.MethodGet, "/v1/topups/"+id, nil, nil)
	require.Equal(t, http.StatusOK, res.StatusCode, string(b))
	require.Contains(t, string(b), `"status":"refunded"`)
	require.Contains(t, string(b), `"reversed":"5.00"`)
	status, out = webhook(w1, refund, refundSig) // redelivered
	require.Equal(t, http.StatusOK, status, out)
	require.Equal(t, int64(0), checkLedger(t, db, "dora"))

	// While it owes, paid calls are refused, and say so.
	res, body = dora.call("echo", "paid-2", `{"q":2}`)
	require.Equal(t, http.StatusPaymentRequired, res.StatusCode, string(body))
	require.Contains(t, string(body), `"owed":"0.05"`)
	require.Equal(t, 1, up.count("/echo"))

	// A credit pays the debt first; then calls go through.
	res, b = admin.do(http.MethodPost, "/v1/admin/credits", []byte(`{"caller":"dora","amount":"1.00","currency":"USD","reference":"after-refund"}`), nil)
	require.Equal(t, http.StatusCreated, res.StatusCode, string(b))
	require.Equal(t, int64(95), checkLedger(t, db, "dora"))
	res, body = dora.call("echo", "paid-2", `{"q":2}`)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	require.Equal(t, int64(90), checkLedger(t, db, "dora"))
	require.Equal(t, 2, up.count("/echo"))
}

func countEntries(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM ledger_entries`).Scan(&n))
	return n
}
