package storetest

import (
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// statsCases: the usage counters (store.Stats): money follows the ledger,
// an executed call counts with its Complete and only once, the admin reads.
var statsCases = []Case{
	{"UsageFollowsLedgerAndComplete", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 100)
		require.NoError(t, s.CreateCaller(ctx, store.Caller{ID: "alice", Name: "Alice", KeyHash: []byte{1}, CreatedAt: t0}))
		tagged := func(key, owner string, now time.Time) store.ClaimChargeParams {
			p := claimCharge(key, owner, "alice", 10, now)
			p.Tool, p.CallerID = "search", "alice"
			return p
		}
		// A paid call that completes, counted with its Complete.
		a := mustClaimCharge(t, s, tagged("k1", "A", at(time.Minute)), store.OutcomeClaimed)
		u := store.Usage{UsageKey: store.UsageKey{Hour: at(2 * time.Minute), Caller: "alice", Tool: "search", Currency: "USD"},
			Calls: 1, LastAt: at(2 * time.Minute)}
		u.ObserveLatency(150 * time.Millisecond)
		done := store.CompleteParams{Fence: fence(a.ClaimResult), Now: at(2 * time.Minute), Response: store.Response{StatusCode: 200, Body: []byte("{}")}, Usage: &u}
		want := int64(2) // the Complete, then the counters
		if rt != nil && rt.CanBatch() {
			want = 1
		}
		requireTrips(t, rt, want, func() { require.NoError(t, s.Complete(ctx, done)) }, "a counted complete")
		// A Complete repeated (its reply lost) is fenced out and counts nothing.
		require.ErrorIs(t, s.Complete(ctx, done), store.ErrFencedOut)
		// A paid call refunded, in the next hour: money only.
		b := mustClaimCharge(t, s, tagged("k2", "B", at(time.Hour+time.Minute)), store.OutcomeClaimed)
		ok, _, err := s.Refund(ctx, fence(b.ClaimResult), at(time.Hour+2*time.Minute))
		require.NoError(t, err)
		require.True(t, ok)
		require.NoError(t, s.Fail(ctx, fence(b.ClaimResult), "upstream 502", at(time.Hour+2*time.Minute)))
		// Outcomes that write nothing arrive through AddUsage; money never does.
		require.NoError(t, s.AddUsage(ctx, []store.Usage{{UsageKey: store.UsageKey{Hour: at(time.Hour + 3*time.Minute),
			Caller: "alice", Tool: "search", Currency: "USD"}, Replays: 2, Fail5xx: 1, LastAt: at(time.Hour + 3*time.Minute)}}))
		require.ErrorIs(t, s.AddUsage(ctx, []store.Usage{{UsageKey: u.UsageKey, Charged: 5}}), store.ErrInvalidArgument)
		require.ErrorIs(t, s.AddUsage(ctx, []store.Usage{{UsageKey: u.UsageKey, Replays: -1}}), store.ErrInvalidArgument)

		hours, err := s.Usage(ctx, store.UsageQuery{From: t0, To: at(24 * time.Hour), Bucket: time.Hour, ByTool: true})
		require.NoError(t, err)
		require.Len(t, hours, 3, "credit and k1 in the first hour (tools '' and search), k2 in the next: %+v", hours)
		require.Equal(t, "", hours[0].Tool)
		require.Equal(t, int64(100), hours[0].Credited)
		require.Equal(t, int64(1), hours[0].Credits)
		first := hours[1]
		require.Equal(t, "search", first.Tool)
		require.True(t, first.Hour.Equal(t0), "bucket %s", first.Hour)
		require.Equal(t, []int64{1, 1, 10, 0, 0, 150}, []int64{first.Calls, first.Charges, first.Charged, first.Refunds, first.Refunded, first.LatencyMs})
		require.Equal(t, int64(1), first.Latency[1], "150 ms is in the <= 300 ms bucket")
		second := hours[2]
		require.True(t, second.Hour.Equal(at(time.Hour)))
		require.Equal(t, []int64{0, 1, 10, 1, 10, 2, 1}, []int64{second.Calls, second.Charges, second.Charged, second.Refunds, second.Refunded, second.Replays, second.Fail5xx})

		// The money counters equal the ledger's entries.
		entries, err := s.Entries(ctx, store.EntryFilter{Caller: "alice"})
		require.NoError(t, err)
		var charged, refunded, credited int64
		for _, e := range entries {
			switch e.Kind {
			case store.EntryCharge:
				charged -= e.Amount
			case store.EntryRefund:
				refunded += e.Amount
			case store.EntryCredit:
				credited += e.Amount
			}
		}
		total, err := s.Usage(ctx, store.UsageQuery{From: t0, To: at(24 * time.Hour), Caller: "alice"})
		require.NoError(t, err)
		require.Len(t, total, 1)
		require.Equal(t, []int64{charged, refunded, credited}, []int64{total[0].Charged, total[0].Refunded, total[0].Credited})
		require.Equal(t, int64(20), total[0].Charged)
		require.True(t, total[0].LastAt.Equal(at(time.Hour+3*time.Minute)), "last at %s", total[0].LastAt)

		days, err := s.Usage(ctx, store.UsageQuery{From: t0.Truncate(24 * time.Hour), To: at(24 * time.Hour), Bucket: 24 * time.Hour, ByCaller: true})
		require.NoError(t, err)
		require.Len(t, days, 1)
		require.Equal(t, "alice", days[0].Caller)
		require.True(t, days[0].Hour.Equal(t0.Truncate(24*time.Hour)))
		_, err = s.Usage(ctx, store.UsageQuery{From: at(time.Hour), To: t0})
		require.ErrorIs(t, err, store.ErrInvalidArgument)

		// The admin's list of calls, with their entries.
		calls, err := s.Calls(ctx, store.CallQuery{Tool: "search", Limit: 10})
		require.NoError(t, err)
		require.Len(t, calls, 2)
		require.Equal(t, "k2", calls[0].Key, "most recently updated first")
		require.Equal(t, "alice", calls[0].Caller)
		require.Equal(t, store.StatusFailed, calls[0].Status)
		require.Equal(t, []string{"charge", "refund"}, kinds(calls[0].Entries))
		require.Equal(t, []string{"charge"}, kinds(calls[1].Entries))
		calls, err = s.Calls(ctx, store.CallQuery{Status: store.StatusCompleted, Caller: "alice", Limit: 10})
		require.NoError(t, err)
		require.Len(t, calls, 1)
		calls, err = s.Calls(ctx, store.CallQuery{Tool: "other", Limit: 10})
		require.NoError(t, err)
		require.Empty(t, calls)
		_, err = s.Calls(ctx, store.CallQuery{Limit: 0})
		require.ErrorIs(t, err, store.ErrInvalidArgument)
		// Stuck: in progress past its lease.
		mustClaimCharge(t, s, tagged("k3", "C", at(2*time.Hour)), store.OutcomeClaimed)
		stuck, err := s.Calls(ctx, store.CallQuery{StuckAt: at(2*time.Hour + lease - time.Second), Limit: 10})
		require.NoError(t, err)
		require.Empty(t, stuck, "the lease is still live")
		stuck, err = s.Calls(ctx, store.CallQuery{StuckAt: at(2*time.Hour + lease), Limit: 10})
		require.NoError(t, err)
		require.Len(t, stuck, 1)
		require.Equal(t, "k3", stuck[0].Key)

		callers, err := s.CallerSummaries(ctx, 10)
		require.NoError(t, err)
		require.Len(t, callers, 1)
		require.Equal(t, "Alice", callers[0].Name)
		require.Equal(t, []store.CallerBalance{{Currency: "USD", Balance: 80}}, callers[0].Balances)
		require.True(t, callers[0].LastSeen.Equal(at(2*time.Hour)), "last seen %s", callers[0].LastSeen)

		// Retention: rows before the cut go, in bounded batches.
		n, err := s.SweepUsage(ctx, at(time.Hour), 1)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		n, err = s.SweepUsage(ctx, at(time.Hour), 100)
		require.NoError(t, err)
		require.Equal(t, 2, n, "the first hour's other row, and k1's row per key (key \"\")")
		left, err := s.Usage(ctx, store.UsageQuery{From: t0, To: at(24 * time.Hour), Bucket: time.Hour, ByTool: true})
		require.NoError(t, err)
		require.Len(t, left, 2, "the second and third hours stay")
		require.True(t, left[0].Hour.Equal(at(time.Hour)))
	}},
}

func kinds(es []store.Entry) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, e.Kind)
	}
	return out
}
