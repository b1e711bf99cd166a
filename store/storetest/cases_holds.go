package storetest

import (
	"fmt"
	"sync"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// claimHold is claimCharge holding max, a metered price's maximum.
func claimHold(key, owner, caller string, max int64, now time.Time) store.ClaimChargeParams {
	p := claimCharge(key, owner, caller, max, now)
	p.Hold = true
	return p
}

// completeCapture completes f's key capturing used.
func completeCapture(t TB, s store.Store, f store.Fence, used int64, now time.Time) {
	t.Helper()
	require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: f, Now: now, Capture: &used,
		Response: store.Response{StatusCode: 200, Body: []byte("ok")}}))
}

// requireHold checks key's charge: its state, hold, amount and maximum.
func requireHold(t TB, s store.Store, key string, state store.ChargeState, hold store.HoldState, amount, max int64) {
	t.Helper()
	got, err := s.Peek(ctx, key)
	require.NoError(t, err)
	require.Equal(t, []any{state, hold, amount, max}, []any{got.Charge.State, got.Charge.Hold, got.Charge.Amount, got.Charge.Max},
		"charge of %s (state, hold, amount, max)", key)
}

// holdCases: metered prices (the hold invariant, 23-26 of store/holds.go):
// the maximum is held with the claim, the Complete captures what was used
// and releases the rest in its atomic step, a failure refunds the whole
// hold, and an abandoned hold is refunded by the sweep.
var holdCases = []Case{
	{"HoldCaptureReleasesTheRest", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		var r store.ClaimChargeResult
		trips := int64(2)
		if rt != nil && rt.CanBatch() {
			trips = 1
		}
		requireTrips(t, rt, trips, func() {
			r = mustClaimCharge(t, s, claimHold("k", "A", "alice", 100, t0), store.OutcomeClaimed)
		}, "claim and hold")
		require.NoError(t, r.ChargeErr)
		require.Equal(t, store.ChargeResult{Charged: true, Balance: 900}, r.Charge)
		requireHold(t, s, "k", store.ChargeCharged, store.HoldHeld, 100, 100)
		// The Complete captures 27 and releases 73, in its one statement.
		used := int64(27)
		requireTrips(t, rt, 1, func() {
			require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(r.ClaimResult), Now: at(time.Second),
				Capture: &used, Response: store.Response{StatusCode: 200, Body: []byte("ok")}}))
		}, "complete and capture")
		requireBalance(t, s, "alice", 973)
		requireKinds(t, s, "k", "charge", "release")
		requireHold(t, s, "k", store.ChargeCharged, store.HoldCaptured, 27, 100)
		entries, err := s.Entries(ctx, store.EntryFilter{Key: "k"})
		require.NoError(t, err)
		require.Equal(t, []int64{-100, 73}, []int64{entries[0].Amount, entries[1].Amount})
		require.Equal(t, []int64{900, 973}, []int64{entries[0].BalanceAfter, entries[1].BalanceAfter})
		// A Complete retried after a lost reply is fenced out and releases
		// nothing more.
		require.ErrorIs(t, s.Complete(ctx, store.CompleteParams{Fence: fence(r.ClaimResult), Now: at(2 * time.Second),
			Capture: &used, Response: store.Response{StatusCode: 200, Body: []byte("ok")}}), store.ErrFencedOut)
		requireBalance(t, s, "alice", 973)
		requireKinds(t, s, "k", "charge", "release")
		// The spend counts what was captured.
		u, err := s.Usage(ctx, store.UsageQuery{From: t0.Add(-time.Hour), To: t0.Add(time.Hour), Caller: "alice"})
		require.NoError(t, err)
		require.Len(t, u, 1)
		require.Equal(t, []int64{1, 100, 0, 73}, []int64{u[0].Charges, u[0].Charged, u[0].Refunded, u[0].Released})
	}},

	{"HoldCaptureEdges", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		// Capturing the maximum (or more: clamped) releases nothing.
		for i, c := range []int64{100, 250} {
			r := mustClaimCharge(t, s, claimHold(fmt.Sprintf("max%d", i), "A", "alice", 100, t0), store.OutcomeClaimed)
			completeCapture(t, s, fence(r.ClaimResult), c, at(time.Second))
			requireKinds(t, s, fmt.Sprintf("max%d", i), "charge")
			requireHold(t, s, fmt.Sprintf("max%d", i), store.ChargeCharged, store.HoldCaptured, 100, 100)
		}
		// No capture given: the whole hold is captured.
		r := mustClaimCharge(t, s, claimHold("none", "A", "alice", 100, t0), store.OutcomeClaimed)
		complete(t, s, fence(r.ClaimResult), at(time.Second))
		requireHold(t, s, "none", store.ChargeCharged, store.HoldCaptured, 100, 100)
		// Capturing nothing releases it all: the key nets zero, charged.
		r = mustClaimCharge(t, s, claimHold("zero", "A", "alice", 100, t0), store.OutcomeClaimed)
		completeCapture(t, s, fence(r.ClaimResult), 0, at(time.Second))
		requireKinds(t, s, "zero", "charge", "release")
		requireHold(t, s, "zero", store.ChargeCharged, store.HoldCaptured, 0, 100)
		requireBalance(t, s, "alice", 700)
		// A negative capture is refused, changing nothing.
		r = mustClaimCharge(t, s, claimHold("neg", "A", "alice", 100, t0), store.OutcomeClaimed)
		neg := int64(-1)
		require.ErrorIs(t, s.Complete(ctx, store.CompleteParams{Fence: fence(r.ClaimResult), Now: at(time.Second),
			Capture: &neg, Response: store.Response{StatusCode: 200}}), store.ErrInvalidAmount)
		requireHold(t, s, "neg", store.ChargeCharged, store.HoldHeld, 100, 100)
		// A capture on a key that is no hold moves nothing.
		p := claimCharge("plain", "A", "alice", 50, t0)
		r = mustClaimCharge(t, s, p, store.OutcomeClaimed)
		completeCapture(t, s, fence(r.ClaimResult), 10, at(time.Second))
		requireKinds(t, s, "plain", "charge")
		requireHold(t, s, "plain", store.ChargeCharged, store.HoldNone, 50, 0)
		requireBalance(t, s, "alice", 550)
		// Past the TTL the key starts afresh: no hold of the old incarnation
		// shows, and a new hold is its own.
		r = mustClaimCharge(t, s, claimCharge("zero", "B", "alice", 30, at(2*ttl)), store.OutcomeClaimed)
		require.NoError(t, r.ChargeErr)
		requireHold(t, s, "zero", store.ChargeCharged, store.HoldNone, 30, 0)
		requireBalance(t, s, "alice", 520)
	}},

	{"HoldRefundedOnFailureThenRetried", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		a := mustClaimCharge(t, s, claimHold("k", "A", "alice", 100, t0), store.OutcomeClaimed)
		refunded, bal, err := s.Refund(ctx, fence(a.ClaimResult), at(time.Second))
		require.NoError(t, err)
		require.True(t, refunded)
		require.Equal(t, int64(1000), bal)
		require.NoError(t, s.Fail(ctx, fence(a.ClaimResult), "upstream 503", at(time.Second)))
		// The retry holds again and captures; the failed attempt's owner
		// is fenced out of both.
		b := mustClaimCharge(t, s, claimHold("k", "B", "alice", 100, at(2*time.Second)), store.OutcomeClaimed)
		require.True(t, b.Charge.Charged)
		used := int64(40)
		require.ErrorIs(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a.ClaimResult), Now: at(3 * time.Second),
			Capture: &used, Response: store.Response{StatusCode: 200}}), store.ErrFencedOut)
		completeCapture(t, s, fence(b.ClaimResult), 40, at(3*time.Second))
		requireKinds(t, s, "k", "charge", "refund", "charge", "release")
		requireBalance(t, s, "alice", 960)
	}},

	{"HoldInheritedByTakeoverAndSwept", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		a := mustClaimCharge(t, s, claimHold("k", "A", "alice", 100, t0), store.OutcomeClaimed)
		// A crashes; B takes over after the lease with the hold inherited:
		// nothing more is held.
		b := mustClaimCharge(t, s, claimHold("k", "B", "alice", 100, at(lease+time.Second)), store.OutcomeClaimed)
		require.NoError(t, b.ChargeErr)
		require.False(t, b.Charge.Charged)
		requireBalance(t, s, "alice", 900)
		// The stale owner can neither capture nor release.
		used := int64(1)
		require.ErrorIs(t, s.Complete(ctx, store.CompleteParams{Fence: fence(a.ClaimResult), Now: at(lease + 2*time.Second),
			Capture: &used, Response: store.Response{StatusCode: 200}}), store.ErrFencedOut)
		requireHold(t, s, "k", store.ChargeCharged, store.HoldHeld, 100, 100)
		// B crashes too: the sweep after its lease refunds the whole hold.
		_, err := s.Sweep(ctx, at(3*lease), 100)
		require.NoError(t, err)
		requireHold(t, s, "k", store.ChargeRefunded, store.HoldHeld, 100, 100)
		requireBalance(t, s, "alice", 1000)
		requireKinds(t, s, "k", "charge", "refund")
		// A 4xx answer is refunded whole too, then stored.
		c := mustClaimCharge(t, s, claimHold("k4", "C", "alice", 100, at(4*lease)), store.OutcomeClaimed)
		refunded, _, err := s.Refund(ctx, fence(c.ClaimResult), at(4*lease))
		require.NoError(t, err)
		require.True(t, refunded)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(c.ClaimResult), Now: at(4 * lease),
			Capture: &used, Response: store.Response{StatusCode: 424}}))
		requireKinds(t, s, "k4", "charge", "refund")
		requireBalance(t, s, "alice", 1000)
	}},

	{"HoldCountsAgainstCapUntilCaptured", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 10000)
		setCap(t, s, "alice", store.AnyKey, 250, store.ResetDaily, t0)
		// 20 concurrent holds of 100 against a cap of 250: exactly 2 pass.
		var wg sync.WaitGroup
		res := make([]store.ClaimChargeResult, 20)
		errs := make([]error, 20)
		for i := range res {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i], errs[i] = s.ClaimCharge(ctx, claimHold(fmt.Sprintf("k%d", i), "A", "alice", 100, t0))
			}()
		}
		wg.Wait()
		held := []store.ClaimChargeResult{}
		for i, r := range res {
			require.NoError(t, errs[i])
			if r.ChargeErr == nil {
				held = append(held, r)
				continue
			}
			requireCapped(t, r.ChargeErr, store.AnyKey, 250, 200)
			require.NoError(t, s.Fail(ctx, fence(r.ClaimResult), "capped", t0))
		}
		require.Len(t, held, 2)
		// Capturing 10 of each gives 180 back to the window: a third hold
		// fits (20 + 100 <= 250), a fourth does not.
		for _, r := range held {
			completeCapture(t, s, fence(r.ClaimResult), 10, at(time.Second))
		}
		caps, err := s.Caps(ctx, "alice", at(time.Second))
		require.NoError(t, err)
		require.Equal(t, int64(20), caps[0].Spent)
		r := mustClaimCharge(t, s, claimHold("k20", "A", "alice", 100, at(2*time.Second)), store.OutcomeClaimed)
		require.NoError(t, r.ChargeErr)
		r = mustClaimCharge(t, s, claimHold("k21", "A", "alice", 200, at(2*time.Second)), store.OutcomeClaimed)
		requireCapped(t, r.ChargeErr, store.AnyKey, 250, 120)
		require.NoError(t, s.Fail(ctx, fence(r.ClaimResult), "capped", at(2*time.Second)))
		requireBalance(t, s, "alice", 10000-20-100)
		// A cap set later counts captures, not holds.
		c := setCap(t, s, "alice", store.AnyKey, 1000, store.ResetDaily, at(3*time.Second))
		require.Equal(t, int64(120), c.Spent)
	}},
}
