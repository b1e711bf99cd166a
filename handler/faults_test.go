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
	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/problem"
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
// FaultClient made from cfg, and the faultTools catalog. When onAnswer is
// not nil, it runs each time the upstream has answered, before the engine
// sees the answer. The faults are off until the test turns them on (so that
// creating callers goes through).
func setupFaults(t *testing.T, cfg storetest.FaultConfig, onAnswer func(fc *storetest.FaultClient), opts ...option) (*env, *storetest.FaultClient) {
	t.Helper()
	var fc *storetest.FaultClient
	e := setupDB(t, func(db store.DbClient) store.DbClient {
		fc = storetest.NewFaultClient(db, cfg)
		fc.SetEnabled(false)
		return fc
	}, append([]option{faultTools(t, faultLease, func() {
		if onAnswer != nil {
			onAnswer(fc)
		}
	})}, opts...)...)
	return e, fc
}

// faultTools replaces the catalog with three tools of the given lease: "ok"
// (200), "bad" (400, stored as 424) and "fail" (500). onAnswer runs each
// time the upstream has answered.
func faultTools(t *testing.T, lease time.Duration, onAnswer func()) option {
	return func(c *handler.Config) {
		echo, ok := c.Catalog.Tool("echo")
		require.True(t, ok)
		base := strings.TrimSuffix(echo.URL, "/ok")
		var docs []string
		for _, tool := range [][2]string{{"ok", "/ok"}, {"bad", "/bad"}, {"fail", "/fail"}} {
			docs = append(docs, fmt.Sprintf(`{"name": %q, "description": "d", "price": "0.05", "currency": "USD",
				"lease": %q, "upstream": {"url": %q}}`, tool[0], lease, base+tool[1]))
		}
		cat, err := catalog.ParseCatalog([]byte(`{"tools": [` + strings.Join(docs, ",") + `]}`))
		require.NoError(t, err)
		c.Catalog = cat
		up := c.Upstream
		c.Upstream = engine.UpstreamFunc(func(ctx context.Context, r engine.UpstreamRequest) (engine.UpstreamResponse, error) {
			res, err := up.Do(ctx, r)
			onAnswer()
			return res, err
		})
	}
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

// TestStormUnderFaults sends 30 concurrent calls on 5 keys while a third of
// the database calls are delayed and a fifth fail, half of those after
// their commit. The final writes (complete, refund, fail) get their own
// faults: half of them fail, up to 4 in all, fewer than the tries one final
// write gets within its budget. Every answer is final (a 200, executed or
// replayed; for a failing upstream a refunded 502) or a retryable problem
// with Retry-After. Once the faults stop and the lease has passed, one more
// call per key finishes it. Then, with a working upstream, every key is
// completed, charged one price net and executed upstream once (no final
// write gave up, so no takeover re-executed); with a failing one, every key
// is failed and refunded (net zero) and was executed at most once per
// claim. One sweep past the TTL leaves nothing behind.
func TestStormUnderFaults(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"ok", "fail"} {
		t.Run(tool, func(t *testing.T) {
			t.Parallel()
			stormUnderFaults(t, tool)
		})
	}
}

func stormUnderFaults(t *testing.T, tool string) {
	// The lease is long, so that no waiter takes a key over during the
	// storm and a slow try (the race detector on a busy machine) does not
	// eat the final writes' budget; the clock jumps past it afterwards.
	const keys, calls, stormLease = 5, 30, 10 * time.Second
	finalWrite := func(q string) bool { return completeStmt(q) || failStmt(q) || refundStmt(q) }
	var offset atomic.Int64 // the clock, ahead of the wall clock by this
	var general, final *storetest.FaultClient
	e := setupDB(t, func(db store.DbClient) store.DbClient {
		final = storetest.NewFaultClient(db, storetest.FaultConfig{Seed: 11, BeforeRate: 0.25, AfterRate: 0.25,
			MaxErrors: 4, MatchFunc: finalWrite})
		general = storetest.NewFaultClient(final, storetest.FaultConfig{Seed: 10, BeforeRate: 0.1, AfterRate: 0.1,
			LatencyRate: 0.3, MaxLatency: 3 * time.Millisecond, MatchFunc: func(q string) bool { return !finalWrite(q) }})
		general.SetEnabled(false)
		final.SetEnabled(false)
		return general
	}, faultTools(t, stormLease, func() {}), func(c *handler.Config) {
		c.NowFunc = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
		c.WaitForInProgress = 300 * time.Millisecond
	})
	alice := e.newCaller("alice", "10.00")
	general.SetEnabled(true)
	final.SetEnabled(true)

	res := make([]response, calls)
	parallel(calls, func(i int) {
		res[i] = e.call(alice.key, tool, fmt.Sprint("key-", i%keys), fmt.Sprintf(`{"k":%d}`, i%keys))
	})
	general.SetEnabled(false)
	final.SetEnabled(false)

	statuses := map[string]int{}
	for _, r := range res {
		switch {
		case r.status == http.StatusOK && r.header.Get("Idempotent-Replayed") == "true":
			statuses["200 replayed"]++
		case r.status == http.StatusOK:
			statuses["200 executed"]++
		case r.status == http.StatusBadGateway && tool == "fail":
			m := r.problem(t, r.status, "upstream-failed")
			require.Equal(t, true, m["refunded"], string(r.body))
			statuses["502 refunded"]++
		case r.status == http.StatusServiceUnavailable:
			r.problem(t, r.status, "store-unavailable")
			require.NotEmpty(t, r.header.Get("Retry-After"), string(r.body))
			statuses["503 store-unavailable"]++
		case r.status == http.StatusConflict:
			m := r.json(t)
			require.Contains(t, []any{problem.TypeBase + "in-progress", problem.TypeBase + "lost-lease"}, m["type"])
			require.Equal(t, "application/problem+json", r.header.Get("Content-Type"))
			require.NotEmpty(t, r.header.Get("Retry-After"), string(r.body))
			statuses["409 "+strings.TrimPrefix(m["type"].(string), problem.TypeBase)]++
		default:
			require.Failf(t, "unexpected answer", "%d %s", r.status, r.body)
		}
	}
	e.checkInvariants()
	// A key left in progress once every request has answered was claimed
	// by a request that did not learn it (a lost reply: 503).
	stranded := 0
	for k := 0; k < keys; k++ {
		rec, err := e.record(alice, tool, fmt.Sprint("key-", k))
		if err == nil && rec.Status == store.StatusInProgress {
			stranded++
		}
	}
	require.LessOrEqual(t, stranded, statuses["503 store-unavailable"])

	// The faults stop and the lease passes: one call per key finishes it.
	offset.Add(int64(stormLease + time.Second))
	for k := 0; k < keys; k++ {
		r := e.call(alice.key, tool, fmt.Sprint("key-", k), fmt.Sprintf(`{"k":%d}`, k))
		if tool == "fail" {
			r.problem(t, http.StatusBadGateway, "upstream-failed")
			continue
		}
		require.Equal(t, http.StatusOK, r.status, string(r.body))
	}

	// Executions per key, from the bodies the upstream received, and the
	// final writes that gave up (each may cost one takeover).
	execs := make([]int, keys)
	e.up.mu.Lock()
	for _, b := range e.up.bodies {
		var k int
		_, err := fmt.Sscanf(string(b), `{"k":%d}`, &k)
		require.NoError(t, err)
		execs[k]++
	}
	e.up.mu.Unlock()
	gaveUp, takeovers := 0, 0
	for _, l := range e.logLines() {
		if msg, _ := l["error"].(string); strings.Contains(msg, "complete key") || strings.Contains(msg, "refund key") ||
			strings.Contains(msg, "fail key") {
			gaveUp++
			t.Logf("a final write gave up: %q", msg)
		}
	}
	price, status, state := int64(5), store.StatusCompleted, store.ChargeCharged
	if tool == "fail" {
		price, status, state = 0, store.StatusFailed, store.ChargeRefunded
	}
	extra := 0
	for k := 0; k < keys; k++ {
		key := fmt.Sprint("key-", k)
		require.GreaterOrEqual(t, execs[k], 1, key)
		extra += execs[k] - 1
		rec, err := e.record(alice, tool, key)
		require.NoError(t, err)
		require.Equal(t, status, rec.Status, key)
		require.Equal(t, state, rec.Charge.State, key)
		if rec.Generation > 1 {
			takeovers++
		}
		if tool == "fail" {
			// Each claim executes at most once (a claim whose reply was
			// lost does not execute at all).
			require.LessOrEqual(t, int64(execs[k]), rec.Generation, "%s: executions and claims", key)
		}
		es, err := e.st.Entries(context.Background(), store.EntryFilter{Key: engine.ScopedKey(alice.id, tool, key)})
		require.NoError(t, err)
		var net int64
		for _, en := range es {
			net -= en.Amount
			require.True(t, net == 0 || net == 5, "%s: net charge %d", key, net)
		}
		require.EqualValues(t, price, net, "net charge of %s", key)
	}
	require.Zero(t, gaveUp, "no final write gave up")
	if tool == "ok" {
		require.Zero(t, extra, "no second execution")
	}
	require.Positive(t, final.Counts().Errors(), "final writes met faults")
	require.EqualValues(t, 1000-keys*price, e.balance(alice))
	e.checkInvariants()

	// One sweep past the TTL removes every record; no charge moves.
	n, err := e.st.Sweep(context.Background(), time.Now().Add(time.Duration(offset.Load())+store.DefaultTTL+stormLease), 100)
	require.NoError(t, err)
	require.Equal(t, keys, n)
	require.EqualValues(t, 1000-keys*price, e.balance(alice))
	e.checkInvariants()
	t.Logf("storm under faults, %s upstream: answers %v; faults on other statements: %s; on final writes: %s; "+
		"keys left in progress %d; upstream executions per key %v; final writes that gave up %d; keys taken over %d",
		tool, statuses, general.Counts(), final.Counts(), stranded, execs, gaveUp, takeovers)
}

// TestWaiterWhoseTakeoverReplyWasLost: a waiter's takeover claim commits but
// its reply is lost; on its next poll the key is in progress under its own
// owner id. It must claim again (the same owner gets the key back) and
// execute, not wait for itself until 409. (Found by review.)
func TestWaiterWhoseTakeoverReplyWasLost(t *testing.T) {
	t.Parallel()
	var claims atomic.Int64
	isClaim := func(q string) bool {
		if !strings.HasPrefix(strings.TrimSpace(q), "INSERT INTO idem_records") {
			return false
		}
		return claims.Add(1) >= 2 // not the request's first claim-and-charge
	}
	e, fc := setupFaults(t, storetest.FaultConfig{AfterRate: 1, MaxErrors: 1, MatchFunc: isClaim}, nil,
		func(c *handler.Config) { c.WaitForInProgress = time.Second })
	alice := e.newCaller("alice", "1.00")
	canonical, err := engine.Canonicalize([]byte(`{"a":1}`))
	require.NoError(t, err)
	key := engine.ScopedKey(alice.id, "ok", "k")
	// Another attempt holds the key for 300 ms and then vanishes (a crash).
	_, err = e.st.Claim(context.Background(), store.ClaimParams{Key: key, Owner: "X",
		Fingerprint: engine.Fingerprint("ok", canonical), Now: time.Now(), Lease: 300 * time.Millisecond, TTL: time.Hour})
	require.NoError(t, err)
	fc.SetEnabled(true)

	r := e.call(alice.key, "ok", "k", `{"a":1}`)
	require.EqualValues(t, 1, fc.Counts().After, "the takeover's reply was lost")
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.EqualValues(t, 1, e.up.count("/ok"))
	require.EqualValues(t, 95, e.balance(alice))
	e.checkInvariants()
}
