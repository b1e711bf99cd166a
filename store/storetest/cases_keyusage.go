package storetest

import (
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// keyUsageCases: the counters per key (store.KeyStats): money per key
// equals the ledger's entries of the key (a refund under its charge's
// key), an executed call counts under its key with its Complete, once.
var keyUsageCases = []Case{
	{"KeyUsageFollowsLedgerAndComplete", func(t TB, s store.Store, rt *store.CountingClient) {
		credit(t, s, "alice", 100)
		credit(t, s, "bob", 100)
		call := func(key, owner, id, caller string, amount int64, now time.Time) store.ClaimChargeResult {
			p := claimCharge(key, owner, caller, amount, now)
			p.Tool, p.CallerID, p.KeyID = "search", caller, id
			r := mustClaimCharge(t, s, p, store.OutcomeClaimed)
			require.NoError(t, r.ChargeErr)
			return r
		}
		counted := func(r store.ClaimChargeResult, id, caller string, now time.Time) store.CompleteParams {
			u := store.Usage{UsageKey: store.UsageKey{Hour: now, Caller: caller, Tool: "search", Currency: "USD"},
				Key: id, Calls: 1, LastAt: now}
			return store.CompleteParams{Fence: fence(r.ClaimResult), Now: now, Usage: &u,
				Response: store.Response{StatusCode: 200, Body: []byte("{}")}}
		}
		// k_original: a paid call that completes, counted with its Complete
		// in one round trip on a Batcher, once.
		a := call("a", "A", store.OriginalKeyID, "alice", 10, at(time.Minute))
		done := counted(a, store.OriginalKeyID, "alice", at(2*time.Minute))
		want := int64(2)
		if rt != nil && rt.CanBatch() {
			want = 1
		}
		requireTrips(t, rt, want, func() { require.NoError(t, s.Complete(ctx, done)) }, "a complete counted per key")
		require.ErrorIs(t, s.Complete(ctx, done), store.ErrFencedOut)
		// k2: one call refunded (under k2, whoever refunds), one completed in
		// the next hour, one free call (no entry) completed.
		b := call("b", "B", "k2", "alice", 7, at(3*time.Minute))
		ok, _, err := s.Refund(ctx, fence(b.ClaimResult), at(4*time.Minute))
		require.NoError(t, err)
		require.True(t, ok)
		require.NoError(t, s.Fail(ctx, fence(b.ClaimResult), "upstream 502", at(4*time.Minute)))
		c := call("c", "C", "k2", "alice", 5, at(time.Hour+time.Minute))
		require.NoError(t, s.Complete(ctx, counted(c, "k2", "alice", at(time.Hour+2*time.Minute))))
		f := mustClaim(t, s, claim("f", "F", "fp", at(time.Hour+3*time.Minute)), store.OutcomeClaimed)
		free := counted(store.ClaimChargeResult{ClaimResult: f}, "k2", "alice", at(time.Hour+3*time.Minute))
		free.Usage.FreeCalls = 1
		require.NoError(t, s.Complete(ctx, free))
		// A charge without a key (before keys existed) counts under "".
		call("d", "D", "", "alice", 3, at(2*time.Hour))
		// Another caller's key of the same id is its own.
		call("e", "E", "k2", "bob", 50, at(time.Minute))

		rows, err := s.KeyUsage(ctx, store.KeyUsageQuery{Caller: "alice", From: t0.Truncate(24 * time.Hour), To: at(24 * time.Hour)})
		require.NoError(t, err)
		day := t0.Truncate(24 * time.Hour)
		for i := range rows {
			require.True(t, rows[i].Day.Equal(day), "day %s", rows[i].Day)
			rows[i].Day = time.Time{}
		}
		require.Equal(t, []store.KeyUsage{
			{Caller: "alice", Key: "", Tool: "search", Currency: "USD", Charges: 1, Charged: 3},
			{Caller: "alice", Key: "k2", Tool: "search", Currency: "USD", Calls: 2, FreeCalls: 1, Charges: 2, Charged: 12,
				Refunds: 1, Refunded: 7},
			{Caller: "alice", Key: store.OriginalKeyID, Tool: "search", Currency: "USD", Calls: 1, Charges: 1, Charged: 10},
		}, rows, "by key: \"\" < k2 < k_original")
		require.Equal(t, int64(5), rows[1].Spent())

		// Per key, the money adds up to the ledger's (Entry carries no key:
		// CheckUsage, after every case, compares per key).
		entries, err := s.Entries(ctx, store.EntryFilter{Caller: "alice"})
		require.NoError(t, err)
		spent := map[string]int64{}
		for _, r := range rows {
			spent[r.Key] += r.Spent()
		}
		var ledgerSpent int64
		for _, e := range entries {
			if e.Kind == store.EntryCharge || e.Kind == store.EntryRefund {
				ledgerSpent -= e.Amount
			}
		}
		require.Equal(t, ledgerSpent, spent[""]+spent[store.OriginalKeyID]+spent["k2"])
		require.Equal(t, map[string]int64{"": 3, store.OriginalKeyID: 10, "k2": 5}, spent)

		// The window: the first hour only.
		first, err := s.KeyUsage(ctx, store.KeyUsageQuery{Caller: "alice", From: t0, To: at(time.Hour)})
		require.NoError(t, err)
		require.Len(t, first, 2, "k2's refunded call and k_original: %+v", first)
		require.Equal(t, []int64{0, 1, 7, 7}, []int64{first[0].Calls, first[0].Charges, first[0].Charged, first[0].Refunded})
		bob, err := s.KeyUsage(ctx, store.KeyUsageQuery{Caller: "bob", From: t0, To: at(time.Hour)})
		require.NoError(t, err)
		require.Len(t, bob, 1)
		require.Equal(t, int64(50), bob[0].Charged)
		_, err = s.KeyUsage(ctx, store.KeyUsageQuery{From: t0, To: at(time.Hour)})
		require.ErrorIs(t, err, store.ErrInvalidArgument)
		_, err = s.KeyUsage(ctx, store.KeyUsageQuery{Caller: "alice", From: t0, To: t0})
		require.ErrorIs(t, err, store.ErrInvalidArgument)

		// Retention: the per-key rows go with the per-caller ones. Before
		// the second hour: alice's and bob's rows per caller (4: tools ""
		// for the credits and search) and per key (3: alice's k_original and
		// k2, bob's k2).
		n, err := s.SweepUsage(ctx, at(time.Hour), 100)
		require.NoError(t, err)
		require.Equal(t, 7, n)
		left, err := s.KeyUsage(ctx, store.KeyUsageQuery{Caller: "alice", From: t0, To: at(24 * time.Hour)})
		require.NoError(t, err)
		require.Len(t, left, 2, "k2's second hour and the keyless charge stay: %+v", left)
	}},
}
