//go:build !js

package main

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/pay/x402"
	"github.com/toolgate/toolgate-go/handler/pay/x402/facilitatortest"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// These tests run x402 (calls paid per request, issue 13) through the
// compiled worker in workerd on D1, against the facilitator test server on
// loopback: the worker's fetch reaches it as it reaches the upstream.

const (
	e2eX402Network = "eip155:84532" // base-sepolia in x402 v1
	e2eX402Asset   = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
	e2eX402PayTo   = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
	e2eX402Cron    = "*/15 * * * *"
	// e2eX402SlowMs is the storm tool's upstream time.
	e2eX402SlowMs = 300
	// e2eX402SettleTimeoutMs is the "brief" worker's FACILITATOR_TIMEOUT_MS:
	// a settle that hangs runs out after it.
	e2eX402SettleTimeoutMs = 1500
)

// x402Upstream is a loopback tool provider that counts calls per path; it
// waits ?delay= before answering, and /flaky fails its first call.
type x402Upstream struct {
	*httptest.Server
	mu    sync.Mutex
	calls map[string]int
}

func newX402Upstream(t *testing.T) *x402Upstream {
	t.Helper()
	u := &x402Upstream{calls: map[string]int{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.calls[r.URL.Path]++
		n := u.calls[r.URL.Path]
		u.mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil {
			time.Sleep(d)
		}
		if r.URL.Path == "/flaky" && n == 1 {
			http.Error(w, "first call fails", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q,"input":%s}`, r.URL.Path, body)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *x402Upstream) count(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[path]
}

// total is the number of upstream calls on every path.
func (u *x402Upstream) total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.calls {
		n += c
	}
	return n
}

// tools is a catalog whose tools are sold per call with x402 (0.05 USD:
// 50000 atomic units of a 6-decimal USDC) and with a prepaid balance.
func (u *x402Upstream) tools() string {
	price := fmt.Sprintf(`"x402":{"network":%q,"asset":%q,"payTo":%q,"extra":{"name":"USDC","version":"2"}}`,
		e2eX402Network, e2eX402Asset, e2eX402PayTo)
	tool := func(name, path, extra string) string {
		return fmt.Sprintf(`{"name":%q,"description":"e2e x402 %s","price":"0.05","currency":"USD",
			"upstream":{"url":"%s%s"},"timeout":"10s",%s%s}`, name, name, u.URL, path, price, extra)
	}
	return `{"tools":[` + strings.Join([]string{
		tool("echo", "/echo", ""),
		// A long lease: on a starved machine (a storm of 50 per-request Go
		// runtimes on two cores) a 10 s lease can run out without a
		// heartbeat, and a takeover runs the upstream again, by design;
		// this storm is about duplicates, not about lost leases.
		tool("storm", fmt.Sprintf("/storm?delay=%dms", e2eX402SlowMs), `,"lease":"60s"`),
		tool("flaky", "/flaky", ""),
		tool("pending", "/pending", ""),
		tool("loss", "/loss", ""),
		tool("v1", "/v1", ""),
	}, ",") + `]}`
}

// e2eOffer is what the catalog's tools ask for, as x402 requirements.
func e2eOffer() x402.PaymentRequirements {
	return x402.Offer{Network: e2eX402Network, Asset: e2eX402Asset, PayTo: e2eX402PayTo, Amount: 50000,
		Currency: "USDC", MaxTimeoutSeconds: 60, Extra: json.RawMessage(`{"name":"USDC","version":"2"}`)}.Requirements()
}

// paidHeaders are the headers of a call paying with p (PAYMENT-SIGNATURE)
// under key ("" sends no Idempotency-Key).
func paidHeaders(t *testing.T, p x402.PaymentPayload, key string) map[string]string {
	t.Helper()
	v, err := x402.Encode(p)
	require.NoError(t, err)
	h := map[string]string{"Content-Type": "application/json", x402.HeaderPaymentSignature: v}
	if key != "" {
		h["Idempotency-Key"] = key
	}
	return h
}

// payCall calls tool on base with hdr, without a caller key.
func payCall(t *testing.T, base, tool string, hdr map[string]string, body string) (*http.Response, []byte) {
	t.Helper()
	return client{t: t, base: base}.do(http.MethodPost, "/v1/tools/"+tool+"/call", []byte(body), hdr)
}

// settleReceiptOf decodes the answer's header (PAYMENT-RESPONSE or
// X-PAYMENT-RESPONSE).
func settleReceiptOf(t *testing.T, res *http.Response, header string) x402.SettleResponse {
	t.Helper()
	v := res.Header.Get(header)
	require.NotEmpty(t, v, header)
	sr, err := x402.DecodeSettleResponse(v)
	require.NoError(t, err)
	return sr
}

// problemOf decodes a problem+json answer of status whose type ends in
// kind.
func problemOf(t *testing.T, res *http.Response, body []byte, status int, kind string) map[string]any {
	t.Helper()
	require.Equal(t, status, res.StatusCode, string(body))
	require.Equal(t, "application/problem+json", res.Header.Get("Content-Type"))
	var p map[string]any
	require.NoError(t, json.Unmarshal(body, &p))
	require.True(t, strings.HasSuffix(fmt.Sprint(p["type"]), "/problems/"+kind), "type %v, want %s", p["type"], kind)
	return p
}

// paymentRow is a payment's row in the D1 file.
type paymentRow struct {
	State     string
	Delivered int
	Tx        string
	Reason    string
	Attempts  int
	Key       string
}

// readPayment reads p's row; ok is false if there is none.
func readPayment(t *testing.T, db *sql.DB, p x402.PaymentPayload) (row paymentRow, ok bool) {
	t.Helper()
	err := db.QueryRow(`SELECT state, delivered, tx, reason, attempts, idem_key FROM payments WHERE caller = ? AND ref = ?`,
		x402.CallerPrefix+p.Payer(), p.AuthorizationKey(e2eX402Asset)).
		Scan(&row.State, &row.Delivered, &row.Tx, &row.Reason, &row.Attempts, &row.Key)
	if err == sql.ErrNoRows {
		return row, false
	}
	require.NoError(t, err)
	return row, true
}

func mustPayment(t *testing.T, db *sql.DB, p x402.PaymentPayload) paymentRow {
	t.Helper()
	row, ok := readPayment(t, db, p)
	require.True(t, ok, "no payments row for nonce %s", p.Nonce())
	return row
}

func countRows(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM `+table).Scan(&n))
	return n
}

// TestE2EX402 sells tools per call with x402 through the compiled worker:
// two isolates (w0, w1) and a third with a short facilitator timeout
// ("brief") on one D1, against the facilitator test server, in both of the
// shim's Go runtime modes (one after the other: the storm's figures are
// its own).
func TestE2EX402(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{edgetest.ModePersistent, edgetest.ModePerRequest} {
		t.Run(mode, func(t *testing.T) { testX402(t, mode) })
	}
}

// testX402 runs the x402 cases in order: they share the facilitator, whose
// injected faults are global.
func testX402(t *testing.T, mode string) {
	fac, err := facilitatortest.Start()
	require.NoError(t, err)
	t.Cleanup(func() { _ = fac.Close() })
	up := newX402Upstream(t)
	edge := edgetest.Start(t, edgetest.Options{
		Mode:          mode,
		Workers:       []string{"w0", "w1", "brief"},
		MigrationsDir: "store/sqlstore/migrations",
		// 5 s rather than the default 15 s: a cron event lasts until the
		// Go timer of its last facilitator call's timeout fires (the shim
		// holds the event for Go's pending wake-up), and Scheduled waits
		// for it.
		Vars: map[string]string{"TOOLS": up.tools(), "ADMIN_TOKEN": e2eAdminToken,
			"FACILITATOR_URL": fac.URL(), "FACILITATOR_TIMEOUT_MS": "5000",
			// Duplicates wait for the storm's call however starved the
			// machine is (the default, 5 s, answers 409 after it).
			"WAIT_FOR_IN_PROGRESS_MS": "60000"},
		WorkerVars: map[string]map[string]string{"brief": {"FACILITATOR_TIMEOUT_MS": fmt.Sprint(e2eX402SettleTimeoutMs)}},
	})
	w0, w1, brief := edge.URL("w0"), edge.URL("w1"), edge.URL("brief")
	db := edge.OpenD1(t)
	ctx := context.Background()

	t.Run("no payment and no key: 402 with the offer", func(t *testing.T) {
		res, body := client{t: t, base: w0}.call("echo", "k-offer", `{"q":1}`)
		p := problemOf(t, res, body, http.StatusPaymentRequired, "payment-required")
		doc, err := x402.DecodePaymentRequired(res.Header.Get(x402.HeaderPaymentRequired))
		require.NoError(t, err)
		require.Equal(t, x402.Version, doc.X402Version)
		require.Len(t, doc.Accepts, 1)
		got, want := doc.Accepts[0], e2eOffer()
		require.JSONEq(t, string(want.Extra), string(got.Extra))
		got.Extra, want.Extra = nil, nil
		require.Equal(t, want, got, "the tool's offer")
		require.Equal(t, w0+"/v1/tools/echo/call", doc.Resource.URL)
		require.Contains(t, doc.Extensions, x402.ExtensionPaymentIdentifier)
		member, err := json.Marshal(p["x402"])
		require.NoError(t, err)
		header, err := json.Marshal(doc)
		require.NoError(t, err)
		require.JSONEq(t, string(header), string(member), "the problem's x402 member is the header's document")
		require.Less(t, len(res.Header.Get(x402.HeaderPaymentRequired)), 2048)
		// Every isolate offers the same (and is warm for the storm).
		for _, base := range []string{w1, brief} {
			res, body := client{t: t, base: base}.call("echo", "k-offer", `{"q":1}`)
			problemOf(t, res, body, http.StatusPaymentRequired, "payment-required")
			other, err := x402.DecodePaymentRequired(res.Header.Get(x402.HeaderPaymentRequired))
			require.NoError(t, err)
			require.Equal(t, doc.Accepts, other.Accepts)
		}
		require.Equal(t, 0, up.total())
		require.Equal(t, 0, countRows(t, db, "payments"))
	})

	t.Run("storm of 50 with one payment and one key across two isolates", func(t *testing.T) {
		pay := fac.Payer("storm").Pay(e2eOffer(), time.Now())
		hdr := paidHeaders(t, pay, "storm-1")
		settled := fac.Settlements()
		const n = 50
		type answer struct {
			status   int
			body     string
			receipt  string
			replayed bool
			err      error
		}
		answers := make([]answer, n)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := client{base: []string{w0, w1}[i%2]}
				res, b, err := c.try(http.MethodPost, "/v1/tools/storm/call", []byte(`{"q":"storm"}`), hdr)
				if err != nil {
					answers[i].err = err
					return
				}
				answers[i] = answer{status: res.StatusCode, body: string(b), receipt: res.Header.Get(x402.HeaderPaymentResponse),
					replayed: res.Header.Get("Idempotent-Replayed") == "true"}
			}()
		}
		wg.Wait()
		wall := time.Since(start)
		calls := fac.Calls(pay.Nonce())
		statuses, replayed := map[int]int{}, 0
		for _, a := range answers {
			statuses[a.status]++
			if a.replayed {
				replayed++
			}
		}
		summary := fmt.Sprintf("wall %v, statuses %v, replayed %d, upstream %d, facilitator %+v",
			wall, statuses, replayed, up.count("/storm"), calls)
		for i, a := range answers {
			require.NoError(t, a.err, i)
			require.Equal(t, http.StatusOK, a.status, "%d: %s (%s)", i, a.body, summary)
			require.Equal(t, answers[0].body, a.body, "%d: byte-identical answers", i)
			require.Equal(t, answers[0].receipt, a.receipt, "%d: the same PAYMENT-RESPONSE", i)
		}
		require.Equal(t, n-1, replayed, summary)
		sr, err := x402.DecodeSettleResponse(answers[0].receipt)
		require.NoError(t, err)
		require.True(t, sr.Success, sr)
		require.NotEmpty(t, sr.Transaction)

		require.Equal(t, 1, up.count("/storm"), "one execution: %s", summary)
		require.Equal(t, facilitatortest.Calls{Verify: 1, Settle: 1, Settled: 1}, calls, "one verify, one settle: %s", summary)
		require.Equal(t, settled+1, fac.Settlements())
		row := mustPayment(t, db, pay)
		require.Equal(t, paymentRow{State: "settled", Delivered: 1, Tx: sr.Transaction, Key: row.Key}, row)
		checkLedger(t, db, "")
		t.Logf("x402 storm (%s): %d calls over 2 isolates in %v; upstream %d ms; wall/upstream %.1f; verify %d, settle %d, settled %d",
			mode, n, wall.Round(time.Millisecond), e2eX402SlowMs, float64(wall)/float64(e2eX402SlowMs*time.Millisecond),
			calls.Verify, calls.Settle, calls.Settled)
	})

	t.Run("one payment under two keys: the second is 409 payment-reused", func(t *testing.T) {
		pay := fac.Payer("reuse").Pay(e2eOffer(), time.Now())
		settled := fac.Settlements()
		res, body := payCall(t, w0, "echo", paidHeaders(t, pay, "reuse-a"), `{"q":"a"}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		require.True(t, settleReceiptOf(t, res, x402.HeaderPaymentResponse).Success)
		res, body = payCall(t, w1, "echo", paidHeaders(t, pay, "reuse-b"), `{"q":"b"}`)
		problemOf(t, res, body, http.StatusConflict, "payment-reused")
		require.Empty(t, res.Header.Get(x402.HeaderPaymentResponse))

		require.Equal(t, 1, up.count("/echo"), "the second key never runs")
		require.Equal(t, facilitatortest.Calls{Verify: 1, Settle: 1, Settled: 1}, fac.Calls(pay.Nonce()))
		require.Equal(t, settled+1, fac.Settlements())
		row := mustPayment(t, db, pay)
		require.Equal(t, "settled", row.State)
		caller := x402.CallerPrefix + pay.Payer()
		require.Equal(t, engine.ScopedKey(caller, "echo", "reuse-a"), row.Key, "bound to the first key")
		var records int
		require.NoError(t, db.QueryRow(`SELECT count(*) FROM idem_records WHERE key = ?`,
			engine.ScopedKey(caller, "echo", "reuse-b")).Scan(&records))
		require.Equal(t, 0, records, "the second key was never claimed")
		checkLedger(t, db, "")
	})

	t.Run("upstream 500 settles nothing; the retry settles once", func(t *testing.T) {
		pay := fac.Payer("flaky").Pay(e2eOffer(), time.Now())
		settled := fac.Settlements()
		res, body := payCall(t, w0, "flaky", paidHeaders(t, pay, "flaky-1"), `{}`)
		problemOf(t, res, body, http.StatusBadGateway, "upstream-failed")
		require.Equal(t, 0, fac.Calls(pay.Nonce()).Settle, "no settle after a failure")
		require.Equal(t, settled, fac.Settlements())
		require.Equal(t, "not_charged", mustPayment(t, db, pay).State)
		checkLedger(t, db, "")

		res, body = payCall(t, w1, "flaky", paidHeaders(t, pay, "flaky-1"), `{}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		sr := settleReceiptOf(t, res, x402.HeaderPaymentResponse)
		require.True(t, sr.Success, sr)
		require.Equal(t, 2, up.count("/flaky"))
		calls := fac.Calls(pay.Nonce())
		require.Equal(t, 1, calls.Settle, "exactly one settle")
		require.Equal(t, 1, calls.Settled)
		require.Equal(t, settled+1, fac.Settlements())
		row := mustPayment(t, db, pay)
		require.Equal(t, [3]any{"settled", 1, sr.Transaction}, [3]any{row.State, row.Delivered, row.Tx})
		checkLedger(t, db, "")
	})

	t.Run("settle times out: delivered and pending, then the cron settles once", func(t *testing.T) {
		t.Cleanup(fac.ClearFaults)
		pay := fac.Payer("pending").Pay(e2eOffer(), time.Now())
		hdr := paidHeaders(t, pay, "pending-1")
		settled := fac.Settlements()
		fac.Inject("/settle", 1, facilitatortest.Fault{Kind: facilitatortest.Hang})
		res, body := payCall(t, brief, "pending", hdr, `{"q":"pending"}`)
		require.Equal(t, http.StatusOK, res.StatusCode, "the answer is delivered: %s", body)
		sr := settleReceiptOf(t, res, x402.HeaderPaymentResponse)
		require.False(t, sr.Success)
		require.Equal(t, "settlement_pending", sr.ErrorReason)
		require.Equal(t, facilitatortest.Calls{Verify: 1, Settle: 1}, fac.Calls(pay.Nonce()), "the settle hung: nothing moved")
		require.Equal(t, settled, fac.Settlements())
		row := mustPayment(t, db, pay)
		require.Equal(t, [2]any{"settlement_pending", 1}, [2]any{row.State, row.Delivered})
		checkLedger(t, db, "")

		// The cron, on another isolate, settles the same payment.
		require.NoError(t, edge.Scheduled(ctx, "w1", e2eX402Cron))
		calls := fac.Calls(pay.Nonce())
		require.Equal(t, 2, calls.Settle)
		require.Equal(t, 1, calls.Settled)
		require.Equal(t, settled+1, fac.Settlements(), "settled once")
		row = mustPayment(t, db, pay)
		require.Equal(t, [3]any{"settled", 1, 1}, [3]any{row.State, row.Delivered, row.Attempts})
		require.NotEmpty(t, row.Tx)

		res, again := payCall(t, w0, "pending", hdr, `{"q":"pending"}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(again))
		require.Equal(t, "true", res.Header.Get("Idempotent-Replayed"))
		require.Equal(t, string(body), string(again))
		sr = settleReceiptOf(t, res, x402.HeaderPaymentResponse)
		require.True(t, sr.Success, sr)
		require.Equal(t, row.Tx, sr.Transaction)

		// Nothing is due any more: another cron settles nothing.
		require.NoError(t, edge.Scheduled(ctx, "w0", e2eX402Cron))
		require.Equal(t, 2, fac.Calls(pay.Nonce()).Settle)
		require.Equal(t, 1, up.count("/pending"))
		checkLedger(t, db, "")
	})

	t.Run("settle refused after delivery: a recorded loss", func(t *testing.T) {
		t.Cleanup(fac.ClearFaults)
		pay := fac.Payer("loss").Pay(e2eOffer(), time.Now())
		hdr := paidHeaders(t, pay, "loss-1")
		settled := fac.Settlements()
		fac.Inject("/settle", 1, facilitatortest.Fault{Kind: facilitatortest.Hang})
		res, body := payCall(t, brief, "loss", hdr, `{"q":"loss"}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		require.Equal(t, "settlement_pending", settleReceiptOf(t, res, x402.HeaderPaymentResponse).ErrorReason)
		require.Equal(t, "settlement_pending", mustPayment(t, db, pay).State)

		// A refusal that an earlier success could not explain (a spent
		// balance or an expiry could: those stay pending, see
		// engine.ReconcilePayments) is definitive.
		fac.Inject("/settle", 1, facilitatortest.Fault{Kind: facilitatortest.Reject, Reason: x402.ReasonSignature})
		require.NoError(t, edge.Scheduled(ctx, "w0", e2eX402Cron))
		calls := fac.Calls(pay.Nonce())
		require.Equal(t, facilitatortest.Calls{Verify: 1, Settle: 2}, calls)
		require.Equal(t, settled, fac.Settlements(), "nothing moved")
		row := mustPayment(t, db, pay)
		require.Equal(t, paymentRow{State: "settlement_failed", Delivered: 1, Reason: x402.ReasonSignature,
			Attempts: 1, Key: row.Key}, row, "delivered and never paid: a loss")

		// It is final: the cron does not try again, and a replay says so.
		require.NoError(t, edge.Scheduled(ctx, "w1", e2eX402Cron))
		require.Equal(t, 2, fac.Calls(pay.Nonce()).Settle)
		res, again := payCall(t, w1, "loss", hdr, `{"q":"loss"}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(again))
		require.Equal(t, string(body), string(again))
		sr := settleReceiptOf(t, res, x402.HeaderPaymentResponse)
		require.False(t, sr.Success)
		require.Equal(t, "settlement_failed", sr.ErrorReason)
		require.Equal(t, 1, up.count("/loss"))
		checkLedger(t, db, "")
	})

	t.Run("refused payments execute and settle nothing", func(t *testing.T) {
		payer := fac.Payer("mallory")
		now := time.Now()
		wrongTo := payer.Pay(e2eOffer(), now)
		wrongTo.Accepted.PayTo = "0x0000000000000000000000000000000000000001"
		wrongTo.Payload.Authorization.To = wrongTo.Accepted.PayTo
		wrongTo = payer.Resign(wrongTo)
		otherNet := e2eOffer()
		otherNet.Network = "eip155:8453"
		wrongNet := payer.Pay(otherNet, now)
		otherAsset := e2eOffer()
		otherAsset.Asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
		wrongAsset := payer.Pay(otherAsset, now)
		expired := payer.Pay(e2eOffer(), now.Add(-time.Hour))
		cheap := payer.Pay(e2eOffer(), now)
		cheap.Payload.Authorization.Value = "49999"
		cheap = payer.Resign(cheap)
		encode := func(p x402.PaymentPayload) string {
			v, err := x402.Encode(p)
			require.NoError(t, err)
			return v
		}
		v3 := payer.Pay(e2eOffer(), now)
		v3.X402Version = 3

		settled, executed := fac.Settlements(), up.total()
		payments, records := countRows(t, db, "payments"), countRows(t, db, "idem_records")
		cases := []struct {
			name, header, reason string
			nonce                string
		}{
			{"garbled base64", "not base64!", x402.ReasonInvalidPayload, ""},
			{"not JSON", base64.StdEncoding.EncodeToString([]byte(`{"x402Version":`)), x402.ReasonInvalidPayload, ""},
			{"wrong version", encode(v3), x402.ReasonInvalidVersion, v3.Nonce()},
			{"wrong payTo", encode(wrongTo), x402.ReasonRecipientMismatch, wrongTo.Nonce()},
			{"wrong network", encode(wrongNet), x402.ReasonInvalidNetwork, wrongNet.Nonce()},
			{"wrong asset", encode(wrongAsset), x402.ReasonAssetMismatch, wrongAsset.Nonce()},
			{"expired window", encode(expired), x402.ReasonValidBefore, expired.Nonce()},
			{"amount below price", encode(cheap), x402.ReasonValue, cheap.Nonce()},
		}
		for i, c := range cases {
			res, body := payCall(t, []string{w0, w1}[i%2], "echo", map[string]string{x402.HeaderPaymentSignature: c.header,
				"Idempotency-Key": "bad-" + fmt.Sprint(i)}, `{}`)
			p := problemOf(t, res, body, http.StatusPaymentRequired, "payment-required")
			require.Equal(t, c.reason, p["reason"], "%s: %s", c.name, body)
			doc, err := x402.DecodePaymentRequired(res.Header.Get(x402.HeaderPaymentRequired))
			require.NoError(t, err, c.name)
			require.Equal(t, c.reason, doc.Error, c.name)
			if c.nonce != "" {
				require.Equal(t, facilitatortest.Calls{}, fac.Calls(c.nonce), "%s: refused before the facilitator", c.name)
			}
		}
		require.Equal(t, payments, countRows(t, db, "payments"), "no payment bound")
		require.Equal(t, records, countRows(t, db, "idem_records"), "no key claimed")

		// A forged signature passes the gateway's checks and is refused by
		// the facilitator's verify, with its reason.
		forged := payer.Pay(e2eOffer(), now)
		forged.Payload.Signature = "0x" + strings.Repeat("ab", 65)
		res, body := payCall(t, w0, "echo", paidHeaders(t, forged, "bad-forged"), `{}`)
		p := problemOf(t, res, body, http.StatusPaymentRequired, "payment-required")
		require.Equal(t, x402.ReasonSignature, p["reason"])
		require.Equal(t, facilitatortest.Calls{Verify: 1}, fac.Calls(forged.Nonce()))
		row := mustPayment(t, db, forged)
		require.Equal(t, [2]any{"not_charged", 0}, [2]any{row.State, row.Delivered})

		require.Equal(t, executed, up.total(), "nothing executed")
		require.Equal(t, settled, fac.Settlements(), "nothing settled")
		checkLedger(t, db, "")
	})

	t.Run("a v1 X-PAYMENT pays and is answered X-PAYMENT-RESPONSE", func(t *testing.T) {
		pay := fac.Payer("v1").Pay(e2eOffer(), time.Now())
		v1, err := json.Marshal(map[string]any{"x402Version": 1, "scheme": x402.SchemeExact, "network": "base-sepolia",
			"payload": pay.Payload})
		require.NoError(t, err)
		settled := fac.Settlements()
		hdr := map[string]string{x402.HeaderPaymentV1: base64.StdEncoding.EncodeToString(v1), "Idempotency-Key": "v1-1"}
		res, body := payCall(t, w1, "v1", hdr, `{"q":"v1"}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		v2r := settleReceiptOf(t, res, x402.HeaderPaymentResponse)
		v1r := settleReceiptOf(t, res, x402.HeaderPaymentRespV1)
		require.True(t, v1r.Success, v1r)
		require.NotEmpty(t, v1r.Transaction)
		require.Equal(t, strings.ToLower(pay.Payload.Authorization.From), strings.ToLower(v1r.Payer))
		require.Equal(t, "base-sepolia", v1r.Network, "a v1 answer names the network as v1 does")
		require.Equal(t, e2eX402Network, v2r.Network)
		require.Equal(t, v1r.Transaction, v2r.Transaction)
		require.Equal(t, facilitatortest.Calls{Verify: 1, Settle: 1, Settled: 1}, fac.Calls(pay.Nonce()))
		require.Equal(t, settled+1, fac.Settlements())
		require.Equal(t, 1, up.count("/v1"))

		res, again := payCall(t, w0, "v1", hdr, `{"q":"v1"}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(again))
		require.Equal(t, "true", res.Header.Get("Idempotent-Replayed"))
		require.Equal(t, v1r, settleReceiptOf(t, res, x402.HeaderPaymentRespV1))
		require.Equal(t, 1, fac.Calls(pay.Nonce()).Settle)
		require.Equal(t, "settled", mustPayment(t, db, pay).State)
		checkLedger(t, db, "")
	})
}
