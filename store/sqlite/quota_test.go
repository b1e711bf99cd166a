//go:build !js

package sqlite_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// TestDatabaseEnforcesQuotaInvariant writes SQL around the store: the
// schema must refuse a second unit on a key, a charge on a key holding a
// unit, a return without a unit and a rewritten quota trail; and
// CheckInvariants must catch usage corrupted behind the triggers' back.
func TestDatabaseEnforcesQuotaInvariant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db := setup(t, t.TempDir())
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	win, _ := store.PeriodDay.Window(now)
	_, err := s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 1000, Reference: "seed", Now: now})
	require.NoError(t, err)
	res, err := s.ClaimCharge(ctx, store.ClaimChargeParams{ClaimParams: store.ClaimParams{Key: "k", Owner: "A",
		Fingerprint: "fp", Now: now, Lease: time.Minute, Tool: "search", CallerID: "alice"},
		Caller: "alice", Currency: "USD", Amount: 100, Quota: &store.Quota{Limit: 5, Window: win}})
	require.NoError(t, err)
	require.True(t, res.Quota.Free)

	take := `INSERT INTO quota_entries (caller, tool, window_start, kind, reference, idem_key, incarnation, used_after, created_at)
		VALUES ('alice', 'search', ?, ?, ?, 'k', (SELECT incarnation FROM idem_records WHERE key = 'k'), 2, 0)`
	_, err = db.Exec(ctx, take, store.UnixMilli(win), "take", "second-take")
	require.ErrorContains(t, err, "key already holds a unit")
	_, err = db.Exec(ctx, take, store.UnixMilli(win)+1, "return", "wrong-window")
	require.ErrorContains(t, err, "return without a unit taken")
	_, err = db.Exec(ctx, `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, idem_key, incarnation, generation, balance_after, created_at)
		VALUES ('alice', 'USD', -100, 'charge', 'charge-too', 'k', 'x', 1, 900, 0)`)
	require.ErrorContains(t, err, "holds a unit of free quota")
	_, err = db.Exec(ctx, `UPDATE quota_entries SET used_after = 0`)
	require.ErrorContains(t, err, "append-only")
	_, err = db.Exec(ctx, `DELETE FROM quota_entries`)
	require.ErrorContains(t, err, "append-only")
	_, err = db.Exec(ctx, `UPDATE quota_usage SET used = -1`)
	require.ErrorContains(t, err, "CHECK constraint failed")
	require.NoError(t, s.CheckInvariants(ctx))

	_, err = db.Exec(ctx, `UPDATE quota_usage SET used = used + 1`)
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckInvariants(ctx), "quota usage equals its entries")
	_, err = db.Exec(ctx, `UPDATE quota_usage SET used = used - 1`)
	require.NoError(t, err)
	_, err = db.Exec(ctx, `UPDATE idem_records SET quota_state = 'none'`)
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckInvariants(ctx), "quota state matches its entries")
}

// TestDatabaseEnforcesCaps writes a charge around the store's cap check:
// the spend trigger still refuses it (spent above the cap in force), and
// CheckInvariants catches spend corrupted behind the trigger's back.
func TestDatabaseEnforcesCaps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db := setup(t, t.TempDir())
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	_, err := s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 1000, Reference: "seed", Now: now})
	require.NoError(t, err)
	_, err = s.SetCap(ctx, store.SetCapParams{Caller: "alice", Key: store.AnyKey, Currency: "USD", Limit: 100,
		Reset: store.ResetDaily, Now: now})
	require.NoError(t, err)
	for _, k := range []string{"k1", "k2"} {
		_, err = s.Claim(ctx, store.ClaimParams{Key: k, Owner: "A", Fingerprint: "fp", Now: now, Lease: time.Minute})
		require.NoError(t, err)
	}
	_, err = s.Charge(ctx, store.ChargeParams{Fence: store.Fence{Key: "k1", Owner: "A", Generation: 1}, Caller: "alice",
		Currency: "USD", Amount: 90, Now: now})
	require.NoError(t, err)
	_, err = db.Exec(ctx, `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, idem_key, incarnation, generation, balance_after, created_at)
		VALUES ('alice', 'USD', -20, 'charge', 'over-the-cap', 'k2', 'x', 1, 890, ?)`, store.UnixMilli(now))
	require.ErrorContains(t, err, "CHECK constraint failed")
	require.NoError(t, s.CheckInvariants(ctx))
	_, err = db.Exec(ctx, `UPDATE cap_spend SET spent = spent - 1`)
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckInvariants(ctx), "spend equals its charges less their refunds")
}
