//go:build !js

package sqlite_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// TestCheckUsageFindsTampering goes around the store: usage money that no
// longer matches the ledger, and ledger hours whose usage rows vanished
// (but not hours the retention swept), must fail CheckUsage.
func TestCheckUsageFindsTampering(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db := setup(t, t.TempDir())
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for i, at := range []time.Time{now, now.Add(time.Hour), now.Add(2 * time.Hour)} {
		_, err := s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 100, Reference: string(rune('a' + i)), Now: at})
		require.NoError(t, err)
	}
	require.NoError(t, s.CheckUsage(ctx))

	_, err := db.Exec(ctx, `UPDATE usage_hourly SET credited = credited + 1 WHERE hour = ?`, store.UnixMilli(now.Add(time.Hour)))
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckUsage(ctx), "usage invariant broken: alice/USD")
	_, err = db.Exec(ctx, `UPDATE usage_hourly SET credited = credited - 1 WHERE hour = ?`, store.UnixMilli(now.Add(time.Hour)))
	require.NoError(t, err)
	require.NoError(t, s.CheckUsage(ctx))

	// A hole in the middle is broken; the retention deleting the oldest hours is not.
	_, err = db.Exec(ctx, `DELETE FROM usage_hourly WHERE hour = ?`, store.UnixMilli(now.Add(time.Hour)))
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckUsage(ctx), "ledger entries without usage")
	n, err := s.SweepUsage(ctx, now.Add(2*time.Hour), 10)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NoError(t, s.CheckUsage(ctx))
}
