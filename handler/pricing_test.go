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
	"github.com/toolgate/toolgate-go/store"
)

// pricingClock is the gateway's clock in the pricing tests: a Wednesday,
// so the day's window ends at midnight UTC.
var pricingClock = time.Date(2026, 12, 2, 15, 30, 0, 0, time.UTC)

// withPricing serves the free-tier tools over e's upstream at a fixed clock.
func withPricing(t *testing.T, limit int) option {
	return func(cfg *handler.Config) {
		base := cfg.Catalog.Tools()[0].URL // .../ok
		base = base[:len(base)-len("/ok")]
		doc := fmt.Sprintf(`{"tools": [
		 {"name": "tiered", "description": "free tier, then 0.05", "price": "0.05", "currency": "USD",
		  "free": {"calls": %[2]d, "per": "day"}, "upstream": {"url": "%[1]s/ok"}},
		 {"name": "freeonly", "description": "free tier, no price", "price": "0", "currency": "USD",
		  "free": {"calls": %[2]d, "per": "week"}, "upstream": {"url": "%[1]s/ok"}},
		 {"name": "freefail", "description": "free tier, 500", "price": "0.05", "currency": "USD",
		  "free": {"calls": %[2]d, "per": "hour"}, "upstream": {"url": "%[1]s/fail"}},
		 {"name": "freebad", "description": "free tier, 400", "price": "0", "currency": "USD",
		  "free": {"calls": %[2]d, "per": "month"}, "upstream": {"url": "%[1]s/bad"}},
		 {"name": "echo", "description": "fixed price", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/ok"}},
		 {"name": "broken", "description": "fixed price, 500", "price": "0.05", "currency": "USD", "upstream": {"url": "%[1]s/fail"}}
		]}`, base, limit)
		c, err := catalog.ParseCatalog([]byte(doc))
		require.NoError(t, err)
		cfg.Catalog = c
		cfg.NowFunc = func() time.Time { return pricingClock }
	}
}

func receiptIn(t *testing.T, r response) map[string]any {
	t.Helper()
	return r.json(t)["receipt"].(map[string]any)
}

func TestFreeTierThenPrice(t *testing.T) {
	t.Parallel()
	e := setup(t, withPricing(t, 2))
	alice := e.newCaller("alice", "1.00")
	require.Equal(t, http.StatusOK, e.do(http.MethodGet, "/v1/balance", alice.key, nil, "").status) // caches the caller

	trips := func(f func()) int64 {
		before := e.db.Count()
		f()
		return e.db.Count() - before
	}
	for i, left := range []float64{1, 0} {
		var r response
		n := trips(func() { r = e.call(alice.key, "tiered", fmt.Sprintf("k%d", i), `{}`) })
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		rc := receiptIn(t, r)
		require.Equal(t, "free", rc["tier"])
		require.Equal(t, "0.00", rc["amount"])
		require.Equal(t, "0.05", rc["price"])
		require.Equal(t, left, rc["quotaRemaining"])
		require.Equal(t, "2026-12-03T00:00:00Z", rc["quotaResetsAt"])
		require.NotContains(t, rc, "balanceAfter")
		require.EqualValues(t, 2, n, "a free call: claim and take (one batch), complete")
	}
	require.EqualValues(t, 100, e.balance(alice))
	// A replay is byte-identical and takes nothing.
	r0 := e.call(alice.key, "tiered", "k0", `{}`)
	require.Equal(t, "free", receiptIn(t, r0)["tier"])
	// Past the quota the price applies: still 2 round trips.
	var r response
	require.EqualValues(t, 2, trips(func() { r = e.call(alice.key, "tiered", "k2", `{}`) }))
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	rc := receiptIn(t, r)
	require.NotContains(t, rc, "tier")
	require.Equal(t, "0.05", rc["amount"])
	require.Equal(t, "0.95", rc["balanceAfter"])
	require.EqualValues(t, 95, e.balance(alice))
	require.Equal(t, []string{"credit", "charge"}, e.kinds(alice))
	// Another caller has a quota of its own.
	bob := e.newCaller("bob", "")
	require.Equal(t, "free", receiptIn(t, e.call(bob.key, "tiered", "k0", `{}`))["tier"])
	// The fixed-price fast path is unchanged: 2 round trips.
	require.EqualValues(t, 2, trips(func() { require.Equal(t, http.StatusOK, e.call(alice.key, "echo", "e", `{}`).status) }))
	lines := e.logLines()
	require.EqualValues(t, 2, lines[len(lines)-1]["roundTrips"])
	e.checkInvariants()
}

func TestFreeTierWithoutPriceAnswers429(t *testing.T) {
	t.Parallel()
	e := setup(t, withPricing(t, 1))
	alice := e.newCaller("alice", "")
	r := e.call(alice.key, "freeonly", "k1", `{}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, float64(0), receiptIn(t, r)["quotaRemaining"])
	require.Equal(t, "2026-12-07T00:00:00Z", receiptIn(t, r)["quotaResetsAt"], "weeks start on Monday")
	r = e.call(alice.key, "freeonly", "k2", `{}`)
	p := r.problem(t, http.StatusTooManyRequests, "quota-exhausted")
	require.Equal(t, map[string]any{"calls": float64(1), "per": "week", "remaining": float64(0),
		"resetsAt": "2026-12-07T00:00:00Z"}, p["quota"])
	require.Equal(t, fmt.Sprint(int(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC).Sub(pricingClock).Seconds())), r.header.Get("Retry-After"))
	require.EqualValues(t, 1, e.up.count("/ok"), "nothing was executed past the quota")
	rec, err := e.record(alice, "freeonly", "k2")
	require.NoError(t, err)
	require.Equal(t, store.StatusFailed, rec.Status, "the key is failed, so a retry in the next window runs")
	e.checkInvariants()
}

func TestFreeTierFailureGivesTheUnitBack(t *testing.T) {
	t.Parallel()
	e := setup(t, withPricing(t, 1))
	alice := e.newCaller("alice", "1.00")
	// An upstream 500: the unit comes back, and the retry is free again.
	for range 2 {
		r := e.call(alice.key, "freefail", "k", `{}`)
		p := r.problem(t, http.StatusBadGateway, "upstream-failed")
		require.Equal(t, "free", p["tier"])
		require.Equal(t, true, p["quotaReturned"])
		require.Contains(t, p["detail"], "given back to your free quota")
	}
	require.Equal(t, []string{"credit"}, e.kinds(alice), "nothing charged")
	// An upstream 400 is the final answer, and its unit is given back too.
	r := e.call(alice.key, "freebad", "k", `{}`)
	require.Equal(t, http.StatusFailedDependency, r.status)
	rc := receiptIn(t, r)
	require.Equal(t, "free", rc["tier"])
	require.Equal(t, true, rc["refunded"])
	require.Equal(t, float64(1), rc["quotaRemaining"])
	// So the one free call of the month is still there.
	r = e.call(alice.key, "freebad", "k2", `{}`)
	require.Equal(t, http.StatusFailedDependency, r.status, string(r.body))
	require.Equal(t, "free", receiptIn(t, r)["tier"])
	e.checkInvariants()
}

// TestFreeTierRace: 50 calls at once on 50 keys against a quota of 10, on
// SQLite through the HTTP handler: exactly 10 free, 40 charged once each.
func TestFreeTierRace(t *testing.T) {
	t.Parallel()
	e := setup(t, withPricing(t, 10))
	alice := e.newCaller("alice", "10.00")
	const n = 50
	statuses, tiers := make([]int, n), make([]any, n)
	parallel(n, func(i int) {
		r := e.call(alice.key, "tiered", fmt.Sprintf("race-%d", i), `{}`)
		statuses[i] = r.status
		if r.status == http.StatusOK {
			tiers[i] = receiptIn(t, r)["tier"]
		}
	})
	free := 0
	for i := range statuses {
		require.Equal(t, http.StatusOK, statuses[i])
		if tiers[i] == "free" {
			free++
		}
	}
	require.Equal(t, 10, free)
	require.EqualValues(t, 1000-5*(n-10), e.balance(alice))
	charges := 0
	for _, k := range e.kinds(alice) {
		if k == "charge" {
			charges++
		}
	}
	require.Equal(t, n-10, charges)
	require.NoError(t, e.st.CheckInvariants(context.Background()))
}

func (e *env) putCap(body string) response {
	e.t.Helper()
	return e.do(http.MethodPut, "/v1/admin/callers/alice/caps", adminToken, nil, body)
}

func TestCapsAdminAPI(t *testing.T) {
	t.Parallel()
	e := setup(t, withPricing(t, 1))
	r := e.do(http.MethodPost, "/v1/admin/callers", adminToken, nil, `{"id": "alice", "name": "alice"}`)
	require.Equal(t, http.StatusCreated, r.status, string(r.body))

	r = e.putCap(`{"currency": "USD", "limit": "0.12", "reset": "daily"}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, map[string]any{"currency": "USD", "limit": "0.12", "reset": "daily", "spent": "0.00",
		"remaining": "0.12", "resetsAt": "2026-12-03T00:00:00Z"}, r.json(t))
	r = e.do(http.MethodPost, "/v1/admin/callers/alice/keys", adminToken, nil, `{"name": "ci"}`)
	require.Equal(t, http.StatusCreated, r.status, string(r.body))
	keyID := r.json(t)["id"].(string)
	r = e.putCap(`{"currency": "USD", "limit": "1", "reset": "never", "key": "` + keyID + `"}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, map[string]any{"key": keyID, "currency": "USD", "limit": "1.00", "reset": "never", "spent": "0.00",
		"remaining": "1.00"}, r.json(t))
	// A key the caller does not have: the cap would never apply.
	e.putCap(`{"currency": "USD", "limit": "1", "reset": "never", "key": "k_nope"}`).problem(t, http.StatusNotFound, "key-not-found")
	// "" is the original key, as authentication names it.
	r = e.putCap(`{"currency": "USD", "limit": "2", "reset": "never", "key": ""}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, store.OriginalKeyID, r.json(t)["key"])

	bad := map[string]string{
		"unknown currency":  `{"currency": "XYZ", "limit": "1", "reset": "daily"}`,
		"negative limit":    `{"currency": "USD", "limit": "-1", "reset": "daily"}`,
		"malformed limit":   `{"currency": "USD", "limit": "1.234", "reset": "daily"}`,
		"number limit":      `{"currency": "USD", "limit": 1, "reset": "daily"}`,
		"bad reset":         `{"currency": "USD", "limit": "1", "reset": "hourly"}`,
		"no reset":          `{"currency": "USD", "limit": "1"}`,
		"unknown field":     `{"currency": "USD", "limit": "1", "reset": "daily", "period": "day"}`,
		"bad key":           `{"currency": "USD", "limit": "1", "reset": "daily", "key": "a b"}`,
		"limit over 2^53-1": `{"currency": "USD", "limit": "90071992547409.92", "reset": "daily"}`,
	}
	for name, body := range bad {
		r := e.putCap(body)
		r.problem(t, http.StatusBadRequest, "invalid-request")
		require.NotEmpty(t, r.json(t)["detail"], name)
	}
	r = e.do(http.MethodPut, "/v1/admin/callers/nobody/caps", adminToken, nil, `{"currency": "USD", "limit": "1", "reset": "daily"}`)
	r.problem(t, http.StatusNotFound, "unknown-caller")
	require.Equal(t, http.StatusUnauthorized, e.do(http.MethodPut, "/v1/admin/callers/alice/caps", "wrong", nil,
		`{"currency": "USD", "limit": "1", "reset": "daily"}`).status)

	r = e.do(http.MethodGet, "/v1/admin/callers/alice/caps", adminToken, nil, "")
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	caps := r.json(t)["caps"].([]any)
	require.Len(t, caps, 3, "bad input changed nothing")
	require.Equal(t, "0.12", caps[0].(map[string]any)["limit"])
	e.do(http.MethodGet, "/v1/admin/callers/nobody/caps", adminToken, nil, "").problem(t, http.StatusNotFound, "unknown-caller")
	e.checkInvariants()
}

func TestCapRefusesLikeInsufficientFunds(t *testing.T) {
	t.Parallel()
	e := setup(t, withPricing(t, 1))
	alice := e.newCaller("alice", "1.00")
	r := e.do(http.MethodPut, "/v1/admin/callers/"+alice.id+"/caps", adminToken, nil, `{"currency": "USD", "limit": "0.10", "reset": "weekly"}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, http.StatusOK, e.do(http.MethodGet, "/v1/balance", alice.key, nil, "").status) // caches the caller
	for i := range 2 {
		before := e.db.Count()
		require.Equal(t, http.StatusOK, e.call(alice.key, "echo", fmt.Sprint("e", i), `{}`).status)
		require.EqualValues(t, 2, e.db.Count()-before, "a capped call: claim and charge (one batch), complete")
	}
	r = e.call(alice.key, "echo", "e2", `{}`)
	p := r.problem(t, http.StatusPaymentRequired, "insufficient-funds")
	require.Equal(t, map[string]any{"scope": "caller", "currency": "USD", "limit": "0.10", "spent": "0.10", "remaining": "0.00",
		"reset": "weekly", "resetsAt": "2026-12-07T00:00:00Z"}, p["limit"])
	require.Equal(t, "0.90", p["balance"])
	require.NotContains(t, p, "topUp")
	require.Contains(t, p["detail"], "spending cap of 0.10 USD")
	require.EqualValues(t, 2, e.up.count("/ok"), "nothing executed past the cap")
	// A refunded failure gives the spend back: the cap lets the next call through.
	r = e.do(http.MethodPut, "/v1/admin/callers/"+alice.id+"/caps", adminToken, nil, `{"currency": "USD", "limit": "0.15", "reset": "weekly"}`)
	require.Equal(t, "0.10", r.json(t)["spent"])
	p = e.call(alice.key, "broken", "b0", `{}`).problem(t, http.StatusBadGateway, "upstream-failed") // charged, then refunded
	require.Equal(t, true, p["refunded"])
	r = e.do(http.MethodGet, "/v1/admin/callers/"+alice.id+"/caps", adminToken, nil, "")
	require.Equal(t, "0.10", r.json(t)["caps"].([]any)[0].(map[string]any)["spent"])
	require.Equal(t, http.StatusOK, e.call(alice.key, "echo", "e2", `{}`).status, "the same key, retried under the raised cap")
	require.EqualValues(t, 85, e.balance(alice))
	e.checkInvariants()
}

// TestCapRace: 50 calls at once on 50 keys against a cap of 10 prices, on
// SQLite through the HTTP handler: exactly 10 charged, 40 refused 402.
func TestCapRace(t *testing.T) {
	t.Parallel()
	e := setup(t, withPricing(t, 1))
	alice := e.newCaller("alice", "100.00")
	r := e.do(http.MethodPut, "/v1/admin/callers/"+alice.id+"/caps", adminToken, nil, `{"currency": "USD", "limit": "0.50", "reset": "monthly"}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	const n = 50
	statuses := make([]int, n)
	parallel(n, func(i int) { statuses[i] = e.call(alice.key, "echo", fmt.Sprint("race-", i), `{}`).status })
	count := map[int]int{}
	for _, s := range statuses {
		count[s]++
	}
	require.Equal(t, map[int]int{http.StatusOK: 10, http.StatusPaymentRequired: n - 10}, count)
	require.EqualValues(t, 10000-50, e.balance(alice))
	require.EqualValues(t, 10, e.up.count("/ok"))
	e.checkInvariants()
}

// TestCapOnTheOriginalKeyApplies: a cap set on key "" (the caller's
// original key) is enforced on the calls that key makes.
func TestCapOnTheOriginalKeyApplies(t *testing.T) {
	t.Parallel()
	e := setup(t)
	bob := e.newCaller("bob", "1.00")
	r := e.do(http.MethodPut, "/v1/admin/callers/"+bob.id+"/caps", adminToken, nil,
		`{"currency": "USD", "limit": "0.10", "reset": "never", "key": ""}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	for i := range 2 {
		require.Equal(t, http.StatusOK, e.call(bob.key, "echo", fmt.Sprint("k", i), `{}`).status)
	}
	p := e.call(bob.key, "echo", "k2", `{}`).problem(t, http.StatusPaymentRequired, "insufficient-funds")
	require.NotNil(t, p["limit"], "the cap on the original key refused it")
	require.Equal(t, int64(90), e.balance(bob))
	e.checkInvariants()
}

// TestDeleteCap: DELETE /v1/admin/callers/{id}/caps names a cap as PUT
// does (no key: the caller's; key "": the original key's; else a key's),
// removes only it, and a cap set again counts the window's spend from the
// ledger.
func TestDeleteCap(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	ci := e.newKey(alice, "ci")
	base := "/v1/admin/callers/" + alice.id + "/caps"
	for _, body := range []string{
		`{"currency": "USD", "limit": "0.05", "reset": "never"}`,
		`{"currency": "USD", "limit": "1.00", "reset": "daily", "key": ""}`,
		`{"currency": "USD", "limit": "0.50", "reset": "weekly", "key": "` + ci.keyID + `"}`,
	} {
		r := e.do(http.MethodPut, base, adminToken, nil, body)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
	}
	capKeys := func() []string {
		t.Helper()
		r := e.do(http.MethodGet, base, adminToken, nil, "")
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		out := []string{}
		for _, c := range r.json(t)["caps"].([]any) {
			k, _ := c.(map[string]any)["key"].(string)
			out = append(out, k)
		}
		return out
	}
	require.Equal(t, []string{"", ci.keyID, store.OriginalKeyID}, capKeys())
	require.Equal(t, http.StatusOK, e.call(alice.key, "echo", "e0", `{}`).status)
	p := e.call(alice.key, "echo", "e1", `{}`).problem(t, http.StatusPaymentRequired, "insufficient-funds")
	require.Equal(t, "caller", p["limit"].(map[string]any)["scope"])

	for name, tc := range map[string]struct {
		query, bearer string
		status        int
		slug          string
	}{
		"no admin token":     {"?currency=USD", "", 401, "unauthorized"},
		"caller key":         {"?currency=USD", alice.key, 401, "unauthorized"},
		"no currency":        {"", adminToken, 400, "invalid-request"},
		"unknown currency":   {"?currency=XYZ", adminToken, 400, "invalid-request"},
		"currency twice":     {"?currency=USD&currency=EUR", adminToken, 400, "invalid-request"},
		"misspelt key":       {"?currency=USD&keyId=" + ci.keyID, adminToken, 400, "invalid-request"},
		"bad key":            {"?currency=USD&key=a%20b", adminToken, 400, "invalid-request"},
		"malformed query":    {"?currency=USD&key=%zz", adminToken, 400, "invalid-request"},
		"no cap in currency": {"?currency=EUR", adminToken, 404, "cap-not-found"},
		"no cap on key":      {"?currency=USD&key=k_nope", adminToken, 404, "cap-not-found"},
		"unknown caller":     {"?currency=USD", adminToken, 404, "unknown-caller"},
	} {
		path := base
		if name == "unknown caller" {
			path = "/v1/admin/callers/nobody/caps"
		}
		e.do(http.MethodDelete, path+tc.query, tc.bearer, nil, "").problem(t, tc.status, tc.slug)
	}
	require.Equal(t, []string{"", ci.keyID, store.OriginalKeyID}, capKeys(), "nothing was deleted")

	// The caller's cap: 204, two round trips (the caller, the delete).
	before := e.db.Count()
	r := e.do(http.MethodDelete, base+"?currency=USD", adminToken, nil, "")
	require.Equal(t, http.StatusNoContent, r.status, string(r.body))
	require.Empty(t, r.body)
	require.EqualValues(t, 2, e.db.Count()-before)
	require.Equal(t, []string{ci.keyID, store.OriginalKeyID}, capKeys())
	e.do(http.MethodDelete, base+"?currency=USD", adminToken, nil, "").problem(t, http.StatusNotFound, "cap-not-found")
	require.Equal(t, http.StatusOK, e.call(alice.key, "echo", "e1", `{}`).status, "the refused call passes, retried with its key")
	require.Equal(t, http.StatusOK, e.call(alice.key, "echo", "e2", `{}`).status)

	// "" is the original key, as in PUT; then a key's cap by its id.
	require.Equal(t, http.StatusNoContent, e.do(http.MethodDelete, base+"?currency=USD&key=", adminToken, nil, "").status)
	require.Equal(t, []string{ci.keyID}, capKeys())
	require.Equal(t, http.StatusNoContent, e.do(http.MethodDelete, base+"?key="+ci.keyID+"&currency=USD", adminToken, nil, "").status)
	require.Empty(t, capKeys())

	// Set again, the caller's cap counts the three calls already made.
	r = e.do(http.MethodPut, base, adminToken, nil, `{"currency": "USD", "limit": "0.15", "reset": "never"}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, "0.15", r.json(t)["spent"])
	e.call(alice.key, "echo", "e3", `{}`).problem(t, http.StatusPaymentRequired, "insufficient-funds")
	require.EqualValues(t, 85, e.balance(alice))
	e.checkInvariants()
}
