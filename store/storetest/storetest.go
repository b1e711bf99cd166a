// Package storetest is the conformance suite every store.Store backend must
// pass. A backend's own test file calls Exercise with a Harness; a new
// backend is "one package plus this suite".
//
// The cases are plain data (Cases) taking a minimal TB, so that runners
// other than `go test` — the D1 runner inside workerd — can execute them.
package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// TB is the part of *testing.T the cases use.
type TB interface {
	require.TestingT
	Helper()
}

// Harness makes fresh stores for the suite.
type Harness struct {
	// New returns an empty, migrated store. Counter, if not nil, counts the
	// store's database round trips; backends without a database return nil.
	New func(t TB) (s store.Store, counter *store.CountingClient)
}

// Case is one conformance scenario.
type Case struct {
	Name string
	Run  func(t TB, s store.Store, rt *store.CountingClient)
}

// Exercise runs every case against h, each on a fresh store, and checks the
// charge invariant after each.
func Exercise(t *testing.T, h Harness) {
	t.Helper()
	for _, c := range Cases {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			RunCase(t, h, c)
		})
	}
}

// RunCase runs c on a fresh store from h and then checks the invariants.
func RunCase(t TB, h Harness, c Case) {
	t.Helper()
	s, rt := h.New(t)
	c.Run(t, s, rt)
	require.NoError(t, s.CheckInvariants(context.Background()), "invariants after %s", c.Name)
	require.NoError(t, s.CheckUsage(context.Background()), "usage invariant after %s", c.Name)
}

var (
	t0    = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	lease = 10 * time.Second
	ttl   = time.Hour
	ctx   = context.Background()
)

func at(d time.Duration) time.Time { return t0.Add(d) }

func claim(key, owner, fp string, now time.Time) store.ClaimParams {
	return store.ClaimParams{Key: key, Owner: owner, Fingerprint: fp, Now: now, Lease: lease, TTL: ttl}
}

func mustClaim(t TB, s store.Store, p store.ClaimParams, want store.Outcome) store.ClaimResult {
	t.Helper()
	res, err := s.Claim(ctx, p)
	require.NoError(t, err)
	require.Equal(t, want.String(), res.Outcome.String(), "claim by %s", p.Owner)
	return res
}

func fence(r store.ClaimResult) store.Fence {
	return store.Fence{Key: r.Record.Key, Owner: r.Record.Owner, Generation: r.Record.Generation}
}

func credit(t TB, s store.Store, caller string, amount int64) {
	t.Helper()
	_, err := s.Credit(ctx, store.CreditParams{Caller: caller, Currency: "USD", Amount: amount,
		Reference: fmt.Sprintf("seed-%s-%d", caller, amount), Now: t0})
	require.NoError(t, err)
}

func charge(f store.Fence, caller string, amount int64, now time.Time) store.ChargeParams {
	return store.ChargeParams{Fence: f, Caller: caller, Currency: "USD", Amount: amount, Now: now}
}

// roundTrips returns how many round trips fn made, or -1 without a counter.
func roundTrips(rt *store.CountingClient, fn func()) int64 {
	if rt == nil {
		fn()
		return -1
	}
	before := rt.Count()
	fn()
	return rt.Count() - before
}

func requireTrips(t TB, rt *store.CountingClient, want int64, fn func(), what string) {
	t.Helper()
	got := roundTrips(rt, fn)
	if got >= 0 {
		require.Equal(t, want, got, "round trips for %s", what)
	}
}

func claimCharge(key, owner, caller string, amount int64, now time.Time) store.ClaimChargeParams {
	return store.ClaimChargeParams{ClaimParams: claim(key, owner, "fp", now), Caller: caller, Currency: "USD", Amount: amount}
}

func mustClaimCharge(t TB, s store.Store, p store.ClaimChargeParams, want store.Outcome) store.ClaimChargeResult {
	t.Helper()
	res, err := s.ClaimCharge(ctx, p)
	require.NoError(t, err)
	require.Equal(t, want.String(), res.Outcome.String(), "claim and charge by %s", p.Owner)
	return res
}

func requireBalance(t TB, s store.Store, caller string, want int64) {
	t.Helper()
	bal, err := s.Balance(ctx, caller, "USD")
	require.NoError(t, err)
	require.Equal(t, want, bal, "balance of %s", caller)
}

// requireKinds checks the kinds of key's ledger entries, oldest first.
func requireKinds(t TB, s store.Store, key string, want ...string) {
	t.Helper()
	entries, err := s.Entries(ctx, store.EntryFilter{Key: key})
	require.NoError(t, err)
	kinds := []string{}
	for _, e := range entries {
		kinds = append(kinds, e.Kind)
	}
	if want == nil {
		want = []string{}
	}
	require.Equal(t, want, kinds, "ledger entries of %s", key)
}

func binaryBody() []byte {
	b := make([]byte, 0, 512)
	for i := 0; i < 512; i++ {
		b = append(b, byte(i))
	}
	return b
}

// Cases is the conformance suite, one slice per area (cases_*.go).
var Cases = slices.Concat(leaseCases, chargeCases, sweepCases, ledgerCases, topupCases, statsCases, keyUsageCases, paymentCases, keyCases, pricingCases, capCases, holdCases)
