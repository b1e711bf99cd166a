package storetest

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// window is the day of t0, the free quota's window in these cases.
var window, _ = store.PeriodDay.Window(t0)

// claimFree is claimCharge with a free quota of limit calls per day of
// tool "search" for caller.
func claimFree(key, owner, caller string, amount, limit int64, now time.Time) store.ClaimChargeParams {
	p := claimCharge(key, owner, caller, amount, now)
	p.Tool, p.CallerID = "search", caller
	p.Quota = &store.Quota{Limit: limit, Window: window}
	return p
}

// quotaTrips is the round trips of a ClaimCharge with a quota and a price:
// one batch on a Batcher, else its three statements one by one.
func quotaTrips(rt *store.CountingClient) int64 {
	if rt != nil && rt.CanBatch() {
		return 1
	}
	return 3
}

func complete(t TB, s store.Store, f store.Fence, now time.Time) {
	t.Helper()
	require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: f, Now: now,
		Response: store.Response{StatusCode: 200, Body: []byte("ok")}}))
}

// pricingCases: free quotas (the quota invariant, 17-20 of store/quota.go):
// a unit is taken with the claim, once per key, inherited by a takeover,
// never by a replay or a waiter, given back once by a refund or the sweep.
var pricingCases = []Case{
	{"QuotaFreeThenPriced", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 100)
		for i, want := range []int64{1, 2} {
			var r store.ClaimChargeResult
			requireTrips(t, rt, quotaTrips(rt), func() {
				r = mustClaimCharge(t, s, claimFree(fmt.Sprintf("k%d", i), "A", "alice", 30, 2, at(time.Duration(i)*time.Second)), store.OutcomeClaimed)
			}, "claim with a free quota")
			require.NoError(t, r.ChargeErr)
			require.Equal(t, store.QuotaResult{Free: true, Used: want}, r.Quota)
			require.False(t, r.Charge.Charged)
			got, err := s.Peek(ctx, r.Record.Key)
			require.NoError(t, err)
			require.Equal(t, store.QuotaTaken, got.Quota)
			require.Equal(t, store.ChargeNone, got.Charge.State)
			complete(t, s, fence(r.ClaimResult), at(10*time.Second))
		}
		requireBalance(t, s, "alice", 100)
		// The quota is used up: the price applies, in the same one step.
		var r store.ClaimChargeResult
		requireTrips(t, rt, quotaTrips(rt), func() {
			r = mustClaimCharge(t, s, claimFree("k2", "A", "alice", 30, 2, at(time.Minute)), store.OutcomeClaimed)
		}, "priced claim")
		require.NoError(t, r.ChargeErr)
		require.Equal(t, store.QuotaResult{}, r.Quota)
		require.Equal(t, store.ChargeResult{Charged: true, Balance: 70}, r.Charge)
		requireKinds(t, s, "k2", "charge")
		requireKinds(t, s, "k0")
		// Another caller, another tool's window: their own quota.
		b := mustClaimCharge(t, s, claimFree("kb", "B", "bob", 30, 2, at(time.Minute)), store.OutcomeClaimed)
		require.Equal(t, store.QuotaResult{Free: true, Used: 1}, b.Quota)
		// The next day is a new window.
		next := claimFree("k3", "A", "alice", 30, 2, t0.Add(24*time.Hour))
		next.Quota.Window, _ = store.PeriodDay.Window(next.Now)
		n := mustClaimCharge(t, s, next, store.OutcomeClaimed)
		require.Equal(t, store.QuotaResult{Free: true, Used: 1}, n.Quota)
	}},

	{"QuotaExhaustedWithoutPrice", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaimCharge(t, s, claimFree("k1", "A", "alice", 0, 1, t0), store.OutcomeClaimed)
		require.NoError(t, a.ChargeErr)
		require.True(t, a.Quota.Free)
		b := mustClaimCharge(t, s, claimFree("k2", "A", "alice", 0, 1, t0), store.OutcomeClaimed)
		require.ErrorIs(t, b.ChargeErr, store.ErrQuotaExhausted)
		require.False(t, b.Quota.Free)
		got, err := s.Peek(ctx, "k2")
		require.NoError(t, err)
		require.Equal(t, store.QuotaNone, got.Quota)
		require.NoError(t, s.Fail(ctx, fence(b.ClaimResult), "quota exhausted", t0))
		// A price 0 without a quota is no claim-and-charge.
		_, err = s.ClaimCharge(ctx, claimCharge("k3", "A", "alice", 0, t0))
		require.ErrorIs(t, err, store.ErrInvalidAmount)
		// A quota must count for the claimed caller.
		bad := claimFree("k4", "A", "alice", 0, 1, t0)
		bad.CallerID = "bob"
		_, err = s.ClaimCharge(ctx, bad)
		require.ErrorIs(t, err, store.ErrInvalidArgument)
		bad = claimFree("k4", "A", "alice", 0, 0, t0)
		_, err = s.ClaimCharge(ctx, bad)
		require.ErrorIs(t, err, store.ErrInvalidArgument)
	}},

	{"QuotaReplayWaiterTakeover", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 100)
		a := mustClaimCharge(t, s, claimFree("k", "A", "alice", 30, 5, t0), store.OutcomeClaimed)
		require.Equal(t, int64(1), a.Quota.Used)
		// A waiter while A holds the key takes nothing.
		w := mustClaimCharge(t, s, claimFree("k", "W", "alice", 30, 5, at(time.Second)), store.OutcomeInProgress)
		require.Equal(t, store.QuotaResult{}, w.Quota)
		// A crashes; B takes over after the lease and inherits the unit:
		// no second unit, no charge.
		b := mustClaimCharge(t, s, claimFree("k", "B", "alice", 30, 5, at(lease+time.Second)), store.OutcomeClaimed)
		require.NoError(t, b.ChargeErr)
		require.Equal(t, store.QuotaResult{Free: true}, b.Quota)
		require.False(t, b.Charge.Charged)
		// A plain Charge on a key holding a unit takes nothing either.
		cr, err := s.Charge(ctx, charge(fence(b.ClaimResult), "alice", 30, at(lease+time.Second)))
		require.NoError(t, err)
		require.False(t, cr.Charged)
		complete(t, s, fence(b.ClaimResult), at(lease+2*time.Second))
		// A replay takes nothing.
		r := mustClaimCharge(t, s, claimFree("k", "C", "alice", 30, 5, at(lease+3*time.Second)), store.OutcomeCompleted)
		require.Equal(t, store.QuotaResult{}, r.Quota)
		requireBalance(t, s, "alice", 100)
		requireKinds(t, s, "k")
		// The next key sees one unit used.
		n := mustClaimCharge(t, s, claimFree("k2", "A", "alice", 30, 5, at(lease+4*time.Second)), store.OutcomeClaimed)
		require.Equal(t, int64(2), n.Quota.Used)
	}},

	{"QuotaRefundGivesBackOnce", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaimCharge(t, s, claimFree("k", "A", "alice", 0, 1, t0), store.OutcomeClaimed)
		require.True(t, a.Quota.Free)
		refunded, _, err := s.Refund(ctx, fence(a.ClaimResult), at(time.Second))
		require.NoError(t, err)
		require.True(t, refunded)
		refunded, _, err = s.Refund(ctx, fence(a.ClaimResult), at(time.Second))
		require.NoError(t, err)
		require.False(t, refunded, "a unit is given back once")
		got, err := s.Peek(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, store.QuotaReturned, got.Quota)
		require.NoError(t, s.Fail(ctx, fence(a.ClaimResult), "upstream failed", at(time.Second)))
		// A stale owner can give nothing back.
		_, _, err = s.Refund(ctx, fence(a.ClaimResult), at(time.Second))
		require.ErrorIs(t, err, store.ErrFencedOut)
		// The retry takes the unit again (usage 1, not 2).
		b := mustClaimCharge(t, s, claimFree("k", "B", "alice", 0, 1, at(2*time.Second)), store.OutcomeClaimed)
		require.Equal(t, store.QuotaResult{Free: true, Used: 1}, b.Quota)
		complete(t, s, fence(b.ClaimResult), at(3*time.Second))
		// The quota of 1 is used: another key is refused.
		c := mustClaimCharge(t, s, claimFree("k2", "A", "alice", 0, 1, at(4*time.Second)), store.OutcomeClaimed)
		require.ErrorIs(t, c.ChargeErr, store.ErrQuotaExhausted)
		require.NoError(t, s.Fail(ctx, fence(c.ClaimResult), "quota exhausted", at(4*time.Second)))
	}},

	{"QuotaSweepReturnsAbandoned", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaimCharge(t, s, claimFree("k", "A", "alice", 0, 1, t0), store.OutcomeClaimed)
		require.True(t, a.Quota.Free)
		// A crashes and nobody retries: after the TTL the claim is not
		// fresh while the unit is held; the sweep fails it and gives the
		// unit back, then deletes it.
		late := at(ttl + time.Minute)
		n, err := s.Sweep(ctx, late, 10)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		_, err = s.Peek(ctx, "k")
		require.ErrorIs(t, err, store.ErrNotFound)
		b := mustClaimCharge(t, s, claimFree("k2", "B", "alice", 0, 1, late), store.OutcomeClaimed)
		require.Equal(t, store.QuotaResult{Free: true, Used: 1}, b.Quota)
	}},

	{"QuotaExpiredUnfinishedIsTakenOver", func(t TB, s store.Store, rt *store.CountingClient) {
		a := mustClaimCharge(t, s, claimFree("k", "A", "alice", 0, 2, t0), store.OutcomeClaimed)
		require.True(t, a.Quota.Free)
		// Past the TTL, the same request takes the key over with its unit
		// (not a fresh claim that would forget it).
		b := mustClaimCharge(t, s, claimFree("k", "B", "alice", 0, 2, at(ttl+time.Minute)), store.OutcomeClaimed)
		require.Equal(t, store.QuotaResult{Free: true}, b.Quota)
		require.Equal(t, a.Record.Generation+1, b.Record.Generation)
		complete(t, s, fence(b.ClaimResult), at(ttl+2*time.Minute))
		c := mustClaimCharge(t, s, claimFree("k2", "A", "alice", 0, 2, at(ttl+2*time.Minute)), store.OutcomeClaimed)
		require.Equal(t, int64(2), c.Quota.Used)
	}},

	{"QuotaRace", func(t TB, s store.Store, rt *store.CountingClient) {
		// 50 keys at once against a quota of 10: exactly 10 free, the
		// other 40 charged, each once.
		credit(t, s, "alice", 1000)
		const n, limit = 50, 10
		results := make([]store.ClaimChargeResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				results[i], errs[i] = s.ClaimCharge(ctx, claimFree(fmt.Sprintf("k%d", i), "A", "alice", 20, limit, t0))
			}(i)
		}
		wg.Wait()
		free, charged := 0, 0
		used := map[int64]bool{}
		for i := range results {
			require.NoError(t, errs[i])
			require.NoError(t, results[i].ChargeErr)
			switch {
			case results[i].Quota.Free:
				free++
				require.False(t, used[results[i].Quota.Used], "usage %d seen twice", results[i].Quota.Used)
				used[results[i].Quota.Used] = true
			case results[i].Charge.Charged:
				charged++
			}
		}
		require.Equal(t, limit, free)
		require.Equal(t, n-limit, charged)
		requireBalance(t, s, "alice", 1000-20*(n-limit))
	}},

	{"QuotaRaceSameKey", func(t TB, s store.Store, rt *store.CountingClient) {
		// 10 owners race for one key: one claim wins, one unit is taken.
		const n = 10
		results := make([]store.ClaimChargeResult, n)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				r, err := s.ClaimCharge(ctx, claimFree("k", fmt.Sprintf("O%d", i), "alice", 0, 5, t0))
				mu.Lock()
				defer mu.Unlock()
				results[i], errs = r, append(errs, err)
			}(i)
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs...))
		free := 0
		for _, r := range results {
			if r.Quota.Free {
				free++
				require.Equal(t, int64(1), r.Quota.Used)
			}
		}
		require.Equal(t, 1, free)
	}},
}

func setCap(t TB, s store.Store, caller, key string, limit int64, reset store.CapReset, now time.Time) store.Cap {
	t.Helper()
	c, err := s.SetCap(ctx, store.SetCapParams{Caller: caller, Key: key, Currency: "USD", Limit: limit, Reset: reset, Now: now})
	require.NoError(t, err)
	return c
}

// requireCapped asserts err is a refusal by the cap of key with spent.
func requireCapped(t TB, err error, key string, limit, spent int64) *store.Cap {
	t.Helper()
	var ife *store.InsufficientFundsError
	require.ErrorAs(t, err, &ife)
	require.NotNil(t, ife.Cap, "refused by a cap: %v", err)
	require.Equal(t, key, ife.Cap.Key)
	require.Equal(t, limit, ife.Cap.Limit)
	require.Equal(t, spent, ife.Cap.Spent)
	return ife.Cap
}

// capCases: spending caps (the cap invariant, 21-22 of store/caps.go).
var capCases = []Case{
	{"CapRefusesAtTheBoundary", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		c := setCap(t, s, "alice", store.AnyKey, 100, store.ResetDaily, t0)
		require.Equal(t, store.Cap{Caller: "alice", Key: store.AnyKey, Currency: "USD", Limit: 100, Reset: store.ResetDaily,
			ResetsAt: time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC), UpdatedAt: t0}, c)
		var last store.ClaimChargeResult
		for i := range 4 {
			var r store.ClaimChargeResult
			trips := int64(2)
			if rt != nil && rt.CanBatch() {
				trips = 1
			}
			if i == 3 {
				trips += 2 // the refusal reads why: the fence, then the cap
			}
			requireTrips(t, rt, trips, func() {
				r = mustClaimCharge(t, s, claimCharge(fmt.Sprintf("k%d", i), "A", "alice", 30, at(time.Duration(i)*time.Second)), store.OutcomeClaimed)
			}, "capped claim and charge")
			if i < 3 {
				require.NoError(t, r.ChargeErr)
				require.True(t, r.Charge.Charged)
				last = r
			} else {
				got := requireCapped(t, r.ChargeErr, store.AnyKey, 100, 90)
				require.Equal(t, store.ResetDaily, got.Reset)
				require.Equal(t, time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC), got.ResetsAt)
				require.NoError(t, s.Fail(ctx, fence(r.ClaimResult), "capped", at(4*time.Second)))
			}
		}
		requireBalance(t, s, "alice", 910)
		// A refund gives the spend back: the refused call now fits.
		refunded, _, err := s.Refund(ctx, fence(last.ClaimResult), at(5*time.Second))
		require.NoError(t, err)
		require.True(t, refunded)
		caps, err := s.Caps(ctx, "alice", at(5*time.Second))
		require.NoError(t, err)
		require.Len(t, caps, 1)
		require.Equal(t, int64(60), caps[0].Spent)
		r := mustClaimCharge(t, s, claimCharge("k3", "B", "alice", 30, at(6*time.Second)), store.OutcomeClaimed)
		require.NoError(t, r.ChargeErr)
		// Exactly at the cap: 90 + 10 = 100 passes, one more unit does not.
		r = mustClaimCharge(t, s, claimCharge("k4", "A", "alice", 10, at(7*time.Second)), store.OutcomeClaimed)
		require.NoError(t, r.ChargeErr)
		r = mustClaimCharge(t, s, claimCharge("k5", "A", "alice", 1, at(8*time.Second)), store.OutcomeClaimed)
		requireCapped(t, r.ChargeErr, store.AnyKey, 100, 100)
		require.NoError(t, s.Fail(ctx, fence(r.ClaimResult), "capped", at(8*time.Second)))
		// The next day is a new window.
		r = mustClaimCharge(t, s, claimCharge("k6", "A", "alice", 100, t0.Add(12*time.Hour)), store.OutcomeClaimed)
		require.NoError(t, r.ChargeErr)
		caps, err = s.Caps(ctx, "alice", t0.Add(12*time.Hour))
		require.NoError(t, err)
		require.Equal(t, int64(100), caps[0].Spent)
		require.Equal(t, time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), caps[0].ResetsAt)
	}},

	{"CapPerKey", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		setCap(t, s, "alice", "k1", 50, store.ResetWeekly, t0)
		setCap(t, s, "alice", store.AnyKey, 80, store.ResetMonthly, t0)
		withKey := func(key, id string, amount int64, now time.Time) store.ClaimChargeParams {
			p := claimCharge(key, "A", "alice", amount, now)
			p.KeyID = id
			return p
		}
		r := mustClaimCharge(t, s, withKey("a", "k1", 30, t0), store.OutcomeClaimed)
		require.NoError(t, r.ChargeErr)
		r = mustClaimCharge(t, s, withKey("b", "k1", 30, t0), store.OutcomeClaimed)
		requireCapped(t, r.ChargeErr, "k1", 50, 30) // the key's own cap first
		require.NoError(t, s.Fail(ctx, fence(r.ClaimResult), "capped", t0))
		// The original key ("") is not under k1's cap, only the caller's.
		r = mustClaimCharge(t, s, withKey("c", "", 40, t0), store.OutcomeClaimed)
		require.NoError(t, r.ChargeErr)
		r = mustClaimCharge(t, s, withKey("d", "", 20, t0), store.OutcomeClaimed)
		requireCapped(t, r.ChargeErr, store.AnyKey, 80, 70)
		require.NoError(t, s.Fail(ctx, fence(r.ClaimResult), "capped", t0))
		// A plain Charge is capped too.
		cl := mustClaim(t, s, claim("e", "A", "fp", t0), store.OutcomeClaimed)
		cp := charge(fence(cl), "alice", 20, t0)
		cp.KeyID = "k2"
		_, err := s.Charge(ctx, cp)
		requireCapped(t, err, store.AnyKey, 80, 70)
		caps, err := s.Caps(ctx, "alice", t0)
		require.NoError(t, err)
		require.Len(t, caps, 2)
		require.Equal(t, []string{"*", "k1"}, []string{caps[0].Key, caps[1].Key})
		require.Equal(t, []int64{70, 30}, []int64{caps[0].Spent, caps[1].Spent})
		require.Equal(t, time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), caps[1].ResetsAt, "weeks start on Monday")
		require.Equal(t, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), caps[0].ResetsAt)
		requireBalance(t, s, "alice", 930)
	}},

	{"CapSetMidWindowCountsEarlierSpend", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		r := mustClaimCharge(t, s, claimCharge("a", "A", "alice", 80, t0), store.OutcomeClaimed)
		require.NoError(t, r.ChargeErr)
		yesterday := mustClaimCharge(t, s, claimCharge("y", "A", "alice", 500, t0.Add(-24*time.Hour)), store.OutcomeClaimed)
		require.NoError(t, yesterday.ChargeErr)
		c := setCap(t, s, "alice", store.AnyKey, 100, store.ResetDaily, at(time.Minute))
		require.Equal(t, int64(80), c.Spent)
		r = mustClaimCharge(t, s, claimCharge("b", "A", "alice", 30, at(2*time.Minute)), store.OutcomeClaimed)
		requireCapped(t, r.ChargeErr, store.AnyKey, 100, 80)
		require.NoError(t, s.Fail(ctx, fence(r.ClaimResult), "capped", at(2*time.Minute)))
		// Lowered under the spend: nothing more is charged, and the rows stay consistent.
		c = setCap(t, s, "alice", store.AnyKey, 50, store.ResetDaily, at(3*time.Minute))
		require.Equal(t, int64(80), c.Spent)
		// Another reset: the spend is computed for its window (never: ever).
		c = setCap(t, s, "alice", store.AnyKey, 900, store.ResetNever, at(4*time.Minute))
		require.Equal(t, int64(580), c.Spent)
		require.True(t, c.ResetsAt.IsZero())
		r = mustClaimCharge(t, s, claimCharge("c", "A", "alice", 400, at(5*time.Minute)), store.OutcomeClaimed)
		// The balance (420) covers it, the cap does not.
		requireCapped(t, r.ChargeErr, store.AnyKey, 900, 580)
		require.NoError(t, s.Fail(ctx, fence(r.ClaimResult), "capped", at(5*time.Minute)))
		// Bad caps change nothing.
		for _, p := range []store.SetCapParams{
			{Caller: "alice", Key: store.AnyKey, Currency: "XYZ", Limit: 1, Reset: store.ResetDaily, Now: t0},
			{Caller: "alice", Key: store.AnyKey, Currency: "USD", Limit: -1, Reset: store.ResetDaily, Now: t0},
			{Caller: "alice", Key: store.AnyKey, Currency: "USD", Limit: 1, Reset: "hourly", Now: t0},
		} {
			_, err := s.SetCap(ctx, p)
			require.Error(t, err)
			require.True(t, errors.Is(err, store.ErrUnknownCurrency) || errors.Is(err, store.ErrInvalidAmount) ||
				errors.Is(err, store.ErrInvalidArgument), "%v", err)
		}
		caps, err := s.Caps(ctx, "alice", at(5*time.Minute))
		require.NoError(t, err)
		require.Len(t, caps, 1)
		require.Equal(t, int64(900), caps[0].Limit)
	}},

	{"CapRefundGoesToTheChargesWindow", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		setCap(t, s, "alice", store.AnyKey, 100, store.ResetDaily, t0)
		late := time.Date(2026, 11, 28, 23, 59, 59, 0, time.UTC)
		p := claimCharge("k", "A", "alice", 60, late)
		p.Lease = time.Minute
		r := mustClaimCharge(t, s, p, store.OutcomeClaimed)
		require.NoError(t, r.ChargeErr)
		next := late.Add(2 * time.Second) // the next day
		n := mustClaimCharge(t, s, claimCharge("n", "A", "alice", 100, next), store.OutcomeClaimed)
		require.NoError(t, n.ChargeErr)
		refunded, _, err := s.Refund(ctx, fence(r.ClaimResult), next)
		require.NoError(t, err)
		require.True(t, refunded)
		caps, err := s.Caps(ctx, "alice", late)
		require.NoError(t, err)
		require.Equal(t, int64(0), caps[0].Spent, "the refund went back to the charge's day")
		caps, err = s.Caps(ctx, "alice", next)
		require.NoError(t, err)
		require.Equal(t, int64(100), caps[0].Spent, "and not to today's")
	}},

	{"CapDelete", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 1000)
		setCap(t, s, "alice", store.AnyKey, 100, store.ResetDaily, t0)
		setCap(t, s, "alice", "k1", 50, store.ResetNever, t0)
		withKey := func(key, id string, amount int64, now time.Time) store.ClaimChargeParams {
			p := claimCharge(key, "A", "alice", amount, now)
			p.KeyID = id
			return p
		}
		a := mustClaimCharge(t, s, withKey("a", "", 60, t0), store.OutcomeClaimed)
		require.NoError(t, a.ChargeErr)
		r := mustClaimCharge(t, s, withKey("b", "k1", 30, at(time.Second)), store.OutcomeClaimed)
		require.NoError(t, r.ChargeErr)
		r = mustClaimCharge(t, s, withKey("c", "", 20, at(2*time.Second)), store.OutcomeClaimed)
		requireCapped(t, r.ChargeErr, store.AnyKey, 100, 90)
		require.NoError(t, s.Fail(ctx, fence(r.ClaimResult), "capped", at(2*time.Second)))

		// Deleting the caller's cap is one round trip; the key's cap stays.
		requireTrips(t, rt, 1, func() { require.NoError(t, s.DeleteCap(ctx, "alice", store.AnyKey, "USD")) }, "delete cap")
		require.NoError(t, s.CheckInvariants(ctx), "the deleted cap's windows went with it")
		caps, err := s.Caps(ctx, "alice", at(3*time.Second))
		require.NoError(t, err)
		require.Len(t, caps, 1)
		require.Equal(t, "k1", caps[0].Key)
		require.Equal(t, int64(30), caps[0].Spent)
		// No such cap: not found, nothing changed.
		for _, k := range []struct{ caller, key, currency string }{
			{"alice", store.AnyKey, "USD"}, {"alice", "k1", "EUR"}, {"alice", "k2", "USD"}, {"bob", "k1", "USD"},
		} {
			require.ErrorIs(t, s.DeleteCap(ctx, k.caller, k.key, k.currency), store.ErrNotFound, "%v", k)
		}
		caps, err = s.Caps(ctx, "alice", at(3*time.Second))
		require.NoError(t, err)
		require.Len(t, caps, 1)

		// Charges beyond the old limit pass (60 + 30 + 50 = 140 > 100), and
		// a refund of a charge made under the deleted cap goes through.
		r = mustClaimCharge(t, s, withKey("d", "", 50, at(4*time.Second)), store.OutcomeClaimed)
		require.NoError(t, r.ChargeErr)
		refunded, _, err := s.Refund(ctx, fence(a.ClaimResult), at(5*time.Second))
		require.NoError(t, err)
		require.True(t, refunded)
		// The key's cap still holds: 30 + 30 > 50.
		r = mustClaimCharge(t, s, withKey("e", "k1", 30, at(6*time.Second)), store.OutcomeClaimed)
		requireCapped(t, r.ChargeErr, "k1", 50, 30)
		require.NoError(t, s.Fail(ctx, fence(r.ClaimResult), "capped", at(6*time.Second)))
		require.NoError(t, s.CheckInvariants(ctx))

		// Set again, the cap counts the window's spend from the ledger:
		// b 30 + d 50 (a was refunded).
		c := setCap(t, s, "alice", store.AnyKey, 100, store.ResetDaily, at(7*time.Second))
		require.Equal(t, int64(80), c.Spent)
		r = mustClaimCharge(t, s, withKey("f", "", 30, at(8*time.Second)), store.OutcomeClaimed)
		requireCapped(t, r.ChargeErr, store.AnyKey, 100, 80)
		require.NoError(t, s.Fail(ctx, fence(r.ClaimResult), "capped", at(8*time.Second)))

		// A key's cap goes the same way.
		require.NoError(t, s.DeleteCap(ctx, "alice", "k1", "USD"))
		r = mustClaimCharge(t, s, withKey("g", "k1", 20, at(9*time.Second)), store.OutcomeClaimed)
		require.NoError(t, r.ChargeErr, "30 + 20 = 50 under the caller's cap of 100 (80 spent), and k1 has no cap")
		caps, err = s.Caps(ctx, "alice", at(9*time.Second))
		require.NoError(t, err)
		require.Len(t, caps, 1)
		require.Equal(t, store.Cap{Caller: "alice", Key: store.AnyKey, Currency: "USD", Limit: 100, Reset: store.ResetDaily, Spent: 100,
			ResetsAt: time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC), UpdatedAt: at(7 * time.Second)}, caps[0])
		requireBalance(t, s, "alice", 1000-30-50-20)
	}},

	{"CapRace", func(t TB, s store.Store, rt *store.CountingClient) {
		// 50 keys at once against a cap of 10 prices: exactly 10 charged.
		credit(t, s, "alice", 100000)
		setCap(t, s, "alice", store.AnyKey, 200, store.ResetMonthly, t0)
		const n = 50
		results := make([]store.ClaimChargeResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				results[i], errs[i] = s.ClaimCharge(ctx, claimCharge(fmt.Sprintf("k%d", i), "A", "alice", 20, t0))
			}(i)
		}
		wg.Wait()
		charged, capped := 0, 0
		for i := range results {
			require.NoError(t, errs[i])
			switch {
			case results[i].ChargeErr == nil:
				require.True(t, results[i].Charge.Charged)
				charged++
			default:
				requireCapped(t, results[i].ChargeErr, store.AnyKey, 200, 200)
				capped++
			}
		}
		require.Equal(t, 10, charged)
		require.Equal(t, n-10, capped)
		requireBalance(t, s, "alice", 100000-200)
	}},
}
