// Package storetest is the conformance suite every store.Store backend must
// pass. A backend's own test file calls Exercise with a Harness; a new
// backend is "one package plus this suite".
//
// The cases are plain data (Cases) taking a minimal TB, so that runners
// other than `go test` — the D1 runner inside workerd — can execute them.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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

// Cases is the conformance suite.
var Cases = []Case{
	{"ClaimCompleteReplay", func(t TB, s store.Store, rt *store.CountingClient) {
		var a store.ClaimResult
		requireTrips(t, rt, 1, func() { a = mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed) }, "claim")
		require.Equal(t, int64(1), a.Record.Generation)
		require.Equal(t, store.StatusInProgress, a.Record.Status)
		body := binaryBody()
		requireTrips(t, rt, 1, func() {
			require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a),
				Response: store.Response{StatusCode: 201, ContentType: "application/octet-stream", Body: body}, Now: at(time.Second)}))
		}, "complete")
		var b store.ClaimResult
		requireTrips(t, rt, 1, func() { b = mustClaim(t, s, claim("k", "B", "fp", at(2*time.Second)), store.OutcomeCompleted) }, "replay")
		require.NotNil(t, b.Record.Response)
		require.True(t, bytes.Equal(body, b.Record.Response.Body), "replayed body must be byte-identical")
		require.Equal(t, 201, b.Record.Response.StatusCode)
		require.Equal(t, "application/octet-stream", b.Record.Response.ContentType)
		require.Equal(t, "A", b.Record.Owner)
		// A completed record can no longer be completed or failed by its owner.
		require.ErrorIs(t, s.Fail(ctx, fence(a), "late", at(3*time.Second)), store.ErrFencedOut)
		got, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, store.StatusCompleted, got.Status)
	}},

	{"FailThenTakeover", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		require.NoError(t, s.Fail(ctx, fence(a), "upstream 500", at(time.Second)))
		got, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, store.StatusFailed, got.Status)
		require.Equal(t, "upstream 500", got.Error)
		b := mustClaim(t, s, claim("k", "B", "fp", at(2*time.Second)), store.OutcomeClaimed)
		require.Equal(t, int64(2), b.Record.Generation)
		require.Equal(t, "B", b.Record.Owner)
		require.Empty(t, b.Record.Error)
	}},

	{"StaleOwnerFencedOut", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		b := mustClaim(t, s, claim("k", "B", "fp", at(lease+time.Second)), store.OutcomeClaimed)
		require.Equal(t, a.Record.Generation+1, b.Record.Generation)
		before, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		now := at(lease + 2*time.Second)
		require.ErrorIs(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: []byte("stale")}, Now: now}), store.ErrFencedOut)
		require.ErrorIs(t, s.Fail(ctx, fence(a), "stale", now), store.ErrFencedOut)
		require.ErrorIs(t, s.Heartbeat(ctx, fence(a), now.Add(time.Hour), now), store.ErrFencedOut)
		_, err = s.Charge(ctx, charge(fence(a), "alice", 100, now))
		require.ErrorIs(t, err, store.ErrFencedOut)
		_, _, err = s.Refund(ctx, fence(a), now)
		require.ErrorIs(t, err, store.ErrFencedOut)
		after, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, before, after, "the winner's record is unchanged")
		requireBalance(t, s, "alice", 1000)
	}},

	{"HeartbeatKeepsLease", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		for i := 1; i <= 4; i++ {
			now := at(time.Duration(i) * 8 * time.Second) // every 8 s, lease 10 s
			requireTrips(t, rt, 1, func() { require.NoError(t, s.Heartbeat(ctx, fence(a), now.Add(lease), now)) }, "heartbeat")
			requireTrips(t, rt, 1, func() {
				mustClaim(t, s, claim("k", "B", "fp", now.Add(5*time.Second)), store.OutcomeInProgress)
			}, "claim in progress")
		}
		// 32 s in, three times the original lease: still A's, still generation 1.
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: []byte("ok")}, Now: at(40 * time.Second)}))
		got, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, int64(1), got.Generation)
		require.Equal(t, store.StatusCompleted, got.Status)
	}},

	{"LeaseExpiryTakeover", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		in := mustClaim(t, s, claim("k", "B", "fp", at(lease-time.Millisecond)), store.OutcomeInProgress)
		require.Equal(t, "A", in.Record.Owner)
		require.Equal(t, at(lease), in.Record.LeaseExpiresAt)
		b := mustClaim(t, s, claim("k", "B", "fp", at(lease)), store.OutcomeClaimed)
		require.Equal(t, a.Record.Generation+1, b.Record.Generation)
		require.Equal(t, at(2*lease), b.Record.LeaseExpiresAt)
	}},

	{"TTLExpiryStartsFresh", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		a := mustClaim(t, s, claim("k", "A", "fp1", t0), store.OutcomeClaimed)
		_, err := s.Charge(ctx, charge(fence(a), "alice", 100, t0))
		require.NoError(t, err)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: []byte("old")}, Now: at(time.Second)}))
		mustClaim(t, s, claim("k", "B", "fp1", at(ttl-time.Millisecond)), store.OutcomeCompleted)
		// After the TTL, even a different request starts a new execution.
		b := mustClaim(t, s, claim("k", "B", "fp2", at(ttl)), store.OutcomeClaimed)
		require.Equal(t, int64(2), b.Record.Generation)
		require.Equal(t, "fp2", b.Record.Fingerprint)
		require.Nil(t, b.Record.Response)
		require.Equal(t, store.ChargeNone, b.Record.Charge.State)
		require.Equal(t, at(ttl+ttl), b.Record.ExpiresAt)
		// The new incarnation is charged on its own.
		res, err := s.Charge(ctx, charge(fence(b), "alice", 100, at(ttl)))
		require.NoError(t, err)
		require.True(t, res.Charged)
		require.Equal(t, int64(800), res.Balance)
	}},

	{"FingerprintMismatchUntouched", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaim(t, s, claim("k", "A", "fp1", t0), store.OutcomeClaimed)
		before, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		var mErr error
		requireTrips(t, rt, 1, func() { _, mErr = s.Claim(ctx, claim("k", "B", "fp2", at(time.Second))) }, "mismatched claim")
		require.ErrorIs(t, mErr, store.ErrFingerprintMismatch)
		// Even the lease-expired case must not be taken over by a different request.
		_, err = s.Claim(ctx, claim("k", "B", "fp2", at(lease+time.Second)))
		require.ErrorIs(t, err, store.ErrFingerprintMismatch)
		after, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, before, after)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: []byte("x")}, Now: at(lease + 2*time.Second)}))
		_, err = s.Claim(ctx, claim("k", "B", "fp2", at(lease+3*time.Second)))
		require.ErrorIs(t, err, store.ErrFingerprintMismatch)
	}},

	{"RetriedClaimSameOwner", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		// The reply was lost; A asks again and must learn it holds the claim.
		again := mustClaim(t, s, claim("k", "A", "fp", at(time.Second)), store.OutcomeClaimed)
		require.Equal(t, a.Record.Generation, again.Record.Generation)
		require.Equal(t, at(time.Second+lease), again.Record.LeaseExpiresAt)
		mustClaim(t, s, claim("k", "B", "fp", at(2*time.Second)), store.OutcomeInProgress)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: []byte("x")}, Now: at(3 * time.Second)}))
	}},

	{"ClaimRace50", func(t TB, s store.Store, rt *store.CountingClient) {
		const n = 50
		outcomes := make([]store.Outcome, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				res, err := s.Claim(ctx, claim("race", fmt.Sprintf("owner-%d", i), "fp", t0))
				outcomes[i], errs[i] = res.Outcome, err
			}(i)
		}
		wg.Wait()
		claimed := 0
		for i := range outcomes {
			require.NoError(t, errs[i])
			if outcomes[i] == store.OutcomeClaimed {
				claimed++
			} else {
				require.Equal(t, store.OutcomeInProgress.String(), outcomes[i].String())
			}
		}
		require.Equal(t, 1, claimed)
	}},

	{"ChargeRaceOneBalance", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 100)
		const n = 10
		fences := make([]store.Fence, n)
		for i := range fences {
			fences[i] = fence(mustClaim(t, s, claim(fmt.Sprintf("k%d", i), "A", "fp", t0), store.OutcomeClaimed))
		}
		results := make([]store.ChargeResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				results[i], errs[i] = s.Charge(ctx, charge(fences[i], "alice", 100, t0))
			}(i)
		}
		wg.Wait()
		charged, broke := 0, 0
		for i := range errs {
			switch {
			case errs[i] == nil:
				require.True(t, results[i].Charged)
				require.Equal(t, int64(0), results[i].Balance)
				charged++
			case errors.Is(errs[i], store.ErrInsufficientFunds):
				var ife *store.InsufficientFundsError
				require.ErrorAs(t, errs[i], &ife)
				require.Equal(t, int64(100), ife.Required)
				require.GreaterOrEqual(t, ife.Balance, int64(0))
				broke++
			default:
				require.NoError(t, errs[i])
			}
		}
		require.Equal(t, 1, charged)
		require.Equal(t, n-1, broke)
		requireBalance(t, s, "alice", 0)
	}},

	{"CrashAfterChargeThenTakeover", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		var res store.ChargeResult
		requireTrips(t, rt, 1, func() {
			var err error
			res, err = s.Charge(ctx, charge(fence(a), "alice", 100, t0))
			require.NoError(t, err)
		}, "charge")
		require.True(t, res.Charged)
		require.Equal(t, int64(900), res.Balance)
		// A crashes. After its lease, B takes over and charges: nothing new is taken.
		b := mustClaim(t, s, claim("k", "B", "fp", at(lease+time.Second)), store.OutcomeClaimed)
		require.Equal(t, store.ChargeCharged, b.Record.Charge.State)
		res, err := s.Charge(ctx, charge(fence(b), "alice", 100, at(lease+time.Second)))
		require.NoError(t, err)
		require.False(t, res.Charged)
		require.Equal(t, int64(900), res.Balance)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(b), Response: store.Response{StatusCode: 200, Body: []byte("ok")}, Now: at(lease + 2*time.Second)}))
		bal, err := s.Balance(ctx, "alice", "USD")
		require.NoError(t, err)
		require.Equal(t, int64(900), bal, "net charge is exactly one price")
		entries, err := s.Entries(ctx, store.EntryFilter{Key: "k"})
		require.NoError(t, err)
		require.Len(t, entries, 1)
	}},

	{"ChargeRefundRetry", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		_, err := s.Charge(ctx, charge(fence(a), "alice", 100, t0))
		require.NoError(t, err)
		var refunded bool
		var bal int64
		requireTrips(t, rt, 1, func() {
			refunded, bal, err = s.Refund(ctx, fence(a), at(time.Second))
			require.NoError(t, err)
		}, "refund")
		require.True(t, refunded)
		require.Equal(t, int64(1000), bal)
		refunded, bal, err = s.Refund(ctx, fence(a), at(time.Second))
		require.NoError(t, err)
		require.False(t, refunded, "a second refund is a no-op")
		require.Equal(t, int64(1000), bal)
		require.NoError(t, s.Fail(ctx, fence(a), "upstream 502", at(time.Second)))
		b := mustClaim(t, s, claim("k", "B", "fp", at(2*time.Second)), store.OutcomeClaimed)
		require.Equal(t, store.ChargeRefunded, b.Record.Charge.State)
		res, err := s.Charge(ctx, charge(fence(b), "alice", 100, at(2*time.Second)))
		require.NoError(t, err)
		require.True(t, res.Charged)
		require.Equal(t, int64(900), res.Balance)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(b), Response: store.Response{StatusCode: 200, Body: []byte("ok")}, Now: at(3 * time.Second)}))
		requireKinds(t, s, "k", "charge", "refund", "charge")
		got, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, store.ChargeCharged, got.Charge.State)
		require.Equal(t, int64(2), got.Charge.Count)
	}},

	{"ChargesAreScopedPerKey", func(t TB, s store.Store, rt *store.CountingClient) {
		// One owner name and one instant across keys must not make two
		// keys' charges collide.
		credit(t, s, "alice", 1000)
		for i := 0; i < 3; i++ {
			r := mustClaim(t, s, claim(fmt.Sprintf("k%d", i), "A", "fp", t0), store.OutcomeClaimed)
			res, err := s.Charge(ctx, charge(fence(r), "alice", 100, t0))
			require.NoError(t, err)
			require.True(t, res.Charged)
			require.Equal(t, int64(900-100*i), res.Balance)
		}
	}},

	{"InsufficientFundsChangesNothing", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 50)
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		before, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		_, err = s.Charge(ctx, charge(fence(a), "alice", 100, t0))
		var ife *store.InsufficientFundsError
		require.ErrorAs(t, err, &ife)
		require.ErrorIs(t, err, store.ErrInsufficientFunds)
		require.Equal(t, int64(50), ife.Balance)
		require.Equal(t, int64(100), ife.Required)
		after, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, before, after)
		entries, err := s.Entries(ctx, store.EntryFilter{Caller: "alice"})
		require.NoError(t, err)
		require.Len(t, entries, 1)
		// A caller that never had money gets the same error with balance 0.
		_, err = s.Charge(ctx, charge(fence(a), "bob", 1, t0))
		require.ErrorAs(t, err, &ife)
		require.Equal(t, int64(0), ife.Balance)
	}},

	{"CreditIdempotentByReference", func(t TB, s store.Store, rt *store.CountingClient) {
		p := store.CreditParams{Caller: "alice", Currency: "USD", Amount: 500, Reference: "stripe:pi_1", Now: t0}
		r1, err := s.Credit(ctx, p)
		require.NoError(t, err)
		require.True(t, r1.Applied)
		require.Equal(t, int64(500), r1.Balance)
		r2, err := s.Credit(ctx, p)
		require.NoError(t, err)
		require.False(t, r2.Applied)
		require.Equal(t, int64(500), r2.Balance)
		p.Amount = 700
		_, err = s.Credit(ctx, p)
		require.ErrorIs(t, err, store.ErrReferenceConflict)
		requireBalance(t, s, "alice", 500)
		entries, err := s.Entries(ctx, store.EntryFilter{Caller: "alice"})
		require.NoError(t, err)
		require.Len(t, entries, 1)
		require.Equal(t, int64(500), entries[0].BalanceAfter)
	}},

	{"SweepBounded", func(t TB, s store.Store, rt *store.CountingClient) {
		for i := 0; i < 5; i++ {
			r := mustClaim(t, s, claim(fmt.Sprintf("old%d", i), "A", "fp", t0), store.OutcomeClaimed)
			require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(r), Response: store.Response{StatusCode: 200, Body: []byte("x")}, Now: t0}))
		}
		failed := mustClaim(t, s, claim("oldfailed", "A", "fp", t0), store.OutcomeClaimed)
		require.NoError(t, s.Fail(ctx, fence(failed), "x", t0))
		// A live record and an in-progress one whose lease outlives its TTL stay.
		mustClaim(t, s, claim("fresh", "A", "fp", at(30*time.Minute)), store.OutcomeClaimed)
		held := mustClaim(t, s, claim("held", "A", "fp", t0), store.OutcomeClaimed)
		require.NoError(t, s.Heartbeat(ctx, fence(held), at(2*ttl), at(ttl-time.Second)))
		now := at(ttl + time.Second)
		var got []int
		for {
			n, err := s.Sweep(ctx, now, 2)
			require.NoError(t, err)
			got = append(got, n)
			if n == 0 {
				break
			}
		}
		require.Equal(t, []int{2, 2, 2, 0}, got)
		for _, k := range []string{"fresh", "held"} {
			_, err := s.Peek(ctx, k)
			require.NoError(t, err, k)
		}
		_, err := s.Peek(ctx, "old0")
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.Sweep(ctx, now, 0)
		require.ErrorIs(t, err, store.ErrInvalidArgument)
	}},

	{"SweepRefundsAbandonedCharge", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		// A charged and completed call keeps its charge when swept.
		done := mustClaim(t, s, claim("done", "A", "fp", t0), store.OutcomeClaimed)
		_, err := s.Charge(ctx, charge(fence(done), "alice", 100, t0))
		require.NoError(t, err)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(done), Response: store.Response{StatusCode: 200, Body: []byte("ok")}, Now: t0}))
		// Two owners charged, then crashed; nobody retried within the TTL.
		for _, k := range []string{"lost1", "lost2"} {
			r := mustClaim(t, s, claim(k, "A", "fp", t0), store.OutcomeClaimed)
			_, err := s.Charge(ctx, charge(fence(r), "alice", 100, t0))
			require.NoError(t, err)
		}
		requireBalance(t, s, "alice", 700)
		n, err := s.Sweep(ctx, at(ttl+time.Second), 10)
		require.NoError(t, err)
		require.Equal(t, 3, n)
		bal, err := s.Balance(ctx, "alice", "USD")
		require.NoError(t, err)
		require.Equal(t, int64(900), bal, "abandoned charges are refunded, the completed one is kept")
		for _, k := range []string{"lost1", "lost2"} {
			entries, err := s.Entries(ctx, store.EntryFilter{Key: k})
			require.NoError(t, err)
			require.Len(t, entries, 2, k)
			require.Equal(t, "refund", entries[1].Kind)
			_, err = s.Peek(ctx, k)
			require.ErrorIs(t, err, store.ErrNotFound)
		}
	}},

	{"SweepFailsAbandonedLeases", func(t TB, s store.Store, rt *store.CountingClient) {
		// Records in progress past their lease, long before their TTL: one
		// charged (its owner crashed), one already refunded (its owner lost
		// the Fail after the refund), and one whose lease is still live.
		credit(t, s, "alice", 1000)
		crashed := mustClaim(t, s, claim("crashed", "A", "fp", t0), store.OutcomeClaimed)
		_, err := s.Charge(ctx, charge(fence(crashed), "alice", 100, t0))
		require.NoError(t, err)
		refunded := mustClaim(t, s, claim("refunded", "A", "fp", t0), store.OutcomeClaimed)
		_, err = s.Charge(ctx, charge(fence(refunded), "alice", 100, t0))
		require.NoError(t, err)
		ok, _, err := s.Refund(ctx, fence(refunded), t0)
		require.NoError(t, err)
		require.True(t, ok)
		live := mustClaim(t, s, claim("live", "A", "fp", at(lease)), store.OutcomeClaimed)
		requireBalance(t, s, "alice", 900)

		n, err := s.Sweep(ctx, at(lease+time.Second), 10)
		require.NoError(t, err)
		require.Equal(t, 0, n, "nothing is past its TTL")
		requireBalance(t, s, "alice", 1000)
		requireKinds(t, s, "crashed", "charge", "refund")
		requireKinds(t, s, "refunded", "charge", "refund")
		for _, k := range []string{"crashed", "refunded"} {
			rec, err := s.Peek(ctx, k)
			require.NoError(t, err)
			require.Equal(t, store.StatusFailed, rec.Status, k)
			require.Equal(t, store.ChargeRefunded, rec.Charge.State, k)
		}
		rec, err := s.Peek(ctx, "live")
		require.NoError(t, err)
		require.Equal(t, store.StatusInProgress, rec.Status)

		// The stale owner is fenced out; a retry executes and pays again.
		err = s.Complete(ctx, store.CompleteParams{Fence: fence(crashed), Response: store.Response{StatusCode: 200, Body: []byte("late")}, Now: at(lease + 2*time.Second)})
		require.ErrorIs(t, err, store.ErrFencedOut)
		_, err = s.Charge(ctx, charge(fence(crashed), "alice", 100, at(lease+2*time.Second)))
		require.ErrorIs(t, err, store.ErrFencedOut)
		retry := mustClaimCharge(t, s, claimCharge("crashed", "B", "alice", 100, at(lease+3*time.Second)), store.OutcomeClaimed)
		require.True(t, retry.Charge.Charged)
		require.Equal(t, crashed.Record.Generation+1, retry.Record.Generation)
		requireBalance(t, s, "alice", 900)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(live), Response: store.Response{StatusCode: 200, Body: []byte("ok")}, Now: at(lease + 3*time.Second)}))
	}},

	{"SweepFencesBeforeItRefunds", func(t TB, s store.Store, rt *store.CountingClient) {
		// More abandoned records than the sweep's limit: whatever a sweep
		// refunds, it has fenced out first, so no stale owner can complete a
		// call whose charge came back (the answer would be free).
		credit(t, s, "alice", 1000)
		mustClaim(t, s, claim("u0", "A", "fp", t0), store.OutcomeClaimed) // abandoned, never charged
		var owners []store.ClaimResult
		for _, k := range []string{"a1", "a2", "a3"} {
			r := mustClaim(t, s, claim(k, "A", "fp", t0), store.OutcomeClaimed)
			_, err := s.Charge(ctx, charge(fence(r), "alice", 100, t0))
			require.NoError(t, err)
			owners = append(owners, r)
		}
		for i := 0; i < 4; i++ {
			_, err := s.Sweep(ctx, at(lease+time.Duration(i+1)*time.Second), 1)
			require.NoError(t, err)
			for _, o := range owners {
				rec, err := s.Peek(ctx, o.Record.Key)
				require.NoError(t, err)
				if rec.Charge.State != store.ChargeRefunded {
					continue
				}
				require.Equal(t, store.StatusFailed, rec.Status, o.Record.Key)
				err = s.Complete(ctx, store.CompleteParams{Fence: fence(o), Response: store.Response{StatusCode: 200, Body: []byte("late")}, Now: at(lease + 5*time.Second)})
				require.ErrorIs(t, err, store.ErrFencedOut, o.Record.Key)
			}
		}
		requireBalance(t, s, "alice", 1000)
		require.NoError(t, s.CheckInvariants(ctx))
	}},

	{"OpenChargeOutlivesTTL", func(t TB, s store.Store, rt *store.CountingClient) {
		// A charged call abandoned past its TTL is not "fresh": its charge is
		// neither forgotten nor taken twice.
		credit(t, s, "alice", 1000)
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		_, err := s.Charge(ctx, charge(fence(a), "alice", 100, t0))
		require.NoError(t, err)
		_, err = s.Claim(ctx, claim("k", "C", "other", at(ttl+time.Second)))
		require.ErrorIs(t, err, store.ErrFingerprintMismatch, "a different request waits for the sweep's refund")
		b := mustClaim(t, s, claim("k", "B", "fp", at(ttl+time.Second)), store.OutcomeClaimed)
		require.Equal(t, a.Record.Generation+1, b.Record.Generation)
		require.Equal(t, store.ChargeCharged, b.Record.Charge.State)
		res, err := s.Charge(ctx, charge(fence(b), "alice", 100, at(ttl+time.Second)))
		require.NoError(t, err)
		require.False(t, res.Charged)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(b), Response: store.Response{StatusCode: 200, Body: []byte("ok")}, Now: at(ttl + 2*time.Second), TTL: ttl}))
		requireBalance(t, s, "alice", 900)
	}},

	{"RefundOnlyWhileInProgress", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		for i, finish := range []func(store.Fence) error{
			func(f store.Fence) error {
				return s.Complete(ctx, store.CompleteParams{Fence: f, Response: store.Response{StatusCode: 200, Body: []byte("ok")}, Now: t0})
			},
			func(f store.Fence) error { return s.Fail(ctx, f, "x", t0) },
		} {
			r := mustClaim(t, s, claim(fmt.Sprint("k", i), "A", "fp", t0), store.OutcomeClaimed)
			_, err := s.Charge(ctx, charge(fence(r), "alice", 100, t0))
			require.NoError(t, err)
			require.NoError(t, finish(fence(r)))
			_, _, err = s.Refund(ctx, fence(r), t0)
			require.ErrorIs(t, err, store.ErrFencedOut, "a finished record is no longer held")
		}
		requireBalance(t, s, "alice", 800)
	}},

	{"CompleteKeepsAnswerForTTL", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		require.NoError(t, s.Heartbeat(ctx, fence(a), at(ttl+time.Minute), at(50*time.Minute)))
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: []byte("late")}, Now: at(ttl + 30*time.Second), TTL: ttl}))
		r := mustClaim(t, s, claim("k", "B", "fp", at(ttl+time.Minute)), store.OutcomeCompleted)
		require.Equal(t, "late", string(r.Record.Response.Body))
		require.Equal(t, at(2*ttl+30*time.Second), r.Record.ExpiresAt)
	}},

	{"MoneyLimits", func(t TB, s store.Store, rt *store.CountingClient) {
		r, err := s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: store.MaxAmount, Reference: "max", Now: t0})
		require.NoError(t, err)
		require.Equal(t, store.MaxAmount, r.Balance)
		_, err = s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 1, Reference: "over", Now: t0})
		require.ErrorIs(t, err, store.ErrInvalidAmount, "balance may not pass 2^53-1")
		requireBalance(t, s, "alice", store.MaxAmount)
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		res, err := s.Charge(ctx, charge(fence(a), "alice", store.MaxAmount, t0))
		require.NoError(t, err)
		require.Equal(t, int64(0), res.Balance)
		for _, bad := range []int64{0, -1, store.MaxAmount + 1} {
			_, err = s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: bad, Reference: fmt.Sprint("bad", bad), Now: t0})
			require.ErrorIs(t, err, store.ErrInvalidAmount, "credit %d", bad)
			b := mustClaim(t, s, claim(fmt.Sprint("bad", bad), "A", "fp", t0), store.OutcomeClaimed)
			_, err = s.Charge(ctx, charge(fence(b), "alice", bad, t0))
			require.ErrorIs(t, err, store.ErrInvalidAmount, "charge %d", bad)
		}
		_, err = s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "XXX", Amount: 1, Reference: "xxx", Now: t0})
		require.ErrorIs(t, err, store.ErrUnknownCurrency)
		entries, err := s.Entries(ctx, store.EntryFilter{Caller: "alice"})
		require.NoError(t, err)
		require.Len(t, entries, 2)
	}},

	{"BadInputStoresNothing", func(t TB, s store.Store, rt *store.CountingClient) {
		for name, key := range map[string]string{
			"empty": "", "long": strings.Repeat("k", store.MaxKeyLen+1), "newline": "a\nb", "nul": "a\x00b", "del": "a\x7fb",
		} {
			_, err := s.Claim(ctx, claim(key, "A", "fp", t0))
			require.ErrorIs(t, err, store.ErrInvalidKey, name)
			_, err = s.Peek(ctx, key)
			require.ErrorIs(t, err, store.ErrNotFound, name)
		}
		mustClaim(t, s, claim(strings.Repeat("k", store.MaxKeyLen), "A", "fp", t0), store.OutcomeClaimed)
		_, err := s.Claim(ctx, store.ClaimParams{Key: "k", Owner: "A", Fingerprint: "fp", Now: t0})
		require.ErrorIs(t, err, store.ErrInvalidArgument, "zero lease")
		a := mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		big := make([]byte, store.DefaultMaxResponseBytes+1)
		err = s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: big}, Now: t0})
		require.ErrorIs(t, err, store.ErrTooLarge)
		got, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, store.StatusInProgress, got.Status)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a), Response: store.Response{StatusCode: 200, Body: big[:store.DefaultMaxResponseBytes]}, Now: t0}))
	}},

	{"ClaimChargeOneStep", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 100)
		trips := int64(2) // Claim, then Charge
		if rt != nil && rt.CanBatch() {
			trips = 1 // one atomic batch
		}
		var a store.ClaimChargeResult
		requireTrips(t, rt, trips, func() { a = mustClaimCharge(t, s, claimCharge("k", "A", "alice", 30, t0), store.OutcomeClaimed) }, "claim and charge")
		require.NoError(t, a.ChargeErr)
		require.Equal(t, store.ChargeResult{Charged: true, Balance: 70}, a.Charge)
		require.Equal(t, int64(1), a.Record.Generation)
		got, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, store.ChargeCharged, got.Charge.State)
		require.Equal(t, int64(30), got.Charge.Amount)

		// A duplicate while A holds the key: no charge, one round trip either way.
		var b store.ClaimChargeResult
		requireTrips(t, rt, 1, func() {
			b = mustClaimCharge(t, s, claimCharge("k", "B", "alice", 30, at(time.Second)), store.OutcomeInProgress)
		}, "duplicate")
		require.Equal(t, store.ChargeResult{}, b.Charge)
		require.NoError(t, b.ChargeErr)
		requireBalance(t, s, "alice", 70)

		// The stale-owner fence holds for what ClaimCharge returned.
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a.ClaimResult), Now: at(2 * time.Second),
			Response: store.Response{StatusCode: 200, Body: []byte("ok")}}))
		var c store.ClaimChargeResult
		requireTrips(t, rt, 1, func() {
			c = mustClaimCharge(t, s, claimCharge("k", "C", "alice", 30, at(3*time.Second)), store.OutcomeCompleted)
		}, "replay")
		require.Equal(t, []byte("ok"), c.Record.Response.Body)
		requireBalance(t, s, "alice", 70)
		requireKinds(t, s, "k", "charge")
	}},

	{"ClaimChargeInsufficientThenTopUp", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 10)
		a := mustClaimCharge(t, s, claimCharge("k", "A", "alice", 30, t0), store.OutcomeClaimed)
		var ife *store.InsufficientFundsError
		require.ErrorAs(t, a.ChargeErr, &ife)
		require.Equal(t, int64(10), ife.Balance)
		require.Equal(t, int64(30), ife.Required)
		require.Equal(t, store.ChargeResult{}, a.Charge)
		got, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, store.StatusInProgress, got.Status)
		require.Equal(t, store.ChargeNone, got.Charge.State)
		requireBalance(t, s, "alice", 10)
		requireKinds(t, s, "k")
		// The holder frees the key; after a top-up the retry is charged once.
		require.NoError(t, s.Fail(ctx, fence(a.ClaimResult), "insufficient funds", at(time.Second)))
		credit(t, s, "alice", 90)
		b := mustClaimCharge(t, s, claimCharge("k", "B", "alice", 30, at(2*time.Second)), store.OutcomeClaimed)
		require.NoError(t, b.ChargeErr)
		require.Equal(t, store.ChargeResult{Charged: true, Balance: 70}, b.Charge)
		require.Equal(t, int64(2), b.Record.Generation)
		requireKinds(t, s, "k", "charge")
	}},

	{"ClaimChargeTakeoverInheritsCharge", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 100)
		a := mustClaimCharge(t, s, claimCharge("k", "A", "alice", 30, t0), store.OutcomeClaimed)
		require.True(t, a.Charge.Charged)
		// A crashes; its lease runs out; B takes over and must not pay again.
		b := mustClaimCharge(t, s, claimCharge("k", "B", "alice", 30, at(lease+time.Millisecond)), store.OutcomeClaimed)
		require.NoError(t, b.ChargeErr)
		require.Equal(t, store.ChargeResult{Charged: false, Balance: 70}, b.Charge)
		require.Equal(t, int64(2), b.Record.Generation)
		require.Equal(t, store.ChargeCharged, b.Record.Charge.State)
		requireBalance(t, s, "alice", 70)
		// A is fenced out of everything.
		_, _, err := s.Refund(ctx, fence(a.ClaimResult), at(lease+time.Second))
		require.ErrorIs(t, err, store.ErrFencedOut)
		requireKinds(t, s, "k", "charge")
	}},

	{"ClaimChargeMismatchAndBadInputChangeNothing", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 100)
		mustClaimCharge(t, s, claimCharge("k", "A", "alice", 30, t0), store.OutcomeClaimed)
		p := claimCharge("k", "B", "alice", 30, at(time.Second))
		p.Fingerprint = "other"
		_, err := s.ClaimCharge(ctx, p)
		require.ErrorIs(t, err, store.ErrFingerprintMismatch)
		for name, amount := range map[string]int64{"zero": 0, "negative": -5} {
			_, err = s.ClaimCharge(ctx, claimCharge("fresh", "C", "alice", amount, t0))
			require.ErrorIs(t, err, store.ErrInvalidAmount, name)
		}
		p = claimCharge("fresh", "C", "alice", 30, t0)
		p.Currency = "XXX"
		_, err = s.ClaimCharge(ctx, p)
		require.ErrorIs(t, err, store.ErrUnknownCurrency)
		_, err = s.ClaimCharge(ctx, claimCharge("", "C", "alice", 30, t0))
		require.ErrorIs(t, err, store.ErrInvalidKey)
		_, err = s.Peek(ctx, "fresh")
		require.ErrorIs(t, err, store.ErrNotFound)
		requireBalance(t, s, "alice", 70)
	}},

	{"ClaimChargeSameOwner", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 100)
		mustClaim(t, s, claim("k", "A", "fp", t0), store.OutcomeClaimed)
		// The holder with another input: a mismatch, and no money moves.
		p := claimCharge("k", "A", "alice", 30, at(time.Second))
		p.Fingerprint = "other"
		_, err := s.ClaimCharge(ctx, p)
		require.ErrorIs(t, err, store.ErrFingerprintMismatch)
		requireBalance(t, s, "alice", 100)
		requireKinds(t, s, "k")
		// The holder retrying with its input: charged once, however often.
		for i := range 2 {
			r := mustClaimCharge(t, s, claimCharge("k", "A", "alice", 30, at(time.Duration(2+i)*time.Second)), store.OutcomeClaimed)
			require.NoError(t, r.ChargeErr)
			require.Equal(t, int64(1), r.Record.Generation)
			require.Equal(t, store.ChargeResult{Charged: i == 0, Balance: 70}, r.Charge, "attempt %d", i)
		}
		requireKinds(t, s, "k", "charge")
		// A failed, refunded key taken over is charged again, once.
		a := mustClaim(t, s, claim("k", "A", "fp", at(5*time.Second)), store.OutcomeClaimed)
		refunded, _, err := s.Refund(ctx, fence(a), at(5*time.Second))
		require.NoError(t, err)
		require.True(t, refunded)
		require.NoError(t, s.Fail(ctx, fence(a), "upstream failed", at(5*time.Second)))
		b := mustClaimCharge(t, s, claimCharge("k", "B", "alice", 30, at(6*time.Second)), store.OutcomeClaimed)
		require.Equal(t, store.ChargeResult{Charged: true, Balance: 70}, b.Charge)
		requireKinds(t, s, "k", "charge", "refund", "charge")
	}},

	{"ClaimChargeRace", func(t TB, s store.Store, rt *store.CountingClient) {
		// 20 attempts on one key and 3 on each of 6 other keys, on a balance
		// that covers 4 charges: one charge per key that is won and paid for.
		credit(t, s, "alice", 400)
		type try struct{ key, owner string }
		var tries []try
		for i := 0; i < 20; i++ {
			tries = append(tries, try{"hot", fmt.Sprintf("h%d", i)})
		}
		for k := 0; k < 6; k++ {
			for i := 0; i < 3; i++ {
				tries = append(tries, try{fmt.Sprintf("k%d", k), fmt.Sprintf("o%d-%d", k, i)})
			}
		}
		results := make([]store.ClaimChargeResult, len(tries))
		errs := make([]error, len(tries))
		var wg sync.WaitGroup
		for i, tr := range tries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = s.ClaimCharge(ctx, claimCharge(tr.key, tr.owner, "alice", 100, t0))
			}()
		}
		wg.Wait()
		won := map[string]int{}
		charged, broke := 0, 0
		for i, r := range results {
			require.NoError(t, errs[i])
			if r.Outcome != store.OutcomeClaimed {
				require.Equal(t, store.OutcomeInProgress.String(), r.Outcome.String())
				continue
			}
			won[tries[i].key]++
			switch {
			case r.ChargeErr == nil:
				require.True(t, r.Charge.Charged)
				charged++
			case errors.Is(r.ChargeErr, store.ErrInsufficientFunds):
				broke++
			default:
				require.NoError(t, r.ChargeErr)
			}
		}
		require.Len(t, won, 7)
		for k, n := range won {
			require.Equal(t, 1, n, "winners of %s", k)
		}
		require.Equal(t, 4, charged)
		require.Equal(t, 3, broke)
		requireBalance(t, s, "alice", 0)
	}},

	{"Callers", func(t TB, s store.Store, rt *store.CountingClient) {
		c := store.Caller{ID: "c1", Name: "Alice", KeyHash: []byte{1, 2, 3}, CreatedAt: t0}
		require.NoError(t, s.CreateCaller(ctx, c))
		got, err := s.CallerByKeyHash(ctx, []byte{1, 2, 3})
		require.NoError(t, err)
		require.Equal(t, c, got)
		require.ErrorIs(t, s.CreateCaller(ctx, c), store.ErrConflict)
		require.ErrorIs(t, s.CreateCaller(ctx, store.Caller{ID: "c2", KeyHash: []byte{1, 2, 3}, CreatedAt: t0}), store.ErrConflict)
		_, err = s.CallerByKeyHash(ctx, []byte{9})
		require.ErrorIs(t, err, store.ErrNotFound)
		got, err = s.CallerByID(ctx, "c1")
		require.NoError(t, err)
		require.Equal(t, c, got)
		_, err = s.CallerByID(ctx, "nobody")
		require.ErrorIs(t, err, store.ErrNotFound)
	}},
}
