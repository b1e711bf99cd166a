package storetest

import (
	"fmt"
	"sync"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// topupCases: funding through top-ups (the funding invariant, 7-11 of
// store.Topups): created once per key, credited once per payment whatever
// the events, reversed at most to the credit, debt repaid first and charges
// refused while it lasts.
var topupCases = []Case{
	{"TopupCreateReplayMismatch", func(t TB, s store.Store, rt *store.CountingClient) {
		tu := topup("alice", "tu_1", "key-1", 1000)
		got, created, err := s.CreateTopup(ctx, tu)
		require.NoError(t, err)
		require.True(t, created)
		require.Equal(t, store.TopupPending, got.Status)
		require.Equal(t, "tu_1", got.ID)
		require.Equal(t, int64(1000), got.Amount)
		require.Equal(t, t0, got.CreatedAt)

		again := tu
		again.ID = "tu_other" // a retry mints a new id; the key finds the first
		got, created, err = s.CreateTopup(ctx, again)
		require.NoError(t, err)
		require.False(t, created)
		require.Equal(t, "tu_1", got.ID)

		again.Fingerprint = "another request"
		_, _, err = s.CreateTopup(ctx, again)
		require.ErrorIs(t, err, store.ErrFingerprintMismatch)

		_, _, err = s.CreateTopup(ctx, topup("alice", "tu_1", "key-2", 1000))
		require.ErrorIs(t, err, store.ErrConflict, "the id is taken")
		_, _, err = s.CreateTopup(ctx, topup("alice", "tu_2", "key-2", 0))
		require.ErrorIs(t, err, store.ErrInvalidAmount)
		bad := topup("alice", "tu_2", "key-2", 100)
		bad.Currency = "XXX"
		_, _, err = s.CreateTopup(ctx, bad)
		require.ErrorIs(t, err, store.ErrUnknownCurrency)

		// Another caller may use the same key.
		_, created, err = s.CreateTopup(ctx, topup("bob", "tu_3", "key-1", 500))
		require.NoError(t, err)
		require.True(t, created)

		got, err = s.Topup(ctx, "alice", "tu_1")
		require.NoError(t, err)
		require.Equal(t, store.TopupPending, got.Status)
		_, err = s.Topup(ctx, "alice", "tu_2")
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.Topup(ctx, "bob", "tu_1")
		require.ErrorIs(t, err, store.ErrNotFound, "top-ups are per caller")
		requireFunds(t, s, "alice", 0, 0)
	}},

	{"TopupOpenSameAndDifferentSession", func(t TB, s store.Store, rt *store.CountingClient) {
		_, _, err := s.CreateTopup(ctx, topup("alice", "tu_1", "k", 1000))
		require.NoError(t, err)
		got, err := s.OpenTopup(ctx, "alice", "tu_1", "cs_1", "https://pay.example/cs_1", at(time.Second))
		require.NoError(t, err)
		require.Equal(t, store.TopupOpen, got.Status)
		require.Equal(t, "cs_1", got.SessionID)
		require.Equal(t, "https://pay.example/cs_1", got.URL)
		require.Equal(t, at(time.Second), got.UpdatedAt)

		again, err := s.OpenTopup(ctx, "alice", "tu_1", "cs_1", "https://pay.example/cs_1", at(2*time.Second))
		require.NoError(t, err)
		require.Equal(t, got, again, "recording the same session again is a no-op")
		_, err = s.OpenTopup(ctx, "alice", "tu_1", "cs_2", "https://pay.example/cs_2", at(3*time.Second))
		require.ErrorIs(t, err, store.ErrConflict)
		_, err = s.OpenTopup(ctx, "alice", "tu_9", "cs_9", "u", t0)
		require.ErrorIs(t, err, store.ErrNotFound)

		byRef, err := s.TopupByPayment(ctx, "stripe", "cs_1")
		require.NoError(t, err)
		require.Equal(t, got, byRef)
		_, err = s.TopupByPayment(ctx, "stripe", "cs_2")
		require.ErrorIs(t, err, store.ErrNotFound)
	}},

	{"TopupPaidCreditsOnce", func(t TB, s store.Store, rt *store.CountingClient) {
		openTopup(t, s, "alice", "tu_1", 1000)
		ev := paidEvent("alice", "tu_1", "evt_1", 1000)
		res := applyEvent(t, s, ev)
		require.False(t, res.Duplicate)
		require.Equal(t, int64(1000), res.Credited)
		require.Equal(t, int64(0), res.Repaid)
		require.Equal(t, int64(1000), res.Balance)
		require.Equal(t, int64(0), res.Debt)
		require.Equal(t, store.TopupCredited, res.Topup.Status)
		require.Equal(t, int64(1000), res.Topup.Credited)
		require.Equal(t, "USD", res.Topup.CreditedCurrency)
		require.Equal(t, "pi_tu_1", res.Topup.PaymentIntent)

		res = applyEvent(t, s, ev)
		require.True(t, res.Duplicate)
		require.Equal(t, int64(0), res.Credited)
		require.Equal(t, int64(1000), res.Balance)
		requireFunds(t, s, "alice", 1000, 0)

		entries := requireEntries(t, s, "alice", store.EntryCredit)
		require.Equal(t, "tu_1", entries[0].Topup)
		require.Equal(t, store.TopupCreditReference("stripe", "cs_tu_1"), entries[0].Reference)
		require.Equal(t, int64(0), entries[0].Owed)

		byPI, err := s.TopupByPayment(ctx, "stripe", "pi_tu_1")
		require.NoError(t, err)
		require.Equal(t, "tu_1", byPI.ID)
		require.Equal(t, store.TopupCredited, byPI.Status)
		_, err = s.TopupByPayment(ctx, "other-rail", "pi_tu_1")
		require.ErrorIs(t, err, store.ErrNotFound)
	}},

	{"TopupTwoEventsOneSessionCreditOnce", func(t TB, s store.Store, rt *store.CountingClient) {
		openTopup(t, s, "alice", "tu_1", 1000)
		// checkout.session.completed (processing), then async_payment_succeeded and a
		// completed-with-paid redelivered under another event id.
		proc := paidEvent("alice", "tu_1", "evt_completed", 0)
		proc.Kind, proc.Type, proc.Currency = store.TopupEventProcessing, "checkout.session.completed", ""
		res := applyEvent(t, s, proc)
		require.Equal(t, store.TopupProcessing, res.Topup.Status)
		require.Equal(t, int64(0), res.Credited)

		r1 := applyEvent(t, s, paidEvent("alice", "tu_1", "evt_async", 1000))
		require.Equal(t, int64(1000), r1.Credited)
		r2 := applyEvent(t, s, paidEvent("alice", "tu_1", "evt_completed_paid", 1000))
		require.False(t, r2.Duplicate, "another event id is not a duplicate")
		require.Equal(t, int64(0), r2.Credited, "but one payment credits once")
		require.Equal(t, store.TopupCredited, r2.Topup.Status)
		requireFunds(t, s, "alice", 1000, 0)
		requireEntries(t, s, "alice", store.EntryCredit)
	}},

	{"TopupConcurrentDeliveries", func(t TB, s store.Store, rt *store.CountingClient) {
		openTopup(t, s, "alice", "tu_1", 1000)
		const n = 20
		ev := paidEvent("alice", "tu_1", "evt_1", 1000)
		results := make([]store.TopupEventResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				results[i], errs[i] = s.ApplyTopupEvent(ctx, ev)
			}(i)
		}
		wg.Wait()
		applied, credited := 0, int64(0)
		for i := range results {
			require.NoError(t, errs[i])
			if !results[i].Duplicate {
				applied++
			}
			credited += results[i].Credited
		}
		require.Equal(t, 1, applied, "one delivery applies the event")
		require.Equal(t, int64(1000), credited)
		requireFunds(t, s, "alice", 1000, 0)
		requireEntries(t, s, "alice", store.EntryCredit)
	}},

	{"TopupExpiredFailedNoCreditNoRegress", func(t TB, s store.Store, rt *store.CountingClient) {
		openTopup(t, s, "alice", "tu_exp", 1000)
		res := applyEvent(t, s, sessionEvent("alice", "tu_exp", "evt_1", store.TopupEventExpired))
		require.Equal(t, store.TopupExpired, res.Topup.Status)
		require.Equal(t, int64(0), res.Credited)

		openTopup(t, s, "alice", "tu_fail", 1000)
		require.Equal(t, store.TopupProcessing, applyEvent(t, s, sessionEvent("alice", "tu_fail", "evt_2", store.TopupEventProcessing)).Topup.Status)
		require.Equal(t, store.TopupFailed, applyEvent(t, s, sessionEvent("alice", "tu_fail", "evt_3", store.TopupEventFailed)).Topup.Status)
		requireFunds(t, s, "alice", 0, 0)

		openTopup(t, s, "alice", "tu_paid", 1000)
		applyEvent(t, s, paidEvent("alice", "tu_paid", "evt_4", 1000))
		for i, k := range []store.TopupEventKind{store.TopupEventExpired, store.TopupEventFailed, store.TopupEventProcessing} {
			res := applyEvent(t, s, sessionEvent("alice", "tu_paid", fmt.Sprint("evt_late_", i), k))
			require.False(t, res.Duplicate)
			require.Equal(t, store.TopupCredited, res.Topup.Status, "%s after paid changes nothing", k)
			require.Equal(t, int64(1000), res.Topup.Credited)
		}
		requireFunds(t, s, "alice", 1000, 0)
		requireEntries(t, s, "alice", store.EntryCredit)
	}},

	{"TopupSessionMismatchConflict", func(t TB, s store.Store, rt *store.CountingClient) {
		before := openTopup(t, s, "alice", "tu_1", 1000)
		ev := paidEvent("alice", "tu_1", "evt_1", 1000)
		ev.SessionID = "cs_someone_else"
		_, err := s.ApplyTopupEvent(ctx, ev)
		require.ErrorIs(t, err, store.ErrConflict)
		after, err := s.Topup(ctx, "alice", "tu_1")
		require.NoError(t, err)
		require.Equal(t, before, after, "nothing changed")
		requireFunds(t, s, "alice", 0, 0)
		requireEntries(t, s, "alice")
		// The event id was not recorded: the right session applies under it.
		res := applyEvent(t, s, paidEvent("alice", "tu_1", "evt_1", 1000))
		require.False(t, res.Duplicate)
		require.Equal(t, int64(1000), res.Credited)

		// A refund in another currency than the top-up's is refused too.
		refund := reversalEvent("alice", "tu_1", "evt_r", store.TopupEventRefunded, "ch_1", 100)
		refund.Currency = "EUR"
		_, err = s.ApplyTopupEvent(ctx, refund)
		require.ErrorIs(t, err, store.ErrConflict)
		_, err = s.ApplyTopupEvent(ctx, paidEvent("alice", "tu_nope", "evt_2", 1000))
		require.ErrorIs(t, err, store.ErrNotFound)
		requireFunds(t, s, "alice", 1000, 0)
	}},

	{"TopupRefundPartialThenTotal", func(t TB, s store.Store, rt *store.CountingClient) {
		openTopup(t, s, "alice", "tu_1", 1000)
		applyEvent(t, s, paidEvent("alice", "tu_1", "evt_paid", 1000))
		res := applyEvent(t, s, reversalEvent("alice", "tu_1", "evt_r1", store.TopupEventRefunded, "ch_1", 300))
		require.Equal(t, int64(300), res.Taken)
		require.Equal(t, int64(0), res.Owed)
		require.Equal(t, int64(700), res.Balance)
		require.Equal(t, store.TopupRefunded, res.Topup.Status)
		require.Equal(t, int64(300), res.Topup.Reversed)

		// Stripe's amount_refunded is a running total: 1000 means 700 more.
		res = applyEvent(t, s, reversalEvent("alice", "tu_1", "evt_r2", store.TopupEventRefunded, "ch_1", 1000))
		require.Equal(t, int64(700), res.Taken)
		require.Equal(t, int64(0), res.Balance)
		require.Equal(t, int64(1000), res.Topup.Reversed)

		// An older, smaller total delivered late changes nothing.
		res = applyEvent(t, s, reversalEvent("alice", "tu_1", "evt_r_late", store.TopupEventRefunded, "ch_1", 600))
		require.False(t, res.Duplicate)
		require.Equal(t, int64(0), res.Taken+res.Owed)
		require.Equal(t, int64(1000), res.Topup.Reversed)
		// A paid redelivery does not regress the status.
		res = applyEvent(t, s, paidEvent("alice", "tu_1", "evt_paid_again", 1000))
		require.Equal(t, store.TopupRefunded, res.Topup.Status)
		require.Equal(t, int64(0), res.Credited)
		requireFunds(t, s, "alice", 0, 0)
		entries := requireEntries(t, s, "alice", store.EntryCredit, store.EntryReversal, store.EntryReversal)
		require.Equal(t, []int64{-300, -700}, []int64{entries[1].Amount, entries[2].Amount})
		require.Equal(t, "tu_1", entries[2].Topup)
	}},

	{"TopupRefundBeforePaidSettlesOnCredit", func(t TB, s store.Store, rt *store.CountingClient) {
		openTopup(t, s, "alice", "tu_1", 1000)
		res := applyEvent(t, s, reversalEvent("alice", "tu_1", "evt_r1", store.TopupEventRefunded, "ch_1", 300))
		require.Equal(t, int64(0), res.Taken+res.Owed, "nothing credited yet, nothing to take back")
		require.Equal(t, store.TopupOpen, res.Topup.Status)
		res = applyEvent(t, s, paidEvent("alice", "tu_1", "evt_paid", 1000))
		require.Equal(t, int64(1000), res.Credited)
		require.Equal(t, int64(300), res.Taken)
		require.Equal(t, store.TopupRefunded, res.Topup.Status)
		requireFunds(t, s, "alice", 700, 0)
		requireEntries(t, s, "alice", store.EntryCredit, store.EntryReversal)
	}},

	{"TopupDisputeParkedBeforeItsPayment", func(t TB, s store.Store, rt *store.CountingClient) {
		// A dispute and a refund name only the payment, which no session
		// event has recorded yet: parked, then asked back once paid.
		openTopup(t, s, "alice", "tu_1", 1000)
		dispute := reversalEvent("", "", "evt_d1", store.TopupEventDisputed, "dp_1", 400)
		dispute.PaymentIntent = "pi_tu_1"
		_, err := s.TopupByPayment(ctx, "stripe", "pi_tu_1")
		require.ErrorIs(t, err, store.ErrNotFound)
		require.NoError(t, s.ParkTopupEvent(ctx, dispute))
		require.NoError(t, s.ParkTopupEvent(ctx, dispute), "parking is idempotent")
		refund := reversalEvent("", "", "evt_r1", store.TopupEventRefunded, "ch_1", 100)
		refund.PaymentIntent = "pi_tu_1"
		require.NoError(t, s.ParkTopupEvent(ctx, refund))
		refund.Amount = 50 // an older running total, delivered late
		require.NoError(t, s.ParkTopupEvent(ctx, refund))
		foreign := reversalEvent("", "", "evt_x", store.TopupEventDisputed, "dp_x", 999)
		foreign.PaymentIntent = "pi_not_ours"
		require.NoError(t, s.ParkTopupEvent(ctx, foreign))
		requireFunds(t, s, "alice", 0, 0)
		requireEntries(t, s, "alice")

		res := applyEvent(t, s, paidEvent("alice", "tu_1", "evt_paid", 1000))
		require.Equal(t, int64(1000), res.Credited)
		require.Equal(t, int64(500), res.Taken, "the parked dispute and the refund's largest total")
		require.Equal(t, store.TopupRefunded, res.Topup.Status)
		require.Equal(t, int64(500), res.Topup.Reversed)
		requireFunds(t, s, "alice", 500, 0)
		requireEntries(t, s, "alice", store.EntryCredit, store.EntryReversal)

		// Redelivered after the route exists, they are applied, not parked,
		// and ask nothing more.
		dispute.Caller, dispute.TopupID, dispute.EventID = "alice", "tu_1", "evt_d1_again"
		res = applyEvent(t, s, dispute)
		require.Equal(t, int64(0), res.Taken+res.Owed)
		requireFunds(t, s, "alice", 500, 0)

		bad := refund
		bad.Kind = store.TopupEventPaid
		require.ErrorIs(t, s.ParkTopupEvent(ctx, bad), store.ErrInvalidArgument)
		bad = refund
		bad.PaymentIntent = ""
		require.ErrorIs(t, s.ParkTopupEvent(ctx, bad), store.ErrInvalidArgument)
	}},

	{"TopupRefundAfterSpendOwesThenRepays", func(t TB, s store.Store, rt *store.CountingClient) {
		openTopup(t, s, "alice", "tu_1", 1000)
		applyEvent(t, s, paidEvent("alice", "tu_1", "evt_paid", 1000))
		c := mustClaimCharge(t, s, claimCharge("k1", "A", "alice", 800, t0), store.OutcomeClaimed)
		require.NoError(t, c.ChargeErr)
		require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: fence(c.ClaimResult), Response: store.Response{StatusCode: 200}, Now: t0}))

		res := applyEvent(t, s, reversalEvent("alice", "tu_1", "evt_r", store.TopupEventRefunded, "ch_1", 1000))
		require.Equal(t, int64(200), res.Taken)
		require.Equal(t, int64(800), res.Owed)
		require.Equal(t, int64(0), res.Balance)
		require.Equal(t, int64(800), res.Debt)
		require.Equal(t, int64(1000), res.Topup.Reversed)
		requireFunds(t, s, "alice", 0, 800)
		require.NoError(t, s.CheckInvariants(ctx))

		// While the caller owes, charges are refused as insufficient funds.
		c = mustClaimCharge(t, s, claimCharge("k2", "A", "alice", 100, t0), store.OutcomeClaimed)
		var ife *store.InsufficientFundsError
		require.ErrorAs(t, c.ChargeErr, &ife)
		require.Equal(t, int64(800), ife.Owed)
		require.Equal(t, int64(100), ife.Required)
		require.NoError(t, s.Fail(ctx, fence(c.ClaimResult), "no funds", t0))

		// An admin credit pays the debt first, in part.
		cr, err := s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 500, Reference: "admin-1", Now: t0})
		require.NoError(t, err)
		require.True(t, cr.Applied)
		require.Equal(t, int64(0), cr.Balance)
		requireFunds(t, s, "alice", 0, 300)
		cr, err = s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 500, Reference: "admin-1", Now: t0})
		require.NoError(t, err)
		require.False(t, cr.Applied, "a repeat repays nothing more")
		requireFunds(t, s, "alice", 0, 300)
		_, err = s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 500, Reference: "topup:stripe:cs_x", Now: t0})
		require.ErrorIs(t, err, store.ErrInvalidArgument, "top-up credit references are reserved")

		// A second top-up pays the rest; charges work again.
		openTopup(t, s, "alice", "tu_2", 1000)
		res = applyEvent(t, s, paidEvent("alice", "tu_2", "evt_paid_2", 1000))
		require.Equal(t, int64(1000), res.Credited)
		require.Equal(t, int64(300), res.Repaid)
		require.Equal(t, int64(700), res.Balance)
		require.Equal(t, int64(0), res.Debt)
		c = mustClaimCharge(t, s, claimCharge("k3", "A", "alice", 100, t0), store.OutcomeClaimed)
		require.NoError(t, c.ChargeErr)
		require.True(t, c.Charge.Charged)
		requireFunds(t, s, "alice", 600, 0)

		entries := requireEntries(t, s, "alice", store.EntryCredit, store.EntryCharge, store.EntryReversal,
			store.EntryCredit, store.EntryRepay, store.EntryCredit, store.EntryRepay, store.EntryCharge)
		require.Equal(t, [2]int64{-200, 800}, [2]int64{entries[2].Amount, entries[2].Owed})
		require.Equal(t, [2]int64{-500, -500}, [2]int64{entries[4].Amount, entries[4].Owed})
		require.Equal(t, "repay:credit:admin-1", entries[4].Reference)
		require.Equal(t, [2]int64{-300, -300}, [2]int64{entries[6].Amount, entries[6].Owed})
		require.Equal(t, "repay:"+store.TopupCreditReference("stripe", "cs_tu_2"), entries[6].Reference)
	}},

	{"TopupDisputeOnPartialRefundCapped", func(t TB, s store.Store, rt *store.CountingClient) {
		openTopup(t, s, "alice", "tu_1", 1000)
		applyEvent(t, s, paidEvent("alice", "tu_1", "evt_paid", 1000))
		credit(t, s, "alice", 5000) // other money the reversal must not dig into beyond the credit
		res := applyEvent(t, s, reversalEvent("alice", "tu_1", "evt_r", store.TopupEventRefunded, "ch_1", 400))
		require.Equal(t, int64(400), res.Taken)
		res = applyEvent(t, s, reversalEvent("alice", "tu_1", "evt_d", store.TopupEventDisputed, "dp_1", 1000))
		require.Equal(t, int64(600), res.Taken, "the dispute takes back only what is left of the credit")
		require.Equal(t, int64(1000), res.Topup.Reversed)
		res = applyEvent(t, s, reversalEvent("alice", "tu_1", "evt_d2", store.TopupEventDisputed, "dp_1", 1000))
		require.False(t, res.Duplicate)
		require.Equal(t, int64(0), res.Taken+res.Owed)
		res = applyEvent(t, s, reversalEvent("alice", "tu_1", "evt_r2", store.TopupEventRefunded, "ch_1", 1000))
		require.Equal(t, int64(0), res.Taken+res.Owed)
		require.Equal(t, int64(1000), res.Topup.Reversed)
		requireFunds(t, s, "alice", 5000, 0)
		requireEntries(t, s, "alice", store.EntryCredit, store.EntryCredit, store.EntryReversal, store.EntryReversal)
	}},

	{"TopupUnknownNotFound", func(t TB, s store.Store, rt *store.CountingClient) {
		_, err := s.ApplyTopupEvent(ctx, paidEvent("alice", "tu_nope", "evt_1", 1000))
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.ApplyTopupEvent(ctx, reversalEvent("alice", "tu_nope", "evt_2", store.TopupEventRefunded, "ch_1", 10))
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.TopupByPayment(ctx, "stripe", "pi_nope")
		require.ErrorIs(t, err, store.ErrNotFound)
		bad := paidEvent("alice", "tu_nope", "evt_3", 0)
		_, err = s.ApplyTopupEvent(ctx, bad)
		require.ErrorIs(t, err, store.ErrInvalidAmount)
		requireFunds(t, s, "alice", 0, 0)
		requireEntries(t, s, "alice")
	}},
}

func topup(caller, id, key string, amount int64) store.Topup {
	return store.Topup{Caller: caller, ID: id, Rail: "stripe", Key: key, Fingerprint: "fp-" + key,
		Amount: amount, Currency: "USD", CreatedAt: t0}
}

// openTopup creates a top-up and records its payment page, cs_<id>.
func openTopup(t TB, s store.Store, caller, id string, amount int64) store.Topup {
	t.Helper()
	_, created, err := s.CreateTopup(ctx, topup(caller, id, "key-"+id, amount))
	require.NoError(t, err)
	require.True(t, created)
	got, err := s.OpenTopup(ctx, caller, id, "cs_"+id, "https://pay.example/cs_"+id, t0)
	require.NoError(t, err)
	return got
}

// sessionEvent is an event of kind about the payment page of openTopup's top-up.
func sessionEvent(caller, id, eventID string, kind store.TopupEventKind) store.TopupEvent {
	return store.TopupEvent{Rail: "stripe", EventID: eventID, Type: "checkout.session." + kind.String(), Caller: caller,
		TopupID: id, Kind: kind, SessionID: "cs_" + id, Now: at(time.Minute)}
}

func paidEvent(caller, id, eventID string, amount int64) store.TopupEvent {
	ev := sessionEvent(caller, id, eventID, store.TopupEventPaid)
	ev.PaymentIntent, ev.Amount, ev.Currency = "pi_"+id, amount, "USD"
	return ev
}

func reversalEvent(caller, id, eventID string, kind store.TopupEventKind, source string, amount int64) store.TopupEvent {
	return store.TopupEvent{Rail: "stripe", EventID: eventID, Type: "charge." + kind.String(), Caller: caller,
		TopupID: id, Kind: kind, Amount: amount, Currency: "USD", Source: source, Now: at(time.Hour)}
}

func applyEvent(t TB, s store.Store, ev store.TopupEvent) store.TopupEventResult {
	t.Helper()
	res, err := s.ApplyTopupEvent(ctx, ev)
	require.NoError(t, err, "event %s", ev.EventID)
	return res
}

// requireFunds checks a caller's USD balance and debt.
func requireFunds(t TB, s store.Store, caller string, balance, debt int64) {
	t.Helper()
	requireBalance(t, s, caller, balance)
	got, err := s.Debt(ctx, caller, "USD")
	require.NoError(t, err)
	require.Equal(t, debt, got, "debt of %s", caller)
}

// requireEntries checks the kinds of a caller's entries, oldest first, and
// returns the entries.
func requireEntries(t TB, s store.Store, caller string, kinds ...string) []store.Entry {
	t.Helper()
	entries, err := s.Entries(ctx, store.EntryFilter{Caller: caller})
	require.NoError(t, err)
	got := []string{}
	for _, e := range entries {
		got = append(got, e.Kind)
	}
	if kinds == nil {
		kinds = []string{}
	}
	require.Equal(t, kinds, got, "ledger entries of %s", caller)
	return entries
}
