//go:build !js

package handler_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler"
	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/storetest"
)

// faultLease is the lease of the fault tests' tools. The engine retries a
// final write for up to half of it.
const faultLease = 2 * time.Second

// The statements of the final writes, as sqlstore spells them.
var (
	completeStmt = storetest.QueryHasPrefix("UPDATE idem_records SET status = 'completed'")
	failStmt     = storetest.QueryHasPrefix("UPDATE idem_records SET status = 'failed'")
	refundStmt   = func(q string) bool { return strings.Contains(q, "'refund'") }
)

// setupFaults is setup with the gateway's database calls going through a
// FaultClient made from cfg, and a catalog of three tools with the lease
// faultLease: "ok" (200), "bad" (400, stored as 424) and "fail" (500). When
// onAnswer is not nil, it runs each time the upstream has answered, before
// the engine sees the answer.
func setupFaults(t *testing.T, cfg storetest.FaultConfig, onAnswer func(fc *storetest.FaultClient)) (*env, *storetest.FaultClient) {
	t.Helper()
	var fc *storetest.FaultClient
	e := setupDB(t, func(db store.DbClient) store.DbClient {
		fc = storetest.NewFaultClient(db, cfg)
		fc.SetEnabled(false) // on once the callers exist
		return fc
	}, func(c *handler.Config) {
		echo, ok := c.Catalog.Tool("echo")
		require.True(t, ok)
		base := strings.TrimSuffix(echo.URL, "/ok")
		var tools []string
		for _, tool := range [][2]string{{"ok", "/ok"}, {"bad", "/bad"}, {"fail", "/fail"}} {
			tools = append(tools, fmt.Sprintf(`{"name": %q, "description": "d", "price": "0.05", "currency": "USD",
				"lease": %q, "upstream": {"url": %q}}`, tool[0], faultLease, base+tool[1]))
		}
		cat, err := handler.ParseCatalog([]byte(`{"tools": [` + strings.Join(tools, ",") + `]}`))
		require.NoError(t, err)
		c.Catalog = cat
		if onAnswer != nil {
			up := c.Upstream
			c.Upstream = handler.UpstreamFunc(func(ctx context.Context, r handler.UpstreamRequest) (handler.UpstreamResponse, error) {
				res, err := up.Do(ctx, r)
				onAnswer(fc)
				return res, err
			})
		}
	})
	return e, fc
}

// outageAtAnswer takes the database down the moment the upstream answers,
// and brings it back after a quarter of the lease.
func outageAtAnswer(fc *storetest.FaultClient) {
	fc.StartOutage()
	time.AfterFunc(faultLease/4, fc.EndOutage)
}

var upstreamPath = map[string]string{"ok": "/ok", "bad": "/bad", "fail": "/fail"}

// requireFinalAnswer checks the answer r to alice's first call at tool
// under key "k" (whose final writes met faults) as if no fault had
// happened, then a second call with the same key: a replay for "ok" and
// "bad", a new execution, refunded again, for "fail".
func requireFinalAnswer(t *testing.T, e *env, alice caller, tool string, r response) {
	t.Helper()
	path := upstreamPath[tool]
	rec, err := e.record(alice, tool, "k")
	require.NoError(t, err)
	switch tool {
	case "ok":
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		require.Empty(t, r.header.Get("Idempotent-Replayed"))
		require.Equal(t, store.StatusCompleted, rec.Status)
		require.Equal(t, store.ChargeCharged, rec.Charge.State)
		require.Equal(t, []string{"credit", "charge"}, e.kinds(alice))
		require.EqualValues(t, 95, e.balance(alice))
	case "bad":
		m := r.problem(t, http.StatusFailedDependency, "upstream-rejected")
		require.Equal(t, true, m["receipt"].(map[string]any)["refunded"], string(r.body))
		require.Equal(t, "1.00", m["receipt"].(map[string]any)["balanceAfter"], string(r.body))
		require.Equal(t, store.StatusCompleted, rec.Status)
		require.Equal(t, store.ChargeRefunded, rec.Charge.State)
		require.Equal(t, []string{"credit", "charge", "refund"}, e.kinds(alice))
		require.EqualValues(t, 100, e.balance(alice))
	case "fail":
		m := r.problem(t, http.StatusBadGateway, "upstream-failed")
		require.Equal(t, true, m["refunded"], string(r.body))
		require.Equal(t, "1.00", m["balance"], string(r.body))
		require.Equal(t, store.StatusFailed, rec.Status)
		require.Equal(t, store.ChargeRefunded, rec.Charge.State)
		require.Equal(t, []string{"credit", "charge", "refund"}, e.kinds(alice))
		require.EqualValues(t, 100, e.balance(alice))
	}
	require.EqualValues(t, 1, e.up.count(path), "one upstream execution")
	require.EqualValues(t, 1, rec.Generation, "never taken over")
	e.checkInvariants()

	again := e.call(alice.key, tool, "k", `{"a":1}`)
	if tool == "fail" {
		m := again.problem(t, http.StatusBadGateway, "upstream-failed")
		require.Equal(t, true, m["refunded"], string(again.body))
		require.EqualValues(t, 2, e.up.count(path), "a failed key executes again")
		require.Equal(t, []string{"credit", "charge", "refund", "charge", "refund"}, e.kinds(alice))
	} else {
		require.Equal(t, r.status, again.status)
		require.Equal(t, string(r.body), string(again.body))
		require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
		require.EqualValues(t, 1, e.up.count(path), "a replay does not execute")
	}
	e.checkInvariants()
}

// TestFinalWriteFaultedOnce fails each final write once: after its commit
// (the reply is lost, as with D1's "Network connection lost"), or before it
// runs. The retry applies the write, or finds it done by this owner, and
// the call answers as if nothing had happened.
func TestFinalWriteFaultedOnce(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		tool   string
		match  func(string) bool
		before bool // an error before execution, else after commit
	}{
		"complete after 200, reply lost": {tool: "ok", match: completeStmt},
		"complete after 200, refused":    {tool: "ok", match: completeStmt, before: true},
		"complete after 400, reply lost": {tool: "bad", match: completeStmt},
		"refund after 400, reply lost":   {tool: "bad", match: refundStmt},
		"refund after 500, reply lost":   {tool: "fail", match: refundStmt},
		"refund after 500, refused":      {tool: "fail", match: refundStmt, before: true},
		"fail after 500, reply lost":     {tool: "fail", match: failStmt},
		"fail after 500, refused":        {tool: "fail", match: failStmt, before: true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := storetest.FaultConfig{AfterRate: 1, MaxErrors: 1, MatchFunc: tc.match}
			want := storetest.FaultCounts{After: 1}
			if tc.before {
				cfg.AfterRate, cfg.BeforeRate = 0, 1
				want = storetest.FaultCounts{Before: 1}
			}
			e, fc := setupFaults(t, cfg, nil)
			alice := e.newCaller("alice", "1.00")
			fc.SetEnabled(true)
			r := e.call(alice.key, tc.tool, "k", `{"a":1}`)
			want.Calls = fc.Counts().Calls
			require.Equal(t, want, fc.Counts(), "one fault")
			requireFinalAnswer(t, e, alice, tc.tool, r)
		})
	}
}

// TestFinalWriteOutageWhenUpstreamAnswers takes the database away exactly
// when the upstream answers, for a quarter of the lease: the final writes
// wait it out, and the key is neither stranded nor executed twice.
func TestFinalWriteOutageWhenUpstreamAnswers(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"ok", "bad", "fail"} {
		t.Run(tool, func(t *testing.T) {
			t.Parallel()
			var outages atomic.Int64
			e, fc := setupFaults(t, storetest.FaultConfig{}, func(fc *storetest.FaultClient) {
				if outages.Add(1) == 1 {
					outageAtAnswer(fc)
				}
			})
			alice := e.newCaller("alice", "1.00")
			r := e.call(alice.key, tool, "k", `{"a":1}`)
			require.Positive(t, fc.Counts().Outage, "the final write met the outage")
			requireFinalAnswer(t, e, alice, tool, r)
		})
	}
}

// TestFinalWriteRetriesRunOut keeps the complete failing: after half the
// lease of retries the caller gets 503 with Retry-After, the key stays in
// progress with its charge, and once the faults stop and the lease has run
// out, a retry takes the key over (the documented second execution),
// inheriting the charge.
func TestFinalWriteRetriesRunOut(t *testing.T) {
	t.Parallel()
	e, fc := setupFaults(t, storetest.FaultConfig{BeforeRate: 1, MatchFunc: completeStmt}, nil)
	alice := e.newCaller("alice", "1.00")
	fc.SetEnabled(true)
	r := e.call(alice.key, "ok", "k", `{"a":1}`)
	r.problem(t, http.StatusServiceUnavailable, "store-unavailable")
	require.NotEmpty(t, r.header.Get("Retry-After"))
	require.Greater(t, fc.Counts().Before, int64(1), "the complete was retried")
	rec, err := e.record(alice, "ok", "k")
	require.NoError(t, err)
	require.Equal(t, store.StatusInProgress, rec.Status)
	require.Equal(t, store.ChargeCharged, rec.Charge.State)
	e.checkInvariants()

	fc.SetEnabled(false)
	again := e.call(alice.key, "ok", "k", `{"a":1}`)
	require.Equal(t, http.StatusOK, again.status, string(again.body))
	require.EqualValues(t, 2, e.up.count("/ok"), "taken over after the lease: executed again")
	require.Equal(t, []string{"credit", "charge"}, e.kinds(alice), "the charge is inherited")
	require.EqualValues(t, 95, e.balance(alice))
	rec, err = e.record(alice, "ok", "k")
	require.NoError(t, err)
	require.Equal(t, store.StatusCompleted, rec.Status)
	require.EqualValues(t, 2, rec.Generation)
	e.checkInvariants()
}
