//go:build !js

package handler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler"
	"github.com/toolgate/toolgate-go/store"
)

// statsCounters is the part of a counters row the tests read.
type statsCounters struct {
	Tool, Currency                                     string
	Calls, FreeCalls, Replays, Waits                   int64
	PaymentRequired, InProgress, Mismatches            int64
	Failures5xx, FailuresTimeout, Failures4xx          int64
	Charges, Charged, Refunds, Refunded, Net, Credited int64
	LatencyHistogram                                   []int64
}

type statsAnswer struct {
	Bucket     string
	Currencies map[string]struct{ Decimals int }
	Totals     []statsCounters
	Series     []statsCounters
	Tools      []statsCounters
	TopCallers []struct {
		Caller string
		Net    int64
	}
}

func (e *env) stats(query string) statsAnswer {
	e.t.Helper()
	r := e.do(http.MethodGet, "/v1/admin/stats"+query, adminToken, nil, "")
	require.Equal(e.t, http.StatusOK, r.status, string(r.body))
	var a statsAnswer
	require.NoError(e.t, json.Unmarshal(r.body, &a))
	return a
}

// TestStatsEqualLedgerAndUpstream: after a storm, refunded failures, a
// rejection, replays, mismatches and free calls, the stats totals equal the
// ledger's sums and the upstream's own counts, per tool; and a paid call
// still costs 2 round trips, a replay 1.
func TestStatsEqualLedgerAndUpstream(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *handler.Config) { c.UsageFlushInterval = 20 * time.Millisecond })
	alice := e.newCaller("alice", "10.00")
	bob := e.newCaller("bob", "1.00")

	// A storm of 20 on one key of a 300 ms tool: one execution, 19 waits or replays.
	parallel(20, func(int) {
		r := e.call(alice.key, "slow", "storm", `{"q":1}`)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
	})
	for i := range 5 {
		require.Equal(t, http.StatusOK, e.call(bob.key, "echo", fmt.Sprint("e", i), `{}`).status)
	}
	// Round trips per request, from the call's log line (the background flush is not the request's).
	require.Equal(t, http.StatusOK, e.call(bob.key, "echo", "e0", `{}`).status) // replay
	lines := e.logLines()
	require.EqualValues(t, 1, lines[len(lines)-1]["roundTrips"], "a replay is the claim")
	require.Equal(t, http.StatusOK, e.call(bob.key, "echo", "e-last", `{}`).status)
	lines = e.logLines()
	require.EqualValues(t, 2, lines[len(lines)-1]["roundTrips"], "a paid call is claim+charge and complete+counters")
	for i := range 3 {
		require.Equal(t, http.StatusBadGateway, e.call(alice.key, "fail", fmt.Sprint("f", i), `{}`).status)
	}
	require.Equal(t, http.StatusFailedDependency, e.call(alice.key, "bad", "b", `{}`).status)
	require.Equal(t, http.StatusFailedDependency, e.call(alice.key, "bad", "b", `{}`).status) // replay of the 424
	require.Equal(t, http.StatusGatewayTimeout, e.call(alice.key, "timeout", "t", `{}`).status)
	require.Equal(t, http.StatusUnprocessableEntity, e.call(bob.key, "echo", "e1", `{"other":1}`).status)
	require.Equal(t, http.StatusOK, e.call(bob.key, "free", "fr", `{}`).status)
	poor := e.newCaller("poor", "")
	require.Equal(t, http.StatusPaymentRequired, e.call(poor.key, "echo", "p", `{}`).status)

	// Wait for the background flush of what wrote nothing itself.
	var a statsAnswer
	require.Eventually(t, func() bool {
		a = e.stats("?bucket=hour")
		tot := map[string]statsCounters{}
		for _, c := range a.Tools {
			tot[c.Tool] = c
		}
		return tot["slow"].Waits+tot["slow"].Replays == 19 && tot["echo"].PaymentRequired == 1 &&
			tot["timeout"].FailuresTimeout == 1 && tot["fail"].Failures5xx == 3 && tot["echo"].Mismatches == 1
	}, 5*time.Second, 20*time.Millisecond, "flushed counts: %+v", a.Tools)

	// Per tool, the money equals the ledger's entries of that tool's records.
	ledger := map[string]*statsCounters{}
	for _, c := range []caller{alice, bob, poor} {
		cs, err := e.st.Calls(context.Background(), store.CallQuery{Caller: c.id, Limit: 200})
		require.NoError(t, err)
		for _, call := range cs {
			l := ledger[call.Tool]
			if l == nil {
				l = &statsCounters{}
				ledger[call.Tool] = l
			}
			for _, en := range call.Entries {
				switch en.Kind {
				case store.EntryCharge:
					l.Charges++
					l.Charged -= en.Amount
				case store.EntryRefund:
					l.Refunds++
					l.Refunded += en.Amount
				}
			}
		}
	}
	tools := map[string]statsCounters{}
	for _, c := range a.Tools {
		tools[c.Tool] = c
	}
	for tool, l := range ledger {
		got := tools[tool]
		require.Equal(t, []int64{l.Charges, l.Charged, l.Refunds, l.Refunded, l.Charged - l.Refunded},
			[]int64{got.Charges, got.Charged, got.Refunds, got.Refunded, got.Net}, "tool %s", tool)
	}
	require.EqualValues(t, 1100, tools[""].Credited, "the two credits, under tool \"\"")
	// Calls equal the upstream's own counts.
	require.EqualValues(t, 1, tools["slow"].Calls)
	require.EqualValues(t, e.up.count("/ok"), tools["slow"].Calls+tools["echo"].Calls+tools["free"].Calls)
	require.EqualValues(t, 6, tools["echo"].Calls)
	require.EqualValues(t, e.up.count("/fail"), tools["fail"].Failures5xx)
	require.EqualValues(t, e.up.count("/bad"), tools["bad"].Calls)
	require.EqualValues(t, 1, tools["bad"].Failures4xx)
	require.EqualValues(t, 1, tools["bad"].Replays)
	require.EqualValues(t, 1, tools["free"].FreeCalls)
	require.EqualValues(t, 1, tools["echo"].Replays)
	require.EqualValues(t, 1, tools["slow"].LatencyHistogram[2], "300 ms + is in the <= 1 s bucket")
	// Totals: the ledger's net over every tool.
	require.Len(t, a.Totals, 1)
	var net int64
	for _, l := range ledger {
		net += l.Charged - l.Refunded
	}
	require.Equal(t, net, a.Totals[0].Net)
	require.Equal(t, 2, a.Currencies["USD"].Decimals)
	require.Equal(t, []string{bob.id, alice.id}, []string{a.TopCallers[0].Caller, a.TopCallers[1].Caller})
	require.EqualValues(t, 30, a.TopCallers[0].Net, "bob: six echo calls")
	require.EqualValues(t, 5, a.TopCallers[1].Net, "alice: one slow call (the failures were refunded)")
	// Filters.
	require.Len(t, e.stats("?tool=echo").Tools, 1)
	require.EqualValues(t, 6, e.stats("?caller=" + bob.id + "&tool=echo").Totals[0].Calls)
	e.checkInvariants()
	require.NoError(t, e.st.CheckUsage(context.Background()))
}

func TestStatsAdminRoutes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	require.Equal(t, http.StatusOK, e.call(alice.key, "echo", "k", `{}`).status)
	require.Equal(t, http.StatusBadGateway, e.call(alice.key, "fail", "f", `{}`).status)

	r := e.do(http.MethodGet, "/v1/admin/calls?tool=fail", adminToken, nil, "")
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var calls struct {
		Calls []struct {
			Caller, Tool, Status string
			Events               []struct{ Type, Amount string }
		}
	}
	require.NoError(t, json.Unmarshal(r.body, &calls))
	require.Len(t, calls.Calls, 1)
	c := calls.Calls[0]
	require.Equal(t, []string{alice.id, "fail", "failed"}, []string{c.Caller, c.Tool, c.Status})
	var types []string
	for _, ev := range c.Events {
		types = append(types, ev.Type)
	}
	require.Equal(t, []string{"created", "charge", "refund", "failed"}, types)

	r = e.do(http.MethodGet, "/v1/admin/callers", adminToken, nil, "")
	require.Equal(t, http.StatusOK, r.status)
	m := r.json(t)
	cs := m["callers"].([]any)
	require.Len(t, cs, 1)
	bal := cs[0].(map[string]any)["balances"].([]any)[0].(map[string]any)
	require.EqualValues(t, 95, bal["balance"])
	require.EqualValues(t, 2, bal["decimals"])

	r = e.do(http.MethodGet, "/v1/admin/attention", adminToken, nil, "")
	require.Equal(t, http.StatusOK, r.status)
	require.Empty(t, r.json(t)["stuck"])

	for _, path := range []string{"/v1/admin/stats", "/v1/admin/calls", "/v1/admin/callers", "/v1/admin/attention"} {
		e.do(http.MethodGet, path, "wrong-token", nil, "").problem(t, http.StatusUnauthorized, "unauthorized")
	}
	for name, q := range map[string]string{
		"bad bucket":          "/v1/admin/stats?bucket=week",
		"bad from":            "/v1/admin/stats?from=yesterday",
		"bad to":              "/v1/admin/stats?to=2026-13-01",
		"from after to":       "/v1/admin/stats?from=2026-05-02&to=2026-05-01",
		"from equals to":      "/v1/admin/stats?from=2026-05-01&to=2026-05-01",
		"hour range too long": "/v1/admin/stats?bucket=hour&from=2026-01-01&to=2026-03-01",
		"day range too long":  "/v1/admin/stats?from=2024-01-01&to=2026-03-01",
		"bad tool":            "/v1/admin/stats?tool=a%20b",
		"bad caller":          "/v1/admin/stats?caller=%00",
		"limit zero":          "/v1/admin/calls?limit=0",
		"limit too big":       "/v1/admin/calls?limit=201",
		"limit not a number":  "/v1/admin/calls?limit=ten",
		"bad status":          "/v1/admin/calls?status=done",
	} {
		t.Run(name, func(t *testing.T) {
			e.do(http.MethodGet, q, adminToken, nil, "").problem(t, http.StatusBadRequest, "invalid-request")
		})
	}
}
