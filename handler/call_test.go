//go:build !js

package handler_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/store"
)

// storm sends n identical calls at once and checks: one upstream call, one
// charge, n byte-identical bodies, n-1 marked replayed.
func storm(t *testing.T, tool string, n int) {
	e := setup(t)
	alice := e.newCaller("alice", "10.00")
	res := make([]response, n)
	parallel(n, func(i int) { res[i] = e.call(alice.key, tool, "storm-1", `{"q": "x"}`) })

	replayed := 0
	for i, r := range res {
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		require.Equal(t, string(res[0].body), string(r.body), "body %d differs", i)
		if r.header.Get("Idempotent-Replayed") == "true" {
			replayed++
		}
	}
	require.Equal(t, n-1, replayed)
	require.EqualValues(t, 1, e.up.calls.Load())
	require.Equal(t, []string{"credit", "charge"}, e.kinds(alice))
	require.EqualValues(t, 995, e.balance(alice))
	rec, err := e.record(alice, tool, "storm-1")
	require.NoError(t, err)
	require.Equal(t, store.StatusCompleted, rec.Status)
	require.EqualValues(t, 1, rec.Generation)
	e.checkInvariants()
}

func TestStorm50IdenticalCalls(t *testing.T) {
	t.Parallel()
	storm(t, "echo", 50)
}

func TestStorm100SlowUpstream(t *testing.T) {
	t.Parallel()
	storm(t, "slow", 100)
}

func TestDistinctKeysRaceForOnePrice(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "0.05")
	const n = 20
	res := make([]response, n)
	parallel(n, func(i int) { res[i] = e.call(alice.key, "echo", "key-"+string(rune('a'+i)), `{}`) })

	ok := 0
	for _, r := range res {
		switch r.status {
		case http.StatusOK:
			ok++
		default:
			m := r.problem(t, http.StatusPaymentRequired, "insufficient-funds")
			require.Equal(t, "0.05", m["price"])
			require.Equal(t, "0.00", m["balance"])
		}
	}
	require.Equal(t, 1, ok)
	require.EqualValues(t, 1, e.up.calls.Load())
	require.EqualValues(t, 0, e.balance(alice))
	require.Equal(t, []string{"credit", "charge"}, e.kinds(alice))
	for _, en := range e.entries(alice) {
		require.GreaterOrEqual(t, en.BalanceAfter, int64(0))
	}
	e.checkInvariants()
}

func TestUpstream500IsRefundedAndRetryExecutesOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")

	r := e.call(alice.key, "flaky", "k", `{"a":1}`)
	m := r.problem(t, http.StatusBadGateway, "upstream-failed")
	require.Equal(t, true, m["refunded"])
	require.Equal(t, true, m["retryable"])
	require.EqualValues(t, 500, m["upstreamStatus"])
	require.Contains(t, m["detail"], "refunded")
	require.EqualValues(t, 100, e.balance(alice))
	rec, err := e.record(alice, "flaky", "k")
	require.NoError(t, err)
	require.Equal(t, store.StatusFailed, rec.Status)
	require.Equal(t, store.ChargeRefunded, rec.Charge.State)
	e.checkInvariants()

	r = e.call(alice.key, "flaky", "k", `{"a":1}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Empty(t, r.header.Get("Idempotent-Replayed"))
	r2 := e.call(alice.key, "flaky", "k", `{"a":1}`)
	require.Equal(t, string(r.body), string(r2.body))
	require.Equal(t, "true", r2.header.Get("Idempotent-Replayed"))

	require.EqualValues(t, 2, e.up.calls.Load())
	require.EqualValues(t, 95, e.balance(alice), "net charge is one price")
	require.Equal(t, []string{"credit", "charge", "refund", "charge"}, e.kinds(alice))
	e.checkInvariants()
}

func TestHeartbeatPreventsTakeoverOfLongCall(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	// The upstream takes 900 ms against a 300 ms lease; duplicates keep
	// polling (each poll a Claim that would take over an expired lease).
	const n = 5
	res := make([]response, n)
	e.afterFirst(n, func(i int) { res[i] = e.call(alice.key, "longrun", "long", `{}`) })
	for _, r := range res {
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		require.Equal(t, string(res[0].body), string(r.body))
	}
	require.EqualValues(t, 1, e.up.calls.Load())
	rec, err := e.record(alice, "longrun", "long")
	require.NoError(t, err)
	require.EqualValues(t, 1, rec.Generation, "no takeover")
	require.Equal(t, []string{"credit", "charge"}, e.kinds(alice))
	e.checkInvariants()
}

func TestCallersWithTheSameKeyStringAreIsolated(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	bob := e.newCaller("bob", "1.00")

	ra := e.call(alice.key, "echo", "shared", `{"q":"x"}`)
	rb := e.call(bob.key, "echo", "shared", `{"q":"x"}`)
	require.Equal(t, http.StatusOK, ra.status)
	require.Equal(t, http.StatusOK, rb.status)
	require.Empty(t, rb.header.Get("Idempotent-Replayed"))
	require.NotEqual(t, string(ra.body), string(rb.body), "bob must not see alice's result")
	// A different body under the same key string is no mismatch for bob.
	require.Equal(t, http.StatusOK, e.call(bob.key, "echo", "other", `{"q":"y"}`).status)

	require.EqualValues(t, 3, e.up.calls.Load())
	require.Equal(t, []string{"credit", "charge"}, e.kinds(alice))
	require.Equal(t, []string{"credit", "charge", "charge"}, e.kinds(bob))

	// Each sees only its own record under the key.
	ga := e.do(http.MethodGet, "/v1/calls/shared", alice.key, nil, "").json(t)
	gb := e.do(http.MethodGet, "/v1/calls/shared", bob.key, nil, "").json(t)
	require.Len(t, ga["calls"], 1)
	require.Len(t, gb["calls"], 1)
	e.do(http.MethodGet, "/v1/calls/other", alice.key, nil, "").problem(t, http.StatusNotFound, "call-not-found")
	e.checkInvariants()
}

func TestReplayIsByteIdenticalWithOriginalReceipt(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	first := e.call(alice.key, "echo", "r", `{"b": 2, "a": [1, 2.50, "x"]}`)
	require.Equal(t, http.StatusOK, first.status)
	require.Equal(t, "application/json", first.header.Get("Content-Type"))
	m := first.json(t)
	rcpt := m["receipt"].(map[string]any)
	require.Equal(t, "0.05", rcpt["amount"])
	require.Equal(t, "0.05", rcpt["price"])
	require.Equal(t, "USD", rcpt["currency"])
	require.Equal(t, "0.95", rcpt["balanceAfter"])
	require.Equal(t, false, rcpt["refunded"])
	require.True(t, strings.HasPrefix(rcpt["callId"].(string), "call_"))
	require.Equal(t, map[string]any{"status": float64(200), "contentType": "application/json", "encoding": "json"}, m["upstream"])
	require.Equal(t, map[string]any{"a": []any{float64(1), 2.5, "x"}, "b": float64(2)}, m["output"].(map[string]any)["input"])

	// Same input, other whitespace and key order: the same request.
	replay := e.call(alice.key, "echo", "r", "{\n \"a\":[1,2.50,\"x\"],\"b\":2}")
	require.Equal(t, http.StatusOK, replay.status)
	require.Equal(t, "true", replay.header.Get("Idempotent-Replayed"))
	require.Equal(t, first.body, replay.body)
	require.EqualValues(t, 1, e.up.calls.Load())
	// The upstream got the canonical input.
	e.up.mu.Lock()
	require.Equal(t, `{"a":[1,2.50,"x"],"b":2}`, string(e.up.bodies[0]))
	e.up.mu.Unlock()
	require.EqualValues(t, 95, e.balance(alice))
	e.checkInvariants()
}

func TestUpstreamGetsDerivedKeyAndOnlyAllowedHeaders(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	r := e.do(http.MethodPost, "/v1/tools/echo/call", alice.key, map[string]string{
		"Idempotency-Key": "client-key", "Accept-Language": "fr", "X-Secret": "no", "Cookie": "c=1"}, `{}`)
	require.Equal(t, http.StatusOK, r.status)
	h := e.up.lastHeader()
	key := h.Get("Idempotency-Key")
	require.True(t, strings.HasPrefix(key, "tg-"), key)
	require.NotContains(t, key, "client-key")
	require.Equal(t, "fr", h.Get("Accept-Language"))
	require.Equal(t, "2", h.Get("X-Tool-Version"))
	require.Empty(t, h.Get("Authorization"))
	require.Empty(t, h.Get("X-Secret"))
	require.Empty(t, h.Get("Cookie"))

	// A re-execution of one key (retry after a failure) sends the same key.
	require.Equal(t, http.StatusBadGateway, e.call(alice.key, "flaky", "client-key", `{}`).status)
	k1 := e.up.lastHeader().Get("Idempotency-Key")
	require.Equal(t, http.StatusOK, e.call(alice.key, "flaky", "client-key", `{}`).status)
	require.Equal(t, k1, e.up.lastHeader().Get("Idempotency-Key"))
	require.NotEqual(t, key, k1, "scoped per tool")
	e.checkInvariants()
}

func TestUpstream4xxIsFinalRefundedAndReplayed(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	r := e.call(alice.key, "bad", "k", `{}`)
	m := r.problem(t, http.StatusFailedDependency, "upstream-rejected")
	require.Equal(t, map[string]any{"error": "bad input"}, m["output"])
	require.EqualValues(t, 400, m["upstream"].(map[string]any)["status"])
	rcpt := m["receipt"].(map[string]any)
	require.Equal(t, true, rcpt["refunded"])
	require.Equal(t, "0.00", rcpt["amount"])
	require.Equal(t, "1.00", rcpt["balanceAfter"])

	again := e.call(alice.key, "bad", "k", `{}`)
	require.Equal(t, http.StatusFailedDependency, again.status)
	require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
	require.Equal(t, r.body, again.body)
	require.EqualValues(t, 1, e.up.calls.Load())
	require.EqualValues(t, 100, e.balance(alice))
	require.Equal(t, []string{"credit", "charge", "refund"}, e.kinds(alice))
	rec, err := e.record(alice, "bad", "k")
	require.NoError(t, err)
	require.Equal(t, store.StatusCompleted, rec.Status)
	require.Equal(t, store.ChargeRefunded, rec.Charge.State)
	e.checkInvariants()
}

func TestUpstreamTimeoutAndNetworkErrorAreRefunded(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		tool   string
		status int
		slug   string
	}{
		"timeout":     {"timeout", http.StatusGatewayTimeout, "upstream-timeout"},
		"unreachable": {"unreachable", http.StatusBadGateway, "upstream-failed"},
		"500":         {"fail", http.StatusBadGateway, "upstream-failed"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			alice := e.newCaller("alice", "1.00")
			m := e.call(alice.key, tc.tool, "k", `{}`).problem(t, tc.status, tc.slug)
			require.Equal(t, true, m["refunded"])
			require.Equal(t, "1.00", m["balance"])
			require.EqualValues(t, 100, e.balance(alice))
			require.Equal(t, []string{"credit", "charge", "refund"}, e.kinds(alice))
			rec, err := e.record(alice, tc.tool, "k")
			require.NoError(t, err)
			require.Equal(t, store.StatusFailed, rec.Status)
			e.checkInvariants()
		})
	}
}

func TestNonJSONOutputIsEmbeddedAsText(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	r := e.call(alice.key, "text", "k", `{}`)
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, string(r.body), `"output":"plain <text> & more"`)
	require.Equal(t, "text", r.json(t)["upstream"].(map[string]any)["encoding"])
	e.checkInvariants()
}

func TestWaiterTakesOverFailedAttemptOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	// The first attempt fails after 300 ms; the duplicates waiting on it
	// take over: one executes (successfully), the others replay its answer.
	const n = 6
	res := make([]response, n)
	e.afterFirst(n, func(i int) { res[i] = e.call(alice.key, "flakyslow", "k", `{}`) })
	var ok []response
	for _, r := range res {
		if r.status == http.StatusOK {
			ok = append(ok, r)
			continue
		}
		r.problem(t, http.StatusBadGateway, "upstream-failed")
	}
	require.Len(t, ok, n-1)
	for _, r := range ok {
		require.Equal(t, string(ok[0].body), string(r.body))
	}
	require.EqualValues(t, 2, e.up.calls.Load())
	require.EqualValues(t, 95, e.balance(alice))
	require.Equal(t, []string{"credit", "charge", "refund", "charge"}, e.kinds(alice))
	rec, err := e.record(alice, "flakyslow", "k")
	require.NoError(t, err)
	require.EqualValues(t, 2, rec.Generation)
	e.checkInvariants()
}

// TestWaiterReadsStayLowForOneSecondUpstream: waiters on another engine (an
// other isolate, where no local flight can wake them) poll the store; each
// makes at most 15 reads while a 1 s call runs. When that engine has seen
// the tool's latency (warm), a waiter polls at the expected completion and
// shortly after it: at most 6 reads (its claim, then polls 5 ms after the
// expected answer and 10, 20, 40 ms later: a loaded machine's late Complete).
func TestWaiterReadsStayLowForOneSecondUpstream(t *testing.T) {
	t.Parallel()
	for _, warm := range []bool{false, true} {
		t.Run(fmt.Sprintf("warm=%v", warm), func(t *testing.T) {
			t.Parallel()
			var cfg handler.Config
			e := setup(t, func(c *handler.Config) { cfg = *c })
			other, err := handler.New(cfg)
			require.NoError(t, err)
			isolate2 := httptest.NewServer(other)
			t.Cleanup(isolate2.Close)
			alice := e.newCaller("alice", "1.00")
			call2 := func(key string) {
				req, err := http.NewRequest(http.MethodPost, isolate2.URL+"/v1/tools/slow1s/call", strings.NewReader(`{}`))
				require.NoError(t, err)
				req.Header.Set("Authorization", "Bearer "+alice.key)
				req.Header.Set("Idempotency-Key", key)
				res, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				res.Body.Close()
				require.Equal(t, http.StatusOK, res.StatusCode)
			}
			maxReads := 15.0
			if warm {
				call2("warm") // the other engine times the tool
				maxReads = 6
			}
			const n = 5
			e.afterFirst(n, func(i int) {
				if i == 0 {
					require.Equal(t, http.StatusOK, e.call(alice.key, "slow1s", "k", `{}`).status)
					return
				}
				call2("k")
			})
			waiters, reads := 0, 0.0
			for _, l := range e.logLines() {
				if l["outcome"] == string(engine.OutcomeWaited) {
					waiters++
					reads += l["roundTrips"].(float64)
					require.LessOrEqual(t, l["roundTrips"], maxReads, "reads of one waiter")
					t.Logf("waiter round trips: %v", l["roundTrips"])
				}
			}
			require.Equal(t, n-1, waiters)
			// At least one claim and one poll; duplicates on one engine may
			// join a claim in progress there and share polls.
			require.GreaterOrEqual(t, reads, float64(2))
			require.EqualValues(t, map[bool]int64{false: 1, true: 2}[warm], e.up.calls.Load())
			e.checkInvariants()
		})
	}
}

func TestFastPathRoundTrips(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	require.Equal(t, http.StatusOK, e.do(http.MethodGet, "/v1/balance", alice.key, nil, "").status) // caches the caller

	before := e.db.Count()
	require.Equal(t, http.StatusOK, e.call(alice.key, "echo", "k", `{}`).status)
	paid := e.db.Count() - before
	before = e.db.Count()
	require.Equal(t, http.StatusOK, e.call(alice.key, "echo", "k", `{}`).status)
	replay := e.db.Count() - before
	before = e.db.Count()
	require.Equal(t, http.StatusOK, e.call(alice.key, "free", "k", `{}`).status)
	free := e.db.Count() - before

	require.EqualValues(t, 2, paid, "claim and charge (one batch), complete")
	require.EqualValues(t, 1, replay, "claim")
	require.EqualValues(t, 2, free, "claim, complete")
	lines := e.logLines()
	require.EqualValues(t, paid, lines[len(lines)-3]["roundTrips"])
	require.EqualValues(t, 1, lines[len(lines)-2]["roundTrips"])
	e.checkInvariants()
}

func TestInsufficientThenTopUpRetryExecutes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "0.01")
	m := e.call(alice.key, "echo", "k", `{}`).problem(t, http.StatusPaymentRequired, "insufficient-funds")
	require.Equal(t, "0.05", m["price"])
	require.Equal(t, "0.01", m["balance"])
	require.Equal(t, "USD", m["currency"])
	e.credit(alice, "1.00", "top-up")
	r := e.call(alice.key, "echo", "k", `{}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.EqualValues(t, 96, e.balance(alice))
	require.EqualValues(t, 1, e.up.calls.Load())
	e.checkInvariants()
}

func TestPanicIsRecoveredAndRefunded(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	e.call(alice.key, "boom", "k", `{}`).problem(t, http.StatusInternalServerError, "internal")
	require.EqualValues(t, 100, e.balance(alice))
	require.Equal(t, []string{"credit", "charge", "refund"}, e.kinds(alice))
	rec, err := e.record(alice, "boom", "k")
	require.NoError(t, err)
	require.Equal(t, store.StatusFailed, rec.Status)
	e.checkInvariants()
	// The gateway still serves.
	require.Equal(t, http.StatusOK, e.call(alice.key, "echo", "k", `{}`).status)
	e.checkInvariants()
}

// failingStore injects store faults around a real store.
type failingStore struct {
	store.Store
	err error
}

func (s failingStore) Claim(context.Context, store.ClaimParams) (store.ClaimResult, error) {
	return store.ClaimResult{}, s.err
}

func (s failingStore) ClaimCharge(context.Context, store.ClaimChargeParams) (store.ClaimChargeResult, error) {
	return store.ClaimChargeResult{}, s.err
}

func TestStoreFailureIs503WithRetryAfter(t *testing.T) {
	t.Parallel()
	var st store.Store
	e := setup(t, func(c *handler.Config) {
		st = c.Store
		c.Store = failingStore{Store: c.Store, err: context.DeadlineExceeded}
	})
	alice := e.newCaller("alice", "1.00")
	r := e.call(alice.key, "echo", "k", `{}`)
	r.problem(t, http.StatusServiceUnavailable, "store-unavailable")
	require.Equal(t, "1", r.header.Get("Retry-After"))
	require.EqualValues(t, 0, e.up.calls.Load())
	require.NoError(t, st.CheckInvariants(context.Background()))
}

func TestGetCallShowsStatusChargeAndTrace(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	key := "order/42 #1?"
	require.Equal(t, http.StatusOK, e.call(alice.key, "echo", key, `{}`).status)
	require.Equal(t, http.StatusBadGateway, e.call(alice.key, "fail", key, `{}`).status)

	r := e.do(http.MethodGet, "/v1/calls/"+url.PathEscape(key), alice.key, nil, "")
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	m := r.json(t)
	require.Equal(t, key, m["key"])
	calls := m["calls"].([]any)
	require.Len(t, calls, 2)
	echo := calls[0].(map[string]any)
	require.Equal(t, "echo", echo["tool"])
	require.Equal(t, "completed", echo["status"])
	require.Equal(t, "charged", echo["chargeState"])
	require.Equal(t, "0.05", echo["amount"])
	require.EqualValues(t, 1, echo["generation"])
	require.EqualValues(t, 200, echo["responseStatus"])
	var types []string
	for _, ev := range echo["events"].([]any) {
		types = append(types, ev.(map[string]any)["type"].(string))
	}
	require.Equal(t, []string{"created", "charge", "completed"}, types)
	fail := calls[1].(map[string]any)
	require.Equal(t, "failed", fail["status"])
	require.Equal(t, "refunded", fail["chargeState"])
	require.Equal(t, "0.00", fail["amount"])

	only := e.do(http.MethodGet, "/v1/calls/"+url.PathEscape(key)+"?tool=fail", alice.key, nil, "").json(t)
	require.Len(t, only["calls"], 1)
	e.do(http.MethodGet, "/v1/calls/x?tool=nope", alice.key, nil, "").problem(t, http.StatusNotFound, "unknown-tool")
	e.do(http.MethodGet, "/v1/calls/x", "", nil, "").problem(t, http.StatusUnauthorized, "unauthorized")
	e.checkInvariants()
}

func TestToolsBalanceHealth(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "12.34")
	tools := e.do(http.MethodGet, "/v1/tools", "", nil, "")
	require.Equal(t, http.StatusOK, tools.status)
	require.NotContains(t, string(tools.body), e.up.srv.URL, "upstreams stay private")
	first := tools.json(t)["tools"].([]any)[0].(map[string]any)
	require.Equal(t, "echo", first["name"])
	require.Equal(t, "0.05", first["price"])
	require.Equal(t, "USD", first["currency"])
	require.Equal(t, map[string]any{"type": "object"}, first["inputSchema"])

	b := e.do(http.MethodGet, "/v1/balance", alice.key, nil, "").json(t)
	require.Equal(t, alice.id, b["caller"])
	require.Equal(t, []any{map[string]any{"currency": "USD", "amount": "12.34", "minor": float64(1234)}}, b["balances"])
	e.do(http.MethodGet, "/v1/balance?currency=XXX", alice.key, nil, "").problem(t, http.StatusBadRequest, "invalid-request")
	e.do(http.MethodGet, "/v1/balance", "", nil, "").problem(t, http.StatusUnauthorized, "unauthorized")

	h := e.do(http.MethodGet, "/healthz", "", nil, "")
	require.Equal(t, http.StatusOK, h.status)
	require.JSONEq(t, `{"ok":true}`, string(h.body))
	e.do(http.MethodGet, "/nope", "", nil, "").problem(t, http.StatusNotFound, "not-found")
}

func TestAdminRoutes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, path := range []string{"/v1/admin/callers", "/v1/admin/credits"} {
		for name, token := range map[string]string{"none": "", "wrong": "nope", "prefix": adminToken[:10]} {
			t.Run(path+"/"+name, func(t *testing.T) {
				r := e.do(http.MethodPost, path, token, nil, `{"name":"x","caller":"x","amount":"1","currency":"USD","reference":"r"}`)
				r.problem(t, http.StatusUnauthorized, "unauthorized")
				require.Equal(t, `Bearer realm="toolgate"`, r.header.Get("WWW-Authenticate"))
			})
		}
	}
	alice := e.newCaller("alice", "")
	body := `{"caller": "` + alice.id + `", "amount": "5.00", "currency": "USD", "reference": "stripe:pi_1"}`
	r := e.do(http.MethodPost, "/v1/admin/credits", adminToken, nil, body)
	require.Equal(t, http.StatusCreated, r.status)
	require.Equal(t, "5.00", r.json(t)["balance"])
	r = e.do(http.MethodPost, "/v1/admin/credits", adminToken, nil, body)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, false, r.json(t)["applied"])
	require.Equal(t, "true", r.header.Get("Idempotent-Replayed"))
	e.do(http.MethodPost, "/v1/admin/credits", adminToken, nil, strings.Replace(body, "5.00", "6.00", 1)).
		problem(t, http.StatusConflict, "reference-conflict")
	e.do(http.MethodPost, "/v1/admin/credits", adminToken, nil, strings.Replace(body, "5.00", "5.001", 1)).
		problem(t, http.StatusBadRequest, "invalid-request")
	e.do(http.MethodPost, "/v1/admin/credits", adminToken, nil, strings.Replace(body, "USD", "XYZ", 1)).
		problem(t, http.StatusBadRequest, "invalid-request")
	e.do(http.MethodPost, "/v1/admin/callers", adminToken, nil, `{"name": "x", "extra": 1}`).
		problem(t, http.StatusBadRequest, "invalid-request")
	e.do(http.MethodPost, "/v1/admin/credits", adminToken, nil, strings.Replace(body, alice.id, "typo", 1)).
		problem(t, http.StatusNotFound, "unknown-caller")
	entries, err := e.st.Entries(context.Background(), store.EntryFilter{Caller: "typo"})
	require.NoError(t, err)
	require.Empty(t, entries, "a credit to an unknown caller writes nothing")
	require.EqualValues(t, 500, e.balance(alice))

	r = e.do(http.MethodPost, "/v1/admin/callers", adminToken, nil, `{"name": "bob", "id": "bob"}`)
	require.Equal(t, http.StatusCreated, r.status)
	m := r.json(t)
	require.Equal(t, "bob", m["id"])
	require.True(t, strings.HasPrefix(m["key"].(string), engine.CallerKeyPrefix))
	require.Len(t, m["key"], 3+43)
	e.do(http.MethodPost, "/v1/admin/callers", adminToken, nil, `{"name": "bob", "id": "bob"}`).
		problem(t, http.StatusConflict, "conflict")
	e.checkInvariants()

	// Empty AdminToken disables the admin routes.
	off := setup(t, func(c *handler.Config) { c.AdminToken = "" })
	off.do(http.MethodPost, "/v1/admin/callers", "", nil, `{"name":"x"}`).problem(t, http.StatusUnauthorized, "unauthorized")
}

func TestLogsOneLinePerCallWithoutSecrets(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	e.call(alice.key, "echo", "secret-client-key", `{}`)
	e.call(alice.key, "echo", "secret-client-key", `{}`)
	e.call(alice.key, "echo", "secret-client-key", `{"x":1}`)
	e.call("tg_wrong", "echo", "k", `{}`)
	lines := e.logLines()
	require.Len(t, lines, 4)
	var outcomes []any
	for _, l := range lines {
		outcomes = append(outcomes, l["outcome"])
		for _, f := range []string{"key", "caller", "tool", "amount", "status", "durationMs", "roundTrips"} {
			require.Contains(t, l, f)
		}
	}
	require.Equal(t, []any{"executed", "replayed", "mismatch", "failed"}, outcomes)
	require.Equal(t, "0.05", lines[0]["amount"])
	require.Equal(t, alice.id, lines[0]["caller"])
	require.Len(t, lines[0]["key"], 16)
	require.Equal(t, lines[0]["key"], lines[1]["key"])
	all := string(e.logs.Bytes())
	require.NotContains(t, all, alice.key)
	require.NotContains(t, all, adminToken)
	require.NotContains(t, all, "secret-client-key")
}

// firstHeartbeatsFail makes every heartbeat of generation 1 fail, as if the
// store were unreachable for that owner only.
type firstHeartbeatsFail struct{ store.Store }

func (s firstHeartbeatsFail) Heartbeat(ctx context.Context, f store.Fence, until, now time.Time) error {
	if f.Generation == 1 {
		return errors.New("store unreachable")
	}
	return s.Store.Heartbeat(ctx, f, until, now)
}

func TestLostLeaseOwnerNeitherCompletesNorChargesAgainAndReplays(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *handler.Config) { c.Store = firstHeartbeatsFail{c.Store} })
	alice := e.newCaller("alice", "1.00")
	// A's heartbeats fail, so its 300 ms lease runs out during the 900 ms
	// upstream call; B, waiting, takes over and executes. A's Complete is
	// fenced out; A then waits for B and replays B's answer.
	res := make([]response, 2)
	e.afterFirst(2, func(i int) { res[i] = e.call(alice.key, "longrun", "k", `{}`) })
	require.Equal(t, http.StatusOK, res[0].status, string(res[0].body))
	require.Equal(t, http.StatusOK, res[1].status, string(res[1].body))
	require.Equal(t, string(res[1].body), string(res[0].body))
	require.Equal(t, "true", res[0].header.Get("Idempotent-Replayed"))
	require.EqualValues(t, 2, e.up.calls.Load(), "a lost lease costs a second upstream call, deduped upstream by its key")
	require.Equal(t, []string{"credit", "charge"}, e.kinds(alice), "the takeover inherits the charge")
	rec, err := e.record(alice, "longrun", "k")
	require.NoError(t, err)
	require.EqualValues(t, 2, rec.Generation)
	e.up.mu.Lock()
	require.Equal(t, e.up.headers[0].Get("Idempotency-Key"), e.up.headers[1].Get("Idempotency-Key"))
	e.up.mu.Unlock()
	e.checkInvariants()
}

// gatedClaims holds the first ClaimCharge until release is closed (entered
// is closed once it is held) and counts them; failFirst makes the first one
// fail after the gate, as an unreachable store would; stallReply applies it
// first and holds only its reply (a round trip that stalls on the way back).
type gatedClaims struct {
	store.Store
	calls      atomic.Int32
	entered    chan struct{}
	release    chan struct{}
	failFirst  bool
	stallReply bool
}

func (s *gatedClaims) ClaimCharge(ctx context.Context, p store.ClaimChargeParams) (store.ClaimChargeResult, error) {
	if s.calls.Add(1) != 1 {
		return s.Store.ClaimCharge(ctx, p)
	}
	if s.stallReply {
		res, err := s.Store.ClaimCharge(ctx, p)
		close(s.entered)
		<-s.release
		return res, err
	}
	close(s.entered)
	<-s.release
	if s.failFirst {
		return store.ClaimChargeResult{}, errors.New("store unreachable")
	}
	return s.Store.ClaimCharge(ctx, p)
}

// TestDuplicatesOnOneEngineShareOneClaim: duplicates that reach an engine
// while a claim of their key is in progress there wait for that claim
// instead of claiming too (one store round trip for all of them), and answer
// the one execution's bytes, charged once. When that claim fails, each
// claims on its own, as without it; when it does not return (stuck), they
// stop waiting for it after the tool's lease (300 ms for longrun) and claim
// on their own. When it was applied but its reply came after its lease ran
// out (stalled), a duplicate has taken the key over meanwhile, and the late
// owner must not execute too. Either way one of them executes, once.
func TestDuplicatesOnOneEngineShareOneClaim(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"ok", "fail", "stuck", "stalled"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			gate := &gatedClaims{entered: make(chan struct{}), release: make(chan struct{}), failFirst: mode == "fail",
				stallReply: mode == "stalled"}
			e := setup(t, func(c *handler.Config) { gate.Store = c.Store; c.Store = gate })
			alice := e.newCaller("alice", "1.00")
			require.Equal(t, http.StatusOK, e.do(http.MethodGet, "/v1/balance", alice.key, nil, "").status) // caches the caller
			tool := map[string]string{"ok": "echo", "fail": "echo", "stuck": "longrun", "stalled": "longrun"}[mode]
			const n = 10
			res := make([]response, n)
			var first, dups sync.WaitGroup
			first.Go(func() { res[0] = e.call(alice.key, tool, "k", `{"a":1}`) })
			<-gate.entered // the first claim is in progress
			for i := 1; i < n; i++ {
				dups.Go(func() { res[i] = e.call(alice.key, tool, "k", `{ "a" : 1 }`) })
			}
			if mode == "stuck" || mode == "stalled" {
				dups.Wait() // they answer without the stuck claim
				close(gate.release)
			} else {
				time.Sleep(300 * time.Millisecond) // the duplicates join it
				close(gate.release)
				dups.Wait()
			}
			first.Wait()

			ok := 0
			for _, r := range res {
				if r.status == http.StatusOK {
					ok++
					require.Equal(t, string(res[n-1].body), string(r.body), "one execution's bytes")
				}
			}
			switch mode {
			case "fail":
				require.Equal(t, http.StatusServiceUnavailable, res[0].status, string(res[0].body))
				require.Equal(t, n-1, ok)
				require.EqualValues(t, n, gate.calls.Load(), "the failed claim, then one claim per duplicate")
			case "stuck", "stalled":
				require.Equal(t, n, ok, "the stuck claim returns at last, and replays")
				require.EqualValues(t, n, gate.calls.Load(), "the stuck claim (which returns at last), then one per duplicate")
			default:
				require.Equal(t, n, ok)
				require.EqualValues(t, 1, gate.calls.Load(), "one claim for all")
				rts := 0.0
				for _, l := range e.logLines() {
					if l["outcome"] == string(engine.OutcomeWaited) || l["outcome"] == string(engine.OutcomeReplayed) {
						rts += l["roundTrips"].(float64)
					}
				}
				require.Zero(t, rts, "the duplicates made no round trip")
			}
			require.EqualValues(t, 1, e.up.calls.Load(), "one execution")
			require.EqualValues(t, 95, e.balance(alice), "one charge")
			e.checkInvariants()
		})
	}
}

// TestLocalWaitersShareTheExecution: duplicates on the same engine (one
// isolate) wait for the execution in flight there, not for the store: each
// costs its one claim (and at most one poll, if it came before the owner
// published its flight), and they answer the owner's bytes.
func TestLocalWaitersShareTheExecution(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	require.Equal(t, http.StatusOK, e.do(http.MethodGet, "/v1/balance", alice.key, nil, "").status) // caches the caller
	const n = 20
	before := e.db.Count()
	res := make([]response, n)
	parallel(n, func(i int) { res[i] = e.call(alice.key, "slow", "k", `{}`) })
	for _, r := range res {
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		require.Equal(t, string(res[0].body), string(r.body))
	}
	// n claims (one of them with the charge) and one complete; a waiter that
	// claims before the owner has published its flight polls the store
	// until its next poll finds the flight (once, or twice when the machine
	// is loaded and the owner's goroutine is late to publish). Polling for
	// the whole 300 ms would cost 5-6 reads per waiter.
	require.LessOrEqual(t, e.db.Count()-before, int64(3*n))
	waited, replayed := 0, 0
	for _, l := range e.logLines() {
		switch l["outcome"] {
		case string(engine.OutcomeWaited):
			waited++
			require.LessOrEqual(t, l["roundTrips"], float64(3))
		case string(engine.OutcomeReplayed):
			replayed++ // a duplicate the loaded machine started after the answer was stored
		}
	}
	require.Equal(t, n-1, waited+replayed)
	require.Positive(t, waited)
	require.EqualValues(t, 1, e.up.calls.Load())
	require.EqualValues(t, 95, e.balance(alice))
	e.checkInvariants()
}
