//go:build !js

package sqlite_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlstore"
)

// chargeWithKey claims key and charges amount to alice's key id at now.
func chargeWithKey(t *testing.T, s *sqlstore.Store, key, id string, amount int64, now time.Time) store.Fence {
	t.Helper()
	res, err := s.ClaimCharge(context.Background(), store.ClaimChargeParams{ClaimParams: store.ClaimParams{Key: key,
		Owner: "A", Fingerprint: "fp", Now: now, Lease: time.Minute, Tool: "search", CallerID: "alice"},
		Caller: "alice", KeyID: id, Currency: "USD", Amount: amount})
	require.NoError(t, err)
	require.NoError(t, res.ChargeErr)
	return store.Fence{Key: key, Owner: "A", Generation: res.Record.Generation}
}

// TestCheckKeyUsageFindsTampering goes around the store: per-key money
// moved to another key (the caller's sums unchanged), and a key's ledger
// hour whose rows vanished (but not hours the retention swept), must fail
// CheckUsage.
func TestCheckKeyUsageFindsTampering(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db := setup(t, t.TempDir())
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	_, err := s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 100, Reference: "seed", Now: now})
	require.NoError(t, err)
	for i, id := range []string{"k1", "k2", "k1"} {
		chargeWithKey(t, s, string(rune('a'+i)), id, 10, now.Add(time.Duration(i)*time.Hour))
	}
	require.NoError(t, s.CheckUsage(ctx))

	_, err = db.Exec(ctx, `UPDATE usage_keys_hourly SET key_id = 'k3' WHERE key_id = 'k2'`)
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckUsage(ctx), "usage invariant per key broken: alice/k")
	_, err = db.Exec(ctx, `UPDATE usage_keys_hourly SET key_id = 'k2' WHERE key_id = 'k3'`)
	require.NoError(t, err)
	require.NoError(t, s.CheckUsage(ctx))

	_, err = db.Exec(ctx, `DELETE FROM usage_keys_hourly WHERE hour = ?`, store.UnixMilli(now.Add(time.Hour)))
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckUsage(ctx),
		fmt.Sprintf("alice/k2/USD at %d: ledger entries without usage", store.UnixMilli(now.Add(time.Hour))))
	n, err := s.SweepUsage(ctx, now.Add(2*time.Hour), 10)
	require.NoError(t, err)
	require.Equal(t, 4, n, "usage_hourly: the credit and search in the first hour, search in the second; usage_keys_hourly: k1 in the first")
	require.NoError(t, s.CheckUsage(ctx))
}

// TestMigrateKeyUsageFromLedger migrates a database that has seen every
// migration before 0008_key_usage.sql and holds charges and a refund of
// two keys: after 0008 the counters per key hold their money, the refund
// under its charge's key, and calls made from then on count per key.
func TestMigrateKeyUsageFromLedger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openMigratedBefore(t, "0008_key_usage.sql")
	s := sqlstore.New(db)
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	_, err := s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 100, Reference: "seed", Now: now})
	require.NoError(t, err)
	chargeWithKey(t, s, "a", "k1", 10, now)
	f := chargeWithKey(t, s, "b", "k2", 5, now)
	ok, _, err := s.Refund(ctx, f, now)
	require.NoError(t, err)
	require.True(t, ok)

	require.NoError(t, sqlstore.Migrate(ctx, db))
	require.NoError(t, s.CheckUsage(ctx))
	f = chargeWithKey(t, s, "c", "k2", 7, now.Add(time.Minute))
	u := store.Usage{UsageKey: store.UsageKey{Hour: now, Caller: "alice", Tool: "search", Currency: "USD"}, Key: "k2", Calls: 1}
	require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: f, Now: now.Add(time.Minute), Usage: &u,
		Response: store.Response{StatusCode: 200, Body: []byte("{}")}}))
	rows, err := s.KeyUsage(ctx, store.KeyUsageQuery{Caller: "alice", From: now, To: now.Add(time.Hour)})
	require.NoError(t, err)
	require.Equal(t, []store.KeyUsage{
		{Day: now.Truncate(24 * time.Hour), Caller: "alice", Key: "k1", Tool: "search", Currency: "USD", Charges: 1, Charged: 10},
		{Day: now.Truncate(24 * time.Hour), Caller: "alice", Key: "k2", Tool: "search", Currency: "USD", Calls: 1,
			Charges: 2, Charged: 12, Refunds: 1, Refunded: 5},
	}, rows)
	require.NoError(t, s.CheckUsage(ctx))
	require.NoError(t, s.CheckInvariants(ctx))
}
