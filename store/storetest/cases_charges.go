package storetest

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// chargeCases: charges and refunds, alone and with the claim (ClaimCharge), under crashes, takeovers and races.
var chargeCases = []Case{
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
}
