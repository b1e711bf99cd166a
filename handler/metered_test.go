//go:build !js

package handler_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler"
	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/store"
)

// withMetered serves metered tools over e's upstream: max 1.00, 0.001 per
// unit, the upstream reporting 270 units ("used"), nothing ("silent"),
// garbage ("garbled"); and one failing ("failing") and one rejecting
// ("rejecting").
func withMetered(t *testing.T) option {
	return func(cfg *handler.Config) {
		base := cfg.Catalog.Tools()[0].URL // .../ok
		base = base[:len(base)-len("/ok")]
		tool := func(name, path string) string {
			return fmt.Sprintf(`{"name": %q, "description": "metered", "price": {"max": "1.00", "per": "0.001"},
				"currency": "USD", "upstream": {"url": "%s%s"}}`, name, base, path)
		}
		doc := `{"tools": [` + tool("used", "/metered?units=270") + "," + tool("silent", "/metered") + "," +
			tool("garbled", "/metered?units=lots") + "," + tool("failing", "/fail") + "," + tool("rejecting", "/bad") + `]}`
		c, err := catalog.ParseCatalog([]byte(doc))
		require.NoError(t, err)
		cfg.Catalog = c
	}
}

// TestMeteredCapturesWhatWasUsed: a metered call holds the maximum with
// its claim and, with its Complete, captures the units used times the
// price per unit and releases the rest: 2 round trips, as a fixed price;
// the replay carries the same receipt and moves nothing.
func TestMeteredCapturesWhatWasUsed(t *testing.T) {
	t.Parallel()
	e := setup(t, withMetered(t))
	alice := e.newCaller("alice", "5.00")
	require.Equal(t, http.StatusOK, e.do(http.MethodGet, "/v1/balance", alice.key, nil, "").status) // caches the caller
	before := e.db.Count()
	r := e.call(alice.key, "used", "k1", `{}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.EqualValues(t, 2, e.db.Count()-before, "claim and hold (one batch), complete and capture (one batch)")
	rc := receiptIn(t, r)
	require.Equal(t, "0.27", rc["amount"])
	require.Equal(t, "1.00", rc["price"])
	require.Equal(t, "4.73", rc["balanceAfter"])
	require.Equal(t, map[string]any{"max": "1.00", "per": "0.001", "units": "270", "usageHeader": "Toolgate-Usage"}, rc["metered"])
	require.EqualValues(t, 473, e.balance(alice))
	require.Equal(t, []string{"credit", "charge", "release"}, e.kinds(alice))
	entries := e.entries(alice)
	require.Equal(t, []int64{-100, 73}, []int64{entries[1].Amount, entries[2].Amount})

	again := e.call(alice.key, "used", "k1", `{}`)
	require.Equal(t, r.body, again.body, "a replay is byte-identical")
	require.EqualValues(t, 473, e.balance(alice))
	require.EqualValues(t, 1, e.up.count("/metered"))

	// The trace shows the hold, its capture and the release.
	calls := e.do(http.MethodGet, "/v1/calls/k1?tool=used", alice.key, nil, "").json(t)["calls"].([]any)
	require.Len(t, calls, 1)
	c := calls[0].(map[string]any)
	require.Equal(t, []any{"captured", "0.27", "1.00"}, []any{c["hold"], c["amount"], c["max"]})
	var events []string
	for _, ev := range c["events"].([]any) {
		events = append(events, ev.(map[string]any)["type"].(string)+" "+fmt.Sprint(ev.(map[string]any)["amount"]))
	}
	require.Equal(t, []string{"created <nil>", "charge -1.00", "release 0.73", "completed <nil>"}, events)
	// The catalog says how the tool is priced.
	tools := e.do(http.MethodGet, "/v1/tools", "", nil, "").json(t)["tools"].([]any)
	require.Equal(t, map[string]any{"max": "1.00", "per": "0.001", "usageHeader": "Toolgate-Usage"}, tools[0].(map[string]any)["metered"])

	rec, err := e.record(alice, "used", "k1")
	require.NoError(t, err)
	require.Equal(t, []any{store.ChargeCharged, store.HoldCaptured, int64(27), int64(100)},
		[]any{rec.Charge.State, rec.Charge.Hold, rec.Charge.Amount, rec.Charge.Max})
	e.checkInvariants()
}

// TestMeteredWithoutUsageChargesTheMaximum: a 2xx without a usable usage
// header is charged the maximum (documented); a failure refunds the whole
// hold; a 4xx refunds it and stores the 424.
func TestMeteredWithoutUsageChargesTheMaximum(t *testing.T) {
	t.Parallel()
	e := setup(t, withMetered(t))
	alice := e.newCaller("alice", "5.00")
	for _, tool := range []string{"silent", "garbled"} {
		r := e.call(alice.key, tool, "k-"+tool, `{}`)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		rc := receiptIn(t, r)
		require.Equal(t, "1.00", rc["amount"], tool)
		require.Equal(t, map[string]any{"max": "1.00", "per": "0.001", "usageHeader": "Toolgate-Usage"}, rc["metered"], tool)
	}
	require.EqualValues(t, 300, e.balance(alice))
	require.Equal(t, []string{"credit", "charge", "charge"}, e.kinds(alice), "nothing released")

	r := e.call(alice.key, "failing", "k-fail", `{}`)
	require.Equal(t, http.StatusBadGateway, r.status, string(r.body))
	r = e.call(alice.key, "rejecting", "k-bad", `{}`)
	require.Equal(t, http.StatusFailedDependency, r.status, string(r.body))
	require.Equal(t, "0.00", receiptIn(t, r)["amount"])
	require.EqualValues(t, 300, e.balance(alice), "failures refund the whole hold")
	require.Equal(t, []string{"credit", "charge", "charge", "charge", "refund", "charge", "refund"}, e.kinds(alice))
	e.checkInvariants()
}

// TestMeteredNeedsTheMaximum: a call is refused (402) when the balance
// does not cover the maximum, even if it would use less; nothing moves.
func TestMeteredNeedsTheMaximum(t *testing.T) {
	t.Parallel()
	e := setup(t, withMetered(t))
	alice := e.newCaller("alice", "0.99")
	r := e.call(alice.key, "used", "k1", `{}`)
	p := r.problem(t, http.StatusPaymentRequired, "insufficient-funds")
	require.Equal(t, "1.00", p["price"], string(r.body))
	require.EqualValues(t, 99, e.balance(alice))
	require.EqualValues(t, 0, e.up.count("/metered"))
	e.checkInvariants()
}

// TestMeteredStormHoldsOnce: 20 concurrent calls with one key hold once,
// call the upstream once and capture once.
func TestMeteredStormHoldsOnce(t *testing.T) {
	t.Parallel()
	e := setup(t, withMetered(t))
	alice := e.newCaller("alice", "5.00")
	bodies := make([]string, 20)
	parallel(20, func(i int) {
		r := e.call(alice.key, "used", "storm", `{}`)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		bodies[i] = string(r.body)
	})
	for _, b := range bodies {
		require.Equal(t, bodies[0], b)
	}
	require.EqualValues(t, 1, e.up.count("/metered"))
	require.EqualValues(t, 473, e.balance(alice))
	require.Equal(t, []string{"credit", "charge", "release"}, e.kinds(alice))
	e.checkInvariants()
}

// TestMeteredTakeoverAcrossCatalogs: a takeover inherits the abandoned
// attempt's charge as it was taken, whatever the catalog says now. A hold
// of 1.00 taken under a metered catalog, taken over by a gateway that
// sells the tool at a fixed 0.05, captures 0.05 and releases the rest; a
// fixed charge of 0.05 taken over under a metered catalog stays 0.05; a
// tool that became free releases an inherited hold whole and keeps an
// inherited fixed charge.
// The receipt says what the ledger did.
func TestMeteredTakeoverAcrossCatalogs(t *testing.T) {
	t.Parallel()
	abandon := func(e *env, c caller, tool, key string, amount int64, hold bool) {
		canonical, err := engine.Canonicalize([]byte(`{}`))
		require.NoError(t, err)
		res, err := e.st.ClaimCharge(context.Background(), store.ClaimChargeParams{ClaimParams: store.ClaimParams{
			Key: engine.ScopedKey(c.id, tool, key), Owner: "crashed", Fingerprint: engine.Fingerprint(tool, canonical),
			Now: time.Now().Add(-time.Minute), Lease: time.Second, TTL: time.Hour}, Caller: c.id, Currency: "USD",
			Amount: amount, Hold: hold})
		require.NoError(t, err)
		require.NoError(t, res.ChargeErr)
	}

	// Metered then, fixed now: the test catalog's "echo" costs 0.05.
	e := setup(t)
	alice := e.newCaller("alice", "5.00")
	abandon(e, alice, "echo", "k", 100, true)
	r := e.call(alice.key, "echo", "k", `{}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	rc := receiptIn(t, r)
	require.Equal(t, "0.05", rc["amount"])
	require.Equal(t, map[string]any{"max": "1.00"}, rc["metered"])
	require.EqualValues(t, 495, e.balance(alice))
	require.Equal(t, []string{"credit", "charge", "release"}, e.kinds(alice))
	e.checkInvariants()

	// Fixed then, metered now: the charge stays what it was.
	e = setup(t, withMetered(t))
	bob := e.newCaller("bob", "5.00")
	abandon(e, bob, "used", "k", 5, false)
	r = e.call(bob.key, "used", "k", `{}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	rc = receiptIn(t, r)
	require.Equal(t, "0.05", rc["amount"])
	require.NotContains(t, rc, "metered")
	require.EqualValues(t, 495, e.balance(bob))
	require.Equal(t, []string{"credit", "charge"}, e.kinds(bob))
	e.checkInvariants()

	// Metered then, free now (the test catalog's "free" costs 0): the
	// hold is released whole, and the receipt says 0; a fixed charge
	// inherited by a free tool stays, and says so.
	e = setup(t)
	carol := e.newCaller("carol", "5.00")
	abandon(e, carol, "free", "held", 100, true)
	abandon(e, carol, "free", "fixed", 5, false)
	r = e.call(carol.key, "free", "held", `{}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	rc = receiptIn(t, r)
	require.Equal(t, []any{"0.00", map[string]any{"max": "1.00"}}, []any{rc["amount"], rc["metered"]})
	require.NotContains(t, rc, "balanceAfter")
	r = e.call(carol.key, "free", "fixed", `{}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, "0.05", receiptIn(t, r)["amount"])
	require.EqualValues(t, 495, e.balance(carol))
	require.Equal(t, []string{"credit", "charge", "charge", "release"}, e.kinds(carol))
	e.checkInvariants()
}
