//go:build !js

package sqlite_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlstore"
)

// TestDatabaseEnforcesChargeInvariant goes around the store and writes SQL
// directly: the schema itself must refuse a second charge, a refund without
// a charge, a negative balance and a rewritten audit trail. And when the
// data is corrupted anyway, CheckInvariants must say so.
func TestDatabaseEnforcesChargeInvariant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db := setup(t, t.TempDir())
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	_, err := s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 1000, Reference: "seed", Now: now})
	require.NoError(t, err)
	c, err := s.Claim(ctx, store.ClaimParams{Key: "k", Owner: "A", Fingerprint: "fp", Now: now, Lease: time.Minute})
	require.NoError(t, err)
	f := store.Fence{Key: "k", Owner: "A", Generation: c.Record.Generation}
	_, err = s.Charge(ctx, store.ChargeParams{Fence: f, Caller: "alice", Currency: "USD", Amount: 100, Now: now})
	require.NoError(t, err)

	insert := `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, idem_key, incarnation, generation, balance_after, created_at)
		VALUES ('alice', 'USD', ?, ?, ?, 'k', 'x', 1, 0, 0)`
	_, err = db.Exec(ctx, insert, -100, "charge", "second-charge")
	require.ErrorContains(t, err, "key already charged")
	_, err = db.Exec(ctx, insert, 50, "refund", "partial-refund")
	require.ErrorContains(t, err, "refund without an open charge")
	_, err = db.Exec(ctx, `INSERT INTO ledger_entries (caller, currency, amount, kind, reference, balance_after, created_at)
		VALUES ('alice', 'USD', -5000, 'charge', 'overdraw', 0, 0)`)
	require.Error(t, err, "a charge without a key, or one that overdraws, is refused")
	_, err = db.Exec(ctx, `UPDATE ledger_entries SET amount = -1 WHERE reference LIKE 'charge:%'`)
	require.ErrorContains(t, err, "append-only")
	_, err = db.Exec(ctx, `DELETE FROM ledger_entries`)
	require.ErrorContains(t, err, "append-only")
	_, err = db.Exec(ctx, `UPDATE balances SET balance = -1`)
	require.ErrorContains(t, err, "CHECK constraint failed")
	require.NoError(t, s.CheckInvariants(ctx))

	// Corrupt a balance behind the triggers' back: the check must catch it.
	_, err = db.Exec(ctx, `UPDATE balances SET balance = balance + 1`)
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckInvariants(ctx), "balance equals the sum of its entries")
	_, err = db.Exec(ctx, `UPDATE balances SET balance = balance - 1`)
	require.NoError(t, err)

	// A record that claims no charge while its entries hold one.
	_, err = db.Exec(ctx, `UPDATE idem_records SET charge_state = 'none'`)
	require.NoError(t, err)
	require.ErrorContains(t, s.CheckInvariants(ctx), "charge state matches its entries")
}

func TestSplitStatements(t *testing.T) {
	t.Parallel()
	got := sqlstore.SplitStatements(`-- a; comment
CREATE TABLE a (x TEXT DEFAULT 'semi;colon');
/* block; */ CREATE TRIGGER t AFTER INSERT ON a
BEGIN
  UPDATE a SET x = 'y;' WHERE x = "q";
  SELECT RAISE(ABORT, 'no; way');
END;
INSERT INTO a VALUES ('it''s; fine')`)
	require.Len(t, got, 3)
	require.Contains(t, got[0], "'semi;colon'")
	require.Contains(t, got[1], "SELECT RAISE(ABORT, 'no; way');\nEND")
	require.Equal(t, `INSERT INTO a VALUES ('it''s; fine')`, got[2])
}
