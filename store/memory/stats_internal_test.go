package memory

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// TestCheckUsageFindsTampering: usage money that no longer matches the
// ledger fails CheckUsage, as in the SQL backend.
func TestCheckUsageFindsTampering(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := New()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	_, err := s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 100, Reference: "a", Now: now})
	require.NoError(t, err)
	require.NoError(t, s.CheckUsage(ctx))
	for _, row := range s.usage {
		row.Credited++
	}
	require.ErrorContains(t, s.CheckUsage(ctx), "usage invariant broken: alice/USD")
}

// TestCheckKeyUsageFindsTampering: per-key money moved to another key (the
// caller's sums unchanged) fails CheckUsage, as in the SQL backend.
func TestCheckKeyUsageFindsTampering(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := New()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	_, err := s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 100, Reference: "a", Now: now})
	require.NoError(t, err)
	res, err := s.ClaimCharge(ctx, store.ClaimChargeParams{ClaimParams: store.ClaimParams{Key: "k", Owner: "A",
		Fingerprint: "fp", Now: now, Lease: time.Minute}, Caller: "alice", KeyID: "k1", Currency: "USD", Amount: 10})
	require.NoError(t, err)
	require.NoError(t, res.ChargeErr)
	require.NoError(t, s.CheckUsage(ctx))
	for k, row := range s.keyUsage {
		delete(s.keyUsage, k)
		k.key = "k2"
		s.keyUsage[k] = row
	}
	require.ErrorContains(t, s.CheckUsage(ctx), "usage invariant per key broken: alice/k")
}
