package storetest

import (
	"fmt"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// ledgerCases: credits, money limits and callers.
var ledgerCases = []Case{
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

	{"Callers", func(t TB, s store.Store, rt *store.CountingClient) {
		c := store.Caller{ID: "c1", Name: "Alice", KeyHash: []byte{1, 2, 3}, CreatedAt: t0}
		require.NoError(t, s.CreateCaller(ctx, c))
		got, err := s.CallerByKeyHash(ctx, []byte{1, 2, 3}, t0)
		require.NoError(t, err)
		byKey := c
		byKey.KeyID = store.OriginalKeyID
		require.Equal(t, byKey, got)
		require.ErrorIs(t, s.CreateCaller(ctx, c), store.ErrConflict)
		require.ErrorIs(t, s.CreateCaller(ctx, store.Caller{ID: "c2", KeyHash: []byte{1, 2, 3}, CreatedAt: t0}), store.ErrConflict)
		_, err = s.CallerByKeyHash(ctx, []byte{9}, t0)
		require.ErrorIs(t, err, store.ErrNotFound)
		got, err = s.CallerByID(ctx, "c1")
		require.NoError(t, err)
		require.Equal(t, c, got)
		_, err = s.CallerByID(ctx, "nobody")
		require.ErrorIs(t, err, store.ErrNotFound)
	}},
}
