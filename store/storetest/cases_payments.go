package storetest

import (
	"fmt"
	"sync"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// paymentCases: per-call payments (the payment invariant, 12-16 of
// store.Payments): one payment pays for one key, settled only after
// success, never twice, credited back once when our side failed after a
// settle.
var paymentCases = []Case{
	{"PaymentClaimBinds", func(t TB, s store.Store, rt *store.CountingClient) {
		var res store.ClaimPaymentResult
		trips := roundTrips(rt, func() { res = mustClaimPay(t, s, claimPay("k1", "A", "pay-a", t0), store.OutcomeClaimed) })
		if rt != nil && rt.CanBatch() {
			require.Equal(t, int64(1), trips, "ClaimPayment is one round trip on a Batcher")
		}
		require.Equal(t, "pay-a", res.Record.PaymentRef)
		require.Equal(t, int64(1), res.Record.Generation)
		require.Equal(t, store.PaymentVerified, res.Payment.State)
		want := payment("pay-a")
		want.Key, want.State, want.CreatedAt, want.UpdatedAt = "k1", store.PaymentVerified, t0, t0
		want.NextAttemptAt = store.FromUnixMilli(0)
		require.Equal(t, want, res.Payment)

		rec, err := s.Peek(ctx, "k1")
		require.NoError(t, err)
		require.Equal(t, "pay-a", rec.PaymentRef)
		got, err := s.PaymentByRef(ctx, payer, "pay-a")
		require.NoError(t, err)
		require.Equal(t, want, got)
		_, err = s.PaymentByRef(ctx, "x402:0xother", "pay-a")
		require.ErrorIs(t, err, store.ErrNotFound, "payments are per caller")
		byKey, err := s.PaymentsByKey(ctx, "k1")
		require.NoError(t, err)
		require.Equal(t, []store.Payment{want}, byKey)

		// A prepaid claim holds no payment.
		plain := mustClaim(t, s, claim("k-plain", "A", "fp", t0), store.OutcomeClaimed)
		require.Equal(t, "", plain.Record.PaymentRef)

		bad := claimPay("k2", "A", "pay-b", t0)
		bad.Payment.Amount = 0
		_, err = s.ClaimPayment(ctx, bad)
		require.ErrorIs(t, err, store.ErrInvalidAmount)
		bad = claimPay("k2", "A", "", t0)
		_, err = s.ClaimPayment(ctx, bad)
		require.ErrorIs(t, err, store.ErrInvalidArgument)
		_, err = s.Peek(ctx, "k2")
		require.ErrorIs(t, err, store.ErrNotFound)
		requirePayBalance(t, s, 0)
	}},

	{"PaymentReusedUnderAnotherKey", func(t TB, s store.Store, rt *store.CountingClient) {
		first := mustClaimPay(t, s, claimPay("k1", "A", "pay-a", t0), store.OutcomeClaimed)
		_, err := s.ClaimPayment(ctx, claimPay("k2", "B", "pay-a", at(time.Second)))
		require.ErrorIs(t, err, store.ErrPaymentReused)
		_, err = s.Peek(ctx, "k2")
		require.ErrorIs(t, err, store.ErrNotFound, "the refused claim claimed nothing")
		requirePaymentsOfKey(t, s, "k2")
		p := requirePayment(t, s, "pay-a", store.PaymentVerified)
		require.Equal(t, "k1", p.Key)
		require.Equal(t, t0, p.UpdatedAt, "nothing changed")
		rec, err := s.Peek(ctx, "k1")
		require.NoError(t, err)
		require.Equal(t, first.Record, rec)

		// Even once k1 failed and released the payment, it pays for k1 only.
		require.NoError(t, s.FailPaid(ctx, fence(first.ClaimResult), "upstream 502", "pay-a",
			store.PaymentOutcome{State: store.PaymentNotCharged}, at(time.Second)))
		_, err = s.ClaimPayment(ctx, claimPay("k2", "B", "pay-a", at(2*time.Second)))
		require.ErrorIs(t, err, store.ErrPaymentReused)

		// The other key is claimable with another payment.
		res := mustClaimPay(t, s, claimPay("k2", "B", "pay-b", at(3*time.Second)), store.OutcomeClaimed)
		require.Equal(t, "pay-b", res.Payment.Ref)
		require.Equal(t, "k2", res.Payment.Key)
		requirePaymentsOfKey(t, s, "k1", "pay-a")
		requirePaymentsOfKey(t, s, "k2", "pay-b")
	}},

	{"PaymentReplayReturnsBound", func(t TB, s store.Store, rt *store.CountingClient) {
		settle(t, s, mustClaimPay(t, s, claimPay("k1", "A", "pay-a", t0), store.OutcomeClaimed), "0xtx")
		replay := mustClaimPay(t, s, claimPay("k1", "B", "pay-a", at(time.Minute)), store.OutcomeCompleted)
		require.Equal(t, "ok", string(replay.Record.Response.Body))
		require.Equal(t, store.PaymentSettled, replay.Payment.State)
		require.Equal(t, "0xtx", replay.Payment.Transaction)
		require.True(t, replay.Payment.Delivered)

		// A second payment presented with the replay is not taken, and
		// stays free for another key.
		other := mustClaimPay(t, s, claimPay("k1", "C", "pay-b", at(2*time.Minute)), store.OutcomeCompleted)
		require.Equal(t, "pay-a", other.Payment.Ref)
		_, err := s.PaymentByRef(ctx, payer, "pay-b")
		require.ErrorIs(t, err, store.ErrNotFound, "the bind of a claim not won is undone")
		mustClaimPay(t, s, claimPay("k2", "D", "pay-b", at(3*time.Minute)), store.OutcomeClaimed)
		requirePayment(t, s, "pay-a", store.PaymentSettled)
		requirePayBalance(t, s, 0)
	}},

	{"PaymentFingerprintMismatchUnbinds", func(t TB, s store.Store, rt *store.CountingClient) {
		mustClaimPay(t, s, claimPay("k1", "A", "pay-a", t0), store.OutcomeClaimed)
		p := claimPay("k1", "B", "pay-b", at(time.Second))
		p.Fingerprint = "another input"
		_, err := s.ClaimPayment(ctx, p)
		require.ErrorIs(t, err, store.ErrFingerprintMismatch)
		_, err = s.PaymentByRef(ctx, payer, "pay-b")
		require.ErrorIs(t, err, store.ErrNotFound, "a refused claim leaves its payment unbound")
		requirePaymentsOfKey(t, s, "k1", "pay-a")
		// So it is usable under its own (next) key, and under k1 once k1 is free.
		p.Key = "k2"
		res, err := s.ClaimPayment(ctx, p)
		require.NoError(t, err)
		require.Equal(t, store.OutcomeClaimed, res.Outcome)
		require.Equal(t, "pay-b", res.Payment.Ref)
	}},

	{"PaymentConcurrentClaims", func(t TB, s store.Store, rt *store.CountingClient) {
		const n = 20
		results := make([]store.ClaimPaymentResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				results[i], errs[i] = s.ClaimPayment(ctx, claimPay("k1", fmt.Sprintf("owner-%d", i), "pay-a", t0))
			}(i)
		}
		wg.Wait()
		claimed, inProgress := 0, 0
		for i := 0; i < n; i++ {
			require.NoError(t, errs[i])
			require.Equal(t, "pay-a", results[i].Payment.Ref)
			switch results[i].Outcome {
			case store.OutcomeClaimed:
				claimed++
			case store.OutcomeInProgress:
				inProgress++
			}
		}
		require.Equal(t, 1, claimed)
		require.Equal(t, n-1, inProgress)
		requirePaymentsOfKey(t, s, "k1", "pay-a")
		requirePayment(t, s, "pay-a", store.PaymentVerified)
	}},

	{"PaymentNotChargedRetriedUnderSameKey", func(t TB, s store.Store, rt *store.CountingClient) {
		// Verify failed (or the upstream did): nothing moved.
		first := mustClaimPay(t, s, claimPay("k1", "A", "pay-a", t0), store.OutcomeClaimed)
		var err error
		trips := roundTrips(rt, func() {
			err = s.FailPaid(ctx, fence(first.ClaimResult), "verify: insufficient_funds", "pay-a",
				store.PaymentOutcome{State: store.PaymentNotCharged}, at(time.Second))
		})
		require.NoError(t, err)
		if rt != nil && rt.CanBatch() {
			require.Equal(t, int64(1), trips, "FailPaid is one round trip on a Batcher")
		}
		rec, err := s.Peek(ctx, "k1")
		require.NoError(t, err)
		require.Equal(t, store.StatusFailed, rec.Status)
		require.Equal(t, "verify: insufficient_funds", rec.Error)
		requirePayment(t, s, "pay-a", store.PaymentNotCharged)

		// The same payment retried under the same key wins again.
		again := mustClaimPay(t, s, claimPay("k1", "B", "pay-a", at(2*time.Second)), store.OutcomeClaimed)
		require.Equal(t, int64(2), again.Record.Generation)
		require.Equal(t, store.PaymentVerified, again.Payment.State)
		require.Equal(t, "pay-a", again.Record.PaymentRef)

		// A refused settle (nothing moved, nothing delivered) may be retried too.
		require.NoError(t, s.MarkSettling(ctx, fence(again.ClaimResult), "pay-a", at(3*time.Second)))
		require.NoError(t, s.FailPaid(ctx, fence(again.ClaimResult), "settle refused", "pay-a",
			store.PaymentOutcome{State: store.PaymentFailed, Reason: "invalid_signature"}, at(4*time.Second)))
		p := requirePayment(t, s, "pay-a", store.PaymentFailed)
		require.Equal(t, "invalid_signature", p.Reason)
		require.False(t, p.Delivered)
		third := mustClaimPay(t, s, claimPay("k1", "C", "pay-a", at(5*time.Second)), store.OutcomeClaimed)
		require.Equal(t, store.PaymentVerified, third.Payment.State)
		require.Equal(t, "", third.Payment.Reason)
		settle(t, s, third, "0xtx")
		requirePaymentsOfKey(t, s, "k1", "pay-a")
		requirePayBalance(t, s, 0)
		require.ErrorIs(t, s.FailPaid(ctx, fence(third.ClaimResult), "x", "pay-a", store.PaymentOutcome{State: store.PaymentSettled},
			at(time.Minute)), store.ErrInvalidArgument)
	}},

	{"PaymentSettleAndComplete", func(t TB, s store.Store, rt *store.CountingClient) {
		res := mustClaimPay(t, s, claimPay("k1", "A", "pay-a", t0), store.OutcomeClaimed)
		f := fence(res.ClaimResult)
		require.NoError(t, s.MarkSettling(ctx, f, "pay-a", at(time.Second)))
		p := requirePayment(t, s, "pay-a", store.PaymentPending)
		require.False(t, p.Delivered)
		due, err := s.DuePayments(ctx, at(2*time.Second), 10)
		require.NoError(t, err)
		require.Empty(t, due, "a pending payment whose key is held under a live lease is its owner's")
		require.NoError(t, s.MarkSettling(ctx, f, "pay-a", at(2*time.Second)), "a repeat is a no-op")

		body := store.Response{StatusCode: 200, ContentType: "application/json", Body: []byte(`{"ok":true}`)}
		err = s.CompletePaid(ctx, store.CompleteParams{Fence: f, Response: store.Response{StatusCode: 502}, Now: at(3 * time.Second)},
			"pay-a", store.PaymentOutcome{State: store.PaymentSettled})
		require.ErrorIs(t, err, store.ErrInvalidArgument, "a settle follows only success")
		var cerr error
		trips := roundTrips(rt, func() {
			cerr = s.CompletePaid(ctx, store.CompleteParams{Fence: f, Response: body, Now: at(3 * time.Second)},
				"pay-a", store.PaymentOutcome{State: store.PaymentSettled, Transaction: "0xtx"})
		})
		require.NoError(t, cerr)
		if rt != nil && rt.CanBatch() {
			require.Equal(t, int64(1), trips, "CompletePaid is one round trip on a Batcher")
		}
		p = requirePayment(t, s, "pay-a", store.PaymentSettled)
		require.Equal(t, "0xtx", p.Transaction)
		require.True(t, p.Delivered)
		rec, err := s.Peek(ctx, "k1")
		require.NoError(t, err)
		require.Equal(t, store.StatusCompleted, rec.Status)
		require.Equal(t, body.Body, rec.Response.Body)
		require.ErrorIs(t, s.CompletePaid(ctx, store.CompleteParams{Fence: f, Response: body, Now: at(4 * time.Second)},
			"pay-a", store.PaymentOutcome{State: store.PaymentSettled}), store.ErrFencedOut)
		requirePayBalance(t, s, 0)
		entries, err := s.Entries(ctx, store.EntryFilter{Caller: payer})
		require.NoError(t, err)
		require.Empty(t, entries)
	}},

	{"PaymentPendingResolvedSettled", func(t TB, s store.Store, rt *store.CountingClient) {
		res := mustClaimPay(t, s, claimPay("k1", "A", "pay-a", t0), store.OutcomeClaimed)
		f := fence(res.ClaimResult)
		require.NoError(t, s.MarkSettling(ctx, f, "pay-a", at(time.Second)))
		require.NoError(t, s.CompletePaid(ctx, store.CompleteParams{Fence: f, Response: okResponse(), Now: at(2 * time.Second)},
			"pay-a", store.PaymentOutcome{State: store.PaymentPending, Reason: "settle timed out"}))
		p := requirePayment(t, s, "pay-a", store.PaymentPending)
		require.True(t, p.Delivered)

		due, err := s.DuePayments(ctx, at(3*time.Second), 10)
		require.NoError(t, err)
		require.Len(t, due, 1)
		require.Equal(t, "pay-a", due[0].Ref)
		_, err = s.DuePayments(ctx, at(3*time.Second), 0)
		require.ErrorIs(t, err, store.ErrInvalidArgument)

		// Still unknown: retried later.
		p, err = s.ResolvePayment(ctx, payer, "pay-a", store.PaymentOutcome{State: store.PaymentPending, Reason: "502"},
			at(time.Minute), at(3*time.Second))
		require.NoError(t, err)
		require.Equal(t, store.PaymentPending, p.State)
		require.Equal(t, 1, p.Attempts)
		require.Equal(t, at(time.Minute), p.NextAttemptAt)
		due, err = s.DuePayments(ctx, at(30*time.Second), 10)
		require.NoError(t, err)
		require.Empty(t, due)

		p, err = s.ResolvePayment(ctx, payer, "pay-a", store.PaymentOutcome{State: store.PaymentSettled, Transaction: "0xtx"},
			time.Time{}, at(time.Minute))
		require.NoError(t, err)
		require.Equal(t, store.PaymentSettled, p.State, "delivered: settled, no credit")
		require.Equal(t, "0xtx", p.Transaction)
		require.Equal(t, 2, p.Attempts)
		again, err := s.ResolvePayment(ctx, payer, "pay-a", store.PaymentOutcome{State: store.PaymentFailed}, time.Time{}, at(2*time.Minute))
		require.NoError(t, err)
		require.Equal(t, p, again, "a payment no longer pending is left as it is")
		requirePayBalance(t, s, 0)
		_, err = s.ResolvePayment(ctx, payer, "pay-zzz", store.PaymentOutcome{State: store.PaymentSettled}, time.Time{}, at(time.Minute))
		require.ErrorIs(t, err, store.ErrNotFound)
		due, err = s.DuePayments(ctx, at(time.Hour), 10)
		require.NoError(t, err)
		require.Empty(t, due)
	}},

	{"PaymentCrashAfterMarkSettlingCreditsBackOnce", func(t TB, s store.Store, rt *store.CountingClient) {
		res := mustClaimPay(t, s, claimPay("k1", "A", "pay-a", t0), store.OutcomeClaimed)
		f := fence(res.ClaimResult)
		require.NoError(t, s.MarkSettling(ctx, f, "pay-a", at(time.Second)))
		// The owner crashes; its lease expires; the sweep fails the record.
		now := at(lease + time.Second)
		_, err := s.Sweep(ctx, now, 10)
		require.NoError(t, err)
		rec, err := s.Peek(ctx, "k1")
		require.NoError(t, err)
		require.Equal(t, store.StatusFailed, rec.Status)
		require.Equal(t, "pay-a", rec.PaymentRef)
		p := requirePayment(t, s, "pay-a", store.PaymentPending)
		require.False(t, p.NextAttemptAt.After(now), "due")
		due, err := s.DuePayments(ctx, now, 10)
		require.NoError(t, err)
		require.Len(t, due, 1)

		// The reconciler finds the lost settle went through: the payer is credited back.
		for i := 0; i < 3; i++ {
			p, err = s.ResolvePayment(ctx, payer, "pay-a", store.PaymentOutcome{State: store.PaymentSettled, Transaction: "0xtx"},
				time.Time{}, now.Add(time.Duration(i)*time.Second))
			require.NoError(t, err)
			require.Equal(t, store.PaymentCreditedBack, p.State)
			require.Equal(t, "0xtx", p.Transaction)
			require.Equal(t, 1, p.Attempts, "repeats change nothing")
			requirePayBalance(t, s, 500)
		}
		entries, err := s.Entries(ctx, store.EntryFilter{Caller: payer})
		require.NoError(t, err)
		require.Len(t, entries, 1)
		require.Equal(t, store.EntryCredit, entries[0].Kind)
		require.Equal(t, store.PaymentCreditReference("pay-a"), entries[0].Reference)
		require.Equal(t, int64(500), entries[0].Amount)
		require.Equal(t, "USDC", entries[0].Currency)
		_, err = s.Credit(ctx, store.CreditParams{Caller: payer, Currency: "USDC", Amount: 500, Reference: "x402:pay-a", Now: now})
		require.ErrorIs(t, err, store.ErrInvalidArgument, "no admin credit can take a credit-back's reference")

		require.ErrorIs(t, s.CompletePaid(ctx, store.CompleteParams{Fence: f, Response: okResponse(), Now: now},
			"pay-a", store.PaymentOutcome{State: store.PaymentSettled}), store.ErrFencedOut)
		// The credited payment pays for nothing more; another does.
		_, err = s.ClaimPayment(ctx, claimPay("k1", "B", "pay-a", now))
		require.ErrorIs(t, err, store.ErrPaymentReused)
		again := mustClaimPay(t, s, claimPay("k1", "B", "pay-b", now), store.OutcomeClaimed)
		require.Equal(t, "pay-b", again.Record.PaymentRef)
		require.Equal(t, store.PaymentVerified, again.Payment.State)
		requirePayment(t, s, "pay-a", store.PaymentCreditedBack)
	}},

	{"PaymentCreditBackFencesOutStaleOwner", func(t TB, s store.Store, rt *store.CountingClient) {
		res := mustClaimPay(t, s, claimPay("k1", "A", "pay-a", t0), store.OutcomeClaimed)
		f := fence(res.ClaimResult)
		require.NoError(t, s.MarkSettling(ctx, f, "pay-a", t0))
		// No sweep ran: the reconciler itself finds the lease expired.
		now := at(lease + time.Second)
		p, err := s.ResolvePayment(ctx, payer, "pay-a", store.PaymentOutcome{State: store.PaymentSettled}, time.Time{}, now)
		require.NoError(t, err)
		require.Equal(t, store.PaymentCreditedBack, p.State)
		rec, err := s.Peek(ctx, "k1")
		require.NoError(t, err)
		require.Equal(t, store.StatusFailed, rec.Status, "the stale owner is fenced out before the credit")
		require.ErrorIs(t, s.CompletePaid(ctx, store.CompleteParams{Fence: f, Response: okResponse(), Now: now},
			"pay-a", store.PaymentOutcome{State: store.PaymentSettled}), store.ErrFencedOut)
		requirePayBalance(t, s, 500)
	}},

	{"PaymentLossAfterDelivery", func(t TB, s store.Store, rt *store.CountingClient) {
		res := mustClaimPay(t, s, claimPay("k1", "A", "pay-a", t0), store.OutcomeClaimed)
		f := fence(res.ClaimResult)
		require.NoError(t, s.MarkSettling(ctx, f, "pay-a", t0))
		require.NoError(t, s.CompletePaid(ctx, store.CompleteParams{Fence: f, Response: okResponse(), Now: t0},
			"pay-a", store.PaymentOutcome{State: store.PaymentPending}))
		p, err := s.ResolvePayment(ctx, payer, "pay-a", store.PaymentOutcome{State: store.PaymentFailed, Reason: "authorization_expired"},
			time.Time{}, at(time.Minute))
		require.NoError(t, err)
		require.Equal(t, store.PaymentFailed, p.State)
		require.True(t, p.Delivered, "a recorded loss")
		require.Equal(t, "authorization_expired", p.Reason)
		losses, err := s.Losses(ctx, 10)
		require.NoError(t, err)
		require.Len(t, losses, 1, "the admin's list of losses")
		require.Equal(t, "pay-a", losses[0].Ref)
		_, err = s.Losses(ctx, 0)
		require.ErrorIs(t, err, store.ErrInvalidArgument)
		replay := mustClaimPay(t, s, claimPay("k1", "B", "pay-a", at(2*time.Minute)), store.OutcomeCompleted)
		require.Equal(t, store.PaymentFailed, replay.Payment.State)
		// A lost payment was delivered for: it is not retried.
		_, err = s.ClaimPayment(ctx, claimPay("k2", "B", "pay-a", at(2*time.Minute)))
		require.ErrorIs(t, err, store.ErrPaymentReused)
		requirePayBalance(t, s, 0)
	}},

	{"PaymentTakeoverKeepsPending", func(t TB, s store.Store, rt *store.CountingClient) {
		res := mustClaimPay(t, s, claimPay("k1", "A", "pay-a", t0), store.OutcomeClaimed)
		require.NoError(t, s.MarkSettling(ctx, fence(res.ClaimResult), "pay-a", t0))
		// The same request, after the lease, with the same payment or another.
		now := at(lease + time.Second)
		took := mustClaimPay(t, s, claimPay("k1", "B", "pay-b", now), store.OutcomeClaimed)
		require.Equal(t, int64(2), took.Record.Generation)
		require.Equal(t, "pay-a", took.Record.PaymentRef, "a takeover keeps a pending payment")
		require.Equal(t, store.PaymentPending, took.Payment.State)
		_, err := s.PaymentByRef(ctx, payer, "pay-b")
		require.ErrorIs(t, err, store.ErrNotFound, "the other payment is not taken")

		// Once more after that lease, even past the TTL: not a fresh claim.
		now = at(ttl + time.Minute)
		took = mustClaimPay(t, s, claimPay("k1", "C", "pay-a", now), store.OutcomeClaimed)
		require.Equal(t, int64(3), took.Record.Generation)
		require.Equal(t, "pay-a", took.Record.PaymentRef)
		f := fence(took.ClaimResult)
		require.NoError(t, s.MarkSettling(ctx, f, "pay-a", now), "re-marking a kept payment is a no-op")
		require.NoError(t, s.CompletePaid(ctx, store.CompleteParams{Fence: f, Response: okResponse(), Now: now},
			"pay-a", store.PaymentOutcome{State: store.PaymentSettled, Transaction: "0xtx"}))
		requirePayment(t, s, "pay-a", store.PaymentSettled)
		requirePaymentsOfKey(t, s, "k1", "pay-a")
		requirePayBalance(t, s, 0)
	}},

	{"PaymentTakeoverRebindsVerified", func(t TB, s store.Store, rt *store.CountingClient) {
		res := mustClaimPay(t, s, claimPay("k1", "A", "pay-a", t0), store.OutcomeClaimed)
		// The owner verified but never marked the settle, then vanished.
		took := mustClaimPay(t, s, claimPay("k1", "B", "pay-b", at(lease+time.Second)), store.OutcomeClaimed)
		require.Equal(t, "pay-b", took.Record.PaymentRef)
		require.Equal(t, store.PaymentVerified, took.Payment.State)
		requirePayment(t, s, "pay-a", store.PaymentNotCharged)
		requirePaymentsOfKey(t, s, "k1", "pay-a", "pay-b")

		// The stale owner is fenced out of everything.
		stale := fence(res.ClaimResult)
		now := at(lease + 2*time.Second)
		require.ErrorIs(t, s.MarkSettling(ctx, stale, "pay-a", now), store.ErrFencedOut)
		require.ErrorIs(t, s.CompletePaid(ctx, store.CompleteParams{Fence: stale, Response: okResponse(), Now: now},
			"pay-a", store.PaymentOutcome{State: store.PaymentSettled}), store.ErrFencedOut)
		require.ErrorIs(t, s.FailPaid(ctx, stale, "x", "pay-a", store.PaymentOutcome{State: store.PaymentNotCharged}, now), store.ErrFencedOut)
		// The holder names its own payment, not another.
		f := fence(took.ClaimResult)
		require.ErrorIs(t, s.MarkSettling(ctx, f, "pay-a", now), store.ErrFencedOut)
		require.ErrorIs(t, s.FailPaid(ctx, f, "x", "pay-a", store.PaymentOutcome{State: store.PaymentNotCharged}, now), store.ErrFencedOut)
		requirePayment(t, s, "pay-a", store.PaymentNotCharged)
		requirePayment(t, s, "pay-b", store.PaymentVerified)
		rec, err := s.Peek(ctx, "k1")
		require.NoError(t, err)
		require.Equal(t, store.StatusInProgress, rec.Status)
		require.Equal(t, "B", rec.Owner)
	}},

	{"PaymentSweepKeepsOpenPayments", func(t TB, s store.Store, rt *store.CountingClient) {
		// delivered, settle pending
		r1 := mustClaimPay(t, s, claimPay("k-pending", "A", "pay-1", t0), store.OutcomeClaimed)
		require.NoError(t, s.MarkSettling(ctx, fence(r1.ClaimResult), "pay-1", t0))
		require.NoError(t, s.CompletePaid(ctx, store.CompleteParams{Fence: fence(r1.ClaimResult), Response: okResponse(), Now: t0},
			"pay-1", store.PaymentOutcome{State: store.PaymentPending}))
		// settled
		settle(t, s, mustClaimPay(t, s, claimPay("k-settled", "A", "pay-2", t0), store.OutcomeClaimed), "0xtx")
		// abandoned after MarkSettling
		r3 := mustClaimPay(t, s, claimPay("k-crashed", "A", "pay-3", t0), store.OutcomeClaimed)
		require.NoError(t, s.MarkSettling(ctx, fence(r3.ClaimResult), "pay-3", t0))
		// abandoned after verify
		mustClaimPay(t, s, claimPay("k-verified", "A", "pay-4", t0), store.OutcomeClaimed)

		now := at(ttl + time.Second)
		n, err := s.Sweep(ctx, now, 10)
		require.NoError(t, err)
		require.Equal(t, 2, n, "the settled and the released records go")
		for _, k := range []string{"k-settled", "k-verified"} {
			_, err := s.Peek(ctx, k)
			require.ErrorIs(t, err, store.ErrNotFound, k)
		}
		for _, k := range []string{"k-pending", "k-crashed"} {
			_, err := s.Peek(ctx, k)
			require.NoError(t, err, k)
		}
		requirePayment(t, s, "pay-4", store.PaymentNotCharged)
		requirePayment(t, s, "pay-2", store.PaymentSettled)

		// Payments are kept for ever: a new incarnation of a swept key
		// cannot reuse its settled payment.
		_, err = s.ClaimPayment(ctx, claimPay("k-settled", "B", "pay-2", now))
		require.ErrorIs(t, err, store.ErrPaymentReused)
		mustClaimPay(t, s, claimPay("k-settled", "B", "pay-5", now), store.OutcomeClaimed)

		// Resolved, the kept records are swept in turn.
		for _, ref := range []string{"pay-1", "pay-3"} {
			_, err := s.ResolvePayment(ctx, payer, ref, store.PaymentOutcome{State: store.PaymentSettled}, time.Time{}, now)
			require.NoError(t, err)
		}
		requirePayment(t, s, "pay-1", store.PaymentSettled)
		requirePayment(t, s, "pay-3", store.PaymentCreditedBack)
		requirePayBalance(t, s, 500)
		n, err = s.Sweep(ctx, now, 10)
		require.NoError(t, err)
		require.Equal(t, 2, n)
	}},
}

const payer = "x402:0xpayer"

func payment(ref string) store.Payment {
	return store.Payment{Caller: payer, Ref: ref, Rail: "x402", Network: "eip155:8453", Amount: 500, Currency: "USDC",
		Payload: []byte(`{"x402Version":2,"ref":"` + ref + `"}`), Requirements: []byte(`{"scheme":"exact"}`),
		ValidBefore: at(2 * time.Hour)}
}

func claimPay(key, owner, ref string, now time.Time) store.ClaimPaymentParams {
	return store.ClaimPaymentParams{ClaimParams: claim(key, owner, "fp", now), Payment: payment(ref)}
}

func mustClaimPay(t TB, s store.Store, p store.ClaimPaymentParams, want store.Outcome) store.ClaimPaymentResult {
	t.Helper()
	res, err := s.ClaimPayment(ctx, p)
	require.NoError(t, err)
	require.Equal(t, want.String(), res.Outcome.String(), "claim of %s by %s with %s", p.Key, p.Owner, p.Payment.Ref)
	if want == store.OutcomeClaimed {
		require.Equal(t, res.Record.PaymentRef, res.Payment.Ref)
	}
	return res
}

// settle marks, settles and completes a claimed paid call.
func settle(t TB, s store.Store, res store.ClaimPaymentResult, tx string) {
	t.Helper()
	f := fence(res.ClaimResult)
	require.NoError(t, s.MarkSettling(ctx, f, res.Payment.Ref, res.Record.UpdatedAt))
	require.NoError(t, s.CompletePaid(ctx, store.CompleteParams{Fence: f, Response: okResponse(), Now: res.Record.UpdatedAt},
		res.Payment.Ref, store.PaymentOutcome{State: store.PaymentSettled, Transaction: tx}))
}

func okResponse() store.Response {
	return store.Response{StatusCode: 200, ContentType: "text/plain", Body: []byte("ok")}
}

func requirePayment(t TB, s store.Store, ref string, want store.PaymentState) store.Payment {
	t.Helper()
	p, err := s.PaymentByRef(ctx, payer, ref)
	require.NoError(t, err)
	require.Equal(t, want, p.State, "state of %s", ref)
	return p
}

func requirePaymentsOfKey(t TB, s store.Store, key string, refs ...string) {
	t.Helper()
	ps, err := s.PaymentsByKey(ctx, key)
	require.NoError(t, err)
	got := []string{}
	for _, p := range ps {
		got = append(got, p.Ref)
	}
	if refs == nil {
		refs = []string{}
	}
	require.Equal(t, refs, got, "payments of %s", key)
}

func requirePayBalance(t TB, s store.Store, want int64) {
	t.Helper()
	bal, err := s.Balance(ctx, payer, "USDC")
	require.NoError(t, err)
	require.Equal(t, want, bal, "credit-back balance of the payer")
}
