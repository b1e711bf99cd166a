//go:build !js

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// TestE2EPricing runs free tiers and spending caps in workerd over D1,
// across two isolates: 50 calls at once on 50 keys against a quota of 10
// are exactly 10 free and 40 charged once each, and against a cap of 10
// prices exactly 10 charged and 40 refused; a free or capped call costs as
// many D1 round trips as a fixed-price one; a tool of price 0 answers 429
// past its quota; a metered price holds its maximum, captures what the
// upstream reported and releases the rest, under a cap, in 2 round trips.
func TestE2EPricing(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	tools := fmt.Sprintf(`{"tools":[
	 {"name":"tiered","description":"10 free a day","price":"0.05","currency":"USD","free":{"calls":10,"per":"day"},
	  "upstream":{"url":"%[1]s/echo"}},
	 {"name":"freeonly","description":"1 free an hour","price":"0","currency":"USD","free":{"calls":1,"per":"hour"},
	  "upstream":{"url":"%[1]s/echo"}},
	 {"name":"echo","description":"fixed","price":"0.05","currency":"USD","upstream":{"url":"%[1]s/echo"}},
	 {"name":"metered","description":"metered","price":{"max":"0.10","per":"0.001"},"currency":"USD",
	  "upstream":{"url":"%[1]s/metered?units=37"}}]}`, up.URL)
	edge := edgetest.Start(t, edgetest.Options{
		Workers:       []string{"w0", "w1"},
		MigrationsDir: "store/sqlstore/migrations",
		Vars:          map[string]string{"TOOLS": tools, "ADMIN_TOKEN": e2eAdminToken},
	})
	w0, w1 := edge.URL("w0"), edge.URL("w1")
	db := edge.OpenD1(t)
	alice := newCaller(t, w0, "alice", "10.00")

	const n, limit = 50, 10
	tiers := map[string]int{}
	for _, a := range burst(t, []string{w0, w1}, alice.key, "tiered", "race-", n) {
		require.Equal(t, http.StatusOK, a.status, string(a.body))
		tiers[a.receipt.Tier+"/"+a.receipt.Amount]++
	}
	require.Equal(t, map[string]int{"free/0.00": limit, "/0.05": n - limit}, tiers)
	charges, refunds := countCharges(t, db, "alice")
	require.Equal(t, n-limit, charges)
	require.Zero(t, refunds)
	require.Equal(t, int64(1000-5*(n-limit)), checkLedger(t, db, "alice"))
	var used, takes int
	require.NoError(t, db.QueryRow(`SELECT used FROM quota_usage WHERE caller = 'alice' AND tool = 'tiered'`).Scan(&used))
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM quota_entries WHERE caller = 'alice' AND kind = 'take'`).Scan(&takes))
	require.Equal(t, limit, used)
	require.Equal(t, limit, takes)

	// A tool of price 0 past its quota: 429 with Retry-After, nothing executed.
	bob := newCaller(t, w1, "bob", "")
	res, body := bob.call("freeonly", "f-1", `{}`)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	echoes := up.count("/echo")
	res, body = bob.call("freeonly", "f-2", `{}`)
	require.Equal(t, http.StatusTooManyRequests, res.StatusCode, string(body))
	require.Contains(t, string(body), "quota-exhausted")
	require.NotEmpty(t, res.Header.Get("Retry-After"))
	require.Equal(t, echoes, up.count("/echo"))

	// A cap of 10 prices, 50 calls at once on 50 keys across both isolates.
	dave := newCaller(t, w0, "dave", "100.00")
	admin := client{t: t, base: w1, key: e2eAdminToken}
	res, body = admin.do(http.MethodPut, "/v1/admin/callers/dave/caps", []byte(`{"currency":"USD","limit":"0.50","reset":"daily"}`), nil)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	statuses := map[int]int{}
	for _, a := range burst(t, []string{w0, w1}, dave.key, "echo", "cap-", n) {
		statuses[a.status]++
	}
	require.Equal(t, map[int]int{http.StatusOK: 10, http.StatusPaymentRequired: n - 10}, statuses)
	charges, _ = countCharges(t, db, "dave")
	require.Equal(t, 10, charges)
	require.Equal(t, int64(10000-50), checkLedger(t, db, "dave"))
	res, body = dave.call("echo", "cap-over", `{}`)
	require.Equal(t, http.StatusPaymentRequired, res.StatusCode)
	require.Contains(t, string(body), `"limit":{`)

	// A metered price, 50 calls at once on 50 keys across both isolates
	// against a cap of 1.00 (10 maximums): the holds count at the maximum
	// until captured, so at least 10 calls pass and never more than the
	// cap; each captured 0.04 (37 units of 0.001, rounded up) and released
	// 0.06 in the same step.
	erin := newCaller(t, w0, "erin", "100.00")
	res, body = admin.do(http.MethodPut, "/v1/admin/callers/erin/caps", []byte(`{"currency":"USD","limit":"1.00","reset":"daily"}`), nil)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	statuses = map[int]int{}
	amounts := map[string]int{}
	for _, a := range burst(t, []string{w0, w1}, erin.key, "metered", "metered-", n) {
		statuses[a.status]++
		if a.status == http.StatusOK {
			amounts[a.receipt.Amount]++
		}
	}
	passed := statuses[http.StatusOK]
	require.Equal(t, n, passed+statuses[http.StatusPaymentRequired], "%v", statuses)
	require.GreaterOrEqual(t, passed, 10)
	require.Equal(t, map[string]int{"0.04": passed}, amounts)
	charges, refunds = countCharges(t, db, "erin")
	require.Equal(t, passed, charges)
	require.Zero(t, refunds)
	var releases, released int
	require.NoError(t, db.QueryRow(`SELECT count(*), coalesce(sum(amount), 0) FROM ledger_entries WHERE caller = 'erin' AND kind = 'release'`).Scan(&releases, &released))
	require.Equal(t, []int{passed, 6 * passed}, []int{releases, released})
	require.Equal(t, int64(10000-4*passed), checkLedger(t, db, "erin"))
	var spent int64
	require.NoError(t, db.QueryRow(`SELECT spent FROM cap_spend WHERE caller = 'erin'`).Scan(&spent))
	require.Equal(t, int64(4*passed), spent)
	require.LessOrEqual(t, spent, int64(100))

	// D1 round trips per call, as the worker logs them (caller cached by now).
	carol := newCaller(t, w0, "carol", "1.00")
	res, body = admin.do(http.MethodPut, "/v1/admin/callers/carol/caps", []byte(`{"currency":"USD","limit":"1.00","reset":"monthly"}`), nil)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	res, _ = carol.call("echo", "warm", `{}`)
	require.Equal(t, http.StatusOK, res.StatusCode)
	lookup := 0 // the caller is cached, except with a Go runtime per request
	if os.Getenv("TOOLGATE_GO_RUNTIME") == edgetest.ModePerRequest {
		lookup = 1
	}
	for _, c := range []struct {
		who                     client
		caller, tool, key, what string
	}{
		{alice, "alice", "echo", "rt-paid", "fixed price: claim+charge batch, complete"},
		{carol, "carol", "tiered", "rt-free", "free call: claim+take batch, complete"},
		{carol, "carol", "echo", "rt-capped", "capped call: claim+charge batch (the cap inside the charge), complete"},
		{alice, "alice", "metered", "rt-metered", "metered call: claim+hold batch, complete+capture batch"},
	} {
		mark := edge.LogMark()
		res, body = c.who.call(c.tool, c.key, `{}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
		var trips any
		require.Eventually(t, func() bool {
			for _, l := range callLogs(edge.LogsSince(mark)) {
				// The caller too: the line of the call before may reach the
				// log after the mark.
				if l["outcome"] == "executed" && l["tool"] == c.tool && l["caller"] == c.caller && l["roundTrips"] != nil {
					trips = l["roundTrips"]
				}
			}
			return trips != nil
		}, 5*time.Second, 20*time.Millisecond)
		require.EqualValues(t, 2+lookup, trips, c.what)
		t.Logf("D1 round trips: %s: %v", c.key, trips)
	}
}

// answer is one call's answer in a burst.
type answer struct {
	status  int
	body    []byte
	receipt struct{ Tier, Amount string }
}

// burst makes n calls of tool at once with the caller key, on n keys
// (prefix and the call's number), alternating between the workers at
// bases, and returns their answers; every call must get one.
func burst(t *testing.T, bases []string, key, tool, prefix string, n int) []answer {
	t.Helper()
	out := make([]answer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client{base: bases[i%len(bases)], key: key}
			res, b, err := c.try(http.MethodPost, "/v1/tools/"+tool+"/call", []byte(`{}`),
				map[string]string{"Idempotency-Key": fmt.Sprint(prefix, i)})
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = answer{status: res.StatusCode, body: b}
			if res.StatusCode == http.StatusOK {
				var env struct{ Receipt struct{ Tier, Amount string } }
				errs[i] = json.Unmarshal(b, &env)
				out[i].receipt = env.Receipt
			}
		}()
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	return out
}
